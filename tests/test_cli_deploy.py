"""The deployment commands as a user runs them: complexity, export, quantize, predict on ONNX, distill, predict on
audio piped into stdin."""

import io
import json
import os
import queue
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf

from audioclf.cli import main
from audioclf.config import EventsConfig
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.deploy.events import detect_events, events_csv_text
from audioclf.deploy.live import LiveStream
from audioclf.deploy.predictor import Predictor

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


@pytest.mark.slow  # end to end (2-4 s): make test-slow, to keep make test under five minutes
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


# --- predict RUN -: audio piped into stdin ------------------------------------------------------------------


def _recording(data, n_files=4):
    """A few of the demo's 1-s clips end to end (mono, 16 kHz)."""
    return np.concatenate([sf.read(path, dtype="float32")[0] for path in sorted(data.rglob("*.wav"))[:n_files]])


def _streamed_wav(wave, rate=16000):
    """A WAV as ``arecord -t wav`` writes it to a pipe: its sizes say 0x7FFFFFFF, whatever follows."""
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, subtype="PCM_16", format="WAV")
    data = bytearray(buffer.getvalue())
    at = data.index(b"data")
    data[4:8] = data[at + 4 : at + 8] = struct.pack("<I", 0x7FFFFFFF)
    return bytes(data[: at + 8]), bytes(data[at + 8 :])


def _piped_predict(*args):
    """``audioclf predict ARGS`` in its own process, stdin a pipe; its stdout lines arrive in a queue (None at its
    end), so the test can wait for one while the stream is still open."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "audioclf", "predict", *args], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines = queue.Queue()

    def pump():
        for line in iter(process.stdout.readline, b""):
            lines.put(line.decode())
        lines.put(None)
    threading.Thread(target=pump, daemon=True).start()
    return process, lines


def _rest(process, lines):
    """Every line still to come, then the exit code and stderr."""
    got = list(iter(lambda: lines.get(timeout=300), None))
    return got, process.wait(timeout=300), process.stderr.read().decode()


def _library_windows(run, wave, rate, hop=None):
    """The run's predictor, and the windows of ``wave`` scored here by the library (deploy.live)."""
    predictor = Predictor.from_run(run)
    live = LiveStream(predictor, rate, hop)
    return predictor, live.push(wave) + live.close()


def _expected_lines(run, wave, rate, hop=None):
    """What ``predict RUN -`` prints for ``wave``."""
    predictor, windows = _library_windows(run, wave, rate, hop)
    return [(w.start, w.end, ",".join(w.labels) or "-", predictor.classes[int(w.probabilities.argmax())],
             float(w.probabilities.max())) for w in windows]


def _parsed(line):
    start, end, labels, top, p = line.rstrip("\n").split("\t")
    return float(start), float(end), labels, top, float(p)


def test_predict_stdin_prints_each_window_of_a_wav_stream_before_the_stream_ends(run_and_data):
    run, data = run_and_data
    wave = _recording(data)
    header, samples = _streamed_wav(wave)
    process, lines = _piped_predict(str(run), "-")
    process.stdin.write(header + samples[: 2 * 19200])  # 1.2 s: the first window (0-1 s) is complete
    process.stdin.flush()
    first = lines.get(timeout=300)  # the streaming property: a line while the stream is still open
    assert process.poll() is None and _parsed(first)[:2] == (0.0, 1.0)
    process.stdin.write(samples[2 * 19200 :])
    process.stdin.close()
    rest, code, stderr = _rest(process, lines)
    assert code == 0, stderr
    got = [_parsed(line) for line in [first, *rest]]
    expected = _expected_lines(run, wave, 16000)
    assert [g[:3] for g in got] == [e[:3] for e in expected] and len(got) == 7  # 4 s, a window every 0.5 s
    np.testing.assert_allclose([g[4] for g in got], [e[4] for e in expected], atol=2e-3)
    assert "stdin: s16le 16000 Hz, 1 channel(s); windows of 1 s every 0.5 s" in stderr


@pytest.mark.slow  # end to end (2-4 s): make test-slow, to keep make test under five minutes
def test_predict_stdin_reads_raw_pcm_at_another_rate_as_json_lines(run_and_data):
    run, data = run_and_data
    wave = _recording(data, 3)
    stereo = np.repeat(wave[::2, None], 2, axis=1)  # 8 kHz, two channels: resampled and mixed down as it comes
    raw = (stereo * 32767).astype("<i2").tobytes()
    process, lines = _piped_predict(str(run), "-", "--format", "s16le", "--rate", "8000", "--channels", "2",
                                    "--hop", "0.25", "--json")
    process.stdin.write(raw[: 4 * 8800])  # 1.1 s
    process.stdin.flush()
    first = json.loads(lines.get(timeout=300))
    assert process.poll() is None and (first["start"], first["end"]) == (0.0, 1.0)
    assert set(first["probabilities"]) == set(json.loads((run / "summary.json").read_text())["classes"])
    assert first["labels"] == [max(first["probabilities"], key=first["probabilities"].get)]
    process.stdin.write(raw[4 * 8800 :])
    process.stdin.close()
    rest, code, stderr = _rest(process, lines)
    assert code == 0, stderr
    assert [json.loads(line)["end"] for line in rest] == [1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0]


def _predict_stdin(monkeypatch, capsys, tmp_path, data: bytes, *args):
    """``main(['predict', *args])`` in this process, with ``data`` on stdin; (exit code, stdout lines, stderr)."""
    monkeypatch.chdir(tmp_path)  # a relative output path (--csv out.csv) lands here, whatever the code does
    (tmp_path / "stdin").write_bytes(data)
    with open(tmp_path / "stdin", "rb") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_predict_stdin_decides_with_min_confidence_and_works_on_an_onnx_model(run_and_data, monkeypatch, capsys,
                                                                                tmp_path):
    run, data = run_and_data
    header, samples = _streamed_wav(_recording(data, 2))
    code, lines, _ = _predict_stdin(monkeypatch, capsys, tmp_path, header + samples, run, "-")
    assert code == 0 and len(lines) == 3 and all(_parsed(line)[2] != "-" for line in lines)
    code, unsure, _ = _predict_stdin(monkeypatch, capsys, tmp_path, header + samples, run, "-",
                                     "--min-confidence", "1")
    assert code == 0 and [_parsed(line)[2] for line in unsure] == ["-"] * 3  # every window abstains
    assert [_parsed(line)[3:] for line in unsure] == [_parsed(line)[3:] for line in lines]
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(run), "--out", str(onnx_path), "--with-frontend"]) == 0
    capsys.readouterr()
    code, onnx_lines, _ = _predict_stdin(monkeypatch, capsys, tmp_path, header + samples, onnx_path, "-")
    assert code == 0 and [_parsed(line)[:4] for line in onnx_lines] == [_parsed(line)[:4] for line in lines]


def _pcm(seconds, value=0.1, form="<i2", scale=32767):
    return (np.full(int(16000 * seconds), value) * scale).astype(form).tobytes()


@pytest.mark.parametrize("data,args,match,n_lines", [
    (_pcm(1.2) + b"\x01", ["--format", "s16le", "--rate", "16000"],
     "stdin: truncated: the stream ended 1 bytes into a 2-byte 1-channel s16le frame", 1),
    (_pcm(1.2, scale=1, form="<f4") + np.float32(np.nan).tobytes(), ["--format", "f32le", "--rate", "16000"],
     "stdin: contains NaN or infinite samples", 1),
    (_pcm(1), ["--format", "u8", "--rate", "16000"], "stdin: sample format 'u8'", 0),
    (_pcm(1), ["--format", "s16le", "--rate", "10"], "stdin: sample rate 10", 0),
    (_pcm(1), ["--format", "s16le"], "stdin: raw s16le samples: their sample rate must be given", 0),
    (b"", [], "stdin: empty: the stream ended before any audio arrived", 0),
    (b"#!/bin/sh\necho this is a script, not audio\n", [], "stdin: not a WAV stream", 0),
    (_pcm(1), ["--format", "s16le", "--rate", "16000", "--hop", "5"], "hop=5.0 s: expected", 0),
    (_pcm(1), ["--csv", "out.csv"], "--csv work on files only", 0),
    (_pcm(1), ["--top-k", "1", "--strict"], "--top-k, --strict work on files only", 0),
])
def test_hostile_stdin_is_one_line_after_the_lines_already_printed(run_and_data, monkeypatch, capsys, tmp_path,
                                                                   data, args, match, n_lines):
    run, _ = run_and_data
    code, lines, stderr = _predict_stdin(monkeypatch, capsys, tmp_path, data, run, "-", *args)
    assert code == 2 and len(lines) == n_lines and "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and match in last


def test_predict_stdin_from_a_terminal_asks_for_a_pipe(run_and_data, monkeypatch, capsys):
    import pty

    run, _ = run_and_data
    leader, follower = pty.openpty()
    os.write(leader, b"this is not audio, typed by hand\n")  # what a read would get (never a hang)
    try:
        with open(follower, "rb", buffering=0, closefd=False) as terminal:
            monkeypatch.setattr(sys, "stdin", terminal)
            assert main(["predict", str(run), "-"]) == 2
    finally:
        os.close(leader)
        os.close(follower)
    assert "stdin is a terminal: pipe audio in" in capsys.readouterr().err


def test_stdin_options_and_files_do_not_mix(run_and_data, capsys):
    run, data = run_and_data
    wav = str(next(data.rglob("*.wav")))
    assert main(["predict", str(run), "-", wav]) == 2
    assert "'-' (stdin) is the only input" in capsys.readouterr().err
    assert main(["predict", str(run), wav, "--hop", "0.1", "--json"]) == 2
    assert "--hop, --json: options of predict RUN - (audio from stdin)" in capsys.readouterr().err


def test_predict_stdin_stops_quietly_when_its_reader_does(run_and_data, monkeypatch, capsys, tmp_path):
    run, data = run_and_data
    header, samples = _streamed_wav(_recording(data, 2))
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -0`: nobody reads stdout
    with open(write_end, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        code, _, stderr = _predict_stdin(monkeypatch, capsys, tmp_path, header + samples, run, "-")
    assert code == 0 and "error" not in stderr


def test_predict_stdin_writes_the_streams_events_when_it_ends(run_and_data, monkeypatch, capsys, tmp_path):
    run, data = run_and_data
    wave = _recording(data)
    header, samples = _streamed_wav(wave)
    predictor, windows = _library_windows(run, wave, 16000)
    # a start threshold the barely trained model reaches in some windows, not in all
    high = float(np.median([w.probabilities.max() for w in windows]))
    out = tmp_path / "events.csv"
    code, lines, stderr = _predict_stdin(monkeypatch, capsys, tmp_path, header + samples, run, "-", "--events", out,
                                         "--events-set", f"events.high={high}", "--events-set", "events.low=0.01")
    assert code == 0 and len(lines) == 7 and f"wrote {out} (" in stderr
    expected = detect_events("stdin", [w.start for w in windows], [w.end for w in windows],
                             np.array([w.probabilities for w in windows]), predictor.classes,
                             EventsConfig(high=high, low=0.01), predictor.decision_thresholds())
    assert expected and out.read_text() == events_csv_text(expected)
