"""Manifest: construction rules, operations returning new manifests, label views, round-trips."""

import csv
from pathlib import Path

import numpy as np
import pytest

from audioclf.data.manifest import Item, Manifest
from audioclf.errors import ConfigError, DataError


def _single() -> Manifest:
    return Manifest([
        Item("rock/a", "/data/rock/a.wav", ("rock",), split="train", groups={"speaker": "s1"}),
        Item("jazz/b", "/data/jazz/b.wav", ("jazz",), split="test", fold=2, duration=1.25,
             groups={"speaker": "s2", "device": "A"}),
        Item("rock/c", "/data/rock/c.wav", ("rock",), split="val", groups={"device": "B"}),
    ])


def _multi() -> Manifest:
    return Manifest([
        Item("x1", "/d/x1.wav", ("Bark", "Walk_and_footsteps"), split="train", fold=0, duration=0.3),
        Item("x2", "/d/x2.wav", ("Accordion",), split="val", duration=1 / 3),
        Item("x3", "/d/x3.wav", (), split=None, groups={"city": "Paris, France"}),
    ])


def test_inferred_classes_and_task():
    single, multi = _single(), _multi()
    assert single.classes == ["jazz", "rock"] and single.task == "single_label"
    assert multi.classes == ["Accordion", "Bark", "Walk_and_footsteps"] and multi.task == "multi_label"
    # One item without labels is enough to make the task multi-label.
    assert Manifest([Item("a", "a.wav", ())]).task == "multi_label"
    assert Manifest([]).task == "single_label" and Manifest([]).classes == []


def test_given_classes_keep_order_and_reject_unknown_labels():
    manifest = Manifest(_single().items, classes=["rock", "pop", "jazz"])
    assert manifest.classes == ["rock", "pop", "jazz"]
    assert manifest.class_counts() == {"rock": 2, "pop": 0, "jazz": 1}
    with pytest.raises(DataError, match=r"item jazz/b: unknown label 'jazz'"):
        Manifest(_single().items, classes=["rock", "pop"])


def test_invalid_construction():
    with pytest.raises(DataError, match="duplicate item id 'a'"):
        Manifest([Item("a", "1.wav", ("x",)), Item("a", "2.wav", ("y",))])
    with pytest.raises(DataError, match="item x1: single-label task needs exactly one label, got 2"):
        Manifest(_multi().items, task="single_label")
    with pytest.raises(ConfigError, match="task 'multi'"):
        Manifest([], task="multi")


def test_sequence_protocol_and_item_normalisation():
    manifest = _single()
    assert len(manifest) == 3 and manifest[1].id == "jazz/b"
    assert [i.id for i in manifest] == ["rock/a", "jazz/b", "rock/c"]
    item = Item("z", Path("/z.wav"), ["a", "b"])
    assert item.path == "/z.wav" and item.labels == ("a", "b")
    assert hash(item) == hash(Item("z", "/z.wav", ("a", "b")))
    assert Item("z", "/z.wav", (), groups={"speaker": "", "device": "A"}).groups == {"device": "A"}
    with pytest.raises(DataError, match="item z: labels must be a sequence of names, got the string 'rock'"):
        Item("z", "/z.wav", "rock")


def test_operations_return_new_manifests_with_same_classes():
    manifest = Manifest(_single().items, classes=["jazz", "pop", "rock"])
    train = manifest.subset("train")
    assert [i.id for i in train] == ["rock/a"] and train.classes == ["jazz", "pop", "rock"]
    assert train.task == "single_label" and len(manifest) == 3  # original untouched
    rocks = manifest.filter(lambda item: item.labels == ("rock",))
    assert [i.id for i in rocks] == ["rock/a", "rock/c"]
    resplit = manifest.with_splits(["test", "train", None])
    assert [i.split for i in resplit] == ["test", "train", None]
    assert [i.split for i in manifest] == ["train", "test", "val"]
    assert resplit[1].groups == {"speaker": "s2", "device": "A"} and resplit[1].fold == 2
    with pytest.raises(DataError, match="2 split names for 3 items"):
        manifest.with_splits(["train", "val"])
    assert manifest.with_items(manifest.items[:1]).classes == manifest.classes


def test_groups():
    manifest = _single()
    assert manifest.group_names == ["speaker", "device"]
    assert manifest.group_values("speaker") == ["s1", "s2", ""]
    assert manifest.group_values("device") == ["", "A", "B"]
    with pytest.raises(ConfigError, match="unknown group column 'city'; available: speaker, device"):
        manifest.group_values("city")


def test_label_views():
    single, multi = _single(), _multi()
    np.testing.assert_array_equal(single.label_indices(), np.array([1, 0, 1]))
    assert single.label_indices().dtype == np.int64
    matrix = multi.label_matrix()
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, [[0, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(single.label_matrix(), np.eye(2)[single.label_indices()])
    assert multi.class_counts() == {"Accordion": 1, "Bark": 1, "Walk_and_footsteps": 1}
    with pytest.raises(DataError, match="single-label"):
        multi.label_indices()


@pytest.mark.parametrize("make", [_single, _multi])
def test_dict_round_trip(make):
    manifest = make()
    again = Manifest.from_dict(manifest.to_dict())
    assert again == manifest
    assert again.to_dict() == manifest.to_dict()


@pytest.mark.parametrize("make", [_single, _multi])
def test_csv_round_trip_is_exact(make, tmp_path):
    manifest = make()
    path = manifest.to_csv(tmp_path / "sub" / "manifest.csv")
    again = Manifest.from_csv(path)
    assert again == manifest
    assert again[-1].groups == manifest[-1].groups and again[0].duration == manifest[0].duration
    # No temp files are left next to it.
    assert [p.name for p in path.parent.iterdir()] == ["manifest.csv"]


def test_csv_snapshot_format(tmp_path):
    path = _multi().to_csv(tmp_path / "m.csv")
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id", "path", "labels", "split", "fold", "duration", "city"]
    assert rows[1] == ["x1", "/d/x1.wav", "Bark,Walk_and_footsteps", "train", "0", "0.3", ""]
    assert rows[3] == ["x3", "/d/x3.wav", "", "", "", "", "Paris, France"]
    assert float(rows[2][5]) == 1 / 3  # exact, not rounded
    assert '"Bark,Walk_and_footsteps"' in path.read_text()


def test_csv_errors(tmp_path):
    with pytest.raises(DataError, match="contains a comma"):
        Manifest([Item("a", "a.wav", ("rock, pop",))]).to_csv(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="group column 'split' clashes"):
        Manifest([Item("a", "a.wav", ("x",), groups={"split": "1"})]).to_csv(tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()
    bad = tmp_path / "nolabels.csv"
    bad.write_text("id,path\na,a.wav\n")
    with pytest.raises(DataError, match=r"nolabels.csv: line 1: missing column 'labels'"):
        Manifest.from_csv(bad)
    bad.write_text("id,path,labels,fold\na,a.wav,x,1\nb,b.wav,y,two\n")
    with pytest.raises(DataError, match=r"nolabels.csv: line 3: fold 'two' is not a valid int"):
        Manifest.from_csv(bad)
    with pytest.raises(DataError, match="cannot read manifest"):
        Manifest.from_csv(tmp_path / "missing.csv")
