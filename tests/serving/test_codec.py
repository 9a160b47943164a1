"""The wire format: byte-compatible with openpi-client's msgpack_numpy, refusing what it must."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from openpi_client import msgpack_numpy

from atlas.serving import codec

MESSAGE = {
    "images": {"cam": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)},
    "state": np.linspace(-1, 1, 8, dtype=np.float32),
    "scalar": np.float64(2.5),
    "flag": np.bool_(True),
    "text": "pick up the bowl",
    "nested": [1, 2.0, None],
}


def _assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    else:
        assert a == b and type(np.asarray(a).dtype) is type(np.asarray(b).dtype)


def test_same_bytes_as_openpi_client() -> None:
    assert codec.packb(MESSAGE) == msgpack_numpy.packb(MESSAGE)


@pytest.mark.parametrize("direction", ["ours->openpi", "openpi->ours"])
def test_round_trip_with_openpi_client(direction: str) -> None:
    if direction == "ours->openpi":
        out = msgpack_numpy.unpackb(codec.packb(MESSAGE))
    else:
        out = codec.unpackb(msgpack_numpy.packb(MESSAGE))
    _assert_same(MESSAGE, out)


def test_non_contiguous_arrays_travel_as_their_values() -> None:
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)[::-1, ::2]
    assert np.array_equal(codec.unpackb(codec.packb(image)), image)


def test_object_and_complex_arrays_are_refused() -> None:
    with pytest.raises(codec.CodecError, match="dtype object"):
        codec.packb(np.array([{}], dtype=object))
    forged = msgpack.packb(
        {"x": {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}}
    )
    with pytest.raises(codec.CodecError, match="dtype object"):
        codec.unpackb(forged)
    with pytest.raises(codec.CodecError, match="complex"):
        codec.unpackb(msgpack.packb({b"__npgeneric__": True, b"data": 1, b"dtype": "<c8"}))


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1\xc1",  # a reserved msgpack byte
        b"\x93\x01",  # an array of 3 with 1 element
        msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 3, b"dtype": "<f4", b"shape": [2]}),
        msgpack.packb({b"__ndarray__": True, b"dtype": "not a dtype"}),
    ],
)
def test_malformed_messages_raise_codec_error(data: bytes) -> None:
    with pytest.raises(codec.CodecError):
        codec.unpackb(data)
