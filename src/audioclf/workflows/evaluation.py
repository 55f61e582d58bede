"""Evaluate trained runs on data, alone or as an ensemble (probabilities averaged)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import metrics as M
from ..calibration import read_decisions
from ..config import config_from_dict
from ..data.manifest import Manifest
from ..errors import ConfigError, DataError, NonFiniteOutputs
from ..models.registry import model_loss
from ..runs import RunDir, load_model
from ..training.decisions import apply_decisions, choose_decisions
from ..training.evaluate import SplitResult, model_probabilities
from ..training.members import run_probabilities
from ..training.inputs import inputs_for
from ..training.state import resolve_device

log = logging.getLogger(__name__)


@dataclass
class RunOutputs:
    """One run's outputs on a set of items (skipped files removed)."""

    result: SplitResult  # metrics, probabilities, targets, item ids and group values
    skipped: list[dict[str, str]]
    task: str
    classes: list[str]
    seen: int = 0  # evaluated files the run trained or validated on (its score there is not a test score)


def run_outputs(run_dir: str | Path, data: str | None = None, split: str | None = None, which: str = "best",
                strict: bool = False, device: str = "auto", audio_root: str | None = None) -> RunOutputs:
    """Predict with a run on its own split (default: test) or on every item of ``data``.

    The same inputs and evaluation as training (whole files as windows for audio), so a run evaluated on its
    own test split gives the test metrics in its summary.json. Labels in ``data`` must be among the run's
    classes. ``audio_root``: where the file names of a ``data`` CSV resolve (default: the CSV's folder).
    """
    torch_device = resolve_device(device)
    model, state = load_model(run_dir, which, torch_device)
    cfg = config_from_dict(state["config"])
    if data is not None:  # the training data's audio_root belongs to the training CSV, not to this one
        cfg.data.audio_root = None if audio_root is None else str(audio_root)
    elif audio_root is not None:
        raise ConfigError("audio_root applies to a CSV given as data; the run's own split has its paths")
    inputs = inputs_for(cfg)
    inputs.prepare_evaluation(RunDir(run_dir), state, data=data, split=split, strict=strict)
    probs_fn = model_probabilities(model, state["task"], torch_device)
    if which == "best":  # the run's chosen predictor: with its classical member when validation kept it
        probs_fn = run_probabilities(run_dir, probs_fn)
    try:
        result = inputs.evaluate(probs_fn, "test", model_loss(model))
    except NonFiniteOutputs as exc:  # the model, not the data, is at fault: name its file
        raise NonFiniteOutputs(f"{RunDir(run_dir).checkpoint(which)}: {exc}") from None
    if result is None:
        raise DataError(f"nothing to evaluate in {data or run_dir}: every file was skipped")
    if which == "best":  # the decisions (temperature, thresholds) chosen on the best checkpoint's validation
        classes = list(state["classes"])
        result = apply_decisions(result, read_decisions(run_dir, classes), state["task"], classes, model_loss(model))
    seen = _seen_in_training(RunDir(run_dir), inputs) if data is not None else 0
    if seen:
        log.warning("%d of the %d evaluated files were in this run's training or validation split: their score is "
                    "not a test score", seen, len(result.probs))
    return RunOutputs(result, inputs.skipped(), state["task"], list(state["classes"]), seen)


def _seen_in_training(run: RunDir, inputs) -> int:
    """How many evaluated files (links resolved) the run trained or validated on, from its manifest.csv."""
    if not run.manifest.exists() or not hasattr(inputs, "prepared"):
        return 0
    fitted = {os.path.realpath(item.path) for item in Manifest.from_csv(run.manifest) if item.split in ("train", "val")}
    return sum(os.path.realpath(item.path) in fitted for item in inputs.prepared.manifest)


def evaluate_run(run_dir: str | Path, data: str | None = None, split: str | None = None, which: str = "best",
                 strict: bool = False, device: str = "auto", audio_root: str | None = None) -> dict[str, Any]:
    """Metrics of one run (see :func:`run_outputs`), plus the confusion matrix for single-label."""
    out = run_outputs(run_dir, data, split, which, strict, device, audio_root)
    result = {"task": out.task, "classes": out.classes, "n_items": len(out.result.probs),
              "metrics": out.result.metrics, "skipped": out.skipped, "seen_in_training": out.seen}
    if out.task == "single_label":
        result["confusion"] = M.confusion_matrix(out.result.targets, out.result.probs.argmax(1),
                                                 len(out.classes)).tolist()
    return result


def ensemble_runs(run_dirs: list[str | Path], data: str | None = None, split: str | None = None,
                  weights: list[float] | None = None, device: str = "auto") -> dict[str, Any]:
    """Average the members' probabilities (an average ensemble, as FSD2019 solutions did) on the same items.

    Without ``data`` the first run's split (default test) is used for every member. Items a member could
    not read are left out for all, so every number compares the same items. Each member is scored at its own
    decisions; a multi-label average decides at thresholds chosen on the first run's validation split, averaged
    the same way, by the first run's rule (``train.threshold``) (``decisions`` in the result, as a run stores them).
    """
    if len(run_dirs) < 2:
        raise ConfigError("an ensemble needs at least two run directories")
    weights = list(weights) if weights is not None else [1.0] * len(run_dirs)
    if len(weights) != len(run_dirs) or min(weights) < 0 or sum(weights) <= 0:
        raise ConfigError(f"ensemble weights {weights}: expected {len(run_dirs)} non-negative numbers")
    first = RunDir(run_dirs[0]).require()
    own_items = str(first.manifest) if first.manifest.exists() else None  # audio runs: every member on its items
    if data is None:
        split, data = split or "test", own_items
    outputs = [run_outputs(r, data, split, device=device) for r in run_dirs]
    task, classes = outputs[0].task, outputs[0].classes
    for run_dir, out in zip(run_dirs, outputs):
        if out.task != task or out.classes != classes:
            raise ConfigError(f"{run_dir}: its classes/task differ from {run_dirs[0]}; ensembles need the same classes")
    averaged = _averaged(outputs, weights)
    # each member at its own decisions (run_outputs calibrated its probabilities; its thresholds apply to those)
    members = {str(run_dir): M.compute_metrics(task, averaged.targets, probs, groups=averaged.groups or None,
                                               class_names=classes,
                                               thresholds=read_decisions(run_dir, classes).thresholds)
               for run_dir, probs in zip(run_dirs, _aligned_probs(outputs, averaged.ids))}
    result = {"task": task, "classes": classes, "n_items": len(averaged.ids), "members": members,
              "ensemble": averaged.metrics, "weights": weights}
    if task == "multi_label":
        val = None
        try:  # the average's own validation pass: the members on the first run's validation items
            val = _averaged([run_outputs(r, own_items, "val", device=device) for r in run_dirs], weights)
        except DataError as exc:  # no validation split (or nothing readable in it): 0.5, said in the decisions
            log.warning("ensemble: no validation items to choose thresholds on (%s): 0.5 for every class", exc)
        threshold = read_decisions(run_dirs[0], classes).info.get("rule", "f1")  # the rule its thresholds came by
        scored = {"test": averaged, **({"val": val} if val is not None else {})}
        rescored, decisions = choose_decisions(task, classes, scored, calibrate=False, threshold=threshold)
        result["ensemble"], result["decisions"] = rescored["test"].metrics, decisions.to_dict(classes)
    return result


def _aligned_probs(outputs: list[RunOutputs], ids: list[str]) -> list:
    """Each member's probabilities of the items ``ids``, in that order."""
    rows = [{item_id: i for i, item_id in enumerate(out.result.ids)} for out in outputs]
    return [out.result.probs[[row[item_id] for item_id in ids]] for out, row in zip(outputs, rows)]


def _averaged(outputs: list[RunOutputs], weights: list[float]) -> SplitResult:
    """The weighted mean of the members' probabilities on the items all of them read (in one order: sorted ids),
    scored at 0.5 (multi-label: :func:`choose_decisions` rescores it at chosen thresholds)."""
    common = sorted(set.intersection(*(set(out.result.ids) for out in outputs)))
    if not common:
        raise DataError("the ensemble's members read no item in common")
    first = outputs[0]
    row = {item_id: i for i, item_id in enumerate(first.result.ids)}
    rows = [row[item_id] for item_id in common]
    targets = first.result.targets[rows]
    groups = {name: [values[i] for i in rows] for name, values in first.result.groups.items()}
    mean = sum(w * probs for w, probs in zip(weights, _aligned_probs(outputs, common))) / sum(weights)
    metrics = M.compute_metrics(first.task, targets, mean, groups=groups or None, class_names=first.classes)
    return SplitResult(metrics, mean, targets, common, groups)
