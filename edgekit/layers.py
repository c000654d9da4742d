"""Per-tensor quantization error: which layer breaks parity.

Both models are re-saved with the activation tensors onnxruntime's `qdq_loss_debug` pairs up (each one before
and after its QDQ pair) as outputs, run on validation inputs, and each is compared (SQNR, dB) in two ways:
`local` (the tensor before vs after its own QuantizeLinear/DequantizeLinear pair: the error this
tensor's quantization adds) and `accumulated` (the float model's tensor vs the int8 model's: all
error up to that point). Sorted worst local first: the top rows are the tensors to keep in float.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import progress, runner, runtime
from .errors import StageError, first_line

CHUNK = 1 << 14  # elements per float32 partial sum of squares


def tensor_errors(fp32, int8: Path, feeds: Sequence[dict], limit: int = 8) -> list[dict]:
    """[{tensor, local_sqnr_db, accumulated_sqnr_db, float_energy_db}], worst local SQNR first. One sample's
    intermediate tensors are held at a time (every tensor of a 224x224 MobileNetV2 is ~100 MB a sample): the SQNRs
    are summed signal and noise energies over the samples, as onnxruntime's over all samples at once. `fp32`: path
    or ModelProto (left unchanged). A tensor whose length follows the values (NonZero's) and differs between the two
    models on a sample is left out of accumulated_sqnr_db there (it is no element-wise pair), and its row says on
    how many samples (length_mismatches): the analysis is a diagnostic, and failed the whole export on it."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    energy: dict[str, np.ndarray] = {}  # tensor -> [signal, local noise, float signal, accumulated noise]
    in_float: set[str] = set()  # tensors the float model also has (of the same shape on some sample)
    moved: dict[str, int] = {}  # tensor -> samples where the float model's has another shape (NonZero's length)
    try:
        with progress.quiet():
            int8_run, pairs = _intermediates(int8, None)
            float_run, _ = _intermediates(fp32, set(pairs))
            for feed in feeds[:limit]:
                for tensor, m in dbg.create_activation_matching(int8_run(feed), float_run(feed)).items():
                    pre, post = m["pre_qdq"][0], m["post_qdq"][0]
                    ref = m["float"][0] if "float" in m else None
                    if ref is not None and ref.shape != post.shape:  # a length following the values: NonZero's
                        moved[tensor] = moved.get(tensor, 0) + 1
                        ref = None
                    in_float |= {tensor} if ref is not None else set()
                    energy[tensor] = energy.get(tensor, 0) + np.array(
                        [_energy(pre), _energy(pre - post), *((_energy(ref), _energy(ref - post)) if ref is not None
                                                              else (0.0, 0.0))])
    except StageError as e:  # a run past the limit: said once, not as "StageError: onnxruntime run failed: ..."
        raise StageError("per-layer error analysis", e.message) from None
    except Exception as e:  # more memory than the machine gives: the model's fault (exit 3)
        raise runtime.run_error(f"{type(e).__name__}: {first_line(e)}", "per-layer error analysis") from e
    rows = [{"tensor": tensor, "local_sqnr_db": _finite(_sqnr(e[0], e[1])),
             "accumulated_sqnr_db": _finite(_sqnr(e[2], e[3])) if tensor in in_float else None,
             "float_energy_db": _energy_db(e[2]) if tensor in in_float else None,
             **({"length_mismatches": moved[tensor]} if tensor in moved else {})}
            for tensor, e in energy.items()]
    return sorted(rows, key=lambda r: (r["local_sqnr_db"] if r["local_sqnr_db"] is not None else 1e9, r["tensor"]))


def _intermediates(model, keep: set[str] | None):
    """(a function of one feed returning {tensor: [value]}, the pairs onnxruntime's create_activation_matching
    makes of the model's tensors {activation: (pre-QDQ tensor, post-QDQ tensor)}), from one unoptimised session
    made once over `model` with those tensors (or the ones in `keep`) as outputs. Only these: Q outputs, the
    weights' DequantizeLinear and the rest would be copied out of every run for nothing. The session takes the
    model's bytes: writing ResNet18-style's 47 MB to a file first cost 0.13 s here."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import qdq_loss_debug as dbg

    from .onnx_export import parsed

    proto = parsed(model)
    if proto is model:  # the caller's
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    graph = proto.graph
    _unpadded(graph)
    inputs = {i.name for i in graph.input}  # taken from the feed
    tensors = inputs | {o for n in graph.node for o in n.output if o}
    pairs = {name: (m["pre_qdq"][0], m["post_qdq"][0])
             for name, m in dbg.create_activation_matching({t: [t] for t in tensors}).items()}
    wanted = tensors & keep if keep is not None else {t for pair in pairs.values() for t in pair}
    names = sorted(wanted - inputs)
    graph.output.extend(onnx.ValueInfoProto(name=t) for t in set(names) - {o.name for o in graph.output})
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # not memory-capped: a run here
    # keeps every tensor at once, and each op already ran within the cap in the model's own runs
    for entry in runner.CPU_ENTRIES.items():  # flushing denormals as the export's runs of the same errors do
        options.add_session_config_entry(*entry)
    sess = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def run(feed: dict) -> dict[str, list]:
        outputs = runtime.run(sess, names, feed, copy=False, give_back=False)  # an uncapped session's arena
        return {**{n: [feed[n]] for n in wanted & inputs}, **{n: [v] for n, v in zip(names, outputs)}}

    return run, pairs


def _unpadded(graph) -> None:
    """quantization.pad_convs' stem reads Q(x) → Pad → DequantizeLinear, and x's own DequantizeLinear is gone: the
    debugger, pairing tensors by name, had no post-QDQ x and dropped x's row (a 3-channel input padded to 4). A
    Slice of the padded one back to x's channels, named as x's DequantizeLinear output was, brings the row back."""
    from onnx import helper, numpy_helper
    from onnxruntime.quantization.quant_utils import DEQUANT_OUTPUT_SUFFIX

    producer = {o: n for n in graph.node for o in n.output}
    consts = {t.name: t for t in graph.initializer}
    names = set(producer) | {i.name for i in graph.input}
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        pad = producer.get(dq.input[0])
        q = producer.get(pad.input[0]) if pad is not None and pad.op_type == "Pad" else None
        if q is None or q.op_type != "QuantizeLinear" or len(pad.input) not in (2, 3) or pad.input[1] not in consts \
                or (post := q.input[0] + DEQUANT_OUTPUT_SUFFIX) in names:
            continue
        pads = numpy_helper.to_array(consts[pad.input[1]]).tolist()
        rank = len(pads) // 2
        if min(pads) < 0:
            continue
        axes = [a for a in range(rank) if pads[a] or pads[rank + a]]
        bounds = {"starts": [pads[a] for a in axes], "ends": [-pads[rank + a] or np.iinfo(np.int64).max for a in axes],
                  "axes": axes}
        graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), f"{post}/{k}")
                                 for k, v in bounds.items())
        graph.node.append(helper.make_node("Slice", [dq.output[0], *(f"{post}/{k}" for k in bounds)], [post],
                                           name=f"{post}/Slice"))
        names.add(post)


def _energy(x: np.ndarray) -> float:
    """Sum of squares: float32 dot products over chunks, added in float64 (one float32 sum of a million squares
    loses digits; converting every tensor to float64 first took a third of the analysis)."""
    x = x.ravel() if x.dtype == np.float32 else x.ravel().astype(np.float64)
    return sum(float(np.dot(x[i:i + CHUNK], x[i:i + CHUNK])) for i in range(0, x.size, CHUNK))


def _sqnr(signal: float, noise: float) -> float:
    """dB from summed squares, with onnxruntime's floor (float eps on both norms)."""
    eps = np.finfo(float).eps
    with np.errstate(over="ignore", invalid="ignore"):
        return 20 * np.log10(max(np.sqrt(signal), eps) / max(np.sqrt(noise), eps))


def _energy_db(signal: float) -> float | None:
    """The float tensor's summed squares in dB: what weighs its error against another's where the two are added or
    concatenated (tune.node_sensitivity), as a figure JSON holds (no inf); None for an all-zero or unbounded one."""
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10 * np.log10(float(signal))
    return round(float(db), 3) if np.isfinite(db) else None


def _finite(x) -> float | None:
    """SQNR (dB) within ±200 (+inf: an exact tensor at 200; NaN at -200), or None when not measured."""
    return None if x is None else round(float(np.clip(np.nan_to_num(float(np.asarray(x)), nan=-200.0), -200, 200)), 3)
