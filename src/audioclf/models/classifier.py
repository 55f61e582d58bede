"""The deployable unit: waveform -> front-end -> feature standardisation -> backbone -> logits.

Keeping the front-end inside the module means features are computed on the training device, a checkpoint
carries everything needed to predict from raw audio, and export can include the front-end.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..features import FeatureConfig, FrontEnd
from .registry import create_model


class FeatureStandardizer(nn.Module):
    """Per-feature-bin standardisation with statistics measured on the training split (set by
    :func:`audioclf.training.inputs.audio.fit_standardizer`).

    Log-mel values sit around -80..0 dB with very different levels per band; standardising each band
    makes the default learning rates work for any model and any recording level.
    """

    def __init__(self, n_bins: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 1, n_bins, 1))
        self.register_buffer("std", torch.ones(1, 1, n_bins, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


class AudioClassifier(nn.Module):
    """Raw waveform (B, N) in, logits (B, C) out."""

    def __init__(self, backbone: nn.Module, feature_config: FeatureConfig | None):
        super().__init__()
        self.feature_config = feature_config
        self.frontend = FrontEnd(feature_config) if feature_config is not None else None
        n_bins = self.frontend.output_shape(feature_config.sample_rate)[1] if self.frontend else 0
        self.standardize = FeatureStandardizer(n_bins) if self.frontend is not None else None
        self.backbone = backbone

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        if self.frontend is None:
            return wave
        return self.standardize(self.frontend(wave))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.features(wave))

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this module (stored in checkpoints)."""
        return {
            "backbone": dict(self.backbone.audioclf_spec),
            "features": self.feature_config.to_dict() if self.feature_config is not None else None,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "AudioClassifier":
        backbone_spec = spec["backbone"]
        kwargs = dict(backbone_spec.get("kwargs", {}))
        # Pretrained weights only initialise training; a checkpoint carries the trained ones, and the
        # original weights file need not exist where the run is loaded.
        kwargs.pop("weights", None)
        backbone = create_model(
            backbone_spec["name"],
            n_classes=backbone_spec["n_classes"],
            input_shape=tuple(backbone_spec["input_shape"]),
            **kwargs,
        )
        features = FeatureConfig.from_dict(spec["features"]) if spec.get("features") else None
        return cls(backbone, features)
