"""Label issues by confident learning (training.label_issues) and ``train.noisy`` (training.noisy): flipped labels
in a generated set are found, drop / relabel / weight do what they say, and bad settings are one line."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import audioclf
from audioclf.config import config_from_dict
from audioclf.errors import ConfigError, DataError
from audioclf.training.inputs import inputs_for
from audioclf.training.label_issues import find_label_issues
from audioclf.training.noisy import handle_noisy_labels
from separable import CLASSES, separable_clips

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from noisy_labels import flip_labels, precision_recall  # noqa: E402

PER_CLASS = 20


@pytest.fixture(scope="module")
def clean_csv(tmp_path_factory):
    """The four separable classes (20 clips each): clips 0-14 train, 15-17 val, 18-19 test; every third clip of
    the training split is in group source=noisy, the others source=curated."""
    root = tmp_path_factory.mktemp("noisy")
    paths = separable_clips(root / "clips", PER_CLASS)
    rows = []
    for name, files in paths.items():
        for i, path in enumerate(files):
            split = "train" if i < 15 else "val" if i < 18 else "test"
            source = "noisy" if split == "train" and i % 3 == 0 else "curated"
            rows.append({"fname": str(path), "labels": name, "split": split, "source": source})
    path = root / "labels.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["fname", "labels", "split", "source"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def flipped(clean_csv, tmp_path_factory):
    """15 % of the 60 training labels flipped (9 files): the csv and the flipped paths."""
    out = tmp_path_factory.mktemp("flipped") / "labels.csv"
    return out, flip_labels(clean_csv, out, 0.15, seed=3)


def _prepared(csv_path: Path, **train):
    inputs = inputs_for(config_from_dict({"data": {"path": str(csv_path), "group": "none"}, "train": train}))
    inputs.prepare()
    return inputs


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_flip_labels_moves_the_asked_share_of_training_rows_to_another_class(clean_csv, flipped):
    out, changed = flipped
    before = {row["fname"]: row for row in _read(clean_csv)}
    after = {row["fname"]: row for row in _read(out)}
    moved = {name for name, row in after.items() if row["labels"] != before[name]["labels"]}
    assert moved == changed and len(moved) == 9  # round(0.15 * 60)
    assert all(after[name]["split"] == "train" and after[name]["labels"] in CLASSES for name in moved)
    assert flip_labels(clean_csv, out.with_name("again.csv"), 0.15, seed=3) == changed  # seeded


def test_confident_learning_finds_the_flipped_labels(flipped):
    out, changed = flipped
    inputs = _prepared(out)
    issues = find_label_issues(inputs, folds=5, seed=0)
    paths = {item.id: item.path for item in inputs.prepared.split("train")}
    ranked = issues.ranked()
    precision, recall = precision_recall({paths[issue.id] for issue in ranked}, changed)
    # Measured precision / recall 1.0 / 0.78 with this flip seed (seeds 4 and 5: 1.0 / 1.0, 0.9 / 1.0); the
    # bounds allow one more miss or one more false alarm (a different scikit-learn or cleanlab).
    assert precision >= 0.8 and recall >= 0.7, (precision, recall)
    assert [issue.quality for issue in ranked] == sorted(issue.quality for issue in ranked)
    true_class = {str(path): Path(path).parent.name for path in changed}
    right = [issue for issue in ranked if paths[issue.id] in true_class]
    assert all(issue.suggested == true_class[paths[issue.id]] != issue.given for issue in right)
    assert issues.folds == 5 and issues.folds_by == "file"


def test_a_near_tie_between_two_classes_is_not_flagged_a_clear_other_class_is():
    from audioclf.training.label_issues import rank_label_issues

    given = np.repeat([0, 1, 2], 20)
    probs = np.full((60, 3), 0.25)
    probs[np.arange(60), given] = 0.5  # a hesitant quick model: 0.5 on the given class
    probs[0], probs[1] = [0.35, 0.55, 0.10], [0.34, 0.56, 0.10]  # class 1 ahead of the given 0 by ~0.2
    probs[20], probs[40] = [0.05, 0.05, 0.90], [0.90, 0.05, 0.05]  # another class ahead by 0.85
    flagged, _ = rank_label_issues(given, probs)
    # cleanlab alone flags all four (each suggested class is above its threshold, 0.5); the margin keeps two
    assert np.flatnonzero(flagged).tolist() == [20, 40]
    assert np.flatnonzero(rank_label_issues(given, probs, min_margin=0.0)[0]).tolist() == [0, 1, 20, 40]


def test_drop_relabel_and_weight_change_only_the_flagged_training_files(flipped):
    out, _ = flipped
    reference = _prepared(out)
    issues = find_label_issues(reference, folds=reference.cfg.train.noisy_folds, seed=0)  # as train.noisy's search
    flagged = {issue.id: issue.suggested for issue in issues.ranked()}
    assert flagged
    before = {item.id: item for item in reference.prepared.manifest}

    dropped = _prepared(out, noisy="drop")
    entry = handle_noisy_labels(dropped, dropped.cfg.train, 0)
    assert {item.id for item in dropped.prepared.manifest} == set(before) - set(flagged)
    assert entry["changed"] == entry["flagged"] == len(flagged) and entry["noisy_files"] == 60
    assert entry["message"].startswith(f"noisy labels: dropped {len(flagged)} of 60 training files by confident")

    relabelled = _prepared(out, noisy="relabel")
    handle_noisy_labels(relabelled, relabelled.cfg.train, 0)
    labels = {item.id: item.labels for item in relabelled.prepared.manifest}
    assert labels == {key: ((flagged[key],) if key in flagged else item.labels) for key, item in before.items()}

    weighted = _prepared(out, noisy="weight")
    handle_noisy_labels(weighted, weighted.cfg.train, 0)
    targets = weighted.dataset("train", train=True).targets.numpy()
    order = [item.id for item in weighted.prepared.split("train")]
    given = issues.given[[issues.ids.index(key) for key in order]]
    quality = issues.quality[[issues.ids.index(key) for key in order]]
    assert np.allclose(targets, np.eye(4)[given] * quality[:, None], atol=1e-6)
    assert weighted.dataset("train", train=False).targets.dtype.is_floating_point is False  # evaluation: indices
    low = [order.index(key) for key in flagged]
    assert targets[low].sum(1).max() < np.median(targets.sum(1))  # the flagged count far less than most


def test_noisy_items_limits_the_changes_to_the_marked_part(flipped):
    out, _ = flipped
    inputs = _prepared(out, noisy="drop", noisy_items="source=noisy")
    sources = {item.id: item.groups["source"] for item in inputs.prepared.manifest}
    before = set(sources)
    entry = handle_noisy_labels(inputs, inputs.cfg.train, 0)
    gone = before - {item.id for item in inputs.prepared.manifest}
    assert gone and all(sources[key] == "noisy" for key in gone)
    assert entry["noisy_files"] == 20 and "training files with source=noisy" in entry["message"]

    weighted = _prepared(out, noisy="weight", noisy_items="source=noisy")
    handle_noisy_labels(weighted, weighted.cfg.train, 0)
    rows = weighted.dataset("train", train=True).targets.numpy().sum(1)
    curated = np.array([item.groups["source"] == "curated" for item in weighted.prepared.split("train")])
    assert np.all(rows[curated] == 1.0) and np.any(rows[~curated] < 0.5)


@pytest.mark.slow  # end to end (2-4 s): make test-slow, to keep make test under five minutes
def test_a_run_with_noisy_drop_records_it_in_the_header_config_summary_and_snapshot(flipped, tmp_path, capsys):
    out, _ = flipped
    run = audioclf.train(out, out=tmp_path / "run", data={"group": "none"},
                         train={"epochs": 1, "batch_size": 16, "noisy": "drop", "loss": "gce", "ensemble": "none"},
                         augment={"mixup_alpha": 0.0}, features={"n_mels": 32, "n_fft": 512, "hop_length": 320})
    err = " ".join(capsys.readouterr().err.split())
    assert "noisy labels dropped" in err and "of 60 training files by confident learning" in err
    assert "generalised cross-entropy, q=0.7" in err
    root = run.root
    config = yaml.safe_load((root / "config.yaml").read_text())
    assert config["train"]["noisy"] == "drop" and config["train"]["loss"] == "gce"
    summary = json.loads((root / "summary.json").read_text())
    entry = summary["noisy_labels"]
    assert entry["message"].removeprefix("noisy labels: ") in (root / "report.md").read_text()
    snapshot = _read(next(root.glob("manifest*.csv")))
    assert sum(row["split"] == "train" for row in snapshot) == 60 - entry["changed"] and entry["changed"] > 0
    # Resumed, the run goes on with the files it kept: its already-cleaned snapshot is not flagged again.
    audioclf.train(out, out=root, resume=True, quiet=True, data={"group": "none"},
                   train={"epochs": 2, "batch_size": 16, "noisy": "drop", "loss": "gce", "ensemble": "none"},
                   augment={"mixup_alpha": 0.0}, features={"n_mels": 32, "n_fft": 512, "hop_length": 320})
    resumed = json.loads((root / "summary.json").read_text())
    assert resumed["noisy_labels"] == entry and resumed["best_epoch"] in (1, 2)
    assert _read(next(root.glob("manifest*.csv"))) == snapshot


@pytest.mark.parametrize("train, message", [
    ({"noisy": "remove"}, "train.noisy='remove': expected none | drop | relabel | weight"),
    ({"noisy": "drop", "noisy_items": "noisy"}, "train.noisy_items='noisy': expected null"),
    ({"noisy": "drop", "noisy_folds": 1}, "train.noisy_folds"),
    ({"loss": "focal"}, "train.loss='focal': expected task | gce"),
])
def test_bad_noisy_settings_are_one_line_config_errors_before_anything_is_written(clean_csv, tmp_path, train,
                                                                                  message):
    with pytest.raises(ConfigError, match=message.replace("|", r"\|").replace("(", r"\(")):
        audioclf.train(clean_csv, out=tmp_path / "bad", quiet=True, train=train)
    assert not (tmp_path / "bad").exists()


def test_data_that_cannot_be_checked_is_one_line(clean_csv, tmp_path):
    with pytest.raises(ConfigError, match="no group column 'speaker'"):
        inputs = _prepared(clean_csv, noisy="drop", noisy_items="speaker=a")
        handle_noisy_labels(inputs, inputs.cfg.train, 0)
    rows = _read(clean_csv)
    one = tmp_path / "one.csv"  # white keeps a single training file
    kept = [row for row in rows if row["labels"] != "white" or row["split"] != "train"]
    kept.append(next(row for row in rows if row["labels"] == "white" and row["split"] == "train"))
    _write(one, kept)
    with pytest.raises(DataError, match="class 'white' has 1 training file"):
        find_label_issues(_prepared(one))
    tagged = tmp_path / "multi.csv"
    _write(tagged, [{**row, "labels": row["labels"] + ",white" if row["labels"] == "rumble" else row["labels"]}
                    for row in rows])
    with pytest.raises(DataError, match="label issues: single-label data only"):
        find_label_issues(_prepared(tagged))
    with pytest.raises(DataError, match="90 folds need at least 90 groups; the training split has 60"):
        find_label_issues(_prepared(clean_csv), folds=90)


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def test_the_doctor_lists_the_flipped_labels_and_can_skip_the_search(flipped, tmp_path, capsys):
    from audioclf.cli import main

    out, changed = flipped
    assert main(["doctor", "--data", str(out), "--out", str(tmp_path / "report")]) == 0
    said = capsys.readouterr().out
    assert "label issues: confident learning (cleanlab) on out-of-fold probabilities of 10 folds" in said
    doctor_md = (tmp_path / "report" / "doctor.md").read_text()
    listed = {str(path) for path in changed if f"{path}: labelled " in doctor_md}
    assert len(listed) >= 0.7 * len(changed), (listed, changed)  # as find_label_issues' recall above
    assert "train.noisy=drop|relabel" in doctor_md
    assert main(["doctor", "--data", str(out), "--no-labels"]) == 0
    said = capsys.readouterr().out
    assert "label issues: not looked for (--no-labels)" in said and "label_issue" not in said
