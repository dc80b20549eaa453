"""Binary envelope for columnar batches on Kafka (ticks, bars).

A batch is one numpy structured array plus a small header. On the wire::

    b"SF" | version:uint8 | kind:uint8 | key_len:uint16 | key (utf-8) | n:uint32 | rows

``rows`` are the array's raw little-endian bytes in the dtype that ``kind``
names. The dtype is fixed per kind (and per version), so decoding is one
``np.frombuffer`` call: no per-row parsing, no schema lookup. A payload that
does not fit the header, kind or length raises :class:`BatchFormatError`.
"""

from __future__ import annotations

import struct

import numpy as np

MAGIC = b"SF"
VERSION = 2  # 2: ticks carry last_trade_ts, priced ticks and bars the freshness fields
_HEADER = struct.Struct("<2sBBH")
_COUNT = struct.Struct("<I")


class BatchFormatError(ValueError):
    """A Kafka payload is not a valid strikeflow columnar batch."""


def encode_batch(kind: int, key: str, rows: np.ndarray, dtype: np.dtype) -> bytes:
    """Serialise ``rows`` (cast to ``dtype``) with its header; ``key`` is e.g. the underlying."""
    if rows.dtype != dtype:
        raise BatchFormatError(f"batch kind {kind} needs dtype {dtype}, got {rows.dtype}")
    key_bytes = key.encode()
    body = np.ascontiguousarray(rows).tobytes()
    return b"".join(
        (_HEADER.pack(MAGIC, VERSION, kind, len(key_bytes)), key_bytes, _COUNT.pack(len(rows)), body)
    )


def _decode_at(payload: bytes, start: int, dtypes: dict[int, np.dtype]) -> tuple[int, str, np.ndarray, int]:
    """Decode the batch at ``start``; also return the offset just past it."""
    if len(payload) - start < _HEADER.size + _COUNT.size:
        raise BatchFormatError(f"batch too short ({len(payload) - start} bytes)")
    magic, version, kind, key_len = _HEADER.unpack_from(payload, start)
    if magic != MAGIC or version != VERSION:
        raise BatchFormatError(f"not a strikeflow v{VERSION} batch (magic {magic!r}, version {version})")
    dtype = dtypes.get(kind)
    if dtype is None:
        raise BatchFormatError(f"unexpected batch kind {kind}")
    offset = start + _HEADER.size
    key = payload[offset : offset + key_len]
    offset += key_len
    if len(key) != key_len or len(payload) < offset + _COUNT.size:
        raise BatchFormatError("batch header truncated")
    (count,) = _COUNT.unpack_from(payload, offset)
    offset += _COUNT.size
    end = offset + count * dtype.itemsize
    if len(payload) < end:
        raise BatchFormatError(
            f"batch says {count} rows of {dtype.itemsize} bytes, has {len(payload) - offset} bytes"
        )
    try:
        key_text = key.decode()
    except UnicodeDecodeError as exc:
        raise BatchFormatError("batch key is not utf-8") from exc
    return kind, key_text, np.frombuffer(payload, dtype=dtype, count=count, offset=offset), end


def decode_batch(payload: bytes, dtypes: dict[int, np.dtype]) -> tuple[int, str, np.ndarray]:
    """Return ``(kind, key, rows)``; ``rows`` is a read-only view into ``payload``."""
    kind, key, rows, end = _decode_at(payload, 0, dtypes)
    if end != len(payload):
        raise BatchFormatError(f"batch says {len(rows)} rows, payload has {len(payload) - end} bytes more")
    return kind, key, rows


def decode_batches(payload: bytes, dtypes: dict[int, np.dtype]) -> list[tuple[int, str, np.ndarray]]:
    """Decode a payload of several batches written back to back (one record, several arrays)."""
    out, offset = [], 0
    while offset < len(payload):
        kind, key, rows, offset = _decode_at(payload, offset, dtypes)
        out.append((kind, key, rows))
    return out
