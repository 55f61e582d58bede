"""Low-complexity acoustic scene classification models for DCASE 2022 Task 1 (TAU Urban Acoustic Scenes 2022 Mobile).

Teacher and student follow E. M. González Poy, "Aumento de audio y compresión de modelos para clasificación de
escenas acústicas" (master's thesis, UNIR, 2022); the table numbers below are that thesis's.

* ``dcase2022_baseline`` (Table 3): the official DCASE 2022 Task 1 baseline CNN.
* ``asc_teacher`` (Table 4): his ResNet-style teacher (5 stages, ~3.98M parameters).
* ``asc_student`` (Table 5): his plain CNN student (32 filters, 57,856 parameters), the model that is
  distilled from the teacher and quantised to INT8.

Parameter counts differ by framework, and the sources quote three different things:

* Keras ``model.summary()`` counts BatchNorm moving mean/variance as (non-trainable) parameters; in PyTorch
  they are buffers. The teacher's 3,980,960 and the student's 57,856 are Keras counts: they equal our
  parameters plus the ``running_mean``/``running_var`` elements exactly.
* The baseline's 46,512 is the TFLite "weight size" in bytes after INT8 quantisation, with BatchNorm folded
  into the preceding convolution: one byte per conv/dense weight plus a 4-byte (int32) bias per output
  channel. ``tests/test_report_models.py`` derives all three numbers from these modules.

All convolutions use "same" padding (Keras ``padding="same"``; PyTorch pads an even kernel such as the
student's (6, 5) one more at the end, as TensorFlow does) and keep their bias, as Keras does by default.
Pooling windows shrink to the feature map when it is smaller (:class:`ClampedMaxPool2d`), so every model
also runs on inputs smaller than the 40 x 51 / 80 x 51 log-mels of the thesis.
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
    "ClampedMaxPool2d",
    "SameConv2d",
    "ConvBlock2d",
    "DCASEBaseline",
    "ASCResNet",
    "TEACHER_STAGES",
    "STUDENT_STAGES",
    "dcase2022_baseline",
    "asc_teacher",
    "asc_student",
]


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def clamped_size(size: int, kernel: int) -> int:
    """Output length of :class:`ClampedMaxPool2d` along one axis of length ``size``."""
    return size // min(kernel, size)


class ClampedMaxPool2d(nn.Module):
    """``kernel`` x ``kernel`` max pooling (floor, stride = kernel, like Keras ``padding="valid"``) whose window
    shrinks to the feature map along an axis that is shorter than the kernel, instead of pooling to size 0."""

    def __init__(self, kernel: int | Sequence[int]):
        super().__init__()
        self.kernel = _pair(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = tuple(min(k, size) for k, size in zip(self.kernel, x.shape[-2:]))
        return x if kernel == (1, 1) else F.max_pool2d(x, kernel_size=kernel, stride=kernel)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}"


class SameConv2d(nn.Conv2d):
    """Stride-1 convolution with TensorFlow's ``padding="same"``: an even kernel gets the extra row/column of
    zeros at the end. (PyTorch's own ``padding="same"`` does the same but warns on every even-kernel call.)"""

    def __init__(self, c_in: int, c_out: int, kernel: int | Sequence[int]):
        kh, kw = _pair(kernel)
        odd = kh % 2 == 1 and kw % 2 == 1
        super().__init__(c_in, c_out, (kh, kw), padding=(kh // 2, kw // 2) if odd else 0)
        # F.pad order: (left, right, top, bottom); TensorFlow puts floor((k - 1) / 2) before.
        self.pad = None if odd else ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x if self.pad is None else F.pad(x, self.pad))


def _conv_bn(c_in: int, c_out: int, kernel: int | Sequence[int]) -> list[nn.Module]:
    return [SameConv2d(c_in, c_out, kernel), nn.BatchNorm2d(c_out)]


def _check_rate(name: str, dropout: float) -> float:
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"{name}: dropout={dropout}; expected 0 <= dropout < 1")
    return float(dropout)


# --- DCASE 2022 baseline ------------------------------------------------------------------------
class DCASEBaseline(nn.Module):
    """Conv16 7x7-BN-act, Conv16 7x7-BN-act, MaxPool(5,5), Dropout, Conv32 7x7-BN-act, MaxPool(4,10), Dropout,
    Flatten, Dense(hidden)-act, Dropout, Dense(n_classes) (logits; the softmax belongs to the loss)."""

    def __init__(self, input_shape: tuple[int, int, int], n_classes: int, hidden: int = 100,
                 dropout: float = 0.3, activation: str = "relu"):
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            *_conv_bn(channels, 16, 7), make_activation(activation),
            *_conv_bn(16, 16, 7), make_activation(activation),
            ClampedMaxPool2d((5, 5)), nn.Dropout(dropout),
            *_conv_bn(16, 32, 7), make_activation(activation),
            ClampedMaxPool2d((4, 10)), nn.Dropout(dropout),
        )
        height = clamped_size(clamped_size(height, 5), 4)
        width = clamped_size(clamped_size(width, 5), 10)
        # 40 x 51 -> 8 x 10 -> 2 x 1: 64 inputs to the dense layer, as in the official Keras summary.
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * height * width, hidden), make_activation(activation),
            nn.Dropout(dropout), nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(input_kind="features", example_input=(1, 40, 51))
def dcase2022_baseline(
    n_classes: int,
    input_shape: tuple[int, ...],
    hidden: int = 100,
    dropout: float = 0.3,
    activation: str = "relu",
) -> DCASEBaseline:
    """DCASE 2022 Task 1 baseline (Table 3 of González Poy 2022; 40 mels x 51 frames of 1 s at 44.1 kHz, 40-ms windows,
    50% hop). Official figures: 46,512 bytes of INT8 weights, 29.23 MMACs; log loss 1.575, accuracy 42.9%
    after 200 epochs of Adam 1e-3, batch 16. The official README lists the second pooling as (4, 100) (from
    the 10-s 2021 baseline) but shows its output as 2 x 1, which (4, 10) gives on 8 x 10 as the thesis says."""
    if int(hidden) != hidden or hidden < 1:
        raise ConfigError(f"dcase2022_baseline: hidden={hidden}; expected a positive int")
    return DCASEBaseline(tuple(input_shape), n_classes, int(hidden), _check_rate("dcase2022_baseline", dropout),
                         activation)


# --- teacher and student ------------------------------------------------------------------------
class ConvBlock2d(nn.Module):
    """González Poy's residual block: W1 conv -> BN -> act -> W2 conv -> BN (+ skip) -> act -> SpatialDropout2D.

    ``skip``: ``"none"`` (the student's plain blocks), ``"identity"`` or ``"projection"`` (1x1 conv + BN, the
    teacher's "Bloque SC"; needed where the channel count changes). SpatialDropout2D = ``nn.Dropout2d``:
    it drops whole feature maps rather than single activations (Tompson et al. 2015).
    """

    def __init__(self, c_in: int, c_out: int, kernels: tuple[int, int], activation: str, dropout: float,
                 skip: str = "identity"):
        super().__init__()
        if skip not in ("none", "identity", "projection"):
            raise ValueError(f"skip={skip!r}; expected 'none', 'identity' or 'projection'")
        if skip == "identity" and c_in != c_out:
            raise ValueError(f"an identity skip needs c_in == c_out, got {c_in} -> {c_out}")
        self.body = nn.Sequential(
            *_conv_bn(c_in, c_out, kernels[0]), make_activation(activation), *_conv_bn(c_out, c_out, kernels[1])
        )
        self.skip = skip
        self.shortcut = nn.Sequential(*_conv_bn(c_in, c_out, 1)) if skip == "projection" else None
        self.act = make_activation(activation)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.skip == "identity":
            out = out + x
        elif self.skip == "projection":
            out = out + self.shortcut(x)
        return self.dropout(self.act(out))


# One row per block: (filters, (W1, W2) kernels, skip, max-pool window applied *before* the block or None).
# Teacher (Table 4): the (2, 2) pool follows block 2.1, i.e. precedes block 2.2.
TEACHER_STAGES: tuple[tuple[int, tuple[int, int], str, tuple[int, int] | None], ...] = (
    (128, (3, 1), "identity", None),
    (128, (3, 3), "identity", (2, 2)),
    (128, (3, 3), "identity", None),
    (128, (3, 3), "identity", None),
    (256, (3, 1), "projection", None),
    (256, (1, 1), "identity", None),
    (256, (1, 1), "identity", None),
    (256, (1, 1), "identity", None),
    (512, (1, 1), "projection", None),
    (512, (1, 1), "identity", None),
    (512, (1, 1), "identity", None),
    (512, (1, 1), "identity", None),
)
# Student (Table 5): stages 2-4 are one plain block each; (2, 2) and (5, 2) pools precede stages 2 and 3.
STUDENT_STAGES: tuple[tuple[int, tuple[int, int], str, tuple[int, int] | None], ...] = (
    (32, (3, 3), "none", (2, 2)),
    (32, (3, 3), "none", (5, 2)),
    (32, (3, 3), "none", None),
)


class ASCResNet(nn.Module):
    """Stem conv + BN -> blocks (with optional max pools) -> 1x1 conv to ``n_classes`` + BN -> global average
    pooling -> Dense(n_classes). Tables 4 and 5 list no activation after the stem or the 1x1 conv; we follow
    them (the blocks carry the non-linearities)."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        stem_filters: int,
        stem_kernel: int | Sequence[int],
        stages: Sequence[tuple[int, tuple[int, int], str, tuple[int, int] | None]],
        activation: str,
        dropout: float,
    ):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, stem_filters, stem_kernel))
        layers: list[nn.Module] = []
        channels = stem_filters
        for filters, kernels, skip, pool in stages:
            if pool is not None:
                layers.append(ClampedMaxPool2d(pool))
            layers.append(ConvBlock2d(channels, filters, kernels, activation, dropout, skip))
            channels = filters
        self.blocks = nn.Sequential(*layers)
        # González Poy's output stage: Conv2D(10, 1) + BN, GAP, Dense(10) for its 10 scenes; here n_classes.
        self.to_classes = nn.Sequential(*_conv_bn(channels, n_classes, 1))
        self.classifier = nn.Linear(n_classes, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.to_classes(self.blocks(self.stem(x)))
        return self.classifier(h.mean(dim=(-2, -1)))


@register_model(input_kind="features", example_input=(1, 40, 51))
def asc_teacher(
    n_classes: int,
    input_shape: tuple[int, ...],
    activation: str = "elu",
    dropout: float = 0.2,
) -> ASCResNet:
    """Teacher of González Poy (2022), Table 4: stem Conv 128 @ 5x5 + BN; stage 2: four 128-filter blocks (a 2x2 max
    pool after the first); stages 3 and 4: four 256- and four 512-filter blocks, the first of each with a 1x1
    conv shortcut ("Bloque SC"), the others with identity skips; output Conv 1x1 + BN, GAP, Dense.
    3,980,960 Keras parameters for 10 classes. ELU beat ReLU and Swish in the thesis (log loss 1.556 vs 1.638 /
    1.653). The SpatialDropout2D rate is not given in the thesis; 0.2 is our default."""
    return ASCResNet(input_shape[0], n_classes, 128, 5, TEACHER_STAGES, activation,
                     _check_rate("asc_teacher", dropout))


@register_model(input_kind="features", example_input=(1, 80, 51))
def asc_student(
    n_classes: int,
    input_shape: tuple[int, ...],
    filters: int = 32,
    activation: str = "elu",
    dropout: float = 0.2,
    skip: str = "none",
) -> ASCResNet:
    """Student of González Poy (2022), Table 5, a plain ("linear") CNN: stem Conv ``filters`` @ (6, 5) + BN; MaxPool
    (2, 2), block; MaxPool (5, 2), block; block -- each block two 3x3 conv + BN + activation without skip;
    output Conv 1x1 + BN, GAP, Dense. 57,856 Keras parameters and ~26.1 MMACs on 80 x 51 log-mels (the
    thesis's final input), within the DCASE limits of 128K INT8 parameters and 30 MMACs.
    ``skip="identity"``: the other reading of "bloque residual sin SC" (§4.4), an identity skip in each block as
    in the teacher's blocks without "SC"; same parameters (README, S4 "Counting" weighs the two)."""
    if int(filters) != filters or filters < 1:
        raise ConfigError(f"asc_student: filters={filters}; expected a positive int")
    if skip not in ("none", "identity"):
        raise ConfigError(f"asc_student: skip={skip!r}; expected none (a plain CNN) or identity")
    stages = tuple((int(filters), kernels, skip, pool) for _, kernels, _, pool in STUDENT_STAGES)
    return ASCResNet(input_shape[0], n_classes, int(filters), (6, 5), stages, activation,
                     _check_rate("asc_student", dropout))
