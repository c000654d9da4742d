"""Typed quantization settings → onnxruntime `quantize_static` / `quantize_dynamic`.

Also decides *what* to quantize: attention-style graphs get a transformer-safe scheme instead of
full static QDQ, which quantizes the additive mask path (activation scales ~1e36, cosine 0.39).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import QuantSettings, dynamic_types
from .progress import quiet
from .errors import InputError, StageError, UsageError, disk_full, first_line, said_for_the_cli
from .onnx_export import ai_onnx_opset, all_graphs, all_nodes, parsed, sort_nodes, subgraphs

log = logging.getLogger("edgekit")

QUANT_TYPES = {"uint8": "QUInt8", "int8": "QInt8", "uint16": "QUInt16", "int16": "QInt16"}
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Where", "Cast", "Reshape", "Transpose"}
# A channel whose calibrated |max| is this many times the median channel's is an outlier (matmul-static scheme).
OUTLIER_RATIO = 4.0
# Samples per MinMax step, whose reduced ranges calibration holds at once (onnxruntime's calibrator kept every
# sample's intermediate tensors by default).
STRIDE = 16
# Entropy's histogram bins per tensor, over [-max|x|, max|x|]. onnxruntime's default, 128, equals its 128 quantized
# bins: the KL search has one candidate, the whole range, and Entropy is MinMax. The search tries thresholds from
# 128/ENTROPY_BINS of max|x| up, in a Python loop per tensor that grows as bins squared: on MobileNetV2-style (101
# tensors) 11 s with 512 bins, 28 s with 1024, 71 s with 2048 (TensorRT's count) on top of ~25 s of histograms.
ENTROPY_BINS = 1024
ENTROPY_QUANTIZED_BINS = 128


class OrtReader:
    """The one adapter to onnxruntime's CalibrationDataReader protocol (its histogram calibrators read by it)."""

    def __init__(self, feeds: Sequence, progress=None):
        self._feeds = feeds
        self._i, self._end = 0, len(feeds)
        self._progress = progress

    def __len__(self) -> int:
        return len(self._feeds)

    def get_next(self):
        if self._i >= self._end:
            return None
        self._i += 1
        if self._progress:
            self._progress(1)
        return self._feeds[self._i - 1]

    def set_range(self, start_index: int, end_index: int) -> None:
        self._i, self._end = start_index, min(end_index, len(self._feeds))


def stride(samples: int, most: int = STRIDE) -> int:
    """Samples per MinMax calibration step (minmax_ranges; onnxruntime's CalibStridedMinMax, as edgekit ran it
    before): a step's ranges are NaN-ignoring minima and maxima over its samples, steps merged by min and max."""
    return max(1, min(most, samples))


RNN_OPS = ("LSTM", "GRU", "RNN")  # float in static mode, whatever op_types say
NOT_IN_DYNAMIC = ("format", "calibrate_method", "percentile", "samples")  # static-only quantization settings


@dataclass(frozen=True)
class Plan:
    """The settings actually used, with the reasons for anything edgekit decided itself."""

    settings: QuantSettings
    reduce_range: bool
    attention: bool
    reasons: tuple[str, ...]
    opset: int  # of the float model (ai.onnx domain)
    split_outliers: bool = False  # matmul-static: outlier channels of MatMul inputs/outputs handled in float
    half_weights: bool = False  # float16 weights behind Casts: read as float32 before quantizing (fold_half_casts)
    applied: tuple[str, ...] = field(default=(), compare=False, repr=False)  # what the shipped model had done (done())
    precision_search: dict | None = field(default=None, compare=False)  # precision = latency: what was measured
    tensor_overrides: dict = field(default_factory=dict, compare=False, repr=False)  # onnxruntime's, e.g. pixels'
    padded_convs: tuple[str, ...] = ()  # the Convs whose int8 input channels quantize() pads (pad_convs), by key()
    control_flow: bool = False  # If/Loop/Scan bodies: quantize() re-sorts the int8 graph's nodes (sort_nodes)
    row_biases: tuple[str, ...] = ()  # Gemm biases [1, N] quantize() reads as the vector [N] (row_biases)
    constant_outputs: tuple[str, ...] = ()  # graph outputs that are initializers: quantize() keeps them exact
    warnings: tuple[str, ...] = ()  # what the user must hear of the plan (among the run's warnings)
    # the float model is a file from others: onnxruntime's quantizer runs in a bounded child if large (in_child)
    from_file: bool = field(default=False, compare=False)
    nodes: int = field(default=0, compare=False)  # in the graph and its sub-graphs
    blame: str = field(default="", compare=False)  # a float output's NaN on calibration: why (nonfinite_output's hint)

    def as_dict(self) -> dict:
        """The settings as used: those the chosen mode ignores are None, so the manifest claims nothing untrue."""
        d = dataclasses.asdict(self.settings)
        d["reduce_range"] = self.reduce_range
        d["op_types"] = list(d["op_types"])
        d["exclude_nodes"] = list(d["exclude_nodes"])
        d["attention_graph"] = self.attention
        if self.settings.calibrate_method != "percentile":
            d["percentile"] = None
        unused = []
        if self.settings.mode == "dynamic":
            unused = [f"dynamic: ranges are computed at run time and integer operators written (onnxruntime's "
                      f"quantize_dynamic), so {', '.join(NOT_IN_DYNAMIC)} do not apply"]
            d.update(dict.fromkeys(NOT_IN_DYNAMIC))
        d["decisions"] = [*self.reasons, *unused, *self.applied]
        d["precision_search"] = self.precision_search
        return d


def has_attention(model) -> bool:
    """A fused attention op (com.microsoft Attention, MultiHeadAttention, GroupQueryAttention...; ONNX's Attention),
    or a Softmax fed (through element-wise ops) by a MatMul of two activations: Q·Kᵀ attention."""
    graph = model.graph
    if any(n.op_type.endswith("Attention") for n in graph.node):
        return True
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


# ONNX's and onnxruntime's quantized operators, by name: Q/DQ, QLinear*, QGemm, QAttention, QOrdered*, QMoE,
# DynamicQuantize*, *Integer*, MatMulNBits*, MatMulBnb4, MatMulFpQ4, GatherBlockQuantized, QuantizeBFP, GemmFloat8.
# A float model holds none (onnxruntime's contrib ops matching are all quantized ones: QuickGelu, FusedConv are not).
QUANTIZED_OP = re.compile(r"^Q[A-Z]|QLinear|[Qq]uantiz|Integer|NBits|Bnb4|FpQ4|Float8")


def quantization_ops(model) -> list[str]:
    """The quantized op types a ModelProto's graph holds (sub-graphs' too), sorted: none in a float model."""
    from .onnx_export import all_nodes

    return sorted({n.op_type for n in all_nodes(model.graph) if QUANTIZED_OP.search(n.op_type)})


NOTHING_QUANTIZED = ("quantizes nothing it computes (no integer op, nor a Conv, ConvTranspose, Gemm or MatMul "
                     "reading its input and weights through DequantizeLinear: the op types named, exclusions or a "
                     "search kept every one float): it is the float model, not an int8 build")


def quantizes_anything(model) -> bool:
    """Whether a ModelProto (sub-graphs too) runs a compute node in int8 (runs_int8): a model.int8.onnx that does
    not is the float model (every compute node kept float, or nothing quantizable named)."""
    import onnx

    from .onnx_export import all_nodes

    small = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16}
    return runs_int8([(n.op_type, list(n.input), list(n.output)) for n in all_nodes(model.graph)],
                     any(t.data_type in small for t in model.graph.initializer))


COMPUTE_OPS = {"Conv", "MatMul", "Gemm", "ConvTranspose"}
WEIGHTED = dict.fromkeys(COMPUTE_OPS, 1)  # compute op: the input its weights are
# Integer ops: (the float op they compute, their weight's input, its scale's input; ConvInteger and MatMulInteger take
# none, their weight's zero point is of its dims). QOperator's, quantize_dynamic's, and what an optimised .ort fuses.
INTEGER_OPS = {"QLinearConv": ("Conv", 3, 4), "QLinearMatMul": ("MatMul", 3, 4), "QGemm": ("Gemm", 3, 4),
               "ConvInteger": ("Conv", 1, 3), "MatMulInteger": ("MatMul", 1, 3),
               "DynamicQuantizeMatMul": ("MatMul", 1, 2), "MatMulIntegerToFloat": ("MatMul", 1, 3)}
# Integer ops computing what float ops without a weight slot here do: dynamic mode's LSTM (`--op-types LSTM` quantizes
# it alone, and it runs int8 beside a float head) and onnxruntime's fused attention
INTEGER_LAYERS = {"DynamicQuantizeLSTM", "QAttention"}


def runs_int8(nodes: list[tuple[str, list[str], list[str]]], small_weights: bool) -> bool:
    """Any integer compute op (INTEGER_OPS, INTEGER_LAYERS), or compute op whose input and weight are both a
    DequantizeLinear's (QDQ), among `nodes` (op, inputs, outputs): a QuantizeLinear nothing reads, or one whose
    tensor reaches only float weights, leaves every multiply float. A graph with no compute op at all (an Add's)
    counts any quantization node, or 8/16-bit weights (`small_weights`)."""
    made_by = {out: op for op, _, outputs in nodes for out in outputs}
    compute = [(op, i) for op, i, _ in nodes if op in WEIGHTED or op in INTEGER_OPS or op in INTEGER_LAYERS]
    if not compute:
        return any(QUANTIZED_OP.search(op) for op, _, _ in nodes) or small_weights
    return any(op not in WEIGHTED or len(i) > WEIGHTED[op]
               and made_by.get(i[0]) == made_by.get(i[WEIGHTED[op]]) == "DequantizeLinear" for op, i in compute)


def float_subgraph_nodes(model) -> list[str]:
    """Names (or op types) of the nodes inside If/Loop/Scan sub-graphs of a quantized ModelProto: they run float."""
    from .onnx_export import all_nodes, subgraphs

    return [n.name or n.op_type for top in model.graph.node for sub in subgraphs(top) for n in all_nodes(sub)]


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


# Ops onnxruntime's quantizer handles but whose int8 model it runs in float, and why. ConvTranspose: QDQRegistry
# (quantization/registry.py) quantizes it like Conv, but the CPU provider's QDQ fusion (QDQSelectorActionTransformer,
# ConvQDQRules) makes a QLinearConv of Conv alone; QLinearOpsRegistry and IntegerOpsRegistry have no ConvTranspose.
FLOAT_AT_RUN = {"ConvTranspose": ("onnxruntime's CPU provider has no integer ConvTranspose (its QDQ fusion makes "
                                  "QLinearConv of Conv only): it runs float between DequantizeLinear and "
                                  "QuantizeLinear, its 8-bit weights dequantized (onnxruntime's XNNPACK provider has "
                                  "a QDQ ConvTranspose kernel; NNAPI has no ConvTranspose)",
                                  "onnxruntime's {} quantizer has no ConvTranspose ({}): it stays float")}


def float_at_run(model, settings: QuantSettings) -> tuple[str, ...]:
    """Why the nodes of FLOAT_AT_RUN in this int8 ModelProto compute in float (a U-Net's ConvTransposes were listed
    among the float compute nodes with no word why). Nodes kept float by name are said elsewhere."""
    from .onnx_export import all_nodes

    producer = {o: n.op_type for n in all_nodes(model.graph) for o in n.output}
    said = []
    for op, (unfused, unquantized) in FLOAT_AT_RUN.items():
        nodes = [n for n in all_nodes(model.graph) if n.op_type == op and n.name not in settings.exclude_nodes]
        behind_dq = [n.name or op for n in nodes if producer.get(n.input[1]) == "DequantizeLinear"]
        left = [n.name or op for n in nodes if producer.get(n.input[1]) != "DequantizeLinear"]
        if behind_dq:
            said.append(f"{op} quantized ({', '.join(behind_dq)}) but {unfused}")
        if left and (settings.mode == "dynamic" or settings.format == "QOperator"):
            kind, table = (("dynamic", "IntegerOpsRegistry") if settings.mode == "dynamic" else
                           ("QOperator", "QLinearOpsRegistry"))
            said.append(f"{op} {', '.join(left)}: {unquantized.format(kind, table)}")
    return tuple(said)


def exact_passthroughs(model) -> list[tuple[str, str]]:
    """Graph outputs that copy a graph input (Identity), which the QDQ quantizer fed through Quantize/
    DequantizeLinear: rewired to the input itself in this ModelProto. Returns the (output, input) pairs."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    producer = {o: n for n in graph.node for o in n.output}
    found = []
    for out in graph.output:
        node = producer.get(out.name)
        dq = producer.get(node.input[0]) if node is not None and node.op_type == "Identity" else None
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inputs:
            node.input[0] = q.input[0]
            found.append((out.name, q.input[0]))
    return found


def clipped_outputs(model, settings: QuantSettings) -> list[str]:
    """The Relu/Clip nodes whose only input is also a graph output, which static quantization would quantize:
    onnxruntime (adjust_tensor_ranges) gives that input the node's output range, so the graph output loses its
    negative values (cosine 0.70 on a Linear whose output is returned and fed to a Relu)."""
    if settings.mode != "static":
        return []
    outputs = {o.name for o in model.graph.output}
    readers = Counter(i for n in model.graph.node for i in n.input)
    return [n.name for n in model.graph.node
            if n.op_type in ("Relu", "Clip") and n.name and n.name not in settings.exclude_nodes
            and (not settings.op_types or n.op_type in settings.op_types)
            and n.input[0] in outputs and readers[n.input[0]] == 1]


# Ops that only move or reshape values: the Q/DQ onnxruntime puts on their outputs repeats their input's scale
MOVEMENT_OPS = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity")


def concat_outputs(model, settings: QuantSettings) -> list[str]:
    """Concat nodes whose output reaches graph outputs only through MOVEMENT_OPS (Shape may read it too), with those
    ops. Static QDQ keeps each Concat input's own scale, then rounds the output again at the union range before it
    is dequantized to float: a detection head's [xy in pixels, wh, sigmoid(conf)] got one scale (0.49), conf took
    3 values and flipped on 24% of anchors at 0.5. Nothing integer reads that Q/DQ, so float costs a float copy."""
    if settings.mode != "static" or settings.op_types and "Concat" not in settings.op_types:
        return []
    graph = model.graph
    outputs = {o.name for o in graph.output}
    floats = {v.name for v in (*graph.value_info, *graph.output) if v.type.tensor_type.elem_type == 1}
    readers: dict[str, dict] = {}  # tensor -> its reading nodes, each once (Concat(x, x) reads x twice)
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, {})[id(n)] = n

    def passes(r, name: str) -> bool:
        """`r` carries tensor `name` on unchanged: a movement op on its data, or a Concat (a multi-level head
        joins its levels' outputs); named, so nodes_to_exclude can keep it float."""
        return bool(r.name) and (r.op_type in MOVEMENT_OPS and r.input[0] == name or r.op_type == "Concat")

    # Each tensor reaches graph outputs only through such nodes: decided once per tensor, walking the (topologically
    # sorted) nodes backwards, not by recursion (a chain of 1,500 Concats; 22 of Concat(x, x) took 4^11 walks)
    reaches: dict[str, bool] = {}

    def reaches_outputs(name: str) -> bool:
        on = [r for r in readers.get(name, {}).values() if r.op_type not in ("Shape", "Size")]
        return (bool(on) or name in outputs) and all(passes(r, name) and reaches.get(r.output[0], False) for r in on)

    for n in reversed(graph.node):
        for o in n.output:
            reaches[o] = reaches_outputs(o)
    kept, carried = [], set()  # carried: tensors from a kept Concat on its way out
    for n in graph.node:
        if n.name and n.output and reaches.get(n.output[0]) and (
                n.op_type == "Concat" and (n.output[0] in floats or carried & set(n.input))  # typed, or joins ours
                or n.op_type in MOVEMENT_OPS and n.input[0] in carried):
            kept.append(n.name)
            carried.add(n.output[0])
    return [name for name in kept if name not in settings.exclude_nodes]


# Ops whose output is finite (or no float) whatever infinities their inputs hold: where a mask's path ends (the
# Softmax over masked attention scores gives the masked positions 0)
FINITE_OUTPUT_OPS = {"Softmax", "Sigmoid", "Tanh", "Erf", "Sign", "Shape", "Size", "Equal", "Less", "LessOrEqual",
                     "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsInf", "IsNaN", "ArgMax", "ArgMin",
                     "NonZero"}


def masked_path(model) -> tuple[set[str], list]:
    """(the tensors an infinite constant reaches, the nodes reading them) in a ModelProto's main graph: a causal mask
    buffer or masked_fill's -inf, through its Slice, Unsqueeze, Where and the Add to the attention scores, up to
    the ops FINITE_OUTPUT_OPS (the Softmax). int8 has no infinity: the calibrated range of such a tensor is
    infinite, and so was the scale onnxruntime's quantizer gave it (the mask was lost)."""
    from .onnx_export import non_finite_constants

    tensors, readers = non_finite_constants(model.graph), []
    for node in model.graph.node:  # topologically sorted: a tensor's producer comes before its readers
        if tensors.intersection(node.input):
            readers.append(node)
            if node.op_type not in FINITE_OUTPUT_OPS:
                tensors.update(o for o in node.output if o)
    return tensors, readers


def masked_nodes(model, settings: QuantSettings) -> list[str]:
    """The nodes on a mask's path (masked_path) that these settings would quantize: they stay float."""
    from onnxruntime.quantization import registry

    ops = set(settings.op_types) or {*registry.IntegerOpsRegistry, *registry.QLinearOpsRegistry,
                                     *registry.QDQRegistry}
    return [n.name for n in masked_path(model)[1]
            if n.name and n.op_type in ops and n.name not in settings.exclude_nodes]


# A graph output is quantized over the whole tensor's range, 0 included (onnxruntime's MinMax ranges); a channel whose
# own spread covers fewer of its steps than this keeps the node producing it float. 64 steps (6 bits): a detection
# head's logits beside pixel boxes took 5 and 3 (32% and 47% of its logit > 0 decisions flipped), a regressor's
# 300 +- 2.9 took 15 (13 distinct values); a classifier's logits (digits example) take 150 or more.
OUTPUT_LEVELS = 64
FEW_LEVELS_SHOWN = 8  # channels a decision names by their levels, the narrowest first
# A regress output of one sign (a depth, a distance, an amount) is read relative to its size, while int8 gives it one
# step over its whole range: where its lowest decile of |value| (LOW_QUANTILE, zeros left out) lies within fewer than
# this many steps of 0, the node producing it stays float too (under task regress; other is warned). 32 steps: a
# rounding error of up to 1.6% at that decile, more below it. A depth map of 0.5-80 m sat at 19.6 (step 0.30 m:
# 9.6% mean relative error under 1.5 m, 66% of its pixels off by > 5%); a linear quantity spread from 0 (a
# sigmoid's 0-1) sits at 25.5 and is caught too (its values under 0.1 lose 2-20%); the 300 +- 3 regressor sits at
# 250, an MLP on sklearn's diabetes (50-345) at 67. Not detect: a box's coordinate near the image's edge is
# small, its error absolute, and a detector's scores already take few levels. Outputs of both signs (logits, a
# zero-centred target) have no relative error to keep.
LOW_LEVELS = 32
LOW_QUANTILE = 0.1
# An output with more than this share of exact zeros is a ReLU's (a heatmap, a density, features): sparse activations
# read as absolute values, whose dense values just above 0 always sit within a few steps of it (a Conv -> ReLU head:
# 6.2 steps, kept float and warned of under task other, where no depth is). The rule leaves them alone.
ZERO_SHARE = 0.01
_BINS_PER_OCTAVE, _LOWEST_OCTAVE, _OCTAVES = 8, -160, 300  # |value| histogram: 9% wide bins over float32's range


# What a regress output's value runs through after its last weighted node (depth = 0.5 + 79.5 * sigmoid(conv)): each
# input but one constant. Its int8 rounding anywhere on the way is the output's (the Add alone float: 6.0% off under
# 1.5 m, from 9.6%), so the low-levels rule keeps them float back to that node.
VALUE_OPS = ("Add", "Sub", "Mul", "Div", "Sigmoid", "Tanh", "Exp", "Softplus", "HardSigmoid", "Neg", "Abs")


def _carried(node, constants: set[str], values: bool) -> str | None:
    """The input a node of an output's tail passes on to the output (None: the tail ends at it)."""
    if node.op_type in (*MOVEMENT_OPS, "Relu", "Clip"):
        return node.input[0]
    live = [i for i in node.input if i and i not in constants]
    return live[0] if values and node.op_type in VALUE_OPS and len(live) == 1 else None


def output_chains(model, settings: QuantSettings, values: bool = False) -> dict[str, list[str]]:
    """Each graph output whose producing node static quantization would quantize, with the nodes to keep float
    for it to stay float: the producer, reached back through MOVEMENT_OPS and Relu/Clip (onnxruntime gives a
    Conv's output the Relu's range and drops the Relu), and those ops; `values`: also through VALUE_OPS. Left out:
    a chain whose tensors anything else reads (a quantized reader would put the Q/DQ back), an unnamed node, one
    excluded or not quantized."""
    if settings.mode != "static":
        return {}
    graph = model.graph
    quantized = set(calibrated_ops(settings.op_types))
    producer = {o: n for n in graph.node for o in n.output}
    constants = {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    readers = Counter(i for n in graph.node if n.op_type not in ("Shape", "Size") for i in n.input)
    found = {}
    for out in graph.output:
        chain, name = [], out.name
        while (node := producer.get(name)) is not None and (carried := _carried(node, constants, values)):
            chain.append(node)
            name = carried
        # the output itself is read by nothing; each tensor inside the chain only by the chain's next node
        read_once = readers[out.name] == 0 and all(readers[_carried(n, constants, values)] == 1 for n in chain)
        if node is None or not read_once or len(node.output) > 1 or not all(n.name for n in (*chain, node)):
            continue
        if node.op_type in quantized and node.name not in settings.exclude_nodes:
            found[out.name] = [node.name, *(n.name for n in reversed(chain))]
    return found


def outputs_kept_float(model) -> set[str]:
    """The outputs of a quantized ModelProto whose last computing node runs in float (kept float, by the few-levels
    rule or --exclude-nodes): reached back through MOVEMENT_OPS, Relu and Clip, no DequantizeLinear gives them, nor
    dynamic quantization's integer product (_dynamic_integer)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found = set()
    for out in model.graph.output:
        node = producer.get(out.name)
        while node is not None and node.op_type in (*MOVEMENT_OPS, "Relu", "Clip"):
            node = producer.get(node.input[0])
        if node is not None and node.op_type != "DequantizeLinear" and not _dynamic_integer(node, producer):
            found.add(out.name)
    return found


DYNAMIC_INTEGER_OPS = ("MatMulInteger", "ConvInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")


def _dynamic_integer(node, producer: dict, depth: int = 3) -> bool:
    """Whether `node` is the float end of a dynamically quantized layer: MatMulInteger, then Cast, Mul (the scales)
    and Add (the bias) in float; an int8 head ending so was taken as kept float, its advice then left out."""
    if node.op_type in DYNAMIC_INTEGER_OPS:
        return True
    return depth > 0 and node.op_type in ("Cast", "Mul", "Add") and any(
        _dynamic_integer(p, producer, depth - 1) for p in map(producer.get, node.input) if p is not None)


def fold_ranges(ranges: dict | None, value) -> dict | None:
    """`ranges` (None: none yet) with one sample of an output folded in: the min and max of the whole tensor (key
    None) and of each channel along parity.channel_axes, an axis dropped once its size varies (a sequence's).
    O(channels) memory: a 255-channel 160x160 head's 128 calibration outputs, kept, took 3.4 GB. A sample with no
    values (a detector's selections: its max raised) and an output of integers are left out."""
    import numpy as np

    from .parity import channel_axes

    if not value.size or not np.issubdtype(value.dtype, np.floating):
        return ranges
    got = {None: (float(value.min()), float(value.max()))}
    for axis in channel_axes(value.ndim):
        if ranges is None or axis in ranges and ranges[axis][0].shape == (value.shape[axis],):
            others = tuple(a for a in range(value.ndim) if a != axis)
            got[axis] = value.min(axis=others).astype(np.float64), value.max(axis=others).astype(np.float64)
    if ranges is None:
        return got
    return {k: (np.minimum(ranges[k][0], lo), np.maximum(ranges[k][1], hi)) for k, (lo, hi) in got.items()}


def channel_levels(ranges: dict | None, steps: int) -> tuple[int | None, list[float]]:
    """The quantization levels each channel of one output spans over its own spread (its fold_ranges over the
    calibration data), at the step onnxruntime would use: the whole tensor's range with 0 in it, over `steps`. Of the
    channel axes, the one with the fewest levels (an NCHW head's axis 1, a [N, anchors, fields] head's last); a 1-D
    output, or one whose channel axes vary in size, is one channel. Returns (the axis, None for the whole tensor; the
    levels per channel, constant channels left out: they lose no signal)."""
    if not ranges:
        return None, []
    lo, hi = ranges[None]
    step = (max(hi, 0.0) - min(lo, 0.0)) / steps
    if not step:
        return None, []
    found = {axis: [float(x) / step for x in high - low if x > 0] for axis, (low, high) in ranges.items()
             if axis is not None}
    found[None] = [(hi - lo) / step] if hi > lo else []
    channels = [a for a in found if a is not None and found[a]]
    axis = min(channels, key=lambda a: (min(found[a]), a)) if channels else None
    return axis, found[axis]


def fold_magnitudes(counts, value, ranges: dict | None):
    """`counts` (None: none yet), a histogram of the output's nonzero |value| in log-spaced bins and, last, its count
    of zeros, with one sample folded in while `ranges` (fold_ranges, this sample's already in) keep one sign; None
    once they do not (no relative error to measure, and a logit head is not histogrammed). O(1) memory."""
    import numpy as np

    if not ranges or ranges[None][0] < 0 < ranges[None][1]:
        return None
    if not value.size or not np.issubdtype(value.dtype, np.floating):  # as fold_ranges
        return counts
    mags = np.abs(value[value != 0]).astype(np.float64).ravel()
    bins = np.floor(np.log2(mags[np.isfinite(mags)]) * _BINS_PER_OCTAVE) - _LOWEST_OCTAVE * _BINS_PER_OCTAVE
    size = _OCTAVES * _BINS_PER_OCTAVE
    found = np.append(np.bincount(np.clip(bins, 0, size - 1).astype(np.int64), minlength=size), value.size - mags.size)
    return found if counts is None else counts + found


def low_levels(ranges: dict | None, counts, steps: int) -> float | None:
    """The int8 steps (the whole output's, as channel_levels) between 0 and its LOW_QUANTILE of nonzero |value|
    (fold_magnitudes: to 9%); None for an output of both signs, with no nonzero value, or a ReLU's (ZERO_SHARE)."""
    import numpy as np

    if not ranges or counts is None or not counts[:-1].sum() or counts[-1] > ZERO_SHARE * counts.sum():
        return None
    counts = counts[:-1]
    lo, hi = ranges[None]
    step = (max(hi, 0.0) - min(lo, 0.0)) / steps
    at = int(np.searchsorted(np.cumsum(counts), LOW_QUANTILE * counts.sum()))
    return 2 ** ((at + 0.5) / _BINS_PER_OCTAVE + _LOWEST_OCTAVE) / step


def _output_ranges(path, names: list[str], feeds: Sequence, p: Plan | None = None, cache: Path | None = None
                   ) -> list[tuple[dict | None, object]]:
    """The float model's fold_ranges and fold_magnitudes of these outputs over the feeds (one pair per output), run
    feed by feed. With a `cache` that quantize() will read (a MinMax plan on the float model as it is), the same
    runs also make its ranges (minmax_ranges), saved there: calibration then needs no pass of its own (a target's
    model.onnx differs from `path` by metadata, fixed shapes or residual Sums, none of which moves a tensor)."""
    from .host import work_threads
    from .runtime import run, session

    folded = [(None, None)] * len(names)

    def fold(got) -> None:
        nonlocal folded
        folded = [(r := fold_ranges(r0, v), fold_magnitudes(c, v, r)) for (r0, c), v in zip(folded, got)]

    if cache is not None and p.settings.calibrate_method == "minmax" and not (p.split_outliers or p.half_weights):
        from onnxruntime.quantization.calibrate import save_tensors_data

        with tempfile.TemporaryDirectory(prefix="edgekit-") as tmp:
            ranges = minmax_ranges(str(path), p.settings.op_types, feeds, Path(tmp), seen=(names, fold),
                                   hint=p.blame)
        save_tensors_data(ranges, cache)
        return folded
    sess = session(path, threads=work_threads(), reuse=True)[0]  # the run's own float session
    for i, feed in enumerate(feeds):
        fold(run(sess, names, feed, give_back=i == len(feeds) - 1))
    return folded


def keep_narrow_outputs(p: Plan, path, feeds: Sequence, task: str = "regress", model=None,
                        cache: Path | None = None) -> Plan:
    """A graph output whose whole-tensor quantization gives some channel fewer than OUTPUT_LEVELS steps over that
    channel's spread on the calibration data keeps its producing nodes float (output_chains): onnxruntime's range
    of an output spans every channel and 0, so a logit beside pixel boxes, or a value of 300 +- 3, kept a few
    values while cosine and SQNR, ruled by the large ones, passed. So does a regress output of one sign whose low
    values lie within LOW_LEVELS steps of 0 (a depth map's near range off by 10%, read relative to its size).
    Float costs one node's int8 arithmetic. Task other (its outputs may be anything) only warns, naming the tasks
    that keep them. `model`: the run's ModelProto of `path`, parsed once per run; `cache`: see _output_ranges."""
    model = parsed(path if model is None else model)
    chains = output_chains(model, p.settings) if feeds else {}
    tails = output_chains(model, p.settings, values=True) if feeds and task in ("regress", "other") else {}
    if not chains and not tails:
        return p
    steps = 65535 if p.settings.activation_type in ("uint16", "int16") else 255
    kept, said, low_said = [], [], []
    names = list({**chains, **tails})
    for name, (ranges, counts) in zip(names, _output_ranges(path, names, feeds, p, cache)):
        axis, levels = channel_levels(ranges, steps)
        low = low_levels(ranges, counts, steps) if name in tails else None
        if name in chains and levels and min(levels) < OUTPUT_LEVELS:
            narrow = sorted(range(len(levels)), key=levels.__getitem__)[:FEW_LEVELS_SHOWN]
            where = "the whole tensor" if axis is None else f"axis {axis}"
            said.append(f"{', '.join(chains[name])} (output {name!r}: levels per channel along {where}, the "
                        f"narrowest {len(narrow)} of {len(levels)}: "
                        f"{', '.join(f'channel {k} {levels[k]:.1f}' for k in narrow)})")
            kept += chains[name]
        elif low is not None and low < LOW_LEVELS:
            low_said.append(f"{', '.join(tails[name])} (output {name!r}: of one sign, its lowest "
                            f"{LOW_QUANTILE:.0%} of |value| within {low:.1f} int8 steps of 0, the step "
                            f"{(max(ranges[None][1], 0.0) - min(ranges[None][0], 0.0)) / steps:.4g})")
            kept += tails[name]
    if not kept:
        return p
    if task == "other":
        warn = [f"{'; '.join(said)}: fewer than {OUTPUT_LEVELS} int8 levels of the output's whole range"] * bool(said)
        warn += [f"{'; '.join(low_said)}: fewer than {LOW_LEVELS}, coarse for a value read relative to its size"
                 ] * bool(low_said)
        classes = "; if they are class scores, --task classify holds int8 to fp32's top class (no labels needed)" \
            * bool(said)
        return dataclasses.replace(p, warnings=(*p.warnings, f"{'; '.join(warn)}{classes}; if its channels are values "
                                                "(boxes, scores, quantities), --task detect or regress keeps these "
                                                "nodes float" + (" (regress: those of one sign)" if low_said else "")))
    settings = dataclasses.replace(p.settings, exclude_nodes=tuple(dict.fromkeys((*p.settings.exclude_nodes, *kept))))
    why = [f"kept float: {'; '.join(said)}: a graph output is quantized over its whole range with 0 in it, and these "
           f"channels' own spread on the calibration data covers fewer than {OUTPUT_LEVELS} of its steps (a logit "
           "beside pixel boxes, a value of 300 +- 3 kept a few values while cosine and SQNR passed)"] * bool(said)
    why += [f"kept float: {'; '.join(low_said)}: a regress output of one sign is read relative to its size, and "
            f"int8's one step over its whole range is coarse for its low values under {LOW_LEVELS} steps (a depth "
            "map of 0.5-80 m, step 0.30 m, was 9.6% off under 1.5 m while cosine and SQNR passed)"] * bool(low_said)
    because = [f"some output channel spans < {OUTPUT_LEVELS} int8 levels of the whole output's range"] * bool(said)
    because += [f"a regress output's lowest {LOW_QUANTILE:.0%} of values lie < {LOW_LEVELS} int8 steps from 0"
                ] * bool(low_said)
    note = f"kept float: {', '.join(kept)}: {'; '.join(because)} (levels in the manifest's quantization decisions)"
    return dataclasses.replace(p, settings=settings, reasons=(*p.reasons, *why), warnings=(*p.warnings, note))


def float_rnns(model, mode: str, kept: Sequence[str] = ()) -> list:
    """The recurrent nodes left float: onnxruntime has no int8 op for them, but for its dynamic mode's LSTM (then
    float only on a state's path, `kept`)."""
    return [n for n in model.graph.node if n.op_type in RNN_OPS
            and (mode == "static" or n.op_type != "LSTM" or n.name in kept)]


def rnn_warnings(rnns: list, mode: str, kept: Sequence[str]) -> list[str]:
    """What keeps each of `rnns` float and what quantizes it: a streaming LSTM's hint was --quant-mode dynamic
    alone, which left it float (the state rule) and silenced the warning."""
    by_state = [n for n in rnns if mode == "dynamic" and n.op_type == "LSTM"]  # float_rnns: on the state path
    said = [f"{len(by_state)} LSTM node(s) stay float: they carry the state, float unless --quantize-state"] * bool(
        by_state)
    if other := Counter(n.op_type for n in rnns if n.op_type != "LSTM" or mode == "static"):
        fix = "--quant-mode dynamic" + (" --quantize-state" if any(n.op_type == "LSTM" and n.name in kept
                                                                   for n in rnns) else "")
        said.append(f"{', '.join(f'{c} {op}' for op, c in sorted(other.items()))} node(s) stay float: onnxruntime's "
                    f"{mode} quantizer has no int8 op for them"
                    + (f" (its dynamic mode quantizes LSTM weights: {fix})" if "LSTM" in other else ""))
    return said


MOST_WEIGHTS = 0.5  # float nodes holding this share of the weights explain an int8 model no smaller or faster


def _float_sizes(model) -> dict[str, int]:
    """Each float initializer's elements: computed once per model (per node, 1000 nodes took 0.9 s)."""
    return {t.name: math.prod(t.dims) for t in model.graph.initializer if t.data_type == 1}


def weight_share(model, names, sizes: dict[str, int] | None = None) -> float:
    """The share of the model's float weights (initializer elements) the nodes named read."""
    sizes = _float_sizes(model) if sizes is None else sizes
    names = set(names)
    read = {i for n in model.graph.node if n.name in names for i in n.input if i in sizes}
    return sum(sizes[i] for i in read) / max(1, sum(sizes.values()))


def float_weights(model, mode: str, kept: Sequence[str]) -> str:
    """The state path (`kept`) and recurrent nodes left float, when they hold most of the weights, and what quantizes
    them: a streaming GRU cell's float W_hh (86%) made int8 0.95x fp32, blamed on "per-call overhead". A recurrent
    node is named by its op only: rnn_warnings says it stays float and why ("1 GRU node(s) stay float" was said
    twice)."""
    rnns = {n.name for n in float_rnns(model, mode, kept)}
    names = rnns | set(kept)
    sizes = _float_sizes(model)
    if (share := weight_share(model, names, sizes)) < MOST_WEIGHTS:
        return ""
    weighted = [n for n in model.graph.node if n.name in names and any(sizes.get(i) for i in n.input)]
    recurrent = "/".join(sorted({n.op_type for n in weighted if n.name in rnns}))
    other = Counter(n.op_type for n in weighted if n.name not in rnns)  # on the state path: said nowhere else
    if not other:
        return f"{share:.0%} of the weights are in the float {recurrent}"
    return (f"{', '.join(f'{c} {op}' for op, c in sorted(other.items()))} node(s) on the state path"
            f"{f' and the {recurrent}' if recurrent else ''} stay float ({share:.0%} of the weights; "
            f"--quantize-state quantizes {'some of ' * bool(recurrent)}them)")


def refusal(settings: QuantSettings, opset: int) -> str | None:
    """Why onnxruntime's quantizer cannot quantize a model of this ai.onnx opset with these settings (None: it can).
    The one rule `plan` and the searches over settings (--auto's per-channel trial) go by: a per-channel trial of an
    opset-11 model failed in onnxruntime ("Unrecognized attribute: axis" of DequantizeLinear)."""
    if opset < 10:
        return "quantization needs opset >= 10"
    if settings.per_channel and opset < 13 and settings.mode == "static":
        return "per-channel quantization needs opset >= 13"
    return None


def plan(model, settings: QuantSettings, explicit: set[str], arch: str = "x86_64", kept: Sequence[str] = (),
         given_opset: int = 0) -> Plan:
    """Resolve `auto` choices for a model (path or ModelProto): reduce_range by target arch and host ISA,
    transformer scheme for attention. `kept`: the nodes the caller keeps float whatever the mode (a state's path).
    `given_opset`: the opset of the user's file, which pre-processing raised to the model's (an opset 9 file was
    told it was opset 11)."""
    from .host import EXACT_X86, int8_isa, isa_source, x86_saturates

    reasons, warnings = [], []
    model = parsed(model)
    opset = ai_onnx_opset(model)
    said = (f"the model is opset {given_opset} (pre-processing converts it to {opset})"
            if given_opset and given_opset != opset else f"the model is opset {opset}")
    if why := refusal(settings, opset):  # the advice once, as a flag: the API and a recipe name it their way
        per_tensor = dataclasses.replace(settings, per_channel=False)
        if refusal(per_tensor, opset) or "per_channel" in explicit:  # per-channel asked for: not quietly dropped
            raise UsageError(f"{said}; {why}" + ("" if refusal(per_tensor, opset) else ": give --per-tensor"))
        settings = per_tensor  # the profile's default: every opset-11 file was refused (exit 2) for a setting not given
        warnings.append(f"per-tensor weights: {said}, and {why} (re-export at opset 13 or later for per-channel)")
    _check_float32(model)
    if half := bool(casts := half_casts(model)):
        reasons.append(f"float16 weights: {len(casts)} tensor(s) read as float32 (exact) for quantization, so they are "
                       "stored int8; the float16 inputs and outputs stay float16")
    if fused := [n.name or n.op_type for n in model.graph.node if n.op_type.startswith("Fused")]:
        reasons.append(f"float: {', '.join(fused)}, onnxruntime's own fusions (FusedConv: a Conv and its activation), "
                       "which its quantizer does not quantize; give the model from before onnxruntime's graph "
                       "optimisation (Conv, Relu) to quantize them")
    attention = has_attention(model)
    split = False
    if attention and settings.transformer_scheme != "off" and (taken := sorted(explicit & {"mode", "op_types"})):
        warnings.append(f"attention graph: transformer_scheme {settings.transformer_scheme} not applied, "
                        f"{' and '.join(taken)} given (even as the default): the mode and op types are yours"
                        + ("; static QDQ of every op quantizes the mask path (all-MiniLM-L6-v2: cosine 0.40)"
                           if settings.mode == "static" and not settings.op_types else "")
                        + "; leave them out, or give --transformer-scheme off")
    elif attention and settings.transformer_scheme != "off":
        weights = {i.name for i in model.graph.initializer}  # a Gather of a Shape's output is no embedding table
        tables = "; embedding tables (Gather) stored int8" if any(
            n.op_type == "Gather" and n.input[0] in weights for n in model.graph.node) else ""
        if settings.transformer_scheme == "dynamic":
            if not dynamic_types(settings):
                raise UsageError(f"attention graph: transformer_scheme dynamic quantizes with uint8 activations and "
                                 f"int8/uint8 weights, not {settings.activation_type}/{settings.weight_type}: give "
                                 "--transformer-scheme matmul-static (or off) for these types")
            settings = dataclasses.replace(settings, mode="dynamic", op_types=("MatMul", "Gemm", "Gather"))
            reasons.append("attention graph: dynamic int8 MatMul/Gemm (full static QDQ would quantize the mask path)"
                           + tables)
        else:
            settings = dataclasses.replace(settings, mode="static", op_types=("MatMul", "Gemm", "Gather"))
            split = settings.format == "QDQ"
            reasons.append("attention graph: static QDQ on MatMul/Gemm only (keeps the mask path float)" + tables)
            if split:
                reasons.append(
                    f"attention graph, static per-tensor: activation channels over {OUTLIER_RATIO:g}x the median "
                    "channel's calibrated range (LayerNorm outputs' residual dims, GELU outputs' outlier neurons) "
                    "go through a float side path (Gather, small MatMul, Add) and are zeroed on the int8 path with "
                    "their weight rows; MatMul output channels over that ratio are scaled down in the int8 weights "
                    "and back up by a float Mul. Exact in float, every MatMul stays int8 (QDQ, the profile's types); "
                    "all-MiniLM-L6-v2 on android-arm64: worst sentence cosine 0.903 -> 0.994, 22.9 -> 23.3 MB, "
                    "int8 p50 1.04-1.06x the plain scheme's, NNAPI coverage 95% -> 96%")
    _check_named(model, settings, explicit)  # the names the run will use: the attention scheme's replace a profile's
    if clipping := clipped_outputs(model, settings):
        settings = dataclasses.replace(settings, exclude_nodes=(*settings.exclude_nodes, *clipping))
        reasons.append(f"kept float: {', '.join(clipping)}, whose input is also a graph output: onnxruntime's "
                       "quantizer gives a Relu/Clip's only input the Relu/Clip's range, which clipped that output")
    if halves := half_nodes(model, settings):
        settings = dataclasses.replace(settings, exclude_nodes=(*settings.exclude_nodes, *halves))
        named = {n.name: n.op_type for n in model.graph.node}
        ops = sorted(Counter(named[h] for h in halves).items())
        reasons.append(f"kept float16: {', '.join(f'{c} {op}' for op, c in ops)} node(s), which "
                       "onnxruntime runs in float16 (the model's own type): its quantizer gave them float16 scales, "
                       "which its integer kernels (QLinearConcat) refuse, and ONNX's QuantizeLinear takes only from "
                       "opset 19")
    if joined := concat_outputs(model, settings):
        settings = dataclasses.replace(settings, exclude_nodes=(*settings.exclude_nodes, *joined))
        reasons.append(f"kept float: {', '.join(joined)}, a Concat that only reshapes on to a graph output: static "
                       "QDQ rounds a Concat's output at the union of its inputs' ranges, which wipes out a small-range "
                       "part (a detection head's confidences beside pixel coordinates)")
    if masked := masked_nodes(model, settings):
        settings = dataclasses.replace(settings, exclude_nodes=(*settings.exclude_nodes, *masked))
        reasons.append(f"kept float: {', '.join(masked)}, on the path of an infinite constant (a mask, as a causal "
                       "mask's -inf) up to its Softmax: int8 holds no infinity, and the quantizer's scale for it was "
                       "infinite, which lost the mask")
    warnings += rnn_warnings(float_rnns(model, settings.mode, kept), settings.mode, kept)
    if settings.reduce_range == "auto":
        reduce = (arch == "x86_64" and x86_saturates() and settings.weight_type == "int8"
                  and settings.activation_type == "uint8")
        if reduce:
            reasons.append(f"reduce_range: host ISA {int8_isa()} (from {isa_source()}) has no VNNI; u8s8 would "
                           "saturate int16 (onnxruntime#6004), so weights use 7 bits")
        elif (arch == "x86_64" and int8_isa() in EXACT_X86 and settings.weight_type == "int8"
              and settings.activation_type == "uint8"):
            reasons.append(f"reduce_range off: host ISA {int8_isa()} (from {isa_source()}) has VNNI, which does not "
                           "saturate; on an x86 CPU without VNNI (AVX2) this model's u8s8 sums can saturate: run it "
                           "there with session option session.x64quantprecision=1, or export with --reduce-range true")
    else:
        reduce = settings.reduce_range == "true"
    padded, unpadded = convs_to_pad(model, settings, arch, opset)
    reasons += [unpadded] * bool(unpadded)
    if rows := row_biases(model, settings):
        reasons.append(f"Gemm bias {', '.join(rows)}: one row [1, N], quantized as the vector [N] it broadcasts as "
                       "(exact): onnxruntime's per-channel quantizer (or --auto's per-channel trial) reads a bias by "
                       "output channel")
    return Plan(settings, reduce, attention, tuple(reasons), opset, split, half, warnings=tuple(warnings),
                padded_convs=padded, control_flow=any(True for n in model.graph.node for _ in subgraphs(n)),
                row_biases=rows, nodes=sum(len(g.node) for g in all_graphs(model.graph)),
                constant_outputs=constant_outputs(model))


def constant_outputs(model) -> tuple[str, ...]:
    """The graph outputs that are initializers (anchors, a bias returned as well): onnxruntime's quantizer
    quantized them like any weight, and a DequantizeLinear then returned them changed (max_abs 5.8e-5)."""
    weights = {t.name for t in model.graph.initializer}
    return tuple(o.name for o in model.graph.output if o.name in weights)


def restore_constant_outputs(model, given: str, names: Sequence[str]) -> bool:
    """Give `names` (constant_outputs) in the int8 ModelProto back their float values, exact, from the file `given`:
    the quantized copy that onnxruntime's DequantizeLinear gives under the output's name goes on feeding the nodes
    that read it (renamed), as the rest of the int8 model has it; one that nothing reads then (QOperator's QGemm and
    dynamic's MatMulInteger read the int8 weight itself) goes (drop_unread). Whether any was restored."""
    import onnx

    weights = {t.name for t in model.graph.initializer}
    lost = [n for n in names if n not in weights]
    if not lost:
        return False
    given_weights = {t.name: t for t in onnx.load(given).graph.initializer if t.name in lost}
    for name in lost:
        for n in all_nodes(model.graph):
            n.input[:] = [f"{name}/int8" if t == name else t for t in n.input]
            n.output[:] = [f"{name}/int8" if t == name else t for t in n.output]
        model.graph.initializer.append(given_weights[name])
    drop_unread(model.graph)
    return True


def drop_unread(graph) -> None:
    """Remove the nodes of `graph` none of whose outputs is read: not a graph output, nor any node's input or
    sub-graph's output (a body reads the outer graph's names), until none is left (a dead node's own inputs), and
    then the initializers nothing reads (a dead DequantizeLinear's scale) that are no graph input."""
    while True:
        read = {t for g in all_graphs(graph) for t in (*(o.name for o in g.output),
                                                        *(i for n in g.node for i in n.input))}
        if not keep_only(graph.node, lambda n: bool(read & set(n.output))):
            break
    kept = read | {i.name for i in graph.input}
    keep_only(graph.initializer, lambda t: t.name in kept)


def keep_only(field, keep: Callable) -> int:
    """Rebuild the repeated protobuf `field` with the items `keep` accepts, in order; how many went. Not its
    remove() item by item: each searches the field comparing whole messages (a float16 model's 4,000 weight Casts
    and weights, removed one at a time: 14 s)."""
    kept = [item for item in field if keep(item)]
    gone = len(field) - len(kept)
    if gone:
        del field[:]
        field.extend(kept)
    return gone


CONV_CHANNELS = 4  # the input channel multiple onnxruntime's symmetric int8 conv takes (host.sym_conv_takes)


def convs_to_pad(model, settings: QuantSettings, arch: str, opset: int) -> tuple[tuple[str, ...], str]:
    """The int8 Convs whose input channels (not a multiple of 4: an RGB stem) pad_convs pads, because
    onnxruntime's fast int8 conv takes the padded conv on this target (host.sym_conv_takes) and not the other; and
    when such a conv stays unpadded on an x86-64 target, why (the host ISA decided it). Only a first Conv on its path
    from the inputs: between two int8 convs the uint8 Pad sits between onnxruntime's NHWC int8 kernels, and an
    two interior 30-channel convs padded to 32 ran slower (int8 2.48-2.54x fp32 unpadded, 2.31-2.35x padded)."""
    import math

    from onnx import helper

    from .host import int8_isa, isa_source, sym_conv_takes

    if (settings.mode, settings.format, settings.activation_type, settings.weight_type, opset >= 11) != (
            "static", "QDQ", "uint8", "int8", True) or settings.op_types and "Conv" not in settings.op_types:
        return (), ""
    weights = {t.name: t.dims for t in model.graph.initializer}
    found, kept, after_conv = [], [], set()
    for n in model.graph.node:  # topologically sorted
        groups = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "group"), 1)
        first = n.op_type == "Conv" and n.input[0] not in after_conv
        if n.op_type == "Conv" or after_conv & set(n.input):
            after_conv.update(n.output)
        if not first or n.name in settings.exclude_nodes or n.input[1] not in weights or groups != 1:
            continue
        cout, cin, *kernel = weights[n.input[1]]
        if cin % CONV_CHANNELS:
            wide = -(-cin // CONV_CHANNELS) * CONV_CHANNELS
            takes = sym_conv_takes(arch, wide, cout, math.prod(kernel))
            (found if takes and not sym_conv_takes(arch, cin, cout, math.prod(kernel)) else kept).append(n)
    names = ", ".join(map(key, kept))
    why = (f"int8 Conv input channels not padded to a multiple of {CONV_CHANNELS} ({names}): onnxruntime's symmetric "
           f"int8 conv would not take them padded on host ISA {int8_isa()} (from {isa_source()})"
           if kept and arch == "x86_64" else "")
    return tuple(map(key, found)), why


def key(node) -> str:
    """A node as found again after quantization: its name; else its output, which a fused Relu may take over."""
    return node.name or node.output[0]


PADDED = "int8 Conv input channels padded"


def padded_why(padded: list[str]) -> str:
    from .host import int8_isa, isa_source

    return (f"{PADDED} to a multiple of {CONV_CHANNELS} with zero weights, the uint8 input padded by its zero point "
            f"(exact): {', '.join(padded)}; onnxruntime's symmetric int8 conv (MLAS, x86-64 from AVX2; host ISA "
            f"{int8_isa()} from {isa_source()}) takes no other, and a 3-channel stem ran slower int8 than fp32 "
            "(MobileNetV2-style's 0.36 ms against 0.19 ms; padded 0.17 ms)")


def pad_convs(model, convs: Sequence[str]) -> list[str]:
    """Pad the input channels of these int8 Convs (by key()) in a QDQ ModelProto to a multiple of 4: zero
    int8 weights for the new channels, and a Pad of the uint8 input by its zero point (real 0) between its
    QuantizeLinear and DequantizeLinear, so the quantizer's scales stay and the output is the same. onnxruntime's
    quantizer would wrap a float Pad in Q/DQ of its own. Returns "conv (3 -> 4)" for each conv padded."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from .onnx_export import all_nodes

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = {t.name: t for t in graph.initializer}
    readers = Counter(i for n in all_nodes(graph) for i in n.input)

    def dequantized(name: str, kind: int):
        """The DequantizeLinear writing `name` from a constant-scale tensor of this type with a constant zero point."""
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or dq.input[2] not in consts:
            return None
        zero = consts[dq.input[2]]
        return dq if zero.data_type == kind and (kind == TensorProto.INT8 or not zero.dims) else None

    done, order, moved = [], [], []
    for conv in graph.node:
        order.append(conv)
        if conv.op_type != "Conv" or key(conv) not in convs:
            continue
        dq_x, dq_w = dequantized(conv.input[0], TensorProto.UINT8), dequantized(conv.input[1], TensorProto.INT8)
        w = consts.get(dq_w.input[0]) if dq_w else None
        if dq_x is None or w is None or readers[w.name] != 1 or numpy_helper.to_array(consts[dq_w.input[2]]).any():
            continue
        weight = numpy_helper.to_array(w)
        cin, rank, extra = weight.shape[1], weight.ndim, -weight.shape[1] % CONV_CHANNELS
        w.CopyFrom(numpy_helper.from_array(np.pad(weight, [(0, extra * (axis == 1)) for axis in range(rank)]), w.name))
        base = f"{key(conv)}/channel_pad"
        graph.initializer.append(numpy_helper.from_array(np.eye(1, 2 * rank, rank + 1, np.int64)[0] * extra,
                                                         f"{base}/pads"))  # after the last channel
        order[-1:] = [helper.make_node("Pad", [dq_x.input[0], f"{base}/pads", dq_x.input[2]], [f"{base}/quantized"],
                                       name=f"{base}/Pad"),
                      helper.make_node("DequantizeLinear", [f"{base}/quantized", *dq_x.input[1:3]],
                                       [f"{base}/dequantized"], name=f"{base}/DequantizeLinear"),
                      conv]
        readers[conv.input[0]] -= 1
        conv.input[0] = f"{base}/dequantized"
        moved.append(dq_x)
        done.append(f"{key(conv)} ({cin} -> {cin + extra})")
    unread = {id(n) for n in moved if readers[n.output[0]] == 0 and n.output[0] not in {o.name for o in graph.output}}
    del graph.node[:]
    graph.node.extend(n for n in order if id(n) not in unread)
    return done


WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def half_casts(model) -> list:
    """Cast nodes that turn a float16 initializer into float32: onnxruntime's pre-processing puts one on each weight
    of a half model (its CPU kernels are float32), and its quantizer leaves the float16 weight behind them float16."""
    from onnx import helper

    halves = {t.name for t in model.graph.initializer if t.data_type == 10}
    return [n for n in model.graph.node if n.op_type == "Cast" and n.input[0] in halves
            and next((helper.get_attribute_value(a) for a in n.attribute if a.name == "to"), 0) == 1]


def half_nodes(model, settings: QuantSettings) -> list[str]:
    """Nodes that read or write a float16 tensor: pre-processing casts a half model's ops without a float16 CPU
    kernel to float32, but Concat, Split, Slice (any type) stay float16, and onnxruntime's quantizer gave them a
    float16 QuantizeLinear, which ONNX allows from opset 19 only: the int8 model failed onnx's checker."""
    graph = model.graph
    halves = {v.name for v in (*graph.input, *graph.value_info, *graph.output) if v.type.tensor_type.elem_type == 10}
    halves |= {t.name for t in graph.initializer if t.data_type == 10}
    return [n.name for n in graph.node if n.name and n.op_type != "Cast" and n.name not in settings.exclude_nodes
            and halves & {*n.input, *n.output}]


def fold_half_casts(model) -> int:
    """Replace each of half_casts() by a float32 initializer of its output's name (exact: float16 -> float32 loses
    nothing), in this ModelProto, so onnxruntime's quantizer stores those weights int8. Returns how many."""
    from onnx import numpy_helper

    from .onnx_export import all_nodes

    graph = model.graph
    casts = half_casts(model)
    halves = {t.name: t for t in graph.initializer}
    for n in casts:
        w = numpy_helper.to_array(halves[n.input[0]]).astype("float32")
        graph.initializer.append(numpy_helper.from_array(w, n.output[0]))
    folded = {n.output[0] for n in casts}
    keep_only(graph.node, lambda n: n.op_type != "Cast" or n.output[0] not in folded)
    # a sub-graph's node may read a weight too (an If branch's Concat): it stays while anything reads it
    read = {i for n in all_nodes(graph) for i in n.input} | {o.name for o in graph.output}
    keep_only(graph.initializer, lambda t: t.data_type != 10 or t.name in read)
    return len(casts)


def row_biases(model, settings: QuantSettings) -> tuple[str, ...]:
    """Gemm biases given as one row [1, N] (onnxruntime's pre-processing makes a Gemm of a MatMul + Add of a [1, N]
    constant), read as a Gemm's bias alone: onnxruntime's static per-channel quantizer indexes a bias by output
    channel and failed on a row ("The truth value of an array with more than one element is ambiguous", exit 4).
    For any static plan: --auto's trials try per-channel from a per-tensor plan, and the vector is exact either way."""
    from .onnx_export import all_nodes

    if settings.mode != "static":
        return ()
    graph = model.graph
    rows = {t.name for t in graph.initializer if len(t.dims) == 2 and t.dims[0] == 1}
    biases = {n.input[2] for n in graph.node if n.op_type == "Gemm" and n.input[2:3] and n.input[2] in rows}
    others = {i for n in all_nodes(graph) for k, i in enumerate(n.input) if n.op_type != "Gemm" or k != 2}
    return tuple(sorted(biases - others - {o.name for o in graph.output}))


def flatten_rows(model, names: Sequence[str]) -> None:
    """Each of row_biases() as the vector [N] it broadcasts as in its Gemms (exact), in this ModelProto."""
    for t in model.graph.initializer:
        if t.name in names:
            del t.dims[0]
    for info in [v for v in model.graph.value_info if v.name in names]:  # its shape as pre-processing inferred it
        model.graph.value_info.remove(info)
    for given in model.graph.input:  # an old exporter's weights listed as inputs too
        if given.name in names and given.type.tensor_type.shape.dim:
            del given.type.tensor_type.shape.dim[0]


def _check_float32(model) -> None:
    """Weights still 16-bit floats past half_casts() stay so in the "int8" model (onnxruntime's quantizer quantizes
    them at run time): no smaller, its manifest claiming int8 weights, and ORT format conversion rejects it."""
    halves = {t.name for t in model.graph.initializer if t.data_type in (10, 16)}  # float16, bfloat16
    found = sum(1 for n in model.graph.node if n.op_type in WEIGHTED_OPS and n.input[1:2] and n.input[1] in halves)
    if found:
        raise InputError(f"the model's weights are 16-bit floats ({found} {'/'.join(WEIGHTED_OPS)} weight(s)), which "
                         "onnxruntime's quantizer leaves unquantized: edgekit quantizes float32 models, so call "
                         ".float() on it first (and give float32 inputs)")


def _typed_with_comma(key: str, name: str) -> str:
    """How the CLI's flag takes a name with a comma, which its list splits at (html_names.onnx's node 'a,b'). Quoted
    whole, so errors.rename leaves it: the API and a recipe take the name as is, in their lists."""
    if "," not in name or not said_for_the_cli():
        return ""
    typed = name.replace(",", "\\,")
    return f" on the command line `--{key.replace('_', '-')} '{typed}'`: a comma in a name is written \\,"


def _check_named(model, settings: QuantSettings, explicit: set[str]) -> None:
    """The op types and nodes the user named exist: a typo (`conv` for `Conv`) would otherwise quantize nothing,
    or exclude nothing, and pass as int8. An op type this model lacks is allowed when ONNX or onnxruntime's
    quantizer knows it (a recipe may serve several models), as long as one of those listed is there. A profile's
    own lists too: one naming `conv` quantized nothing, and its manifest said op_types ['conv']."""
    if not (settings.op_types or settings.exclude_nodes):
        return
    import difflib

    import onnx
    from onnxruntime.quantization import registry

    from .onnx_export import all_nodes

    def given(key: str, value: str) -> str:
        """The setting as the user gave it: its flag (errors.as_said names it a recipe's or the API's way), else the
        profile's."""
        return f"--{key.replace('_', '-')} '{value}'" if key in explicit else f"the profile's {key}"

    def refuse(key: str, what: str, name: str, known: set[str]) -> UsageError:
        near = ([k for k in sorted(known) if name in k]  # a node onnxruntime's pre-processing fused and renamed
                or difflib.get_close_matches(name, sorted(known), 1, 0.8)
                or [k for k in sorted(known) if k.lower() == name.lower()])
        hint = f" (did you mean {near[0]!r}?{_typed_with_comma(key, near[0])})" if near else ""
        return UsageError(f"{given(key, name)}: the model has no {what} {name!r}{hint}" + (
            "; names are those after onnxruntime's pre-processing: `edgekit inspect --nodes "
            "OUT/<target>/model.onnx` lists them" if what == "node" else ""))

    nodes = list(all_nodes(model.graph))
    if settings.op_types:
        ops = {n.op_type for n in nodes}
        quantizable = {*registry.CommonOpsRegistry, *registry.IntegerOpsRegistry, *registry.QLinearOpsRegistry,
                       *registry.QDQRegistry}
        for op in settings.op_types:
            if op not in ops and op not in quantizable and not onnx.defs.has(op):
                raise refuse("op_types", "op type", op, ops)
        if not ops & set(settings.op_types):
            raise UsageError(f"{given('op_types', ','.join(settings.op_types))}: none of "
                             f"{', '.join(settings.op_types)} is in the model, so nothing would "
                             f"be quantized (its op types: {', '.join(sorted(ops))})")
    if settings.exclude_nodes:
        names = {n.name for n in nodes}
        for name in settings.exclude_nodes:
            if name not in names:
                raise refuse("exclude_nodes", "node", name, names)


def _channel_max(model, tensors: list[str], feeds: list, tmp: Path) -> dict:
    """|max| per channel (last axis) of these tensors of a float ModelProto over the feeds."""
    import numpy as np
    import onnx

    from .host import work_threads
    from .runtime import run, session

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    augmented.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors)
    path = tmp / "channel_max.onnx"
    onnx.save(augmented, str(path))
    sess = session(path, threads=work_threads())[0]
    found: dict = {}
    for feed in feeds:
        for t, v in zip(tensors, run(sess, tensors, feed)):
            a = np.abs(v).reshape(-1, v.shape[-1]).max(axis=0)
            found[t] = np.maximum(found[t], a) if t in found else a
    return found


def split_outliers(model, feeds: list, tmp: Path, ratio: float = OUTLIER_RATIO) -> tuple[object, list[str], str]:
    """For static per-tensor QDQ of MatMuls with constant weights. A few activation channels (a LayerNorm's residual
    outlier dims, a GELU's outlier neurons) set a whole tensor's uint8 range, and their weight rows the weights'.
    X·W = (X⊙m)·(W, rows J zeroed) + X[..., J]·W[J]: channels J go through a float side path (Gather, small
    MatMul, Add), the int8 MatMul gets the rest. Then output channels whose range is an outlier are divided out of
    the int8 weights' columns and multiplied back by a float Mul. Exact in float arithmetic.
    Returns (the ModelProto, changed in place; the nodes added, which stay float; what was done)."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer if len(t.dims) == 2 and t.data_type == 1}
    vectors = {t.name: t for t in graph.initializer
               if t.data_type == 1 and len(t.dims) <= 2 and list(t.dims[:-1]) in ([], [1])}

    def attr(n, name, default):
        return next((helper.get_attribute_value(a) for a in n.attribute if a.name == name), default)

    def weight(n):  # as [K, N]
        w = numpy_helper.to_array(weights[n.input[1]])
        return w.T if attr(n, "transB", 0) else w

    def set_weight(n, w):
        w = np.ascontiguousarray(w.T if attr(n, "transB", 0) else w, np.float32)
        weights[n.input[1]].CopyFrom(numpy_helper.from_array(w, n.input[1]))

    # MatMul, or Gemm (pre-processing fuses MatMul+Add of 2-D inputs into it) with a per-column bias or none
    outs = [n.output[0] for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights
            and n.input[0] not in weights and (n.op_type == "MatMul" or n.op_type == "Gemm" and not attr(n, "transA", 0)
            and (len(n.input) < 3 or not n.input[2] or n.input[2] in vectors))]
    added: list[str] = []

    def node(op, inputs, output, **attrs):
        added.append(f"{output}/{op}")
        return helper.make_node(op, inputs, [output], name=f"{output}/{op}", **attrs)

    def pass_(edit) -> int:
        """Run `edit(matmul, channel max of its input, before, after)` on each MatMul; place what it adds."""
        by_out = {n.output[0]: n for n in graph.node}
        stats = _channel_max(model, list(dict.fromkeys(t for y in outs for t in edit.reads(by_out[y]))), feeds, tmp)
        before, after, count = {}, {}, 0
        for y in outs:  # by node identity: an edit renames the MatMul's output
            count += edit(by_out[y], stats, before.setdefault(id(by_out[y]), []), after.setdefault(id(by_out[y]), []))
        order = []
        for n in graph.node:
            order += [*before.get(id(n), []), n, *after.get(id(n), [])]
        del graph.node[:]
        graph.node.extend(order)
        return count

    def outliers(a):
        found = np.flatnonzero(a > ratio * np.median(a))
        return found if 0 < len(found) < len(a) else None

    shared: dict = {}

    def side_path(n, stats, before, after) -> int:
        x, y = n.input[0], n.output[0]
        J = outliers(stats[x])
        if J is None:
            return 0
        w = weight(n).copy()
        graph.initializer.append(numpy_helper.from_array(w[J] * np.float32(attr(n, "alpha", 1.0)),
                                                         f"{y}/outlier_weight"))
        w[J] = 0
        set_weight(n, w)
        new = (x, tuple(J)) not in shared
        if new:  # Q, K and V read one LayerNorm output: one mask and one Gather for the three
            mask = np.ones(stats[x].shape, np.float32)
            mask[J] = 0
            graph.initializer.extend([numpy_helper.from_array(mask, f"{y}/outlier_mask"),
                                      numpy_helper.from_array(J.astype(np.int64), f"{y}/outlier_channels")])
            before += [node("Mul", [x, f"{y}/outlier_mask"], f"{y}/int8_input"),
                       node("Gather", [x, f"{y}/outlier_channels"], f"{y}/outlier_input", axis=-1)]
            shared[x, tuple(J)] = (f"{y}/int8_input", f"{y}/outlier_input")
        masked, picked = shared[x, tuple(J)]
        n.input[0], n.output[0] = masked, f"{y}/int8_part"
        after += [node("MatMul", [picked, f"{y}/outlier_weight"], f"{y}/outlier_part"),
                  node("Add", [f"{y}/int8_part", f"{y}/outlier_part"], y)]
        return len(J) if new else 0

    def rescale(n, stats, before, after) -> int:
        y = n.output[0]
        K = outliers(stats[y])
        if K is None:
            return 0
        bias = vectors[n.input[2]] if len(n.input) > 2 and n.input[2] else None  # Gemm's: scaled with its columns
        if bias is not None and numpy_helper.to_array(bias).size != len(stats[y]):
            return 0
        scale = np.ones(stats[y].shape, np.float32)
        scale[K] = stats[y][K] / np.delete(stats[y], K).max()
        set_weight(n, weight(n) / scale)
        if bias is not None:
            b = numpy_helper.to_array(bias)
            bias.CopyFrom(numpy_helper.from_array((b / scale.reshape(b.shape)).astype(np.float32), bias.name))
        graph.initializer.append(numpy_helper.from_array(scale, f"{y}/outlier_scale"))
        n.output[0] = f"{y}/int8_scaled"
        after.append(node("Mul", [f"{y}/int8_scaled", f"{y}/outlier_scale"], y))
        return len(K)

    side_path.reads = lambda n: [n.input[0]]
    rescale.reads = lambda n: [n.output[0]]
    if not outs:
        return model, [], ""
    n_in = pass_(side_path)
    outs = [y if not any(a == f"{y}/Add" for a in added) else f"{y}/int8_part" for y in outs]
    n_out = pass_(rescale)
    why = (f"outlier channels (over {ratio:g}x the median channel's calibrated range) of {len(outs)} MatMul/Gemm "
           "node(s): "
           f"{n_in} input channel(s) through float side paths, {n_out} output channel(s) rescaled by float Muls")
    return model, added, why if added else ""


SPLIT_TENSORS = ("/int8_input", "/int8_part", "/int8_scaled")  # split_outliers' int8 tensors: not in the float model


def _unpair(model) -> None:
    """Rename the dequantized copies of split_outliers' own tensors in this ModelProto: onnxruntime's qdq_loss_debug
    pairs every `X_DequantizeLinear_Output` with a float model's `X` (and fails on a KeyError when there is none)."""
    suffix = "_DequantizeLinear_Output"
    renamed = {t: t[: -len(suffix)] + "_dequantized" for n in model.graph.node for t in n.output
               if t.endswith(suffix) and t[: -len(suffix)].endswith(SPLIT_TENSORS)}
    for n in model.graph.node:
        n.input[:] = [renamed.get(t, t) for t in n.input]
        n.output[:] = [renamed.get(t, t) for t in n.output]


DONE = "edgekit_quantize_done"  # quantize()'s record of what it did to the model, in the model's metadata


def done(model) -> tuple[str, ...]:
    """What quantize() did to this ModelProto (split outliers, padded convs), taken out of its metadata: the
    manifest's decisions describe the model shipped, not the last of the trials that share a plan."""
    try:  # a user's model may carry one of its own: '[' * 20000 or "x" failed the export (exit 5)
        found = next((json.loads(p.value) for p in model.metadata_props if p.key == DONE), [])
    except (ValueError, RecursionError):
        found = []
    if not (isinstance(found, list) and all(isinstance(s, str) for s in found)):
        found = []
    kept = [p for p in model.metadata_props if p.key != DONE]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    return tuple(found)


def cache_path(folder: Path, s: QuantSettings) -> Path:
    """onnxruntime's calibration cache for these settings' ranges: one per calibration method (and percentile)."""
    key = s.calibrate_method + (f"-{s.percentile}" if s.calibrate_method == "percentile" else "")
    return folder / f"calibration-{key}.json"


def quantize(src: Path, dest: Path, p: Plan, feeds: Sequence, progress=None, cache: Path | None = None) -> Path:
    """`cache`: onnxruntime's calibration cache; trials that share a calibration method reuse its ranges."""
    try:
        # onnxruntime's histogram calibrators print chatter on stdout, which belongs to --json
        with quiet(), tempfile.TemporaryDirectory(prefix="edgekit-") as tmp:
            import onnx

            given = str(src)
            if p.half_weights or p.row_biases:  # plan() said so among its reasons
                fold_half_casts(model := onnx.load(str(src)))
                flatten_rows(model, p.row_biases)
                src = Path(tmp) / "float32_weights.onnx"
                onnx.save(model, str(src))
            did = []
            if p.split_outliers and feeds and p.settings.mode == "static":
                model, added, why = split_outliers(onnx.load(str(src)), feeds, Path(tmp))
                if added:
                    did.append(why)
                    src = Path(tmp) / "split.onnx"
                    onnx.save(model, str(src))
                    p = dataclasses.replace(p, settings=dataclasses.replace(
                        p.settings, exclude_nodes=(*p.settings.exclude_nodes, *added)))
            _call(p, str(src), str(dest), feeds, progress, cache, Path(tmp))
            if not (did or p.padded_convs or p.control_flow or p.constant_outputs):
                return dest  # the int8 model as onnxruntime wrote it, not parsed again
            model = onnx.load(str(dest))
            moved = restore_constant_outputs(model, given, p.constant_outputs)
            moved = p.control_flow and sort_nodes(model.graph) or moved
            if did or p.padded_convs:
                _unpair(model)
                if padded := pad_convs(model, p.padded_convs):
                    did.append(padded_why(padded))
                if did:  # carried by this model file: tune's and --precision latency's trials share one plan
                    model.metadata_props.add(key=DONE, value=json.dumps(did))
            if did or moved:
                onnx.save(model, str(dest))
    except (StageError, InputError):
        raise  # edgekit's own run of the model (split_outliers', minmax_ranges' finite outputs), already told as such
    except Exception as e:
        from .runtime import run_error

        cause = str(e) if isinstance(e, QuantizerFailed) else f"{type(e).__name__}: {first_line(e)}"
        raise run_error(cause, "quantization", "the calibration data") from e
    return dest


def _call(p: Plan, src: str, dest: str, feeds: Sequence, progress, cache: Path | None, tmp: Path) -> None:
    from onnxruntime.quantization.calibrate import save_tensors_data

    s = p.settings
    # Ranges computed here, handed to quantize_static as its calibration cache: its own MinMax calibrator grows as
    # nodes squared (4,000 Relus: 72 s) and runs the model with no time limit
    cache = cache or tmp / "ranges.json"
    if s.mode == "static" and not cache.is_file():  # a trial's cache (same method) is reused as is
        op_types = list(s.op_types) or None
        ranges = (minmax_ranges(src, op_types, feeds, tmp, progress, hint=p.blame) if s.calibrate_method == "minmax"
                  else histogram_ranges(src, op_types, feeds, s, tmp, progress, hint=p.blame))
        save_tensors_data(ranges, cache)
    if not in_child(p):
        quantizer(src, dest, quantizer_options(p), str(cache))
        return
    from . import bounded
    from .runtime import run_limit

    seconds, raised_by = run_limit()
    options = json.dumps(quantizer_options(p), default=_array_json)
    if failed := bounded.run("quantization", "edgekit.quantization:quantizer_in_child", src, dest, options,
                             str(cache), timeout=seconds, raised_by=raised_by):
        raise QuantizerFailed(failed)


QUANTIZER_IN_PROCESS_NODES = 1000  # nodes up to which a file from others is quantized in-process (in_child)


def in_child(p: Plan) -> bool:
    """Whether onnxruntime's quantizer runs in the bounded child: for a file from others past
    QUANTIZER_IN_PROCESS_NODES. Its time grows as nodes squared on every graph (quantizer_in_child), so up to
    1,000 nodes it ends within seconds (500 Conv+Relu pairs: ~5 s here; a 300-block ResNet's 1,504 nodes: ~21 s);
    the child's start-up (~0.9 s) would cost a small file's export a fifth of its time and each --auto trial as
    much. edgekit's own exports of the user's code stay in-process."""
    return p.from_file and p.nodes > QUANTIZER_IN_PROCESS_NODES


class QuantizerFailed(Exception):
    """onnxruntime's quantizer failed in the bounded child, said there as quantize() says it in-process."""


def quantizer_options(p: Plan) -> dict:
    """quantize_static's (quantize_dynamic's) keyword arguments for the plan, onnxruntime's enums by name: plain
    values, which reach a bounded child as json."""
    s = p.settings
    common = {"op_types_to_quantize": list(s.op_types) or None, "per_channel": s.per_channel,
              "reduce_range": p.reduce_range, "weight_type": QUANT_TYPES[s.weight_type],
              "nodes_to_exclude": list(s.exclude_nodes) or None}
    if s.mode == "dynamic":
        return {**common, "extra_options": {"MatMulConstBOnly": True}}
    extra = {"TensorQuantOverrides": p.tensor_overrides}
    if s.calibrate_method == "percentile":
        extra["CalibPercentile"] = s.percentile
    if s.activation_type in ("uint16", "int16") or s.weight_type in ("uint16", "int16"):
        extra["UseQDQContribOps"] = True
    return {**common, "quant_format": s.format, "activation_type": QUANT_TYPES[s.activation_type],
            "calibrate_method": METHODS[s.calibrate_method], "extra_options": extra}


def quantizer(src: str, dest: str, options: dict, cache: str) -> None:
    """onnxruntime's quantize_static with `options` (quantizer_options') and the ranges in `cache`, or quantize_dynamic
    for options without a quant_format: the one call in-process and in the bounded child, so both write the same
    bytes."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    o = {**options, "weight_type": getattr(QuantType, options["weight_type"])}
    if "quant_format" not in o:
        quantize_dynamic(src, dest, **o)
        return
    quantize_static(src, dest, None, **{**o, "quant_format": getattr(QuantFormat, o["quant_format"]),
                                        "activation_type": getattr(QuantType, o["activation_type"]),
                                        "calibrate_method": getattr(CalibrationMethod, o["calibrate_method"])},
                    calibration_cache_path=cache)


def quantizer_in_child(src: str, dest: str, options: str, cache: str) -> str:
    """The bounded child's entry point: onnxruntime's QDQ quantizer (1.32) grows as nodes squared, and only a child
    can be stopped at the step's time limit. For each tensor it quantizes it scans every node (onnx_model.py's
    replace_input_of_all_nodes) and the initializers (quant_utils.find_by_name, initializer_extend); for each
    Relu/Clip it rebuilds the input map (input_name_to_nodes: adjust_tensor_ranges, try_replacing_upstream_output).
    10,000 chained Relus took ~460 s, 1,000 Conv+Relu pairs 22-62 s. Its failure comes back as the text quantize()
    gives in-process."""
    try:
        quantizer(src, dest, json.loads(options, object_hook=_json_array), cache)
    except Exception as e:
        if disk_full(e):
            raise  # the parent raises it as the OSError it is
        return f"{type(e).__name__}: {first_line(e)}"
    return ""


def _array_json(value) -> dict:
    """A numpy array in a quantizer option (a tensor override's scale, zero point) as json: values and dtype."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": value.dtype.str}
    raise TypeError(f"{type(value).__name__} in a quantizer option")


def _json_array(d: dict):
    """_array_json's array back, the same values and dtype."""
    import numpy as np

    return np.array(d["ndarray"], d["dtype"]) if d.keys() == {"ndarray", "dtype"} else d


def calibrated_ops(op_types) -> list[str]:
    """The op types quantize_static calibrates and quantizes: those given, else every one its registries hold."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return list(op_types or ()) or list({*QLinearOpsRegistry, *QDQRegistry})


def minmax_ranges(src: str, op_types: Sequence[str] | None, feeds: Sequence, tmp: Path, progress=None,
                  seen: tuple[list[str], Callable] | None = None, hint: str = ""):
    """The ranges (onnxruntime's TensorsData) its MinMax calibrator gives quantize_static, fed in steps of `stride`
    samples: the same tensors (its own select_tensors_to_calibrate), the same ReduceMin/ReduceMax, NaN-ignoring over
    a step's samples (np.nanmin, as it does) and steps merged by Python's min and max (its merge_range). Built and
    run in time linear in the nodes (onnxruntime's augment_graph searches the node list for each tensor: 4,000
    Relus took 72 s), each run under the run limit (runtime.run); a step holds its samples' reduced values only.
    Its session, like onnxruntime's calibrator's, is not memory-capped: the capped arena is shared with the run's
    other sessions (runtime.memory_capped); a file from others' samples ran capped before (runtime.run_calibration).
    `seen`: (graph outputs, a function given their values at each run), for keep_narrow_outputs, whose pass over the
    calibration samples was a run of its own. The same runs give every graph output, which must be finite, as on
    validation (runtime.nonfinite_output; `hint`: its hint): a pass of its own over the samples cost
    MobileNetV2-style's export 13%. Every static calibration runs here first (histogram_ranges too): the one check
    of a float model's calibration outputs, but for a file from others' capped pass (pipeline._bounded_calibration)."""
    import warnings

    import numpy as np
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import MinMaxCalibrater, TensorsData

    from .runtime import nonfinite_output

    if not feeds:
        raise ValueError("no calibration samples")
    calibrator = MinMaxCalibrater(Path(src), calibrated_ops(op_types))  # the model as it reads it (shapes inferred)
    finals = [o.name for o in calibrator.model.graph.output]
    tensors, infos = calibrator.select_tensors_to_calibrate(calibrator.model)
    tensors -= masked_path(calibrator.model)[0]  # infinite ranges: their nodes stay float (plan)
    kept, see = seen or ([], None)
    checked = [*kept, *(n for n in finals if n not in kept)]
    path, outputs, at = _reduced(calibrator.model, tensors, infos, tmp, checked)
    del calibrator
    sess = _uncapped_session(path)
    step, lowest, highest = stride(len(feeds)), None, None
    for start in range(0, len(feeds), step):
        got = []
        for i, feed in enumerate(feeds[start:start + step]):
            values = _run_reduced(sess, [*outputs, *checked], feed, start + i == len(feeds) - 1, progress)
            nonfinite_output(checked, [values[len(outputs):]], "calibration sample", start + i, hint)
            got.append(values[:len(outputs) + len(kept)])  # a sample's graph outputs dropped once checked
        for values in got if see else ():
            see(values[len(outputs):])
        if not outputs:
            continue
        with warnings.catch_warnings():  # a tensor NaN in every sample of a step: NaN, as onnxruntime's
            warnings.simplefilter("ignore", RuntimeWarning)
            low = [np.nanmin([g[k] for g in got], axis=0) for k in range(0, len(outputs), 2)]
            high = [np.nanmax([g[k] for g in got], axis=0) for k in range(1, len(outputs), 2)]
        # merge_range's min(old, new): the new value only where it compares lower (a NaN kept is kept)
        lowest = low if lowest is None else [np.where(n < o, n, o) for o, n in zip(lowest, low)]
        highest = high if highest is None else [np.where(n > o, n, o) for o, n in zip(highest, high)]
    return TensorsData(CalibrationMethod.MinMax, {name: (lowest[g][i:i + 1], highest[g][i:i + 1])
                                                  for name, (g, i) in at.items()} if outputs else {})


def _reduced(model, tensors: set[str], infos: dict, tmp: Path, kept: Sequence[str] = ()
             ) -> tuple[Path, list[str], dict]:
    """This ModelProto (changed) with, after each tensor's producer, the ReduceMin/ReduceMax (keepdims) and
    Reshape to [-1] onnxruntime's augment_graph adds, joined by a Concat per element type into the graph's only
    outputs, [min, max] for each type; saved in `tmp`. Returns (its path, its outputs, where each tensor's value
    is: (the type's index, the position in its outputs)), the tensors in `tensors`' order."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    names = {t for n in graph.node for t in (*n.input, *n.output)} | {v.name for v in (*graph.input, *graph.output)}
    names |= {t.name for t in graph.initializer}
    base = "edgekit_range"  # made longer than any of the model's names that start with it
    prefix = base + "_" * max((len(name) - len(base) + 1 for name in names if name.startswith(base)), default=0)
    types = sorted({infos[t].type.tensor_type.elem_type for t in tensors})
    at, count = {}, dict.fromkeys(types, 0)
    for t in tensors:
        kind = infos[t].type.tensor_type.elem_type
        at[t], count[kind] = (types.index(kind), count[kind]), count[kind] + 1
    shape = f"{prefix}/shape"
    graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), shape))
    flat: dict[tuple, list[str]] = {(k, op): [""] * count[k] for k in types for op in ("ReduceMin", "ReduceMax")}

    def reduce(t: str) -> list:
        g, i = at[t]
        made = []
        for op in ("ReduceMin", "ReduceMax"):
            out = f"{prefix}/{op}{g}_{i}"
            made += [helper.make_node(op, [t], [out], name=out, keepdims=1),
                     helper.make_node("Reshape", [out, shape], [f"{out}/flat"], name=f"{out}/flat")]
            flat[types[g], op][i] = f"{out}/flat"
        return made

    order = [node for v in graph.input if v.name in at for node in reduce(v.name)]
    for n in graph.node:  # each tensor reduced as soon as it is made: it need not live to the end
        order += [n, *(node for t in n.output if t in at for node in reduce(t))]
    outputs = []
    kept_outputs = [o for o in graph.output if o.name in kept]  # given as they are, after the ranges
    del graph.output[:]
    for g, k in enumerate(types):
        for op in ("ReduceMin", "ReduceMax"):
            outputs.append(f"{prefix}/{op}{g}")
            order.append(helper.make_node("Concat", flat[k, op], [outputs[-1]], name=outputs[-1], axis=0))
            graph.output.append(helper.make_tensor_value_info(outputs[-1], k, [count[k]]))
    graph.output.extend(kept_outputs)
    del graph.node[:]
    graph.node.extend(order)
    path = tmp / "ranges.onnx"
    onnx.save(model, str(path))
    return path, outputs, at


def _uncapped_session(path: Path):
    """A session as onnxruntime's calibrator makes one (no graph optimisation: a fused node's rounding would
    change the tensors' values), with edgekit's threads and entries (denormals flushed: a range differs from its
    calibrator's only where a tensor's extreme is a denormal) and no memory cap. No memory pattern: its first
    run's planning grows faster than the nodes (10,000 Relus reduced: 3.6 s, 0.07 s without; later runs alike)."""
    import onnxruntime as ort

    from . import runner
    from .host import work_threads
    from .runtime import ort_log_level, ort_path

    opts = runner.options(work_threads(), None, ort_log_level())
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.enable_mem_pattern = False
    return ort.InferenceSession(ort_path(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _run_reduced(sess, outputs: list[str], feed: dict, last: bool, progress) -> list:
    """One sample's reduced values, under the run limit; the arena's memory given back after the `last`."""
    from .runtime import run

    got = run(sess, outputs, feed, copy=False, give_back=last)
    if progress:
        progress(1)
    return got


def histogram_ranges(src: str, op_types: list[str] | None, feeds: Sequence, s: QuantSettings, tmp: Path,
                     progress=None, hint: str = ""):
    """Entropy/Percentile ranges (onnxruntime's TensorsData) by onnxruntime's own calibrators, in two passes that hold
    one sample's intermediate tensors at most: each tensor's min and max (MinMax, reduced inside the graph), then the
    histograms, a sample at a time, with bins placed over that whole range from the start. Given all samples at once
    (its default), onnxruntime makes the same histograms; fed in steps, it kept the first step's bin width and added
    bins as later steps widened the range (a spiked later sample: millions of bins, a calibration without end).
    The first pass checks the float outputs are finite (minmax_ranges, `hint`): the second runs checked samples."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    ranges = minmax_ranges(src, op_types, feeds, tmp, hint=hint)
    calibrator = create_calibrator(Path(src), calibrated_ops(op_types), str(tmp / "histogram.onnx"),
                                   getattr(CalibrationMethod, METHODS[s.calibrate_method]),
                                   extra_options=histogram_options(s))
    calibrator.tensors_to_calibrate -= masked_path(calibrator.model)[0]  # infinite: no histogram holds them
    seed_bins(calibrator, ranges)
    reader = OrtReader(feeds, progress)
    for i in range(len(feeds)):
        reader.set_range(i, i + 1)
        calibrator.collect_data(reader)
    return calibrator.compute_data()


def histogram_options(s: QuantSettings) -> dict:
    """create_calibrator's extra_options for Entropy/Percentile (quantize_static passes no bin counts on)."""
    if s.calibrate_method == "percentile":
        return {"percentile": s.percentile}  # onnxruntime's 2048 bins
    return {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}


def seed_bins(calibrator, ranges) -> None:
    """The one use of onnxruntime's internals (tests/test_calib.py checks it against onnxruntime's own results):
    a HistogramCalibrater makes its HistogramCollector only when it has none, and the collector keeps the bins of a
    tensor's first collect() while later values stay within them. A first collect() of each tensor's min and max
    (and 0 between them, the low end of Percentile's |x| histogram) places the bins; their counts are then zeroed."""
    import numpy as np
    from onnxruntime.quantization.calibrate import HistogramCollector

    c = calibrator
    c.collector = HistogramCollector(c.method, c.symmetric, c.num_bins, c.num_quantized_bins, c.percentile, c.scenario)
    seeds = {}
    for name, data in ranges.items():
        lo, hi = (np.asarray(v).ravel() for v in data.range_value)
        seeds[name] = np.concatenate([lo, np.zeros_like(lo) if lo[0] < 0 < hi[0] else lo[:0], hi])
    c.collector.collect(seeds)
    for histogram in c.collector.histogram_dict.values():
        histogram[0][:] = 0
