"""The one table of items every importer produces and every later step reads.

A :class:`Manifest` is a tuple of frozen :class:`Item` rows plus the class list and the task. Operations
(``filter``, ``subset``, ``with_splits`` ...) return new manifests that keep the class list and task, so a
split subset still maps labels to the same columns as the whole set.

Snapshot CSV (``to_csv`` / ``from_csv``), one row per item::

    id,path,labels,split,fold,duration,<group columns...>

``labels`` is comma-joined (quoted by the CSV writer when it holds several labels); an empty ``split``,
``fold`` or ``duration`` cell means "not set"; an empty group cell means the item has no value for it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..files import atomic_write_text
from ..tasks import check_task

BASE_COLUMNS = ("id", "path", "labels", "split", "fold", "duration")


@dataclass(frozen=True)
class Item:
    """One audio clip: where it is, what it is, and what it belongs to (split, fold, groups)."""

    id: str
    path: str
    labels: tuple[str, ...]
    split: str | None = None
    fold: int | None = None
    groups: Mapping[str, str] = field(default_factory=dict)  # speaker, device, location, city ...
    duration: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.labels, str):  # tuple("rock") would silently give ('r', 'o', 'c', 'k')
            raise DataError(f"item {self.id}: labels must be a sequence of names, got the string '{self.labels}'")
        # Normalise the containers so Item(labels=["a"], path=Path(...)) compares equal to a loaded one;
        # an empty group value means "none", as in the snapshot CSV.
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        object.__setattr__(self, "groups", {str(k): str(v) for k, v in self.groups.items() if str(v) != ""})

    def __hash__(self) -> int:
        groups = tuple(sorted(self.groups.items()))
        return hash((self.id, self.path, self.labels, self.split, self.fold, groups, self.duration))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "labels": list(self.labels), "split": self.split,
                "fold": self.fold, "groups": dict(self.groups), "duration": self.duration}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Item:
        return cls(id=data["id"], path=data["path"], labels=tuple(data.get("labels", ())),
                   split=data.get("split"), fold=data.get("fold"), groups=dict(data.get("groups") or {}),
                   duration=data.get("duration"))


class Manifest:
    """An immutable list of items with a class list and a task ("single_label" or "multi_label").

    ``classes`` defaults to the sorted unique labels; when given, every label must be in it (the order is
    kept, e.g. the alphabetical class columns of a submission). ``task`` defaults to "multi_label" when any
    item has a number of labels other than one, else "single_label".
    """

    def __init__(self, items: Iterable[Item], classes: Sequence[str] | None = None, task: str | None = None):
        self.items: tuple[Item, ...] = tuple(items)
        _check_unique_ids(self.items)
        self.classes: list[str] = _resolve_classes(self.items, classes)
        self.task: str = _resolve_task(self.items, task)

    # --- sequence protocol ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __getitem__(self, index: int) -> Item:
        return self.items[index]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return (self.items, self.classes, self.task) == (other.items, other.classes, other.task)

    def __repr__(self) -> str:
        return f"Manifest({len(self)} items, {len(self.classes)} classes, task={self.task!r})"

    # --- operations returning new manifests -----------------------------------------------------
    def with_items(self, items: Iterable[Item]) -> Manifest:
        """Same classes and task, other items."""
        return Manifest(items, classes=self.classes, task=self.task)

    def filter(self, pred: Callable[[Item], bool]) -> Manifest:
        return self.with_items(item for item in self.items if pred(item))

    def subset(self, split: str) -> Manifest:
        """The items of one split ("train", "val", "test")."""
        return self.filter(lambda item: item.split == split)

    def with_splits(self, splits: Sequence[str | None]) -> Manifest:
        """One split name per item, in item order (e.g. the output of :mod:`audioclf.data.splits`)."""
        if len(splits) != len(self.items):
            raise DataError(f"with_splits: got {len(splits)} split names for {len(self.items)} items")
        names = [None if split is None else str(split) for split in splits]  # numpy str_ -> str
        return self.with_items(dataclasses.replace(item, split=name) for item, name in zip(self.items, names))

    # --- groups and labels ----------------------------------------------------------------------
    @property
    def group_names(self) -> list[str]:
        """Group columns in first-seen order (the CSV column order)."""
        names: dict[str, None] = {}
        for item in self.items:
            names.update(dict.fromkeys(item.groups))
        return list(names)

    def group_values(self, name: str) -> list[str]:
        """The value of group ``name`` for every item, in item order ("" where an item has none)."""
        if name not in self.group_names:
            available = ", ".join(self.group_names) or "none"
            raise ConfigError(f"unknown group column '{name}'; available: {available}")
        return [item.groups.get(name, "") for item in self.items]

    def groups_per_split(self, name: str) -> dict[str, list[str]]:
        """The distinct values of group ``name`` (speakers, devices ...) each split holds, sorted, in split order."""
        values: dict[str, set[str]] = {}
        for item, value in zip(self.items, self.group_values(name)):
            values.setdefault(item.split or "none", set()).add(value)
        order = {split: i for i, split in enumerate(("train", "val", "test"))}
        return {split: sorted(values[split]) for split in sorted(values, key=lambda s: (order.get(s, 3), s))}

    def label_matrix(self) -> np.ndarray:
        """(N, C) float32 multi-hot targets in ``classes`` order."""
        index = {name: i for i, name in enumerate(self.classes)}
        matrix = np.zeros((len(self.items), len(self.classes)), dtype=np.float32)
        for row, item in enumerate(self.items):
            matrix[row, [index[label] for label in item.labels]] = 1.0
        return matrix

    def label_indices(self) -> np.ndarray:
        """(N,) int64 class indices; only for single-label manifests."""
        if self.task != "single_label":
            raise DataError(f"label_indices needs a single-label manifest; this one is {self.task}")
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[item.labels[0]] for item in self.items], dtype=np.int64)

    def class_counts(self) -> dict[str, int]:
        """Items per class, in ``classes`` order (classes without items count 0)."""
        counts = dict.fromkeys(self.classes, 0)
        for item in self.items:
            for label in item.labels:
                counts[label] += 1
        return counts

    # --- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "task": self.task, "items": [item.to_dict() for item in self.items]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        return cls([Item.from_dict(row) for row in data["items"]], classes=data.get("classes"), task=data.get("task"))

    def to_csv(self, path: str | Path) -> Path:
        """Write the snapshot CSV atomically (temp file + rename); returns the path."""
        groups = self.group_names
        clash = [name for name in groups if name in BASE_COLUMNS]
        if clash:
            raise DataError(f"{path}: group column '{clash[0]}' clashes with a snapshot column {BASE_COLUMNS}")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([*BASE_COLUMNS, *groups])
        for item in self.items:
            bad = [label for label in item.labels if "," in label]
            if bad:
                raise DataError(f"{path}: item {item.id}: label '{bad[0]}' contains a comma; labels are comma-joined")
            writer.writerow([
                item.id, item.path, ",".join(item.labels), item.split or "",
                "" if item.fold is None else item.fold,
                "" if item.duration is None else repr(float(item.duration)),  # repr round-trips exactly
                *[item.groups.get(name, "") for name in groups],
            ])
        atomic_write_text(Path(path), buffer.getvalue())
        return Path(path)

    @classmethod
    def from_csv(cls, path: str | Path, classes: Sequence[str] | None = None, task: str | None = None) -> Manifest:
        """Read a snapshot written by :meth:`to_csv` (paths are kept as written, not checked)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{path}: cannot read manifest ({exc.strerror})") from None
        rows = csv_rows(text, path)
        header = next(rows, (1, None))[1]
        missing = [c for c in ("id", "path", "labels") if header is None or c not in header]
        if missing:
            raise DataError(f"{path}: line 1: missing column '{missing[0]}'; expected {','.join(BASE_COLUMNS)}")
        groups = [name for name in header if name not in BASE_COLUMNS]
        items = []
        for line, row in rows:
            if not row:
                continue
            cells = dict(zip(header, row))
            where = f"{path}: line {line}"
            items.append(Item(
                id=cells["id"], path=cells["path"],
                labels=tuple(label for label in cells["labels"].split(",") if label),
                split=cells.get("split") or None,
                fold=_parse_number(int, cells.get("fold", ""), where, "fold"),
                groups={name: cells[name] for name in groups if cells.get(name)},
                duration=_parse_number(float, cells.get("duration", ""), where, "duration"),
            ))
        return cls(items, classes=classes, task=task)


# --- helpers ------------------------------------------------------------------------------------
def csv_rows(text: str, path: str | Path, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """``(line, cells)`` for every row of CSV ``text``; ``line`` is the 1-based physical line the row ends on
    (a quoted cell may span lines). A row the csv module refuses (a cell over its 128 KiB field limit, mostly
    an unclosed quote that runs on to the end of the file) is a DataError naming ``path`` and the line."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{path}: line {reader.line_num}: {exc} (an unclosed quote, or a cell that is not a "
                            "file name or a label)") from None
        yield reader.line_num, row


def _check_unique_ids(items: tuple[Item, ...]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise DataError(f"duplicate item id '{item.id}' ({item.path})")
        seen.add(item.id)


def _resolve_classes(items: tuple[Item, ...], classes: Sequence[str] | None) -> list[str]:
    if classes is None:
        return sorted({label for item in items for label in item.labels})
    classes = [str(name) for name in classes]
    if len(set(classes)) != len(classes):
        duplicate = next(name for name in classes if classes.count(name) > 1)
        raise DataError(f"class list names '{duplicate}' twice")
    known = set(classes)
    for item in items:
        for label in item.labels:
            if label not in known:
                raise DataError(f"item {item.id}: unknown label '{label}'; expected one of the {len(classes)} classes")
    return classes


def _resolve_task(items: tuple[Item, ...], task: str | None) -> str:
    if task is None:
        return "multi_label" if any(len(item.labels) != 1 for item in items) else "single_label"
    check_task(task)
    if task == "single_label":
        for item in items:
            if len(item.labels) != 1:
                raise DataError(f"item {item.id}: single-label task needs exactly one label, got {len(item.labels)}")
    return task


def _parse_number(kind: type, text: str | None, where: str, column: str) -> Any:
    if text is None or text.strip() == "":
        return None
    try:
        return kind(text)
    except ValueError:
        raise DataError(f"{where}: {column} '{text}' is not a valid {kind.__name__}") from None
