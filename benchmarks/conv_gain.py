"""int8 gain over fp32 of one conv by its channel count: a 1x1 C->C conv and a 3x3 depthwise conv (each after a
1x1 conv, with BatchNorm and ReLU6, as in MobileNetV2), exported and quantized with the target's settings, each
node timed by onnxruntime's profiler at 1 thread. Why a pruned model gains less from int8 (README, issue 14).

    python benchmarks/conv_gain.py [--runs 40] [--size 56] [--target desktop-x86]
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

from edgekit import onnx_export as export, quantization as quantize  # noqa: E402
from edgekit.config import InputSpec, load_target  # noqa: E402
from prune_distill import node_times  # noqa: E402

CHANNELS = (16, 32, 48, 64, 96, 128, 192, 256)


def block(c: int, depthwise: bool):
    from torch import nn

    conv = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False) if depthwise else nn.Conv2d(c, c, 1, bias=False)
    return nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.ReLU6(), conv, nn.BatchNorm2d(c), nn.ReLU6()).eval()


def conv_ms(path: Path, runs: int, tmp: Path) -> float:
    """The second conv's median ms (the first only gives it a quantized input)."""
    return [ms for kind, _, ms in node_times(str(path), runs, tmp) if kind != "other"][1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--size", type=int, default=56, help="height and width of the conv's input")
    ap.add_argument("--target", default="desktop-x86")
    args = ap.parse_args()
    if args.runs < 1 or args.size < 3:
        ap.error("--runs must be at least 1 and --size at least 3")  # exit 2
    try:
        target = load_target(args.target)
    except Exception as e:  # an unknown profile: one line, exit 2
        ap.error(str(e))
    print("conv | channels | fp32 ms | int8 ms | int8 gain")
    print("--- | --- | --- | --- | ---")
    with tempfile.TemporaryDirectory() as tmp:
        for depthwise in (False, True):
            for c in CHANNELS:
                spec = (InputSpec.parse(f"x:1x{c}x{args.size}x{args.size}"),)
                name = Path(tmp) / f"{'dw' if depthwise else 'pw'}{c}"
                raw = export.export_torch(block(c, depthwise), spec, (), target.opset, name.with_suffix(".onnx"))
                fp32, _ = export.preprocess(raw, name.with_suffix(".fp32.onnx"))
                rng = np.random.default_rng(0)
                feeds = [{"x": rng.standard_normal((1, c, args.size, args.size)).astype(np.float32)} for _ in range(4)]
                plan = quantize.plan(fp32, target.quantize, set())
                int8 = quantize.quantize(fp32, name.with_suffix(".int8.onnx"), plan, feeds)
                f, i = conv_ms(fp32, args.runs, Path(tmp)), conv_ms(int8, args.runs, Path(tmp))
                print(f"{'3x3 depthwise' if depthwise else '1x1'} | {c} | {f:.3f} | {i:.3f} | {f / i:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
