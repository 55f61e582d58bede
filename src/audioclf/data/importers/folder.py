"""Folder-per-class importer: ``<root>/<class>/**/<file>.wav`` -> single-label Manifest."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ...errors import DataError
from ..audio import AUDIO_EXTENSIONS
from ..manifest import Item, Manifest

log = logging.getLogger(__name__)

# Audio formats no decoder here reads: a class folder holding them would otherwise lose them without a word.
UNDECODED_AUDIO_EXTENSIONS = (".wma", ".webm", ".mka", ".amr", ".ape", ".wv", ".caf", ".ac3", ".dts", ".3gp",
                              ".ra", ".rm", ".mid", ".midi", ".dsf", ".mpc", ".tta")


def import_folder(root: str | Path, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> Manifest:
    """One item per audio file below ``root/<class>/``; the label is the first-level folder name.

    Files are found recursively below each class folder; other extensions (case-insensitive) and hidden
    files or folders (name starting with ".") are ignored. Item ids are the paths relative to ``root``
    without extension (``rock/album1/song``); item paths are absolute.
    """
    root = Path(root)
    expected = f"expected {root}/<class>/<file>.wav"
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; {expected}")
    suffixes = {ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in extensions}
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise DataError(f"{root}: cannot read the folder ({exc.strerror})") from None
    loose = [p.name for p in entries if p.is_file() and p.suffix.lower() in suffixes]
    if loose:
        # Not an error (e.g. a README.wav next to the classes), but never silently dropped.
        log.warning("%s: ignoring %d audio file(s) outside a class folder (e.g. %s)", root, len(loose), loose[0])

    items: list[Item] = []
    ids: dict[str, Path] = {}
    undecoded = {ext for ext in UNDECODED_AUDIO_EXTENSIONS if ext not in suffixes}
    skipped: list[Path] = []
    for class_dir in (p for p in entries if p.is_dir() and not p.name.startswith(".")):
        for path in _audio_files(class_dir, suffixes | undecoded):
            if path.suffix.lower() in undecoded:
                skipped.append(path)
                continue
            item_id = path.relative_to(root).with_suffix("").as_posix()
            if item_id in ids:
                raise DataError(f"{path}: same id '{item_id}' as {ids[item_id]}; keep one file per name")
            ids[item_id] = path
            items.append(Item(id=item_id, path=os.path.abspath(path), labels=(class_dir.name,)))
    supported = ", ".join(sorted(suffixes))
    if skipped:
        formats = ", ".join(sorted({path.suffix.lower() for path in skipped}))
        examples = ", ".join(path.relative_to(root).as_posix() for path in skipped[:3])
        log.warning("%s: skipping %d file(s) in a format that cannot be decoded (%s; e.g. %s); supported formats: %s "
                    "(convert them, e.g. to .flac)", root, len(skipped), formats, examples, supported)
    if not items:
        raise DataError(f"{root}: no class folder with audio files ({supported}); {expected}")
    return Manifest(items)


def _unreadable(exc: OSError) -> None:
    """os.walk's onerror: a folder it cannot list (permissions) would otherwise drop its files, or a whole
    class, without a word."""
    raise DataError(f"{exc.filename}: cannot read the folder ({exc.strerror}); its files would be left out: fix its "
                    "permissions or move it out of the dataset")


def _audio_files(folder: Path, suffixes: set[str]) -> list[Path]:
    """Audio files below ``folder`` in sorted order, skipping hidden files and folders.

    Linked folders are followed (datasets are often symlinked into place), but each real folder once: a link
    back to the class folder or above it (``tone/up -> ..``, a loop ``tone/loop -> .``) would list other
    classes' files under this label, or the same files forever; it is skipped with a warning.
    """
    found = []
    top = os.path.realpath(folder)
    visited = {top}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=_unreadable):
        keep = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            real = os.path.realpath(os.path.join(dirpath, name))
            if real in visited or top.startswith(real + os.sep):
                log.warning("%s: skipping the linked folder %s (it leads back to %s, already listed)",
                            folder, os.path.join(dirpath, name), real)
                continue
            visited.add(real)
            keep.append(name)
        dirnames[:] = keep
        found.extend(Path(dirpath) / name for name in filenames
                     if not name.startswith(".") and Path(name).suffix.lower() in suffixes)
    return sorted(found)
