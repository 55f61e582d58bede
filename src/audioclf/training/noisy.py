"""``train.noisy``: before training, what to do with the training labels confident learning doubts
(:mod:`.label_issues`), on the part of the training split marked noisy.

* ``drop``: the flagged files leave the training split (the manifest snapshot no longer holds them);
* ``relabel``: a flagged file trains under the class the out-of-fold model suggests (the snapshot says so);
* ``weight``: every file of the noisy part counts in the loss by its label quality score (cleanlab's, in [0, 1]),
  flagged or not; files outside it count 1;
* ``none``: nothing is computed.

Which files are the noisy part: ``train.noisy_items``, null for the whole training split, or ``<column>=<value>``
for the files whose group column has that value (FSD2019's importer marks its noisy clips ``source=noisy``). The
label-issue model sees the whole training split either way (the clean part helps it), and only the noisy part's
files are dropped, relabelled or weighted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .label_issues import LabelIssues, find_label_issues

__all__ = ["NOISY_CHOICES", "check_noisy", "handle_noisy_labels"]

NOISY_CHOICES = ("none", "drop", "relabel", "weight")
VERBS = {"drop": "dropped", "relabel": "relabelled", "weight": "weighted by label quality"}


def check_noisy(train) -> None:
    """``train.noisy``, ``train.noisy_items`` and ``train.noisy_folds``, checked before any data is read."""
    if train.noisy not in NOISY_CHOICES:
        raise ConfigError(f"train.noisy={train.noisy!r}: expected {' | '.join(NOISY_CHOICES)}")
    items = train.noisy_items
    if items is not None and (not isinstance(items, str) or items.count("=") != 1 or not all(items.split("="))):
        raise ConfigError(f"train.noisy_items={items!r}: expected null (the whole training split) or "
                          "<group column>=<value>, e.g. source=noisy")
    if train.noisy != "none" and train.noisy_folds < 2:
        raise ConfigError(f"train.noisy_folds={train.noisy_folds}: expected at least 2")


def noisy_part(inputs, noisy_items: str | None) -> np.ndarray:
    """A bool mask over the training split: the files ``train.noisy_items`` marks noisy."""
    subset = inputs.prepared.split("train")
    if noisy_items is None:
        return np.ones(len(subset), dtype=bool)
    column, value = noisy_items.split("=")
    if column not in subset.group_names:
        raise ConfigError(f"train.noisy_items={noisy_items}: the training split has no group column '{column}' "
                          f"(it has: {', '.join(subset.group_names) or 'none'})")
    mask = np.array([group == value for group in subset.group_values(column)])
    if not mask.any():
        raise DataError(f"train.noisy_items={noisy_items}: no training file has {column}={value}")
    return mask


def handle_noisy_labels(inputs, train, seed: int) -> dict[str, Any] | None:
    """Apply ``train.noisy`` to prepared audio ``inputs`` (its manifest, or its ``loss_weights``); returns the
    summary's ``noisy_labels`` entry (with ``message``: the run header's line), or None for ``none``."""
    if train.noisy == "none":
        return None
    mask = noisy_part(inputs, train.noisy_items)
    issues = find_label_issues(inputs, train.noisy_folds, seed)
    flagged = issues.flagged & mask
    if train.noisy == "weight":
        weights = np.where(mask, issues.quality, 1.0)
        inputs.loss_weights = dict(zip(issues.ids, weights.tolist()))
        changed = int(mask.sum())
    else:
        inputs.prepared.manifest = _changed_manifest(inputs.prepared.manifest, issues, flagged, train.noisy)
        changed = int(flagged.sum())
    where = "training files" if train.noisy_items is None else f"training files with {train.noisy_items}"
    if train.noisy == "weight":
        what = (f"{changed} {where} weighted by label quality (mean {float(issues.quality[mask].mean()):.2f}); "
                f"{int(flagged.sum())} flagged")
    else:
        what = f"{VERBS[train.noisy]} {changed} of {int(mask.sum())} {where}"
    message = (f"noisy labels: {what} by confident learning (cleanlab; out-of-fold probabilities, {issues.folds} "
               f"folds by {issues.folds_by})")
    ranked = issues.ranked(among=mask)
    return {"mode": train.noisy, "noisy_items": train.noisy_items, "noisy_files": int(mask.sum()),
            "flagged": int(flagged.sum()), "changed": changed, "folds": issues.folds, "folds_by": issues.folds_by,
            "top_flagged": [dataclasses.asdict(issue) for issue in ranked[:20]], "message": message}


def _changed_manifest(manifest, issues: LabelIssues, flagged: np.ndarray, mode: str):
    """The manifest without the flagged training files (``drop``) or with their suggested label (``relabel``)."""
    chosen = {issues.ids[i]: issues.classes[issues.suggested[i]] for i in np.flatnonzero(flagged)}
    if mode == "drop":
        return manifest.filter(lambda item: not (item.split == "train" and item.id in chosen))
    return manifest.with_items(dataclasses.replace(item, labels=(chosen[item.id],))
                               if item.split == "train" and item.id in chosen else item for item in manifest)
