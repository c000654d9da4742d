"""Output parity between a reference and a candidate model: cosine, SQNR, abs errors, top-1, accuracy."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

import numpy as np


NEAR_ZERO = 1e-6  # a reference output whose peak |value| is below this carries no signal to compare
# The tasks whose outputs are read channel by channel as values (boxes and scores, quantities): the few-levels rule
# (quantization.keep_narrow_outputs) keeps their narrow output channels float and centred_sqnr_db is gated. Not a
# classifier's logits (argmax, judged by top-1 and accuracy); task other is only warned of: untrained test models'
# outputs, a bias plus a small variation, took 6-23 levels (small_cnn, ResNet18-, MobileNetV2-style).
VALUE_TASKS = ("detect", "regress")
# a sample whose reference RMS is under this share of the median sample's is left out of cosine and cosine_min: a few
# int8 steps of noise are a wide angle there (a VAD step's two logits at 0.16 RMS beside a median of 3.0: 0.9475),
# which SQNR already weighs by the sample's size. Out of both, so that cosine_min <= cosine (counted in the mean
# alone, quiet samples sank it to 0.978 below a worst of 0.991 and quant_cosine failed while quant_cosine_worst held)
QUIET = 0.1
CONSTANT_RMS = 1e-6  # a channel varying less than this (RMS around its mean, over the output's peak) is constant


def candidates(names, plain=(), shapes=None, integer=None) -> list[int]:
    """The outputs that may hold the class scores, best first: float rows x classes (2-D), float class maps (N, C, H,
    W), integer outputs (class ids: a model ending in its ArgMax), then the rest; a streaming model's state (`plain`)
    only when all are. Float first: a TopK's ids [N, 3] or a keypoint argmax [N, 5] returned before the logits (a
    class map) was scored, and correct labels blamed. `shapes`: each output's shape (one sample's, or the manifest's, a
    named axis counting as more than 1); `integer`: whether each output is integer (or bool)."""
    free = [k for k, name in enumerate(names) if name not in plain] or [0]

    def rank(k):
        shape = shapes[k] if shapes else ()
        many = len(shape) >= 2 and shape[1] not in (0, 1)
        return 2 if integer and integer[k] else 0 if many and len(shape) == 2 else 1 if many and len(shape) >= 4 else 3
    return sorted(free, key=rank)


def scored(names, plain=(), shapes=None, integer=None, fits=None) -> int:
    """Which output holds the class scores: the first of candidates() that the labels fit (`fits(k)`: one label per
    row, or a mask per sample of a class map's shape), else the first. Accuracy scores it against the labels, and
    top-1/top-5 agreement are measured on it alone (on an embedding beside the logits, an argmax flip on a near-tie
    failed a model whose classes all held; a segmentation map returned before the logits was scored as 1,024
    'classes')."""
    order = candidates(names, plain, shapes, integer)
    return next((k for k in order if fits(k)), order[0]) if fits else order[0]


def integer_of(sample) -> list[bool]:
    """Whether each of one sample's outputs is integer (or bool), for scored()."""
    return [np.asarray(o).dtype.kind in "biu" for o in sample]


def fits_labels(labels, outputs):
    """For scored(): whether the labels fit output k of `outputs` (every sample's); None without labels."""
    if labels is None or not outputs:
        return None
    return lambda k: misfit(np.shape(labels), [o[k] for o in outputs]) is None


def scored_at(outputs) -> int:
    """The index of compare()'s scored output (the one it marked), for accuracy on the same output."""
    return next((k for k, o in enumerate(outputs) if o.scored), 0)


def shapes_of(sample) -> list[tuple]:
    """One sample's output shapes, for scored()."""
    return [np.shape(o) for o in sample]


@dataclass(frozen=True)
class OutputParity:
    output: str
    cosine: float | None  # mean over samples of per-sample cosine similarity; None: reference ~0, or integer
    cosine_min: float | None  # the worst sample's (the same samples as the mean: quiet_samples left out of both)
    sqnr_db: float | None
    max_abs: float | None  # None: no sample kept its length (length_mismatches)
    mean_abs: float | None
    top1_agreement: float | None = None  # classify, the scored output: the same top class
    reference_peak: float = 0.0  # max |reference|: below NEAR_ZERO cosine and SQNR say nothing
    top5_agreement: float | None = None  # as top1, more than 5 classes: the reference's top class in the top 5
    retrieval_at1: float | None = None  # embed: each row's nearest other row the same in both (near-ties count)
    exact_agreement: float | None = None  # integer or bool outputs (class ids, masks): share of values equal
    scored: bool = False  # the output class metrics and accuracy are measured on (scored()); not in as_dict
    # the worst channel's SQNR on values centred on its reference mean (centred_sqnr): what cosine and SQNR, ruled by
    # the largest channels and any offset, miss (a logit beside pixel boxes at 0.8 dB while the output had 45.7)
    centred_sqnr_db: float | None = None
    # classify, a class map's scored output: mean over classes of the IoU of int8's argmax map with the reference's
    # (a small class's pixels flipping hardly move a per-pixel top1 that the background rules)
    iou_agreement: float | None = None
    # samples with no cosine of their own (reference ~0, or under QUIET of the median sample's RMS): out of the mean
    # and the worst alike, counted in SQNR and max_abs; None when there are none
    quiet_samples: int | None = None
    # samples whose length (a dim the graph leaves open: NonZero's, NMS's) differs from the reference's, left out of
    # the figures above (all None when none is left), and the first as said: "(10, 3) vs (9, 3) in sample 2"
    length_mismatches: int | None = None
    length_example: str | None = None
    # the RMS under which a sample was quiet (QUIET x the median sample's, in the output's units; None: one cosine
    # over all samples): check leaves out the golden samples under it, as the run did, not under their own median's
    quiet_floor: float | None = None
    # task detect, outputs whose rows' count follows the values (detections: boxes, scores, labels, NMS indices):
    # 2 x rows matched one-to-one (detections()) / (reference rows + candidate rows), over all samples (1.0 when none
    # has any), and that denominator, which check bounds a claimed agreement by
    detection_agreement: float | None = None
    detection_rows: int | None = None
    # task detect: samples with no matched detection, left out of the figures (which are of the matched rows, on
    # every other sample; None when none is left out), and how check matches this output's rows as the run did
    # (detections.Match: group, row axis, role, box format), recorded once here
    unmatched_samples: int | None = None
    detection_match: dict | None = None
    # check only (a recorded detection_match given): why its role is not what the arrays make it, matched as they do
    detection_match_untrue: str | None = None
    # the rows (pixels of a class map) top1_agreement and top5_agreement count: check bounds them by the golden
    # samples' clear flips out of these (an open batch axis leaves a sample's rows unknown); task auto's significance
    top1_rows: int | None = None
    # and the worst centred SQNR over the channels that are fp32's top class on a row (top_class_sqnr): a loss of
    # spread is evidence only there (a ReLU embedding's nearly dead channel is ~0 dB whatever int8 does)
    top_class_sqnr_db: float | None = None

    @property
    def near_zero(self) -> bool:
        """No signal for cosine and SQNR to measure (class ids all 0 are a signal, compared exactly)."""
        return self.reference_peak < NEAR_ZERO and self.exact_agreement is None

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items()
             if k != "scored" and (v is not None or k in ("cosine", "cosine_min", "sqnr_db"))}
        if self.near_zero:
            d["reference_near_zero"] = True
        return d


@dataclass(frozen=True)
class StageParity:
    """One comparison (torch vs ONNX fp32, or fp32 vs int8) on a data set."""

    data: str
    samples: int
    outputs: tuple[OutputParity, ...]
    int8_kernels: str | None = None  # which int8 kernels computed the candidate (quantization only)

    def worst(self, key: str, fn=min):
        return worst(self.outputs, key, fn)

    def as_dict(self) -> dict:
        d = {"data": self.data, "samples": self.samples, "outputs": [o.as_dict() for o in self.outputs]}
        return d if self.int8_kernels is None else {**d, "int8_kernels": self.int8_kernels}


@dataclass(frozen=True)
class Accuracy:
    """Top-1 accuracy in percent on the labelled validation samples (a class map's: pixel accuracy)."""

    samples: int  # labelled rows scored (an item holding a batch of 8 counts 8; a class map's pixels)
    fp32: float
    int8: float
    torch: float | None = None
    mean_iou: tuple[float, float] | None = None  # a class map's (fp32, int8), percent: scores()
    output: str | None = None  # the output scored (scored()): which one the labels were read against

    @property
    def drop(self) -> float:
        return round(self.fp32 - self.int8, 4)

    def as_dict(self) -> dict:
        d = {"samples": self.samples, "fp32": self.fp32, "int8": self.int8, "drop": self.drop,
             **({} if self.output is None else {"output": self.output}),
             **({} if self.mean_iou is None else {"mean_iou": dict(zip(("fp32", "int8"), self.mean_iou))})}
        return d if self.torch is None else {**d, "torch": self.torch}


@dataclass(frozen=True)
class Gate:
    """One pass/fail threshold. A skipped gate could not be evaluated (its limit, if it has one, kept): it neither
    passes nor fails."""

    name: str
    value: float | None
    op: str  # ">=" | "<=" ("" when skipped)
    limit: float | None
    passed: bool
    skipped: str | None = None  # why it could not be evaluated
    output: str | None = None  # the output judged: a class gate's scored one, else the worst; None: none

    @property
    def label(self) -> str:
        """The name for a report's table, with the output a class gate is measured on."""
        return f"{self.name} on {self.output}" if self.output else self.name

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("skipped", "output")}


def worst(items, key: str, fn=min):
    """The worst value of a metric over outputs (or timings), skipping those where it is undefined
    (None if all are)."""
    values = [v for o in items if (v := getattr(o, key)) is not None]
    return fn(values) if values else None


def worst_on(items, key: str, fn=min) -> tuple[float | None, str | None]:
    """worst() with the output it was measured on: a gate over several outputs names the one that decided it."""
    found = [(v, o.output) for o in items if (v := getattr(o, key)) is not None]
    return fn(found, key=lambda pair: pair[0]) if found else (None, None)


def held_on(name: str, outputs, key: str, spec, unmeasured: str | None = None, fn=min) -> Gate:
    """held() at the worst output's figure, naming that output (as the class gates name theirs)."""
    value, on = worst_on(outputs, key, fn)
    return replace(held(name, value, spec, unmeasured), output=on)


def channel_axes(ndim: int) -> list[int]:
    """The axes whose indices are an output's channels: 1 (rows x classes, NCHW maps: their last axis is W, a column
    of pixels, not a channel), and for 3-D also the last ([N, anchors, fields], beside [N, C, L]); none for a 1-D
    output, which is one channel. quantization.fold_ranges reads them."""
    return [1, 2] if ndim == 3 else [1] if ndim >= 2 else []


def centred_sqnr(ref: list[np.ndarray], cand: list[np.ndarray]) -> float | None:
    """The worst channel's SQNR in dB (channel_axes: the worse axis), on the reference centred on each channel's
    mean over all samples: an offset (a regressor's 300 +- 3) or a larger channel beside it does not count as signal.
    Constant channels (CONSTANT_RMS) carry none and are left out; None when every channel is (or none is float)."""
    if not ref or ref[0].dtype.kind != "f":
        return None
    ref, cand = ([np.asarray(a, dtype=np.float64) for a in arrays] for arrays in (ref, cand))  # float16's underflow
    scale = max(float(np.max(np.abs(a), initial=0.0)) for a in ref) or 1.0
    worst_db = None
    for axis in channel_axes(ref[0].ndim) or [None]:
        if axis is not None and len({a.shape[axis] for a in ref}) > 1:  # a dynamic axis: no channels along it
            continue
        r, c = _rows(ref, axis, scale), _rows(cand, axis, scale)
        mean = sum(x.sum(1) for x in r) / sum(x.shape[1] for x in r)
        signal = sum(((x - mean[:, None]) ** 2).sum(1) for x in r)
        noise = sum(((x - y) ** 2).sum(1) for x, y in zip(r, c))
        live = signal > CONSTANT_RMS ** 2 * sum(x.shape[1] for x in r)  # float rounding of a constant's mean
        if live.any():
            found = float(_db(signal[live], noise[live]).min())
            worst_db = found if worst_db is None else min(worst_db, found)
    return None if worst_db is None else round(worst_db, 3)


def _db(signal, noise):
    """10 log10(signal / noise) within +-200 dB, JSON-safe: no noise (bit-exact) 200; no signal, or NaN or Inf noise
    (a broken candidate, which read as 200 dB) -200, as layers' figures."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        db = np.where(noise == 0, 200.0, 10 * np.log10(np.divide(signal, noise)))
    return np.clip(np.nan_to_num(db, nan=-200.0), -200.0, 200.0)


def _rows(arrays: list[np.ndarray], axis: int | None, scale: float) -> list[np.ndarray]:
    """Each array / scale as channels x values (axis None: one channel)."""
    return [np.moveaxis(a / scale, axis, 0).reshape(a.shape[axis], -1) if axis is not None
            else (a / scale).reshape(1, -1) for a in arrays]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    # scaled first: outputs near float max (a quantized mask path) would overflow the dot products
    a, b = (x / max(float(np.max(np.abs(x), initial=0.0)), 1e-300) for x in (a, b))
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return float(na == nb)  # both zero: the same; only one: nothing in common
    return float(np.dot(a, b) / (na * nb))


def compare(names: list[str], reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]],
            task: str = "other", plain: tuple[str, ...] = (), labels=None,
            shapes: list[tuple] | None = None, floors: dict[str, float] | None = None,
            detected: tuple[str, ...] | dict = ()) -> list[OutputParity]:
    """Per output, sample by sample (samples may differ in shape, e.g. sequence length).

    Cosine is per sample (the whole output of one feed); when a sample holds fewer than two numbers
    (a scalar score) a per-sample cosine is always ±1, so one cosine over all samples is used instead.
    The task picks the extra metrics: top-1/top-5 agreement for a classifier's scored output (scored()) when 2-D
    scores (rows × classes; on an embedding beside it they would be meaningless numbers), nearest-neighbour agreement
    for embeddings.
    A reference that is ~0 gets no cosine or SQNR, it is flagged; so does a sample whose reference is ~0 (a ReLU
    head's all-zero row: one step of int8 noise on it is cosine 0) get no cosine of its own, while SQNR and max_abs
    count it. A small but real sample keeps its cosine: an outlier setting the scale must not hide its loss. The
    mean and the worst (cosine_min) leave out samples under QUIET of the median sample's RMS (the median, so one
    outlier cannot), both the same samples so that the worst is never above the mean; quiet_samples counts them.
    Task auto reaches here only without labels (else it is classify): a scored output reading as class scores
    has its top-1 agreement measured all the same, as it needs no labels (unlabelled_top1_gate judges it).
    Outputs in `plain` (a streaming model's state) are not the task's outputs: cosine and SQNR only. `labels` (the
    validation data's class ids, if any) pick the scored output as accuracy does (scored()).
    `shapes`: each output's shape in the graph (ints fixed, names open; None: not known). A sample whose output's
    length differs where the graph leaves it open is counted (length_mismatches) and left out of the figures.
    `floors`: an output's quiet_floor to use instead of its samples' own (check's on the golden samples: their
    median is not the validation set's, whose quiet samples the manifest's mean left out).
    Task detect: outputs whose rows' count follows the values are matched as detections (detections.py), which
    detection_agreement records; their figures are of the matched rows (in the reference's order) on every sample
    with a pair, those with none left out (unmatched_samples), while length_mismatches still counts the samples
    whose count differs. `detected`: output name -> the Match the run recorded (detection_match; None for a package
    recording none), for check, whose golden samples may all keep one count (a sequence of names: None each).
    """
    from .detections import measure
    from .errors import InputError

    # a detector's rows matched (task detect): agreement recorded, the figures of the matched rows
    recorded = dict(detected) if isinstance(detected, dict) else dict.fromkeys(detected)
    matched = measure(names, reference, candidate, shapes, plain, recorded) if task == "detect" else None
    if matched is not None:
        reference, candidate = matched.reference, matched.candidate
    results, at = [], scored(names, plain, shapes_of(reference[0]) if reference else None,
                             integer_of(reference[0]) if reference else None, fits_labels(labels, reference))
    for k, name in enumerate(names):
        ref = [np.asarray(r[k], dtype=np.float64) for r in reference]
        cand = [np.asarray(c[k], dtype=np.float64) for c in candidate]
        if ref and all(a.size == 0 for a in ref):  # nothing to compare, to give a tolerance, or for an app to read
            raise InputError(_empty(name, ref[0].shape, shapes[k] if shapes else None))
        if matched is not None and k in matched.agreed:
            kept, cand, moved = _matched_samples(matched.agreed[k], ref, cand, matched.examples, k)
        else:
            kept, cand, moved = _same_shapes(name, ref, cand, shapes[k] if shapes else None)
        if ref and not kept:  # no sample kept its length (or a matched detection): nothing to measure but that
            results.append(OutputParity(name, None, None, None, None, None, reference_peak=max(
                float(np.max(np.abs(a), initial=0.0)) for a in ref), scored=k == at, length_mismatches=moved[0],
                length_example=moved[1]))
            continue
        ref = kept
        # class ids from an ArgMax: 0.999 cosine while a third of them differed, so they are compared exactly
        exact = (float(np.mean(np.concatenate([(a == b).ravel() for a, b in zip(ref, cand)])))
                 if np.asarray(reference[0][k]).dtype.kind in "biu" else None)
        peak = max(float(np.max(np.abs(a), initial=0.0)) for a in ref)
        if min(a.size for a in ref) >= 2:
            pairs = [(a, b) for a, b in zip(ref, cand) if float(np.max(np.abs(a), initial=0.0)) >= NEAR_ZERO
                     or peak < NEAR_ZERO]
            rms = [float(np.sqrt(np.mean((a / (peak or 1.0)) ** 2))) for a, _ in pairs]
            floor = (QUIET * float(np.median(rms)) if (floors or {}).get(name) is None
                     else floors[name] / (peak or 1.0))
            cos = [_cosine(a.ravel(), b.ravel()) for (a, b), r in zip(pairs, rms) if r >= floor]
            floor *= peak or 1.0
        else:
            cos, floor = [_cosine(np.concatenate([a.ravel() for a in ref]),
                                  np.concatenate([b.ravel() for b in cand]))], None
        quiet = len(ref) - len(cos) if min(a.size for a in ref) >= 2 else 0
        scale = peak or 1.0  # no overflow near float max
        diffs = [np.abs(a - b) for a, b in zip(ref, cand)]
        noise = sum(float(np.sum((d / scale) ** 2)) for d in diffs)
        signal = sum(float(np.sum((a / scale) ** 2)) for a in ref)
        sqnr = float(_db(signal, noise))
        kind = "other" if name in plain else task
        top1, top5, iou = (_agreement(ref, cand) if kind in ("classify", "auto") and k == at and class_scores(ref[0])
                           else (None,) * 3)
        retrieval = _retrieval_at1(ref, cand) if kind == "embed" else None
        # an integer output's cosine and SQNR fed the gates and the table (a TopK's indices): it is held exactly
        metrics = ((float(np.mean(cos)) if cos else None, min(cos, default=None), round(sqnr, 3))
                   if peak >= NEAR_ZERO and exact is None else (None,) * 3)
        results.append(OutputParity(name, *metrics, max(float(np.max(d, initial=0.0)) for d in diffs),
                                    sum(float(np.sum(d)) for d in diffs) / max(1, sum(a.size for a in ref)),
                                    top1, peak, top5, retrieval, exact, k == at,
                                    centred_sqnr(ref, cand) if peak >= NEAR_ZERO and exact is None
                                    and name not in plain else None, iou,
                                    (quiet or None) if metrics[2] is not None else None, *moved,
                                    floor if metrics[2] is not None else None,
                                    **(_top1_evidence(ref, cand, kind) if top1 is not None else {})))
    return results if matched is None else [_with_detections(o, matched, k) for k, o in enumerate(results)]


def _top1_evidence(ref: list[np.ndarray], cand: list[np.ndarray], kind: str) -> dict:
    """The rows top-1 and top-5 agreement count (check bounds them by the golden samples' flips out of these; task
    auto's significance on unlabelled data, significantly_below), and task auto's top_class_sqnr_db."""
    rows = {"top1_rows": sum(len(class_rows(a)) for a in ref)}
    return {**rows, "top_class_sqnr_db": top_class_sqnr(ref, cand)} if kind == "auto" else rows


def top_class_sqnr(ref: list[np.ndarray], cand: list[np.ndarray]) -> float | None:
    """centred_sqnr over the class channels (axis 1) that are fp32's top class on at least one row: the channels
    whose argmax matters. An embedding's channel that is never top (a ReLU's nearly dead one) says nothing of it."""
    tops = np.unique(np.concatenate([class_rows(a).argmax(1) for a in ref]))
    return centred_sqnr([a[:, tops] for a in ref], [b[:, tops] for b in cand])


def _matched_samples(agreed, ref: list, cand: list, examples: dict[int, str], k: int) -> tuple:
    """A detection output's samples with a matched row (cut to them: measure()), and (how many samples' counts
    differ, the first as said, in their own shapes) as _same_shapes says it; the samples with no pair are left out."""
    kept = [i for i in range(len(ref)) if i in agreed.compared]
    said = (len(agreed.counts_differ), examples[k]) if agreed.counts_differ else (None, None)
    return [ref[i] for i in kept], [cand[i] for i in kept], said


def _with_detections(o: OutputParity, matched, k: int) -> OutputParity:
    """`o` with its detection agreement, the samples its figures left out, and its Match (detections.measure)."""
    if k not in matched.agreed:
        return replace(o, detection_match_untrue=matched.untrue.get(k))
    agreed = matched.agreed[k]
    return replace(o, detection_agreement=agreed.agreement, detection_rows=agreed.rows,
                   unmatched_samples=len(agreed.unmatched) or None, detection_match=matched.matches[k].as_dict(),
                   detection_match_untrue=matched.untrue.get(k))


def _dynamic(declared, ndim: int, axes) -> bool:
    """Whether the graph leaves each of `axes` open (a named dim, NonZero's or NMS's count): a length there follows
    the values. `declared`: the output's shape in the graph (ints fixed; None: not known, taken as open)."""
    if declared is None:
        return True
    return len(declared) == ndim and all(not isinstance(declared[a], int) for a in axes)


def _same_shapes(name: str, ref: list, cand: list, declared) -> tuple[list, list, tuple]:
    """The samples whose output has the same shape in both, and (how many differ, the first as said) or (None, None).
    A length the graph leaves open follows the values (a threshold's nonzero(), NonMaxSuppression's boxes): int8 or
    the runtime moving a score across the threshold is a measured difference. A dim the graph fixes, or the rank,
    differing is edgekit's bug."""
    from .errors import InternalError

    moved = [i for i, (a, b) in enumerate(zip(ref, cand)) if a.shape != b.shape]
    if not moved:
        return ref, cand, (None, None)
    i = moved[0]
    said = f"{ref[i].shape} vs {cand[i].shape} in sample {i}"
    if any(ref[j].ndim != cand[j].ndim or not _dynamic(declared, ref[j].ndim, np.flatnonzero(
            np.array(ref[j].shape) != np.array(cand[j].shape))) for j in moved):
        raise InternalError(f"output {name!r}: reference and candidate shapes differ ({said}) where the graph fixes "
                            f"them ({list(declared) if declared is not None else 'its rank'})")
    kept = [j for j in range(len(ref)) if j not in set(moved)]
    return [ref[j] for j in kept], [cand[j] for j in kept], (len(moved), said)


def _empty(name: str, shape: tuple, declared) -> str:
    """Why an output holding no values on every sample is refused: a length of 0 that the graph leaves open (NMS
    keeping nothing) is this data's, one that it fixes is the model's."""
    zero = [a for a, n in enumerate(shape) if n == 0]
    if declared is not None and _dynamic(declared, len(shape), zero):
        return (f"output {name!r} holds no values on this validation data (shape {list(shape)} on every sample; its "
                f"length follows the values, {list(declared)} in the graph): parity compares outputs value by value, "
                "so give validation data on which it keeps some (a detector's: images with objects), or drop it from "
                "what the model returns")
    return (f"output {name!r} holds no values (shape {list(shape)}): parity compares outputs value by value, so drop "
            "it from what the model returns")


def class_scores(a: np.ndarray) -> bool:
    """Whether a sample's output reads as class scores, for top-1 and top-5: rows x classes, or a class map
    (N, C, H, W, ...: the class axis 1, as torch's cross entropy takes it), more than one class. 3-D ([N, C, L] or
    [N, L, C]) is not told apart."""
    return (a.ndim == 2 or a.ndim >= 4) and a.shape[1] > 1


def class_map(a: np.ndarray) -> bool:
    """Whether an output is a class map scored pixel by pixel: N x C x H x W (and more), more than one pixel; an
    [N, C, 1, 1] classifier's (SqueezeNet's) one score row per image is rows x classes."""
    return a.ndim >= 4 and int(np.prod(a.shape[2:])) > 1


def class_rows(a: np.ndarray) -> np.ndarray:
    """One sample's scores as rows x classes: a class map's pixels are its rows, anything else is read along its
    first axis (what accuracy took of a 1-D or 3-D output before)."""
    if a.ndim >= 4:
        return np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])
    return a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)


def _agreement(ref: list[np.ndarray], cand: list[np.ndarray]) -> tuple[float, float | None, float | None]:
    """(top-1, top-5 when more than 5 classes, mean IoU of the argmax maps for a class map) of the candidate's
    classes against the reference's, row by row (pixel by pixel), counted sample by sample (maps can be large)."""
    classes, top5, maps = ref[0].shape[1], ref[0].shape[1] > 5, class_map(ref[0])
    hits = hits5 = total = 0
    areas = np.zeros((3, classes), np.int64)
    for a, b in zip(ref, cand):
        a, b = class_rows(a), class_rows(b)
        want, got = a.argmax(1), b.argmax(1)
        hits, total = hits + int(np.sum(want == got)), total + len(want)
        if top5:
            hits5 += int(np.sum((_top5(b) == want[:, None]).any(1)))
        if maps:
            areas += _areas(got, want, classes)
    return hits / total, hits5 / total if top5 else None, mean_iou(areas) if maps else None


def _top5(scores: np.ndarray) -> np.ndarray:
    """Each row's 5 top classes, ties in the lower class first (as argmax takes top-1's): int8 scores tie often, and
    numpy's default argsort orders ties by the host's SIMD sort (AVX-512's, AVX2's, none): the top-5 agreement of one
    set of scores was 0.045 on an AVX-512 host, 0.0475 on AVX2 (qemu -cpu EPYC-Milan-v1), 0.05 by class index."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :5]


def _areas(pred: np.ndarray, truth: np.ndarray, classes: int) -> np.ndarray:
    """Per class: pixels both call it (intersection), pixels predicted it, pixels truly it."""
    return np.stack([np.bincount(pred[pred == truth], minlength=classes), np.bincount(pred, minlength=classes),
                     np.bincount(truth, minlength=classes)])


def mean_iou(areas: np.ndarray) -> float:
    """Mean over the classes present (in the prediction or the truth) of intersection over union."""
    inter, union = areas[0], areas[1] + areas[2] - areas[0]
    return float(np.mean(inter[union > 0] / union[union > 0])) if (union > 0).any() else 1.0


RETRIEVAL_TIE = 0.01  # cosine: neighbours this close under the reference are equally good answers


def _retrieval_at1(ref: list[np.ndarray], cand: list[np.ndarray]) -> float | None:
    """Share of rows (embeddings) whose nearest other row by cosine under the candidate is the reference's
    nearest, or one the reference rates within RETRIEVAL_TIE of it (a near-tie is no retrieval error)."""
    def unit_rows(arrays):
        e = np.concatenate([a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1) for a in arrays])
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-30)

    a, b = unit_rows(ref), unit_rows(cand)
    if len(a) < 3 or a.shape != b.shape:
        return None
    sa, sb = a @ a.T, b @ b.T
    np.fill_diagonal(sa, -np.inf)
    np.fill_diagonal(sb, -np.inf)
    return float(np.mean(sa[np.arange(len(a)), sb.argmax(1)] >= sa.max(1) - RETRIEVAL_TIE))


def labels_are_classes(task: str) -> bool:
    """Validation labels are class ids, scored as accuracy, for a classifier only (`auto`: one when the data has
    labels). A regression's targets are values (whole ones, counts, failed as 'label 9 is out of range: the model's
    first output scores 1 classes'); a detector's labels were scored on its first output's argmax ("0.00 -> 0.00"),
    and the accuracy_drop gate passed on that."""
    return task in ("auto", "classify")


def accuracy(outputs: list[list[np.ndarray]], labels: np.ndarray, at: int | None = None, names=None) -> float:
    """Top-1 accuracy in percent of the scored output (`at`; by default scored() on the shapes and the labels, no
    state): one label per output row (of scores), per pixel of a class map (a mask per sample), or per class id (an
    integer output: a model that ends in its ArgMax)."""
    return scores(outputs, labels, at, names)[0]


IGNORE = 255  # a mask's pixels labelled so are left out of a class map's scores (VOC's, Cityscapes' ignore label)


def scores(outputs: list[list[np.ndarray]], labels: np.ndarray, at: int | None = None,
           names=None) -> tuple[float, float | None, int]:
    """(accuracy(), for a class map the mean IoU in percent over the classes in its labels or predictions, the
    labels scored), counted sample by sample. A class map of at most IGNORE classes leaves IGNORE's pixels out.
    `names`: the outputs', which the errors name."""
    from .errors import InputError

    shown = [repr(str(n)) for n in names] if names is not None else [f"#{k}" for k in range(len(outputs[0]))]
    if at is None:
        at = scored(shown, (), shapes_of(outputs[0]), integer_of(outputs[0]),
                    fits_labels(labels, outputs)) if outputs else 0
    judged = [o[at] for o in outputs]
    ids = np.issubdtype(judged[0].dtype, np.integer) if judged else False
    maps = not ids and bool(judged) and class_map(judged[0])
    flat = np.asarray(labels).reshape(-1)
    if judged and (why := misfit(np.shape(labels), judged)):
        raise InputError(f"the scored output {shown[at]}: {why}{_considered(shown, outputs)}")
    classes = max(_classes(o) for o in judged) if judged else 0
    ignore = IGNORE if maps and classes <= IGNORE else None
    kept = flat != ignore if ignore is not None else np.ones(flat.size, bool)
    if not ids and (past := np.flatnonzero(kept & (flat >= classes))).size:
        # one column: a binary classifier's logit (cut at 0) or probability (at 0.5)? edgekit cannot tell which
        binary = (": a single score is a binary classifier's, which edgekit does not threshold (0 for a logit, 0.5 "
                  "for a probability?): return two columns, torch.cat([-z, z], 1), or give --task regress to set the "
                  "labels aside") if classes == 1 else f" (a mask's {IGNORE} marks a pixel to ignore)" if ignore else ""
        called = f", {shown[at]}," if names is not None else ""
        raise InputError(f"label {int(flat[past[0]])} ({_position(int(past[0]), np.shape(labels), judged[0], maps)})"
                         f" is out of range: the scored output{called} has {classes} class scores{binary}")
    if flat.size and not kept.any():
        raise InputError(f"every label is {IGNORE}, the ignore label: no pixel of {shown[at]} to score")
    hits = start = 0
    areas = np.zeros((3, classes), np.int64)
    for o in judged:
        pred = o.reshape(-1).astype(np.int64) if ids else class_rows(o).argmax(1)
        truth, keep, start = flat[start:start + pred.size].astype(np.int64), kept[start:start + pred.size], \
            start + pred.size
        pred, truth = pred[keep], truth[keep]
        hits += int(np.sum(pred == truth))
        if maps:
            areas += _areas(pred, truth, classes)
    scored_labels = int(kept.sum())
    return hits / max(1, scored_labels) * 100.0, mean_iou(areas) * 100.0 if maps else None, scored_labels


def _position(i: int, shape: tuple, judged: np.ndarray, maps: bool) -> str:
    """Where the i-th label (flattened) stands: a class map's sample and pixel, else its row (a sample's row)."""
    if maps:
        grid = judged.shape[2:]
        pixels = int(np.prod(grid))
        return f"sample {i // pixels}, pixel {tuple(int(v) for v in np.unravel_index(i % pixels, grid))}"
    return f"sample {i // shape[-1]}, row {i % shape[-1]}" if len(shape) > 1 else f"row {i}"


def _classes(o: np.ndarray) -> int:
    return o.shape[1] if class_map(o) else o.size // max(1, o.shape[0]) if o.ndim > 1 else o.size


def _considered(names, outputs) -> str:
    """The outputs scored() weighs (`names` as said), best first, with their shapes and types."""
    first = outputs[0]
    said = [f"{names[k]} {list(np.shape(first[k]))} {np.asarray(first[k]).dtype}"
            for k in candidates(names, (), shapes_of(first), integer_of(first))]
    return f"; no output fits the labels (considered, float scores first: {', '.join(said)})" if len(said) > 1 else ""


def misfit(shape: tuple, judged: list[np.ndarray]) -> str | None:
    """Why labels of `shape` do not fit an output (every sample's), or None: labels are one per row (class_rows'; one
    per class id of an integer output), or a mask per sample of a class map's shape (H, W; a sample of several maps
    too)."""
    ids = np.issubdtype(judged[0].dtype, np.integer)
    maps = not ids and class_map(judged[0])
    count = int(np.prod(shape)) if shape else 1
    rows = sum(o.size if ids else o.size // max(1, _classes(o)) for o in judged)
    if maps and (count != rows or len(shape) > 1 and tuple(shape[-(judged[0].ndim - 2):]) != judged[0].shape[2:]):
        grid = [*judged[0].shape[2:]]
        return (f"labels of shape {list(shape)} for class maps of {grid} pixels per sample (its shape "
                f"{list(judged[0].shape)}, class axis 1): give a mask per sample of the map's shape, labels of shape "
                f"[samples, {', '.join(map(str, grid))}]")
    if count != rows:
        grids = " (a mask per sample scores a class map, an output of shape (N, C, H, W))" if len(shape) > 2 else ""
        return (f"{count} labels for {rows} predicted {'class ids' if ids else 'rows'}: give one label per row "
                f"(labels of shape (samples, rows) when a sample holds several rows){grids}")
    return None


def gate(name: str, value, op: str, limit, unmeasured: str | None = None) -> Gate:
    """`value` against `limit`; with `unmeasured` (why there is no value), a None value makes a skipped gate."""
    if value is None and unmeasured:  # the limit kept: a consumer sees a budget was set and not judged
        return Gate(name, None, op, limit, True, unmeasured)
    passed = value is not None and (value >= limit if op == ">=" else value <= limit)
    return Gate(name, value, op, limit, bool(passed))


CENTRED_GATE = "quant_centred_sqnr_db"  # task detect | regress (VALUE_TASKS): the worst channel's centred_sqnr_db
DETECTION_GATE = "quant_detection_agreement"  # task detect: the worst detection_agreement (detections.py)
# each parity gate (also at another batch size: NAME_at_N=4) and the profile's ParitySpec field it is held to
PARITY_LIMITS = {"export_cosine": (">=", "export_cosine_min"), "export_scaled_max_abs": ("<=", "export_max_abs"),
                 "export_integer_max_abs": ("<=", "export_max_abs"), "quant_cosine": (">=", "quant_cosine_min"),
                 "quant_cosine_worst": (">=", "quant_cosine_worst_min"),
                 "quant_sqnr_db": (">=", "quant_sqnr_min_db"), CENTRED_GATE: (">=", "centred_sqnr_min_db"),
                 "top1_agreement": (">=", "top1_agreement_min"),
                 "top5_agreement": (">=", "top5_agreement_min"), "retrieval_at1": (">=", "retrieval_at1_min"),
                 DETECTION_GATE: (">=", "detection_agreement_min"),
                 "integer_output_agreement": (">=", "top1_agreement_min"), "accuracy_drop": ("<=", "accuracy_drop_max")}


# every gate name edgekit writes (here and in verdict.py): NAME, or NAME_at_DIM=SIZE for another size of an axis
GATE_NAME = re.compile(r"(?:%s|quant_reference_signal|export_reference_signal|latency_p50_ms|size_mb|[a-z]+_coverage"
                       r"|[a-z]+_verdict|int8_quantized|validation_distinct_samples|(?:export|quant)_length_mismatches)"
                       r"|(?:export_cosine|quant_cosine|export_integer_max_abs|integer_output_agreement|runs)_at_.+"
                       % "|".join(PARITY_LIMITS))


NOTHING_QUANTIZED_GATE = "int8_quantized"  # 0: model.int8.onnx is the float model (no QDQ or integer op)
DISTINCT_GATE = "validation_distinct_samples"  # written when failed: validation data is one sample over and over


def trial_gate(name: str) -> bool:
    """A gate quantization_gates writes: what each --auto trial is judged by (not export's, a size's, a budget's)."""
    return name in (NOTHING_QUANTIZED_GATE, "quant_reference_signal", "quant_length_mismatches") or (
        name in PARITY_LIMITS and not name.startswith("export_"))


EMULATED = "emulated_"  # a quantization gate held on an emulated CPU's int8 figures (export --emulate x86_64)


def written_gate(name: str) -> bool:
    """Whether edgekit writes a gate of this name: GATE_NAME, or EMULATED + a quantization gate (trial_gate)."""
    base = name.removeprefix(EMULATED)
    return bool(GATE_NAME.fullmatch(name) or (base != name and trial_gate(base)))


def limit_of(name: str) -> tuple[str, str] | None:
    """(op, ParitySpec field) of a parity gate, also at another size (quant_cosine_at_N=4) or on an emulated CPU
    (emulated_quant_cosine); None for others."""
    return PARITY_LIMITS.get(name.removeprefix(EMULATED).split("_at_")[0])


def held(name: str, value, spec, unmeasured: str | None = None) -> Gate:
    """A parity gate at the limit the profile's ParitySpec sets for it."""
    op, field = limit_of(name)
    return gate(name, value, op, getattr(spec, field), unmeasured)


def skipped(name: str, why: str) -> Gate:
    return Gate(name, None, "", None, True, why)


def signal_gates(name: str, outputs) -> list[Gate]:
    """Fails when a reference output is ~0: parity against no signal proves nothing."""
    if any(o.near_zero for o in outputs):
        peak, on = worst_on(outputs, "reference_peak")
        return [replace(gate(name, peak, ">=", NEAR_ZERO), output=on)]
    return []


def length_gates(name: str, outputs) -> list[Gate]:
    """Fails when an output's length (a dim the graph leaves open: NonZero's, NMS's count) differs from the
    reference's on some sample (length_mismatches, at most 0): a model keeping a different number of detections is
    a measured difference, which the figures of the samples that agree do not show. Written only then. int8's
    detections, matched (detection_agreement), are held by quant_detection_agreement instead."""
    value, on = worst_on(outputs, "length_mismatches", max)
    return [replace(gate(name, value, "<=", 0), output=on)] if value else []


def exact_only(outputs) -> str | None:
    """Why cosine and SQNR gates are not measured: every output is integer (class ids, masks), held exactly."""
    return None if any(o.exact_agreement is None for o in outputs) else "integer outputs only: compared exactly"


def quantization_gates(outputs, accuracy_drop: float | None, spec, task: str, quantized: bool = True,
                       samples: int | None = None) -> list[Gate]:
    """The target's fp32-vs-int8 thresholds (a ParitySpec) applied to per-output parity, with the task's metrics.
    Cosine (the mean over samples, and the worst sample's: a mean of 0.994 hid one at 0.64) and SQNR hold every
    output; top-1, top-5 and accuracy the scored one, which their gates name.
    `quantized`: the int8 model quantizes anything; else it fails int8_quantized (written only then, as runs_at_):
    --auto kept every node float, 200 dB, and CI went green on the float model shipped as int8.
    `samples`: how many the figures are of (task auto's top-1 is failed on FEW_SAMPLES or more only)."""
    unmeasured = exact_only(outputs)
    # a detector's rows matched: the share of detections both find holds them, not a count that one box moves
    counted = [o for o in outputs if o.detection_agreement is None]
    gates = [*([] if quantized else [Gate(NOTHING_QUANTIZED_GATE, 0, ">=", 1, False)]),
             *signal_gates("quant_reference_signal", outputs), *length_gates("quant_length_mismatches", counted),
             *([held_on(DETECTION_GATE, outputs, "detection_agreement", spec)] if len(counted) < len(outputs) else []),
             held_on("quant_cosine", outputs, "cosine", spec, unmeasured),
             held_on("quant_cosine_worst", outputs, "cosine_min", spec, unmeasured),
             held_on("quant_sqnr_db", outputs, "sqnr_db", spec, unmeasured)]
    judged = next((o for o in outputs if o.scored), None)
    on = judged and judged.output
    if task == "classify":
        gates.append(replace(held("top1_agreement", judged and judged.top1_agreement, spec,
                                  f"the output scored, {on!r}, is not class scores (rows x classes, or a map of N x C "
                                  "x H x W)"), output=on))
        if judged and judged.top5_agreement is not None:
            gates.append(replace(held("top5_agreement", judged.top5_agreement, spec), output=on))
    elif task == "embed":
        gates.append(held_on("retrieval_at1", outputs, "retrieval_at1", spec,
                             "fewer than 3 embeddings in the validation data"))
    elif task in VALUE_TASKS:  # a channel's values are read: a small one beside large ones, or an offset's spread
        gates.append(held_on(CENTRED_GATE, outputs, "centred_sqnr_db", spec,
                             unmeasured or "no float output channel varies on the validation data"))
    elif task == "auto":
        gates.append(unlabelled_top1_gate(judged, spec, samples))
    elif task == "other":
        gates.append(skipped("top1_agreement", NO_CLASS_SCORES))
    if worst(outputs, "exact_agreement") is not None:  # held to what a classifier's top-1 is
        gates.append(held_on("integer_output_agreement", outputs, "exact_agreement", spec))
    drop = held("accuracy_drop", accuracy_drop, spec, "no labels in the validation data" if labels_are_classes(task)
                else "a regression's targets are no class ids" if task == "regress"
                else f"task {task}: accuracy scores a classifier's labels only" if task != "other"
                else "no labels in the validation data (task other scores none: accuracy is a classifier's)")
    gates.append(drop if accuracy_drop is None else replace(drop, output=on))
    return gates


NO_CLASS_SCORES = 'no classifier score output (set task = "classify" if it is one)'
UNLABELLED = "task auto with no labels"  # the start of unlabelled_top1_gate's reason for not failing


FEW_SAMPLES = 8  # data smaller than this is warned of (verdict.warnings): its figures do not stand for real inputs


def unlabelled_top1_gate(judged: OutputParity | None, spec, samples: int | None = None) -> Gate:
    """Task auto on unlabelled data (production data mostly is), judged as other: an output reading as class scores
    (rows x classes) has int8's top class held to fp32's all the same, which needs no labels. A 10-class head whose
    classes int8 merged (top-1 agreement 0.16, a channel's centred SQNR -0.6 dB) passed at cosine 1.0000. Failed only
    on evidence that it is a loss: below the bar beyond chance (significantly_below: one flip of 16 near-tied rows of
    an untrained net is not), with a top-class channel that lost its spread (top_class_sqnr_db under the centred
    bar: an embedding's or a value's argmax flips on near-ties harmlessly while each channel keeps its spread), on
    at least FEW_SAMPLES samples (an untrained 1000-class net's 3 flips of 6 near-tied random images); else skipped
    with the figures, and warned of (verdict.unlabelled_top1_warning). At or above the bar it is skipped as under
    task other (an embedding's top-1 is no figure to show: unlabelled_shown)."""
    top1 = judged.top1_agreement if judged else None
    if top1 is None or top1 >= spec.top1_agreement_min:
        return skipped("top1_agreement", NO_CLASS_SCORES)
    if (why := no_loss_shown(judged, spec, samples)) is None:
        return replace(held("top1_agreement", top1, spec), output=judged.output)
    return replace(held("top1_agreement", None, spec, f"{UNLABELLED}: int8 keeps fp32's top class of {judged.output!r} "
                        f"on {top1:.3f} of its rows, but {why}; --task classify judges it as a classifier"),
                   output=judged.output)


def no_loss_shown(judged: OutputParity, spec, samples: int | None) -> str | None:
    """Why a top-1 agreement under the bar on unlabelled data is no evidence of a loss (unlabelled_top1_gate), or
    None where it is."""
    top1, floor, rows = judged.top1_agreement, spec.centred_sqnr_min_db, judged.top1_rows
    centred = judged.centred_sqnr_db if judged.top_class_sqnr_db is None else judged.top_class_sqnr_db
    if not significantly_below(top1, rows, spec.top1_agreement_min):
        return f"on {rows} rows its 95% upper bound is {upper_bound(top1, rows):.3f}, not below the bar"
    if samples is not None and samples < FEW_SAMPLES:
        return f"it is of {samples} sample(s), fewer than {FEW_SAMPLES}"
    if centred is not None and centred >= floor:
        return f"each top-class channel keeps its spread (centred SQNR {centred:.1f} dB >= {floor:g})"
    return None


CONFIDENCE_Z = 1.96  # two-sided 95%


def upper_bound(share: float, n: int | None) -> float:
    """Wilson's 95% upper bound on a share measured on n rows (1.0 when n is not known)."""
    if not n:
        return 1.0
    z2 = CONFIDENCE_Z ** 2
    centre = share + z2 / (2 * n)
    spread = CONFIDENCE_Z * float(np.sqrt(share * (1 - share) / n + z2 / (4 * n * n)))
    return min(1.0, (centre + spread) / (1 + z2 / n))


def significantly_below(share: float, n: int | None, bar: float) -> bool:
    """Whether a share measured on n rows is below `bar` beyond chance (its upper_bound below it): 15 of 16 rows
    (0.9375, an untrained net's one near-tie flipped) is not below 0.95; 8 of 50 is."""
    return upper_bound(share, n) < bar


def unlabelled_shown(stage: StageParity, spec, task: str) -> StageParity:
    """A task-auto stage on unlabelled data with each output's top-1 (and top-5) agreement at or above the bar left
    out, as under task other: an embedding read as class scores shows no made-up top-1; below the bar it is shown,
    and unlabelled_top1_gate judges it. Another task's stage as it is (classify records its top1_rows too)."""
    if task != "auto":
        return stage
    keep = [o if o.top1_rows is None or o.top1_agreement < spec.top1_agreement_min else
            replace(o, top1_agreement=None, top5_agreement=None, iou_agreement=None, top1_rows=None,
                    top_class_sqnr_db=None)
            for o in stage.outputs]
    return replace(stage, outputs=tuple(keep))


def scaled_max_abs(o: OutputParity) -> float:
    """An output's export error for export_max_abs: absolute where its peak is within 1, relative to the peak beyond
    (a depth map in mm peaking at 5,000 is float32-exact at 3e-7 relative, 0.0013 absolute). Integer outputs
    (class ids) stay absolute: a moved id is an error however large the ids."""
    if o.max_abs is None or o.exact_agreement is not None:
        return o.max_abs
    return o.max_abs / max(1.0, o.reference_peak)


def export_gates(export: StageParity | None, spec) -> list[Gate]:
    if export is None:  # an .onnx source: nothing was exported
        return []
    return [*signal_gates("export_reference_signal", export.outputs),
            *length_gates("export_length_mismatches", export.outputs),
            held_on("export_cosine", export.outputs, "cosine_min", spec, exact_only(export.outputs)),
            held_on("export_scaled_max_abs", [replace(o, max_abs=scaled_max_abs(o)) for o in export.outputs],
                    "max_abs", spec, fn=max)]
