"""Raw-waveform 1-D CNNs M3, M5, M11, M18 and M34-res, here for speaker counting on LibriSpeech mixtures.

Dai, Dai, Qu, Li & Das (2016), "Very deep convolutional neural networks for raw waveforms"
(arXiv:1610.00087): a first convolution with a wide receptive field (kernel 80, stride 4) acting as a
learned band-pass filter bank, then kernel-3 convolutions in stages whose channel count doubles, max pooling
by 4 between stages, global average pooling over time and one linear layer. Every convolution is followed by
BatchNorm and ReLU; M34-res groups its convolutions in two-conv residual blocks.

Stages per model, with ``w = width`` the first-layer channels (the paper's table, channels divided by the
paper's first-layer width)::

    M3       conv80(w) | pool | [3, w]        | pool                                         | GAP
    M5       conv80(w) | pool | [3, w]        | pool | [3, 2w]    | pool | [3, 4w]    | pool | GAP
    M11      conv80(w) | pool | [3, w] x2     | pool | [3, 2w] x2 | pool | [3, 4w] x3 | pool | [3, 8w] x2 | GAP
    M18      conv80(w) | pool | [3, w] x4     | pool | [3, 2w] x4 | pool | [3, 4w] x4 | pool | [3, 8w] x4 | GAP
    M34-res  conv80(w) | pool | res[3, w] x3  | pool | res[3, 2w] x4 | pool | res[3, 4w] x6 | pool | res[3, 8w] x3 | GAP

A reference speaker-counting project used ``w = 32`` for every model and counts (3 classes) M3 5,923,
M5 37,507, M11 449,059 and M18 924,643 parameters; these modules reproduce those counts exactly (conv biases
kept, BatchNorm affine, a biased final Linear). That project also changed the first stride to 16 (4x fewer
MACs, same parameters): pass ``stride=16`` to reproduce its setup; the default follows the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .mlp import make_activation
from .registry import register_model

__all__ = [
    "WAVEFORM_STAGES",
    "ClampedMaxPool1d",
    "ResBlock1d",
    "RawWaveformCNN",
    "m3",
    "m5",
    "m11",
    "m18",
    "m34_res",
]

# (channel multiplier of `width`, number of conv layers or residual blocks) per stage after the first conv.
WAVEFORM_STAGES: dict[str, tuple[tuple[int, int], ...]] = {
    "m3": ((1, 1),),
    "m5": ((1, 1), (2, 1), (4, 1)),
    "m11": ((1, 2), (2, 2), (4, 3), (8, 2)),
    "m18": ((1, 4), (2, 4), (4, 4), (8, 4)),
    "m34_res": ((1, 3), (2, 4), (4, 6), (8, 3)),
}
# The paper pools after the first conv and after each of the first three stages (4 pools: 32000 -> 32 frames
# at stride 4); the fourth stage of M11/M18/M34-res runs at the last resolution before global pooling.
_POOLED_STAGES = 3


class ClampedMaxPool1d(nn.Module):
    """Max pooling by ``kernel`` (floor, stride = kernel) whose window shrinks to the sequence length when the
    sequence is shorter, so short inputs (few samples, large first stride) never pool to zero length."""

    def __init__(self, kernel: int):
        super().__init__()
        self.kernel = int(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = min(self.kernel, x.shape[-1])
        return x if kernel <= 1 else F.max_pool1d(x, kernel_size=kernel, stride=kernel)


def _conv_bn_act(c_in: int, c_out: int, activation: str) -> list[nn.Module]:
    # Conv bias kept although BatchNorm follows: the reference parameter counts above include it.
    return [nn.Conv1d(c_in, c_out, 3, padding=1), nn.BatchNorm1d(c_out), make_activation(activation)]


class ResBlock1d(nn.Module):
    """Two kernel-3 conv-BN layers with a skip connection, activation after the sum (He et al. 2016).

    When the channel count changes (first block of a stage) the skip is a 1x1 conv + BN projection.
    """

    def __init__(self, c_in: int, c_out: int, activation: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, 3, padding=1), nn.BatchNorm1d(c_out), make_activation(activation),
            nn.Conv1d(c_out, c_out, 3, padding=1), nn.BatchNorm1d(c_out),
        )
        self.shortcut = (nn.Identity() if c_in == c_out
                         else nn.Sequential(nn.Conv1d(c_in, c_out, 1), nn.BatchNorm1d(c_out)))
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class RawWaveformCNN(nn.Module):
    """(B, N) or (B, 1, N) waveform -> logits (B, n_classes). See the module docstring for the layout."""

    def __init__(
        self,
        n_classes: int,
        stages: Sequence[tuple[int, int]],
        width: int = 32,
        first_kernel: int = 80,
        stride: int = 4,
        pool: int = 4,
        residual: bool = False,
        activation: str = "relu",
    ):
        super().__init__()
        # Padding (kernel - stride) / 2 makes the first conv output exactly N / stride frames (the paper's
        # "output: 2000 x n" after pooling a 32000-sample input), like Keras' padding="same".
        layers: list[nn.Module] = [
            nn.Conv1d(1, width, first_kernel, stride=stride, padding=max(first_kernel - stride, 0) // 2),
            nn.BatchNorm1d(width),
            make_activation(activation),
            ClampedMaxPool1d(pool),
        ]
        channels = width
        for index, (multiplier, count) in enumerate(stages):
            out = width * multiplier
            for _ in range(count):
                if residual:
                    layers.append(ResBlock1d(channels, out, activation))
                else:
                    layers += _conv_bn_act(channels, out, activation)
                channels = out
            if index < _POOLED_STAGES:
                layers.append(ClampedMaxPool1d(pool))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # the registry's waveform layout (B, N); (B, 1, N) is accepted as well
            x = x.unsqueeze(1)
        return self.classifier(self.features(x).mean(dim=-1))  # global average pooling over time


def _build(name: str, n_classes: int, input_shape: tuple[int, ...], width: int, stride: int,
           activation: str) -> RawWaveformCNN:
    if int(width) != width or width < 1:
        raise ConfigError(f"{name}: width={width}; expected a positive int (first-layer channels)")
    if int(stride) != stride or not 1 <= stride <= 80:
        raise ConfigError(f"{name}: stride={stride}; expected an int in 1..80 (first conv, kernel 80)")
    if input_shape[0] < stride:
        raise ConfigError(f"{name}: input_shape={input_shape}; expected at least {stride} samples (the first stride)")
    make_activation(activation)  # fail on a bad name before building anything
    return RawWaveformCNN(n_classes, WAVEFORM_STAGES[name], width=int(width), stride=int(stride),
                          residual=name == "m34_res", activation=activation)


@register_model(input_kind="waveform", example_input=(16000,))
def m3(n_classes: int, input_shape: tuple[int, ...], width: int = 32, stride: int = 4,
       activation: str = "relu") -> RawWaveformCNN:
    """Dai et al. M3: conv80 + one kernel-3 layer. 5,923 parameters for 3 classes at width 32."""
    return _build("m3", n_classes, input_shape, width, stride, activation)


@register_model(input_kind="waveform", example_input=(16000,))
def m5(n_classes: int, input_shape: tuple[int, ...], width: int = 32, stride: int = 4,
       activation: str = "relu") -> RawWaveformCNN:
    """Dai et al. M5: 37,507 parameters for 3 classes at width 32; the speaker-count project's best (validation
    accuracy 79.37 % at its last epoch)."""
    return _build("m5", n_classes, input_shape, width, stride, activation)


@register_model(input_kind="waveform", example_input=(16000,))
def m11(n_classes: int, input_shape: tuple[int, ...], width: int = 32, stride: int = 4,
        activation: str = "relu") -> RawWaveformCNN:
    """Dai et al. M11: 449,059 parameters for 3 classes at width 32."""
    return _build("m11", n_classes, input_shape, width, stride, activation)


@register_model(input_kind="waveform", example_input=(16000,))
def m18(n_classes: int, input_shape: tuple[int, ...], width: int = 32, stride: int = 4,
        activation: str = "relu") -> RawWaveformCNN:
    """Dai et al. M18: 924,643 parameters for 3 classes at width 32."""
    return _build("m18", n_classes, input_shape, width, stride, activation)


@register_model(input_kind="waveform", example_input=(16000,))
def m34_res(n_classes: int, input_shape: tuple[int, ...], width: int = 32, stride: int = 4,
            activation: str = "relu") -> RawWaveformCNN:
    """Dai et al. M34-res: 3/4/6/3 residual blocks (the paper uses width 48; the speaker-count project skipped it)."""
    return _build("m34_res", n_classes, input_shape, width, stride, activation)
