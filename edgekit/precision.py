"""`precision = "latency"`: keep nodes or regions in float only where the whole model measures faster.

An int8 kernel is not always faster than its float one (on the VNNI host of issue 14, MobileNetV2's depthwise
convs were 1.72 -> 1.93 ms in int8), but every float island adds Q/DQ and layout work at its borders (0.4-0.7 ms
each there): all 17 depthwise convs in float made the model 0.66x as fast, only the first 1.70x, only the last
1.83x against 2.02x all-int8. So nothing is assumed: each candidate is quantized (calibration ranges reused) and
timed round-robin against the best model so far on the target's providers and threads, and kept only when it
is faster by more than the timing noise (bench.choose: the fastest runs, which host load does not move; a tie keeps
the model as it was). Candidates cost the fewest borders first: regions at the start and the
end of the graph (one border each), then each op kind that may run slower in int8 (depthwise convs) as a whole.
A candidate that leaves no compute node int8 is never kept, however fast: the deliverable stays an int8 build, and the
record says that float was faster (a small CNN's search kept every compute node float, then failed its own
int8_quantized gate, exit 1).
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import bench, quantization
from .host import describe
from .onnx_export import parsed

NO_INT8_LEFT = "leaves no compute node int8: model.int8.onnx would be the float model, no int8 build"
REGION_SIZES = (1, 2, 4)  # compute nodes kept in float at the graph's start, and at its end
MARGIN = bench.TIE  # a candidate must be this much faster (bench.choose) than the best so far: less is timing noise
WARMUP, RUNS = 10, 40


@dataclass(frozen=True)
class Candidate:
    why: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    """One measured candidate: both p50s come from the same interleaved loop (the second when there were two)."""

    why: str
    nodes: tuple[str, ...]
    p50_ms: float
    best_p50_ms: float
    kept: bool
    note: str = ""  # why a faster candidate was not kept anyway
    timing: dict = dataclasses.field(default_factory=dict)  # the last loop's bench.Choice: "trial" chosen = faster

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "nodes": list(self.nodes)}


@dataclass(frozen=True)
class PrecisionSearch:
    float_nodes: tuple[str, ...]  # kept in float for speed, on top of the plan's own exclusions
    steps: tuple[Step, ...]
    start: str  # the model the search started from: all-int8, or the plan's own float nodes (--auto's, yours)
    start_p50_ms: float  # it and
    p50_ms: float  # the model kept, timed in one interleaved loop
    where: str
    seconds: float
    untried: tuple[str, ...] = ()  # candidates left out by max_trials or the time budget
    reverted: str = ""  # why the steps' float nodes were given up after all
    fp32_p50_ms: float | None = None  # model.onnx, in the same final loop
    advice: str = ""  # "keep fp32" when model.onnx is clearly faster than the model kept (keep_fp32; a tie: none)
    timing: dict = dataclasses.field(default_factory=dict)  # the final loop's bench.Choice of start against kept

    def as_dict(self) -> dict:
        return {"float_nodes": list(self.float_nodes), "steps": [s.as_dict() for s in self.steps],
                "start": self.start, "start_p50_ms": self.start_p50_ms, "p50_ms": self.p50_ms,
                "fp32_p50_ms": self.fp32_p50_ms,
                "where": self.where, "margin": MARGIN, "seconds": self.seconds, "untried": list(self.untried),
                "reverted": self.reverted or None, "advice": self.advice or None, "timing": self.timing or None}


def candidates(fp32) -> list[Candidate]:
    """Float regions to try, fewest borders first. `fp32`: path or ModelProto of the float model."""
    graph = parsed(fp32).graph
    weights = {t.name: list(t.dims) for t in graph.initializer}
    compute = [n for n in graph.node if n.op_type in bench.COMPUTE_OPS and n.name]
    found = []
    for size in REGION_SIZES:
        if size < len(compute):
            found.append(Candidate(f"first {size} compute node(s) in float", tuple(n.name for n in compute[:size])))
            found.append(Candidate(f"last {size} compute node(s) in float", tuple(n.name for n in compute[-size:])))

    def depthwise(n) -> bool:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        shape = weights.get(n.input[1]) if len(n.input) > 1 else None
        return n.op_type == "Conv" and group > 1 and bool(shape) and shape[0] == group and shape[1] == 1

    dw = tuple(n.name for n in compute if depthwise(n))
    if dw:
        found.append(Candidate(f"all {len(dw)} depthwise convs in float", dw))
    return found


def search(fp32: Path, int8: Path, plan: quantization.Plan, feeds, timed: Callable[[dict], dict], work: Path,
           cache: Path, max_trials: int, time_budget: float) -> tuple[quantization.Plan, PrecisionSearch]:
    """Greedy over `candidates`: each is quantized with the plan's exclusions plus the float nodes kept so far
    plus its own, and kept when it times faster than the best model by MARGIN in two interleaved loops in a
    row (one loop's p50 can be off by more than that on a busy host). `timed({key: path})` times models round-robin
    where the target runs ({key: bench.Latency}). `int8` ends as the model kept; returns the plan that makes it and
    the record, whose start and end p50s come from one final loop: when that loop does not confirm the kept model
    faster by MARGIN, the starting model is kept instead."""
    start = time.perf_counter()
    first, best, kept, steps = work / "precision-start.onnx", work / "precision-best.onnx", (), []
    already = len(plan.settings.exclude_nodes)  # --auto's choice or yours: the model it starts from is not all-int8
    origin = f"the plan's model ({already} node(s) float already)" if already else "all-int8"
    shutil.copyfile(int8, first)
    shutil.copyfile(int8, best)
    found = candidates(fp32)
    compute = [n.name for n in parsed(fp32).graph.node if n.op_type in bench.COMPUTE_OPS]
    untried = [c.why for c in found[max_trials:]]
    for i, cand in enumerate(found[:max_trials]):
        new = tuple(n for n in cand.nodes if n not in kept and n not in plan.settings.exclude_nodes)
        if not new:
            continue
        if time.perf_counter() - start > time_budget:
            untried.append(cand.why)
            continue
        trial = quantization.quantize(fp32, work / f"precision{i}.onnx", _with_float(plan, (*kept, *new)), feeds,
                                      cache=cache)
        loops = []  # (trial p50, best p50, bench.Choice): within the noise the best so far stays (no change)
        while len(loops) < 2 and (not loops or loops[-1][2].chosen == "trial"):
            lat = timed({"best": best, "trial": trial})
            loops.append((lat["trial"].p50_ms, lat["best"].p50_ms, bench.choose(lat, ["best", "trial"], MARGIN)))
        faster = len(loops) == 2 and loops[-1][2].chosen == "trial"
        int8_left = set(compute) - {*plan.settings.exclude_nodes, *kept, *new}  # QDQ around an Add alone is no build
        note = "" if int8_left and quantization.quantizes_anything(parsed(trial)) else NO_INT8_LEFT
        steps.append(Step(cand.why, new, *loops[-1][:2], faster and not note, note, loops[-1][2].as_dict()))
        if faster and not note:
            kept = (*kept, *new)
            shutil.copyfile(trial, best)
    final = timed({"start": first, "kept": best, "fp32": fp32})  # fp32 too: floats kept may make int8 pointless
    reverted, last = "", bench.choose({k: final[k] for k in ("start", "kept")}, ["start", "kept"], MARGIN)
    if kept and last.chosen == "start":
        reverted = (f"the final loop timed the kept model at {last.figures_ms['kept']:.4g} ms against {origin}'s "
                    f"{last.figures_ms['start']:.4g} ms ({last.estimator}): not faster by {MARGIN:.0%} beyond the "
                    f"noise, so {origin} is kept")
        kept, best = (), first
    shutil.copyfile(best, int8)
    where = final["kept"].host.get("device") or describe(final["kept"].host)
    p50, fp32_p50 = final["start" if reverted else "kept"].p50_ms, final["fp32"].p50_ms
    refused = [s.why for s in steps if s.note and s.timing.get("chosen") == "trial"]
    all_float = (f"; every compute node float ({refused[0]}) timed faster, and was not taken: the search keeps one "
                 "compute node int8 at least") if refused else ""
    advice = keep_fp32(final["start" if reverted else "kept"], final["fp32"], len(kept), all_float)
    record = PrecisionSearch(kept, tuple(steps), origin, final["start"].p50_ms, p50, where,
                             round(time.perf_counter() - start, 3), tuple(untried), reverted, fp32_p50, advice,
                             last.as_dict() if kept or reverted else {})
    return _with_float(plan, kept), record


def keep_fp32(int8: bench.Latency, fp32: bench.Latency, kept: int = 0, also: str = "") -> str:
    """"keep fp32" where model.onnx is clearly faster than the int8 model kept, by the figure and noise test the
    search's choices use (bench.choose): one loop's p50s, compared bare, said it of a model whose fastest runs were
    faster, and not of one beyond the noise slower."""
    pick = bench.choose({"int8": int8, "fp32": fp32}, ["int8", "fp32"], MARGIN)
    if pick.chosen != "fp32":
        return ""
    kept_float = f", {kept} node(s) in float for speed" if kept else ""
    return (f"keep fp32: int8 slower than float here: {pick.figures_ms['int8']:.4g} ms vs "
            f"{pick.figures_ms['fp32']:.4g} ms, {pick.estimator} (model.int8.onnx{kept_float}, against model.onnx, "
            f"one loop){also}")


def _with_float(plan: quantization.Plan, nodes: tuple[str, ...]) -> quantization.Plan:
    s = plan.settings
    return dataclasses.replace(plan, settings=dataclasses.replace(
        s, exclude_nodes=tuple(dict.fromkeys((*s.exclude_nodes, *nodes)))))
