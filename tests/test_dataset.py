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


def test_crop_uniforms_are_uniform_deterministic_and_depend_on_seed_epoch_and_item():
    from audioclf.data.dataset import crop_starts, crop_uniforms

    u = crop_uniforms(3, 7, np.arange(200_000))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002  # uniform's moments
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 19_000  # every tenth gets its share (20,000)
    assert np.array_equal(crop_uniforms(3, 7, [5, 9]), u[[5, 9]])  # one item alone = within a batch
    for other in (crop_uniforms(4, 7, np.arange(1000)), crop_uniforms(3, 8, np.arange(1000)),
                  crop_uniforms(3, 7, np.arange(1, 1001))):
        assert np.mean(other == u[:1000]) < 0.01
    starts = crop_starts(3, 7, np.arange(1000), np.full(1000, 150), 100)  # 51 possible starts
    assert starts.min() == 0 and starts.max() == 50
    assert np.array_equal(crop_starts(3, 7, [0, 1], [80, 100], 100), [0, 0])  # nothing to choose: 0


def test_random_crops_are_windows_of_the_clip_and_follow_the_epoch():
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(5000).astype(np.float32)
    data = WaveformDataset([wave, wave[:300]], np.array([0, 1]), 1000, "tile", "random", seed=1)
    crops = []
    for epoch in range(5):
        data.set_epoch(epoch)
        clip = data[0][0].numpy()
        start = int(np.flatnonzero(np.isclose(wave, clip[0]))[0])
        assert np.array_equal(clip, wave[start:start + 1000])
        crops.append(start)
        assert np.array_equal(data[1][0].numpy(), np.tile(wave[:300], 4)[:1000])  # short: tiled, no draw
    assert len(set(crops)) > 1
