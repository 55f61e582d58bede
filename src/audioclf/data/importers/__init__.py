"""Importers: one function per source format that returns a :class:`~audioclf.data.manifest.Manifest`.

``load_manifest(source)`` picks the importer from what ``source`` is (a folder or a .csv/.tsv file).
Dataset-specific importers register by name::

    @register_importer("fsd2019")
    def import_fsd2019(root, ...) -> Manifest: ...

``get_importer("fsd2019")`` also imports ``audioclf.data.importers.fsd2019`` on first use, so a new format
is one new module here and nothing else changes.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Sequence
from pathlib import Path

from ...errors import ConfigError, DataError
from ..manifest import Manifest
from .csv import import_csv
from .folder import AUDIO_EXTENSIONS, import_folder

Importer = Callable[..., Manifest]
IMPORTERS: dict[str, Importer] = {}
CSV_SUFFIXES = (".csv", ".tsv")


def register_importer(name: str) -> Callable[[Importer], Importer]:
    """Decorator adding an importer to :data:`IMPORTERS` under ``name``."""

    def decorate(func: Importer) -> Importer:
        if name in IMPORTERS and IMPORTERS[name] is not func:
            raise ConfigError(f"importer '{name}' is already registered ({IMPORTERS[name].__module__})")
        IMPORTERS[name] = func
        return func

    return decorate


def get_importer(name: str) -> Importer:
    """The importer registered as ``name``; ConfigError naming the closest ones when unknown."""
    if name not in IMPORTERS and name.isidentifier() and name in _importer_modules():
        importlib.import_module(f"{__name__}.{name}")  # registers itself on import
    if name in IMPORTERS:
        return IMPORTERS[name]
    available = sorted(set(IMPORTERS) | _importer_modules())
    near = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    raise ConfigError(f"unknown importer '{name}'; {hint}available: {', '.join(available)}")


def load_manifest(source: str | Path, audio_root: str | Path | None = None,
                  classes: Sequence[str] | None = None) -> Manifest:
    """A folder -> :func:`import_folder`; a .csv/.tsv file -> :func:`import_csv`.

    ``classes`` (e.g. a trained model's classes) fixes the class list and order; a label outside it is a
    DataError. ``audio_root`` only applies to CSVs.
    """
    source = Path(source)
    if source.is_dir():
        manifest = import_folder(source)
        return manifest if classes is None else Manifest(manifest.items, classes=classes)
    if source.suffix.lower() in CSV_SUFFIXES:
        if not source.is_file():
            raise DataError(f"{source}: CSV file not found")
        return import_csv(source, audio_root=audio_root, classes=classes)
    if not source.exists():
        raise DataError(f"{source}: not found; expected a folder with one sub-folder per class, or a .csv/.tsv")
    raise DataError(f"{source}: cannot import; expected a folder with one sub-folder per class, or a .csv/.tsv file")


def _importer_modules() -> set[str]:
    """Importer modules in this package (not yet imported ones included)."""
    return {info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")}


register_importer("folder")(import_folder)
register_importer("csv")(import_csv)

__all__ = ["AUDIO_EXTENSIONS", "IMPORTERS", "get_importer", "import_csv", "import_folder", "load_manifest",
           "register_importer"]
