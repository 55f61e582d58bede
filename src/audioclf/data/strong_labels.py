"""Strong labels: where each sound event sits in a recording, in the DCASE format ``filename,onset,offset,
event_label`` (seconds; a comma- or tab-separated file with that header, extra columns ignored)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .importers.csv import _resolve_file, read_table

COLUMNS = ("filename", "onset", "offset", "event_label")


@dataclass(frozen=True)
class StrongLabel:
    filename: str
    onset: float
    offset: float
    label: str


def _seconds(text: str, where: str, column: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {column}={text!r}: expected a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise DataError(f"{where}: {column}={text!r}: expected a finite number of seconds >= 0")
    return value


def read_strong_labels(path: str | Path, classes: list[str] | None = None) -> list[StrongLabel]:
    """The events of a strong-label file; a one-line :class:`DataError` naming the file (and line) for an empty or
    unreadable file, a missing column, a truncated row, a time that is not a finite number >= 0, an onset not
    before its offset, or (with ``classes``) a label the model does not know."""
    path = Path(path)
    # the CSV importer's reader: BOM, tabs (DCASE .tsv), line numbers
    header, rows = read_table(path, expected=f"'{','.join(COLUMNS)}'")
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: strong labels need the columns {','.join(COLUMNS)}; missing {','.join(missing)}")
    index = {name: header.index(name) for name in COLUMNS}
    known = set(classes) if classes is not None else None
    labels = []
    for line, row in rows:
        where = f"{path} line {line}"
        short = [name for name, i in index.items() if i >= len(row)]
        if short:  # a truncated row: its missing cells named, not read as empty values
            raise DataError(f"{where}: {len(row)} of {len(header)} columns; missing {','.join(short)}")
        cell = {name: row[i].strip() for name, i in index.items()}
        if not cell["filename"] or not cell["event_label"]:
            raise DataError(f"{where}: empty filename or event_label")
        onset, offset = _seconds(cell["onset"], where, "onset"), _seconds(cell["offset"], where, "offset")
        if onset >= offset:
            raise DataError(f"{where}: onset {onset:g} s is not before offset {offset:g} s")
        if known is not None and cell["event_label"] not in known:
            raise DataError(f"{where}: unknown event_label {cell['event_label']!r} (the model's classes: "
                            f"{', '.join(classes)})")
        labels.append(StrongLabel(cell["filename"], onset, offset, cell["event_label"]))
    if not labels:
        raise DataError(f"{path}: no events (a header and no rows)")
    return labels


def recording_path(name: str, labels_csv: str | Path, audio_root: str | Path | None = None) -> Path:
    """Where a strong-label file's recording is: resolved as the CSV importer resolves file names (``audio_root``,
    else the CSV's folder, then its ``audio/``); the first candidate when it is nowhere (the error names it)."""
    found = _resolve_file(name, Path(labels_csv), audio_root)
    return Path(found) if found else Path(audio_root or Path(labels_csv).parent) / name
