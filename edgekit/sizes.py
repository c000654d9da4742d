"""Dynamic axes validated at a size the data does not have: an export that baked a batch or sequence
size into a Reshape passes at the traced size and breaks at any other."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import InputSpec, same_dim
from .errors import UsageError

MAX_FEEDS = 4  # validation feeds made at the other size


@dataclass(frozen=True)
class OtherSize:
    dim: str  # the named dimension (N, seq, ...)
    seen: tuple[int, ...]  # the sizes the validation data has
    size: int  # the other size validated
    feeds: list  # validation feeds at that size

    def label(self) -> str:
        return f"{self.dim}={self.size}"


def other_sizes(specs: tuple[InputSpec, ...], feeds: list[dict], listed: dict | None = None) -> list[OtherSize]:
    """The sizes each named dimension is validated at: those `listed` for it ({"seq": [16, 64]}), else one the
    data does not have: a batch dimension (is_batch) doubled, any other halved. A batch is made by joining
    samples; another dimension by cutting each sample or repeating it cyclically. A dimension that cannot be
    resized that way is left out."""
    found = []
    dims = named_dims(specs)
    listed = {next((d for d in dims if same_dim(k, d)), k): v for k, v in (listed or {}).items()}
    if unknown := set(listed) - set(dims):
        raise UsageError(f"--size {sorted(unknown)[0]}: not a named axis of the model's inputs (named: "
                         f"{', '.join(dims) or 'none'})")
    for dim in dims:
        # every axis of the name: a square mask (mask:Nxseqxseq) cut along its first alone was (1, 8, 16)
        axes = {s.name: tuple(i for i, d in enumerate(s.shape) if d == dim) for s in specs if dim in s.shape}
        seen = tuple(sorted({f[n].shape[a] for f in feeds for n, each in axes.items() for a in each}))
        if not seen:
            continue
        batch = is_batch(specs, dim)
        for size in listed.get(dim) or [2 * seen[0] if batch else seen[0] // 2]:
            if batch:
                k = size // seen[0]  # samples joined per made one; no more are kept than MAX_FEEDS need
                # only samples of one shape join (a sequence length that varies by sample stopped the export): the
                # largest set of them (the first sample's alone, of a length no other had, made none)
                shapes: dict[tuple, list] = {}
                for f in feeds:
                    if all(f[n].shape[a] == seen[0] for n, (a,) in axes.items()):
                        group = shapes.setdefault(tuple((n, v.shape) for n, v in f.items()), [])
                        group.append(f)
                        if len(group) == max(k, 1) * MAX_FEEDS:  # all it joins: no sample more is held
                            break
                same = max(shapes.values(), key=len, default=[])
                if size % seen[0] or len(same) < k:
                    if dim in listed:
                        raise UsageError(f"--size {dim}={size}: made by joining samples of one shape whose {dim} is "
                                         f"{seen[0]} (the smallest in the data): a multiple of {seen[0]}, and at most "
                                         f"{len(same) * seen[0]}, as the data's largest set of samples of one shape "
                                         f"holds {len(same)}")
                    continue
                made = [{n: np.concatenate([g[n] for g in group], axes[n][0]) if n in axes else group[0][n]
                         for n in group[0]}
                        for group in zip(*(same[i::k] for i in range(k)))][:MAX_FEEDS]
                found.append(OtherSize(dim, seen, size, made))
            elif size >= 1 and not any(s.batch_axis in axes.get(s.name, ()) for s in specs):  # not a batch cut
                made = [{n: _resized(v, axes.get(n, ()), size, start) for n, v in f.items()}
                        for f in feeds[:MAX_FEEDS] for start in [_cut_start(f, axes, size)]]
                found.append(OtherSize(dim, seen, size, made))
    return found


def _resized(value: np.ndarray, axes: tuple[int, ...], size: int, start: int = 0) -> np.ndarray:
    """`value` cut to `size` from `start`, or repeated cyclically up to it, along each of `axes`."""
    for axis in axes:
        value = np.take(value, (start + np.arange(size)) % value.shape[axis], axis=axis)
    return value


def _cut_start(feed: dict, axes: dict, size: int) -> int:
    """Where a sample cut to `size` starts: 0, or its last `size` positions when it is padded at its start (a longer
    run of positions like its first than like its last, in every input). A left-padded sample cut from the start
    kept padding alone: the model's output was ~0 and the check at that size judged nothing."""
    length = next(feed[n].shape[a] for n, each in axes.items() for a in each)
    if size >= length:
        return 0
    like_first, like_last = np.ones(length, bool), np.ones(length, bool)  # per position, over every input
    for name, each in axes.items():
        for axis in each:
            v = np.moveaxis(feed[name], axis, 0).reshape(length, -1)
            like_first &= (v == v[:1]).all(axis=1)
            like_last &= (v == v[-1:]).all(axis=1)
    lead = int(np.argmin(like_first)) if not like_first.all() else length
    trail = int(np.argmin(like_last[::-1])) if not like_last.all() else length
    return length - size if lead > trail else 0


def named_dims(specs: tuple[InputSpec, ...]) -> list[str]:
    """The inputs' named (dynamic) dimensions, each once, in order."""
    return list(dict.fromkeys(d for s in specs for d in s.shape if isinstance(d, str)))


def fixed_dims(specs: tuple[InputSpec, ...], fixed: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """The named dimensions a fixed-shape target ships at one size (every input holding them fixed), each with
    that size: the app must feed it, and no other size of it is shipped."""
    found = {}
    for dim in named_dims(specs):
        holders = [s for s in specs if dim in s.shape]
        if all(s.name in fixed for s in holders):
            found[dim] = fixed[holders[0].name][holders[0].shape.index(dim)]
    return found


def is_batch(specs: tuple[InputSpec, ...], dim: str) -> bool:
    """Whether `dim` is a batch: the batch axis (InputSpec.batch_axis: N wherever it stands, else a leading name)
    of every input holding it, and no other axis of them."""
    return all(s.shape.index(dim) == s.batch_axis and s.shape.count(dim) == 1 for s in specs if dim in s.shape)


def unvalidated(specs: tuple[InputSpec, ...], checks: list) -> list[str]:
    """The named dimensions of the inputs that no size check covers (other_sizes found no way to make one)."""
    done = {c.other.dim for c in checks}
    return [d for d in named_dims(specs) if d not in done]


@dataclass(frozen=True)
class SizeCheck:
    """The float model at another size: its outputs (the int8 model's reference there), export parity
    against torch, the int8 model's parity, or why it did not run."""

    other: OtherSize
    reference: list | None
    export: object = None  # parity.StageParity for a torch source
    quantization: object = None  # parity.StageParity of the target's int8 model (not for fixed shapes)
    error: str = ""
    torch_fails: bool = False  # the torch model does not run at that size either: the model's limit, not the export's

    def as_dict(self) -> dict:
        return {"dim": self.other.dim, "data_sizes": list(self.other.seen), "validated_size": self.other.size,
                "samples": len(self.other.feeds), "error": self.error or None,
                "export": self.export and self.export.as_dict(),
                "quantization": self.quantization and self.quantization.as_dict()}
