"""Evaluation metrics: pure numpy functions over whole evaluation sets.

Inputs are numpy arrays (torch tensors and lists are converted). Two families:

* single-label: ``y_true`` (N,) class indices (one-hot (N, C) is accepted too) and
  ``probs`` (N, C) class probabilities; the label-only metrics also take (N,) predictions;
* multi-label: ``targets`` (N, C) of 0/1 and ``scores`` (N, C) (probabilities or any
  monotone score for the ranking metrics).

Undefined values (no items, a class with no positives ...) are ``nan``, never a made-up 0,
so averages can leave them out explicitly. ``compute_metrics`` gathers the numbers a run logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError, DataError
from .tasks import check_task

_NORMALIZE = (None, "true", "pred", "all")
# Rows per block in the ranking metrics: bounds the (rows x classes) temporaries (~16 MB each).
_BLOCK_ELEMENTS = 2_000_000


# --- input handling ------------------------------------------------------------------------------
def _as_numpy(x: Any) -> np.ndarray:
    """numpy view of an array, a list or a torch tensor (any device, any float dtype)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        try:
            return x.numpy()
        except TypeError:  # bfloat16 has no numpy dtype
            return x.float().numpy()
    return np.asarray(x)


def _class_indices(y_true: Any, name: str = "y_true") -> np.ndarray:
    """(N,) int64 class indices from indices or one-hot rows."""
    y = _as_numpy(y_true)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    if y.ndim != 1:
        raise DataError(f"{name}: expected (N,) class indices or (N, C) one-hot, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"{name}: expected integer class indices, got non-integer values ({y.dtype})")
    return y.astype(np.int64, copy=False)


def _check_range(y: np.ndarray, n_classes: int, name: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"{name}: class indices must be in [0, {n_classes}), got min {y.min()} max {y.max()}")


def _probabilities(probs: Any, n_items: int) -> np.ndarray:
    p = np.asarray(_as_numpy(probs), dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != n_items:
        raise DataError(f"probs: expected shape ({n_items}, n_classes), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise DataError("probs: contains nan or inf")
    return p


def _labels_and_predictions(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Class indices, predicted indices and C (None when only (N,) predictions were given)."""
    y = _class_indices(y_true)
    p = _as_numpy(probs)
    n_classes = None
    if p.ndim == 2:
        p = _probabilities(p, len(y))
        n_classes = p.shape[1]
        _check_range(y, n_classes, "y_true")
        pred = p.argmax(axis=1)
    else:
        pred = _class_indices(p, "y_pred")
        if len(pred) != len(y):
            raise DataError(f"y_pred: expected {len(y)} predictions (as many as y_true), got {len(pred)}")
    return y, pred.astype(np.int64, copy=False), n_classes


def _multilabel(targets: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (N, C) targets and float64 (N, C) scores, validated."""
    t = _as_numpy(targets)
    s = np.asarray(_as_numpy(scores), dtype=np.float64)
    if t.ndim != 2 or s.shape != t.shape:
        raise DataError(f"targets/scores: expected two (N, C) arrays of the same shape, got {t.shape} and {s.shape}")
    if t.dtype != bool and t.size and not np.all((t == 0) | (t == 1)):
        raise DataError("targets: expected 0/1 values (multi-label indicator matrix)")
    if not np.all(np.isfinite(s)):
        raise DataError("scores: contains nan or inf")
    return t.astype(bool, copy=False), s


def binarize(scores: Any, threshold: Any = 0.5) -> np.ndarray:
    """Decisions ``score > threshold``: the one multi-label decision rule (``threshold`` a number, or (C,) per-class
    thresholds as a run chooses them on validation, :mod:`audioclf.calibration`).

    Strict on purpose: for scores in [0, 1] it equals ``np.round`` (round half to even sends
    0.5 to 0), which is how Darna Sequeiros (2018) turned sigmoid outputs into decisions on AudioSet.
    """
    return np.asarray(_as_numpy(scores), dtype=np.float64) > threshold


def _nanmean(values: np.ndarray) -> float:
    """Mean of the defined (non-nan) values; nan when there are none (without a RuntimeWarning)."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


# --- single-label ----------------------------------------------------------------------------------
def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int | None = None, normalize: str | None = None) -> np.ndarray:
    """(C, C) matrix, rows = true class, columns = predicted class (scikit-learn's layout).

    ``y_pred`` may be (N,) predicted indices or (N, C) probabilities (argmax is taken).
    ``normalize``: None (counts, int64), "true" (rows sum to 1), "pred" (columns sum to 1) or
    "all" (everything sums to 1); an empty row or column stays 0 as in scikit-learn.
    """
    if normalize not in _NORMALIZE:
        raise ConfigError(f"normalize={normalize!r}: expected one of None, 'true', 'pred', 'all'")
    y, pred, inferred = _labels_and_predictions(y_true, y_pred)
    if n_classes is None:
        n_classes = inferred or int(max(y.max(initial=-1), pred.max(initial=-1)) + 1)
    _check_range(y, n_classes, "y_true")
    _check_range(pred, n_classes, "y_pred")
    counts = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    if normalize is None:
        return counts
    counts = counts.astype(np.float64)
    if normalize == "true":
        totals = counts.sum(axis=1, keepdims=True)
    elif normalize == "pred":
        totals = counts.sum(axis=0, keepdims=True)
    else:
        totals = np.array(counts.sum())
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def accuracy(y_true: Any, probs: Any) -> float:
    """Fraction of items whose argmax (or given prediction) is the true class."""
    y, pred, _ = _labels_and_predictions(y_true, probs)
    return float(np.mean(y == pred)) if len(y) else float("nan")


def per_class_accuracy(y_true: Any, probs: Any, n_classes: int | None = None) -> np.ndarray:
    """(C,) recall of each class: correct / items of that class; nan for classes absent from y_true."""
    matrix = confusion_matrix(y_true, probs, n_classes).astype(np.float64)
    support = matrix.sum(axis=1)
    return np.divide(np.diag(matrix), support, out=np.full(len(support), np.nan), where=support > 0)


def balanced_accuracy(y_true: Any, probs: Any) -> float:
    """Mean per-class recall over the classes present in y_true (= scikit-learn's definition)."""
    return _nanmean(per_class_accuracy(y_true, probs))


def macro_f1(y_true: Any, probs: Any) -> float:
    """Unweighted mean F1 over the classes that occur in y_true or in the predictions.

    Same class set as scikit-learn's ``f1_score(average="macro")`` without ``labels``: a class
    neither present nor predicted has no defined F1 and is left out rather than counted as 0.
    """
    matrix = confusion_matrix(y_true, probs).astype(np.float64)
    tp = np.diag(matrix)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)  # = 2 tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.full(len(tp), np.nan), where=denominator > 0)
    return _nanmean(f1)


def log_loss(y_true: Any, probs: Any, eps: float = 1e-15) -> float:
    """Mean multi-class cross-entropy (natural log) of the true class.

    Probabilities are clipped to [eps, 1 - eps] and each row renormalised (scikit-learn's
    classic recipe), so a 0 for the true class costs -log(eps) instead of inf. All C columns
    of ``probs`` are classes whether or not they occur in y_true (``labels=range(C)``).
    """
    y = _class_indices(y_true)
    p = _probabilities(probs, len(y))
    _check_range(y, p.shape[1], "y_true")
    if not len(y):
        return float("nan")
    p = np.clip(p, eps, 1 - eps)
    p /= p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


# --- multi-label: ranking ----------------------------------------------------------------------------
def _precision_at_positives(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(R, K) precision of the ranked list of each row, read at each positive entry; 0 elsewhere.

    For a positive entry j of a row: (positives scored >= s_j) / (entries scored >= s_j).
    Tied entries all take the rank of the last of them (scikit-learn's LRAP/AP convention),
    so the result does not depend on how a sort happens to order ties.
    """
    n_rows, n_cols = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=1)
    ranked_pos = np.take_along_axis(targets, order, axis=1)
    # Index of the last entry of each tie group: mark group ends, then carry them leftwards.
    columns = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    is_end = np.ones((n_rows, n_cols), dtype=bool)
    is_end[:, :-1] = ranked[:, :-1] != ranked[:, 1:]
    group_end = np.where(is_end, columns, n_cols)
    group_end = np.minimum.accumulate(group_end[:, ::-1], axis=1)[:, ::-1]
    hits = np.cumsum(ranked_pos, axis=1)
    precision = np.take_along_axis(hits, group_end, axis=1) / (group_end + 1.0)
    precision = np.where(ranked_pos, precision, 0.0)
    out = np.empty_like(precision)
    np.put_along_axis(out, order, precision, axis=1)
    return out


def _precision_sums(targets: np.ndarray, scores: np.ndarray, axis: int) -> np.ndarray:
    """Sum of ``_precision_at_positives`` over rows (axis=0, per column) or columns (axis=1, per row)."""
    n_rows, n_cols = scores.shape
    step = max(1, _BLOCK_ELEMENTS // max(n_cols, 1))
    if axis == 0:
        total = np.zeros(n_cols)
        for start in range(0, n_rows, step):
            total += _precision_at_positives(targets[start:start + step], scores[start:start + step]).sum(axis=0)
        return total
    parts = [_precision_at_positives(targets[s:s + step], scores[s:s + step]).sum(axis=1) for s in range(0, n_rows, step)]
    return np.concatenate(parts) if parts else np.zeros(0)


def lwlrap_per_class(targets: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-class lwlrap and class weights (the DCASE 2019 Task 2 / FSD2019 formula).

    For every positive label of every clip: precision of the clip's label ranking at that
    label. A class's lwlrap averages these over its positive labels; its weight is its share
    of all positive labels, so ``lwlrap = sum(per_class * weight)``. Classes with no
    positive label get weight 0 and lwlrap nan (the official code writes 0 there; either way
    they do not count). Clips with no positive labels contribute nothing.
    """
    t, s = _multilabel(targets, scores)
    labels_per_class = t.sum(axis=0)
    per_class = np.divide(_precision_sums(t, s, axis=0), labels_per_class,
                          out=np.full(t.shape[1], np.nan), where=labels_per_class > 0)
    total = labels_per_class.sum()
    weights = labels_per_class / total if total else np.zeros(t.shape[1])
    return per_class, weights


def lwlrap(targets: Any, scores: Any) -> float:
    """Label-weighted label-ranking average precision (FSD2019 metric); nan without positives.

    Equals scikit-learn's LRAP with ``sample_weight`` = number of positive labels per clip.
    """
    t, s = _multilabel(targets, scores)
    n_labels = t.sum()
    # sum_c weight_c * lwlrap_c collapses to (sum of all precisions) / (number of labels).
    return float(_precision_sums(t, s, axis=0).sum() / n_labels) if n_labels else float("nan")


def label_ranking_ap(targets: Any, scores: Any) -> float:
    """Sample-averaged label-ranking average precision (scikit-learn's LRAP).

    As in scikit-learn, a clip with no positive labels scores 1 (and still counts).
    """
    t, s = _multilabel(targets, scores)
    if not len(t):
        return float("nan")
    positives = t.sum(axis=1)
    per_clip = np.divide(_precision_sums(t, s, axis=1), positives, out=np.ones(len(t)), where=positives > 0)
    return float(per_clip.mean())


def average_precision_per_class(targets: Any, scores: Any) -> np.ndarray:
    """(C,) average precision of each class over the clips; nan for classes with no positives.

    Non-interpolated AP with tied scores forming one threshold, i.e. scikit-learn's
    ``average_precision_score`` column by column.
    """
    t, s = _multilabel(targets, scores)
    positives = t.sum(axis=0)
    # AP of a class = its column ranked over clips: the row-wise ranking helper on the transpose.
    sums = _precision_sums(np.ascontiguousarray(t.T), np.ascontiguousarray(s.T), axis=1)
    return np.divide(sums, positives, out=np.full(t.shape[1], np.nan), where=positives > 0)


def mean_average_precision(targets: Any, scores: Any) -> float:
    """Standard (AudioSet-style) mAP: mean class AP over the classes that have positives.

    Classes without a positive clip are excluded, not counted as 0.
    """
    return _nanmean(average_precision_per_class(targets, scores))


# --- multi-label: decisions (threshold) ------------------------------------------------------------
def map_per_example(targets: Any, scores: Any, threshold: float = 0.5) -> float:
    """The per-clip "mAP" of J. Darna Sequeiros, "Redes neuronales profundas para reconocimiento de eventos
    acústicos" (bachelor's thesis, Universidad Autónoma de Madrid, 2018), on AudioSet embeddings (``mavprN``).

    Its definition: AP = sum_i p_i t_i / sum_j (p_j + t_j), with "+" the component-wise boolean OR,
    one value per clip, mAP = their mean. Its evaluation script (``cargarModelo.py``, which produced the
    thesis's result tables) applies it to rounded outputs: ``p = round(score)``. Each clip's
    value is therefore |predicted ∩ true| / |predicted ∪ true| (a per-clip Jaccard index),
    not a ranking AP, and is not comparable with Google's 0.314 (the thesis admits the formula may differ).
    Our readings where the thesis is silent: decisions are ``score > threshold`` (= round for
    scores in [0, 1]; use ``threshold=0.0`` for its bipolar ±1 outputs, whose
    ``mavprbip`` rounds (score + 1) / 2); a clip with nothing true and nothing predicted is 0/0
    in its code (its result would be nan) and is left out of the mean here.
    """
    t, s = _multilabel(targets, scores)
    predicted = binarize(s, threshold)
    union = (predicted | t).sum(axis=1)
    overlap = (predicted & t).sum(axis=1)
    defined = union > 0
    return float(np.mean(overlap[defined] / union[defined])) if defined.any() else float("nan")


def psr(targets: Any, scores: Any, threshold: float = 0.5) -> float:
    """pSR, the "proportion of recognised sounds" of Darna Sequeiros (2018) (his ``sonrec``).

    pSR = sum_ij p_ij t_ij / sum_kl t_kl over the whole set: the micro-averaged recall of the
    present labels, with p the rounded outputs (``score > threshold``, see ``map_per_example``).
    His Keras training metric averaged this per batch; his evaluation script
    (``cargarModelo.py``) computes it once over the set, as here. nan when no label is present.
    """
    t, s = _multilabel(targets, scores)
    present = t.sum()
    return float((t & binarize(s, threshold)).sum() / present) if present else float("nan")


def multilabel_micro_f1(targets: Any, scores: Any, threshold: float = 0.5) -> float:
    """F1 of all (clip, class) decisions ``score > threshold`` pooled together; nan if nothing is positive."""
    t, s = _multilabel(targets, scores)
    predicted = binarize(s, threshold)
    tp = (predicted & t).sum()
    denominator = predicted.sum() + t.sum()  # = 2 tp + fp + fn
    return float(2 * tp / denominator) if denominator else float("nan")


def multilabel_decision_counts(targets: Any, scores: Any, threshold: Any = 0.5) -> tuple[np.ndarray, ...]:
    """Per class: true positives, predicted positives and actual positives of ``score > threshold``."""
    t, s = _multilabel(targets, scores)
    predicted = binarize(s, threshold)
    return (predicted & t).sum(axis=0), predicted.sum(axis=0), t.sum(axis=0)


def multilabel_per_class_f1(targets: Any, scores: Any, threshold: Any = 0.5) -> dict[str, np.ndarray]:
    """(C,) F1, precision and recall of each class's decisions; nan where undefined (0/0)."""
    tp, predicted, actual = (x.astype(np.float64) for x in multilabel_decision_counts(targets, scores, threshold))
    nan = np.full(len(tp), np.nan)
    return {"F1": np.divide(2 * tp, predicted + actual, out=nan.copy(), where=predicted + actual > 0),
            "precision": np.divide(tp, predicted, out=nan.copy(), where=predicted > 0),
            "recall": np.divide(tp, actual, out=nan.copy(), where=actual > 0)}


def multilabel_macro_f1(targets: Any, scores: Any, threshold: Any = 0.5) -> float:
    """Mean per-class F1 of ``score > threshold``, over classes with a positive target or prediction.

    A class with neither has no defined F1 and is left out (scikit-learn: ``zero_division=nan``).
    """
    return _nanmean(multilabel_per_class_f1(targets, scores, threshold)["F1"])


# --- calibration ---------------------------------------------------------------------------------------
ECE_BINS = 15


def reliability_bins(confidence: Any, correct: Any, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per bin of equal width over [0, 1], right-closed ((m-1)/M, m/M] as in Guo et al. (2017, "On calibration of
    modern neural networks"; 0 falls in the first): item count, mean confidence and accuracy (nan where empty).
    The reliability diagram's data and the ECE's."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)

    def mean(values: np.ndarray) -> np.ndarray:
        sums = np.bincount(bins, weights=values, minlength=n_bins)
        return np.divide(sums, counts, out=np.full(n_bins, np.nan), where=counts > 0)

    return {"count": counts, "confidence": mean(confidence), "accuracy": mean(correct),
            "edges": np.linspace(0.0, 1.0, n_bins + 1)}


def calibration_points(task: str, targets: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """The (confidence, correct) pairs a task's calibration is measured on. Single-label: top-label (the top
    probability, and whether the top class is the true one). Multi-label: every (clip, class) probability is one
    binary forecast, correct when that label is present (a pooled class-wise ECE: a multi-label clip has no
    single top decision)."""
    if task == "single_label":
        y, pred, _ = _labels_and_predictions(targets, probs)
        return _probabilities(probs, len(y)).max(axis=1), pred == y
    t, s = _multilabel(targets, probs)
    return s.ravel(), t.ravel()


def _calibration_error(task: str, targets: Any, probs: Any, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error (Naeini et al. 2015): sum over bins of (share of items in the bin) x |accuracy -
    mean confidence| there; nan without items."""
    confidence, correct = calibration_points(task, targets, probs)
    if not len(confidence):
        return float("nan")
    bins = reliability_bins(confidence, correct, n_bins)
    return float(np.nansum(bins["count"] * np.abs(bins["accuracy"] - bins["confidence"])) / len(confidence))


def expected_calibration_error(y_true: Any, probs: Any, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE of single-label probabilities (see :func:`calibration_points`)."""
    return _calibration_error("single_label", y_true, probs, n_bins)


def multilabel_calibration_error(targets: Any, scores: Any, n_bins: int = ECE_BINS) -> float:
    """Pooled ECE of multi-label probabilities (see :func:`calibration_points`)."""
    return _calibration_error("multi_label", targets, scores, n_bins)


# --- groups and the logged summary -----------------------------------------------------------------
def per_group(metric_fn: Callable[..., float], groups: Sequence[Any], *arrays: Any) -> dict[str, float]:
    """``metric_fn(*arrays)`` on the items of each group value, e.g. per recording device.

    ``groups`` holds one value per item (first axis of every array); keys are ``str(value)``
    in sorted order.
    """
    values = np.array([str(g) for g in groups], dtype=object)
    arrays_np = [_as_numpy(a) for a in arrays]
    for i, array in enumerate(arrays_np):
        if len(array) != len(values):
            raise DataError(f"per_group: array {i} has {len(array)} items but groups has {len(values)}")
    results = {}
    for value in sorted(set(values)):
        mask = values == value
        results[value] = float(metric_fn(*[a[mask] for a in arrays_np]))
    return results


# --- the one table of metric specs --------------------------------------------------------------
@dataclass(frozen=True)
class MetricSpec:
    """What every part of the tool needs to know about a metric: how to compute it, for which task, which
    way is better (early stopping, plateau schedules, quantization drops), whether it is also reported per
    group (device, speaker ...), and whether it is a headline number (stage tables). The table's order is
    the order reports list metrics in."""

    name: str
    # None: a name the training loop logs itself (the loss); a mapping: one function per task (same name, e.g.
    # macro_f1 of single-label argmax and of multi-label thresholded decisions)
    fn: Callable[[Any, Any], float] | Mapping[str, Callable[[Any, Any], float]] | None
    task: str | None  # None: every task
    higher_is_better: bool
    per_group: bool = False
    headline: bool = False
    decides: bool = False  # multi-label: computed from thresholded decisions (takes the run's thresholds)

    def function(self, task: str) -> Callable[[Any, Any], float] | None:
        return self.fn.get(task) if isinstance(self.fn, Mapping) else self.fn


METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("accuracy", accuracy, "single_label", True, per_group=True, headline=True),
    MetricSpec("balanced_accuracy", balanced_accuracy, "single_label", True),
    MetricSpec("macro_f1", {"single_label": macro_f1, "multi_label": multilabel_macro_f1}, None, True, decides=True),
    MetricSpec("log_loss", log_loss, "single_label", False, per_group=True, headline=True),
    MetricSpec("lwlrap", lwlrap, "multi_label", True, per_group=True, headline=True),
    MetricSpec("mAP", mean_average_precision, "multi_label", True, per_group=True, headline=True),
    MetricSpec("mAP_per_example", map_per_example, "multi_label", True, decides=True),
    MetricSpec("pSR", psr, "multi_label", True, decides=True),
    MetricSpec("lrap", label_ranking_ap, "multi_label", True),
    MetricSpec("micro_f1", multilabel_micro_f1, "multi_label", True, decides=True),
    MetricSpec("ece", {"single_label": expected_calibration_error, "multi_label": multilabel_calibration_error}, None,
               False),
    MetricSpec("loss", None, None, False),
)}
# Names outside the table that are lower-is-better: other losses (task_loss, kd_loss ...) by their suffix,
# and the usual error measures a user may log or monitor.
_LOWER_IS_BETTER = {"error", "error_rate", "eer", "mse", "mae"}


def _specs(task: str) -> list[MetricSpec]:
    check_task(task)
    return [spec for spec in METRICS.values() if spec.task in (task, None) and spec.function(task) is not None]


def check_monitor(name: str, task: str) -> None:
    """:class:`ConfigError` unless ``name`` is a metric validation reports for ``task`` (or a per-group one,
    ``metric/column=value``, checked when it is first reported)."""
    if "/" in str(name):
        return
    valid = [spec.name for spec in _specs(task)] + ["loss"]
    if name not in valid:
        raise ConfigError(f"train.monitor={name}: not a validation metric of a {task.replace('_', '-')} task; "
                          f"available: {', '.join(valid)}")


def higher_is_better(metric_name: str) -> bool:
    """Which way ``metric_name`` improves (a split prefix such as ``val/`` is ignored): from the table,
    else False for anything named ``*loss`` and the error measures, True for every other score."""
    name = str(metric_name).rsplit("/", 1)[-1]
    if name in METRICS:
        return METRICS[name].higher_is_better
    low = name.lower()
    return not (low.endswith("loss") or low in _LOWER_IS_BETTER)


def primary_metric(task: str) -> str:
    """The metric a task is judged (and early-stopped) on: accuracy or lwlrap."""
    check_task(task)
    return "accuracy" if task == "single_label" else "lwlrap"


def ordered_metric_names(names: Iterable[str]) -> list[str]:
    """Plain metric names (no ``/``) in the table's order, then any others alphabetically."""
    plain = {n for n in names if "/" not in n}
    return [n for n in METRICS if n in plain] + sorted(plain - set(METRICS))


def shown_metric_names(columns: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The metric rows of a table whose columns are ``columns`` (split -> metrics): in the table's order, and
    without ``loss`` where it repeats ``log_loss`` (a cross-entropy model's loss is the log loss)."""
    names = ordered_metric_names({n for values in columns.values() for n in values})
    if "loss" in names and "log_loss" in names and all(
            values.get("loss") is None or np.isclose(values.get("loss"), values.get("log_loss", np.nan))
            for values in columns.values()):
        names.remove("loss")
    return names


def headline_metrics(names: Iterable[str]) -> list[str]:
    """The headline metrics among ``names`` (log loss, accuracy, lwlrap, mAP), in the table's order."""
    present = set(names)
    return [n for n, spec in METRICS.items() if spec.headline and n in present]


def _key_part(value: Any) -> str:
    # Logged keys are split on "/" (per_group/<group>/<value>/<metric>); keep values from adding parts.
    return str(value).replace("/", "_")


def compute_metrics(
    task: str,
    targets: Any,
    probs: Any,
    groups: Mapping[str, Sequence[Any]] | None = None,
    class_names: Sequence[str] | None = None,
    thresholds: Any = None,
) -> dict[str, float]:
    """Flat ``{name: float}`` of the task's metrics, plus ``per_group/<group>/<value>/<metric>``.

    single_label: accuracy, balanced_accuracy, macro_f1, log_loss, ece (per group: accuracy, log_loss).
    multi_label: lwlrap, mAP, macro_f1, ece, mAP_per_example, pSR, lrap, micro_f1 (per group: lwlrap, mAP); the
    decision metrics (``decides``) at ``thresholds`` ((C,) per class, as a run chose them; None: 0.5).
    ``class_names`` (optional) is checked against the number of columns of ``probs``.
    """
    specs = _specs(task)
    targets, probs = _as_numpy(targets), _as_numpy(probs)
    if class_names is not None and (probs.ndim != 2 or probs.shape[1] != len(class_names)):
        raise DataError(f"probs: expected {len(class_names)} columns (one per class name), got shape {probs.shape}")

    def fn(spec: MetricSpec) -> Callable[[Any, Any], float]:
        if thresholds is not None and spec.decides and task == "multi_label":
            return lambda t, p: spec.function(task)(t, p, np.asarray(thresholds, dtype=np.float64))
        return spec.function(task)

    values = {spec.name: float(fn(spec)(targets, probs)) for spec in specs}
    for group_name, group_values in (groups or {}).items():
        for spec in (s for s in specs if s.per_group):
            for value, result in per_group(fn(spec), group_values, targets, probs).items():
                values[f"per_group/{_key_part(group_name)}/{_key_part(value)}/{spec.name}"] = result
    return values


def per_class_metrics(task: str, targets: Any, probs: Any, class_names: Sequence[str],
                      thresholds: Any = None) -> dict[str, float]:
    """``per_class/<class>/<metric>``: accuracy (recall) per class, or AP, lwlrap, and the F1, precision and recall
    of the decisions at ``thresholds`` (None: 0.5) per class."""
    check_task(task)
    probs = _as_numpy(probs)
    if probs.ndim != 2 or probs.shape[1] != len(class_names):
        raise DataError(f"probs: expected {len(class_names)} columns (one per class name), got shape {probs.shape}")
    if task == "single_label":
        columns = {"accuracy": per_class_accuracy(targets, probs)}
    else:
        columns = {"AP": average_precision_per_class(targets, probs), "lwlrap": lwlrap_per_class(targets, probs)[0],
                   **multilabel_per_class_f1(targets, probs, 0.5 if thresholds is None else thresholds)}
    return {f"per_class/{_key_part(name)}/{metric}": float(column[i])
            for metric, column in columns.items() for i, name in enumerate(class_names)}
