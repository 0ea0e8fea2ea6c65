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
    if sizes.get("integer_weights"):
        iw = sizes["integer_weights"]
        rows.append(["integer symbols, bits/weight", f"{iw['symbol_bits_per_weight']:.3f} coded (tables included) vs "
                     f"{iw['order0_entropy_bits_per_weight']:.3f} order-0 entropy; steps add "
                     f"{iw['scale_bits_per_weight']:.3f} ({iw['bits_per_step']:.1f} bits a step)"])
    if sizes.get("moved_biases"):
        mb = sizes["moved_biases"]
        rows.append(["moved biases", f"{mb['values']:,} values, {mb['bits_per_value']:.1f} bits each"])
    if sizes.get("compressed_onnx_bytes"):
        rows.append(["compressed ONNX", human_bytes(sizes["compressed_onnx_bytes"])])
    compute = report.get("compute")
    if compute and compute.get("layers_counted"):
        rows.append([f"MACs per sample ({compute['layers_counted']} layers measured)",
                     f"{compute['macs_per_sample_before']:,} -> {compute['macs_per_sample_after']:,}"
                     f" ({compute['factorised_layers']} layer(s) factorised)"])
    if report.get("allocation", {}).get("contract"):
        a = report["allocation"]
        c, f = a["contract"], a["frontier"]
        rows.append(["contract", c["statement"]])
        chosen = f["points"][f["chosen"]] if f["chosen"] is not None else None
        rows.append(["frontier", f"{len(f['points'])} plans measured on {c['held_back_samples']} held-back samples; "
                     + (f"chosen {chosen['file_ratio']:.2f}x, the smallest that meets the contract"
                        if chosen else f["message"])])
    if report.get("allocation"):
        a = report["allocation"]
        rows.append(["loss", a["loss"]])
        rows.append(["calibration loss change", f"{a['measured_loss_change']:+.3e} +- {a['measured_loss_change_se']:.1e}"
                     f"{_loss_before_after(a)} ({a['form']}; {len(a['rounds'])} round(s), "
                     f"{a['forward_passes']} passes)"])
    if report.get("validation"):
        rows.append(["judged on", f"the {report['validation'].get('split', 'given')} samples"])
        rows += validation_rows(report["validation"])
    rows.append(["round trip", report.get("roundtrip", "-")])
    return rows


def _loss_before_after(allocation: dict) -> str:
    """The loss before and after (", loss 0.0129 -> 1.35"): a change alone does not say whether
    it is small for this loss."""
    before = allocation.get("calibration_loss")
    if before is None:
        return ""
    return f", loss {before:.4g} -> {before + allocation['measured_loss_change']:.4g}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2e}"


def allocation_rows(report: dict) -> list[list[str]]:
    """Per weight: the choice, its bytes, predicted and measured loss change (automatic mode)."""
    rows = []
    for w in report["weights"]:
        rows.append([w["name"], w["choice"], f"{w['coded_bytes']:,}", _signed(w.get("predicted_loss_change")),
                     _signed(w.get("measured_loss_change")), "within noise" if w.get("within_noise") else ""])
    a = report["allocation"]
    rows.append(["total", "", f"{sum(w['coded_bytes'] for w in report['weights']):,}",
                 _signed(a["predicted_loss_change"]), _signed(a["measured_loss_change"]),
                 f"+-{a['measured_loss_change_se']:.1e} (all layers at once)"])
    return rows


def _criteria_names(report: dict) -> list[str]:
    points = report["allocation"]["frontier"]["points"]
    return [c["name"] for c in points[0]["criteria"]] if points else []


def frontier_header(report: dict) -> list[str]:
    return ["plan", "file ratio", "bitstream"] + _criteria_names(report) + ["meets"]


def frontier_rows(report: dict) -> list[list[str]]:
    """Every plan of the frontier, largest ratio first: each criterion as measured (its monotone
    fit in brackets where it differs), and whether it meets the contract."""
    frontier = report["allocation"]["frontier"]
    rows = []
    for index in reversed(range(len(frontier["points"]))):
        point = frontier["points"][index]
        cells = []
        for c in point["criteria"]:
            text = f"{c['value']:.4g}"
            if c["fitted"] is not None and abs(c["fitted"] - c["value"]) > 1e-12:
                text += f" ({c['fitted']:.4g})"
            cells.append(text)
        mark = "chosen" if index == frontier["chosen"] else ""
        rows.append([mark, f"{point['file_ratio']:.2f}x", human_bytes(point["bitstream_bytes"])] + cells
                    + ["yes" if point["passed"] else "no"])
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
            if out.get("string_agreement") is not None:
                text += f", strings kept {out['string_agreement']:.4f}"
            if out.get("standardised_rms") is not None:
                text += f", standardised {out['standardised_rms']:.4f}"
            rows.append([f"output {out['name']} ({tag})", text])
        rows.append([f"latency per batch ({tag})",
                     f"{device['latency_ms_original']:.2f} ms -> {device['latency_ms_compressed']:.2f} ms"])
    return rows


# ----------------------------------------------------------------------------- HTML

_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:3px 10px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
.bar{fill:#4c78a8}.bar2{fill:#f58518}text{font-size:11px}"""


def _esc(text: Any) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        text = f"{value:,.4g}" if isinstance(value, float) else (f"{value:,}" if numeric else value)
        return f'<td class="n">{_esc(text)}</td>' if numeric else f"<td>{_esc(text)}</td>"
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _bar_chart(labels: list[str], values: list[float], unit: str, css: str = "bar") -> str:
    """Horizontal bars, one per layer, as inline SVG (no external assets)."""
    if not values:
        return ""
    top = max(values) or 1.0
    row, label_w, bar_w = 16, 260, 600
    parts = [f'<svg width="{label_w + bar_w + 80}" height="{row * len(values) + 10}" '
             f'xmlns="http://www.w3.org/2000/svg">']
    for i, (label, value) in enumerate(zip(labels, values)):
        y = i * row + 4
        width = max(1.0, bar_w * value / top)
        parts.append(f'<text x="{label_w - 6}" y="{y + 11}" text-anchor="end">{_esc(label[-40:])}</text>'
                     f'<rect class="{css}" x="{label_w}" y="{y}" width="{width:.1f}" height="{row - 4}"/>'
                     f'<text x="{label_w + width + 4}" y="{y + 11}">'
                     f'{f"{value:,.0f}" if unit == "B" else f"{value:.3g}"} {unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _frontier_chart(frontier: dict, index: int) -> str:
    """One criterion against file ratio over every plan of the frontier, as inline SVG: the
    measured values (dots), their monotone fit (line), the contract's bound (dashed), the chosen
    plan (ringed) and its two larger-ratio neighbours (squares). The ratio axis is logarithmic
    and the value axis spans a few times the bound's distance from the best value, so that the
    plans around the choice are told apart; values beyond it sit on the edge."""
    points = frontier["points"]
    ratios = [p["file_ratio"] for p in points]
    rows = [p["criteria"][index] for p in points]
    bound, higher = rows[0]["bound"], rows[0]["higher_is_better"]
    measured = [r["value"] for r in rows] + [r["fitted"] for r in rows if r["fitted"] is not None]
    best = max(measured) if higher else min(measured)
    reach = 3 * max(abs(bound - best), 1e-12)
    y_lo, y_hi = (max(min(measured), bound - reach), max(best, bound)) if higher else \
        (min(best, bound), min(max(measured), bound + reach))
    width, height, pad = 640, 220, 48
    x_lo, x_hi = np.log(min(ratios)), np.log(max(ratios))
    span_x, span_y = (x_hi - x_lo) or 1.0, (y_hi - y_lo) or 1.0

    def xy(ratio: float, value: float) -> tuple[float, float]:
        value = min(max(value, y_lo), y_hi)
        return (pad + (width - 2 * pad) * (np.log(ratio) - x_lo) / span_x,
                height - pad + 10 - (height - 2 * pad) * (value - y_lo) / span_y)

    chosen = frontier["chosen"]
    neighbours = set(range(max(0, chosen - 2), chosen)) if chosen is not None else set()
    parts = [f'<svg width="{width + 40}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{pad}" y="14">{_esc(rows[0]["name"])} against file ratio</text>']
    bx0, by = xy(min(ratios), bound)
    bx1, _ = xy(max(ratios), bound)
    parts.append(f'<line x1="{bx0:.1f}" y1="{by:.1f}" x2="{bx1:.1f}" y2="{by:.1f}" stroke="#c33" '
                 f'stroke-dasharray="4 3"/><text x="{bx1 + 4:.1f}" y="{by + 4:.1f}">bound</text>')
    fit = [xy(r, row["fitted"]) for r, row in zip(ratios, rows) if row["fitted"] is not None]
    if len(fit) > 1:
        parts.append('<polyline fill="none" stroke="#4c78a8" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in fit) + '"/>')
    for i, (ratio, row) in enumerate(zip(ratios, rows)):
        x, y = xy(ratio, row["value"])
        colour = "#4c78a8" if points[i]["passed"] else "#999"
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        if i == chosen:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="8" fill="none" stroke="#f58518" stroke-width="2"/>'
                         f'<text x="{x + 10:.1f}" y="{y - 8:.1f}">chosen {ratio:.2f}x</text>')
        elif i in neighbours:
            parts.append(f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="none" '
                         f'stroke="#f58518"/>')
    for value in sorted({min(ratios), max(ratios)} | ({ratios[chosen]} if chosen is not None else set())):
        x, _ = xy(value, y_lo)
        parts.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle">{value:.2f}x</text>')
    for value in (y_lo, y_hi):
        _, y = xy(min(ratios), value)
        parts.append(f'<text x="{pad - 4}" y="{y + 4:.1f}" text-anchor="end">{value:.3g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _frontier_section(report: dict) -> list[str]:
    alloc = report["allocation"]
    frontier = alloc["frontier"]
    if not frontier["points"]:
        return []
    charts = [_frontier_chart(frontier, j) for j in range(len(frontier["points"][0]["criteria"]))]
    return ([f"<h2>Contract and frontier</h2><p>{_esc(alloc['contract']['statement'])}; judged on "
             f"{alloc['contract']['held_back_samples']} calibration samples held back from every choice. "
             f"{_esc(frontier['message'])}. The two plans to the chosen one's right (squares) are kept as "
             "plan-next-1.json and plan-next-2.json (replay one with --plan).</p>"]
            + charts + [_table(frontier_header(report), frontier_rows(report))])


def to_html(report: dict) -> bytes:
    """A page a person can read: headline, per-layer charts, validation, what was left alone."""
    sizes = report["sizes"]
    title = f"onnxl2 report: {report['model']}"
    sections = [f"<h1>{_esc(title)}</h1>",
                f"<p>mode <b>{_esc(report['mode'])}</b>"
                + (f", {report['bits']} bits" if report.get("bits") else "")
                + f"; {_esc(report.get('roundtrip', ''))}</p>",
                _table(["", "value"], summary_rows(report))]
    weights = report.get("weights") or []
    if weights:
        labels = [w["name"] for w in weights]
        sections += ["<h2>Coded bits per parameter, per layer</h2>",
                     _bar_chart(labels, [w["bits_per_param"] for w in weights], "bit"),
                     "<h2>Coded bytes per layer</h2>",
                     _bar_chart(labels, [w["coded_bytes"] for w in weights], "B", "bar2"),
                     "<h2>Weights</h2>",
                     _table(["weight", "graph", "role", "shape", "params", "choice", "rank", "stored params",
                             "container", "coded bytes", "bits/param", "MACs before", "MACs after"],
                            [[w["name"], w["graph"], w["role"], "x".join(map(str, w["shape"])),
                              w["params"], w["choice"], w.get("rank") or "full", w.get("stored_params", w["params"]),
                              w["container"], w["coded_bytes"], round(w["bits_per_param"], 3),
                              "-" if w.get("macs_before") is None else w["macs_before"],
                              "-" if w.get("macs_after") is None else w["macs_after"]] for w in weights])]
    alloc = report.get("allocation")
    if alloc and alloc.get("frontier"):
        sections += _frontier_section(report)
    if alloc:
        sections += [f"<h2>Allocation ({_esc(alloc['form'])}, {_esc(alloc['sweep'])} sweep)</h2>",
                     f"<p>loss: {_esc(alloc['loss'])}; calibration loss {alloc['calibration_loss']:.6g} "
                     f"over {alloc['calibration_samples']} samples; measured change of the plan "
                     f"{alloc['measured_loss_change']:+.3e} &plusmn; {alloc['measured_loss_change_se']:.1e}"
                     f"{' (within noise)' if alloc['measured_within_noise'] else ''}; "
                     f"{alloc['forward_passes']} forward passes. {_esc(alloc.get('message', ''))}</p>",
                     _table(["round", "bound", "bitstream bytes", "measured loss change", "se", "accepted"],
                            [[r["index"], r["bound"], r["bitstream_bytes"] or "-",
                              "-" if r["measured_loss_change"] is None else r["measured_loss_change"],
                              "-" if r["measured_se"] is None else r["measured_se"],
                              "yes" if r["accepted"] else "no"] for r in alloc["rounds"]]),
                     "<h2>Chosen candidates: predicted (Taylor) and measured loss change per layer</h2>",
                     _table(["weight", "choice", "coded bytes", "distortion", "predicted", "measured", "se", ""],
                            [[w["name"], w["choice"], w["coded_bytes"], w.get("distortion", 0.0),
                              "-" if w.get("predicted_loss_change") is None else w["predicted_loss_change"],
                              "-" if w.get("measured_loss_change") is None else w["measured_loss_change"],
                              "-" if w.get("measured_se") is None else w["measured_se"],
                              "within noise" if w.get("within_noise") else ""] for w in weights])]
    left = report.get("not_compressed") or []
    if left:
        sections += [f"<h2>Kept in float ({len(left)} tensors, "
                     f"{human_bytes(sum(w['bytes'] for w in left))}, coded losslessly)</h2>",
                     _table(["tensor", "bytes", "why"],
                            [[w["name"], w["bytes"], w["reason"]] for w in
                             sorted(left, key=lambda w: -w["bytes"])[:50]])]
    sections += ["<h2>Sizes</h2>", _table(["", "value"], [[k, v] for k, v in sizes.items()]),
                 "<h2>Time per stage (s)</h2>",
                 _table(["stage", "seconds"], [[k, v] for k, v in report.get("timings_s", {}).items()])]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>\n")
    return page.encode()
