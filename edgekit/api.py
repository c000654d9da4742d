"""The Python API: `export`, `check`, `prune`, `distill`, `quantize`: the CLI's runs, with typed results.

Errors are raised, never printed: `edgekit.UsageError` (a bad setting), `edgekit.InputError` (a bad model,
data or package), `edgekit.StageError` (a toolchain step failed); each has the CLI's `exit_code`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import os
import random
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np

from .config import (DEFAULT_MAX_DATA_BYTES, DEFAULT_STEP_TIMEOUT, DEFAULT_TARGETS, BenchSpec, DeviceSpec,
                     DistillSettings, InputSpec, PruneSpec, QuantSettings, Recipe, ShareSpec, apply_quant_overrides,
                     build, coerce, expand_home, load_target, load_targets, nearest, overrides, python_names,
                     target_settings, writable_name)
from .errors import EdgekitError, StageError, UsageError, rename, said_for_the_cli
from .outdir import whole_file
from .signals import HEAVY, SIGNALS, cleaned_up_before_dying, import_for
from .reports import CheckReport, ExportReport
from .userfn import is_function_spec, user_code_scope

Feeds = Union[str, Path, Iterable[Mapping[str, np.ndarray]], Callable[[], Iterable[Mapping[str, np.ndarray]]]]
# set by the call's own arguments (or, from_trial, by edgekit's search), not by **settings
_OWN = {"source", "inputs", "calibration", "validation", "targets", "out", "quantize", "bench", "from_trial"}


# torch's ONNX exporter keeps global state (two exports at once: "GLOBALS.in_onnx_export must be False"), and a call
# swaps process-wide things (signal handlers, sys.stdout around onnxruntime's chatter): calls from several threads
# run one after another
_ONE_CALL_AT_A_TIME = threading.RLock()
_SET_BY_IMPORTS = ("TORCHINDUCTOR_CACHE_DIR",)  # torch's inductor, first imported by pruning, sets it for good
_DEPTH = [0]  # API calls under way in the thread holding _ONE_CALL_AT_A_TIME: >1 is one called from user code
_COMMANDS = [0]  # CLI commands under way (command_under_way): an API call in one is called from user code too


def _leaves_no_trace(fn):
    """An API call leaves the caller's process as it found it: the import path (a FILE.py:FUNCTION model's folder;
    the file itself is imported again once edited), Python's, numpy's and torch's global random state, the
    SIGINT/SIGTERM/SIGHUP handlers, the root logger, os.environ (torch's own additions), and (after a Ctrl-C)
    packages importable again. A SIGTERM or SIGHUP left at its default still kills the process, once the call has
    cleaned up (signals.cleaned_up_before_dying).
    onnxruntime's quantizer logs through `logging.warning`, which gives a root logger without handlers one for good
    (and a notebook's own `logging.basicConfig` is then ignored): a stand-in handler is there while edgekit runs.
    The root's handlers (the caller's or the stand-in) drop onnxruntime's records meanwhile (_NotOnnxruntime)."""
    takes = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        _bound(fn.__name__, takes, args, kwargs)
        with _ONE_CALL_AT_A_TIME:
            _DEPTH[0] += 1
            try:
                return _as_found(fn, args, kwargs)
            finally:
                _DEPTH[0] -= 1
    return call


def _bound(name: str, takes: inspect.Signature, args, kwargs) -> None:
    """Arguments a call cannot take are a usage error naming the ones it does (`check(path, bogus=1)` was Python's
    bare TypeError); a name it does not know is matched to the nearest it does. Settings taken by **settings are
    judged by the call itself."""
    try:
        takes.bind(*args, **kwargs)
    except TypeError as e:
        params = [p for p in takes.parameters.values() if p.kind is not p.VAR_KEYWORD]
        unknown = [k for k in kwargs if k not in takes.parameters]
        hint = nearest(unknown[0], [p.name for p in params]) if unknown else ""
        named = ", ".join(p.name + (" (required)" if p.default is p.empty else "") for p in params)
        raise UsageError(f"edgekit.{name}(): {str(e).partition('() ')[2] or e}{hint}; it takes {named}"
                         + (" and settings" if len(params) < len(takes.parameters) else "")) from None


def _as_found(fn, args, kwargs):
    with _callers_state_kept():
        modules = set(sys.modules)
        try:
            with cleaned_up_before_dying():
                import_for(fn.__name__)
                with _defaults_for_the_call():  # after import_for: torch's grad mode is kept once it is imported
                    return fn(*args, **kwargs)
        except KeyboardInterrupt:
            _forget_half_imports(modules)
            raise
        except FileNotFoundError as e:
            if _cwd_exists():
                raise
            # torch imports its compiler's settings (torch._dynamo.config) on first use, reading os.getcwd(): pruning's
            # count raised a bare FileNotFoundError; edgekit itself needs no working folder
            raise UsageError("the working folder was deleted while the process was in it, and torch needs one: "
                             "change to a folder that exists (os.chdir)") from e
        except EdgekitError as e:
            e.args = (in_python_terms(str(e)),)
            if isinstance(e, StageError):
                e.message = in_python_terms(e.message)
            raise


@contextlib.contextmanager
def _callers_state_kept():
    """Each process-wide thing a call changes, and how it is put back (last set, first restored), in one place: on
    return, an exception or a Ctrl-C alike, every one even if another fails."""
    with contextlib.ExitStack() as restore:
        restore.callback(_onnxruntime_logs_as_by_default)
        for key in [k for k in _SET_BY_IMPORTS if k not in os.environ]:  # only these: user code may set others
            restore.callback(os.environ.pop, key, None)
        root = logging.getLogger()
        if not root.handlers:
            root.addHandler(stand_in := _OwnWarnings())
            restore.callback(root.removeHandler, stand_in)
        quiet = _NotOnnxruntime()
        for handler in list(root.handlers):
            handler.addFilter(quiet)
            restore.callback(handler.removeFilter, quiet)
        if torch := sys.modules.get("torch"):
            restore.callback(torch.random.set_rng_state, torch.random.get_rng_state())
        restore.callback(np.random.set_state, np.random.get_state())
        restore.callback(random.setstate, random.getstate())
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:  # interrupted while publishing: the swap ignores a second signal
                restore.callback(signal.signal, s, signal.getsignal(s))
        yield


@contextlib.contextmanager
def _defaults_for_the_call():
    """sys.path, numpy's errors and torch's grad mode as edgekit's steps need them, the caller's again after. Entered
    once import_for has imported torch: entered before, a model file's `torch.set_grad_enabled(False)` outlived the
    call (torch not yet imported, nothing was kept)."""
    with user_code_scope(), np.errstate(**NUMPY_DEFAULT_ERRORS), _torch_grad_as_by_default():
        yield


ONNXRUNTIME_DEFAULT_SEVERITY = 2  # onnxruntime's own default for its default logger: warnings and worse


def _onnxruntime_logs_as_by_default() -> None:
    """A call quiets onnxruntime's default logger (edgekit says the cause in one line), a level onnxruntime keeps for
    the whole process and has no getter for: the caller's own sessions after an export printed not even a warning.
    It is left at onnxruntime's default (a level the caller set before the call is not known, so not kept). A call
    made from user code that another call or a CLI command runs (a calibration function calling edgekit.quantize)
    leaves it at the level the outer one runs with: reset there, the rest of the outer run printed onnxruntime's
    warnings."""
    onnxruntime = sys.modules.get("onnxruntime")
    if onnxruntime is not None and hasattr(onnxruntime, "set_default_logger_severity"):
        from .runtime import ort_log_level

        nested = _DEPTH[0] > 1 or _COMMANDS[0] > 0
        onnxruntime.set_default_logger_severity(ort_log_level() if nested else ONNXRUNTIME_DEFAULT_SEVERITY)


@contextlib.contextmanager
def command_under_way():
    """A CLI command runs: an API call its user code makes (`edgekit export --calibration cal:fn`, fn calling
    edgekit.quantize) is nested in it and leaves onnxruntime's log level at the command's, as under an API call:
    reset to the default, the rest of the command printed onnxruntime's warnings."""
    _COMMANDS[0] += 1
    try:
        yield
    finally:
        _COMMANDS[0] -= 1


# numpy's own error handling, under which edgekit's figures are computed: a notebook's np.seterr(all="raise") made
# an export with latency timing a bare FloatingPointError (an underflow edgekit provokes to see if denormals flush)
NUMPY_DEFAULT_ERRORS = {"divide": "warn", "over": "warn", "under": "ignore", "invalid": "warn"}


@contextlib.contextmanager
def _torch_grad_as_by_default():
    """Autograd on, as torch starts, whatever the caller's cell is under (torch.no_grad(), inference_mode(),
    set_grad_enabled(False)): distill's and share's training was torch's bare "element 0 of tensors does not require
    grad", and prune's tracing a StageError blaming the model. edgekit's own steps turn it off where they need none;
    the caller's mode is theirs again after (both are per thread)."""
    torch = sys.modules.get("torch")  # not imported: its defaults are what it will start with
    if torch is None:
        yield
        return
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _cwd_exists() -> bool:
    try:
        os.getcwd()
    except FileNotFoundError:
        return False
    return True


def in_python_terms(text: str) -> str:
    """A message with the API's keywords for the CLI's flags ("--per-tensor" -> "per_channel=False", "--out x.onnx"
    -> "out=x.onnx"): an error a Python caller gets names what they pass, not a flag they never typed. Unchanged
    for the CLI (errors.for_the_cli)."""
    return text if said_for_the_cli() else rename(text, _python_names())


_python_names = functools.cache(python_names)


class _OwnWarnings(logging.Handler):
    """The root's stand-in while edgekit runs: warnings reach stderr as Python's last resort would print them (a
    NullHandler dropped edgekit's: a prune that removed no channel said nothing; dropping all but edgekit's lost the
    user's own, from their data or model), except those logged by the libraries edgekit drives, as onnxruntime's
    quantizer's advice to run pre-processing that edgekit has already run."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.libraries = tuple(filter(None, map(_package_folder, _QUIET_LIBRARIES)))

    def emit(self, record) -> None:
        if record.name.partition(".")[0] == "edgekit" and logging.getLogger("edgekit").handlers:
            return  # edgekit's own handler has it
        if not record.pathname.startswith(self.libraries):
            logging.lastResort.handle(record)


_QUIET_LIBRARIES = ("onnxruntime", "onnx", "torch", "torch_pruning")


class _NotOnnxruntime(logging.Filter):
    """On the root's handlers while edgekit runs: onnxruntime's records stay out of a caller's own log (a script's
    `logging.basicConfig(level=logging.DEBUG)` got its quantizer's `logging.warning`s and `logging.info`s, logged on
    the root itself, and its shape inference's, on loggers named by its modules or, for its tools, not). Told by the
    file that logged them, as the stand-in tells the libraries' apart; the caller's handlers are as found after."""

    def __init__(self):
        super().__init__()
        self.folder = _package_folder("onnxruntime")

    def filter(self, record) -> bool:
        return self.folder is None or not record.pathname.startswith(self.folder)


def _package_folder(name: str) -> str | None:
    """The folder a package's files are in; None when it is not installed: no record comes from it (its folder was
    "/", which every record's path starts with, and the user's own warnings were dropped)."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    return os.path.dirname(spec.origin) + os.sep if spec and spec.origin else None


def _forget_half_imports(before: set[str]) -> None:
    """A Ctrl-C during a package's first import (onnx, a user's model package): Python forgets the package but keeps
    the submodules it had loaded, so importing it again binds none of them ("module 'onnx' has no attribute
    'external_data_helper'" in every later call). Those orphans are forgotten too, and load again whole; but for
    signals.HEAVY's (a user's data function's `import torch` cut short): their C extensions cannot load twice, and
    import_for says so."""
    for name in sorted(set(sys.modules) - before, key=len):  # a parent before its submodules
        if "." in name and name.rpartition(".")[0] not in sys.modules and name.partition(".")[0] not in HEAVY:
            del sys.modules[name]


@_leaves_no_trace
def export(model: Any, *, inputs: Iterable[str | InputSpec] = (), calibration: Feeds,
           validation: Feeds | None = None, targets: Iterable[str] = DEFAULT_TARGETS,
           out: str | Path | None = None, **settings) -> ExportReport:
    """Export, quantize, validate and package `model` for each target; the same run as `edgekit export`.

    model: an `nn.Module` (copied, never changed), a source string (`pkg.mod:fn`, `file.py:fn`, `.pt`,
      `.pt2`, `.onnx`) or a path.
    inputs: `"name:NxCxHxW[:dtype]"` strings or InputSpec (not needed for an .onnx model).
    calibration, validation: a path, `"random"`, `"pkg.mod:fn"`, an iterable of `{input name: array}`
      dicts (one sample each; a `labels` entry makes accuracy measurable) or a callable returning one.
      Without `validation` the last 25% of the calibration samples are held out.
    targets: profile names or .toml paths. out: the output folder (a new temporary folder when None).
    settings: any QuantSettings field (`calibrate_method="entropy"`, `auto=True`, ...), BenchSpec field
      (`runs`, `warmup`) or run option (`seed`, `no_bench`, `archive`, `force`, `weights`, `task`, `emulate`,
      `device` (an ssh:// URL or a DeviceSpec), `prune`, `share` and `distill` (a PruneSpec / ShareSpec /
      DistillSettings or a dict of their fields, as a recipe's tables: compress before export), ...).
    Returns the report; `report.passed` is the verdict, `report.exit_code` the CLI's exit code.
    """
    from .pipeline import run

    model, calibration, validation, out = map(_path, (model, calibration, validation, out))
    recipe = _recipe(model, inputs, calibration, validation, targets, out, settings)
    try:
        return run(recipe, load_targets(recipe.targets), progress=False)
    except BaseException:
        if out is None:  # the temporary folder made for this call: never left behind empty
            with contextlib.suppress(OSError):
                Path(recipe.out).rmdir()
        raise


@_leaves_no_trace
def check(path: str | Path | ExportReport, *, emulate: str | None = None, device: str | DeviceSpec | None = None,
          probe: bool = False, step_timeout: float = DEFAULT_STEP_TIMEOUT) -> CheckReport:
    """Re-run a package's golden vectors and verify its hashes (a target folder, an OUT folder, an archive, or
    the ExportReport of the export that made it: its targets alone, refused once written over); the same run as
    `edgekit check`.
    `report.passed` is the verdict.
    `emulate="aarch64[:CPU]"` runs an ARM package's models on real aarch64 onnxruntime kernels under qemu user
    mode, with the onnxruntime and numpy versions the package's manifest records (built in the cache on first
    use); `emulate="x86_64[:CPU]"` runs an x86 package's on an x86-64 CPU without VNNI (AVX2: u8s8 sums saturate);
    `device="ssh://user@host[:port][/folder]"` (or a DeviceSpec with a key, known_hosts, the device's python)
    copies the package there and runs the golden check and the latency benchmark with the device's own
    onnxruntime; `probe=True` then also names the first node whose quantized output differs from here.
    `step_timeout`: seconds a target's models may take over its golden inputs here (a package is a file from
    others: a tampered golden batch hung a check for the default 600 s a target)."""
    from .runtime import runs_limited

    with runs_limited(coerce(step_timeout, float, "step_timeout", "edgekit.check()"), "--step-timeout"):
        return _check(_path(path), emulate, device, probe)


def _check(path, emulate, device, probe) -> CheckReport:
    from . import emulator, package_check
    from .device import Device

    only = None
    if isinstance(path, ExportReport):  # the package an export() just made: its targets, not older ones beside them
        _still_written(path)
        path, only = path.out, set(path.targets)
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"check takes a package folder, an archive path or an ExportReport, not {type(path).__name__}")
    if emulate is not None and device is not None:
        raise UsageError("give --emulate or --device, not both")
    if emulate is not None:  # "" (an unset $EMU in CI) is refused, not taken for this host
        return package_check.check(Path(path), emulator.for_package(emulate), probe, only=only)
    if device is not None:
        with Device(_device_spec(device)) as reached:  # what it copied there serves every target
            return package_check.check(Path(path), lambda manifest: reached, probe, only=only)
    return package_check.check(Path(path), None, probe, only=only)


def _still_written(report: ExportReport) -> None:
    """check(report) checks the package that export() wrote: one written over it since (another export with force,
    or by hand) was checked in its place and passed."""
    from .errors import InputError
    from .package_check import read_manifest

    for name, target in report.targets.items():
        folder = Path(report.out) / name
        if target.files and (folder / "manifest.json").is_file() and (
                read_manifest(folder, str(folder)).get("files") != target.files):
            raise InputError(f"{folder}: not the package this ExportReport describes (written over since it was "
                             "made); check the folder by its path to check what is there now")


@_leaves_no_trace
def prune(model: Any, *, inputs: Iterable[str | InputSpec], ratio: float, out: str | Path | None = None,
          weights: str | None = None, data: Feeds | None = None, trust_checkpoint: bool = False,
          target: str | None = None, force: bool = False, max_data_bytes: int = DEFAULT_MAX_DATA_BYTES,
          **settings):
    """Remove channels (structured) or weights (unstructured) from a torch model; the same run as
    `edgekit prune`. `settings`: PruneSpec fields (`method`, `importance`, `ignore`, `round_to`: a multiple, or
    "auto" to time 8/16/32 with `target`'s int8 settings on this host); `data`: labelled batches for
    `importance="taylor"`, at most `max_data_bytes` of it. With `out`, the pruned weights are saved there as a
    state dict that `export(..., weights=out)` reloads (checked by rebuilding from a source string); a file
    already there is replaced only with `force`. Returns (the pruned nn.Module, PruneResult)."""
    from . import compress

    model, out, data = map(_path, (model, out, data))
    _rebuildable(model, "prune")
    spec = build(PruneSpec, {"ratio": ratio, **settings}, "edgekit.prune() settings")
    compress.check_out(out, force)
    specs = _specs(inputs, "edgekit.prune")
    module = _load_seeded(model, _path(weights), trust_checkpoint, Recipe.seed)
    batches = (compress.load_batches(data, specs, 32, {"model": module}, _cap(max_data_bytes, "edgekit.prune()"))
               if data is not None else None)
    sizes = compress.batch_sizes(specs, batches)
    compress.runs_on(module, specs, sizes)
    result = compress.run_prune(module, specs, spec, batches, load_target(_path(target)) if target else None, sizes)
    _save_changed(model, module, out, {"edgekit_prune": result.as_dict()}, specs, "pruned", sizes)
    return module, result


@_leaves_no_trace
def distill(teacher: Any, student: Any, *, data: Feeds, out: str | Path | None = None,
            inputs: Iterable[str | InputSpec] = (), teacher_weights: str | None = None,
            student_weights: str | None = None, trust_checkpoint: bool = False, progress: bool = False,
            force: bool = False, max_data_bytes: int = DEFAULT_MAX_DATA_BYTES, **settings):
    """Train `student` to match `teacher` (soft targets, labels when given, optional feature pairs); the same
    run as `edgekit distill`. `data`: (inputs, labels) batches that MODULE:FN, an iterable or a callable yields,
    or labelled samples in any calibration format (then `inputs` is needed), at most `max_data_bytes` of it. `settings`:
    DistillSettings fields. With `out`, the best student is saved there as it improves (a file already there is
    replaced only with `force`). Returns (the best student, DistillResult)."""
    from . import compress
    from .load import load_model
    from .userfn import seeded

    where = "edgekit.distill() settings"
    teacher, student, data, out = map(_path, (teacher, student, data, out))
    teacher_weights, student_weights = _path(teacher_weights), _path(student_weights)
    _rebuildable(student, "distill --student")
    config = build(DistillSettings, {"data": data if isinstance(data, str) else "", **settings}, where)
    out = compress.check_out(out, force)
    with seeded(config.seed, torch_model=True):  # a student built without weights gets a reproducible init
        t = load_model(teacher, teacher_weights, trust_checkpoint).module
        if t is None:
            raise UsageError(f"distill --teacher {str(teacher)!r}: an ONNX model cannot teach; give a torch source "
                             "(MODULE:FUNCTION, FILE.py:FUNCTION, .pt or .pt2)")
        s = load_model(student, student_weights, trust_checkpoint).module
        batches = compress.load_batches(data, _specs(inputs), config.batch_size, {"teacher": t, "student": s},
                                        _cap(max_data_bytes, "edgekit.distill()"))
        result = compress.run_distill(t, s, batches, config, out, progress)
    return s, result


@_leaves_no_trace
def share(model: Any, *, inputs: Iterable[str | InputSpec], clusters: int = ShareSpec.clusters,
          data: Feeds | None = None, out: str | Path | None = None, weights: str | None = None,
          trust_checkpoint: bool = False, ignore: Iterable[str] = (), progress: bool = False, force: bool = False,
          max_data_bytes: int = DEFAULT_MAX_DATA_BYTES, **settings):
    """Share weights: at most `clusters` values per conv/linear layer (k-means), then, with `data`, fine-tuned by
    distillation from the unshared model with the clusters tied (at most `max_data_bytes` of it); the same run as
    `edgekit share`. `settings`: DistillSettings fields for the fine-tuning (`epochs`, `lr`, ...). With `out`,
    saved there as `edgekit prune` saves (a state dict `export(..., weights=out)` reloads; a file already there is
    replaced only with `force`). Returns (the shared nn.Module, ShareResult)."""
    import copy

    import torch

    from . import compress, sharing

    where = "edgekit.share() settings"
    model, data, out, weights = map(_path, (model, data, out, weights))
    _rebuildable(model, "share")
    if settings and data is None:  # taken without a word, and no fine-tuning done
        raise UsageError(f"share: {', '.join(sorted(settings))} set how to fine-tune on data: give the data too "
                         "(--data)")
    spec = build(ShareSpec, {"clusters": clusters, "ignore": ignore if isinstance(ignore, str) else tuple(ignore)},
                 where)
    config = build(DistillSettings, {"data": data if isinstance(data, str) else "", **settings}, where)
    compress.check_out(out, force)
    specs = _specs(inputs, "edgekit.share")
    module = _load_seeded(model, weights, trust_checkpoint, config.seed)
    with torch.random.fork_rng():  # the data's function and the fine-tuning may draw from torch's generator
        batches = (compress.load_batches(data, specs, config.batch_size, {"model": module},
                                         _cap(max_data_bytes, "edgekit.share()")) if data is not None else None)
        sizes = compress.batch_sizes(specs, batches)
        compress.runs_on(module, specs, sizes)
        teacher = copy.deepcopy(module)
        tied = sharing.cluster(module, spec.clusters, spec.ignore)
        tuned = (compress.run_distill(teacher, module, batches, config, None, progress, tied).as_dict()
                 if batches is not None else None)
    module.eval()
    result = dataclasses.replace(sharing.result(module, spec.clusters, tied, spec.ignore), fine_tuning=tuned)
    _save_changed(model, module, out, {"edgekit_share": result.as_dict()}, specs, "shared", sizes)
    return module, result


@_leaves_no_trace
def quantize(model: str | Path, calibration: Feeds, *, out: str | Path | None = None, target: str = "desktop-x86",
             force: bool = False, step_timeout: float = DEFAULT_STEP_TIMEOUT, **settings) -> Path:
    """Statically (or dynamically) quantize an ONNX model with a target profile's settings, overridden by
    `settings` (QuantSettings fields). No export, parity or packaging: `export` does those. Pre-processing
    (shape inference, folding) runs first, as in `export`. `out` (default MODEL.int8.onnx) is a new file, written
    whole or not at all: one already there is replaced only with `force`, the source never. `step_timeout`:
    seconds each step on the model (pre-processing, a run) may take. Returns its path."""
    from . import calib, compress, inspect_model, onnx_export, quantization, verdict
    from .arrays import regular_file
    from .runtime import flushing, run_calibration, runs_limited

    model, calibration, out = map(_path, (model, calibration, out))
    for name, value in (("model", model), ("target", target), *((("out", out),) if out is not None else ())):
        if not isinstance(value, (str, os.PathLike)):
            raise UsageError(f"edgekit.quantize() {name}: a path or name, not {type(value).__name__}")
    source = Path(model)
    regular_file(source, f"model {str(source)!r}")  # before resolve(): a link loop was its RuntimeError
    dest = compress.check_out(Path(out) if out is not None else source.with_suffix(".int8.onnx"), force)
    if dest.resolve() == source.resolve():
        raise UsageError(f"out {dest}: is the model being quantized; give a new file")
    onnx_export.load_onnx_input(source, checked=(read := []))
    checked = read.pop()  # the bytes checked: what is pre-processed and quantized, the file never read again
    data = {Path(calibration).resolve()} if isinstance(calibration, (str, os.PathLike)) else set()
    if dest.resolve() in checked.external | data:  # with force, it was written over: inf outputs
        raise UsageError(f"out {dest}: is a file this call reads (the model's external data or the calibration "
                         "data); give a new file")
    if settings.get("auto") or settings.get("precision") == "latency":  # taken, and nothing searched
        raise UsageError("edgekit.quantize(): auto and precision='latency' search by measuring parity and latency, "
                         "which edgekit.export() does; quantize() quantizes once with the settings given")
    profile = load_target(_path(target))
    qsettings = target_settings(profile, settings, "edgekit.quantize() settings")
    if qsettings.mode == "static" and calibration is None:  # was read as data, after pre-processing the model
        raise UsageError("edgekit.quantize(): static quantization needs calibration data (a path, \"random\", an "
                         "iterable of {input name: array} dicts or a function returning one); mode=\"dynamic\" "
                         "reads none")
    told = verdict.override_warnings(profile, overrides(profile, qsettings, settings))
    if qsettings.mode == "static" and isinstance(calibration, str) and calibration == "random":
        told.append(verdict.random_data(True, False))
    for said in told:  # what an export's manifest warns of: quantize() writes none
        warnings.warn(said, stacklevel=4)
    limit = coerce(step_timeout, float, "step_timeout", "edgekit.quantize()")
    with tempfile.TemporaryDirectory(prefix="edgekit-") as tmp, flushing(), runs_limited(limit, "--step-timeout"):
        given = onnx_export.given_copy(checked, Path(tmp) / "given")
        checked = checked.released()
        fp32, _ = onnx_export.preprocess(onnx_export.without_initializer_inputs(given, Path(tmp) / "input.onnx",
                                                                                label=str(source)),
                                      Path(tmp) / "model.onnx", limit, raised_by="--step-timeout")
        parsed = onnx_export.parsed(fp32)
        if onnx_export.name_nodes(parsed):  # as an export's are: exclusions go by name
            import onnx
            onnx.save(parsed, str(fp32))
        inspect_model.check_quantizable(parsed, str(source))
        specs, outputs = onnx_export.io_specs(parsed, str(source))
        # a file from others: its quantizer runs bounded, as its pre-processing does
        plan = dataclasses.replace(quantization.plan(parsed, qsettings, set(settings), profile.runtime.arch,
                                                     given_opset=checked.opset), from_file=True)
        for said in plan.warnings:  # an export puts them among its warnings; this returns a path only
            # the caller's line, past the two wrappers
            warnings.warn(in_python_terms(said), stacklevel=4)
        feeds = [] if qsettings.mode == "dynamic" else \
            calib.load(calibration, specs, max_samples=qsettings.samples).feeds
        if feeds and not (isinstance(calibration, str) and calibration == "random"):  # as an export warns of it
            for said in calib.calibration_warnings(feeds[:qsettings.samples]):
                warnings.warn(said, stacklevel=4)
        if feeds:  # calibration runs the model in-process, where a hostile graph's run cannot be stopped
            onnx_export.first_run(fp32, feeds[0], limit)
            run_calibration(fp32, feeds[:qsettings.samples])  # sample 0 again: its outputs checked too
        with whole_file(dest) as partial:
            quantization.quantize(fp32, partial, plan, feeds[: qsettings.samples])
            quantization.done(quantized := onnx_export.parsed(partial))  # an internal record: not shipped
            onnx_export.save_shipped(quantized, partial)  # as a package's int8 model
            onnx_export.check(partial)
            if not quantization.quantizes_anything(quantized):  # as an export's warning says
                warnings.warn(f"{dest.name} {quantization.NOTHING_QUANTIZED}", stacklevel=4)
            for said in _far_from_float(fp32, partial, [o.name for o in outputs], feeds[:PARITY_SAMPLES], profile):
                warnings.warn(f"{dest.name}: {said}", stacklevel=4)
    return dest


PARITY_SAMPLES = 8  # calibration samples edgekit.quantize() runs both models on, as a sanity check


def _far_from_float(fp32: Path, int8: Path, names: list[str], feeds: list, profile) -> list[str]:
    """The outputs whose int8 values stray from the float model's past the profile's cosine limit, on a few
    calibration samples: quantize() measures no parity, and an output it wrecked was returned without a word."""
    from . import parity
    from .runtime import int8_session, run_onnx, session

    if not feeds:  # dynamic mode reads no data
        return []
    exact = profile.runtime.arch != "x86_64"  # an ARM device's arithmetic, as an export judges it
    found = parity.compare(names, run_onnx(session(fp32)[0], feeds),
                           run_onnx(int8_session(int8, exact=exact)[0], feeds))
    limit = profile.parity.quant_cosine_min
    return [f"output {o.output!r} has cosine {o.cosine:.4f} to the float model's on {len(feeds)} calibration samples "
            f"(the {profile.name} profile asks {limit}): edgekit.export(..., auto=True) measures parity on held-out "
            "data and searches for settings that pass" for o in found if o.cosine is not None and o.cosine < limit]


def _save_changed(model, module, out, record: dict, specs, what: str, sizes: dict[str, int]) -> None:
    """A pruned or shared module saved to `out` (when given) as a state dict with its layer sizes; rebuilt from a
    MODULE:FUNCTION source and compared before it becomes `out`, so a size the file cannot carry is found now, not
    at export, and never left there."""
    from . import compress

    if out is None:
        return
    source = str(model) if isinstance(model, (str, Path)) else type(model).__qualname__
    rebuilds = isinstance(model, (str, Path)) and is_function_spec(str(model))
    check = ((lambda partial: compress.verify_reload(str(model), partial, module, specs, what, sizes)) if rebuilds
             else None)
    compress.save(module, Path(out), {**record, "edgekit_source": source}, check)


def _load_seeded(model, weights, trust_checkpoint: bool, seed: int):
    """The torch module, built under userfn.seeded(seed): one built without weights is the same every run, as
    export's and distill's are (prune and share wrote another init each time)."""
    from .load import load_model
    from .userfn import seeded

    with seeded(seed, torch_model=True):
        return load_model(model, weights, trust_checkpoint).module


def _rebuildable(model, command: str) -> None:
    """What prune, share and distill save is a state dict with layer sizes: only a function can rebuild it (a
    TorchScript or ONNX file is refused before it is loaded; a TorchScript archive is a program)."""
    if isinstance(model, (str, Path)) and not is_function_spec(str(model)):
        raise UsageError(f"{command} takes a MODULE:FUNCTION or FILE.py:FUNCTION model, not {str(model)!r}: the "
                         "weights it saves are a state dict that rebuilds from that function")


def _cap(max_data_bytes, where: str) -> int:
    """The most bytes the training data may hold (the CLI passes None when --max-data-bytes is not given)."""
    return DEFAULT_MAX_DATA_BYTES if max_data_bytes is None else coerce(max_data_bytes, int, "max_data_bytes", where)


def _specs(inputs, needed_by: str = "") -> tuple[InputSpec, ...]:
    """`needed_by`: the call that runs the model on them (prune, share), where none is the CLI's missing --input
    (it was exit 3, "model does not run on inputs : TypeError...")."""
    if needed_by and not inputs:
        raise UsageError(f"{needed_by}() needs inputs=['NAME:SHAPE[:DTYPE]', ...], the model's inputs")
    if isinstance(inputs, (str, InputSpec)):
        inputs = (inputs,)
    given = list(inputs) if isinstance(inputs, Iterable) else [inputs]
    if odd := [i for i in given if not isinstance(i, (str, InputSpec))]:  # a tuple was an AttributeError
        raise UsageError(f"inputs: give NAME:SHAPE[:DTYPE] strings or InputSpecs, not a {type(odd[0]).__name__}")
    return InputSpec.parse_all(given)


def _path(value):
    """A path setting as the recipe's string, by the rule the CLI and recipes use (config.expand_home: out="~/dist"
    made a folder named `~`)."""
    return expand_home(value)


def _recipe(model, inputs, calibration, validation, targets, out, settings: dict) -> Recipe:
    quant_keys = {f.name for f in dataclasses.fields(QuantSettings)}
    bench_keys = {f.name for f in dataclasses.fields(BenchSpec)}
    run_keys = {f.name for f in dataclasses.fields(Recipe)} - _OWN
    known = quant_keys | bench_keys | run_keys
    for key in settings:
        if key not in known:
            raise UsageError(f"export() got an unexpected setting {key!r}{nearest(key, known)}")
    where = "edgekit.export() settings"
    if out is not None and not isinstance(out, (str, os.PathLike)):  # out=5 wrote ./5
        raise UsageError(f"edgekit.export() out: a folder path, not {type(out).__name__}")
    if not isinstance(targets, (str, os.PathLike, Iterable)):  # None was Python's TypeError
        raise UsageError(f"edgekit.export() targets: profile names or .toml paths, not {type(targets).__name__}")
    settings = {k: _path(v) for k, v in settings.items()}
    quantize = {k: v for k, v in settings.items() if k in quant_keys}
    apply_quant_overrides(QuantSettings(), quantize, where)  # types, choices and ranges, told now
    run = {k: v for k, v in settings.items() if k in run_keys - {"device"}}
    if isinstance(run.get("state_init"), dict):  # its values are .npy files, `~` as for the others
        run["state_init"] = {k: _path(v) for k, v in run["state_init"].items()}
    for key, cls in (("prune", PruneSpec), ("share", ShareSpec), ("distill", DistillSettings)):  # as recipe tables
        if run.get(key) is not None:
            value = run[key]
            if not (isinstance(value, dict) or dataclasses.is_dataclass(value)):
                raise UsageError(f"{where}: {key} takes a {cls.__name__} or a dict of its fields, not {value!r}")
            table = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
            run[key] = build(cls, {k: _path(v) for k, v in table.items()}, f"{where} [{key}]",
                             required=("data",) if key == "distill" else ())
    recipe = build(Recipe, {"source": "", **run}, where)
    bench = build(BenchSpec, {k: v for k, v in settings.items() if k in bench_keys}, where)
    specs = _specs(inputs)
    if out is None:  # made last: nothing above can leave it behind
        out = tempfile.mkdtemp(prefix="edgekit-")
    writable_name(str(out))
    return dataclasses.replace(
        recipe, source=model, inputs=specs, calibration=calibration, validation=validation,
        targets=tuple(map(_path, (targets,) if isinstance(targets, (str, os.PathLike)) else targets)),
        out=str(out), quantize=quantize, bench=bench, device=_device_spec(settings.get("device")))


def _device_spec(device: str | DeviceSpec | None) -> DeviceSpec | None:
    """The device as a DeviceSpec, its key and known_hosts files taking `~` by the rule the CLI and recipes use
    (config.expand_home): `check --identity "~/.ssh/key"` and a DeviceSpec's said "no such file"."""
    if device is not None and not isinstance(device, (str, os.PathLike, DeviceSpec)):
        raise UsageError(f"device takes an ssh:// URL or a DeviceSpec, not a {type(device).__name__}")
    if isinstance(device, DeviceSpec):
        return dataclasses.replace(device, identity=expand_home(device.identity),
                                   known_hosts=expand_home(device.known_hosts))
    return DeviceSpec(str(device)) if isinstance(device, (str, os.PathLike)) else device
