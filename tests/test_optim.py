"""Optimizers and per-epoch schedulers: exact learning rates, against hand values and torch's schedulers."""

from __future__ import annotations

import math

import pytest
import torch

from audioclf.errors import ConfigError
from audioclf.training.optim import (
    SCHEDULERS,
    EpochScheduler,
    build_optimizer,
    build_scheduler,
    falling_sigmoid_factor,
    register_scheduler,
)


def _optimizer(lr: float = 1.0, name: str = "sgd") -> torch.optim.Optimizer:
    return build_optimizer([torch.nn.Parameter(torch.zeros(2))], name=name, lr=lr)


def _lrs(scheduler, n_epochs: int, metrics=None) -> list[float]:
    """The learning rate each epoch trains with (read before the end-of-epoch step)."""
    values = []
    for epoch in range(n_epochs):
        values.append(scheduler.lr)
        scheduler.step(None if metrics is None else metrics[epoch])
    return values


# --- optimizers ---------------------------------------------------------------------------------
def test_build_optimizer_types_and_hyperparameters():
    params = [torch.nn.Parameter(torch.zeros(3))]
    adam = build_optimizer(params, "adam", lr=3e-4, weight_decay=1e-4, betas=[0.8, 0.99])
    assert type(adam) is torch.optim.Adam
    assert adam.defaults["lr"] == 3e-4 and adam.defaults["betas"] == (0.8, 0.99)
    assert adam.defaults["weight_decay"] == 1e-4
    assert type(build_optimizer(params, "adamw", weight_decay=0.01)) is torch.optim.AdamW
    sgd = build_optimizer(params, "sgd", lr=0.1, momentum=0.8, nesterov=True)
    assert type(sgd) is torch.optim.SGD
    assert (sgd.defaults["momentum"], sgd.defaults["nesterov"]) == (0.8, True)


def test_sgd_step_matches_hand_computation():
    # loss = sum(w^2)/2 -> grad = w. Two momentum steps: v1 = g0, w1 = w0 - lr*v1; v2 = m*v1 + g1, ...
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = build_optimizer([w], "sgd", lr=0.1, momentum=0.5)
    expected, v = torch.tensor([1.0, -2.0]), torch.zeros(2)
    for _ in range(2):
        opt.zero_grad()
        (w.pow(2).sum() / 2).backward()
        opt.step()
        v = 0.5 * v + expected
        expected = expected - 0.1 * v
    torch.testing.assert_close(w.detach(), expected)


def test_param_groups_keep_their_own_lr_and_schedule():
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1},
              {"params": [torch.nn.Parameter(torch.zeros(1))]}]
    opt = build_optimizer(groups, "adam", lr=1.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 1.0]
    scheduler = build_scheduler(opt, "exponential", gamma=0.5)
    scheduler.step()
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.5]


def test_optimizer_errors():
    params = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ConfigError, match="unknown optimizer 'adamm'.*adam"):
        build_optimizer(params, "adamm")
    with pytest.raises(ConfigError, match="lr=0"):
        build_optimizer(params, "adam", lr=0)
    with pytest.raises(ConfigError, match="nesterov"):
        build_optimizer(params, "sgd", momentum=0.0, nesterov=True)


# --- schedulers: exact values -------------------------------------------------------------------
def test_none_is_constant():
    assert _lrs(build_scheduler(_optimizer(0.3), "none", epochs=4), 4) == [0.3] * 4


def test_exponential_hand_values_and_torch():
    got = _lrs(build_scheduler(_optimizer(1.0), "exponential"), 4)  # default gamma 0.95 (a reference GTZAN project)
    assert got == pytest.approx([1.0, 0.95, 0.9025, 0.857375])
    opt = _optimizer(1.0)
    ref = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95)
    expected = []
    for _ in range(4):
        expected.append(opt.param_groups[0]["lr"])
        opt.step(), ref.step()
    assert got == pytest.approx(expected)


def test_step_hand_values():
    got = _lrs(build_scheduler(_optimizer(1.0), "step", step_size=2, gamma=0.1), 6)
    assert got == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_cosine_hand_values_and_torch():
    got = _lrs(build_scheduler(_optimizer(1.0), "cosine", epochs=4), 6)
    # 0.5 * (1 + cos(pi * t / 4)), held at eta_min after the last epoch
    assert got == pytest.approx([1.0, 0.5 + 0.5 / math.sqrt(2), 0.5, 0.5 - 0.5 / math.sqrt(2), 0.0, 0.0])
    opt = _optimizer(1.0)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    expected = []
    for _ in range(4):
        expected.append(opt.param_groups[0]["lr"])
        opt.step(), ref.step()
    assert got[:4] == pytest.approx(expected)


def test_cosine_with_warmup_and_eta_min():
    got = _lrs(build_scheduler(_optimizer(1.0), "cosine", epochs=5, warmup_epochs=2, eta_min=0.1), 5)
    # warm-up 1/3, 2/3; then 0.1 + 0.9 * (1 + cos(pi * k / 3)) / 2 for k = 0, 1, 2
    assert got == pytest.approx([1 / 3, 2 / 3, 1.0, 0.1 + 0.9 * 0.75, 0.1 + 0.9 * 0.25])


def test_plateau_reacts_to_metric_like_torch():
    losses = [1.0, 0.9, 0.95, 0.92, 0.91, 0.85, 0.9, 0.9, 0.9, 0.9]
    got = _lrs(build_scheduler(_optimizer(1.0), "plateau", patience=2, factor=0.5), len(losses), losses)
    # best 0.9 at epoch 2; epochs 3,4,5 do not improve -> halved after the 3rd (> patience); 0.85 is new
    # best; 0.9 x3 -> halved again after the third.
    assert got == [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]
    opt = _optimizer(1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, threshold=0.0,
                                                     threshold_mode="abs")
    expected = []
    for value in losses:
        expected.append(opt.param_groups[0]["lr"])
        opt.step(), ref.step(value)
    assert got == expected


def test_plateau_mode_follows_monitor_and_min_delta():
    accuracy = [0.5, 0.6, 0.6, 0.6, 0.6]
    sched = build_scheduler(_optimizer(1.0), "plateau", monitor="accuracy", patience=1, factor=0.1)
    assert _lrs(sched, 5, accuracy) == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1])
    # min mode on an increasing accuracy would wrongly reduce
    sched = build_scheduler(_optimizer(1.0), "plateau", mode="min", patience=0, factor=0.1)
    assert _lrs(sched, 3, [0.5, 0.6, 0.7]) == pytest.approx([1.0, 1.0, 0.1])
    # improvements smaller than min_delta do not count
    sched = build_scheduler(_optimizer(1.0), "plateau", monitor="val/loss", patience=0, factor=0.5, min_delta=0.1)
    assert _lrs(sched, 3, [1.0, 0.95, 0.7]) == pytest.approx([1.0, 1.0, 0.5])


def test_plateau_needs_metric_and_respects_min_lr():
    sched = build_scheduler(_optimizer(1.0), "plateau", patience=0, factor=0.1, min_lr=0.05)
    with pytest.raises(ConfigError, match="needs the monitored validation metric"):
        sched.step()
    sched = build_scheduler(_optimizer(1.0), "plateau", patience=0, factor=0.1, min_lr=0.05)
    assert _lrs(sched, 4, [1.0, 1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 0.1, 0.05])


def test_falling_sigmoid_three_phases():
    epochs = 30
    lrs = _lrs(build_scheduler(_optimizer(1e-3), "falling_sigmoid", epochs=epochs), epochs + 2)
    assert lrs[0] == pytest.approx(1e-3) and lrs[epochs - 1] == pytest.approx(1e-5)
    assert lrs[epochs:] == pytest.approx([1e-5, 1e-5])  # flat after the planned run
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    drops = [lrs[0] - lrs[10], lrs[10] - lrs[20], lrs[20] - lrs[29]]
    # fast (high) start, most of the decay in the middle third, flat tail
    assert drops[1] > 3 * drops[0] and drops[1] > 3 * drops[2]
    assert lrs[5] > 0.95e-3 and lrs[25] < 0.05e-3
    # the midpoint value of the rescaled logistic: (1/2 - g(1)) / (g(0) - g(1)) with g(0) = 1 - g(1)
    g1 = 1 / (1 + math.exp(5.0))
    mid = 0.01 + 0.99 * (0.5 - g1) / (1 - 2 * g1)
    assert falling_sigmoid_factor(15, 31) == pytest.approx(mid)
    assert mid == pytest.approx(0.505)


def test_falling_sigmoid_parameters_move_the_decay():
    early = [falling_sigmoid_factor(t, 21, midpoint=0.25) for t in range(21)]
    late = [falling_sigmoid_factor(t, 21, midpoint=0.75) for t in range(21)]
    assert early[0] == late[0] == 1.0 and early[20] == pytest.approx(late[20]) == pytest.approx(0.01)
    assert early[10] < 0.1 and late[10] > 0.9  # mid-run: already low vs still high
    assert all(e <= l for e, l in zip(early, late))
    steep = [falling_sigmoid_factor(t, 21, steepness=40.0) for t in range(21)]
    assert steep[7] > 0.99 and steep[13] < 0.02  # near a step function
    assert falling_sigmoid_factor(0, 1) == 1.0


@pytest.mark.parametrize(
    "name, kwargs, metrics",
    [("none", {}, None), ("exponential", {"gamma": 0.5}, None), ("step", {"step_size": 2}, None),
     ("cosine", {"warmup_epochs": 1}, None), ("falling_sigmoid", {}, None),
     ("plateau", {"patience": 1}, [1.0, 0.9, 0.95, 0.96, 0.97, 0.99, 0.7, 0.8])],
)
def test_state_dict_round_trip_continues_identically(name, kwargs, metrics):
    metrics = metrics or [None] * 8
    full = build_scheduler(_optimizer(1.0), name, epochs=8, **kwargs)
    expected = _lrs(full, 8, metrics)

    first = build_scheduler(_optimizer(1.0), name, epochs=8, **kwargs)
    head = _lrs(first, 4, metrics[:4])
    state = first.state_dict()
    # resume: a fresh optimizer at the configured lr, the optimizer state, then the scheduler state
    opt = _optimizer(1.0)
    opt.load_state_dict(first.optimizer.state_dict())
    resumed = build_scheduler(opt, name, epochs=8, **kwargs)
    resumed.load_state_dict(state)
    assert head + _lrs(resumed, 4, metrics[4:]) == pytest.approx(expected)


def test_state_dict_of_another_scheduler_is_rejected():
    state = build_scheduler(_optimizer(), "cosine", epochs=3).state_dict()
    with pytest.raises(ConfigError, match="'cosine'.*'plateau'"):
        build_scheduler(_optimizer(), "plateau").load_state_dict(state)


def test_scheduler_name_and_kwarg_errors():
    with pytest.raises(ConfigError, match="unknown scheduler 'cosin'.*cosine"):
        build_scheduler(_optimizer(), "cosin", epochs=3)
    with pytest.raises(ConfigError, match="scheduler 'plateau' has no argument 'patient'.*patience"):
        build_scheduler(_optimizer(), "plateau", patient=3)
    with pytest.raises(ConfigError, match="needs train.epochs"):
        build_scheduler(_optimizer(), "cosine")
    with pytest.raises(ConfigError, match="warmup_epochs=5"):
        build_scheduler(_optimizer(), "cosine", epochs=5, warmup_epochs=5)
    with pytest.raises(ConfigError, match="mode='up'"):
        build_scheduler(_optimizer(), "plateau", mode="up")


def test_register_a_new_scheduler():
    @register_scheduler("linear")
    def _linear(optimizer, epochs, end: float = 0.0):
        return EpochScheduler(optimizer, lambda t, base: base + (end - base) * min(t, epochs) / epochs)

    try:
        assert _lrs(build_scheduler(_optimizer(1.0), "linear", epochs=4), 5) == pytest.approx([1, 0.75, 0.5, 0.25, 0])
    finally:
        SCHEDULERS.remove("linear")
