"""PANNs CNN14 (Kong et al. 2020, "PANNs: Large-Scale Pretrained Audio Neural Networks for Audio Pattern
Recognition", IEEE/ACM TASLP 28) in plain torch, with the official release's parameter names.

The official checkpoints (``Cnn14_mAP=0.431.pth``: ``{"model": state_dict, ...}`` with ``bn0``,
``conv_block1.conv1.weight`` .. ``conv_block6``, ``fc1``, ``fc_audioset`` and the torchlibrosa front-end
``spectrogram_extractor.*`` / ``logmel_extractor.*``) load into :class:`Cnn14` with ``strict=True`` once the
front-end keys are dropped (we compute log-mels in :mod:`audioclf.features`); ``cnn14(weights=path)`` takes
the backbone part. 527 classes give 80,753,615 parameters, the count in Table XII of the paper.

The pretrained weights expect PANNs' features: 64 log-mel bands (dB), 32 kHz, 1024-sample window, hop 320,
50-14000 Hz; ``bn0`` has one channel per mel band, so other band counts do not fit the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .backbones import build_transfer_model, check_head, load_backbone_weights
from .registry import register_model

__all__ = ["ConvBlock", "Cnn14", "cnn14"]

_SCALINGS = ("standardized", "raw")
_FRONT_END_KEYS = ("spectrogram_extractor.", "logmel_extractor.")


def _avg_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PANNs' average pooling, except that an axis already down to 1 is left alone (short/narrow inputs)."""
    kernel = tuple(k if n >= k else 1 for k, n in zip(size, x.shape[-2:], strict=True))
    return x if kernel == (1, 1) else F.avg_pool2d(x, kernel_size=kernel)


class ConvBlock(nn.Module):
    """Two [Conv 3x3 (no bias) -> BatchNorm -> ReLU], then average pooling (PANNs ``ConvBlock``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool_size: tuple[int, int] = (2, 2)) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return _avg_pool(x, pool_size)


class Cnn14(nn.Module):
    """CNN14 on log-mel images (B, 1, F, T) (the official model starts from a waveform instead).

    ``width``: channels of the first block (64 in PANNs; they double per block to 32 x width = 2048).
    ``embedding=False`` leaves out ``fc1`` (for heads that read the conv map); ``classes_num=None`` leaves
    out ``fc_audioset``. ``forward`` returns AudioSet *logits* (the official model returns sigmoids).
    """

    def __init__(self, classes_num: int | None = 527, mel_bins: int = 64, width: int = 64, embedding: bool = True):
        super().__init__()
        channels = [width * 2**i for i in range(6)]
        self.bn0 = nn.BatchNorm2d(mel_bins)
        self.conv_block1 = ConvBlock(1, channels[0])
        for i in range(1, 6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(channels[i - 1], channels[i]))
        self.feature_channels = self.embedding_dim = channels[-1]
        self.fc1 = nn.Linear(channels[-1], channels[-1]) if embedding else None
        self.fc_audioset = nn.Linear(channels[-1], classes_num) if classes_num else None
        self.ignored_weight_prefixes = _FRONT_END_KEYS + ("fc_audioset.",) + (() if embedding else ("fc1.",))
        # PANNs' initialisation: Xavier-uniform weights, zero biases, BatchNorm 1/0.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def blocks(self) -> list[ConvBlock]:
        return [getattr(self, f"conv_block{i}") for i in range(1, 7)]

    def freeze_blocks(self) -> dict[str, tuple[str, ...]]:
        """``bn0``, ``conv_block1`` .. ``conv_block6`` and (when present) ``fc1``."""
        names = ["bn0", *(f"conv_block{i}" for i in range(1, 7))] + (["fc1"] if self.fc1 is not None else [])
        return {name: (name,) for name in names}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, T) -> (B, 32 x width, T/32, F/32): the conv map, time first as in PANNs."""
        # bn0 normalises each mel band: put the bands on the channel axis and back.
        x = self.bn0(x.transpose(1, 2)).transpose(1, 2)
        # PANNs' weights were trained on (time, mel) images; our features are (mel, time).
        x = x.transpose(2, 3)
        for i, block in enumerate(self.blocks):
            x = block(x, pool_size=(2, 2) if i < 5 else (1, 1))
            x = F.dropout(x, p=0.2, training=self.training)
        return x

    def _pooled(self, fmap: torch.Tensor) -> torch.Tensor:
        x = fmap.mean(dim=3)  # over mel bands
        x = x.amax(dim=2) + x.mean(dim=2)  # max + mean over time
        return F.dropout(x, p=0.5, training=self.training)

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """The 2048-d PANNs embedding (dropout included, as the official transfer model reads it)."""
        x = self._pooled(fmap)
        if self.fc1 is None:
            return x
        return F.dropout(F.relu(self.fc1(x)), p=0.5, training=self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc_audioset is None or self.fc1 is None:
            raise RuntimeError("Cnn14 without fc1/fc_audioset has no AudioSet output; use forward_features/pool")
        # As in PANNs, the AudioSet layer reads fc1's output before the embedding dropout.
        return self.fc_audioset(F.relu(self.fc1(self._pooled(self.forward_features(x)))))


@register_model(input_kind="features")
def cnn14(
    n_classes: int,
    input_shape: tuple[int, ...],
    head: str = "linear",
    weights: str | None = None,
    freeze: str = "none",
    input_scaling: str = "standardized",
    head_hidden: Sequence[int] = (512, 256),
    head_channels: Sequence[int] = (32, 64),
    dropout: float = 0.5,
    width: int = 64,
) -> nn.Module:
    """PANNs CNN14 backbone (audio-pretrained on AudioSet) on a (1, F, T) log-mel image, plus a new head.

    ``head="linear"`` on the 2048-d embedding is PANNs' own transfer recipe (``Transfer_Cnn14``).
    ``weights``: an official PANNs checkpoint (or an audioclf run checkpoint); needs F = 64 mel bands.
    ``freeze``: ``none`` | ``all`` | ``last:N`` of bn0, conv_block1..6, fc1. ``input_scaling``:
    ``"standardized"`` (our classifier already standardises each band, so bn0's pretrained running
    statistics are reset to mean 0 / variance 1 and bn0 keeps only its learned per-band scale and shift)
    or ``"raw"`` (keep them: for inputs that are raw PANNs log-mels). ``width``: first-block channels.
    """
    check_head(head)
    if input_shape[0] != 1:
        raise ConfigError(f"cnn14: input_shape={tuple(input_shape)}; expected 1 channel (a log-mel image)")
    if input_scaling not in _SCALINGS:
        raise ConfigError(f"cnn14: input_scaling={input_scaling!r}; expected one of {', '.join(_SCALINGS)}")
    if int(width) != width or width < 1:
        raise ConfigError(f"cnn14: width={width}; expected a positive int")
    backbone = Cnn14(classes_num=None, mel_bins=input_shape[1], width=int(width), embedding=head != "simple_cnn")
    if weights:
        load_backbone_weights(backbone, weights, "cnn14")
    if input_scaling == "standardized":
        backbone.bn0.reset_running_stats()
    return build_transfer_model("cnn14", nn.Identity(), backbone, n_classes, head, head_hidden, head_channels,
                                dropout, freeze)
