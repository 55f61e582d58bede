"""INT8 quantization with ONNX Runtime: static QDQ for conv models, dynamic for recurrent ones, the fp32-vs-int8
report of ``quantize_run`` on a run's test split, its gate on the validation split, and the AVX2 saturation that
7-bit weights rule out (simulated in numpy, so it is tested on any CPU)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from sklearn import metrics as skm
from torch import nn

from audioclf.data.manifest import Manifest
from audioclf.deploy import int8_kernels, onnx_predictor
from audioclf.deploy import quantize as quantize_module
from audioclf.deploy.int8_kernels import cpu_isa, pair_saturation, pmaddubsw
from audioclf.deploy.quantize import (QuantizationRefused, choose_method, quantizable_nodes, quantize_onnx,
                                      quantize_run)
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
    assert json.loads(props["classes"])


def test_int8_metadata_records_the_settings_the_machine_and_the_drop(report):
    props = {p.key: p.value for p in onnx.load(report["int8"]["path"]).metadata_props}
    settings = json.loads(props["quantization"])
    assert settings["method"] == "static" and settings["format"] == "QDQ" and settings["per_channel"] is True
    assert settings["reduce_range"] is True and "VNNI" in settings["why"] and settings["kept_float"] == []
    assert settings["weights"].startswith("int8") and settings["activations"].startswith("int8")
    assert settings["quantized_on"] == cpu_isa()
    check = json.loads(props["int8_check"])  # where and how the drop was measured
    assert check["flags"] == cpu_isa()["flags"] and check["cpu"] == cpu_isa()["cpu"]
    assert check["split"] == "val" and check["metric"] == "accuracy"
    gate = report["gate"]
    assert check["drop_points"] == pytest.approx(gate["drop_points"])
    assert gate["drop_points"] == pytest.approx(100 * (gate["fp32"] - gate["int8"])) and gate["passed"]
    assert report["settings"] == settings


def test_cpu_isa_reads_the_int8_flags_of_x86_and_arm(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx avx2 fma\n\n"
                   "processor\t: 1\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx avx2 fma\n")
    info = cpu_isa(x86)
    assert info["cpu"] == "AMD EPYC 7B12" and info["flags"] == ["avx2"] and "16 bits" in info["int8_path"]
    vnni = tmp_path / "vnni"
    vnni.write_text("model name\t: Xeon\nflags\t\t: avx2 avx512f avx512bw avx512_vnni amx_int8\n")
    assert cpu_isa(vnni)["flags"] == ["avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_int8"]
    assert "no saturation" in cpu_isa(vnni)["int8_path"]
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nCPU part\t: 0xd0c\n")
    assert cpu_isa(arm)["flags"] == ["asimddp", "i8mm"]


# --- the AVX2 u8 x s8 path, simulated -------------------------------------------------------------
def test_pmaddubsw_adds_pairs_in_16_bits_with_saturation():
    a = np.array([[255, 255, 1, 2, 255, 255, 255]], dtype=np.uint8)
    w = np.array([[127, 127, -3, 4, -128, -128, 64]], dtype=np.int8)
    sums, clipped = pmaddubsw(a, w)
    # 2*255*127 = 64770 -> 32767; 1*-3 + 2*4 = 5; 2*255*-128 -> -32768; the odd last element pairs with a zero
    assert sums.tolist() == [[32767, 5, -32768, 255 * 64]]
    assert clipped.tolist() == [[True, False, True, False]]
    # 7-bit weights (|w| <= 64): even the largest activations cannot clip a pair
    worst = pmaddubsw(np.full((1, 2), 255, np.uint8), np.array([[-64, -64]], np.int8))
    assert worst[0][0, 0] == -32640 and not worst[1].any()


def test_7bit_weights_cannot_saturate_on_avx2_while_8bit_weights_do(run_dir, report, tmp_path):
    """Why INT8 files use ``reduce_range``: on the trained model, full 8-bit weights make an AVX2 CPU (no VNNI)
    clip pair sums in real layers, 7-bit ones in none; checked by simulation, so on any CPU."""
    fp32 = OnnxPredictor(report["fp32"]["path"])
    features = fp32.frontend(torch.from_numpy(_dataset_waves(run_dir, 24))).detach().numpy()
    full = tmp_path / "full_range.onnx"
    quantize_onnx(report["fp32"]["path"], full, [features[:12], features[12:]], reduce_range=False)
    props = {p.key: p.value for p in onnx.load(str(full)).metadata_props}
    assert json.loads(props["quantization"])["reduce_range"] is False
    layers = quantizable_nodes(report["fp32"]["path"])
    seven = pair_saturation(report["int8"]["path"], [features])
    eight = pair_saturation(full, [features])
    assert set(seven) == set(eight) == set(layers)  # every conv and dense layer simulated
    assert all(share == 0 for share in seven.values())
    assert max(eight.values()) > 1e-3  # the first conv clips a few % of its pair sums
    weights = [w for w in onnx.load(report["int8"]["path"]).graph.initializer if w.data_type == onnx.TensorProto.INT8
               and len(w.dims) > 1]
    assert weights and max(np.abs(onnx.numpy_helper.to_array(w)).max() for w in weights) <= 64

    if "16 bits" in cpu_isa()["int8_path"]:  # this CPU runs the clipping kernel: the damage is measurable here too
        reference = fp32.session.run(None, {fp32.input_name: features})[0]
        error = {path: np.mean((onnx_session(path).run(None, {fp32.input_name: features})[0] - reference) ** 2)
                 for path in (full, report["int8"]["path"])}
        # 8-bit weights are finer, yet clipped pairs make them far worse than 7-bit ones on AVX2 (60x here)
        assert error[full] > 5 * error[report["int8"]["path"]]


# --- the gate ------------------------------------------------------------------------------------------
def _worse_int8(monkeypatch, drops):
    """The gate sees these drops, one per INT8 candidate it evaluates (then the last one again)."""
    seen = list(drops)
    monkeypatch.setattr(quantize_module, "drop_in_points", lambda *a: seen.pop(0) if len(seen) > 1 else seen[0])


def test_quantize_refuses_a_large_drop_leaves_no_file_and_names_the_sensitive_layers(run_dir, report, monkeypatch):
    run = RunDir(run_dir)
    int8_path = run.root / "model.features.int8.onnx"
    _worse_int8(monkeypatch, [3.0])
    with pytest.raises(QuantizationRefused) as refused:
        quantize_run(run_dir, calibration=16)
    message = str(refused.value)
    assert "drop of 3.00 points > max drop 1" in message and "no INT8 file written" in message
    assert "--keep-float" in message and "--force" in message and "\n" not in message
    scan = refused.value.report["sensitivity"]
    layers = quantizable_nodes(run.root / "model.features.onnx")
    assert sorted(name for name, _ in scan) == sorted(layers)  # every layer scanned, most sensitive first
    assert [share for _, share in scan] == sorted((share for _, share in scan), reverse=True)
    assert scan[0][1] > 0 and scan[0][0] in message
    # neither the INT8 file of the earlier (passing) quantization nor its report outlives the refusal
    assert not int8_path.exists() and not (run.root / "quantization.json").exists()
    assert RunDir(run_dir).read_quantization() is None

    forced = quantize_run(run_dir, calibration=16, force=True)
    assert forced["gate"]["forced"] and not forced["gate"]["passed"] and int8_path.exists()


def test_keep_float_auto_keeps_the_most_sensitive_layer_in_float(run_dir, report, monkeypatch):
    _worse_int8(monkeypatch, [3.0, 0.5])  # all-int8 fails the gate, the first mixed model passes
    result = quantize_run(run_dir, calibration=16, keep_float="auto")
    top = result["sensitivity"][0][0]
    assert result["settings"]["kept_float"] == [top] and result["gate"]["passed"]
    model = onnx.load(result["int8"]["path"])
    node = next(n for n in model.graph.node if n.name == top)
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    assert producers.get(node.input[1]) != "DequantizeLinear"  # its weight stays a float initializer
    assert json.loads({p.key: p.value for p in model.metadata_props}["quantization"])["kept_float"] == [top]
    quantize_run(run_dir, calibration=16)  # the shared run back to its all-int8 model for the other tests


def test_int8_model_on_a_cpu_with_other_kernels_gives_one_notice(report, monkeypatch, caplog):
    monkeypatch.setattr(onnx_predictor, "_NOTIFIED", set())
    with caplog.at_level(logging.WARNING, logger="audioclf.deploy.onnx_predictor"):
        OnnxPredictor(report["int8"]["path"])  # checked on this very CPU: nothing to say
        assert not caplog.records
        other = {"cpu": "Xeon", "flags": ["avx2", "avx512f", "avx512bw", "avx512_vnni"], "int8_path": "vnni"}
        monkeypatch.setattr(int8_kernels, "cpu_isa", lambda: other)
        for _ in range(3):
            OnnxPredictor(report["int8"]["path"])
        OnnxPredictor(report["fp32"]["path"])  # fp32 files run the same everywhere
    assert len(caplog.records) == 1
    text = caplog.records[0].getMessage()
    assert "not checked on this machine" in text and "avx512_vnni" in text and cpu_isa()["cpu"] in text


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
    with pytest.raises(ConfigError, match="no layer named 'conv9'.*features.0/Conv"):
        quantize_onnx(fp32, tmp_path / "y.onnx", calibration=None, keep_float=["conv9"])
    with pytest.raises(ConfigError, match="max_drop=-1"):
        quantize_run(run_dir, max_drop=-1)
    assert not (tmp_path / "y.onnx").exists()
