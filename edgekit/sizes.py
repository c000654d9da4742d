"""Dynamic axes validated at a size the data does not have: an export that baked a batch or sequence
size into a Reshape passes at the traced size and breaks at any other."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import InputSpec

MAX_FEEDS = 4  # validation feeds made at the other size


@dataclass(frozen=True)
class OtherSize:
    dim: str  # the named dimension (N, seq, ...)
    seen: tuple[int, ...]  # the sizes the validation data has
    size: int  # the other size validated
    feeds: list  # validation feeds at that size

    def label(self) -> str:
        return f"{self.dim}={self.size}"


def other_sizes(specs: tuple[InputSpec, ...], feeds: list[dict]) -> list[OtherSize]:
    """One other size per named dimension: a leading (batch) dimension doubled by joining two samples; any
    other halved by keeping its first half. A dimension that cannot be resized that way is left out."""
    found = []
    for dim in dict.fromkeys(d for s in specs for d in s.shape if isinstance(d, str)):
        axes = {s.name: s.shape.index(dim) for s in specs if dim in s.shape}
        seen = tuple(sorted({f[n].shape[a] for f in feeds for n, a in axes.items()}))
        if not seen:
            continue
        if set(axes.values()) == {0}:
            same = [f for f in feeds if all(f[n].shape[0] == seen[0] for n in axes)]
            if len(same) < 2:
                continue
            made = [{n: np.concatenate([a[n], b[n]]) if n in axes else a[n] for n in a}
                    for a, b in zip(same[0::2], same[1::2])][:MAX_FEEDS]
            found.append(OtherSize(dim, seen, 2 * seen[0], made))
        elif 0 not in axes.values() and seen[0] > 1:
            size = seen[0] // 2
            made = [{n: np.take(v, range(size), axis=axes[n]) if n in axes else v for n, v in f.items()}
                    for f in feeds[:MAX_FEEDS]]
            found.append(OtherSize(dim, seen, size, made))
    return found


@dataclass(frozen=True)
class SizeCheck:
    """The float model at another size: its outputs (the int8 model's reference there), export parity
    against torch, the int8 model's parity, or why it did not run."""

    other: OtherSize
    reference: list | None
    export: object = None  # parity.StageParity for a torch source
    quantization: object = None  # parity.StageParity of the target's int8 model (not for fixed shapes)
    error: str = ""

    def as_dict(self) -> dict:
        return {"dim": self.other.dim, "data_sizes": list(self.other.seen), "validated_size": self.other.size,
                "samples": len(self.other.feeds), "error": self.error or None,
                "export": self.export and self.export.as_dict(),
                "quantization": self.quantization and self.quantization.as_dict()}
