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
transform rescales to peak 0.5), so we implement them. time_stretch and pitch_shift wrap audiomentations
(its default Signalsmith Stretch backend, ~10 ms per 3-s clip), imported lazily: the ``augment`` extra.

Build a chain from config with :func:`build_waveform_augment`::

    augment = build_waveform_augment([{"name": "gain", "p": 0.5, "min_gain_db": -6, "max_gain_db": 6},
                                      {"name": "gaussian_noise", "min_snr_db": 10, "max_snr_db": 40}])
    wave = augment(wave, sr, np.random.default_rng([seed, epoch, index]))
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import inspect
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy.signal import fftconvolve, lfilter

from ..data.audio import load_audio, resample
from ..errors import AudioclfError, ConfigError
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


class _AudioBank:
    """Mono float32 files decoded once per sample rate (noise or impulse responses), thread-safe."""

    def __init__(self, files: list[str]):
        self.files = files
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, path: str, sr: int) -> np.ndarray:
        key = (path, int(sr))
        wave = self._cache.get(key)
        if wave is None:
            wave, _ = load_audio(path, sample_rate=int(sr), mono=True)  # AudioDecodeError names the file
            with self._lock:
                self._cache[key] = wave
        return wave

    def __getstate__(self) -> dict[str, Any]:
        # Locks cannot be pickled (spawned DataLoader workers); the cache is rebuilt lazily there.
        return {"files": self.files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["files"])


# --- base class and Compose ---------------------------------------------------------------------
class WaveformTransform(ABC):
    """Base class: subclasses implement ``randomize_parameters`` and ``apply``; see the module docstring."""

    name: ClassVar[str] = ""

    def __init__(self, p: float = 0.5):
        self.p = _probability(p)

    def randomize_parameters(self, wave: np.ndarray, sr: int, rng: np.random.Generator) -> dict[str, Any]:
        """Draw this transform's parameters for ``wave`` (called only when it applies)."""
        return {}

    @abstractmethod
    def apply(self, wave: np.ndarray, sr: int, params: Mapping[str, Any]) -> np.ndarray:
        """Deterministic: transform ``wave`` with ``params``; returns a new float32 array, same length."""

    def call_with_params(self, wave: np.ndarray, sr: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any] | None]:
        """Like ``__call__`` but also returns the drawn parameters (None when the transform was skipped)."""
        wave = _check_call(wave, sr, rng)
        if not rng.random() < self.p:
            return wave, None
        params = self.randomize_parameters(wave, int(sr), rng)
        return np.asarray(self.apply(wave, int(sr), params), dtype=np.float32), params

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

    def call_with_params(self, wave: np.ndarray, sr: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The augmented wave and one record ``{"index", "name", "params"}`` per transform that applied."""
        wave = _check_call(wave, sr, rng)
        records: list[dict[str, Any]] = []
        for index, transform in enumerate(self.transforms):
            wave, params = transform.call_with_params(wave, sr, rng)
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
        length = len(self._bank.get(file, sr))
        span = length - len(wave) + 1 if length >= len(wave) else length  # tiled noise may start anywhere
        return {"file": file, "offset": int(rng.integers(span)), "snr_db": float(rng.uniform(self.min_snr_db,
                                                                                            self.max_snr_db))}

    def apply(self, wave, sr, params):
        noise = self._bank.get(params["file"], sr)
        # modular indexing = a window of a long noise, or the noise tiled when it is shorter than the clip
        segment = noise[(params["offset"] + np.arange(len(wave))) % len(noise)]
        return _scale_to_snr(wave, segment, params["snr_db"])


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


def _audiomentations():
    try:
        import audiomentations
    except ImportError:  # pragma: no cover - depends on the environment
        raise AudioclfError(
            "time_stretch/pitch_shift need audiomentations: pip install 'audioclf[augment]'") from None
    return audiomentations


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


@register_augmentation("impulse_response")
class ImpulseResponse(WaveformTransform):
    """Convolve with a random impulse response (device / microphone simulation, as for DCASE 2022 Task 1); ours.

    ``ir_dir``: a folder (recursive), a file or a list; files are decoded and resampled once per rate.
    Convolution is ``scipy.signal.fftconvolve``. Length is kept by reading ``n`` samples of the full
    convolution starting at the IR's main peak (``align="peak"``: the IR's leading delay does not shift the
    sound) or at 0 (``align="start"``). Level is kept: the output is rescaled to the input's RMS.
    ``drc``: optional arguments of :class:`DynamicRangeCompression` (``p`` excluded) applied after the
    convolution, as the DCASE device simulation does ("IR then device-specific DRC").
    Params: ``{"file"}`` plus ``{"drc": {...}}`` when ``drc`` is set.
    """

    def __init__(self, ir_dir: str | Sequence[str], align: str = "peak", drc: Mapping[str, Any] | None = None,
                 p: float = 0.5):
        super().__init__(p)
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

    def apply(self, wave, sr, params):
        ir = self._bank.get(params["file"], sr)
        # float32 FFTs: ~2x faster than float64, with errors far below 16-bit audio resolution
        full = fftconvolve(wave.astype(np.float32, copy=False), ir)
        start = int(np.argmax(np.abs(ir))) if self.align == "peak" else 0
        out = full[start : start + len(wave)]
        p_out = _power(out)
        if p_out > 0.0:
            out = out * np.float32(math.sqrt(_power(wave) / p_out))
        out = out.astype(np.float32, copy=False)
        if self._drc is not None and "drc" in params:
            out = self._drc.apply(out, sr, params["drc"])
        return out
