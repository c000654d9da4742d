"""Parameter sharing (Deep Compression's weight clustering; TF Model Optimization's weight clustering and
coremltools' palettization do the same): each conv/linear layer's weights take at most k distinct values.

k-means in one dimension per layer (centroids start evenly over [min, max], as Deep Compression found best),
then fine-tuning by distillation from the unshared model with the clusters tied: after every optimizer step
each weight is set to its cluster's mean, so the layer never has more than k values. Pre-processing folds a
following BatchNorm into the weights, a factor per output channel, so each output channel keeps at most k
values, and per-channel int8 keeps them as at most k codes: an archive of the deliverable compresses (digits,
k = 16: the desktop-x86 .tar.gz 2.95x smaller, int8 accuracy unchanged).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from .errors import UsageError
from .pruning import check_ignored, is_compute

log = logging.getLogger(__name__)
ITERATIONS = 30  # Lloyd steps; 1-D k-means settles in a few
SHARED = "_edgekit_shared_layers"  # the attribute `mark` sets on a module


@dataclass(frozen=True)
class Unshared:
    """A weight matrix sharing left as it was: a GRU's, an Embedding's, attention's in_proj_weight."""
    weight: str  # the parameter's name, e.g. rnn.weight_ih_l0
    kind: str  # its module's class, e.g. GRU
    params: int


@dataclass(frozen=True)
class ShareResult:
    clusters: int
    layers: tuple[str, ...]  # the layers whose weights are shared
    distinct_max: int  # most distinct weight values left in any of them
    fine_tuning: dict | None = None  # `edgekit share --data`'s distillation (DistillResult.as_dict)
    unshared: tuple[Unshared, ...] = ()  # weight matrices left unshared (not conv/linear, and not --ignore'd)
    unshared_share: float = 0.0  # the share of the model's parameters they hold

    @property
    def warnings(self) -> tuple[str, ...]:
        """Said with the result: "3 layers shared" hid a GRU holding half the parameters, left as it was."""
        return (left_out(self.unshared, self.unshared_share),) if self.unshared else ()

    def as_dict(self) -> dict:
        return {**asdict(self), "layers": list(self.layers), "unshared": [asdict(u) for u in self.unshared],
                "warnings": list(self.warnings)}


def cluster(module, clusters: int, ignore: tuple[str, ...] = ()) -> dict:
    """Replace each compute layer's weight by its nearest of `clusters` centroids, in place. Returns the cluster
    of every weight by layer name, which `tie` keeps."""
    import torch

    if not 2 <= clusters <= 256:
        raise UsageError(f"--clusters must be between 2 and 256 (got {clusters})")
    named = dict(module.named_modules(remove_duplicate=False))  # a layer registered twice answers to both names
    # a block keeps every one under it; a GRU or an Embedding, which share leaves as they are, may be named too,
    # to say so (the warning that lists them has no other way to be answered)
    check_ignored(ignore, named, "shared", lambda m: is_compute(m) or any(map(_matrix, m.parameters(False))),
                  "conv/linear layer or weight matrix")
    kept = {id(m) for n in ignore for m in named[n].modules()}
    shared = [(name, layer) for name, layer in module.named_modules() if is_compute(layer)
              and id(layer) not in kept and layer.weight.numel() > clusters]
    if tied := [n for n, m in named.items() if id(m) in kept and is_compute(m)
                and any(layer.weight is m.weight for _, layer in shared)]:  # sharing one shares the other
        raise UsageError(f"--ignore {', '.join(tied)}: its weight is another layer's too (tied); ignore both")
    if computed := [name for name, layer in shared if not isinstance(layer.weight, torch.nn.Parameter)]:
        raise UsageError(f"{', '.join(computed)}: its weight is computed (weight_norm or another parametrization), "
                         "so shared values would not stay: remove the parametrization first, or --ignore it")
    if not shared:
        log.warning("sharing in %d clusters shared no layer: none is a conv/linear layer with more than %d weights "
                    "that --ignore keeps out", clusters, clusters)
    left, held = unshared(module, [name for name, _ in shared], clusters, ignore)
    if left:
        log.warning("%s", left_out(left, held))
    assignments = {}
    with torch.no_grad():
        for name, layer in shared:
            flat = layer.weight.detach().reshape(-1)  # a channels-last weight has no flat view
            centroids = torch.linspace(float(flat.min()), float(flat.max()), clusters, dtype=flat.dtype)
            for _ in range(ITERATIONS):
                index = _nearest(flat, centroids)
                centroids = _means(flat, index, centroids)
            assignments[name] = _nearest(flat, centroids)
    tie(module, assignments)
    mark(module, assignments)
    return assignments


def tie(module, assignments: dict) -> None:
    """Set every shared weight to its cluster's mean (after a training step moved them apart)."""
    import torch

    layers = dict(module.named_modules())
    with torch.no_grad():
        for name, index in assignments.items():
            weight = layers[name].weight
            flat = weight.reshape(-1)
            weight.copy_(_means(flat, index, torch.zeros(int(index.max()) + 1, dtype=flat.dtype))[index]
                         .reshape(weight.shape))


def mark(module, layers) -> None:
    """Note on `module` which of its layers hold shared weights (what `share` clustered, or a share file names):
    distillation ties them, and a saved file names them in turn."""
    setattr(module, SHARED, tuple(layers))


def marked(module) -> tuple[str, ...]:
    """The shared layers noted on `module` or its sub-modules (a wrapper's inner model), by name from `module`."""
    return tuple(f"{name}.{layer}" if name else layer for name, m in module.named_modules()
                 for layer in getattr(m, SHARED, ()))


def clusters_of(module) -> dict:
    """The clusters of the layers marked shared: `tie` keeps them through distillation, which otherwise spread the
    digits CNN's 4 shared values to 17,243. Each distinct value is a cluster."""
    import torch

    found = {}
    named = dict(module.named_modules())
    for name in marked(module):
        layer = named.get(name)
        if is_compute(layer) and isinstance(layer.weight, torch.nn.Parameter):
            found[name] = torch.unique(layer.weight.detach(), return_inverse=True)[1].reshape(-1)
    return found


def result(module, clusters: int, assignments: dict, ignore: tuple[str, ...] = ()) -> ShareResult:
    layers = dict(module.named_modules())
    distinct = [int(layers[n].weight.detach().unique().numel()) for n in assignments]
    left, held = unshared(module, assignments, clusters, ignore)
    return ShareResult(clusters, tuple(assignments), max(distinct, default=0), unshared=left, unshared_share=held)


def unshared(module, layers, clusters: int, ignore: tuple[str, ...] = ()) -> tuple[tuple[Unshared, ...], float]:
    """The weight matrices (two or more axes longer than 1, more than `clusters` values) neither shared in `layers`
    nor kept by --ignore, and the share of the parameters they hold. Biases and norms are vectors, never shared,
    and a weight of at most `clusters` values holds no more already."""
    named = dict(module.named_modules(remove_duplicate=False))
    done = {id(named[n].weight) for n in layers} | {id(p) for n in ignore for p in named[n].parameters()}
    found, seen, total = [], set(), 0
    for owner, m in module.named_modules():
        for name, p in m.named_parameters(recurse=False):
            if id(p) in seen:  # a tied weight counts once
                continue
            seen.add(id(p))
            total += p.numel()
            if id(p) not in done and _matrix(p) and p.numel() > clusters:
                found.append(Unshared(f"{owner}.{name}" if owner else name, type(m).__name__, p.numel()))
    return tuple(found), sum(u.params for u in found) / max(total, 1)


def _matrix(p) -> bool:
    """Two or more axes longer than 1: what sharing would cluster (biases and norms are vectors)."""
    return sum(d > 1 for d in p.shape) >= 2


def left_out(left: tuple[Unshared, ...], held: float) -> str:
    """What sharing did not cover, by weight and kind (sharing clusters conv/linear layers only)."""
    names = [f"{u.weight} ({u.kind})" for u in left]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return (f"sharing left {len(left)} weight matri{'x' if len(left) == 1 else 'ces'} unshared, {held:.1%} of the "
            f"parameters: {shown} (it clusters conv/linear layers only: these keep all their values)")


def _nearest(flat, centroids):
    import torch

    order = torch.argsort(centroids)
    edges = (centroids[order][1:] + centroids[order][:-1]) / 2
    return order[torch.bucketize(flat, edges)]


def _means(flat, index, fallback):
    """Each cluster's mean weight; an empty cluster keeps `fallback`'s value."""
    import torch

    k = len(fallback)
    sums = torch.zeros(k, dtype=flat.dtype).scatter_add_(0, index, flat)
    counts = torch.bincount(index, minlength=k).to(flat.dtype)
    return torch.where(counts > 0, sums / counts.clamp(min=1), fallback)
