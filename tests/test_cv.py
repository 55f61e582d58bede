import csv
import json

import numpy as np
import pytest

from audioclf.cli import main
from audioclf.workflows.cv import assign_folds, summarize_folds
from audioclf.data.manifest import Item, Manifest
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import ConfigError


def test_assign_folds_is_stratified_and_covers_every_item():
    items = [Item(f"i{n}", f"{n}.wav", (("a", "b", "c")[n % 3],)) for n in range(30)]
    folds = assign_folds(Manifest(items), 5, seed=0)
    assert sorted(set(folds)) == [1, 2, 3, 4, 5]
    for fold in range(1, 6):
        labels = [items[i].labels[0] for i, f in enumerate(folds) if f == fold]
        assert sorted(labels) == ["a", "a", "b", "b", "c", "c"]
    with pytest.raises(ConfigError, match="fewer than 20"):
        assign_folds(Manifest(items), 20)


def test_summarize_folds_mean_and_sample_std():
    summaries = {1: {"metrics": {"test": {"accuracy": 0.5}}}, 2: {"metrics": {"test": {"accuracy": 0.7}}}}
    table = summarize_folds(summaries)
    assert table["accuracy"]["mean"] == pytest.approx(0.6)
    assert table["accuracy"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_cv_on_predefined_folds_reports_mean_and_std(tmp_path, capsys):
    data = make_demo_dataset(tmp_path / "data", n_per_class=6, seconds=1.0, seed=4)
    rows = [{"fname": str(p.relative_to(data)), "labels": p.parent.name, "fold": 1 + i % 3}
            for i, p in enumerate(sorted(data.rglob("*.wav")))]
    with open(data / "meta.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["fname", "labels", "fold"])
        writer.writeheader()
        writer.writerows(rows)
    code = main(["train", "--data", str(data / "meta.csv"), "--out", str(tmp_path / "cv"), "cv=folds",
                 "train.epochs=1", "data.clip_seconds=1.0", "features.n_mels=32"])
    assert code == 0
    summary = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert summary["folds"] == [1, 2, 3]
    assert len(summary["test"]["accuracy"]["folds"]) == 3
    assert "±" in capsys.readouterr().out
    for fold in (1, 2, 3):
        with open(tmp_path / "cv" / f"fold_{fold}" / "manifest.csv") as handle:
            test_ids = [r["id"] for r in csv.DictReader(handle) if r["split"] == "test"]
        assert len(test_ids) == sum(1 for r in rows if r["fold"] == fold)
    report = (tmp_path / "cv" / "report.md").read_text()
    accuracy = summary["test"]["accuracy"]
    assert f"| accuracy | {accuracy['mean']:.4f} ± {accuracy['std']:.4f} |" in report
    assert "(fold_2/report.md)" in report and (tmp_path / "cv" / "plots" / "folds.png").stat().st_size > 1000
