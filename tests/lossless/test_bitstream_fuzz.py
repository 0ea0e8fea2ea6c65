"""A seeded fuzz run over crafted bitstreams whose checksums are valid (``tools/bitstream_fuzz.py``
has the generator and runs 10,000+ cases): every case raises the project's error or decodes
to exactly the files of the unmutated bitstream, and none makes the decoder allocate more than
a bound tied to the bitstream's own size."""
from __future__ import annotations

import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tools.bitstream_fuzz import cases, outcome, seed_bitstreams  # noqa: E402
from onnxl2.codec.container import decode_container, default_output_limit  # noqa: E402

CASES = 500


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    return seed_bitstreams(0)


def test_crafted_bitstreams_raise_or_decode_exactly_within_bounded_memory(seeds):
    reference = {name: [(n, bytes(d)) for n, d in decode_container(blob)[0]] for name, blob in seeds.items()}
    tally, kinds = Counter(), Counter()
    failures = []
    tracemalloc.start()
    try:
        for index, case in enumerate(cases(seeds, CASES, seed=0, bomb_sizes=(1 << 30,))):
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            result, detail = outcome(case.blob, reference[case.seed_name])
            peak = tracemalloc.get_traced_memory()[1] - base
            tally[result] += 1
            kinds[case.mutation] += 1
            # what the output limit admits, a few working copies of it, and a fixed allowance
            bound = 8 * default_output_limit(len(case.blob)) + (16 << 20)
            if result in ("crash", "wrong") or peak > bound:
                failures.append(f"case {index} ({case.seed_name}, {case.mutation}): {result}, "
                                f"peak {peak:,} B (bound {bound:,})\n{detail}")
    finally:
        tracemalloc.stop()
    assert not failures, "\n".join(failures[:3])
    assert tally["error"] > CASES // 2 and tally["same"] > 0  # the mutations reach both ends
    assert len(kinds) == 9  # every mutation kind was drawn
