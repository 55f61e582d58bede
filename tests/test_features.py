"""The torch front-end against librosa (float64 unless stated) and hand-computed cases.

Tolerances: mel filterbanks and Hz<->mel rtol 1e-9 (both are built in float64); power spectra rtol 1e-6
of each clip's peak (float32 window/filterbank buffers); dB values atol 1e-4 dB in float64 and 0.05 dB
in float32; MFCC atol 1e-4.
"""

from __future__ import annotations

import dataclasses
import warnings

import librosa
import numpy as np
import pytest
import scipy.fft
import torch

from audioclf.errors import ConfigError, DataError
from audioclf.features import (
    MFCC,
    AmplitudeToDB,
    FeatureConfig,
    FrontEnd,
    ImageScale,
    MelScale,
    MelSpectrogram,
    Spectrogram,
    dct_matrix,
    hz_to_mel,
    image_scale,
    mel_bands,
    mel_filterbank,
    mel_to_hz,
    n_frames,
    power_to_db,
)

# (sample_rate, n_fft, hop_length, n_mels): DCASE 2022 base and 22.05 kHz rows, FSD 2019 style, defaults
CONFIGS = [(44100, 1764, 882, 40), (22050, 1024, 512, 40), (16000, 1024, 525, 80), (16000, 1024, 320, 64)]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def signal(sample_rate: int, seconds: float = 1.0, seed: int = 0, level: float = 0.1) -> np.ndarray:
    """Noise plus two tones (a spectrum with peaks and valleys, not flat), float64."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tones = np.sin(2 * np.pi * 440.0 * t) + 0.3 * np.sin(2 * np.pi * 3000.0 * t)
    return level * (0.2 * rng.standard_normal(t.size) + tones)


def librosa_logmel(y: np.ndarray, sr: int, n_fft: int, hop: int, n_mels: int, **kw) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, pad_mode="constant", dtype=np.float64, **kw
    )
    return librosa.power_to_db(mel, top_db=80.0)


def run64(module: torch.nn.Module, y: np.ndarray) -> np.ndarray:
    return module.double()(torch.from_numpy(np.asarray(y, dtype=np.float64))).detach().numpy()


# --- pure functions -----------------------------------------------------------------------------
@pytest.mark.parametrize("mel_scale", ["slaney", "htk"])
def test_hz_mel_conversions_match_librosa(mel_scale):
    freqs = np.array([0.0, 20.0, 440.0, 999.0, 1000.0, 1001.0, 4000.0, 22050.0])
    mels = hz_to_mel(torch.from_numpy(freqs), mel_scale).numpy()
    np.testing.assert_allclose(mels, librosa.hz_to_mel(freqs, htk=mel_scale == "htk"), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mel_to_hz(torch.from_numpy(mels), mel_scale).numpy(), freqs, rtol=1e-9, atol=1e-6)


def test_slaney_mel_scale_hand_values():
    # linear below 1 kHz at 200/3 Hz per mel: 1000 Hz is mel 15; 6.4x the frequency is 27 mels more
    mels = hz_to_mel(torch.tensor([200.0 / 3, 1000.0, 6400.0], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(mels, [1.0, 15.0, 42.0], rtol=1e-12)


@pytest.mark.parametrize("mel_scale", ["slaney", "htk"])
@pytest.mark.parametrize("norm", ["slaney", None])
@pytest.mark.parametrize(
    "sr,n_fft,n_mels,fmin,fmax",
    [(44100, 1764, 40, 0.0, None), (22050, 1024, 40, 50.0, 8000.0), (16000, 1024, 80, 20.0, None)],
)
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax, mel_scale, norm):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, mel_scale, norm, dtype=torch.float64).numpy()
    ref = librosa.filters.mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=mel_scale == "htk", norm=norm, dtype=np.float64
    )
    assert ours.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


def test_mel_filterbank_warns_on_empty_filters_like_librosa():
    with pytest.warns(UserWarning, match="empty"):
        mel_filterbank(16000, 128, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mel_filterbank(16000, 1024, 64)


def test_mel_bands_cover_every_filter_weight():
    fb = mel_filterbank(44100, 2048, 128)
    bands = mel_bands(fb, n_bands=4)
    assert [b[0] for b in bands] == [0] + [b[1] for b in bands[:-1]] and bands[-1][1] == 128
    covered = torch.zeros_like(fb, dtype=torch.bool)
    for m0, m1, f0, f1 in bands:
        covered[m0:m1, f0:f1] = True
    assert not bool(((fb > 0) & ~covered).any())
    # the point of banding: far fewer multiplies than the dense matmul
    assert sum((m1 - m0) * (f1 - f0) for m0, m1, f0, f1 in bands) < fb.numel() / 3


def test_power_to_db_matches_librosa_for_one_example():
    rng = np.random.default_rng(1)
    S = rng.uniform(0, 1, (40, 30)) ** 8  # spans far more than 80 dB
    for kwargs in ({"top_db": 80.0}, {"top_db": None}, {"top_db": 40.0, "ref": 0.5}, {"amin": 1e-5, "top_db": 80.0}):
        ours = power_to_db(torch.from_numpy(S), **kwargs).numpy()
        np.testing.assert_allclose(ours, librosa.power_to_db(S, **kwargs), atol=1e-10)


def test_power_to_db_clamps_each_example_to_its_own_max():
    rng = np.random.default_rng(2)
    loud = rng.uniform(0.1, 1.0, (40, 30))
    quiet = loud * 1e-6  # 60 dB lower: a batch-wide max would floor most of it at -80 dB
    quiet[0, 0] = 1e-20
    batch = torch.from_numpy(np.stack([loud, quiet]))
    ours = power_to_db(batch, top_db=30.0).numpy()
    for got, clip in zip(ours, (loud, quiet)):
        np.testing.assert_allclose(got, librosa.power_to_db(clip, top_db=30.0), atol=1e-10)
    assert ours[1].min() == pytest.approx(10 * np.log10(quiet.max()) - 30.0)


def test_dct_matrix_is_scipy_ortho_dct2():
    dct = dct_matrix(13, 40, dtype=torch.float64).numpy()
    np.testing.assert_allclose(dct, scipy.fft.dct(np.eye(40), type=2, norm="ortho", axis=0)[:13], atol=1e-12)
    np.testing.assert_allclose(dct @ dct.T, np.eye(13), atol=1e-12)  # orthonormal rows


def test_image_scale_is_per_example_0_to_255():
    x = torch.stack([torch.linspace(-80, 0, 12).reshape(3, 4), torch.full((3, 4), 5.0), torch.rand(3, 4) * 1e-3])
    y = image_scale(x)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 255.0
    assert y[0].min() == 0 and y[0].max() == 255 and y[2].min() == 0 and y[2].max() == pytest.approx(255)
    assert torch.equal(y[1], torch.zeros(3, 4))  # a flat example maps to 0, not NaN
    np.testing.assert_allclose(y[0].flatten().numpy(), np.linspace(0, 255, 12), atol=1e-4)
    assert torch.equal(ImageScale()(x), y)


# --- modules vs librosa -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n_fft,win_length,hop,center,pad_mode,power",
    [
        (1024, None, 320, True, "constant", 2.0),
        (512, 400, 160, True, "reflect", 2.0),
        (1764, None, 882, False, "constant", 1.0),
    ],
)
def test_spectrogram_matches_librosa_stft(n_fft, win_length, hop, center, pad_mode, power):
    y = signal(16000, seed=3)
    ours = run64(Spectrogram(n_fft, win_length, hop, power, center, pad_mode), y)[0]
    stft = librosa.stft(
        y, n_fft=n_fft, hop_length=hop, win_length=win_length, center=center, pad_mode=pad_mode, dtype=np.complex128
    )
    ref = np.abs(stft) ** power
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6 * ref.max())


@pytest.mark.parametrize("sr,n_fft,hop,n_mels", CONFIGS)
def test_melspectrogram_matches_librosa(sr, n_fft, hop, n_mels):
    y = signal(sr, seed=4)
    ours = run64(MelSpectrogram(sr, n_fft, None, hop, n_mels), y)[0]
    ref = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, pad_mode="constant", dtype=np.float64
    )
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6 * ref.max())
    # the generic Spectrogram -> MelScale composition gives the same numbers as the fused module
    composed = run64(torch.nn.Sequential(Spectrogram(n_fft, None, hop), MelScale(n_mels, sr, n_fft)), y)[0]
    np.testing.assert_allclose(composed, ours, rtol=1e-9, atol=1e-12 * ref.max())


def test_melspectrogram_magnitude_htk_fmin_fmax_matches_librosa():
    y = signal(22050, seed=5)
    kw = dict(fmin=100.0, fmax=6000.0, power=1.0)
    ours = run64(MelSpectrogram(22050, 1024, 800, 256, 32, mel_scale="htk", norm=None, **kw), y)[0]
    ref = librosa.feature.melspectrogram(
        y=y, sr=22050, n_fft=1024, win_length=800, hop_length=256, n_mels=32, htk=True, norm=None,
        pad_mode="constant", dtype=np.float64, **kw,
    )  # fmt: skip
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6 * ref.max())


@pytest.mark.parametrize("sr,n_fft,hop,n_mels", CONFIGS)
def test_frontend_logmel_matches_librosa(sr, n_fft, hop, n_mels):
    y = signal(sr, seed=6)
    cfg = FeatureConfig(sample_rate=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    ref = librosa_logmel(y, sr, n_fft, hop, n_mels)
    ours = run64(FrontEnd(cfg), y)
    assert ours.shape == (1, 1, *ref.shape) and FrontEnd(cfg).output_shape(y.size) == (1, *ref.shape)
    np.testing.assert_allclose(ours[0, 0], ref, atol=1e-4)
    ours32 = FrontEnd(cfg)(torch.from_numpy(y).float()).numpy()
    assert ours32.dtype == np.float32
    np.testing.assert_allclose(ours32[0, 0], ref, atol=0.05)


def test_frontend_fsd_style_image_is_80_by_92():
    cfg = FeatureConfig(sample_rate=16000, n_fft=1024, hop_length=525, n_mels=80, image_scale=True)
    out = FrontEnd(cfg)(torch.from_numpy(signal(16000, seconds=3.0)).float())
    assert out.shape == (1, 1, 80, 92)
    assert float(out.min()) == 0.0 and float(out.max()) == pytest.approx(255.0)


def test_frontend_batch_clamps_each_clip_like_librosa_alone():
    sr, n_fft, hop, n_mels = CONFIGS[0]
    clips = np.stack([signal(sr, seed=7, level=1.0), signal(sr, seed=8, level=1e-4)])  # 80 dB apart
    out = run64(FrontEnd(FeatureConfig(sample_rate=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)), clips)
    for got, y in zip(out[:, 0], clips):
        np.testing.assert_allclose(got, librosa_logmel(y, sr, n_fft, hop, n_mels), atol=1e-4)


@pytest.mark.parametrize("n_mfcc,n_mels", [(20, 64), (13, 40)])
def test_frontend_mfcc_matches_librosa(n_mfcc, n_mels):
    sr, y = 22050, signal(22050, seed=9)
    cfg = FeatureConfig(kind="mfcc", sample_rate=sr, n_fft=1024, hop_length=512, n_mels=n_mels, n_mfcc=n_mfcc)
    ours = run64(FrontEnd(cfg), y)[0, 0]
    ref = librosa.feature.mfcc(
        y=y, sr=sr, n_mfcc=n_mfcc, n_fft=1024, hop_length=512, n_mels=n_mels, pad_mode="constant", dtype=np.float64
    )
    assert ours.shape == ref.shape == (n_mfcc, 44)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    mel_db = torch.from_numpy(librosa_logmel(y, sr, 1024, 512, n_mels))
    np.testing.assert_allclose(MFCC(n_mfcc, n_mels).double()(mel_db).numpy(), ref, atol=1e-4)


def test_frontend_db_spectrogram_and_natural_log():
    y = signal(16000, seed=10)
    spec = np.abs(librosa.stft(y, n_fft=512, hop_length=256, pad_mode="constant", dtype=np.complex128)) ** 2
    cfg = FeatureConfig(kind="spectrogram", n_fft=512, hop_length=256)
    out = run64(FrontEnd(cfg), y)[0, 0]
    assert out.shape == (257, spec.shape[1]) == FrontEnd(cfg).output_shape(y.size)[1:]
    np.testing.assert_allclose(out, librosa.power_to_db(spec, top_db=80.0), atol=1e-4)
    magnitude = run64(FrontEnd(FeatureConfig(kind="spectrogram", n_fft=512, hop_length=256, power=1.0)), y)[0, 0]
    np.testing.assert_allclose(magnitude, librosa.amplitude_to_db(np.sqrt(spec), amin=1e-10, top_db=80.0), atol=1e-4)
    mel = librosa.feature.melspectrogram(
        y=y, sr=16000, n_fft=512, hop_length=256, n_mels=40, pad_mode="constant", dtype=np.float64
    )
    for log, expected in (("log", np.log(mel + 1e-3)), ("none", mel)):
        cfg = FeatureConfig(n_fft=512, hop_length=256, n_mels=40, log=log, log_offset=1e-3)
        tolerance = 1e-6 * np.abs(expected).max()
        np.testing.assert_allclose(run64(FrontEnd(cfg), y)[0, 0], expected, rtol=1e-6, atol=tolerance)


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_frontend_pcen_matches_librosa(power):
    # A tone that starts after 0.5 s of quiet noise: the smoother's start and its adaptation both count.
    y = signal(16000, seconds=2.0, seed=11, level=0.02)
    y[8000:] += 0.3 * np.sin(2 * np.pi * 880.0 * np.arange(y.size - 8000) / 16000)
    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=160, n_mels=40, power=power,
                                         pad_mode="constant", dtype=np.float64)
    expected = librosa.pcen(mel * 2**31, sr=16000, hop_length=160)
    cfg = FeatureConfig(n_fft=512, hop_length=160, n_mels=40, power=power, log="pcen")
    np.testing.assert_allclose(run64(FrontEnd(cfg), y)[0, 0], expected, rtol=1e-5, atol=1e-6)
    # float32 (training) stays close too
    out32 = FrontEnd(cfg)(torch.from_numpy(y.astype(np.float32)))[0, 0].numpy()
    np.testing.assert_allclose(out32, expected, rtol=1e-3, atol=1e-3)


def test_pcen_is_robust_to_gain_where_db_shifts():
    y = signal(16000, seconds=2.0, seed=12)
    pcen_cfg = FeatureConfig(n_fft=512, hop_length=160, n_mels=40, log="pcen")
    loud, quiet = (run64(FrontEnd(pcen_cfg), y * g)[0, 0] for g in (1.0, 0.1))
    db_cfg = FeatureConfig(n_fft=512, hop_length=160, n_mels=40)
    db_loud, db_quiet = (run64(FrontEnd(db_cfg), y * g)[0, 0] for g in (1.0, 0.1))
    # -20 dB of gain moves every dB value by 20; PCEN's output (after its adaptation, ~0.4 s) barely moves.
    steady = slice(60, None)
    assert np.abs(db_loud - db_quiet)[:, steady].mean() == pytest.approx(20.0, abs=0.5)
    assert np.abs(loud - quiet)[:, steady].mean() < 0.1 * np.abs(loud[:, steady]).mean()


@pytest.mark.parametrize("kind", ["logmel", "mfcc"])
def test_utterance_normalization_gives_zero_mean_unit_variance_per_bin(kind):
    y = signal(16000, seconds=1.0, seed=13)
    cfg = FeatureConfig(kind=kind, n_fft=512, hop_length=160, n_mels=40, normalize="utterance")
    out = run64(FrontEnd(cfg), y)[0, 0]
    plain = run64(FrontEnd(dataclasses.replace(cfg, normalize="none")), y)[0, 0]
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-9)
    np.testing.assert_allclose(out.std(axis=1), 1.0, rtol=1e-3)  # up to the variance floor
    expected = (plain - plain.mean(axis=1, keepdims=True)) / np.sqrt(plain.var(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, expected, atol=1e-9)


def test_mean_normalization_removes_a_fixed_channel_gain():
    # A device's gain (or any fixed response) adds a constant per band in dB: per-clip mean subtraction removes it.
    y = signal(16000, seconds=1.0, seed=14)
    cfg = FeatureConfig(n_fft=512, hop_length=160, n_mels=40, top_db=None, normalize="mean")
    loud, quiet = (run64(FrontEnd(cfg), y * g)[0, 0] for g in (1.0, 0.1))
    np.testing.assert_allclose(loud, quiet, atol=1e-6)
    plain = FeatureConfig(n_fft=512, hop_length=160, n_mels=40, top_db=None)
    assert np.abs(run64(FrontEnd(plain), y)[0, 0] - run64(FrontEnd(plain), 0.1 * y)[0, 0]).mean() > 19.0


def test_normalize_is_recorded_and_checked():
    cfg = FeatureConfig(normalize="utterance")
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["normalize"] == "utterance"
    assert FeatureConfig().normalize == "none"  # off unless asked for
    with pytest.raises(ConfigError, match="features.normalize"):
        FeatureConfig(normalize="cmvn")
    # a silent clip (every band constant) stays finite: 0, not 0/0
    silent = FrontEnd(cfg)(torch.zeros(1, 16000))
    assert torch.isfinite(silent).all() and silent.abs().max() == 0


def test_pcen_is_refused_for_mfcc():
    with pytest.raises(ConfigError, match="features.log"):
        FeatureConfig(kind="mfcc", log="pcen")


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("n_samples", [1764, 1765, 44100, 44100 + 881, 44100 + 882])
def test_n_frames_matches_librosa(center, n_samples):
    cfg = FeatureConfig(sample_rate=44100, n_fft=1764, hop_length=882, n_mels=40, center=center)
    y = np.zeros(n_samples)
    expected = librosa.stft(y, n_fft=1764, hop_length=882, center=center).shape[1]
    assert n_frames(cfg, n_samples) == expected
    assert FrontEnd(cfg)(torch.zeros(2, n_samples)).shape == (2, 1, 40, expected)


def test_short_input_errors_name_the_requirement():
    cfg = FeatureConfig(n_fft=1024, center=False)
    with pytest.raises(DataError, match="n_fft=1024"):
        n_frames(cfg, 1000)
    with pytest.raises(DataError, match="n_fft=1024"):
        FrontEnd(cfg)(torch.zeros(1000))
    assert FrontEnd(FeatureConfig())(torch.zeros(100)).shape == (1, 1, 64, 1)  # centred: zero padding


# --- module behaviour ---------------------------------------------------------------------------
def test_frontend_accepts_1d_2d_and_channel_inputs():
    fe = FrontEnd(FeatureConfig())
    y = torch.from_numpy(signal(16000, seed=11)).float()
    single = fe(y)
    assert single.shape == (1, 1, 64, 51)
    assert torch.equal(fe(y[None]), single) and torch.equal(fe(y[None, None]), single)
    with pytest.raises(DataError, match="floating-point"):
        fe(torch.zeros(16000, dtype=torch.int16))
    with pytest.raises(DataError, match=r"\(B, N\)"):
        fe(torch.zeros(2, 2, 16000))


def test_cpu_chunking_gives_the_same_batch_result():
    waves = torch.from_numpy(np.stack([signal(16000, seed=s, level=10.0 ** -s) for s in range(5)])).float()
    fe = FrontEnd(FeatureConfig())
    whole = fe(waves)
    fe.spectrogram.cpu_chunk_samples = 1  # forces one clip per chunk
    torch.testing.assert_close(fe(waves), whole, rtol=0, atol=1e-5)
    for i, wave in enumerate(waves):
        torch.testing.assert_close(fe(wave)[0], whole[i], rtol=0, atol=1e-4)


def test_gradients_flow_and_match_inference_values():
    fe = FrontEnd(FeatureConfig(n_fft=512, hop_length=256, n_mels=32, top_db=None))
    wave = torch.from_numpy(signal(16000, seed=12)).float().requires_grad_(True)
    out = fe(wave)
    out.sum().backward()
    assert wave.grad is not None and torch.isfinite(wave.grad).all() and wave.grad.abs().sum() > 0
    with torch.inference_mode():
        torch.testing.assert_close(fe(wave.detach()), out.detach())


def test_constants_are_buffers_not_checkpoint_state():
    fe = FrontEnd(FeatureConfig(kind="mfcc"))
    assert fe.state_dict() == {}  # rebuilt from FeatureConfig, so checkpoints stay small and portable
    names = {name.split(".")[-1] for name, _ in fe.named_buffers()}
    assert {"window", "band0", "dct"} <= names
    assert all(b.dtype == torch.float64 for b in fe.double().buffers())


def test_amplitude_to_db_module_validates():
    with pytest.raises(ConfigError, match="stype"):
        AmplitudeToDB("energy")
    x = torch.tensor([[[1.0, 0.1]]])
    torch.testing.assert_close(AmplitudeToDB("magnitude", top_db=None)(x), torch.tensor([[[0.0, -20.0]]]))


@pytest.mark.parametrize("device", DEVICES)
def test_frontend_same_numbers_on_every_device(device):
    sr, n_fft, hop, n_mels = CONFIGS[0]
    clips = np.stack([signal(sr, seed=13, level=1.0), signal(sr, seed=14, level=1e-3)]).astype(np.float32)
    for kind in ("logmel", "mfcc"):
        cfg = FeatureConfig(kind=kind, sample_rate=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
        cpu = FrontEnd(cfg)(torch.from_numpy(clips))
        on_device = FrontEnd(cfg).to(device)(torch.from_numpy(clips).to(device))
        assert on_device.device.type == device
        torch.testing.assert_close(on_device.cpu(), cpu, rtol=0, atol=1e-3)
    ref = librosa_logmel(clips[1].astype(np.float64), sr, n_fft, hop, n_mels)
    logmel = FrontEnd(FeatureConfig(sample_rate=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)).to(device)
    np.testing.assert_allclose(logmel(torch.from_numpy(clips).to(device))[1, 0].cpu().numpy(), ref, atol=0.05)


# --- FeatureConfig ------------------------------------------------------------------------------
def test_feature_config_round_trip_and_shapes():
    cfg = FeatureConfig(kind="mfcc", fmin=20, n_mfcc=13)
    data = cfg.to_dict()
    assert data["fmin"] == 20.0 and isinstance(data["fmin"], float)
    assert FeatureConfig.from_dict(data) == cfg
    assert FeatureConfig().to_dict()["pad_mode"] == "constant"
    assert cfg.n_bins == 13 and FeatureConfig(kind="spectrogram").n_bins == 513 and FeatureConfig().n_bins == 64


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"kind": "cqt"}, "kind"),
        ({"n_fft": 0}, "n_fft"),
        ({"hop_length": -1}, "hop_length"),
        ({"n_mels": "64"}, "n_mels"),
        ({"center": 1}, "center"),
        ({"win_length": 2048}, "win_length"),
        ({"fmax": 9000.0}, "fmax"),
        ({"fmin": 500.0, "fmax": 400.0}, "fmax"),
        ({"mel_scale": "bark"}, "mel_scale"),
        ({"mel_norm": "l2"}, "mel_norm"),
        ({"log": "log10"}, "log"),
        ({"power": 1.5}, "power"),
        ({"top_db": -1.0}, "top_db"),
        ({"amin": 0.0}, "amin"),
        ({"kind": "mfcc", "n_mfcc": 80, "n_mels": 40}, "n_mfcc"),
        ({"pad_mode": "edge"}, "pad_mode"),
    ],
)
def test_feature_config_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"features\.{field}\b"):
        FeatureConfig(**kwargs)


def test_feature_config_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown features key 'n_mel'; did you mean n_mels"):
        FeatureConfig.from_dict({"n_mel": 40})
    with pytest.raises(ConfigError, match="'hop'; valid: .*hop_length"):
        FeatureConfig.from_dict({"hop": 512})
    with pytest.raises(ConfigError, match="mapping"):
        FeatureConfig.from_dict([("n_mels", 40)])


def test_frontend_ignores_autocast_and_half_input():
    fe = FrontEnd(FeatureConfig())
    wave = torch.from_numpy(signal(16000, seed=15, level=1.0)).float()
    expected = fe(wave)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fe(wave)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
    assert fe(wave.half()).dtype == torch.float32
