"""Run a silero-vad model and its compressed form over the same chunks, the state carried from
chunk to chunk as a streaming user does, and compare their speech probabilities.

    pip download --no-deps silero-vad==6.2.3 -d /tmp/sv && unzip -q /tmp/sv/silero_vad-*.whl -d /tmp/sv
    onnxl2 compress /tmp/sv/silero_vad/data/silero_vad.onnx --bits 8 -o /tmp/sv8
    python tools/vad_chunks.py /tmp/sv/silero_vad/data/silero_vad.onnx /tmp/sv8/silero_vad.l2.onnx

The signal is synthetic (a 220 Hz tone gated on and off twice a second, over noise), 40 chunks
of 512 samples at 16 kHz, and the model calls none of it speech (its largest probability is
printed): this shows how far the compressed model's probabilities move on a stream, not whether
it keeps decisions on speech, for which no recorded speech is at hand here.
"""
from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort

RATE = 16000
CHUNK = 512


def probabilities(path: str, audio: np.ndarray) -> np.ndarray:
    """Speech probability of each chunk, the model's state carried between chunks."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    out = []
    for start in range(0, len(audio) - CHUNK + 1, CHUNK):
        prob, state = session.run(None, {"input": audio[None, start:start + CHUNK], "state": state,
                                         "sr": np.array(RATE, np.int64)})
        out.append(float(np.asarray(prob).reshape(-1)[0]))
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original")
    parser.add_argument("compressed")
    parser.add_argument("--chunks", type=int, default=40)
    args = parser.parse_args()
    t = np.arange(CHUNK * args.chunks) / RATE
    gate = np.sin(2 * np.pi * 0.5 * t) > 0
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * gate
             + 0.02 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
    a, b = probabilities(args.original, audio), probabilities(args.compressed, audio)
    print(f"{len(a)} chunks: largest change of the speech probability {np.abs(a - b).max():.4f}; "
          f"the original's largest probability {a.max():.4f}, decisions at 0.5 kept "
          f"{np.mean((a > 0.5) == (b > 0.5)):.3f}")


if __name__ == "__main__":
    main()
