"""Scoring a live stream: samples arriving in chunks of any size and rate -> each window's probabilities as soon
as its last sample has arrived.

Used by ``audioclf predict RUN -`` (a pipe on stdin) and the server's live microphone mode. Memory does not grow
with the stream: the samples are resampled to the model's rate by soxr's streaming resampler (which keeps its own
filter state between chunks) and written into a ring buffer one clip long; a window is read out of the ring the
moment it is complete, before the samples it needs are overwritten.

Windows are a clip long and ``hop`` apart (default half a clip, as :func:`audioclf.data.audio.clip_windows` cuts a
file); a shorter hop answers sooner at more compute. Unlike a file, a stream cannot be silence-trimmed in two
passes (the loudest frame is not known yet), so every window is scored as it comes, silence included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import soxr

from ..data.audio import fix_length, to_mono
from ..data.pcm import PcmDecoder
from ..errors import AudioDecodeError, ConfigError
from ..training.evaluate import finite
from .events import Event, detect_events


@dataclass(frozen=True)
class LiveWindow:
    """One scored window: where it sits in the stream (seconds from its first sample) and its calibrated
    probabilities and decided labels (the run's decisions)."""

    start: float
    end: float
    probabilities: np.ndarray
    labels: tuple[str, ...]


class LiveStream:
    """Feed :meth:`push` blocks of samples at ``input_rate`` (float32, ``(n,)`` or ``(n, channels)``, e.g. from
    :class:`audioclf.data.pcm.PcmDecoder`); it returns the windows each block completed, scored by ``predictor``
    (a :class:`audioclf.deploy.predictor.WindowedPredictor`). :meth:`close` scores what is left at the end.
    ``score`` replaces ``predictor.window_probabilities`` (the server's :class:`WindowBatcher`, as ``timeline``)."""

    def __init__(self, predictor, input_rate: int, hop_seconds: float | None = None, score=None):
        self.predictor = predictor
        self._score_windows = score or predictor.window_probabilities
        self.rate, self.clip = predictor.sample_rate, predictor.clip_samples
        hop = self.clip // 2 if hop_seconds is None else float(hop_seconds) * self.rate
        self.hop = round(hop) if math.isfinite(hop) else 0  # NaN or inf: refused below, not a ValueError
        if not 1 <= self.hop <= self.clip:
            raise ConfigError(f"hop={hop_seconds!r} s: expected more than 0 and at most the clip "
                              f"({self.clip / self.rate:g} s)")
        self._resampler = (None if input_rate == self.rate else
                           soxr.ResampleStream(input_rate, self.rate, 1, dtype="float32", quality="HQ"))
        self._ring = np.zeros(self.clip, np.float32)
        self.received = 0  # samples at the model's rate written so far
        self._next_end = self.clip  # the sample count at which the next window is complete
        self._closed = False

    def push(self, samples: np.ndarray) -> list[LiveWindow]:
        """Add a block of samples; the windows it completed, scored (often none: a window needs ``hop`` samples)."""
        if self._closed:
            raise ConfigError("the stream was closed: no more samples can be added")
        mono = np.ascontiguousarray(to_mono(np.asarray(samples, dtype=np.float32)), dtype=np.float32)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono)
        return self._score(self._write(mono))

    def close(self) -> list[LiveWindow]:
        """The stream ended: the resampler's last samples, then a last window ending at the stream's end when
        samples arrived after the last window (as a file's last window ends at its end), or, for a stream
        shorter than a clip, that stream padded like a short training clip."""
        if self._closed:
            return []
        tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True) if self._resampler else []
        windows = self._write(np.asarray(tail, np.float32))
        self._closed = True
        if self.received == 0:
            return self._score(windows)
        if self.received < self.clip:
            short = fix_length(self._ring[: self.received], self.clip, mode=self.predictor.pad_mode, crop="center")
            windows.append((0, self.received, short.astype(np.float32)))
        elif self.received > self._next_end - self.hop:  # samples after the last complete window
            windows.append((self.received - self.clip, self.received, self._window(self.received)))
        return self._score(windows)

    def _write(self, samples: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """Write into the ring piece by piece, cutting out each window as soon as its last sample is in."""
        windows, done = [], 0
        while done < len(samples):
            room = self._next_end - self.received  # samples until the next window is complete (>= 1)
            piece = samples[done : done + room]
            at = self.received % self.clip
            first = min(len(piece), self.clip - at)
            self._ring[at : at + first] = piece[:first]
            self._ring[: len(piece) - first] = piece[first:]
            self.received += len(piece)
            done += len(piece)
            if self.received == self._next_end:
                windows.append((self.received - self.clip, self.received, self._window(self.received)))
                self._next_end += self.hop
        return windows

    def _window(self, end: int) -> np.ndarray:
        """The clip ending at sample ``end`` (one of the last ``clip`` written), in order."""
        return np.roll(self._ring, -(end % self.clip)).copy()

    def _score(self, windows: list[tuple[int, int, np.ndarray]]) -> list[LiveWindow]:
        if not windows:
            return []
        predictor = self.predictor
        probs = finite(np.asarray(self._score_windows(np.stack([w for _, _, w in windows])),
                                  dtype=np.float64))
        probs = predictor.decisions.calibrated(predictor.task, probs)  # each window read as a recording
        return [LiveWindow(start / self.rate, end / self.rate, p, predictor.labels_of(p))
                for (start, end, _), p in zip(windows, probs)]


def score_byte_stream(read: Callable[[int], bytes], decoder: PcmDecoder, live: LiveStream, first: bytes = b"",
                      chunk_seconds: float = 0.01) -> Iterator[LiveWindow]:
    """Each window of a byte stream the moment its last sample has been read: ``read(n)`` returns what has
    arrived, at most ``n`` bytes (``os.read`` on a pipe: it never waits for more than one byte), ``b""`` at the end;
    ``first``: sample bytes already read (:func:`audioclf.data.pcm.open_pcm_stream`).

    The stream is read ``chunk_seconds`` of audio at a time, so a window is never held back behind a large
    buffer. At its end, or on Ctrl-C (KeyboardInterrupt, raised again after), the last window is scored as
    :meth:`LiveStream.close` does. A partial frame at the end, or a stream with no sample, is an
    :class:`AudioDecodeError` after the windows before it."""
    chunk = max(1, round(decoder.rate * chunk_seconds)) * decoder.frame_bytes
    frames, data = 0, first
    try:
        while True:
            if data:
                samples = decoder.decode(data)
                frames += len(samples)
                yield from live.push(samples)
            data = read(chunk)
            if not data:
                break
    except KeyboardInterrupt:
        yield from live.close()
        raise
    decoder.finish()
    if frames == 0:
        raise AudioDecodeError(decoder.source, "the stream ended before its first sample")
    yield from live.close()


def live_events(filename: str, windows: list[LiveWindow], predictor, settings=None) -> list[Event]:
    """The sound events (:mod:`audioclf.deploy.events`) of a stream's windows, once it has ended, with ``settings``
    (default the predictor's ``event_settings``) and its decision thresholds, as a file's timeline gives them."""
    probs = np.array([w.probabilities for w in windows]).reshape(len(windows), len(predictor.classes))
    return detect_events(filename, [w.start for w in windows], [w.end for w in windows], probs,
                         list(predictor.classes), settings or predictor.event_settings,
                         predictor.decision_thresholds())
