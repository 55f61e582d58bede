"""Test-time augmentation in the predictors: tta=1 is the plain prediction, tta=N averages N distinct
time-shifted copies of each window (a stub model records what it was given)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audioclf.data.audio import clip_windows, write_audio
from audioclf.deploy.predictor import Predictor, WindowedPredictor, check_tta, tta_shifts
from audioclf.errors import ConfigError

SR, CLIP = 8000, 4000


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Recording(WindowedPredictor):
    """Three classes scored from where a window's energy lies (so a time shift changes the answer)."""

    classes, task, sample_rate, clip_samples = ["a", "b", "c"], "single_label", SR, CLIP

    def __init__(self, tta=1):
        self.tta, self.seen = tta, []

    def window_probabilities(self, windows):
        self.seen.append(np.array(windows))
        thirds = np.square(windows.astype(np.float64)).reshape(len(windows), 4, -1).sum(-1)[:, :3]
        return _softmax(10 * thirds / (thirds.sum(1, keepdims=True) + 1e-12))


def _recording(n=3 * CLIP + 123, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * np.linspace(0.01, 1.0, n)).astype(np.float32)  # louder towards the end


def test_tta_1_is_the_plain_prediction_exactly():
    wave = _recording()
    plain = Recording()
    windows = np.asarray(clip_windows(wave, CLIP)[:])
    expected = plain.window_probabilities(windows).mean(0)
    stub = Recording(tta=1)
    np.testing.assert_array_equal(stub.predict_wave(wave), expected)
    assert len(stub.seen) == 1 and np.array_equal(stub.seen[0], windows)  # scored once, unchanged


@pytest.mark.parametrize("tta", [2, 4])
def test_tta_averages_n_distinct_shifted_copies(tta):
    wave = _recording()
    stub = Recording(tta=tta)
    probs = stub.wave_window_probabilities(wave)
    windows = np.asarray(clip_windows(wave, CLIP)[:])
    assert len(stub.seen) == tta  # one call per copy: the batch size stays as given
    shifts = tta_shifts(CLIP, tta)
    assert shifts[0] == 0 and len(set(shifts)) == tta and max(shifts) < CLIP // 2  # within the hop
    for copy, shift in zip(stub.seen, shifts):
        np.testing.assert_array_equal(copy, np.roll(windows, shift, axis=-1))
    for i in range(tta):
        for j in range(i):
            assert not np.array_equal(stub.seen[i], stub.seen[j])
    expected = np.mean([Recording().window_probabilities(copy) for copy in stub.seen], axis=0)
    np.testing.assert_allclose(probs, expected, rtol=1e-12)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-12)
    assert not np.allclose(probs, Recording().window_probabilities(windows))  # the copies changed the answer


def test_tta_on_files_goes_through_the_same_copies(tmp_path):
    path = write_audio(tmp_path / "long.wav", _recording(), SR, subtype="FLOAT")
    stub = Recording(tta=3)
    probs = stub.file_window_probabilities(path)
    assert len(stub.seen) == 3 and probs.shape == (len(stub.seen[0]), 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(probs, Recording(tta=3).wave_window_probabilities(_recording()), rtol=1e-6)
    assert len(stub.timeline(path).probs) == len(probs)  # /timeline scores the same averaged windows


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.stack([x[:, : CLIP // 2].square().sum(1), x[:, CLIP // 2 :].square().sum(1)], dim=1)


def test_predictor_takes_tta():
    model = Model()
    predictor = Predictor(model, ["x", "y"], "single_label", SR, CLIP, tta=2)
    assert predictor.tta == 2
    probs = predictor.predict_wave(_recording())
    assert len(model.seen) == 2 and not torch.equal(model.seen[0], model.seen[1])
    assert probs.sum() == pytest.approx(1.0)
    plain = Predictor(Model(), ["x", "y"], "single_label", SR, CLIP)
    assert plain.tta == 1 and not np.allclose(plain.predict_wave(_recording()), probs)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_bad_tta_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="tta"):
        check_tta(bad)
    with pytest.raises(ConfigError, match="tta"):
        Recording(tta=bad)
