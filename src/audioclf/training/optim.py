"""Optimizers and learning-rate schedulers, created by name from the config.

Every scheduler has the same small interface, whatever it does inside:

* ``scheduler.step(metric=None)`` is called **once per epoch, after validation** (``metric`` is the
  monitored validation value; only ``plateau`` needs it, the others ignore it);
* ``scheduler.lr`` is the learning rate of the first parameter group (the one the next epoch uses);
* ``state_dict()`` / ``load_state_dict()`` let ``--resume`` continue the schedule where it stopped.

Epoch ``t`` below counts the ``step()`` calls so far: the first epoch trains with ``lr(0)``. Each parameter
group is scheduled from its own starting ("base") learning rate. Adding a scheduler or an optimizer is one
function plus ``@register_scheduler`` / ``@register_optimizer``; every keyword argument it declares (with
a default) becomes a valid ``scheduler_args`` key, checked by ``build_scheduler``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from ..errors import ConfigError
from ..registry import Registry, did_you_mean
from .callbacks import metric_mode

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "check_training_settings",
    "register_optimizer",
    "register_scheduler",
    "build_optimizer",
    "build_scheduler",
    "Scheduler",
    "EpochScheduler",
    "PlateauScheduler",
    "falling_sigmoid_factor",
]

OptimizerFn = Callable[..., torch.optim.Optimizer]
SchedulerFn = Callable[..., "Scheduler"]
OPTIMIZERS: Registry[OptimizerFn] = Registry("optimizer")
SCHEDULERS: Registry[SchedulerFn] = Registry("scheduler")
# Arguments build_scheduler supplies itself; everything else a scheduler function declares is user-facing.
_SCHEDULER_FIXED = ("optimizer", "epochs", "monitor")


# --- optimizers ---------------------------------------------------------------------------------
def register_optimizer(name: str) -> Callable[[OptimizerFn], OptimizerFn]:
    """Register ``fn(params, lr, weight_decay, momentum, nesterov, betas) -> Optimizer`` as ``name``."""

    return OPTIMIZERS.register(name)


@register_optimizer("adam")
def _adam(params, lr, weight_decay, momentum, nesterov, betas) -> torch.optim.Optimizer:
    # Adam's weight_decay is a plain L2 penalty added to the gradient (what Keras' kernel L2 and the "L2" of
    # a reference GTZAN project mean); use adamw for decoupled decay.
    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)


@register_optimizer("adamw")
def _adamw(params, lr, weight_decay, momentum, nesterov, betas) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)


@register_optimizer("sgd")
def _sgd(params, lr, weight_decay, momentum, nesterov, betas) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    name: str = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    betas: Sequence[float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """Optimizer ``name`` (adam, adamw, sgd) over ``params`` (parameters or param-group dicts).

    ``momentum``/``nesterov`` apply to sgd, ``betas`` to adam/adamw; the others ignore them.
    """
    build = OPTIMIZERS.get(name)
    if not lr > 0:
        raise ConfigError(f"optimizer lr={lr}; expected a positive number")
    if not weight_decay >= 0:
        raise ConfigError(f"optimizer weight_decay={weight_decay}; expected >= 0")
    if not 0 <= momentum < 1:
        raise ConfigError(f"optimizer momentum={momentum}; expected 0 <= momentum < 1")
    if name == "sgd" and nesterov and momentum == 0:
        raise ConfigError("optimizer nesterov=true needs momentum > 0")
    betas = tuple(float(b) for b in betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"optimizer betas={list(betas)}; expected two numbers in [0, 1)")
    return build(params, float(lr), float(weight_decay), float(momentum), bool(nesterov), betas)


# --- scheduler interface ------------------------------------------------------------------------
class Scheduler(ABC):
    """Base class: remembers each group's base learning rate and the number of epochs stepped."""

    name = "scheduler"

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.epoch = 0

    @property
    def lr(self) -> float:
        """Learning rate of the first parameter group (what the next epoch trains with)."""
        return float(self.optimizer.param_groups[0]["lr"])

    @abstractmethod
    def step(self, metric: float | None = None) -> None:
        """Advance one epoch (``metric``: the monitored validation value, for plateau schedules)."""

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "epoch": self.epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name", self.name) != self.name:
            raise ConfigError(
                f"scheduler state is for '{state['name']}' but the config asks for '{self.name}'"
            )
        if len(state["base_lrs"]) != len(self.optimizer.param_groups):
            raise ConfigError(
                f"scheduler state has {len(state['base_lrs'])} parameter groups, the optimizer "
                f"{len(self.optimizer.param_groups)}"
            )
        self.epoch = int(state["epoch"])
        self.base_lrs = [float(lr) for lr in state["base_lrs"]]


class EpochScheduler(Scheduler):
    """A schedule that is a pure function of the epoch: ``lr = schedule(t, base_lr)``.

    Resumed with a different schedule (``--resume train.epochs=40`` after 20 epochs of a 30-epoch cosine), the
    new schedule is scaled to the learning rate the run had reached, so training continues from there instead
    of jumping back up; resumed with the same schedule, nothing changes.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Callable[[int, float], float]):
        super().__init__(optimizer)
        self.schedule = schedule
        self.scales = [1.0] * len(self.base_lrs)
        self._apply()  # the first epoch already trains with lr(0) (e.g. the first warm-up value)

    def _rate(self, epoch: int, group: int) -> float:
        return self.scales[group] * self.schedule(epoch, self.base_lrs[group])

    def _apply(self) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = self._rate(self.epoch, i)

    def step(self, metric: float | None = None) -> None:
        self.epoch += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        # the rates the last trained epoch used: where a longer schedule continues from
        used = [self._rate(self.epoch - 1, i) if self.epoch else float(g["lr"])
                for i, g in enumerate(self.optimizer.param_groups)]
        return {**super().state_dict(), "scales": list(self.scales), "used_lrs": used}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.scales = [float(v) for v in state.get("scales", self.scales)]
        if self.epoch:
            for i, used in enumerate(state.get("used_lrs", [])[: len(self.scales)]):
                now = self._rate(self.epoch - 1, i)  # what this schedule says the last epoch used
                if now > 0 and not math.isclose(now, used, rel_tol=1e-9):
                    self.scales[i] *= used / now  # the new shape, from the rate the run had reached
        self._apply()


class PlateauScheduler(Scheduler):
    """Multiply the learning rate by ``factor`` when the metric has not improved (by more than
    ``min_delta``) for more than ``patience`` epochs; same rule as ``torch.optim.lr_scheduler.
    ReduceLROnPlateau`` with an absolute threshold and no cooldown. A NaN metric counts as no improvement."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        factor: float,
        patience: int,
        mode: str,
        min_delta: float,
        min_lr: float,
    ):
        super().__init__(optimizer)
        self.factor, self.patience, self.mode = factor, patience, mode
        self.min_delta, self.min_lr = min_delta, min_lr
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_epochs = 0

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, metric: float | None = None) -> None:
        if metric is None:
            raise ConfigError("scheduler 'plateau' needs the monitored validation metric at every step")
        self.epoch += 1
        value = float(metric)
        if self._improved(value):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            for group in self.optimizer.param_groups:
                group["lr"] = max(group["lr"] * self.factor, self.min_lr)
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        lrs = [float(group["lr"]) for group in self.optimizer.param_groups]
        return {**super().state_dict(), "best": self.best, "bad_epochs": self.bad_epochs, "lrs": lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])
        for group, lr in zip(self.optimizer.param_groups, state["lrs"], strict=True):
            group["lr"] = float(lr)


# --- scheduler registry -------------------------------------------------------------------------
def register_scheduler(name: str) -> Callable[[SchedulerFn], SchedulerFn]:
    """Register ``fn(optimizer, epochs, [monitor,] **kwargs) -> Scheduler`` as ``name``.

    ``epochs`` is the planned number of epochs (None when unknown); ``monitor`` (optional parameter) is
    the monitored metric's name; every other parameter needs a default and becomes a config key.
    """

    def decorator(fn: SchedulerFn) -> SchedulerFn:
        for param in list(inspect.signature(fn).parameters.values())[2:]:
            if param.name not in _SCHEDULER_FIXED and param.default is param.empty:
                raise TypeError(f"scheduler '{name}': argument '{param.name}' needs a default")
        return SCHEDULERS.add(name, fn)

    return decorator


def scheduler_kwargs(name: str) -> dict[str, Any]:
    """The ``scheduler_args`` keys scheduler ``name`` accepts, with their defaults."""
    params = inspect.signature(SCHEDULERS.get(name)).parameters.values()
    return {p.name: p.default for p in params if p.name not in _SCHEDULER_FIXED}


def check_training_settings(train: Any) -> None:
    """The optimizer and scheduler a ``TrainConfig`` names, and the scheduler's argument names: checked before
    any data is read (the objects themselves need the model and the epochs)."""
    if train.optimizer is not None:
        OPTIMIZERS.get(train.optimizer)
    if train.scheduler is not None:
        valid = scheduler_kwargs(train.scheduler)
        for key, value in train.scheduler_args.items():
            if key not in valid:
                hint = did_you_mean(key, valid) or "; it takes no arguments"
                raise ConfigError(f"train.scheduler_args: scheduler '{train.scheduler}' has no argument '{key}'{hint}")
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if isinstance(valid[key], (int, float)) and not isinstance(valid[key], bool) and not (
                    number and math.isfinite(value)):  # {gamma: nan} is the string 'nan' in YAML (.nan the float)
                raise ConfigError(f"train.scheduler_args.{key}={value!r}: scheduler '{train.scheduler}' expects a "
                                  f"finite number (default {valid[key]!r})")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str = "none",
    epochs: int | None = None,
    monitor: str | None = None,
    **kwargs: Any,
) -> Scheduler:
    """Scheduler ``name`` for ``optimizer`` over ``epochs`` epochs; ``kwargs`` are its own settings.

    ``monitor`` (the metric passed to ``step``) lets ``plateau`` infer ``mode`` (loss -> min, else max).
    """
    valid = scheduler_kwargs(name)
    for key in kwargs:
        if key not in valid:
            hint = did_you_mean(key, valid) or "; it takes no arguments"
            raise ConfigError(f"scheduler '{name}' has no argument '{key}'{hint}")
    if epochs is not None and (int(epochs) != epochs or epochs < 1):
        raise ConfigError(f"scheduler '{name}': epochs={epochs}; expected a positive int")
    fn = SCHEDULERS.get(name)
    extra = {"monitor": monitor} if "monitor" in inspect.signature(fn).parameters else {}
    scheduler = fn(optimizer, epochs, **extra, **kwargs)
    scheduler.name = name
    return scheduler


def _need_epochs(name: str, epochs: int | None) -> int:
    if epochs is None:
        raise ConfigError(f"scheduler '{name}' needs train.epochs (the length of the schedule)")
    return int(epochs)


@register_scheduler("none")
def _none(optimizer: torch.optim.Optimizer, epochs: int | None) -> Scheduler:
    """Constant learning rate."""
    return EpochScheduler(optimizer, lambda t, base: base)


@register_scheduler("exponential")
def _exponential(optimizer: torch.optim.Optimizer, epochs: int | None, gamma: float = 0.95) -> Scheduler:
    """``lr(t) = base * gamma**t`` (gamma 0.95, as in a reference GTZAN project)."""
    if not gamma > 0:
        raise ConfigError(f"scheduler 'exponential': gamma={gamma}; expected > 0")
    return EpochScheduler(optimizer, lambda t, base: base * gamma**t)


@register_scheduler("step")
def _step(optimizer: torch.optim.Optimizer, epochs: int | None, step_size: int = 10, gamma: float = 0.1) -> Scheduler:
    """``lr(t) = base * gamma**(t // step_size)``."""
    if int(step_size) != step_size or step_size < 1:
        raise ConfigError(f"scheduler 'step': step_size={step_size}; expected a positive int")
    if not gamma > 0:
        raise ConfigError(f"scheduler 'step': gamma={gamma}; expected > 0")
    return EpochScheduler(optimizer, lambda t, base: base * gamma ** (t // int(step_size)))


@register_scheduler("cosine")
def _cosine(
    optimizer: torch.optim.Optimizer, epochs: int | None, eta_min: float = 0.0, warmup_epochs: int = 0
) -> Scheduler:
    """Linear warm-up ``lr(t) = base * (t + 1) / (W + 1)`` for ``t < W``, then cosine annealing
    ``lr(t) = eta_min + (base - eta_min) * (1 + cos(pi * (t - W) / (E - W))) / 2`` (held at ``eta_min``
    after ``E`` epochs). With ``W = 0`` this is ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=E)``."""
    total = _need_epochs("cosine", epochs)
    warmup = int(warmup_epochs)
    if warmup != warmup_epochs or not 0 <= warmup < total:
        raise ConfigError(f"scheduler 'cosine': warmup_epochs={warmup_epochs}; expected an int in [0, epochs={total})")
    if not eta_min >= 0:
        raise ConfigError(f"scheduler 'cosine': eta_min={eta_min}; expected >= 0")

    def schedule(t: int, base: float) -> float:
        if t < warmup:
            return base * (t + 1) / (warmup + 1)
        progress = min(t - warmup, total - warmup) / (total - warmup)
        return eta_min + (base - eta_min) * (1 + math.cos(math.pi * progress)) / 2

    return EpochScheduler(optimizer, schedule)


def falling_sigmoid_factor(
    t: int, epochs: int, final_factor: float = 0.01, steepness: float = 10.0, midpoint: float = 0.5
) -> float:
    """The falling-sigmoid multiplier at epoch ``t`` of ``epochs``: 1 at ``t = 0``, ``final_factor`` at
    ``t = epochs - 1`` (and after).

    With ``s = t / (epochs - 1)`` and ``g(s) = 1 / (1 + exp(steepness * (s - midpoint)))``::

        factor(t) = final_factor + (1 - final_factor) * (g(s) - g(1)) / (g(0) - g(1))

    i.e. a logistic curve rescaled to end exactly at 1 and ``final_factor``. Its three phases: an almost
    flat high start (s << midpoint), a decay centred on ``midpoint`` whose width is ~4/steepness of the
    run, and an almost flat low tail (s >> midpoint).
    """
    if epochs <= 1:
        return 1.0
    s = min(max(t, 0), epochs - 1) / (epochs - 1)

    def g(x: float) -> float:
        return 1.0 / (1.0 + math.exp(steepness * (x - midpoint)))

    return final_factor + (1.0 - final_factor) * (g(s) - g(1.0)) / (g(0.0) - g(1.0))


@register_scheduler("falling_sigmoid")
def _falling_sigmoid(
    optimizer: torch.optim.Optimizer,
    epochs: int | None,
    final_factor: float = 0.01,
    steepness: float = 10.0,
    midpoint: float = 0.5,
) -> Scheduler:
    """The teacher schedule of González Poy (2022) for DCASE 2022 Task 1 ("Función de optimización sigmoide",
    after Macêdo et al. 2021, "Training Aware Sigmoidal Optimizer"): three phases, (1) a high learning rate
    to cross saddle points fast, (2) a progressive decay into the minimum found, (3) a very low, flat rate
    to settle. ``lr(t) = base * falling_sigmoid_factor(t, epochs, ...)``. The thesis gives no constants;
    the defaults fall two decades (TASO's 1e-1 -> 1e-3 range) with the decay centred mid-run."""
    total = _need_epochs("falling_sigmoid", epochs)
    if not 0 <= final_factor <= 1:
        raise ConfigError(f"scheduler 'falling_sigmoid': final_factor={final_factor}; expected in [0, 1]")
    if not steepness > 0:
        raise ConfigError(f"scheduler 'falling_sigmoid': steepness={steepness}; expected > 0")
    if not 0 <= midpoint <= 1:
        raise ConfigError(f"scheduler 'falling_sigmoid': midpoint={midpoint}; expected in [0, 1] (fraction of the run)")
    return EpochScheduler(
        optimizer, lambda t, base: base * falling_sigmoid_factor(t, total, final_factor, steepness, midpoint)
    )


@register_scheduler("plateau")
def _plateau(
    optimizer: torch.optim.Optimizer,
    epochs: int | None,
    monitor: str | None = None,
    factor: float = 0.5,
    patience: int = 2,
    mode: str | None = None,
    min_delta: float = 0.0,
    min_lr: float = 0.0,
) -> Scheduler:
    """Reduce on plateau (factor 0.5, patience 2 or 5 in a reference GTZAN project). ``mode`` "min"/"max"; left out, it
    follows the monitored metric (loss/log_loss -> min, otherwise max), and "min" without one."""
    if mode is None:
        mode = metric_mode(monitor) if monitor else "min"
    if mode not in ("min", "max"):
        raise ConfigError(f"scheduler 'plateau': mode={mode!r}; expected 'min' or 'max'")
    if not 0 < factor < 1:
        raise ConfigError(f"scheduler 'plateau': factor={factor}; expected 0 < factor < 1")
    if int(patience) != patience or patience < 0:
        raise ConfigError(f"scheduler 'plateau': patience={patience}; expected a non-negative int")
    if not min_delta >= 0 or not min_lr >= 0:
        raise ConfigError(f"scheduler 'plateau': min_delta={min_delta}, min_lr={min_lr}; expected >= 0")
    return PlateauScheduler(optimizer, float(factor), int(patience), mode, float(min_delta), float(min_lr))
