"""Teacher → student distillation: soft targets at temperature T (weight alpha) plus the hard-label
loss when labels exist, optional feature matching between named layers; recovers a pruned model."""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .config import DistillSettings
from .errors import InputError, UsageError

MAX_BATCHES = 100_000


@dataclass
class DistillResult:
    epochs_run: int
    best_epoch: int
    metric: str
    best: float
    history: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def batches_from_samples(feeds: list[dict], labels, names: list[str], batch_size: int):
    """Stack batch-1 samples, in a fixed shuffled order, into (inputs tuple, labels) batches of torch tensors."""
    import torch

    order = np.random.default_rng(0).permutation(len(feeds))
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        inputs = tuple(torch.from_numpy(np.concatenate([feeds[i][n] for i in idx])) for n in names)
        y = torch.from_numpy(np.asarray(labels)[idx].reshape(-1).astype(np.int64)) if labels is not None else None
        out.append((inputs, y))
    return out


def batches_from_function(fn_spec: str):
    """A user function returning an iterable of (inputs, labels); inputs a tensor/array or a tuple of them.

    None when it yields dicts instead: those are samples in the calibration format, read by `calib`.
    """
    import torch

    from .userfn import resolve_callable

    fn = resolve_callable(fn_spec, "data")
    batches = []
    try:
        for i, item in enumerate(fn()):
            if i == 0 and isinstance(item, dict):
                return None
            if i == MAX_BATCHES:  # a generator may never end
                break
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise InputError(f"data {fn_spec!r}: item {i} must be (inputs, labels)")
            inputs, labels = item
            inputs = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
            batches.append((tuple(torch.as_tensor(np.asarray(x)) for x in inputs),
                            None if labels is None else torch.as_tensor(np.asarray(labels)).long().reshape(-1)))
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"data {fn_spec!r} failed: {type(e).__name__}: {e}") from e
    if not batches:
        raise InputError(f"data {fn_spec!r}: yielded no batches")
    return batches


def evaluate(module, batches) -> dict:
    """Accuracy (when labelled) and mean cross-entropy of a model over batches."""
    import torch

    module.eval()
    correct = total = 0
    loss = 0.0
    with torch.no_grad():
        for inputs, labels in batches:
            out = module(*inputs)
            if labels is not None:
                correct += int((out.argmax(1) == labels).sum())
                total += len(labels)
                loss += float(torch.nn.functional.cross_entropy(out, labels, reduction="sum"))
    return {"accuracy": 100.0 * correct / total if total else None, "loss": loss / total if total else None}


def distill(teacher, student, train, val, settings: DistillSettings, progress=None, on_best=None,
            after_step=None) -> DistillResult:
    """Train `student` in place; it ends with the weights of its best validation epoch. `after_step()` runs
    after each optimizer step (weight sharing ties the clusters again there)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(settings.seed)
    teacher.eval()
    labelled = all(y is not None for _, y in train)
    feats = _FeatureMatch(teacher, student, settings.features, train[0][0])
    params = list(student.parameters()) + list(feats.parameters())
    if settings.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    elif settings.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay, nesterov=True)
    else:
        raise UsageError(f"optimizer {settings.optimizer!r}: use adamw or sgd")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.epochs * len(train))
    t = settings.temperature
    metric = "accuracy" if val and all(y is not None for _, y in val) else "kd_loss"
    result = DistillResult(0, 0, metric, -math.inf)
    best_state, stale = None, 0
    gen = torch.Generator().manual_seed(settings.seed)
    for epoch in range(1, settings.epochs + 1):
        student.train()
        total = 0.0
        for b in torch.randperm(len(train), generator=gen).tolist():
            inputs, labels = train[b]
            with torch.no_grad():
                t_out = teacher(*inputs)
            s_out = student(*inputs)
            loss = settings.alpha * t * t * _kd_loss(s_out, t_out, t)
            if labelled:
                loss = loss + (1 - settings.alpha) * F.cross_entropy(s_out, labels)
            loss = loss + settings.feature_weight * feats.loss()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if after_step:
                after_step()
            total += float(loss.detach())
        score = _score(teacher, student, val or train, metric, t)
        shown = score if metric == "accuracy" else -score  # the KD loss is scored negated: higher is better
        row = {"epoch": epoch, "train_loss": round(total / len(train), 5), metric: round(shown, 5)}
        result.history.append(row)
        result.epochs_run = epoch
        if progress:
            progress(row)
        if score > result.best:
            result.best, result.best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(student.state_dict())
            if on_best:
                on_best(student, row)
        else:
            stale += 1
            if settings.patience and stale >= settings.patience:
                break
    feats.close()
    if best_state is not None:
        student.load_state_dict(best_state)
    if metric == "kd_loss":
        result.best = -result.best
    student.eval()
    return result


def _kd_loss(s_out, t_out, t: float):
    """KL divergence of the student's soft targets from the teacher's, both at temperature t."""
    import torch.nn.functional as F

    return F.kl_div(F.log_softmax(s_out / t, 1), F.log_softmax(t_out / t, 1), reduction="batchmean", log_target=True)


def _score(teacher, student, batches, metric, t) -> float:
    import torch

    if metric == "accuracy":
        return evaluate(student, batches)["accuracy"]
    student.eval()
    with torch.no_grad():
        return -float(np.mean([float(_kd_loss(student(*x), teacher(*x), t)) for x, _ in batches]))


class _FeatureMatch:
    """MSE between named teacher and student layer outputs, through a learned 1x1 projection when
    pruning left the student narrower."""

    def __init__(self, teacher, student, pairs, example_inputs):
        import torch

        self.pairs = []
        self.store = {}
        self.handles = []
        self.projections = torch.nn.ModuleList()
        t_named, s_named = dict(teacher.named_modules()), dict(student.named_modules())
        for pair in pairs:
            t_name, sep, s_name = pair.partition(":")
            if not sep or t_name not in t_named or s_name not in s_named:
                raise UsageError(f"feature pair {pair!r}: expected TEACHER_LAYER:STUDENT_LAYER with existing names")
            keys = (("t", t_name), ("s", s_name))
            for key, module in zip(keys, (t_named[t_name], s_named[s_name])):
                self.handles.append(module.register_forward_hook(lambda m, i, o, key=key: self.store.update({key: o})))
            self.pairs.append(keys)
        with torch.no_grad():
            teacher.eval(), student.eval()
            teacher(*example_inputs), student(*example_inputs)
        for t_key, s_key in self.pairs:
            tc, sc = self.store[t_key].shape[1], self.store[s_key].shape[1]
            conv = self.store[s_key].dim() == 4
            proj = torch.nn.Conv2d(sc, tc, 1, bias=False) if conv else torch.nn.Linear(sc, tc, bias=False)
            self.projections.append(proj)

    def parameters(self):
        return self.projections.parameters()

    def loss(self):
        import torch.nn.functional as F

        return sum(F.mse_loss(proj(self.store[s_key]), self.store[t_key].detach())
                   for (t_key, s_key), proj in zip(self.pairs, self.projections))

    def close(self):
        for h in self.handles:
            h.remove()
