"""The training loop, readable top to bottom.

A task step returns a dict (``{"loss", "output", ...}``); the loop only calls ``out["loss"].backward()``
and averages every scalar in the dict, so new objectives (distillation adds ``task_loss``/``kd_loss``)
need no change here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..augment.batch import mixup
from ..augment.spectrogram import build_spec_augment
from ..config import Config
from .losses import build_loss, probabilities

# step(model, inputs, targets, apply_to=None) -> {"loss", "output", ...}; ``apply_to`` is an optional (B,)
# bool tensor saying which items may be augmented (DuplicateAugmented batches carry it).
TaskStep = Callable[..., dict[str, torch.Tensor]]


def supervised_step(loss_fn: nn.Module) -> TaskStep:
    def step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, apply_to=None) -> dict[str, torch.Tensor]:
        logits = model(inputs)
        return {"loss": loss_fn(logits.float(), targets), "output": logits}

    return step


def augmented_step(loss_fn: nn.Module, task: str, n_classes: int, spec_augment: nn.Module | None = None,
                   mixup_alpha: float = 0.0, mixup_on: str = "features") -> TaskStep:
    """Supervised step with on-device augmentation: MixUp (waveform or features) and SpecAugment.

    Works on :class:`~audioclf.models.classifier.AudioClassifier` (``features`` then ``backbone``), so
    augmentation sits between the front-end and the network and never enters checkpoints or exports.
    """
    if mixup_on not in ("features", "waveform"):
        raise ValueError(f"mixup_on: expected 'features' or 'waveform', got {mixup_on!r}")

    def step(model: nn.Module, wave: torch.Tensor, targets: torch.Tensor, apply_to=None) -> dict[str, torch.Tensor]:
        if mixup_alpha and mixup_on == "waveform":
            wave, targets = mixup(wave, targets, mixup_alpha, task, n_classes, apply_to=apply_to)
        x = model.features(wave)
        if spec_augment is not None:
            spec_augment.train()
            x = spec_augment(x, apply_to=apply_to, source=wave)
        if mixup_alpha and mixup_on == "features":
            x, targets = mixup(x, targets, mixup_alpha, task, n_classes, apply_to=apply_to)
        logits = model.backbone(x)
        return {"loss": loss_fn(logits.float(), targets), "output": logits}

    return step


def build_step(cfg: Config, task: str, n_classes: int, loss: str = "task", class_weights=None):
    """The training step: plain supervised, or with on-device SpecAugment / MixUp from ``cfg.augment``;
    ``class_weights`` (``train.balance=loss``) weight the loss per class."""
    loss_fn = build_loss(task, label_smoothing=cfg.train.label_smoothing or 0.0, kind=loss,
                         training_loss=cfg.train.loss, gce_q=cfg.train.gce_q, class_weights=class_weights)
    aug = cfg.augment
    spec_augment = build_spec_augment(aug.spec, seed=cfg.seed)
    if spec_augment is None and not aug.mixup_alpha:
        return supervised_step(loss_fn)
    return augmented_step(loss_fn, task, n_classes, spec_augment, aug.mixup_alpha or 0.0, aug.mixup_on)


def train_loss_inflation(cfg: Config) -> list[str]:
    """What :func:`build_step` adds that makes the logged training loss higher than a clean loss on the same clips
    (validation's loss is clean: no MixUp, no smoothing), e.g. ``["MixUp α=0.4", "label smoothing 0.1"]``."""
    aug, found = cfg.augment, []
    if aug.mixup_alpha:
        found.append(f"MixUp α={aug.mixup_alpha:g}")
    if build_spec_augment(aug.spec) is not None:
        found.append("SpecAugment")
    if cfg.train.label_smoothing:
        found.append(f"label smoothing {cfg.train.label_smoothing:g}")
    return found


def compile_for_training(model: nn.Module) -> None:
    """``train.compile``: torch.compile the network a step runs (the model's backbone, or the whole module), in
    place: ``Module.compile`` keeps the parameter names, so checkpoints and exports are unchanged. The front-end is
    left as it is: its STFT is complex-valued, which TorchInductor does not generate code for (it would fall back
    to the same kernels, with a warning)."""
    backbone = getattr(model, "backbone", None)
    (backbone if backbone is not None else model).compile()


def autocast_for(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    step: TaskStep,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
    progress: Callable[[int], None] | None = None,
    after_step: Callable[[], None] | None = None,
    weight: Callable[[int, int], float] | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean of every scalar the step reported. ``after_step`` is called
    after each optimizer step; ``stop()`` (e.g. ``train.max_minutes`` passed), after each batch, ends the pass.

    Distributed training (:mod:`.distributed`): ``weight(step, batch items)`` multiplies the loss that is
    backpropagated (each rank's share of the global batch); the values returned are this rank's."""
    model.train()
    sums: dict[str, float] = {}
    count = 0
    for index, (inputs, targets, *extra) in enumerate(loader):
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast_for(device, amp):
            out = step(model, inputs, targets, *[e.to(device, non_blocking=True) for e in extra])
        optimizer.zero_grad(set_to_none=True)
        loss = out["loss"] if weight is None else out["loss"] * weight(index, len(inputs))
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if after_step is not None:  # e.g. the weights' moving average
            after_step()
        batch = len(inputs)
        count += batch
        for key, value in out.items():
            if key != "output" and torch.is_tensor(value) and value.ndim == 0:
                sums[key] = sums.get(key, 0.0) + float(value.detach()) * batch
        if progress is not None:
            progress(batch)
        if stop is not None and stop():
            break
    return {key: total / max(count, 1) for key, total in sums.items()}
