"""How often a CTC reader's compressed models keep every step's decision against how often they
keep the decoded string (repeats merged, blanks dropped), on the same samples.

    python tools/string_agreement.py .cache/zoo/ddddocr_common/model.onnx \\
        --data .cache/zoo/ddddocr_common/eval.npz out_5x/model.l2.onnx out_7x/model.l2.onnx

The contract judges a sequence output per step (a sample agrees when all its steps do); a step
that moves between the blank and a repeat of its neighbour leaves the string as it was. The
gap between the two columns is what judging the decoded strings would free.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxl2.data import batch_size_for, input_specs, load_data  # noqa: E402
from onnxl2.samples import sample_count  # noqa: E402
from tools.agreement_draws import _outputs, plans_parser  # noqa: E402


def decoded(steps: np.ndarray, blank: int) -> list[tuple[int, ...]]:
    """Per sample (a row of arg-max classes), the CTC string: repeats merged, blanks dropped."""
    out = []
    for row in steps:
        keep = np.r_[True, row[1:] != row[:-1]] & (row != blank)
        out.append(tuple(int(c) for c in row[keep]))
    return out


def main() -> int:
    parser = plans_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--blank", type=int, default=0, help="the blank class (0 for PP-OCR and ddddocr)")
    args = parser.parse_args()
    proto = onnx.load(args.model, load_external_data=False)
    data = load_data(args.data, proto)
    samples, batch = sample_count(data), batch_size_for(data, input_specs(proto))
    reference = _outputs(args.model, data, batch, args.output).argmax(-1).reshape(samples, -1)
    strings = decoded(reference, args.blank)
    print("| plan | samples with every step kept | samples with the string kept |")
    print("|---|---:|---:|")
    for path in args.compressed:
        steps = _outputs(path, data, batch, args.output).argmax(-1).reshape(samples, -1)
        kept = np.mean([a == b for a, b in zip(decoded(steps, args.blank), strings)])
        print(f"| {path} | {np.mean((steps == reference).all(axis=1)):.3f} | {kept:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
