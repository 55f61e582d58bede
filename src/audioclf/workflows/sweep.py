"""``audioclf sweep``: runs of one recipe that differ in a few keys, driven by Optuna (Akiba et al. 2019).

A sweep is a base config (a recipe and overrides) and a search space over config keys::

    params:
      train.batch_size: [16, 32, 64]                     # values: a grid axis, or a categorical choice
      train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # a range (random and TPE samplers)
      finetuning: {frozen: {train.frozen_embeddings: true}, full: {}}   # named values setting several keys
      stages.curated.train.lr: [1.0e-3, 1.0e-4]           # one stage's value (stages.NAME.section.key)

Every trial is an ordinary run directory, ``<out>/trials/trial_NNN`` (``evaluate``, ``predict``, ``compare``
work on it). The study lives in Optuna's storage: ``<out>/sweep.db`` (SQLite) by default, or any database URL
(``--storage postgresql://...``), which several machines or GPUs can share: each runs
``audioclf sweep --join --storage URL --out DIR`` and takes trials from the same queue.

* grid: every combination is put in the study's queue when it is created; random: the trials are drawn up
  front by Optuna's :class:`~optuna.samplers.RandomSampler` (seeded) and queued the same way. A worker takes a
  queued trial by moving it from WAITING to RUNNING, which the storage does atomically, so two workers never
  run the same trial. TPE (:class:`~optuna.samplers.TPESampler`) draws each trial when a worker asks, from
  the results so far (with several workers at once, up to one extra trial per worker may run).
* ``--resume``: finished trials are kept; a trial whose worker died (a RUNNING trial owned by a process of this
  machine that is gone) is queued again with the same values and continues from its run's last checkpoint.
* ``--jobs N``: N worker processes on this machine, each with its share of the CPU threads.
* ``--prune``: Optuna's median pruner stops a trial whose validation curve falls behind the others'.

The value a trial reports is a *validation* metric (``sweep.metric``, default the run's monitor): the test split
is never used to choose. ``<out>/sweep.json`` lists the trials; ``audioclf compare <out>`` puts them side by side.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    import fcntl  # POSIX: serialises SQLite claims (see _claims_serialised)
except ImportError:  # Windows: workers on one SQLite file may rarely take the same trial (its run folder refuses it)
    fcntl = None

import yaml

from ..config import (apply_overrides, config_from_dict, merge_dicts, parse_value, read_config_file, read_recipe,
                      read_yaml, recipe_dir)
from ..errors import AudioclfError, ConfigError
from ..files import atomic_write_text, jsonable
from ..metrics import higher_is_better
from ..ownership import claim_folder
from ..registry import did_you_mean
from ..runs import RunDir
from ..runs.directory import live_lock_holder
from ..training.inputs import EmbeddingInputs, inputs_for
from ..training.optim import check_training_settings
from .run import run as run_config
from .search import PruningReporter
from .stages import plan_stages

__all__ = ["SweepSpec", "bundled_protocols", "load_sweep", "sweep", "sweep_worker"]

log = logging.getLogger(__name__)

SAMPLERS = ("grid", "random", "tpe")
DISTILL_KEYS = ("distill.T", "distill.alpha")  # trial values passed to distillation, not config keys
SPEC_FILE, STUDY_NAME = "sweep.yaml", "audioclf-sweep"
_EARLIER = "earlier stage: "  # marks an init_from the user must replace with a run (see _stage_alone)


@dataclass
class SweepSpec:
    """What a sweep runs; saved as ``<out>/sweep.yaml`` (and in the study, for workers on other machines)."""

    base: dict[str, Any]  # config sections every trial starts from
    params: dict[str, Any]  # key -> list of values | {low, high[, log, step]} | {name: {dotted key: value}}
    sampler: str = "grid"
    trials: int | None = None  # random / tpe: how many
    metric: str | None = None  # the validation metric a trial reports (None: the run's monitor)
    prune: bool = False
    teachers: list[str] = field(default_factory=list)  # distillation trials: the teacher runs
    seed: int = 0
    stage: str | None = None  # the base recipe's stage the trials run (alone), e.g. dcase2022_task1's teacher
    distill: dict[str, float] = field(default_factory=dict)  # that stage's T / alpha, unless swept

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sweeps_dir() -> Path:
    return recipe_dir() / "sweeps"


def bundled_protocols() -> dict[str, str]:
    """The bundled sweep protocols (name -> first comment line), from ``configs/sweeps/*.yaml``."""
    out = {}
    for path in sorted(sweeps_dir().glob("*.yaml")):
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        out[path.stem] = first
    return out


def _read_sweep_file(source: str) -> dict[str, Any]:
    path = Path(source)
    if not path.exists() and path.suffix == "":
        bundled = sweeps_dir() / f"{path.name}.yaml"
        if (recipe_dir() / f"{path.name}.yaml").exists() and not bundled.exists():
            return {"base": path.name}  # a recipe: the trials' base, the axes from --grid
        if not bundled.exists():
            names = [*bundled_protocols(), *(p.stem for p in recipe_dir().glob("*.yaml"))]
            raise ConfigError(f"no sweep file, bundled protocol or recipe named '{source}'{did_you_mean(source, names)}")
        path = bundled
    return read_config_file(path)  # its base: is resolved below, after a sweep.stage is taken out


# --- the search space -----------------------------------------------------------------------------
def _is_range(spec: Any) -> bool:
    return isinstance(spec, dict) and "low" in spec and "high" in spec


def _is_named(spec: Any) -> bool:
    return isinstance(spec, dict) and not _is_range(spec) and all(isinstance(v, dict) for v in spec.values())


def _labels(values: list[Any]) -> list[Any]:
    """Optuna's categorical choices must be scalars: lists and mappings travel as their YAML text."""
    return [v if v is None or isinstance(v, (bool, int, float, str)) else yaml.safe_dump(v, default_flow_style=True).strip()
            for v in values]


def _distribution(key: str, spec: Any):
    import optuna.distributions as D

    if _is_range(spec):
        unknown = set(spec) - {"low", "high", "log", "step"}
        if unknown:
            raise ConfigError(f"sweep param {key}: unknown range setting(s) {sorted(unknown)}; use low, high, log, step")
        low, high = spec["low"], spec["high"]
        if not low < high:
            raise ConfigError(f"sweep param {key}: expected low < high, got {low} and {high}")
        if isinstance(low, int) and isinstance(high, int) and not spec.get("log") and isinstance(spec.get("step", 1), int):
            return D.IntDistribution(low, high, step=spec.get("step", 1))
        return D.FloatDistribution(float(low), float(high), log=bool(spec.get("log", False)),
                                   step=spec.get("step"))
    if _is_named(spec):
        return D.CategoricalDistribution(list(spec))
    if isinstance(spec, list) and spec:
        return D.CategoricalDistribution(_labels(spec))
    raise ConfigError(f"sweep param {key}: expected a list of values, a range {{low, high}} or named values "
                      f"{{name: {{key: value}}}}, got {spec!r}")


def distributions(spec: SweepSpec) -> dict[str, Any]:
    return {key: _distribution(key, value) for key, value in spec.params.items()}


def trial_settings(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's Optuna params -> the dotted keys they set (labels decoded, named values expanded)."""
    settings: dict[str, Any] = {}
    for key, value in params.items():
        space = spec.params[key]
        if _is_named(space):
            settings.update(space[value])
        elif isinstance(space, list):
            settings[key] = space[_labels(space).index(value)]
        else:
            settings[key] = value
    return settings


def trial_config(spec: SweepSpec, settings: dict[str, Any], out: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """The config sections of a trial (base + its settings, out = its folder) and its distillation values."""
    distill = {key.split(".")[1]: float(value) for key, value in settings.items() if key in DISTILL_KEYS}
    overrides = {key: value for key, value in settings.items() if key not in DISTILL_KEYS}
    cfg = copy.deepcopy(spec.base)
    for key, value in overrides.items():
        if key.startswith("stages.") and key.count(".") >= 2:  # stages.NAME.section.key: one stage's value
            _, name, rest = key.split(".", 2)
            stage = next((st for st in cfg.get("stages") or [] if isinstance(st, dict) and st.get("name") == name), None)
            if stage is None:
                raise ConfigError(f"sweep param {key}: the config has no stage named {name!r}")
            stage.update(apply_overrides(stage, [f"{rest}={json.dumps(value)}"]))
            continue
        cfg = apply_overrides(cfg, [f"{key}={json.dumps(value)}"])
    cfg["out"] = str(out)
    if not cfg.get("data", {}).get("cache_dir") and not EmbeddingInputs.describes(config_from_dict(cfg)):
        # every trial reads the same audio: decode it once for all
        cfg = apply_overrides(cfg, [f"data.cache_dir={json.dumps(str(out.parent.parent / '.cache'))}"])
    return cfg, distill


def _grid(spec: SweepSpec) -> list[dict[str, Any]]:
    axes = {}
    for key, dist in distributions(spec).items():
        if not hasattr(dist, "choices"):
            raise ConfigError(f"sweep param {key}: a grid needs a list of values, not a range (or use --sampler random)")
        axes[key] = dist.choices
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def _check_trials(spec: SweepSpec, planned: list[dict[str, Any]]) -> None:
    """Every planned trial's config is built (unknown keys, wrong types) before any trial runs."""
    for params in planned:
        settings = trial_settings(spec, params)
        for key in settings:
            if key.startswith("distill.") and key not in DISTILL_KEYS:
                raise ConfigError(f"sweep param {key}: distillation takes {', '.join(DISTILL_KEYS)}")
            if key in DISTILL_KEYS and not spec.teachers:
                raise ConfigError(f"sweep param {key}: distillation trials need --teacher RUN")
        cfg, _ = trial_config(spec, settings, Path("."))
        config = config_from_dict(cfg)
        for run_config in [stage.config for stage in plan_stages(config)] if config.stages else [config]:
            check_training_settings(run_config.train)  # optimizer, scheduler and its arguments
            inputs_for(run_config)  # the model's arguments, and keys this kind of input cannot honour


# --- the spec -------------------------------------------------------------------------------------
def load_sweep(source: str | None = None, grids: list[str] | None = None, overrides: list[str] | None = None,
               sampler: str | None = None, trials: int | None = None, metric: str | None = None,
               prune: bool = False, teachers: list[str] | None = None) -> SweepSpec:
    """A sweep from a YAML file or bundled protocol (``base:``, ``sweep:`` and config sections), ``--grid
    key=v1,v2`` axes and ``key=value`` overrides; every trial's config is checked before anything runs."""
    data = _read_sweep_file(source) if source else {}
    section = data.pop("sweep", {}) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: 'sweep' must be a mapping (sampler, trials, metric, params)")
    unknown = set(section) - {"sampler", "trials", "metric", "params", "prune", "stage"}
    if unknown:
        raise ConfigError(f"{source}: unknown sweep setting(s) {sorted(unknown)}; expected sampler, trials, metric, "
                          "params, prune, stage")
    base_name = data.pop("base", None)
    recipe, distill = read_recipe(base_name) if base_name else {}, {}
    if section.get("stage"):
        recipe, distill = _stage_alone(recipe, str(section["stage"]), source)
    base = apply_overrides(merge_dicts(recipe, data), overrides or [])
    if str(base.get("init_from") or "").startswith(_EARLIER):
        raise ConfigError(f"sweep.stage={section['stage']} starts from stage {base['init_from'][len(_EARLIER):]}'s "
                          "weights: give that stage's run with init_from=RUN")
    if base.get("time_budget") or base.get("train", {}).get("time_budget"):
        raise ConfigError("train.time_budget is a search of its own; a sweep trial cannot have one")
    params = dict(section.get("params") or {})
    for item in grids or []:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ConfigError(f"--grid {item!r}: expected key=v1,v2,... (e.g. train.batch_size=16,32,64)")
        params[key.strip()] = [parse_value(v.strip()) for v in _top_level_split(values)]
    if not params:
        raise ConfigError("a sweep needs parameters: --grid key=v1,v2 or a sweep: params: section")
    spec = SweepSpec(base=base, params=params, sampler=sampler or section.get("sampler", "grid"),
                     trials=trials or section.get("trials"), metric=metric or section.get("metric"),
                     prune=prune or bool(section.get("prune", False)), teachers=[str(t) for t in teachers or []],
                     seed=int(base.get("seed", 0) or 0), stage=section.get("stage"), distill=distill)
    if distill and not spec.teachers:
        raise ConfigError(f"sweep.stage={spec.stage} distils a student: give the teacher run with --teacher RUN")
    if spec.sampler not in SAMPLERS:
        raise ConfigError(f"sampler={spec.sampler!r}: expected one of {', '.join(SAMPLERS)}")
    if spec.sampler != "grid" and not (isinstance(spec.trials, int) and spec.trials >= 1):
        raise ConfigError(f"sampler={spec.sampler} needs a number of trials (--trials N or sweep.trials)")
    if spec.sampler == "tpe" and not (spec.metric or base.get("train", {}).get("monitor")):
        raise ConfigError("sampler=tpe learns from the trials' values: name the metric (--metric or sweep.metric)")
    config_from_dict(base)  # the base itself first: its errors name its keys
    _check_trials(spec, _planned(spec))
    return spec


def _stage_alone(recipe: dict[str, Any], name: str, source: str | None) -> tuple[dict[str, Any], dict[str, float]]:
    """``recipe`` with stage ``name``'s settings over it and no stages (a trial runs that stage alone), and the
    stage's distillation T / alpha when it distils."""
    from .stages import STAGE_KEYS

    stages = recipe.get("stages") or []
    raw = next((dict(stage) for stage in stages if isinstance(stage, dict) and stage.get("name") == name), None)
    if raw is None:
        names = ", ".join(str(stage.get("name")) for stage in stages if isinstance(stage, dict)) or "none"
        raise ConfigError(f"{source}: sweep.stage={name}: the base recipe has no such stage (its stages: {names})")
    extras = {key: raw.pop(key) for key in STAGE_KEYS if key in raw}
    if isinstance(raw.get("init_from"), str) and raw["init_from"].startswith("@"):
        # The earlier stage is not run: its run is given instead (init_from=RUN), checked once overrides are in.
        raw["init_from"] = f"{_EARLIER}{raw['init_from'][1:]}"
    alone = merge_dicts({key: value for key, value in recipe.items() if key != "stages"}, raw)
    distill = {"T": float(extras.get("T", 2.0)), "alpha": float(extras.get("alpha", 0.5))} \
        if extras.get("kind") == "distill" else {}
    return alone, distill


def _top_level_split(text: str) -> list[str]:
    """``16,32`` -> ["16", "32"]; commas inside brackets or braces stay: ``[8,16],[32,64]`` -> two lists."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _planned(spec: SweepSpec) -> list[dict[str, Any]]:
    """The trials known before any runs: the whole grid, or the random draws (TPE: none)."""
    if spec.sampler == "grid":
        return _grid(spec)
    if spec.sampler == "random":
        optuna = _optuna()
        draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.seed))
        return [draw.ask(distributions(spec)).params for _ in range(spec.trials)]
    return []


# --- the study ------------------------------------------------------------------------------------
def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _storage_url(root: Path, storage: str | None) -> str:
    return storage or f"sqlite:///{(root / 'sweep.db').resolve()}"


def _direction(spec: SweepSpec) -> str:
    metric = spec.metric or spec.base.get("train", {}).get("monitor")
    return "maximize" if metric is None or higher_is_better(metric) else "minimize"


def _sampler(spec: SweepSpec, worker: int = 0):
    optuna = _optuna()
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=spec.seed + worker)
    return optuna.samplers.RandomSampler(seed=spec.seed + worker)  # queued trials carry their own values


def _pruner(spec: SweepSpec):
    optuna = _optuna()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if spec.prune else optuna.pruners.NopPruner()


def _open_study(spec: SweepSpec, url: str, worker: int = 0):
    optuna = _optuna()
    return optuna.load_study(study_name=STUDY_NAME, storage=url, sampler=_sampler(spec, worker), pruner=_pruner(spec))


def _create_study(spec: SweepSpec, root: Path, url: str):
    optuna = _optuna()
    study = optuna.create_study(study_name=STUDY_NAME, storage=url, direction=_direction(spec))
    study.set_user_attr("spec", jsonable(spec.to_dict()))
    for params in _planned(spec):
        study.enqueue_trial(params)
    return study


def _folder_number(study, trial) -> int:
    """The number in the name of ``trial``'s run folder, ``trials/trial_NNN``: its own, or for a trial queued
    again after its worker died, that of the first trial with these values (so it continues that run). The
    folder is derived here, never read from the study: a crafted database must not steer a trial into a folder
    outside the sweep or into another trial's run. A ``retry_of`` counts only when it names an earlier failed
    trial with the same values; otherwise the trial gets its own folder."""
    origin = trial.user_attrs.get("retry_of")
    if isinstance(origin, int) and not isinstance(origin, bool) and 0 <= origin < trial.number:
        earlier = study.get_trials(deepcopy=False)
        if origin < len(earlier) and earlier[origin].state.name == "FAIL" and earlier[origin].params == trial.params:
            return origin
    return trial.number


def _trial_dir(study, trial, root: Path) -> Path:
    return root / "trials" / f"trial_{_folder_number(study, trial):03d}"


def _requeue_dead_trials(study, root: Path) -> int:
    """RUNNING trials whose worker process on this machine is gone: failed, and queued again with the same values
    and their run folder (so the new trial continues from its last checkpoint). Returns how many."""
    optuna = _optuna()
    host, count = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", {})
        if worker.get("host") != host or _alive(worker.get("pid")):
            continue
        if live_lock_holder(_trial_dir(study, trial, root)) is not None:
            continue
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": _folder_number(study, trial)})
        count += 1
    return count


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _claims_serialised(url: str) -> Iterator[None]:
    """Around taking a queued trial. A server database locks the trial's row while its state moves from WAITING to
    RUNNING (SELECT ... FOR UPDATE), so two workers never both take it. SQLite through Python's sqlite3 reads the
    state outside any transaction: two workers could both see WAITING and both take the trial (seen in CI: both
    ran trial 0). On SQLite, whose workers share one machine, a file lock next to the database serialises them."""
    if not url.startswith("sqlite:///") or fcntl is None:
        yield
        return
    with open(url[len("sqlite:///"):] + ".claims", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pop_queued(study, url: str):
    """Take a queued trial (WAITING -> RUNNING, one worker at a time: :func:`_claims_serialised`).

    ``study.ask()`` does the same but, when another worker took the last queued trial first, draws a new one
    from the sampler: a grid would gain a trial outside the grid. Hence this loop over Optuna's storage API."""
    optuna = _optuna()
    storage = study._storage
    with _claims_serialised(url):
        for frozen in storage.get_all_trials(study._study_id, deepcopy=False,
                                             states=(optuna.trial.TrialState.WAITING,)):
            try:
                if storage.set_trial_state_values(frozen._trial_id, state=optuna.trial.TrialState.RUNNING):
                    return optuna.trial.Trial(study, frozen._trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
    return None


def _next_trial(study, spec: SweepSpec, url: str):
    trial = _pop_queued(study, url)
    if trial is not None or spec.sampler != "tpe":
        return trial
    optuna = _optuna()
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    if len(study.get_trials(deepcopy=False, states=counted)) >= spec.trials:
        return None
    return study.ask()


# --- running trials -------------------------------------------------------------------------------
def _run_trial(study, trial, spec: SweepSpec, root: Path, reporter=None) -> None:
    optuna = _optuna()
    params = {key: _suggest(trial, key, dist) for key, dist in distributions(spec).items()}
    run_dir = _trial_dir(study, trial, root)
    trial.set_user_attr("run_dir", str(run_dir))  # for sweep.json; never read back to choose the folder
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
    settings = trial_settings(spec, params)
    trial.set_user_attr("settings", jsonable(settings))
    cfg, distill = trial_config(spec, settings, run_dir)
    resume = RunDir(run_dir).checkpoint("last").exists()
    if reporter is not None:
        shown = ", ".join(f"{k}={v}" for k, v in settings.items())
        reporter.message(f"trial {trial.number}: {shown} -> {run_dir}{' (resumed)' if resume else ''}")
    watcher = PruningReporter(reporter, trial, optuna) if spec.prune else reporter
    try:
        last = _train_trial(spec, cfg, distill, resume, watcher)
    except optuna.TrialPruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        if reporter is not None:
            reporter.message(f"trial {trial.number} pruned: its validation curve fell behind the others'")
        return
    except AudioclfError as exc:  # this trial's settings cannot run (over a limit, diverged ...): the sweep goes on
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, exc)
        return
    except BaseException:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    summary = RunDir(last).read_summary()
    metric = spec.metric or RunDir(last).read_config()["train"]["monitor"]
    value = summary.get("metrics", {}).get("val", {}).get(metric)
    if value is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise ConfigError(f"sweep metric {metric!r}: not among the validation metrics of {last}")
    trial.set_user_attr("metric", metric)
    trial.set_user_attr("last_run", str(last))
    study.tell(trial, float(value))


def _suggest(trial, key: str, dist) -> Any:
    """The trial's value for ``key`` (a queued trial's own; else drawn by the sampler)."""
    import optuna.distributions as D

    if isinstance(dist, D.CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, D.IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step)
    return trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)


def _train_trial(spec: SweepSpec, cfg: dict[str, Any], distill: dict[str, float], resume: bool, reporter) -> Path:
    if spec.teachers:
        from ..compress.distill import distill as run_distill

        config = config_from_dict(cfg)
        values = {"T": 2.0, "alpha": 0.5, **spec.distill, **distill}
        return run_distill(spec.teachers, config, T=values["T"], alpha=values["alpha"], resume=resume,
                           reporter=reporter)
    return run_config(cfg, resume=resume, reporter=reporter).runs[-1]


def sweep_worker(root: str | Path, storage: str | None = None, worker: int = 0, reporter=None) -> int:
    """Run queued (or, for TPE, newly drawn) trials of the sweep in ``root`` until none is left; returns how many
    this worker ran."""
    root = Path(root)
    url = _storage_url(root, storage)
    spec = _read_spec(root, url)
    study = _open_study(spec, url, worker)
    done = 0
    while (trial := _next_trial(study, spec, url)) is not None:
        _run_trial(study, trial, spec, root, reporter)
        done += 1
    return done


def _read_spec(root: Path, url: str) -> SweepSpec:
    path = root / SPEC_FILE
    if path.exists():
        return SweepSpec(**read_yaml(path))
    optuna = _optuna()  # joining from another machine: the spec travels in the shared study
    try:
        stored = optuna.load_study(study_name=STUDY_NAME, storage=url).user_attrs["spec"]
    except KeyError:
        raise ConfigError(f"{url}: no audioclf sweep in this storage") from None
    spec = SweepSpec(**stored)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return spec


def sweep(spec: SweepSpec | None, out: str | Path, jobs: int = 1, storage: str | None = None, resume: bool = False,
          join: bool = False, overwrite: bool = False, reporter=None) -> Path:
    """Run the sweep into ``out`` (see the module docstring); returns ``out``, holding ``sweep.json``."""
    root = Path(out)
    url = _storage_url(root, storage)
    if join or resume:
        if not join and not (root / SPEC_FILE).exists():
            raise ConfigError(f"--resume: {root} holds no sweep ({SPEC_FILE} not found)")
        if not (root / SPEC_FILE).exists():  # joining from another machine: a new (or this sweep's own) folder
            claim_folder(root, "sweep")
        spec = _read_spec(root, url)
        if resume:
            requeued = _requeue_dead_trials(_open_study(spec, url), root)
            if requeued and reporter is not None:
                reporter.message(f"{requeued} trial(s) interrupted earlier are queued again")
    else:
        if spec is None:
            raise ConfigError("a sweep needs a spec")
        claim_folder(root, "sweep", overwrite, reuse=False)
        atomic_write_text(root / SPEC_FILE, yaml.safe_dump(jsonable(spec.to_dict()), sort_keys=False))
        _create_study(spec, root, url)
    if jobs <= 1:
        sweep_worker(root, storage, 0, reporter)
    else:
        _run_workers(root, storage, jobs, reporter)
    return write_sweep_summary(root, storage)


def _run_workers(root: Path, storage: str | None, jobs: int, reporter) -> None:
    """``jobs`` worker processes, each with its share of the CPU threads; their output in ``<out>/workers/``."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    logs = root / "workers"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    processes = []
    for worker in range(jobs):
        command = [sys.executable, "-m", "audioclf", "sweep", "--worker", str(worker), "--out", str(root)]
        if storage:
            command += ["--storage", storage]
        with open(logs / f"worker_{worker}.log", "w") as log_file:
            processes.append(subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env))
    if reporter is not None:
        reporter.message(f"{jobs} workers ({threads} threads each); their output: {logs}/")
    failed = [i for i, process in enumerate(processes) if process.wait() != 0]
    if failed:
        raise ConfigError(f"sweep worker(s) {failed} failed; see {logs}/worker_<n>.log")


def write_sweep_summary(root: Path, storage: str | None = None) -> Path:
    """``<out>/sweep.json``: every trial (number, state, settings, value, run folder) and the best one."""
    url = _storage_url(root, storage)
    spec = _read_spec(root, url)
    study = _open_study(spec, url)
    trials = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name == "FAIL" and trial.user_attrs.get("run_dir") is None:
            continue
        trials.append({"number": trial.number, "state": trial.state.name.lower(), "params": trial.params,
                       "settings": trial.user_attrs.get("settings", trial_settings(spec, trial.params)),
                       "value": trial.value, "metric": trial.user_attrs.get("metric", spec.metric),
                       "run_dir": trial.user_attrs.get("run_dir"), "run": trial.user_attrs.get("last_run"),
                       **({"error": trial.user_attrs["error"]} if "error" in trial.user_attrs else {})})
    complete = [t for t in trials if t["state"] == "complete"]
    metric = next((t["metric"] for t in complete if t["metric"]), spec.metric)
    best = None
    if complete:
        pick = max if metric is None or higher_is_better(metric) else min
        best = pick(complete, key=lambda t: t["value"])["number"]
    record = {"sampler": spec.sampler, "metric": metric, "params": spec.params, "best_trial": best,
              "trials": trials}
    atomic_write_text(root / "sweep.json", json.dumps(jsonable(record), indent=2) + "\n")
    return root
