"""The embedded demo dataset: procedurally synthesised sound classes, no download.

Each clip is one (or, multi-label, several) sound event with random parameters, a random onset and
duration, inside coloured background noise at a random SNR, at a random peak level. Parameter
ranges overlap between classes where that is natural (tones, AM and FM tones share carriers; a
low-frequency vibrato is barely visible at log-mel resolution; fast click trains approach noise),
so a mean-spectrum classifier is not enough and a trained model is needed — and even a good one
makes a few mistakes.

Everything is drawn from generators seeded by ``(seed, class, index)``, so the same seed gives
byte-identical files, and clip ``i`` of a class does not depend on how many clips are generated.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import signal

from ...files import atomic_write_text
from ..audio import write_audio

__all__ = ["DEMO_CLASSES", "make_demo_dataset", "synthesize_event", "synthesize_clip", "colored_noise"]

DEMO_CLASSES: tuple[str, ...] = (
    "tone", "chirp", "harmonic", "am_tone", "fm_tone", "noise_burst", "click_train", "pluck",
)

# Distinct stream tags so single-label and multi-label clips never share random draws.
_SINGLE, _MULTI = 0, 1


# --- events -------------------------------------------------------------------------------------
def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _time(sr: int, n: int) -> np.ndarray:
    return np.arange(n) / sr


def _tone(sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    f = _log_uniform(rng, 200.0, 2000.0)
    return np.sin(2 * np.pi * f * _time(sr, n) + rng.uniform(0, 2 * np.pi))


def _chirp(sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    lo = _log_uniform(rng, 200.0, 1500.0)
    hi = min(lo * rng.uniform(2.0, 4.0), 0.45 * sr)
    f0, f1 = (lo, hi) if rng.random() < 0.5 else (hi, lo)
    method = "linear" if rng.random() < 0.5 else "logarithmic"
    t = _time(sr, n)
    return signal.chirp(t, f0=f0, t1=max(t[-1], 1.0 / sr), f1=f1, method=method,
                        phi=rng.uniform(0, 360))


def _harmonic(sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    f0 = _log_uniform(rng, 100.0, 500.0)
    n_harm = int(rng.integers(3, 9))
    t = _time(sr, n)
    out = np.zeros(n)
    for h in range(1, n_harm + 1):
        if h * f0 >= 0.45 * sr:
            break
        out += rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
    return out


def _am_tone(sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    fc = _log_uniform(rng, 200.0, 2000.0)
    rate, depth = rng.uniform(2.0, 6.0), rng.uniform(0.8, 1.0)  # slow, deep tremolo
    t = _time(sr, n)
    envelope = 1.0 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    return envelope * np.sin(2 * np.pi * fc * t + rng.uniform(0, 2 * np.pi))


def _fm_tone(sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    fc = _log_uniform(rng, 200.0, 2000.0)
    rate, depth = rng.uniform(3.0, 8.0), rng.uniform(0.04, 0.12) * fc  # vibrato: 4-12 % of carrier
    t = _time(sr, n)
    phase = 2 * np.pi * fc * t + (depth / rate) * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    return np.sin(phase + rng.uniform(0, 2 * np.pi))


def _bandpass_noise(sr: int, n: int, rng: np.random.Generator, centre: float, octaves: float) -> np.ndarray:
    lo = centre * 2 ** (-octaves / 2)
    hi = min(centre * 2 ** (octaves / 2), 0.45 * sr)
    sos = signal.butter(4, [lo, hi], btype="bandpass", fs=sr, output="sos")
    return signal.sosfilt(sos, rng.standard_normal(n))


def _noise_burst(sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return _bandpass_noise(sr, n, rng, _log_uniform(rng, 300.0, 4000.0), rng.uniform(0.3, 1.5))


def _click_train(sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    rate = _log_uniform(rng, 4.0, 40.0)
    tau = rng.uniform(0.0005, 0.004)  # click decay time constant (s)
    click_len = max(1, int(5 * tau * sr))
    impulses = np.zeros(n)
    period = sr / rate
    # Slightly irregular spacing and level, like a real ticking/clicking source.
    times = np.arange(rng.uniform(0, period), n, period)
    times = np.clip(times + rng.normal(0, 0.05 * period, len(times)), 0, n - 1).astype(int)
    impulses[times] = rng.uniform(0.5, 1.0, len(times))
    click = np.exp(-np.arange(click_len) / (tau * sr)) * rng.standard_normal(click_len)
    return signal.fftconvolve(impulses, click)[:n]


def _pluck(sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Karplus–Strong string: a noise burst recirculating through a damped averaging delay line."""
    f0 = _log_uniform(rng, 80.0, 800.0)
    delay = max(2, int(round(sr / f0)))
    # Loop gain from a decay time (T60, 0.15-1 s): -60 dB after T60 * f0 passes through the loop.
    t60 = rng.uniform(0.15, 1.0)
    gain = min(0.9999, 10 ** (-3.0 / (t60 * sr / delay)))
    excitation = np.zeros(n)
    excitation[: min(delay, n)] = rng.uniform(-1, 1, min(delay, n))
    # y[t] = x[t] + gain/2 * (y[t - delay] + y[t - delay - 1]) as one IIR filter (no Python loop).
    a = np.zeros(delay + 2)
    a[0], a[delay], a[delay + 1] = 1.0, -gain / 2, -gain / 2
    return signal.lfilter([1.0], a, excitation)


_GENERATORS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "tone": _tone, "chirp": _chirp, "harmonic": _harmonic, "am_tone": _am_tone,
    "fm_tone": _fm_tone, "noise_burst": _noise_burst, "click_train": _click_train, "pluck": _pluck,
}


def _fade(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Random linear attack and release (5-50 ms each) so events do not start with a broadband click."""
    n = len(x)
    attack = min(int(rng.uniform(0.005, 0.05) * sr), n // 2)
    release = min(int(rng.uniform(0.005, 0.05) * sr), n // 2)
    if attack > 0:
        x[:attack] *= np.linspace(0.0, 1.0, attack, endpoint=False)
    if release > 0:
        x[n - release :] *= np.linspace(1.0, 0.0, release, endpoint=False)
    return x


def synthesize_event(cls: str, sr: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """One sound event of class ``cls``, exactly ``n_samples`` long, faded in/out, unit RMS (float64).

    Placement in a clip (onset, duration, level, background) is done by :func:`synthesize_clip`.
    """
    if cls not in _GENERATORS:
        raise ValueError(f"cls: expected one of {DEMO_CLASSES}, got {cls!r}")
    if sr <= 0 or n_samples <= 0:
        raise ValueError(f"sr/n_samples: expected positive integers, got {sr}/{n_samples}")
    x = _fade(np.asarray(_GENERATORS[cls](sr, n_samples, rng), dtype=np.float64), sr, rng)
    rms = np.sqrt(np.mean(x**2))
    return x / rms if rms > 0 else x


# --- background and mixing ----------------------------------------------------------------------
def colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS, no DC."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    scale = np.zeros_like(freqs)
    scale[1:] = freqs[1:] ** (-exponent / 2)
    x = np.fft.irfft(spectrum * scale, n)
    rms = np.sqrt(np.mean(x**2))
    return x / rms if rms > 0 else x


_NOISE_EXPONENTS = (0.0, 1.0, 2.0)  # white, pink, brown


def _place_event(cls: str, sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """An event of random duration (35-100 % of the clip, at least 0.2 s) at a random onset."""
    length = min(n, max(int(0.2 * sr), int(rng.uniform(0.35, 1.0) * n)))
    onset = int(rng.integers(0, n - length + 1))
    out = np.zeros(n)
    out[onset : onset + length] = synthesize_event(cls, sr, length, rng)
    return out


def synthesize_clip(classes: list[str] | tuple[str, ...], sr: int, n_samples: int,
                    rng: np.random.Generator) -> np.ndarray:
    """A float32 clip: the events of ``classes`` (random onsets, levels within 6 dB of each other),
    coloured noise at an SNR of 0-20 dB (relative to the events' active RMS), random peak level."""
    mix = np.zeros(n_samples)
    for cls in classes:
        mix += 10 ** (rng.uniform(-6, 0) / 20) * _place_event(cls, sr, n_samples, rng)
    active = np.abs(mix) > 0
    event_rms = np.sqrt(np.mean(mix[active] ** 2)) if active.any() else 1.0
    snr_db = rng.uniform(0.0, 20.0)
    noise = colored_noise(n_samples, rng, float(rng.choice(_NOISE_EXPONENTS)))
    mix += noise * event_rms * 10 ** (-snr_db / 20)
    # Random output level (-20..-1 dBFS peak) doubles as gain augmentation and rules out clipping.
    peak_db = rng.uniform(-20.0, -1.0)
    mix *= 10 ** (peak_db / 20) / np.max(np.abs(mix))
    return mix.astype(np.float32)


# --- dataset ------------------------------------------------------------------------------------
def _rng(seed: int, stream: int, *index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *index]))


def make_demo_dataset(
    out_dir: str | os.PathLike,
    n_per_class: int = 40,
    sample_rate: int = 16000,
    seconds: float = 2.0,
    multi_label: bool = False,
    max_events: int = 3,
    seed: int = 0,
) -> Path:
    """Write the synthetic demo dataset as 16-bit WAV files.

    Single-label: ``out_dir/<class>/<class>_<i>.wav`` (folder per class); returns ``out_dir``.
    Multi-label: ``n_per_class * len(DEMO_CLASSES)`` clips, each mixing 1..``max_events`` distinct
    classes (the first one cycles through the classes, so every class occurs at least
    ``n_per_class`` times), written to ``out_dir/audio/<id>.wav`` with ``out_dir/labels.csv``
    (``fname,labels``, labels comma-separated, FSD2019 style); returns the CSV path.
    The same arguments give byte-identical files.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class: expected >= 1, got {n_per_class}")
    if sample_rate <= 0 or seconds <= 0:
        raise ValueError(f"sample_rate/seconds: expected positive values, got {sample_rate}/{seconds}")
    if not 1 <= max_events <= len(DEMO_CLASSES):
        raise ValueError(f"max_events: expected 1..{len(DEMO_CLASSES)}, got {max_events}")
    out = Path(out_dir)
    n = int(round(seconds * sample_rate))

    if not multi_label:
        for ci, cls in enumerate(DEMO_CLASSES):
            for i in range(n_per_class):
                clip = synthesize_clip([cls], sample_rate, n, _rng(seed, _SINGLE, ci, i))
                write_audio(out / cls / f"{cls}_{i:04d}.wav", clip, sample_rate)
        return out

    rows = []
    n_classes = len(DEMO_CLASSES)
    for i in range(n_per_class * n_classes):
        rng = _rng(seed, _MULTI, i)
        first = i % n_classes
        others = [c for c in range(n_classes) if c != first]
        k = int(rng.integers(1, max_events + 1))
        chosen = [first, *rng.choice(others, size=k - 1, replace=False).tolist()]
        labels = [DEMO_CLASSES[c] for c in sorted(chosen)]
        fname = f"mix_{i:05d}.wav"
        write_audio(out / "audio" / fname, synthesize_clip(labels, sample_rate, n, rng), sample_rate)
        rows.append((fname, ",".join(labels)))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("fname", "labels"))
    writer.writerows(rows)
    csv_path = out / "labels.csv"
    atomic_write_text(csv_path, buffer.getvalue())
    return csv_path
