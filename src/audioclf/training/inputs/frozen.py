"""Frozen embeddings (``train.frozen_embeddings: true``): a pretrained backbone's embeddings are extracted once,
then only the head trains on them. This is the "linear probe" with which PANNs (Kong et al. 2020) and most
audio-representation papers try a backbone on a small dataset: minutes on a CPU where fine-tuning takes hours.

Every window of every training file (the evaluation windows, 50 % overlap) is one training item; validation
averages the head's probabilities over a file's windows, as the whole model does on a recording. The run keeps
the whole model (front-end, standardisation, frozen backbone, trained head), so predict, evaluate and export
see an ordinary audio run, and its final scores come from that whole model on the audio, not from the cache.
With ``data.cache_dir`` set, the embeddings are kept there, keyed by the frozen weights and the decoded audio,
so the next run on the same data (another head, a search trial, a resumed run) skips the extraction.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import ConfigError
from ...files import atomic_write
from ...models.backbones import TransferClassifier
from ...models.classifier import AudioClassifier
from ..evaluate import SplitResult, model_probabilities, predict_whole_files, score, window_batches
from .audio import AudioInputs
from .zero_config import audio_defaults

log = logging.getLogger(__name__)

__all__ = ["FrozenEmbeddingInputs", "WindowEmbeddings"]

EXTRACT_BATCH = 64  # windows per forward pass of the backbone
# The model arguments that shape the embedding (the head's own arguments do not: a new head reuses the cache).
_HEAD_ARGS = ("name", "head", "head_hidden", "head_channels", "dropout", "freeze")


class WindowEmbeddings(torch.utils.data.Dataset):
    """A split's window embeddings. As a training set, item ``i`` is one window with its file's target; as
    :meth:`per_file`, the recordings with their windows, the interface of whole-file evaluation."""

    def __init__(self, vectors: np.ndarray, counts: np.ndarray, targets: torch.Tensor):
        self.vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        self.targets = targets
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.owner = torch.from_numpy(np.repeat(np.arange(len(counts)), counts))

    def __len__(self) -> int:
        return len(self.vectors)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vectors[index], self.targets[self.owner[index]]

    def set_epoch(self, epoch: int) -> None:
        """Nothing to redraw: the embeddings are fixed (the sampler reshuffles them)."""

    def per_file(self) -> "_Recordings":
        return _Recordings(self)


class _Recordings:
    """``len`` = recordings, ``windows(i)`` = recording i's window embeddings (see ``predict_whole_files``)."""

    def __init__(self, embeddings: WindowEmbeddings):
        self.embeddings, self.targets = embeddings, embeddings.targets

    def __len__(self) -> int:
        return len(self.embeddings.offsets) - 1

    def windows(self, index: int) -> np.ndarray:
        start, stop = self.embeddings.offsets[index], self.embeddings.offsets[index + 1]
        return self.embeddings.vectors[start:stop].numpy()


class FrozenEmbeddingInputs(AudioInputs):
    """Audio files through a frozen pretrained backbone; the run is an ordinary audio run (same ``kind``)."""

    description = "frozen embeddings (train.frozen_embeddings)"

    _train: WindowEmbeddings | None = None
    _val: WindowEmbeddings | None = None

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        # Augmenting the audio would need the backbone at every step: exactly what extracting once avoids.
        augment = cfg.augment
        for key, value in (("augment.waveform", augment.waveform), ("augment.spec", augment.spec),
                           ("augment.mixup_alpha", augment.mixup_alpha), ("augment.duplicate", augment.duplicate),
                           ("train.ema", cfg.train.ema)):
            if value not in (None, [], "none", 0, 0.0, False):
                raise ConfigError(f"{key}={value!r}: train.frozen_embeddings extracts the embeddings once, "
                                  "without augmentation or weight averaging; unset one of them")
        if cfg.data.eval_crop != "windows":
            raise ConfigError(f"data.eval_crop={cfg.data.eval_crop!r}: train.frozen_embeddings embeds every "
                              "window of a file; leave eval_crop at windows")
        freeze = cfg.model.get("freeze", "all")
        if freeze != "all":
            raise ConfigError(f"model.freeze={freeze!r}: train.frozen_embeddings keeps the whole backbone "
                              "frozen (freeze: all); to fine-tune, unset train.frozen_embeddings")
        if not cfg.model.get("weights"):
            raise ConfigError("train.frozen_embeddings: model.weights is not set, so the frozen backbone would "
                              "embed with random weights; set model.weights=pretrained (or a weight file)")

    def _data_defaults(self) -> dict[str, Any]:
        return {**audio_defaults(self.task, None), "augment.waveform": [], "augment.mixup_alpha": 0.0,
                "train.ema": 0.0}

    # --- model and training -----------------------------------------------------------------------
    def build_model(self) -> AudioClassifier:
        # Recorded in config.yaml; the embedding is standardised unless the config says otherwise.
        self.cfg.model = {"embedding_norm": True, **self.cfg.model, "freeze": "all"}
        model = super().build_model()
        network = model.backbone
        if not isinstance(network, TransferClassifier) or network.head_input != "vector":
            raise ConfigError(f"model.name={self.cfg.model.get('name')}: train.frozen_embeddings needs a pretrained "
                              "backbone with an embedding head (cnn6, cnn10, cnn14, resnet50, mobilenet_v2 with "
                              "head linear or dense)")
        self._head_macs = sum(p.numel() for p in network.head.parameters())
        self._probe = network.probe()
        return model

    def complete_config(self, macs_per_item: int) -> None:
        super().complete_config(self._head_macs)  # an epoch runs only the head

    def trained_part(self, model: AudioClassifier) -> torch.nn.Module:
        return self._probe  # shares the model's head (and embedding_norm) modules

    def ready(self, model: AudioClassifier, device) -> None:
        self._train = self._embeddings("train", model, device)
        self._val = self._embeddings("val", model, device)
        if model.backbone.embedding_norm is not None:
            model.backbone.embedding_norm.fit(self._train.vectors.to(device))

    def train_set(self) -> str:
        return "window embeddings (extracted when the starting weights are in place)"

    def train_loader(self, train_set, device):
        return super().train_loader(self._train, device)

    # --- evaluation -------------------------------------------------------------------------------
    def validate(self, model: AudioClassifier, device, amp: bool, loss: str = "task") -> dict[str, float]:
        head_probs = model_probabilities(model.backbone.probe(), self.task, device, amp)
        probs, targets = predict_whole_files(head_probs, self._val.per_file(), max_windows=1024)
        groups = self.scored_groups("val")
        return self.monitored(SplitResult(score(self.task, targets, probs, self.classes, groups, loss), probs, targets,
                                          groups=groups), loss)

    # --- extraction -------------------------------------------------------------------------------
    def _embeddings(self, split: str, model: AudioClassifier, device) -> WindowEmbeddings:
        dataset = self.dataset(split, train=False)
        path = self._cache_path(split, model, dataset)
        cached = _read_cache(path, len(dataset)) if path else None
        if cached is None:
            log.info("extracting %s embeddings of %d files", split, len(dataset))
            cached = _extract(model, dataset, device)
            if path:
                atomic_write(path, lambda tmp: _write_cache(tmp, *cached))
        return WindowEmbeddings(*cached, dataset.targets)

    def _cache_path(self, split: str, model: AudioClassifier, dataset) -> Path | None:
        if not self.cfg.data.cache_dir:
            return None
        digest = hashlib.sha256()
        for name, tensor in model.state_dict().items():
            if not name.startswith("backbone.head."):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        shape = {k: v for k, v in self.cfg.model.items() if k not in _HEAD_ARGS}
        digest.update(json.dumps([model.spec()["features"], shape, self.prepared.n_samples, self.cfg.data.pad_mode],
                                 sort_keys=True, default=str).encode())
        for wave in dataset.waves:  # the decoded audio, after resampling and trimming
            digest.update(np.ascontiguousarray(wave).tobytes())
        return Path(self.cfg.data.cache_dir) / "embeddings" / f"{split}-{digest.hexdigest()[:32]}.npz"


@torch.no_grad()
def _extract(model: AudioClassifier, dataset, device) -> tuple[np.ndarray, np.ndarray]:
    """(windows, D) embeddings of every window of every file of ``dataset``, and the windows per file."""
    model.eval()
    network = model.backbone
    counts = np.zeros(len(dataset), dtype=np.int64)
    vectors = []
    for owners, batch in window_batches(dataset, EXTRACT_BATCH):
        wave = torch.from_numpy(batch).to(device)
        vectors.append(network.embed(model.features(wave)).float().cpu().numpy())
        np.add.at(counts, owners, 1)
    return np.concatenate(vectors), counts


def _write_cache(path: Path, vectors: np.ndarray, counts: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, vectors=vectors, counts=counts)


def _read_cache(path: Path, n_files: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (vectors, counts), or None when absent or not what this split needs (then re-extracted)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            vectors, counts = data["vectors"], data["counts"]
    except (OSError, ValueError, KeyError) as exc:
        log.warning("embedding cache %s unreadable (%s); extracting again", path, exc)
        return None
    if counts.shape != (n_files,) or vectors.ndim != 2 or len(vectors) != counts.sum():
        return None
    return vectors, counts
