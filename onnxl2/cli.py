"""Command line: a thin layer over :mod:`onnxl2.api`.

User errors print one line on stderr and exit 1 (2 for usage errors, as click does).
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from . import api
from .errors import OnnxL2Error
from .losses import LOSS_KINDS
from .fileio import write_files_atomically
from .model import MIN_COMPRESSIBLE_ELEMENTS
from .candidates import DEFAULT_BITS_CHOICES
from .contract import Contract, load_metric
from .options import CompressOptions
from .report import (allocation_rows, format_table, frontier_header, frontier_rows, human_bytes, summary_rows, to_json,
                     validation_rows)


def _user_errors(func):
    """Turn OnnxL2Error (and unreadable files) into one line on stderr and a non-zero exit."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except OnnxL2Error as exc:
            click.echo(f"onnxl2: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (OSError, MemoryError) as exc:
            click.echo(f"onnxl2: error: {exc}", err=True)
            sys.exit(1)
    return wrapper


@click.group()
@click.version_option(package_name="onnxl2")
def main() -> None:
    """Post-training size compression for ONNX models."""


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the full listing as JSON.")
@click.option("--all", "show_all", is_flag=True, help="List small tensors too (shapes, biases).")
@_user_errors
def inspect(model: str, as_json: bool, show_all: bool) -> None:
    """List the weights of MODEL: consumers, shapes, bytes, channel axis, and what gets compressed."""
    result = api.inspect(model)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    rows = []
    hidden = 0
    for w in result.weights:
        if not show_all and not w.compressible and w.numel < MIN_COMPRESSIBLE_ELEMENTS:
            hidden += 1
            continue
        consumers = ",".join(sorted({c.op_type for c in w.consumers})) or "-"
        rows.append([w.name if w.graph == "main" else f"{w.graph}::{w.name}", consumers,
                     "x".join(map(str, w.shape)) or "scalar", w.dtype.name, f"{w.numel:,}",
                     f"{w.nbytes:,}", _axis_text(w), w.axis_from or "-",
                     "yes" if w.compressible else f"no: {w.reason}"])
    click.echo(format_table(rows, ["weight", "consumers", "shape", "dtype", "params", "bytes",
                                   "axis", "axis from", "compress"]))
    t = result.totals()
    click.echo("")
    click.echo(f"{result.model}: {human_bytes(result.file_bytes)} on disk, opset {result.opset}, "
               f"IR {result.ir_version}")
    click.echo(f"{t['weights']} constant tensors, {t['params']:,} params ({human_bytes(t['bytes'])}); "
               f"compressible: {t['compressible_weights']} weights, {t['compressible_params']:,} params "
               f"({human_bytes(t['compressible_bytes'])}, "
               f"{100 * t['compressible_bytes'] / max(1, t['bytes']):.1f}% of weight bytes)")
    if hidden:
        click.echo(f"{hidden} tensors under {MIN_COMPRESSIBLE_ELEMENTS} elements not shown (--all lists them)")


def _axis_text(w) -> str:
    """The channel axis as inspect lists it: "1", "0+1" where the channels run over axes 0 and 1
    (a recurrent layer's directions and gate rows), "by size" where compressing chooses it, "-"
    where there is none."""
    if w.channel_axis is None:
        return "by size" if w.axis_from == "size" else "-"
    return "+".join(map(str, range(w.channel_axis + 1))) if w.merged_channels else str(w.channel_axis)


def _parse_bits(values: tuple[str, ...]) -> tuple[int | None, dict[str, int]]:
    """--bits N (uniform) and --bits PATTERN=N (pins), both repeatable in any mix."""
    uniform, pins = None, {}
    for value in values:
        pattern, sep, number = value.rpartition("=")
        try:
            bits = int(number)
        except ValueError:
            raise OnnxL2Error(f"--bits takes N or PATTERN=N, got {value!r}") from None
        if sep:
            pins[pattern] = bits
        else:
            uniform = bits
    return uniform, pins


def _parse_ranks(values: tuple[str, ...]) -> dict[str, int]:
    """--rank PATTERN=R, repeatable."""
    ranks = {}
    for value in values:
        pattern, sep, number = value.rpartition("=")
        try:
            ranks[pattern] = int(number)
        except ValueError:
            sep = ""
        if not sep or not pattern:
            raise OnnxL2Error(f"--rank takes PATTERN=R (e.g. 'linear_85*=64'), got {value!r}")
    return ranks


def _parse_choices(text: str | None) -> tuple[int, ...]:
    if not text:
        return DEFAULT_BITS_CHOICES
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise OnnxL2Error(f"--bits-choices takes a comma-separated list such as 2,4,8,16; got {text!r}") from None


def _parse_devices(text: str) -> tuple[str, ...]:
    """--devices cpu,cuda: names separated by commas (CompressOptions checks them)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parse_rates(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise OnnxL2Error(f"--rates takes numbers separated by commas, got {text!r}") from None


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(), help="Calibration data: .npz keyed by input name, or a folder of .npy.")
@click.option("--labels", type=click.Path(dir_okay=False), help="Integer labels (.npy) for --data: the task loss.")
@click.option("--eval-data", type=click.Path(), help="Held-out data that only judge the result (default: --data).")
@click.option("--eval-labels", type=click.Path(dir_okay=False), help="Integer labels for --eval-data.")
@click.option("--bits", "bits", multiple=True, metavar="N|PATTERN=N",
              help="N: uniform quantization at N bits (2..12; int16 containers above 8). PATTERN=N: pin "
                   "matching weights (repeatable).")
@click.option("--lossless", is_flag=True, help="No lossy step: decoding gives back the original file bit for bit.")
@click.option("--max-loss-increase",
              help="Automatic mode, the lossless neighbourhood instead of the contract: how far the calibration "
                   "loss may rise (absolute, or N%; 0: not at all).")
@click.option("--agreement", type=float, default=Contract.agreement, show_default=True,
              help="Contract without labels: top-1 agreement with the original on class-score outputs, at least.")
@click.option("--max-distance", type=float, default=Contract.max_distance, show_default=True,
              help="Contract: every output's RMS change in units of its channels' spread, probabilities as "
                   "logarithms (its upper confidence bound), at most.")
@click.option("--confidence", type=float, default=Contract.confidence, show_default=True,
              help="Contract: of the task-loss test with labels (a plan fails when the held-back samples show "
                   "its loss higher with this confidence) and of the distance's upper bound.")
@click.option("--metric", "metric_spec", metavar="FILE.py:FUNCTION",
              help="Contract: your metric(original_outputs, compressed_outputs) -> float (higher is better; dicts "
                   "of output name -> array) may drop by at most --max-drop.")
@click.option("--max-drop", type=float, default=Contract.max_drop, show_default=True,
              help="Contract with --metric: how far the metric may fall below its value on the original.")
@click.option("--decisions", multiple=True, metavar="OUTPUT",
              help="Contract without labels: an output whose arg-max is a decision, judged by top-1 agreement "
                   "(repeatable; 'none' for no such output). Default: outputs that look like class scores.")
@click.option("--ctc", multiple=True, metavar="OUTPUT",
              help="Contract without labels: an output of a CTC reader's per-step class scores (blank: class 0), "
                   "judged by its readings kept (repeats merged, blanks dropped) instead of every step's "
                   "decision (repeatable).")
@click.option("--holdout", type=float, default=Contract.holdout, show_default=True,
              help="Contract: share of the calibration samples held back from every choice to judge the plans.")
@click.option("--noise-sigmas", type=float, default=0.0, show_default=True,
              help="Neighbourhood: a plan passes while its loss change is at most this many standard errors above the bound.")
@click.option("--target-ratio", type=float, help="Automatic mode under a size budget: original file bytes / bitstream bytes.")
@click.option("--target-size", help="Automatic mode under a size budget: bitstream bytes (e.g. 3MB, 512KiB).")
@click.option("--bits-choices", help="Candidate bit-widths, e.g. 2,3,4,5,6,8,16 (16 = float16; float32 always allowed).")
@click.option("--keep", multiple=True, metavar="PATTERN", help="Keep matching weights in float32 (repeatable).")
@click.option("--loss", type=click.Choice(list(LOSS_KINDS)), default="auto", show_default=True,
              help="Loss the automatic mode measures (neighbour: embeddings judged by their nearest neighbours; "
                   "ctc: per-step class scores against --labels given as sequences [samples, length] padded with -1).")
@click.option("--model-output", help="Model output the loss (and labels) refer to (default: the first).")
@click.option("--plan", type=click.Path(dir_okay=False), help="Replay a plan.json (choices per weight) instead of searching.")
@click.option("--taylor/--no-taylor", default=True, show_default=True,
              help="Measure first/second-order terms in the sweep (without: a third of the passes).")
@click.option("--sweep", type=click.Choice(["auto", "full", "proxy"]), default="auto", show_default=True,
              help="full: measure every candidate; proxy: one per weight, the rest scaled; auto: the first of full, "
                   "full without Taylor terms, proxy, proxy without Taylor terms that fits --sweep-budget.")
@click.option("--sweep-budget", type=float, default=300.0, show_default=True, help="Seconds the sensitivity sweep may take (auto).")
@click.option("--sweep-cache", type=click.Path(file_okay=False),
              help="Folder keeping sensitivity sweeps: a rerun with another bound or target skips the sweep.")
@click.option("--compensate/--no-compensate", default=None,
              help="GPTQ error compensation through each layer's inputs on --data (automatic mode, or --bits "
                   "with --data), with bias correction where the layer has a bias. Default: on in the automatic "
                   "mode, off with --bits.")
@click.option("--rates", default="0", show_default=True,
              help="Prices of a bit in the rounding (units of the squared step), one candidate each, e.g. 0,0.3.")
@click.option("--lowrank/--no-lowrank", default=True, show_default=True,
              help="Automatic mode: offer low-rank factorisations (MatMul, Gemm and ungrouped Conv layers get "
                   "factor pairs at a few ranks, chosen in the same knapsack as the bits).")
@click.option("--layer-steps/--no-layer-steps", default=True, show_default=True,
              help="Automatic mode: offer integer candidates with one step for the whole layer beside those with "
                   "a step per channel (the knapsack picks per layer).")
@click.option("--wide-levels/--no-wide-levels", default=False, show_default=True,
              help="Automatic mode: integer candidates whose container holds more levels than their width "
                   "(2, 3, 5..7, 9..12 bits) let symbols run to the container's range instead of clipping "
                   "(the narrowest width keeps its clipped form too).")
@click.option("--rank", "ranks", multiple=True, metavar="PATTERN=R",
              help="Factorise matching layers at rank R (repeatable); their bits are still chosen.")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--devices", default="cpu,cuda", show_default=True,
              help="Where the result is validated (cpu, cuda; CUDA skipped cleanly where absent).")
@click.option("--fold/--no-fold", default=True, show_default=True,
              help="Fuse BatchNormalization into the Conv before it (as ONNX Runtime does at load time).")
@click.option("--quiet", is_flag=True, help="No progress on the terminal.")
@_user_errors
def compress(model, data, labels, eval_data, eval_labels, bits, lossless, max_loss_increase, agreement, max_distance,
             confidence, metric_spec, max_drop, decisions, ctc, holdout, noise_sigmas, target_ratio,
             target_size, bits_choices, keep, loss, model_output, plan, taylor, sweep, sweep_budget,
             sweep_cache, compensate, rates, lowrank, layer_steps, wide_levels, ranks, out_dir, devices, fold, quiet) -> None:
    """Compress MODEL into a folder: NAME.l2b (bitstream), NAME.l2.onnx (runnable), plan.json, report.json/.html.

    Without --bits, --lossless or --plan it runs the automatic mode on --data: the smallest plan
    that keeps the original's behaviour (the contract: with --labels its task loss and accuracy,
    else decisions and every output's scale-aware distance, or --metric) on calibration samples
    held back from every choice; with --max-loss-increase the lossless neighbourhood; under
    --target-ratio / --target-size the least loss change that fits.
    """
    metric, metric_name = load_metric(metric_spec) if metric_spec else (None, "")
    chosen_decisions = None if not decisions else () if decisions == ("none",) else tuple(decisions)
    contract = Contract(agreement, max_distance, confidence, metric, metric_name, max_drop, holdout, chosen_decisions,
                        ctc)
    uniform, pins = _parse_bits(bits)
    options = CompressOptions(
        lossless=lossless, bits=uniform, plan=plan, target_ratio=target_ratio, target_size=target_size,
        max_loss_increase=max_loss_increase, contract=contract, model_output=model_output, loss=loss,
        bits_choices=_parse_choices(bits_choices), keep=keep, pins=pins, ranks=_parse_ranks(ranks),
        compensate=compensate, rates=_parse_rates(rates), lowrank=lowrank, layer_steps=layer_steps,
        wide_levels=wide_levels, taylor=taylor,
        sweep=sweep, sweep_budget=sweep_budget, sweep_cache=sweep_cache, noise_sigmas=noise_sigmas, fold=fold,
        devices=_parse_devices(devices), quiet=quiet)
    result = api.compress(model, data, labels=labels, eval_data=eval_data, eval_labels=eval_labels,
                          out_dir=out_dir, options=options)
    if "contract" in result.report.get("allocation", {}):
        click.echo(format_table(frontier_rows(result.report), frontier_header(result.report)))
        click.echo("")
    elif "allocation" in result.report:
        click.echo(format_table(allocation_rows(result.report), ["weight", "choice", "coded bytes",
                                                                 "predicted dL", "measured dL", ""]))
        click.echo("")
    click.echo(format_table(summary_rows(result.report), ["", "value"], align_numbers=False))
    click.echo("wrote " + ", ".join(str(p) for p in result.written))


@main.command()
@click.argument("bitstream", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@click.option("--max-output-size", metavar="SIZE",
              help="Most bytes the bitstream may decode to (e.g. 8GB; default 64x its own size, at least 1 MiB).")
@_user_errors
def decompress(bitstream: str, output: str, max_output_size: str | None) -> None:
    """Decode BITSTREAM (.l2b) back into the ONNX model it holds, exactly.

    External data files go beside OUTPUT under the names the bitstream gives them (plain file
    names only); nothing is written unless every file decodes and matches its checksum.
    """
    result = api.decompress(bitstream, output, max_output_size=max_output_size)
    click.echo("wrote " + ", ".join(f"{p} ({human_bytes(p.stat().st_size)})" for p in result.written))


@main.command()
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("compressed", type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(), help="Evaluation data (.npz or folder of .npy).")
@click.option("--labels", type=click.Path(dir_okay=False), help="Integer labels (.npy): adds task accuracy.")
@click.option("--model-output", help="Model output the labels refer to (default: the first).")
@click.option("--devices", default="cpu,cuda", show_default=True, help="Where to run both models (cpu, cuda).")
@click.option("--ctc", multiple=True, metavar="OUTPUT",
              help="An output of a CTC reader's per-step class scores: also count the readings kept (repeatable).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the result as JSON here.")
@_user_errors
def validate(original, compressed, data, labels, model_output, devices, ctc, json_out) -> None:
    """Run ORIGINAL and COMPRESSED (.onnx or .l2b) on the same data and compare them."""
    result = api.validate(original, compressed, data, labels=labels, model_output=model_output,
                          devices=_parse_devices(devices), ctc=ctc)
    v = result.to_dict()
    rows = [["samples", str(v["samples"])]]
    if v.get("original_bytes"):
        rows.append(["sizes", f"{human_bytes(v['original_bytes'])} -> {human_bytes(v['compressed_bytes'])}"])
    click.echo(format_table(rows + validation_rows(v), ["", "value"], align_numbers=False))
    if json_out:
        write_files_atomically({Path(json_out): to_json(v)})


if __name__ == "__main__":
    main()
