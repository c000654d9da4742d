"""`edgekit inspect`: what an ONNX model is: opset, IO, ops, parameters, size, quantization, mobile coverage."""
from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from .errors import InputError, StageError
from .quantization import QUANTIZED_OP, quantization_ops
from .report import printable

COMPARED_SAMPLES = 8  # per-layer error over the first samples of --data (every intermediate tensor, each)


def check_quantizable(model, label: str) -> None:
    """A float model edgekit can quantize and compare: quantizing a quantized one stacks Q/DQ on Q/DQ, and its
    "fp32 vs int8" parity compares int8 with int8; onnxruntime's quantizer refuses an output that is an input
    passed through ("Graph is not a DAG"); no data fits a dimension of size 0."""
    if done := quantization_ops(model):
        raise InputError(f"{label}: already quantized ({', '.join(done)}); give the float model")
    defaults = {t.name for t in model.graph.initializer}  # an optional input's default may well be an output
    if same := sorted(({v.name for v in model.graph.input} - defaults) & {v.name for v in model.graph.output}):
        raise InputError(f"{label}: output {same[0]!r} is an input passed through, not computed")
    for v in (*model.graph.input, *model.graph.output):
        if any(d.HasField("dim_value") and d.dim_value == 0 for d in v.type.tensor_type.shape.dim):
            raise InputError(f"{label}: {v.name!r} has a dimension of size 0: no data fits it")


def _existing_model(path: Path, checked: list | None = None):
    from . import onnx_export as export

    if path.is_dir():
        raise InputError(f"{path}: is a folder; inspect takes a model file (.onnx), e.g. {path}/model.int8.onnx")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file (a pipe or device cannot be inspected)")
    with open(path, "rb") as f:
        if f.read(8)[4:] == b"ORTM":  # a flatbuffer's file identifier: onnx read it as "Wire format was corrupt"
            # named after the file: model.coreml.ort was told to inspect model.int8.onnx, not its model.coreml.onnx
            raise InputError(f"{path}: an ORT-format model (onnxruntime's mobile format), which inspect does not "
                             f"read; inspect the .onnx it was converted from ({path.with_suffix('.onnx').name} "
                             "in a package)")
    return export.load_onnx_input(path, runs=False, checked=checked)


def inspect(path: Path, coverage_eps: tuple[str, ...] = ("nnapi", "coreml"), nodes: bool = False) -> dict:
    """What a model is; with `nodes`, every node's name and op (sub-graphs' too): the names `exclude_nodes` takes."""
    import onnx

    from . import mobile, onnx_export as export

    # the file is read once: read again, it may have been swapped since its graph was counted
    model = _existing_model(path, read := [])
    checked = read.pop()  # its bytes and external data files, as parsed
    inputs, outputs = export.io_specs(model, str(path))
    # sub-graphs' (If/Loop bodies) too: an If holding a 256x256 MatMul was "1 nodes, 0 parameters"
    every = list(export.all_nodes(model.graph))
    ops = Counter((n.domain + "::" if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in every)
    params = parameter_count(model.graph)
    # sub-graphs' too: a model quantized inside an If branch only was called float
    quant_nodes = sum(bool(QUANTIZED_OP.search(n.op_type)) for n in every)
    said = {
        "model": str(path),
        # its external data files too (`model` holds their data): "0.00 MB" for 16 MB
        "size_bytes": path.stat().st_size + sum(f.stat().st_size for f in checked.external),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [s.as_dict() for s in inputs],
        "outputs": [s.as_dict() for s in outputs],
        "nodes": len(every),
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "parameters": params,
        "quantized": quant_nodes > 0,
        "quantization_nodes": quant_nodes,
        "int8_initializers": sum(t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
                                 for g in export.all_graphs(model.graph) for t in g.initializer),
        "metadata": {p.key: p.value for p in model.metadata_props},
        **({"node_list": [{"name": n.name, "op": n.op_type} for n in every]} if nodes else {}),
    }
    del model, every  # its weights, before coverage parses the bytes again (200 MB of weights: peak 1.69 -> 1.66 GB)
    try:
        coverage, not_predicted = (mobile.coverage(path, coverage_eps, data=checked.data) if coverage_eps else {}), None
    except StageError as e:  # the rest of what inspect tells still holds
        coverage, not_predicted = {}, e.message
    listed = {"node_list": said.pop("node_list")} if nodes else {}
    return {**said, "mobile_coverage": coverage, "mobile_coverage_error": not_predicted, **listed}


def parameter_count(graph) -> int:
    """The weights' elements, sub-graphs' too: initializers and Constant nodes' tensors, without
    quantization scales and zero points (an int8 model had 498 more than its float one) or int64 shapes and
    indices; weights folded into Constant nodes counted 0."""
    import onnx

    from .onnx_export import all_graphs, all_nodes

    every = list(all_nodes(graph))
    qdq = {i for n in every if n.op_type in ("QuantizeLinear", "DequantizeLinear") for i in n.input[1:]}
    tensors = [*((t.name, t) for g in all_graphs(graph) for t in g.initializer),
               *((n.output[0], a.t) for n in every if n.op_type == "Constant"
                 for a in n.attribute if a.name == "value")]
    return sum(math.prod(t.dims) for name, t in tensors if name not in qdq and t.data_type != onnx.TensorProto.INT64)


def text(info: dict) -> str:
    kind = f"quantized ({info['quantization_nodes']} quantization nodes)" if info["quantized"] else "float"
    lines = [f"{info['model']}: {info['size_bytes'] / 1e6:.2f} MB, opset {info['opset'].get('ai.onnx')}, "
             f"{info['nodes']} nodes, {info['parameters']:,} parameters, {kind}"]
    lines += [f"  {io:6} {s['name']}: {'x'.join(map(str, s['shape'])) or 'scalar'} {s['dtype']}"
              for io in ("input", "output") for s in info[io + "s"]]
    lines.append("  ops: " + ", ".join(f"{op} {n}" for op, n in info["ops"].items()))
    for c in info["mobile_coverage"].values():
        lines.append(f"  {c['provider']} (predicted): {c['coverage']:.0%} of the MACs, "
                     f"{c['supported_nodes']}/{c['nodes']} nodes, {c['partitions']} partition(s), "
                     f"CPU fallback: {', '.join(c['cpu_fallback_ops']) or 'none'}, verdict {c['verdict']}"
                     + (f", {c['nodes_blocked_by_dynamic_shapes']} need fixed shapes "
                        f"({c['coverage_with_fixed_shapes']:.0%} with fixed shapes)"
                        if c["nodes_blocked_by_dynamic_shapes"] else ""))
    if info["mobile_coverage_error"]:
        lines.append(f"  mobile coverage not predicted: {info['mobile_coverage_error']}")
    lines += [f"  node {n['name'] or '(no name)'}: {n['op']}" for n in info.get("node_list", ())]
    return "\n".join(map(printable, lines))  # names from the file: one line each


def layer_errors(fp32: Path, int8: Path, data: str) -> dict:
    """Per compute node: accumulated SQNR lost between its input and output; per tensor: SQNR."""
    from . import bounded, calib, host, onnx_export as export, tune
    from .config import DEFAULT_STEP_TIMEOUT

    fp32_model, int8_model = _existing_model(fp32), _existing_model(int8)  # each parsed once, here
    inputs, _ = export.io_specs(fp32_model, str(fp32))
    theirs, _ = export.io_specs(int8_model, str(int8))
    def differ(a, b) -> bool:
        return (a.name, a.dtype, len(a.shape)) != (b.name, b.dtype, len(b.shape)) or any(
            isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(a.shape, b.shape))

    if len(inputs) != len(theirs) or any(differ(a, b) for a, b in zip(inputs, theirs)):
        raise InputError(f"{fp32} and {int8} take different inputs ({', '.join(map(str, inputs))} against "
                         f"{', '.join(map(str, theirs))}): compare a float model with its own int8 build")
    if done := quantization_ops(fp32_model):
        raise InputError(f"{fp32}: already quantized ({', '.join(done)}): give the float model first, then its "
                         "int8 build")
    ops = quantization_ops(int8_model)
    if integer := [op for op in ops if op not in ("QuantizeLinear", "DequantizeLinear")]:
        how = ("--quant-mode static; for an attention graph, --transformer-scheme matmul-static"
               if "DynamicQuantizeLinear" in integer else "--format QDQ")
        raise InputError(f"{int8}: integer operators ({', '.join(integer)}), not QDQ: the comparison measures "
                         f"each Quantize/DequantizeLinear pair, so give the static QDQ build ({how})")
    if not {"QuantizeLinear", "DequantizeLinear"} <= set(ops):
        raise InputError(f"{int8}: no QuantizeLinear/DequantizeLinear pairs to measure (give the float model first, "
                         "then its static QDQ int8 build)")
    data_set = calib.load(data, inputs)
    with tempfile.TemporaryDirectory(prefix="edgekit-") as tmp:  # two files from others run in a bounded child
        feeds = Path(tmp) / "feeds.npz"
        samples = list(data_set.feeds[:COMPARED_SAMPLES])
        np.savez(feeds, **{f"{i}_{j}": sample[s.name] for i, sample in enumerate(samples)
                           for j, s in enumerate(inputs)})
        try:
            tensors = json.loads(bounded.run("inspect --compare", "edgekit.inspect_model:tensor_errors_in_child",
                                             str(fp32), str(int8), str(feeds), str(len(samples)),
                                             timeout=DEFAULT_STEP_TIMEOUT))
        except StageError as e:  # a run past the memory the child may use is the files' fault (exit 3)
            from .runtime import run_error

            raise run_error(e.message, e.stage) from e
    foreign = [t["tensor"] for t in tensors if t["accumulated_sqnr_db"] is None]
    if len(foreign) * 2 > len(tensors):  # a build of another model pairs at its inputs and outputs only
        raise InputError(f"{int8}: {len(foreign)} of its {len(tensors)} quantized tensors are not in {fp32.name} "
                         f"(e.g. {foreign[0]!r}): compare a float model with its own int8 build")
    nodes = tune.node_sensitivity(fp32, tensors)
    if not nodes:  # onnxruntime pairs activations by its own Q/DQ tensor names (NAME_QuantizeLinear_Output)
        raise InputError(f"{int8}: none of its quantized activations pairs with one of {fp32.name}'s (its Q/DQ tensors "
                         "are not named as onnxruntime's quantizer names them): compare a float model with the int8 "
                         "build edgekit or onnxruntime made of it")
    return {"nodes": [{k: v for k, v in r.items() if k != "exclude"} for r in nodes], "tensors": tensors,
            "samples": len(samples), "data": data_set.origin, "random": data_set.random,
            "where": f"{host.where()}, onnxruntime's reference Q/DQ arithmetic"}


def tensor_errors_in_child(fp32: str, int8: str, feeds: str, count: str) -> str:
    """layers.tensor_errors in a `bounded` child: its address space and time are capped, so a model that asks for
    40 GB or never ends fails as a step, not the machine."""
    from . import layers, onnx_export as export

    inputs, _ = export.io_specs(Path(fp32))
    with np.load(feeds) as z:
        samples = [{s.name: z[f"{i}_{j}"] for j, s in enumerate(inputs)} for i in range(int(count))]
    return json.dumps(layers.tensor_errors(Path(fp32), Path(int8), samples, limit=len(samples)))


def compare_text(rows: dict) -> str:
    lines = ["RANDOM DATA: SQNR FIGURES DO NOT REFLECT REAL INPUTS"] if rows["random"] else []
    lines += [f"SQNR lost per compute node ({rows['samples']} samples of {rows['data']}; {rows['where']}), "
              "worst first:",
             f"  {'node':40} {'op':8} {'in dB':>8} {'out dB':>8} {'lost dB':>8}"]
    lines += [f"  {r['node'][:40]:40} {r['op']:8} {r['input_sqnr_db']:8.1f} {r['output_sqnr_db']:8.1f} "
              f"{r['lost_db']:8.1f}" for r in rows["nodes"]]
    lines += ["SQNR per quantized tensor (accumulated: float model vs int8 model), worst first:"]
    lines += [f"  {r['tensor'][:50]:50} " + (f"{r['accumulated_sqnr_db']:8.1f}" if r["accumulated_sqnr_db"] is not None
                                             else "     n/a (not in the float model)") for r in
              sorted(rows["tensors"], key=lambda r: r["accumulated_sqnr_db"] if r["accumulated_sqnr_db"] is not None
                     else 1e9)]
    return "\n".join(map(printable, lines))  # names from the file: one line each
