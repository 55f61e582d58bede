"""Four classes that clip statistics separate at once: white noise, low-passed noise, a low and a high tone in
noise, at random levels; one-second clips at 16 kHz in a folder per class (the classical member's and the label
issues' tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SR = 16000
CLASSES = ("white", "rumble", "low_tone", "high_tone")


def separable_clips(root: Path, per_class: int = 20, seed: int = 2) -> dict[str, list[Path]]:
    """Write ``per_class`` clips of each class under ``root/<class>/``; returns the paths by class."""
    import soundfile as sf
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    makers = {
        "white": lambda: rng.normal(size=SR),
        "rumble": lambda: lfilter([0.05], [1, -0.95], rng.normal(size=SR)),
        "low_tone": lambda: np.sin(2 * np.pi * rng.uniform(300, 400) * t) + 0.1 * rng.normal(size=SR),
        "high_tone": lambda: np.sin(2 * np.pi * rng.uniform(3000, 3500) * t) + 0.1 * rng.normal(size=SR),
    }
    paths: dict[str, list[Path]] = {}
    for name, make in makers.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            wave = make()
            wave = wave / np.abs(wave).max() * rng.uniform(0.1, 0.9)
            path = root / name / f"{name}_{i:02d}.wav"
            sf.write(path, wave.astype(np.float32), SR)
            paths.setdefault(name, []).append(path)
    return paths
