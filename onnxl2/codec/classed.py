"""Integer weight tensors coded under a few contexts: a class per row and a class per column.

Why: an order-0 table treats a tensor as one bag of symbols, but a layer's symbols are not
identically distributed. Output channels differ in how peaked they are (per-channel steps
equalise the range, not the shape), and input columns differ with the statistics of what
feeds them (rate-aware rounding zeroes whole columns the calibration data barely excite).
Giving each (row class, column class) pair its own table codes such a tensor below the
order-0 entropy of its symbols, side information included, whenever the gain exceeds the cost
of the extra tables; otherwise the plain order-0 stream is written. The contexts come from
side information alone, so each context's symbols decode as one rANS stream in one call (no
per-symbol loop, no sequential dependence).

The tensor is seen as a matrix: rows along the first axis (the output channel of Conv and of
Gemm with transB), columns over the rest (input channel and kernel position). Row classes are
fitted to the rows' histograms (each row to the class whose distribution codes it in the fewest
bits, a few rounds, started from quantiles of mean magnitude), column classes likewise to the
columns': each histogram is counted once, so trying a split costs one pass to size it. The
number of classes grows while the estimated size falls.

Stream::

    u8 (kr - 1) << 4 | (kc - 1)        kr, kc in 1..16; 1, 1: one order-0 stream follows
    [varint bytes | row classes (a stream of `rows` values)]       if kr > 1
    [varint bytes | column classes]                                 if kc > 1
    per context k = kr_i * kc + kc_j except the last: varint bytes | stream
    last context's stream (to the end)

A stream is a method byte (0: stored table, 1: adaptive, 2: adaptive with v and -v pooled) and
that coder's stream without a symbol count: the decoder knows every count, from the shape and
the classes. Within a context, symbols keep their row-major order.
"""
from __future__ import annotations

import numpy as np

from .adaptive import MAX_SPAN, decode_adaptive, plan_adaptive
from .entropy import (CODED_SPREAD_BITS, CodecError, decode_symbols, estimate_bits, plan_symbols,
                      quick_estimate_bits_of_histograms, read_varints)
from .memo import memoized
from .varint import encode_varints, varint_length, varint_lengths

#: Tensors with fewer symbols keep one table: extra tables cannot pay for themselves.
MIN_CLASSED_SYMBOLS = 1024
MAX_CLASSES = 16  # kr * kc contexts fit one byte (the context sort relies on it)
#: Symbols beyond +-this share a bin while classes are assigned (bounds the histograms).
_ASSIGN_CLIP = 15
_ASSIGN_ROUNDS = 3
#: Symbols a split's size estimate counts at most (a row subsample beyond).
_ESTIMATE_SYMBOLS = 1 << 20

_TABLE, _ADAPTIVE, _ADAPTIVE_SYMMETRIC = 0, 1, 2
#: Longer streams always use a stored table: the adaptive coder's edge is on short ones.
MAX_ADAPTIVE_SYMBOLS = 1 << 16


def encode_stream(symbols: np.ndarray, to_beat_bits: float | None = None) -> bytes | None:
    """One stream of symbols whose count the decoder knows: a method byte, then a stored-table
    or an adaptive order-0 code, whichever is shorter (the table stream without its count).

    Each coder is sized first (its ideal cost), and only those within ``CODED_SPREAD_BITS`` of
    the cheapest are run: what rANS adds to the ideal cannot reorder streams further apart, so
    the bytes are those of coding both. With ``to_beat_bits``, None when even the cheapest is
    longer than that by more than the spread (the caller has a shorter stream already)."""
    flat = np.asarray(symbols).reshape(-1)
    table, count_bytes = plan_symbols(flat), varint_length(flat.size)  # the decoder knows the count
    options = [(_TABLE, table.ideal_bits - 8 * count_bytes, lambda: table.code()[count_bytes:])]
    if flat.size and flat.size <= MAX_ADAPTIVE_SYMBOLS and int(flat.max()) - int(flat.min()) < MAX_SPAN:
        symmetric, adaptive = plan_adaptive(flat)
        options.append((_ADAPTIVE_SYMMETRIC if symmetric else _ADAPTIVE, adaptive.ideal_bits, adaptive.code))
    cheapest = min(ideal for _, ideal, _ in options)
    if to_beat_bits is not None and cheapest > to_beat_bits + CODED_SPREAD_BITS:
        return None
    coded = [bytes([method]) + code() for method, ideal, code in options if ideal <= cheapest + CODED_SPREAD_BITS]
    return min(coded, key=len)  # the first of equals: the table


def decode_stream(data: bytes, count: int) -> np.ndarray:
    """Inverse of :func:`encode_stream` for ``count`` symbols."""
    if not data or data[0] not in (_TABLE, _ADAPTIVE, _ADAPTIVE_SYMMETRIC):
        raise CodecError("symbol stream has an unknown method (corrupted)")
    if data[0] == _TABLE:
        return decode_symbols(encode_varints(np.array([count])) + data[1:], count)
    return decode_adaptive(data[1:], count, data[0] == _ADAPTIVE_SYMMETRIC)


def stream_estimate_bits(values: np.ndarray, counts: np.ndarray) -> float:
    """Bits :func:`encode_stream` about needs for symbols with this histogram (no coding).

    The adaptive code costs the entropy plus about half log2(n) bits per value in use.
    """
    return float(stream_estimate_rows(values, np.asarray(counts)[None, :])[0])


def stream_estimate_rows(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """:func:`stream_estimate_bits` of every row of ``counts`` (rows, n) over the same sorted
    ``values``, in one pass (a class search sizes every context of every split it tries)."""
    counts = np.asarray(counts, dtype=np.int64)
    n = counts.sum(axis=1)
    table = quick_estimate_bits_of_histograms(values, counts)
    c = counts.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = np.where(counts > 0, c * np.log2(n[:, None] / c), 0.0).sum(axis=1)
    k = (counts > 0).sum(axis=1)
    adaptive = entropy + 0.5 * (k - 1) * np.log2(np.maximum(n, 1)) + 32.0
    short = (n > 0) & (n <= MAX_ADAPTIVE_SYMBOLS)
    return 8.0 + np.where(short, np.minimum(table - 8 * varint_lengths(n), adaptive), table)


def _matrix(symbols: np.ndarray) -> np.ndarray:
    arr = np.asarray(symbols)
    if arr.ndim < 2:
        return arr.reshape(1, -1)
    return arr.reshape(arr.shape[0], -1)


def _bits_per_class(hist: np.ndarray) -> np.ndarray:
    """-log2 of smoothed class distributions, for every (class..., bin) of ``hist``."""
    smoothed = hist + 0.5
    return np.log2(smoothed.sum(axis=-1, keepdims=True)) - np.log2(smoothed)


def _assign_bins(symbols: np.ndarray, low: int, span: int) -> np.ndarray:
    """Symbols mapped to 2 * _ASSIGN_CLIP + 1 bins for fitting classes: themselves when the
    alphabet is that narrow, else on a log scale (half-octaves of magnitude, with sign), so that
    an 8-bit layer's rows are told apart by their spread, not lumped at the clip (``low``: the
    symbols' least value, ``span``: their range)."""
    values = np.arange(low, low + span, dtype=np.int64)  # one bin per value in range, then a lookup
    if span <= 2 * _ASSIGN_CLIP + 1 or np.abs(values).max() <= _ASSIGN_CLIP:
        bins = np.clip(values, -_ASSIGN_CLIP, _ASSIGN_CLIP) + _ASSIGN_CLIP
    else:
        level = np.minimum(np.ceil(2 * np.log2(1 + np.abs(values))), _ASSIGN_CLIP).astype(np.int64)
        bins = np.sign(values) * level + _ASSIGN_CLIP
    return _lookup(bins.astype(np.uint8), symbols, low)


def _lookup(table: np.ndarray, symbols: np.ndarray, low: int) -> np.ndarray:
    """``table[symbols - low]``; for 8- and 16-bit symbols of a tensor larger than their code
    space through their raw bits, so that no int64 copy of a large tensor is made."""
    codes = 1 << (8 * symbols.dtype.itemsize)
    if symbols.dtype.itemsize <= 2 and symbols.dtype.kind in "iu" and symbols.size >= codes:
        raw = symbols.view(np.dtype(f"u{symbols.dtype.itemsize}"))
        as_values = np.arange(codes).astype(raw.dtype).view(symbols.dtype).astype(np.int64)  # each code's value
        inside = (as_values >= low) & (as_values < low + table.size)
        by_code = np.zeros(codes, dtype=table.dtype)
        by_code[inside] = table[as_values[inside] - low]
        return by_code[raw]
    return table[symbols.astype(np.int64) - low]


def _sum_by_class(histograms: np.ndarray, classes: np.ndarray, k: int) -> np.ndarray:
    """Histograms (n, ...) summed over the members of each of ``k`` classes: (k, ...).

    As one product with the classes' indicator matrix, in float64: counts stay integers well
    below 2^53, so the sums are exact, and the product runs several times faster than a sort
    and a segmented sum."""
    flat = histograms.reshape(classes.size, -1)
    members = (classes[None, :] == np.arange(k)[:, None]).astype(np.float64)
    sums = (members @ flat.astype(np.float64, copy=False)).astype(np.int64)
    return sums.reshape((k,) + histograms.shape[1:])


class _Search:
    """Row/column class assignment for one matrix of symbols, sized by estimates only."""

    def __init__(self, matrix: np.ndarray):
        self.rows, self.cols = matrix.shape
        self.matrix = matrix
        self.low = int(matrix.min())
        self.span = int(matrix.max()) - self.low + 1
        nb = 2 * _ASSIGN_CLIP + 1
        bins = _assign_bins(matrix, self.low, self.span)
        # every row's and every column's histogram, once: classes are fitted to these marginals
        # (as float64, exact for counts, since the refinement multiplies them by bit costs)
        self.row_hist = np.bincount((np.arange(self.rows)[:, None] * nb + bins).reshape(-1),
                                    minlength=self.rows * nb).reshape(self.rows, nb).astype(np.float64)
        self.col_hist = np.bincount((np.arange(self.cols)[None, :] * nb + bins).reshape(-1),
                                    minlength=self.cols * nb).reshape(self.cols, nb).astype(np.float64)
        levels = np.abs(np.arange(nb) - _ASSIGN_CLIP)
        self.row_stat = self.row_hist @ levels / max(self.cols, 1)
        self.col_stat = self.col_hist @ levels / max(self.rows, 1)
        self._per_column_class: tuple[int, np.ndarray, np.ndarray] | None = None
        self._sampled_offset: np.ndarray | None = None

    @staticmethod
    def _quantile_classes(stat: np.ndarray, k: int) -> np.ndarray:
        if k == 1:
            return np.zeros(stat.size, np.int64)
        edges = np.quantile(stat, np.linspace(0, 1, k + 1)[1:-1])
        return np.searchsorted(edges, stat, side="right").astype(np.int64)

    @staticmethod
    def _refine(hist: np.ndarray, classes: np.ndarray, k: int) -> np.ndarray:
        """Each member to the class whose distribution codes its histogram in the fewest bits."""
        for _ in range(_ASSIGN_ROUNDS):
            cost = hist @ _bits_per_class(_sum_by_class(hist, classes, k)).T
            classes = np.argmin(cost, axis=1)
        return classes

    def assign(self, kr: int, kc: int) -> tuple[np.ndarray, np.ndarray]:
        """Row and column classes: quantiles of mean magnitude, refined on each marginal."""
        rc = self._quantile_classes(self.row_stat, kr)
        cc = self._quantile_classes(self.col_stat, kc)
        if kr > 1:
            rc = self._refine(self.row_hist, rc, kr)
        if kc > 1:
            cc = self._refine(self.col_hist, cc, kc)
        return rc, cc

    def estimate(self, kr: int, kc: int, rc: np.ndarray, cc: np.ndarray) -> float:
        """Estimated bits of the whole classed stream (headers, class streams, every context).

        Past ``_ESTIMATE_SYMBOLS`` symbols the contexts' histograms are counted on every s-th
        row and scaled by s: the choice between splits needs their differences, not the last
        byte, and the search tries several.
        """
        values = np.arange(self.span, dtype=np.int64) + self.low
        streams = [estimate_bits(classes) + 8 for classes, k in ((rc, kr), (cc, kc)) if k > 1]
        streams += list(stream_estimate_rows(values, self._joint(kr, kc, rc, cc)))
        return 8.0 + sum(streams) + sum(8 * varint_length(np.ceil(bits / 8)) for bits in streams[:-1])

    def _joint(self, kr: int, kc: int, rc: np.ndarray, cc: np.ndarray) -> np.ndarray:
        """Histograms (kr * kc, span) of the contexts, on the sampled rows, scaled to all rows.

        Column classes depend on kc alone and the search tries each kc with several kr, so the
        sampled rows' histograms per column class are kept for the last kc (where they are no
        larger than the rows themselves) and each split then only sums them by row class.
        """
        step = max(1, -(-self.rows * self.cols // _ESTIMATE_SYMBOLS))
        rows = np.arange(0, self.rows, step)
        if self._sampled_offset is None:  # the sampled rows' symbols less the least one, once
            self._sampled_offset = self.matrix[rows].astype(np.int64) - self.low
        offset = self._sampled_offset
        if kc * self.span > self.cols:  # per-row histograms would outgrow the rows: count directly
            ctx = (rc[rows, None] * kc + cc[None, :]).reshape(-1)
            return step * np.bincount(ctx * self.span + offset.reshape(-1),
                                      minlength=kr * kc * self.span).reshape(kr * kc, self.span)
        kept = self._per_column_class
        if kept is None or kept[0] != kc or not np.array_equal(kept[1], cc):
            width = kc * self.span
            keys = (np.arange(rows.size)[:, None] * width + cc[None, :] * self.span + offset).reshape(-1)
            kept = (kc, cc, np.bincount(keys, minlength=rows.size * width).reshape(rows.size, width)
                    .astype(np.float64))
            self._per_column_class = kept
        return step * _sum_by_class(kept[2], rc[rows], kr).reshape(kr * kc, self.span)


def choose_classes(symbols: np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(kr, kc, row classes, column classes) that code ``symbols`` in the fewest estimated bits.

    Grows the class counts greedily (doubling rows or columns, whichever helps more) while the
    estimate falls; (1, 1, zeros, zeros) when no split pays.
    """
    matrix = _matrix(symbols)
    rows, cols = matrix.shape
    none = (1, 1, np.zeros(rows, np.int64), np.zeros(cols, np.int64))
    if matrix.size < MIN_CLASSED_SYMBOLS or np.asarray(symbols).ndim < 2:
        return none
    search = _Search(matrix)
    best_bits = search.estimate(1, 1, none[2], none[3])
    best = none
    kr, kc = 1, 1
    while True:
        tried = []
        for nr, nc in ((kr * 2, kc), (kr, kc * 2)):
            if nr > min(MAX_CLASSES, rows // 4) or nc > min(MAX_CLASSES, cols // 4):
                continue
            rc, cc = search.assign(nr, nc)
            tried.append((search.estimate(nr, nc, rc, cc), nr, nc, rc, cc))
        if not tried:
            break
        bits, nr, nc, rc, cc = min(tried, key=lambda t: t[0])
        if bits >= best_bits:
            break
        best_bits, best = bits, (nr, nc, rc, cc)
        kr, kc = nr, nc
    return best


def encode_classed(symbols: np.ndarray) -> bytes:
    """Code an integer tensor (its shape is the caller's to keep) under row/column classes."""
    arr = np.ascontiguousarray(symbols)
    if arr.dtype.itemsize > 1 and arr.size and -128 <= int(arr.min()) and int(arr.max()) <= 127:
        arr = arr.astype(np.int8)  # the code depends on the values only: one key for int4 and int8 views
    return memoized("classed", arr, _encode_classed)


def _encode_classed(arr: np.ndarray) -> bytes:
    kr, kc, rc, cc = choose_classes(arr)
    head = bytes([(kr - 1) << 4 | (kc - 1)])
    if kr == 1 and kc == 1:
        return bytes([0]) + encode_stream(arr)
    matrix = _matrix(arr)
    parts = [encode_stream(classes) for classes, k in ((rc, kr), (cc, kc)) if k > 1]
    columns = [np.flatnonzero(cc == j) for j in range(kc)]
    for i in range(kr):  # context (i, j): row class i's rows by column class j's columns, row-major
        rows = matrix[np.flatnonzero(rc == i)]
        parts += [encode_stream(rows[:, cols]) for cols in columns]
    out = bytearray(head)
    for part in parts[:-1]:
        out += encode_varints(np.array([len(part)])) + part
    out += parts[-1]
    plain = encode_stream(arr, to_beat_bits=8 * (len(out) - 1))  # the search works on estimates
    return bytes([0]) + plain if plain is not None and len(plain) < len(out) else bytes(out)


def decode_classed(data: bytes, shape: tuple[int, ...], dtype: np.dtype = np.int64) -> np.ndarray:
    """Inverse of :func:`encode_classed`: the flat array (of ``dtype``) of a tensor of ``shape``.

    A context's symbols are those of its row class's rows and its column class's columns, in
    row-major order, so each stream goes back as one block of the matrix (no sort of all the
    positions, whose index array would be eight bytes a symbol). Raises :class:`CodecError` on
    truncated or corrupted input.
    """
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if not data:
        raise CodecError("classed symbol stream is empty")
    kr, kc = (data[0] >> 4) + 1, (data[0] & 0x0F) + 1
    if kr == 1 and kc == 1:
        return decode_stream(data[1:], count).astype(dtype, copy=False)
    rows = int(shape[0]) if len(shape) >= 2 else 1
    cols = count // rows if rows else 0
    if len(shape) < 2 or kr > max(rows, 1) or kc > max(cols, 1):
        raise CodecError("classed symbol stream does not fit the tensor's shape (corrupted)")
    pos = 1
    streams = []
    total = (kr > 1) + (kc > 1) + kr * kc
    try:
        for index in range(total):
            if index == total - 1:
                streams.append(data[pos:])
                break
            (length,), pos = read_varints(data, 1, pos)
            end = pos + int(length)
            if end > len(data):
                raise CodecError("classed symbol stream is truncated")
            streams.append(data[pos:end])
            pos = end
    except (ValueError, IndexError) as exc:
        raise CodecError(f"classed symbol stream is corrupted ({exc})") from None
    rc = decode_stream(streams.pop(0), rows) if kr > 1 else np.zeros(rows, np.int64)
    cc = decode_stream(streams.pop(0), cols) if kc > 1 else np.zeros(cols, np.int64)
    if rc.min(initial=0) < 0 or rc.max(initial=0) >= kr or cc.min(initial=0) < 0 or cc.max(initial=0) >= kc:
        raise CodecError("classed symbol stream has an impossible class (corrupted)")
    row_sets = [np.flatnonzero(rc == i) for i in range(kr)]
    col_sets = [np.flatnonzero(cc == j) for j in range(kc)]
    out = np.empty((rows, cols), dtype=dtype)
    for k in range(kr * kc):
        r, c = row_sets[k // kc], col_sets[k % kc]
        out[np.ix_(r, c)] = decode_stream(streams[k], r.size * c.size).reshape(r.size, c.size)
    return out.reshape(-1)
