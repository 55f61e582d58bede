"""Plain CSV/TSV importer: ``fname,labels[,split,fold,duration,<group columns>]`` -> Manifest.

Column names are matched case-insensitively, with synonyms:

- file: ``path`` | ``fname`` | ``filename`` | ``file`` (required)
- labels: ``labels`` | ``label`` -- several labels comma-separated in one (quoted) cell, as in FSD2019's
  ``train_curated.csv``; without a label column the items are unlabelled
- ``split``: train / val / test (also training, validation, valid, dev -> val; evaluate, eval, testing -> test)
- ``fold`` (integer), ``duration`` (seconds), ``id`` (kept; otherwise the file name without extension)
- every other column is a group column (speaker, device, location ...)

The manifest snapshot written by :meth:`Manifest.to_csv` loads through here too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ...errors import DataError
from ..manifest import Item, Manifest, csv_rows

log = logging.getLogger(__name__)

FILE_COLUMNS = ("path", "fname", "filename", "file")
LABEL_COLUMNS = ("labels", "label")
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "validation": "val", "valid": "val", "dev": "val",
    "test": "test", "testing": "test", "evaluate": "test", "eval": "test",
}


def import_csv(path: str | Path, audio_root: str | Path | None = None,
               classes: Sequence[str] | None = None) -> Manifest:
    """Read a user CSV (comma- or tab-separated, detected from the header line) into a Manifest.

    File names resolve against ``audio_root`` when given; otherwise against the CSV's folder, and then
    against ``<csv folder>/audio/``. Absolute file names are used as they are. Every referenced file must
    exist. When ``classes`` is given, every label must be one of them (and the class order is kept).
    In a CSV where no row has more than one label (single-label), an empty label cell is an error; in a
    multi-label CSV it means "no labels".
    Errors name the CSV and the 1-based line number.
    """
    path = Path(path)
    header, rows = read_table(path)
    columns = _map_columns(path, header)
    known = None if classes is None else set(classes)

    parsed = []  # (line, cells, labels)
    first: dict[tuple[str, ...], int] = {}
    repeats = []  # (line, the line it repeats)
    for line, row in rows:
        if len(row) > len(header):
            raise DataError(f"{path}: line {line}: {len(row)} fields, expected at most {len(header)} like the header")
        cells = dict(zip(header, row))
        key = tuple(cells.get(name, "").strip() for name in header)
        if key in first:  # an exact repeat: used once (different rows for one file: integrity.check_files)
            repeats.append((line, first[key]))
            continue
        first[key] = line
        parsed.append((line, cells, _parse_labels(cells.get(columns["labels"], "")) if columns["labels"] else ()))
    if repeats:
        log.warning("%s: %d row(s) repeat an earlier row exactly (e.g. line %d repeats line %d); each is used once",
                    path, len(repeats), *repeats[0])
    multi_label = any(len(labels) > 1 for _, _, labels in parsed)
    _warn_spaced_labels(path, [(line, labels) for line, _, labels in parsed])

    items, missing = [], []  # missing: (line, file name), all reported in one error
    for line, cells, labels in parsed:
        where = f"{path}: line {line}"
        name = cells.get(columns["file"], "").strip()
        if not name:
            raise DataError(f"{where}: empty '{columns['file']}' cell; expected a file name")
        resolved = _resolve_file(name, path, audio_root)
        if resolved is None:
            missing.append((line, name))
            continue
        if columns["labels"] and not labels and not multi_label:
            raise DataError(f"{where}: empty '{columns['labels']}' cell; a single-label CSV needs one label per row")
        if known is not None:
            unknown = [label for label in labels if label not in known]
            if unknown:
                raise DataError(f"{where}: unknown label '{unknown[0]}'; expected one of the {len(known)} classes")
        items.append(Item(
            id=(cells.get(columns["id"], "").strip() if columns["id"] else "") or _default_id(name),
            path=resolved,
            labels=labels,
            split=_parse_split(cells.get(columns["split"], "") if columns["split"] else "", where),
            fold=_parse_number(int, cells.get(columns["fold"], "") if columns["fold"] else "", where, "fold"),
            groups={col: cells[col].strip() for col in columns["groups"] if cells.get(col, "").strip()},
            duration=_parse_number(float, cells.get(columns["duration"], "") if columns["duration"] else "",
                                   where, "duration"),
        ))
    if missing:
        raise DataError(_missing_files_message(path, audio_root, missing, len(parsed)))
    _check_duplicate_ids(path, items, [line for line, _, _ in parsed])
    return Manifest(items, classes=classes)


def read_table(path: Path, expected: str = "'fname,labels'") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header (stripped names) and the non-blank rows with their 1-based line numbers; ``expected``: the header
    an empty file's error asks for."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheet exports often start with a BOM
    except OSError as exc:
        raise DataError(f"{path}: cannot read CSV ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file; expected a CSV with a header line") from None
    first_line = text.split("\n", 1)[0]
    # A tab in the header means TSV (DCASE setup files); commas then only occur inside label cells.
    delimiter = "\t" if first_line.count("\t") > first_line.count(",") or path.suffix.lower() == ".tsv" else ","
    lines = csv_rows(text, path, delimiter)
    header = next(lines, (1, None))[1]
    if not header or not any(cell.strip() for cell in header):
        raise DataError(f"{path}: line 1: empty file; expected a header like {expected}")
    header = [cell.strip() for cell in header]
    rows = []
    for line, row in lines:
        if any(cell.strip() for cell in row):
            rows.append((line, row))
    return header, rows


def _map_columns(path: Path, header: list[str]) -> dict:
    """Which header name plays which role; the rest are group columns."""
    lower = [name.lower() for name in header]
    duplicates = sorted({name for name in lower if lower.count(name) > 1})
    if duplicates:
        raise DataError(f"{path}: line 1: column '{duplicates[0]}' appears twice")

    def find(candidates: Sequence[str]) -> str | None:
        for candidate in candidates:
            if candidate in lower:
                return header[lower.index(candidate)]
        return None

    columns = {"file": find(FILE_COLUMNS), "labels": find(LABEL_COLUMNS), "split": find(("split",)),
               "fold": find(("fold",)), "duration": find(("duration",)), "id": find(("id",))}
    if columns["file"] is None:
        raise DataError(f"{path}: line 1: no file column; expected one of {', '.join(FILE_COLUMNS)} "
                        f"(header: {','.join(header)})")
    roles = {name for name in columns.values() if name}
    columns["groups"] = [name for name in header if name not in roles and name]
    return columns


def _parse_labels(cell: str) -> tuple[str, ...]:
    """'Bark, Walk_and_footsteps' -> ('Bark', 'Walk_and_footsteps'); duplicates and blanks dropped."""
    labels = (label.strip() for label in cell.split(","))
    return tuple(dict.fromkeys(label for label in labels if label))


def _warn_spaced_labels(path: Path, rows: list[tuple[int, tuple[str, ...]]]) -> None:
    """A label whose words are each a label too ('high mid' beside 'high' and 'mid') is most likely two labels
    with a space where the comma belongs: reported once, with the first row. Not refused: a dataset can have
    such classes ('car horn' beside 'car' and 'horn'); a spaced label whose words are not labels is left alone."""
    known = {label for _, labels in rows for label in labels}
    suspects = [(line, label) for line, labels in rows for label in labels
                if len(label.split()) > 1 and all(word in known for word in label.split())]
    if suspects:
        line, label = suspects[0]
        log.warning("%s: line %d: label '%s' looks like the labels %s separated by spaces; labels are separated by "
                    "commas ('%s'); %d label(s) like it are kept as classes of their own", path, line, label,
                    ", ".join(f"'{word}'" for word in label.split()), ",".join(label.split()), len(suspects))


def _parse_split(cell: str, where: str) -> str | None:
    value = cell.strip().lower()
    if not value:
        return None
    if value not in SPLIT_NAMES:
        raise DataError(f"{where}: split '{cell.strip()}' is not one of train, val, test "
                        f"(or {', '.join(k for k in SPLIT_NAMES if k not in ('train', 'val', 'test'))})")
    return SPLIT_NAMES[value]


def _parse_number(kind: type, cell: str, where: str, column: str):
    value = cell.strip()
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise DataError(f"{where}: {column} '{value}' is not {expected}") from None


def _default_id(name: str) -> str:
    """The file name as written in the CSV, without extension, with forward slashes."""
    return str(PurePosixPath(name.replace("\\", "/")).with_suffix(""))


def _search_roots(csv_path: Path, audio_root: str | Path | None) -> list[Path]:
    """Where a CSV's relative file names resolve, in order: ``audio_root`` when given, else the CSV's folder
    and its ``audio/`` sub-folder."""
    return [Path(audio_root)] if audio_root is not None else [csv_path.parent, csv_path.parent / "audio"]


def _resolve_file(name: str, csv_path: Path, audio_root: str | Path | None) -> str | None:
    """The absolute path of a listed file (an absolute name is kept), or None when it is not there."""
    for root in _search_roots(csv_path, audio_root):
        if (root / name).is_file():
            return os.path.abspath(root / name)
    return None


MISSING_SHOWN = 10  # missing files named in the error; the rest are counted
_NEARBY_FOLDERS = 400  # folders near the CSV tried as the audio's root when most files are missing


def _missing_files_message(csv_path: Path, audio_root: str | Path | None, missing: list[tuple[int, str]],
                           n_rows: int) -> str:
    """One line for every listed file that is not there (the first :data:`MISSING_SHOWN` named with their line),
    where they were looked for, and, when most are missing, where the audio seems to be."""
    shown = ", ".join(f"line {line} '{name}'" for line, name in missing[:MISSING_SHOWN])
    more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
    looked = (f"data.audio_root={audio_root}" if audio_root is not None
              else f"{csv_path.parent} (the CSV's folder) and its audio/ folder")
    message = f"{csv_path}: {len(missing)} of {n_rows} listed files not found in {looked}: {shown}{more}"
    if 2 * len(missing) <= n_rows:
        return message  # half the files or more are where they should be: these are missing, not misplaced
    found = _nearby_root(csv_path, [name for _, name in missing[:5]], _search_roots(csv_path, audio_root))
    if found is not None:
        return f"{message}; they are under {found}: set data.audio_root={found} (evaluate: --audio-root {found})"
    if audio_root is None:
        return (f"{message}; if the audio is not next to the CSV, set data.audio_root=<folder> "
                "(evaluate: --audio-root <folder>)")
    return message


def _nearby_root(csv_path: Path, names: list[str], tried: list[Path]) -> Path | None:
    """A folder up to two levels below the CSV's parent folder under which most of ``names`` exist (a CSV kept in
    ``meta/`` beside ``audio/``, a CSV written for ``audio/`` files listing bare names ...), or None. Bounded by
    :data:`_NEARBY_FOLDERS`, so a CSV in a huge tree costs a moment, not a walk of the disk."""
    relative = [name for name in names if not Path(name).is_absolute()]
    if not relative:
        return None
    base = csv_path.parent.parent
    candidates, frontier = [base], [base]
    for _ in range(2):
        frontier = [child for folder in frontier for child in _subfolders(folder)][:_NEARBY_FOLDERS]
        candidates += frontier
    skipped = {os.path.abspath(folder) for folder in tried}
    for folder in candidates[:_NEARBY_FOLDERS]:
        if os.path.abspath(folder) in skipped:
            continue
        if 2 * sum((folder / name).is_file() for name in relative) > len(relative):
            return Path(os.path.abspath(folder))
    return None


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(Path(entry.path) for entry in os.scandir(folder)
                      if entry.is_dir() and not entry.name.startswith("."))
    except OSError:
        return []


def _check_duplicate_ids(path: Path, items: list[Item], lines: list[int]) -> None:
    first: dict[str, int] = {}
    for item, line in zip(items, lines):
        if item.id in first:
            raise DataError(f"{path}: line {line}: id '{item.id}' already used on line {first[item.id]}")
        first[item.id] = line


def table_records(path: Path, required: Sequence[str], hint: str = "") -> list[tuple[int, dict[str, str]]]:
    """(1-based line, {column: stripped cell}) rows of a dataset's table; ``required`` columns must exist
    and every row must have as many fields as the header (errors name the file and line)."""
    header, rows = read_table(path)
    missing = [name for name in required if name not in header]
    if missing:
        raise DataError(f"{path}: line 1: missing column '{missing[0]}'; expected columns {', '.join(required)}")
    out = []
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(f"{path}: line {line}: {len(row)} fields, expected {len(header)} like the header{hint}")
        out.append((line, {name: cell.strip() for name, cell in zip(header, row)}))
    return out


def folder_listing(folder: Path) -> set[str]:
    """File names in ``folder`` (one directory read instead of a stat per clip); empty when missing."""
    try:
        return {entry.name for entry in os.scandir(folder)}
    except OSError:
        return set()
