"""MobileNetV2 (Sandler et al. 2018) in plain torch, with torchvision's module and parameter names.

``features.0`` is the 3x3 stem, ``features.1``..``features.17`` the 17 inverted-residual blocks (the
"stages" of a reference FSD2019 solution), ``features.18`` the final 1x1 conv to 1280 channels and ``classifier.1`` the
ImageNet layer (3,504,872 parameters for 1000 classes, torchvision's documented count). A torchvision
``mobilenet_v2`` state_dict file loads with ``strict=True``; ``mobilenet_v2(weights=path)`` takes all but
``classifier``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .backbones import ImageInput, build_transfer_model, check_head, load_backbone_weights
from .registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2", "SequentialBackbone", "init_like_torchvision", "make_divisible",
           "mobilenet_v2"]

# t (expansion), c (channels), n (repeats), s (first stride): Table 2 of the paper.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
             (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding (to a multiple of 8, never more than 10% below ``value``)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn_relu6(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: keys ``.0`` (conv, no bias), ``.1`` (BatchNorm)."""
    return nn.Sequential(
        nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """(1x1 expand) -> 3x3 depthwise -> 1x1 linear projection, with a residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = [_conv_bn_relu6(inp, hidden, kernel=1)] if expand_ratio != 1 else []
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def init_like_torchvision(module: nn.Module) -> None:
    """torchvision's MobileNet initialisation: He-normal (fan-out) convolutions, unit BatchNorm, N(0, 0.01)
    linear layers, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class SequentialBackbone(nn.Module):
    """A backbone whose ``features`` is an ``nn.Sequential`` of blocks (the MobileNets): each block freezes
    on its own, and the embedding is the final map averaged over frequency and time."""

    features: nn.Sequential

    def freeze_blocks(self) -> dict[str, tuple[str, ...]]:
        """``features.0`` (the stem) .. the last block."""
        return {f"features.{i}": (f"features.{i}",) for i in range(len(self.features))}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(-2, -1))


class MobileNetV2(SequentialBackbone):
    """torchvision's ``mobilenet_v2`` (``width_mult`` as there). ``num_classes=None`` leaves out
    ``classifier``; :meth:`forward_features` gives the (B, 1280, H/32, W/32) map, :meth:`pool` its mean."""

    ignored_weight_prefixes = ("classifier.",)

    def __init__(self, num_classes: int | None = 1000, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        inp = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu6(3, inp, stride=2)]
        for t, c, n, s in _SETTINGS:
            out = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(inp, out, s if i == 0 else 1, t))
                inp = out
        features.append(_conv_bn_relu6(inp, self.last_channel, kernel=1))
        self.features = nn.Sequential(*features)
        self.feature_channels = self.embedding_dim = self.last_channel
        self.classifier = (nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
                           if num_classes else None)
        init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("MobileNetV2(num_classes=None) has no classifier; use forward_features/pool")
        return self.classifier(self.pool(self.forward_features(x)))


@register_model(input_kind="features", example_input=(1, 80, 92))
def mobilenet_v2(
    n_classes: int,
    input_shape: tuple[int, ...],
    head: str = "dense",
    weights: str | None = None,
    freeze: str = "none",
    input_scaling: str = "imagenet",
    head_hidden: Sequence[int] = (512, 256),
    head_channels: Sequence[int] = (32, 64),
    dropout: float = 0.5,
    embedding_norm: bool = False,
    width_mult: float = 1.0,
) -> nn.Module:
    """MobileNetV2 backbone (frozen, partly or fully trained) on a (1 or 3, F, T) feature image, plus a new head.

    ``weights``: a torchvision MobileNetV2 state_dict file (or an audioclf run checkpoint); ``classifier``
    is ignored. ``freeze``: ``none`` | ``all`` | ``last:N`` of the 19 blocks features.0..18 |
    ``mobilenet_stages_11_17`` (features.11..18). ``input_scaling``, ``head``, ``head_hidden``,
    ``head_channels``, ``dropout``, ``embedding_norm``: as for ``resnet50``. ``width_mult``: torchvision's width multiplier
    (ImageNet weights exist for 1.0).
    """
    if not float(width_mult) > 0:
        raise ConfigError(f"mobilenet_v2: width_mult={width_mult}; expected a positive number")
    check_head(head)
    adapter = ImageInput(input_shape[0], input_scaling)
    backbone = MobileNetV2(num_classes=None, width_mult=float(width_mult))
    if weights:
        load_backbone_weights(backbone, weights, "mobilenet_v2")
    return build_transfer_model("mobilenet_v2", adapter, backbone, n_classes, head, head_hidden, head_channels,
                                dropout, freeze, embedding_norm)
