"""Waveform I/O and cheap waveform operations (numpy, float32).

Decoding goes through soundfile (libsndfile: wav, flac, ogg, opus, mp3, aiff ...), and through PyAV for the
containers libsndfile cannot read (.m4a, .mp4, .aac: :mod:`.av_decode`); resampling through soxr.
Multi-channel arrays are channels-last, ``(n_samples, n_channels)``, as soundfile returns them.
Every way a file can be unusable surfaces as :class:`~audioclf.errors.AudioDecodeError` naming the
path, so a caller can report-and-skip one bad file in a large dataset.
"""

from __future__ import annotations

import io
import logging
import math
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from ..errors import AudioDecodeError
from .av_decode import AV_EXTENSIONS, av_blocks, decoded_by_av

__all__ = [
    "AUDIO_EXTENSIONS",
    "MAX_SECONDS",
    "Windows",
    "AudioInfo",
    "SilenceParams",
    "audio_excerpt",
    "audio_info",
    "check_decoded",
    "check_header",
    "fix_length",
    "kept_parts",
    "load_audio",
    "recording_positions",
    "resample",
    "silence_params",
    "silence_params_for_duration",
    "stream_audio",
    "stream_trimmed_audio",
    "stream_windows",
    "split_on_silence",
    "to_mono",
    "truncation",
    "trim_silence",
    "trim_silence_by_length",
    "wav_bytes",
    "write_audio",
]

PathLike = str | os.PathLike
log = logging.getLogger(__name__)

# soundfile reports failures through several exception types depending on where they happen
# (libsndfile itself, its Python wrapper's argument checks, the OS).
_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, EOFError)


# Checked from the header before a sample is decoded or resampled: a 40 KB WAV whose header claims 1 Hz
# would otherwise be resampled to hundreds of millions of samples (a decompression bomb), and a header can
# claim any length. 768 kHz is the highest rate audio interfaces record; below 1 kHz nothing is audio.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
MAX_CHANNELS = 64
# The longest file decoded at once (data.max_seconds): an hour of 48 kHz stereo is ~1.4 GB while decoding.
MAX_SECONDS = 3600.0

# What the folder importer lists and predict picks from folders: libsndfile's formats, then PyAV's containers.
SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au")
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS + AV_EXTENSIONS


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says, without decoding the samples."""

    sample_rate: int
    n_samples: int
    channels: int
    duration: float
    # How the samples are stored (e.g. "WAV", "PCM_16"): for checks on the file, not part of what it holds.
    format: str = field(default="", compare=False)
    subtype: str = field(default="", compare=False)


# --- decoding -----------------------------------------------------------------------------------
def _check_file(path: PathLike) -> Path:
    """Cheap checks that give clearer reasons than libsndfile's 'System error'."""
    p = Path(path)
    if not p.exists():
        raise AudioDecodeError(path, "file not found")
    if not p.is_file():
        raise AudioDecodeError(path, "not a regular file")
    if p.stat().st_size == 0:
        raise AudioDecodeError(path, "empty file (0 bytes)")
    return p


def _short_reason(exc: BaseException) -> str:
    """One line from a soundfile/OS exception (libsndfile messages can span lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"cannot decode audio ({text})"


def audio_info(path: PathLike, max_seconds: float | None = None) -> AudioInfo:
    """Sample rate, length, channels and duration from the header only (fast).

    A stream written without its length (a FLAC whose STREAMINFO total is 0: libsndfile then reports 2**63 - 1
    frames) is counted by decoding it once, block by block, stopping past ``max_seconds`` (default
    :data:`MAX_SECONDS`). Raises :class:`AudioDecodeError` for a missing, empty or unreadable file, or one with
    no samples.
    """
    _check_file(path)
    if decoded_by_av(path):
        return _counted_info(path, max_seconds)
    try:
        info = sf.info(str(path))
    except _DECODE_ERRORS as exc:
        raise AudioDecodeError(path, _short_reason(exc)) from exc
    if info.frames <= 0:
        raise AudioDecodeError(path, "no audio samples")
    _check_layout(path, info.samplerate, info.channels)
    frames = info.frames
    if frames >= _UNKNOWN_LENGTH:
        limit = int((MAX_SECONDS if max_seconds is None else float(max_seconds)) * info.samplerate)
        frames = _count_frames(path, limit)
    return AudioInfo(sample_rate=int(info.samplerate), n_samples=int(frames),
                     channels=int(info.channels), duration=frames / info.samplerate,
                     format=str(info.format), subtype=str(info.subtype))


def _check_layout(path: PathLike, sample_rate: int, channels: int) -> None:
    """The rate and channel bounds above, checked before the samples are decoded (or counted)."""
    if sample_rate <= 0 or channels <= 0:
        raise AudioDecodeError(path, f"invalid header (sample rate {sample_rate}, {channels} channels)")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(path, f"header sample rate {sample_rate} Hz is outside "
                                     f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz (damaged or crafted header)")
    if channels > MAX_CHANNELS:
        raise AudioDecodeError(path, f"{channels} channels in the header; at most {MAX_CHANNELS} are decoded")


def _counted_info(path: PathLike, max_seconds: float | None) -> AudioInfo:
    """:func:`audio_info` of a file decoded by PyAV. A container's duration can claim anything (room made for a
    claimed hour would be a memory bomb in a few bytes), so the frames the decoder returns are counted, up to
    just past ``max_seconds``; the rate and channels are those of the decoded frames (HE-AAC doubles both
    beyond what its header says)."""
    counted, rate, channels = 0, 0, 0
    limit = 0
    for block, rate in av_blocks(path, 1 << 16):
        if not counted:
            channels = block.shape[1]
            _check_layout(path, rate, channels)
            limit = int((MAX_SECONDS if max_seconds is None else float(max_seconds)) * rate)
        counted += len(block)
        if counted > limit:
            break
    if counted == 0:
        raise AudioDecodeError(path, "no audio samples")
    return AudioInfo(sample_rate=int(rate), n_samples=counted, channels=int(channels), duration=counted / rate,
                     format=Path(path).suffix.lstrip(".").upper())


class _ForwardReader(sf.SoundFile):
    """A SoundFile read front to back as if it were a pipe, so the decoder alone says where the audio ends.

    For a seekable file, soundfile clips every read to the header's frame count and seeks to ``tell() + n``
    after it. A header can be wrong both ways: MP3 lengths are estimates, and a FLAC stream written without
    its length reports 2**63 - 1 frames, where that seek fails at the real end ("psf_fseek() failed"). Read as
    a stream, each read returns what libsndfile decoded and nothing else (compared with a full ``sf.read`` in
    the tests)."""

    def seekable(self) -> bool:
        return False


_UNKNOWN_LENGTH = 2**63 - 1  # libsndfile's SF_COUNT_MAX: the header does not say how long the stream is


def _count_frames(path: PathLike, limit: int, block_frames: int = 1 << 16) -> int:
    """Frames in a file whose header gives no length, decoded and counted (at most ``limit + 1``)."""
    counted = 0
    for block in _raw_blocks(path, block_frames):
        counted += len(block)
        if counted > limit:
            break
    if counted == 0:
        raise AudioDecodeError(path, "no audio samples")
    return counted


def check_header(path: PathLike, max_seconds: float | None = None) -> AudioInfo:
    """The checks :func:`load_audio` makes before decoding (readable, within the rate, channel and length bounds),
    without decoding: raises :class:`AudioDecodeError` naming the file."""
    return _checked_info(path, max_seconds)[0]


def _checked_info(path: PathLike, max_seconds: float | None) -> tuple[AudioInfo, float, int]:
    """The header's facts, checked before a sample is decoded: ``(info, max_seconds, max_frames)``."""
    info = audio_info(path, max_seconds)
    _warn_if_truncated(path, info)
    max_seconds = MAX_SECONDS if max_seconds is None else float(max_seconds)
    max_frames = int(max_seconds * info.sample_rate)
    if info.n_samples > max_frames:
        raise AudioDecodeError(path, f"{info.duration:.0f} s long; files up to data.max_seconds={max_seconds:g} s "
                                     "are decoded (raise it, or split the recording)")
    return info, max_seconds, max_frames


# Float files can hold any value. Real audio sits within [-1, 1] with some headroom; a sample beyond +48 dBFS is
# a float file holding integer sample values, or garbage from a broken encoder, and would swamp every feature.
MAX_ABS_SAMPLE = 256.0


def check_decoded(path: PathLike, wave: np.ndarray) -> None:
    if not np.isfinite(wave).all():
        # Float WAVs can carry NaN/inf; they would poison every later feature and gradient.
        raise AudioDecodeError(path, "contains NaN or infinite samples")
    peak = float(np.abs(wave).max(initial=0.0))
    if peak > MAX_ABS_SAMPLE:
        raise AudioDecodeError(path, f"sample values up to {peak:.3g}, beyond +-{MAX_ABS_SAMPLE:g} (+48 dBFS): not "
                                     "audio scaled to [-1, 1] (a float file holding integer values, or a damaged one)")


def load_audio(path: PathLike, sample_rate: int | None = None, mono: bool = True,
               max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to float32 in [-1, 1], optionally mixed down and resampled.

    Returns ``(wave, sr)``: ``wave`` is 1-D when ``mono`` is true, else ``(n_samples, n_channels)``;
    ``sr`` is ``sample_rate`` when given, else the file's own rate.
    Raises :class:`AudioDecodeError` (never a raw soundfile error) for a missing, empty, corrupt or
    non-audio file, a file with zero samples, or one containing NaN/inf samples; and, before decoding, for a
    header outside the bounds above or a file longer than ``max_seconds`` (default :data:`MAX_SECONDS`).
    Decoding itself stops after that length, whatever the header claimed.
    """
    checked = _checked_info(path, max_seconds)
    info = checked[0]
    if mono:
        rate = info.sample_rate if sample_rate is None else int(sample_rate)
        return _collect(_stream(path, checked, rate, _BLOCK), round(info.n_samples * rate / info.sample_rate)), rate
    wave = _collect(_decoded_blocks(path, checked, _BLOCK), info.n_samples)
    if sample_rate is not None and sample_rate != info.sample_rate:
        return resample(wave, info.sample_rate, int(sample_rate)), int(sample_rate)
    return wave, info.sample_rate


def _collect(blocks: Iterator[np.ndarray], expected: int) -> np.ndarray:
    """A stream of blocks (1-D, or channels-last 2-D) gathered into one array: room for the length the header
    promised is made once, and only what the decoder returned is kept (a header can overstate the length, as
    libsndfile's estimate for MP3 does, or understate it). A long file never exists twice, nor at its own rate
    next to the resampled copy."""
    out, filled, beyond = None, 0, []
    for block in blocks:
        if out is None:
            out = np.empty((expected, *block.shape[1:]), dtype=np.float32)
        take = min(len(block), len(out) - filled)
        out[filled:filled + take] = block[:take]
        filled += take
        if take < len(block):
            beyond.append(block[take:])
    wave = out[:filled]
    return np.concatenate([wave, *beyond]) if beyond else wave


def stream_audio(path: PathLike, sample_rate: int | None = None, max_seconds: float | None = None,
                 block_frames: int = 1 << 16) -> Iterator[np.ndarray]:
    """:func:`load_audio` (mono) as a stream of float32 blocks, so a long recording costs a block, not its length.

    The same header checks run before the first block; a NaN/inf sample or more audio than the header
    declared raises :class:`AudioDecodeError` when its block is reached. Resampling uses soxr's streaming
    resampler, whose output is identical to :func:`resample` on the whole signal.
    """
    yield from _stream(path, _checked_info(path, max_seconds), sample_rate, block_frames)


def audio_excerpt(path: PathLike, seconds: float, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """The first ``seconds`` of a file, mono float32 at ``sample_rate``: :func:`stream_audio`'s checks, and
    decoding stops once the excerpt is full (a one-hour file costs a block, not an hour)."""
    wanted = max(1, int(round(seconds * sample_rate)))
    blocks, have = [], 0
    for block in stream_audio(path, sample_rate, max_seconds):
        blocks.append(block[:wanted - have])
        have += len(blocks[-1])
        if have >= wanted:
            break
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def _stream(path: PathLike, checked: tuple[AudioInfo, float, int], sample_rate: int | None,
            block_frames: int) -> Iterator[np.ndarray]:
    info = checked[0]
    target = info.sample_rate if sample_rate is None else int(sample_rate)
    stream = None if target == info.sample_rate else soxr.ResampleStream(info.sample_rate, target, 1,
                                                                         dtype="float32", quality="HQ")
    blocks = _decoded_blocks(path, checked, block_frames)
    block = next(blocks, None)
    while block is not None:
        following = next(blocks, None)  # read ahead: the resampler must be told which block is last
        mono = np.ascontiguousarray(to_mono(block), dtype=np.float32)
        out = mono if stream is None else stream.resample_chunk(mono, last=following is None)
        if len(out):
            yield out
        block = following


def _decoded_blocks(path: PathLike, checked: tuple[AudioInfo, float, int], block_frames: int) -> Iterator[np.ndarray]:
    """The file's samples as channels-last float32 blocks: exactly what the decoder returned, checked.

    The one place audio is decoded. The file is read as a stream (:class:`_ForwardReader`) until the decoder
    returns nothing, and only the frames it returned are kept: ``SoundFile.blocks`` (and any read sized from
    the header's frame count) hands back whole blocks of the header's length, whose tail past the real end is
    uninitialised memory when the header overstates the length. libsndfile estimates an MP3's length from its size and bit rate when no
    exact-length (Xing/LAME) frame says otherwise, and iTunes MP3s with ID3v2.2 tags overstate it by ~10 %.
    """
    info, max_seconds, max_frames = checked
    decoded = 0
    for block in _raw_blocks(path, block_frames):
        decoded += len(block)
        if decoded > max_frames:
            raise AudioDecodeError(path, f"longer than data.max_seconds={max_seconds:g} s although its "
                                         f"header says {info.duration:.0f} s")
        check_decoded(path, block)
        yield block
    if decoded == 0:
        raise AudioDecodeError(path, "no audio samples")


def _raw_blocks(path: PathLike, block_frames: int) -> Iterator[np.ndarray]:
    """Channels-last float32 blocks as the decoder returns them (PyAV's containers by :mod:`.av_decode`, the
    rest by libsndfile, read front to back), unchecked; decoder failures as :class:`AudioDecodeError`."""
    if decoded_by_av(path):
        for block, _ in av_blocks(path, block_frames):
            yield block
        return
    try:
        with _ForwardReader(str(path)) as handle:
            while True:
                block = handle.read(block_frames, dtype="float32", always_2d=True)
                if not len(block):
                    return
                yield block
    except _DECODE_ERRORS as exc:
        raise AudioDecodeError(path, _short_reason(exc)) from exc


def kept_parts(path: PathLike, sample_rate: int, mode: bool | str | None, max_seconds: float | None = None,
               block_frames: int = 1 << 16) -> list[tuple[int, int]] | None:
    """The (start, end) sample ranges of a file at ``sample_rate`` that ``data.trim_silence`` keeps (None: no
    trimming). Silence is judged against the loudest frame of the whole recording, so the file is streamed once
    to measure its frames' loudness (a few MB per hour)."""
    if not mode:
        return None
    frame_length, hop_length = SILENCE_FRAME, SILENCE_HOP  # as apply_trim analyses a whole clip
    sums = _SquareSums(_rms_step(frame_length, hop_length))
    for block in stream_audio(path, sample_rate, max_seconds, block_frames):
        sums.add(block)
    params = silence_params(mode, sums.n / sample_rate)
    parts = _non_silent_parts(sums, sample_rate, params.threshold_db, params.min_silence_s, params.pad_s,
                              frame_length, hop_length) or [(0, sums.n)]  # all silent: kept as it is
    return [(parts[0][0], parts[-1][1])] if mode == "edges" else parts


def stream_trimmed_audio(path: PathLike, sample_rate: int, mode: bool | str | None,
                         max_seconds: float | None = None, block_frames: int = 1 << 16,
                         parts: list[tuple[int, int]] | None = None) -> Iterator[np.ndarray]:
    """:func:`stream_audio` with ``data.trim_silence`` applied (:func:`apply_trim`), as the same samples: the
    file streamed twice, for :func:`kept_parts` (unless ``parts`` gives them) and for the kept samples."""
    if parts is None:
        parts = kept_parts(path, sample_rate, mode, max_seconds, block_frames)
    if parts is None:
        yield from stream_audio(path, sample_rate, max_seconds, block_frames)
        return
    position = 0
    for block in stream_audio(path, sample_rate, max_seconds, block_frames):
        end = position + len(block)
        kept = [block[max(a, position) - position:min(b, end) - position] for a, b in parts if a < end and b > position]
        if kept:
            yield np.concatenate(kept)
        position = end


def recording_positions(positions: Sequence[int], parts: list[tuple[int, int]], ends: bool = False) -> np.ndarray:
    """Sample positions in the trimmed signal (the ``parts`` kept, joined) -> positions in the recording.
    ``ends``: the positions end ranges, so one at a join maps to the end of the part before, not the next start."""
    lengths = np.cumsum([0, *(b - a for a, b in parts)])
    index = np.searchsorted(lengths[1:], positions, side="left" if ends else "right")
    index = np.minimum(index, len(parts) - 1)
    return np.asarray([a for a, _ in parts])[index] + np.asarray(positions) - lengths[index]


_BLOCK = 1 << 18  # frames decoded at a time by load_audio
_SAMPLE_BYTES = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


def _declared_wav_bytes(path: PathLike) -> int | None:
    """The size of a WAV file's ``data`` chunk as its header declares it (None: not a RIFF/WAVE file or no data
    chunk found in the first 64 KB). libsndfile quietly reads what is there, so a cut file looks whole."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"data":
            return None if size in (0, 0xFFFFFFFF) else size  # streaming writers leave 0 / -1: unknown
        pos += 8 + size + (size & 1)
    return None


def truncation(path: PathLike, info: AudioInfo | None = None) -> str | None:
    """Why a WAV file is cut short (its header declares more audio than the file holds), or None when whole or
    not a WAV file. libsndfile quietly reads what is there, so a cut file would look whole."""
    info = info or audio_info(path)
    bytes_per_frame = info.channels * _SAMPLE_BYTES.get(info.subtype, 0)
    if info.format != "WAV" or not bytes_per_frame:
        return None
    declared = _declared_wav_bytes(path)
    if declared is not None and declared // bytes_per_frame > info.n_samples:
        return (f"truncated: its header declares {declared / bytes_per_frame / info.sample_rate:.2f} s, the file "
                f"holds {info.duration:.2f} s")
    return None


def _warn_if_truncated(path: PathLike, info: AudioInfo) -> None:
    """A truncated WAV is decoded as far as it goes, with a warning."""
    reason = truncation(path, info)
    if reason:
        log.warning("%s: %s (decoded as far as it goes)", path, reason)


def to_mono(wave: np.ndarray) -> np.ndarray:
    """Mean over channels of a channels-last ``(n, ch)`` array; a 1-D array is returned as is."""
    wave = np.asarray(wave)
    if wave.ndim == 1:
        return wave
    if wave.ndim == 2 and wave.shape[1] == 1:  # already mono: a view, not a float64 mean of the whole file
        return wave[:, 0]
    if wave.ndim != 2:
        raise ValueError(f"wave: expected 1-D or (n_samples, n_channels), got shape {wave.shape}")
    return wave.mean(axis=1, dtype=np.float64).astype(wave.dtype if wave.dtype.kind == "f" else np.float32)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample along axis 0 with soxr ("HQ"); output length is ``round(n * target_sr / orig_sr)``."""
    if orig_sr <= 0:
        raise ValueError(f"orig_sr: expected a positive rate, got {orig_sr}")
    if target_sr <= 0:
        raise ValueError(f"target_sr: expected a positive rate, got {target_sr}")
    wave = np.asarray(wave, dtype=np.float32)
    if orig_sr == target_sr:
        return wave
    return soxr.resample(np.ascontiguousarray(wave), orig_sr, target_sr, quality="HQ")


# --- writing ------------------------------------------------------------------------------------
def write_audio(path: PathLike, wave: np.ndarray, sr: int, subtype: str | None = None) -> Path:
    """Write ``wave`` atomically: to a hidden temp file in the same directory, then ``os.replace``.

    The format follows the extension (soundfile's rule), so the temp name keeps it
    (``.name.tmp-<random>.wav``). ``subtype`` defaults to soundfile's (PCM_16 for WAV/FLAC), which
    also makes the bytes deterministic (float WAVs carry a PEAK chunk with a timestamp).
    A crash never leaves a half-written file under the final name.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.tmp-{secrets.token_hex(4)}{final.suffix}")
    try:
        sf.write(str(tmp), np.asarray(wave), int(sr), subtype=subtype)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def wav_bytes(wave: np.ndarray, sr: int) -> bytes:
    """A mono or channels-last wave as the bytes of a 16-bit PCM WAV file (for a page or a response, not a disk);
    libsndfile clips samples beyond full scale."""
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(wave), int(sr), format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# --- silence ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SilenceParams:
    """Arguments of :func:`trim_silence` (see :func:`silence_params_for_duration`)."""

    threshold_db: float = -40.0
    min_silence_s: float = 0.3
    pad_s: float = 0.05


def silence_params_for_duration(duration_s: float) -> SilenceParams:
    """Silence-removal parameters chosen by clip length (FSD2019 recipe of a reference solution).

    Short clips have little to spare, so only long, deep pauses are cut and more context is kept;
    long recordings (often with conversation pauses) are cut more eagerly. The tiers mirror that
    solution's pydub ``split_on_silence`` usage, whose exact values were not published.
    """
    if duration_s < 2.0:
        return SilenceParams(threshold_db=-50.0, min_silence_s=0.5, pad_s=0.1)
    if duration_s < 10.0:
        return SilenceParams(threshold_db=-40.0, min_silence_s=0.3, pad_s=0.05)
    return SilenceParams(threshold_db=-35.0, min_silence_s=0.25, pad_s=0.05)


# data.trim_silence=fixed: one set for every clip, as an FSD2019 solution cut its noisy clips ("parámetros fijos",
# values not published): the middle tier above, which covers most of those 1-16 s clips.
FIXED_SILENCE = SilenceParams()


def silence_params(mode: bool | str | None, duration_s: float) -> SilenceParams:
    """The parameters ``data.trim_silence=mode`` cuts a clip of ``duration_s`` with: ``"fixed"`` the same for every
    clip (:data:`FIXED_SILENCE`), any other mode by clip length (:func:`silence_params_for_duration`)."""
    return FIXED_SILENCE if mode == "fixed" else silence_params_for_duration(duration_s)


SILENCE_FRAME, SILENCE_HOP = 1024, 256  # samples per loudness frame, and between frames, when finding silence


class _SquareSums:
    """The running sum of squares (float64) of a signal fed block by block, kept at every multiple of ``step``
    samples and at its end: O(n / step) memory, so an hour of audio costs a few MB, not 16 bytes per sample."""

    def __init__(self, step: int):
        self.step, self.n, self.total = step, 0, 0.0
        self.grid = [np.zeros(1)]  # grid[k] = sum of squares of the first k * step samples

    def add(self, block: np.ndarray, chunk: int = 1 << 20) -> None:
        for start in range(0, len(block), chunk):
            part = block[start:start + chunk]
            cumulative = np.cumsum(np.square(part, dtype=np.float64))
            multiples = np.arange(self.n // self.step + 1, (self.n + len(part)) // self.step + 1) * self.step
            self.grid.append(self.total + cumulative[multiples - self.n - 1])
            self.total += float(cumulative[-1])
            self.n += len(part)

    def at(self, points: np.ndarray) -> np.ndarray:
        """The sums over the first ``p`` samples, for points that are multiples of ``step`` or the end."""
        if len(self.grid) > 1:  # joined once (not on every call: an hour's grid is ~2 MB a copy)
            self.grid = [np.concatenate(self.grid)]
        grid = self.grid[0]
        return np.where(points >= self.n, self.total, grid[np.minimum(points // self.step, len(grid) - 1)])


_FRAMES_AT_ONCE = 1 << 16  # loudness frames computed at once (see _frame_rms_db)


def _frame_rms_db(sums: _SquareSums, frame_length: int, hop_length: int) -> np.ndarray:
    """RMS in dB of centred frames (frame i is centred on sample i * hop, zero-padded at the edges), from the
    running sums of squares (their ``step`` must divide the frame edges: see :func:`_rms_step`). Computed
    :data:`_FRAMES_AT_ONCE` frames at a time: the result is 8 bytes a frame, and the dozen temporaries per frame
    stay a few MB whatever the recording's length (all at once, they came to ~40 MB for 3 hours at 16 kHz)."""
    n = sums.n
    half = frame_length // 2
    n_frames = 1 + n // hop_length
    db = np.empty(n_frames)
    for first in range(0, n_frames, _FRAMES_AT_ONCE):
        centres = np.arange(first, min(first + _FRAMES_AT_ONCE, n_frames)) * hop_length
        lo = np.clip(centres - half, 0, n)
        hi = np.clip(centres - half + frame_length, 0, n)
        energy = sums.at(hi) - sums.at(lo)
        rms = np.sqrt(np.maximum(energy, 0.0) / frame_length)
        db[first:first + len(centres)] = 20.0 * np.log10(np.maximum(rms, 1e-20))
    return db


def window_levels_db(windows: np.ndarray) -> np.ndarray:
    """(B, n) windows -> each one's RMS level in dB re full scale (digital silence: -200 dB),
    from the windows a stream already cut: measured on the samples the model scored, with no second decode."""
    mean_square = np.mean(np.square(np.asarray(windows), dtype=np.float64), axis=-1)
    return 10.0 * np.log10(np.maximum(mean_square, 1e-20))


def _rms_step(frame_length: int, hop_length: int) -> int:
    """The largest step dividing every frame edge (centre - half, centre - half + frame_length)."""
    half = frame_length // 2
    return math.gcd(hop_length, half, frame_length - half) or 1


def split_on_silence(
    wave: np.ndarray,
    sr: int,
    threshold_db: float = -40.0,
    min_silence_s: float = 0.3,
    pad_s: float = 0.05,
    frame_length: int = SILENCE_FRAME,
    hop_length: int = SILENCE_HOP,
) -> list[tuple[int, int]]:
    """Non-silent parts of ``wave`` as sample ranges ``[(start, end), ...]``, sorted, non-overlapping.

    A frame is silent when its RMS is more than ``-threshold_db`` dB below the loudest frame's RMS.
    Only silent stretches of at least ``min_silence_s`` split the signal (shorter pauses stay);
    each part keeps ``pad_s`` seconds of context on both sides (parts that then touch are merged).
    An all-silent (e.g. all-zero) input has no parts: returns ``[]``.
    A 2-D ``(n, ch)`` input is analysed on its channel mean.
    """
    if sr <= 0:
        raise ValueError(f"sr: expected a positive rate, got {sr}")
    if threshold_db >= 0:
        raise ValueError(f"threshold_db: expected a negative dB value, got {threshold_db}")
    if min_silence_s < 0 or pad_s < 0:
        raise ValueError(f"min_silence_s/pad_s: expected >= 0, got {min_silence_s}/{pad_s}")
    if frame_length <= 0 or hop_length <= 0:
        raise ValueError(f"frame_length/hop_length: expected > 0, got {frame_length}/{hop_length}")
    sums = _SquareSums(_rms_step(frame_length, hop_length))
    sums.add(to_mono(np.asarray(wave)))
    return _non_silent_parts(sums, sr, threshold_db, min_silence_s, pad_s, frame_length, hop_length)


def _non_silent_parts(sums: _SquareSums, sr: int, threshold_db: float, min_silence_s: float, pad_s: float,
                      frame_length: int, hop_length: int) -> list[tuple[int, int]]:
    """:func:`split_on_silence` from the signal's running sums of squares (a whole array or a stream)."""
    n = sums.n
    if n == 0:
        return []
    db = _frame_rms_db(sums, frame_length, hop_length)
    peak = db.max()
    if peak <= -400.0:  # all zeros
        return []
    silent = db < peak + threshold_db

    # Silent runs of frames -> silent sample ranges. A frame is silent only if its whole window is
    # quiet, so the run [a, b] covers samples from a's window start to b's window end.
    half = frame_length // 2
    edges = np.diff(np.concatenate([[0], silent.astype(np.int8), [0]]))
    run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    min_len = int(round(min_silence_s * sr))
    gaps = []
    for a, b in zip(run_starts, run_ends):
        start = max(0, a * hop_length - half)
        end = min(n, b * hop_length - half + frame_length)
        if end - start >= max(min_len, 1):
            gaps.append((start, end))

    # Complement of the long gaps, padded, merged.
    pad = int(round(pad_s * sr))
    parts: list[tuple[int, int]] = []
    cursor = 0
    for g_start, g_end in [*gaps, (n, n)]:
        if g_start > cursor:
            start, end = max(0, cursor - pad), min(n, g_start + pad)
            if parts and start <= parts[-1][1]:
                parts[-1] = (parts[-1][0], end)
            else:
                parts.append((start, end))
        cursor = max(cursor, g_end)
    return parts


def trim_silence(
    wave: np.ndarray,
    sr: int,
    threshold_db: float = -40.0,
    min_silence_s: float = 0.3,
    pad_s: float = 0.05,
    frame_length: int = SILENCE_FRAME,
    hop_length: int = SILENCE_HOP,
) -> np.ndarray:
    """Remove silent stretches of at least ``min_silence_s`` anywhere in the clip.

    The non-silent parts from :func:`split_on_silence` (each with ``pad_s`` of context) are
    concatenated. Never returns an empty array: an all-silent input is returned unchanged.
    """
    parts = split_on_silence(wave, sr, threshold_db, min_silence_s, pad_s, frame_length, hop_length)
    if not parts:
        return wave
    if len(parts) == 1 and parts[0] == (0, len(wave)):
        return wave
    return np.concatenate([wave[s:e] for s, e in parts], axis=0)


def trim_silence_by_length(wave: np.ndarray, sr: int, edges_only: bool = False) -> np.ndarray:
    """:func:`trim_silence` with :func:`silence_params_for_duration` of this clip (FSD2019 recipe).

    ``edges_only``: cut only the leading and trailing silence, keeping pauses inside the clip (the rhythm of
    a clock's ticks or a dog's barks is part of the sound).
    """
    return apply_trim(wave, sr, "edges" if edges_only else True)


TRIM_MODES = (False, True, "edges", "fixed")


def apply_trim(wave: np.ndarray, sr: int, mode: bool | str | None) -> np.ndarray:
    """``data.trim_silence``: False/None keep the clip, ``"edges"`` cuts leading and trailing silence,
    True every silent stretch of the clip, ``"fixed"`` every silent stretch with the same parameters for every
    clip; the parameters are :func:`silence_params`'s, as :func:`kept_parts` uses when streaming."""
    if not mode:
        return wave
    params = silence_params(mode, len(wave) / sr)
    if mode != "edges":
        return trim_silence(wave, sr, params.threshold_db, params.min_silence_s, params.pad_s)
    parts = split_on_silence(wave, sr, params.threshold_db, params.min_silence_s, params.pad_s)
    return wave[parts[0][0]:parts[-1][1]] if parts else wave


# --- fixed length -------------------------------------------------------------------------------
FixMode = Literal["tile", "pad"]
CropMode = Literal["random", "center", "start", "max_energy"]
PAD_MODES = ("tile", "pad")  # data.pad_mode
_CROPS = ("random", "center", "start", "max_energy")


def _window_energies(wave: np.ndarray, starts: np.ndarray, n_samples: int) -> np.ndarray:
    """Sum of squares of ``wave[s : s + n_samples]`` for each start (all channels)."""
    sq = np.square(wave, dtype=np.float64)
    if sq.ndim > 1:
        sq = sq.reshape(len(sq), -1).sum(axis=1)
    cum = np.concatenate([[0.0], np.cumsum(sq)])
    return cum[starts + n_samples] - cum[starts]


def fix_length(
    wave: np.ndarray,
    n_samples: int,
    mode: FixMode = "tile",
    crop: CropMode = "random",
    k: int = 3,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Make ``wave`` exactly ``n_samples`` long (along axis 0).

    Short clips: ``mode="tile"`` repeats the clip from its start; ``mode="pad"`` zero-pads, centred
    for ``crop="center"`` and at the end otherwise.
    Long clips: ``crop="random"`` a uniformly random window, ``"center"`` the middle one,
    ``"start"`` the first one, ``"max_energy"`` the highest-energy of ``k`` random windows (ties:
    the first drawn) — random each call, so training sees different loud windows each epoch.
    Random crops use ``rng`` (a fresh unseeded generator when None); same ``rng`` state, same output.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples <= 0:
        raise ValueError(f"n_samples: expected a positive integer, got {n_samples!r}")
    if mode not in PAD_MODES:
        raise ValueError(f"mode: expected one of {PAD_MODES}, got {mode!r}")
    if crop not in _CROPS:
        raise ValueError(f"crop: expected one of {_CROPS}, got {crop!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    wave = np.asarray(wave)
    if wave.ndim == 0 or len(wave) == 0:
        raise ValueError(f"wave: expected a non-empty array, got shape {wave.shape}")
    n = len(wave)
    n_samples = int(n_samples)

    if n == n_samples:
        return wave.copy()
    if n < n_samples:
        if mode == "tile":
            reps = -(-n_samples // n)
            return np.concatenate([wave] * reps, axis=0)[:n_samples]
        extra = n_samples - n
        left = extra // 2 if crop == "center" else 0
        widths = [(left, extra - left)] + [(0, 0)] * (wave.ndim - 1)
        return np.pad(wave, widths)

    span = n - n_samples  # valid starts: 0..span
    if crop == "start":
        start = 0
    elif crop == "center":
        start = span // 2
    else:
        rng = rng if rng is not None else np.random.default_rng()
        if crop == "random":
            start = int(rng.integers(0, span + 1))
        else:
            starts = rng.integers(0, span + 1, size=k)
            start = int(starts[np.argmax(_window_energies(wave, starts, n_samples))])
    return wave[start : start + n_samples].copy()


# --- whole recordings as clip-length windows -------------------------------------------------------
def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Window starts covering the whole signal; the last window ends exactly at the end."""
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


class Windows:
    """A recording's (K, n_samples) windows, cut when sliced: ``windows[i:j]`` is a float32 array of those
    windows only, so a long recording is never held twice over (its windows overlap by half)."""

    def __init__(self, wave: np.ndarray, n_samples: int, starts: list[int]):
        self.wave, self.n_samples, self.starts = wave, n_samples, starts

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.starts), self.n_samples)

    def __getitem__(self, index: slice) -> np.ndarray:
        starts = self.starts[index] if isinstance(index, slice) else [self.starts[index]]
        out = np.stack([self.wave[s : s + self.n_samples] for s in starts]) if starts else np.zeros((0, self.n_samples))
        return out.astype(np.float32, copy=False)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def clip_windows(wave: np.ndarray, n_samples: int, pad_mode: str = "tile") -> Windows:
    """A recording as (K, n_samples) windows with 50 % overlap covering all of it (K = 1 when it is no
    longer than a clip: tiled or padded like training clips). Used to evaluate and predict on whole files;
    cut on demand (see :class:`Windows`)."""
    if len(wave) <= n_samples:
        return Windows(fix_length(wave, n_samples, mode=pad_mode, crop="center").astype(np.float32), n_samples, [0])
    return Windows(wave, n_samples, window_starts(len(wave), n_samples, max(1, n_samples // 2)))


def stream_windows(blocks: Iterable[np.ndarray], n_samples: int, pad_mode: str = "tile",
                   batch_size: int = 64) -> Iterator[np.ndarray]:
    """:func:`clip_windows` over a stream of blocks (e.g. :func:`stream_audio`), in (<= batch_size, n_samples)
    batches: the same windows in the same order, holding one window plus one block of the signal at a time."""
    hop = max(1, n_samples // 2)
    buffer, offset = np.zeros(0, np.float32), 0  # buffer[0] is sample number ``offset`` of the recording
    next_start, last_start, batch = 0, None, []
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        end = offset + len(buffer)
        while next_start + n_samples <= end:
            batch.append(buffer[next_start - offset : next_start - offset + n_samples])
            last_start, next_start = next_start, next_start + hop
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
        keep_from = max(offset, end - n_samples)  # the final window may end the recording
        buffer, offset = buffer[keep_from - offset :].copy(), keep_from
    end = offset + len(buffer)
    if last_start is None:  # shorter than a clip: one clip, tiled or padded as in training
        batch.append(clip_windows(buffer, n_samples, pad_mode)[:][0])
    elif last_start + n_samples < end:
        batch.append(buffer[-n_samples:])
    if batch:
        yield np.stack(batch).astype(np.float32, copy=False)
