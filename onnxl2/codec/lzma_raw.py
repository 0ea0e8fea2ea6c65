"""lzma with a dictionary sized to the data, and one header byte.

The presets' 64 MiB dictionary costs ~0.1 s to set up and ~700 MB of encoder memory whatever the
input; sizing it to the data keeps small tensors fast and peak memory near the model's size.
Stream: u8 log2(dictionary size) | raw LZMA2.

Decoding is bounded: the caller says how many bytes the stream may inflate to, a stream that
would inflate further is refused before the excess is produced, and so is a dictionary larger
than the encoder would have chosen for that many bytes (the dictionary is the decoder's own
allocation).
"""
from __future__ import annotations

import lzma

_MIN_LOG, _MAX_LOG = 12, 26


def _filters(log_dict: int) -> list[dict]:
    return [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << log_dict}]


def _log_dict(size: int) -> int:
    return min(_MAX_LOG, max(_MIN_LOG, (max(1, size) - 1).bit_length()))


def compress(data: bytes) -> bytes:
    log_dict = _log_dict(len(data))
    return bytes([log_dict]) + lzma.compress(data, format=lzma.FORMAT_RAW, filters=_filters(log_dict))


def decompress(data: bytes, max_length: int) -> bytes:
    """The inflated bytes, at most ``max_length`` of them.

    Raises lzma.LZMAError or ValueError on damaged input, on a stream that inflates past
    ``max_length`` and on one that does not end.
    """
    if not data or not _MIN_LOG <= data[0] <= _MAX_LOG:
        raise ValueError("bad lzma header")
    if data[0] > _log_dict(max_length):
        raise ValueError("lzma dictionary is larger than the data it may hold")
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_filters(data[0]))
    out = decoder.decompress(bytes(data[1:]), max_length=max_length + 1)
    if len(out) > max_length:
        raise ValueError(f"lzma stream inflates past the {max_length} bytes it may hold")
    if not decoder.eof:
        raise ValueError("lzma stream is truncated")
    if decoder.unused_data:
        raise ValueError("trailing bytes after the lzma stream")
    return out
