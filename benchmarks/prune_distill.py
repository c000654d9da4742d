"""Structured pruning of a MobileNetV2-style model (224x224, defined in code): params, MACs and ORT
fp32/int8 p50 latency before and after, every model timed round-robin in one run at 1 thread.

    python benchmarks/prune_distill.py [--runs 40] [--round-to 8]

Random weights and random calibration data: this measures size and speed, not accuracy (the digits
test in tests/test_compress.py covers accuracy recovery by distillation). Bar (issue 4): at ratio
0.5 the fp32 model runs at least 1.6x faster than the unpruned one.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from arch import mobilenetv2_style  # noqa: E402
from edgekit import bench, onnx_export as export, host, pruning as prune, quantization as quantize  # noqa: E402
from edgekit.config import InputSpec, load_target  # noqa: E402

SPEC = (InputSpec.parse("image:1x3x224x224"),)
BAR = 1.6


def build(ratio: float, round_to: int, tmp: Path):
    import torch

    model = mobilenetv2_style().eval()
    if ratio:
        prune.prune(model, (torch.zeros(1, 3, 224, 224),), ratio=ratio, round_to=round_to)
    params, macs = prune.count(model, (torch.zeros(1, 3, 224, 224),))
    raw = export.export_torch(model, SPEC, (), 17, tmp / f"r{ratio}.onnx")
    fp32, _ = export.preprocess(raw, tmp / f"r{ratio}.fp32.onnx")
    rng = np.random.default_rng(0)
    feeds = [{"image": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(16)]
    target = load_target("desktop-x86")
    int8 = quantize.quantize(fp32, tmp / f"r{ratio}.int8.onnx", quantize.plan(fp32, target.quantize, set()), feeds)
    return params, macs, fp32, int8


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--round-to", type=int, default=8)
    args = ap.parse_args()
    ratios = (0.0, 0.3, 0.5)
    with tempfile.TemporaryDirectory() as tmp:
        built = {r: build(r, args.round_to, Path(tmp)) for r in ratios}
        paths = {f"{r}/{kind}": str(p) for r, (_, _, fp32, int8) in built.items()
                 for kind, p in (("fp32", fp32), ("int8", int8))}
        feed = {"image": np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)}
        lat = bench.measure_pair(paths, feed, ("CPUExecutionProvider",), 1, 5, args.runs)
    base = lat["0.0/fp32"].p50_ms
    print("ratio | params | MACs | fp32 p50 ms | int8 p50 ms | fp32 speed-up vs unpruned | int8 speed-up vs unpruned fp32")
    print("--- | --- | --- | --- | --- | --- | ---")
    for r in ratios:
        params, macs = built[r][:2]
        f, i = lat[f"{r}/fp32"].p50_ms, lat[f"{r}/int8"].p50_ms
        print(f"{r} | {params / 1e6:.2f} M | {macs / 1e6:.0f} M | {f:.2f} | {i:.2f} | {base / f:.2f}x | {base / i:.2f}x")
    speedup = base / lat["0.5/fp32"].p50_ms
    print(f"\nbar: ratio 0.5 fp32 >= {BAR}x faster than unpruned: {'met' if speedup >= BAR else 'MISSED'} "
          f"({speedup:.2f}x)")
    print(f"measured on {host.describe(lat['0.0/fp32'].host)}; {args.runs} round-robin runs per model, batch 1, "
          f"round_to={args.round_to}")
    return 0 if speedup >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
