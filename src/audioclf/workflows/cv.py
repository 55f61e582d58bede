"""k-fold cross-validation: one run per fold, test metrics reported as mean ± std.

``cv=folds`` uses the manifest's ``fold`` column (ESC-50, UrbanSound8K and other predefined folds);
``cv=K`` makes K stratified folds (iterative stratification for multi-label); with ``data.group`` (or
``data.group_pattern``) a group's files stay in one fold (scikit-learn's StratifiedGroupKFold, GroupKFold
for multi-label). In each run the held-out fold is the test split and validation is carved out of the
remaining folds.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..data.manifest import Manifest
from ..data.integrity import groups_from_paths
from ..data.prepare import choose_group, group_column, import_data
from ..errors import ConfigError, DataError
from ..console import markdown_table
from ..files import atomic_write_text
from ..training.distributed import barrier, world
from ..metrics import higher_is_better, shown_metric_names
from ..ownership import mark_folder
from ..runs import RunDir, default_run_dir
from ..runs.plots import plot_folds
from ..training.trainer import train


def assign_folds(manifest: Manifest, k: int, seed: int = 0, group: str | None = None) -> list[int]:
    """Stratified fold numbers 1..k for every item; with ``group``, each group's items in one fold."""
    if k < 2 or k > len(manifest):
        raise ConfigError(f"cv={k}: expected between 2 and {len(manifest)} folds")
    n = len(manifest)
    folds = np.zeros(n, dtype=int)
    if group is not None:
        from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

        groups = manifest.group_values(group)
        if len(set(groups)) < k:
            raise ConfigError(f"cv={k}: only {len(set(groups))} values of group '{group}'; use fewer folds")
        if manifest.task == "multi_label":
            parts = GroupKFold(n_splits=k).split(np.zeros(n), groups=groups)
        else:
            parts = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
                np.zeros(n), manifest.label_indices(), groups)
    elif manifest.task == "multi_label":
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(n), manifest.label_matrix())
    else:
        from sklearn.model_selection import StratifiedKFold

        labels = manifest.label_indices()
        if np.bincount(labels).min() < k:
            raise ConfigError(f"cv={k}: a class has fewer than {k} items; use fewer folds")
        parts = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n), labels)
    for fold, (_, test_index) in enumerate(parts, start=1):
        folds[test_index] = fold
    return folds.tolist()


def fold_values(manifest: Manifest, cv: Any, seed: int, group: str | None = None) -> list[int]:
    """The fold of every item: from the manifest (``cv=folds``) or newly assigned (``cv=K``)."""
    if cv == "folds":
        missing = [item.id for item in manifest if item.fold is None]
        if missing:
            raise DataError(f"cv=folds: item {missing[0]} has no fold (the data needs a 'fold' column)")
        return [int(item.fold) for item in manifest]
    try:
        k = int(cv)
    except (TypeError, ValueError):
        raise ConfigError(f"cv={cv!r}: expected 'folds' (use the fold column) or a number of folds") from None
    return assign_folds(manifest, k, seed, group)


def summarize_folds(summaries: dict[int, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """mean, std (sample, ddof=1) and per-fold values of every scalar test metric."""
    names = sorted({k for s in summaries.values() for k in s["metrics"].get("test", {}) if "/" not in k})
    table = {}
    for name in names:
        values = [s["metrics"]["test"][name] for s in summaries.values() if s["metrics"]["test"].get(name) is not None]
        if values:
            table[name] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                           "folds": values}
    return table


def cross_validate(cfg: Config, resume: bool = False, reporter=None) -> Path:
    """Train one run per fold under ``cfg.out``; writes ``cv_summary.json``; returns ``cfg.out``.

    ``resume``: a fold whose run directory has a ``last.pt`` continues from it; the others start fresh.
    """
    if not cfg.data.path:
        raise ConfigError("data.path is required for cross-validation")
    manifest = import_data(cfg)
    group = group_column(cfg.data)
    if cfg.data.group_pattern:
        manifest = groups_from_paths(manifest, cfg.data.group_pattern, group)
    group = choose_group(cfg.data, manifest) or group  # zero-config: folds keep speakers apart too
    folds = fold_values(manifest, cfg.cv, cfg.seed, group)
    root = Path(cfg.out or default_run_dir(cfg.model.get("name")))
    if world().main:
        mark_folder(root, "cv")
    summaries: dict[int, dict[str, Any]] = {}
    for fold in sorted(set(folds)):
        splits = ["test" if f == fold else "train" for f in folds]
        fold_cfg = copy.deepcopy(cfg)
        fold_cfg.cv = None
        fold_cfg.out = str(root / f"fold_{fold}")
        fold_cfg.data.split = "auto"  # train/test given -> val carved out of the training folds
        # Decode each file once for all folds.
        fold_cfg.data.cache_dir = cfg.data.cache_dir or str(root / ".cache")
        resumed = resume and RunDir(fold_cfg.out).checkpoint("last").exists()
        if reporter:
            reporter.message(f"fold {fold} ({splits.count('test')} test items{', resumed' if resumed else ''})")
        run_dir = train(fold_cfg, resume=resumed, manifest=manifest.with_splits(splits), reporter=reporter)
        if world().main:  # under torchrun rank 0 alone reads the folds and writes the summary
            summaries[fold] = RunDir(run_dir).read_summary()
    if not world().main:
        barrier(world())
        return root
    result = {"cv": cfg.cv, "folds": sorted(summaries), "test": summarize_folds(summaries),
              "task": next(iter(summaries.values()))["task"]}
    atomic_write_text(root / "cv_summary.json", json.dumps(result, indent=2) + "\n")
    write_cv_report(root, result)
    barrier(world())
    return root


def write_cv_report(root: Path, result: dict[str, Any]) -> Path:
    """``<root>/report.md`` and ``plots/folds.png``: every test metric's mean ± std and its value per fold."""
    stats, folds = result["test"], result["folds"]
    names = shown_metric_names({f"fold {i}": {n: row["folds"][i] for n, row in stats.items() if i < len(row["folds"])}
                                for i in range(len(folds))})
    rows = [[name, f"{stats[name]['mean']:.4f} ± {stats[name]['std']:.4f}", *stats[name]["folds"]] for name in names]
    header = ["metric (test)", "mean ± std", *[f"fold {fold}" for fold in folds]]
    lines = [f"# Cross-validation: `{root.name}` ({len(folds)} folds)", "",
             "Each fold is tested on its held-out fold; the model of each is in `fold_<n>/`.", "",
             markdown_table(header, rows), ""]
    shown = [name for name in names if higher_is_better(name)]
    if shown:
        plot_folds(stats, root / "plots" / "folds.png", shown)
        lines += ["![test metrics per fold](plots/folds.png)", ""]
    lines += [f"- fold {fold}: [report](fold_{fold}/report.md)" for fold in folds] + [""]
    path = root / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
