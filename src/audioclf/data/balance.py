"""Class imbalance: how uneven a training split is, and the two ways of evening it out (``train.balance``).

* ``sampler``: each epoch draws as many items as the split has, with replacement, item ``i`` with probability
  proportional to ``1 / count(its class)`` (multi-label: its rarest label's count), so every class is drawn
  about equally often (:class:`ClassBalancedOrder`).
* ``loss``: each class's loss is multiplied by a class weight (:func:`class_weights`): the inverse frequency,
  or the inverse "effective number of samples" ``(1 - beta^n) / (1 - beta)`` of Cui et al. 2019,
  "Class-Balanced Loss Based on Effective Number of Samples", which grows more slowly than ``n`` (later items of
  a class add less new information), so weights are less extreme than the inverse frequency.

:func:`drop_to_imbalance` makes a balanced set imbalanced by dropping items of chosen classes from one split
(for measuring the above on real data without copying it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..config import BALANCE_WEIGHTS
from ..errors import ConfigError, DataError
from .manifest import Manifest

__all__ = ["IMBALANCE_RATIO", "target_counts", "imbalance_ratio",
           "class_weights", "item_weights", "ClassBalancedOrder", "drop_to_imbalance"]

# Zero-config balances a training split whose largest class has more than this many times the items of its
# smallest (the threshold: mild imbalance is left to the stratified splits alone).
IMBALANCE_RATIO = 5.0


def target_counts(targets: np.ndarray | torch.Tensor, n_classes: int) -> np.ndarray:
    """(C,) items per class of ``targets``: (N,) class indices or an (N, C) multi-hot matrix."""
    targets = np.asarray(targets)
    if targets.ndim == 1:
        return np.bincount(targets.astype(np.int64), minlength=n_classes)[:n_classes]
    return (targets > 0.5).sum(axis=0).astype(np.int64)


def imbalance_ratio(counts: Sequence[int] | np.ndarray) -> float:
    """Items of the largest class over items of the smallest class that has any (1.0 for an empty split);
    a class with no training item cannot be balanced by weighting, so it does not make the ratio infinite."""
    present = [int(n) for n in counts if n > 0]
    return max(present) / min(present) if present else 1.0


def class_weights(counts: Sequence[int] | np.ndarray, method: str = "effective", beta: float = 0.999) -> np.ndarray:
    """(C,) loss weights from the training counts, scaled to mean 1 over the classes that have items (so the
    loss keeps its usual size, as Cui et al. normalise theirs to sum to the number of classes); a class with no
    item gets 1.

    ``inverse``: ``1 / n``. ``effective``: ``(1 - beta) / (1 - beta**n)`` (``beta`` -> 0 gives equal weights,
    ``beta`` -> 1 the inverse frequency)."""
    if method not in BALANCE_WEIGHTS:
        raise ConfigError(f"train.balance_weights={method!r}: expected one of {', '.join(BALANCE_WEIGHTS)}")
    if not (isinstance(beta, (int, float)) and 0 < beta < 1):
        raise ConfigError(f"train.balance_beta={beta!r}: expected a number 0 < beta < 1")
    n = np.asarray(counts, dtype=np.float64)
    present = n > 0
    raw = np.ones_like(n)
    if method == "inverse":
        raw[present] = 1.0 / n[present]
    else:
        raw[present] = (1.0 - beta) / (1.0 - np.power(beta, n[present]))
    if present.any():
        raw[present] *= present.sum() / raw[present].sum()
    return raw


def item_weights(targets: np.ndarray | torch.Tensor, n_classes: int) -> np.ndarray:
    """(N,) sampling weight of each item: ``1 / count(its class)``; multi-label: ``1 / count`` of its rarest
    label (an item with no label weighs as the most common class's items)."""
    targets = np.asarray(targets)
    counts = target_counts(targets, n_classes).astype(np.float64)
    inverse = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    if targets.ndim == 1:
        return inverse[targets.astype(np.int64)]
    weights = (np.where(targets > 0.5, inverse[None, :], 0.0)).max(axis=1)
    floor = inverse[counts > 0].min() if (counts > 0).any() else 1.0
    return np.where(weights > 0, weights, floor)


class ClassBalancedOrder(torch.utils.data.Sampler):
    """An epoch order of ``len(weights)`` indices drawn with replacement in proportion to ``weights``, fresh per
    epoch from (seed, epoch) like :class:`~audioclf.data.prepare.EpochShuffle`, which it replaces: resuming at
    epoch e draws the same order, and every rank of a distributed run draws the same one."""

    def __init__(self, weights: Sequence[float] | np.ndarray, seed: int):
        weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if weights.ndim != 1 or len(weights) == 0 or not bool(torch.isfinite(weights).all()) \
                or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise DataError("class-balanced sampler: expected one finite weight >= 0 per item, not all 0")
        self.weights, self.seed, self.epoch = weights, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator).tolist())


def drop_to_imbalance(manifest: Manifest, keep: Mapping[str, float], seed: int = 0, split: str = "train") -> Manifest:
    """``manifest`` without some items of ``split``: of each class named in ``keep``, only that fraction of its
    items there (rounded, at least one), drawn at random with ``seed``; other classes and splits untouched (so a
    group-held-out split stays held out). E.g. ``{"yes": 1/8}`` makes "yes" 8 times rarer in training."""
    unknown = [name for name in keep if name not in manifest.classes]
    if unknown:
        raise DataError(f"drop_to_imbalance: class '{unknown[0]}' is not in the data; classes: "
                        f"{', '.join(manifest.classes)}")
    bad = [(name, f) for name, f in keep.items() if not (isinstance(f, (int, float)) and 0 < f <= 1)]
    if bad:
        raise DataError(f"drop_to_imbalance: keep fraction {bad[0][1]!r} for '{bad[0][0]}': expected 0 < f <= 1")
    rng = random.Random(seed)
    dropped: set[str] = set()
    for name, fraction in keep.items():
        ids = sorted(item.id for item in manifest if item.split == split and name in item.labels)
        if not ids:
            raise DataError(f"drop_to_imbalance: class '{name}' has no item in split '{split}'")
        kept = max(1, math.floor(fraction * len(ids) + 0.5))
        dropped.update(rng.sample(ids, len(ids) - kept))
    return manifest.filter(lambda item: item.id not in dropped)
