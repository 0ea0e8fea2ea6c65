"""Label sequences for a CTC text recogniser, from transcriptions: the --labels of the ctc loss.

    python tools/ctc_labels.py .cache/zoo/ppocr_rec_v4/model.onnx .cache/zoo/ppocr_rec_v4/calib_texts.json -o calib_labels.npy

The character table comes from the model's ``character`` metadata (PaddleOCR exports: class 0 is
the CTC blank, then one class per line of the table, then the space). Texts are taken as they
are; ``--drop-spaces`` removes whitespace (for recognisers trained to leave it out); characters
not in the table are dropped and counted on stderr. The result is an int64
array [texts, longest] padded with -1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def model_charset(model: Path) -> list[str]:
    """Class names of a PaddleOCR recogniser: blank, the metadata's table, space."""
    import onnx
    proto = onnx.load(str(model), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if "character" not in meta:
        raise SystemExit(f"{model} has no 'character' metadata: give the character table another way")
    return [""] + meta["character"].split("\n") + [" "]


def text_labels(texts: list[str], charset: list[str], drop_spaces: bool = False) -> tuple[np.ndarray, int]:
    """(labels [N, L] padded with -1, characters dropped as unknown)."""
    index = {c: i for i, c in enumerate(charset) if i > 0}
    rows, unknown = [], 0
    for text in texts:
        if drop_spaces:
            text = "".join(text.split())
        row = [index[c] for c in text if c in index]
        unknown += len(text) - len(row)
        rows.append(row)
    out = np.full((len(rows), max([len(r) for r in rows] + [1])), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out, unknown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("texts", type=Path, help="JSON list of strings, one per sample")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--drop-spaces", action="store_true")
    args = parser.parse_args()
    labels, unknown = text_labels(json.loads(args.texts.read_text()), model_charset(args.model), args.drop_spaces)
    np.save(args.out, labels)
    if unknown:
        print(f"{unknown} characters not in the model's table were left out", file=sys.stderr)
    print(f"wrote {args.out}: {labels.shape[0]} sequences, up to {labels.shape[1]} classes")


if __name__ == "__main__":
    main()
