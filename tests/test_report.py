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


def test_the_groups_kept_apart_are_listed_per_split(tmp_path):
    run = _run_with_groups(tmp_path / "speakers", 2)
    summary = json.loads(run.summary.read_text())
    summary["split_groups"] = {"column": "speaker", "train": {"count": 3, "names": ["s1", "s2", "s3"]},
                               "val": {"count": 1, "names": ["s4"]}, "test": {"count": 1, "names": ["s5"]}}
    run.summary.write_text(json.dumps(summary))
    text = write_report(run.root).read_text()
    assert "| speaker per split (kept apart) | train 3 (s1, s2, s3); val 1 (s4); test 1 (s5) |" in text


def test_audio_inputs_record_the_groups_each_split_holds():
    from audioclf.config import load_config
    from audioclf.data.manifest import Item, Manifest
    from audioclf.data.prepare import PreparedData
    from audioclf.training.inputs import AudioInputs

    speakers = {"train": [f"s{i:02d}" for i in range(25)], "val": ["v1"], "test": ["t1", "t2"]}
    items = [Item(f"{split}-{name}", f"{name}.wav", ("a",), split=split, groups={"speaker": name, "room": "r1"})
             for split, names in speakers.items() for name in names]
    inputs = AudioInputs(load_config(None, ["data.path=x.csv", "data.group=speaker"]))
    inputs.prepared = PreparedData(Manifest(items), {}, [], 16000, 1.0)
    groups = inputs.split_groups()
    assert groups["column"] == "speaker" and groups["val"] == {"count": 1, "names": ["v1"]}
    assert groups["test"] == {"count": 2, "names": ["t1", "t2"]}
    assert groups["train"]["count"] == 25 and len(groups["train"]["names"]) == 20  # capped in summary.json
    # No group column kept apart: nothing to say about groups.
    inputs = AudioInputs(load_config(None, ["data.path=x.csv"]))
    inputs.prepared = PreparedData(Manifest(items), {}, [], 16000, 1.0)
    assert inputs.split_groups() is None
