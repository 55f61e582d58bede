"""From a config's ``data`` section to decoded, split audio, and the loaders every kind of input uses.

What the config may leave open (sample rate, clip length, feature settings) is inferred here from the
files themselves; audio larger than the memory budget is memory-mapped from a disk cache.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..errors import AudioDecodeError, ConfigError, DataError
from .audio import AudioInfo, audio_info, check_header
from .audit import Finding, pcm_hash
from .dataset import Skipped, decode_manifest
from .duplicates import quick_findings
from .importers import get_importer, load_manifest
from .manifest import Manifest
from .store import AUGMENT_SETTINGS_FILE
from .integrity import (
    check_classes,
    check_decoded,
    check_files,
    check_splits,
    choose_group_column,
    groups_from_paths,
    warn_ignored_groups,
)
from .splits import assign_splits, group_split, limit_per_group

log = logging.getLogger(__name__)


# --- what the config may leave open -------------------------------------------------------------
def infer_sample_rate(paths: list[str]) -> int:
    """The most common native rate, capped at 22,050 Hz.

    Sound classification rarely needs content above 11 kHz, and a lower rate makes every later step
    cheaper; data recorded below the cap keeps its own rate (never upsampled).
    """
    rates = collections.Counter()
    for path in paths[:2000]:  # headers only; a sample is enough to find the common rate
        try:
            rates[audio_info(path).sample_rate] += 1
        except AudioDecodeError:
            continue  # reported (and skipped) by the decoding pass
    if not rates:
        raise DataError("no readable audio file found to infer the sample rate from")
    return min(rates.most_common(1)[0][0], 22050)


def infer_clip_seconds(durations: list[float]) -> float:
    """The training clip length, rounded to 0.1 s and kept within 0.5..10 s.

    When the files are of similar length (90th percentile at most twice the median: spoken words, clips cut
    to a length) the 90th percentile, so a random training crop does not cut most words in half; otherwise
    (long recordings of varied length) the median: random crops and evaluation windows cover the rest.
    """
    if not durations:
        return 1.0
    median, p90 = float(np.median(durations)), float(np.percentile(durations, 90))
    chosen = p90 if p90 <= 2 * median else median
    return float(min(10.0, max(0.5, round(chosen, 1))))


def estimated_decoded_bytes(paths: list[str], sample_rate: int, sample: int = 500) -> float:
    """float32 bytes of all files decoded at ``sample_rate``, from the headers of up to ``sample`` files."""
    if not paths:
        return 0.0
    step = max(1, len(paths) // sample)
    durations = []
    for path in paths[::step]:
        try:
            durations.append(audio_info(path).duration)
        except AudioDecodeError:
            continue  # reported by the decoding pass
    return float(np.mean(durations)) * sample_rate * 4 * len(paths) if durations else 0.0


def default_cache_dir() -> Path:
    """``$AUDIOCLF_CACHE``, else ``$XDG_CACHE_HOME/audioclf``, else ``~/.cache/audioclf``."""
    import os

    if os.environ.get("AUDIOCLF_CACHE"):
        return Path(os.environ["AUDIOCLF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "audioclf"


def default_features(sample_rate: int) -> dict[str, Any]:
    """Log-mel with a ~32 ms window and 10 ms hop at any rate (64 mels; 40 below 16 kHz)."""
    n_fft = 2 ** math.ceil(math.log2(0.032 * sample_rate))
    return {
        "kind": "logmel",
        "sample_rate": sample_rate,
        "n_fft": n_fft,
        "hop_length": max(1, round(sample_rate / 100)),
        "n_mels": 64 if sample_rate >= 16000 else 40,
    }


# --- data ---------------------------------------------------------------------------------------
@dataclass
class PreparedData:
    manifest: Manifest  # usable items only, with splits
    waves: dict[str, np.ndarray]
    skipped: list[Skipped]
    sample_rate: int
    clip_seconds: float
    findings: list[Finding] | None = None  # data.doctor's quick checks (None: not run)

    @property
    def n_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    def split(self, name: str) -> Manifest:
        return self.manifest.subset(name)


def group_column(data) -> str | None:
    """The group column splits keep apart: ``data.group``, or "group" when only ``data.group_pattern`` is set;
    ``data.group: none`` keeps none apart."""
    if data.group == "none":
        return None
    return data.group or ("group" if data.group_pattern else None)


def choose_group(data, manifest: Manifest) -> str | None:
    """Zero-config: for a plain CSV or folder whose split is left to ``auto`` and that has no splits, keep a
    speaker/device/session column apart (:func:`~.integrity.choose_group_column`), so validation and test hold
    unseen groups as real use does. Sets and returns ``data.group`` (written to config.yaml like every
    zero-config choice); None when the user set a group, a pattern, a split or ``data.group: none``."""
    if data.group is not None or data.group_pattern or data.split != "auto" or data.format != "auto":
        return None
    data.group = choose_group_column(manifest)
    if data.group is not None:
        log.info("splitting with each %s in one split (data.group=%s, zero-config); data.group=none mixes them",
                 data.group, data.group)
    return data.group


def import_data(cfg: Config) -> Manifest:
    """The manifest for ``cfg.data``: auto-detected folder/CSV, or a named dataset importer."""
    data = cfg.data
    if data.format == "auto":
        if data.options:
            raise ConfigError("data.options are importer options: set data.format too (e.g. data.format=esc50)")
        return load_manifest(data.path, audio_root=data.audio_root)
    importer = get_importer(data.format)
    try:
        return importer(data.path, **data.options)
    except TypeError as exc:  # an option the importer does not take
        raise ConfigError(f"data.options for data.format={data.format}: {exc}") from None


def prepare_data(cfg: Config, manifest: Manifest | None = None, progress: bool = True, training: bool = True,
                 check: Callable[[Manifest], None] | None = None) -> PreparedData:
    """Import (unless ``manifest`` is given), check, decode and split the data of ``cfg.data``.

    Before anything is decoded: the file/label integrity checks (:mod:`.integrity`; the class checks only
    when ``training``) and the caller's ``check(manifest)`` (e.g. that the monitored metric exists for the
    task). ``training=False``: the items are to be evaluated, whatever their classes and splits.
    """
    data = cfg.data
    subset = subset_args(data.train_subset) if data.train_subset else None  # checked before any decoding
    manifest, added = _imported(cfg, manifest)
    if training:
        warn_ignored_groups(manifest, data.group or group_column(data))  # data.group: none is a choice
        check_classes(manifest)
        if data.split in ("auto", "given") and any(item.split for item in manifest):
            check_splits(manifest)
    if check is not None:
        check(manifest)
    sample_rate = data.sample_rate or infer_sample_rate([item.path for item in manifest])
    cache_dir, mmap = data.cache_dir, False
    estimate = estimated_decoded_bytes([item.path for item in manifest], sample_rate)
    if estimate > data.memory_gb * 2**30:
        # Too big to hold decoded: keep it on disk and memory-map it (only the crops used are read).
        cache_dir = cache_dir or str(default_cache_dir() / "waveforms")
        mmap = True
        log.warning("decoded audio needs about %.1f GB (data.memory_gb=%s): using the disk cache %s, memory-mapped",
                    estimate / 2**30, data.memory_gb, cache_dir)
    waves, skipped = decode_manifest(
        manifest, sample_rate, trim=data.trim_silence, strict=data.strict, cache_dir=cache_dir,
        progress=progress, mmap=mmap, max_seconds=data.max_seconds,
    )
    bad = {s.path for s in skipped}
    usable = manifest.filter(lambda item: item.path not in bad)
    if len(usable) == 0:
        raise DataError(f"{data.path}: none of the {len(manifest)} files could be decoded")
    if training:
        check_decoded(manifest, usable)
    usable = _split_as_training(cfg, usable, added, subset)
    if training:
        check_splits(usable)
    clip_seconds = data.clip_seconds or infer_clip_seconds([len(w) / sample_rate for w in waves.values()])
    # The quick checks reuse the audio decoded for training: hashing it costs a pass over memory, no decoding.
    findings = quick_findings(usable, {item.id: pcm_hash(waves[item.id]) for item in usable}, group_column(data)) \
        if training and data.doctor else None
    return PreparedData(usable, waves, skipped, sample_rate, clip_seconds, findings)


@dataclass
class SplitHeaders:
    manifest: Manifest  # readable items, with the splits training would give them
    infos: dict[str, AudioInfo]  # item path -> what its header says (sample rate, duration ...)
    skipped: list[Skipped]


def split_from_headers(cfg: Config) -> SplitHeaders:
    """The items of ``cfg.data`` split as :func:`prepare_data` splits them for training (same import, ``data.add``,
    group column, split method, seed and ``data.train_subset``), read from the file headers only: nothing is
    decoded (``audioclf describe``). A file whose header reads but whose samples do not decode is kept here;
    training would skip it, and with it the splits could differ."""
    data = cfg.data
    subset = subset_args(data.train_subset) if data.train_subset else None
    manifest, added = _imported(cfg, None)
    infos, skipped = _read_headers(manifest, data)
    usable = manifest.filter(lambda item: item.path in infos)
    if len(usable) == 0:
        raise DataError(f"{data.path}: none of the {len(manifest)} files can be read")
    return SplitHeaders(_split_as_training(cfg, usable, added, subset), infos, skipped)


def _imported(cfg: Config, manifest: Manifest | None) -> tuple[Manifest, list]:
    """``cfg.data`` imported (unless ``manifest`` is given), with ``data.add``'s items (also returned apart),
    the files checked and ``data.group_pattern``'s groups set."""
    data = cfg.data
    if manifest is None:
        if not data.path:
            raise ConfigError("data.path is required: a folder with one sub-folder per class, or a CSV")
        manifest = import_data(cfg)
    if len(manifest) == 0:
        raise DataError(f"{data.path}: no audio items found")
    added = _added(data.add, manifest, data.audio_root, cfg.seed) if data.add else []
    if added:  # checked and decoded with the rest; split apart from it (they come with their own splits)
        manifest = manifest.with_items([*manifest, *added])
    manifest = check_files(manifest)
    if data.group_pattern:
        manifest = groups_from_paths(manifest, data.group_pattern, group_column(data))
    choose_group(data, manifest)
    return manifest, added


def _split_as_training(cfg: Config, usable: Manifest, added: list, subset: dict[str, Any] | None) -> Manifest:
    """``usable`` split by ``data.split`` (``data.add``'s items keep the splits they were drawn), then cut to
    ``data.train_subset``."""
    data = cfg.data
    added_ids = {item.id for item in added}
    extra = [item for item in usable if item.id in added_ids]
    usable = assign_splits(
        usable.with_items([item for item in usable if item not in extra]), method=data.split,
        fractions=tuple(data.fractions), group=group_column(data), heldout=data.heldout, seed=cfg.seed,
    )
    if extra:
        usable = usable.with_items([*usable, *extra])
    if subset is not None:
        usable = limit_per_group(usable, seed=cfg.seed, **subset)
    return usable


def _read_headers(manifest: Manifest, data) -> tuple[dict[str, AudioInfo], list[Skipped]]:
    """Each item's checked header (path -> info); unreadable files are skipped and listed, or raise with
    ``data.strict``."""
    infos, skipped = {}, []
    for item in manifest:
        try:
            infos[item.path] = check_header(item.path, data.max_seconds)
        except AudioDecodeError as exc:
            if data.strict:
                raise
            log.warning("skipping %s: %s", exc.path, exc.reason)
            skipped.append(Skipped(exc.path, exc.reason))
    return infos, skipped


_SHARES = ("train", "val", "test")


def _added(entries: list[dict[str, Any]], main: Manifest, audio_root: str | None, seed: int) -> list:
    """``data.add``: each entry's items, with ids prefixed ``add<k>:`` and splits drawn by its shares (whole
    ``source_id`` groups when the column is there, class mix kept)."""
    items = []
    for k, entry in enumerate(entries):
        where = f"data.add[{k}]"
        if not isinstance(entry, dict) or "path" not in entry or set(entry) - {"path", "made_with", *_SHARES}:
            raise ConfigError(f"{where}={entry!r}: expected {{path: CSV or folder, train: share, val: share, "
                              "test: share, made_with: transform arguments}}")
        check_made_with(entry, where)
        shares = [entry.get(name, 0.0) for name in _SHARES]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in shares) \
                or sum(shares) <= 0:
            raise ConfigError(f"{where}: the shares train/val/test must be numbers >= 0, not all 0; got {shares}")
        shares = [float(v) / sum(shares) for v in shares]
        try:
            extra = load_manifest(entry["path"], audio_root=audio_root, classes=main.classes)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        if extra.task != main.task:
            raise ConfigError(f"{where}: its labels make a {extra.task} task, the data a {main.task} one")
        # Files already in the data (the originals `audioclf augment` lists next to its copies) are not added twice.
        known = {os.path.realpath(item.path) for item in main}
        extra = extra.with_items([item for item in extra if os.path.realpath(item.path) not in known])
        if len(extra) == 0:
            raise DataError(f"{where}: {entry['path']} adds nothing: every file in it is already in the data")
        groups = extra.group_values("source_id") if "source_id" in extra.group_names else [i.id for i in extra]
        labels = extra.label_matrix() if extra.task == "multi_label" else [i.labels[0] for i in extra]
        splits = group_split(groups, tuple(shares), seed, labels=labels)
        items += [dataclasses.replace(item, id=f"add{k}:{item.id}", split=str(split))
                  for item, split in zip(extra, splits)]
    return items


def check_made_with(entry: dict[str, Any], where: str) -> None:
    """``data.add``'s ``made_with: {name: impulse_response, each: true}``: the copies under ``path`` must have been
    made (``audioclf augment``, its ``augment_settings.json``) by a transform with those arguments, so a recipe
    that states how its copies were made refuses copies made otherwise (e.g. a random IR per copy)."""
    wanted = entry.get("made_with")
    if wanted is None:
        return
    if not isinstance(wanted, dict) or "name" not in wanted:
        raise ConfigError(f"{where}.made_with={wanted!r}: expected the transform's arguments, e.g. "
                          "{name: impulse_response, each: true}")
    folder = Path(entry["path"])
    settings_file = (folder if folder.is_dir() else folder.parent) / AUGMENT_SETTINGS_FILE
    try:
        chain = json.loads(settings_file.read_text(encoding="utf-8"))["augment"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{where}: {settings_file}: cannot read how the copies were made ({exc}); make them with "
                        "audioclf augment") from None
    if not any(isinstance(spec, dict) and all(spec.get(k) == v for k, v in wanted.items()) for spec in chain):
        raise DataError(f"{where}: the copies in {settings_file.parent} were made with {chain}, not with "
                        f"{wanted} as the recipe states; remake them (the recipe's comments give the command)")


def subset_args(subset: Any, key: str = "data.train_subset") -> dict[str, Any]:
    """``{per: [group columns], n: N}`` (``data.train_subset``, ``audioclf augment --subset``) checked, as
    :func:`~.splits.limit_per_group`'s arguments."""
    if not isinstance(subset, dict):
        raise ConfigError(f"{key}={subset!r}: expected {{per: [group columns], n: items per group (>= 1)}}")
    unknown = set(subset) - {"per", "n"}
    if unknown or not isinstance(subset.get("n"), int) or isinstance(subset.get("n"), bool) or subset["n"] < 1:
        raise ConfigError(f"{key}={subset}: expected {{per: [group columns], n: items per group (>= 1)}}")
    per = subset.get("per") or []
    return {"per": [per] if isinstance(per, str) else list(per), "n": int(subset["n"])}


def prepare_to_stream(cfg: Config, manifest: Manifest) -> PreparedData:
    """Items a trained run scores in one pass, checked but not decoded: their windows are streamed from the
    files when evaluated (:class:`~.dataset.StreamedRecordings`), so a long recording costs a batch of windows,
    not its length. ``cfg.data`` must give the run's sample rate and clip length. Unreadable files (from their
    headers) are skipped and listed, or raise with ``data.strict``."""
    data = cfg.data
    manifest = check_files(manifest)
    if data.group_pattern:
        manifest = groups_from_paths(manifest, data.group_pattern, group_column(data))
    infos, skipped = _read_headers(manifest, data)
    usable = manifest.filter(lambda item: item.path in infos)
    if len(usable) == 0:
        raise DataError(f"{data.path or 'the evaluated items'}: none of the {len(manifest)} files can be read")
    usable = assign_splits(usable, method=data.split, fractions=tuple(data.fractions), group=group_column(data),
                           heldout=data.heldout, seed=cfg.seed)
    return PreparedData(usable, {}, skipped, int(data.sample_rate), float(data.clip_seconds))


class EpochShuffle(torch.utils.data.Sampler):
    """A fresh permutation per epoch from (seed, epoch): resuming at epoch e gives the same order."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


class RankBatches(torch.utils.data.Sampler):
    """One rank's share of each global batch of an epoch order (``order``: a sampler such as :class:`EpochShuffle`,
    the same on every rank).

    The order is cut into global batches of ``batch_size`` items; each is cut into ``world_size`` contiguous pieces
    whose sizes differ by at most one, and this rank takes piece ``rank``. Every item is used once per epoch, by
    one rank, and every rank takes the same number of steps (which DDP's gradient exchange needs). A last global
    batch of fewer items than ranks would leave some rank an empty piece: it joins the batch before it instead.
    :meth:`global_size` tells the training loop how many items a step has over all ranks."""

    def __init__(self, order, batch_size: int, rank: int = 0, world_size: int = 1):
        if batch_size < world_size:
            raise ConfigError(f"train.batch_size={batch_size} is the global batch, cut over {world_size} "
                              f"processes: set at least {world_size}")
        self.order, self.batch_size, self.rank, self.world_size = order, batch_size, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    @functools.cached_property
    def _bounds(self) -> list[tuple[int, int]]:
        n, size = len(self.order), self.batch_size
        bounds = [(start, min(start + size, n)) for start in range(0, n, size)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < self.world_size:
            bounds[-2:] = [(bounds[-2][0], n)]
        return bounds

    def global_size(self, step: int) -> int:
        start, end = self._bounds[step]
        return end - start

    def __len__(self) -> int:
        return len(self._bounds)

    def __iter__(self):
        order = list(self.order)
        for start, end in self._bounds:
            pieces = np.array_split(np.arange(start, end), self.world_size)
            yield [order[i] for i in pieces[self.rank]]


def make_loader(dataset, batch_size: int, workers: int, sampler=None, device=None, batch_sampler=None):
    """A DataLoader over ``dataset``: ``batch_size`` items in ``sampler``'s order, or the batches of
    ``batch_sampler`` (e.g. :class:`RankBatches`); pinned memory when training on a GPU."""
    pinned = device is not None and device.type == "cuda"
    if batch_sampler is not None:
        return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers,
                                           pin_memory=pinned)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
        pin_memory=pinned, drop_last=False,
    )
