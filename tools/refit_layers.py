"""Refit a plan's layers, one after another, to the original model's outputs from the compressed
model's own inputs, and say whether that helps on held-out data (an experiment, not a mode).

    python tools/refit_layers.py MODEL --data CALIB --eval EVAL --plan plan.json [--eval-labels Y]
                                 [--chunks N] [--ridge R]

Error compensation (GPTQ) keeps each layer's output close on the *original* model's inputs.
Once earlier layers are rounded, a layer sees other inputs ``Xq``; this tool refits it against
the original output ``X W`` instead: ``W* = argmin ||Xq V - X W||^2 + R ||D^1/2 (V - W)||^2``
(D: the diagonal of ``Xq^T Xq``, so the ridge pulls towards the original weight), then rounds
``W*`` with compensation through ``Xq^T Xq`` at the plan's bit-width. Layers go in graph
order, ``--chunks`` groups at a time (default: every compensated layer alone, which costs two
passes over the calibration data per layer); a chunk's layers all see the inputs of the model
as it was before the chunk. The moved biases stay as the plan made them.

Prints, for the plan and for the refitted model: the loss change on the calibration and on the
held-out data (cross-entropy to the original's arg-max, or the normalised output distance;
paired, with its standard error), the mean and least output cosine and the top-1 agreement on
the held-out data (and the accuracy, given ``--eval-labels`` of a classifier). The point is the
held-out column: the refit has many more free parameters than the calibration rows of a
convolution's correlated patches can pin down.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxl2.api import _fixed_choices, _read_plan  # noqa: E402
from onnxl2.candidates import Candidate  # noqa: E402
from onnxl2.data import batch_size_for, input_specs, iter_batches, load_data  # noqa: E402
from onnxl2.evaluate import accuracy, compare_output, make_session  # noqa: E402
from onnxl2.hessian import MAX_ROWS_PER_BATCH, LayerHessian, _input_rows, _rows_rng, _sites  # noqa: E402
from onnxl2.losses import make_loss  # noqa: E402
from onnxl2.mixed import MixedOptions  # noqa: E402
from onnxl2.model import discover_weights, load_model  # noqa: E402
from onnxl2.sensitivity import Probe, probe_model  # noqa: E402
from onnxl2.transforms.compensate import compensated_round, from_rows, to_rows  # noqa: E402
from onnxl2.transforms.fold import fold_batchnorm  # noqa: E402
from onnxl2.transforms.quantize import quantize_per_channel  # noqa: E402


def _feeds(chosen: dict[str, Candidate]) -> dict[str, np.ndarray]:
    out = {}
    for cand in chosen.values():
        out.update(cand.feeds())
    return out


def _score(tag: str, calib: Probe, held: Probe, held_original: np.ndarray, feeds: dict,
           labels: np.ndarray | None = None) -> None:
    c, h = calib.change(feeds), held.change(feeds)
    out = held.outputs(feeds)
    seen = compare_output(held.output, held_original, out)
    top1 = f"   top-1 agreement {seen.top1_agreement:.4f}" if seen.top1_agreement is not None else ""
    acc = f"   accuracy {accuracy(out, labels):.4f}" if labels is not None else ""
    print(f"{tag:10s} calibration {c.mean:+.5f} +- {c.se:.5f}   held-out {h.mean:+.5f} +- {h.se:.5f}   "
          f"cosine {seen.cosine_mean:.5f} (least {seen.cosine_min:.4f}){top1}{acc}", flush=True)


class _Moments:
    """``Xq^T Xq``, ``Xq^T X`` and both input means of some layers, from one pass of the
    original and one of the compressed model (same sampled rows)."""

    def __init__(self, proto: onnx.ModelProto, probe: Probe, sites: list, batches: list[dict]):
        model = probe_model(proto, probe.weights)
        self.graph_inputs = {i.name for i in model.graph.input}
        present = {o.name for o in model.graph.output}
        for name in dict.fromkeys(s.activation for s in sites):
            if name not in self.graph_inputs and name not in present:
                model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        self.session = make_session(model, "cpu")
        self.probe, self.batches = probe, batches

    def gather(self, chunk: list, feeds: dict) -> dict[str, list]:
        original = {w.name: self.probe.originals[w.key] for w in self.probe.weights}
        compressed = {w.name: feeds.get(w.key, self.probe.originals[w.key]) for w in self.probe.weights}
        names = list(dict.fromkeys(s.activation for s in chunk if s.activation not in self.graph_inputs))
        sums: dict[str, list] = {}
        for index, batch in enumerate(self.batches):
            xo = {**batch, **dict(zip(names, self.session.run(names, {**batch, **original})))}
            xq = {**batch, **dict(zip(names, self.session.run(names, {**batch, **compressed})))}
            for site in chunk:
                rows = [np.ascontiguousarray(_input_rows(site, np.asarray(x[site.activation], np.float32),
                                                         MAX_ROWS_PER_BATCH, _rows_rng(0, index, site))[0]
                                             .transpose(1, 0, 2)).astype(np.float64) for x in (xo, xq)]
                o, q = rows
                parts = (q.transpose(0, 2, 1) @ q, q.transpose(0, 2, 1) @ o, q.sum(1), o.sum(1), q.shape[1])
                old = sums.get(site.weight.key)
                sums[site.weight.key] = list(parts) if old is None else [a + b for a, b in zip(old, parts)]
        return sums


def refit(cand: Candidate, layout: str, moments: list, ridge: float) -> Candidate:
    """The candidate's layer refitted (see the module docstring); the same bits, the plan's bias."""
    hq, cross, sum_q, _, rows = moments
    groups = hq.shape[0]
    w = to_rows(cand.original, layout, groups)
    diag = np.einsum("gkk->gk", hq)
    damp = ridge * np.maximum(diag, 1e-12 * diag.mean())
    lhs = hq + damp[:, :, None] * np.eye(hq.shape[-1])[None]
    rhs = np.einsum("grk,glk->grl", w, cross) + w * damp[:, None, :]
    target = from_rows(np.linalg.solve(lhs, rhs.transpose(0, 2, 1)).transpose(0, 2, 1), cand.original.shape,
                       layout).astype(cand.original.dtype)
    base = quantize_per_channel(target, cand.bits, cand.quantized.axis, key=cand.key)
    (rounded,) = compensated_round(target, cand.quantized.axis, [base],
                                   LayerHessian(cand.key, layout, groups, hq, rows, sum_q / rows))
    return Candidate(cand.key, cand.bits, cand.coded_bytes, cand.original, rounded, compensated=True,
                     bias_key=cand.bias_key, bias_values=cand.bias_values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", required=True, help="calibration data (.npz or folder of .npy)")
    parser.add_argument("--eval", required=True, help="held-out data, same form")
    parser.add_argument("--plan", required=True, help="a plan.json (its +gptq choices are refitted)")
    parser.add_argument("--eval-labels", help="class labels of the held-out data (.npy): adds accuracy")
    parser.add_argument("--chunks", type=int, default=0, help="layer groups (0: every layer alone)")
    parser.add_argument("--ridge", type=float, default=0.1, help="pull towards the original weight")
    args = parser.parse_args()
    loaded = load_model(args.model)
    proto, _ = fold_batchnorm(loaded.proto)
    every = discover_weights(proto)
    data, held_data = load_data(args.data, loaded.proto), load_data(args.eval, loaded.proto)
    batch = batch_size_for(data, input_specs(proto))
    chosen, _ = _fixed_choices(proto, every, None, MixedOptions((8,), (), {}), _read_plan(args.plan)[0], data)
    studied = [w for w in every if w.compressible]
    sites = [s for s in _sites(proto, studied, every)
             if chosen[s.weight.key].quantized is not None and chosen[s.weight.key].compensated]
    position = {id(n): i for i, n in enumerate(proto.graph.node)}  # graph order is topological
    sites.sort(key=lambda s: position[id(s.node)])
    biases = {c.bias_key for c in chosen.values() if c.bias_key is not None}
    fed = studied + [w for w in every if w.key in biases and w not in studied]
    output = proto.graph.output[0].name
    probes = []
    for split in (data, held_data):
        probe = Probe(proto, fed, split, batch, output)
        original = probe.outputs({})
        probe.set_loss(make_loss("auto", output, original, None), original)
        probes.append((probe, original))
    (calib, _), (held, held_original) = probes
    feeds = _feeds(chosen)
    labels = np.load(args.eval_labels) if args.eval_labels else None
    _score("plan", calib, held, held_original, feeds, labels)
    moments = _Moments(proto, calib, sites, list(iter_batches(data, batch)))
    per_chunk = -(-len(sites) // args.chunks) if args.chunks > 0 else 1
    started = time.perf_counter()
    for start in range(0, len(sites), per_chunk):
        chunk = sites[start:start + per_chunk]
        gathered = moments.gather(chunk, feeds)
        for site in chunk:
            cand = refit(chosen[site.weight.key], site.layout, gathered[site.weight.key], args.ridge)
            chosen[site.weight.key] = cand
            feeds.update(cand.feeds())
    print(f"{len(sites)} layers refitted in {-(-len(sites) // per_chunk)} steps, "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    _score("refitted", calib, held, held_original, feeds, labels)


if __name__ == "__main__":
    main()
