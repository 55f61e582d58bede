"""Latency of ``audioclf predict RUN -``: audio piped in at real-time pace, one line out per window.

A generated recording (the demo's 1-s clips end to end, 16 kHz mono) is written into the stdin of ``audioclf
predict RUN - --format s16le --rate 16000 [--hop H]`` in 10-ms chunks, each at its real time (as ``arecord``
delivers a microphone), and every line the command prints is stamped the moment it is read here. Printed, for the
default hop (half a clip) and a short one:

* window latency: from the write of a window's last sample to its line being read (the compute and the pipes);
* first-line delay: from the write of a sample to the first line whose window holds it (up to one hop plus the
  window latency): what a listener waits for a sound to be reported. Samples of the stream's first clip wait for
  its first window (up to one clip) and are left out.

The clock starts once the command has loaded its model and read the first chunk (its ``stdin:`` note on stderr):
start-up is not streaming latency. Without ``--run`` a small model is trained on generated clips first.

    python benchmarks/stream_latency.py [--run RUN] [--seconds 20] [--hops default 0.1] [--threads 1]

Bounded: ``--seconds`` of audio per hop (plus start-up); loopback pipes only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _common import limit_thread_env, print_table  # benchmarks/ is on sys.path when run as a script

RATE, CHUNK_SECONDS = 16000, 0.01


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a trained run (or .onnx file) at 16 kHz; default: train a small one here")
    parser.add_argument("--seconds", type=int, default=20, help="seconds of audio streamed per hop (whole seconds)")
    parser.add_argument("--hops", nargs="+", default=["default", "0.1"], help="hops in seconds ('default': half "
                        "a clip)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the predicting command")
    return parser.parse_args(argv)


def recording(clips: list[Path], seconds: int) -> np.ndarray:
    import soundfile as sf

    waves = [sf.read(str(path), dtype="float32")[0] for path in clips]
    wave = np.concatenate(waves * (1 + seconds * RATE // sum(map(len, waves))))[: seconds * RATE]
    return (np.clip(wave, -1, 1) * 32767).astype("<i2")


def stream(run: Path, samples: np.ndarray, hop: str, threads: int) -> dict:
    """Pace ``samples`` into ``audioclf predict RUN -``; each chunk's write time and each line's (window, read time)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    hop_args = [] if hop == "default" else ["--hop", hop]
    process = subprocess.Popen([sys.executable, "-m", "audioclf", "predict", str(run), "-", "--format", "s16le",
                                "--rate", str(RATE), *hop_args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, bufsize=0)
    lines: list[tuple[float, float, float]] = []  # (start, end, read at)
    ready = threading.Event()

    def read_lines():
        for line in iter(process.stdout.readline, b""):
            at = time.perf_counter()
            start, end = line.split(b"\t")[:2]
            lines.append((float(start), float(end), at))

    def read_notes():
        for line in iter(process.stderr.readline, b""):
            if line.startswith(b"stdin:"):
                ready.set()
            sys.stderr.write(f"  [{hop}] {line.decode().rstrip()}\n")
        ready.set()  # it ended (an error): do not wait forever

    readers = [threading.Thread(target=read_lines), threading.Thread(target=read_notes)]
    for reader in readers:
        reader.start()
    chunk = round(RATE * CHUNK_SECONDS)
    chunks = [samples[i : i + chunk].tobytes() for i in range(0, len(samples), chunk)]
    process.stdin.write(chunks[0])  # start-up (imports, the model) ends with this chunk read
    ready.wait(timeout=600)
    written = [time.perf_counter()]
    origin = written[0]
    for k, data in enumerate(chunks[1:], start=1):
        delay = origin + k * CHUNK_SECONDS - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        process.stdin.write(data)
        written.append(time.perf_counter())
    process.stdin.close()
    code = process.wait(timeout=600)
    for reader in readers:
        reader.join()
    if code != 0:
        raise RuntimeError(f"audioclf predict exited {code}")
    return {"written": np.asarray(written), "lines": lines, "chunk": chunk, "behind": written[-1] - origin
            - (len(chunks) - 1) * CHUNK_SECONDS}


def latencies(result: dict, clip: int) -> tuple[np.ndarray, np.ndarray]:
    """Window latencies, and first-line delays of each chunk's first sample after the stream's first clip."""
    written, chunk = result["written"], result["chunk"]
    window = np.array([at - written[(round(end * RATE) - 1) // chunk] for _, end, at in result["lines"]])
    starts = np.array([round(start * RATE) for start, _, _ in result["lines"]])
    ends = np.array([round(end * RATE) for _, end, _ in result["lines"]])
    reads = np.array([at for _, _, at in result["lines"]])
    first = []
    for k, wrote in enumerate(written):
        sample = k * chunk
        if sample < clip:
            continue
        holding = np.flatnonzero((starts <= sample) & (ends > sample))
        if len(holding):
            first.append(reads[holding].min() - wrote)
    return window, np.asarray(first)


def ms(values: np.ndarray) -> list[str]:
    return [f"{np.median(values) * 1e3:.0f}", f"{np.percentile(values, 95) * 1e3:.0f}", f"{values.max() * 1e3:.0f}"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    limit_thread_env(args.threads)
    import audioclf
    from audioclf.data.synth.demo import make_demo_dataset
    from audioclf.deploy.onnx_predictor import load_predictor

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = sorted(make_demo_dataset(root / "clips", n_per_class=4, seconds=1.0).rglob("*.wav"))
        run = Path(args.run) if args.run else audioclf.train(
            root / "clips", {"data": {"sample_rate": 16000, "clip_seconds": 1.0}}, out=root / "run",
            train={"epochs": 1}, features={"n_mels": 32}).root
        predictor = load_predictor(run, device="cpu")
        if predictor.sample_rate != RATE:
            raise SystemExit(f"{run}: a {predictor.sample_rate}-Hz model; this benchmark streams {RATE} Hz")
        network = getattr(predictor, "model", None)  # an ONNX file has none to name
        model = (f"{type(network).__name__} ({sum(p.numel() for p in network.parameters()):,} parameters)"
                 if network is not None else type(predictor).__name__)
        samples = recording(clips, args.seconds)
        rows = []
        for hop in args.hops:
            result = stream(run, samples, hop, args.threads)
            window, first = latencies(result, predictor.clip_samples)
            rows.append([hop, str(len(result["lines"])), *ms(window), *ms(first), f"{result['behind'] * 1e3:.0f}"])
        print_table(f"audioclf predict RUN -: {args.seconds} s of 16-kHz s16le piped in 10-ms chunks at real time; "
                    f"{model}, {predictor.clip_samples / RATE:g}-s windows; {args.threads} thread(s); "
                    f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
                    ["hop", "lines", "window p50 ms", "p95", "max", "first-line p50 ms", "p95", "max",
                     "writer behind ms"], rows)


if __name__ == "__main__":
    main()
