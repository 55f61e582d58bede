"""Log-mel throughput: audioclf's torch FrontEnd vs librosa, on CPU (equal threads) and on GPU.

One run measures everything it prints, so the ratios compare like with like::

    python benchmarks/features.py [--clips 16 --seconds 10 --threads 1 --repeats 5 --gpu-batch 256]

CPU: librosa (``feature.melspectrogram`` + ``power_to_db``, clip by clip, as a data pipeline calls it)
against ``FrontEnd`` on the same clips as one batch, both limited to ``--threads`` threads (torch via
``set_num_threads``, numpy/BLAS via threadpoolctl when installed). GPU (when CUDA is available): batches of
``--seconds``-long clips after a warm-up, timed with ``torch.cuda.synchronize``; speed is x real time.
Throughput is hours of audio per second of compute (best of ``--repeats``).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from _common import best_times, limit_thread_env, print_table  # benchmarks/ is on sys.path when run as a script

# configurations worth comparing: the defaults, FSD 2019 (16 kHz, 80 mels), DCASE 2022 base (40 ms hop)
CONFIGS = {
    "16k n_fft=1024 hop=320 64 mels": dict(sample_rate=16000, n_fft=1024, hop_length=320, n_mels=64),
    "16k n_fft=1024 hop=160 80 mels": dict(sample_rate=16000, n_fft=1024, hop_length=160, n_mels=80),
    "44.1k n_fft=1764 hop=882 40 mels": dict(sample_rate=44100, n_fft=1764, hop_length=882, n_mels=40),
    "44.1k n_fft=2048 hop=441 128 mels": dict(sample_rate=44100, n_fft=2048, hop_length=441, n_mels=128),
}


@dataclass
class Row:
    name: str
    audio_hours: float
    librosa_s: float
    ours_s: float

    @property
    def ratio(self) -> float:
        return self.librosa_s / self.ours_s


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=16, help="clips per CPU measurement")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds")
    parser.add_argument("--threads", type=int, default=1, help="threads for both librosa and torch on CPU")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (best is reported)")
    parser.add_argument("--gpu-batch", type=int, default=256, help="clips per GPU batch")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def limit_threads(threads: int) -> contextlib.AbstractContextManager:
    """Limit numpy's BLAS/OpenMP pools (librosa's mel matmul) to ``threads``; torch is set separately."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # env vars set in main() still apply to pools created after them
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


def clips(rng: np.random.Generator, n: int, n_samples: int) -> np.ndarray:
    """Noise with a per-clip level, float32 like decoded audio."""
    levels = rng.uniform(0.01, 0.5, size=(n, 1)).astype(np.float32)
    return rng.standard_normal((n, n_samples), dtype=np.float32) * levels


def bench_cpu(args: argparse.Namespace, rng: np.random.Generator) -> Iterator[Row]:
    import librosa
    import torch

    from audioclf.features import FeatureConfig, FrontEnd

    for name, settings in CONFIGS.items():
        sr = settings["sample_rate"]
        waves = clips(rng, args.clips, int(round(args.seconds * sr)))
        frontend = FrontEnd(FeatureConfig(**settings)).eval()
        batch = torch.from_numpy(waves)

        def run_librosa() -> None:
            for wave in waves:
                mel = librosa.feature.melspectrogram(
                    y=wave, sr=sr, n_fft=settings["n_fft"], hop_length=settings["hop_length"],
                    n_mels=settings["n_mels"], pad_mode="constant",
                )  # fmt: skip
                librosa.power_to_db(mel, top_db=80.0)

        def run_ours() -> None:
            with torch.inference_mode():
                frontend(batch)

        with limit_threads(args.threads):
            librosa_s, ours_s = best_times([run_librosa, run_ours], args.repeats)
        yield Row(name, args.clips * args.seconds / 3600.0, librosa_s, ours_s)


def bench_gpu(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """(config, seconds per batch, x real time) per config, on the first CUDA device."""
    import torch

    from audioclf.features import FeatureConfig, FrontEnd

    results = []
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    for name, settings in CONFIGS.items():
        n_samples = int(round(args.seconds * settings["sample_rate"]))
        frontend = FrontEnd(FeatureConfig(**settings)).cuda().eval()
        batch = torch.randn(args.gpu_batch, n_samples, device="cuda", generator=gen) * 0.1

        def run() -> None:
            with torch.inference_mode():
                frontend(batch)

        (seconds,) = best_times([run], max(args.repeats, 10), torch.cuda.synchronize)
        results.append((name, seconds, args.gpu_batch * args.seconds / seconds))
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    limit_thread_env(args.threads)
    import librosa
    import torch

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    print(
        f"torch {torch.__version__}, librosa {librosa.__version__}, {args.clips} clips x {args.seconds:g} s, "
        f"{args.threads} thread(s) each, best of {args.repeats}"
    )
    rows = list(bench_cpu(args, rng))
    print_table(
        "CPU log-mel (hours of audio per second; ratio = ours / librosa speed)",
        ["config", "librosa h/s", "ours h/s", "ratio"],
        [
            [r.name, f"{r.audio_hours / r.librosa_s:.2f}", f"{r.audio_hours / r.ours_s:.2f}", f"{r.ratio:.1f}x"]
            for r in rows
        ],
    )
    if torch.cuda.is_available():
        gpu = bench_gpu(args)
        print_table(
            f"GPU log-mel on {torch.cuda.get_device_name(0)}, batch {args.gpu_batch} x {args.seconds:g} s",
            ["config", "ms / batch", "x real time"],
            [[name, f"{s * 1e3:.2f}", f"{xrt:,.0f}"] for name, s, xrt in gpu],
        )
    else:
        print("\nGPU: CUDA not available, skipped")


if __name__ == "__main__":
    main()
