"""Detections matched between a reference and a candidate model (task detect): "does int8 find the same objects?".

A detector's outputs whose length follows the values (in-graph NonMaxSuppression, a nonzero() score cut) hold one row
per detection, in outputs that share that length: boxes [K, 4], scores [K], labels [K] (torchvision's), rows [K, 6]
(x1, y1, x2, y2, score, class: YOLO's), NMS's selected_indices [K, 3]. Compared position by position, one box crossing
the score cut on one image failed the model, and two near-tie boxes swapping places counted as errors; matched, the
figure is the share of detections both find (an F1).
Assumptions: a box is 4 corner coordinates (x1, y1, x2, y2), read as centre-size (cx, cy, w, h) when a reference row
has x2 < x1 or y2 < y1; a row of 5 or more floats starts with its box, then its score, then (6 exactly) its class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IOU_MATCH = 0.5  # a candidate box is the reference's detection at this IoU or more (COCO's AP50, VOC's bar)


@dataclass
class Rows:
    """One output's samples as rows x fields (fields 1 when the output has no field axis)."""

    k: int  # the output's index
    axis: int  # the axis its rows run along
    fields: int | None  # the size of its last axis when that is not the rows' (4 for boxes), else None
    integer: bool
    ref: list[np.ndarray]
    cand: list[np.ndarray]


def row_axis(declared, ref: list[np.ndarray], cand: list[np.ndarray], known: bool = False) -> int | None:
    """The axis a detector's rows run along: the last one the graph leaves open (`declared`: ints fixed, None: not
    known) whose length varies, over the reference's samples or against the candidate's; every other axis but the
    last is 1 (one image's detections). None when none varies: nothing follows the values there (a batch axis
    named N is open too: a classifier's [N, 10] under --task detect was read as 1 box a sample). `known`: the run
    matched this output's rows (check, whose few golden samples may all keep one count): the graph's one open axis."""
    ndim = ref[0].ndim
    if not ndim or declared is not None and len(declared) != ndim or any(a.ndim != ndim for a in (*ref, *cand)):
        return None
    lengths = {a.shape for a in (*ref, *cand)}
    open_axes = [a for a in range(ndim) if declared is None or not isinstance(declared[a], int)]
    varying = [a for a in open_axes if len({s[a] for s in lengths}) > 1]
    if not varying and not (known and declared is not None and len(open_axes) == 1):
        return None
    axis = (varying or open_axes)[-1]
    if any(s[a] != 1 for s in lengths for a in range(ndim) if a not in (axis, ndim - 1)) or any(
            np.delete(r.shape, axis).tolist() != np.delete(c.shape, axis).tolist() for r, c in zip(ref, cand)):
        return None  # not one detection a row; or another axis differs, which compare() calls edgekit's bug
    return axis


def _as_rows(a: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(a, axis, 0).reshape(a.shape[axis], int(np.prod(np.delete(a.shape, axis))))


def groups(names, reference, candidate, shapes, plain=(), known=()) -> list[list[Rows]]:
    """The outputs that share one length per sample, each as Rows: a detector's outputs of one detection a row.
    `known`: the outputs whose rows the run matched (row_axis)."""
    found: dict[tuple, list[Rows]] = {}
    for k, name in enumerate(names):
        ref, cand = [np.asarray(r[k]) for r in reference], [np.asarray(c[k]) for c in candidate]
        if name in plain or not ref:
            continue
        axis = row_axis(shapes[k] if shapes else None, ref, cand, name in known)
        if axis is None:
            continue
        ndim = ref[0].ndim
        key = (tuple(a.shape[axis] for a in ref), tuple(a.shape[axis] for a in cand))
        found.setdefault(key, []).append(Rows(k, axis, ref[0].shape[-1] if axis != ndim - 1 else None,
                                              ref[0].dtype.kind in "biu", [_as_rows(a, axis) for a in ref],
                                              [_as_rows(a, axis) for a in cand]))
    return list(found.values())


@dataclass
class Roles:
    """What a group's outputs say of a detection: its box (output, first column), its score, and what must be equal
    for a match (labels, class ids, NMS's index rows)."""

    box: Rows | None = None
    score: tuple[Rows, int] | None = None
    equal: list[tuple[Rows, slice]] | None = None
    centre_size: bool = False


def roles(group: list[Rows]) -> Roles:
    """Which output is the box (a float [K, 4], or a float row of 5 or more: box, score, class), the score (a float
    [K], else a row's 5th column) and what must be equal (integer outputs, a 6-column row's class); see the module."""
    found = Roles(equal=[])
    for rows in group:
        if rows.integer:
            found.equal.append((rows, slice(None)))
        elif rows.fields is not None and rows.fields >= 4 and found.box is None:
            found.box = rows
            if rows.fields >= 5 and found.score is None:
                found.score = (rows, 4)
            if rows.fields == 6:
                found.equal.append((rows, slice(5, 6)))
        elif rows.fields is None and found.score is None:
            found.score = (rows, 0)
    if found.box is not None:
        found.centre_size = any(bool(np.any((r[:, 2] < r[:, 0]) | (r[:, 3] < r[:, 1]))) for r in found.box.ref)
    return found


def corners(boxes: np.ndarray, centre_size: bool) -> np.ndarray:
    """Boxes as x1, y1, x2, y2 (from cx, cy, w, h when `centre_size`)."""
    boxes = np.asarray(boxes[:, :4], np.float64)
    if not centre_size:
        return boxes
    half = boxes[:, 2:4] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], 1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each corner box of `a` with each of `b` (rows x columns); an empty box's IoU is 0."""
    low, high = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=2)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)


def match_sample(found: Roles, i: int) -> list[tuple[int, int]]:
    """Sample i's reference rows matched one-to-one to candidate rows, greedily by descending reference score (in
    order without one): each takes the unmatched candidate row of highest IoU at IOU_MATCH or more (the first
    compatible one without boxes) whose integer fields (labels, indices) are equal."""
    some = (found.box or found.equal[0][0])
    n, m = len(some.ref[i]), len(some.cand[i])
    fits = np.ones((n, m), bool)
    for rows, cols in found.equal:
        a, b = rows.ref[i][:, cols], rows.cand[i][:, cols]
        fits &= (np.round(a)[:, None, :] == np.round(b)[None, :, :]).all(2)
    closeness = np.zeros((n, m))
    if found.box is not None:
        closeness = iou(corners(found.box.ref[i], found.centre_size), corners(found.box.cand[i], found.centre_size))
        fits &= closeness >= IOU_MATCH
    order = (np.argsort(-found.score[0].ref[i][:, found.score[1]], kind="stable") if found.score is not None
             else range(n))
    taken, pairs = np.zeros(m, bool), []
    for r in order:
        free = np.flatnonzero(fits[r] & ~taken)
        if free.size:
            c = int(free[np.argmax(closeness[r, free])])
            taken[c] = True
            pairs.append((int(r), c))
    return pairs


@dataclass(frozen=True)
class Agreement:
    outputs: tuple[int, ...]  # the group's outputs
    agreement: float
    rows: int  # reference rows + candidate rows over all samples
    # sample -> (reference rows, candidate rows) matched, in the reference's order: where both keep as many rows, the
    # figures are of the same detections (NMS sorts by score: one box lost shifted every later one, a 100 px error)
    compared: dict


def agreement(group: list[Rows]) -> Agreement | None:
    """A group's detection agreement (None: no box and no integer output to match by, e.g. a bare score cut)."""
    found = roles(group)
    if found.box is None and not found.equal:
        return None
    some = found.box or found.equal[0][0]
    matched = rows = 0
    compared = {}
    for i in range(len(some.ref)):
        pairs = sorted(match_sample(found, i))
        n, m = len(some.ref[i]), len(some.cand[i])
        matched, rows = matched + len(pairs), rows + n + m
        if n == m and pairs and (len(pairs) < n or any(r != c for r, c in pairs)):
            compared[i] = [r for r, _ in pairs], [c for _, c in pairs]
    return Agreement(tuple(r.k for r in group), 2 * matched / rows if rows else 1.0, rows, compared)


def measure(names, reference, candidate, shapes, plain=(), known=()) -> tuple[dict[int, Agreement], list, list]:
    """Each detection output's Agreement (by output index), and the reference and candidate with each sample where
    both keep as many rows cut to its matched rows, in the reference's order (Agreement.compared): the figures
    compare the same detections (near-tie boxes swapping places are none apart), and the agreement counts the rest."""
    found, reference, candidate = {}, [list(r) for r in reference], [list(c) for c in candidate]
    for group in groups(names, reference, candidate, shapes, plain, known):
        if (agreed := agreement(group)) is None:
            continue
        for rows in group:
            found[rows.k] = agreed
            for i, (kept, taken) in agreed.compared.items():
                reference[i][rows.k] = np.take(np.asarray(reference[i][rows.k]), kept, axis=rows.axis)
                candidate[i][rows.k] = np.take(np.asarray(candidate[i][rows.k]), taken, axis=rows.axis)
    return found, reference, candidate
