"""Knowledge distillation (Hinton et al. 2015): a small student learns from a trained teacher's soft outputs.

Loss, with student logits ``z_s``, teacher logits ``z_t`` and temperature ``T``::

    single_label: alpha * CE(z_s, y) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
    multi_label:  alpha * BCE(z_s, y) + (1 - alpha) * T^2 * mean_{items, classes} KL_Bernoulli(
                                                         sigmoid(z_t / T) || sigmoid(z_s / T))

The T^2 factor keeps the soft-target gradients at the same scale whatever the temperature (their magnitude
falls as 1/T^2). The soft term is a KL divergence, not a cross-entropy: it is zero when the student matches
the teacher, and differs from the cross-entropy only by the teacher's entropy, a constant for the student.

Teachers run in eval mode under ``no_grad``; an ensemble of teachers averages their *logits* (the
normalised geometric mean of their probabilities), so the temperature applies to one set of logits.
When the student's training inputs are the same every epoch (no random crops, no augmentation), a
:class:`TeacherCache` computes the teacher's logits once per item instead of once per epoch.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..augment.spectrogram import build_spec_augment
from ..data.manifest import Manifest
from ..errors import ConfigError, DataError
from ..runs import RunDir, load_model
from ..tasks import check_task
from ..training.evaluate import model_probabilities
from ..training.inputs import AudioInputs
from ..training.loop import TaskStep
from ..training.losses import build_loss
from ..training.trainer import train

log = logging.getLogger(__name__)

__all__ = [
    "soft_target_loss",
    "kd_loss",
    "TeacherEnsemble",
    "TeacherCache",
    "distillation_step",
    "load_teacher",
    "distill",
]


# --- losses -------------------------------------------------------------------------------------
def _check_kd(T: float, alpha: float, task: str) -> None:
    check_task(task, "distillation task")
    if not T > 0:
        raise ConfigError(f"distillation temperature T={T}; expected T > 0 (González Poy 2022 tried 2, 3, 4, 5)")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"distillation alpha={alpha}; expected 0 <= alpha <= 1 (weight of the label loss)")


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float, task: str) -> torch.Tensor:
    """``T^2 * KL(teacher || student)`` on temperature-softened outputs (mean over the batch)."""
    if student_logits.shape != teacher_logits.shape:
        raise DataError(f"distillation: student logits {tuple(student_logits.shape)} and teacher logits "
                        f"{tuple(teacher_logits.shape)} differ; teacher and student must share the class list")
    s, t = student_logits.float() / T, teacher_logits.float().detach() / T
    if task == "single_label":
        kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), log_target=True, reduction="batchmean")
    else:
        p = torch.sigmoid(t)
        # KL of Bernoullis = BCE(student; p) - H(p), both from logits (numerically stable)
        kl = F.binary_cross_entropy_with_logits(s, p) - F.binary_cross_entropy_with_logits(t, p)
    return kl * (T * T)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    T: float = 2.0,
    alpha: float = 0.5,
    task: str = "single_label",
) -> torch.Tensor:
    """``alpha * task_loss(student, targets) + (1 - alpha) * soft_target_loss(student, teacher, T)``."""
    _check_kd(T, alpha, task)
    hard = build_loss(task)(student_logits.float(), targets)
    return alpha * hard + (1.0 - alpha) * soft_target_loss(student_logits, teacher_logits, T, task)


# --- teachers -----------------------------------------------------------------------------------
class TeacherEnsemble(nn.Module):
    """Frozen teachers whose logits are averaged (logits, not probabilities: see the module docstring)."""

    def __init__(self, teachers: Sequence[nn.Module]):
        super().__init__()
        if not teachers:
            raise ConfigError("distillation needs at least one teacher")
        self.teachers = nn.ModuleList(teachers)
        freeze(self)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.stack([teacher(inputs).float() for teacher in self.teachers]).mean(dim=0)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients: dropout off, BatchNorm statistics fixed, nothing for an optimizer."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _as_teacher(teacher: nn.Module | Sequence[nn.Module]) -> nn.Module:
    if isinstance(teacher, nn.Module):
        return freeze(teacher)
    teachers = list(teacher)
    return freeze(teachers[0]) if len(teachers) == 1 else TeacherEnsemble(teachers)


@torch.no_grad()
def _teacher_logits(teacher: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    reference = next(teacher.parameters(), None)
    if reference is not None and reference.device != inputs.device:
        teacher.to(inputs.device)  # once: later calls find it there
    teacher.eval()  # whatever the caller did to it, a teacher never trains (dropout, BatchNorm stats)
    return teacher(inputs).float()


class TeacherCache:
    """Teacher logits computed once per training item, carried to the step inside the targets.

    Valid only when item ``i`` gives the same input every epoch (no random crops, no augmentation).
    :meth:`wrap` returns a dataset whose target for item ``i`` is ``[target_i, logits_i]`` packed in one
    float row (the training loop moves targets to the device as one tensor); a step built with
    ``distillation_step(cache, ...)`` unpacks it.
    """

    def __init__(self, logits: torch.Tensor, task: str):
        check_task(task, "TeacherCache task")
        self.logits = logits.detach().float().cpu()
        self.task = task

    @property
    def n_classes(self) -> int:
        return int(self.logits.shape[1])

    @classmethod
    @torch.no_grad()
    def precompute(cls, teacher: nn.Module | Sequence[nn.Module], dataset, task: str,
                   device: str | torch.device = "cpu", batch_size: int = 64) -> "TeacherCache":
        """Run the (frozen) teacher once over ``dataset`` (items in index order)."""
        teacher = _as_teacher(teacher)
        device = torch.device(device)
        chunks = []
        for start in range(0, len(dataset), batch_size):
            batch = torch.stack([dataset[i][0] for i in range(start, min(len(dataset), start + batch_size))])
            chunks.append(_teacher_logits(teacher, batch.to(device)).cpu())
        if not chunks:
            raise DataError("TeacherCache: the dataset is empty")
        return cls(torch.cat(chunks), task)

    def pack(self, target: torch.Tensor, index: int) -> torch.Tensor:
        # class indices are small integers: exact in float32
        return torch.cat([torch.as_tensor(target).float().reshape(-1), self.logits[index]])

    def unpack(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, teacher logits) from a batch of packed rows."""
        c = self.n_classes
        if packed.ndim != 2 or packed.shape[1] not in (1 + c, 2 * c):
            raise DataError(f"TeacherCache: packed targets of shape {tuple(packed.shape)}; expected (B, {1 + c}) "
                            f"or (B, {2 * c}); was the training dataset wrapped with TeacherCache.wrap?")
        targets, logits = packed[:, :-c], packed[:, -c:]
        if self.task == "single_label":
            targets = targets[:, 0].round().long()
        return targets, logits

    def wrap(self, dataset) -> "CachedTeacherDataset":
        if len(dataset) != len(self.logits):
            raise DataError(f"TeacherCache holds {len(self.logits)} items but the dataset has {len(dataset)}")
        return CachedTeacherDataset(dataset, self)


class CachedTeacherDataset(torch.utils.data.Dataset):
    """``dataset[i]`` with its target packed together with the cached teacher logits of item ``i``."""

    def __init__(self, dataset, cache: TeacherCache):
        self.dataset, self.cache = dataset, cache

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int):
        inputs, target, *extra = self.dataset[index]  # extra: e.g. DuplicateAugmented's "augmented" flag
        return (inputs, self.cache.pack(target, index), *extra)


# --- the task step ------------------------------------------------------------------------------
def distillation_step(
    teacher_or_cached: nn.Module | Sequence[nn.Module] | TeacherCache,
    T: float = 2.0,
    alpha: float = 0.5,
    task: str = "single_label",
    label_smoothing: float = 0.0,
    spec_augment: nn.Module | None = None,
) -> TaskStep:
    """A task step for ``train.loop.train_one_epoch``: ``step(model, inputs, targets, apply_to=None) -> dict``.

    Returns ``{"loss", "task_loss", "kd_loss", "output"}``; ``task_loss`` and ``kd_loss`` are detached
    (logged only). ``teacher_or_cached``: a teacher module, a list of teachers (logits averaged), or a
    :class:`TeacherCache` (then the targets must come from ``cache.wrap(dataset)``). ``spec_augment``
    (optional) masks the *student's* features only (``model`` must be an AudioClassifier): the teacher
    sees the clean input, so its soft targets say what the clean clip is.
    """
    _check_kd(T, alpha, task)
    hard_loss = build_loss(task, label_smoothing=label_smoothing)
    if isinstance(teacher_or_cached, TeacherCache):
        cache = teacher_or_cached
        if cache.task != task:
            raise ConfigError(f"TeacherCache was built for task '{cache.task}', the step is for '{task}'")

        def teacher_and_targets(inputs, targets):
            return cache.unpack(targets)
    else:
        teacher = _as_teacher(teacher_or_cached)

        def teacher_and_targets(inputs, targets):
            return targets, _teacher_logits(teacher, inputs)

    def student_logits(model: nn.Module, inputs: torch.Tensor, apply_to) -> torch.Tensor:
        if spec_augment is None:
            return model(inputs)
        spec_augment.train()
        return model.backbone(spec_augment(model.features(inputs), apply_to=apply_to, source=inputs))

    def step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, apply_to=None) -> dict[str, torch.Tensor]:
        targets, teacher_logits = teacher_and_targets(inputs, targets)
        logits = student_logits(model, inputs, apply_to)
        task_loss = hard_loss(logits.float(), targets)
        soft = soft_target_loss(logits, teacher_logits, T, task)
        loss = alpha * task_loss + (1.0 - alpha) * soft
        return {"loss": loss, "task_loss": task_loss.detach(), "kd_loss": soft.detach(), "output": logits}

    return step


# --- from run directories -----------------------------------------------------------------------
def load_teacher(run_dir: str | Path, which: str = "best") -> tuple[nn.Module, dict[str, Any]]:
    """A trained run's :class:`AudioClassifier`, frozen, and its checkpoint state (classes, task, rates)."""
    model, state = load_model(run_dir, which)
    if state.get("input_kind", "audio") != "audio":
        raise ConfigError(f"teacher {run_dir}: trained on {state['input_kind']}; distillation takes audio runs")
    return freeze(model), state


def _teacher_manifest(teacher_runs: list[Path], states: list[dict[str, Any]]):
    """The first teacher's manifest snapshot; every teacher must share task, classes, rate and splits."""
    first = states[0]
    for run, state in zip(teacher_runs[1:], states[1:]):
        for key in ("task", "classes", "sample_rate", "clip_samples"):
            if state[key] != first[key]:
                raise ConfigError(f"teacher {run}: {key}={state[key]!r} differs from {teacher_runs[0]} "
                                  f"({first[key]!r}); ensemble teachers must agree on it")
    manifests = [Manifest.from_csv(RunDir(run).manifest, classes=first["classes"], task=first["task"])
                 for run in teacher_runs]
    splits = {item.id: item.split for item in manifests[0]}
    for run, manifest in zip(teacher_runs[1:], manifests[1:]):
        other = {item.id: item.split for item in manifest}
        if other != splits:
            # a teacher that trained on the student's val/test items would leak them into the student
            raise DataError(f"teacher {run}: its manifest.csv splits differ from {teacher_runs[0]}; "
                            "teachers must be trained on the same train/val/test split")
    return manifests[0]


def _student_config(student_config, state: dict[str, Any]):
    """The student's config with the teacher's rate, clip length and split (checked, not silently changed)."""
    cfg = copy.deepcopy(student_config)
    rate, clip_samples = int(state["sample_rate"]), int(state["clip_samples"])
    if cfg.data.sample_rate is not None and int(cfg.data.sample_rate) != rate:
        raise ConfigError(f"data.sample_rate={cfg.data.sample_rate}: the teacher was trained at {rate} Hz; "
                          "student and teacher must see the same waveforms (leave it unset)")
    if cfg.data.clip_seconds is not None and round(cfg.data.clip_seconds * rate) != clip_samples:
        raise ConfigError(f"data.clip_seconds={cfg.data.clip_seconds}: the teacher's clips are "
                          f"{clip_samples / rate:g} s; leave it unset")
    cfg.data.sample_rate, cfg.data.clip_seconds = rate, clip_samples / rate
    cfg.data.path = cfg.data.path or state.get("config", {}).get("data", {}).get("path")  # recorded, not read
    cfg.data.split = "given"  # the teacher's own split: the student is tested on items no teacher saw
    if cfg.augment.mixup_alpha is None:  # zero-config MixUp would mix the teacher's soft targets: off here
        cfg.augment.mixup_alpha = 0.0
    return cfg


def _inputs_are_fixed(prepared, cfg) -> bool:
    """True when every training item yields the same waveform each epoch (the teacher cache is valid).

    SpecAugment does not count: it changes the student's features after the teacher has seen the clip.
    """
    if cfg.augment.waveform or cfg.augment.duplicate:
        return False
    if cfg.data.train_crop != "random":
        return True
    waves = [prepared.waves[item.id] for item in prepared.split("train")]
    return all(len(w) <= prepared.n_samples for w in waves)  # short clips are tiled/padded the same way


class Distillation:
    """The distillation objective for :func:`audioclf.training.trainer.train` (see its ``objective`` argument)."""

    def __init__(self, teachers: list[nn.Module], teacher_runs: list[Path], T: float, alpha: float,
                 which: str = "best", cache: bool | None = None):
        self.teacher_runs, self.T, self.alpha, self.which, self.cache = teacher_runs, T, alpha, which, cache
        self.teacher = _as_teacher(teachers)
        self.used_cache = False

    def setup(self, cfg, inputs, train_set, device):
        if not isinstance(inputs, AudioInputs):
            raise ConfigError("distillation trains on audio files; these inputs are " + inputs.description)
        task = inputs.task
        if cfg.augment.mixup_alpha:
            raise ConfigError(f"augment.mixup_alpha={cfg.augment.mixup_alpha}: MixUp is not supported by distill "
                              "(set it to 0; waveform augmentation and SpecAugment are)")
        spec_augment = build_spec_augment(cfg.augment.spec, seed=cfg.seed) if cfg.augment.spec is not None else None
        self.teacher = self.teacher.to(device)
        self.used_cache = _inputs_are_fixed(inputs.prepared, cfg) if self.cache is None else self.cache
        if not self.used_cache:
            return train_set, distillation_step(self.teacher, self.T, self.alpha, task, cfg.train.label_smoothing,
                                                spec_augment)
        cache = TeacherCache.precompute(self.teacher, train_set, task, device, cfg.train.batch_size)
        step = distillation_step(cache, self.T, self.alpha, task, cfg.train.label_smoothing, spec_augment)
        return cache.wrap(train_set), step

    def summary(self, cfg, inputs, device, amp) -> dict[str, Any]:
        return {"distillation": {
            "teachers": [str(r) for r in self.teacher_runs], "T": float(self.T), "alpha": float(self.alpha),
            "which": self.which, "ensemble": "mean of teacher logits" if len(self.teacher_runs) > 1 else None,
            "teacher_cache": bool(self.used_cache),
            "teacher_metrics": _teacher_metrics(self.teacher, inputs, device, amp),
        }}


def distill(
    teacher_runs: Sequence[str | Path],
    student_config,
    T: float = 2.0,
    alpha: float = 0.5,
    which: str = "best",
    cache: bool | None = None,
    resume: bool = False,
    reporter: Any = None,
) -> Path:
    """Train the student described by ``student_config`` from the teachers' soft outputs; returns its run dir.

    The student uses the first teacher's manifest snapshot and splits (``data.path`` is ignored), its
    sample rate and clip length; its own front-end and model come from ``student_config``. The run
    directory is an ordinary run of :func:`audioclf.training.trainer.train` (evaluate / predict / export /
    quantize work on it); ``metrics.jsonl`` also logs ``train/task_loss`` and ``train/kd_loss``, and
    ``summary.json`` gains a ``distillation`` section (teachers, T, alpha, the teachers' own metrics).
    ``cache``: None = use a :class:`TeacherCache` when the training inputs are fixed. ``resume`` continues
    the student's run in ``student_config.out``.
    """
    _check_kd(T, alpha, "single_label")
    teacher_runs = [Path(run) for run in teacher_runs]
    if not teacher_runs:
        raise ConfigError("distill: give at least one teacher run directory")
    loaded = [load_teacher(run, which) for run in teacher_runs]
    states = [state for _, state in loaded]
    manifest = _teacher_manifest(teacher_runs, states)
    cfg = _student_config(student_config, states[0])
    objective = Distillation([model for model, _ in loaded], teacher_runs, T, alpha, which, cache)
    return train(cfg, resume=resume, manifest=manifest, reporter=reporter, objective=objective)


def _teacher_metrics(teacher, inputs: AudioInputs, device, amp) -> dict[str, Any]:
    """The (ensembled) teacher on the student's val/test splits: the reference the student is compared to."""
    probs_fn = model_probabilities(teacher, inputs.task, device, amp)
    out = {}
    for split in ("val", "test"):
        result = inputs.evaluate(probs_fn, split)
        if result is not None:
            out[split] = {k: v for k, v in result.metrics.items() if "/" not in k and np.isfinite(v)}
    return out
