"""Typed run configuration: YAML recipe + ``key=value`` overrides -> :class:`Config`.

Sections are dataclasses, so every valid key is visible in one place and an unknown key is an error that
names the key and the closest valid ones. ``model`` and ``features`` are checked against the model
registry and :class:`audioclf.features.FeatureConfig` when the run is built.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from .calibration import parse_threshold_rule
from .errors import ConfigError
from .registry import did_you_mean


@dataclass
class DataConfig:
    path: str | None = None  # folder-per-class tree or CSV (fname,labels[,split,fold,<groups>]); alias: root
    # auto (folder or CSV) | fsd2019 | gtzan | tau2022 | esc50 | urbansound8k | librispeech | audioset | shards
    # (written by audioclf shard)
    format: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)  # importer options, e.g. {subset: curated}
    audio_root: str | None = None  # where CSV file names resolve (default: the CSV's folder)
    sample_rate: int | None = None  # None: inferred from the files (see data.prepare.infer_sample_rate)
    clip_seconds: float | None = None  # None: inferred from the median duration
    pad_mode: str = "tile"  # short clips: "tile" (repeat, as FSD2019 solutions do) or "pad" (zeros)
    train_crop: str = "random"  # long clips in training: random | center | start | max_energy
    eval_crop: str = "windows"  # val/test: whole files as 50 %-overlap windows, averaged; or one crop
    # Cut silence (parameters by clip length): "edges" (leading/trailing; unset audio runs), true (every
    # silent stretch, as an FSD2019 solution did for its curated clips), "fixed" (every silent stretch, the same
    # parameters for every clip, as it did for its noisy clips) or false.
    trim_silence: bool | str | None = None
    split: str = "auto"  # auto | given | stratified | iterative | group | heldout | random
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    # Group column kept apart across splits (speaker, location ...); "none": none. Unset with split auto on a plain
    # CSV: a speaker/device/session column if the data has one (data.prepare.choose_group).
    group: str | None = None
    # A regex over each file's path whose match (its first or "group" capture) is the file's group, for layouts
    # without a group column, e.g. "speaker(\\d+)" or "([^/]+)_\\d+\\.wav$"; kept apart like data.group.
    group_pattern: str | None = None
    heldout: list[str] | None = None  # group values seen only in test (unseen devices)
    # At most n training items per combination of group columns and label, e.g. {per: [device, location], n: 50}
    # (the balanced subset of a DCASE 2022 thesis); {} = every item.
    train_subset: dict[str, Any] = field(default_factory=dict)
    # More items split by their own shares, e.g. `audioclf augment`'s copies: [{path: aug/manifest.csv, train: 0.3,
    # val: 0.7}] (a DCASE thesis's mix: originals + 30 % of the copies to train on, the rest to validate on). The
    # copies of one source (source_id column) stay on one side; [] = none.
    add: list[dict[str, Any]] = field(default_factory=list)
    strict: bool = False  # a bad audio file is an error instead of a reported skip
    # Before training, the quick form of `audioclf doctor`: exact duplicates (decoded audio) across splits or
    # labels, and groups in two splits, one line in the run header and report.md; false: skipped.
    doctor: bool = True
    cache_dir: str | None = None  # persist decoded + resampled waveforms between runs
    max_seconds: float = 3600.0  # longer files are skipped (checked from the header, before decoding)
    memory_gb: float = 4.0  # decoded audio above this goes to a disk cache, memory-mapped (larger-than-RAM data)
    # The training clips' decoded audio held in GPU memory, cropped there each batch (no loader, no copies):
    # null = when training on a GPU and it takes at most a quarter of the GPU's free memory; true / false.
    device_cache: bool | None = None


@dataclass
class AugmentConfig:
    # None (unset): chosen from the data for audio runs (see training.inputs.zero_config); [] / "none" / 0: off.
    waveform: list[dict[str, Any]] | None = None  # per-item transforms: [{name: gain, p: 0.5}]
    spec: str | dict[str, Any] | None = None  # SpecAugment on the device: "LD" or {policy: LD, band_shift: true}
    mixup_alpha: float | None = None  # MixUp Beta(alpha, alpha)
    mixup_on: str = "features"  # features | waveform
    duplicate: bool | str = False  # train on the set twice, only the second copy augmented (an FSD2019 solution);
    # "GROUP=VALUE": only the items of that group get the augmented copy (FSD2019 both subsets: source=curated)


@dataclass
class LimitsConfig:
    max_params: int | None = None  # e.g. 128000 (DCASE 2022 Task 1); checked before training starts
    max_macs: float | None = None  # per inference of the network (front-end excluded), e.g. 30e6


@dataclass
class TrainConfig:
    # None (unset): the input's default, for audio chosen from the data's size and the measured step time
    # (training.inputs.zero_config); every value a run used is written to its config.yaml.
    epochs: int | None = None
    batch_size: int | None = None  # audio 32, AudioSet embeddings 128
    optimizer: str | None = None  # adam | adamw | sgd; audio adamw, AudioSet embeddings adam
    lr: float = 1e-3  # learning rate (the head's, with backbone_lr set)
    backbone_lr: float | None = None  # transfer learning: the pretrained backbone's own rate (head uses lr)
    weight_decay: float | None = None  # audio: 0.05 (AdamW, decoupled); AudioSet embeddings: 0
    momentum: float = 0.9  # sgd only
    scheduler: str | None = None  # audio: cosine with a short linear warm-up
    scheduler_args: dict[str, Any] = field(default_factory=dict)  # the scheduler's own settings, e.g. {warmup_epochs: 2}
    label_smoothing: float | None = None  # audio single-label: 0.1; multi-label and embeddings: 0
    # The training loss: task (cross-entropy / BCE, or what the model registers) | gce, the generalised
    # cross-entropy for noisy labels (Zhang & Sabuncu 2018) with exponent gce_q (-> 0: cross-entropy, 1: MAE).
    # Validation's loss stays the task's.
    loss: str = "task"
    gce_q: float = 0.7  # train.loss=gce's exponent q, 0 < q <= 1 (Zhang & Sabuncu's 0.7)
    # Noisy labels (training.noisy): before training, confident learning (cleanlab, on out-of-fold probabilities of
    # a quick grouped k-fold model, noisy_folds folds) flags likely wrong training labels among noisy_items (null:
    # the whole training split; <group column>=<value>, e.g. source=noisy: those files), then none | drop (them) |
    # relabel (to the suggested class) | weight (each noisy-part file's loss by its label quality). Single-label.
    noisy: str = "none"
    noisy_items: str | None = None  # null: the whole training split is the noisy part; or <group column>=<value>
    noisy_folds: int = 10  # folds of the out-of-fold model that feeds confident learning
    # Class imbalance (audioclf.data.balance): sampler (class-balanced draws) | loss (class weights) | none | auto (zero-config:
    # on when the training split's largest class has more than 5x the items of its smallest; config.yaml records
    # what it chose).
    balance: str = "auto"
    balance_weights: str = "effective"  # train.balance=loss: inverse (1/n) or effective (number of samples, Cui et al.)
    balance_beta: float = 0.999  # the effective number's beta, 0 < beta < 1
    # metric for best checkpoint / early stopping (default: the input's, see training.inputs; single-label audio with
    # imbalanced classes: balanced_accuracy)
    monitor: str | None = None
    patience: int | str | None = "auto"  # early stopping, in epochs; auto: set with the epochs (>= 10); null: off
    # Which epoch's weights the run keeps, scores on val and test and deploys: best (by train.monitor) | last (the
    # final epoch's, for protocols that quote values "al final" of N epochs: a sweep over epochs then does not
    # contain its own shorter runs).
    keep: str = "best"
    # After each epoch, also score the training split as validation is scored (eval mode, no augmentation) and log
    # it as train_eval/<metric> in metrics.jsonl: the training curves some reports quote (a reference
    # speaker-counting project's "accuracy máximo en Entrenamiento"); one more pass over the training set an epoch.
    score_train: bool = False
    min_delta: float = 0.0  # the least change of the monitored metric that counts as an improvement
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool | None = None  # mixed precision; None = on for CUDA
    num_workers: int = 0  # DataLoader worker processes (0: load in the main process)
    grad_clip: float | None = None  # clip the gradient norm to this (null: off)
    # Exponential moving average of the weights, decay per step (Polyak & Juditsky 1992): validated, kept and
    # deployed instead of the raw weights; 0: off.
    ema: float | None = None
    # A validated ensemble of model families (training.members): "auto" adds a classical member (utterance statistics
    # + SVM) where zero-config chose the model of a single-label audio run, and keeps it, alone or mixed, only when
    # validation prefers it; "classical": always fit it; "none": the network alone.
    ensemble: str = "auto"
    # The ensemble's third member, a linear probe on a frozen AudioSet backbone's embeddings (models.probe):
    # "auto" adds it beside the classical member only when a supported checkpoint (mn10, mn05, mn04, cnn6, tried
    # in that order) is already in the weights cache and verifies; it never downloads. A name (mn04 .. mn40, cnn6,
    # cnn10, cnn14) asks for that backbone (and for the ensemble): an error when its file is not in the cache,
    # unless probe_download is true (then fetched once and checked, as model.weights=pretrained). "none": no probe.
    probe: str = "auto"
    probe_download: bool = False  # fetch a missing probe checkpoint once (and check it) instead of an error
    time_budget: str | None = None  # e.g. 10m: try a few settings within it, keep the best (workflows.search)
    # A hard wall-clock cap on this invocation, in minutes (null: none): checked between batches; the epoch it cuts
    # short is validated and kept, and the best checkpoint is scored on test as at a normal end (training.wall_time).
    max_minutes: float | None = None
    # A linear probe: the pretrained backbone's embeddings are extracted once (cached under data.cache_dir when
    # set), then only the head trains on them (training.inputs.frozen); the run keeps the whole model.
    frozen_embeddings: bool = False
    # Also send the run to experiment trackers: mlflow and/or tensorboard (training.tracking); [] = off.
    track: list[str] = field(default_factory=list)
    # Under torchrun (training.distributed): BatchNorm statistics over the whole global batch instead of each
    # process's share (PyTorch's SyncBatchNorm, GPUs only).
    sync_batchnorm: bool = False
    # torch.compile the network (training.loop.compile_for_training): faster steps on a GPU after a compilation
    # of a minute or so at the start; off by default (CPU runs and short runs gain nothing).
    compile: bool = False
    # Multi-label decisions (audioclf.calibration): each class's threshold chosen on validation: f1 (the best F1) |
    # precision=P (the best recall at precision >= P) | recall=P (the best precision at recall >= P) | a number in
    # (0, 1) for every class (0.5: the old fixed rule).
    threshold: str = "f1"
    # Temperature scaling (Guo et al. 2017): one scalar fitted on validation, applied by predict, serve, evaluate
    # and the export's metadata; calibrates confidences, never changes a single-label argmax.
    calibrate: bool = False


# Window probabilities -> events (predict --events, POST /events; deploy.events). An event starts where a class's
# (median-filtered) probability reaches high and lasts while it stays at or above low (hysteresis).
@dataclass
class EventsConfig:
    high: float | None = None  # start threshold; null: the class's decision threshold (0.5 unless the run stores one)
    low: float | None = None  # continue threshold; null: 0.6 x high (a dip to it does not end an event)
    median_windows: int = 1  # median filter over this many windows per class before thresholding (odd; 1: off)
    min_duration: float = 0.0  # events shorter than this many seconds are dropped (after merging)
    max_gap: float = 0.0  # events of one class less than this many seconds apart are merged into one
    # Energy gate: a window more than this many dB below the recording's loudest window cannot start or continue an
    # event (a single-label model must name something even in silence). -40: data.trim_silence's silence; null: off.
    min_level_db: float | None = -40.0


@dataclass
class Config:
    seed: int = 0  # one seed for splits, initialisation, crops and augmentation: same seed, same run
    out: str | None = None  # run directory (default runs/<timestamp>-<model>)
    init_from: str | None = None  # a run directory whose matching weights start this run (two-stage)
    cv: int | str | None = None  # cross-validation: "folds" (the fold column) or a number of folds
    # Multi-stage recipes (e.g. FSD2019: pre-train on noisy labels, fine-tune on curated): each entry
    # {name, ...overrides} runs in <out>/<name>; init_from: "@<stage>" starts from an earlier stage's weights.
    stages: list[dict[str, Any]] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    features: dict[str, Any] = field(default_factory=dict)  # FeatureConfig fields
    # {name: ..., <that model's arguments>}; no name: the input's default (audio small_cnn, embeddings embedding_lstm)
    model: dict[str, Any] = field(default_factory=dict)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    events: EventsConfig = field(default_factory=EventsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert YAML/CLI scalars to the annotated type, with an error naming the key."""
    if value is None:
        return None
    origin, args = get_origin(hint), get_args(hint)
    if args and type(None) in args:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key) if len(inner) == 1 else value
    try:
        if hint is bool:
            if isinstance(value, str):
                low = value.lower()
                if low not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(value)
                return low in {"true", "1", "yes"}
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if origin is list:
            items = value if isinstance(value, (list, tuple)) else [value]
            return [_coerce(v, args[0], key) for v in items] if args else list(items)
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError(value)
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"config key '{key}': expected {getattr(hint, '__name__', hint)}, got {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}'{did_you_mean(key, names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, {} if value is None else value, f"{prefix}{key}.")  # train=0: refused
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


# Hostile YAML (issue 20): a recipe or an override is refused, in one line naming it, before it can cost much.
# safe_load runs no code, but a "billion laughs" (anchors of aliases of anchors ...) is a few hundred bytes
# that stand for 10**9 values, expanded by the first copy or dump of the config (51-71 s and over 2 GB); and
# nesting recurses in Python (20,000 levels: a RecursionError). Real recipes are a few KB, a few levels deep.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 100
MAX_YAML_VALUES = 100_000  # with every alias counted as a copy of what it names


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts the values a document stands for (aliases expanded) and its depth
    while composing it, and stops at the limits above: the cost is bounded by the text read, not by what the
    aliases expand to."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth, self._values, self._sizes = 0, 0, {}

    def _count(self, n: int) -> None:
        self._values += n
        if self._values > MAX_YAML_VALUES:
            raise _Refused(f"it stands for more than {MAX_YAML_VALUES:,} values (aliases expanded)")

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:  # an alias inside the node it names: a document without end
                raise _Refused("an alias refers to a node that contains it")
            self._count(self._sizes[id(node)])
            return node
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _Refused(f"nested deeper than {MAX_YAML_DEPTH} levels")
        start = self._values
        self._count(1)
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._sizes[id(node)] = self._values - start  # nodes live as long as the loader: ids stay unique
        return node


class _Refused(Exception):
    """A document over one of the limits (turned into a ConfigError naming where it came from)."""


def load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` within the limits above: ConfigError ``"<where>: ..."`` beyond them;
    malformed YAML still raises ``yaml.YAMLError`` (callers word it)."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters of YAML, more than {MAX_YAML_BYTES:,}; refused")
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except _Refused as exc:
        raise ConfigError(f"{where}: YAML refused: {exc}") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> Any:
    """A YAML file through :func:`load_yaml`: at most ``MAX_YAML_BYTES`` read, UTF-8 only; every problem
    (too large, binary, malformed, over a limit) a one-line ConfigError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_YAML_BYTES + 1)  # never more, even from a FIFO or /dev/zero
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES:,} bytes; a YAML config is a small text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}); expected YAML") from None
    try:
        return load_yaml(text, str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None


def parse_value(text: str, where: str = "value") -> Any:
    """Parse the right-hand side of ``key=value`` with YAML rules (numbers, bools, lists, null); malformed
    YAML is the text itself; over the limits of :func:`load_yaml`, a ConfigError naming ``where``."""
    try:
        return load_yaml(text, where) if text != "" else ""
    except yaml.YAMLError:
        return text


def _scheduler_args_follow(before: dict[str, Any], after: dict[str, Any], args_given: bool) -> None:
    """A scheduler's arguments belong to it: when ``train.scheduler`` changes and no new arguments come with it,
    the old ones are dropped (gtzan's ``gamma`` would otherwise be passed to ``plateau`` and refused)."""
    old_train, new_train = before.get("train") or {}, after.get("train") or {}
    if not isinstance(old_train, dict) or not isinstance(new_train, dict):
        return  # a section given as a scalar (train=5): refused by config_from_dict, naming it
    changed = new_train.get("scheduler") != old_train.get("scheduler")
    if changed and not args_given and isinstance(after.get("train"), dict):
        after["train"]["scheduler_args"] = {}


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``a.b.c=value`` overrides to a nested dict (returns a new dict). Changing
    ``train.scheduler`` without giving ``train.scheduler_args`` resets them (see :func:`_scheduler_args_follow`)."""
    before = data
    data = copy.deepcopy(data)
    args_given = any(item.split("=", 1)[0].strip().startswith("train.scheduler_args") for item in overrides)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value (e.g. train.epochs=10)")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = parse_value(raw, f"override '{key.strip()}'")
    _scheduler_args_follow(before, data, args_given)
    return data


def config_from_dict(data: dict[str, Any]) -> Config:
    data = dict(data or {})
    section = data.get("data")
    if isinstance(section, dict) and "root" in section:  # data.root: the dataset's folder, same as data.path
        section = dict(section)
        root = section.pop("root")
        if section.get("path") is None:
            section["path"] = root
        data["data"] = section
    cfg = _build(Config, data, "")
    check_ranges(cfg)
    return cfg


def _positive(value: Any) -> bool:
    return math.isfinite(value) and value > 0


def _unit(value: Any) -> bool:  # 0 <= value < 1
    return math.isfinite(value) and 0 <= value < 1


def _within(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: math.isfinite(v) and low <= v <= high


# The range of every numeric key, checked when a config is built, before any file is read; None (unset, or
# off where the comment above the key says so) always passes. A key that sizes memory has an upper bound far
# above any real use (DCASE's n_fft 1764, FSD2019's 80 mels, 1500-unit AudioSet MLPs), so a typo or a hostile
# value (n_mels=100000, hidden=1e9) is one line instead of an allocation of gigabytes. Keys inside the
# ``features`` and ``model`` mappings are checked when given (a list, e.g. model.channels, entry by entry).
_SAMPLE_RATE = (_within(1_000, 768_000), "null (inferred) or 1000..768000 Hz")
_HIDDEN = (_within(1, 16_384), "1..16384 units")  # one 16384 x 16384 layer is already 1 GB of weights
_CHANNELS = (_within(1, 4_096), "1..4096 channels")
_DEPTH = (_within(0, 100), "0..100 layers")
_KERNEL = (_within(1, 4_096), "1..4096")
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1"),
    "data.sample_rate": _SAMPLE_RATE,
    "data.clip_seconds": (_within(0.01, 600), "null (inferred) or 0.01..600 seconds"),
    "data.max_seconds": (_within(1e-3, 86_400), "a positive number of seconds, at most 86400 (a day)"),
    "data.memory_gb": (_positive, "a positive number of GB"),
    "features.sample_rate": _SAMPLE_RATE,
    "features.n_fft": (_within(1, 2**16), "1..65536 samples"),
    "features.win_length": (_within(1, 2**16), "null (n_fft) or 1..65536 samples"),
    "features.hop_length": (_within(1, 2**16), "1..65536 samples"),
    "features.n_mels": (_within(1, 1_024), "1..1024 mel bands"),
    "features.n_mfcc": (_within(1, 1_024), "1..1024 coefficients"),
    "model.hidden": _HIDDEN, "model.dense": _HIDDEN, "model.head_hidden": _HIDDEN,
    "model.channels": _CHANNELS, "model.head_channels": _CHANNELS, "model.filters": _CHANNELS,
    "model.width": (_within(1, 1_024), "1..1024 (the base width; the widest layer has 32 times it)"),
    "model.width_mult": (lambda v: 0 < v <= 16, "a number 0 < x <= 16"),
    "model.depth": _DEPTH, "model.layers": _DEPTH, "model.blocks": _DEPTH,
    "model.kernel_size": _KERNEL, "model.stride": _KERNEL, "model.pool": _KERNEL,
    "train.epochs": (_within(1, 100_000), "null (chosen from the data) or 1..100000"),
    "train.batch_size": (_within(1, 65_536), "null (the input's default) or 1..65536"),
    "train.lr": (_positive, "a positive number"),
    "train.backbone_lr": (_positive, "null (the head's lr) or a positive number (freeze the backbone instead of 0)"),
    "train.weight_decay": (lambda v: math.isfinite(v) and v >= 0, "null or a number >= 0"),
    "train.momentum": (_unit, "a number 0 <= x < 1"),
    "train.label_smoothing": (_unit, "null or a number 0 <= x < 1"),
    "train.gce_q": (lambda v: math.isfinite(v) and 0 < v <= 1, "a number 0 < q <= 1"),
    "train.noisy_folds": (_within(2, 100), "2..100 folds"),
    "train.balance_beta": (lambda v: math.isfinite(v) and 0 < v < 1, "a number 0 < beta < 1"),
    "train.num_workers": (_within(0, 256), "0..256 (0: load in the main process)"),
    "train.grad_clip": (_positive, "null (off) or a positive number"),
    "train.min_delta": (lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    "train.ema": (_unit, "null, 0 (off) or a decay 0 < x < 1"),
    "train.max_minutes": (_positive, "null (no cap) or a positive number of minutes"),
    "augment.mixup_alpha": (lambda v: math.isfinite(v) and v >= 0, "null or a number >= 0 (0: off)"),
    "limits.max_params": (lambda v: v >= 1, "null or a positive integer"),
    "events.high": (lambda v: math.isfinite(v) and 0 < v <= 1, "null or a probability 0 < x <= 1"),
    "events.low": (lambda v: math.isfinite(v) and 0 < v <= 1, "null or a probability 0 < x <= 1"),
    "events.median_windows": (lambda v: v == int(v) and int(v) % 2 == 1 and 1 <= v <= 1001,
                              "an odd number of windows 1..1001 (1: off)"),
    "events.min_duration": (lambda v: math.isfinite(v) and v >= 0, "a number of seconds >= 0"),
    "events.max_gap": (lambda v: math.isfinite(v) and v >= 0, "a number of seconds >= 0"),
    "events.min_level_db": (lambda v: math.isfinite(v) and v <= 0,
                            "null (off) or a level in dB relative to the loudest window, <= 0"),
    "limits.max_macs": (_positive, "null or a positive number"),
}


def _field_comments(cls: type) -> dict[str, str]:
    """The comments of a config dataclass's fields in this file: the one after the field and the lines of
    ``#`` right above it (the source is the documentation, so it cannot drift from ``config --list``)."""
    comments: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# "))
            continue
        match = re.match(r"(\w+)\s*:[^#]*?(?:#\s*(.*))?$", text)
        if match and not text.startswith(("def ", "@", '"')):
            comments[match.group(1)] = " ".join([*above, match.group(2) or ""]).strip()
        above = []
    return comments


def describe_keys(section: str | None = None) -> list[tuple[str, str, Any, str]]:
    """``(dotted key, type, default, comment)`` for every config key, or those of one ``section``."""
    sections = {f.name: f for f in dataclasses.fields(Config)}
    if section is not None and section not in sections:
        raise ConfigError(f"unknown config section '{section}'{did_you_mean(section, list(sections))}")
    rows = []
    top_comments = _field_comments(Config)
    for name, fld in sections.items():
        if section is not None and name != section:
            continue
        hint = get_type_hints(Config)[name]
        if dataclasses.is_dataclass(hint):
            comments = _field_comments(hint)
            for sub in dataclasses.fields(hint):
                default = sub.default if sub.default is not dataclasses.MISSING else sub.default_factory()
                rows.append((f"{name}.{sub.name}", str(sub.type), default, comments.get(sub.name, "")))
        else:
            default = fld.default if fld.default is not dataclasses.MISSING else fld.default_factory()
            rows.append((name, str(fld.type), default, top_comments.get(name, "")))
    return rows


_MAPPINGS = ("features", "model", "train.scheduler_args")  # free-form sections: each key checked when given


# The keys that take one of a few words, checked with the ranges.
BALANCE_CHOICES = ("auto", "none", "sampler", "loss")
BALANCE_WEIGHTS = ("inverse", "effective")
_CHOICES: dict[str, tuple[str, ...]] = {"train.keep": ("best", "last"), "train.balance": BALANCE_CHOICES,
                                        "train.balance_weights": BALANCE_WEIGHTS}


def check_ranges(cfg: Config) -> None:
    """:class:`ConfigError` naming the first key whose value is out of its range (see ``_RANGES``) or not one of
    its choices (``_CHOICES``), or a non-finite number anywhere in ``features``, ``model`` or
    ``train.scheduler_args``."""
    for key, choices in _CHOICES.items():
        if config_value(cfg, key) not in choices:
            raise ConfigError(f"{key}={config_value(cfg, key)!r}: expected one of {', '.join(choices)}")
    parse_threshold_rule(cfg.train.threshold)
    for key, (ok, expected) in _RANGES.items():
        if key.startswith(("features.", "model.")):
            continue  # with their mappings below
        value = config_value(cfg, key)
        if _is_number(value) and not ok(value):  # other types: the features' and the model's own checks word them
            raise ConfigError(f"{key}={value!r}: expected {expected}")
    for section in _MAPPINGS:
        mapping = config_value(cfg, section)
        problem = _mapping_problem(section, mapping) if isinstance(mapping, dict) else None
        if problem:
            raise ConfigError(problem)
    high, low = cfg.events.high, cfg.events.low
    if _is_number(high) and _is_number(low) and low > high:
        raise ConfigError(f"events.low={low!r}: expected at most events.high={high!r} (low continues an event "
                          "that high started)")
    features = cfg.features if isinstance(cfg.features, dict) else {}
    n_fft, n_mels = features.get("n_fft"), features.get("n_mels")
    if _is_number(n_fft) and _is_number(n_mels) and n_mels > n_fft // 2 + 1:
        raise ConfigError(f"features.n_mels={n_mels!r}: expected at most n_fft // 2 + 1 = {int(n_fft) // 2 + 1} "
                          f"(the frequency bins of features.n_fft={n_fft!r})")


def check_section_ranges(section: str, mapping: dict[str, Any], where: str) -> None:
    """The ranges of ``_RANGES`` for a ``features`` or ``model`` mapping read from elsewhere than a config (a
    checkpoint's model spec): one line naming ``where`` and the key, before anything is sized by them."""
    problem = _mapping_problem(section, mapping)
    if problem:
        raise ConfigError(f"{where}: {problem}")


def _mapping_problem(section: str, mapping: dict[str, Any]) -> str | None:
    """The first key of a mapping whose value (each entry of a list) is out of its range or not finite."""
    for name, value in mapping.items():
        rule = _RANGES.get(f"{section}.{name}")
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if rule is not None and _is_number(v) and not rule[0](v):
                return f"{section}.{name}={value!r}: expected {rule[1]}"
            if isinstance(v, float) and not math.isfinite(v):
                return f"{section}.{name}={value!r}: expected a finite number"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML recipe (a path or a bundled recipe name such as ``demo``) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_recipe(path)
    return config_from_dict(apply_overrides(data, overrides or []))


def recipe_dir() -> Path:
    return Path(__file__).parent / "configs"


def read_recipe(path: str | Path, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A recipe's config sections; ``base: <recipe>`` puts them over another recipe's (a named variant of a
    recipe, e.g. ``gtzan_tuned`` over the faithful ``gtzan``, states only what it changes)."""
    data = read_config_file(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if str(base) in _chain or str(base) == str(path):
        raise ConfigError(f"{path}: base: {base} leads back to itself ({' -> '.join([*_chain, str(path), str(base)])})")
    return merge_dicts(read_recipe(str(base), (*_chain, str(path))), data)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of a config file or bundled recipe, as written (a ``base:`` key left unresolved)."""
    candidate = Path(path)
    # A bare name is a bundled recipe unless a file of that name exists: a folder called `demo` in the working
    # directory (`audioclf demo --out demo`) is not a config file.
    if not candidate.is_file() and candidate.suffix == "":
        bundled = recipe_dir() / f"{candidate.name}.yaml"
        if bundled.exists():
            candidate = bundled
        else:
            names = sorted(p.stem for p in recipe_dir().glob("*.yaml"))
            raise ConfigError(f"no config file or recipe named '{path}'{did_you_mean(str(path), names)}")
    if not candidate.exists():
        raise ConfigError(f"config file not found: {candidate}")
    if not candidate.is_file():
        raise ConfigError(f"{candidate}: a folder, not a config file")
    data = read_yaml(candidate) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{candidate}: expected a mapping of config sections at the top level")
    return data


def explicit_values(cfg: Config) -> dict[str, Any]:
    """The values of ``cfg`` that differ from the defaults (what the user actually set), nested like the
    config; ``model`` and ``features`` count as whole values."""
    default = Config().to_dict()

    def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in a.items():
            if isinstance(value, dict) and isinstance(b.get(key), dict) and key not in ("model", "features"):
                sub = diff(value, b[key])
                if sub:
                    out[key] = sub
            elif value != b.get(key):
                out[key] = value
        return out

    return diff(cfg.to_dict(), default)


def merge_dicts(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, section by section (a new dict); a ``train.scheduler`` in ``top`` without its
    ``scheduler_args`` drops the base's (see :func:`_scheduler_args_follow`), and a ``model`` section naming
    another model replaces the base's (its arguments were the other model's)."""
    merged = _merge(base, top)
    if isinstance(top.get("train"), dict) and "scheduler" in top["train"]:
        _scheduler_args_follow(base, merged, "scheduler_args" in top["train"])
    new_model, old_model = top.get("model"), base.get("model")
    if isinstance(new_model, dict) and isinstance(old_model, dict) and new_model.get("name", old_model.get("name")) \
            != old_model.get("name"):
        merged["model"] = dict(new_model)  # another model: the earlier one's arguments were its own
    return merged


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def flat_config(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dict as dotted keys (``train.lr``); lists, and mappings that are one value (``data.options``,
    ``train.scheduler_args``), as compact JSON text."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and key not in ("options", "scheduler_args"):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return flat


def config_value(cfg: Config, key: str) -> Any:
    """The value at dotted ``key`` (``train.lr``, ``model.name``); None for a missing dict entry."""
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part)
    return node


def fill_unset(cfg: Config, values: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with ``values`` (dotted keys) wherever ``cfg`` leaves the key None (unset); a key
    inside a dict section (``model.name``) counts as unset when missing."""
    cfg = copy.deepcopy(cfg)
    for key, value in values.items():
        section, _, name = key.rpartition(".")
        node = config_value(cfg, section) if section else cfg
        if isinstance(node, dict):
            if node.get(name) is None:
                node[name] = copy.deepcopy(value)
        elif getattr(node, name) is None:
            setattr(node, name, copy.deepcopy(value))
    return cfg
