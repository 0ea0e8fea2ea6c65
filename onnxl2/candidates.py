"""The ways to store one weight, each with the exact number of bytes it adds to the bitstream.

A candidate's size is computed with the very functions the container uses to code it (symbols
and scales through the rANS coder, float tensors through the byte-plane coder), never from a
nominal bit-width: a 4-bit layer whose symbols have 2.6 bits of entropy costs 2.6 bits.
"""
from __future__ import annotations

import io
import json
import re
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .codec.container import stored_size
from .codec.classed import encode_classed
from .codec.floatcodec import encode_array
from .fileio import write_files_atomically
from .layers.layouts import to_rows
from .layers.moments import LayerHessian
from .transforms.compensate import (bias_quanta, channel_spread, compensated_round, output_error,
                                   rate_aware_quantize, round_bias, shift_and_errors)
from .transforms.lowrank import FACTOR_BITS, FactorPair, candidate_ranks, factorise, truncated
from .transforms.quantize import (INTEGER_BITS, QuantizedWeight, container_type, has_wide_form, quantize_per_channel,
                                  symbol_dtype, widened)

#: The bit-widths that stand for a float choice: the weight kept as it is, or stored as float16.
FLOAT32, FLOAT16 = 32, 16
#: Bit choices a user can ask for: 2..12 are integers per channel, 16 is float16, 32 keeps float32.
ALLOWED_BITS = INTEGER_BITS + (FLOAT16, FLOAT32)
#: Every integer width: an entropy-coded layer's size and error change by about 2x and 4x a
#: width, so each layer's rate-distortion curve is a point per bit; with a point per two bits
#: the knapsack leaves layers up to a bit off the slope it sets for all of them, which costs
#: about 0.2 bit a weight at the same distortion (a point a bit: about 0.06).
DEFAULT_BITS_CHOICES = (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16)
#: Prices of a bit (in units of the squared rounding step) the automatic mode tries by default.
DEFAULT_RATES = (0.0,)
#: The largest price of a bit rate-aware rounding takes (a rate in a plan or in ``rates``).
MAX_RATE = 10.0
_LABEL = re.compile(r"^(?:float(?P<float>32|16)|int(?P<bits>1[0-2]|[2-9])(?P<wide>\+wide)?(?P<onestep>\+onestep)?"
                    r"(?P<gptq>\+gptq)?"
                    r"(?:\+r(?P<rate>[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?))?"
                    r"(?:\+rank(?P<rank>[1-9][0-9]*))?)$")
#: Extra bytes a factorised layer adds to the stored graph (a second DequantizeLinear, Reshape
#: and compute node and their names, and a factor's few steps when they stay in the skeleton;
#: measured after the container's coding: 134-141 bytes for names of 3 to 43 characters).
LOWRANK_GRAPH_BYTES = 138


@dataclass
class Candidate:
    """One way to store a weight and what it costs in bytes."""

    key: str
    bits: int
    coded_bytes: int
    original: np.ndarray
    quantized: QuantizedWeight | None = None
    compensated: bool = False  # errors spread through the layer Hessian (GPTQ)
    rate: float = 0.0  # price of a bit in the rounding (0: nearest)
    output_error: float | None = None  # summed squared layer-output error on calibration inputs
    bias_key: str | None = None  # the layer's bias, moved to keep its mean output (bias correction)
    bias_values: np.ndarray | None = None
    factors: FactorPair | None = None  # low rank: two integer layers instead of one
    one_step: bool = False  # one step for the whole layer instead of one per channel

    @property
    def rank(self) -> int | None:
        return self.factors.rank if self.factors is not None else None

    @property
    def wide(self) -> bool:
        """Symbols run to the container's range (``QuantizedWeight.wide``)."""
        return self.quantized is not None and self.quantized.wide

    @property
    def is_integer(self) -> bool:
        return self.quantized is not None or self.factors is not None

    @property
    def label(self) -> str:
        """What a plan file says: float32, float16, int4, int3+wide+gptq, int4+onestep+gptq+r0.3, ..."""
        if self.bits in (FLOAT16, FLOAT32):
            return f"float{self.bits}"
        return (f"int{self.bits}" + ("+wide" if self.wide else "") + ("+onestep" if self.one_step else "")
                + ("+gptq" if self.compensated else "")
                + (f"+r{_exact_text(self.rate)}" if self.rate else "")
                + (f"+rank{self.rank}" if self.factors is not None else ""))

    def values(self) -> np.ndarray:
        """The weight as the compressed model computes it (built on demand, to save memory)."""
        if self.bits == FLOAT32:
            return self.original
        if self.bits == FLOAT16:
            return self.original.astype(np.float16).astype(self.original.dtype)
        if self.factors is not None:
            return self.factors.reconstruct().astype(self.original.dtype)
        return self.quantized.reconstruct().astype(self.original.dtype)

    def feeds(self) -> dict[str, np.ndarray]:
        """Every tensor this choice changes (weight key -> values): the weight, and its bias."""
        out = {self.key: self.values()}
        if self.bias_key is not None:
            out[self.bias_key] = self.bias_values
        return out


def integer_payload_bytes(q: QuantizedWeight) -> int:
    """Bytes of the integer tensor (in its container, see :func:`container_type`) and its scales."""
    n = q.symbols.size
    raw = (n + 1) // 2 if container_type(q.bits) == "int4" else n * symbol_dtype(q.bits).itemsize
    return (stored_size(raw, len(encode_classed(q.symbols)))
            + stored_size(q.scales.nbytes, len(encode_array(q.scales))))


def _integer_parts(cand: Candidate) -> list[QuantizedWeight]:
    if cand.factors is not None:
        return [cand.factors.first, cand.factors.second]
    return [cand.quantized] if cand.quantized is not None else []


def symbol_tensors(cand: Candidate) -> list[np.ndarray]:
    """The integer tensors a candidate stores (none for float ones, two for a factor pair)."""
    return [q.symbols for q in _integer_parts(cand)]


def step_count(cand: Candidate) -> int:
    """Per-channel steps the candidate stores (one per output channel of each integer tensor)."""
    return sum(q.scales.size for q in _integer_parts(cand))


def moved_bias_bytes(cand: Candidate) -> int:
    """Bytes the candidate's moved bias takes in the bitstream, coded as the container codes it
    (0 when it moves none)."""
    if cand.bias_values is None:
        return 0
    return stored_size(cand.bias_values.nbytes, len(encode_array(cand.bias_values)))


def factor_payload_bytes(pair: FactorPair) -> int:
    """Bytes of both factors (symbols and scales) and of the extra nodes in the graph."""
    return integer_payload_bytes(pair.first) + integer_payload_bytes(pair.second) + LOWRANK_GRAPH_BYTES


def _exact_text(value: float) -> str:
    """The shortest text that reads back as ``value`` (``:g`` where it does, as for 0.3)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


@dataclass(frozen=True)
class Label:
    """What a plan's choice for one weight says."""

    bits: int
    compensated: bool = False
    rate: float = 0.0
    rank: int | None = None
    one_step: bool = False
    wide: bool = False


def parse_label(label: str) -> Label:
    """The parts of a plan label (float32, int4+gptq+r0.3, int3+wide+gptq, int6+gptq+rank64, ...);
    ValueError if it is not one."""
    match = _LABEL.match(label)
    if not match:
        raise ValueError(label)
    if match["float"]:
        return Label(int(match["float"]))
    if (match["onestep"] or match["wide"]) and match["rank"]:  # factor pairs: a step per channel, clipped
        raise ValueError(label)
    if match["wide"] and not has_wide_form(int(match["bits"])):  # int4 and int8 fill their containers
        raise ValueError(label)
    text = match["rate"] or "0"
    rate = float(text)
    underflow = rate == 0.0 and any(d in "123456789" for d in text.split("e")[0])
    if not 0.0 <= rate <= MAX_RATE or underflow:  # a plan written from it would not read back
        raise ValueError(label)
    return Label(int(match["bits"]), bool(match["gptq"]), rate,
                 int(match["rank"]) if match["rank"] else None, bool(match["onestep"]), bool(match["wide"]))


def level_forms(bits_choices: tuple[int, ...], wide_levels: bool) -> dict[int, tuple[bool, ...]]:
    """Per integer width among ``bits_choices``, the forms its candidates take: clipped (False)
    and wide (True).

    With ``wide_levels`` a width whose container has room is made wide only, since at the same
    layer-output error the wide form codes smaller (``quantize_per_channel``); the narrowest
    width keeps its clipped form too, the smallest a layer can be (ternary at 2 bits, whose
    wide form spends some bits on the weights past its bound)."""
    int_bits = [b for b in bits_choices if b in INTEGER_BITS]
    narrowest = min(int_bits, default=None)
    return {b: ((True,) if b != narrowest else (False, True)) if wide_levels and has_wide_form(b) else (False,)
            for b in int_bits}


def make_candidates(key: str, weight: np.ndarray, axis: int, bits_choices: tuple[int, ...],
                    always_float32: bool = True, hessian: LayerHessian | None = None,
                    rates: tuple[float, ...] = (0.0,), bias: np.ndarray | None = None,
                    ranks: tuple[int, ...] = (), full_rank: bool = True,
                    moments: LayerHessian | None = None, merged: bool = False,
                    step_kinds: tuple[bool, ...] = (False,),
                    forms: Mapping[int, tuple[bool, ...]] | None = None) -> list[Candidate]:
    """Every allowed way to store ``weight``; float32 (as it is) is among them unless a caller
    that fixes the choice says otherwise.

    With the layer's ``hessian`` the integer candidates are error-compensated (GPTQ), one per
    rate, and every candidate carries its layer-output error; without, rate 0 is plain rounding.
    Where the layer also has a bias (``bias``, the values of ``hessian.bias``), each integer
    candidate then moves the bias by the mean output shift that remains (bias correction), and
    keeps it on a grid of its channel's output spread (``bias_quanta``: a moved bias is new
    anyway, and its low mantissa bits would cost more than a small layer's weights).
    Compensation keeps the full ``X^T X`` rather than the centred moments: the bias is fitted
    to the original model's input means, which move once earlier layers are rounded, so the
    mean is better kept small by the rounding itself than left to the bias alone (both were
    measured; this order was as good at 4 bits and better at 3).

    ``ranks`` add factor pairs (``transforms.lowrank``) at each rank, at the bit-widths of
    ``FACTOR_BITS`` allowed here (at every allowed one when ``full_rank`` is False: a pinned
    rank, with no unfactorised candidate). Factorising needs the layer's input moments:
    ``hessian``, or ``moments`` where the layer is not compensated. ``merged``: the channels
    run over every axis up to ``axis`` (a recurrent layer's directions and gate rows).
    ``step_kinds``: integer candidates with a step per channel (False) and with one step for the
    layer (True), each at every bit-width and rate; factor pairs keep a step per channel.
    ``forms``: per integer width, clipped (False) and/or wide (True) symbols (``level_forms``;
    None: clipped only); factor pairs are clipped.
    """
    if not np.isfinite(weight).all():  # NaN or infinity: no step holds it, so it is kept exactly
        return [Candidate(key, 32, stored_size(weight.nbytes, len(encode_array(weight))), weight)]
    moments = hessian if hessian is not None else moments
    with ExitStack() as scope:  # factors of a K x K matrix: reused by this weight's candidates only
        for h in {id(h): h for h in (hessian, moments) if h is not None}.values():
            scope.enter_context(h.reusing())
        correct = hessian is not None and hessian.bias is not None and hessian.mean is not None and bias is not None
        centred = hessian.centred() if correct else moments  # what a moved bias leaves
        fit = _Fit(weight, hessian, moments, centred, bias if correct else None,
                   channel_spread(weight, centred) if correct else None)
        int_bits = sorted(b for b in set(bits_choices) if b in INTEGER_BITS)
        forms = {b: tuple(forms.get(b, (False,))) if forms is not None else (False,) for b in int_bits}
        out = fit.finish(_unfactorised(key, weight, axis, bits_choices, forms, always_float32, hessian, rates,
                                       merged, step_kinds) if full_rank else [])
        factor_bits = tuple(b for b in int_bits if b in FACTOR_BITS or not full_rank)
        if ranks and moments is not None and factor_bits:
            for rank, bits in _worth_factorising(weight, moments, centred, tuple(ranks), factor_bits, out):
                out += fit.finish([Candidate(key, pair.bits, factor_payload_bytes(pair), weight,
                                             compensated=hessian is not None, factors=pair)
                                   for pair in factorise(weight, moments, rank, bits, compensate=hessian is not None)])
        return out


def _unfactorised(key: str, weight: np.ndarray, axis: int, bits_choices: tuple[int, ...],
                  forms: Mapping[int, tuple[bool, ...]], always_float32: bool, hessian: LayerHessian | None,
                  rates: tuple[float, ...], merged: bool, step_kinds: tuple[bool, ...]) -> list[Candidate]:
    """Float32, float16 and the integer candidates at full rank, one per bit-width, form of
    levels, rate and kind of step."""
    rounded = {}  # (bits, wide, rate, one step) -> QuantizedWeight
    for one in step_kinds:  # a compensated pass per kind of step: its working memory grows with the bases
        bases = []
        for bits, kinds in forms.items():  # one clip search a width, whichever forms it takes
            clipped = quantize_per_channel(weight, bits, axis, key=key, merged=merged, one_step=one)
            bases += [widened(clipped, weight) if wide else clipped for wide in kinds]
        for rate in rates:
            if hessian is not None and bases:
                made = compensated_round(weight, axis, bases, hessian, rate)
            else:
                made = [b if rate <= 0 else rate_aware_quantize(weight, axis, b, rate) for b in bases]
            rounded.update({(q.bits, q.wide, rate, one): q for q in made})
    out = []
    for bits in sorted(set(bits_choices) | ({FLOAT32} if always_float32 else set())):
        if bits == FLOAT32:
            out.append(Candidate(key, 32, stored_size(weight.nbytes, len(encode_array(weight))), weight))
        elif bits == FLOAT16:
            if weight.dtype == np.float16:
                continue
            half = weight.astype(np.float16)
            out.append(Candidate(key, 16, stored_size(half.nbytes, len(encode_array(half))), weight))
        else:
            out += [Candidate(key, bits, integer_payload_bytes(rounded[bits, wide, rate, one]), weight,
                              rounded[bits, wide, rate, one], compensated=hessian is not None, rate=float(rate),
                              one_step=one)
                    for wide in forms[bits] for rate in rates for one in step_kinds]
    return out


@dataclass
class _Fit:
    """What a weight's candidates are measured against: its layer's input moments, and with bias
    correction the centred moments, the bias and its channels' output spread."""

    weight: np.ndarray
    hessian: LayerHessian | None
    moments: LayerHessian | None
    centred: LayerHessian | None
    bias: np.ndarray | None  # None: no bias correction
    spread: np.ndarray | None

    def finish(self, cands: list[Candidate]) -> list[Candidate]:
        """Bias correction (the moved bias on its grid), then each candidate's layer-output error."""
        for cand in cands:
            if self.bias is not None and cand.is_integer:
                shift, errors = shift_and_errors(self.weight, cand.values(), self.hessian, self.centred)
                quanta = bias_quanta(self.spread, self.bias,
                                     np.sqrt(np.maximum(errors, 0.0) / max(self.centred.rows, 1)))
                cand.bias_key = self.hessian.bias
                cand.bias_values = round_bias(self.bias.astype(np.float64) + shift, quanta).astype(self.bias.dtype)
                cand.output_error = float(errors.sum())
                continue
            if self.moments is not None:
                metric = self.centred if cand.bias_key is not None else self.moments
                cand.output_error = 0.0 if cand.bits == FLOAT32 else output_error(self.weight, cand.values(), metric)
        return cands


#: A factor pair is not made when an unfactorised candidate no larger than the pair would be has
#: less than this share of the output error the truncation alone leaves (the pair could only be
#: worse and no smaller; the margin covers the size estimate and factor rounding that partly
#: cancels the cut's error).
DOMINATED_BELOW = 0.5


def _worth_factorising(weight: np.ndarray, moments: LayerHessian, metric: LayerHessian, ranks: tuple[int, ...],
                       bits: tuple[int, ...], unfactorised: list[Candidate]) -> list[tuple[int, tuple[int, ...]]]:
    """(rank, bit-widths) pairs to make: all of them for a pinned rank (no unfactorised
    candidates), else those no unfactorised candidate dominates.

    Judged before rounding any factor: the cut's own output error (measured in ``metric``, as
    the pair's will be) stands for the pair's, and the pair's size is estimated as its share of
    the parameters times the size of the unfactorised candidate at the same bit-width. Most
    pairs of a layer without low-rank structure stop here.
    """
    sized = [c for c in unfactorised if c.output_error is not None]
    if not sized:
        return [(rank, bits) for rank in ranks]
    outputs, inputs = to_rows(weight, moments.layout, 1)[0].shape
    plain = [c for c in sized if c.quantized is not None and c.rate == 0 and not c.one_step]
    by_bits = {c.bits: c.coded_bytes for c in sorted(plain, key=lambda c: not c.wide)}  # clipped where made
    made = []
    for rank in ranks:
        share = rank * (outputs + inputs) / (outputs * inputs)
        residual = output_error(weight, truncated(weight, moments, rank), metric)
        keep = tuple(b for b in bits if b not in by_bits or not any(
            c.coded_bytes <= share * by_bits[b] and c.output_error < DOMINATED_BELOW * residual for c in sized))
        if keep:
            made.append((rank, keep))
    return made


def lowrank_ranks(weight: np.ndarray, hessian: LayerHessian | None) -> tuple[int, ...]:
    """Ranks offered for a weight: none without its input moments or for grouped kernels."""
    if hessian is None:
        return ()
    return tuple(candidate_ranks(tuple(weight.shape), hessian.layout, hessian.groups))


def candidate_for(key: str, weight: np.ndarray, axis: int, label: Label, hessian: LayerHessian | None,
                  bias: np.ndarray | None = None, merged: bool = False) -> Candidate:
    """The one candidate a plan's label names (compensated and factorised ones need the layer's
    Hessian, compensated ones its bias too)."""
    ranks = (label.rank,) if label.rank else ()
    bits = FLOAT32 if label.bits == FLOAT16 and weight.dtype == np.float16 else label.bits  # already float16: kept
    (cand,) = make_candidates(key, weight, axis, (bits,), always_float32=False,
                              hessian=hessian if label.compensated else None, rates=(label.rate,), bias=bias,
                              ranks=ranks, full_rank=not ranks, moments=hessian, merged=merged,
                              step_kinds=(label.one_step,), forms={bits: (label.wide,)})
    return cand


def save_candidates(path: Path, candidates: Mapping[str, list[Candidate]]) -> None:
    """Keep every weight's candidates beside a sweep cache (one .npz, written atomically).

    Rounding with compensation at every bit-width and sizing each result with the coder costs
    more than the sweep on large models: runs with another bound or target reuse them.
    """
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for w_index, (key, cands) in enumerate(candidates.items()):
        for c_index, cand in enumerate(cands):
            tag = f"{w_index}_{c_index}"
            row = {"key": key, "bits": cand.bits, "coded_bytes": cand.coded_bytes, "compensated": cand.compensated,
                   "rate": cand.rate, "output_error": cand.output_error, "bias_key": cand.bias_key, "tag": tag,
                   "one_step": cand.one_step}
            if cand.quantized is not None:
                arrays[f"{tag}_symbols"] = cand.quantized.symbols
                arrays[f"{tag}_scales"] = cand.quantized.scales
                row["axis"] = cand.quantized.axis
                row["merged"] = cand.quantized.merged
                row["wide"] = cand.quantized.wide
            if cand.factors is not None:
                pair = cand.factors
                for part, q in (("first", pair.first), ("second", pair.second)):
                    arrays[f"{tag}_{part}_symbols"], arrays[f"{tag}_{part}_scales"] = q.symbols, q.scales
                row.update(rank=pair.rank, layout=pair.layout, shape=list(pair.shape), axis=pair.first.axis)
            if cand.bias_values is not None:
                arrays[f"{tag}_bias"] = cand.bias_values
            meta.append(row)
    arrays["meta"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_files_atomically({Path(path): buffer.getvalue()})


def load_candidates(path: Path, originals: Mapping[str, np.ndarray]) -> dict[str, list[Candidate]] | None:
    """Candidates saved by :func:`save_candidates` for these weights, or None."""
    if not Path(path).is_file():
        return None
    out: dict[str, list[Candidate]] = {}
    with np.load(path) as z:
        for row in json.loads(str(z["meta"])):
            if row["key"] not in originals:
                return None
            quantized = None
            if f"{row['tag']}_symbols" in z.files:
                quantized = QuantizedWeight(row["key"], row["bits"], row["axis"], z[f"{row['tag']}_symbols"],
                                            z[f"{row['tag']}_scales"], bool(row.get("merged", False)),
                                            bool(row.get("wide", False)))
            factors = None
            if row.get("rank"):
                first, second = (QuantizedWeight(row["key"], row["bits"], row["axis"], z[f"{row['tag']}_{part}_symbols"],
                                                 z[f"{row['tag']}_{part}_scales"]) for part in ("first", "second"))
                factors = FactorPair(row["rank"], row["layout"], tuple(row["shape"]), first, second)
            bias = z[f"{row['tag']}_bias"] if f"{row['tag']}_bias" in z.files else None
            out.setdefault(row["key"], []).append(
                Candidate(row["key"], row["bits"], row["coded_bytes"], originals[row["key"]], quantized,
                          row["compensated"], row["rate"], row["output_error"], row["bias_key"], bias, factors,
                          bool(row.get("one_step", False))))
    return out if set(out) == set(originals) else None
