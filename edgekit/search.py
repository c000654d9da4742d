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
import logging
import math
import os
import pickle
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import traceback
import uuid
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import outdir, signals
from .config import AUTO_KNOBS, RANGES, SEARCH_DB, SEARCH_FILES, PruneSpec, Recipe, ShareSpec, Target, target_settings
from .errors import DeviceError, EdgekitError, ExitCode, InputError, StageError, UsageError, disk_full, few, first_line

log = logging.getLogger("edgekit")
_FINISH_READS = weakref.WeakKeyDictionary()  # an SQLite storage's engine: closes its connections' cursors
SAMPLERS = ("tpe", "random", "grid")
DIRECTIONS = ["maximize", "minimize", "minimize"]  # accuracy, latency, size
BUDGETS = ("latency_ms", "size_mb")
FILES, DB = SEARCH_FILES, SEARCH_DB  # a search's own files in OUT; its default storage there
TRIALS_OF = "study.json"  # in OUT/trials: the study whose trials its numbered folders are
CONNECT_TIMEOUT = 20  # seconds for a database server to answer
CONNECT_TIMEOUT_ARGS = {"psycopg2": "connect_timeout", "psycopg": "connect_timeout", "pymysql": "connect_timeout",
                        "mysqldb": "connect_timeout", "pg8000": "timeout"}  # each driver's name for it
MAX_THREADS = 256
SEED_STRIDE = 7919  # between workers' sampler seeds
MAX_STUDY_NAME = 200  # Optuna's column holds 512; a longer name failed deep in the storage
INTERRUPTED = 130  # a trial's exit code when it was stopped (Ctrl-C, SIGTERM) or its search died
# An RDB storage's running trials beat (Optuna's heartbeat); one silent for the grace period died with its search and
# is failed by the next trial any search of the study starts (a shared storage's RUNNING trials may be live elsewhere)
HEARTBEAT_S, GRACE_S = 60, 180
STORAGE_POOL_LOG = "sqlalchemy.pool"  # logs a connection it could not close (one a stop cut short) with a traceback
INPUTS = "edgekit.measured_on"  # the study's record of what its trials were measured on (measured_on)
UNMEASURED = ("out", "force", "archive", "no_bench", "targets", "max_data_bytes", "step_timeout",  # change no figure
              "from_trial", "c_name")  # (out of the hash, a field added later leaves earlier studies' as they were)
LOCK = outdir.SEARCH_LOCK  # in OUT, held for the whole search
BUDGET_FIELDS = {"latency_ms": "latency_p50_ms_max", "size_mb": "size_mb_max"}  # as a target profile names them
OPTUNA_TABLES = {"studies", "trials", "trial_params", "trial_values", "version_info"}  # an Optuna RDB has them
PRUNE_RATIOS = [0.0, 0.3, 0.5, 0.6]
STAGE = "prune_stage:"  # + the stage's module names: its ratio is the trial's prune_ratio times this scale
STAGE_SCALES = [0.5, 1.0, 1.5]
MAX_RATIO = 0.8  # a stage's ratio at most (a ratio times its scale)
CLUSTERS = [0, 16, 32]
QUANTIZE = {"calibrate_method": ["minmax", "entropy"], "per_channel": [True, False], "float_fallback": [False, True]}
AUTO_KNOB = {"calibrate_method": "calibrate_method", "per_channel": "per_channel", "float_fallback": "exclude_nodes"}


@dataclass(frozen=True)
class Point:
    trial: int
    accuracy: float  # int8 accuracy (%), or 100 x the worst int8 cosine without labels
    latency_ms: float  # int8 p50 at the target's threads, on this host
    size_mb: float  # the int8 file the target ships (reports.shipped_model)
    feasible: bool  # within every budget and the target's gates
    params: dict
    where: str = ""  # where its latency was measured


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
    export_failed: str = ""  # the budgets the best point's package missed when exported again ("" when within)
    export_error: str = ""  # why the best point's export did not finish ("" when it did, or there was none)
    running: tuple[int, ...] = ()  # trials still RUNNING: another search's, or a killed one's not yet reclaimed
    grid_done: int = 0  # --sampler grid: every one of its combinations tried (it ran fewer trials than asked)

    @property
    def exit_code(self) -> int:
        """0 when a point met the budgets and gates and its package, exported again, still does; else 1."""
        return int(ExitCode.OK if self.best and not self.export_failed else ExitCode.GATE_FAILED)

    def to_json(self) -> dict:
        """pareto.json's and `edgekit search --json`'s document (reports.envelope)."""
        from .reports import envelope

        return envelope("search", self.exit_code, **dataclasses.asdict(self),
                                trials=len(self.points) + len(self.failed) + len(self.running))


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UsageError("edgekit search runs on Optuna: pip install 'edgekit[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial's reason is recorded, not traced
    return optuna


def space(recipe: Recipe, budgets: dict, target: Target | None = None) -> dict[str, list]:
    """What the trials vary, each name with its values (fixed for a study, so the grid sampler can walk it).
    Torch models: prune ratio and importance (Taylor with [prune] data's or [distill]'s labels), per-stage ratio scales
    (x the ratio, for each of pruning.stages of the layers pruning resizes; none: not pruned), weight sharing; with
    [distill]: epochs, temperature, learning rate; always: calibration method, per-channel weights, float fallbacks
    for nodes that fail parity (`--auto` limited to exclusions, unless the recipe turns `auto` on itself); with a
    latency budget: `--precision latency`. Stages and importance only for structured pruning; quantization knobs only
    those the `target`'s rules let --auto turn (android-arm64 takes no per-channel weights)."""
    from . import pruning

    found = {}
    loaded = None if recipe.state else _torch_model(recipe)  # a streaming model is compressed by hand (see pipeline)
    if loaded is None and (recipe.prune or recipe.share or recipe.distill):  # dropped without a word; export refuses
        from .pipeline import COMPRESSION_NEEDS_TORCH

        raise UsageError(COMPRESSION_NEEDS_TORCH)
    if loaded is not None:
        base = recipe.prune or PruneSpec()
        # output layers and what the recipe keeps whole are no stage: a model of heads alone has nothing to prune
        # (each of its ratios made the unpruned model again, exported anew)
        kept = pruning.kept_whole((*base.ignore, *_output_layers(recipe, loaded)), base.stage_ratios)
        stages = pruning.stages(loaded.module, kept=kept)
        if stages:
            found["prune_ratio"] = PRUNE_RATIOS
        if stages and base.method == "structured":  # unstructured pruning ranks single weights by magnitude, model-wide
            found["prune_importance"] = ["l1", "l2", *(["taylor"] if base.taylor_data(recipe.distill) else [])]
            for stage in stages if len(stages) > 1 else ():
                found[STAGE + ",".join(stage)] = STAGE_SCALES
        found["clusters"] = CLUSTERS
        if recipe.distill:
            d = recipe.distill
            found["distill_epochs"] = sorted({0, max(1, d.epochs // 2), d.epochs})
            found["distill_temperature"] = sorted({2.0, d.temperature, 8.0})
            found["distill_lr"] = sorted({min(RANGES["lr"][1], float(f"{lr:.3g}"))
                                          for lr in (d.lr / 3, d.lr, d.lr * 3)})
    rules = recipe.quantize.get("auto_search", target.quantize.auto_search) if target else AUTO_KNOBS
    found.update({k: v for k, v in QUANTIZE.items() if AUTO_KNOB[k] in rules
                  and (k != "float_fallback" or not recipe.quantize.get("auto"))})
    if "latency_ms" in budgets:
        found["precision"] = ["int8", "latency"]
    return found


def _torch_model(recipe: Recipe):
    """The recipe's loaded model when it is an nn.Module edgekit can prune, share and distill (else None: an .onnx,
    .pt2 or TorchScript model is searched over quantization only)."""
    from .load import load_model

    loaded = load_model(recipe.source, recipe.weights, recipe.trust_checkpoint, exporting=True)
    return loaded if loaded.module is not None and loaded.program is None else None


def _output_layers(recipe: Recipe, loaded) -> list[str]:
    """The layers giving the model's outputs (pruning keeps them whole), by the user's names: traced on made-up
    inputs, the model wrapped as an export wraps it (raw pixels in, constants pinned); none when it does not run on
    them (each trial's pruning then says what it kept)."""
    from . import compress, pipeline, pruning

    own = loaded.module
    try:
        specs, _, _ = pipeline._inputs(recipe, loaded)
        heads = pruning.head_layers(loaded.module.eval(), compress.example_inputs(specs))
        prefix = next((f"{name}." for name, m in loaded.module.named_modules() if m is own and name), "")
    except Exception as e:  # the trials' own error, or sizes the data would give
        log.warning("search: the model's output layers were not found (%s): every stage is searched",
                    first_line(e))
        return []
    finally:
        loaded.module = own
    return [name.removeprefix(prefix) for name in heads]


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
    share = dataclasses.replace(recipe.share or ShareSpec(), clusters=params["clusters"]) \
        if params.get("clusters") else None
    epochs = params.get("distill_epochs", 0)
    distill = None
    if recipe.distill and epochs:
        distill = dataclasses.replace(recipe.distill, epochs=epochs, **{
            key: params[f"distill_{key}"] for key in ("temperature", "lr") if f"distill_{key}" in params})
    quantize = {**recipe.quantize, **{key: params[key] for key in (*QUANTIZE, "precision") if key in params}}
    if params.get("calibrate_method", "percentile") != "percentile":
        quantize.pop("percentile", None)  # the recipe's percentile is for its own method, not the trial's
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
            budgets[key] = float(value if "_" not in value else "?")  # Python reads 1_0 as 10: a typo, not a number
        except ValueError:
            raise UsageError(f"--budget {item!r}: expected NAME=NUMBER") from None
        if key not in BUDGETS or not 0 < budgets[key] < float("inf"):  # NaN fails it too
            raise UsageError(f"--budget {item!r}: use {' or '.join(BUDGETS)} with a positive, finite number")
    return budgets


def sampler_of(kind: str, grid: dict[str, list], seed: int):
    optuna = _optuna()
    made = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
            "random": lambda: optuna.samplers.RandomSampler(seed=seed),
            "grid": lambda: optuna.samplers.GridSampler(grid, seed=seed)}
    if kind not in made:
        raise UsageError(f"--sampler {kind!r}: use {', '.join(SAMPLERS)}")
    return made[kind]()


def study(storage: str, name: str, sampler: str, grid: dict[str, list], seed: int, beat: bool = False):
    """`beat`: its trials record Optuna's heartbeat (a search on a storage other searches may share)."""
    optuna = _optuna()
    if not name or len(name) > MAX_STUDY_NAME or not name.isprintable():
        raise UsageError(f"--study: a name of 1 to {MAX_STUDY_NAME} printable characters")
    found = optuna.create_study(storage=_storage(storage, beat=beat), study_name=name,
                                sampler=sampler_of(sampler, grid, seed), load_if_exists=True, directions=DIRECTIONS)
    if [d.name.lower() for d in found.directions] != DIRECTIONS:
        raise UsageError(f"--study {name!r}: a study of other objectives is stored under that name; give another "
                         "--study")
    return found


def optimize(recipe: Recipe, target: Target, budgets: dict, grid: dict[str, list], trials: int, sampler: str,
             storage: str, name: str, time_budget: float | None, out: Path, threads: int | None = None,
             worker: int = 0, run_id: str = "") -> None:
    """Run `trials` trials in this process on the shared study (failures recorded, never fatal); `threads`:
    torch's (distillation, reference outputs) while they run; `run_id`: the search's, on each of its trials."""
    import torch

    from . import pipeline
    from .reports import shipped_model

    # the default OUT/search.db is OUT's, locked with it: its RUNNING trials are ended at once, without heartbeats
    s = study(storage, name, sampler, grid, recipe.seed, beat=storage != default_storage(out))
    # the recipe's seed for a new search's first worker (reproducible); other workers, and a resumed study, draw
    # anew: with one seed every worker and every resume proposed the same trials
    s.sampler = sampler_of(sampler, grid, recipe.seed + SEED_STRIDE * worker + len(s.trials))

    def objective(trial):
        if signals.RECEIVED:  # a stop swallowed inside the last trial (converted, suppressed): no further trial
            raise KeyboardInterrupt
        try:
            return run_trial(trial)
        except KeyboardInterrupt as e:  # Optuna holds it while it records the trial's end: let go of what it cut
            _let_go(e)
            raise
        except Exception as e:  # recorded on the trial; Optuna marks it failed and the search goes on
            if signals.RECEIVED:  # what fails after a stop (an import it cut short: "initialization failed") is it
                _let_go(e)
                raise KeyboardInterrupt from e
            if "error" not in trial.user_attrs:
                trial.set_user_attr("error", f"{type(e).__name__}: {e}")
                # edgekit's verdict on these values is final; a full disk, a trial folder in the way (usage), a
                # device's link or folder, or an interrupt (no attrs at all) is not, and those values are tried again
                trial.set_user_attr("final", isinstance(e, EdgekitError) and not disk_full(e)
                                    and not isinstance(e, (UsageError, DeviceError)))
                trial.set_user_attr("exit_code", int(getattr(e, "exit_code", ExitCode.INTERNAL)))
            raise

    def run_trial(trial):
        trial.set_user_attr("run", run_id)  # process ids are not unique across the machines sharing a storage
        params = {key: trial.suggest_categorical(key, values) for key, values in grid.items()}
        trial.set_user_attr("worker", os.getpid())
        trial.set_user_attr("torch_threads", torch.get_num_threads())
        key = json.dumps(effective(params), sort_keys=True)
        trial.set_user_attr("effective", key)
        if (same := _done_before(s, trial.number, key)) is not None:  # the same model: its figures, not a new run
            trial.set_user_attr("same_as", same.number)
            for key in ("constraints", "metric", "where", "kernels", "error", "final", "exit_code"):
                if key in same.user_attrs:
                    trial.set_user_attr(key, same.user_attrs[key])
            if same.values is None:
                raise RuntimeError(same.user_attrs.get("error", f"as trial {same.number}"))
            for key, value in zip((*BUDGETS, "gates"), same.user_attrs["constraints"]):
                trial.set_constraint(key, value)
            return tuple(same.values)
        # never --force: a trial's folder holding what edgekit did not write there stays, and the trial fails
        trial_recipe = dataclasses.replace(apply(recipe, params, out / "trials" / str(trial.number)), force=False)
        report = pipeline.run(trial_recipe, [target], progress=False)
        t = report.targets[target.name]
        # unlabelled: the worst cosine; for integer outputs only (class ids), the worst exact agreement
        cosine = t.quant_parity.worst("cosine")  # 0.0 is a collapsed output's, not a missing one
        accuracy = t.accuracy.int8 if t.accuracy else 100 * (
            cosine if cosine is not None else t.quant_parity.worst("exact_agreement") or 0.0)
        figures = {"latency_ms": t.latency.int8.p50_ms, "size_mb": t.sizes[shipped_model(t.details)] / 1e6}
        constraints = {key: figures[key] - budgets[key] if key in budgets else 0.0 for key in BUDGETS}
        constraints["gates"] = 0.0 if t.passed else 1.0
        for key, value in constraints.items():  # <= 0 is feasible; TPE samples around feasible trials
            trial.set_constraint(key, value)
        trial.set_user_attr("constraints", list(constraints.values()))
        trial.set_user_attr("metric", "int8 accuracy %" if t.accuracy else "100 x worst int8 cosine"
                            if cosine is not None else "100 x worst int8 exact agreement")
        trial.set_user_attr("where", t.latency.where)
        trial.set_user_attr("kernels", t.details.get("arm_kernels") or "this host's onnxruntime kernels")
        return accuracy, figures["latency_ms"], figures["size_mb"]

    try:
        with worker_threads(threads):  # workers share the cores: torch's own pools would oversubscribe them
            s.optimize(objective, n_trials=trials, timeout=time_budget, catch=(Exception,))
    finally:
        _release(s)


def _release(s) -> None:
    """Close `s`'s database session and connections. A signal inside the session's close (Optuna's storage call
    ending) left it open in its registry, holding SQLite's lock: the clean-up's write then failed "database is
    locked" and the trial stayed RUNNING."""
    storage = getattr(s._storage, "_backend", s._storage)  # Optuna wraps an RDBStorage in its cache
    if isinstance(storage, _optuna().storages.RDBStorage):
        storage.remove_session()
        _FINISH_READS.get(storage.engine, list)()  # a checked-out connection's too (dispose leaves it open)
        storage.engine.dispose()


def measured_on(recipe: Recipe, target: Target) -> dict:
    """What a study's figures were measured on: the recipe's settings, the content of each file it names (model,
    weights, data: moved, it is the same; replaced, it is not), and the target profile. A study resumed with other
    weights ranked their 13% with its 99%, and one resumed for another target exported a per-channel trial of
    desktop-x86 as android-arm64's package."""
    profile = {k: v for k, v in dataclasses.asdict(target).items() if k not in ("path", "description")}
    # sizes are the shipped file's (an .ort on mobile targets; model.int8.onnx before): not comparable across
    return {"target": target.name, "profile": _hash(profile), "size_of": "shipped file", **_recipe_inputs(recipe)}


def _recipe_inputs(recipe: Recipe) -> dict:
    """measured_on's part that is the recipe's: its settings' hash, and the digest of each file it names."""
    settings = {k: v for k, v in dataclasses.asdict(recipe).items() if k not in UNMEASURED}
    if "inputs" in settings:  # their name, shape and dtype (a study made before InputSpec.declared resumes)
        settings["inputs"] = [s.as_dict() for s in recipe.inputs]
    if recipe.device:  # which device, not the key and known hosts that reach it, nor the folder it works in
        settings["device"] = urlsplit(recipe.device.url)._replace(path="").geturl()
    named = {"source": recipe.source, "weights": recipe.weights, "calibration": recipe.calibration,
             "validation": recipe.validation, "prune.data": recipe.prune.data if recipe.prune else None,
             "distill.data": recipe.distill.data if recipe.distill else None,
             **{f"state_init.{k}": v for k, v in recipe.state_init.items()}}
    files = {}
    for where, value in named.items():
        if isinstance(value, str) and value:  # a FILE.py:FN names its file here, and its function in settings
            digest = _digest(value.rsplit(":", 1)[0] if ".py:" in value else value)
            if digest is not None:
                files[where] = digest
                settings = _without_path(settings, where)
    return {"settings": _hash(settings), "files": files}


def _without_path(settings: dict, where: str) -> dict:
    """`settings` with the path at `where` (a.b) reduced to what follows it (a FILE.py:FN's FN): the file's place is
    not what was measured, its content is."""
    head, _, rest = where.partition(".")
    if rest:
        return {**settings, head: _without_path(settings[head], rest)} if isinstance(settings.get(head), dict) \
            else settings
    value = settings.get(head)
    return {**settings, head: value.rsplit(":", 1)[1] if isinstance(value, str) and ".py:" in value else "<file>"}


def _hash(data) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(data, sort_keys=True, default=repr).encode()).hexdigest()


def _digest(name: str) -> str | None:
    """A regular file's sha256, or a data folder's (its .npz/.npy files' names and digests, which is what is
    read of it); None for anything else."""
    from .package import sha256

    try:
        path = Path(name)
        if path.is_dir():
            return _hash({p.name: _digest(str(p)) for p in sorted(path.iterdir())
                          if p.suffix in (".npz", ".npy") and stat.S_ISREG(p.stat().st_mode)})
        if not stat.S_ISREG(path.stat().st_mode):
            return None
        return sha256(path)
    except (OSError, ValueError):  # no such file (a module name), a name no file can have
        return None


def _same_inputs(study, inputs: dict, name: str) -> None:
    """The first search of a study records `inputs` (measured_on); a resumed one must have the same."""
    recorded = study.user_attrs.get(INPUTS)
    if recorded is None:
        study.set_user_attr(INPUTS, inputs)
        return
    if changed := _changes(recorded, inputs):
        raise UsageError(f"study {name!r} holds trials of other inputs ({changed}): a new --out (with a new --study "
                         "on a shared --storage) starts a search of these")


def _changes(recorded, inputs: dict) -> str:
    """What differs between a study's record of its inputs and `inputs` (its target only when `inputs` has one)."""
    if recorded == inputs or isinstance(recorded, dict) and {k: recorded.get(k) for k in inputs} == inputs:
        return ""
    was = recorded if isinstance(recorded, dict) else {}  # a study edited by hand holds anything
    files = was.get("files") if isinstance(was.get("files"), dict) else {}
    changed = [("" if "target" not in inputs else f"target {was.get('target')!r} changed to {inputs['target']!r}"
                if was.get("target") != inputs["target"] else "the target profile changed"
                if was.get("profile") != inputs["profile"] else ""),
               "the recipe's settings changed" if was.get("settings") != inputs["settings"] else "",
               *(f"the {where.removeprefix('recipe.')} file changed" for where in sorted({*files, *inputs["files"]})
                 if files.get(where) != inputs["files"].get(where))]
    return ", ".join([c for c in changed if c][:4]) or "its record of them changed"


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
    """An earlier finished trial of the same effective values, or one edgekit failed for those values (not one
    interrupted, or stopped by a full disk: those values are tried again), if any."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return next((t for t in study.get_trials(deepcopy=False, states=states)
                 if t.number != number and t.user_attrs.get("effective") == key
                 and (t.state == optuna.trial.TrialState.COMPLETE or t.user_attrs.get("final") is True)), None)


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
    from . import pipeline
    from .runtime import runs_limited

    _optuna()  # the search extra, before anything reads a storage URL
    workers = min(workers, trials)  # a worker without a trial only costs a start-up (64 took 2:48 for 4 trials)
    if recipe.device and workers > 1:
        raise UsageError("--device runs one trial at a time: two would share its cores")
    target_settings(target, recipe.quantize)  # told now, not in every trial
    pipeline.refuse_for_streaming(recipe)
    pipeline.refuse_incomplete(recipe)
    pipeline.refuse_c_name(recipe, [target])
    from . import emulator  # here: at import it brought numpy into `edgekit --help`

    if recipe.emulate is not None and emulator.parse(recipe.emulate)[0] != emulator.ARCH:  # its metric is the host's
        raise UsageError(f"--emulate {recipe.emulate}: a search scores an arm64 target on emulated aarch64 kernels "
                         "only; `edgekit export --emulate x86_64[:CPU]` judges the chosen trial on an x86-64 CPU's")
    pipeline.emulator_for(recipe, [target])  # a wrong --emulate or a dead --device fails now, not in every trial
    with runs_limited(recipe.step_timeout, "step_timeout"):  # its steps bounded as in the trials
        pipeline.device_for(recipe, [target])
    outdir.check_replaceable(out, [target.name, *FILES], recipe.force)  # now, not after the trials
    if os.path.lexists(out / "trials") and not (out / "trials").is_dir():
        raise UsageError(f"--out {out}: trials exists and is not a folder (a search writes its trials there)")
    if storage is None:
        _refuse_foreign_db(out / DB)
    elif db := sqlite_file(storage):  # a search resumes an Optuna file; it adds no tables to another's
        _refuse_foreign_db(db, storage)
        if db.name == DB and db.resolve().parent != out.resolve() and any(
                os.path.lexists(db.parent / f) for f in ("pareto.json", LOCK, "trials")):
            # that search, resumed, would end this one's running trials as its own dead ones
            raise UsageError(f"--storage {shown(storage)}: is the search in {db.parent}'s own file: resume it with "
                             f"--out {db.parent}, or give this search a file of its own")
    elif storage.startswith("journal:"):
        _refuse_foreign_journal(storage)
    _refuse_storage_in_output(storage, out, target)
    created = [p for p in (out, *out.resolve().parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)  # before the study: a --storage may name a file inside OUT
    except OSError as e:  # under a file, or in /proc: as export tells it
        raise InputError(f"--out {out}: cannot create it ({e.strerror})") from e
    try:
        with outdir.lock(out / LOCK, out):  # one search per OUT: a second one is told at once, not after its trials
            return _search(recipe, target, budgets, trials, sampler, storage or default_storage(out), name,
                           time_budget, workers, out)
    except BaseException:
        for folder in created:  # a search that never started leaves no OUT (or parents) behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _refuse_storage_in_output(storage: str | None, out: Path, target: Target) -> None:
    """A --storage file where the search puts its output (the best point's package, a trial's, its pages) would be
    replaced by it: with --force, the study's history was deleted."""
    file = storage and storage_file(storage)
    if not file:  # the default, or a database server's
        return
    where = file.resolve()
    for replaced in (out / target.name, out / "trials", *(out / f for f in FILES)):
        if where == replaced.resolve() or where.is_relative_to(replaced.resolve()):
            raise UsageError(f"--storage {shown(storage)} is inside {replaced}, which the search replaces: keep the "
                             "study elsewhere (the default is OUT/search.db)")


def _end_running(made, ours) -> None:
    """Trials left RUNNING that `ours(trial)` claims are marked failed with no error: "interrupted", tried again."""
    for trial in made.get_trials(deepcopy=False, states=(_optuna().trial.TrialState.RUNNING,)):
        if ours(trial):
            made.tell(trial.number, state=_optuna().trial.TrialState.FAIL)


def _let_go(error: BaseException) -> None:
    """Drop what the calls `error` cut short still hold: a signal that came during a storage read left its SQLite
    cursor in their frames, holding the database's lock, and the clean-up's write then failed "database is locked"
    (the trial stayed RUNNING). The traceback keeps its lines; only the frames' locals go. (SQLAlchemy's result
    objects held that cursor too: an SQLite storage's connections close their cursors themselves, _closes_its_reads.)"""
    errors, seen = [error], set()
    while errors:
        e = errors.pop()
        if e is not None and id(e) not in seen:
            seen.add(id(e))
            traceback.clear_frames(e.__traceback__)  # frames still running are left as they are
            errors += [e.__cause__, e.__context__]


def _search(recipe: Recipe, target: Target, budgets: dict, trials: int, sampler: str, storage: str, name: str,
            time_budget: float | None, workers: int, out: Path) -> SearchReport:
    from . import bounded

    grid = space(recipe, budgets, target)
    owner = _trials_owner(out, storage, name)
    with _storage_errors(storage):
        made = study(storage, name, sampler, grid, recipe.seed)  # made once, before the workers race to make it
        _same_inputs(made, measured_on(recipe, target), name)
        if storage == default_storage(out):  # OUT is locked: a trial still RUNNING in its study died with its search
            _end_running(made, lambda trial: True)
    for folder in (out / "trials").glob("*"):  # with OUT held, a stage left in a trial's folder is a killed trial's
        if folder.is_dir() and not folder.is_symlink():
            outdir.clean_dead_stages(folder)
    if not os.path.lexists(marker := out / "trials" / TRIALS_OF):  # the study opened: OUT/trials is its
        marker.parent.mkdir(exist_ok=True)
        marker.write_text(json.dumps(owner) + "\n", encoding="utf-8")
    run_id = uuid.uuid4().hex

    def ours(trial) -> bool:
        """A RUNNING trial this search left: any in OUT's own study (OUT is locked), else one marked with its run. A
        worker killed between Optuna's creating its trial and its first write left one unmarked (the test's SIGKILL
        on a loaded host): it stayed RUNNING when only the mark counted."""
        return storage == default_storage(out) or trial.user_attrs.get("run") == run_id

    job = (recipe, target, budgets, grid, sampler, storage, name, time_budget, out, run_id)
    from .host import usable_cores  # numpy's import: not on `edgekit --help`'s path

    threads = max(1, usable_cores() // workers) if workers > 1 else None
    with tempfile.TemporaryDirectory(prefix="edgekit-search-") as tmp:
        children = []
        if workers > 1:
            try:
                (Path(tmp) / "job.pickle").write_bytes(pickle.dumps(job))  # read back only by our own children
            except Exception as e:
                raise UsageError(f"--workers > 1 runs other processes: the model and data must be paths or "
                                 f"MODULE:FUNCTION, not Python objects ({type(e).__name__})") from None
            children = [subprocess.Popen([sys.executable, "-m", "edgekit.search", str(Path(tmp) / "job.pickle"),
                                          str(share_of(trials, workers, i)), str(threads), str(i)],
                                         env=bounded.child_env())
                        for i in range(1, workers)]
        try:
            with _storage_errors(storage):
                optimize(recipe, target, budgets, grid, share_of(trials, workers, 0), sampler, storage, name,
                         time_budget, out, threads, run_id=run_id)
        except BaseException as e:
            _let_go(e)  # first: the workers' own clean-up writes wait on a lock it holds
            for child in children:  # a signal or a failure here ends the other workers too
                child.terminate()
            for child in children:
                child.wait()
            # a signal inside Optuna's recording of a trial's end (after its run) left it RUNNING: ours are ended
            try:
                _end_running(made, ours)
            except Exception as failed:  # a storage this broken
                log.warning("trials left RUNNING in %s could not be marked failed (%s); the next search of the "
                            "study ends them", shown(storage), first_line(failed.__cause__ or failed, 160))
            raise
        finally:
            for child in children:
                child.wait()
    died = [(i, child.returncode) for i, child in enumerate(children, 1) if child.returncode != 0]
    if died and not signals.RECEIVED:  # a worker killed (the OOM killer) or failed: its share was not run
        with _storage_errors(storage):  # and its trial was left RUNNING
            _end_running(made, ours)
    with _storage_errors(storage):
        report = summary(storage, name, budgets)
    combinations = math.prod(len(values) for values in grid.values())
    if sampler == "grid" and len(report.points) + len(report.failed) >= combinations:  # Optuna stops the study
        report = dataclasses.replace(report, grid_done=combinations)
    if died and not signals.RECEIVED:  # the front of the trials done is worth having; nothing is exported
        said = ("; ".join(f"worker {i} was ended by {_exit_said(code)}" if code < 0 else
                          f"worker {i} ended with {_exit_said(code)}" for i, code in died)
                + ": its running trial was marked failed, and the study is short of the trials asked (the same "
                "search again runs them)")
        _publish_pages(out, dataclasses.replace(report, export_error=f"not exported: {said}"), None, recipe.force)
        raise StageError("search", said)
    published = signals.publishes()
    try:
        return _export_best(recipe, target, budgets, storage, name, out, report)
    except BaseException as e:  # the trials publish in OUT/trials: only the search's own output counts here
        if (isinstance(e, KeyboardInterrupt) or signals.RECEIVED) and signals.publishes() > published:
            raise signals.InterruptedAfterPublish from e
        raise


def _exit_said(code: int) -> str:
    """A child's return code as a person reads it: a signal by name (SIGKILL is most often the OOM killer's)."""
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"{name}{' (out of memory?)' if -code == signal.SIGKILL else ''}"


def _trials_owner(out: Path, storage: str, name: str) -> dict:
    """The study OUT/trials is for (OUT/trials/study.json says whose): each study numbers its trials from 0, so a
    second one (a new --study, or another --storage) in the same OUT replaced the first one's trial packages."""
    file = storage_file(storage)  # however the URL spells it; OUT's own file as OUT names it (moved with OUT)
    where = (DB if file.resolve() == (out / DB).resolve() else str(file.resolve())) if file else shown(storage)
    owner, marker = {"study": name, "storage": where}, out / "trials" / TRIALS_OF
    if os.path.lexists(marker):
        try:
            found = json.loads(marker.read_bytes()[:1 << 16]) if marker.is_file() else None
        except (OSError, ValueError, RecursionError):
            found = None
        if found != owner:
            whose = (f"study {found.get('study')!r} in {found.get('storage')}" if isinstance(found, dict)
                     else f"another study's ({marker} cannot be read)")
            raise UsageError(f"--out {out}: its trials are {whose}; each study numbers its trials from 0, so a new "
                             "one needs its own --out")
    return owner


def _export_best(recipe: Recipe, target: Target, budgets: dict, storage: str, name: str, out: Path,
                 report: SearchReport) -> SearchReport:
    """The best point exported to OUT, and the pages of the front beside it (also when its export failed, not when
    it was interrupted)."""
    from . import pipeline

    exported = None
    try:
        if report.best is not None:  # as `export --from-trial` re-exports it: the trial's values and torch threads
            best, threads = from_trial(dataclasses.replace(recipe, out=str(out), no_bench=False), storage, name,
                                       report.best.trial)
            # its package's own gates hold the budgets: timed again, it may miss one the trial met
            bounded_target = dataclasses.replace(target, budgets=dataclasses.replace(target.budgets, **{
                field: min(v, getattr(target.budgets, field) or v)  # the profile's own, where tighter
                for k, v in budgets.items() for field in [BUDGET_FIELDS[k]]}))
            with worker_threads(threads):
                package = pipeline.run(best, [bounded_target], progress=False).targets[target.name]
            exported = target.name
            missed = [f"{g.name} {g.value} > {g.limit}" for g in package.gates if not g.passed
                      and g.name in ("latency_p50_ms", "size_mb")]
            # a gate another kind of CPU would judge (an arm64 target timed on x86) is skipped in the package; the
            # search's own budget is on this host's timing, as its trials' were
            here = package.latency.int8.p50_ms if package.latency else None
            if "latency_ms" in budgets and here is not None and here > budgets["latency_ms"] and not any(
                    m.startswith("latency_p50_ms") for m in missed):
                missed.append(f"latency_p50_ms {here} > {budgets['latency_ms']} (this host's timing, as the trials')")
            report = dataclasses.replace(report, export_failed=", ".join(missed))
    except BaseException as e:  # the front is worth having when its best point's export failed, not when stopped
        if not isinstance(e, KeyboardInterrupt) and not signals.RECEIVED:  # saying so: pareto.json read as exported
            _publish_pages(out, dataclasses.replace(report, export_error=first_line(e)), exported, recipe.force)
        raise
    _publish_pages(out, report, exported, recipe.force)
    if not report.points and report.failed and len({f["exit_code"] for f in report.failed}) == 1:
        code = report.failed[0]["exit_code"]  # every trial failed alike on bad input: that, not "no trial met"
        if code in (ExitCode.USAGE, ExitCode.BAD_INPUT):
            raise (UsageError if code == ExitCode.USAGE else InputError)(
                f"every trial failed: {first_line(Exception(report.failed[0]['error']))}")
    return report


def _publish_pages(out: Path, report: SearchReport, exported: str | None, force: bool) -> None:
    from . import report_html, reports

    with outdir.staging(out, list(FILES), force) as stage:  # replacing only a search's own files
        (stage / "pareto.json").write_text(reports.json_text(report.to_json()) + "\n", encoding="utf-8")
        (stage / "report.html").write_text(report_html.search_page(report, exported), encoding="utf-8")
        outdir.publish(stage, out, list(FILES))


@contextlib.contextmanager
def _storage_errors(storage: str):
    """The storage failing under a running search (a database server stopped, a disk gone) is a failed step."""
    try:
        yield
    except Exception as e:
        import traceback

        # raised in Optuna's or SQLAlchemy's code (a stopped server surfaced as Optuna's UnboundLocalError)
        where = traceback.extract_tb(e.__traceback__)[-1].filename if e.__traceback__ else ""
        if isinstance(e, EdgekitError) or not any(f"{os.sep}{m}{os.sep}" in where for m in ("optuna", "sqlalchemy")):
            raise
        cause = e  # the database's own words (malformed, read-only), not Optuna's guess ("exceeding max length")
        while cause.__cause__ is not None or (cause.__context__ is not None and not cause.__suppress_context__):
            cause = cause.__cause__ or cause.__context__
        raise StageError("search storage", f"{shown(storage)}: {type(cause).__name__}: "
                         f"{first_line(cause, 160).replace(storage, shown(storage))}") from e


def summary(storage: str, name: str, budgets: dict) -> SearchReport:
    """Every trial in the storage, the feasible Pareto front (accuracy up, latency and size down), the best."""
    optuna = _optuna()
    trials = optuna.load_study(study_name=name, storage=_storage(storage)).trials
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    done = [t for t in done if t.values is not None and len(t.values) == 3]  # a hostile study's other objectives
    points = tuple(Point(t.number, round(t.values[0], 4), round(t.values[1], 4), round(t.values[2], 4),
                         _feasible(t, budgets), t.params, str(t.user_attrs.get("where", ""))) for t in done)
    failed = tuple({"trial": t.number, "params": t.params, "error": str(t.user_attrs["error"]),
                    "exit_code": t.user_attrs.get("exit_code", int(ExitCode.INTERNAL))} if "error" in t.user_attrs
                   else {"trial": t.number, "params": t.params, "error": "interrupted", "exit_code": INTERRUPTED}
                   for t in trials if t.state == optuna.trial.TrialState.FAIL)
    feasible = [p for p in points if p.feasible]

    def dominated(p: Point) -> bool:
        return any(q.accuracy >= p.accuracy and q.latency_ms <= p.latency_ms and q.size_mb <= p.size_mb
                   and (q.accuracy, -q.latency_ms, -q.size_mb) != (p.accuracy, -p.latency_ms, -p.size_mb)
                   for q in feasible)

    copies = {t.number for t in done if "same_as" in t.user_attrs}  # the same model as an earlier trial: one point
    pareto = tuple(sorted((p for p in feasible if p.trial not in copies and not dominated(p)),
                          key=lambda p: (-p.accuracy, p.latency_ms)))
    seconds = [t.duration.total_seconds() for t in trials  # a trial reusing another's figures took no time, and
               if t.duration is not None and "same_as" not in t.user_attrs  # an interrupted one ran until the next
               and not (t.state == optuna.trial.TrialState.FAIL and "error" not in t.user_attrs)]  # search ended it
    metric = next((str(t.user_attrs.get("metric", "")) for t in done), "")
    kernels = next((str(t.user_attrs.get("kernels", "")) for t in done), "")
    places = list(dict.fromkeys(p.where for p in points))  # a study other hosts joined mixes their figures
    where = ("several places (each point's own 'where'): " + "; ".join(places) if len(places) > 1 else
             places[0] if places else "")
    running = tuple(t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING)
    return SearchReport(name, shown(storage), metric, budgets, points, failed, pareto, pareto[0] if pareto else None,
                        round(sum(seconds) / len(seconds), 3) if seconds else 0.0, where, kernels, running=running)


def _feasible(trial, budgets: dict) -> bool:
    """Within this run's budgets (a resumed study's earlier trials too: figures are recorded, verdicts are not) and
    the target's gates (the last of the constraints a trial recorded)."""
    constraints = trial.user_attrs.get("constraints")
    gates = constraints[-1] if isinstance(constraints, list) and constraints else 1.0
    figures = dict(zip(BUDGETS, trial.values[1:]))
    return gates == 0.0 and all(figures[k] <= limit for k, limit in budgets.items())


def from_trial(recipe: Recipe, storage: str, name: str, number: int, given: bool = True) -> tuple[Recipe, int | None]:
    """The recipe with trial `number`'s values (`edgekit export RECIPE --from-trial N`), and the torch threads the
    trial ran with: the same model again needs them (distillation's sums depend on them). `given`: the user named
    `storage` (else it is a search's own OUT/search.db, as edgekit made it)."""
    optuna = _optuna()
    # reading a search must not write one: Optuna would make the tables (or the file) a typo or another's names
    if db := sqlite_file(storage):
        if not db.exists():
            raise UsageError(f"--storage {shown(storage)}: no such database file")
        _refuse_foreign_db(db, storage if given and storage != default_storage(Path(recipe.out)) else "")
    elif storage.startswith("journal:"):
        if not os.path.exists(storage[len("journal:"):]):
            raise UsageError(f"--storage {storage}: no such journal file")
        _refuse_foreign_journal(storage)
    with _storage_errors(storage):  # a damaged or locked database says so (it was exit 5, in Optuna's words)
        try:
            found = optuna.load_study(study_name=name, storage=_storage(storage, create=False))
        except KeyError:
            raise UsageError(f"--storage {shown(storage)}: no study named {name!r}") from None
        trial = next((t for t in found.trials if t.number == number), None)
    if trial is None:
        raise UsageError(f"study {name!r} has no trial {number}")
    if INPUTS in found.user_attrs and (changed := _changes(found.user_attrs[INPUTS], _recipe_inputs(recipe))):
        raise UsageError(f"trial {number} of study {name!r} was measured on other inputs ({changed}): "
                         "exported with these, it would not be that trial's model")
    if trial.state != optuna.trial.TrialState.COMPLETE:
        raise UsageError(f"trial {number} of study {name!r} did not complete ({trial.state.name}): export a "
                         "completed one (OUT/pareto.json lists them)")
    # the trial's settings, with the re-export's own --archive (else the archive beside OUT would go stale)
    # every knob a search of this recipe can turn (float fallbacks too: the recipe here may turn `auto` on)
    grid = {**space(recipe, {"latency_ms": 1.0}), "float_fallback": QUANTIZE["float_fallback"]}
    if strange := [f"{k}={v!r}" for k, v in trial.params.items() if k not in grid or v not in grid[k]]:
        raise UsageError(f"trial {number} of study {name!r} was made for another recipe: {few(strange, 4)} are not "
                         "in this recipe's search space")
    # a trial that took an earlier one's figures (same_as) ran nothing: that one's model, made at its threads,
    # is what its figures measured (with its own threads, distillation made another model)
    same = trial.user_attrs.get("same_as")
    measured = next((t for t in found.trials if t.number == same and t is not trial), trial)
    threads = measured.user_attrs.get("torch_threads")
    if not (isinstance(threads, int) and not isinstance(threads, bool) and 1 <= threads <= MAX_THREADS):
        threads = None  # a study edited by hand (10**6 threads crashed torch): torch's own default
    made = {"study": name, "storage": shown(storage), "trial": number,
            **({"same_as": measured.number} if measured is not trial else {})}
    return (dataclasses.replace(apply(recipe, trial.params, Path(recipe.out)), archive=recipe.archive,
                                no_bench=recipe.no_bench, from_trial=made), threads)


def _storage(url: str, create: bool = True, beat: bool = False):
    """An RDB URL as Optuna takes it (sqlite:///FILE, postgresql://..., with that database's driver installed), or
    journal:FILE for Optuna's journal file storage (one file many processes append to, e.g. on a shared disk).
    Opened here, so a storage that cannot be used (no driver, not a database, a bad URL) is the user's error.
    `create=False`: Optuna's tables are not made where they are missing; `beat`: with Optuna's heartbeat (RDB)."""
    _optuna()
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    sqlite_file(url)  # an in-memory one is refused
    try:
        if url.startswith("journal:"):
            return JournalStorage(JournalFileBackend(url[len("journal:"):]))
        # a server that does not answer would hang the search (a blocked driver call ignores SIGTERM and Ctrl-C)
        arg = CONNECT_TIMEOUT_ARGS.get(_parsed(url).get_driver_name())
        bounded = {"connect_args": {arg: CONNECT_TIMEOUT}, "pool_timeout": CONNECT_TIMEOUT} if arg else {}
        beating = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S} if beat else {}
        with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna 5.1: no news to a user
            warnings.simplefilter("ignore", _optuna().exceptions.ExperimentalWarning)
            made = RDBStorage(url, engine_kwargs=bounded, skip_table_creation=not create, **beating)
        if made.engine.name == "sqlite":
            _closes_its_reads(made.engine)
        return made
    except Exception as e:  # sqlalchemy's errors, the driver's ImportError, ValueError: this storage cannot be used
        raise UsageError(f"--storage {shown(url)}: cannot be opened ({type(e).__name__}: "
                         f"{first_line(e, 160).replace(url, shown(url))})") from None


def _closes_its_reads(engine) -> None:
    """A connection of `engine` (SQLite) closes the cursors it opened when it goes back to the pool, is invalidated
    or closed. A read a signal cut short (Ctrl-C while SQLAlchemy made its rows) leaves its cursor unclosed, and an
    unfinished SELECT keeps SQLite's shared lock until its cursor is closed or freed: the pool's rollback does not end
    it (no transaction is open), nor does closing the connection (SQLite keeps it open until its statements end).
    That cursor lived on in SQLAlchemy's result objects, not only in the traceback's frames (_let_go), and the
    clean-up's write in the same process waited out the whole busy timeout on its own lock ("database is locked", the
    trial left RUNNING): a longer timeout would only have waited longer."""
    from sqlalchemy import event

    opened = weakref.WeakSet()  # its cursors, weakly: the finished ones go (an sqlite3 connection takes no weakref)
    lock = threading.Lock()  # Optuna's heartbeat thread runs SQL beside the main thread's

    def track(conn, cursor, *_) -> None:
        with lock:
            opened.add(cursor)

    def finish(dbapi_connection, *_) -> None:
        if dbapi_connection is None:  # checked in once invalidated: closed already, its cursors first
            return
        with lock:
            mine = [c for c in opened if c.connection is dbapi_connection]
        for cursor in mine:
            with contextlib.suppress(Exception):
                cursor.close()  # before its connection is closed: then its cursor refuses to close
            with lock:
                opened.discard(cursor)

    event.listen(engine, "before_cursor_execute", track)
    for name in ("reset", "checkin", "invalidate", "close", "close_detached"):  # before each happens
        event.listen(engine, name, finish)
    def finish_all() -> None:
        with lock:
            connections = {c.connection for c in opened}
        for connection in connections:
            finish(connection)

    _FINISH_READS[engine] = finish_all


def _parsed(url: str):
    """An RDB URL as SQLAlchemy reads it."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url)
    except Exception as e:
        raise UsageError(f"--storage: not a database URL ({type(e).__name__}); expected sqlite:///FILE, an RDB URL "
                         "such as postgresql://... or journal:FILE") from None


def storage_file(url: str) -> Path | None:
    """The file an SQLite or journal storage keeps its study in; None for a database server's."""
    return Path(url[len("journal:"):]) if url.startswith("journal:") else sqlite_file(url)


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (however written: sqlite+pysqlite:///f.db?timeout=20); None for other storages."""
    if url.startswith("journal:"):
        return None
    parsed = _parsed(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if parsed.database in (None, "", ":memory:") or parsed.database.startswith("file::memory:") or \
            parsed.query.get("mode") == "memory":  # sqlite:///file:x.db?mode=memory&uri=true
        raise UsageError(f"--storage {url}: an in-memory database is gone when the search ends and no other process "
                         "sees it: give sqlite:///FILE")
    return Path(parsed.database)


def shown(url: str) -> str:
    """A storage URL as edgekit prints and records it: without its password (SQLAlchemy reads one with any
    character in it, so SQLAlchemy finds it)."""
    if url.startswith("journal:"):
        return url
    try:
        return _parsed(url).render_as_string(hide_password=True)
    except Exception:
        return url.split(":", 1)[0] + ":..."


def default_storage(out: Path) -> str:
    """An SQLite file in the output folder: one machine's search, resumed by running it again."""
    return f"sqlite:///{(out / DB).resolve()}"


def _refuse_foreign_db(path: Path, given: str = "") -> None:
    """OUT/search.db (or the SQLite file of a --storage URL `given`) is used only when it is an Optuna study:
    Optuna would add its tables to any database."""
    import sqlite3

    if not os.path.lexists(path):
        return
    where = f"--storage {shown(given)}" if given else f"--out {path.parent}: {DB}"
    # a FIFO would hang sqlite's open; a link in OUT is someone else's file (one named by --storage is the user's)
    if not stat.S_ISREG((os.stat if given else os.lstat)(path).st_mode):
        raise UsageError(f"{where} is not a regular file" + ("" if given else "; move it away or pass --storage"))
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as e:
        if "not a database" not in str(e):  # locked by a program holding it, damaged: a study, maybe, not another's
            raise InputError(f"{where} cannot be read: {e}" + ("; a program holds it locked: try again once it lets "
                                                               "go" if "locked" in str(e) else "")) from None
        tables = set()
    except (OSError, ValueError):
        tables = set()
    if not OPTUNA_TABLES <= tables:
        raise UsageError(f"{where} is not an Optuna study" + ("" if given else "; move it away or pass --storage"))


def _refuse_foreign_journal(storage: str) -> None:
    """A journal:FILE is used only when it is new or Optuna's journal (JSON lines): a FIFO hung the search, and
    /dev/null or another file's bytes were exit 5 from inside Optuna."""
    path = Path(storage[len("journal:"):])
    if not os.path.exists(path):
        return
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise UsageError(f"--storage {storage}: is not a regular file")
    with open(path, "rb") as f:
        first = f.readline(1 << 20)
    try:
        record = json.loads(first) if first else {"op_code": 0}
    except (ValueError, RecursionError):
        record = None
    if not (isinstance(record, dict) and "op_code" in record):
        raise UsageError(f"--storage {storage}: is not an Optuna journal")


def share_of(total: int, workers: int, index: int) -> int:
    """Trials for worker `index` of `workers` (the first ones take the remainder)."""
    return total // workers + (1 if index < total % workers else 0)


def _worker(argv: list[str]) -> None:
    """A --workers child: the parent's job, this worker's share of the trials. It stops (quietly: the parent
    reports) on the parent's SIGTERM, on Ctrl-C to the terminal's process group, or when the parent is gone."""
    import threading

    def stop(signum, _):
        signals.RECEIVED.append(signum)  # optimize's trials: what fails from here on is this stop
        signals.ignore()  # a second one (Ctrl-C to the group, then the parent's SIGTERM) cut Optuna's recording of
        raise KeyboardInterrupt  # the failed trial short: it stayed RUNNING

    def orphaned(parent: int) -> None:
        while os.getppid() == parent:
            threading.Event().wait(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    for s in signals.SIGNALS:
        signal.signal(s, stop)
    signals.never_swallowed(stop)
    signals.stopped_even_inside_c("")  # quietly: the parent reports
    logging.getLogger(STORAGE_POOL_LOG).setLevel(logging.CRITICAL)  # the parent reports the storage's failures
    threading.Thread(target=orphaned, args=(os.getppid(),), daemon=True).start()
    *job, run_id = pickle.loads(Path(argv[0]).read_bytes())
    recipe, target, budgets, grid, sampler, storage, name, time_budget, out = job
    try:
        with _storage_errors(storage):
            optimize(recipe, target, budgets, grid, int(argv[1]), sampler, storage, name, time_budget, out,
                     int(argv[2]), int(argv[3]), run_id)
    except KeyboardInterrupt:
        sys.exit(130)
    except EdgekitError as e:
        if signals.RECEIVED:  # what failed after the stop (a storage call it cut short) is the stop: the parent says so
            sys.exit(130)
        print(f"edgekit: search worker: {e}", file=sys.stderr)
        sys.exit(int(e.exit_code))
    finally:
        signals.final()


if __name__ == "__main__":
    _worker(sys.argv[1:])
