"""How often a CTC reader's compressed models keep every step's decision against how often they
keep the decoded string (repeats merged, blanks dropped), on the same samples; and, of the
original, which steps could change its reading at all.

    python tools/string_agreement.py .cache/zoo/ddddocr_common/model.onnx \\
        --data .cache/zoo/ddddocr_common/eval.npz [out_5x/model.l2.onnx out_7x/model.l2.onnx ...]

A step that moves between the blank and a repeat of its neighbour leaves the string as it was;
the original's steps whose flip to their runner-up class would change the reading
(``readings.reading_steps``) are what ``--ctc`` judges. Printed first: how many a line has, how
many of the near-tie steps (margin under 1) are among them, and their smallest margins; then a
table row per compressed model.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxl2.contract import Reading  # noqa: E402
from onnxl2.data import batch_size_for, input_specs, load_data  # noqa: E402
from onnxl2.readings import by_sample, greedy_ctc  # noqa: E402
from onnxl2.samples import sample_count  # noqa: E402
from tools.agreement_draws import _outputs, plans_parser  # noqa: E402

NEAR_TIE = 1.0  # a margin under this counts as a near tie (logits, or log-probabilities)


def main() -> int:
    parser = plans_parser(__doc__.split("\n\n")[0], plans_required=False)
    args = parser.parse_intermixed_args()  # the plans may follow --data
    proto = onnx.load(args.model, load_external_data=False)
    data = load_data(args.data, proto)
    samples, batch = sample_count(data), batch_size_for(data, input_specs(proto))

    def laid(path: str) -> np.ndarray:
        out = by_sample(_outputs(path, data, batch, args.output), samples, batch == 1)
        if out is None:
            parser.error(f"{path}: the output's steps cannot be grouped by sample")
        return out

    reference = laid(args.model)
    reading = Reading.of(reference)
    near = reading.margin < NEAR_TIE
    smallest = np.sort(reading.margin[reading.steps])[:3]
    print(f"{reading.steps.sum(axis=1).mean():.1f} of {reading.margin.shape[1]} steps a line can change its "
          f"reading; of {near.sum()} steps with a margin under {NEAR_TIE:g}, {(near & reading.steps).sum()} can; "
          f"the smallest margins of those that can: {', '.join(f'{m:.3f}' for m in smallest)}")
    if not args.compressed:
        return 0
    best = reading.top.reshape(reading.margin.shape)
    print()
    print("| plan | samples with every step kept | samples with the string kept |")
    print("|---|---:|---:|")
    for path in args.compressed:
        out = laid(path)
        kept = np.mean([a == b for a, b in zip(greedy_ctc(out), reading.strings)])
        print(f"| {path} | {np.mean((out.argmax(-1) == best).all(axis=1)):.3f} | {kept:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
