"""Requests per second and latency of ``audioclf serve`` for 1-s clips, against calling the predictor in-process.

A small model is trained on generated demo clips (16 kHz, 1-s windows) and exported to ONNX. For each backend
(the run's PyTorch model, the exported ONNX file) the server is started as its own process on a loopback port
(``audioclf serve``), and a client here sends ``--requests`` uploads of one 1-s WAV clip at concurrency 1, 8 and
32. Printed: requests/s, p50 and p95 latency, and the ratio of the server's requests/s to the in-process
predictor's (``predict_files`` on the same clip, one call after another, in this process).

    python benchmarks/serve.py [--requests 200 --threads 2]

Bounded: at most ``--requests`` requests per setting and ``--seconds`` per setting; loopback only.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from _common import limit_thread_env, print_table  # benchmarks/ is on sys.path when run as a script


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per backend and concurrency")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit per backend and concurrency")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the server (and of the in-process peer)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(source: Path, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([sys.executable, "-m", "audioclf", "serve", str(source), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server for {source} did not start")


def post(url: str, body: bytes) -> float:
    request = urllib.request.Request(f"{url}/predict", data=body, headers={"Content-Type": "audio/wav"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
    return time.perf_counter() - started


def load(url: str, body: bytes, concurrency: int, requests: int, seconds: float) -> dict[str, float]:
    deadline = time.perf_counter() + seconds
    post(url, body)  # warm-up
    latencies: list[float] = []

    def one(_):
        return post(url, body) if time.perf_counter() < deadline else None

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = [t for t in pool.map(one, range(requests)) if t is not None]
    elapsed = time.perf_counter() - started
    return {"rps": len(latencies) / elapsed, "p50": statistics.median(latencies) * 1e3,
            "p95": float(np.percentile(latencies, 95)) * 1e3, "n": len(latencies)}


def in_process_rps(predictor, path: Path, requests: int, seconds: float) -> float:
    predictor.predict_files([path])  # warm-up
    deadline, done, started = time.perf_counter() + seconds, 0, time.perf_counter()
    while done < requests and time.perf_counter() < deadline:
        predictor.predict_files([path])
        done += 1
    return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    limit_thread_env(args.threads)
    import soundfile as sf
    import torch

    import audioclf
    from audioclf.data.synth.demo import make_demo_dataset
    from audioclf.deploy.export import export_onnx
    from audioclf.deploy.onnx_predictor import load_predictor

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = make_demo_dataset(root / "clips", n_per_class=4, seconds=1.0)
        run = audioclf.train(clips, {"data": {"sample_rate": 16000, "clip_seconds": 1.0}}, out=root / "run",
                             train={"epochs": 1}, features={"n_mels": 32}).root
        onnx = export_onnx(run, with_frontend=True)
        clip = sorted(clips.rglob("*.wav"))[0]
        buffer = io.BytesIO()
        sf.write(buffer, sf.read(str(clip), dtype="float32")[0], 16000, format="WAV", subtype="PCM_16")
        body = buffer.getvalue()
        rows = []
        for backend, source in (("pytorch", run), ("onnx", onnx)):
            peer = in_process_rps(load_predictor(source, device="cpu"), clip, args.requests, args.seconds)
            process, url = start_server(source, args.threads)
            try:
                for concurrency in args.concurrency:
                    result = load(url, body, concurrency, args.requests, args.seconds)
                    rows.append([backend, str(concurrency), str(result["n"]), f"{result['rps']:.1f}",
                                 f"{result['p50']:.1f}", f"{result['p95']:.1f}", f"{peer:.1f}",
                                 f"{result['rps'] / peer:.2f}"])
            finally:
                process.terminate()
                process.wait(timeout=10)
        print_table(f"audioclf serve, 1-s clips at 16 kHz, {args.threads} thread(s), loopback",
                    ["backend", "concurrency", "requests", "req/s", "p50 ms", "p95 ms", "in-process req/s",
                     "server / in-process"], rows)


if __name__ == "__main__":
    main()
