"""The weights' exponential moving average (Polyak & Juditsky 1992), with PyTorch's ``AveragedModel``: smoother
than the last step's weights on small, noisy datasets, and what gets validated, kept and deployed."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..errors import ConfigError

__all__ = ["moving_average", "ema_decay_for"]


def moving_average(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An EMA of ``model`` (parameters and buffers, e.g. BatchNorm statistics) with ``decay`` per step; None
    when ``decay`` is 0 or None."""
    if not decay:
        return None
    if isinstance(decay, bool) or not 0.0 < float(decay) < 1.0:
        raise ConfigError(f"train.ema={decay!r}: expected a decay in (0, 1), e.g. 0.999, or 0 (off)")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)


def ema_decay_for(total_steps: int) -> float:
    """A decay that averages over about the last tenth of a run's optimizer steps (horizon 10 .. 10,000 steps:
    0.9 .. 0.9999), so a short run's average is not stuck near its first weights."""
    horizon = max(10.0, min(10_000.0, total_steps / 10))
    return round(1.0 - 1.0 / horizon, 6)
