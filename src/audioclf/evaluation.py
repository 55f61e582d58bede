"""Evaluate trained runs on data, alone or as an ensemble (probabilities averaged)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from .config import config_from_dict
from .data.dataset import Skipped
from .data.importers import load_manifest
from .data.manifest import Manifest
from .errors import ConfigError, DataError
from .data.prepare import make_dataset, prepare_data
from .experiment import evaluate_split, resolve_device
from .models.classifier import AudioClassifier
from .runs import RunDir


@dataclass
class RunOutputs:
    """One run's outputs on a set of items (in manifest order, skipped files removed)."""

    manifest: Manifest
    probs: np.ndarray
    targets: np.ndarray
    metrics: dict[str, float]
    skipped: list[Skipped]
    task: str
    classes: list[str]


def run_outputs(run_dir: str | Path, data: str | None = None, split: str | None = None, which: str = "best",
                strict: bool = False, device: str = "auto") -> RunOutputs:
    """Predict with a run on its own split (default: test) or on every item of ``data``.

    Uses the same decoding and eval crop as training, so a run evaluated on its own test split gives the
    test metrics in its summary.json. Labels in ``data`` must be among the run's classes.
    """
    run = RunDir(run_dir).require()
    state = run.load_checkpoint(which)
    cfg = config_from_dict(state["config"])
    classes, task = state["classes"], state["task"]
    if data is None:
        manifest = Manifest.from_csv(run.manifest)
        split = split or "test"
    else:
        manifest = load_manifest(data, classes=classes)
    if split is not None:
        manifest = manifest.filter(lambda item: item.split == split)
    if len(manifest) == 0:
        raise DataError(f"nothing to evaluate: no items{f' in split {split!r}' if split else ''}")
    cfg.data.strict = strict
    cfg.data.split = "given"
    # Everything in the chosen set is evaluated: mark it "test" for the shared machinery.
    manifest = Manifest([dataclasses.replace(item, split="test") for item in manifest], classes=classes, task=task)
    prepared = prepare_data(cfg, manifest, progress=False)
    torch_device = resolve_device(device)
    model = AudioClassifier.from_spec(state["spec"]).to(torch_device)
    model.load_state_dict(state["model"])
    dataset = make_dataset(prepared, "test", classes, task, cfg, train=False)
    subset = prepared.split("test")
    values, probs, targets = evaluate_split(model, dataset, subset, task, classes, torch_device,
                                            cfg.train.batch_size, amp=False)
    return RunOutputs(subset, probs, targets, values, prepared.skipped, task, classes)


def evaluate_run(run_dir: str | Path, data: str | None = None, split: str | None = None, which: str = "best",
                 strict: bool = False, device: str = "auto") -> dict[str, Any]:
    """Metrics of one run (see :func:`run_outputs`), plus the confusion matrix for single-label."""
    if RunDir(run_dir).require().load_checkpoint(which).get("input_kind") == "embeddings":
        from .embeddings_run import evaluate_embeddings_run

        return evaluate_embeddings_run(run_dir, data=data, which=which, device=device)
    out = run_outputs(run_dir, data, split, which, strict, device)
    result = {"task": out.task, "classes": out.classes, "n_items": len(out.manifest), "metrics": out.metrics,
              "skipped": [s.to_dict() for s in out.skipped]}
    if out.task == "single_label":
        result["confusion"] = M.confusion_matrix(out.targets, out.probs.argmax(1), len(out.classes)).tolist()
    return result


def ensemble_runs(run_dirs: list[str | Path], data: str | None = None, split: str | None = None,
                  weights: list[float] | None = None, device: str = "auto") -> dict[str, Any]:
    """Average the members' probabilities (MISSION S1: average ensemble) on the same items.

    Without ``data`` the first run's split (default test) is used for every member. Items a member could
    not read are left out for all, so every number compares the same items.
    """
    if len(run_dirs) < 2:
        raise ConfigError("an ensemble needs at least two run directories")
    weights = list(weights) if weights is not None else [1.0] * len(run_dirs)
    if len(weights) != len(run_dirs) or min(weights) < 0 or sum(weights) <= 0:
        raise ConfigError(f"ensemble weights {weights}: expected {len(run_dirs)} non-negative numbers")
    if data is None:
        split = split or "test"
        first = RunDir(run_dirs[0]).require()
        data = str(first.manifest)
    outputs = [run_outputs(r, data, split, device=device) for r in run_dirs]
    task, classes = outputs[0].task, outputs[0].classes
    for run_dir, out in zip(run_dirs, outputs):
        if out.task != task or out.classes != classes:
            raise ConfigError(f"{run_dir}: its classes/task differ from {run_dirs[0]}; ensembles need the same classes")
    common = set.intersection(*({item.id for item in out.manifest} for out in outputs))
    aligned = []
    for out in outputs:
        keep = [i for i, item in enumerate(out.manifest) if item.id in common]
        order = np.argsort([out.manifest[i].id for i in keep])
        aligned.append((out.probs[keep][order], out.targets[keep][order], [out.manifest[keep[j]] for j in order]))
    items = aligned[0][2]
    targets = aligned[0][1]
    groups = {name: [item.groups.get(name, "") for item in items] for name in outputs[0].manifest.group_names} or None
    members = {}
    for run_dir, (probs, _, _) in zip(run_dirs, aligned):
        members[str(run_dir)] = M.compute_metrics(task, targets, probs, groups=groups, class_names=classes)
    total = sum(weights)
    mean = sum(w * probs for w, (probs, _, _) in zip(weights, aligned)) / total
    ensemble = M.compute_metrics(task, targets, mean, groups=groups, class_names=classes)
    return {"task": task, "classes": classes, "n_items": len(items), "members": members, "ensemble": ensemble,
            "weights": weights}
