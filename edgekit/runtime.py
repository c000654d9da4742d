"""Running models: onnxruntime sessions with a target's providers and threads, and the torch reference."""
from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import platform
import re
import threading
from pathlib import Path

import numpy as np

from . import host, runner
from .errors import InputError, StageError, StepTimeout, first_line, not_utf8, too_long, utf8_on_disk
from .signals import import_whole
from .torch_paths import as_exported

log = logging.getLogger("edgekit")
HOST_DEFAULT = "host default"
EXACT_REFUSED = "onnxruntime refused session.x64quantprecision=1"
LOAD_CAUSE = 600  # characters of onnxruntime's reason for not loading a model (its opset refusal: 384)


def ort_log_level() -> int:
    """onnxruntime's own (coloured, multi-line) log lines only with --debug: edgekit reports the cause itself."""
    return 2 if log.isEnabledFor(logging.DEBUG) else 4


_REUSED: dict[tuple, tuple] = {}  # sessions of one run, by file (and its state) and options
MAX_REUSED = 4


_ARENA_LOCK = threading.Lock()
_ARENA_BYTES = [0]  # the cap of the arena registered last (0: none yet)
ENV_ALLOCATORS = {"session.use_env_allocators": "1"}


def memory_capped() -> dict[str, str]:
    """Session config entries for sessions whose runs share one arena of `host.run_memory()` bytes, registered with
    onnxruntime once per distinct cap: a run asking for more fails (`run_error`) instead of filling the machine.
    Initializers are not counted, only what runs allocate. Registering again serves the sessions made after it."""
    import onnxruntime as ort

    limit = host.run_memory()
    with _ARENA_LOCK:  # two threads may export at once
        if _ARENA_BYTES[0] != limit:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg({"max_mem": limit, "arena_extend_strategy": 1}))
            _ARENA_BYTES[0] = limit
    return dict(ENV_ALLOCATORS)


# y = Identity(x), a float [1] model: a session of it with runner.CPU_ENTRIES is the process's first (see flushing)
FIRST_MODEL = "CAc6OQoQCgF4EgF5IghJZGVudGl0eRIDZnR6Wg8KAXgSCgoICAESBAoCCAFiDwoBeRIKCggIARIECgIIAUIECgAQDQ=="


def flushes_denormals() -> bool:
    """Whether this thread flushes denormal results to zero (FTZ) and reads denormal inputs as zero (DAZ)."""
    smallest = np.array([1], np.uint32).view(np.float32)  # the least denormal, made without arithmetic
    return bool(smallest[0] * np.float32(1) == 0 and np.float32(1.1754944e-38) * np.float32(0.3) == 0)


@functools.cache
def _first_session() -> None:
    """onnxruntime sets the calling thread's FTZ and DAZ once, from the process's first session and with its value
    (a first one without the entry, onnxruntime's quantizer's, turned them off mid-run): one that asks for them, if
    none came before."""
    import base64

    import onnxruntime as ort

    opts = runner.options(1, log_level=4)
    ort.InferenceSession(base64.b64decode(FIRST_MODEL), opts, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def flushing():
    """This thread flushes denormals (FTZ and DAZ) in the block, as edgekit's sessions ask onnxruntime to
    (runner.CPU_ENTRIES) and as the latency figures are timed, and is then as it was found: an API call changes
    nothing of the caller's (onnxruntime sets the calling thread only from a process's first session, for good).
    x86 only: onnxruntime's setting does nothing on ARM. torch switches FTZ and DAZ together: a thread found with
    only one of them ends with neither."""
    if host.arch_of(platform.machine()) != "x86_64":
        yield
        return
    found = flushes_denormals()
    _first_session()
    if found:
        yield
        return
    import_whole("torch")  # signals held: a Ctrl-C in torch's start-up left it half-made
    import torch

    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def session(path: Path | str, providers=("CPUExecutionProvider",), threads: int = 1, optimized_path: str = "",
            exact_int8: bool = False, reuse: bool = False, capped: bool = True, entries: dict | None = None):
    """A session on the providers this host really has; returns (session, providers used).

    `threads`: 1 by default (golden vectors, `check`'s int8 parity); a timing's or the profile's count; or
    `host.work_threads()` for a float model's outputs (within a run, and `check`'s fp32 figures).

    `exact_int8` asks x86 MLAS for its non-saturating u8s8 kernels (`session.x64quantprecision`).
    `reuse`: the session already made for this file (unchanged since) with these options, if any; timing
    callers never reuse, since load time is one of their figures. `forget_sessions()` drops them.
    `capped`: runs share the arena of `memory_capped`; timings are not capped (their figures stay as measured).
    `entries`: config entries a package's runtime contract gives the file's session (check: an .ort's replay).
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(ort_log_level())
    available = set(ort.get_available_providers())
    used = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    if reuse and not optimized_path:
        stat = Path(path).stat()
        key = (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, tuple(used), threads, exact_int8,
               capped and host.run_memory(), tuple(sorted((entries or {}).items())))
        if key not in _REUSED:
            while len(_REUSED) >= MAX_REUSED:
                _REUSED.pop(next(iter(_REUSED)))
            _REUSED[key] = session(path, providers, threads, exact_int8=exact_int8, capped=capped, entries=entries)
        return _REUSED[key]
    config = {**({"session.x64quantprecision": "1"} if exact_int8 else {}), **(memory_capped() if capped else {}),
              **(entries or {})}
    try:  # an .ort runs its saved optimisations where onnxruntime can replay them, as the runtime contract says
        return runner.open_session(ort_path(path), threads, config, used, ort_log_level(), optimized_path), used
    except InputError:
        raise
    except Exception as e:
        # whole: onnxruntime's reason for refusing a model (an opset past its own) comes after its boilerplate
        raise StageError("onnxruntime load", f"{Path(path).name}: {first_line(e, LOAD_CAUSE)}") from e


def ort_path(path, shown=None) -> str:
    """`path` as onnxruntime takes it: a str it can encode as UTF-8 (a name with other bytes, from an archive or a
    folder from elsewhere, fails inside its constructor with a message about argument types). `shown`: the name
    the user knows it by (inside an archive), for the message."""
    text = str(path)
    if not_utf8(text):
        if (same := utf8_on_disk(text)) is not None:  # an ASCII locale's surrogates: the bytes onnxruntime takes
            return same
        raise InputError(f"{not_utf8(str(shown or path))!r}: not a UTF-8 path; onnxruntime cannot open it (rename the "
                         "file or folder)")
    return text


def forget_sessions() -> None:
    _REUSED.clear()


def int8_session(path: Path | str, providers=("CPUExecutionProvider",), threads: int = 1, exact: bool = True,
                 reuse: bool = False, entries: dict | None = None):
    """A session for an int8 model; returns (session, which kernels ran it, for the manifest).

    `exact`: compute int8 exactly, as an ARM device or a VNNI x86 host does. Only an x86 host without
    VNNI needs onnxruntime's exact-kernel option (its default u8s8 path saturates); onnxruntime 1.32
    refuses that option on some full-range u8s8 QDQ models, and then the host's default kernels are used
    and `kernels` says so: a host ISA never decides whether a model loads. `entries`: as `session`'s.
    """
    isa, saturates = host.int8_isa(), host.x86_saturates()
    ran = host.cpu_isa()  # EDGEKIT_HOST_ISA decides which session; the CPU's own kernels run it
    kernels = f"{HOST_DEFAULT} ({ran}{'' if host.cpu_saturates() else ': exact'})"
    if exact and saturates:
        try:
            return session(path, providers, threads, exact_int8=True, reuse=reuse, entries=entries)[0], \
                f"exact u8s8 (session.x64quantprecision=1; {host.isa_shown(isa, host.isa_source())} has no VNNI)"
        except StageError as e:
            log.info("exact-kernel session refused, using the host's default kernels: %s", e)
            kernels = f"{HOST_DEFAULT} ({ran}, may saturate): {EXACT_REFUSED} ({e})"
    return session(path, providers, threads, reuse=reuse, entries=entries)[0], kernels


_RUN_LIMIT: contextvars.ContextVar[tuple[float, str] | None] = contextvars.ContextVar("edgekit_run_limit",
                                                                                     default=None)


@contextlib.contextmanager
def runs_limited(seconds: float, raised_by: str = ""):
    """Each run of a model in the block (`run`) may take `seconds`; `raised_by` names the setting that raises it.
    Elsewhere the limit is config.DEFAULT_STEP_TIMEOUT."""
    token = _RUN_LIMIT.set((seconds, raised_by))
    try:
        yield
    finally:
        _RUN_LIMIT.reset(token)


def run_limit() -> tuple[float, str]:
    """The seconds a run may take here, and the setting that raises them ("" if none)."""
    from . import config

    return _RUN_LIMIT.get() or (config.DEFAULT_STEP_TIMEOUT, "")


def run(sess, names: list[str] | None, feed: dict, copy: bool = True, give_back: bool = True) -> list[np.ndarray]:
    """`sess.run`, ended by onnxruntime once it has taken longer than `run_limit()`: a model from others may
    behave on its first run (a bounded child's) and never end on another sample or batch size, and onnxruntime's
    run holds the main thread, deaf to Ctrl-C. Its outputs are copies (`copy`; an uncapped session's need none):
    onnxruntime's own arrays lie in the shared memory-capped arena (memory_capped), and kept (every validation
    sample's are), they held its blocks until 48 samples of a segmentation model's outputs filled it. `give_back`:
    the arena returns its free memory to the system after the run (GIVE_BACK; a hostile run's 3 GB stayed for the
    process's life); a series gives back after its last run: within it, freed blocks serve the next runs (samples of
    40, 16, 20 then 24 MB under a 64 MB cap failed when each run gave back: onnxruntime keeps what a session's first
    run took, and split the rest), and faulting memory in again cost 0.8 ms a run on ConvNeXt-style at 224x224."""
    import onnxruntime as ort

    from . import deadlines

    seconds, raised_by = run_limit()
    options = ort.RunOptions()
    if give_back:
        options.add_run_config_entry(*runner.GIVE_BACK)
    with deadlines.within(seconds, lambda: setattr(options, "terminate", True)):
        try:
            outputs = sess.run(names, feed, options)
            return [np.array(o, copy=True) for o in outputs] if copy else outputs
        except Exception:
            if options.terminate:
                raise StepTimeout("onnxruntime run", f"a run of the model {too_long(seconds, raised_by)}") from None
            raise


def run_onnx(sess, feeds: list[dict[str, np.ndarray]], data: str = "the data",
             give_back: bool = True) -> list[list[np.ndarray]]:
    """Each feed's outputs, the memory given back after the last (`give_back`: a rollout's steps are a series of
    their own); `data`: what the feeds are, for an index past a model's range."""
    try:
        return [run(sess, None, feed, give_back=give_back and i == len(feeds) - 1) for i, feed in enumerate(feeds)]
    except StageError:
        raise
    except Exception as e:
        raise run_error(first_line(e), data=data) from e


def stepper(sess):
    """A rollout's step (sequences.rollout): one run's outputs, the steps one series that gives no memory back."""
    return lambda feed: run_onnx(sess, [feed], give_back=False)[0]


def run_calibration(path, feeds: list[dict[str, np.ndarray]], reuse: bool = False, first: int = 0,
                    hint: str = "") -> None:
    """Each calibration sample run under the run limit and the memory cap before calibration runs it uncapped
    (quantization.minmax_ranges) and onnxruntime's histogram calibrators run it: their runs take no RunOptions, so
    none of them can be ended (a Loop sized by a sample's values hung there for good). The float model's outputs
    must be finite, as on validation: the calibrators' NaN-ignoring ranges left out a sample it diverged on, unsaid.
    `first`: the index of feeds[0] in the calibration data; `hint`: nonfinite_output's. Each sample's outputs are
    checked and dropped before the next runs: all of them held at once were 4096 samples' (16 GB of a segmentation
    model's), where streaming calibration holds one sample."""
    sess = session(path, threads=host.work_threads(), reuse=reuse)[0]
    names = [o.name for o in sess.get_outputs()]
    for i, feed in enumerate(feeds):
        try:
            outs = run_onnx(sess, [feed], "the calibration data", give_back=i == len(feeds) - 1)
        except StageError as e:
            raise StageError("calibration", e.message) from None
        nonfinite_output(names, outs, "calibration sample", first + i, hint)


def nonfinite_output(names: list[str], outputs, role: str, first: int = 0, hint: str = "") -> None:
    """Raises InputError naming the first float output that is NaN or Inf and its sample (`role`, e.g. "validation
    sample"): quantization and parity of such outputs mean nothing. `hint`: what to do, else the data's blame."""
    for i, out in enumerate(outputs, first):
        if bad := [n for n, o in zip(names, out) if o.dtype.kind == "f" and not np.isfinite(o).all()]:
            raise InputError(f"the float model's output {bad[0]!r} is NaN or Inf on {role} {i} (before any "
                             f"quantization): {hint or 'the model diverges on this data'}")


_ARENA_REFUSED = re.compile(r"Available memory of (\d+) is smaller than requested bytes of (\d+)")
_RUNNING = re.compile(r"while running (\w+) node")


TOO_BIG = "the model asks for more memory than this machine allows when run"
CAPPED = "of memory a run may use here"  # the words of a run refused by the cap (package_check looks for them)


def run_error(cause: str, step: str = "onnxruntime run", data: str = "the data") -> InputError | StageError:
    """A model's failed run: a graph that asks for more memory than a machine has or a run may use is the file's
    fault, an index past an embedding's rows the data's."""
    if refused := _ARENA_REFUSED.search(cause):
        node = f" (its {op.group(1)} node)" if (op := _RUNNING.search(cause)) else ""
        left, asked, limit = int(refused.group(1)), int(refused.group(2)), host.run_memory()
        taken = (f" with {gb(limit - left)} of it held (onnxruntime keeps what a session's first run took)"
                 if limit - left > left else "")
        return InputError(f"a run of the model{node} asked for {gb(asked)} at once, past the {gb(limit)} {CAPPED}"
                          f"{taken} ({host.RUN_MEMORY_ENV} raises it)")
    if "Failed to allocate memory" in cause:  # said once, though a bounded child already said it
        return InputError(cause if cause.startswith(TOO_BIG) else f"{TOO_BIG}: {cause}")
    if "out of data bounds" in cause:  # Gather's words: token ids past a vocabulary, say
        return InputError(f"{data} holds an index out of the model's range: {cause}")
    return StageError(step, cause)


def gb(n: int) -> str:
    """Bytes as EDGEKIT_RUN_MEMORY_MB counts them (MB of 2^20 bytes)."""
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


TORCH_BATCH = 64  # samples per torch call at most, for a model that keeps samples apart on its batch axis
TORCH_BATCH_BYTES = 2 << 20  # input bytes per call at most: bigger batches of big inputs run slower (memory-bound)


def run_torch(module, feeds, input_names: list[str]) -> list[list[np.ndarray]]:
    """The model's outputs for each feed. Feeds of one sample each (first dim 1 on every input) go through in
    batches of up to TORCH_BATCH_BYTES, as torch models are evaluated (one call a sample costs more than the
    model on small ones), when the model keeps them apart: every output has the batch's size first and the
    first two samples' outputs match their runs alone. Otherwise, and for any batch that does not run, one
    sample at a time."""
    import torch

    def one(i: int) -> list[np.ndarray]:
        return _run_torch_one(module, feeds[i], input_names, i)

    size = _batch_size(feeds, input_names)
    with torch.no_grad(), as_exported(), model_warnings_once():  # as exported: not torch's eval-mode fast path
        if size < 2:
            return [one(i) for i in range(len(feeds))]
        alone = [one(0), one(1)]
        results = _run_torch_batch(module, feeds[:size], input_names)
        if results is None or not all(a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5)
                                      for i in (0, 1) for a, b in zip(results[i], alone[i], strict=True)):
            return alone + [one(i) for i in range(2, len(feeds))]
        for start in range(size, len(feeds), size):
            rows = range(start, min(start + size, len(feeds)))
            results += _run_torch_batch(module, [feeds[i] for i in rows], input_names) or [one(i) for i in rows]
        return results


_WARNED: set[tuple] = set()  # the model's warnings shown by model_warnings_once, once each (as Python's default)


@contextlib.contextmanager
def model_warnings_once():
    """The model's warnings in the block, shown (once each) when it ran; dropped when it failed, as the one-line
    error says what went wrong (a forward indexing its tensor input by a str put torch's indexing warning first).
    Every edgekit call of the model goes through it: its catch_warnings resets Python's once-per-line registry, so
    a warning the export's example run showed itself was shown again by the reference run."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        yield
    for w in caught:
        if (key := (str(w.message), w.category, w.filename, w.lineno)) not in _WARNED:
            _WARNED.add(key)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _batch_size(feeds, input_names) -> int:
    """Samples per call: 1 (no batching) unless there are several feeds of one sample each."""
    if len(feeds) < 3 or any(np.shape(feeds[0][n])[:1] != (1,) for n in input_names):
        return 1
    sample = sum(np.asarray(feeds[0][n]).nbytes for n in input_names)
    return max(1, min(TORCH_BATCH, len(feeds), TORCH_BATCH_BYTES // max(1, sample)))


def _run_torch_batch(module, feeds, input_names) -> list[list[np.ndarray]] | None:
    """Per-sample outputs of one call on the feeds stacked on the batch axis; None when that does not run or
    an output does not keep the batch axis (the caller then runs them one at a time, with their own errors)."""
    import torch

    try:
        args = [torch.from_numpy(np.concatenate([np.asarray(f[n]) for f in feeds])) for n in input_names]
        outputs = [o.detach().numpy() for o in flatten_outputs(module(*args))]
    except (Exception, SystemExit):
        return None
    if not all(o.ndim and o.shape[0] == len(feeds) for o in outputs):
        return None
    return [[o[i:i + 1] for o in outputs] for i in range(len(feeds))]


def _run_torch_one(module, feed, input_names, i: int) -> list[np.ndarray]:
    import torch

    # copies: from_numpy shares the array, and a forward writing its input in place (x.mul_(2)) changed the
    # validation data the ONNX models then ran on, and an API caller's own arrays
    args = [torch.from_numpy(np.array(feed[n], order="C", copy=True)) for n in input_names]
    try:
        out = module(*args)
    except (Exception, SystemExit) as e:  # a forward calling sys.exit is bad input, not a verdict
        if why := takes_a_dict(module, input_names, args):
            raise InputError(why) from e
        shapes = ", ".join(f"{n}:{list(a.shape)}" for n, a in zip(input_names, args))
        raise InputError(f"model does not run on inputs {shapes} (sample {i}): "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{_dtype_hint(module, args)}"
                         f"{ids_hint(e, input_names, args)}{_channels_last_hint(module, input_names, args)}") from e
    return [o.detach().numpy() for o in flatten_outputs(out)]


def takes_a_dict(module, names, args=None) -> str:
    """Why a model cannot be fed ("" when it can): its forward takes its inputs as one dict (`forward(self, batch)`
    reading batch["x"]), where edgekit passes each input as a tensor, by position; the tensor indexed by a str was
    torch's "TypeError: new(): invalid data type 'str'". Said when forward's first parameter is annotated as a
    dict, or, given the failed call's `args`, when the model runs on them as a dict."""
    param = next(iter(forward_parameters(module)), None)
    if param is None or not (_is_dict_annotation(param.annotation) or args is not None and _runs_on_dict(
            module, dict(zip(names, args)))):
        return ""
    call = ", ".join(f"{n!r}: {n}" for n in names)
    return (f"the model's forward({param.name}) takes its inputs as one dict, which edgekit cannot feed (it passes "
            f"each input as a tensor, in order): export a wrapper whose forward(self, {', '.join(names)}) calls the "
            f"model with {{{call}}}")


def forward_parameters(module) -> list:
    """forward's positional parameters ([] where Python cannot read its signature)."""
    import inspect

    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return []
    return [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _is_dict_annotation(annotation) -> bool:
    """dict, Dict[...], Mapping[...], a TypedDict, or one of them as a string (`from __future__ import annotations`)."""
    import collections.abc
    import typing

    if isinstance(annotation, str):
        return re.fullmatch(r"(typing\.|collections\.abc\.)?(dict|Dict|Mapping|MutableMapping)(\[.*\])?",
                            annotation.strip()) is not None
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, (dict, collections.abc.Mapping))


def _runs_on_dict(module, feed: dict) -> bool:
    """Whether the model runs when its inputs come as one dict (its warnings and failure kept quiet: a probe)."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings(), torch.no_grad(), as_exported():
            warnings.simplefilter("ignore")
            module(feed)
    except (Exception, SystemExit):
        return False
    return True


def ids_hint(error: BaseException, names, args) -> str:
    """An nn.Embedding (or gather) fed ids declared float: torch's "'indices' ... Long, Int" named no input to
    declare otherwise. The float inputs are named, as torch does not say which one it was."""
    floats = [n for n, a in zip(names, args) if a.is_floating_point()]
    if "'indices'" not in str(error) or "Long" not in str(error) or not floats:
        return ""
    return (f" (ids, as an nn.Embedding takes, must be integers: declare the ids input int64, NAME:SHAPE:int64, and "
            f"give int64 data; declared float here: {', '.join(floats)})")


def _channels_last_hint(module, names, args) -> str:
    """Frames declared and given channels last (x:1x32x32x3) fail in the first Conv2d with torch's "expected input
    to have 3 channels, but got 32": say it is the layout, and how to give NCHW."""
    import torch

    first = next((m for m in module.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if first is None:
        return ""
    c = first.in_channels
    for name, a in zip(names, args):
        if a.ndim == 4 and a.shape[3] == c and a.shape[1] != c:
            return (f" (channels last, NHWC? the model's first Conv2d takes {c} channels on axis 1: give the data "
                    f"as array.transpose(0, 3, 1, 2) and declare {name!r} as Nx{c}x{a.shape[1]}x{a.shape[2]})")
    return ""


def _dtype_hint(module, args) -> str:
    """A float64 (or half) model fed float32 data reads as a broken model: say which dtypes meet. A half model is
    exported as it is once its inputs are declared float16 (the advice was only .float())."""
    held = {str(p.dtype).removeprefix("torch.") for p in module.parameters() if p.is_floating_point()}
    fed = {str(a.dtype).removeprefix("torch.") for a in args if a.is_floating_point()}
    if not held or not fed or held == fed:
        return ""
    advice = ("declare its float inputs :float16 (NAME:SHAPE:float16), or call .float() on it" if held == {"float16"}
              else "edgekit exports float32 models, so call .float() on it first")
    return f" (the model's parameters are {', '.join(sorted(held))}, its inputs {', '.join(sorted(fed))}: {advice})"


def flatten_outputs(out, at: str = "") -> list:
    """Tensors of a model's output in the order torch.onnx exports them: nested tuples/lists/dicts flattened. `at`:
    where `out` is in what the model returned (`[1]['n']`), for the error on what is not a tensor."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        items = [(f"{at}[{k!r}]", v) for k, v in out.items()]
    elif isinstance(out, (tuple, list)):
        items = [(f"{at}[{i}]", v) for i, v in enumerate(out)]
    else:
        raise InputError(_not_a_tensor(out, at))
    return [t for where, item in items for t in flatten_outputs(item, where)]


def _not_a_tensor(value, at: str) -> str:
    """A model's output that is not a tensor, named by where it is in what the model returned."""
    kind = "None" if value is None else type(value).__name__
    what = kind if value is None else f"{'an' if kind[0].lower() in 'aeiou' else 'a'} {kind}"
    where = f" at output{at}" if at else ""
    return (f"the model returned {what}{where}; edgekit handles tensors and tuples/lists/dicts of them"
            + (" (return a tensor there, or leave it out)" if at else ""))
