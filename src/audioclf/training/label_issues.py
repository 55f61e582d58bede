"""Likely label errors in a training split by confident learning (Northcutt et al. 2021, JAIR), through cleanlab.

What confident learning needs is, for every file, class probabilities from a model that never saw that file's
label: out-of-fold probabilities. Here they come from a quick model beside the network, the classical member's
features (:class:`audioclf.models.classical.UtteranceStatistics`) and a logistic regression (a linear classifier
whose probabilities are calibrated by its own log-loss), fitted on the windows of k-1 folds and applied to the
windows of the k-th; a file's probabilities are the mean over its windows. The folds keep groups apart (the
data's group column: speakers, devices, sources) as the classical member's C search does, files otherwise, so a
speaker's other clips never vouch for a clip of theirs.

cleanlab does the rest (its ``filter.find_label_issues`` and ``rank.get_label_quality_scores``, not rewritten
here): which files are flagged, and each file's label quality in [0, 1] (the out-of-fold probability of its given
label: "self confidence"). The suggested label is the class the out-of-fold model prefers.

Single-label only: a multi-label set is refused with one line (cleanlab's multi-label mode would need a
multi-label out-of-fold model, one-vs-rest per class, not built here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..models.classical import UtteranceStatistics
from .members import _fold_groups, _folds_by, _grouped_c, _training_windows

__all__ = ["LabelIssue", "LabelIssues", "find_label_issues", "out_of_fold_probabilities", "rank_label_issues"]

DEFAULT_FOLDS = 5
# The logistic regression's inverse regularisation, chosen on the same grouped folds: 94 standardised statistics
# per window, tens to thousands of windows.
C_GRID = (0.1, 1.0, 10.0)


@dataclass(frozen=True)
class LabelIssue:
    """One training file whose given label the out-of-fold model doubts."""

    id: str
    given: str
    suggested: str
    quality: float  # cleanlab's label quality score: low = likely wrong


@dataclass
class LabelIssues:
    """Per training file (in the training split's order): the given and suggested class indices, the label
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
        return [LabelIssue(self.ids[i], self.classes[self.given[i]], self.classes[self.suggested[i]],
                           float(self.quality[i])) for i in order]


def out_of_fold_probabilities(inputs, folds: int = DEFAULT_FOLDS, seed: int = 0) -> tuple[np.ndarray, int]:
    """``(probabilities (files, classes), folds used)`` for the training split of prepared audio ``inputs``: each
    file's from a model fitted on the other folds (see the module's docstring). One-line :class:`DataError` when
    the split holds too few files of a class, or too few groups, to hold any out."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if folds < 2:
        raise ConfigError(f"label issues: folds={folds}; expected at least 2")
    if inputs.task != "single_label":
        raise DataError("label issues: single-label data only (this set is multi-label; cleanlab's multi-label "
                        "mode needs a multi-label out-of-fold model, not built)")
    subset = inputs.prepared.split("train")
    given = np.array([inputs.classes.index(item.labels[0]) for item in subset])
    counts = np.bincount(given, minlength=len(inputs.classes))
    present = counts[counts > 0]
    if len(present) < 2:
        raise DataError("label issues: the training split holds one class; nothing to confuse it with")
    if present.min() < 2:
        rare = inputs.classes[int(np.flatnonzero(counts == present.min())[0])]
        raise DataError(f"label issues: class '{rare}' has 1 training file; confident learning needs at least 2 "
                        "per class (one to learn from while the other is held out)")
    n_groups = len(set(_fold_groups(inputs, np.arange(len(subset)))))
    if n_groups < folds:
        raise DataError(f"label issues: {folds} folds need at least {folds} groups; the training split has "
                        f"{n_groups} ({_folds_by(inputs)}): lower the folds")
    statistics = UtteranceStatistics(inputs.prepared.sample_rate)
    x, y, groups, owners = _training_windows(inputs, seed, lambda w: statistics(torch.from_numpy(w)).numpy(), None)

    def make(c: float):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))

    best_c, _, fold_rows = _grouped_c(x, y, groups, C_GRID, make, max_folds=folds)
    window_probs = np.zeros((len(x), len(inputs.classes)))
    for fit_rows, held_rows in fold_rows:
        model = make(best_c).fit(x[fit_rows], y[fit_rows])
        # A class absent from these folds' training windows gets probability 0 in its column.
        window_probs[np.ix_(held_rows, model[-1].classes_)] = model.predict_proba(x[held_rows])
    sums = np.zeros((len(subset), len(inputs.classes)))
    np.add.at(sums, owners, window_probs)
    return sums / np.bincount(owners, minlength=len(subset))[:, None], len(fold_rows)


def rank_label_issues(given: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(flagged bool mask, label quality scores)`` by cleanlab from given class indices and out-of-fold
    probabilities (rows renormalised: cleanlab checks that they sum to 1)."""
    try:
        from cleanlab.filter import find_label_issues as cleanlab_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise ConfigError("label issues need cleanlab: pip install 'audioclf[doctor]'") from None
    probs = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, None)
    probs /= probs.sum(axis=1, keepdims=True)
    given = np.asarray(given, dtype=np.int64)
    flagged = cleanlab_issues(labels=given, pred_probs=probs, filter_by="prune_by_noise_rate")
    return np.asarray(flagged, dtype=bool), np.asarray(get_label_quality_scores(given, probs), dtype=np.float64)


def find_label_issues(inputs, folds: int = DEFAULT_FOLDS, seed: int = 0) -> LabelIssues:
    """Likely label errors in the training split of prepared audio ``inputs`` (see the module's docstring);
    ``.ranked()`` lists the flagged files, most doubtful first."""
    probs, used = out_of_fold_probabilities(inputs, folds, seed)
    subset = inputs.prepared.split("train")
    given = np.array([inputs.classes.index(item.labels[0]) for item in subset])
    flagged, quality = rank_label_issues(given, probs)
    return LabelIssues([item.id for item in subset], list(inputs.classes), given, probs.argmax(axis=1), quality,
                       flagged, used, _folds_by(inputs))
