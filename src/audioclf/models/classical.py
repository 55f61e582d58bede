"""The classical ensemble member: utterance-level statistics of MFCC and spectral features, and a scikit-learn
classifier stored as ONNX.

Why a classical member beside the CNN: statistics over a whole clip (means and spreads of MFCCs and spectral
shape) average the speaker and channel out of the picture in a way a CNN trained on a few voices does not learn,
which is what pipelines such as pyAudioAnalysis (Giannakopoulos 2015, PLOS ONE) rely on. The two make different
mistakes, so an average of the two can beat both (the AutoGluon lesson: Erickson et al. 2020, "AutoGluon-Tabular").

Per frame (25 ms Hann window, 10 ms hop, as in speech front-ends): 20 MFCCs from 40 slaney mel bands (the numbers of
``librosa.feature.mfcc``), their deltas, spectral centroid, bandwidth, 85 % roll-off (the three as fractions of the
Nyquist rate, so they do not depend on the sample rate), flatness, flux, zero-crossing rate and log energy. Per clip:
the mean and the standard deviation of each over the frames (94 numbers).

The fitted classifier (``StandardScaler`` + ``SVC``) is stored as ONNX (skl2onnx) and run with ONNX Runtime: loading
a member reads a graph of numbers, never a pickle that could run code.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..files import atomic_write_bytes
from ..features import Spectrogram, dct_matrix, mel_filterbank, power_to_db

__all__ = ["ClassicalMember", "StoredMember", "UtteranceStatistics", "classical_available", "frame_sizes"]

N_MELS = 40
N_MFCC = 20
ROLLOFF = 0.85  # librosa.feature.spectral_rolloff's default
FRAME_SECONDS = 0.025
HOP_SECONDS = 0.010
FRAME_FEATURES = ["mfcc_%d" % i for i in range(N_MFCC)] + ["delta_%d" % i for i in range(N_MFCC)] + [
    "centroid", "bandwidth", "rolloff", "flatness", "flux", "zcr", "log_energy"]
FEATURE_NAMES = [f"{name}_{stat}" for stat in ("mean", "std") for name in FRAME_FEATURES]
EPS = 1e-10


def frame_sizes(sample_rate: int) -> tuple[int, int]:
    """(n_fft, hop): the power of two at or above 25 ms (the Hann window spans it), and 10 ms."""
    return 2 ** math.ceil(math.log2(FRAME_SECONDS * sample_rate)), max(1, round(HOP_SECONDS * sample_rate))


class UtteranceStatistics(nn.Module):
    """Waveforms (B, N) -> (B, 94) per-clip statistics (see the module's docstring for the list)."""

    def __init__(self, sample_rate: int):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.n_fft, self.hop = frame_sizes(self.sample_rate)
        self.spectrogram = Spectrogram(self.n_fft, hop_length=self.hop, power=2.0)
        # One STFT serves every feature: the mel bands are this filterbank times its power spectrum.
        self.register_buffer("mel", mel_filterbank(self.sample_rate, self.n_fft, N_MELS), persistent=False)
        self.register_buffer("dct", dct_matrix(N_MFCC, N_MELS), persistent=False)
        freqs = torch.linspace(0, 1, self.n_fft // 2 + 1)  # bin frequency / Nyquist
        self.register_buffer("freqs", freqs, persistent=False)

    @torch.no_grad()
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = wave.float()
        power = self.spectrogram(wave)  # (B, F, T)
        mfcc = torch.matmul(self.dct, power_to_db(torch.matmul(self.mel, power)))  # (B, 20, T): librosa's mfcc
        delta = torch.zeros_like(mfcc)
        delta[..., 1:-1] = (mfcc[..., 2:] - mfcc[..., :-2]) / 2  # centred difference; the two ends stay 0
        # Centroid, bandwidth and roll-off weigh the magnitude spectrum, as librosa.feature.spectral_* do.
        magnitude = torch.sqrt(power)
        total = magnitude.sum(dim=1, keepdim=True) + EPS
        weights = magnitude / total
        centroid = (weights * self.freqs[:, None]).sum(dim=1, keepdim=True)
        bandwidth = torch.sqrt((weights * (self.freqs[:, None] - centroid) ** 2).sum(dim=1, keepdim=True))
        # The lowest bin whose cumulative magnitude reaches 85 % of the frame's (librosa's rule).
        reached = torch.cumsum(magnitude, dim=1) >= ROLLOFF * total
        rolloff = self.freqs[reached.float().argmax(dim=1, keepdim=True)]
        flat_power = power.clamp_min(EPS)
        flatness = torch.exp(torch.log(flat_power).mean(dim=1, keepdim=True)) / flat_power.mean(dim=1, keepdim=True)
        flux = torch.zeros_like(centroid)  # L2 change of the frame-normalised magnitude spectrum
        flux[..., 1:] = torch.sqrt(((weights[..., 1:] - weights[..., :-1]) ** 2).sum(dim=1, keepdim=True))
        log_energy = 10 * torch.log10(power.mean(dim=1, keepdim=True) + EPS)
        frames = torch.cat([mfcc, delta, centroid, bandwidth, rolloff, flatness, flux,
                            self._zero_crossings(wave, power.shape[-1]), log_energy], dim=1)
        return torch.cat([frames.mean(dim=-1), frames.std(dim=-1, unbiased=False)], dim=1)

    def _zero_crossings(self, wave: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Per STFT frame (the same centred n_fft samples), the share of neighbouring samples changing sign."""
        padded = nn.functional.pad(wave.unsqueeze(1), (self.n_fft // 2, self.n_fft // 2)).squeeze(1)
        frames = padded.unfold(-1, self.n_fft, self.hop)[:, :n_frames]  # (B, T, n_fft)
        signs = frames >= 0
        return (signs[..., 1:] != signs[..., :-1]).float().mean(dim=-1).unsqueeze(1)


def classical_available() -> str | None:
    """None when the classical member can be fitted and stored here, else why not (one line)."""
    try:
        import onnxruntime  # noqa: F401
        import skl2onnx  # noqa: F401
    except ImportError as exc:
        return f"the classical member is stored as ONNX and needs audioclf[deploy] ({exc.name} is missing): " \
               "pip install 'audioclf[deploy]'"
    return None


class StoredMember(ABC):
    """An ensemble member whose classifier is a stored ONNX graph: ``features`` (torch, per subclass) ->
    the graph -> probabilities. ``probabilities`` takes the same (B, N) windows as the CNN, so every member scores
    exactly the same windows."""

    kind = "member"  # for messages

    def __init__(self, onnx_bytes: bytes, n_classes: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.onnx_bytes = onnx_bytes
        self.n_classes = n_classes
        outputs = [o.name for o in self.session.get_outputs()]
        self._probs_output = next((name for name in outputs if "prob" in name), outputs[-1])

    @abstractmethod
    def features(self, windows: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, N) windows -> the stored graph's input."""

    def probabilities(self, windows: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.probabilities_of(self.features(windows))

    def probabilities_of(self, features: np.ndarray) -> np.ndarray:
        (probs,) = self.session.run([self._probs_output], {self.session.get_inputs()[0].name: features})
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape[1] != self.n_classes:
            raise ConfigError(f"{self.kind}: {probs.shape[1]} class probabilities, expected {self.n_classes}")
        return probs

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, self.onnx_bytes)  # never a half-written member

    @classmethod
    @abstractmethod
    def from_info(cls, onnx_bytes: bytes, info: dict[str, Any]) -> "StoredMember":
        """The member of a stored graph, with the settings ``members.json`` recorded for it."""

    @classmethod
    def load(cls, path: Path, info: dict[str, Any]):
        reason = classical_available()
        if reason is not None:
            raise ConfigError(f"{path}: {reason}")
        try:
            return cls.from_info(path.read_bytes(), info)
        except ConfigError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: cannot load the {cls.kind} ({exc})") from None
        except Exception as exc:  # ONNX Runtime's own errors for a damaged graph
            raise ConfigError(f"{path}: not a valid {cls.kind} ({str(exc).splitlines()[0]})") from None


class ClassicalMember(StoredMember):
    """A fitted classical member: :class:`UtteranceStatistics` -> the stored ONNX classifier -> probabilities."""

    kind = "classical member"

    def __init__(self, onnx_bytes: bytes, sample_rate: int, n_classes: int):
        super().__init__(onnx_bytes, n_classes)
        self.statistics = UtteranceStatistics(sample_rate)

    def features(self, windows: np.ndarray | torch.Tensor) -> np.ndarray:
        wave = windows if torch.is_tensor(windows) else torch.from_numpy(np.ascontiguousarray(windows))
        return self.statistics(wave.cpu()).numpy().astype(np.float32)

    @classmethod
    def from_info(cls, onnx_bytes: bytes, info: dict[str, Any]) -> "ClassicalMember":
        return cls(onnx_bytes, int(info["sample_rate"]), int(info["n_classes"]))
