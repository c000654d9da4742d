"""Output parity between a reference and a candidate model: cosine, SQNR, abs errors, top-1, accuracy."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class OutputParity:
    output: str
    cosine: float  # mean over samples of per-sample cosine similarity
    cosine_min: float
    sqnr_db: float
    max_abs: float
    mean_abs: float
    top1_agreement: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    # scaled first: outputs near float max (a quantized mask path) would overflow the dot products
    a, b = a / max(float(np.max(np.abs(a), initial=0.0)), 1e-300), b / max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def compare(names: list[str], reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> list[OutputParity]:
    """Per output, sample by sample (samples may differ in shape, e.g. sequence length).

    Cosine is per sample (the whole output of one feed); when a sample holds fewer than two numbers
    (a scalar score) a per-sample cosine is always ±1, so one cosine over all samples is used instead.
    Top-1 agreement applies to 2-D score outputs (rows × classes).
    """
    from .errors import InputError

    results = []
    for k, name in enumerate(names):
        ref = [np.asarray(r[k], dtype=np.float64) for r in reference]
        cand = [np.asarray(c[k], dtype=np.float64) for c in candidate]
        if any(a.shape != b.shape for a, b in zip(ref, cand)):
            raise InputError(f"output {name!r}: reference and candidate shapes differ")
        if min(a.size for a in ref) >= 2:
            cos = [_cosine(a.ravel(), b.ravel()) for a, b in zip(ref, cand)]
        else:
            cos = [_cosine(np.concatenate([a.ravel() for a in ref]), np.concatenate([b.ravel() for b in cand]))]
        noise = sum(float(np.sum((a - b) ** 2)) for a, b in zip(ref, cand))
        signal = sum(float(np.sum(a ** 2)) for a in ref)
        # capped at ±200 dB so a bit-exact match stays a finite, JSON-safe number
        sqnr = 200.0 if noise == 0 else (max(-200.0, min(200.0, 10 * math.log10(signal / noise)))
                                         if signal > 0 else -200.0)
        top1 = None
        if ref[0].ndim == 2 and ref[0].shape[1] > 1:
            top1 = float(np.mean(np.concatenate([a.argmax(1) == b.argmax(1) for a, b in zip(ref, cand)])))
        results.append(OutputParity(name, float(np.mean(cos)), float(np.min(cos)), round(sqnr, 3),
                                    max(float(np.max(np.abs(a - b))) for a, b in zip(ref, cand)),
                                    sum(float(np.sum(np.abs(a - b))) for a, b in zip(ref, cand)) /
                                    sum(a.size for a in ref), top1))
    return results


def accuracy(outputs: list[list[np.ndarray]], labels: np.ndarray) -> float:
    """Top-1 accuracy in percent of the first output: one label per output row."""
    from .errors import InputError

    preds = np.concatenate([o[0].reshape(o[0].shape[0], -1).argmax(axis=1) if o[0].ndim > 1
                            else o[0].reshape(1, -1).argmax(axis=1) for o in outputs])
    flat = np.asarray(labels).reshape(-1)
    if flat.size != preds.size:
        raise InputError(f"{flat.size} labels for {preds.size} predicted rows: give one label per row "
                         "(labels of shape (samples, rows) when a sample holds several rows)")
    return float(np.mean(preds == flat.astype(np.int64)) * 100.0)


def gate(gates: list, name: str, value, op: str, limit) -> None:
    passed = value is not None and (value >= limit if op == ">=" else value <= limit)
    gates.append({"name": name, "value": value, "op": op, "limit": limit, "passed": bool(passed)})


def quantization_gates(outputs: list[dict], accuracy: dict | None, spec, classifier: bool) -> list[dict]:
    """The target's fp32-vs-int8 thresholds (a ParitySpec) applied to per-output parity dicts."""
    gates: list[dict] = []
    gate(gates, "quant_cosine", min(o["cosine"] for o in outputs), ">=", spec.quant_cosine_min)
    gate(gates, "quant_sqnr_db", min(o["sqnr_db"] for o in outputs), ">=", spec.quant_sqnr_min_db)
    top1 = [o["top1_agreement"] for o in outputs if "top1_agreement" in o]
    if classifier and top1:
        gate(gates, "top1_agreement", min(top1), ">=", spec.top1_agreement_min)
    if accuracy:
        gate(gates, "accuracy_drop", accuracy["drop"], "<=", spec.accuracy_drop_max)
    return gates
