"""Training clips cut on the GPU from decoded audio held in its memory: nothing for the GPU to wait for.

A loader over :class:`~.dataset.WaveformDataset` crops each clip on the CPU, stacks the batch and copies it to the
device every step. When the training split's decoded audio fits in GPU memory (TAU Urban Acoustic Scenes 2022's
230,350 one-second clips at 44.1 kHz are 40 GB in float32, its 16-kHz copy 15 GB; most sets are far smaller) it
is copied there once, and each batch is a gather of the crop windows on the device. The crops are the dataset's
own (:func:`~.dataset.crop_starts`, one vectorised call per batch), so a run gives the same batches with or
without the cache.

Only what is the same on both paths is cached: random, centre and start crops, no waveform augmentation (that
runs on NumPy arrays; those runs keep the DataLoader with workers and pinned memory).
"""

from __future__ import annotations

import numpy as np
import torch

from .audio import fix_length
from .dataset import WaveformDataset, crop_starts

__all__ = ["DeviceClips", "device_clips_fit"]

CROPS = ("random", "center", "start")
COPY_CHUNK = 16 * 2**20  # samples per host-to-device copy (64 MB of float32)
FREE_MEMORY_SHARE = 0.25  # data.device_cache: null caches when the audio takes at most this share of free memory


def cacheable(dataset) -> bool:
    """Whether :class:`DeviceClips` gives exactly the batches a loader over ``dataset`` would."""
    return type(dataset) is WaveformDataset and dataset.augment is None and dataset.crop in CROPS


def device_clips_fit(dataset: WaveformDataset, device: torch.device, setting: bool | None) -> bool:
    """``data.device_cache``: True/False as set; None (auto) on a GPU when the audio takes at most a quarter of its
    free memory (the rest is for the model, its activations and the optimizer)."""
    if setting is False or not cacheable(dataset):
        return False
    if setting:
        return True
    if device.type != "cuda":
        return False
    needed = sum(max(len(wave), dataset.n_samples) for wave in dataset.waves) * 4
    free, _ = torch.cuda.mem_get_info(device)
    return needed <= FREE_MEMORY_SHARE * free


class DeviceClips:
    """Batches ``(clips, targets)`` on ``device``, in the order of ``batch_sampler`` (e.g. a rank's share of each
    global batch), cropped from one flat device tensor of all the training audio."""

    def __init__(self, dataset: WaveformDataset, batch_sampler, device: torch.device):
        if not cacheable(dataset):
            raise ValueError("DeviceClips needs a WaveformDataset with random/center/start crops and no augmentation")
        self.dataset, self.batch_sampler, self.device = dataset, batch_sampler, device
        n = dataset.n_samples
        # Short clips are padded or tiled once: fix_length draws nothing for them, so every epoch is the same.
        waves = [fix_length(w, n, mode=dataset.pad_mode, crop=dataset.crop) if len(w) < n else np.asarray(w)
                 for w in dataset.waves]
        self.lengths = np.array([len(w) for w in waves], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.audio = torch.empty(int(self.lengths.sum()), dtype=torch.float32, device=device)
        # Copied in chunks: memory-mapped audio (data.memory_gb) never sits whole in RAM on its way to the GPU.
        start = 0
        while start < len(waves):
            end = start + 1
            while end < len(waves) and self.offsets[end] - self.offsets[start] < COPY_CHUNK:
                end += 1
            chunk = np.concatenate([np.asarray(w, dtype=np.float32) for w in waves[start:end]])
            self.audio[self.offsets[start]:self.offsets[start] + len(chunk)].copy_(torch.from_numpy(chunk))
            start = end
        self.targets = dataset.targets.to(device)
        self.window = torch.arange(n, device=device)

    @property
    def nbytes(self) -> int:
        return self.audio.numel() * self.audio.element_size()

    def global_size(self, step: int) -> int:
        return self.batch_sampler.global_size(step)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def starts(self, indices: list[int]) -> np.ndarray:
        """Where each item's clip starts this epoch, as :meth:`WaveformDataset.get` draws it."""
        spans = self.lengths[indices] - self.dataset.n_samples
        crop = self.dataset.crop
        if crop == "start":
            return np.zeros(len(indices), dtype=np.int64)
        if crop == "center":
            return spans // 2
        return crop_starts(self.dataset.seed, self.dataset.epoch, indices, self.lengths[indices],
                           self.dataset.n_samples)

    def __iter__(self):
        # A DataLoader draws its workers' base seed from torch's global generator each epoch; drawing it here too
        # keeps every later draw (dropout, SpecAugment, MixUp) the same as with the loader.
        torch.empty((), dtype=torch.int64).random_()
        for indices in self.batch_sampler:
            first = torch.from_numpy(self.offsets[indices] + self.starts(indices)).to(self.device, non_blocking=True)
            clips = self.audio[first[:, None] + self.window]  # (B, n_samples): one gather on the device
            yield clips, self.targets[torch.as_tensor(indices, device=self.device)]
