"""Multi-label label issues (training.label_issues.find_multilabel_issues, cleanlab's multi-label confident
learning): tags planted missing or extra in a generated multi-label set are found, and the doctor lists them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from audioclf.config import config_from_dict
from audioclf.errors import DataError
from audioclf.training.inputs import inputs_for
from audioclf.training.label_issues import find_label_issues, find_multilabel_issues

SR = 16000
TAGS = ("rumble", "low_tone", "mid_tone", "high_tone")


def _source(tag: str, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import lfilter

    t = np.arange(SR) / SR
    if tag == "rumble":
        return 3 * lfilter([0.05], [1, -0.95], rng.normal(size=SR))
    low, high = {"low_tone": (300, 400), "mid_tone": (1100, 1300), "high_tone": (3000, 3500)}[tag]
    return np.sin(2 * np.pi * rng.uniform(low, high) * t)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """100 one-second clips, each a mix of one or two of four sources (tagged with them), 80 in train (a few of
    them go to validation); in train,
    4 clips lose one of their two tags and 4 gain a tag they do not hold. Returns the CSV and the planted paths."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("tagged")
    rng = np.random.default_rng(5)
    rows, planted = [], set()
    for i in range(100):
        tags = sorted(rng.choice(TAGS, 1 + i % 2, replace=False).tolist())
        wave = sum(_source(tag, rng) for tag in tags) + 0.05 * rng.normal(size=SR)
        path = root / f"clip_{i:03d}.wav"
        sf.write(path, (wave / np.abs(wave).max() * rng.uniform(0.2, 0.9)).astype(np.float32), SR)
        split = "train" if i < 80 else "test"
        written = list(tags)
        if i < 16 and i % 2 == 1:  # two-tag clips 1, 3, ..., 7 miss one; 9, ..., 15 keep both
            if i < 8:
                written.remove(written[rng.integers(2)])
                planted.add(str(path))
        elif i < 16 and i % 4 == 0:  # one-tag clips 0, 4, 8, 12 gain another
            written.append(str(rng.choice([t for t in TAGS if t not in tags])))
            planted.add(str(path))
        rows.append({"fname": str(path), "labels": ",".join(sorted(written)), "split": split})
    out = root / "labels.csv"
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["fname", "labels", "split"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out, planted


def _prepared(path: Path):
    inputs = inputs_for(config_from_dict({"data": {"path": str(path), "group": "none"}}))
    inputs.prepare()
    return inputs


def test_missing_and_extra_tags_are_found_with_the_tags_the_model_hears(tagged):
    path, planted = tagged
    inputs = _prepared(path)
    assert inputs.task == "multi_label"
    issues = find_multilabel_issues(inputs, folds=5, seed=0)
    paths = {item.id: item.path for item in inputs.prepared.split("train")}
    found = {paths[issue.id] for issue in issues.ranked()}
    hits = found & planted
    assert len(hits) >= 6, (found, planted)  # recall at least 0.75
    assert len(hits) >= 0.6 * len(found), (found, planted)  # precision at least 0.6
    assert issues.given.shape == issues.suggested.shape == (len(paths), len(TAGS))
    first = next(issue for issue in issues.ranked() if paths[issue.id] in planted)
    assert first.given != first.suggested and set(first.suggested.split(",")) <= set(TAGS)
    with pytest.raises(DataError, match="single-label data only here"):
        find_label_issues(inputs)


def test_the_doctor_lists_the_doubted_tags_of_a_multi_label_set(tagged, tmp_path):
    from audioclf.config import load_config
    from audioclf.workflows.doctor import doctor_data

    path, planted = tagged
    result = doctor_data(load_config(None, [f"data.path={path}", "data.group=none"]), tmp_path / "report",
                         progress=False)
    assert "training labels doubted" in result.labels_note
    listed = {p for finding in result.findings if finding.kind == "label_issue" for p in finding.paths}
    assert len(listed & planted) >= 6, (listed, planted)
    assert all("missing or an extra tag" in f.fix for f in result.findings if f.kind == "label_issue")
    assert "## label issue" in (tmp_path / "report" / "doctor.md").read_text()
