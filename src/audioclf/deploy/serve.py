"""``audioclf serve``: a trained model over HTTP, and a page to try it in a browser.

Built on FastAPI and uvicorn (Starlette's ASGI stack): a well-kept, widely deployed pair whose async request
handling lets many uploads wait on the network while the model runs in worker threads, and whose requests and
responses are plain JSON any program can use. The endpoints:

* ``POST /predict`` (``?top_k=3&aggregate=mean&min_confidence=0.6``): an audio file (wav, flac, ogg, mp3) as the
  raw request body
  (``Content-Type: audio/...`` or ``application/octet-stream``; ``?name=`` names it) or as the ``file`` field
  of a form; or raw PCM (``?pcm=s16le|s24le|s32le|f32le&rate=16000&channels=1``). Returns the top-k classes,
  every class's probability and the
  predicted labels with the run's decisions (temperature, thresholds: :mod:`audioclf.calibration`): single-label
  the most probable, none (``"abstained": true``) below ``min_confidence``; multi-label every class above its
  threshold.
* ``POST /timeline``: the same inputs; every window's probabilities against time (a long recording).
* ``POST /events``: the same inputs; the recording's sound events (``predict --events``: onset, offset, label,
  peak probability; the run's ``events`` settings, :mod:`audioclf.deploy.events`).
* ``GET /live`` (a WebSocket, ``?rate=48000&format=f32le&channels=1&hop=0.25``): a live stream of PCM frames in,
  each window's labels and probabilities out as soon as it is complete (:mod:`audioclf.deploy.serve_live`).
* ``GET /health``, ``GET /model`` (classes, sample rate, clip length, parameters and MACs, the run's metrics).
* ``GET /``: the page (``static/index.html``: choose, drop or record a file; waveform, top-k bars, timeline heat
  map; no network access beyond this server).

Every request goes through the predictor's own code path (``file_window_probabilities`` / ``timeline``, as
``audioclf predict``): the run's sample rate, silence removal and windows. Windows of concurrent requests share
forward passes (:class:`WindowBatcher`). Bad input is a 4xx with ``{"error": "<one line>"}``: an empty body
(400), a body over the size limit or a recording over the length limit (413), a content type that is not audio
(415), a file that is not audio, truncated or holds NaN samples (422); a request over the time limit is a 503.

Hostile clients: the body is counted as it arrives (raw, chunked or a form), written to a temp file as it comes
(never held in memory: raw PCM is converted to a WAV there a block at a time) and refused with 413 once it passes
``max_bytes`` (a declared Content-Length over it before a byte is read); a body not received within
``read_timeout`` is a 408; a header declaring more decoded samples than ``max_seconds`` of 48 kHz stereo is a
413 before decoding; a request past ``timeout`` stops its work at the next batch of windows and answers 503.
Only ``Host`` values that are ``localhost``, an IP address or an ``allowed_hosts`` name are served (DNS
rebinding), and a POST from a page of another origin is refused (403). ``/docs`` and ``/openapi.json`` are off
unless ``docs``. The server binds to 127.0.0.1 unless told otherwise.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request), which are imported
# inside create_app (FastAPI is an optional dependency), so they must be evaluated where they are written.
import asyncio
import ipaddress
import json
import logging
import os
import queue
import re
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ..calibration import check_min_confidence
from ..data.audio import check_header, truncation
from ..errors import AudioDecodeError, ConfigError, NonFiniteOutputs

__all__ = ["ServeLimits", "WindowBatcher", "bind_warning", "create_app", "model_info", "serve"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
_SUFFIX = {"audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/flac": ".flac",
           "audio/x-flac": ".flac", "audio/ogg": ".ogg", "audio/mpeg": ".mp3", "audio/mp3": ".mp3"}
_NAME = re.compile(r"^[^\x00-\x1f\x7f/\\]{1,255}$")  # a displayable file name: no control characters or folders
_SAFE_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")


@dataclass
class ServeLimits:
    max_bytes: int = 50 * 2**20  # request bodies larger than this are refused (413)
    max_seconds: float = 600.0  # recordings longer than this are refused from their header (413)
    timeout: float = 60.0  # seconds a request may take (503 after)
    batch_windows: int = 64  # windows of concurrent requests scored in one forward pass
    read_timeout: float = 30.0  # seconds the whole body may take to arrive (408 after: slow clients)
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides localhost and IP addresses
    docs: bool = False  # serve /docs and /openapi.json
    live_sessions: int = 4  # live WebSocket streams open at once (more are closed: try again later)
    live_seconds: float = 3600.0  # seconds of audio one live stream may send
    live_message_bytes: int = 2**20  # bytes one live message may hold (the page sends about 0.1 s: 19 kB)

    @property
    def max_decoded(self) -> int:
        """Samples (frames x channels) a header may declare: ``max_seconds`` of 48 kHz stereo. Decoding cost
        follows the samples, not the seconds: 600 s at 192 kHz in 8 channels is 16 times as much work."""
        return int(self.max_seconds * 48000 * 2)


class HTTPProblem(Exception):
    """A request refused with ``status`` and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Stopped(Exception):
    """Raised in a request's worker thread at its next batch once the request has timed out."""


class WindowBatcher:
    """Scores windows for many requests at once: each request's batch waits (without holding a lock) until the
    worker thread takes every waiting batch, up to ``max_windows`` windows, through one forward pass. Under
    concurrent load the model sees fuller batches; alone, a request's batch runs at once."""

    def __init__(self, score, max_windows: int = 64):
        self.score, self.max_windows = score, max_windows
        self.jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, daemon=True, name="audioclf-batcher").start()

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        done: Future = Future()
        self.jobs.put((np.asarray(windows, dtype=np.float32), done))
        return done.result()

    def _work(self) -> None:
        while True:
            jobs = [self.jobs.get()]
            size = len(jobs[0][0])
            while size < self.max_windows:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                jobs.append(job)
                size += len(job[0])
            try:
                probs = np.asarray(self.score(np.concatenate([windows for windows, _ in jobs])))
            except Exception as exc:  # every waiting request learns of it; the worker goes on
                for _, done in jobs:
                    done.set_exception(exc)
                continue
            start = 0
            for windows, done in jobs:
                done.set_result(probs[start:start + len(windows)])
                start += len(windows)


def model_info(source: str | Path, predictor) -> dict[str, Any]:
    """What ``GET /model`` says: the predictor's classes and input, and the run's numbers when it is a run."""
    info: dict[str, Any] = {"source": str(source), "task": predictor.task, "classes": list(predictor.classes),
                            "sample_rate": predictor.sample_rate, "clip_seconds": predictor.clip_samples / predictor.sample_rate,
                            "silence_removal": predictor.trim_silence or False}
    summary_path = Path(source) / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        parameters = summary.get("model", {}).get("parameters", {})
        info.update(model=summary.get("model", {}).get("name"), parameters=parameters.get("deployed_params"),
                    macs=parameters.get("macs"), metrics={split: summary.get("metrics", {}).get(split, {})
                                                          for split in ("val", "test")})
    elif getattr(predictor, "metadata", None):
        info.update(model=predictor.metadata.get("model"), input=predictor.metadata.get("input"))
    return info


def _suffix(content_type: str, head: bytes, filename: str | None) -> str:
    if filename and _SAFE_SUFFIX.match(Path(filename).suffix.lower()):  # the name is the client's: no odd suffix
        return Path(filename).suffix.lower()
    if content_type in _SUFFIX:
        return _SUFFIX[content_type]
    for magic, suffix in ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3")):
        if head.startswith(magic):
            return suffix
    return ".mp3" if head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2") else ".bin"


def _pcm_to_wav(raw: Path, form: str, rate: int, channels: int, path: Path, block_frames: int = 1 << 16) -> None:
    """The raw PCM spooled in ``raw`` as a float WAV at ``path``, a block at a time (a long stream is never held),
    through the one PCM decoder (:class:`audioclf.data.pcm.PcmDecoder`, as stdin and ``/live`` use): a format the
    server does not take is a 400, frames that are cut, NaN or out of range a 422."""
    import soundfile as sf

    from ..data.pcm import PcmDecoder

    try:
        decoder = PcmDecoder(form, rate, channels, source="raw PCM")
    except AudioDecodeError as exc:
        raise HTTPProblem(400, f"{exc} (?pcm=FORMAT&rate=HZ&channels=N)") from None
    try:
        with open(raw, "rb") as data, sf.SoundFile(str(path), "w", rate, channels, subtype="FLOAT") as out:
            while block := data.read(block_frames * decoder.frame_bytes):
                out.write(decoder.decode(block))
        decoder.finish()
    except AudioDecodeError as exc:
        raise HTTPProblem(422, str(exc)) from None


async def _spool(chunks) -> tuple[Path, bytes]:
    """A request body written to a temp file as it arrives, and its first bytes (what kind of file it is): a long
    recording is never held in memory, whatever the upload limit. The caller removes the file."""
    handle, name = tempfile.mkstemp(suffix=".part", prefix="audioclf-serve-")
    path, head = Path(name), b""
    try:
        with os.fdopen(handle, "wb") as out:
            async for chunk in chunks:
                head = head if len(head) >= 4 else (head + chunk)[:4]
                out.write(chunk)  # a local disk write of a network chunk: brief enough for the event loop
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, head


async def _form_chunks(field, size: int = 1 << 20):
    """An uploaded form file (spooled to disk by the form parser past 1 MB) read back a chunk at a time."""
    while chunk := await field.read(size):
        yield chunk


def _temp_audio(suffix: str) -> Path:
    """An empty temp file with ``suffix`` (which tells the decoder the format), unique to this request."""
    handle, name = tempfile.mkstemp(suffix=suffix, prefix="audioclf-serve-")
    os.close(handle)
    return Path(name)


def _client_reason(exc: AudioDecodeError, path: Path, shown: str) -> str:
    """The decoder's reason as the client may read it: libsndfile names the file it opened, which here is the
    server's temp file; the client sees the name it sent (or "upload")."""
    return exc.reason.replace(str(path), shown)


def _checked(path: Path, limits: ServeLimits, shown: str) -> None:
    """The checks before decoding: a readable header within the length limit, a whole file."""
    try:
        info = check_header(path, limits.max_seconds)
    except AudioDecodeError as exc:
        status = 413 if "data.max_seconds" in exc.reason else 422
        reason = _client_reason(exc, path, shown).replace("data.max_seconds", "the server's --max-seconds")
        raise HTTPProblem(status, reason) from None
    if info.n_samples * info.channels > limits.max_decoded:
        raise HTTPProblem(413, f"the header declares {info.n_samples} frames x {info.channels} channels at "
                               f"{info.sample_rate} Hz; the server decodes up to {limits.max_decoded} samples "
                               "(--max-seconds of 48 kHz stereo)")
    cut = truncation(path, info)
    if cut:
        raise HTTPProblem(422, cut)


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a Host header names this server: localhost, an IP address (a literal address cannot be rebound
    by DNS) or a name the operator allowed. A page on evil.example whose name is re-pointed at 127.0.0.1 sends
    ``Host: evil.example`` and is refused."""
    if host.startswith("["):  # [::1]:8000
        name = host[1:].split("]", 1)[0]
    else:  # name:port; a bare IPv6 address has several colons and no port
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.lower()
    if name in ("localhost", *(a.lower() for a in allowed)):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


async def _send_problem(receive, send, status: int, message: str, limits: ServeLimits, drain: bool) -> None:
    """A one-line JSON error sent from the middleware before the body is used, closing the connection."""
    log.warning("refused: %d %s", status, message)
    if drain:
        await _drain(receive, min(4 * limits.max_bytes, 64 * 2**20))
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive, limit: int, seconds: float = 2.0) -> None:
    """Read and drop what the client still sends of a refused body, up to ``limit`` bytes and ``seconds``: a
    connection closed with unread data is reset, and the client would see the reset instead of the answer."""
    deadline, seen = time.monotonic() + seconds, 0
    while seen <= limit:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body"):
            return
        seen += len(message.get("body", b""))


def _foreign(origin: str | None, host: str) -> bool:
    """Whether a request's Origin is a page of another site than this server. Host and port compared, not the
    scheme: behind a TLS proxy the page is https and this server http. No Origin: not a browser's page."""
    return origin is not None and urlparse(origin).netloc.lower() != host.lower()


async def _guard_websocket(app, limits: ServeLimits, scope, receive, send) -> None:
    """The Host and Origin checks for a WebSocket upgrade. Browsers apply no CORS to WebSockets: any page may
    open one to localhost, so one from a page of another origin is refused here, before the upgrade (the
    client sees 403)."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    host, origin = headers.get("host", ""), headers.get("origin")
    problem = None
    if not _host_allowed(host, limits.allowed_hosts):
        problem = f"Host {host[:100]!r} is not this server's (--allowed-host)"
    elif _foreign(origin, host):
        problem = f"a WebSocket from another origin ({origin[:100]!r}) is refused"
    if problem is None:
        return await app(scope, receive, send)
    log.warning("refused WebSocket %s: %s", scope.get("path", ""), problem)
    await send({"type": "websocket.close", "code": 1008, "reason": problem[:123]})


class _Guard:
    """Pure ASGI middleware in front of every request: the Host and Origin checks, and the body counted as it is
    received (whatever its framing: Content-Length, chunked, multipart), so no parser ever holds or spools more
    than ``max_bytes``. A body over the limit or too slow raises :class:`HTTPProblem` (413, 408) from
    ``receive`` inside the endpoint, which answers it as any other refusal."""

    def __init__(self, app, limits: ServeLimits):
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            return await _guard_websocket(self.app, self.limits, scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limits = self.limits
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        origin = headers.get("origin")
        declared = headers.get("content-length", "")
        problem = None
        if not _host_allowed(host, limits.allowed_hosts):
            problem = 400, f"Host {host[:100]!r} is not this server's (--allowed-host)"
        # A browser sends Origin with a cross-site form POST; a page of another site may not use this server.
        elif scope["method"] == "POST" and _foreign(origin, host):
            problem = 403, f"a POST from another origin ({origin[:100]!r}) is refused"
        elif declared.isdigit() and int(declared) > limits.max_bytes:
            problem = 413, f"{int(declared)} bytes; the server takes up to {limits.max_bytes} (--max-mb)"
        if problem:
            # A client waiting for "100 Continue" (curl, for bodies over 1 MB) has sent nothing to drain, and
            # reading would tell the server to send that interim answer: the client would start sending.
            expecting = headers.get("expect", "").lower() == "100-continue"
            return await _send_problem(receive, send, *problem, limits, drain=not expecting)
        deadline, seen, whole = None, 0, False

        async def counted():
            nonlocal deadline, seen, whole
            if whole:  # after the body only the disconnect is left to wait for, untimed (streamed answers)
                return await receive()
            deadline = deadline or time.monotonic() + limits.read_timeout
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise HTTPProblem(408, f"the body did not arrive within {limits.read_timeout:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limits.max_bytes:
                    if message.get("more_body"):
                        await _drain(receive, min(4 * limits.max_bytes, 64 * 2**20))
                    raise HTTPProblem(413, f"the body is over {limits.max_bytes} bytes (--max-mb)")
                whole = not message.get("more_body")
            return message

        await self.app(scope, counted, send)


def create_app(predictor, info: dict[str, Any], limits: ServeLimits | None = None):
    """The FastAPI application serving ``predictor`` (a run's :class:`Predictor` or an ``OnnxPredictor``)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    limits = limits or ServeLimits()
    predictor.max_seconds = limits.max_seconds
    batcher = WindowBatcher(predictor.window_probabilities, limits.batch_windows)
    docs = {} if limits.docs else {"docs_url": None, "openapi_url": None}  # off unless asked: less to probe
    app = FastAPI(title="audioclf", summary="audio classification", redoc_url=None, **docs)
    app.add_middleware(_Guard, limits=limits)

    @app.exception_handler(HTTPProblem)
    async def _problem(request, exc: HTTPProblem):
        log.warning("refused %s %s: %d %s", request.method, request.url.path, exc.status, exc)  # one line
        # 408/413 come before the body is all read: close rather than read the rest to keep the connection
        close = {"connection": "close"} if exc.status in (408, 413) else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=close)

    @app.exception_handler(HTTPException)  # 404, 405: the documented {"error": ...}, not FastAPI's {"detail": ...}
    async def _http(request, exc: HTTPException):
        return await _problem(request, HTTPProblem(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)  # e.g. ?top_k=many
    async def _invalid(request, exc: RequestValidationError):
        where = ", ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors()[:3])
        return await _problem(request, HTTPProblem(422, " ".join(where.split())[:300]))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log.exception("request failed")
        text = " ".join(str(exc).split())[:300]
        return JSONResponse({"error": f"unexpected {type(exc).__name__}: {text}"}, status_code=500)

    async def upload(request: Request) -> tuple[Path, str]:
        """The request's audio in a temp file (the caller removes it) and a name for it. The body's size and
        pace are bounded by :class:`_Guard` as it is read; it goes to disk as it arrives (:func:`_spool`)."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        query = request.query_params
        filename = query.get("name")  # a raw body's name, when the client gives one (?name=clip.wav)
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_files=1)
            field = form.get("file")
            if field is None or isinstance(field, str):
                raise HTTPProblem(400, "a form upload needs its audio in a field named 'file'")
            filename = field.filename
            chunks = _form_chunks(field)
        elif content_type.startswith("audio/") or content_type in ("application/octet-stream", "") or "pcm" in query:
            chunks = request.stream()
        else:
            raise HTTPProblem(415, f"content type {content_type!r}: send audio (audio/*, application/octet-stream, "
                                   "or a form with a 'file' field)")
        spooled, head = await _spool(chunks)
        path = None
        try:
            if filename is not None and not _NAME.match(filename):
                raise HTTPProblem(400, "the file name must be 1-255 characters without control characters or slashes")
            if not head:
                raise HTTPProblem(400, "empty upload: no audio in the request")
            path = _temp_audio(".wav" if "pcm" in query else _suffix(content_type, head, filename))
            if "pcm" in query:
                try:
                    rate, channels = int(query.get("rate", "16000")), int(query.get("channels", "1"))
                except ValueError:
                    raise HTTPProblem(400, "rate and channels must be whole numbers") from None
                await run_in_threadpool(_pcm_to_wav, spooled, query["pcm"], rate, channels, path)
            else:
                os.replace(spooled, path)
            _checked(path, limits, filename or "upload")
        except BaseException:
            if path is not None:
                path.unlink(missing_ok=True)
            raise
        finally:
            spooled.unlink(missing_ok=True)
        return path, filename or "upload"

    async def run(fn, path: Path, shown: str):
        """``fn(path, batch, score)`` in a worker thread, stopped at its next batch of windows when the request
        times out: the 503 is sent when the work has ended, not while it goes on unseen."""
        stop = threading.Event()

        def score(windows):
            if stop.is_set():
                raise _Stopped
            return batcher(windows)

        # Starlette's thread pool (40 threads) rather than asyncio's default (cores + 4): requests waiting for
        # the batcher each hold a thread, and their windows share forward passes only if enough can wait.
        work = asyncio.ensure_future(run_in_threadpool(fn, path, limits.batch_windows, score))
        try:
            return await asyncio.wait_for(asyncio.shield(work), timeout=limits.timeout)
        except asyncio.TimeoutError:
            stop.set()
            try:
                await work  # ends at its next batch
            except Exception:  # _Stopped, or whatever it met first: the answer is the 503 either way
                pass
            raise HTTPProblem(503, f"the request took over {limits.timeout:g} s (--timeout)") from None
        except AudioDecodeError as exc:
            raise HTTPProblem(422, _client_reason(exc, path, shown)) from None
        except NonFiniteOutputs as exc:  # the model overflowed on this recording: its answer, not the server's
            raise HTTPProblem(422, str(exc)) from None
        finally:
            stop.set()  # also when the wait itself is cancelled (the client went away): no more batches

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/model")
    async def model():
        return info

    @app.post("/predict")
    async def predict(request: Request, top_k: int = 3, aggregate: str = "mean", min_confidence: float | None = None):
        if aggregate not in ("mean", "max"):
            raise HTTPProblem(400, f"aggregate={aggregate!r}: expected mean or max")
        try:
            # a multi-label model has no use for it: a 400, not a setting silently ignored
            chosen = check_min_confidence(min_confidence, predictor.task)
            decisions = replace(predictor.decisions, min_confidence=chosen)
        except ConfigError as exc:
            raise HTTPProblem(400, str(exc)) from None
        path, name = await upload(request)
        try:
            windows = await run(predictor.file_window_probabilities, path, name)
        finally:
            path.unlink(missing_ok=True)
        probs = predictor.recording_probabilities(windows, aggregate)
        labels, abstained = decisions.decide(predictor.task, predictor.classes, probs)
        return {"file": name, "windows": len(windows), "labels": list(labels), "abstained": abstained,
                "top_k": [{"label": label, "probability": p} for label, p in predictor.top_k(probs, max(1, top_k))],
                "probabilities": {c: float(p) for c, p in zip(predictor.classes, probs)}}

    @app.post("/timeline")
    async def timeline(request: Request):
        path, name = await upload(request)
        try:
            result = await run(predictor.timeline, path, name)
        finally:
            path.unlink(missing_ok=True)
        return {"file": name, **result.to_dict()}

    @app.post("/events")
    async def events(request: Request):
        path, name = await upload(request)
        try:
            found = await run(lambda p, batch, score: predictor.events(p, name, None, batch, score), path, name)
        finally:
            path.unlink(missing_ok=True)
        return {"file": name, "events": [event.to_dict() for event in found]}

    add_live_route(app, predictor, limits, batcher)

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def add_live_route(app, predictor, limits: ServeLimits, batcher) -> None:
    """``/live``: the live microphone stream (:mod:`audioclf.deploy.serve_live`), its windows scored by the same
    batcher as every request's, in Starlette's thread pool."""
    from fastapi import WebSocket
    from starlette.concurrency import run_in_threadpool
    from starlette.websockets import WebSocketDisconnect

    from .serve_live import LiveSessions, live_session

    sessions = LiveSessions(limits.live_sessions)

    @app.websocket("/live")
    async def live(websocket: WebSocket):
        try:
            await live_session(websocket, predictor, limits, sessions, batcher, run_in_threadpool)
        except WebSocketDisconnect:  # the client left while the server was answering: nothing to tell it
            pass


def bind_warning(host: str) -> str | None:
    """What to say when ``host`` is not a loopback address: the server has no authentication and no TLS."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        loopback = False
    if loopback:
        return None
    return (f"serving on {host}: reachable from other machines, without authentication or TLS; anyone who can "
            "reach it can use the model (bind to 127.0.0.1 behind a proxy to expose it)")


def serve(source: str | Path, host: str = "127.0.0.1", port: int = 8000, limits: ServeLimits | None = None,
          device: str = "auto") -> None:
    """Serve the run directory or ``.onnx`` file ``source`` until interrupted."""
    from .onnx_predictor import load_predictor

    try:
        import uvicorn
    except ImportError:
        raise ConfigError("audioclf serve needs FastAPI and uvicorn: pip install 'audioclf[serve]'") from None
    predictor = load_predictor(source, device=device)
    app = create_app(predictor, model_info(source, predictor), limits)
    uvicorn.run(app, host=host, port=port, log_level="warning", ws="wsproto")  # wsproto: the serve extra's
