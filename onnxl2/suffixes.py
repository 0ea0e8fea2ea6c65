"""The part of a model after a cut, run from cached activations: a one-weight pass of the sweep.

Why: the sweep runs the whole model once per measured candidate, yet a candidate changes only
what its weight's readers compute and what follows them; everything before the first reader
gives the original's activations on every pass. Cutting the graph at a few places, caching the
activations that cross each cut once, and running each weight's pass from the latest cut
before its first reader skips that part, with the same arithmetic on the same inputs (ONNX
Runtime may fuse operators across the cut differently: the outputs agree to float rounding).

Cuts are chosen to minimise the work of all the passes: a weight's pass costs the multiply-adds
of the layers from its cut on (``costs``), and a cut must save at least ``CUT_PRICE`` full
passes' worth (its session and the activation pass that fills its cache are not free). The
cached activations stay under ``CACHE_BYTES``; past it the cuts that hold most are dropped.
One cut's session is open at a time and the sweep takes its passes in cut order: each session
keeps a memory arena at its peak (four open at once took the detector's run from 1.0 to 2.7
GB), and without arenas the detector's large buffers, allocated afresh each run, cost the time
the cuts save.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx
from onnx import GraphProto, ModelProto, NodeProto, helper
from onnxruntime import InferenceSession

from .runtime import make_session

#: A cut is made only where it saves this many passes over the whole model.
CUT_PRICE = 2.0
#: At most this many bytes of activations are cached for all cuts together (they add to the
#: run's peak memory: 0.3 GB on the detector's four 640x640 samples).
CACHE_BYTES = 512 << 20
MAX_CUTS = 16


def _graph_defines(graph: GraphProto) -> set[str]:
    names = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.output)
    return names


def outer_reads(node: NodeProto) -> set[str]:
    """Every name ``node`` reads from its graph: its inputs, and what its subgraphs read from
    outside themselves (an If branch may use any tensor of the enclosing graph)."""
    reads = {name for name in node.input if name}
    for attr in node.attribute:
        subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for sub in subs:
            inner = _graph_defines(sub)
            for child in sub.node:
                reads |= outer_reads(child) - inner
            reads |= {o.name for o in sub.output if o.name not in inner}
    return reads


def output_cone(graph: GraphProto, output: str) -> list[NodeProto]:
    """The nodes ``output`` depends on, in graph (topological) order."""
    producer = {name: k for k, node in enumerate(graph.node) for name in node.output if name}
    needed, wanted, stack = set(), {output}, [output]
    while stack:
        name = stack.pop()
        k = producer.get(name)
        if k is None or k in needed:
            continue
        needed.add(k)
        for read in outer_reads(graph.node[k]) - wanted:
            wanted.add(read)
            stack.append(read)
    return [graph.node[k] for k in sorted(needed)]


def choose_cuts(first_reads: Mapping[str, int], costs: Mapping[str, float]) -> list[int]:
    """Positions (in the cone) to cut at, minimising the summed work of every weight's pass plus
    ``CUT_PRICE`` full passes a cut; a weight's pass runs from the latest cut at or before its
    first reader (``first_reads``), and the work from a position is the cost of the weights read
    from there on. Exact, by dynamic programming over the distinct first readers."""
    total = float(sum(costs.get(k, 0.0) for k in first_reads))
    if total <= 0:
        return []
    positions = np.array(sorted(set(first_reads.values())))
    at = np.searchsorted(positions, [first_reads[k] for k in first_reads])
    work_at = np.bincount(at, weights=[costs.get(k, 0.0) for k in first_reads], minlength=positions.size)
    users = np.bincount(at, minlength=positions.size).astype(np.float64)
    after = np.cumsum(work_at[::-1])[::-1]  # a pass's work from each position on
    served = np.concatenate((np.cumsum(users[::-1])[::-1], [0.0]))  # weights at positions[i:]
    n, price = positions.size, CUT_PRICE * total
    best, following = np.zeros(n + 1), np.full(n + 1, n)

    def segment(i: int, start_work: float) -> tuple[float, int]:
        """Least work of the weights from index i on, their segment starting with ``start_work``."""
        j = np.arange(i + 1, n + 1)
        cost = (served[i] - served[j]) * start_work + np.where(j < n, price + best[np.minimum(j, n - 1)], 0.0)
        k = int(np.argmin(cost))
        return float(cost[k]), int(j[k])

    for i in range(n - 1, -1, -1):  # best[i]: a cut at positions[i]
        best[i], following[i] = segment(i, after[i])
    # the model's start serves the weights before the first cut, if any
    starts = [(served[0] - served[j]) * total + (price + best[j] if j < n else 0.0) for j in range(n + 1)]
    j, cuts = int(np.argmin(starts)), []
    while j < n:
        if positions[j] > 0:
            cuts.append(int(positions[j]))
        j = int(following[j])
    return cuts[:MAX_CUTS]


@dataclass
class Suffix:
    """One cut: where the suffix starts, what crosses it, its session and cached activations."""

    position: int
    frontier: list[str]
    weights: set[str]  # names of the fed weights the suffix reads
    session: InferenceSession | None = None  # open while its passes run (see Suffixes.session)
    model: bytes = b""
    inputs: set[str] = field(default_factory=set)
    cache: list[dict[str, np.ndarray]] = field(default_factory=list)


def frontier_at(cone: list[NodeProto], reads_of: list[set[str]], position: int, fed: set[str]) -> list[str]:
    """Names produced before ``position`` and read from it on (graph inputs and weights are fed
    anyway; initializers stay in the model); ``reads_of``: each cone node's :func:`outer_reads`."""
    produced_after = {name for node in cone[position:] for name in node.output if name}
    reads = set().union(*reads_of[position:]) - produced_after
    produced_before = {name for node in cone[:position] for name in node.output if name}
    return sorted((reads & produced_before) - fed)


def suffix_model(proto: ModelProto, cone: list[NodeProto], reads_of: list[set[str]], position: int,
                 frontier: list[str], arrays: Mapping[str, np.ndarray], output: str) -> ModelProto:
    """The model from ``cone[position]`` on, the ``frontier`` activations as inputs (typed from
    the cached ``arrays``), ``output`` its only output."""
    nodes = cone[position:]
    reads = set().union(*reads_of[position:])
    graph = proto.graph
    inputs = [i for i in graph.input if i.name in reads]
    inputs += [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arrays[name].dtype),
                                             [None] * arrays[name].ndim) for name in frontier]
    outputs = [o for o in graph.output if o.name == output]
    initializers = [t for t in graph.initializer if t.name in reads]
    crossing = set(frontier)
    infos = [v for v in graph.value_info if v.name not in crossing]
    sub = helper.make_graph(nodes, graph.name + "_suffix", inputs, outputs, initializers, value_info=infos)
    out = helper.make_model(sub, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    out.functions.extend(proto.functions)
    return out


class Suffixes:
    """The cuts of one probe model for one studied output, built and filled on demand."""

    def __init__(self, proto: ModelProto, output: str, weight_names: Mapping[str, str], device: str) -> None:
        self.proto, self.output, self.device = proto, output, device
        self.names = dict(weight_names)  # weight key -> the graph input that feeds it
        self.cone = output_cone(proto.graph, output)
        self.reads_of = [outer_reads(node) for node in self.cone]
        self.first: dict[str, int] = {}
        fed = set(self.names.values())
        for k, reads in enumerate(self.reads_of):
            for name in reads & fed:
                self.first.setdefault(name, k)
        self.fed = fed
        self.cuts: list[Suffix] = []

    def build(self, costs: Mapping[str, float], feeds: list[dict[str, np.ndarray]]) -> None:
        """Choose the cuts for weights of these ``costs`` (key -> work of all their passes), fill
        their caches from one pass of the whole model on each batch's ``feeds`` (data and
        original weights), and keep each cut's model (its session opens when first used)."""
        first = {key: self.first[name] for key, name in self.names.items() if name in self.first}
        cuts = [Suffix(p, frontier_at(self.cone, self.reads_of, p, self.fed), set()) for p in choose_cuts(first, costs)]
        cuts = [c for c in cuts if c.frontier]
        if not cuts or not feeds:
            return
        names = sorted(set().union(*(c.frontier for c in cuts)))
        tapped = ModelProto()
        tapped.CopyFrom(self.proto)
        del tapped.graph.output[:]
        for name in names:  # ONNX Runtime types an output it can infer
            tapped.graph.output.add().name = name
        try:
            session = make_session(tapped, self.device, arena=False)
            first_batch = dict(zip(names, session.run(names, feeds[0])))
        except Exception:  # noqa: BLE001 - a cut only saves time: where the runtime refuses it, passes run whole
            return
        cuts = [c for c in cuts if all(isinstance(first_batch[n], np.ndarray) for n in c.frontier)]  # no sequences
        held = {c.position: len(feeds) * sum(first_batch[n].nbytes for n in c.frontier) for c in cuts}
        while cuts and sum(held[c.position] for c in cuts) > CACHE_BYTES:
            cuts.remove(max(cuts, key=lambda c: held[c.position]))
        if not cuts:
            return
        names = sorted(set().union(*(c.frontier for c in cuts)))
        arrays = [{n: first_batch[n] for n in names}] + [dict(zip(names, session.run(names, f))) for f in feeds[1:]]
        del session, tapped
        for cut in cuts:
            model = suffix_model(self.proto, self.cone, self.reads_of, cut.position, cut.frontier, arrays[0],
                                 self.output)
            cut.model = model.SerializeToString()
            cut.inputs = {i.name for i in model.graph.input}
            cut.weights = cut.inputs & self.fed
            cut.cache = [{n: a[n] for n in cut.frontier} for a in arrays]
            self.cuts.append(cut)
        self.cuts.sort(key=lambda c: c.position)

    def session(self, cut: Suffix) -> InferenceSession | None:
        """The cut's session, opened on first use; the previously used cut's is closed. Each
        session keeps a memory arena at its peak, so one open at a time holds the memory of one
        (the sweep takes its passes in cut order, see :meth:`start`). None, and the cut is
        dropped, where ONNX Runtime refuses its model: its passes then run whole."""
        if cut.session is None:
            for other in self.cuts:
                other.session = None
            try:
                cut.session = make_session(cut.model, self.device)
            except Exception:  # noqa: BLE001 - as for the caching pass
                self.cuts.remove(cut)
                return None
        return cut.session

    def start(self, key: str) -> int:
        """Where a pass changing weight ``key`` starts: its cut's position, 0 for the whole model."""
        cut = self.cut_for({key})
        return cut.position if cut is not None else 0

    def cut_for(self, changed: set[str]) -> Suffix | None:
        """The latest cut before every reader of the ``changed`` weight keys, if any."""
        if not self.cuts or not changed:
            return None
        starts = [self.first.get(self.names.get(key, ""), -1) for key in changed]
        if min(starts) < 0:
            return None
        usable = [c for c in self.cuts if c.position <= min(starts)]
        return usable[-1] if usable else None
