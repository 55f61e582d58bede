"""FeatureCache keys and round trips, corrupt entries, concurrent writers."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from audioclf.data.store import FeatureCache, settings_json
from audioclf.errors import DataError


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    path = tmp_path / "clip.wav"
    path.write_bytes(b"RIFF" + bytes(range(256)) * 10)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name)


# --- keys ---------------------------------------------------------------------------------------
def test_key_is_sha256_of_bytes_and_canonical_settings(tmp_path, audio):
    cache = FeatureCache(tmp_path / "cache")
    settings = {"sample_rate": 16000, "what": "waveform", "trim": False}
    key = cache.key(audio, settings)
    expected = hashlib.sha256(
        audio.read_bytes() + b"\0audioclf-settings\0" + b'{"sample_rate":16000,"trim":false,"what":"waveform"}'
    ).hexdigest()
    assert key == expected
    # dict order does not matter; any setting, or any byte of the file, does
    assert cache.key(audio, dict(reversed(list(settings.items())))) == key
    assert cache.key(audio, {**settings, "sample_rate": 22050}) != key
    assert cache.key(audio, {**settings, "trim": True}) != key
    copy = tmp_path / "renamed.wav"
    copy.write_bytes(audio.read_bytes())
    assert cache.key(copy, settings) == key  # content-addressed: a renamed file still hits
    raw = audio.read_bytes()
    copy.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # one bit of the last byte
    assert cache.key(copy, settings) != key


def test_key_of_a_large_file_is_hashed_in_chunks(tmp_path):
    path = tmp_path / "long.raw"
    data = np.random.default_rng(0).integers(0, 256, size=3 * (1 << 20) + 17, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    key = FeatureCache(tmp_path).key(path, {})
    assert key == hashlib.sha256(data + b"\0audioclf-settings\0{}").hexdigest()


def test_settings_json_is_canonical_and_handles_common_types():
    @dataclass(frozen=True)
    class Cfg:
        n_mels: int = 40
        fmax: float | None = None

    text = settings_json({"b": np.float32(0.5), "a": Path("x/y"), "cfg": Cfg(), "arr": np.arange(2), "s": {"q", "p"}})
    assert text == '{"a":"x/y","arr":[0,1],"b":0.5,"cfg":{"fmax":null,"n_mels":40},"s":["p","q"]}'
    assert json.loads(text)["cfg"]["n_mels"] == 40
    with pytest.raises(DataError, match="cannot encode object"):
        settings_json({"x": object()})


def test_key_of_a_missing_file_raises_oserror(tmp_path):
    # decode_manifest catches OSError to report the file as skipped with the OS's reason
    with pytest.raises(FileNotFoundError):
        FeatureCache(tmp_path).key(tmp_path / "missing.wav", {})


def test_malformed_keys_are_rejected(tmp_path):
    cache = FeatureCache(tmp_path)
    for bad in ("../../etc/passwd", "ABC", "0" * 63, "g" * 64):
        with pytest.raises(DataError, match="64 lowercase hex"):
            cache.get(bad)


# --- get / put ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "array",
    [
        np.linspace(-1, 1, 1000, dtype=np.float32),
        np.arange(24, dtype=np.int16).reshape(2, 3, 4),
        np.zeros((0, 5), dtype=np.float64),
    ],
)
def test_put_then_get_round_trips_exactly(tmp_path, audio, array):
    cache = FeatureCache(tmp_path / "cache")
    key = cache.key(audio, {"n": 1})
    assert cache.get(key) is None and key not in cache
    path = cache.put(key, array)
    assert path == tmp_path / "cache" / key[:2] / f"{key}.npy"
    got = cache.get(key)
    assert got.dtype == array.dtype and got.shape == array.shape and np.array_equal(got, array)
    assert key in cache
    assert leftovers(tmp_path) == []


def test_put_replaces_an_existing_entry(tmp_path, audio):
    cache = FeatureCache(tmp_path)
    key = cache.key(audio, {})
    cache.put(key, np.ones(3))
    cache.put(key, np.full(4, 7.0))
    np.testing.assert_array_equal(cache.get(key), np.full(4, 7.0))


def test_put_rejects_object_arrays(tmp_path, audio):
    cache = FeatureCache(tmp_path)
    key = cache.key(audio, {})
    with pytest.raises(DataError, match="object arrays"):
        cache.put(key, np.array([{"a": 1}], dtype=object))
    assert cache.get(key) is None and leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "pickle"])
def test_corrupt_entry_is_a_miss_with_a_warning_and_can_be_rewritten(tmp_path, audio, damage):
    cache = FeatureCache(tmp_path)
    key = cache.key(audio, {})
    path = cache.put(key, np.arange(1000, dtype=np.float32))
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a numpy file at all")
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a pickled object array must never be unpickled from a shared cache folder
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.warns(UserWarning, match=f"{key}.npy: unreadable feature-cache entry"):
        assert cache.get(key) is None
    cache.put(key, np.arange(3))
    np.testing.assert_array_equal(cache.get(key), np.arange(3))


def test_concurrent_writers_leave_one_complete_entry(tmp_path, audio):
    cache = FeatureCache(tmp_path)
    key = cache.key(audio, {})
    arrays = [np.full(50_000, i, dtype=np.float32) for i in range(8)]
    threads = [threading.Thread(target=cache.put, args=(key, a)) for a in arrays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = cache.get(key)
    assert got.shape == (50_000,) and np.all(got == got[0]) and 0 <= got[0] < 8
    assert leftovers(tmp_path) == []


def test_clear_removes_entries_and_stray_temp_files(tmp_path, audio):
    cache = FeatureCache(tmp_path / "c")
    assert cache.clear() == 0  # no folder yet
    keys = [cache.key(audio, {"i": i}) for i in range(3)]
    for k in keys:
        cache.put(k, np.zeros(2))
    stray = cache.path(keys[0]).parent / f".{keys[0]}.tmp-dead.npy"
    stray.write_bytes(b"half")
    keep = tmp_path / "c" / "README"
    keep.write_text("not ours")
    assert cache.clear() == 3
    assert all(cache.get(k) is None for k in keys) and not stray.exists() and keep.exists()


def test_threads_reading_the_cache_parse_headers_one_at_a_time(tmp_path, audio, monkeypatch):
    """CPython 3.11's AST conversion (np.load's header parse) is not thread-safe: decoding threads take turns."""
    import time

    from audioclf.data import store

    cache = FeatureCache(tmp_path / "cache")
    key = cache.key(audio, {"sr": 16000})
    cache.put(key, np.arange(10, dtype=np.float32))
    inside, most, real_load = [0], [0], np.load

    def slow_load(*args, **kwargs):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.01)  # long enough for another thread to enter, were it allowed
        inside[0] -= 1
        return real_load(*args, **kwargs)

    monkeypatch.setattr(store.np, "load", slow_load)
    threads = [threading.Thread(target=cache.get, args=(key,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1
