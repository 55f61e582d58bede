"""The server's live microphone mode: ``GET /live`` upgraded to a WebSocket (the page's "Live" button).

The client names its stream in the query, ``/live?rate=48000&format=f32le&channels=1&hop=0.25``, then sends
binary messages of PCM frames (any number of frames; a frame may be split across messages) and, to end, the text
message ``end``. The server answers JSON text messages: first ``{"classes", "sample_rate", "clip_seconds",
"hop_seconds"}``, then one per completed window, as soon as its last sample has arrived (:class:`LiveStream`)::

    {"start": 1.5, "end": 2.5, "labels": ["dog"], "top": [["dog", 0.91], ["rain", 0.05], ...],
     "probabilities": [0.91, 0.05, ...]}        # in the order of "classes"

and after ``end`` the last window and a normal close (1000). Every refusal is a ``{"error": "<one line>"}``
message and a close whose reason is that line (cut to the protocol's 123 bytes): a bad query (1008), a text
message other than ``end`` (1003), frames that are NaN, out of range or cut mid-frame at the end (1007), a
message over ``live_message_bytes`` (1009), a stream longer than ``live_seconds`` or silent for ``read_timeout``
(1008), more than ``live_sessions`` streams at once (1013, try again later). Only that socket closes: the
server goes on. Host and Origin are checked before the upgrade (see ``serve._Guard``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass

from ..data.pcm import PCM_FORMATS, PcmDecoder
from ..errors import AudioDecodeError, ConfigError, NonFiniteOutputs
from .live import LiveStream
from .predictor import top_k

__all__ = ["LiveRefused", "LiveSessions", "live_query", "live_session"]

log = logging.getLogger(__name__)
_MAX_REASON = 123  # bytes a WebSocket close frame's reason may hold (RFC 6455, 5.5)
TOP = 3  # classes in each window's "top"


class LiveRefused(Exception):
    """A live stream refused: the WebSocket close ``code`` and a one-line reason."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class _Gone(Exception):
    """The client closed its socket: nobody is left to answer."""


@dataclass(frozen=True)
class LiveQuery:
    form: str
    rate: int
    channels: int
    hop: float | None  # seconds; None: half a clip (LiveStream's default)


def live_query(params, clip_seconds: float) -> LiveQuery:
    """The stream the client announces in the query string, checked: one-line :class:`LiveRefused` (1008).
    The hop is at least a tenth of a clip: a hop of one sample would score a window per sample."""
    unknown = sorted(set(params) - {"rate", "format", "channels", "hop"})
    if unknown:
        raise LiveRefused(1008, f"unknown query key {unknown[0]!r}: expected rate, format, channels, hop")
    form = params.get("format", "f32le")
    if form not in PCM_FORMATS:
        raise LiveRefused(1008, f"format={form[:20]!r}: expected one of {', '.join(PCM_FORMATS)}")
    try:
        rate, channels = int(params.get("rate", "")), int(params.get("channels", "1"))
    except ValueError:
        raise LiveRefused(1008, "rate and channels must be whole numbers (e.g. rate=48000&channels=1)") from None
    hop = None
    if params.get("hop") is not None:
        try:
            hop = float(params["hop"])
        except ValueError:
            hop = math.nan
        if not clip_seconds / 10 <= hop <= clip_seconds:  # NaN fails too
            raise LiveRefused(1008, f"hop={params['hop'][:20]!r}: expected {clip_seconds / 10:g}-{clip_seconds:g} "
                                    "seconds (a tenth of a clip to a clip)")
    return LiveQuery(form, rate, channels, hop)


class LiveSessions:
    """How many live streams are open, against a cap; used only on the event loop (no lock needed)."""

    def __init__(self, limit: int):
        self.limit, self.open = limit, 0

    def enter(self) -> None:
        if self.open >= self.limit:
            raise LiveRefused(1013, f"{self.open} live streams are open, the server's limit (--live-sessions): "
                                    "try again later")
        self.open += 1

    def leave(self) -> None:
        self.open -= 1


def close_reason(message: str) -> str:
    """``message`` cut to fit a close frame (123 bytes of UTF-8), on a character boundary."""
    raw = message.encode()
    return message if len(raw) <= _MAX_REASON else raw[: _MAX_REASON - 3].decode(errors="ignore") + "..."


def window_message(window, classes) -> dict:
    """One window's JSON message (see the module's docstring)."""
    return {"start": round(window.start, 4), "end": round(window.end, 4), "labels": list(window.labels),
            "top": [[label, round(p, 4)] for label, p in top_k(classes, window.probabilities, TOP)],
            "probabilities": [round(float(p), 4) for p in window.probabilities]}


class _Session:
    """One stream's decoder, scorer and length count; its work runs in worker threads (``run_blocking``)."""

    def __init__(self, predictor, query: LiveQuery, limits, score):
        try:
            self.decoder = PcmDecoder(query.form, query.rate, query.channels, source="live stream")
            self.stream = LiveStream(predictor, query.rate, query.hop, score=score)
        except (AudioDecodeError, ConfigError) as exc:
            raise LiveRefused(1008, str(exc)) from None
        self.max_frames = int(limits.live_seconds * query.rate)
        self.frames = 0

    def push(self, data: bytes):
        samples = self.decoder.decode(data)
        self.frames += len(samples)
        if self.frames > self.max_frames:
            raise LiveRefused(1008, f"the stream passed {self.max_frames / self.decoder.rate:g} s, the server's "
                                    "limit (--live-seconds)")
        return self.stream.push(samples)

    def end(self):
        self.decoder.finish()
        return self.stream.close()


async def live_session(websocket, predictor, limits, sessions: LiveSessions, score, run_blocking) -> None:
    """Serve one WebSocket until its stream ends or is refused. ``score`` scores windows (the server's batcher);
    ``run_blocking(fn, *args)`` runs CPU work off the event loop (Starlette's thread pool). The stream's place
    is given back before the close is sent: a client that reconnects at once finds it free."""
    await websocket.accept()
    refusal = None
    try:
        sessions.enter()
        try:
            await _stream(websocket, predictor, limits, score, run_blocking)
        finally:
            sessions.leave()
    except LiveRefused as exc:
        refusal = exc
    except _Gone:
        return
    if refusal is None:
        await websocket.close(1000)
        return
    log.warning("live stream refused: %d %s", refusal.code, refusal)  # one line
    await websocket.send_text(json.dumps({"error": str(refusal)}))
    await websocket.close(refusal.code, close_reason(str(refusal)))


async def _stream(websocket, predictor, limits, score, run_blocking) -> None:
    """Read the query, answer the header, then each message's windows, until ``end`` (or the client leaves)."""
    clip = predictor.clip_samples / predictor.sample_rate
    session = _Session(predictor, live_query(websocket.query_params, clip), limits, score)
    await websocket.send_text(json.dumps({
        "classes": list(predictor.classes), "sample_rate": predictor.sample_rate, "clip_seconds": clip,
        "hop_seconds": session.stream.hop / predictor.sample_rate}))
    while True:
        try:
            message = await asyncio.wait_for(websocket.receive(), limits.read_timeout)
        except asyncio.TimeoutError:
            raise LiveRefused(1008, f"no audio for {limits.read_timeout:g} s (--read-timeout)") from None
        if message["type"] == "websocket.disconnect":  # the client went away: nobody to answer
            raise _Gone
        data, text = message.get("bytes"), message.get("text")
        if data is None and text == "end":
            await _send_windows(websocket, await _scored(run_blocking, session.end), predictor.classes)
            return
        if data is None:
            raise LiveRefused(1003, "text message: send PCM frames as binary messages, and 'end' to finish")
        if len(data) > limits.live_message_bytes:
            raise LiveRefused(1009, f"a message of {len(data)} bytes; the server takes up to "
                                    f"{limits.live_message_bytes} a message")
        await _send_windows(websocket, await _scored(run_blocking, session.push, data), predictor.classes)


async def _scored(run_blocking, fn, *args):
    """``fn(*args)`` in a worker thread; the stream's own errors become refusals of this socket."""
    try:
        return await run_blocking(fn, *args)
    except AudioDecodeError as exc:  # NaN, out of range, truncated at the end
        raise LiveRefused(1007, str(exc)) from None
    except NonFiniteOutputs as exc:  # the model overflowed on this audio
        raise LiveRefused(1011, str(exc)) from None


async def _send_windows(websocket, windows, classes) -> None:
    for window in windows:
        await websocket.send_text(json.dumps(window_message(window, classes)))
