"""Audio that arrives as a byte stream (a pipe from ``arecord``, a WebSocket): raw PCM frames, or a WAV stream.

A live stream has no length and cannot be seeked, so no buffer is sized from a header: a WAV written to a pipe
(``arecord -t wav``, ``ffmpeg -f wav -``) declares a data size it cannot know (``0x7FFFFFFF``, ``0xFFFFFFFF`` or
0), and only the bytes that arrive are audio. A smaller data size is a finished file's (``cat rec.wav |``): the
samples stop there, so the chunks a file may carry after them (LIST tags, cue points) are not decoded as audio.
Bytes come in any sizes; :class:`PcmDecoder` keeps a partial frame for the next chunk and reports one left at the
end as a truncated stream. Every decoded block is checked like a
decoded file (finite, within +48 dBFS), and every error is one line naming the stream.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

from ..errors import AudioDecodeError
from .audio import MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, check_decoded

# Sample formats by their arecord/ffmpeg names: (numpy dtype, full scale).
PCM_FORMATS = {
    "s16le": ("<i2", 32768.0),
    "s24le": ("<i4", 2.0**31),  # 3 bytes a sample: widened to 4 (see _widen_s24)
    "s32le": ("<i4", 2.0**31),
    "f32le": ("<f4", 1.0),
}
_SAMPLE_BYTES = {"s16le": 2, "s24le": 3, "s32le": 4, "f32le": 4}
# A WAV stream's chunks before 'data' (fmt, LIST tags, fact ...) are small; a larger one is not a WAV header.
_MAX_HEADER_CHUNK = 1 << 20
# Data sizes from here up are the placeholders of writers that cannot seek back (arecord 0x7FFFFFFF, ffmpeg
# 0xFFFFFFFF), as is 0; a real file this large (2-4 GiB) is only read to the stream's end instead.
_UNKNOWN_DATA_SIZE = 0x7FFF0000


def check_stream_format(source: str, form: str, rate: int, channels: int) -> None:
    """One-line errors for a stream format outside what a recording can be (the same bounds as a file's header)."""
    if form not in PCM_FORMATS:
        raise AudioDecodeError(source, f"sample format {form!r}: expected one of {', '.join(PCM_FORMATS)}")
    if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(source, f"sample rate {rate!r}: expected {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
        raise AudioDecodeError(source, f"{channels!r} channels: expected 1-{MAX_CHANNELS}")


class PcmDecoder:
    """Bytes of interleaved PCM frames, in chunks of any size -> float32 ``(n, channels)`` blocks in [-1, 1]."""

    def __init__(self, form: str, rate: int, channels: int, source: str = "stream", size: int | None = None):
        check_stream_format(source, form, rate, channels)
        self.form, self.rate, self.channels, self.source = form, rate, channels, source
        self.frame_bytes = _SAMPLE_BYTES[form] * channels
        self._pending = b""
        self._left = size  # bytes of samples still to come, when the stream said (a WAV file's data size)

    def decode(self, data: bytes) -> np.ndarray:
        """The whole frames in ``self``'s pending bytes + ``data``; a partial frame waits for the next chunk.
        Bytes past the stream's stated ``size`` are not samples and are dropped."""
        if self._left is not None:
            data, self._left = data[: self._left], max(0, self._left - len(data))
        data = self._pending + bytes(data)
        whole = len(data) - len(data) % self.frame_bytes
        self._pending = data[whole:]
        return self._samples(data[:whole])

    def finish(self) -> None:
        """The stream ended: a partial frame left over means it was cut mid-frame."""
        if self._pending:
            raise AudioDecodeError(self.source, f"truncated: the stream ended {len(self._pending)} bytes into a "
                                                f"{self.frame_bytes}-byte {self.channels}-channel {self.form} frame")

    def _samples(self, data: bytes) -> np.ndarray:
        dtype, scale = PCM_FORMATS[self.form]
        raw = _widen_s24(data) if self.form == "s24le" else np.frombuffer(data, dtype=dtype)
        samples = (raw.astype(np.float32) / np.float32(scale)).reshape(-1, self.channels)
        check_decoded(self.source, samples)
        return samples


def _widen_s24(data: bytes) -> np.ndarray:
    """Little-endian 24-bit samples as int32 (the value shifted up 8 bits, so the full scale is 2**31)."""
    bytes3 = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3)
    wide = np.zeros((len(bytes3), 4), dtype=np.uint8)
    wide[:, 1:] = bytes3
    return wide.view("<i4").ravel()


def read_wav_stream_header(stream: BinaryIO, source: str = "stream") -> PcmDecoder:
    """Read a WAV header from the front of a non-seekable stream, up to the start of its samples, and return the
    decoder for the frames that follow.
    PCM 16/24/32-bit integer and 32-bit float, plain or WAVE_FORMAT_EXTENSIBLE; anything else is one line.
    The RIFF size is ignored, and the data size too when it is a placeholder (see above)."""
    head = _read_exactly(stream, 12, source, "a WAV header")
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise AudioDecodeError(source, "not a WAV stream (no RIFF/WAVE header); for raw samples give their format")
    fmt = None
    while True:
        chunk_id, size = struct.unpack("<4sI", _read_exactly(stream, 8, source, "a WAV chunk header"))
        if chunk_id == b"data":
            if fmt is None:
                raise AudioDecodeError(source, "WAV stream: its samples begin before its 'fmt ' chunk")
            return PcmDecoder(*fmt, source=source, size=size if 0 < size < _UNKNOWN_DATA_SIZE else None)
        if size > _MAX_HEADER_CHUNK:
            raise AudioDecodeError(source, f"WAV stream: a {chunk_id!r} chunk of {size} bytes before the samples")
        body = _read_exactly(stream, size + size % 2, source, f"the WAV {chunk_id!r} chunk")  # chunks are padded
        if chunk_id == b"fmt ":
            fmt = _wav_format(body, source)


def _wav_format(body: bytes, source: str) -> tuple[str, int, int]:
    if len(body) < 16:
        raise AudioDecodeError(source, f"WAV stream: a 'fmt ' chunk of {len(body)} bytes (at least 16 expected)")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID
        tag = struct.unpack("<H", body[24:26])[0]
    form = {(1, 16): "s16le", (1, 24): "s24le", (1, 32): "s32le", (3, 32): "f32le"}.get((tag, bits))
    if form is None:
        raise AudioDecodeError(source, f"WAV stream: format tag {tag} with {bits}-bit samples; expected PCM "
                                       "16/24/32-bit integer or 32-bit float")
    return form, rate, channels


def open_pcm_stream(read: Callable[[int], bytes], form: str | None = None, rate: int | None = None,
                    channels: int | None = None, source: str = "stream") -> tuple[PcmDecoder, bytes]:
    """The decoder for a byte stream that ``read(n)`` returns piece by piece (at most ``n`` bytes, ``b""`` at its
    end, e.g. ``os.read`` on a pipe), and the sample bytes already read past its header.

    ``form``: ``"wav"``, a raw format of :data:`PCM_FORMATS` (with ``rate``, and ``channels`` else mono), or None
    to sniff: a stream that opens with ``RIFF`` is a WAV stream; anything else is refused, since raw samples carry
    no sign of their format and a wrong guess would be scored as noise, not reported. A WAV stream states its own
    rate and channels; ``rate`` / ``channels`` given with one must agree with it."""
    head = b""
    while len(head) < 4 and (piece := read(4 - len(head))):
        head += piece
    if not head:
        raise AudioDecodeError(source, "empty: the stream ended before any audio arrived")
    if form is None or form == "wav":
        decoder = read_wav_stream_header(_Replayed(head, read), source)
        for what, given, stated in (("Hz", rate, decoder.rate), ("channels", channels, decoder.channels)):
            if given is not None and given != stated:
                raise AudioDecodeError(source, f"the WAV stream states {stated} {what}, not the {given} {what} "
                                               "given (a WAV stream needs neither)")
        return decoder, b""
    if form not in PCM_FORMATS:
        raise AudioDecodeError(source, f"sample format {form!r}: expected wav, {', '.join(PCM_FORMATS)}")
    if rate is None:
        raise AudioDecodeError(source, f"raw {form} samples: their sample rate must be given (it is in no header)")
    return PcmDecoder(form, rate, 1 if channels is None else channels, source), head


class _Replayed:
    """``read(n)`` as a file's ``.read``, after handing back the bytes already sniffed (``head``)."""

    def __init__(self, head: bytes, read: Callable[[int], bytes]):
        self._head, self._read = head, read

    def read(self, n: int) -> bytes:
        if self._head:
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._read(n)


def _read_exactly(stream: BinaryIO, n: int, source: str, what: str) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise AudioDecodeError(source, f"truncated: the stream ended inside {what}")
        data += chunk
    return data
