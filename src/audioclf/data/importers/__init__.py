"""Importers: one function per source format that returns a :class:`~audioclf.data.manifest.Manifest`.

``load_manifest(source)`` picks the importer from what ``source`` is (a folder or a .csv/.tsv file).
Dataset-specific importers register by name::

    @register_importer("fsd2019")
    def import_fsd2019(root, ...) -> Manifest: ...

``get_importer("fsd2019")`` also imports ``audioclf.data.importers.fsd2019`` on first use, so a new format
is one new module here and nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from pathlib import Path

from ...errors import DataError
from ...registry import Registry
from ..manifest import Manifest
from .csv import import_csv
from .folder import AUDIO_EXTENSIONS, import_folder

Importer = Callable[..., Manifest]
CSV_SUFFIXES = (".csv", ".tsv")


def _import_all() -> None:
    """Import every importer module of this package (each registers itself on import)."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


IMPORTERS: Registry[Importer] = Registry("importer", discover=_import_all)


def register_importer(name: str) -> Callable[[Importer], Importer]:
    """Decorator adding an importer to :data:`IMPORTERS` under ``name``."""
    return IMPORTERS.register(name)


def get_importer(name: str) -> Importer:
    """The importer registered as ``name``; ConfigError naming the closest ones when unknown."""
    return IMPORTERS.get(name)


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


register_importer("folder")(import_folder)
register_importer("csv")(import_csv)

__all__ = ["AUDIO_EXTENSIONS", "IMPORTERS", "get_importer", "import_csv", "import_folder", "load_manifest",
           "register_importer"]
