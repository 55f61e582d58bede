"""Crash-safe atomic writes (audioclf.files): temp file in the same folder, renamed over the target."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from audioclf.errors import DataError
from audioclf.files import atomic_write, atomic_write_bytes, atomic_write_text, jsonable


def leftovers(folder: Path) -> list[str]:
    """Temp files a writer left behind."""
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name)


def test_atomic_write_text_and_bytes(tmp_path):
    target = tmp_path / "deep" / "er" / "manifest.csv"
    assert atomic_write_text(target, "id,path\r\nä,1\n") == target  # parents created
    assert target.read_bytes() == "id,path\r\nä,1\n".encode()  # written verbatim, no newline translation
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert leftovers(tmp_path) == []


def test_atomic_write_passes_a_same_folder_temp_path_with_the_suffix(tmp_path):
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        np.save(tmp, np.arange(3))  # np.save appends ".npy" unless the name already ends with it

    target = tmp_path / "arr.npy"
    atomic_write(target, write)
    assert seen[0].parent == tmp_path and seen[0].suffix == ".npy" and seen[0].name.startswith(".")
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arr.npy"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old complete checkpoint")

    def crash_halfway(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(b"half of a new")
        raise KeyboardInterrupt  # Ctrl-C mid-write is the common "crash"

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash_halfway)
    assert target.read_bytes() == b"old complete checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_writer_that_writes_elsewhere_is_an_error(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(DataError, match="out.json: the writer did not create"):
        atomic_write(target, lambda tmp: None)
    assert not target.exists()


def test_readers_never_see_a_partial_file(tmp_path):
    target = tmp_path / "metrics.jsonl"
    payloads = [(str(i) * 200_000).encode() for i in range(1, 6)]
    atomic_write_bytes(target, payloads[0])
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(target.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    for payload in payloads[1:] * 3:
        atomic_write_bytes(target, payload)
    stop.set()
    reader.join()
    assert seen <= set(payloads)  # only whole versions, never a mix or a prefix


def test_failed_rename_propagates_and_leaves_no_temp(tmp_path):
    target = tmp_path / "runs"
    (target / "inside").mkdir(parents=True)  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError):
        atomic_write_text(target, "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"] and (target / "inside").is_dir()


def test_jsonable_turns_numpy_and_non_finite_values_into_plain_json():
    value = {"a": np.float32(0.5), "b": [np.int64(3), float("nan")], "c": np.array([1.0, np.inf]), 4: "x"}
    assert jsonable(value) == {"a": 0.5, "b": [3, None], "c": [1.0, None], "4": "x"}
    json.dumps(jsonable(value), allow_nan=False)  # strict JSON: no NaN / Infinity tokens
