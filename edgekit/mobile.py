"""Mobile and embedded deliverables with onnxruntime's own tools: ORT format + reduced-operator
config, NNAPI/CoreML coverage predictions, and a C header embedding the model bytes."""
from __future__ import annotations

import contextlib
import hashlib
import math
import logging
import os
import platform
import shutil
import site
import subprocess
import sys
import tempfile
import typing
from pathlib import Path

from . import bounded, progress
from .config import C_NAME, COVERAGE_PROVIDERS, Verdict
from .errors import StageError, first_line

log = logging.getLogger("edgekit")
# onnxruntime's usability checker's verdicts (PartitioningInfo.suitability), worst first: a verdict gate's value is the
# index. "no" is its "not recommended": more than 2 partitions, or 1-2 holding too few nodes (worse than the CPU EP).
VERDICTS = typing.get_args(Verdict)
# What the checker's log says of each (print_analysis), for the report.
VERDICT_SAYS = {"yes": "should work well", "maybe": "may work: performance testing is required",
                "no": "not recommended: most likely slower than the CPU provider alone"}
# The model a package's build would give each provider: CoreML has no QuantizeLinear/DequantizeLinear builders,
# so a CoreML build ships the fp32 model (TARGETS.md); its prediction on the int8 graph was 0/28 nodes. That model's
# inputs are fixed to the data's shapes (model.coreml.onnx): the checker counts only fixed-shape nodes for CoreML, and
# the EP's RequireStaticInputShapes option takes only those (dynamic ones it may take, at a cost: EP docs).
SHIPS_FP32_TO = {"coreml"}
# Which onnxruntime build runs an .ort file as intended, per optimization style (onnxruntime's ORT format docs).
ORT_BUILDS = {
    "Runtime": "a minimal build with --minimal_build extended, or a full build, replays its saved runtime "
               "optimisations (fused QLinear* kernels; required_operators.config lists them) in a session with "
               "session.enable_saved_runtime_optimizations=1 (among the runtime section config entries), as "
               "golden.ort.npz records; without it the file runs unfused (DequantizeLinear into float ops), slower",
    "Fixed": "any build with the operators in required_operators.config (optimisations already applied)",
}
# What runs the fp32 .ort a package ships for SHIPS_FP32_TO (ORT format docs: compiling EPs need an extended build).
FP32_BUILD = ("an onnxruntime build with the CoreML EP (minimal: --minimal_build extended --use_coreml "
              "--include_ops_by_config required_operators.config, which lists its operators too); CoreML takes "
              "the nodes it can (mobile_coverage), the CPU provider the rest; its inputs are fixed to the shapes "
              "given here (feed exactly those); golden.coreml.ort.npz records the CPU provider's outputs in a full "
              "build")


def coreml_format(options: dict) -> str:
    """The Core ML model the CoreML EP builds with these provider options: a NeuralNetwork unless ModelFormat says
    MLProgram (CoreML EP docs). onnxruntime's checker has a supported-ops table for each: digits' fp32 model was
    9/9 nodes in 1 partition as NeuralNetwork, 8/9 in 2 as MLProgram."""
    return (options.get(COVERAGE_PROVIDERS["coreml"]) or {}).get("ModelFormat", "NeuralNetwork")


def label(ep: str, options: dict) -> str:
    """A coverage provider as the manifest and report name it: CoreML with the model format its options give."""
    return f"CoreML {coreml_format(options)}" if ep == "coreml" else "NNAPI"


def fp32_providers(coverage: tuple[str, ...], options: dict) -> list[str]:
    """The providers among a profile's coverage checks whose build ships the fp32 model (CoreML)."""
    return [label(ep, options) for ep in coverage if ep in SHIPS_FP32_TO]


def to_ort(models: list[Path], dest_dir: Path, optimization_style: str, target_platform: str) -> dict:
    """`convert_onnx_models_to_ort` on each model → `<stem>.ort`, and one `required_operators.config` covering
    them all: an app that runs either (int8 on the CPU, fp32 on CoreML) is one minimal build.

    Runtime optimisation style keeps fused CPU-only ops out of NNAPI/CoreML partitions
    (onnxruntime#9054); `target_platform="arm"` keeps int8 QDQ groups for ARM kernels.
    onnxruntime orders parts of the .ort flatbuffer by memory address, so the same model gives
    different bytes from run to run; converting in a child process with address-space
    randomisation off (`setarch -R`) makes the file reproducible (_convert_without_aslr). Each model converts in a
    child of its own, so a file's bytes do not depend on the others. Without setarch the conversion runs in-process
    and the manifest says the .ort files are not reproducible.
    """
    orts, ops, reproducible = {}, {}, True
    for model in models:
        orts[model], lines, alone = _to_ort(model, dest_dir, optimization_style, target_platform)
        reproducible = reproducible and alone
        for line in lines:  # domain;opset;op,op: the union is what the converter writes for several models
            domain, opset, names = line.split(";")
            ops.setdefault((domain, int(opset)), set()).update(names.split(","))
    config = dest_dir / "required_operators.config"
    config.write_text(f"# required operators of {', '.join(p.name for p in orts.values())}\n"
                      + "".join(f"{d};{o};{','.join(sorted(n))}\n" for (d, o), n in sorted(ops.items())),
                      encoding="utf-8")
    return {"ort": orts, "config": config, "reproducible": reproducible}


def replay_error(ort_file: Path) -> str | None:
    """Why onnxruntime cannot load `ort_file` with its saved runtime optimisations replayed (runner.REPLAY), or None
    where it can. 1.32 refused a static-MatMul encoder's ("Not enough produced nodes in the runtime optimization
    record"), with onnxruntime's own converter too: such a file runs on the device only unfused, its sessions then
    without the entry."""
    import onnxruntime as ort

    from .runner import REPLAY

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.add_session_config_entry(*REPLAY)
    try:
        ort.InferenceSession(str(ort_file), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        return first_line(e, 300).rstrip(".")
    return None


def operator_config(models: list[Path], style: str, platform_: str) -> str:
    """The converter's required-operators config for `models`, whose operator lines are to_ort's: one conversion of
    them all in this process makes the union to_ort makes of each model's, whatever their .ort bytes, so check makes
    them again without to_ort's child per model (an interpreter and the converter's imports each). Copied as 0.onnx,
    1.onnx...: the lines do not depend on the names, which are a manifest's (one name given twice is two models)."""
    with tempfile.TemporaryDirectory(prefix="edgekit-ops-") as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        src.mkdir()
        for i, model in enumerate(models):
            shutil.copyfile(model, src / f"{i}.onnx")
        _convert_in_process(src, out, style, platform_)
        configs = list(out.glob("*.config"))
        if len(configs) != 1:
            raise StageError("ORT format conversion", f"expected one .config, found {[p.name for p in configs]}")
        return configs[0].read_text(encoding="utf-8")


def operators_in_child(folder: str, names: str, style: str, platform_: str) -> str:
    """Entry point of check's bounded child (here, not in package_check: the child imports no more than it needs).
    The converter's level is to_ort's whatever the user's environment (_convert_in_process)."""
    import json

    return operator_config([Path(folder) / name for name in json.loads(names)], style, platform_)


def _to_ort(model: Path, dest_dir: Path, style: str, platform_: str) -> tuple[Path, list[str], bool]:
    """One model's .ort in `dest_dir`, its config's operator lines, and whether the .ort is reproducible."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in" / model.name
        src.parent.mkdir()
        shutil.copyfile(model, src)
        out = Path(tmp) / "out"
        reproducible = _convert_without_aslr(src, out, style, platform_)
        if not reproducible:
            _convert_in_process(src, out, style, platform_)
        ort_files = list(out.glob("*.ort"))
        configs = list(out.glob("*.config"))
        if len(ort_files) != 1 or len(configs) != 1:
            raise StageError("ORT format conversion", f"expected one .ort and one .config, found "
                                                      f"{[p.name for p in out.iterdir()] if out.exists() else []}")
        ort = dest_dir / f"{model.stem}.ort"
        shutil.copyfile(ort_files[0], ort)
        # the config's first lines name the temp folder it was made from: keep only the op lists
        lines = [ln for ln in configs[0].read_text(encoding="utf-8").splitlines()
                 if ln and not ln.startswith("#")]
    return ort, lines, reproducible


# onnxruntime.tools' __init__ imports torch where it is installed (0.85 s of the child's 2 s here) for a helper
# the converter does not use: the child hides torch from it (importlib's find_spec then says it is not there).
# It runs on one core: onnxruntime sizes its thread pool by the cores the process may use, and the pool's
# allocations move the addresses the .ort's order follows.
CONVERTER = ("import os, runpy, sys; sys.path[:0] = [p for p in sys.stdin.read().split('\\0') if p]; "
             "sys.modules['torch'] = None; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
             "runpy.run_module('onnxruntime.tools.convert_onnx_models_to_ort', run_name='__main__')")


# The child's whole environment, with what every child has (bounded.CHILD_SETTINGS: telemetry off, as its store,
# trimmed at its size cap by whichever onnxruntime process on the host found it full, moved the converter's heap and
# that child's .ort came out in another order).
CONVERTER_ENV = bounded.spawn_env({"PATH": os.defpath, "LC_ALL": "C", "PYTHONHASHSEED": "0"})


def _convert_without_aslr(src: Path, out: Path, style: str, platform_: str) -> bool:
    """Convert in a child whose memory layout is the same on every run on this host: no address randomisation,
    and nothing of the caller's that moves it. The stack holds the environment and the arguments (TZ loaded a
    zoneinfo file onto the heap, a 1,500-character variable moved the stack, TMPDIR lengthened the paths: each
    gave other .ort bytes, as did a longer PYTHONPATH), so the child gets a fixed environment (CONVERTER_ENV), its
    interpreter's own import path (with this process's before it, on stdin, only for an onnxruntime found elsewhere:
    _import_path) and paths relative to its working folder."""
    setarch = shutil.which("setarch")
    if not setarch or sys.platform != "linux":
        return False
    cmd = [setarch, platform.machine(), "-R", sys.executable, "-I", "-c", CONVERTER, str(src.relative_to(out.parent)),
           "--output_dir", out.name, "--optimization_style", style, "--target_platform", platform_]
    for where in dict.fromkeys([_import_path(), "\0".join(p for p in sys.path if p)]):  # then all of this one's
        result = subprocess.run(cmd, input=where, capture_output=True, text=True, cwd=out.parent, env=CONVERTER_ENV)
        if result.returncode == 0 or "ModuleNotFoundError" not in result.stderr:  # a converter's import elsewhere
            break
        shutil.rmtree(out, ignore_errors=True)
    if result.returncode != 0:
        log.info("setarch -R conversion failed (%s); converting in-process", result.stderr.strip()[-200:])
        shutil.rmtree(out, ignore_errors=True)
        return False
    return True


def _import_path() -> str:
    """What the converting child puts before its own import path: nothing when this process's onnxruntime is the
    interpreter's own (a fixed path, so the same bytes), else this process's whole path (a PYTHONPATH's onnxruntime
    converts, as the manifest's version says)."""
    import onnxruntime

    own = Path(onnxruntime.__file__).parents[1].resolve() in {Path(p).resolve() for p in site.getsitepackages()}
    return "" if own else "\0".join(p for p in sys.path if p)


def _convert_in_process(src: Path, out: Path, style: str, platform_: str) -> None:
    """The converter in this process, at the level setarch's child converts at (its environment is fixed): a user's
    ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL made an export without setarch ship other operator lines
    than check makes again (an honest package failed)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    try:  # the converter prints progress, and logs each config it writes
        with progress.quiet(), _quieter("ort_format_model.utils", logging.WARNING), _without_env(LEVEL_ENV):
            convert_onnx_models_to_ort(src, output_dir=out, optimization_styles=[OptimizationStyle[style]],
                                       target_platform=platform_)
    except Exception as e:
        raise StageError("ORT format conversion", first_line(e)) from e


LEVEL_ENV = "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"


@contextlib.contextmanager
def _without_env(name: str):
    """`name` unset while the block runs, then as the caller had it."""
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


@contextlib.contextmanager
def _quieter(name: str, level: int):
    """An onnxruntime tool's chatty logger at `level` while edgekit calls the tool, then as the caller had it."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def coverage(model_path: Path, eps: tuple[str, ...], options: dict | None = None, data: bytes | None = None) -> dict:
    """onnxruntime's mobile usability checker per EP: a prediction of what NNAPI/CoreML would take, with the
    provider `options` a build gives them (a profile's [runtime] provider_options: CoreML's ModelFormat picks the
    checker's table; none: the EP's default, NeuralNetwork).

    It reads op support tables; QDQ node-unit partitioning on a device can still differ
    (onnxruntime#19590), so this is reported as a prediction, not a guarantee. `data`: the bytes of `model_path`
    already read and walked (a user's file: read again, it may have been swapped since).
    """
    with _quieter("usability_checker", logging.ERROR):
        return _coverage(model_path, eps, options or {}, data)


def _optimized(model_path: Path, optimized: Path, data: bytes | None) -> None:
    """onnx_model_utils.optimize_model's basic-optimised model, of `data` where given (not the file again)."""
    import onnxruntime as ort
    from onnxruntime.tools.onnx_model_utils import optimize_model

    if data is None:
        return optimize_model(Path(model_path), optimized, log_level=4, use_external_initializers=True)
    from .onnx_export import external_data_beside

    so = ort.SessionOptions()
    so.optimized_model_filepath, so.log_severity_level = str(optimized.resolve()), 4
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "external_data.pb")
    external_data_beside(so, Path(model_path))
    ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _coverage(model_path: Path, eps: tuple[str, ...], options: dict, data: bytes | None = None) -> dict:
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo

    with tempfile.TemporaryDirectory() as tmp:
        # the graph the runtime partitions is the basic-optimised one, as onnxruntime's own checker assumes
        optimized = Path(tmp) / model_path.name
        failed, hook = None, sys.unraisablehook
        # a failed ModelProtoWithShapeInfo's __del__ raises too (on the attribute its __init__ never set)
        sys.unraisablehook = lambda u: None if "_tmp_model_path" in str(u.exc_value) else hook(u)
        try:
            _optimized(model_path, optimized, data)
            model = ModelProtoWithShapeInfo(optimized).model_with_shape_info  # strict: a contrary value_info fails
        except Exception as e:
            failed = first_line(e)
        finally:
            sys.unraisablehook = hook
        if failed:
            raise StageError("mobile coverage", failed)
    out, work = {}, node_macs(model)
    _omitted_inputs_are_fixed(model)
    for ep in eps:
        # as the model is (nodes with dynamic shapes unsupported), then as if its shapes were fixed
        try:
            info, fixed = (uc.check_nnapi_partitions(model, require_fixed) if ep == "nnapi" else
                           uc.check_coreml_partitions(model, require_fixed,
                                                      f"coreml_supported_{coreml_format(options).lower()}_ops.md")
                           for require_fixed in (True, False))
        except Exception as e:  # e.g. a com.microsoft op ONNX's shape inference cannot type: no shape to read
            raise StageError("mobile coverage", f"onnxruntime's usability checker: {first_line(e)}") from e
        out[ep] = {
            "provider": label(ep, options),
            "nodes": info.num_nodes,
            "supported_nodes": info.num_supported_nodes,
            "coverage": _compute_share(info, work),
            "coverage_of": COVERAGE_OF,
            "node_coverage": _node_share(info),
            "macs": sum(work.values()),
            "partitions": info.num_partitions,
            "cpu_fallback_ops": sorted(op.split(":")[-1] for op in info.unsupported_ops),
            "nodes_blocked_by_dynamic_shapes": info.nodes_unsupported_due_to_dynamic_input,
            "coverage_with_fixed_shapes": _compute_share(fixed, work),
            "node_coverage_with_fixed_shapes": _node_share(fixed),
            "verdict": info.suitability().name.lower() if info.num_nodes else "n/a (no nodes)",
            "note": "prediction from onnxruntime's usability checker on the basic-optimised graph, not a device "
                    "measurement",
        }
    return out


def _omitted_inputs_are_fixed(model) -> None:
    """Give the checker a fixed shape for '', an omitted optional input (the roi of every Resize torch exports).
    Its _check_partitioning_for_graph (usability_checker.py) counts a node's inputs fixed only if each name in
    node.input is an initializer or has a fixed value_info, so '' blocked every Resize: a model upsampling twice
    was 3 NNAPI partitions (verdict no), 1 with this (yes). The EPs skip inputs that do not exist: NNAPI's
    BaseOpBuilder::HasSupportedInputOutputs since onnxruntime 1.16 (onnxruntime#17358, for this Resize),
    CoreML's IsInputSupported (coreml/builders/helper.cc). A scalar: is_fixed_size_tensor takes a 0 dim as dynamic."""
    import onnx

    from .onnx_export import all_nodes

    if any("" in n.input for n in all_nodes(model.graph)):
        model.graph.value_info.append(onnx.helper.make_tensor_value_info("", onnx.TensorProto.FLOAT, []))


COVERAGE_OF = ("share of the model's multiply-accumulates (Conv, MatMul, Gemm, LSTM/GRU/RNN; other arithmetic "
               "nodes 1 per element, layout nodes 0; unknown dims as 1) on the nodes the provider is predicted to "
               "take; node_coverage is the share of nodes")
# Nodes that move or index data without arithmetic: they weigh nothing in the coverage.
LAYOUT_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Gather",
              "GatherElements", "GatherND", "Shape", "Size", "Identity", "Expand", "Tile", "Pad", "Cast", "Constant",
              "ConstantOfShape", "DepthToSpace", "SpaceToDepth", "Dropout", "If", "Loop", "Scan"}


def _node_share(info) -> float:
    return round(info.num_supported_nodes / info.num_nodes, 4) if info.num_nodes else 0.0


def _compute_share(info, work: dict[tuple, int]) -> float:
    """The MACs of the nodes the checker put in a partition over all; by nodes when no node computes anything.
    An LSTM model's two LSTM nodes fell back to the CPU: 11/13 nodes (0.85, the gate passed) but 0.02% of its MACs."""
    total = sum(work.values())
    if not total:
        return _node_share(info)
    return round(sum(work.get(tuple(n.output), 0) for group in info.supported_groups for n in group) / total, 4)


def node_macs(model) -> dict[tuple, int]:
    """{node's outputs: multiply-accumulates of one run} for every node of a shape-inferred ModelProto, subgraphs'
    too (the checker's partitions hold those). By outputs, not id(): a NodeProto's Python object is made anew
    when the last one is dropped. A dim without a value counts as 1."""
    from .onnx_export import all_nodes

    graphs, shapes = [model.graph], {}
    while graphs:
        g = graphs.pop()
        for v in (*g.input, *g.output, *g.value_info):
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
                shapes[v.name] = [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
        shapes.update((t.name, list(t.dims)) for t in g.initializer)
        graphs += [a.g for n in g.node for a in n.attribute if a.HasField("g")]
    size = lambda name: math.prod(shapes[name]) if name in shapes else 0  # noqa: E731
    return {tuple(n.output): _macs(n, shapes, size) for n in all_nodes(model.graph)}


def _macs(n, shapes: dict, size) -> int:
    """One node's MACs: a weighted op's by its shapes, a layout op's 0, any other op's one per element."""
    op, ins, out = n.op_type, list(n.input), n.output[0] if n.output else ""
    if op in LAYOUT_OPS:
        return 0
    w = {"Conv": 1, "ConvInteger": 1, "FusedConv": 1, "QLinearConv": 3, "ConvTranspose": 1}.get(op)
    if w is not None and len(ins) > w and ins[w] in shapes:  # each output (input, transposed) element: Cin/g x kernel
        return size(ins[0] if op == "ConvTranspose" else out) * math.prod(shapes[ins[w]][1:])
    if op in ("MatMul", "MatMulInteger", "FusedMatMul", "QLinearMatMul", "MatMulIntegerToFloat", "Gemm", "QGemm") \
            and ins[0] in shapes and shapes[ins[0]]:
        a = shapes[ins[0]]
        trans = any(x.name == "transA" and x.i for x in n.attribute) and op in ("Gemm", "QGemm")
        return size(out) * (a[0] if trans else a[-1])
    if op in ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM") and ins[0] in shapes and shapes[ins[0]]:
        steps = size(ins[0]) // max(shapes[ins[0]][-1], 1)  # seq x batch
        return steps * (size(ins[1]) + size(ins[2]))  # W [dirs, gates x H, I] and R [dirs, gates x H, H]
    return max(size(ins[0]) if ins and ins[0] else 0, size(out))


def _in_place(model: Path) -> str:
    """The header's word on running from the embedded bytes: an .ort can, an ONNX protobuf is copied."""
    if model.suffix == ".ort":
        return ("The ORT-format model the package ships (a minimal onnxruntime build\n"
                " * reads only these). To run from these bytes in place, set the session options\n")
    return ("onnxruntime copies an ONNX protobuf's bytes into the session it builds\n"
            " * (CreateSessionFromArray): the array is then only a source. To run from these bytes in place, embed\n"
            " * an ORT-format model (.ort: a profile with ort_format ships one; onnxruntime's\n"
            " * convert_onnx_models_to_ort makes one) instead and set the session options\n")


def c_header(model: Path, dest_dir: Path, name: str = C_NAME) -> dict[str, Path]:
    """`<name>_data.h` declaring an aligned byte array, its length and sha256; `<name>_data.S` (`.incbin`, for any
    size) and `<name>_data.c` (a byte list, for tiny models or toolchains without GNU as) defining them. Every C
    name holds `name` (`edgekit_<name>_data`, `EDGEKIT_<NAME>_SIZE`): two models link into one firmware."""
    data = model.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    banner = f"/* {model.name}: {len(data)} bytes, sha256 {digest}. Generated by edgekit. */\n"
    header, source, assembly = (dest_dir / f"{name}_data.{kind}" for kind in ("h", "c", "S"))
    sym, macro = f"edgekit_{name}", f"EDGEKIT_{name.upper()}"
    header.write_text(
        f"{banner}#ifndef {macro}_DATA_H\n#define {macro}_DATA_H\n\n#include <stddef.h>\n\n"
        f"#define {macro}_SIZE {len(data)}u\n"
        f"#define {macro}_SHA256 \"{digest}\"\n\n"
        "/* Link ONE of the two definitions:\n"
        f" * - {assembly.name}: `cc -c {assembly.name} -I <this folder>` (.incbin of the model file beside it:\n"
        " *   an 11.8 MB ResNet18-style int8 model assembles in 0.12 s and 18 MB, its byte list compiles in 30 s\n"
        " *   and 1.7 GB);\n"
        f" * - {source.name}: the bytes as a C array, for tiny models or toolchains without GNU as.\n"
        f" * 64-byte aligned, read-only. {_in_place(model)}"
        " * session.use_ort_model_bytes_directly = 1 and session.use_ort_model_bytes_for_initializers = 1,\n"
        " * keeping the bytes alive for the session's lifetime (onnxruntime 1.32, ResNet18-style, x86: 6 ms\n"
        " * load in place vs 36-39 ms copied). */\n"
        f"extern const unsigned char {sym}_data[{macro}_SIZE];\n"
        f"extern const size_t {sym}_size;\n"
        f"extern const char {sym}_sha256[];\n\n#endif /* {macro}_DATA_H */\n", encoding="utf-8")
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + 16]) for i in range(0, len(data), 16)]
    source.write_text(
        f"{banner}#include \"{header.name}\"\n\n"
        "#if defined(_MSC_VER)\n__declspec(align(64))\n#endif\n"
        f"const unsigned char {sym}_data[{macro}_SIZE]\n"
        "#if defined(__GNUC__) || defined(__clang__)\n    __attribute__((aligned(64)))\n#endif\n"
        "    = {\n    " + ",\n    ".join(rows) + "\n};\n\n"
        f"const size_t {sym}_size = sizeof({sym}_data);\n"
        f"const char {sym}_sha256[] = {macro}_SHA256;\n", encoding="utf-8")
    assembly.write_text(
        f"{banner}/* GNU as (x86-64, aarch64): cc -c {assembly.name} -I <the folder holding {model.name}>, run from a\n"
        f"   folder holding no other {model.name}: as reads its own first, and only another size is caught */\n"
        f"    .section .rodata.{sym}, \"a\"\n"
        f"    .balign 64\n    .global {sym}_data\n    .type {sym}_data, %object\n"
        f"{sym}_data:\n    .incbin \"{model.name}\"\n{sym}_data_end:\n"
        # as looks in the working folder before -I: another target's model of that name was embedded silently
        f"    .if {sym}_data_end - {sym}_data - {len(data)}\n"
        f"    .error \"{model.name} is not the {len(data)}-byte model of this header: assemble with -I its folder, "
        "from another folder\"\n    .endif\n"
        f"    .size {sym}_data, {sym}_data_end - {sym}_data\n\n"
        f"    .balign 8\n    .global {sym}_size\n    .type {sym}_size, %object\n"
        f"{sym}_size:\n    .quad {sym}_data_end - {sym}_data\n"
        f"    .size {sym}_size, 8\n\n"
        f"    .global {sym}_sha256\n    .type {sym}_sha256, %object\n"
        f"{sym}_sha256:\n    .asciz \"{digest}\"\n    .size {sym}_sha256, {len(digest) + 1}\n\n"
        "    .section .note.GNU-stack, \"\", %progbits\n", encoding="utf-8")
    return {"header": header, "source": source, "assembly": assembly}
