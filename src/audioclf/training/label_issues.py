"""Likely label errors in a training split by confident learning (Northcutt et al. 2021, JAIR), through cleanlab.

What confident learning needs is, for every file, class probabilities from a model that never saw that file's
label: out-of-fold probabilities. Here they come from a quick model beside the network, the classical member's
features (:class:`audioclf.models.classical.UtteranceStatistics`) plus a log-mel band profile
(:func:`quick_features`) and a logistic regression (a linear classifier
whose probabilities are calibrated by its own log-loss), fitted on the windows of k-1 folds and applied to the
windows of the k-th; a file's probabilities are the mean over its windows. The folds keep groups apart (the
data's group column: speakers, devices, sources) as the classical member's C search does, files otherwise, so a
speaker's other clips never vouch for a clip of theirs.

cleanlab does the rest (its ``filter.find_label_issues`` and ``rank.get_label_quality_scores``, not rewritten
here): which files are flagged, and each file's label quality in [0, 1] (the out-of-fold probability of its given
label: "self confidence"). The suggested label is the class the out-of-fold model prefers.

Multi-label sets (:func:`find_multilabel_issues`): one logistic regression per class (one-vs-rest) on the same
folds, and cleanlab's ``multilabel_classification`` for files with a likely missing or extra tag. ``train.noisy``
(drop / relabel / weight) stays single-label.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import targets_for
from ..errors import ConfigError, DataError
from ..features import power_to_db
from ..models.classical import UtteranceStatistics
from .members import _fold_groups, _folds_by, _grouped_c, _training_windows

__all__ = ["LabelIssue", "LabelIssues", "find_label_issues", "find_multilabel_issues", "out_of_fold_probabilities",
           "quick_features", "rank_label_issues"]

# 10 folds, not 5: each quick model learns from 90 % of the files, not 80 %, and its out-of-fold probabilities are
# sharper; with the margin below, precision / recall went .67/.78 -> .72/.91 (ESC-10), .38/.86 -> .58/.86
# (instruments), .70/.71 -> .73/.72 (speech). The cost: twice the (small, linear) fits.
DEFAULT_FOLDS = 10
# The logistic regression's inverse regularisation, chosen on the same grouped folds (214 standardised numbers per
# window, tens to thousands of windows). Measured with 10 % planted flipped labels on the three shared real sets
# (benchmarks/plant_faults.py; label-issue precision / recall, ESC-10 / instruments / Arabic speech commands by
# speaker): the old model (94 statistics, C in 0.1-10, cleanlab's default prune_by_noise_rate) .33/1.00,
# .27/.86, .37/.86; it always took C=0.1, the grid's edge. Stronger regularisation (C=0.01 on ESC-10 and speech) and
# the log-mel band profile raise the clean files' out-of-fold accuracy (ESC-10 .67 -> .75, speech .68 -> .77)
# and so the precision: see MIN_MARGIN for the figures.
C_GRID = (0.003, 0.01, 0.03, 0.1)
# Multi-label: one-vs-rest at a fixed C (the single-label search scores exact class agreement, which a set of
# tags does not have); 0.1, the grid's value on the instruments set, regularises as firmly.
MULTILABEL_C = 0.1
# A flagged file's suggested class must beat its given class by this much out-of-fold probability. cleanlab flags
# every file whose given class falls below its per-class threshold, and with a quick model that is right on only
# 3 clean files in 4 many of those are near ties between two classes that sound alike, not wrong labels.
# Measured (10 % flipped, 10 folds, ESC-10 / instruments / speech, precision / recall): margin 0 .47/.96, .38/.86,
# .57/.79; 0.2 .58/.96, .44/.86, .64/.77; 0.3 (kept) .72/.91, .58/.86, .73/.72. Rejected: filter_by="both"
# (margin 0.3: .72/.91, .57/.81, .77/.71; it loses recall on instruments), "confident_learning" (lower recall
# everywhere), an RBF SVM (Platt-calibrated: .55/.78, .44/.57, .58/.80 with "both") and extra trees (.59/.87,
# .48/.62, .46/.82) as the quick model, all at 5 folds; the old model at 10 folds is .33/.96 on ESC-10.
FILTER_BY = "prune_by_noise_rate"
MIN_MARGIN = 0.3


@dataclass(frozen=True)
class LabelIssue:
    """One training file whose given label the out-of-fold model doubts."""

    id: str
    given: str
    suggested: str
    quality: float  # cleanlab's label quality score: low = likely wrong


@dataclass
class LabelIssues:
    """Per training file (in the training split's order): the given and suggested class indices (multi-hot rows
    for multi-label data), the label
    quality score, whether cleanlab flags it; ``folds`` and ``folds_by`` say how the probabilities were held out."""

    ids: list[str]
    classes: list[str]
    given: np.ndarray
    suggested: np.ndarray
    quality: np.ndarray
    flagged: np.ndarray
    folds: int
    folds_by: str

    def ranked(self, among: np.ndarray | None = None) -> list[LabelIssue]:
        """The flagged files (those in the bool mask ``among`` only, when given), lowest quality first."""
        keep = self.flagged if among is None else self.flagged & among
        order = sorted(np.flatnonzero(keep), key=lambda i: (self.quality[i], self.ids[i]))
        return [LabelIssue(self.ids[i], self._names(self.given[i]), self._names(self.suggested[i]),
                           float(self.quality[i])) for i in order]

    def _names(self, labels) -> str:
        """A class index's name, or a multi-hot row's tags joined by commas (as the CSV writes them)."""
        if np.ndim(labels) == 0:
            return self.classes[int(labels)]
        return ",".join(self.classes[k] for k in np.flatnonzero(labels))


def quick_features(sample_rate: int) -> Callable[[np.ndarray], np.ndarray]:
    """Windows (B, N) -> (B, 214): the classical member's 94 utterance statistics plus the mean, spread and peak of
    each of their 40 log-mel bands (from the same STFT). The band profile is what separates sources that share an
    MFCC envelope (a clock tick from a crackling fire); with it the quick model's out-of-fold accuracy on clean
    files rose on all three shared real sets (see ``C_GRID``'s note)."""
    statistics = UtteranceStatistics(sample_rate)

    @torch.no_grad()
    def featurize(windows: np.ndarray) -> np.ndarray:
        wave = torch.from_numpy(windows).float()
        mel = power_to_db(torch.matmul(statistics.mel, statistics.spectrogram(wave)))
        return torch.cat([statistics(wave), mel.mean(-1), mel.std(-1), mel.amax(-1)], dim=1).numpy()

    return featurize


def _training_targets(inputs) -> np.ndarray:
    """The training split's targets: class indices (single-label) or a multi-hot integer matrix (multi-label)."""
    return targets_for(inputs.prepared.split("train"), list(inputs.classes), inputs.task).astype(np.int64)


def _check_enough(inputs, targets: np.ndarray, folds: int) -> None:
    """One-line errors for a training split no fold can be held out of."""
    if folds < 2:
        raise ConfigError(f"label issues: folds={folds}; expected at least 2")
    counts = np.bincount(targets, minlength=len(inputs.classes)) if targets.ndim == 1 else targets.sum(axis=0)
    present = counts[counts > 0]
    if len(present) < 2:
        raise DataError("label issues: the training split holds one class; nothing to confuse it with")
    if present.min() < 2:
        rare = inputs.classes[int(np.flatnonzero(counts == present.min())[0])]
        raise DataError(f"label issues: class '{rare}' has 1 training file; confident learning needs at least 2 "
                        "per class (one to learn from while the other is held out)")
    n_groups = len(set(_fold_groups(inputs, np.arange(len(targets)))))
    if n_groups < folds:
        raise DataError(f"label issues: {folds} folds need at least {folds} groups; the training split has "
                        f"{n_groups} ({_folds_by(inputs)}): lower the folds")


def _quick_model(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))


def _per_file(window_probs: np.ndarray, owners: np.ndarray, n_files: int) -> np.ndarray:
    sums = np.zeros((n_files, window_probs.shape[1]))
    np.add.at(sums, owners, window_probs)
    return sums / np.bincount(owners, minlength=n_files)[:, None]


def out_of_fold_probabilities(inputs, folds: int = DEFAULT_FOLDS, seed: int = 0) -> tuple[np.ndarray, int]:
    """``(probabilities (files, classes), folds used)`` for the training split of prepared audio ``inputs``: each
    file's from a model fitted on the other folds (see the module's docstring); multi-label: each class's
    probability from its own one-vs-rest model. One-line :class:`DataError` when the split holds too few files of
    a class, or too few groups, to hold any out."""
    targets = _training_targets(inputs)
    _check_enough(inputs, targets, folds)
    x, _, groups, owners = _training_windows(inputs, seed, quick_features(inputs.prepared.sample_rate), None)
    if targets.ndim == 2:
        return _multilabel_out_of_fold(x, targets[owners], groups, owners, len(targets), folds)
    best_c, _, fold_rows = _grouped_c(x, targets[owners], groups, C_GRID, _quick_model, max_folds=folds)
    window_probs = np.zeros((len(x), len(inputs.classes)))
    for fit_rows, held_rows in fold_rows:
        model = _quick_model(best_c).fit(x[fit_rows], targets[owners][fit_rows])
        # A class absent from these folds' training windows gets probability 0 in its column.
        window_probs[np.ix_(held_rows, model[-1].classes_)] = model.predict_proba(x[held_rows])
    return _per_file(window_probs, owners, len(targets)), len(fold_rows)


def _multilabel_out_of_fold(x: np.ndarray, y: np.ndarray, groups: np.ndarray, owners: np.ndarray, n_files: int,
                            folds: int) -> tuple[np.ndarray, int]:
    """One-vs-rest: per class a logistic regression at ``MULTILABEL_C`` on the same grouped folds."""
    from sklearn.model_selection import GroupKFold

    fold_rows = list(GroupKFold(n_splits=min(folds, len(set(groups)))).split(x, y, groups))
    window_probs = np.zeros(y.shape)
    for fit_rows, held_rows in fold_rows:
        for k in range(y.shape[1]):
            seen = y[fit_rows, k]
            if seen.min() == seen.max():  # a class always or never present in these folds: its rate is all we know
                window_probs[held_rows, k] = seen[0]
                continue
            model = _quick_model(MULTILABEL_C).fit(x[fit_rows], seen)
            window_probs[held_rows, k] = model.predict_proba(x[held_rows])[:, 1]
    return _per_file(window_probs, owners, n_files), len(fold_rows)


def rank_label_issues(given: np.ndarray, probabilities: np.ndarray, filter_by: str = FILTER_BY,
                      min_margin: float = MIN_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """``(flagged bool mask, label quality scores)`` by cleanlab from given class indices and out-of-fold
    probabilities (rows renormalised: cleanlab checks that they sum to 1); a flagged file's suggested class must
    also beat its given one by ``min_margin`` of probability."""
    cleanlab_issues, get_label_quality_scores = _cleanlab("filter", "rank")
    probs = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, None)
    probs /= probs.sum(axis=1, keepdims=True)
    given = np.asarray(given, dtype=np.int64)
    flagged = np.asarray(cleanlab_issues(labels=given, pred_probs=probs, filter_by=filter_by), dtype=bool)
    own = probs[np.arange(len(given)), given]
    others = probs.copy()
    others[np.arange(len(given)), given] = -1.0
    flagged &= others.max(axis=1) - own > min_margin
    return flagged, np.asarray(get_label_quality_scores(given, probs), dtype=np.float64)


def _cleanlab(*modules: str, multilabel: bool = False) -> list:
    """cleanlab's ``find_label_issues`` and ``get_label_quality_scores`` (of its multi-label package when asked),
    or a one-line error naming the extra that installs it."""
    import importlib

    package = "cleanlab.multilabel_classification" if multilabel else "cleanlab"
    try:
        loaded = [importlib.import_module(f"{package}.{module}") for module in modules]
    except ImportError:
        raise ConfigError("label issues need cleanlab: pip install 'audioclf[doctor]'") from None
    return [loaded[0].find_label_issues, loaded[1].get_label_quality_scores]


def find_label_issues(inputs, folds: int = DEFAULT_FOLDS, seed: int = 0) -> LabelIssues:
    """Likely label errors in the training split of prepared single-label audio ``inputs`` (see the module's
    docstring); ``.ranked()`` lists the flagged files, most doubtful first."""
    if inputs.task != "single_label":
        raise DataError("label issues: single-label data only here (this set is multi-label: "
                        "find_multilabel_issues looks for missing and extra tags)")
    probs, used = out_of_fold_probabilities(inputs, folds, seed)
    given = _training_targets(inputs)
    flagged, quality = rank_label_issues(given, probs)
    return LabelIssues([item.id for item in inputs.prepared.split("train")], list(inputs.classes), given,
                       probs.argmax(axis=1), quality, flagged, used, _folds_by(inputs))


def find_multilabel_issues(inputs, folds: int = DEFAULT_FOLDS, seed: int = 0) -> LabelIssues:
    """Likely missing or extra tags in the training split of prepared multi-label audio ``inputs``: cleanlab's
    multi-label confident learning (``multilabel_classification.filter.find_label_issues``, default filter) on
    one-vs-rest out-of-fold probabilities. ``given`` and ``suggested`` are multi-hot rows; the suggested tags are
    those with out-of-fold probability of at least 0.5 (the most likely one when none reaches it)."""
    if inputs.task != "multi_label":
        raise DataError("label issues: find_multilabel_issues is for multi-label data; use find_label_issues")
    probs, used = out_of_fold_probabilities(inputs, folds, seed)
    given = _training_targets(inputs)
    cleanlab_issues, get_label_quality_scores = _cleanlab("filter", "rank", multilabel=True)
    labels = [np.flatnonzero(row).tolist() for row in given]
    probs = np.clip(probs, 1e-6, 1 - 1e-6)  # cleanlab's one-vs-rest confident joint reads each column as a binary task
    flagged = np.asarray(cleanlab_issues(labels=labels, pred_probs=probs), dtype=bool)
    suggested = (probs >= 0.5).astype(np.int64)
    suggested[np.arange(len(probs)), probs.argmax(axis=1)] = 1
    return LabelIssues([item.id for item in inputs.prepared.split("train")], list(inputs.classes), given, suggested,
                       np.asarray(get_label_quality_scores(labels, probs), dtype=np.float64), flagged, used,
                       _folds_by(inputs))
