"""Train and evaluate on AudioSet embeddings (MISSION S5): the runner behind ``audioclf train`` for them.

Same run directory as :func:`audioclf.experiment.train` (config.yaml, metrics.jsonl, checkpoints/best.pt
and last.pt, plots, summary.json with task "multi_label" and the class display names), same loop
(:func:`~audioclf.train.loop.train_one_epoch`), but the inputs are (10, 128) embedding sequences read from
HDF5 or TFRecord files instead of decoded audio, and the unbalanced set is streamed.

Where the data comes from (``data.path``):

* a folder with the release layout: ``bal_train.h5`` / ``unbal_train.h5`` / ``eval.h5`` (the HDF5
  conversion the report used), or ``bal_train/``, ``unbal_train/``, ``eval/`` folders of ``.tfrecord``
  files (Google's ``audioset_v1_embeddings``), with ``class_labels_indices.csv`` next to them. Training
  uses the balanced set (``data.options.train_set=unbalanced`` for the other one); ``eval`` is the test set.
* a single ``.h5`` file, ``.tfrecord`` file or folder of ``.tfrecord`` files: the training set.

Validation is a random ``data.fractions`` share of the training rows unless ``data.options.val_path`` names a
set. The report validated (early stopping, best checkpoint) on the eval set itself and said so as a
limitation (seeds/004 §4.2.3); ``data.options.val_path=<eval set>`` reproduces that protocol.

S5 defaults (seeds/004 §4.2.3-4.2.4), applied when a plain dict config leaves them out: batch 128, at most
50 epochs, early stopping on validation mAP with patience 3, best checkpoint on mAP, Adam, and the model
``embedding_lstm`` (the report's best).
"""

from __future__ import annotations

import copy
import difflib
import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import metrics as M
from .config import Config, DataConfig, config_from_dict
from .data.embeddings import (
    EmbeddingDataset,
    H5EmbeddingStream,
    TFRecordEmbeddingStream,
    load_tfrecord_rows,
    split_rows,
)
from .data.importers.audioset import (
    H5_SUFFIXES,
    N_CLASSES,
    N_STEPS,
    EMBEDDING_DIM,
    TFRECORD_SUFFIXES,
    default_class_names,
    embedding_format,
    find_class_labels,
    h5_info,
    list_tfrecords,
    read_class_labels,
    read_h5,
)
from .data.tfrecord import count_records
from .errors import ConfigError, DataError
from .experiment import (
    EpochFit,
    _explicit,
    _merge,
    default_run_dir,
    measure_complexity,
    resolve_device,
    restore_training_state,
    run_epochs,
    seed_everything,
    set_rng_state,
)
from .data.prepare import EpochShuffle, make_loader
from .models.classifier import AudioClassifier
from .models.registry import create_model, list_models, model_input_kind
from .models.sequence import loss_for
from .report import write_report
from .runs import RunDir, plot_curves
from .train.callbacks import EarlyStopping
from .train.loop import evaluation_loss, predict_loader, supervised_step
from .train.optim import build_optimizer, build_scheduler

__all__ = [
    "EmbeddingOptions",
    "S5_TRAIN_DEFAULTS",
    "Source",
    "is_embedding_data",
    "find_layout",
    "resolve_sources",
    "split_config",
    "train_embeddings",
    "evaluate_embeddings_run",
]

TASK = "multi_label"
# seeds/004 §4.2.3-4.2.4: batch 128, <= 50 epochs, EarlyStopping(monitor=mAP, patience=3), best checkpoint on mAP.
S5_TRAIN_DEFAULTS: dict[str, Any] = {"batch_size": 128, "epochs": 50, "patience": 3, "monitor": "mAP",
                                     "optimizer": "adam", "lr": 1e-3}
S5_MODEL_DEFAULT: dict[str, Any] = {"name": "embedding_lstm"}
# File / folder names of the releases (Kong et al.'s HDF5 files, Google's TFRecord folders).
_LAYOUT_NAMES = {
    "balanced": ("bal_train", "balanced_train", "balanced_train_segments"),
    "unbalanced": ("unbal_train", "unbalanced_train", "unbalanced_train_segments"),
    "eval": ("eval", "eval_segments"),
}


# --- options -----------------------------------------------------------------------------------------
@dataclass
class EmbeddingOptions:
    """The ``data.*`` keys the embedding runner reads beyond :class:`~audioclf.config.DataConfig`."""

    train_path: str | None = None  # a set (file/folder) to train on instead of the layout's balanced set
    val_path: str | None = None  # validation set (default: a data.fractions share of the training rows)
    test_path: str | None = None  # test set (default: the layout's eval set)
    labels_csv: str | None = None  # class_labels_indices.csv (default: found next to the data)
    train_set: str = "balanced"  # balanced | unbalanced: which training set of the layout
    stream: str = "auto"  # auto (stream sets larger than max_rows_in_memory) | true | false
    max_rows_in_memory: int = 200_000  # rows a streaming reader may hold at once (~360 MB at 527 classes)
    chunk_rows: int = 4096  # rows read from disk at once when streaming

    def __post_init__(self) -> None:
        if self.train_set not in ("balanced", "unbalanced"):
            raise ConfigError(f"data.options.train_set={self.train_set!r}; expected 'balanced' or 'unbalanced'")
        stream = str(self.stream).lower()
        stream = {"1": "true", "yes": "true", "0": "false", "no": "false"}.get(stream, stream)
        if stream not in ("auto", "true", "false"):
            raise ConfigError(f"data.options.stream={self.stream!r}; expected auto, true or false")
        self.stream = stream
        for key in ("max_rows_in_memory", "chunk_rows"):
            value = getattr(self, key)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ConfigError(f"data.{key}={value!r}; expected a positive int")
            setattr(self, key, int(value))


_OPTION_KEYS = [f.name for f in dataclasses.fields(EmbeddingOptions)]
_DATA_CONFIG_KEYS = {f.name for f in dataclasses.fields(DataConfig)}


def split_config(cfg: Config | Mapping[str, Any]) -> tuple[Config, EmbeddingOptions]:
    """A :class:`Config` plus the embedding options, from a Config or a plain (recipe-style) dict.

    A dict may hold the :class:`EmbeddingOptions` keys under ``data`` (they are taken out before the rest
    is validated as a Config) and gets :data:`S5_TRAIN_DEFAULTS` / ``embedding_lstm`` where it leaves
    ``train.*`` / ``model`` out. A Config is used as it is; options come from ``cfg.data`` attributes of
    the same names once DataConfig has them.
    """
    if isinstance(cfg, Config):
        return cfg, _options(cfg.data.options)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"train_embeddings: expected a Config or a dict, got {type(cfg).__name__}")
    data = copy.deepcopy(dict(cfg))
    section = dict(data.get("data") or {})
    # Recipe-style dicts may give the options directly under data; they live in data.options.
    options = {**dict(section.get("options") or {}),
               **{key: section.pop(key) for key in _OPTION_KEYS if key in section and key not in _DATA_CONFIG_KEYS}}
    section["options"] = options
    section.setdefault("format", "audioset")
    data["data"] = section
    data["train"] = {**S5_TRAIN_DEFAULTS, **dict(data.get("train") or {})}
    data.setdefault("model", dict(S5_MODEL_DEFAULT))
    config = config_from_dict(data)
    return config, _options(config.data.options)


def _options(values: Mapping[str, Any]) -> EmbeddingOptions:
    unknown = [key for key in values if key not in _OPTION_KEYS]
    if unknown:
        near = difflib.get_close_matches(unknown[0], _OPTION_KEYS, n=1)
        hint = f"; did you mean {near[0]}?" if near else f"; valid: {', '.join(_OPTION_KEYS)}"
        raise ConfigError(f"unknown data.options key '{unknown[0]}' for AudioSet embeddings{hint}")
    return EmbeddingOptions(**values)


# --- sources -------------------------------------------------------------------------------------------
@dataclass
class Source:
    """One embedding set on disk (an HDF5 file or TFRecord files), optionally only some of its rows."""

    format: str  # "h5" | "tfrecord"
    paths: list[Path]
    rows: np.ndarray | None = None  # sorted row indices (TFRecord: global record index over ``paths``)
    counts: list[int] = dataclasses.field(default_factory=list)  # rows per file

    @property
    def total_rows(self) -> int:
        return sum(self.counts)

    @property
    def n_rows(self) -> int:
        return self.total_rows if self.rows is None else len(self.rows)

    def describe(self) -> dict[str, Any]:
        where = str(self.paths[0]) if len(self.paths) == 1 else f"{self.paths[0].parent} ({len(self.paths)} files)"
        return {"format": self.format, "path": where, "rows": self.n_rows,
                "subset": self.rows is not None}


def _open_source(path: str | Path) -> Source:
    path = Path(path)
    fmt = embedding_format(path)
    if fmt == "h5":
        return Source("h5", [path], None, [h5_info(path).n_rows])
    files = list_tfrecords(path)
    return Source("tfrecord", files, None, [count_records(f) for f in files])


def find_layout(root: str | Path) -> dict[str, Path]:
    """The sets of a release folder: ``{"balanced"|"unbalanced"|"eval": file or folder}`` (may be empty)."""
    root = Path(root)
    if not root.is_dir():
        return {}
    found: dict[str, Path] = {}
    for base in (root, root / "audioset_v1_embeddings", root / "packed_features"):
        for kind, names in _LAYOUT_NAMES.items():
            for name in names:
                if kind in found:
                    break
                for suffix in H5_SUFFIXES:
                    if (base / f"{name}{suffix}").is_file():
                        found[kind] = base / f"{name}{suffix}"
                        break
                else:
                    folder = base / name
                    if folder.is_dir() and any(p.suffix.lower() in TFRECORD_SUFFIXES for p in folder.iterdir()):
                        found[kind] = folder
    return found


def is_embedding_data(path: str | Path | None) -> bool:
    """Whether ``path`` is AudioSet-style embedding data (what ``audioclf train`` should send here):
    an .h5/.hdf5/.tfrecord file, a release folder, or a folder holding .tfrecord / .h5 files."""
    if not path:
        return False
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in (*H5_SUFFIXES, *TFRECORD_SUFFIXES)
    if path.is_dir():
        if find_layout(path):
            return True
        return any(p.suffix.lower() in (*H5_SUFFIXES, *TFRECORD_SUFFIXES) for p in path.iterdir() if p.is_file())
    return False


def resolve_sources(cfg: Config, options: EmbeddingOptions) -> tuple[Source, Source, Source | None]:
    """(train, val, test) sources for a run; val (and test, without an eval set) split off the train rows."""
    layout = find_layout(cfg.data.path) if cfg.data.path else {}
    if options.train_path:
        train_where = options.train_path
    elif layout:
        if options.train_set not in layout:
            raise DataError(f"{cfg.data.path}: no {options.train_set} training set "
                            f"(looked for {', '.join(_LAYOUT_NAMES[options.train_set])} as .h5 or a .tfrecord folder)")
        train_where = layout[options.train_set]
    elif cfg.data.path:
        train_where = cfg.data.path
    else:
        raise ConfigError("data.path is required: an AudioSet embedding folder, an .h5 file or .tfrecord file(s)")
    train = _open_source(train_where)
    val = _open_source(options.val_path) if options.val_path else None
    test_where = options.test_path or layout.get("eval")
    test = _open_source(test_where) if test_where else None
    if val is None or test is None:
        fractions = list(cfg.data.fractions) + [0.0] * (3 - len(cfg.data.fractions))
        parts = [fractions[0]] + ([fractions[1]] if val is None else []) + ([fractions[2]] if test is None else [])
        if sum(parts[1:]) == 0:
            raise ConfigError(f"data.fractions={cfg.data.fractions}: the held-out shares are 0; "
                              "give data.options.val_path or a validation fraction")
        pieces = split_rows(train.n_rows, parts, cfg.seed)
        held = iter(pieces[1:])
        if val is None:
            val = dataclasses.replace(train, rows=next(held))
        if test is None:
            test = dataclasses.replace(train, rows=next(held))
        train = dataclasses.replace(train, rows=pieces[0])
    for name, source in (("train", train), ("val", val)):
        if source.n_rows == 0:
            raise DataError(f"the {name} set is empty ({source.describe()['path']}); check data.fractions")
    return train, val, test


def _class_names(cfg: Config, options: EmbeddingOptions, train: Source) -> list[str]:
    labels = Path(options.labels_csv) if options.labels_csv else find_class_labels(train.paths[0])
    if labels is None and cfg.data.path:
        labels = find_class_labels(cfg.data.path)
    if labels is not None:
        return read_class_labels(labels)
    n_classes = h5_info(train.paths[0]).n_classes if train.format == "h5" else N_CLASSES
    warnings.warn(f"no class_labels_indices.csv found near {train.paths[0]}; naming the {n_classes} classes "
                  "class_000 ... (set data.options.labels_csv)", stacklevel=3)
    return default_class_names(n_classes)


def _input_shape(source: Source) -> tuple[int, int]:
    if source.format == "h5":
        info = h5_info(source.paths[0])
        return info.n_steps, info.dim
    return N_STEPS, EMBEDDING_DIM


def _check_compatible(name: str, source: Source, classes: list[str], shape: tuple[int, int]) -> None:
    if source.format != "h5":
        return
    info = h5_info(source.paths[0])
    if info.n_classes != len(classes):
        raise DataError(f"{source.paths[0]}: {info.n_classes} label columns, expected {len(classes)} "
                        f"(the class list of the {name} set)")
    if (info.n_steps, info.dim) != shape:
        raise DataError(f"{source.paths[0]}: embeddings of shape ({info.n_steps}, {info.dim}), expected {shape}")


# --- datasets and loaders ----------------------------------------------------------------------------
def _should_stream(source: Source, options: EmbeddingOptions) -> bool:
    if options.stream == "auto":
        return source.n_rows > options.max_rows_in_memory
    return options.stream == "true" and source.n_rows > 0


def _in_memory(source: Source, n_classes: int) -> EmbeddingDataset:
    if source.format == "h5":
        return EmbeddingDataset(read_h5(source.paths[0], rows=source.rows))
    return EmbeddingDataset(load_tfrecord_rows(source.paths, source.rows, n_classes))


def _stream(source: Source, n_classes: int, options: EmbeddingOptions, batch_size: int, shuffle: bool, seed: int):
    common = {"batch_size": batch_size, "shuffle": shuffle, "seed": seed,
              "max_rows_in_memory": options.max_rows_in_memory, "chunk_rows": options.chunk_rows}
    if source.format == "h5":
        return H5EmbeddingStream(source.paths[0], rows=source.rows, **common)
    return TFRecordEmbeddingStream(source.paths, rows=source.rows, n_classes=n_classes, counts=source.counts,
                                   **common)


@dataclass
class _Loaders:
    train_data: Any
    streamed: bool
    loader: torch.utils.data.DataLoader
    sampler: EpochShuffle | None


def _train_loader(source: Source, n_classes: int, options: EmbeddingOptions, cfg: Config, device) -> _Loaders:
    if _should_stream(source, options):
        stream = _stream(source, n_classes, options, cfg.train.batch_size, True, cfg.seed)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.train.num_workers,
                                             pin_memory=device.type == "cuda")
        return _Loaders(stream, True, loader, None)
    dataset = _in_memory(source, n_classes)
    sampler = EpochShuffle(len(dataset), cfg.seed)
    return _Loaders(dataset, False, make_loader(dataset, cfg.train.batch_size, cfg.train.num_workers, sampler, device),
                    sampler)


def _eval_loader(source: Source, n_classes: int, options: EmbeddingOptions, batch_size: int, workers: int = 0):
    if _should_stream(source, options):
        stream = _stream(source, n_classes, options, batch_size, False, 0)
        return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    return make_loader(_in_memory(source, n_classes), batch_size, workers)


# --- model and evaluation ------------------------------------------------------------------------------
def build_embedding_model(model_cfg: Mapping[str, Any], n_classes: int,
                          input_shape: tuple[int, int]) -> AudioClassifier:
    """An embeddings-input model from ``model.*`` wrapped as an :class:`AudioClassifier` (no front-end)."""
    args = dict(model_cfg)
    name = args.pop("name", None) or S5_MODEL_DEFAULT["name"]
    if model_input_kind(name) != "embeddings":
        valid = ", ".join(n for n in list_models() if model_input_kind(n) == "embeddings")
        raise ConfigError(f"model.name={name} takes {model_input_kind(name)} input; "
                          f"AudioSet embeddings need one of: {valid}")
    return AudioClassifier(create_model(name, n_classes=n_classes, input_shape=input_shape, **args), None)


def _loss_kind(model: torch.nn.Module) -> str:
    return getattr(getattr(model, "backbone", model), "audioclf_loss", "bce")


def loss_from_probabilities(kind: str, probs: np.ndarray, targets: np.ndarray) -> float:
    """Validation loss matching the training loss: BCE, or the bipolar MSE (``(2p - 1) - (2y - 1)``)^2."""
    if kind == "bipolar_mse":
        return float(np.mean((2 * probs - 2 * targets) ** 2))
    return evaluation_loss(TASK, probs, targets)


def evaluate_loader(model: torch.nn.Module, loader, classes: list[str], device, amp: bool = False):
    """Metrics of ``model`` over ``loader`` (mAP both ways, pSR, lwlrap ...; see metrics.compute_metrics)."""
    probs, targets = predict_loader(model, loader, TASK, device, amp)
    if len(probs) == 0:
        return {}, probs, targets
    values = M.compute_metrics(TASK, targets, probs, class_names=classes)
    values["loss"] = loss_from_probabilities(_loss_kind(model), probs, targets)
    return values, probs, targets


# --- the run ---------------------------------------------------------------------------------------------
def _resolved_config(cfg: Config, options: EmbeddingOptions, monitor: str, run: RunDir) -> dict[str, Any]:
    resolved = cfg.to_dict()
    resolved["data"]["format"] = "audioset"
    resolved["data"]["options"] = dataclasses.asdict(options)
    resolved["train"]["monitor"] = monitor
    resolved["out"] = str(run.root)
    return resolved


def _resume_config(cfg: Config | Mapping[str, Any], run: RunDir) -> dict[str, Any]:
    """The run's saved config with what the caller set now (e.g. more epochs) on top."""
    saved = run.read_config()
    if isinstance(cfg, Config):
        return _merge(saved, _explicit(cfg))
    return _merge(saved, copy.deepcopy(dict(cfg)))


def train_embeddings(cfg: Config | Mapping[str, Any], resume: bool = False, reporter: Any = None) -> Path:
    """Train an embeddings model, evaluate the best checkpoint on val and test; returns the run directory.

    ``cfg``: a :class:`Config` or a recipe-style dict (see :func:`split_config`). ``resume`` continues the
    run in ``cfg.out`` from ``checkpoints/last.pt``. ``reporter``: as for :func:`audioclf.experiment.train`.
    """
    if resume:
        out = cfg.out if isinstance(cfg, Config) else dict(cfg).get("out")
        if not out or not RunDir(out).checkpoint("last").exists():
            raise ConfigError(f"--resume: {out} has no checkpoints/last.pt to continue from")
        cfg = _resume_config(cfg, RunDir(out))
    cfg, options = split_config(cfg)
    run = RunDir(cfg.out or default_run_dir(cfg))
    checkpoint = run.load_checkpoint("last") if resume else None
    start_epoch = checkpoint["epoch"] + 1 if checkpoint else 1
    seed_everything(cfg.seed)

    train_source, val_source, test_source = resolve_sources(cfg, options)
    classes = _class_names(cfg, options, train_source)
    input_shape = _input_shape(train_source)
    for name, source in (("val", val_source), ("test", test_source)):
        if source is not None:
            _check_compatible(name, source, classes, input_shape)
    _check_compatible("train", train_source, classes, input_shape)

    device = resolve_device(cfg.train.device)
    amp = cfg.train.amp if cfg.train.amp is not None else device.type == "cuda"
    model = build_embedding_model(cfg.model, len(classes), input_shape).to(device)
    step = supervised_step(loss_for(model))
    monitor = cfg.train.monitor or S5_TRAIN_DEFAULTS["monitor"]
    optimizer = build_optimizer(model.parameters(), name=cfg.train.optimizer, lr=cfg.train.lr,
                                weight_decay=cfg.train.weight_decay, momentum=cfg.train.momentum)
    scheduler = build_scheduler(optimizer, name=cfg.train.scheduler, epochs=cfg.train.epochs, monitor=monitor,
                                **cfg.train.scheduler_args)
    stopper = EarlyStopping(monitor, patience=cfg.train.patience, min_delta=cfg.train.min_delta)
    scaler = (torch.amp.GradScaler("cuda") if amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
              else None)
    resolved = _resolved_config(cfg, options, monitor, run)

    if checkpoint is None:
        run.create()
        run.write_config(resolved)
        if run.metrics.exists():
            run.metrics.unlink()  # a fresh run in an existing directory starts a fresh log
    else:
        restore_training_state(checkpoint, run, model, optimizer, scheduler, stopper)
        run.write_config(resolved)

    loaders = _train_loader(train_source, len(classes), options, cfg, device)
    val_loader = _eval_loader(val_source, len(classes), options, cfg.train.batch_size)
    base_state = {"spec": model.spec(), "task": TASK, "classes": classes, "config": resolved,
                  "input_kind": "embeddings", "input_shape": list(input_shape),
                  "sample_rate": None, "clip_samples": None}
    complexity = measure_complexity(model, cfg)
    if checkpoint is not None:
        set_rng_state(checkpoint["rng"])

    def set_epoch(epoch: int) -> None:
        (loaders.sampler if loaders.sampler is not None else loaders.train_data).set_epoch(epoch)

    def stream_record() -> dict[str, Any]:
        if not loaders.streamed:
            return {}
        return {"stream/peak_rows": loaders.train_data.peak_rows if cfg.train.num_workers == 0 else None}

    fit = EpochFit(run, model, loaders.loader, step, optimizer, scheduler, stopper, scaler, device, amp, cfg, monitor,
                   base_state)
    run_epochs(fit, start_epoch, set_epoch, train_source.n_rows,
               lambda: evaluate_loader(model, val_loader, classes, device, amp)[0], reporter, stream_record)

    sources = {"train": train_source, "val": val_source, "test": test_source}
    return _finalize(run, sources, options, monitor, complexity, device, amp, cfg.train.batch_size, loaders.streamed)


def _finalize(run: RunDir, sources: dict[str, Source | None], options: EmbeddingOptions, monitor: str, complexity,
              device, amp: bool, batch_size: int, streamed: bool) -> Path:
    """Evaluate the best checkpoint on val and test; write plots and summary.json."""
    best = run.load_checkpoint("best")
    model = AudioClassifier.from_spec(best["spec"]).to(device)
    model.load_state_dict(best["model"])
    classes = best["classes"]
    results = {}
    for split in ("val", "test"):
        source = sources[split]
        if source is None:
            continue
        values, _, _ = evaluate_loader(model, _eval_loader(source, len(classes), options, batch_size), classes,
                                       device, amp)
        results[split] = values
    plot_curves(run.read_metrics(), run.plots, monitor)
    summary = {
        "task": TASK,
        "classes": classes,
        "metrics": results,
        "monitor": monitor,
        "best_epoch": best["epoch"],
        "skipped": [],
        "counts": {split: (source.n_rows if source is not None else 0) for split, source in sources.items()},
        "data": {split: source.describe() for split, source in sources.items() if source is not None},
        "streamed": streamed,
        "model": {"name": best["spec"]["backbone"]["name"], "parameters": complexity},
        "input_kind": "embeddings",
        "input_shape": best["input_shape"],
    }
    run.write_summary(summary)
    write_report(run.root)
    return run.root


def evaluate_embeddings_run(run_dir: str | Path, data: str | Path | None = None, which: str = "best",
                            device: str = "auto", batch_size: int | None = None) -> dict[str, Any]:
    """Metrics of a trained embeddings run on its own test set (``data=None``) or on the set ``data``
    (an .h5 file, .tfrecord file or folder; labels must use the run's class list)."""
    run = RunDir(run_dir).require()
    state = run.load_checkpoint(which)
    saved = state["config"]
    cfg, options = split_config(saved)
    classes = state["classes"]
    if data is None:
        _, _, source = resolve_sources(cfg, options)
        if source is None:
            raise DataError(f"{run.root}: the run has no test set; pass the data to evaluate on")
    else:
        source = _open_source(data)
    _check_compatible("run's", source, classes, tuple(state["input_shape"]))
    torch_device = resolve_device(device)
    model = AudioClassifier.from_spec(state["spec"]).to(torch_device)
    model.load_state_dict(state["model"])
    loader = _eval_loader(source, len(classes), options, batch_size or cfg.train.batch_size)
    values, _, _ = evaluate_loader(model, loader, classes, torch_device)
    return {"task": TASK, "classes": classes, "n_items": source.n_rows, "metrics": values, "skipped": [],
            "data": source.describe()}
