"""The one place that knows the stage order of `edgekit export`.

once:        load → export (once per distinct opset) → pre-process → parity torch vs ONNX fp32
per target:  plan → calibrate+quantize → parity fp32 vs int8 → latency → package
then:        publish every target folder atomically
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import logging
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import (CHECKABLE_BY, __version__, archive, bench, calib, config, constants, contract, emulated_kernels,
               emulator, host, inspect_model, layers, mobile, model_claims, onnx_export, outdir, package, package_check,
               parity, pixels, precision, quantization, residuals, sequences, sharing, signals, sizes, tune, verdict)
from .config import (DistillSettings, InputSpec, PruneSpec, Recipe, ShareSpec, Target, overrides,
                     recipe_names, target_settings)
from .errors import EdgekitError, InputError, StageError, UsageError, said_as
from .device import Device
from .load import load_model
from .progress import Laps, Timings, bar, host_where
from .reports import (ARM_STAND_IN, ExportReport, LatencyReport, TargetReport, shipped_model, user_path_patterns,
                      without_folders)
from .runtime import (flushing, forget_sessions, int8_session, nonfinite_output, ort_log_level, run_calibration,
                      run_onnx, run_torch, runs_limited, session, stepper)
from .userfn import seeded, user_code_scope

log = logging.getLogger("edgekit")


@dataclasses.dataclass
class Shared:
    """What every target of one run shares."""

    recipe: Recipe
    source: str  # the model as the manifest names it
    inputs: tuple[InputSpec, ...]  # what the data feeds (pinned constants excluded)
    pinned: dict  # input name → the value it is pinned to
    defaults: dict  # an .onnx's optional inputs left at their (small) default values, baked in
    init: dict  # a streaming model's initial state values from state_init files (zeros for the others)
    cal: calib.Dataset
    val: calib.Dataset
    torch_val: list | None  # torch outputs on the validation set (None for an .onnx source)
    stage: Path
    progress: bool
    compression: dict | None  # params, MACs and accuracy before/after pruning and distillation
    # --emulate: ARM targets' int8 outputs from real aarch64 kernels, or x86-64 targets judged on an x86-64 CPU's too
    emulator: emulator.Emulator | None = None
    device: Device | None = None  # a device over SSH: its kind of targets' latency and check run there
    said: tuple[str, ...] = ()  # the run's own warnings, in each target's: loading the model's, the data's
    val_repeats: tuple[int, int] | None = None  # (distinct, samples) of validation data repeating one sample
    labels: list[str] | None = None  # the recipe's class names (package.read_labels), shipped as labels.txt
    source_sha256: str | None = None  # the digest of an .onnx source's bytes as checked, not of a later read

    @property
    def task(self) -> str:
        """The recipe's task; `auto`: classify when the validation data has labels (a streaming model's steps
        have them exactly when its sequences do), else other."""
        task = self.recipe.task
        return task if task != "auto" else "classify" if self.val.labels is not None else "other"

    @property
    def judged_task(self) -> str:
        """The task parity and its gates take: `auto` stays auto where it became other for want of labels, so that an
        output reading as class scores has its top-1 agreement measured and held (parity.unlabelled_top1_gate)."""
        return "auto" if self.recipe.task == "auto" and self.task == "other" else self.task

    @property
    def plain(self) -> tuple[str, ...]:
        """A streaming model's state outputs: judged by cosine and SQNR only, never the scored output."""
        return tuple(self.recipe.state.values())

    @functools.cached_property
    def user_files(self) -> tuple[dict[str, str], list]:
        """The user's files as a package names them, made once for every target: ({source_sha256, weights_sha256}
        of the model's and the weights' files, user_path_patterns of every path the run read)."""
        paths = user_paths(self.recipe)
        digests = {f"{role}_sha256": self.source_sha256
                   if role == "source" and self.source_sha256 is not None else package.sha256(Path(paths[role]))
                   for role in ("source", "weights") if role in paths and Path(paths[role]).is_file()}
        return digests, user_path_patterns(paths.values())

    def compare(self, data: str, outputs: tuple[InputSpec, ...], reference: list, candidate: list,
                kernels: str | None = None, labels=None, task: str | None = None) -> parity.StageParity:
        """`candidate` against `reference` sample by sample; a state output is judged by cosine and SQNR only.
        `outputs`: the graph's, whose shapes say which lengths follow the values (parity.compare); `labels` (the
        data's class ids) pick the output scored, as accuracy does. `task`: the run's task unless given."""
        labels = labels if parity.labels_are_classes(self.task) else None
        return parity.StageParity(data, len(candidate), tuple(parity.compare(
            [o.name for o in outputs], reference, candidate, task or self.task, self.plain, labels,
            [o.shape for o in outputs])), kernels)


@dataclasses.dataclass
class Prepared:
    """The fp32 ONNX model for one opset and its reference outputs."""

    fp32: Path
    model: object  # fp32 parsed once (onnx.ModelProto, every node named): each target's copy starts from it
    outputs: tuple[InputSpec, ...]
    fp32_val: list
    export_parity: parity.StageParity | None
    preprocessing: str  # the pre-processing steps skipped and why ("" when none were)
    size_checks: list[sizes.SizeCheck]  # the float model at sizes of its dynamic axes the data does not have
    cal: calib.Dataset  # as the models are fed: for a streaming model, steps with the float model's state
    val: calib.Dataset
    rollout: sequences.Rollout | None  # the float model over the validation sequences (streaming models)
    exporter: str | None = None  # the one that made it (None: an .onnx source; dynamo for a .pt2 program)
    traced: tuple[str, ...] = ()  # what the tracer warned of
    cal_lengths: tuple[int, ...] = ()  # steps per calibration sequence (streaming models)
    calibration_ran: int = 0  # the leading calibration samples run under the run limit (_bounded_calibration)
    given_opset: int = 0  # an .onnx source's own ai.onnx opset (pre-processing converts one below 11 to 11)

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @functools.cached_property
    def observed(self) -> dict[str, list[float]]:
        """Each input's range over the calibration data (the runtime contract's), read once for every target."""
        return contract.ranges(self.cal.feeds)


def run(recipe: Recipe, targets: list[Target], progress: bool = True) -> ExportReport:
    onnx_source = isinstance(recipe.source, (str, Path)) and str(recipe.source).endswith(".onnx")
    signals.import_for("export", torch=not onnx_source)  # an .onnx run imports torch only to flush denormals
    import onnxruntime

    onnxruntime.set_default_logger_severity(ort_log_level())  # edgekit reports what matters, in one line
    try:
        with seeded(recipe.seed), user_code_scope(), flushing(), \
                runs_limited(recipe.step_timeout, "--step-timeout"):
            return _run(recipe, targets, progress)
    finally:
        forget_sessions()


COMPRESSION_NEEDS_TORCH = "[prune]/[share]/[distill] need a MODULE:FUNCTION or FILE.py:FUNCTION model"


def refuse_for_streaming(recipe: Recipe) -> None:
    """What a streaming model's recipe cannot ask, told before any work (export, and a search before its trials,
    which dropped [distill] silently)."""
    if recipe.state and recipe.sizes:  # taken, and never validated: its data has no other size to make
        raise UsageError("--size/sizes: a streaming model (state) is validated step by step over its sequences, "
                         "not at other sizes of an axis: leave it out")
    if recipe.state and (recipe.prune or recipe.share or recipe.distill):  # its data are sequences: was exit 5
        raise UsageError("[prune], [share] and [distill] do not step a streaming model (state) through its "
                         "sequences: leave them out (int8 is its compression; a recurrent cell is not pruned, shared "
                         "or distilled by edgekit)")


def refuse_c_name(recipe: Recipe, targets: list[Target]) -> None:
    """A C name that no C file would hold, or that no target's package uses: told before any work."""
    if not config.C_NAME_FORM.fullmatch(recipe.c_name):
        raise UsageError(f"--c-name {recipe.c_name!r}: a lower-case C name, a letter then at most 31 letters, "
                         "digits or _ (it names <c_name>_data.h, edgekit_<c_name>_data and EDGEKIT_<C_NAME>_SIZE)")
    if recipe.c_name != config.C_NAME and not any(t.package.c_header for t in targets):
        raise UsageError(f"--c-name {recipe.c_name}: no target here ships C files (a profile's c_header: "
                         f"arm64-linux's does), so it names nothing")


NEEDS_INPUTS = "a torch model needs its inputs: --input NAME:SHAPE[:DTYPE], e.g. image:Nx3x224x224"


def refuse_incomplete(recipe: Recipe) -> None:
    """What no run can start without, told before OUT is made (a search's trials each failed on it, leaving OUT)."""
    if recipe.calibration is None or isinstance(recipe.calibration, str) and not recipe.calibration:
        raise UsageError(calib.NO_CALIBRATION)
    if not recipe.inputs and not (isinstance(recipe.source, str) and recipe.source.endswith(".onnx")):
        raise UsageError(NEEDS_INPUTS)


def _run(recipe: Recipe, targets: list[Target], progress: bool) -> ExportReport:
    out = Path(recipe.out)
    names = [t.name for t in targets] + ([f"{t.name}.tar.gz" for t in targets] if recipe.archive else [])
    outdir.check_replaceable(out, names, recipe.force)  # before any work; again under OUT's lock
    for target in targets:  # a combination of settings onnxruntime refuses, told now, not after calibration
        target_settings(target, recipe.quantize)
    refuse_for_streaming(recipe)
    refuse_c_name(recipe, targets)
    labels = package.read_labels(recipe.labels) if recipe.labels is not None else None  # told before any work
    # the run's time from here: an emulator built on its first use (~40 s) and a device's probe are in the total
    laps = Laps()
    started = laps.at
    emulated = emulator_for(recipe, targets)
    device = device_for(recipe, targets)
    if recipe.emulate is not None or recipe.device is not None:
        laps.mark("emulator/device setup")
    published = False
    try:  # OUT is made (and locked) before any work: a place no folder can be made was told
        # after the data were read and the model pruned and distilled
        with outdir.staging(out, names, recipe.force) as stage:
            loaded = load_model(recipe.source, recipe.weights, recipe.trust_checkpoint, exporting=True)
            laps.mark("load")
            own = loaded.module  # the user's module, before _inputs wraps it (uint8 pixels, pinned constants)
            inputs, pinned, defaults = _inputs(recipe, loaded)
            specs = sequences.data_specs(inputs, recipe.state) if recipe.state else inputs
            cal, val = calib.for_run(recipe, specs, targets)
            if val.labels is not None and not parity.labels_are_classes(recipe.task):  # scored nowhere as class ids
                val = dataclasses.replace(val, labels=None)
            package.golden_count(val.feeds, 1)  # a sample no golden file can hold: told before any work
            init = sequences.initial_values(recipe.state_init, inputs, recipe.state, recipe.max_data_bytes)
            timed_here = next((t for t in targets if t.runtime.arch == host.arch()), targets[0])  # round_to auto's
            laps.mark("data")
            compression = (_compress(recipe, loaded, own, inputs, val, timed_here, progress)
                           if recipe.prune or recipe.share or recipe.distill else None)
            if compression:
                laps.mark("compress")
            torch_val = _torch_outputs(recipe, loaded, inputs, val, init)
            if torch_val is not None:
                laps.mark("torch outputs")
            shared = Shared(recipe, loaded.source, inputs, pinned, defaults, init, cal, val, torch_val, stage, progress,
                            compression, emulated, device, loaded.warnings + calib.validation_repeats(val),
                            calib.validation_distinct(val), labels,
                            hashlib.sha256(loaded.checked.data).hexdigest() if loaded.is_onnx else None)
            prepared: dict[int, Prepared] = {}
            reports = {}
            for target in targets:
                opset = 0 if loaded.is_onnx else target.opset
                if opset not in prepared:
                    prepared[opset] = _prepare(loaded, shared, opset)
                    laps.mark(f"ONNX opset {opset} + float runs" if opset else "ONNX prep + float runs")
                reports[target.name] = _target(shared, target, prepared[opset])
                laps.at = time.perf_counter()  # the target's own laps hold its time
            outdir.publish(stage, out, names, stale=[] if recipe.archive else [f"{t.name}.tar.gz" for t in targets])
            published = True
        laps.mark("publish")  # with the stage's teardown (the output it replaced removed)
        if earlier := outdir.earlier_packages(out, names):
            log.warning("%s also holds %s, which this run did not make (`edgekit check` of the folder checks it "
                        "too): remove what is out of date", out, ", ".join(earlier))
    except KeyboardInterrupt:
        if published:  # a signal during the stage's clean-up: the new output is in place
            raise signals.InterruptedAfterPublish() from None
        raise
    finally:
        if device is not None:
            device.close()
    return ExportReport(reports, out.absolute(), Timings(  # a caller that changes folder still finds it
        host_where(), laps.seconds, {name: r.timings for name, r in reports.items()}, time.perf_counter() - started,
        {t.name: t.runtime.threads for t in targets}))


def _torch_outputs(recipe: Recipe, loaded, inputs, val, init: dict) -> list | None:
    """The torch model's outputs on the validation data (step by step over sequences for a streaming model)."""
    if loaded.module is None:
        return None
    names = [s.name for s in inputs]
    if not recipe.state:
        return run_torch(loaded.module, val.feeds, names)
    if not recipe.output_names:
        raise UsageError("a streaming torch model needs --output-name for each output: --state names the one fed back")
    sequences.check_outputs(recipe.state, list(recipe.output_names))
    return sequences.rollout(lambda feed: run_torch(loaded.module, [feed], names)[0], val.feeds, inputs,
                             list(recipe.output_names), recipe.state, init).outputs


def _inputs(recipe: Recipe, loaded) -> tuple[tuple[InputSpec, ...], dict, dict]:
    """(the inputs the data feeds, the pinned constants, the optional inputs kept at their defaults); a torch
    module is wrapped to take only the first."""
    specs, optional = _model_inputs(recipe, loaded)
    if recipe.image_uint8:
        loaded.module = pixels.fold(recipe.image_uint8, loaded, specs)
    pinned = constants.resolve(recipe.constants, specs + tuple(spec for spec, _ in optional.values()))
    if pinned and loaded.program is not None:
        raise UsageError("constants cannot be pinned in a torch.export (.pt2) program; export it from its "
                         "MODULE:FUNCTION, or pin them in an .onnx")
    if pinned and loaded.module is not None:
        loaded.module = constants.pin_module(loaded.module, [s.name for s in specs], pinned)
    # Old exporters list every weight as an optional input: only small defaults are configuration worth listing
    defaults = {name: value for name, (_, value) in optional.items() if name not in pinned and value.size <= 16}
    return tuple(s for s in specs if s.name not in pinned), pinned, defaults


def _model_inputs(recipe: Recipe, loaded) -> tuple[tuple[InputSpec, ...], dict]:
    """(the inputs the data must feed, an .onnx's optional inputs: {name: (spec, default)})."""
    if not loaded.is_onnx:
        if not recipe.inputs:
            raise UsageError(NEEDS_INPUTS)
        # the exporter renamed these without a word (a.1, "5") or failed late (an input's name)
        names, taken = list(recipe.output_names), {s.name for s in recipe.inputs}
        if (bad := next((n for i, n in enumerate(names) if not n.strip() or n in names[:i] or n in taken), None)) \
                is not None:
            raise UsageError(f"--output-name {bad!r}: " + ("empty" if not bad.strip() else "given twice"
                                                           if names.count(bad) > 1 else "is an input's name"))
        onnx_export.in_forward_order(loaded.module, recipe.inputs)  # before a run on data fails of it (was exit 3)
        return recipe.inputs, {}
    if recipe.output_names:
        raise UsageError("--output-name does not apply to an .onnx source (its outputs are already named)")
    sized: dict[str, tuple[int, ...]] = {}
    model = onnx_export.load_onnx_input(loaded.onnx_path, shapes=shapes_of(recipe.inputs), sized=sized,
                                        checked=(read := []))
    loaded.checked = read[0]
    label = str(loaded.onnx_path)
    inspect_model.check_quantizable(model, label)
    found, _ = onnx_export.io_specs(model, label)
    found = tuple(dataclasses.replace(s, sized_by_input=sized.get(s.name, ())) for s in found)
    if recipe.inputs:
        given = [(s.name, len(s.shape), s.dtype) for s in recipe.inputs]
        if given != [(s.name, len(s.shape), s.dtype) for s in found]:
            raise UsageError(f"--input {', '.join(map(str, recipe.inputs))} does not match the model's inputs "
                             f"{', '.join(s.typed() for s in found)}")
    return found, onnx_export.optional_inputs(model, label)


def shapes_of(specs) -> dict[str, tuple]:
    """--input's shapes by name: an .onnx takes their sizes (onnx_export.shaped_inputs)."""
    return {s.name: s.shape for s in specs}


def _compress(recipe: Recipe, loaded, own, inputs, val, target: Target, progress: bool) -> dict:
    """Prune and/or distill the torch model before export; record size and accuracy after each step. `round_to =
    "auto"` is measured for `target`'s int8 settings (the first of this host's kind). Layer names in [prune]/[share]
    are `own` module's, the user's, even when it runs wrapped (raw pixels in, constants pinned)."""
    from . import compress

    import torch

    if loaded.module is None or loaded.program is not None or isinstance(loaded.module, torch.jit.ScriptModule):
        raise UsageError(COMPRESSION_NEEDS_TORCH)
    prefix = next((f"{name}." for name, m in loaded.module.named_modules() if m is own and name), "")
    prune = recipe.prune and dataclasses.replace(
        recipe.prune, ignore=tuple(prefix + n for n in recipe.prune.ignore),
        stage_ratios={prefix + k: v for k, v in recipe.prune.stage_ratios.items()})
    names = [s.name for s in inputs]
    sizes = compress.data_sizes(inputs, val.feeds[0])
    compress.runs_on(loaded.module, inputs, sizes)
    example = compress.example_inputs(inputs, sizes)

    def step(name, module, **extra):
        from .pruning import count

        params, macs = count(module, example)
        acc = parity.accuracy(run_torch(module, val.feeds, names), val.labels) if val.labels is not None else None
        return {"step": name, "params": params, "macs": macs, "accuracy": acc, **extra}

    steps = [step("original", loaded.module)]
    teacher = copy.deepcopy(loaded.module)
    record = {}
    if prune:
        data = prune.taylor_data(recipe.distill)
        batches = (compress.load_batches(data, inputs, 32, {"model": loaded.module}, recipe.max_data_bytes, val)
                   if prune.importance == "taylor" and data else None)
        try:
            with said_as(recipe_names("prune", PruneSpec)):
                result = compress.run_prune(loaded.module, inputs, prune, batches, target, sizes)
        except StageError as e:  # its --ignore advice names the user's layers, as [prune] ignore takes them
            raise StageError(e.stage, _users_names(e.message, prefix)) from e
        record["prune"] = dataclasses.replace(result, ignored=tuple(n.removeprefix(prefix) for n in result.ignored),
                                              stage_ratios=recipe.prune.stage_ratios or None,
                                              warnings=tuple(_users_names(w, prefix) for w in result.warnings),
                                              heads={n.removeprefix(prefix): h for n, h in result.heads.items()}
                                              if result.heads else None).as_dict()
        steps.append(step("pruned", loaded.module))
    tied = None
    share_ignore = tuple(prefix + n for n in recipe.share.ignore) if recipe.share else ()
    if recipe.share:
        with said_as(recipe_names("share", ShareSpec)):
            tied = sharing.cluster(loaded.module, recipe.share.clusters, share_ignore)
        steps.append(step("shared", loaded.module))
    if recipe.distill:
        settings = dataclasses.replace(recipe.distill, features=tuple(  # layer names are the user's, as above
            ":".join(prefix + name for name in pair.split(":", 1)) for pair in recipe.distill.features))
        with said_as(recipe_names("distill", DistillSettings)):
            batches = compress.load_batches(recipe.distill.data, inputs, recipe.distill.batch_size,
                                            {"teacher": teacher, "student": loaded.module}, recipe.max_data_bytes, val)
            record["distill"] = compress.run_distill(teacher, loaded.module, batches, settings, None, progress,
                                                     tied).as_dict()
        steps.append(step("distilled", loaded.module))
    if recipe.share:
        clustered = sharing.result(loaded.module, recipe.share.clusters, tied, share_ignore)
        record["share"] = dataclasses.replace(
            clustered, layers=tuple(n.removeprefix(prefix) for n in clustered.layers),
            unshared=tuple(dataclasses.replace(u, weight=u.weight.removeprefix(prefix)) for u in clustered.unshared)
        ).as_dict()
    loaded.module.eval()
    return {"steps": steps, **record, "accuracy_data": val.origin if val.labels is not None else None,
            "sizes": sizes or None}  # the named axes' sizes of the sample the steps' MACs count


def _users_names(text: str, prefix: str) -> str:
    """Layer names in a message as the user's model has them, not the wrapper's (`prefix`: "inner.")."""
    return re.sub(rf"(?<![\w.]){re.escape(prefix)}", "", text) if prefix else text


def _compression_warnings(compression: dict | None) -> list[str]:
    """Prune's, share's and distill's warnings (a prune that removed nothing, weights left unshared, a student no
    smaller): on stderr alone, the report showed a "pruned" step as if it had happened."""
    return [said for step in ("prune", "share", "distill") for said in ((compression or {}).get(step) or {})
            .get("warnings", ())]


BAKED_SIZE = ("the export traced the model at the first sample's size of each dynamic axis (2 for a size of 1) and "
              "kept a size as a constant (int(x.shape[i]), .item(), a Python loop over a size)")


def _baked_size(exporter: str | None) -> str:
    """Why an exported model breaks at the data's sizes, and what to do (dynamo is no remedy to a dynamo export)."""
    return BAKED_SIZE + ("" if exporter == "dynamo" else ": --exporter dynamo, or fixed sizes in --input")
BAKED_SIZE_SIGNS = re.compile(r"(?i)dimension|shape|reshape|broadcast")  # onnxruntime's words for a size that differs


def _prepare(loaded, shared: Shared, opset: int) -> Prepared:
    work = shared.stage / ".work" / f"opset{opset}"
    work.mkdir(parents=True)
    exporter = None if loaded.is_onnx else "dynamo" if loaded.program else shared.recipe.exporter
    traced: list[str] = []
    given = None  # an .onnx source as checked, in the stage's folder: _given_outputs runs it
    if loaded.is_onnx:
        given = onnx_export.given_copy(loaded.checked, work / "given")
        loaded.checked = loaded.checked.released()
        raw = onnx_export.without_initializer_inputs(given, work / "input.onnx", shapes_of(shared.inputs),
                                                     str(loaded.onnx_path))
        if shared.pinned:
            raw = constants.pin_onnx(raw, work / "pinned.onnx", shared.pinned)
    else:
        recipe = shared.recipe
        sizes = None if recipe.state else onnx_export.trace_sizes(shared.inputs, shared.val.feeds[0])
        raw = onnx_export.export_torch(loaded.program or loaded.module, shared.inputs, recipe.output_names, opset,
                                       work / "exported.onnx", exporter, traced, sizes)
    fp32, preprocessing = onnx_export.preprocess(raw, work / "model.onnx", shared.recipe.step_timeout,
                                                 exported=not loaded.is_onnx, raised_by="--step-timeout")
    if loaded.is_onnx and not shared.recipe.state:  # a file from others (a streaming model's feeds need its state)
        _first_run(fp32, shared)
    model = onnx_export.parsed(fp32)
    onnx_export.name_nodes(model)
    kept, outputs = onnx_export.io_specs(model, loaded.source)  # the user's name for it, not torch's "main_graph"
    if dropped := [s.name for s in shared.inputs if s.name not in {k.name for k in kept}]:  # onnxruntime refused it
        raise UsageError(f"input {dropped[0]!r} is not used by the model, and torch's exporter left it out of the "
                         "ONNX graph: leave it out of --input (and the data), or --exporter dynamo, which keeps it")
    names = [o.name for o in outputs]
    try:
        cal, val, fp32_val, fp32_rollout, cal_lengths = _steps(shared, fp32, names)
    except StageError as e:  # an exported model that runs only at the sizes it was traced at
        if loaded.is_onnx or e.stage != "onnxruntime run" or not BAKED_SIZE_SIGNS.search(e.message):
            raise
        raise StageError("export", f"model.onnx does not run the data: {e.message}; {_baked_size(exporter)}") from e
    # else the int8 model's golden outputs took the blame for the model's own
    nonfinite_output(names, fp32_val, f"validation {'step' if shared.recipe.state else 'sample'}",
                     hint=_random_blamed("validation") if shared.val.random else "")
    if shared.torch_val is not None and (moved := next(((n, r.shape, c.shape) for t, f in zip(
            shared.torch_val, fp32_val) for n, r, c in zip(names, t, f) if r.shape != c.shape
            and not _follows_values(shared.inputs, outputs[names.index(n)], [o[names.index(n)] for o in fp32_val],
                                    r.shape)), None)):
        raise StageError("export", f"output {moved[0]!r} is {list(moved[2])} in model.onnx where torch gives "
                                   f"{list(moved[1])}; {_baked_size(exporter)}")
    reference = shared.torch_val if shared.torch_val is not None else _given_outputs(given, shared, val)
    export_parity = shared.compare(val.origin, outputs, reference, fp32_val, labels=val.labels)
    prep = Prepared(fp32, model, outputs, fp32_val, export_parity, preprocessing, [], cal, val, fp32_rollout,
                    exporter, tuple(traced), tuple(cal_lengths),
                    given_opset=loaded.checked.opset if loaded.is_onnx else 0)
    return dataclasses.replace(prep, size_checks=_size_checks(loaded, shared, prep))


def _first_run(fp32: Path, shared: Shared) -> None:
    """An .onnx's first run (onnx_export.first_run). One that fails on random data whose sizes edgekit chose for
    the model's named axes is the data's fault, said with those sizes and how to set them (it was exit 4 naming an
    optimiser's node, '/1/Relu_output_0_nchwc', of a model fed 16 channels on an axis it named)."""
    feed = shared.val.feeds[0]
    try:
        onnx_export.first_run(fp32, feed, shared.recipe.step_timeout)
    except StageError as e:
        said = calib.random_sizes_said(shared.inputs, feed) if shared.val.random else ""
        if not (said and (failed := _ORT_RUN_FAILED.search(e.message))):
            raise
        raise InputError(f"the model does not run on random data ({failed.group(1)}: {failed.group(2)}): {said}") \
            from e


_ORT_RUN_FAILED = re.compile(r"Non-zero status code returned while running (\w+) node\..*?Status Message: (.*)", re.S)


def _follows_values(inputs, output: InputSpec, onnx_values: list, torch_shape: tuple) -> bool:
    """Whether model.onnx's length of `output`, not torch's, follows the values (a threshold's nonzero(), NMS: a
    score one float step apart at the cut), not a size the trace baked in: it differs from sample to sample, or the
    graph leaves the differing dim open under a name no input has (NonZero's count). export parity measures it."""
    if len({np.shape(v) for v in onnx_values}) > 1:
        return True
    shape, named = np.shape(onnx_values[0]), {d for i in inputs for d in i.shape if isinstance(d, str)}
    return len(shape) == len(torch_shape) == len(output.shape) and all(
        isinstance(output.shape[a], str) and output.shape[a] not in named
        for a in range(len(shape)) if shape[a] != torch_shape[a])


def _given_outputs(given: Path, shared: Shared, val: calib.Dataset) -> list:
    """An .onnx source's outputs as the user's file gives them (onnxruntime, the pinned inputs fed): what model.onnx,
    the file after pre-processing, is held to by the export gates (an opset-10 Resize lost its coordinates there).
    `given`: the file as checked, copied into the stage (given_copy), not the user's read again."""
    sess = session(given, threads=host.work_threads())[0]
    return run_onnx(sess, [{**feed, **shared.pinned} for feed in val.feeds])


# an emulated CPU's arch → the targets' arch whose int8 outputs it computes
EMULATED_FOR = {emulator.ARCH: "arm64", emulator.X86: "x86_64"}


def emulator_for(recipe: Recipe, targets: list[Target]) -> emulator.Emulator | None:
    """The emulated CPU for --emulate (built in the cache on first use), told before any work: aarch64 computes ARM
    targets' int8 outputs, x86_64 judges x86-64 targets on its kernels too (an AVX2 CPU's, which saturate)."""
    if recipe.emulate is None:  # "" (an unset $EMU in CI) is refused below, not taken for no emulation
        return None
    arch = emulator.parse(recipe.emulate)[0]
    if recipe.state:
        raise UsageError("--emulate does not replay streaming models yet: check the package with "
                         "`edgekit check --emulate` instead")
    kind = EMULATED_FOR[arch]
    if not any(t.runtime.arch == kind for t in targets):
        raise UsageError(f"--emulate {recipe.emulate} computes {kind} targets' int8 outputs; none of the targets is "
                         f"{kind} ({', '.join(t.name for t in targets)})")
    return emulator.setup(recipe.emulate)


def device_for(recipe: Recipe, targets: list[Target]) -> Device | None:
    """The device of --device, asked its kind and whether it can make this run's folder before any work (a dead
    link or a folder that cannot be made fails now, exit 4)."""
    if recipe.device is None:
        return None
    device = Device(recipe.device)
    if not any(t.runtime.arch == device.arch for t in targets):
        raise UsageError(f"{device.label} is {device.arch}; none of the targets is "
                         f"({', '.join(t.name for t in targets)})")
    device.make_run_folder()  # a folder that cannot be made fails now, not after the export (or every search trial)
    device.close()  # taken away again (the run may stop before its try): made anew for the first copy
    return device


def _steps(shared: Shared, fp32: Path, names: list[str]):
    """(calibration, validation) as the models are fed, the float model's validation outputs, its rollout and the
    calibration sequences' lengths: for a streaming model every step of every sequence with the state the float model
    carried."""
    sess = session(fp32, threads=host.work_threads(), reuse=True)[0]
    if not shared.recipe.state:
        return shared.cal, shared.val, run_onnx(sess, shared.val.feeds), None, ()
    sequences.check_outputs(shared.recipe.state, names)
    cal, val = (sequences.rollout(stepper(sess), data.feeds, shared.inputs, names,
                                  shared.recipe.state, shared.init) for data in (shared.cal, shared.val))
    nonfinite_output(names, cal.outputs, "calibration step",  # as run_calibration holds a model's samples
                     hint=_random_blamed("calibration") if shared.cal.random else "")
    return (calib.Dataset(f"{shared.cal.origin} (steps)", cal.feeds, None, shared.cal.random),
            calib.Dataset(f"{shared.val.origin} (steps)", val.feeds, sequences.step_labels(shared.val, val.lengths),
                          shared.val.random, labels_aside=shared.val.labels_aside), val.outputs, val, cal.lengths)


def _sequence_warnings(cal_lengths, val_lengths, short: tuple[int, int] | None) -> list[str]:
    """Streaming data whose every sequence has one step: the state is never fed back (per-step data); calibrated on
    sequences shorter than validation's (`short`): a leaky state outgrew the ranges (50 vs 1000 steps: 4 dB, unsaid)."""
    fix = "(give each item its steps along a first axis)"
    return ([f"every calibration sequence has 1 step: the int8 ranges never see a state fed back, only the initial "
             f"one {fix}"] * (max(cal_lengths, default=0) == 1)
            + [f"every validation sequence has 1 step: the state is never fed back, so the drift figures are one "
               f"step's from the initial state {fix}"] * (max(val_lengths, default=0) == 1)
            + ([f"calibration sequences run at most {short[0]} steps, validation's {short[1]}: the int8 ranges "
                f"never saw the state past step {short[0]} (calibrate on sequences as long as deployment's)"]
               if short else []))


SHORT_CALIBRATION = 1.5  # validation's longest sequence over calibration's that is warned of: 100 vs 200 steps lost
# 18 dB, while a 75/25 split of ragged data gives 149 vs 150 (the last 1% of a state's run is no range it never saw)


def _deployable_size_warnings(tdir: Path, packaged: dict, fp32_bytes: int, said: bool) -> list[str]:
    """The .ort a mobile runtime loads larger than the float model would be in that format: the int8 model's size
    warning is of model.int8.onnx (a 4 kB policy's int8 .ort was 31 kB, unsaid). Compared with model.onnx it was
    wrong: the ORT format adds its own records to the float model too (a 52-wide policy head's int8 .ort, 17,568
    bytes, was warned of beside model.onnx's 14,973, its float .ort 18,424). `said`: model.int8.onnx's warning, or
    nothing quantized, already stands for it. The float .ort is made only where model.onnx is the smaller."""
    ort = packaged.get("ort_format") or {}
    if said or not ort.get("file") or (ort_bytes := (tdir / ort["file"]).stat().st_size) <= fp32_bytes:
        return []
    with tempfile.TemporaryDirectory(prefix="edgekit-fp32-ort-") as tmp:
        float_ort = mobile.to_ort([tdir / "model.onnx"], Path(tmp), ort["optimization_style"],
                                  ort["target_platform"])["ort"][tdir / "model.onnx"]
        float_bytes = float_ort.stat().st_size
    if ort_bytes <= float_bytes:
        return []
    return [f"{ort['file']}, the file the runtime loads (the size budget's), is larger than the float model in the "
            f"ORT format ({ort_bytes:,} vs {float_bytes:,} bytes; model.onnx {fp32_bytes:,}): the quantization nodes "
            "and scales outweigh what int8 weights save (few weights): int8 saves no size here; where size is what "
            "matters, ship the float model"]


def _replay_warnings(packaged: dict) -> list[str]:
    """An .ort onnxruntime loads only without replaying its saved optimisations runs unfused on the device."""
    ort = packaged.get("ort_format") or {}
    return [f"{entry['file']}: onnxruntime cannot replay its saved runtime optimisations ({entry['replay_error']}): "
            "it runs unfused (DequantizeLinear into float ops, slower), and its runtime session leaves "
            "session.enable_saved_runtime_optimizations unset; ort_optimization = \"Fixed\" in your copy of the "
            "profile applies the CPU optimisations at conversion instead (fewer nodes for NNAPI/CoreML)"
            for entry in (ort, ort.get("fp32") or {}) if entry.get("replays") is False]


def _ship_labels(tdir: Path, names: list[str]) -> dict:
    """labels.txt in the package, one name per line as read (LF endings): the manifest hashes it as every file."""
    (tdir / package.LABELS).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return {"file": package.LABELS, "count": len(names), "order": "line k names class index k"}


def _labels_warnings(labels: dict | None, outputs) -> list[str]:
    """Class names that no output's class axis (_class_sizes) has as many of: one off, every name an app shows is its
    neighbour's."""
    if not labels or any(labels["count"] in _class_sizes(o.shape) for o in outputs):
        return []
    sizes = ", ".join(f"{o.name} {' or '.join(map(str, sorted(set(_class_sizes(o.shape)))))}"
                      for o in outputs if _class_sizes(o.shape))
    return [f"{labels['file']} holds {labels['count']} class names, and no output's class axis has that many "
            f"({sizes or 'none of a fixed size'}): check the file is this model's"]


def _class_sizes(shape) -> list[int]:
    """The fixed sizes an output's class axis may have: axis 1, as parity reads class scores ([N, C] scores, a
    segmenter's [N, C, H, W] map), or a 3-D output's last (a token classifier's [N, T, C]); a 1-D output's only axis."""
    axes = {0} if len(shape) == 1 else {1, 2} if len(shape) == 3 else {1} if shape else set()
    return [shape[k] for k in sorted(axes) if isinstance(shape[k], int)]


def _fixed_style_warnings(packaged: dict, tdir: Path) -> list[str]:
    """A Fixed-style .ort holds the CPU provider's optimisations (com.microsoft NHWC QLinearConv, NhwcMaxPool, QGemm
    on digits' int8 model), while mobile_coverage is predicted on its .onnx: NNAPI's 100% was of ops the .ort no
    longer holds. Said per coverage provider whose model's .ort adds operators."""
    ort = packaged.get("ort_format") or {}
    if ort.get("optimization_style") != "Fixed":
        return []
    fp32 = ort.get("fp32") or {}
    converted = {Path(ort["file"]).with_suffix(".onnx").name: ort["file"], **({fp32["onnx"]: fp32["file"]}
                                                                            if fp32 else {})}
    said = []
    for c in (packaged.get("mobile_coverage") or {}).values():
        if (shipped := converted.get(c["model"])) is None:
            continue
        added = sorted(model_claims.operators(tdir / shipped) - model_claims.operators(tdir / c["model"]))
        if added:
            said.append(f"{c['provider']}'s coverage ({c['coverage']:.0%} of the MACs) is predicted on {c['model']}, "
                        f"but {shipped}, converted with ort_optimization = \"Fixed\", holds {', '.join(added)}, which "
                        f"{c['model']} does not and {c['provider']} may not take: the app's {c['provider']} may run "
                        f"less of it; ort_optimization = \"Runtime\" (the bundled profiles') leaves the fusions to "
                        "the session")
    return said


def _short_calibration(cal_lengths, val_lengths, mode: str) -> tuple[int, int] | None:
    """(calibration's, validation's) longest sequence when calibration's is clearly shorter (and over 1 step, said
    apart)."""
    cal, val = max(cal_lengths, default=0), max(val_lengths, default=0)
    return (cal, val) if mode == "static" and 1 < cal and val > SHORT_CALIBRATION * cal else None


def _size_checks(loaded, shared: Shared, prep: Prepared) -> list[sizes.SizeCheck]:
    checks = []
    for other in sizes.other_sizes(shared.inputs, [] if shared.recipe.state else prep.val.feeds, shared.recipe.sizes):
        try:
            reference = run_onnx(session(prep.fp32, threads=host.work_threads(), reuse=True)[0], other.feeds)
            # (no state to judge apart: a streaming model's data has no other sizes)
            export = None if shared.torch_val is None else shared.compare(other.label(), prep.outputs, run_torch(
                loaded.module, other.feeds, [s.name for s in shared.inputs]), reference)
            checks.append(sizes.SizeCheck(other, reference, export))
        except EdgekitError as e:
            torch_fails = shared.torch_val is not None and _fails_in_torch(loaded.module, shared, other)
            checks.append(sizes.SizeCheck(other, None, error=f"{other.label()}: {torch_fails or e}",
                                          torch_fails=bool(torch_fails)))
    return checks


def _fails_in_torch(module, shared: Shared, other: sizes.OtherSize) -> str:
    """Why torch itself cannot run the model at `other`'s size ("" when it can): then the size is the model's limit
    (a stride-8 U-Net at 20 px), not something the export baked in."""
    try:
        run_torch(module, other.feeds[:1], [s.name for s in shared.inputs])
    except EdgekitError as e:
        return f"torch fails there too: {e}"
    return ""


def _plan(recipe, model, given, target, given_opset: int = 0):
    """(the quantization plan for these settings, the state nodes it keeps float, the pixel normalisation kept)."""
    state_nodes = () if given.quantize_state else sequences.carry_nodes(model.graph, recipe.state)
    qplan = quantization.plan(model, given, set(recipe.quantize), target.runtime.arch, state_nodes, given_opset)
    qplan = _state_stays_float(recipe.state, state_nodes, qplan)
    qplan = dataclasses.replace(qplan, warnings=(*qplan.warnings, *sequences.not_carried(model.graph, recipe.state)))
    qplan, norm = _pixels_stay_float(recipe.image_uint8, qplan, model)
    return qplan, state_nodes, norm


def _static_fallback(recipe, model, given, target, qplan):
    """The matmul-static plan --auto tries when an attention graph's dynamic default (the profile's, not the
    user's) fails parity: --auto skipped it, though matmul-static passed (tiny attention, LayerNorm outlier
    channel: dynamic 14.9 dB, matmul-static 35.4 dB)."""
    s = qplan.settings
    if not (s.auto and qplan.attention and s.mode == "dynamic" and s.transformer_scheme == "dynamic"
            and "transformer_scheme" not in recipe.quantize and "mode" not in recipe.quantize):
        return None
    return _plan(recipe, model, dataclasses.replace(given, transformer_scheme="matmul-static"), target)[0]


def _state_stays_float(state: dict, nodes: tuple[str, ...], qplan):
    """Unless asked to quantize it, the nodes carrying a state from its input back to its output (`nodes`) stay
    float: a state's rounding error is fed back and grows step after step."""
    if not nodes:
        return qplan
    settings = dataclasses.replace(qplan.settings, exclude_nodes=tuple(dict.fromkeys((*qplan.settings.exclude_nodes,
                                                                                      *nodes))))
    why = (f"state kept float: {len(nodes)} node(s) carrying {', '.join(state)} back to "
           f"{', '.join(state.values())} (--quantize-state to quantize)")
    return dataclasses.replace(qplan, settings=settings, reasons=(*qplan.reasons, why))


def _pixels_stay_float(setting: dict, qplan, model):
    """A uint8 image input's folded normalisation stays float, and where its output can be quantized back to the
    raw pixels exactly, its quantization is pinned to that (then `pixels.raw_feed`). Returns (plan, Normalisation)."""
    if not setting:
        return qplan, None
    norm = pixels.normalisation(model, setting, qplan.settings.activation_type)
    settings = dataclasses.replace(qplan.settings, exclude_nodes=tuple(dict.fromkeys((*qplan.settings.exclude_nodes,
                                                                                      *norm.nodes))))
    return dataclasses.replace(qplan, settings=settings, tensor_overrides=norm.overrides()), norm


def _int8_outputs(shared: Shared, prep: Prepared, int8_sess) -> list:
    """The int8 model's validation outputs; a streaming model runs over the sequences carrying its own state."""
    if prep.rollout is None:
        return run_onnx(int8_sess, prep.val.feeds)
    return sequences.rollout(stepper(int8_sess), shared.val.feeds, shared.inputs,
                             prep.names, shared.recipe.state, shared.init).outputs


def _int8_at_sizes(shared: Shared, prep: Prepared, int8_sess, fixed: dict) -> list[sizes.SizeCheck]:
    """Each size check with the int8 model's parity there (not for a target that ships fixed shapes). None of an
    axis the target fixes: it ships no other size of it, so a size it cannot run at failed it (a baked seq)."""
    found, shipped = [], sizes.fixed_dims(shared.inputs, fixed)
    for check in prep.size_checks:
        if check.other.dim in shipped:
            continue
        if check.reference is None or fixed:
            found.append(check)
            continue
        try:
            found.append(dataclasses.replace(check, quantization=shared.compare(
                check.other.label(), prep.outputs, check.reference, run_onnx(int8_sess, check.other.feeds))))
        except EdgekitError as e:
            found.append(dataclasses.replace(check, error=f"int8 at {check.other.label()}: {e}"))
    return found


# what edgekit did to the exported graph (not to the inputs: a camera's pixels go in as the runtime contract says)
CLEANUP = "onnxruntime quant_pre_process (shape inference and graph optimisation of the model)"
COREML_MODEL = "model.coreml.onnx"  # the fp32 model with fixed shapes an iOS package ships for CoreML


def _target(shared: Shared, target: Target, prep: Prepared) -> TargetReport:
    log.info("target %s", target.name)
    laps = Laps(f"{target.name} ")
    tdir = shared.stage / target.name
    tdir.mkdir()
    fp32, int8 = tdir / "model.onnx", tdir / "model.int8.onnx"
    recipe, cal, val = shared.recipe, prep.cal, prep.val
    # a CoreML build runs the fp32 model (no Q/DQ builders), and takes fixed-shape nodes: it gets one of its own
    coreml = (mobile.fp32_providers(target.package.coverage, target.runtime.provider_options)
              if target.package.ort_format else [])
    fixing = ["NNAPI"] * target.package.fixed_shapes + coreml
    only = "" if target.package.fixed_shapes else COREML_MODEL  # for CoreML alone, only its own model is fixed
    shapes, fixed_warnings = (calib.fixed_shapes(shared.inputs, (cal, val), "/".join(fixing), only) if fixing
                              else ({}, []))
    fixed = shapes if target.package.fixed_shapes else {}
    # what the shipped models take: a build sizing its buffers by the metadata or the manifest read a dynamic batch
    inputs = _fixed_specs(shared.inputs, fixed)
    # what each input takes, for code reading the model alone; the graph clean-up is no pre-processing of inputs
    props = {"edgekit_version": __version__, "edgekit_target": target.name,
             "edgekit_inputs": ";".join(map(str, inputs)), "edgekit_graph_cleanup": CLEANUP,
             "edgekit_input_contract": contract.metadata(inputs, recipe.image_uint8, prep.observed)}
    model = onnx_export.stamp(copy.deepcopy(prep.model), props)
    outputs = prep.outputs
    if fixed:
        onnx_export.fix_input_shapes(model, fixed)
        outputs = onnx_export.io_specs(model)[1]
    given = target_settings(target, recipe.quantize)
    qplan, state_nodes, norm = _plan(recipe, model, given, target, prep.given_opset)
    sums = residuals.as_sums(model) if residuals.wanted(target.runtime.providers, target.package.ort_format,
                                                         qplan.attention, qplan.settings.op_types) else 0
    onnx_export.save_shipped(model, fp32)
    if fixed:
        onnx_export.check(fp32)
    coreml_model = _fixed_fp32(tdir / COREML_MODEL, model, props, shared.inputs, shapes) if coreml else None
    overridden = overrides(target, given, recipe.quantize)
    providers, threads = list(target.runtime.providers), target.runtime.threads
    # An ARM device's int8 arithmetic does not saturate: judge an ARM target by exact arithmetic; an x86
    # target by this host's own kernels.
    exact = target.runtime.arch != "x86_64"
    laps.mark("plan")
    qplan, n_cal, tuning, chosen_rows, judged = _quantize(shared, target, qplan, prep, model, fp32, int8, exact,
                                                          _static_fallback(recipe, model, given, target, qplan))
    if sums:  # whichever plan --auto kept: the shipped graphs have them
        qplan = dataclasses.replace(qplan, reasons=(*qplan.reasons, residuals.why(sums)))
    quantized = onnx_export.parsed(int8)
    qplan = dataclasses.replace(qplan, applied=(*quantization.done(quantized), *(
        f"output {out!r} passes input {given!r} through: kept exact (it was rounded to 8 bits)"
        for out, given in quantization.exact_passthroughs(quantized)),
        *quantization.float_at_run(quantized, qplan.settings)))
    quantized = onnx_export.stamp(quantized, {**props, "edgekit_quantization": str(qplan.as_dict())})
    if state_nodes:
        quantization.float_outputs(quantized, recipe.state.values())
    kept_pixels = pixels.raw_feed(quantized, norm) if norm else None  # None: raw pixels feed the model
    onnx_export.save_shipped(quantized, int8)
    if norm and kept_pixels is None:
        onnx_export.check(int8)
    float_subgraph = quantization.float_subgraph_nodes(quantized)
    laps.mark("tune" if tuning else "calibrate+quantize")
    int8_sess, kernels = int8_session(int8, providers, threads, exact, reuse=True)
    emulated, judged_also_on = _emulators(shared, target)
    if emulated is None:
        int8_val = _int8_outputs(shared, prep, int8_sess)
    else:
        int8_val, kernels = emulated.outputs(int8, prep.val.feeds, prep.names), emulated.describe()
    # --auto's verdict: on the samples its pick never saw (calib.JUDGED), when it could keep some apart
    verdict_val = val if judged == slice(None) else val.part(judged, "odd samples: held out of --auto's pick")
    fp32_judged, int8_judged = prep.fp32_val[judged], int8_val[judged]
    quant_parity = parity.unlabelled_shown(shared.compare(verdict_val.origin, prep.outputs, fp32_judged, int8_judged,
                                                          kernels, verdict_val.labels, shared.judged_task),
                                           target.parity, shared.judged_task)
    there = _emulated_figures(shared, prep, target, judged_also_on, int8, int8_val, judged, verdict_val,
                              package.output_steps(quantized)) if judged_also_on else None
    laps.mark("int8 runs+parity")
    latency, *one_thread = [None] if recipe.no_bench else _latency(shared, prep, target, fp32, int8)
    if latency:
        laps.mark("bench")
    stream = (shared.val.feeds[0], shared.inputs, recipe.state, shared.init) if recipe.state else None
    # golden inputs are the first of the samples the verdict is of, those AVX2 kernels saturate moved first (a
    # full-range x86 package): check bounds its figures by theirs, a subset
    golden_feeds, chosen = _riskiest_first(target, qplan, int8, verdict_val.feeds,
                                           list(range(len(val.feeds)))[judged], stream)
    laps.mark("golden choice")
    packaged = package.deliverables(target, tdir, int8, golden_feeds, prep.names, stream,
                                    package.output_steps(quantized), emulated, coreml_model, recipe.c_name)
    if chosen:
        packaged["golden"]["chosen"] = chosen
    if shared.labels is not None:
        packaged["labels"] = _ship_labels(tdir, shared.labels)
    accuracy = _accuracy(verdict_val, shared.torch_val and shared.torch_val[judged], fp32_judged, int8_judged,
                         parity.scored_at(quant_parity.outputs), prep.names)
    laps.mark("package")
    size_checks = _int8_at_sizes(shared, prep, int8_sess, fixed)
    laps.mark("other sizes")
    layers = _layer_report(qplan, model, fp32, int8, val.feeds, chosen_rows)
    laps.mark("layer report")
    details = {
        "edgekit_version": __version__,
        "checkable_by": CHECKABLE_BY,  # the oldest edgekit that can check the package
        "page_format": package.PAGE_FORMAT,  # how report.md and report.html are rendered from this manifest
        # which profile and what it held (a profile can loosen every gate): no path, which leaked the user's folders
        "target_profile": config.profile_label(target),
        "target_profile_sha256": package.sha256(Path(target.path)),
        "opset": qplan.opset,
        "model": {"source": shared.source, "weights": recipe.weights,
                  "exporter": prep.exporter,  # a .pt2 program's is dynamo, whatever the recipe says
                  **shared.user_files[0]},  # which files, as their folders are named nowhere
        "versions": _versions(),
        "host": host.label(threads, int8_sess.get_providers()),  # where the figures here were computed
        # which kernels an ARM target's int8 parity and golden outputs come from
        "arm_kernels": (emulated.describe() if emulated else ARM_STAND_IN)
        if target.runtime.arch == "arm64" else None,
        "inputs": [s.as_dict() for s in inputs],
        # an input taking raw pixels, normalised inside the model; what the int8 model does with them
        "image_uint8": {**recipe.image_uint8, "int8": kept_pixels or norm.why, "nodes": list(norm.nodes),
                        "nodes_in_int8": bool(kept_pixels)} if norm else None,
        "constants": {k: v.tolist() for k, v in shared.pinned.items()},
        "optional_inputs": {k: v.tolist() for k, v in shared.defaults.items()} or None,
        "fixed_input_shapes": {k: list(v) for k, v in fixed.items()} if target.package.fixed_shapes else None,
        "outputs": [o.as_dict() for o in outputs],
        "task": shared.task,
        "preprocessing": {"steps": CLEANUP, "skipped": prep.preprocessing or None},
        "quantization": {**qplan.as_dict(), "overrides_profile": overridden},
        "float_subgraph_nodes": {"nodes": float_subgraph, "why": quantization.SUBGRAPH_WHY} if float_subgraph else None,
        "calibration": {"data": cal.origin, "samples": n_cal, "random": cal.random},
        "validation": {"data": val.origin, "samples": len(val), "random": val.random},
        "layers": layers,
        "compression": shared.compression,
        "search": recipe.from_trial,
        "seed": recipe.seed,  # random data and training depend on it: the same inputs and seed, the same bytes
        "state": ({"pairs": recipe.state, "float_nodes": list(state_nodes),
                   "initial": {name: recipe.state_init.get(name, "zeros") for name in recipe.state},
                   "sequence": sequences.per_step(prep.rollout, int8_val, prep.names)}
                  if recipe.state else None),
        "dynamic_sizes": [c.as_dict() for c in size_checks],
        **packaged,
    }
    details["runtime"] = contract.runtime(target, details, prep.observed, details["versions"]["onnxruntime"])
    int8_bytes, fp32_bytes = int8.stat().st_size, fp32.stat().st_size
    kept = quantization.float_weights(model, qplan.settings.mode, state_nodes)
    short = (_short_calibration(prep.cal_lengths, prep.rollout.lengths, qplan.settings.mode) if recipe.state
             else None)
    warnings = (verdict.warnings(cal, val, {"export": prep.export_parity, "quantization": quant_parity}, latency,
                                 int8, providers, threads, qplan.settings, recipe.task,
                                 one_thread[0] if one_thread else None, kept)
                + list(shared.said) + list(prep.traced) + verdict.kernel_warnings(packaged) + fixed_warnings
                + verdict.coverage_warnings(packaged.get("mobile_coverage")) + _replay_warnings(packaged)
                + _fixed_style_warnings(packaged, tdir) + _labels_warnings(packaged.get("labels"), outputs)
                + verdict.provider_warnings(target, int8_sess.get_providers()) + list(qplan.warnings)
                + verdict.override_warnings(target, overridden) + _compression_warnings(shared.compression)
                + ([f"profile {target.path} takes the bundled name {config.bundled_like(target.name)}"
                    f"{'' if config.bundled(target.name) else f' (as {target.name})'} but loosens its gates: "
                    f"{', '.join(weaker)}"] if (weaker := config.loosened(target)) else [])
                + ([f"the models are opset {qplan.opset}, not the profile's {target.opset} (raised by the exporter or "
                    "onnxruntime's pre-processing)"] if shared.torch_val is not None and qplan.opset != target.opset
                   else [])
                + ([f"{len(float_subgraph)} node(s) inside sub-graphs stay float: {quantization.SUBGRAPH_WHY}"]
                   if float_subgraph else [])
                + ([] if quantization.quantizes_anything(quantized) else [
                    f"model.int8.onnx {quantization.NOTHING_QUANTIZED}"])
                + ([f"model.int8.onnx is not smaller than model.onnx ({int8_bytes:,} vs {fp32_bytes:,} bytes): the "
                    "quantization nodes and the scales outweigh what int8 weights save"
                    + (f": {kept}" if kept else " (few weights, or many kept float)")]
                   if int8_bytes >= fp32_bytes and quantization.quantizes_anything(quantized) else [])
                + _deployable_size_warnings(tdir, packaged, fp32_bytes, int8_bytes >= fp32_bytes
                                            or not quantization.quantizes_anything(quantized))
                + [f"the model cannot run at {c.other.label()} (torch fails there too, so not the export): --size "
                   f"{c.other.dim}=K,L names sizes it takes (the data's: {', '.join(map(str, c.other.seen))})"
                   if c.torch_fails else f"the model does not run at another size of a dynamic axis: {c.error}" + (
                    " (a size the tracer took as a constant? --exporter dynamo keeps it symbolic)"
                    if prep.exporter == "torchscript" else "") for c in size_checks if c.error]
                + verdict.size_warnings(size_checks)
                + ([] if fixed or recipe.state else [  # a check skipped without a word was taken as passed
                    f"dynamic axis {dim} is not validated at another size: none could be made from the validation "
                    f"data (a batch joins samples of one shape, another axis cuts them); --size {dim}=K names one"
                    for dim in sizes.unvalidated(shared.inputs, size_checks)])
                + (_sequence_warnings(prep.cal_lengths, prep.rollout.lengths, short) if recipe.state else [])
                + [advice for advice in [(qplan.precision_search or {}).get("advice")] if advice])  # report.md had it
    gates = verdict.gates(target, prep.export_parity, quant_parity, accuracy, latency, packaged.get("mobile_coverage"),
                          (tdir / shipped_model(packaged)).stat().st_size, shared.judged_task,
                          quantization.quantizes_anything(quantized))
    gates += verdict.emulated_gates(target, there, shared.judged_task, quantization.quantizes_anything(quantized))
    gates += verdict.size_gates(target, size_checks) + verdict.distinct_gates(shared.val_repeats)
    if tuning:  # its `passed` is of the half it was chosen on: say whether the held-out half's gates agree
        tuning.update(verdict.held_out(tuning, gates))
    report = TargetReport(target.name, prep.export_parity, quant_parity, accuracy, latency, tuning, gates,
                          warnings + verdict.unlabelled_top1_warning(gates, quant_parity, shared.judged_task,
                                                                     target.parity)
                          + (verdict.preprocessing_advice(gates, prep.given_opset) if prep.exporter is None
                                      else []) + verdict.gate_advice(gates, qplan.settings, tuning, short,
                                                                     _ranges(cal, val, qplan),
                                                                     quantization.outputs_kept_float(quantized),
                                                                     shared.judged_task)
                          + emulated_kernels.advice(there, gates, qplan.reduce_range), details,
                          latency_1_thread=one_thread[0] if one_thread else None, emulated=there)
    report = without_folders(report, shared.user_files[1])
    laps.mark("verdict")
    package.write(tdir, report, pages=False)
    # the verdict is the gates AND the comparisons `edgekit check` makes on the staged package (run here, not in a
    # bounded child: the files are the ones this run just wrote)
    place = _on_device(shared, target) or emulated  # latency was measured above: the check leaves it out
    report.verification = package_check.check(tdir, place and (lambda manifest: place), bench=False,
                                               own=True).cases
    if judged_also_on:
        report.warnings += _golden_failed_on(tdir, judged_also_on)
    package.write(tdir, report)
    if recipe.archive:
        archive.write(tdir, shared.stage / f"{target.name}.tar.gz")
    laps.mark("write+check")
    report.timings = laps.seconds
    return report


def _emulators(shared: Shared, target: Target) -> tuple[emulator.Emulator | None, emulator.Emulator | None]:
    """(the emulated ARM CPU whose kernels compute an ARM target's int8 outputs, the emulated x86-64 CPU an x86-64
    target is judged on too): --emulate's, for a target of its kind."""
    found = shared.emulator
    if found is None or EMULATED_FOR[found.arch] != target.runtime.arch:
        return None, None
    return (found, None) if found.arch == emulator.ARCH else (None, found)


def _emulated_figures(shared: Shared, prep: Prepared, target: Target, emulated: emulator.Emulator, int8: Path,
                      here: list, judged: slice, verdict_val: calib.Dataset,
                      steps: dict[str, float]) -> emulated_kernels.EmulatedKernels:
    """An x86-64 target's int8 validation outputs on the emulated CPU's kernels too (AVX2's saturate where this
    VNNI host's are exact): the figures its EMULATED gates hold, and how many samples differ from `here`'s."""
    there = emulated.outputs(int8, prep.val.feeds, prep.names)
    kernels = emulated.describe()
    stage = parity.unlabelled_shown(shared.compare(verdict_val.origin, prep.outputs, prep.fp32_val[judged],
                                                   there[judged], kernels, verdict_val.labels, shared.judged_task),
                                    target.parity, shared.judged_task)
    accuracy = _accuracy(verdict_val, shared.torch_val and shared.torch_val[judged], prep.fp32_val[judged],
                         there[judged], parity.scored_at(stage.outputs), prep.names)
    return emulated_kernels.EmulatedKernels(kernels, stage, accuracy,
                                            emulated_kernels.difference(here, there, prep.names, steps))


def _golden_failed_on(tdir: Path, emulated: emulator.Emulator) -> list[str]:
    """What `edgekit check --emulate` on the emulated x86-64 CPU says of a package where it fails it: the golden
    outputs are this host's and their tolerance is tighter than the gates (sums saturating 25 steps off passed
    cosine and SQNR there, and the export said its gates pass)."""
    cases = package_check.check(tdir, lambda manifest: emulated, bench=False, own=True).cases
    return [f"`edgekit check --emulate {emulated.arch}:{emulated.cpu}` fails {c.name}: {c.message}" for c in cases
            if c.name.startswith("parity") and not c.passed]


def _fixed_fp32(path: Path, model, props: dict, specs, shapes: dict) -> Path:
    """The fp32 model with its inputs fixed to the data's shapes, for a compiling provider that runs it (CoreML):
    with a dynamic batch onnxruntime's checker predicted CoreML 0/9 of the digits model's nodes, fixed 8/9.
    model.onnx, the reference every target shares, and the int8 model keep their dynamic axes."""
    inputs = ";".join(map(str, _fixed_specs(specs, shapes)))
    fixed = onnx_export.stamp(copy.deepcopy(model), {**props, "edgekit_inputs": inputs})
    onnx_export.fix_input_shapes(fixed, shapes)
    onnx_export.save_shipped(fixed, path)
    onnx_export.check(path)
    return path


def _fixed_specs(specs, shapes: dict) -> tuple[InputSpec, ...]:
    """The input specs with the shapes a fixed-shape model takes (its metadata and manifest say those)."""
    return tuple(dataclasses.replace(s, shape=shapes[s.name]) if s.name in shapes else s for s in specs)


def _latency(shared: Shared, prep: Prepared, target: Target, fp32: Path, int8: Path) -> list[LatencyReport]:
    """At the profile's threads (what the app runs with, and what gates judge), then at 1 thread if that is
    not the same: edge CPUs have 4-8 cores, and a model's speed-up from them is part of its cost."""
    threads, bench_spec = target.runtime.threads, shared.recipe.bench
    counts = (threads, 1) if threads > 1 else (1,)
    feed = prep.val.feeds[0]  # one sample: ragged data's others may be longer or shorter, so its shapes are recorded
    timed = {name: [int(n) for n in np.shape(value)] for name, value in feed.items()}
    device = _on_device(shared, target)
    if device is not None:
        found = device.latency(target.name, {"fp32": fp32, "int8": int8}, feed, counts,
                               bench_spec.warmup, bench_spec.runs)
        return [LatencyReport(fp32, int8, f"{int8.host['device']}, {int8.threads} thread(s)", input_shapes=timed)
                for fp32, int8 in ((lat["fp32"], lat["int8"]) for lat in found)]
    cores = host.usable_cores()
    reports = []
    for n in counts:
        used = min(n, cores)  # more threads than cores measures the host's contention, not the model
        with bar(f"benchmarking {target.name} ({used} thread(s))", bench_spec.runs, shared.progress) as advance:
            lat = bench.measure_pair({"fp32": str(fp32), "int8": str(int8)}, feed,
                                     list(target.runtime.providers), used, bench_spec.warmup, bench_spec.runs, advance,
                                     memory=n == threads)  # at the profile's threads: what the app runs with
        capped = f" (the profile's {n}; this host has {cores} cores)" if used < n else ""
        reports.append(LatencyReport(lat["fp32"], lat["int8"], host.describe(lat["int8"].host) + capped,
                                     on_device=host.arch() == target.runtime.arch, input_shapes=timed))
    return reports


def _on_device(shared: Shared, target: Target) -> Device | None:
    """The --device, for a target of its kind."""
    return shared.device if shared.device and shared.device.arch == target.runtime.arch else None


DYNAMIC_UNSEARCHED = "dynamic quantization has no calibration or QDQ placement to search"


def _quantize(shared: Shared, target: Target, qplan, prep: Prepared, model, fp32: Path, int8: Path, exact: bool,
              fallback=None):
    """Quantize with the plan, or with `auto`, search for the fastest settings that pass parity (from `fallback`,
    a static plan, when the dynamic plan fails). Returns (the plan used, calibration samples, the search's record,
    the chosen model's per-node sensitivity when the search already measured it, the validation samples its verdict
    is to be of: those the search did not choose on)."""
    if prep.exporter is None:  # an .onnx source, a file from others: its quantizer runs bounded (quantization._call)
        qplan, fallback = (p and dataclasses.replace(p, from_file=True) for p in (qplan, fallback))
    if prep.cal.random:  # a float output's NaN on calibration, found by the ranges' runs (minmax_ranges)
        qplan, fallback = (p and dataclasses.replace(p, blame=_random_blamed("calibration")) for p in (qplan, fallback))
    settings = qplan.settings
    if settings.mode == "dynamic" and fallback is None:  # ranges come from each input at run time: no calibration
        quantization.quantize(fp32, int8, qplan, [])
        onnx_export.check(int8)
        skipped = {"skipped": DYNAMIC_UNSEARCHED}
        if settings.precision == "latency":
            qplan = dataclasses.replace(qplan, precision_search=skipped)
        if asked := [flag for flag, on in (("--auto", settings.auto), ("--precision latency",
                                                                       settings.precision == "latency")) if on]:
            # said in report.md alone, while the gates failed on the terminal
            qplan = dataclasses.replace(qplan, warnings=(*qplan.warnings, f"{' and '.join(asked)} skipped: "
                                                                          f"{skipped['skipped']}"))
        return qplan, 0, skipped if settings.auto else None, None, slice(None)
    static = fallback or qplan
    cal_feeds = _calibration_feeds(prep, static.settings.samples)
    n_cal = len(cal_feeds)
    _bounded_calibration(prep, cal_feeds)
    work = shared.stage / ".work" / f"quantize-{target.name}"  # calibration cache and trials
    work.mkdir(parents=True)
    if shared.task in (*parity.VALUE_TASKS, "other"):  # other: warned of, not kept float
        static = quantization.keep_narrow_outputs(static, prep.fp32, cal_feeds, shared.task, model,
                                                  quantization.cache_path(work, static.settings))
    if not prep.cal.random:
        static = dataclasses.replace(static, warnings=(*static.warnings, *calib.calibration_warnings(
            cal_feeds, streaming=prep.rollout is not None)))
    if n_cal < static.settings.samples:  # the record is of what was used (it said 128 of a 10-sample file)
        why = f"samples {n_cal}: the calibration data holds {n_cal} of the {static.settings.samples} asked"
        static = dataclasses.replace(static, settings=dataclasses.replace(static.settings, samples=n_cal),
                                     reasons=(*static.reasons, why))
    qplan, fallback = (qplan, static) if fallback else (static, None)
    settings = qplan.settings
    tuning = chosen_rows = None
    judged = slice(None)
    if settings.auto:
        threads = min(target.runtime.threads, host.usable_cores())  # as the latency table caps them
        shared_why = prep.val.unsplit(streaming=prep.rollout is not None)
        picked, judged = (slice(None), slice(None)) if shared_why else (calib.SELECTED, calib.JUDGED)
        chosen_on = prep.val.part(picked, "--auto's pick")
        ctx = tune.Context(fp32, model, work, cal_feeds, chosen_on.feeds, prep.fp32_val[picked], prep.names,
                           chosen_on.labels, target.parity, shared.judged_task, tuple(shared.recipe.state.values()),
                           list(target.runtime.providers), threads, exact, _emulators(shared, target)[1])
        started = time.perf_counter()
        with bar(f"tuning {target.name}", settings.max_trials, shared.progress) as advance:
            search = tune.tune(ctx, qplan, settings.max_trials, settings.time_budget, settings.max_excluded,
                               lambda t: advance(1, _log_trial(t)), settings.max_latency_price, fallback)
        chosen, trials = search.chosen, search.trials
        seconds = time.perf_counter() - started  # the sensitivity analyses too
        shutil.copyfile(chosen.path, int8)
        if chosen.mode != settings.mode:  # the static fallback's
            qplan, settings = fallback, fallback.settings
        n_cal = n_cal if settings.mode == "static" else 0
        chosen_rows = search.sensitivity.get(chosen.index)
        qplan = dataclasses.replace(qplan, settings=dataclasses.replace(
            settings, calibrate_method=chosen.calibrate_method, per_channel=chosen.per_channel,
            percentile=chosen.percentile or settings.percentile,
            exclude_nodes=tuple(dict.fromkeys((*settings.exclude_nodes, *chosen.excluded)))))
        qplan = _seven_bit_chosen(qplan, chosen, ctx.emulator)
        tuning = {"chosen": chosen.index, "passed": chosen.accepted, "trials": [t.as_dict() for t in trials],
                  # each node's reason: the first trial on the chosen one's way that kept it float (a failed trial off
                  # that way gave its text)
                  "excluded": [{"node": n, "why": next(t.why for t in trials if n in t.excluded
                                                       and set(t.excluded) <= set(chosen.excluded))}
                               for n in chosen.excluded],
                  # float in every trial: the user's exclude_nodes (not the plan's own additions, nor the search's)
                  "given": list(target_settings(target, shared.recipe.quantize).exclude_nodes),
                  "latency_price": round(chosen.price_over(trials[0]), 3),
                  # what ranked passing trials by speed (int8_fast_ms / fp32_fast_ms), and those tied with the chosen
                  "ranked_by": bench.ESTIMATOR, "tie": tune.ties(chosen, trials, settings.max_latency_price) or None,
                  "max_latency_price": settings.max_latency_price, "searched": list(settings.auto_search),
                  "advice": tune.keep_fp32(chosen, fp32.stat().st_size),
                  "exclusions_skipped": tune.exclusions_skipped(settings),
                  "untried": search.untried,  # refused by the plan's rules for this model (quantization.refusal)
                  "stopped_short": tune.stopped_short(chosen, trials, settings, seconds, search.ended),
                  # the trials' latency (the price cap, the fastest pick): this host's, at these threads
                  "timed_on": host.where(threads) + ("" if host.arch() == target.runtime.arch
                                                    else f", standing in for {target.runtime.arch}"),
                  "seconds": round(seconds, 3), "validation_split": _split_record(len(prep.val), shared_why),
                  # the trials' `emulated`: their gates on these kernels too (export --emulate x86_64)
                  "emulated_kernels": ctx.emulator.describe() if ctx.emulator else None}
    else:
        with bar(f"calibrating {target.name}", n_cal, shared.progress) as advance:
            cache = quantization.cache_path(work, settings)  # keep_narrow_outputs' or --precision latency's
            quantization.quantize(fp32, int8, qplan, cal_feeds, advance,
                                  cache if settings.precision == "latency" or cache.is_file() else None)
    if settings.precision == "latency":  # from the plan --auto chose, or the target's
        timed = _precision_timer(shared, target, prep.val.feeds[0]) if settings.mode == "static" else \
            DYNAMIC_UNSEARCHED  # --auto chose the dynamic default over its static fallback
        if isinstance(timed, str):  # said in report.md alone, and CI took the flag as applied
            qplan = dataclasses.replace(qplan, precision_search={"skipped": timed},
                                        warnings=(*qplan.warnings, f"--precision latency skipped: {timed}"))
        else:
            qplan, record = precision.search(fp32, int8, qplan, cal_feeds, timed, work,
                                             quantization.cache_path(work, qplan.settings), settings.max_trials,
                                             settings.time_budget)
            qplan = dataclasses.replace(qplan, precision_search=record.as_dict())
    onnx_export.check(int8)
    return qplan, n_cal, tuning, chosen_rows, judged


def _seven_bit_chosen(qplan, chosen, emulated) -> quantization.Plan:
    """The plan with the 7-bit weights --auto chose for the emulated CPU's sake, in place of this host's reason to keep
    8-bit ones."""
    if chosen.reduce_range == qplan.reduce_range:
        return qplan
    reasons = tuple(r for r in qplan.reasons if not r.startswith("reduce_range off:"))
    return dataclasses.replace(qplan, reduce_range=chosen.reduce_range, reasons=(
        *reasons, f"reduce_range: --auto chose 7-bit weights (trial {chosen.index}): with 8-bit ones the int8 model "
                  f"fails its gates on {emulated.label}, whose u8s8 sums saturate int16"))


def _split_record(samples: int, shared_why: str | None) -> dict:
    """Which validation samples --auto chose its trial on and which the verdict is of (calib.SELECTED, JUDGED), or
    why they are the same."""
    if shared_why:
        return {"chosen_on": f"all {samples} validation samples", "judged_on": "the same samples", "shared": shared_why}
    return {"chosen_on": f"the even validation samples ({len(range(samples)[calib.SELECTED])})",
            "judged_on": f"the odd validation samples ({len(range(samples)[calib.JUDGED])}), which the pick never saw"}


def _precision_timer(shared: Shared, target: Target, feed: dict):
    """How `precision.search` times models where `target` runs: on its kind of --device, or on this host when
    it is of the target's kind; else why the search is skipped (x86 timings would pick an ARM model's floats)."""
    device = _on_device(shared, target)
    threads = target.runtime.threads
    if device is not None:
        return lambda paths: device.latency(target.name, paths, feed, (threads,), precision.WARMUP, precision.RUNS)[0]
    if host.arch() != target.runtime.arch:
        return (f"an {target.runtime.arch} target, timed on {host.where()}: a float region faster here says nothing "
                "of the device's kernels (give --device to search there)")
    used = min(threads, host.usable_cores())
    return lambda paths: bench.measure_pair({k: str(v) for k, v in paths.items()}, feed, list(target.runtime.providers),
                                            used, precision.WARMUP, precision.RUNS)


def _random_blamed(role: str) -> str:
    """Why a float model's NaN on random data may be the data's (it said the model "diverges on this data")."""
    return (f"the {role} data is random, made by edgekit ({calib.RANDOM_INPUTS}), and may not be inputs this model "
            f"takes (a mask masking every position, ids or values out of its range): give real samples (--{role})")


def _bounded_calibration(prep: Prepared, feeds: list) -> None:
    """runtime.run_calibration, once per sample, for an .onnx from others: it runs bounded (capped memory) before
    calibration runs it uncapped. A model edgekit exported is trusted to run, and its float outputs are checked
    finite by calibration's own first pass, whichever the method (quantization.minmax_ranges, under histogram_ranges
    too: their own pass cost MobileNetV2-style's export 13%); a streaming model's steps were run and checked by the
    rollout that made them (_steps)."""
    if prep.exporter is not None or prep.rollout is not None or len(feeds) <= prep.calibration_ran:
        return
    run_calibration(prep.fp32, feeds[prep.calibration_ran:], reuse=True, first=prep.calibration_ran,
                    hint=_random_blamed("calibration") if prep.cal.random else "")
    prep.calibration_ran = len(feeds)


def _calibration_feeds(prep: Prepared, n: int) -> list:
    """The first `n` calibration samples; for a streaming model `n` steps spread evenly over all the
    sequences (the first `n` steps would see one sequence's start only)."""
    feeds = prep.cal.feeds
    if prep.rollout is None or len(feeds) <= n:
        return feeds[:n]
    return [feeds[i] for i in np.linspace(0, len(feeds) - 1, n).round().astype(int)]


def _log_trial(t) -> str:
    measured = t.cosine is not None and t.sqnr_db is not None
    figures = [f"cosine {t.cosine:.4f}, SQNR {t.sqnr_db:.1f} dB" if measured else "",
               f"integer outputs {t.exact_agreement:.4f} equal" if t.exact_agreement is not None else ""]
    row = (f"trial {t.index} {t.why[:48]}: {', '.join(f for f in figures if f) or 'no signal to compare'}, "
           f"{'pass' if t.passed else 'fail'}, int8 p50 {t.int8_p50_ms:.3f} ms")
    log.info("%s", row)  # -v prints the trial table as it grows; a terminal also shows it on the bar
    return row


def _layer_report(qplan, model, fp32: Path, int8: Path, feeds, known: list[dict] | None,
                  top: int = 10) -> list[dict] | None:
    """Per-node SQNR lost, worst first, for static QDQ models (what `--auto` would exclude first);
    `known`: the rows --auto already measured on this very model."""
    if qplan.settings.mode != "static" or qplan.settings.format != "QDQ":
        return None
    rows = known or tune.node_sensitivity(model, layers.tensor_errors(model, int8, feeds, limit=4))
    kept = set(qplan.settings.exclude_nodes)  # float in this model: listed as lossy int8 layers, they misled
    return [{k: r[k] for k in ("node", "op", "input_sqnr_db", "output_sqnr_db", "lost_db")}
            for r in rows if r["node"] not in kept][:top]


def _ranges(cal, val, qplan) -> str | None:
    """Validation inputs outside the calibration data's range, for a static model calibrated on given data."""
    if qplan.settings.mode != "static" or cal.random or val.random:
        return None
    return calib.range_mismatch(cal.feeds[:qplan.settings.samples], val.feeds)


def _accuracy(val, torch_val, fp32_val, int8_val, at: int, names: list[str]) -> parity.Accuracy | None:
    if val.labels is None:
        return None
    try:
        # one label per scored row (a class map's pixel but those ignored), however the rows are batched into items
        (fp32, fp32_iou, rows), (int8, int8_iou, _) = (parity.scores(o, val.labels, at, names)
                                                        for o in (fp32_val, int8_val))
        torch = None if torch_val is None else parity.accuracy(torch_val, val.labels, at, names)
        return parity.Accuracy(rows, fp32, int8, torch, None if fp32_iou is None else (fp32_iou, int8_iou),
                               names[at])
    except InputError as e:  # which data's labels (a label -1 named its file; a label past the classes did not)
        e.args = (f"{val.origin}: {e}",)
        raise


def user_paths(recipe: Recipe) -> dict[str, str]:
    """The files and folders the run read that the user named by a path, by role: the model (a FILE.py:FN's
    file), its weights, the data (a FILE.py:FN's file too); not a module (pkg.mod:fn), a Python object or `random`."""
    given = {"source": recipe.source, "weights": recipe.weights, "calibration": recipe.calibration,
             "validation": recipe.validation, "distill": recipe.distill and recipe.distill.data}
    found = {}
    for role, value in given.items():
        text = str(value) if isinstance(value, (str, Path)) else ""
        file, _, fn = text.rpartition(":")
        path = file if file.endswith(".py") and fn.isidentifier() else text
        if path and Path(path).exists():
            found[role] = path
    return found


def _versions() -> dict:
    import onnx
    import onnxruntime

    versions = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    if "torch" in sys.modules:
        versions["torch"] = sys.modules["torch"].__version__
    return versions


def _riskiest_first(target: Target, qplan, int8: Path, feeds: list[dict], numbers: list[int], stream) -> tuple:
    """The verdict's samples (`numbers`: each one's in the validation data) with those an AVX2 CPU's saturating u8s8
    sums change most first, and the manifest's record of why (None: as they are). Only for full-range x86 weights:
    7-bit ones (reduce_range) never reach int16's limit, and a streaming model's golden steps are a sequence's first."""
    s = qplan.settings
    if (target.runtime.arch != "x86_64" or qplan.reduce_range or stream is not None or s.weight_type != "int8"
            or s.activation_type != "uint8"):
        return feeds, None
    from . import saturation

    count = package.golden_count(feeds, target.package.golden_samples)  # a sample too large: said as before
    try:
        return saturation.golden_first(int8, feeds, count, numbers)
    except Exception as e:  # the score failing (its exposed model included): the golden samples stay the first ones
        log.warning("golden samples not chosen by AVX2 saturation risk: %s: %s", type(e).__name__, e)
        return feeds, None
