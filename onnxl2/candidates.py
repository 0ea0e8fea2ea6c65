"""The ways to store one weight, each with the exact number of bytes it adds to the bitstream.

A candidate's size is computed with the very functions the container uses to code it (symbols
and scales through the rANS coder, float tensors through the byte-plane coder), never from a
nominal bit-width: a 4-bit layer whose symbols have 2.6 bits of entropy costs 2.6 bits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codec.container import stored_size
from .codec.entropy import encode_symbols
from .codec.floatcodec import encode_array
from .transforms.quantize import QuantizedWeight, quantize_per_channel

#: Bit choices a user can ask for: 2..8 are integers per channel, 16 is float16, 32 keeps float32.
ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)
DEFAULT_BITS_CHOICES = (2, 3, 4, 5, 6, 8, 16)


@dataclass
class Candidate:
    """One way to store a weight and what it costs in bytes."""

    key: str
    bits: int
    coded_bytes: int
    original: np.ndarray
    quantized: QuantizedWeight | None = None

    @property
    def label(self) -> str:
        return {32: "float32", 16: "float16"}.get(self.bits, f"int{self.bits}")

    def values(self) -> np.ndarray:
        """The weight as the compressed model computes it (built on demand, to save memory)."""
        if self.bits == 32:
            return self.original
        if self.bits == 16:
            return self.original.astype(np.float16).astype(self.original.dtype)
        return self.quantized.reconstruct().astype(self.original.dtype)


def integer_payload_bytes(q: QuantizedWeight) -> int:
    """Bytes of the integer tensor (int4 container up to 4 bits, int8 above) and its scales."""
    raw = (q.symbols.size + 1) // 2 if q.bits <= 4 else q.symbols.size
    return (stored_size(raw, len(encode_symbols(q.symbols)))
            + stored_size(q.scales.nbytes, len(encode_array(q.scales))))


def make_candidates(key: str, weight: np.ndarray, axis: int, bits_choices: tuple[int, ...],
                    always_float32: bool = True) -> list[Candidate]:
    """Every allowed way to store ``weight``; float32 (as it is) is among them unless a caller
    that fixes the choice says otherwise."""
    out = []
    for bits in sorted(set(bits_choices) | ({32} if always_float32 else set())):
        if bits == 32:
            out.append(Candidate(key, 32, stored_size(weight.nbytes, len(encode_array(weight))), weight))
        elif bits == 16:
            if weight.dtype == np.float16:
                continue
            half = weight.astype(np.float16)
            out.append(Candidate(key, 16, stored_size(half.nbytes, len(encode_array(half))), weight))
        else:
            q = quantize_per_channel(weight, bits, axis, key=key)
            out.append(Candidate(key, bits, integer_payload_bytes(q), weight, q))
    return out
