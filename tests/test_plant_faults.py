"""benchmarks/plant_faults.py: planted faults land where the truth says, outside the source, and the doctor finds
every planted duplicate and group leak on a small generated set."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from audioclf.config import load_config
from audioclf.data.audio import write_audio
from audioclf.workflows.doctor import doctor_data
from layouts import write_table
from test_doctor import clip

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import plant_faults  # noqa: E402


def _source(root: Path, n: int = 30) -> Path:
    rows = []
    for i in range(n):
        write_audio(root / "audio" / f"c{i}.wav", clip(i, rate=16000), 16000)  # lossy codecs at 8 kHz are crude
        # speakers of three clips each, whole speakers per split
        rows.append((f"audio/c{i}.wav", ("dog", "rain")[i % 2], ("train", "train", "val", "test", "train")[(i // 3) % 5],
                     f"s{i // 3}"))
    return write_table(root / "labels.csv", ("fname", "labels", "split", "group"), rows)


def test_planted_faults_are_written_outside_the_source_and_all_found(tmp_path):
    source = _source(tmp_path / "source")
    before = sorted(p.name for p in (tmp_path / "source").rglob("*"))
    truth = plant_faults.plant_faults(source, tmp_path / "planted", seed=1, n_exact=3, n_near=1)
    assert sorted(p.name for p in (tmp_path / "source").rglob("*")) == before  # nothing written next to the source
    assert json.loads((tmp_path / "planted" / "truth.json").read_text())["exact"] == truth["exact"]
    with open(tmp_path / "planted" / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30 + 3 + len(plant_faults.NEAR_KINDS)
    copies = {b for _, b in truth["exact"]} | {b for pairs in truth["near"].values() for _, b in pairs}
    assert all(Path(b).parent == tmp_path / "planted" / "derived" for b in copies)
    leaked = truth["group_leak"][0]
    assert {r["split"] for r in rows if r["group"] == leaked} == {"train", "test"}
    with open(tmp_path / "planted" / "labels_flipped.csv", newline="") as handle:
        flipped = sum(a["labels"] != b["labels"] for a, b in zip(rows, csv.DictReader(handle)))
    assert flipped == len(truth["flipped"]) > 0

    result = doctor_data(load_config(None, [f"data.path={tmp_path / 'planted' / 'labels.csv'}"]), progress=False)
    table = plant_faults.score(truth, result)
    assert table["exact"] == {"precision": 1.0, "recall": 1.0, "planted": 3, "found": 3}
    assert table["near"]["recall"] == 1.0 and table["near"]["precision"] == 1.0
    assert table["group_leak"]["recall"] == 1.0 and table["group_leak"]["precision"] == 1.0


def test_flipped_training_labels_are_scored_among_the_label_issues():
    from types import SimpleNamespace

    from audioclf.data.audit import Finding

    truth = {"exact": [], "near": {}, "group_leak": [],
             "flipped": [["/a/x.wav", "dog", "rain"], ["/a/y.wav", "rain", "dog"], ["/a/z.wav", "dog", "rain"]]}
    result = SimpleNamespace(sets=[], findings=[Finding("label_issue", "x", ["/a/x.wav"]),
                                                Finding("label_issue", "w", ["/a/w.wav"])])
    # z was flipped in the test split, where the doctor does not look: not counted as missed
    table = plant_faults.score(truth, result, train_paths={"/a/x.wav", "/a/y.wav", "/a/w.wav"})
    assert table["label_issue"] == {"precision": 0.5, "recall": 0.5, "planted": 2, "found": 2}
    assert "label_issue" not in plant_faults.score(truth, result)
