"""``train.time_budget``: spend a wall-time budget trying a few settings of the zero-config knobs on the
validation split, and keep the best run.

Optuna (Akiba et al. 2019) drives the search: the first trial is the zero-config run itself (so the search can
only improve on it, as judged on validation), the next ones are drawn by TPE over the learning rate, weight
decay, label smoothing and MixUp, and a median pruner stops a trial whose validation curve falls behind the
others'. Every trial is an ordinary run directory under ``<out>/trials/``; the study lives in
``<out>/search.db`` (SQLite), so an interrupted search resumes with ``--resume``. The best trial's files are
copied into ``<out>``, which is then a normal run directory (``evaluate``, ``predict``, ``export`` work on it);
``<out>/search.json`` and a section of its ``report.md`` list every trial.

Trials are shorter than a plain zero-config run: one probe epoch measures the cost of an epoch, and each trial
gets about a fifth of the budget.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ..config import Config
from ..console import PassOn
from ..errors import ConfigError
from ..files import atomic_write_text, jsonable
from ..metrics import higher_is_better
from ..ownership import OWNER_FILE, mark_folder
from ..runs import RunDir, default_run_dir, write_report
from ..training.members import drop_members
from ..training.trainer import train

__all__ = ["parse_duration", "search", "TRIAL_SHARE"]

TRIAL_SHARE = 5  # each trial gets about 1/TRIAL_SHARE of the budget (after the probe)
MIN_TRIAL_EPOCHS = 3
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str | float | int) -> float:
    """``"10m"``, ``"90s"``, ``"1.5h"`` or a number of seconds -> seconds (a one-line error otherwise)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text).lower())
        if not match:
            raise ConfigError(f"train.time_budget={text!r}: expected a duration such as 10m, 90s or 1h")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"train.time_budget={text!r}: expected a positive duration")
    return seconds


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("train.time_budget needs Optuna: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _suggest(trial) -> dict[str, Any]:
    """The knobs a trial varies (the zero-config defaults are the first trial)."""
    return {"train.lr": trial.suggest_float("train.lr", 3e-4, 3e-3, log=True),
            "train.weight_decay": trial.suggest_float("train.weight_decay", 1e-3, 0.2, log=True),
            "train.label_smoothing": trial.suggest_categorical("train.label_smoothing", [0.0, 0.1]),
            "augment.mixup_alpha": trial.suggest_categorical("augment.mixup_alpha", [0.0, 0.2, 0.4])}


def _with(cfg: Config, values: dict[str, Any], out: Path, epochs: int) -> Config:
    trial_cfg = copy.deepcopy(cfg)
    trial_cfg.train.time_budget = None
    trial_cfg.out = str(out)
    trial_cfg.train.epochs = epochs
    for key, value in values.items():
        section, name = key.split(".")
        setattr(getattr(trial_cfg, section), name, value)
    return trial_cfg


class PruningReporter(PassOn):
    """Passes progress on and reports each epoch's validation monitor to the Optuna trial."""

    def __init__(self, inner, trial, optuna):
        super().__init__(inner)
        self.trial, self.optuna = trial, optuna

    def epoch(self, record: dict[str, Any], monitor: str, improved: bool) -> None:
        super().epoch(record, monitor, improved)
        value = record.get(f"val/{monitor}")
        if value is not None:
            self.trial.report(float(value), record["epoch"])
            if self.trial.should_prune():
                raise self.optuna.TrialPruned()


def search(cfg: Config, resume: bool = False, reporter=None, max_trials: int | None = None) -> Path:
    """Run the search within ``cfg.train.time_budget``; returns ``cfg.out``, holding the best trial's run.

    ``max_trials`` caps the number of trials (None: as many as the budget allows). A ``train.epochs`` set in
    ``cfg`` caps each trial's epochs.
    """
    budget = parse_duration(cfg.train.time_budget)
    optuna = _optuna()
    started = time.monotonic()
    root = Path(cfg.out or default_run_dir(cfg.model.get("name")))
    mark_folder(root, "search")
    base = copy.deepcopy(cfg)
    base.data.cache_dir = cfg.data.cache_dir or str(root / ".cache")  # decode each file once for all trials

    # The probe: one epoch of the zero-config run, to learn what an epoch costs here.
    probe_dir = root / "trials" / "probe"
    probe_started = time.monotonic()
    if not (probe_dir / "summary.json").exists():
        train(_with(base, {}, probe_dir, 1), reporter=reporter)
    probe = RunDir(probe_dir)
    epoch_seconds = max(probe.read_metrics()[-1]["seconds"], 1e-3)
    # What a trial costs besides its epochs: reading the cached audio, the final evaluation, plots, report.
    overhead = max(0.0, time.monotonic() - probe_started - epoch_seconds)
    planned = probe.read_config()["train"]
    monitor = planned["monitor"]
    trial_epochs = max(MIN_TRIAL_EPOCHS, int((budget / TRIAL_SHARE - overhead) / epoch_seconds))
    if cfg.train.epochs is not None:
        trial_epochs = min(trial_epochs, cfg.train.epochs)
    zero_config = {key: planned[key.split(".")[1]] if key.startswith("train.")
                   else probe.read_config()["augment"][key.split(".")[1]]
                   for key in ("train.lr", "train.weight_decay", "train.label_smoothing", "augment.mixup_alpha")}

    if not resume:
        (root / "search.db").unlink(missing_ok=True)  # a fresh search in an existing folder starts afresh
    study = optuna.create_study(
        study_name="audioclf", storage=f"sqlite:///{root / 'search.db'}", load_if_exists=resume,
        direction="maximize" if higher_is_better(monitor) else "minimize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, trial_epochs // 3)))
    if not study.trials:
        study.enqueue_trial(zero_config)
    trial_seconds = overhead + trial_epochs * epoch_seconds

    def objective(trial) -> float:
        out = root / "trials" / f"trial_{trial.number:03d}"
        if reporter:
            reporter.message(f"trial {trial.number} -> {out}")
        run_dir = train(_with(base, _suggest(trial), out, trial_epochs),
                        reporter=PruningReporter(reporter, trial, optuna))
        return float(RunDir(run_dir).read_summary()["metrics"]["val"][monitor])

    def finished(study) -> bool:
        done = sum(t.state.is_finished() for t in study.trials)
        return time.monotonic() - started + trial_seconds > budget or bool(max_trials and done >= max_trials)

    def stop_when_finished(study, trial) -> None:
        if finished(study):
            study.stop()

    first = not any(t.state.is_finished() for t in study.trials)
    if first or not finished(study):  # at least the zero-config trial, whatever the budget
        study.optimize(objective, callbacks=[stop_when_finished], catch=())
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not finished:
        raise ConfigError(f"train.time_budget={cfg.train.time_budget}: no trial finished within the budget")
    best = study.best_trial
    best_dir = root / "trials" / f"trial_{best.number:03d}"
    drop_members(root)  # an earlier best trial's ensemble members must not outlive it (copied below when it has them)
    for item in best_dir.iterdir():
        if item.name == OWNER_FILE:  # the folder keeps its search marker (the trial's says run)
            continue
        target = root / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    _write_search(root, study, monitor, best.number, trial_epochs, budget, time.monotonic() - started)
    return root


def _write_search(root: Path, study, monitor: str, best: int, trial_epochs: int, budget: float,
                  seconds: float) -> None:
    trials = [{"number": t.number, "state": t.state.name.lower(), "params": t.params, "value": t.value,
               "epochs": len(t.intermediate_values)} for t in study.trials]
    record = {"monitor": monitor, "best_trial": best, "trial_epochs": trial_epochs, "budget_seconds": budget,
              "seconds": round(seconds, 1), "trials": trials}
    atomic_write_text(root / "search.json", json.dumps(jsonable(record), indent=2) + "\n")
    write_report(root)  # report.md gains the trials table
