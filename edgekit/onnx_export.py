"""torch → ONNX at a target's opset, then onnx's checker and onnxruntime's quantization pre-processing."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import logging
import math
import os
import re
import shutil
import stat
import sys
import warnings
from pathlib import Path

import numpy as np

from .config import DEFAULT_STEP_TIMEOUT, InputSpec
from .errors import InputError, InternalError, StageError, UsageError, disk_full, first_line, plain
from .torch_paths import as_exported

log = logging.getLogger("edgekit")

ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16"}


def example_inputs(specs: tuple[InputSpec, ...], torch, sizes: dict[str, int] | None = None):
    """Tracing inputs: small non-negative integers for integer inputs (ids, masks), noise for floats; `sizes`:
    the named axes' (trace_sizes), else 2."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for spec in specs:
        dtype, shape = getattr(torch, spec.dtype), spec.example_shape(sizes)
        if dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen).to(dtype))
        elif dtype == torch.bool:
            out.append(torch.ones(shape, dtype=dtype))
        else:
            out.append(torch.randint(0, 2, shape, generator=gen).to(dtype))
    return tuple(out)


def trace_sizes(specs: tuple[InputSpec, ...], feed: dict) -> dict[str, int]:
    """The named axes' sizes in a sample of the data, 2 where it has 1 (a size of 1 is specialised away): traced at
    2 throughout, a Conv1d of kernel 5 over a dynamic time axis could not be exported at all."""
    sizes: dict[str, int] = {}
    for spec in specs:
        if spec.name in feed and len(feed[spec.name].shape) == len(spec.shape):
            for d, n in zip(spec.shape, feed[spec.name].shape):
                if isinstance(d, str):
                    sizes.setdefault(d, max(2, int(n)))
    return sizes


def in_forward_order(module, specs: tuple[InputSpec, ...]) -> None:
    """Inputs go to `forward` by position, so one named as a parameter of it must be in that parameter's place:
    `forward(left, right)` declared as right, left was exported with `right` feeding `left`, and passed parity.
    A forward whose first parameter is annotated as a dict cannot be fed at all: said before it runs."""
    from .runtime import forward_parameters, takes_a_dict

    if why := takes_a_dict(module, [s.name for s in specs]):
        raise InputError(why)
    if why := _keyword_only(module, specs):
        raise InputError(why)
    params = [p.name for p in forward_parameters(module)]  # none: a forward without a signature Python can read
    for i, spec in enumerate(specs):
        if spec.name in params and (at := params.index(spec.name)) != i:
            raise UsageError(f"input {spec.name!r} is given {_nth(i)}, but it is the {_nth(at)} parameter of the "
                             f"model's forward({', '.join(params)}): inputs are passed by position, so give its "
                             "parameters in that order from the first, none skipped")


def _keyword_only(module, specs: tuple[InputSpec, ...]) -> str:
    """Why edgekit cannot call a forward with a required keyword-only parameter (`forward(self, *, x)`), else "":
    inputs go by position, and Python's "takes 1 positional argument but 2 were given" named neither."""
    import inspect

    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return ""
    keyword = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    if not keyword:
        return ""
    names = [s.name for s in specs]
    call = ", ".join(f"{k}={k if k in names else '...'}" for k in keyword)
    return (f"the model's forward takes {', '.join(map(repr, keyword))} by keyword only, and edgekit passes its "
            f"inputs ({', '.join(names)}) by position: export a wrapper whose forward(self, {', '.join(names)}) "
            f"calls the model as model({call})")


def _nth(i: int) -> str:
    return {0: "first", 1: "second", 2: "third"}.get(i, f"{i + 1}th")


def run_example(module, specs: tuple[InputSpec, ...], args: tuple):
    """The model's outputs on example inputs `args` made for `specs`: a model that fails on them is bad input."""
    import torch

    from .runtime import model_warnings_once

    in_forward_order(module, specs)
    try:
        with torch.no_grad(), as_exported(), model_warnings_once():
            return module(*args)
    except (Exception, SystemExit) as e:  # a forward calling sys.exit is bad input: from the API it exited 0
        from .runtime import ids_hint, takes_a_dict

        if dict_input := takes_a_dict(module, [s.name for s in specs], args):
            raise InputError(dict_input) from e
        why = f"sys.exit({e.code!r})" if isinstance(e, SystemExit) else f"{type(e).__name__}: {first_line(e)}"
        raise InputError(f"model does not run on inputs {', '.join(map(str, specs))}: {why}"
                         f"{ids_hint(e, [s.name for s in specs], args)}") from e


def export_torch(module, specs: tuple[InputSpec, ...], output_names: tuple[str, ...], opset: int,
                 dest: Path, exporter: str = "torchscript", notes: list[str] | None = None,
                 sizes: dict[str, int] | None = None) -> Path:
    """Export to one self-contained .onnx file with named IO and dynamic axes. `notes` gets what the tracer
    warned of: a branch or a size it froze (`if x.max() > 1.5:` traced on noise failed parity with no word)."""
    import torch

    args = example_inputs(specs, torch, sizes)
    runnable = module.module() if isinstance(module, torch.export.ExportedProgram) else module
    outputs = run_example(runnable, specs, args)
    from .runtime import flatten_outputs

    n_out = len(flatten_outputs(outputs))
    if not n_out:  # else torch wrote a graph without outputs, and onnxruntime failed on it ("has no inputs")
        raise InputError(f"the model returns no outputs (its forward returned {str(outputs)[:60]}): nothing to export")
    if isinstance(outputs, dict) and (odd := next((k for k in outputs if not isinstance(k, str)), None)) is not None:
        raise InputError(f"the model returns a dict with the key {odd!r}: ONNX names its outputs, so the keys must "
                         "be strings")
    keys = _dict_keys(outputs)
    names = list(output_names) or keys or (["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)])
    if len(names) != n_out:
        raise InputError(f"model has {n_out} outputs but {len(names)} output names were given")
    if not output_names and keys and (odd := next((k for k in keys if not k.strip() or k in {s.name for s in specs}),
                                                  None)) is not None:
        why = "empty" if not odd.strip() else "an input has that name"
        raise UsageError(f"the model's output key {odd!r} cannot name an output ({why}): name the outputs with "
                         "--output-name")
    if keys and (moved := [n for i, n in enumerate(names) if n in keys and keys[i] != n]):
        raise UsageError(f"output name {moved[0]!r} is the model's dict key for output {keys.index(moved[0])}, not "
                         f"{names.index(moved[0])}: the outputs come in the dict's order {keys} (give the names "
                         "in that order, or none)")
    dynamic_axes = {s.name: s.dynamic_axes for s in specs if s.dynamic_axes}
    if dynamic_axes and specs[0].dynamic_axes.get(0):
        dynamic_axes.update({n: {0: specs[0].dynamic_axes[0]} for n in names})
    try:
        # traced as the reference runs: a frozen model's nn.TransformerEncoder otherwise traced torch's fast path,
        # whose nested tensors have no ONNX op
        with warnings.catch_warnings(record=True) as caught, _quiet("torch"), as_exported():
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", torch.jit.TracerWarning)
            plain = _without_parametrizations(module, torch)
            if exporter == "dynamo":
                _export_dynamo(torch, plain, args, specs, names, opset, dest)
            else:
                with _given_arguments_only(plain, len(args)), _fd1_held() as printed:
                    torch.onnx.export(plain, args, str(dest), input_names=[s.name for s in specs],
                                      output_names=names, opset_version=opset, dynamic_axes=dynamic_axes or None,
                                      dynamo=False, do_constant_folding=True)
                if printed:  # C++ output of a successful trace (a custom op printing, say): shown as before
                    os.write(1, printed)
    except InputError:
        raise
    except Exception as e:
        raise StageError("export", _explain_export_error(e, exporter)) from e
    if notes is not None:
        # torch's own layers check their inputs in Python (nn.GRU's: a TracerWarning on every export), as
        # transformers' do: warnings from the model's own code only
        libraries = [Path(m.__file__).parent for name in ("torch", "transformers") if (m := sys.modules.get(name))]
        said = list(dict.fromkeys(first_line(w.message, 300).split(". ")[0] for w in caught
                                  if not any(Path(w.filename).is_relative_to(d) for d in libraries)))
        notes += [f"the tracer warned: {m} (the exported graph keeps only what the trace took on edgekit's random "
                  "example inputs; torch.where or torch.cond keeps both branches)" for m in said[:3]]
    check(dest)
    return dest


def _without_parametrizations(module, torch):
    """A copy of `module` (in eval mode) with each parametrized weight (spectral_norm, weight_norm, orthogonal) as
    the plain tensor its parametrization computes, or `module` itself when it has none. Exported as is,
    spectral_norm's torch.vdot has no ONNX op (exit 4); in eval mode the parametrization is a fixed function of its
    tensors, so the copy computes the same outputs (bit for bit), and parity is still measured against `module`."""
    parametrize = torch.nn.utils.parametrize
    if isinstance(module, torch.export.ExportedProgram) or not any(map(parametrize.is_parametrized, module.modules())):
        return module
    import copy

    try:
        plain = copy.deepcopy(module)
    except Exception:  # exported as is: torch names what fails
        return module
    for layer in [m for m in plain.modules() if parametrize.is_parametrized(m)]:
        try:
            with torch.no_grad():
                values = {name: getattr(layer, name).detach().clone() for name in layer.parametrizations}
        except Exception as e:  # the model's own code
            raise InputError(f"a parametrization of {type(layer).__bases__[0].__name__}'s "
                             f"{', '.join(layer.parametrizations)} failed to compute its weight: {type(e).__name__}: "
                             f"{first_line(e)}") from e
        # not remove_parametrizations: it deletes the weight's property from the class the copy shares with `module`
        layer.__class__ = layer.__class__.__bases__[0]
        del layer.parametrizations
        for name, value in values.items():
            layer.register_parameter(name, torch.nn.Parameter(value, requires_grad=False))
    log.info("parametrized weights (%s) exported as the tensors they compute in eval mode",
             ", ".join(f"{n}.{w}" for n, m in module.named_modules() if parametrize.is_parametrized(m)
                       for w in m.parametrizations))
    return plain


@contextlib.contextmanager
def _fd1_held():
    """What is written to file descriptor 1 in the block, as bytes (filled when it ends): torch's TorchScript exporter
    prints the model's whole IR graph there (C++ stdout, 9 KB) when it fails, onto the user's stdout. Python's own
    prints (the model's forward while traced: the user's) still reach stdout as they are made, as in the model's
    other runs: held, they came after the export, and not at all when it failed, where they are wanted most."""
    import ctypes
    import tempfile

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    held = bytearray()
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(1)
        os.dup2(tmp.fileno(), 1)
        try:
            with contextlib.redirect_stdout(_ToFd(saved, sys.stdout)) if _on_fd1(sys.stdout) else \
                    contextlib.nullcontext():
                yield held
        finally:
            sys.stdout.flush()
            libc.fflush(None)  # C stdio buffers a file: written out before fd 1 is given back
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            held += tmp.read()
            if held:
                log.debug("fd 1 while exporting:\n%s", held.decode(errors="replace"))


def _on_fd1(stream) -> bool:
    """The stream writes to file descriptor 1 (a script's sys.stdout; a notebook's is its kernel's, not fd 1)."""
    try:
        return stream is not None and stream.fileno() == 1
    except (AttributeError, OSError, ValueError):
        return False


class _ToFd:
    """sys.stdout while fd 1 is held: Python's text written at once to the descriptor fd 1 was (`fd`)."""

    def __init__(self, fd: int, stream):
        self.fd, self.stream = fd, stream

    def write(self, text: str) -> int:
        data = text.encode(getattr(self.stream, "encoding", None) or "utf-8", errors="replace")
        while data:
            data = data[os.write(self.fd, data):]
        return len(text)

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self.fd

    def __getattr__(self, name):  # encoding, isatty ...: the stream's
        return getattr(self.stream, name)


@contextlib.contextmanager
def _given_arguments_only(module, given: int):
    """torch's TorchScript exporter appends the defaults of `forward`'s other parameters to the inputs
    (`forward(x, scale=2.0)` exported a float64 input `onnx::Cast_1`): a forward taking the given arguments only
    keeps them the defaults they are, and the module (its names too) as it is."""
    import inspect

    import torch

    try:
        params = [] if isinstance(module, torch.jit.ScriptModule) else list(  # a ScriptModule: torch's own way
            inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError, AttributeError):
        params = []
    if len(params) <= given or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params[:given]):
        yield
        return
    bound, own = module.forward, module.__dict__.get("forward")
    module.forward = lambda *args, **kwargs: bound(*args, **kwargs)  # a pre-hook's keyword arguments too
    try:
        yield
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own


@contextlib.contextmanager
def _quiet(name: str):
    """Only the errors of logger `name`: the dynamo exporter logs its steps as warnings on stderr (each torchvision
    op it skips, the opset it picked instead: the manifest records the one the file has)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _dict_keys(outputs) -> list[str] | None:
    """The names a model's dict (or namedtuple) of outputs gives them, in the order they are exported, a nested one
    by its path (`extra.0`, `extra.1`: they were dropped, output_0, output_1...); None if two paths read alike. A
    tuple holding a dict names its items output_0, output_1..., as a tuple's are, and what they hold by its path
    below (`output_1.value`: a dict in a tuple was output_1, output_2, its keys dropped)."""
    if isinstance(outputs, (tuple, list)) and not _is_namedtuple(outputs) and _holds_keys(outputs):
        outputs = {f"output_{i}": v for i, v in enumerate(outputs)}
    if not isinstance(outputs, dict) and not _is_namedtuple(outputs):
        return None

    def paths(value, at: str) -> list[str]:
        if _is_namedtuple(value):
            value = value._asdict()
        if isinstance(value, dict):
            return [p for k, v in value.items() for p in paths(v, f"{at}.{k}" if at else str(k))]
        if isinstance(value, (tuple, list)):
            return [p for i, v in enumerate(value) for p in paths(v, f"{at}.{i}")]
        return [at]

    names = paths(outputs, "")
    return names if len(set(names)) == len(names) else None


def _holds_keys(value) -> bool:
    """Whether a dict or namedtuple is anywhere in these (nested) outputs."""
    if isinstance(value, dict) or _is_namedtuple(value):
        return True
    return isinstance(value, (tuple, list)) and any(_holds_keys(v) for v in value)


def _is_namedtuple(value) -> bool:
    return isinstance(value, tuple) and hasattr(value, "_fields")


def _export_dynamo(torch, module, args, specs, names, opset, dest):
    dims = {}
    shapes = tuple({axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in s.dynamic_axes.items()}
                   or None for s in specs)
    if isinstance(module, torch.export.ExportedProgram):
        shapes = None  # an exported program carries its own dynamic shapes
    else:
        shapes = _shapes_by_parameter(module, shapes)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):  # a failed torch.export prints its partial graph (35 lines)
            program = torch.onnx.export(module, args, input_names=[s.name for s in specs], output_names=names,
                                        opset_version=opset, dynamo=True, dynamic_shapes=shapes,
                                        external_data=False, verbose=False)
    finally:
        if printed.getvalue():
            log.debug("torch.export printed:\n%s", printed.getvalue())
    if opset < 18:  # repaired before it is written, not written, read and written again
        import onnx

        onnx.save(_split_for_opset(program.model_proto), str(dest))
    else:
        program.save(str(dest), external_data=False)


def _shapes_by_parameter(module, shapes: tuple) -> tuple:
    """torch.export matches dynamic_shapes to forward's parameters, not to the inputs: a `forward(self, *args)`
    (image_uint8's pixel wrapper) takes all its inputs in one parameter, so their shapes go in one tuple, else
    torch fails with "mismatch between the structure of `inputs` and `dynamic_shapes`"."""
    import inspect

    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):  # a forward inspect cannot read: the shapes as they were
        return shapes
    star = next((i for i, p in enumerate(params) if p.kind is p.VAR_POSITIONAL), None)
    if star is None or star > len(shapes):
        return shapes
    return (*shapes[:star], tuple(shapes[star:]))


def _split_for_opset(model):
    """torch's dynamo exporter writes opset 18 and converts down, leaving Split-18's `num_outputs` attribute in an
    opset 13-17 graph (torch 2.13, onnxscript 0.7: onnx's checker refuses it; every chunk() model failed). Without
    its `split` input, Split-13 splits equally into its outputs, as num_outputs does when the size divides; one that
    does not divide fails the checker, as before. Returns `model`, changed in place."""
    for node in all_nodes(model.graph):
        if node.op_type == "Split" and node.domain in ("", "ai.onnx") and len(node.input) == 1:
            kept = [a for a in node.attribute if a.name != "num_outputs"]
            del node.attribute[:]
            node.attribute.extend(kept)
    return model


def _explain_export_error(e: Exception, exporter: str = "torchscript") -> str:
    if "data-dependent" in str(e):  # torch.export's: its first line only said "Failed to export ... Next steps:"
        return ("torch.export cannot follow a branch or size taken from a tensor's values (`if x.max() > 1.5:`): "
                "torch.cond or torch.where in the model, or, for a Python source, --exporter torchscript (which "
                "keeps the branch it traced)")
    from torch.onnx.errors import OnnxExporterError

    if exporter == "dynamo" and (dispatch := _dynamo_op(e)):
        return f"op {dispatch[0]} cannot be exported by the dynamo exporter ({dispatch[1]})"
    found = re.search(r"(aten::[A-Za-z0-9_.]+|prim::[A-Za-z0-9_]+|[A-Za-z0-9_]+::[A-Za-z0-9_.]+)", str(e))
    op = _symbolic_op(e) or (found.group(1) if found else "")
    if not op:
        return f"{type(e).__name__}: {first_line(e)}"
    said = f"op {op} cannot be exported ({_first_sentence(e)})"
    if exporter == "torchscript" and isinstance(e, OnnxExporterError) and _dynamo_available():
        said += ": try --exporter dynamo (torch.export, which exports more ops)"
    return said


def _dynamo_op(e: Exception) -> tuple[str, str] | None:
    """The op the dynamo exporter could not convert and why (aten::_linalg_svd, "No decompositions ..."): named
    only in its summary, after "Failed to convert ... Next steps:" (the first line, all that was shown)."""
    text = str(e)
    found = re.search(r"No ONNX function found for <OpOverload\(op='(\w+)\.(\w+)'"
                      r"|Error when translating node [^\n]*?target=torch\.ops\.(\w+)\.(\w+)", text)
    if not found:
        return None
    namespace, name = found.group(1, 2) if found.group(1) else found.group(3, 4)
    why = re.search(r"Failure message: ([^\n]+)", text)
    why = why.group(1).strip() if why else "no ONNX function for it" if found.group(1) else "its conversion failed"
    return f"{namespace}::{name}", why if len(why) <= 200 else why[:200].rsplit(" ", 1)[0] + " ..."


def _symbolic_op(e: Exception) -> str:
    """The torch op whose ONNX symbolic raised `e` ("aten::stft"): its message named only a node the symbolic had
    made (onnx::Reshape), or none."""
    tb = e.__traceback__
    while tb is not None:
        node = tb.tb_frame.f_locals.get("node") if tb.tb_frame.f_code.co_name == "_run_symbolic_function" else None
        if node is not None and hasattr(node, "kind"):
            return node.kind()
        tb = tb.tb_next
    return ""


def _first_sentence(e: Exception, limit: int = 200) -> str:
    """The cause as torch said it, whole words only: cut at 200 characters, it ended mid-word in a node's dump."""
    text = re.split(r"\. |\s\[Caused by", first_line(e, 10_000))[0].strip()
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _dynamo_available() -> bool:
    """torch's dynamo exporter needs onnxscript."""
    import importlib.util

    return importlib.util.find_spec("onnxscript") is not None


def checker_said(e: Exception, limit: int = 300) -> str:
    """onnx's checker's message on one line: it prints a node inside its sentence, over lines ("input 'y0' of node:
    \nname: if OpType: If\n is not output of any previous nodes."), whose first line alone ended mid-sentence."""
    return " ".join(plain(str(e)).split())[:limit] or type(e).__name__


def check(path: Path) -> None:
    """onnx's full checker (with shape inference); an invalid graph is a toolchain failure."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        first = checker_said(e)
        twice = re.search(r"'([^']*)' has been used as output names multiple times", first)
        if twice and twice.group(1) in {o.name for o in onnx.load(str(path), load_external_data=False).graph.output}:
            first += " (an output name collides with an internal tensor name: choose another --output-name)"
        raise StageError("onnx check", first) from e


def _one_size_an_axis(inputs, shapes: dict[str, tuple]) -> None:
    """An axis the file names for several inputs is one size in all: --input x:1x4 --input y:Nx4 fixed y's N too,
    silently; x:1x4 with y:2x4 was told "the model fixes it to 1". Refused naming both inputs (exit 2)."""
    given: dict[str, tuple[str, int | str]] = {}
    for v in inputs:
        dims, sizes = v.type.tensor_type.shape.dim, shapes.get(v.name)
        for dim, size in zip(dims, sizes or ()) if sizes is not None and len(sizes) == len(dims) else ():
            if not dim.dim_param or dim.HasField("dim_value"):
                continue
            first = given.setdefault(dim.dim_param, (v.name, size))
            if first[1] != size and (isinstance(first[1], int) or isinstance(size, int)):
                raise UsageError(f"--input: the model's axis {dim.dim_param!r} is input {first[0]!r}'s and "
                                 f"{v.name!r}'s, given {first[1]} and {size}: one axis takes one size (a number "
                                 "fixes it in both, a name keeps it dynamic in both)")


def shaped_inputs(model, shapes: dict[str, tuple], label: str, sized: dict[str, tuple[int, ...]] | None = None) -> bool:
    """Write --input's sizes (`shapes`) into the graph's inputs, as a torch source's export does: a number given for
    an axis the file leaves dynamic fixes it (graph-wide, its outputs too), so the shipped models and their manifest
    say one shape; a name keeps the axis dynamic; a number unlike one the file fixes is refused (exit 2). An input
    the file gives no shape at all (onnxruntime runs it; onnx's checker refused the file with "Field 'shape' of
    'type' is required", naming no tensor) takes its whole shape; one without is refused by name, as is an output
    of no shape. An input whose rank differs is left for the caller to refuse. Whether any size was set; `sized`
    gets each input's axes the file leaves variable that --input sized, so errors say whose sizes they are."""
    from onnxruntime.tools.onnx_model_utils import make_dim_param_fixed

    init = {t.name for t in model.graph.initializer}
    tensors = {i: v for i, v in enumerate(model.graph.input)
               if v.name not in init and v.type.WhichOneof("value") == "tensor_type"}  # by index, as io_specs names
    variable = {v.name: _variable_axes(v) if v.type.tensor_type.HasField("shape") else  # a bare input: all of it
                tuple(range(len(shapes.get(v.name, ())))) for v in tensors.values()}
    bare = [v for v in tensors.values() if not v.type.tensor_type.HasField("shape")]
    if missing := next((v.name for v in bare if v.name not in shapes), None):
        raise InputError(f"model {label!r}: input {missing!r} has no shape in the file (not even its rank): export "
                         f"takes it from --input {missing}:SHAPE (its sizes joined by x, a name for a dynamic one: "
                         "Nx3x224x224); inspect and quantize need it in the file")
    if out := next((v.name for v in model.graph.output if v.type.WhichOneof("value") == "tensor_type"
                    and not v.type.tensor_type.HasField("shape")), None):
        raise InputError(f"model {label!r}: output {out!r} has no shape in the file (not even its rank), which the "
                         "ONNX checker requires: give the graph output its shape where the model is converted "
                         "(onnx.shape_inference.infer_shapes fills it where it can)")
    for v in bare:
        dims = v.type.tensor_type.shape.dim
        for size in shapes[v.name]:
            dims.add()
    changed = bool(bare)
    _one_size_an_axis(tensors.values(), shapes)
    for i, v in tensors.items():
        dims, given = v.type.tensor_type.shape.dim, shapes.get(v.name)
        if given is None or len(dims) != len(given):
            continue
        was = _spec(v, i, label)
        for axis, (dim, size) in enumerate(zip(dims, given)):
            if isinstance(size, str):
                if not dim.HasField("dim_value") and not dim.dim_param:
                    dim.dim_param = size  # a bare input's axis (or one the file leaves unnamed)
            elif dim.HasField("dim_value") and dim.dim_value >= 0:
                if dim.dim_value != size:
                    raise UsageError(f"--input {v.name}:{'x'.join(map(str, given))}: input {v.name!r} axis {axis} is "
                                     f"{size}, but the model fixes it to {dim.dim_value} (the model's input: "
                                     f"{was.typed()})")
            elif dim.dim_param:
                make_dim_param_fixed(model.graph, dim.dim_param, size)  # every tensor of the axis (outputs too)
                changed = True
            else:
                dim.dim_value, changed = size, True
    if sized is not None:  # a named axis fixed through another input's --input (seq) counts too
        sized.update({v.name: axes for v in tensors.values()
                      if (axes := tuple(a for a in variable[v.name] if a not in _variable_axes(v)))})
    return changed


def _variable_axes(v) -> tuple[int, ...]:
    """The axes of graph input `v` the file gives no size (a name, or none), or none at all when it has no shape."""
    return tuple(a for a, d in enumerate(v.type.tensor_type.shape.dim)
                 if not (d.HasField("dim_value") and d.dim_value >= 0))


KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")


MAX_ONNX_BYTES = 2 << 30
MAX_INLINED_NODES = 1 << 20  # a graph once its local functions are inlined: a large transformer's are ~100,000
# an .onnx's bytes besides its tensors' data (graph_bytes), each field at least 8-16 bytes: each cost onnx.load up to
# ~11 bytes of memory to parse (empty attributes; 75-100 a file byte), and inspect ~25 (just under it, 8 MiB of empty
# attributes: +230 MB over a small model's 280 MB); a 24-layer transformer encoder exported by torch holds 0.34-0.54
# MB (1.35 MB from the dynamo exporter, value_info included), MobileNetV2 0.06 MB
MAX_GRAPH_BYTES = 8 << 20
# packed numbers (int64/int32 tensor data, fp16 weights kept in int32_data, a tree ensemble's floats and ints) count
# a 16th of the bytes they take parsed (a varint 8, however few its bytes in the file): half a graph byte each (a
# 600,000-node TreeEnsemble, 23 MB, was refused counted whole). 16M numbers of 1 byte pass no more: 120 MiB of them
# took inspect 4.5 GB and 40 s, 17 MiB 990 MB and 13.5 s
PACKED_PER_GRAPH_BYTE = 16


RANDOM_OPS = {"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Multinomial", "Bernoulli"}


@dataclasses.dataclass(frozen=True)
class CheckedOnnx:
    """A user's .onnx as load_onnx_input checked it: the bytes it read once (walked, parsed, run there) and where its
    external data was read from. Later stages take these, never the file again: a file swapped on disk after the
    checks is not what is pre-processed, quantized or compared (issue 11: the file is read once per run)."""

    path: Path  # as the user gave it: what messages name
    data: bytes
    folder: Path  # the folder of the file the path resolved to, once: a symlinked .onnx's external data is there
    external: frozenset[Path]  # the files its weights were read from
    opset: int  # the file's own ai.onnx opset (before its local functions were inlined)
    stamps: tuple = ()  # those files' _stamps when checked: a stage reading them again refuses them changed

    def external_unchanged(self) -> None:
        """InputError when an external data file is not the one checked (replaced or written since): its weights
        were never checked (NaN, infinite), and the model shipped would not be the one measured."""
        if changed := next((f for f, stamp in _stamps(self.external) if stamp != dict(self.stamps).get(f)), None):
            raise InputError(f"model {str(self.path)!r}: its external data file {changed.name!r} changed while "
                             "edgekit read the model; run again once it is written")

    def released(self) -> CheckedOnnx:
        """This record without its bytes, once given_copy wrote them: not held while the model is quantized (a
        128 MB model's were, for the whole run: the export's peak 125-140 MB higher)."""
        return dataclasses.replace(self, data=b"")


def _stamps(files) -> tuple:
    """(file, (device, inode, size, mtime)) of each file, sorted: what changes when one is replaced or written."""
    def stamp(f: Path):
        try:
            st = f.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
    return tuple(sorted((f, stamp(f)) for f in files))


def load_onnx_input(path: Path, runs: bool = True, shapes: dict[str, tuple] | None = None,
                    sized: dict[str, tuple[int, ...]] | None = None, checked: list[CheckedOnnx] | None = None):
    """Read and validate a user-given .onnx; anything wrong with it is bad input (exit 3), found before
    onnxruntime touches it: unreadable bytes, external data outside the model's folder, ops or domains
    no runtime here implements, an invalid graph; with `runs` (export, quantize: not inspect), random ops.
    `shapes`: --input's, given to inputs the file gives no shape (shaped_inputs, which fills `sized`). `checked` is
    given the CheckedOnnx (the bytes parsed, the files its weights were read from: what later stages take, never the
    file again). A symlink is resolved once: the file read and its external data are its target's (onnx looked
    beside the link and refused the model)."""
    import onnx

    from .arrays import regular_file

    path = Path(path)
    real = regular_file(path, f"model {str(path)!r}").resolve()
    data = _model_bytes(real, path)
    refuse_large_graph(data, path)
    try:
        model = onnx.load_model_from_string(data)  # the very bytes walked: the file may have changed since
    except Exception as e:
        raise InputError(f"model {str(path)!r} is not a valid ONNX model: {first_line(e)}") from e
    files = _check_external_data(model, path, real)
    opset, stamps = ai_onnx_opset(model), _stamps(files)  # before onnx reads them
    model = inline_functions(model, str(path))
    for node in model.graph.node:
        if node.domain not in KNOWN_DOMAINS:  # never "" here: the default domain is known
            raise InputError(f"model {str(path)!r}: node {node.name or node.op_type!r} uses op {node.op_type!r} from "
                             f"domain {node.domain!r}, which onnxruntime does not implement")
    if runs and (random := next((n for n in all_nodes(model.graph)  # a seeded one draws anew at each run of a
                                 if n.op_type in RANDOM_OPS and n.domain in ("", "ai.onnx")), None)):  # session
        raise InputError(f"model {str(path)!r}: node {random.name or random.op_type!r} is {random.op_type}, whose "
                         "values change from run to run, so neither parity nor golden outputs can hold: export the "
                         "model without sampling")
    shaped_inputs(model, shapes or {}, str(path), sized)
    try:
        onnx.load_external_data_for_model(model, str(real.parent))
        onnx.checker.check_model(model, full_check=False)
    except Exception as e:
        raise InputError(f"model {str(path)!r} is not a valid ONNX model: {checker_said(e)}") from e
    if not model.graph.output:
        raise InputError(f"model {str(path)!r} has no outputs")
    names = [o.name for o in model.graph.output]  # onnxruntime runs it; the golden file's entries collided
    if twice := next((n for i, n in enumerate(names) if n in names[:i]), None):
        raise InputError(f"model {str(path)!r}: output {twice!r} is listed twice among the graph's outputs")
    _check_finite_weights(model, path)
    _check_runtime_kernels(data, path, real)
    if checked is not None:
        checked.append(CheckedOnnx(path, data, real.parent, frozenset(files), opset, stamps))
    return model


def _model_bytes(path: Path, label: Path | None = None) -> bytes:
    """The .onnx file's bytes, read once (onnx.load reads them all too), up to MAX_ONNX_BYTES: the walk and the parse
    both take these, so a file swapped between them (8 MiB of empty nodes after a small model's walk: 1.7 GB, 42 s)
    is never parsed unwalked. `label`: the path as the user gave it (a link to `path`)."""
    shown = str(label or path)
    try:  # not blocking: a FIFO swapped in since regular_file looked would hang the open
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG((held := os.fstat(f.fileno())).st_mode):
                raise InputError(f"model {shown!r}: not a regular file")
            if held.st_size > MAX_ONNX_BYTES or len(data := f.read(MAX_ONNX_BYTES + 1)) > MAX_ONNX_BYTES:
                raise InputError(f"model {shown!r}: larger than 2 GiB, which no .onnx file can be (protobuf's "
                                 "limit; larger models keep their weights in external data files)")
    except OSError as e:
        raise InputError(f"model {shown!r} cannot be read: {e.strerror or first_line(e)}") from e
    return data


def refuse_large_graph(data: bytes, path: Path) -> None:
    """InputError where the graph of `path`'s bytes `data` (besides tensor data) passes MAX_GRAPH_BYTES, told before
    onnx.load parses it: a 4 MB file of empty nodes took inspect 932 MB and 13.6 s. Bytes the walk finds no protobuf
    message are refused here, not left to onnx.load: what onnx.load took that the walk did not (a group) went
    uncounted."""
    from .graph_bytes import graph_bytes_of

    try:
        counted = graph_bytes_of(data, MAX_GRAPH_BYTES, PACKED_PER_GRAPH_BYTE)
    except ValueError as e:
        raise InputError(f"model {str(path)!r} is not a valid ONNX model: {e}") from e
    if counted > MAX_GRAPH_BYTES:
        raise InputError(f"model {str(path)!r}: its graph (the file's bytes besides raw weights, packed numbers "
                         f"counted as parsed) passes {MAX_GRAPH_BYTES >> 20} MiB, which edgekit refuses to parse (a "
                         "24-layer transformer's is ~1 MB)")


# Inputs of ops that read trained parameters: weights, biases, norms' scales and running statistics, RNN weights.
# An infinity there is a corrupt weight (training diverged, a bad conversion): nothing trains to inf, and every
# output it reaches is Inf or NaN, so parity means nothing. Elsewhere (an Add, a Where) an infinite constant is
# a mask: a causal mask buffer (torch.full(-inf).triu(1)), the -inf torch writes for masked_fill.
WEIGHT_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
                "BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2), "LayerNormalization": (1, 2),
                "LSTM": (1, 2, 3), "GRU": (1, 2, 3), "RNN": (1, 2, 3), "PRelu": (1,)}
LAYOUT_OPS = ("Transpose", "Reshape", "Cast", "Identity", "Unsqueeze", "Squeeze", "Flatten")  # a weight on its way


def _check_finite_weights(model, path: Path) -> None:
    """NaN anywhere is corrupt (and makes every parity figure meaningless); an infinity only where an op reads it as
    a weight (WEIGHT_SLOTS): infinite constants are masks, which onnxruntime runs as torch does."""
    weights = _weight_tensors(model.graph)
    for tensor, label, carried in _labelled_tensors(model):
        if tensor.data_type in (1, 10, 11, 16):  # float, float16, double, bfloat16
            try:  # the checker refuses data shorter than the shape, not longer (an external file of 68 bytes)
                values = numpy_values(tensor)
            except ValueError as e:
                raise InputError(f"model {str(path)!r}: tensor {label!r} holds data that does not fit its "
                                 f"shape {list(tensor.dims)} ({first_line(e)})") from None
            if np.isnan(values).any():
                raise InputError(f"model {str(path)!r}: tensor {label!r} holds NaN values")
            if carried in weights and not np.isfinite(values).all():
                raise InputError(f"model {str(path)!r}: weight {label!r} holds infinite values (node "
                                 f"{weights[carried]!r} reads it as a weight, and no trained weight is infinite)")


def numpy_values(tensor) -> np.ndarray:
    """A float TensorProto's values as float32 (bfloat16 and float16 too)."""
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor).astype(np.float32, copy=False)


def _weight_tensors(graph) -> dict[str, str]:
    """{tensor: the node reading it} for the tensors of `graph` that an op reads as a weight (WEIGHT_SLOTS),
    followed back through LAYOUT_OPS (a Linear's weight transposed for a MatMul)."""
    producer = {o: n for n in graph.node for o in n.output}
    found = {}
    for node in graph.node:
        for slot in WEIGHT_SLOTS.get(node.op_type, ()):
            name = node.input[slot] if slot < len(node.input) else ""
            while name and name not in found:
                found[name] = node.name or node.op_type
                source = producer.get(name)
                name = source.input[0] if source is not None and source.op_type in LAYOUT_OPS and source.input else ""
    return found


def _labelled_tensors(model):
    """(tensor, a name for messages, the main-graph tensor carrying its values or '') of all _tensors(model) reads: an
    attribute's tensor has no name of its own (a Constant's -inf was called ''): it is named by its node or output."""
    yield from _labelled_graph_tensors(model.graph, top=True)
    for function in model.functions:
        for node in function.node:
            yield from _labelled_node_tensors(node, False, function.name)


def _labelled_graph_tensors(graph, top: bool):
    for tensor in graph.initializer:
        yield tensor, tensor.name, tensor.name if top else ""
    for node in graph.node:
        yield from _labelled_node_tensors(node, top)


def _labelled_node_tensors(node, top: bool, within: str = ""):
    label = node.name or (node.output[0] if node.output else f"{within}/{node.op_type}")
    carried = node.output[0] if top and node.output and node.op_type in ("Constant", "ConstantOfShape") else ""
    for attr in node.attribute:
        for tensor in [attr.t] * attr.HasField("t") + list(attr.tensors):
            yield tensor, tensor.name or label, carried
        for sub in [attr.g] * attr.HasField("g") + list(attr.graphs):
            yield from _labelled_graph_tensors(sub, False)


def non_finite_constants(graph) -> set[str]:
    """The tensors of `graph` that constants fill with infinities (masks: _check_finite_weights let them through):
    initializers, Constant and ConstantOfShape outputs. The quantizer keeps the nodes on their path float."""
    return {carried for tensor, _, carried in _labelled_graph_tensors(graph, top=True) if carried
            and tensor.data_type in (1, 10, 11, 16) and not np.isfinite(numpy_values(tensor)).all()}


def _external_data(model, path: Path):
    """(tensor, location, the file it resolves to) of each tensor whose data a model keeps in another file."""
    import onnx

    folder = path.resolve().parent
    for tensor in _tensors(model):
        if onnx.external_data_helper.uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            yield tensor, location, (folder / location).resolve()


def _check_external_data(model, path: Path, real: Path | None = None) -> set[Path]:
    """External tensor files must sit inside the model's folder: no absolute paths, no `..`, no links out; and
    its tensors may read at most twice the bytes the files hold (tied weights read theirs twice; four tensors
    reading one sparse 1 GiB file again and again took 5.3 GB of memory before the model was refused). `real`: the
    file `path` resolved to (once, by the caller), whose folder is the model's."""
    real = real or path.resolve()
    folder = real.parent
    declared, files = 0, set()
    for tensor, location, target in _external_data(model, real):
        keys = [e.key for e in tensor.external_data]
        if twice := next((k for i, k in enumerate(keys) if k in keys[:i]), None):  # onnx reads the last, we the first
            raise InputError(f"model {str(path)!r}: tensor {tensor.name!r} names its external data's {twice!r} twice")
        if not location or Path(location).is_absolute() or ".." in Path(location).parts or \
                not target.is_relative_to(folder):
            raise InputError(f"model {str(path)!r}: tensor {tensor.name!r} points at external data {location!r} "
                             "outside the model's folder")
        if not target.is_file():
            raise InputError(f"model {str(path)!r}: external data file {location!r} of tensor {tensor.name!r} is "
                             + ("not a regular file" if target.exists() else "missing"))
        length = next((e.value for e in tensor.external_data if e.key == "length"), "")
        declared += int(length) if length.isdigit() else math.ceil(math.prod(tensor.dims) * _element_bytes(tensor))
        files.add(target)
        _reads_its_shape(tensor, length, target, path, location)
    if declared > 2 * (held := sum(f.stat().st_size for f in files)):
        raise InputError(f"model {str(path)!r}: its tensors declare {declared:,} bytes of external data, more than "
                         f"twice the {held:,} its files hold (tensors reading the same bytes again and again)")
    return files


def _reads_its_shape(tensor, length: str, target: Path, path: Path, location: str) -> None:
    """A tensor reads no more external data than its shape takes: onnx.load reads what `length` says, or the file
    from `offset` to its end, whatever the shape: a 4x4 weight naming a sparse 8 GiB file took inspect 17 GB of
    memory and 97 s (its file held enough bytes for the check against what files hold). A string tensor, or one of
    no known type, has no size to hold it to, and onnx reads no such tensor from a file, after reading it all (a 4x4
    one naming a sparse 1 GiB file took inspect 3.4 GB): refused."""
    import onnx

    if tensor.data_type == onnx.TensorProto.STRING or _element_bytes(tensor, None) is None:
        kind = onnx.TensorProto.DataType.Name(tensor.data_type) if tensor.data_type in \
            onnx.TensorProto.DataType.values() else f"number {tensor.data_type}"
        raise InputError(f"model {str(path)!r}: tensor {tensor.name!r} of type {kind} keeps its data in external "
                         f"file {location!r}, which onnx reads for no tensor of that type")
    offset = next((e.value for e in tensor.external_data if e.key == "offset"), "0")
    reads = int(length) if length.isdigit() else target.stat().st_size - (int(offset) if offset.isdigit() else 0)
    if reads > (takes := math.ceil(math.prod(tensor.dims) * _element_bytes(tensor))):
        raise InputError(f"model {str(path)!r}: tensor {tensor.name!r} reads {reads:,} bytes of external data "
                         f"{location!r}, where its shape {list(tensor.dims)} takes {takes:,}")


# types packed below a byte an element, as onnx writes them (counted as 1, an int4 model of 1,500 bytes declared
# 3,000; an int2 weight with no `length` declared 4 times its file's bytes and was refused)
PACKED_BYTES = {"INT4": 0.5, "UINT4": 0.5, "FLOAT4E2M1": 0.5, "INT2": 0.25, "UINT2": 0.25, "FLOAT6E2M3": 0.75,
                "FLOAT6E3M2": 0.75}


def _element_bytes(tensor, unknown: float | None = 1) -> float | None:
    """Bytes an element of `tensor` takes in a file: PACKED_BYTES' for types below a byte."""
    import onnx

    packed = {getattr(onnx.TensorProto, t, -1): size for t, size in PACKED_BYTES.items()}
    if tensor.data_type in packed:
        return packed[tensor.data_type]
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:  # no numpy type: a byte each, at least
        return unknown


def _tensors(model):
    """Initializers and tensor attributes of a model's graph, sub-graphs and local functions: all onnx's loader reads
    (an unused function's 12 Constants reading one sparse 1 GiB file took 7.4 GB and a SIGSEGV, unchecked)."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _graph_tensors(graph):
    yield from graph.initializer
    yield from _node_tensors(graph.node)


def _node_tensors(nodes):
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
        for sub in subgraphs(node):
            yield from _graph_tensors(sub)


def external_data_beside(opts, path: Path) -> None:
    """Session options reading a model given as bytes: its external data from `path`'s folder, as onnx read it."""
    from .runtime import ort_path

    opts.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                  ort_path(path.resolve().parent, path.parent))


def _check_runtime_kernels(data: bytes, path: Path, real: Path) -> None:
    """An op onnxruntime has no kernel for fails here, named, rather than deep inside pre-processing. onnxruntime
    takes the bytes walked and parsed, not the file again (swapped meanwhile for 8 MiB of empty nodes, it took 4 GB
    and 20 s); their external data from the folder of `real` (`path` resolved), as onnx read it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    external_data_beside(opts, real)
    try:
        ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"model {str(path)!r} does not load in onnxruntime: {first_line(e)}") from e


def name_nodes(model) -> bool:
    """Give each unnamed node of a ModelProto a name (`Relu_3`): the quantizer and --auto keep nodes float by name,
    and an unnamed Relu that clips a graph output could not be. Returns whether any was unnamed."""
    unnamed = [(i, n) for i, n in enumerate(model.graph.node) if not n.name]
    taken = {n.name for n in model.graph.node}
    for i, node in unnamed:
        name = f"{node.op_type}_{i}"
        while name in taken:  # an exporter's own `MatMul_2` elsewhere: two nodes of one name is an invalid graph
            name += "_"
        node.name = name
        taken.add(name)
    return bool(unnamed)


def parsed(model):
    """`model` as a ModelProto: a path is parsed (weights included), a ModelProto passes through. A run
    parses its float model once and hands the ModelProto to every stage that reads it."""
    import onnx

    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def consumers(graph) -> dict[str, list]:
    """{tensor name: the nodes of `graph` reading it} (its sub-graphs' nodes not included)."""
    found: dict[str, list] = {}
    for n in graph.node:
        for t in n.input:
            found.setdefault(t, []).append(n)
    return found


def subgraphs(node):
    """The If/Loop/Scan bodies a node holds: an attribute's `g` and `graphs` both (onnx.load reads the external data
    of the one its type names: `graphs` behind a `g` went unchecked, a sparse 1 GiB file read took inspect 3.4 GB)."""
    for attr in node.attribute:
        yield from [attr.g] * attr.HasField("g") + list(attr.graphs)


def all_graphs(graph):
    """`graph` and every sub-graph its nodes hold, depth first."""
    yield graph
    for n in graph.node:
        for sub in subgraphs(n):
            yield from all_graphs(sub)


def outer_reads(graph) -> set[str]:
    """The names `graph` (a sub-graph) reads from the scopes around it, its own sub-graphs' included."""
    inner = {*(v.name for v in graph.input), *(t.name for t in graph.initializer), *(o for n in graph.node
                                                                                    for o in n.output)}
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    read |= {r for n in graph.node for sub in subgraphs(n) for r in outer_reads(sub)}
    return read - inner - {""}


def sort_nodes(graph) -> bool:
    """Order `graph`'s nodes so each comes after the producers of what it reads, its sub-graphs' outer-scope reads
    included (stable: the first ready node in the old order goes first). onnxruntime's quantizer sorts without
    those, and put an If whose branch reads a Gemm's output before the Gemm: onnx's checker failed the int8 model.
    Returns whether the order changed."""
    import heapq

    nodes = list(graph.node)
    made_by = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    waits = [{made_by[r] for r in {*n.input, *(r for sub in subgraphs(n) for r in outer_reads(sub))}
              if r in made_by} - {i} for i, n in enumerate(nodes)]
    readers: dict[int, list[int]] = {}
    for i, before in enumerate(waits):
        for b in before:
            readers.setdefault(b, []).append(i)
    ready = [i for i, before in enumerate(waits) if not before]
    heapq.heapify(ready)
    order = []
    while ready:
        order.append(i := heapq.heappop(ready))
        for r in readers.get(i, ()):
            waits[r].discard(i)
            if not waits[r]:
                heapq.heappush(ready, r)
    if len(order) < len(nodes) or order == sorted(order):  # a cycle is onnx's checker's to report
        return False
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
    return True


def all_nodes(graph):
    """Every node of `graph`, and after each one the nodes of its sub-graphs, depth first."""
    for n in graph.node:
        yield n
        for sub in subgraphs(n):
            yield from all_nodes(sub)


def io_specs(model, label: str = "") -> tuple[tuple[InputSpec, ...], tuple[InputSpec, ...]]:
    """Inputs (optional ones excluded) and outputs of an ONNX model (path or ModelProto, named `label` in
    errors) as InputSpecs (dynamic dims keep their names)."""
    import onnx

    if not label:
        label = model.graph.name if isinstance(model, onnx.ModelProto) else str(model)
    model = parsed(model)
    init = {i.name for i in model.graph.initializer}
    inputs = tuple(_spec(v, i, label) for i, v in enumerate(model.graph.input) if v.name not in init)
    outputs = tuple(_spec(v, i, label, "output") for i, v in enumerate(model.graph.output))
    if not inputs:
        raise InputError(f"model {label!r} has no inputs")
    return inputs, outputs


def optional_inputs(model, label: str) -> dict[str, tuple[InputSpec, np.ndarray]]:
    """Graph inputs backed by an initializer of the same name: optional, with that default. The deployed
    model keeps the default (it no longer takes them) unless the recipe pins another value."""
    from onnx import numpy_helper

    init = {t.name: t for t in model.graph.initializer}
    return {v.name: (_spec(v, i, label), numpy_helper.to_array(init[v.name]))
            for i, v in enumerate(model.graph.input) if v.name in init}


def _spec(v, i: int, label: str, role: str = "input") -> InputSpec:
    import onnx

    if v.type.WhichOneof("value") != "tensor_type":  # read as a tensor it said "element type 0 (UNDEFINED)"
        what = WORDS.get(v.type.WhichOneof("value"), "untyped")
        raise InputError(f"model {label!r}: {role} {v.name!r} is {what} ({_kind(v.type)}), not a tensor, and edgekit "
                         "handles tensor inputs and outputs only: " + (
                             ZIPMAP if role == "output" and _zipmap(v.type) else f"make the graph's {role}s tensors"))
    # a fixed size of 0 is not a dynamic axis (dim_value's default): HasField tells them apart; -1 marks one
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0
                 else d.dim_param or f"d{i}_{j}" for j, d in enumerate(v.type.tensor_type.shape.dim))
    elem = v.type.tensor_type.elem_type
    if elem not in ONNX_DTYPES:
        wider = " (return it as float32: .float())" if elem == onnx.TensorProto.DOUBLE and role == "output" else ""
        raise InputError(f"model {label!r}: {role} {v.name!r} has ONNX element type {elem} "
                         f"({onnx.TensorProto.DataType.Name(elem)}), which edgekit does not handle{wider}")
    return InputSpec(v.name, dims, ONNX_DTYPES[elem])


ZIPMAP = ("a classifier converted by skl2onnx returns its probabilities through ZipMap as a sequence of maps: "
          "convert it with options={id(model): {'zipmap': False}} for a tensor; otherwise make the graph's outputs "
          "tensors")


WORDS = {"sequence_type": "a sequence", "map_type": "a map", "optional_type": "an optional",
         "sparse_tensor_type": "a sparse tensor"}


def _kind(t) -> str:
    """An ONNX type in its own notation (onnxruntime's too): seq(map(int64,tensor(float))), for a refusal."""
    import onnx

    def name(elem):
        return onnx.TensorProto.DataType.Name(elem).lower()

    which = t.WhichOneof("value")
    if which == "sequence_type":
        return f"seq({_kind(t.sequence_type.elem_type)})"
    if which == "optional_type":
        return f"optional({_kind(t.optional_type.elem_type)})"
    if which == "map_type":
        return f"map({name(t.map_type.key_type)},{_kind(t.map_type.value_type)})"
    if which in ("tensor_type", "sparse_tensor_type"):
        return f"{'sparse_' * (which != 'tensor_type')}tensor({name(getattr(t, which).elem_type)})"
    return "no type"


def _zipmap(t) -> bool:
    """A sequence of maps: what skl2onnx's ZipMap returns."""
    return t.WhichOneof("value") == "sequence_type" and t.sequence_type.elem_type.WhichOneof("value") == "map_type"


def preprocess(src: Path, dest: Path, timeout: float = DEFAULT_STEP_TIMEOUT,
               exported: bool = False, raised_by: str = "") -> tuple[Path, str]:
    """onnxruntime's quantization pre-processing: symbolic shapes, ORT basic optimisation, ONNX shapes.
    Returns (the pre-processed model, what was skipped and why: "" when nothing was).

    A graph from a file runs in a child process under a time and memory limit (`bounded`): shape inference
    and constant folding on a hostile graph can take exponential time or huge allocations. A graph edgekit
    `exported` itself from the user's torch code (code they run, not a file from others) is pre-processed
    here: the child's start-up and imports cost ~0.9 s, a quarter of MobileNetV2-style's quantization.
    """
    from . import bounded

    src, dest = Path(src).resolve(), Path(dest).resolve()
    note = (preprocess_in_child(str(src), str(dest)) if exported else
            bounded.run("pre-processing", "edgekit.onnx_export:preprocess_in_child", str(src), str(dest),
                        timeout=timeout, raised_by=raised_by))
    if note:
        log.info("%s", note)
    check(dest)
    return dest, note


# Each failure skips one more step, in onnxruntime's order, instead of failing the export: symbolic shape
# inference gives up on some graphs (control flow, custom ops; onnxruntime's own advice is to retry
# without it), and a graph the optimiser or ONNX shape inference cannot take still quantizes without them.
PREPROCESS_STEPS = (("symbolic shape inference", "skip_symbolic_shape"),
                    ("onnxruntime graph optimisation", "skip_optimization"),
                    ("ONNX shape inference", "skip_onnx_shape"))


@contextlib.contextmanager
def _traceback_logs_for_debug_only(name: str):
    """Logger `name` quiet but under --debug: quant_pre_process logs a failed step's whole traceback before it
    raises, and edgekit says the cause itself in one line (the step skipped, or the error)."""
    logger = logging.getLogger(name)
    level = logger.level
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def preprocess_in_child(src: str, dest: str) -> str:
    """Pre-process, skipping steps that fail one by one; says which. The bounded child's entry point (where
    onnxruntime's log is silenced: that stderr is the user's, and edgekit reports the cause itself)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    header = onnx.load(src, load_external_data=False)  # parsed once here: a torch export's weights are inline
    contrib = any(n.domain not in ("", "ai.onnx") for n in all_nodes(header.graph))
    src = _readied(header, src, str(Path(dest).with_name("readied.onnx")))
    skipped: list[str] = []
    for done in range(len(PREPROCESS_STEPS) + 1):
        try:
            shaped = _symbolic_shapes(src, Path(dest).with_name("shaped.onnx")) if done == 0 else src
            skip = {flag: True for _, flag in PREPROCESS_STEPS[:done]}
            with _traceback_logs_for_debug_only("onnxruntime.quantization.shape_inference"):
                quant_pre_process(shaped, dest, **{**skip, "skip_symbolic_shape": True})  # done above
        except Exception as e:
            if disk_full(e):
                raise  # no step skipped makes room
            if done == len(PREPROCESS_STEPS):
                raise RuntimeError("; ".join(skipped) + f"; saving the model failed: {first_line(e, 120)}") from e
            skipped.append(f"{PREPROCESS_STEPS[done][0]} failed ({first_line(e, 120)})")
            continue
        finally:
            Path(dest).with_name("shaped.onnx").unlink(missing_ok=True)
        if contrib:  # only ops ONNX has no schema for leave outputs untyped
            type_float_tensors(dest)
        return "; ".join(skipped) + ("; pre-processed without it" if len(skipped) == 1 else
                                     "; pre-processed without them" if skipped else "")
    raise AssertionError("unreachable")


def _symbolic_shapes(src: str, dest: Path) -> str:
    """onnxruntime's symbolic shape inference of `src` saved at `dest`, as quant_pre_process runs it (default
    settings), less its dump: when it gives up, SymbolicShapeInference.infer_shapes saves sym_shape_infer_temp.onnx
    (+ its weights) into the working folder, where a chdir to keep it out moved the whole process (a notebook's
    thread writing a relative log wrote into edgekit's stage folder, deleted after)."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference, get_opset

    model = onnx.load(src)
    if not get_opset(model) or get_opset(model) < 7:
        raise RuntimeError("symbolic shape inference takes opset 7 and above")
    inference = SymbolicShapeInference(2**31 - 1, False, False, 0)
    inference._preprocess(model)
    complete = False
    while inference.run_:
        complete = inference._infer_impl()
    inference._update_output_from_vi()
    if not complete:
        raise RuntimeError("Incomplete symbolic shape inference")
    onnx.save(inference.out_mp_, str(dest))
    return str(dest)


def type_float_tensors(path: str) -> None:
    """Declare the float node outputs that ONNX's shape inference left untyped: those of onnxruntime's own ops
    (com.microsoft FusedConv), which ONNX has no schema for, and what follows them. onnxruntime's quantizer neither
    calibrates nor quantizes a tensor of unknown type, and a Gemm reading one failed ("Unable to get valid
    quantization scale for input 'f' when quantizing bias 'Bg' to int32"). Their types are onnxruntime's."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(path, load_external_data=False)  # its external data stays beside it, where the probe is
    graph = model.graph
    known = {v.name for v in (*graph.value_info, *graph.input, *graph.output)} | {t.name for t in graph.initializer}
    if not (missing := [o for n in graph.node for o in n.output if o and o not in known]):
        return
    probe = copy.deepcopy(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in missing)
    probe_path = Path(path).with_name("typed.onnx")
    onnx.save(probe, str(probe_path))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    found = ort.InferenceSession(str(probe_path), options, providers=["CPUExecutionProvider"]).get_outputs()
    probe_path.unlink()
    floats = {"tensor(float)": onnx.TensorProto.FLOAT, "tensor(float16)": onnx.TensorProto.FLOAT16}
    graph.value_info.extend(onnx.helper.make_tensor_value_info(o.name, floats[o.type], None) for o in found
                            if o.name in missing and o.type in floats)
    onnx.save(model, path)


def ai_onnx_opset(model) -> int:
    """A ModelProto's ai.onnx opset (0 when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def inline_functions(model, label: str):
    """`model` with its model-local functions' nodes in place of their calls: onnxruntime inlines them itself, but
    edgekit's checks (domains, random ops) and the quantizer see a graph's nodes only (a Relu(x)*2 function was
    refused as "domain 'local', which onnxruntime does not implement")."""
    import onnx.inliner

    if not model.functions:
        return model
    if (count := inlined_nodes(model)) is not None and count > MAX_INLINED_NODES:
        raise InputError(f"model {label!r}: its local functions call each other into more than "
                         f"{MAX_INLINED_NODES:,} nodes once inlined (edgekit's limit), where the file holds "
                         f"{sum(1 for _ in all_nodes(model.graph)) + sum(len(f.node) for f in model.functions):,}")
    try:
        return onnx.inliner.inline_local_functions(model)
    except Exception as e:
        raise InputError(f"model {label!r}: its local functions cannot be inlined: {checker_said(e)}") from e


def inlined_nodes(model) -> int | None:
    """How many nodes `model`'s graphs hold once its local functions are inlined, counted without inlining them:
    a function calling the one before twice, 20 deep (1.7 KB), inlined to a million nodes (inspect ran for minutes,
    1.4 GB). None where functions call each other in a cycle, which the inliner refuses itself."""
    def key(n) -> tuple:  # what a call names: a function's domain, name and overload
        return n.domain, n.op_type, getattr(n, "overload", "")

    calls = {(f.domain, f.name, getattr(f, "overload", "")): [key(n) for n in _nodes_of(f.node)]
             for f in model.functions}
    sizes: dict[tuple, int] = {}
    for root in calls:  # depth first without recursion: a chain of 5,000 functions is no RecursionError
        stack, path = [(root, False)], set()
        while stack:
            fn, done = stack.pop()
            if done:
                path.discard(fn)
                sizes[fn] = sum(sizes.get(c, 1) for c in calls[fn])
            elif fn not in sizes:
                if fn in path:
                    return None
                path.add(fn)
                stack += [(fn, True)] + [(c, False) for c in calls[fn] if c in calls and c not in sizes]
    return sum(sizes.get(key(n), 1) for n in all_nodes(model.graph))


def _nodes_of(nodes):
    """`nodes` (a function's), and the nodes of their sub-graphs."""
    for n in nodes:
        yield n
        for sub in subgraphs(n):
            yield from all_nodes(sub)


def _readied(model, src: str, dest: str) -> str:
    """The model to pre-process: `src` itself, or at `dest` with its local functions inlined and an opset < 11
    converted to 11. `model`: `src` parsed without its external data."""
    import onnx

    if not model.functions and not 0 < ai_onnx_opset(model) < 11:  # 0: no ai.onnx op to convert
        return src
    external = any(onnx.external_data_helper.uses_external_data(t) for t in _tensors(model))
    onnx.load_external_data_for_model(model, str(Path(src).parent))
    model = inline_functions(model, src)
    if 0 < ai_onnx_opset(model) < 11:
        model = _to_opset11(model)
    onnx.save(model, dest, save_as_external_data=external, location=f"{Path(dest).name}.data")
    return dest


def _to_opset11(model):
    """An opset < 11 model converted to 11 by onnx's version converter, its Resize nodes computing what they did.
    quant_pre_process converts such a model itself, but its Upsample-to-Resize step leaves a graph onnx's converter
    refuses (opset 9: every step failed), and opset 10's Resize loses its asymmetric coordinates there (11 defaults
    to half_pixel: a linear Resize shipped at cosine 0.69 to the user's file)."""
    from onnx import version_converter

    opset = ai_onnx_opset(model)
    try:
        model = version_converter.convert_version(model, 11)
    except Exception as e:
        cause = re.search(r"No Adapter.*", first_line(e))
        raise InputError(f"the model is opset {opset}, and onnx's version converter cannot convert it to opset 11 "
                         f"for quantization ({cause.group(0) if cause else first_line(e)}): re-export it at "
                         "opset >= 11") from e
    for node in all_nodes(model.graph):
        if node.op_type == "Resize" and node.domain in ("", "ai.onnx"):
            _as_opset10_resize(node, model.graph)
    return model


def _as_opset10_resize(node, graph) -> None:
    """Opset 10's Resize (and Upsample) semantics in opset 11's attributes, as onnxruntime runs them: asymmetric
    coordinates; nearest pixels floored when upsampling, ceiled when downsampling (an axis of each cannot be said:
    export parity tells)."""
    from onnx import helper, numpy_helper

    name = node.input[2] if len(node.input) > 2 else ""
    scales = next((numpy_helper.to_array(t) for t in graph.initializer if t.name == name), None)
    scales = next((numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"
                   and n.output[0] == name and n.attribute[0].name == "value"), scales)
    down = scales is not None and scales.size and bool((scales <= 1).all())
    node.attribute.extend([helper.make_attribute("coordinate_transformation_mode", "asymmetric"),
                           helper.make_attribute("nearest_mode", "ceil" if down else "floor")])


def first_run(model: Path, feed: dict[str, np.ndarray], timeout: float) -> None:
    """The model of a file from others run once, on one sample, in a child under the time and memory limit
    (`bounded`), before edgekit runs it in-process on every sample: a Loop of 10^13 steps or a ConstantOfShape
    sized by an input would hang there for good, past Ctrl-C (onnxruntime's run holds the main thread)."""
    from . import bounded

    feed_file = Path(model).with_name("first_run.npz")
    np.savez(feed_file, *feed.values())  # by position: input names from a file need not be member names
    try:
        bounded.run("a first run of the model", "edgekit.onnx_export:first_run_in_child", str(model), str(feed_file),
                    json.dumps(list(feed)), timeout=timeout, raised_by="--step-timeout")
    except StageError as e:
        from .runtime import run_error

        raise run_error(e.message, e.stage) from e
    finally:
        feed_file.unlink(missing_ok=True)


def first_run_in_child(model: str, feed_file: str, names: str) -> str:
    import onnxruntime as ort

    from .runner import options
    from .runtime import memory_capped

    with np.load(feed_file, allow_pickle=False) as data:
        feed = {name: data[f"arr_{i}"] for i, name in enumerate(json.loads(names))}
    ort.InferenceSession(model, sess_options=options(1, memory_capped(), 4),
                         providers=["CPUExecutionProvider"]).run(None, feed)
    return ""


def fix_input_shapes(model, shapes: dict[str, tuple[int, ...]]) -> None:
    """Make every input shape of a ModelProto fixed (onnxruntime's make_dynamic_shape_fixed helpers), then
    the output shapes where they follow: NNAPI and other compiling EPs take only fixed-shape nodes."""
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    try:
        for name, shape in shapes.items():
            make_input_shape_fixed(model.graph, name, list(shape))
        fix_output_shapes(model)
    except Exception as e:
        raise StageError("fixing input shapes", first_line(e)) from e


def save_shipped(model, path: Path) -> None:
    """Write a model a package ships (model.onnx, the int8 and CoreML models, what their .ort files are made of),
    importing only the opset domains it uses. onnxruntime's graph optimisation in quant_pre_process stamps every
    domain onnxruntime registers (ai.onnx.ml 5, training, preview, nchwc, aten, ...) though no node uses them, and
    onnxruntime 1.17 and older refuse ai.onnx.ml 5: the profiles' opset 17 was chosen for them, and did not load."""
    import onnx

    used = domains_used(model) | {"", "ai.onnx"}  # ONNX's own is always imported
    kept = [o for o in model.opset_import if o.domain in used]
    if len(kept) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(kept)
    onnx.save(model, str(path))


def domains_used(model) -> set[str]:
    """The operator domains of a ModelProto's nodes, in sub-graphs (If, Loop, Scan) and local functions too."""
    import onnx

    found, graphs = set(), [model.graph]
    nodes = [n for f in model.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            nodes.extend(graphs.pop().node)
            continue
        node = nodes.pop()
        found.add(node.domain)
        for a in node.attribute:
            graphs.extend([a.g] if a.type == onnx.AttributeProto.GRAPH else
                          a.graphs if a.type == onnx.AttributeProto.GRAPHS else [])
    return found


def stamp(model, props: dict[str, str]):
    """Add metadata props (edgekit version, target, ...) to a ModelProto; returns it."""
    import onnx

    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **props})
    return model


def given_copy(src: CheckedOnnx, folder: Path) -> Path:
    """The checked .onnx as the user gave it, in a folder of edgekit's: the bytes checked, and its external data
    files copied as they lay (refused when not the files checked). The stages read this copy, never the user's files
    again, and the export gates' reference runs it as given (weights listed as inputs, no shapes filled in)."""
    import onnx

    if not src.data:
        raise InternalError("given_copy of a released CheckedOnnx: its bytes were dropped once copied")
    folder.mkdir(parents=True)
    dest = folder / src.path.name
    dest.write_bytes(src.data)
    if src.external:
        src.external_unchanged()
        for location in {location for _, location, _ in _external_data(onnx.load_model_from_string(src.data), dest)}:
            (folder / location).parent.mkdir(parents=True, exist_ok=True)  # where the model's locations say
            shutil.copyfile(src.folder / location, folder / location)
        src.external_unchanged()  # what was copied is what was checked, unless written within the same tick
    return dest


def without_initializer_inputs(src: Path, dest: Path, shapes: dict[str, tuple] | None = None,
                               label: str = "") -> Path:
    """Old exporters list weights as graph inputs too; the deployed model should take only real inputs. `shapes`:
    --input's, for inputs the file gives no shape (shaped_inputs). `src`: edgekit's copy of the user's file
    (given_copy); `label`: the user's name for it."""
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    extra = [i for i in model.graph.input if i.name in weights]
    if not shaped_inputs(model, shapes or {}, label or str(src)) and not extra:
        return src
    # weights in external data files move beside dest: left beside the original, the shipped model.onnx still took
    # them as inputs (the int8 model did not)
    external = any(onnx.external_data_helper.uses_external_data(t) for t in _tensors(model))
    if external:
        onnx.load_external_data_for_model(model, str(Path(src).parent))
    for value in extra:
        model.graph.input.remove(value)
    model.ir_version = max(model.ir_version, 4)  # IR 3 requires every initializer to be a graph input too
    onnx.save(model, str(dest), save_as_external_data=external, location=f"{Path(dest).name}.data")
    return dest
