"""What a CPU's int8 kernels do with a quantized model: the ISA flags that choose them, and a numpy model of the
one path that can silently go wrong, AVX2's u8 x s8 multiply (``pmaddubsw``).

On x86-64 without VNNI, ONNX Runtime multiplies uint8 activations by int8 weights with ``pmaddubsw``: two
adjacent products along the reduction axis are added in **16 bits with saturation** before being widened to 32
bits. With full-range weights (|w| <= 127) a pair reaches 2 * 255 * 127 = 64,770, beyond int16's 32,767, and the
sum is clipped without a warning; VNNI (``vpdpbusd``), AMX and ARM dot products add in 32 bits and never clip.
With 7-bit weights (``reduce_range``: |w| <= 64) a pair is at most 2 * 255 * 64 = 32,640, so it cannot clip: the
same file gives the same numbers on every CPU. :func:`pair_saturation` measures this on a real model (int8
activations enter the u8 kernel shifted by 128, the worst case of that mapping), independent of the CPU it
runs on.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["INT8_FLAGS", "cpu_isa", "int8_path", "pmaddubsw", "pair_saturation", "unchecked_machine"]

# The flags that decide which int8 kernel ONNX Runtime's MLAS picks (x86: AVX2 / AVX-512 / VNNI / AMX; ARM: dot
# products and int8 matrix multiply). Other flags do not change int8 results and are left out of the metadata.
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8", "asimddp",
              "i8mm")
_WIDE_ACCUMULATION = {"avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8", "asimddp", "i8mm"}
INT16_MAX = 32767


@lru_cache(maxsize=None)
def cpu_isa(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, object]:
    """``{"cpu": model name, "flags": the int8-relevant ISA flags present, "int8_path": see int8_path}`` of
    this machine (Linux's ``/proc/cpuinfo``; elsewhere the processor name alone and no flags)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and value.strip():
            name = value.strip()
        elif key in ("flags", "features"):  # x86 says flags, ARM says Features
            flags.update(value.split())
    present = [flag for flag in INT8_FLAGS if flag in flags]
    return {"cpu": name, "flags": present, "int8_path": int8_path(present)}


def int8_path(flags: list[str]) -> str:
    """How this CPU's int8 kernels add products: 32-bit dot products, or AVX2's 16-bit pair sums that saturate."""
    if _WIDE_ACCUMULATION & set(flags):
        return "32-bit dot products (VNNI / AMX / ARM dot): no saturation"
    if "avx2" in flags:
        return "AVX2 pmaddubsw: u8 x s8 pairs added in 16 bits with saturation (7-bit weights keep them exact)"
    return "generic kernels (32-bit accumulation)"


def pmaddubsw(a_u8: np.ndarray, w_s8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The instruction on the last axis: ``a[2i] * w[2i] + a[2i+1] * w[2i+1]`` clipped to int16.

    Returns (the clipped pair sums, a mask of the pairs that were clipped). An odd length is padded with a zero,
    as MLAS pads its packed buffers."""
    a, w = np.asarray(a_u8, dtype=np.int32), np.asarray(w_s8, dtype=np.int32)
    if a.shape[-1] % 2:
        a = np.concatenate([a, np.zeros((*a.shape[:-1], 1), np.int32)], axis=-1)
        w = np.concatenate([w, np.zeros((*w.shape[:-1], 1), np.int32)], axis=-1)
    exact = a[..., 0::2] * w[..., 0::2] + a[..., 1::2] * w[..., 1::2]
    clipped = np.clip(exact, -INT16_MAX - 1, INT16_MAX)
    return clipped.astype(np.int16), clipped != exact


def _initializers(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _quantized_operands(model) -> list[tuple[str, object, str, np.ndarray, np.dtype]]:
    """(node name, node, name of its quantized input activation, its int8 weight, the activation's dtype) for
    each QDQ Conv / Gemm / MatMul whose weight is a quantized initializer."""
    producers = {out: node for node in model.graph.node for out in node.output}
    weights = _initializers(model)
    found = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        x_dq, w_dq = producers.get(node.input[0]), producers.get(node.input[1])
        if not (x_dq and w_dq and x_dq.op_type == w_dq.op_type == "DequantizeLinear"):
            continue
        x_zero = weights.get(x_dq.input[2]) if len(x_dq.input) > 2 else None
        if x_zero is not None and weights.get(w_dq.input[0], x_zero).dtype in (np.int8, np.uint8):
            found.append((node.name, node, x_dq.input[0], weights[w_dq.input[0]], x_zero.dtype))
    return found


def _as_u8(x: np.ndarray) -> np.ndarray:
    # int8 activations go through the u8 x s8 kernel with their sign bit flipped (x + 128)
    return x.astype(np.int32) + 128 if x.dtype == np.int8 else x.astype(np.int32)


def _conv_rows(x: np.ndarray, node) -> list[tuple[np.ndarray, slice]]:
    """Per group: the im2col rows of an NCHW activation, channel-last within each kernel position (the order
    the NHWC int8 kernels reduce in), and the group's output channels."""
    import torch
    from torch.nn import functional as F

    attrs = {a.name: list(a.ints) if a.ints else a.i for a in node.attribute}
    kernel = attrs.get("kernel_shape")
    pads = attrs.get("pads", [0] * 4)
    if len(kernel) != 2 or attrs.get("auto_pad"):
        return []  # 1-D or auto-padded convs: not modelled
    groups = int(attrs.get("group", 1) or 1)
    # zero padding in the quantized domain is the activation's zero point; 0 is the least saturating choice
    t = F.pad(torch.from_numpy(x.astype(np.float32)), (pads[1], pads[3], pads[0], pads[2]))
    cols = F.unfold(t, kernel, dilation=attrs.get("dilations", [1, 1]), stride=attrs.get("strides", [1, 1]))
    b, _, positions = cols.shape
    per_group = x.shape[1] // groups
    cols = cols.reshape(b, groups, per_group, kernel[0] * kernel[1], positions)
    rows = []
    for g in range(groups):
        block = cols[:, g].permute(0, 3, 2, 1).reshape(b * positions, -1)  # (kh, kw, C) order
        rows.append((block.numpy().astype(np.int32), g))
    return rows


def pair_saturation(int8_model: str | Path, batches: list[np.ndarray], max_rows: int = 4096) -> dict[str, float]:
    """For each quantized Conv / Gemm / MatMul of a QDQ model: the fraction of its u8 x s8 pair sums that an AVX2
    CPU would clip, on these input batches (at most ``max_rows`` im2col rows per layer)."""
    import onnx
    from onnx import helper

    from .export import import_onnxruntime

    ort = import_onnxruntime()
    model = onnx.load(str(int8_model))
    operands = _quantized_operands(model)
    inputs = {i.name for i in model.graph.input}
    exposed = {o.name for o in model.graph.output} | inputs
    for _, _, name, _, dtype in operands:
        if name not in exposed:
            exposed.add(name)
            model.graph.output.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(dtype), None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ tensors as written
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    seen: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        values = dict(zip(names, session.run(names, {input_name: np.asarray(batch, np.float32)})))
        for _, _, x, _, _ in operands:
            seen.setdefault(x, []).append(values[x])
    rng = np.random.default_rng(0)
    result = {}
    for name, node, x_name, w, _ in operands:
        x = _as_u8(np.concatenate(seen[x_name]))
        if node.op_type == "Conv":
            weight = w.reshape(w.shape[0], -1, *w.shape[2:]).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            groups = _conv_rows(x, node)
            per_group = weight.shape[0] // max(1, len(groups))
            parts = [(rows, weight[g * per_group:(g + 1) * per_group]) for rows, g in groups]
        else:  # Gemm (transB) / MatMul: rows of features against columns of the weight
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            parts = [(x.reshape(-1, x.shape[-1]), w if trans_b else w.T)]
        clipped = total = 0
        for rows, weight in parts:
            if len(rows) > max_rows:
                rows = rows[rng.choice(len(rows), max_rows, replace=False)]
            for channel in weight:  # one output channel at a time: memory stays rows x K
                mask = pmaddubsw(rows, channel[None, :])[1]
                clipped, total = clipped + int(mask.sum()), total + mask.size
        if total:
            result[name] = clipped / total
    return result


def unchecked_machine(metadata: dict[str, object]) -> str | None:
    """Why an ONNX file's INT8 results were never checked on this machine (None: an fp32 file, or one checked on a
    CPU with the same int8 ISA flags, hence the same kernels). ``metadata``: the file's decoded metadata."""
    import json

    if "quantization" not in metadata:
        return None
    try:
        check = json.loads(str(metadata.get("int8_check") or "null"))
    except ValueError:
        check = None
    here = cpu_isa()
    if not isinstance(check, dict) or not isinstance(check.get("flags"), list):
        return "its accuracy was never checked on any machine (quantized without audioclf's check)"
    if sorted(map(str, check["flags"])) == sorted(here["flags"]):
        return None
    return (f"its accuracy was checked on {check.get('cpu')} (flags {' '.join(map(str, check['flags'])) or 'none'}: "
            f"{check.get('metric')} drop {check.get('drop_points')}), not on this {here['cpu']} (flags "
            f"{' '.join(here['flags']) or 'none'}); run audioclf quantize here to measure it")
