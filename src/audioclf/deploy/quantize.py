"""INT8 post-training quantization with ONNX Runtime, gated on the validation split against the fp32 model.

The deployable path: export the run to ONNX (:mod:`audioclf.export`), then

* **static** (conv models, the DCASE path): ``quantize_static`` in QDQ format with per-channel int8
  weights and int8 activations whose ranges (MinMax) come from N calibration clips of the training split;
* **dynamic** (LSTM / GRU / Linear-only models): ``quantize_dynamic``, int8 weights, activation ranges
  measured per batch at run time (no calibration; ONNX Runtime quantizes LSTM/GRU weights this way).

Weights use 7 of their 8 bits (``reduce_range``) in both: on x86-64 without VNNI (AVX2-only CPUs: older servers,
laptops, many edge boards) ONNX Runtime's u8 x s8 kernels add pairs of products in 16 bits, which saturate with
full-range weights and can ruin a model without a warning (:mod:`.int8_kernels` models it). 7-bit weights
cannot saturate, so one file holds on every CPU it runs on, at the cost of one bit where VNNI would not need it.
The file's ``quantization`` metadata records these settings and why; ``int8_check`` the machine (CPU, ISA
flags) where its accuracy drop was measured.

``quantize_run`` writes the INT8 file only when it loses at most ``max_drop`` points on the validation split
(or with ``force``); a refusal names the layers a per-layer scan found most sensitive, which
``keep_float`` leaves in float (mixed precision).

``method="auto"`` takes dynamic when the graph has recurrent layers or no convolution, else static. When
the front-end is inside the graph it stays fp32 (the log of a quantized power spectrum loses the quiet
bands); only the network after it is quantized, as on a device where features come from a DSP library.

Needs the ``deploy`` extra: ``pip install 'audioclf[deploy]'``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import metrics as M
from ..config import config_from_dict
from ..data.manifest import Manifest
from ..errors import AudioclfError, BudgetExceeded, ConfigError, DataError
from ..files import atomic_write_bytes, atomic_write_text, jsonable
from ..runs import RunDir, write_report
from ..training.evaluate import Probabilities
from ..training.inputs import AudioInputs
from .int8_kernels import cpu_isa

log = logging.getLogger(__name__)

__all__ = ["METHODS", "QuantizationRefused", "choose_method", "layer_sensitivity", "onnx_probabilities",
           "quantizable_nodes", "quantization_settings", "quantize_onnx", "quantize_run"]

METHODS = ("auto", "static", "dynamic")
_RECURRENT = {"LSTM", "GRU", "RNN"}


def _import_quantization():
    from .export import import_onnx, import_onnxruntime

    import_onnx()
    import_onnxruntime()
    try:
        from onnxruntime import quantization
    except ImportError:  # pragma: no cover - ships with onnxruntime
        raise AudioclfError("INT8 quantization needs onnxruntime: pip install 'audioclf[deploy]'") from None
    return quantization


def choose_method(model_path: str | Path, method: str = "auto") -> str:
    """"static" or "dynamic" for this graph (see the module docstring for the rule)."""
    if method not in METHODS:
        raise ConfigError(f"quantization method '{method}'; expected one of {', '.join(METHODS)}")
    if method != "auto":
        return method
    from .export import import_onnx

    ops = {node.op_type for node in import_onnx().load(str(model_path)).graph.node}
    return "dynamic" if ops & _RECURRENT or "Conv" not in ops else "static"


def _frontend_nodes(model_path: str | Path) -> list[str]:
    """Names of the exported front-end's nodes (the exporter prefixes them with the module path)."""
    from .export import import_onnx

    graph = import_onnx().load(str(model_path)).graph
    return [node.name for node in graph.node if node.name.startswith(("/frontend/", "/standardize/"))]


class _Calibration:
    """ONNX Runtime ``CalibrationDataReader`` over a list of input batches."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self.input_name = input_name
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}


def _preprocess(model_path: Path, out_path: Path) -> Path:
    """ONNX Runtime's recommended pre-processing (shape inference + graph optimisation) before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(model_path), str(out_path))
        return out_path
    except Exception as exc:  # optional step: quantizing the raw graph still works
        log.warning("ONNX pre-processing failed for %s (%s); quantizing the graph as exported", model_path, exc)
        return model_path


QUANTIZABLE = {"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU"}  # the layers a scan may keep float
PORTABLE_WHY = ("7-bit weights (reduce_range): AVX2 CPUs without VNNI add u8 x s8 products in pairs in 16 bits and "
                "clip them when weights use all 8 bits; with 7 bits no pair can clip, so the file gives the same "
                "results on every CPU ONNX Runtime supports (VNNI, AMX, ARM dot products: exact either way)")


def quantization_settings(method: str, reduce_range: bool = True, keep_float: Iterable[str] = ()) -> dict[str, Any]:
    """What an INT8 file was made with and why (its ``quantization`` metadata), with the machine that made it."""
    static = method == "static"
    return {
        "method": method,
        "format": "QDQ" if static else "QOperator (dynamic)",
        "weights": "int8 symmetric, per output channel" if static else "int8 symmetric, per tensor",
        "activations": "int8, ranges from MinMax calibration" if static else "uint8, range measured per batch",
        "per_channel": static,
        "reduce_range": bool(reduce_range),
        "kept_float": sorted(keep_float),
        "why": PORTABLE_WHY if reduce_range else "full 8-bit weights: exact only on CPUs with 32-bit int8 dot products",
        "quantized_on": cpu_isa(),
    }


def quantizable_nodes(model_path: str | Path, exclude_frontend: bool = True) -> list[str]:
    """Names of the layers quantization would turn to INT8 (as named after ONNX pre-processing, which is what
    ``keep_float`` refers to), in graph order."""
    from .export import import_onnx

    _import_quantization()
    with tempfile.TemporaryDirectory() as tmp:
        source = _preprocess(Path(model_path), Path(tmp) / "pre.onnx")
        frontend = set(_frontend_nodes(source)) if exclude_frontend else set()
        graph = import_onnx().load(str(source)).graph
    return [n.name for n in graph.node if n.op_type in QUANTIZABLE and n.name and n.name not in frontend]


def quantize_onnx(
    model_path: str | Path,
    out_path: str | Path,
    calibration: Iterable[np.ndarray] | None = None,
    method: str = "auto",
    exclude_frontend: bool = True,
    keep_float: Iterable[str] = (),
    reduce_range: bool = True,
) -> str:
    """Quantize an fp32 ONNX file to INT8 at ``out_path`` (written atomically); returns the method used.

    ``calibration``: input batches for static quantization (the graph's own input: features or waveforms).
    ``keep_float``: names of layers (:func:`quantizable_nodes`) left in float: mixed precision.
    ``reduce_range=False`` (8-bit weights) is for studying the saturation it causes, not for deployment.
    The audioclf metadata of the input model is carried over, with ``quantization`` (:func:`quantization_settings`,
    JSON) added.
    """
    q = _import_quantization()
    from .export import import_onnx

    onnx = import_onnx()
    model_path, out_path = Path(model_path), Path(out_path)
    chosen = choose_method(model_path, method)
    keep_float = list(dict.fromkeys(keep_float))
    with tempfile.TemporaryDirectory() as tmp:
        source = _preprocess(model_path, Path(tmp) / "pre.onnx")
        target = Path(tmp) / "int8.onnx"
        names = {node.name for node in onnx.load(str(source)).graph.node}
        unknown = [name for name in keep_float if name not in names]
        if unknown:
            raise ConfigError(f"keep_float: no layer named {unknown[0]!r} in {model_path}; quantizable layers: "
                              f"{', '.join(quantizable_nodes(model_path, exclude_frontend)[:12])}")
        excluded = (_frontend_nodes(source) if exclude_frontend else []) + keep_float
        if chosen == "static":
            if calibration is None:
                raise ConfigError("static INT8 quantization needs calibration batches (training clips)")
            input_name = onnx.load(str(source)).graph.input[0].name
            q.quantize_static(
                str(source), str(target), _Calibration(input_name, calibration),
                quant_format=q.QuantFormat.QDQ, per_channel=True,
                activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                calibrate_method=q.CalibrationMethod.MinMax, nodes_to_exclude=excluded, reduce_range=reduce_range,
            )
        else:
            q.quantize_dynamic(str(source), str(target), weight_type=q.QuantType.QInt8, nodes_to_exclude=excluded,
                               reduce_range=reduce_range)
        proto = onnx.load(str(target))
        props = {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}
        props["quantization"] = json.dumps(quantization_settings(chosen, reduce_range, keep_float))
        onnx.helper.set_model_props(proto, props)
        atomic_write_bytes(out_path, proto.SerializeToString())
    return chosen


def with_metadata(model_path: str | Path, out_path: str | Path, extra: dict[str, str]) -> Path:
    """A copy of an ONNX file at ``out_path`` (atomically) with ``extra`` added to its metadata."""
    from .export import import_onnx

    onnx = import_onnx()
    proto = onnx.load(str(model_path))
    props = {p.key: p.value for p in proto.metadata_props} | extra
    onnx.helper.set_model_props(proto, props)
    return atomic_write_bytes(Path(out_path), proto.SerializeToString())


def onnx_probabilities(predictor) -> Probabilities:
    """A probability function (:mod:`audioclf.training.evaluate`) running an :class:`OnnxPredictor`."""
    return lambda batch: predictor.window_probabilities(batch.numpy())


def _calibration_and_evaluation(run: RunDir, state: dict[str, Any], calibration: int, seed: int) -> AudioInputs:
    """The run's inputs holding ``calibration`` random training clips, the validation split (the gate) and the
    test split (the report), decoded as ``evaluate`` does."""
    cfg = config_from_dict(state["config"])
    cfg.data.split = "given"
    manifest = Manifest.from_csv(run.manifest, classes=state["classes"], task=state["task"])
    train = [item for item in manifest if item.split == "train"]
    if not train:
        raise DataError(f"{run.manifest}: no train items to calibrate on")
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(len(train), size=min(calibration, len(train)), replace=False).tolist())
    items = [train[i] for i in sorted(chosen)] + [item for item in manifest if item.split in ("val", "test")]
    if not any(item.split == "test" for item in items):
        raise DataError(f"{run.manifest}: the run has no test split to evaluate on")
    inputs = AudioInputs(cfg)
    inputs.prepare(manifest.with_items(items), training=False)  # a subset: its classes need not all be there
    return inputs


def gate_metric(metrics: dict[str, float], state: dict[str, Any]) -> str:
    """What the INT8 gate compares: accuracy where the task has it, else the run's monitored metric."""
    if "accuracy" in metrics:
        return "accuracy"
    monitor = state["config"].get("train", {}).get("monitor") or M.primary_metric(state["task"])
    return monitor if monitor in metrics else M.primary_metric(state["task"])


def drop_in_points(metric: str, fp32: float, int8: float) -> float:
    """How much worse INT8 is: in percentage points for scores (0..1), in the metric's own unit for losses."""
    if M.higher_is_better(metric):
        return 100.0 * (fp32 - int8)
    return int8 - fp32


class QuantizationRefused(BudgetExceeded):
    """The INT8 model dropped more than the allowed ``max_drop``; ``report`` holds the numbers and the layer scan."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


def _logits(path: Path, batches: list[np.ndarray]) -> np.ndarray:
    from .onnx_predictor import onnx_session

    session = onnx_session(path, threads=1, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: batch.astype(np.float32)})[0] for batch in batches])


def layer_sensitivity(fp32_path: str | Path, batches: list[np.ndarray], method: str = "auto",
                      keep_float: Iterable[str] = ()) -> list[tuple[str, float]]:
    """Each quantizable layer with the share of the INT8 model's logit error (mean squared, on ``batches``) that
    goes away when that layer alone stays float; most sensitive first. One quantization per layer."""
    fp32_path, kept = Path(fp32_path), list(keep_float)
    reference = _logits(fp32_path, batches)
    with tempfile.TemporaryDirectory() as tmp:
        def error(extra: list[str]) -> float:
            path = Path(tmp) / "scan.onnx"
            quantize_onnx(fp32_path, path, batches, method, keep_float=kept + extra)
            return float(np.mean((_logits(path, batches) - reference) ** 2))

        base = error([])
        layers = [name for name in quantizable_nodes(fp32_path) if name not in kept]
        ranked = [(name, (base - error([name])) / base if base > 0 else 0.0) for name in layers]
    return sorted(ranked, key=lambda pair: -pair[1])


def quantize_run(
    run_dir: str | Path,
    calibration: int = 200,
    method: str = "auto",
    with_frontend: bool = False,
    which: str = "best",
    batch_size: int = 32,
    max_drop: float | None = 1.0,
    force: bool = False,
    keep_float: str | Iterable[str] = (),
) -> dict[str, Any]:
    """Export the run (fp32: ``RUN/model.features.onnx``, or ``RUN/model.wave.onnx`` with the front-end), quantize
    it next to it (``RUN/model.features.int8.onnx`` / ``model.wave.int8.onnx``) and evaluate both.

    The gate: on the validation split (the test split when the run has none), INT8 may lose at most ``max_drop``
    points of accuracy (or of the run's monitored metric; see :func:`drop_in_points`) on this machine, else
    :class:`QuantizationRefused` is raised, naming the layers a scan (:func:`layer_sensitivity`) found most
    sensitive, and no INT8 file is left (``force=True`` writes it anyway; ``max_drop=None``: no gate).
    ``keep_float``: layer names left in float, or ``"auto"``: the most sensitive layers, one at a time, until the
    gate passes. The INT8 file's metadata records the settings, this machine's CPU and its ISA flags, and the
    drop measured here (``int8_check``): a predictor on a CPU with other flags says it was not checked there.

    Calibration uses ``calibration`` training clips drawn with the run's seed. Returns (and writes to
    ``RUN/quantization.json``)::

        {"method", "n_calibration", "fp32": {"path", "bytes", "metrics"}, "int8": {...},
         "drop": {metric: how much worse int8 is (fp32 - int8 for scores, int8 - fp32 for losses)},
         "gate": {"split", "metric", "fp32", "int8", "drop_points", "max_drop", "passed", "forced"},
         "settings": quantization_settings(...), "sensitivity": [[layer, share], ...] (when scanned),
         "size_ratio": int8 bytes / fp32 bytes, "seconds"}

    Metrics are on the run's test split with the same decoding and crops as ``evaluate_run``, including
    per-group results (e.g. per device).
    """
    if int(calibration) < 1:
        raise ConfigError(f"calibration={calibration}: expected at least 1 training clip")
    if max_drop is not None and not float(max_drop) >= 0:
        raise ConfigError(f"max_drop={max_drop}: expected a number of points >= 0")
    _import_quantization()
    started = time.perf_counter()
    run = RunDir(run_dir).require()
    with run.lock():  # not while a training or another quantization writes this folder
        return _quantize_locked(run, which, calibration, method, with_frontend, batch_size, started,
                                max_drop, force, keep_float)


def _quantize_locked(run: RunDir, which: str, calibration: int, method: str, with_frontend: bool, batch_size: int,
                     started: float, max_drop: float | None, force: bool, keep_float) -> dict[str, Any]:
    from .export import export_onnx, exported_name
    from .onnx_predictor import OnnxPredictor

    state = run.load_checkpoint(which)
    if state.get("input_kind", "audio") != "audio":
        raise ConfigError(f"{run.root}: INT8 quantization calibrates on audio clips; this run was trained on "
                          f"{state['input_kind']}")
    # What an earlier quantization left must not outlive an interrupted or refused one (it would be read as
    # this one's): the INT8 file appears only once it passed the gate.
    (run.root / "quantization.json").unlink(missing_ok=True)
    inputs = _calibration_and_evaluation(run, state, int(calibration), seed=int(state["config"].get("seed", 0)))

    fp32_path = export_onnx(run.root, with_frontend=with_frontend, which=which)  # model.<input>.onnx
    fp32 = OnnxPredictor(fp32_path)
    int8_path = run.root / exported_name(fp32.metadata["input"], int8=True)
    int8_path.unlink(missing_ok=True)
    calib_set = inputs.dataset("train", train=False)
    batches = []  # kept: a layer scan quantizes again with the same calibration
    for start in range(0, len(calib_set), batch_size):
        waves = torch.stack([calib_set[i][0] for i in range(start, min(len(calib_set), start + batch_size))])
        with torch.no_grad():
            batches.append(waves.numpy() if fp32.frontend is None else fp32.frontend(waves).numpy())

    split = "val" if inputs.count("val") else "test"
    fp32_gate = inputs.evaluate(onnx_probabilities(fp32), split).metrics
    metric = gate_metric(fp32_gate, state)
    auto = keep_float == "auto"
    kept = [] if auto else [keep_float] if isinstance(keep_float, str) else list(keep_float)
    sensitivity = None
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / int8_path.name  # evaluated away from the run: only a file that passed lands there

        def attempt() -> tuple[str, dict[str, Any]]:
            used = quantize_onnx(fp32_path, candidate, batches, method, keep_float=kept)
            int8_gate = inputs.evaluate(onnx_probabilities(OnnxPredictor(candidate, measuring=True)), split).metrics
            drop = drop_in_points(metric, fp32_gate[metric], int8_gate[metric])
            return used, {"split": split, "metric": metric, "fp32": fp32_gate[metric], "int8": int8_gate[metric],
                          "drop_points": drop, "max_drop": max_drop, "forced": False,
                          "passed": max_drop is None or not drop > max_drop}  # a NaN drop does not pass

        used, gate = attempt()
        if not gate["passed"]:
            sensitivity = layer_sensitivity(fp32_path, batches, used, kept)
            log.info("INT8 layer scan of %s: %s", fp32_path, sensitivity)
        # --keep-float auto: the most sensitive layers go back to float one at a time until the gate passes
        for name, _ in sensitivity if auto and sensitivity else []:
            if gate["passed"]:
                break
            kept.append(name)
            used, gate = attempt()
        gate["forced"] = not gate["passed"] and force
        settings = quantization_settings(used, True, kept)
        partial = {"method": used, "gate": gate, "settings": settings,
                   "sensitivity": None if sensitivity is None else [list(pair) for pair in sensitivity]}
        if not (gate["passed"] or force):
            raise QuantizationRefused(_refusal(run, gate, used, sensitivity), partial)
        check = {**cpu_isa(), **{key: gate[key] for key in ("split", "metric", "fp32", "int8", "drop_points")}}
        with_metadata(candidate, int8_path, {"int8_check": json.dumps(jsonable(check))})
    int8 = OnnxPredictor(int8_path)

    results = {}
    for name, predictor, path in (("fp32", fp32, fp32_path), ("int8", int8, int8_path)):
        results[name] = {"path": str(path), "bytes": path.stat().st_size,
                         "metrics": inputs.evaluate(onnx_probabilities(predictor), "test").metrics}
    drop = {}
    for key, value in results["fp32"]["metrics"].items():
        other = results["int8"]["metrics"].get(key)
        if other is None or not np.isfinite(value) or not np.isfinite(other):
            continue
        drop[key] = value - other if M.higher_is_better(key) else other - value
    report = {
        # what both models were made from: a reader of this file checks it is still the run's checkpoint
        **{key: fp32.metadata.get(key) for key in ("run_id", "checkpoint", "checkpoint_sha256")},
        **partial,
        "n_calibration": len(calib_set) if used == "static" else 0,
        "with_frontend": bool(with_frontend),
        "n_test": inputs.count("test"),
        **results,
        "drop": drop,
        "size_ratio": results["int8"]["bytes"] / results["fp32"]["bytes"],
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_text(run.root / "quantization.json", json.dumps(jsonable(report), indent=2) + "\n")
    write_report(run.root)  # report.md gains the fp32 vs int8 table
    return report


def _refusal(run: RunDir, gate: dict[str, Any], method: str, sensitivity: list[tuple[str, float]] | None) -> str:
    """One line: the drop against the limit, the layers to keep float, what to try."""
    unit = "points" if M.higher_is_better(gate["metric"]) else f"({gate['metric']} units)"
    text = (f"{run.root}: INT8 {gate['metric']} on the {gate['split']} split is {gate['int8']:.4f} against fp32 "
            f"{gate['fp32']:.4f}, a drop of {gate['drop_points']:.2f} {unit} > max drop {gate['max_drop']:g}: "
            "no INT8 file written.")
    top = [(name, share) for name, share in (sensitivity or [])[:3] if share > 0]
    if top:
        text += (" Most sensitive layers (share of the INT8 error gone when kept float): "
                 + ", ".join(f"{name} ({share:.0%})" for name, share in top)
                 + f". Try --keep-float {top[0][0]} or --keep-float auto (mixed precision),")
    else:
        text += " Try"
    other = "dynamic" if method == "static" else "static"
    return text + f" --method {other}, or --force to write it anyway"
