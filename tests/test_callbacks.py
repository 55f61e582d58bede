"""Early stopping / best tracking: patience logic, modes, state round-trip."""

from __future__ import annotations

import math

import pytest

from audioclf.errors import ConfigError
from audioclf.training.callbacks import BestTracker, EarlyStopping, metric_mode


def _run(stopper: EarlyStopping, values: list[float]) -> tuple[list[bool], int | None]:
    """Per-epoch 'improved' flags, and the 1-based epoch after which training stops (None: never)."""
    improved, stopped = [], None
    for epoch, value in enumerate(values, start=1):
        improved.append(stopper.update(value))
        if stopper.should_stop:
            stopped = epoch
            break
    return improved, stopped


@pytest.mark.parametrize(
    "metric, mode",
    [("loss", "min"), ("log_loss", "min"), ("val/log_loss", "min"), ("kd_loss", "min"),
     ("accuracy", "max"), ("lwlrap", "max"), ("mAP", "max"), ("val/accuracy", "max")],
)
def test_metric_mode(metric, mode):
    assert metric_mode(metric) == mode
    assert EarlyStopping(metric).mode == mode


def test_patience_counts_consecutive_epochs_without_improvement():
    # The AudioSet-embeddings recipe (configs/audioset_embeddings.yaml): early stopping on mAP with patience 3.
    stopper = EarlyStopping("mAP", patience=3)
    improved, stopped = _run(stopper, [0.10, 0.20, 0.19, 0.20, 0.25, 0.24, 0.23, 0.25, 0.30])
    # 0.20 again (epoch 4) is not better than 0.20; the counter resets at 0.25 (epoch 5), then 3 misses
    assert improved == [True, True, False, False, True, False, False, False]
    assert stopped == 8
    assert (stopper.best, stopper.best_epoch) == (0.25, 5)


def test_min_mode_and_min_delta():
    stopper = EarlyStopping("loss", patience=2, min_delta=0.05)
    improved, stopped = _run(stopper, [1.0, 0.97, 0.90, 0.88, 0.86])
    # 0.97 is within min_delta of 1.0; 0.90 beats it by 0.1; 0.88, 0.86 only by < 0.05
    assert improved == [True, False, True, False, False]
    assert stopped == 5 and stopper.best == 0.90


def test_patience_zero_and_none():
    assert _run(EarlyStopping("accuracy", patience=0), [0.5, 0.6, 0.6])[1] == 3
    tracker = EarlyStopping("accuracy", patience=None)
    improved, stopped = _run(tracker, [0.5, 0.4, 0.3, 0.2, 0.1, 0.6])
    assert stopped is None and improved[-1] and tracker.best == 0.6


def test_nan_never_improves():
    stopper = EarlyStopping("loss", patience=2)
    improved, stopped = _run(stopper, [math.nan, 1.0, math.nan, math.nan])
    assert improved == [False, True, False, False] and stopped == 4 and stopper.best == 1.0


def test_explicit_mode_overrides_name():
    stopper = EarlyStopping("custom_score", mode="min", patience=1)
    assert _run(stopper, [3.0, 2.0, 2.5]) == ([True, True, False], 3)


def test_best_tracker_never_stops():
    tracker = BestTracker("lwlrap")
    flags, stopped = _run(tracker, [0.3, 0.2, 0.1, 0.05, 0.01, 0.001, 0.4])
    assert flags == [True, False, False, False, False, False, True] and stopped is None


def test_state_dict_round_trip_resumes_the_same_decisions():
    values = [0.3, 0.4, 0.35, 0.38, 0.41, 0.39, 0.40, 0.40]
    reference = EarlyStopping("accuracy", patience=3)
    expected = _run(reference, values)

    first = EarlyStopping("accuracy", patience=3)
    head, _ = _run(first, values[:5])
    resumed = EarlyStopping("accuracy", patience=3)
    resumed.load_state_dict(first.state_dict())
    tail, stopped = _run(resumed, values[5:])
    assert (head + tail, stopped + 5) == expected
    assert resumed.state_dict() == reference.state_dict()


def test_state_for_another_metric_is_rejected_and_bad_args():
    state = EarlyStopping("accuracy").state_dict()
    with pytest.raises(ConfigError, match="tracks accuracy \\(max\\).*monitors loss \\(min\\)"):
        EarlyStopping("loss").load_state_dict(state)
    with pytest.raises(ConfigError, match="mode='up'"):
        EarlyStopping("loss", mode="up")
    with pytest.raises(ConfigError, match="patience=-1"):
        EarlyStopping("loss", patience=-1)
