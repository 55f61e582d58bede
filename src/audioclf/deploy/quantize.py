"""INT8 post-training quantization with ONNX Runtime, evaluated next to the fp32 model on the test split.

The deployable path: export the run to ONNX (:mod:`audioclf.export`), then

* **static** (conv models, the DCASE path): ``quantize_static`` in QDQ format with per-channel int8
  weights and int8 activations whose ranges (MinMax) come from N calibration clips of the training split;
* **dynamic** (LSTM / GRU / Linear-only models): ``quantize_dynamic``, int8 weights, activation ranges
  measured per batch at run time (no calibration; ONNX Runtime quantizes LSTM/GRU weights this way).

Weights use 7 of their 8 bits (``reduce_range``) in both: on x86-64 without VNNI (AVX2-only CPUs: older servers,
laptops, many edge boards) ONNX Runtime's u8 x s8 kernels add pairs of products in 16 bits, which saturate with
full-range weights and can ruin a model without a warning. 7-bit weights
cannot saturate, so one file holds on every CPU it runs on, at the cost of one bit where VNNI would not need it.

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
from ..errors import AudioclfError, ConfigError, DataError
from ..files import atomic_write_bytes, atomic_write_text, jsonable
from ..runs import RunDir, write_report
from ..training.evaluate import Probabilities
from ..training.inputs import AudioInputs

log = logging.getLogger(__name__)

__all__ = ["METHODS", "choose_method", "quantize_onnx", "onnx_probabilities", "quantize_run"]

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


def quantize_onnx(
    model_path: str | Path,
    out_path: str | Path,
    calibration: Iterable[np.ndarray] | None = None,
    method: str = "auto",
    exclude_frontend: bool = True,
) -> str:
    """Quantize an fp32 ONNX file to INT8 at ``out_path`` (written atomically); returns the method used.

    ``calibration``: input batches for static quantization (the graph's own input: features or waveforms).
    The audioclf metadata of the input model is carried over, with ``quantization`` added.
    """
    q = _import_quantization()
    from .export import import_onnx

    onnx = import_onnx()
    model_path, out_path = Path(model_path), Path(out_path)
    chosen = choose_method(model_path, method)
    with tempfile.TemporaryDirectory() as tmp:
        source = _preprocess(model_path, Path(tmp) / "pre.onnx")
        target = Path(tmp) / "int8.onnx"
        excluded = _frontend_nodes(source) if exclude_frontend else []
        if chosen == "static":
            if calibration is None:
                raise ConfigError("static INT8 quantization needs calibration batches (training clips)")
            input_name = onnx.load(str(source)).graph.input[0].name
            q.quantize_static(
                str(source), str(target), _Calibration(input_name, calibration),
                quant_format=q.QuantFormat.QDQ, per_channel=True,
                activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                calibrate_method=q.CalibrationMethod.MinMax, nodes_to_exclude=excluded, reduce_range=True,
            )
        else:
            q.quantize_dynamic(str(source), str(target), weight_type=q.QuantType.QInt8, nodes_to_exclude=excluded,
                               reduce_range=True)
        proto = onnx.load(str(target))
        props = {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}
        props["quantization"] = ("int8 static QDQ, per-channel 7-bit weights (reduce_range: no u8 x s8 saturation "
                                 "without VNNI), int8 activations (MinMax calibration)" if chosen == "static" else
                                 "int8 dynamic (7-bit weights: reduce_range, activations per batch)")
        onnx.helper.set_model_props(proto, props)
        atomic_write_bytes(out_path, proto.SerializeToString())
    return chosen


def onnx_probabilities(predictor) -> Probabilities:
    """A probability function (:mod:`audioclf.training.evaluate`) running an :class:`OnnxPredictor`."""
    return lambda batch: predictor.window_probabilities(batch.numpy())


def _calibration_and_test(run: RunDir, state: dict[str, Any], calibration: int, seed: int) -> AudioInputs:
    """The run's inputs holding ``calibration`` random training clips and the whole test split (decoded as
    ``evaluate`` does)."""
    cfg = config_from_dict(state["config"])
    cfg.data.split = "given"
    manifest = Manifest.from_csv(run.manifest, classes=state["classes"], task=state["task"])
    train = [item for item in manifest if item.split == "train"]
    if not train:
        raise DataError(f"{run.manifest}: no train items to calibrate on")
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(len(train), size=min(calibration, len(train)), replace=False).tolist())
    items = [train[i] for i in sorted(chosen)] + [item for item in manifest if item.split == "test"]
    if not any(item.split == "test" for item in items):
        raise DataError(f"{run.manifest}: the run has no test split to evaluate on")
    inputs = AudioInputs(cfg)
    inputs.prepare(manifest.with_items(items), training=False)  # a subset: its classes need not all be there
    return inputs


def quantize_run(
    run_dir: str | Path,
    calibration: int = 200,
    method: str = "auto",
    with_frontend: bool = False,
    which: str = "best",
    batch_size: int = 32,
) -> dict[str, Any]:
    """Export the run (fp32: ``RUN/model.features.onnx``, or ``RUN/model.wave.onnx`` with the front-end), quantize
    it next to it (``RUN/model.features.int8.onnx`` / ``model.wave.int8.onnx``) and evaluate both.

    Calibration uses ``calibration`` training clips drawn with the run's seed. Returns (and writes to
    ``RUN/quantization.json``)::

        {"method", "n_calibration", "fp32": {"path", "bytes", "metrics"}, "int8": {...},
         "drop": {metric: how much worse int8 is (fp32 - int8 for scores, int8 - fp32 for losses)},
         "size_ratio": int8 bytes / fp32 bytes, "seconds"}

    Metrics are on the run's test split with the same decoding and crops as ``evaluate_run``, including
    per-group results (e.g. per device).
    """
    if int(calibration) < 1:
        raise ConfigError(f"calibration={calibration}: expected at least 1 training clip")
    _import_quantization()
    started = time.perf_counter()
    run = RunDir(run_dir).require()
    with run.lock():  # not while a training or another quantization writes this folder
        return _quantize_locked(run, which, calibration, method, with_frontend, batch_size, started)


def _quantize_locked(run: RunDir, which: str, calibration: int, method: str, with_frontend: bool, batch_size: int,
                     started: float) -> dict[str, Any]:
    from .export import export_onnx, exported_name
    from .onnx_predictor import OnnxPredictor

    state = run.load_checkpoint(which)
    if state.get("input_kind", "audio") != "audio":
        raise ConfigError(f"{run.root}: INT8 quantization calibrates on audio clips; this run was trained on "
                          f"{state['input_kind']}")
    # What an earlier quantization left must not outlive an interrupted one (it would be read as this one's).
    (run.root / "quantization.json").unlink(missing_ok=True)
    inputs = _calibration_and_test(run, state, int(calibration), seed=int(state["config"].get("seed", 0)))

    fp32_path = export_onnx(run.root, with_frontend=with_frontend, which=which)  # model.<input>.onnx
    fp32 = OnnxPredictor(fp32_path)
    int8_path = run.root / exported_name(fp32.metadata["input"], int8=True)
    int8_path.unlink(missing_ok=True)
    calib_set = inputs.dataset("train", train=False)

    def batches():
        for start in range(0, len(calib_set), batch_size):
            waves = torch.stack([calib_set[i][0] for i in range(start, min(len(calib_set), start + batch_size))])
            inputs = waves.numpy()
            if fp32.frontend is not None:
                with torch.no_grad():
                    inputs = fp32.frontend(waves).numpy()
            yield inputs

    used = quantize_onnx(fp32_path, int8_path, batches(), method)
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
        "method": used,
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
