"""Target reports → the summary table and the per-target markdown report."""
from __future__ import annotations

import re

from . import bench, mobile
from .parity import QUIET, worst
from .reports import ARM_STAND_IN, TIMED, TargetReport, gate_failure, shipped_model
from .runner import BLOCK, MEMORY_RUNS, REWARM


def _fmt(x, spec=".4f", none="-"):
    return none if x is None else format(x, spec)


def printable(text) -> str:
    """A name from a model or a package (`a\nPASS ...`, an escape sequence, a right-to-left override that shows
    text other than the bytes) as one line a terminal shows as it is."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # what a Markdown renderer would take for the start of HTML
# links and images ([t](url), ![t](url)), emphasis (*, and _ where a word does not hold it), strikethrough
_MARKUP = re.compile(r"([\\\[\]*~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def _safe(text) -> str:
    """A name from a model or a package as Markdown text: one line, no HTML, code span, link, image or emphasis of
    its own (a report.md posted as a CI job summary or a review comment renders what it holds: a node named
    `![t](https://...)` was a tracking pixel, `**all gates PASSED**` a verdict); edgekit's own `<= 50` stays."""
    return _MARKUP.sub(r"\\\1", _TAG.sub("&lt;", _code(text).replace("&", "&amp;")))  # `&amp;` shown as it is


def _setting(value) -> str:
    """A setting as the manifest's JSON writes it (`per_channel: True`, `auto_search: ('calibrate_method', ...)`
    were Python's reprs)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "-"}[value]
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "(none)"
    return str(value)


def _code(text) -> str:
    """A name inside a code span: one line, and no backtick to end the span early."""
    return printable(text).replace("`", "'")


class _Own(str):
    """edgekit's own Markdown in a table cell (a bold FAIL), not escaped as names are."""


def _md(head: str, rows) -> list[str]:
    """A Markdown table: the header ("a | b"), its rule, one line per row (each cell one line of text)."""
    return [f"| {head} |", "|" + "---|" * (head.count("|") + 1)] + [
        "| " + " | ".join(c if isinstance(c, _Own) else _safe(c).replace("|", "\\|") for c in r) + " |"
        for r in rows]


def _split_line(split: dict) -> str:
    """Which validation samples --auto chose on and which its verdict is of (the manifest's tuning.validation_split)."""
    shared = f" ({_safe(split['shared'])}): the gates' figures are of the samples that chose the trial" \
        if split.get("shared") else ""
    return f"Trial chosen on {_safe(split['chosen_on'])}; the gates judge {_safe(split['judged_on'])}{shared}."


def _choice(t: dict) -> str:
    """The chosen trial's verdict: its `passed` is of the samples it was chosen on, which the held-out ones (the
    gates') may not share (tuning.held_out_passed)."""
    if not t["passed"]:
        return "FAILS; the closest to fp32 kept"
    if t.get("held_out_passed") is False:
        return ("passes on the samples it was chosen on; the held-out samples fail: "
                f"{', '.join(map(_safe, t['held_out_failed_gates']))}")
    return "passes"


def table(reports: list[TargetReport]) -> str:
    """One row per target: size, parity, latency, gates; then where latency was measured."""
    # top1: a classifier's scored output; int equal: integer outputs (class ids, a TopK's indices, masks), held
    # exactly, which top1 showed, a TopK's indices or a mask's pixels reading as a classifier's agreement
    # cos int8: the mean over samples; min cos: the worst sample's; detections: a detector's detection_agreement
    # cSQNR dB: the worst output channel's SQNR around its mean, what cosine and SQNR (ruled by the large channels) miss
    head = ["target", "int8 MB", "fp32 MB", "cos int8", "min cos", "SQNR dB", "cSQNR dB", "top1", "int equal",
            "detections",
            "acc fp32→int8", "thr", "p50 fp32 ms", "p50 int8 ms", "p90/p50", "speedup", "gates"]
    one = any(r.latency_1_thread for r in reports)  # a profile with more threads: its 1-thread figure too
    if one:
        head.insert(head.index("p90/p50"), "int8 1 thr ms")
    rows = []
    for r in reports:
        q, acc, lat = r.quant_parity, r.accuracy, r.latency
        failed = r.failures()
        mark = "*" if lat and not lat.on_device else ""  # the host's latency standing in for the device's
        rows.append([r.target, f"{r.sizes[shipped_model(r.details)] / 1e6:.2f}", f"{r.sizes['model.onnx'] / 1e6:.2f}",
                     _fmt(q.worst("cosine"), none="n/a"), _fmt(q.worst("cosine_min"), none="n/a"),
                     _fmt(q.worst("sqnr_db"), ".1f", "n/a"), _fmt(q.worst("centred_sqnr_db"), ".1f", "n/a"),
                     _fmt(q.worst("top1_agreement"), ".3f", "n/a"), _fmt(q.worst("exact_agreement"), ".3f", "n/a"),
                     _fmt(q.worst("detection_agreement"), ".3f", "n/a"),
                     f"{acc.fp32:.2f}→{acc.int8:.2f}" if acc else "n/a", lat.int8.threads if lat else "-",
                     *(_fmt(lat and ms, ".3f") + mark for ms in (lat and lat.fp32.p50_ms, lat and lat.int8.p50_ms)),
                     _fmt(lat and worst([lat.fp32, lat.int8], "p90_over_p50", max), ".2f"),
                     f"{lat.speedup_p50:.2f}x" if lat else "-",
                     "pass" if not failed else "FAIL: " + ", ".join(failed)])
        if one:
            single = r.latency_1_thread or (lat if lat and lat.int8.threads == 1 else None)
            rows[-1].insert(head.index("int8 1 thr ms"), _fmt(single and single.int8.p50_ms, ".3f") + mark)
    for column, key in (("cSQNR dB", "centred_sqnr_db"), ("int equal", "exact_agreement"),
                        ("detections", "detection_agreement")):
        if not any(r.quant_parity.worst(key) is not None for r in reports):  # none measured (no integer output, no
            at = head.index(column)  # detector): no column
            for row in (head, *rows):
                del row[at]
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    measured: dict[str, list[str]] = {}  # where → the targets timed there
    for r in reports:
        for lat in (r.latency, r.latency_1_thread):
            if lat and r.target not in measured.setdefault(lat.where, []):
                measured[lat.where].append(r.target)
    lines += [f"latency of {', '.join(names)} measured on: {where}" for where, names in sorted(measured.items())]
    if ort := [r.target for r in reports if shipped_model(r.details) != "model.int8.onnx"]:
        timed = any(r.latency for r in reports if r.target in ort)
        lines.append(f"{', '.join(ort)}: int8 MB is of the .ort the runtime loads (the size budget's file)" + (
            f"; int8 latency is of {TIMED['int8']} (the .ort holds its graph as optimised for the device's CPU)"
            if timed else ""))
    stand_ins = [r for r in reports if r.latency and not r.latency.on_device]
    if stand_ins:
        machines = " / ".join(sorted({r.latency.int8.host.get("machine", "?") for r in stand_ins}))
        lines.append(f"* {', '.join(r.target for r in stand_ins)}: latency of host {machines}, not the device "
                     "(measure there with --device ssh://...)")
    for kernels in dict.fromkeys(r.details.get("arm_kernels") for r in reports if r.details.get("arm_kernels")):
        arm = [r.target for r in reports if r.details.get("arm_kernels") == kernels]
        lines.append(f"{', '.join(arm)}: int8 parity and accuracy from {kernels}"
                     + (" (--emulate aarch64 runs real aarch64 kernels)" if kernels == ARM_STAND_IN else ""))
    lines += [f"{r.target}: {printable(r.emulated.line(r.gates))}" for r in reports if r.emulated]
    lines += [f"{r.target}: {printable(w)}" for r in reports for w in r.warnings]
    return "\n".join(lines)


def computed_on(r: TargetReport, int8: bool = True, both: bool = False) -> str:
    """Where a target's parity figures were computed: the host, and whose int8 kernels (an ARM target's are this
    host's standing in for the device's, or emulated aarch64 ones). `both`: one line for both stages (report.html's),
    the int8 and float outputs' threads each said (it said the int8 session's 1 beside export gates run at 2)."""
    from .host import describe

    arm = r.details.get("arm_kernels") if int8 else None
    kernels = r.quant_parity.int8_kernels if r.quant_parity and int8 else None
    h = r.details["host"]  # its threads are the int8 session's; the float outputs run at edgekit's work threads
    work = h.get("work_threads", h["threads"])
    return describe(h if int8 else {**h, "threads": work}, work if both else None) + (
        f"; int8 outputs from {kernels}" if kernels else "") + (f" ({arm})" if arm and arm != kernels else "")


def quiet_line(outputs, safe) -> list[str]:
    """Which outputs' cosine and min cosine leave samples out (parity.QUIET), and how many: both figures alike."""
    said = [f"{o.quiet_samples} of {safe(o.output)}" for o in outputs if o.quiet_samples]
    return [f"Cosine and min cosine leave out quiet samples ({', '.join(said)}): reference ~0 or under "
            f"{QUIET:g} of the median sample's RMS; SQNR and max abs count them.", ""] if said else []


def accuracy_line(a) -> str:
    what = "Accuracy on {} labelled samples" if a.mean_iou is None else "Pixel accuracy on {} labelled pixels"
    iou = "" if a.mean_iou is None else "; mean IoU fp32 {:.2f} · int8 {:.2f}".format(*a.mean_iou)
    on = "" if a.output is None else f" of output {a.output!r}"
    return (f"{what.format(a.samples)}{on}: torch {_fmt(a.torch, '.2f')} · fp32 {a.fp32:.2f} · int8 "
            f"{a.int8:.2f} (drop {a.drop:.2f} points){iou}")


# how the per-layer error is measured, for both reports
LAYERS_MEASURED = ("On the first validation samples (4; 8 where --auto measured them), through the QDQ graph unfused "
                   "(onnxruntime's reference kernels, not the int8 ones)")


def ort_format_line(o: dict, name=str) -> str:
    """What the shipped .ort needs to run as measured, and how far the full build `check` runs is from the .onnx.
    `name` shows an output's name (the model's: report.md's `_safe` escapes it)."""
    def diff(entry: dict) -> str:
        return ", ".join(f"{name(k)} {v:.3g}" for k, v in entry.get("max_abs_diff_from_onnx", {}).items())

    line = (f"`{o['file']}` ({o['optimization_style']} optimisation style, target platform {o['target_platform']}): "
            f"{o['build']}. Max |difference| from the .onnx in this build: {diff(o)}.")
    if fp32 := o.get("fp32"):  # the fp32 model a CoreML build runs (no Q/DQ builders there), at fixed shapes
        shapes = ", ".join(f"{name(i['name'])} {'x'.join(map(str, i['shape']))}" for i in fp32.get("inputs", []))
        line += (f" `{fp32['file']}`, converted from `{fp32['onnx']}` for {', '.join(fp32['for'])}"
                 + (f" (`model.onnx` with its inputs fixed to {shapes})" if shapes else "") + f": {fp32['build']}. "
                 f"Max |difference| from `{fp32['onnx']}` in this build: {diff(fp32)}.")
    return line


def session_outputs(d: dict) -> dict[str, list]:
    """Each runtime model's outputs as the manifest gives them: the CoreML build's fp32 model has its own (fixed)."""
    fp32 = (d.get("ort_format") or {}).get("fp32") or {}
    own = {fp32["file"]: fp32["outputs"]} if isinstance(fp32.get("outputs"), list) and fp32.get("file") else {}
    return {s.get("model"): own.get(s.get("model"), d.get("outputs") or []) for s in d["runtime"]["sessions"]}


def how_to_run(rt: dict, outputs: dict[str, list] | None = None) -> list[str]:
    """The manifest's `runtime` section as report.md's "How to run it": what code calling the models sets up, and
    what each model gives back (`outputs`: per model, its outputs' names, dtypes and shapes, in order)."""
    ort = rt["onnxruntime"]
    out = ["## How to run it", "", f"- onnxruntime {'== ' if ort['same_release'] else '>= '}{ort['minimum']}: "
           f"{_safe(ort['why'])}."]
    for s in rt["sessions"]:
        eps = ", ".join(f"{p['name']}" + (f" ({', '.join(f'{k}={v}' for k, v in p['options'].items())})"
                                           if p["options"] else "") + (f" [{p['min_os']} or later]"
                                                                       if p.get("min_os") else "")
                        + (" (onnxruntime's checker does not recommend it for this model: see the warnings)"
                           if p.get("checker_verdict") == "no" else "") for p in s["providers"])
        entries = "".join(f", {k}={v}" for k, v in s["session"]["config_entries"].items())
        out += [f"- `{s['model']}`: providers in this order: {_safe(eps)}; session intra_op_num_threads="
                f"{s['session']['intra_op_num_threads']}{entries}"
                + (f"; build flags {' '.join(s['build_flags'])}" if s["build_flags"] else "") + "."]
        out += [f"  - {_safe(note)}." for note in s["session"].get("notes", [])]  # none in packages made before
        out += [f"  - input {_safe(i['name'])}: {i['dtype']} {'x'.join(map(str, i['shape'])) or 'scalar'}"
                + (f" {i['layout']}" if i["layout"] else "")
                + (f"; {_safe(i['values'])}" if i.get("values") else "")
                + (f"; calibration range [{i['calibration_range'][0]:.6g}, {i['calibration_range'][1]:.6g}]"
                   if i["calibration_range"] else "") for i in s["inputs"]]
        out += [f"  - output {_safe(o['name'])}: {o['dtype']} {'x'.join(map(str, o['shape'])) or 'scalar'}"
                for o in (outputs or {}).get(s["model"], [])]
    return out


def labels_line(labels: dict | None) -> list[str]:
    """How to run it's word on the class names a package ships (a recipe's `labels`), where it ships them."""
    if not isinstance(labels, dict):
        return []
    return [f"- `{_safe(str(labels.get('file')))}`: {labels.get('count')} class names, one per line (UTF-8): line k "
            "names class index k, so an app shows the name of its top class score."]


def _chosen(golden: dict) -> str:
    """How the golden samples were chosen, where not the verdict's first ones."""
    chosen = golden.get("chosen")
    if not isinstance(chosen, dict) or not isinstance(chosen.get("samples"), list):
        return ""
    picked = [f"#{s.get('sample')} ({s.get('changed_outputs')} outputs)" for s in chosen["samples"]
              if isinstance(s, dict)]
    return (f", the riskiest on AVX2 kernels (int16-saturating u8s8 sums) first: {', '.join(picked)} of the "
            f"{chosen.get('at_risk')} of {chosen.get('scored')} scored whose requantized outputs saturation changes")


def _failed(g, details: dict):
    """A failed gate's result: **FAIL**, and what failed where the row's figures cannot say it (runs_at_)."""
    said = gate_failure(g, details)
    return _Own("**FAIL**" + _safe(said.removeprefix("FAIL")).replace("|", "\\|"))


def markdown(r: TargetReport) -> str:
    """The human report written beside each target's models."""
    d = r.details
    out = [f"# edgekit report: {_safe(d['model']['source'])} → {r.target}", "",
           f"**{'PASSED' if r.passed else 'FAILED'}** · edgekit {d['edgekit_version']} · "
           f"onnxruntime {d['versions']['onnxruntime']} · opset {d['opset']}", "",
           *(f"> **{_safe(w)}**" for w in r.warnings)]
    if d.get("runtime"):
        out += ["", *how_to_run(d["runtime"], session_outputs(d)), *labels_line(d.get("labels"))]
    out += ["", "## Gates", ""] + _md("gate | value | limit | result", [
        [g.label, "-", f"{g.op} {_fmt(g.limit, '.6g')}" if g.limit is not None else "-", f"skipped: {g.skipped}"]
        if g.skipped else
        [g.label, _fmt(g.value, ".6g"), f"{g.op} {_fmt(g.limit, '.6g')}", "pass" if g.passed else _failed(g, d)]
        for g in r.gates])
    if r.verification:
        out += ["", "## Verification (`edgekit check` on this folder)", ""]
        out += [f"- {'pass' if c.passed else '**FAIL**'}: {_safe(c.name)}"
                + (f": {_safe(c.message)}" if c.message else "")
                for c in r.verification]
    golden = d["golden"]
    judged = ((r.tuning or {}).get("validation_split") or {}).get("judged_on")
    first = "of" if golden.get("chosen") else "the first of"  # the riskiest on AVX2 kernels come first
    whose = f" ({first} {judged.split(',')[0]})" if judged else ""  # --auto's: the samples its verdict is of
    out += ["", "## Golden vectors", "", f"{golden['samples']} validation inputs{whose}{_chosen(golden)}; tolerance "
            f"{golden['tolerance']}.",
            ""] + _md("model | golden file | computed with",
                      [(m, g["file"], g["kernels"]) for m, g in golden["models"].items()])
    if d.get("ort_format"):
        out += ["", ort_format_line(d["ort_format"], _safe)]
    out += ["", "## Parity", ""]
    na = _Own("n/a (reference ~0)")
    given = ("the given ONNX vs pre-processed fp32" if (d.get("model") or {}).get("exporter") is None
             else "torch vs ONNX fp32 (export)")
    for p, title in ((r.export_parity, given), (r.quant_parity, "ONNX fp32 vs int8")):
        if p:
            out += [f"### {title} on {p.samples} samples of {_safe(p.data)}", ""]
            out += [f"Computed on {_safe(computed_on(r, p is r.quant_parity))}.", ""]
            out += _md(
                "output | cosine | min cosine | SQNR dB | worst channel centred SQNR dB | max abs | mean abs | top-1 | "
                "top-5 | mean IoU | retrieval@1",
                [(o.output, *(_fmt(v, f, na if o.exact_agreement is None else _Own(
                    f"n/a (integer: {o.exact_agreement:.4f} equal)")) for v, f in ((o.cosine, ".6f"),
                                                                       (o.cosine_min, ".6f"), (o.sqnr_db, ".2f"),
                                                                       (o.centred_sqnr_db, ".2f"))),
                  _fmt(o.max_abs, ".3g", "n/a"), _fmt(o.mean_abs, ".3g", "n/a"), _fmt(o.top1_agreement, ".4f", "n/a"),
                  _fmt(o.top5_agreement, ".4f", "n/a"), _fmt(o.iou_agreement, ".4f", "n/a"),
                  _fmt(o.retrieval_at1, ".4f", "n/a")) for o in p.outputs]) + [""] + quiet_line(p.outputs, _safe)
    if r.accuracy:
        out += [accuracy_line(r.accuracy), ""]
    if r.emulated:  # an x86-64 target's figures on an emulated CPU's kernels, which its emulated_ gates hold
        out += [f"Emulated CPU (`--emulate`): {_safe(r.emulated.line(r.gates))}.", ""]
    if state := d.get("state"):  # the drift a streaming model's int8 state accumulates (was in the manifest alone)
        seq = state["sequence"]
        out += ["### State carried over the validation sequences", "",
                f"Pairs {_safe(', '.join(f'{i} <- {o}' for i, o in state['pairs'].items()))}; initial "
                f"{_safe(', '.join(f'{k} {v}' for k, v in state['initial'].items()))}; kept float: "
                f"{_safe(', '.join(state['float_nodes']) or 'none')}. {seq['sequences']} sequences of up to "
                f"{seq['steps']} steps: worst int8 output cosine {_fmt(seq['worst_step_cosine'], '.6f')} at step "
                f"{seq['worst_step']}, {_fmt(seq['last_step_cosine'], '.6f')} at the last.", ""]
    lat = r.latency
    if lat:
        where = lat.where if lat.on_device else f"{lat.where}: the host standing in for the device, not the device"
        out += ["## Latency", "", f"Measured on {_safe(where)}, on one input (the first validation sample: "
                f"{_safe(lat.shapes()) or '-'}); {lat.fp32.runs} runs after "
                f"{_fmt(lat.fp32.warmup, 'd', 'a')} warm-up, the models taking turns in blocks of {BLOCK} runs (each "
                f"after {REWARM} untimed).", ""]
        out += _md("model | p50 ms | p90 ms | p99 ms | p90/p50 | load ms | peak MB",
                   [(key, f"{v.p50_ms:.4f}", f"{v.p90_ms:.4f}", f"{v.p99_ms:.4f}", f"{v.p90_over_p50:.2f}",
                     f"{v.load_ms:.1f}", _fmt(v.peak_rss_mb, ".1f", "-")) for key, v in (("fp32", lat.fp32),
                                                                                       ("int8", lat.int8))])
        if lat.fp32.peak_rss_mb is not None:
            out += ["", "peak MB: the resident memory a process gains loading the model and running it "
                    f"{MEMORY_RUNS} times, over what onnxruntime's import holds (a process of its own per model)."]
        out += ["", f"int8 speed-up (p50): {lat.speedup_p50:.2f}x", ""]
        if r.latency_1_thread:
            one = r.latency_1_thread
            out += [f"At 1 thread ({_safe(one.where)}): p50 fp32 {one.fp32.p50_ms:.4f} ms, "
                    f"int8 {one.int8.p50_ms:.4f} ms "
                    f"(p90/p50 {one.int8.p90_over_p50:.2f}); the profile's threads gain "
                    f"{one.int8.p50_ms / lat.int8.p50_ms:.2f}x on int8.", ""]
    else:
        out += ["## Latency", "", "Not measured (--no-bench).", ""]
    coverage = d.get("mobile_coverage") or {}
    out += [f"- {c['provider']} (predicted, {c.get('model', 'model.int8.onnx')}): {c['coverage']:.0%} of the MACs, "
            f"{c['supported_nodes']}/{c['nodes']} nodes in {c['partitions']} "
            f"partition(s); CPU fallback ops: {', '.join(c['cpu_fallback_ops']) or 'none'}; "
            f"{c['nodes_blocked_by_dynamic_shapes']} node(s) need fixed shapes "
            f"(coverage with fixed shapes {c['coverage_with_fixed_shapes']:.0%}); onnxruntime's checker's verdict: "
            + (f"{c['verdict']} ({mobile.VERDICT_SAYS[c['verdict']]})" if c.get('verdict') in mobile.VERDICT_SAYS
               else str(c.get('verdict'))) for c in coverage.values()]
    out += [""] if coverage else []
    t = r.tuning
    if t and "skipped" in t:
        out += ["## Accuracy-aware search (--auto)", "", f"Skipped: {t['skipped']}.", ""]
    elif t:
        out += ["## Accuracy-aware search (--auto)", "",
                f"Chose trial {t['chosen']} ({_choice(t)}) after "
                f"{len(t['trials'])} trial(s) in {t['seconds']:.1f} s; int8 latency price vs the target's defaults: "
                f"{_fmt(t['latency_price'], '.2f')}x.", "",
                f"Trials timed on {_safe(t.get('timed_on', 'this host'))}.", "",
                *([_split_line(split), ""] if (split := t.get("validation_split")) else []),
                f"Searched (the target's rules): {', '.join(t['searched'])}; latency price cap "
                f"{t['max_latency_price']}x." + "".join(f" **{_safe(t[k])}.**" for k in ("advice", "stopped_short")
                                                     if t.get(k)), ""]
        out += _ranked_line(t)
        exact = any(row.get("exact_agreement") is not None for row in t["trials"])  # class ids: held exactly
        fast = bool(t.get("ranked_by"))  # what ranked them (a package made before: p50, the columns shown)
        out += _md("# | why | calibration | per-channel | excluded | cosine | SQNR dB | " + "integer equal | " * exact
                   + "fp32 p50 ms | int8 p50 ms | " + "int8/fp32 ranked on | " * fast + "result",
                   [(row["index"], row["why"], row["calibrate_method"], row["per_channel"],
                     ", ".join(row["excluded"]) or "-", _fmt(row["cosine"], ".4f", "n/a"),
                     _fmt(row["sqnr_db"], ".1f", "n/a"), *[_fmt(row.get("exact_agreement"), ".4f")] * exact,
                     f"{row['fp32_p50_ms']:.3f}", f"{row['int8_p50_ms']:.3f}", *[_fast_ratio(row)] * fast,
                     _trial_result(row)) for row in t["trials"]])
        out += [""] + [f"- kept in float: `{_code(e['node'])}`: {_safe(e['why'])}" for e in t["excluded"]]
        out += [f"- kept in float in every trial (exclude_nodes, not counted by max_excluded): `{_code(n)}`"
                for n in t.get("given", [])] + [f"- not tried: {_safe(why)}" for why in t.get("untried", [])] + [""]
    search = d["quantization"].get("precision_search")
    if search and search.get("skipped"):
        out += ["## Float regions for speed (--precision latency)", "", f"Not searched: {search['skipped']}.", ""]
    elif search:
        out += ["## Float regions for speed (--precision latency)", "",
                f"{len(search['float_nodes'])} node(s) kept in float for speed; {_safe(search['start'])} p50 "
                f"{search['start_p50_ms']:.4f} ms → {search['p50_ms']:.4f} ms, timed side by side on "
                f"{_safe(search['where'])}. A region is kept only when faster by {search['margin']:.0%} in two loops "
                f"in a row{_decided_on(search)} ({search['seconds']:.1f} s).{_final_loop(search)}", ""]
        fast = any(step.get("timing") for step in search["steps"])
        out += _md("tried | nodes | p50 ms | best so far p50 ms | " + "decided on: ms, best so far ms | " * fast
                   + "kept", [
            (step["why"], ", ".join(step["nodes"]), f"{step['p50_ms']:.4f}", f"{step['best_p50_ms']:.4f}",
             *[_step_figures(step)] * fast,
             "yes" if step["kept"] else f"no: {_safe(step['note'])}" if step.get("note") else "no")
            for step in search["steps"]]) + [""]
        notes = (("Reverted", search["reverted"]), ("Advice", search.get("advice")),
                 ("Not tried (max_trials, time budget)", ", ".join(search["untried"])))
        out += [line for k, v in notes if v for line in (f"{k}: {_safe(v)}.", "")]
    if d.get("layers"):
        out += ["## Per-layer error (accumulated SQNR lost at each compute node, worst first)", "",
                f"{LAYERS_MEASURED}; the nodes kept in float are not listed.", ""]
        out += _md("node | op | input dB | output dB | lost dB", [
            (x["node"], x["op"], f"{x['input_sqnr_db']:.1f}", f"{x['output_sqnr_db']:.1f}", f"{x['lost_db']:.1f}")
            for x in d["layers"]]) + [""]
    out += ["## Quantization", ""]
    out += [f"- {k}: {_safe(_setting(v))}" for k, v in d["quantization"].items() if k != "precision_search"]
    out += ["", "## Files", ""] + _md("file | bytes | sha256", [(n, r.sizes[n], h) for n, h in r.files.items()])
    return "\n".join(out) + "\n"


def _ranked_line(t: dict) -> list[str]:
    """What ranked the passing trials by speed (the p50 columns move with the host's load), and the ties."""
    if not t.get("ranked_by"):
        return []
    tied = ", ".join(map(str, t.get("tie") or []))
    tie = f"; level with the chosen one, tried after it: trial(s) {tied}" if tied else ""
    return [f"Passing trials ranked by int8/fp32 on the {_safe(t['ranked_by'])} of each trial's loop (the column "
            f"\"int8/fp32 ranked on\"), within {bench.TIE:.0%} of the fastest a tie{tie}; the latency price and its "
            "cap are on these figures too.", ""]


def _fast_ratio(row: dict) -> str:
    fast, fp32 = row.get("int8_fast_ms"), row.get("fp32_fast_ms")
    return f"{fast / fp32:.3f}" if fast and fp32 else "-"


def _decided_on(search: dict) -> str:
    """The figure the steps were decided on, where they record it (p50 before)."""
    said = next((s["timing"]["estimator"] for s in search["steps"] if s.get("timing")), None)
    return f", on the {_safe(said)} beyond the runs' noise (not p50)" if said else ""


def _final_loop(search: dict) -> str:
    """The final loop's figures that kept the float nodes or reverted them (its p50s may say otherwise)."""
    figures = (search.get("timing") or {}).get("figures_ms") or {}
    if not {"start", "kept"} <= set(figures):
        return ""
    return f" The final loop, on those figures: {figures['start']:.4f} ms → {figures['kept']:.4f} ms."


def _step_figures(step: dict) -> str:
    figures = (step.get("timing") or {}).get("figures_ms") or {}
    return f"{figures['trial']:.4f}, {figures['best']:.4f}" if {"trial", "best"} <= set(figures) else "-"


def _trial_result(row: dict) -> str:
    """A trial's verdict, and on the emulated CPU's kernels where it was run there (export --emulate x86_64)."""
    here = "pass" if row["passed"] else "fail: " + ", ".join(row["failed_gates"])
    there = row.get("emulated")
    return here if there is None else here + "; emulated: " + (
        "pass" if there["passed"] else "fail: " + ", ".join(there["failed_gates"]))
