"""What a data set holds, split by split, before anything is trained: class counts, file durations, sample
rates, labels per clip (multi-label) and metadata columns such as devices, locations, speakers and sexes.

These are the numbers the reference reports look at before training (``audioclf describe`` draws them); they
come from the manifest and the file headers only, so describing a large set decodes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError
from .audio import AudioInfo
from .manifest import Manifest

__all__ = ["DESCRIBED_COLUMNS", "DataSummary", "column_values", "described_columns", "shared_values", "split_names",
           "summarize"]

# Metadata columns described whenever the data has them (names matched case-insensitively): recording devices,
# locations and cities (acoustic scenes), speakers and their sexes (speech), and the CSV importer's "group".
DESCRIBED_COLUMNS = ("device", "location", "city", "speaker", "speakers", "sex", "sexes", "gender", "group")
# A value holding this separator lists several (the speaker-count mixtures' "speakers": "19|250|1089"): each
# member is counted, so a speaker in train and in test shows whatever mixtures it is in.
LIST_SEPARATOR = "|"
SPLIT_ORDER = ("train", "val", "test")


@dataclass
class DataSummary:
    task: str
    classes: list[str]
    splits: list[str]  # train, val, test (those with items), then any other names
    items: dict[str, int]  # split -> items
    class_counts: dict[str, dict[str, int]]  # split -> class -> items (multi-label: once per label it has)
    durations: dict[str, list[float]]  # split -> seconds of each file, from its header (before any trimming)
    sample_rates: dict[str, dict[int, int]]  # split -> native rate (Hz) -> files
    # column -> split -> value -> items ("" = no value; a listed member counts each item it is in)
    columns: dict[str, dict[str, dict[str, int]]]
    group: str | None = None  # the column the split keeps apart (data.group), when there is one
    # Multi-label only: split -> number of labels -> items.
    labels_per_item: dict[str, dict[int, int]] | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable files: {"path", "reason"}


def split_names(manifest: Manifest) -> list[str]:
    """The splits the items have, train/val/test first; items without one are "none"."""
    present = {item.split or "none" for item in manifest}
    return [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))


def described_columns(manifest: Manifest, group: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The metadata columns to describe: ``group``, the data's :data:`DESCRIBED_COLUMNS`, then ``extra``
    (each must be a column of the data)."""
    names = manifest.group_names
    for name in extra:
        if name not in names:
            raise ConfigError(f"unknown column '{name}'; the data has: {', '.join(names) or 'no metadata columns'}")
    known = [name for name in names if name.lower() in DESCRIBED_COLUMNS]
    return list(dict.fromkeys([*([group] if group else []), *known, *extra]))


def summarize(manifest: Manifest, infos: Mapping[str, AudioInfo], columns: Sequence[str] = (),
              group: str | None = None, skipped: Sequence[dict[str, str]] = ()) -> DataSummary:
    """The numbers of :class:`DataSummary` for ``manifest`` (items with splits) and ``infos`` (path -> header)."""
    splits = split_names(manifest)
    by_split = {split: [item for item in manifest if (item.split or "none") == split] for split in splits}
    class_counts = {}
    for split, items in by_split.items():
        counts = dict.fromkeys(manifest.classes, 0)
        for item in items:
            for label in item.labels:
                counts[label] += 1
        class_counts[split] = counts
    return DataSummary(
        task=manifest.task,
        classes=list(manifest.classes),
        splits=splits,
        items={split: len(items) for split, items in by_split.items()},
        class_counts=class_counts,
        durations={split: [infos[item.path].duration for item in items] for split, items in by_split.items()},
        sample_rates={split: dict(sorted(Counter(infos[item.path].sample_rate for item in items).items()))
                      for split, items in by_split.items()},
        columns={name: {split: dict(sorted(Counter(value for item in items
                                                   for value in _members(item.groups.get(name, ""))).items()))
                        for split, items in by_split.items()} for name in columns},
        group=group,
        labels_per_item={split: dict(sorted(Counter(len(item.labels) for item in items).items()))
                         for split, items in by_split.items()} if manifest.task == "multi_label" else None,
        skipped=list(skipped),
    )


def _members(value: str) -> list[str]:
    """The values one cell holds: itself, or each member of a :data:`LIST_SEPARATOR`-joined list."""
    return value.split(LIST_SEPARATOR) if LIST_SEPARATOR in value else [value]


def column_values(summary: DataSummary, name: str) -> list[str]:
    """The distinct values of metadata column ``name`` over all splits, sorted ("" = items without one)."""
    return sorted({value for split in summary.splits for value in summary.columns[name][split]})


def shared_values(summary: DataSummary, name: str) -> list[str]:
    """Values of column ``name`` found in more than one split (a speaker in train and in test)."""
    seen = Counter(value for split in summary.splits for value in summary.columns[name][split] if value)
    return sorted(value for value, n in seen.items() if n > 1)
