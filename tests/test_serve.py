"""``audioclf serve`` through a real HTTP client (urllib) against uvicorn on a free loopback port: every endpoint,
the same answers as ``predict``, and every bad input a 4xx with a one-line JSON error while the server keeps
serving."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf

from audioclf.cli import main
from audioclf.data.audio import load_audio, write_audio
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.deploy.predictor import Predictor
from servers import serving

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

TINY = ["train.batch_size=16", "data.clip_seconds=1.0", "features.n_mels=32", "features.n_fft=512",
        "features.hop_length=320", "train.epochs=2", "train.num_workers=0",
        "events.median_windows=3", "events.high=0.1"]  # an event threshold a 2-epoch model reaches


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    data = make_demo_dataset(root / "data", n_per_class=3, seconds=1.0, seed=6)
    assert main(["train", "--data", str(data), "--out", str(root / "run"), *TINY]) == 0
    return root / "run", data


@pytest.fixture(scope="module")
def server(trained):
    from audioclf.deploy.serve import ServeLimits, create_app, model_info

    run, _ = trained
    predictor = Predictor.from_run(run, device="cpu")
    limits = ServeLimits(max_bytes=2_000_000, max_seconds=20.0, timeout=30.0)
    with serving(create_app(predictor, model_info(run, predictor), limits)) as port:
        yield f"http://127.0.0.1:{port}"


def request(url: str, body: bytes | None = None, content_type: str | None = None) -> tuple[int, dict | str]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            raw, status, kind = response.read(), response.status, response.headers.get("content-type", "")
    except urllib.error.HTTPError as error:
        raw, status, kind = error.read(), error.code, error.headers.get("content-type", "")
    return status, json.loads(raw) if "json" in kind else raw.decode()


def early_answer(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    """POST with a raw socket that keeps reading when the server answers before the body is sent (an upload over
    the size limit is refused from its Content-Length; urllib would only see the broken pipe)."""
    import socket
    from urllib.parse import urlparse

    where = urlparse(url)
    with socket.create_connection((where.hostname, where.port), timeout=30) as conn:
        head = (f"POST {where.path} HTTP/1.1\r\nHost: {where.hostname}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            conn.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.split(b"\r\n\r\n", 1)[1])


def wav_bytes(wave: np.ndarray, sr: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, sr, subtype=subtype, format=fmt)
    return buffer.getvalue()


def test_health_model_and_page(server, trained):
    assert request(f"{server}/health") == (200, {"status": "ok"})
    status, info = request(f"{server}/model")
    run, _ = trained
    assert status == 200 and info["classes"] == Predictor.from_run(run).classes and info["sample_rate"] == 16000
    assert info["clip_seconds"] == 1.0 and info["parameters"] > 0 and "accuracy" in info["metrics"]["test"]
    status, page = request(f"{server}/")
    assert status == 200 and "<title>audioclf</title>" in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # nothing from a CDN


def test_predict_answers_as_the_command_line_does(server, trained):
    run, data = trained
    path = sorted(data.rglob("*.wav"))[0]
    expected = Predictor.from_run(run, device="cpu").predict_files([path])[0]
    for content_type in ("audio/wav", "application/octet-stream"):
        status, result = request(f"{server}/predict?top_k=2", path.read_bytes(), content_type)
        assert status == 200, result
        assert result["labels"] == list(expected.labels) and len(result["top_k"]) == 2
        got = np.array([result["probabilities"][c] for c in Predictor.from_run(run).classes])
        np.testing.assert_allclose(got, expected.probs, atol=1e-6)
    # flac, and raw PCM (16-bit little-endian at the file's rate)
    wave, sr = load_audio(path)
    status, flac = request(f"{server}/predict", wav_bytes(wave, sr, fmt="FLAC"), "audio/flac")
    assert status == 200 and flac["labels"] == list(expected.labels)
    pcm = (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()
    status, raw = request(f"{server}/predict?pcm=s16le&rate={sr}&channels=1", pcm, "application/octet-stream")
    assert status == 200 and raw["labels"] == list(expected.labels)


def test_a_form_upload_and_concurrent_requests(server, trained):
    from concurrent.futures import ThreadPoolExecutor

    _, data = trained
    path = sorted(data.rglob("*.wav"))[1]
    boundary = "audioclfboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, result = request(f"{server}/predict", body, f"multipart/form-data; boundary={boundary}")
    assert status == 200 and result["file"] == path.name
    files = sorted(data.rglob("*.wav"))[:8]
    with ThreadPoolExecutor(8) as pool:  # concurrent requests share forward passes and each gets its own answer
        answers = list(pool.map(lambda f: request(f"{server}/predict", f.read_bytes(), "audio/wav"), files))
    alone = [request(f"{server}/predict", f.read_bytes(), "audio/wav")[1] for f in files]
    for (status, together), single in zip(answers, alone):
        assert status == 200 and together["probabilities"] == pytest.approx(single["probabilities"], abs=1e-6)


def test_timeline_of_a_long_recording(server, trained):
    run, data = trained
    wave = np.concatenate([load_audio(f)[0] for f in sorted(data.rglob("*.wav"))[:5]])
    status, result = request(f"{server}/timeline", wav_bytes(wave, 16000), "audio/wav")
    assert status == 200 and result["window_seconds"] == 1.0 and len(result["starts"]) == 9
    assert result["starts"][:3] == [0.0, 0.5, 1.0] and len(result["probabilities"][0]) == len(result["classes"])


def test_predict_and_timeline_score_the_same_windows_of_a_5_s_file(server, trained):
    """Silence at the ends of a 5-s recording is trimmed (as in training) by both endpoints: the same windows, so
    /predict's count is /timeline's and its probabilities their mean; the timeline places them in the recording."""
    run, data = trained
    sound = np.concatenate([load_audio(f)[0] for f in sorted(data.rglob("*.wav"))[:4]])  # 4 s
    wave = np.concatenate([np.zeros(8000, np.float32), sound, np.zeros(8000, np.float32)])  # 0.5 s quiet each end
    status, predicted = request(f"{server}/predict", wav_bytes(wave, 16000), "audio/wav")
    assert status == 200, predicted
    status, timeline = request(f"{server}/timeline", wav_bytes(wave, 16000), "audio/wav")
    assert status == 200, timeline
    assert predicted["windows"] == len(timeline["starts"]) == len(timeline["ends"]) == len(timeline["probabilities"])
    mean = np.mean(timeline["probabilities"], axis=0)
    np.testing.assert_allclose([predicted["probabilities"][c] for c in timeline["classes"]], mean, atol=1e-5)
    # In the recording's time: the first window starts where the sound does (less the trim's padding), not at 0.
    assert 0.25 < timeline["starts"][0] <= 0.5 and 4.5 <= timeline["ends"][-1] < 4.75
    steps = np.diff(timeline["starts"])  # half a window apart; the last window ends where the sound does
    assert np.allclose(steps[:-1], 0.5) and 0 < steps[-1] <= 0.5 and timeline["window_seconds"] == 1.0


def _long_recording(data) -> np.ndarray:
    """Five demo clips of different classes one after another: a 5 s recording whose classes change in time."""
    return np.concatenate([load_audio(f)[0] for f in sorted(data.rglob("*.wav"))[::3][:5]])


def test_events_answer_as_predict_events_writes(server, trained, tmp_path):
    import csv

    from audioclf.config import EventsConfig

    run, data = trained
    path = tmp_path / "long.wav"
    write_audio(path, _long_recording(data), 16000)
    status, result = request(f"{server}/events?name=long.wav", path.read_bytes(), "audio/wav")
    assert status == 200, result
    predictor = Predictor.from_run(run, device="cpu")
    assert predictor.event_settings == EventsConfig(high=0.1, median_windows=3)  # the run's events section (TINY)
    expected = [e.to_dict() for e in predictor.events(path, "long.wav")]
    assert expected and result["file"] == "long.wav"
    assert [(e["event_label"], e["onset"], e["offset"]) for e in result["events"]] == \
        [(e["event_label"], e["onset"], e["offset"]) for e in expected]
    assert all(0 <= e["onset"] < e["offset"] <= 5.0 and 0.1 <= e["peak_probability"] <= 1 for e in result["events"])
    out = tmp_path / "events.csv"
    assert main(["predict", str(run), str(path), "--events", str(out)]) == 0
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows[0] == ["filename", "onset", "offset", "event_label", "peak_probability"]
    assert [(r[3], float(r[1]), float(r[2])) for r in rows[1:]] == \
        [(e["event_label"], e["onset"], e["offset"]) for e in expected]
    assert {r[0] for r in rows[1:]} == {"long.wav"}
    # with --timeline OUT.png: the same events from the same windows, drawn on the heat map
    again, picture = tmp_path / "again.csv", tmp_path / "timeline.png"
    assert main(["predict", str(run), str(path), "--timeline", str(picture), "--events", str(again)]) == 0
    assert again.read_text() == out.read_text() and picture.stat().st_size > 0
    assert main(["predict", str(run), str(path), "--events", str(tmp_path / "events.txt")]) == 2
    merged = tmp_path / "merged.csv"  # --events-set over the run's settings: no event shorter than 6 s
    assert main(["predict", str(run), str(path), "--events", str(merged), "--events-set", "events.min_duration=6"]) == 0
    assert merged.read_text().splitlines() == ["filename,onset,offset,event_label,peak_probability"]
    assert request(f"{server}/events", b"", "audio/wav")[0] == 400  # bad input as on /predict
    assert request(f"{server}/health") == (200, {"status": "ok"})


def test_evaluate_strong_scores_the_runs_events(trained, tmp_path, capsys):
    import json

    run, data = trained
    classes = Predictor.from_run(run).classes
    write_audio(tmp_path / "long.wav", _long_recording(data), 16000)
    truth = tmp_path / "strong.csv"
    truth.write_text("filename,onset,offset,event_label\n"
                     + "".join(f"long.wav,{i}.0,{i + 1}.0,{sorted(data.rglob('*.wav'))[::3][i].parent.name}\n"
                               for i in range(5))
                     + f"gone.wav,0,1,{classes[0]}\n")  # a recording that is not there: a reported skip
    assert main(["evaluate", str(run), "--strong", str(truth), "--json", str(tmp_path / "scores.json")]) == 0
    text = capsys.readouterr().out
    assert "event_f1" in text and "psds1" in text and "psds2" in text and "skipped" in text and "gone.wav" in text
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["files"] == 1 and scores["ground_truth_events"] == 5 and len(scores["skipped"]) == 1
    assert main(["evaluate", str(run), "--strong", str(truth), "--strict"]) == 2  # --strict: the skip is an error
    assert 0 <= scores["event_f1"] <= 1 and 0 <= scores["psds1"] <= 1 and set(scores["event_f1_per_class"]) <= set(classes)
    truth.write_text("filename,onset,offset,event_label\nlong.wav,0,1,no_such_class\n")
    assert main(["evaluate", str(run), "--strong", str(truth)]) != 0
    assert "line 2: unknown event_label 'no_such_class'" in capsys.readouterr().err


def _truncated(wave: np.ndarray) -> bytes:
    whole = wav_bytes(wave, 16000)
    return whole[: len(whole) // 2]


@pytest.mark.parametrize("case, status, message", [
    ("empty", 400, "empty upload"),
    ("not audio", 422, "cannot decode audio"),
    ("truncated", 422, "truncated: its header declares"),
    ("too long", 413, "the server's --max-seconds"),
    ("too large", 413, "bytes"),
    ("wrong content type", 415, "content type 'text/plain'"),
    ("nan samples", 422, "NaN or infinite"),
    ("finite garbage samples", 422, "beyond +-256"),  # 1e38 passed the NaN check: the server answered 500
    ("bad pcm", 422, "truncated: the stream ended 1 bytes into a 2-byte"),
    ("nan pcm", 422, "raw PCM: contains NaN"),
    ("unknown pcm format", 400, "sample format 'u8'"),
])
def test_bad_input_is_a_4xx_with_one_line_and_the_server_goes_on(server, case, status, message):
    wave = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    nan = wave.copy()
    nan[100] = np.nan
    bodies = {
        "empty": (b"", "audio/wav"),
        "not audio": (b"this is not audio at all, just text" * 10, "audio/wav"),
        "truncated": (_truncated(wave), "audio/wav"),
        "too long": (wav_bytes(np.zeros(8000 * 30, np.float32), 8000), "audio/wav"),  # 30 s > 20 s
        "too large": (b"\0" * 2_100_000, "audio/wav"),
        "wrong content type": (wav_bytes(wave, 16000), "text/plain"),
        "nan samples": (wav_bytes(nan, 16000, subtype="FLOAT"), "audio/wav"),
        "finite garbage samples": (wav_bytes(np.full(16000, 1e38, np.float32), 16000, subtype="FLOAT"), "audio/wav"),
        "bad pcm": (b"\0" * 5, "application/octet-stream"),
        "nan pcm": (nan.astype("<f4").tobytes(), "application/octet-stream"),
        "unknown pcm format": (b"\0" * 16, "application/octet-stream"),
    }
    body, content_type = bodies[case]
    pcm = {"bad pcm": "s16le", "nan pcm": "f32le", "unknown pcm format": "u8"}.get(case)
    url = f"{server}/predict" + (f"?pcm={pcm}&rate=16000" if pcm else "")
    got, result = (early_answer if case == "too large" else request)(url, body, content_type)
    assert got == status, result
    assert set(result) == {"error"} and message in result["error"] and "\n" not in result["error"]
    assert "audioclf-serve-" not in result["error"]  # the server's temp file is not the client's business
    assert request(f"{server}/health") == (200, {"status": "ok"})  # still serving


def test_a_body_goes_to_disk_as_it_arrives_and_raw_pcm_is_converted_a_block_at_a_time(tmp_path, monkeypatch):
    import asyncio
    import tempfile

    from audioclf.deploy.serve import HTTPProblem, _pcm_to_wav, _spool

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "spool"))
    (tmp_path / "spool").mkdir()
    frames = (np.random.default_rng(2).uniform(-1, 1, (10_000, 2)) * 32767).astype("<i2")
    raw = frames.tobytes()

    async def chunks(fail_after: int | None = None):
        for i in range(0, len(raw), 4093):  # odd sizes: frames cut across chunks
            if fail_after is not None and i >= fail_after:
                raise HTTPProblem(413, "the body is over the limit")  # what _Guard raises mid-body
            yield raw[i:i + 4093]

    spooled, head = asyncio.run(_spool(chunks()))
    assert spooled.read_bytes() == raw and head == raw[:4]
    out = tmp_path / "pcm.wav"
    _pcm_to_wav(spooled, "s16le", 16000, 2, out, block_frames=999)
    wave, rate = sf.read(str(out), dtype="float32")
    assert rate == 16000
    np.testing.assert_array_equal(wave, frames.astype(np.float32) / 32768.0)
    spooled.unlink()
    with pytest.raises(HTTPProblem):
        asyncio.run(_spool(chunks(fail_after=20_000)))
    assert list((tmp_path / "spool").iterdir()) == []  # a refused body leaves no part-file behind


def test_the_server_binds_to_loopback_by_default():
    import inspect

    from audioclf.deploy.serve import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    from audioclf.cli import build_parser

    args = build_parser().parse_args(["serve", "runs/x"])
    assert args.host == "127.0.0.1"


def test_an_exported_onnx_model_is_served_too(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from audioclf.deploy.export import export_onnx
    from audioclf.deploy.onnx_predictor import OnnxPredictor
    from audioclf.deploy.serve import create_app, model_info

    run, data = trained
    onnx = export_onnx(run, tmp_path / "model.wave.onnx", with_frontend=True)
    predictor = OnnxPredictor(onnx)
    with serving(create_app(predictor, model_info(onnx, predictor))) as port:
        url = f"http://127.0.0.1:{port}"
        path = sorted(data.rglob("*.wav"))[2]
        status, result = request(f"{url}/predict", path.read_bytes(), "audio/wav")
        expected = OnnxPredictor(onnx).predict_files([path])[0].probs
        assert status == 200 and request(f"{url}/model")[1]["input"] == "waveform"
        np.testing.assert_allclose([result["probabilities"][c] for c in predictor.classes], expected, atol=1e-6)
