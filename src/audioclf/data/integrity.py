"""Checks on a manifest before any audio is decoded: the mistakes that would otherwise train on wrong labels or
leak files between splits without a word.

* :func:`check_files`: one file, one row. The same file (links resolved) under two ids with different labels,
  splits or folds is an error naming both rows; an exact repeat is dropped with a warning (decoded once).
* :func:`check_classes`: a single-label task needs two classes; names that differ only in case or spaces
  ("TONE", "tone ") and classes with fewer than :data:`RARE` items are reported.
* :func:`check_splits`: every class needs training items (multi-label: reported); classes missing from
  validation are reported.
* :func:`check_decoded`: a class whose every file was unreadable is an error, not a class with no items.
* :func:`groups_from_paths` and :func:`warn_ignored_groups`: groups (speakers, sessions) from the file paths,
  and a warning when the data has groups that the split does not keep apart (the same speaker in train and
  test makes the test score an overestimate).
* :func:`choose_group_column`: the column zero-config keeps apart when the user left the split to it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import defaultdict

from ..errors import DataError
from .manifest import Manifest

log = logging.getLogger(__name__)

__all__ = ["AUTO_GROUP_COLUMNS", "RARE", "check_classes", "check_decoded", "check_files", "check_splits",
           "choose_group_column", "groups_from_paths", "warn_ignored_groups"]

RARE = 3  # fewer training items than this: reported as too rare to learn or to measure
# Columns that name who or what recorded a clip, in the order zero-config prefers them (names matched
# case-insensitively): a held-out split over one of them measures what users meet, new speakers or devices.
AUTO_GROUP_COLUMNS = ("group", "speaker", "speaker_id", "client_id", "subject", "participant", "session",
                      "device", "device_id", "location")
# Enough groups for train, validation and test to get some each, and groups that repeat (not one per clip).
MIN_AUTO_GROUPS = 5


def _labels(item) -> str:
    return ",".join(item.labels) or "no label"


def check_files(manifest: Manifest) -> Manifest:
    """``manifest`` with exact repeats of a file dropped; :class:`DataError` for a file listed twice with
    different labels, splits or folds."""
    first: dict[str, object] = {}
    kept, repeats = [], 0
    for item in manifest:
        real = os.path.realpath(item.path)
        seen = first.get(real)
        if seen is None:
            first[real] = item
            kept.append(item)
            continue
        for what, a, b in (("labels", _labels(seen), _labels(item)), ("split", seen.split, item.split),
                           ("fold", seen.fold, item.fold)):
            if a != b:
                raise DataError(f"{item.path}: listed twice with different {what} ('{seen.id}': {a}, '{item.id}': "
                                f"{b}); a file can have one labelling and sit in one split")
        repeats += 1
    if repeats:
        log.warning("%d rows repeat a file already listed with the same labels; each file is used once", repeats)
        return manifest.with_items(kept)
    return manifest


def check_classes(manifest: Manifest) -> None:
    """Errors and warnings about the class list of a training manifest."""
    counts = manifest.class_counts()
    present = [name for name, n in counts.items() if n > 0]
    if manifest.task == "single_label" and len(present) < 2:
        names = ", ".join(f"'{c}'" for c in present) or "none"
        raise DataError(f"only one class ({names}): a single-label classifier needs at least two classes")
    variants: dict[str, list[str]] = defaultdict(list)
    for name in counts:
        variants[" ".join(name.split()).casefold()].append(name)
    for names in variants.values():
        if len(names) > 1:
            log.warning("classes %s differ only in case or spaces; they are trained as separate classes (rename "
                        "one if they are the same)", ", ".join(f"'{n}'" for n in names))
    empty = [name for name, n in counts.items() if n == 0]
    if empty:  # a dataset's declared class list, of which this copy holds a part
        log.warning("classes of the dataset with no items here: %s", ", ".join(empty))
    rare = [f"{name} ({n})" for name, n in counts.items() if 0 < n < RARE]
    if rare:
        log.warning("classes with fewer than %d items, too few to learn or to measure: %s", RARE, ", ".join(rare))


def check_splits(manifest: Manifest) -> None:
    """Every class that has items has training items (single-label: an error, since the model could never
    predict it; multi-label: reported); classes without validation items are reported."""
    train = manifest.subset("train").class_counts()
    where = {name: sorted({item.split or "no split" for item in manifest if name in item.labels})
             for name, n in train.items() if n == 0}
    missing = [name for name, splits in where.items() if splits]  # a declared class with no items at all: below
    if missing:
        shown = ", ".join(f"'{name}' (only in {'/'.join(where[name])})" for name in missing[:5])
        text = f"classes without training items: {shown}{' ...' if len(missing) > 5 else ''}"
        if manifest.task == "single_label":
            raise DataError(f"{text}; the model could never predict them")
        log.warning("%s; the model cannot learn them", text)
    val = manifest.subset("val")
    if len(val):
        absent = [name for name, n in val.class_counts().items() if n == 0]
        if absent:
            log.warning("classes with no validation items (their scores are not measured while training): %s",
                        ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else ""))


def check_decoded(manifest: Manifest, usable: Manifest) -> None:
    """A class that had files but lost all of them to unreadable audio is an error naming it."""
    before, after = manifest.class_counts(), usable.class_counts()
    lost = [f"'{name}' ({n} files)" for name, n in before.items() if n > 0 and after.get(name, 0) == 0]
    if lost:
        raise DataError(f"every file of class {', '.join(lost)} was unreadable (see the skipped files); fix or "
                        "remove the class")


def groups_from_paths(manifest: Manifest, pattern: str, column: str) -> Manifest:
    """Each item's ``column`` group from the first match of ``pattern`` in its path (the capture named
    ``group``, else the first capture, else the whole match); a file it does not match is a DataError."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DataError(f"data.group_pattern={pattern!r}: not a regular expression ({exc})") from None
    items = []
    for item in manifest:
        match = regex.search(item.path.replace(os.sep, "/"))
        if match is None:
            raise DataError(f"{item.path}: data.group_pattern={pattern!r} does not match; every file needs a group")
        value = match.group("group") if "group" in regex.groupindex else match.group(1) if regex.groups else match.group(0)
        items.append(dataclasses.replace(item, groups={**item.groups, column: value}))
    return manifest.with_items(items)


def choose_group_column(manifest: Manifest) -> str | None:
    """The first of :data:`AUTO_GROUP_COLUMNS` that the data has with at least :data:`MIN_AUTO_GROUPS` values,
    each on two items or more on average; None when none qualifies. For items without splits only: a given split
    is the user's."""
    if any(item.split for item in manifest):
        return None
    names = {name.lower(): name for name in manifest.group_names}
    for wanted in AUTO_GROUP_COLUMNS:
        name = names.get(wanted)
        if name is None:
            continue
        values = [value for value in manifest.group_values(name) if value]
        distinct = len(set(values))
        if len(values) == len(manifest) and MIN_AUTO_GROUPS <= distinct <= len(manifest) / 2:
            return name
    return None


def warn_ignored_groups(manifest: Manifest, group: str | None) -> None:
    """A warning when group columns with repeated values exist but the split is drawn without any of them."""
    if group is not None or all(item.split for item in manifest):
        return
    distinct = {name: len(set(manifest.group_values(name))) for name in manifest.group_names}
    shared = [name for name, n in distinct.items() if 1 < n < len(manifest)]
    if shared:
        log.warning("the data has group columns (%s) but the split ignores them: one %s can land in train and in "
                    "test, and the test score then overestimates unseen ones; set data.group=%s to keep them apart",
                    ", ".join(shared), shared[0], shared[0])
