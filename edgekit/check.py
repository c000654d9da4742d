"""`edgekit check`: re-run a package's golden vectors with the installed onnxruntime and verify hashes.

Needs only numpy and onnxruntime (no torch). A failed comparison or hash is a *result* (exit 1);
a missing or unreadable file is bad input (exit 3).
"""
from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from . import archive, package
from .errors import InputError
from .runtime import session

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass
class Case:
    target: str
    name: str
    passed: bool
    message: str = ""
    seconds: float = 0.0


def check(path: Path) -> list[Case]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    with contextlib.ExitStack() as stack:
        if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgekit-check-")))
            archive.extract(path, tmp)
            path = tmp
        elif path.is_file():
            raise InputError(f"{path}: expected a package folder or a .tar.gz archive")
        return [case for folder in _target_folders(path) for case in _check_target(folder)]


def _target_folders(path: Path) -> list[Path]:
    if (path / "manifest.json").is_file():
        return [path]
    folders = sorted(p.parent for p in path.glob("*/manifest.json"))
    if not folders:
        raise InputError(f"{path}: no manifest.json in it or in its sub-folders")
    return folders


def _check_target(folder: Path) -> list[Case]:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        target, files, golden = manifest["target"], manifest["files"], manifest["golden"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{folder / 'manifest.json'}: unreadable or incomplete ({type(e).__name__}: {e})") from e
    cases = [_integrity(folder, target, files)]
    models = [golden["model"]] + ([manifest["ort_format"]["file"]] if manifest.get("ort_format") else [])
    inputs, expected, atol = package.read_golden(_existing(folder, golden["file"]))
    for model in models:
        cases.append(_parity(_existing(folder, model), target, inputs, expected, atol))
    return cases


def _existing(folder: Path, name: str) -> Path:
    path = folder / name
    if Path(name).name != name or not path.is_file():
        raise InputError(f"{folder}: {name} is missing")
    return path


def _integrity(folder: Path, target: str, files: dict) -> Case:
    bad = []
    for name, digest in sorted(files.items()):
        actual = package.sha256(_existing(folder, name))
        if actual != digest:
            bad.append(f"{name} sha256 {actual[:12]}… != manifest {digest[:12]}…")
    return Case(target, "integrity", not bad, "; ".join(bad))


def _parity(model: Path, target: str, inputs, expected, atol) -> Case:
    import time

    start = time.perf_counter()
    sess, _ = session(model, exact_int8=True)
    worst = None  # (excess over tolerance, message)
    for i, (feed, want) in enumerate(zip(inputs, expected)):
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        for name, ref in want.items():
            if name not in got or got[name].shape != ref.shape:
                return Case(target, f"parity {model.name}", False, f"output {name!r} missing or of another shape "
                                                                    f"in sample {i}")
            err = np.abs(got[name].astype(np.float64) - ref.astype(np.float64))
            idx = np.unravel_index(int(np.argmax(err)), err.shape) if err.size else ()
            excess = float(err[idx]) - atol[name] if err.size else -1.0
            if worst is None or excess > worst[0]:
                worst = (excess, f"output {name!r} sample {i} element {list(map(int, idx))}: "
                                 f"expected {float(ref[idx]):.9g}, got {float(got[name][idx]):.9g}, "
                                 f"|error| {float(err[idx]):.3g} vs tolerance {atol[name]:.3g}")
    passed = worst is None or worst[0] <= 0
    return Case(target, f"parity {model.name}", passed, "" if passed else worst[1], time.perf_counter() - start)


def junit(cases: list[Case]) -> str:
    """JUnit XML: one <testsuite> per target, one <testcase> per check."""
    root = ElementTree.Element("testsuites", name="edgekit check", tests=str(len(cases)),
                               failures=str(sum(not c.passed for c in cases)))
    for target in dict.fromkeys(c.target for c in cases):
        mine = [c for c in cases if c.target == target]
        suite = ElementTree.SubElement(root, "testsuite", name=target, tests=str(len(mine)),
                                       failures=str(sum(not c.passed for c in mine)), errors="0")
        for c in mine:
            case = ElementTree.SubElement(suite, "testcase", classname=f"edgekit.{target}", name=c.name,
                                          time=f"{c.seconds:.3f}")
            if not c.passed:
                ElementTree.SubElement(case, "failure", message=c.message).text = c.message
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True)


def as_dicts(cases: list[Case]) -> list[dict]:
    return [asdict(c) for c in cases]
