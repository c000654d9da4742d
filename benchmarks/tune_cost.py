"""Cost of `--auto` on a model with one outlier layer (tests/models.py:outlier, 3x32x32 input), through
the public API: trials needed, a whole export with `auto=True` vs one without (same data, both
`no_bench`), and the int8 latency of the tuned model vs the all-int8 one (round-robin in one run, 1 thread).

    python benchmarks/tune_cost.py [--runs 200]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

import edgekit  # noqa: E402
from edgekit import bench, host  # noqa: E402

TARGET = "desktop-x86"


def main() -> int:
    from models import outlier

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cal = [{"image": rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(48)]
    val = [{"image": rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(12)]
    with tempfile.TemporaryDirectory() as tmp:
        seconds, reports = {}, {}
        for name, auto in (("plain", False), ("tuned", True)):
            start = time.perf_counter()
            reports[name] = edgekit.export(outlier(), inputs="image:Nx3x32x32", calibration=cal, validation=val,
                                           targets=TARGET, out=Path(tmp) / name, auto=auto, max_trials=12,
                                           max_excluded=8, no_bench=True).targets[TARGET]
            seconds[name] = time.perf_counter() - start
        files = {"fp32": Path(tmp) / "plain" / TARGET / "model.onnx",
                 "all-int8": Path(tmp) / "plain" / TARGET / "model.int8.onnx",
                 "tuned": Path(tmp) / "tuned" / TARGET / "model.int8.onnx"}
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
    print(f"trials {len(tuning['trials'])} in {tuning['seconds']:.2f} s; export with auto {seconds['tuned']:.2f} s "
          f"= {seconds['tuned'] / seconds['plain']:.1f}x the export without it ({seconds['plain']:.2f} s)")
    print(f"int8 p50: tuned {lat['tuned'].p50_ms:.3f} ms vs all-int8 {lat['all-int8'].p50_ms:.3f} ms = {price:.2f}x "
          f"(bar <= 1.3x: {'met' if price <= 1.3 else 'MISSED'}); fp32 {lat['fp32'].p50_ms:.3f} ms")
    print(f"measured on {host.describe(lat['tuned'].host)}; {args.runs} round-robin runs")
    return 0 if chosen["passed"] and price <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
