"""Freezing policies for pretrained backbones, and optimizer parameter groups with a backbone learning rate.

A policy says which backbone blocks train; the head (and anything outside pretrained backbones) always
trains. Policies:

* ``"none"``: everything trains (full fine-tuning);
* ``"all"``: the backbone is frozen, only the head trains (feature extraction);
* ``"last:N"``: the last ``N`` backbone blocks train, the earlier ones are frozen;
* the presets of a reference FSD2019 solution, ``"resnet50_blocks_4_5"`` (Keras' conv4_x and conv5_x =
  torchvision ``layer3`` and ``layer4``; ``last:2``) and ``"mobilenet_stages_11_17"`` (inverted-residual
  blocks 11-17 = torchvision ``features.11``-``features.17`` and the 1x1 conv after them, ``features.18``;
  ``last:8``).

It acts on every submodule that provides ``backbone`` (an ``nn.Module``) and ``freeze_blocks()`` (ordered
block name -> module names inside ``backbone``), i.e. :class:`~audioclf.models.backbones.TransferClassifier`,
also when it sits inside an :class:`~audioclf.models.classifier.AudioClassifier`.

Frozen means ``requires_grad=False`` *and* BatchNorm layers whose parameters are all frozen kept in eval
mode (:func:`sync_batchnorm_modes`, run by ``TransferClassifier.train``): otherwise a frozen backbone's
running statistics would still drift towards the new data, changing the pretrained features.

Training code: ``build_optimizer(parameter_groups(model, cfg.train.lr, cfg.train.backbone_lr), ...)``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError

__all__ = [
    "FREEZE_PRESETS",
    "transfer_modules",
    "parse_freeze_policy",
    "apply_freeze_policy",
    "sync_batchnorm_modes",
    "frozen_parameter_names",
    "parameter_groups",
]

# Preset name -> (architecture, first block that trains); every block from there on trains.
FREEZE_PRESETS: dict[str, tuple[str, str]] = {
    "resnet50_blocks_4_5": ("resnet50", "layer3"),
    "mobilenet_stages_11_17": ("mobilenet_v2", "features.11"),
}
_POLICIES = ("none", "all", "last:N", *FREEZE_PRESETS)


def transfer_modules(model: nn.Module) -> list[nn.Module]:
    """The submodules of ``model`` (itself included) that hold a pretrained backbone with freeze blocks."""
    return [m for m in model.modules() if callable(getattr(m, "freeze_blocks", None))
            and isinstance(getattr(m, "backbone", None), nn.Module)]


def parse_freeze_policy(policy: str) -> str | int:
    """Validate ``policy``: ``"none"``, ``"all"``, a preset name, or ``"last:N"`` returned as the int N."""
    text = str(policy).strip()
    if text in ("none", "all") or text in FREEZE_PRESETS:
        return text
    if text.startswith("last:"):
        value = text[len("last:"):].strip()
        if value.isdigit():
            return int(value)
    raise ConfigError(f"freeze={policy!r}; expected one of {', '.join(_POLICIES)} (N = number of blocks)")


def _trainable_blocks(module: nn.Module, policy: str | int) -> list[str]:
    """The names of the backbone blocks that train under ``policy`` (already parsed)."""
    blocks = list(module.freeze_blocks())
    arch = getattr(module, "arch", type(module.backbone).__name__)
    if policy == "none":
        return blocks
    if policy == "all":
        return []
    if isinstance(policy, int):
        if policy > len(blocks):
            raise ConfigError(f"freeze='last:{policy}': {arch} has {len(blocks)} blocks ({', '.join(blocks)}); "
                              f"expected 0 <= N <= {len(blocks)}")
        return blocks[len(blocks) - policy:]
    preset_arch, first = FREEZE_PRESETS[policy]
    if preset_arch != arch:
        raise ConfigError(f"freeze={policy!r} is the preset for {preset_arch}, but the model is {arch}")
    return blocks[blocks.index(first):]


def apply_freeze_policy(model: nn.Module, policy: str) -> nn.Module:
    """Set ``requires_grad`` on every pretrained backbone in ``model`` as ``policy`` says (heads train).

    Returns ``model``. A model without a pretrained backbone accepts only ``"none"``.
    """
    parsed = parse_freeze_policy(policy)
    modules = transfer_modules(model)
    if not modules:
        if parsed != "none":
            raise ConfigError(f"freeze={policy!r} needs a pretrained backbone (resnet50, mobilenet_v2, cnn14); "
                              f"{type(model).__name__} has none")
        return model
    for module in modules:
        trainable = set(_trainable_blocks(module, parsed))
        for param in module.parameters():
            param.requires_grad_(True)  # heads and adapters always train
        for name, children in module.freeze_blocks().items():
            for child in children:
                for param in module.backbone.get_submodule(child).parameters():
                    param.requires_grad_(name in trainable)
        sync_batchnorm_modes(module)
    return model


def sync_batchnorm_modes(module: nn.Module) -> None:
    """Put BatchNorm layers whose parameters are all frozen in eval mode; the others follow ``module``."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            params = list(child.parameters(recurse=False))
            frozen = bool(params) and not any(p.requires_grad for p in params)
            child.training = module.training and not frozen


def frozen_parameter_names(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the parameters that do not train."""
    return [name for name, param in model.named_parameters() if not param.requires_grad]


def parameter_groups(model: nn.Module, lr: float, backbone_lr: float | None = None) -> list[dict[str, Any]]:
    """Optimizer parameter groups: ``{"name": "head", "lr": lr}`` for everything outside pretrained
    backbones, then ``{"name": "backbone", "lr": backbone_lr or lr}``; frozen parameters are left out, and
    so are empty groups. The head comes first, so a scheduler's reported ``lr`` is the head's."""
    for key, value in (("train.lr", lr), ("train.backbone_lr", backbone_lr)):
        if value is not None and not float(value) > 0:
            raise ConfigError(f"{key}={value}; expected a positive number (freeze the backbone instead of lr 0)")
    in_backbone = {id(p) for m in transfer_modules(model) for p in m.backbone.parameters()}
    head, backbone = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (backbone if id(param) in in_backbone else head).append(param)
    groups = []
    if head:
        groups.append({"name": "head", "params": head, "lr": float(lr)})
    if backbone:
        groups.append({"name": "backbone", "params": backbone,
                       "lr": float(backbone_lr if backbone_lr is not None else lr)})
    if not groups:
        raise ConfigError("the model has no trainable parameters (is everything frozen?)")
    return groups
