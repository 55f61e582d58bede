"""Losses on logits and logits -> probabilities, against hand (NumPy/SciPy) computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit, log_softmax, softmax

from audioclf.errors import ConfigError, DataError
from audioclf.training.losses import build_loss, probabilities


def _logits(n: int = 6, c: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


def test_cross_entropy_indices_vs_hand():
    logits = _logits()
    y = torch.tensor([0, 3, 1, 1, 2, 0])
    expected = -np.mean(log_softmax(logits.numpy(), axis=1)[np.arange(6), y.numpy()])
    assert build_loss("single_label")(logits, y).item() == pytest.approx(expected, rel=1e-12)


def test_one_hot_soft_targets_equal_index_targets():
    logits = _logits()
    y = torch.tensor([0, 3, 1, 1, 2, 0])
    one_hot = torch.nn.functional.one_hot(y, 4).double()
    for smoothing in (0.0, 0.1):
        loss = build_loss("single_label", label_smoothing=smoothing)
        assert loss(logits, one_hot).item() == pytest.approx(loss(logits, y).item(), rel=1e-12)


def test_mixup_soft_targets_vs_hand():
    logits = _logits()
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 4, 6), rng.integers(0, 4, 6)
    lam = 0.3
    targets = lam * np.eye(4)[a] + (1 - lam) * np.eye(4)[b]  # MixUp labels
    logp = log_softmax(logits.numpy(), axis=1)
    expected = -np.mean((targets * logp).sum(axis=1))
    got = build_loss("single_label")(logits, torch.from_numpy(targets))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # ... which is the same mixture of the two index losses
    ce = build_loss("single_label")
    mixed = lam * ce(logits, torch.from_numpy(a)) + (1 - lam) * ce(logits, torch.from_numpy(b))
    assert got.item() == pytest.approx(mixed.item(), rel=1e-12)


def test_label_smoothing_vs_hand():
    logits, eps = _logits(), 0.2
    y = np.array([2, 1, 0, 3, 3, 1])
    smoothed = (1 - eps) * np.eye(4)[y] + eps / 4
    expected = -np.mean((smoothed * log_softmax(logits.numpy(), axis=1)).sum(axis=1))
    got = build_loss("single_label", label_smoothing=eps)(logits, torch.from_numpy(y))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_bce_with_logits_vs_hand():
    logits = _logits(5, 3)
    targets = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 1]], dtype=np.float64)
    p = expit(logits.numpy())
    expected = -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    got = build_loss("multi_label")(logits, torch.from_numpy(targets))
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # bool targets (e.g. AudioSet y) work the same
    assert build_loss("multi_label")(logits, torch.from_numpy(targets.astype(bool))).item() == pytest.approx(expected)


def test_bce_label_smoothing_and_extreme_logits_are_finite():
    logits = torch.tensor([[40.0, -40.0]], dtype=torch.float64)
    targets = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    got = build_loss("multi_label")(logits, targets).item()
    assert got == pytest.approx(40.0, rel=1e-9)  # log(1 + e^40) ~ 40, no overflow to inf
    eps = 0.1
    smoothed = targets.numpy() * (1 - eps) + eps / 2
    x = logits.numpy()
    # -log(sigmoid(x)) = log(1 + e^-x), -log(1 - sigmoid(x)) = log(1 + e^x), written overflow-free
    expected = np.mean(smoothed * np.logaddexp(0, -x) + (1 - smoothed) * np.logaddexp(0, x))
    assert expected == pytest.approx(0.95 * 40 + 0.05 * 0, abs=1e-9)
    assert build_loss("multi_label", eps)(logits, targets).item() == pytest.approx(expected, rel=1e-12)


def test_loss_is_differentiable():
    logits = _logits().requires_grad_(True)
    build_loss("single_label")(logits, torch.tensor([0, 1, 2, 3, 0, 1])).backward()
    # d(mean CE)/d logits = (softmax - onehot) / N
    expected = (softmax(logits.detach().numpy(), axis=1) - np.eye(4)[[0, 1, 2, 3, 0, 1]]) / 6
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_probabilities():
    logits = _logits()
    np.testing.assert_allclose(probabilities("single_label", logits).numpy(), softmax(logits.numpy(), axis=1))
    np.testing.assert_allclose(probabilities("multi_label", logits).numpy(), expit(logits.numpy()))


def test_errors():
    with pytest.raises(ConfigError, match="task 'multilabel': expected one of"):
        build_loss("multilabel")
    with pytest.raises(ConfigError, match="task 'regression'"):
        probabilities("regression", _logits())
    with pytest.raises(ConfigError, match="label_smoothing=1.0"):
        build_loss("single_label", label_smoothing=1.0)
    with pytest.raises(DataError, match="targets of shape \\(6, 3\\)"):
        build_loss("single_label")(_logits(), torch.zeros(6, 3))
    with pytest.raises(DataError, match="integer class indices"):
        build_loss("single_label")(_logits(), torch.zeros(6))
    with pytest.raises(DataError, match="expected \\(6, 4\\)"):
        build_loss("multi_label")(_logits(), torch.zeros(6))


# --- generalised cross-entropy (train.loss=gce), Zhang & Sabuncu 2018 -------------------------------------------

def test_gce_by_hand_on_two_classes():
    logits = torch.tensor([[0.0, np.log(3.0)]] * 2, dtype=torch.float64)  # softmax (0.25, 0.75)
    loss = build_loss("single_label", training_loss="gce", gce_q=0.5)
    # (1 - p^q) / q: label 1 -> 2 (1 - sqrt(0.75)), label 0 -> 2 (1 - sqrt(0.25)) = 1
    assert loss(logits[:1], torch.tensor([1])).item() == pytest.approx(2 * (1 - np.sqrt(0.75)), rel=1e-12)
    assert loss(logits[:1], torch.tensor([0])).item() == pytest.approx(1.0, rel=1e-12)
    assert loss(logits, torch.tensor([1, 0])).item() == pytest.approx((2 * (1 - np.sqrt(0.75)) + 1) / 2, rel=1e-12)


def test_gce_limits_are_cross_entropy_and_mae():
    logits = _logits()
    y = torch.tensor([0, 3, 1, 1, 2, 0])
    p = softmax(logits.numpy(), axis=1)
    ce = build_loss("single_label")(logits, y).item()
    near_zero = build_loss("single_label", training_loss="gce", gce_q=1e-6)(logits, y).item()
    assert near_zero == pytest.approx(ce, rel=1e-4)
    mae = build_loss("single_label", training_loss="gce", gce_q=1.0)(logits, y).item()
    one_hot = np.eye(4)[y.numpy()]
    assert mae == pytest.approx(np.mean(1 - p[np.arange(6), y.numpy()]), rel=1e-12)
    assert mae == pytest.approx(np.mean(np.abs(one_hot - p).sum(axis=1)) / 2, rel=1e-12)  # half the L1 distance


def test_gce_soft_targets_are_linear_and_smoothing_is_the_task_s():
    logits = _logits()
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 4, 6), rng.integers(0, 4, 6)
    q = 0.7
    per_class = (1 - softmax(logits.numpy(), axis=1) ** q) / q
    targets = 0.3 * np.eye(4)[a] + 0.7 * np.eye(4)[b]
    loss = build_loss("single_label", training_loss="gce", gce_q=q)
    assert loss(logits, torch.from_numpy(targets)).item() == pytest.approx(np.mean((targets * per_class).sum(1)))
    smoothed = build_loss("single_label", label_smoothing=0.1, training_loss="gce", gce_q=q)
    expected = np.mean(((0.9 * np.eye(4)[a] + 0.1 / 4) * per_class).sum(1))
    assert smoothed(logits, torch.from_numpy(a)).item() == pytest.approx(expected, rel=1e-12)


def test_gce_multi_label_is_per_class_binary_gce():
    logits = _logits()
    targets = (np.random.default_rng(2).random((6, 4)) < 0.4).astype(np.float64)
    q = 0.7
    p = expit(logits.numpy())
    expected = np.mean(targets * (1 - p ** q) / q + (1 - targets) * (1 - (1 - p) ** q) / q)
    loss = build_loss("multi_label", training_loss="gce", gce_q=q)
    assert loss(logits, torch.from_numpy(targets)).item() == pytest.approx(expected, rel=1e-12)
    bce = build_loss("multi_label")(logits, torch.from_numpy(targets)).item()
    near_zero = build_loss("multi_label", training_loss="gce", gce_q=1e-6)(logits, torch.from_numpy(targets)).item()
    assert near_zero == pytest.approx(bce, rel=1e-4)


def test_gce_weighs_an_unlikely_label_less_than_cross_entropy():
    # The reason to use it: the gradient on a confidently contradicted label is CE's times p_y^q.
    logits = torch.tensor([[4.0, 0.0, 0.0]], requires_grad=True)
    build_loss("single_label", training_loss="gce", gce_q=0.7)(logits, torch.tensor([2])).backward()
    gce_grad = logits.grad.norm().item()
    logits.grad = None
    build_loss("single_label")(logits, torch.tensor([2])).backward()
    p = torch.softmax(logits.detach(), -1)[0, 2].item()
    assert gce_grad == pytest.approx(logits.grad.norm().item() * p ** 0.7, rel=1e-5)


def test_bad_gce_settings_are_one_line_config_errors():
    from audioclf.config import config_from_dict

    with pytest.raises(ConfigError, match="train.loss='focal': expected task | gce"):
        build_loss("single_label", training_loss="focal")
    with pytest.raises(ConfigError, match="train.gce_q"):
        build_loss("single_label", training_loss="gce", gce_q=0.0)
    with pytest.raises(ConfigError, match="train.gce_q"):
        config_from_dict({"train": {"gce_q": 1.5}})
    with pytest.raises(ConfigError, match="train.loss=gce: this model trains with its own bipolar_mse loss"):
        build_loss("multi_label", kind="bipolar_mse", training_loss="gce")
