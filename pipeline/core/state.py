"""Explicit state: what a stateful core object hands over for a checkpoint, and the bytes it is stored as.

Every stateful piece of an engine (``pipeline.core.engine``) has ``to_state() -> State`` and a
``from_state(state, ...)`` class method. A :data:`State` is a flat mapping of names to plain values only:
numpy arrays (any dtype, structured ones included) and scalars (int, float, str, bool, None). Arrays may be
views of the live state, valid until it next changes (a snapshot encodes them at once); ``restore`` copies. A piece
that holds others prefixes their names (:func:`nest`, :func:`sub`); a list of arrays is stored as one array
and its lengths (:func:`ragged`, :func:`unragged`). No live class is ever serialised, so a checkpoint
does not depend on the code's class layout, only on the names and the format number below.

Bytes (:func:`encode_state`, :func:`decode_state`): ``b"SFST"`` | format:uint16 BE | header length:uint32 BE
| a JSON header (each array's name, numpy dtype description, shape, offset and size; every scalar) | the
arrays' raw bytes, back to back. Nothing is executed or unpickled on the way back (dtype descriptions are
parsed by numpy's ``.npy`` rules): a stored state cannot run code. Uncompressed and without a zip container
because a snapshot is on the live path (one copy of each array), the arrays are mostly numbers that compress
poorly, and the bytes stay in our own database.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np

Scalar = Union[int, float, str, bool, None]
State = dict[str, Any]  # name -> np.ndarray | Scalar

MAGIC = b"SFST"
_HEADER = struct.Struct(">4sH")
_LENGTH = struct.Struct(">I")


class StateError(ValueError):
    """State bytes that cannot be read here (not ours, another format, corrupt, a missing or mistyped field)."""


def nest(prefix: str, state: Mapping[str, Any]) -> State:
    """``state`` with every name under ``prefix/``."""
    return {f"{prefix}/{name}": value for name, value in state.items()}


def sub(state: Mapping[str, Any], prefix: str) -> State:
    """The names under ``prefix/``, without the prefix (the inverse of :func:`nest`)."""
    start = prefix + "/"
    return {name[len(start):]: value for name, value in state.items() if name.startswith(start)}


def prefixes(state: Mapping[str, Any]) -> list[str]:
    """The first path components of the names, in order of first appearance."""
    return list(dict.fromkeys(name.split("/", 1)[0] for name in state if "/" in name))


def ragged(arrays: Sequence[np.ndarray], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """A list of arrays of one dtype as (all rows concatenated, the length of each)."""
    lengths = np.array([len(a) for a in arrays], np.int64)
    rows = np.concatenate(arrays) if arrays else np.empty(0, dtype)
    return rows.astype(dtype, copy=False), lengths


def unragged(rows: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """The inverse of :func:`ragged` (each part a copy)."""
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return [rows[lo:hi].copy() for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]


def field(state: Mapping[str, Any], name: str) -> Any:
    """``state[name]``; a missing name is a :class:`StateError` naming it."""
    try:
        return state[name]
    except KeyError:
        raise StateError(f"state has no {name!r}") from None


def optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def encode_state(state: Mapping[str, Any], fmt: int) -> bytes:
    """The bytes of ``state`` (format number ``fmt``: the caller's layout version)."""
    arrays: list[dict[str, Any]] = []
    buffers: list[memoryview] = []
    scalars: dict[str, Scalar] = {}
    offset = 0
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError(f"state field {name!r} holds Python objects ({value.dtype}): not plain data")
            data = np.ascontiguousarray(value)
            arrays.append({"name": name, "dtype": np.lib.format.dtype_to_descr(data.dtype), "shape": list(data.shape),
                           "offset": offset, "nbytes": data.nbytes})
            buffers.append(memoryview(data).cast("B") if data.nbytes else memoryview(b""))
            offset += data.nbytes
        elif value is None or isinstance(value, (bool, str)):
            scalars[name] = value
        elif isinstance(value, (int, np.integer)):
            scalars[name] = int(value)
        elif isinstance(value, (float, np.floating)):
            scalars[name] = float(value)
        else:
            raise TypeError(f"state field {name!r} is a {type(value).__name__}, not an array or a scalar")
    header = json.dumps({"arrays": arrays, "scalars": scalars}, allow_nan=True).encode()
    return b"".join([_HEADER.pack(MAGIC, fmt), _LENGTH.pack(len(header)), header, *buffers])


def decode_state(blob: bytes) -> tuple[int, State]:
    """(format number, state) of bytes made by :func:`encode_state`; :class:`StateError` otherwise. The arrays
    are read-only views of ``blob``: whoever keeps one copies it."""
    if len(blob) < _HEADER.size + _LENGTH.size:
        raise StateError(f"state too short ({len(blob)} bytes)")
    magic, fmt = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise StateError("not a strikeflow state")
    try:
        (length,) = _LENGTH.unpack_from(blob, _HEADER.size)
        start = _HEADER.size + _LENGTH.size
        header = json.loads(bytes(blob[start:start + length]).decode())
        body = memoryview(blob)[start + length:]
        state: State = {}
        for array in header["arrays"]:
            dtype = np.lib.format.descr_to_dtype(array["dtype"])
            lo, n = int(array["offset"]), int(array["nbytes"])
            if lo + n > len(body):
                raise ValueError(f"{array['name']} runs past the end")
            state[array["name"]] = np.frombuffer(body[lo:lo + n], dtype=dtype).reshape(array["shape"])
        state.update(header["scalars"])
    except Exception as exc:  # noqa: BLE001 - any failure to read means: not restorable here
        raise StateError(f"state does not load ({type(exc).__name__}: {exc})") from None
    if any(value.dtype.hasobject for value in state.values() if isinstance(value, np.ndarray)):
        raise StateError("state holds Python objects")
    return fmt, state


__all__ = ["MAGIC", "Scalar", "State", "StateError", "decode_state", "encode_state", "field", "nest",
           "optional_int", "prefixes", "ragged", "sub", "unragged"]
