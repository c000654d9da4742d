"""Write one target's deliverables: golden vectors, mobile/embedded files, manifest.json with hashes, report.md."""
from __future__ import annotations

import hashlib
import io
import json
import unicodedata
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import arrays, contract, host, mobile, onnx_export, report_html, runner, sequences
from .config import C_NAME, Target
from .errors import InputError, UsageError
from .report import markdown
from .runtime import HOST_DEFAULT, int8_session, run_onnx, stepper
from .reports import TargetReport, json_text

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_golden(path: Path, feeds: list[dict], names: list[str], outputs: list[list[np.ndarray]],
                 tolerance: float, in_steps: dict[str, float] | None = None,
                 steps: dict[str, float] | None = None) -> dict[str, float]:
    """golden.npz: inputs, the deployed model's outputs, and per-output absolute tolerances, with per-channel ones
    (`channel_atol.NAME`, channel_tolerances; `steps`: the quantized outputs' steps) where they are much tighter.

    Written entry by entry with fixed timestamps so the same run gives the same bytes.
    Returns the tolerances: `tolerance` × the output's peak |value| over the golden samples (0 for integer
    outputs), or for the outputs in `in_steps`, that absolute tolerance.
    """
    for i, out in enumerate(outputs):  # a golden file holds finite numbers: say it is the model's output
        if bad := [n for n, o in zip(names, out) if o.dtype.kind == "f" and not np.isfinite(o).all()]:
            raise InputError(f"{path.parent.name}: the int8 model's output {bad[0]!r} is NaN or Inf on validation "
                             f"sample {i}: no golden output can hold it")
    atol = golden_tolerances({n: [o[k] for o in outputs] for k, n in enumerate(names)}, tolerance)
    atol.update(in_steps or {})
    channels = {name: tight for k, name in enumerate(names) if name not in (in_steps or {}) and (
        tight := channel_tolerances([o[k] for o in outputs], atol[name], tolerance, (steps or {}).get(name)))
        is not None}
    write_arrays(path, runner.golden_arrays(feeds, names, outputs, atol, channels))
    return atol


def golden_tolerances(values: dict[str, list[np.ndarray]], tolerance: float) -> dict[str, float]:
    """Each output's allowed |error| (its arrays over the golden samples): `tolerance` x its peak |value|, at least
    1e-6; 0 for integer outputs (class ids, masks: exact). `check` holds a bundled profile's packages to it. A sample
    with no values (a detector's selections) has no peak."""
    return {n: 0.0 if arrays[0].dtype.kind in "biu" else max(
        float(tolerance * max(np.max(np.abs(a), initial=0.0) for a in arrays)), 1e-6) for n, arrays in values.items()}


STEP_FLOOR = 1.5  # a quantized output's channel tolerance holds a one-step difference (another kernel set's rounding)
# per-channel tolerances are kept where some channel's is below this share of the output's: above it, the output's is
# at most twice the channel's own (digits' logits: 0.74, none kept)
CHANNEL_TIGHTER = 0.5


def channel_tolerances(arrays: list[np.ndarray], atol: float, tolerance: float,
                       step: float | None) -> np.ndarray | None:
    """An output's allowed |error| per channel (parity.channel_axes; of a 3-D output the axis with the tightest):
    `tolerance` x the channel's peak |value| over the golden samples, at least 1e-6 and STEP_FLOOR quantization
    `step`s, at most the output's `atol`, shaped to broadcast against a sample. The output's alone left a logit
    beside pixel boxes (2.5 allowed on values within 0.3) unchecked. None where none is CHANNEL_TIGHTER."""
    from .parity import channel_axes

    arrays = [a for a in arrays if a.size]
    if not arrays or arrays[0].dtype.kind != "f":
        return None
    floor, best = max(1e-6, STEP_FLOOR * (step or 0.0)), None
    for axis in channel_axes(arrays[0].ndim):
        if len({a.shape[axis] for a in arrays}) > 1:  # a dynamic axis: no channels along it
            continue
        others = tuple(a for a in range(arrays[0].ndim) if a != axis)
        peak = np.max([np.max(np.abs(a.astype(np.float64)), axis=others) for a in arrays], axis=0)
        tight = np.minimum(np.maximum(tolerance * peak, floor), atol)
        if tight.min() < CHANNEL_TIGHTER * atol and (best is None or tight.min() < best.min()):
            best = tight.reshape([-1 if k == axis else 1 for k in range(arrays[0].ndim)])
    return best


def write_arrays(path: Path, arrays: dict) -> None:
    """An .npz written entry by entry with fixed timestamps: same arrays, same bytes. An entry whose first
    64 KiB do not deflate by a fifth is stored as it is: deflate runs at ~30 MB/s here, and noisy float pixels
    barely shrink (MobileNetV2-style's 8 golden inputs, 4.8 MB: 0.16 s of an export for 10%)."""
    with zipfile.ZipFile(path, "w") as z:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(value), allow_pickle=False)
            data = buf.getvalue()
            probe = data[:1 << 16]
            packs = len(zlib.compress(probe, 1)) < 0.8 * len(probe)
            z.writestr(zipfile.ZipInfo(f"{key}.npy", FIXED_ZIP_TIME), data,
                       zipfile.ZIP_DEFLATED if packs else zipfile.ZIP_STORED)


MAX_GOLDEN_BYTES = 1 << 30  # inputs and outputs of at most MAX_GOLDEN_SAMPLES samples: a zip bomb stops here


def fitting(feeds: list[dict], outputs: list[list[np.ndarray]], where: str) -> int:
    """How many samples, from the first, a golden file holds with their outputs (which can dwarf the inputs:
    segmentation scores). Over MAX_GOLDEN_BYTES, `check` would refuse the package's own file."""
    total = 8 + 8 * len(outputs[0]) if outputs else 0  # the count, and a tolerance per output
    for k, (feed, out) in enumerate(zip(feeds, outputs)):
        total += _nbytes(feed.values()) + _nbytes(out)
        if total > MAX_GOLDEN_BYTES:
            if k == 0:
                raise InputError(f"{where}: the model's outputs for one validation sample take {total:,} bytes with "
                                 f"its inputs, over the {MAX_GOLDEN_BYTES:,} a package's golden file may hold")
            return k
    return len(outputs)


def _nbytes(values) -> int:
    return sum(np.asarray(v).nbytes for v in values)


def golden_count(feeds: list[dict], wanted: int) -> int:
    """How many of `feeds` a golden file holds (at most `wanted`): their inputs may take half of MAX_GOLDEN_BYTES,
    the outputs the rest. A sample of more is bad input, told before any work: 1 GiB samples were exported for
    7 minutes, then `check` refused the package's own golden file."""
    each = max(1, _nbytes(feeds[0].values())) if feeds else 1
    if each > MAX_GOLDEN_BYTES // 2:
        raise InputError(f"a validation sample holds {each:,} bytes: a package's golden file keeps samples' inputs "
                         f"and outputs in at most {MAX_GOLDEN_BYTES:,} bytes (smaller samples, please)")
    return max(1, min(wanted, MAX_GOLDEN_BYTES // 2 // each))


class Declared(NamedTuple):
    """An array as its .npy header declares it, its data unread: what a shape and dtype claim reads of it."""
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)


NAME_LIST_BYTES = 1 << 20  # a golden file's count and lists of names, read before any array: a real one is bytes


# tensors a golden file may hold beyond its manifest's inputs and outputs and still be read: one the manifest does not
# declare fails a claim that names it (exit 1), as it did before golden_entries counted entries
SPARE_GOLDEN_TENSORS = 4


def golden_entries(manifest: dict) -> int:
    """The most entries a golden file of a package with this manifest holds, as runner.golden_arrays writes them:
    its count and two name lists, each sample's inputs and outputs, and a tolerance and per-channel tolerances per
    output (SPARE_GOLDEN_TENSORS more). A manifest's sample count that is not one (its claim fails) counts as 1."""
    golden, inputs, outputs = manifest.get("golden"), manifest.get("inputs"), manifest.get("outputs")
    samples = golden.get("samples") if isinstance(golden, dict) else None
    samples = samples if type(samples) is int and 1 <= samples <= runner.MAX_GOLDEN_SAMPLES else 1
    ins, outs = (len(t) if isinstance(t, list) else 0 for t in (inputs, outputs))
    tensors = ins + outs + SPARE_GOLDEN_TENSORS
    return 1 + len(runner.NAME_LISTS) + samples * tensors + 2 * (outs + SPARE_GOLDEN_TENSORS)


def golden_declared(path: Path, shown: str | None = None,
                    max_entries: int | None = None) -> tuple[list[dict], list[dict]]:
    """(inputs per sample, expected outputs per sample) of a golden file, each a Declared from its .npy header alone:
    held to the manifest before a byte of array data is read (an input of 1 GB of zeros, deflated to 1 MB, was read
    whole in 8.6 s and 2 GB, then refused). Tolerances are read as read_golden_channels reads them. `max_entries`:
    golden_entries of its manifest (None: any)."""
    def bad(why: str) -> InputError:
        return InputError(f"{shown or path.name}: not a valid golden file ({why})")

    try:
        data = arrays.npz_headers(path, lambda n: n in ("count", *runner.NAME_LISTS), NAME_LIST_BYTES, max_entries)
    except InputError as e:  # named as the package shows it, not by a temporary path
        raise bad(str(e).replace(f"{path}: ", "")) from e
    if extra := sorted(n for n in data if not _golden_entry(n)):
        raise bad(f"unexpected entry {extra[0]!r}")
    if sum(int(np.prod(v[0], dtype=object)) * v[1].itemsize for v in data.values() if isinstance(v, tuple)) \
            > MAX_GOLDEN_BYTES:  # as read_npz says it
        raise bad(f"arrays declare more than {MAX_GOLDEN_BYTES} bytes (edgekit's limit for a golden file)")
    try:
        inputs, outputs, atol, channels = runner.golden_parts({k: Declared(*v) if isinstance(v, tuple) else v
                                                               for k, v in data.items()})
    except ValueError as e:
        raise bad(str(e)) from None
    if any(not i for i in inputs) or any(not o for o in outputs):
        raise bad("every sample needs inputs and expected outputs")
    if odd := next((n for n, d in atol.items() if int(np.prod(d.shape)) != 1), None):  # as read_golden_channels
        raise bad(f"the tolerance for {odd!r} is not one finite number >= 0")
    if odd := next((n for n, d in channels.items() if int(np.prod(d.shape)) > max(
            (int(np.prod(o[n].shape)) for o in outputs if n in o), default=0)), None):
        raise bad(f"per-channel tolerances {runner.CHANNEL_ATOL}.{odd} do not fit the output or exceed its tolerance")
    return inputs, outputs


def _golden_entry(name: str) -> bool:
    """An entry a golden file may hold."""
    return name in ("count", *runner.NAME_LISTS) or name.startswith(
        ("input.", "output.", "atol.", f"{runner.CHANNEL_ATOL}."))


def read_golden(path: Path, shown: str | None = None) -> tuple[list[dict], list[dict], dict[str, float]]:
    """(inputs per sample, expected outputs per sample, each output's tolerance); see read_golden_channels."""
    return read_golden_channels(path, shown)[:3]


def read_golden_channels(path: Path, shown: str | None = None, max_entries: int | None = None
                         ) -> tuple[list[dict], list[dict], dict[str, float], dict[str, np.ndarray]]:
    """(inputs per sample, expected outputs per sample, tolerances, the per-channel ones a file made since holds
    where tighter); anything malformed is bad input, named `shown` (the package's path as the user gave it;
    default: the file's name). `max_entries`: golden_entries of its manifest (None: any)."""
    def bad(why: str) -> InputError:
        return InputError(f"{shown or path.name}: not a valid golden file ({why})")

    try:
        data = arrays.read_npz(path, _golden_entry, MAX_GOLDEN_BYTES, lambda extra, _: f"unexpected entry {extra[0]!r}",
                               limit="edgekit's limit for a golden file", max_entries=max_entries)
    except InputError as e:  # named as the package shows it, not by a temporary path
        raise bad(str(e).replace(f"{path}: ", "")) from e
    try:
        inputs, outputs, tolerances, channels = runner.golden_parts(data)
    except ValueError as e:
        raise bad(str(e)) from None
    atol = {}
    for name, value in tolerances.items():
        if value.size != 1 or value.dtype.kind not in "iuf" or not np.isfinite(value).all() or float(value) < 0:
            raise bad(f"the tolerance for {name!r} is not one finite number >= 0")
        atol[name] = float(value)
    for name, value in channels.items():
        if value.dtype.kind != "f" or not np.isfinite(value).all() or (value < 0).any():
            raise bad(f"the per-channel tolerances for {name!r} are not finite numbers >= 0")
    for name, value in ((n, v) for out in outputs for n, v in out.items()):
        if value.dtype.kind not in "biuf" or not np.isfinite(value).all():
            raise bad(f"expected output {name!r} is not finite numbers")
    if any(not i for i in inputs) or any(not o for o in outputs):
        raise bad("every sample needs inputs and expected outputs")
    missing = {n for o in outputs for n in o} - set(atol)
    if missing:
        raise bad(f"no tolerance for output(s) {sorted(missing)}")
    for name, value in channels.items():  # within the output's own, one per channel of every sample
        if name not in atol or not all(_fits(value, o[name]) for o in outputs if name in o) or (
                value.size and float(value.max()) > atol[name]):
            raise bad(f"per-channel tolerances {runner.CHANNEL_ATOL}.{name} do not fit the output or exceed its "
                      "tolerance")
    return inputs, outputs, atol, channels


def _fits(tolerances: np.ndarray, out: np.ndarray) -> bool:
    """A tolerance array reads against an expected output: as many axes, each 1 or the output's."""
    return tolerances.ndim == out.ndim and all(t in (1, o) for t, o in zip(tolerances.shape, out.shape))


PAGES = ("report.md", "report.html")
# manifest.json's `page_format`: how this edgekit renders PAGES from a manifest. Raise it with every change to what
# report.md or report.html say or how (report.py, report_html.py): check holds a package's pages to its own rendering
# only where the formats match, and a package made before the change, by the same dev version, failed as edited.
PAGE_FORMAT = 4  # 2: report.html names the class names file (labels.txt); 3: report.md says what ranked --auto's
# trials and decided --precision latency's steps (the fastest runs), with those figures; 4: report.html's parity line
# says the int8 and the fp32 outputs' threads apart (format 3's examples/ci archive then failed check as edited)


LABELS = "labels.txt"  # a classifier's class names, one per line, as a package ships them
MAX_LABELS_BYTES = 16 << 20


def read_labels(path: str, bom: bool = True) -> list[str]:
    """The class names of a labels file, one per line (a final newline and CRLF endings taken): what an app shows
    for class k is line k, so a blank line, or one a terminal would run as an escape, is refused before any work.
    `bom`: a leading UTF-8 byte-order mark taken too (PowerShell's `Out-File -Encoding utf8` and Notepad write one:
    refused as line 1 "not printable text"); a package's labels.txt, written without, may not start with one."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"labels {path}: no such file")
    if file.stat().st_size > MAX_LABELS_BYTES:
        raise UsageError(f"labels {path}: over {MAX_LABELS_BYTES >> 20} MB; a class name per line is far less")
    try:
        text = file.read_bytes().decode("utf-8-sig" if bom else "utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"labels {path}: not UTF-8 text") from None
    names = text.replace("\r\n", "\n").removesuffix("\n").split("\n") if text else []
    if not names:
        raise UsageError(f"labels {path}: empty; give one class name per line")
    if bad := [k for k, n in enumerate(names) if not n.strip() or not all(map(_label_character, n))]:
        why = "blank" if not names[bad[0]].strip() else "not printable text"
        raise UsageError(f"labels {path}: line {bad[0] + 1} is {why}; give one class name per line")
    return names


def _label_character(c: str) -> bool:
    """A character a class name may hold: printable text, a tab and any space (ImageNet's synset files and
    spreadsheet exports hold tabs, names a no-break space: isprintable() refuses both); never another control or
    format character (NUL, CR, an escape, a byte-order mark, a bidi override: what a terminal or an app runs)."""
    return c.isprintable() or c == "\t" or unicodedata.category(c) == "Zs"


def write(target_dir: Path, report: TargetReport, pages: bool = True) -> None:
    """Hash every deliverable into the report, write report.md and report.html from it (their files table lists the
    deliverables), hash them too, then write manifest.json (`pages=False`: the manifest alone, for the package check
    that comes before the final write). The pages are hashed as the other files are: unhashed, one edited to a fake
    PASS, with a <script> added, or deleted, still passed check."""
    files = sorted(p for p in target_dir.iterdir() if p.is_file() and p.name not in ("manifest.json", *PAGES))
    report.files = {p.name: sha256(p) for p in files}
    report.sizes = {p.name: p.stat().st_size for p in files}
    if pages:  # rendered from the manifest's JSON (a non-finite figure is null there), as check renders them again
        for name, text in rendered_pages(json.loads(json_text(report.to_json()))).items():
            (target_dir / name).write_text(text, encoding="utf-8")
        report.files.update({name: sha256(target_dir / name) for name in PAGES})
        report.sizes.update({name: (target_dir / name).stat().st_size for name in PAGES})
    (target_dir / "manifest.json").write_text(json_text(report.to_json()) + "\n", encoding="utf-8")


def rendered_pages(manifest: dict) -> dict[str, str]:
    """report.md's and report.html's text as edgekit renders them from a manifest (its files table lists the
    deliverables, not the pages): `write` writes these, and `check` holds a package's pages to them. A mistyped
    field raises (TypeError, KeyError, ...)."""
    report = TargetReport.from_json({**manifest, "files": {n: h for n, h in manifest["files"].items()
                                                           if n not in PAGES}})
    return {"report.md": markdown(report), "report.html": report_html.page(report)}


def deliverables(target: Target, tdir: Path, int8: Path, feeds: list[dict], names: list[str],
                 stream: tuple | None = None, steps: dict[str, float] | None = None, emulated=None,
                 coreml: Path | None = None, c_name: str = C_NAME) -> dict:
    """Golden vectors for every runtime file the target ships, and the mobile/embedded files it asks for.
    `stream`: (a validation sequence, the input specs, the state pairs, initial values) for a streaming
    model, whose golden vectors are then that sequence's first steps, each file carrying its own state as
    `check` replays them. `steps`: each quantized output's quantization step (see `output_steps`);
    `emulated`: the Emulator whose real aarch64 kernels compute the golden outputs (else this host's exact ones);
    `coreml`: the fixed-shape fp32 model a CoreML build runs (model.coreml.onnx), shipped with its .ort;
    `c_name`: the C files' names (mobile.c_header). Returns their manifest entries."""
    spec = target.package
    feeds = feeds[: golden_count(feeds, spec.golden_samples)]
    if stream is not None:
        stream = ({k: v[: spec.golden_samples] for k, v in stream[0].items()}, *stream[1:])
    out: dict = {}
    # a CoreML build runs the fp32 model (no Q/DQ builders): it ships with its .ort and golden outputs too
    fp32 = coreml or tdir / "model.onnx"
    fp32_for = mobile.fp32_providers(spec.coverage, target.runtime.provider_options) if coreml else []
    onnx_models = [int8, *([coreml] if coreml else [])]
    shipped = list(onnx_models)
    if spec.ort_format:
        platform = "arm" if target.runtime.arch == "arm64" else "amd64"
        written = mobile.to_ort(onnx_models, tdir, spec.ort_optimization, platform)
        out["ort_format"] = {"file": written["ort"][int8].name, "config": written["config"].name,
                             "optimization_style": spec.ort_optimization, "target_platform": platform,
                             "reproducible": written["reproducible"],
                             "build": mobile.ORT_BUILDS[spec.ort_optimization] + contract.flags_for(target),
                             **_replays(written["ort"][int8])}
        if coreml:  # the shapes it was fixed to: an app feeding another batch size gets an error
            inputs, outputs = onnx_export.io_specs(coreml)
            out["ort_format"]["fp32"] = {"file": written["ort"][coreml].name, "onnx": coreml.name, "for": fp32_for,
                                         "inputs": [s.as_dict() for s in inputs],
                                         "outputs": [s.as_dict() for s in outputs], "build": mobile.FP32_BUILD,
                                         **_replays(written["ort"][coreml])}
        shipped = [f for m in onnx_models for f in (m, written["ort"][m])]
    models, outputs, steps = {}, {}, steps or {}
    # N steps allow N steps, not N + float rounding: the tolerance sits half a step above
    in_steps = ({n: (spec.golden_tolerance_steps + 0.5) * s for n, s in steps.items()}
                if spec.golden_tolerance_steps else {})
    for model in shipped:
        quantized = model.stem == int8.stem  # an fp32 output has no quantization step
        golden_file = f"golden{'' if quantized else '.coreml'}{'' if model.suffix == '.onnx' else model.suffix}.npz"
        models[model.name], outputs[model] = _golden(model, tdir / golden_file, feeds, names,
                                                     (spec.golden_tolerance, *((in_steps, steps) if quantized
                                                                               else ({}, {}))),
                                                     model == int8 and target.runtime.arch != "x86_64", stream,
                                                     emulated)
        if not quantized and emulated is None:  # the int8 kernel label says nothing of an fp32 model
            models[model.name]["kernels"] = f"{HOST_DEFAULT} (fp32)"
    tolerance = (f"{spec.golden_tolerance} x each output's peak |value|, and x each channel's where one is below "
                 f"{CHANNEL_TIGHTER:g} of it (at least {STEP_FLOOR:g} quantization steps; golden's "
                 f"{runner.CHANNEL_ATOL}); integer outputs exact") + (
        f"; {spec.golden_tolerance_steps} quantization step(s) for {', '.join(in_steps)}" if in_steps else "")
    out["golden"] = {"samples": len(next(iter(outputs.values()))), "tolerance": tolerance, "models": models,
                     "steps": steps}
    if spec.ort_format:  # what each .ort computes in the full build `check` runs, next to its .onnx
        for entry, onnx in ((out["ort_format"], int8), (out["ort_format"].get("fp32"), fp32)):
            if entry is not None:
                entry["max_abs_diff_from_onnx"] = max_abs_diff(outputs[tdir / entry["file"]], outputs[onnx], names)
    if spec.c_header:  # the model file the target ships: a minimal onnxruntime build reads only an .ort
        embedded = tdir / out["ort_format"]["file"] if spec.ort_format else int8
        written = mobile.c_header(embedded, tdir, c_name)
        out["c_header"] = {**{kind: path.name for kind, path in written.items()}, "embeds": embedded.name,
                           "c_name": c_name}
    if spec.coverage:
        out["mobile_coverage"] = {}
        for ep in spec.coverage:  # each of the model that provider's build would take
            model = fp32 if ep in mobile.SHIPS_FP32_TO else int8
            out["mobile_coverage"][ep] = {**mobile.coverage(model, (ep,), target.runtime.provider_options)[ep],
                                            "model": model.name}
    return out


def _replays(ort_file: Path) -> dict:
    """Whether onnxruntime loads the .ort with its saved optimisations replayed (the runtime contract then asks for
    it), and why not where it cannot."""
    why = mobile.replay_error(ort_file)
    return {"replays": why is None, **({"replay_error": why} if why else {})}


def _golden(model: Path, path: Path, feeds: list, names: list[str], tolerance: tuple[float, dict],
            check_x86_defaults: bool, stream: tuple | None, emulated) -> tuple[dict, list]:
    """Golden outputs of one shipped file, computed with exact int8 arithmetic (for an .ort, in the full
    onnxruntime build `edgekit check` runs), or on emulated ARM kernels (`emulated`, not for streaming).
    Returns (its manifest entry, the outputs)."""
    sess, kernels = int8_session(model, reuse=True)
    if emulated is not None:
        expected, kernels = emulated.outputs(model, feeds, names), emulated.describe()
    elif stream is None:
        expected = run_onnx(sess, feeds)
    else:
        sequence, specs, state, init = stream
        rolled = sequences.rollout(stepper(sess), [sequence], specs, names, state, init)
        feeds, expected = rolled.feeds, rolled.outputs
    keep = fitting(feeds, expected, path.parent.name)
    feeds, expected = feeds[:keep], expected[:keep]
    atol = write_golden(path, feeds, names, expected, *tolerance)
    entry = {"file": path.name, "atol": atol, "kernels": kernels}
    # the risk of a saturating CPU's default kernels: measured only where they are this CPU's (not under an override)
    if check_x86_defaults and host.x86_saturates() and host.cpu_saturates():
        # what a user sees running an ARM package on this kind of host with onnxruntime's defaults
        errors = max_abs_diff(run_onnx(int8_session(model, exact=False)[0], feeds), expected, names)
        entry["x86_default_kernels"] = {"isa": host.cpu_isa(), "max_abs_error": errors,  # the kernels that ran
                                        "within_tolerance": all(errors[n] <= atol[n] for n in names)}
    return entry, expected


def max_abs_diff(a: list, b: list, names: list[str]) -> dict[str, float]:
    """Per output, the largest |a - b| over all samples (runs as run_onnx returns them)."""
    return {n: max(float(np.max(np.abs(x[k].astype(np.float64) - y[k]))) for x, y in zip(a, b))
            for k, n in enumerate(names)}


def output_steps(model) -> dict[str, float]:
    """Each quantized graph output's quantization step: the scale of the per-tensor DequantizeLinear that
    produces it. Differences between kernel sets come in these steps."""
    from onnx import numpy_helper

    scales = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    steps = {}
    for out in model.graph.output:
        node = producer.get(out.name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[1] in scales:
            scale = numpy_helper.to_array(scales[node.input[1]]).ravel()  # a bias's per-tensor scale is [1]
            if scale.size == 1 and scale[0] > 0:
                steps[out.name] = float(scale[0])
    return steps
