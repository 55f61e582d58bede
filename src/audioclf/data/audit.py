"""A PCM audit of every clip (``audioclf doctor``): what is wrong with the audio itself, from one decode per file.

Each file is decoded once by :func:`~.audio.load_audio` (bounded by ``data.max_seconds``); from the decoded
samples come the level facts (peak, RMS, share of samples at full scale, DC offset), the exact-duplicate hash
and the near-duplicate fingerprint (:mod:`.fingerprint`). :func:`audio_findings` then compares the clips with
one another: channel counts and sample rates that few files share, durations far from the rest.

Exact duplicates hash the *canonical PCM*: the channels averaged to mono at the file's own rate, rounded to
16-bit integers (x 32768, as 16-bit files store them). The same recording saved as WAV and FLAC, or as 16- and 24-bit, then hashes the same; a
changed gain, rate or trim does not (that is the fingerprint's job).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .audio import load_audio, to_mono
from .fingerprint import Fingerprint, fingerprint

__all__ = ["ClipFacts", "Finding", "audio_findings", "clip_facts", "pcm_hash", "skipped_finding"]

# Thresholds of the level checks. Silent: a peak below -50 dBFS or an RMS below -60 dBFS holds nothing a model
# could learn from (a dead microphone, a muted track). Clipped: more than 0.1 % of the samples at full scale
# (|x| >= 0.999) is audible distortion, not the odd peak. DC offset: a typical frame's mean beyond 2 % of full scale
# (-34 dBFS) is a faulty converter, and shifts every low-frequency feature.
SILENT_PEAK_DB, SILENT_RMS_DB = -50.0, -60.0
FULL_SCALE, CLIPPED_SHARE = 0.999, 0.001
DC_OFFSET = 0.02
# A sample rate or channel count held by at most this share of the files (and by fewer files than the usual
# one) is "odd": a stray file of another source, resampled or mixed down differently from the rest.
ODD_SHARE = 0.05
# Durations: robust z-score of log-duration (median / MAD). The scale has a floor (5 % in log terms), so clips
# cut to one length flag only files clearly shorter or longer than the rest, not 1 ms of rounding.
DURATION_Z, MIN_LOG_SCALE = 5.0, 0.05


@dataclass
class Finding:
    """One problem: its kind, a one-line message, the files (item ids and paths) and the fix, when there is one."""

    kind: str
    message: str
    paths: list[str] = field(default_factory=list)
    fix: str = ""
    values: list[str] = field(default_factory=list)  # group_leak: the group values found in two splits

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "paths": self.paths, "fix": self.fix,
                "values": self.values}


@dataclass
class ClipFacts:
    path: str
    sample_rate: int
    channels: int
    duration: float
    peak_db: float
    rms_db: float
    clipped_share: float
    dc_offset: float
    pcm_hash: str
    fingerprint: Fingerprint


def _db(value: float) -> float:
    return 20.0 * float(np.log10(max(value, 1e-10)))


def pcm_hash(wave: np.ndarray) -> str:
    """The hash of the canonical PCM (module docstring) of a decoded wave (1-D, or channels-last 2-D)."""
    mono = to_mono(wave) if wave.ndim == 2 else wave
    # x 32768, as 16-bit WAV and FLAC store samples: a float file and its 16-bit copy then hash alike.
    # float32 holds k / 32768 exactly, so no wider copy is needed.
    pcm = np.rint(np.clip(np.asarray(mono, dtype=np.float32) * np.float32(32768.0), -32768, 32767)).astype("<i2")
    return hashlib.blake2b(pcm.tobytes(), digest_size=16).hexdigest()


def clip_facts(path: str, max_seconds: float | None = None) -> ClipFacts:
    """Decode ``path`` once and measure it; raises :class:`~audioclf.errors.AudioDecodeError` like ``load_audio``."""
    wave, rate = load_audio(path, mono=False, max_seconds=max_seconds)
    mono = to_mono(wave)
    magnitude = np.abs(wave)
    return ClipFacts(
        path=path, sample_rate=rate, channels=int(wave.shape[1]), duration=len(wave) / rate,
        peak_db=_db(float(magnitude.max())), rms_db=_db(float(np.sqrt(np.mean(mono.astype(np.float64) ** 2)))),
        clipped_share=float(np.mean(magnitude >= FULL_SCALE)), dc_offset=_dc_offset(mono, rate),
        pcm_hash=pcm_hash(wave), fingerprint=fingerprint(mono, rate),
    )


def _dc_offset(mono: np.ndarray, rate: int) -> float:
    """The offset both the whole clip's mean and the median of its 50-ms frames' means agree on (the smaller):
    a converter's offset is in both, while a lopsided loud note (a bass drum) moves the mean of its own frames
    only, and a rumble under 20 Hz (a helicopter's rotor) moves single frames' means but not the whole mean."""
    frame = max(1, rate // 20)
    n = len(mono) // frame
    whole = float(np.mean(mono))
    if n == 0:
        return whole
    median = float(np.median(mono[:n * frame].reshape(n, frame).mean(axis=1)))
    return min(whole, median, key=abs)


def skipped_finding(path: str, reason: str) -> Finding:
    """A file that could not be decoded: "empty" for a file without samples, else "undecodable"."""
    empty = reason.startswith("empty file") or reason == "no audio samples"
    return Finding("empty" if empty else "undecodable", f"{path}: {reason}", [path],
                   "remove the row (training skips it and says so)")


def audio_findings(facts: dict[str, ClipFacts]) -> list[Finding]:
    """The level checks of each clip, then the clips against one another (rates, channels, durations)."""
    found = []
    for path, f in facts.items():
        if f.peak_db < SILENT_PEAK_DB or f.rms_db < SILENT_RMS_DB:
            found.append(Finding("silent", f"{path}: silent (peak {f.peak_db:.0f} dBFS, RMS {f.rms_db:.0f} dBFS)",
                                 [path], "listen to it; remove the row if it holds nothing"))
        if f.clipped_share > CLIPPED_SHARE:
            found.append(Finding("clipped", f"{path}: {100 * f.clipped_share:.2f} % of the samples at full scale",
                                 [path], "re-export it from the source at a lower gain, or remove the row"))
        if abs(f.dc_offset) > DC_OFFSET:
            found.append(Finding("dc_offset", f"{path}: DC offset {f.dc_offset:+.3f} of full scale", [path],
                                 "high-pass it (e.g. 20 Hz) before use"))
    found += _odd_values(facts, "sample_rate", "sample rate", "Hz")
    found += _odd_values(facts, "channels", "channel count", "channel(s)")
    found += _duration_outliers(facts)
    return found


def _odd_values(facts: dict[str, ClipFacts], attribute: str, what: str, unit: str) -> list[Finding]:
    """Files whose rate (channel count) few others share: each rare value, with its files."""
    counts = Counter(getattr(f, attribute) for f in facts.values())
    if len(counts) < 2:
        return []
    usual, n_usual = counts.most_common(1)[0]
    found = []
    for value, n in sorted(counts.items()):
        if value != usual and n <= ODD_SHARE * len(facts) and n < n_usual:
            paths = [p for p, f in facts.items() if getattr(f, attribute) == value]
            kind = "odd_sample_rate" if attribute == "sample_rate" else "mixed_channels"
            found.append(Finding(kind, f"{n} file(s) with {what} {value} {unit} (most have {usual} {unit}): "
                                       f"{paths[0]}{' ...' if n > 1 else ''}", paths,
                                 "check where they come from; training converts them, but a different source "
                                 "can be told apart by its rate or channels alone"))
    return found


def _duration_outliers(facts: dict[str, ClipFacts]) -> list[Finding]:
    if len(facts) < 5:  # too few to say what the rest is
        return []
    paths = list(facts)
    logs = np.log(np.array([max(facts[p].duration, 1e-3) for p in paths]))
    median = float(np.median(logs))
    scale = max(1.4826 * float(np.median(np.abs(logs - median))), MIN_LOG_SCALE)
    found = []
    for path, value in zip(paths, logs):
        z = (value - median) / scale
        if abs(z) > DURATION_Z:
            found.append(Finding("duration_outlier", f"{path}: {facts[path].duration:.2f} s, far from the median "
                                                     f"{np.exp(median):.2f} s (robust z {z:+.0f})", [path],
                                 "check it is the right file (a truncated or concatenated recording)"))
    return found
