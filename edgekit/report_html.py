"""report.html beside report.md: the same run for people who would rather look than read. One self-contained
file (inline SVG, no scripts, no network), so it opens from a CI artifact or an e-mail as it is.

Charts come from matplotlib's SVG backend (the `plots` extra); without it the page keeps its tables and says
how to get the charts. Every string from the run (model paths, node names) is escaped: they are the user's.
"""
from __future__ import annotations

import html
import io

from .reports import TargetReport

PLOTS_HINT = "Charts need matplotlib: pip install 'edgekit[plots]'"
MAX_LAYERS = 15  # worst compute nodes in the per-layer chart
STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
         ".pass{color:#176f2c}.fail{color:#b00020;font-weight:bold}figure{margin:1em 0}")


def page(r: TargetReport) -> str:
    """The whole HTML document for one target's report."""
    d = r.details
    e = html.escape
    verdict = '<span class="pass">PASSED</span>' if r.passed else '<span class="fail">FAILED</span>'
    out = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>edgekit: {e(r.target)}</title>"
           f"<style>{STYLE}</style></head><body>",
           f"<h1>edgekit report: {e(str(d['model']['source']))} → {e(r.target)}</h1>",
           f"<p>{verdict} · edgekit {e(d['edgekit_version'])} · onnxruntime {e(d['versions']['onnxruntime'])}</p>"]
    out += [f"<p class=fail>{e(w)}</p>" for w in r.warnings]
    out += ["<h2>Gates</h2>", _table(("gate", "value", "limit", "result"), [
        (g.name, "-", "-", f"skipped: {g.skipped}") if g.skipped else
        (g.name, _number(g.value), f"{g.op} {_number(g.limit)}", "pass" if g.passed else "FAIL") for g in r.gates])]
    charts = _charts(r)
    if charts is None:
        out.append(f"<p><em>{e(PLOTS_HINT)}</em></p>")
    else:
        out += [f"<h2>{e(title)}</h2><figure>{svg}<figcaption>{e(caption)}</figcaption></figure>"
                for title, svg, caption in charts]
    out.append("<p>Full figures: report.md and manifest.json in this folder.</p></body></html>")
    return "\n".join(out) + "\n"


def _number(x) -> str:
    return "-" if x is None else f"{x:.6g}"


def _table(head, rows) -> str:
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows) + "</table>")


def _charts(r: TargetReport) -> list[tuple[str, str, str]] | None:
    """(title, inline SVG, caption) per chart this run has figures for; None without matplotlib."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        return None
    d = r.details
    charts = []

    def svg(fig) -> str:
        buf = io.StringIO()
        with matplotlib.rc_context({"svg.hashsalt": "edgekit"}):  # the same run writes the same bytes
            fig.savefig(buf, format="svg", bbox_inches="tight",
                        metadata=dict.fromkeys(("Creator", "Date", "Format", "Type")))
        text = buf.getvalue()
        return text[text.index("<svg"):]

    lat = r.latency
    sizes = {k: r.sizes[k] / 1e6 for k in ("model.onnx", "model.int8.onnx") if k in r.sizes}
    if lat or sizes:
        fig = Figure(figsize=(8, 2.4))
        axes = fig.subplots(1, 2 if lat and sizes else 1, squeeze=False)[0]
        if lat:
            axes[0].barh(["int8", "fp32"], [lat.int8.p50_ms, lat.fp32.p50_ms], color=["#2a7ab0", "#999"])
            axes[0].set_xlabel("p50 latency, ms")
        if sizes:
            ax = axes[-1]
            ax.barh(["int8", "fp32"], [sizes.get("model.int8.onnx", 0), sizes.get("model.onnx", 0)],
                    color=["#2a7ab0", "#999"])
            ax.set_xlabel("model size, MB")
        where = (lat.where + ("" if lat.on_device else "; this host standing in for the device")) if lat else ""
        charts.append(("Latency and size", svg(fig),
                       f"int8 p50 speed-up over fp32: {lat.speedup_p50:.2f}x, measured on {where}." if lat else
                       "Latency not measured (--no-bench)."))
    layers = (d.get("layers") or [])[:MAX_LAYERS]
    if layers:
        fig = Figure(figsize=(8, 0.3 * len(layers) + 1))
        ax = fig.subplots()
        ax.barh([x["node"] for x in layers][::-1], [x["lost_db"] for x in layers][::-1], color="#c0504d")
        ax.set_xlabel("accumulated SQNR lost at the node, dB (worst first)")
        ax.tick_params(axis="y", labelsize=7)
        charts.append(("Per-layer error", svg(fig), f"The {len(layers)} compute nodes that lose the most SQNR "
                                                    "between their input and their output in int8."))
    steps = [s for s in ((d.get("compression") or {}).get("steps") or []) if s.get("accuracy") is not None]
    if steps and r.accuracy:
        steps.append({"step": "int8", "accuracy": r.accuracy.int8})
    if steps:
        fig = Figure(figsize=(8, 2.4))
        ax = fig.subplots()
        ax.bar([s["step"] + (f"\n{s['params'] / 1e3:.1f} k params" if "params" in s else "") for s in steps],
               [s["accuracy"] for s in steps], color="#6a9f3b")
        ax.set_ylabel("accuracy, %")
        ax.set_ylim(min(s["accuracy"] for s in steps) - 5, 100)
        charts.append(("Accuracy after each compression step", svg(fig),
                       f"On {d['compression'].get('accuracy_data')}."))
    return charts
