"""`round_to = "auto"`: the channel multiple a pruned model keeps, chosen by timing its int8 build on this host.

Pruned channel counts decide how well int8 kernels fill their vector lanes: on the VNNI host where issue 14 was
measured, MobileNetV2-style pruned to half with multiples of 8 gained 1.39x from int8 against 1.99x unpruned.
Which multiple is fastest depends on the kernels, so it is measured, not assumed: a copy of the model is pruned at
each candidate, exported, quantized with the target's settings and timed round-robin, and the fastest wins
(bench.choose: fastest runs, not p50, which a loaded host flipped; within the noise the smaller multiple wins).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import InputSpec, PruneSpec, Target

CANDIDATES = (8, 16, 32)
HERE = {"x86_64": "desktop-x86", "arm64": "arm64-linux"}  # the bundled profile auto times for, by host kind
RUNS, WARMUP = 30, 5  # round-robin runs per candidate: enough to separate kernels, cheap next to distillation


@dataclass(frozen=True)
class RoundingChoice:
    """What `auto` measured and kept: int8 p50 per candidate multiple, on this host, for this target's settings."""

    chosen: int
    int8_p50_ms: dict[int, float]
    target: str
    threads: int
    host: dict
    params: dict[int, int] = dataclasses.field(default_factory=dict)  # each candidate's size: rounding moves it
    unpruned: tuple[int, ...] = ()  # multiples at which pruning removed no channel: not timed
    timing: dict = dataclasses.field(default_factory=dict)  # what chose (bench.Choice.as_dict): estimator, figures, tie

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "int8_p50_ms": {str(k): v for k, v in self.int8_p50_ms.items()},
                "params": {str(k): v for k, v in self.params.items()}, "unpruned": list(self.unpruned)}

    def describe(self) -> str:
        from .host import describe

        times = ", ".join(f"{k}: {ms:.2f} ms, {self.params[k]:,} params" for k, ms in self.int8_p50_ms.items())
        skipped = f"; {', '.join(map(str, self.unpruned))} removed no channel" if self.unpruned else ""
        return (f"channels multiples of {self.chosen} (int8 p50 {times}{skipped}{self._chosen_on()}; {self.target} "
                f"settings, {describe(self.host)})")

    def _chosen_on(self) -> str:
        """The figures that chose (not p50: the kept multiple may show the higher p50), and the tie."""
        if not self.timing.get("figures_ms"):
            return ""
        tie = self.timing.get("tie")
        tied = f"; {', '.join(tie)} within timing noise of it: the smaller multiple kept" if tie else ""
        fast = ", ".join(f"{k}: {ms:.2f} ms" for k, ms in self.timing["figures_ms"].items())
        return f"; chosen on the {self.timing['estimator']}: {fast}{tied}"


@contextlib.contextmanager
def _quiet():
    log = logging.getLogger("edgekit")
    below_error = logging.Filter()
    below_error.filter = lambda record: record.levelno >= logging.ERROR
    log.addFilter(below_error)
    try:
        yield
    finally:
        log.removeFilter(below_error)


def choose(module, specs: tuple[InputSpec, ...], spec: PruneSpec, target: Target, batches=None,
           candidates: tuple[int, ...] = CANDIDATES, sizes: dict[str, int] | None = None) -> RoundingChoice:
    """Prune copies of `module` (unchanged) at each multiple and time their int8 builds at 1 thread on this host
    (kernel choice is per core; random calibration data: ranges do not change which kernel runs), at the named
    axes' `sizes` (the data's)."""
    from . import bench, calib, host, onnx_export, quantization
    from .compress import run_prune
    from .errors import UsageError

    if host.arch() != target.runtime.arch:  # x86 kernels' lane widths say nothing of an ARM device's
        raise UsageError(f"round_to auto times int8 kernels on this host ({host.arch()}), not {target.name}'s "
                         f"({target.runtime.arch}): give round_to 8, 16 or 32")
    feeds = calib.random_dataset(specs, 4, seed=0, sizes=sizes).feeds
    paths, params, unpruned = {}, {}, []
    with tempfile.TemporaryDirectory(prefix="edgekit-round-to-") as tmp:
        for k in candidates:
            pruned = copy.deepcopy(module)
            with _quiet():  # a candidate's warnings are not the run's: what it did is in the choice
                result = run_prune(pruned, specs, dataclasses.replace(spec, round_to=k), batches, sizes=sizes)
            if result.params_after == result.params_before:  # not a pruned model: nothing to compare
                unpruned.append(k)
                continue
            params[k] = result.params_after
            raw = onnx_export.export_torch(pruned, specs, (), target.opset, Path(tmp) / f"{k}.onnx", sizes=sizes)
            fp32, _ = onnx_export.preprocess(raw, Path(tmp) / f"{k}.fp32.onnx", exported=True)
            plan = quantization.plan(fp32, target.quantize, set(), target.runtime.arch)
            paths[k] = str(quantization.quantize(fp32, Path(tmp) / f"{k}.int8.onnx", plan, feeds))
        if not paths:
            raise UsageError(f"round_to auto: pruning at ratio {spec.ratio} removes no channel at any of "
                             f"{', '.join(map(str, candidates))} (a layer's kept channels, or a grouped conv's per "
                             "group, round down to 0): raise the ratio or give a smaller round_to")
        lat = bench.measure_pair(paths, feeds[0], ("CPUExecutionProvider",), 1, WARMUP, RUNS)
    p50 = {k: lat[k].p50_ms for k in paths}
    picked = bench.choose(lat, sorted(paths))  # within the noise: the smaller multiple, which keeps more parameters
    return RoundingChoice(picked.chosen, p50, target.name, 1, lat[next(iter(paths))].host, params, tuple(unpruned),
                          picked.as_dict())
