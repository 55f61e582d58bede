"""ResNet-50 (He et al. 2016) in plain torch, with torchvision's module and parameter names.

torchvision cannot be a dependency here, but its ImageNet weights are what users have: a file written with
``torch.save(torchvision.models.resnet50(weights=...).state_dict(), path)`` loads into :class:`ResNet50`
with ``load_state_dict(strict=True)``, and ``resnet50(weights=path)`` takes its backbone part (``fc`` is
ignored). The layout is torchvision's "ResNet v1.5" (the stride sits in the 3x3 conv of a bottleneck),
with 25,557,032 parameters for 1000 classes (torchvision's documented count).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .backbones import ImageInput, build_transfer_model, check_head, load_backbone_weights
from .registry import register_model

__all__ = ["Bottleneck", "ResNet50", "resnet50"]

# Bottlenecks per stage (conv2_x .. conv5_x) and their widths.
_LAYERS = (3, 4, 6, 3)
_WIDTHS = (64, 128, 256, 512)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride here, as torchvision) -> 1x1 expand (x4), plus the (projected) input."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """torchvision's ``resnet50``: names ``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``.

    ``num_classes=None`` leaves out ``fc`` (a backbone for a new head). ``forward`` returns ImageNet-style
    logits; :meth:`forward_features` the (B, 2048, H/32, W/32) map and :meth:`pool` its global average.
    """

    feature_channels = 2048
    embedding_dim = 2048
    ignored_weight_prefixes = ("fc.",)

    def __init__(self, num_classes: int | None = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(_WIDTHS[0], _LAYERS[0], stride=1)
        self.layer2 = self._make_layer(_WIDTHS[1], _LAYERS[1], stride=2)
        self.layer3 = self._make_layer(_WIDTHS[2], _LAYERS[2], stride=2)
        self.layer4 = self._make_layer(_WIDTHS[3], _LAYERS[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.feature_channels, num_classes) if num_classes else None
        # torchvision's initialisation (zero_init_residual=False); fc keeps PyTorch's Linear default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def freeze_blocks(self) -> dict[str, tuple[str, ...]]:
        """Keras' five ResNet50 blocks conv1 .. conv5_x (an FSD2019 reference's "blocks 4 and 5" = layer3, layer4)."""
        return {"stem": ("conv1", "bn1"), "layer1": ("layer1",), "layer2": ("layer2",),
                "layer3": ("layer3",), "layer4": ("layer4",)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(fmap), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc is None:
            raise RuntimeError("ResNet50(num_classes=None) has no classifier; use forward_features/pool")
        return self.fc(self.pool(self.forward_features(x)))


@register_model(input_kind="features", example_input=(1, 80, 92))
def resnet50(
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
) -> nn.Module:
    """ResNet-50 backbone (frozen, partly or fully trained) on a (1 or 3, F, T) feature image, plus a new head.

    ``weights``: a torchvision ResNet-50 state_dict file (or an audioclf run checkpoint, for two-stage
    training); ``fc`` is ignored. ``freeze``: ``none`` | ``all`` | ``last:N`` of the 5 blocks (stem,
    layer1..layer4) | ``resnet50_blocks_4_5``. ``input_scaling="imagenet"``: 0-255 image then ImageNet
    mean/std (what ImageNet weights expect); ``"standardized"`` feeds the standardised features as they are.
    ``head``/``head_hidden``/``head_channels``/``dropout``: see :func:`~audioclf.models.backbones.build_head`.
    ``embedding_norm``: standardise the pooled embedding before the head (``train.frozen_embeddings`` sets it).
    """
    check_head(head)
    adapter = ImageInput(input_shape[0], input_scaling)
    backbone = ResNet50(num_classes=None)
    if weights:
        load_backbone_weights(backbone, weights, "resnet50")
    return build_transfer_model("resnet50", adapter, backbone, n_classes, head, head_hidden, head_channels,
                                dropout, freeze, embedding_norm)
