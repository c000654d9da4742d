"""report.html beside report.md: the same run for people who would rather look than read. One self-contained
file (inline SVG, no scripts, no network), so it opens from a CI artifact or an e-mail as it is.

Charts are drawn here as SVG rects, circles and lines: bars and one scatter need no plotting library, so every
install has them and an export does not pay matplotlib's import and drawing (0.64 s of MobileNetV2-style's).
Every string from the run (model paths, node names) is escaped: they are the user's.
"""
from __future__ import annotations

import html
import math
import re

from typing import TYPE_CHECKING

from .report import LAYERS_MEASURED, accuracy_line, computed_on, ort_format_line, printable
from .reports import TargetReport, gate_failure, shipped_model

if TYPE_CHECKING:
    from .search import SearchReport

MAX_LAYERS = 15  # worst compute nodes in the per-layer chart
STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
         ".pass{color:#176f2c}.fail{color:#b00020;font-weight:bold}figure{margin:1em 0}")


def _escape(text) -> str:
    """Text from a model or a package as HTML: escaped, on one line, without control characters (an escape
    sequence in a node name cleared the terminal of whoever ran `cat report.html`)."""
    return html.escape(printable(text))


def page(r: TargetReport) -> str:
    """The whole HTML document for one target's report."""
    d = r.details
    e = _escape
    verdict = '<span class="pass">PASSED</span>' if r.passed else '<span class="fail">FAILED</span>'
    out = [_head(f"edgekit: {r.target}"),
           f"<h1>edgekit report: {e(str(d['model']['source']))} → {e(r.target)}</h1>",
           f"<p>{verdict} · edgekit {e(d['edgekit_version'])} · onnxruntime {e(d['versions']['onnxruntime'])}</p>"]
    out += [f"<p class=fail>{e(w)}</p>" for w in r.warnings]
    out += ["<h2>Gates</h2>", f"<p>Parity computed on {e(computed_on(r, both=True))}.</p>",
            _table(("gate", "value", "limit", "result"), [
        (g.label, "-", f"{g.op} {_number(g.limit)}" if g.limit is not None else "-", f"skipped: {g.skipped}")
        if g.skipped else
        (g.label, _number(g.value), f"{g.op} {_number(g.limit)}", "pass" if g.passed else gate_failure(g, d))
        for g in r.gates])]
    if r.accuracy:  # the page showed the drop gate only
        out.append(f"<p>{e(accuracy_line(r.accuracy))}.</p>")
    out += _labels(d.get("labels"))
    if r.emulated:  # an x86-64 target's figures on an emulated CPU (export --emulate x86_64), as report.md says
        out.append(f"<p>Emulated CPU: {e(r.emulated.line(r.gates))}.</p>")
    if d.get("ort_format"):  # which onnxruntime build the shipped .ort needs: report.md said it, this page did not
        out.append(f"<p>{e(ort_format_line(d['ort_format']).replace('`', ''))}</p>")
    if kept := _kept_float(r):  # the page said "PASSED" and its per-layer chart, and none of these
        out += ["<h2>Kept in float</h2>", _table(("node", "why"), kept)]
    out += _figures(_charts(r))
    out.append("<p>Full figures: report.md and manifest.json in this folder.</p></body></html>")
    return "\n".join(out) + "\n"


def _labels(labels) -> list[str]:
    """The class names the package ships, named beside the top-1 and accuracy figures: report.md named them, this
    page did not (the manifest holds the file's name and count, not the names, which labels.txt holds)."""
    if not isinstance(labels, dict):
        return []
    return [f"<p>Class names: <code>{_escape(labels.get('file'))}</code> in this folder, {_escape(labels.get('count'))}"
            " of them, one per line (UTF-8): line k names class index k.</p>"]


def _kept_float(r: TargetReport) -> list[tuple[str, str]]:
    """The nodes the int8 model keeps in float, each with who decided it."""
    q, tuning = r.details["quantization"], r.tuning or {}
    why = {n: "exclude_nodes (yours)" for n in tuning.get("given", [])}
    why |= {e["node"]: f"--auto: {e['why']}" for e in tuning.get("excluded", [])}
    why |= {n: "--precision latency: faster so, measured" for n in (q.get("precision_search") or {}).get(
        "float_nodes", [])}
    pixels = r.details.get("image_uint8") or {}  # its Cast/Sub/Mul: in no decision, and gone where raw pixels feed
    listed = pixels.get("nodes")
    norm = {n for n in listed if isinstance(n, str)} if isinstance(listed, list) else set()
    why |= {n: f"image_uint8: the pixel normalisation of input {pixels.get('input')!r}" for n in norm}
    return [(n, why.get(n, "the quantization plan (report.md's decisions)")) for n in q.get("exclude_nodes", [])
            if n not in norm or pixels.get("nodes_in_int8", True)]


def search_page(r: SearchReport, exported: str | None) -> str:
    """The whole HTML document for an `edgekit search`: the Pareto scatter, the front, the failed trials;
    `exported`: the folder here the best point was exported to (None: its export did not finish)."""
    e = _escape
    budgets = ", ".join(f"{k} ≤ {v:g}" for k, v in r.budgets.items()) or "none"
    out = [_head(f"edgekit search: {r.study}"), f"<h1>edgekit search: study {e(r.study)}</h1>",
           f"<p>{len(r.points)} trial(s) done, {len(r.failed)} failed"
           + (f", {len(r.running)} still running (another search's, or a killed one's: reclaimed once its heartbeat "
              f"stops)" if r.running else "") + f", {r.seconds_per_trial:.1f} s a trial; "
           f"budgets: {e(budgets)}; {e(r.metric)} from {e(r.kernels)}; latency measured on {e(r.where)}.</p>"]
    out += _figures(_search_charts(r))
    out += ["<h2>Pareto front (within the budgets and the target's gates)</h2>", _table(
        ("trial", "accuracy", "p50 ms", "MB", "settings"),
        [(p.trial, f"{p.accuracy:.2f}", f"{p.latency_ms:.4f}", f"{p.size_mb:.4f}",
          ", ".join(f"{k}={v}" for k, v in p.params.items())) for p in r.pareto])]
    if r.best is None:
        out.append("<p class=fail>No trial met the budgets and gates: nothing was exported (a package folder beside "
                   "this page is an earlier run's; its manifest's <code>search</code> names its trial).</p>")
    elif exported and r.export_failed:
        out.append(f"<p class=fail>Best: trial {r.best.trial}, exported to {e(exported)}/ in this folder; timed "
                   f"again there, it misses a budget: {e(r.export_failed)}.</p>")
    elif exported:
        out.append(f"<p>Best: trial {r.best.trial}, exported to {e(exported)}/ in this folder.</p>")
    else:
        out.append(f"<p class=fail>Best: trial {r.best.trial}; its export did not finish"
                   + (f": {e(r.export_error)}" if r.export_error else "") + f" (<code>edgekit export RECIPE "
                   f"--from-trial {r.best.trial}</code> runs it again).</p>")
    if r.failed:
        out += ["<h2>Failed trials</h2>", _table(("trial", "error"), [(f["trial"], f["error"]) for f in r.failed])]
    out.append("<p>Every trial's figures: pareto.json in this folder; re-export one with "
               "<code>edgekit export RECIPE --from-trial N</code>.</p></body></html>")
    return "\n".join(out) + "\n"


# the browser runs nothing and fetches nothing for the page, even edited: an appended <script> is blocked where
# check is not run on it
POLICY = "default-src 'none'; style-src 'unsafe-inline'"


def _head(title: str) -> str:
    return (f'<!DOCTYPE html><html lang=en><head><meta charset=utf-8><meta http-equiv="Content-Security-Policy" '
            f'content="{POLICY}"><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>')


# what the pages hold (tags and attributes: nothing that runs or fetches), and nothing else: a package's report.html
# edited to hold a script, a handler, a redirect or a fetch, and re-hashed in its manifest, passed check
TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "code", "span", "table", "tr", "th", "td",
        "figure", "figcaption", "svg", "g", "rect", "line", "circle", "text"}
ATTRIBUTES = {"lang", "charset", "class", "role", "xmlns", "width", "height", "viewbox", "x", "y", "x1", "x2", "y1",
              "y2", "cx", "cy", "r", "fill", "stroke", "stroke-dasharray", "transform", "text-anchor", "font-family",
              "font-size", "font-weight"}
SVG_NS = "http://www.w3.org/2000/svg"
# text, and tags whose every `<` is closed by a `>` before the next (no `<` nor `>` in a quoted value) and that are no
# comment, declaration or processing instruction but the doctype: all edgekit writes. Matched in linear time first,
# so the parser never meets what it is slow on (120 KB of `<a ` took it 116 s) or raises on (`<![<![`: exit 5)
MARKUP = re.compile(r'(?:[^<]++|<!DOCTYPE html>|<(?![!?])(?:[^<>"]++|"[^"<>]*+")*+>)*+')


def active_content(page: str) -> str | None:
    """The first thing in `page` that edgekit's pages never hold (a tag or attribute it does not write, the policy
    missing or changed, a fetch from the style sheet), or None. Parsed: text is escaped, and a node named
    `relu_url(skip)` is no fetch."""
    from html.parser import HTMLParser

    if (end := MARKUP.match(page).end()) < len(page):
        return f"{page[end:end + 24]!r} (markup edgekit never writes)"[:60]
    found: list[str] = []
    policy = []

    class Found(Exception):
        """The first thing found ends the reading: a page of 16 MB of tags listed every one (0.5 GB)."""

    def say(*what: str) -> None:
        if what:
            found.append(what[0])
            raise Found

    class Reader(HTMLParser):
        def handle_starttag(self, tag, attrs):
            said = dict(attrs)
            if tag == "meta" and said.get("http-equiv") is not None:  # only the policy, exactly as written
                if said != {"http-equiv": "Content-Security-Policy", "content": POLICY} or policy:
                    say(f"<meta http-equiv={said.get('http-equiv')!r}")
                policy.append(tag)
            elif tag not in TAGS:
                say(f"<{tag}>")
            elif tag == "meta" and set(said) != {"charset"} or tag == "svg" and said.get("xmlns", SVG_NS) != SVG_NS:
                say(f"<{tag} {' '.join(said)}>")
            say(*(f"{name}= on <{tag}>" for name in said if name not in ATTRIBUTES | {"http-equiv", "content"}))

        handle_startendtag = handle_starttag

        def handle_data(self, data):
            if self.lasttag == "style" and re.search(r"@import|url\(|expression\(", data, re.I):
                say("a fetch in <style>")

    reader = Reader(convert_charrefs=True)
    try:
        reader.feed(page)
        reader.close()
    except Found:
        pass
    except (AssertionError, ValueError) as e:  # _markupbase's own checks, on what MARKUP lets by
        return f"markup the HTML parser cannot read ({e})"[:60]
    if not found and not policy:
        found.append("no Content-Security-Policy")
    return found[0][:60] if found else None


def _figures(charts: list[tuple[str, str, str]]) -> list[str]:
    return [f"<h2>{html.escape(title)}</h2><figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"
            for title, svg, caption in charts]


def _number(x) -> str:
    return "-" if x is None else f"{x:.6g}"


def _table(head, rows) -> str:
    e = _escape
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows) + "</table>")


def _search_charts(r: SearchReport) -> list[tuple[str, str, str]]:
    """Accuracy against latency and against size for every completed trial, the front numbered."""
    if not r.points:
        return []
    front = {p.trial for p in r.pareto}
    kinds = [("front" if p.trial in front else "feasible" if p.feasible else "infeasible") for p in r.points]
    panels = [_scatter([(getattr(p, key), p.accuracy, KIND_COLOURS[k], str(p.trial) if k == "front" else "")
                        for p, k in zip(r.points, kinds)], label, r.metric or "accuracy", r.budgets.get(key))
              for key, label in (("latency_ms", "int8 p50 latency, ms"), ("size_mb", "shipped int8 file, MB"))]
    legend = "".join(f'<circle cx="{60 + 130 * i}" cy="{PLOT + 62}" r="5" fill="{KIND_COLOURS[k]}"/>'
                     f'<text x="{68 + 130 * i}" y="{PLOT + 66}">{k} ({kinds.count(k)})</text>'
                     for i, k in enumerate(KIND_COLOURS))
    width, height = 2 * (PLOT + AXIS + 20), PLOT + 76
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} '
           f'{height}" font-family="sans-serif" font-size="11" role="img">'
           f'{panels[0]}<g transform="translate({PLOT + AXIS + 20},0)">{panels[1]}</g>{legend}</svg>')
    return [("Pareto scatter", svg, f"Every completed trial; the numbered points are the front; a dashed line is a "
                                    f"budget. Latency measured on {r.where}.")]


KIND_COLOURS = {"front": "#2a7ab0", "feasible": "#999", "infeasible": "#d08080"}
PLOT, AXIS = 300, 50  # px: a scatter's plot square, the room for its axis' ticks and label


def _scatter(points: list[tuple[float, float, str, str]], xlabel: str, ylabel: str, budget: float | None) -> str:
    """One scatter as SVG elements: (x, y, colour, label) points (points that are not finite are left out)
    in a box with round-numbered ticks, and a dashed vertical line at `budget`."""
    e = _escape
    points = [p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]
    xt = _ticks([x for x, *_ in points] + ([budget] if budget is not None else []))
    yt = _ticks([y for _, y, *_ in points])

    def at(v: float, ticks: list[float]) -> float:
        return (v - ticks[0]) / (ticks[-1] - ticks[0]) * PLOT

    parts = [f'<rect x="{AXIS}" y="10" width="{PLOT}" height="{PLOT}" fill="none" stroke="#ccc"/>']
    parts += [f'<text x="{AXIS + at(t, xt):.1f}" y="{PLOT + 24}" text-anchor="middle">{t:g}</text>' for t in xt]
    parts += [f'<text x="{AXIS - 4}" y="{PLOT + 14 - at(t, yt):.1f}" text-anchor="end">{t:g}</text>' for t in yt]
    parts += [f'<text x="{AXIS + PLOT / 2}" y="{PLOT + 42}" text-anchor="middle">{e(xlabel)}</text>',
              f'<text transform="translate(12,{10 + PLOT / 2}) rotate(-90)" text-anchor="middle">{e(ylabel)}</text>']
    if budget is not None:
        x = AXIS + at(budget, xt)
        parts.append(f'<line x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{PLOT + 10}" stroke="#b00020" '
                     'stroke-dasharray="4 3"/>')
    for x, y, colour, label in points:
        cx, cy = AXIS + at(x, xt), PLOT + 10 - at(y, yt)
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{colour}"/>'
                     + (f'<text x="{cx + 5:.1f}" y="{cy - 5:.1f}" font-size="9">{e(label)}</text>' if label else ""))
    return "".join(parts)


def _ticks(values: list[float], count: int = 5) -> list[float]:
    """About `count` round-numbered ticks (1, 2 or 5 times a power of ten apart) covering the values."""
    values = [v for v in values if math.isfinite(v)]  # a budget or figure of inf drew an OverflowError (exit 5)
    lo, hi = min(values, default=0.0), max(values, default=1.0)
    if hi <= lo:  # one value: a span around it
        lo, hi = lo - (abs(lo) * 0.05 or 0.5), hi + (abs(hi) * 0.05 or 0.5)
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    return [round(first + i * step, 12) for i in range(math.ceil((hi - first) / step - 1e-9) + 1)]


def _charts(r: TargetReport) -> list[tuple[str, str, str]]:
    """(title, inline SVG, caption) per chart this run has figures for."""
    d = r.details
    charts = []
    lat = r.latency
    shipped = shipped_model(d)  # the .ort where the target ships one: the size budget's file
    sizes = {k: r.sizes[k] / 1e6 for k in ("model.onnx", shipped) if k in r.sizes}
    panels = []
    if lat:
        panels.append(("p50 latency, ms", [("int8", lat.int8.p50_ms, INT8), ("fp32", lat.fp32.p50_ms, FP32)]))
    if sizes:
        panels.append(("model size, MB", [("int8" + (" .ort" if shipped.endswith(".ort") else ""),
                                           sizes.get(shipped, 0), INT8),
                                          ("fp32", sizes.get("model.onnx", 0), FP32)]))
    if panels:
        where = (lat.where + ("" if lat.on_device else "; this host standing in for the device")) if lat else ""
        charts.append(("Latency and size", bars(panels),
                       f"int8 p50 speed-up over fp32: {lat.speedup_p50:.2f}x, measured on {where}." if lat else
                       "Latency not measured (--no-bench)."))
    layers = (d.get("layers") or [])[:MAX_LAYERS]
    if layers:
        rows = [(x["node"], x["lost_db"], LOST) for x in layers]
        charts.append(("Per-layer error", bars([("accumulated SQNR lost at the node, dB (worst first)", rows)]),
                       f"The {len(layers)} compute nodes that lose the most SQNR between their input and their "
                       f"output in int8. {LAYERS_MEASURED}" + ("; the nodes kept in float are not listed." if
                                                                d["quantization"].get("exclude_nodes") else ".")))
    steps = [s for s in ((d.get("compression") or {}).get("steps") or []) if s.get("accuracy") is not None]
    if steps and r.accuracy:
        steps.append({"step": "int8", "accuracy": r.accuracy.int8})
    if steps:
        rows = [(s["step"] + (f", {s['params'] / 1e3:.1f} k params" if "params" in s else ""), s["accuracy"], ACCURACY)
                for s in steps]
        floor = max(0.0, min(s["accuracy"] for s in steps) - 5)  # differences of a point stay visible
        charts.append(("Accuracy after each compression step", bars([("accuracy, %", rows)], start=floor),
                       f"On {d['compression'].get('accuracy_data')}."))
    return charts


INT8, FP32, LOST, ACCURACY = "#2a7ab0", "#999", "#c0504d", "#6a9f3b"
WIDTH, LABELS, ROW, VALUE = 720, 260, 20, 60  # px: the chart, its label column, one bar's row, a printed value


def bars(panels: list[tuple[str, list[tuple[str, float, str]]]], start: float = 0.0) -> str:
    """Horizontal bar charts as one inline SVG, drawn here (a few rects and texts need no plotting library):
    per panel, its heading, then a row a bar: (label, value, colour), the value printed at the bar's end.
    Bars grow from `start`, leftwards for values below it (SQNR can rise past a node: a negative loss); a value
    that is not finite is printed with no bar. A long label keeps its end, where node names differ (the full
    name is its tooltip). Same figures, same bytes."""
    e = _escape
    y, parts = 0, []
    for heading, rows in panels:
        finite = [v for _, v, _ in rows if math.isfinite(v)]
        lo, hi = min([start, *finite]), max([start, *finite])
        left = LABELS + (VALUE if lo < start else 0)  # room for a value printed left of a bar going left
        scale = (WIDTH - VALUE - left) / (hi - lo) if hi > lo else 0.0
        base = left + (start - lo) * scale  # where `start` is
        parts.append(f'<text x="{LABELS}" y="{y + 14}" font-weight="bold">{e(heading)}</text>')
        y += ROW
        for label, value, colour in rows:
            end = base + (value - start) * scale if math.isfinite(value) else base
            short = label if len(label) <= 36 else "…" + label[-35:]
            value_at = f'x="{end + 4:.1f}"' if end >= base else f'x="{end - 4:.1f}" text-anchor="end"'
            parts.append(f'<text x="{LABELS - 6}" y="{y + 14}" text-anchor="end"><title>{e(label)}</title>'
                         f'{e(short)}</text><rect x="{min(base, end):.1f}" y="{y + 3}" width="{abs(end - base):.1f}" '
                         f'height="{ROW - 6}" fill="{colour}"/><text {value_at} y="{y + 14}">{value:.4g}</text>')
            y += ROW
        y += ROW // 2
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y}" viewBox="0 0 {WIDTH} {y}" '
            f'font-family="sans-serif" font-size="12" role="img">' + "".join(parts) + "</svg>")
