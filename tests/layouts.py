"""Tiny copies of real dataset layouts (same folder names, file names and table formats), for importer tests.

Each writer builds the layout under a folder and returns it. Audio files are 20 ms of quiet noise, written
with :func:`audioclf.data.audio.write_audio`, so they decode like the real thing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from audioclf.data.audio import write_audio

SR = 8000


def clip(path: Path, seed: int = 0) -> Path:
    """A 20-ms noise clip at ``path`` (wav or flac by extension)."""
    wave = 0.01 * np.random.default_rng(seed).standard_normal(SR // 50).astype(np.float32)
    return write_audio(path, wave, SR)


def write_table(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]], delimiter: str = ",") -> Path:
    """A CSV/TSV as the datasets ship them (quoted cells only where needed)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue())
    return path


# --- FSDKaggle2019 ------------------------------------------------------------------------------
FSD_CLASSES = ["Accordion", "Bark", "Bass_drum", "Bathtub_(filling_or_washing)", "Walk_and_footsteps"]
FSD_CURATED = [  # fname, labels (multi-label rows are quoted by the CSV writer, as in the real file)
    ("0006ae4e.wav", "Bark"), ("0019ef41.wav", "Accordion"), ("001ec0ad.wav", "Bark,Walk_and_footsteps"),
    ("0026c7cb.wav", "Bass_drum"), ("0026f116.wav", "Accordion"), ("003be5db.wav", "Bark"),
    ("0041de6b.wav", "Walk_and_footsteps"), ("004ca909.wav", "Bass_drum,Accordion"),
    ("00713ff3.wav", "Bathtub_(filling_or_washing)"), ("0073825a.wav", "Bathtub_(filling_or_washing)"),
]
FSD_NOISY = [("00097e21.wav", "Bathtub_(filling_or_washing)"), ("000b6cfb.wav", "Bark"),
             ("00116cd2.wav", "Accordion,Bass_drum"), ("00127d14.wav", "Walk_and_footsteps")]
FSD_TEST = [("000ccb97.wav", "Bark"), ("0012633b.wav", "Accordion,Bark"), ("001ed5f1.wav", "Bass_drum")]


def fsd2019_kaggle(root: Path) -> Path:
    """The Kaggle competition download: train_curated.csv, train_noisy.csv, sample_submission.csv + folders."""
    for folder, rows in (("train_curated", FSD_CURATED), ("train_noisy", FSD_NOISY), ("test", FSD_TEST)):
        for i, (fname, _) in enumerate(rows):
            clip(root / folder / fname, seed=i)
    write_table(root / "train_curated.csv", ["fname", "labels"], FSD_CURATED)
    write_table(root / "train_noisy.csv", ["fname", "labels"], FSD_NOISY)
    write_table(root / "sample_submission.csv", ["fname", *FSD_CLASSES],
                [(fname, *[0] * len(FSD_CLASSES)) for fname, _ in FSD_TEST])
    return root


def fsd2019_zenodo(root: Path) -> Path:
    """The Zenodo release: FSDKaggle2019.meta/*_post_competition.csv + FSDKaggle2019.audio_*/ folders."""
    meta = root / "FSDKaggle2019.meta"
    for name, rows in (("train_curated", FSD_CURATED), ("train_noisy", FSD_NOISY), ("test", FSD_TEST)):
        for i, (fname, _) in enumerate(rows):
            clip(root / f"FSDKaggle2019.audio_{name}" / fname, seed=i)
    write_table(meta / "train_curated_post_competition.csv", ["fname", "labels", "freesound_id", "license"],
                [(f, labels, 1000 + i, "CC0") for i, (f, labels) in enumerate(FSD_CURATED)])
    write_table(meta / "train_noisy_post_competition.csv", ["fname", "labels", "flickr_video_URL", "license"],
                [(f, labels, f"http://flickr/{i}", "CC-BY") for i, (f, labels) in enumerate(FSD_NOISY)])
    write_table(meta / "test_post_competition.csv", ["fname", "labels", "usage", "freesound_id", "license"],
                [(f, labels, "Public" if i < 2 else "Private", 2000 + i, "CC0")
                 for i, (f, labels) in enumerate(FSD_TEST)])
    return root


# --- GTZAN --------------------------------------------------------------------------------------
GTZAN_GENRES = ("blues", "jazz", "rock")


def gtzan(root: Path, per_genre: int = 10, top: str = "genres", extension: str = ".wav") -> Path:
    """``<root>/<top>/<genre>/<genre>.000NN<ext>`` (top "genres" original, "Data/genres_original" Kaggle)."""
    for genre in GTZAN_GENRES:
        for k in range(per_genre):
            clip(root / top / genre / f"{genre}.{k:05d}{extension}", seed=k)
    return root


# --- TAU Urban Acoustic Scenes 2022 Mobile ------------------------------------------------------
TAU_TRAIN = ["airport-lisbon-1000-40000-0-a", "airport-lisbon-1000-40000-0-b", "airport-lisbon-1000-40000-0-s1",
             "bus-lyon-1001-40001-3-a", "bus-lyon-1001-40001-3-c", "park-milan-1005-40100-9-s2",
             "park-milan-1005-40101-0-a", "bus-prague-1010-40200-1-s3"]
TAU_EVALUATE = ["airport-barcelona-203-6129-0-a", "airport-barcelona-203-6129-0-s4",
                "bus-helsinki-112-3243-6-c", "park-vienna-300-100-2-s5", "park-vienna-300-100-2-s6"]
TAU_UNUSED = ["bus-lyon-1002-40002-0-a"]  # in meta.csv, in no fold file (as in the real setup)


def tau2022(root: Path) -> Path:
    """TAU-urban-acoustic-scenes-2022-mobile-development: meta.csv, evaluation_setup/, audio/ (all TSV)."""
    names = TAU_TRAIN + TAU_EVALUATE + TAU_UNUSED
    for i, name in enumerate(names):
        clip(root / "audio" / f"{name}.wav", seed=i)

    def row(name: str) -> tuple[str, str]:
        return f"audio/{name}.wav", name.split("-")[0]

    meta_rows = [(*row(n), "-".join(n.split("-")[1:3]), n.split("-")[-1]) for n in names]
    write_table(root / "meta.csv", ["filename", "scene_label", "identifier", "source_label"], meta_rows, "\t")
    write_table(root / "evaluation_setup" / "fold1_train.csv", ["filename", "scene_label"],
                [row(n) for n in TAU_TRAIN], "\t")
    write_table(root / "evaluation_setup" / "fold1_evaluate.csv", ["filename", "scene_label"],
                [row(n) for n in TAU_EVALUATE], "\t")
    write_table(root / "evaluation_setup" / "fold1_test.csv", ["filename"], [row(n)[:1] for n in TAU_EVALUATE], "\t")
    return root


# --- ESC-50 -------------------------------------------------------------------------------------
ESC50_ROWS = [  # filename, fold, target, category, esc10, src_file, take
    ("1-100032-A-0.wav", 1, 0, "dog", True, 100032, "A"),
    ("1-100038-A-14.wav", 1, 14, "chirping_birds", False, 100038, "A"),
    ("1-110389-A-0.wav", 1, 0, "dog", True, 110389, "A"),
    ("2-102414-A-17.wav", 2, 17, "pouring_water", False, 102414, "A"),
    ("2-102414-B-17.wav", 2, 17, "pouring_water", False, 102414, "B"),
    ("3-100018-A-31.wav", 3, 31, "mouse_click", False, 100018, "A"),
    ("4-102844-A-1.wav", 4, 1, "rooster", True, 102844, "A"),
    ("5-103415-A-2.wav", 5, 2, "pig", False, 103415, "A"),
    ("5-9032-A-0.wav", 5, 0, "dog", True, 9032, "A"),
]


def esc50(root: Path) -> Path:
    """The ESC-50 repository layout: meta/esc50.csv and audio/ (booleans written as True/False)."""
    for i, row in enumerate(ESC50_ROWS):
        clip(root / "audio" / row[0], seed=i)
    write_table(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
                ESC50_ROWS)
    return root


# --- UrbanSound8K -------------------------------------------------------------------------------
US8K_ROWS = [  # slice_file_name, fsID, start, end, salience, fold, classID, class
    ("100032-3-0-0.wav", 100032, 0.0, 0.317551, 1, 5, 3, "dog_bark"),
    ("100263-2-0-117.wav", 100263, 58.5, 62.5, 1, 5, 2, "children_playing"),
    ("100263-2-0-121.wav", 100263, 60.5, 64.5, 1, 5, 2, "children_playing"),
    ("100648-1-0-0.wav", 100648, 4.823402, 5.471927, 2, 10, 1, "car_horn"),
    ("101415-3-0-2.wav", 101415, 1.0, 5.0, 1, 1, 3, "dog_bark"),
    ("102305-6-0-0.wav", 102305, 0.0, 2.61161, 1, 1, 6, "gun_shot"),
    ("103074-7-0-0.wav", 103074, 0.0, 4.0, 2, 3, 7, "jackhammer"),
    ("104998-7-15-0.wav", 104998, 48.01, 52.01, 1, 2, 7, "jackhammer"),
    ("105029-7-2-5.wav", 105029, 2.5, 6.5, 1, 2, 7, "jackhammer"),
    ("7061-6-0-0.wav", 7061, 0.0, 2.0, 2, 8, 6, "gun_shot"),
]


def urbansound8k(root: Path) -> Path:
    """The UrbanSound8K tarball layout: metadata/UrbanSound8K.csv and audio/fold<k>/."""
    for i, row in enumerate(US8K_ROWS):
        clip(root / "audio" / f"fold{row[5]}" / row[0], seed=i)
    write_table(root / "metadata" / "UrbanSound8K.csv",
                ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"], US8K_ROWS)
    return root


# --- LibriSpeech --------------------------------------------------------------------------------
SPEAKERS_TXT = """\
; Some speakers' names, as well as their gender, were provided by the readers themselves.
;
;ID  |SEX| SUBSET           |MINUTES| NAME
14   | F | train-clean-360  | 25.03 | Kristin LeMoine
19   | F | train-clean-100  | 25.19 | Kara Shallenberg
60   | M | train-clean-100  | 20.18 | |CBW|Simon
84   | F | dev-clean        |  8.02 | Christie Nowak
174  | M | dev-clean        |  8.04 | Peter Eastman
"""
LIBRI_UTTERANCES = {  # subset -> [(speaker, chapter, n utterances)]
    "train-clean-100": [("19", "198", 2), ("19", "227", 1), ("60", "121082", 2)],
    "dev-clean": [("84", "121123", 2), ("174", "50561", 1)],
}


def librispeech(root: Path) -> Path:
    """``LibriSpeech/SPEAKERS.TXT`` + ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>-NNNN.flac`` and the
    chapter's ``.trans.txt``; returns the LibriSpeech folder."""
    top = root / "LibriSpeech"
    top.mkdir(parents=True, exist_ok=True)
    (top / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)
    for subset, chapters in LIBRI_UTTERANCES.items():
        for speaker, chapter, n in chapters:
            folder = top / subset / speaker / chapter
            lines = []
            for k in range(n):
                clip(folder / f"{speaker}-{chapter}-{k:04d}.flac", seed=k)
                lines.append(f"{speaker}-{chapter}-{k:04d} SOME WORDS")
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return top


def librispeech_tones(root: Path) -> Path:
    """A LibriSpeech layout of four speakers (two women, two men), two 2-s utterances each at 16 kHz: a tone per
    speaker with some noise, long enough for speaker-count mixtures; returns the LibriSpeech folder."""
    top = root / "LibriSpeech"
    lines = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
    rng = np.random.default_rng(0)
    for k, (speaker, sex) in enumerate([("19", "F"), ("26", "M"), ("27", "M"), ("32", "F")]):
        lines.append(f"{speaker:<5}| {sex} | train-clean-100  | 25.19 | Reader {k}")
        for u in range(2):
            t = np.arange(32000) / 16000
            wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * k) * t) * (1 + rng.standard_normal(32000) * 0.1)
            write_audio(top / "train-clean-100" / speaker / "100" / f"{speaker}-100-{u:04d}.flac", wave, 16000)
    (top / "SPEAKERS.TXT").write_text("\n".join(lines) + "\n")
    return top
