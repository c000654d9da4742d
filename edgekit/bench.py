"""Latency on the host with a target's providers and threads: warm-up, p50/p90/p99, load time,
and why int8 is not faster when it is not (QDQ groups onnxruntime left unfused)."""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import host, runner
from .errors import StageError, too_long
from .quantization import COMPUTE_OPS, QUANTIZED_OP
from .runtime import flushing, run_limit, session

log = logging.getLogger(__name__)
NOISY_SPREAD = 1.5  # p90/p50 above this: other work on the host disturbed the timing


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    runs: int
    load_ms: float
    threads: int
    host: dict
    warmup: int | None = None  # untimed runs before; `edgekit check --device` times as the export did
    peak_rss_mb: float | None = None  # resident memory a fresh process gains loading and running it (None: unmeasured)
    # each run's milliseconds, for choices between models (`choose`); not reported: the percentiles above are
    times_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @property
    def p90_over_p50(self) -> float:
        return round(self.p90_ms / self.p50_ms, 3) if self.p50_ms > 0 else 0.0

    def as_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "times_ms"}, "p90_over_p50": self.p90_over_p50}


def measure_pair(paths: dict[str, str], feed: dict[str, np.ndarray], providers, threads: int, warmup: int,
                 runs: int, progress=None, memory: bool = False) -> dict[str, Latency]:
    """Time several models on one feed, interleaved round-robin so drift hits them all alike; `memory`: also each
    model's peak memory, each in a process of its own."""
    with flushing():  # as the runtime contract's sessions run (a timing outside an export's: benchmarks, round_to)
        return _measure(paths, feed, providers, threads, warmup, runs, progress, memory)


def _measure(paths, feed, providers, threads, warmup, runs, progress, memory) -> dict[str, Latency]:
    """`measure_pair`'s timing, on a thread that flushes denormals."""
    sessions, loads, used = {}, {}, {}
    for key, path in paths.items():
        start = time.perf_counter()
        sessions[key], used[key] = session(path, providers, threads, capped=False)
        loads[key] = (time.perf_counter() - start) * 1e3
    seconds, raised_by = run_limit()
    try:
        times = runner.time_round_robin(sessions, feed, warmup, runs, progress, seconds)
    except TimeoutError:
        raise StageError("latency", f"a run of the model {too_long(seconds, raised_by)}") from None
    peaks = peak_memory(paths, feed, used, threads) if memory else {}
    return {key: replace(summarize(t, loads[key], threads, host.label(threads, used[key]), warmup),
                         peak_rss_mb=peaks.get(key)) for key, t in times.items()}


def peak_memory(paths: dict[str, str], feed: dict[str, np.ndarray], providers: dict[str, list[str]],
                threads: int) -> dict[str, float | None]:
    """Each model's peak resident memory over the runtime's own (runner.peak_rss_mb), in a bounded child of its own
    (a process's peak only rises), one after another in this thread: a stop ends the child running."""
    from . import bounded

    seconds, raised_by = run_limit()
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-memory-") as tmp:
        inputs = os.path.join(tmp, "feed.npz")
        runner.write_inputs(inputs, [feed])
        for key, path in paths.items():
            try:
                peaks[key] = float(bounded.run("peak memory", "edgekit.runner:peak_rss_in_child", path, inputs,
                                               str(threads), str(runner.MEMORY_RUNS), json.dumps(providers[key]),
                                               timeout=seconds * (runner.MEMORY_RUNS + 1), raised_by=raised_by))
            except StageError as e:  # a figure beside the latency: its failure (no /proc?) is said, not the run's
                log.warning("%s: peak memory not measured: %s", "/".join(Path(path).parts[-2:]), e.message)
                peaks[key] = None
    return peaks


def summarize(times_ms: list[float], load_ms: float, threads: int, where: dict, warmup: int | None = None) -> Latency:
    """Percentiles of one model's run times, with where they were measured."""
    a = np.asarray(times_ms)
    return Latency(*(round(float(np.percentile(a, q)), 4) for q in (50, 90, 99)), round(float(a.mean()), 4),
                   len(a), round(load_ms, 2), threads, where, warmup, times_ms=tuple(float(t) for t in a))


ESTIMATOR = "mean of the fastest tenth of runs (3 at least)"  # what choices between models compare (`choose`)
TIE = 0.03  # figures closer than this (relative) are a tie: one loop's noise on a loaded host exceeded it
RESAMPLES = 400  # bootstrap resamples deciding whether a difference outlives the runs' noise


def _fastest(n: int) -> int:
    return min(n, max(3, n // 10))


def fast_ms(times_ms) -> float:
    """The estimator choices compare: other work on the host only adds time to a run, so the fastest runs are the
    model's own figure. 2 x 12 loops of three round_to candidates under load (benchmarks/timing_choice.py): p50 varied
    7-16% between loops and flipped the choice 2 and 3 times, the fastest tenth 1.3-3.5% and never (min 1-2.6%, one
    run's luck; the mean 39-64%)."""
    a = np.sort(np.asarray(times_ms, dtype=float))
    return float(a[:_fastest(len(a))].mean())


def figure(lat: Latency) -> float:
    return fast_ms(lat.times_ms) if lat.times_ms else lat.p50_ms  # no runs kept (an older device): its p50


def _resampled(lat: Latency, rounds: np.ndarray | None) -> np.ndarray:
    """`fast_ms` of RESAMPLES bootstrap resamples of the runs (its own figure, RESAMPLES times, without them), the
    runs of `rounds` (RESAMPLES x runs indices)."""
    a = np.asarray(lat.times_ms, dtype=float)
    if a.size < 4 or rounds is None:
        return np.full(RESAMPLES, figure(lat))
    drawn = np.sort(a[rounds], axis=1)
    return drawn[:, :_fastest(a.size)].mean(axis=1)


def _rounds_drawn(n: int, rng) -> np.ndarray:
    """RESAMPLES x n indices of `n` runs timed round-robin, whole rounds drawn (runner.BLOCK runs each, a model's
    runs in a round one after another): runs drawn one by one, a round's load was counted as noise it was not, and
    two models timed alike were "clearly" apart in 11 seeds of 200 (1-3x load a round). Runs one by one where they
    fill fewer than 4 rounds, or no whole number of them."""
    rounds, block = divmod(n, runner.BLOCK)
    if rounds < 4 or block:
        return rng.integers(0, n, (RESAMPLES, n))
    drawn = rng.integers(0, rounds, (RESAMPLES, rounds))[:, :, None] * runner.BLOCK + np.arange(runner.BLOCK)
    return drawn.reshape(RESAMPLES, n)


def clearly_faster(a: Latency, b: Latency, margin: float = TIE) -> bool:
    """Whether `a` beats `b` beyond noise: its figure lower by `margin`, and lower in 95% of resamples. Models timed
    round-robin (as many runs each) are resampled by round, each round's runs kept together: load that slowed a
    round slowed both, and drawn apart it was counted as either model's noise (a 5% gain under load drifting 1-3x
    round to round was a tie)."""
    if not figure(a) < figure(b) * (1 - margin):
        return False
    rng = np.random.default_rng(0)  # the same runs decide the same way
    n, m = len(a.times_ms), len(b.times_ms)
    if n == m:
        shared = _rounds_drawn(n, rng) if n >= 4 else None
        return float(np.mean(_resampled(a, shared) < _resampled(b, shared))) >= 0.95
    drawn_a, drawn_b = (rng.integers(0, k, (RESAMPLES, k)) if k >= 4 else None for k in (n, m))
    return float(np.mean(_resampled(a, drawn_a) < _resampled(b, drawn_b))) >= 0.95


@dataclass(frozen=True)
class Choice:
    """Which of several models timed together was kept, on what figures; `tie`: the others within the noise of it
    (the preferred one was kept, not the one a coin flip of the noise made fastest)."""

    chosen: object
    figures_ms: dict
    tie: tuple = ()
    estimator: str = ESTIMATOR

    def as_dict(self) -> dict:
        return {"chosen": str(self.chosen), "estimator": self.estimator,
                "figures_ms": {str(k): v for k, v in self.figures_ms.items()},
                "tie": [str(k) for k in self.tie] or None}


def choose(lat: dict, prefer: list, margin: float = TIE) -> Choice:
    """The first of `prefer` (keys of `lat`, timed in one loop) that no other model is clearly faster than. `tie`:
    the later ones in `prefer` it is not clearly faster than (kept away by the preference alone); an earlier one was
    passed over because another was clearly faster (8 beaten by 32, but within the noise of 16, was called a tie of
    16 with the note "the smaller multiple kept")."""
    chosen = next(k for k in prefer if not any(clearly_faster(lat[o], lat[k], margin) for o in lat if o != k))
    later = prefer[prefer.index(chosen) + 1:]
    tie = tuple(o for o in later if not clearly_faster(lat[chosen], lat[o], margin))
    return Choice(chosen, {k: round(figure(v), 4) for k, v in lat.items()}, tie)


def unfused_qdq(path: str, providers=("CPUExecutionProvider",), threads: int = 1) -> dict:
    """Count compute nodes that stay float after onnxruntime's optimiser, fed by DequantizeLinear.

    In a QDQ model every Conv/MatMul/Gemm starts as DQ → op → Q; onnxruntime fuses a group into an
    integer kernel when it can. A compute op that is still a plain float op fed by a DequantizeLinear
    ran in fp32 with extra dequantize work: the usual reason int8 is not faster.
    """
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        session(path, providers, threads, optimized_path=optimized)
        graph = onnx.load(optimized, load_external_data=False).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    unfused = [n for n in graph.node if n.op_type in COMPUTE_OPS and n.domain in ("", "ai.onnx")
               and any(producer.get(i) == "DequantizeLinear" for i in n.input)]
    integer = [n for n in graph.node if QUANTIZED_OP.search(n.op_type)  # kernels, not Q/DQ themselves
               and n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    return {"unfused_compute_nodes": len(unfused), "integer_nodes": len(integer),
            "unfused_examples": [n.name or n.op_type for n in unfused[:5]]}
