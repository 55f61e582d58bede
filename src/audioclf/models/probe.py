"""The pretrained-embedding probe: a third ensemble member beside the network and the classical one.

The run's windows are resampled to the checkpoint's rate (soxr, :func:`audioclf.data.audio.resample`), turned
into that model's own log-mels (its published front-end parameters, through :mod:`audioclf.features`), passed
through the frozen AudioSet backbone, and its embedding is read by a linear classifier (scikit-learn's
``StandardScaler`` + ``LogisticRegression``, fitted in :mod:`audioclf.training.members`). The backbone, the
standardisation, the linear layer and the softmax are stored as one ONNX graph that takes the front-end's
features: the run folder holds everything (loading it needs neither the weights cache nor a pickle), and the
front-end stays in torch as the classical member's statistics do.

Which backbone: the cheapest good one first. Measured on this project's 2-core CPU (one thread, batches of 32
one-second windows, front-end included): EfficientAT mn04 1.9 ms a window, mn05 2.4, mn10 4.8, PANNs CNN6 25.5,
CNN10 37.8. mn10 (AudioSet mAP 0.471) costs a fifth of CNN6 (0.343), so ``train.probe=auto`` tries the cached
checkpoints in the order :data:`AUTO_PROBES`; CNN14 and the wider MobileNets are used only when named.

Front-ends, as their authors publish them:
- EfficientAT (Schmid et al. 2023): pre-emphasis 0.97, 32 kHz, n_fft 1024, window 800, hop 320, 128 mel bands
  up to 15 kHz, ``(log(mel + 1e-5) + 4.5) / 5``. Theirs builds the bands with Kaldi's mel-domain triangles and a
  symmetric Hann window; here the HTK-scale triangles and the periodic window of :mod:`audioclf.features` (the
  same band edges; small differences in each band's shape).
- PANNs (Kong et al. 2020): 32 kHz, n_fft 1024, hop 320, 64 slaney mel bands 50-14000 Hz, 10 log10 (no floor);
  ``bn0``'s pretrained statistics standardise the bands, as in the release.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..data.audio import resample
from ..errors import ConfigError
from ..features import FeatureConfig, FrontEnd
from .backbones import load_backbone_weights
from .classical import StoredMember
from .efficientat import WIDTHS, EfficientATMobileNet
from .panns import ConvBlock, ConvBlock5x5, PannsCNN
from .pretrained import CHECKPOINTS, Checkpoint, weights_cache

__all__ = ["AUTO_PROBES", "PROBE_BACKBONES", "ProbeBackbone", "ProbeClassifier", "ProbeMember", "cached_probe_path",
           "load_probe_backbone", "probe_onnx"]

ABSENT_LOGIT = -1e4  # a class no training window had: its softmax probability is exp(-1e4) = 0


@dataclass(frozen=True)
class ProbeBackbone:
    """A published backbone the probe can read: how to build it and its authors' front-end."""

    build: Callable[[], nn.Module]
    front_end: FeatureConfig
    preemphasis: float = 0.0  # y[n] = x[n] - preemphasis * x[n - 1], before the STFT
    shift: float = 0.0  # features -> (features + shift) / scale, after the log
    scale: float = 1.0

    @property
    def sample_rate(self) -> int:
        return self.front_end.sample_rate


_EFFICIENTAT_FRONT_END = FeatureConfig(sample_rate=32000, n_fft=1024, win_length=800, hop_length=320, n_mels=128,
                                       fmin=0.0, fmax=15000.0, mel_scale="htk", mel_norm=None, pad_mode="reflect",
                                       log="log", log_offset=1e-5, top_db=None)
_PANNS_FRONT_END = FeatureConfig(sample_rate=32000, n_fft=1024, hop_length=320, n_mels=64, fmin=50.0, fmax=14000.0,
                                 pad_mode="reflect", log="db", top_db=None)


def _efficientat(width: float) -> ProbeBackbone:
    return ProbeBackbone(lambda: EfficientATMobileNet(width), _EFFICIENTAT_FRONT_END, preemphasis=0.97, shift=4.5,
                         scale=5.0)


def _panns(n_blocks: int, block: type[nn.Module]) -> ProbeBackbone:
    return ProbeBackbone(lambda: PannsCNN(n_blocks, block, classes_num=None), _PANNS_FRONT_END)


PROBE_BACKBONES: dict[str, ProbeBackbone] = {
    **{name: _efficientat(width) for name, width in WIDTHS.items()},
    "cnn6": _panns(4, ConvBlock5x5), "cnn10": _panns(4, ConvBlock), "cnn14": _panns(6, ConvBlock),
}
# train.probe=auto: the first of these whose checkpoint is in the cache (cost per window above: mn10 is the best
# AudioSet model of the cheap ones; CNN6 is five times slower and still allowed, the rest only when named).
AUTO_PROBES = ("mn10", "mn05", "mn04", "cnn6")


def cached_probe_path(name: str) -> tuple[Checkpoint, Path]:
    """The published checkpoint of probe backbone ``name`` and where the weights cache keeps it."""
    checkpoint = CHECKPOINTS.get(name)
    return checkpoint, weights_cache() / checkpoint.filename


def load_probe_backbone(name: str, path: Path) -> nn.Module:
    """The frozen, eval-mode backbone ``name`` with the weights of ``path`` (a one-line ConfigError otherwise)."""
    backbone = PROBE_BACKBONES[name].build()
    load_backbone_weights(backbone, path, name)
    backbone.eval()
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    return backbone


class ProbeFrontEnd(nn.Module):
    """Waveform windows at the run's rate (B, N) -> the backbone's features (B, 1, F, T) at its own rate."""

    def __init__(self, name: str, sample_rate: int):
        super().__init__()
        self.spec = PROBE_BACKBONES[name]
        self.sample_rate = int(sample_rate)
        self.front_end = FrontEnd(self.spec.front_end)

    @torch.no_grad()
    def forward(self, windows: np.ndarray | torch.Tensor) -> torch.Tensor:
        wave = windows.cpu().numpy() if torch.is_tensor(windows) else np.asarray(windows, dtype=np.float32)
        # soxr resamples along axis 0: time first, one column per window.
        wave = torch.from_numpy(np.ascontiguousarray(resample(wave.T, self.sample_rate, self.spec.sample_rate).T))
        if self.spec.preemphasis:
            wave = wave[:, 1:] - self.spec.preemphasis * wave[:, :-1]
        return (self.front_end(wave) + self.spec.shift) / self.spec.scale


class ProbeClassifier(nn.Module):
    """Features (B, 1, F, T) -> the frozen backbone's embedding -> standardised -> linear -> softmax."""

    def __init__(self, backbone: nn.Module, mean: np.ndarray, scale: np.ndarray, weight: np.ndarray,
                 bias: np.ndarray):
        super().__init__()
        self.backbone = backbone.eval()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

    def embedding(self, features: torch.Tensor) -> torch.Tensor:
        return self.backbone.pool(self.backbone.forward_features(features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear((self.embedding(features) - self.mean) / self.scale), dim=1)


def probe_onnx(classifier: ProbeClassifier, example: torch.Tensor, opset: int = 17) -> bytes:
    """ONNX bytes of ``classifier`` (input ``features`` with any batch size and length, output ``probabilities``)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # As audioclf.deploy.export (a layer above, so not imported here): the TorchScript exporter, which needs
        # no onnxscript; its deprecation warning is noise.
        warnings.simplefilter("ignore")
        torch.onnx.export(classifier.eval(), (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=["features"], output_names=["probabilities"],
                          dynamic_axes={"features": {0: "batch", 3: "frames"}, "probabilities": {0: "batch"}},
                          do_constant_folding=True)
    return buffer.getvalue()


class ProbeMember(StoredMember):
    """A fitted probe: :class:`ProbeFrontEnd` in torch, then the stored ONNX graph (:class:`ProbeClassifier`)."""

    kind = "probe member"

    def __init__(self, onnx_bytes: bytes, backbone: str, sample_rate: int, n_classes: int):
        if backbone not in PROBE_BACKBONES:
            raise ConfigError(f"probe member: unknown backbone {backbone!r}; expected one of "
                              f"{', '.join(PROBE_BACKBONES)}")
        super().__init__(onnx_bytes, n_classes)
        self.backbone = backbone
        self.front_end = ProbeFrontEnd(backbone, sample_rate)

    def features(self, windows: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.front_end(windows).numpy().astype(np.float32)

    @classmethod
    def from_info(cls, onnx_bytes: bytes, info: dict[str, Any]) -> "ProbeMember":
        return cls(onnx_bytes, str(info["probe"]["backbone"]), int(info["sample_rate"]), int(info["n_classes"]))
