"""``audioclf compare``: runs side by side.

Given run directories and sweep folders (a sweep stands for its trials), :func:`compare` writes

* ``comparison.md``: one table (the chosen metrics on validation and test, the settings that differ between the
  runs, parameters, MACs, epochs and wall time), the best and the worst run, and for a sweep the effect of each
  swept key (the metric's mean, min and max per value);
* ``comparison.csv``: the same table, every number unrounded;
* ``curves.png``: every run's validation metric and training loss per epoch, overlaid;
* ``effects.png`` (sweeps): the metric against each swept key's values, one panel per key.

Runs are ranked by a validation metric (the first of ``metrics``), never by test: choosing on the test split
would make its numbers optimistic.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..console import format_number, markdown_table
from ..config import flat_config
from ..errors import ConfigError
from ..files import atomic_write_text, spreadsheet_text
from ..metrics import higher_is_better
from ..ownership import claim_folder
from .directory import RunDir
from .plots import plot_comparison_curves, plot_effects

__all__ = ["ComparedRun", "collect_runs", "compare"]

_IGNORED_SETTINGS = ("out", "stages", "init_from")  # differ by construction, or say nothing about the model


@dataclass
class ComparedRun:
    name: str
    path: Path
    summary: dict[str, Any]
    settings: dict[str, Any]  # the run's config.yaml, flattened to dotted keys
    records: list[dict[str, Any]]
    # a sweep trial's value of each swept parameter (a named axis by its name, e.g. finetuning=frozen)
    swept: dict[str, Any] = field(default_factory=dict)
    sweep: str | None = None

    def metric(self, split: str, name: str) -> float | None:
        value = self.summary.get("metrics", {}).get(split, {}).get(name)
        return None if value is None else float(value)

    @property
    def seconds(self) -> float:
        """Wall time of data preparation and training (older runs: the sum of their epochs' times)."""
        wall = self.summary.get("wall_seconds")
        return float(wall) if wall is not None else float(sum(r.get("seconds", 0.0) for r in self.records))

    def rank_key(self, metrics: list[str]) -> tuple[float, ...]:
        """Sorts best first: by validation ``metrics`` in order (ties broken by the next), each in its direction;
        a missing value last."""
        key = []
        for name in metrics:
            value = self.metric("val", name)
            key.append(math.inf if value is None else -value if higher_is_better(name) else value)
        return tuple(key)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return value


def _run(path: Path, name: str, swept: dict[str, Any] | None = None, sweep: str | None = None) -> ComparedRun:
    run = RunDir(path)
    if not run.summary.exists():
        raise ConfigError(f"{path}: not a finished run (no summary.json)")
    config = run.read_config() if run.config.exists() else {}
    settings = {key: value for key, value in flat_config(config or {}).items() if key not in _IGNORED_SETTINGS}
    return ComparedRun(name, path, _read_json(run.summary), settings, run.read_metrics(), swept or {}, sweep)


def collect_runs(paths: list[str | Path]) -> tuple[list[ComparedRun], list[dict[str, Any]]]:
    """The finished runs behind ``paths`` (run folders, or sweep folders with ``sweep.json``), and the sweeps'
    records (to name what was swept and count the trials that did not finish)."""
    runs, sweeps = [], []
    for raw in paths:
        path = Path(raw)
        if (path / "sweep.json").exists():
            record = _read_json(path / "sweep.json")
            if not isinstance(record.get("trials"), list) or not all(isinstance(t, dict) for t in record["trials"]):
                raise ConfigError(f"{path / 'sweep.json'}: expected a list of trials (written by audioclf sweep)")
            record["root"] = str(path)
            sweeps.append(record)
            for trial in record["trials"]:
                if trial["state"] == "complete" and trial.get("run"):
                    swept = {key: value if not isinstance(value, (list, dict)) else json.dumps(value)
                             for key, value in trial.get("params", {}).items()}
                    runs.append(_run(Path(trial["run"]), f"{path.name}/trial_{trial['number']:03d}", swept,
                                     str(path)))
        elif (path / "summary.json").exists():
            runs.append(_run(path, path.name))
        else:
            raise ConfigError(f"{path}: neither a run directory (summary.json) nor a sweep (sweep.json)")
    if not runs:
        raise ConfigError("nothing to compare: no finished run among " + ", ".join(map(str, paths)))
    names = [r.name for r in runs]
    for run in runs:  # two runs with one folder name (runs/a/x, runs/b/x): name them by their paths
        if names.count(run.name) > 1:
            run.name = str(run.path)
    return runs, sweeps


# The metric a report tabulates beside another: Darna Sequeiros (2018) ranks AudioSet models by his per-example mAP
# (Table 1) and by pSR (Table 2), so a comparison led by the one shows the other next.
_COMPANIONS = {"mAP_per_example": ("pSR",)}


def _default_metrics(runs: list[ComparedRun], sweeps: list[dict[str, Any]]) -> list[str]:
    first = next((s["metric"] for s in sweeps if s.get("metric")), None) or runs[0].summary.get("monitor")
    names = [first] if first else []
    available = set(runs[0].summary.get("metrics", {}).get("val", {}))
    for extra in (*_COMPANIONS.get(first, ()), "log_loss", "mAP", "lwlrap", "macro_f1"):
        if extra in available and extra not in names and len(names) < 3:
            names.append(extra)
    return names


def _differing(runs: list[ComparedRun]) -> list[str]:
    keys = sorted({k for r in runs for k in r.settings})
    return [k for k in keys if len({json.dumps(r.settings.get(k), sort_keys=True, default=str) for r in runs}) > 1]


def compare(paths: list[str | Path], out: str | Path | None = None, metrics: list[str] | None = None) -> Path:
    """Compare the runs behind ``paths`` (see the module docstring); returns the folder written."""
    runs, sweeps = collect_runs(paths)
    metrics = metrics or _default_metrics(runs, sweeps)
    if not metrics:
        raise ConfigError("compare: name the metrics to compare (--metrics accuracy,log_loss)")
    ranked_by = metrics[0]
    if all(r.metric("val", ranked_by) is None for r in runs):
        raise ConfigError(f"compare: no run has a validation {ranked_by!r}; choose --metrics among "
                          + ", ".join(sorted(runs[0].summary.get("metrics", {}).get("val", {}))))
    if not out and len(sweeps) == 1 and len(paths) == 1:
        target = Path(sweeps[0]["root"])  # the sweep's own folder
    else:  # a folder of its own: never files of the same names in a folder of the user's (audioclf.ownership)
        target = claim_folder(Path(out or "comparison"), "comparison", key="--out")
    runs.sort(key=lambda r: r.rank_key(metrics))
    settings = _differing(runs)
    header, rows = _table(runs, metrics, settings)
    _write_csv(target / "comparison.csv", header, rows)
    plot_comparison_curves([(r.name, r.records) for r in runs], ranked_by, target / "curves.png")
    effects = _effects(runs, sweeps, ranked_by)
    if effects:
        plot_effects(effects, ranked_by, target / "effects.png")
    atomic_write_text(target / "comparison.md", _markdown(runs, sweeps, metrics, header, rows, effects))
    return target


def _table(runs: list[ComparedRun], metrics: list[str], settings: list[str]) -> tuple[list[str], list[list[Any]]]:
    header = ["run", *settings, *(f"{split} {m}" for m in metrics for split in ("val", "test")), "params", "MMACs",
              "epochs", "seconds"]  # seconds: see ComparedRun.seconds
    rows = []
    for run in runs:
        model = run.summary.get("model", {}).get("parameters", {})
        macs = model.get("macs")
        # The DCASE 2022 Task 1 counting rule, as `complexity` and the stages report use: parameters as deployed
        # (BatchNorm folded into the convolutions), MACs of one clip through the network (front-end excluded).
        rows.append([run.name, *(run.settings.get(k) for k in settings),
                     *(run.metric(split, m) for m in metrics for split in ("val", "test")),
                     model.get("deployed_params", model.get("total")), None if macs is None else macs / 1e6,
                     len(run.records), round(run.seconds, 1)])
    return header, rows


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    def cell(v: Any) -> Any:  # run names and config values are text a spreadsheet could take for a formula
        return "" if v is None else spreadsheet_text(v) if isinstance(v, str) else v

    writer.writerows([[cell(v) for v in row] for row in rows])
    atomic_write_text(path, buffer.getvalue())


def _effects(runs: list[ComparedRun], sweeps: list[dict[str, Any]], metric: str) -> dict[str, list[tuple[Any, list[float]]]]:
    """For each swept key: its values (in the sweep's order, or sorted numbers) and the metric of each run
    that had it."""
    if not sweeps:
        return {}
    by_key: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    shown: dict[str, dict[str, Any]] = defaultdict(dict)
    for run in runs:
        value = run.metric("val", metric)
        if run.sweep is None or value is None:
            continue
        for key, setting in run.swept.items():
            label = json.dumps(setting, sort_keys=True, default=str)
            by_key[key][label].append(value)
            shown[key][label] = setting
    effects = {}
    for key, values in by_key.items():
        labels = list(values)
        if all(isinstance(shown[key][lbl], (int, float)) and not isinstance(shown[key][lbl], bool) for lbl in labels):
            labels.sort(key=lambda lbl: shown[key][lbl])
        effects[key] = [(shown[key][lbl], values[lbl]) for lbl in labels]
    return effects


def _markdown(runs: list[ComparedRun], sweeps: list[dict[str, Any]], metrics: list[str], header: list[str],
              rows: list[list[Any]], effects: dict[str, list[tuple[Any, list[float]]]]) -> str:
    ranked_by = metrics[0]
    lines = ["# Comparison", "",
             f"{len(runs)} runs, ranked by validation {ranked_by}"
             f"{' (ties by ' + ', '.join(metrics[1:]) + ')' if len(metrics) > 1 else ''}; the test columns are "
             "reported, never used to choose. `params`: as deployed (BatchNorm folded), `MMACs`: one clip through the "
             "network, front-end excluded (the DCASE 2022 Task 1 rule). `seconds`: wall time of data preparation and training. "
             "`comparison.csv` has every number unrounded.", ""]
    for record in sweeps:
        states = defaultdict(int)
        for trial in record["trials"]:
            states[trial["state"]] += 1
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        lines.append(f"Sweep `{record['root']}` ({record['sampler']}): {counts}.")
        for trial in record["trials"]:
            if trial.get("error"):
                lines.append(f"- trial {trial['number']} failed: {trial['error']}")
    lines += ["", markdown_table(header, rows), ""]
    if len(runs) > 1:
        best, worst = runs[0], runs[-1]
        differ = {k: (best.settings.get(k), worst.settings.get(k)) for k in _differing([best, worst])}
        lines += ["## Best and worst", "",
                  f"- best: **{best.name}**, validation {ranked_by} {format_number(best.metric('val', ranked_by))}, "
                  f"test {format_number(best.metric('test', ranked_by))}",
                  f"- worst: **{worst.name}**, validation {ranked_by} {format_number(worst.metric('val', ranked_by))}, "
                  f"test {format_number(worst.metric('test', ranked_by))}"]
        if differ:
            lines.append("- they differ in: " + "; ".join(f"`{k}` {a} vs {b}" for k, (a, b) in differ.items()))
        lines.append("")
    lines += ["![learning curves](curves.png)", ""]
    if effects:
        lines += ["## Effect of each swept key", "",
                  f"Validation {ranked_by} of the trials with each value (mean, min, max, trials).", ""]
        for key, values in effects.items():
            table = [[value if not isinstance(value, float) else format_number(value), float(np.mean(scores)),
                      float(np.min(scores)), float(np.max(scores)), len(scores)] for value, scores in values]
            lines += [f"### {key}", "", markdown_table([key, "mean", "min", "max", "trials"], table), ""]
        lines += ["![effects](effects.png)", ""]
    return "\n".join(lines)
