"""Calibration and validation data: readers, strict validation against the model's inputs, ORT adapter.

A *sample* is one feed dict {input name: array with the batch axis}, plus an optional label.
Sources: a single `.npz` (arrays named after the inputs, samples along the first axis, optional
`labels`), a folder of `.npz`/`.npy` files, a user `module:function` yielding feed dicts, or
`random` (only when asked for explicitly; the report then says so).
"""
from __future__ import annotations

import contextlib
import filecmp
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import arrays, sizes
from .config import InputSpec, Recipe, Target, is_batch_name, target_settings
from .arrays import RowFile
from .errors import InputError, UsageError, few, first_line
from .userfn import UserFunction, is_function_spec, one_shot, resolve_callable

log = logging.getLogger("edgekit")
LABEL_KEYS = ("labels", "label")
# arrays a data .npz may hold besides the inputs and labels, counted before its zip directory is read (60,000 empty
# entries took 2.4 s to refuse, a 500 MB file of them ~4 minutes): up to these, any is named as unexpected
SPARE_NPZ_ENTRIES = 8192
MAX_FUNCTION_ITEMS = 10_000  # a user generator may never end: read this many items at most
VALIDATION_FRACTION = 0.25  # held out of the calibration samples when no validation data is given
# --auto picks its trial on the even validation samples and is judged on the odd ones, which the pick never saw
# (picked and judged on the same samples, its figures flattered it); alternate samples: data sorted by class or
# length falls on both sides. Under MIN_SPLIT samples (8 a side: verdict.FEW_SAMPLES) both use all of them.
SELECTED, JUDGED = slice(0, None, 2), slice(1, None, 2)
MIN_SPLIT = 16
# samples read from one data source at most: a few MB of 8x8 samples can declare millions, and each costs memory
# (its index, three sets of outputs) and runs whatever the bytes (13 M of them: 15.7 GB and 10 minutes, unfinished)
MAX_SAMPLES = 100_000
BLOCK_BYTES = 4 << 20  # a file's samples are checked in blocks of this size, never all at once


class Samples(Sequence):
    """Feed dicts made when asked for, from columns indexed by row: arrays in memory, or arrays.RowFile reading
    a file row by row. Calibrating on 4096 images then holds one image at a time, not the file."""

    def __init__(self, parts: list[tuple[dict, dict[str, bool]]], index: list[tuple[int, int]] | None = None):
        self._parts = parts  # [({input: column}, {input: where the sample keeps its batch axis of 1, or None})]
        self._index = index if index is not None else [
            (p, r) for p, (columns, _) in enumerate(parts) for r in range(len(next(iter(columns.values()))))]

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Samples(self._parts, self._index[i])
        part, row = self._index[i]
        columns, batch_axis = self._parts[part]
        return {name: _with_batch_of(column[row], batch_axis[name]) for name, column in columns.items()}

    def __add__(self, other: Samples) -> Samples:
        return Samples(self._parts + other._parts,
                       self._index + [(p + len(self._parts), r) for p, r in other._index])

    def nbytes(self) -> int:
        """The samples' size in bytes, read or not."""
        return sum(c.dtype.itemsize * int(np.prod(c.shape[1:]))
                   for p, _ in self._index for c in self._parts[p][0].values())

    def shapes(self, name: str) -> set[tuple[int, ...]]:
        """Each sample's shape of one input, from the columns' shapes (no data read)."""
        parts = {p for p, _ in self._index}
        return {_with_batch(columns[name].shape[1:], batch_axis[name])
                for p, (columns, batch_axis) in enumerate(self._parts) if p in parts}


def _with_batch(shape, axis: int | None) -> tuple[int, ...]:
    """A sample's shape from its row's: a batch axis of 1 put back at `axis` (None: the row is the sample)."""
    shape = tuple(shape)
    return shape if axis is None else shape[:axis] + (1,) + shape[axis:]


@dataclass
class Dataset:
    origin: str
    feeds: Sequence[dict[str, np.ndarray]]
    labels: np.ndarray | None = None  # one per sample, or (samples, rows) for samples holding several rows
    random: bool = False
    joined: bool = False  # labels of items of different lengths, one per row and joined: not split by sample
    labels_aside: bool = False  # its items' labels were no class ids (a regression's targets, masks): not read
    files: dict = field(default_factory=dict)  # {(device, inode): path} of the files it was read from
    held_out: bool = False  # the last samples of the calibration data (split), not data of its own

    def __len__(self) -> int:
        return len(self.feeds)

    def split(self, fraction: float) -> tuple[Dataset, Dataset]:
        """Hold out the last `fraction` of samples (at least one) so validation never sees calibration data."""
        n_val = max(1, int(round(len(self) * fraction)))
        if len(self) < 2:
            raise InputError(f"{self.origin}: need at least 2 samples to hold some out for validation")
        cut = len(self) - n_val
        if self.joined:
            raise InputError(f"{self.origin}: its items' labels differ in length, so the last items cannot be held "
                             "out for validation with their labels: give --validation data")
        labels = (self.labels[:cut], self.labels[cut:]) if self.labels is not None else (None, None)
        return (Dataset(self.origin, self.feeds[:cut], labels[0], self.random, files=self.files,
                        labels_aside=self.labels_aside),
                Dataset(f"{self.origin} (held-out last {n_val})", self.feeds[cut:], labels[1], self.random,
                        files=self.files, labels_aside=self.labels_aside, held_out=True))

    def unsplit(self, streaming: bool = False) -> str | None:
        """Why --auto's pick and its verdict share this validation data (SELECTED, JUDGED), None when they need not."""
        if streaming:
            return "a streaming model's steps follow one another: alternate steps hold no data apart"
        if self.joined:
            return "its items' labels differ in length and are joined: they cannot be split by sample"
        if len(self) < MIN_SPLIT:
            return f"{len(self)} validation samples, fewer than {MIN_SPLIT}: too few to split"
        return None

    def part(self, which: slice, what: str) -> Dataset:
        """The samples `which` picks (SELECTED, JUDGED), with their labels; `what`: said after the origin."""
        return Dataset(f"{self.origin} ({what})", self.feeds[which], None if self.labels is None else
                       self.labels[which], self.random, labels_aside=self.labels_aside, files=self.files,
                       held_out=self.held_out)

    def read_by(self, files: dict) -> list[str]:
        """What this data was read from that `files` (another Dataset's) names too, or a copy of one side's only
        file (the validation file copied as calibration data, or into the calibration folder); two folders of
        several per-sample files sharing one repeated sample are not refused."""
        same = {self.files[k] for k in self.files.keys() & files.keys()}
        ours, theirs = ([v for k, v in f.items() if k[0] != "function"] for f in (self.files, files))
        if len(ours) == 1 or len(theirs) == 1:
            same |= {a for a in ours for b in theirs if a != b and _same_bytes(Path(a), Path(b))}
        return sorted(same)


def own_array(x) -> np.ndarray:
    """An item's tensor (one that requires grad too: numpy refused it, exit 3) or array, copied: a loader may refill
    it."""
    return np.array(_numpy(x))


def load(source, specs: tuple[InputSpec, ...], *, seed: int = 0, random_count: int = 64,
         max_bytes: int = arrays.DEFAULT_MAX_BYTES, max_samples: int | None = None, masks: bool = False) -> Dataset:
    """`source`: a path, `random`, MODULE:FUNCTION, or (from the Python API) {input name: samples} as an .npz
    holds them, an iterable of feed dicts or a callable returning one. `max_bytes` bounds what one source may
    declare (file headers, random inputs) before it is loaded (a function's items, as they come, labels too);
    `max_samples`: only the first samples are read. `masks`: a grid of labels per sample is read (--task classify
    scores a class map against it); else it is set aside unread, as no class ids (a regression's whole-number
    targets were refused as class ids < 0)."""
    if _is_array(source):  # one input's samples, as a .npy holds them
        origin = f"data {type(source).__name__!r}"
        if len(specs) != 1:
            raise InputError(f"{origin}: one array, the model takes {len(specs)} inputs {[s.name for s in specs]}: "
                             "give {name: samples}")
        return _from_mapping(origin, {specs[0].name: source}, specs, max_bytes, max_samples, masks)
    if isinstance(source, Mapping):  # {input name: samples}, as an .npz holds them (np.load's own result too)
        file = getattr(getattr(source, "zip", None), "filename", None)  # np.load's: named by its file, not 'NpzFile'
        return _from_mapping(f"data {file or type(source).__name__!r}", source, specs, max_bytes, max_samples,
                             masks)
    if why := _pair_as_the_data(source, specs):
        raise InputError(why)
    if stream := user_stream(source):
        read = from_items(*stream, specs, max_bytes, max_samples, masks)
        if not len(read) and one_shot(source):  # a notebook cell run again with the map/iter an earlier call read
            raise InputError(f"{read.origin}: an iterator with no items left (read to its end by an earlier call?): "
                             "give the iterable itself (a DataLoader, a list) or a function that makes a new one at "
                             "each call")
        return replace(_nonempty(read), files=function_key(source))
    source = str(source)
    if source == "random":
        return random_dataset(specs, random_count, seed, max_bytes)
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
        if not files:
            raise InputError(f"{path}: no .npz or .npy files in this folder")
        if labelled := [f.name for f in files if f.suffix == ".npy" and f.stem in label_keys(specs)]:
            raise InputError(f"{path / labelled[0]}: a folder's .npy files are samples, and labels here would be "
                             "read as inputs: put each file's samples and labels in one .npz")
        for f in files:
            try:
                target = f.resolve(strict=f.is_symlink())
            except (OSError, RuntimeError) as e:  # a dangling link, or one in a loop (RuntimeError before 3.13)
                raise InputError(f"{f}: a link that leads to no file ({first_line(e)})") from None
            if f.is_symlink() and path.resolve() not in target.parents:
                raise InputError(f"{f}: a link out of the data folder (to {target}); copy the file in instead")
        budget = max_bytes
        parts = []
        for f in files:
            left = None if max_samples is None else max_samples - sum(len(p) for p in parts)
            if left == 0:
                break
            try:
                if budget <= 0:
                    raise arrays.TooLarge("")
                parts.append(_read_file(f, specs, budget, left, masks))
            except arrays.TooLarge:  # what this file had left of the folder's budget is no figure to show
                raise InputError(f"{path}: its files hold more than {max_bytes} bytes (--max-data-bytes)") from None
            budget -= parts[-1].feeds.nbytes()
        feeds = parts[0].feeds
        for part in parts[1:]:
            feeds = feeds + part.feeds
        labelled = [p.labels is not None for p in parts]
        if any(labelled) and not all(labelled):
            raise InputError(f"{path}: some files have labels and some do not")
        if all(labelled) and len({p.labels.shape[1:] for p in parts}) > 1:  # np.concatenate's ValueError: exit 5
            raise InputError(f"{path}: its files' labels differ in shape ("
                             f"{few(sorted({str(list(p.labels.shape[1:])) for p in parts}), 4)} per sample)")
        labels = np.concatenate([p.labels for p in parts]) if all(labelled) else None
        return _nonempty(Dataset(str(path), feeds, labels, files={k: v for p in parts for k, v in p.files.items()}))
    if path.exists():
        return _nonempty(_read_file(path, specs, max_bytes, max_samples, masks))
    raise InputError(f"data {source!r}: no such file or folder (or MODULE:FUNCTION)")


def _pair_as_the_data(source, specs) -> str:
    """Why `calibration=(inputs, labels)` cannot be read as given, else "": a tuple is an iterable of items, so the
    labels were read as the second batch of inputs ("array 'image' has shape [200]")."""
    if not (isinstance(source, tuple) and len(source) == 2 and all(map(_is_array, source)) and len(specs) == 1):
        return ""
    inputs, labels = source  # labels name each row of a batch: two 1-D batches of a 1-D input are two batches
    if len(labels.shape) != 1 or len(inputs.shape) != len(specs[0].shape) or len(inputs.shape) < 2 \
            or len(inputs) != len(labels):
        return ""
    return (f"data 'tuple': (inputs, labels) given as the data itself reads as two items, the labels as inputs: "
            f"give [(inputs, labels)] (one batch) or {{{specs[0].name!r}: inputs, 'labels': labels}}")


def _is_array(x) -> bool:
    """A numpy array or a torch tensor (told by its `detach`: torch is not imported for it)."""
    return isinstance(x, np.ndarray) or hasattr(x, "detach")


def _numpy(x) -> np.ndarray:
    """An array or a tensor (one that requires grad too) as numpy's, without a copy where none is needed."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _from_mapping(origin: str, source: Mapping, specs, max_bytes: int, max_samples: int | None,
                  masks: bool = False) -> Dataset:
    try:
        found = {k: _numpy(source[k]) for k in source}
    except (ValueError, TypeError, OSError, RuntimeError) as e:  # ragged lists; np.load's pickled member; bfloat16
        cast = "; cast it: tensor.float()" if "BFloat16" in str(e) else ""  # numpy has no bfloat16
        raise InputError(f"{origin}: cannot be read as arrays ({type(e).__name__}: {first_line(e)}){cast}") from None
    axis = _axis_of(specs)
    # the first samples a run uses, along the batch axis (x:TxNx40's N: cut along T, time steps were lost); a 0-d
    # array: _from_arrays says why
    found = {k: a[(slice(None),) * axis(k, a.ndim) + (slice(max_samples),)] if a.ndim else a for k, a in found.items()}
    if sum(a.nbytes for a in found.values()) > max_bytes:
        raise InputError(f"{origin}: its arrays hold more than {max_bytes} bytes (--max-data-bytes)")
    return _nonempty(_from_arrays(origin, found, specs, masks))


def _axis_of(specs):
    """(name, ndim) -> the axis an array's samples lie along: its input's batch axis when the array has the input's
    rank, else the first (labels, samples along an axis of their own)."""
    by_name = {s.name: s for s in specs}

    def axis(name: str, ndim: int) -> int:
        spec = by_name.get(name)
        return (spec.batch_axis or 0) if spec is not None and ndim == len(spec.shape) else 0
    return axis


def user_stream(source) -> tuple[str, Iterator] | None:
    """Data that user code yields: a MODULE:FUNCTION string, or (from the Python API) an iterable or a callable
    returning one. (Its name for messages, its items, each guarded as user code), else None (files, `random`, a
    mapping of arrays). The function is called once: a stream may not come again."""
    if isinstance(source, Mapping):
        return None
    if not isinstance(source, (str, Path)):
        name = getattr(source, "__qualname__", type(source).__name__)
        origin, items = f"data {name!r}", UserFunction(source if callable(source) else lambda: source, name, "data")()
    elif is_function_spec(str(source)) and not Path(source).exists():
        origin, items = f"data {str(source)!r}", resolve_callable(str(source), "data")()
    else:
        return None
    if hasattr(items, "__len__") and hasattr(items, "__getitem__") and not hasattr(items, "__iter__"):
        # a map-style Dataset: Python's own iteration reads items until an IndexError, past its length
        try:
            return origin, (items[i] for i in range(len(items)))
        except Exception as e:
            raise InputError(f"{origin}: len() failed: {type(e).__name__}: {first_line(e)}") from None
    try:
        return origin, iter(items)
    except TypeError:
        what = "None (does the function return its data?)" if items is None else f"a {type(items).__name__}"
        raise InputError(f"{origin}: gave {what}, not an iterable of samples or batches") from None


def _same_bytes(a: Path, b: Path) -> bool:
    """Two files of one content: sizes first, then the bytes up to the first block that differs."""
    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def function_key(source) -> dict:
    """A MODULE:FUNCTION's entry in Dataset.files: the same function read twice is the same data."""
    return {("function", source): source} if isinstance(source, str) else {}


def _nonempty(ds: Dataset) -> Dataset:
    if len(ds) == 0:
        raise InputError(f"{ds.origin}: contains zero samples")
    return ds


def _read_file(path: Path, specs, max_bytes: int, max_samples: int | None = None, masks: bool = False) -> Dataset:
    names, axis = {s.name for s in specs}, _axis_of(specs)
    # the first samples a run uses, read along the batch axis (x:TxNx40's N) one by one: a 400 MB file was read whole
    if path.suffix == ".npy":
        if len(specs) != 1:
            raise InputError(f"{path}: a .npy file holds one array but the model has {len(specs)} inputs; use .npz")
        found = {specs[0].name: arrays.read_npy(path, max_bytes, max_samples, lazy=True,
                                                axis_of=lambda ndim: axis(specs[0].name, ndim))}
    elif path.suffix == ".npz":
        found = arrays.read_npz(path, lambda n: n in names or n in LABEL_KEYS, max_bytes,
                                lambda extra, there: _unexpected(sorted(names - set(there)), extra, names),
                                max_samples, lazy=True, same_rows=True, axis_of=axis,
                                max_entries=len(names) + len(LABEL_KEYS) + SPARE_NPZ_ENTRIES)
    else:
        raise InputError(f"{path}: expected a .npz or .npy file")
    st = path.stat()
    return replace(_from_arrays(str(path), found, specs, masks), files={(st.st_dev, st.st_ino): str(path)})


def _unexpected(missing: list[str], extra: list[str], names) -> str:
    """An .npz's arrays against the inputs: "missing []" was said where none was, and an array beside the inputs (a
    regression's targets, "torques") got no word of what to do with it."""
    absent = few(missing) if missing else "none"
    return (f"input names do not match the model: unexpected {few(extra)}, missing {absent} (model takes "
            f"{sorted(names)}){_labels_hint(missing, extra)}")


def _labels_hint(missing: list[str], extra: list[str]) -> str:
    """Where a dataset's `target` or `y` goes: a torchvision-style key was named unexpected, with no word of labels.
    Any other array beside all the inputs is to be left out: edgekit reads inputs and class ids only; one array in
    place of one input is the same data named otherwise (a state vector saved as 'obs')."""
    if len(missing) == 1 and len(extra) == 1:
        return f"; if {extra[0]!r} holds {missing[0]!r}, rename it in the data (or the input in --input)"
    if missing or not extra:
        return ""
    if len(extra) == 1 and extra[0].lower() in ("target", "targets", "y", "class", "classes", "class_id"):
        return "; labels go under the key 'labels'"
    return ("; leave it out of the data: edgekit reads the inputs and class-id 'labels' only (int8 is compared with "
            "fp32: a regression's targets are not needed)")


def _from_arrays(origin: str, arrays: dict[str, np.ndarray | RowFile], specs, masks: bool = True) -> Dataset:
    """`masks`: load()'s; a grid per sample not read is set aside (said)."""
    labels, aside = None, False
    if key := _label_key(origin, arrays, specs):
        found = arrays.pop(key)
        if found.ndim > 2 and not masks:
            origin, aside = _masks_aside(origin), True
        else:
            labels = found.rows(0, len(found)) if isinstance(found, RowFile) else np.asarray(found)
    names = {s.name for s in specs}
    missing = sorted(names - set(arrays))
    extra = sorted(set(arrays) - names)
    if missing or extra:
        raise InputError(f"{origin}: input names do not match the model: "
                         f"missing {few(missing) if missing else 'none'}, unexpected {few(extra) if extra else 'none'} "
                         f"(model takes {few(sorted(names))}){_labels_hint(missing, extra)}")
    batch_axis = {spec.name: _stack_axis(origin, spec, arrays[spec.name]) for spec in specs}
    arrays = {name: _samples_along_first(array, batch_axis[name]) for name, array in arrays.items()}
    for spec in specs:
        _check_samples(origin, spec, arrays[spec.name], batch_axis[spec.name])
    same_named_dims(origin, specs, {s.name: _with_batch(arrays[s.name].shape[1:], batch_axis[s.name]) for s in specs})
    counts = {len(arrays[name]) for name in names}
    if len(counts) != 1:
        raise InputError(f"{origin}: inputs have different sample counts {sorted(counts)}")
    n = counts.pop()
    first = specs[0].name if specs else None
    # rows a sample holds: its batch's size (a label per stream of a time-major x:TxNx40 sample, not per step)
    rows = 1 if first is None or batch_axis[first] is not None or arrays[first].ndim < 2 else \
        arrays[first].shape[1 + (specs[0].batch_axis or 0)]
    # one class id per row, or a grid per sample (masks: a class map's, checked against it by parity.scores)
    if labels is not None and (labels.ndim == 0 or len(labels) != n or labels.size != n * rows and labels.ndim < 3):
        hot = " (not one-hot rows)" if labels.ndim <= 2 and labels.size > n * rows else ""
        raise InputError(f"{origin}: {labels.size} labels (shape {list(labels.shape)}) for {n} samples of {rows} "
                         f"row(s) each: give one class id per row{hot}, or a mask per sample (shape [samples, H, W]) "
                         f"for a model returning a class map{_targets_hint(labels)}")
    if labels is not None:
        labels = class_ids(origin, labels)
    return Dataset(origin, Samples([({name: arrays[name] for name in batch_axis}, batch_axis)]), labels,
                   labels_aside=aside)


def _masks_aside(origin: str) -> str:
    """Labels holding a grid per sample, unread (load's `masks`): said, and the data's name for the report."""
    log.warning("%s: its labels are a grid per sample (masks): set aside (--task classify scores a class map's "
                "pixels against them)", origin)
    return f"{origin} (its labels set aside: masks)"


def label_keys(specs) -> tuple[str, ...]:
    """The LABEL_KEYS that hold class labels for a model with these inputs: not one the model takes as an input
    (`labels:N:int64`, a class-conditional model's, was read as class labels, so never fed: "missing ['labels']";
    an .onnx input's name is not the user's to change)."""
    return tuple(k for k in LABEL_KEYS if k not in {s.name for s in specs})


def _label_key(origin: str, keys, specs) -> str | None:
    """Which of label_keys holds the labels: one with both had `label` silently win."""
    found = [k for k in label_keys(specs) if k in keys]
    if len(found) > 1:
        raise InputError(f"{origin}: has both {' and '.join(map(repr, found))}: keep the one that holds the labels")
    return found[0] if found else None


def same_named_dims(origin: str, specs, shapes: dict[str, tuple[int, ...]]) -> None:
    """A dimension named in several inputs (N in a:Nx4 and b:Nx4) has one size per sample: onnxruntime broadcast
    5 rows against 1 until a later stage failed ("Shape mismatch attempting to re-use buffer")."""
    sizes: dict[str, dict[str, int]] = {}
    for spec in specs:
        for dim, size in zip(spec.shape, shapes[spec.name]):
            if isinstance(dim, str):
                sizes.setdefault(dim, {})[spec.name] = size
    for dim, by_input in sizes.items():
        if len(set(by_input.values())) > 1:
            raise InputError(f"{origin}: dimension {dim!r} differs between inputs in one sample "
                             f"({', '.join(f'{n} {v}' for n, v in by_input.items())})")


def _targets_hint(labels: np.ndarray) -> str:
    """Float labels with fractions are a regression's targets, which no run reads: they were told to be class ids.
    Rows of class probabilities (soft labels: each in [0, 1], summing to 1) may be a classifier's, named so: they
    were told to be a regression's, to be left out, where their argmax is the class ids accuracy scores. A
    regression's proportions (mixture weights) look the same, so that hint stays beside it."""
    if labels.dtype.kind != "f" or not (np.isfinite(labels) & (labels != np.round(labels))).any():
        return ""
    regression = "a regression's targets? leave them out of the data: int8 is compared with fp32, not with targets"
    if _soft_labels(labels):  # or a regression's proportions (mixture weights): their rows sum to 1 as well
        return (f"; class probabilities (soft labels, {labels.shape[-1]} classes)? give their argmax as the class "
                f"ids: labels.argmax(-1); {regression}")
    return f"; {regression}"


SOFT_LABEL_SUM = 1e-3  # how far from 1 a row of class probabilities may sum (float32 softmax: some 1e-7)


def _soft_labels(labels: np.ndarray) -> bool:
    """Rows of two or more class probabilities: every value in [0, 1], each row summing to 1."""
    if labels.ndim < 2 or labels.shape[-1] < 2 or not np.isfinite(labels).all():
        return False
    return bool(((labels >= 0) & (labels <= 1)).all()
                and np.allclose(labels.sum(-1, dtype=np.float64), 1, rtol=0, atol=SOFT_LABEL_SUM))


def class_ids(origin: str, labels: np.ndarray) -> np.ndarray:
    """Labels are class ids: finite, whole, non-negative numbers (strings, NaN or -1 would silently skew accuracy)."""
    if labels.dtype.kind not in "iubf":
        raise InputError(f"{origin}: labels are {labels.dtype} values; give integer class ids")
    if labels.dtype.kind == "f" and not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
        raise InputError(f"{origin}: labels must be whole class ids (found NaN, Inf or fractions)"
                         + _targets_hint(labels))
    if labels.size and labels.min() < 0:
        raise InputError(f"{origin}: labels must be class ids >= 0 (found {labels.min()})")
    if labels.size and labels.max() > np.iinfo(np.int64).max:  # would wrap to a negative id below
        raise InputError(f"{origin}: labels must be class ids (found {labels.max()})")
    return labels.astype(np.int64)


def _item_batch_axis(spec: InputSpec, ndim: int) -> int | None:
    """Where an item of `ndim` dimensions stacks samples: the input's batch axis, when the item has the input's
    rank and that axis is 1 or named as a batch is (N, batch), wherever it stands; another name (T, seq) is the
    sample's own axis, and the item one sample (None: an utterance of T frames was cut into T samples, and an
    Android model fixed at T=1)."""
    axis = spec.batch_axis
    if ndim != len(spec.shape) or axis is None:
        return None
    return axis if spec.shape[axis] == 1 or is_batch_name(spec.shape[axis]) else None


def _stack_axis(origin: str, spec: InputSpec, array: np.ndarray | RowFile) -> int | None:
    """Where each sample keeps its batch axis of 1: the input's batch axis (InputSpec.batch_axis) when the array
    has the model's rank, a batch the model takes split along that axis; None when the array has a first axis of
    its own for the samples."""
    axis = spec.batch_axis if array.ndim == len(spec.shape) else None
    if array.ndim != len(spec.shape) + 1 and axis is None:
        raise InputError(f"{origin}: array {spec.name!r} has shape {list(array.shape)}, "
                         f"expected samples of {list(spec.shape)} along the first axis")
    return axis


def _samples_along_first(array: np.ndarray | RowFile, axis: int | None) -> np.ndarray | RowFile:
    """The array with its samples along the first axis: a batch along a later axis (x:TxNx40's N) moved first (a
    copy of the samples kept), so a sample is a row as everywhere else. A file's RowFile reads its rows along it."""
    if not axis or isinstance(array, RowFile):
        return array
    return np.ascontiguousarray(np.moveaxis(array, axis, 0))


def _check_samples(origin: str, spec: InputSpec, array: np.ndarray | RowFile, batch_axis: int | None) -> None:
    """Checks the first sample's dtype and shape and that no value is NaN or Inf, reading a file in blocks of
    rows."""
    if len(array):
        validate(origin, spec, _with_batch_of(array[0], batch_axis))
    if np.issubdtype(array.dtype, np.floating):
        step = max(1, BLOCK_BYTES // max(1, array[0].nbytes)) if len(array) else 1
        for start in range(0, len(array), step):
            block = array.rows(start, start + step) if isinstance(array, RowFile) else array[start:start + step]
            bad = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
            if bad.any():
                raise InputError(f"{origin}: array {spec.name!r} has NaN or Inf values "
                                 f"(first in sample {start + int(np.argmax(bad))})")
    if isinstance(array, RowFile):
        array.close()  # a file changed after this check fails its header check when read again


def _with_batch_of(row, axis: int | None) -> np.ndarray:
    """A sample from its row: a batch axis of 1 put back at `axis` (None: the row is the sample)."""
    return np.asarray(row) if axis is None else np.expand_dims(row, axis)


def _pixels_hint(spec: InputSpec, sample: np.ndarray) -> str:
    """uint8 images for a float input are raw pixels: a cast alone feeds the model 0-255 where it was trained on
    normalised values (its accuracy gone, nothing said), so name what does fit."""
    if sample.dtype != np.uint8 or not np.issubdtype(np.dtype(spec.dtype), np.floating) or sample.ndim < 3:
        return ""
    return ("; raw pixels? a cast alone feeds them as 0-255: normalise them as training did, or declare "
            f"{spec.name}:{'x'.join(map(str, spec.shape))}:uint8 with image_uint8 (mean, std) to fold the "
            "normalisation into the model (README: Camera pixels)")


def validate(origin: str, spec: InputSpec, sample: np.ndarray) -> None:
    if sample.dtype != np.dtype(spec.dtype):
        cast = f"array.astype(np.{spec.dtype})"
        raise InputError(f"{origin}: input {spec.name!r} has dtype {sample.dtype}, " + (
            f"but its --input declares {spec.typed()} (if the model takes {spec.dtype}, cast it: {cast}; else "
            "correct the --input dtype)" if spec.declared else f"the model takes {spec.dtype} (cast it: {cast})")
            + _pixels_hint(spec, sample))
    differ = [i for i, (d, s) in enumerate(zip(spec.shape, sample.shape)) if isinstance(d, int) and d != s]
    if sample.ndim != len(spec.shape) or differ:
        short = differ == [0] and sample.ndim == len(spec.shape) and sample.shape[0] < spec.shape[0]
        sized = sample.ndim != len(spec.shape) or bool(set(differ) & set(spec.sized_by_input))
        raise InputError(f"{origin}: input {spec.name!r} has shape {list(sample.shape)}, {_held_to(spec, sized)}" + (
                             f" (a short last batch? name the batch axis, as in {spec.name}:N"
                             f"{''.join(f'x{d}' for d in spec.shape[1:])}, or drop it: DataLoader(drop_last=True))"
                             if short else _channels_last(spec, sample.shape)))
    if np.issubdtype(sample.dtype, np.floating) and not np.isfinite(sample).all():
        raise InputError(f"{origin}: input {spec.name!r} has NaN or Inf values")


def _channels_last(spec: InputSpec, shape: tuple) -> str:
    """A hint where a sample is the declared NCHW image with its channels last, as cameras and PIL give frames; its
    height and width may be named (image:Nx3xHxW, a fully convolutional model: frames of any size had no hint)."""
    if len(spec.shape) != 4 or len(shape) != 4:
        return ""
    c, h, w = spec.shape[1:]
    sized = all(isinstance(d, str) or d == n for d, n in ((h, shape[1]), (w, shape[2])))
    if not isinstance(c, int) or shape[3] != c or shape[1] == c or not sized:
        return ""
    return " (channels last, NHWC? the model takes NCHW: array.transpose(0, 3, 1, 2))"


def _held_to(spec: InputSpec, sized: bool) -> str:
    """The shape a sample is held to: the user's own --input when it is theirs (it, not the model, may be wrong:
    `--input x:Nx15` for a model of 16 blamed the model and the data), and an .onnx's axes --input sized (the
    file leaves them variable) said as --input's where one of them (`sized`) differs: data of 4 channels for the
    file's own 3 named --input's H and W. validate says the same of a dtype."""
    if spec.declared:
        return f"but its --input declares {spec.typed()}"
    if not (axes := spec.sized_by_input) or not sized:
        return f"the model takes {list(spec.shape)}"
    which = f"axis {axes[0]}" if len(axes) == 1 else f"axes {', '.join(map(str, axes[:-1]))} and {axes[-1]}"
    return f"the model takes {list(spec.shape)} ({which} sized by --input; the .onnx file leaves " + (
        "it variable)" if len(axes) == 1 else "them variable)")


def _as_feed(origin: str, item, specs) -> tuple[Mapping, bool]:
    """An item as a dict of the model's inputs (and `labels`): a dict as it is; else as training batches are
    given (distillation's form): inputs, `(inputs,)` or `(inputs, labels)`, as a DataLoader of a TensorDataset
    yields them, where inputs are an array, a tuple of arrays in the model's input order, or a dict. A pair's
    labels that are no whole numbers (a regression's targets) are set aside: True then. A grid per sample (a
    segmentation's masks) is read as a dict's labels are (the run sets it aside unless it scores a class map)."""
    if isinstance(item, Mapping):
        return _no_none(origin, item, specs), False
    if isinstance(item, (tuple, list)) and len(item) in (1, 2):
        inputs, labels = item[0], item[1] if len(item) == 2 else None
    elif _is_array(item):
        inputs, labels = item, None
    else:
        what = "None" if item is None else f"a {type(item).__name__}" + (
            f" of {len(item)}" if isinstance(item, (tuple, list)) else "")
        raise InputError(f"{origin} is {what}: give a dict of arrays, the inputs, or (inputs, labels)")
    if not isinstance(inputs, Mapping):
        arrays = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
        if len(arrays) != len(specs):
            pair = " (a pair is read as (inputs, labels))" if isinstance(item, (tuple, list)) and len(item) == 2 \
                and len(specs) > 1 else ""
            raise InputError(f"{origin}: {len(arrays)} input(s){pair}, the model takes {len(specs)} "
                             f"{[s.name for s in specs]}: give them in that order, as (inputs, labels), or a dict")
        inputs = dict(zip((s.name for s in specs), arrays))
    inputs = _no_none(origin, inputs, specs)
    if labels is None:
        return inputs, False
    if not (key := next(iter(label_keys(specs)), None)):
        raise InputError(f"{origin}: the model's inputs are named {' and '.join(LABEL_KEYS)}, so (inputs, labels) "
                         "pairs have no name left for labels: give dicts of the inputs")
    ids = own_array(labels)
    if ids.dtype.kind not in "biuf" or ids.dtype.kind == "f" and not (
            np.isfinite(ids).all() and (ids == np.round(ids)).all()):
        return inputs, True
    # an unbatched sample's (a map-style Dataset's item) [H, W] mask: one sample's grid
    by_name = {s.name: s for s in specs}
    unbatched = all(k in by_name and _item_batch_axis(by_name[k], np.ndim(v) + 1) is not None
                    for k, v in inputs.items())
    return {**inputs, key: ids[None] if unbatched and ids.ndim >= 2 else ids}, False


def _no_none(origin: str, item: Mapping, specs) -> Mapping:
    """The item, unless an entry is None (a generator's `(x, None)` for two inputs, a dict's missing value): named
    with what was expected there, where np.asarray(None) was reported as an input 'of shape []'."""
    name = next((k for k, v in item.items() if v is None), None)
    if name is None:
        return item
    spec = next((s for s in specs if s.name == name), None)
    expected = f"an array or tensor of shape {list(spec.shape)}" if spec else \
        "class ids (or leave the key out)" if name in label_keys(specs) else "an array or tensor"
    raise InputError(f"{origin}: {'input ' if spec else ''}{name!r} is None, expected {expected}")


def from_items(origin: str, items, specs, max_bytes: int = arrays.DEFAULT_MAX_BYTES,
               max_samples: int | None = None, masks: bool = False) -> Dataset:
    """Feed dicts (one sample, or a stack of samples along a first axis of their own or along the inputs' batch
    axis), an optional `labels` entry in each (one per sample of a stack). Items are held in memory, so only the
    items holding the first `max_samples` samples are taken, and at most `max_bytes` of them (labels counted as the
    int64 class ids they become). `masks`: load()'s."""
    feeds, labels, held, aside = [], [], 0, False
    ranks, specs_by = {s.name: len(s.shape) for s in specs}, {s.name: s for s in specs}
    last = min(MAX_FUNCTION_ITEMS, max_samples or MAX_FUNCTION_ITEMS)
    try:
        for i, item in enumerate(items):
            if i == last:
                if last < (max_samples or last + 1):  # not what the run asked for: its figures cover these only
                    origin = f"{origin} (its first {last} items: edgekit reads no more)"
                    log.warning("%s", origin)
                break
            item, set_aside = _as_feed(f"{origin}: item {i}", item, specs)
            item = dict(item)
            if set_aside and not aside:
                aside = True
                log.warning("%s: item %d's labels are no class ids (not whole numbers, or a grid per sample): set "
                            "aside (accuracy is not measured on them; calibration needs none)", origin, i)
                origin = f"{origin} (its labels set aside: no class ids)"  # the report's data label says so too
            key = _label_key(f"{origin} item {i}", item, specs)
            label = item.pop(key) if key else None
            # copies: a generator that refills one buffer made every sample its last (accuracy 11%, passed)
            arrays = {k: own_array(v) for k, v in item.items()}
            # one sample without its batch axis, as a Dataset's items are before a DataLoader stacks them
            arrays = {k: _with_batch_of(v, _item_batch_axis(specs_by[k], v.ndim + 1)) if k in specs_by else v
                      for k, v in arrays.items()}
            # an item is a stack of samples along a first axis the model's inputs lack, or along the model's own
            # batch axis (1, N), split into batch-1 samples as a file's are: a DataLoader's batches of 8 fixed an
            # Android model's batch at 8 (or, beside batch-1 files, left it dynamic); else it is one sample
            one = all(v.ndim == ranks.get(k) for k, v in arrays.items())
            one = one and not all(_item_batch_axis(specs_by[k], v.ndim) is not None for k, v in arrays.items())
            stacked = {k: v[None] if one else v for k, v in arrays.items()}
            if key:  # one per sample (or per row of each), checked with the item: one-hot rows failed after export
                label = _numpy(label)
                label = label[None] if one or not label.ndim else label
                if label.ndim > 2 and not masks:  # a grid per sample, unread
                    origin, aside = (origin, aside) if aside else (_masks_aside(origin), True)
                else:
                    stacked[key] = own_array(label)
            # labels too: a uint16 depth map per sample held as int64 ids (512 x 480 x 640: 1.26 GB) was not counted
            held += sum(v.size * 8 if k == key else v.nbytes for k, v in stacked.items())
            if held > max_bytes:
                raise InputError(f"{origin}: its first {i + 1} items hold more than {max_bytes} bytes "
                                 "(--max-data-bytes)")
            read = _from_arrays(f"{origin} item {i}", stacked, specs)
            feeds.extend(read.feeds)
            labels.extend(read.labels if read.labels is not None else [None] * len(read.feeds))
            if max_samples is not None and len(feeds) >= max_samples:  # samples, however many each item held
                break
    except InputError:
        raise
    except (Exception, GeneratorExit) as e:  # GeneratorExit: an iterator (not a generator) raising it
        raise InputError(f"{origin} failed: {type(e).__name__}: {e}") from e
    feeds, labels = feeds[:max_samples], labels[:max_samples]  # a last item's stack may hold more than asked
    has = [lb is not None for lb in labels]
    if any(has) and not all(has):
        raise InputError(f"{origin}: some items have a label and some do not")
    if not (has and all(has)):
        return Dataset(origin, feeds, None, labels_aside=aside)
    if len({np.shape(lb) for lb in labels}) == 1:
        return Dataset(origin, feeds, class_ids(origin, np.asarray([np.asarray(lb) for lb in labels])))
    # items of different lengths (a short last batch, sequences): one label per row, joined; never split by item
    return Dataset(origin, feeds, class_ids(origin, np.concatenate([np.asarray(lb).reshape(-1) for lb in labels])),
                   joined=True)


RANDOM_INPUTS = ("float inputs standard normal, uint8 and int16 ones (pixels, PCM audio) over their whole range, other "
                 "integer and bool ones a run of 1 (True) then 0 (False) of random length along their last axis")


def random_dataset(specs, count: int, seed: int, max_bytes: int = arrays.DEFAULT_MAX_BYTES,
                   sizes: dict[str, int] | None = None) -> Dataset:
    """Random inputs, only when the user asked for them (the report flags it in capitals) or for timing kernels;
    named axes but the batch at `sizes`, else 16. What they are: RANDOM_INPUTS."""
    rng = np.random.default_rng(seed)
    sizes = sizes or {}
    shapes = {s.name: tuple(d if isinstance(d, int) else 1 if i == s.batch_axis else sizes.get(d, 16)
                            for i, d in enumerate(s.shape)) for s in specs}
    need = count * sum(int(np.prod(shapes[s.name], dtype=object)) * np.dtype(s.dtype).itemsize for s in specs)
    if need > max_bytes:
        raise InputError(f"random inputs of shape {', '.join(f'{k}:{list(v)}' for k, v in shapes.items())} would take "
                         f"{need} bytes for {count} samples, more than {max_bytes} (--max-data-bytes)")

    def sample(s: InputSpec) -> np.ndarray:
        shape = shapes[s.name]
        if np.issubdtype(np.dtype(s.dtype), np.floating):
            return rng.standard_normal(shape).astype(s.dtype)
        if s.dtype in ("uint8", "int16"):  # pixels, PCM samples: the whole range
            limits = np.iinfo(s.dtype)
            return rng.integers(limits.min, limits.max, shape, endpoint=True).astype(s.dtype)
        # ids or masks: 0 and 1 are valid in any table. A bool mask all True masked every key under PyTorch's
        # key_padding_mask (True = pad) and the model gave NaN; a run of 1 then 0 along the last axis, as padding
        # is, leaves positions to attend under either convention (True = pad, True = attend)
        if not shape or shape[-1] < 2:
            return rng.integers(0, 2, shape).astype(s.dtype)
        return (np.arange(shape[-1]) < rng.integers(1, shape[-1], shape[:-1] + (1,))).astype(s.dtype)
    return Dataset("random", [{s.name: sample(s) for s in specs} for _ in range(count)], None, random=True)


def random_sizes_said(specs, feed: Mapping[str, np.ndarray]) -> str:
    """The sizes random data (`feed`, one of its samples) gave the named axes but the batch, and how to choose
    them, for a model that fails on them: a model naming its channel axis was fed 16 channels and failed naming an
    onnxruntime optimiser's node. "" when there is no such axis (the data's sizes are the model's own)."""
    chosen = {d: feed[s.name].shape[i] for s in specs for i, d in enumerate(s.shape)
              if isinstance(d, str) and i != s.batch_axis}
    if not chosen:
        return ""
    first = next(s for s in specs if set(s.shape) & set(chosen))
    example = InputSpec(first.name, tuple(chosen.get(d, d) for d in first.shape), first.dtype)
    return (f"random data gave the axes the model names {', '.join(f'{d}={n}' for d, n in chosen.items())} (its size "
            f"for a named axis), which the model may not take: write the sizes it takes in --input (as "
            f"{example.typed()}, "
            "each at its size; --size sets only sizes validated)")


OUTLIER_SAMPLE = 100.0  # a calibration sample whose peak |value| is this many times the 90th percentile sample's
FEW_OUTLIER_SAMPLES = 8  # fewer have no percentile to stand out from


def calibration_warnings(feeds: Sequence[Mapping[str, np.ndarray]], streaming: bool = False) -> list[str]:
    """What is wrong with the calibration samples read, in one pass over `feeds` (a file's samples are read row by
    row: each pass reads it again): samples that peak far above the rest (_outliers), or nearly all one sample
    (repeated). `streaming`: steps picked across the sequences, whose positions the user cannot map back."""
    peaks: dict[str, list[float]] = {}
    digests = []
    for feed in feeds:
        digests.append(sample_digest(feed))
        for name, x in feed.items():
            if np.issubdtype(x.dtype, np.floating):
                peaks.setdefault(name, []).append(float(np.abs(x).max(initial=0.0)))
    return _outliers(peaks, streaming) + [said for said in [repeated(digests, "calibration")] if said]


def sample_digest(feed: Mapping[str, np.ndarray]) -> bytes:
    """A cheap fingerprint of one sample's bytes (its inputs' names, dtypes and shapes too): equal samples, equal
    digests."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(feed):
        x = np.ascontiguousarray(feed[name])
        h.update(f"{name}|{x.dtype.str}|{x.shape}|".encode())
        h.update(x.data if x.dtype != object else repr(x.tolist()).encode())
    return h.digest()


REPEATED = 4  # data whose distinct samples are at most 1 in this many is warned of (a loader repeating one batch)


def validation_repeats(val: Dataset) -> tuple[str, ...]:
    """repeated() of the validation data, read once for the run (every target's figures are of it)."""
    said = None if val.random else repeated([sample_digest(f) for f in val.feeds], "validation", val.held_out)
    return (said,) if said else ()


def validation_distinct(val: Dataset) -> tuple[int, int] | None:
    """(distinct samples, samples) of validation data that repeats (as repeated() says), else None: figures of one
    sample over and over are no verdict on the model (the validation_distinct_samples gate)."""
    return None if val.random else repeats([sample_digest(f) for f in val.feeds])


def fewest_distinct(n: int) -> int:
    """The fewest distinct samples among n that repeats() does not count as one sample over and over."""
    return max(2, n // REPEATED + 1)


def repeats(digests: Sequence[bytes]) -> tuple[int, int] | None:
    """(distinct, all) of data that is (nearly) one sample over and over: distinct ones at most 1 in REPEATED."""
    n, distinct = len(digests), len(set(digests))
    return None if n < 2 or (distinct > 1 and distinct * REPEATED > n) else (distinct, n)


def repeated(digests: Sequence[bytes], role: str, held_out: bool = False) -> str | None:
    """Said of data that is (nearly) one sample over and over: 64 all-zero calibration samples (a loader repeating
    one batch) passed every gate without a word, and that int8 model scored cosine 0.55 and 30% top-1 agreement on
    real digits. `held_out`: validation split from the calibration data, which then repeats as well."""
    if (counted := repeats(digests)) is None:
        return None
    distinct, n = counted
    head = f"{'CALIBRATED' if role == 'calibration' else 'VALIDATED'} ON {distinct} DISTINCT SAMPLE(S) OF {n}"
    if role == "calibration":
        return (f"{head}: the int8 ranges are set by those alone (a data loader repeating one batch? constant "
                "inputs?); calibrate on varied real inputs")
    if held_out:
        return (f"{head}, HELD OUT OF CALIBRATION DATA THAT REPEATS THEM: PARITY AND ACCURACY FIGURES MEAN NOTHING "
                "(the int8 model is judged on the very inputs its ranges were set by); give varied calibration data "
                "and --validation data")
    return (f"{head}: parity and accuracy figures are of those alone and do not stand for real inputs; validate on "
            "varied held-out data")


def _outliers(peaks: dict[str, list[float]], streaming: bool) -> list[str]:
    """Calibration samples whose float inputs peak far above nearly all others': one sample 10^4 times the rest set
    every range it reached, int8 parity came out at cosine 0 under every method --auto tried, and nothing named it.
    Against the 90th percentile, not the median: speech frames among twice as many quiet ones are no outlier.
    `peaks`: each float input's peak |x| per calibration sample, in order (`streaming`: steps picked across the
    sequences, counted, not numbered)."""
    said = []
    for name, each in peaks.items():
        usual, top = float(np.percentile(each, 90)), int(np.argmax(each))
        if len(each) < FEW_OUTLIER_SAMPLES or usual <= 0 or each[top] <= OUTLIER_SAMPLE * usual:
            continue
        over = sum(p > OUTLIER_SAMPLE * usual for p in each)
        what = (f"{over} of the {len(each)} calibration steps" if streaming else
                f"calibration sample {top}" + (f" and {over - 1} more" if over > 1 else ""))
        one = over == 1 and not streaming
        them = "it" if one else "them"
        said.append(f"{what} {'reaches' if one else 'reach'} |{name}| {each[top]:.3g}, {each[top] / usual:,.0f}x the "
                    f"90th percentile's {usual:.3g}: the int8 ranges of every layer reached are set by {them} (check "
                    f"the data, or leave {them} out)")
    return said


RANGE_RATIO = 2.0  # validation p99 |x| over calibration's beyond which the calibrated ranges clip validation data
RANGE_SAMPLES = 64  # samples of each data set the percentiles are taken on at most (bounded memory)
RANGE_VALUES = 1 << 20  # values enough for a p99: 64 images of 224x224 took 0.26 s of a 4.4 s export


def range_mismatch(cal: Sequence[Mapping[str, np.ndarray]], val: Sequence[Mapping[str, np.ndarray]]) -> str | None:
    """The float inputs whose validation p99 |x| is over RANGE_RATIO x the calibration's: calibrated on images x0.25,
    a digits CNN failed at 2.3 dB and the only advice was --auto, whose answer was every node float (200 dB).
    Whole samples, in order, until RANGE_VALUES values or RANGE_SAMPLES samples."""
    def p99(feeds, name):
        values, count = [], 0
        for f in feeds[:RANGE_SAMPLES]:
            if name in f and count < RANGE_VALUES:
                values.append(np.abs(f[name]).ravel())
                count += values[-1].size
        return float(np.percentile(np.concatenate(values), 99)) if values else None

    said = []
    for name, x in (cal[0].items() if cal else ()):
        if np.issubdtype(x.dtype, np.floating) and (c := p99(cal, name)) is not None \
                and (v := p99(val, name)) is not None and v > RANGE_RATIO * c:
            said.append(f"{name!r} {v:.3g} vs {c:.3g} ({v / c:,.1f}x)" if c > 0 else f"{name!r} {v:.3g} vs 0")
    return (f"validation inputs lie outside the calibration data's range (p99 |x|, validation vs calibration: "
            f"{'; '.join(said)}): the int8 ranges clip them; calibrate on data like the inputs the model will "
            "see") if said else None


def fixed_shapes(specs, datasets, provider="NNAPI", only="") -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Each input's shape as every calibration and validation sample has it (batch 1 for per-sample data);
    an input whose shape varies across samples stays dynamic, with a warning naming the `provider` that then
    leaves its nodes to the CPU (the coverage gate decides). `only`: the one model fixed (CoreML's), if not all."""
    shapes, warnings = {}, []
    for spec in specs:
        seen = set().union(*(ds.feeds.shapes(spec.name) if isinstance(ds.feeds, Samples)
                             else {tuple(f[spec.name].shape) for f in ds.feeds} for ds in datasets))
        if len(seen) == 1:
            shapes[spec.name] = seen.pop()
        else:
            warnings.append(f"input {spec.name!r} kept dynamic: its shape varies across samples "
                            f"({', '.join(map(str, sorted(seen)[:3]))}, ...); {provider} leaves the nodes that depend "
                            "on it to the CPU: pad the samples to one shape to fix it")
    return shapes, warnings + _fixed_dims_said(specs, shapes, all(ds.random for ds in datasets),
                                               f"{provider}'s {only} (the int8 model keeps it dynamic)" if only
                                               else provider)


def _fixed_dims_said(specs, shapes: dict, random: bool, provider: str) -> list[str]:
    """Each named axis but the batch that is fixed, and to what: only fixed_input_shapes said so, and random
    data's size is its default (16), not one the user chose. The batch's 1 is the README's rule."""
    said = []
    for dim, size in sizes.fixed_dims(specs, shapes).items():
        if sizes.is_batch(specs, dim):
            continue
        holders = [s for s in specs if dim in s.shape]
        first = holders[0]
        example = InputSpec(first.name, tuple(size if d == dim else d for d in first.shape), first.dtype)
        if random:
            why, how = "random data's default size, not one chosen", \
                f"to choose it, write it in --input ({example.typed()})"
        else:
            why, how = "the data's size", "to ship another, give data of that size (--size only sets sizes validated)"
        said.append(f"{dim} fixed to {size} ({why}) for {provider}: the app must pad or cut "
                    f"{', '.join(s.name for s in holders)} to it; {how}")
    return said


NO_CALIBRATION = "no calibration data: give --calibration FILE|DIR|MODULE:FN (or `random`, flagged in the report)"


def for_run(recipe: Recipe, inputs, targets: list[Target]) -> tuple[Dataset, Dataset]:
    """(calibration, validation) for one export: validation is the recipe's own held-out data, or the last
    VALIDATION_FRACTION of the calibration samples; with held-out data, calibration files are read only as
    far as the targets' sample counts need."""
    if recipe.calibration is None or isinstance(recipe.calibration, str) and not recipe.calibration:
        raise UsageError(NO_CALIBRATION)
    # one sample past the cap tells _capped a source was cut; with held-out data of its own, calibration reads
    # only the samples the targets will use
    read = MAX_SAMPLES + 1
    masks = recipe.task == "classify"  # a grid of labels per sample is read only to score a class map
    if recipe.validation is not None:
        read = min(read, max(target_settings(t, recipe.quantize).samples for t in targets))
    with _named("calibration", recipe.calibration):
        cal = _capped(load(recipe.calibration, inputs, seed=recipe.seed, max_bytes=recipe.max_data_bytes,
                           max_samples=read, masks=masks))
    if isinstance(recipe.validation, str) and not recipe.validation:
        raise UsageError("--validation is empty: give FILE|DIR|MODULE:FN, or leave it out to hold out the last 25% "
                         "of the calibration set")
    if recipe.validation is not None:
        if recipe.validation is recipe.calibration or (
                isinstance(recipe.validation, str) and isinstance(recipe.calibration, str)
                and Path(recipe.validation).resolve() == Path(recipe.calibration).resolve()
                and recipe.validation != "random"):
            raise UsageError("--validation is the calibration set: parity must be measured on held-out data "
                             "(leave --validation out to hold out the last 25% of the calibration set)")
        with _named("validation", recipe.validation):
            val = _capped(load(recipe.validation, inputs, seed=recipe.seed + 1, max_bytes=recipe.max_data_bytes,
                               max_samples=MAX_SAMPLES + 1, masks=masks))
        if both := val.read_by(cal.files):  # a folder holding the other
            raise UsageError(f"--validation holds calibration data ({', '.join(both[:3])}, read by both, or the "
                             "same bytes): parity must be measured on held-out data")
        return cal, val
    if cal.random:
        return cal, random_dataset(inputs, 16, recipe.seed + 1, recipe.max_data_bytes)
    return cal.split(VALIDATION_FRACTION)


@contextlib.contextmanager
def _named(role: str, source):
    """A Python object's data errors say which argument holds it: both a calibration and a validation list were
    "data 'list' item 3: ..." (a path or MODULE:FUNCTION names itself)."""
    try:
        yield
    except InputError as e:
        if not isinstance(source, (str, os.PathLike)):
            e.args = (f"{role} {e}",)  # its own class and exit code kept
        raise


def _capped(ds: Dataset) -> Dataset:
    """A source read to one sample past MAX_SAMPLES is cut there, and says so: its figures cover those only."""
    if len(ds) <= MAX_SAMPLES:
        return ds
    return replace(ds, origin=f"{ds.origin} (its first {MAX_SAMPLES} samples: edgekit reads no more)",
                   feeds=ds.feeds[:MAX_SAMPLES], labels=None if ds.labels is None else ds.labels[:MAX_SAMPLES])
