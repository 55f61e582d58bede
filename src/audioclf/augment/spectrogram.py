"""Batched spectrogram augmentation on the training device: SpecAugment and a mel-band shift/stretch.

Modules take ``(B, C, F, T)`` (or ``(B, F, T)``) feature images, are the identity in ``eval()`` mode, and
draw one set of random parameters *per example* with vectorised tensor ops (no loop over the batch).
Randomness comes from the module's optional ``torch.Generator`` (drawn on the generator's device, then
moved to the input's), else from the global torch RNG on the input's device. ``forward(x, apply_to=None)``
takes an optional ``(B,)`` bool mask: examples where it is False come back unchanged (the FSD2019 "augment a
duplicated half" mode, see :class:`audioclf.augment.batch.DuplicateAugmented`).

The pure functions (:func:`mask_along_axis`, :func:`time_warp`, :func:`shift_frequency_axis`) take the
random parameters as tensors, so they are testable exactly.

:class:`SpecAugment` ``fixed_per_item=True`` draws each example's warp and masks from a key made of its input
(the waveform the step passes as ``source``) and a seed instead: a clip that comes back unchanged each epoch
keeps one set of masks, as offline masked copies made once would (González Poy 2022, §4.2.3 / §5.3 (1)).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import did_you_mean

__all__ = [
    "POLICIES",
    "mask_along_axis",
    "time_warp",
    "shift_frequency_axis",
    "SpecAugment",
    "MelBandShift",
    "SpecAugmentChain",
    "build_spec_augment",
]

# Park et al. 2019, "SpecAugment", Table 1: W, F, m_F, T, p, m_T.
POLICIES: dict[str, dict[str, Any]] = {
    "LB": dict(time_warp=80, freq_width=27, freq_masks=1, time_width=100, time_width_ratio=1.0, time_masks=1),
    "LD": dict(time_warp=80, freq_width=27, freq_masks=2, time_width=100, time_width_ratio=1.0, time_masks=2),
    "SM": dict(time_warp=40, freq_width=15, freq_masks=2, time_width=70, time_width_ratio=0.2, time_masks=2),
    "SS": dict(time_warp=40, freq_width=27, freq_masks=2, time_width=70, time_width_ratio=0.2, time_masks=2),
}


# --- pure functions -----------------------------------------------------------------------------
def _check_image(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a (B, C, F, T) or (B, F, T) tensor, got {shape}")


def _per_example(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) to broadcast against an ``ndim`` tensor."""
    return values.reshape(values.shape[0], *([1] * (ndim - 1)))


def mask_along_axis(x: torch.Tensor, starts: torch.Tensor, widths: torch.Tensor, axis: int,
                    value: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Set bands ``[start, start + width)`` along ``axis`` (-2 = frequency, -1 = time) to ``value``.

    ``starts``/``widths``: ``(B, m)`` integer tensors, ``m`` bands per example (width 0 = no mask).
    ``value``: a float or a tensor broadcastable to ``x`` (e.g. per-example means ``(B, C, 1, 1)``).
    """
    _check_image(x)
    if axis not in (-2, -1):
        raise ValueError(f"axis: expected -2 (frequency) or -1 (time), got {axis}")
    size = x.shape[axis]
    positions = torch.arange(size, device=x.device)
    starts = starts.to(x.device).unsqueeze(-1)
    widths = widths.to(x.device).unsqueeze(-1)
    masked = ((positions >= starts) & (positions < starts + widths)).any(dim=1)  # (B, size)
    shape = [x.shape[0]] + [1] * (x.ndim - 1)
    shape[axis] = size
    value = value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=x.dtype, device=x.device)
    return torch.where(masked.reshape(shape), value.to(x.dtype), x)


def _interpolate_last(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``x`` along its last axis at fractional ``positions`` (B, L) per example."""
    size = x.shape[-1]
    positions = positions.clamp(0, size - 1)
    lo = positions.floor().long().clamp(max=size - 1)
    hi = (lo + 1).clamp(max=size - 1)
    frac = (positions - lo).to(x.dtype)
    expand = (*x.shape[:-1], positions.shape[-1])
    view = (x.shape[0],) + (1,) * (x.ndim - 2) + (positions.shape[-1],)
    x_lo = torch.gather(x, -1, lo.reshape(view).expand(expand))
    x_hi = torch.gather(x, -1, hi.reshape(view).expand(expand))
    frac = frac.reshape(view)
    return x_lo + (x_hi - x_lo) * frac


def time_warp(x: torch.Tensor, centers: torch.Tensor, warps: torch.Tensor) -> torch.Tensor:
    """Move frame ``center`` to ``center + warp`` per example, stretching both sides linearly.

    The map from output frame ``t`` to source frame is piecewise linear with knots ``(0, 0)``,
    ``(center + warp, center)`` and ``(T-1, T-1)``; values are linearly interpolated (Park et al.'s
    warp of a point along the time axis, done with interpolation instead of TF's ``sparse_image_warp``).
    ``centers``/``warps``: ``(B,)``; the shape of ``x`` is kept. Needs ``0 < center, center + warp < T-1``
    (values outside are clamped).
    """
    _check_image(x)
    size = x.shape[-1]
    if size < 3:
        return x
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    last = float(size - 1)
    c = centers.to(device=x.device, dtype=dtype).clamp(1.0, last - 1.0).unsqueeze(-1)
    d = (centers.to(device=x.device, dtype=dtype) + warps.to(device=x.device, dtype=dtype))
    d = d.clamp(1.0, last - 1.0).unsqueeze(-1)
    t = torch.arange(size, device=x.device, dtype=dtype).unsqueeze(0)
    source = torch.where(t <= d, t * c / d, c + (t - d) * (last - c) / (last - d))
    return _interpolate_last(x, source)


def shift_frequency_axis(x: torch.Tensor, shifts: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Resample the frequency axis: output bin ``f`` reads source bin ``m + (f - m) * scale + shift``.

    ``m = (F - 1) / 2`` is the centre bin; positions outside ``[0, F-1]`` take the edge bin; values are
    linearly interpolated. ``shifts``/``scales``: ``(B,)``. A positive shift moves content to lower bins.
    """
    _check_image(x)
    size = x.shape[-2]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    mid = (size - 1) / 2.0
    f = torch.arange(size, device=x.device, dtype=dtype).unsqueeze(0)
    shifts = shifts.to(device=x.device, dtype=dtype).unsqueeze(-1)
    scales = scales.to(device=x.device, dtype=dtype).unsqueeze(-1)
    source = mid + (f - mid) * scales + shifts
    return _interpolate_last(x.transpose(-1, -2), source).transpose(-1, -2)


# --- random draws -------------------------------------------------------------------------------
def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U[0, 1) of ``shape`` on ``device``, drawn from ``generator`` (on its own device) or the global RNG."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def keyed_uniforms(source: torch.Tensor, n: int, seed: int, device: torch.device) -> torch.Tensor:
    """``(n, B)`` U[0, 1) draws on ``device``, each example's column a function of its own values in ``source``
    (``(B, ...)``, bit for bit) and ``seed`` alone: the same input gives the same draws in any batch, epoch or
    position. The key is a BLAKE2b digest of the example's float32 bytes (on the CPU: exact, whatever the device)."""
    rows = source.detach().reshape(source.shape[0], -1).float().cpu().numpy()
    out = torch.empty((rows.shape[0], n))
    for i, row in enumerate(rows):
        digest = hashlib.blake2b(row.tobytes(), digest_size=8, key=int(seed).to_bytes(8, "little", signed=True))
        out[i] = torch.rand(n, generator=torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little")
                                                                        >> 1))
    return out.t().contiguous().to(device)


def _random_bands(batch: int, count: int, max_width: int, size: int, generator: torch.Generator | None,
                  device: torch.device, u: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example ``count`` bands: width uniform in ``[0, max_width]``, start uniform in ``[0, size - width]``
    (``u``: the ``(2, B, count)`` uniforms to use, else drawn from ``generator``)."""
    u = _uniform((2, batch, count), generator, device) if u is None else u
    widths = (u[0] * (max_width + 1)).floor().long().clamp(max=max_width)
    starts = (u[1] * (size - widths + 1)).floor().long()
    starts = torch.minimum(starts, size - widths)
    return starts, widths


def _select(augmented: torch.Tensor, x: torch.Tensor, apply_to: torch.Tensor | None) -> torch.Tensor:
    if apply_to is None:
        return augmented
    apply_to = torch.as_tensor(apply_to, device=x.device).bool().reshape(-1)
    if apply_to.shape[0] != x.shape[0]:
        raise ValueError(f"apply_to: expected {x.shape[0]} flags (one per example), got {apply_to.shape[0]}")
    return torch.where(_per_example(apply_to, x.ndim), augmented, x)


def _nonneg_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
    return value


# --- modules ------------------------------------------------------------------------------------
class SpecAugment(nn.Module):
    """Time warp, frequency masks and time masks (Park et al. 2019), per example, batched.

    * time warp: a centre frame ``c`` uniform in ``[W'+1, T-2-W']`` moves by ``w`` uniform in ``[-W', W']``
      with ``W' = min(time_warp, (T-3) // 2)`` (the paper's ``W``, clamped to fit short clips);
    * ``freq_masks`` masks of width uniform in ``[0, min(freq_width, F)]``, start uniform over valid starts;
    * ``time_masks`` masks of width uniform in ``[0, min(time_width, floor(time_width_ratio * T))]``
      (the paper's upper bound ``p`` on the masked fraction of frames).

    ``mask_value``: ``"mean"`` fills with each example's (and channel's) mean (right for un-normalised
    log-mels, where 0 dB is not "nothing"), or a number (0.0 for standardised features, as in the paper).
    ``fixed_per_item``: draw each example's parameters from :func:`keyed_uniforms` of its ``source`` (``forward``'s
    argument; ``x`` itself when None) and ``seed``, not from ``generator``: one mask per clip for the whole run
    (the default, False, draws new masks every time, as Park et al. do).
    """

    def __init__(self, time_warp: int = 0, freq_masks: int = 2, freq_width: int = 27, time_masks: int = 2,
                 time_width: int = 100, time_width_ratio: float = 1.0, mask_value: float | str = "mean",
                 fixed_per_item: bool = False, seed: int = 0, generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(fixed_per_item, bool):
            raise ValueError(f"fixed_per_item: expected true or false, got {fixed_per_item!r}")
        self.fixed_per_item = fixed_per_item
        self.seed = _nonneg_int("seed", seed)
        self.time_warp = _nonneg_int("time_warp", time_warp)
        self.freq_masks = _nonneg_int("freq_masks", freq_masks)
        self.freq_width = _nonneg_int("freq_width", freq_width)
        self.time_masks = _nonneg_int("time_masks", time_masks)
        self.time_width = _nonneg_int("time_width", time_width)
        if isinstance(time_width_ratio, bool) or not isinstance(time_width_ratio, (int, float)) \
                or not 0.0 <= time_width_ratio <= 1.0:
            raise ValueError(f"time_width_ratio: expected a number in [0, 1], got {time_width_ratio!r}")
        self.time_width_ratio = float(time_width_ratio)
        if not (mask_value == "mean" or (isinstance(mask_value, (int, float)) and not isinstance(mask_value, bool)
                                         and math.isfinite(mask_value))):
            raise ValueError(f"mask_value: expected 'mean' or a finite number, got {mask_value!r}")
        self.mask_value = mask_value if mask_value == "mean" else float(mask_value)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
        self.generator = generator

    @classmethod
    def from_policy(cls, policy: str, **overrides: Any) -> SpecAugment:
        """One of Park et al.'s policies ``"LB"``, ``"LD"``, ``"SM"``, ``"SS"``, with optional overrides."""
        if policy not in POLICIES:
            raise ValueError(f"policy: expected one of {', '.join(POLICIES)}, got {policy!r}")
        return cls(**{**POLICIES[policy], **overrides})

    def extra_repr(self) -> str:
        return (f"time_warp={self.time_warp}, freq_masks={self.freq_masks}, freq_width={self.freq_width}, "
                f"time_masks={self.time_masks}, time_width={self.time_width}, "
                f"time_width_ratio={self.time_width_ratio}, mask_value={self.mask_value!r}"
                + (f", fixed_per_item=True, seed={self.seed}" if self.fixed_per_item else ""))

    def max_widths(self, n_freq: int, n_time: int) -> tuple[int, int, int]:
        """``(W', F', T')``: warp distance and mask widths after clamping to an ``n_freq x n_time`` image."""
        warp = max(0, min(self.time_warp, (n_time - 3) // 2))
        freq = min(self.freq_width, n_freq)
        time = min(self.time_width, int(math.floor(self.time_width_ratio * n_time)), n_time)
        return warp, freq, time

    def forward(self, x: torch.Tensor, apply_to: torch.Tensor | None = None,
                source: torch.Tensor | None = None) -> torch.Tensor:
        """``source``: the ``(B, ...)`` inputs ``x`` was computed from (the waveforms), which ``fixed_per_item``
        keys each example's masks on (``x`` itself when None)."""
        _check_image(x)
        if not self.training or x.shape[0] == 0:
            return x
        batch, n_freq, n_time = x.shape[0], x.shape[-2], x.shape[-1]
        warp, freq, time = self.max_widths(n_freq, n_time)
        keyed = None
        if self.fixed_per_item:  # every draw of this call comes from the example's key: 2 warp + 2 per mask
            keyed = keyed_uniforms(x if source is None else source, 2 + 2 * (self.freq_masks + self.time_masks),
                                   self.seed, x.device)

        def take(start: int, count: int) -> torch.Tensor:  # (2, B, count) of the keyed draws, as _random_bands takes
            return keyed[start:start + 2 * count].reshape(2, count, batch).transpose(1, 2)

        out = x
        if warp > 0:
            u = _uniform((2, batch), self.generator, x.device) if keyed is None else keyed[:2]
            centers = (warp + 1 + (u[0] * (n_time - 2 - 2 * warp)).floor()).clamp(max=n_time - 2 - warp)
            out = time_warp(out, centers, (2.0 * u[1] - 1.0) * warp)
        value = out.mean(dim=(-2, -1), keepdim=True) if self.mask_value == "mean" else self.mask_value
        if self.freq_masks and freq > 0:
            u = None if keyed is None else take(2, self.freq_masks)
            starts, widths = _random_bands(batch, self.freq_masks, freq, n_freq, self.generator, x.device, u)
            out = mask_along_axis(out, starts, widths, -2, value)
        if self.time_masks and time > 0:
            u = None if keyed is None else take(2 + 2 * self.freq_masks, self.time_masks)
            starts, widths = _random_bands(batch, self.time_masks, time, n_time, self.generator, x.device, u)
            out = mask_along_axis(out, starts, widths, -1, value)
        return _select(out, x, apply_to)


class MelBandShift(nn.Module):
    """Random small shift and stretch of the mel (frequency) axis per example: fmin/fmax jitter.

    Mel bins are evenly spaced in mel between ``mel(fmin)`` and ``mel(fmax)``, so computing the filterbank
    with jittered ``fmin``/``fmax`` moves bin ``k`` to an *affine* function of ``k`` on the original mel
    axis. We apply that affine map to the image instead of rebuilding the front-end per example: a shift
    uniform in ``[-max_shift, max_shift]`` bins and a stretch factor uniform in
    ``[1 - max_stretch, 1 + max_stretch]`` about the centre bin (:func:`shift_frequency_axis`; edge bins
    repeat where the map leaves the image). Filter widths are not re-derived: a good approximation for the
    few-bin jitter this is meant for. Each example is transformed with probability ``p``.
    """

    def __init__(self, max_shift: float = 2.0, max_stretch: float = 0.05, p: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        for name, value in (("max_shift", max_shift), ("max_stretch", max_stretch), ("p", p)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        if max_stretch >= 1.0:
            raise ValueError(f"max_stretch: expected < 1 (a factor in (0, 2)), got {max_stretch}")
        if p > 1.0:
            raise ValueError(f"p: expected a probability in [0, 1], got {p}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
        self.max_shift, self.max_stretch, self.p = float(max_shift), float(max_stretch), float(p)
        self.generator = generator

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift}, max_stretch={self.max_stretch}, p={self.p}"

    def forward(self, x: torch.Tensor, apply_to: torch.Tensor | None = None,
                source: torch.Tensor | None = None) -> torch.Tensor:
        _check_image(x)
        if not self.training or x.shape[0] == 0:
            return x
        u = _uniform((3, x.shape[0]), self.generator, x.device)
        active = (u[2] < self.p).to(u.dtype)
        shifts = (2.0 * u[0] - 1.0) * self.max_shift * active
        scales = 1.0 + (2.0 * u[1] - 1.0) * self.max_stretch * active
        return _select(shift_frequency_axis(x, shifts, scales), x, apply_to)


class SpecAugmentChain(nn.ModuleList):
    """Spectrogram augmentations in order, passing ``apply_to`` to each."""

    def forward(self, x: torch.Tensor, apply_to: torch.Tensor | None = None,
                source: torch.Tensor | None = None) -> torch.Tensor:
        for module in self:
            x = module(x, apply_to=apply_to, source=source)
        return x


_SPEC_ARGS = ["policy", "time_warp", "freq_masks", "freq_width", "time_masks", "time_width", "time_width_ratio",
              "mask_value", "fixed_per_item", "band_shift"]
_BAND_ARGS = ["max_shift", "max_stretch", "p"]


def build_spec_augment(spec: Mapping[str, Any] | str | None, generator: torch.Generator | None = None,
                       seed: int = 0) -> nn.Module | None:
    """A spectrogram augmentation module from config, or None.

    ``spec``: None / ``"none"`` (no augmentation), a policy name (``"LD"``), or a mapping with an
    optional ``policy`` plus :class:`SpecAugment` arguments overriding it (``{"policy": "LD",
    "mask_value": 0.0}``; without ``policy`` the class defaults apply), and optionally ``band_shift``:
    ``true`` or :class:`MelBandShift` arguments, which appends a mel-band shift (a
    :class:`SpecAugmentChain` is returned then). ``seed`` (the run's) salts ``fixed_per_item``'s keys. Unknown
    keys/values raise :class:`ConfigError`.
    """
    if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
        return None
    if isinstance(spec, str):
        spec = {"policy": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"spec_augment: expected a policy name or a mapping, got {type(spec).__name__}")
    for key in spec:
        if key not in _SPEC_ARGS:
            raise ConfigError(f"spec_augment: unknown key '{key}'{did_you_mean(str(key), _SPEC_ARGS)}")
    args = {k: v for k, v in spec.items() if k not in ("policy", "band_shift")}
    policy = spec.get("policy")
    if policy is not None and policy not in POLICIES:
        raise ConfigError(f"spec_augment.policy: unknown policy '{policy}'{did_you_mean(str(policy), list(POLICIES))}")
    try:
        module: nn.Module = SpecAugment(**{**(POLICIES[policy] if policy else {}), **args}, seed=seed,
                                        generator=generator)
    except ValueError as exc:
        raise ConfigError(f"spec_augment: {exc}") from None
    band = spec.get("band_shift")
    if band is None or band is False:
        return module
    band_args = {} if band is True else band
    if not isinstance(band_args, Mapping):
        raise ConfigError(f"spec_augment.band_shift: expected true or a mapping, got {band!r}")
    for key in band_args:
        if key not in _BAND_ARGS:
            raise ConfigError(f"spec_augment.band_shift: unknown key '{key}'{did_you_mean(str(key), _BAND_ARGS)}")
    try:
        shift = MelBandShift(**band_args, generator=generator)
    except ValueError as exc:
        raise ConfigError(f"spec_augment.band_shift: {exc}") from None
    return SpecAugmentChain([module, shift])
