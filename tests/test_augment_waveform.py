import math

import numpy as np
import pytest
import torch

from audioclf.augment import waveform as W
from audioclf.augment.waveform import (
    BackgroundNoise,
    Compose,
    DynamicRangeCompression,
    Gain,
    GaussianNoise,
    ImpulseResponse,
    PitchShift,
    PolarityInversion,
    RandomEQ,
    SpeedPerturb,
    TimeShift,
    TimeStretch,
    WaveformTransform,
    build_waveform_augment,
    list_augmentations,
    register_augmentation,
)
from audioclf.data.audio import load_audio, write_audio
from audioclf.errors import ConfigError

SR = 16000


def _wave(n=SR, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _db(power_ratio):
    return 10 * math.log10(power_ratio)


def _power(x):
    return float(np.mean(np.square(np.asarray(x, dtype=np.float64))))


@pytest.fixture
def noise_dir(tmp_path):
    folder = tmp_path / "noise"
    rng = np.random.default_rng(5)
    write_audio(folder / "short.wav", (0.3 * rng.standard_normal(3000)).astype(np.float32), 8000, subtype="FLOAT")
    write_audio(folder / "sub" / "long.flac", (0.2 * rng.standard_normal(40000)).astype(np.float32), SR)
    (folder / "notes.txt").write_text("not audio")
    return folder


@pytest.fixture
def ir_dir(tmp_path):
    folder = tmp_path / "irs"
    rng = np.random.default_rng(7)
    ir = np.zeros(400, dtype=np.float32)
    ir[30] = 1.0  # leading delay of 30 samples, then a decaying tail
    ir[31:] = 0.3 * rng.standard_normal(369).astype(np.float32) * np.exp(-np.arange(369) / 60).astype(np.float32)
    write_audio(folder / "mic_a.wav", ir, SR, subtype="FLOAT")
    return folder


# --- exact outputs of apply() with given parameters ---------------------------------------------
def test_gain_matches_audiomentations():
    audiomentations = pytest.importorskip("audiomentations")
    x = _wave()
    ours = Gain().apply(x, SR, {"gain_db": 6.0})
    ref = audiomentations.Gain(p=1.0)
    ref.parameters = {"should_apply": True, "amplitude_ratio": 10 ** (6.0 / 20)}
    np.testing.assert_allclose(ours, ref.apply(x, SR), rtol=1e-6)
    assert ours.dtype == np.float32


def test_gaussian_noise_is_seeded_and_hits_the_snr():
    x = _wave(100_000)
    params = {"snr_db": 10.0, "seed": 123}
    out = GaussianNoise().apply(x, SR, params)
    sigma = math.sqrt(_power(x) / 10.0)
    expected = x + np.random.default_rng(123).standard_normal(len(x), dtype=np.float32) * np.float32(sigma)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert abs(_db(_power(x) / _power(out - x)) - 10.0) < 0.1  # realised SNR of 100k samples
    silent = np.zeros(100, dtype=np.float32)
    np.testing.assert_array_equal(GaussianNoise().apply(silent, SR, params), silent)


def test_background_noise_tiles_resamples_and_sets_snr(noise_dir):
    transform = BackgroundNoise(noise_dir=str(noise_dir), min_snr_db=5, max_snr_db=5, p=1.0)
    assert [f.rsplit("/", 1)[-1] for f in transform.files] == ["short.wav", "long.flac"]  # sorted, .txt ignored
    x = _wave(SR)
    short = str(noise_dir / "short.wav")
    out = transform.apply(x, SR, {"file": short, "offset": 1000, "snr_db": 5.0})
    noise, _ = load_audio(short, sample_rate=SR)  # 3000 samples at 8 kHz -> 6000 at 16 kHz, tiled
    assert len(noise) == 6000
    segment = noise[(1000 + np.arange(SR)) % 6000].astype(np.float64)
    gain = math.sqrt(_power(x) / (_power(segment) * 10 ** 0.5))
    np.testing.assert_allclose(out, x + gain * segment, atol=1e-6)
    assert abs(_db(_power(x) / _power(out.astype(np.float64) - x)) - 5.0) < 1e-3
    # randomize: offsets stay inside the noise; a long noise is cropped without wrapping
    for seed in range(20):
        params = transform.randomize_parameters(x, SR, np.random.default_rng(seed))
        length = 6000 if params["file"] == short else 40000
        limit = length if length < len(x) else length - len(x) + 1
        assert 0 <= params["offset"] < limit


def test_time_shift_roll_matches_audiomentations_and_pad_is_exact():
    audiomentations = pytest.importorskip("audiomentations")
    x = _wave(1000)
    ref = audiomentations.Shift(min_shift=-500, max_shift=500, shift_unit="samples", rollover=True,
                                fade_duration=0.0, p=1.0)
    for shift in (-300, 0, 250):
        ref.parameters = {"should_apply": True, "shift_amount": shift}
        np.testing.assert_array_equal(TimeShift(mode="roll").apply(x, SR, {"shift": shift}), ref.apply(x, SR))
    pad = TimeShift(mode="pad")
    small = np.array([1, 2, 3, 4, 5], dtype=np.float32)
    np.testing.assert_array_equal(pad.apply(small, SR, {"shift": 2}), [0, 0, 1, 2, 3])
    np.testing.assert_array_equal(pad.apply(small, SR, {"shift": -2}), [3, 4, 5, 0, 0])
    np.testing.assert_array_equal(pad.apply(small, SR, {"shift": 9}), [0, 0, 0, 0, 0])
    params = TimeShift(min_fraction=0.25, max_fraction=0.25).randomize_parameters(x, SR, np.random.default_rng(0))
    assert params == {"shift": 250}


def test_polarity_inversion():
    x = _wave(100)
    np.testing.assert_array_equal(PolarityInversion().apply(x, SR, {}), -x)


def _square(n_quiet, n_loud, sr):
    """+-0.1 then +-1.0 alternating samples: every frame's RMS is exactly the amplitude."""
    sign = np.where(np.arange(n_quiet + n_loud) % 2 == 0, 1.0, -1.0)
    return (sign * np.r_[np.full(n_quiet, 0.1), np.full(n_loud, 1.0)]).astype(np.float32)


def test_drc_static_curve_hand_computed():
    x = _square(800, 800, SR)  # 2-ms frames of 32 samples: 25 quiet frames, 25 loud
    drc = DynamicRangeCompression(attack_ms=0, release_ms=0, makeup="none")
    out = drc.apply(x, SR, {"threshold_db": -10.0, "ratio": 4.0})
    # loud frames are at 0 dB, 10 dB above the threshold (relative to the loudest frame) -> 7.5 dB reduction
    np.testing.assert_allclose(out[:760], x[:760], rtol=1e-6)
    np.testing.assert_allclose(out[840:], x[840:] * 10 ** (-7.5 / 20), rtol=1e-5)
    rms = DynamicRangeCompression(attack_ms=0, release_ms=0, makeup="rms").apply(x, SR, {"threshold_db": -10.0,
                                                                                          "ratio": 4.0})
    assert abs(_power(rms) - _power(x)) < 1e-6 * _power(x)
    np.testing.assert_allclose(np.abs(rms[840:]) / rms[:760].max(), np.abs(out[840:]) / 0.1, rtol=1e-4)
    peak = DynamicRangeCompression(attack_ms=0, release_ms=0, makeup="peak").apply(x, SR, {"threshold_db": -10.0,
                                                                                            "ratio": 4.0})
    assert abs(np.abs(peak).max() - 1.0) < 1e-6
    # below the threshold nothing changes
    np.testing.assert_allclose(drc.apply(x, SR, {"threshold_db": -25.0, "ratio": 1.0}), x, rtol=1e-6)


def test_drc_attack_and_release_follow_one_pole_filters():
    hop = 33  # odd frame length: frame centres fall on samples, where the gain equals the frame's value
    x = np.r_[_square(25 * hop, 25 * hop, SR), _square(25 * hop, 0, SR)].astype(np.float32)  # quiet, loud, quiet
    drc = DynamicRangeCompression(attack_ms=4.0, release_ms=20.0, frame_ms=hop * 1000 / SR)
    reduction = drc.gain_reduction_db(x.astype(np.float64), SR, -10.0, 4.0)
    per_frame = reduction[np.arange(75) * hop + hop // 2]
    a_att, a_rel = math.exp(-hop / (4e-3 * SR)), math.exp(-hop / (20e-3 * SR))
    j = np.arange(25)
    np.testing.assert_allclose(per_frame[:25], 0.0, atol=1e-12)
    np.testing.assert_allclose(per_frame[25:50], 7.5 * (1 - a_att ** (j + 1)), rtol=1e-9)
    np.testing.assert_allclose(per_frame[50:], per_frame[49] * a_rel ** (j + 1), rtol=1e-9)


def test_impulse_response_matches_numpy_convolution(ir_dir):
    x = _wave(4000)
    file = str(ir_dir / "mic_a.wav")
    ir, _ = load_audio(file)
    full = np.convolve(x.astype(np.float64), ir.astype(np.float64))
    for align, start in (("start", 0), ("peak", 30)):
        out = ImpulseResponse(ir_dir=str(ir_dir), align=align).apply(x, SR, {"file": file})
        expected = full[start : start + len(x)].copy()
        expected *= math.sqrt(_power(x) / _power(expected))
        np.testing.assert_allclose(out, expected, atol=1e-6)
        assert abs(_power(out) / _power(x) - 1) < 1e-5  # level kept
    # a delta IR with a delay is the identity once aligned on its peak
    delta = np.zeros(50, dtype=np.float32)
    delta[10] = 0.5
    write_audio(ir_dir / "delta.wav", delta, SR, subtype="FLOAT")
    out = ImpulseResponse(ir_dir=str(ir_dir)).apply(x, SR, {"file": str(ir_dir / "delta.wav")})
    np.testing.assert_allclose(out, x, atol=1e-6)


def test_impulse_response_then_drc(ir_dir):
    x = _wave(4000)
    drc_args = {"min_threshold_db": -12, "max_threshold_db": -12, "min_ratio": 3, "max_ratio": 3}
    transform = ImpulseResponse(ir_dir=str(ir_dir), drc=drc_args, p=1.0)
    params = transform.randomize_parameters(x, SR, np.random.default_rng(0))
    assert params == {"file": str(ir_dir / "mic_a.wav"), "drc": {"threshold_db": -12.0, "ratio": 3.0}}
    plain = ImpulseResponse(ir_dir=str(ir_dir)).apply(x, SR, {"file": params["file"]})
    expected = DynamicRangeCompression(**drc_args).apply(plain, SR, params["drc"])
    np.testing.assert_array_equal(transform.apply(x, SR, params), expected)
    with pytest.raises(ValueError, match="drc: unknown argument 'ratio'.*min_ratio"):
        ImpulseResponse(ir_dir=str(ir_dir), drc={"ratio": 2})


def _peak_hz(x, sr):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * sr / len(x)


def test_pitch_shift_octave_doubles_frequency_and_keeps_length():
    pytest.importorskip("audiomentations")
    t = np.arange(SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = PitchShift().apply(x, SR, {"semitones": 12.0})
    assert out.shape == x.shape and out.dtype == np.float32
    assert abs(_peak_hz(out[2000:-2000], SR) - 880) < 5
    np.testing.assert_array_equal(out, PitchShift().apply(x, SR, {"semitones": 12.0}))  # deterministic


def test_time_stretch_keeps_pitch_and_length():
    pytest.importorskip("audiomentations")
    t = np.arange(SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    fast = TimeStretch().apply(x, SR, {"rate": 2.0})
    assert fast.shape == x.shape
    # twice as fast: the tone lasts about half the clip, at the same pitch; the rest is zero-padded
    assert abs(_peak_hz(fast[1000:7000], SR) - 440) < 5
    assert np.abs(fast[9500:]).max() < 1e-3 < np.abs(fast[1000:7000]).max()


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_scales_pitch_and_keeps_length(factor):
    t = np.arange(SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = SpeedPerturb().apply(x, SR, {"factor": factor})
    assert out.shape == x.shape and out.dtype == np.float32
    # faster playback: the pitch period shrinks by 1/factor, so the tone moves to 440 * factor
    assert abs(_peak_hz(out[1000:13000], SR) - 440 * factor) < 3
    if factor > 1:  # the sped-up clip is 1/1.1 as long: zero-padded at the end, as time_stretch
        assert np.abs(out[-1000:]).max() == 0 < np.abs(out[13000:14000]).max()
    np.testing.assert_array_equal(out, SpeedPerturb().apply(x, SR, {"factor": factor}))


def _tone_gain_db(transform, params, hz):
    t = np.arange(SR) / SR
    x = (0.1 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    out = transform.apply(x, SR, params)
    assert out.shape == x.shape and out.dtype == np.float32
    steady = slice(4000, None)  # after the filters' transient
    return _db(_power(out[steady]) / _power(x[steady]))


@pytest.mark.parametrize("band, inside_hz, inside_db, outside_hz", [
    ({"kind": "peaking", "freq": 1000.0, "gain_db": 6.0, "q": 2.0}, 1000, 6.0, 6000),
    ({"kind": "peaking", "freq": 2000.0, "gain_db": -9.0, "q": 1.0}, 2000, -9.0, 100),
    ({"kind": "low_shelf", "freq": 500.0, "gain_db": -12.0, "q": 0.707}, 60, -12.0, 6000),
    ({"kind": "high_shelf", "freq": 2000.0, "gain_db": 8.0, "q": 0.707}, 7000, 8.0, 100),
])
def test_random_eq_band_changes_its_band_by_the_gain(band, inside_hz, inside_db, outside_hz):
    eq = RandomEQ()
    assert _tone_gain_db(eq, {"bands": [band]}, inside_hz) == pytest.approx(inside_db, abs=0.3)
    assert abs(_tone_gain_db(eq, {"bands": [band]}, outside_hz)) < 0.5


def test_random_eq_draws_bands_in_range_and_cascades_them():
    eq = RandomEQ(n_bands=4, min_gain_db=-6, max_gain_db=6, min_freq=100, max_freq=20000, kinds=["peaking"], p=1.0)
    out, params = eq.call_with_params(_wave(), 8000, np.random.default_rng(3))
    assert len(params["bands"]) == 4 and np.isfinite(out).all()
    for band in params["bands"]:
        assert band["kind"] == "peaking" and -6 <= band["gain_db"] <= 6 and 100 <= band["freq"] <= 0.45 * 8000
    # two bands at the same frequency add their gains in dB
    two = {"bands": [{"kind": "peaking", "freq": 1000.0, "gain_db": 4.0, "q": 1.0}] * 2}
    assert _tone_gain_db(eq, two, 1000) == pytest.approx(8.0, abs=0.3)


# --- arguments, probability, randomness ---------------------------------------------------------
@pytest.mark.parametrize("cls, kwargs, arg", [
    (Gain, {"min_gain_db": 3, "max_gain_db": -3}, "min_gain_db"),
    (Gain, {"p": 1.5}, "p"),
    (Gain, {"min_gain_db": "loud"}, "min_gain_db"),
    (GaussianNoise, {"max_snr_db": float("nan")}, "max_snr_db"),
    (TimeShift, {"mode": "wrap"}, "mode"),
    (TimeShift, {"min_fraction": -2}, "min_fraction"),
    (TimeStretch, {"min_rate": 0.01}, "min_rate"),
    (PitchShift, {"max_semitones": 30}, "max_semitones"),
    (DynamicRangeCompression, {"max_threshold_db": 3}, "max_threshold_db"),
    (DynamicRangeCompression, {"min_ratio": 0.5}, "min_ratio"),
    (DynamicRangeCompression, {"attack_ms": -1}, "attack_ms"),
    (DynamicRangeCompression, {"makeup": "auto"}, "makeup"),
    (BackgroundNoise, {"noise_dir": "/nonexistent/noise"}, "noise_dir"),
    (ImpulseResponse, {"ir_dir": "/nonexistent/irs"}, "ir_dir"),
    (SpeedPerturb, {"min_factor": 0.2}, "min_factor"),
    (SpeedPerturb, {"min_factor": 1.2, "max_factor": 1.1}, "min_factor"),
    (RandomEQ, {"n_bands": 0}, "n_bands"),
    (RandomEQ, {"kinds": ["notch"]}, "kinds"),
    (RandomEQ, {"min_q": 0.0}, "min_q"),
])
def test_invalid_arguments_name_the_argument(cls, kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg}"):
        cls(**kwargs)


def test_folder_without_audio_is_rejected(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="noise_dir: no audio files"):
        BackgroundNoise(noise_dir=str(tmp_path))


def test_call_checks_its_inputs():
    with pytest.raises(ValueError, match="rng"):
        Gain(p=1.0)(_wave(10), SR, 0)
    with pytest.raises(ValueError, match="wave"):
        Gain(p=1.0)(np.zeros((10, 2), np.float32), SR, np.random.default_rng(0))


def _all_transforms(noise_dir, ir_dir, p):
    return [Gain(p=p), GaussianNoise(p=p), BackgroundNoise(str(noise_dir), p=p), TimeShift(p=p),
            TimeStretch(p=p), PitchShift(p=p), DynamicRangeCompression(p=p), PolarityInversion(p=p),
            ImpulseResponse(str(ir_dir), drc={}, p=p), SpeedPerturb(p=p), RandomEQ(p=p)]


def test_p_zero_is_identity_and_p_one_always_applies(noise_dir, ir_dir):
    pytest.importorskip("audiomentations")
    x = _wave(4000)
    for transform in _all_transforms(noise_dir, ir_dir, 0.0):
        out, params = transform.call_with_params(x, SR, np.random.default_rng(0))
        assert params is None
        np.testing.assert_array_equal(out, x)
    for transform in _all_transforms(noise_dir, ir_dir, 1.0):
        for seed in range(3):
            out, params = transform.call_with_params(x, SR, np.random.default_rng(seed))
            assert params is not None, transform
            assert out.shape == x.shape and out.dtype == np.float32
            if not isinstance(transform, TimeShift) or params["shift"]:
                assert not np.array_equal(out, x), transform


def test_p_is_a_frequency():
    transform = Gain(p=0.3)
    applied = sum(transform.call_with_params(_wave(10), SR, np.random.default_rng(s))[1] is not None
                  for s in range(2000))
    assert 520 < applied < 680  # binomial(2000, 0.3): mean 600, sd 20


def test_same_rng_same_output_and_replay(noise_dir, ir_dir):
    pytest.importorskip("audiomentations")
    chain = Compose(_all_transforms(noise_dir, ir_dir, 0.7))
    x = _wave(4000)
    first, records = chain.call_with_params(x, SR, np.random.default_rng([1, 2, 3]))
    second = chain(x, SR, np.random.default_rng([1, 2, 3]))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, chain(x, SR, np.random.default_rng([1, 2, 4])))
    assert [r["name"] for r in records] == [chain.transforms[r["index"]].name for r in records]
    np.testing.assert_array_equal(chain.replay(x, SR, records), first)
    with pytest.raises(ConfigError, match="does not match"):
        chain.replay(x, SR, [{"index": 0, "name": "pitch_shift", "params": {}}])


def test_compose_keeps_order():
    chain = Compose([Gain(6, 6, p=1.0), TimeShift(mode="pad", min_fraction=0.5, max_fraction=0.5, p=1.0)])
    x = np.ones(4, dtype=np.float32)
    out = chain(x, SR, np.random.default_rng(0))
    np.testing.assert_allclose(out, [0, 0, 10 ** 0.3, 10 ** 0.3], rtol=1e-6)


# --- registry -----------------------------------------------------------------------------------
def test_registry_builds_from_specs_and_round_trips(noise_dir):
    specs = [{"name": "gain", "p": 1.0, "min_gain_db": -3, "max_gain_db": 3},
             {"name": "background_noise", "noise_dir": str(noise_dir), "p": 0.5},
             {"name": "drc", "min_ratio": 2, "max_ratio": 4}]
    chain = build_waveform_augment(specs)
    assert [t.name for t in chain] == ["gain", "background_noise", "drc"]
    assert chain.transforms[0].min_gain_db == -3.0 and chain.transforms[1].p == 0.5
    again = build_waveform_augment(chain.to_specs())
    x = _wave(2000)
    np.testing.assert_array_equal(chain(x, SR, np.random.default_rng(9)), again(x, SR, np.random.default_rng(9)))
    assert len(build_waveform_augment(None)) == 0 and len(build_waveform_augment([])) == 0
    assert {"gain", "gaussian_noise", "background_noise", "time_shift", "time_stretch", "pitch_shift", "drc",
            "polarity_inversion", "impulse_response", "speed_perturb", "random_eq"} <= set(list_augmentations())


def test_speed_and_eq_build_from_config_and_round_trip():
    chain = build_waveform_augment([{"name": "speed_perturb", "min_factor": 0.9, "max_factor": 1.1, "p": 1.0},
                                    {"name": "random_eq", "n_bands": 2, "kinds": ["peaking", "high_shelf"], "p": 1.0}])
    again = build_waveform_augment(chain.to_specs())
    x = _wave(4000)
    out, records = chain.call_with_params(x, SR, np.random.default_rng(11))
    assert [r["name"] for r in records] == ["speed_perturb", "random_eq"] and out.shape == x.shape
    np.testing.assert_array_equal(out, again(x, SR, np.random.default_rng(11)))
    np.testing.assert_array_equal(out, chain.replay(x, SR, records))


@pytest.mark.parametrize("specs, message", [
    ([{"name": "gian"}], r"augment\[0\]: unknown augmentation 'gian'; did you mean gain"),
    ([{"name": "gain"}, {"name": "gaussian_noise", "min_snr": 3}],
     r"augment\[1\] \(gaussian_noise\): unknown argument 'min_snr'; did you mean min_snr_db"),
    ([{"name": "gain", "min_gain_db": 10, "max_gain_db": 0}], r"augment\[0\] \(gain\): min_gain_db"),
    ([{"p": 0.5}], r"augment\[0\]: expected a mapping with a 'name' key"),
    ({"name": "gain"}, "expected a list"),
])
def test_bad_specs_raise_config_errors(specs, message):
    with pytest.raises(ConfigError, match=message):
        build_waveform_augment(specs)


def test_register_a_new_augmentation():
    @register_augmentation("test_clip")
    class Clip(WaveformTransform):
        def __init__(self, limit: float = 0.5, p: float = 0.5):
            super().__init__(p)
            self.limit = W._number("limit", limit)

        def apply(self, wave, sr, params):
            return np.clip(wave, -self.limit, self.limit)

    try:
        chain = build_waveform_augment([{"name": "test_clip", "limit": 0.1, "p": 1.0}])
        assert np.abs(chain(_wave(100), SR, np.random.default_rng(0))).max() <= 0.1
        with pytest.raises(ConfigError, match="already registered"):
            register_augmentation("test_clip")(Gain)
    finally:
        W.AUGMENTATIONS.remove("test_clip")


# --- DataLoader workers -------------------------------------------------------------------------
class _AugmentedClips(torch.utils.data.Dataset):
    """What the training dataset does: augment item i in epoch e with default_rng([seed, e, i])."""

    def __init__(self, augment, seed=3):
        self.waves = [_wave(2000, seed=i) for i in range(8)]
        self.augment, self.seed, self.epoch = augment, seed, 0

    def __len__(self):
        return len(self.waves)

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return torch.from_numpy(self.augment(self.waves[index], SR, rng))


def test_same_items_with_0_or_2_dataloader_workers(noise_dir, ir_dir):
    augment = build_waveform_augment([
        {"name": "gain", "p": 0.8}, {"name": "gaussian_noise", "p": 0.8},
        {"name": "background_noise", "noise_dir": str(noise_dir), "p": 0.8},
        {"name": "time_shift", "p": 0.8}, {"name": "impulse_response", "ir_dir": str(ir_dir), "drc": {}, "p": 0.8},
    ])
    dataset = _AugmentedClips(augment)

    def epoch_batches(workers, epoch):
        dataset.epoch = epoch
        loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=workers)
        return torch.cat(list(loader))

    for epoch in (0, 1):
        np.testing.assert_array_equal(epoch_batches(0, epoch).numpy(), epoch_batches(2, epoch).numpy())
    assert not torch.equal(epoch_batches(0, 0), epoch_batches(0, 1))  # a new epoch draws new augmentations
