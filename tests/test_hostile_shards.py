"""Hostile shards: a gzip bomb, a shard holding more than its index says, a ``.npy`` header declaring a huge
array, JSON nested past the recursion limit, ordinals out of range. Each is a reported skip naming the shard
(strict evaluation reads: a one-line DataError naming it), never an abort, and nothing is allocated before it
is checked. The bombs are sized against bounds made small here (max_seconds=1 s at 16 kHz: 68 KB a waveform),
so the tests stay fast when the bounds work and bounded (tens of MB) when they do not."""

from __future__ import annotations

import io
import json
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from audioclf.cli import main
from audioclf.data.shards import ShardStream, load_split, read_index, shard_counts, shard_sizes, shard_urls
from audioclf.errors import DataError

pytest.importorskip("webdataset")
from test_shards import by_content, copy_of, ids_read, ordinals_by_shard, prepared, written  # noqa: E402,F401

BAD = 1  # the damaged training shard


def members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(info, tar.extractfile(info).read()) for info in tar.getmembers()]


def rewrite(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]], gz: bool = False) -> None:
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for info, body in entries:
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))


def replace(path: Path, suffix: str, body: bytes, gz: bool = False) -> str:
    """The second item's ``suffix`` member replaced by ``body``; returns that item's key."""
    entries = members(path)
    key = sorted({info.name.split(".")[0] for info, _ in entries})[1]
    rewrite(path, [(info, body if info.name == f"{key}.{suffix}" else data) for info, data in entries], gz)
    return key


def npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def damaged_set(written, tmp_path, suffix: str, body: bytes, gz: bool = False):
    out = copy_of(written, tmp_path)
    index = read_index(str(out))
    replace(Path(shard_urls(index, "train")[BAD]), suffix, body, gz)
    return out, index


def read_train(index, prepared, **kw):
    """Every train item streamed (whole clips, identified by content) with bounds of 1 s at 16 kHz."""
    stream = ShardStream(shard_urls(index, "train"), index["classes"], index["task"], prepared.n_samples,
                         crop="start", counts=shard_counts(index, "train"), sizes=shard_sizes(index, "train"),
                         sample_rate=16000, max_seconds=1.0, shuffle_buffer=0, **kw)
    return ids_read(stream, by_content(prepared, "train")), stream.problems


def in_shard(prepared, index, k: int) -> set[str]:
    train = [item.id for item in prepared.split("train")]
    return {train[o] for o in ordinals_by_shard(index, "train")[k]}


def assert_one_reported_skip(prepared, index, got, problems, reason: str, whole_shard: bool) -> None:
    name = f"train-{BAD:06d}.tar"
    bad = in_shard(prepared, index, BAD)
    assert len(problems) == 1 and name in problems[0] and reason in problems[0], problems
    assert {item.id for item in prepared.split("train")} - bad <= set(got)  # every other shard read in full
    if whole_shard:
        assert set(got) & bad < bad
    else:  # the one item skipped, the rest of its shard read
        assert len(set(got) & bad) == len(bad) - 1


def test_a_gzip_bomb_is_skipped_from_its_member_header(prepared, written, tmp_path):
    samples = 4 * 2**20  # 16 MiB of float32 zeros: 16 KB once compressed, 240 times the 1-s bound
    out, index = damaged_set(written, tmp_path, "wav.npy", npy_header((samples,)) + bytes(4 * samples), gz=True)
    assert Path(shard_urls(index, "train")[BAD]).stat().st_size < 2**20
    tracemalloc.start()
    try:
        got, problems = read_train(index, prepared)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # the 16 MiB member was never decompressed
    assert_one_reported_skip(prepared, index, got, problems, f"is {4 * samples + 128} bytes; at most", True)


def test_a_shard_holding_more_than_its_index_says_is_skipped(prepared, written, tmp_path):
    out = copy_of(written, tmp_path)
    index = read_index(str(out))
    path = Path(shard_urls(index, "train")[BAD])
    junk = [(tarfile.TarInfo(f"junk.{i:04d}.json"), bytes(60_000)) for i in range(100)]  # each within bounds
    rewrite(path, junk + members(path), gz=True)
    got, problems = read_train(index, prepared)
    assert_one_reported_skip(prepared, index, got, problems, "as its index lists it", True)


@pytest.mark.parametrize("body, reason", [
    (npy_header((10**12,)) + bytes(16), "declares 1000000000000 samples and holds 4"),  # 4 TB if allocated
    (npy_header((10**6,)) + bytes(400), "declares 1000000 samples and holds 100"),
    (npy_header((2, 50)) + bytes(400), "expected a non-empty float32 mono waveform"),
    (npy_header((100,), "<f8") + bytes(800), "float64"),
])
def test_an_npy_header_is_checked_before_its_array_is_allocated(prepared, written, tmp_path, body, reason):
    out, index = damaged_set(written, tmp_path, "wav.npy", body)
    got, problems = read_train(index, prepared)
    assert_one_reported_skip(prepared, index, got, problems, reason, False)
    with pytest.raises(DataError, match=f"train-{BAD:06d}.tar"):  # strict reads: one line naming the shard
        load_split(index, "train", max_seconds=1.0)


@pytest.mark.parametrize("depth, reason, whole_shard", [
    (20_000, "nested too deeply", False),  # 40 KB: within the size bound, past Python's recursion limit
    (200_000, "at most 65536", True),  # 400 KB: refused from its tar header, before it is read
])
def test_deeply_nested_json_is_a_reported_skip(prepared, written, tmp_path, depth, reason, whole_shard):
    out, index = damaged_set(written, tmp_path, "json", b"[" * depth + b"]" * depth)
    got, problems = read_train(index, prepared)
    assert_one_reported_skip(prepared, index, got, problems, reason, whole_shard)


@pytest.mark.parametrize("field, value, reason", [
    ("ordinal", -5, "ordinal -5 is outside"),
    ("ordinal", 2**64, "is outside"),
    ("ordinal", "3", "lacks id, labels or ordinal"),
    ("labels", [["nested"]], "labels must be names"),
    ("groups", [1, 2], "groups must be an object"),
])
def test_metadata_fields_are_checked(prepared, written, tmp_path, field, value, reason):
    out = copy_of(written, tmp_path)
    index = read_index(str(out))
    path = Path(shard_urls(index, "train")[BAD])
    entries = members(path)
    key = sorted({info.name.split(".")[0] for info, _ in entries})[1]
    meta = json.loads(dict((info.name, data) for info, data in entries)[f"{key}.json"])
    replace(path, "json", json.dumps({**meta, field: value}).encode())
    # random crops: the ordinal feeds the crop hash (an unsigned counter)
    stream = ShardStream(shard_urls(index, "train"), index["classes"], index["task"], prepared.n_samples // 2,
                         crop="random", counts=shard_counts(index, "train"), shuffle_buffer=0)
    assert len(list(stream)) == sum(shard_counts(index, "train")) - 1
    assert len(stream.problems) == 1 and f"train-{BAD:06d}.tar" in stream.problems[0] and reason in stream.problems[0]


def test_a_run_lists_a_bad_item_in_its_summary_and_goes_on(written, tmp_path):
    out, index = damaged_set(written, tmp_path, "wav.npy", npy_header((10**12,)) + bytes(16))
    run = tmp_path / "run"
    assert main(["train", "--data", str(out), "--out", str(run), "train.epochs=1", "train.batch_size=8",
                 "train.num_workers=0", "features.n_mels=32", "features.n_fft=512", "features.hop_length=320",
                 "model.name=mlp"]) == 0
    skipped = json.loads((run / "summary.json").read_text())["skipped"]
    assert any(f"train-{BAD:06d}.tar" in entry["path"] and "declares 1000000000000 samples" in entry["reason"]
               for entry in skipped), skipped
