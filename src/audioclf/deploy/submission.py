"""Kaggle-style submission CSVs (Freesound Audio Tagging 2019): ``fname,<class>,<class>...`` with probabilities.

The sample submission is the template: the output has exactly its columns in its order, and its rows in
its ``fname`` order when it lists files. Predictions are matched to rows by file name (the path's last
component; by stem when the sample's names have no extension).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from ..data.importers.csv import read_table
from ..errors import DataError
from ..files import atomic_write_text

log = logging.getLogger(__name__)


def write_submission(predictions: Iterable[Any], classes: Sequence[str], sample_submission_csv: str | Path,
                     out_csv: str | Path) -> Path:
    """Write ``out_csv`` with the sample submission's columns and row order; returns its path.

    ``predictions``: ``(path, probs)`` pairs, or objects with ``.path`` and ``.probs`` (as
    :meth:`audioclf.deploy.predictor.Predictor.predict_files` returns), ``probs`` in ``classes`` order.
    DataError when: the sample's header is not ``fname,<classes>``; a class of the header is not in
    ``classes``; a listed file has no prediction (or an unreadable one); two predictions share a file name;
    ``probs`` has the wrong length or a non-finite value. Model classes the sample lacks and predictions for
    files the sample does not list are dropped with a warning. Values are written exactly (``repr``).
    """
    sample_path = Path(sample_submission_csv)
    if not sample_path.is_file():
        raise DataError(f"{sample_path}: sample submission not found")
    header, rows = read_table(sample_path)
    if header[0].lower() != "fname" or len(header) < 2:
        raise DataError(f"{sample_path}: line 1: expected a header 'fname,<class>,<class>...', "
                        f"got '{','.join(header[:3])}'")
    columns = _class_columns(header[1:], list(classes), sample_path)
    by_name = _probabilities_by_name(predictions, len(classes))

    listed = [(line, row[0].strip()) for line, row in rows]
    if listed:
        stems = _unique_stems(by_name)
        names = [_match(name, by_name, stems) for _, name in listed]
        missing = [name for (_, name), key in zip(listed, names) if key is None]
        if missing:
            raise DataError(f"{sample_path}: {len(missing)} listed file(s) have no prediction, e.g. line "
                            f"{next(line for line, n in listed if n == missing[0])}: '{missing[0]}'")
        extra = set(by_name) - set(names)
        if extra:
            log.warning("%d prediction(s) are for files %s does not list (e.g. %s); left out",
                        len(extra), sample_path, sorted(extra)[0])
        ordered = [(name, by_name[key]) for (_, name), key in zip(listed, names)]
    else:  # an empty template: header only, rows in prediction order
        ordered = list(by_name.items())

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for name, probs in ordered:
        writer.writerow([name, *(repr(float(probs[i])) for i in columns)])
    return atomic_write_text(Path(out_csv), buffer.getvalue())


def _class_columns(sample_classes: list[str], classes: list[str], sample_path: Path) -> list[int]:
    """For each class column of the sample, its index in the model's ``classes``."""
    index = {name: i for i, name in enumerate(classes)}
    lacking = [name for name in sample_classes if name not in index]
    if lacking:
        shown = ", ".join(lacking[:5]) + (" ..." if len(lacking) > 5 else "")
        raise DataError(f"{sample_path}: line 1: {len(lacking)} class column(s) the model does not predict: {shown}")
    unused = [name for name in classes if name not in set(sample_classes)]
    if unused:
        log.warning("%d model class(es) are not columns of %s and are left out (e.g. %s)",
                    len(unused), sample_path, unused[0])
    return [index[name] for name in sample_classes]


def _probabilities_by_name(predictions: Iterable[Any], n_classes: int) -> dict[str, np.ndarray]:
    """{file name: probs}; checks lengths, finiteness and unique names."""
    by_name: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    for prediction in predictions:
        if hasattr(prediction, "probs"):
            path, probs, error = prediction.path, prediction.probs, getattr(prediction, "error", None)
        else:
            (path, probs), error = prediction, None
        name = PurePath(str(path)).name
        if probs is None:
            raise DataError(f"{path}: no prediction ({error or 'probabilities are None'})")
        values = np.asarray(probs, dtype=np.float64).reshape(-1)
        if len(values) != n_classes:
            raise DataError(f"{path}: {len(values)} probabilities, expected {n_classes} (one per class)")
        if not np.all(np.isfinite(values)):
            raise DataError(f"{path}: prediction holds NaN or infinite values")
        if name in by_name:
            raise DataError(f"{path}: same file name '{name}' as {source[name]}; a submission has one row per name")
        by_name[name], source[name] = values, str(path)
    return by_name


def _unique_stems(by_name: dict[str, np.ndarray]) -> dict[str, str]:
    """{stem: file name} for stems that only one predicted file has."""
    stems: dict[str, str | None] = {}
    for name in by_name:
        stem = PurePath(name).stem
        stems[stem] = None if stem in stems else name  # ambiguous stems match nothing
    return {stem: name for stem, name in stems.items() if name is not None}


def _match(name: str, by_name: dict[str, np.ndarray], stems: dict[str, str]) -> str | None:
    """The prediction key for a sample row: the same file name, or the same stem when ``name`` has none."""
    if name in by_name:
        return name
    return stems.get(name) if not PurePath(name).suffix else None
