"""room_reverb (simulated rooms) and own_background (the training set's own quiet frames)."""

import math
import pickle
import sys

import numpy as np
import pytest

from audioclf.augment.offline import augment_dataset
from audioclf.augment.waveform import OwnBackground, RoomReverb, build_waveform_augment, list_augmentations
from audioclf.config import load_config
from audioclf.data.manifest import Manifest
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import ConfigError
from audioclf.training.inputs.audio import AudioInputs
from audioclf.training.inputs.shards import ShardInputs

SR = 8000


def _noise(n, amp=0.1, seed=0):
    return (amp * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _power(x):
    return float(np.mean(np.square(x, dtype=np.float64)))


def _schroeder_t20(ir, sr):
    """RT60 from the Schroeder energy decay curve, fitted from -5 to -25 dB (T20), not pyroomacoustics' own."""
    energy = np.cumsum(np.square(ir.astype(np.float64))[::-1])[::-1]
    edc = 10 * np.log10(energy / energy[0] + 1e-30)
    start, stop = int(np.argmax(edc <= -5)), int(np.argmax(edc <= -25))
    slope = np.polyfit(np.arange(start, stop) / sr, edc[start:stop], 1)[0]
    return -60.0 / slope


# --- room_reverb --------------------------------------------------------------------------------
def test_room_reverb_decay_follows_the_rt60_asked():
    measured = {}
    for rt60 in (0.25, 0.6):
        reverb = RoomReverb(min_rt60=rt60, max_rt60=rt60, max_room_dims=(6.0, 5.0, 3.0), n_rooms=3, p=1.0)
        measured[rt60] = [_schroeder_t20(reverb._bank.get(i, SR), SR) for i in range(3)]
        for t20 in measured[rt60]:  # Sabine's formula vs the image-source decay: within 35 %
            assert 0.65 * rt60 < t20 < 1.35 * rt60, (rt60, measured[rt60])
    assert min(measured[0.6]) > 1.5 * max(measured[0.25])


def test_room_reverb_keeps_length_rms_and_the_direct_path():
    reverb = RoomReverb(min_rt60=0.2, max_rt60=0.4, max_room_dims=(5.0, 4.0, 3.0), n_rooms=4, p=1.0)
    x = _noise(SR)
    click = np.zeros(SR, dtype=np.float32)
    click[3000] = 1.0
    for room in range(4):
        out = reverb.apply(x, SR, {"room": room})
        assert out.shape == x.shape and out.dtype == np.float32
        assert math.isclose(_power(out), _power(x), rel_tol=1e-3)
        assert not np.allclose(out, x, atol=1e-3)  # it did reverberate
        assert int(np.argmax(np.abs(reverb.apply(click, SR, {"room": room})))) == 3000


def test_room_reverb_is_deterministic_for_a_seed_and_survives_pickling():
    specs = [{"name": "room_reverb", "min_rt60": 0.2, "max_rt60": 0.3, "n_rooms": 3, "room_seed": 5, "p": 1.0}]
    chain, again = build_waveform_augment(specs), build_waveform_augment(specs)
    chain.bind([], SR)  # simulates every room now, before DataLoader workers fork
    assert sorted(chain.transforms[0]._bank._cache) == [(0, SR), (1, SR), (2, SR)]
    x = _noise(4000)
    out, records = chain.call_with_params(x, SR, np.random.default_rng(2))
    assert records[0]["name"] == "room_reverb" and 0 <= records[0]["params"]["room"] < 3
    np.testing.assert_array_equal(out, again(x, SR, np.random.default_rng(2)))
    np.testing.assert_array_equal(out, pickle.loads(pickle.dumps(chain)).replay(x, SR, records))
    other = RoomReverb(min_rt60=0.2, max_rt60=0.3, n_rooms=3, room_seed=6, p=1.0)
    assert chain.transforms[0].room(0) != other.room(0)
    assert chain.transforms[0].room(0) == again.transforms[0].room(0)


def test_room_reverb_without_pyroomacoustics_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyroomacoustics", None)  # import now raises ImportError
    with pytest.raises(ConfigError) as caught:
        build_waveform_augment([{"name": "room_reverb"}])
    assert str(caught.value) == "room_reverb needs pyroomacoustics: pip install 'audioclf[augment]'"


@pytest.mark.parametrize("spec, message", [
    ({"min_rt60": 0.05, "max_room_dims": [30, 30, 10]}, r"min_rt60: 0.05 s is too short"),
    ({"min_room_dims": [3, 3]}, r"min_room_dims: expected \[length, width, height\]"),
    ({"min_room_dims": [8, 3, 3], "max_room_dims": [6, 5, 3]}, r"min_room_dims: expected <= max_room_dims"),
    ({"n_rooms": 0}, r"n_rooms: expected an integer >= 1"),
])
def test_room_reverb_bad_arguments(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_waveform_augment([{"name": "room_reverb", **spec}])


# --- own_background -----------------------------------------------------------------------------
TONE_HZ = 1000.0
HOP = SR // 10  # 100 ms frames


def _tone_and_noise_clips(n_clips=6, frames=10, quiet_frames=(0, 4, 9)):
    """Clips on the 100 ms frame grid: quiet frames are white noise, the others a loud 1 kHz tone."""
    t = np.arange(frames * HOP) / SR
    clips = []
    for c in range(n_clips):
        wave = (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
        for f in quiet_frames:
            wave[f * HOP:(f + 1) * HOP] = _noise(HOP, amp=0.01, seed=100 * c + f)
        clips.append(wave)
    return clips


def _band_db(x, lo, hi):
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return 10 * np.log10(spectrum[(freqs >= lo) & (freqs <= hi)].mean())


def test_own_background_mixes_in_only_the_quietest_frames():
    own = OwnBackground(min_snr_db=0, max_snr_db=0, quiet_fraction=0.2, p=1.0)
    own.bind(_tone_and_noise_clips(), SR)
    # 20 % of 60 frames = 12 frames, all noise (the 18 noise frames are the quietest 30 %)
    assert sum(len(s) for s in own.snippets) == pytest.approx(12 * HOP, abs=HOP)
    for snippet in own.snippets:  # every frame of every snippet is quiet noise, no tone
        assert np.abs(snippet).max() < 0.1
    x = np.sin(2 * np.pi * 3000.0 * np.arange(SR) / SR).astype(np.float32)  # a clip to mix into: 3 kHz
    out, params = own.call_with_params(x, SR, np.random.default_rng(1))
    added = out - x
    assert _power(added) > 0
    # white noise: the 1 kHz band is no louder than the rest; one tone frame would make it > 20 dB louder
    assert _band_db(added, 950, 1050) < _band_db(added, 1500, 2500) + 3


def test_own_background_snr_in_range_and_deterministic():
    chain = build_waveform_augment([{"name": "own_background", "min_snr_db": 5, "max_snr_db": 15, "p": 1.0}])
    chain.bind(_tone_and_noise_clips(), SR)
    again = build_waveform_augment(chain.to_specs())
    again.bind(_tone_and_noise_clips(), SR)
    x = _noise(SR, amp=0.2, seed=7)
    for seed in range(5):
        out, records = chain.call_with_params(x, SR, np.random.default_rng(seed))
        snr = 10 * math.log10(_power(x) / _power(out - x))
        assert 5 - 1e-3 <= snr <= 15 + 1e-3
        assert snr == pytest.approx(records[0]["params"]["snr_db"], abs=1e-3)
        np.testing.assert_array_equal(out, again(x, SR, np.random.default_rng(seed)))
        np.testing.assert_array_equal(out, chain.replay(x, SR, records))


def test_own_background_errors_silent_set_unbound_and_elsewhere(tmp_path):
    own = OwnBackground(p=1.0)
    with pytest.raises(ConfigError, match="own_background: no training set bound"):
        own(_noise(100), SR, np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"own_background: no 100 ms frame above digital silence in the 2 "):
        own.bind([np.zeros(SR, dtype=np.float32), _noise(HOP - 1)], SR)  # silent, and shorter than a frame
    with pytest.raises(ConfigError, match=r"augment\[1\] \(own_background\): .* not in offline augmented copies"):
        augment_dataset(Manifest([]), tmp_path / "out", [{"name": "gain"}, {"name": "own_background"}])
    assert not (tmp_path / "out").exists()  # refused before anything is written
    with pytest.raises(ConfigError, match=r"augment\[0\] \(own_background\): .* not in a shard set"):
        ShardInputs(load_config(None, ["data.path=x", "augment.waveform=[{name: own_background}]"]))
    assert {"room_reverb", "own_background"} <= set(list_augmentations())


def test_audio_training_set_binds_own_background_to_training_clips_only(tmp_path, monkeypatch):
    bound = []
    monkeypatch.setattr(OwnBackground, "bind", lambda self, waves, sr: bound.append((list(waves), sr)))
    data = make_demo_dataset(tmp_path / "data", n_per_class=4, seconds=0.5, seed=1)
    inputs = AudioInputs(load_config(None, [f"data.path={data}", "data.sample_rate=8000",
                                            "augment.waveform=[{name: own_background, p: 1.0}]"]))
    inputs.prepare()
    inputs.dataset("val", train=False)
    assert bound == []  # evaluation sets are not augmented
    inputs.train_set()
    (waves, sr), = bound
    train_ids = [item.id for item in inputs.prepared.split("train")]
    assert sr == 8000 and len(waves) == len(train_ids) > 0
    assert {id(w) for w in waves} == {id(inputs.prepared.waves[i]) for i in train_ids}
    held_out = {id(inputs.prepared.waves[item.id]) for s in ("val", "test") for item in inputs.prepared.split(s)}
    assert held_out and not held_out & {id(w) for w in waves}
