"""The payload codecs, one small class each behind one interface, and the registry the
container picks them from by the name its manifest stores.

Each codec says whether it can hold a tensor (``encode`` returns None when not), how many bytes
a payload of ``count`` elements decodes to (checked before decoding, so that a crafted manifest
cannot make a decoder allocate more than its span justifies), and decodes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import TensorProto

from ..errors import BitstreamError
from .classed import decode_classed, encode_classed
from .entropy import decode_symbols, encode_symbols
from .floatcodec import decode_array, encode_array
from .nibbles import pack_nibbles, unpack_nibbles

if TYPE_CHECKING:  # the manifest checks span codec names against this module's registry
    from .manifest import SpanEntry

NUMPY_OF_ONNX = {
    TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64,
    TensorProto.BFLOAT16: np.uint16, TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8,
    TensorProto.INT16: np.int16, TensorProto.UINT16: np.uint16, TensorProto.INT32: np.int32,
    TensorProto.UINT32: np.uint32, TensorProto.INT64: np.int64, TensorProto.UINT64: np.uint64,
}
NIBBLE_TYPES = {TensorProto.INT4: True, TensorProto.UINT4: False}  # value: signed
#: int16 tensors whose values span less than this are symbols (weights quantized at 9..12 bits
#: span at most 4095) and go to the classed coder like int8 ones; wider ones are coded as arrays.
MAX_CLASSED_INT16_SPAN = 1 << 13


def _values(raw: bytes, elem_type: int, count: int) -> np.ndarray | None:
    """The tensor's elements (int4 unpacked), or None when ``raw`` cannot be ``count`` of them."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    if elem_type in NIBBLE_TYPES:
        return unpack_nibbles(buf, count, NIBBLE_TYPES[elem_type]) if len(raw) == (count + 1) // 2 else None
    dtype = NUMPY_OF_ONNX.get(elem_type)
    if dtype is None or len(raw) % np.dtype(dtype).itemsize:
        return None
    return buf.view(dtype)


def _plain_bytes(elem_type: int, count: int) -> int | None:
    dtype = NUMPY_OF_ONNX.get(elem_type)
    return None if dtype is None else count * np.dtype(dtype).itemsize


class PayloadCodec:
    name = ""

    def encode(self, values: np.ndarray, elem_type: int, count: int, dims: tuple[int, ...]) -> bytes | None:
        raise NotImplementedError

    def decoded_bytes(self, elem_type: int, count: int) -> int | None:
        """Bytes ``count`` elements decode to (None: the codec cannot hold that element type)."""
        raise NotImplementedError

    def decode(self, span: "SpanEntry", coded: bytes) -> bytes:
        raise NotImplementedError


class ClassedCodec(PayloadCodec):
    """Small integers (int4, 1-byte, symbol-range int16) under row/column contexts (``classed``)."""

    name = "classed"

    def encode(self, values, elem_type, count, dims):
        if not dims or values.size != count:
            return None
        if elem_type in NIBBLE_TYPES or values.dtype.itemsize == 1 or (
                elem_type == TensorProto.INT16 and values.size
                and int(values.max()) - int(values.min()) < MAX_CLASSED_INT16_SPAN):
            return encode_classed(values.reshape(dims))
        return None

    def decoded_bytes(self, elem_type, count):
        return (count + 1) // 2 if elem_type in NIBBLE_TYPES else _plain_bytes(elem_type, count)

    def decode(self, span, coded):
        if span.shape is None:
            raise BitstreamError("bitstream is corrupted: a classed tensor has no usable shape")
        if span.elem_type in NIBBLE_TYPES:
            return pack_nibbles(decode_classed(coded, span.shape, np.int8)).tobytes()
        return decode_classed(coded, span.shape, NUMPY_OF_ONNX[span.elem_type]).tobytes()


class NibblesCodec(PayloadCodec):
    """int4 without a shape, order 0."""

    name = "nibbles"

    def encode(self, values, elem_type, count, dims):
        return encode_symbols(values) if elem_type in NIBBLE_TYPES and not dims else None

    def decoded_bytes(self, elem_type, count):
        return (count + 1) // 2 if elem_type in NIBBLE_TYPES else None

    def decode(self, span, coded):
        return pack_nibbles(decode_symbols(coded, span.count)).tobytes()


class SymbolsCodec(PayloadCodec):
    """1-byte integers without a usable shape, order 0."""

    name = "symbols"

    def encode(self, values, elem_type, count, dims):
        return encode_symbols(values) if elem_type not in NIBBLE_TYPES and values.dtype.itemsize == 1 else None

    def decoded_bytes(self, elem_type, count):
        size = _plain_bytes(elem_type, count)
        return size if size is not None and np.dtype(NUMPY_OF_ONNX[elem_type]).itemsize == 1 else None

    def decode(self, span, coded):
        return decode_symbols(coded, span.count).astype(NUMPY_OF_ONNX[span.elem_type]).tobytes()


class ArrayCodec(PayloadCodec):
    """Any other numeric tensor, losslessly in byte planes (``floatcodec``); its own header says
    its size."""

    name = "array"

    def encode(self, values, elem_type, count, dims):
        return encode_array(values) if elem_type not in NIBBLE_TYPES else None

    def decoded_bytes(self, elem_type, count):
        return None

    def decode(self, span, coded):
        return np.ascontiguousarray(decode_array(coded, span.length)).tobytes()


CODECS: dict[str, PayloadCodec] = {c.name: c for c in (ClassedCodec(), NibblesCodec(), SymbolsCodec(), ArrayCodec())}
#: The order the writer tries them in: the first that holds a tensor codes it.
_PREFERENCE = ("classed", "nibbles", "symbols", "array")


def get_codec(name: str) -> PayloadCodec:
    """The codec a manifest names (the manifest's check has already refused unknown names)."""
    codec = CODECS.get(name)
    if codec is None:
        raise BitstreamError(f"unknown payload codec {name!r} in bitstream")
    return codec


def encode_payload(raw: bytes, elem_type: int, count: int, dims: tuple[int, ...]) -> tuple[str, bytes] | None:
    """(codec name, coded bytes) of one tensor's raw data, or None when no codec applies."""
    values = _values(raw, elem_type, count)
    if values is None:
        return None
    for name in _PREFERENCE:
        coded = CODECS[name].encode(values, elem_type, count, dims)
        if coded is not None:
            return name, coded
    return None


def decode_payload(span: "SpanEntry", coded: bytes) -> bytes:
    """One payload's bytes; its element count is checked against its length before decoding."""
    codec = get_codec(span.codec)
    if codec.name != "array" and codec.decoded_bytes(span.elem_type, span.count) != span.length:
        raise BitstreamError(f"bitstream is corrupted: a {span.codec} span of {span.count} elements "
                             f"cannot fill {span.length} bytes")
    return codec.decode(span, coded)
