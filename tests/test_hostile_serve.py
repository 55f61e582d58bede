"""Hostile clients against ``audioclf serve``: bodies over the limit however they are framed, slow bodies, headers
that declare a huge decode, requests that outlast their time, odd names, foreign Host and Origin headers. Each
is a prompt 4xx/503 with ``{"error": ...}`` and one log line, and the server goes on.

The model is a stand-in (a :class:`WindowedPredictor` with constant output) so no training is needed; every
request goes through a raw socket with a timeout, so a regression (a server that waits for the rest of a body)
fails in seconds instead of hanging."""

from __future__ import annotations

import io
import json
import logging
import socket
import time

import numpy as np
import pytest
import soundfile as sf

from audioclf.deploy.predictor import WindowedPredictor
from servers import serving

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

MAX_BYTES = 64 * 1024
WAIT = 6.0  # seconds a client waits for an answer: the server's bounds below are 1-2 s


class Constant(WindowedPredictor):
    """Equal probabilities for two classes; ``delay`` seconds per batch of windows, counted in ``calls``."""

    classes, task, sample_rate, clip_samples = ["a", "b"], "single_label", 8000, 800

    def __init__(self):
        self.calls, self.delay = 0, 0.0

    def window_probabilities(self, windows):
        self.calls += 1
        time.sleep(self.delay)
        return np.full((len(windows), 2), 0.5, np.float32)


@pytest.fixture(scope="module")
def served():
    from audioclf.deploy.serve import ServeLimits, create_app

    predictor = Constant()
    limits = ServeLimits(max_bytes=MAX_BYTES, max_seconds=5.0, timeout=0.5, read_timeout=1.0, batch_windows=1,
                         allowed_hosts=("audio.lan",))
    with serving(create_app(predictor, {"source": "stand-in"}, limits)) as port:
        yield port, predictor


def exchange(port: int, head: str, parts: tuple[bytes, ...] = (), host: str | None = None,
             extra: str = "") -> tuple[int, dict]:
    """Send a request head (``METHOD path``), headers ``extra`` and body ``parts`` and return the answer, without
    closing the sending side: a server that waits for more than was sent times this client out."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as conn:
        conn.sendall(f"{head} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\n{extra}"
                     "Connection: close\r\n\r\n".encode() + b"".join(parts))
        answer = b""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
            top, _, rest = answer.partition(b"\r\n\r\n")
            length = [line.split(b":")[1] for line in top.split(b"\r\n") if line.lower().startswith(b"content-length")]
            if length and len(rest) >= int(length[0]):
                break
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.split(b"\r\n\r\n", 1)[1])


def chunked(data: bytes, size: int = 16384) -> tuple[bytes, ...]:
    """``data`` in HTTP chunks, without the closing zero-length chunk (the client is still sending)."""
    return tuple(f"{len(data[i:i + size]):x}\r\n".encode() + data[i:i + size] + b"\r\n"
                 for i in range(0, len(data), size))


def wav(seconds: float = 0.5, rate: int = 8000, channels: int = 1, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((int(seconds * rate), channels), np.float32), rate, format=fmt,
             subtype="PCM_16")
    return buffer.getvalue()


def post(port: int, body: bytes, query: str = "", content_type: str = "audio/wav", **kw) -> tuple[int, dict]:
    return exchange(port, f"POST /predict{query}", (body,),
                    extra=f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{kw.pop('extra', '')}", **kw)


def test_a_chunked_form_over_the_limit_is_refused_without_waiting_for_the_rest(served):
    port, _ = served
    head = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n"
            b"Content-Type: audio/wav\r\n\r\n")
    start = time.monotonic()
    status, answer = exchange(port, "POST /predict", chunked(head + b"\0" * (3 * MAX_BYTES)),
                              extra="Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n")
    assert status == 413 and set(answer) == {"error"} and "--max-mb" in answer["error"]
    assert time.monotonic() - start < WAIT - 1


def test_a_chunked_raw_body_over_the_limit_is_refused_without_waiting_for_the_rest(served):
    port, _ = served
    status, answer = exchange(port, "POST /predict", chunked(b"\0" * (3 * MAX_BYTES)),
                              extra="Content-Type: audio/wav\r\nTransfer-Encoding: chunked\r\n")
    assert status == 413 and "--max-mb" in answer["error"]


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(served):
    port, _ = served
    status, answer = exchange(port, "POST /predict", extra=f"Content-Type: audio/wav\r\nContent-Length: {10 * 2**30}\r\n")
    assert status == 413 and str(10 * 2**30) in answer["error"]
    # curl's way for large bodies: it waits for "100 Continue", which must not come
    status, answer = exchange(port, "POST /predict", extra=f"Content-Type: audio/wav\r\nContent-Length: {10 * 2**30}\r\n"
                                                           "Expect: 100-continue\r\n")
    assert status == 413


def test_a_body_that_does_not_arrive_is_a_408(served):
    port, _ = served
    start = time.monotonic()
    status, answer = exchange(port, "POST /predict", (b"RIF",), extra="Content-Type: audio/wav\r\nContent-Length: 1000\r\n")
    assert status == 408 and "within 1 s" in answer["error"]
    assert time.monotonic() - start < 3


def test_a_small_file_declaring_a_huge_decode_is_refused_from_its_header(served):
    port, predictor = served
    body = wav(seconds=4.0, rate=96000, channels=8, fmt="FLAC")  # 4 s (under 5) but 3M samples (over 480k)
    assert len(body) < MAX_BYTES
    calls = predictor.calls
    status, answer = post(port, body, content_type="audio/flac")
    assert status == 413 and "decodes up to 480000 samples" in answer["error"]
    assert predictor.calls == calls  # nothing was scored
    assert post(port, wav(seconds=4.0, rate=48000, channels=2, fmt="FLAC"), content_type="audio/flac")[0] == 200


def test_a_request_over_its_time_stops_its_work_when_it_is_answered(served):
    port, predictor = served
    predictor.delay = 0.1  # 0.1 s a window, ~40 windows: 4 s of work against a 0.5 s limit
    try:
        before = predictor.calls
        status, answer = post(port, wav(seconds=2.0))
        at_answer = predictor.calls
        time.sleep(0.6)
        assert status == 503 and "--timeout" in answer["error"]
        assert 0 < at_answer - before < 10 and predictor.calls == at_answer  # no batch after the 503
    finally:
        predictor.delay = 0.0


@pytest.mark.parametrize("name", ["clip%00.wav", "a" * 300 + ".wav", "..%2Fclip.wav"])
def test_an_unusable_file_name_is_a_400(served, name):
    port, _ = served
    status, answer = post(port, wav(), query=f"?name={name}")
    assert status == 400 and set(answer) == {"error"} and "file name" in answer["error"]


def test_a_long_suffix_is_not_a_temp_file_name(served):
    port, _ = served
    status, answer = post(port, wav(), query=f"?name=clip.{'x' * 248}")  # a 249-character suffix
    assert status == 200 and answer["file"] == f"clip.{'x' * 248}"


@pytest.mark.parametrize("request_line, status", [("GET /nowhere", 404), ("DELETE /predict", 405),
                                                   ("POST /predict?top_k=many", 422)])
def test_framework_errors_have_the_documented_shape(served, request_line, status):
    port, _ = served
    got, answer = exchange(port, request_line, (wav(),), extra=f"Content-Type: audio/wav\r\nContent-Length: {len(wav())}\r\n")
    assert got == status and set(answer) == {"error"} and answer["error"]


def test_the_api_docs_are_off_unless_asked(served):
    from audioclf.deploy.serve import ServeLimits, create_app

    port, _ = served
    assert exchange(port, "GET /docs")[0] == 404 and exchange(port, "GET /openapi.json")[0] == 404
    with serving(create_app(Constant(), {"source": "stand-in"}, ServeLimits(docs=True))) as other:
        with socket.create_connection(("127.0.0.1", other), timeout=WAIT) as conn:
            conn.sendall(f"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1:{other}\r\nConnection: close\r\n\r\n".encode())
            assert conn.recv(100).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("host, status", [("evil.example", 400), ("evil.example:8000", 400), ("localhost:1", 200),
                                          ("127.0.0.1", 200), ("[::1]:8000", 200), ("audio.lan:8000", 200)])
def test_only_this_servers_host_names_are_served(served, host, status):
    port, _ = served
    got, answer = exchange(port, "GET /model", host=host)
    assert got == status, answer
    if status == 400:
        assert "--allowed-host" in answer["error"]


def test_a_post_from_another_origin_is_refused(served):
    port, _ = served
    status, answer = post(port, wav(), extra="Origin: http://evil.example\r\n")
    assert status == 403 and "another origin" in answer["error"]
    assert post(port, wav(), extra=f"Origin: http://127.0.0.1:{port}\r\n")[0] == 200
    assert post(port, wav(), extra="Origin: null\r\n")[0] == 403  # a sandboxed page or a file: URL


def test_binding_beyond_loopback_warns():
    from audioclf.deploy.serve import bind_warning

    for host in ("0.0.0.0", "::", "192.168.1.5", "myhost"):
        assert "without authentication" in bind_warning(host)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert bind_warning(host) is None


def test_a_refused_request_logs_one_line_without_a_traceback(served, caplog):
    port, _ = served
    with caplog.at_level(logging.INFO):
        for query, body in (("?name=clip%00.wav", wav()), ("", b"not audio at all" * 10)):
            caplog.clear()
            status, _ = post(port, body, query=query)
            time.sleep(0.1)  # the server thread's records
            records = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert 400 <= status < 500 and len(records) == 1, [r.getMessage() for r in records]
            assert records[0].exc_info is None and "\n" not in records[0].getMessage()


def test_the_command_line_passes_the_bounds_and_warns_on_a_public_bind(monkeypatch, capsys):
    import audioclf.deploy.serve as serving
    from audioclf.cli import main

    seen = {}
    monkeypatch.setattr(serving, "serve", lambda source, host, port, limits: seen.update(host=host, limits=limits))
    assert main(["serve", "runs/x", "--host", "0.0.0.0", "--max-mb", "1", "--read-timeout", "5",
                 "--allowed-host", "audio.lan", "--allowed-host", "b.lan"]) == 0
    limits = seen["limits"]
    assert limits.max_bytes == 2**20 and limits.read_timeout == 5 and limits.allowed_hosts == ("audio.lan", "b.lan")
    assert not limits.docs and "without authentication" in capsys.readouterr().err
    assert main(["serve", "runs/x", "--docs"]) == 0 and seen["limits"].docs
    assert "without authentication" not in capsys.readouterr().err
