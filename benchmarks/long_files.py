"""Peak memory of predicting and evaluating on long recordings: does it grow with the file's length?

A small model is trained on generated demo clips (16 kHz, 1-s windows), then 10- and 60-minute recordings
(PCM 16-bit WAV at 44.1 kHz, so resampling is on the path) are scored, each measurement in a fresh Python
process whose peak resident memory (``VmHWM``) is printed:

* ``predict (streamed)``: ``Predictor.predict_files``: the file is decoded, resampled and windowed as a
  stream, a batch of windows at a time;
* ``predict (whole file)``: the peer in the same run, the recording decoded and resampled at once, then
  windowed (what predict did before streaming);
* ``evaluate``: ``audioclf evaluate RUN --data FOLDER``: files checked from their headers, then streamed window
  batch by window batch like predict (training instead decodes its splits once, for the epochs to come).

    python benchmarks/long_files.py [--minutes 10 60]

Reported: peak RSS in MB per mode and length, and the growth from the shortest to the longest file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from _common import limit_thread_env, print_table  # benchmarks/ is on sys.path when run as a script

FILE_RATE = 44100

MEASURE = {
    "predict (streamed)": "from audioclf.deploy.predictor import Predictor\n"
                          "Predictor.from_run(RUN, device='cpu').predict_files([FILE])",
    "predict (whole file)": "from audioclf.data.audio import load_audio\n"
                            "from audioclf.deploy.predictor import Predictor\n"
                            "p = Predictor.from_run(RUN, device='cpu')\n"
                            "p.predict_wave(load_audio(FILE, sample_rate=p.sample_rate)[0])",
    "evaluate": "from audioclf.workflows.evaluation import evaluate_run\n"
                "evaluate_run(RUN, data=str(Path(FILE).parent.parent), device='cpu')",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60], help="recording lengths")
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


def peak_rss_mb(code: str, run: Path, file: Path) -> float:
    # VmHWM (Linux): the peak of this process's own memory map. ru_maxrss would not do: it survives exec, so
    # a child started from this (larger) process would report the parent's peak.
    script = ("from pathlib import Path\n"
              f"RUN, FILE = {str(run)!r}, {str(file)!r}\n{code}\n"
              "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1]) / 1024  # kB


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    limit_thread_env(2)
    import audioclf
    from audioclf.data.synth.demo import make_demo_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = make_demo_dataset(root / "clips", n_per_class=4, seconds=1.0)
        run = audioclf.train(clips, {"data": {"sample_rate": 16000, "clip_seconds": 1.0}}, out=root / "run",
                             train={"epochs": 1}, features={"n_mels": 32}).root
        label = audioclf.load(run).classes[0]
        files = {}
        for minutes in args.minutes:
            files[minutes] = root / f"long{minutes:g}" / label / "recording.wav"
            write_long_file(files[minutes], minutes)
        rows = []
        for mode, code in MEASURE.items():
            peaks = [peak_rss_mb(code, run, files[m]) for m in args.minutes]
            rows.append([mode, *(f"{p:.0f}" for p in peaks), f"{peaks[-1] - peaks[0]:+.0f}"])
        header = ["mode", *(f"{m:g} min (MB)" for m in args.minutes), "growth (MB)"]
        print_table(f"Peak resident memory, model at 16 kHz, files at {FILE_RATE} Hz", header, rows)


if __name__ == "__main__":
    main()
