"""ONNX export of a trained run, optionally with the log-mel front-end inside the graph.

``export_onnx(run_dir)`` writes ``model.features.onnx`` whose input is the front-end's output (B, 1, F, T), i.e.
the log-mel image a device computes itself; the per-band standardisation and the backbone are inside.
``with_frontend=True`` puts the front-end in the graph too (input: waveform (B, N)), so a single file
goes from samples to logits: ``model.wave.onnx`` (also the name for models that take waveforms anyway).

``torch.stft`` does not export to plain ONNX operators (the legacy exporter
has no symbolic for it and ONNX's own STFT op is not in every runtime, nor fast for sizes that are not powers
of two), so the exported front-end frames the signal and computes the DFT in two small stages
(:class:`TwoStageDFT`: Cooley & Tukey's factorisation n_fft = n1 x n2 for real frames, in two MatMuls), giving
|X|^2, then the mel matmul and dB (:class:`ExportableFrontEnd`; equal to :class:`audioclf.features.FrontEnd`, see
tests/test_export.py). At DCASE 2022's 40-ms window (n_fft 1764 = 36 x 49) that is about 0.24 M multiply-adds
per frame instead of 3.1 M for one DFT matrix: ~0.6 ms per 1-s clip on one thread (benchmarks/inference.py). An
n_fft without a factor of at least 4 (e.g. twice a prime) keeps one DFT matrix in a strided convolution.

Everything needed to use the file travels in its ``metadata_props`` (see :func:`model_metadata`), which is
what :class:`audioclf.deploy.onnx_predictor.OnnxPredictor` reads. The export is verified with ONNX Runtime against
PyTorch on a seeded input: ``max |logit_onnx - logit_torch| <= atol + rtol * |logit_torch|`` with
``atol, rtol = 1e-4, 1e-3`` for feature inputs and ``5e-4, 5e-3`` when the float32 DFT front-end is inside
(measured: ~1e-7 on logits either way; the front-end alone is within ~2e-5 dB of ``FrontEnd``).

Needs the ``deploy`` extra: ``pip install 'audioclf[deploy]'`` (onnx, onnxruntime).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..calibration import Decisions, read_decisions
from ..errors import AudioclfError, ConfigError
from ..features import FeatureConfig, dct_matrix, mel_filterbank, n_frames, pcen, utterance_normalize
from ..files import atomic_write_bytes
from ..runs import RunDir, load_model
from ..runs.directory import check_model_facts
from ..training.members import read_members

log = logging.getLogger(__name__)

__all__ = [
    "MIN_OPSET",
    "ExportableFrontEnd",
    "ExportGraph",
    "model_metadata",
    "export_classifier",
    "graph_to_onnx_bytes",
    "frontend_to_onnx_bytes",
    "export_onnx",
    "read_metadata",
    "verify_onnx",
    "import_onnx",
    "import_onnxruntime",
]

MIN_OPSET = 17
FORMAT_VERSION = "1"
TOLERANCES = {"features": (1e-4, 1e-3), "frontend": (5e-4, 5e-3)}  # (atol, rtol) on logits
_ONNX_PAD = {"constant": "constant", "reflect": "reflect", "replicate": "replicate"}


# --- optional dependencies ----------------------------------------------------------------------
def import_onnx():
    try:
        import onnx
    except ImportError:
        raise AudioclfError("ONNX export needs the onnx package: pip install 'audioclf[deploy]'") from None
    return onnx


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise AudioclfError("ONNX inference needs onnxruntime: pip install 'audioclf[deploy]'") from None
    return onnxruntime


# --- the export-friendly front-end --------------------------------------------------------------
def dft_kernels(n_fft: int, win_length: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(2 K, 1, n_fft) Conv1d weights, K = n_fft // 2 + 1: rows ``w[n] cos(2 pi k n / N)`` then ``-w[n] sin(...)``.

    ``w`` is the periodic Hann window of ``win_length`` zero-padded (centred) to ``n_fft``, as in
    :class:`audioclf.features.Spectrogram`; built in float64, cast at the end.
    """
    win_length = n_fft if win_length is None else win_length
    window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
    left = (n_fft - win_length) // 2
    window = nn.functional.pad(window, (left, n_fft - win_length - left))
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    n = torch.arange(n_fft, dtype=torch.float64)[None, :]
    # k * n mod N keeps the angle small, so cos/sin stay exact for large n_fft
    angle = 2.0 * math.pi * torch.remainder(k * n, n_fft) / n_fft
    basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
    return basis.unsqueeze(1).to(dtype)


def _factor(n: int) -> tuple[int, int] | None:
    """``n = n1 * n2`` with ``n1`` the divisor closest to sqrt(n), when both are at least 4 (else None: the
    two-stage DFT would save nothing over one matrix)."""
    n1 = max((d for d in range(2, math.isqrt(n) + 1) if n % d == 0), default=1)
    return (n1, n // n1) if n1 >= 4 else None


class TwoStageDFT(nn.Module):
    """The power ``|X[k]|^2`` of the first ``n_bins`` bins of an ``n``-point DFT of real frames, as two small DFTs
    (Cooley & Tukey 1965, ``n = n1 * n2``; sample ``n1_index * n2 + n2_index`` of a frame):

    1. a DFT over n1 for each n2. The frames are real, so bins k1 and n1 - k1 are conjugate and n1 real rows
       hold it all (Re k1 = 0..n1 // 2, Im k1 = 1..(n1 - 1) // 2): one (n1 x n1) MatMul over every frame at once;
    2. for each k1, the bins ``k1 + n1 k2`` (the k2 that reach ``n_bins``) from the rows of k1's conjugate pair:
       one real matrix per k1 that holds the twiddle factors, the DFT over n2 and the conjugation for
       k1 > n1 // 2 (a batched MatMul), then Re^2 + Im^2 and the bins put in order.

    About ``n (n1 + 2 n2)`` multiply-adds per frame, 13x fewer than one DFT matrix at n = 1764 (DCASE 2022's 40-ms
    window at 44.1 kHz) and half of a complex-input first stage; in MatMul, Gather and Mul only, in few large
    nodes: each ONNX node costs time of its own on a CPU at these sizes (benchmarks/inference.py).
    """

    def __init__(self, n: int, n_bins: int, n1: int, n2: int, dtype: torch.dtype):
        super().__init__()
        self.n1, self.n2, self.n_bins = n1, n2, n_bins
        self.k2_count = k2_count = -(-n_bins // n1)  # the k2 values whose bins k1 + n1 k2 reach n_bins
        f64, half, n_imag = torch.float64, n1 // 2, (n1 - 1) // 2

        def angle(a, b, size):  # 2 pi (a b mod size) / size, in float64: exact for large sizes
            return 2.0 * math.pi * torch.remainder(a * b, size) / size

        j1 = torch.arange(n1, dtype=f64)[None]
        re_k, im_k = torch.arange(half + 1, dtype=f64)[:, None], torch.arange(1, n_imag + 1, dtype=f64)[:, None]
        stage1 = torch.cat([torch.cos(angle(re_k, j1, n1)), -torch.sin(angle(im_k, j1, n1))])  # (n1, n1)
        # Stage 2, for k1: bins k = k1 + n1 k2 of sum_j2 exp(-2 pi i j2 k / n) A[k1, j2] (twiddle and DFT over n2
        # in one), with A[k1] = conj(A[n1 - k1]) above n1 // 2; as a real matrix on [Re A[src]; Im A[src]].
        rows, stage2 = [], torch.zeros(n1, 2 * k2_count, 2 * n2, dtype=f64)
        j2 = torch.arange(n2, dtype=f64)[None]
        for k1 in range(n1):
            src, sign = (k1, 1.0) if k1 <= half else (n1 - k1, -1.0)
            has_imag = 1 <= src <= n_imag  # Im A is 0 at k1 = 0 (and n1 / 2): any row, multiplied by 0
            rows += [src, half + src if has_imag else src]
            bins = (k1 + n1 * torch.arange(k2_count, dtype=f64))[:, None]
            cos, sin = torch.cos(angle(bins, j2, n)), -torch.sin(angle(bins, j2, n))
            s = sign if has_imag else 0.0
            stage2[k1] = torch.cat([torch.cat([cos, -s * sin], 1), torch.cat([sin, s * cos], 1)])
        k = torch.arange(n_bins)
        self.register_buffer("stage1", stage1.to(dtype), persistent=False)
        self.register_buffer("rows", torch.tensor(rows), persistent=False)  # (2 n1,): [Re, Im] row per k1
        self.register_buffer("stage2", stage2.to(dtype), persistent=False)  # (n1, 2 k2_count, 2 n2)
        self.register_buffer("order", (k % n1) * k2_count + k // n1, persistent=False)  # bin k in (k1, k2) order

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(F, n) real frames -> power (n_bins, F): frames last, so each stage is one (batched) MatMul with no
        transposes in between."""
        n1, n2 = self.n1, self.n2
        x = frames.reshape(-1, n1, n2).permute(1, 2, 0).reshape(n1, -1)  # (n1, n2 F): x[j1, j2 F + f]
        a = torch.matmul(self.stage1, x).reshape(n1, n2, -1)  # (n1 rows, n2, F)
        pairs = a[self.rows].reshape(n1, 2 * n2, -1)  # (k1, [Re; Im] x n2, F)
        out = torch.matmul(self.stage2, pairs)  # (k1, [Re; Im] x k2, F)
        real, imag = out[:, : self.k2_count], out[:, self.k2_count :]
        power = (real * real + imag * imag).reshape(n1 * self.k2_count, -1)  # (k1 k2, F)
        return power[self.order]


class ExportableFrontEnd(nn.Module):
    """:class:`~audioclf.features.FrontEnd` built from ONNX-friendly ops (Pad, Conv, Mul, MatMul, Log, Max).

    Waveform (B, N) -> features (B, 1, F, T); same settings, same numbers (up to float rounding).
    ``dtype`` is the precision the constants are kept in (float64 for reference computations).
    """

    def __init__(self, cfg: FeatureConfig, dtype: torch.dtype = torch.float32):
        super().__init__()
        if cfg.center and cfg.pad_mode not in _ONNX_PAD:
            raise ConfigError(f"features.pad_mode={cfg.pad_mode!r} cannot be exported; use constant or reflect")
        self.cfg = cfg
        self.n_bins = cfg.n_fft // 2 + 1
        factors = _factor(cfg.n_fft)
        if factors is None:  # one DFT matrix, applied by a strided convolution (frames and DFT in one op)
            self.register_buffer("dft", dft_kernels(cfg.n_fft, cfg.win_length, dtype), persistent=False)
            self.two_stage = None
        else:
            self.register_buffer("window", dft_kernels(cfg.n_fft, cfg.win_length, dtype)[0, 0], persistent=False)
            self.two_stage = TwoStageDFT(cfg.n_fft, self.n_bins, *factors, dtype)
        if cfg.kind != "spectrogram":
            fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax, cfg.mel_scale,
                                cfg.mel_norm, dtype=torch.float64)
            self.register_buffer("fb", fb.to(dtype), persistent=False)
        if cfg.kind == "mfcc":
            self.register_buffer("dct", dct_matrix(cfg.n_mfcc, cfg.n_mels, dtype), persistent=False)

    def output_shape(self, n_samples: int) -> tuple[int, int, int]:
        return (1, self.cfg.n_bins, n_frames(self.cfg, n_samples))

    def _power(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = wave.unsqueeze(1)  # (B, 1, N)
        if cfg.center:
            pad = cfg.n_fft // 2
            x = nn.functional.pad(x, (pad, pad), mode=_ONNX_PAD[cfg.pad_mode])
        if self.two_stage is None:
            frames = nn.functional.conv1d(x, self.dft.to(x.dtype), stride=cfg.hop_length)  # (B, 2K, T)
            real, imag = frames[:, : self.n_bins], frames[:, self.n_bins :]
            power = real * real + imag * imag
        else:
            frames = self._frames(x[:, 0]) * self.window.to(x.dtype)  # (B, T, n_fft)
            power = self.two_stage(frames.reshape(-1, cfg.n_fft))  # (K, B T)
            power = power.reshape(self.n_bins, -1, frames.shape[1]).transpose(0, 1)  # (B, K, T)
        if cfg.power == 2.0:
            return power
        if cfg.power == 1.0:
            return torch.sqrt(power)
        return torch.pow(power, cfg.power / 2.0)

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) padded signal -> (B, T, n_fft) frames ``hop`` apart: shifted slices of hop-long chunks when the
        hop divides n_fft (a 50 % overlap: two), else one Gather."""
        n, hop = self.cfg.n_fft, self.cfg.hop_length
        count = (x.shape[-1] - n) // hop + 1
        if n % hop == 0:
            chunks = x[:, : (count - 1 + n // hop) * hop].reshape(x.shape[0], -1, hop)
            return torch.cat([chunks[:, i : i + count] for i in range(n // hop)], dim=-1)
        index = torch.arange(count, device=x.device)[:, None] * hop + torch.arange(n, device=x.device)[None]
        return x[:, index]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        spec = self._power(wave)
        if cfg.kind != "spectrogram":
            spec = torch.matmul(self.fb.to(spec.dtype), spec)  # (B, n_mels, T)
        if cfg.log == "db":
            multiplier = 10.0 if cfg.power == 2.0 else 20.0
            spec = multiplier * torch.log10(torch.clamp(spec, min=cfg.amin))
            if cfg.top_db is not None:  # floor per example, relative to its own maximum (as FrontEnd)
                peak = torch.amax(spec, dim=(1, 2), keepdim=True)
                spec = torch.maximum(spec, peak - cfg.top_db)
        elif cfg.log == "log":
            spec = torch.log(spec + cfg.log_offset)
        elif cfg.log == "pcen":
            spec = pcen(spec, cfg.sample_rate, cfg.hop_length)
        if cfg.kind == "mfcc":
            spec = torch.matmul(self.dct.to(spec.dtype), spec)
        spec = utterance_normalize(spec, cfg.normalize)
        if cfg.image_scale:
            low = torch.amin(spec, dim=(1, 2), keepdim=True)
            span = torch.amax(spec, dim=(1, 2), keepdim=True) - low
            spec = (spec - low) / torch.where(span > 0, span, torch.ones_like(span)) * 255.0
        return spec.unsqueeze(1)


class ExportGraph(nn.Module):
    """What goes into the ONNX file: [front-end] -> standardise -> backbone -> logits."""

    def __init__(self, model: nn.Module, with_frontend: bool):
        super().__init__()
        self.has_frontend = model.frontend is not None
        self.frontend = ExportableFrontEnd(model.feature_config) if with_frontend and self.has_frontend else None
        self.standardize = model.standardize
        self.backbone = model.backbone

    @property
    def input_kind(self) -> str:
        """"waveform" (front-end inside, or a waveform model) or "features" (the front-end's output)."""
        return "features" if self.has_frontend and self.frontend is None else "waveform"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frontend is not None:
            x = self.frontend(x)
        if self.standardize is not None:
            x = self.standardize(x)
        return self.backbone(x)


# --- metadata -----------------------------------------------------------------------------------
def model_metadata(model: nn.Module, classes: list[str], task: str, sample_rate: int, clip_samples: int,
                   input_kind: str, with_frontend: bool, pad_mode: str = "tile", opset: int = MIN_OPSET,
                   input_shape: tuple[int, ...] = (), trim_silence: bool | str = False,
                   source: dict[str, str] | None = None, decisions: Decisions | None = None) -> dict[str, str]:
    """The ``metadata_props`` of an exported model (all values are strings; JSON where structured);
    ``source``: the ``run_id``, ``checkpoint`` (best/last) and ``checkpoint_sha256`` it was exported from (a
    reader next to that run checks it is still the run's current checkpoint: ``RunDir.stale_reason``).
    ``decisions``: the run's temperature and per-class thresholds, as metadata rather than folded into the graph:
    the graph's output stays the network's logits (what the export is verified on); a reader computes
    ``softmax(logits / T)`` or ``sigmoid(logits / T)`` and compares class c's probability with its threshold."""
    spec = model.spec()
    return {
        "producer": "audioclf",
        "format_version": FORMAT_VERSION,
        "model": spec["backbone"]["name"],
        "task": task,
        "classes": json.dumps(list(classes)),
        "sample_rate": str(int(sample_rate)),
        "clip_samples": str(int(clip_samples)),
        "pad_mode": pad_mode,
        "trim_silence": json.dumps(trim_silence or False),  # as in training: silence cut before windowing
        "features": json.dumps(spec["features"]),  # FeatureConfig dict, or null for waveform models
        "input": input_kind,  # "waveform" (B, N) or "features" (B, 1, F, T)
        "input_shape": json.dumps(list(input_shape)),  # without the batch axis
        "with_frontend": json.dumps(bool(with_frontend)),
        "opset": str(int(opset)),
        "decisions": json.dumps((decisions or Decisions()).to_dict(classes)),
        **{key: str((source or {}).get(key) or "") for key in ("run_id", "checkpoint", "checkpoint_sha256")},
    }


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The audioclf metadata of an ONNX file, decoded (classes as a list, numbers as ints ...)."""
    ort = import_onnxruntime()
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise AudioclfError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return decode_metadata(session.get_modelmeta().custom_metadata_map, path)


_OPTIONAL_METADATA = {"input_shape": "[]", "with_frontend": "false", "trim_silence": "false",  # older exports
                      "decisions": '{"temperature": 1.0, "thresholds": null}'}


def decode_metadata(props: dict[str, str], path: str | Path = "<model>") -> dict[str, Any]:
    """The metadata's values decoded and checked (before anything is sized by them): a missing key or one out
    of bounds is one line naming ``path`` and the key."""
    if props.get("producer") != "audioclf":
        raise AudioclfError(f"{path}: no audioclf metadata (expected metadata_props from audioclf export)")
    decoded = dict(props)
    for key, decode in (("classes", json.loads), ("task", str), ("sample_rate", int), ("clip_samples", int),
                        ("features", json.loads), ("input", str), ("input_shape", json.loads),
                        ("with_frontend", json.loads), ("trim_silence", json.loads), ("decisions", json.loads)):
        if key not in props and key not in _OPTIONAL_METADATA:
            raise AudioclfError(f"{path}: metadata key '{key}' is missing (a damaged or hand-edited file)")
        try:
            decoded[key] = decode(props.get(key, _OPTIONAL_METADATA.get(key)))
        except ValueError:
            raise AudioclfError(f"{path}: metadata '{key}' = {props[key][:60]!r} is not valid") from None
    check_model_facts(decoded, f"{path}: metadata")
    if not isinstance(decoded["decisions"], dict):
        raise AudioclfError(f"{path}: metadata 'decisions': expected a JSON object")
    Decisions.from_dict(decoded["decisions"], decoded["classes"], f"{path}: metadata 'decisions'")  # checked here
    if decoded["input"] not in ("waveform", "features"):
        raise AudioclfError(f"{path}: metadata 'input' = {decoded['input'][:60]!r}: expected waveform or features")
    if decoded["input"] == "features":  # the front-end the predictor runs before the model
        try:
            FeatureConfig.from_dict(decoded["features"])
        except AudioclfError as exc:
            raise AudioclfError(f"{path}: metadata 'features': {exc}") from None
    return decoded


# --- export -------------------------------------------------------------------------------------
def _example_inputs(model: nn.Module, graph: ExportGraph, clip_samples: int, batch: int, seed: int = 0):
    """A seeded waveform batch and, for feature graphs, its front-end output (realistic value ranges)."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(clip_samples, dtype=torch.float32) / max(clip_samples, 1)
    tones = torch.sin(2 * math.pi * (50 + 400 * torch.rand(batch, 1, generator=generator)) * t * 10)
    wave = 0.3 * tones + 0.05 * torch.randn(batch, clip_samples, generator=generator)
    if graph.input_kind == "features":
        with torch.no_grad():
            return wave, model.frontend(wave)
    return wave, wave


def graph_to_onnx_bytes(graph: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    """ONNX bytes of ``graph`` (an :class:`ExportGraph` or any module with an ``input_kind`` attribute) traced on
    ``example``; input named after ``input_kind``, output ``logits``, dynamic batch axis."""
    buffer = io.BytesIO()
    name = graph.input_kind
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs onnxscript;
        # it is the one that exports these models without extra dependencies.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph, (example,), buffer, dynamo=False, opset_version=opset, input_names=[name],
            output_names=["logits"], dynamic_axes={name: {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=True,
        )
    return buffer.getvalue()


class _FrontEndGraph(nn.Module):
    input_kind = "waveform"

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.frontend = ExportableFrontEnd(cfg)  # named as in ExportGraph: the same node names

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.frontend(wave)


def frontend_to_onnx_bytes(cfg: FeatureConfig, example: torch.Tensor, opset: int = MIN_OPSET) -> bytes:
    """ONNX bytes of the exported front-end alone (waveform in, features out): what ``with_frontend`` puts before
    the network, to time or check it on its own."""
    return graph_to_onnx_bytes(_FrontEndGraph(cfg).eval(), example, opset)


def _with_metadata(model_bytes: bytes, metadata: dict[str, str]) -> bytes:
    onnx = import_onnx()
    proto = onnx.load_from_string(model_bytes)
    onnx.helper.set_model_props(proto, metadata)
    proto.producer_name = "audioclf"
    return proto.SerializeToString()


def verify_onnx(model_bytes: bytes | str | Path, inputs: np.ndarray, expected: np.ndarray,
                atol: float, rtol: float, what: str = "export") -> float:
    """Run ONNX Runtime on ``inputs`` and compare with ``expected`` logits; returns the max abs difference."""
    ort = import_onnxruntime()
    source = model_bytes if isinstance(model_bytes, bytes) else str(model_bytes)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: inputs.astype(np.float32)})[0]
    diff = np.abs(got - expected)
    if got.shape != expected.shape or not np.all(diff <= atol + rtol * np.abs(expected)):
        worst = float(diff.max()) if got.shape == expected.shape else float("nan")
        raise AudioclfError(f"{what}: ONNX Runtime output differs from PyTorch (max |diff| {worst:.3g}, allowed "
                            f"{atol:g} + {rtol:g}*|logit|, shapes {got.shape} vs {expected.shape})")
    return float(diff.max())


def export_classifier(
    model: nn.Module,
    out_path: str | Path,
    classes: list[str],
    task: str,
    sample_rate: int,
    clip_samples: int,
    with_frontend: bool = False,
    opset: int = MIN_OPSET,
    pad_mode: str = "tile",
    verify: bool = True,
    trim_silence: bool | str = False,
    source: dict[str, str] | None = None,
    decisions: Decisions | None = None,
) -> Path:
    """Export an :class:`~audioclf.models.classifier.AudioClassifier` (eval mode) to ``out_path``, atomically."""
    opset = int(opset)
    if opset < MIN_OPSET:
        raise ConfigError(f"opset={opset}: expected {MIN_OPSET} or newer")
    model = model.cpu().eval()
    graph = ExportGraph(model, with_frontend).eval()
    wave, example = _example_inputs(model, graph, clip_samples, batch=1)
    model_bytes = graph_to_onnx_bytes(graph, example, opset)
    input_shape = tuple(example.shape[1:])
    metadata = model_metadata(model, classes, task, sample_rate, clip_samples, graph.input_kind,
                              graph.frontend is not None, pad_mode, opset, input_shape, trim_silence, source, decisions)
    model_bytes = _with_metadata(model_bytes, metadata)
    if verify:
        # a batch of 3 also checks the dynamic batch axis
        wave, check = _example_inputs(model, graph, clip_samples, batch=3, seed=1)
        with torch.no_grad():
            expected = model(wave).float().numpy()  # the PyTorch model with its own torch.stft front-end
        atol, rtol = TOLERANCES["frontend" if graph.frontend is not None else "features"]
        verify_onnx(model_bytes, check.numpy(), expected, atol, rtol, what=str(out_path))
    return atomic_write_bytes(Path(out_path), model_bytes)


def exported_name(input_kind: str, int8: bool = False) -> str:
    """The file name of a run's export, saying what it takes: ``model.wave.onnx`` (waveforms in) or
    ``model.features.onnx`` (the front-end's output in), ``model.<kind>.int8.onnx`` once quantized. Two exports
    of one run that take different inputs never share a name (nor does an INT8 file and the fp32 file it needs)."""
    kind = {"waveform": "wave", "features": "features"}[input_kind]
    return f"model.{kind}.int8.onnx" if int8 else f"model.{kind}.onnx"


def export_onnx(
    run_dir: str | Path,
    out_path: str | Path | None = None,
    with_frontend: bool = False,
    opset: int = MIN_OPSET,
    which: str = "best",
    verify: bool = True,
    overwrite: bool = False,
) -> Path:
    """Export a run's checkpoint to ONNX with metadata, verified with ONNX Runtime; by default into the run's
    folder, named by its input (:func:`exported_name`). An existing ``out_path`` outside the run is replaced only
    with ``overwrite`` and only when it is an ONNX model audioclf exported."""
    model, state = load_model(run_dir, which)
    _say_what_is_left_out(run_dir, which)
    kind = ExportGraph(model, with_frontend).input_kind
    out = Path(out_path) if out_path is not None else Path(run_dir) / exported_name(kind)
    # Writing into the run's folder: not while a training or a quantization writes it.
    inside = out.resolve().parent == Path(run_dir).resolve()
    if not inside:
        _check_replaceable(out, overwrite)
    with RunDir(run_dir).lock() if inside else contextlib.nullcontext():
        data = state.get("config", {}).get("data", {})
        source = {"run_id": state.get("run_id", ""), "checkpoint": which, "checkpoint_sha256": state["checkpoint_sha256"]}
        # the decisions were chosen on the best checkpoint's validation probabilities
        decisions = read_decisions(run_dir, state["classes"]) if which == "best" else None
        return export_classifier(model, out, state["classes"], state["task"], state["sample_rate"],
                                 state["clip_samples"], with_frontend, opset, data.get("pad_mode", "tile"), verify,
                                 data.get("trim_silence") or False, source, decisions)


def _say_what_is_left_out(run_dir: str | Path, which: str) -> None:
    """The ONNX file holds the network: when validation kept another member (alone or mixed), say plainly that the
    export is not the run's chosen predictor, which member it leaves out and what each scored."""
    members = read_members(run_dir) if which == "best" else None
    if not members or members.get("chosen", "network") == "network":
        return
    weights = members.get("weights", {})
    left_out = [_LEFT_OUT[name] for name in _LEFT_OUT if weights.get(name)]
    if members["chosen"] == "ensemble" and set(weights) <= {"network", "classical"}:
        kept = "average of the network and the classical member"
    else:
        kept = f"{members['chosen']} ({', '.join(f'{k} {v:.2f}' for k, v in weights.items() if v)})"
    log.warning("%s: the run's chosen predictor is the %s (%s); the ONNX file holds the network alone, without %s. "
                "audioclf predict / serve / evaluate on the run use the %s", run_dir, kept,
                members.get("why", ""), " and ".join(left_out), members["chosen"])


_LEFT_OUT = {"classical": "the classical member (members/classical.onnx reads utterance statistics computed in Python)",
             "probe": "the probe member (members/probe.onnx reads the pretrained backbone's log-mels, resampled and "
                      "computed in Python)"}


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """The file rule of :mod:`audioclf.ownership`: a file that is there already is a user's until its own
    metadata says audioclf exported it; even then it is replaced only when asked to."""
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; name the .onnx file to write")
    if not out.exists():
        return
    if not overwrite:
        raise ConfigError(f"--out {out}: exists; add --overwrite to replace it, or choose another file")
    try:
        read_metadata(out)
    except AudioclfError:
        raise ConfigError(f"--out {out}: is not an ONNX model audioclf exported; it is not replaced") from None
