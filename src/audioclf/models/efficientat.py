"""EfficientAT MobileNets (Schmid, Koutini and Widmer, "Efficient Large-Scale Audio Tagging via Transformer-to-CNN
Knowledge Distillation", ICASSP 2023): MobileNetV3-Large (Howard et al. 2019) on a one-channel log-mel image,
AudioSet-trained by distillation from PaSST transformers, at widths 0.4 to 4.0 (``mn04`` .. ``mn40``).

Module and parameter names follow the authors' release, so their AudioSet checkpoints (``mn10_as`` etc.) load
with ``strict=True``: ``features.0`` is the 3x3 stride-2 stem (1 input channel), ``features.1`` ..
``features.15`` the 15 inverted-residual blocks (``block.0`` expand, ``block.1`` depthwise, ``block.2`` the
squeeze-excitation on channels where the block has one, then the projection), ``features.16`` the 1x1 conv to
6x the last width, and ``classifier`` their MLP head (pool, 1280x width, Hardswish, dropout, AudioSet classes),
which transfer learning replaces. Parameter counts with that head and 527 classes match the release's table:
mn04 0.983 M, mn05 1.43 M, mn10 4.88 M, mn20 17.91 M.

Their front-end is 128 mel bands at 32 kHz (n_fft 1024, window 800, hop 320) of natural-log power with a fixed
shift and scale; here the classifier's own per-band standardisation takes that role (as ``input_scaling``
"standardized" does for PANNs), so any front-end setting works and the pretrained convolutions see inputs of a
similar range. Their BatchNorm uses eps 0.001, kept here because the running statistics were estimated with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from ..errors import ConfigError
from .backbones import build_transfer_model, check_head, load_backbone_weights
from .mobilenet import SequentialBackbone, init_like_torchvision, make_divisible
from .registry import register_model

__all__ = ["EfficientATMobileNet", "WIDTHS"]

# input channels, kernel, expanded channels, output channels, squeeze-excitation, Hardswish, stride:
# MobileNetV3-Large (Table 1 of Howard et al. 2019), as the EfficientAT models use it.
_BLOCKS = (
    (16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2), (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2), (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1), (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1), (160, 5, 960, 160, True, True, 1),
)
WIDTHS = {"mn04": 0.4, "mn05": 0.5, "mn10": 1.0, "mn20": 2.0, "mn30": 3.0, "mn40": 4.0}
_BatchNorm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def _conv_bn(inp: int, out: int, kernel: int, stride: int = 1, groups: int = 1,
             activation: type[nn.Module] | None = None) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm [-> activation]: keys ``.0`` and ``.1``."""
    layers: list[nn.Module] = [nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                               _BatchNorm(out)]
    if activation is not None:
        layers.append(activation(inplace=True))
    return nn.Sequential(*layers)


class _ChannelExcitation(nn.Module):
    """Squeeze-and-excitation over channels (Hu et al. 2018) with Linear layers and a sigmoid gate."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, squeezed)
        self.fc2 = nn.Linear(squeezed, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * scale[:, :, None, None]


class _Excitation(nn.Module):
    """The release's container for concurrent excitations (channel only here): key ``conc_se_layers.0``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conc_se_layers = nn.ModuleList([_ChannelExcitation(channels, make_divisible(channels // 4))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class _InvertedResidual(nn.Module):
    def __init__(self, inp: int, kernel: int, expanded: int, out: int, excite: bool, hardswish: bool, stride: int):
        super().__init__()
        activation = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != inp:
            layers.append(_conv_bn(inp, expanded, 1, activation=activation))
        layers.append(_conv_bn(expanded, expanded, kernel, stride, groups=expanded, activation=activation))
        if excite:
            layers.append(_Excitation(expanded))
        layers.append(_conv_bn(expanded, out, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class EfficientATMobileNet(SequentialBackbone):
    """The backbone at ``width``; ``classes_num`` adds the release's MLP head (for AudioSet inference). Blocks
    ``features.0`` (stem) .. ``features.16`` freeze one by one; the embedding (the release's too) is the final
    map averaged over frequency and time."""

    ignored_weight_prefixes = ("classifier.",)

    def __init__(self, width: float = 1.0, classes_num: int | None = None, dropout: float = 0.2):
        super().__init__()
        blocks = [(make_divisible(i * width), k, make_divisible(e * width), make_divisible(o * width), se, hs, s)
                  for i, k, e, o, se, hs, s in _BLOCKS]
        last = blocks[-1][3]
        self.feature_channels = self.embedding_dim = 6 * last
        layers: list[nn.Module] = [_conv_bn(1, blocks[0][0], 3, 2, activation=nn.Hardswish)]
        layers += [_InvertedResidual(*block) for block in blocks]
        layers.append(_conv_bn(last, self.feature_channels, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        hidden = make_divisible(1280 * width)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(self.feature_channels, hidden), nn.Hardswish(),
            nn.Dropout(dropout), nn.Linear(hidden, classes_num),
        ) if classes_num else None
        init_like_torchvision(self)  # as the authors' (torchvision's MobileNetV3 code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("EfficientATMobileNet(classes_num=None) has no classifier; use forward_features/pool")
        return self.classifier(self.forward_features(x))


def _efficientat(name: str, n_classes: int, input_shape: tuple[int, ...], head: str, weights: str | None,
                 freeze: str, head_hidden: Sequence[int], head_channels: Sequence[int], dropout: float,
                 embedding_norm: bool) -> nn.Module:
    check_head(head)
    if input_shape[0] != 1:
        raise ConfigError(f"{name}: input_shape={tuple(input_shape)}; expected 1 channel (a log-mel image)")
    backbone = EfficientATMobileNet(WIDTHS[name])
    if weights:
        load_backbone_weights(backbone, weights, name)
    return build_transfer_model(name, nn.Identity(), backbone, n_classes, head, head_hidden, head_channels,
                                dropout, freeze, embedding_norm)


def _register(name: str) -> None:
    def factory(
        n_classes: int,
        input_shape: tuple[int, ...],
        head: str = "linear",
        weights: str | None = None,
        freeze: str = "none",
        head_hidden: Sequence[int] = (512, 256),
        head_channels: Sequence[int] = (32, 64),
        dropout: float = 0.5,
        embedding_norm: bool = False,
    ) -> nn.Module:
        return _efficientat(name, n_classes, input_shape, head, weights, freeze, head_hidden, head_channels,
                            dropout, embedding_norm)

    factory.__name__ = name
    factory.__doc__ = (
        f"EfficientAT MobileNet at width {WIDTHS[name]} (AudioSet weights: ``weights=pretrained``) on a (1, F, T) "
        "log-mel image, plus a new head. ``freeze``: ``none`` | ``all`` | ``last:N`` of features.0..16; "
        "``head``, ``head_hidden``, ``head_channels``, ``dropout``, ``embedding_norm``: as for ``cnn14``.")
    register_model(input_kind="features", example_input=(1, 128, 100))(factory)


for _name in WIDTHS:
    _register(_name)
