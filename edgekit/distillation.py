"""Teacher → student distillation: soft targets at temperature T (weight alpha) plus the hard-label
loss when labels exist, optional feature matching between named layers; recovers a pruned model."""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from .config import DEFAULT_MAX_DATA_BYTES, DistillSettings, InputSpec
from .errors import InputError, StageError, UsageError, first_line
from .torch_paths import as_exported

MAX_BATCHES = 100_000
log = logging.getLogger(__name__)


@dataclass
class DistillResult:
    epochs_run: int
    best_epoch: int
    metric: str
    best: float
    history: list[dict] = field(default_factory=list)
    held_out_samples: int = 0  # what `metric` was measured on: training samples kept out of training
    warnings: list[str] = field(default_factory=list)  # what the user must hear (a student no smaller)

    def as_dict(self) -> dict:
        return asdict(self)


def batches_from_samples(feeds: list[dict], labels, names: list[str], batch_size: int, held_out: float = 0.0):
    """Stack batch-1 samples, in a fixed shuffled order, into (inputs tuple, labels) batches of torch tensors; the
    last `held_out` of the samples in batches of their own (compress.split holds them out: 15% of the batches was
    one sample of 77 at batch size 38, a short last batch)."""
    import torch

    order = np.random.default_rng(0).permutation(len(feeds))
    cut = len(order) - round(len(order) * held_out)
    out = []
    for start in [*range(0, cut, batch_size), *range(cut, len(order), batch_size)]:
        idx = order[start:min(start + batch_size, cut if start < cut else len(order))]
        inputs = tuple(torch.from_numpy(_stacked(n, [feeds[i][n] for i in idx])) for n in names)
        y = torch.from_numpy(np.asarray(labels)[idx].reshape(-1).astype(np.int64)) if labels is not None else None
        out.append((inputs, y))
    return out


def _stacked(name: str, samples: list[np.ndarray]) -> np.ndarray:
    """Samples of one input joined along their batch axis; a scalar input (a gain) has none: one value per batch."""
    if samples[0].ndim:
        return np.concatenate(samples)
    if any(not np.array_equal(a, samples[0]) for a in samples[1:]):
        raise InputError(f"input {name!r} is a scalar, one per batch, and the training samples hold several values of "
                         "it: give it one value, or --batch-size 1")
    return samples[0]


def batches_from_items(origin: str, items: Iterator, specs: tuple[InputSpec, ...] = (),
                       max_bytes: int = DEFAULT_MAX_DATA_BYTES):
    """(inputs, labels) batches from what user code yields (see calib.user_stream): inputs a tensor/array or a tuple
    of them, labels None or one class id per sample. Each batch is checked as calibration samples are (inputs against
    `specs` when given, finite, one size), since NaN inputs or labels out of range train a broken model without a
    word. Returns (batches, None), or (None, the items) when they are dicts: samples in the calibration format,
    for `calib.from_items`."""
    import itertools

    import torch

    batches, held = [], 0
    try:
        for i, item in enumerate(items):
            if i == 0 and isinstance(item, dict):
                return None, itertools.chain([item], items)
            if i == MAX_BATCHES:  # a generator may never end
                log.warning("%s: trained on its first %d batches (edgekit reads no more)", origin, MAX_BATCHES)
                break
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise InputError(f"{origin}: item {i} must be (inputs, labels), or a dict of one sample's inputs")
            inputs, labels = _checked_batch(f"{origin} batch {i}", *item, specs, batches[0] if batches else None)
            held += sum(x.nbytes for x in inputs)
            if held > max_bytes:
                raise InputError(f"{origin}: its first {i + 1} batches hold more than {max_bytes} bytes "
                                 "(--max-data-bytes)")
            batches.append((tuple(torch.from_numpy(x) for x in inputs),
                            None if labels is None else torch.from_numpy(labels)))
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{origin} failed: {type(e).__name__}: {e}") from e
    if not batches:
        raise InputError(f"{origin}: yielded no batches")
    return batches, None


def _checked_batch(origin: str, inputs, labels, specs: tuple[InputSpec, ...], first):
    """One batch's arrays: numeric, non-empty, one sample count, as `specs` say (or as the first batch when the
    inputs were not given); labels one class id per sample."""
    from .calib import class_ids, own_array, validate

    if isinstance(inputs, dict):  # inputs by name, as a calibration item's: it was "a object array of shape []"
        if not specs or set(inputs) != {s.name for s in specs}:
            raise InputError(f"{origin}: inputs named {sorted(map(str, inputs))}, the model takes "
                             f"{[s.name for s in specs] if specs else 'inputs not named (give --input)'}")
        inputs = [inputs[s.name] for s in specs]
    inputs = tuple(own_array(x) for x in (inputs if isinstance(inputs, (tuple, list)) else (inputs,)))
    if specs and len(inputs) != len(specs):
        raise InputError(f"{origin}: {len(inputs)} inputs, the model takes {len(specs)} ({[s.name for s in specs]})")
    for k, x in enumerate(inputs):
        if x.dtype.kind not in "biuf" or x.ndim == 0 or not len(x):
            what = "empty" if x.ndim and not len(x) else f"a {x.dtype} array of shape {list(x.shape)}"
            raise InputError(f"{origin}: input {k} is {what}; give numeric arrays, samples along the first axis")
        if specs and x.ndim == len(specs[k].shape) - 1 and all(  # a map-style Dataset's item: one sample
                isinstance(d, str) or d == n for d, n in zip(specs[k].shape[1:], x.shape)):
            raise InputError(f"{origin}: input {specs[k].name!r} has shape {list(x.shape)}, one sample without the "
                             f"batch axis of {list(specs[k].shape)}: give batches, as a DataLoader(dataset, "
                             "batch_size=...) does")
        if specs:  # any batch size: a model declared with batch 1 trains on batches of 16
            validate(origin, dataclasses.replace(specs[k], shape=("N", *specs[k].shape[1:])), x)
        elif x.dtype.kind == "f" and not np.isfinite(x).all():
            raise InputError(f"{origin}: input {k} has NaN or Inf values")
        if first is not None and (x.dtype, x.shape[1:]) != (first[0][k].numpy().dtype, tuple(first[0][k].shape[1:])):
            raise InputError(f"{origin}: input {k} is {x.dtype} {list(x.shape)}, the first batch's was "
                             f"{first[0][k].numpy().dtype} {list(first[0][k].shape)}")
    if len({len(x) for x in inputs}) != 1:
        raise InputError(f"{origin}: inputs have different sample counts {[len(x) for x in inputs]}")
    if first is not None and (labels is None) != (first[1] is None):
        raise InputError(f"{origin}: some batches have labels and some do not")
    if labels is None:
        return inputs, None
    labels = own_array(labels)
    if labels.shape != (len(inputs[0]),):
        raise InputError(f"{origin}: labels of shape {list(labels.shape)} for {len(inputs[0])} samples: give one "
                         "class id per sample" + (" (not one-hot rows)" if labels.ndim == 2 else ""))
    return inputs, class_ids(origin, labels)


def check_fits(origin: str, models: dict, batches) -> None:
    """Each model runs on the first batch and returns one tensor of scores per sample ([N, C, ...]: soft targets are
    taken over C), they agree in shape, and every label names one of their classes: told as bad data now, not as a
    crash (or a silently skewed loss) mid-training."""
    import torch

    inputs, _ = batches[0]
    for i, (x, y) in enumerate(batches):
        if y is not None and tuple(y.shape) != (len(x[0]),):  # one-hot rows, two labels a sample
            raise InputError(f"{origin}: training batch {i} has {y.numel()} labels for {len(x[0])} samples: give one "
                             "class id per sample (not one-hot rows)")
    top = max((int(y.max()) for _, y in batches if y is not None), default=None)
    shapes = {}
    for name, module in models.items():
        module.eval()
        try:
            with torch.no_grad(), as_exported():
                out = module(*inputs)
        except Exception as e:
            raise InputError(f"{origin}: the {name} fails on the first batch: {type(e).__name__}: "
                             f"{first_line(e)}") from e
        rank = 2 if top is not None else None  # labels: one row of class scores per sample
        if not (isinstance(out, torch.Tensor) and out.ndim >= 2 and out.ndim == (rank or out.ndim)
                and out.shape[0] == len(inputs[0]) and out.is_floating_point()):
            shown = f"{out.dtype} {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputError(f"{origin}: training needs a model that returns one tensor of class scores per sample, "
                             f"[{len(inputs[0])}, classes{'' if rank else ', ...'}]; the {name} returns {shown}")
        shapes[name] = list(out.shape)
    if len({str(v) for v in shapes.values()}) > 1:
        raise InputError(f"{origin}: the models' outputs differ on the first batch: "
                         + ", ".join(f"{name} {shape}" for name, shape in shapes.items()))
    classes = next(iter(shapes.values()))[1] if shapes else None
    if top is not None and classes is not None and top >= classes:
        raise InputError(f"{origin}: labels go up to {top} but the model has {classes} classes (0 to {classes - 1})")


def no_smaller(teacher, student) -> list[str]:
    """A student with at least the teacher's parameters compresses nothing (--teacher and --student swapped, or the
    wrong function): said, not refused, as a larger student is a choice one may make. Non-zero parameters: an
    unstructured-pruned student of the teacher's shape is the README's own recipe (its zeros stay zero)."""
    import torch

    t, s = (sum(p.numel() for p in m.parameters()) for m in (teacher, student))
    kept_t, kept_s = (sum(int(torch.count_nonzero(p)) for p in m.parameters()) for m in (teacher, student))
    zeros = f" ({kept_s:,} and {kept_t:,} non-zero)" if s < t else ""  # the teacher's zeros decided
    return [f"the student has {s:,} parameters, the teacher {t:,}{zeros}: distillation makes no smaller model"
            + (" (--teacher and --student swapped?)" if kept_s > kept_t else "")] if kept_s >= kept_t else []


def on_batch(model, inputs, name: str):
    """`model`'s output on one batch, as exported (torch_paths): an eval-mode teacher under no_grad took torch's
    fast path, whose nested tensors write 0 at a padded transformer's padded positions, so the student learnt
    targets its exported graph never computes. An error the first batch did not foretell (a token id past the
    vocabulary, a size the model cannot take) is bad data, named by its shapes, not a crash mid-training."""
    try:
        with as_exported():
            return model(*inputs)
    except Exception as e:
        raise InputError(f"a training batch of shape {', '.join(str(list(x.shape)) for x in inputs)} fails in the "
                         f"{name}: {type(e).__name__}: {first_line(e)}") from e


def evaluate(module, batches) -> dict:
    """Accuracy (when labelled) and mean cross-entropy of a model over batches."""
    import torch

    module.eval()
    correct = total = 0
    loss = 0.0
    with torch.no_grad():
        for inputs, labels in batches:
            out = on_batch(module, inputs, "model")
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
    if not any(p.requires_grad for p in student.parameters()):
        raise InputError("the student has no parameters to train (none, or all frozen with requires_grad=False)")
    teacher.eval()
    labelled = all(y is not None for _, y in train)
    params = list(student.parameters())
    sparse = _zero_masks(student)
    t = settings.temperature
    metric = "accuracy" if val and all(y is not None for _, y in val) else "kd_loss"
    result = DistillResult(0, 0, metric, -math.inf, held_out_samples=sum(len(x[0]) for x, _ in val or train))
    best_state, stale = None, 0
    gen = torch.Generator().manual_seed(settings.seed)
    feats = _FeatureMatch(teacher, student, settings.features, train[0][0])
    try:  # the hooks come off the caller's models however training ends
        params += list(feats.parameters())
        opt = (torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
               if settings.optimizer == "adamw" else  # a checked Literal: adamw or sgd
               torch.optim.SGD(params, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay,
                               nesterov=True))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.epochs * len(train))
        for epoch in range(1, settings.epochs + 1):
            student.train()
            total = 0.0
            for b in torch.randperm(len(train), generator=gen).tolist():
                inputs, labels = train[b]
                with torch.no_grad():
                    t_out = on_batch(teacher, inputs, "teacher")
                s_out = on_batch(student, inputs, "student")
                loss = settings.alpha * t * t * _kd_loss(s_out, t_out, t)
                if labelled:
                    loss = loss + (1 - settings.alpha) * F.cross_entropy(s_out, labels)
                loss = loss + settings.feature_weight * feats.loss()
                if not torch.isfinite(loss):  # the inputs were checked finite: the training diverged
                    raise _diverged(f"the loss became {float(loss.detach())}", epoch, settings.lr)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                with torch.no_grad():
                    for weight, keep in sparse:
                        weight.mul_(keep)
                if after_step:
                    after_step()
                total += float(loss.detach())
            if broken := next((n for n, v in student.state_dict().items() if v.is_floating_point()
                               and not bool(torch.isfinite(v).all())), None):  # e.g. BatchNorm's running_var
                raise _diverged(f"the student's {broken} holds NaN or Inf values", epoch, settings.lr)
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
    finally:
        feats.close()
    if best_state is None:
        raise StageError("distillation", f"no epoch scored a finite {metric} on the held-out batches")
    student.load_state_dict(best_state)
    if metric == "kd_loss":
        result.best = -result.best
    student.eval()
    return result


def _zero_masks(student) -> list:
    """(weight, where it is not zero) of each conv/linear layer with zero weights: an unstructured-pruned student
    keeps its sparsity through training (its zeroed weights would grow back, and the manifest's sparsity lie)."""
    from .pruning import is_compute

    weights = [m.weight for m in student.modules() if is_compute(m)]
    # some zeros, not all: a zero-initialised layer (an adapter, a ReZero branch) must still learn
    return [(w, w != 0) for w in weights if 0 < int((w != 0).sum()) < w.numel()]


def _diverged(what: str, epoch: int, lr: float) -> StageError:
    return StageError("distillation", f"{what} in epoch {epoch}: inputs far out of scale, or too high a learning "
                                      f"rate (lr {lr})")


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
        return -float(np.mean([float(_kd_loss(on_batch(student, x, "student"), on_batch(teacher, x, "teacher"), t))
                               for x, _ in batches]))


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
        try:  # the hooks come off the caller's models if a pair is refused
            for pair in pairs:
                t_name, sep, s_name = pair.partition(":")
                if not sep or t_name not in t_named or s_name not in s_named:
                    raise UsageError(f"feature pair {pair!r}: expected TEACHER_LAYER:STUDENT_LAYER with existing "
                                     "names")
                keys = (("t", t_name), ("s", s_name))
                for key, module in zip(keys, (t_named[t_name], s_named[s_name])):
                    self.handles.append(module.register_forward_hook(
                        lambda m, i, o, key=key: self.store.update({key: o})))
                self.pairs.append(keys)
            with torch.no_grad():
                teacher.eval(), student.eval()  # run as training runs them (on_batch: as exported)
                on_batch(teacher, example_inputs, "teacher"), on_batch(student, example_inputs, "student")
            for pair, (t_key, s_key) in zip(pairs, self.pairs):
                self.projections.append(self._projection(pair, self.store.get(t_key), self.store.get(s_key)))
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _projection(pair: str, t_out, s_out):
        """A 1x1 map from the student layer's channels (axis 1) to the teacher's; the two must be [N, C] or
        [N, C, ...] with the same other sizes."""
        import torch

        shapes = [list(o.shape) if isinstance(o, torch.Tensor) else o and type(o).__name__ for o in (t_out, s_out)]
        if None in shapes:
            raise UsageError(f"feature pair {pair!r}: a layer the model's forward never calls")
        if not all(isinstance(o, list) and 2 <= len(o) <= 4 for o in shapes) or \
                shapes[0][:1] + shapes[0][2:] != shapes[1][:1] + shapes[1][2:]:
            raise UsageError(f"feature pair {pair!r}: outputs {shapes[0]} and {shapes[1]} cannot be matched (give "
                             "layers whose outputs are [N, C] or [N, C, ...] tensors of the same other sizes)")
        tc, sc, rank = shapes[0][1], shapes[1][1], len(shapes[0])
        return (torch.nn.Linear(sc, tc, bias=False) if rank == 2 else
                (torch.nn.Conv1d if rank == 3 else torch.nn.Conv2d)(sc, tc, 1, bias=False))

    def parameters(self):
        return self.projections.parameters()

    def loss(self):
        import torch.nn.functional as F

        return sum(F.mse_loss(proj(self.store[s_key]), self.store[t_key].detach())
                   for (t_key, s_key), proj in zip(self.pairs, self.projections))

    def close(self):
        for h in self.handles:
            h.remove()
