"""Live streams: byte streams decoded frame by frame (data/pcm.py) and windows scored as they complete
(deploy/live.py), checked against the file path's windows (clip_windows / stream_windows) and against soxr's
resampling of the whole signal."""

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from audioclf.data.audio import clip_windows, resample
from audioclf.data.pcm import PcmDecoder, open_pcm_stream, read_wav_stream_header
from audioclf.deploy.live import LiveStream, score_byte_stream
from audioclf.deploy.predictor import WindowedPredictor
from audioclf.errors import AudioDecodeError, ConfigError

SR, CLIP = 8000, 800


class Recorder(WindowedPredictor):
    """Remembers every window it scored; 'loud' when the window's RMS is over 0.1."""

    classes, task, sample_rate, clip_samples = ["quiet", "loud"], "single_label", SR, CLIP

    def __init__(self):
        self.seen = []

    def window_probabilities(self, windows):
        self.seen.extend(np.array(windows))
        loud = np.sqrt(np.square(windows.astype(np.float64)).mean(1)) > 0.1
        return np.stack([np.where(loud, 0.1, 0.9), np.where(loud, 0.9, 0.1)], axis=1)


def _signal(n, seed=0):
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(n) * (np.arange(n) // 1000 % 2)).astype(np.float32)


def _feed(stream, wave, chunks):
    out, at = [], 0
    for size in chunks:
        out += stream.push(wave[at : at + size])
        at += size
    return out + stream.push(wave[at:]) + stream.close()


@pytest.mark.parametrize("chunks", [[1] * 50 + [7, 333, 2000], [5000], [CLIP // 2] * 4])
@pytest.mark.parametrize("n", [3 * CLIP + 123, 5 * CLIP, CLIP // 3, CLIP])
def test_windows_are_the_files_windows_whatever_the_chunking(n, chunks):
    wave = _signal(n)
    predictor = Recorder()
    windows = _feed(LiveStream(predictor, SR), wave, chunks)
    expected = np.asarray(clip_windows(wave, CLIP)[:])
    assert len(windows) == len(predictor.seen) == len(expected)
    np.testing.assert_array_equal(np.stack(predictor.seen), expected)
    starts = [w.start for w in windows]
    assert starts == sorted(starts) and windows[-1].end == pytest.approx(max(n, CLIP) / SR if n >= CLIP else n / SR)
    assert all(w.labels in (("quiet",), ("loud",)) for w in windows)


def test_a_shorter_hop_answers_every_hop():
    wave = _signal(4 * CLIP)
    stream = LiveStream(Recorder(), SR, hop_seconds=0.025)  # 200 samples
    out = stream.push(wave[:CLIP])
    assert [(w.start, w.end) for w in out] == [(0.0, 0.1)]
    assert len(stream.push(wave[CLIP : CLIP + 199])) == 0 and len(stream.push(wave[CLIP + 199 : CLIP + 200])) == 1


def test_resampled_stream_matches_resampling_the_whole_signal():
    rate = 44100
    wave = _signal(3 * rate // 2, seed=1)
    predictor = Recorder()
    _feed(LiveStream(predictor, rate), wave, [441] * 30 + [999])
    expected = np.asarray(clip_windows(resample(wave, rate, SR), CLIP)[:])
    assert len(predictor.seen) == len(expected)
    np.testing.assert_allclose(np.stack(predictor.seen), expected, atol=1e-5)


def test_windows_can_be_scored_by_another_callable():
    predictor, batched = Recorder(), []

    def score(windows):  # as the server's WindowBatcher: the windows go elsewhere, the answers come back
        batched.append(len(windows))
        return predictor.window_probabilities(windows)

    own = Recorder()
    windows = _feed(LiveStream(own, SR, score=score), _signal(3 * CLIP), [CLIP])
    assert sum(batched) == len(windows) == len(predictor.seen) == 5 and own.seen == []


def test_memory_is_one_clip_whatever_the_streams_length():
    stream = LiveStream(Recorder(), SR)
    for _ in range(200):
        stream.push(np.zeros(CLIP, np.float32))
    assert stream._ring.nbytes == CLIP * 4 and stream.received == 200 * CLIP


def test_bad_hops_and_closed_streams_are_one_line_errors():
    with pytest.raises(ConfigError, match="hop"):
        LiveStream(Recorder(), SR, hop_seconds=0.5)  # longer than the 0.1-s clip
    for hop in (0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="hop"):
            LiveStream(Recorder(), SR, hop_seconds=hop)
    stream = LiveStream(Recorder(), SR)
    stream.close()
    with pytest.raises(ConfigError, match="closed"):
        stream.push(np.zeros(10, np.float32))


# --- byte streams ------------------------------------------------------------------------------------


@pytest.mark.parametrize("form,subtype", [("s16le", "PCM_16"), ("s24le", "PCM_24"), ("s32le", "PCM_32"),
                                          ("f32le", "FLOAT")])
def test_pcm_frames_in_odd_chunks_decode_as_soundfile_reads_them(form, subtype, tmp_path):
    wave = np.clip(np.random.default_rng(2).standard_normal((1001, 2)) * 0.3, -1, 1).astype(np.float32)
    sf.write(tmp_path / "a.raw", wave, SR, subtype=subtype, format="RAW")
    raw = (tmp_path / "a.raw").read_bytes()
    expected = sf.read(tmp_path / "a.raw", samplerate=SR, channels=2, subtype=subtype, format="RAW",
                       dtype="float32")[0]
    decoder = PcmDecoder(form, SR, 2)
    got = np.concatenate([decoder.decode(raw[i : i + 37]) for i in range(0, len(raw), 37)])
    decoder.finish()
    np.testing.assert_allclose(got, expected, atol=1e-7)


def test_a_wav_stream_ignores_its_declared_sizes(tmp_path):
    wave = (0.5 * np.sin(np.arange(4000) / 9)).astype(np.float32)
    sf.write(tmp_path / "a.wav", wave, SR, subtype="PCM_16")
    data = bytearray((tmp_path / "a.wav").read_bytes())
    at = data.index(b"data")
    data[4:8] = data[at + 4 : at + 8] = struct.pack("<I", 0x7FFFFFFF)  # as arecord writes to a pipe
    data[at:at] = b"LIST" + struct.pack("<I", 5) + b"tags\x00\x00"  # an odd-sized chunk before the samples, padded
    stream = io.BytesIO(bytes(data))
    decoder = read_wav_stream_header(stream)
    assert (decoder.form, decoder.rate, decoder.channels) == ("s16le", SR, 1)
    got = decoder.decode(stream.read())
    np.testing.assert_allclose(got[:, 0], sf.read(tmp_path / "a.wav", dtype="float32")[0], atol=1e-7)


@pytest.mark.parametrize("data,match", [
    (b"", "ended inside a WAV header"),
    (b"RIFX\0\0\0\0WAVE", "not a WAV stream"),
    (b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0", "ended inside"),
    (b"RIFF\0\0\0\0WAVEdata\0\0\0\0", "before its 'fmt '"),
    (b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0" + struct.pack("<HHIIHH", 2, 1, 8000, 0, 0, 4), "format tag 2"),
    (b"RIFF\0\0\0\0WAVELIST\xff\xff\xff\x7f", "chunk of"),
])
def test_hostile_wav_stream_headers_are_one_line_errors(data, match):
    with pytest.raises(AudioDecodeError, match=match) as caught:
        read_wav_stream_header(io.BytesIO(data), source="stdin")
    assert str(caught.value).startswith("stdin: ") and "\n" not in str(caught.value)


def test_hostile_frames_are_one_line_errors():
    decoder = PcmDecoder("f32le", SR, 1, source="stdin")
    with pytest.raises(AudioDecodeError, match="NaN"):
        decoder.decode(np.array([0.1, np.nan], np.float32).tobytes())
    with pytest.raises(AudioDecodeError, match=r"\+48 dBFS"):
        decoder.decode(np.array([1000.0], np.float32).tobytes())
    decoder = PcmDecoder("s16le", SR, 2, source="stdin")
    assert decoder.decode(b"\x00" * 6).shape == (1, 2)  # 2 bytes wait for the rest of their frame
    with pytest.raises(AudioDecodeError, match="truncated: the stream ended 2 bytes into a 4-byte"):
        decoder.finish()
    for form, rate, channels, match in [("u8", SR, 1, "sample format"), ("s16le", 10, 1, "sample rate"),
                                        ("s16le", SR, 0, "channels")]:
        with pytest.raises(AudioDecodeError, match=match):
            PcmDecoder(form, rate, channels)


# --- a byte stream read as it arrives (predict RUN -) -------------------------------------------------------


def _trickle(data: bytes, size: int = 1, then=None):
    """``read(n)`` like ``os.read`` on a pipe: at most ``size`` bytes at a time, ``b""`` at the end (or ``then``
    raised there: a Ctrl-C while waiting for more)."""
    stream = io.BytesIO(data)

    def read(n):
        piece = stream.read(min(n, size))
        if not piece and then is not None:
            raise then
        return piece
    return read


def _wav_bytes(wave, rate, subtype="PCM_16"):
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def test_a_piped_stream_is_sniffed_a_byte_at_a_time():
    wave = _signal(2 * CLIP)
    decoder, first = open_pcm_stream(_trickle(_wav_bytes(wave, SR)), source="stdin")
    assert (decoder.form, decoder.rate, decoder.channels, first) == ("s16le", SR, 1, b"")
    raw = (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()
    decoder, first = open_pcm_stream(_trickle(raw), "s16le", SR, source="stdin")
    assert (decoder.channels, first) == (1, raw[:4])  # the sniffed bytes are samples, handed back


@pytest.mark.parametrize("data,kw,match", [
    (b"", {}, "empty: the stream ended before any audio"),
    (b"hello, this is no audio at all", {}, "not a WAV stream"),
    (b"\x01\x02\x03\x04", {"form": "s16le"}, "sample rate must be given"),
    (_wav_bytes(np.zeros(10, np.float32), SR), {"rate": 16000}, f"states {SR} Hz, not the 16000 Hz given"),
    (_wav_bytes(np.zeros(10, np.float32), SR), {"form": "wav", "channels": 2}, "states 1 channels, not the 2"),
    (b"\x00\x00", {"form": "s16le", "rate": 10}, "sample rate 10"),
    (b"\x00\x00", {"form": "u8", "rate": SR}, "sample format 'u8': expected wav, s16le"),
    (b"\x00\x00", {"form": "u8"}, "sample format 'u8'"),  # the format named wrong first, then the rate missing
])
def test_hostile_stream_openings_are_one_line_errors(data, kw, match):
    with pytest.raises(AudioDecodeError, match=match) as caught:
        open_pcm_stream(_trickle(data, 3), source="stdin", **kw)
    assert str(caught.value).startswith("stdin: ") and "\n" not in str(caught.value)


def test_a_byte_stream_gives_the_windows_of_its_samples_as_they_arrive():
    wave = _signal(3 * CLIP + 123)
    data = _wav_bytes(wave, SR, "FLOAT")
    read = _trickle(data, size=97)
    decoder, first = open_pcm_stream(read)
    predictor = Recorder()
    windows = list(score_byte_stream(read, decoder, LiveStream(predictor, SR), first, chunk_seconds=0.002))
    np.testing.assert_array_equal(np.stack(predictor.seen), np.asarray(clip_windows(wave, CLIP)[:]))
    assert [w.end for w in windows] == [0.1, 0.15, 0.2, 0.25, 0.3, (3 * CLIP + 123) / SR]


def test_a_window_is_scored_before_the_stream_goes_on():
    raw = np.zeros(CLIP, "<f4").tobytes()
    reads = []

    def read(n):  # the stream goes on forever: each read is recorded
        reads.append(n)
        return raw[:n]
    decoder, _ = open_pcm_stream(read, "f32le", SR)
    first = next(score_byte_stream(read, decoder, LiveStream(Recorder(), SR), chunk_seconds=0.01))
    # 80-sample (10-ms) reads: the first window came out after the read that completed it, not after a large buffer
    assert first.end == 0.1 and sum(reads) == 4 + CLIP * 4 and max(reads) == 80 * 4


def test_ctrl_c_scores_the_last_window_then_stops():
    data = _signal(CLIP + CLIP // 4).astype("<f4").tobytes()
    read = _trickle(data, size=1000, then=KeyboardInterrupt())
    decoder, first = open_pcm_stream(read, "f32le", SR)
    windows = []
    with pytest.raises(KeyboardInterrupt):
        for window in score_byte_stream(read, decoder, LiveStream(Recorder(), SR), first):
            windows.append(window)
    assert [w.end for w in windows] == [0.1, (CLIP + CLIP // 4) / SR]


@pytest.mark.parametrize("form,data,match", [
    ("s16le", np.zeros(CLIP + 1, "<i2").tobytes() + b"\x01", "truncated: the stream ended 1 bytes into a 2-byte"),
    ("f32le", np.r_[np.zeros(CLIP + 200), np.nan].astype("<f4").tobytes(), "NaN"),
])
def test_a_stream_that_breaks_raises_after_the_windows_before_it(form, data, match):
    read = _trickle(data, size=4 * CLIP)
    decoder, first = open_pcm_stream(read, form, SR, source="stdin")
    windows = []
    with pytest.raises(AudioDecodeError, match=match):
        for window in score_byte_stream(read, decoder, LiveStream(Recorder(), SR), first):
            windows.append(window)
    assert [w.end for w in windows] == [0.1]


def test_a_wav_stream_with_no_sample_is_an_error():
    read = _trickle(_wav_bytes(np.zeros(0, np.float32), SR))
    decoder, first = open_pcm_stream(read, source="stdin")
    with pytest.raises(AudioDecodeError, match="stdin: the stream ended before its first sample"):
        list(score_byte_stream(read, decoder, LiveStream(Recorder(), SR), first))


@pytest.mark.parametrize("declared", [None, 0, 0xFFFFFFFF, 0x7FFFFFFF])
def test_a_piped_wav_file_stops_at_its_data_size_unless_that_is_a_placeholder(declared):
    wave = _signal(2 * CLIP + 50)
    data = bytearray(_wav_bytes(wave, SR))
    if declared is not None:  # a writer that could not seek back
        at = data.index(b"data")
        data[at + 4 : at + 8] = struct.pack("<I", declared)
    data += b"LIST" + struct.pack("<I", 7) + b"INFOab!\x00"  # after the samples: 7 bytes, padded to 8
    read = _trickle(bytes(data), size=61)
    decoder, first = open_pcm_stream(read, source="stdin")
    predictor = Recorder()
    windows = list(score_byte_stream(read, decoder, LiveStream(predictor, SR), first))
    if declared is None:  # a finished file (`cat rec.wav |`): its LIST chunk is no audio
        samples = sf.read(io.BytesIO(_wav_bytes(wave, SR)), dtype="float32")[0]  # as 16-bit samples
        np.testing.assert_array_equal(np.stack(predictor.seen), np.asarray(clip_windows(samples, CLIP)[:]))
    else:  # nothing says where the samples end: the chunk's 16 bytes read as 8 more samples
        assert windows[-1].end == (len(wave) + 8) / SR
