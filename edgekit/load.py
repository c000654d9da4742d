"""Turn a model source (`pkg.mod:fn`, `file.py:fn`, TorchScript, torch.export archive, .onnx) into a model."""
from __future__ import annotations

import logging
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError, UsageError, first_line
from . import structure
from .userfn import resolve_callable

if TYPE_CHECKING:  # onnx_export imports torch-side helpers: loaded when a stage needs it
    from .onnx_export import CheckedOnnx

log = logging.getLogger("edgekit")


@dataclass
class LoadedModel:
    """Either a torch module (to be exported) or an existing ONNX file (export skipped)."""

    source: str
    module: object = None  # torch.nn.Module in eval mode
    onnx_path: Path | None = None
    checked: CheckedOnnx | None = None  # onnx_path as checked: once checked: later stages take it, not the file
    program: object = None  # torch.export.ExportedProgram: exported as is, with the dynamo exporter
    warnings: tuple[str, ...] = ()  # what loading found (training mode): logged, and each target's report has them

    @property
    def is_onnx(self) -> bool:
        return self.onnx_path is not None


def load_model(source, weights: str | None = None, trust_checkpoint: bool = False,
               exporting: bool = False) -> LoadedModel:
    """`source` is a string (see the module docstring), a path, or (from the Python API) an nn.Module,
    which is copied: edgekit never changes the caller's module (eval mode, pruning). `exporting`: a model in
    training mode is warned of (prune, share and distill train it anyway)."""
    if not isinstance(source, (str, Path)):
        return _from_object(source, weights, trust_checkpoint, exporting)
    source = str(source)
    path = Path(source)
    if source.endswith(".onnx"):
        from .arrays import regular_file

        regular_file(path, f"model {source!r}")  # a FIFO was "no such file"
        if weights:
            raise UsageError("--weights does not apply to an .onnx model")
        return LoadedModel(source, onnx_path=path)
    import torch

    if source.endswith(".pt2") and ":" not in path.name:
        if weights:  # it carries its own: --weights was ignored, recorded as used
            raise UsageError("--weights does not apply to a torch.export (.pt2) program, which carries its weights")
        program = _load_archive(path, torch, trust_checkpoint)
        return LoadedModel(source, module=program.module(), program=program)
    if source.endswith((".pt", ".ts", ".torchscript")) and ":" not in path.name:
        module = _load_archive(path, torch, trust_checkpoint)
    else:
        module = resolve_callable(source, "model")()
        if not isinstance(module, torch.nn.Module):
            raise InputError(f"model {source!r} returned {type(module).__name__}, not a torch.nn.Module")
    return _ready(module, source, weights, torch, trust_checkpoint, exporting)


def _from_object(module, weights: str | None, trust_checkpoint: bool, exporting: bool) -> LoadedModel:
    import copy

    import torch

    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"model: expected an nn.Module, a source string or a path, not {type(module).__name__}")
    try:
        module = copy.deepcopy(module)
    except Exception as e:  # e.g. weight_norm after a forward pass
        raise UsageError(f"model: this {type(module).__name__} cannot be copied ({type(e).__name__}); pass its "
                         "source instead (pkg.mod:fn or file.py:fn)") from e
    return _ready(module, None, weights, torch, trust_checkpoint, exporting)


def _uncompiled(module, torch):
    """torch.compile's wrapper's module; only torch's own (a user's class of that name computes its own forward)."""
    compiled = sys.modules.get("torch._dynamo.eval_frame")  # loaded by torch.compile: importing it costs 0.8 s
    inner = getattr(module, "_orig_mod", None) if compiled and isinstance(module, compiled.OptimizedModule) else None
    return inner if isinstance(inner, torch.nn.Module) else module


def _ready(module, source: str | None, weights: str | None, torch, trust_checkpoint: bool,
           exporting: bool = False) -> LoadedModel:
    """Weights loaded, eval mode, finite: NaN/Inf weights make every parity figure meaningless (SQNR 200 dB
    of NaN vs NaN), so they are bad input. `source` None: a Python object, named by its class."""
    # torch.compile's wrapper computes its module's function: exported, it failed in torch's tracer (exit 4), from
    # a file source as from the API
    module = _uncompiled(module, torch)
    source = source or f"{type(module).__module__}.{type(module).__qualname__} (a Python object)"
    if weights:
        load_weights(module, weights, torch, trust_checkpoint)
    # said, not done silently: it computed otherwise as given. Not with weights: a fresh architecture (in training
    # mode as built) given a state dict is the documented way, and eval mode the only one that makes sense for it
    said = ()
    if exporting and not weights and (changed := next(_by_mode(module, torch), None)):
        name, layer = changed
        does = "drops nothing" if isinstance(layer, torch.nn.modules.dropout._DropoutNd) else \
            "normalises with its running statistics"
        said = (f"model {source!r} is in training mode: edgekit runs it in eval mode, as it is deployed (its "
                f"{type(layer).__name__} {name!r} then {does})",)
        log.warning("%s", said[0])  # and in the report's warnings: the log alone reached no manifest or CI job
    module.eval()
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if isinstance(tensor, torch.nn.parameter.UninitializedTensorMixin):  # a Lazy layer never run
            raise InputError(f"model {source!r}: {name!r} is not initialised yet (a Lazy layer): run the model once "
                             "on an example input before exporting it")
        if tensor.is_meta:
            raise InputError(f"model {source!r}: {name!r} is on the meta device (no values): load or materialise "
                             "its weights first (module.to_empty(device='cpu') and a state dict)")
    if corrupt := next(_corrupt_tensors(module, torch), None):
        raise InputError(f"model {source!r}: {corrupt}")
    return LoadedModel(source, module=module, warnings=said)


def _corrupt_tensors(module, torch):
    """What is wrong with each corrupt tensor of `module`: NaN anywhere; an infinity in a parameter, or in a norm's
    running statistics. Training never makes a weight infinite (it diverges to NaN, or a conversion broke it) and
    every output such a weight reaches is Inf or NaN, which no parity figure can score. An infinity in any other
    buffer is a mask (a causal mask registered as torch.full(-inf).triu(1)), which ONNX and onnxruntime run as
    torch does."""
    norms = [prefix for prefix, layer in module.named_modules()
             if isinstance(layer, torch.nn.modules.batchnorm._NormBase)]
    statistics = {f"{prefix}.{stat}".lstrip(".") for prefix in norms for stat in ("running_mean", "running_var")}
    buffers = {name for name, _ in module.named_buffers()}
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
            continue
        kind = "buffer" if name in buffers else "weight"
        if bool(torch.isnan(tensor).any()):
            yield f"{kind} {name!r} holds NaN values"
        elif name not in buffers or name in statistics:
            yield f"{kind} {name!r} holds infinite values (no trained weight or running statistic is infinite)"


def _by_mode(module, torch):
    """(name, layer) of torch's layers in training mode that compute otherwise in eval mode: dropout, and norms
    keeping running statistics (a model returned without .eval() but with neither is the same in both)."""
    for name, layer in module.named_modules():
        if layer.training and (isinstance(layer, torch.nn.modules.dropout._DropoutNd) and layer.p > 0 or isinstance(
                layer, torch.nn.modules.batchnorm._NormBase) and layer.track_running_stats):
            yield name, layer


MAX_WEIGHTS_BYTES = 8 << 30  # a 2 GiB model (the largest one .onnx file holds) with Adam's two moments
CODE_CARRIERS = {
    ".pt2": "a torch.export archive: loading it unpickles entries (use_pickle weights, sample inputs, custom objects) "
            "and evaluates expressions and guards stored in it",
    ".pt": "a TorchScript archive is a program: its __setstate__ and methods run inside torch.jit.load",
}


def _load_archive(path: Path, torch, trusted: bool):
    """TorchScript and torch.export archives carry code: loaded only when the user vouches for the file."""
    from .arrays import regular_file

    if path.exists():
        regular_file(path, f"model {str(path)!r}")  # a FIFO or a folder was "no such file"
    else:
        raise InputError(f"model {str(path)!r}: no such file")
    exported = path.suffix == ".pt2"
    if not trusted:
        why = CODE_CARRIERS[".pt2" if exported else ".pt"]
        raise InputError(f"model {str(path)!r} can run code when loaded ({why}); pass --trust-checkpoint only if you "
                         "trust this file, or export from MODULE:FUNCTION with --weights (weights_only loading)")
    try:
        return torch.export.load(str(path)) if exported else torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        what = (f"torch.export archive ({type(e).__name__}: {e})" if exported else f"TorchScript archive "
                f"({type(e).__name__}); a state dict goes with --weights and a MODULE:FUNCTION source")
        raise InputError(f"model {str(path)!r}: not a {what}") from e


def _bounded_checkpoint(weights: str) -> None:
    """torch.save's zip archive unpacks to at most MAX_WEIGHTS_BYTES: a 3 MB re-zipped (deflated) file took
    3.2 GB of memory before its contents were refused."""
    if not zipfile.is_zipfile(weights):
        return  # the legacy format: read as the bytes it holds
    try:
        with zipfile.ZipFile(weights) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise InputError(f"weights {weights!r} cannot be loaded: {first_line(e)}") from e
    if unpacked > MAX_WEIGHTS_BYTES:
        raise InputError(f"weights {weights!r}: unpacks to {unpacked:,} bytes, over edgekit's {MAX_WEIGHTS_BYTES:,} "
                         "(a 2 GiB model's training checkpoint)")


def _is_torchscript(weights: str) -> bool:
    """torch.jit.save's zip layout (constants.pkl, code/), which torch.save's lacks."""
    try:
        with zipfile.ZipFile(weights) as z:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _expanded_tensors(state, torch, depth: int = 0):
    """Names of tensors whose values outnumber their storage's (expanded views): weights_only loads them, and a
    157 KB file then took 15.5 GB once a layer was resized to it."""
    if depth > 8:
        return
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    for key, value in items:
        if isinstance(value, torch.Tensor):  # a sparse one has no storage of its own to compare (exit 5)
            if value.layout == torch.strided and (value.numel() * value.element_size()
                                                  > value.untyped_storage().nbytes()):
                yield str(key)
        else:
            yield from (f"{key}.{name}" for name in _expanded_tensors(value, torch, depth + 1))


def load_weights(module, weights: str, torch, trust_checkpoint: bool = False) -> None:
    """Load a state dict (or a checkpoint dict with `state_dict`) without running pickled code; the layers an
    `edgekit share` file says it shared are marked so (sharing.mark).

    `torch.load(weights_only=True)` unpickles only tensors and plain containers; anything else is
    refused before it runs. `trust_checkpoint` (the --trust-checkpoint flag) lifts that for files the
    user vouches for.
    """
    from .arrays import regular_file

    regular_file(Path(weights), f"weights {weights!r}")  # a folder was "no such file"
    _bounded_checkpoint(weights)
    if _is_torchscript(weights):  # torch.load warned, printed its own source line, and was cut mid-word
        raise InputError(f"weights {weights!r} is a TorchScript archive, not a state dict: give it as the model (with "
                         "--trust-checkpoint) or save model.state_dict()")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=not trust_checkpoint)
    except Exception as e:
        with open(weights, "rb") as f:  # torch.save writes a zip archive, or (before 1.6) a pickle: b"\x80" first
            saved = f.read(4) in (b"PK\x03\x04", b"PK\x05\x06") or f.seek(0) == 0 and f.read(1) == b"\x80"
        if not saved:  # garbage was told to pass --trust-checkpoint, and torch's words say weights_only=False
            raise InputError(f"weights {weights!r} cannot be loaded: not a torch.save file (neither a zip archive "
                             "nor a pickle)") from e
        if trust_checkpoint or not isinstance(e, pickle.UnpicklingError):  # a text file said only "101"
            raise InputError(f"weights {weights!r} cannot be loaded as a torch.save file "
                             f"({type(e).__name__}: {first_line(e)})") from e
        try:  # a static scan of the pickle: names what unpickling would have called, runs nothing
            unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(weights))
        except Exception:  # not a torch.save zip archive (garbage, pre-1.6 format)
            unsafe = []
        why = (f"it references {', '.join(unsafe)}, which unpickling would run" if unsafe else
               f"not a plain tensor checkpoint ({type(e).__name__})")
        raise InputError(f"weights {weights!r} refused by weights_only loading: {why}; "
                         "pass --trust-checkpoint only if you trust this file") from e
    if undeclared := next(_expanded_tensors(state, torch), None):
        raise InputError(f"weights {weights!r}: tensor {undeclared} declares more values than the file stores "
                         "(a stride-0 view): filling it would take memory the file never held")
    if structure.is_pruned_checkpoint(state):
        try:
            structure.resize(module, state["layers"], state["state_dict"])
        except (ValueError, TypeError, AttributeError) as e:
            raise InputError(f"weights {weights!r}: {first_line(e)}") from e
    layers = (state.get("edgekit_share") or {}).get("layers") if isinstance(state, dict) else None
    shared = tuple(n for n in layers if isinstance(n, str)) if isinstance(layers, list) else ()
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"weights {weights!r}: expected a state dict, found {type(state).__name__}")
    try:
        keys = module.load_state_dict(state, strict=False)  # shape mismatches still raise
    except RuntimeError as e:
        raise InputError(f"weights {weights!r} do not fit the model: {str(e).strip().splitlines()[-1].strip()}") from e
    if keys.missing_keys or keys.unexpected_keys:
        def short(names):
            names = sorted(names)
            return ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "") or "none"
        raise InputError(f"weights {weights!r} do not fit the model: missing {short(keys.missing_keys)}, "
                         f"unexpected {short(keys.unexpected_keys)}")
    if shared:
        from .sharing import mark

        mark(module, shared)
