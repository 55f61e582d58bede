"""AudioSet embeddings (Gemmeke et al. 2017): TFRecord/protobuf without TensorFlow, HDF5, streaming, the runner."""

from __future__ import annotations

import gzip
import struct

import h5py
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from audioclf.calibration import read_decisions
from audioclf.data import tfrecord as tfr
from audioclf.data.embeddings import (
    EmbeddingDataset,
    H5EmbeddingStream,
    TFRecordEmbeddingStream,
    load_tfrecord_rows,
    make_synthetic_embeddings,
    plan_stream,
    split_rows,
)
from audioclf.data.importers import get_importer
from audioclf.data.importers.audioset import (
    AudioSetClip,
    H5Info,
    clips_to_arrays,
    convert_tfrecords_to_h5,
    dequantize,
    h5_info,
    import_audioset,
    iter_tfrecord_clips,
    load_embedding_arrays,
    pad_steps,
    read_class_labels,
    read_h5,
    write_audioset_tfrecord,
    write_class_labels,
    write_h5,
)
from audioclf.data.embedding_sets import find_layout, is_embedding_data
from audioclf.errors import AudioclfError, ConfigError, DataError
from audioclf.metrics import mean_average_precision
from audioclf.runs import RunDir
from audioclf.workflows.evaluation import evaluate_run, run_outputs
from audioclf.workflows.run import run


def train_embeddings(cfg: dict, resume: bool = False):
    """One embedding run from a plain config dict, as a notebook would start it."""
    return run(cfg, resume=resume).runs[0]

# Serialized by google.protobuf (descriptors of tensorflow/core/example/{example,feature}.proto built at
# run time, SerializeToString(deterministic=True)), so these are the bytes TensorFlow itself writes.
PB_SEQUENCE_EXAMPLE = bytes.fromhex(
    "0a700a1c0a10656e645f74696d655f7365636f6e6473120812060a040000d7430a130a066c6162656c7312091a070a0500"
    "89018e040a1e0a1273746172745f74696d655f7365636f6e6473120812060a040000d2430a1b0a08766964656f5f696412"
    "0f0a0d0a0b2d3052575a542d6d694673122b0a290a0f617564696f5f656d62656464696e6712160a090a070a0500017f80"
    "ff0a090a070a050708090a0b"
)
PB_EXAMPLE = bytes.fromhex(
    "0a450a110a0166120c120a0a080000003f000010c00a210a036e6567121a1a180a16ffffffffffffffffff01ac0280808080"
    "8080808080010a0d0a017312080a060a0261620a00"
)


def _clips(n: int, seed: int = 0, n_classes: int = 527) -> list[AudioSetClip]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        steps = [10, 7, 1, 10, 3][i % 5]
        labels = tuple(sorted(rng.choice(n_classes, size=int(rng.integers(1, 4)), replace=False).tolist()))
        out.append(AudioSetClip(f"vid{i:04d}", rng.integers(0, 256, (steps, 128), dtype=np.uint8), labels,
                                float(10 * i), float(10 * i + steps)))
    return out


# --- CRC-32C and TFRecord framing ------------------------------------------------------------------
def test_crc32c_known_vectors_and_block_path_match_bytewise_loop():
    # RFC 3720 appendix B.4 and the classic check value of "123456789".
    assert tfr.crc32c(b"123456789") == 0xE3069283
    assert tfr.crc32c(bytes(32)) == 0x8A9136AA
    assert tfr.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert tfr.crc32c(bytes(range(32))) == 0x46DD794E
    rng = np.random.default_rng(0)
    for n in (0, 1, 63, 64, 65, 1023, 1024, 1025, 3000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        expected = tfr._crc_update_loop(0xFFFFFFFF, data) ^ 0xFFFFFFFF
        assert tfr._crc32c_python(data) == expected, n
        # continuing from the CRC of a prefix gives the CRC of the whole
        assert tfr._crc32c_python(data[n // 3:], tfr._crc32c_python(data[:n // 3])) == expected


def test_masked_crc_is_rotate_right_15_plus_delta():
    crc = tfr.crc32c(b"abc")
    assert tfr.masked_crc32c(b"abc") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def test_tfrecord_roundtrip_framing_and_gzip(tmp_path):
    records = [b"", b"hello", bytes(range(256)) * 9]
    path = tfr.write_records(tmp_path / "a.tfrecord", records)
    raw = path.read_bytes()
    assert struct.unpack("<Q", raw[:8])[0] == 0 and len(raw) == sum(16 + len(r) for r in records)
    assert struct.unpack("<I", raw[8:12])[0] == tfr.masked_crc32c(raw[:8])
    assert list(tfr.read_records(path)) == records
    assert tfr.count_records(path) == 3
    gz = tmp_path / "b.tfrecord"
    gz.write_bytes(gzip.compress(raw))
    assert list(tfr.read_records(gz)) == records


def test_tfrecord_corruption_and_truncation_are_detected(tmp_path):
    path = tfr.write_records(tmp_path / "c.tfrecord", [b"first record", b"second record"])
    raw = bytearray(path.read_bytes())
    second = 16 + len(b"first record")
    bad = tmp_path / "bad.tfrecord"
    flipped = raw.copy()
    flipped[second + 12 + 3] ^= 0x01  # a payload byte of record 1
    bad.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match=rf"bad\.tfrecord: record 1 at byte {second}: data CRC mismatch"):
        list(tfr.read_records(bad))
    expected = bytearray(b"second record")
    expected[3] ^= 0x01
    assert list(tfr.read_records(bad, verify=False))[1] == bytes(expected)  # unverified: read as is
    flipped = raw.copy()
    flipped[second] ^= 0x01  # the length field of record 1
    bad.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="record 1 .*length CRC mismatch"):
        list(tfr.read_records(bad))
    with pytest.raises(DataError, match="record 1 .*length CRC mismatch"):
        tfr.count_records(bad)
    bad.write_bytes(bytes(raw[:-3]))
    with pytest.raises(DataError, match=r"bad\.tfrecord: record 1 .*truncated record"):
        list(tfr.read_records(bad))
    with pytest.raises(DataError, match="truncated"):
        tfr.count_records(bad)
    bad.write_bytes(bytes(raw[:second + 5]))
    with pytest.raises(DataError, match="truncated header"):
        list(tfr.read_records(bad))


# --- protobuf wire format ---------------------------------------------------------------------------
def test_protobuf_decoder_reads_bytes_written_by_google_protobuf():
    context, lists = tfr.parse_sequence_example(PB_SEQUENCE_EXAMPLE)
    assert context == {"end_time_seconds": [430.0], "labels": [0, 137, 526], "start_time_seconds": [420.0],
                       "video_id": [b"-0RWZT-miFs"]}
    assert lists == {"audio_embedding": [[bytes([0, 1, 127, 128, 255])], [bytes([7, 8, 9, 10, 11])]]}
    assert tfr.parse_example(PB_EXAMPLE) == {"f": [0.5, -2.25], "neg": [-1, 300, -(2**63)], "s": [b"ab", b""]}


def test_protobuf_encoder_writes_the_same_bytes():
    context, lists = tfr.parse_sequence_example(PB_SEQUENCE_EXAMPLE)
    assert tfr.encode_sequence_example({k: context[k] for k in sorted(context)}, lists) == PB_SEQUENCE_EXAMPLE
    assert tfr.encode_example({"f": [0.5, -2.25], "neg": [-1, 300, -(2**63)], "s": [b"ab", b""]}) == PB_EXAMPLE


def test_protobuf_decoder_accepts_unpacked_repeated_and_rejects_garbage():
    # Int64List with two unpacked varints (field 1, wire 0) and FloatList with one fixed32 (wire 5).
    ints = bytes([0x08, 0x05, 0x08, 0x96, 0x01])
    floats = bytes([0x0D]) + struct.pack("<f", 1.5)
    feature_int = tfr._length_delimited(3, ints)
    feature_float = tfr._length_delimited(2, floats)
    features = tfr._encode_map({"i": feature_int, "f": feature_float})
    assert tfr.parse_example(tfr._length_delimited(1, features)) == {"i": [5, 150], "f": [1.5]}
    with pytest.raises(ValueError):
        tfr.parse_example(b"\x0a\x20abc")  # length runs past the end


# --- AudioSet records, labels, HDF5 ----------------------------------------------------------------
def test_dequantize_is_the_release_formula():
    x = np.array([0, 1, 127, 128, 200, 255], dtype=np.uint8)
    # the release readme's uint8_to_float32, which the scripts of Darna Sequeiros (2018), Annex A, copy
    np.testing.assert_array_equal(dequantize(x), (np.float32(x) - 128.0) / 128.0)
    assert dequantize(x).dtype == np.float32
    np.testing.assert_allclose(dequantize(x)[[0, 3, 5]], [-1.0, 0.0, 127 / 128])


def test_tfrecord_clips_roundtrip_exactly_and_pad_with_zeros(tmp_path):
    clips = _clips(7)
    path = write_audioset_tfrecord(tmp_path / "bal_train" / "00.tfrecord", clips)
    back = list(iter_tfrecord_clips(path))
    for original, read in zip(clips, back, strict=True):
        assert read.video_id == original.video_id and read.labels == original.labels
        assert (read.start_time, read.end_time) == (original.start_time, original.end_time)
        np.testing.assert_array_equal(read.embeddings, original.embeddings)
    arrays = clips_to_arrays(back)
    assert arrays.x.shape == (7, 10, 128) and arrays.y.shape == (7, 527)
    np.testing.assert_array_equal(arrays.x[2, :1], clips[2].embeddings)
    assert not arrays.x[2, 1:].any()  # a 1-second clip: 9 zero rows, like the HDF5 release
    assert [tuple(np.flatnonzero(r)) for r in arrays.y] == [c.labels for c in clips]
    np.testing.assert_array_equal(pad_steps(np.ones((12, 4), np.uint8))[:, 0], np.ones(10))  # cut to 10


def test_audioset_record_errors_name_file_and_record(tmp_path):
    good = tfr.encode_sequence_example({"video_id": [b"x"], "labels": [3]}, {"audio_embedding": [[bytes(128)]]})
    bad_label = tfr.encode_sequence_example({"video_id": [b"y"], "labels": [999]},
                                            {"audio_embedding": [[bytes(128)]]})
    path = tfr.write_records(tmp_path / "e.tfrecord", [good, bad_label])
    with pytest.raises(DataError, match=r"e\.tfrecord: record 1: .*label 999 outside 0\.\.526"):
        list(iter_tfrecord_clips(path))
    no_list = tfr.write_records(tmp_path / "f.tfrecord", [tfr.encode_example({"a": [1]})])
    with pytest.raises(DataError, match=r"f\.tfrecord: record 0: .*audio_embedding"):
        list(iter_tfrecord_clips(no_list))


def test_h5_roundtrip_exact_and_same_as_tfrecord(tmp_path):
    clips = _clips(9, seed=3)
    arrays = clips_to_arrays(clips)
    h5_path = write_h5(tmp_path / "eval.h5", arrays)
    back = read_h5(h5_path)
    np.testing.assert_array_equal(back.x, arrays.x)
    np.testing.assert_array_equal(back.y, arrays.y)
    assert back.video_ids == arrays.video_ids and back.y.dtype == bool
    assert h5_info(h5_path) == H5Info(n_rows=9, n_steps=10, dim=128, n_classes=527)
    subset = read_h5(h5_path, rows=np.array([1, 4, 8]), chunk_rows=2)
    np.testing.assert_array_equal(subset.x, arrays.x[[1, 4, 8]])
    assert subset.video_ids == ["vid0001", "vid0004", "vid0008"]
    # The two formats give identical model inputs for the same clips.
    tf_path = write_audioset_tfrecord(tmp_path / "eval.tfrecord", clips)
    from_tf = load_embedding_arrays(tf_path)
    np.testing.assert_array_equal(from_tf.x, load_embedding_arrays(h5_path).x)
    np.testing.assert_array_equal(from_tf.y, arrays.y)


def test_convert_tfrecords_to_h5_in_chunks(tmp_path):
    clips = _clips(11, seed=8)
    write_audioset_tfrecord(tmp_path / "tf" / "a.tfrecord", clips[:6])
    write_audioset_tfrecord(tmp_path / "tf" / "b.tfrecord", clips[6:])
    out = convert_tfrecords_to_h5(tmp_path / "tf", tmp_path / "bal_train.h5", chunk_rows=4)
    expected = clips_to_arrays(clips)
    got = read_h5(out)
    np.testing.assert_array_equal(got.x, expected.x)
    np.testing.assert_array_equal(got.y, expected.y)
    assert got.video_ids == expected.video_ids


def test_truncated_or_wrong_hdf5_gives_an_error_naming_the_file(tmp_path):
    path = write_h5(tmp_path / "unbal_train.h5", make_synthetic_embeddings(400, seed=1))
    raw = path.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"truncated\.h5: cannot open HDF5 file .*truncated or corrupt"):
        read_h5(truncated)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an hdf5 file" * 100)
    with pytest.raises(AudioclfError, match=r"garbage\.h5"):
        h5_info(garbage)
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as handle:
        handle["x"] = np.zeros((3, 10, 128), dtype=np.float32)
        handle["y"] = np.zeros((3, 527), dtype=bool)
    with pytest.raises(DataError, match=r"wrong\.h5: dataset 'x' is float32 .*expected uint8"):
        read_h5(wrong)
    with pytest.raises(DataError, match=r"missing\.h5: HDF5 file not found"):
        read_h5(tmp_path / "missing.h5")


def test_class_labels_csv(tmp_path):
    path = tmp_path / "class_labels_indices.csv"
    path.write_text('index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n'
                    '2,/m/02zsn,"Female speech, woman speaking"\n')
    assert read_class_labels(path) == ["Speech", "Male speech, man speaking", "Female speech, woman speaking"]
    path.write_text("index,mid,display_name\n0,/m/a,A\n2,/m/c,C\n")
    with pytest.raises(DataError, match="index 1 is missing"):
        read_class_labels(path)
    path.write_text("id,name\n0,A\n")
    with pytest.raises(DataError, match="line 1: expected the header index,mid,display_name"):
        read_class_labels(path)


def test_import_audioset_manifest(tmp_path):
    names = [f"Sound {i}" for i in range(527)]
    write_class_labels(tmp_path / "class_labels_indices.csv", names)
    arrays = clips_to_arrays(_clips(6, seed=5))
    write_h5(tmp_path / "bal_train.h5", arrays)
    manifest = get_importer("audioset")(tmp_path / "bal_train.h5")
    assert manifest.task == "multi_label" and manifest.classes == names and len(manifest) == 6
    assert manifest[0].id == "vid0000" and manifest[0].path.endswith("bal_train.h5#0")
    assert {item.split for item in manifest} == {"train"}
    np.testing.assert_array_equal(manifest.label_matrix().astype(bool), arrays.y)
    write_audioset_tfrecord(tmp_path / "eval" / "part.tfrecord", _clips(4, seed=6))
    assert {item.split for item in import_audioset(tmp_path / "eval")} == {"test"}


# --- datasets and streaming -------------------------------------------------------------------------
def test_in_memory_dataset_items():
    arrays = make_synthetic_embeddings(5, n_classes=20, seed=2)
    dataset = EmbeddingDataset(arrays)
    x, y = dataset[3]
    assert x.dtype == torch.float32 and x.shape == (10, 128) and y.shape == (20,)
    torch.testing.assert_close(x, torch.from_numpy((arrays.x[3].astype(np.float32) - 128) / 128))
    assert y.tolist() == arrays.y[3].astype(float).tolist()


def test_split_rows_partitions_deterministically():
    parts = split_rows(103, [0.8, 0.1, 0.1], seed=4)
    assert [len(p) for p in parts] == [82, 11, 10]  # bounds round(82.4) = 82, round(92.7) = 93
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert all(np.array_equal(a, b) for a, b in zip(parts, split_rows(103, [0.8, 0.1, 0.1], seed=4)))
    assert not np.array_equal(parts[1], split_rows(103, [0.8, 0.1, 0.1], seed=5)[1])


def _stream_rows(stream) -> list[str]:
    """Identify yielded rows by their first 8 bytes (synthetic rows are unique)."""
    rows = []
    for x, y in stream:
        assert x.dtype == torch.float32 and y.dtype == torch.float32
        raw = np.round(x.numpy() * 128 + 128).astype(np.uint8)
        rows += [r[0, :8].tobytes().hex() for r in raw]
    return rows


@pytest.fixture(scope="module")
def big_h5(tmp_path_factory):
    arrays = make_synthetic_embeddings(1000, n_classes=16, seed=7)
    path = write_h5(tmp_path_factory.mktemp("stream") / "unbal_train.h5", arrays)
    keys = [r[0, :8].tobytes().hex() for r in arrays.x]
    assert len(set(keys)) == len(keys)
    return path, arrays, keys


def test_h5_stream_never_holds_more_than_the_cap_and_covers_each_row_once(big_h5):
    path, _, keys = big_h5
    stream = H5EmbeddingStream(path, batch_size=32, seed=1, max_rows_in_memory=300, chunk_rows=64)
    plan = plan_stream(300, 32, 64)
    assert plan.max_rows <= 300 and plan.chunk_rows == 64
    stream.set_epoch(1)
    epoch1 = _stream_rows(stream)
    assert sorted(epoch1) == sorted(keys)  # every row exactly once
    assert 0 < stream.peak_rows <= 300 < len(keys)  # the file is larger than the cap ...
    assert stream.max_read_rows <= 64  # ... and is only ever read in chunks
    stream.set_epoch(2)
    epoch2 = _stream_rows(stream)
    assert sorted(epoch2) == sorted(keys) and epoch2 != epoch1
    stream.set_epoch(1)
    assert _stream_rows(stream) == epoch1  # (seed, epoch) fixes the order
    assert epoch1 != keys  # shuffled, not file order
    # without shuffling: file order, still chunked
    ordered = H5EmbeddingStream(path, batch_size=50, shuffle=False, max_rows_in_memory=200, chunk_rows=64)
    assert _stream_rows(ordered) == keys and ordered.peak_rows <= 200


def test_h5_stream_row_subset_and_worker_sharding(big_h5):
    path, _, keys = big_h5
    rows = split_rows(1000, [0.7, 0.3], seed=0)[0]
    stream = H5EmbeddingStream(path, rows=rows, batch_size=16, seed=3, max_rows_in_memory=400, chunk_rows=100)
    assert stream.n_rows == 700
    assert sorted(_stream_rows(stream)) == sorted(keys[i] for i in rows)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    assert sorted(_stream_rows(loader)) == sorted(keys[i] for i in rows)  # disjoint shards, nothing lost


def test_tfrecord_stream_files_shuffled_rows_subset_and_cap(tmp_path):
    arrays = make_synthetic_embeddings(120, seed=9)
    clips = [AudioSetClip(v, x, tuple(np.flatnonzero(y))) for x, y, v in zip(arrays.x, arrays.y, arrays.video_ids)]
    paths = [write_audioset_tfrecord(tmp_path / f"{i:02d}.tfrecord", clips[i * 30:(i + 1) * 30]) for i in range(4)]
    keys = [r[0, :8].tobytes().hex() for r in arrays.x]
    stream = TFRecordEmbeddingStream(paths, batch_size=8, seed=0, max_rows_in_memory=64, chunk_rows=10)
    assert stream.n_rows == 120
    rows = _stream_rows(stream)
    assert sorted(rows) == sorted(keys) and rows != keys
    assert stream.peak_rows <= 64 and stream.max_read_rows <= 10
    subset = np.array([0, 5, 31, 64, 119])
    picked = TFRecordEmbeddingStream(paths, rows=subset, batch_size=2, shuffle=False, max_rows_in_memory=16,
                                     chunk_rows=4)
    assert _stream_rows(picked) == [keys[i] for i in subset]
    memory = load_tfrecord_rows(paths, subset)
    np.testing.assert_array_equal(memory.x, arrays.x[subset])
    # fewer files than shards: every shard reads each file and keeps every n-th record
    single = TFRecordEmbeddingStream(paths[:1], batch_size=4, seed=2, max_rows_in_memory=64, chunk_rows=8)
    loader = torch.utils.data.DataLoader(single, batch_size=None, num_workers=2)
    assert sorted(_stream_rows(loader)) == sorted(keys[:30])


def test_stream_cap_too_small_is_a_config_error(big_h5):
    with pytest.raises(ConfigError, match="max_rows_in_memory=40 is too small for batch_size=32"):
        H5EmbeddingStream(big_h5[0], batch_size=32, max_rows_in_memory=40)


# --- the runner ---------------------------------------------------------------------------------------
CLASS_NAMES = [f"Sound, kind {i}" for i in range(527)]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("audioset")
    write_h5(root / "bal_train.h5", make_synthetic_embeddings(480, seed=11))
    write_h5(root / "eval.h5", make_synthetic_embeddings(160, seed=12))
    write_class_labels(root / "class_labels_indices.csv", CLASS_NAMES)
    return root


def _cfg(root, out, **train):
    return {"data": {"path": str(root)}, "out": str(out), "seed": 3,
            "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3, **train},
            "model": {"name": "embedding_mlp_s5", "hidden": 64}}


@pytest.fixture(scope="module")
def trained(layout, tmp_path_factory):
    return train_embeddings(_cfg(layout, tmp_path_factory.mktemp("runs") / "run"))


def test_train_embeddings_writes_a_complete_run(trained, layout):
    run = RunDir(trained)
    for path in (run.config, run.metrics, run.summary, run.checkpoint("best"), run.checkpoint("last"),
                 run.plots / "loss.png", run.plots / "metrics.png"):
        assert path.exists() and path.stat().st_size > 0, path
    summary = run.read_summary()
    assert summary["task"] == "multi_label" and summary["classes"] == CLASS_NAMES
    assert summary["monitor"] == "mAP" and summary["input_shape"] == [10, 128]
    assert summary["counts"] == {"train": 427, "val": 53, "test": 160}  # val = 1/9 of bal_train, test = eval
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
    test = summary["metrics"]["test"]
    # Every test metric recomputed from the best checkpoint's scores: scikit-learn or the metric's definition.
    out = run_outputs(trained).result
    t, p = out.targets.astype(bool), out.probs.astype(np.float64)
    assert t.shape == (160, 527)
    present = np.flatnonzero(t.any(axis=0))
    assert test["mAP"] == pytest.approx(np.mean([skm.average_precision_score(t[:, c], p[:, c]) for c in present]))
    lwlrap = skm.label_ranking_average_precision_score(t, p, sample_weight=t.sum(axis=1))  # DCASE 2019 Task 2
    assert test["lwlrap"] == pytest.approx(lwlrap)
    # Darna Sequeiros (2018), Annex A code: per clip |rounded & true| / |rounded | true|; pSR = recall of the labels.
    # Zero-config decides at the per-class thresholds it chose on validation (train.threshold=f1), not at 0.5
    # (the audioset_embeddings recipe keeps the thesis's 0.5: test_recipes).
    thresholds = read_decisions(trained, CLASS_NAMES).threshold_array(len(CLASS_NAMES))
    assert (thresholds != 0.5).any()
    rounded = p > thresholds
    union = (rounded | t).sum(axis=1)
    assert test["mAP_per_example"] == pytest.approx(np.mean((rounded & t).sum(axis=1)[union > 0] / union[union > 0]))
    assert test["pSR"] == pytest.approx((rounded & t).sum() / t.sum())
    q = np.clip(p, 1e-7, 1 - 1e-7)  # the loss is the mean binary cross-entropy over clips x classes
    assert test["loss"] == pytest.approx(-np.mean(t * np.log(q) + ~t * np.log(1 - q)), rel=1e-6)
    # Learned something: well above the mAP of random scores on the same eval targets.
    targets = read_h5(layout / "eval.h5").y
    chance = mean_average_precision(targets, np.random.default_rng(0).random(targets.shape))
    assert test["mAP"] > chance + 0.15
    # The resolved config records the embedding options and the embeddings' defaults.
    config = run.read_config()
    assert config["train"]["batch_size"] == 32 and config["train"]["monitor"] == "mAP"
    assert config["data"]["format"] == "audioset" and config["data"]["options"]["stream"] == "auto"
    # evaluate_run on the run's own test set reproduces summary.json.
    result = evaluate_run(trained)
    assert result["n_items"] == 160
    assert result["metrics"]["mAP"] == pytest.approx(test["mAP"], abs=1e-9)


@pytest.mark.slow  # end to end (2-4 s): make test-slow, to keep make test under five minutes
def test_resume_gives_the_same_metrics_as_an_uninterrupted_run(layout, trained, tmp_path):
    out = tmp_path / "resumed"
    train_embeddings(_cfg(layout, out, epochs=1))
    train_embeddings(_cfg(layout, out, epochs=2), resume=True)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(RunDir(out).read_metrics()) == strip(RunDir(trained).read_metrics())


def test_streamed_training_on_a_file_larger_than_the_cap(layout, tmp_path):
    cfg = _cfg(layout, tmp_path / "streamed", epochs=1)
    cfg["data"]["options"] = {"max_rows_in_memory": 200, "chunk_rows": 40}  # 427 training rows > 200
    cfg["model"] = {"name": "attention_pooling", "hidden": 32, "layers": 1}
    run = RunDir(train_embeddings(cfg))
    summary = run.read_summary()
    assert summary["streamed"] is True and summary["counts"]["train"] == 427
    record = run.read_metrics()[0]
    assert 0 < record["stream/peak_rows"] <= 200
    assert np.isfinite(record["train/loss"])
    # The test mAP is scikit-learn's on the model's scores for all 160 eval rows.
    out = run_outputs(run.root).result
    t, p = out.targets.astype(bool), out.probs
    assert t.shape == (160, 527)
    ap = [skm.average_precision_score(t[:, c], p[:, c]) for c in np.flatnonzero(t.any(axis=0))]
    assert summary["metrics"]["test"]["mAP"] == pytest.approx(np.mean(ap))


def test_tfrecord_layout_bipolar_model_and_data_detection(tmp_path):
    root = tmp_path / "audioset_v1_embeddings"
    arrays = make_synthetic_embeddings(200, seed=21)
    clips = [AudioSetClip(v, x, tuple(np.flatnonzero(y))) for x, y, v in zip(arrays.x, arrays.y, arrays.video_ids)]
    write_audioset_tfrecord(root / "bal_train" / "a.tfrecord", clips[:120])
    write_audioset_tfrecord(root / "bal_train" / "b.tfrecord", clips[120:160])
    write_audioset_tfrecord(root / "eval" / "c.tfrecord", clips[160:])
    assert set(find_layout(tmp_path)) == {"balanced", "eval"} and is_embedding_data(tmp_path)
    assert not is_embedding_data(tmp_path / "nothing") and is_embedding_data(root / "eval" / "c.tfrecord")
    cfg = {"data": {"path": str(tmp_path)}, "out": str(tmp_path / "run"),
           "train": {"epochs": 1, "batch_size": 16},
           "model": {"name": "embedding_mlp_s5", "hidden": 32, "output": "bipolar"}}
    with pytest.warns(UserWarning, match="class_labels_indices.csv"):
        summary = RunDir(train_embeddings(cfg)).read_summary()
    assert summary["classes"][:2] == ["class_000", "class_001"] and len(summary["classes"]) == 527
    assert summary["counts"] == {"train": 142, "val": 18, "test": 40}
    values = summary["metrics"]["val"]
    # Bipolar MSE between tanh outputs and ±1 targets; probabilities are (tanh + 1) / 2, so it is 4 * MSE(p, y).
    out = run_outputs(tmp_path / "run", split="val").result
    assert values["loss"] == pytest.approx(4 * np.mean((out.probs - out.targets) ** 2), rel=1e-6)
    assert values["loss"] < 1.0  # below all-zero outputs (exactly 1); measured 0.82 here, 0.81-0.94 over seeds
    assert set(values) >= {"mAP", "mAP_per_example", "pSR", "lwlrap"}


def test_runner_config_errors(layout, tmp_path):
    bad_model = _cfg(layout, tmp_path / "x")
    bad_model["model"] = {"name": "small_cnn"}
    with pytest.raises(ConfigError, match="model.name=small_cnn takes features input; .*embedding_lstm"):
        train_embeddings(bad_model)
    bad_stream = _cfg(layout, tmp_path / "y")
    bad_stream["data"]["options"] = {"stream": "sometimes"}
    with pytest.raises(ConfigError, match="data.options.stream='sometimes'"):
        train_embeddings(bad_stream)
    with pytest.raises(ConfigError, match="--resume"):
        train_embeddings(_cfg(layout, tmp_path / "never"), resume=True)
    unbalanced = _cfg(layout, tmp_path / "z")
    unbalanced["data"]["options"] = {"train_set": "unbalanced"}
    with pytest.raises(DataError, match="no unbalanced training set"):
        train_embeddings(unbalanced)
