"""Order-0 rANS coding of integer symbols under an integer frequency table kept in the stream.

Why an integer table: the decoder must rebuild exactly the model the encoder used, on any
platform, from the stream alone. The table is the symbols' histogram scaled to a power-of-two
total 2**P (largest-remainder rounding, at least 1 per symbol that occurs); both sides hand those
same integers to constriction's ``Categorical(perfect=False)``, whose quantization of them is a
deterministic function of the input, and the arithmetic is constriction's ``AnsCoder``. P is
chosen per stream to minimise table bytes plus payload bits.

The table has two layouts and the smaller is written: *sparse* lists only the values that occur
(first value + gaps), so 9 distinct int8 values cost nothing for the 247 that never appear;
*dense* gives every slot of [min, max] a frequency (0 = absent) and saves the gap bytes when the
values are contiguous (float byte planes, 8-bit weights).

Stream::

    varint count                                   (0: nothing follows)
    varint distinct d >= 1 (sparse):  zigzag first | varint gaps (d - 1)
        d == 1: nothing follows (a constant array has no payload)
        else:   u8 P | varint (freq - 1) per value | uint32-le rANS words
    varint 0 (dense):  varint span S | zigzag min | u8 P | varint freq per slot | rANS words

Symbols are coded and decoded in chunks so no single constriction call allocates more than a
few MiB (a corrupted count must raise, not abort the interpreter on a failed Rust allocation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import constriction
import numpy as np

from .varint import decode_varints, encode_varints, unzigzag, varint_length, varint_lengths, zigzag

_PRECISIONS = (8, 10, 12, 14, 16, 18, 20)
#: More distinct values than this is not a job for an order-0 table (float bytes are <= 256).
MAX_ALPHABET = 1 << 16
#: Most symbols one stream holds: larger counts in a header mean corruption, not a tensor.
MAX_COUNT = 1 << 32
#: Value ranges up to this use bincount (fast) for the histogram, wider ones np.unique.
_BINCOUNT_SPAN = 1 << 20
#: Symbols per constriction call: bounds the temporary index arrays and Rust allocations.
_CHUNK = 1 << 22
_DENSE = 0


class CodecError(ValueError):
    """Coded data that cannot be decoded: truncated, corrupted, or not ours."""


@dataclass(frozen=True)
class _Table:
    """The coding model: slot values, integer frequencies per slot, and their total's log2."""

    values: np.ndarray  # int64 value of each slot (dense: low, low + 1, ...)
    freqs: np.ndarray  # int64 per slot, summing to 2**precision (dense slots may be 0)
    precision: int
    dense: bool

    @property
    def low(self) -> int:
        return int(self.values[0])


# --------------------------------------------------------------------------- histogram & table


def _as_flat_ints(symbols: np.ndarray) -> np.ndarray:
    flat = np.asarray(symbols).reshape(-1)
    if flat.dtype.kind not in "iub":
        raise TypeError(f"encode_symbols needs integers, got {flat.dtype}")
    if flat.size > MAX_COUNT:
        raise ValueError(f"{flat.size} symbols exceed one stream's limit of {MAX_COUNT}")
    if flat.dtype == np.uint64:  # same bits as int64 keeps all arithmetic in int64
        return flat.view(np.int64)
    return flat


def _chunks(n: int) -> range:
    return range(0, n, _CHUNK)


def _histogram(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values (sorted, int64) and their counts; chunked so no full int64 copy is made."""
    low, high = int(flat.min()), int(flat.max())
    if high - low < _BINCOUNT_SPAN:  # dense: bincount is much faster than unique
        counts = np.zeros(high - low + 1, dtype=np.int64)
        for i in _chunks(flat.size):
            part = flat[i:i + _CHUNK].astype(np.int64) - low
            counts += np.bincount(part, minlength=counts.size)
        present = np.flatnonzero(counts)
        return present + low, counts[present]
    values, counts = np.unique(flat.astype(np.int64), return_counts=True)
    return values, counts.astype(np.int64)


def quantize_frequencies(counts: np.ndarray, precision: int) -> np.ndarray:
    """Integer frequencies summing to 2**precision, each >= 1, close to ``counts`` in proportion.

    Largest-remainder rounding: floor the exact shares, then hand the missing units to the
    largest fractional parts; that is near the cross-entropy optimum for all but tiny counts.
    """
    return quantize_frequency_rows(np.asarray(counts)[None, :], np.array([precision]))[0]


def quantize_frequency_rows(counts: np.ndarray, precisions: np.ndarray) -> np.ndarray:
    """:func:`quantize_frequencies` of every row of ``counts`` (rows, n) at its own precision,
    in one pass: a stream's table tries several precisions, the adaptive coder rebuilds a model
    per block and the class search sizes every context of a split, and one call per row was
    most of what sizing candidates cost. A zero count is a value the row does not have: it gets
    no frequency and no share. Each row's result equals the one-row call on its present values
    (same float operations, a stable sort per row)."""
    counts = np.asarray(counts)
    present = counts > 0
    totals = np.left_shift(1, np.asarray(precisions, dtype=np.int64))
    exact = counts.astype(np.float64) * totals[:, None] / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    floor = np.floor(exact)
    freqs = np.where(present, np.maximum(1, floor), 0).astype(np.int64)
    short = totals - freqs.sum(axis=1)
    if (short > 0).any():  # hand the remainder to the largest fractional parts
        order = np.argsort(-np.where(present, exact - floor, -1.0), axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(counts.shape[1]), order.shape), axis=1)
        freqs += (rank < np.maximum(short, 0)[:, None]) & present
    for row in np.flatnonzero(short < 0):  # forced ones overshot: take from the largest that can give
        freqs[row] = _give_back(freqs[row], int(short[row]))
    return freqs


def _give_back(freqs: np.ndarray, short: int) -> np.ndarray:
    freqs = freqs.copy()
    while short < 0:
        order = np.argsort(-freqs, kind="stable")
        give = order[freqs[order] > 1][: -short]
        freqs[give] -= 1
        short += give.size
    return freqs


def _cost_bits(counts: np.ndarray, freqs: np.ndarray, precision: int) -> float:
    """Ideal payload bits of symbols with ``counts`` under ``freqs / 2**precision``."""
    return float(np.sum(counts * (precision - np.log2(freqs))))


def _table_costs(values: np.ndarray, counts: np.ndarray, freqs: np.ndarray, precisions: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``counts`` (rows, n; zero: the value is absent) over the sorted ``values``,
    coded with ``freqs`` at ``precisions``: the table's bytes in the sparse and in the dense
    layout (past the start value and the precision byte) and the payload's ideal bits."""
    m = counts > 0
    k = m.sum(axis=1)
    position = np.cumsum(m, axis=1)  # gaps between consecutive present values
    previous = np.maximum.accumulate(np.where(m, np.arange(counts.shape[1]), -1), axis=1)
    before = np.concatenate((np.full((counts.shape[0], 1), -1), previous[:, :-1]), axis=1)
    later = m & (position > 1)
    gaps = np.where(later, values[None, :] - values[np.maximum(before, 0)] - 1, 0)

    def masked_bytes(numbers: np.ndarray, where: np.ndarray) -> np.ndarray:
        # non-negative where it counts; int64 differences of extreme values wrap, and their
        # unsigned reading (what varint_lengths takes) is exact
        return np.where(where, varint_lengths(numbers.reshape(-1)).reshape(numbers.shape), 0).sum(axis=1)

    sparse = varint_lengths(k) + masked_bytes(gaps, later) + masked_bytes(freqs - 1, m)
    first = np.argmax(m, axis=1)
    last = counts.shape[1] - 1 - np.argmax(m[:, ::-1], axis=1)
    reach = (values[last] - values[first]).astype(np.uint64)  # exact, as above
    wide = reach >= MAX_ALPHABET
    span = np.where(wide, 0, reach).astype(np.int64) + 1
    dense = np.where(wide, 1 << 62, 1 + varint_lengths(span) + masked_bytes(freqs, m) + (span - k))
    payload = np.sum(np.where(m, counts * (precisions[:, None] - np.log2(np.maximum(freqs, 1))), 0.0), axis=1)
    return sparse, dense, payload


def _choose_table(values: np.ndarray, counts: np.ndarray, precisions: tuple[int, ...] = _PRECISIONS
                  ) -> tuple[_Table, int]:
    """The precision and layout that minimise table bytes plus (ideal) payload bits (the first
    such precision on a tie), and the table's bytes in that layout."""
    usable = np.array([p for p in precisions if (1 << p) >= counts.size], dtype=np.int64)
    if usable.size == 0:
        raise ValueError(f"{counts.size} distinct symbols exceed the coder's table")
    rows = np.broadcast_to(counts, (usable.size, counts.size))
    freqs = quantize_frequency_rows(rows, usable)
    sparse, dense, payload = _table_costs(values, rows, freqs, usable)
    best = int(np.argmin(payload + 8 * np.minimum(sparse, dense)))
    table = _table(values, freqs[best], int(usable[best]), bool(dense[best] < sparse[best]))
    return table, int(min(sparse[best], dense[best]))


def _table(values: np.ndarray, freqs: np.ndarray, precision: int, dense: bool) -> _Table:
    """Spread present-value frequencies over [min, max] slots when the layout is dense."""
    if not dense:
        return _Table(values, freqs, precision, False)
    slots = np.zeros(int(values[-1]) - int(values[0]) + 1, dtype=np.int64)
    slots[values - values[0]] = freqs
    return _Table(values[0] + np.arange(slots.size, dtype=np.int64), slots, precision, True)


def _table_bytes(table: _Table) -> bytes:
    """The table as it is written after the count (see the module docstring)."""
    start = encode_varints(zigzag(table.values[:1]))
    if table.dense:
        return (encode_varints(np.array([_DENSE, table.freqs.size])) + start
                + bytes([table.precision]) + encode_varints(table.freqs))
    gaps = (np.diff(table.values) - 1).astype(np.uint64)
    return (encode_varints(np.array([table.values.size])) + start + encode_varints(gaps)
            + bytes([table.precision]) + encode_varints(table.freqs - 1))


def _constant_bytes(value: int) -> bytes:
    return encode_varints(np.array([1])) + encode_varints(zigzag(np.array([value])))


# --------------------------------------------------------------------------- encoding


def _model(freqs: np.ndarray):
    """constriction's model of exactly these integers (its quantization is deterministic)."""
    return constriction.stream.model.Categorical(freqs.astype(np.float64), perfect=False)


def _slot_mapper(table: _Table):
    """A function from a chunk of symbols to their int32 slot indices."""
    low = table.low
    if table.dense:
        return lambda part: (part.astype(np.int64) - low).astype(np.int32)
    span = int(table.values[-1]) - low + 1
    if span <= _BINCOUNT_SPAN:
        lookup = np.zeros(span, dtype=np.int32)
        lookup[table.values - low] = np.arange(table.values.size, dtype=np.int32)
        return lambda part: lookup[part.astype(np.int64) - low]
    return lambda part: np.searchsorted(table.values, part.astype(np.int64)).astype(np.int32)


def _rans_coder(flat: np.ndarray, table: _Table):
    """An AnsCoder holding all symbols; chunks pushed last-first equal one encode_reverse call."""
    coder = constriction.stream.stack.AnsCoder()
    model, to_slots = _model(table.freqs), _slot_mapper(table)
    for i in reversed(_chunks(flat.size)):
        coder.encode_reverse(to_slots(flat[i:i + _CHUNK]), model)
    return coder


@dataclass(frozen=True)
class _Plan:
    """What encoding will write: the header, and the table of the payload (None: no payload)."""

    count: int
    table: _Table | None
    values: np.ndarray
    counts: np.ndarray
    layout_bytes: int = 0  # the table's, past its start value and precision byte

    def head(self) -> bytes:
        head = encode_varints(np.array([self.count]))
        if self.values.size == 0:
            return head
        if self.table is None:
            return head + _constant_bytes(int(self.values[0]))
        return head + _table_bytes(self.table)

    def head_size(self) -> int:
        """``len(self.head())`` without building it (sizing runs far more often than coding)."""
        size = varint_length(self.count)
        if self.values.size == 0:
            return size
        start = varint_length(zigzag(self.values[:1])[0])
        if self.table is None:
            return size + 1 + start
        return size + start + 1 + self.layout_bytes


def _plan(flat: np.ndarray) -> _Plan:
    if flat.size == 0:
        return _plan_of_histogram(np.zeros(0, np.int64), np.zeros(0, np.int64))
    return _plan_of_histogram(*_histogram(flat))


def _quick_precision(distinct: int) -> int:
    """The one precision a quick estimate tries: the smallest that gives every value room and
    1/16 of the mass."""
    need = max(distinct * 16, 1 << 12)
    return next((p for p in _PRECISIONS if 1 << p >= need), _PRECISIONS[-1])


def _plan_of_histogram(values: np.ndarray, counts: np.ndarray, quick: bool = False) -> _Plan:
    count = int(counts.sum())
    if values.size <= 1:
        return _Plan(count, None, values, counts)
    if values.size > MAX_ALPHABET:
        raise ValueError(f"{values.size} distinct symbols: too many for an order-0 table "
                         f"(limit {MAX_ALPHABET})")
    precisions = (_quick_precision(values.size),) if quick else _PRECISIONS
    table, layout_bytes = _choose_table(values, counts, precisions)
    return _Plan(count, table, values, counts, layout_bytes)


#: rANS writes a stream in 32-bit words and flushes its 64-bit state at the end, so a stream
#: takes between its ideal cost (less a bit for the coder's own rounding of the model) and about
#: 96 bits more: of two streams whose ideal costs differ by more than this, the cheaper one is the
#: shorter, and the other need not be coded to know it (measured on 3,087 streams of the
#: embedded default: 0 to 54 bits past the ideal).
CODED_SPREAD_BITS = 128


@dataclass(frozen=True)
class Planned:
    """A stream sized before it is coded: its ideal bits (header exact, payload the symbols'
    cost under the stream's own model) and the coder that writes it."""

    ideal_bits: float
    code: Callable[[], bytes]


def plan_symbols(symbols: np.ndarray) -> Planned:
    """:func:`encode_symbols` as a plan: its size without coding, its bytes on demand."""
    flat = _as_flat_ints(symbols)
    plan = _plan(flat)

    def code() -> bytes:
        if plan.table is None:
            return plan.head()
        return plan.head() + _rans_coder(flat, plan.table).get_compressed().astype("<u4").tobytes()
    return Planned(_plan_bits(plan), code)


def encode_symbols(symbols: np.ndarray) -> bytes:
    """Code an integer array (any shape, flattened; the caller keeps the shape) losslessly.

    Raises TypeError for non-integer input and ValueError for more than ``MAX_ALPHABET``
    distinct values or ``MAX_COUNT`` symbols.
    """
    return plan_symbols(symbols).code()


def coded_size_bits(symbols: np.ndarray) -> int:
    """Exactly ``8 * len(encode_symbols(symbols))``.

    The header is sized without coding; the rANS payload is sized by running the coder (its
    word count depends on the symbols' order, so no shortcut is exact), but the words are not
    copied out. Use :func:`estimate_bits` when a smooth, faster figure is enough.
    """
    flat = _as_flat_ints(symbols)
    plan = _plan(flat)
    words = 0 if plan.table is None else _rans_coder(flat, plan.table).num_words()
    return 8 * (plan.head_size() + 4 * words)


def estimate_bits(symbols: np.ndarray) -> float:
    """Header bits (exact) plus the symbols' ideal cost under the quantized table.

    Smooth in the symbols (no word rounding), and within a fraction of a percent of
    :func:`coded_size_bits` for anything but tiny arrays; costs one histogram pass.
    """
    return _plan_bits(_plan(_as_flat_ints(symbols)))


def estimate_bits_of_histogram(values: np.ndarray, counts: np.ndarray, quick: bool = False) -> float:
    """:func:`estimate_bits` of any symbols whose distinct ``values`` (sorted) occur ``counts``
    times (both 1-D; values with a zero count are ignored): sizes streams before they exist.

    ``quick`` tries one table precision instead of all (a search comparing many splits of the
    same symbols needs their differences, not the last tenth of a percent).
    """
    present = np.asarray(counts) > 0
    return _plan_bits(_plan_of_histogram(np.asarray(values, np.int64)[present],
                                         np.asarray(counts, np.int64)[present], quick))


def quick_estimate_bits_of_histograms(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``estimate_bits_of_histogram(values, row, quick=True)`` for every row of ``counts``
    (rows, n) over the same sorted ``values``, in one pass: a class search sizes every context
    of every split it tries, and one call per context was most of its time. Absent values take
    no table entry and no share, as in the one-row call; sums may differ from it in the last
    bits only (their order)."""
    counts = np.asarray(counts, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    present = counts > 0
    k = present.sum(axis=1)
    n = counts.sum(axis=1)
    head = varint_lengths(n).astype(np.float64)  # the count; all a stream of nothing holds
    first = np.argmax(present, axis=1)
    head += np.where(k > 0, varint_lengths(zigzag(values[first])), 0)
    single = k == 1
    head += single  # a constant: its value follows the count, no payload
    bits = 8 * head
    many = np.flatnonzero(k > 1)
    if many.size == 0:
        return bits
    if (k[many] > MAX_ALPHABET).any():
        raise ValueError(f"{int(k.max())} distinct symbols: too many for an order-0 table (limit {MAX_ALPHABET})")
    c = counts[many]
    precision = np.array([_quick_precision(int(distinct)) for distinct in k[many]], dtype=np.int64)
    sparse, dense, payload = _table_costs(values, c, quantize_frequency_rows(c, precision), precision)
    bits[many] += 8 * (1 + np.minimum(sparse, dense)) + payload
    return bits


def _plan_bits(plan: _Plan) -> float:
    if plan.table is None:
        return float(8 * plan.head_size())
    freqs = plan.table.freqs[np.searchsorted(plan.table.values, plan.values)]
    return 8 * plan.head_size() + _cost_bits(plan.counts, freqs, plan.table.precision)


def empirical_entropy_bits(symbols: np.ndarray) -> float:
    """n times the order-0 entropy of the symbols: the bound an order-0 coder approaches."""
    flat = np.asarray(symbols).reshape(-1)
    if flat.size == 0:
        return 0.0
    _, counts = _histogram(flat)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


# --------------------------------------------------------------------------- decoding


def read_varints(data: bytes, count: int, pos: int = 0) -> tuple[np.ndarray, int]:
    """``decode_varints`` that looks at no more than the bytes ``count`` varints can span.

    decode_varints scans everything after ``pos``; reading a header in front of a payload of
    megabytes would otherwise cost a full scan per field.
    """
    window = memoryview(data)[pos:pos + 10 * count]
    values, used = decode_varints(window, count)
    return values, pos + used


def _read_count(data: bytes, expected: int | None) -> tuple[int, int]:
    (count,), pos = read_varints(data, 1)
    count = int(count)
    if count > MAX_COUNT:
        raise CodecError(f"symbol count {count} is implausible (corrupted header)")
    if expected is not None and count != expected:
        raise CodecError(f"stream holds {count} symbols, {expected} expected")
    return count, pos


def _read_table(data: bytes, pos: int, count: int) -> tuple[_Table | int, int]:
    """The table after the count, or the single value of a constant stream."""
    (distinct,), pos = read_varints(data, 1, pos)
    distinct = int(distinct)
    if distinct == _DENSE:
        return _read_dense(data, pos)
    if distinct > min(count, MAX_ALPHABET):
        raise CodecError("symbol table is corrupted (more distinct values than symbols)")
    raw, pos = read_varints(data, distinct, pos)
    steps = np.concatenate(([0], np.cumsum(raw[1:].astype(np.int64) + 1)))
    values = unzigzag(raw[:1])[0] + steps
    if distinct == 1:
        return int(values[0]), pos
    precision, pos = _read_precision(data, pos)
    freqs, pos = read_varints(data, distinct, pos)
    return _checked(_Table(values, freqs.astype(np.int64) + 1, precision, False)), pos


def _read_dense(data: bytes, pos: int) -> tuple[_Table, int]:
    (span,), pos = read_varints(data, 1, pos)
    span = int(span)
    if not 2 <= span <= MAX_ALPHABET:
        raise CodecError("dense symbol table has an impossible span")
    (low,), pos = read_varints(data, 1, pos)
    precision, pos = _read_precision(data, pos)
    freqs, pos = read_varints(data, span, pos)
    values = unzigzag(np.array([low]))[0] + np.arange(span, dtype=np.int64)
    return _checked(_Table(values, freqs.astype(np.int64), precision, True)), pos


def _read_precision(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data) or data[pos] not in _PRECISIONS:
        raise CodecError("frequency table precision is corrupted")
    return data[pos], pos + 1


def _checked(table: _Table) -> _Table:
    """Refuse tables the encoder cannot have written (wrong total, one usable symbol)."""
    if int(table.freqs.sum()) != 1 << table.precision or np.count_nonzero(table.freqs) < 2:
        raise CodecError("frequency table is corrupted")
    return table


def _read_words(data: bytes, pos: int) -> np.ndarray:
    if (len(data) - pos) % 4:
        raise CodecError("rANS payload is truncated")
    words = np.frombuffer(data, dtype="<u4", offset=pos).astype(np.uint32)
    if words.size and words[-1] == 0:
        raise CodecError("rANS payload is corrupted (ends in a zero word)")
    return words


def narrow_int_dtype(low: int, high: int) -> np.dtype:
    """The smallest signed integer dtype that holds every value in [low, high]: decoded symbols
    are kept in it, so that a stream of n symbols costs n bytes of memory, not 8n."""
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _decode_payload(words: np.ndarray, table: _Table, count: int) -> np.ndarray:
    """Decode ``count`` symbols chunk by chunk into their values; checks the coder ends empty.

    Once the coder is empty every further symbol is slot 0 (that is how a trailing run of the
    smallest value is coded for free), so the rest is filled without asking constriction.
    """
    coder, model = constriction.stream.stack.AnsCoder(words), _model(table.freqs)
    try:
        out = np.empty(count, dtype=narrow_int_dtype(int(table.values[0]), int(table.values[-1])))
    except MemoryError:
        raise CodecError(f"cannot hold {count} symbols (corrupted count?)") from None
    seen = np.zeros(table.freqs.size, dtype=bool)
    for i in _chunks(count):
        if coder.is_empty():
            out[i:] = table.values[0]
            seen[0] = True
            break
        slots = coder.decode(model, min(_CHUNK, count - i))
        seen[slots] = True
        out[i:i + slots.size] = table.values[slots]
    if not coder.is_empty():
        raise CodecError("rANS payload does not end where it should (corrupted or truncated)")
    if not np.array_equal(seen, table.freqs > 0):
        raise CodecError("decoded symbols do not match the frequency table (corrupted)")
    return out


def decode_symbols(data: bytes, count: int | None = None) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: the flat array, in the narrowest signed integer dtype
    that holds the stream's values (:func:`narrow_int_dtype`).

    ``count``, when the caller knows it (from the tensor's shape), is checked before anything
    is allocated. Raises :class:`CodecError` on truncated or corrupted input.
    """
    try:
        n, pos = _read_count(data, count)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        table, pos = _read_table(data, pos, n)
        if isinstance(table, int):
            if pos != len(data):
                raise CodecError("trailing bytes after a constant symbol stream")
            return np.full(n, table, dtype=narrow_int_dtype(table, table))
        return _decode_payload(_read_words(data, pos), table, n)
    except CodecError:
        raise
    except MemoryError:
        raise CodecError("symbol stream asks for more memory than there is (corrupted)") from None
    except (ValueError, IndexError, OverflowError, RuntimeError, TypeError) as exc:
        raise CodecError(f"symbol stream is corrupted ({exc})") from None
