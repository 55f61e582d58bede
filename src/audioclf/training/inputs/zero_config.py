"""Zero-config choices for audio runs, from the data: what a config leaves unset is filled here, written to
the run's ``config.yaml``, and any of it can be set instead.

Small real datasets (hundreds of clips, a few voices or recording sessions) overfit at once, so the defaults
regularise: AdamW with weight decay, label smoothing, a short warm-up before the cosine decay, cheap waveform
augmentation (gain, time shift, noise at a random SNR, speed perturbation and a random device EQ, measured
on speaker-, source- and device-held-out splits), SpecAugment masks sized to the input (Park et al.
2019 sized theirs for 100-frame LibriSpeech utterances; a fixed width would blank most of a 40 x 51 input)
with a small mel-band shift (a vocal-tract-length-like jitter between voices and microphones), and MixUp
(Zhang et al. 2018). The number of epochs follows the number of optimizer steps the data gives, within a
wall-time allowance measured on the machine that trains.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...data.balance import IMBALANCE_RATIO, imbalance_ratio

__all__ = ["TARGET_STEPS", "COMPUTE_BUDGET_MACS", "AUTO_BALANCE", "audio_defaults", "plan_epochs", "warmup_epochs",
           "patience_for", "balance_for", "imbalanced"]

# Optimizer steps a zero-config run aims for: enough for small sets to converge under augmentation.
TARGET_STEPS = 3000
MIN_EPOCHS, MAX_EPOCHS = 15, 200
# The work a zero-config run allows itself, in multiply-accumulates of the network (a training item costs about
# 3 inferences: forward and backward). Small CNNs train at 20-30 GMAC/s on 2 CPU cores, so this is about
# 6 minutes there and seconds on a GPU; a budget in MACs rather than seconds gives the same epochs on every
# machine, so a seed reproduces a run anywhere.
COMPUTE_BUDGET_MACS = 7.2e12
# What train.balance=auto turns on for an imbalanced training split: on Arabic speech commands with two words cut to
# 1/8 of their training clips (README, "Imbalanced classes"; two seeds) the sampler gave test balanced accuracy
# 0.762/0.778 and macro-F1 0.748/0.770, loss weights 0.750/0.734 and 0.742/0.719, no balancing 0.708/0.705 and
# 0.650/0.648 (both rare words never recognised).
AUTO_BALANCE = "sampler"


def audio_defaults(task: str, features: tuple[int, int] | None) -> dict[str, Any]:
    """Dotted config keys -> values for an audio run whose model reads ``features`` = (bands, frames), or raw
    waveforms (None: no SpecAugment)."""
    single = task == "single_label"
    return {
        "train.optimizer": "adamw",
        "train.weight_decay": 0.05,
        "train.label_smoothing": 0.1 if single else 0.0,
        "train.scheduler": "cosine",
        "augment.mixup_alpha": 0.2,
        "augment.spec": spec_augment_for(*features) if features else "none",
        "augment.waveform": [
            {"name": "gain", "min_gain_db": -6.0, "max_gain_db": 6.0, "p": 0.5},
            {"name": "time_shift", "min_fraction": -0.2, "max_fraction": 0.2, "p": 0.5},
            {"name": "gaussian_noise", "min_snr_db": 15.0, "max_snr_db": 40.0, "p": 0.3},
            # For unseen speakers and devices (benchmarks/realdata.py --held-out): speed perturbation as Ko et al.
            # 2015 and a random device response (random_eq).
            {"name": "speed_perturb", "min_factor": 0.9, "max_factor": 1.1, "p": 0.5},
            {"name": "random_eq", "p": 0.5},
        ],
    }


def spec_augment_for(n_bins: int, n_frames: int) -> dict[str, Any]:
    """Two frequency and two time masks of at most ~1/8 of the bands and 1/10 of the frames each, on the
    standardised features (mask value 0 = the band's training mean)."""
    return {"freq_masks": 2, "freq_width": max(1, n_bins // 8), "time_masks": 2,
            "time_width": max(1, n_frames // 10), "mask_value": 0.0}


def plan_epochs(n_train: int, batch_size: int, macs_per_item: int, val_windows: int,
                budget_macs: float = COMPUTE_BUDGET_MACS) -> int:
    """Epochs for :data:`TARGET_STEPS` optimizer steps, within ``[MIN_EPOCHS, MAX_EPOCHS]`` and within the
    compute budget (each epoch: training items at 3 inferences each, plus the validation windows)."""
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, round(TARGET_STEPS / steps_per_epoch)))
    epoch_macs = max(1, macs_per_item) * (3 * n_train + val_windows)
    return max(1, min(epochs, int(budget_macs // epoch_macs)))


def warmup_epochs(epochs: int) -> int:
    """A linear warm-up over the first ~5 % of the epochs (at least one) before the cosine decay."""
    return min(max(1, round(0.05 * epochs)), max(0, epochs - 1))


def patience_for(epochs: int) -> int:
    """Early-stopping patience for a run of ``epochs``: a quarter of it, at least 10, so a long cosine
    schedule is not cut off before its low-learning-rate end, where most of the gain comes."""
    return max(10, epochs // 4)


def imbalanced(counts: np.ndarray | None) -> bool:
    """Whether a training split's largest class has more than :data:`IMBALANCE_RATIO` times the items of its
    smallest (None: counts unknown before training, e.g. streamed shards)."""
    return counts is not None and imbalance_ratio(counts) > IMBALANCE_RATIO


def balance_for(setting: str, counts: np.ndarray | None) -> tuple[str, str | None]:
    """``train.balance`` resolved for training counts ``counts`` -> (value, the run header's line or None):
    ``auto`` becomes :data:`AUTO_BALANCE` on an imbalanced split, else ``none``."""
    if counts is None:
        return ("none" if setting == "auto" else setting), None
    ratio = f"the largest training class has {imbalance_ratio(counts):.1f}x the items of the smallest"
    if setting != "auto":
        return setting, f"{setting} (set; {ratio})"
    if imbalanced(counts):
        return AUTO_BALANCE, (f"{AUTO_BALANCE} (zero-config: {ratio}, more than {IMBALANCE_RATIO:g}x; "
                              "train.balance=none turns it off)")
    return "none", f"none (zero-config: {ratio}, at most {IMBALANCE_RATIO:g}x)"
