"""Manifests → the summary table, the per-target markdown report, and the exit code."""
from __future__ import annotations

from .errors import ExitCode
from .parity import worst


def exit_code(manifests: list[dict]) -> ExitCode:
    return ExitCode.OK if all(m["passed"] for m in manifests) else ExitCode.GATE_FAILED


def _fmt(x, spec=".4f", none="-"):
    return none if x is None else format(x, spec)


def table(manifests: list[dict]) -> str:
    """One row per target: size, parity, latency, gates; then where latency was measured."""
    head = ["target", "int8 MB", "fp32 MB", "cos int8", "SQNR dB", "top1", "acc fp32→int8", "p50 fp32 ms",
            "p50 int8 ms", "p90/p50", "speedup", "gates"]
    rows = []
    for m in manifests:
        q = m["parity"]["quantization"]
        acc = m.get("accuracy")
        lat = m["latency"] or {k: {"p50_ms": None, "p90_over_p50": None} for k in ("fp32", "int8")} | {"speedup_p50": None}
        spread = worst([lat["fp32"], lat["int8"]], "p90_over_p50", max)
        failed = _failures(m)
        rows.append([m["target"], f"{m['sizes']['model.int8.onnx'] / 1e6:.2f}", f"{m['sizes']['model.onnx'] / 1e6:.2f}",
                     _fmt(worst(q["outputs"], "cosine"), none="n/a"), _fmt(worst(q["outputs"], "sqnr_db"), ".1f", "n/a"),
                     _fmt(worst(q["outputs"], "top1_agreement"), ".3f", "n/a"),
                     f"{acc['fp32']:.2f}→{acc['int8']:.2f}" if acc else "n/a",
                     _fmt(lat["fp32"]["p50_ms"], ".3f"), _fmt(lat["int8"]["p50_ms"], ".3f"), _fmt(spread, ".2f"),
                     _fmt(lat["speedup_p50"], ".2f") + ("x" if lat["speedup_p50"] else ""),
                     "pass" if not failed else "FAIL: " + ", ".join(failed)])
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    hosts = {m["latency"]["where"] for m in manifests if m["latency"]}
    lines += [f"latency measured on: {h}" for h in sorted(hosts)]
    for m in manifests:
        lines += [f"{m['target']}: {w}" for w in m.get("warnings", [])]
    return "\n".join(lines)


def _failures(m: dict) -> list[str]:
    """Failed gates, then what `edgekit check` failed on besides the gates it re-reads."""
    return ([g["name"] for g in m["gates"] if not g["passed"]]
            + [f"check {c['name']}" for c in m.get("verification", []) if not c["passed"] and c["name"] != "gates"])


def markdown(m: dict) -> str:
    """The human report written beside each target's models."""
    out = [f"# edgekit report: {m['model']['source']} → {m['target']}", ""]
    out.append(f"**{'PASSED' if m['passed'] else 'FAILED'}** · edgekit {m['edgekit_version']} · "
               f"onnxruntime {m['versions']['onnxruntime']} · opset {m['opset']}")
    out.append("")
    for w in m.get("warnings", []):
        out.append(f"> **{w}**")
    out += ["", "## Gates", "", "| gate | value | limit | result |", "|---|---|---|---|"]
    for g in m["gates"]:
        if "skipped" in g:
            out.append(f"| {g['name']} | - | - | skipped: {g['skipped']} |")
            continue
        out.append(f"| {g['name']} | {_fmt(g['value'], '.6g')} | {g['op']} {_fmt(g['limit'], '.6g')} | "
                   f"{'pass' if g['passed'] else '**FAIL**'} |")
    if m.get("verification"):
        out += ["", "## Verification (`edgekit check` on this folder)", ""]
        out += [f"- {'pass' if c['passed'] else '**FAIL**'}: {c['name']}" + (f": {c['message']}" if c["message"] else "")
                for c in m["verification"]]
    out += ["", "## Golden vectors", "", f"{m['golden']['samples']} validation inputs; tolerance {m['golden']['tolerance']}.",
            "", "| model | golden file | computed with |", "|---|---|---|"]
    out += [f"| {model} | {g['file']} | {g['kernels']} |" for model, g in m["golden"]["models"].items()]
    if m.get("ort_format"):
        o = m["ort_format"]
        diff = ", ".join(f"{k} {v:.3g}" for k, v in o.get("max_abs_diff_from_onnx", {}).items())
        out += ["", f"`{o['file']}` ({o['optimization_style']} optimisation style, target platform "
                f"{o['target_platform']}): {o['build']}. Max |difference| from the .onnx in this build: {diff}."]
    out += ["", "## Parity", ""]
    for stage, title in (("export", "torch vs ONNX fp32 (export)"), ("quantization", "ONNX fp32 vs int8")):
        p = m["parity"].get(stage)
        if not p:
            continue
        out += [f"### {title} on {p['samples']} samples of {p['data']}", "",
                "| output | cosine | min cosine | SQNR dB | max abs | mean abs | top-1 agreement |",
                "|---|---|---|---|---|---|---|"]
        for o in p["outputs"]:
            na = "n/a (reference ~0)"
            out.append(f"| {o['output']} | {_fmt(o['cosine'], '.6f', na)} | {_fmt(o['cosine_min'], '.6f', na)} | "
                       f"{_fmt(o['sqnr_db'], '.2f', na)} | {o['max_abs']:.3g} | {o['mean_abs']:.3g} | "
                       f"{_fmt(o.get('top1_agreement'), '.4f', 'n/a')} |")
        out.append("")
    if m.get("accuracy"):
        a = m["accuracy"]
        out += [f"Accuracy on {a['samples']} labelled samples: torch {_fmt(a.get('torch'), '.2f')} · "
                f"fp32 {a['fp32']:.2f} · int8 {a['int8']:.2f} (drop {a['drop']:.2f} points)", ""]
    lat = m["latency"]
    if lat:
        out += ["## Latency", "", f"Measured on {lat['where']}; {lat['fp32']['runs']} runs after warm-up, "
                "interleaved.", "", "| model | p50 ms | p90 ms | p99 ms | p90/p50 | load ms |", "|---|---|---|---|---|---|"]
        for key in ("fp32", "int8"):
            v = lat[key]
            out.append(f"| {key} | {v['p50_ms']:.4f} | {v['p90_ms']:.4f} | {v['p99_ms']:.4f} | {v['p90_over_p50']:.2f} | "
                       f"{v['load_ms']:.1f} |")
        out += ["", f"int8 speed-up (p50): {lat['speedup_p50']:.2f}x", ""]
    else:
        out += ["## Latency", "", "Not measured (--no-bench).", ""]
    for ep, c in (m.get("mobile_coverage") or {}).items():
        out.append(f"- {c['provider']} (predicted): {c['supported_nodes']}/{c['nodes']} nodes in {c['partitions']} "
                   f"partition(s); CPU fallback ops: {', '.join(c['cpu_fallback_ops']) or 'none'}; "
                   f"{c['nodes_blocked_by_dynamic_shapes']} node(s) need fixed shapes "
                   f"(coverage with fixed shapes {c['coverage_with_fixed_shapes']:.0%})")
    if m.get("mobile_coverage"):
        out.append("")
    if m.get("tuning") and "skipped" in m["tuning"]:
        out += ["## Accuracy-aware search (--auto)", "", f"Skipped: {m['tuning']['skipped']}.", ""]
    elif m.get("tuning"):
        t = m["tuning"]
        out += ["## Accuracy-aware search (--auto)", "",
                f"Chose trial {t['chosen']} ({'passes' if t['passed'] else 'NO TRIAL PASSED; best SQNR kept'}) after "
                f"{len(t['trials'])} trial(s) in {t['seconds']:.1f} s; int8 latency price vs the target's defaults: "
                f"{_fmt(t['latency_price'], '.2f')}x.", "",
                f"Searched (the target's rules): {', '.join(t['searched'])}; latency price cap "
                f"{t['max_latency_price']}x." + (f" **{t['advice']}.**" if t.get("advice") else ""), "",
                "| # | why | calibration | per-channel | excluded | cosine | SQNR dB | fp32 p50 ms | int8 p50 ms | result |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in t["trials"]:
            out.append(f"| {r['index']} | {r['why']} | {r['calibrate_method']} | {r['per_channel']} | "
                       f"{', '.join(r['excluded']) or '-'} | {r['cosine']:.4f} | {r['sqnr_db']:.1f} | "
                       f"{r['fp32_p50_ms']:.3f} | {r['int8_p50_ms']:.3f} | "
                       f"{'pass' if r['passed'] else 'fail: ' + ', '.join(r['failed_gates'])} |")
        out += [""] + [f"- kept in float: `{e['node']}`: {e['why']}" for e in t["excluded"]] + [""]
    if m.get("layers"):
        out += ["## Per-layer error (accumulated SQNR lost at each compute node, worst first)", "",
                "| node | op | input dB | output dB | lost dB |", "|---|---|---|---|---|"]
        out += [f"| {r['node']} | {r['op']} | {r['input_sqnr_db']:.1f} | {r['output_sqnr_db']:.1f} | {r['lost_db']:.1f} |"
                for r in m["layers"]]
        out.append("")
    out += ["## Quantization", ""]
    for k, v in m["quantization"].items():
        out.append(f"- {k}: {v}")
    out += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---|---|"]
    for name, digest in m["files"].items():
        out.append(f"| {name} | {m['sizes'][name]} | `{digest}` |")
    return "\n".join(out) + "\n"
