"""Every path that reads a recording holds a block and a batch of windows, never the whole signal: the traced
peak (tracemalloc follows numpy's and Python's allocations) of predict, timeline, events, evaluate and the
server's ``/timeline`` grows by far less between a 1-minute and a 5-minute file than the longer file's decoded
signal (19 MB at the model's 16 kHz). Not timed: memory only. ``benchmarks/long_files.py`` measures the
processes' resident memory on 10-minute and 3-hour files."""

from __future__ import annotations

import http.client
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioclf.cli import main
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.deploy.predictor import Predictor
from audioclf.workflows.evaluation import evaluate_run

pytestmark = pytest.mark.slow  # a trained run and 5-minute files scored twice per path: ~1 minute in all

FILE_RATE = 22050  # not the model's 16 kHz: resampling is on every path
SHORT_S, LONG_S = 60, 300
# What a path may grow by from the short to the long file. Measured: 1.8 MB (2.4 MB through the server), a step
# in how blocks and batches of 64 windows align between 1 and 2 minutes, flat from there on (the same at 20
# minutes). Holding the long file's samples would add at least its 13 MB of PCM (the server's body) or 19 MB
# decoded.
BOUND = 4 * 2**20
TINY = ["train.batch_size=16", "data.clip_seconds=1.0", "features.n_mels=32", "features.n_fft=512",
        "features.hop_length=320", "train.epochs=1", "train.num_workers=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    data = make_demo_dataset(root / "data", n_per_class=3, seconds=1.0, seed=3)
    assert main(["train", "--data", str(data), "--out", str(root / "run"), *TINY]) == 0
    predictor = Predictor.from_run(root / "run", device="cpu")
    files = {seconds: recording(root / f"long{seconds}" / predictor.classes[0] / "recording.wav", seconds)
             for seconds in (SHORT_S, LONG_S)}
    return root / "run", predictor, files


def recording(path: Path, seconds: int) -> Path:
    """Noise with tone bursts (so silence trimming has edges to find), PCM 16-bit."""
    rng = np.random.default_rng(seconds)
    t = np.arange(seconds * FILE_RATE) / FILE_RATE
    wave = 0.05 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 0.2 * t) > 0)
    path.parent.mkdir(parents=True)
    sf.write(str(path), wave.astype(np.float32), FILE_RATE, subtype="PCM_16")
    return path


def traced_peak(call) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def growth(read, files: dict[int, Path]) -> int:
    """How much more ``read(path)``'s traced peak is on the long file than on the short one."""
    read(files[SHORT_S])  # one-time allocations (lazy imports, caches) kept out of the comparison
    return traced_peak(lambda: read(files[LONG_S])) - traced_peak(lambda: read(files[SHORT_S]))


def test_the_long_file_is_what_a_whole_signal_would_exceed_the_bound_by(trained):
    _, predictor, files = trained
    decoded = LONG_S * predictor.sample_rate * 4  # float32 at the model's rate
    assert decoded > 4 * BOUND and files[LONG_S].stat().st_size > 3 * BOUND


@pytest.mark.parametrize("path", ["predict", "timeline", "events", "evaluate"])
def test_reading_a_recording_holds_no_whole_signal(trained, path):
    run, predictor, files = trained
    read = {"predict": predictor.file_window_probabilities, "timeline": predictor.timeline,
            "events": predictor.events,
            "evaluate": lambda file: evaluate_run(run, data=str(file.parent.parent), device="cpu")}[path]
    assert growth(read, files) < BOUND


def test_the_server_spools_the_body_and_streams_the_recording(trained):
    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    from servers import serving

    from audioclf.deploy.serve import ServeLimits, create_app, model_info

    run, predictor, files = trained
    limits = ServeLimits(max_bytes=4 * files[LONG_S].stat().st_size, max_seconds=2 * LONG_S, timeout=600.0)
    with serving(create_app(predictor, model_info(run, predictor), limits)) as port:

        def post(file: Path) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            with open(file, "rb") as body:  # sent a block at a time: the client holds no copy of the file
                connection.request("POST", "/timeline", body=body, headers={
                    "Content-Type": "audio/wav", "Content-Length": str(file.stat().st_size)})
                response = connection.getresponse()
                assert response.status == 200, response.read()[:300]
                response.read()
            connection.close()

        assert growth(post, files) < BOUND
