"""report.md stays readable: a few groups as a table; many groups summarised with the worst ones, every group
in a CSV."""

from __future__ import annotations

import csv
import json

from audioclf.runs import RunDir
from audioclf.runs.report import MANY_GROUPS, write_report


def _run_with_groups(root, n_groups):
    test = {"accuracy": 0.8, "log_loss": 0.5, "loss": 0.5}
    for g in range(n_groups):
        test[f"per_group/recording/r{g:02d}/accuracy"] = g / n_groups
        test[f"per_group/recording/r{g:02d}/log_loss"] = 1 - g / n_groups
    root.mkdir()
    (root / "summary.json").write_text(json.dumps({"task": "single_label", "classes": ["a", "b"],
                                                   "metrics": {"test": test}, "best_epoch": 3, "monitor": "accuracy"}))
    return RunDir(root)


def test_a_few_groups_are_a_table(tmp_path):
    run = _run_with_groups(tmp_path / "few", 3)
    text = write_report(run.root).read_text()
    assert "## Per group (test)" in text and "| recording=r02 |" in text
    assert not (run.root / "per_group_test.csv").exists()
    assert "| loss |" not in text  # it repeats log_loss


def test_many_groups_are_summarised_with_the_worst_and_the_rest_in_a_csv(tmp_path):
    n = MANY_GROUPS + 48
    run = _run_with_groups(tmp_path / "many", n)
    text = write_report(run.root).read_text()
    assert f"## Per group (test): {n} groups" in text and "The 5 worst groups by accuracy" in text
    assert "| recording=r00 |" in text and "| recording=r40 |" not in text  # the worst, not all 60
    assert text.count("| recording=") == 5
    with open(run.root / "per_group_test.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == n and rows[0]["group"] == "recording=r00" and float(rows[-1]["accuracy"]) == (n - 1) / n
