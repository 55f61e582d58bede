"""PANNs CNN6, CNN10 and CNN14 (Kong et al. 2020, "PANNs: Large-Scale Pretrained Audio Neural Networks for
Audio Pattern Recognition", IEEE/ACM TASLP 28) in plain torch, with the official release's parameter names.

CNN14 is six blocks of two 3x3 convolutions (64 .. 2048 channels), CNN10 four such blocks (64 .. 512), CNN6
four blocks of one 5x5 convolution (64 .. 512); each ends in global pooling over frequency, then max + mean
over time, and a fully connected embedding layer ``fc1``. ``model.weights=pretrained`` downloads the
publisher's AudioSet checkpoint (:mod:`audioclf.models.pretrained`).

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

__all__ = ["ConvBlock", "ConvBlock5x5", "PannsCNN", "Cnn14", "cnn6", "cnn10", "cnn14"]

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


class ConvBlock5x5(nn.Module):
    """One [Conv 5x5 (no bias) -> BatchNorm -> ReLU], then average pooling (PANNs ``ConvBlock5x5``, CNN6)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool_size: tuple[int, int] = (2, 2)) -> torch.Tensor:
        return _avg_pool(F.relu(self.bn1(self.conv1(x))), pool_size)


class PannsCNN(nn.Module):
    """A PANNs CNN on log-mel images (B, 1, F, T) (the official models start from a waveform instead).

    ``n_blocks`` blocks of ``block`` (:class:`ConvBlock` or :class:`ConvBlock5x5`), channels ``width`` doubling
    per block; the sixth block of CNN14 does not pool. ``embedding=False`` leaves out ``fc1`` (for heads that
    read the conv map); ``classes_num=None`` leaves out ``fc_audioset``. ``forward`` returns AudioSet *logits*
    (the official models return sigmoids).
    """

    def __init__(self, n_blocks: int = 6, block: type[nn.Module] = ConvBlock, classes_num: int | None = 527,
                 mel_bins: int = 64, width: int = 64, embedding: bool = True):
        super().__init__()
        channels = [width * 2**i for i in range(n_blocks)]
        self.n_blocks = n_blocks
        self.bn0 = nn.BatchNorm2d(mel_bins)
        self.conv_block1 = block(1, channels[0])
        for i in range(1, n_blocks):
            setattr(self, f"conv_block{i + 1}", block(channels[i - 1], channels[i]))
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
    def blocks(self) -> list[nn.Module]:
        return [getattr(self, f"conv_block{i}") for i in range(1, self.n_blocks + 1)]

    def freeze_blocks(self) -> dict[str, tuple[str, ...]]:
        """``bn0``, ``conv_block1`` .. ``conv_blockN`` and (when present) ``fc1``."""
        names = ["bn0", *(f"conv_block{i}" for i in range(1, self.n_blocks + 1))]
        names += ["fc1"] if self.fc1 is not None else []
        return {name: (name,) for name in names}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, T) -> (B, channels, T/2^k, F/2^k): the conv map, time first as in PANNs."""
        # bn0 normalises each mel band: put the bands on the channel axis and back.
        x = self.bn0(x.transpose(1, 2)).transpose(1, 2)
        # PANNs' weights were trained on (time, mel) images; our features are (mel, time).
        x = x.transpose(2, 3)
        for i, block in enumerate(self.blocks):
            x = block(x, pool_size=(2, 2) if i < 5 else (1, 1))  # CNN14's sixth block keeps its size
            x = F.dropout(x, p=0.2, training=self.training)
        return x

    def _pooled(self, fmap: torch.Tensor) -> torch.Tensor:
        x = fmap.mean(dim=3)  # over mel bands
        x = x.amax(dim=2) + x.mean(dim=2)  # max + mean over time
        return F.dropout(x, p=0.5, training=self.training)

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """The PANNs embedding (dropout included, as the official transfer model reads it)."""
        x = self._pooled(fmap)
        if self.fc1 is None:
            return x
        return F.dropout(F.relu(self.fc1(x)), p=0.5, training=self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc_audioset is None or self.fc1 is None:
            raise RuntimeError("Cnn14 without fc1/fc_audioset has no AudioSet output; use forward_features/pool")
        # As in PANNs, the AudioSet layer reads fc1's output before the embedding dropout.
        return self.fc_audioset(F.relu(self.fc1(self._pooled(self.forward_features(x)))))


class Cnn14(PannsCNN):
    """CNN14: six :class:`ConvBlock` s, 64 .. 2048 channels (80,753,615 parameters with 527 classes)."""

    def __init__(self, classes_num: int | None = 527, mel_bins: int = 64, width: int = 64, embedding: bool = True):
        super().__init__(6, ConvBlock, classes_num, mel_bins, width, embedding)


def _panns(name: str, n_blocks: int, block: type[nn.Module], n_classes: int, input_shape: tuple[int, ...], head: str,
           weights: str | None, freeze: str, input_scaling: str, head_hidden: Sequence[int],
           head_channels: Sequence[int], dropout: float, width: int, embedding_norm: bool = False) -> nn.Module:
    check_head(head)
    if input_shape[0] != 1:
        raise ConfigError(f"{name}: input_shape={tuple(input_shape)}; expected 1 channel (a log-mel image)")
    if input_scaling not in _SCALINGS:
        raise ConfigError(f"{name}: input_scaling={input_scaling!r}; expected one of {', '.join(_SCALINGS)}")
    if int(width) != width or width < 1:
        raise ConfigError(f"{name}: width={width}; expected a positive int")
    backbone = PannsCNN(n_blocks, block, classes_num=None, mel_bins=input_shape[1], width=int(width),
                        embedding=head != "simple_cnn")
    if weights:
        load_backbone_weights(backbone, weights, name)
    if input_scaling == "standardized":
        backbone.bn0.reset_running_stats()
    return build_transfer_model(name, nn.Identity(), backbone, n_classes, head, head_hidden, head_channels,
                                dropout, freeze, embedding_norm)


@register_model(input_kind="features", example_input=(1, 64, 1001))
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
    embedding_norm: bool = False,
) -> nn.Module:
    """PANNs CNN14 backbone (audio-pretrained on AudioSet) on a (1, F, T) log-mel image, plus a new head.

    ``head="linear"`` on the 2048-d embedding is PANNs' own transfer recipe (``Transfer_Cnn14``).
    ``weights``: an official PANNs checkpoint (or an audioclf run checkpoint); needs F = 64 mel bands.
    ``freeze``: ``none`` | ``all`` | ``last:N`` of bn0, conv_block1..6, fc1. ``input_scaling``:
    ``"standardized"`` (our classifier already standardises each band, so bn0's pretrained running
    statistics are reset to mean 0 / variance 1 and bn0 keeps only its learned per-band scale and shift)
    or ``"raw"`` (keep them: for inputs that are raw PANNs log-mels). ``width``: first-block channels.
    ``embedding_norm``: standardise the embedding before the head, with training-set statistics (set by
    ``train.frozen_embeddings``, whose linear probe depends on the embedding's scale).
    """
    return _panns("cnn14", 6, ConvBlock, n_classes, input_shape, head, weights, freeze, input_scaling, head_hidden,
                  head_channels, dropout, width, embedding_norm)


@register_model(input_kind="features", example_input=(1, 64, 1001))
def cnn10(
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
    embedding_norm: bool = False,
) -> nn.Module:
    """PANNs CNN10 (four blocks of two 3x3 convolutions, 64 .. 512 channels, AudioSet mAP 0.380) plus a new
    head; arguments as for :func:`cnn14`."""
    return _panns("cnn10", 4, ConvBlock, n_classes, input_shape, head, weights, freeze, input_scaling, head_hidden,
                  head_channels, dropout, width, embedding_norm)


@register_model(input_kind="features", example_input=(1, 64, 1001))
def cnn6(
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
    embedding_norm: bool = False,
) -> nn.Module:
    """PANNs CNN6 (four blocks of one 5x5 convolution, 64 .. 512 channels, AudioSet mAP 0.343) plus a new head;
    arguments as for :func:`cnn14`."""
    return _panns("cnn6", 4, ConvBlock5x5, n_classes, input_shape, head, weights, freeze, input_scaling, head_hidden,
                  head_channels, dropout, width, embedding_norm)
