"""Which validation samples an AVX2 CPU's int8 kernels are likeliest to compute differently: the golden ones.

onnxruntime's x86 u8s8 kernels without VNNI (MLAS: QgemmU8S8KernelAvx2, QgemvU8S8KernelAvx2, ConvSymKernelAvx2)
multiply the raw uint8 activations (their zero point is taken off later, through row sums or the bias) by the int8
weights with VPMADDUBSW, which adds each two adjacent products along the reduction axis into int16 with saturation:
K elements (2j, 2j+1) of a GEMM row, and for a convolution, whose K runs kernel position by position with the input
channels innermost (NHWC indirection or im2col), two neighbouring input channels. A VNNI CPU's sums are exact. So a
sample's risk is measured, not guessed: each u8s8 node's quantized inputs (from the int8 model itself) times its
weights, paired as MLAS pairs them, clipped to int16 as VPMADDUBSW does, and the node's requantized outputs that the
clipping changes (given exact inputs) counted; the largest |pair sum| breaks ties. On the digits desktop-x86 package
(full-range weights) the 8 samples of most changed outputs held 7 of the 30 validation samples (of 600) whose
outputs differ on emulated AVX2 kernels, and every one of the 30 was among the 86 with any changed output; its
first 8 samples held none, and the loudest inputs 0 or 1.
"""
from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INT16 = (-32768, 32767)
U8_MAX = 255
# pair sums of all the samples scored, a bound on the time their int8 rerun and rows take (digits' 600 samples:
# 110M, 0.22 s, 0.54 s summing every pair; MobileNetV2-style 224x224: 142M a sample, none scored). Where it scores
# fewer than MIN_SCORED samples per golden one there is hardly a choice: none are, decided from shapes (0.01 s).
MAX_PAIRS = 120_000_000
MIN_SCORED = 2
CHUNK = 4_000_000  # pair sums held at once


@dataclass(frozen=True)
class Node:
    """One u8s8 Conv/Gemm/MatMul of a QDQ model, as MLAS's kernels see it."""
    name: str
    activations: str  # the uint8 tensor its input DequantizeLinear reads
    weights: np.ndarray  # int8, (O, K) in MLAS's K order (a Conv's: kernel position, then input channel)
    zero_point: int  # the activations'
    multiplier: np.ndarray | None  # per output channel: activation scale x weight scale / output scale (None: its
    # output is not quantized, and each accumulator saturation changes counts)
    bias: np.ndarray  # per output channel, in accumulator units
    out_zero_point: int
    conv: dict | None  # kernel shape, pads, strides of a convolution

    def pairs_per_row(self) -> int:
        return self.weights.shape[0] * ((self.weights.shape[1] + 1) // 2)

    @functools.cached_property
    def risky(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(its output channels, pairs, and the pairs' two weights) of the pairs that can pass int16's limit, and
        each output channel's weight sum: of the weights alone, found once a node (each sample found them again)."""
        w = self.weights
        if w.shape[1] % 2:
            w = np.pad(w, ((0, 0), (0, 1)))
        w0, w1 = w[:, 0::2], w[:, 1::2]
        outs, pairs = np.nonzero((w0 * w1 >= 0) & (U8_MAX * np.abs(w0 + w1) > INT16[1]))  # sorted by channel
        return outs, pairs, w0[outs, pairs], w1[outs, pairs], self.weights.sum(1, dtype=np.int64)


def u8s8_nodes(model) -> list[Node]:
    """The nodes whose sums VPMADDUBSW makes: a float Conv (group 1), Gemm or MatMul between a DequantizeLinear of
    uint8 activations and one of int8 weights (zero point 0, as edgekit's symmetric weights are)."""
    from onnx import helper, numpy_helper

    from .onnx_export import consumers

    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    readers = consumers(model.graph)
    found = []
    for n in model.graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul") or len(n.input) < 2:
            continue
        dx, dw = producer.get(n.input[0]), producer.get(n.input[1])
        if not (dx and dw and dx.op_type == dw.op_type == "DequantizeLinear" and len(dx.input) == 3) \
                or dx.input[0] in init:
            continue
        w, zx, sx = init.get(dw.input[0]), _scalar(init, dx.input[2]), _scalar(init, dx.input[1])
        zw, sw = init.get(dw.input[2]) if len(dw.input) == 3 else None, init.get(dw.input[1])
        if w is None or w.dtype != np.int8 or zx is None or init[dx.input[2]].dtype != np.uint8 or sx is None \
                or (zw is not None and zw.any()) or sw is None:  # per-tensor activations, symmetric weights
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        pad_mode = attrs.get("auto_pad", b"NOTSET")
        if attrs.get("group", 1) != 1 or attrs.get("transA", 0) or pad_mode not in (b"NOTSET", b"VALID") \
                or w.ndim != (4 if n.op_type == "Conv" else 2) or not _per_output_channel(n, dw, w.ndim, sw, attrs):
            continue
        weights, conv = _in_k_order(n.op_type, w, attrs)
        out = _output_quantizer(n, readers)
        # Gemm: Y = alpha x (the sums' scale) + beta x C
        unit = attrs.get("alpha", 1.0) * sx * np.broadcast_to(sw.astype(np.float64).ravel(), weights.shape[:1])
        sy, zy = (_scalar(init, out.input[1]), _scalar(init, out.input[2])) if out is not None \
            and len(out.input) == 3 else (None, None)
        found.append(Node(n.name, dx.input[0], weights, int(zx), unit / sy if sy and zy is not None else None,
                          attrs.get("beta", 1.0) * _bias(n, producer, init, unit), int(zy or 0), conv))
    return found


def _scalar(init: dict, name: str) -> float | None:
    """An initializer of one value (None: another tensor, or several values)."""
    value = init.get(name)
    return float(value.ravel()[0]) if value is not None and value.size == 1 else None


def _per_output_channel(node, dq, rank: int, scale: np.ndarray, attrs: dict) -> bool:
    """Whether the weights' scale is one, or one per output channel (its DequantizeLinear's axis, default 1)."""
    if scale.size == 1:
        return True
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    return axis % rank == (0 if node.op_type == "Conv" or attrs.get("transB", 0) else 1)


def _in_k_order(op: str, w: np.ndarray, attrs: dict) -> tuple[np.ndarray, dict | None]:
    """Weights as (O, K) in the order MLAS packs K, and a Conv's geometry."""
    if op == "Gemm":
        return (w if attrs.get("transB", 0) else w.T).astype(np.int32), None
    if op == "MatMul":
        return w.reshape(-1, w.shape[-1]).T.astype(np.int32), None
    o, c, kh, kw = w.shape
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    return w.transpose(0, 2, 3, 1).reshape(o, kh * kw * c).astype(np.int32), {
        "kernel": (kh, kw), "pads": pads, "strides": list(attrs.get("strides", [1, 1])),
        "dilations": list(attrs.get("dilations", [1, 1]))}


def _output_quantizer(node, consumers: dict):
    """The QuantizeLinear its output reaches through a fused activation (Relu), if one does."""
    name = node.output[0]
    for _ in range(2):
        nxt = consumers.get(name, [])
        if len(nxt) != 1:
            return None
        if nxt[0].op_type == "QuantizeLinear":
            return nxt[0]
        if nxt[0].op_type != "Relu":
            return None
        name = nxt[0].output[0]
    return None


def _bias(node, producer: dict, init: dict, unit: np.ndarray) -> np.ndarray:
    """The bias per output channel in accumulator units (activation scale x weight scale)."""
    if len(node.input) < 3 or not node.input[2]:
        return np.zeros_like(unit)
    db = producer.get(node.input[2])
    if db is not None and db.op_type == "DequantizeLinear" and db.input[0] in init and db.input[1] in init:
        value = init[db.input[0]].astype(np.float64) * init[db.input[1]].astype(np.float64)
    else:
        value = init.get(node.input[2], np.zeros_like(unit)).astype(np.float64)
    return np.broadcast_to(value.ravel(), unit.shape) / unit if value.size in (1, unit.size) else np.zeros_like(unit)


def rows_of(node: Node, x: np.ndarray) -> np.ndarray:
    """One sample's activations as GEMM rows (L, K) in MLAS's K order, a Conv's padded with the zero point."""
    if node.conv is None:
        return x.reshape(-1, node.weights.shape[1]).astype(np.int32)
    (kh, kw), p, (sh, sw), (dh, dw) = node.conv["kernel"], node.conv["pads"], node.conv["strides"], \
        node.conv["dilations"]
    x = np.pad(x.reshape(-1, *x.shape[-3:]), ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])),
               constant_values=node.zero_point)
    oh, ow = _out_size(node, x.shape[2:])
    taps = [x[:, :, i * dh:i * dh + sh * oh:sh, j * dw:j * dw + sw * ow:sw] for i in range(kh) for j in range(kw)]
    # (N, taps, C, oh, ow) → (N·oh·ow, taps·C): input channels innermost, as MLAS's NHWC kernels read them
    return np.stack(taps, 1).transpose(0, 3, 4, 1, 2).reshape(-1, kh * kw * x.shape[1]).astype(np.int32)


def _out_size(node: Node, padded: tuple) -> tuple[int, int]:
    """A convolution's output height and width over its padded input's."""
    (kh, kw), (sh, sw), (dh, dw) = node.conv["kernel"], node.conv["strides"], node.conv["dilations"]
    return (padded[0] - dh * (kh - 1) - 1) // sh + 1, (padded[1] - dw * (kw - 1) - 1) // sw + 1


def row_count(node: Node, shape: tuple) -> int:
    """How many GEMM rows rows_of makes of activations of this shape."""
    if node.conv is None:
        return int(np.prod(shape, dtype=np.int64)) // node.weights.shape[1]
    p = node.conv["pads"]
    oh, ow = _out_size(node, (shape[-2] + p[0] + p[2], shape[-1] + p[1] + p[3]))
    return int(np.prod(shape[:-3], dtype=np.int64)) * max(0, oh) * max(0, ow)


def changed_outputs(node: Node, rows: np.ndarray) -> tuple[int, int]:
    """(how many of these rows' requantized outputs VPMADDUBSW's int16 saturation changes, the largest |pair sum| of
    the pairs that can pass int16's limit, else 0). Only those are summed: u8 inputs, so a pair passes it only where
    its weights share a sign and 255 |w0 + w1| > 32767 (a few in a thousand of a trained layer's). Of their sums only
    the few past int16 are followed further (the loss summed per row and channel over every pair took 40% of the
    score on a 32x32 CNN, and most rows lose nothing)."""
    outs, pairs, w0, w1, weight_sums = node.risky
    if not len(outs):
        return 0, 0
    w, (channels, k) = node.weights, node.weights.shape
    if k % 2:  # an odd K's last pair: its input times no weight
        rows = np.pad(rows, ((0, 0), (0, 1)))
    changed, peak = 0, 0
    step = max(1, CHUNK // len(outs))
    for at in range(0, len(rows), step):
        sums = rows[at:at + step, 2 * pairs] * w0 + rows[at:at + step, 2 * pairs + 1] * w1
        size = np.abs(sums)
        peak = max(peak, int(size.max(initial=0)))
        if peak <= INT16[1]:
            continue
        r, p = np.nonzero(size > INT16[1])
        if not len(r):
            continue
        over = sums[r, p]
        # the loss per (row, output channel): a channel's pairs may lose in both directions, and cancel
        cells, which = np.unique(r.astype(np.int64) * channels + outs[p], return_inverse=True)
        lost = np.zeros(len(cells), np.int64)
        np.add.at(lost, which, np.clip(over, *INT16).astype(np.int64) - over)
        cells, lost = cells[lost != 0], lost[lost != 0]
        if len(cells):
            r, c = np.divmod(cells, channels)
            exact = np.einsum("ik,ik->i", rows[at + r, :k].astype(np.int64), w[c].astype(np.int64))
            exact -= node.zero_point * weight_sums[c]  # the zero point, taken off after the sums
            changed += int((_requantized(node, exact, c) != _requantized(node, exact + lost, c)).sum())
    return changed, peak


def _requantized(node: Node, acc: np.ndarray, channels=slice(None)) -> np.ndarray:
    """Accumulators of these output channels as the node's quantized outputs (as they are: its output not quantized)."""
    if node.multiplier is None:
        return acc
    return np.clip(np.rint((acc + node.bias[channels]) * node.multiplier[channels]) + node.out_zero_point, 0,
                   U8_MAX)


@dataclass(frozen=True)
class Risk:
    """One sample's saturation risk on AVX2 kernels."""
    changed: int  # requantized outputs of its u8s8 nodes that int16 saturation changes, each node given exact inputs
    peak: int  # the largest |u8 x s8 + u8 x s8| pair sum (VPMADDUBSW saturates past 32767)

    @property
    def key(self) -> tuple[int, int]:
        return self.changed, self.peak


def risks(int8: Path, feeds: list[dict], count: int = 1) -> list[Risk]:
    """The first feeds' saturation risks, as many as MAX_PAIRS' budget scores (their own shapes counted: a longer
    sample costs more); none where the first sample's cost leaves fewer than MIN_SCORED x `count` (the golden
    samples), decided from shapes before any sample runs."""
    import onnx

    model = onnx.load(str(int8))
    nodes = u8s8_nodes(model)
    if not nodes or not feeds:
        return []
    if min(len(feeds), MAX_PAIRS // max(1, _cost(model, nodes, feeds[0]))) < MIN_SCORED * count:
        return []  # hardly a choice: the golden samples stay the first ones
    found, spent = [], 0
    for values in _activations(model, nodes, feeds):
        rows = [rows_of(n, values[n.activations]) for n in nodes]
        spent += sum(len(r) * n.pairs_per_row() for n, r in zip(nodes, rows))
        if spent > MAX_PAIRS:
            break
        per = [changed_outputs(n, r) for n, r in zip(nodes, rows)]
        found.append(Risk(sum(c for c, _ in per), max(p for _, p in per)))
    return found


def _cost(model, nodes: list[Node], feed: dict) -> int:
    """One sample's pair sums, from the shapes ONNX infers given its inputs' (run where it leaves one unknown)."""
    shapes = _inferred_shapes(model, feed)
    if any(n.activations not in shapes for n in nodes):
        shapes = {k: v.shape for k, v in next(_activations(model, nodes, [feed])).items()}
    return sum(row_count(n, shapes[n.activations]) * n.pairs_per_row() for n in nodes)


def _inferred_shapes(model, feed: dict) -> dict[str, tuple]:
    """{tensor: its shape} for those whose every dimension ONNX's shape inference knows, given `feed`'s shapes."""
    import onnx

    fixed = _copy(model)
    for t in fixed.graph.initializer:  # their dims are all inference reads of weights: less to copy and serialize
        if np.prod(t.dims) > 64:
            for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
                t.ClearField(field)
    for i in fixed.graph.input:
        if i.name in feed and i.type.HasField("tensor_type"):
            i.type.tensor_type.shape.Clear()
            i.type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=d)
                                                for d in np.shape(feed[i.name]))
    graph = onnx.shape_inference.infer_shapes(fixed).graph
    dims = {v.name: v.type.tensor_type.shape.dim for v in [*graph.input, *graph.value_info, *graph.output]
            if v.type.tensor_type.HasField("shape")}
    return {name: tuple(d.dim_value for d in ds) for name, ds in dims.items()
            if all(d.HasField("dim_value") for d in ds)}


def _activations(model, nodes: list[Node], feeds: list[dict]):
    """Each feed's quantized (uint8) node inputs, as the int8 model computes them with exact kernels (a graph
    input's: the feed's own), one feed at a time."""
    from onnx import TensorProto, helper

    from .runtime import int8_session, run_onnx

    given = {i.name for i in model.graph.input}
    wanted = [t for t in dict.fromkeys(n.activations for n in nodes) if t not in given]
    exposed = _copy(model)
    outputs = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.UINT8, None) for t in wanted
                                if t not in outputs)
    with tempfile.TemporaryDirectory(prefix="edgekit-saturation-") as tmp:
        path = Path(tmp) / "exposed.onnx"
        path.write_bytes(exposed.SerializeToString())
        sess = int8_session(path)[0]
    names = [o.name for o in sess.get_outputs()]
    for feed in feeds:
        yield {**feed, **dict(zip(names, run_onnx(sess, [feed], give_back=False)[0]))}


def _copy(model):
    """A copy of a ModelProto to edit."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def riskiest(scored: list[Risk], count: int) -> list[int]:
    """The indices of up to `count` samples with changed outputs, most changed first (then the largest pair sum,
    then the earliest)."""
    ranked = sorted((i for i, r in enumerate(scored) if r.changed), key=lambda i: (-scored[i].changed,
                                                                                  -scored[i].peak, i))
    return ranked[:count]


WHY = ("full-range int8 weights (reduce_range off): an x86 CPU without VNNI (AVX2) adds u8 x s8 products in pairs "
       "into int16 (VPMADDUBSW), which saturates; the golden samples are the verdict's samples where that changes the "
       "most requantized outputs, so `check --emulate x86_64` runs them")


def golden_first(int8: Path, feeds: list[dict], count: int, numbers: list[int]) -> tuple[list[dict], dict | None]:
    """`feeds` (the samples the verdict is of) with up to `count` of the riskiest on AVX2 kernels moved first, the
    others in their order: golden files keep the first ones, still a subset of the verdict's samples (check bounds
    its figures by theirs). `numbers`: each feed's sample number in the validation data. The manifest's record of
    the choice, or None where no sample's outputs change."""
    scored = risks(int8, feeds, count)
    picked = riskiest(scored, count)
    if not picked:
        return feeds, None
    moved = set(picked)
    rest = [f for i, f in enumerate(feeds) if i not in moved]
    record = {"why": WHY, "scored": len(scored), "at_risk": sum(r.changed > 0 for r in scored),
              "samples": [{"sample": numbers[i], "changed_outputs": scored[i].changed,
                           "peak_pair_sum": scored[i].peak,
                           "why": f"int16 saturation changes {scored[i].changed} of its u8s8 nodes' requantized "
                                  f"outputs (largest pair sum {scored[i].peak} > {INT16[1]})"} for i in picked]}
    return [feeds[i] for i in picked] + rest, record
