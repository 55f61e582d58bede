"""LibriSpeech (Panayotov et al. 2015, https://www.openslr.org/12): read English speech, the source of the
speaker-count mixtures.

Layout after extracting e.g. ``train-clean-100.tar.gz`` and ``dev-clean.tar.gz`` into one place::

    LibriSpeech/SPEAKERS.TXT
    LibriSpeech/train-clean-100/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac
    LibriSpeech/dev-clean/...

``SPEAKERS.TXT`` has ';' comment lines and rows ``ID | SEX | SUBSET | MINUTES | NAME`` (a name may itself
hold '|', as in speaker 60's "|CBW|Simon"). ``root`` is the ``LibriSpeech`` folder (every subset folder in
it, or those named in ``subsets``) or one subset folder (SPEAKERS.TXT then comes from its parent).
Items are labelled by speaker id, with group columns speaker, sex (M/F), chapter and subset.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError, DataError
from ..manifest import Item, Manifest
from . import register_importer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Speaker:
    """One row of SPEAKERS.TXT."""

    id: str
    sex: str  # "M" or "F"
    subset: str
    minutes: float
    name: str


@register_importer("librispeech")
def import_librispeech(root: str | Path, subsets: Sequence[str] | None = None,
                       speakers_file: str | Path | None = None, extension: str = ".flac") -> Manifest:
    """One item per utterance file, labelled by speaker id, with groups speaker, sex, chapter, subset.

    ``subsets`` picks subset folders of ``root`` by name (default: all). ``speakers_file`` overrides where
    SPEAKERS.TXT is looked for (``root``, then its parent). A speaker folder missing from SPEAKERS.TXT, or a
    file not named ``<speaker>-<chapter>-*``, is a DataError.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected the LibriSpeech folder with SPEAKERS.TXT")
    speakers_path = Path(speakers_file) if speakers_file else _find_speakers_file(root)
    speakers = read_speakers(speakers_path)
    suffix = extension.lower() if extension.startswith(".") else f".{extension.lower()}"
    items: list[Item] = []
    for subset_dir in _subset_dirs(root, subsets):
        items += _subset_items(subset_dir, speakers, speakers_path, suffix)
    if not items:
        raise DataError(f"{root}: no {extension} files in <subset>/<speaker>/<chapter>/ folders")
    return Manifest(items, task="single_label")


def read_speakers(path: str | Path) -> dict[str, Speaker]:
    """SPEAKERS.TXT as {speaker id: Speaker}; malformed rows are a DataError naming the 1-based line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read SPEAKERS.TXT ({exc.strerror})") from None
    speakers: dict[str, Speaker] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [field.strip() for field in line.split("|", 4)]  # maxsplit: the NAME may contain '|'
        where = f"{path}: line {line_no}"
        if len(fields) != 5:
            raise DataError(f"{where}: {len(fields)} fields, expected 'ID | SEX | SUBSET | MINUTES | NAME'")
        speaker_id, sex, subset, minutes, name = fields
        if not speaker_id.isdigit():
            raise DataError(f"{where}: speaker ID '{speaker_id}' is not a number")
        if sex not in ("M", "F"):
            raise DataError(f"{where}: SEX '{sex}' is not M or F")
        try:
            minutes_value = float(minutes)
        except ValueError:
            raise DataError(f"{where}: MINUTES '{minutes}' is not a number") from None
        if speaker_id in speakers:
            raise DataError(f"{where}: speaker {speaker_id} is listed twice")
        speakers[speaker_id] = Speaker(speaker_id, sex, subset, minutes_value, name)
    if not speakers:
        raise DataError(f"{path}: no speaker rows; expected lines 'ID | SEX | SUBSET | MINUTES | NAME'")
    return speakers


# --- helpers ------------------------------------------------------------------------------------
def _find_speakers_file(root: Path) -> Path:
    for folder in (root, root.parent):
        for name in ("SPEAKERS.TXT", "SPEAKERS.txt"):
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"{root}: SPEAKERS.TXT not found here or in {root.parent}; it ships in the LibriSpeech "
                    "folder of every subset archive")


def _numeric_dirs(folder: Path) -> list[Path]:
    """Sub-folders named by a number (speaker or chapter ids), in numeric order."""
    return sorted((Path(e.path) for e in os.scandir(folder) if e.is_dir() and e.name.isdigit()),
                  key=lambda p: int(p.name))


def _subset_dirs(root: Path, subsets: Sequence[str] | None) -> list[Path]:
    """``root`` itself when it holds speaker folders, else its sub-folders that do (filtered by ``subsets``)."""
    if _numeric_dirs(root):
        if subsets and root.name not in subsets:
            raise ConfigError(f"librispeech subsets {list(subsets)}: {root} is the subset '{root.name}' itself")
        return [root]
    available = sorted(e.name for e in os.scandir(root) if e.is_dir() and _numeric_dirs(Path(e.path)))
    if subsets is None:
        return [root / name for name in available]
    unknown = [name for name in subsets if name not in available]
    if unknown:
        raise ConfigError(f"librispeech subset '{unknown[0]}' not found in {root}; "
                          f"available: {', '.join(available) or 'none'}")
    return [root / name for name in subsets]


def _subset_items(subset_dir: Path, speakers: dict[str, Speaker], speakers_path: Path, extension: str) -> list[Item]:
    items = []
    for speaker_dir in _numeric_dirs(subset_dir):
        speaker = speakers.get(speaker_dir.name)
        if speaker is None:
            raise DataError(f"{speaker_dir}: speaker {speaker_dir.name} is not in {speakers_path}")
        for chapter_dir in _numeric_dirs(speaker_dir):
            prefix = f"{speaker_dir.name}-{chapter_dir.name}-"
            for name in sorted(os.listdir(chapter_dir)):
                if not name.lower().endswith(extension):
                    continue  # the chapter's transcript .trans.txt lives here too
                if not name.startswith(prefix):
                    raise DataError(f"{chapter_dir / name}: expected a file name starting '{prefix}'")
                items.append(Item(
                    id=name[: -len(extension)], path=os.path.abspath(chapter_dir / name), labels=(speaker.id,),
                    groups={"speaker": speaker.id, "sex": speaker.sex, "chapter": chapter_dir.name,
                            "subset": subset_dir.name},
                ))
    return items
