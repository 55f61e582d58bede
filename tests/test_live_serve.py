"""The server's live microphone mode (``/live``, a WebSocket) against uvicorn on a loopback port (with wsproto, as
``audioclf serve`` runs it), through a small wsproto client: the windows a stream answers are
:class:`LiveStream`'s, and every hostile stream closes its own socket with a one-line reason while the server
goes on (``/health`` and ``/predict`` answer after each)."""

from __future__ import annotations

import io
import json
import socket
import time
import urllib.request

import numpy as np
import pytest
import soundfile as sf

from audioclf.deploy.live import LiveStream
from audioclf.deploy.predictor import WindowedPredictor
from audioclf.deploy.serve_live import close_reason
from servers import serving

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
wsproto = pytest.importorskip("wsproto")
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, RejectConnection,  # noqa: E402
                            Request, TextMessage)

SR, CLIP = 8000, 800
WAIT = 10.0  # seconds a client waits for a message: a server that never answers fails, it does not hang


class Loudness(WindowedPredictor):
    """'loud' when a window's RMS is over 0.1, else 'quiet'."""

    classes, task, sample_rate, clip_samples = ["quiet", "loud"], "single_label", SR, CLIP

    def window_probabilities(self, windows):
        loud = np.sqrt(np.square(windows.astype(np.float64)).mean(1)) > 0.1
        return np.stack([np.where(loud, 0.2, 0.8), np.where(loud, 0.8, 0.2)], axis=1)


@pytest.fixture(scope="module")
def port():
    from audioclf.deploy.serve import ServeLimits, create_app

    limits = ServeLimits(live_message_bytes=4096, live_seconds=0.5, live_sessions=2, read_timeout=1.0)
    with serving(create_app(Loudness(), {"source": "stand-in"}, limits)) as port:
        yield port


class Refused(Exception):
    """The server refused the upgrade (an HTTP answer instead of a WebSocket)."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class Client:
    """A WebSocket client on a raw socket (wsproto): ``send`` bytes or text, ``receive`` one JSON message, or
    ``until_closed``: every message up to the server's close, and the close's code and reason."""

    def __init__(self, port: int, target: str, host: str | None = None, origin: str | None = None):
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        headers = [(b"origin", origin.encode())] if origin else []
        self.sock.sendall(self.ws.send(Request(host=host or f"127.0.0.1:{port}", target=target,
                                               extra_headers=headers)))
        self.pending, self.text = [], ""
        event = self._next()
        if isinstance(event, RejectConnection):
            self.sock.close()
            raise Refused(event.status_code)
        assert isinstance(event, AcceptConnection)

    def _next(self):
        while not self.pending:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    def send(self, message: bytes | str) -> None:
        event = TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        self.sock.sendall(self.ws.send(event))

    def receive(self):
        """The next whole JSON message, or the CloseConnection event."""
        while True:
            event = self._next()
            if isinstance(event, CloseConnection):
                self.sock.sendall(self.ws.send(event.response()))
                self.sock.close()
                return event
            if isinstance(event, TextMessage):
                self.text += event.data
                if event.message_finished:
                    text, self.text = self.text, ""
                    return json.loads(text)

    def until_closed(self) -> tuple[list[dict], CloseConnection]:
        messages = []
        while not isinstance(message := self.receive(), CloseConnection):
            messages.append(message)
        return messages, message


def noise(seconds: float, rate: int, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.random.default_rng(0).standard_normal(int(seconds * rate))).astype(np.float32)


def still_serving(port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=WAIT) as answer:
        assert json.loads(answer.read()) == {"status": "ok"}
    wav = io.BytesIO()
    sf.write(wav, noise(0.3, SR), SR, format="WAV")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=wav.getvalue(),
                                     headers={"Content-Type": "audio/wav"})
    with urllib.request.urlopen(request, timeout=WAIT) as answer:
        assert json.loads(answer.read())["labels"] == ["loud"]


def test_a_stream_answers_the_windows_live_stream_scores_and_ends_cleanly(port):
    rate, wave = 16000, np.concatenate([noise(0.3, 16000), np.zeros(3000, np.float32)])
    raw = (wave * 32767).astype("<i2").tobytes()
    client = Client(port, "/live?rate=16000&format=s16le&channels=1&hop=0.05")
    header = client.receive()
    for at in range(0, len(raw), 999):  # odd sizes: frames split across messages
        client.send(raw[at : at + 999])
    client.send("end")
    windows, close = client.until_closed()
    expected = LiveStream(Loudness(), rate, 0.05)
    expected = expected.push(wave) + expected.close()
    assert header == {"classes": ["quiet", "loud"], "sample_rate": SR, "clip_seconds": 0.1, "hop_seconds": 0.05}
    assert close.code == 1000 and len(windows) == len(expected) == 9  # 3900 samples: 8 + a last at the end
    assert [(w["start"], w["end"]) for w in windows] == [(round(w.start, 4), round(w.end, 4)) for w in expected]
    assert [w["labels"] for w in windows] == [list(w.labels) for w in expected]
    assert windows[0]["labels"] == ["loud"] and windows[-1]["labels"] == ["quiet"]  # the silence at the end
    assert windows[0]["top"] == [["loud", 0.8], ["quiet", 0.2]] and windows[0]["probabilities"] == [0.2, 0.8]


NAN = np.array([0.1, np.nan], "<f4").tobytes()


@pytest.mark.parametrize("query,sent,code,reason", [
    ("rate=fast", [], 1008, "whole numbers"),
    ("rate=10", [], 1008, "sample rate 10"),
    ("rate=8000&format=u8", [], 1008, "format='u8'"),
    ("rate=8000&hop=5", [], 1008, "hop='5'"),
    ("rate=8000&hop=nan", [], 1008, "hop='nan'"),
    ("rate=8000&hop=0.0001", [], 1008, "a tenth of a clip"),  # a window per sample: refused
    ("rate=8000&gain=2", [], 1008, "unknown query key 'gain'"),
    ("rate=8000&channels=0", [], 1008, "0 channels"),
    ("rate=8000", [NAN], 1007, "NaN"),
    ("rate=8000", [np.array([1000.0], "<f4").tobytes()], 1007, "+48 dBFS"),
    ("rate=8000", [b"\0" * 6, "end"], 1007, "truncated: the stream ended 2 bytes into a 4-byte"),
    ("rate=8000", ["hello"], 1003, "text message"),
    ("rate=8000", [b"\0" * 4100], 1009, "4100 bytes"),
    ("rate=8000", [noise(0.12, 8000).tobytes()] * 5, 1008, "passed 0.5 s"),
    ("rate=8000", [], 1008, "no audio for 1 s"),  # a client that holds its place and sends nothing
])
def test_a_hostile_stream_closes_its_socket_with_one_line_and_the_server_goes_on(port, query, sent, code, reason):
    client = Client(port, f"/live?{query}")
    for message in sent:
        client.send(message)
    messages, close = client.until_closed()
    error = messages[-1]["error"]
    assert close.code == code and reason in error and "\n" not in error
    assert close.reason == close_reason(error) and len(close.reason.encode()) <= 123  # e.g. the +48 dBFS line
    still_serving(port)


def test_a_long_reason_is_cut_to_what_a_close_frame_holds_on_a_character_boundary():
    assert close_reason("short") == "short"
    cut = close_reason("é" * 100)  # 200 bytes of UTF-8
    assert len(cut.encode()) <= 123 and cut.endswith("...") and set(cut[:-3]) == {"é"}


def test_sessions_over_the_limit_are_told_to_come_back_and_a_closed_one_frees_its_place(port):
    first, second = Client(port, "/live?rate=8000"), Client(port, "/live?rate=8000")
    first.receive(), second.receive()  # both streams open: the server's limit is 2
    messages, close = Client(port, "/live?rate=8000").until_closed()
    assert close.code == 1013 and "2 live streams are open" in messages[-1]["error"]
    first.send("end")
    assert first.until_closed()[1].code == 1000
    fourth = Client(port, "/live?rate=8000")
    assert fourth.receive()["classes"] == ["quiet", "loud"]
    for client in (second, fourth):
        client.send("end")
        client.until_closed()
    still_serving(port)


def test_clients_that_vanish_mid_stream_give_their_places_back(port):
    for _ in range(2):  # the server's limit is 2: places kept by vanished clients would refuse the next ones
        gone = [Client(port, "/live?rate=8000"), Client(port, "/live?rate=8000")]
        for client in gone:
            client.receive()
            client.send(noise(0.05, 8000).tobytes())
            client.sock.close()  # no close frame: the connection just ends
        deadline = time.monotonic() + WAIT  # the server learns of it when it next reads: wait for that
        while True:
            client = Client(port, "/live?rate=8000")
            first = client.receive()
            if "classes" in first or time.monotonic() > deadline:
                break
            client.until_closed()
        assert "classes" in first, first
        client.send("end")
        assert client.until_closed()[1].code == 1000
    still_serving(port)


@pytest.mark.parametrize("host,origin", [(None, "http://evil.example"), ("evil.example", None),
                                         ("evil.example:8000", "http://evil.example:8000")])
def test_a_websocket_from_another_origin_or_host_is_refused_before_the_upgrade(port, host, origin):
    # Browsers apply no CORS to WebSockets: without this check any page the user opens could listen in.
    with pytest.raises(Refused) as refused:
        Client(port, "/live?rate=8000", host=host, origin=origin)
    assert refused.value.status == 403
    same_origin = Client(port, "/live?rate=8000", origin=f"http://127.0.0.1:{port}")
    assert same_origin.receive()["sample_rate"] == SR
    same_origin.send("end")
    same_origin.until_closed()
    still_serving(port)


def test_the_command_line_passes_the_live_bounds(monkeypatch):
    import audioclf.deploy.serve as serving
    from audioclf.cli import main

    seen = {}
    monkeypatch.setattr(serving, "serve", lambda source, host, port, limits: seen.update(limits=limits))
    assert main(["serve", "runs/x", "--live-sessions", "9", "--live-seconds", "60"]) == 0
    assert seen["limits"].live_sessions == 9 and seen["limits"].live_seconds == 60
