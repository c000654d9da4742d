"""Output parity between a reference and a candidate model: cosine, SQNR, abs errors, top-1, accuracy."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


NEAR_ZERO = 1e-6  # a reference output whose peak |value| is below this carries no signal to compare


@dataclass(frozen=True)
class OutputParity:
    output: str
    cosine: float | None  # mean over samples of per-sample cosine similarity; None: reference ~0
    cosine_min: float | None
    sqnr_db: float | None
    max_abs: float
    mean_abs: float
    top1_agreement: float | None = None  # classifiers only
    reference_peak: float = 0.0  # max |reference|: below NEAR_ZERO cosine and SQNR say nothing

    @property
    def near_zero(self) -> bool:
        return self.reference_peak < NEAR_ZERO

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if v is not None or k in ("cosine", "cosine_min", "sqnr_db")}
        if self.near_zero:
            d["reference_near_zero"] = True
        return d


def worst(outputs: list[dict], key: str, fn=min):
    """The worst value of a metric over outputs, skipping outputs where it is undefined (None if all are)."""
    values = [o[key] for o in outputs if o.get(key) is not None]
    return fn(values) if values else None


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    # scaled first: outputs near float max (a quantized mask path) would overflow the dot products
    a, b = a / max(float(np.max(np.abs(a), initial=0.0)), 1e-300), b / max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def compare(names: list[str], reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]],
            classifier: bool = False) -> list[OutputParity]:
    """Per output, sample by sample (samples may differ in shape, e.g. sequence length).

    Cosine is per sample (the whole output of one feed); when a sample holds fewer than two numbers
    (a scalar score) a per-sample cosine is always ±1, so one cosine over all samples is used instead.
    Top-1 agreement only for a classifier's 2-D score outputs (rows × classes): on an embedding it
    would be a meaningless number. A reference that is ~0 gets no cosine or SQNR, it is flagged.
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
        peak = max(float(np.max(np.abs(a), initial=0.0)) for a in ref)
        scale = peak or 1.0  # no overflow near float max
        noise = sum(float(np.sum(((a - b) / scale) ** 2)) for a, b in zip(ref, cand))
        signal = sum(float(np.sum((a / scale) ** 2)) for a in ref)
        # capped at ±200 dB so a bit-exact match stays a finite, JSON-safe number
        sqnr = 200.0 if noise == 0 else (max(-200.0, min(200.0, 10 * math.log10(signal / noise)))
                                         if signal > 0 else -200.0)
        top1 = None
        if classifier and ref[0].ndim == 2 and ref[0].shape[1] > 1:
            top1 = float(np.mean(np.concatenate([a.argmax(1) == b.argmax(1) for a, b in zip(ref, cand)])))
        signal_ok = peak >= NEAR_ZERO
        results.append(OutputParity(name, float(np.mean(cos)) if signal_ok else None,
                                    float(np.min(cos)) if signal_ok else None, round(sqnr, 3) if signal_ok else None,
                                    max(float(np.max(np.abs(a - b))) for a, b in zip(ref, cand)),
                                    sum(float(np.sum(np.abs(a - b))) for a, b in zip(ref, cand)) /
                                    sum(a.size for a in ref), top1, peak))
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
    classes = max(o[0].reshape(o[0].shape[0], -1).shape[1] if o[0].ndim > 1 else o[0].size for o in outputs)
    if flat.size and flat.max() >= classes:
        raise InputError(f"label {int(flat.max())} is out of range: the model's first output scores {classes} classes")
    return float(np.mean(preds == flat.astype(np.int64)) * 100.0)


def gate(gates: list, name: str, value, op: str, limit) -> None:
    passed = value is not None and (value >= limit if op == ">=" else value <= limit)
    gates.append({"name": name, "value": value, "op": op, "limit": limit, "passed": bool(passed)})


def skipped(gates: list, name: str, why: str) -> None:
    """A gate that could not be evaluated: it neither passes nor fails a model, and says why."""
    gates.append({"name": name, "value": None, "op": "", "limit": None, "passed": True, "skipped": why})


def signal_gate(gates: list, name: str, outputs: list[dict]) -> None:
    """Fails when a reference output is ~0: parity against no signal proves nothing."""
    if any(o.get("reference_near_zero") for o in outputs):
        gate(gates, name, min(o["reference_peak"] for o in outputs), ">=", NEAR_ZERO)


def quantization_gates(outputs: list[dict], accuracy: dict | None, spec, classifier: bool) -> list[dict]:
    """The target's fp32-vs-int8 thresholds (a ParitySpec) applied to per-output parity dicts."""
    gates: list[dict] = []
    signal_gate(gates, "quant_reference_signal", outputs)
    gate(gates, "quant_cosine", worst(outputs, "cosine"), ">=", spec.quant_cosine_min)
    gate(gates, "quant_sqnr_db", worst(outputs, "sqnr_db"), ">=", spec.quant_sqnr_min_db)
    top1 = worst(outputs, "top1_agreement")
    if top1 is not None:
        gate(gates, "top1_agreement", top1, ">=", spec.top1_agreement_min)
    else:
        skipped(gates, "top1_agreement", "no classifier score output (set task = \"classification\" if it is one)"
                if not classifier else "no 2-D score output")
    if accuracy:
        gate(gates, "accuracy_drop", accuracy["drop"], "<=", spec.accuracy_drop_max)
    else:
        skipped(gates, "accuracy_drop", "no labels in the validation data")
    return gates
