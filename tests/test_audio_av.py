"""Containers libsndfile cannot read (.m4a, .mp4, .aac), decoded through PyAV: the same samples as PyAV's own
full read, mixed and resampled as any other file, with the same bounds and one-line errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from av_files import tones, write_av

from audioclf.data.audio import audio_info, load_audio, resample, stream_audio
from audioclf.errors import AudioDecodeError

av = pytest.importorskip("av")  # the `formats` extra, part of the dev install


def pyav_read(path) -> np.ndarray:
    """PyAV's own full read, channels-last float32 (AAC decodes to planar float)."""
    with av.open(str(path)) as container:
        return np.concatenate([frame.to_ndarray().T for frame in container.decode(audio=0)]).astype(np.float32)


@pytest.mark.parametrize("name, container, sr, channels", [
    ("clip.m4a", "mp4", 44100, 2), ("clip.mp4", "mp4", 48000, 1), ("clip.aac", "adts", 22050, 2),
])
def test_aac_decodes_sample_for_sample_as_pyav_reads_it(tmp_path, name, container, sr, channels):
    path = write_av(tmp_path / name, tones(1.3, sr, channels), sr, container=container)
    expected = pyav_read(path)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.n_samples) == (sr, channels, len(expected))
    wave, rate = load_audio(path, mono=False)
    assert rate == sr and wave.dtype == np.float32 and wave.shape == expected.shape
    np.testing.assert_array_equal(wave, expected)
    mono, _ = load_audio(path)  # mixed down as the soundfile path does: the channel mean
    np.testing.assert_allclose(mono, expected.mean(axis=1), atol=1e-7)


def test_an_m4a_is_resampled_by_the_soxr_path_and_streams_as_it_loads(tmp_path):
    path = write_av(tmp_path / "clip.m4a", tones(2.0, 44100, 2), 44100, container="mp4")
    expected = resample(pyav_read(path).mean(axis=1), 44100, 16000)
    wave, rate = load_audio(path, sample_rate=16000)
    assert rate == 16000 and len(wave) == len(expected)
    np.testing.assert_allclose(wave, expected, atol=1e-5)
    streamed = np.concatenate(list(stream_audio(path, 16000, block_frames=3000)))
    np.testing.assert_allclose(streamed, wave, atol=1e-6)


def test_apple_lossless_in_m4a_gives_back_the_pcm_it_was_made_from(tmp_path):
    pcm = (tones(1.0, 16000, 2) * 32767).astype(np.int16)
    path = write_av(tmp_path / "lossless.m4a", pcm, 16000, codec="alac", container="ipod", sample_format="s16p")
    wave, rate = load_audio(path, mono=False)
    assert rate == 16000
    np.testing.assert_array_equal(wave, pcm / np.float32(32768))


@pytest.mark.parametrize("case", ["truncated", "garbage", "empty"])
def test_a_broken_m4a_is_one_line_naming_the_file(tmp_path, case):
    whole = write_av(tmp_path / "whole.m4a", tones(1.0, 22050, 2), 22050, container="mp4").read_bytes()
    path = tmp_path / "bad.m4a"
    path.write_bytes({"truncated": whole[: len(whole) // 2], "garbage": b"\x00\x01junk" * 500, "empty": b""}[case])
    for call in (lambda: load_audio(path), lambda: audio_info(path)):
        with pytest.raises(AudioDecodeError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
        assert message.count("bad.m4a") == 1  # FFmpeg's own message names the file too: said once
    if case == "empty":
        assert "empty file (0 bytes)" in message


def test_without_pyav_the_reason_says_how_to_install_it(tmp_path, monkeypatch):
    path = write_av(tmp_path / "clip.m4a", tones(0.5, 16000, 1), 16000, container="mp4")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    with pytest.raises(AudioDecodeError, match=r"clip\.m4a: decoding \.m4a files needs PyAV: "
                                               r"pip install 'audioclf\[formats\]'$"):
        load_audio(path)


def test_the_length_bound_counts_decoded_frames_not_the_container(tmp_path):
    path = write_av(tmp_path / "long.m4a", tones(2.0, 16000, 1), 16000, container="mp4")
    with pytest.raises(AudioDecodeError, match=r"long\.m4a: 2 s long; files up to data.max_seconds=1 s"):
        load_audio(path, max_seconds=1.0)
    assert len(load_audio(path, max_seconds=3.0)[0]) == len(pyav_read(path))
