"""Which AudioSet embedding sets a run reads, and how: release layouts, train/val/test sources, class names,
and in-memory or streamed loaders (the data side of embedding runs).

Where the data comes from (``data.path``):

* a folder with the release layout: ``bal_train.h5`` / ``unbal_train.h5`` / ``eval.h5`` (Kong et al.'s HDF5
  packing), or ``bal_train/``, ``unbal_train/``, ``eval/`` folders of ``.tfrecord`` files (Google's
  ``audioset_v1_embeddings``), with ``class_labels_indices.csv`` next to them. Training uses the balanced
  set (``data.options.train_set=unbalanced`` for the other one); ``eval`` is the test set.
* a single ``.h5`` file, ``.tfrecord`` file or folder of ``.tfrecord`` files: the training set.

Validation is a random ``data.fractions`` share of the training rows unless ``data.options.val_path`` names a
set or ``data.options.val_set=eval`` takes the layout's eval set. Darna Sequeiros (2018), a thesis on AudioSet
embeddings, validated (early stopping, best checkpoint) on the eval set itself and said so as a limitation; the
``audioset_embeddings`` recipe reproduces that (``val_set: eval``), ``audioset_embeddings_heldout`` does not.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..registry import did_you_mean
from .embeddings import EmbeddingDataset, H5EmbeddingStream, TFRecordEmbeddingStream, load_tfrecord_rows, split_rows
from .importers.audioset import (
    EMBEDDING_DIM,
    H5_SUFFIXES,
    N_CLASSES,
    N_STEPS,
    TFRECORD_SUFFIXES,
    default_class_names,
    embedding_format,
    find_class_labels,
    h5_info,
    list_tfrecords,
    read_class_labels,
    read_h5,
)
from .prepare import EpochShuffle, make_loader
from .tfrecord import count_records

__all__ = ["EmbeddingOptions", "Source", "embedding_options", "find_layout", "is_embedding_data", "open_source",
           "resolve_sources", "class_names_for", "input_shape_of", "check_compatible", "train_loader",
           "eval_loader", "should_stream", "training_data"]

# File / folder names of the releases (Kong et al.'s HDF5 files, Google's TFRecord folders).
_LAYOUT_NAMES = {
    "balanced": ("bal_train", "balanced_train", "balanced_train_segments"),
    "unbalanced": ("unbal_train", "unbalanced_train", "unbalanced_train_segments"),
    "eval": ("eval", "eval_segments"),
}


# --- options -----------------------------------------------------------------------------------------
@dataclass
class EmbeddingOptions:
    """The ``data.options`` keys of an embedding run."""

    train_path: str | None = None  # a set (file/folder) to train on instead of the layout's balanced set
    val_path: str | None = None  # validation set (default: by val_set)
    val_set: str = "split"  # without val_path: split (a data.fractions share of the train rows) | eval (the eval set)
    test_path: str | None = None  # test set (default: the layout's eval set)
    labels_csv: str | None = None  # class_labels_indices.csv (default: found next to the data)
    train_set: str = "balanced"  # balanced | unbalanced: which training set of the layout
    stream: str = "auto"  # auto (stream sets larger than max_rows_in_memory) | true | false
    max_rows_in_memory: int = 200_000  # rows a streaming reader may hold at once (~360 MB at 527 classes)
    chunk_rows: int = 4096  # rows read from disk at once when streaming

    def __post_init__(self) -> None:
        if self.train_set not in ("balanced", "unbalanced"):
            raise ConfigError(f"data.options.train_set={self.train_set!r}; expected 'balanced' or 'unbalanced'")
        if self.val_set not in ("split", "eval"):
            raise ConfigError(f"data.options.val_set={self.val_set!r}; expected 'split' or 'eval'")
        stream = str(self.stream).lower()
        stream = {"1": "true", "yes": "true", "0": "false", "no": "false"}.get(stream, stream)
        if stream not in ("auto", "true", "false"):
            raise ConfigError(f"data.options.stream={self.stream!r}; expected auto, true or false")
        self.stream = stream
        for key in ("max_rows_in_memory", "chunk_rows"):
            value = getattr(self, key)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ConfigError(f"data.options.{key}={value!r}; expected a positive int")
            setattr(self, key, int(value))


_OPTION_KEYS = [f.name for f in dataclasses.fields(EmbeddingOptions)]


def embedding_options(values: Mapping[str, Any]) -> EmbeddingOptions:
    """``data.options`` of an embedding run, checked (an unknown key names the closest valid one)."""
    unknown = [key for key in values if key not in _OPTION_KEYS]
    if unknown:
        raise ConfigError(f"unknown data.options key '{unknown[0]}' for AudioSet embeddings"
                          f"{did_you_mean(unknown[0], _OPTION_KEYS)}")
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


def open_source(path: str | Path) -> Source:
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


def resolve_sources(data_path: str | None, fractions: list[float], seed: int,
                    options: EmbeddingOptions) -> tuple[Source, Source, Source | None]:
    """(train, val, test) sources for a run; val (and test, without an eval set) split off the train rows."""
    layout = find_layout(data_path) if data_path else {}
    if options.train_path:
        train_where = options.train_path
    elif layout:
        if options.train_set not in layout:
            raise DataError(f"{data_path}: no {options.train_set} training set "
                            f"(looked for {', '.join(_LAYOUT_NAMES[options.train_set])} as .h5 or a .tfrecord folder)")
        train_where = layout[options.train_set]
    elif data_path:
        train_where = data_path
    else:
        raise ConfigError("data.path is required: an AudioSet embedding folder, an .h5 file or .tfrecord file(s)")
    train = open_source(train_where)
    val_where = options.val_path
    if not val_where and options.val_set == "eval":
        if "eval" not in layout:
            raise DataError(f"{data_path}: data.options.val_set=eval, but no eval set there (looked for "
                            f"{', '.join(_LAYOUT_NAMES['eval'])} as .h5 or a .tfrecord folder); "
                            "give data.options.val_path")
        val_where = layout["eval"]
    val = open_source(val_where) if val_where else None
    test_where = options.test_path or layout.get("eval")
    test = open_source(test_where) if test_where else None
    if val is None or test is None:
        fractions = list(fractions) + [0.0] * (3 - len(fractions))
        parts = [fractions[0]] + ([fractions[1]] if val is None else []) + ([fractions[2]] if test is None else [])
        if sum(parts[1:]) == 0:
            raise ConfigError(f"data.fractions={fractions[:3]}: the held-out shares are 0; "
                              "give data.options.val_path or a validation fraction")
        pieces = split_rows(train.n_rows, parts, seed)
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


def class_names_for(data_path: str | None, options: EmbeddingOptions, train: Source) -> list[str]:
    labels = Path(options.labels_csv) if options.labels_csv else find_class_labels(train.paths[0])
    if labels is None and data_path:
        labels = find_class_labels(data_path)
    if labels is not None:
        return read_class_labels(labels)
    n_classes = h5_info(train.paths[0]).n_classes if train.format == "h5" else N_CLASSES
    warnings.warn(f"no class_labels_indices.csv found near {train.paths[0]}; naming the {n_classes} classes "
                  "class_000 ... (set data.options.labels_csv)", stacklevel=3)
    return default_class_names(n_classes)


def input_shape_of(source: Source) -> tuple[int, int]:
    if source.format == "h5":
        info = h5_info(source.paths[0])
        return info.n_steps, info.dim
    return N_STEPS, EMBEDDING_DIM


def check_compatible(name: str, source: Source, classes: list[str], shape: tuple[int, int]) -> None:
    if source.format != "h5":
        return
    info = h5_info(source.paths[0])
    if info.n_classes != len(classes):
        raise DataError(f"{source.paths[0]}: {info.n_classes} label columns, expected {len(classes)} "
                        f"(the class list of the {name} set)")
    if (info.n_steps, info.dim) != shape:
        raise DataError(f"{source.paths[0]}: embeddings of shape ({info.n_steps}, {info.dim}), expected {shape}")


# --- datasets and loaders ----------------------------------------------------------------------------
def should_stream(source: Source, options: EmbeddingOptions) -> bool:
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


def training_data(source: Source, n_classes: int, options: EmbeddingOptions, batch_size: int, seed: int):
    """The training rows: a shuffling stream (``should_stream``) or an in-memory dataset."""
    if should_stream(source, options):
        return _stream(source, n_classes, options, batch_size, True, seed)
    return _in_memory(source, n_classes)


def train_loader(data, batch_size: int, workers: int, seed: int, device, batch_sampler=None):
    """A loader over :func:`training_data` and its ``set_epoch(epoch)`` (a new order every epoch).
    ``batch_sampler`` (in-memory rows): batches in its order (e.g. a distributed rank's share) instead of a
    shuffle of ``batch_size``."""
    if isinstance(data, torch.utils.data.IterableDataset):  # streams cut their own batches
        loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers,
                                             pin_memory=device.type == "cuda")
        return loader, data.set_epoch
    if batch_sampler is not None:
        return make_loader(data, batch_size, workers, device=device, batch_sampler=batch_sampler), batch_sampler.set_epoch
    sampler = EpochShuffle(len(data), seed)
    return make_loader(data, batch_size, workers, sampler, device), sampler.set_epoch


def eval_loader(source: Source, n_classes: int, options: EmbeddingOptions, batch_size: int, workers: int = 0):
    if should_stream(source, options):
        stream = _stream(source, n_classes, options, batch_size, False, 0)
        return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    return make_loader(_in_memory(source, n_classes), batch_size, workers)
