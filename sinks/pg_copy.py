"""PostgreSQL binary COPY payloads straight from numpy columns (pure: bytes out, no I/O).

The format (PostgreSQL docs, "COPY", binary format): the signature ``PGCOPY\\n\\377\\r\\n\\0``, two
int32 (flags, header extension length), then per row an int16 field count and per field an int32
length followed by the value in network byte order, and an int16 -1 trailer. Every column here is
fixed-width (bigint, integer, float8), so the whole payload is one structured numpy array: no
per-row Python, which is where a ``copy_records_to_table`` of tuples spends most of its time.
NaN floats travel as NaN (the INSERT .. SELECT turns them into NULL).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
_WIRE = {"bigint": ">i8", "float8": ">f8", "integer": ">i4"}


def binary_copy(rows: np.ndarray, columns: list[tuple[str, str]],
                extra: Mapping[str, np.ndarray] | None = None) -> bytes:
    """The binary COPY payload of ``rows`` (a structured array) for ``columns``: (field name, SQL type),
    in the staging table's column order; SQL types bigint, integer or float8. A column named in ``extra``
    takes its values from there (an array as long as ``rows``) instead of from a field of ``rows``."""
    unknown = [sqltype for _, sqltype in columns if sqltype not in _WIRE]
    if unknown:
        raise ValueError(f"binary_copy handles bigint, integer and float8 columns, not {', '.join(unknown)}")
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for i, (_, sqltype) in enumerate(columns):
        fields += [(f"len{i}", ">i4"), (f"val{i}", _WIRE[sqltype])]
    out = np.empty(len(rows), np.dtype(fields))
    out["count"] = len(columns)
    for i, (name, sqltype) in enumerate(columns):
        out[f"len{i}"] = np.dtype(_WIRE[sqltype]).itemsize
        out[f"val{i}"] = extra[name] if extra and name in extra else rows[name]
    return b"".join((_HEADER, out.tobytes(), _TRAILER))
