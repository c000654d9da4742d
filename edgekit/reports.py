"""What `export` and `check` found, as typed objects. A target's manifest.json is `TargetReport.to_json()`:
written for others to re-check, never read back by the pipeline."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import emulated_kernels
from .bench import Latency
from .emulated_kernels import EmulatedKernels
from .errors import ExitCode
from .parity import Accuracy, Gate, OutputParity, StageParity
from .progress import Timings


def _lists(data):
    """Tuples as lists, all the way down: what json.load gives back."""
    if isinstance(data, dict):
        return {k: _lists(v) for k, v in data.items()}
    return [_lists(v) for v in data] if isinstance(data, (list, tuple)) else data


def json_text(data) -> str:
    """Strict JSON (RFC 8259) for manifests and --json: a non-finite float is null, as JavaScript writes it.
    Python's default `Infinity`/`NaN` tokens break other readers (CI tools, browsers)."""
    def finite(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        return [finite(v) for v in x] if isinstance(x, (list, tuple)) else x
    return json.dumps(finite(data), indent=2, allow_nan=False)


def without_folders(data, paths: list[tuple[re.Pattern, str]]):
    """`data` (a report, its figures, dicts, lists) with each of the user's paths (user_path_patterns) written as its
    file's name: a package is shipped to others, and its manifest, report.md and report.html named the model, weights
    and data as /home/alice/proj/model.onnx."""
    if isinstance(data, str):
        for pattern, name in paths:
            data = pattern.sub(name, data)
        return data
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return dataclasses.replace(data, **{f.name: without_folders(getattr(data, f.name), paths)
                                            for f in dataclasses.fields(data) if f.init})
    if isinstance(data, dict):
        return {k: without_folders(v, paths) for k, v in data.items()}
    if type(data) in (list, tuple):  # not a NamedTuple's subclass, whose constructor takes fields
        return type(data)(without_folders(v, paths) for v in data)
    return data


def user_path_patterns(paths) -> list[tuple[re.Pattern, str]]:
    """(pattern, file name) for each of the user's paths, as given and absolute, the longest first: a whole path only,
    between spaces, quotes, brackets or a FILE.py:FN's colon. A folder's text anywhere (/model/ of /model/net.py)
    renamed node names (/model/model.0/Conv), which advice then gave as names no model has."""
    found = {}
    for path in paths:
        for form in {str(path), os.path.abspath(path)}:
            if os.path.basename(form) and os.path.basename(form) != form:
                found[form] = os.path.basename(form)
    return [(re.compile(rf"(?<![^\s'\"(\[=,]){re.escape(form)}(?![^\s'\")\]:,;])"), name)
            for form, name in sorted(found.items(), key=lambda f: len(f[0]), reverse=True)]


JSON_SCHEMA = 1  # --json's and to_json()'s envelope; raised when a key of it changes meaning or goes


def envelope(command: str | None, exit_code: int, error: str | None = None, **payload) -> dict:
    """Every --json document (and an ExportReport's or CheckReport's to_json()), one shape whatever the outcome: a
    CI step reads passed, exit_code and error first, then the command's own keys (export's targets, check's cases).
    A bare list on success and an error object on failure made the parser depend on the outcome."""
    return {"schema_version": JSON_SCHEMA, "command": command, "passed": int(exit_code) == ExitCode.OK,
            "exit_code": int(exit_code), "error": error, **payload}


def ran_by() -> dict:
    """The edgekit, onnxruntime and Python a check ran with, and the host: a CI job archiving check's JSON from
    runners of other CPUs and installs must tell which one judged the package, an error (no cases) included."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__
    from .host import cpu_model

    ort = sys.modules.get("onnxruntime")
    try:
        ort_version = getattr(ort, "__version__", None) or version("onnxruntime")
    except PackageNotFoundError:  # not installed: the check's own error says so
        ort_version = None
    return {"edgekit": __version__, "onnxruntime": ort_version, "python": platform.python_version(),
            "machine": platform.machine(), "cpu": cpu_model()}


def empty_payload(command: str | None) -> dict:
    """The command's own keys in an error's document, empty: a reader iterating them needs no case for errors
    (ran_by only for check's, asked only there: it reads the host's CPU)."""
    if command == "check":
        return {"ran_by": ran_by(), "cases": []}
    return {"out": None, "targets": []} if command == "export" else {}


class _Verdict:  # the exit code of a report that passed or did not
    @property
    def exit_code(self) -> int:
        return int(ExitCode.OK if self.passed else ExitCode.GATE_FAILED)


ARM_STAND_IN = "x86 exact kernels (stand-in)"  # an ARM target's int8 figures when no aarch64 kernels ran them


# the files latency is timed on: a mobile target's app loads the .ort, converted for its CPU (it times slower on x86)
TIMED = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


@dataclass(frozen=True)
class LatencyReport:
    fp32: Latency
    int8: Latency
    where: str  # host CPU, ISA, threads, providers, onnxruntime version
    on_device: bool = True  # measured on a machine of the target's kind; False: this host stood in for it
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  # the one sample timed: its inputs' shapes

    @property
    def speedup_p50(self) -> float:
        return round(self.fp32.p50_ms / self.int8.p50_ms, 3) if self.int8.p50_ms > 0 else 0.0

    def as_dict(self) -> dict:
        return {"fp32": self.fp32.as_dict(), "int8": self.int8.as_dict(), "speedup_p50": self.speedup_p50,
                "where": self.where, "on_device": self.on_device, "models": TIMED,
                "input_shapes": self.input_shapes}

    def shapes(self) -> str:
        """The timed sample's shapes as a caption says them: `x [1, 40, 109]`."""
        return ", ".join(f"{name} {shape}" for name, shape in self.input_shapes.items())


@dataclass(frozen=True)
class Case:
    """One `edgekit check` finding: integrity, the recorded gates, or one shipped model's parity."""

    target: str
    name: str
    passed: bool
    message: str = ""
    seconds: float = field(default=0.0, compare=False)  # two identical runs' reports compare equal
    kernels: str = ""  # which int8 kernels ran the model (parity cases)
    where: str = ""  # the machine that ran it: this host, an emulated CPU or a device (parity cases)
    folder: str = ""  # the package's folder, as a path in what was checked, when it is not the target's own name
    # past --step-timeout check ends (exit 4): the case it stopped in is an error (JUnit's <error>, not a verdict on
    # the package), those it never reached are skipped, each `message` saying why
    error: bool = False
    skipped: bool = False

    @property
    def label(self) -> str:
        """Target and folder in one name for a line of text or JUnit: `desktop-x86 (prev)`, `v2/arm64-linux`."""
        parent, _, name = self.folder.rpartition("/")
        return self.target if not self.folder else self.folder if name == self.target else \
            f"{parent + '/' if parent else ''}{self.target} ({name})"


def size_error(manifest: dict, label: str) -> str:
    """Why the model did not run at another size (`seq=12`), from the manifest's dynamic_sizes: what its failed
    runs_at_ gate (no value, no limit) stands for, in `check` and the reports alike."""
    for c in manifest.get("dynamic_sizes") or []:
        if isinstance(c, dict) and f"{c.get('dim')}={c.get('validated_size')}" == label and c.get("error"):
            return str(c["error"]).removeprefix(f"{label}: ")
    return f"the model did not run at {label} (the manifest records no reason)"


def unrun_size(name: str, value, limit) -> str | None:
    """The size (`seq=12`) a failed runs_at_ gate stands for, which has no value and no limit to show, else None."""
    return name.removeprefix("runs_at_") if value is None and limit is None and name.startswith("runs_at_") else None


def gate_failure(gate: Gate, details: dict) -> str:
    """A failed gate's result cell: for a runs_at_ gate, why the model did not run at that size (its value and limit
    cells say "-": the table said FAIL with no word of what failed)."""
    label = unrun_size(gate.name, gate.value, gate.limit)
    return f"FAIL: {size_error(details, label)}" if label else "FAIL"


def shipped_model(details: dict) -> str:
    """The int8 file a target's runtime loads, whose bytes a size budget is about: the .ort where the profile
    ships onnxruntime's mobile format (29% larger than model.int8.onnx on digits), else model.int8.onnx."""
    return (details.get("ort_format") or {}).get("file") or "model.int8.onnx"


# the manifest's keys of a TargetReport's own fields (to_json()); its other keys are the report's details
REPORT_KEYS = ("target", "parity", "accuracy", "latency", "latency_1_thread", "tuning", "gates", "passed", "warnings",
               "verification", "files", "sizes", "emulated_kernels")


def _built(cls, data: dict, **made):
    """A dataclass again from its as_dict() in a manifest: the fields there, `made` the nested ones; what as_dict
    adds (drop, p90_over_p50, speedup_p50) is a property, computed again. A field as_dict leaves out because it is
    None (OutputParity's max_abs where no sample kept its length) is None again."""
    required = {f.name for f in dataclasses.fields(cls) if f.init and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}
    return cls(**{**{f.name: data.get(f.name) for f in dataclasses.fields(cls)
                     if f.init and (f.name in data or f.name in required)}, **made})


def _stage(data: dict | None) -> StageParity | None:
    return None if data is None else _built(StageParity, data, outputs=tuple(
        _built(OutputParity, o) for o in data["outputs"]))


def _accuracy(data: dict | None) -> Accuracy | None:
    iou = None if data is None else data.get("mean_iou")
    return None if data is None else _built(Accuracy, data, mean_iou=iou and (iou["fp32"], iou["int8"]))


def _latency(data: dict | None) -> LatencyReport | None:
    return None if data is None else _built(LatencyReport, data, fp32=_built(Latency, data["fp32"]),
                                            int8=_built(Latency, data["int8"]))


@dataclass
class TargetReport:
    """One target's figures and verdict."""

    target: str
    export_parity: StageParity | None  # torch vs ONNX fp32 (an .onnx source: the file as given vs pre-processed)
    quant_parity: StageParity  # ONNX fp32 vs int8
    accuracy: Accuracy | None  # None without labels
    latency: LatencyReport | None  # None with --no-bench
    tuning: dict | None  # the --auto search: trials, choice, advice
    gates: list[Gate]
    warnings: list[str]
    details: dict  # what the manifest records besides: versions, host, inputs, quantization, golden files, ...
    files: dict[str, str] = field(default_factory=dict)  # deliverable → sha256
    sizes: dict[str, int] = field(default_factory=dict)  # deliverable → bytes
    verification: list[Case] = field(default_factory=list)  # `edgekit check` on the staged package
    latency_1_thread: LatencyReport | None = None  # when `latency` is at the profile's threads and that is more
    emulated: EmulatedKernels | None = None  # an x86-64 target's figures on an emulated CPU (export --emulate x86_64)
    # stage → wall seconds of this export on this host (ExportReport.timings says where): not in the manifest, whose
    # bytes the same inputs must reproduce; empty in a report read back from one
    timings: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, m: dict) -> TargetReport:
        """The report a manifest (to_json()) holds, as far as it holds it: report.md and report.html are rendered from
        it, so `check` can render them again. A mistyped field raises (TypeError, KeyError, ...)."""
        return cls(m["target"], _stage(m["parity"]["export"]), _stage(m["parity"]["quantization"]),
                   _accuracy(m["accuracy"]), _latency(m["latency"]), m["tuning"], [_built(Gate, g) for g in m["gates"]],
                   m["warnings"], {k: v for k, v in m.items() if k not in REPORT_KEYS}, m["files"], m["sizes"],
                   [_built(Case, c) for c in m["verification"]], _latency(m["latency_1_thread"]),
                   emulated_kernels.from_json(m.get("emulated_kernels")))

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates) and all(c.passed for c in self.verification)

    def failures(self) -> list[str]:
        """Failed gates, then what `edgekit check` failed on besides the gates it re-reads."""
        return ([g.name for g in self.gates if not g.passed]
                + [f"check {c.name}" for c in self.verification if not c.passed and c.name != "gates"])

    def __repr__(self) -> str:
        """The verdict, what failed and the headline figures: the dataclass's repr printed every gate, file hash and
        the whole manifest (a notebook cell showing a report filled the screen)."""
        return f"<TargetReport {self.target}: {_summary(self)}>"

    def failed_gates(self) -> list[str]:
        """failures() with each failed gate's value and limit: `quant_sqnr_db on y1 18.1 (>= 60)`."""
        said = {g.name: g.label + (f" {g.value:.6g} ({g.op} {g.limit:.6g})" if g.value is not None and g.limit is not
                                   None else "") for g in self.gates if not g.passed}
        return [said.get(name, name) for name in self.failures()]

    def to_json(self) -> dict:
        """manifest.json's content (as json.load gives it back: lists, not tuples)."""
        d = self.details
        return _lists({
            "edgekit_version": d["edgekit_version"], "target": self.target,
            **{k: v for k, v in d.items() if k != "edgekit_version"},
            "parity": {"export": self.export_parity and self.export_parity.as_dict(),
                       "quantization": self.quant_parity.as_dict()},
            "accuracy": self.accuracy and self.accuracy.as_dict(),
            **({"emulated_kernels": self.emulated.as_dict()} if self.emulated else {}),
            "latency": self.latency and self.latency.as_dict(),
            "latency_1_thread": self.latency_1_thread and self.latency_1_thread.as_dict(),
            "tuning": self.tuning, "gates": [g.as_dict() for g in self.gates], "passed": self.passed,
            "warnings": self.warnings,
            "verification": [{k: v for k, v in asdict(c).items() if k not in ("seconds", "folder", "error", "skipped")}
                             for c in self.verification],
            "files": self.files, "sizes": self.sizes})


@dataclass
class ExportReport(_Verdict):
    """Every target of one `edgekit.export` run; `passed` only if each target passed."""

    targets: dict[str, TargetReport]
    out: Path  # the published folder: OUT/<target> for each target
    timings: Timings | None = field(default=None, compare=False, repr=False)  # wall times; never in to_json()

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.targets.values())

    def to_json(self) -> dict:
        """`edgekit export --json`'s document: the output folder in `out`, each target's manifest in `targets`."""
        return envelope("export", self.exit_code, out=str(self.out),
                        targets=[t.to_json() for t in self.targets.values()])

    def __repr__(self) -> str:
        """One line a target (verdict, failures, headline figures), not the dataclass's every figure and hash."""
        lines = [f"  {name}: {_summary(t)}" for name, t in self.targets.items()]
        head = f"<ExportReport {'PASSED' if self.passed else 'FAILED'}, out={str(self.out)!r}"
        return "\n".join([head, *lines]) + ">"

    def failed_gates(self) -> str:
        """The failed gates of every target in one line, for a CI log beside --json's document."""
        return "; ".join(f"{name}: {', '.join(t.failed_gates())}" for name, t in self.targets.items() if not t.passed)


# the case of a package another edgekit's version must check: a newer one (its manifest's checkable_by), or an older
# one than READS_FROM (its edgekit_version)
VERSION_CASE = "version"


@dataclass
class CheckReport(_Verdict):
    """`edgekit check` on a package folder, an OUT folder or an archive."""

    cases: list[Case]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    @property
    def exit_code(self) -> int:
        """1 where a package failed; 2 where the only failures are packages this edgekit is too old (or too new) to
        check: the user's install to upgrade (or the package to re-export), which CI must tell from a tampered one."""
        failed = {c.name == VERSION_CASE for c in self.cases if not c.passed}
        return int(ExitCode.GATE_FAILED if False in failed else ExitCode.USAGE if failed else ExitCode.OK)

    def to_json(self) -> dict:
        """`edgekit check --json`'s document: its findings in `cases`."""
        return envelope("check", self.exit_code, ran_by=ran_by(), cases=[asdict(c) for c in self.cases])

    def __repr__(self) -> str:
        """The verdict and the failed cases with why, not every case's fields."""
        failed = [c for c in self.cases if not c.passed]
        lines = [f"  {c.label} {c.name}: {c.message or 'failed'}"[:MAX_REPR_LINE] for c in failed[:MAX_REPR_CASES]]
        more = [f"  ... {len(failed) - MAX_REPR_CASES} more failed"] if len(failed) > MAX_REPR_CASES else []
        return "\n".join([f"<CheckReport {'PASSED' if self.passed else 'FAILED'}: {len(self.cases)} cases, "
                          f"{len(failed)} failed", *lines, *more]) + ">"

    def failed_cases(self) -> str:
        """The failed cases in one line, for a CI log beside --json's document."""
        return "; ".join(f"{c.label} {c.name}" for c in self.cases if not c.passed)


MAX_REPR_CASES, MAX_REPR_LINE = 10, 200  # a report's repr: failed cases shown, characters of each line


def _summary(t: TargetReport) -> str:
    """A target's verdict, its failures (else its headline figures) in one line: a report's repr."""
    if not t.passed:
        return "FAILED: " + ", ".join(t.failed_gates())
    cosine = t.quant_parity.worst("cosine")
    figures = [f"cos int8 {cosine:.4f}" if isinstance(cosine, float) else "",
               f"accuracy {t.accuracy.fp32:.2f}→{t.accuracy.int8:.2f}%" if t.accuracy else "",
               f"p50 int8 {t.latency.int8.p50_ms:.3g} ms" if t.latency else ""]
    return ", ".join(["passed", *filter(None, figures), f"{len(t.gates)} gates"])
