"""Per-example waveform augmentations (numpy, mono float32), audiomentations-style with an explicit rng.

Every transform validates its arguments in ``__init__`` (``ValueError`` naming the argument), takes ``p``
and splits the random part from the deterministic part:

* ``randomize_parameters(wave, sr, rng) -> dict`` draws the parameters (JSON-friendly scalars/strings);
* ``apply(wave, sr, params) -> wave`` is deterministic: the same params give the same output;
* ``__call__(wave, sr, rng)`` draws "should apply" (``rng.random() < p``, always one draw, so later
  transforms see the same stream whatever ``p`` is), then the parameters, then applies.

All randomness comes from the ``numpy.random.Generator`` passed in (never ``random`` / ``np.random``), so
a dataset that builds the generator from ``(seed, epoch, index)`` gets the same augmented item in any
DataLoader worker. Transforms keep the input length (the dataset has already fixed it).

Which ones are ours and why: gain, gaussian_noise, background_noise, time_shift, speed_perturb, random_eq,
drc, polarity_inversion and impulse_response are a few numpy/scipy lines each, and audiomentations' versions draw
from the global ``random``/``np.random`` inside ``apply`` (noise) or normalise differently (its IR
transform rescales to peak 0.5), so we implement them; room_reverb (rooms simulated with pyroomacoustics, the
``augment`` extra) and own_background (the training set's own quiet frames, bound by :meth:`Compose.bind`)
too. time_stretch and pitch_shift wrap audiomentations (its default Signalsmith Stretch backend, ~10 ms per
3-s clip), imported lazily: the ``augment`` extra.

Build a chain from config with :func:`build_waveform_augment`::

    augment = build_waveform_augment([{"name": "gain", "p": 0.5, "min_gain_db": -6, "max_gain_db": 6},
                                      {"name": "gaussian_noise", "min_snr_db": 10, "max_snr_db": 40}])
    wave = augment(wave, sr, np.random.default_rng([seed, epoch, index]))
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import importlib
import inspect
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy.signal import fftconvolve, lfilter

from ..data.audio import load_audio, resample
from ..errors import ConfigError
from ..registry import Registry, did_you_mean

__all__ = [
    "AUDIO_EXTENSIONS",
    "WaveformTransform",
    "Compose",
    "Gain",
    "GaussianNoise",
    "BackgroundNoise",
    "TimeShift",
    "TimeStretch",
    "PitchShift",
    "SpeedPerturb",
    "RandomEQ",
    "DynamicRangeCompression",
    "PolarityInversion",
    "ImpulseResponse",
    "RoomReverb",
    "OwnBackground",
    "register_augmentation",
    "list_augmentations",
    "build_waveform_augment",
    "find_audio_files",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
_EPS = 1e-20


# --- argument checks (ValueError naming the argument) -------------------------------------------
def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def _probability(p: Any) -> float:
    p = _number("p", p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")
    return p


def _range(lo_name: str, lo: Any, hi_name: str, hi: Any,
           lower: float | None = None, upper: float | None = None) -> tuple[float, float]:
    """Validate a ``min_x``/``max_x`` pair: numbers, ``lo <= hi``, within ``[lower, upper]``."""
    lo, hi = _number(lo_name, lo), _number(hi_name, hi)
    if lower is not None and lo < lower:
        raise ValueError(f"{lo_name}: expected >= {lower}, got {lo}")
    if upper is not None and hi > upper:
        raise ValueError(f"{hi_name}: expected <= {upper}, got {hi}")
    if lo > hi:
        raise ValueError(f"{lo_name}: expected <= {hi_name} ({hi}), got {lo}")
    return lo, hi


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _check_call(wave: Any, sr: Any, rng: Any) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"wave: expected a 1-D mono waveform, got shape {wave.shape}")
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"sr: expected a positive integer sample rate, got {sr!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return wave.astype(np.float32, copy=False)


def _power(wave: np.ndarray) -> float:
    """Mean square in float64 (float32 sums lose digits on long clips)."""
    return float(np.mean(np.square(wave, dtype=np.float64))) if len(wave) else 0.0


def find_audio_files(paths: str | Path | Sequence[str | Path], arg: str) -> list[str]:
    """Audio files named by ``paths`` (files and/or folders, searched recursively), sorted.

    Raises ``ValueError`` naming ``arg`` when a path does not exist or no audio file is found.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: set[str] = set()
    for entry in items:
        path = Path(entry)
        if path.is_dir():
            files.update(str(f) for f in path.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
        elif path.is_file():
            files.add(str(path))
        else:
            raise ValueError(f"{arg}: '{entry}' does not exist")
    if not files:
        raise ValueError(f"{arg}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {paths!s}")
    return sorted(files)  # sorted: the file drawn for an index must not depend on directory order


def _decode(path: str, sr: int) -> np.ndarray:
    return load_audio(path, sample_rate=sr, mono=True)[0]  # AudioDecodeError names the file


class _AudioBank:
    """Mono float32 waves made once per (key, sample rate), thread-safe: decoded files (noise, impulse
    responses) by default, or what ``make(key, sr)`` returns (room_reverb's generated rooms)."""

    def __init__(self, files: list, make: Callable[[Any, int], np.ndarray] = _decode):
        self.files = files
        self.make = make
        self._cache: dict[tuple[Any, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, sr: int) -> np.ndarray:
        cache_key = (key, int(sr))
        wave = self._cache.get(cache_key)
        if wave is None:
            wave = self.make(key, int(sr))
            with self._lock:
                self._cache[cache_key] = wave
        return wave

    def __getstate__(self) -> dict[str, Any]:
        # Locks cannot be pickled (spawned DataLoader workers); the cache is rebuilt lazily there.
        return {"files": self.files, "make": self.make}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["files"], state["make"])


# --- base class and Compose ---------------------------------------------------------------------
class WaveformTransform(ABC):
    """Base class: subclasses implement ``randomize_parameters`` and ``apply``; see the module docstring."""

    name: ClassVar[str] = ""
    # True for transforms made from the training set itself (own_background): they work only once bound to
    # the training waves; elsewhere (shard sets, offline copies) they are refused.
    needs_training_set: ClassVar[bool] = False

    def __init__(self, p: float = 0.5):
        self.p = _probability(p)

    def bind(self, waves: Sequence[np.ndarray], sample_rate: int) -> None:
        """Called once before training with the training split's waves and rate (:meth:`Compose.bind`):
        own_background learns from them; room_reverb simulates its rooms there, in the main process, so
        DataLoader workers (forked anew each epoch) inherit them instead of simulating them again."""

    def randomize_parameters(self, wave: np.ndarray, sr: int, rng: np.random.Generator) -> dict[str, Any]:
        """Draw this transform's parameters for ``wave`` (called only when it applies)."""
        return {}

    @abstractmethod
    def apply(self, wave: np.ndarray, sr: int, params: Mapping[str, Any]) -> np.ndarray:
        """Deterministic: transform ``wave`` with ``params``; returns a new float32 array, same length."""

    def call_with_params(self, wave: np.ndarray, sr: int, rng: np.random.Generator,
                         variant: int | None = None) -> tuple[np.ndarray, dict[str, Any] | None]:
        """Like ``__call__`` but also returns the drawn parameters (None when the transform was skipped).

        ``variant``: the number (1..) of the offline copy being made, for :meth:`variant_parameters`."""
        wave = _check_call(wave, sr, rng)
        if not rng.random() < self.p:
            return wave, None
        params = self.variant_parameters(self.randomize_parameters(wave, int(sr), rng), variant)
        return np.asarray(self.apply(wave, int(sr), params), dtype=np.float32), params

    def variant_parameters(self, params: dict[str, Any], variant: int | None) -> dict[str, Any]:
        """``params`` with what the copy's number fixes (impulse_response ``each``: copy k takes IR k)."""
        return params

    def check_variants(self, n_variants: int | None) -> None:
        """ValueError when the transform cannot make ``n_variants`` numbered copies (None: augmentation on the
        fly, which numbers no copies)."""

    def __call__(self, wave: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        return self.call_with_params(wave, sr, rng)[0]

    def to_spec(self) -> dict[str, Any]:
        """``{"name": ..., <init arguments>}``: what :func:`build_waveform_augment` takes back."""
        spec: dict[str, Any] = {"name": self.name}
        for arg in inspect.signature(type(self).__init__).parameters:
            if arg != "self":
                spec[arg] = getattr(self, arg)
        return spec

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_spec().items() if k != "name")
        return f"{type(self).__name__}({args})"


class Compose:
    """Apply transforms in order, all drawing from the same rng (one stream per item)."""

    def __init__(self, transforms: Sequence[WaveformTransform] = ()):
        self.transforms = list(transforms)
        for i, transform in enumerate(self.transforms):
            if not isinstance(transform, WaveformTransform):
                raise ValueError(f"transforms[{i}]: expected a WaveformTransform, got {type(transform).__name__}")

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self) -> Iterator[WaveformTransform]:
        return iter(self.transforms)

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"

    def bind(self, waves: Sequence[np.ndarray], sample_rate: int) -> None:
        """:meth:`WaveformTransform.bind` each transform to the training set's waves (decoded, mono, at
        ``sample_rate``): call with the training split only, never validation or test audio."""
        for transform in self.transforms:
            transform.bind(waves, sample_rate)

    def refuse_training_set_transforms(self, where: str) -> None:
        """ConfigError when a transform needs the training set's waves, which ``where`` cannot give."""
        for index, transform in enumerate(self.transforms):
            if transform.needs_training_set:
                raise ConfigError(f"augment[{index}] ({transform.name}): mixes in the training set's own audio, "
                                  f"so it works only when training on audio files, not in {where}")

    def check_variants(self, n_variants: int | None, where: str) -> None:
        """ConfigError when a transform cannot make ``n_variants`` numbered copies in ``where`` (None: on the fly,
        where nothing is numbered: impulse_response ``each`` is refused there)."""
        for index, transform in enumerate(self.transforms):
            try:
                transform.check_variants(n_variants)
            except ValueError as exc:
                raise ConfigError(f"augment[{index}] ({transform.name}) in {where}: {exc}") from None

    def call_with_params(self, wave: np.ndarray, sr: int, rng: np.random.Generator,
                         variant: int | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The augmented wave and one record ``{"index", "name", "params"}`` per transform that applied
        (``variant``: the offline copy's number, see :meth:`WaveformTransform.call_with_params`)."""
        wave = _check_call(wave, sr, rng)
        records: list[dict[str, Any]] = []
        for index, transform in enumerate(self.transforms):
            wave, params = transform.call_with_params(wave, sr, rng, variant)
            if params is not None:
                records.append({"index": index, "name": transform.name, "params": params})
        return wave, records

    def __call__(self, wave: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        return self.call_with_params(wave, sr, rng)[0]

    def replay(self, wave: np.ndarray, sr: int, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Re-apply recorded parameters (from :meth:`call_with_params`) without any randomness."""
        out = np.asarray(wave, dtype=np.float32)
        for record in records:
            index = int(record["index"])
            if not 0 <= index < len(self.transforms) or self.transforms[index].name != record["name"]:
                raise ConfigError(f"augmentation record {dict(record)!r} does not match this chain {self!r}")
            out = np.asarray(self.transforms[index].apply(out, int(sr), record["params"]), dtype=np.float32)
        return out

    def to_specs(self) -> list[dict[str, Any]]:
        return [transform.to_spec() for transform in self.transforms]


# --- registry -----------------------------------------------------------------------------------
AUGMENTATIONS: Registry[type[WaveformTransform]] = Registry("augmentation")


def register_augmentation(name: str) -> Callable[[type[WaveformTransform]], type[WaveformTransform]]:
    """Class decorator: make a :class:`WaveformTransform` subclass buildable by ``name`` from config."""

    def decorate(cls: type[WaveformTransform]) -> type[WaveformTransform]:
        if not (isinstance(cls, type) and issubclass(cls, WaveformTransform)):
            raise TypeError(f"augmentation '{name}': expected a WaveformTransform subclass, got {cls!r}")
        AUGMENTATIONS.add(name, cls)
        cls.name = name
        return cls

    return decorate


def list_augmentations() -> list[str]:
    return AUGMENTATIONS.names()


def build_waveform_augment(specs: Sequence[Mapping[str, Any]] | None) -> Compose:
    """A :class:`Compose` from specs like ``[{"name": "gain", "p": 0.5, "min_gain_db": -6}, ...]``.

    ``None`` or ``[]`` gives an empty (identity) chain. An unknown name or argument, or an invalid value,
    raises :class:`ConfigError` naming ``augment[i]`` and the closest valid name.
    """
    if specs is None:
        return Compose([])
    if isinstance(specs, Mapping) or isinstance(specs, str):
        raise ConfigError(f"augment: expected a list of {{name: ..., ...}} entries, got {type(specs).__name__}")
    transforms = []
    for i, spec in enumerate(specs):
        where = f"augment[{i}]"
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(f"{where}: expected a mapping with a 'name' key, got {spec!r}")
        name = spec["name"]
        if name not in AUGMENTATIONS:
            raise ConfigError(f"{where}: unknown augmentation '{name}'{did_you_mean(str(name), AUGMENTATIONS.names())}")
        cls = AUGMENTATIONS.get(name)
        valid = [arg for arg in inspect.signature(cls.__init__).parameters if arg != "self"]
        kwargs = {key: value for key, value in spec.items() if key != "name"}
        for key in kwargs:
            if key not in valid:
                raise ConfigError(f"{where} ({name}): unknown argument '{key}'{did_you_mean(str(key), valid)}")
        try:
            transforms.append(cls(**kwargs))
        except ValueError as exc:
            raise ConfigError(f"{where} ({name}): {exc}") from None
    return Compose(transforms)


# --- transforms ---------------------------------------------------------------------------------
@register_augmentation("gain")
class Gain(WaveformTransform):
    """Multiply by a gain drawn uniformly in dB from ``[min_gain_db, max_gain_db]`` (no clipping)."""

    def __init__(self, min_gain_db: float = -12.0, max_gain_db: float = 12.0, p: float = 0.5):
        super().__init__(p)
        self.min_gain_db, self.max_gain_db = _range("min_gain_db", min_gain_db, "max_gain_db", max_gain_db)

    def randomize_parameters(self, wave, sr, rng):
        return {"gain_db": float(rng.uniform(self.min_gain_db, self.max_gain_db))}

    def apply(self, wave, sr, params):
        return (wave * np.float32(10.0 ** (params["gain_db"] / 20.0))).astype(np.float32)


@register_augmentation("gaussian_noise")
class GaussianNoise(WaveformTransform):
    """Add white Gaussian noise at an SNR drawn uniformly in dB from ``[min_snr_db, max_snr_db]``.

    The noise power is ``mean(wave**2) / 10**(snr/10)``; its samples come from ``default_rng(seed)`` with
    a ``seed`` drawn from the item's rng (float32 draws), so ``apply`` is deterministic and the params stay small.
    An all-zero input has no defined SNR and is returned unchanged.
    """

    def __init__(self, min_snr_db: float = 5.0, max_snr_db: float = 40.0, p: float = 0.5):
        super().__init__(p)
        self.min_snr_db, self.max_snr_db = _range("min_snr_db", min_snr_db, "max_snr_db", max_snr_db)

    def randomize_parameters(self, wave, sr, rng):
        return {"snr_db": float(rng.uniform(self.min_snr_db, self.max_snr_db)),
                "seed": int(rng.integers(0, 2**63 - 1))}

    def apply(self, wave, sr, params):
        power = _power(wave)
        if power <= 0.0:
            return wave.copy()
        sigma = np.float32(math.sqrt(power / 10.0 ** (params["snr_db"] / 10.0)))
        # float32 draws: twice as fast as float64, and the waveform is float32 anyway
        noise = np.random.default_rng(params["seed"]).standard_normal(len(wave), dtype=np.float32)
        return wave + noise * sigma


def _scale_to_snr(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``wave + g * noise`` with ``g`` such that ``10 log10(P_wave / P_(g noise)) = snr_db``."""
    p_wave, p_noise = _power(wave), _power(noise)
    if p_wave <= 0.0 or p_noise <= 0.0:  # SNR undefined: leave the clip alone
        return wave.copy()
    gain = math.sqrt(p_wave / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (wave + gain * noise.astype(np.float64)).astype(np.float32)


def _draw_offset(noise_length: int, n: int, rng: np.random.Generator) -> int:
    """Where a clip of ``n`` samples starts in a noise of ``noise_length`` (tiled noise may start anywhere)."""
    return int(rng.integers(noise_length - n + 1 if noise_length >= n else noise_length))


def _mix_noise(wave: np.ndarray, noise: np.ndarray, offset: int, snr_db: float) -> np.ndarray:
    """``wave`` plus ``len(wave)`` samples of ``noise`` from ``offset`` at ``snr_db``."""
    # modular indexing = a window of a long noise, or the noise tiled when it is shorter than the clip
    segment = noise[(int(offset) + np.arange(len(wave))) % len(noise)]
    return _scale_to_snr(wave, segment, snr_db)


@register_augmentation("background_noise")
class BackgroundNoise(WaveformTransform):
    """Mix in a random noise file at an SNR drawn uniformly in dB from ``[min_snr_db, max_snr_db]``.

    ``noise_dir``: a folder (searched recursively), a file, or a list of them. Each file is decoded and
    resampled to the clip's rate once (``data.audio.load_audio``) and kept in memory. A random segment of
    the clip's length is taken starting at ``offset``: a window of a longer noise, or the noise tiled
    (repeated) from that offset when it is shorter. Params: ``{"file", "offset", "snr_db"}``.
    """

    def __init__(self, noise_dir: str | Sequence[str], min_snr_db: float = 3.0, max_snr_db: float = 30.0,
                 p: float = 0.5):
        super().__init__(p)
        self.noise_dir = noise_dir if isinstance(noise_dir, (str, Path)) else [str(d) for d in noise_dir]
        self._bank = _AudioBank(find_audio_files(noise_dir, "noise_dir"))
        self.min_snr_db, self.max_snr_db = _range("min_snr_db", min_snr_db, "max_snr_db", max_snr_db)

    @property
    def files(self) -> list[str]:
        return self._bank.files

    def randomize_parameters(self, wave, sr, rng):
        file = self.files[int(rng.integers(len(self.files)))]
        return {"file": file, "offset": _draw_offset(len(self._bank.get(file, sr)), len(wave), rng),
                "snr_db": float(rng.uniform(self.min_snr_db, self.max_snr_db))}

    def apply(self, wave, sr, params):
        return _mix_noise(wave, self._bank.get(params["file"], sr), params["offset"], params["snr_db"])


@register_augmentation("time_shift")
class TimeShift(WaveformTransform):
    """Shift in time by ``round(fraction * n)`` samples, fraction uniform in ``[min_fraction, max_fraction]``.

    ``mode="roll"`` wraps the samples around (like audiomentations ``Shift(rollover=True)`` without its
    fade); ``mode="pad"`` fills the vacated part with zeros. Positive shifts move the sound later.
    """

    def __init__(self, min_fraction: float = -0.5, max_fraction: float = 0.5, mode: str = "roll", p: float = 0.5):
        super().__init__(p)
        self.min_fraction, self.max_fraction = _range("min_fraction", min_fraction, "max_fraction", max_fraction,
                                                      lower=-1.0, upper=1.0)
        self.mode = _choice("mode", mode, ("roll", "pad"))

    def randomize_parameters(self, wave, sr, rng):
        return {"shift": int(round(rng.uniform(self.min_fraction, self.max_fraction) * len(wave)))}

    def apply(self, wave, sr, params):
        shift = int(params["shift"])
        if self.mode == "roll":
            return np.roll(wave, shift)
        out = np.zeros_like(wave)
        if abs(shift) >= len(wave):
            return out
        if shift >= 0:
            out[shift:] = wave[: len(wave) - shift]
        else:
            out[:shift] = wave[-shift:]
        return out


def _import_extra(module: str, needed_by: str):
    """``module`` from the ``augment`` extra, or a one-line ConfigError (``needed_by``: "room_reverb needs")."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{needed_by} {module}: pip install 'audioclf[augment]'") from None


def _audiomentations():
    return _import_extra("audiomentations", "time_stretch/pitch_shift need")


def _same_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad at the end to ``n`` samples (audiomentations' ``leave_length_unchanged``)."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if len(wave) >= n:
        return wave[:n].copy()
    return np.pad(wave, (0, n - len(wave)))


_STRETCH_METHODS = ("signalsmith_stretch", "librosa_phase_vocoder")


@register_augmentation("time_stretch")
class TimeStretch(WaveformTransform):
    """Change speed without changing pitch by a rate uniform in ``[min_rate, max_rate]`` (>1 = faster).

    Wraps audiomentations ``TimeStretch`` (Signalsmith Stretch by default: fast and clean; or librosa's
    phase vocoder); the output is cropped or zero-padded at the end to the input length.
    """

    def __init__(self, min_rate: float = 0.8, max_rate: float = 1.25, method: str = "signalsmith_stretch",
                 p: float = 0.5):
        super().__init__(p)
        self.min_rate, self.max_rate = _range("min_rate", min_rate, "max_rate", max_rate, lower=0.1, upper=10.0)
        self.method = _choice("method", method, _STRETCH_METHODS)
        _audiomentations()  # fail at build time, not in a DataLoader worker

    def randomize_parameters(self, wave, sr, rng):
        return {"rate": float(rng.uniform(self.min_rate, self.max_rate))}

    def apply(self, wave, sr, params):
        # a fresh audiomentations object per call: its parameters live on the instance (not thread-safe)
        transform = _audiomentations().TimeStretch(min_rate=params["rate"], max_rate=params["rate"],
                                                   leave_length_unchanged=True, method=self.method, p=1.0)
        transform.parameters = {"should_apply": True, "rate": float(params["rate"])}
        return _same_length(transform.apply(np.ascontiguousarray(wave), sr), len(wave))


@register_augmentation("pitch_shift")
class PitchShift(WaveformTransform):
    """Shift pitch by semitones uniform in ``[min_semitones, max_semitones]``, keeping the duration.

    Wraps audiomentations ``PitchShift`` (Signalsmith Stretch by default, or librosa); length is kept.
    """

    def __init__(self, min_semitones: float = -4.0, max_semitones: float = 4.0, method: str = "signalsmith_stretch",
                 p: float = 0.5):
        super().__init__(p)
        self.min_semitones, self.max_semitones = _range("min_semitones", min_semitones, "max_semitones",
                                                        max_semitones, lower=-24.0, upper=24.0)
        self.method = _choice("method", method, _STRETCH_METHODS)
        _audiomentations()

    def randomize_parameters(self, wave, sr, rng):
        return {"semitones": float(rng.uniform(self.min_semitones, self.max_semitones))}

    def apply(self, wave, sr, params):
        transform = _audiomentations().PitchShift(min_semitones=params["semitones"],
                                                  max_semitones=params["semitones"], method=self.method, p=1.0)
        transform.parameters = {"should_apply": True, "num_semitones": float(params["semitones"])}
        return _same_length(transform.apply(np.ascontiguousarray(wave), sr), len(wave))


@register_augmentation("speed_perturb")
class SpeedPerturb(WaveformTransform):
    """Play faster or slower by a factor uniform in ``[min_factor, max_factor]``: tempo *and* pitch change together.

    Speed perturbation as in Ko et al. 2015, "Audio augmentation for speech recognition" (factors 0.9, 1.0,
    1.1): the clip is resampled from ``sr`` to ``sr / factor`` (soxr, as ``data.audio.resample``) and played
    at ``sr``, so a 1.1 factor shortens every pitch period by 1/1.1 (a new speaker's vocal tract and rate, in
    one cheap step). The result is cropped or zero-padded at the end to the input length, as time_stretch.
    Params: ``{"factor"}``.
    """

    def __init__(self, min_factor: float = 0.9, max_factor: float = 1.1, p: float = 0.5):
        super().__init__(p)
        self.min_factor, self.max_factor = _range("min_factor", min_factor, "max_factor", max_factor,
                                                  lower=0.5, upper=2.0)

    def randomize_parameters(self, wave, sr, rng):
        return {"factor": float(rng.uniform(self.min_factor, self.max_factor))}

    def apply(self, wave, sr, params):
        factor = float(params["factor"])
        if factor == 1.0 or not len(wave):
            return wave.copy()
        return _same_length(resample(wave, sr, sr / factor), len(wave))


def _biquad(kind: str, freq: float, gain_db: float, q: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(b, a) of one RBJ "Audio EQ Cookbook" biquad (Bristow-Johnson): peaking, low_shelf or high_shelf.

    A peaking filter's gain at ``freq`` is exactly ``gain_db``; a shelf reaches ``gain_db`` far below (low) or
    above (high) ``freq`` and half of it at ``freq``. ``q`` sets the bandwidth (shelves: the slope, 0.707 = no
    overshoot).
    """
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * freq / sr
    cos, alpha = math.cos(w0), math.sin(w0) / (2.0 * q)
    if kind == "peaking":
        b = [1 + alpha * amp, -2 * cos, 1 - alpha * amp]
        a = [1 + alpha / amp, -2 * cos, 1 - alpha / amp]
    else:
        # the cookbook's high shelf mirrors its low shelf: the (A-1)cos terms, b1 and a1 change sign
        sign = 1.0 if kind == "low_shelf" else -1.0
        root = 2.0 * math.sqrt(amp) * alpha
        b = [amp * ((amp + 1) - sign * (amp - 1) * cos + root), sign * 2 * amp * ((amp - 1) - sign * (amp + 1) * cos),
             amp * ((amp + 1) - sign * (amp - 1) * cos - root)]
        a = [(amp + 1) + sign * (amp - 1) * cos + root, -sign * 2 * ((amp - 1) + sign * (amp + 1) * cos),
             (amp + 1) + sign * (amp - 1) * cos - root]
    b, a = np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)
    return b / a[0], a / a[0]


_EQ_KINDS = ("peaking", "low_shelf", "high_shelf")


@register_augmentation("random_eq")
class RandomEQ(WaveformTransform):
    """A random device / microphone response: a cascade of ``n_bands`` random biquads (RBJ cookbook), ours.

    Each band draws its kind from ``kinds`` (peaking, low_shelf, high_shelf), a centre frequency log-uniform in
    ``[min_freq, max_freq]`` (capped at 0.45 of the sample rate), a gain uniform in ``[min_gain_db,
    max_gain_db]`` and a Q uniform in ``[min_q, max_q]``. Random EQ of this kind is the usual cheap stand-in
    for unseen recording devices in the DCASE acoustic scene (device mismatch) systems, where measured
    impulse responses (impulse_response) are not at hand. Filtering is causal (``scipy.signal.lfilter``), so
    the length is kept; the level is not restored (a device changes it too). Params: ``{"bands": [{"kind",
    "freq", "gain_db", "q"}, ...]}``.
    """

    def __init__(self, n_bands: int = 3, min_gain_db: float = -12.0, max_gain_db: float = 12.0,
                 min_freq: float = 60.0, max_freq: float = 8000.0, min_q: float = 0.5, max_q: float = 2.0,
                 kinds: Sequence[str] = _EQ_KINDS, p: float = 0.5):
        super().__init__(p)
        if isinstance(n_bands, bool) or not isinstance(n_bands, (int, np.integer)) or not 1 <= n_bands <= 16:
            raise ValueError(f"n_bands: expected an integer in 1..16, got {n_bands!r}")
        self.n_bands = int(n_bands)
        self.min_gain_db, self.max_gain_db = _range("min_gain_db", min_gain_db, "max_gain_db", max_gain_db,
                                                    lower=-40.0, upper=40.0)
        self.min_freq, self.max_freq = _range("min_freq", min_freq, "max_freq", max_freq, lower=1.0)
        self.min_q, self.max_q = _range("min_q", min_q, "max_q", max_q, lower=0.05, upper=20.0)
        if isinstance(kinds, str) or not kinds:
            raise ValueError(f"kinds: expected a non-empty list of {', '.join(_EQ_KINDS)}, got {kinds!r}")
        self.kinds = [_choice("kinds", kind, _EQ_KINDS) for kind in kinds]

    def randomize_parameters(self, wave, sr, rng):
        # log-uniform frequency: bands spread evenly over octaves, as the ear and the mel scale do
        high = min(self.max_freq, 0.45 * sr)  # below Nyquist, where the cookbook formulas stay well-behaved
        low = min(self.min_freq, high)
        bands = []
        for _ in range(self.n_bands):
            bands.append({"kind": self.kinds[int(rng.integers(len(self.kinds)))],
                          "freq": float(math.exp(rng.uniform(math.log(low), math.log(high)))),
                          "gain_db": float(rng.uniform(self.min_gain_db, self.max_gain_db)),
                          "q": float(rng.uniform(self.min_q, self.max_q))})
        return {"bands": bands}

    def apply(self, wave, sr, params):
        out = wave.astype(np.float64)
        for band in params["bands"]:
            b, a = _biquad(band["kind"], float(band["freq"]), float(band["gain_db"]), float(band["q"]), sr)
            out = lfilter(b, a, out)
        return out.astype(np.float32)


_MAKEUPS = ("rms", "peak", "none")


@register_augmentation("drc")
class DynamicRangeCompression(WaveformTransform):
    """Feed-forward downward compressor (hard knee) with attack/release smoothing; ours.

    Level detection: RMS in dB over consecutive ``frame_ms`` frames. The threshold is *relative to the
    clip's loudest frame* (``threshold_db`` <= 0 below it), because a dataset's absolute level depends on
    each recorder's gain stage: an absolute threshold would compress some clips fully and others not at all.
    Gain reduction per frame is ``max(0, level - threshold) * (1 - 1/ratio)`` dB, smoothed by a one-pole
    filter with the ``attack_ms`` time constant while the reduction grows and ``release_ms`` while it falls
    (0 = instantaneous), then interpolated linearly between frame centres to every sample.
    ``makeup``: "rms" restores the input RMS (loudness kept, crest factor reduced), "peak" the input peak,
    "none" leaves the reduced level. Params: ``{"threshold_db", "ratio"}``, drawn uniformly.
    """

    def __init__(self, min_threshold_db: float = -30.0, max_threshold_db: float = -10.0, min_ratio: float = 2.0,
                 max_ratio: float = 8.0, attack_ms: float = 5.0, release_ms: float = 50.0, frame_ms: float = 2.0,
                 makeup: str = "rms", p: float = 0.5):
        super().__init__(p)
        self.min_threshold_db, self.max_threshold_db = _range("min_threshold_db", min_threshold_db,
                                                              "max_threshold_db", max_threshold_db, upper=0.0)
        self.min_ratio, self.max_ratio = _range("min_ratio", min_ratio, "max_ratio", max_ratio, lower=1.0)
        self.attack_ms = _number("attack_ms", attack_ms)
        self.release_ms = _number("release_ms", release_ms)
        self.frame_ms = _number("frame_ms", frame_ms)
        if self.attack_ms < 0 or self.release_ms < 0:
            raise ValueError(f"attack_ms/release_ms: expected >= 0, got {attack_ms}/{release_ms}")
        if self.frame_ms <= 0:
            raise ValueError(f"frame_ms: expected > 0, got {frame_ms}")
        self.makeup = _choice("makeup", makeup, _MAKEUPS)

    def randomize_parameters(self, wave, sr, rng):
        return {"threshold_db": float(rng.uniform(self.min_threshold_db, self.max_threshold_db)),
                "ratio": float(rng.uniform(self.min_ratio, self.max_ratio))}

    def gain_reduction_db(self, wave: np.ndarray, sr: int, threshold_db: float, ratio: float) -> np.ndarray:
        """Per-sample gain reduction in dB (>= 0) before makeup."""
        n = len(wave)
        hop = max(1, int(round(self.frame_ms * sr / 1000.0)))
        n_frames = -(-n // hop)
        padded = np.zeros(n_frames * hop)
        padded[:n] = wave
        counts = np.full(n_frames, hop, dtype=np.float64)
        counts[-1] = n - (n_frames - 1) * hop  # the last frame's mean is over its real samples only
        level = 10.0 * np.log10(np.square(padded).reshape(n_frames, hop).sum(axis=1) / counts + _EPS)
        over = np.maximum(level - (level.max() + threshold_db), 0.0)
        target = over * (1.0 - 1.0 / ratio)
        smoothed = self._smooth(target, hop, sr)
        centres = (np.arange(n_frames) * hop + (hop - 1) / 2.0).clip(max=n - 1)
        return np.interp(np.arange(n), centres, smoothed)

    def _smooth(self, target: np.ndarray, hop: int, sr: int) -> np.ndarray:
        # one-pole coefficients per frame step; the branch (attack vs release) makes this nonlinear, so it
        # runs as a loop over frames (a few thousand per clip), not over samples
        def coef(ms: float) -> float:
            return math.exp(-hop / (ms * 1e-3 * sr)) if ms > 0 else 0.0

        attack, release = coef(self.attack_ms), coef(self.release_ms)
        if attack == release:  # one time constant: a linear filter, no branch, no loop
            return target if attack == 0.0 else lfilter([1.0 - attack], [1.0, -attack], target)
        out = np.empty_like(target)
        state = 0.0
        for i, value in enumerate(target.tolist()):
            a = attack if value > state else release
            state = a * state + (1.0 - a) * value
            out[i] = state
        return out

    def apply(self, wave, sr, params):
        if not len(wave) or not np.any(wave):
            return wave.copy()
        x = wave.astype(np.float64)
        reduction = self.gain_reduction_db(x, sr, float(params["threshold_db"]), float(params["ratio"]))
        y = x * 10.0 ** (-reduction / 20.0)
        if self.makeup == "rms":
            y *= math.sqrt(_power(x) / max(_power(y), _EPS))
        elif self.makeup == "peak":
            y *= np.abs(x).max() / max(np.abs(y).max(), _EPS)
        return y.astype(np.float32)


@register_augmentation("polarity_inversion")
class PolarityInversion(WaveformTransform):
    """Multiply by -1 (no parameters)."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def apply(self, wave, sr, params):
        return np.negative(wave)


_ALIGNS = ("peak", "start")


def _convolve_same(wave: np.ndarray, ir: np.ndarray, align: str = "peak") -> np.ndarray:
    """``wave`` convolved with ``ir``, same length and RMS as ``wave`` (impulse_response and room_reverb).

    ``n`` samples of the full convolution are read from the IR's main peak (``align="peak"``: the IR's
    leading delay does not shift the sound) or from 0 (``align="start"``); the result is rescaled to the
    input's RMS.
    """
    # float32 FFTs: ~2x faster than float64, with errors far below 16-bit audio resolution
    full = fftconvolve(wave.astype(np.float32, copy=False), ir.astype(np.float32, copy=False))
    start = int(np.argmax(np.abs(ir))) if align == "peak" else 0
    out = full[start : start + len(wave)]
    p_out = _power(out)
    if p_out > 0.0:
        out = out * np.float32(math.sqrt(_power(wave) / p_out))
    return out.astype(np.float32, copy=False)


@register_augmentation("impulse_response")
class ImpulseResponse(WaveformTransform):
    """Convolve with a random impulse response (device / microphone simulation, as for DCASE 2022 Task 1); ours.

    ``ir_dir``: a folder (recursive), a file or a list; files are decoded and resampled once per rate.
    Convolution is ``scipy.signal.fftconvolve``. Length is kept by reading ``n`` samples of the full
    convolution starting at the IR's main peak (``align="peak"``: the IR's leading delay does not shift the
    sound) or at 0 (``align="start"``). Level is kept: the output is rescaled to the input's RMS.
    ``drc``: optional arguments of :class:`DynamicRangeCompression` (``p`` excluded) applied after the
    convolution, as the DCASE device simulation does ("IR then device-specific DRC").
    ``each``: offline copies only (``audioclf augment``): copy k of every clip uses the k-th IR (sorted
    paths) instead of a random one, so N IRs and N variants give every clip convolved with each IR once, as
    González Poy (2022, §4.2.2) made its 8 microphone copies; needs ``p`` 1 and as many variants as IRs.
    Params: ``{"file"}`` plus ``{"drc": {...}}`` when ``drc`` is set.
    """

    def __init__(self, ir_dir: str | Sequence[str], align: str = "peak", drc: Mapping[str, Any] | None = None,
                 each: bool = False, p: float = 0.5):
        super().__init__(p)
        if not isinstance(each, bool):
            raise ValueError(f"each: expected true or false, got {each!r}")
        if each and self.p != 1.0:
            raise ValueError(f"each: every copy k is convolved with IR k, so p must be 1.0, got {p!r}")
        self.each = each
        self.ir_dir = ir_dir if isinstance(ir_dir, (str, Path)) else [str(d) for d in ir_dir]
        self._bank = _AudioBank(find_audio_files(ir_dir, "ir_dir"))
        self.align = _choice("align", align, _ALIGNS)
        self.drc = None if drc is None else dict(drc)
        self._drc = None
        if self.drc is not None:
            if "p" in self.drc:
                raise ValueError("drc: 'p' is not allowed (the compressor always follows the convolution)")
            valid = [arg for arg in inspect.signature(DynamicRangeCompression.__init__).parameters
                     if arg not in ("self", "p")]
            for key in self.drc:
                if key not in valid:
                    raise ValueError(f"drc: unknown argument '{key}'{did_you_mean(key, valid)}")
            self._drc = DynamicRangeCompression(**self.drc, p=1.0)

    @property
    def files(self) -> list[str]:
        return self._bank.files

    def randomize_parameters(self, wave, sr, rng):
        params: dict[str, Any] = {"file": self.files[int(rng.integers(len(self.files)))]}
        if self._drc is not None:
            params["drc"] = self._drc.randomize_parameters(wave, sr, rng)
        return params

    def check_variants(self, n_variants):
        if not self.each:
            return
        if n_variants is None:
            raise ValueError("each: true picks IR k for offline copy k (audioclf augment); on the fly there are "
                             "no numbered copies: drop each")
        if n_variants != len(self.files):
            raise ValueError(f"each: {len(self.files)} impulse responses in {self.ir_dir}, so make "
                             f"{len(self.files)} variants (one per IR), not {n_variants}")

    def variant_parameters(self, params, variant):
        if not self.each:
            return params
        if variant is None or not 1 <= int(variant) <= len(self.files):
            raise ConfigError(f"impulse_response each: copy {variant} has no IR of its own ({len(self.files)} IRs; "
                              "each needs numbered offline copies, one per IR)")
        # randomize_parameters still drew a file, so the DRC settings come from the same stream as a random pick's
        return {**params, "file": self.files[int(variant) - 1]}

    def apply(self, wave, sr, params):
        out = _convolve_same(wave, self._bank.get(params["file"], sr), self.align)
        if self._drc is not None and "drc" in params:
            out = self._drc.apply(out, sr, params["drc"])
        return out


def _dims(name: str, value: Any) -> list[float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f"{name}: expected [length, width, height] in metres, got {value!r}")
    dims = [_number(name, v) for v in value]
    if min(dims) < 1.0:
        raise ValueError(f"{name}: expected every dimension >= 1 m, got {value!r}")
    return dims


@register_augmentation("room_reverb")
class RoomReverb(WaveformTransform):
    """Convolve with a simulated room impulse response: unseen rooms with no IR files to ship; ours.

    Each of ``n_rooms`` shoebox rooms is drawn once from ``default_rng([room_seed, i])``: dimensions uniform
    per axis between ``min_room_dims`` and ``max_room_dims`` (metres), an RT60 uniform in ``[min_rt60,
    max_rt60]`` s, and source and microphone uniform inside the room (at least 0.5 m from the walls). Its IR is
    computed with pyroomacoustics' image-source method (Allen & Berkley 1979), the wall absorption and image
    order from the RT60 by pyroomacoustics' ``inverse_sabine``, at the clip's sample rate, once per rate and
    kept: all rooms are simulated when the chain is bound to the training set (~6 s for the default 32 rooms
    at 8 or 16 kHz, 0.01-0.8 s each), or lazily on first use; a cached item costs one FFT convolution (~0.6 ms
    for 1 s at 8 kHz, ~1.1 ms at 16 kHz). Each item picks one room. Sabine's formula is approximate:
    Schroeder T20 of the generated IRs is ~0.8-1.3x the RT60 asked. Length, alignment at the IR's main peak
    (the direct path) and RMS are kept as in impulse_response. Params: ``{"room"}`` (an index; :meth:`room`
    gives its geometry).
    """

    def __init__(self, min_rt60: float = 0.2, max_rt60: float = 0.8, min_room_dims: Sequence[float] = (3.0, 3.0, 2.5),
                 max_room_dims: Sequence[float] = (10.0, 8.0, 4.0), n_rooms: int = 32, room_seed: int = 0,
                 p: float = 0.5):
        super().__init__(p)
        self.min_rt60, self.max_rt60 = _range("min_rt60", min_rt60, "max_rt60", max_rt60, lower=0.05, upper=3.0)
        self.min_room_dims, self.max_room_dims = _dims("min_room_dims", min_room_dims), _dims("max_room_dims",
                                                                                                max_room_dims)
        for axis, (lo, hi) in enumerate(zip(self.min_room_dims, self.max_room_dims)):
            if lo > hi:
                raise ValueError(f"min_room_dims: expected <= max_room_dims on every axis, got {lo} > {hi} "
                                 f"(axis {axis})")
        for name, value, low in (("n_rooms", n_rooms, 1), ("room_seed", room_seed, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        self.n_rooms, self.room_seed = int(n_rooms), int(room_seed)
        pra = _import_extra("pyroomacoustics", "room_reverb needs")  # at build time, not in a DataLoader worker
        try:  # the hardest case: the shortest RT60 in the largest room needs the most absorption
            pra.inverse_sabine(self.min_rt60, self.max_room_dims)
        except ValueError:
            raise ValueError(f"min_rt60: {self.min_rt60} s is too short for a room of max_room_dims "
                             f"{self.max_room_dims} (wall absorption would exceed 1)") from None
        self._bank = _AudioBank(list(range(self.n_rooms)), self._room_ir)

    def room(self, index: int) -> dict[str, Any]:
        """Room ``index``'s geometry: ``{"dims", "rt60", "source", "mic"}`` (metres, seconds)."""
        rng = np.random.default_rng([self.room_seed, int(index)])
        dims = rng.uniform(self.min_room_dims, self.max_room_dims)
        rt60 = float(rng.uniform(self.min_rt60, self.max_rt60))
        margin = np.minimum(0.5, dims / 4.0)
        source, mic = (rng.uniform(margin, dims - margin) for _ in range(2))
        return {"dims": dims.tolist(), "rt60": rt60, "source": source.tolist(), "mic": mic.tolist()}

    def _room_ir(self, index: int, sr: int) -> np.ndarray:
        pra = _import_extra("pyroomacoustics", "room_reverb needs")
        room = self.room(index)
        absorption, max_order = pra.inverse_sabine(room["rt60"], room["dims"])
        shoebox = pra.ShoeBox(room["dims"], fs=sr, materials=pra.Material(absorption), max_order=max_order)
        shoebox.add_source(room["source"])
        shoebox.add_microphone(room["mic"])
        shoebox.compute_rir()
        return np.asarray(shoebox.rir[0][0], dtype=np.float32)

    def bind(self, waves, sample_rate):
        for index in range(self.n_rooms):  # ~6 s for the default 32 rooms, once per run
            self._bank.get(index, sample_rate)

    def randomize_parameters(self, wave, sr, rng):
        return {"room": int(rng.integers(self.n_rooms))}

    def apply(self, wave, sr, params):
        return _convolve_same(wave, self._bank.get(int(params["room"]), sr), "peak")


_DIGITAL_SILENCE = 1e-10  # mean square below -100 dBFS: padding or muted input, not a room's background


def quiet_snippets(waves: Sequence[np.ndarray], sr: int, quiet_fraction: float, frame_ms: float) -> list[np.ndarray]:
    """Per clip, its frames among the quietest ``quiet_fraction`` of all ``frame_ms`` frames of ``waves``,
    concatenated in order (clips without such a frame give none).

    The threshold is one quantile over the whole set, not per clip: a loud clip contributes nothing, a quiet
    recording much. Frames of digital silence are left out (they would mix in nothing). Raises ConfigError
    when no clip has a frame above digital silence.
    """
    hop = max(1, int(round(frame_ms * sr / 1000.0)))
    powers = []
    for wave in waves:
        n_frames = len(wave) // hop  # a last, partial frame is dropped
        frames = np.asarray(wave[: n_frames * hop], dtype=np.float64).reshape(n_frames, hop)
        powers.append(np.mean(np.square(frames), axis=1))
    heard = np.concatenate(powers) if powers else np.zeros(0)
    heard = heard[heard > _DIGITAL_SILENCE]
    if not len(heard):
        raise ConfigError(f"own_background: no {frame_ms:g} ms frame above digital silence in the {len(waves)} "
                          "training clips (clips shorter than a frame, or silent): lower frame_ms or drop it")
    threshold = np.quantile(heard, quiet_fraction)
    snippets = []
    for wave, power in zip(waves, powers):
        quiet = np.flatnonzero((power > _DIGITAL_SILENCE) & (power <= threshold))
        if len(quiet):
            frames = np.asarray(wave[: len(power) * hop], dtype=np.float32).reshape(len(power), hop)
            snippets.append(frames[quiet].reshape(-1))
    return snippets


@register_augmentation("own_background")
class OwnBackground(WaveformTransform):
    """Mix in the training set's own background: its quietest frames, at an SNR uniform in ``[min_snr_db,
    max_snr_db]``; ours.

    The room tone, hum and hiss of the training recordings, cut from their quietest ``quiet_fraction`` of
    ``frame_ms`` frames (:func:`quiet_snippets`), are mixed into other training clips, so a model learns
    that the background is not the class: the keyword-spotting practice of mixing in background segments
    (Ko et al. 2017), with no noise files to supply. Needs the training clips: :meth:`Compose.bind` hands
    them over (AudioInputs.dataset does, with the training split only); unbound, it raises ConfigError.
    A clip may draw its own snippet (1 in the number of snippets); frames are joined without crossfade.
    Params: ``{"snippet", "offset", "snr_db"}`` as background_noise's file, offset and SNR.
    """

    needs_training_set = True

    def __init__(self, min_snr_db: float = 5.0, max_snr_db: float = 30.0, quiet_fraction: float = 0.1,
                 frame_ms: float = 100.0, p: float = 0.5):
        super().__init__(p)
        self.min_snr_db, self.max_snr_db = _range("min_snr_db", min_snr_db, "max_snr_db", max_snr_db)
        self.quiet_fraction = _number("quiet_fraction", quiet_fraction)
        if not 0.0 < self.quiet_fraction <= 1.0:
            raise ValueError(f"quiet_fraction: expected a fraction in (0, 1], got {quiet_fraction}")
        self.frame_ms = _number("frame_ms", frame_ms)
        if self.frame_ms <= 0:
            raise ValueError(f"frame_ms: expected > 0, got {frame_ms}")
        self.snippets: list[np.ndarray] | None = None
        self.sample_rate: int | None = None

    def bind(self, waves, sample_rate):
        self.snippets = quiet_snippets(waves, int(sample_rate), self.quiet_fraction, self.frame_ms)
        self.sample_rate = int(sample_rate)

    def _snippets_at(self, sr: int) -> list[np.ndarray]:
        if self.snippets is None:
            raise ConfigError("own_background: no training set bound (Compose.bind(waves, sample_rate) comes "
                              "first); it works only when training on audio files")
        if sr != self.sample_rate:
            raise ValueError(f"sr: own_background was bound at {self.sample_rate} Hz, got {sr}")
        return self.snippets

    def randomize_parameters(self, wave, sr, rng):
        snippets = self._snippets_at(sr)
        index = int(rng.integers(len(snippets)))
        return {"snippet": index, "offset": _draw_offset(len(snippets[index]), len(wave), rng),
                "snr_db": float(rng.uniform(self.min_snr_db, self.max_snr_db))}

    def apply(self, wave, sr, params):
        return _mix_noise(wave, self._snippets_at(sr)[int(params["snippet"])], params["offset"], params["snr_db"])
