"""INT8 quantization with ONNX Runtime: static QDQ for conv models, dynamic for recurrent ones, and the
fp32-vs-int8 report of ``quantize_run`` on a run's test split."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from sklearn import metrics as skm
from torch import nn

from audioclf.data.manifest import Manifest
from audioclf.deploy.quantize import choose_method, quantize_onnx, quantize_run
from audioclf.errors import ConfigError
from audioclf.deploy.export import export_onnx
from audioclf.deploy.predictor import Predictor
from audioclf.deploy.onnx_predictor import OnnxPredictor, onnx_session
from audioclf.runs import RunDir
from test_export import shared_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def report(run_dir) -> dict:
    return quantize_run(run_dir, calibration=16)


def _dataset_waves(run_dir: Path, n: int) -> np.ndarray:
    from audioclf.data.audio import load_audio

    data = Path(RunDir(run_dir).read_config()["data"]["path"])
    files = sorted(data.rglob("*.wav"))[:n]
    return np.stack([load_audio(f, sample_rate=16000, mono=True)[0][:16000] for f in files]).astype(np.float32)


def test_quantize_run_writes_int8_model_and_report(run_dir, report):
    run = RunDir(run_dir)
    assert report["method"] == "static" and report["n_calibration"] == 16
    # Named by what they take (features here): an INT8 file never sits next to an fp32 file of another input.
    assert Path(report["int8"]["path"]) == run.root / "model.features.int8.onnx"
    assert Path(report["fp32"]["path"]) == run.root / "model.features.onnx"
    # 46K fp32 weights -> int8: about a quarter, plus scales / zero points
    assert report["int8"]["bytes"] < 0.4 * report["fp32"]["bytes"]
    assert report["size_ratio"] == pytest.approx(report["int8"]["bytes"] / report["fp32"]["bytes"])
    assert report["n_test"] == len(Manifest.from_csv(run.manifest).subset("test")) > 0
    # Each model's metrics recomputed with scikit-learn from its own predictions on the test files, one file at a
    # time (1 s files, 1 s clips: one window each, as the evaluation sees them).
    from audioclf.data.audio import load_audio

    test = Manifest.from_csv(run.manifest).subset("test")
    waves = [load_audio(item.path, sample_rate=16000, mono=True)[0] for item in test]
    assert {len(w) for w in waves} == {16000}
    for name in ("fp32", "int8"):
        predictor = OnnxPredictor(report[name]["path"])
        probs = np.stack([predictor.predict_wave(w) for w in waves]).astype(np.float64)
        probs /= probs.sum(axis=1, keepdims=True)
        metrics = report[name]["metrics"]
        assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(test.label_indices(), probs.argmax(1)))
        expected = skm.log_loss(test.label_indices(), probs, labels=range(len(predictor.classes)))
        assert metrics["log_loss"] == pytest.approx(expected, abs=1e-5)
    fp32, int8 = report["fp32"]["metrics"], report["int8"]["metrics"]
    assert report["drop"]["accuracy"] == pytest.approx(fp32["accuracy"] - int8["accuracy"])
    assert report["drop"]["log_loss"] == pytest.approx(int8["log_loss"] - fp32["log_loss"])  # worse = positive
    assert json.loads((run.root / "quantization.json").read_text())["method"] == "static"


def test_fp32_onnx_evaluation_equals_pytorch_evaluation(run_dir, report):
    from audioclf.workflows.evaluation import evaluate_run

    torch_metrics = evaluate_run(run_dir, device="cpu")["metrics"]
    for name in ("accuracy", "log_loss"):
        assert report["fp32"]["metrics"][name] == pytest.approx(torch_metrics[name], abs=1e-4)


def test_int8_graph_is_quantized_per_channel(run_dir, report):
    model = onnx.load(report["int8"]["path"])
    ops = [node.op_type for node in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    weights = {init.name: init for init in model.graph.initializer}
    int8_weights = [w for w in weights.values() if w.data_type == onnx.TensorProto.INT8 and len(w.dims) == 4]
    assert len(int8_weights) == 3  # the baseline's three conv kernels
    # per-channel: one scale per output channel of each conv
    dequant = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights
               and len(weights[n.input[0]].dims) == 4]
    assert sorted(int(np.prod(weights[n.input[1]].dims)) for n in dequant) == [16, 16, 32]
    props = {p.key: p.value for p in model.metadata_props}
    assert "static" in props["quantization"] and json.loads(props["classes"])


def test_int8_outputs_follow_fp32(run_dir, report):
    waves = _dataset_waves(run_dir, 40)
    fp32, int8 = OnnxPredictor(report["fp32"]["path"]), OnnxPredictor(report["int8"]["path"])
    a, b = fp32.logits(waves), int8.logits(waves)
    spread = a.std()
    # 8-bit weights and activations: errors of a few percent of the logit spread, same decisions mostly
    assert np.abs(a - b).mean() < 0.1 * spread
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.85
    probs = int8.predict_wave(waves[0])
    assert probs.shape == (len(fp32.classes),) and probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_frontend_stays_float_when_quantizing_a_full_graph(run_dir, tmp_path):
    full = export_onnx(run_dir, tmp_path / "full.onnx", with_frontend=True)
    waves = _dataset_waves(run_dir, 24)
    out = tmp_path / "full.int8.onnx"
    assert quantize_onnx(full, out, [waves[:12], waves[12:]]) == "static"
    model = onnx.load(str(out))
    frontend_ops = {n.op_type for n in model.graph.node if n.name.startswith("/frontend/")}
    assert "MatMul" in frontend_ops and not frontend_ops & {"QuantizeLinear", "DequantizeLinear"}  # the DFT
    reference = Predictor.from_run(run_dir, device="cpu").model
    with torch.no_grad():
        expected = reference(torch.from_numpy(waves)).numpy()
    got = OnnxPredictor(out).logits(waves)
    assert np.abs(got - expected).mean() < 0.1 * expected.std()


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.out = nn.Linear(32, 5)

    def forward(self, x):
        return self.out(self.lstm(x)[0].mean(dim=1))


def test_recurrent_models_get_dynamic_quantization(tmp_path):
    torch.manual_seed(0)
    model = _Recurrent().eval()
    x = torch.randn(4, 10, 16)
    fp32 = tmp_path / "lstm.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(model, (x,), str(fp32), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "b"}})
    assert choose_method(fp32) == "dynamic"
    out = tmp_path / "lstm.int8.onnx"
    assert quantize_onnx(fp32, out) == "dynamic"
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ops & {"DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulInteger"}
    with torch.no_grad():
        expected = model(x).numpy()
    got = onnx_session(out).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max())


def test_quantize_errors(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="calibration=0"):
        quantize_run(run_dir, calibration=0)
    with pytest.raises(ConfigError, match="method 'fast'"):
        choose_method(tmp_path / "x.onnx", "fast")
    fp32 = RunDir(run_dir).root / "model.features.onnx"
    if not fp32.exists():
        export_onnx(run_dir)
    with pytest.raises(ConfigError, match="calibration batches"):
        quantize_onnx(fp32, tmp_path / "y.onnx", calibration=None, method="static")
