"""Detected events scored against strong labels with the field's own implementation: psds_eval (the ``events``
extra), the reference code of the Polyphonic Sound Detection Score (Bilen et al. 2020) that DCASE uses.

* ``event_f1``: macro-average over classes of the intersection-based F1 of the events at the run's decision
  thresholds (a detection is a true positive when it overlaps ground truth of its class by at least ``dtc`` of
  its length and covers at least ``gtc`` of the ground truth's, 0.7 both, scenario 1's criteria: psds_eval's
  ``compute_macro_f_score``, with a class's ground-truth count taken from the labels, see below).
* ``psds1`` / ``psds2``: the area under the PSD-ROC over decision thresholds 0.05 .. 0.95 (one operating point
  each), with DCASE 2021-2023's two scenarios: tight localisation (dtc = gtc = 0.7, no cross-triggers) and
  reaction over localisation (dtc = gtc = 0.1, cttc = 0.3, alpha_ct = 0.5); alpha_st = 1, max eFPR 100 an hour.

psds_eval 0.5.3, its latest release, predates pandas 3 and numpy 2: two of its functions (the step curve, the area
under it) are carried below with a one-line port each, and nothing else of the score is ours.

sed_eval (Mesaros et al. 2016; segment- and collar-based F1) and sed_scores_eval are not used: both are source
distributions only (sed_scores_eval compiles Cython), and sed_eval needs dcase_util, which pulls librosa,
pydot-ng, validators, python-magic and more, so neither installs from the locked wheels.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import EventsConfig
from ..data.audio import audio_info
from ..data.strong_labels import StrongLabel, read_strong_labels, recording_path
from ..errors import AudioclfError, AudioDecodeError, DataError
from .events import Event, timeline_events

OPERATING_POINTS = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))
SCENARIOS = {  # DCASE 2021-2023 task 4's PSDS scenarios
    "psds1": {"dtc": 0.7, "gtc": 0.7, "cttc": 0.3, "alpha_ct": 0.0, "alpha_st": 1.0, "max_efpr": 100.0},
    "psds2": {"dtc": 0.1, "gtc": 0.1, "cttc": 0.3, "alpha_ct": 0.5, "alpha_st": 1.0, "max_efpr": 100.0},
}


def _psds_class():
    try:
        import pandas as pd
        from psds_eval import PSDSEval
        from psds_eval.psds import WORLD, PSDSEvalError
    except ImportError:
        raise AudioclfError("scoring events needs psds_eval: pip install 'audioclf[events]'") from None

    class Pandas3PSDSEval(PSDSEval):
        @staticmethod
        def step_curve(x, xp, yp):
            # psds_eval 0.5.3's own step curve, with fillna(method="ffill") (removed in pandas 3) as .ffill():
            # the only change, so the score is the library's.
            roc = pd.DataFrame({"x": xp, "y": yp}).groupby("x").agg("max").reset_index().sort_values(by="x")
            if x.size < roc.x.size:
                raise ValueError(f"x: {x.size}, xp: {xp.size}")
            roc.y = roc.y.cummax()
            return pd.merge(pd.Series(x, name="x"), roc, how="outer", on="x").ffill().fillna(value=0).y.values

        @staticmethod
        def _auc(x, y, max_x=None, decreasing_y=False):
            # psds_eval 0.5.3's area under the PSD-ROC, with int() of a (1, 1) index array (an error since numpy 2)
            # taken as its element: again the only change.
            x, y = np.array(x), np.array(y)
            max_x = x.max() if max_x is None else max_x
            if max_x not in x:
                x = np.sort(np.concatenate([x, [max_x]]))
                i = int(np.argwhere(x == max_x)[0, 0])
                y = np.concatenate([y[:i], [y[i - 1]], y[i:]])
            valid = x <= max_x
            return np.sum(np.diff(x[valid]) * np.array(y[valid])[:-1])

        def compute_macro_f_score(self, detections, beta=1.0):
            # psds_eval 0.5.3 recovers each class's ground-truth count as TP / TP ratio, which is 0 / 0 for a class
            # with no true positive: its F1 becomes nan and the macro mean skips it (a missed class scored as if
            # absent). Here the count is the library's own (_get_dataset_counts); TP and FP are its confusion matrix.
            counts, *_ = self._evaluate_detections(self._init_det_table(detections))
            names = sorted(set(self.class_names) - {WORLD})
            n_truth = self._get_dataset_counts().reindex(names, fill_value=0).to_numpy(dtype=float)
            tp, fp = np.diag(counts)[:-1], counts[:-1, -1]
            f = self.compute_f_score(tp, fp, n_truth - tp, beta)
            return float(np.mean(f)), dict(zip(names, f.tolist()))

    return Pandas3PSDSEval, PSDSEvalError, pd


def _table(pd, rows: list) -> "object":
    columns = ["filename", "onset", "offset", "event_label"]
    return pd.DataFrame([[r.filename, r.onset, r.offset, r.label] for r in rows], columns=columns)


def score_events(truth: list[StrongLabel], durations: dict[str, float], detect: Callable[[EventsConfig], list[Event]],
                 settings: EventsConfig) -> dict:
    """Scores of a detector against ``truth``. ``durations``: each file's length (seconds; the files scored);
    ``detect(settings)``: every file's events with those settings; PSDS sweeps the start threshold over
    :data:`OPERATING_POINTS` (the low threshold scaled with it unless set). The classes scored are those with
    ground truth (psds_eval leaves the others' rates undefined): detections of any other class are left out."""
    evaluator, library_error, pd = _psds_class()
    truth = [t for t in truth if t.filename in durations]
    scored = {t.label for t in truth}

    def detections(s: EventsConfig):
        return _table(pd, [e for e in detect(s) if e.label in scored])

    ground_truth = _table(pd, truth)
    metadata = pd.DataFrame({"filename": list(durations), "duration": list(durations.values())})
    at_thresholds = detections(settings)
    sweep = {}
    for high in OPERATING_POINTS:
        low = None if settings.low is None else min(settings.low, float(high))
        sweep[float(high)] = detections(dataclasses.replace(settings, high=float(high), low=low))
    result = {"files": len(durations), "classes_scored": len(scored), "ground_truth_events": len(ground_truth),
              "detected_events": len(at_thresholds)}
    with warnings.catch_warnings():
        # Neighbouring thresholds that detect the same events are one operating point, which psds_eval says
        # once per duplicate; its rates of classes without cross-triggers are nan by design.
        warnings.filterwarnings("ignore", "A similar operating point exists")
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        warnings.filterwarnings("ignore", module="psds_eval")  # its pandas calls that pandas 3 deprecates
        for name, s in SCENARIOS.items():
            result.update(_scenario(evaluator, library_error, name, s, ground_truth, metadata, at_thresholds, sweep))
    return result


def _scenario(evaluator, library_error, name: str, s: dict, ground_truth, metadata, at_thresholds, sweep) -> dict:
    """One PSDS scenario's score (and, for scenario 1, the F1 at the run's thresholds)."""
    try:
        psds = evaluator(s["dtc"], s["gtc"], s["cttc"], ground_truth=ground_truth, metadata=metadata,
                         duration_unit="hour")
    except library_error as exc:  # e.g. two overlapping events of one class in one file
        raise DataError(f"strong labels: {exc}") from None
    result = {}
    if name == "psds1":
        macro, per_class = psds.compute_macro_f_score(at_thresholds)
        result["event_f1"] = _number(macro)
        result["event_f1_per_class"] = {c: _number(v) for c, v in per_class.items()}
    for high, table in sweep.items():
        psds.add_operating_point(table, info={"threshold": high})
    result[name] = _number(psds.psds(s["alpha_ct"], s["alpha_st"], s["max_efpr"]).value)
    return result


def _number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def evaluate_strong_labels(predictor, labels_csv: str | Path, audio_root: str | Path | None = None,
                           settings: EventsConfig | None = None, strict: bool = False) -> dict:
    """A predictor's events on the recordings a strong-label file names (resolved under ``audio_root``, default
    the file's folder, then its audio/), scored by :func:`score_events`; each recording's timeline is computed
    once. A recording that is missing or cannot be decoded is a reported skip (``strict``: an error naming it)."""
    truth = read_strong_labels(labels_csv, predictor.classes)
    settings = settings or predictor.event_settings or EventsConfig()
    thresholds = predictor.decision_thresholds()
    timelines, durations, skipped = {}, {}, []
    for name in sorted({t.filename for t in truth}):
        path = recording_path(name, labels_csv, audio_root)
        try:
            timelines[name] = predictor.timeline(path)
            durations[name] = audio_info(path).duration
        except (AudioDecodeError, DataError, OSError) as exc:
            if strict:
                raise DataError(f"{path}: {exc}") from None
            skipped.append({"path": str(path), "reason": str(exc).splitlines()[0]})
    if not timelines:
        raise DataError(f"{labels_csv}: none of its {len(skipped)} recordings could be read (first: "
                        f"{skipped[0]['path']}: {skipped[0]['reason']})")

    def detect(s: EventsConfig) -> list[Event]:
        return [e for name, tl in timelines.items() for e in timeline_events(name, tl, s, thresholds)]

    return {**score_events(truth, durations, detect, settings), "settings": dataclasses.asdict(settings),
            "skipped": skipped}
