"""The training loop, readable top to bottom.

A task step returns a dict (``{"loss", "output", ...}``); the loop only calls ``out["loss"].backward()``
and averages every scalar in the dict, so new objectives (distillation adds ``task_loss``/``kd_loss``)
need no change here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from .losses import probabilities

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
    from ..augment.batch import mixup

    if mixup_on not in ("features", "waveform"):
        raise ValueError(f"mixup_on: expected 'features' or 'waveform', got {mixup_on!r}")

    def step(model: nn.Module, wave: torch.Tensor, targets: torch.Tensor, apply_to=None) -> dict[str, torch.Tensor]:
        if mixup_alpha and mixup_on == "waveform":
            wave, targets = mixup(wave, targets, mixup_alpha, task, n_classes, apply_to=apply_to)
        x = model.features(wave)
        if spec_augment is not None:
            spec_augment.train()
            x = spec_augment(x, apply_to=apply_to)
        if mixup_alpha and mixup_on == "features":
            x, targets = mixup(x, targets, mixup_alpha, task, n_classes, apply_to=apply_to)
        logits = model.backbone(x)
        return {"loss": loss_fn(logits.float(), targets), "output": logits}

    return step


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
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean of every scalar the step reported."""
    model.train()
    sums: dict[str, float] = {}
    count = 0
    for inputs, targets, *extra in loader:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast_for(device, amp):
            out = step(model, inputs, targets, *[e.to(device, non_blocking=True) for e in extra])
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(out["loss"]).backward()
            scaler.unscale_(optimizer)
        else:
            out["loss"].backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        batch = len(inputs)
        count += batch
        for key, value in out.items():
            if key != "output" and torch.is_tensor(value) and value.ndim == 0:
                sums[key] = sums.get(key, 0.0) + float(value.detach()) * batch
        if progress is not None:
            progress(batch)
    return {key: total / max(count, 1) for key, total in sums.items()}


@torch.no_grad()
def predict_loader(
    model: nn.Module, loader: Iterable, task: str, device: torch.device, amp: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and targets for every batch in ``loader`` (in order)."""
    model.eval()
    probs, targets = [], []
    for inputs, target in loader:
        with autocast_for(device, amp):
            logits = model(inputs.to(device, non_blocking=True))
        probs.append(probabilities(task, logits.float()).cpu().numpy())
        targets.append(target.numpy())
    if not probs:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.float32)
    return np.concatenate(probs).astype(np.float64), np.concatenate(targets)


@torch.no_grad()
def predict_windows(model: nn.Module, dataset, task: str, device: torch.device, amp: bool = False,
                    max_windows: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities per item from all of its windows (``dataset.windows(i)``), averaged.

    Windows of several items share a forward pass (up to ``max_windows`` at once), so long files cost
    their length and short ones stay batched.
    """
    model.eval()
    n = len(dataset)
    sums: np.ndarray | None = None
    counts = np.zeros(n)
    pending, owners = [], []

    def flush() -> None:
        nonlocal sums
        batch = torch.from_numpy(np.concatenate(pending)).to(device)
        with autocast_for(device, amp):
            probs = probabilities(task, model(batch).float()).cpu().numpy().astype(np.float64)
        if sums is None:
            sums = np.zeros((n, probs.shape[1]))
        np.add.at(sums, np.concatenate(owners), probs)
        pending.clear()
        owners.clear()

    queued = 0
    for index in range(n):
        windows = dataset.windows(index)
        pending.append(windows)
        owners.append(np.full(len(windows), index))
        counts[index] = len(windows)
        queued += len(windows)
        if queued >= max_windows:
            flush()
            queued = 0
    if pending:
        flush()
    if sums is None:
        return np.zeros((0, 0)), np.zeros((0,))
    return sums / counts[:, None], dataset.targets.numpy()


def evaluation_loss(task: str, probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean loss from probabilities (what early stopping on ``loss`` watches)."""
    eps = 1e-7
    p = np.clip(probs, eps, 1 - eps)
    if task == "single_label":
        return float(-np.mean(np.log(p[np.arange(len(targets)), targets])))
    return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)))


def summarize(values: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in values.items() if isinstance(v, float))
