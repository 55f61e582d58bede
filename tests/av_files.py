"""Audio in the containers PyAV decodes (.m4a, .mp4, .aac), made by PyAV's own encoders for the tests."""

from __future__ import annotations

import numpy as np


def write_av(path, wave: np.ndarray, sr: int, codec: str = "aac", container: str | None = None,
             sample_format: str = "fltp"):
    """``wave`` (n, channels) encoded with PyAV's own encoders (no system ffmpeg)."""
    import av  # optional (the `formats` extra): callers skip without it

    channels = wave.shape[1]
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=sr, layout="stereo" if channels == 2 else "mono")
        stream.codec_context.format = sample_format
        for start in range(0, len(wave), 1024):
            block = wave[start:start + 1024]
            array = block.T if sample_format.endswith("p") else block.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(array), format=sample_format,
                                               layout=stream.layout.name)
            frame.sample_rate = sr
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def tones(seconds: float, sr: int, channels: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    # A different tone and level per channel, so a wrong mix-down (one channel, a sum) shows.
    return np.stack([(0.5 / (c + 1)) * np.sin(2 * np.pi * (440 + 220 * c) * t) for c in range(channels)],
                    axis=1).astype(np.float32)
