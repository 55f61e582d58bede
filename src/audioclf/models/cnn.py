"""2-D CNNs on feature images (B, C, F, T): the FSD2019 simple CNN of a reference solution and ``small_cnn``.

Both end in global pooling, so they accept any number of frames (and of feature bins): short DCASE clips
(40 x 51), 3-s FSD windows (80 x 92) and long recordings alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .mlp import make_activation
from .registry import register_model

__all__ = ["SafeMaxPool2d", "FSDSimpleCNN", "SmallCNN", "fsd_simple_cnn", "small_cnn"]


class SafeMaxPool2d(nn.Module):
    """2 x 2 max pooling (floor, like Keras ``MaxPooling2D`` with ``padding="valid"``) that leaves an axis
    alone once it has shrunk to 1, so tiny inputs (few mel bins, few frames) never pool to zero size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = tuple(2 if size >= 2 else 1 for size in x.shape[-2:])
        if kernel == (1, 1):
            return x
        return F.max_pool2d(x, kernel_size=kernel, stride=kernel)


def _channels(value: Sequence[int] | int, name: str) -> list[int]:
    channels = [int(value)] if isinstance(value, int) else [int(c) for c in value]
    if not channels or any(c < 1 for c in channels):
        raise ConfigError(f"{name}: channels={value!r}; expected one positive int per conv block")
    return channels


def _check_common(name: str, kernel_size: int, dropout: float) -> None:
    if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
        # Odd kernels keep "same" padding symmetric, as Keras' padding="same" does for odd kernels.
        raise ConfigError(f"{name}: kernel_size={kernel_size}; expected a positive odd int")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"{name}: dropout={dropout}; expected 0 <= dropout < 1")


class FSDSimpleCNN(nn.Module):
    """A reference FSD2019 solution's ``make_model``: [BatchNorm -> Conv k x k (same) -> act -> MaxPool 2] per block,
    GlobalAveragePooling, BatchNorm, Dense(hidden) + act, Dropout, Dense(n_classes) (logits)."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        channels: Sequence[int],
        hidden: int,
        dropout: float,
        kernel_size: int,
        activation: str,
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for out in channels:
            blocks += [
                nn.BatchNorm2d(width),
                # Conv bias kept: that solution's Keras count (37,650 trainable) includes it.
                nn.Conv2d(width, out, kernel_size, padding=kernel_size // 2),
                make_activation(activation),
                SafeMaxPool2d(),
            ]
            width = out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.BatchNorm1d(width),
            nn.Linear(width, hidden),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(-2, -1)))  # global average pooling


@register_model(input_kind="features", example_input=(1, 80, 92))
def fsd_simple_cnn(
    n_classes: int,
    input_shape: tuple[int, ...],
    channels: Sequence[int] = (32, 64),
    hidden: int = 128,
    dropout: float = 0.5,
    kernel_size: int = 3,
    activation: str = "relu",
) -> FSDSimpleCNN:
    """Simple CNN of a reference FSD2019 solution (37,844 Keras params for 80 classes).

    That solution gives no dropout rate; 0.5 is the rate Srivastava et al. (2014, JMLR 15, "Dropout: a simple
    way to prevent neural networks from overfitting") recommend for hidden units. Its
    ``make_model`` divides its 0-255 input by 255; here inputs arrive already standardised by the
    classifier's front-end, so that rescaling is left out. BatchNorm uses PyTorch's defaults (Keras: momentum 0.99, eps 1e-3).
    """
    _check_common("fsd_simple_cnn", kernel_size, dropout)
    if int(hidden) < 1:
        raise ConfigError(f"fsd_simple_cnn: hidden={hidden}; expected a positive int")
    return FSDSimpleCNN(input_shape[0], n_classes, _channels(channels, "fsd_simple_cnn"), int(hidden),
                        float(dropout), int(kernel_size), activation)


class SmallCNN(nn.Module):
    """[Conv k x k -> BN -> act -> MaxPool 2] per block, then global average + max pooling (concatenated),
    Dropout and a Linear layer (logits)."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        channels: Sequence[int],
        dropout: float,
        kernel_size: int,
        activation: str,
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for out in channels:
            blocks += [
                # No conv bias: the BatchNorm right after it subtracts any constant offset anyway.
                nn.Conv2d(width, out, kernel_size, padding=kernel_size // 2, bias=False),
                nn.BatchNorm2d(out),
                make_activation(activation),
                SafeMaxPool2d(),
            ]
            width = out
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        # Average pooling summarises the whole clip; max pooling keeps short events that the average
        # would dilute in long inputs.
        pooled = torch.cat([h.mean(dim=(-2, -1)), h.amax(dim=(-2, -1))], dim=1)
        return self.classifier(self.dropout(pooled))


@register_model(input_kind="features", example_input=(1, 64, 101))
def small_cnn(
    n_classes: int,
    input_shape: tuple[int, ...],
    channels: Sequence[int] = (16, 32, 64, 128),
    dropout: float = 0.3,
    kernel_size: int = 3,
    activation: str = "relu",
) -> SmallCNN:
    """The zero-config default: 4 Conv-BN-ReLU-Pool blocks (16/32/64/128 channels, ~100K parameters),
    global average + max pooling, dropout 0.3, linear. About 46 MMACs on a 64-mel x 201-frame input."""
    _check_common("small_cnn", kernel_size, dropout)
    return SmallCNN(input_shape[0], n_classes, _channels(channels, "small_cnn"), float(dropout),
                    int(kernel_size), activation)
