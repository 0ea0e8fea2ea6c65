"""Fuzz the bitstream decoder as an attacker would: mutations that keep every checksum valid.

A plain mutation of a ``.l2b`` is caught by its CRCs before any decoder sees it; an attacker
recomputes them. So every mutation here unpacks the container into its sections, changes the
manifest (fields, types, structure, file names), a stream's bytes (flips, truncations,
insertions, huge varints), the section list (swaps, duplicates, drops) or swaps in a
decompression bomb, and packs it again with fresh checksums. A case passes when decoding either
raises the project's error or gives back exactly the files of the unmutated bitstream; anything
else is a crash or a silent wrong output.

    python tools/bitstream_fuzz.py --cases 10000 --seed 0

prints cases, errors, identical decodes, silent wrong outputs and crashes (both must be 0), the
highest peak RSS a case added and the slowest case; exits 1 on any crash or wrong output.
``tests/test_bitstream_fuzz.py`` runs a few hundred cases of the same generator in CI.
"""
from __future__ import annotations

import argparse
import json
import lzma
import random
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxl2 import api  # noqa: E402
from onnxl2.codec import lzma_raw  # noqa: E402
from onnxl2.codec.container import _HEAD, _read_sections, decode_container  # noqa: E402
from onnxl2.codec.varint import encode_varints  # noqa: E402
from onnxl2.errors import OnnxL2Error  # noqa: E402

#: File names a manifest may be given: each must be refused before anything is written.
HOSTILE_NAMES = ["../evil.txt", "a/b/c/../../evil.txt", "/tmp/onnxl2-fuzz-evil.txt", "..", ".", "",
                 "C:evil.txt", "C:\\evil.txt", "a\\b.txt", "evil\x00.txt", "sub/model.onnx", "//x"]
_NUMBERS = [0, 1, -1, 2, 7, 63, 64, 255, 4096, 2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63, 2**64,
            2**100, -2**63, 10**30]
_OTHERS = [None, True, False, 1.5, -0.0, "1", "", [], {}, [[]], [1, 2, 3], {"a": 1}]


# ----------------------------------------------------------------------------- container repacking

@dataclass
class Unpacked:
    """A bitstream as its format version, flags and section payloads."""

    version: int
    flags: int
    sections: list[bytes]


def unpack(blob: bytes) -> Unpacked:
    _, version, flags, _ = _HEAD.unpack_from(blob, 0)
    return Unpacked(version, flags, [bytes(s) for s in _read_sections(blob)])


def pack(parts: Unpacked) -> bytes:
    """The sections behind a valid header of their format, checksums recomputed."""
    head = _HEAD.pack(b"ONNXL2B\x00", parts.version, parts.flags, len(parts.sections))
    body = b"".join(parts.sections)
    if parts.version < 3:
        table = b"".join(struct.pack("<QI", len(s), zlib.crc32(s)) for s in parts.sections)
        header = head + table
        return header + struct.pack("<I", zlib.crc32(header)) + body
    header = head + encode_varints(np.array([len(s) for s in parts.sections], dtype=np.int64))
    header += struct.pack("<I", zlib.crc32(body))
    return header + struct.pack("<I", zlib.crc32(header)) + body


def manifest_of(parts: Unpacked) -> object:
    return json.loads(lzma_raw.decompress(parts.sections[0], 1 << 26))


def with_manifest(parts: Unpacked, doc: object) -> Unpacked:
    text = json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()
    return Unpacked(parts.version, parts.flags, [lzma_raw.compress(text)] + parts.sections[1:])


def lzma_bomb(inflated_bytes: int) -> bytes:
    """An lzma_raw stream of zeros that inflates to about ``inflated_bytes`` (a multiple of 2 MiB)
    while holding a few hundred bytes per 2 MiB: one LZMA2 chunk that resets the dictionary,
    repeated (every copy decodes on its own), under the smallest dictionary the header allows,
    so that no dictionary check can refuse it."""
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": 1 << 12}]
    one = lzma.compress(bytes(1 << 21), format=lzma.FORMAT_RAW, filters=filters)
    return bytes([12]) + one[:-1] * max(1, inflated_bytes >> 21) + b"\x00"


# ----------------------------------------------------------------------------- seed bitstreams

def _seed_model(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv, MatMul, Gemm and Gather weights: every payload codec and the classed contexts."""
    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)
    nodes = [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("MatMul", ["f", "fc_w"], ["h"]),
             helper.make_node("Gemm", ["h", "out_w", "out_b"], ["g"], transB=1),
             helper.make_node("Gather", ["emb", "ids"], ["e"]),
             helper.make_node("ReduceMean", ["e"], ["m"], axes=[1], keepdims=0),
             helper.make_node("Add", ["g", "m"], ["y"])]
    inits = [init("conv_w", 8, 3, 3, 3), init("conv_b", 8), init("fc_w", 8 * 8 * 8, 48),
             init("out_w", 16, 48), init("out_b", 16), init("emb", 40, 16)]
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8]),
                                              helper.make_tensor_value_info("ids", TensorProto.INT64, [None, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def seed_bitstreams(seed: int = 0) -> dict[str, bytes]:
    """Bitstreams of every kind the writer makes: lossless (one file, and with external data),
    int4, int8 and int12 weights; plus the older formats kept in ``tests/data``."""
    model = _seed_model(np.random.default_rng(seed))
    seeds = {f"bits{b}": api.compress(model, bits=b, quiet=True).bitstream for b in (4, 8, 12)}
    seeds["lossless"] = api.compress(model, lossless=True, quiet=True).bitstream
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ext.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, location="ext.onnx.data",
                        size_threshold=256)
        seeds["lossless_external"] = api.compress(path, lossless=True, quiet=True).bitstream
    for version in (1, 2, 3, 4):
        fixture = ROOT / "tests" / "data" / f"format{version}.l2b"
        if fixture.is_file():
            seeds[f"format{version}"] = fixture.read_bytes()
    return {name: bytes(blob) for name, blob in seeds.items()}


# ----------------------------------------------------------------------------- mutations

def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON document, as a path of keys and indices (the root excluded)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        out.append(prefix + (key,))
        out.extend(_paths(child, prefix + (key,)))
    return out


def _get(doc: object, path: tuple) -> object:
    for key in path:
        doc = doc[key]
    return doc


def _hostile_value(rnd: random.Random, old: object) -> object:
    if isinstance(old, str):
        return rnd.choice(HOSTILE_NAMES + ["classed", "array", "nibbles", "symbols", "bogus", old + "x"]
                          + _OTHERS + [0])
    if isinstance(old, int) and not isinstance(old, bool):
        return rnd.choice(_NUMBERS + [old + 1, old - 1, old * 2, old // 2] + _OTHERS)
    if isinstance(old, list):
        return rnd.choice([[], old[:-1], old + old[-1:], old[::-1], [old], None, 0, "x"])
    return rnd.choice(_NUMBERS[:4] + _OTHERS)


def mutate_manifest_value(rnd: random.Random, parts: Unpacked) -> Unpacked:
    doc = manifest_of(parts)
    path = rnd.choice(_paths(doc))
    parent = _get(doc, path[:-1])
    parent[path[-1]] = _hostile_value(rnd, parent[path[-1]])
    return with_manifest(parts, doc)


def mutate_manifest_name(rnd: random.Random, parts: Unpacked) -> Unpacked:
    doc = manifest_of(parts)
    entry = rnd.choice(doc["files"])
    entry["name"] = rnd.choice(HOSTILE_NAMES + [doc["files"][0]["name"]])  # a duplicate, or hostile
    if len(doc["files"]) == 1 and entry["name"] == doc["files"][0]["name"]:
        doc["files"].append(dict(entry))
    return with_manifest(parts, doc)


def mutate_manifest_structure(rnd: random.Random, parts: Unpacked) -> Unpacked:
    doc = manifest_of(parts)
    containers = [p for p in _paths(doc) if isinstance(_get(doc, p), (dict, list)) and _get(doc, p)]
    target = _get(doc, rnd.choice(containers)) if containers and rnd.random() < 0.9 else doc
    if isinstance(target, dict):
        del target[rnd.choice(list(target))]
    elif rnd.random() < 0.4:
        del target[rnd.randrange(len(target))]
    elif rnd.random() < 0.5:
        target.append(target[rnd.randrange(len(target))])
    elif len(target) > 1:
        i, j = rnd.sample(range(len(target)), 2)
        target[i], target[j] = target[j], target[i]
    return with_manifest(parts, doc)


def mutate_span_numbers(rnd: random.Random, parts: Unpacked) -> Unpacked:
    """A span's count, length, offset or shape set to values that would allocate a lot."""
    doc = manifest_of(parts)
    spans = [s for f in doc["files"] for s in f["spans"]]
    if not spans:
        return mutate_manifest_value(rnd, parts)
    span = rnd.choice(spans)
    field = rnd.choice([0, 1, 4, 4, -1])
    big = rnd.choice([2**28, 2**29, 2**31, 2**33, 2**40, 2**62])
    if field == -1 and isinstance(span[-1], list):
        span[-1] = rnd.choice([[big, big], [2**33, 2**31], [big, 1, 1], [0, big], [-1, -big]])
        span[4] = rnd.choice([big, big * big % 2**64, 0])
    else:
        span[field if field >= 0 else 4] = big
        if rnd.random() < 0.5:  # keep length and size in step, so the inner decoders are reached
            span[1] = span[4]
            doc["files"][0]["size"] += big
    return with_manifest(parts, doc)


def mutate_section_bytes(rnd: random.Random, parts: Unpacked) -> Unpacked:
    index = rnd.randrange(1, len(parts.sections))
    data = bytearray(parts.sections[index])
    kind = rnd.choice(["flip", "set", "truncate", "insert", "delete", "varint"])
    if not data:
        data = bytearray(b"\x00")
    pos = rnd.randrange(len(data))
    if kind == "flip":
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    elif kind == "set":
        data[pos] = rnd.choice([0x00, 0x01, 0x7F, 0x80, 0xFF, rnd.randrange(256)])
    elif kind == "truncate":
        del data[pos:]
    elif kind == "insert":
        data[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
    elif kind == "delete":
        del data[pos:pos + rnd.randint(1, 16)]
    else:  # a huge varint where a count or length may be read
        data[pos:pos + 1] = encode_varints(np.array([rnd.choice([2**28, 2**29, 2**32, 2**40, 2**62])], np.uint64))
    sections = list(parts.sections)
    sections[index] = bytes(data)
    return Unpacked(parts.version, parts.flags, sections)


def mutate_sections(rnd: random.Random, parts: Unpacked) -> Unpacked:
    sections = list(parts.sections)
    kind = rnd.choice(["swap", "duplicate", "drop", "empty"])
    if kind == "swap" and len(sections) > 2:
        i, j = rnd.sample(range(len(sections)), 2)
        sections[i], sections[j] = sections[j], sections[i]
    elif kind == "duplicate":
        sections.insert(rnd.randrange(len(sections) + 1), sections[rnd.randrange(len(sections))])
    elif kind == "drop" and len(sections) > 2:
        del sections[rnd.randrange(len(sections))]
    else:
        sections[rnd.randrange(len(sections))] = b""
    return Unpacked(parts.version, parts.flags, sections)


def mutate_bomb(rnd: random.Random, parts: Unpacked, bombs: dict[int, bytes]) -> Unpacked:
    """The skeleton or the manifest replaced by a stream that inflates to gigabytes."""
    size = rnd.choice(sorted(bombs))
    sections = list(parts.sections)
    sections[rnd.choice([0, 1, 1])] = bombs[size]
    return Unpacked(parts.version, parts.flags, sections)


def mutate_header(rnd: random.Random, parts: Unpacked) -> Unpacked:
    return Unpacked(rnd.choice([1, 2, 3, 4, 5, 6, 0, 65535]), rnd.choice([0, 0, 1, 0xFFFF]), parts.sections)


MUTATIONS = {"manifest_value": mutate_manifest_value, "manifest_name": mutate_manifest_name,
             "manifest_structure": mutate_manifest_structure, "span_numbers": mutate_span_numbers,
             "section_bytes": mutate_section_bytes, "sections": mutate_sections, "header": mutate_header}


def raw_mutation(rnd: random.Random, blob: bytes) -> bytes:
    """A mutation with the checksums left as they are (a damaged download, not an attacker)."""
    data = bytearray(blob)
    if rnd.random() < 0.5:
        data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    else:
        del data[rnd.randrange(len(data)):]
    return bytes(data)


# ----------------------------------------------------------------------------- cases

@dataclass
class Case:
    seed_name: str
    mutation: str
    blob: bytes


def cases(seeds: dict[str, bytes], count: int, seed: int, bomb_sizes: tuple[int, ...] = (1 << 30, 6 << 30)):
    """``count`` mutated bitstreams, the same ones for the same ``seed``."""
    rnd = random.Random(seed)
    unpacked = {name: unpack(blob) for name, blob in seeds.items()}
    bombs = {size: lzma_bomb(size) for size in bomb_sizes}
    names = sorted(seeds)
    kinds = sorted(MUTATIONS) + ["bomb", "raw"]
    for _ in range(count):
        name, kind = rnd.choice(names), rnd.choice(kinds)
        if kind == "raw":
            yield Case(name, kind, raw_mutation(rnd, seeds[name]))
            continue
        parts = unpacked[name]
        mutated = mutate_bomb(rnd, parts, bombs) if kind == "bomb" else MUTATIONS[kind](rnd, parts)
        yield Case(name, kind, pack(mutated))


def outcome(blob: bytes, reference: list[tuple[str, bytes]]) -> tuple[str, str]:
    """("error" | "same" | "wrong" | "crash", detail) of decoding one bitstream as decompress
    does (the files it would write, without writing them).

    "same": the model's bytes (its name is not used, the model goes where the user says) and
    every other file's name and bytes equal the unmutated bitstream's.
    """
    try:
        result = api.decompress(blob)
        files, meta = result.files, result.meta
    except OnnxL2Error as exc:
        return "error", str(exc)
    except Exception:  # noqa: BLE001 - anything else is what the fuzzer looks for
        return "crash", traceback.format_exc(limit=6)
    got = [(name, bytes(data)) for name, data in files]
    same = len(got) == len(reference) and got[0][1] == reference[0][1] and got[1:] == reference[1:]
    if not same or not isinstance(meta, dict):
        return "wrong", f"{[n for n, _ in got]} against {[n for n, _ in reference]}"
    return "same", ""


class PeakRss:
    """The peak resident set size of this process since the last reset (Linux ``clear_refs``)."""

    def __init__(self):
        self.available = Path("/proc/self/clear_refs").exists()

    def reset(self) -> None:
        if self.available:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.available = False

    @staticmethod
    def _status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        return 0

    def peak_over_current(self, before: int) -> int:
        return max(0, self._status("VmHWM:") - before) if self.available else 0

    def current(self) -> int:
        return self._status("VmRSS:") if self.available else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=3, help="crashes and wrong outputs to print in full")
    args = parser.parse_args()
    seeds = seed_bitstreams(args.seed)
    reference = {name: [(n, bytes(d)) for n, d in decode_container(blob)[0]] for name, blob in seeds.items()}
    rss = PeakRss()
    tally, by_kind = Counter(), Counter()
    peak = (0, "")
    slowest = (0.0, "")
    shown = 0
    started = time.perf_counter()
    for index, case in enumerate(cases(seeds, args.cases, args.seed)):
        before = rss.current()
        rss.reset()
        t0 = time.perf_counter()
        result, detail = outcome(case.blob, reference[case.seed_name])
        seconds = time.perf_counter() - t0
        grown = rss.peak_over_current(before)
        label = f"case {index} ({case.seed_name}, {case.mutation}, {len(case.blob):,} B)"
        tally[result] += 1
        by_kind[(case.mutation, result)] += 1
        peak = max(peak, (grown, label))
        slowest = max(slowest, (seconds, label))
        if result in ("crash", "wrong") and shown < args.show:
            shown += 1
            print(f"{result}: {label}\n{detail}", file=sys.stderr)
    total = time.perf_counter() - started
    print(f"{args.cases} cases (seed {args.seed}, {len(seeds)} seed bitstreams) in {total:.1f} s")
    print(f"errors {tally['error']}, identical decodes {tally['same']}, "
          f"silent wrong outputs {tally['wrong']}, crashes {tally['crash']}")
    for kind in sorted({k for k, _ in by_kind}):
        print(f"  {kind:20s} " + ", ".join(f"{r} {by_kind[(kind, r)]}" for r in ("error", "same", "wrong", "crash")
                                           if by_kind[(kind, r)]))
    if rss.available:
        print(f"highest peak RSS added by one case: {peak[0] / 2**20:.1f} MiB, {peak[1]}")
    print(f"slowest case: {1000 * slowest[0]:.1f} ms, {slowest[1]}")
    return 1 if tally["crash"] or tally["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
