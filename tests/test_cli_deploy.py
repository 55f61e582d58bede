"""The deployment commands as a user runs them: complexity, export, quantize, predict on ONNX, distill."""

import json

import pytest

from audioclf.cli import main
from audioclf.data.synth.demo import make_demo_dataset

TINY = ["train.epochs=2", "train.batch_size=16", "data.clip_seconds=1.0", "features.n_mels=40",
        "features.n_fft=512", "features.hop_length=320"]


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    data = make_demo_dataset(root / "data", n_per_class=10, seconds=1.0, seed=6)
    assert main(["train", "--data", str(data), "--out", str(root / "run"), *TINY, "model.name=dcase2022_baseline"]) == 0
    return root / "run", data


def test_complexity_of_a_model_name_uses_the_published_input(capsys):
    assert main(["complexity", "dcase2022_baseline"]) == 0
    printed = capsys.readouterr().out
    # conv + dense MACs on 40x51; the official baseline's 29.23 MMACs (Table 3 of González Poy (2022)) add pooling ops
    assert "29,203,560 MACs" in printed
    assert main(["complexity", "dcase2022_baseline", "--max-params", "1000"]) == 4  # over budget: its own code
    assert "1,000" in capsys.readouterr().err  # the limit is named with the numbers


def test_complexity_of_a_run_and_the_gate(run_and_data, capsys):
    run, _ = run_and_data
    assert main(["complexity", str(run), "--max-params", "128000", "--max-macs", "30e6"]) == 0
    assert "within the limits" in capsys.readouterr().out


def test_export_then_predict_with_the_onnx_model(run_and_data, tmp_path, capsys):
    run, data = run_and_data
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(run), "--out", str(onnx_path), "--with-frontend"]) == 0
    assert onnx_path.exists()
    files = sorted(data.rglob("*.wav"))[:2]
    capsys.readouterr()
    assert main(["predict", str(run), *map(str, files), "--top-k", "1"]) == 0
    torch_lines = capsys.readouterr().out.splitlines()
    assert main(["predict", str(onnx_path), *map(str, files), "--top-k", "1"]) == 0
    onnx_lines = capsys.readouterr().out.splitlines()
    # Same top-1 label for each file from the PyTorch run and the exported model.
    assert [l.split(": ")[1].split()[0] for l in torch_lines] == [l.split(": ")[1].split()[0] for l in onnx_lines]


def test_quantize_reports_fp32_next_to_int8(run_and_data, capsys):
    run, _ = run_and_data
    assert main(["quantize", str(run), "--calibration", "16"]) == 0
    printed = capsys.readouterr().out
    assert "fp32" in printed and "int8" in printed and "accuracy" in printed
    for name in ("model.features.onnx", "model.features.int8.onnx", "quantization.json"):  # every file, named
        assert f"wrote {run / name}" in printed
    result = json.loads((run / "quantization.json").read_text())
    assert result["int8"]["bytes"] < result["fp32"]["bytes"]
    gate = result["gate"]  # the verdict on the validation split, printed with the numbers it came from
    assert f"val accuracy: fp32 {gate['fp32']:.4f}, int8 {gate['int8']:.4f}" in printed
    assert "within the max drop 1.0" in printed


def test_quantize_over_the_max_drop_exits_4_without_an_int8_file(run_and_data, capsys, monkeypatch):
    from audioclf.deploy import quantize

    run, _ = run_and_data
    monkeypatch.setattr(quantize, "drop_in_points", lambda *a: 2.5)  # an INT8 model 2.5 points worse
    assert main(["quantize", str(run), "--calibration", "8", "--max-drop", "2"]) == 4
    captured = capsys.readouterr()
    assert "over the max drop 2.0" in captured.out
    error = captured.err.replace("\n", " ")  # the console wraps long lines
    assert "drop of 2.50 points > max drop 2" in error and "--keep-float" in error
    assert not (run / "model.features.int8.onnx").exists() and not (run / "quantization.json").exists()
    assert main(["quantize", str(run), "--calibration", "8", "--max-drop", "2", "--force"]) == 0
    assert "forced past the max drop 2.0" in capsys.readouterr().out
    assert (run / "model.features.int8.onnx").exists()


def test_distill_command(run_and_data, tmp_path):
    run, _ = run_and_data
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(run), "--out", str(out), "--T", "2", "--alpha", "0.5",
                 "model.name=small_cnn", "model.channels=[8,16]", "train.epochs=1", "features.n_mels=40",
                 "features.n_fft=512", "features.hop_length=320"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distillation"]["T"] == 2.0
    assert "accuracy" in summary["metrics"]["test"]


def test_exports_are_named_by_their_input_and_never_overwrite_each_other(run_and_data, capsys):
    from audioclf.deploy.onnx_predictor import OnnxPredictor

    run, data = run_and_data
    assert main(["quantize", str(run), "--calibration", "8"]) == 0
    assert main(["export", str(run), "--with-frontend"]) == 0
    assert f"wrote {run / 'model.wave.onnx'}" in capsys.readouterr().out
    wave, features = OnnxPredictor(run / "model.wave.onnx"), OnnxPredictor(run / "model.features.onnx")
    int8 = OnnxPredictor(run / "model.features.int8.onnx")
    assert wave.metadata["input"] == "waveform"
    assert features.metadata["input"] == int8.metadata["input"] == "features"  # the INT8 file's fp32 kept
    clip = str(next(data.rglob("*.wav")))
    assert wave.predict_files([clip])[0].label == features.predict_files([clip])[0].label
