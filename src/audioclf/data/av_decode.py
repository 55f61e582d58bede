"""Decoding of the containers libsndfile cannot read (.m4a, .mp4, .aac: AAC or ALAC audio) with PyAV's
bundled FFmpeg, so no system ffmpeg is needed. PyAV is optional (the ``formats`` extra): without it such a
file is an :class:`~audioclf.errors.AudioDecodeError` saying how to install it.

Only the raw decoding lives here; :mod:`.audio` applies the same bounds (rate, channels, length, sample
values), mix-down and resampling as for every other file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import AudioDecodeError

# Extension -> FFmpeg demuxer. The demuxer is named, never probed from the content: a probed ".m4a" holding
# an HLS playlist or an ffconcat script would have FFmpeg open other files or network addresses.
AV_DEMUXERS = {".m4a": "mov", ".mp4": "mov", ".aac": "aac"}
AV_EXTENSIONS = tuple(AV_DEMUXERS)
INSTALL_HINT = "pip install 'audioclf[formats]'"

# Integer sample formats -> (offset, scale) to float in [-1, 1); float formats pass through.
_INTEGER_FORMATS = {"u8": (128.0, 128.0), "s16": (0.0, 2.0**15), "s32": (0.0, 2.0**31), "s64": (0.0, 2.0**63)}


def decoded_by_av(path: str | os.PathLike) -> bool:
    """Whether ``path`` is decoded here (by its extension) rather than by libsndfile."""
    return Path(path).suffix.lower() in AV_DEMUXERS


def _import_av(path: str | os.PathLike):
    try:
        import av
    except ImportError:
        raise AudioDecodeError(path, f"decoding {Path(path).suffix.lower()} files needs PyAV: {INSTALL_HINT}") from None
    return av


def _frame_samples(frame) -> np.ndarray:
    """One decoded frame as channels-last float32 ``(n, channels)``, whatever FFmpeg's sample format."""
    array = frame.to_ndarray()
    channels = len(frame.layout.channels)
    # Planar formats come as (channels, n); packed ones as (1, n * channels), interleaved.
    wave = array.T if frame.format.is_planar else array.reshape(-1, channels)
    name = frame.format.name.rstrip("p")
    if name in _INTEGER_FORMATS:
        offset, scale = _INTEGER_FORMATS[name]
        return ((wave.astype(np.float64) - offset) / scale).astype(np.float32)
    return np.ascontiguousarray(wave, dtype=np.float32)


def av_blocks(path: str | os.PathLike, block_frames: int) -> Iterator[tuple[np.ndarray, int]]:
    """``(block, sample_rate)``: the first audio stream as channels-last float32 blocks of about
    ``block_frames`` frames, exactly what the decoder returned (the container's duration is never used).

    Raises :class:`AudioDecodeError` naming the file for a missing PyAV, an unreadable or non-audio file, or a
    stream whose sample rate or channel count changes part-way (it could not be mixed or resampled as one).
    """
    av = _import_av(path)
    try:
        container = av.open(str(path), format=AV_DEMUXERS[Path(path).suffix.lower()])
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise AudioDecodeError(path, _reason(exc)) from None
    with container:
        if not container.streams.audio:
            raise AudioDecodeError(path, "no audio stream in the file")
        layout, pending, n_pending = None, [], 0
        try:
            for frame in container.decode(container.streams.audio[0]):
                block = _frame_samples(frame)
                if layout is None:
                    layout = (frame.sample_rate, block.shape[1])
                elif (frame.sample_rate, block.shape[1]) != layout:
                    raise AudioDecodeError(path, f"the stream changes from {layout[0]} Hz, {layout[1]} channel(s) to "
                                                 f"{frame.sample_rate} Hz, {block.shape[1]} part-way")
                pending.append(block)
                n_pending += len(block)
                if n_pending >= block_frames:
                    yield np.concatenate(pending), layout[0]
                    pending, n_pending = [], 0
        except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
            raise AudioDecodeError(path, _reason(exc)) from None
        if pending:
            yield np.concatenate(pending), layout[0]


def _reason(exc: BaseException) -> str:
    # FFmpeg's errors carry the file name in str(exc): the message alone, as the error names the file already.
    text = " ".join(str(getattr(exc, "strerror", None) or exc).split()) or type(exc).__name__
    return f"cannot decode audio ({text})"
