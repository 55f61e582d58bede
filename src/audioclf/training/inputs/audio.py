"""Audio files as a run's inputs: a manifest decoded once, fixed-length crops for training, whole files
(overlapping windows, probabilities averaged) for evaluation, and a model with the feature front-end inside.

What the config leaves open is inferred from the files (:mod:`audioclf.data.prepare`): sample rate, clip
length, task and classes; the model defaults to ``small_cnn`` on a log-mel front-end.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ...config import Config, fill_unset
from ...data.audio import PAD_MODES, TRIM_MODES, window_starts
from ...data.balance import item_weights
from ...data.device_clips import DeviceClips, device_clips_fit
from ...data.duplicates import findings_line
from ...data.dataset import Skipped, StreamedRecordings, WaveformDataset, targets_for
from ...data.importers import load_manifest
from ...data.manifest import Item, Manifest
from ...data.prepare import (PreparedData, default_features, group_column, make_loader, prepare_data,
                             prepare_to_stream)
from ...errors import ConfigError, DataError
from ...features import FeatureConfig, FrontEnd
from ...metrics import check_monitor, primary_metric
from ...models.classifier import AudioClassifier
from ...models.registry import create_model, model_entry, model_input_kind
from ...runs import RunDir
from ..averaging import ema_decay_for
from ..distributed import epoch_batches
from ..evaluate import Probabilities, SplitResult, predict_batches, predict_whole_files, score
from .base import Inputs
from .zero_config import audio_defaults, imbalanced, patience_for, plan_epochs, warmup_epochs

__all__ = ["AudioInputs", "build_classifier", "fit_standardizer"]

log = logging.getLogger(__name__)

CROPS = ("random", "center", "start", "max_energy")
# Per-group metrics only for group columns with at most this many values in a split: a column of clip ids or
# recording locations would give hundreds of figures of a few items each, noise that costs time every epoch.
MAX_GROUP_VALUES = 50
LISTED_GROUP_NAMES = 20  # group names per split kept in summary.json (a column of recordings may have thousands)


class AudioInputs(Inputs):
    kind = "audio"
    description = "audio files"
    # Before decoding; the rest is chosen from the data in prepare() (see .zero_config).
    defaults = {"model.name": "small_cnn", "train.batch_size": 32, "data.trim_silence": "edges"}

    prepared: PreparedData
    # Training file id -> its loss weight (train.noisy=weight, training.noisy); None: every file counts 1.
    loss_weights: dict[str, float] | None = None

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Data and augmentation settings, checked before any file is decoded."""
        super().check_config(cfg)
        if cfg.data.train_crop not in CROPS:
            raise ConfigError(f"data.train_crop={cfg.data.train_crop!r}: expected one of {', '.join(CROPS)}")
        if cfg.data.pad_mode not in PAD_MODES:  # used once clips are decoded: checked before that
            raise ConfigError(f"data.pad_mode={cfg.data.pad_mode!r}: expected one of {', '.join(PAD_MODES)}")
        if cfg.data.trim_silence not in (None, *TRIM_MODES):
            raise ConfigError(f"data.trim_silence={cfg.data.trim_silence!r}: expected edges, fixed, true or false")
        if cfg.data.eval_crop not in (*CROPS, "windows"):
            raise ConfigError(f"data.eval_crop={cfg.data.eval_crop!r}: expected windows or one of {', '.join(CROPS)}")
        aug = cfg.augment
        if isinstance(aug.duplicate, str):
            duplicate_group(aug.duplicate)
        if aug.mixup_on not in ("features", "waveform"):
            raise ConfigError(f"augment.mixup_on={aug.mixup_on!r}: expected features or waveform")
        if aug.mixup_alpha is not None and aug.mixup_alpha < 0:
            raise ConfigError(f"augment.mixup_alpha={aug.mixup_alpha}: expected >= 0 (0 = off)")
        if aug.waveform:
            from ...augment.waveform import build_waveform_augment

            build_waveform_augment(aug.waveform).check_variants(None, "augment.waveform (drawn afresh each epoch)")
        if aug.spec is not None:
            from ...augment.spectrogram import build_spec_augment

            build_spec_augment(aug.spec)

    # --- data -------------------------------------------------------------------------------------
    def prepare(self, manifest: Manifest | None = None, progress: bool = False, training: bool = True) -> None:
        """Import/check/decode the data; ``training=False`` for items a trained run only reads (no class checks)."""
        monitor = self.cfg.train.monitor
        check = (lambda m: check_monitor(monitor, m.task)) if monitor else None  # before decoding
        self.prepared = prepare_data(self.cfg, manifest, progress=progress, training=training, check=check)
        self.task, self.classes = self.prepared.manifest.task, list(self.prepared.manifest.classes)
        self._auto_schedule = self.cfg.train.scheduler is None and not self.cfg.train.scheduler_args
        self.cfg = fill_unset(self.cfg, self._data_defaults())

    def _data_defaults(self) -> dict[str, Any]:
        """The zero-config choices for this data (see :mod:`.zero_config`)."""
        if model_input_kind(self.cfg.model["name"]) == "waveform":
            return audio_defaults(self.task, None)
        _, n_bins, n_frames = FrontEnd(self._feature_config()).output_shape(self.prepared.n_samples)
        return audio_defaults(self.task, (n_bins, n_frames))

    def _feature_config(self) -> FeatureConfig:
        return feature_config(self.cfg, self.prepared.sample_rate)

    def complete_config(self, macs_per_item: int) -> None:
        """Epochs for this data and model when unset (:func:`.zero_config.plan_epochs`), and the warm-up of
        the zero-config cosine schedule."""
        train = self.cfg.train
        if train.epochs is None:
            val_windows = sum(len(window_starts(len(self.prepared.waves[item.id]), self.prepared.n_samples,
                                                max(1, self.prepared.n_samples // 2)))
                              for item in self.prepared.split("val"))
            train.epochs = plan_epochs(self.count("train"), train.batch_size, macs_per_item, val_windows)
        if self._auto_schedule and train.scheduler == "cosine":
            train.scheduler_args = {"warmup_epochs": warmup_epochs(train.epochs)}
        if train.ema is None:
            train.ema = ema_decay_for(train.epochs * math.ceil(self.count("train") / train.batch_size))
        super().complete_config(macs_per_item)

    def auto_patience(self, epochs: int) -> int:
        return patience_for(epochs)

    def prepare_evaluation(self, run: RunDir, state: dict[str, Any], data: str | None = None,
                           split: str | None = None, strict: bool = False) -> None:
        classes, task = list(state["classes"]), state["task"]
        if data is None:
            manifest = Manifest.from_csv(run.manifest)
            split = split or "test"
        else:
            manifest = load_manifest(data, audio_root=self.cfg.data.audio_root, classes=classes)
        if split is not None:
            manifest = manifest.filter(lambda item: item.split == split)
        if len(manifest) == 0:
            raise DataError(f"nothing to evaluate: no items{f' in split {split!r}' if split else ''}")
        self.cfg.data.strict = strict
        self.cfg.data.split = "given"
        # Everything chosen is evaluated: it becomes the "test" split of the shared machinery.
        manifest = Manifest([dataclasses.replace(item, split="test") for item in manifest], classes=classes, task=task)
        # Whole files are scored in one pass: streamed from disk (memory independent of their length), not
        # decoded up front as training does for the epochs to come.
        self.streamed = self.cfg.data.eval_crop == "windows"
        if self.streamed:
            self.prepared = prepare_to_stream(self.cfg, manifest)
        else:
            self.prepared = prepare_data(self.cfg, manifest, progress=False, training=False)
        self.task, self.classes = task, classes

    def count(self, split: str) -> int:
        return len(self.prepared.split(split))

    def skipped(self) -> list[dict[str, str]]:
        return [entry.to_dict() for entry in self.prepared.skipped]

    def data_check(self) -> list[dict[str, Any]] | None:
        findings = self.prepared.findings
        return None if findings is None else [finding.to_dict() for finding in findings]

    def default_monitor(self) -> str:
        """Accuracy (multi-label: lwlrap); on an imbalanced single-label training split balanced accuracy, which
        a model cannot raise by favouring the common classes."""
        if self.task == "single_label" and imbalanced(self.train_class_counts()):
            return "balanced_accuracy"
        return primary_metric(self.task)

    def train_class_counts(self) -> np.ndarray | None:
        return np.array(list(self.prepared.split("train").class_counts().values()), dtype=np.int64)

    def facts(self) -> dict[str, Any]:
        return {"input_kind": self.kind, "sample_rate": self.prepared.sample_rate,
                "clip_samples": self.prepared.n_samples, "clip_seconds": self.prepared.clip_seconds}

    def split_groups(self) -> dict[str, Any] | None:
        column = group_column(self.cfg.data)
        if column is None or column not in self.prepared.manifest.group_names:
            return None
        per_split = self.prepared.manifest.groups_per_split(column)
        out: dict[str, Any] = {"column": column}
        for split in ("train", "val", "test"):
            values = per_split.get(split, [])
            out[split] = {"count": len(values), "names": values[:LISTED_GROUP_NAMES]}
        return out

    def resolved(self, model: AudioClassifier) -> dict[str, Any]:
        return {"data": {"sample_rate": self.prepared.sample_rate, "clip_seconds": self.prepared.clip_seconds},
                "features": model.feature_config.to_dict() if model.feature_config else {}}

    def describe(self, user: Config) -> list[tuple[str, str]]:
        prepared, data = self.prepared, user.data
        manifest = prepared.manifest

        def source(value, inferred: str) -> str:
            return "set" if value is not None else inferred

        counts = {split: self.count(split) for split in ("train", "val", "test")}
        shown = ", ".join(self.classes[:8]) + (f" (+{len(self.classes) - 8} more)" if len(self.classes) > 8 else "")
        groups = ", ".join(manifest.group_names) or "none"
        column = group_column(self.cfg.data)
        kept = f"; groups kept apart: {column}" if column else ""
        if column and user.data.group is None and not user.data.group_pattern:
            kept += " (zero-config, from the column's name; data.group=none mixes them)"
        return [
            ("data", f"{len(manifest)} files from {data.path} ({data.format}); {len(prepared.skipped)} skipped"),
            ("task", f"{self.task.replace('_', '-')} ({'set' if user.data.format != 'auto' else 'from the labels'})"),
            ("classes", f"{len(self.classes)}: {shown}"),
            ("sample rate", f"{prepared.sample_rate} Hz ({source(data.sample_rate, 'the most common rate, at most 22.05 kHz')})"),
            ("clip", f"{prepared.clip_seconds:g} s ({source(data.clip_seconds, 'from the durations of the files')})"),
            ("split", f"{data.split}: train {counts['train']} / val {counts['val']} / test {counts['test']}{kept}"),
            ("group columns", groups),
            ("silence trim", f"{self.cfg.data.trim_silence} ({source(data.trim_silence, 'zero-config default')})"),
            *([("data check", findings_line([f.kind for f in prepared.findings]))] if prepared.findings is not None else []),
        ]

    def groups_per_split(self) -> dict[str, dict[str, int]]:
        manifest = self.prepared.manifest
        return {name: {split: len(values) for split, values in manifest.groups_per_split(name).items()}
                for name in manifest.group_names}

    def snapshot(self, run_root: Path) -> None:
        self.prepared.manifest.to_csv(RunDir(run_root).manifest)

    def dataset(self, split: str, train: bool):
        """The items of ``split`` as fixed-length clips: training crops (with waveform augmentation and the
        duplicated augmented copy when configured) or evaluation crops / whole-file windows."""
        cfg, prepared = self.cfg, self.prepared
        subset = prepared.split(split)
        targets = targets_for(subset, self.classes, self.task)
        if train and self.loss_weights is not None:
            targets = weighted_targets(targets, [self.loss_weights.get(item.id, 1.0) for item in subset],
                                       len(self.classes))
        if getattr(self, "streamed", False):
            return StreamedRecordings([item.path for item in subset], targets, prepared.n_samples,
                                      prepared.sample_rate, cfg.data.pad_mode, cfg.data.trim_silence,
                                      cfg.data.max_seconds, cfg.data.strict)
        waves = [prepared.waves[item.id] for item in subset]
        augment = None
        if train and cfg.augment.waveform:
            from ...augment.waveform import build_waveform_augment

            augment = build_waveform_augment(cfg.augment.waveform)
            # own_background learns from the training clips (the training split's only, never val/test);
            # room_reverb simulates its rooms here, before DataLoader workers fork
            train_waves = waves if split == "train" else [prepared.waves[item.id] for item in prepared.split("train")]
            augment.bind(train_waves, prepared.sample_rate)
        dataset = WaveformDataset(waves, targets, prepared.n_samples, cfg.data.pad_mode,
                                  cfg.data.train_crop if train else cfg.data.eval_crop, seed=cfg.seed,
                                  augment=augment, sample_rate=prepared.sample_rate)
        if train and cfg.augment.duplicate:
            from ...augment.batch import DuplicateAugmented

            # The batch carries which items are the augmented copy, so SpecAugment/MixUp touch only those.
            dataset = DuplicateAugmented(dataset, flag=True, only=duplicated_items(subset, cfg.augment.duplicate))
        return dataset

    # --- model and training -----------------------------------------------------------------------
    def build_model(self) -> AudioClassifier:
        return build_classifier(self.cfg, len(self.classes), self.prepared.sample_rate, self.prepared.n_samples,
                                self._feature_config())

    def initialize(self, model: AudioClassifier, device) -> None:
        fit_standardizer(model, self.dataset("train", train=False), device)

    def train_set(self):
        return self.dataset("train", train=True)

    def train_loader(self, train_set, device):
        sampler = epoch_batches(len(train_set), self.cfg.train.batch_size, self.cfg.seed,
                                weights=self.sampling_weights(train_set))
        if device_clips_fit(train_set, device, self.cfg.data.device_cache):  # crops cut on the device itself
            loader = DeviceClips(train_set, sampler, device)
            log.info("training audio held on %s (%.2f GB): clips are cropped there", device, loader.nbytes / 1e9)
        else:
            loader = make_loader(train_set, self.cfg.train.batch_size, self.cfg.train.num_workers, device=device,
                                 batch_sampler=sampler)

        def set_epoch(epoch: int) -> None:
            sampler.set_epoch(epoch)
            train_set.set_epoch(epoch)

        return loader, set_epoch

    def sampling_weights(self, train_set) -> np.ndarray | None:
        """Per-item draw weights of ``train_set`` with ``train.balance=sampler`` (:func:`item_weights` of its
        targets), else None (a plain shuffle)."""
        if self.cfg.train.balance != "sampler":
            return None
        return item_weights(item_targets(train_set), len(self.classes))

    # --- evaluation -------------------------------------------------------------------------------
    def evaluate(self, probs_fn: Probabilities, split: str, loss: str = "task") -> SplitResult | None:
        subset = self.prepared.split(split)
        if len(subset) == 0:
            return None
        dataset = self.dataset(split, train=False)
        batch_size = self.cfg.train.batch_size
        if dataset.crop == "windows":  # whole files: every window, probabilities averaged
            probs, targets = predict_whole_files(probs_fn, dataset, max_windows=max(batch_size, 64))
        else:
            probs, targets = predict_batches(probs_fn, make_loader(dataset, batch_size, 0))
        failed = getattr(dataset, "failed", {})
        if failed:  # streamed files found unreadable part-way: skipped, like files that fail to decode
            keep = [i for i in range(len(subset)) if i not in failed]
            self.prepared.skipped += [Skipped(subset[i].path, reason) for i, reason in sorted(failed.items())]
            self.prepared.manifest = self.prepared.manifest.filter(lambda item: item.path not in
                                                                   {subset[i].path for i in failed})
            subset, probs, targets = subset.with_items([subset[i] for i in keep]), probs[keep], targets[keep]
            if not keep:
                return None
        groups = {name: subset.group_values(name) for name in subset.group_names}
        metrics = score(self.task, targets, probs, self.classes, self.scored_groups(split), loss)
        return SplitResult(metrics, probs, targets, [item.id for item in subset], groups)

    def scored_groups(self, split: str) -> dict[str, list[str]]:
        """The group columns of ``split`` that get per-group metrics (2 to MAX_GROUP_VALUES values)."""
        subset = self.prepared.split(split)
        groups = {name: subset.group_values(name) for name in subset.group_names}
        return {name: values for name, values in groups.items() if 2 <= len(set(values)) <= MAX_GROUP_VALUES}


def weighted_targets(indices: np.ndarray, weights: list[float], n_classes: int) -> np.ndarray:
    """Single-label class indices as one-hot rows scaled by each item's weight: the cross-entropy (and the
    generalised one) are linear in the target row, so an item's loss counts ``weight`` times, through MixUp too.
    With label smoothing, the smoothing's share of the row is not weighted."""
    return (np.eye(n_classes, dtype=np.float32)[indices] * np.asarray(weights, dtype=np.float32)[:, None])


def item_targets(dataset) -> np.ndarray:
    """The target of each index of a training set, through the wrappers around the clips: DuplicateAugmented
    (its augmented copies follow the originals), a distillation teacher cache (same indices); frozen embeddings'
    windows take their file's target."""
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        targets = item_targets(inner)
        copies = getattr(dataset, "copies", None)
        return targets if copies is None else np.concatenate([targets, targets[np.asarray(copies, dtype=np.int64)]])
    targets = np.asarray(dataset.targets)
    owner = getattr(dataset, "owner", None)
    return targets if owner is None else targets[np.asarray(owner)]


def feature_config(cfg: Config, sample_rate: int) -> FeatureConfig:
    """The front-end: the zero-config log-mel for the rate, under the model's own front-end (if it registers one),
    under the user's ``features.*``."""
    name = cfg.model.get("name") or AudioInputs.defaults["model.name"]
    designed = model_entry(name).features or {}
    return FeatureConfig.from_dict({**default_features(sample_rate), **designed, **cfg.features,
                                    "sample_rate": sample_rate})


def duplicate_group(rule: str) -> tuple[str, str]:
    """``augment.duplicate="GROUP=VALUE"`` -> (GROUP, VALUE); anything else is a one-line ConfigError."""
    group, sep, value = str(rule).partition("=")
    if not sep or not group.strip() or not value.strip():
        raise ConfigError(f"augment.duplicate={rule!r}: expected true, false or GROUP=VALUE (e.g. source=curated)")
    return group.strip(), value.strip()


def duplicated_items(items: Sequence[Item], rule: bool | str) -> list[int] | None:
    """The training items ``augment.duplicate`` copies: all (None) for true, else those whose group matches
    (an FSD2019 solution augmented its curated clips only while training on curated and noisy ones)."""
    if not isinstance(rule, str):
        return None
    group, value = duplicate_group(rule)
    chosen = [i for i, item in enumerate(items) if item.groups.get(group) == value]
    if not chosen:
        found = sorted({item.groups[group] for item in items if group in item.groups})
        raise ConfigError(f"augment.duplicate={rule}: no training item has {group}={value} "
                          f"({group} values there: {', '.join(found) or 'none'})")
    return chosen


def build_classifier(cfg: Config, n_classes: int, sample_rate: int, n_samples: int,
                     feature_cfg: FeatureConfig | None = None) -> AudioClassifier:
    """``cfg.model`` on a front-end from ``cfg.features`` (defaults for the rate), or on raw waveforms."""
    model_args = dict(cfg.model)
    name = model_args.pop("name", None) or AudioInputs.defaults["model.name"]
    kind = model_input_kind(name)
    if kind == "waveform":
        backbone = create_model(name, n_classes=n_classes, input_shape=(n_samples,), **model_args)
        return AudioClassifier(backbone, None)
    if kind != "features":
        raise ConfigError(f"model.name={name} takes {kind} input; audio training needs a features or waveform model")
    if feature_cfg is None:
        feature_cfg = feature_config(cfg, sample_rate)
    input_shape = tuple(FrontEnd(feature_cfg).output_shape(n_samples))
    backbone = create_model(name, n_classes=n_classes, input_shape=input_shape, **model_args)
    return AudioClassifier(backbone, feature_cfg)


@torch.no_grad()
def fit_standardizer(model: AudioClassifier, dataset, device: torch.device, max_items: int = 2000) -> None:
    """Per-band mean/std of the training features (centre crops, up to ``max_items`` clips)."""
    if model.frontend is None:
        return
    n = min(len(dataset), max_items)
    total = total_sq = None
    count = 0
    for start in range(0, n, 64):
        wave = torch.stack([dataset[i][0] for i in range(start, min(n, start + 64))]).to(device)
        feats = model.frontend(wave).double()  # (B, 1, F, T)
        s, sq = feats.sum(dim=(0, 1, 3)), (feats**2).sum(dim=(0, 1, 3))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += feats.shape[0] * feats.shape[1] * feats.shape[3]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt().clamp_min(1e-3)
    model.standardize.mean.copy_(mean.float().view_as(model.standardize.mean))
    model.standardize.std.copy_(std.float().view_as(model.standardize.std))
