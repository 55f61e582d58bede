"""GTZAN music genres (Tzanetakis & Cook 2002): 10 genres x 100 30-s clips, one folder per genre.

Accepted layouts under ``root`` (the first that exists is used)::

    root/genres/<genre>/<genre>.00000.au               the original marsyas genres.tar.gz
    root/genres_original/<genre>/<genre>.00000.wav     Kaggle "GTZAN Dataset - Music Genre Classification"
    root/Data/genres_original/<genre>/...              (the Kaggle zip's top level)
    root/<genre>/<file>                                 root is the genre folder itself

Splits are made within each genre folder, 80/10/10 by default (the recipe of a reference GTZAN project), with
:func:`~audioclf.data.splits.stratified_split`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...errors import DataError
from ..manifest import Manifest
from ..splits import stratified_split
from . import register_importer
from .folder import AUDIO_EXTENSIONS, import_folder

GENRE_FOLDERS = ("genres", "genres_original", "Data/genres_original")


@register_importer("gtzan")
def import_gtzan(root: str | Path, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                 extensions: Sequence[str] = AUDIO_EXTENSIONS) -> Manifest:
    """GTZAN clips labelled by genre folder, split train/val/test by ``fractions`` within each genre.

    Ids are ``<genre>/<file stem>``. ``seed`` makes the split reproducible. Corrupt clips (the Kaggle copy
    has an undecodable ``jazz.00054.wav``) are only found when decoding, which reports and skips them.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected the GTZAN folder with genres/<genre>/<clip>")
    genre_root = next((root / sub for sub in GENRE_FOLDERS if (root / sub).is_dir()), root)
    manifest = import_folder(genre_root, extensions=extensions)
    splits = stratified_split([item.labels[0] for item in manifest], fractions, seed)
    return manifest.with_splits(splits.tolist())
