"""Batch-level augmentation: MixUp, and the "duplicate the training set, augment one copy" wrapper.

MixUp (Zhang et al. 2018; used by a reference FSD2019 solution): ``x = lam * x_i + (1 - lam) * x_j`` and
``y = lam * y_i + (1 - lam) * y_j`` with ``lam ~ Beta(alpha, alpha)`` and ``j`` a random permutation of
the batch. Single-label index targets become soft ``(B, C)`` rows (the single-label loss accepts them);
multi-label 0/1 rows are mixed linearly. Inputs may be waveforms ``(B, N)`` or features ``(B, C, F, T)``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..tasks import check_task

__all__ = ["sample_mixup", "mix", "mixup", "DuplicateAugmented"]



def sample_mixup(batch_size: int, alpha: float, per_example: bool = False,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lam, perm)`` on CPU: ``lam`` (B,) float32 from Beta(alpha, alpha) (one value repeated unless
    ``per_example``), ``perm`` (B,) int64 a random permutation.

    torch's Beta sampler cannot take a generator, so ``lam`` is drawn by numpy from a seed drawn from
    ``generator`` (or from the global torch RNG): same generator state, same ``lam`` and ``perm``, on
    any device.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size: expected an integer >= 0, got {batch_size!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha: expected a number > 0, got {alpha!r}")
    device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
    perm = torch.randperm(batch_size, generator=generator, device=device).cpu()
    draws = np.random.default_rng(seed).beta(alpha, alpha, size=batch_size if per_example else 1)
    lam = torch.from_numpy(np.broadcast_to(draws, (batch_size,)).astype(np.float32).copy())
    return lam, perm


def _soft_targets(targets: torch.Tensor, task: str, n_classes: int, batch: int) -> torch.Tensor:
    """(B, C) float targets: one-hot rows for single-label indices, else the given rows."""
    check_task(task)
    if task == "single_label" and targets.ndim == 1:
        if targets.is_floating_point():
            raise ValueError("targets: single-label (B,) targets must be integer class indices")
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= n_classes):
            raise ValueError(f"targets: class indices must be in [0, {n_classes}), got "
                             f"[{int(targets.min())}, {int(targets.max())}]")
        return F.one_hot(targets.long(), n_classes).float()
    if targets.shape != (batch, n_classes):
        expected = "(B,) indices or (B, C)" if task == "single_label" else "(B, C)"
        raise ValueError(f"targets: expected {expected} with B={batch}, C={n_classes}; got {tuple(targets.shape)}")
    return targets.float()


def mix(inputs: torch.Tensor, targets: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor, task: str,
        n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic MixUp with given ``lam`` (B,) and ``perm`` (B,): row ``i`` mixes rows ``i`` and ``perm[i]``."""
    batch = inputs.shape[0]
    if targets.shape[0] != batch or lam.shape != (batch,) or perm.shape != (batch,):
        raise ValueError(f"mix: inputs {tuple(inputs.shape)}, targets {tuple(targets.shape)}, lam "
                         f"{tuple(lam.shape)} and perm {tuple(perm.shape)} must share the batch size")
    soft = _soft_targets(targets, task, n_classes, batch).to(inputs.device)
    lam = lam.to(inputs.device)
    perm = perm.to(inputs.device)
    lam_x = lam.to(inputs.dtype).reshape(batch, *([1] * (inputs.ndim - 1)))
    lam_y = lam.to(soft.dtype).unsqueeze(1)
    mixed_inputs = lam_x * inputs + (1 - lam_x) * inputs[perm]
    mixed_targets = lam_y * soft + (1 - lam_y) * soft[perm]
    return mixed_inputs, mixed_targets


def mixup(inputs: torch.Tensor, targets: torch.Tensor, alpha: float, task: str, n_classes: int,
          generator: torch.Generator | None = None, per_example: bool = False,
          apply_to: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp a batch: returns ``(mixed_inputs, mixed_targets)``, targets as ``(B, C)`` float rows.

    ``lam ~ Beta(alpha, alpha)`` once per batch (or per example with ``per_example=True``); partners from
    a random permutation. ``apply_to``: optional ``(B,)`` bool mask; rows where it is False keep their own
    input and target (``lam = 1``). Single-label rows sum to 1; multi-label rows stay in [0, 1].
    """
    lam, perm = sample_mixup(int(inputs.shape[0]), alpha, per_example, generator)
    if apply_to is not None:
        apply_to = torch.as_tensor(apply_to).bool().reshape(-1).cpu()
        if apply_to.shape[0] != inputs.shape[0]:
            raise ValueError(f"apply_to: expected {inputs.shape[0]} flags, got {apply_to.shape[0]}")
        lam = torch.where(apply_to, lam, torch.ones_like(lam))
    return mix(inputs, targets, lam, perm, task, n_classes)


class DuplicateAugmented(torch.utils.data.Dataset):
    """Twice the dataset: index ``i < N`` is item ``i`` as is, ``i >= N`` is item ``i - N`` augmented
    (a reference FSD2019 solution: "duplicate the curated training set and augment one half").

    How the augmented copy is obtained:

    * if the wrapped dataset has ``get(index, augment: bool)``, it is called with ``augment=False`` for the
      first half and ``augment=True`` for the second (waveform augmentation in the dataset);
    * with ``flag=True`` a bool tensor ``augmented`` is appended to every item tuple, so the training step
      can pass the batch's flags as ``apply_to`` to on-device augmentation (:class:`SpecAugment`,
      :func:`mixup`). Without ``get``, the item itself is the same in both halves and only the flag differs.

    One of the two is needed (else nothing would be augmented). ``set_epoch`` is forwarded. ``only``: the
    indices that get an augmented copy (default all), e.g. the curated clips of a curated + noisy set; the
    copies then follow the ``N`` originals in that order.
    """

    def __init__(self, dataset: Any, flag: bool = False, only: Sequence[int] | None = None):
        self.dataset = dataset
        self.flag = bool(flag)
        self.copies = list(range(len(dataset))) if only is None else [int(i) for i in only]
        self._has_get = callable(getattr(dataset, "get", None))
        if not self._has_get and not self.flag:
            raise ValueError("dataset: needs a get(index, augment) method, or use flag=True so the batch "
                             "carries which items to augment")

    def __len__(self) -> int:
        return len(self.dataset) + len(self.copies)

    def set_epoch(self, epoch: int) -> None:
        if callable(getattr(self.dataset, "set_epoch", None)):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> Any:
        n, total = len(self.dataset), len(self)
        if index < 0:
            index += total
        if not 0 <= index < total:
            raise IndexError(f"index {index} out of range for {total} items")
        augmented = index >= n
        base = self.copies[index - n] if augmented else index
        item = self.dataset.get(base, augment=augmented) if self._has_get else self.dataset[base]
        if self.flag:
            item = (*item, torch.tensor(augmented)) if isinstance(item, tuple) else (item, torch.tensor(augmented))
        return item
