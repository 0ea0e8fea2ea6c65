"""Reports: the JSON document of a run and the table the CLI prints."""
from __future__ import annotations

import json
from typing import Any

import numpy as np


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def to_json(report: dict) -> bytes:
    """Stable, readable JSON: same run, same bytes (timings aside)."""
    return (json.dumps(_plain(report), indent=2, sort_keys=False) + "\n").encode()


def human_bytes(n: int | float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def format_table(rows: list[list[str]], header: list[str], align_numbers: bool = True) -> str:
    """A plain fixed-width table; numbers right-aligned unless ``align_numbers`` is off."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    def fmt(row: list[str]) -> str:
        cells = []
        for cell, width in zip(row, widths):
            text = str(cell)
            numeric = align_numbers and text.replace(".", "").replace(",", "").replace("x", "").replace("%", "").lstrip("-").isdigit()
            cells.append(text.rjust(width) if numeric else text.ljust(width))
        return "  ".join(cells).rstrip()
    line = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), line] + [fmt(r) for r in rows])


def summary_rows(report: dict) -> list[list[str]]:
    """The headline of a compress report: sizes, ratios, accuracy before and after."""
    sizes = report["sizes"]
    rows = [["original file", human_bytes(sizes["original_file_bytes"])],
            ["bitstream (.l2b)", human_bytes(sizes["bitstream_bytes"])],
            ["file ratio", f"{sizes['file_ratio']:.2f}x"]]
    if sizes.get("weight_ratio"):
        rows.append(["weight ratio", f"{sizes['weight_ratio']:.2f}x"])
    if sizes.get("compressed_onnx_bytes"):
        rows.append(["compressed ONNX", human_bytes(sizes["compressed_onnx_bytes"])])
    if report.get("validation"):
        rows += validation_rows(report["validation"])
    rows.append(["round trip", report.get("roundtrip", "-")])
    return rows


def validation_rows(validation: dict) -> list[list[str]]:
    """Accuracy, fidelity and latency per device, as table rows."""
    rows = []
    for device in validation["devices"]:
        if device["status"] != "ok":
            rows.append([f"{device['device']}", device["status"]])
            continue
        tag = device["device"]
        if device.get("accuracy_original") is not None:
            rows.append([f"accuracy before -> after ({tag})",
                         f"{device['accuracy_original']:.4f} -> {device['accuracy_compressed']:.4f}"])
        for out in device["outputs"]:
            text = f"cos {out['cosine_mean']:.5f} (min {out['cosine_min']:.5f}), relL2 {out['rel_l2_mean']:.4f}"
            if out.get("top1_agreement") is not None:
                text += f", top-1 agree {out['top1_agreement']:.4f}"
            rows.append([f"output {out['name']} ({tag})", text])
        rows.append([f"latency per batch ({tag})",
                     f"{device['latency_ms_original']:.2f} ms -> {device['latency_ms_compressed']:.2f} ms"])
    return rows
