"""ONNX export: the DFT-conv front-end against FrontEnd / numpy, ONNX Runtime against PyTorch, metadata, and
OnnxPredictor against Predictor. Runs are made without a full training (see ``make_run``), which keeps
these tests fast; ``tests/test_distill.py`` covers a run written by the training code end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audioclf.config import load_config
from audioclf.data.audio import write_audio
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import AudioclfError, ConfigError
from audioclf.training.inputs.audio import AudioInputs, build_classifier, fit_standardizer
from audioclf.deploy.export import (ExportableFrontEnd, TwoStageDFT, dft_kernels, export_onnx,
                                   frontend_to_onnx_bytes, read_metadata)
from audioclf.features import FeatureConfig, FrontEnd
from audioclf.deploy.predictor import Predictor
from audioclf.deploy.onnx_predictor import OnnxPredictor, load_predictor, sigmoid, softmax
from audioclf.runs import RunDir
from audioclf.training.losses import build_loss
from audioclf.training.loop import supervised_step, train_one_epoch

# 16 kHz, 40 mels x 51 frames: the DCASE baseline's input shape at a quarter of the cost of 44.1 kHz.
FEATURES = ["features.n_mels=40", "features.n_fft=640", "features.hop_length=320"]


def make_run(root: Path, model: list[str] | None = None, epochs: int = 2, n_per_class: int = 5,
             extra: list[str] | None = None) -> Path:
    """A run directory as the trainer writes it (config, manifest, best checkpoint), trained for a
    few epochs with the library's own loop but without validation passes, plots or summary."""
    data = make_demo_dataset(root / "data", n_per_class=n_per_class, seconds=1.0, seed=1)
    overrides = [f"data.path={data}", f"out={root / 'run'}", "data.sample_rate=16000", "data.clip_seconds=1.0",
                 *FEATURES, *(model or ["model.name=dcase2022_baseline"]), *(extra or [])]
    inputs = AudioInputs(load_config(None, overrides))
    cfg = inputs.cfg
    torch.manual_seed(cfg.seed)
    inputs.prepare()
    prepared, task, classes = inputs.prepared, inputs.task, inputs.classes
    net = inputs.build_model()
    train_set = inputs.dataset("train", train=False)
    fit_standardizer(net, train_set, torch.device("cpu"))
    loader = torch.utils.data.DataLoader(train_set, batch_size=8, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):  # logits that mean something, so int8 / ONNX comparisons are not trivial
        train_one_epoch(net, loader, supervised_step(build_loss(task)), optimizer, torch.device("cpu"))
    net.eval()
    resolved = cfg.to_dict()
    resolved["data"].update(sample_rate=prepared.sample_rate, clip_seconds=prepared.clip_seconds)
    resolved["features"] = net.feature_config.to_dict() if net.feature_config else {}
    run = RunDir(root / "run").create()
    run.write_config(resolved)
    prepared.manifest.to_csv(run.manifest)
    run.save_checkpoint("best", {"spec": net.spec(), "task": task, "classes": classes, "config": resolved,
                                 "sample_rate": prepared.sample_rate, "clip_samples": prepared.n_samples,
                                 "epoch": epochs, "model": net.state_dict(), "val": {}})
    return run.root


_SHARED: dict[str, Path] = {}


def shared_run(tmp_path_factory) -> Path:
    """One DCASE-baseline run per test session, shared with test_quantize and test_distill (which only add
    files next to it), so the suite trains it once."""
    if "run" not in _SHARED:
        _SHARED["run"] = make_run(tmp_path_factory.mktemp("shared"))
    return _SHARED["run"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory)


# --- the export-friendly front-end --------------------------------------------------------------
def test_dft_kernels_give_the_numpy_power_spectrum():
    n_fft, win = 256, 200
    rng = np.random.default_rng(0)
    frame = rng.standard_normal(n_fft)
    kernels = dft_kernels(n_fft, win, dtype=torch.float64)[:, 0].numpy()  # (2K, n_fft)
    out = kernels @ frame
    k = n_fft // 2 + 1
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left:left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    expected = np.fft.rfft(frame * window)
    np.testing.assert_allclose(out[:k], expected.real, atol=1e-10)
    np.testing.assert_allclose(out[k:], expected.imag, atol=1e-10)


@pytest.mark.parametrize("settings", [
    dict(sample_rate=44100, n_fft=1764, hop_length=882, n_mels=40),  # DCASE 2022 base: 40 x 51
    dict(sample_rate=16000, n_fft=512, hop_length=160, n_mels=32, kind="mfcc", n_mfcc=13, pad_mode="reflect"),
    dict(sample_rate=16000, n_fft=400, win_length=300, hop_length=160, n_mels=24, power=1.0, log="log"),
    dict(sample_rate=8000, n_fft=256, hop_length=128, kind="spectrogram", top_db=None, image_scale=True),
    dict(sample_rate=16000, n_fft=512, hop_length=256, n_mels=40, center=False, fmin=50.0, fmax=7000.0),
    dict(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40, power=1.0, log="pcen"),
    dict(sample_rate=16000, n_fft=386, hop_length=160, n_mels=24),  # 2 x 193: one DFT matrix (no two stages)
    dict(sample_rate=16000, n_fft=389, hop_length=160, n_mels=24),  # prime and odd: one frame fewer than even
    dict(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40, normalize="utterance"),
    dict(sample_rate=16000, n_fft=512, hop_length=160, n_mels=32, kind="mfcc", n_mfcc=13, normalize="mean"),
])
def test_exportable_frontend_matches_frontend(settings):
    cfg = FeatureConfig(**settings)
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(cfg.sample_rate) / cfg.sample_rate
    wave = 0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05 * torch.randn(2, cfg.sample_rate, generator=generator)
    wave[1] *= 0.01  # a quiet clip: the per-example top_db floor must follow its own maximum
    ours = ExportableFrontEnd(cfg)(wave)
    reference = FrontEnd(cfg)(wave)
    assert ours.shape == reference.shape == (2, *FrontEnd(cfg).output_shape(cfg.sample_rate))
    # float32 DFT-by-convolution vs torch.stft's FFT; dB values span ~80 dB, image values 0..255
    scale = 255.0 if cfg.image_scale else 1.0
    tolerance = {"db": 2e-3, "log": 2e-4, "pcen": 1e-4, "none": 1e-4}[cfg.log] * scale
    assert (ours - reference).abs().max().item() < tolerance


@pytest.mark.parametrize("n, n1, n2", [(1764, 36, 49), (441, 21, 21), (45, 5, 9), (400, 16, 25)])
def test_two_stage_dft_gives_the_numpy_power_spectrum(n, n1, n2):
    # even and odd n1 (the real first stage keeps n1 // 2 + 1 real and (n1 - 1) // 2 imaginary rows), n_bins not
    # a multiple of n1 (the bins of the last k2 cut), several frames at once
    frames = np.random.default_rng(0).standard_normal((3, n))
    power = TwoStageDFT(n, n // 2 + 1, n1, n2, torch.float64)(torch.from_numpy(frames)).numpy()  # (bins, frames)
    expected = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    np.testing.assert_allclose(power.T, expected, rtol=1e-9, atol=1e-9 * expected.max())


def test_exported_frontend_is_few_large_nodes():
    """Each ONNX node costs time of its own at these sizes (benchmarks/inference.py): the DCASE front-end's DFT
    is two MatMuls (real first stage; twiddles, second stage and conjugation in one batched matrix), plus the mel
    MatMul, and no elementwise twiddle products."""
    import onnx

    cfg = FeatureConfig(sample_rate=44100, n_fft=1764, hop_length=882, n_mels=40)
    graph = onnx.load_from_string(frontend_to_onnx_bytes(cfg, torch.zeros(1, 44100))).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("MatMul") == 3
    # the window, |X|^2 (two), the dB scale and one in the frame count: no Mul left for twiddle factors (4 before)
    assert ops.count("Mul") <= 5


def test_exportable_frontend_in_float64_is_exact():
    cfg = FeatureConfig(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40, log="none")
    wave = torch.randn(1, 8000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = ExportableFrontEnd(cfg, dtype=torch.float64)(wave)
    reference = FrontEnd(cfg).double()(wave)  # FrontEnd keeps float32 constants: agreement to ~1e-7 relative
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-6, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_exportable_frontend_on_cuda_matches_cpu_frontend():
    cfg = FeatureConfig(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40)
    wave = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(2))
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions would round the DFT to 10-bit mantissas
    try:
        ours = ExportableFrontEnd(cfg).cuda()(wave.cuda()).cpu()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert (ours - FrontEnd(cfg)(wave)).abs().max().item() < 2e-3


# --- export -------------------------------------------------------------------------------------
def test_export_writes_metadata_and_matches_pytorch(run_dir, tmp_path):
    path = export_onnx(run_dir, tmp_path / "model.onnx")
    meta = read_metadata(path)
    state = RunDir(run_dir).load_checkpoint("best")
    assert meta["classes"] == state["classes"] and meta["task"] == "single_label"
    assert (meta["sample_rate"], meta["clip_samples"]) == (16000, 16000)
    assert meta["input"] == "features" and meta["input_shape"] == [1, 40, 51] and not meta["with_frontend"]
    assert FeatureConfig.from_dict(meta["features"]).n_mels == 40
    assert meta["model"] == "dcase2022_baseline" and int(meta["opset"]) >= 17

    predictor = Predictor.from_run(run_dir, device="cpu")
    wave = torch.randn(5, 16000, generator=torch.Generator().manual_seed(3)) * 0.1  # batch 5: dynamic axis
    with torch.no_grad():
        expected = predictor.model(wave).numpy()
        features = predictor.model.frontend(wave).numpy()
    got = OnnxPredictor(path).session.run(None, {"features": features})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


def test_export_with_frontend_takes_waveforms(run_dir, tmp_path):
    path = export_onnx(run_dir, tmp_path / "full.onnx", with_frontend=True, opset=18)
    onnx_predictor = OnnxPredictor(path)
    assert onnx_predictor.metadata["input"] == "waveform" and onnx_predictor.frontend is None
    assert onnx_predictor.metadata["opset"] == "18"
    wave = np.random.default_rng(4).standard_normal((3, 16000)).astype(np.float32) * 0.1
    with torch.no_grad():
        expected = Predictor.from_run(run_dir, device="cpu").model(torch.from_numpy(wave)).numpy()
    np.testing.assert_allclose(onnx_predictor.logits(wave), expected, atol=5e-4, rtol=5e-3)


def test_pcen_run_exports_with_its_frontend(tmp_path):
    run = make_run(tmp_path, epochs=1, n_per_class=2, extra=["features.log=pcen", "features.power=1.0"])
    path = export_onnx(run, tmp_path / "pcen.onnx", with_frontend=True)
    wave = np.random.default_rng(5).standard_normal((2, 16000)).astype(np.float32) * 0.1
    with torch.no_grad():
        expected = Predictor.from_run(run, device="cpu").model(torch.from_numpy(wave)).numpy()
    np.testing.assert_allclose(OnnxPredictor(path).logits(wave), expected, atol=5e-4, rtol=5e-3)


def test_normalized_run_records_and_exports_its_frontend(tmp_path):
    run = make_run(tmp_path, epochs=1, n_per_class=2, extra=["features.normalize=utterance"])
    predictor = Predictor.from_run(run, device="cpu")
    assert predictor.model.feature_config.normalize == "utterance"  # rebuilt from the checkpoint
    path = export_onnx(run, tmp_path / "cmvn.onnx", with_frontend=True)
    assert read_metadata(path)["features"]["normalize"] == "utterance"
    wave = np.random.default_rng(6).standard_normal((2, 16000)).astype(np.float32) * 0.1
    with torch.no_grad():
        expected = predictor.model(torch.from_numpy(wave)).numpy()
    np.testing.assert_allclose(OnnxPredictor(path).logits(wave), expected, atol=5e-4, rtol=5e-3)


def test_onnx_predictor_matches_predictor_on_files(run_dir, tmp_path):
    data = Path(RunDir(run_dir).read_config()["data"]["path"])
    files = sorted(data.rglob("*.wav"))[:3]
    rng = np.random.default_rng(5)
    long_file = write_audio(tmp_path / "long.wav", 0.1 * rng.standard_normal(40000).astype(np.float32), 16000)
    paths = [*files, long_file, tmp_path / "missing.wav"]
    reference = Predictor.from_run(run_dir, device="cpu").predict_files(paths, aggregate="max")
    for with_frontend in (False, True):
        model = export_onnx(run_dir, tmp_path / f"m{with_frontend}.onnx", with_frontend=with_frontend)
        predictor = load_predictor(model)
        assert isinstance(predictor, OnnxPredictor)
        assert predictor.classes == Predictor.from_run(run_dir, device="cpu").classes
        got = predictor.predict_files(paths, aggregate="max")
        assert [p.path for p in got] == [p.path for p in reference]
        for ours, theirs in zip(got, reference):
            if theirs.probs is None:
                assert ours.probs is None and ours.error
            else:
                np.testing.assert_allclose(ours.probs, theirs.probs, atol=1e-5)
        assert predictor.top_k(got[0].probs, 2)[0][0] == Predictor.from_run(run_dir).top_k(reference[0].probs, 1)[0][0]
    assert isinstance(load_predictor(run_dir, device="cpu"), Predictor)


def test_waveform_model_exports_with_waveform_input(tmp_path):
    run = make_run(tmp_path, model=["model.name=m3"], epochs=1, n_per_class=2)
    path = export_onnx(run)
    assert path == run / "model.wave.onnx"  # a waveform model's export takes waveforms
    predictor = OnnxPredictor(path)
    assert predictor.metadata["input"] == "waveform" and predictor.metadata["features"] is None
    wave = np.random.default_rng(6).standard_normal(16000).astype(np.float32) * 0.1
    expected = Predictor.from_run(run, device="cpu").predict_wave(wave)
    np.testing.assert_allclose(predictor.predict_wave(wave), expected, atol=1e-5)


def test_export_errors_are_one_line(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="opset=13"):
        export_onnx(run_dir, tmp_path / "m.onnx", opset=13)
    with pytest.raises(AudioclfError, match="not a run directory"):
        export_onnx(tmp_path)
    with pytest.raises(AudioclfError, match="not found"):
        OnnxPredictor(tmp_path / "nothing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(AudioclfError, match="junk.onnx"):
        OnnxPredictor(tmp_path / "junk.onnx")
    assert not list(tmp_path.glob("*.tmp*"))


def test_probability_helpers_are_stable():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(softmax(logits), [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-12)
    np.testing.assert_allclose(sigmoid(np.array([-800.0, 0.0, 800.0])), [0.0, 0.5, 1.0])
    x = np.linspace(-8, 8, 9)
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-12)
