"""Losses on logits, and the matching logits -> probabilities map, per task.

* ``single_label``: softmax cross-entropy. Targets are class indices (N,) or probability rows (N, C)
  (MixUp's interpolated labels); one-hot rows give exactly the index loss.
* ``multi_label``: sigmoid binary cross-entropy on (N, C) float targets (FSD2019, AudioSet), averaged
  over items and classes like Keras' ``binary_crossentropy``;
* ``bipolar_mse`` (a model asks for it at registration): the bipolar coding of Darna Sequeiros (2018).
* ``train.loss=gce``, for noisy labels: the generalised cross-entropy of Zhang & Sabuncu (2018), single- or
  multi-label (:class:`GeneralizedCrossEntropyLoss`).

Models return logits and the losses apply the softmax / sigmoid themselves: the fused log-softmax and
``binary_cross_entropy_with_logits`` are numerically stable where ``log(softmax(x))`` is not.

``class_weights`` (``train.balance=loss``, :func:`audioclf.data.balance.class_weights`, mean 1 over the classes):
single-label, each item's loss is multiplied by its class's weight (MixUp's rows: the weights of the classes mixed,
in their proportions), label smoothing applied to the targets first; multi-label, each class column's loss by its
weight. Both stay means over items (Cui et al. 2019): a batch of only common items still has a smaller loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from ..models.registry import LOSSES
from ..tasks import check_task

__all__ = ["SingleLabelLoss", "MultiLabelLoss", "BipolarMSELoss", "GeneralizedCrossEntropyLoss", "TRAINING_LOSSES",
           "build_loss", "check_training_loss", "evaluation_loss", "probabilities"]

# train.loss: "task" trains with the loss the task and the model's registration ask for; "gce" replaces it.
TRAINING_LOSSES = ("task", "gce")


def _check_smoothing(label_smoothing: float) -> float:
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"train.label_smoothing={label_smoothing}; expected 0 <= label_smoothing < 1")
    return float(label_smoothing)


def _class_weights(weights: Sequence[float] | None) -> torch.Tensor | None:
    if weights is None:
        return None
    tensor = torch.as_tensor(np.asarray(weights, dtype=np.float32))
    if tensor.ndim != 1 or not bool(torch.isfinite(tensor).all()) or bool((tensor < 0).any()):
        raise ConfigError("class weights of the loss: expected one finite weight >= 0 per class")
    return tensor


def _column_weighted(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of (N, C) per-element losses, each class column multiplied by its weight first."""
    if weights is None:
        return values.mean()
    if weights.shape[0] != values.shape[1]:
        raise DataError(f"loss: {weights.shape[0]} class weights for {values.shape[1]} classes")
    return (values * weights.to(values.device, values.dtype)).mean()


class SingleLabelLoss(nn.Module):
    """Mean softmax cross-entropy; ``label_smoothing`` mixes the targets with the uniform distribution
    (``(1 - eps) * y + eps / C``), for index and probability targets alike. ``class_weights``: see the module."""

    def __init__(self, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None):
        super().__init__()
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.class_weights = _class_weights(class_weights)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2:
            raise DataError(f"single_label loss: logits of shape {tuple(logits.shape)}; expected (N, C)")
        if targets.ndim == 1:
            if targets.is_floating_point():
                raise DataError("single_label loss: (N,) targets must be integer class indices")
            if targets.shape[0] != logits.shape[0]:
                raise DataError(f"single_label loss: {targets.shape[0]} targets for {logits.shape[0]} logits rows")
            if self.class_weights is None:
                return F.cross_entropy(logits, targets.long(), label_smoothing=self.label_smoothing)
            targets = F.one_hot(targets.long(), logits.shape[1]).to(logits.dtype)
        if targets.shape != logits.shape:
            raise DataError(
                f"single_label loss: targets of shape {tuple(targets.shape)}; expected (N,) class indices "
                f"or (N, C) probabilities matching logits {tuple(logits.shape)}"
            )
        targets = targets.to(logits.dtype)
        if self.class_weights is None:
            # torch applies the same (1 - eps) * y + eps / C smoothing to probability targets.
            return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        # Not F.cross_entropy(weight=...): it divides index targets' loss by the batch's weight sum but probability
        # targets' by N, and weights the smoothing's share per class; here both are the same per-item weighting.
        weights = self.class_weights.to(logits.device, logits.dtype)
        if weights.shape[0] != logits.shape[1]:
            raise DataError(f"single_label loss: {weights.shape[0]} class weights for {logits.shape[1]} classes")
        item_weight = targets @ weights  # one-hot: its class's weight; MixUp: the mix of the two
        smoothed = targets * (1 - self.label_smoothing) + self.label_smoothing / logits.shape[1]
        per_item = -(smoothed * F.log_softmax(logits, dim=1)).sum(dim=1)
        return (item_weight * per_item).mean()


class MultiLabelLoss(nn.Module):
    """Mean sigmoid binary cross-entropy over items and classes; ``label_smoothing`` pulls each 0/1
    target towards 1/2 (``(1 - eps) * y + eps / 2``); ``class_weights`` multiply each class column."""

    def __init__(self, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None):
        super().__init__()
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.class_weights = _class_weights(class_weights)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.shape != logits.shape:
            raise DataError(
                f"multi_label loss: targets of shape {tuple(targets.shape)}; expected {tuple(logits.shape)} "
                "(one 0/1 column per class)"
            )
        targets = targets.to(logits.dtype)
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / 2
        if self.class_weights is None:
            return F.binary_cross_entropy_with_logits(logits, targets)
        return _column_weighted(F.binary_cross_entropy_with_logits(logits, targets, reduction="none"),
                                self.class_weights)


class BipolarMSELoss(nn.Module):
    """The bipolar coding of Darna Sequeiros (2018) on AudioSet: MSE between ``tanh`` outputs and targets mapped
    to ±1.

    Bipolar models return ``logits = 2 z`` for the pre-tanh activation ``z``, so ``sigmoid(logits) =
    (tanh(z) + 1) / 2`` is exactly that thesis's mapping of bipolar outputs to [0, 1] and every
    probability-based metric works unchanged. Targets are 0/1 like for every multi-label model;
    ``label_smoothing`` pulls them towards 1/2 as in :class:`MultiLabelLoss`.
    """

    def __init__(self, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None):
        super().__init__()
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.class_weights = _class_weights(class_weights)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.shape != logits.shape:
            raise DataError(f"bipolar loss: targets of shape {tuple(targets.shape)}; expected {tuple(logits.shape)}")
        outputs = torch.tanh(logits / 2)
        targets = targets.to(outputs.dtype)
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / 2
        return _column_weighted((outputs - (targets * 2 - 1)) ** 2, self.class_weights)


class GeneralizedCrossEntropyLoss(nn.Module):
    """The generalised cross-entropy L_q = (1 - p^q) / q of Zhang & Sabuncu (2018, "Generalized Cross Entropy Loss
    for Training Deep Neural Networks with Noisy Labels"), mean over items: q -> 0 gives the cross-entropy, q = 1
    the mean absolute error 1 - p_y (half the L1 distance between the one-hot target and the softmax).

    Why it resists wrong labels: its gradient is the cross-entropy's times p_y^q, so an item the network already
    finds unlikely under its given label (often a wrong label) pulls far less than under cross-entropy, while the
    training still converges faster than with MAE alone.

    Single-label: the softmax p; targets are class indices or probability rows y (MixUp), the loss
    ``sum_c y_c (1 - p_c^q) / q`` (linear in y as the cross-entropy is). Multi-label: each class a binary
    problem on the sigmoid, ``y (1 - p^q) / q + (1 - y) (1 - (1 - p)^q) / q``, mean over items and classes.
    ``label_smoothing`` smooths the targets as the task's own loss does."""

    def __init__(self, task: str, q: float = 0.7, label_smoothing: float = 0.0):
        super().__init__()
        check_task(task)
        if not 0 < q <= 1:
            raise ConfigError(f"train.gce_q={q}; expected 0 < q <= 1 (q -> 0: cross-entropy, 1: MAE)")
        self.task, self.q, self.label_smoothing = task, float(q), _check_smoothing(label_smoothing)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        q, eps = self.q, self.label_smoothing
        if self.task == "multi_label":
            if targets.shape != logits.shape:
                raise DataError(f"gce loss: targets of shape {tuple(targets.shape)}; expected {tuple(logits.shape)}")
            y = targets.to(logits.dtype) * (1 - eps) + eps / 2
            # p^q as exp(q log p): log-sigmoid is stable where log(sigmoid(x)) underflows
            positive = (1 - torch.exp(q * F.logsigmoid(logits))) / q
            negative = (1 - torch.exp(q * F.logsigmoid(-logits))) / q
            return (y * positive + (1 - y) * negative).mean()
        if logits.ndim != 2:
            raise DataError(f"gce loss: logits of shape {tuple(logits.shape)}; expected (N, C)")
        if targets.ndim == 1:
            if targets.is_floating_point() or targets.shape[0] != logits.shape[0]:
                raise DataError(f"gce loss: {tuple(targets.shape)} targets for {logits.shape[0]} logits rows; "
                                "expected (N,) integer class indices")
            y = F.one_hot(targets.long(), logits.shape[1]).to(logits.dtype)
        elif targets.shape == logits.shape:
            y = targets.to(logits.dtype)
        else:
            raise DataError(f"gce loss: targets of shape {tuple(targets.shape)}; expected (N,) or {tuple(logits.shape)}")
        y = y * (1 - eps) + eps / logits.shape[1]
        per_class = (1 - torch.exp(q * torch.log_softmax(logits, dim=-1))) / q
        return (y * per_class).sum(dim=-1).mean()


def check_training_loss(name: str, kind: str = "task") -> None:
    """A valid ``train.loss`` for a model whose registration asks for ``kind``."""
    if name not in TRAINING_LOSSES:
        raise ConfigError(f"train.loss={name!r}: expected {' | '.join(TRAINING_LOSSES)}")
    if name == "gce" and kind != "task":
        raise ConfigError(f"train.loss=gce: this model trains with its own {kind} loss; set train.loss=task")


def _check_kind(task: str, kind: str) -> None:
    check_task(task)
    if kind not in LOSSES:
        raise ConfigError(f"loss {kind!r}: expected one of {', '.join(LOSSES)}")
    if kind == "bipolar_mse" and task != "multi_label":
        raise ConfigError("the bipolar loss is for multi-label tasks (one ±1 output per class)")


def build_loss(task: str, label_smoothing: float = 0.0, kind: str = "task", training_loss: str = "task",
               gce_q: float = 0.7, class_weights: Sequence[float] | None = None) -> nn.Module:
    """The training loss ``loss(logits, targets) -> scalar mean`` for ``task``; ``kind`` is what the model's
    registration asks for (``"task"``: cross-entropy or BCE; ``"bipolar_mse"``), ``training_loss`` what
    ``train.loss`` asks for (``"gce"``: :class:`GeneralizedCrossEntropyLoss` with ``q = gce_q``);
    ``class_weights``: one per class (``train.balance=loss``) or None."""
    _check_kind(task, kind)
    check_training_loss(training_loss, kind)
    if training_loss == "gce":
        if class_weights is not None:  # GCE's weighting of items by p^q and per-class weights are not combined here
            raise ConfigError("train.loss=gce with train.balance=loss: not combined; use train.balance=sampler "
                              "(class-balanced draws) with gce")
        return GeneralizedCrossEntropyLoss(task, gce_q, label_smoothing)
    if kind == "bipolar_mse":
        return BipolarMSELoss(label_smoothing, class_weights)
    if task == "single_label":
        return SingleLabelLoss(label_smoothing, class_weights)
    return MultiLabelLoss(label_smoothing, class_weights)


def evaluation_loss(task: str, probs: np.ndarray, targets: np.ndarray, kind: str = "task") -> float:
    """The training loss (without label smoothing) recomputed from evaluation probabilities: what
    validation logs as ``loss`` and early stopping on ``loss`` watches."""
    _check_kind(task, kind)
    if kind == "bipolar_mse":  # sigmoid(logits) = (tanh + 1) / 2, so tanh - (2y - 1) = 2p - 2y
        return float(np.mean((2 * probs - 2 * targets) ** 2))
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    if task == "single_label":
        return float(-np.mean(np.log(p[np.arange(len(targets)), targets])))
    return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)))


def probabilities(task: str, logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities from logits: softmax over classes (single-label) or per-class sigmoid."""
    check_task(task)
    return torch.softmax(logits, dim=-1) if task == "single_label" else torch.sigmoid(logits)
