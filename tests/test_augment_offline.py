import json
import warnings

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
