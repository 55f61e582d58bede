"""Near-duplicate fingerprints: one clip found again after a gain change, resampling, trimming or re-encoding.

Each clip is resampled to 8 kHz (every copy of it, at any rate, then has the same band up to 4 kHz) and cut into
32 log-mel bands (50 ms windows, 10 ms hop: a trim moves the frames by at most 5 ms, and the long window
smooths what that changes). Two things are kept:

* a pooled vector: per band, the mean and the spread of the level over the non-silent frames, with the clip's
  mean level taken out (a gain change adds a constant in dB, so it cancels; trimmed silence is not counted);
* the frame sequence (silent ends cut; of a longer clip, its loudest :data:`MAX_FRAMES`): the band levels
  floored :data:`FLOOR_DB` under the clip's loud frames and :data:`FRAME_FLOOR_DB` under their own frame's level
  (lossy codecs rework what lies below either), each band centred over time, kept in float16.

Pairs are found in two steps. The pooled vectors' cosine similarity over all pairs (an n x 64 matrix product:
10,000 clips cost a few seconds) keeps each clip's :data:`TOP_K` most similar partners at or above
:data:`CANDIDATE_COSINE`; a candidate is a near
duplicate when its frame sequences line up: the best correlation of their band levels over every time shift
with at least half of the shorter clip overlapping reaches :data:`ALIGNED_COSINE`. Why both, measured on copies of the shared real sets
(``benchmarks/plant_faults.py --compare``: 50 planted near copies against the best other clip of the set,
speech 1-s words / ESC-10 5-s scenes / instruments 1-26-s notes):

- pooled log-mel: copies >= 0.997 / 0.990 / 0.970; best other 0.986 / 0.974 / 0.997
- pooled chroma: copies >= 0.103 / 0.818 / 0.647; best other 0.923 / 0.996 / 0.997
- aligned log-mel: copies >= 0.997 / 0.978 / 0.920; best other 0.975 / 0.907 / 0.978

The pooled vector alone cannot tell another take of the same word by the same speaker from a re-encoded copy
(they share their long-term spectrum), and pooled chroma (pitch classes) is worse on speech and noise. The
alignment is what a copy has and another take has not: over the whole speech set, takes of one word by one
speaker line up to 0.989 (the closest candidate pair), hence :data:`ALIGNED_COSINE` 0.99 (an OGG copy of a noisy
ESC-10 clip at 0.978 is then missed, recall 0.98 there). On the instruments, decaying notes and drum hits: the
floors decide. Floored under the 90th-percentile frame alone, OGG copies of held notes (codec noise between the
partials) and trimmed decays fell short, near-copy precision/recall 0.98/0.86; with the per-frame floor and the
98th percentile 0.98/0.94 (a second planting, seed 1: 0.96/0.88 before, 0.96/0.92 after; every pair counted false
is the set's own known near-duplicate bass-drum pair, found by both), speech and ESC-10 unchanged at 1.00/1.00
and 1.00/0.98. Still missed: trims that cut away a short drum hit's attack (most of the sound).
Checking the alignment on candidates only keeps the cost near-linear.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .audio import resample

__all__ = ["ALIGNED_COSINE", "CANDIDATE_COSINE", "Fingerprint", "aligned_similarity", "candidate_pairs",
           "fingerprint"]

RATE, N_FFT, HOP, N_BANDS = 8000, 400, 80, 32
FMIN, FMAX = 60.0, 3800.0  # under the 4 kHz Nyquist of the 8 kHz copy, where resampling filters roll off
REFERENCE_PERCENTILE = 98.0  # the loud frame levels are judged against (module docstring: 95 and 90 measured worse)
FLOOR_DB = 50.0  # levels floored this far below it: lossy codecs rework what lies under it
# ... and this far below their own frame's level: between the partials of a held or decaying note a codec
# reworks (zeroes or fills with noise) the quiet bands even where the frame is loud (planted OGG copies of
# sustained notes lined up to only 0.82 without it).
FRAME_FLOOR_DB = 25.0
SILENT_DB = 40.0  # frames this far below it are silence: trimming them changes nothing
MAX_FRAMES = 600  # 6 s of frames kept per clip for the alignment (memory: 38 KB a clip)
# From the measurements in the module docstring.
CANDIDATE_COSINE = 0.95  # only bounds the work (with TOP_K): the alignment decides
ALIGNED_COSINE = 0.99
TOP_K = 5  # candidates checked per clip, the most similar first: the alignment cost stays n x TOP_K
MIN_OVERLAP = 0.5  # share of the shorter clip that must overlap at a shift


@dataclass
class Fingerprint:
    vector: np.ndarray  # (2 * N_BANDS,) float32, unit length
    frames: np.ndarray  # (T, N_BANDS) float16, band levels in dB, each band centred over time


def _mel_filterbank() -> np.ndarray:
    """Triangular filters evenly spaced in mel (HTK formula) over ``FMIN``–``FMAX``, shape (bins, bands)."""
    mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    edges_mel = np.linspace(mel(FMIN), mel(FMAX), N_BANDS + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / RATE)
    bank = np.zeros((len(freqs), N_BANDS))
    for k in range(N_BANDS):
        low, mid, high = edges[k:k + 3]
        bank[:, k] = np.clip(np.minimum((freqs - low) / (mid - low), (high - freqs) / (high - mid)), 0.0, None)
    return bank


_BANK = _mel_filterbank()


def _log_mel(wave: np.ndarray, rate: int) -> np.ndarray:
    """(frames, bands) log-mel levels in dB of a mono wave."""
    x = resample(np.asarray(wave, dtype=np.float32), rate, RATE) if rate != RATE else np.asarray(wave, np.float32)
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    n = 1 + (len(x) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(x, (n, N_FFT), (x.strides[0] * HOP, x.strides[0]))
    power = np.abs(np.fft.rfft(frames * np.hanning(N_FFT).astype(np.float32), axis=1)) ** 2
    return 10.0 * np.log10(power @ _BANK + 1e-10)


def _unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.mean(axis=axis, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-8)


def fingerprint(wave: np.ndarray, rate: int) -> Fingerprint:
    """The fingerprint of a mono wave at ``rate`` Hz (module docstring)."""
    levels = _log_mel(wave, rate)
    loudness = 10.0 * np.log10(np.mean(10.0 ** (levels / 10.0), axis=1) + 1e-10)
    # Levels are judged against the loudest 2 % of frames, not the single loudest (one click does not set it).
    # Trimming a note's attack lowers it; the wide FLOOR_DB leaves room for that (percentiles 90 and 95, which
    # a trim moves less, measured worse: the floor then sat in the decay, where unrelated drum hits look alike).
    reference = float(np.percentile(loudness, REFERENCE_PERCENTILE))
    # Digital silence (-100 dB) would swamp the variance; the per-frame floor: FRAME_FLOOR_DB.
    levels = np.maximum(levels, np.maximum(reference - FLOOR_DB, loudness[:, None] - FRAME_FLOOR_DB))
    active = loudness >= reference - SILENT_DB
    used = levels[active]
    pooled = np.concatenate([used.mean(axis=0) - used.mean(), used.std(axis=0)])
    where = np.flatnonzero(active)
    sequence = levels[where[0]:where[-1] + 1]  # silence at the ends cut, as a trim would
    if len(sequence) > MAX_FRAMES:  # the loudest stretch: a trim at either end leaves it where it was
        power = np.concatenate([[0.0], np.cumsum(10.0 ** (loudness[where[0]:where[-1] + 1] / 10.0))])
        start = int(np.argmax(power[MAX_FRAMES:] - power[:-MAX_FRAMES]))
        sequence = sequence[start:start + MAX_FRAMES]
    sequence = sequence - sequence.mean(axis=0)  # per band: a gain change (a constant in dB) cancels
    return Fingerprint(_unit(pooled).astype(np.float32), sequence.astype(np.float16))


def candidate_pairs(vectors: np.ndarray, threshold: float = CANDIDATE_COSINE, top_k: int = TOP_K,
                    block: int = 1024) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, whose pooled vectors' cosine is at least ``threshold``, at most the
    ``top_k`` most similar partners of each clip."""
    vectors = np.asarray(vectors, dtype=np.float32)
    pairs = set()
    for start in range(0, len(vectors), block):  # blocks of rows: memory stays block x n
        sims = vectors[start:start + block] @ vectors.T
        for row, i in enumerate(range(start, min(start + block, len(vectors)))):
            sims[row, i] = -1.0  # not its own partner
            best = np.argsort(-sims[row])[:top_k]
            pairs.update((min(i, int(j)), max(i, int(j))) for j in best if sims[row, j] >= threshold)
    return sorted(pairs)


def aligned_similarity(a: Fingerprint, b: Fingerprint) -> float:
    """The best correlation of the band levels of ``a`` and ``b`` over the time shifts where at least
    :data:`MIN_OVERLAP` of the shorter sequence overlaps the other; each band is centred over the overlap, so a
    gain change or a trim (which moves a clip's mean level) changes nothing. Shifts go in half hops: ``b``'s
    frames are also tried halfway between their neighbours (a trim rarely falls on a hop boundary)."""
    x, y = a.frames.astype(np.float64), b.frames.astype(np.float64)
    halfway = (y[:-1] + y[1:]) / 2 if len(y) > 2 else y
    return max(_best_shift(x, y), _best_shift(x, halfway))


def _best_shift(x: np.ndarray, y: np.ndarray) -> float:
    gram = x @ y.T  # row-by-row products; a shift is a diagonal
    # Sums and energies of every run of rows, from cumulative sums: the centring and normalisation at each shift.
    sx, sy = (np.concatenate([np.zeros((1, v.shape[1])), np.cumsum(v, axis=0)]) for v in (x, y))
    ex, ey = (np.concatenate([[0.0], np.cumsum(np.sum(v * v, axis=1))]) for v in (x, y))
    need = max(2, int(np.ceil(MIN_OVERLAP * min(len(x), len(y)))))
    best = -1.0
    for offset in range(-(len(x) - need), len(y) - need + 1):  # x row i meets y row i + offset
        i0, j0 = max(0, -offset), max(0, offset)
        n = min(len(x) - i0, len(y) - j0)
        if n < need:
            continue
        mx, my = sx[i0 + n] - sx[i0], sy[j0 + n] - sy[j0]
        dot = np.trace(gram, offset=offset) - mx @ my / n
        norm = np.sqrt(max(ex[i0 + n] - ex[i0] - mx @ mx / n, 0.0) * max(ey[j0 + n] - ey[j0] - my @ my / n, 0.0))
        best = max(best, float(dot / max(norm, 1e-8)))
    return best
