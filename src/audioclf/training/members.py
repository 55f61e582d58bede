"""A validated ensemble of model families: the trained network, a classical member beside it, and the choice
between them made on the validation split.

After the network's last epoch, :func:`add_members` fits the classical member
(:mod:`audioclf.models.classical`: utterance statistics + an SVM) on the training split's windows, scores both on
every split through the same whole-file evaluation, and weighs them on validation: ``p = (1 - w) p_net + w p_cls``
with ``w = 0.5`` (the plain average) unless validation says the average falls short of the better member
(:func:`choose_member_weight`); then the better member alone. The choice, every member's validation score and
the weight go to ``members/members.json``; every later prediction (``predict``, ``serve``, ``evaluate``) reads
them through :func:`run_probabilities` / :func:`load_mix`.

The SVM's C is chosen by cross-validation inside the training split that keeps groups (speakers, devices) apart
when the data has a group column, and files apart otherwise: a C that suits new speakers, not the training ones.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import Config
from ..errors import ConfigError
from ..models.classical import ClassicalMember, UtteranceStatistics, classical_available
from ..runs import RunDir
from .evaluate import Probabilities, SplitResult, score, window_batches

__all__ = ["ENSEMBLE_CHOICES", "MemberMix", "add_members", "check_ensemble", "choose_member_weight", "drop_members",
           "load_mix", "read_members", "resolve_ensemble", "run_probabilities"]

log = logging.getLogger(__name__)

ENSEMBLE_CHOICES = ("auto", "classical", "none")  # "none", not "off": YAML reads off as false
MEMBERS_DIR = "members"
MAX_TRAIN_WINDOWS = 6000  # an RBF SVM's fit grows with the square of its items: a few seconds at this size
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)


def check_ensemble(value: str) -> None:
    if value not in ENSEMBLE_CHOICES:
        raise ConfigError(f"train.ensemble={value!r}: expected {' | '.join(ENSEMBLE_CHOICES)}")


def resolve_ensemble(cfg: Config, user: Config, input_kind: str, task: str) -> str:
    """``classical`` or ``none``. ``auto`` adds the classical member where zero-config chose the model (no
    ``model.name`` given: a recipe or a named model trains that model alone, as it says) for single-label audio."""
    check_ensemble(cfg.train.ensemble)
    if cfg.train.ensemble == "none":
        return "none"
    why_not = None if input_kind == "audio" else f"the inputs are {input_kind}, not audio"
    if why_not is None and task != "single_label":
        why_not = "the classical member is single-label only"
    missing = classical_available() if why_not is None else None
    if cfg.train.ensemble == "classical":
        if why_not or missing:
            raise ConfigError(f"train.ensemble=classical: {why_not or missing}")
        return "classical"
    if user.model.get("name") is not None or why_not is not None:
        return "none"
    if missing is not None:
        log.warning("train.ensemble=auto: the network alone; %s", missing)
        return "none"
    return "classical"


@dataclass
class MemberMix:
    """The run's chosen predictor: the network's probabilities weighted ``1 - weight``, the classical member's
    ``weight`` (0: the network alone, nothing loaded; 1: the classical member alone)."""

    classical: ClassicalMember | None
    weight: float
    chosen: str

    def __call__(self, net_probs: Probabilities) -> Probabilities:
        if self.classical is None or self.weight == 0:
            return net_probs
        classical, weight = self.classical, self.weight

        def mixed(windows) -> np.ndarray:
            other = classical.probabilities(windows)
            if weight == 1:
                return other
            return (1 - weight) * np.asarray(net_probs(windows), dtype=np.float64) + weight * other

        return mixed


def drop_members(run_dir: str | Path) -> None:
    shutil.rmtree(Path(run_dir) / MEMBERS_DIR, ignore_errors=True)


def members_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / MEMBERS_DIR / "members.json"


def read_members(run_dir: str | Path) -> dict[str, Any] | None:
    path = members_file(run_dir)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc}); delete the members folder to use the network alone") from None


def load_mix(run_dir: str | Path) -> MemberMix:
    """What :func:`add_members` chose for the run in ``run_dir`` (the network alone when it added nothing)."""
    info = read_members(run_dir)
    if info is None or not info.get("weights", {}).get("classical"):
        return MemberMix(None, 0.0, "network")
    member = ClassicalMember.load(Path(run_dir) / MEMBERS_DIR / "classical.onnx", info)
    return MemberMix(member, float(info["weights"]["classical"]), info["chosen"])


def run_probabilities(run_dir: str | Path, net_probs: Probabilities) -> Probabilities:
    """The run's chosen predictor as a probability function over window batches (see :class:`MemberMix`)."""
    return load_mix(run_dir)(net_probs)


def add_members(run: RunDir, inputs, results: dict[str, SplitResult], monitor: str, loss: str, seed: int,
                message: Callable[[str], None] | None = None) -> tuple[dict[str, SplitResult], dict[str, Any]]:
    """Fit the classical member, choose on validation, save ``members/`` and return the chosen predictor's
    results per split and the summary's ``members`` entry (see the module's docstring)."""
    started = time.perf_counter()
    task, classes = inputs.task, list(inputs.classes)
    member, fit = _fit_classical(inputs, seed)
    if member is None:
        entry = {"members": [], "chosen": "network", "weights": {"network": 1.0, "classical": 0.0}, **fit}
        drop_members(run.root)
        if message is not None:
            message(f"members: the network alone; the classical member was not fitted: {fit['why']}")
        return results, entry
    theirs = {split: inputs.evaluate(member.probabilities, split, loss) for split in results}
    theirs = {split: result for split, result in theirs.items() if result is not None}
    val_net, val_cls = results.get("val"), theirs.get("val")
    entry: dict[str, Any] = {"decided_on": "accuracy", "members": [], "weights": {"network": 1.0, "classical": 0.0},
                             "chosen": "network"}
    if val_net is None or val_cls is None:
        entry["why"] = "no validation split to choose on: the network alone"
        weight = 0.0
    else:
        choice = choose_member_weight(val_net.targets, val_net.probs, val_cls.probs)
        weight = choice.pop("weight")
        entry.update(weights={"network": round(1 - weight, 2), "classical": weight}, **choice)
        entry["members"] = [{"name": "network", "val_score": choice["scores"]["network"]},
                            {"name": "classical", "val_score": choice["scores"]["classical"], **fit}]
    name = monitor if monitor in (val_net.metrics if val_net is not None else {}) else "accuracy"
    entry["monitor"] = name
    for split, result in theirs.items():  # every member's score on every split: the report's table
        (entry.setdefault("per_split", {}).setdefault("classical", {}))[split] = result.metrics.get(name)
        entry["per_split"].setdefault("network", {})[split] = results[split].metrics.get(name)
    entry.update(sample_rate=inputs.prepared.sample_rate, n_classes=len(classes), classes=classes,
                 features=UtteranceStatistics.__name__, seconds=round(time.perf_counter() - started, 1))
    member.save(run.root / MEMBERS_DIR / "classical.onnx")
    _write_json(members_file(run.root), entry)
    if message is not None:
        message(describe_members(entry))
    if weight == 0:
        return results, entry
    mixed = {split: _mixed(task, classes, results[split], theirs[split], weight, inputs.scored_groups(split), loss)
             for split in results if split in theirs}
    return {**results, **mixed}, entry


def choose_member_weight(targets: np.ndarray, net: np.ndarray, classical: np.ndarray) -> dict[str, Any]:
    """The classical member's weight from validation accuracy: 0.5 (the plain average) unless the average scores
    below the better member by more than that member's standard error (sqrt(p(1 - p) / n)); then the better
    member alone (the network on a tie).

    Why the plain average and a tolerance, not weights fitted on validation nor "the mix must score higher":
    validation holds a few dozen clips of one or two unseen speakers or sources, where one clip moves accuracy by
    1-2 points. On ESC-10 and the instruments with held-out sources, weights fitted there cost up to 7.5 test
    points, and "higher than both" dropped averages that gained 7-9 test points; equal weights are the robust
    choice with little validation data (Clemen 1989, "Combining forecasts"; the AutoGluon lesson)."""
    y = np.asarray(targets).astype(int)

    def accuracy(probs: np.ndarray) -> float:
        return float((np.asarray(probs).argmax(1) == y).mean())

    scores = {"network": accuracy(net), "classical": accuracy(classical), "average": accuracy((net + classical) / 2)}
    best = "classical" if scores["classical"] > scores["network"] else "network"
    tolerance = math.sqrt(scores[best] * (1 - scores[best]) / max(1, len(y)))
    if scores["average"] >= scores[best] - tolerance:
        weight, chosen = 0.5, "ensemble"
    else:
        weight, chosen = (1.0, "classical") if best == "classical" else (0.0, "network")
    why = (f"validation accuracy: network {scores['network']:.3f}, classical {scores['classical']:.3f}, average "
           f"{scores['average']:.3f} (kept when within one standard error, {tolerance:.3f}, of the better member)")
    return {"weight": weight, "chosen": chosen, "scores": scores, "tolerance": tolerance, "why": why}


def describe_members(entry: dict[str, Any]) -> str:
    """One line for the console and the report: each member's validation score and the choice."""
    if not entry.get("members"):
        return f"members: network, classical; {entry.get('why', '')}"
    scores = entry["scores"]
    kept = {"ensemble": "kept the average of both",
            "classical": "kept the classical member alone (the average fell more than one standard error short)",
            "network": "kept the network alone (the average fell more than one standard error short)"}[entry["chosen"]]
    return (f"members (val accuracy): network {scores['network']:.3f} · classical {scores['classical']:.3f} · "
            f"average {scores['average']:.3f} -> {kept}")


def _mixed(task: str, classes: list[str], net: SplitResult, cls: SplitResult, weight: float,
           groups: dict[str, list[str]], loss: str) -> SplitResult:
    if net.ids != cls.ids:  # both come from the same evaluation of the same files: a mismatch is a bug
        raise RuntimeError("ensemble members scored different files")
    probs = (1 - weight) * net.probs + weight * cls.probs
    return SplitResult(score(task, net.targets, probs, classes, groups, loss), probs, net.targets, net.ids, net.groups)


def _fit_classical(inputs, seed: int) -> tuple[ClassicalMember | None, dict[str, Any]]:
    """The SVM on the training split's windows (each window labelled with its file's class), C by grouped CV."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    statistics = UtteranceStatistics(inputs.prepared.sample_rate)
    dataset = inputs.dataset("train", train=False)  # whole files as windows, as evaluation cuts them
    owners, features = [], []
    for batch_owners, windows in window_batches(dataset, 64):
        owners.append(batch_owners)
        features.append(statistics(torch.from_numpy(windows)).numpy())
    owners_all, x = np.concatenate(owners), np.concatenate(features).astype(np.float32)
    if len(x) > MAX_TRAIN_WINDOWS:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), MAX_TRAIN_WINDOWS, replace=False))
        owners_all, x = owners_all[keep], x[keep]
    y = dataset.targets.numpy()[owners_all]
    groups = _fold_groups(inputs, owners_all)
    n_folds = min(3, len(set(groups)))
    c_scores: dict[float, float] = {}
    folds = []
    if n_folds >= 2 and len(set(y)) > 1:
        folds = list(GroupKFold(n_splits=n_folds).split(x, y, groups))
        for c in C_GRID:
            hits = []
            for fit_rows, test_rows in folds:
                if len(set(y[fit_rows])) < 2:
                    continue
                model = make_pipeline(StandardScaler(), SVC(C=c, gamma="scale")).fit(x[fit_rows], y[fit_rows])
                hits.append(np.mean(model.predict(x[test_rows]) == y[test_rows]))
            c_scores[c] = float(np.mean(hits)) if hits else 0.0
    best_c = max(C_GRID, key=lambda c: c_scores.get(c, 0.0)) if c_scores else 1.0
    # Probabilities by Platt scaling on the same grouped folds (SVC(probability=True) is deprecated in
    # scikit-learn 1.9); ensemble=False: one SVM on all the windows, the sigmoid fitted on its out-of-fold scores.
    calibrated = CalibratedClassifierCV(SVC(C=best_c, gamma="scale"), method="sigmoid",
                                        cv=folds if c_scores else 2, ensemble=False)
    try:
        pipeline = make_pipeline(StandardScaler(), calibrated).fit(x, y)
    except ValueError as exc:  # too few files of a class to hold some out
        log.info("classical member not fitted: %s", exc)
        return None, {"why": f"too few training files to fit it ({str(exc).splitlines()[0]})"}
    present = sorted(set(int(v) for v in y))
    member = ClassicalMember(_to_onnx(pipeline, calibrated, x[:1], present, len(inputs.classes)),
                             inputs.prepared.sample_rate, len(inputs.classes))
    return member, {"C": best_c, "cv_accuracy": c_scores, "cv_folds_by": _folds_by(inputs),
                    "train_windows": int(len(x))}


def _fold_groups(inputs, owners: np.ndarray) -> np.ndarray:
    """Each training window's fold group: its file's speaker/device (the group column), else the file itself."""
    column = (inputs.split_groups() or {}).get("column")
    subset = inputs.prepared.split("train")
    if column is not None and column in subset.group_names:
        values = np.asarray(subset.group_values(column), dtype=object)
        if len(set(values)) >= 3:
            return values[owners].astype(str)
    return owners.astype(str)


def _folds_by(inputs) -> str:
    column = (inputs.split_groups() or {}).get("column")
    return f"group column '{column}'" if column else "file"


def _to_onnx(pipeline, svc, example: np.ndarray, present: list[int], n_classes: int) -> bytes:
    """The fitted pipeline as ONNX bytes; classes missing from the training windows get probability 0 (the SVM
    only knows the ones it saw), so the graph always answers all ``n_classes`` columns in the run's order."""
    from skl2onnx import to_onnx

    with warnings.catch_warnings():  # skl2onnx reads SVC.probA_, deprecated with probability=True (not used here)
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*prob[AB]_.*")
        model = to_onnx(pipeline, example, options={id(svc): {"zipmap": False}}, target_opset=17)
    if present != list(range(n_classes)):
        model = _scatter_classes(model, present, n_classes)
    return model.SerializeToString()


def _scatter_classes(model, present: list[int], n_classes: int):
    """Append a MatMul that places the SVM's columns (classes ``present``) into ``n_classes`` columns."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    probs = next(o for o in graph.output if "prob" in o.name)
    placement = np.zeros((len(present), n_classes), dtype=np.float32)
    placement[np.arange(len(present)), present] = 1
    graph.initializer.append(numpy_helper.from_array(placement, "class_placement"))
    graph.node.append(helper.make_node("MatMul", [probs.name, "class_placement"], ["probabilities_all"]))
    graph.output.remove(probs)
    graph.output.append(helper.make_tensor_value_info("probabilities_all", onnx.TensorProto.FLOAT, [None, n_classes]))
    return model


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    partial.replace(path)
