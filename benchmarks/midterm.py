"""The second classical peer's clip descriptor: pyAudioAnalysis-style short-term and mid-term features.

Written from the feature list published with pyAudioAnalysis (Giannakopoulos 2015, PLOS ONE), not from its
code. Short-term: 34 features per 50 ms frame with a 25 ms step, plus their frame-to-frame deltas (68 rows):

    zero crossing rate, energy, entropy of energy, spectral centroid, spectral spread, spectral entropy,
    spectral flux, spectral rolloff, 13 MFCCs, 12 chroma, chroma std

Mid-term: mean and std of each row over ~1 s windows with a 0.5 s step (68 x 2 per window); a file is the mean
of its mid-term vectors (136 numbers). Frequencies are fractions of the Nyquist rate, as in the paper, so the
numbers do not depend on the sample rate; the DC offset is removed and the peak scaled to 1 first.
"""

from __future__ import annotations

import numpy as np

FRAME_SECONDS = 0.050
STEP_SECONDS = 0.025
MID_SECONDS = 1.0
MID_STEP_SECONDS = 0.5
N_SUBBLOCKS = 10  # entropy of energy and spectral entropy split a frame (or spectrum) into this many parts
ROLLOFF = 0.90
N_MFCC = 13
N_MELS = 40
N_SHORT = 34
EPS = 1e-10

SHORT_TERM_NAMES = (["zcr", "energy", "energy_entropy", "spectral_centroid", "spectral_spread",
                     "spectral_entropy", "spectral_flux", "spectral_rolloff"]
                    + [f"mfcc_{i}" for i in range(1, N_MFCC + 1)]
                    + [f"chroma_{i}" for i in range(1, 13)] + ["chroma_std"])


def frames_of(wave: np.ndarray, sr: int) -> np.ndarray:
    """(n_frames, frame) view of the signal; a clip shorter than one frame is zero-padded to one frame."""
    frame, step = int(round(FRAME_SECONDS * sr)), int(round(STEP_SECONDS * sr))
    if len(wave) < frame:
        wave = np.pad(wave, (0, frame - len(wave)))
    n = 1 + (len(wave) - frame) // step
    return np.lib.stride_tricks.as_strided(wave, (n, frame), (wave.strides[0] * step, wave.strides[0]),
                                           writeable=False)


def entropy(parts: np.ndarray) -> np.ndarray:
    """Entropy (bits) of each row's normalised non-negative parts: low for one burst, log2(n) when flat."""
    p = parts / (parts.sum(axis=1, keepdims=True) + EPS)
    return -(p * np.log2(p + EPS)).sum(axis=1)


def sub_block_energies(rows: np.ndarray) -> np.ndarray:
    """Each row cut into N_SUBBLOCKS equal parts (the remainder dropped), the sum of squares of each part."""
    width = rows.shape[1] // N_SUBBLOCKS
    return (rows[:, : width * N_SUBBLOCKS] ** 2).reshape(len(rows), N_SUBBLOCKS, width).sum(axis=2)


def chroma_matrix(n_bins: int, sr: int, n_fft: int) -> np.ndarray:
    """(12, n_bins) 0/1 map of each FFT bin to its pitch class (A = 0), DC and sub-audio bins left out."""
    freqs = np.arange(n_bins) * sr / n_fft
    matrix = np.zeros((12, n_bins))
    audible = freqs >= 27.5  # below A0 a bin spans several semitones: no pitch class to give it
    classes = np.round(12 * np.log2(freqs[audible] / 440.0)).astype(int) % 12
    matrix[classes, np.flatnonzero(audible)] = 1.0
    return matrix


def short_term_features(wave: np.ndarray, sr: int) -> np.ndarray:
    """(34, n_frames) short-term features of a mono float signal (see the module docstring for the rows)."""
    import librosa
    from scipy.fft import dct

    wave = np.asarray(wave, dtype=np.float64)
    # DC removed and peak scaled to 1, as pyAudioAnalysis does first: a quieter microphone or speaker gives
    # the same numbers, which is much of why these features carry to new voices and devices
    wave = wave - wave.mean()
    wave = wave / (np.abs(wave).max() + EPS)
    frames = frames_of(wave, sr)
    n_frames, frame = frames.shape
    signs = np.signbit(frames)
    zcr = (signs[:, 1:] != signs[:, :-1]).sum(axis=1) / (frame - 1)
    energy = (frames ** 2).sum(axis=1) / frame
    energy_entropy = entropy(sub_block_energies(frames))

    magnitude = np.abs(np.fft.rfft(frames, axis=1)) / frame
    freqs = np.linspace(0.0, 1.0, magnitude.shape[1])  # fraction of Nyquist
    total = magnitude.sum(axis=1) + EPS
    centroid = (magnitude * freqs).sum(axis=1) / total
    spread = np.sqrt((magnitude * (freqs - centroid[:, None]) ** 2).sum(axis=1) / total)
    spectral_entropy = entropy(sub_block_energies(magnitude))
    shares = magnitude / total[:, None]
    flux = np.concatenate([[0.0], ((shares[1:] - shares[:-1]) ** 2).sum(axis=1)])
    power = magnitude ** 2
    cumulative = np.cumsum(power, axis=1)
    # the first bin where the cumulative spectral energy reaches ROLLOFF of the total
    rolloff_bin = (cumulative < ROLLOFF * cumulative[:, -1:]).sum(axis=1)
    rolloff = freqs[np.minimum(rolloff_bin, len(freqs) - 1)]

    mel = librosa.filters.mel(sr=sr, n_fft=frame, n_mels=N_MELS) @ power.T
    mfcc = dct(np.log(mel + EPS), type=2, axis=0, norm="ortho")[:N_MFCC]
    chroma = chroma_matrix(power.shape[1], sr, frame) @ power.T
    chroma = chroma / (power.sum(axis=1) + EPS)
    return np.vstack([zcr, energy, energy_entropy, centroid, spread, spectral_entropy, flux, rolloff,
                      mfcc, chroma, chroma.std(axis=0)])


def with_deltas(features: np.ndarray) -> np.ndarray:
    """The rows followed by their frame-to-frame differences (the first frame's delta is zero)."""
    deltas = np.diff(features, axis=1, prepend=features[:, :1])
    return np.vstack([features, deltas])


def mid_term_features(features: np.ndarray) -> np.ndarray:
    """(n_rows, 2, n_windows): mean and std of each short-term row over ~1 s windows with a 0.5 s step.

    A clip shorter than one window is one window of all its frames.
    """
    window = int(round(MID_SECONDS / STEP_SECONDS))
    step = int(round(MID_STEP_SECONDS / STEP_SECONDS))
    starts = range(0, max(features.shape[1] - window, 0) + 1, step)
    stats = [(features[:, s : s + window].mean(axis=1), features[:, s : s + window].std(axis=1)) for s in starts]
    return np.stack([np.stack(pair, axis=1) for pair in stats], axis=2)


def clip_descriptor(wave: np.ndarray, sr: int) -> np.ndarray:
    """136 numbers: the mean over the file of its mid-term (mean, std) vectors of the 68 short-term rows."""
    return mid_term_features(with_deltas(short_term_features(wave, sr))).mean(axis=2).reshape(-1)
