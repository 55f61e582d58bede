"""TFRecord files and ``tf.train.Example`` / ``SequenceExample`` messages, without TensorFlow.

The AudioSet embedding release ships as TFRecord files of ``SequenceExample`` protos; Darna Sequeiros
(2018, a thesis on AudioSet embeddings) gave up on them because reading them meant depending on TensorFlow.
Both layers are small enough to read directly:

* **TFRecord framing** (TensorFlow ``core/lib/io/record_writer.cc``), repeated until end of file::

      uint64 length (little endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

  with ``masked(c) = rotate_right(c, 15) + 0xa282ead8`` (mod 2**32) and CRC-32C the Castagnoli CRC.
  Both CRCs are verified, so a corrupt or truncated file is an error that names the file and the record.
* **Protocol-buffer wire format**: each field is a varint key ``(field_number << 3) | wire_type``
  followed by a varint (type 0), 8 bytes (1), a varint length + bytes (2) or 4 bytes (5). Only what
  ``tensorflow/core/example/{example,feature}.proto`` uses is decoded::

      Example         { Features features = 1; }
      SequenceExample { Features context = 1; FeatureLists feature_lists = 2; }
      Features        { map<string, Feature> feature = 1; }        # map entry: key = 1, value = 2
      FeatureLists    { map<string, FeatureList> feature_list = 1; }
      FeatureList     { repeated Feature feature = 1; }
      Feature         { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
      BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1 [packed]; }
      Int64List { repeated int64 value = 1 [packed]; }

  Decoded features are plain lists (``list[bytes]``, ``list[float]``, ``list[int]``); the writers exist
  for tests and conversions.

CRC-32C uses the ``crc32c`` package when it is installed; otherwise a table-driven implementation that
processes whole blocks with numpy (CRC is linear over GF(2), so each byte's contribution at a given
distance from the end of a block is a table lookup and a block is one XOR-reduction).
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import atomic_write

__all__ = [
    "crc32c",
    "masked_crc32c",
    "read_records",
    "count_records",
    "frame_record",
    "write_records",
    "parse_example",
    "parse_sequence_example",
    "encode_example",
    "encode_sequence_example",
    "FeatureValues",
]

FeatureValues = list  # list[bytes] | list[float] | list[int]

_MASK_DELTA = 0xA282EAD8
_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
_BLOCK = 1024  # bytes per numpy block: the per-distance tables are _BLOCK x 256 uint32 (1 MiB)


# --- CRC-32C -------------------------------------------------------------------------------------
def _byte_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (_POLY if crc & 1 else 0)
        table[i] = crc
    return table


_TABLE = _byte_table()
_TABLE_LIST = [int(v) for v in _TABLE]


@lru_cache(maxsize=1)
def _distance_tables() -> np.ndarray:
    """``T[d][b]``: what byte ``b`` contributes to the CRC state when ``d`` more bytes follow it.

    One byte step is ``crc' = A(crc) ^ TABLE[b]`` with ``A(c) = TABLE[c & 0xff] ^ (c >> 8)`` linear, so
    ``T[0] = TABLE`` and ``T[d + 1] = A(T[d])`` (applied to all 256 entries at once).
    """
    tables = np.empty((_BLOCK, 256), dtype=np.uint32)
    tables[0] = _TABLE
    for d in range(1, _BLOCK):
        prev = tables[d - 1]
        tables[d] = _TABLE[prev & 0xFF] ^ (prev >> 8)
    return tables


def _crc_update_loop(crc: int, data: bytes) -> int:
    table = _TABLE_LIST
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _crc_update_blocks(crc: int, data: bytes) -> int:
    """The raw (un-inverted) CRC state after ``data``, one numpy XOR-reduction per block."""
    tables = _distance_tables()
    view = np.frombuffer(data, dtype=np.uint8)
    for start in range(0, len(view), _BLOCK):
        block = view[start:start + _BLOCK]
        n = len(block)
        if n < 4:
            return _crc_update_loop(crc, bytes(block))
        rows = tables[n - 1::-1] if n == _BLOCK else tables[n - 1::-1][:n]
        contribution = np.bitwise_xor.reduce(rows[np.arange(n), block])
        # The incoming state byte k (k = 0 lowest) acts like a data byte at position k of the block.
        advanced = 0
        for k in range(4):
            advanced ^= int(tables[n - 1 - k][(crc >> (8 * k)) & 0xFF])
        crc = advanced ^ int(contribution)
    return crc


def _crc32c_python(data: bytes, value: int = 0) -> int:
    crc = (value ^ 0xFFFFFFFF) & 0xFFFFFFFF
    crc = _crc_update_loop(crc, data) if len(data) < 64 else _crc_update_blocks(crc, data)
    return crc ^ 0xFFFFFFFF


def _pick_crc32c():
    try:  # optional C implementation (pip install crc32c); same results, much faster on big files
        import crc32c as _crc32c_module

        return lambda data, value=0: _crc32c_module.crc32c(data, value)
    except ImportError:
        return _crc32c_python


_crc32c_impl = _pick_crc32c()


def crc32c(data: bytes, value: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from the CRC ``value`` of preceding bytes."""
    return _crc32c_impl(bytes(data), value)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits and add 0xa282ead8 (so CRCs of CRCs differ)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# --- TFRecord framing ----------------------------------------------------------------------------
def _open_binary(path: Path):
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_records(path: str | Path, verify: bool = True) -> Iterator[bytes]:
    """The records of a TFRecord file (plain or GZIP-compressed), in order.

    A short header, a short record or (with ``verify``) a CRC mismatch raises :class:`DataError` naming
    the file, the record number and its byte offset.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: TFRecord file not found")
    try:
        handle = _open_binary(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot open TFRecord file ({exc.strerror or exc})") from None
    with handle:
        index, offset = 0, 0
        while True:
            try:
                header = handle.read(12)
            except (OSError, EOFError) as exc:  # e.g. a damaged gzip stream
                raise DataError(f"{path}: record {index} at byte {offset}: unreadable ({exc})") from None
            if not header:
                return
            if len(header) < 12:
                raise DataError(f"{path}: record {index} at byte {offset}: truncated header "
                                f"({len(header)} of 12 bytes); the file is incomplete")
            length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
            if verify and masked_crc32c(length_bytes) != length_crc:
                raise DataError(f"{path}: record {index} at byte {offset}: length CRC mismatch (corrupt file)")
            (length,) = struct.unpack("<Q", length_bytes)
            try:
                body = handle.read(length + 4)
            except (OSError, EOFError) as exc:
                raise DataError(f"{path}: record {index} at byte {offset}: unreadable ({exc})") from None
            if len(body) < length + 4:
                raise DataError(f"{path}: record {index} at byte {offset}: truncated record "
                                f"({len(body)} of {length + 4} bytes); the file is incomplete")
            data = body[:length]
            if verify and masked_crc32c(data) != struct.unpack("<I", body[length:])[0]:
                raise DataError(f"{path}: record {index} at byte {offset}: data CRC mismatch (corrupt file)")
            yield data
            index += 1
            offset += 12 + length + 4


def count_records(path: str | Path) -> int:
    """Number of records in a TFRecord file, reading only the 12-byte headers (length CRCs verified).

    A file that ends inside a record is a DataError, as in :func:`read_records`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: TFRecord file not found")
    with _open_binary(path) as handle:
        count = offset = 0
        while True:
            header = handle.read(12)
            if not header:
                return count
            if len(header) < 12:
                raise DataError(f"{path}: record {count} at byte {offset}: truncated header; the file is incomplete")
            if masked_crc32c(header[:8]) != struct.unpack("<I", header[8:])[0]:
                raise DataError(f"{path}: record {count} at byte {offset}: length CRC mismatch (corrupt file)")
            (length,) = struct.unpack("<Q", header[:8])
            offset += 12 + length + 4
            handle.seek(offset)
            if handle.tell() != offset or (not isinstance(handle, gzip.GzipFile) and offset > path.stat().st_size):
                raise DataError(f"{path}: record {count}: truncated record; the file is incomplete")
            count += 1


def frame_record(data: bytes) -> bytes:
    """One record in TFRecord framing (length, its masked CRC, data, its masked CRC)."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def write_records(path: str | Path, records: Iterable[bytes]) -> Path:
    """Write ``records`` as an uncompressed TFRecord file (atomically: temp file, then rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            for record in records:
                handle.write(frame_record(bytes(record)))

    return atomic_write(path, write)


# --- protobuf wire format: decoding --------------------------------------------------------------
class _WireError(ValueError):
    """Malformed protobuf bytes (turned into a DataError naming the file/record by the caller)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _WireError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field_number, wire_type, value) for each field: an int for types 0/1/5, bytes for type 2."""
    pos, end = 0, len(buf)
    while pos < end:
        # Keys and lengths are almost always single-byte varints: skip the general decoder for them
        # (this loop is most of the cost of reading AudioSet TFRecords).
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size = buf[pos] if pos < end else 0x80
            if size < 0x80:
                pos += 1
            else:
                size, pos = _varint(buf, pos)
            if pos + size > end:
                raise _WireError(f"field {number}: length {size} runs past the end of the message")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise _WireError(f"field {number}: truncated fixed-width value")
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        else:  # 3/4 are deprecated groups, 6/7 do not exist
            raise _WireError(f"field {number}: unsupported wire type {wire}")
        yield number, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_feature(buf: bytes) -> FeatureValues:
    values: list = []
    for number, wire, payload in _fields(buf):
        if wire != 2 or number not in (1, 2, 3):
            continue  # unknown fields are skipped, as protobuf parsers do
        for inner_number, inner_wire, item in _fields(payload):
            if inner_number != 1:
                continue
            if number == 1:  # BytesList
                values.append(bytes(item))
            elif number == 2:  # FloatList: packed (wire 2) or one fixed32 per value (wire 5)
                if inner_wire == 2:
                    values.extend(float(v) for v in np.frombuffer(item, dtype="<f4"))
                else:
                    values.append(struct.unpack("<f", struct.pack("<I", item))[0])
            else:  # Int64List: packed varints (wire 2) or one varint per value (wire 0)
                if inner_wire == 2:
                    pos = 0
                    while pos < len(item):
                        raw, pos = _varint(item, pos)
                        values.append(_signed64(raw))
                else:
                    values.append(_signed64(item))
    return values


def _parse_map(buf: bytes, parse_value) -> dict[str, object]:
    """A ``map<string, V>`` field: repeated entries of (key = 1, value = 2)."""
    out: dict[str, object] = {}
    for number, wire, entry in _fields(buf):
        if number != 1 or wire != 2:
            continue
        key, value = "", b""
        for entry_number, entry_wire, item in _fields(entry):
            if entry_number == 1 and entry_wire == 2:
                key = bytes(item).decode("utf-8")
            elif entry_number == 2 and entry_wire == 2:
                value = item
        out[key] = parse_value(value)
    return out


def _parse_feature_list(buf: bytes) -> list[FeatureValues]:
    return [_parse_feature(item) for number, wire, item in _fields(buf) if number == 1 and wire == 2]


def _parse_features(buf: bytes) -> dict[str, FeatureValues]:
    return _parse_map(buf, _parse_feature)  # type: ignore[return-value]


def parse_example(data: bytes) -> dict[str, FeatureValues]:
    """A serialized ``tf.train.Example`` -> ``{feature name: values}``.

    Raises ``ValueError`` on malformed bytes (:func:`read_records` callers add the file and record).
    """
    features: dict[str, FeatureValues] = {}
    for number, wire, payload in _fields(data):
        if number == 1 and wire == 2:
            features.update(_parse_features(payload))
    return features


def parse_sequence_example(data: bytes) -> tuple[dict[str, FeatureValues], dict[str, list[FeatureValues]]]:
    """A serialized ``tf.train.SequenceExample`` -> (context features, feature lists).

    ``feature_lists[name]`` holds one value list per time step. Raises ``ValueError`` on malformed bytes.
    """
    context: dict[str, FeatureValues] = {}
    lists: dict[str, list[FeatureValues]] = {}
    for number, wire, payload in _fields(data):
        if wire != 2:
            continue
        if number == 1:
            context.update(_parse_features(payload))
        elif number == 2:
            lists.update(_parse_map(payload, _parse_feature_list))  # type: ignore[arg-type]
    return context, lists


# --- protobuf wire format: encoding (tests, conversions) -----------------------------------------
def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 -> two's complement, 10 bytes (as protobuf does)
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint((number << 3) | 2) + _encode_varint(len(payload)) + payload


def _feature_kind(values: Sequence) -> int:
    """1 = bytes_list, 2 = float_list, 3 = int64_list, from the values' Python/numpy types."""
    array = np.asarray(values) if not isinstance(values, (bytes, str)) else None
    if array is None:
        raise DataError(f"feature values must be a list, got a single {type(values).__name__}")
    if array.size == 0 or array.dtype.kind in "SUO":
        return 1
    if array.dtype.kind == "f":
        return 2
    if array.dtype.kind in "iub":
        return 3
    raise DataError(f"feature values of dtype {array.dtype}: expected bytes/str, float or int values")


def _encode_feature(values: Sequence) -> bytes:
    kind = _feature_kind(values)
    if kind == 1:
        items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
        inner = b"".join(_length_delimited(1, item) for item in items)
    elif kind == 2:
        inner = _length_delimited(1, np.asarray(values, dtype="<f4").tobytes()) if len(values) else b""
    else:
        packed = b"".join(_encode_varint(int(v)) for v in values)
        inner = _length_delimited(1, packed) if len(values) else b""
    return _length_delimited(kind, inner)


def _encode_map(entries: Mapping[str, bytes]) -> bytes:
    return b"".join(
        _length_delimited(1, _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, value))
        for key, value in entries.items()
    )


def _encode_features(features: Mapping[str, Sequence]) -> bytes:
    return _encode_map({name: _encode_feature(values) for name, values in features.items()})


def encode_example(features: Mapping[str, Sequence]) -> bytes:
    """Serialize ``{name: values}`` as a ``tf.train.Example`` (value types: bytes/str, float, int)."""
    return _length_delimited(1, _encode_features(features))


def encode_sequence_example(context: Mapping[str, Sequence], feature_lists: Mapping[str, Sequence[Sequence]]) -> bytes:
    """Serialize a ``tf.train.SequenceExample`` (context features + one value list per time step)."""
    lists = {
        name: b"".join(_length_delimited(1, _encode_feature(step)) for step in steps)
        for name, steps in feature_lists.items()
    }
    return _length_delimited(1, _encode_features(context)) + _length_delimited(2, _encode_map(lists))
