"""``report.md`` in a run directory: the run's tables and plots in one readable page.

Built only from files the run already wrote (summary.json, quantization.json, plots/), so it can be
regenerated at any time (:func:`write_report`) and never disagrees with them.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..console import format_number, markdown_table
from ..data.duplicates import findings_line
from ..files import atomic_write_text, spreadsheet_text
from ..metrics import higher_is_better, ordered_metric_names, primary_metric, shown_metric_names
from .diagnostics import diagnose, group_list
from .directory import RunDir


def _grouped(values: dict[str, float], prefix: str) -> dict[str, dict[str, float]]:
    """``prefix/<a>/<b>/<metric>`` (per_group) or ``prefix/<a>/<metric>`` (per_class) -> rows."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        parts = key.split("/")
        if parts[0] != prefix:
            continue
        name = "=".join(parts[1:-1])
        rows.setdefault(name, {})[parts[-1]] = value
    return rows


def _rows_table(rows: dict[str, dict[str, float]], first: str) -> str:
    metrics = sorted({m for row in rows.values() for m in row})
    return markdown_table([first, *metrics], [[name, *[rows[name].get(m) for m in metrics]] for name in sorted(rows)])


MANY_GROUPS = 12  # above this, report.md summarises the groups and the full table goes to a CSV


def _group_section(groups: dict[str, dict[str, float]], split: str, task: str | None) -> list[str]:
    """Per-group results: the table itself for a few groups; for many (one per source recording, say), each
    metric's mean / min / max over the groups and the worst groups, the full table in ``per_group_<split>.csv``."""
    if len(groups) <= MANY_GROUPS:
        return [f"## Per group ({split})", "", _rows_table(groups, "group"), ""]
    names = sorted({m for row in groups.values() for m in row})
    stats = []
    for name in names:
        values = [row[name] for row in groups.values() if name in row]
        stats.append([name, float(np.mean(values)), float(np.min(values)), float(np.max(values))])
    key = primary_metric(task) if task in ("single_label", "multi_label") and primary_metric(task) in names else names[0]
    sign = 1 if higher_is_better(key) else -1
    worst = sorted((g for g in groups if key in groups[g]), key=lambda g: sign * groups[g][key])[:5]
    return [f"## Per group ({split}): {len(groups)} groups", "",
            markdown_table(["metric", "mean over groups", "lowest", "highest"], stats), "",
            f"The 5 worst groups by {key}:", "", _rows_table({g: groups[g] for g in worst}, "group"), "",
            f"Every group: `per_group_{split}.csv`.", ""]


def write_group_csv(run: RunDir, groups: dict[str, dict[str, float]], split: str) -> Path:
    """``per_group_<split>.csv``: one row per group, one column per metric."""
    names = sorted({m for row in groups.values() for m in row})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", *names])
    for group in sorted(groups):
        writer.writerow([spreadsheet_text(group), *[groups[group].get(m, "") for m in names]])  # from the data
    path = run.root / f"per_group_{split}.csv"
    atomic_write_text(path, buffer.getvalue())
    return path


def build_report(run_dir: str | Path) -> str:
    run = RunDir(run_dir)
    summary = run.read_summary()
    metrics = summary.get("metrics", {})
    model = summary.get("model", {})
    params = model.get("parameters", {})
    out = [f"# Run report: `{run.root.name}`", ""]
    facts = [["task", summary.get("task")], ["model", model.get("name")],
             ["classes", len(summary.get("classes", []))],
             ["items (train / val / test)", " / ".join(str(summary.get("counts", {}).get(s, 0)) for s in ("train", "val", "test"))],
             ["best epoch (monitor)", f"{summary.get('best_epoch')} ({summary.get('monitor')})"]]
    if summary.get("stopped"):  # a time cap or a diverging epoch ended it before train.epochs
        facts.append(["stopped", summary["stopped"]])
    if summary.get("noisy_labels"):  # train.noisy: what confident learning changed before training
        facts.append(["noisy labels", summary["noisy_labels"]["message"].removeprefix("noisy labels: ")])
    groups = summary.get("split_groups")
    if groups:  # which speakers (devices ...) each split holds: what a validation/test gap is about
        facts.append([f"{groups['column']} per split (kept apart)",
                      "; ".join(f"{s} {group_list(groups.get(s, {}))}" for s in ("train", "val", "test"))])
    if summary.get("sample_rate"):
        facts.append(["audio", f"{summary['sample_rate']} Hz, {summary.get('clip_seconds')} s clips"])
    if params:
        facts.append(["parameters (total / trainable)", f"{params.get('total', 0):,} / {params.get('trainable', 0):,}"])
    if params.get("macs") is not None:
        facts.append(["MACs per inference (BN folded)", f"{params['macs']:,} ({params['macs'] / 1e6:.2f} M)"])
    out += [markdown_table(["", ""], facts), ""]

    splits = [s for s in ("train", "val", "test") if metrics.get(s)]
    if splits:
        names = shown_metric_names({s: metrics[s] for s in splits})
        out += ["## Metrics", "", markdown_table(["metric", *splits], [[n, *[metrics[s].get(n) for s in splits]] for n in names]), ""]
    findings = diagnose(summary, run.read_metrics())
    if findings:
        out += ["## Diagnostics", "", *[f"- {finding}" for finding in findings], ""]
    last = splits[-1] if splits else None
    if last:
        groups = _grouped(metrics[last], "per_group")
        if groups:
            out += _group_section(groups, last, summary.get("task"))
        per_class = _grouped(summary.get("per_class", {}).get(last, {}), "per_class")
        if per_class:
            out += [f"## Per class ({last})", "", _rows_table(per_class, "class"), ""]

    out += _members_section(summary.get("members"))
    out += _decisions_section(summary.get("decisions"), summary.get("task"))
    distillation = summary.get("distillation")
    if distillation:
        teacher = distillation.get("teacher_metrics", {}).get("test", {})
        student = metrics.get("test", {})
        names = ordered_metric_names(set(teacher) & set(student))
        out += ["## Distillation", "", f"Teachers: {', '.join(distillation['teachers'])}; T = {distillation['T']}, "
                f"alpha = {distillation['alpha']}.", "",
                markdown_table(["metric (test)", "teacher", "student"], [[n, teacher.get(n), student.get(n)] for n in names]), ""]

    q = run.read_quantization()
    if q is not None:
        names = ordered_metric_names(q["fp32"]["metrics"])
        rows = [[n, q["fp32"]["metrics"].get(n), q["int8"]["metrics"].get(n), q["drop"].get(n)] for n in names]
        rows.append(["file bytes", q["fp32"]["bytes"], q["int8"]["bytes"], f"x{q['size_ratio']:.2f}"])
        out += [f"## INT8 quantization ({q['method']})", "", markdown_table(["metric (test)", "fp32", "int8", "drop"], rows), ""]

    out += _search_section(run.root / "search.json")
    plots = sorted(p.name for p in run.plots.glob("*.png")) if run.plots.exists() else []
    if plots:
        out += ["## Plots", ""] + [f"![{Path(name).stem}](plots/{name})" for name in plots] + [""]
    checked = summary.get("data_check")
    if checked is not None:  # data.doctor's quick checks before training
        out += ["## Data check", "", findings_line([f["kind"] for f in checked]), ""] + [f"- {f['kind']}: {f['message']}" for f in checked]
        out += [""] if checked else []
    skipped = summary.get("skipped", [])
    if skipped:
        out += [f"## Skipped files ({len(skipped)})", ""] + [f"- `{s['path']}`: {s['reason']}" for s in skipped] + [""]
    return "\n".join(out)


_CHOSEN = {"ensemble": "the average of the network and the classical member",
           "classical": "the classical member alone", "network": "the network alone"}
_MEMBER_ROWS = {"network": "network (the trained model)",
                "classical": "classical member (utterance statistics + SVM)",
                "probe": "probe member ({backbone} embeddings + logistic regression)"}


def _kept(members: dict) -> str:
    chosen, weights = members.get("chosen", "network"), members.get("weights", {})
    if set(weights) <= {"network", "classical"} or (chosen in _CHOSEN and chosen != "ensemble"):
        return _CHOSEN[chosen]
    names = [name for name, weight in weights.items() if weight]
    if len(names) == 1:
        return f"the {names[0]} member alone"
    return f"the equal average of {', '.join(names)}"


def _members_section(members: dict | None) -> list[str]:
    """The ensemble's members (training.members): each one's score per split and which the run kept."""
    if not members:
        return []
    lines = ["## Ensemble members", "", f"Kept: {_kept(members)}. {members.get('why', '')}", ""]
    per_split = members.get("per_split", {})
    splits = [s for s in ("val", "test") if s in per_split.get("network", {})]
    if per_split and splits:
        backbone = members.get("probe", {}).get("backbone", "pretrained")
        rows = [[label.format(backbone=backbone), *[per_split[name].get(s) for s in splits]]
                for name, label in _MEMBER_ROWS.items() if name in per_split]
        lines += [markdown_table([f"member ({members.get('monitor', 'accuracy')})", *splits], rows), ""]
    lines += ["The metrics above are the kept predictor's. Validation chose it, so its validation score is optimistic; "
              "the test column is the fair comparison.", ""]
    return lines


def _decisions_section(decisions: dict | None, task: str | None) -> list[str]:
    """How the run's probabilities become labels (audioclf.calibration): the temperature and, multi-label, the
    threshold of each class, with the classes that fell back to 0.5 and why."""
    if not decisions:
        return []
    lines = ["## Decisions", ""]
    if decisions.get("why"):
        lines += [decisions["why"] + ".", ""]
    if decisions.get("calibrated"):
        nll, ece = decisions.get("val_nll", {}), decisions.get("ece", {})
        lines += [f"Temperature scaling: T = {decisions['temperature']:.3f}, fitted on validation (NLL "
                  f"{format_number(nll.get('before'))} -> {format_number(nll.get('after'))}); every probability above "
                  "is calibrated.", ""]
        if ece:
            lines += [markdown_table(["ECE (15 bins)", *ece], [["before", *[v["before"] for v in ece.values()]],
                                                               ["after", *[v["after"] for v in ece.values()]]]), ""]
    else:
        lines += ["No temperature scaling (train.calibrate=false); `ece` above is the model's own calibration.", ""]
    thresholds = decisions.get("thresholds")
    if task == "multi_label" and thresholds:
        fallbacks = decisions.get("fallbacks", {})
        lines += [f"Per-class thresholds chosen on validation (rule `{decisions.get('rule', 'f1')}`; a class is "
                  "predicted when its probability is above its threshold; the decision metrics above use them):", "",
                  markdown_table(["class", "threshold", "note"],
                                 [[name, t, fallbacks.get(name, "")] for name, t in thresholds.items()]), ""]
        if fallbacks:
            lines += [f"{len(fallbacks)} class(es) kept 0.5 or missed the target: see the notes.", ""]
    return lines


def _search_section(path: Path) -> list[str]:
    """The trials of a ``train.time_budget`` search (search.json), the kept one in bold."""
    if not path.exists():
        return []
    search = json.loads(path.read_text())
    trials, best = search["trials"], search["best_trial"]
    keys = sorted({key for trial in trials for key in trial["params"]})
    rows = [[f"**{t['number']}**" if t["number"] == best else t["number"], t["state"], t["value"], t["epochs"],
             *[t["params"].get(key) for key in keys]] for t in trials]
    title = (f"## Search: {len(trials)} trials in {search['seconds'] / 60:.1f} of {search['budget_seconds'] / 60:.1f} "
             f"min; this run is trial {best}")
    return [title, "", markdown_table(["trial", "state", f"val {search['monitor']}", "epochs", *keys], rows), ""]


def write_report(run_dir: str | Path) -> Path:
    """``report.md`` (and, when the groups are many, ``per_group_<split>.csv``)."""
    run = RunDir(run_dir)
    metrics = run.read_summary().get("metrics", {})
    last = next((s for s in ("test", "val", "train") if metrics.get(s)), None)
    groups = _grouped(metrics[last], "per_group") if last else {}
    if len(groups) > MANY_GROUPS:
        write_group_csv(run, groups, last)
    path = run.root / "report.md"
    atomic_write_text(path, build_report(run_dir))
    return path
