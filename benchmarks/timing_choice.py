"""How often a timing-based choice flips on a loaded host, per estimator.

Builds int8 candidates once (MobileNetV2-style pruned to half at round_to 8/16/32, as `round_to = "auto"` does, and
two widths of it, a real difference), then times each set round-robin (bench.measure_pair, as the choices do)
`--repeats` times while `--load` busy processes share the cores. Per run it reports which candidate each estimator
picks: p50 (the old rule), min, the mean of the fastest tenth (bench.fast_ms) and quartile, bench.choose (fast_ms with
a bootstrap tie; `compare`), and onnxruntime's profiler (sum of per-node medians). Usage:

    PYTHONPATH=. python benchmarks/timing_choice.py --repeats 8 --load 2
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build(tmp: Path) -> tuple[dict, dict, dict]:
    """({multiple: int8 path}, {width: int8 path}, feed)."""
    from arch import mobilenetv2_style
    from edgekit import calib, onnx_export, quantization
    from edgekit.compress import run_prune
    from edgekit.config import InputSpec, PruneSpec, load_target

    target = load_target("desktop-x86")
    specs = (InputSpec("input", (1, 3, 96, 96)),)
    feeds = calib.random_dataset(specs, 4, seed=0).feeds

    def int8(module, name):
        raw = onnx_export.export_torch(module, specs, (), target.opset, tmp / f"{name}.onnx")
        fp32, _ = onnx_export.preprocess(raw, tmp / f"{name}.fp32.onnx", exported=True)
        plan = quantization.plan(fp32, target.quantize, set(), target.runtime.arch)
        return str(quantization.quantize(fp32, tmp / f"{name}.int8.onnx", plan, feeds))

    rounding = {}
    for k in (8, 16, 32):
        m = mobilenetv2_style(num_classes=100).eval()
        run_prune(m, specs, dataclasses.replace(PruneSpec(), ratio=0.5, round_to=k), None)
        rounding[k] = int8(m, f"r{k}")
    widths = {w: int8(mobilenetv2_style(num_classes=100, width=w).eval(), f"w{w}") for w in (1.0, 0.75)}
    return rounding, widths, feeds[0]


def profiled(path: str, feed: dict, runs: int = 30) -> float:
    """Sum over nodes of each node's median kernel time (ms), from onnxruntime's profiler."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling, opts.intra_op_num_threads, opts.inter_op_num_threads = True, 1, 1
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "p")
        s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        for _ in range(5 + runs):
            s.run(None, feed)
        events = json.loads(Path(s.end_profiling()).read_text())
    per = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per[e["name"]].append(e["dur"])
    return sum(float(np.median(v[5:] or v)) for v in per.values()) / 1e3


def one_run(paths: dict, feed: dict) -> dict:
    from edgekit import bench

    lat = bench.measure_pair(paths, feed, ("CPUExecutionProvider",), 1, 5, 30)
    times = {k: np.asarray(v.times_ms) if getattr(v, "times_ms", None) else None for k, v in lat.items()}
    row = {"p50": {k: v.p50_ms for k, v in lat.items()}}
    if all(t is not None for t in times.values()):
        row["min"] = {k: float(t.min()) for k, t in times.items()}
        row["fastq"] = {k: float(np.sort(t)[:max(1, len(t) // 4)].mean()) for k, t in times.items()}
        row["fast10"] = {k: bench.fast_ms(t) for k, t in times.items()}
        choice = bench.choose(lat, prefer=list(paths))
        row["compare"] = choice.chosen
        row["compare_tie"] = choice.tie
    row["times"] = {k: [round(x, 4) for x in t] for k, t in times.items() if t is not None}
    row["profiler"] = {k: profiled(p, feed) for k, p in paths.items()}
    return row


def pick(figures) -> object:
    return figures if not isinstance(figures, dict) else min(figures, key=figures.get)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--load", type=int, default=2, help="busy processes run beside the timing")
    ap.add_argument("--dump", help="write every run's figures and times (JSON) here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rounding, widths, feed = build(Path(tmp))
        busy = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.load)]
        try:
            dumped = {}
            for name, paths in (("round_to", rounding), ("width", widths)):
                rows = dumped[name] = [one_run(paths, feed) for _ in range(args.repeats)]
                print(f"== {name}: {args.repeats} runs, {args.load} busy processes")
                for est in ("p50", "min", "fast10", "fastq", "compare", "profiler"):
                    if est not in rows[0]:
                        continue
                    picks = [pick(r[est]) for r in rows]
                    common = collections.Counter(picks).most_common(1)[0]
                    line = f"{est:9s} picks {picks}  flips {len(picks) - common[1]}"
                    if isinstance(rows[0][est], dict):
                        a, b = sorted(rows[0][est])[:2]
                        ratios = [r[est][b] / r[est][a] for r in rows]
                        line += f"  {b}/{a} ratio {min(ratios):.3f}..{max(ratios):.3f}"
                    print(line)
                if "compare_tie" in rows[0]:
                    print(f"compare ties: {[r['compare_tie'] for r in rows]}")
            if args.dump:
                Path(args.dump).write_text(json.dumps(dumped, default=str))
        finally:
            for p in busy:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
