"""Peak memory of the commands that read a long recording: does it grow with the file's length?

A small model is trained on generated demo clips (16 kHz, 1-s windows), then 10-minute and 3-hour recordings
(PCM 16-bit WAV at 44.1 kHz, so resampling is on the path) are scored. Each measurement is one command in a
fresh process under ``/usr/bin/time -v``, whose "Maximum resident set size" is the number reported:

* ``predict``: ``audioclf predict RUN FILE``: the file decoded, resampled and windowed as a stream, a batch of
  windows at a time;
* ``predict --timeline`` and ``predict --events``: the same windows against time (the file streamed twice when
  the run trims silence: once to find the silence, once to score);
* ``evaluate``: ``audioclf evaluate RUN --data FOLDER``: files checked from their headers, then streamed window
  batch by window batch like predict (training instead decodes its splits once, for the epochs to come);
* ``serve /timeline``: the peak of an ``audioclf serve`` process that answered one ``POST /timeline`` of the
  file, sent as a streamed body (the server spools it to disk as it arrives), then stopped with SIGINT;
* ``whole file (peer)``: the recording decoded and resampled at once (``load_audio``), then windowed: what
  predict did before streaming.

audioclf has no command that extracts embeddings from audio files (frozen-backbone embeddings are extracted from
the training clips, decoded once on purpose), so there is no row for one.

    python benchmarks/long_files.py [--minutes 10 180]

Reported: peak RSS in MB per command and length, the least of ``--repeats`` fresh processes (the same command
on the same file varies by up to ~30 MB from one process to the next, whatever the length), and the growth from
the shortest to the longest file (issue 24 asks for less than 50 MB between 10 minutes and 3 hours). A 3-hour file is ~950 MB on disk, in a temp folder
(``--tmp``) removed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from _common import limit_thread_env, print_table  # benchmarks/ is on sys.path when run as a script

FILE_RATE = 44100
AUDIOCLF = [sys.executable, "-m", "audioclf"]

PEER = ("from audioclf.data.audio import load_audio\n"
        "from audioclf.deploy.predictor import Predictor\n"
        "p = Predictor.from_run(RUN, device='cpu')\n"
        "p.predict_wave(load_audio(FILE, sample_rate=p.sample_rate, max_seconds=86400)[0])")


def commands(run: Path, file: Path, out: Path) -> dict[str, list[str]]:
    """The measured command lines, by row name (``serve /timeline`` is measured apart: :func:`serve_peak_mb`)."""
    return {
        "predict": [*AUDIOCLF, "predict", str(run), str(file)],
        "predict --timeline": [*AUDIOCLF, "predict", str(run), str(file), "--timeline", str(out / "timeline.csv")],
        "predict --events": [*AUDIOCLF, "predict", str(run), str(file), "--events", str(out / "events.csv")],
        "evaluate": [*AUDIOCLF, "evaluate", str(run), "--data", str(file.parent.parent)],
        "whole file (peer)": [sys.executable, "-c", f"RUN, FILE = {str(run)!r}, {str(file)!r}\n{PEER}"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 180], help="recording lengths")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per measurement (the least is kept)")
    parser.add_argument("--tmp", default=None, help="where the long files are written (default: the system's temp)")
    return parser.parse_args(argv)


def write_long_file(path: Path, minutes: float, seed: int = 0) -> None:
    """Noise with tone bursts, written a minute at a time (the benchmark itself never holds the file)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(60 * FILE_RATE) / FILE_RATE
    with sf.SoundFile(str(path), "w", FILE_RATE, 1, subtype="PCM_16") as handle:
        for minute in range(int(np.ceil(minutes))):
            n = int(min(60.0, minutes * 60 - minute * 60) * FILE_RATE)
            tone = 0.3 * np.sin(2 * np.pi * (300 + 50 * minute) * t[:n]) * (np.sin(2 * np.pi * 0.5 * t[:n]) > 0)
            handle.write((0.05 * rng.standard_normal(n) + tone).astype(np.float32))


def max_rss_mb(time_report: str) -> float:
    """GNU time's "Maximum resident set size (kbytes)" in MB."""
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_report)
    if found is None:
        raise RuntimeError(f"no peak RSS in /usr/bin/time's report:\n{time_report[-2000:]}")
    return int(found.group(1)) / 1024


def peak_mb(command: list[str]) -> float:
    """The peak RSS of ``command`` in a fresh process (its output checked: a failed command is no measurement)."""
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return max_rss_mb(done.stderr)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_peak_mb(run: Path, file: Path) -> float:
    """The peak RSS of an ``audioclf serve`` process that answered ``POST /timeline`` with ``file`` as a streamed
    body. The server runs in its own process group, so SIGINT reaches uvicorn (GNU time ignores it and waits)."""
    port = free_port()
    limits = ["--max-mb", str(file.stat().st_size / 2**20 + 1), "--max-seconds", "86400", "--timeout", "86400",
              "--read-timeout", "3600"]
    server = subprocess.Popen(["/usr/bin/time", "-v", *AUDIOCLF, "serve", str(run), "--port", str(port), *limits],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until_up(port, server)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=86400)
        with open(file, "rb") as body:  # http.client sends a file object a block at a time
            connection.request("POST", "/timeline", body=body, headers={
                "Content-Type": "audio/wav", "Content-Length": str(file.stat().st_size)})
            response = connection.getresponse()
            answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST /timeline answered {response.status}: {answer[:300]!r}")
    finally:
        os.killpg(server.pid, signal.SIGINT)
        _, report = server.communicate(timeout=120)
    return max_rss_mb(report)


def wait_until_up(port: int, server: subprocess.Popen, seconds: float = 300.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"audioclf serve exited ({server.returncode}):\n{server.stderr.read()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"audioclf serve did not answer on port {port} within {seconds:g} s")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    limit_thread_env(2)
    import audioclf
    from audioclf.data.synth.demo import make_demo_dataset

    longest = max(args.minutes) * 60
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        clips = make_demo_dataset(root / "clips", n_per_class=4, seconds=1.0)
        # data.max_seconds: the run's bound on a recording's length (default 1 h), raised to the longest file
        data = {"sample_rate": 16000, "clip_seconds": 1.0, "max_seconds": min(86400.0, longest + 60)}
        run = audioclf.train(clips, {"data": data}, out=root / "run", train={"epochs": 1},
                             features={"n_mels": 32}).root
        label = audioclf.load(run).classes[0]
        files = {}
        for minutes in args.minutes:
            files[minutes] = root / f"long{minutes:g}" / label / "recording.wav"
            write_long_file(files[minutes], minutes)
        peaks: dict[str, list[float]] = {}
        for minutes in args.minutes:
            measures = {mode: lambda command=command: peak_mb(command)
                        for mode, command in commands(run, files[minutes], root).items()}
            measures["serve /timeline"] = lambda file=files[minutes]: serve_peak_mb(run, file)
            for mode, measure in measures.items():
                seen = [measure() for _ in range(args.repeats)]
                peaks.setdefault(mode, []).append(min(seen))
                print(f"{minutes:g} min  {mode}: {' '.join(f'{p:.0f}' for p in seen)} MB", flush=True)
        rows = [[mode, *(f"{p:.0f}" for p in values), f"{values[-1] - values[0]:+.0f}"] for mode, values in peaks.items()]
        header = ["command", *(f"{m:g} min (MB)" for m in args.minutes), "growth (MB)"]
        print_table(f"Peak resident memory (/usr/bin/time -v), model at 16 kHz, files at {FILE_RATE} Hz", header, rows)


if __name__ == "__main__":
    main()
