"""AudioSet embeddings (Gemmeke et al. 2017; Hershey et al. 2017): file formats, labels and dequantization.

Per clip AudioSet gives up to 10 embeddings (one per second) of 128 uint8 values and a set of the 527
classes. Two distributions are read here:

* **HDF5** (the conversion Darna Sequeiros (2018) used, and Kong et al.'s ``bal_train.h5`` /
  ``unbal_train.h5`` / ``eval.h5``): datasets ``x`` (N, 10, 128) uint8, ``y`` (N, 527) bool and
  ``video_id_list`` (N,) bytes; short clips are already zero-padded. Needs h5py (extra "embeddings").
* **TFRecord** (Google's ``audioset_v1_embeddings/{bal_train,unbal_train,eval}/*.tfrecord``): one
  ``SequenceExample`` per clip with context ``video_id`` (bytes), ``labels`` (int64 list),
  ``start_time_seconds`` / ``end_time_seconds`` (float) and the feature list ``audio_embedding`` (one
  128-byte bytes feature per second). Read by :mod:`audioclf.data.tfrecord`, no TensorFlow needed.

Class names come from ``class_labels_indices.csv`` (``index,mid,display_name``). Both formats become the
same :class:`EmbeddingArrays`: uint8 (N, 10, 128), zero-padded in the uint8 domain exactly like the HDF5
files, so a clip gives the same model input whichever file it was read from. The model input is
:func:`dequantize` ``(v - 128) / 128``, the ``uint8_to_float32`` of the dataset's readme, which Darna Sequeiros
(2018) copied into every script: ``(np.float32(x) - 128.) / 128.``.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import AudioclfError, DataError
from ..manifest import Item, Manifest, csv_rows
from ...files import atomic_write
from ..tfrecord import encode_sequence_example, parse_sequence_example, read_records, write_records
from . import register_importer

__all__ = [
    "N_CLASSES",
    "N_STEPS",
    "EMBEDDING_DIM",
    "LABELS_CSV",
    "AudioSetClip",
    "EmbeddingArrays",
    "H5Info",
    "dequantize",
    "pad_steps",
    "read_class_labels",
    "find_class_labels",
    "write_class_labels",
    "parse_audioset_record",
    "encode_audioset_record",
    "iter_tfrecord_clips",
    "write_audioset_tfrecord",
    "clips_to_arrays",
    "list_tfrecords",
    "open_h5",
    "h5_info",
    "read_h5",
    "read_h5_rows",
    "write_h5",
    "convert_tfrecords_to_h5",
    "load_embedding_arrays",
    "embedding_format",
    "import_audioset",
]

N_CLASSES = 527
N_STEPS = 10  # seconds per clip: one embedding per second
EMBEDDING_DIM = 128
LABELS_CSV = "class_labels_indices.csv"
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords")
EXTRA_HINT = "pip install 'audioclf[embeddings]'"


# --- values ---------------------------------------------------------------------------------------
def dequantize(x: np.ndarray) -> np.ndarray:
    """uint8 embeddings -> float32 in [-1, 1): ``(v - 128) / 128`` (the release readme's ``uint8_to_float32``)."""
    return (np.asarray(x, dtype=np.float32) - 128.0) / 128.0


def pad_steps(embeddings: np.ndarray, n_steps: int = N_STEPS) -> np.ndarray:
    """(T, D) uint8 -> (n_steps, D): zero rows appended (uint8 0, as in the HDF5 release), extra steps cut."""
    embeddings = np.asarray(embeddings, dtype=np.uint8)
    if embeddings.ndim != 2:
        raise DataError(f"embeddings of shape {embeddings.shape}; expected (T, D)")
    out = np.zeros((n_steps, embeddings.shape[1]), dtype=np.uint8)
    steps = min(n_steps, len(embeddings))
    out[:steps] = embeddings[:steps]
    return out


@dataclass
class EmbeddingArrays:
    """A set of clips in memory: uint8 embeddings, boolean targets and the clip ids."""

    x: np.ndarray  # (N, T, D) uint8
    y: np.ndarray  # (N, C) bool
    video_ids: list[str]

    def __post_init__(self) -> None:
        if self.x.ndim != 3 or self.y.ndim != 2 or len(self.x) != len(self.y) or len(self.video_ids) != len(self.x):
            raise DataError(f"embedding arrays: x {self.x.shape}, y {self.y.shape} and {len(self.video_ids)} ids "
                            "do not describe the same (N, T, D) / (N, C) clips")

    def __len__(self) -> int:
        return len(self.x)

    def take(self, rows: np.ndarray) -> EmbeddingArrays:
        rows = np.asarray(rows, dtype=np.int64)
        return EmbeddingArrays(self.x[rows], self.y[rows], [self.video_ids[i] for i in rows])


# --- class labels ---------------------------------------------------------------------------------
def read_class_labels(path: str | Path) -> list[str]:
    """Display names in index order from ``class_labels_indices.csv`` (``index,mid,display_name``).

    Indices must be 0..C-1, each once; errors name the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot read class labels ({exc.strerror or exc})") from None
    rows = csv_rows(text, path)
    header = [cell.strip() for cell in next(rows, (1, []))[1]]
    if not {"index", "display_name"} <= set(header):
        raise DataError(f"{path}: line 1: expected the header index,mid,display_name, got {','.join(header)}")
    col_index, col_name = header.index("index"), header.index("display_name")
    names: dict[int, str] = {}
    for line, row in rows:
        if not row or not "".join(row).strip():
            continue
        where = f"{path}: line {line}"
        if len(row) <= max(col_index, col_name):
            raise DataError(f"{where}: expected {len(header)} columns (index,mid,display_name), got {len(row)}")
        try:
            index = int(row[col_index])
        except ValueError:
            raise DataError(f"{where}: index '{row[col_index]}' is not an integer") from None
        if index in names:
            raise DataError(f"{where}: index {index} appears twice")
        names[index] = row[col_name].strip()
    if sorted(names) != list(range(len(names))):
        missing = next(i for i in range(len(names)) if i not in names)
        raise DataError(f"{path}: class indices must be 0..{len(names) - 1}; index {missing} is missing")
    return [names[i] for i in range(len(names))]


def write_class_labels(path: str | Path, names: Sequence[str], mids: Sequence[str] | None = None) -> Path:
    """Write a ``class_labels_indices.csv`` (tests and conversions); mids default to ``/m/<index>``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "mid", "display_name"])
    for i, name in enumerate(names):
        writer.writerow([i, mids[i] if mids else f"/m/{i}", name])
    return atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue(), encoding="utf-8"))


def find_class_labels(source: str | Path) -> Path | None:
    """``class_labels_indices.csv`` in the source's folder or up to two folders above it, if any."""
    source = Path(source)
    folder = source if source.is_dir() else source.parent
    for candidate in (folder, *list(folder.parents)[:2]):
        if (candidate / LABELS_CSV).is_file():
            return candidate / LABELS_CSV
    return None


def default_class_names(n_classes: int) -> list[str]:
    """Placeholder names when no label CSV is available (``class_000`` ...)."""
    width = max(3, len(str(n_classes - 1)))
    return [f"class_{i:0{width}d}" for i in range(n_classes)]


# --- TFRecord SequenceExamples --------------------------------------------------------------------
@dataclass
class AudioSetClip:
    """One clip of the TFRecord release: (T, 128) uint8 embeddings (T <= 10) and class indices."""

    video_id: str
    embeddings: np.ndarray
    labels: tuple[int, ...]
    start_time: float | None = None
    end_time: float | None = None


def _single(context: dict, key: str, default=None):
    values = context.get(key)
    return values[0] if values else default


def parse_audioset_record(record: bytes, n_classes: int = N_CLASSES) -> AudioSetClip:
    """One serialized AudioSet ``SequenceExample`` -> :class:`AudioSetClip`.

    Raises ``ValueError`` when the record is malformed (callers add the file and record number).
    """
    context, lists = parse_sequence_example(record)
    steps = lists.get("audio_embedding")
    if steps is None:
        raise ValueError("no 'audio_embedding' feature list")
    rows = []
    for t, step in enumerate(steps):
        if len(step) != 1 or not isinstance(step[0], bytes):
            raise ValueError(f"audio_embedding step {t}: expected one bytes value, got {len(step)} values")
        rows.append(step[0])
    dims = {len(row) for row in rows}
    if len(dims) > 1:
        raise ValueError(f"audio_embedding steps have different sizes {sorted(dims)}")
    dim = dims.pop() if dims else EMBEDDING_DIM
    embeddings = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), dim)
    labels = tuple(int(v) for v in context.get("labels", []))
    bad = [v for v in labels if not 0 <= v < n_classes]
    if bad:
        raise ValueError(f"label {bad[0]} outside 0..{n_classes - 1}")
    video_id = _single(context, "video_id", b"")
    start, end = _single(context, "start_time_seconds"), _single(context, "end_time_seconds")
    return AudioSetClip(
        video_id=video_id.decode("utf-8", "replace") if isinstance(video_id, bytes) else str(video_id),
        embeddings=embeddings, labels=labels,
        start_time=None if start is None else float(start), end_time=None if end is None else float(end),
    )


def encode_audioset_record(clip: AudioSetClip) -> bytes:
    """Serialize a clip the way the AudioSet release does (context features + ``audio_embedding``)."""
    context: dict[str, list] = {"video_id": [clip.video_id.encode("utf-8")], "labels": [int(v) for v in clip.labels]}
    if clip.start_time is not None:
        context["start_time_seconds"] = [float(clip.start_time)]
    if clip.end_time is not None:
        context["end_time_seconds"] = [float(clip.end_time)]
    steps = [[np.asarray(row, dtype=np.uint8).tobytes()] for row in np.asarray(clip.embeddings, dtype=np.uint8)]
    return encode_sequence_example(context, {"audio_embedding": steps})


def iter_tfrecord_clips(path: str | Path, n_classes: int = N_CLASSES, verify: bool = True) -> Iterator[AudioSetClip]:
    """The clips of one TFRecord file; a malformed record is a DataError naming the file and record."""
    for index, record in enumerate(read_records(path, verify=verify)):
        try:
            yield parse_audioset_record(record, n_classes)
        except ValueError as exc:
            raise DataError(f"{path}: record {index}: not an AudioSet SequenceExample ({exc})") from None


def write_audioset_tfrecord(path: str | Path, clips: Iterable[AudioSetClip]) -> Path:
    """Write clips as an AudioSet-style TFRecord file (atomically)."""
    return write_records(path, (encode_audioset_record(clip) for clip in clips))


def clips_to_arrays(clips: Iterable[AudioSetClip], n_classes: int = N_CLASSES,
                    n_steps: int = N_STEPS) -> EmbeddingArrays:
    """Stack clips into padded uint8 (N, n_steps, D) and boolean (N, C) arrays."""
    xs, ys, ids = [], [], []
    for clip in clips:
        xs.append(pad_steps(clip.embeddings, n_steps))
        y = np.zeros(n_classes, dtype=bool)
        y[list(clip.labels)] = True
        ys.append(y)
        ids.append(clip.video_id)
    if not xs:
        return EmbeddingArrays(np.zeros((0, n_steps, EMBEDDING_DIM), np.uint8), np.zeros((0, n_classes), bool), [])
    return EmbeddingArrays(np.stack(xs), np.stack(ys), ids)


def list_tfrecords(source: str | Path) -> list[Path]:
    """A .tfrecord file, or every .tfrecord file under a folder (recursively, sorted)."""
    source = Path(source)
    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in TFRECORD_SUFFIXES and p.is_file())
        if files:
            return files
        raise DataError(f"{source}: no .tfrecord files found")
    raise DataError(f"{source}: not found; expected a .tfrecord file or a folder of them")


# --- HDF5 -----------------------------------------------------------------------------------------
def _h5py():
    try:
        import h5py
    except ImportError:
        raise AudioclfError(f"reading AudioSet HDF5 files needs h5py: {EXTRA_HINT}") from None
    return h5py


@dataclass(frozen=True)
class H5Info:
    """Shape of an AudioSet HDF5 file: N clips of (T, D) embeddings and C classes."""

    n_rows: int
    n_steps: int
    dim: int
    n_classes: int


@contextlib.contextmanager
def open_h5(path: str | Path):
    """Open an AudioSet HDF5 file read-only and check its datasets; errors name the file."""
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: HDF5 file not found")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: cannot open HDF5 file ({_short(exc)}); it may be truncated or corrupt") from None
    with handle:
        _check_layout(path, handle)
        yield handle


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _check_layout(path: Path, handle) -> None:
    for name in ("x", "y"):
        if name not in handle:
            raise DataError(f"{path}: no dataset '{name}'; expected 'x' (N, 10, 128) uint8 and 'y' (N, 527) bool")
    x, y = handle["x"], handle["y"]
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataError(f"{path}: dataset 'x' is {x.dtype} {x.shape}; expected uint8 (N, T, D)")
    if y.ndim != 2 or y.dtype.kind not in "bui" or len(y) != len(x):
        raise DataError(f"{path}: dataset 'y' is {y.dtype} {y.shape}; expected bool ({len(x)}, C)")
    if "video_id_list" in handle and len(handle["video_id_list"]) != len(x):
        raise DataError(f"{path}: 'video_id_list' has {len(handle['video_id_list'])} entries for {len(x)} clips")


def h5_info(path: str | Path) -> H5Info:
    """Rows, time steps, embedding size and classes of an AudioSet HDF5 file (reads no data)."""
    with open_h5(path) as handle:
        n, t, d = handle["x"].shape
        return H5Info(int(n), int(t), int(d), int(handle["y"].shape[1]))


def _ids(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.tolist()]


def read_h5_rows(path: str | Path, handle, start: int, stop: int) -> EmbeddingArrays:
    """Rows ``start:stop`` of an open file (one contiguous read per dataset); errors name the file."""
    try:
        x = handle["x"][start:stop]
        y = handle["y"][start:stop].astype(bool, copy=False)
        ids = _ids(handle["video_id_list"][start:stop]) if "video_id_list" in handle else [
            str(i) for i in range(start, stop)]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: cannot read rows {start}:{stop} ({_short(exc)}); "
                        "the file may be truncated or corrupt") from None
    return EmbeddingArrays(x, y, ids)


def read_h5(path: str | Path, rows: np.ndarray | None = None, chunk_rows: int = 65536) -> EmbeddingArrays:
    """A whole HDF5 file in memory, or only ``rows`` (sorted indices, read chunk by chunk)."""
    with open_h5(path) as handle:
        n = len(handle["x"])
        if rows is None:
            return read_h5_rows(path, handle, 0, n)
        rows = np.asarray(rows, dtype=np.int64)
        parts = []
        for start in range(0, n, chunk_rows):
            stop = min(n, start + chunk_rows)
            lo, hi = np.searchsorted(rows, [start, stop])
            if lo == hi:
                continue
            part = read_h5_rows(path, handle, start, stop)
            parts.append(part.take(rows[lo:hi] - start))
        if not parts:
            return EmbeddingArrays(np.zeros((0, *handle["x"].shape[1:]), np.uint8),
                                   np.zeros((0, handle["y"].shape[1]), bool), [])
        return EmbeddingArrays(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                               [i for p in parts for i in p.video_ids])


def write_h5(path: str | Path, arrays: EmbeddingArrays) -> Path:
    """Write the HDF5 layout of the release (``x`` uint8, ``y`` bool, ``video_id_list`` bytes), atomically."""
    h5py = _h5py()

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("x", data=np.asarray(arrays.x, dtype=np.uint8))
            handle.create_dataset("y", data=np.asarray(arrays.y, dtype=bool))
            handle.create_dataset("video_id_list", data=np.array([v.encode("utf-8") for v in arrays.video_ids],
                                                                  dtype="S" if arrays.video_ids else "S1"))

    return atomic_write(path, write)


def convert_tfrecords_to_h5(source: str | Path, out: str | Path, n_classes: int = N_CLASSES,
                            n_steps: int = N_STEPS, chunk_rows: int = 4096) -> Path:
    """Convert TFRecord files (a file or a folder) into one HDF5 file of the release layout.

    Streams ``chunk_rows`` clips at a time, so the unbalanced set converts in bounded memory; reading HDF5
    afterwards is ~30x faster than parsing protobufs in Python. Written atomically (temp file + rename).
    """
    h5py = _h5py()
    files = list_tfrecords(source)

    def append(handle, arrays: EmbeddingArrays) -> None:
        start = len(handle["x"])
        for name, values in (("x", arrays.x), ("y", arrays.y),
                             ("video_id_list", np.array([v.encode("utf-8") for v in arrays.video_ids], dtype=object))):
            handle[name].resize(start + len(values), axis=0)
            handle[name][start:] = values

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("x", shape=(0, n_steps, EMBEDDING_DIM), maxshape=(None, n_steps, EMBEDDING_DIM),
                                  dtype=np.uint8, chunks=(256, n_steps, EMBEDDING_DIM))
            handle.create_dataset("y", shape=(0, n_classes), maxshape=(None, n_classes), dtype=bool,
                                  chunks=(256, n_classes))
            handle.create_dataset("video_id_list", shape=(0,), maxshape=(None,), dtype=h5py.vlen_dtype(bytes),
                                  chunks=(4096,))
            pending: list[AudioSetClip] = []
            for path in files:
                for clip in iter_tfrecord_clips(path, n_classes):
                    pending.append(clip)
                    if len(pending) == chunk_rows:
                        append(handle, clips_to_arrays(pending, n_classes, n_steps))
                        pending = []
            if pending:
                append(handle, clips_to_arrays(pending, n_classes, n_steps))

    return atomic_write(out, write)


# --- either format ----------------------------------------------------------------------------------
def embedding_format(source: str | Path) -> str:
    """``"h5"`` or ``"tfrecord"`` for a file or a folder of files; DataError otherwise."""
    source = Path(source)
    if source.is_file():
        suffix = source.suffix.lower()
        if suffix in H5_SUFFIXES:
            return "h5"
        if suffix in TFRECORD_SUFFIXES:
            return "tfrecord"
        raise DataError(f"{source}: unknown embedding file type; expected .h5/.hdf5 or .tfrecord")
    if source.is_dir():
        if any(p.suffix.lower() in TFRECORD_SUFFIXES for p in source.rglob("*")):
            return "tfrecord"
        raise DataError(f"{source}: no .tfrecord files found (an HDF5 set is one .h5 file)")
    raise DataError(f"{source}: not found; expected an .h5 file, a .tfrecord file or a folder of them")


def load_embedding_arrays(source: str | Path, n_classes: int = N_CLASSES, n_steps: int = N_STEPS) -> EmbeddingArrays:
    """A whole embedding set in memory (balanced / eval sets; stream the unbalanced one)."""
    if embedding_format(source) == "h5":
        arrays = read_h5(source)
        if arrays.x.shape[1] != n_steps:
            padded = np.zeros((len(arrays), n_steps, arrays.x.shape[2]), np.uint8)
            for row, x in enumerate(arrays.x):
                padded[row] = pad_steps(x, n_steps)
            arrays = EmbeddingArrays(padded, arrays.y, arrays.video_ids)
        return arrays
    clips = (clip for path in list_tfrecords(source) for clip in iter_tfrecord_clips(path, n_classes))
    return clips_to_arrays(clips, n_classes, n_steps)


def _split_from_name(path: Path) -> str | None:
    name = path.stem.lower() if path.is_file() else path.name.lower()
    if "eval" in name:
        return "test"
    if "train" in name:
        return "train"
    return None


@register_importer("audioset")
def import_audioset(source: str | Path, labels_csv: str | Path | None = None) -> Manifest:
    """A :class:`Manifest` of an AudioSet embedding set (an .h5 file, a .tfrecord file or a folder).

    Item ids are the video ids (``#<row>`` appended to repeats), ``path`` is the embedding reference
    ``<file>#<row>``, labels are display names from ``class_labels_indices.csv`` (``labels_csv`` or found
    next to the data) and the split is "train" / "test" from the file name (bal_train, eval ...). Meant for
    the balanced and eval sets; training streams the unbalanced set instead of listing 2M items.
    """
    source = Path(source)
    labels_path = Path(labels_csv) if labels_csv else find_class_labels(source)
    known = read_class_labels(labels_path) if labels_path else None
    if embedding_format(source) == "h5":
        arrays = read_h5(source)
        refs = [f"{source}#{i}" for i in range(len(arrays))]
        splits = [_split_from_name(source)] * len(arrays)
    else:
        parts, refs, splits = [], [], []
        n_classes = len(known) if known else N_CLASSES
        for path in list_tfrecords(source):
            part = clips_to_arrays(iter_tfrecord_clips(path, n_classes), n_classes)
            parts.append(part)
            refs += [f"{path}#{i}" for i in range(len(part))]
            splits += [_split_from_name(path) or _split_from_name(path.parent)] * len(part)
        arrays = EmbeddingArrays(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                                 [i for p in parts for i in p.video_ids])
    n_classes = arrays.y.shape[1]
    names = known or default_class_names(n_classes)
    if len(names) != n_classes:
        raise DataError(f"{labels_path}: {len(names)} classes, but {source} has {n_classes} label columns")
    seen: set[str] = set()
    items = []
    for row, (video_id, ref, split) in enumerate(zip(arrays.video_ids, refs, splits)):
        item_id = video_id if video_id and video_id not in seen else f"{video_id}#{row}"
        seen.add(item_id)
        labels = tuple(names[i] for i in np.flatnonzero(arrays.y[row]))
        items.append(Item(id=item_id, path=ref, labels=labels, split=split))
    return Manifest(items, classes=names, task="multi_label")
