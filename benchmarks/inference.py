"""Per-clip inference latency on one CPU thread: PyTorch fp32 (eager), ONNX Runtime fp32 and ONNX Runtime INT8.

DCASE 2022 Task 1 models on 1-s clips at 44.1 kHz (40-ms windows, 20-ms hop -> 51 frames): the official
baseline on 40 mels and González Poy's (2022) student on 80 mels (its final input). The networks are timed on
log-mel input (what the DCASE complexity limits count), and as deployed: one ONNX file from waveform to class
(front-end in float, network in INT8), next to its parts run one after the other in this process (the
front-end file, then the INT8 network), by median and by the best of interleaved calls. The front-end is also
timed alone: our torch ``FrontEnd`` (FFT) against
the exported one (a two-stage DFT in MatMuls, ``audioclf.deploy.export.TwoStageDFT``). Weights are untrained
(latency does not depend on their values); INT8 calibration uses synthetic demo clips.
Everything printed is measured in this run::

    python benchmarks/inference.py [--repeats 300 --calibration 32]

Reported: median and 90th percentile of ``--repeats`` single-clip calls after a warm-up, all runtimes
limited to one thread (torch ``set_num_threads(1)``; ORT intra/inter-op threads 1, sequential).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from _common import best_times, limit_thread_env, print_table  # benchmarks/ is on sys.path when run as a script

SAMPLE_RATE = 44100
MODELS = {  # name -> mel bands of its input (n_fft 1764, hop 882 -> 51 frames per second)
    "dcase2022_baseline": 40,
    "asc_student": 80,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=300, help="timed single-clip calls per runtime")
    parser.add_argument("--calibration", type=int, default=32, help="clips for INT8 static calibration")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def latency(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, p90) milliseconds per call, after 20 warm-up calls."""
    for _ in range(20):
        fn()
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return float(np.median(times) * 1e3), float(np.percentile(times, 90) * 1e3)


def demo_clips(n: int, seed: int) -> np.ndarray:
    """Synthetic 1-s clips (demo sound classes in coloured noise) at 44.1 kHz."""
    from audioclf.data.synth.demo import DEMO_CLASSES, synthesize_clip

    rng = np.random.default_rng(seed)
    return np.stack([synthesize_clip([DEMO_CLASSES[i % len(DEMO_CLASSES)]], SAMPLE_RATE, SAMPLE_RATE, rng)
                     for i in range(n)])


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def bench_model(name: str, n_mels: int, clips: np.ndarray, args: argparse.Namespace, tmp: Path) -> list[str]:
    import torch

    from audioclf.models.complexity import complexity_report
    from audioclf.deploy.quantize import quantize_onnx
    from audioclf.deploy.export import export_classifier
    from audioclf.features import FeatureConfig, FrontEnd
    from audioclf.models import create_model
    from audioclf.models.classifier import AudioClassifier

    cfg = FeatureConfig(sample_rate=SAMPLE_RATE, n_fft=1764, hop_length=882, n_mels=n_mels)
    frontend = FrontEnd(cfg)
    shape = frontend.output_shape(SAMPLE_RATE)
    torch.manual_seed(args.seed)
    model = AudioClassifier(create_model(name, 10, shape), cfg).eval()
    with torch.no_grad():
        features = frontend(torch.from_numpy(clips))  # (N, 1, F, T)
        # per-band statistics of the clips, as training sets them (fit_standardizer)
        model.standardize.mean.copy_(features.mean(dim=(0, 1, 3)).view_as(model.standardize.mean))
        model.standardize.std.copy_(features.std(dim=(0, 1, 3)).clamp_min(1e-5).view_as(model.standardize.std))
    report = complexity_report(model.backbone, shape)

    fp32 = export_classifier(model, tmp / f"{name}.onnx", [str(i) for i in range(10)], "single_label",
                             SAMPLE_RATE, SAMPLE_RATE)
    int8 = tmp / f"{name}.int8.onnx"
    batches = np.split(features.numpy(), max(1, len(features) // 8))
    quantize_onnx(fp32, int8, batches, method="static")

    one = features[:1].contiguous()
    one_np = one.numpy()
    sessions = {"fp32": session(fp32), "int8": session(int8)}

    def torch_eager() -> None:
        with torch.inference_mode():
            model.backbone(model.standardize(one))

    timings = [latency(torch_eager, args.repeats)]
    for key in ("fp32", "int8"):
        s = sessions[key]
        timings.append(latency(lambda s=s: s.run(None, {"features": one_np}), args.repeats))
    # agreement of the int8 model with fp32 on the calibration clips (sanity, not accuracy)
    a = sessions["fp32"].run(None, {"features": features.numpy()})[0]
    b = sessions["int8"].run(None, {"features": features.numpy()})[0]
    agree = float(np.mean(a.argmax(1) == b.argmax(1)))
    # What a device deploys: one file from waveform to class, the front-end in float, the network in INT8.
    full = export_classifier(model, tmp / f"{name}.wave.onnx", [str(i) for i in range(10)], "single_label",
                             SAMPLE_RATE, SAMPLE_RATE, with_frontend=True)
    full_int8 = tmp / f"{name}.wave.int8.onnx"
    quantize_onnx(full, full_int8, np.split(clips, max(1, len(clips) // 8)), method="static")
    wave_session, one_wave = session(full_int8), clips[:1]
    timings.append(latency(lambda: wave_session.run(None, {"waveform": one_wave}), args.repeats))
    # Its parts in this process: the front-end file, then the INT8 network on its output (two sessions). Medians
    # of calls of different lengths do not add up on a busy machine (a longer call is preempted more often), so
    # the combined file and its parts are also compared by their best of interleaved calls (the least disturbed).
    fe_session = session(frontend_file(cfg, torch.from_numpy(one_wave), tmp / f"{name}.frontend.onnx"))
    int8_session = sessions["int8"]

    def parts() -> None:
        int8_session.run(None, {"features": fe_session.run(None, {"waveform": one_wave})[0]})

    timings.append(latency(parts, args.repeats))
    best_full, best_parts = best_times([lambda: wave_session.run(None, {"waveform": one_wave}), parts], args.repeats)
    cells = [name, "x".join(map(str, shape[1:])), f"{report.params_total:,}", f"{report.mmacs:.2f}"]
    cells += [f"{m:.3f} / {p:.3f}" for m, p in timings]
    cells += [f"{best_full * 1e3:.3f} / {best_parts * 1e3:.3f}"]
    cells += [f"{fp32.stat().st_size / 1024:.0f}", f"{int8.stat().st_size / 1024:.0f}",
              f"{full_int8.stat().st_size / 1024:.0f}", f"{agree:.0%}"]
    return cells


def frontend_file(cfg, wave, path: Path) -> Path:
    """The exported front-end alone (what export_classifier puts before the network), as an ONNX file."""
    from audioclf.deploy.export import frontend_to_onnx_bytes

    path.write_bytes(frontend_to_onnx_bytes(cfg, wave, 17))
    return path


def bench_frontend(n_mels: int, clips: np.ndarray, args: argparse.Namespace, tmp: Path) -> list[str]:
    """Torch FrontEnd (FFT) vs the exported front-end (a two-stage DFT in MatMuls; graph without a network)."""
    import torch

    from audioclf.features import FeatureConfig, FrontEnd

    cfg = FeatureConfig(sample_rate=SAMPLE_RATE, n_fft=1764, hop_length=882, n_mels=n_mels)
    frontend = FrontEnd(cfg).eval()
    wave = torch.from_numpy(clips[:1])
    path = frontend_file(cfg, wave, tmp / f"frontend{n_mels}.onnx")
    s = session(path)

    def torch_fft() -> None:
        with torch.inference_mode():
            frontend(wave)

    wave_np = wave.numpy()
    t_torch = latency(torch_fft, args.repeats)
    t_onnx = latency(lambda: s.run(None, {"waveform": wave_np}), args.repeats)
    diff = float(np.abs(s.run(None, {"waveform": wave_np})[0] - frontend(wave).numpy()).max())
    return [f"log-mel {n_mels}x51", f"{t_torch[0]:.3f} / {t_torch[1]:.3f}", f"{t_onnx[0]:.3f} / {t_onnx[1]:.3f}",
            f"{path.stat().st_size / 1024:.0f}", f"{diff:.1e}"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    limit_thread_env(1)
    import onnxruntime
    import torch

    torch.set_num_threads(1)
    clips = demo_clips(args.calibration, args.seed)
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, 1 thread, batch 1 (one 1-s clip), "
          f"median / p90 of {args.repeats} calls; INT8 = static QDQ, per-channel, {args.calibration} calibration clips")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_model(name, n_mels, clips, args, Path(tmp)) for name, n_mels in MODELS.items()]
        print_table("Network latency per clip on log-mel input, and the deployed waveform->class file (ms)",
                    ["model", "input", "params", "MMACs", "torch fp32", "onnx fp32", "onnx int8",
                     "wave->class int8", "its parts", "best: wave / parts",
                     "fp32 KiB", "int8 KiB", "wave int8 KiB", "int8=fp32 top-1"], rows)
        fe_rows = [bench_frontend(n_mels, clips, args, Path(tmp)) for n_mels in sorted(set(MODELS.values()))]
        print_table("Front-end latency per 1-s clip at 44.1 kHz (ms)",
                    ["features", "torch FFT", "onnx two-stage DFT", "onnx KiB", "max |diff| dB"], fe_rows)


if __name__ == "__main__":
    main()
