"""2-D CNNs for speaker counting from dB spectrograms, after a reference speaker-counting project.

That project trained three variants with 1, 2 or 4 convolutional blocks and lists (3 classes)
483, 9,795 and 65,571 parameters and their maximum *training* accuracies (not validation) 58.616, 68.574 and
54.20 % (its Table III). Its architecture figures are not in the text, but those three parameter counts have
one natural reading, which this module reproduces exactly: blocks of Conv 3x3 (with bias) -> BatchNorm ->
ReLU -> 2x2 max pooling with 32, 32, 64, 64 channels, global average pooling and one Linear layer::

    1 block : (9*1*32 + 32) + 2*32 + (32*3 + 3)                                      =    483
    2 blocks: 483 - 99 + (9*32*32 + 32) + 2*32 + (32*3 + 3)                          =  9,795
    4 blocks: 9,795 - 99 + (9*32*64 + 64) + 2*64 + (9*64*64 + 64) + 2*64 + (64*3 + 3) = 65,571

Dropout: the 2-block model has two dropouts, 0.2 after the first block and 0.4 after the second; the
1-block model one and the 4-block model three (rates not given: 0.2, and 0.2 / 0.2 / 0.4 after blocks 2-4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .cnn import SafeMaxPool2d
from .mlp import make_activation
from .registry import register_model

__all__ = ["SPEAKER_CNN_CHANNELS", "REPORT_DROPOUT", "SpeakerCNN2d", "speaker_cnn2d"]

SPEAKER_CNN_CHANNELS: tuple[int, ...] = (32, 32, 64, 64)
# Dropout after each block (0 = none) for the reference project's three variants.
REPORT_DROPOUT: dict[int, tuple[float, ...]] = {1: (0.2,), 2: (0.2, 0.4), 4: (0.0, 0.2, 0.2, 0.4)}


class SpeakerCNN2d(nn.Module):
    """[Conv k x k (same) -> BN -> act -> MaxPool 2 -> (Dropout)] per block -> global average pool -> Linear."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        channels: Sequence[int],
        dropout: Sequence[float],
        kernel_size: int = 3,
        activation: str = "relu",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for out, rate in zip(channels, dropout, strict=True):
            layers += [nn.Conv2d(width, out, kernel_size, padding=kernel_size // 2), nn.BatchNorm2d(out),
                       make_activation(activation), SafeMaxPool2d()]
            if rate > 0:
                layers.append(nn.Dropout(rate))
            width = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(-2, -1)))


def _dropout_per_block(dropout: float | Sequence[float] | None, blocks: int) -> list[float]:
    if dropout is None:
        # Variants that project did not train (3 blocks, ...) get its 2-block rates, then 0.4.
        rates = REPORT_DROPOUT.get(blocks, (0.2, *([0.4] * (blocks - 1))))
    elif isinstance(dropout, int | float):
        rates = (float(dropout),) * blocks
    else:
        rates = tuple(float(r) for r in dropout)
        if len(rates) != blocks:
            raise ConfigError(f"speaker_cnn2d: dropout has {len(rates)} entries; expected one per block ({blocks})")
    if any(not 0.0 <= r < 1.0 for r in rates):
        raise ConfigError(f"speaker_cnn2d: dropout={dropout!r}; expected rates with 0 <= rate < 1")
    return list(rates)


# The project computed torchaudio's Spectrogram (n_fft 400, hop 200, power 2) and AmplitudeToDB (no top_db).
@register_model(input_kind="features", features={"kind": "spectrogram", "n_fft": 400, "hop_length": 200,
                                                 "power": 2.0, "log": "db", "top_db": None})
def speaker_cnn2d(
    n_classes: int,
    input_shape: tuple[int, ...],
    blocks: int = 2,
    channels: Sequence[int] = SPEAKER_CNN_CHANNELS,
    dropout: float | Sequence[float] | None = None,
    kernel_size: int = 3,
    activation: str = "relu",
) -> SpeakerCNN2d:
    """Speaker-counting 2-D CNN, ``blocks`` conv blocks (1, 2 or 4 in the reference; 2 was its best: maximum
    *training* accuracy over its 10 epochs 68.574 %, "accuracy máximo en Entrenamiento", its Table III).

    ``channels`` lists the channels of up to ``len(channels)`` blocks (the first ``blocks`` are used);
    ``dropout``: None for the reference project's rates, one rate for every block, or one rate per block.
    """
    channels = [int(c) for c in channels]
    if int(blocks) != blocks or not 1 <= blocks <= len(channels):
        raise ConfigError(f"speaker_cnn2d: blocks={blocks}; expected 1..{len(channels)} (one entry of channels each)")
    if any(c < 1 for c in channels):
        raise ConfigError(f"speaker_cnn2d: channels={channels}; expected positive ints")
    if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"speaker_cnn2d: kernel_size={kernel_size}; expected a positive odd int")
    blocks = int(blocks)
    return SpeakerCNN2d(input_shape[0], n_classes, channels[:blocks], _dropout_per_block(dropout, blocks),
                        int(kernel_size), activation)
