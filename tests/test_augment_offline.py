import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from audioclf.augment import offline
from audioclf.augment.offline import GROUP_COLUMNS, augment_dataset, item_rng
from audioclf.augment.waveform import build_waveform_augment
from audioclf.data.audio import load_audio, write_audio
from audioclf.data.manifest import Item, Manifest
from audioclf.errors import AudioDecodeError, DataError

SPECS = [{"name": "gain", "p": 1.0, "min_gain_db": -6, "max_gain_db": -1},
         {"name": "time_shift", "p": 1.0, "mode": "pad"},
         {"name": "polarity_inversion", "p": 0.5}]


@pytest.fixture
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for i, (item_id, label, split) in enumerate([("dog/a1", "dog", "train"), ("cat/b 2", "cat", "train"),
                                                 ("cat/c3", "cat", "val")]):
        path = tmp_path / "src" / f"{i}.wav"
        write_audio(path, (0.2 * rng.standard_normal(8000 + 1000 * i)).astype(np.float32), 16000)
        items.append(Item(id=item_id, path=str(path), labels=(label,), split=split, groups={"device": "a"}))
    return Manifest(items)


def test_manifest_content(manifest, tmp_path):
    out = augment_dataset(manifest, tmp_path / "aug", SPECS, n_variants=2, seed=1, progress=False)
    assert len(out) == 9 and out.classes == manifest.classes and out.task == manifest.task
    assert [item.id for item in out][:3] == ["dog/a1", "dog/a1.aug1", "dog/a1.aug2"]
    assert set(GROUP_COLUMNS) <= set(out.group_names) and "device" in out.group_names
    for source in manifest:
        rows = [item for item in out if item.groups["source_id"] == source.id]
        assert [r.groups["variant"] for r in rows] == ["0", "1", "2"]
        original, copies = rows[0], rows[1:]
        assert original.path == source.path and original.groups["augmentation"] == "[]"
        for copy in copies:
            assert copy.labels == source.labels and copy.split == source.split
            assert copy.groups["device"] == "a"
            records = json.loads(copy.groups["augmentation"])
            assert [r["name"] for r in records][:2] == ["gain", "time_shift"]
            assert -6 <= records[0]["params"]["gain_db"] <= -1
            # the record and the original are enough to rebuild the file (up to 16-bit quantisation)
            wave, sr = load_audio(source.path)
            written, written_sr = load_audio(copy.path)
            assert written_sr == sr and copy.duration == pytest.approx(len(wave) / sr)
            rebuilt = build_waveform_augment(SPECS).replay(wave, sr, records)
            np.testing.assert_allclose(written, rebuilt, atol=1.0 / 32768)
    assert (tmp_path / "aug" / "audio" / "cat" / "b_2.aug1.wav").exists()  # sub-folder kept, space replaced
    assert Manifest.from_csv(tmp_path / "aug" / "manifest.csv") == out


def test_deterministic_from_seed_and_resumable(manifest, tmp_path, monkeypatch):
    first = augment_dataset(manifest, tmp_path / "one", SPECS, seed=4, progress=False)
    second = augment_dataset(manifest, tmp_path / "two", SPECS, seed=4, progress=False)
    other = augment_dataset(manifest, tmp_path / "three", SPECS, seed=5, progress=False)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "audio").rglob("*.wav"))
    assert len(files) == 3
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()
    assert [i.groups for i in first] == [i.groups for i in second]
    assert [i.groups for i in first] != [i.groups for i in other]
    # the rng depends on (seed, id, variant) only, not on the row order
    record = json.loads(first[1].groups["augmentation"])
    wave, sr = load_audio(manifest[0].path)
    _, expected = build_waveform_augment(SPECS).call_with_params(wave, sr, item_rng(4, "dog/a1", 1))
    assert record == json.loads(json.dumps(expected))

    # resume: only the missing file is decoded and rewritten, identically
    victim = tmp_path / "one" / files[0]
    original = victim.read_bytes()
    victim.unlink()
    calls = []
    real = offline.load_audio
    monkeypatch.setattr(offline, "load_audio", lambda path, **kw: calls.append(path) or real(path, **kw))
    again = augment_dataset(manifest, tmp_path / "one", SPECS, seed=4, progress=False)
    assert len(calls) == 1 and victim.read_bytes() == original and again == first
    # extending with more variants keeps variant 1 and only makes the new ones
    calls.clear()
    more = augment_dataset(manifest, tmp_path / "one", SPECS, n_variants=2, seed=4, progress=False)
    assert len(calls) == 3 and len(more) == 9
    assert [i for i in more if i.groups["variant"] in ("0", "1")] == list(first)


def test_other_settings_in_the_same_folder_are_refused(manifest, tmp_path):
    augment_dataset(manifest, tmp_path / "aug", SPECS, seed=0, progress=False)
    with pytest.raises(DataError, match="other settings"):
        augment_dataset(manifest, tmp_path / "aug", SPECS, seed=1, progress=False)
    with pytest.raises(DataError, match="other settings"):
        augment_dataset(manifest, tmp_path / "aug", SPECS[:1], seed=0, progress=False)


def test_options_resample_no_originals_and_a_compose(manifest, tmp_path):
    out = augment_dataset(manifest, tmp_path / "aug", build_waveform_augment(SPECS), n_variants=1,
                          sample_rate=8000, keep_original=False, workers=2, progress=False)
    assert len(out) == 3 and all(item.groups["variant"] == "1" for item in out)
    for item, source in zip(out, manifest):
        assert load_audio(item.path)[1] == 8000
        assert item.duration == pytest.approx(load_audio(source.path)[0].size / 16000, abs=1e-3)


def test_bad_source_files_are_skipped_or_raised(manifest, tmp_path, caplog):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    items = [*manifest, Item(id="bad", path=str(bad), labels=("dog",))]
    with_bad = manifest.with_items(items)
    out = augment_dataset(with_bad, tmp_path / "aug", SPECS, progress=False)
    assert [i.id for i in out if i.groups["source_id"] == "bad"] == ["bad"]  # original kept, no copy
    assert "bad.wav" in caplog.text
    with pytest.raises(AudioDecodeError, match="bad.wav"):
        augment_dataset(with_bad, tmp_path / "strict", SPECS, strict=True, progress=False)


def test_clipping_is_warned(manifest, tmp_path):
    loud = [{"name": "gain", "p": 1.0, "min_gain_db": 30, "max_gain_db": 30}]
    with pytest.warns(UserWarning, match="3 augmented files exceeded full scale"):
        augment_dataset(manifest, tmp_path / "pcm", loud, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = augment_dataset(manifest, tmp_path / "float", loud, subtype="FLOAT", progress=False)
    assert np.abs(load_audio(out[1].path)[0]).max() > 1.0


def test_invalid_arguments(manifest, tmp_path):
    from audioclf.errors import ConfigError

    with pytest.raises(ConfigError, match="n_variants"):
        augment_dataset(manifest, tmp_path / "a", SPECS, n_variants=0)
    with pytest.raises(ConfigError, match="seed"):
        augment_dataset(manifest, tmp_path / "a", SPECS, seed=-1)
    with pytest.raises(ConfigError, match=r"augment\[0\]: unknown augmentation"):
        augment_dataset(manifest, tmp_path / "a", [{"name": "reverb"}])


@pytest.fixture
def three_irs(tmp_path):
    """Three impulse responses unlike each other (delays, tails), named so that sorted order is a, b, c."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "irs"
    for k, name in enumerate(["a_mic.wav", "b_mic.wav", "c_mic.wav"]):
        ir = np.zeros(200, dtype=np.float32)
        ir[5 + 20 * k] = 1.0
        ir[6 + 20 * k:] = (0.4 * rng.standard_normal(194 - 20 * k) * np.exp(-np.arange(194 - 20 * k) / (10 + 30 * k))
                           ).astype(np.float32)
        write_audio(folder / name, ir, 16000, subtype="FLOAT")
    return [str(folder / name) for name in ["a_mic.wav", "b_mic.wav", "c_mic.wav"]]


def _copies_match_ir_k(out, manifest, irs, drc_args):
    """Whether every copy k of every source is that source convolved with IR k, then the (fixed) DRC, exactly."""
    from audioclf.augment.waveform import DynamicRangeCompression, ImpulseResponse

    convolve, drc = ImpulseResponse(ir_dir=irs), DynamicRangeCompression(**drc_args)
    fixed = {"threshold_db": drc_args["min_threshold_db"], "ratio": drc_args["min_ratio"]}
    matches = []
    for source in manifest:
        wave, sr = load_audio(source.path)
        for copy in (item for item in out if item.groups["source_id"] == source.id):
            k = int(copy.groups["variant"])
            expected = drc.apply(convolve.apply(wave, sr, {"file": irs[k - 1]}), sr, fixed)
            matches.append(np.allclose(load_audio(copy.path)[0], expected, rtol=0.0, atol=1e-6))
    return matches


def test_each_ir_gives_copy_k_the_clip_convolved_with_ir_k(manifest, tmp_path, three_irs):
    """González Poy (2022) §4.2.2: every clip convolved with each of the 8 microphone IRs (15,000 x 8 copies)."""
    drc_args = {"min_threshold_db": -20, "max_threshold_db": -20, "min_ratio": 4, "max_ratio": 4}
    spec = {"name": "impulse_response", "ir_dir": str(Path(three_irs[0]).parent), "drc": drc_args, "p": 1.0}
    out = augment_dataset(manifest, tmp_path / "each", [{**spec, "each": True}], n_variants=3, seed=2,
                          keep_original=False, subtype="FLOAT", progress=False)
    assert len(out) == 9
    assert all(_copies_match_ir_k(out, manifest, three_irs, drc_args))
    for copy in out:  # the record names IR k, so replay rebuilds the file
        assert json.loads(copy.groups["augmentation"])[0]["params"]["file"] == three_irs[int(copy.groups["variant"]) - 1]
    # a random pick (each: false) gives some clip some IR twice: the check above tells the two apart
    drawn = augment_dataset(manifest, tmp_path / "drawn", [spec], n_variants=3, seed=2, keep_original=False,
                            subtype="FLOAT", progress=False)
    assert not all(_copies_match_ir_k(drawn, manifest, three_irs, drc_args))


def test_each_ir_needs_one_variant_per_ir_p_1_and_offline_copies(manifest, tmp_path, three_irs):
    from audioclf.config import config_from_dict
    from audioclf.errors import ConfigError
    from audioclf.training.inputs.audio import AudioInputs

    spec = {"name": "impulse_response", "ir_dir": str(Path(three_irs[0]).parent), "each": True, "p": 1.0}
    with pytest.raises(ConfigError, match=r"augment\[0\] \(impulse_response\).*3 impulse responses.*not 2"):
        augment_dataset(manifest, tmp_path / "a", [spec], n_variants=2, progress=False)
    assert not (tmp_path / "a").exists()  # refused before any file is written
    with pytest.raises(ConfigError, match="each: every copy k is convolved with IR k, so p must be 1.0"):
        augment_dataset(manifest, tmp_path / "a", [{**spec, "p": 0.5}], n_variants=3, progress=False)
    cfg = config_from_dict({"data": {"path": "/data"}, "augment": {"waveform": [spec]}})
    with pytest.raises(ConfigError, match=r"augment\.waveform.*no numbered copies: drop each"):
        AudioInputs.check_config(cfg)
