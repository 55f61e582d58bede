"""Data augmentation: per-example waveform transforms (numpy, in the data loader), batched spectrogram
augmentation (torch, on the training device), batch MixUp, and offline augmented copies on disk.

* :mod:`.waveform`     ``build_waveform_augment(specs)`` -> :class:`Compose`; ``augment(wave, sr, rng)``
* :mod:`.spectrogram`  ``build_spec_augment("LD")`` -> :class:`SpecAugment` (identity in ``eval()``)
* :mod:`.batch`        ``mixup(inputs, targets, alpha, task, n_classes)``, :class:`DuplicateAugmented`
* :mod:`.offline`      ``augment_dataset(manifest, out_dir, augment, n_variants)`` -> Manifest
"""

from __future__ import annotations

from .batch import DuplicateAugmented, mix, mixup, sample_mixup
from .offline import augment_dataset, item_rng
from .spectrogram import (
    POLICIES,
    MelBandShift,
    SpecAugment,
    SpecAugmentChain,
    build_spec_augment,
    mask_along_axis,
    shift_frequency_axis,
    time_warp,
)
from .waveform import (
    BackgroundNoise,
    Compose,
    DynamicRangeCompression,
    Gain,
    GaussianNoise,
    ImpulseResponse,
    OwnBackground,
    PitchShift,
    PolarityInversion,
    RandomEQ,
    RoomReverb,
    SpeedPerturb,
    TimeShift,
    TimeStretch,
    WaveformTransform,
    build_waveform_augment,
    list_augmentations,
    register_augmentation,
)

__all__ = [
    "BackgroundNoise",
    "Compose",
    "DuplicateAugmented",
    "DynamicRangeCompression",
    "Gain",
    "GaussianNoise",
    "ImpulseResponse",
    "MelBandShift",
    "OwnBackground",
    "POLICIES",
    "PitchShift",
    "PolarityInversion",
    "RandomEQ",
    "RoomReverb",
    "SpecAugment",
    "SpecAugmentChain",
    "SpeedPerturb",
    "TimeShift",
    "TimeStretch",
    "WaveformTransform",
    "augment_dataset",
    "build_spec_augment",
    "build_waveform_augment",
    "item_rng",
    "list_augmentations",
    "mask_along_axis",
    "mix",
    "mixup",
    "register_augmentation",
    "sample_mixup",
    "shift_frequency_axis",
    "time_warp",
]
