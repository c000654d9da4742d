"""Per-tensor quantization error: which layer breaks parity.

Uses onnxruntime's `qdq_loss_debug`: both models are re-saved with every intermediate tensor as an
output, run on validation inputs, and each quantized activation is compared (SQNR, dB) in two ways:
`local` (the tensor before vs after its own QuantizeLinear/DequantizeLinear pair: the error this
tensor's quantization adds) and `accumulated` (the float model's tensor vs the int8 model's: all
error up to that point). Sorted worst local first: the top rows are the tensors to keep in float.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

from .errors import StageError, first_line


def tensor_errors(fp32: Path, int8: Path, feeds: list[dict], limit: int = 8) -> list[dict]:
    """[{tensor, local_sqnr_db, accumulated_sqnr_db}], worst local SQNR first."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    feeds = feeds[:limit]
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            aug_f, aug_q = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
            dbg.modify_model_output_intermediate_tensors(str(fp32), str(aug_f))
            dbg.modify_model_output_intermediate_tensors(str(int8), str(aug_q))
            float_acts = dbg.collect_activations(str(aug_f), feeds)
            qdq_acts = dbg.collect_activations(str(aug_q), feeds)
        matched = dbg.create_activation_matching(qdq_acts, float_acts)
        with np.errstate(over="ignore"):  # a quantized mask path (values near float max) overflows its norms
            errors = dbg.compute_activation_error(matched)
    except Exception as e:
        raise StageError("per-layer error analysis", f"{type(e).__name__}: {first_line(e, 200)}") from e
    rows = [{"tensor": tensor, "local_sqnr_db": _finite(err.get("qdq_err")),
             "accumulated_sqnr_db": _finite(err.get("xmodel_err"))} for tensor, err in errors.items()]
    return sorted(rows, key=lambda r: (r["local_sqnr_db"] if r["local_sqnr_db"] is not None else 1e9))


def _finite(x) -> float | None:
    """SQNR (dB) within ±200 (+inf: an exact tensor at 200; NaN at -200), or None when not measured."""
    return None if x is None else round(float(np.clip(np.nan_to_num(float(np.asarray(x)), nan=-200.0), -200, 200)), 3)
