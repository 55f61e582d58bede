"""From a Manifest to batches of fixed-length waveforms.

Decoding and resampling are the expensive part of audio loading, so they happen once per file
(:func:`decode_manifest`, optionally persisted in a :class:`~audioclf.data.store.FeatureCache`); the
per-epoch work in :class:`WaveformDataset` is only the cheap fixed-length crop, which keeps DataLoader
workers optional. Features are computed on the training device by the model's front-end.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..console import track
from ..errors import AudioDecodeError
from .audio import apply_trim, clip_windows, fix_length, load_audio, stream_trimmed_audio, stream_windows
from .manifest import Manifest
from .store import FeatureCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """A file that could not be used, and why (listed in summary.json)."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


def _decode_one(path: str, sample_rate: int, trim: bool | str, max_seconds: float | None = None) -> np.ndarray:
    wave, _ = load_audio(path, sample_rate=sample_rate, mono=True, max_seconds=max_seconds)
    wave = apply_trim(wave, sample_rate, trim)  # parameters by clip length (FSD2019 recipe)
    return np.ascontiguousarray(wave, dtype=np.float32)


def decode_manifest(
    manifest: Manifest,
    sample_rate: int,
    trim: bool | str = False,
    strict: bool = False,
    cache_dir: str | Path | None = None,
    workers: int = 4,
    progress: bool = True,
    mmap: bool = False,
    max_seconds: float | None = None,
) -> tuple[dict[str, np.ndarray], list[Skipped]]:
    """Decode, mix down, resample (and optionally trim) every item once.

    Returns the waveforms by item id and the list of skipped files. A bad file is reported and skipped;
    with ``strict=True`` the first bad file raises :class:`AudioDecodeError`. ``mmap`` (with
    ``cache_dir``): return views of one memory-mapped file built from the cache, so a dataset larger than RAM
    still trains (with one open file, whatever the number of items).
    ``max_seconds``: longer files are skipped before decoding (default ``audio.MAX_SECONDS``).
    """
    if mmap and not cache_dir:
        raise ValueError("mmap=True needs a cache_dir to map the decoded audio from")
    cache = FeatureCache(Path(cache_dir)) if cache_dir else None
    settings = {"what": "waveform", "sample_rate": sample_rate, "trim": trim, "mono": True}

    def work(item):
        key = None
        if cache is not None:
            try:
                key = cache.key(item.path, settings)
            except OSError as exc:
                return item, None, AudioDecodeError(item.path, f"cannot read file ({exc.strerror})")
            if mmap and key in cache:
                return item, key, None  # mapped below, from one pack file
            hit = None if mmap else cache.get(key)
            if hit is not None:
                return item, hit, None
        try:
            wave = _decode_one(item.path, sample_rate, trim, max_seconds)
        except AudioDecodeError as exc:
            return item, None, exc
        if cache is not None and key is not None:
            cache.put(key, wave)
            if mmap:
                return item, key, None
        return item, wave, None

    waves: dict[str, np.ndarray] = {}
    skipped: list[Skipped] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(work, manifest.items)
        for item, wave, error in track(results, len(manifest), "decoding audio", progress):
            if error is not None:
                if strict:
                    raise error
                log.warning("skipping %s: %s", error.path, error.reason)
                skipped.append(Skipped(error.path, error.reason))
            else:
                waves[item.id] = wave
    if mmap:  # one memory-mapped file for all items (one per item would run out of file descriptors)
        waves = cache.pack(waves)
    return waves, skipped


def targets_for(manifest: Manifest, classes: list[str], task: str) -> np.ndarray:
    """Class indices (single-label) or a multi-hot float matrix (multi-label) in ``classes`` order."""
    index = {name: i for i, name in enumerate(classes)}
    if task == "single_label":
        return np.array([index[item.labels[0]] for item in manifest.items], dtype=np.int64)
    matrix = np.zeros((len(manifest), len(classes)), dtype=np.float32)
    for row, item in enumerate(manifest.items):
        for label in item.labels:
            matrix[row, index[label]] = 1.0
    return matrix


_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014): a well-mixed uint64 from each uint64 (wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def crop_uniforms(seed: int, epoch: int, indices) -> np.ndarray:
    """A uniform number in [0, 1) for each item of ``indices`` in ``epoch``: where its random training crop starts.

    A counter-based hash of (seed, epoch, item), not a generator per item (11 µs each): a whole batch, or an
    epoch of 230,000 clips, is one vectorised call, so the crops cut on the GPU (:mod:`.device_clips`) cost no
    time, and every reader (in-memory clips, shards, the GPU cache, any number of workers or ranks) agrees."""
    items = np.asarray(indices, dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(_splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF)) ^ np.uint64(epoch & 0xFFFFFFFFFFFFFFFF))
        bits = _splitmix64(_splitmix64(key) ^ items)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53  # the top 53 bits: a double in [0, 1)


def crop_starts(seed: int, epoch: int, indices, lengths, n_samples: int) -> np.ndarray:
    """Where each item's random crop of ``n_samples`` starts (0 for items no longer than that)."""
    spans = np.maximum(np.asarray(lengths, dtype=np.int64) - n_samples, 0)
    return np.floor(crop_uniforms(seed, epoch, indices) * (spans + 1)).astype(np.int64)


def training_clip(wave: np.ndarray, n_samples: int, pad_mode: str, crop: str, seed: int, epoch: int,
                  index: int) -> np.ndarray:
    """Item ``index``'s clip in ``epoch``: random crops from :func:`crop_starts`, the other crops and short clips
    as :func:`~.audio.fix_length` makes them (``max_energy`` compares windows drawn from a generator per item)."""
    if crop == "random" and len(wave) > n_samples:
        # crop_starts' formula for one item, without its array steps (this runs once per clip in the loader)
        start = int(crop_uniforms(seed, epoch, [index])[0] * (len(wave) - n_samples + 1))
        return np.array(wave[start:start + n_samples])
    rng = np.random.default_rng([seed, epoch, index]) if crop == "max_energy" else None
    return fix_length(wave, n_samples, mode=pad_mode, crop=crop, rng=rng)


class WaveformDataset(torch.utils.data.Dataset):
    """Fixed-length crops of decoded waveforms with their targets.

    The crop of item ``i`` in epoch ``e`` depends on (seed, e, i) only (:func:`training_clip`), and so does its
    waveform augmentation (``default_rng([seed, e, i])``): the same seed gives the same batches whatever the number
    of DataLoader workers.
    """

    def __init__(
        self,
        waves: list[np.ndarray],
        targets: np.ndarray,
        n_samples: int,
        pad_mode: str = "tile",
        crop: str = "random",
        seed: int = 0,
        augment=None,
        sample_rate: int | None = None,
    ):
        if len(waves) != len(targets):
            raise ValueError(f"{len(waves)} waveforms but {len(targets)} targets")
        self.waves = waves
        self.targets = torch.as_tensor(targets)
        self.n_samples = n_samples
        self.pad_mode = pad_mode
        self.crop = crop
        self.seed = seed
        self.epoch = 0
        self.augment = augment  # a waveform Compose: called as augment(wave, sample_rate, rng)
        self.sample_rate = sample_rate
        if augment is not None and sample_rate is None:
            raise ValueError("sample_rate is required with waveform augmentation")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.waves)

    def get(self, index: int, augment: bool):
        """Item ``index`` with or without the waveform augmentation (see augment.batch.DuplicateAugmented)."""
        # A "windows" dataset is evaluated through windows(); one item of it is its centre clip.
        crop = "center" if self.crop == "windows" else self.crop
        wave = training_clip(self.waves[index], self.n_samples, self.pad_mode, crop, self.seed, self.epoch, index)
        if augment and self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            wave = self.augment(np.asarray(wave, dtype=np.float32), self.sample_rate, rng)
        return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), self.targets[index]

    def __getitem__(self, index: int):
        return self.get(index, augment=True)

    def windows(self, index: int) -> np.ndarray:
        """The whole recording ``index`` as (K, n_samples) overlapping windows (evaluation on full files)."""
        return clip_windows(self.waves[index], self.n_samples, self.pad_mode)


class StreamedRecordings:
    """Whole recordings for one evaluation pass, decoded as streams when their windows are asked for
    (:meth:`window_chunks`): memory does not grow with a file's length, as when predicting. The same windows
    as :meth:`WaveformDataset.windows` of the decoded file. A file that turns out unreadable part-way (its
    header was checked beforehand) is recorded in ``failed`` (index -> reason), or raises when ``strict``."""

    crop = "windows"

    def __init__(self, paths: list[str], targets: np.ndarray, n_samples: int, sample_rate: int,
                 pad_mode: str = "tile", trim: bool | str = False, max_seconds: float | None = None,
                 strict: bool = False):
        self.paths, self.targets = list(paths), torch.as_tensor(targets)
        self.n_samples, self.sample_rate, self.pad_mode = n_samples, sample_rate, pad_mode
        self.trim, self.max_seconds, self.strict = trim, max_seconds, strict
        self.failed: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def window_chunks(self, index: int, max_windows: int):
        """Recording ``index``'s windows, at most ``max_windows`` at a time."""
        blocks = stream_trimmed_audio(self.paths[index], self.sample_rate, self.trim, self.max_seconds)
        try:
            yield from stream_windows(blocks, self.n_samples, self.pad_mode, max_windows)
        except AudioDecodeError as exc:
            if self.strict:
                raise
            log.warning("skipping %s: %s", exc.path, exc.reason)
            self.failed[index] = exc.reason
