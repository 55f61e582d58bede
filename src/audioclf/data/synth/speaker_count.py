"""Speaker-count mixtures: 1..N different LibriSpeech speakers in one clip, after a reference speaker-counting project.

Mixture ``i`` of a split holds ``1 + i mod max_speakers`` speakers (balanced counts in every prefix of the
set), drawn without replacement from the split's speakers; for each speaker one of their utterances, and in
it a window of ``seconds``:

* ``window="random"`` (the default, as that project: "seleccionado al azar"): one uniformly random window,
  pauses included, so some speakers of a mixture may be (nearly) silent in it and its label overstates
  what can be heard;
* ``window="redraw_quiet"`` (our option): a window whose RMS is more than ``-silence_db`` dB below the
  utterance's RMS (a pause) is redrawn, up to ``max_tries`` times (then the loudest window drawn is kept),
  so every counted speaker speaks. Its first draw is the random window's, so the two differ only where
  that draw was a pause.

Who speaks (``sexes``):

* ``"balanced"`` (the default, as that project: its figures of each count's sex mixes, "los datos han sido
  balanceados lo más posible"): the ``k``-speaker mixtures cycle through the sex mixes of ``k`` speakers (all
  women ... all men) that the split's speakers can fill, so each mix is equally frequent in every prefix, and
  the speakers are drawn at random within each sex (LibriSpeech's ``SPEAKERS.TXT`` gives the sex);
* ``"uniform"`` (our earlier draw): ``k`` speakers drawn uniformly, so the mixes follow the binomial (with
  LibriSpeech's near 50/50 speakers, FM twice as frequent as FF or MM).

The windows are averaged, ``(x_1 + ... + x_n) / n``, as in that project, and written as 16-bit WAV.

Files are named as in that project, ``Audio_Train12.wav`` / ``Audio_Validation3.wav`` / ``Audio_Test7.wav``
(``Audio_12.wav`` for a set without splits), in ``out_dir/audio/``; ``out_dir/metadata.csv`` has one row per
file in the same order::

    fname,label,split,sexes,n_female,n_male,speakers,utterances
    Audio_Train1.wav,2,train,FM,1,1,1089|121,1089-134686-0003|121-121726-0012

``label`` is the speaker count (that project's "Speakers" column; our CSV importer reads a ``label`` column
as the class, so the classes are "1", "2", "3"); ``sexes`` is the mix of the speakers' sexes with its
letters sorted (that project's "Speakers Sex": ``FMM`` is one woman and two men, whoever spoke first, so MF and
FM are one group); the other columns become group columns of the imported manifest (per-group results by
sex mix come for free). Generation is deterministic and
resumable; see :mod:`audioclf.data.synth.mixtures`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from ...ownership import claim_folder
from ..audio import fix_length, load_audio
from ..manifest import Item, Manifest
from .mixtures import (
    MixtureJob,
    OnItem,
    check_count,
    check_generation_record,
    item_rng,
    mixture_samples,
    source_fingerprint,
    write_csv,
    write_mixture_files,
)

__all__ = [
    "REPORT_SIZES",
    "WINDOWS",
    "SEX_DRAWS",
    "SPLIT_FILE_NAMES",
    "SpeakerPool",
    "MixturePlan",
    "speaker_pools",
    "plan_mixture",
    "render_mixture",
    "generate_speaker_count",
    "librispeech_subset_splits",
]

log = logging.getLogger(__name__)

# The reference project's set: 100,000 / 10,000 / 10,000 one-second mixtures.
REPORT_SIZES: dict[str, int] = {"train": 100_000, "val": 10_000, "test": 10_000}
# How a speaker's window is drawn: that project's uniformly random one, or ours that redraws pauses (see above).
WINDOWS: tuple[str, ...] = ("random", "redraw_quiet")
# Who speaks in a mixture: sex mixes balanced as that project did, or speakers drawn uniformly (see above).
SEX_DRAWS: tuple[str, ...] = ("balanced", "uniform")
# "Audio_<Conjunto><k>.wav" with Conjunto in Train, Validation, Test (that project's naming).
SPLIT_FILE_NAMES: dict[str | None, str] = {None: "", "train": "Train", "val": "Validation", "test": "Test"}
# Random-stream tag per split, so mixture i of "train" and mixture i of "val" differ.
_SPLIT_STREAM: dict[str | None, int] = {None: 0, "train": 1, "val": 2, "test": 3}
HEADER = ("fname", "label", "split", "sexes", "n_female", "n_male", "speakers", "utterances")


@dataclass(frozen=True)
class SpeakerPool:
    """One speaker: id, sex ("F"/"M") and utterances (sorted by id)."""

    id: str
    sex: str
    utterances: tuple[Item, ...]


@dataclass(frozen=True)
class MixturePlan:
    """What mixture ``index`` of ``split`` is made of; drawn without reading any audio."""

    split: str | None
    index: int
    fname: str
    speakers: tuple[str, ...]
    sexes: str
    utterances: tuple[Item, ...]

    @property
    def count(self) -> int:
        return len(self.speakers)

    def row(self) -> tuple:
        mix = "".join(sorted(self.sexes))  # order-insensitive: the same mix is one group
        return (self.fname, self.count, self.split or "", mix, self.sexes.count("F"), self.sexes.count("M"),
                "|".join(self.speakers), "|".join(item.id for item in self.utterances))


def speaker_pools(items: Sequence[Item], seconds: float | None = None) -> list[SpeakerPool]:
    """Group utterances by their ``speaker`` group and read each speaker's ``sex`` group (M/F), in speaker
    order (numeric ids numerically), so the pools do not depend on the manifest's row order.

    Utterances whose known ``duration`` is shorter than ``seconds`` are left out while a speaker has longer
    ones (a short one would be zero-padded).
    """
    by_speaker: dict[str, list[Item]] = {}
    sexes: dict[str, str] = {}
    for item in items:
        speaker, sex = item.groups.get("speaker"), item.groups.get("sex", "").strip().upper()
        if not speaker:
            raise DataError(f"item {item.id}: no 'speaker' group; expected LibriSpeech items with speaker and sex")
        if sex not in ("F", "M"):
            raise DataError(f"item {item.id}: sex group '{item.groups.get('sex', '')}'; expected M or F")
        if sexes.setdefault(speaker, sex) != sex:
            raise DataError(f"item {item.id}: speaker {speaker} has sex {sex} here and {sexes[speaker]} elsewhere")
        by_speaker.setdefault(speaker, []).append(item)
    pools = []
    for speaker in sorted(by_speaker, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s)):
        utterances = sorted(by_speaker[speaker], key=lambda it: it.id)
        if seconds is not None:
            long_enough = [it for it in utterances if it.duration is None or it.duration >= seconds]
            utterances = long_enough or utterances
        pools.append(SpeakerPool(speaker, sexes[speaker], tuple(utterances)))
    return pools


def by_sex(pools: Sequence[SpeakerPool]) -> tuple[list[SpeakerPool], list[SpeakerPool]]:
    """``(women, men)``: the pools of each sex, in their order."""
    return [pool for pool in pools if pool.sex == "F"], [pool for pool in pools if pool.sex == "M"]


def sex_mixes(women: int, men: int, count: int) -> list[tuple[int, int]]:
    """The ``(women, men)`` mixes of ``count`` speakers that ``women`` and ``men`` speakers can fill, all women
    first (3 speakers from 2 women and 5 men: FFM, FMM, MMM)."""
    return [(f, count - f) for f in range(count, -1, -1) if f <= women and count - f <= men]


def _balanced_draw(sexes: tuple[list[SpeakerPool], list[SpeakerPool]], count: int, turn: int,
                   rng: np.random.Generator) -> list[SpeakerPool]:
    """``count`` speakers of the sex mix whose turn it is (``turn`` cycles through :func:`sex_mixes`), each sex's
    speakers drawn at random, in random order."""
    mixes = sex_mixes(len(sexes[0]), len(sexes[1]), count)
    chosen: list[SpeakerPool] = []
    for members, k in zip(sexes, mixes[turn % len(mixes)]):
        chosen += [members[int(p)] for p in rng.choice(len(members), size=k, replace=False)] if k else []
    return [chosen[int(i)] for i in rng.permutation(count)]


def plan_mixture(pools: Sequence[SpeakerPool], split: str | None, index: int, seed: int, max_speakers: int,
                 sexes: str = "balanced",
                 split_by_sex: tuple[list[SpeakerPool], list[SpeakerPool]] | None = None) -> MixturePlan:
    """Mixture ``index`` of ``split``: ``1 + index mod max_speakers`` distinct speakers, one utterance each; with
    ``sexes="balanced"`` the ``index // max_speakers``-th mixture of that count takes the next sex mix in turn
    (``split_by_sex``: :func:`by_sex` of ``pools``, made once for a whole set)."""
    rng = item_rng(seed, _SPLIT_STREAM[split], index, 0)  # stream 0: the plan; 1: the windows
    count = 1 + index % max_speakers
    if sexes == "balanced":
        chosen = _balanced_draw(split_by_sex or by_sex(pools), count, index // max_speakers, rng)
    else:
        chosen = [pools[int(p)] for p in rng.choice(len(pools), size=count, replace=False)]
    utterances = tuple(pool.utterances[int(rng.integers(len(pool.utterances)))] for pool in chosen)
    return MixturePlan(split, index, f"Audio_{SPLIT_FILE_NAMES[split]}{index}.wav",
                       tuple(pool.id for pool in chosen), "".join(pool.sex for pool in chosen), utterances)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _pick_window(wave: np.ndarray, n_samples: int, rng: np.random.Generator, silence_db: float,
                 max_tries: int) -> int:
    """Start of a random ``n_samples`` window of ``wave`` that is not a pause, in up to ``max_tries`` draws
    (see the module docstring); with one draw, any random window."""
    span = len(wave) - n_samples
    floor = _rms(wave) * 10.0 ** (silence_db / 20.0)
    best_start, best_rms = 0, -1.0
    for _ in range(max_tries):
        start = int(rng.integers(0, span + 1))
        level = _rms(wave[start: start + n_samples])
        if level > floor:
            return start
        if level > best_rms:
            best_start, best_rms = start, level
    return best_start


def render_mixture(
    waves: Sequence[np.ndarray],
    n_samples: int,
    rng: np.random.Generator,
    silence_db: float = -20.0,
    max_tries: int = 10,
    window: str = "random",
) -> tuple[np.ndarray, list[int]]:
    """Average one ``n_samples`` window of each wave, drawn as ``window`` says (see the module docstring);
    returns (mixture, window starts).

    A wave shorter than the window is zero-padded at the end (start 0).
    """
    if not waves:
        raise ValueError("render_mixture needs at least one wave")
    if window not in WINDOWS:
        raise ValueError(f"window={window!r}; expected one of {', '.join(WINDOWS)}")
    windows, starts = [], []
    for wave in waves:
        if len(wave) <= n_samples:
            windows.append(fix_length(np.asarray(wave, dtype=np.float32), n_samples, mode="pad"))
            starts.append(0)
            continue
        # One draw is a uniformly random window: _pick_window keeps it whatever its level.
        start = _pick_window(wave, n_samples, rng, silence_db, max_tries if window == "redraw_quiet" else 1)
        windows.append(wave[start: start + n_samples])
        starts.append(start)
    mixture = np.sum(np.stack(windows).astype(np.float64), axis=0) / len(windows)
    return mixture.astype(np.float32), starts


def _render(plan: MixturePlan, seed: int, sample_rate: int, n_samples: int, window: str, silence_db: float,
            max_tries: int) -> np.ndarray:
    waves = [load_audio(item.path, sample_rate)[0] for item in plan.utterances]
    for item, wave in zip(plan.utterances, waves):
        if not np.any(wave):  # no window has speech in it; say so rather than hide a silent speaker
            log.warning("%s: utterance is all zeros; %s gets a silent speaker", item.path, plan.fname)
    rng = item_rng(seed, _SPLIT_STREAM[plan.split], plan.index, 1)
    return render_mixture(waves, n_samples, rng, silence_db, max_tries, window)[0]


def _sizes(n: int | Mapping[str, int], source: Manifest) -> dict[str | None, int]:
    """``{split: number of mixtures}``; per-split sizes need a source whose items carry splits."""
    if isinstance(n, Mapping):
        unknown = [key for key in n if key not in ("train", "val", "test")]
        if unknown:
            raise ConfigError(f"n: unknown split '{unknown[0]}'; expected train, val and/or test")
        if not any(item.split for item in source):
            raise ConfigError("n gives per-split sizes but no source item has a split; assign splits first (e.g. "
                              "librispeech_subset_splits) so mixtures of different splits never share a speaker")
        return {str(key): check_count(value, f"n[{key!r}]") for key, value in n.items()}
    return {None: check_count(n)}


def generate_speaker_count(
    source: Manifest,
    out_dir: str | os.PathLike,
    max_speakers: int = 3,
    n: int | Mapping[str, int] = 1000,
    seconds: float = 1.0,
    sample_rate: int = 16000,
    seed: int = 0,
    window: str = "random",
    silence_db: float = -20.0,
    max_tries: int = 10,
    sexes: str = "balanced",
    progress: bool = True,
    on_item: OnItem | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a speaker-count set from LibriSpeech-like items (groups ``speaker`` and ``sex``); returns the
    metadata CSV (``out_dir/metadata.csv``, loadable with ``load_manifest``; classes "1".."max_speakers").

    ``n``: the number of mixtures (one set, files ``Audio_<i>.wav``, speakers drawn from all items), or per
    split, e.g. :data:`REPORT_SIZES` ``{"train": 100000, "val": 10000, "test": 10000}`` (files
    ``Audio_Train<i>.wav`` ..., speakers of a split drawn from the items of that split only).
    ``window``: ``"random"`` (that project's windows) or ``"redraw_quiet"`` (pauses quieter than ``silence_db``
    below the utterance redrawn, up to ``max_tries`` times); ``sexes``: ``"balanced"`` (that project's sex mixes)
    or ``"uniform"``; see the module docstring.
    ``on_item(path, written)`` is called after each mixture (progress hooks, tests).
    The same arguments give byte-identical files; rerunning after an interruption completes the set.
    ``out_dir`` must be new, empty or an earlier synthetic set (``overwrite``: deleted and made afresh).
    """
    n_samples = mixture_samples(seconds, sample_rate)
    sizes = _sizes(n, source)
    if isinstance(max_speakers, bool) or not isinstance(max_speakers, int) or max_speakers < 1:
        raise ConfigError(f"max_speakers={max_speakers!r}; expected a positive int")
    if window not in WINDOWS:
        raise ConfigError(f"window={window!r}; expected one of {', '.join(WINDOWS)}")
    if sexes not in SEX_DRAWS:
        raise ConfigError(f"sexes={sexes!r}; expected one of {', '.join(SEX_DRAWS)}")
    if not silence_db < 0:
        raise ConfigError(f"silence_db={silence_db}; expected a negative level in dB (relative to the utterance)")
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        raise ConfigError(f"max_tries={max_tries!r}; expected a positive int")

    pools: dict[str | None, list[SpeakerPool]] = {}
    for split in sizes:
        members = [item for item in source if split is None or item.split == split]
        pools[split] = speaker_pools(members, seconds)
        if len(pools[split]) < max_speakers:
            where = "the source" if split is None else f"split '{split}' of the source"
            raise DataError(f"{where} has {len(pools[split])} speakers; {max_speakers}-speaker mixtures need "
                            f"at least {max_speakers}")

    out = claim_folder(out_dir, "synth", overwrite, key="out_dir")  # never into a folder of the user's
    # Sets made before windows could be random were redraw_quiet ones, and their records have no "window"; those
    # made before sex mixes were balanced drew speakers uniformly, and have no "sexes".
    check_generation_record(out, first=("window", "sexes"), older={"window": "redraw_quiet", "sexes": "uniform"},
                            settings={
        "kind": "speaker_count", "version": 1, "seed": int(seed), "max_speakers": max_speakers,
        "seconds": float(seconds), "sample_rate": int(sample_rate),
        # The pause test's settings shape only redrawn windows: a random set resumes whatever they are.
        "window": window, "sexes": sexes,
        **({"silence_db": float(silence_db), "max_tries": max_tries} if window == "redraw_quiet" else {}),
        "source": source_fingerprint((item.id, item.groups.get("speaker", ""), item.groups.get("sex", ""),
                                      item.split or "") for item in source),
    })
    split_by_sex = {split: by_sex(members) for split, members in pools.items()}
    plans = [plan_mixture(pools[split], split, i, seed, max_speakers, sexes, split_by_sex[split])
             for split, count in sizes.items() for i in range(count)]
    jobs = [MixtureJob(out / "audio" / plan.fname,
                       lambda plan=plan: _render(plan, seed, sample_rate, n_samples, window, silence_db, max_tries))
            for plan in plans]
    write_mixture_files(jobs, sample_rate, n_samples, progress, "speaker-count mixtures", on_item)
    return write_csv(out / "metadata.csv", HEADER, (plan.row() for plan in plans))


def librispeech_subset_splits(manifest: Manifest) -> Manifest:
    """Splits from LibriSpeech subset names (the ``subset`` group): ``train-*`` -> train, ``dev-*`` -> val,
    ``test-*`` -> test. LibriSpeech subsets have disjoint speakers, so the mixtures' splits do too."""
    prefixes = {"train": "train", "dev": "val", "test": "test"}
    splits = []
    for item in manifest:
        subset = item.groups.get("subset", "")
        prefix = subset.split("-", 1)[0].lower()
        if prefix not in prefixes:
            raise DataError(f"item {item.id}: subset '{subset}'; expected a LibriSpeech subset name "
                            "(train-*, dev-* or test-*)")
        splits.append(prefixes[prefix])
    return manifest.with_splits(splits)


def source_manifest(source: str | Path) -> Manifest:
    """What mixtures are made from: a LibriSpeech folder (``SPEAKERS.TXT`` in it or its parent; splits from
    the subset names) or any folder / CSV the importers read."""
    from ..importers import get_importer, load_manifest

    root = Path(source)
    if root.is_dir() and any((p / "SPEAKERS.TXT").exists() for p in (root, root.parent)):
        return librispeech_subset_splits(get_importer("librispeech")(root))
    return load_manifest(root)
