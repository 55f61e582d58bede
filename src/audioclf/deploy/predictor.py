"""Prediction from a run directory on files, folders and long recordings.

A recording longer than the training clip is cut into clip-length windows with 50 % overlap (the last one
aligned to the end, so no audio is ignored) and the window probabilities are aggregated (mean by default,
``max`` is the usual choice for "is this sound anywhere in the file" tagging).

Test-time augmentation (``tta=N``, ``audioclf predict --tta N``): each window is also scored as N - 1 copies
shifted in time by fractions of the hop between windows, and the N probabilities are averaged; N times the
compute. ``tta=1`` (the default) is the plain prediction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..calibration import Decisions, check_min_confidence, read_decisions
from ..data.audio import (check_header, clip_windows, kept_parts, recording_positions, stream_trimmed_audio,
                          stream_windows, window_levels_db, window_starts)
from ..data.importers.folder import AUDIO_EXTENSIONS
from ..errors import AudioDecodeError, ConfigError, DataError, NonFiniteOutputs
from ..files import atomic_write_text, spreadsheet_text
from ..models.classifier import AudioClassifier
from ..runs import load_model
from ..training.evaluate import finite
from ..training.losses import probabilities
from ..training.members import MemberMix, load_mix
from ..training.state import resolve_device
from .events import Event, decision_thresholds, events_config, timeline_events


@dataclass
class Prediction:
    path: str
    probs: np.ndarray | None  # (C,) or None when the file could not be read
    error: str | None = None
    # The predicted labels (the run's decisions, audioclf.calibration): the most probable class (single-label; none
    # when it abstained, below min_confidence) or every class above its threshold (multi-label).
    labels: tuple[str, ...] = ()
    abstained: bool = False  # single-label: the top probability was below min_confidence

    @property
    def label(self) -> str | None:
        """The most probable predicted label (None when the file could not be read, none passed its threshold, or
        the prediction abstained)."""
        return self.labels[0] if self.labels else None


@dataclass
class Timeline:
    """A recording's windows against time: ``starts`` (seconds), each ``window`` seconds long, and their (K, C)
    class probabilities."""

    starts: np.ndarray
    window: float
    probs: np.ndarray
    classes: list[str]
    # Where each window ends in the recording (default start + window): a window that spans silence cut by
    # ``data.trim_silence`` covers more of the recording, one of a file shorter than a clip less.
    ends: np.ndarray | None = None
    levels: np.ndarray | None = None  # (K,) each window's RMS level in dB re full scale (the events' energy gate)

    def __post_init__(self) -> None:
        self.starts = np.asarray(self.starts, dtype=np.float64)
        self.ends = self.starts + self.window if self.ends is None else np.asarray(self.ends, dtype=np.float64)
        self.levels = None if self.levels is None else np.asarray(self.levels, dtype=np.float64)

    def to_csv(self, path: str | Path) -> Path:
        """``start_s,end_s,<class>...``: one row per window."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["start_s", "end_s", *map(spreadsheet_text, self.classes)])
        for start, end, row in zip(self.starts, self.ends, self.probs):
            writer.writerow([f"{start:.3f}", f"{end:.3f}", *(f"{p:.6f}" for p in row)])
        return atomic_write_text(Path(path), buffer.getvalue())

    def to_dict(self) -> dict:
        return {"window_seconds": self.window, "classes": self.classes, "starts": [round(float(s), 4) for s in self.starts],
                "ends": [round(float(e), 4) for e in self.ends],
                "probabilities": [[round(float(p), 6) for p in row] for row in self.probs],
                **({} if self.levels is None else {"levels_db": [round(float(v), 2) for v in self.levels]})}


def _measured(batches, levels: list):
    """``batches`` of windows passed on as they are, each one's window levels appended to ``levels``."""
    for batch in batches:
        levels.append(window_levels_db(batch))
        yield batch


def check_tta(tta) -> int:
    """``tta`` as a count of copies per window (1 = no test-time augmentation); a ConfigError otherwise."""
    if isinstance(tta, bool) or not isinstance(tta, (int, np.integer)) or tta < 1:
        raise ConfigError(f"tta={tta!r}: expected a positive integer (copies per window, 1 = off)")
    return int(tta)


def tta_shifts(clip_samples: int, tta: int) -> list[int]:
    """Circular shifts (samples) of the ``tta`` copies of a window: 0, then even fractions of the hop between
    windows (half a clip), so the copies see the content at offsets the 50 %-overlap windows skip."""
    hop = max(1, clip_samples // 2)
    return [round(i * hop / tta) for i in range(check_tta(tta))]


def averaged_over_shifts(windows: np.ndarray, score, tta: int) -> np.ndarray:
    """(B, C) probabilities of ``windows`` (B, L): ``score`` of each time-shifted copy, averaged.

    A roll, not a crop: the copy keeps the window's length, and a clip that was tiled to length (pad_mode=tile)
    stays a continuous loop. One call of ``score`` per copy keeps its batch size as given."""
    shifts = tta_shifts(windows.shape[-1], tta)
    if len(shifts) == 1:
        return score(windows)
    total = None
    for shift in shifts:
        probs = np.asarray(score(np.roll(windows, shift, axis=-1) if shift else windows), dtype=np.float64)
        total = probs if total is None else total + probs
    return total / len(shifts)


class WindowedPredictor(ABC):
    """Files and long recordings -> class probabilities, given a model that scores clip-length windows.

    Subclasses set ``classes``, ``task``, ``sample_rate``, ``clip_samples``, ``pad_mode``, ``trim_silence``
    (as in training: silent stretches cut before windowing) and implement
    :meth:`window_probabilities` (PyTorch: :class:`Predictor`; ONNX Runtime: ``OnnxPredictor``).
    """

    classes: list[str]
    task: str
    sample_rate: int
    clip_samples: int
    pad_mode: str = "tile"
    trim_silence: bool | str = False
    max_seconds: float | None = None  # longer files are refused before decoding (None: audio.MAX_SECONDS)
    _tta: int = 1
    # How probabilities become labels: the run's temperature and thresholds (set per instance: from_run, or the
    # ONNX metadata); the defaults (T = 1, 0.5) for a model without them.
    decisions: Decisions = Decisions()

    @property
    def min_confidence(self) -> float | None:
        """Single-label: below this top probability, a prediction abstains (no label); None: never."""
        return self.decisions.min_confidence

    @min_confidence.setter
    def min_confidence(self, value: float | None) -> None:
        self.decisions = replace(self.decisions, min_confidence=check_min_confidence(value, self.task))
    # How events() turns windows into events: the run's config section ``events`` (None: its defaults).
    event_settings = None

    @property
    def tta(self) -> int:
        """Test-time augmentation: copies scored per window (see :func:`averaged_over_shifts`); 1 = off."""
        return self._tta

    @tta.setter
    def tta(self, value: int) -> None:
        self._tta = check_tta(value)

    @abstractmethod
    def window_probabilities(self, windows: np.ndarray) -> np.ndarray:
        """(B, clip_samples) float32 waveforms -> (B, C) probabilities."""

    def predict_wave(self, wave: np.ndarray, aggregate: str = "mean", batch_size: int = 64) -> np.ndarray:
        """Class probabilities for one mono waveform at ``self.sample_rate``."""
        return self.recording_probabilities(self.wave_window_probabilities(wave, batch_size), aggregate)

    def recording_probabilities(self, window_probs: np.ndarray, aggregate: str = "mean") -> np.ndarray:
        """A recording's (C,) probabilities from its windows': aggregated, then calibrated (the temperature was
        fitted on whole-file probabilities, as validation scores them)."""
        return self.decisions.calibrated(self.task, aggregate_windows(window_probs, aggregate))

    def wave_window_probabilities(self, wave: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(K, C) probabilities of each clip-length window of one mono waveform (50 % overlap, in order)."""
        windows = clip_windows(wave, self.clip_samples, self.pad_mode)  # cut batch by batch
        # Every prediction passes through finite() (here or in _score_stream): a model whose forward pass
        # overflows never answers `nan` or a label.
        return finite(np.concatenate([averaged_over_shifts(windows[i : i + batch_size], self.window_probabilities,
                                                           self.tta)
                                      for i in range(0, len(windows), batch_size)]).astype(np.float64))

    def file_window_probabilities(self, path: str | Path, batch_size: int = 64, score=None) -> np.ndarray:
        """(K, C) probabilities of each window of a file, decoded (and silence-trimmed, as in training) as a
        stream, so memory does not grow with the file's length. Raises :class:`AudioDecodeError` naming it.
        ``score``: what scores a batch of windows (default :meth:`window_probabilities`; the server's batcher)."""
        blocks = stream_trimmed_audio(path, self.sample_rate, self.trim_silence, self.max_seconds)
        return self._score_stream(blocks, batch_size, score)

    def _score_stream(self, blocks, batch_size: int, score=None, levels: list | None = None) -> np.ndarray:
        """``levels``: when a list, each batch's window levels (dB) are appended to it as the windows pass."""
        score = score or self.window_probabilities
        batches = stream_windows(blocks, self.clip_samples, self.pad_mode, batch_size)
        if levels is not None:
            batches = _measured(batches, levels)
        # Each batch's probabilities copied out of the tensor they came in: holding thousands of small tensors
        # made between the forward passes' large temporaries kept the heap from shrinking (+100 MB per hour).
        return finite(np.concatenate([np.array(averaged_over_shifts(batch, score, self.tta), dtype=np.float64)
                                      for batch in batches]))

    def timeline(self, path: str | Path, batch_size: int = 64, score=None) -> "Timeline":
        """Every window's probabilities against the recording's time, for a long recording: the very windows of
        :meth:`file_window_probabilities` (silence trimmed as in training, so ``/timeline`` and ``/predict`` count
        the same windows and their mean is the prediction), each placed where its samples are in the recording."""
        info = check_header(path, self.max_seconds)
        parts = kept_parts(path, self.sample_rate, self.trim_silence, self.max_seconds)
        blocks = stream_trimmed_audio(path, self.sample_rate, self.trim_silence, self.max_seconds, parts=parts)
        levels: list[np.ndarray] = []
        try:
            probs = self._score_stream(blocks, batch_size, score, levels)
        except NonFiniteOutputs as exc:
            raise NonFiniteOutputs(f"{path}: {exc}") from None
        n = round(info.n_samples * self.sample_rate / info.sample_rate) if parts is None else sum(b - a for a, b in parts)
        hop = max(1, self.clip_samples // 2)
        starts = window_starts(n, self.clip_samples, hop)  # stream_windows' rule
        if len(starts) != len(probs):  # the header misstated the length: the windows are hop apart all the same
            starts = [i * hop for i in range(len(probs))]
            n = max(n, starts[-1] + self.clip_samples)
        ends = [min(start + self.clip_samples, n) for start in starts]
        if parts is not None:
            starts, ends = recording_positions(starts, parts), recording_positions(ends, parts, ends=True)
        probs = self.decisions.calibrated(self.task, probs)  # each window read as a recording of its own
        return Timeline(np.asarray(starts) / self.sample_rate, self.clip_samples / self.sample_rate, probs,
                        list(self.classes), np.asarray(ends) / self.sample_rate, np.concatenate(levels))

    def decision_thresholds(self) -> np.ndarray:
        """Each class's decision threshold: the run's, chosen on validation (``decisions.json``), else 0.5."""
        return decision_thresholds(self.classes, dict(zip(self.classes, self.decisions.threshold_array(
            len(self.classes)).tolist())))

    def events(self, path: str | Path, name: str | None = None, settings=None, batch_size: int = 64,
               score=None) -> list[Event]:
        """The sound events of a recording (:mod:`audioclf.deploy.events`) from its :meth:`timeline`, with
        ``settings`` (an ``EventsConfig``; default :attr:`event_settings`); ``name``: the filename they carry."""
        return timeline_events(name or Path(path).name, self.timeline(path, batch_size, score),
                               settings or self.event_settings, self.decision_thresholds())

    def predict(self, files: list[str | Path] | str | Path, aggregate: str = "mean") -> list[Prediction]:
        """:meth:`predict_files` for one file or folder, or several: the call a run
        (:class:`audioclf.workflows.api.Run`) answers too, with the same predictions."""
        return self.predict_files([files] if isinstance(files, (str, Path)) else list(files), aggregate)

    def predict_files(self, paths: list[str | Path], aggregate: str = "mean") -> list[Prediction]:
        check_aggregate(aggregate)
        results = []
        for path in expand_paths(paths):
            try:
                probs = self.recording_probabilities(self.file_window_probabilities(path), aggregate)
            except AudioDecodeError as exc:
                results.append(Prediction(str(path), None, exc.reason))
                continue
            except NonFiniteOutputs as exc:  # reported as failed, as an unreadable file: never a `nan` row
                results.append(Prediction(str(path), None, str(exc)))
                continue
            results.append(decided(Prediction(str(path), probs), self))
        return results

    def labels_of(self, probs: np.ndarray) -> tuple[str, ...]:
        """The predicted labels of one (calibrated) probability vector, most probable first (the run's decisions)."""
        return self.decisions.labels(self.task, self.classes, probs)

    def top_k(self, probs: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        return top_k(self.classes, probs, k)


class Predictor(WindowedPredictor):
    """A trained run's best checkpoint (PyTorch, CPU or GPU), with the ensemble's classical member when
    validation chose it (:mod:`audioclf.training.members`): the run's own choice, the predictor its scores are of."""

    mix: MemberMix = MemberMix(None, 0.0, "network")

    def __init__(self, model: AudioClassifier, classes: list[str], task: str, sample_rate: int,
                 clip_samples: int, pad_mode: str = "tile", device: str | torch.device = "cpu",
                 trim_silence: bool | str = False, tta: int = 1):
        self.tta = tta
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.classes, self.task = list(classes), task
        self.sample_rate, self.clip_samples, self.pad_mode = sample_rate, clip_samples, pad_mode
        self.trim_silence = trim_silence or False

    @classmethod
    def from_run(cls, run_dir: str | Path, which: str = "best", device: str = "auto", tta: int = 1) -> "Predictor":
        torch_device = resolve_device(device)
        model, state = load_model(run_dir, which, torch_device)
        if state.get("input_kind", "audio") != "audio":
            raise ConfigError(f"{run_dir}: the run was trained on {state['input_kind']}, not audio; predicting on "
                              "audio files needs a run trained on audio (use evaluate for embedding sets)")
        data = state.get("config", {}).get("data", {})
        predictor = cls(model, state["classes"], state["task"], state["sample_rate"], state["clip_samples"],
                        data.get("pad_mode", "tile"), torch_device, data.get("trim_silence") or False, tta)
        predictor.max_seconds = data.get("max_seconds")
        predictor.event_settings = events_config(state.get("config", {}).get("events"))
        if which == "best":  # the members were weighed, the decisions chosen, against the best checkpoint
            predictor.mix = load_mix(run_dir)
            predictor.decisions = read_decisions(run_dir, predictor.classes)
        return predictor

    def window_probabilities(self, windows: np.ndarray) -> np.ndarray:
        return self.mix(self.network_probabilities)(windows)

    @torch.no_grad()
    def network_probabilities(self, windows: np.ndarray) -> np.ndarray:
        logits = self.model(torch.as_tensor(windows).to(self.device)).float()
        return probabilities(self.task, logits).cpu().numpy()


class EnsemblePredictor:
    """Several trained models' probabilities averaged per file: an average ensemble, as FSD2019 solutions
    submitted. Each member decodes, trims and windows a file its own way (the preprocessing belongs to the
    saved model), so members may differ in sample rate, clip length or front-end; they must share classes."""

    def __init__(self, members: list[WindowedPredictor], names: list[str] | None = None):
        first = members[0]
        for member, name in zip(members[1:], (names or [""] * len(members))[1:]):
            if member.classes != first.classes or member.task != first.task:
                raise ConfigError(f"ensemble member {name or member}: its classes or task differ from the first "
                                  "model's; an ensemble averages the same classes")
        self.members = members
        self.classes, self.task = list(first.classes), first.task

    def predict_files(self, paths: list[str | Path], aggregate: str = "mean") -> list[Prediction]:
        per_member = [member.predict_files(paths, aggregate) for member in self.members]
        results = []
        for predictions in zip(*per_member):
            unreadable = next((p for p in predictions if p.probs is None), None)
            if unreadable is not None:
                results.append(Prediction(unreadable.path, None, unreadable.error))
                continue
            probs = np.mean([p.probs for p in predictions], axis=0)
            results.append(decided(Prediction(predictions[0].path, probs), self.members[0]))
        return results

    def labels_of(self, probs: np.ndarray) -> tuple[str, ...]:
        return self.members[0].labels_of(probs)

    def top_k(self, probs: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        return self.members[0].top_k(probs, k)


def decided(prediction: Prediction, predictor: WindowedPredictor) -> Prediction:
    """``prediction`` with the labels ``predictor``'s decisions give its probabilities (and whether it abstained)."""
    prediction.labels, prediction.abstained = predictor.decisions.decide(predictor.task, predictor.classes,
                                                                         prediction.probs)
    return prediction


def top_k(classes: list[str], probs: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most probable ``(class, probability)`` of one probability vector, most probable first."""
    order = np.argsort(-np.asarray(probs))[:k]
    return [(classes[i], float(probs[i])) for i in order]


def check_aggregate(aggregate: str) -> None:
    if aggregate not in ("mean", "max"):
        raise ConfigError(f"aggregate={aggregate!r}: expected 'mean' or 'max'")


def aggregate_windows(probs: np.ndarray, aggregate: str = "mean") -> np.ndarray:
    """One recording's (K, C) window probabilities -> (C,): their mean, or their max (tagging: "anywhere")."""
    check_aggregate(aggregate)
    return probs.mean(0) if aggregate == "mean" else probs.max(0)


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given; folders expanded (recursively, sorted) to the audio files inside."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")))
        else:
            out.append(path)  # a missing file is reported per file by predict_files
    if not out:
        raise DataError(f"no audio files found in {', '.join(map(str, paths))}")
    return out


def write_predictions_csv(path: str | Path, predictions: list[Prediction], classes: list[str]) -> None:
    """One row per file: path, the predicted labels (``;``-separated for multi-label; ``-`` for none: an abstention
    or no class above its threshold), one probability column per class; unreadable files have an error."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    text = spreadsheet_text  # labels, file names and errors come from data: never a formula (see there)
    writer.writerow(["path", "prediction", *map(text, classes), "error"])
    for pred in predictions:
        if pred.probs is None:
            writer.writerow([text(str(pred.path)), "", *[""] * len(classes), text(pred.error or "")])
        else:
            writer.writerow([text(str(pred.path)), text(";".join(pred.labels)) if pred.labels else "-",
                             *[f"{p:.6f}" for p in pred.probs], ""])
    atomic_write_text(Path(path), buffer.getvalue())
