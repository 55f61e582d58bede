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
