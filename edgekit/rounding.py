"""`round_to = "auto"`: the channel multiple a pruned model keeps, chosen by timing its int8 build on this host.

Pruned channel counts decide how well int8 kernels fill their vector lanes: on the VNNI host where issue 14 was
measured, MobileNetV2-style pruned to half with multiples of 8 gained 1.39x from int8 against 1.99x unpruned.
Which multiple is fastest depends on the kernels, so it is measured, not assumed: a copy of the model is pruned at
each candidate, exported, quantized with the target's settings and timed round-robin, and the fastest wins.
"""
from __future__ import annotations

import copy
import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import InputSpec, PruneSpec, Target

CANDIDATES = (8, 16, 32)
RUNS, WARMUP = 30, 5  # round-robin runs per candidate: enough to separate kernels, cheap next to distillation


@dataclass(frozen=True)
class RoundingChoice:
    """What `auto` measured and kept: int8 p50 per candidate multiple, on this host, for this target's settings."""

    chosen: int
    int8_p50_ms: dict[int, float]
    target: str
    threads: int
    host: dict

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "int8_p50_ms": {str(k): v for k, v in self.int8_p50_ms.items()}}

    def describe(self) -> str:
        from .host import describe

        times = ", ".join(f"{k}: {ms:.2f}" for k, ms in self.int8_p50_ms.items())
        return (f"channels multiples of {self.chosen} (int8 p50 ms {times}; {self.target} settings, "
                f"{describe(self.host)})")


def choose(module, specs: tuple[InputSpec, ...], spec: PruneSpec, target: Target, batches=None,
           candidates: tuple[int, ...] = CANDIDATES) -> RoundingChoice:
    """Prune copies of `module` (unchanged) at each multiple and time their int8 builds at 1 thread on this host
    (kernel choice is per core; random calibration data: ranges do not change which kernel runs)."""
    from . import bench, calib, onnx_export, quantization
    from .compress import run_prune

    feeds = calib.random_dataset(specs, 4, seed=0).feeds
    paths = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-round-to-") as tmp:
        for k in candidates:
            pruned = copy.deepcopy(module)
            run_prune(pruned, specs, dataclasses.replace(spec, round_to=k), batches)
            raw = onnx_export.export_torch(pruned, specs, (), target.opset, Path(tmp) / f"{k}.onnx")
            fp32, _ = onnx_export.preprocess(raw, Path(tmp) / f"{k}.fp32.onnx", exported=True)
            plan = quantization.plan(fp32, target.quantize, set(), target.runtime.arch)
            paths[k] = str(quantization.quantize(fp32, Path(tmp) / f"{k}.int8.onnx", plan, feeds))
        lat = bench.measure_pair(paths, feeds[0], ("CPUExecutionProvider",), 1, WARMUP, RUNS)
    p50 = {k: lat[k].p50_ms for k in candidates}
    return RoundingChoice(min(candidates, key=p50.get), p50, target.name, 1, lat[candidates[0]].host)
