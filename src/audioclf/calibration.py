"""Decisions that are chosen, not assumed: per-class thresholds, temperature scaling and abstention.

A run's *decisions* (``decisions.json`` in its folder) say how its probabilities become labels:

* ``temperature`` T: probabilities are rescaled as ``softmax(log p / T)`` (single-label) or
  ``sigmoid(logit(p) / T)`` (multi-label), which for a network alone is ``softmax(logits / T)`` /
  ``sigmoid(logits / T)``: the temperature scaling of Guo et al. (2017, "On calibration of modern neural
  networks"), one scalar fitted on the validation split by LBFGS on the negative log-likelihood. It works on
  probabilities, not logits, so it also calibrates a run whose chosen predictor mixes in its classical member.
  Single-label argmax decisions do not change; only the confidence does.
* ``thresholds`` (multi-label): class c is predicted when ``p_c > t_c`` (:func:`audioclf.metrics.binarize`,
  the one decision rule); each ``t_c`` chosen on validation (:func:`choose_thresholds`). A class without a
  positive validation item keeps 0.5, and the report says which.
* ``min_confidence`` (single-label, given at prediction time): below it the prediction is an abstention.

Everything that decides (``predict``, ``serve``, ``evaluate``, the export's metadata, the report) reads the same
:class:`Decisions`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .files import atomic_write_text
from .metrics import binarize

DECISIONS_FILE = "decisions.json"
DEFAULT_THRESHOLD = 0.5
_EPS = 1e-12  # probabilities are clipped to [eps, 1 - eps] before log / logit (a saturated 0 or 1 stays finite)


# --- the threshold rule (train.threshold) ---------------------------------------------------------------
@dataclass(frozen=True)
class ThresholdRule:
    """How each class's threshold is chosen: ``f1`` (maximise F1), ``precision`` / ``recall`` (reach ``value``
    and, among the thresholds that do, keep the best of the other), or ``fixed`` (``value`` for every class)."""

    kind: str
    value: float | None = None

    def __str__(self) -> str:
        if self.kind == "f1":
            return "f1"
        return f"{self.value:g}" if self.kind == "fixed" else f"{self.kind}={self.value:g}"


def parse_threshold_rule(text: Any) -> ThresholdRule:
    """``train.threshold`` -> :class:`ThresholdRule`; a one-line ConfigError for anything else."""
    raw = str(text).strip().lower().replace(" ", "")
    expected = "expected f1, precision=P or recall=P (0 < P <= 1), or a fixed threshold in (0, 1)"
    if raw == "f1":
        return ThresholdRule("f1")
    kind, sep, number = raw.partition("=")
    try:
        value = float(number if sep else kind)
    except ValueError:
        raise ConfigError(f"train.threshold={text!r}: {expected}") from None
    if sep and kind in ("precision", "recall") and 0 < value <= 1:
        return ThresholdRule(kind, value)
    if not sep and 0 < value < 1:
        return ThresholdRule("fixed", value)
    raise ConfigError(f"train.threshold={text!r}: {expected}")


def _cut_scores(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct decision on one class: for each candidate threshold (between consecutive distinct scores,
    so ``score > threshold`` keeps the higher ones), the true and false positives it gives."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], targets[order]
    ends = np.flatnonzero(np.r_[s[:-1] != s[1:], True])  # last index of each group of tied scores
    tp, fp = np.cumsum(t)[ends], np.cumsum(~t)[ends]
    below = np.r_[s[ends[:-1] + 1], -np.inf] if len(ends) else np.zeros(0)
    # Midway between a group's score and the next lower one; below the lowest score: just under it.
    thresholds = np.where(np.isfinite(below), (s[ends] + below) / 2, np.nextafter(s[ends], -np.inf))
    return thresholds, tp.astype(np.float64), fp.astype(np.float64)


def choose_threshold(targets: Any, scores: Any, rule: ThresholdRule) -> tuple[float, str | None]:
    """One class's threshold from its validation ``targets`` (0/1) and ``scores``, and why it fell back (None
    when the rule was met). Ties between thresholds of equal merit go to the highest one (fewer positives)."""
    t, s = np.asarray(targets, dtype=bool), np.asarray(scores, dtype=np.float64)
    if rule.kind == "fixed":
        return float(rule.value), None
    positives = int(t.sum())
    if positives == 0:
        return DEFAULT_THRESHOLD, "no positive in validation"
    thresholds, tp, fp = _cut_scores(t, s)
    precision, recall = tp / (tp + fp), tp / positives
    f1 = 2 * tp / (tp + fp + positives)
    why = None
    if rule.kind == "f1":
        merit = f1
    else:
        reached = (precision if rule.kind == "precision" else recall) >= rule.value - 1e-12
        other = recall if rule.kind == "precision" else precision
        merit = np.where(reached, other, -1.0)
        if not reached.any():  # a target validation cannot reach: the best F1 instead, said in the report
            merit, why = f1, f"{rule.kind} {rule.value:g} not reached in validation; best F1"
    return float(thresholds[int(np.argmax(merit))]), why


def choose_thresholds(targets: Any, scores: Any, classes: Sequence[str],
                      rule: ThresholdRule | str = "f1") -> tuple[np.ndarray, dict[str, str]]:
    """(C,) thresholds chosen per class on validation (see :func:`choose_threshold`) and, per class that fell
    back, why."""
    rule = rule if isinstance(rule, ThresholdRule) else parse_threshold_rule(rule)
    t, s = np.asarray(targets), np.asarray(scores, dtype=np.float64)
    if t.ndim != 2 or t.shape != s.shape or t.shape[1] != len(classes):
        raise ConfigError(f"thresholds: expected (N, {len(classes)}) targets and scores, got {t.shape} and {s.shape}")
    chosen, fallbacks = np.empty(len(classes)), {}
    for c, name in enumerate(classes):
        chosen[c], why = choose_threshold(t[:, c], s[:, c], rule)
        if why:
            fallbacks[name] = why
    return chosen, fallbacks


# --- temperature scaling -----------------------------------------------------------------------------------
def log_scores(task: str, probs: Any) -> np.ndarray:
    """What a temperature divides: log-probabilities (single-label) or logits (multi-label), from probabilities."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) if task == "single_label" else np.log(p) - np.log1p(-p)


def tempered(task: str, probs: Any, temperature: float) -> np.ndarray:
    """``probs`` rescaled by ``temperature`` (1: unchanged, as given)."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0 or probs.size == 0:
        return probs
    z = log_scores(task, probs) / temperature
    if task == "single_label":
        z -= z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # the sigmoid, stable for any sign


def fit_temperature(task: str, targets: Any, probs: Any, max_iter: int = 200) -> float:
    """The temperature minimising the negative log-likelihood of ``targets`` (class indices, or 0/1 for
    multi-label) under ``tempered(probs, T)``: LBFGS over log T (so T stays positive), from T = 1."""
    import torch  # the ground floor stays importable without torch for the rest of this module

    z = torch.as_tensor(log_scores(task, probs))
    y = torch.as_tensor(np.asarray(targets))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        scaled = z / log_t.exp()
        if task == "single_label":
            loss = torch.nn.functional.cross_entropy(scaled, y.long())
        else:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(scaled, y.double())
        loss.backward()
        return loss

    optimizer.step(nll)
    value = float(log_t.detach().exp())
    return value if math.isfinite(value) else 1.0


# --- a run's decisions -----------------------------------------------------------------------------------
@dataclass
class Decisions:
    """How probabilities become labels (see the module's docstring)."""

    temperature: float = 1.0
    thresholds: np.ndarray | None = None  # (C,), multi-label; None: 0.5 for every class
    min_confidence: float | None = None  # single-label: below it, an abstention (no label)
    info: dict[str, Any] = field(default_factory=dict)  # how they were chosen (the report's table)

    def calibrated(self, task: str, probs: Any) -> np.ndarray:
        return tempered(task, probs, self.temperature)

    def threshold_array(self, n_classes: int) -> np.ndarray:
        return np.full(n_classes, DEFAULT_THRESHOLD) if self.thresholds is None else np.asarray(self.thresholds)

    def labels(self, task: str, classes: Sequence[str], probs: Any) -> tuple[str, ...]:
        """The labels of one (calibrated) probability vector, most probable first; () is an abstention."""
        probs = np.asarray(probs, dtype=np.float64)
        if task == "single_label":
            best = int(np.argmax(probs))
            abstain = self.min_confidence is not None and probs[best] < self.min_confidence
            return () if abstain else (classes[best],)
        chosen = binarize(probs, self.threshold_array(len(classes)))
        return tuple(classes[i] for i in np.argsort(-probs, kind="stable") if chosen[i])

    def decide(self, task: str, classes: Sequence[str], probs: Any) -> tuple[tuple[str, ...], bool]:
        """:meth:`labels`, and whether they are an abstention (single-label, nothing confident enough)."""
        labels = self.labels(task, classes, probs)
        return labels, task == "single_label" and not labels

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        thresholds = None if self.thresholds is None else \
            {name: round(float(t), 6) for name, t in zip(classes, self.thresholds)}
        return {"temperature": self.temperature, "thresholds": thresholds, **self.info}

    @classmethod
    def from_dict(cls, data: dict[str, Any], classes: Sequence[str], where: str) -> "Decisions":
        """Read back (a run's file, an export's metadata): one line naming ``where`` when a value is unusable."""
        try:
            temperature = float(data.get("temperature", 1.0))
            raw = data.get("thresholds")
            thresholds = None if raw is None else np.array([float(raw[name]) for name in classes])
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ConfigError(f"{where}: unusable decisions ({type(exc).__name__}: {exc}); expected a positive "
                              "temperature and one threshold per class") from None
        if not (math.isfinite(temperature) and temperature > 0) or \
                (thresholds is not None and not np.all(np.isfinite(thresholds))):
            raise ConfigError(f"{where}: unusable decisions: temperature {temperature!r} must be positive and "
                              "every threshold finite")
        info = {k: v for k, v in data.items() if k not in ("temperature", "thresholds")}
        return cls(temperature, thresholds, None, info)


def check_min_confidence(value: float | None, task: str = "single_label") -> float | None:
    """``value`` as a probability (None: never abstain); a one-line ConfigError when it is not one, or when
    ``task`` is not single-label (a multi-label model decides each class by its threshold: ignoring the setting
    would answer as if it applied)."""
    if value is not None and task != "single_label":
        raise ConfigError(f"min_confidence={value!r}: a single-label setting; a {task.replace('_', '-')} "
                          "model decides each class by its threshold (train.threshold)")
    if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
        raise ConfigError(f"min_confidence={value!r}: expected a probability in [0, 1]")
    return None if value is None else float(value)


def write_decisions(run_dir: str | Path, decisions: Decisions, classes: Sequence[str]) -> Path:
    return atomic_write_text(Path(run_dir) / DECISIONS_FILE, json.dumps(decisions.to_dict(classes), indent=2) + "\n")


def read_decisions(run_dir: str | Path, classes: Sequence[str]) -> Decisions:
    """A run's decisions; the defaults (T = 1, thresholds 0.5) for a run trained before they were chosen."""
    path = Path(run_dir) / DECISIONS_FILE
    if not path.exists():
        return Decisions()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc}); delete it to decide at 0.5 without calibration") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return Decisions.from_dict(data, classes, str(path))
