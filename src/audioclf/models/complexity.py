"""Parameter and MAC counts for one inference, counted with forward hooks (DCASE 2022 Task 1 rules).

What is counted (one multiply-accumulate = one MAC; batch size 1):

* ``Conv1d/2d/3d``: output elements x (in_channels / groups) x kernel size. ``ConvTranspose*``: input
  elements x (out_channels / groups) x kernel size.
* ``Linear`` / ``Bilinear``: in x out per output position.
* ``RNN/LSTM/GRU``: every weight matrix entry once per time step (input, recurrent and projection weights of
  every layer and direction). Gate non-linearities and element-wise gating products are not MACs.
* ``MultiheadAttention``: Q/K/V and output projections plus the two attention matmuls (QK^T and AV).
* ``BatchNorm``: with ``batchnorm_folded=True`` (what TFLite / ONNX Runtime deployment does) a BatchNorm
  whose input is the output of a conv/linear layer is folded into it: 0 MACs, its parameters disappear and
  the conv gains a bias if it had none. A BatchNorm that cannot be folded (e.g. on the input) is a
  per-channel affine map: 1 MAC per element and 2 parameters per channel. ``batchnorm_folded=False`` counts
  every BatchNorm that way (parameters as in PyTorch: weight + bias; running statistics are buffers).
* Not counted: bias additions, activations, pooling (comparisons / additions, no multiplies), dropout,
  reshapes, and arithmetic written as functional calls inside a custom ``forward`` (only layers are hooked).

Sizes: ``bytes_fp32`` = 4 bytes per parameter; ``bytes_int8`` = 1 byte per parameter, the DCASE convention
("INT8, all parameters counted"); ``bytes_int8_tflite`` = 1 byte per weight + 4 bytes per bias (TFLite keeps
biases in int32), the "parameter" figure the DCASE 2022 baseline quotes (46,512 for its 45,990 folded
parameters). A parameter is a bias when its name starts with ``bias`` (``bias``, ``bias_ih_l0`` ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import BudgetExceeded, ConfigError

__all__ = ["LayerStats", "Report", "complexity_report", "check_limits", "format_report", "model_complexity"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_RNN = (nn.RNN, nn.LSTM, nn.GRU)
_FOLD_TARGETS = _CONV + _CONV_T + (nn.Linear,)


@dataclass
class LayerStats:
    """One layer's share of the model: its own parameters (not its children's) and MACs."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    biases: int = 0  # how many of ``params`` are biases (int32 in TFLite INT8 models)
    note: str = ""  # e.g. "folded into conv1"


@dataclass
class Report:
    """Complexity of one inference on ``input_shape`` (batch excluded)."""

    input_shape: tuple[int, ...]
    batchnorm_folded: bool
    params_total: int  # deployed count (after folding when batchnorm_folded)
    params_trainable: int  # as in PyTorch (``requires_grad``), before folding
    params_pytorch: int  # every nn.Parameter, before folding
    macs_total: int
    biases_total: int = 0
    layers: list[LayerStats] = field(default_factory=list)

    @property
    def bytes_fp32(self) -> int:
        return 4 * self.params_total

    @property
    def bytes_int8(self) -> int:
        return self.params_total

    @property
    def bytes_int8_tflite(self) -> int:
        return (self.params_total - self.biases_total) + 4 * self.biases_total

    @property
    def mmacs(self) -> float:
        return self.macs_total / 1e6

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(bytes_fp32=self.bytes_fp32, bytes_int8=self.bytes_int8, bytes_int8_tflite=self.bytes_int8_tflite,
                   mmacs=self.mmacs)
        return out


# --- MAC formulas -------------------------------------------------------------------------------
def _conv_macs(module: nn.Module, output: torch.Tensor) -> int:
    kernel = math.prod(module.kernel_size)
    return int(output[0].numel()) * (module.in_channels // module.groups) * kernel


def _conv_transpose_macs(module: nn.Module, inputs: torch.Tensor) -> int:
    kernel = math.prod(module.kernel_size)
    return int(inputs[0].numel()) * (module.out_channels // module.groups) * kernel


def _linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    positions = output[0].numel() // module.out_features  # (B, ..., out): one matmul row per position
    return int(positions) * module.in_features * module.out_features


def _rnn_steps(module: nn.Module, inputs: Any) -> int:
    x = inputs[0] if isinstance(inputs, tuple) else inputs
    if isinstance(x, nn.utils.rnn.PackedSequence):
        return int(x.batch_sizes.sum())  # packed: total steps over the (single) sequence
    if x.dim() == 2:  # unbatched (T, I)
        return int(x.shape[0])
    return int(x.shape[1] if module.batch_first else x.shape[0])


def _rnn_macs(module: nn.Module, inputs: Any) -> int:
    # Each entry of weight_ih / weight_hh / weight_hr (every layer, every direction) is used once per step.
    per_step = sum(p.numel() for name, p in module.named_parameters(recurse=False) if name.startswith("weight_"))
    return _rnn_steps(module, inputs) * per_step


def _attention_macs(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> int:
    names = ("query", "key", "value")
    tensors = [args[i] if i < len(args) else kwargs.get(name) for i, name in enumerate(names)]
    query, key = tensors[0], tensors[1]
    seq_dim = 1 if module.batch_first and query.dim() == 3 else 0
    lq, lk = int(query.shape[seq_dim]), int(key.shape[seq_dim])
    e = module.embed_dim
    projections = lq * e * e + lk * module.kdim * e + lk * module.vdim * e + lq * e * e  # q, k, v, out
    return projections + 2 * lq * lk * e  # QK^T and attention x V over all heads


def _layer_params(module: nn.Module) -> dict[str, nn.Parameter]:
    """A layer's own parameters by name; attention also owns its ``out_proj`` (used functionally, never called)."""
    return dict(module.named_parameters(recurse=isinstance(module, nn.MultiheadAttention)))


def _is_bias(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("bias")


# --- the counter --------------------------------------------------------------------------------
class _Counter:
    """Forward hooks that record per-layer MACs and which BatchNorms follow a conv/linear directly."""

    def __init__(self, model: nn.Module, batchnorm_folded: bool):
        self.names = {module: name or type(module).__name__ for name, module in model.named_modules()}
        self.folded = batchnorm_folded
        self.stats: dict[nn.Module, LayerStats] = {}
        self.fold_outputs: list[tuple[torch.Tensor, nn.Module]] = []  # keeps tensors alive: ids stay unique
        self.folds: dict[nn.Module, nn.Module] = {}  # BatchNorm -> the conv/linear it folds into
        self.handles: list[Any] = []
        for module in model.modules():
            if isinstance(module, nn.MultiheadAttention):
                self.handles.append(module.register_forward_hook(self._attention_hook, with_kwargs=True))
            elif isinstance(module, _CONV + _CONV_T + _NORM + _RNN + (nn.Linear, nn.Bilinear)):
                self.handles.append(module.register_forward_hook(self._hook))

    def _stats(self, module: nn.Module, output: Any) -> LayerStats:
        if module not in self.stats:
            out = output[0] if isinstance(output, tuple) else output
            if isinstance(out, nn.utils.rnn.PackedSequence):
                out = out.data
            shape = tuple(out.shape[1:]) if torch.is_tensor(out) else ()
            params = _layer_params(module)
            self.stats[module] = LayerStats(
                self.names[module], type(module).__name__, shape, sum(p.numel() for p in params.values()), 0,
                biases=sum(p.numel() for name, p in params.items() if _is_bias(name)),
            )
        return self.stats[module]

    def _hook(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        stats = self._stats(module, output)
        if isinstance(module, _CONV):
            stats.macs += _conv_macs(module, output)
        elif isinstance(module, _CONV_T):
            stats.macs += _conv_transpose_macs(module, inputs[0])
        elif isinstance(module, nn.Linear):
            stats.macs += _linear_macs(module, output)
        elif isinstance(module, nn.Bilinear):
            stats.macs += int(output[0].numel()) * module.in1_features * module.in2_features
        elif isinstance(module, _RNN):
            stats.macs += _rnn_macs(module, inputs)
        elif isinstance(module, _NORM):
            source = next((m for t, m in self.fold_outputs if t is inputs[0]), None)
            if self.folded and source is not None:
                self.folds[module] = source
            else:
                stats.macs += int(inputs[0][0].numel())  # y = x * scale + shift per element
        if isinstance(module, _FOLD_TARGETS) and torch.is_tensor(output):
            self.fold_outputs.append((output, module))

    def _attention_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self._stats(module, output).macs += _attention_macs(module, args, kwargs)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.fold_outputs.clear()


def _example_input(input_shape: Sequence[int], model: nn.Module) -> torch.Tensor:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"input_shape={input_shape!r}: expected a tuple of positive ints (batch excluded)") from None
    if not shape or any(s <= 0 for s in shape):
        raise ConfigError(f"input_shape={shape}: expected positive sizes (batch excluded), e.g. (1, 40, 51)")
    reference = next(model.parameters(), None)
    if reference is None:
        reference = next(model.buffers(), torch.zeros(()))
    dtype = reference.dtype if reference.is_floating_point() else torch.float32
    return torch.zeros((1, *shape), dtype=dtype, device=reference.device)


@torch.no_grad()
def complexity_report(model: nn.Module, input_shape: Sequence[int], batchnorm_folded: bool = True) -> Report:
    """Parameters (total / trainable / per layer) and MACs for ONE inference on ``input_shape`` (no batch).

    Runs one forward pass in eval mode on zeros (batch size 1) with hooks on every counted layer; the
    model's train/eval mode is restored afterwards. See the module docstring for what counts as a MAC.
    """
    example = _example_input(input_shape, model)
    was_training = model.training
    counter = _Counter(model, batchnorm_folded)
    model.eval()
    try:
        model(example)
    finally:
        counter.remove()
        model.train(was_training)

    layers = list(counter.stats.values())
    by_module = {module: stats for module, stats in counter.stats.items()}
    for norm, target in counter.folds.items():
        norm_stats, target_stats = by_module[norm], by_module[target]
        norm_stats.params, norm_stats.biases, norm_stats.note = 0, 0, f"folded into {target_stats.name}"
        if getattr(target, "bias", None) is None and target_stats.note != "gained bias":
            # the folded shift needs a bias on the conv/linear: one value per output channel
            channels = target.out_features if isinstance(target, nn.Linear) else target.out_channels
            target_stats.params += channels
            target_stats.biases += channels
            target_stats.note = "gained bias"

    unique = {id(p): p for p in model.parameters()}.values()
    params_pytorch = sum(p.numel() for p in unique)
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    counted = {id(p) for module in counter.stats for p in _layer_params(module).values()}
    # parameters of layers we do not hook (custom modules, embeddings, LayerNorm ...) still count
    uncounted = {name: p for name, p in model.named_parameters() if id(p) not in counted}
    params_total = sum(s.params for s in layers) + sum(p.numel() for p in uncounted.values())
    biases_total = sum(s.biases for s in layers) + sum(p.numel() for n, p in uncounted.items() if _is_bias(n))
    return Report(
        input_shape=tuple(int(s) for s in input_shape),
        batchnorm_folded=batchnorm_folded,
        params_total=int(params_total),
        params_trainable=int(trainable),
        params_pytorch=int(params_pytorch),
        macs_total=int(sum(s.macs for s in layers)),
        biases_total=int(biases_total),
        layers=layers,
    )


def check_limits(report: Report, max_params: int | None = None, max_macs: int | None = None) -> None:
    """Raise :class:`BudgetExceeded` naming both numbers when the model exceeds a limit.

    DCASE 2022 Task 1: ``check_limits(report, max_params=128_000, max_macs=30_000_000)``.
    """
    problems = []
    if max_params is not None and report.params_total > max_params:
        problems.append(f"{report.params_total:,} parameters > limit {int(max_params):,}")
    if max_macs is not None and report.macs_total > max_macs:
        problems.append(f"{report.macs_total / 1e6:.3f} MMACs > limit {max_macs / 1e6:.3f} MMACs")
    if problems:
        raise BudgetExceeded(f"model on input {report.input_shape} is over the complexity limits: {'; '.join(problems)}")


def format_report(report: Report) -> str:
    """A plain-text table: one row per counted layer, then the totals and sizes."""
    header = ("layer", "type", "output", "params", "MACs", "note")
    rows = [(s.name, s.kind, "x".join(map(str, s.output_shape)), f"{s.params:,}", f"{s.macs:,}", s.note)
            for s in report.layers]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    right = {3, 4}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "-" * len(line(header))
    folding = "BatchNorm folded" if report.batchnorm_folded else "BatchNorm not folded"
    lines = [line(header), rule, *map(line, rows), rule]
    lines.append(f"input {tuple(report.input_shape)}, {folding}: {report.params_total:,} parameters "
                 f"({report.params_pytorch:,} in PyTorch, {report.params_trainable:,} trainable), "
                 f"{report.macs_total:,} MACs = {report.mmacs:.3f} MMACs per inference")
    lines.append(f"size: {report.bytes_fp32:,} bytes fp32, {report.bytes_int8:,} bytes int8 (1 byte per parameter), "
                 f"{report.bytes_int8_tflite:,} bytes int8 with int32 biases (TFLite)")
    return "\n".join(lines)


def model_complexity(name: str, n_classes: int = 10, input_shape: Sequence[int] | None = None,
                     batchnorm_folded: bool = True) -> Report:
    """The report for registered model ``name`` on ``input_shape`` (default: the example input declared at
    its registration, e.g. the DCASE baseline's 40 x 51 log-mel)."""
    from .registry import create_model, model_entry

    entry = model_entry(name)
    shape = tuple(input_shape) if input_shape else entry.example_input
    if not shape:
        raise ConfigError(f"model {name} ({entry.input_kind} input) declares no example input: give an input "
                          "shape, e.g. 1 40 51 for a 40x51 log-mel")
    return complexity_report(create_model(name, n_classes=n_classes, input_shape=shape), shape, batchnorm_folded)
