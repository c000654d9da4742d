"""Accuracy-aware quantization (`--auto`): when the target's defaults fail parity, try in order of
cost other calibration methods, per-tensor vs per-channel, then keep the most sensitive nodes in
float one at a time (greedy by measured SQNR gain), and pick the fastest trial that passes.

Cost is bounded: one calibration pass per method (onnxruntime's calibration cache; every later
trial only re-quantizes), and the search stops at `max_trials`, `time_budget` or `max_excluded`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import bench, layers, onnx_export, parity, quantization
from .onnx_export import parsed
from .runtime import int8_session, run_onnx

SEARCH_PERCENTILE = 99.99
CANDIDATES_PER_ROUND = 3
GROUP_MAX = 4  # nodes kept float together to drop one non-compute node's QDQ pair
ADDITIVE_OPS = ("Add", "Sub", "Sum", "Concat")  # their output's error is their inputs' errors, summed


@dataclass
class Trial:
    index: int
    why: str
    calibrate_method: str
    per_channel: bool
    excluded: tuple[str, ...]
    cosine: float | None  # worst over float outputs (None: no float output carries a signal)
    sqnr_db: float | None
    passed: bool
    failed_gates: list[str]
    int8_p50_ms: float
    fp32_p50_ms: float  # measured interleaved with this trial's int8 model
    int8_bytes: int
    seconds: float
    path: str = ""
    percentile: float | None = None  # calibrate_method percentile: at which (the user's, or the search's own)
    exact_agreement: float | None = None  # worst over integer outputs (class ids), held exactly
    mode: str = "static"  # dynamic: an attention graph's default, before its static fallback
    reduce_range: bool = False  # 7-bit weights (the plan's, or the search's for an emulated AVX2 CPU's sake)
    # under --emulate x86_64: its gates on the emulated CPU's kernels ({passed, failed_gates, seconds}); None: not
    # run there (only trials passing on this host are, fastest first, up to the first passing there too)
    emulated: dict | None = None
    # bench.fast_ms of the int8 and fp32 runs in its loop: what trials are ranked by (p50 moves with host load)
    int8_fast_ms: float | None = None
    fp32_fast_ms: float | None = None

    @property
    def accepted(self) -> bool:
        """Passes this host's gates, and the emulated CPU's where it was judged there."""
        return self.passed and (self.emulated is None or self.emulated["passed"])

    @property
    def quality(self) -> tuple[bool, float, float]:
        """What trials are ranked by: quantizing anything (the float model at 200 dB was the best), integer outputs'
        exact agreement, then SQNR. With class ids only, SQNR was a placeholder (-200 for every trial), and --auto
        kept its first trial whatever it measured."""
        return (parity.NOTHING_QUANTIZED_GATE not in self.failed_gates,
                1.0 if self.exact_agreement is None else self.exact_agreement,
                -200.0 if self.sqnr_db is None else self.sqnr_db)

    @property
    def relative_time(self) -> float:
        """int8 / fp32 p50, both timed in this trial's own interleaved loop: comparable across trials
        even when the host's load drifts between them."""
        return self.int8_p50_ms / self.fp32_p50_ms if self.fp32_p50_ms > 0 else float("inf")

    @property
    def fast_relative_time(self) -> float:
        """relative_time on bench's estimator (the fastest runs), which host load does not move: what ranks trials."""
        if not self.int8_fast_ms or not self.fp32_fast_ms:
            return self.relative_time
        return self.int8_fast_ms / self.fp32_fast_ms

    def price_over(self, base: Trial) -> float:
        """This trial's int8 latency as a multiple of `base`'s (the target defaults), on the figures that rank trials:
        on p50, load on the defaults' fp32 runs (3.94 ms p50, 2.03 ms on the fastest runs) priced a passing trial at
        2.82x, over --max-latency-price 2, where its fastest runs said 1.46x, and --auto shipped a failing model."""
        return self.fast_relative_time / base.fast_relative_time if base.fast_relative_time > 0 else float("inf")

    def as_dict(self) -> dict:
        return {k: list(v) if k == "excluded" else v for k, v in asdict(self).items() if k != "path"}


@dataclass
class Context:
    fp32: Path
    model: object  # the same float model parsed (onnx.ModelProto)
    work: Path
    cal_feeds: list
    val_feeds: list
    fp32_val: list
    names: list[str]
    labels: object
    spec: object  # ParitySpec
    task: str  # classify | embed | ...: picks the parity metrics
    plain: tuple[str, ...]  # outputs judged by cosine and SQNR only (a streaming model's state)
    providers: list[str]
    threads: int
    exact_int8: bool  # judge int8 by exact arithmetic (an ARM device's), not this host's
    # --emulate x86_64's CPU (emulator.Emulator): a trial is chosen only if it passes its kernels' gates too
    emulator: object = None


@dataclass(frozen=True)
class Search:
    """What tune() found."""

    chosen: Trial
    trials: list[Trial]
    sensitivity: dict[int, list[dict]]  # trial index -> its per-node sensitivity, for the trials analysed
    ended: str | None  # why the search ended without a passing trial when no bound ended it (see stopped_short)
    untried: list[str]  # candidates the plan's rules refuse for this model (quantization.refusal), each with why


def tune(ctx: Context, base: quantization.Plan, max_trials: int, time_budget: float, max_excluded: int,
         progress=None, max_latency_price: float = 2.0, fallback: quantization.Plan | None = None) -> Search:
    """The trials tried, best passing one chosen. `fallback`: the static plan searched when `base`, a dynamic one
    (nothing to calibrate or place), fails."""
    start = time.perf_counter()
    trials: list[Trial] = []
    sensitivity: dict[int, list[dict]] = {}
    untried: list[str] = []
    retried: set[int] = set()  # trials tried again with 7-bit weights

    def budget_left() -> bool:
        return len(trials) < max_trials and time.perf_counter() - start < time_budget

    def attempt(why: str, settings, excluded=(), seven_bit: bool = False) -> Trial | None:
        """The trial of these settings; None when quantization.refusal refuses them for this model (a per-channel
        trial of an opset-11 model failed in onnxruntime and ended the export with exit 4)."""
        if refused := quantization.refusal(settings, base.opset):
            untried.append(f"{why}: {refused} (the model is opset {base.opset})")
            return None
        trial = _evaluate(ctx, dataclasses.replace(base, reduce_range=base.reduce_range or seven_bit,
                                                   settings=dataclasses.replace(settings, exclude_nodes=tuple(
                                                       dict.fromkeys((*settings.exclude_nodes, *excluded))))),
                          len(trials), why, tuple(excluded))
        trials.append(trial)
        if progress:
            progress(trial)
        return trial

    def affordable(t: Trial) -> bool:  # within the latency price; the defaults always are
        return t.index == 0 or t.price_over(trials[0]) <= max_latency_price

    def done():
        """The fastest trial passing within the price. Under --emulate x86_64 it must pass on the emulated CPU too:
        trials passing here are run there fastest first, each once, up to the first passing there; a full-range one
        failing there only is tried again with 7-bit weights (AVX2's u8s8 sums saturate int16, 7-bit ones never)."""
        while True:
            ranked = _ranked([t for t in trials if t.passed and affordable(t)])
            if found := next((t for t in ranked if _passes_emulated(ctx, t)), None):
                return found
            again = next((t for t in ranked if _seven_bit_helps(ctx, base, t) and t.index not in retried), None)
            if again is None or not budget_left():
                return None
            retried.add(again.index)
            attempt(f"7-bit weights (trial {again.index} fails {', '.join(again.emulated['failed_gates'])} on "
                    f"{ctx.emulator.label})", _settings_of(base.settings, again), again.excluded, seven_bit=True)

    def best_quality(searched: bool = True) -> Trial:  # of the plan searched (a dynamic trial has no QDQ to rank)
        return max((t for t in trials if affordable(t) and (t.mode == base.settings.mode or not searched)),
                   key=lambda t: t.quality)

    s = base.settings
    attempt("target defaults", s)
    if done():
        return Search(done(), trials, sensitivity, None, untried)
    if fallback is not None:
        base, s = fallback, fallback.settings
        attempt(f"transformer_scheme {s.transformer_scheme}", s)
        if done():
            return Search(done(), trials, sensitivity, None, untried)
    for method in ("minmax", "entropy", "percentile"):
        if "calibrate_method" in s.auto_search and method != s.calibrate_method and budget_left():
            attempt(f"calibration {method}", dataclasses.replace(s, calibrate_method=method,
                                                               percentile=SEARCH_PERCENTILE))
    if done():
        return Search(done(), trials, sensitivity, None, untried)
    best = best_quality()
    # the user's own percentile where the best is their method (it ran at 99.99 while labelled theirs)
    best_settings = dataclasses.replace(s, calibrate_method=best.calibrate_method, percentile=best.percentile or
                                        s.percentile)
    if "per_channel" in s.auto_search and budget_left():
        attempt(f"{'per-tensor' if s.per_channel else 'per-channel'} ({best.calibrate_method})",
                dataclasses.replace(best_settings, per_channel=not s.per_channel), seven_bit=best.reduce_range)
    if done():
        return Search(done(), trials, sensitivity, None, untried)
    best = best_quality()
    best_settings = dataclasses.replace(best_settings, per_channel=best.per_channel)  # and best's weights' bits
    excluded: tuple[str, ...] = ()
    ended = None if "exclude_nodes" in s.auto_search else \
        "keeping nodes in float was not tried (exclude_nodes is not in the target's auto_search)"
    while ("exclude_nodes" in s.auto_search and not exclusions_skipped(s) and budget_left()
           and len(excluded) < max_excluded):
        sensitivity[best.index] = node_sensitivity(ctx.model, layers.tensor_errors(ctx.model, Path(best.path),
                                                                                  ctx.val_feeds))
        round_trials = []
        # all tied (an int8 model with no signal left loses 0 dB everywhere): no ranking, and "lost 0.0 dB" was
        # given as the reason a node was tried
        tied = len({r["lost_db"] for r in sensitivity[best.index]}) == 1
        for cand in sensitivity[best.index][:CANDIDATES_PER_ROUND]:  # most SQNR lost first
            new = tuple(n for n in cand["exclude"] if n not in excluded)
            if new and budget_left() and len(excluded) + len(new) <= max_excluded:  # bounded node count
                why = f"every node lost {cand['lost_db']:.1f} dB: in graph order" if tied else \
                    f"lost {cand['lost_db']:.1f} dB"
                round_trials += filter(None, [attempt(f"keep {', '.join(new)} in float ({why})", best_settings,
                                                      excluded + new, seven_bit=best.reduce_range)])
                if done():  # fewest nodes in float that pass within the price: stop here
                    return Search(done(), trials, sensitivity, None, untried)
        if not round_trials:
            ended = ended or f"no node left to keep in float within --max-excluded ({max_excluded})"
            break
        step = max(round_trials, key=lambda t: t.quality)
        if step.quality <= best.quality:  # no measured gain: more exclusions would only cost speed
            ended = (f"keeping {len(round_trials)} more candidate(s) in float gained nothing over trial {best.index}"
                     f" ({_quality(best)}), the best so far")
            break
        if not affordable(step):  # float fallbacks already cost more latency than allowed
            ended = (f"trial {step.index}'s float nodes cost {step.price_over(trials[0]):.2f}x the defaults' int8 "
                     f"latency, over --max-latency-price {max_latency_price:g}")
            break
        best, excluded = step, step.excluded
    return Search(done() or best_quality(searched=False), trials, sensitivity, ended, untried)


def _ranked(trials: list[Trial]) -> list[Trial]:
    """Fastest first on bench's estimator; trials within bench.TIE of the fastest are a tie, ranked in the order
    tried (the fewest changes from the target's defaults first), not by the noise between them."""
    best = min((t.fast_relative_time for t in trials), default=0.0)
    return sorted(trials, key=lambda t: _rank_key(t, best))


def _rank_key(t: Trial, best: float) -> tuple[float, int]:
    return max(t.fast_relative_time, best * (1 + bench.TIE)), t.index


def ties(chosen: Trial, trials: list[Trial], max_latency_price: float = float("inf")) -> list[int]:
    """Trials `_ranked` called as fast as `chosen` (the same key: within bench.TIE of the fastest) among those it
    ranked (passing, within the price), that `chosen` beat only by being tried earlier. Within bench.TIE of `chosen`
    alone named a trial tried earlier and ranked after it, and one over the price that was never ranked."""
    pool = [t for t in trials if t.passed and (t.index == 0 or t.price_over(trials[0]) <= max_latency_price)]
    if not chosen.accepted or chosen not in pool:
        return []
    best = min(t.fast_relative_time for t in pool)
    return [t.index for t in pool if t is not chosen and t.accepted and t.index > chosen.index
            and _rank_key(t, best)[0] == _rank_key(chosen, best)[0]]


def _settings_of(settings, t: Trial):
    """The settings `t` was quantized with (beside its excluded nodes)."""
    return dataclasses.replace(settings, calibrate_method=t.calibrate_method, per_channel=t.per_channel,
                               percentile=t.percentile or settings.percentile)


def _passes_emulated(ctx: Context, t: Trial) -> bool:
    """Whether `t` passes its gates on --emulate's CPU (run there once, recorded in t.emulated); True without one."""
    if ctx.emulator is None:
        return True
    if t.emulated is None:
        start = time.perf_counter()
        there = ctx.emulator.outputs(Path(t.path), ctx.val_feeds, ctx.names)
        failed = [parity.EMULATED + g.name for g in _gates(ctx, Path(t.path), there)[1] if not g.passed]
        t.emulated = {"passed": not failed, "failed_gates": failed, "seconds": round(time.perf_counter() - start, 3)}
    return t.emulated["passed"]


def _seven_bit_helps(ctx: Context, base: quantization.Plan, t: Trial) -> bool:
    """Whether 7-bit weights may pass where `t` fails on the emulated CPU alone: full-range u8s8 weights saturate
    its int16 sums. Not where the user set reduce_range (auto is this host's choice, made for its exact kernels)."""
    s = base.settings
    return (t.emulated is not None and not t.emulated["passed"] and not t.reduce_range and t.mode == s.mode == "static"
            and ctx.emulator.saturates and s.reduce_range == "auto" and s.weight_type == "int8"
            and s.activation_type == "uint8")


def _quality(t: Trial) -> str:
    return f"{t.sqnr_db:.1f} dB" if t.exact_agreement is None else f"{t.exact_agreement:.4f} of integer outputs equal"


def _output_shapes(ctx: Context) -> list:
    """The graph's output shapes, as the verdict's parity reads them: which lengths follow the values (a detector's
    rows, matched as detections) is the graph's to say, not a trial's samples'."""
    declared = {o.name: o.shape for o in onnx_export.io_specs(ctx.model)[1]}
    return [declared.get(name) for name in ctx.names]


def _evaluate(ctx: Context, plan: quantization.Plan, index: int, why: str, excluded) -> Trial:
    start = time.perf_counter()
    s = plan.settings
    out = ctx.work / f"trial{index}.onnx"
    quantization.quantize(ctx.fp32, out, plan, ctx.cal_feeds, cache=quantization.cache_path(ctx.work, s))
    int8_val = run_onnx(int8_session(out, ctx.providers, ctx.threads, ctx.exact_int8)[0], ctx.val_feeds)
    results, gates = _gates(ctx, out, int8_val)
    lat = bench.measure_pair({"fp32": str(ctx.fp32), "int8": str(out)}, ctx.val_feeds[0], ctx.providers, ctx.threads,
                             10, 30)
    return Trial(index, why, s.calibrate_method, s.per_channel, excluded, parity.worst(results, "cosine"),
                 parity.worst(results, "sqnr_db"), all(g.passed for g in gates),
                 [g.name for g in gates if not g.passed], lat["int8"].p50_ms, lat["fp32"].p50_ms,
                 out.stat().st_size, round(time.perf_counter() - start, 3), str(out),
                 s.percentile if s.calibrate_method == "percentile" else None,
                 parity.worst(results, "exact_agreement"), s.mode, plan.reduce_range,
                 int8_fast_ms=round(bench.figure(lat["int8"]), 4),
                 fp32_fast_ms=round(bench.figure(lat["fp32"]), 4))


def _gates(ctx: Context, out: Path, int8_val: list) -> tuple[list, list]:
    """(the per-output parity, the quantization gates) of the int8 model `out` whose outputs are `int8_val`."""
    results = parity.compare(ctx.names, ctx.fp32_val, int8_val, ctx.task, ctx.plain,
                             ctx.labels if parity.labels_are_classes(ctx.task) else None, _output_shapes(ctx))
    at = parity.scored_at(results)
    drop = (parity.accuracy(ctx.fp32_val, ctx.labels, at, ctx.names) - parity.accuracy(int8_val, ctx.labels, at,
                                                                                       ctx.names)
            if ctx.labels is not None else None)
    return results, parity.quantization_gates(results, drop, ctx.spec, ctx.task,
                                              quantization.quantizes_anything(parsed(out)), len(ctx.val_feeds))


def stopped_short(chosen: Trial, trials: list[Trial], settings, seconds: float, ended: str | None = None) -> str | None:
    """Why --auto shipped a failing trial: one passed over the latency price (it said "no trial passed"), a bound
    ended the search, or the search's own reason `ended` (it gave up with `stopped_short: None`); None when the
    chosen one passes."""
    if chosen.accepted:
        return None
    if passing := [t for t in trials if t.accepted]:
        t = min(passing, key=lambda t: t.price_over(trials[0]))
        return (f"--auto: trial {t.index} ({t.why}) passes{_where_passed(t, trials)} at "
                f"{t.price_over(trials[0]):.2f}x the defaults' int8 latency, over --max-latency-price "
                f"{settings.max_latency_price:g}: raise it to take that trial")
    bound = next((f"{flag} ({value:g})" for flag, value, hit in (
        ("--max-trials", settings.max_trials, len(trials) >= settings.max_trials),
        ("--time-budget", settings.time_budget, seconds >= settings.time_budget),
        ("--max-excluded", settings.max_excluded, max(len(t.excluded) for t in trials) >= settings.max_excluded))
        if hit), None)
    emulated = [t.index for t in trials if t.passed and not t.accepted]
    there = (f" (trial(s) {', '.join(map(str, emulated))} pass on this host's kernels but fail on the emulated CPU's)"
             if emulated else "")
    if bound:
        return f"--auto: no trial passed{there} before {bound} ended the search: raise it to search further"
    if ended or emulated:
        return f"--auto: no trial passed{there}" + (f": {ended}" if ended else "")
    return None


def _where_passed(t: Trial, trials: list[Trial]) -> str:
    """Under --emulate x86_64 (a trial was run there), where `t` passed: a trial over the price is never run on the
    emulated CPU, so raising the price may take one that fails there."""
    if t.emulated is not None or all(o.emulated is None for o in trials):
        return ""
    return " on this host's kernels (not run on the emulated CPU: over the price)"


def keep_fp32(chosen: Trial, fp32_bytes: int) -> str | None:
    """Plain advice when int8 buys nothing: the best passing trial is no faster and no smaller than fp32."""
    if chosen.passed and chosen.int8_p50_ms >= chosen.fp32_p50_ms and chosen.int8_bytes >= fp32_bytes:
        return (f"keep fp32: the best passing int8 trial is no faster ({chosen.int8_p50_ms:.3f} vs "
                f"{chosen.fp32_p50_ms:.3f} ms p50) and no smaller ({chosen.int8_bytes / 1e6:.2f} vs "
                f"{fp32_bytes / 1e6:.2f} MB) than model.onnx")
    return None


def exclusions_skipped(settings) -> str | None:
    """Why --auto cannot try keeping nodes in float for these settings, if it cannot."""
    if "exclude_nodes" in settings.auto_search and settings.format != "QDQ":
        return ("float exclusions not tried: the per-layer error that ranks nodes pairs QDQ's QuantizeLinear/"
                "DequantizeLinear tensors, which format QOperator has not (give --format QDQ)")
    return None


def node_sensitivity(fp32, tensor_rows: list[dict]) -> list[dict]:
    """Nodes ranked by the accumulated SQNR lost between their input and their output, each with the nodes to keep
    in float so that the QDQ pair doing the damage disappears.

    Tensor-level SQNR is energy weighted: an outlier channel keeps a tensor's own SQNR high while every other
    channel is crushed, and the damage shows one node later. So each conv/matmul is judged by how much accumulated
    SQNR it loses, and the fix tried is to keep both it and the node making its quantized input in float: the
    compute node feeding it, or a quantized non-compute node between them (a LayerNorm whose scaled channel crushed
    the rest: keeping the matmul and the one before it float left the LayerNorm's QDQ pair in place). Such a
    non-compute node is also a candidate of its own, with its consumers up to the next compute nodes (at most
    GROUP_MAX nodes: a residual Add reaching half the model is no candidate), judged by the SQNR lost from its
    input to those consumers' outputs. `fp32`: path or ModelProto.
    """
    graph = parsed(fp32).graph
    acc = {r["tensor"]: r["accumulated_sqnr_db"] for r in tensor_rows if r["accumulated_sqnr_db"] is not None}
    energy = {r["tensor"]: r["float_energy_db"] for r in tensor_rows if r.get("float_energy_db") is not None}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = onnx_export.consumers(graph)
    initializers = {t.name for t in graph.initializer}

    def data_in(node):
        return next((i for i in node.input if i and i not in initializers), None)

    def quantized_glue(node):  # a non-compute node with a QDQ pair on both sides: its own QDQ stays if only
        return node.op_type not in bench.COMPUTE_OPS and node.output[0] in acc and data_in(node) in acc  # others go

    def back(tensor):  # nearest tracked tensor upstream's SQNR, the node that made its QDQ pair, and that tensor
        seen = 0
        while tensor not in acc and tensor in producer and seen < 8:
            node = producer[tensor]
            tensor = data_in(node)
            seen += 1
        node = producer.get(tensor)
        while node is not None and node.op_type not in bench.COMPUTE_OPS and not quantized_glue(node) and seen < 16:
            node = producer.get(data_in(node))
            seen += 1
        return acc.get(tensor), node, tensor

    def forward(tensor):  # nearest tracked tensor downstream through single-consumer glue (Relu, Add ...)
        seen = 0
        while tensor not in acc and len(consumers.get(tensor, [])) == 1 and seen < 8:
            tensor = consumers[tensor][0].output[0]
            seen += 1
        return acc.get(tensor)

    def group(node):
        """node and its consumers through quantized glue up to compute nodes; None past GROUP_MAX. The walk stops
        there, as the group is refused anyway: walked to its end, a chain of 2,000 Sigmoids (each quantized glue)
        gave each node a group of the whole rest of the chain, cubic in its length (members is a list)."""
        members, todo = [node], [node]
        while todo and len(members) <= GROUP_MAX:
            for c in consumers.get(todo.pop().output[0], []):
                if c not in members:
                    members.append(c)
                    todo += [c] if quantized_glue(c) else []
        return members if len(members) <= GROUP_MAX else None

    def entering(members):
        """The SQNR entering the members from outside, with none of their own loss: a Concat or Add takes every
        input's error, and judged by its first alone it was blamed for another's (a policy's image branch at 54.8 dB
        beside its state branch at 41.8 made its Flatten and Concat the worst nodes, 10.2 dB "lost", where they lost
        none). Where only Adds and Concats merge them, the inputs' errors are summed against their summed energies
        (a Concat's exactly): the worst input alone made a residual Add, whose low-energy branch is at a lower SQNR
        than the identity it is added to, look as if it gained; elsewhere (a MatMul of two inputs) the worst."""
        made = {o for m in members if m is not None for o in m.output}
        inside = {i for m in members if m is not None for i in m.input if i and i not in initializers}
        traced = {t: back(t) for t in inside - made}
        found = {src: db for db, _, src in traced.values() if db is not None}
        if not found:
            return None
        merging = [m for m in members if m is not None and sum(i in inside for i in m.input) > 1]
        if len(found) > 1 and all(m.op_type in ADDITIVE_OPS for m in merging) and all(t in energy for t in found):
            loudest = max(energy[t] for t in found)  # relative to it: 10 ** 400 overflows
            signal = [10 ** ((energy[t] - loudest) / 10) for t in found]
            noise = sum(s / 10 ** (found[t] / 10) for s, t in zip(signal, found))
            return round(10 * math.log10(sum(signal) / noise), 3)
        return min(found.values())

    rows = []
    for node in graph.node:
        if node.op_type in bench.COMPUTE_OPS:
            tensor = data_in(node)
            in_db, feeder, _ = back(tensor) if tensor else (None, None, None)
            in_db = entering([node]) if in_db is not None else None
            out_db, members = forward(node.output[0]), [feeder, node]
        elif quantized_glue(node) and (members := group(node)):
            in_db = entering(members)
            out_db = min((db for m in members if (db := forward(m.output[0])) is not None), default=None)
        else:
            continue
        if in_db is None or out_db is None:
            continue
        exclude = tuple(n.name for n in members if n is not None)
        rows.append({"node": node.name, "op": node.op_type, "input_sqnr_db": in_db, "output_sqnr_db": out_db,
                     "lost_db": round(in_db - out_db, 3), "exclude": exclude})
    rows.sort(key=lambda r: -r["lost_db"])
    kept, seen = [], set()  # the first row of each set of nodes to exclude (each compared with all before: quadratic)
    for r in rows:
        if (key := frozenset(r["exclude"])) not in seen:
            seen.add(key)
            kept.append(r)
    return kept
