"""Dataset importers on tiny copies of the real layouts (tests/layouts.py), and submission CSVs."""

import csv
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import layouts
from audioclf.data.audio import load_audio
from audioclf.data.importers import get_importer
from audioclf.data.importers import fsd2019 as fsd_module
from audioclf.data.importers.esc50 import fold_splits, import_esc50
from audioclf.data.importers.fsd2019 import fsd2019_splits, import_fsd2019
from audioclf.data.importers.gtzan import import_gtzan
from audioclf.data.importers.librispeech import import_librispeech, read_speakers
from audioclf.data.importers.tau2022 import SCENES, import_tau2022, parse_tau_filename
from audioclf.data.importers.urbansound8k import import_urbansound8k
from audioclf.data.splits import assign_splits, iterative_stratified_split, stratified_split
from audioclf.errors import ConfigError, DataError
from audioclf.deploy.predictor import Prediction
from audioclf.deploy.submission import write_submission


def _replace_line(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("name, module", [
    ("fsd2019", "fsd2019"), ("gtzan", "gtzan"), ("tau2022", "tau2022"), ("esc50", "esc50"),
    ("urbansound8k", "urbansound8k"), ("librispeech", "librispeech"),
])
def test_importers_register_by_name(name, module):
    importer = get_importer(name)
    assert importer.__module__ == f"audioclf.data.importers.{module}"


# --- FSD2019 ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fsd_kaggle(tmp_path_factory):
    return layouts.fsd2019_kaggle(tmp_path_factory.mktemp("fsd") / "freesound-audio-tagging-2019")


def test_fsd2019_curated(fsd_kaggle):
    manifest = import_fsd2019(fsd_kaggle, val_fraction=None)
    assert manifest.classes == layouts.FSD_CLASSES and manifest.task == "multi_label"
    assert [item.id for item in manifest] == [f"curated/{f[:-4]}" for f, _ in layouts.FSD_CURATED]
    assert [",".join(item.labels) for item in manifest] == [labels for _, labels in layouts.FSD_CURATED]
    assert manifest[2].labels == ("Bark", "Walk_and_footsteps")
    assert all(item.groups == {"source": "curated"} and item.split is None for item in manifest)
    assert manifest[0].path == os.path.abspath(fsd_kaggle / "train_curated" / "0006ae4e.wav")
    assert load_audio(manifest[0].path)[0].size == layouts.SR // 50
    # label matrix columns follow the sample submission's class columns
    assert manifest.label_matrix()[7].tolist() == [1, 0, 1, 0, 0]


def test_fsd2019_val_from_curated_only_by_iterative_stratification(fsd_kaggle):
    manifest = import_fsd2019(fsd_kaggle, subset="both", seed=3)
    curated = [item for item in manifest if item.groups["source"] == "curated"]
    noisy = [item for item in manifest if item.groups["source"] == "noisy"]
    assert len(curated) == 10 and len(noisy) == 4
    assert all(item.split == "train" for item in noisy)
    # the curated split is exactly iterative stratification of the curated label matrix, 80/20
    curated_manifest = import_fsd2019(fsd_kaggle, val_fraction=None)
    expected = iterative_stratified_split(curated_manifest.label_matrix(), (0.8, 0.2, 0.0), seed=3)
    assert [item.split for item in curated] == expected.tolist()
    assert Counter(item.split for item in curated) == {"train": 8, "val": 2}
    assert import_fsd2019(fsd_kaggle, subset="both", seed=3) == manifest  # reproducible


def test_fsd2019_noisy_val_fraction_and_splits_function(fsd_kaggle):
    manifest = import_fsd2019(fsd_kaggle, subset="noisy", noisy_val_fraction=0.5)
    assert Counter(item.split for item in manifest) == {"train": 2, "val": 2}
    unsplit = import_fsd2019(fsd_kaggle, subset="both", val_fraction=None)
    assert fsd2019_splits(unsplit, seed=1) == import_fsd2019(fsd_kaggle, subset="both", seed=1)
    with pytest.raises(ConfigError, match="val_fraction 1.0: expected a number in"):
        fsd2019_splits(unsplit, val_fraction=1.0)


def test_fsd2019_kaggle_test_clips_are_unlabelled_in_sample_order(fsd_kaggle):
    manifest = import_fsd2019(fsd_kaggle, include_test=True)
    test = manifest.subset("test")
    assert [item.id for item in test] == [f"test/{f[:-4]}" for f, _ in layouts.FSD_TEST]
    assert all(item.labels == () and item.groups == {"source": "test"} for item in test)
    assert {item.split for item in manifest.filter(lambda i: i.groups["source"] == "curated")} == {"train", "val"}
    with pytest.raises(ConfigError, match="include_test needs val_fraction"):
        import_fsd2019(fsd_kaggle, include_test=True, val_fraction=None)


def test_fsd2019_zenodo_layout_has_test_labels(tmp_path):
    root = layouts.fsd2019_zenodo(tmp_path)
    manifest = import_fsd2019(root, subset="both", include_test=True)
    assert manifest.classes == sorted(layouts.FSD_CLASSES)  # no sample_submission.csv: sorted train labels
    test = manifest.subset("test")
    assert [item.labels for item in test] == [("Bark",), ("Accordion", "Bark"), ("Bass_drum",)]
    assert test[0].path == os.path.abspath(root / "FSDKaggle2019.audio_test" / "000ccb97.wav")
    assert Counter(item.groups["source"] for item in manifest) == {"curated": 10, "noisy": 4, "test": 3}


def test_fsd2019_drop_known_bad(fsd_kaggle, monkeypatch):
    monkeypatch.setattr(fsd_module, "KNOWN_BAD_CURATED", ("0019ef41.wav", "not_there.wav"))
    ids = [item.id for item in import_fsd2019(fsd_kaggle, drop_known_bad=True)]
    assert len(ids) == 9 and "curated/0019ef41" not in ids


@pytest.mark.parametrize("edit, message", [
    (("0006ae4e.wav,Bark", "0006ae4e.wav,Barking"), r"train_curated.csv: line 2: unknown label 'Barking'"),
    (("0019ef41.wav,Accordion", "0019ef41.wav,"), r"train_curated.csv: line 3: empty 'labels' cell"),
    (("0026c7cb.wav,Bass_drum", "0026c7cb.wav,Bass_drum,Bark"), r"train_curated.csv: line 5: 3 fields, expected 2"),
    (("0026c7cb.wav,Bass_drum", "gone.wav,Bass_drum"), r"train_curated.csv: line 5: audio file 'gone.wav' not found"),
    (("0026c7cb.wav,Bass_drum", "0006ae4e.wav,Bass_drum"), r"line 5: file '0006ae4e.wav' already listed on line 2"),
    (("fname,labels", "file,labels"), r"train_curated.csv: line 1: missing column 'fname'"),
])
def test_fsd2019_errors_name_file_and_line(tmp_path, edit, message):
    root = layouts.fsd2019_kaggle(tmp_path)
    _replace_line(root / "train_curated.csv", *edit)
    with pytest.raises(DataError, match=message):
        import_fsd2019(root)


def test_fsd2019_layout_and_option_errors(tmp_path):
    with pytest.raises(DataError, match="no train_curated.csv, sample_submission.csv or FSDKaggle2019.meta"):
        import_fsd2019(tmp_path)
    root = layouts.fsd2019_kaggle(tmp_path / "k")
    with pytest.raises(ConfigError, match="subset 'all' is not one of curated, noisy, both"):
        import_fsd2019(root, subset="all")
    (root / "train_noisy.csv").unlink()
    with pytest.raises(DataError, match=r"train_noisy.csv: file not found; needed for the FSD2019 noisy clips"):
        import_fsd2019(root, subset="both")
    layouts.write_table(root / "sample_submission.csv", ["id", "Bark"], [])
    with pytest.raises(DataError, match=r"sample_submission.csv: line 1: expected a header 'fname,<class>"):
        import_fsd2019(root)


# --- GTZAN --------------------------------------------------------------------------------------
@pytest.mark.parametrize("top", ["genres", "Data/genres_original", "genres_original"])
def test_gtzan_layouts_and_per_genre_split(tmp_path, top):
    root = layouts.gtzan(tmp_path, top=top)
    manifest = import_gtzan(root, seed=5)
    assert manifest.classes == list(layouts.GTZAN_GENRES) and len(manifest) == 30
    assert manifest[0].id == "blues/blues.00000" and manifest[0].labels == ("blues",)
    for genre in layouts.GTZAN_GENRES:
        counts = Counter(item.split for item in manifest if item.labels == (genre,))
        assert counts == {"train": 8, "val": 1, "test": 1}
    expected = stratified_split([item.labels[0] for item in manifest], (0.8, 0.1, 0.1), seed=5)
    assert [item.split for item in manifest] == expected.tolist()
    assert import_gtzan(root / top, seed=5) == manifest  # root may be the genre folder itself


def test_gtzan_fractions_option_and_au_files(tmp_path):
    root = layouts.gtzan(tmp_path, extension=".au")  # the original marsyas archive ships .au
    manifest = import_gtzan(root, fractions=(0.6, 0.2, 0.2))
    assert Counter(item.split for item in manifest) == {"train": 18, "val": 6, "test": 6}
    assert manifest[0].path.endswith("blues.00000.au") and load_audio(manifest[0].path)[0].size == layouts.SR // 50
    with pytest.raises(ConfigError, match="split fractions"):
        import_gtzan(root, fractions=(0.8, 0.3, 0.1))
    with pytest.raises(DataError, match="folder not found"):
        import_gtzan(tmp_path / "nope")


# --- TAU Urban Acoustic Scenes 2022 Mobile ------------------------------------------------------
@pytest.fixture(scope="module")
def tau(tmp_path_factory):
    return layouts.tau2022(tmp_path_factory.mktemp("tau") / "TAU-urban-acoustic-scenes-2022-mobile-development")


def test_tau2022_splits_and_groups(tau):
    manifest = import_tau2022(tau)
    assert manifest.classes == list(SCENES) and manifest.task == "single_label"
    assert [item.id for item in manifest] == layouts.TAU_TRAIN + layouts.TAU_EVALUATE  # unused clip left out
    assert [item.split for item in manifest] == ["train"] * 8 + ["test"] * 5
    first = manifest[0]
    assert first.labels == ("airport",) and first.path == os.path.abspath(tau / "audio" / f"{first.id}.wav")
    assert first.groups == {"device": "a", "city": "lisbon", "location": "lisbon-1000"}
    assert manifest.group_values("device") == ["a", "b", "s1", "a", "c", "s2", "a", "s3", "a", "s4", "c", "s5", "s6"]
    train_locations = set(manifest.subset("train").group_values("location"))
    assert train_locations.isdisjoint(manifest.subset("test").group_values("location"))


def test_tau2022_heldout_devices_and_no_fold(tau):
    manifest = import_tau2022(tau, heldout_devices=["S1", "s2"])
    assert "airport-lisbon-1000-40000-0-s1" not in [item.id for item in manifest]
    assert set(manifest.subset("train").group_values("device")) == {"a", "b", "c", "s3"}
    assert len(manifest.subset("test")) == 5
    with pytest.raises(ConfigError, match="heldout device 's9' does not occur; devices: a, b, c, s1"):
        import_tau2022(tau, heldout_devices=["s9"])
    everything = import_tau2022(tau, fold=None)
    assert len(everything) == 14 and all(item.split is None for item in everything)


def test_tau2022_val_carved_from_train_by_location(tau):
    manifest = assign_splits(import_tau2022(tau), method="auto", group="location", seed=0)
    train, val = manifest.subset("train"), manifest.subset("val")
    assert len(val) > 0 and len(manifest.subset("test")) == 5
    assert set(train.group_values("location")).isdisjoint(val.group_values("location"))


def test_parse_tau_filename_2022_and_2020_names():
    assert parse_tau_filename("audio/public_square-helsinki-112-3243-6-c.wav") == {
        "scene": "public_square", "city": "helsinki", "location": "helsinki-112", "device": "c"}
    assert parse_tau_filename("airport-lisbon-1000-40000-a.wav")["device"] == "a"  # 2020 Mobile
    with pytest.raises(ValueError, match="not scene-city-location-segment-device"):
        parse_tau_filename("audio/airport-a.wav")


@pytest.mark.parametrize("file, edit, message", [
    ("evaluation_setup/fold1_train.csv", ("bus-lyon-1001-40001-3-c.wav\tbus", "bus-lyon-1001-40001-3-c.wav\ttram"),
     r"fold1_train.csv: line 6: scene_label 'tram' disagrees with meta.csv \('bus'\)"),
    ("evaluation_setup/fold1_evaluate.csv", ("bus-helsinki-112-3243-6-c", "bus-helsinki-112-3243-7-c"),
     r"fold1_evaluate.csv: line 4: file 'audio/bus-helsinki-112-3243-7-c.wav' is not in meta.csv"),
    ("meta.csv", ("\tbus\tlyon-1001", "\tboat\tlyon-1001"), r"meta.csv: line 5: unknown scene 'boat'"),
    ("meta.csv", ("audio/park-milan-1005-40100-9-s2.wav\tpark", "audio/park-milan-1005-40100-9-s2.wav\ttram"),
     r"meta.csv: line 7: file 'audio/park-milan-1005-40100-9-s2.wav' names scene 'park' but scene_label is 'tram'"),
    ("meta.csv", ("audio/airport-lisbon-1000-40000-0-b.wav", "audio/airport-b.wav"),
     r"meta.csv: line 3: file name 'audio/airport-b.wav' is not scene-city-location-segment-device.wav"),
    ("meta.csv", ("filename\tscene_label", "file\tscene_label"), r"meta.csv: line 1: missing column 'filename'"),
])
def test_tau2022_errors_name_file_and_line(tmp_path, file, edit, message):
    root = layouts.tau2022(tmp_path)
    _replace_line(root / file, *edit)
    with pytest.raises(DataError, match=message):
        import_tau2022(root)


def test_tau2022_missing_files(tmp_path):
    root = layouts.tau2022(tmp_path)
    (root / "audio" / "bus-lyon-1001-40001-3-a.wav").unlink()
    with pytest.raises(DataError, match=r"meta.csv: line 5: audio file 'audio/bus-lyon-1001-40001-3-a.wav' not found"):
        import_tau2022(root)
    layouts.clip(root / "audio" / "bus-lyon-1001-40001-3-a.wav")
    (root / "evaluation_setup" / "fold1_evaluate.csv").unlink()
    with pytest.raises(DataError, match=r"fold1_evaluate.csv: file not found"):
        import_tau2022(root, fold=1)
    with pytest.raises(DataError, match=r"meta.csv: file not found"):
        import_tau2022(tmp_path / "elsewhere")


# --- ESC-50 -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def esc(tmp_path_factory):
    return layouts.esc50(tmp_path_factory.mktemp("esc") / "ESC-50-master")


def test_esc50_folds_classes_by_target(esc):
    manifest = import_esc50(esc)
    assert manifest.classes == ["dog", "rooster", "pig", "chirping_birds", "pouring_water", "mouse_click"]
    assert [item.fold for item in manifest] == [row[1] for row in layouts.ESC50_ROWS]
    assert manifest[0].id == "1-100032-A-0" and manifest[0].path == os.path.abspath(esc / "audio" / "1-100032-A-0.wav")
    assert manifest[3].groups == manifest[4].groups == {"src_file": "102414"}
    assert all(item.split is None for item in manifest)
    esc10 = import_esc50(esc, esc10=True)
    assert esc10.classes == ["dog", "rooster"] and len(esc10) == 4


def test_esc50_k_fold_cross_validation(esc):
    manifest = import_esc50(esc)
    test_sets = [import_esc50(esc, test_fold=k).subset("test") for k in range(1, 6)]
    # every clip is tested exactly once over the 5 folds, always with the clips of its own fold
    assert sorted(item.id for test in test_sets for item in test) == sorted(item.id for item in manifest)
    assert [{item.fold for item in test} for test in test_sets] == [{1}, {2}, {3}, {4}, {5}]
    split = fold_splits(manifest, test_fold=5, val_fold=1)
    assert [item.split for item in split] == ["val"] * 3 + ["train"] * 4 + ["test"] * 2
    auto = assign_splits(import_esc50(esc, test_fold=2), method="auto")  # val carved out of train
    assert {item.split for item in auto if item.fold == 2} == {"test"}
    with pytest.raises(ConfigError, match="test_fold 6 does not occur; folds: 1, 2, 3, 4, 5"):
        fold_splits(manifest, test_fold=6)
    with pytest.raises(ConfigError, match="val_fold and test_fold are both 2"):
        fold_splits(manifest, test_fold=2, val_fold=2)


@pytest.mark.parametrize("edit, message", [
    (("1-100038-A-14.wav,1,14", "1-100038-A-14.wav,one,14"), r"esc50.csv: line 3: fold 'one' is not an integer"),
    (("1,0,dog,True,110389", "1,0,cat,True,110389"), r"esc50.csv: line 4: target 0 is 'cat' here but 'dog' before"),
    (("3-100018-A-31.wav", "3-100018-B-31.wav"), r"esc50.csv: line 7: audio file '3-100018-B-31.wav' not found in"),
    (("pig,False,103415,A", "pig,False,103415"), r"esc50.csv: line 9: 6 fields, expected 7"),
])
def test_esc50_errors_name_file_and_line(tmp_path, edit, message):
    root = layouts.esc50(tmp_path)
    _replace_line(root / "meta" / "esc50.csv", *edit)
    with pytest.raises(DataError, match=message):
        import_esc50(root)


# --- UrbanSound8K -------------------------------------------------------------------------------
def test_urbansound8k_folds_durations_groups(tmp_path):
    root = layouts.urbansound8k(tmp_path / "UrbanSound8K")
    manifest = import_urbansound8k(root)
    assert manifest.classes == ["car_horn", "children_playing", "dog_bark", "gun_shot", "jackhammer"]  # by classID
    assert [item.fold for item in manifest] == [row[5] for row in layouts.US8K_ROWS]
    assert manifest[3].path == os.path.abspath(root / "audio" / "fold10" / "100648-1-0-0.wav")
    assert [item.duration for item in manifest] == pytest.approx([r[3] - r[2] for r in layouts.US8K_ROWS], abs=1e-9)
    assert manifest[1].groups == {"fsID": "100263", "salience": "foreground"}
    assert manifest[3].groups["salience"] == "background"
    test = import_urbansound8k(root, test_fold=5, val_fold=1)
    assert Counter(item.split for item in test) == {"test": 3, "val": 2, "train": 5}


@pytest.mark.parametrize("edit, message", [
    (("101415-3-0-2.wav,101415,1.0,5.0,1,1", "101415-3-0-2.wav,101415,1.0,5.0,1,2"),
     r"UrbanSound8K.csv: line 6: audio file '101415-3-0-2.wav' not found in .*fold2"),
    (("103074,0.0,4.0,2", "103074,0.0,4.0,3"), r"UrbanSound8K.csv: line 8: salience '3' is not 1"),
    (("104998,48.01,52.01", "104998,48.01,40.0"), r"UrbanSound8K.csv: line 9: end 40.0 is not after start 48.01"),
    (("7,jackhammer", "7,drilling"), r"line 9: classID 7 is 'jackhammer' here but 'drilling' before"),
])
def test_urbansound8k_errors_name_file_and_line(tmp_path, edit, message):
    root = layouts.urbansound8k(tmp_path)
    _replace_line(root / "metadata" / "UrbanSound8K.csv", *edit)
    with pytest.raises(DataError, match=message):
        import_urbansound8k(root)


# --- LibriSpeech --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def libri(tmp_path_factory):
    return layouts.librispeech(tmp_path_factory.mktemp("libri"))


def test_librispeech_speakers_sex_chapters(libri):
    manifest = import_librispeech(libri)
    assert len(manifest) == 8 and manifest.task == "single_label"
    assert manifest.classes == sorted(["19", "60", "84", "174"])
    first = next(item for item in manifest if item.id == "19-198-0001")
    assert first.labels == ("19",) and first.path == os.path.abspath(libri / "train-clean-100/19/198/19-198-0001.flac")
    assert first.groups == {"speaker": "19", "sex": "F", "chapter": "198", "subset": "train-clean-100"}
    sexes = dict(zip(manifest.group_values("speaker"), manifest.group_values("sex")))
    assert sexes == {"19": "F", "60": "M", "84": "F", "174": "M"}
    assert load_audio(first.path)[0].size == layouts.SR // 50


def test_librispeech_subsets_and_subset_root(libri):
    dev = import_librispeech(libri, subsets=["dev-clean"])
    assert [item.id for item in dev] == ["84-121123-0000", "84-121123-0001", "174-50561-0000"]
    alone = import_librispeech(libri / "train-clean-100")  # SPEAKERS.TXT from the parent folder
    assert len(alone) == 5 and set(alone.group_values("subset")) == {"train-clean-100"}
    assert import_librispeech(libri, extension="FLAC") == import_librispeech(libri)
    with pytest.raises(DataError, match=r"no .wav files in <subset>/<speaker>/<chapter>/"):
        import_librispeech(libri, extension=".wav")
    with pytest.raises(ConfigError, match="subset 'test-clean' not found in .*available: dev-clean, train-clean-100"):
        import_librispeech(libri, subsets=["test-clean"])


def test_read_speakers_real_format(libri):
    speakers = read_speakers(libri / "SPEAKERS.TXT")
    assert list(speakers) == ["14", "19", "60", "84", "174"]
    assert speakers["60"].name == "|CBW|Simon" and speakers["60"].sex == "M"  # '|' inside the NAME
    assert speakers["84"].subset == "dev-clean" and speakers["84"].minutes == pytest.approx(8.02)


@pytest.mark.parametrize("edit, message", [
    (("84   | F |", "84   | X |"), r"SPEAKERS.TXT: line 7: SEX 'X' is not M or F"),
    (("174  | M | dev-clean        |  8.04 | Peter Eastman", "174  | M | dev-clean"),
     r"SPEAKERS.TXT: line 8: 3 fields, expected 'ID \| SEX \| SUBSET \| MINUTES \| NAME'"),
    (("19   | F | train-clean-100  | 25.19", "19   | F | train-clean-100  | lots"),
     r"SPEAKERS.TXT: line 5: MINUTES 'lots' is not a number"),
])
def test_librispeech_speakers_errors_name_line(tmp_path, edit, message):
    top = layouts.librispeech(tmp_path)
    _replace_line(top / "SPEAKERS.TXT", *edit)
    with pytest.raises(DataError, match=message):
        import_librispeech(top)


def test_librispeech_layout_errors(tmp_path):
    top = layouts.librispeech(tmp_path)
    _replace_line(top / "SPEAKERS.TXT", "174  | M | dev-clean        |  8.04 | Peter Eastman\n", "")
    with pytest.raises(DataError, match=r"dev-clean/174: speaker 174 is not in .*SPEAKERS.TXT"):
        import_librispeech(top)
    shutil.move(top / "SPEAKERS.TXT", tmp_path / "elsewhere.txt")
    with pytest.raises(DataError, match="SPEAKERS.TXT not found"):
        import_librispeech(top)
    layouts.clip(top / "dev-clean" / "84" / "121123" / "85-121123-0009.flac")
    with pytest.raises(DataError, match=r"85-121123-0009.flac: expected a file name starting '84-121123-'"):
        import_librispeech(top, speakers_file=tmp_path / "elsewhere.txt", subsets=["dev-clean"])


# --- submission ---------------------------------------------------------------------------------
def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture
def sample(tmp_path):
    return layouts.write_table(tmp_path / "sample_submission.csv", ["fname", "Accordion", "Bark", "Bass_drum"],
                               [("b.wav", 0, 0, 0), ("a.wav", 0, 0, 0), ("c.wav", 0, 0, 0)])


def test_submission_columns_and_rows_follow_the_sample(tmp_path, sample):
    classes = ["Bark", "Walk", "Accordion", "Bass_drum"]  # model order differs and has an extra class
    probs = {"a.wav": [0.1, 0.9, 0.2, 1 / 3], "b.wav": [0.4, 0.0, 0.5, 0.6], "c.wav": [0.7, 0.8, 0.05, 0.95]}
    predictions = [(f"/clips/{name}", np.asarray(p, dtype=np.float32)) for name, p in probs.items()]
    out = write_submission(predictions, classes, sample, tmp_path / "out" / "submission.csv")
    rows = _read_csv(out)
    assert rows[0] == ["fname", "Accordion", "Bark", "Bass_drum"]
    assert [row[0] for row in rows[1:]] == ["b.wav", "a.wav", "c.wav"]
    for row in rows[1:]:
        p = np.asarray(probs[row[0]], dtype=np.float32)
        # exact values (float32 -> float64 repr round-trips), picked by class name
        assert [float(v) for v in row[1:]] == [float(p[2]), float(p[0]), float(p[3])]
    assert not list(out.parent.glob(".*"))  # atomic write leaves no temp file


def test_submission_accepts_predictions_and_stems(tmp_path):
    sample = layouts.write_table(tmp_path / "s.csv", ["fname", "x", "y"], [("k2", 0, 0), ("k1", 0, 0)])
    predictions = [Prediction("d/k1.wav", np.array([0.25, 0.75])), Prediction("d/k2.wav", np.array([1.0, 0.0]))]
    rows = _read_csv(write_submission(predictions, ["x", "y"], sample, tmp_path / "o.csv"))
    assert rows == [["fname", "x", "y"], ["k2", "1.0", "0.0"], ["k1", "0.25", "0.75"]]
    empty = layouts.write_table(tmp_path / "e.csv", ["fname", "y", "x"], [])  # header only: prediction order
    rows = _read_csv(write_submission(predictions, ["x", "y"], empty, tmp_path / "o.csv"))
    assert rows == [["fname", "y", "x"], ["k1.wav", "0.75", "0.25"], ["k2.wav", "0.0", "1.0"]]


def test_submission_errors(tmp_path, sample, caplog):
    ok = [(f"{n}.wav", [0.1, 0.2, 0.3]) for n in "abc"]
    classes = ["Accordion", "Bark", "Bass_drum"]
    with pytest.raises(DataError, match=r"submission.csv: 1 listed file\(s\) have no prediction, e.g. line 4: 'c.wav'"):
        write_submission(ok[:2], classes, sample, tmp_path / "o.csv")
    with pytest.raises(DataError, match=r"line 1: 2 class column\(s\) the model does not predict: Bark, Bass_drum"):
        write_submission([(p, [0.5]) for p, _ in ok], ["Accordion"], sample, tmp_path / "o.csv")
    with pytest.raises(DataError, match=r"x/a.wav: same file name 'a.wav' as a.wav"):
        write_submission([*ok, ("x/a.wav", [0, 0, 0])], classes, sample, tmp_path / "o.csv")
    with pytest.raises(DataError, match=r"b.wav: 2 probabilities, expected 3"):
        write_submission([ok[0], ("b.wav", [0.1, 0.2])], classes, sample, tmp_path / "o.csv")
    with pytest.raises(DataError, match=r"a.wav: prediction holds NaN"):
        write_submission([("a.wav", [np.nan, 0, 0])], classes, sample, tmp_path / "o.csv")
    with pytest.raises(DataError, match=r"bad.wav: no prediction \(cannot decode audio\)"):
        write_submission([Prediction("bad.wav", None, "cannot decode audio")], classes, sample, tmp_path / "o.csv")
    with caplog.at_level(logging.WARNING):
        write_submission([*ok, ("d.wav", [0, 0, 0])], classes, sample, tmp_path / "o.csv")
    assert "1 prediction(s) are for files" in caplog.text and "d.wav" in caplog.text
    assert not (tmp_path / "never.csv").exists()


def test_submission_round_trip_with_fsd2019_sample(fsd_kaggle, tmp_path):
    """Predictions for the imported test clips fill the real sample submission's template."""
    test = import_fsd2019(fsd_kaggle, include_test=True).subset("test")
    rng = np.random.default_rng(0)
    predictions = [(item.path, rng.random(len(test.classes))) for item in test]
    out = write_submission(predictions, test.classes, fsd_kaggle / "sample_submission.csv", tmp_path / "sub.csv")
    rows = _read_csv(out)
    assert rows[0] == _read_csv(fsd_kaggle / "sample_submission.csv")[0]
    assert [row[0] for row in rows[1:]] == [f for f, _ in layouts.FSD_TEST]
    np.testing.assert_array_equal(np.asarray([r[1:] for r in rows[1:]], dtype=np.float64),
                                  np.stack([p for _, p in predictions]))
