"""Every choice of a compress run as one frozen object, checked when it is made.

The CLI builds one from its flags and the API takes it (``compress(model, data, options=...)``,
or the same field names as keywords), so that a run's choices are validated in one place before
any file is read, and a script can build, keep and reuse them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace

from .candidates import DEFAULT_BITS_CHOICES, DEFAULT_RATES
from .contract import Contract
from .errors import OnnxL2Error
from .losses import LOSS_KINDS
from .rules import SearchRules
from .runtime import check_devices
from .transforms.quantize import INTEGER_BITS
from .units import parse_size


@dataclass(frozen=True)
class CompressOptions:
    """What ``compress`` does. The mode follows from the fields: ``lossless``; ``bits`` (uniform
    quantization); ``plan`` (replay); else the automatic mode, under ``target_ratio`` /
    ``target_size`` (a size budget), ``max_loss_increase`` (the lossless neighbourhood: absolute,
    or "N%" of the calibration loss) or, by default, the ``contract``.

    ``keep`` patterns pin weights to float32 and ``pins`` ({pattern: bits}) a bit-width, also with
    ``bits``; ``ranks`` ({pattern: rank}) factorise matching layers at that rank in any mode that
    quantizes. ``compensate`` spreads each rounded column's error onto the columns not yet
    rounded through the layer's input Hessian (GPTQ, with bias correction); None: on in the
    automatic mode, off with ``bits`` (uniform bits stay the plain baseline). ``rates`` are prices
    of a bit in the rounding, in units of the squared step, one candidate each (0: nearest).
    ``lowrank`` offers factor pairs fitted to the layers' inputs in the automatic mode, and
    ``layer_steps`` integer candidates with one step for the whole layer beside those with a
    step per channel; ``wide_levels`` makes the automatic mode's integer candidates whose
    container has room for more levels than their width (2, 3, 5..7, 9..12 bits) with symbols
    that run to the container's range instead of clipping at the width's (the narrowest width
    keeps its clipped form too; off by default: it pays per layer, not under the contract, see
    the design notes). ``sweep``
    "full" measures every candidate, "proxy" one per weight (the others scaled by their layer
    error), "auto" picks by ``sweep_budget`` (seconds) (the contract always takes the proxy);
    ``sweep_cache`` (a folder) keeps sweeps for reruns with other bounds or targets.
    ``noise_sigmas`` lets a neighbourhood plan pass while its loss change is at most that many
    standard errors above the bound. ``fold`` fuses BatchNormalization into the Conv before it,
    as ONNX Runtime does at load time. ``devices`` are where the result is validated."""

    lossless: bool = False
    bits: int | None = None
    plan: str | os.PathLike | dict | None = None
    target_ratio: float | None = None
    target_size: int | str | None = None
    max_loss_increase: float | str | None = None
    contract: Contract = field(default_factory=Contract)
    model_output: str | None = None  # the model output the loss and labels refer to (default: the first)
    loss: str = "auto"
    bits_choices: tuple[int, ...] = DEFAULT_BITS_CHOICES
    keep: tuple[str, ...] = ()  # patterns of weights kept in float32
    pins: dict[str, int] = field(default_factory=dict)  # pattern -> bits
    ranks: dict[str, int] = field(default_factory=dict)  # pattern -> rank
    compensate: bool | None = None  # None: on in the automatic mode, off with bits
    rates: tuple[float, ...] = DEFAULT_RATES
    lowrank: bool = True
    layer_steps: bool = True
    wide_levels: bool = False
    taylor: bool = True
    sweep: str = "auto"
    sweep_budget: float = 300.0  # seconds
    sweep_cache: str | os.PathLike | None = None
    noise_sigmas: float = 0.0
    fold: bool = True
    devices: tuple[str, ...] = ("cpu", "cuda")
    quiet: bool = False

    def __post_init__(self) -> None:
        for name in ("bits_choices", "keep", "rates", "devices"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("pins", "ranks"):
            object.__setattr__(self, name, dict(getattr(self, name) or {}))
        self._check_mode()
        if self.loss not in LOSS_KINDS:
            raise OnnxL2Error(f"unknown loss {self.loss!r} (choose from {', '.join(LOSS_KINDS)})")
        self.automatic()  # the automatic mode's own checks (bit choices, rates, sweep, pins, contract)
        object.__setattr__(self, "devices", check_devices(self.devices))  # each device once

    def _check_mode(self) -> None:
        targets = self.target_ratio is not None or self.target_size is not None
        if self.lossless and (self.bits is not None or targets or self.plan is not None):
            raise OnnxL2Error("--lossless takes no --bits, --target-ratio, --target-size or --plan")
        if self.lossless and self.model_output is not None:
            raise OnnxL2Error("--lossless takes no --model-output: it measures no output (the file decodes byte for byte)")
        if self.plan is not None and (self.bits is not None or targets):
            raise OnnxL2Error("--plan fixes every choice: it takes no --bits N or target")
        if self.bits is not None and targets:
            raise OnnxL2Error("give either --bits or a target (--target-ratio / --target-size), not both")
        if self.target_ratio is not None and self.target_size is not None:
            raise OnnxL2Error("give either --target-ratio or --target-size, not both")
        if targets and self.max_loss_increase is not None:
            raise OnnxL2Error("give either a target or --max-loss-increase, not both")
        if self.bits is not None and self.bits not in INTEGER_BITS:
            raise OnnxL2Error(f"--bits must be between {INTEGER_BITS[0]} and {INTEGER_BITS[-1]}, got {self.bits}")
        if self.bits is not None and len(self.rates) != 1:
            raise OnnxL2Error("--bits takes one rate (--rates R)")
        if self.target_ratio is not None and self.target_ratio <= 1:
            raise OnnxL2Error(f"--target-ratio must be above 1, got {self.target_ratio}")
        if self.ranks and (self.lossless or self.plan is not None):
            raise OnnxL2Error("--rank takes no --lossless or --plan (a plan names its ranks itself: int6+gptq+rank32)")

    def automatic(self, target_bytes: int | None = None) -> SearchRules:
        """The automatic mode's share of these options (also what ``bits`` and ``plan`` use for
        pins, ranks and compensation)."""
        return SearchRules(self.bits_choices, self.keep, self.pins, self.loss, self.model_output, self.max_loss_increase,
                            target_bytes, self.contract, self.taylor, self.sweep, self.sweep_budget,
                            self.mode == "auto" if self.compensate is None else self.compensate, self.rates,
                            self.noise_sigmas, self.lowrank, self.ranks, self.layer_steps, self.wide_levels)

    def target_bytes(self, original_bytes: int) -> int | None:
        """The size budget in bytes (None: no budget), from a ratio of ``original_bytes`` or a size."""
        if self.target_ratio is not None:
            return int(original_bytes / self.target_ratio)
        if isinstance(self.target_size, str):
            return parse_size(self.target_size)
        return int(self.target_size) if self.target_size is not None else None

    @property
    def mode(self) -> str:
        """"lossless", "uniform", "plan" or "auto"."""
        if self.lossless:
            return "lossless"
        return "uniform" if self.bits is not None else "plan" if self.plan is not None else "auto"

    def with_fields(self, **changes) -> "CompressOptions":
        """A copy with some fields changed (checked again)."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"compress() got unexpected options: {', '.join(unknown)}")
        return replace(self, **changes)
