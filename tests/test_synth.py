"""The synthetic demo dataset: layout, determinism, labels, and that it needs a real model."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import find_peaks
from scipy.stats import kurtosis
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from audioclf.data.synth import DEMO_CLASSES, make_demo_dataset, synthesize_event
from audioclf.data.synth.demo import colored_noise, synthesize_clip

SR = 16000


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def dominant_freq(x: np.ndarray, sr: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


def test_classes():
    assert len(DEMO_CLASSES) >= 8 and len(set(DEMO_CLASSES)) == len(DEMO_CLASSES)
    assert all(c.isidentifier() for c in DEMO_CLASSES)  # safe as folder and column names


@pytest.mark.parametrize("cls", DEMO_CLASSES)
def test_synthesize_event_shape_level_and_determinism(cls):
    x = synthesize_event(cls, SR, 8000, np.random.default_rng(5))
    assert x.shape == (8000,) and np.isfinite(x).all()
    assert np.sqrt(np.mean(x**2)) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_array_equal(x, synthesize_event(cls, SR, 8000, np.random.default_rng(5)))
    assert not np.array_equal(x, synthesize_event(cls, SR, 8000, np.random.default_rng(6)))


def test_synthesize_event_rejects_unknown_class():
    with pytest.raises(ValueError, match="cls"):
        synthesize_event("violin", SR, 100, np.random.default_rng(0))


def test_events_have_their_physical_signature():
    rng = np.random.default_rng(0)
    n = SR  # 1 s
    for _ in range(5):
        assert 190 <= dominant_freq(synthesize_event("tone", SR, n, rng)) <= 2010
        chirp = synthesize_event("chirp", SR, n, rng)
        f_start, f_end = dominant_freq(chirp[: n // 8]), dominant_freq(chirp[-n // 8 :])
        assert max(f_start, f_end) / min(f_start, f_end) > 1.5  # a sweep of >= 2x end to end
        pluck = synthesize_event("pluck", SR, n, rng)
        assert np.sum(pluck[-n // 4 :] ** 2) < 0.5 * np.sum(pluck[: n // 4] ** 2)  # decays
        # Clicks are impulsive: far heavier tails than a tone (kurtosis of a sine is -1.5).
        assert kurtosis(synthesize_event("click_train", SR, n, rng)) > 3
    # Harmonic stack: energy at integer multiples of the lowest strong peak.
    x = synthesize_event("harmonic", SR, n, np.random.default_rng(3))
    spectrum = np.abs(np.fft.rfft(x * np.hanning(n), 8 * n))  # zero-padded: 1/8-Hz bins
    peaks, _ = find_peaks(spectrum, height=0.05 * spectrum.max(), distance=8 * 50)
    ratios = peaks / peaks.min()
    assert len(peaks) >= 2 and np.all(np.abs(ratios - np.round(ratios)) < 0.01)


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_colored_noise_slope(exponent):
    x = colored_noise(2**15, np.random.default_rng(0), exponent)
    assert np.sqrt(np.mean(x**2)) == pytest.approx(1.0)
    freqs, psd = librosa.fft_frequencies(sr=SR, n_fft=1024), np.mean(
        np.abs(librosa.stft(x, n_fft=1024)) ** 2, axis=1)
    band = (freqs > 100) & (freqs < 6000)
    slope = np.polyfit(np.log10(freqs[band]), np.log10(psd[band]), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.25)


def test_clip_level_is_random_but_never_clips():
    peaks = [np.abs(synthesize_clip([c], SR, 4000, np.random.default_rng(i))).max()
             for i, c in enumerate(DEMO_CLASSES * 3)]
    assert 0.09 < min(peaks) and max(peaks) < 0.9
    assert max(peaks) / min(peaks) > 2


def test_single_label_layout_and_determinism(tmp_path):
    root = make_demo_dataset(tmp_path / "a", n_per_class=3, seconds=0.5, seed=7)
    assert root == tmp_path / "a"
    assert sorted(p.name for p in root.iterdir()) == sorted(DEMO_CLASSES)
    for cls in DEMO_CLASSES:
        files = sorted((root / cls).glob("*.wav"))
        assert [f.name for f in files] == [f"{cls}_{i:04d}.wav" for i in range(3)]
        info = sf.info(files[0])
        assert info.samplerate == SR and info.frames == SR // 2 and info.channels == 1
    again = make_demo_dataset(tmp_path / "b", n_per_class=3, seconds=0.5, seed=7)
    assert digest(root) == digest(again)  # byte-identical
    other = make_demo_dataset(tmp_path / "c", n_per_class=3, seconds=0.5, seed=8)
    assert set(digest(other).values()).isdisjoint(digest(root).values())
    # Clip i of a class does not depend on how many clips are generated.
    more = make_demo_dataset(tmp_path / "d", n_per_class=4, seconds=0.5, seed=7)
    assert digest(more)["tone/tone_0002.wav"] == digest(root)["tone/tone_0002.wav"]


def test_multi_label_csv_and_audio(tmp_path):
    csv_path = make_demo_dataset(tmp_path / "ml", n_per_class=4, seconds=0.5, multi_label=True,
                                 max_events=3, seed=1)
    assert csv_path == tmp_path / "ml" / "labels.csv"
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["fname", "labels"]
    assert len(rows) == 4 * len(DEMO_CLASSES)
    counts = {c: 0 for c in DEMO_CLASSES}
    sizes = set()
    for row in rows:
        labels = row["labels"].split(",")
        assert 1 <= len(labels) <= 3 and len(set(labels)) == len(labels)
        assert set(labels) <= set(DEMO_CLASSES)
        sizes.add(len(labels))
        for label in labels:
            counts[label] += 1
        assert sf.info(tmp_path / "ml" / "audio" / row["fname"]).frames == SR // 2
    assert sizes == {1, 2, 3}
    assert min(counts.values()) >= 4  # every class occurs at least n_per_class times
    assert '"' in csv_path.read_text()  # multi-label cells are quoted (FSD2019 style)
    again = make_demo_dataset(tmp_path / "ml2", n_per_class=4, seconds=0.5, multi_label=True, seed=1)
    assert digest(tmp_path / "ml") == digest(again.parent)


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_per_class"):
        make_demo_dataset(tmp_path, n_per_class=0)
    with pytest.raises(ValueError, match="max_events"):
        make_demo_dataset(tmp_path, multi_label=True, max_events=0)


def test_needs_a_model_but_is_learnable(tmp_path):
    """A linear model on the mean log-mel spectrum beats chance clearly but is far from perfect:
    the classes differ in time structure (sweeps, tremolo, vibrato, decay), not only in band energy."""
    root = make_demo_dataset(tmp_path / "d", n_per_class=20, seconds=1.0, seed=0)
    features, labels = [], []
    for ci, cls in enumerate(DEMO_CLASSES):
        for path in sorted((root / cls).glob("*.wav")):
            wave, sr = sf.read(path, dtype="float32")
            mel = librosa.feature.melspectrogram(y=wave, sr=sr, n_fft=512, hop_length=160, n_mels=64)
            features.append(np.log(mel + 1e-6).mean(axis=1))
            labels.append(ci)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    accuracy = cross_val_score(clf, np.array(features), np.array(labels), cv=folds).mean()
    chance = 1 / len(DEMO_CLASSES)
    assert 2 * chance < accuracy < 0.85
