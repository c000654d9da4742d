"""Where two kernel sets part: every quantized activation of an int8 model exposed as an output, run here
and elsewhere (emulated ARM, a device) on the same inputs, compared layer by layer in graph order."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from . import arrays, bounded, runner
from .config import DEFAULT_STEP_TIMEOUT
from .errors import InputError, StageError

PROBE_FILE = "probe.onnx"


def probe(model: Path, golden: Path, place, state: dict[str, str] | None = None) -> str:
    """One line: the first node whose quantized output differs between this host and `place`, with how
    many values and by how many steps; or that every quantized activation agrees."""
    with tempfile.TemporaryDirectory(prefix="edgekit-probe-") as tmp:
        folder = Path(tmp)
        order = expose_activations(model, folder / PROBE_FILE)
        (folder / "inputs.npz").write_bytes(golden.read_bytes())
        request = {"replay": [{"model": PROBE_FILE, "inputs": "inputs.npz", "state": state or {}}]}
        there = place.serve(folder, request)["replay"][0]
        if "error" in there:
            raise StageError("probe", f"{place.label}: {there['error']}")
        here, fused = json.loads(bounded.run("probe", "edgekit.probe:serve_in_child", str(folder), json.dumps(request),
                                             timeout=DEFAULT_STEP_TIMEOUT))
        if "error" in here["replay"][0]:
            raise StageError("probe", f"this host: {here['replay'][0]['error']}")
    try:
        ours = arrays.runs_from(here["replay"][0]["outputs"], None, None)  # this host's own child
        theirs = arrays.runs_from(there["outputs"], None, sum(map(len, ours)))  # the same model and inputs
        if len(ours) != len(theirs):
            raise InputError(f"its outputs are for {len(theirs)} run(s), this host's for {len(ours)}")
    except InputError as e:
        raise StageError("probe", f"{place.label} answered with something that is not the runner's result: {e}") \
            from None
    for tensor, name, op in order:
        a = np.concatenate([r[tensor].astype(np.int32).ravel() for r in ours])
        b = np.concatenate([r[tensor].astype(np.int32).ravel() for r in theirs])
        differ = int(np.count_nonzero(a != b))
        if differ:
            return (f"first difference at {name} ({fused.get(name, op)}): {differ:,} of {a.size:,} values, "
                    f"up to {int(np.max(np.abs(a - b)))} step(s)")
    return f"all {len(order)} quantized activations agree bit for bit"


# Nodes whose first output is an integer activation: QDQ's QuantizeLinear, and QOperator's or dynamic
# quantization's integer ops themselves (only QuantizeLinear was exposed: a QOperator model's differences went unseen)
INTEGER_OUT = ("QuantizeLinear", "DynamicQuantizeLinear", "QGemm", "MatMulInteger", "ConvInteger")


def expose_activations(model: Path, dest: Path) -> list[tuple[str, str, str]]:
    """A copy of `model` whose every integer activation is also a graph output. Returns, in graph order, (that
    tensor, the name and op of the node whose output it is: for a QuantizeLinear, the node it quantizes)."""
    import onnx

    m = onnx.load(str(model))
    producer = {o: n for n in m.graph.node for o in n.output}
    order = []
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear"):
            source = producer.get(n.input[0])
            order.append((n.output[0], source.name, source.op_type) if source is not None
                         else (n.output[0], n.input[0], "input"))
        elif n.op_type.startswith("QLinear") or n.op_type in INTEGER_OUT:
            order.append((n.output[0], n.name, n.op_type))
    outputs = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=q) for q, _, _ in order if q not in outputs)
    onnx.save(m, str(dest))
    return order


def serve_in_child(folder: str, request: str) -> str:
    """The bounded child's half: `runner.serve` on this host (with exact kernels where x86 saturates), and
    node name → the op onnxruntime runs it as here (Add → QLinearAdd: fused nodes keep their name)."""
    import onnx
    import onnxruntime as ort

    from . import host

    # not memory-capped: every integer activation is an output, kept at once (as the per-layer analysis's are);
    # the child's address space is capped
    config = {"session.x64quantprecision": "1"} if host.x86_saturates() else {}
    answer = runner.serve({**json.loads(request), "folder": folder}, config)
    optimized = str(Path(folder) / "optimized.onnx")
    opts = runner.options(1, config, log_level=4)
    opts.optimized_model_filepath = optimized
    ort.InferenceSession(str(Path(folder) / PROBE_FILE), sess_options=opts, providers=["CPUExecutionProvider"])
    fused = {n.name: n.op_type for n in onnx.load(optimized).graph.node if n.name}
    return json.dumps([answer, fused])
