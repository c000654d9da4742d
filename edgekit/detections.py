"""Detections matched between a reference and a candidate model (task detect): "does int8 find the same objects?".

A detector's outputs whose length follows the values (in-graph NonMaxSuppression, a nonzero() score cut) hold one row
per detection, in outputs that share that length: boxes [K, 4], scores [K], labels [K] (torchvision's), rows [K, 6]
(x1, y1, x2, y2, score, class: YOLO's), NMS's selected_indices [K, 3]; masks [K, 1, H, W] and keypoints [K, 17, 3]
ride along (reordered with their boxes, never matched by). Compared position by position, one box crossing the score
cut on one image failed the model, and two near-tie boxes swapping places counted as errors; matched, the figure is
the share of detections both find (an F1), and the figures are of the matched rows.
Assumptions: a box is 4 corner coordinates (x1, y1, x2, y2), read as centre-size (cx, cy, w, h) when most reference
rows have x2 < x1 or y2 < y1; a row of 5 or more starts with its box, then (floats) its score, then (6 exactly) its
class; integer boxes are boxes too (IoU, not equality); a float [K] of whole numbers beside another float [K] is
labels, not the score. An output of more than MAX_DETECTION_ROWS rows on a sample is a raw head, not detections.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IOU_MATCH = 0.5  # a candidate box is the reference's detection at this IoU or more (COCO's AP50, VOC's bar)
# rows per sample above which an output is not matched as detections (compared as before): a final detector keeps
# 100-300, a raw dense head [1, 25200, 85] would need n x m IoUs (5 GB at 25,200 rows)
MAX_DETECTION_ROWS = 2000
ROLES = ("box", "score", "equal", "carried")  # what an output is in its group (Match.role)


@dataclass
class Rows:
    """One output's samples as rows x fields (fields 1 when the output has no field axis)."""

    k: int  # the output's index
    axis: int  # the axis its rows run along
    fields: int | None  # the size of its last axis when that is not the rows' (4 for boxes), else None
    integer: bool
    ref: list[np.ndarray]
    cand: list[np.ndarray]
    carried: bool = False  # more than one row of fields per detection (masks, keypoints): reordered, not matched by


def row_axis(declared, ref: list[np.ndarray], cand: list[np.ndarray], matched_before: bool = False) -> int | None:
    """The axis a detector's rows run along: the last one the graph leaves open (`declared`: ints fixed, None: not
    known) whose length varies, over the reference's samples or against the candidate's; every other axis but the
    last is 1 (one image's detections). None when none varies: nothing follows the values there (a batch axis
    named N is open too: a classifier's [N, 10] under --task detect was read as 1 box a sample). `matched_before`:
    the run matched this output's rows (check of a package recording no Match, whose golden samples may all keep one
    count): the graph's last open axis."""
    ndim = ref[0].ndim
    if not ndim or declared is not None and len(declared) != ndim or any(a.ndim != ndim for a in (*ref, *cand)):
        return None
    lengths = {a.shape for a in (*ref, *cand)}
    open_axes = [a for a in range(ndim) if declared is None or not isinstance(declared[a], int)]
    varying = [a for a in open_axes if len({s[a] for s in lengths}) > 1]
    if not varying and not (matched_before and declared is not None and open_axes):
        return None
    axis = (varying or open_axes)[-1]
    if any(s[a] != 1 for s in lengths for a in range(ndim) if a not in (axis, ndim - 1)) or not _alike(ref, cand, axis):
        return None  # not one detection a row; or another axis differs, which compare() calls edgekit's bug
    return axis


def carried_axis(declared, ref: list[np.ndarray], cand: list[np.ndarray]) -> int | None:
    """The one axis (open in the graph) along which an output's length varies while every other axis keeps one size
    on every sample (masks [K, 1, H, W], keypoints [K, 17, 3]): rows that ride with a detection's. None otherwise."""
    ndim = ref[0].ndim
    if not ndim or declared is not None and len(declared) != ndim or any(a.ndim != ndim for a in (*ref, *cand)):
        return None
    lengths = {a.shape for a in (*ref, *cand)}
    varying = [a for a in range(ndim) if len({s[a] for s in lengths}) > 1]
    if len(varying) != 1 or declared is not None and isinstance(declared[varying[0]], int):
        return None
    return varying[0]


def _alike(ref: list[np.ndarray], cand: list[np.ndarray], axis: int) -> bool:
    """Whether each sample's reference and candidate differ in `axis` alone."""
    return all(np.delete(r.shape, axis).tolist() == np.delete(c.shape, axis).tolist() for r, c in zip(ref, cand))


def _as_rows(a: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(a, axis, 0).reshape(a.shape[axis], int(np.prod(np.delete(a.shape, axis))))


def _rows(k: int, axis: int, ref: list[np.ndarray], cand: list[np.ndarray], carried: bool = False) -> Rows:
    ndim = ref[0].ndim
    return Rows(k, axis, ref[0].shape[-1] if axis != ndim - 1 and not carried else None,
                ref[0].dtype.kind in "biu", [_as_rows(a, axis) for a in ref], [_as_rows(a, axis) for a in cand],
                carried)


def _too_many(ref: list[np.ndarray], cand: list[np.ndarray], axis: int) -> bool:
    return any(a.shape[axis] > MAX_DETECTION_ROWS for a in (*ref, *cand))


def groups(names, reference, candidate, shapes, plain=(), recorded=None) -> list[list[Rows]]:
    """The outputs that share one length per sample, each as Rows: a detector's outputs of one detection a row, and
    the outputs riding along (carried_axis). `recorded`: output name -> its Match as the run recorded it (check
    groups as the run did), or None (a package recording none: row_axis's guess for an output the run matched)."""
    recorded = recorded or {}
    by_count: dict[tuple, list[Rows]] = {}
    riders: dict[tuple, list[Rows]] = {}
    for k, name in enumerate(names):
        ref, cand = [np.asarray(r[k]) for r in reference], [np.asarray(c[k]) for c in candidate]
        if name in plain or not ref:
            continue
        declared = shapes[k] if shapes else None
        if (match := valid_match(recorded.get(name), ref, cand)) is not None:
            if not _too_many(ref, cand, match.axis):  # carried as its shape says (the role is checked: measure)
                rows = _rows(k, match.axis, ref, cand, not _whole_rows(ref, match.axis))
                by_count.setdefault(("recorded", match.group), []).append(rows)
            continue
        axis = row_axis(declared, ref, cand, name in recorded)
        carried = axis is None and (axis := carried_axis(declared, ref, cand)) is not None
        if axis is None or _too_many(ref, cand, axis):
            continue
        key = (tuple(a.shape[axis] for a in ref), tuple(a.shape[axis] for a in cand))
        (riders if carried else by_count).setdefault(key, []).append(_rows(k, axis, ref, cand, carried))
    for key, rows in riders.items():
        if key in by_count:
            by_count[key] = sorted(by_count[key] + rows, key=lambda r: r.k)
    return list(by_count.values())


@dataclass(frozen=True)
class Match:
    """What check needs to match an output's rows as the run did (recorded once, in its parity output)."""

    group: int  # outputs of one group share their rows' count, one detection a row
    axis: int  # the axis its rows run along
    role: str  # ROLES: box (and, in a row of 5 or more, score and class), score, equal (labels, indices), carried
    centre_size: bool = False  # box: read as cx, cy, w, h (most reference rows inverted)

    def as_dict(self) -> dict:
        return {"group": self.group, "axis": self.axis, "role": self.role,
                **({"centre_size": self.centre_size} if self.role == "box" else {})}


def _whole_rows(ref: list[np.ndarray], axis: int) -> bool:
    """One detection a row along `axis` (every other axis but the last is 1), as row_axis takes it: else rows that
    ride along (carried_axis: masks, keypoints)."""
    return all(a.shape[b] == 1 for a in ref for b in range(a.ndim) if b not in (axis, a.ndim - 1))


def valid_match(said, ref: list[np.ndarray], cand: list[np.ndarray]) -> Match | None:
    """A recorded Match (a dict from a manifest: anyone's) that fits these arrays, else None."""
    if not isinstance(said, dict) or not ref:
        return None
    group, axis, role, centre = said.get("group"), said.get("axis"), said.get("role"), said.get("centre_size", False)
    ndim = ref[0].ndim
    if type(group) is not int or type(axis) is not int or role not in ROLES or type(centre) is not bool \
            or not 0 <= axis < ndim or any(a.ndim != ndim for a in (*ref, *cand)) or not _alike(ref, cand, axis):
        return None
    fields = ref[0].shape[-1] if axis != ndim - 1 else None
    whole_rows = _whole_rows(ref, axis)
    if role != "carried" and not whole_rows or role == "box" and (fields is None or fields < 4) \
            or role == "score" and (fields is not None or ref[0].dtype.kind in "biu"):
        return None
    return Match(group, axis, role, centre)


@dataclass
class Roles:
    """What a group's outputs say of a detection: its box (output, first 4 columns), its score, and what must be
    equal for a match (labels, class ids, NMS's index rows)."""

    box: Rows | None = None
    score: tuple[Rows, int] | None = None
    equal: list[tuple[Rows, slice]] = field(default_factory=list)
    centre_size: bool = False

    def role_of(self, rows: Rows) -> str:
        if rows is self.box:
            return "box"
        if self.score is not None and rows is self.score[0]:
            return "score"
        return "equal" if any(rows is r for r, _ in self.equal) else "carried"


def _whole(rows: Rows) -> bool:
    """Every value a whole number on every sample (labels.float()), and some value to say so."""
    values = [a for a in (*rows.ref, *rows.cand) if a.size]
    return bool(values) and all(bool(np.all(np.mod(a, 1) == 0)) for a in values)


def _take_box(found: Roles, rows: Rows) -> None:
    """`rows` as the group's box: a float row's 5th column its score, a 6th its class; an integer row's rest equal."""
    found.box = rows
    if rows.integer:
        if rows.fields > 4:
            found.equal.append((rows, slice(4, None)))
        return
    if rows.fields >= 5 and found.score is None:
        found.score = (rows, 4)
    if rows.fields == 6:
        found.equal.append((rows, slice(5, 6)))


def roles(group: list[Rows], recorded: dict[int, Match] | None = None) -> Roles:
    """Which output is the box (a [K, 4], or a row of 5 or more: box, score, class), the score (a float [K] not of
    whole numbers beside another, else a row's 5th column) and what must be equal (other integer outputs, float
    labels, a 6-column row's class); see the module. `recorded`: output index -> the run's Match, taken as said."""
    if recorded and all(rows.k in recorded for rows in group):
        return _recorded_roles(group, recorded)
    found = Roles()
    singles = [rows for rows in group if rows.fields is None and not rows.integer and not rows.carried]
    labels = [rows for rows in singles if len(singles) > 1 and _whole(rows)]
    for rows in group:
        if rows.carried:
            continue
        if rows.fields is not None and rows.fields >= 4 and found.box is None:
            _take_box(found, rows)
        elif rows.integer or any(rows is r for r in labels):
            found.equal.append((rows, slice(None)))
        elif rows.fields is None and found.score is None:
            found.score = (rows, 0)
    if found.box is not None:
        found.centre_size = mostly_inverted(found.box.ref)
    return found


def _recorded_roles(group: list[Rows], recorded: dict[int, Match]) -> Roles:
    found = Roles()
    for rows in group:
        match = recorded[rows.k]
        if match.role == "box" and found.box is None:
            _take_box(found, rows)
            found.centre_size = match.centre_size
        elif match.role == "score" and found.score is None:
            found.score = (rows, 0)
        elif match.role == "equal":
            found.equal.append((rows, slice(None)))
    return found


def mostly_inverted(boxes: list[np.ndarray]) -> bool:
    """Whether most reference rows have x2 < x1 or y2 < y1 (cx, cy, w, h: one unclipped box is not a format)."""
    inverted = sum(int(np.sum((r[:, 2] < r[:, 0]) | (r[:, 3] < r[:, 1]))) for r in boxes)
    return 2 * inverted > sum(len(r) for r in boxes)


def corners(boxes: np.ndarray, centre_size: bool) -> np.ndarray:
    """Boxes as x1, y1, x2, y2 (from cx, cy, w, h when `centre_size`)."""
    boxes = np.asarray(boxes[:, :4], np.float64)
    if not centre_size:
        return boxes
    half = boxes[:, 2:4] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], 1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each corner box of `a` with each of `b` (rows x columns); an empty box's IoU is 0, but 1 with the very
    same box (an unclipped degenerate box both models give is one detection). A few n x m arrays at most (no
    n x m x 2 temporaries: MAX_DETECTION_ROWS squared is 32 MB each)."""
    inter = _overlap(a[:, 0], a[:, 2], b[:, 0], b[:, 2])
    inter *= _overlap(a[:, 1], a[:, 3], b[:, 1], b[:, 3])
    union = _area(a)[:, None] + _area(b)[None, :]
    union -= inter
    found = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    if (empty := union <= 0).any():
        for column in range(4):
            empty &= a[:, column][:, None] == b[:, column][None, :]
        found[empty] = 1.0
    return found


def _overlap(low_a, high_a, low_b, high_b) -> np.ndarray:
    """Each interval of a's overlap with each of b's (rows x columns), 0 where they do not meet."""
    width = np.minimum(high_a[:, None], high_b[None, :])
    width -= np.maximum(low_a[:, None], low_b[None, :])
    return np.clip(width, 0, None, out=width)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)


def _driver(found: Roles) -> Rows:
    """The output whose rows the group is matched by: the box, else the first equal one."""
    return found.box or found.equal[0][0]


def match_sample(found: Roles, i: int) -> list[tuple[int, int]]:
    """Sample i's reference rows matched one-to-one to candidate rows, greedily by descending reference score (in
    order without one): each takes the unmatched candidate row of highest IoU at IOU_MATCH or more (the first
    compatible one without boxes) whose equal fields (labels, indices) are equal."""
    driver = _driver(found)
    n, m = len(driver.ref[i]), len(driver.cand[i])
    fits = np.ones((n, m), bool)
    for rows, cols in found.equal:
        a, b = np.round(rows.ref[i][:, cols]), np.round(rows.cand[i][:, cols])
        for column in range(a.shape[1]):
            fits &= a[:, column][:, None] == b[:, column][None, :]
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
    # sample -> (reference rows, candidate rows) matched, in the reference's order, for every sample with a pair:
    # the figures are of the same detections (NMS sorts by score: one box lost shifted every later one, 100 px)
    compared: dict
    unmatched: tuple[int, ...]  # samples with no pair: left out of the figures
    counts_differ: tuple[int, ...]  # samples whose row counts differ (length_mismatches)
    roles: Roles


def agreement(group: list[Rows], recorded: dict[int, Match] | None = None) -> Agreement | None:
    """A group's detection agreement (None: no box and no integer output to match by, e.g. a bare score cut)."""
    found = roles(group, recorded)
    if found.box is None and not found.equal:
        return None
    driver = _driver(found)
    matched = rows = 0
    compared, unmatched, differ = {}, [], []
    for i in range(len(driver.ref)):
        pairs = sorted(match_sample(found, i))
        n, m = len(driver.ref[i]), len(driver.cand[i])
        matched, rows = matched + len(pairs), rows + n + m
        differ += [i] if n != m else []
        if pairs:
            compared[i] = [r for r, _ in pairs], [c for _, c in pairs]
        else:
            unmatched.append(i)
    return Agreement(tuple(r.k for r in group), 2 * matched / rows if rows else 1.0, rows, compared,
                     tuple(unmatched), tuple(differ), found)


@dataclass
class Measured:
    """measure()'s answer: each detection output's Agreement and Match (by output index), and the reference and
    candidate with each sample cut to its matched rows (in the reference's order), the samples with no pair (left
    out of that output's figures: Agreement.unmatched) as they were."""

    agreed: dict[int, Agreement]
    matches: dict[int, Match]
    reference: list
    candidate: list
    examples: dict[int, str]  # the first sample whose counts differ, in the output's own shapes, as compare() says
    # outputs whose recorded role is not the one these arrays give (matched as the arrays say instead): why
    untrue: dict[int, str] = field(default_factory=dict)


def measure(names, reference, candidate, shapes, plain=(), recorded=None) -> Measured:
    """Each detection output matched (groups, agreement): the figures compare the same detections (near-tie boxes
    swapping places are none apart) and the agreement counts the rest. `recorded`: see groups()."""
    recorded = recorded or {}
    agreed, matches, examples, untrue = {}, {}, {}, {}
    reference, candidate = [list(r) for r in reference], [list(c) for c in candidate]
    for number, group in enumerate(groups(names, reference, candidate, shapes, plain, recorded)):
        said = {rows.k: m for rows in group
                if (m := valid_match(recorded.get(names[rows.k]), [np.asarray(r[rows.k]) for r in reference],
                                     [np.asarray(c[rows.k]) for c in candidate])) is not None}
        if said and (wrong := untrue_roles(group, said)):  # never a looser match than the export's
            untrue.update(wrong)
            said = {}
        if (found := agreement(group, said)) is None:
            continue
        for rows in group:
            agreed[rows.k] = found
            matches[rows.k] = Match(number, rows.axis, found.roles.role_of(rows),
                                    found.roles.centre_size if rows is found.roles.box else False)
            if found.counts_differ:
                i = found.counts_differ[0]
                examples[rows.k] = f"{np.shape(reference[i][rows.k])} vs {np.shape(candidate[i][rows.k])} in sample {i}"
            for i, (kept, taken) in found.compared.items():
                reference[i][rows.k] = np.take(np.asarray(reference[i][rows.k]), kept, axis=rows.axis)
                candidate[i][rows.k] = np.take(np.asarray(candidate[i][rows.k]), taken, axis=rows.axis)
    return Measured(agreed, matches, reference, candidate, examples, untrue)


def untrue_roles(group: list[Rows], said: dict[int, Match]) -> dict[int, str]:
    """The recorded roles that are not those roles() gives these rows (the recorded axis and box format taken as
    said): a [K, 4] float box recorded `carried` matched by labels alone. {} where the group holds no row at all
    (nothing to match, nor to tell a role by)."""
    if not any(a.size for rows in group for a in (*rows.ref, *rows.cand)):
        return {}
    derived = roles(group)
    return {rows.k: f"role {said[rows.k].role!r}, where its arrays make it {derived.role_of(rows)!r}"
            for rows in group if rows.k in said and said[rows.k].role != derived.role_of(rows)}
