"""What a package's model files say of themselves against what manifest.json says of them, for `edgekit check`.

Hashes only prove the files are the ones the manifest lists, and anyone sending a package can re-hash it: the fp32
model copied over model.int8.onnx, or another target's int8 model, passed check. Each claim here is one the graph
decides (quantization nodes, weight types, inputs, opset, the metadata edgekit stamps), read once per file.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import few
from .quantization import INTEGER_OPS, WEIGHTED, runs_int8
from .report import printable

# onnx's TensorProto data types, which the ORT format's TensorDataType numbers alike
DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
          10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}
SMALL_INTS = {"uint8", "int8", "uint16", "int16"}
EIGHT_BITS = {"uint8", "int8"}
NOTHING_QUANTIZED_GATE = "int8_quantized"  # parity.NOTHING_QUANTIZED_GATE: the export said so itself
INT8_MODELS = ("model.int8.onnx", "model.int8.ort")


@dataclass
class Graph:
    """The facts of one model file check holds claims to: nodes as (op, inputs, outputs), initializers' dtypes and
    dims, the graph inputs (name, dtype, dims: an int, or None for a named or unknown dim), opset and metadata."""
    nodes: list[tuple[str, list[str], list[str]]] = field(default_factory=list)
    initializers: dict[str, tuple[str, list[int]]] = field(default_factory=dict)
    inputs: list[tuple[str, str, list[int | None]]] = field(default_factory=list)
    opset: int = 0
    metadata: dict[str, str] = field(default_factory=dict)


def read_onnx(path: Path, here: bool = False) -> Graph:
    """An .onnx file's facts (its sub-graphs' nodes too), without its external data. `here` (check's own process):
    the bytes parsed are those counted, NotHere past IN_PROCESS_BYTES (a file swapped after model_claims counted
    it, small, was parsed here whatever it had become)."""
    import onnx

    model = onnx.load_model_from_string(_small_onnx(path)) if here else onnx.load(str(path), load_external_data=False)
    found, graphs = Graph(), [model.graph]
    while graphs:
        g = graphs.pop()
        found.nodes += [(n.op_type, list(n.input), list(n.output)) for n in g.node]
        found.initializers.update((t.name, (DTYPES.get(t.data_type, str(t.data_type)), list(t.dims)))
                                  for t in g.initializer)
        graphs += [a.g for n in g.node for a in n.attribute if a.HasField("g")]
        graphs += [s for n in g.node for a in n.attribute for s in a.graphs]
    own = {t.name for t in model.graph.initializer}
    found.inputs = [(i.name, DTYPES.get(i.type.tensor_type.elem_type, str(i.type.tensor_type.elem_type)),
                     [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
                      for d in i.type.tensor_type.shape.dim])
                    for i in model.graph.input if i.name not in own]
    found.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    found.metadata = {p.key: p.value for p in model.metadata_props}
    return found


def _small_onnx(path: Path) -> bytes:
    """`path`'s bytes, read once, where its graph is no more than IN_PROCESS_BYTES (NotHere where it is more)."""
    from .graph_bytes import graph_bytes_of

    with open(path, "rb") as f:
        data = f.read(IN_PROCESS_FILE_BYTES + 1)
    if len(data) > IN_PROCESS_FILE_BYTES or graph_bytes_of(data, IN_PROCESS_BYTES) > IN_PROCESS_BYTES:
        raise NotHere(path.name)
    return data


def read_ort(path: Path, most: int | None = None) -> Graph:
    """An ORT-format file's facts, from its flatbuffer (no session: nothing of it runs here); `most`: see _Reads."""
    fbs = _flatbuffers()
    data = path.read_bytes()
    model = fbs.InferenceSession.InferenceSession.GetRootAsInferenceSession(data, 0).Model()
    reads = _Reads(path, len(data), most)
    g, text = model.Graph(), reads.text
    if most is not None and g.NodesLength() + g.NodeArgsLength() + g.InitializersLength() + \
            INPUT_ENTRIES * g.InputsLength() > IN_PROCESS_ORT_ENTRIES:
        raise NotHere(path.name)
    found = Graph()
    for i in range(g.NodesLength()):
        n = g.Nodes(i)
        found.nodes.append((text(n.OpType()), [text(n.Inputs(k)) for k in range(n.InputsLength())],
                            [text(n.Outputs(k)) for k in range(n.OutputsLength())]))
    for i in range(g.InitializersLength()):
        t = g.Initializers(i)
        found.initializers[text(t.Name())] = (DTYPES.get(t.DataType(), str(t.DataType())),
                                              [int(t.Dims(k)) for k in range(reads.items(t.DimsLength()))])
    args = {text(a.Name()): a for a in (g.NodeArgs(i) for i in range(g.NodeArgsLength()))}
    for name in (text(g.Inputs(i)) for i in range(g.InputsLength())):
        if name not in found.initializers and name in args:
            found.inputs.append((name, *_ort_tensor_type(args[name], fbs, reads)))
    found.opset = next((o.Version() for o in (model.OpsetImport(i) for i in range(model.OpsetImportLength()))
                        if text(o.Domain()) in ("", "ai.onnx")), 0)
    found.metadata = {text(p.Key()): text(p.Value()) for p in (model.MetadataProps(i)
                                                               for i in range(model.MetadataPropsLength()))}
    return found


def operators(path: Path) -> set[str]:
    """The operators a model file's main graph holds, as `domain.op` (ai.onnx for the default domain): what a
    Fixed-style .ort holds against its .onnx (com.microsoft NHWC kernels a compiling provider may not take)."""
    if path.suffix != ".ort":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        return {f"{n.domain or 'ai.onnx'}.{n.op_type}" for n in graph.node}
    fbs, data = _flatbuffers(), path.read_bytes()
    g, reads = fbs.InferenceSession.InferenceSession.GetRootAsInferenceSession(data, 0).Model().Graph(), \
        _Reads(path, len(data))
    return {f"{reads.text(n.Domain()) or 'ai.onnx'}.{reads.text(n.OpType())}"
            for n in (g.Nodes(i) for i in range(g.NodesLength()))}


class _Reads:
    """What reading an .ort's names costs, held to its size: a flatbuffer's entries are offsets, so 4,000 node entries
    naming one node whose 4,000 inputs name one string (32 KB) made 16 million strings (39 s, 1.2 GB, growing with the
    square of the file's size). Each name read is charged as the memory it takes; a file's own names, each entry at
    least 4 bytes of it, cost far less than MEMORY_PER_BYTE times its size (measured: 0.4x for digits' int8 .ort,
    0.08x for MobileNetV2's, 0.25x for a 24-layer encoder's). The slack lets a tiny file name its parts freely."""
    NAME_COST = 64  # bytes of a Python string and its list slot, besides its characters
    MEMORY_PER_BYTE = 16
    SLACK = 1 << 20

    def __init__(self, path: Path, size: int, most: int | None = None):
        """`most`: at most this many bytes read, where the file's size allows more (NotHere past them)."""
        own = self.SLACK + self.MEMORY_PER_BYTE * size
        self.path, self.left, self.here = path, min(own, most or own), bool(most) and most < own

    def items(self, count: int) -> int:
        """`count` numbers read (a shared list of dims is read once per entry naming it)."""
        self._charge(self.NAME_COST * count)
        return count

    def text(self, raw: bytes | None) -> str:
        self._charge(self.NAME_COST + len(raw or b""))
        return raw.decode("utf-8", "replace") if raw is not None else ""

    def _charge(self, cost: int) -> None:
        self.left -= cost
        if self.left < 0 and self.here:
            raise NotHere(self.path.name)
        if self.left < 0:
            raise ValueError(f"{self.path.name}: its entries name the same parts over and over (more names than "
                             "a file of its size holds)")


class NotHere(Exception):
    """An .ort whose names pass what check reads of it in its own process (IN_PROCESS_ORT_NAMES): a bounded child
    reads them."""


def _flatbuffers():
    """onnxruntime's ORT-format reader. onnxruntime.tools' __init__ imports torch where it is installed (1.1 s here)
    for a helper the reader does not use: check needs no torch, so it is hidden from that import. The reader's
    package appends its folder to sys.path, which an API caller's import path must not keep (its modules are all
    imported by then, under the names their code imports them by). Its import sets its logger to DEBUG, and a
    script's logging configuration must not find one of onnxruntime's at a level it did not set."""
    import logging
    import sys

    hidden, path = "torch" not in sys.modules, list(sys.path)
    known = set(logging.root.manager.loggerDict)
    if hidden:
        sys.modules["torch"] = None  # importlib's find_spec then says it is not there
    try:
        from onnxruntime.tools.ort_format_model.ort_flatbuffers_py import fbs
    finally:
        if hidden:
            del sys.modules["torch"]
        sys.path[:] = path
        for name in set(logging.root.manager.loggerDict) - known:
            logging.getLogger(name).setLevel(logging.NOTSET)
    return fbs


def _ort_tensor_type(arg, fbs, reads: _Reads) -> tuple[str, list[int | None]]:
    """A NodeArg's tensor dtype and dims ("?" and [] where it is no tensor)."""
    info = arg.Type()
    if info is None or info.ValueType() != fbs.TypeInfoValue.TypeInfoValue.tensor_type:
        return "?", []
    tensor = fbs.TensorTypeAndShape.TensorTypeAndShape()
    tensor.Init(info.Value().Bytes, info.Value().Pos)
    shape, dims = tensor.Shape(), []
    for k in range(reads.items(shape.DimLength() if shape is not None else 0)):
        value = shape.Dim(k).Value()
        fixed = value is not None and value.DimType() == fbs.DimensionValueType.DimensionValueType.VALUE
        dims.append(value.DimValue() if fixed and value.DimValue() >= 0 else None)
    return DTYPES.get(tensor.ElemType(), str(tensor.ElemType())), dims


def read(path: Path, most: int | None = None) -> Graph:
    return read_ort(path, most) if path.suffix == ".ort" else read_onnx(path, most is not None)


# a model file larger is read in a bounded child: onnx.load and the facts kept of it take ~180 bytes of memory and
# ~5 µs a byte of a graph of empty nodes (2 bytes each): a 4 MB model.onnx took check 21 s and 786 MB here,
# 20 MB 3.6 GB
IN_PROCESS_BYTES = 256 << 10
# a model file larger is read in the child whatever it holds: onnx.load keeps the file's bytes twice over
IN_PROCESS_FILE_BYTES = 64 << 20
# an .ort's names read in this process at most (_Reads' estimate of their memory), as many as an .ort of
# IN_PROCESS_BYTES may name; past them, the bounded child reads it. Its size is mostly weights: a child's start cost
# check ~0.75 s a target for any .ort past IN_PROCESS_BYTES (MobileNetV2's names: ~0.3 MB). A file naming one part
# over and over takes ~1 s to reach them (46 MB of names took 15 s)
IN_PROCESS_ORT_NAMES = (1 << 20) + 16 * IN_PROCESS_BYTES  # _Reads.SLACK + MEMORY_PER_BYTE * IN_PROCESS_BYTES
# and its entries (nodes, node args, initializers; a graph input, its type read too, as INPUT_ENTRIES), counted before
# any is read: python's flatbuffers take ~0.05-0.2 ms an entry, ~0.25 ms a graph input, and 81,000 inputs naming one
# node arg (within IN_PROCESS_ORT_NAMES) took check 3-12 s here before the child was asked. A 24-layer encoder's .ort
# holds ~5,000 (digits' 36)
IN_PROCESS_ORT_ENTRIES, INPUT_ENTRIES = 16_000, 4


def model_claims(folder: Path, manifest: dict, models: list[str]) -> dict[str, str]:
    """{model file: what manifest.json says of it that its graph contradicts ("" if nothing)}, for the shipped
    `models`. A file that cannot be parsed is left to its parity case, which says it does not load. Where one is
    larger than IN_PROCESS_BYTES, they are read in a bounded child: one that dies is a StageError, never a pass."""
    if any(_graph_bytes(folder / name) > IN_PROCESS_BYTES for name in models):
        return _claims_bounded(folder, manifest, models)
    try:
        return _claims_here(folder, manifest, models, IN_PROCESS_ORT_NAMES)
    except NotHere:
        return _claims_bounded(folder, manifest, models)


def _graph_bytes(path: Path) -> int:
    """The bytes of a model file that parsing it costs per byte: an .onnx's all but its initializers' data (a
    MobileNetV2's 3.6 MB int8 model: 120 KB, read here, where a child's start cost 0.7 s a target), counted up to
    just past IN_PROCESS_BYTES; a file's past IN_PROCESS_FILE_BYTES, whole size; an .ort's 0: its names are read
    here up to IN_PROCESS_ORT_NAMES."""
    from .graph_bytes import graph_bytes

    try:
        size = path.stat().st_size
        if size <= IN_PROCESS_BYTES or size > IN_PROCESS_FILE_BYTES:
            return size
        if path.suffix == ".ort":
            return 0
        return graph_bytes(path, IN_PROCESS_BYTES)
    except (OSError, ValueError):
        return 1 << 62  # whatever it holds, the bounded child tells it


def _claims_bounded(folder: Path, manifest: dict, models: list[str]) -> dict[str, str]:
    """model_claims in a bounded child (time and address space capped), the manifest handed over in a file."""
    import tempfile

    from . import bounded
    from .runtime import run_limit

    seconds, raised_by = run_limit()
    with tempfile.TemporaryDirectory(prefix="edgekit-claims-") as tmp:
        (Path(tmp) / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        # a file the child cannot parse (its MemoryError too) is skipped there, as here; a child that died (killed
        # out of memory) or failed is a failed step (exit 4): its claims were never read, so they cannot pass
        return json.loads(bounded.run("check model claims", "edgekit.model_claims:claims_in_child", str(folder),
                                      str(Path(tmp) / "manifest.json"), json.dumps(models), timeout=seconds,
                                      raised_by=raised_by))


def claims_in_child(folder: str, manifest: str, models: str) -> str:
    """Entry point of the bounded child: _claims_here, as JSON."""
    return json.dumps(_claims_here(Path(folder), json.loads(Path(manifest).read_text(encoding="utf-8")),
                                   json.loads(models)))


def _claims_here(folder: Path, manifest: dict, models: list[str], most: int | None = None) -> dict[str, str]:
    """`most`: an .ort's names read at most (NotHere past them; None: as many as its size allows)."""
    said, graphs = {}, {}
    for name in models:
        try:
            graphs[name] = read(folder / name, most)
        except NotHere:
            raise
        except Exception:  # a file from others (cut short): never a crash
            continue
    for name, graph in graphs.items():
        spec = _input_specs(manifest, name)
        said[name] = "; ".join(filter(None, (
            _metadata_claims(name, graph, manifest), _opset_claim(name, graph, manifest),
            _quantized_claim(name, graph, manifest), *_weight_claims(name, graph, manifest),
            _release_claim(name, manifest),
            *_input_claims(name, graph, spec, "inputs"), *_unnamed_inputs(name, graph, spec),
            *(_fixed_claims(name, graph, manifest) if name.startswith(("model.onnx", "model.int8")) else ()),
            *(_pixel_claims(name, graph, manifest) if name == "model.int8.onnx" else ()))))
    for session in _sessions(manifest):  # what report.md tells an app to feed each runtime model
        model = session.get("model")
        if model in graphs and isinstance(session.get("inputs"), list):
            found = _input_claims(model, graphs[model], session["inputs"], f"runtime session {model}'s inputs")
            found += _layout_claims(model, graphs[model], session["inputs"])
            said[model] = "; ".join(filter(None, (said.get(model), *found)))
    return {name: printable(why) for name, why in said.items()}  # names and values from others: one line


def _release_claim(name: str, manifest: dict) -> str:
    """`runtime.onnxruntime.minimum`, the release a build engineer builds for the package, is the one that made and
    checked it (versions.onnxruntime): an .ort loads in no older release, and older ones are not checked."""
    versions, runtime = manifest.get("versions"), manifest.get("runtime")
    made = versions.get("onnxruntime") if isinstance(versions, dict) else None
    release = runtime.get("onnxruntime") if isinstance(runtime, dict) else None
    minimum = release.get("minimum") if isinstance(release, dict) else None
    if name != "model.int8.onnx" or made is None or release is None or minimum == made:
        return ""
    return f"runtime.onnxruntime.minimum is {minimum!r}, not the release that made and checked the package ({made})"


def _sessions(manifest: dict) -> list[dict]:
    runtime = manifest.get("runtime")
    sessions = runtime.get("sessions") if isinstance(runtime, dict) else None
    return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []


def _input_specs(manifest: dict, name: str):
    """The inputs the manifest gives for a model: a CoreML build's fp32 model has its own fixed ones."""
    fp32 = (manifest.get("ort_format") or {}).get("fp32") or {}
    if name in (fp32.get("onnx"), fp32.get("file")):
        return fp32.get("inputs")
    return manifest.get("inputs")


def _metadata_claims(name: str, graph: Graph, manifest: dict) -> str:
    """The target edgekit stamps in each model it ships (none before it did): another target's model copied in."""
    made_for = graph.metadata.get("edgekit_target")
    if made_for is None or made_for == manifest["target"]:
        return ""
    return f"{name}'s metadata says edgekit_target {made_for[:60]!r}, the manifest {manifest['target']!r}"


def _opset_claim(name: str, graph: Graph, manifest: dict) -> str:
    """The fp32 models are of the manifest's opset; the int8 one no lower (onnxruntime's quantizer may raise it)."""
    opset = manifest.get("opset")
    if type(opset) is not int or not graph.opset:
        return ""
    if graph.opset < opset or graph.opset != opset and name not in INT8_MODELS:
        return f"{name} is opset {graph.opset}, the manifest says opset {opset}"
    return ""


def _quantized_claim(name: str, graph: Graph, manifest: dict) -> str:
    """An int8 model runs a compute node in int8, unless the export itself said it quantizes nothing (its failed
    int8_quantized gate): a QuantizeLinear that nothing reads, or whose tensor reaches only float weights, made the
    fp32 model "quantized"."""
    if name not in INT8_MODELS or any(g.get("name") == NOTHING_QUANTIZED_GATE for g in manifest["gates"]):
        return ""
    if runs_int8(graph.nodes, any(t in SMALL_INTS for t, _ in graph.initializers.values())):
        return ""
    quant = manifest.get("quantization")
    mode = " ".join(str(quant[k]) for k in ("mode", "format") if quant.get(k)) if isinstance(quant, dict) else ""
    return (f"{name} runs no {', '.join(sorted(WEIGHTED)[:-1])} or {sorted(WEIGHTED)[-1]} in int8 (an integer op, or "
            f"one reading its input and weight through DequantizeLinear), the manifest says it is {mode or 'an'} int8")


def _weights(graph: Graph) -> list[tuple[str, str, list[int]]]:
    """(op, dtype, scale dims) of each 8-bit weight a weighted op reads through a DequantizeLinear (QDQ), or an
    integer op takes (QOperator's QLinearConv, QLinearMatMul, QGemm; dynamic mode's ConvInteger, MatMulInteger)."""
    inits, readers = graph.initializers, {}
    for op, inputs, _ in graph.nodes:
        if op in WEIGHTED and len(inputs) > WEIGHTED[op]:
            readers.setdefault(inputs[WEIGHTED[op]], []).append(op)
    qdq = [(op, inits[i[0]][0], inits[i[1]][1] if len(i) > 1 and i[1] in inits else [])
           for kind, i, out in graph.nodes if kind == "DequantizeLinear" and i and i[0] in inits
           and inits[i[0]][0] in EIGHT_BITS and out for op in readers.get(out[0], [])]
    return qdq + [(float_op, inits[i[w]][0], inits[i[scale]][1] if len(i) > scale and i[scale] in inits else [])
                  for kind, i, _ in graph.nodes if kind in INTEGER_OPS
                  for float_op, w, scale in [INTEGER_OPS[kind]] if len(i) > w and i[w] in inits
                  and inits[i[w]][0] in EIGHT_BITS]


def _weight_claims(name: str, graph: Graph, manifest: dict) -> list[str]:
    """An int8 model's 8-bit weights (what Conv, Gemm, MatMul read through a DequantizeLinear, or integer ops take)
    are of the manifest's weight_type, per channel (a scale per output channel) only where it says per_channel (a
    static model's Conv always then: dynamic mode's ConvInteger is per tensor), and its activations' zero points of
    its activation_type (DynamicQuantizeLinear's uint8). 16-bit types are a precision choice of their own."""
    quant = manifest.get("quantization")
    static = isinstance(quant, dict) and quant.get("mode") == "static" and quant.get("format") in ("QDQ", "QOperator")
    if name not in INT8_MODELS or not (static or isinstance(quant, dict) and quant.get("mode") == "dynamic"):
        return []
    weights, bad = _weights(graph), []
    said = quant.get("weight_type")
    if said in EIGHT_BITS and (other := sorted({dtype for _, dtype, _ in weights} - {said})):
        bad.append(f"{name}'s weights are {'/'.join(other)}, the manifest's quantization says weight_type {said}")
    per_channel = sum(len(dims) > 0 and math.prod(dims) > 1 for _, _, dims in weights)
    per_tensor_convs = sum(op == "Conv" and not dims for op, _, dims in weights)
    if quant.get("per_channel") is False and per_channel:
        bad.append(f"{name} has {per_channel} weight(s) quantized per channel, the manifest's quantization says "
                   "per_channel false")
    elif static and quant.get("per_channel") is True and per_tensor_convs:
        bad.append(f"{name} has {per_tensor_convs} Conv weight(s) quantized per tensor, the manifest's quantization "
                   "says per_channel true")
    inits = graph.initializers
    zero_points = {inits[i[2]][0] for op, i, _ in graph.nodes if op == "QuantizeLinear" and len(i) > 2
                   and i[0] not in inits and i[2] in inits} | {"uint8" for op, _, _ in graph.nodes
                                                               if op == "DynamicQuantizeLinear"}
    said = quant.get("activation_type")
    if said in EIGHT_BITS and (other := sorted(zero_points & EIGHT_BITS - {said})):
        bad.append(f"{name}'s activations are quantized to {'/'.join(other)}, the manifest's quantization says "
                   f"activation_type {said}")
    return bad


def _input_claims(name: str, graph: Graph, specs, what: str) -> list[str]:
    """Each input the manifest lists is one the model takes, of its dtype, rank and fixed sizes (a named dim is
    one the model leaves open)."""
    if not isinstance(specs, list):
        return []
    takes, bad = {n: (dtype, dims) for n, dtype, dims in graph.inputs}, []
    for spec in (s for s in specs if isinstance(s, dict) and isinstance(s.get("name"), str)):
        if spec["name"] not in takes:
            bad.append(f"{what} name {spec['name'][:80]!r}, which {name} does not take (it takes "
                       f"{few(sorted(takes), 4)})")
            continue
        dtype, dims = takes[spec["name"]]
        shape = spec.get("shape")
        said = [d if type(d) is int else None for d in shape] if isinstance(shape, list) else None
        if spec.get("dtype") != dtype or said != dims:
            bad.append(f"{what} give {spec['name'][:80]!r} as {str(spec.get('dtype'))[:20]} {_shape(shape)}, "
                       f"{name} takes {dtype} {_shape(dims)}")
    return bad


def _unnamed_inputs(name: str, graph: Graph, specs) -> list[str]:
    """Each input the model takes is one the manifest lists: an app is told to feed those alone (a runtime session's
    model is a shipped one, said once here)."""
    if not isinstance(specs, list):
        return []
    named = {s["name"] for s in specs if isinstance(s, dict) and isinstance(s.get("name"), str)}
    return [f"{name} takes input {n[:80]!r}, which inputs do not name (they name "
            f"{few([s[:80] for s in sorted(named)], 4)})" for n, _, _ in graph.inputs if n not in named]


def _fixed_claims(name: str, graph: Graph, manifest: dict) -> list[str]:
    """fixed_input_shapes: the sizes the shipped models' inputs were fixed to."""
    fixed = manifest.get("fixed_input_shapes")
    takes = {n: dims for n, _, dims in graph.inputs}
    return [f"fixed_input_shapes gives {n!r} {_shape(shape)}, {name} takes {_shape(takes[n])}"
            for n, shape in (fixed.items() if isinstance(fixed, dict) else ())
            if n in takes and shape != takes[n]]


def _contract(graph: Graph) -> dict[str, dict]:
    """The input contract edgekit stamps in a model (edgekit_input_contract): {input: its entry}."""
    try:
        entries = json.loads(graph.metadata.get("edgekit_input_contract", "[]"))
    except (ValueError, RecursionError):  # a file from others: no contract to hold anything to
        return {}
    return {e["name"]: e for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)} \
        if isinstance(entries, list) else {}


def _pixel_claims(name: str, graph: Graph, manifest: dict) -> list[str]:
    """image_uint8 names the uint8 input whose normalisation is folded into the model, as the model's own input
    contract says (its raw-pixels input, NCHW): null on such a model, or naming another input, is untrue."""
    folded = sorted(n for n, e in _contract(graph).items() if "values" in e and e.get("layout") == "NCHW")
    pixels = manifest.get("image_uint8")
    said = pixels.get("input") if isinstance(pixels, dict) else None
    takes = {n: dtype for n, dtype, _ in graph.inputs}
    if folded and said not in folded:
        return [f"image_uint8 is {json.dumps(pixels)[:60]}, {name}'s input contract says {folded[0]!r} takes raw "
                "uint8 pixels (normalisation folded in)"]
    if said is not None and not isinstance(said, str):  # a list or a dict from others: no name (it crashed check)
        return [f"image_uint8 names {json.dumps(said)[:60]} its uint8 pixel input, not an input name"]
    if said is not None and takes.get(said, "uint8") != "uint8":
        return [f"image_uint8 names {said!r} a uint8 pixel input, {name} takes it as {takes[said]}"]
    return _pixel_nodes_claim(name, graph, pixels) if said in takes else []


def _pixel_nodes_claim(name: str, graph: Graph, pixels: dict) -> list[str]:
    """image_uint8.nodes_in_int8 (the normalisation's nodes still run in the int8 model) is what the graph says:
    where raw pixels replaced them (pixels.raw_feed), a node other than the normalisation's Cast reads the pixel
    input (the first DequantizeLinear or integer op); where they stay, only that Cast does. edgekit writes the two
    keys with image_uint8 (its packages without them, 0.1.0's, are refused by version): the key alone deleted, or
    both, report.html listed the gone nodes as kept in float, its default, and check passed."""
    claimed, said = pixels.get("nodes_in_int8"), pixels["input"]
    if "nodes_in_int8" not in pixels and "nodes" not in pixels:
        return [f"image_uint8 lists neither its nodes nor nodes_in_int8, which edgekit writes with it (input {said!r})"]
    kept = not any(said in inputs and op != "Cast" for op, inputs, _ in graph.nodes)
    if claimed is kept:
        return []
    where = (f"{name} still normalises {said!r} in float before quantizing it" if kept else
             f"{name} feeds the raw {said!r} pixels to its first quantized op")
    if "nodes_in_int8" not in pixels:
        return [f"image_uint8 lists its nodes without nodes_in_int8 (edgekit writes both), {where}"]
    return [f"image_uint8.nodes_in_int8 is {json.dumps(claimed)[:60]}, {where}"]


def _layout_claims(name: str, graph: Graph, specs: list) -> list[str]:
    """Each session input's layout is the one the model's input contract gives it."""
    contract = _contract(graph)
    return [f"runtime session {name}'s inputs give {s['name']!r} layout {s.get('layout')!r}, {name}'s input "
            f"contract {contract[s['name']].get('layout')!r}" for s in specs
            if isinstance(s, dict) and s.get("name") in contract
            and s.get("layout") != contract[s["name"]].get("layout")]


def _shape(dims, most: int = 8) -> str:
    """1x3x224x224 (? for a dim the model leaves open), at most `most` dims: a manifest from others may hold more."""
    if not isinstance(dims, list):
        return repr(dims)[:40]
    shown = "x".join("?" if d is None else str(d)[:20] for d in dims[:most])
    return shown + ("x..." if len(dims) > most else "")

