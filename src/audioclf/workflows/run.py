"""One entry for a run: a config in; a single run, every stage of a recipe, or every cross-validation fold out.

``audioclf.run(cfg)`` is what ``audioclf train`` calls, so a notebook gets exactly what the command line
does: stages when the recipe has them, cross-validation when ``cv`` is set, ``resume`` passed to each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, apply_overrides, config_from_dict, load_config
from ..errors import ConfigError
from ..ownership import claim_folder
from ..runs.directory import live_lock_holder
from ..training.distributed import barrier, init_distributed
from ..training.inputs import inputs_for
from ..training.trainer import Reporter, train
from .cv import cross_validate
from .search import search
from .stages import plan_stages, stages_root, train_stages

__all__ = ["RunResult", "run"]


@dataclass
class RunResult:
    """What a run produced: ``kind`` is "single", "search", "stages" or "cv"; ``runs`` the run directories in
    order (one, one per stage, one per fold); ``root`` where they are (the run itself for a single run or a
    search, whose best trial it holds)."""

    kind: str
    root: Path
    runs: list[Path]

    @property
    def cv_summary(self) -> dict[str, Any] | None:
        """Cross-validation's mean ± std table (``cv_summary.json``), or None for other kinds."""
        path = self.root / "cv_summary.json"
        return json.loads(path.read_text()) if self.kind == "cv" and path.exists() else None


def run(cfg: Config | dict[str, Any] | str | Path, resume: bool = False, reporter: Reporter | None = None,
        overrides: list[str] | None = None, overwrite: bool = False, dry_run: bool = False) -> RunResult:
    """Train what ``cfg`` describes and return where the results are.

    ``cfg``: a :class:`~audioclf.config.Config`, a plain dict of config sections, or a YAML recipe (a path or
    a bundled recipe name such as ``"demo"``); ``overrides`` are ``key=value`` strings applied on top
    (e.g. ``["data.path=clips/", "train.epochs=5"]``). ``resume`` continues an interrupted or finished run
    (every stage / fold from its own last checkpoint). ``reporter`` shows progress. An ``out`` folder that is
    not empty is refused unless ``resume`` continues it or ``overwrite`` replaces it (only a folder audioclf
    wrote is ever deleted). ``dry_run`` shows ``reporter`` the plan of a single run (header, groups per split,
    a wall-time estimate from a few timed steps) and writes nothing: ``runs`` is empty.
    """
    cfg = _as_config(cfg, overrides or [])
    current = init_distributed(cfg.train.device)  # under torchrun: one of several processes (rank 0 writes)
    kind = "search" if cfg.train.time_budget is not None else "stages" if cfg.stages else \
        "cv" if cfg.cv is not None else "run"
    if dry_run:
        if kind != "run":
            raise ConfigError(f"--dry-run plans a single run; this config is a {kind} ({_WHY_NOT_PLANNED[kind]})")
        return RunResult("single", Path(train(cfg, resume=resume, reporter=reporter, dry_run=True)), [])
    if cfg.stages:
        plan_stages(cfg)  # a stage name leading out of `out` is refused before an --overwrite deletes anything
    if cfg.out and current.main:
        _claim_output(Path(cfg.out), kind, resume, overwrite)
    barrier(current)  # an --overwrite folder is gone before any rank looks at it
    if cfg.train.time_budget is not None:
        if current.active:
            raise ConfigError("train.time_budget tries settings one run after another in this process; under "
                              "torchrun train one configuration (or run audioclf sweep --jobs N)")
        if cfg.stages or cfg.cv is not None:
            raise ConfigError("train.time_budget searches one run; it cannot be combined with stages or cv")
        root = search(cfg, resume=resume, reporter=reporter)
        return RunResult("search", root, [root])
    if cfg.stages:
        runs = train_stages(cfg, resume=resume, reporter=reporter)
        return RunResult("stages", stages_root(cfg), runs)
    if cfg.cv is not None:
        inputs_for(cfg)  # the inputs must be able to do cross-validation (refused before any decoding)
        root = cross_validate(cfg, resume=resume, reporter=reporter)
        folds = json.loads((root / "cv_summary.json").read_text())["folds"]
        return RunResult("cv", root, [root / f"fold_{fold}" for fold in folds])
    run_dir = train(cfg, resume=resume, reporter=reporter)
    return RunResult("single", run_dir, [run_dir])


_WHY_NOT_PLANNED = {"search": "train.time_budget", "stages": "stages", "cv": "cv"}
RUN_KINDS = ("run", "search", "stages", "cv")  # what `audioclf train` makes: each may replace another


def _claim_output(root: Path, kind: str, resume: bool, overwrite: bool) -> None:
    """Never write over an earlier result without being told to, and never delete what audioclf did not
    make (:func:`~audioclf.ownership.claim_folder`). A new or empty folder is left to the writer to create,
    so a run refused before it writes anything leaves no folder behind."""
    if resume or not root.is_dir() or not any(root.iterdir()):
        return
    holder = live_lock_holder(root) if overwrite else None
    if holder is not None:
        raise ConfigError(f"--overwrite: {root} is in use by another run (pid {holder.get('pid')} on "
                          f"{holder.get('host')}); wait for it to finish")
    claim_folder(root, kind, overwrite, reuse=False, kinds=RUN_KINDS)


def _as_config(cfg: Config | dict[str, Any] | str | Path, overrides: list[str]) -> Config:
    if isinstance(cfg, (str, Path)):
        return load_config(cfg, overrides)
    if isinstance(cfg, Config) and not overrides:
        return cfg
    data = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    return config_from_dict(apply_overrides(data, overrides))
