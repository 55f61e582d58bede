import numpy as np
import pytest
import torch

from audioclf.data.audio import write_audio
from audioclf.data.dataset import WaveformDataset, decode_manifest, targets_for
from audioclf.data.manifest import Item, Manifest
from audioclf.errors import AudioDecodeError


def _manifest(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for i, label in enumerate(["a", "b", "a"]):
        path = tmp_path / f"x{i}.wav"
        write_audio(path, (0.1 * rng.standard_normal(44100)).astype(np.float32), 44100)
        items.append(Item(id=f"x{i}", path=str(path), labels=(label,)))
    (tmp_path / "bad.wav").write_text("nope")
    items.append(Item(id="bad", path=str(tmp_path / "bad.wav"), labels=("b",)))
    return Manifest(items)


def test_decode_resamples_once_and_reports_bad_files(tmp_path):
    manifest = _manifest(tmp_path)
    waves, skipped = decode_manifest(manifest, 16000, progress=False)
    assert sorted(waves) == ["x0", "x1", "x2"]
    assert all(len(w) == 16000 and w.dtype == np.float32 for w in waves.values())
    assert [s.path for s in skipped] == [str(tmp_path / "bad.wav")]
    with pytest.raises(AudioDecodeError, match="bad.wav"):
        decode_manifest(manifest, 16000, strict=True, progress=False)


def test_decode_cache_returns_the_same_waveforms(tmp_path):
    manifest = _manifest(tmp_path)
    first, _ = decode_manifest(manifest, 16000, cache_dir=tmp_path / "cache", progress=False)
    second, _ = decode_manifest(manifest, 16000, cache_dir=tmp_path / "cache", progress=False)
    assert any((tmp_path / "cache").rglob("*"))
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_targets_single_and_multi_label():
    items = [Item("a", "a.wav", ("dog",)), Item("b", "b.wav", ("cat", "dog")), Item("c", "c.wav", ())]
    manifest = Manifest(items)
    matrix = targets_for(manifest, ["cat", "dog"], "multi_label")
    np.testing.assert_array_equal(matrix, [[0, 1], [1, 1], [0, 0]])
    single = Manifest(items[:1])
    np.testing.assert_array_equal(targets_for(single, ["cat", "dog"], "single_label"), [1])


def test_random_crops_depend_only_on_seed_epoch_and_index():
    waves = [np.arange(1000, dtype=np.float32), np.arange(50, dtype=np.float32)]
    ds = WaveformDataset(waves, np.array([0, 1]), n_samples=100, crop="random", seed=5)
    a0 = ds[0][0].clone()
    ds.set_epoch(1)
    a1 = ds[0][0].clone()
    assert not torch.equal(a0, a1)  # a new crop each epoch
    ds.set_epoch(0)
    assert torch.equal(ds[0][0], a0)  # ... and the same crop for the same (seed, epoch, index)
    short = ds[1][0]
    assert short.shape == (100,) and torch.equal(short[:50], short[50:])  # tiled
