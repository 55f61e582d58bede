"""A run's decisions chosen on its validation split (:mod:`audioclf.calibration`): the temperature
(``train.calibrate``) and, for multi-label runs, a threshold per class (``train.threshold``), and every split
rescored with them, so the summary's test F1 is the F1 of the decisions ``predict`` will make."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import metrics as M
from ..calibration import Decisions, choose_thresholds, fit_temperature, parse_threshold_rule, tempered
from ..runs.plots import plot_reliability
from .evaluate import SplitResult, score
from .losses import evaluation_loss

__all__ = ["apply_decisions", "choose_decisions", "plot_run_reliability"]


def apply_decisions(result: SplitResult, decisions: Decisions, task: str, classes: Sequence[str],
                    loss: str = "task") -> SplitResult:
    """``result`` with its probabilities calibrated and its metrics recomputed at the decisions' thresholds."""
    probs = decisions.calibrated(task, result.probs)
    thresholds = decisions.thresholds if task == "multi_label" else None
    # per group over the same columns as first scored (inputs keep only those with a few values)
    groups = {name: values for name, values in result.groups.items()
              if any(key.startswith(f"per_group/{name}/") for key in result.metrics)}
    metrics = score(task, result.targets, probs, classes, groups or None, loss, thresholds)
    return replace(result, probs=probs, metrics=metrics)


def choose_decisions(task: str, classes: Sequence[str], results: dict[str, SplitResult], calibrate: bool,
                     threshold: str, loss: str = "task") -> tuple[dict[str, SplitResult], Decisions]:
    """Fit the temperature (when ``calibrate``) and the thresholds (multi-label) on ``results["val"]`` and rescore
    every split with them. Without a validation split: T = 1 and 0.5, said in the decisions' ``info``."""
    rule = parse_threshold_rule(threshold)
    val = results.get("val")
    info: dict[str, Any] = {"chosen_on": "val" if val is not None else None, "calibrated": False}
    decisions = Decisions(info=info)
    if val is None or not len(val.probs):
        info["why"] = "no validation split: temperature 1, thresholds 0.5"
        return results, decisions
    if calibrate:
        before = val.probs
        decisions.temperature = fit_temperature(task, val.targets, before)
        after = tempered(task, before, decisions.temperature)
        # the negative log-likelihood the temperature minimised (the task's loss, recomputed)
        ece = M.METRICS["ece"].function(task)
        info.update(calibrated=True, val_nll={"before": evaluation_loss(task, before, val.targets),
                                              "after": evaluation_loss(task, after, val.targets)},
                    ece={split: {"before": ece(r.targets, r.probs),
                                 "after": ece(r.targets, decisions.calibrated(task, r.probs))}
                         for split, r in results.items() if len(r.probs)})
    if task == "multi_label":
        # chosen on the calibrated probabilities: the thresholds apply to what predict outputs
        decisions.thresholds, fallbacks = choose_thresholds(val.targets, decisions.calibrated(task, val.probs),
                                                            classes, rule)
        info.update(rule=str(rule), fallbacks=fallbacks)
    return {split: apply_decisions(result, decisions, task, classes, loss) for split, result in results.items()}, \
        decisions



def plot_run_reliability(task: str, before: dict[str, SplitResult], after: dict[str, SplitResult],
                         decisions: Decisions, plots: Path) -> Path | None:
    """``reliability.png`` of the test split (else validation): as the network gave it and, when the run was
    calibrated, after temperature scaling, with each curve's ECE."""
    split = "test" if "test" in after else "val" if "val" in after else None
    if split is None or not len(after[split].probs):
        return None
    shown = {"uncalibrated": before[split]}
    if decisions.temperature != 1.0:
        shown[f"temperature {decisions.temperature:.2f}"] = after[split]
    ece = M.METRICS["ece"].function(task)
    curves = {f"{label} (ECE {ece(r.targets, r.probs):.3f})": M.calibration_points(task, r.targets, r.probs)
              for label, r in shown.items()}
    ylabel = "accuracy (top label)" if task == "single_label" else "fraction present (every clip x class)"
    return plot_reliability(curves, plots / "reliability.png", f"Reliability ({split})", ylabel)
