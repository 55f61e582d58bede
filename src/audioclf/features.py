"""Torch audio front-end: STFT -> (mel) -> log / dB -> (MFCC) -> (0..255 image), equal to librosa.

DSP lives in pure functions; the small ``nn.Module`` wrappers keep the constants (window, mel filterbank,
DCT matrix) in non-persistent buffers, so ``.to(device)`` / ``.double()`` is all it takes to move them and
checkpoints do not carry them (they are rebuilt from :class:`FeatureConfig`). The same code runs on CPU
and GPU. Numbers follow librosa >= 0.10 (``melspectrogram``, ``power_to_db``, ``mfcc``) with ``center=True``
and constant (zero) padding by default; ``tests/test_features.py`` states the tolerances.

Speed notes (this is the hot path of every training step):
- the STFT is computed batched in the input dtype (float32 in practice);
- ``torch.stft`` returns a transposed view of a (B, T, F) buffer; we work in that contiguous layout;
- for ``power=2`` the squared real/imag parts are summed *inside* the mel matmul (the filterbank is
  repeated per real/imag column), which avoids a strided ``re**2 + im**2`` pass over the largest tensor.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, DataError
from .registry import did_you_mean

__all__ = [
    "FeatureConfig",
    "n_frames",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "power_to_db",
    "pcen",
    "dct_matrix",
    "image_scale",
    "utterance_normalize",
    "Spectrogram",
    "MelScale",
    "MelSpectrogram",
    "mel_bands",
    "AmplitudeToDB",
    "NaturalLog",
    "PCEN",
    "MFCC",
    "ImageScale",
    "UtteranceNorm",
    "FrontEnd",
]

KINDS = ("logmel", "mfcc", "spectrogram")
MEL_SCALES = ("slaney", "htk")
MEL_NORMS = ("slaney", None)
LOGS = ("db", "log", "pcen", "none")
# Per-channel energy normalisation (Wang et al. 2017, "Trainable frontend for robust and far-field keyword
# spotting"): librosa's defaults, for magnitudes on the int32 scale its documentation uses.
PCEN_GAIN, PCEN_BIAS, PCEN_POWER, PCEN_TIME_CONSTANT, PCEN_EPS, PCEN_SCALE = 0.98, 2.0, 0.5, 0.4, 1e-6, 2.0**31
PAD_MODES = ("constant", "reflect", "replicate", "circular")
# Per-utterance normalisation of each feature bin over time: "mean" subtracts the clip's mean (cepstral mean
# normalisation: a fixed device/channel response is an additive constant per band in the log domain), "utterance"
# also divides by the clip's standard deviation (cepstral mean and variance normalisation, CMVN).
NORMALIZE = ("none", "mean", "utterance")
# Variance floor of "utterance": a constant band (e.g. the top_db floor) maps to 0 rather than to noise / 0.
NORMALIZE_EPS = 1e-5


# --- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureConfig:
    """Every setting of the front-end; ``to_dict``/``from_dict`` round-trip through YAML and checkpoints."""

    kind: str = "logmel"  # "logmel" | "mfcc" | "spectrogram"
    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int | None = None  # None: n_fft (a shorter window is zero-padded to n_fft, centred)
    hop_length: int = 320
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    power: float = 2.0  # 2: power spectrogram, 1: magnitude
    mel_scale: str = "slaney"  # "slaney" | "htk"
    mel_norm: str | None = "slaney"  # "slaney" (area normalisation) | None
    center: bool = True
    pad_mode: str = "constant"  # librosa >= 0.10 default
    # "db" | "log" (natural log of x + log_offset) | "pcen" (per-channel energy normalisation: robust to
    # loudness and microphone gain; librosa.pcen's defaults on the spectrogram scaled by 2**31) | "none"
    log: str = "db"
    top_db: float | None = 80.0  # per example, relative to its own maximum
    amin: float = 1e-10
    log_offset: float = 1e-6
    n_mfcc: int = 20
    # per clip and feature bin over time, after the log / MFCC (see NORMALIZE): "none" | "mean" | "utterance"
    normalize: str = "none"
    image_scale: bool = False  # per-example min-max to 0..255 (ImageNet backbones)

    def __post_init__(self) -> None:
        self._check_types()
        self._check_values()

    def _check_types(self) -> None:
        # annotations are strings here (postponed evaluation): "int", "float | None", "str | None", "bool"
        for f in dataclasses.fields(self):
            value, base = getattr(self, f.name), str(f.type).removesuffix(" | None")
            if value is None:
                ok = str(f.type).endswith("| None")
            elif base == "bool":
                ok = isinstance(value, bool)
            elif base == "int":
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif base == "float":
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                if ok:  # store ints given for float fields as floats, so to_dict round-trips exactly
                    object.__setattr__(self, f.name, float(value))
            else:
                ok = isinstance(value, str)
            if not ok:
                raise ConfigError(f"features.{f.name}: expected {f.type}, got {value!r}")

    def _check_values(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise ConfigError(f"features.{name}: expected {expected}, got {getattr(self, name)!r}")

        if self.kind not in KINDS:
            fail("kind", " | ".join(KINDS))
        if self.mel_scale not in MEL_SCALES:
            fail("mel_scale", " | ".join(MEL_SCALES))
        if self.mel_norm not in MEL_NORMS:
            fail("mel_norm", "'slaney' or null")
        if self.log not in LOGS:
            fail("log", " | ".join(LOGS))
        if self.pad_mode not in PAD_MODES:
            fail("pad_mode", " | ".join(PAD_MODES))
        if self.normalize not in NORMALIZE:
            fail("normalize", " | ".join(NORMALIZE))
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc"):
            if getattr(self, name) <= 0:
                fail(name, "a positive integer")
        if self.win_length is not None and not 0 < self.win_length <= self.n_fft:
            fail("win_length", f"1..n_fft ({self.n_fft}) or null")
        nyquist = self.sample_rate / 2
        if not 0 <= self.fmin < nyquist:
            fail("fmin", f"0 <= fmin < sample_rate/2 ({nyquist:g})")
        if self.fmax is not None and not self.fmin < self.fmax <= nyquist:
            fail("fmax", f"fmin < fmax <= sample_rate/2 ({nyquist:g}) or null")
        if not self.power > 0:
            fail("power", "a positive number")
        if self.log == "db" and self.power not in (1.0, 2.0):
            fail("power", "1 (magnitude) or 2 (power) when log is 'db'")
        if self.top_db is not None and self.top_db < 0:
            fail("top_db", "a non-negative number or null")
        if not self.amin > 0:
            fail("amin", "a positive number")
        if not self.log_offset > 0:
            fail("log_offset", "a positive number")
        if self.log == "pcen" and self.kind == "mfcc":
            fail("log", "db or log for MFCC (PCEN output is not a log spectrum)")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            fail("n_mfcc", f"at most n_mels ({self.n_mels})")

    @property
    def n_bins(self) -> int:
        """Feature bins F of the output (n_mels, n_mfcc or n_fft // 2 + 1)."""
        return {"logmel": self.n_mels, "mfcc": self.n_mfcc, "spectrogram": self.n_fft // 2 + 1}[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Build from a plain dict; an unknown key is a ConfigError naming it and the closest valid key."""
        if not isinstance(data, dict):
            raise ConfigError(f"features: expected a mapping of FeatureConfig fields, got {data!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise ConfigError(f"unknown features key '{key}'{did_you_mean(str(key), names)}")
        return cls(**data)


def n_frames(cfg: FeatureConfig, n_samples: int) -> int:
    """Number of STFT frames T for a waveform of ``n_samples`` (same as librosa)."""
    if cfg.center:  # n_fft // 2 on each side: an odd n_fft pads one sample less than n_fft in all
        return 1 + (n_samples + 2 * (cfg.n_fft // 2) - cfg.n_fft) // cfg.hop_length
    if n_samples < cfg.n_fft:
        raise DataError(f"waveform has {n_samples} samples; center=False needs at least n_fft={cfg.n_fft}")
    return 1 + (n_samples - cfg.n_fft) // cfg.hop_length


# --- pure functions -----------------------------------------------------------------------------
_SLANEY_F_SP = 200.0 / 3  # Hz per mel in the linear part of the Slaney scale
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def _check_scale(mel_scale: str) -> None:
    if mel_scale not in MEL_SCALES:
        raise ConfigError(f"mel_scale: expected {' | '.join(MEL_SCALES)}, got {mel_scale!r}")


def hz_to_mel(freqs: torch.Tensor, mel_scale: str = "slaney") -> torch.Tensor:
    """Hz -> mel (librosa.hz_to_mel; ``"htk"`` is 2595 log10(1 + f/700))."""
    _check_scale(mel_scale)
    freqs = torch.as_tensor(freqs, dtype=torch.float64) if not torch.is_tensor(freqs) else freqs
    if mel_scale == "htk":
        return 2595.0 * torch.log10(1.0 + freqs / 700.0)
    linear = freqs / _SLANEY_F_SP
    # clamp only guards the log against f <= 0; those entries take the linear branch anyway
    log_part = _SLANEY_MIN_LOG_MEL + torch.log(freqs.clamp_min(1e-12) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return torch.where(freqs >= _SLANEY_MIN_LOG_HZ, log_part, linear)


def mel_to_hz(mels: torch.Tensor, mel_scale: str = "slaney") -> torch.Tensor:
    """Mel -> Hz, the inverse of :func:`hz_to_mel`."""
    _check_scale(mel_scale)
    mels = torch.as_tensor(mels, dtype=torch.float64) if not torch.is_tensor(mels) else mels
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    linear = _SLANEY_F_SP * mels
    log_part = _SLANEY_MIN_LOG_HZ * torch.exp(_SLANEY_LOGSTEP * (mels - _SLANEY_MIN_LOG_MEL))
    return torch.where(mels >= _SLANEY_MIN_LOG_MEL, log_part, linear)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    mel_scale: str = "slaney",
    norm: str | None = "slaney",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Triangular mel filters (n_mels, n_fft // 2 + 1), equal to ``librosa.filters.mel``.

    Built in float64 and cast to ``dtype`` at the end, as librosa does.
    """
    if norm not in MEL_NORMS:
        raise ConfigError(f"mel norm: expected 'slaney' or None, got {norm!r}")
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    fft_freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    mel_edges = torch.linspace(
        float(hz_to_mel(torch.tensor(float(fmin), dtype=torch.float64), mel_scale)),
        float(hz_to_mel(torch.tensor(fmax, dtype=torch.float64), mel_scale)),
        n_mels + 2,
        dtype=torch.float64,
    )
    hz_edges = mel_to_hz(mel_edges, mel_scale)  # (n_mels + 2,)
    widths = hz_edges.diff()  # (n_mels + 1,)
    ramps = hz_edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_freqs)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = torch.clamp_min(torch.minimum(lower, upper), 0.0)
    if norm == "slaney":
        weights = weights * (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    # librosa's check: a filter whose upper edge is above 0 Hz yet covers no FFT bin
    empty = int(((weights.amax(dim=1) == 0) & (hz_edges[2:] > 0)).sum())
    if empty:
        warnings.warn(
            f"mel filterbank: {empty} of {n_mels} mel filters are empty "
            f"(n_mels={n_mels} is too high for n_fft={n_fft} at {sample_rate} Hz)",
            UserWarning,
            stacklevel=2,
        )
    return weights.to(dtype)


def power_to_db(
    S: torch.Tensor, amin: float = 1e-10, top_db: float | None = 80.0, ref: float = 1.0, multiplier: float = 10.0
) -> torch.Tensor:
    """``10 log10(max(S, amin) / ref)`` floored at ``max - top_db`` (``librosa.power_to_db``).

    Unlike a global max over a batch, the floor is taken relative to the maximum of *each example*:
    inputs of 3+ dims are (B, ...) and every ``S[b]`` is clamped as librosa would clamp that clip alone;
    inputs of 1-2 dims are one example. ``multiplier=20`` gives ``amplitude_to_db`` for magnitudes.
    """
    if amin <= 0:
        raise ConfigError(f"power_to_db: amin must be positive, got {amin}")
    if top_db is not None and top_db < 0:
        raise ConfigError(f"power_to_db: top_db must be non-negative or None, got {top_db}")
    log_spec = multiplier * torch.log10(torch.clamp_min(S, amin))
    ref_value = abs(float(ref))
    if ref_value != 1.0:
        log_spec = log_spec - multiplier * math.log10(max(amin, ref_value))
    if top_db is None:
        return log_spec
    if log_spec.dim() >= 3:
        peak = log_spec.amax(dim=tuple(range(1, log_spec.dim())), keepdim=True)
    else:
        peak = log_spec.amax()
    return torch.maximum(log_spec, peak - top_db)


def pcen(spec: torch.Tensor, sample_rate: int, hop_length: int) -> torch.Tensor:
    """Per-channel energy normalisation of a (B, F, T) magnitude or power spectrogram, as
    ``librosa.pcen(spec * 2**31, sr=sample_rate, hop_length=hop_length)``.

    The smoother ``M[t] = (1 - b) M[t-1] + b E[t]`` (started, as scipy's ``lfilter_zi`` does, as if
    ``M[-1] = 1``) is written as one matmul with a (T, T) matrix of ``b (1 - b)^(t - i)``, so it runs batched
    on any device and exports to ONNX without a loop.
    """
    frames = PCEN_TIME_CONSTANT * sample_rate / hop_length
    b = (math.sqrt(1 + 4 * frames**2) - 1) / (2 * frames**2)
    energy = spec * PCEN_SCALE
    steps = torch.arange(spec.shape[-1], device=spec.device, dtype=spec.dtype)
    lag = steps.unsqueeze(1) - steps.unsqueeze(0)  # (T, T): t - i, rows t
    decay = torch.exp(lag.clamp_min(0) * math.log1p(-b))
    kernel = torch.where(lag >= 0, b * decay, torch.zeros_like(decay))  # (t, i): weight of E[i] in M[t]
    smooth = torch.matmul(energy, kernel.transpose(0, 1)) + torch.exp((steps + 1) * math.log1p(-b))
    # exp/log rather than expm1/log1p, which ONNX lacks; the difference is below 1e-7 of the output's scale.
    gain = torch.exp(-PCEN_GAIN * (math.log(PCEN_EPS) + torch.log(1 + smooth / PCEN_EPS)))
    return PCEN_BIAS**PCEN_POWER * (torch.exp(PCEN_POWER * torch.log(1 + energy * gain / PCEN_BIAS)) - 1)


def dct_matrix(n_mfcc: int, n_mels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II (n_mfcc, n_mels): ``D @ S`` == ``scipy.fft.dct(S, type=2, norm="ortho", axis=0)[:n_mfcc]``."""
    if not 0 < n_mfcc <= n_mels:
        raise ConfigError(f"dct_matrix: expected 1 <= n_mfcc <= n_mels ({n_mels}), got n_mfcc={n_mfcc}")
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64)[:, None]
    basis = torch.cos(math.pi / n_mels * (n + 0.5) * k) * math.sqrt(2.0 / n_mels)
    basis[0] *= 1.0 / math.sqrt(2.0)
    return basis.to(dtype)


def image_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-example min-max to 0..255 over all dims but the first (a constant example maps to 0)."""
    dims = tuple(range(1, x.dim()))
    low = x.amin(dim=dims, keepdim=True)
    span = x.amax(dim=dims, keepdim=True) - low
    # a flat (e.g. silent) example has span 0; dividing by 1 keeps it at 0 instead of NaN.
    # Divide first: (max - low) / span is exactly 1, so the top is exactly 255 (x * (255 / span) overshoots).
    return (x - low) / torch.where(span > 0, span, torch.ones_like(span)) * 255.0


def utterance_normalize(x: torch.Tensor, mode: str = "utterance") -> torch.Tensor:
    """(B, F, T) features normalised per example and bin over time (the last axis); see :data:`NORMALIZE`.

    Written with ONNX-friendly ops only (ReduceMean, Sub, Mul, Sqrt, Div): the exported front-end calls it too.
    """
    if mode not in NORMALIZE:
        raise ConfigError(f"features.normalize: expected {' | '.join(NORMALIZE)}, got {mode!r}")
    if mode == "none":
        return x
    centred = x - x.mean(dim=-1, keepdim=True)
    if mode == "mean":
        return centred
    return centred / torch.sqrt((centred * centred).mean(dim=-1, keepdim=True) + NORMALIZE_EPS)


# --- modules ------------------------------------------------------------------------------------
def _as_batch(wave: torch.Tensor) -> torch.Tensor:
    """(N,) / (B, N) / (B, 1, N) -> (B, N) floating point."""
    if not torch.is_tensor(wave) or not wave.is_floating_point():
        got = getattr(wave, "dtype", type(wave).__name__)
        raise DataError(f"front-end input: expected a floating-point waveform tensor, got {got}")
    if wave.dim() == 1:
        return wave.unsqueeze(0)
    if wave.dim() == 3 and wave.shape[1] == 1:
        return wave.squeeze(1)
    if wave.dim() != 2:
        shape = tuple(wave.shape)
        raise DataError(f"front-end input: expected a waveform of shape (N,), (B, N) or (B, 1, N), got {shape}")
    return wave


def _grad_free(x: torch.Tensor) -> bool:
    """In-place ops are safe only when autograd will not need the overwritten values."""
    return not (torch.is_grad_enabled() and x.requires_grad)


class Spectrogram(nn.Module):
    """Waveform (B, N) -> |STFT|**power (B, n_fft // 2 + 1, T), like ``librosa.stft`` with a periodic Hann."""

    def __init__(
        self,
        n_fft: int = 1024,
        win_length: int | None = None,
        hop_length: int = 320,
        power: float = 2.0,
        center: bool = True,
        pad_mode: str = "constant",
    ):
        super().__init__()
        if pad_mode not in PAD_MODES:
            raise ConfigError(f"pad_mode: expected {' | '.join(PAD_MODES)}, got {pad_mode!r}")
        self.n_fft, self.hop_length, self.power = n_fft, hop_length, float(power)
        self.center, self.pad_mode = center, pad_mode
        win_length = n_fft if win_length is None else win_length
        window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        left = (n_fft - win_length) // 2  # librosa pads a short window to n_fft, centred
        window = nn.functional.pad(window, (left, n_fft - win_length - left))
        self.register_buffer("window", window.float(), persistent=False)

    def stft_frames(self, wave: torch.Tensor) -> torch.Tensor:
        """Complex STFT in the contiguous (B, T, F) layout ``torch.stft`` computes internally."""
        wave = _as_batch(wave)
        n = wave.shape[-1]
        if not self.center and n < self.n_fft:
            raise DataError(f"waveform has {n} samples; center=False needs at least n_fft={self.n_fft}")
        if self.center and self.pad_mode == "reflect" and n <= self.n_fft // 2:
            raise DataError(f"waveform has {n} samples; reflect padding needs more than n_fft/2={self.n_fft // 2}")
        window = self.window if self.window.dtype == wave.dtype else self.window.to(wave.dtype)
        spec = torch.stft(
            wave,
            self.n_fft,
            hop_length=self.hop_length,
            window=window,
            center=self.center,
            pad_mode=self.pad_mode,
            return_complex=True,
        )
        return spec.transpose(-1, -2)  # a free view back to the (B, T, F) buffer

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return _frames_power(self.stft_frames(wave), self.power).transpose(-1, -2)


def _frames_power(frames: torch.Tensor, power: float) -> torch.Tensor:
    """|X|**power of a complex (B, T, F) STFT, in the same layout."""
    if power == 1.0:
        return frames.abs()
    parts = torch.view_as_real(frames)
    squared = parts[..., 0].square() + parts[..., 1].square()
    return squared if power == 2.0 else squared.pow(power / 2.0)


class MelScale(nn.Module):
    """Spectrogram (B, n_fft // 2 + 1, T) -> mel spectrogram (B, n_mels, T) with :func:`mel_filterbank`."""

    def __init__(
        self,
        n_mels: int = 64,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        fmin: float = 0.0,
        fmax: float | None = None,
        mel_scale: str = "slaney",
        norm: str | None = "slaney",
    ):
        super().__init__()
        fb = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, mel_scale, norm, dtype=torch.float64)
        self.register_buffer("fb", fb.float(), persistent=False)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        fb = self.fb if self.fb.dtype == spec.dtype else self.fb.to(spec.dtype)
        return torch.matmul(fb, spec)


def mel_bands(fb: torch.Tensor, n_bands: int = 4) -> list[tuple[int, int, int, int]]:
    """Split a filterbank into ``n_bands`` runs of mel filters, each with the FFT-bin range it covers.

    Mel filters are narrow at low and wide at high frequencies, so a dense (F x n_mels) matmul multiplies
    mostly zeros. Returns ``(mel_start, mel_stop, bin_start, bin_stop)`` per band, chosen by dynamic
    programming to minimise the multiply count (about 4x fewer than dense for 4 bands). Few, large bands
    keep the GEMMs efficient on CPU and the kernel count low on GPU.
    """
    n_mels = fb.shape[0]
    nonzero = fb > 0
    n_bins = fb.shape[1]
    bins = torch.arange(n_bins)
    # an empty filter gets the range (n_bins, 0) so it never widens its band
    lo = torch.where(nonzero, bins, n_bins).amin(dim=1).tolist()
    hi = torch.where(nonzero, bins + 1, 0).amax(dim=1).tolist()

    # span[i][j - 1]: bins covered by filters [i, j) (empty filters excluded), via running min/max
    span: list[list[tuple[int, int]]] = []
    for i in range(n_mels):
        row, start, stop = [], n_bins, 0
        for j in range(i, n_mels):
            start, stop = min(start, lo[j]), max(stop, hi[j])
            row.append((start, stop) if stop > start else (0, 0))
        span.append(row)

    n_bands = max(1, min(n_bands, n_mels))
    inf = float("inf")
    # best[k][j]: least multiplies covering filters [0, j) with k bands; cut[k][j]: where the last band starts
    best = [[inf] * (n_mels + 1) for _ in range(n_bands + 1)]
    cut = [[0] * (n_mels + 1) for _ in range(n_bands + 1)]
    best[0][0] = 0
    for k in range(1, n_bands + 1):
        for j in range(1, n_mels + 1):
            for i in range(k - 1, j):
                start, stop = span[i][j - 1 - i]
                total = best[k - 1][i] + (j - i) * (stop - start)
                if total < best[k][j]:
                    best[k][j], cut[k][j] = total, i
    bands, stop = [], n_mels
    for k in range(n_bands, 0, -1):
        start = cut[k][stop]
        bands.append((start, stop, *span[start][stop - 1 - start]))
        stop = start
    return bands[::-1]


class MelSpectrogram(nn.Module):
    """Waveform (B, N) -> mel spectrogram (B, n_mels, T), like ``librosa.feature.melspectrogram``.

    The filterbank is applied band by band (:func:`mel_bands`); for ``power=2`` each band's weights are
    repeated per (real, imag) column so ``sum_f fb[m, f] * (re_f**2 + im_f**2)`` is a single GEMM.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        win_length: int | None = None,
        hop_length: int = 320,
        n_mels: int = 64,
        fmin: float = 0.0,
        fmax: float | None = None,
        power: float = 2.0,
        center: bool = True,
        pad_mode: str = "constant",
        mel_scale: str = "slaney",
        norm: str | None = "slaney",
    ):
        super().__init__()
        self.spectrogram = Spectrogram(n_fft, win_length, hop_length, power, center, pad_mode)
        fb = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, mel_scale, norm, dtype=torch.float32)
        self.bands = mel_bands(fb)
        self.interleaved = float(power) == 2.0
        for i, (m0, m1, f0, f1) in enumerate(self.bands):
            weights = fb[m0:m1, f0:f1].T  # (bins, mels): the (B, T, bins) activations are the left operand
            if self.interleaved:
                weights = weights.repeat_interleave(2, dim=0)
            self.register_buffer(f"band{i}", weights.contiguous(), persistent=False)

    # On CPU, clips go through in groups of about this many STFT input samples (frames x n_fft): the FFT
    # and the squared spectrum then stay in cache, which measured ~1.5-3x faster than one huge batch.
    cpu_chunk_samples: int = 2**20

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = _as_batch(wave)
        if wave.device.type == "cpu" and wave.shape[0] > 1:
            frames_per_clip = 1 + wave.shape[-1] // self.spectrogram.hop_length
            per_chunk = max(1, self.cpu_chunk_samples // (frames_per_clip * self.spectrogram.n_fft))
            if per_chunk < wave.shape[0]:
                return torch.cat([self._mel(chunk) for chunk in wave.split(per_chunk)])
        return self._mel(wave)

    def _mel(self, wave: torch.Tensor) -> torch.Tensor:
        frames = self.spectrogram.stft_frames(wave)  # (B, T, F) complex
        if self.interleaved:
            parts = torch.view_as_real(frames)  # (B, T, F, 2), contiguous
            spec = (parts.square_() if _grad_free(parts) else parts.square()).flatten(-2)
            step = 2
        else:
            spec = _frames_power(frames, self.spectrogram.power)
            step = 1
        outputs = []
        for i, (_, _, f0, f1) in enumerate(self.bands):
            weights = getattr(self, f"band{i}")
            weights = weights if weights.dtype == spec.dtype else weights.to(spec.dtype)
            outputs.append(torch.matmul(spec[..., step * f0 : step * f1], weights))
        return torch.cat(outputs, dim=-1).transpose(-1, -2)  # (B, n_mels, T) view of (B, T, n_mels)


class AmplitudeToDB(nn.Module):
    """Power (or magnitude) spectrogram -> dB with a per-example ``top_db`` floor (see :func:`power_to_db`)."""

    def __init__(self, stype: str = "power", top_db: float | None = 80.0, amin: float = 1e-10, ref: float = 1.0):
        super().__init__()
        if stype not in ("power", "magnitude"):
            raise ConfigError(f"AmplitudeToDB stype: expected 'power' or 'magnitude', got {stype!r}")
        self.multiplier = 10.0 if stype == "power" else 20.0
        self.top_db, self.amin, self.ref = top_db, amin, ref

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return power_to_db(spec, self.amin, self.top_db, self.ref, self.multiplier)


class NaturalLog(nn.Module):
    """``log(x + offset)``: the log compression many papers use instead of dB."""

    def __init__(self, offset: float = 1e-6):
        super().__init__()
        self.offset = offset

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return torch.log(spec + self.offset)


class PCEN(nn.Module):
    """Per-channel energy normalisation (see :func:`pcen`) in place of the log."""

    def __init__(self, sample_rate: int, hop_length: int):
        super().__init__()
        self.sample_rate, self.hop_length = sample_rate, hop_length

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return pcen(spec, self.sample_rate, self.hop_length)


class MFCC(nn.Module):
    """dB mel spectrogram (B, n_mels, T) -> MFCC (B, n_mfcc, T), as ``librosa.feature.mfcc`` (ortho DCT-II)."""

    def __init__(self, n_mfcc: int = 20, n_mels: int = 64):
        super().__init__()
        self.register_buffer("dct", dct_matrix(n_mfcc, n_mels), persistent=False)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        dct = self.dct if self.dct.dtype == log_mel.dtype else self.dct.to(log_mel.dtype)
        return torch.matmul(dct, log_mel)


class ImageScale(nn.Module):
    """Per-example min-max scaling to 0..255 (see :func:`image_scale`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return image_scale(x)


class UtteranceNorm(nn.Module):
    """Per-clip normalisation of each feature bin over time (see :func:`utterance_normalize`)."""

    def __init__(self, mode: str = "utterance"):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return utterance_normalize(x, self.mode)


class FrontEnd(nn.Module):
    """Waveform (B, N), (B, 1, N) or (N,) -> features (B, 1, F, T) as set by a :class:`FeatureConfig`.

    A 1-D waveform is one example: the output is (1, 1, F, T). Computation follows the input dtype
    (float32 or float64; half-precision input is computed in float32), with autocast switched off.
    """

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.kind == "spectrogram":
            self.spectrogram: nn.Module = Spectrogram(
                cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.power, cfg.center, cfg.pad_mode
            )
        else:
            self.spectrogram = MelSpectrogram(
                cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.n_mels, cfg.fmin, cfg.fmax,
                cfg.power, cfg.center, cfg.pad_mode, cfg.mel_scale, cfg.mel_norm,
            )  # fmt: skip
        if cfg.log == "db":
            stype = "power" if cfg.power == 2.0 else "magnitude"
            self.compress: nn.Module = AmplitudeToDB(stype, cfg.top_db, cfg.amin)
        elif cfg.log == "log":
            self.compress = NaturalLog(cfg.log_offset)
        elif cfg.log == "pcen":
            self.compress = PCEN(cfg.sample_rate, cfg.hop_length)
        else:
            self.compress = nn.Identity()
        self.cepstrum: nn.Module = MFCC(cfg.n_mfcc, cfg.n_mels) if cfg.kind == "mfcc" else nn.Identity()
        self.normalize: nn.Module = UtteranceNorm(cfg.normalize) if cfg.normalize != "none" else nn.Identity()
        self.image: nn.Module = ImageScale() if cfg.image_scale else nn.Identity()

    def output_shape(self, n_samples: int) -> tuple[int, int, int]:
        """(1, F, T) for one waveform of ``n_samples`` samples."""
        return (1, self.cfg.n_bins, n_frames(self.cfg, n_samples))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = _as_batch(wave)
        if wave.dtype in (torch.float16, torch.bfloat16):
            wave = wave.float()
        # Mixed precision must stop here: a power spectrum easily exceeds float16's 65504 (a full-scale
        # tone gives ~2.6e5 at n_fft=1024) and bfloat16 has 3 significant digits; the model after us may
        # still run in reduced precision.
        with torch.autocast(wave.device.type, enabled=False):
            features = self.image(self.normalize(self.cepstrum(self.compress(self.spectrogram(wave)))))
        return features.unsqueeze(1).contiguous()
