"""Cost of `--auto` on a model with one outlier layer (tests/models.py:outlier, 3x32x32 input):
trials needed, tuning seconds, tuning time / one plain quantization, and the int8 latency of the
tuned model vs the all-int8 one (round-robin in one run, 1 thread).

    python benchmarks/tune_cost.py [--runs 200]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

from edgekit import bench, onnx_export as export, host, parity, quantization as quantize, tune  # noqa: E402
from edgekit.config import InputSpec, load_target  # noqa: E402
from edgekit.runtime import run_onnx, session  # noqa: E402


def main() -> int:
    from models import outlier

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    target = load_target("desktop-x86")
    rng = np.random.default_rng(0)
    cal = [{"image": rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(48)]
    val = [{"image": rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(12)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = export.export_torch(outlier(), (InputSpec.parse("image:Nx3x32x32"),), (), 17, tmp / "raw.onnx")
        fp32, _ = export.preprocess(raw, tmp / "fp32.onnx")
        plan = quantize.plan(fp32, target.quantize, set())
        start = time.perf_counter()
        quantize.quantize(fp32, tmp / "plain.int8.onnx", plan, cal)
        plain_s = time.perf_counter() - start
        fp32_val = run_onnx(session(fp32)[0], val)
        ctx = tune.Context(fp32, tmp, cal, val, fp32_val, ["output"], None, target.parity, False,
                           ["CPUExecutionProvider"], 1, False)
        start = time.perf_counter()
        chosen, trials, _ = tune.tune(ctx, plan, 12, 600, 8)
        tune_s = time.perf_counter() - start
        lat = bench.measure_pair({"fp32": str(fp32), "all-int8": str(tmp / "plain.int8.onnx"), "tuned": chosen.path},
                                 val[0], ("CPUExecutionProvider",), 1, 20, args.runs)
        plain_sqnr = parity.compare(["output"], fp32_val, run_onnx(session(tmp / "plain.int8.onnx")[0], val))[0].sqnr_db
    price = lat["tuned"].p50_ms / lat["all-int8"].p50_ms
    print("trial | why | SQNR dB | passed")
    print("--- | --- | --- | ---")
    for t in trials:
        print(f"{t.index} | {t.why} | {t.sqnr_db:.1f} | {t.passed}")
    print(f"\nall-int8 SQNR {plain_sqnr:.1f} dB -> tuned {chosen.sqnr_db:.1f} dB (trial {chosen.index}, "
          f"kept in float: {', '.join(chosen.excluded) or 'none'})")
    print(f"trials {len(trials)}, tuning {tune_s:.2f} s = {tune_s / plain_s:.1f}x one plain quantization "
          f"({plain_s:.3f} s, calibration included)")
    print(f"int8 p50: tuned {lat['tuned'].p50_ms:.3f} ms vs all-int8 {lat['all-int8'].p50_ms:.3f} ms = {price:.2f}x "
          f"(bar <= 1.3x: {'met' if price <= 1.3 else 'MISSED'}); fp32 {lat['fp32'].p50_ms:.3f} ms")
    print(f"measured on {host.describe(lat['tuned'].host)}; {args.runs} round-robin runs")
    return 0 if chosen.passed and price <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
