"""A validated ensemble of model families: the trained network, a classical member beside it, a linear probe on
a pretrained backbone's embeddings when its weights are in the cache (:mod:`audioclf.models.probe`), and the
choice among them made on the validation split.

After the network's last epoch, :func:`add_members` fits the classical member
(:mod:`audioclf.models.classical`: utterance statistics + an SVM) on the training split's windows, scores both on
every split through the same whole-file evaluation, and weighs them on validation: ``p = (1 - w) p_net + w p_cls``
with ``w = 0.5`` (the plain average) unless validation says the average falls short of the better member
(:func:`choose_member_weight`); then the better member alone. The choice, every member's validation score and
the weight go to ``members/members.json``; with the probe, the rule is :func:`choose_members` (three members: the
equal average of all, else the weakest dropped and tried again). Every later prediction (``predict``, ``serve``, ``evaluate``) reads
them through :func:`run_probabilities` / :func:`load_mix`.

The SVM's C is chosen by cross-validation inside the training split that keeps groups (speakers, devices) apart
when the data has a group column, and files apart otherwise: a C that suits new speakers, not the training ones.
The probe's logistic regression chooses its C on the same folds.
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
from ..files import atomic_write_text
from ..models.classical import ClassicalMember, StoredMember, UtteranceStatistics, classical_available
from ..models.pretrained import download
from ..models.probe import (ABSENT_LOGIT, AUTO_PROBES, PROBE_BACKBONES, ProbeClassifier, ProbeFrontEnd, ProbeMember,
                            cached_probe_path, load_probe_backbone, probe_onnx)
from ..runs import RunDir
from .evaluate import Probabilities, SplitResult, score, window_batches

__all__ = ["ENSEMBLE_CHOICES", "MemberMix", "add_members", "check_ensemble", "check_probe", "choose_member_weight",
           "choose_members", "drop_members", "load_mix", "read_members", "resolve_ensemble", "resolve_probe",
           "run_probabilities"]

log = logging.getLogger(__name__)

ENSEMBLE_CHOICES = ("auto", "classical", "none")  # "none", not "off": YAML reads off as false
MEMBERS_DIR = "members"
MAX_TRAIN_WINDOWS = 6000  # an RBF SVM's fit grows with the square of its items: a few seconds at this size
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
# The probe's inverse regularisation: embeddings have hundreds of dimensions and a few hundred training windows,
# so the grid reaches well below scikit-learn's default of 1.
PROBE_C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
MEMBER_FILES = {"classical": "classical.onnx", "probe": "probe.onnx"}


def check_ensemble(value: str) -> None:
    if value not in ENSEMBLE_CHOICES:
        raise ConfigError(f"train.ensemble={value!r}: expected {' | '.join(ENSEMBLE_CHOICES)}")


def check_probe(value: str, download: bool = False) -> None:
    """A valid ``train.probe``; a named backbone's checkpoint must be in the weights cache unless ``download``
    (checked before a run folder is claimed, so a missing file leaves nothing behind)."""
    if value not in ("auto", "none") and value not in PROBE_BACKBONES:
        raise ConfigError(f"train.probe={value!r}: expected auto | none | {' | '.join(PROBE_BACKBONES)}")
    if value in ("auto", "none") or download:
        return
    checkpoint, path = cached_probe_path(value)
    if not path.is_file():
        raise ConfigError(f"train.probe={value}: {path} not found; put {checkpoint.filename} there by hand (from "
                          f"{checkpoint.url}), or set train.probe_download=true to download it once")


def resolve_ensemble(cfg: Config, user: Config, input_kind: str, task: str) -> str:
    """``classical`` or ``none``. ``auto`` adds the classical member where zero-config chose the model (no
    ``model.name`` given: a recipe or a named model trains that model alone, as it says) for single-label audio.
    A probe named in ``train.probe`` asks for the ensemble as ``classical`` does."""
    check_ensemble(cfg.train.ensemble)
    check_probe(cfg.train.probe, download=True)  # the name only: whether its file is there is resolve_probe's
    probe_named = cfg.train.probe not in ("auto", "none")
    if cfg.train.ensemble == "none":
        if probe_named:
            raise ConfigError(f"train.probe={cfg.train.probe}: the probe is an ensemble member, and "
                              "train.ensemble=none; set train.ensemble=auto or train.probe=none")
        return "none"
    why_not = None if input_kind == "audio" else f"the inputs are {input_kind}, not audio"
    if why_not is None and task != "single_label":
        why_not = "the classical member is single-label only"
    missing = classical_available() if why_not is None else None
    if cfg.train.ensemble == "classical" or probe_named:
        if why_not or missing:
            asked = "train.ensemble=classical" if cfg.train.ensemble == "classical" else f"train.probe={cfg.train.probe}"
            raise ConfigError(f"{asked}: {why_not or missing}")
        return "classical"
    if user.model.get("name") is not None or why_not is not None:
        return "none"
    if missing is not None:
        log.warning("train.ensemble=auto: the network alone; %s", missing)
        return "none"
    return "classical"


def resolve_probe(cfg: Config, ensemble: str) -> str:
    """The probe's backbone name, or ``none``. ``auto`` takes the first of :data:`AUTO_PROBES` whose checkpoint is
    in the weights cache and loads (a file that fails its checksum or does not load: one warning naming it, and
    the next is tried); it never downloads. A named backbone must be there (or ``train.probe_download``)."""
    if ensemble == "none" or cfg.train.probe == "none":
        return "none"
    if cfg.train.probe == "auto":
        for name in AUTO_PROBES:
            checkpoint, path = cached_probe_path(name)
            if not path.is_file():
                continue
            problem = checkpoint.check(path)
            try:
                if problem is not None:
                    raise ConfigError(f"not the published checkpoint ({problem})")
                load_probe_backbone(name, path)
            except ConfigError as exc:
                log.warning("train.probe=auto: %s: skipped, no %s probe (%s); delete the file or replace it with "
                            "the published one", path, name, exc)
                continue
            return name
        return "none"
    name = cfg.train.probe
    check_probe(name, cfg.train.probe_download)
    checkpoint, path = cached_probe_path(name)
    if not path.is_file():
        download(checkpoint, path)
    problem = checkpoint.check(path)
    if problem is not None:
        raise ConfigError(f"train.probe={name}: {path} is not the published checkpoint ({problem}); delete it to "
                          "download again")
    load_probe_backbone(name, path)
    return name


@dataclass
class MemberMix:
    """The run's chosen predictor: the network's probabilities weighted ``1 - weight - probe_weight``, the
    classical member's ``weight`` and the probe's ``probe_weight`` (0: that member is not used, nothing loaded)."""

    classical: ClassicalMember | None
    weight: float
    chosen: str
    probe: ProbeMember | None = None
    probe_weight: float = 0.0

    def __call__(self, net_probs: Probabilities) -> Probabilities:
        parts = [(member.probabilities, w) for member, w in ((self.classical, self.weight),
                                                             (self.probe, self.probe_weight)) if member and w]
        if not parts:
            return net_probs
        net_weight = 1 - sum(w for _, w in parts)
        if net_weight > 1e-9:  # a member kept alone, or without the network, never runs the network
            parts.append((net_probs, net_weight))

        def mixed(windows) -> np.ndarray:
            if len(parts) == 1:
                return parts[0][0](windows)
            return sum(w * np.asarray(probs(windows), dtype=np.float64) for probs, w in parts)

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
    weights = (info or {}).get("weights", {})
    if info is None or not any(weights.get(name) for name in MEMBER_FILES):
        return MemberMix(None, 0.0, "network")
    loaded: dict[str, StoredMember | None] = {
        name: member_type.load(Path(run_dir) / MEMBERS_DIR / MEMBER_FILES[name], info) if weights.get(name) else None
        for name, member_type in (("classical", ClassicalMember), ("probe", ProbeMember))}
    return MemberMix(loaded["classical"], float(weights.get("classical") or 0.0), info["chosen"], loaded["probe"],
                     float(weights.get("probe") or 0.0))


def run_probabilities(run_dir: str | Path, net_probs: Probabilities) -> Probabilities:
    """The run's chosen predictor as a probability function over window batches (see :class:`MemberMix`)."""
    return load_mix(run_dir)(net_probs)


def add_members(run: RunDir, inputs, results: dict[str, SplitResult], monitor: str, loss: str, seed: int,
                message: Callable[[str], None] | None = None, probe: str = "none"
                ) -> tuple[dict[str, SplitResult], dict[str, Any]]:
    """Fit the classical member (and the probe on backbone ``probe`` unless ``none``), choose on validation, save
    ``members/`` and return the chosen predictor's results per split and the summary's ``members`` entry (see
    the module's docstring)."""
    started = time.perf_counter()
    task, classes = inputs.task, list(inputs.classes)
    fitted: dict[str, tuple[StoredMember, dict[str, Any]]] = {}
    not_fitted: dict[str, str] = {}
    for name, fit_member in (("classical", lambda: _fit_classical(inputs, seed)),
                             ("probe", lambda: _fit_probe(inputs, seed, probe))):
        if name == "probe" and probe == "none":
            continue
        member, fit = fit_member()
        if member is None:
            not_fitted[name] = fit["why"]
        else:
            fitted[name] = (member, fit)
    if not fitted:
        entry = {"members": [], "chosen": "network", "weights": {"network": 1.0, "classical": 0.0},
                 "why": "; ".join(not_fitted.values())}
        drop_members(run.root)
        if message is not None:
            message(f"members: the network alone; the classical member was not fitted: {not_fitted['classical']}")
        return results, entry
    theirs = {name: {split: inputs.evaluate(member.probabilities, split, loss) for split in results}
              for name, (member, _) in fitted.items()}
    theirs = {name: {split: r for split, r in by_split.items() if r is not None} for name, by_split in theirs.items()}
    val_net = results.get("val")
    entry: dict[str, Any] = {"decided_on": "accuracy", "members": [],
                             "weights": {"network": 1.0, **{name: 0.0 for name in fitted}}, "chosen": "network"}
    weights = {"network": 1.0}
    if val_net is None or any("val" not in by_split for by_split in theirs.values()):
        entry["why"] = "no validation split to choose on: the network alone"
    elif list(fitted) == ["classical"]:  # two members: the rule and the entry as before the probe
        choice = choose_member_weight(val_net.targets, val_net.probs, theirs["classical"]["val"].probs)
        weight = choice.pop("weight")
        weights = {"network": 1 - weight, "classical": weight}
        entry.update(weights={"network": round(1 - weight, 2), "classical": weight}, **choice)
    else:
        choice = choose_members(val_net.targets, {"network": val_net.probs,
                                                  **{name: by_split["val"].probs for name, by_split in theirs.items()}})
        weights = choice["weights"]
        entry.update(choice)
    if "scores" in entry:
        entry["members"] = [{"name": "network", "val_score": entry["scores"]["network"]}] + [
            {"name": name, "val_score": entry["scores"][name], **fit} for name, (_, fit) in fitted.items()]
    if not_fitted:
        entry["not_fitted"] = not_fitted
    name = monitor if monitor in (val_net.metrics if val_net is not None else {}) else "accuracy"
    entry["monitor"] = name
    for member_name, by_split in theirs.items():  # every member's score on every split: the report's table
        for split, result in by_split.items():
            (entry.setdefault("per_split", {}).setdefault(member_name, {}))[split] = result.metrics.get(name)
            entry["per_split"].setdefault("network", {})[split] = results[split].metrics.get(name)
    entry.update(sample_rate=inputs.prepared.sample_rate, n_classes=len(classes), classes=classes,
                 features=UtteranceStatistics.__name__, seconds=round(time.perf_counter() - started, 1))
    if "probe" in fitted:
        entry["probe"] = {"backbone": probe, "checkpoint": cached_probe_path(probe)[0].filename}
    drop_members(run.root)  # a member of an earlier fit (a resumed run) must not stay beside this choice
    for member_name, (member, _) in fitted.items():
        member.save(run.root / MEMBERS_DIR / MEMBER_FILES[member_name])
    members_file(run.root).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(members_file(run.root), json.dumps(entry, indent=2) + "\n")
    if message is not None:
        message(describe_members(entry))
    if weights.get("network", 0.0) >= 1.0:
        return results, entry
    kept = {member_name: w for member_name, w in weights.items() if w}
    mixed = {}
    for split in results:
        parts = {member_name: (results[split] if member_name == "network" else theirs[member_name].get(split))
                 for member_name in kept}
        if all(part is not None for part in parts.values()):
            mixed[split] = _mixed(task, classes, parts, kept, inputs.scored_groups(split), loss)
    return {**results, **mixed}, entry


def choose_members(targets: np.ndarray, probs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Weights for any number of members from validation accuracy: the equal average of all members unless it
    scores below the best single member by more than that member's standard error (sqrt(p(1 - p) / n)); then the
    weakest member is dropped (the later one on a tie) and the average of the rest is tried, down to the best
    member alone. With two members this is :func:`choose_member_weight`'s rule (why equal weights: there).

    Returns ``weights`` (member -> weight, summing to 1), ``chosen`` (``ensemble`` for the average of all, a
    member's name, or the kept names joined by ``+``), ``scores`` (each member's and ``average``: that of all),
    ``tolerance``, ``tried`` (each average tried and its score) and ``why``."""
    y = np.asarray(targets).astype(int)
    names = list(probs)

    def accuracy(p: np.ndarray) -> float:
        return float((np.asarray(p).argmax(1) == y).mean())

    scores = {name: accuracy(probs[name]) for name in names}
    best = max(names, key=lambda name: scores[name])  # max keeps the first on a tie: the network
    tolerance = math.sqrt(scores[best] * (1 - scores[best]) / max(1, len(y)))
    kept, tried = list(names), []
    while len(kept) > 1:
        average = accuracy(sum(np.asarray(probs[name], dtype=np.float64) for name in kept) / len(kept))
        tried.append({"members": list(kept), "score": average})
        if average >= scores[best] - tolerance:
            break
        kept.remove(min(reversed(kept), key=lambda name: scores[name]))  # the weakest; the later one on a tie
    scores["average"] = tried[0]["score"] if tried else scores[best]
    weights = {name: (1 / len(kept) if name in kept else 0.0) for name in names}
    chosen = "ensemble" if len(kept) == len(names) else "+".join(kept)
    steps = "; ".join(f"average of {'+'.join(step['members'])} {step['score']:.3f}" for step in tried)
    why = (f"validation accuracy: {', '.join(f'{name} {scores[name]:.3f}' for name in names)}; {steps} (an average "
           f"is kept when within one standard error, {tolerance:.3f}, of the best member, else the weakest member "
           f"is dropped) -> {chosen}")
    return {"weights": weights, "chosen": chosen, "scores": scores, "tolerance": tolerance, "tried": tried,
            "why": why}


def choose_member_weight(targets: np.ndarray, net: np.ndarray, classical: np.ndarray) -> dict[str, Any]:
    """The classical member's weight from validation accuracy: 0.5 (the plain average) unless the average scores
    below the better member by more than that member's standard error (sqrt(p(1 - p) / n)); then the better
    member alone (the network on a tie). :func:`choose_members` with two members.

    Why the plain average and a tolerance, not weights fitted on validation nor "the mix must score higher":
    validation holds a few dozen clips of one or two unseen speakers or sources, where one clip moves accuracy by
    1-2 points. On ESC-10 and the instruments with held-out sources, weights fitted there cost up to 7.5 test
    points, and "higher than both" dropped averages that gained 7-9 test points; equal weights are the robust
    choice with little validation data (Clemen 1989, "Combining forecasts"; the AutoGluon lesson)."""
    choice = choose_members(targets, {"network": net, "classical": classical})
    scores, tolerance = choice["scores"], choice["tolerance"]
    weight = choice["weights"]["classical"]
    why = (f"validation accuracy: network {scores['network']:.3f}, classical {scores['classical']:.3f}, average "
           f"{scores['average']:.3f} (kept when within one standard error, {tolerance:.3f}, of the better member)")
    return {"weight": weight, "chosen": choice["chosen"], "scores": scores, "tolerance": tolerance, "why": why}


def describe_members(entry: dict[str, Any]) -> str:
    """One line for the console and the report: each member's validation score and the choice."""
    if not entry.get("members"):
        return f"members: network, classical; {entry.get('why', '')}"
    scores = entry["scores"]
    names = [member["name"] for member in entry["members"]]
    probe = entry.get("probe", {}).get("backbone")
    label = {name: (f"probe ({probe})" if name == "probe" and probe else name) for name in names}
    chosen = entry["chosen"]
    if chosen == "ensemble":
        kept = "kept the average of both" if len(names) == 2 else f"kept the average of all {len(names)}"
    elif "+" in chosen:
        kept = f"kept the average of {' and '.join(label[n] for n in chosen.split('+'))} (the average of all fell " \
               "more than one standard error short)"
    else:
        what = "the classical member" if chosen == "classical" else f"the {label[chosen]}"
        short = "the average" if len(names) == 2 else "every average"
        kept = f"kept {what} alone ({short} fell more than one standard error short)"
    each = " · ".join(f"{label[name]} {scores[name]:.3f}" for name in names)
    return f"members (val accuracy): {each} · average {scores['average']:.3f} -> {kept}"


def _mixed(task: str, classes: list[str], parts: dict[str, SplitResult], weights: dict[str, float],
           groups: dict[str, list[str]], loss: str) -> SplitResult:
    first = next(iter(parts.values()))
    if any(part.ids != first.ids for part in parts.values()):  # the same evaluation of the same files: else a bug
        raise RuntimeError("ensemble members scored different files")
    probs = sum(weights[name] * part.probs for name, part in parts.items())
    return SplitResult(score(task, first.targets, probs, classes, groups, loss), probs, first.targets, first.ids,
                       first.groups)


def _training_features(inputs, seed: int, featurize: Callable[[np.ndarray], np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, groups)``: ``featurize`` of the training split's windows (whole files cut as evaluation cuts them,
    each window labelled with its file's class; at most :data:`MAX_TRAIN_WINDOWS`, drawn with ``seed``), and each
    window's fold group (:func:`_fold_groups`)."""
    x, y, groups, _ = _training_windows(inputs, seed, featurize, MAX_TRAIN_WINDOWS)
    return x, y, groups


def _training_windows(inputs, seed: int, featurize: Callable[[np.ndarray], np.ndarray], max_windows: int | None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_training_features` plus each window's file (its index in the training split); ``max_windows``
    None keeps every window (every file then has at least one)."""
    dataset = inputs.dataset("train", train=False)
    owners, features = [], []
    for batch_owners, windows in window_batches(dataset, 64):
        owners.append(batch_owners)
        features.append(featurize(windows))
    owners_all, x = np.concatenate(owners), np.concatenate(features).astype(np.float32)
    if max_windows is not None and len(x) > max_windows:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), max_windows, replace=False))
        owners_all, x = owners_all[keep], x[keep]
    return x, dataset.targets.numpy()[owners_all], _fold_groups(inputs, owners_all), owners_all


def _grouped_c(x: np.ndarray, y: np.ndarray, groups: np.ndarray, grid: tuple[float, ...],
               make: Callable[[float], Any], max_folds: int = 3) -> tuple[float | None, dict[float, float], list]:
    """``(best C, accuracy per C, folds)`` by GroupKFold (``max_folds`` folds, fewer with fewer groups) over
    ``grid``; ``(None, {}, [])`` when there are too few groups or classes to hold any out."""
    from sklearn.model_selection import GroupKFold

    n_folds = min(max_folds, len(set(groups)))
    if n_folds < 2 or len(set(y)) < 2:
        return None, {}, []
    folds = list(GroupKFold(n_splits=n_folds).split(x, y, groups))
    c_scores: dict[float, float] = {}
    for c in grid:
        hits = []
        for fit_rows, test_rows in folds:
            if len(set(y[fit_rows])) < 2:
                continue
            model = make(c).fit(x[fit_rows], y[fit_rows])
            hits.append(np.mean(model.predict(x[test_rows]) == y[test_rows]))
        c_scores[c] = float(np.mean(hits)) if hits else 0.0
    return max(grid, key=lambda c: c_scores[c]), c_scores, folds


def _fit_classical(inputs, seed: int) -> tuple[ClassicalMember | None, dict[str, Any]]:
    """The SVM on the training split's windows (each window labelled with its file's class), C by grouped CV."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    statistics = UtteranceStatistics(inputs.prepared.sample_rate)
    x, y, groups = _training_features(inputs, seed, lambda windows: statistics(torch.from_numpy(windows)).numpy())
    best_c, c_scores, folds = _grouped_c(x, y, groups, C_GRID,
                                         lambda c: make_pipeline(StandardScaler(), SVC(C=c, gamma="scale")))
    best_c = best_c if best_c is not None else 1.0
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


def _fit_probe(inputs, seed: int, backbone_name: str) -> tuple[ProbeMember | None, dict[str, Any]]:
    """Logistic regression on the frozen backbone's embeddings of the training windows, C by the same grouped CV;
    stored as one ONNX graph (:class:`audioclf.models.probe.ProbeClassifier`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    _, path = cached_probe_path(backbone_name)
    backbone = load_probe_backbone(backbone_name, path)  # checked when the run started (resolve_probe)
    front_end = ProbeFrontEnd(backbone_name, inputs.prepared.sample_rate)
    no_head = ProbeClassifier(backbone, np.zeros(1), np.ones(1), np.zeros((1, 1)), np.zeros(1))

    def embed(windows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return no_head.embedding(front_end(windows)).numpy()

    x, y, groups = _training_features(inputs, seed, embed)
    embedded = time.perf_counter() - started

    def make(c: float):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))

    best_c, c_scores, _ = _grouped_c(x, y, groups, PROBE_C_GRID, make)
    best_c = best_c if best_c is not None else PROBE_C_GRID[len(PROBE_C_GRID) // 2]
    if len(set(y)) < 2:
        return None, {"why": "the training windows hold one class: nothing for a probe to separate"}
    pipeline = make(best_c).fit(x, y)
    scaler, regression = pipeline[0], pipeline[-1]
    weight, bias = regression.coef_, regression.intercept_
    if len(regression.classes_) == 2:  # binary: one logit w.x + b; softmax over (0, w.x + b) is its sigmoid
        weight, bias = np.concatenate([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    # Every class of the run gets a column; a class no training window had gets a logit no other can lose to.
    full_weight = np.zeros((len(inputs.classes), x.shape[1]))
    full_bias = np.full(len(inputs.classes), ABSENT_LOGIT)
    full_weight[regression.classes_] = weight
    full_bias[regression.classes_] = bias
    classifier = ProbeClassifier(backbone, scaler.mean_, scaler.scale_, full_weight, full_bias)
    example = front_end(np.zeros((1, inputs.prepared.n_samples), dtype=np.float32))
    member = ProbeMember(probe_onnx(classifier, example), backbone_name, inputs.prepared.sample_rate,
                         len(inputs.classes))
    return member, {"backbone": backbone_name, "C": best_c, "cv_accuracy": c_scores,
                    "cv_folds_by": _folds_by(inputs), "train_windows": int(len(x)), "embedding_dim": int(x.shape[1]),
                    "embedding_seconds": round(embedded, 1)}


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
