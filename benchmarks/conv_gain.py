"""int8 gain over fp32 of one conv by its channel count: a 1x1 C->C conv and a 3x3 depthwise conv (each after a
1x1 conv, with BatchNorm and ReLU6, as in MobileNetV2), exported and quantized with the target's settings, each
node timed by onnxruntime's profiler at 1 thread. Why a pruned model gains less from int8 (README, issue 14).

    python benchmarks/conv_gain.py [--runs 40] [--size 56] [--target desktop-x86] [--depthwise-types]

`--depthwise-types` times the 3x3 depthwise conv alone at 16-96 channels in the int8 encodings onnxruntime's
kernels tell apart (u8s8 per-channel, edgekit's x86 VNNI plan: MLAS's symmetric depthwise kernel; uint8 weights;
symmetric activations), every session open at once and run round-robin: which is fastest on this host.
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
DW_CHANNELS = (16, 32, 64, 96)
# int8 encodings of a depthwise conv: quantize_static's weight type and extra options (u8s8 is edgekit's x86 plan)
DW_TYPES = {"u8s8": ("QInt8", {}), "u8u8 weights": ("QUInt8", {}),
            "u8s8 symmetric activations": ("QInt8", {"ActivationSymmetric": True})}


def block(c: int, depthwise: bool):
    from torch import nn

    conv = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False) if depthwise else nn.Conv2d(c, c, 1, bias=False)
    return nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.ReLU6(), conv, nn.BatchNorm2d(c), nn.ReLU6()).eval()


def conv_ms(path: Path, runs: int, tmp: Path) -> float:
    """The second conv's median ms (the first only gives it a quantized input)."""
    return [ms for kind, _, ms in node_times(str(path), runs, tmp) if kind != "other"][1]


def dw_node_ms(sessions: dict, feed: dict, runs: int, optimized: dict) -> dict[str, float]:
    """Each session's depthwise conv (its group > 1 node) median ms from onnxruntime's profiler, the sessions run
    round-robin so a shared host's load falls on all alike."""
    import json
    import statistics

    import onnx

    for _ in range(5):
        for sess in sessions.values():
            sess.run(None, feed)
    for _ in range(runs):
        for sess in sessions.values():
            sess.run(None, feed)
    times = {}
    for label, sess in sessions.items():
        events = json.loads(Path(sess.end_profiling()).read_text())
        dw = next(n.name for n in onnx.load(optimized[label]).graph.node
                  if any(a.name == "group" and a.i > 1 for a in n.attribute))
        times[label] = statistics.median(e["dur"] for e in events if e.get("cat") == "Node"
                                         and e["name"] == f"{dw}_kernel_time") / 1e3
    return times


def depthwise_types(args, target, tmp: Path) -> None:
    """fp32 and each DW_TYPES encoding of one 3x3 depthwise conv, per channel count, side by side in one run."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self, feeds):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    print("3x3 depthwise conv (int8 gain over fp32, per node, round-robin) | channels | fp32 ms | "
          + " | ".join(DW_TYPES))
    print("--- | --- | --- | " + " | ".join("---" for _ in DW_TYPES))
    for c in DW_CHANNELS:
        spec = (InputSpec.parse(f"x:1x{c}x{args.size}x{args.size}"),)
        name = tmp / f"dwt{c}"
        raw = export.export_torch(block(c, True), spec, (), target.opset, name.with_suffix(".onnx"))
        fp32, _ = export.preprocess(raw, name.with_suffix(".fp32.onnx"))
        rng = np.random.default_rng(0)
        feeds = [{"x": rng.standard_normal((1, c, args.size, args.size)).astype(np.float32)} for _ in range(4)]
        models = {"fp32": fp32}
        for k, (label, (weights, extra)) in enumerate(DW_TYPES.items()):
            models[label] = tmp / f"dwt{c}-{k}.onnx"
            quantize_static(str(fp32), str(models[label]), Feeds(feeds), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=getattr(QuantType, weights), extra_options=extra)
        sessions, optimized = {}, {}
        for k, (label, path) in enumerate(models.items()):
            so = ort.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            so.log_severity_level = 3
            so.enable_profiling, so.profile_file_prefix = True, str(tmp / f"prof{c}-{k}")
            so.optimized_model_filepath = optimized[label] = str(tmp / f"opt{c}-{k}.onnx")
            sessions[label] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        ms = dw_node_ms(sessions, feeds[0], args.runs, optimized)
        cells = [f"{ms[label]:.4f} ms ({ms['fp32'] / ms[label]:.2f}x)" for label in DW_TYPES]
        print(f"{args.size}x{args.size} | {c} | {ms['fp32']:.4f} | " + " | ".join(cells), flush=True)



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--size", type=int, default=56, help="height and width of the conv's input")
    ap.add_argument("--target", default="desktop-x86")
    ap.add_argument("--depthwise-types", action="store_true",
                    help="time the depthwise conv in each int8 encoding (DW_TYPES) instead of the gain table")
    args = ap.parse_args()
    if args.runs < 1 or args.size < 3:
        ap.error("--runs must be at least 1 and --size at least 3")  # exit 2
    try:
        target = load_target(args.target)
    except Exception as e:  # an unknown profile: one line, exit 2
        ap.error(str(e))
    if args.depthwise_types:
        with tempfile.TemporaryDirectory() as tmp:
            depthwise_types(args, target, Path(tmp))
        return 0
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
