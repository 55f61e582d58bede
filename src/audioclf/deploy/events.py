"""Sound events from a recording's window probabilities: ``(filename, onset, offset, class, peak probability)``.

The windows are :meth:`~audioclf.deploy.predictor.WindowedPredictor.timeline`'s (clip-long, half a clip apart).
Per class, the probabilities are median-filtered over ``median_windows`` windows, then thresholded with
hysteresis: an event is a run of windows at or above ``low`` that reaches ``high`` somewhere (so a dip between
the two thresholds does not split it, and a bump that never reaches ``high`` does not start one). Events of a
class less than ``max_gap`` seconds apart are merged, then those shorter than ``min_duration`` are dropped.

Energy gate: a window whose level (RMS, dB) is more than ``min_level_db`` below the recording's loudest window
can neither start nor continue an event. A single-label model has to name some class in every window, silence
included, and those names were most of the false events on mixtures of sources in silence. The gate is relative
(not an absolute dBFS floor) so it does not depend on the recording's gain, and -40 dB is the silence
``data.trim_silence`` cuts (its level against the loudest frame).

Time: each window stands for the stretch of the recording nearer its centre than any other window's (half a
hop either side), so events are as precise as the hop, not as long as the window.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..calibration import DEFAULT_THRESHOLD
from ..config import EventsConfig, apply_overrides, config_from_dict
from ..errors import ConfigError
from ..files import atomic_write_text

# high -> low when events.low is unset: a dip to 60 % of the start threshold still continues an event
LOW_FRACTION = 0.6
CSV_HEADER = ("filename", "onset", "offset", "event_label", "peak_probability")  # DCASE columns + the peak


@dataclass(frozen=True)
class Event:
    filename: str
    onset: float
    offset: float
    label: str
    peak: float

    def to_dict(self) -> dict:
        return {"filename": self.filename, "onset": round(self.onset, 3), "offset": round(self.offset, 3),
                "event_label": self.label, "peak_probability": round(self.peak, 6)}


def decision_thresholds(classes: list[str], per_class: dict[str, float] | None = None,
                        default: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """The probability at which each class counts as present: ``per_class[name]`` where given (a run's chosen
    thresholds), else ``default``. The one place a decision threshold comes from."""
    per_class = per_class or {}
    unknown = sorted(set(per_class) - set(classes))
    if unknown:
        raise ConfigError(f"decision thresholds for unknown classes: {', '.join(unknown)} (the run's classes: "
                          f"{', '.join(classes)})")
    return np.array([float(per_class.get(name, default)) for name in classes], dtype=np.float64)


def events_config(values: dict | EventsConfig | None = None, overrides: list[str] | tuple = ()) -> EventsConfig:
    """The ``events`` settings from a run's config section, with ``events.KEY=VALUE`` overrides on top, checked
    like any config: a one-line :class:`ConfigError` naming the key."""
    if isinstance(values, EventsConfig):
        values = dataclasses.asdict(values)
    for item in overrides:
        if not item.strip().startswith("events."):
            raise ConfigError(f"'{item}': expected events.KEY=VALUE (e.g. events.min_duration=0.5)")
    return config_from_dict(apply_overrides({"events": dict(values or {})}, list(overrides))).events


def median_filter_windows(probs: np.ndarray, width: int) -> np.ndarray:
    """(K, C) probabilities, each class's median over ``width`` (odd) windows centred on each window; the
    edges repeat the first and last window (so the filter does not pull the ends towards 0)."""
    probs = np.asarray(probs, dtype=np.float64)
    if width <= 1 or len(probs) == 0:
        return probs
    half = width // 2
    padded = np.pad(probs, ((half, half), (0, 0)), mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width, axis=0), axis=-1)


def _window_spans(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each window's stretch begins and ends: midway between neighbouring centres, the recording's
    first and last window edge at the ends."""
    centres = (starts + ends) / 2
    middles = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([starts[:1], middles]), np.concatenate([middles, ends[-1:]])


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """``[first, last]`` window indices of each run of True."""
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def loud_windows(levels, min_level_db: float | None) -> np.ndarray | None:
    """Which windows pass the energy gate: level (dB) at least ``min_level_db`` relative to the loudest window;
    None when there is no gate (unset, or no levels measured)."""
    if min_level_db is None or levels is None:
        return None
    levels = np.asarray(levels, dtype=np.float64)
    return levels >= levels.max() + min_level_db if len(levels) else np.zeros(0, dtype=bool)


def detect_events(filename: str, starts, ends, probs, classes: list[str], settings: EventsConfig | None = None,
                  thresholds: np.ndarray | None = None, levels=None) -> list[Event]:
    """Events of one recording from its windows (``starts``/``ends`` in seconds, (K, C) ``probs``), sorted by
    onset. ``thresholds``: each class's decision threshold (:func:`decision_thresholds`), used as the start
    threshold unless ``settings.high`` is set. ``levels``: each window's level in dB, for the energy gate
    (``settings.min_level_db``; None: no gate)."""
    settings = settings or EventsConfig()
    starts, ends = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64).reshape(len(starts), len(classes))
    if len(starts) == 0:
        return []
    highs = (np.full(len(classes), settings.high) if settings.high is not None
             else decision_thresholds(classes) if thresholds is None else np.asarray(thresholds, dtype=np.float64))
    lows = np.full(len(classes), settings.low) if settings.low is not None else highs * LOW_FRACTION
    lows = np.minimum(lows, highs)  # per-class highs below a fixed low: the low never exceeds the start
    smoothed = median_filter_windows(probs, settings.median_windows)
    span_starts, span_ends = _window_spans(starts, ends)
    loud = loud_windows(levels, settings.min_level_db)
    events = []
    for c, name in enumerate(classes):
        found: list[list[float]] = []  # [onset, offset, peak]
        active = smoothed[:, c] >= lows[c]
        for first, last in _runs(active if loud is None else active & loud):
            peak = smoothed[first : last + 1, c].max()
            if peak < highs[c]:
                continue  # never reached the start threshold
            onset, offset = span_starts[first], span_ends[last]
            if found and onset - found[-1][1] < settings.max_gap:
                found[-1][1], found[-1][2] = offset, max(found[-1][2], peak)
            else:
                found.append([onset, offset, peak])
        events += [Event(filename, float(onset), float(offset), name, float(peak)) for onset, offset, peak in found
                   if offset - onset >= settings.min_duration]
    return sorted(events, key=lambda e: (e.onset, e.label))


def timeline_events(filename: str, timeline, settings: EventsConfig | None = None,
                    thresholds: np.ndarray | None = None) -> list[Event]:
    """:func:`detect_events` on a :class:`~audioclf.deploy.predictor.Timeline`."""
    return detect_events(filename, timeline.starts, timeline.ends, timeline.probs, timeline.classes, settings,
                         thresholds, timeline.levels)


def events_csv_text(events: list[Event]) -> str:
    """The DCASE strong-label columns ``filename,onset,offset,event_label`` plus ``peak_probability``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for e in events:
        # Names as they are (no spreadsheet quoting): the file is read back by scoring tools, as strong labels.
        writer.writerow([e.filename, f"{e.onset:.3f}", f"{e.offset:.3f}", e.label, f"{e.peak:.6f}"])
    return buffer.getvalue()


def write_events_csv(events: list[Event], path: str | Path) -> Path:
    return atomic_write_text(Path(path), events_csv_text(events))
