"""A transformer's residual Adds as onnxruntime's CPU provider runs them fastest.

onnxruntime fuses an Add feeding a LayerNormalization into SkipLayerNormalization, whose CPU kernel (1.32) is a
scalar loop with a division per element: 0.19 ms per 1x128x384 node on an AMD EPYC (Zen 4), against 0.03 ms for
the Add and the LayerNormalization it replaces. Written as Sum (the same float addition), the Add is not fused:
all-MiniLM-L6-v2 at 1x128, 1 thread, int8 7.20 -> 6.12 ms, fp32 15.8 -> 14.8 ms, outputs within 1e-7 (fp32).
Only for a target that runs on the CPU provider alone and leaves Add float: a mobile build's NNAPI or CoreML
partitions take Add and not Sum, and static QDQ over every op quantizes Add.
"""
from __future__ import annotations


def wanted(providers, ort_format: bool, attention: bool, op_types) -> bool:
    """An attention graph, run by the CPU provider alone (not a mobile build), whose int8 scheme leaves Add float."""
    return attention and tuple(providers) == ("CPUExecutionProvider",) and not ort_format and bool(op_types) and (
        "Add" not in op_types)


def as_sums(model) -> int:
    """Write each residual Add (two computed tensors, not a bias) whose only reader is a LayerNormalization as Sum, in
    place; how many."""
    from .onnx_export import all_nodes

    graph = model.graph
    readers: dict[str, list] = {}
    for node in all_nodes(graph):
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    constants = {t.name for t in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    outputs = {o.name for o in graph.output}
    count = 0
    for node in graph.node:
        if (node.op_type == "Add" and node.domain in ("", "ai.onnx") and not constants & set(node.input)
                and node.output[0] not in outputs and readers.get(node.output[0]) == ["LayerNormalization"]):
            node.op_type = "Sum"
            count += 1
    return count


def why(count: int) -> str:
    """The plan's reason, as the manifest lists it."""
    return (f"onnxruntime CPU: {count} residual Add(s) feeding LayerNormalization written as Sum, the same addition, "
            "which onnxruntime does not fuse into SkipLayerNormalization: its CPU kernel is scalar (all-MiniLM-L6-v2 "
            "1x128: int8 7.20 -> 6.12 ms)")
