"""Typed quantization settings → onnxruntime `quantize_static` / `quantize_dynamic`.

Also decides *what* to quantize: attention-style graphs get a transformer-safe scheme instead of
full static QDQ, which quantizes the additive mask path (activation scales ~1e36, cosine 0.39).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from dataclasses import dataclass
from pathlib import Path

from .config import QuantSettings
from .errors import StageError, first_line
from .onnx_export import parsed

log = logging.getLogger("edgekit")

QUANT_TYPES = {"uint8": "QUInt8", "int8": "QInt8", "uint16": "QUInt16", "int16": "QInt16"}
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Where", "Cast", "Reshape", "Transpose"}


class OrtReader:
    """The one adapter to onnxruntime's CalibrationDataReader protocol."""

    def __init__(self, feeds: list, progress=None):
        self._feeds = feeds
        self._i = 0
        self._progress = progress

    def get_next(self):
        if self._i >= len(self._feeds):
            return None
        self._i += 1
        if self._progress:
            self._progress(1)
        return self._feeds[self._i - 1]

    def rewind(self):
        self._i = 0


@dataclass(frozen=True)
class Plan:
    """The settings actually used, with the reasons for anything edgekit decided itself."""

    settings: QuantSettings
    reduce_range: bool
    attention: bool
    reasons: tuple[str, ...]
    opset: int  # of the float model (ai.onnx domain)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self.settings)
        d["reduce_range"] = self.reduce_range
        d["op_types"] = list(d["op_types"])
        d["exclude_nodes"] = list(d["exclude_nodes"])
        d["attention_graph"] = self.attention
        d["decisions"] = list(self.reasons)
        return d


def has_attention(model) -> bool:
    """A Softmax fed (through element-wise ops) by a MatMul of two activations: Q·Kᵀ attention."""
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in graph.node for o in n.output}

    def reaches_qk(name: str, depth: int) -> bool:
        node = producer.get(name)
        if node is None or depth > 6:
            return False
        if node.op_type == "MatMul":
            return all(i not in constants for i in node.input)
        if node.op_type in ELEMENTWISE:
            return any(reaches_qk(i, depth + 1) for i in node.input if i not in constants)
        return False

    return any(n.op_type == "Softmax" and reaches_qk(n.input[0], 0) for n in graph.node)


SUBGRAPH_WHY = ("onnxruntime's static quantizer does not enter If/Loop/Scan sub-graphs; pin the input a branch "
                "depends on ([model] constants) to fold the branch into the main graph")


def float_subgraph_nodes(model) -> list[str]:
    """Names (or op types) of the nodes inside If/Loop/Scan sub-graphs of a quantized ModelProto: they run float."""
    import onnx

    def walk(graph) -> list[str]:
        found = []
        for node in graph.node:
            for attr in node.attribute:
                for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                    found += [n.name or n.op_type for n in sub.node] + walk(sub)
        return found

    return walk(model.graph)


def float_outputs(model, names) -> None:
    """Make these graph outputs of a ModelProto the float tensors again: onnxruntime's QDQ quantizer hands a
    graph output that a quantized node also reads through Quantize/DequantizeLinear, which rounds a
    streaming model's state before it is fed back. The quantized node keeps reading the rounded copy."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    for name in names:
        dq = producer.get(name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        rounded, exact = f"{name}_rounded", q.input[0]
        for node in graph.node:  # readers of the rounded tensor
            node.input[:] = [rounded if i == name else i for i in node.input]
        dq.output[:] = [rounded]
        for node in graph.node:  # the float tensor takes the output's name
            node.input[:] = [name if i == exact else i for i in node.input]
            node.output[:] = [name if o == exact else o for o in node.output]


def plan(model, settings: QuantSettings, explicit: set[str], arch: str = "x86_64") -> Plan:
    """Resolve `auto` choices for a model (path or ModelProto): reduce_range by target arch and host ISA,
    transformer scheme for attention."""
    from .host import int8_isa, isa_source, x86_saturates

    from .errors import UsageError

    reasons = []
    model = parsed(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 10:
        raise UsageError(f"the model is opset {opset}; quantization needs opset >= 10")
    if settings.per_channel and opset < 13 and settings.mode == "static":
        raise UsageError(f"the model is opset {opset}; per-channel quantization needs opset >= 13 (use --per-tensor)")
    attention = has_attention(model)
    if attention and settings.transformer_scheme != "off" and not explicit & {"mode", "op_types"}:
        if settings.transformer_scheme == "dynamic":
            settings = dataclasses.replace(settings, mode="dynamic", op_types=("MatMul", "Gemm", "Gather"))
            reasons.append("attention graph: dynamic int8 MatMul/Gemm (full static QDQ would quantize the mask path); "
                           "embedding tables (Gather) stored int8")
        else:
            settings = dataclasses.replace(settings, mode="static", op_types=("MatMul", "Gemm", "Gather"))
            reasons.append("attention graph: static QDQ on MatMul/Gemm only (keeps the mask path float); "
                           "embedding tables (Gather) stored int8")
    if settings.reduce_range == "auto":
        reduce = (arch == "x86_64" and x86_saturates() and settings.weight_type == "int8"
                  and settings.activation_type == "uint8")
        if reduce:
            reasons.append(f"reduce_range: host ISA {int8_isa()} (from {isa_source()}) has no VNNI; u8s8 would "
                           "saturate int16 (onnxruntime#6004), so weights use 7 bits")
        elif (arch == "x86_64" and "vnni" in int8_isa() and settings.weight_type == "int8"
              and settings.activation_type == "uint8"):
            reasons.append(f"reduce_range off: host ISA {int8_isa()} (from {isa_source()}) has VNNI, which does not "
                           "saturate; on an x86 CPU without VNNI (AVX2) this model's u8s8 sums can saturate: run it "
                           "there with session option session.x64quantprecision=1, or export with --reduce-range true")
    else:
        reduce = settings.reduce_range == "true"
    return Plan(settings, reduce, attention, tuple(reasons), opset)


def quantize(src: Path, dest: Path, p: Plan, feeds: list, progress=None, cache: Path | None = None) -> Path:
    """`cache`: onnxruntime's calibration cache; trials that share a calibration method reuse its ranges."""
    try:
        # onnxruntime's histogram calibrators print chatter on stdout, which belongs to --json
        with contextlib.redirect_stdout(io.StringIO()):
            _call(p, str(src), str(dest), feeds, progress, cache)
    except Exception as e:
        first = first_line(e)
        raise StageError("quantization", f"{type(e).__name__}: {first}") from e
    return dest


def _call(p: Plan, src: str, dest: str, feeds: list, progress, cache: Path | None) -> None:
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    s = p.settings
    op_types = list(s.op_types) or None
    excluded = list(s.exclude_nodes) or None
    weight_type = getattr(QuantType, QUANT_TYPES[s.weight_type])
    if s.mode == "dynamic":
        quantize_dynamic(src, dest, op_types_to_quantize=op_types, per_channel=s.per_channel,
                         reduce_range=p.reduce_range, weight_type=weight_type, nodes_to_exclude=excluded,
                         extra_options={"MatMulConstBOnly": True})
        return
    # Not CalibMaxIntermediateOutputs: in onnxruntime 1.32 it discards the collected ranges at each
    # flush instead of merging them (MinMaxCalibrater.clear_collected_data → "No data is collected"),
    # and MinMax keeps only min/max pairs per tensor anyway.
    extra = {}
    if s.calibrate_method == "percentile":
        extra["CalibPercentile"] = s.percentile
    if s.activation_type in ("uint16", "int16") or s.weight_type in ("uint16", "int16"):
        extra["UseQDQContribOps"] = True
    quantize_static(src, dest, OrtReader(feeds, progress), quant_format=getattr(QuantFormat, s.format),
                    op_types_to_quantize=op_types, per_channel=s.per_channel, reduce_range=p.reduce_range,
                    activation_type=getattr(QuantType, QUANT_TYPES[s.activation_type]), weight_type=weight_type,
                    nodes_to_exclude=excluded, calibrate_method=getattr(CalibrationMethod, METHODS[s.calibrate_method]),
                    extra_options=extra, calibration_cache_path=str(cache) if cache else None)
