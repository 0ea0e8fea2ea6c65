"""What the lossy modes may choose for each weight and what they must respect.

The rules come from the user's options (bit choices, ``--keep``, pins, ranks, compensation,
rates) and are the same for the uniform mode, a replayed plan and the automatic search, so
that each weight's allowed choices are decided in one place.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Mapping

from .candidates import ALLOWED_BITS, DEFAULT_BITS_CHOICES, DEFAULT_RATES, FLOAT32, MAX_RATE
from .contract import Contract
from .errors import OnnxL2Error
from .layers.moments import LayerHessian
from .model import Weight
from .transforms.lowrank import FACTORISABLE
from .layers.layouts import layout
from .transforms.quantize import INTEGER_BITS


@dataclass
class SearchRules:
    """What the automatic mode may choose from and what it must respect."""

    bits_choices: tuple[int, ...] = DEFAULT_BITS_CHOICES
    keep: tuple[str, ...] = ()  # patterns of weights pinned to float32
    pins: dict[str, int] = field(default_factory=dict)  # pattern -> bits
    loss: str = "auto"
    output: str | None = None
    max_loss_increase: float | str | None = None  # the neighbourhood form: absolute, or "N%" of the loss
    target_bytes: int | None = None
    contract: Contract = field(default_factory=Contract)  # the default form
    taylor: bool = True
    sweep: str = "auto"  # "full" (every candidate measured), "proxy", or "auto" (by the time budget)
    sweep_budget: float = 300.0
    compensate: bool = False  # GPTQ error compensation where the layer Hessian can be captured
    rates: tuple[float, ...] = DEFAULT_RATES  # prices of a bit in the rounding, one candidate each
    noise_sigmas: float = 0.0  # neighbourhood: a change this many standard errors above the bound passes
    lowrank: bool = True  # offer factor pairs (transforms.lowrank) where a layer can have them
    ranks: dict[str, int] = field(default_factory=dict)  # pattern -> rank (a pinned factorisation)
    layer_steps: bool = True  # offer integer candidates with one step for the layer beside a step per channel
    wide_levels: bool = False  # integer candidates whose symbols run to their container's range (not clipped)

    @property
    def form(self) -> str:
        """"size budget", "loss neighbourhood" or "contract"."""
        if self.target_bytes is not None:
            return "size budget"
        return "loss neighbourhood" if self.max_loss_increase is not None else "contract"

    def __post_init__(self) -> None:
        if not isinstance(self.contract, Contract):
            raise OnnxL2Error("the contract must be an onnxl2.Contract")
        bad = [b for b in self.bits_choices if b not in ALLOWED_BITS]
        if bad or not self.bits_choices:
            raise OnnxL2Error(f"bit choices must be among {', '.join(map(str, ALLOWED_BITS))}; got {bad or 'none'}")
        if not self.rates or any(not 0 <= r <= MAX_RATE for r in self.rates):
            raise OnnxL2Error(f"rates must be between 0 and {MAX_RATE:g}; got {list(self.rates)}")
        if self.sweep not in ("auto", "full", "proxy"):
            raise OnnxL2Error(f"sweep must be auto, full or proxy; got {self.sweep!r}")
        for pattern, bits in self.pins.items():
            if bits not in ALLOWED_BITS:
                raise OnnxL2Error(f"--bits {pattern}={bits}: bits must be among {ALLOWED_BITS}")
        for pattern, rank in self.ranks.items():
            if not isinstance(rank, int) or rank < 1:
                raise OnnxL2Error(f"--rank {pattern}={rank}: a rank is a whole number of at least 1")


def _matches(weight: Weight, pattern: str) -> bool:
    return fnmatch.fnmatchcase(weight.name, pattern) or fnmatch.fnmatchcase(weight.key, pattern)


def allowed_bits(weight: Weight, rules: SearchRules) -> tuple[int, ...]:
    """Bit choices of one weight after --keep and --bits PATTERN=N pins."""
    if any(_matches(weight, p) for p in rules.keep):
        return (FLOAT32,)
    for pattern, bits in rules.pins.items():
        if _matches(weight, pattern):
            return (bits,)
    return tuple(rules.bits_choices)


def pinned_rank(weight: Weight, rules: SearchRules) -> int | None:
    """The rank a --rank PATTERN=R pin gives this weight (None: not pinned)."""
    for pattern, rank in rules.ranks.items():
        if _matches(weight, pattern):
            return rank
    return None


def check_factorisable(ranks: Mapping[str, int], hessians: Mapping[str, LayerHessian],
                       shapes: Mapping[str, tuple[int, ...]],
                       bits: Mapping[str, tuple[int, ...]] | None = None) -> None:
    """Every pinned rank names a layer that can be factorised, at a rank below both its output
    and its input width, with an integer bit-width left to store its factors in."""
    for key, rank in ranks.items():
        if bits is not None and not any(b in INTEGER_BITS for b in bits.get(key, ())):
            raise OnnxL2Error(f"--rank pins {key}, but --keep or the bit choices leave it no integer "
                              "bit-width for its factors")
        h = hessians.get(key)
        if h is None or h.layout not in FACTORISABLE or h.groups != 1:
            raise OnnxL2Error(f"{key} cannot be factorised (only MatMul/Gemm weights and ungrouped Conv "
                              "kernels with one consumer can)")
        width = min(h.matrix.shape[-1], layout(h.layout).outputs(shapes[key]))
        if not 1 <= rank < width:
            raise OnnxL2Error(f"rank {rank} for {key}: it must be between 1 and {width - 1}")


def parse_loss_bound(value: float | str, base_loss: float) -> float:
    """An absolute bound, or a percentage of the calibration loss ('0.5%')."""
    text = str(value).strip()
    try:
        if text.endswith("%"):
            return abs(base_loss) * float(text[:-1]) / 100.0
        return float(text)
    except ValueError:
        raise OnnxL2Error(f"--max-loss-increase must be a number or a percentage, got {value!r}") from None
