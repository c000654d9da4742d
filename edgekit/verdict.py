"""One target's verdict: its gates from the measured figures and profile, and the warnings that explain them."""
from __future__ import annotations

from . import bench, parity
from .config import Target
from .runtime import EXACT_REFUSED


def gates(target: Target, m: dict, classifier: bool, int8_bytes: int) -> list[dict]:
    p = target.parity
    found: list[dict] = []
    export_p = m["parity"]["export"]
    if export_p:
        parity.signal_gate(found, "export_reference_signal", export_p["outputs"])
        parity.gate(found, "export_cosine", parity.worst(export_p["outputs"], "cosine_min"), ">=",
                    p.export_cosine_min)
        parity.gate(found, "export_max_abs", max(o["max_abs"] for o in export_p["outputs"]), "<=", p.export_max_abs)
    found += parity.quantization_gates(m["parity"]["quantization"]["outputs"], m["accuracy"], p, classifier)
    if target.budgets.latency_p50_ms_max and m["latency"]:
        parity.gate(found, "latency_p50_ms", m["latency"]["int8"]["p50_ms"], "<=", target.budgets.latency_p50_ms_max)
    elif target.budgets.latency_p50_ms_max:
        parity.skipped(found, "latency_p50_ms", "latency not measured (--no-bench)")
    if target.budgets.size_mb_max:
        parity.gate(found, "size_mb", int8_bytes / 1e6, "<=", target.budgets.size_mb_max)
    if target.package.min_coverage and target.package.coverage:
        first = target.package.coverage[0]
        parity.gate(found, f"{first}_coverage", m["mobile_coverage"][first]["coverage"], ">=",
                    target.package.min_coverage)
    return found


def warnings(cal, val, parities: dict, latency, int8, providers, threads) -> list[str]:
    said: list[str] = []
    if cal.random or val.random:
        said.append("CALIBRATED AND VALIDATED ON RANDOM DATA: PARITY AND ACCURACY FIGURES DO NOT REFLECT REAL INPUTS")
    for stage, block in parities.items():
        for o in (block or {}).get("outputs", []):
            if o.get("reference_near_zero"):
                said.append(f"{stage} parity: reference output {o['output']!r} is ~0 (max |value| "
                            f"{o['reference_peak']:.3g} < {parity.NEAR_ZERO:g}) on the validation data: cosine and "
                            "SQNR say nothing about a model that emits no signal; check the model and its inputs")
    spreads = {k: latency[k]["p90_over_p50"] for k in ("fp32", "int8")} if latency else {}
    if any(v > bench.NOISY_SPREAD for v in spreads.values()):
        said.append(f"latency spread p90/p50 fp32 {spreads['fp32']:.2f}, int8 {spreads['int8']:.2f} "
                    f"(> {bench.NOISY_SPREAD}): the host was noisy during the run; re-run or raise --bench-runs "
                    "before trusting the speed figures")
    speedup = latency["speedup_p50"] if latency else 1.0
    if speedup < 1.0:
        fusion = bench.unfused_qdq(str(int8), providers, threads)
        cause = (f"{fusion['unfused_compute_nodes']} compute node(s) stayed float behind DequantizeLinear "
                 f"(unfused QDQ groups, e.g. {', '.join(fusion['unfused_examples'])})"
                 if fusion["unfused_compute_nodes"] else
                 "all quantized groups fused; per-call overhead or float ops around them dominate this model")
        said.append(f"int8 is slower than fp32 on this host ({speedup:.2f}x): {cause}")
    return said


def gate_advice(gates: list[dict], settings, tuning: dict | None) -> list[str]:
    if tuning and tuning.get("advice"):
        return [tuning["advice"]]
    failed = [g["name"] for g in gates if not g["passed"] and g["name"].startswith(("quant_", "top1", "accuracy"))]
    if failed and not settings.auto and settings.mode == "static":
        return [f"quantization gates failed ({', '.join(failed)}): re-run with --auto to search "
                f"{', '.join(settings.auto_search)} within this target's rules"]
    return []


def kernel_warnings(packaged: dict) -> list[str]:
    said: list[str] = []
    for model, golden in packaged["golden"]["models"].items():
        if EXACT_REFUSED in golden["kernels"]:
            said.append(f"{model}: golden outputs computed with {golden['kernels']}")
        on_x86 = golden.get("x86_default_kernels")
        if on_x86 and not on_x86["within_tolerance"]:
            worst = max(on_x86["max_abs_error"], key=on_x86["max_abs_error"].get)
            said.append(f"on an x86 host without VNNI ({on_x86['isa']}) onnxruntime's default kernels give this "
                        f"ARM package's {model} output {worst!r} an error up to "
                        f"{on_x86['max_abs_error'][worst]:.3g} (tolerance {golden['atol'][worst]:.3g}; u8s8 "
                        "saturation): run it there with session option session.x64quantprecision=1, as "
                        "`edgekit check` does")
    return said
