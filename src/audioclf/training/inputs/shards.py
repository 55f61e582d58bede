"""Audio shards (``audioclf shard``, :mod:`audioclf.data.shards`) as a run's inputs: for sets larger than a disk
or a machine's memory, or kept in object storage.

The training split is streamed from its tar shards (local paths or http(s) URLs), shuffled in a buffer and dealt
out shard by shard over the ranks and DataLoader workers, each item once per epoch. Validation and test are read
whole into memory and scored as an audio run's are (every window of every clip). The run is an ordinary audio
run: ``predict``, ``export`` and ``quantize`` work on it.

Ranks may get different numbers of items (shards differ in size); under torchrun the last steps of an epoch run
with the ranks that still have data (PyTorch's ``Join``), the finished ones contributing no gradient.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...config import Config, fill_unset
from ...data.dataset import WaveformDataset
from ...data.manifest import Manifest
from ...data.prepare import PreparedData
from ...errors import ConfigError, DataError
from ...runs import RunDir
from ..distributed import world
from ..evaluate import Probabilities, SplitResult
from .audio import AudioInputs, fit_standardizer

__all__ = ["ShardInputs", "is_shard_set"]

STATISTICS_ITEMS = 2000  # training clips the feature standardisation is fitted on (as for decoded audio)
SHUFFLE_BUFFER = 2000  # clips held for shuffling per DataLoader worker: ~64 MB of 1-s clips at 16 kHz


def is_shard_set(path: str | None) -> bool:
    """Whether ``path`` is a shard set: a folder or URL with ``shards.json``, or that file itself."""
    if not path:
        return False
    text = str(path)
    if text.startswith(("http://", "https://")) or text.endswith("shards.json"):
        return True
    return (Path(text) / "shards.json").is_file()


class ShardInputs(AudioInputs):
    kind = "audio"  # the run is an audio run: the predictor decodes files as for any other
    description = "audio shards"
    unsupported = {
        "data.split": "the shards carry their splits (written by audioclf shard)",
        "data.group": "the shards carry their splits", "data.group_pattern": "the shards carry their splits",
        "data.heldout": "the shards carry their splits", "data.add": "write the items into the shards",
        "data.train_subset": "the training split is streamed", "augment.duplicate": "the split is streamed",
        "cv": "cross-validation needs a manifest of decodable files; write one shard set per fold",
    }

    @classmethod
    def describes(cls, cfg: Config) -> bool:
        return cfg.data.format == "shards" or (cfg.data.format == "auto" and is_shard_set(cfg.data.path))

    @classmethod
    def with_defaults(cls, cfg: Config) -> Config:
        given = cfg.data.trim_silence
        cfg = super().with_defaults(cfg)
        cfg.data.trim_silence = given  # the shards say how their audio was trimmed (prepare)
        return cfg

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        super().check_config(cfg)
        if cfg.augment.waveform:
            from ...augment.waveform import build_waveform_augment

            build_waveform_augment(cfg.augment.waveform).refuse_training_set_transforms(
                "a shard set (its training clips are streamed)")

    def _take_from_index(self, index: dict) -> None:
        """The sample rate and silence trimming the shards were written with (recorded in the run's config, so
        ``predict`` treats a recording as the training audio was); a different value set by the user is refused."""
        data = self.cfg.data
        for key, value in (("sample_rate", int(index["sample_rate"])), ("trim_silence", index.get("trim_silence"))):
            if getattr(data, key) is not None and getattr(data, key) != value:
                raise ConfigError(f"data.{key}={getattr(data, key)!r}: the shards in {data.path} were written with "
                                  f"{value!r}; write them again (audioclf shard) to change it")
            setattr(data, key, value)

    # --- data -------------------------------------------------------------------------------------
    def prepare(self, manifest: Manifest | None = None, progress: bool = False, training: bool = True) -> None:
        from ...data.shards import load_split, read_index, shard_counts, shard_sizes, shard_urls

        if manifest is not None:
            raise ConfigError("a shard set carries its own items and splits: it cannot be given a manifest "
                              "(distillation and cross-validation read audio files)")
        self.index = index = read_index(self.cfg.data.path)
        self._take_from_index(index)
        self.task, self.classes = index["task"], list(index["classes"])
        items, waves = [], {}
        for split in ("val", "test"):
            split_items, split_waves = load_split(index, split, self.cfg.data.max_seconds)
            items += split_items
            waves.update(split_waves)
        clip_seconds = self.cfg.data.clip_seconds or float(index["clip_seconds"])
        self.prepared = PreparedData(Manifest(items, classes=self.classes, task=self.task), waves, [],
                                     int(index["sample_rate"]), clip_seconds)
        self.train_urls, self.train_counts = shard_urls(index, "train"), shard_counts(index, "train")
        self.train_sizes = shard_sizes(index, "train")
        if training and sum(self.train_counts) == 0:
            raise DataError(f"{self.cfg.data.path}: the shard set has no training items")
        self._auto_schedule = self.cfg.train.scheduler is None and not self.cfg.train.scheduler_args
        self.cfg = fill_unset(self.cfg, self._data_defaults())
        self._stream = None

    def count(self, split: str) -> int:
        return sum(self.train_counts) if split == "train" else len(self.prepared.split(split))

    def train_class_counts(self) -> None:
        return None  # the shards' index counts items per shard, not per class: unknown until streamed

    def skipped(self) -> list[dict[str, str]]:
        """Damaged shard data met while streaming in this process (reported as warnings when met)."""
        problems = self._stream.problems if getattr(self, "_stream", None) is not None else []
        return [{"path": text.split(": ", 1)[0], "reason": text.split(": ", 1)[-1]} for text in problems]

    def describe(self, user: Config) -> list[tuple[str, str]]:
        counts = {split: self.count(split) for split in ("train", "val", "test")}
        return [
            ("data", f"shard set {self.cfg.data.path}: {len(self.train_urls)} training shards, streamed"),
            ("task", self.task.replace("_", "-")),
            ("classes", f"{len(self.classes)}: {', '.join(self.classes[:8])}"
                        f"{f' (+{len(self.classes) - 8} more)' if len(self.classes) > 8 else ''}"),
            ("sample rate", f"{self.prepared.sample_rate} Hz (the shards')"),
            ("clip", f"{self.prepared.clip_seconds:g} s"),
            ("split", f"the shards': train {counts['train']} / val {counts['val']} / test {counts['test']}"),
        ]

    def snapshot(self, run_root) -> None:
        """The evaluated items (val, test) and where the shards were: the training items stay in the shards."""
        self.prepared.manifest.to_csv(RunDir(run_root).manifest)

    # --- model and training -----------------------------------------------------------------------
    def initialize(self, model, device) -> None:
        from ...data.shards import first_items

        waves = first_items(self.index, "train", STATISTICS_ITEMS, self.cfg.data.max_seconds)
        targets = np.zeros(len(waves), dtype=np.int64)  # unused: only the clips feed the statistics
        clips = WaveformDataset(waves, targets, self.prepared.n_samples, self.cfg.data.pad_mode, "center")
        fit_standardizer(model, clips, device)

    def train_set(self):
        from ...data.shards import ShardStream

        augment = None
        if self.cfg.augment.waveform:
            from ...augment.waveform import build_waveform_augment

            augment = build_waveform_augment(self.cfg.augment.waveform)
            augment.bind([], self.prepared.sample_rate)  # no clips in memory (own_background is refused)
        current = world()
        self._stream = ShardStream(self.train_urls, self.classes, self.task, self.prepared.n_samples,
                                   self.cfg.data.pad_mode, self.cfg.data.train_crop, seed=self.cfg.seed,
                                   rank=current.rank, world_size=current.size, shuffle_buffer=SHUFFLE_BUFFER,
                                   augment=augment, sample_rate=self.prepared.sample_rate, counts=self.train_counts,
                                   sizes=self.train_sizes, max_seconds=self.cfg.data.max_seconds)
        return self._stream

    def train_loader(self, train_set, device):
        return StreamBatches(train_set, self.cfg.train.batch_size, self.cfg.train.num_workers, device), \
            train_set.set_epoch

    # --- evaluation -------------------------------------------------------------------------------
    def prepare_evaluation(self, run: RunDir, state: dict[str, Any], data: str | None = None,
                           split: str | None = None, strict: bool = False) -> None:
        """A split of a shard set (the run's own by default; ``data`` another set), or audio files (``data``)."""
        from ...data.shards import load_split, read_index

        source = data or self.cfg.data.path
        if not is_shard_set(source):  # recordings given as files: decoded as any audio run's
            super().prepare_evaluation(run, state, data, split, strict)
            return
        index = read_index(source)
        split = split or "test"
        items, waves = load_split(index, split, self.cfg.data.max_seconds)
        classes = list(state["classes"])
        unknown = sorted({label for item in items for label in item.labels} - set(classes))
        if unknown:
            raise DataError(f"{source}: label '{unknown[0]}' is not one of the run's classes")
        if not items:
            raise DataError(f"nothing to evaluate: the shard set {source} has no {split} items")
        if int(index["sample_rate"]) != int(state["sample_rate"]):
            raise DataError(f"{source}: shards at {index['sample_rate']} Hz, the run was trained at "
                            f"{state['sample_rate']} Hz")
        # Everything chosen is evaluated: it becomes the "test" split of the shared machinery.
        items = [dataclasses.replace(item, split="test") for item in items]
        self.prepared = PreparedData(Manifest(items, classes=classes, task=state["task"]), waves, [],
                                     int(state["sample_rate"]), float(state["clip_seconds"]))
        self.task, self.classes, self.streamed = state["task"], classes, False

    def evaluate(self, probs_fn: Probabilities, split: str, loss: str = "task") -> SplitResult | None:
        if split == "train":  # streamed, not held: the overfitting column (train metrics) is left out
            return None
        return super().evaluate(probs_fn, split, loss)


class StreamBatches:
    """Batches of this rank's share of a :class:`~audioclf.data.shards.ShardStream`: ``batch_size`` is the global
    batch, each rank takes ``batch_size / ranks`` items a step. Ranks run out at different steps (``uneven``)."""

    uneven = True

    def __init__(self, stream, batch_size: int, workers: int, device):
        current = world()
        if batch_size < current.size:
            raise ConfigError(f"train.batch_size={batch_size} is the global batch, cut over {current.size} "
                              f"processes: set at least {current.size}")
        self.batch_size, self.local = batch_size, batch_size // current.size
        self.loader = torch.utils.data.DataLoader(stream, batch_size=self.local, num_workers=workers,
                                                  pin_memory=device.type == "cuda")

    def global_size(self, step: int) -> int:
        """The nominal global batch: a rank's loss weight is then its share of a full batch (see
        :func:`~audioclf.training.distributed.loss_weight`), the steps' sizes being unknown ahead."""
        return self.batch_size

    def __iter__(self):
        return iter(self.loader)
