"""msgpack with numpy arrays: the wire format of openpi's websocket policy protocol.

An array travels as the map {b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str,
b"shape": [..]} and a numpy scalar as {b"__npgeneric__": True, b"data": value, b"dtype": ..},
exactly as `openpi_client.msgpack_numpy` writes them, so either side can be ours or openpi's.
Only plain numeric, boolean and string dtypes are accepted (object, void and complex arrays are
refused), and nothing on this path can run code (msgpack has no pickle).
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

# Kinds numpy's dtype.kind reports: b(ool), i(nt), u(int), f(loat), S (bytes), U (unicode).
_ALLOWED_KINDS = frozenset("biufSU")


class CodecError(ValueError):
    """A message that is not msgpack, or an array the protocol does not carry."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic) and obj.dtype.kind not in _ALLOWED_KINDS:
        raise CodecError(f"cannot send arrays of dtype {obj.dtype}")
    if isinstance(obj, np.ndarray):
        data = np.ascontiguousarray(obj)
        return {
            b"__ndarray__": True,
            b"data": data.tobytes(),
            b"dtype": data.dtype.str,
            b"shape": data.shape,
        }
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _decode(obj: dict[Any, Any]) -> Any:
    if b"__ndarray__" not in obj and b"__npgeneric__" not in obj:
        return obj
    try:
        dtype = np.dtype(obj[b"dtype"])
    except (KeyError, TypeError) as e:
        raise CodecError(f"malformed array in message: bad dtype ({e})") from e
    if dtype.kind not in _ALLOWED_KINDS:
        raise CodecError(f"arrays of dtype {dtype} are not accepted")
    try:
        if b"__npgeneric__" in obj:
            return dtype.type(obj[b"data"])
        # A read-only view of the message bytes: no copy of large images.
        return np.ndarray(buffer=obj[b"data"], dtype=dtype, shape=tuple(obj[b"shape"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CodecError(f"malformed array in message: {e}") from e


def packb(obj: Any) -> bytes:
    """Python/numpy data (dicts, lists, str, numbers, arrays) -> one binary message."""
    return msgpack.packb(obj, default=_encode)


def unpackb(data: bytes) -> Any:
    """One binary message -> Python data with numpy arrays (read-only); CodecError if malformed."""
    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise CodecError(f"message is not valid msgpack ({detail})") from e
