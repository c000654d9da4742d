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
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def compare(names: list[str], reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> list[OutputParity]:
    """Per output, over all samples; top-1 agreement for 2-D score outputs (batch × classes)."""
    results = []
    for k, name in enumerate(names):
        ref = [np.asarray(r[k], dtype=np.float64) for r in reference]
        cand = [np.asarray(c[k], dtype=np.float64) for c in candidate]
        rows_ref = np.concatenate([r.reshape(r.shape[0] if r.ndim > 1 else 1, -1) for r in ref])
        rows_cand = np.concatenate([c.reshape(c.shape[0] if c.ndim > 1 else 1, -1) for c in cand])
        cos = [_cosine(a, b) for a, b in zip(rows_ref, rows_cand)]
        err = rows_ref - rows_cand
        noise = float(np.sum(err ** 2))
        signal = float(np.sum(rows_ref ** 2))
        # capped at ±200 dB so a bit-exact match stays a finite, JSON-safe number
        sqnr = 200.0 if noise == 0 else (max(-200.0, min(200.0, 10 * math.log10(signal / noise)))
                                         if signal > 0 else -200.0)
        top1 = None
        if ref[0].ndim == 2 and ref[0].shape[1] > 1:
            top1 = float(np.mean(rows_ref.argmax(axis=1) == rows_cand.argmax(axis=1)))
        results.append(OutputParity(name, float(np.mean(cos)), float(np.min(cos)), round(sqnr, 3),
                                    float(np.max(np.abs(err))),
                                    float(np.mean(np.abs(err))), top1))
    return results


def accuracy(outputs: list[list[np.ndarray]], labels: np.ndarray) -> float:
    """Top-1 accuracy in percent of the first output against integer labels."""
    preds = np.concatenate([o[0].reshape(o[0].shape[0], -1).argmax(axis=1) for o in outputs])
    return float(np.mean(preds == labels.astype(np.int64)) * 100.0)
