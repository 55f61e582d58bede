"""Scoring a split: the one path from a model (PyTorch or ONNX) and a set of inputs to metrics.

A *probability function* maps a CPU batch of model inputs (waveforms, or embedding sequences) to (B, C)
class probabilities; :func:`model_probabilities` makes one from a PyTorch model, the deploy layer makes one
from an ONNX Runtime session. Probabilities come from either

* :func:`predict_batches`: fixed-size inputs from a loader (one crop per file, or embedding rows), or
* :func:`predict_whole_files`: every window of every recording (``dataset.windows(i)``, or streamed from the
  file by ``dataset.window_chunks``), averaged per file, the way ``predict`` treats a recording,

and :func:`score` turns them into the task's metrics (plus per-group results and the loss). Validation,
final evaluation, ``evaluate``, ``ensemble``, distillation's teacher reference and INT8 quantization all
go through here, so their numbers are comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import metrics as M
from ..errors import NonFiniteOutputs
from .distributed import all_gather, gather_batches, shard
from .losses import evaluation_loss, probabilities
from .loop import autocast_for

__all__ = ["Probabilities", "SplitResult", "model_probabilities", "predict_batches", "predict_whole_files",
           "recording_windows", "score", "window_batches"]

# A CPU batch of model inputs (B, ...) -> (B, C) float probabilities.
Probabilities = Callable[[torch.Tensor], np.ndarray]


@dataclass
class SplitResult:
    """One split scored: its metrics, and the per-item probabilities and targets they came from."""

    metrics: dict[str, float]
    probs: np.ndarray
    targets: np.ndarray
    ids: list[str] = field(default_factory=list)  # one per item, to align several models' outputs
    groups: dict[str, list[str]] = field(default_factory=dict)  # group column -> one value per item


def model_probabilities(model: nn.Module, task: str, device: torch.device, amp: bool = False) -> Probabilities:
    """A probability function running ``model`` (in eval mode, without gradients) on ``device``."""
    model.eval()

    @torch.no_grad()
    def run(inputs: torch.Tensor) -> np.ndarray:
        with autocast_for(device, amp):
            logits = model(inputs.to(device, non_blocking=True))
        return probabilities(task, logits.float()).cpu().numpy()

    return run


def predict_batches(probs_fn: Probabilities, batches: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets over ``(inputs, targets)`` batches, in order.

    Inside :func:`~.distributed.sharded` (validation under torchrun) each rank runs the model on every
    ``size``-th batch and the ranks exchange what they computed: all of them end with every batch's probabilities."""
    current = shard()
    mine: dict[int, np.ndarray] = {}
    targets = []
    for index, (inputs, target, *_) in enumerate(batches):
        if current is None or index % current.size == current.rank:
            mine[index] = np.asarray(probs_fn(inputs), dtype=np.float64)
        targets.append(torch.as_tensor(target).numpy())
    if current is not None:
        mine = gather_batches(mine, current)
    if not mine:
        return np.zeros((0, 0)), np.zeros((0,))
    return np.concatenate([mine[index] for index in range(len(targets))]), np.concatenate(targets)


def recording_windows(recordings, index: int, max_windows: int) -> Iterator[np.ndarray]:
    """Recording ``index``'s windows, at most ``max_windows`` at a time: streamed when the recordings stream
    (``window_chunks``, e.g. :class:`~audioclf.data.dataset.StreamedRecordings`), else sliced from
    ``recordings.windows(index)`` as each chunk is needed (a long recording is never cut all at once)."""
    streamed = getattr(recordings, "window_chunks", None)
    if streamed is not None:
        yield from streamed(index, max_windows)
        return
    windows = recordings.windows(index)
    for start in range(0, len(windows), max_windows):
        yield windows[start:start + max_windows]


def window_batches(recordings, max_windows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(owners, windows)`` batches of at most ``max_windows`` windows over all recordings, in order (``owners``:
    the recording of each window): short recordings share a batch and a long one is split, so memory is
    bounded by the batch, not by a recording's length."""
    parts, owners, size = [], [], 0
    for index in range(len(recordings)):
        for chunk in recording_windows(recordings, index, max_windows):
            start = 0
            while start < len(chunk):
                take = min(max_windows - size, len(chunk) - start)
                parts.append(chunk[start:start + take])
                owners.append(np.full(take, index))
                size, start = size + take, start + take
                if size == max_windows:
                    yield np.concatenate(owners), np.concatenate(parts)
                    parts, owners, size = [], [], 0
    if parts:
        yield np.concatenate(owners), np.concatenate(parts)


def predict_whole_files(probs_fn: Probabilities, recordings, max_windows: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities per recording from all of its windows, averaged (see :func:`window_batches`).

    A recording with no windows (one that failed while streaming) gets zeros; its caller drops it.
    """
    n = len(recordings)
    current = shard()  # under torchrun's validation: every size-th batch here, the other ranks' sums added
    sums: np.ndarray | None = None
    counts = np.zeros(n)
    for index, (owners, batch) in enumerate(window_batches(recordings, max_windows)):
        if current is not None and index % current.size != current.rank:
            continue
        probs = np.asarray(probs_fn(torch.from_numpy(batch)), dtype=np.float64)
        if sums is None:
            sums = np.zeros((n, probs.shape[1]))
        np.add.at(sums, owners, probs)
        np.add.at(counts, owners, 1)
    if current is not None:  # added in rank order: the same result, bit for bit, on every rank
        parts = [part for part in all_gather((sums, counts), current) if part[0] is not None]
        sums = sum(part[0] for part in parts) if parts else None
        counts = sum(part[1] for part in parts) if parts else counts
    if sums is None:
        return np.zeros((0, 0)), np.zeros((0,))
    return sums / np.maximum(counts, 1)[:, None], recordings.targets.numpy()


def finite(probs: np.ndarray) -> np.ndarray:
    """``probs`` when every value is a finite number, else :class:`NonFiniteOutputs` (diverged weights, or an
    overflow in the forward pass): what no metric, prediction or CSV row is made of."""
    bad = int((~np.isfinite(probs)).sum())
    if bad:
        raise NonFiniteOutputs(f"the model's probabilities are not all finite ({bad} NaN or infinite values)")
    return probs


def score(task: str, targets: np.ndarray, probs: np.ndarray, classes: Sequence[str],
          groups: Mapping[str, Sequence[Any]] | None = None, loss: str = "task",
          thresholds: Any = None) -> dict[str, float]:
    """The task's metrics (:func:`audioclf.metrics.compute_metrics`, per group when ``groups`` are given; the
    multi-label decisions at ``thresholds``, None: 0.5) plus ``loss``: the model's training loss recomputed from the
    probabilities (``loss`` names its kind)."""
    if len(probs) == 0:
        return {}
    finite(probs)
    values = M.compute_metrics(task, targets, probs, groups=groups or None, class_names=list(classes),
                               thresholds=thresholds)
    values["loss"] = evaluation_loss(task, probs, targets, loss)
    return values
