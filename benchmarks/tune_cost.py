"""Cost of `--auto` on a one-outlier-layer model (tests/models.py:outlier, 3x32x32 input), via the public API.

Trials needed, a whole export with `auto=True` vs one without (same data, both `no_bench`), and the int8 latency
of the tuned model vs the all-int8 one (round-robin in one run, 1 thread).

    python benchmarks/tune_cost.py [--runs 200] [--rounds 3]

Both exports run once untimed first (small data, 1 trial): a process's first export pays imports and the first
torch and onnxruntime calls, and timed first the plain side carried them (1.8x read, 4-6x warm). Then each round
times both, in alternating order; the ratio printed is the median round's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's edgekit, not an installed one
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

import edgekit  # noqa: E402
from edgekit import bench, host  # noqa: E402

TARGET = "desktop-x86"


def main() -> int:
    from models import outlier

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200, help="timed latency runs per model")
    ap.add_argument("--rounds", type=int, default=3, help="timed export pairs after the warm-up")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    rng = np.random.default_rng(0)
    cal = [{"image": rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(48)]
    val = [{"image": rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(12)]
    with tempfile.TemporaryDirectory() as tmp:
        def export(name: str, auto: bool, n_cal: int = len(cal), n_val: int = len(val), trials: int = 12):
            return edgekit.export(outlier(), inputs="image:Nx3x32x32", calibration=cal[:n_cal],
                                  validation=val[:n_val], targets=TARGET, out=Path(tmp) / name, auto=auto,
                                  max_trials=trials, max_excluded=8, no_bench=True).targets[TARGET]

        export("warm-plain", False, 2, 2)  # untimed: the one-time start-up costs, on neither side's clock
        export("warm-tuned", True, 2, 2, 1)
        ratios, reports = [], {}
        for r in range(args.rounds):
            seconds = {}
            # alternate which side goes first, so what one leaves warm (caches, allocator) favours neither
            for name, auto in (("plain", False), ("tuned", True))[::1 if r % 2 == 0 else -1]:
                start = time.perf_counter()
                reports[name] = export(f"{name}{r}", auto)
                seconds[name] = time.perf_counter() - start
            ratios.append(seconds["tuned"] / seconds["plain"])
            print(f"round {r + 1}: export with auto {seconds['tuned']:.2f} s, without {seconds['plain']:.2f} s: "
                  f"{ratios[-1]:.1f}x")
        last = args.rounds - 1
        files = {"fp32": Path(tmp) / f"plain{last}" / TARGET / "model.onnx",
                 "all-int8": Path(tmp) / f"plain{last}" / TARGET / "model.int8.onnx",
                 "tuned": Path(tmp) / f"tuned{last}" / TARGET / "model.int8.onnx"}
        lat = bench.measure_pair({k: str(v) for k, v in files.items()}, val[0], ("CPUExecutionProvider",), 1, 20,
                                 args.runs)
    tuning, plain = reports["tuned"].tuning, reports["plain"]
    chosen = tuning["trials"][tuning["chosen"]]
    price = lat["tuned"].p50_ms / lat["all-int8"].p50_ms
    print("trial | why | SQNR dB | passed")
    print("--- | --- | --- | ---")
    for t in tuning["trials"]:
        print(f"{t['index']} | {t['why']} | {t['sqnr_db']:.1f} | {t['passed']}")
    print(f"\nall-int8 SQNR {plain.quant_parity.worst('sqnr_db'):.1f} dB -> tuned {chosen['sqnr_db']:.1f} dB "
          f"(trial {chosen['index']}, kept in float: {', '.join(e['node'] for e in tuning['excluded']) or 'none'})")
    print(f"trials {len(tuning['trials'])} in {tuning['seconds']:.2f} s (last round); export with auto: median "
          f"{statistics.median(ratios):.1f}x the export without it over {len(ratios)} warm round(s), from "
          f"{min(ratios):.1f}x to {max(ratios):.1f}x")
    print(f"int8 p50: tuned {lat['tuned'].p50_ms:.3f} ms vs all-int8 {lat['all-int8'].p50_ms:.3f} ms = {price:.2f}x "
          f"(bar <= 1.3x: {'met' if price <= 1.3 else 'MISSED'}); fp32 {lat['fp32'].p50_ms:.3f} ms")
    print(f"measured on {host.describe(lat['tuned'].host)}; {args.runs} round-robin runs")
    return 0 if chosen["passed"] and price <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
