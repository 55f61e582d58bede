"""Augmentation cost, measured in one run::

    python benchmarks/augment.py [--batch 64 --repeats 20 --clips 64 --seconds 3 --threads 1]

1. Batched SpecAugment (policy LD) + MixUp on a (64, 1, 80, 92) log-mel batch, as a fraction of one
   training step (forward + backward + Adam step) of the FSD2019 simple CNN
   (``create_model("fsd_simple_cnn", 80, (1, 80, 92))``), on the GPU when CUDA is available, else the CPU.
2. Waveform augmentation throughput (clips per second, one thread) of our gain + gaussian noise + shift +
   impulse-response chain next to audiomentations' equivalent chain (Gain, AddGaussianSNR, Shift,
   ApplyImpulseResponse), all with p=1, on the same 16-kHz clips and the same IR files.
Times are the best of ``--repeats`` alternating rounds after a warm-up (see benchmarks/features.py).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from _common import best_times, limit_thread_env  # benchmarks/ is on sys.path when run as a script


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="training batch size")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats (best is reported)")
    parser.add_argument("--clips", type=int, default=64, help="clips for the waveform throughput")
    parser.add_argument("--seconds", type=float, default=3.0, help="clip length (s) at 16 kHz")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch, BLAS)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def bench_batch(args: argparse.Namespace) -> tuple[str, float, float]:
    """(device name, seconds per training step, seconds per SpecAugment(LD) + mixup)."""
    import torch

    from audioclf.augment import SpecAugment, mixup
    from audioclf.models import create_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} thread(s))"
    torch.manual_seed(args.seed)
    model = create_model("fsd_simple_cnn", 80, (1, 80, 92)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x = torch.randn(args.batch, 1, 80, 92, device=device)
    y = (torch.rand(args.batch, 80, device=device) < 0.03).float()
    spec = SpecAugment.from_policy("LD").to(device).train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    def augment() -> None:
        mixup(spec(x), y, 0.4, "multi_label", 80)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step_s, augment_s = best_times([step, augment], args.repeats, sync)
    return name, step_s, augment_s


def write_irs(folder: Path, sr: int, rng: np.random.Generator) -> None:
    """Four synthetic microphone-like IRs (a short delay, a peak, an exponentially decaying tail)."""
    from audioclf.data.audio import write_audio

    for i, length_s in enumerate((0.02, 0.05, 0.1, 0.25)):
        n = int(length_s * sr)
        ir = rng.standard_normal(n) * np.exp(-np.arange(n) / (n / 5))
        ir[: 5 + i] = 0.0
        ir[5 + i] = 1.0
        write_audio(folder / f"ir{i}.wav", (ir / np.abs(ir).max()).astype(np.float32), sr, subtype="FLOAT")


def bench_waveform(args: argparse.Namespace, ir_dir: Path) -> tuple[float, float, str]:
    """(our clips/s, audiomentations clips/s, audiomentations version)."""
    import audiomentations as A

    from audioclf.augment import build_waveform_augment

    sr = 16000
    rng = np.random.default_rng(args.seed)
    waves = (rng.standard_normal((args.clips, int(args.seconds * sr))) * 0.1).astype(np.float32)
    ours = build_waveform_augment([
        {"name": "gain", "p": 1.0, "min_gain_db": -12, "max_gain_db": 12},
        {"name": "gaussian_noise", "p": 1.0, "min_snr_db": 5, "max_snr_db": 40},
        {"name": "time_shift", "p": 1.0, "min_fraction": -0.5, "max_fraction": 0.5},
        {"name": "impulse_response", "p": 1.0, "ir_dir": str(ir_dir)},
    ])
    theirs = A.Compose([
        A.Gain(min_gain_db=-12, max_gain_db=12, p=1.0),
        A.AddGaussianSNR(min_snr_db=5, max_snr_db=40, p=1.0),
        A.Shift(min_shift=-0.5, max_shift=0.5, p=1.0),
        A.ApplyImpulseResponse(ir_path=str(ir_dir), p=1.0),
    ])
    # warm both IR caches with every file before timing
    for seed in range(32):
        ours(waves[0], sr, np.random.default_rng(seed))
        theirs(waves[0], sr)

    def run_ours() -> None:
        for i, wave in enumerate(waves):
            ours(wave, sr, np.random.default_rng([args.seed, i]))

    def run_theirs() -> None:
        for wave in waves:
            theirs(wave, sr)

    ours_s, theirs_s = best_times([run_ours, run_theirs], max(3, args.repeats // 4))
    return args.clips / ours_s, args.clips / theirs_s, A.__version__


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    limit_thread_env(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, batch {args.batch} x (1, 80, 92), best of {args.repeats}")

    name, step_s, augment_s = bench_batch(args)
    print(f"\n1. SpecAugment(LD) + mixup vs one fsd_simple_cnn training step on {name}")
    print(f"   training step (fwd + bwd + Adam): {step_s * 1e3:8.2f} ms")
    print(f"   SpecAugment(LD) + mixup:          {augment_s * 1e3:8.2f} ms  "
          f"= {augment_s / step_s:.1%} of a step")

    with tempfile.TemporaryDirectory() as tmp:
        write_irs(Path(tmp), 16000, np.random.default_rng(args.seed))
        ours, theirs, version = bench_waveform(args, Path(tmp))
    print(f"\n2. Waveform chain gain + noise + shift + IR, {args.clips} clips x {args.seconds:g} s at 16 kHz, "
          "1 thread")
    print(f"   audioclf:              {ours:8.1f} clips/s")
    print(f"   audiomentations {version}: {theirs:8.1f} clips/s   (ours / theirs = {ours / theirs:.2f}x)")


if __name__ == "__main__":
    main()
