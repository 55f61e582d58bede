"""Torch datasets over AudioSet embedding sets (Gemmeke et al. 2017): in memory, or streamed from disk.

* :class:`EmbeddingDataset` — map-style, for sets that fit in RAM (balanced train ~22K clips, eval ~20K):
  keeps the uint8 arrays (4x smaller than float) and dequantizes one item at a time.
* :class:`H5EmbeddingStream` / :class:`TFRecordEmbeddingStream` — ``IterableDataset`` s for the unbalanced
  set (~2M clips, which Darna Sequeiros (2018) could not load). They read contiguous chunks (HDF5
  row ranges, or records of one TFRecord file), visit the chunks in a random order, and mix rows across
  chunks through a shuffle buffer. At no point does a reader hold more than ``max_rows_in_memory`` rows
  (chunk being read + buffer + the batch being cut), counted in ``peak_rows``; with DataLoader workers the
  cap is shared out between them.

Streams yield whole batches ``(x, y)``: x float32 (B, T, D) dequantized, y float32 (B, C) of 0/1; use them
with ``DataLoader(stream, batch_size=None)``. They have no ``len`` (with k workers each shard may end with
a partial batch); ``n_rows`` is what a progress bar needs. For a given number of workers the order is a
pure function of ``(seed, epoch)``: the chunk order comes from ``(seed, epoch)`` (the same in every
worker, so workers take disjoint shards of it) and each shard's buffer shuffling from
``(seed, epoch, shard)``. Call ``set_epoch`` before each epoch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .importers.audioset import (
    N_CLASSES,
    N_STEPS,
    EmbeddingArrays,
    clips_to_arrays,
    dequantize,
    iter_tfrecord_clips,
    open_h5,
    pad_steps,
    parse_audioset_record,
    read_h5_rows,
)
from .tfrecord import count_records, read_records

__all__ = [
    "EmbeddingDataset",
    "EmbeddingStream",
    "H5EmbeddingStream",
    "TFRecordEmbeddingStream",
    "StreamPlan",
    "plan_stream",
    "split_rows",
    "load_tfrecord_rows",
    "make_synthetic_embeddings",
]


class EmbeddingDataset(torch.utils.data.Dataset):
    """In-memory clips: item ``i`` is (x float32 (T, D) in [-1, 1), y float32 (C,) of 0/1)."""

    def __init__(self, arrays: EmbeddingArrays):
        self.x = np.ascontiguousarray(arrays.x, dtype=np.uint8)
        self.y = np.ascontiguousarray(arrays.y, dtype=bool)
        self.video_ids = list(arrays.video_ids)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(dequantize(self.x[index])), torch.from_numpy(self.y[index].astype(np.float32))

    @property
    def input_shape(self) -> tuple[int, int]:
        return int(self.x.shape[1]), int(self.x.shape[2])

    @property
    def n_classes(self) -> int:
        return int(self.y.shape[1])


def split_rows(n_rows: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Sorted row indices of each part of a random split of ``n_rows`` rows (one per fraction).

    Fractions are normalised to sum 1; part boundaries are the rounded cumulative shares of ``n_rows``.
    Deterministic in ``seed``.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or len(fractions) == 0 or np.any(fractions < 0) or fractions.sum() <= 0:
        raise ConfigError(f"split fractions {fractions.tolist()}: expected non-negative numbers with a positive sum")
    fractions = fractions / fractions.sum()
    order = np.random.default_rng(seed).permutation(n_rows)
    bounds = np.round(np.cumsum(fractions) * n_rows).astype(np.int64)
    bounds[-1] = n_rows
    starts = np.concatenate([[0], bounds[:-1]])
    return [np.sort(order[a:b]) for a, b in zip(starts, bounds)]


@dataclass(frozen=True)
class StreamPlan:
    """Row budget of one reader: chunk read at once, shuffle buffer, batch; they sum to at most the cap."""

    chunk_rows: int
    buffer_rows: int
    batch_size: int

    @property
    def max_rows(self) -> int:
        # Taking batches leaves fewer than buffer + batch rows; one freshly read chunk on top is the most held.
        return self.buffer_rows + self.batch_size - 1 + self.chunk_rows


def plan_stream(max_rows_in_memory: int, batch_size: int, chunk_rows: int = 4096, readers: int = 1,
                shuffle: bool = True) -> StreamPlan:
    """Split a per-process cap of ``max_rows_in_memory`` rows between ``readers`` (DataLoader workers).

    Each reader gets ``cap = max_rows_in_memory // readers``; its chunk is at most a quarter of that, and the
    shuffle buffer takes what is left (none when not shuffling).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}; expected >= 1")
    cap = int(max_rows_in_memory) // max(1, int(readers))
    if cap < 2 * batch_size:
        raise ConfigError(f"data.options.max_rows_in_memory={max_rows_in_memory} is too small for batch_size={batch_size} "
                          f"with {readers} reader(s); expected at least {2 * batch_size * max(1, readers)}")
    chunk = max(1, min(int(chunk_rows), cap // 4 if shuffle else cap - batch_size + 1))
    buffer = cap - chunk - batch_size + 1 if shuffle else 0
    return StreamPlan(chunk, max(0, buffer), batch_size)


class EmbeddingStream(torch.utils.data.IterableDataset, ABC):
    """Chunked, shuffled, sharded batches of (x, y) from a set too large for RAM (base class).

    Subclasses provide ``n_rows`` and ``_chunks(order_rng, shard, n_shards, plan)``, yielding uint8/bool
    (x, y) arrays of at most ``plan.chunk_rows`` rows each (after reading at most that many rows).
    """

    def __init__(self, batch_size: int = 128, shuffle: bool = True, seed: int = 0,
                 max_rows_in_memory: int = 200_000, chunk_rows: int = 4096, rank: int = 0, world_size: int = 1):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank={rank}, world_size={world_size}; expected 0 <= rank < world_size")
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.max_rows_in_memory, self.chunk_rows = int(max_rows_in_memory), int(chunk_rows)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0
        plan_stream(self.max_rows_in_memory, self.batch_size, self.chunk_rows, 1, self.shuffle)  # validate now
        # Instrumentation (main process only; DataLoader workers update their own copies).
        self.peak_rows = 0  # most rows held at once by the last iteration
        self.max_read_rows = 0  # largest single read from disk
        self._last_read = 0

    # --- to be provided by subclasses --------------------------------------------------------------
    @property
    @abstractmethod
    def n_rows(self) -> int:
        """Rows this stream covers."""

    def _chunks(self, order_rng: np.random.Generator, shard: int, n_shards: int,
                plan: StreamPlan) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(x, y) chunks of this shard in ``order_rng``'s order."""

    # --- shared machinery --------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Epoch ``e`` always gives the same order (so a resumed run sees the same batches)."""
        self.epoch = int(epoch)

    def _note_held(self, rows: int) -> None:
        self.peak_rows = max(self.peak_rows, int(rows))

    def _note_read(self, rows: int) -> None:
        self._last_read = int(rows)  # a chunk read from disk may be filtered down before it is buffered
        self.max_read_rows = max(self.max_read_rows, int(rows))

    def _shard(self) -> tuple[int, int, int]:
        """(shard index, number of shards, readers in this process) from rank and DataLoader worker."""
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers, workers

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        shard, n_shards, readers = self._shard()
        plan = plan_stream(self.max_rows_in_memory, self.batch_size, self.chunk_rows, readers, self.shuffle)
        order_rng = np.random.default_rng([self.seed, self.epoch])  # identical in every shard
        buffer_rng = np.random.default_rng([self.seed, self.epoch, shard])
        self.peak_rows = 0
        for x, y in self._batches(self._chunks(order_rng, shard, n_shards, plan), plan, buffer_rng):
            yield torch.from_numpy(dequantize(x)), torch.from_numpy(y.astype(np.float32))

    def _batches(self, chunks, plan: StreamPlan, rng: np.random.Generator):
        """Batches from a shuffle buffer (or, unshuffled, straight from the chunks in order)."""
        if not self.shuffle:
            yield from self._ordered_batches(chunks, plan)
            return
        buf_x = buf_y = None
        n = 0  # rows in the buffer
        for x, y in chunks:
            if buf_x is None:  # preallocated once: adding a chunk or taking a batch never copies the buffer
                capacity = min(plan.max_rows, max(self.n_rows, 1))
                buf_x = np.empty((capacity, *x.shape[1:]), dtype=x.dtype)
                buf_y = np.empty((capacity, *y.shape[1:]), dtype=y.dtype)
            self._note_held(n + max(len(x), self._last_read))
            buf_x[n:n + len(x)], buf_y[n:n + len(y)] = x, y
            n += len(x)
            while n - plan.batch_size >= plan.buffer_rows:
                batch, n = self._take_random(buf_x, buf_y, n, plan.batch_size, rng)
                yield batch
        if buf_x is not None and n:  # drain what is left, in random order
            order = rng.permutation(n)
            for start in range(0, n, plan.batch_size):
                rows = order[start:start + plan.batch_size]
                yield buf_x[rows], buf_y[rows]

    @staticmethod
    def _take_random(buf_x: np.ndarray, buf_y: np.ndarray, n: int, size: int, rng: np.random.Generator):
        """Remove ``size`` random rows from the first ``n`` of the buffer; return them and the new count.

        The holes left below ``n - size`` are filled with the surviving rows above it, so the cost is
        O(size) whatever the buffer size, and the buffer stays dense.
        """
        picked = rng.choice(n, size=size, replace=False)
        batch = (buf_x[picked], buf_y[picked])  # fancy indexing copies: safe to overwrite below
        kept = n - size
        holes = np.sort(picked[picked < kept])
        movers = np.setdiff1d(np.arange(kept, n), picked, assume_unique=True)
        buf_x[holes], buf_y[holes] = buf_x[movers], buf_y[movers]
        return batch, kept

    def _ordered_batches(self, chunks, plan: StreamPlan):
        """File order; rows left over from one chunk start the next batch."""
        carry_x = carry_y = None
        for x, y in chunks:
            held = 0 if carry_x is None else len(carry_x)
            self._note_held(held + max(len(x), self._last_read))
            if carry_x is not None:
                x, y = np.concatenate([carry_x, x]), np.concatenate([carry_y, y])
            full = len(x) // plan.batch_size * plan.batch_size
            for start in range(0, full, plan.batch_size):
                yield x[start:start + plan.batch_size], y[start:start + plan.batch_size]
            carry_x, carry_y = (x[full:], y[full:]) if full < len(x) else (None, None)
        if carry_x is not None:
            yield carry_x, carry_y


def _pick(order: list, order_rng: np.random.Generator, shuffle: bool) -> list:
    return [order[i] for i in order_rng.permutation(len(order))] if shuffle else list(order)


class H5EmbeddingStream(EmbeddingStream):
    """Stream an AudioSet HDF5 file (optionally only the sorted row indices ``rows``) in chunks.

    The file is opened inside each iteration (so each DataLoader worker has its own handle) and read in
    contiguous row ranges of ``chunk_rows``; ranges without a selected row are not read at all.
    """

    def __init__(self, path: str | Path, rows: np.ndarray | None = None, **kwargs):
        super().__init__(**kwargs)
        self.path = Path(path)
        with open_h5(self.path) as handle:  # fail early, naming the file, if it is unreadable
            self.file_rows = int(len(handle["x"]))
            self.input_shape = tuple(int(s) for s in handle["x"].shape[1:])
            self.n_classes = int(handle["y"].shape[1])
        self.rows = None if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
        if self.rows is not None and len(self.rows) and (self.rows[0] < 0 or self.rows[-1] >= self.file_rows):
            raise DataError(f"{self.path}: row indices must be in 0..{self.file_rows - 1}")

    @property
    def n_rows(self) -> int:
        return self.file_rows if self.rows is None else len(self.rows)

    def _chunks(self, order_rng, shard, n_shards, plan):
        step = plan.chunk_rows
        ranges = [(a, min(self.file_rows, a + step)) for a in range(0, self.file_rows, step)]
        if self.rows is not None:  # only ranges holding selected rows
            lo = np.searchsorted(self.rows, [a for a, _ in ranges])
            hi = np.searchsorted(self.rows, [b for _, b in ranges])
            ranges = [(r, (int(i), int(j))) for r, i, j in zip(ranges, lo, hi) if j > i]
        else:
            ranges = [(r, None) for r in ranges]
        mine = _pick(ranges, order_rng, self.shuffle)[shard::n_shards]
        with open_h5(self.path) as handle:
            for (start, stop), selected in mine:
                self._note_read(stop - start)
                part = read_h5_rows(self.path, handle, start, stop)
                x, y = part.x, part.y
                if selected is not None:
                    local = self.rows[selected[0]:selected[1]] - start
                    x, y = x[local], y[local]
                yield x, y


class TFRecordEmbeddingStream(EmbeddingStream):
    """Stream AudioSet TFRecord files: random file order, records read sequentially within a file.

    Files are the shards' unit (AudioSet's unbalanced set has ~4,000 of them); with fewer files than
    shards every shard reads every file and keeps every ``n_shards``-th record. ``rows`` (sorted global
    record indices, files in the given order) restricts the stream to a subset, e.g. a train split.
    """

    def __init__(self, paths: Sequence[str | Path], rows: np.ndarray | None = None, n_classes: int = N_CLASSES,
                 n_steps: int = N_STEPS, counts: Sequence[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise DataError("TFRecord stream: no files given")
        if counts is not None and len(counts) != len(self.paths):
            raise DataError(f"TFRecord stream: {len(counts)} record counts for {len(self.paths)} files")
        self.n_classes, self.n_steps = int(n_classes), int(n_steps)
        self.rows = None if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
        # Records per file (``counts`` when the caller already has them, else one header pass on first use).
        self._counts: list[int] | None = None if counts is None else [int(c) for c in counts]

    def counts(self) -> list[int]:
        """Records per file (one pass over the framing headers, no payload parsing)."""
        if self._counts is None:
            self._counts = [count_records(p) for p in self.paths]
        return self._counts

    @property
    def n_rows(self) -> int:
        return sum(self.counts()) if self.rows is None else len(self.rows)

    def _chunks(self, order_rng, shard, n_shards, plan):
        offsets = np.concatenate([[0], np.cumsum(self.counts())]) if self.rows is not None else None
        files = list(range(len(self.paths)))
        by_file = len(files) >= n_shards
        mine = _pick(files, order_rng, self.shuffle)
        if by_file:
            mine = mine[shard::n_shards]
        for f in mine:
            xs, ys = [], []
            path = self.paths[f]
            base = int(offsets[f]) if offsets is not None else 0
            for index, record in enumerate(read_records(path)):
                if not by_file and index % n_shards != shard:
                    continue
                if self.rows is not None:
                    position = np.searchsorted(self.rows, base + index)
                    if position >= len(self.rows) or self.rows[position] != base + index:
                        continue  # not selected: skip before paying for the protobuf parse
                try:
                    clip = parse_audioset_record(record, self.n_classes)
                except ValueError as exc:
                    raise DataError(f"{path}: record {index}: not an AudioSet SequenceExample ({exc})") from None
                xs.append(pad_steps(clip.embeddings, self.n_steps))
                labels = np.zeros(self.n_classes, dtype=bool)
                labels[list(clip.labels)] = True
                ys.append(labels)
                if len(xs) == plan.chunk_rows:
                    self._note_read(len(xs))
                    yield np.stack(xs), np.stack(ys)
                    xs, ys = [], []
            if xs:
                self._note_read(len(xs))
                yield np.stack(xs), np.stack(ys)


def load_tfrecord_rows(paths: Sequence[str | Path], rows: np.ndarray | None = None, n_classes: int = N_CLASSES,
                       n_steps: int = N_STEPS) -> EmbeddingArrays:
    """TFRecord clips in memory, optionally only the sorted global record indices ``rows``."""
    wanted = None if rows is None else set(np.asarray(rows, dtype=np.int64).tolist())

    def clips():
        index = 0
        for path in paths:
            for clip in iter_tfrecord_clips(path, n_classes):
                if wanted is None or index in wanted:
                    yield clip
                index += 1

    return clips_to_arrays(clips(), n_classes, n_steps)


def make_synthetic_embeddings(n_rows: int, n_classes: int = N_CLASSES, n_steps: int = N_STEPS, dim: int = 128,
                              informative: int = 8, seed: int = 0, pattern_seed: int = 0) -> EmbeddingArrays:
    """Learnable AudioSet-like clips for tests and demos (no download needed).

    Each clip has 1-3 of the first ``informative`` classes; every class adds its own random pattern (drawn
    from ``pattern_seed``: sets made with different ``seed`` s and the same ``pattern_seed`` share the
    classes, like a train and an eval set) to the embeddings, plus noise; clips last 3-10 steps and are
    zero-padded like the release. The other classes never occur (AP undefined, as for rare AudioSet
    classes in a small eval set).
    """
    if not 1 <= informative <= n_classes:
        raise ConfigError(f"informative={informative}; expected 1..n_classes={n_classes}")
    prototypes = np.random.default_rng([pattern_seed, 1]).normal(0.0, 1.0, size=(informative, dim))
    rng = np.random.default_rng([seed, 2])
    x = np.zeros((n_rows, n_steps, dim), dtype=np.uint8)
    y = np.zeros((n_rows, n_classes), dtype=bool)
    for row in range(n_rows):
        labels = rng.choice(informative, size=int(rng.integers(1, 4)), replace=False)
        y[row, labels] = True
        steps = int(rng.integers(min(3, n_steps), n_steps + 1))
        signal = prototypes[labels].sum(axis=0) * 30.0 + rng.normal(0.0, 12.0, size=(steps, dim))
        x[row, :steps] = np.clip(np.round(128.0 + signal), 0, 255).astype(np.uint8)
    return EmbeddingArrays(x, y, [f"vid{seed}_{row:06d}" for row in range(n_rows)])
