"""`edgekit search`: the most accurate model under a device budget, over edgekit's own knobs (`space`: pruning,
weight sharing, distillation, quantization), by Optuna.

Optuna (the `search` extra) is the engine and its storage the state: an SQLite file by default (one machine),
any RDB URL or journal storage for many; `--workers K` runs K processes on one storage, and another machine
joins with the same `--storage` and study name. Each trial is a whole `edgekit export` of the first target into
OUT/trials/<n>, so its accuracy, latency and size are the ones a package would have. A trial that fails is
recorded with its reason and the search goes on; the Pareto front (accuracy x latency x size, within the
budgets and the target's gates) goes to OUT/pareto.json (and its scatter to OUT/report.html) and its most accurate
point is exported to OUT.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import RANGES, PruneSpec, Recipe, ShareSpec, Target
from .errors import UsageError, first_line

SAMPLERS = ("tpe", "random", "grid")
BUDGETS = ("latency_ms", "size_mb")
FILES = ("pareto.json", "report.html")  # a search's own files in OUT, beside the best point's package
DB = "search.db"  # the default storage, in OUT
OPTUNA_TABLES = {"studies", "trials", "trial_params", "trial_values", "version_info"}  # an Optuna RDB has them
PRUNE_RATIOS = [0.0, 0.3, 0.5, 0.6]
STAGE = "prune_stage:"  # + the stage's module names: its ratio is the trial's prune_ratio times this scale
STAGE_SCALES = [0.5, 1.0, 1.5]
MAX_RATIO = 0.8  # a stage's ratio at most (a ratio times its scale)
CLUSTERS = [0, 16, 32]
QUANTIZE = {"calibrate_method": ["minmax", "entropy"], "per_channel": [True, False], "float_fallback": [False, True]}


@dataclass(frozen=True)
class Point:
    trial: int
    accuracy: float  # int8 accuracy (%), or 100 x the worst int8 cosine without labels
    latency_ms: float  # int8 p50 at the target's threads, on this host
    size_mb: float  # model.int8.onnx
    feasible: bool  # within every budget and the target's gates
    params: dict


@dataclass(frozen=True)
class SearchReport:
    study: str
    storage: str
    metric: str
    budgets: dict
    points: tuple[Point, ...]  # every completed trial
    failed: tuple[dict, ...]  # {trial, params, error}
    pareto: tuple[Point, ...]
    best: Point | None
    seconds_per_trial: float
    where: str  # where latency was measured: this host, or the device
    kernels: str  # whose int8 kernels computed the outputs the metric is on: this host's, or emulated aarch64

    def to_json(self) -> dict:
        return {**{k: v for k, v in dataclasses.asdict(self).items() if k not in ("points",)},
                "trials": len(self.points) + len(self.failed)}


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UsageError("edgekit search runs on Optuna: pip install 'edgekit[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial's reason is recorded, not traced
    return optuna


def space(recipe: Recipe, budgets: dict) -> dict[str, list]:
    """What the trials vary, each name with its values (fixed for a study, so the grid sampler can walk it).
    Torch models: prune ratio and importance (Taylor with [prune] data's or [distill]'s labels), per-stage ratio scales
    (x the ratio, for each of pruning.stages), weight sharing; with [distill]: epochs, temperature, learning
    rate; always: calibration method, per-channel weights, float fallbacks for nodes that fail parity (`--auto`
    limited to exclusions, unless the recipe turns `auto` on itself); with a latency budget: `--precision
    latency`. Stages and importance only for structured pruning."""
    from . import pruning

    found = {}
    module = _torch_module(recipe)
    if module is not None:
        base = recipe.prune or PruneSpec()
        found["prune_ratio"] = PRUNE_RATIOS
        if base.method == "structured":  # unstructured pruning ranks single weights by magnitude, model-wide
            found["prune_importance"] = ["l1", "l2", *(["taylor"] if base.taylor_data(recipe.distill) else [])]
            stages = pruning.stages(module)
            for stage in stages if len(stages) > 1 else ():
                found[STAGE + ",".join(stage)] = STAGE_SCALES
        found["clusters"] = CLUSTERS
        if recipe.distill:
            d = recipe.distill
            found["distill_epochs"] = sorted({0, max(1, d.epochs // 2), d.epochs})
            found["distill_temperature"] = sorted({2.0, d.temperature, 8.0})
            found["distill_lr"] = sorted({min(RANGES["lr"][1], float(f"{lr:.3g}"))
                                          for lr in (d.lr / 3, d.lr, d.lr * 3)})
    found.update({k: v for k, v in QUANTIZE.items() if k != "float_fallback" or not recipe.quantize.get("auto")})
    if "latency_ms" in budgets:
        found["precision"] = ["int8", "latency"]
    return found


def _torch_module(recipe: Recipe):
    """The recipe's nn.Module when it is one edgekit can prune, share and distill (else None: an .onnx, .pt2 or
    TorchScript model is searched over quantization only)."""
    from .load import load_model

    loaded = load_model(recipe.source, recipe.weights, recipe.trust_checkpoint)
    return loaded.module if loaded.module is not None and loaded.program is None else None


def apply(recipe: Recipe, params: dict, out: Path) -> Recipe:
    """The recipe one trial (or its re-export) runs: the recipe's own settings with the trial's values."""
    ratio = params.get("prune_ratio", 0.0)
    prune = None
    if ratio:
        base = recipe.prune or PruneSpec()
        stages = {name: min(MAX_RATIO, round(ratio * scale, 4)) for key, scale in params.items()
                  if key.startswith(STAGE) for name in key[len(STAGE):].split(",")}
        importance = params.get("prune_importance", base.importance)
        # the trial may drop [distill] (0 epochs): Taylor keeps its labelled data
        prune = dataclasses.replace(base, ratio=ratio, importance=importance, data=base.taylor_data(recipe.distill),
                                    stage_ratios={**base.stage_ratios, **stages})
    share = ShareSpec(clusters=params["clusters"]) if params.get("clusters") else None
    epochs = params.get("distill_epochs", 0)
    distill = None
    if recipe.distill and epochs:
        distill = dataclasses.replace(recipe.distill, epochs=epochs, **{
            key: params[f"distill_{key}"] for key in ("temperature", "lr") if f"distill_{key}" in params})
    quantize = {**recipe.quantize, **{key: params[key] for key in (*QUANTIZE, "precision") if key in params}}
    if quantize.pop("float_fallback", False):
        quantize.update(auto=True, auto_search=("exclude_nodes",))
    return dataclasses.replace(recipe, prune=prune, share=share, distill=distill, quantize=quantize, out=str(out),
                               archive=False, no_bench=False)


def parse_budgets(items) -> dict[str, float]:
    budgets = {}
    for item in items:
        key, _, value = item.partition("=")
        if key in budgets:
            raise UsageError(f"--budget {key} is given twice")
        try:
            budgets[key] = float(value)
        except ValueError:
            raise UsageError(f"--budget {item!r}: expected NAME=NUMBER") from None
        if key not in BUDGETS or not 0 < budgets[key] < float("inf"):  # NaN fails it too
            raise UsageError(f"--budget {item!r}: use {' or '.join(BUDGETS)} with a positive, finite number")
    return budgets


def study(storage: str, name: str, sampler: str, grid: dict[str, list], seed: int):
    optuna = _optuna()
    made = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
            "random": lambda: optuna.samplers.RandomSampler(seed=seed),
            "grid": lambda: optuna.samplers.GridSampler(grid, seed=seed)}
    if sampler not in made:
        raise UsageError(f"--sampler {sampler!r}: use {', '.join(SAMPLERS)}")
    return optuna.create_study(storage=_storage(storage), study_name=name, sampler=made[sampler](), load_if_exists=True,
                               directions=["maximize", "minimize", "minimize"])


def optimize(recipe: Recipe, target: Target, budgets: dict, grid: dict[str, list], trials: int, sampler: str,
             storage: str, name: str, time_budget: float | None, out: Path, threads: int | None = None) -> None:
    """Run `trials` trials in this process on the shared study (failures recorded, never fatal); `threads`:
    torch's (distillation, reference outputs) while they run."""
    import torch

    from . import pipeline

    s = study(storage, name, sampler, grid, recipe.seed)

    def objective(trial):
        try:
            return run_trial(trial)
        except Exception as e:  # recorded on the trial; Optuna marks it failed and the search goes on
            if "error" not in trial.user_attrs:
                trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            raise

    def run_trial(trial):
        params = {key: trial.suggest_categorical(key, values) for key, values in grid.items()}
        trial.set_user_attr("worker", os.getpid())
        trial.set_user_attr("torch_threads", torch.get_num_threads())
        key = json.dumps(effective(params), sort_keys=True)
        trial.set_user_attr("effective", key)
        if (same := _done_before(s, trial.number, key)) is not None:  # the same model: its figures, not a new run
            trial.set_user_attr("same_as", same.number)
            for key in ("constraints", "metric", "where", "kernels", "error"):
                if key in same.user_attrs:
                    trial.set_user_attr(key, same.user_attrs[key])
            if same.values is None:
                raise RuntimeError(same.user_attrs.get("error", f"as trial {same.number}"))
            for key, value in zip((*BUDGETS, "gates"), same.user_attrs["constraints"]):
                trial.set_constraint(key, value)
            return tuple(same.values)
        report = pipeline.run(apply(recipe, params, out / "trials" / str(trial.number)), [target], progress=False)
        t = report.targets[target.name]
        accuracy = t.accuracy.int8 if t.accuracy else 100 * (t.quant_parity.worst("cosine") or 0.0)
        figures = {"latency_ms": t.latency.int8.p50_ms, "size_mb": t.sizes["model.int8.onnx"] / 1e6}
        constraints = {key: figures[key] - budgets[key] if key in budgets else 0.0 for key in BUDGETS}
        constraints["gates"] = 0.0 if t.passed else 1.0
        for key, value in constraints.items():  # <= 0 is feasible; TPE samples around feasible trials
            trial.set_constraint(key, value)
        trial.set_user_attr("constraints", list(constraints.values()))
        trial.set_user_attr("metric", "int8 accuracy %" if t.accuracy else "100 x worst int8 cosine")
        trial.set_user_attr("where", t.latency.where)
        trial.set_user_attr("kernels", t.details.get("arm_kernels") or "this host's onnxruntime kernels")
        return accuracy, figures["latency_ms"], figures["size_mb"]

    with worker_threads(threads):  # workers share the cores: torch's own pools would oversubscribe them
        s.optimize(objective, n_trials=trials, timeout=time_budget, catch=(Exception,))


def effective(params: dict) -> dict:
    """The values that make the model: a ratio of 0 prunes nothing (importance and stage scales do not matter),
    0 distillation epochs train nothing (temperature and learning rate do not)."""
    found = dict(params)
    if not found.get("prune_ratio"):
        found = {k: v for k, v in found.items() if k == "prune_ratio" or not k.startswith("prune_")}
    if not found.get("distill_epochs"):
        found = {k: v for k, v in found.items() if k not in ("distill_temperature", "distill_lr")}
    return found


def _done_before(study, number: int, key: str):
    """An earlier finished (or failed) trial of the same effective values, if any."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return next((t for t in study.get_trials(deepcopy=False, states=states)
                 if t.number != number and t.user_attrs.get("effective") == key), None)


@contextlib.contextmanager
def worker_threads(threads: int | None):
    """torch's intra-op threads, and edgekit's work threads (host.work_threads), while a search worker (or a
    trial's re-export: distillation's numbers depend on torch's) runs; None leaves them as they are."""
    if threads is None:  # and torch stays unimported (an .onnx export needs none)
        yield None
        return
    import torch

    from . import host

    before, work = torch.get_num_threads(), os.environ.get(host.WORK_THREADS_ENV)
    torch.set_num_threads(threads)
    os.environ[host.WORK_THREADS_ENV] = str(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
        if work is None:
            os.environ.pop(host.WORK_THREADS_ENV, None)
        else:
            os.environ[host.WORK_THREADS_ENV] = work


def run(recipe: Recipe, target: Target, budgets: dict, trials: int, sampler: str, storage: str | None,
        name: str, time_budget: float | None, workers: int, out: Path) -> SearchReport:
    """The whole search: `workers` processes (this one and workers - 1 children) on one storage, then the Pareto
    front, OUT/pareto.json, and its most accurate point exported to OUT as the run's package."""
    from . import bounded, outdir, pipeline, report_html

    if recipe.device and workers > 1:
        raise UsageError("--device runs one trial at a time: two would share its cores (and its folder)")
    pipeline.emulator_for(recipe, [target])  # a wrong --emulate or a dead --device fails now, not in every trial
    pipeline.device_for(recipe, [target])
    outdir.check_replaceable(out, [target.name, *FILES], recipe.force)  # now, not after the trials
    if storage is None:
        _refuse_foreign_db(out / DB)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)  # before the study: a --storage may name a file inside OUT
    storage = storage or default_storage(out)
    grid = space(recipe, budgets)
    try:
        study(storage, name, sampler, grid, recipe.seed)  # made once, before the workers race to make it
    except UsageError:
        if created:  # a --storage that cannot be opened leaves no OUT behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    job = (recipe, target, budgets, grid, sampler, storage, name, time_budget, out)
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    with tempfile.TemporaryDirectory(prefix="edgekit-search-") as tmp:
        children = []
        if workers > 1:
            try:
                (Path(tmp) / "job.pickle").write_bytes(pickle.dumps(job))  # read back only by our own children
            except Exception as e:
                raise UsageError(f"--workers > 1 runs other processes: the model and data must be paths or "
                                 f"MODULE:FUNCTION, not Python objects ({type(e).__name__})") from None
            children = [subprocess.Popen([sys.executable, "-m", "edgekit.search", str(Path(tmp) / "job.pickle"),
                                          str(share_of(trials, workers, i)), str(threads)], env=bounded.child_env())
                        for i in range(1, workers)]
        try:
            optimize(recipe, target, budgets, grid, share_of(trials, workers, 0), sampler, storage, name, time_budget,
                     out, threads)
        finally:
            for child in children:
                child.wait()
    report = summary(storage, name, budgets)
    exported = None
    try:
        if report.best is not None:  # as `export --from-trial` re-exports it: the trial's values and torch threads
            best, threads = from_trial(dataclasses.replace(recipe, out=str(out)), storage, name, report.best.trial)
            with worker_threads(threads):
                pipeline.run(best, [target], progress=False)
            exported = target.name
    finally:  # the front is worth having even when its best point's export failed
        with outdir.staging(out, list(FILES), recipe.force) as stage:  # replacing only a search's own files
            (stage / "pareto.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
            (stage / "report.html").write_text(report_html.search_page(report, exported))
            outdir.publish(stage, out, list(FILES))
    return report


def summary(storage: str, name: str, budgets: dict) -> SearchReport:
    """Every trial in the storage, the feasible Pareto front (accuracy up, latency and size down), the best."""
    optuna = _optuna()
    trials = optuna.load_study(study_name=name, storage=_storage(storage)).trials
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    points = tuple(Point(t.number, round(t.values[0], 4), round(t.values[1], 4), round(t.values[2], 4),
                         all(c <= 0 for c in t.user_attrs.get("constraints", [1.0])), t.params) for t in done)
    failed = tuple({"trial": t.number, "params": t.params, "error": t.user_attrs.get("error", str(t.state))}
                   for t in trials if t.state == optuna.trial.TrialState.FAIL)
    feasible = [p for p in points if p.feasible]

    def dominated(p: Point) -> bool:
        return any(q.accuracy >= p.accuracy and q.latency_ms <= p.latency_ms and q.size_mb <= p.size_mb
                   and (q.accuracy, -q.latency_ms, -q.size_mb) != (p.accuracy, -p.latency_ms, -p.size_mb)
                   for q in feasible)

    pareto = tuple(sorted((p for p in feasible if not dominated(p)), key=lambda p: (-p.accuracy, p.latency_ms)))
    seconds = [t.duration.total_seconds() for t in trials  # a trial reusing another's figures took no time
               if t.duration is not None and "same_as" not in t.user_attrs]
    metric = next((t.user_attrs["metric"] for t in done), "")
    where, kernels = (next((t.user_attrs.get(key, "") for t in done), "") for key in ("where", "kernels"))
    return SearchReport(name, storage, metric, budgets, points, failed, pareto, pareto[0] if pareto else None,
                        round(sum(seconds) / len(seconds), 3) if seconds else 0.0, where, kernels)


def from_trial(recipe: Recipe, storage: str, name: str, number: int) -> tuple[Recipe, int | None]:
    """The recipe with trial `number`'s values (`edgekit export RECIPE --from-trial N`), and the torch threads the
    trial ran with: the same model again needs them (distillation's sums depend on them)."""
    optuna = _optuna()
    try:
        trial = next(t for t in optuna.load_study(study_name=name, storage=_storage(storage)).trials
                     if t.number == number)
    except KeyError:
        raise UsageError(f"--storage {storage}: no study named {name!r}") from None
    except StopIteration:
        raise UsageError(f"study {name!r} has no trial {number}") from None
    if trial.state != optuna.trial.TrialState.COMPLETE:
        raise UsageError(f"trial {number} of study {name!r} did not complete ({trial.state.name}): export a "
                         "completed one (OUT/pareto.json lists them)")
    # the trial's settings, with the re-export's own --archive (else the archive beside OUT would go stale)
    return (dataclasses.replace(apply(recipe, trial.params, Path(recipe.out)), archive=recipe.archive),
            trial.user_attrs.get("torch_threads"))


def _storage(url: str):
    """An RDB URL as Optuna takes it (sqlite:///FILE, postgresql://..., with that database's driver installed), or
    journal:FILE for Optuna's journal file storage (one file many processes append to, e.g. on a shared disk).
    Opened here, so a storage that cannot be used (no driver, not a database, a bad URL) is the user's error."""
    _optuna()
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        if url.startswith("journal:"):
            return JournalStorage(JournalFileBackend(url[len("journal:"):]))
        return RDBStorage(url)
    except Exception as e:  # sqlalchemy's errors, the driver's ImportError, ValueError: this storage cannot be used
        raise UsageError(f"--storage {url}: cannot be opened ({type(e).__name__}: {first_line(e, 160)})") from None


def default_storage(out: Path) -> str:
    """An SQLite file in the output folder: one machine's search, resumed by running it again."""
    return f"sqlite:///{(out / DB).resolve()}"


def _refuse_foreign_db(path: Path) -> None:
    """OUT/search.db is resumed only when it is an Optuna study (Optuna would add its tables to any database)."""
    import sqlite3

    if not os.path.lexists(path):
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except (sqlite3.Error, OSError, ValueError):
        tables = set()
    if path.is_symlink() or not OPTUNA_TABLES <= tables:
        raise UsageError(f"--out {path.parent}: {DB} exists and is not an Optuna study; move it away or pass "
                         "--storage")


def share_of(total: int, workers: int, index: int) -> int:
    """Trials for worker `index` of `workers` (the first ones take the remainder)."""
    return total // workers + (1 if index < total % workers else 0)


if __name__ == "__main__":  # a --workers child: the parent's job, this worker's share of the trials
    recipe, target, budgets, grid, sampler, storage, name, time_budget, out = pickle.loads(
        Path(sys.argv[1]).read_bytes())
    optimize(recipe, target, budgets, grid, int(sys.argv[2]), sampler, storage, name, time_budget, out,
             int(sys.argv[3]))
