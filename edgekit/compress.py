"""Prune and distill as whole jobs (load → change → measure → save), shared by `edgekit prune`,
`edgekit distill` and the `[prune]`/`[distill]` sections of a recipe."""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from . import calib, distillation, host, pruning, sharing, structure
from .config import DEFAULT_MAX_DATA_BYTES, DistillSettings, InputSpec, PruneSpec, Target, load_target
from .errors import InputError, StageError, UsageError, first_line
from .outdir import whole_file
from .progress import bar

log = logging.getLogger("edgekit")
HOLDOUT = 0.15  # of the training data, for choosing the best distillation epoch


def example_inputs(specs: tuple[InputSpec, ...], sizes: dict[str, int] | None = None):
    """One example per input with batch 1, so MACs are per sample; its other named axes at `sizes` (the data's,
    `data_sizes`), else 2."""
    import torch

    from .onnx_export import example_inputs as make

    one = tuple(dataclasses.replace(s, shape=tuple(1 if i == s.batch_axis and isinstance(d, str) else d
                                                   for i, d in enumerate(s.shape))) for s in specs)
    return make(one, torch, sizes)


def data_sizes(specs: tuple[InputSpec, ...], feed: dict | None) -> dict[str, int]:
    """The named axes' sizes but the batch's in `feed` (a sample or a batch of the data, by input name; none: {}):
    pruned, shared or measured at 2, a Conv1d of kernel 5 over a time axis was refused, a GRU hung Torch-Pruning
    and MACs were 10x too few."""
    from .onnx_export import trace_sizes

    feed = feed or {}
    shapes = {s.name: tuple(feed[s.name].shape) for s in specs if s.name in feed}
    calib.same_named_dims("the data", [s for s in specs if s.name in shapes], shapes)  # T=40 and T=30: MACs at 40
    batch = {s.shape[s.batch_axis] for s in specs if s.batch_axis is not None}
    return {d: n for d, n in trace_sizes(specs, feed).items() if d not in batch}


def batch_sizes(specs: tuple[InputSpec, ...], batches) -> dict[str, int]:
    """`data_sizes` of the first of (inputs, labels) `batches`, if any."""
    if not batches:
        return {}
    inputs = batches[0][0] if isinstance(batches[0][0], (tuple, list)) else (batches[0][0],)
    return data_sizes(specs, {s.name: t for s, t in zip(specs, inputs)})


def runs_on(module, specs: tuple[InputSpec, ...], sizes: dict[str, int] | None = None) -> None:
    """Told before any pruning, clustering or training: a model that fails on its declared inputs is bad input.
    Without the data's `sizes`, each named axis but the batch is 2, which the message says."""
    from .onnx_export import run_example

    try:
        run_example(module, specs, example_inputs(specs, sizes))
    except InputError as e:
        made_up = sorted({d for s in specs for i, d in enumerate(s.shape) if isinstance(d, str) and i != s.batch_axis}
                         - set(sizes or {}))
        if not made_up:
            raise
        raise InputError(f"{e} (run at {', '.join(f'{d}=2' for d in made_up)}, as no data gave their sizes: if that "
                         "is the cause, give data (--data) or fixed sizes in --input)") from e


def load_batches(data, specs: tuple[InputSpec, ...], batch_size: int, models: dict,
                 max_bytes: int = DEFAULT_MAX_DATA_BYTES, held_out: calib.Dataset | None = None):
    """Training batches: (inputs, labels) batches that a `module:function` (or, from Python, an iterable or a
    callable returning one) yields, or labelled samples in any calibration format (.npz, folder, or dicts so
    yielded), checked to fit `models` ({"teacher": module, ...}) before any training starts. None of it may be read
    from `held_out` (the run's validation data), whose accuracy figures would then be on trained samples."""
    from .onnx_export import in_forward_order

    batch_first(specs)
    for module in models.values():  # told before a model runs on the data, which swapped inputs fail (was exit 3)
        in_forward_order(module, specs)

    def apart(files: dict) -> None:
        if held_out is not None and (both := held_out.read_by(files)):
            raise UsageError(f"training data {', '.join(both[:3])} is also the validation data: accuracy must be "
                             "measured on samples no step of the run learned from (pruning's Taylor importance "
                             "included)")

    apart(calib.function_key(data))
    batches = samples = None
    if stream := calib.user_stream(data):
        origin, items = stream
        batches, samples = distillation.batches_from_items(origin, items, specs, max_bytes)
    if batches is None:
        if not specs:
            raise UsageError("the model's inputs (--input, or inputs= in Python) are needed to read sample-wise "
                             "training data")
        # without labels, distillation uses the soft targets alone
        ds = (calib.from_items(origin, samples, specs, max_bytes) if samples is not None else
              calib.load(data, specs, max_bytes=max_bytes))
        apart(ds.files)
        if ds.joined:
            raise InputError(f"{ds.origin}: training items differ in length (batches with a short last one?): give "
                             "one sample per item, or batches of one size")
        if isinstance(data, str) and data == "random":
            log.warning("training on random inputs (--data random): the student learns the teacher on noise only")
        batches, origin = distillation.batches_from_samples(ds.feeds, ds.labels, [s.name for s in specs],
                                                            batch_size, HOLDOUT), ds.origin
    distillation.check_fits(origin, models, batches)
    return batches


def batch_first(specs: tuple[InputSpec, ...]) -> None:
    """Training joins samples and counts them along the first axis: a time-major x:TxNx8's (T, 1, 8) samples were
    joined into one (k*T, 1, 8) sequence, and distillation returned ok with kd_loss 0.0."""
    for s in specs:
        if s.batch_axis:
            raise UsageError(f"input {str(s)!r} has its batch along axis {s.batch_axis} ({s.shape[s.batch_axis]}): "
                             "prune, distill and share train with the batch axis first; give them a batch-first "
                             "model (e.g. batch_first=True)")


def split(batches):
    """Hold out the last batches holding HOLDOUT of the samples, for model selection (never the final held-out
    evaluation set)."""
    if len(batches) < 2:
        raise InputError("training data needs at least 2 batches (one is held out to pick the best epoch)")
    sizes = [len(inputs[0]) for inputs, _ in batches]
    want, held, n_val = max(1, round(sum(sizes) * HOLDOUT)), 0, 0
    while held < want and n_val < len(batches) - 1:
        n_val += 1
        held += sizes[-n_val]
    return batches[:-n_val], batches[-n_val:]


def run_prune(module, specs, spec: PruneSpec, batches=None, target: Target | None = None,
              sizes: dict[str, int] | None = None) -> pruning.PruneResult:
    """`round_to = "auto"` first times each candidate multiple's int8 build for `target` (default: this host's kind's
    bundled profile, desktop-x86 or arm64-linux). `sizes`: the named axes' (the data's) to trace and count at."""
    choice = None
    if spec.round_to == "auto":
        from . import rounding

        if spec.method != "structured":
            raise UsageError("round_to auto rounds channel counts: it needs structured pruning")
        here = rounding.HERE.get(host.arch(), "desktop-x86")
        choice = rounding.choose(module, specs, spec, target or load_target(here), batches, sizes=sizes)
        spec = dataclasses.replace(spec, round_to=choice.chosen)
    result = pruning.prune(module, example_inputs(specs, sizes), ratio=spec.ratio, method=spec.method,
                           importance=spec.importance, ignore=spec.ignore, round_to=spec.round_to or None,
                           batches=batches, stage_ratios=spec.stage_ratios)
    return dataclasses.replace(result, rounding=choice, sizes=sizes or None)


def run_distill(teacher, student, batches, settings: DistillSettings, out: Path | None, progress: bool,
                tied: dict | None = None):
    """Distill; with `out`, the best student so far is saved there (atomically) at each improvement. `tied`:
    a shared student's clusters (sharing.cluster; else those of the layers marked shared, as a share file's
    are), tied again after every step; `out` names them in turn. A student no smaller than the teacher is warned of
    here, for `edgekit distill` and a recipe's [distill] alike (was the CLI's only); a shared one keeps its size on
    purpose."""
    train, val = split(batches)
    if tied is None and (tied := sharing.clusters_of(student)):
        log.info("distilling a shared student: %d layer(s) keep their shared values", len(tied))
    said = [] if tied else distillation.no_smaller(teacher, student)
    for warning in said:
        log.warning("%s", warning)
    saved = []

    def save_best(model, row):
        if out is not None:
            save(model, out, {"edgekit_distill_epoch": row["epoch"]})
            saved.append(row["epoch"])

    with bar("distilling", settings.epochs, progress) as advance:
        try:
            result = distillation.distill(
                teacher, student, train, val, settings, on_best=save_best,
                after_step=(lambda: sharing.tie(student, tied)) if tied else None, progress=lambda row: advance(
                    1, f"epoch {row['epoch']} loss {row['train_loss']:.4f} "
                       + " ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "train_loss"))))
        except StageError as e:  # a later epoch diverged: what is at `out` is whole, and the best before it
            if saved:
                raise StageError(e.stage, f"{e.message}; {out} holds the best student before it (epoch "
                                          f"{saved[-1]})") from e
            raise
    result.warnings += said
    return result


def check_out(out: str | Path | None, force: bool) -> Path | None:
    """`out` as a Path, refused before any work when something is already there and `force` is not set: prune,
    distill and share write a new file, and replacing one (the user's notes, the very weights being pruned) must
    be asked for."""
    if out is None:
        return None
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {path}: is a folder; give the file to write")
    if (path.exists() or path.is_symlink()) and not force:
        raise UsageError(f"--out {path} already exists: edgekit writes a new file (--force replaces it)")
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: no folder {path.parent} to write it in")
    if not os.access(path.parent, os.W_OK | os.X_OK):  # told now, not after the pruning or training
        raise UsageError(f"--out {path}: its folder {path.parent} cannot be written")
    return path


def save(module, out: Path, extra: dict | None = None, check=None) -> None:
    """Written whole or not at all; `check(path)` (when given) judges the written file before it becomes `out`.
    A module with shared layers names them (`edgekit_share`), so a later distill or export keeps them tied."""
    if layers := sharing.marked(module):
        extra = {"edgekit_share": {"layers": list(layers)}, **(extra or {})}
    with whole_file(out) as partial:
        structure.save(module, partial, extra)
        if check:
            check(partial)


def verify_reload(source: str, path: Path, changed, specs, what: str, sizes: dict[str, int] | None = None) -> None:
    """Reload the saved file into a freshly built model and compare outputs: a layer whose sizes the
    file cannot carry is found now, not at export time. `what`: how the model was changed (pruned, shared)."""
    import torch

    from .load import load_model
    from .runtime import flatten_outputs

    example = example_inputs(specs, sizes)
    try:
        fresh = load_model(source, str(path)).module
        with torch.no_grad():
            same = all(torch.allclose(a, b, atol=1e-5) for a, b in
                       zip(flatten_outputs(fresh(*example)), flatten_outputs(changed(*example))))
    except InputError as e:
        raise StageError(f"{what} model reload", str(e)) from e
    except Exception as e:  # the rebuilt model does not run with the saved sizes
        fixed = [n for n, m in changed.named_modules() if isinstance(m, torch.nn.MultiheadAttention)]
        hint = (f": attention's sizes are fixed when it is built, so it cannot be rebuilt {what} "
                f"({' '.join(f'--ignore {n}' for n in fixed)})" if fixed and what == "pruned" else "")
        raise StageError(f"{what} model reload", f"{source} rebuilt with the saved file fails ({type(e).__name__}: "
                         f"{first_line(e)}){hint}") from None
    if not same:
        raise StageError(f"{what} model reload", f"{source} rebuilt with the saved file gives different outputs (does "
                                                 "it build values the state dict does not hold, e.g. an unseeded "
                                                 "non-persistent buffer?)")
