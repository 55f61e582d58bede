"""WebDataset tar shards (audioclf.data.shards): written atomically, read back exactly, streamed once per epoch
over ranks x DataLoader workers with reproducible crops, damaged shards reported and skipped, served over http."""

from __future__ import annotations

import functools
import http.server
import io
import json
import logging
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from audioclf.config import load_config
from audioclf.data.prepare import prepare_data
from audioclf.data.shards import (
    ShardStream,
    first_items,
    load_split,
    read_index,
    shard_counts,
    shard_urls,
    write_shards,
)
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import ConfigError, DataError

MAX_ITEMS = 3  # several shards per split from a small set


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    data = make_demo_dataset(root / "data", n_per_class=6, seconds=1.0, seed=11)
    cfg = load_config(None, [f"data.path={data}", "data.sample_rate=16000", "data.clip_seconds=1.0"])
    return prepare_data(cfg, progress=False)


@pytest.fixture(scope="module")
def written(prepared, tmp_path_factory) -> Path:
    """A shard set written once; tests that damage or rewrite shards work on a copy (:func:`copy_of`)."""
    out = tmp_path_factory.mktemp("set") / "shards"
    write_shards(prepared, out, max_items=MAX_ITEMS)
    return out


def copy_of(written: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(written, tmp_path / "shards"))


def by_content(prepared, split: str) -> dict[bytes, str]:
    """Item id by waveform bytes: a stream yields (wave, target), and whole-clip crops identify their item."""
    table = {prepared.waves[item.id].tobytes(): item.id for item in prepared.split(split)}
    assert len(table) == len(prepared.split(split))  # every clip distinct
    return table


def stream(index: dict, prepared, **kw) -> ShardStream:
    """A train stream whose items are whole clips (crop="start" at the clip length): identifiable by content."""
    options = {"n_samples": prepared.n_samples, "crop": "start", "counts": shard_counts(index, "train"), **kw}
    return ShardStream(shard_urls(index, "train"), index["classes"], index["task"], **options)


def ids_read(examples, table: dict[bytes, str]) -> list[str]:
    return [table[wave.numpy().tobytes()] for wave, _ in examples]


def ordinals_by_shard(index: dict, split: str) -> list[list[int]]:
    """Item ordinals per shard: shards hold consecutive runs of the split, in order."""
    runs, start = [], 0
    for count in shard_counts(index, split):
        runs.append(list(range(start, start + count)))
        start += count
    return runs


# --- writing and reading back -------------------------------------------------------------------
def test_written_set_reads_back_exactly(prepared, written):
    index = read_index(str(written))
    assert index["root"] == str(written.resolve())
    assert (index["format"], index["version"], index["task"]) == ("audioclf-shards", 1, prepared.manifest.task)
    assert index["classes"] == prepared.manifest.classes
    assert (index["sample_rate"], index["clip_seconds"]) == (16000, 1.0)
    assert index["groups"] == prepared.manifest.group_names
    assert index == {**json.loads((written / "shards.json").read_text()), "root": index["root"]}
    assert read_index(str(written / "shards.json")) == index  # the json itself names the set too
    for split in ("train", "val", "test"):
        expected = prepared.split(split)
        assert len(shard_urls(index, split)) == -(-len(expected) // MAX_ITEMS) > 1
        assert sum(shard_counts(index, split)) == len(expected)
        for entry, url in zip(index["splits"][split], shard_urls(index, split)):
            assert Path(url).name == entry["name"] and Path(url).stat().st_size == entry["bytes"]
        items, waves = load_split(index, split)
        assert [item.id for item in items] == [item.id for item in expected]
        for got, want in zip(items, expected):
            assert (got.path, got.labels, got.split, dict(got.groups), got.fold) == \
                (want.path, want.labels, want.split, dict(want.groups), want.fold)
            assert waves[got.id].dtype == np.float32
            np.testing.assert_array_equal(waves[got.id], prepared.waves[got.id])
    firsts = first_items(index, "train", 4)
    assert len(firsts) == 4
    for wave, item in zip(firsts, prepared.split("train")):
        np.testing.assert_array_equal(wave, prepared.waves[item.id])


def test_writing_leaves_no_temp_files_and_names_only_shards(written):
    names = sorted(path.name for path in written.iterdir() if path.name != ".audioclf-owner")  # the folder's marker
    assert "shards.json" in names
    assert all(name == "shards.json" or name.split("-")[0] in ("train", "val", "test") and name.endswith(".tar")
               for name in names), names
    assert not [name for name in names if name.startswith(".") or "tmp" in name]


def test_sample_keys_are_safe_and_unique(prepared, tmp_path):
    """Ids with dots, slashes and spaces become keys webdataset groups correctly (it splits at the first '.')."""
    import dataclasses

    odd = prepared.manifest.with_items(
        dataclasses.replace(item, id=f"{item.id}/a b.c.wav" if k % 2 else f"x.{k}.wav")
        for k, item in enumerate(prepared.manifest))
    waves = {new.id: prepared.waves[old.id] for new, old in zip(odd, prepared.manifest)}
    moved = dataclasses.replace(prepared, manifest=odd, waves=waves)
    write_shards(moved, tmp_path / "odd", max_items=MAX_ITEMS)
    items, got = load_split(read_index(str(tmp_path / "odd")), "val")
    assert [item.id for item in items] == [item.id for item in odd.subset("val")]
    for item in items:
        np.testing.assert_array_equal(got[item.id], waves[item.id])


def test_refuses_a_folder_with_other_files_and_replaces_an_earlier_set(prepared, written, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="mine.*notes.txt") as caught:
        write_shards(prepared, user)
    assert "\n" not in str(caught.value) and (user / "notes.txt").read_text() == "keep me"

    out = copy_of(written, tmp_path)
    before = {path.name for path in out.glob("*.tar")}
    index = write_shards(prepared, out, max_items=100)  # one shard per split now
    names = {path.name for path in out.glob("*.tar")}
    assert names == {"train-000000.tar", "val-000000.tar", "test-000000.tar"} and names < before
    assert read_index(str(out)) == {**index, "root": str(out.resolve())}
    assert len(load_split(index | {"root": str(out.resolve())}, "train")[0]) == len(prepared.split("train"))


def test_max_bytes_bounds_the_shards(prepared, tmp_path):
    clip_bytes = prepared.n_samples * 4
    index = write_shards(prepared, tmp_path / "small", max_items=1000, max_bytes=int(2.5 * clip_bytes))
    assert set(shard_counts(index, "train")) <= {1, 2} and 2 in shard_counts(index, "train")
    assert all(entry["bytes"] < 3 * clip_bytes for entry in index["splits"]["train"])


# --- the index ----------------------------------------------------------------------------------
@pytest.mark.parametrize("content, message", [
    (None, "no shard index"),
    ("{not json", "not valid JSON"),
    (json.dumps({"format": "something-else", "version": 1}), "not an audioclf shard index"),
    (json.dumps({"format": "audioclf-shards", "version": 9}), "version 9"),
    (json.dumps({"format": "audioclf-shards", "version": 1, "task": "single_label"}), "lacks the key 'classes'"),
    (" " * (17 * 2**20), "over 16 MB, not a shard index"),  # refused before any parsing
])
def test_a_bad_index_is_a_one_line_error_naming_the_file(written, tmp_path, content, message):
    out = copy_of(written, tmp_path)
    if content is None:
        (out / "shards.json").unlink()
    else:
        (out / "shards.json").write_text(content)
    with pytest.raises(DataError, match=message) as caught:
        read_index(str(out))
    assert str(out / "shards.json") in str(caught.value) and "\n" not in str(caught.value)


def test_an_index_may_not_name_files_outside_its_folder(written, tmp_path):
    out = copy_of(written, tmp_path)
    index = json.loads((out / "shards.json").read_text())
    index["splits"]["train"][0]["name"] = "../../etc/passwd"
    (out / "shards.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="bad shard entry"):
        read_index(str(out))


# --- streaming ----------------------------------------------------------------------------------
def epoch_ids(index, prepared, epoch: int, world_size: int = 2, workers: int = 2) -> list[list[str]]:
    """Item ids each rank reads in one epoch, each rank through its own DataLoader with ``workers`` workers."""
    table = by_content(prepared, "train")
    per_rank = []
    for rank in range(world_size):
        dataset = stream(index, prepared, seed=5, rank=rank, world_size=world_size, shuffle_buffer=4)
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
        per_rank.append(ids_read(loader, table))
        assert len(per_rank[-1]) == dataset.items_for_rank()
    return per_rank


def test_each_item_is_read_once_per_epoch_over_ranks_and_workers(prepared, written):
    index = read_index(str(written))
    assert len(shard_urls(index, "train")) >= 4  # every rank x worker has a shard to read
    everything = sorted(item.id for item in prepared.split("train"))
    first, second = epoch_ids(index, prepared, epoch=0), epoch_ids(index, prepared, epoch=1)
    for per_rank in (first, second):
        assert sorted(sum(per_rank, [])) == everything  # each item exactly once
        assert all(per_rank)
    assert sum(first, []) != sum(second, [])  # another order ...
    assert epoch_ids(index, prepared, epoch=1) == second  # ... reproducibly


def test_targets_and_batches(prepared, written):
    index = read_index(str(written))
    label_of = {item.id: item.labels[0] for item in prepared.split("train")}
    table = by_content(prepared, "train")
    loader = torch.utils.data.DataLoader(stream(index, prepared), batch_size=4)
    seen = 0
    for waves, targets in loader:
        assert waves.dtype == torch.float32 and waves.shape[1:] == (prepared.n_samples,)
        assert targets.dtype == torch.int64
        for wave, target in zip(waves, targets):
            assert index["classes"][int(target)] == label_of[table[wave.numpy().tobytes()]]
        seen += len(waves)
    assert seen == len(prepared.split("train"))


def test_crops_follow_seed_epoch_and_ordinal(prepared, written):
    """Item ``ordinal``'s crop is the one WaveformDataset gives item ``ordinal`` of the in-memory split."""
    from audioclf.data.dataset import WaveformDataset

    index = read_index(str(written))
    n, seed, epoch = 4000, 7, 3
    train = prepared.split("train")
    memory = WaveformDataset([prepared.waves[item.id] for item in train], np.zeros(len(train)), n, "tile", "random",
                             seed=seed)
    memory.set_epoch(epoch)
    expected = {memory[ordinal][0].numpy().tobytes(): item.id for ordinal, item in enumerate(train)}
    dataset = stream(index, prepared, n_samples=n, crop="random", seed=seed)
    dataset.set_epoch(epoch)
    got = ids_read(dataset, expected)
    assert sorted(got) == sorted(expected.values())


def test_multi_label_targets_and_unknown_labels_are_skipped_with_a_warning(prepared, written, caplog):
    index = read_index(str(written))
    classes = index["classes"]
    table = by_content(prepared, "train")
    labels = {item.id: item.labels for item in prepared.split("train")}
    dataset = ShardStream(shard_urls(index, "train"), classes, "multi_label", prepared.n_samples, crop="start")
    for wave, target in dataset:
        assert target.dtype == torch.float32 and target.shape == (len(classes),)
        assert [classes[i] for i in np.flatnonzero(target.numpy())] == list(labels[table[wave.numpy().tobytes()]])

    dropped = classes[0]  # a shard label the model does not know: never mapped to another class
    fewer = ShardStream(shard_urls(index, "train"), classes[1:], index["task"], prepared.n_samples, crop="start")
    with caplog.at_level(logging.WARNING, logger="audioclf.data.shards"):
        got = ids_read(fewer, table)
    assert sorted(got) == sorted(i for i, names in labels.items() if dropped not in names)
    assert any(f"label '{dropped}' is not a class" in message for message in fewer.problems)
    assert f"label '{dropped}'" in caplog.text


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:  # a valid tar whose second item's npy member is not a .npy array, or holds NaN samples
        members = []
        with tarfile.open(path) as tar:
            for info in tar.getmembers():
                members.append((info, tar.extractfile(info).read()))
        second = sorted({info.name.split(".")[0] for info, _ in members})[1]
        with tarfile.open(path, "w") as tar:
            for info, body in members:
                if info.name == f"{second}.wav.npy":
                    body = b"not an npy array" if how == "bad member" else nan_npy()
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))


def nan_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([0.1, np.nan, 0.2], dtype=np.float32))
    return buffer.getvalue()


@pytest.mark.parametrize("how", ["truncated", "garbage", "bad member", "nan samples"])
def test_a_damaged_shard_is_reported_and_skipped(prepared, written, tmp_path, caplog, how):
    out = copy_of(written, tmp_path)
    index = read_index(str(out))
    bad = 1
    damage(Path(shard_urls(index, "train")[bad]), how)
    train = [item.id for item in prepared.split("train")]
    runs = ordinals_by_shard(index, "train")
    in_bad = {train[o] for o in runs[bad]}
    dataset = stream(index, prepared, shuffle_buffer=0)
    with caplog.at_level(logging.WARNING, logger="audioclf.data.shards"):
        got = ids_read(dataset, by_content(prepared, "train"))
    assert len(got) == len(set(got))
    assert set(train) - in_bad <= set(got)  # every other shard read in full
    assert set(got) & in_bad < in_bad  # from the damaged one at most its intact items
    name = f"train-{bad:06d}.tar"
    assert name in caplog.text
    assert len(dataset.problems) == 1 and name in dataset.problems[0], dataset.problems
    if how == "bad member":
        assert len(set(got) & in_bad) == len(in_bad) - 1 and "wav.npy" in dataset.problems[0]

    with pytest.raises(DataError, match=name):  # evaluation sets are read whole, or not at all
        load_split(index, "train")


def test_a_shard_cut_at_a_member_boundary_is_reported(prepared, written, tmp_path, caplog):
    """A tar cut between members reads as a clean end: the index's item count gives it away."""
    out = copy_of(written, tmp_path)
    index = read_index(str(out))
    path = Path(shard_urls(index, "train")[0])
    data = path.read_bytes()
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    first_item = members[2].offset  # the second item's first header: the first item (json + npy) is whole
    path.write_bytes(data[:first_item])
    with caplog.at_level(logging.WARNING, logger="audioclf.data.shards"):
        got = list(stream(index, prepared))
    assert len(got) == sum(shard_counts(index, "train")) - shard_counts(index, "train")[0] + 1
    assert "1 items read, the index lists 3" in caplog.text and path.name in caplog.text


def test_an_empty_split_and_rank_without_shards(prepared, written):
    index = read_index(str(written))
    assert list(ShardStream([], index["classes"], index["task"], 100)) == []
    urls = shard_urls(index, "train")
    dataset = ShardStream(urls[:1], index["classes"], index["task"], 100, rank=1, world_size=2, counts=[3])
    assert list(dataset) == [] and dataset.items_for_rank() == 0


# --- over http ----------------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(written, monkeypatch):
    """The shard set on a loopback http server (proxies bypassed for curl and urllib)."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=written))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_shards_stream_over_http(prepared, served):
    index = read_index(served + "/")
    assert index["root"] == served
    urls = shard_urls(index, "train")
    assert urls[0] == f"{served}/train-000000.tar"
    items, waves = load_split(index, "val")
    assert [item.id for item in items] == [item.id for item in prepared.split("val")]
    for item in items:
        np.testing.assert_array_equal(waves[item.id], prepared.waves[item.id])
    dataset = stream(index, prepared)
    assert sorted(ids_read(dataset, by_content(prepared, "train"))) == sorted(i.id for i in prepared.split("train"))
    assert dataset.problems == []
    with pytest.raises(DataError, match="HTTP 404"):
        read_index(served + "/nothing-here")
