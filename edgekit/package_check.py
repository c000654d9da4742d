"""`edgekit check`: re-run a package's golden vectors with the installed onnxruntime and verify hashes.

Needs only numpy and onnxruntime (no torch). A failed comparison or hash is a *result* (exit 1);
a missing or unreadable file is bad input (exit 3).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Protocol
from xml.etree import ElementTree

import numpy as np

from . import (READS_FROM, __version__, archive, arrays, bounded, detections, emulated_kernels, host, mobile,
               model_claims, package, parity, published, report_html, runner)
from .config import (C_NAME_FORM, RANGES, TARGET_NAME, ParitySpec, Target, bundled, list_targets,
                     load_target)
from .errors import InputError, StageError, StepTimeout, UsageError, few, first_line
from .probe import probe as probe_model
from .report import printable
from .reports import ARM_STAND_IN, VERSION_CASE, Case, CheckReport, shipped_model, size_error, unrun_size
from .runtime import CAPPED, int8_session, run_error, run_limit, runs_limited, session

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.xz", ".txz", ".tar.bz2")
MAX_NAME = 256  # a state input's or output's name (one of 200,000 characters overflowed the child's command line)
CHECKED_ON = ("CPUExecutionProvider",)  # the providers check's own parity sessions ask for
MIN_STEP = 1e-45  # a quantization step, at least float32's smallest (a model that emits ~0 has one near it)
# entries of a folder given to check, two folders down (where its globs look for manifests, archives and models): an
# OUT holds a few hundred. 100,000 empty folders took check 24-57 s (its ~15 globs each listed them all) to say it
# held no package
MAX_FOLDER_ENTRIES = 10_000
MAX_PAGE_BYTES = 16 << 20  # report.html: edgekit's pages are tens of KB; the parser is read whole
INT8 = "model.int8.onnx"
FP32 = "model.onnx"  # the float reference (a CoreML build's fp32 model is ort_format.fp32's own fixed-shape copy)
log = logging.getLogger("edgekit")
# an edgekit version (PEP 440's release numbers, then any pre-, post-, dev- or local part): 0.1.0, 1.2rc1, 1.2.0+g1
VERSION = re.compile(r"(\d{1,9}(?:\.\d{1,9}){0,9})(?:[.+-]?[A-Za-z][A-Za-z0-9.+-]{0,63}|[.+-]\d[A-Za-z0-9.+-]{0,63})?")
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")  # what XML 1.0 cannot hold


class CheckStopped(StepTimeout):
    """Past --step-timeout check ends (exit 4) as before, now with its cases: those it ran, the one it stopped in (an
    error) and those it never reached (skipped), which a CI page shows (its JUnit and --json had `cases: []`)."""

    def __init__(self, e: StepTimeout, cases: list[Case]):
        super().__init__(e.stage, e.message)
        self.report = CheckReport(cases)

    @property
    def json_payload(self) -> dict:
        """check --json's own keys for this error: its cases, where an error's document has none."""
        from .reports import ran_by

        return {"ran_by": ran_by(), "cases": [asdict(c) for c in self.report.cases]}


def _stopped(e: StepTimeout, ran: list[Case], stopped_in: list[Case], unreached: list[Case]) -> CheckStopped:
    """The error ending check at `stopped_in`'s cases (marked errors), after `ran`, before `unreached` (skipped)."""
    why = f"not run: check ended when {e.stage} ran past --step-timeout"
    return CheckStopped(e, [*ran, *(replace(c, passed=False, error=True, message=str(e)) for c in stopped_in),
                            *(replace(c, passed=False, skipped=True, message=why) for c in unreached)])


def _planned_cases(folder: Path, shown: str) -> list[Case]:
    """The cases a package folder check has not reached would have: integrity, gates, and a parity case for each
    model with golden outputs its manifest lists (none where the manifest cannot be read)."""
    target = folder.name
    try:
        manifest = read_manifest(folder, shown)
        golden = manifest["golden"]["models"] if isinstance(manifest["golden"]["models"], dict) else {}
        target = manifest["target"] if isinstance(manifest.get("target"), str) and TARGET_NAME.fullmatch(
            manifest["target"]) else target
    except (InputError, KeyError, TypeError, AttributeError):  # its own check says what is wrong with it
        golden = {}
    return [Case(target, name, False, folder="" if folder.name == target else folder.name)
            for name in ("integrity", "gates", *(f"parity {m}" for m in golden))]


def check(path: Path, place: Callable[[dict], Place | None] | None = None, probe: bool = False,
          bench: bool = True, own: bool = False, only: set[str] | None = None) -> CheckReport:
    """Re-run a package's golden vectors and verify its file hashes (folder, OUT folder or archive).
    `place`: given a target's manifest, where its models run (default, or None for it: this host, in a bounded child);
    `probe`: also name the first node where `place`'s kernels and this host's part; `bench`: time the
    models on a real device `place`; `own`: this process has just written the package, so its models run
    here, not in a bounded child (the same comparisons, without a child's start-up and imports); `only`: in an OUT
    folder, these targets' folders and archives alone (an export's, beside older ones)."""
    if probe and place is None:
        raise UsageError("--probe compares two kernel sets: give it --emulate or --device")
    original = Path(path)
    if not original.exists():
        raise InputError(f"{original}: no such file or folder")
    if original.is_dir() and not own:  # a folder from others (an export's own OUT is the user's)
        _few_entries(original)
    if original.is_dir() and (archives := _archives_only(original)):
        return _check_archives(original, archives, place, probe, bench, own, only)
    with contextlib.ExitStack() as stack:
        # `.` or `..` has no name to tell a target's folder by, or name a device's copy after: its real one
        root, mismatched, copied = original.resolve() if original.name in ("", "..") else original, {}, False
        if original.is_file() and original.name.endswith(ARCHIVE_SUFFIXES):
            # named as the archive (OUT/<target>.tar.gz → <target>): a device's copy is named after it too
            stem = _archive_stem(original.name)
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgekit-check-"))) / (
                stem if stem.strip(".") and stem.isprintable() and stem == stem.encode("utf-8", "replace").decode()
                else "package")
            root.mkdir()
            copied = True
            mismatched = {root / name: digest for name, digest in
                          archive.extract(original, root).items()}
        elif original.is_file():
            raise InputError(f"{original}: expected a package folder or a .tar.gz archive")
        # messages name the folder as the user knows it (inside the archive), not the temporary copy
        folders = _target_folders(root, original)
        if only is not None and folders != [root]:
            folders = [f for f in folders if f.name in only]
        cases = []
        for out in sorted({f.parent for f in folders}) or [root]:  # OUT, or each copy of one in a folder given
            mine = [f for f in folders if f.parent == out]
            shown = {f: str(original if f == root else original / f.relative_to(root)) for f in folders}
            unreached = functools.partial(_unreached, root, out, folders if folders != [root] else [], shown, only,
                                          mismatched)
            found = _check_folders(mine, shown, cases, unreached, _namer(root, out), mismatched, place, probe, bench,
                                   own)
            # OUT's archives, in a tar of OUT too: there only those OUT's ledger records, by hash (archive.extract)
            found += [] if folders == [root] else _archives_beside(out, original / out.relative_to(root), mine,
                                                                   only, mismatched)
            # an archive of one package folder (OUT/<target>.tar.gz) is no OUT: it has no record to miss
            found += [] if folders == [root] else _published_there(out, original / out.relative_to(root), mine, only,
                                                                   not copied or len(folders) > 1)
            cases += _namer(root, out)(found)
        return CheckReport(cases)


def _check_folders(mine: list[Path], shown: dict[Path, str], done: list[Case], later: Callable[[], list[Case]],
                   named: Callable[[list[Case]], list[Case]], *args) -> list[Case]:
    """The cases of OUT's package folders `mine`. Past --step-timeout, CheckStopped with every case: `done` (copies
    of OUT checked before), those these folders ran, the one it stopped in, and skipped: the rest of these and
    `later()` (in the copies of OUT after)."""
    found = []
    for i, folder in enumerate(mine):
        log.info("checking %s", shown[folder])  # check -v: a long check of OUT shows where it is
        try:
            found += _check_target(folder, shown[folder], *args)
        except StepTimeout as e:
            planned = _planned_cases(folder, shown[folder])
            stopped = e.report.cases if isinstance(e, CheckStopped) else _stopped(
                e, [], planned[:1], planned[1:]).report.cases
            unreached = [*(c for c in stopped if c.skipped), *(c for f in mine[i + 1:]
                                                               for c in _planned_cases(f, shown[f]))]
            raise _stopped(e, [*done, *named([*found, *(c for c in stopped if not c.skipped)])], [],
                           [*named(unreached), *later()]) from None
    return found


def _unreached(root: Path, out: Path, folders: list[Path], shown: dict[Path, str], only: set[str] | None,
               mismatched: dict[Path, str]) -> list[Case]:
    """Past --step-timeout in OUT `out`: the cases not reached after its folders, its archives', then each later
    copy of OUT's (its folders', its archives'). `folders`: [] where the path given is one package folder."""
    found = []
    for o in sorted({f.parent for f in folders if f.parent >= out}):
        if o != out:
            found += _namer(root, o)([c for f in folders if f.parent == o for c in _planned_cases(f, shown[f])])
        found += _namer(root, o)(_planned_archives(o, only, mismatched))
    return found


def _planned_archives(out: Path, only: set[str] | None, mismatched: dict[Path, str]) -> list[Case]:
    """The `archive NAME` cases _archives_beside would give OUT's archives (not reached past --step-timeout)."""
    return [Case(stem, f"archive {path.name}", False) for path, stem in _archives_in(out, only, mismatched)]


def _archives_in(out: Path, only: set[str] | None, mismatched: dict[Path, str] | None) -> list[tuple[Path, str]]:
    """OUT's archives check holds, each with its target's name: its files named like one, and from a tar of OUT
    those whose bytes are not its ledger's (`mismatched`, never unpacked); only `only`'s targets where given."""
    altered = {path for path in (mismatched or {}) if path.parent == out}
    return [(path, stem) for path in sorted({*out.iterdir(), *altered})
            if (path in altered or path.is_file()) and (stem := _archive_stem(path.name)) is not None
            and (only is None or stem in only)]


def _namer(root: Path, out: Path) -> Callable[[list[Case]], list[Case]]:
    """Two copies of OUT in a folder given hold the same targets: each case named by its folder (dist/desktop-x86)."""
    if root not in out.parents:
        return list
    there = out.relative_to(root).as_posix()
    return lambda cases: [replace(c, folder=f"{there}/{c.folder or c.target}") for c in cases]


def _few_entries(folder: Path) -> None:
    """InputError where `folder`, its folders and theirs hold more than MAX_FOLDER_ENTRIES entries, counted as listed
    (no more than that many listed): check's globs list them each several times."""
    seen, todo = 0, [(folder, 0)]
    while todo:
        at, depth = todo.pop()
        try:
            with os.scandir(at) as entries:
                for entry in entries:
                    if (seen := seen + 1) > MAX_FOLDER_ENTRIES:
                        raise InputError(f"{folder}: holds more than {MAX_FOLDER_ENTRIES:,} files and folders two "
                                         "folders down; give check a package folder, an OUT or an archive")
                    if depth < 2 and entry.is_dir():
                        todo.append((Path(entry.path), depth + 1))
        except OSError:
            continue  # unreadable: the globs skip it as well


def _archives_only(folder: Path) -> list[Path]:
    """The package archives in a folder that holds no package (downloaded CI artifacts: `*.tar.gz` in it or, where
    it has none, one folder further down, each artifact's own folder); [] where it holds a manifest.json or none."""
    if any(next(folder.glob("*/" * depth + "manifest.json"), None) for depth in range(3)) or _out_records(folder):
        return []  # an OUT whose folders are all gone is held to its records, not checked by its archives alone
    found = []
    for depth in range(2):
        found = found or sorted(p for p in folder.glob("*/" * depth + "*") if _archive_stem(p.name)
                                and (p.is_file() or p.is_symlink()))
    if links := [p for p in found if any(q.is_symlink() for q in (p, p.parent) if q != folder)]:
        # it would check an archive elsewhere as this one
        raise InputError(f"{links[0]}: a link, not an archive inside {folder}")
    if found and (lost := sorted(p.parent for depth in range(3) for pattern in ("*.onnx", "*.ort", "golden.npz")
                                 for p in folder.glob("*/" * depth + pattern))):  # a CI glob that dropped *.json
        raise InputError(f"{lost[0]}: holds a package's files but no manifest.json")
    return found


def _out_records(folder: Path) -> bool:
    """The folder holds edgekit's records of an OUT (its targets, its archives): an OUT, whatever is left in it."""
    return any(os.path.lexists(folder / name) for name in (published.INDEX, archive.LEDGER))


def _check_archives(folder: Path, archives: list[Path], place, probe: bool, bench: bool, own: bool,
                    only: set[str] | None) -> CheckReport:
    """Each archive checked as `check ARCHIVE` does, its cases named by the archive (`arm64-linux`, or
    `ci-arm/arm64-linux` one folder down; `v2/arm64-linux` for arm64-linux's package in v2.tar.gz). One that cannot be
    read fails its own case, and the others are still checked, as OUT's archives are."""
    cases = []
    for i, path in enumerate(archives):
        stem, prefix = _archive_stem(path.name), _prefix(folder, path)
        named = functools.partial(_named_in_archive, prefix, stem)
        try:
            found = check(path, place, probe, bench, own, only).cases
        except InputError as e:
            cases.append(Case(stem, f"archive {path.name}", False, str(e), folder=prefix and prefix + stem))
            continue
        except CheckStopped as e:  # the archives after it are not checked: each one's case says so
            unread = [Case(stem, f"archive {p.name}", False, folder=prefix and prefix + stem) for p in archives[i + 1:]
                      for stem, prefix in [(_archive_stem(p.name), _prefix(folder, p))]]
            raise _stopped(e, [*cases, *named(c for c in e.report.cases if not c.skipped)], [],
                           [*named(c for c in e.report.cases if c.skipped), *unread]) from None
        cases += named(found)
    return CheckReport(cases)


def _prefix(folder: Path, path: Path) -> str:
    """`ci-arm/` for an archive one folder down in `folder`, "" for one in it."""
    there = path.parent.relative_to(folder).as_posix()
    return "" if there == "." else f"{there}/"


def _named_in_archive(prefix: str, stem: str, found) -> list[Case]:
    """An archive's cases named by it (`ci-arm/arm64-linux`; `v2/arm64-linux` for arm64-linux's package in
    v2.tar.gz)."""
    return [replace(c, folder=prefix + (there if (there := c.folder or c.target) == stem or
                                        there.startswith(f"{stem}/") else f"{stem}/{there}")) for c in found]


def _archive_stem(name: str) -> str | None:
    """`x` of x.tar.gz (or .tgz, ...); None for a name that is not an archive's."""
    return next((name[: -len(s)] for s in ARCHIVE_SUFFIXES if name.endswith(s)), None)


def _archives_beside(out: Path, shown: Path, folders: list[Path], only: set[str] | None = None,
                     mismatched: dict[Path, str] | None = None) -> list[Case]:
    """OUT/<target>.tar.gz, what build engineers ship, is the package checked in OUT/<target>: every member
    matches the hash its manifest gives, and that manifest is the folder's (an archive of garbage passed).
    `shown`: OUT as the user knows it; `mismatched`: from a tar of OUT, the actual sha256 of each archive there
    whose bytes are not those OUT's ledger records (never unpacked)."""
    by_name, cases, altered = {folder.name: folder for folder in folders}, [], mismatched or {}
    for path, stem in _archives_in(out, only, mismatched):
        if path in altered:  # its member hash did not match the ledger: tampered with after export
            cases.append(Case(stem, f"archive {path.name}", False, f"sha256 {altered[path][:12]}… is not the one "
                              f"edgekit recorded for it ({archive.LEDGER} in "
                              f"{shown})"))
            continue
        if (folder := by_name.get(stem)) is None:  # never checked, yet a CI job uploading OUT/*.tar.gz ships it
            cases.append(Case(stem, f"archive {path.name}", False, f"no package folder {stem} beside it in {shown}: "
                              "check it on its own (edgekit check ARCHIVE) or move it away"))
            continue
        with tempfile.TemporaryDirectory(prefix="edgekit-check-") as tmp:
            try:
                changed = archive.extract(path, Path(tmp))
                inside = [*Path(tmp).glob("manifest.json"), *Path(tmp).glob("*/manifest.json")]
                own = (folder / "manifest.json").read_bytes()
                same = not changed and len(inside) == 1 and inside[0].read_bytes() == own
                why = "" if same else (f"members differ from their manifest: {', '.join(sorted(changed))}"
                                       if changed else f"its manifest.json is not {folder.name}/manifest.json")
            except InputError as e:  # named as the user knows it, not as the copy unpacked from a tar of OUT
                same, why = False, str(e).replace(str(path), str(shown / path.name))
        cases.append(Case(folder.name, f"archive {path.name}", same, why))
    return cases


def _published_there(out: Path, shown: Path, folders: list[Path], only: set[str] | None, an_out: bool) -> list[Case]:
    """A failed case for each target OUT's record says edgekit published there that is gone, or holds another
    manifest than the one published (`rm -r OUT/android-arm64` passed `check OUT` with the other targets)."""
    record = published.read(out, shown)
    if record is None and an_out:  # made by an edgekit before the record, or copied without it
        log.warning("%s: no %s, so which targets it should hold is not verified, only the packages found in it",
                    shown, published.INDEX)
    if record is None:  # checked as before
        return []
    by_name, cases = {f.name: f for f in folders}, []
    for name, allowed in sorted(record.targets.items()):
        if only is not None and name not in only:
            continue
        if (folder := by_name.get(name)) is None:
            cases.append(Case(name, "published", False, f"missing: no folder {name} in {shown}, where edgekit "
                              f"published it ({published.INDEX}): re-export it, or delete its entry there if it "
                              "was removed on purpose"))
        elif (held := published.manifest_sha256(folder)) not in allowed:
            cases.append(Case(name, "published", False, f"its manifest.json (sha256 {held[:12]}…) is not the one "
                              f"edgekit published there ({allowed[-1][:12]}…, {published.INDEX} in {shown})"))
    if unlisted := sorted(set(by_name) - set(record.targets)):
        log.warning("%s: %s not published there by edgekit (copied in?): checked on its own", shown,
                    ", ".join(unlisted))
    return cases


def _state_pairs(manifest: dict) -> dict[str, str]:
    """A streaming package's state table ({input: the output fed back to it}); {} for any other."""
    return (manifest.get("state") or {}).get("pairs") or {}


def _target_folders(path: Path, shown: Path) -> list[Path]:
    """The package folders under `path`, each with a name onnxruntime can open (UTF-8): its own, OUT's, or, where
    neither holds a manifest, those one folder further down (a copy of OUT, `cp -a dist nest/`)."""
    from .runtime import ort_path

    if (path / "manifest.json").exists():  # whatever it is: _manifest refuses what is not a regular file
        ort_path(path, shown)
        return [path]
    folders, depth = [], 0
    while not folders and depth < 2:
        depth += 1
        folders = sorted(p.parent for p in path.glob("*/" * depth + "manifest.json"))
    if links := [p for f in folders for p in (f.parent, f) if p != path and p.is_symlink()]:
        # it would check a package elsewhere as this one
        raise InputError(f"{shown / links[0].relative_to(path)}: a link, not a package folder inside {shown}")
    for folder in folders:
        ort_path(folder, shown / folder.relative_to(path))
    if not folders and _out_records(path):
        raise InputError(f"{shown}: an OUT that lost every package folder (edgekit's records of it are there): export "
                         "again" + (", or check each of its archives alone (OUT/<target>.tar.gz)"
                                    if any(_archive_stem(p.name) for p in path.iterdir()) else ""))
    if not folders:
        raise InputError(f"{shown}: no manifest.json in it, its sub-folders or theirs, nor a package archive "
                         "(.tar.gz) in it or its sub-folders")
    if lost := sorted(p.parent.relative_to(path) for d in range(1, depth + 1)
                      for pattern in ("*.onnx", "*.ort", "golden.npz") for p in path.glob("*/" * d + pattern)
                      if p.parent not in folders):  # a CI glob that dropped *.json must not check green
        raise InputError(f"{shown / lost[0]}: holds a package's files but no manifest.json")
    return folders


def _check_target(folder: Path, shown: str, *args) -> list[Case]:
    """The cases of one package folder, each naming its target, and the folder when it is named otherwise: two
    folders of one target (desktop-x86, desktop-x86-prev) must be told apart, and a reader of --json gets both."""
    manifest = read_manifest(folder, shown)
    if refused := _version_refused(manifest, shown):  # read as this edgekit's, another's format fails as tampered
        target = manifest["target"] if isinstance(manifest.get("target"), str) and TARGET_NAME.fullmatch(
            manifest["target"]) else folder.name
        return [Case(target, VERSION_CASE, False, refused, folder="" if folder.name == target else folder.name)]
    manifest = _manifest(manifest, shown)
    target = manifest["target"]
    relabel = functools.partial(replace, target=target, folder="" if folder.name == target else folder.name)
    try:
        return [relabel(c) for c in _check_package(folder, shown, manifest, *args)]
    except CheckStopped as e:
        e.report.cases[:] = map(relabel, e.report.cases)
        raise


def _version_refused(manifest, shown: str) -> str:
    """Why this edgekit does not check a package ("" when it does): a newer edgekit's (_needs_newer) or an older one's
    (_made_too_long_ago), whose manifest this one would read as tampered. A version that is no version, or none,
    is bad input."""
    if not isinstance(manifest, dict):
        return ""  # refused by _manifest
    for key in ("edgekit_version", "checkable_by"):
        if key in manifest:  # null too: it skipped the gate, where "banana" was refused
            _release(manifest[key], f"{shown}/manifest.json: {key}")
    if "edgekit_version" not in manifest:  # deleted, it skipped this gate and report.md's comparison
        raise InputError(f"{shown}/manifest.json: no edgekit_version, which every edgekit writes (the version that "
                         "made the package)")
    return _needs_newer(manifest) or _made_too_long_ago(manifest["edgekit_version"])


def _needs_newer(manifest: dict) -> str:
    """Its `checkable_by`, the oldest edgekit able to check it, is newer than this one (a manifest without it was made
    before it, by an edgekit no newer than the one that made it)."""
    made, needs = manifest["edgekit_version"], manifest.get("checkable_by")
    decides = made if needs is None else needs
    if _release(decides, "") <= _release(__version__, "this edgekit's version"):
        return ""
    by = f" (made by edgekit {made})" if needs is not None else ""
    return f"this package needs edgekit {decides} or newer to check it{by}, and this is edgekit {__version__}: " \
        f"upgrade edgekit to {decides} or newer"


def _made_too_long_ago(made: str) -> str:
    """An edgekit older than READS_FROM made it: its manifest lacks what this check requires. Edited down from a
    newer version, the package fails here too: no rule is skipped for an older version."""
    if _release(made, "") >= _release(READS_FROM, "READS_FROM"):
        return ""
    made = printable(made)
    return f"made by an older edgekit ({made}): this is edgekit {__version__}, which checks packages made by " \
        f"edgekit {READS_FROM} or newer: re-export it with this one (or check it with edgekit {made})"


def _release(version, what: str) -> tuple[int, ...]:
    """A version's release numbers (1.2.0rc1 → (1, 2): trailing zeros dropped, PEP 440's suffixes ignored), enough
    to order edgekit's releases without `packaging`, which is no dependency of edgekit's."""
    if not (isinstance(version, str) and (found := VERSION.fullmatch(version))):
        raise InputError(f"{what} {'null' if version is None else repr(version)[:40]} is not a version (edgekit "
                         "writes versions like 1.2.3)")
    numbers = [int(n) for n in found[1].split(".")]
    while len(numbers) > 1 and not numbers[-1]:
        numbers.pop()
    return tuple(numbers)


def _check_package(folder: Path, shown: str, manifest: dict, mismatched: dict[Path, str], place, probe: bool,
                   bench: bool, own: bool = False) -> list[Case]:
    target, files, golden = manifest["target"], manifest["files"], manifest["golden"]["models"]
    if folder.name != target:  # the cases' own messages and probes name it as the report shows it
        target = f"{target} ({folder.name})"
    if FP32 not in files or INT8 not in golden:  # every package ships both; one removed with its entries passed
        lacks = f"does not hash {FP32}" if FP32 not in files else f"has no golden outputs for {INT8}"
        raise InputError(f"{shown}: manifest.json {lacks}, which every package ships")
    orts = _ort_files(manifest)  # .ort → the .onnx it was converted from
    if lacking := [m for pair in orts.items() for m in pair if m not in golden]:
        raise InputError(f"{shown}: manifest.json has no golden outputs for the shipped {lacking[0]}")
    for model, entry in golden.items():
        for name in (model, entry["file"]):
            if name not in files:
                raise InputError(f"{shown}: manifest.json does not hash {name}, so it cannot be trusted")
    if unchecked := [n for n in files if n.endswith((".onnx", ".ort")) and n != FP32 and n not in golden]:
        raise InputError(f"{shown}: manifest.json ships {unchecked[0]} with no golden outputs to check it by")
    _golden_files_apart(shown, golden)
    _within_archive_caps(folder, shown, files, archive.file_sizes(manifest))
    cases = [_integrity(folder, shown, target, manifest, mismatched, pages=not own), _gates(target, manifest)]
    not_run = [Case(target, f"parity {m}", False, "not run: the package failed its integrity check") for m in golden]
    if not cases[0].passed:  # files that are not what the manifest says are never run
        return cases + not_run
    pairs, state, steps = [], _state_pairs(manifest), manifest["golden"].get("steps") or {}
    # an fp32 model's outputs have no quantization step to count differences in
    steps = {m: steps if m == INT8 or orts.get(m) == INT8 else {} for m in golden}
    read, profile = {}, _bundled_profile(manifest.get("target_profile_sha256"))
    # the export's own check: the config was just made from the same conversion (made again: 1.2-1.7 s a target)
    with _stops_in(ran=[], stopped_in=cases[:1], unreached=[cases[1], *not_run]):
        untrue = {"model_data": _c_array_claims(folder, manifest),
                  "required_operators": "" if own else _operator_claims(folder, manifest),
                  "report.html": _page_claims(folder, manifest), package.LABELS: _labels_claim(folder, manifest)}
        for model, entry in golden.items():
            golden_path = _existing(folder, shown, entry["file"])
            if declared := _declared_claims(manifest, golden_path, f"{shown}/{entry['file']}"):  # its data never read
                untrue[model] = declared
                continue
            # a malformed golden file is bad input (exit 3), named in the package the user gave
            inputs, outputs, atol, channels = package.read_golden_channels(golden_path, f"{shown}/{entry['file']}",
                                                                           package.golden_entries(manifest))
            read[model] = inputs, outputs, atol
            pairs.append((str(_existing(folder, shown, model)), str(golden_path)))
            untrue[model] = "; ".join(filter(None, (_io_claims(manifest, inputs[0], outputs[0]),  # what parity checks
                                                    _state_claims(state, inputs, outputs),
                                                    _golden_claims(entry, manifest["golden"], (atol, channels), inputs,
                                                                   outputs, profile, steps[model]))))
        fp32 = (manifest.get("ort_format") or {}).get("fp32") or {}
        for ort, onnx in orts.items() if len(read) == len(golden) else ():  # once every golden file is read, whatever
            # the manifest's order (one whose headers are untrue is not: the package fails on them)
            untrue[ort] = "; ".join(filter(None, (untrue.get(ort), _ort_claims(manifest, read, ort, onnx))))
            if onnx == fp32.get("onnx") and "inputs" in fp32:  # the fixed shapes a CoreML app feeds, as the model runs
                inputs, outputs, _ = read[onnx]
                untrue[onnx] = "; ".join(filter(None, (untrue[onnx], _io_claims(fp32, inputs[0], outputs[0]))))
        # what each model's own graph contradicts (re-hashed files pass integrity: the fp32 model as model.int8.onnx);
        # not in the export's own check, which wrote the manifest from these graphs (parsing them again cost a parse
        # each)
        models = [] if own else [n for n in files if n.endswith((".onnx", ".ort"))]
        for name, why in model_claims.model_claims(folder, manifest, models).items():
            untrue[name] = "; ".join(filter(None, (untrue.get(name), why)))
        failing = not cases[1].passed or any(untrue.values())
        for name, why in ({} if own else _report_claims(folder, shown, manifest, failing)).items():
            untrue[name] = untrue.get(name) or why  # a page with a script says so, not also that it differs
    if said := [f"manifest.json says of {name}: {why}" for name, why in untrue.items() if why]:
        return [Case(target, "integrity", False, "; ".join(said)), cases[1]] + not_run
    if not own and (why := _pages_rendered_otherwise(manifest)) and any((folder / p).exists() for p in package.PAGES):
        # said where a pass shows it: a version edited in and re-hashed is how a forged report escapes the comparison
        cases[0] = replace(cases[0], message=f"report.md and report.html not compared with the manifest: {why}")
    if not own and (why := _operators_not_made_again(manifest)):  # the same: versions.onnxruntime edited
        cases[0] = replace(cases[0], message="; ".join(filter(None, (cases[0].message, why))))
    with _stops_in(ran=cases[:1], stopped_in=not_run, unreached=cases[1:2]):  # gates: refigured from the runs
        at = _place_for(place, manifest, shown)
        entries = _contract_entries(manifest)
        run = functools.partial(_parity_here if own else _parity_bounded, entries=entries)
        # the int8 model's golden outputs against the fp32 model's, run here whatever `place` runs the parity cases
        job = {"fp32": str(folder / FP32), "golden": str(folder / golden[INT8]["file"]),
               "task": str(manifest.get("task") or "other"), "floors": _quiet_floors(manifest),
               "detected": _detected(manifest)}
        if at is None:  # no place given, or none of the package's kind (the emulator's aarch64 for an x86_64 package)
            found, figures = run(target, pairs, state, steps, job)
            cases[1] = _refigured(cases[1], manifest, figures)
            found = _made_elsewhere(_under_less_memory(found, manifest), manifest)
            if place is not None:
                why = ("a package for x86_64, whose golden outputs are this kind of CPU's" if package_kind(manifest) ==
                       "x86_64" else "a package for arm64: --emulate aarch64 runs ARM's kernels")
                unprobed = ", not probed" if probe else ""  # --probe compares two kernel sets: here there is one
                found = [replace(c, where=f"{c.where} (not emulated{unprobed}: {why})") for c in found]
            elif (made := manifest.get("arm_kernels")) and made != ARM_STAND_IN and not all(c.passed for c in found):
                found = [c if c.passed else replace(c, message=f"{c.message} (its golden outputs come from {made}: "
                                                               "check it there, with --emulate or --device)")
                         for c in found]
            return cases + found
        parities = _parity_at(at, folder, target, pairs, state, steps, manifest, entries)
        cases[1] = _refigured(cases[1], manifest, run(target, [], state, steps, job)[1])
        if getattr(at, "real", False) and at.arch != (kind := package_kind(manifest)):
            # compared as a host of that kind would be, but said: this device is not where the package runs
            other = f"a device of kind {at.arch}, the package for {kind}"
            parities = [replace(c, where=f"{c.where} ({other})", message=c.message if c.passed else
                                f"{c.message} (check it on a device of kind {kind})") for c in parities]
        cases += parities
        if bench and getattr(at, "real", False):
            cases.append(_latency_at(at, folder, target, manifest, Path(pairs[0][1]).name))
        if probe:
            # an .ort has no graph to expose; the int8 model first (an iOS package's model.coreml.onnx has golden
            # outputs)
            onnx_pairs = sorted((p for p in pairs if p[0].endswith(".onnx")), key=lambda p: Path(p[0]).name != INT8)
            if not onnx_pairs:
                raise InputError(f"{shown}: --probe needs an .onnx model with golden outputs; the package has none")
            int8, golden_path = onnx_pairs[0]
            start = time.perf_counter()
            try:
                found, passed = probe_model(Path(int8), Path(golden_path), at, state), True
            except StageError:
                raise  # the emulator or device did not answer: exit 4, naming the step
            except Exception as e:  # a model from others that onnx cannot read: a failed case, and CI gets its report
                found, passed = f"{Path(int8).name} cannot be probed: {type(e).__name__}: {first_line(e, 200)}", False
            cases.append(Case(target, f"probe {Path(int8).name}", passed, found, time.perf_counter() - start,
                              where=f"{at.label} vs {host.where()}"))  # it runs there and here: 0.0 s was untrue
        return cases


@contextlib.contextmanager
def _stops_in(ran: list[Case], stopped_in: list[Case], unreached: list[Case]):
    """A step of a package's check past --step-timeout ends check (exit 4), naming the cases it ran, those it
    stopped in and those it never reached."""
    try:
        yield
    except CheckStopped:
        raise
    except StepTimeout as e:
        raise _stopped(e, ran, stopped_in, unreached) from None


def _place_for(place, manifest: dict, shown: str):
    """Where `place` runs this package (None: here); a place that cannot be made for it (the onnxruntime release its
    manifest records has no wheels, or is no version) names the package, as `check OUT` checks several."""
    try:
        return place(manifest) if place is not None else None
    except InputError as e:
        raise type(e)(f"{shown}: {e}") from None
    except StageError as e:
        if isinstance(e, StepTimeout):
            raise
        raise StageError(e.stage, f"{e.message} (checking {shown})") from None


def _io_claims(manifest: dict, inputs: dict, outputs: dict) -> str:
    """What manifest.json says of the inputs and outputs that a golden sample (the model's own, which parity
    checks) contradicts: names, output order, dtypes, ranks and fixed sizes (reversed outputs passed)."""
    bad = []
    for what, seen in (("inputs", inputs), ("outputs", outputs)):
        claimed = manifest.get(what)
        if not (isinstance(claimed, list) and all(isinstance(c, dict) and isinstance(c.get("name"), str)
                                                  for c in claimed)):
            bad.append(f"its {what} are not a list of named tensors")
            continue
        names = [c["name"] for c in claimed]
        if (names != list(seen)) if what == "outputs" else set(seen) != set(names):
            bad.append(f"{what} {few(names, 4)}, the golden sample's {few(list(seen), 4)}")
            continue
        for c in (c for c in claimed if c["name"] in seen):
            array, shape = seen[c["name"]], c.get("shape")
            if c.get("dtype") != str(array.dtype) or not isinstance(shape, list) or len(shape) != array.ndim or any(
                    not isinstance(d, str) and (type(d) is not int or d != n) for d, n in zip(shape, array.shape)):
                bad.append(f"{what[:-1]} {c['name']!r} is {c.get('dtype')!r} {shape!r}, the golden sample's "
                           f"{array.dtype} {list(array.shape)}")
    return "; ".join(bad)


def _declared_claims(manifest: dict, path: Path, shown: str) -> str:
    """What the manifest says of the inputs and outputs that a golden sample contradicts as its .npy headers declare
    it (_io_claims on each sample's shapes and dtypes), before a byte of its data is read: a 1 MB golden.npz whose
    input was 1 GB of deflated zeros was read whole (8.6 s, 2 GB) to be refused."""
    inputs, outputs = package.golden_declared(path, shown, package.golden_entries(manifest))
    return next((why + (f" (golden sample {i})" if i else "") for i, (feed, out) in enumerate(zip(inputs, outputs))
                 if (why := _io_claims(manifest, feed, out))), "")


def _state_claims(pairs: dict[str, str], inputs: list[dict], outputs: list[dict]) -> str:
    """The manifest's state pairs against the golden steps (each step's state input is the step before's output):
    without them `check` replays single steps, and a device whose state drifted passed."""
    def carries(i: str, o: str) -> bool:
        return all(i in inputs[k] and o in outputs[k - 1] and inputs[k][i].shape == outputs[k - 1][o].shape
                   and np.array_equal(inputs[k][i], outputs[k - 1][o]) for k in range(1, len(inputs)))

    if len(inputs) < 2:
        return ""
    if wrong := {i: o for i, o in pairs.items() if not carries(i, o)}:
        return f"its state pairs {wrong} are not what the golden steps carry"
    # a state that changes from step to step, fed from some output (a model may return its state twice)
    undeclared = sorted(i for i in inputs[0] if i not in pairs and any(i in s and not np.array_equal(
        s[i], inputs[0][i]) for s in inputs[1:]) and any(carries(i, o) for o in outputs[0]))
    return f"the golden steps carry state {undeclared} that its state pairs do not name" if undeclared else ""


def _ort_files(manifest: dict) -> dict[str, str]:
    """The .ort files the manifest ships, each with the .onnx it was converted from: model.int8.ort, and the fp32
    model.coreml.ort of a package whose CoreML build runs the fp32 model."""
    entry = manifest.get("ort_format") or {}
    fp32 = entry.get("fp32") or {}
    return {**({entry["file"]: INT8} if "file" in entry else {}),
            **({fp32["file"]: fp32["onnx"]} if "file" in fp32 else {})}


def _ort_claims(manifest: dict, read: dict, ort: str, onnx: str) -> str:
    """A shipped .ort's golden outputs against its .onnx's, on the same inputs, within the difference the
    manifest records between the two: an .ort swapped for a model that returns zeros, with golden outputs of its
    own, passed (the .ort is what a phone runs)."""
    entry = manifest["ort_format"] if onnx == INT8 else manifest["ort_format"]["fp32"]
    claimed = entry.get("max_abs_diff_from_onnx")
    if onnx not in read or not isinstance(claimed, dict):
        return ""
    (ort_in, ort_out, _), (onnx_in, onnx_out, _) = read[ort], read[onnx]
    carried = set(_state_pairs(manifest))  # each model's own state, step to step
    if len(ort_in) != len(onnx_in) or any(a.keys() != b.keys() or any(
            not np.array_equal(a[k], b[k]) for k in a if k not in carried) for a, b in zip(ort_in, onnx_in)):
        return f"the golden inputs of {ort} are not {onnx}'s"
    for name in onnx_out[0]:
        most = max(float(np.max(np.abs(a[name].astype(np.float64) - b[name].astype(np.float64)), initial=0))
                   if name in a and a[name].shape == b[name].shape else np.inf for a, b in zip(ort_out, onnx_out))
        limit = claimed.get(name)
        if not (isinstance(limit, (int, float)) and most <= limit + 1e-6):
            return f"{ort}'s golden output {name!r} differs from {onnx}'s by {most:.3g}, the manifest says {limit!r}"
    return ""


def _labels_claim(folder: Path, manifest: dict) -> str:
    """The class names a package ships (a recipe's labels) are the manifest's: labels.txt, as many names as it says,
    one a line (the hash holds their bytes; an edited file re-hashed with a name dropped shifted every class)."""
    labels = manifest.get("labels")
    if labels is None:
        return ""
    if not (isinstance(labels, dict) and labels.get("file") == package.LABELS and type(labels.get("count")) is int):
        return f"its labels are not {{file: {package.LABELS}, count}}"
    if package.LABELS not in manifest["files"] or _not_plain(folder, package.LABELS):
        return ""  # integrity says it is not shipped
    try:
        names = package.read_labels(str(folder / package.LABELS), bom=False)
    except UsageError as e:  # the file's words, its folder left out
        return str(e).replace(str(folder / package.LABELS), package.LABELS)
    return "" if len(names) == labels["count"] else f"it holds {len(names)} class names, the manifest says " \
        f"{labels['count']}"


def _page_claims(folder: Path, manifest: dict) -> str:
    """report.html holding what edgekit never writes there (a script, a handler, a fetch): hashed, an edited page
    fails integrity; edited and re-hashed in the manifest, it passed, and a CI artifact ran the script."""
    if "report.html" not in manifest["files"]:  # the check before the pages are written
        return ""
    with open(folder / "report.html", "rb") as f:  # its size is the manifest's, which anyone sending it writes
        page = f.read(MAX_PAGE_BYTES + 1)
    if len(page) > MAX_PAGE_BYTES:
        return f"it holds more than {MAX_PAGE_BYTES:,} bytes, which edgekit's page never does"
    found = report_html.active_content(page.decode("utf-8", errors="replace"))
    return "" if found is None else f"it holds {printable(found)!r}, which edgekit's page never does"


RENDER_ERRORS = (TypeError, KeyError, ValueError, AttributeError, IndexError, ArithmeticError, RecursionError)


def _report_claims(folder: Path, shown: str, manifest: dict, failing: bool) -> dict[str, str]:
    """report.md and report.html against what edgekit renders from this manifest: edited (a FAIL made PASS, another
    cosine) and re-hashed in the manifest, or dropped from its files, they passed check. Held only in a package this
    edgekit's version made in its page format (another renders its own way: _pages_rendered_otherwise); a mistyped
    field is bad input, unless the package is `failing` on other claims or its gates (theirs name what is wrong)."""
    if _pages_rendered_otherwise(manifest):
        return {}
    try:
        rendered = package.rendered_pages(manifest)
        expected = {name: text.encode("utf-8") for name, text in rendered.items()}
    except RENDER_ERRORS as e:
        if failing:
            return {}
        raise InputError(f"{shown}/manifest.json: report.md and report.html cannot be rendered from it "
                         f"({type(e).__name__}: {first_line(e, 120)})") from None
    return {name: _unlike(folder / name, text) for name, text in expected.items()}


def _pages_rendered_otherwise(manifest: dict) -> str:
    """Why this edgekit does not render a package's pages as its maker did ("" where it does): another version, or
    this one's pages in another format (package.PAGE_FORMAT: none recorded before it, by the same dev version too)."""
    if manifest.get("edgekit_version") != __version__:
        return f"made by edgekit {printable(str(manifest.get('edgekit_version'))[:40])}, this is {__version__}"
    if (made := manifest.get("page_format")) != package.PAGE_FORMAT:
        said = "none recorded" if made is None else printable(str(made)[:20])
        return f"their page format is {said}, this edgekit {__version__} renders format {package.PAGE_FORMAT}"
    return ""


def _unlike(path: Path, expected: bytes) -> str:
    """Where a page differs from what edgekit renders ("" where it does not), its first line that does, in one
    line."""
    if not path.exists():  # integrity failed it too
        return "it is missing, where edgekit renders it from this manifest"
    with open(path, "rb") as f:
        found = f.read(len(expected) + 1)  # no more: a larger file differs already
    if found == expected:
        return ""
    lines = itertools.zip_longest(found.split(b"\n"), expected.split(b"\n"))  # None: past one's last line
    number, (have, want) = next((n, pair) for n, pair in enumerate(lines, 1) if pair[0] != pair[1])
    at = next((k for k, (a, b) in enumerate(zip(have or b"", want or b"")) if a != b),
              min(len(have or b""), len(want or b"")))
    return (f"its line {number} reads {_excerpt(have, at)}, where edgekit {__version__} renders {_excerpt(want, at)} "
            "from this manifest (a build of another commit may word it otherwise)")


def _excerpt(line: bytes | None, at: int, width: int = 60) -> str:
    """Some of a line from a little before `at`, where it differs, as one printable quoted line (None: no line)."""
    if line is None:
        return "nothing"
    start = max(0, at - 20)
    text = line[start:start + width].decode("utf-8", errors="replace")
    return repr(("…" if start else "") + printable(text) + ("…" if len(line) > start + width else ""))


def _c_array_claims(folder: Path, manifest: dict) -> str:
    """model_data.c/.h/.S against the model they say they embed: a C array of another model (hashes made to
    match) passed, and a firmware build links the array, not the .onnx beside it."""
    c = manifest.get("c_header")
    if c is None:
        return ""
    files = manifest["files"]
    if not (isinstance(c, dict) and all(isinstance(c.get(k), str) and c[k] in files
                                        for k in ("embeds", "header", "source", "assembly"))
            and isinstance(c.get("c_name"), str) and C_NAME_FORM.fullmatch(c["c_name"])):
        return ("c_header does not name shipped files for what it embeds, its header, its source and its assembly "
                "(model_data.S), or a C name")
    data = (folder / c["embeds"]).read_bytes()
    if not _c_array_is(folder / c["source"], data):
        return f"{c['source']}'s array is not {c['embeds']}'s bytes"
    header, macro = _head(folder / c["header"]), f"EDGEKIT_{c['c_name'].upper()}"
    if (f"#define {macro}_SIZE {len(data)}u" not in header
            or f'#define {macro}_SHA256 "{hashlib.sha256(data).hexdigest()}"' not in header):
        return f"{c['header']} does not give {c['embeds']}'s size and sha256"
    assembly, symbol = _head(folder / c["assembly"]), f"edgekit_{c['c_name']}_sha256"
    if f'.incbin "{c["embeds"]}"\n' not in assembly:
        return f"{c['assembly']} does not include {c['embeds']}"
    if (said := re.search(rf"^{symbol}:\s*\.asciz\s+\"([^\"]*)\"", assembly, re.M)) is None:
        return f"{c['assembly']} defines no {symbol}"
    if said[1] != (digest := hashlib.sha256(data).hexdigest()):
        return f"{c['assembly']} gives {symbol} {printable(said[1][:64])!r}, {c['embeds']}'s sha256 is {digest}"
    return ""


def _operator_claims(folder: Path, manifest: dict) -> str:
    """required_operators.config against the one edgekit writes for the shipped .ort files (mobile.to_ort, from the
    .onnx each was converted from): a line deleted left a minimal build without kernels the model needs. Made
    again only by the onnxruntime that wrote it (another release's converter may fuse otherwise)."""
    entry, orts = manifest.get("ort_format"), _ort_files(manifest)
    config = entry.get("config") if isinstance(entry, dict) else None
    made = manifest["versions"].get("onnxruntime") if isinstance(manifest.get("versions"), dict) else None
    style, platform_ = (entry.get(k) for k in ("optimization_style", "target_platform")) if config else (None, None)
    import onnxruntime

    # a Fixed style's conversion applies this host's optimisations (x86's NCHWc ops): made again elsewhere, its
    # config differs from an honest one; Runtime's (every bundled profile's) is the same on any host
    if not (isinstance(config, str) and config in manifest["files"] and orts and made == onnxruntime.__version__
            and style == "Runtime" and isinstance(platform_, str)):
        return ""
    sources = tuple((name, manifest["files"][name]) for name in orts.values())  # hashed: integrity held them
    try:
        if (key := (sources, style, platform_)) not in CONVERTED:
            CONVERTED[key] = _required_operators(folder, [name for name, _ in sources], style, platform_)
    except StepTimeout:
        raise  # past --step-timeout: the user's limit (exit 4), not a package that fails
    except (StageError, InputError) as e:  # a model from others the converter refuses or chokes on: a failed claim
        return f"{config} cannot be made again from {', '.join(orts.values())}: {first_line(e, 200)}"
    due = CONVERTED[key]
    held = _operator_lines((folder / config).read_text(encoding="utf-8", errors="replace"))
    if held != due:
        lost, extra = sorted(due - held), sorted(held - due)
        return (f"{config} is not what edgekit writes for {', '.join(orts)}: "
                + "; ".join(filter(None, (lost and f"it lacks {few(lost, 4)}", extra and f"it adds {few(extra, 4)}"))))
    return ""


def _operators_not_made_again(manifest: dict) -> str:
    """Why _operator_claims did not make the shipped required_operators.config again ("" where it did, or none ships):
    another onnxruntime made the package. Said where a pass shows it: versions.onnxruntime edited (and re-hashed) let
    a config lacking the fused int8 kernels pass."""
    entry = manifest.get("ort_format")
    config = entry.get("config") if isinstance(entry, dict) else None
    made = manifest["versions"].get("onnxruntime") if isinstance(manifest.get("versions"), dict) else None
    import onnxruntime

    if not (isinstance(config, str) and config in manifest["files"] and _ort_files(manifest)) or \
            made == onnxruntime.__version__:
        return ""
    return f"{printable(config[:80])} not made again: made with onnxruntime {printable(str(made)[:40])}, this is " \
        f"{onnxruntime.__version__} (check it with that release to hold it)"


# (the .onnx files' names and sha256, style, platform) → their operator lines: a re-check of the same models (a copy
# of the package elsewhere) converts nothing again
CONVERTED: dict[tuple, frozenset[str]] = {}


def _required_operators(folder: Path, names: list[str], style: str, platform_: str) -> frozenset[str]:
    """The operator lines mobile.to_ort writes for these .onnx files, converted in a bounded child (all at once:
    mobile.operator_config): a model from others may exhaust the converter as it may a session."""
    seconds, raised_by = run_limit()
    text = bounded.run("check required_operators.config", "edgekit.mobile:operators_in_child", str(folder),
                       json.dumps(names), style, platform_, timeout=seconds, raised_by=raised_by)
    return _operator_lines(text)


def _operator_lines(text: str) -> frozenset[str]:
    """A required-operators config's `domain;opset;op` entries, one per operator (comments and order aside)."""
    found = set()
    for line in (ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")):
        domain, _, rest = line.partition(";")
        opset, _, ops = rest.partition(";")
        found.update(f"{domain};{opset};{op}" for op in ops.split(","))
    return frozenset(found)


def _some(names: list[str], most: int = 5) -> str:
    """The first names and how many more: 20,000 extra files were one 149 KB line."""
    return ", ".join(names[:most]) + (f" and {len(names) - most:,} more" if len(names) > most else "")


def _head(path: Path, most: int = 1 << 16) -> str:
    """A short text file's first `most` bytes (a header or assembly file edgekit writes is a few KiB)."""
    with open(path, "rb") as f:
        return f.read(most).decode(errors="replace")


def _c_array_is(path: Path, data: bytes, block: int = 1 << 20) -> bool:
    """model_data.c's byte list (`= { 0x.., ... };`) is `data`, read a block at a time: a 100 MB model's list is
    625 MB of text, and read whole it took 1.7 GB."""
    done, pending, inside = 0, b"", False
    with open(path, "rb") as f:
        while True:
            read = f.read(block)
            text = pending + read
            if not inside:
                start = text.find(b"= {")
                if start < 0:
                    if not read:
                        return False
                    pending = text[-2:]
                    continue
                text, inside = text[start + 3:], True
            end = text.find(b"};")
            if end < 0 and not read:
                return False
            cut = end if end >= 0 else text.rfind(b",") + 1
            body, pending = text[:cut], text[cut:]
            if end < 0 and len(pending) > 64:  # not a list of bytes
                return False
            try:
                got = bytes.fromhex(body.replace(b"0x", b"").replace(b",", b" ").decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                return False
            if data[done:done + len(got)] != got:
                return False
            done += len(got)
            if end >= 0:
                return done == len(data)


def _golden_claims(entry: dict, golden: dict, tolerances: tuple[dict, dict], inputs: list[dict], outputs: list[dict],
                   profile: Target | None, steps: dict[str, float]) -> str:
    """The golden file's tolerances and sample count against the manifest's: a tolerance loosened in golden.npz
    alone (1e6) passed a model that returns its input pixels, and one sample of eight passed as the eight. Made
    with a bundled profile, the tolerances are also its golden_tolerance x each output's peak (raised in both
    files alike, they passed), and the per-channel ones its channel_tolerances (`steps`: the quantized outputs')."""
    (atol, channels), (claimed, bad, samples) = tolerances, (entry.get("atol"), [], len(outputs))
    if not (isinstance(claimed, dict) and set(claimed) == set(atol) and all(
            isinstance(claimed[k], (int, float)) and np.isclose(atol[k], claimed[k], rtol=1e-6, atol=0) for k in atol)):
        bad.append(f"{entry['file']} holds tolerances {', '.join(f'{k} {v:.4g}' for k, v in list(atol.items())[:4])}"
                   ", not the manifest's")
    if golden.get("samples") != samples:
        bad.append(f"{entry['file']} holds {samples} golden sample(s), the manifest says {golden.get('samples')!r}")
    # every input cut to batch 0 (outputs too) passed a model returning zeros: nothing ran, nothing was compared
    if empty := [i for i, feed in enumerate(inputs) if feed and not any(x.size for x in feed.values())]:
        bad.append(f"{entry['file']}'s golden sample {empty[0]} holds no input values")
    spec = profile.package if profile is not None else None
    if spec is not None and not spec.golden_tolerance_steps:
        # outputs every sample holds, with values (parity tells of one missing), as package.write_golden sets them
        whole = {n: [o[n] for o in outputs] for n in atol if all(n in o and o[n].size for o in outputs)}
        for name, due in package.golden_tolerances(whole, spec.golden_tolerance).items():
            if not np.isclose(atol[name], due, rtol=1e-6, atol=0):
                rule = "0 (integer outputs are exact)" if whole[name][0].dtype.kind in "biu" else \
                    f"{spec.golden_tolerance} x its peak |value| ({due:.4g})"
                bad.append(f"{entry['file']}'s tolerance for {name!r} is {atol[name]:.4g}, not the {profile.name} "
                           f"profile's {rule}")
                break
            tight, held = package.channel_tolerances(whole[name], due, spec.golden_tolerance, steps.get(name)), \
                channels.get(name)
            if (tight is None) != (held is None) or tight is not None and not (
                    held.shape == tight.shape and np.allclose(held, tight, rtol=1e-6, atol=0)):
                bad.append(f"{entry['file']}'s per-channel tolerances for {name!r} are not the {profile.name} "
                           f"profile's {spec.golden_tolerance} x each channel's peak |value|")
                break
    return "; ".join(bad)


class Place(Protocol):
    """Somewhere other than this host that runs `runner.serve` on a package folder's files."""

    label: str

    def serve(self, folder: Path, request: dict) -> dict: ...

    def describe(self, about: dict) -> str: ...  # where a case ran, from what the runner found there


def _under_less_memory(cases: list[Case], manifest: dict) -> list[Case]:
    """A run refused by a lower memory cap than the export's says so: the package asks what it asked there, and
    the machine (or EDGEKIT_RUN_MEMORY_MB), not the files, differs."""
    exported = (manifest.get("host") or {}).get("run_memory_mb")
    if not isinstance(exported, int) or exported <= host.run_memory() >> 20:
        return cases
    return [c if c.passed or CAPPED not in c.message else
            replace(c, message=f"{c.message}; the export ran under {exported} MB") for c in cases]


def _parity_at(place: Place, folder: Path, target: str, pairs: list[tuple[str, str]], state: dict,
               steps: dict, manifest: dict, entries: dict[str, dict]) -> list[Case]:
    """Each model's golden inputs run at `place`, compared here: one comparison wherever the kernels ran. Only the
    outputs golden holds come back (a model may add a huge one: 256 MB of it once took 8 GB here). `entries`: see
    _contract_entries."""
    golden = [_expected(Path(g)) for _, g in pairs]
    request = {"replay": [{"model": Path(m).name, "inputs": Path(g).name, "state": state,
                           "outputs": sorted({n for run in expected for n in run}),
                           "config": entries.get(Path(m).name, {})}
                          for (m, g), (expected, _) in zip(pairs, golden)]}
    answer = place.serve(folder, request)
    where = place.describe(answer["about"])
    cases = []
    for (model, _), done, (expected, atol) in zip(pairs, answer["replay"], golden, strict=True):
        name = Path(model).name
        if "error" in done:
            cases.append(Case(target, f"parity {name}", False, f"{name} does not run the golden inputs: "
                              f"{done['error']}", where=where))
            continue
        try:
            given_back = {n for run in expected for n in run} | set(state.values())  # as runner.replay picks them
            runs = arrays.runs_from(done["outputs"], len(expected), len(expected) * len(given_back))
        except InputError as e:  # a device's answer is data from elsewhere: not a result, and never a crash
            raise StageError("device run" if getattr(place, "real", False) else f"{place.label} run",
                             f"{place.label} answered with something that is not the runner's result: {e}") from None
        cases.append(compare(target, name, runs, expected, atol, steps.get(name, {}), done["seconds"],
                             "onnxruntime default kernels", where))
    return _saturated(_made_elsewhere(cases, manifest, answer["about"]["onnxruntime"]), place, manifest)


def _saturated(cases: list[Case], place: Place, manifest: dict) -> list[Case]:
    """Parity cases on a CPU whose u8s8 sums saturate say why it fails, or that passing its golden samples does
    not clear other inputs, where the package kept full-range weights (made where they do not saturate: a VNNI host's
    reduce_range=auto), and what runs it right there."""
    quantization = manifest.get("quantization")
    if not getattr(place, "saturates", False) or not isinstance(quantization, dict) or (
            quantization.get("reduce_range") is not False):
        return cases
    fix = "run it there with session option session.x64quantprecision=1, or export it with --reduce-range true"
    failed = (f"onnxruntime's default u8s8 kernels on {place.label}, an x86-64 CPU without VNNI, saturate int16 sums "
              f"(VPMADDUBSW) that 8-bit weights can reach (the package keeps them, reduce_range false): {fix}")
    chosen = (manifest.get("golden") or {}).get("chosen")
    which = (f" (the {len(chosen['samples'])} of its validation samples riskiest on such a CPU)" if isinstance(
        chosen, dict) and isinstance(chosen.get("samples"), list) and chosen["samples"] else "")
    passed = (f"on the golden samples only{which}: the package keeps 8-bit weights (reduce_range false), whose u8s8 "
              f"sums may saturate on this CPU for other inputs: {fix}")
    return [c if not c.name.startswith("parity ") else
            replace(c, message=f"{c.message.rstrip('.')}; {passed if c.passed else failed}") for c in cases]


def _expected(golden: Path) -> tuple[list[dict], dict]:
    """A golden file's expected outputs and the tolerances compare() holds them to: per channel where it has them."""
    _, expected, atol, channels = package.read_golden_channels(golden)
    return expected, {**atol, **channels}


def _made_elsewhere(cases: list[Case], manifest: dict, checked: str | None = None) -> list[Case]:
    """Failed parity cases say so when the onnxruntime that ran them (`checked`: this host's unless given) is not
    the one the package was made with: another version may refuse a model (an opset it does not know) or round
    otherwise, and a failure read as the package's was the checker's."""
    versions = manifest.get("versions")
    made = versions.get("onnxruntime") if isinstance(versions, dict) else None
    if checked is None:
        import onnxruntime

        checked = onnxruntime.__version__
    if not isinstance(made, str) or made == checked:
        return cases
    note = f"made with onnxruntime {printable(made[:40])}, checked with {checked}"
    return [c if c.passed or not c.name.startswith("parity ") else
            replace(c, message=f"{c.message.rstrip('.')}; {note}") for c in cases]


WARMUP, RUNS = 5, 50  # a device check's timing where the manifest records none (an export with --no-bench)
MOST_WARMUP, MOST_RUNS = 100, 1000  # a manifest's counts past these (--bench-runs 10^6, an edit) time these


def timing(manifest: dict) -> tuple[int, int]:
    """(warm-up, runs) the export timed its latency with, from the manifest, so a re-check times alike: 50 runs
    where the export gave 300 moved p90 by the slowest few. A record that is not a count in range is none; one
    past MOST_* is held to it (a device's step timeout would end the check, not the timing)."""
    latency = manifest.get("latency")
    timed = latency.get("int8") if isinstance(latency, dict) else None
    timed = timed if isinstance(timed, dict) else {}

    def count(key: str, default: int) -> int:
        value, (low, high) = timed.get(key), RANGES[key]
        return value if type(value) is int and low <= value <= high else default

    return min(count("warmup", WARMUP), MOST_WARMUP), min(count("runs", RUNS), MOST_RUNS)


def _latency_at(place, folder: Path, target: str, manifest: dict, golden: str) -> Case:
    """fp32 and int8 timed round-robin on the device at the profile's threads (and at 1 beside, when more);
    the export's latency budget, if it set one, is judged here on the device's own figure."""
    threads = (manifest.get("host") or {}).get("threads") or 1  # _manifest checked its type and range
    warmup, runs = timing(manifest)
    try:
        found = place.bench(folder, {"fp32": FP32, "int8": INT8}, golden,
                            (threads, 1) if threads > 1 else (1,), warmup, runs)
    except StageError as e:
        if e.stage != "device benchmark":
            raise  # no answer from the device: exit 4, naming the step
        return Case(target, "latency", False, str(e), where=place.label)  # it answered; the models do not run
    budget = latency_budget(manifest)
    kind, made_for = host.arch_of(found[0]["int8"].host["machine"]), package_kind(manifest)
    if kind != made_for:  # the figures stand, but they are not the target's kind of CPU: nothing is judged by them
        what = "latency" if budget is None else f"budget {budget:g} ms"
        unjudged = f"; {what} not judged: a device of kind {kind} timed a package for {made_for}"
        budget = None
    else:
        unjudged = ""
    passed = budget is None or found[0]["int8"].p50_ms <= budget
    message = "; ".join(f"{lat['int8'].threads} thread(s): p50 fp32 {lat['fp32'].p50_ms:.3f} ms, int8 "
                        f"{lat['int8'].p50_ms:.3f} ms ({lat['fp32'].p50_ms / lat['int8'].p50_ms:.2f}x), p90/p50 "
                        f"{lat['int8'].p90_over_p50:.2f}" for lat in found)
    message += f"; {runs} runs after {warmup} warm-up" + (f"; budget {budget:g} ms at {threads} thread(s)"
                                                          if budget is not None else unjudged)
    seconds = sum(sum(lat.p50_ms * lat.runs for lat in pair.values()) for pair in found) / 1e3
    return Case(target, "latency", passed, message, seconds, where=found[0]["int8"].host["device"])


def package_kind(manifest: dict) -> str:
    """The kind of CPU a package was made for: an ARM target's records which kernels its golden outputs came from."""
    return "arm64" if manifest.get("arm_kernels") else "x86_64"


def latency_budget(manifest: dict) -> float | None:
    """The export's latency budget, if it set one: a limit that is not a number (true, "5") is none."""
    return next((g["limit"] for g in manifest["gates"] if g["name"] == "latency_p50_ms"
                 and _number(g.get("limit")) != "n/a"), None)


def _contract_entries(manifest: dict) -> dict[str, dict]:
    """Per .ort the manifest ships, whether its sessions replay its saved runtime optimisations, as its runtime
    contract tells the app: golden.ort.npz was recorded so (an .ort onnxruntime cannot replay is shipped so too)."""
    runtime = manifest.get("runtime") if isinstance(manifest.get("runtime"), dict) else {}
    told = {}  # each session's config entries, the contract's shape unchecked here (a malformed one replays nothing)
    for s in runtime.get("sessions") if isinstance(runtime.get("sessions"), list) else []:
        if isinstance(s, dict) and isinstance(s.get("session"), dict) and isinstance(s["session"].get(
                "config_entries"), dict):
            told[s.get("model")] = s["session"]["config_entries"]
    key, on = runner.REPLAY
    return {name: {key: on if told.get(name, {}).get(key) == on else "0"} for name in _ort_files(manifest)}


def _parity_bounded(target: str, pairs: list[tuple[str, str]], state: dict[str, str], steps: dict,
                    figures: dict, entries: dict[str, dict]) -> tuple[list[Case], dict]:
    """The package's models run in a child process under a time and memory limit: a package is a file
    from others, and a 200-byte model can ask onnxruntime for 40 GB. `figures`: see _figures_here; `entries`:
    _contract_entries."""
    host.check_overrides()  # a bad one is the user's usage error (exit 2), told before the child runs (the API)
    seconds, raised_by = run_limit()  # check's --step-timeout
    try:
        found = json.loads(bounded.run("check", "edgekit.package_check:parity_in_child", target, json.dumps(pairs),
                                       json.dumps(state), json.dumps(steps), json.dumps(figures),
                                       json.dumps([seconds, raised_by]), json.dumps(entries), timeout=seconds,
                                       raised_by=raised_by))
    except StepTimeout as e:  # the user's limit, not the package's fault: exit 4 naming it, as export's steps do
        raise StepTimeout(f"check of {target}", e.message) from None
    except (StageError, InputError) as e:  # a model exhausting memory, a bad golden file: fails (exit 1)
        return [Case(target, f"parity {Path(m).name}", False, str(e)) for m, _ in pairs], {"error": str(e)}
    return [Case(**c) for c in found["cases"]], found["figures"]


def parity_in_child(target: str, pairs: str, state: str, steps: str, figures: str, limit: str, entries: str) -> str:
    """Entry point of the bounded child: every (model, golden file) pair's parity case, and the golden samples'
    parity figures, as JSON. `limit`: [seconds, the setting raising them], each run's limit as the parent has it
    (--step-timeout; without it a run stopped at the default, and the child's timeout was a failed package)."""
    seconds, raised_by = json.loads(limit)
    with runs_limited(seconds, raised_by):
        found, figured = _parity_here(target, json.loads(pairs), json.loads(state), json.loads(steps),
                                      json.loads(figures), reuse=False, entries=json.loads(entries))
    return json.dumps({"cases": [asdict(c) for c in found], "figures": figured})


def _parity_here(target: str, pairs: list, state: dict[str, str], steps: dict, figures: dict | None = None,
                 reuse: bool = True, entries: dict[str, dict] | None = None) -> tuple[list[Case], dict | None]:
    """`steps`: each model file's output quantization steps; `reuse`: the session this run made for the file, if
    any (the bounded child has none to reuse); `figures`: see _figures_here; `entries`: _contract_entries."""
    cases, read = [], {}
    for model, golden_path in pairs:
        inputs, expected, atol, channels = read[golden_path] = package.read_golden_channels(Path(golden_path))
        cases.append(_parity(Path(model), target, inputs, expected, {**atol, **channels}, state,
                             steps.get(Path(model).name), reuse, (entries or {}).get(Path(model).name)))
    return cases, figures and _figures_here(**figures, state=state, reuse=reuse, read=read.get(figures["golden"]))


def _figures_here(fp32: str, golden: str, task: str, floors: dict[str, float], state: dict[str, str],
                  reuse: bool = True, read: tuple | None = None, detected: dict | None = None) -> dict:
    """int8-vs-fp32 parity on the golden samples, as the export measured it on validation: the int8 model's golden
    outputs (parity holds the model to them) against the shipped fp32 model's on the same inputs, a streaming one
    carrying its own state, the samples under each output's recorded quiet floor left out (_quiet_floors). `read`:
    the golden file as the parity cases read it (up to 1 GiB: read once); `detected`: the outputs whose detections
    the run matched, each with how (_detected). {"samples", "outputs": OutputParity
    dicts, "top1": each class-score output's clear top-1 flips and top-5 misses (_top1_figures)}, or {"error"}."""
    inputs, int8 = (read or package.read_golden_channels(Path(golden)))[:2]
    names = list(int8[0])
    try:
        # fp32 as the run measures it (host.work_threads(): a float model's outputs, not golden int8 ones)
        sess, _ = session(Path(fp32), CHECKED_ON, threads=host.work_threads(), reuse=reuse)
        runs = runner.replay(sess, inputs, state, names, give_back=True)
        declared = {o.name: tuple(d if isinstance(d, int) else str(d) for d in o.shape) for o in sess.get_outputs()}
        # the graph's shapes, as the run's parity read them: which lengths follow the values (matched detections)
        found = parity.compare(names, [[r[n] for n in names] for r in runs], [[o[n] for n in names] for o in int8],
                               task, tuple(state.values()), shapes=[declared.get(n) for n in names], floors=floors,
                               detected=detected or {})
        top1 = _top1_figures(names, runs, int8, declared, tuple(state.values()))  # task auto is recorded as other
    except (UsageError, StepTimeout):
        raise  # e.g. a bad EDGEKIT_HOST_ISA, or past --step-timeout: the user's setting, not the model
    except Exception as e:
        return {"error": f"{FP32} does not run the golden inputs: {first_line(e, 200)}"}
    return {"samples": len(inputs), "outputs": [{**o.as_dict(), "cosine_samples": _detection_averaged(o, runs) if
        o.detection_agreement is not None else _averaged([r[o.output] for r in runs],
                                                         (o.quiet_samples or 0) + (o.length_mismatches or 0)),
        **_under(floors.get(o.output), [r[o.output] for r in runs])} for o in found],
        "top1": top1}


# fp32's top classes this close (a share of the two scores' sizes, and of the row's peak for scores near 0 out of
# larger ones cancelling) are a near-tie: fp32 run on another host, its last bits apart, may order them otherwise
NEAR_TIE = 1e-3
NEAR_TIE_PEAK = 1e-6


def top1_flips(fp32: list, int8: list) -> tuple[int, int]:
    """(rows whose int8 top class is clearly not fp32's, rows) over one output's samples, row by row (class_rows),
    a sample whose shapes differ left out. Counted only where it was a flip at export too: int8's top class (its
    golden scores are the ones the export compared, ties broken as it broke them: the first) is none of those within
    NEAR_TIE of fp32's top score, any of which the export's fp32 may have put first."""
    flips = rows = 0
    for f, q in _same_shaped_rows(fp32, int8):
        flips += int(np.sum(~np.take_along_axis(_near_top(f), q.argmax(1)[:, None], 1)))
        rows += len(f)
    return flips, rows


def top5_misses(fp32: list, int8: list) -> tuple[int, int]:
    """(rows where none of fp32's near-top classes (_near_top: any may be the export's top) can be among int8's top
    5, rows), as top1_flips. int8's scores tie often (a few steps apart) and a sort may order ties any way, so a
    class counts as out only where 5 scores are strictly above it: under the row's 5th largest score."""
    misses = rows = 0
    for f, q in _same_shaped_rows(fp32, int8):
        fifth = np.partition(q, -5, axis=1)[:, -5:-4]
        misses += int(np.sum(~np.any(_near_top(f) & (q >= fifth), axis=1)))
        rows += len(f)
    return misses, rows


def _same_shaped_rows(fp32: list, int8: list):
    """Each sample's (fp32, int8) scores as float64 rows x classes (class_rows), a sample whose shapes differ (its
    rows are not the verdict's either: parity left it out) skipped."""
    for f, q in zip(fp32, int8):
        f, q = np.asarray(f, np.float64), np.asarray(q, np.float64)
        if f.shape == q.shape:
            yield parity.class_rows(f), parity.class_rows(q)


def _near_top(f: np.ndarray) -> np.ndarray:
    """Per row, the classes within NEAR_TIE of fp32's top score: another host's fp32 may put any of them first."""
    top = f.max(1, keepdims=True)
    return top - f <= NEAR_TIE * (np.abs(f) + np.abs(top)) + NEAR_TIE_PEAK * np.abs(f).max(1, keepdims=True)


def _top1_figures(names: list[str], runs: list[dict], int8: list[dict], declared: dict, state: tuple) -> dict:
    """Per output read as class scores on every golden sample (state left out): {flips, rows} (top1_flips),
    top5_misses (top5_misses; more than 5 classes, as parity's top-5), and
    per_sample: the rows of each sample where the graph fixes every dim but the class axis (every sample the verdict
    is of has as many), else None."""
    found = {}
    for name in (n for n in names if n not in state):
        refs, cands = [np.asarray(r[name]) for r in runs], [np.asarray(o[name]) for o in int8]
        if not refs or not all(parity.class_scores(a) for a in refs):
            continue
        flips, rows = top1_flips(refs, cands)
        shape = declared.get(name)
        fixed = shape is not None and len(shape) == refs[0].ndim and all(
            isinstance(d, int) for k, d in enumerate(shape) if k != 1)
        top5 = {"top5_misses": top5_misses(refs, cands)[0]} if refs[0].shape[1] > 5 else {}  # as parity's top-5
        found[name] = {"flips": flips, "rows": rows, **top5,
                       "per_sample": len(parity.class_rows(refs[0])) if fixed else None}
    return found


def _detection_averaged(o, runs: list[dict]) -> int | None:
    """How many golden samples a detection output's mean cosine averaged: those with a matched row (its figures are
    of the matched rows: a count that differs leaves none out) less its quiet ones; None where it pooled them into
    one cosine (a sample of one matched value: no quiet_floor), as _averaged."""
    if o.cosine is None or o.quiet_floor is None:
        return None
    return len(runs) - (o.quiet_samples or 0) - (o.unmatched_samples or 0)


def _under(floor: float | None, refs) -> dict:
    """{under_floor: how many golden samples' fp32 outputs (not ~0) have an RMS under the recorded quiet floor less
    FLOOR_MARGIN (`floor` carries it once: _quiet_floors), the samples the run itself must have left out, whatever
    rounds apart; loud: how many are not ~0}, or {} without a floor."""
    if floor is None:
        return {}
    refs = [a for a in map(lambda r: np.asarray(r, np.float64), refs)
            if a.size >= 2 and float(np.max(np.abs(a), initial=0.0)) >= parity.NEAR_ZERO]
    return {"under_floor": sum(float(np.sqrt(np.mean(a ** 2))) < floor / FLOOR_MARGIN ** 2 for a in refs),
            "loud": len(refs)}


def _recorded_outputs(manifest: dict) -> list[dict]:
    """The output figures of the manifest's fp32-vs-int8 parity (parity.quantization.outputs), [] where it records
    none: the claims check reads them as the export wrote them."""
    stage = manifest.get("parity")
    stage = stage.get("quantization") if isinstance(stage, dict) else None
    outputs = stage.get("outputs") if isinstance(stage, dict) else None
    return [o for o in outputs if isinstance(o, dict)] if isinstance(outputs, list) else []


def _detected(manifest: dict) -> dict[str, dict | None]:
    """The outputs whose detections the run matched (a detection_agreement recorded in parity.quantization), each
    with how it matched them (detection_match: row axis, role, box format), which check redoes rather than guess from
    golden samples that may all keep one count; None in a package recording none (made before it was)."""
    return {o["output"]: o.get("detection_match") if isinstance(o.get("detection_match"), dict) else None
            for o in _recorded_outputs(manifest) if isinstance(o.get("output"), str)
            and o.get("detection_agreement") is not None}


def _quiet_floors(manifest: dict) -> dict[str, float]:
    """Each output's quiet_floor in parity.quantization, raised by FLOOR_MARGIN: the golden samples the run left out
    of its mean cosine as quiet, and maybe a few more (that only loosens the bound). None recorded (a package made
    before it was): the golden samples' own median decides, as it did."""
    floors = {}
    for o in _recorded_outputs(manifest):
        floor = o.get("quiet_floor")
        if floor is not None and isinstance(o.get("output"), str) and _number(floor) != "n/a" \
                and 0 <= floor < float("inf"):
            floors[o["output"]] = floor * FLOOR_MARGIN
    return floors


def _averaged(refs, quiet: int | None) -> int | None:
    """How many samples parity.compare's mean cosine averaged: all but its `quiet_samples` (reference near zero, or
    quiet) and its length_mismatches (`quiet`: both); None where it pooled them into one cosine (outputs of one value
    per sample)."""
    refs = [np.asarray(a) for a in refs]
    if not refs or min(a.size for a in refs) < 2:
        return None
    return len(refs) - (quiet or 0)


# A manifest's int8-vs-fp32 figures are measured on the samples its verdict is of, among which are the golden samples
# (its first ones; a full-range x86 package's riskiest on AVX2 kernels first: saturation.golden_first). Its mean
# cosine averages at most its `samples` samples, so it can be no better than the golden samples' summed loss
# (1 - cosine, over the samples averaged) spread over all of them, each perfect. That bound is sound when the golden
# samples averaged are among those the mean averaged: check leaves out those under the quiet floor the run recorded
# (_quiet_floors; under their own median's, 6 of 8 golden samples a fiftieth of the others, it counted quiet samples
# the run left out, 0.8777 against a true 0.99986), and a floor that leaves out more golden samples than the run's
# quiet_samples is itself untrue. It is sound;
# LOSS_SLACK is for other kernels (an emulated CPU's). Top-1 agreement is held the same way (_top1_claims): the
# golden samples' rows whose int8 top class is clearly not fp32's (a near-tie of fp32's, which another host's last bits
# may order otherwise, is not counted: top1_flips) are flips of the verdict's, out of at most the rows it counted (the
# samples times each one's rows where the graph fixes them, the top1_rows it records, MOST_SHARE times the golden
# rows), not where the verdict's int8 outputs were an AVX2 host's saturating ones, the golden's exact
# (_verdict_saturated). Top-5 agreement likewise, out of the same rows: a golden row where 5 int8 scores lie strictly
# above every near-top fp32 class (top5_misses; a tie may sort either way) misses there too. A package without
# top1_rows is untrue (deleted, it loosened the bound 10,000-fold).
# Not held, as no subset bounds them: the worst sample's cosine (it leaves out samples far quieter than the median,
# which a subset's median decides otherwise), pooled SQNR (the other samples may carry far more signal: quiet first
# audio frames), centred SQNR and task auto's top_class_sqnr_db, the same figure on the top classes' channels (the
# VAD's state 18.0 dB over validation, -4.1 on its 8 golden steps), IoU and other agreements averaged over classes or
# elements (a sample's count of them may differ from the golden samples'), and accuracy and its drop (golden files
# hold no labels; without them int8's flips may fix fp32's mistakes as well as make new ones: they bound no drop).
# Task auto's top-1 deleted with its top1_rows is task other's record (no task auto is recorded).
LOSS_SLACK = 4.0  # the verdict's loss may be 4x smaller than the sound bound says
# check leaves out the golden samples under the run's quiet floor (parity.QUIET) times this: a sample at the floor the
# run left out (its fp32 outputs a rounding apart here) is left out, never counted against the bound
FLOOR_MARGIN = 1.001
MOST_SHARE = 10_000  # samples per golden one, at most: an edited sample count loosens the bound no further


def _refigured(case: Case, manifest: dict, figures: dict) -> Case:
    """The gates case, failed where the manifest's int8-vs-fp32 figures are better than its golden samples allow
    (quant cosine edited to 1.0 on a model giving 0.9999 passed: check judged the numbers written)."""
    untrue = [figures["error"]] if "error" in figures else _figure_claims(manifest, figures)
    if not untrue:
        return case
    said = f"manifest.json's parity figures are not reproduced on its {_count(figures.get('samples'))}golden " \
           f"samples: {'; '.join(untrue)}"
    return replace(case, passed=False, message="; ".join(filter(None, (case.message, said))))


def _count(samples) -> str:
    """`8 ` of "its 8 golden samples", or nothing where the figures could not be made (none counted)."""
    return f"{samples} " if samples is not None else ""


def _figure_claims(manifest: dict, figures: dict) -> list[str]:
    """Each output's mean cosine in parity.quantization, and the quant_cosine gate, where better than the best the
    golden samples allow (_at_best), or the gate passed where that best misses its limit."""
    claimed = ((manifest.get("parity") or {}).get("quantization") or {}) if isinstance(manifest.get("parity"),
                                                                                        dict) else {}
    claimed = claimed if isinstance(claimed, dict) else {}
    validated = claimed.get("samples")  # a count (READ_TYPES), or absent
    over = f"over {_number(validated)} validation samples" if validated is not None else \
        f"over at most {MOST_SHARE:,} validation samples a golden one"
    said = {o.get("output"): o for o in claimed.get("outputs") or [] if isinstance(o, dict)}
    bests = {o["output"]: (o["cosine"], best) for o in figures["outputs"]
             if (best := _at_best(o.get("cosine"), o.get("cosine_samples"), validated)) is not None}
    bad = [f"{name} cosine {_number(value)} (these give {here:.8g}: at most {best:.8g} {over})"
           for name, (here, best) in bests.items()
           if _number(value := (said.get(name) or {}).get("cosine")) != "n/a" and value > best]
    bad += list(filter(None, (_floor_claim(said.get(o["output"]) or {}, o, validated) for o in figures["outputs"])))
    bad += _length_claims(manifest, said, figures) + _detection_claims(manifest, said, figures, validated)
    bad += _top1_claims(manifest, said, figures, validated)
    if not bests:
        return bad
    here, best = min(bests.values(), key=lambda pair: pair[1])  # the gate is the worst output's
    for g in (g for g in manifest["gates"] if g["name"] == "quant_cosine"):
        if _number(g.get("value")) != "n/a" and g["value"] > best:
            bad.append(f"quant_cosine {_number(g['value'])} (these give {here:.8g}: at most {best:.8g} {over})")
        elif g["passed"] and _number(g.get("limit")) != "n/a" and best < g["limit"]:  # skipped, or no value
            bad.append(f"quant_cosine passed, yet these give {here:.8g}: at most {best:.8g} {over}, under its limit "
                       f"{_number(g['limit'])}")
    return bad


def _length_claims(manifest: dict, said: dict, figures: dict) -> list[str]:
    """The golden samples are among validation's (its first ones, or its riskiest on AVX2 kernels): the samples whose
    lengths (detections' count) differ there differ in the run too, so the manifest records at least as many
    length_mismatches for that output, and where check matches an output's detections on them, it records their
    agreement (stripped of both, with the gate, a failed detector passed)."""
    bad = []
    for o in figures["outputs"]:
        mine, name = said.get(o["output"]) or {}, o["output"]
        recorded = mine.get("length_mismatches") if type(mine.get("length_mismatches")) is int else 0
        if (here := o.get("length_mismatches") or 0) > recorded:
            bad.append(f"{name} length_mismatches {recorded}, yet {here} golden samples' lengths differ")
        if o.get("detection_agreement") is not None and _number(mine.get("detection_agreement")) == "n/a":
            bad.append(f"{name} records no detection_agreement, yet its detections are matched on these "
                       f"({o['detection_agreement']:.6g})")
    return bad


def _detection_claims(manifest: dict, said: dict, figures: dict, validated: int | None = None) -> list[str]:
    """Each output's detection_agreement, and the quant_detection_agreement gate, where better than the golden
    samples allow (_detection_best), or the gate passed where that best misses its limit (one recording none where
    these match detections is untrue: _length_claims)."""
    bests = {o["output"]: (o["detection_agreement"], best) for o in figures["outputs"]
             if (best := _detection_best(o, said.get(o["output"]) or {}, validated)) is not None}
    bad = [f"{name} detection_agreement {_number(value)} (these give {here:.6g}: at most {best:.6g})"
           for name, (here, best) in bests.items()
           if _number(value := (said.get(name) or {}).get("detection_agreement")) != "n/a" and value > best]
    bad += [f"{o['output']} detection_match: {o['detection_match_untrue']}" for o in figures["outputs"]
            if o.get("detection_match_untrue")]  # matched here as its arrays say, never looser than the export
    # how the run matched them recorded, yet no agreement here: an edited record must not leave the claim unbounded
    bad += [f"{o['output']} detection_agreement {_number(said[o['output']].get('detection_agreement'))}: its "
            f"detections are not matched on these as its detection_match says" for o in figures["outputs"]
            if o.get("detection_agreement") is None and isinstance((said.get(o["output"]) or {}).get(
                "detection_match"), dict) and (said[o["output"]]).get("detection_agreement") is not None]
    if not bests:
        return bad
    here, best = min(bests.values(), key=lambda pair: pair[1])  # the gate is the worst output's
    for g in (g for g in manifest["gates"] if g["name"] == parity.DETECTION_GATE):
        if _number(g.get("value")) != "n/a" and g["value"] > best:
            bad.append(f"{g['name']} {_number(g['value'])} (these give {here:.6g}: at most {best:.6g})")
        elif g["passed"] and _number(g.get("limit")) != "n/a" and best < g["limit"]:
            bad.append(f"{g['name']} passed, yet these give {here:.6g}: at most {best:.6g}, under its limit "
                       f"{_number(g['limit'])}")
    return bad


def _detection_best(here: dict, said: dict, validated: int | None = None) -> float | None:
    """The best detection agreement over the validation samples, given the golden samples' (a subset of them): the
    detections unmatched on them are unmatched there too, out of the detection_rows the manifest records (at most
    MOST_SHARE times the golden samples', and 2 x MAX_DETECTION_ROWS a validation sample: more rows are never matched;
    LOSS_SLACK for other kernels' fp32). None: not measured here, or the manifest records no agreement (an older
    package)."""
    if here.get("detection_agreement") is None or _number(said.get("detection_agreement")) == "n/a":
        return None
    rows = here["detection_rows"]
    most = min(rows * MOST_SHARE, 2 * detections.MAX_DETECTION_ROWS * validated if validated else rows * MOST_SHARE)
    claimed = said.get("detection_rows")
    most = most if _number(claimed) == "n/a" or claimed <= 0 else min(claimed, most)
    unmatched = (1 - here["detection_agreement"]) * rows
    return 1 - unmatched / (LOSS_SLACK * max(most, 1)) + 1e-9


# each agreement over rows check holds, with the golden samples' count bounding it (_top1_figures) and its word
ROW_AGREEMENTS = {"top1_agreement": ("flips", "clear flip(s)"), "top5_agreement": ("top5_misses", "clear miss(es)")}


def _top1_claims(manifest: dict, said: dict, figures: dict, validated) -> list[str]:
    """Each output's top1_agreement and top5_agreement in parity.quantization (classify's scored output; task auto's,
    recorded as other, under the bar), and their gates' values, where better than the golden samples allow
    (_top1_best); classify's gates passed where that best misses their limit; a gate naming no output, by the
    loosest output's best. Task auto's figure deleted with its top1_rows is not told from task other's none (it
    records no task auto): _unlabelled_top1_claims holds it while recorded."""
    here = figures.get("top1") or {}
    if not here or _verdict_saturated(manifest):
        return []
    slack = LOSS_SLACK if manifest.get("arm_kernels") else 1.0  # golden outputs of an emulated CPU's kernels
    return [line for metric in ROW_AGREEMENTS for line in _row_claims(manifest, said, here, metric, validated, slack)]


def _row_claims(manifest: dict, said: dict, here: dict, metric: str, validated, slack: float) -> list[str]:
    """_top1_claims of one agreement (ROW_AGREEMENTS): the outputs' figures and the gate of that name."""
    count, word = ROW_AGREEMENTS[metric]
    bests = {name: _top1_best(h, h[count], said.get(name) or {}, validated, slack) for name, h in here.items()
             if count in h}
    if not bests:
        return []

    def given(name: str) -> str:
        return f"(these give {here[name][count]} {word} in {here[name]['rows']} rows: at most {bests[name]:.6g})"
    bad = [f"{name} {metric} {_number(value)} {given(name)}" for name in bests
           if type(value := (said.get(name) or {}).get(metric)) in (int, float) and value > bests[name]]
    gate = next((g for g in manifest["gates"] if g["name"] == metric), {})
    # a gate naming no output (which _gates allows) is held to the loosest bound of the outputs it may be of: deleting
    # its "output" let a raised value pass
    on = gate.get("output") if isinstance(gate.get("output"), str) else max(bests, key=bests.get)
    if on in bests and type(gate.get("value")) in (int, float) and gate["value"] > bests[on]:
        bad.append(f"{metric} {_number(gate['value'])} {given(on)}")
    elif on in bests and manifest.get("task") == "classify" and gate.get("passed") and type(gate.get("limit")) in (
            int, float) and bests[on] < gate["limit"]:
        bad.append(f"{metric} passed {given(on)}, under its limit {_number(gate['limit'])}")
    claimed = {name for name in bests if type((said.get(name) or {}).get(metric)) in (int, float)}
    claimed |= {on} if on in bests and type(gate.get("value")) in (int, float) else set()
    # deleted, the rows bound nothing where the batch axis is open
    bad += [f"{name} {metric} names no top1_rows (the rows it counts)" for name in sorted(claimed)
            if type((said.get(name) or {}).get("top1_rows")) is not int]
    return bad


def _verdict_saturated(manifest: dict) -> bool:
    """Whether the verdict's int8 outputs are its host's saturating default u8s8 kernels' with 8-bit weights (an x86
    target made on an AVX2 host with --reduce-range false), while its golden outputs are exact int8's: their top-1
    flips are not a subset of the verdict's (on 400 random images a small CNN's exact int8 flipped 13 that AVX2's
    did not), so they bound nothing there."""
    made_on, quantization = manifest.get("host"), manifest.get("quantization")
    return (isinstance(made_on, dict) and made_on.get("cpu_isa") in host.SATURATING_X86
            and not manifest.get("arm_kernels") and isinstance(quantization, dict)
            and quantization.get("reduce_range") is False)


def _top1_best(here: dict, flips: int, said: dict, validated, slack: float) -> float:
    """The best top-1 (or top-5) agreement over the rows the verdict counted, given the golden samples' (a subset of
    its samples, each row counted there too): their clear flips (top1_flips; top5_misses) are flips there, out of at
    most the fewest of: the rows each validation sample has where the graph fixes them (per_sample), the top1_rows
    the manifest records (the rows both agreements count: an open batch axis leaves per_sample unknown; one missing
    is untrue, _row_claims), and MOST_SHARE times the golden rows; never fewer
    than the golden rows. Sound, as the golden outputs are the verdict's int8 outputs; `slack` (LOSS_SLACK) where
    an emulated CPU's kernels made them."""
    rows = here["rows"]
    most = [rows * MOST_SHARE]
    if here.get("per_sample") and type(validated) is int:
        most.append(validated * here["per_sample"])
    if type(said.get("top1_rows")) is int:
        most.append(said["top1_rows"])
    return 1 - flips / (slack * max(min(most), rows, 1)) + 1e-9


def _floor_claim(said: dict, here: dict, validated: float | None) -> str:
    """Why an output's recorded quiet_floor is untrue ("" if not): golden samples under it (less FLOOR_MARGIN) that
    the run's quiet_samples does not count, or quiet_samples of half the validation samples or more (the floor is
    QUIET x their median: fewer than half lie under it). A floor and count edited high together left check no
    golden sample to bound the cosine by: one that leaves out every golden sample is refused too."""
    if "quiet_floor" not in said:
        return ""
    run = said.get("quiet_samples") if _number(said.get("quiet_samples")) != "n/a" else 0
    run = run or 0
    if validated is not None and run and run >= validated / 2:
        return (f"{here['output']} quiet_samples {_number(run)} of {_number(validated)}: fewer than half the samples "
                f"can lie under {parity.QUIET:g} of their median's RMS")
    under = here.get("under_floor") or 0
    if under > run:
        return (f"{here['output']} quiet_floor {_number(said['quiet_floor'])} leaves out {under} golden samples, more "
                f"than its quiet_samples {_number(run)}")
    if under and under >= here.get("loud", 0):
        return (f"{here['output']} quiet_floor {_number(said['quiet_floor'])} leaves out every golden sample: its "
                "cosine cannot be re-checked")
    return ""


def _at_best(here: float | None, counted: int | None, validated: float | None) -> float | None:
    """The best mean cosine over `validated` samples (None: not recorded, at most MOST_SHARE a golden one), given
    `here` averaged over `counted` golden ones."""
    if here is None or not counted:
        return None
    most = counted * MOST_SHARE
    return 1 - (1 - here) * counted / (LOSS_SLACK * min(max(validated or most, counted), most)) + 1e-9


def read_manifest(folder: Path, shown: str):
    """manifest.json's JSON, its fields not yet checked (a newer edgekit's may hold others)."""
    try:
        path = arrays.regular_file(folder / "manifest.json", f"{shown}/manifest.json")  # a FIFO would hang
        if path.is_symlink():
            raise InputError(f"{shown}/manifest.json: a link, not a file of the package")
        if path.stat().st_size > archive.MAX_MANIFEST_BYTES:
            raise InputError(f"{shown}/manifest.json: larger than {archive.MAX_MANIFEST_BYTES} bytes")
        manifest = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys,
                              parse_constant=_no_constant)
    except (OSError, ValueError, RecursionError) as e:
        raise InputError(f"{shown}/manifest.json: unreadable ({type(e).__name__}: {first_line(e, 120)})") from e
    return manifest


def _manifest(manifest, shown: str) -> dict:
    """manifest.json with the fields check relies on, of the right types."""
    def is_str_dict(d, most: int | None = None) -> bool:
        return isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in d.items()) and (
            most is None or all(len(k) <= most and len(v) <= most for k, v in d.items()))

    try:
        golden = manifest.get("golden") if isinstance(manifest, dict) else None
        ok = (isinstance(manifest, dict) and isinstance(manifest.get("target"), str)
              and TARGET_NAME.fullmatch(manifest["target"]) is not None
              and is_str_dict(manifest.get("files")) and manifest["files"]
              and isinstance(golden, dict) and isinstance(golden.get("models"), dict) and golden["models"]
              and all(isinstance(e, dict) and isinstance(e.get("file"), str) for e in golden["models"].values())
              and isinstance(manifest.get("passed"), bool) and isinstance(manifest.get("gates"), list)
              and isinstance(manifest.get("verification", []), list) and archive.file_sizes(manifest) is not None
              and isinstance(manifest.get("host") or {}, dict)
              and (manifest.get("host") or {}).get("threads", 1) in range(1, 257)
              and (not manifest.get("state") or (isinstance(manifest["state"], dict)
                                                 and is_str_dict(manifest["state"].get("pairs"), MAX_NAME)))
              and all(isinstance(g, dict) and isinstance(g.get("name"), str) and isinstance(g.get("passed"), bool)
                      for g in manifest["gates"])
              and isinstance(golden.get("steps", {}), dict)
              and all(isinstance(v, (int, float)) and MIN_STEP <= v < float("inf")
                      for v in golden.get("steps", {}).values())
              and (not manifest.get("ort_format") or (isinstance(manifest["ort_format"], dict)
                                                       and isinstance(manifest["ort_format"].get("file"), str)
                                                       and _fp32_ort_entry(manifest["ort_format"].get("fp32")))))
    except (OSError, ValueError, RecursionError) as e:
        raise InputError(f"{shown}/manifest.json: unreadable ({type(e).__name__}: {first_line(e, 120)})") from e
    if not ok:
        raise InputError(f"{shown}/manifest.json: missing or mistyped target, files, golden, gates, passed, "
                         "ort_format, state, steps or sizes")
    if where := _mistyped(manifest, READ_TYPES):
        raise InputError(f"{shown}/manifest.json: {where}")
    return manifest


# The type edgekit writes of each further field check reads (a type, a tuple of choices, None for null, {key: type}
# for a dict's keys that are there, [type] for a list's items), so one edited to another (dynamic_sizes 1.5) is bad
# input naming it, not a crash deep in a claim check (exit 5). A field absent (an older package's) is not read.
STAGE = {"outputs": [{"output": str}]}  # a parity stage: the outputs compared


class Count:
    """A READ_TYPES spec: a count, an integer 1 or more (a sample count of null or "600" lifted the cosine bound)."""


READ_TYPES = {
    "target_profile_sha256": str,
    "inputs": [{"name": str}],
    "outputs": [{"name": str}],
    "gates": [{"output": (str, None)}],
    "parity": {"export": (STAGE, None), "quantization": {**STAGE, "samples": Count}},
    "dynamic_sizes": ([{"export": (STAGE, None), "quantization": (STAGE, None)}], None),
}


def _mistyped(value, spec, where: str = "") -> str:
    """Where `value` is not of `spec` (see READ_TYPES), said in one line ("" where it is)."""
    if spec is Count:
        return "" if type(value) is int and value >= 1 else f"{where} is {_kind(value)}, not a count (1 or more)"
    if isinstance(spec, tuple):  # a value of one choice's kind is held to that choice (a table to its fields)
        same = [s for s in spec if _kind(value) == _spec_kind(s)]
        return _mistyped(value, same[0], where) if same else \
            f"{where} is {_kind(value)}, not {' or '.join(map(_spec_kind, spec))}"
    if spec is None:
        return "" if value is None else f"{where} is {_kind(value)}, not null"
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return f"{where} is {_kind(value)}, not a table"
        return next((bad for key, s in spec.items() if key in value
                     and (bad := _mistyped(value[key], s, f"{where}.{key}".lstrip(".")))), "")
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{where} is {_kind(value)}, not a list"
        return next((bad for i, item in enumerate(value) if (bad := _mistyped(item, spec[0], f"{where}[{i}]"))), "")
    return "" if _kind(value) == _spec_kind(spec) else f"{where} is {_kind(value)}, not {_spec_kind(spec)}"


def _spec_kind(spec) -> str:
    """The kind of JSON value a READ_TYPES spec (not a choice of them) asks for."""
    return _kind({} if isinstance(spec, dict) else [] if isinstance(spec, list) else spec and spec())


def _kind(value) -> str:
    """A JSON value's kind, as an error names it."""
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "a table",
            type(None): "null"}.get(type(value), type(value).__name__)


def _fp32_ort_entry(entry) -> bool:
    """ort_format's fp32 entry, where there is one, names its .ort and an fp32 .onnx (not the int8 one)."""
    return entry is None or (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                             and isinstance(entry.get("onnx"), str) and entry["onnx"] not in (INT8, entry["file"]))


def _unique_keys(pairs: list) -> dict:
    """A JSON object whose keys are unique: with two `passed` or `gates`, a reader keeping the first saw a failure
    that check (keeping the last) passed."""
    found = {}
    for key, value in pairs:  # one pass: a manifest of 20,000 keys is read in linear time
        if key in found:
            raise ValueError(f"duplicate key {key!r}")
        found[key] = value
    return found


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON (edgekit writes finite numbers only)")


def _gates(target: str, manifest: dict) -> Case:
    """The export's recorded verdict: a package edgekit marked failed never passes a CI gate, nor does one whose
    figures contradict it (a `passed` edited to true over a value that misses its own limit), nor one whose gates
    contradict the package (see _gate_claims)."""
    why = [_gate_failure(g, manifest) for g in manifest["gates"] if not _holds(g)]
    if cases := [str(c.get("name", "?")) for c in manifest.get("verification", []) if isinstance(c, dict)
                 and not c.get("passed") and not (why and c.get("name") == "gates")]:  # named above
        why.append(f"the export's own check failed: {', '.join(cases)}")
    if not manifest["passed"] and not why:
        why.append("the manifest says it failed, naming no gate or check (edited after the export?)")
    said = [f"failed at export: {'; '.join(why)}"] if why else []
    if untrue := _gate_claims(manifest):
        said.append(f"manifest.json's gates contradict the package: {'; '.join(untrue)}")
    return Case(target, "gates", not said, "; ".join(said))


def _gate_failure(gate: dict, manifest: dict) -> str:
    """A failed gate in one line: its value against its limit, or, for a runs_at_ gate (no value, no limit), why
    the model did not run at that size, as the manifest's dynamic_sizes records it (was `= n/a (needs  n/a)`)."""
    name = str(gate.get("name", "?"))
    if label := unrun_size(name, gate.get("value"), gate.get("limit")):
        return f"{name}: {size_error(manifest, label)}"
    needs = " ".join(x for x in (str(gate.get("op") or ""), _number(gate.get("limit"))) if x)
    return f"{name} = {_number(gate.get('value'))} (needs {needs})"


CLASS_GATES = {"top1_agreement", "top5_agreement", "accuracy_drop"}  # measured on the scored output alone


def _accuracy_output(manifest: dict, names: list, state: tuple, shapes: list, kinds: list) -> tuple[str | None, str]:
    """The output accuracy says it scored (None: no labels) and why that is untrue ("" if not): a package names one
    wherever it has an accuracy, an output of the model's,
    not state, with rows enough for the labels it scored (a fixed shape's rows per sample, times the samples)."""
    accuracy = manifest.get("accuracy")
    said = accuracy.get("output") if isinstance(accuracy, dict) else None
    if said is None:
        return None, "" if not isinstance(accuracy, dict) else "accuracy names no output it scored"
    if said not in names or said in state:
        return None, f"accuracy is scored on {str(said)[:80]!r}, {'state' if said in state else 'no output'} " \
                     "of the model"
    shape, ids = shapes[names.index(said)], kinds[names.index(said)]
    val = manifest.get("validation")
    samples = val.get("samples") if isinstance(val, dict) else None
    if not state and shape and all(isinstance(d, int) and d >= 0 for d in shape) and _number(samples) != "n/a" \
            and _number(labelled := accuracy.get("samples")) != "n/a" and labelled > _rows(shape, ids) * samples:
        return said, (f"accuracy scores {_number(labelled)} labels on {said!r}, which holds {_rows(shape, ids)} "
                      f"rows a sample ({shape}) over {_number(samples)} validation samples")
    return said, ""


def _rows(shape: list[int], ids: bool) -> int:
    """The labels one sample of an output of `shape` scores (parity.scores): one per class id, per pixel of a class
    map, else per row (its first axis)."""
    size = int(np.prod(shape))
    if ids:
        return size
    if len(shape) >= 4 and int(np.prod(shape[2:])) > 1:
        return size // max(1, shape[1])
    return shape[0] if len(shape) > 1 else 1


def _gate_claims(manifest: dict) -> list[str]:
    """What the gates say that the rest of the package contradicts: a parity gate removed, compared the wrong way
    or skipped where its figure exists (a float output), a size that is not the shipped file's, or a limit or
    target other than those of the bundled profile whose digest the manifest records (a desktop-x86 package
    relabelled android-arm64, gates emptied or loosened, all passed). A manifest without that digest, or with one of
    a user's profile, is held to its own limits only."""
    gates, bad = {g["name"]: g for g in manifest["gates"]}, []
    profile = _bundled_profile(manifest.get("target_profile_sha256"))
    model, outputs = manifest.get("model"), manifest.get("outputs")
    kinds = [str(o.get("dtype")).startswith(("int", "uint", "bool")) for o in outputs if isinstance(o, dict)] \
        if isinstance(outputs, list) else []
    required = {"quant_cosine", "quant_sqnr_db", "accuracy_drop",
                *(("export_cosine", "export_scaled_max_abs") if isinstance(model, dict) and model.get("exporter")
                  else ()),
                *(("top1_agreement",) if manifest.get("task") == "classify" else ()),
                *(("retrieval_at1",) if manifest.get("task") == "embed" else ()),
                *(("integer_output_agreement",) if any(kinds) else ()),  # with ids only, the one int8 gate left
                # a bundled profile of today's (packages made before the gate carry an older profile's digest)
                *((parity.CENTRED_GATE,) if manifest.get("task") in parity.VALUE_TASKS and profile is not None else ())}
    if profile is not None:  # this version's bundled profile: a package made with an older one has no such gate
        required.add("quant_cosine_worst")
    required |= _detection_gates(manifest)
    if missing := sorted(required - set(gates)):
        bad.append(f"gates {', '.join(missing)} are missing")
    if odd := [n for n in gates if not parity.written_gate(n)]:
        bad.append(f"gates {few(odd, 4)} are none that edgekit writes")
    names = [o.get("name") for o in outputs if isinstance(o, dict)] if isinstance(outputs, list) else []
    state = tuple(_state_pairs(manifest).values())
    shapes = [o.get("shape") if isinstance(o.get("shape"), list) else [] for o in outputs if isinstance(o, dict)] \
        if isinstance(outputs, list) else []
    # class gates' output (see scored()): the one accuracy records (the labels chose it), else scored() on the
    # manifest's shapes and types
    recorded, untrue = _accuracy_output(manifest, names, state, shapes, kinds)
    bad += [untrue] if untrue else []
    first = recorded or (names[parity.scored(names, state, shapes, kinds)] if names else None)
    allowed = {None, first}
    if on := [f"{n} on {g['output']!r}" for n, g in gates.items() if first and n in CLASS_GATES
              and g.get("output") not in allowed]:
        bad.append(f"{', '.join(on)}: edgekit measures class gates on the output scored, {first!r} (float class "
                   "scores first, the one the labels fit; never state)")
    if odd := [f"{n} on {g['output']!r}" for n, g in gates.items() if n not in CLASS_GATES
               and g.get("output") not in (None, *names)]:  # the worst output a gate over all of them names
        bad.append(f"{', '.join(odd)}: the model has no such output")
    if ran := [n for n, g in gates.items() if n.startswith("runs_at_") and g.get("passed")]:
        bad.append(f"{ran[0]} passed: edgekit writes it only when the model does not run at that size")
    integer_only = bool(kinds) and all(kinds)
    if profile is not None and profile.name != manifest["target"]:
        bad.append(f"target {manifest['target']} is made with the bundled {profile.name} profile (its sha256)")
    silent = _silent_sizes(manifest)
    for name, g in gates.items():
        if (rule := parity.limit_of(name)) is None:
            continue
        unmeasured = g.get("skipped") and g.get("value") is None
        if g.get("op") != rule[0] and not (unmeasured and g.get("op") == "" and g.get("limit") is None):
            bad.append(f"{name} is compared {g.get('op')!r}, not {rule[0]!r}")
        elif profile is not None and g.get("limit") is not None and g["limit"] != getattr(profile.parity, rule[1]):
            bad.append(f"{name}'s limit {_number(g['limit'])} is not the {profile.name} profile's "
                       f"{_number(getattr(profile.parity, rule[1]))}")
        if unmeasured and name.startswith(("quant_cosine", "quant_sqnr_db", "export_cosine")) and not integer_only \
                and name.split("_at_")[-1] not in silent:
            bad.append(f"{name} is skipped, but the model has float outputs to measure it on")
    # a figure check can read: skipped or edited, it passed
    if parity.CENTRED_GATE in gates and (value := gates[parity.CENTRED_GATE].get("value")) != (
            worst := _worst_recorded(manifest, "centred_sqnr_db")):
        bad.append(f"{parity.CENTRED_GATE} {_number(value)} is not the worst centred_sqnr_db the manifest records "
                   f"({_number(worst)})")
    if parity.DETECTION_GATE in gates and (value := gates[parity.DETECTION_GATE].get("value")) != (
            worst := _worst_recorded(manifest, "detection_agreement")):
        bad.append(f"{parity.DETECTION_GATE} {_number(value)} is not the worst detection_agreement the manifest "
                   f"records ({_number(worst)})")
    if (length := gates.get("quant_length_mismatches")) and length.get("value") != (worst := _most_lengths(manifest)):
        bad.append(f"quant_length_mismatches {_number(length.get('value'))} is not the most length_mismatches the "
                   f"manifest records of outputs not matched as detections ({_number(worst)})")
    bad += _profile_claims(manifest, gates, profile) + _unlabelled_top1_claims(manifest, gates, profile)
    bad += _emulated_claims(manifest, gates, profile)
    size, sizes, shipped = gates.get("size_mb"), archive.file_sizes(manifest), shipped_model(manifest)
    if size and shipped in sizes and (not isinstance(size.get("value"), (int, float))
                                      or abs(size["value"] - sizes[shipped] / 1e6) > 1e-6):
        bad.append(f"size_mb {_number(size.get('value'))} is not {shipped}'s {sizes[shipped] / 1e6:.6f}")
    return bad


def _emulated_claims(manifest: dict, gates: dict, profile: Target | None) -> list[str]:
    """The emulated CPU's gates (export --emulate x86_64) made again from its emulated_kernels record, as the export
    made them, at the bundled profile's limits (a user's: the gates' own, and its skipped gates taken as they are, as
    whether task auto's top-1 is held needs limits no gate records): a failed one deleted, or edited to pass over the
    record's figure, passed check (which required two of them)."""
    made = {n: g for n, g in gates.items() if n.startswith(parity.EMULATED)}
    record = emulated_kernels.from_json(manifest.get("emulated_kernels"))
    if record is None:
        return [f"gates {few(sorted(made), 4)} hold figures of an emulated CPU no emulated_kernels records"] if made \
            else []
    spec = profile.parity if profile is not None else _own_limits(made)
    expected = {g.name: g for g in record.gates(spec, _judged_task(manifest, record),
                                                parity.NOTHING_QUANTIZED_GATE not in gates)}
    said = f"the emulated_kernels record's figures ({record.kernels})"
    bad = [f"gates {', '.join(missing)} are missing, which {said} make"] if (
        missing := sorted(set(expected) - set(made))) else []
    if odd := sorted(set(made) - set(expected)):
        bad.append(f"gates {few(odd, 4)} are none that {said} make")
    if edited := [f"{n} {_number(made[n].get('value'))} {_verdict(made[n].get('passed'))} (theirs: "
                  f"{_number(g.value)} {_verdict(g.passed)})" for n, g in expected.items()
                  if n in made and (made[n].get("value"), made[n].get("passed")) != (g.value, g.passed)
                  and (profile is not None or made[n].get("value") is not None)]:  # a user's limits: those recorded
        bad.append(f"{'; '.join(edited)}: not what {said} make")
    return bad


def _own_limits(gates: dict) -> ParitySpec:
    """The limits a package made with a user's profile holds its gates to: the gates' own."""
    return replace(ParitySpec(), **{rule[1]: g["limit"] for name, g in gates.items()
                                    if (rule := parity.limit_of(name)) and _number(g.get("limit")) != "n/a"})


def _verdict(passed) -> str:
    return "passed" if passed else "failed"


def _judged_task(manifest: dict, record: emulated_kernels.EmulatedKernels) -> str:
    """The task the emulated gates were judged as: task auto on unlabelled data is recorded as other, but an output
    it found under the top-1 bar keeps its top-1 agreement (parity.unlabelled_shown), which task other never has."""
    task = str(manifest.get("task"))
    return "auto" if task == "other" and any(o.top1_agreement is not None for o in record.parity.outputs) else task


def _unlabelled_top1_claims(manifest: dict, gates: dict, profile: Target | None) -> list[str]:
    """Task auto on unlabelled data records an output's top-1 agreement only under the bar (parity.unlabelled_shown),
    and then always holds it (parity.unlabelled_top1_gate): failed on that figure, or skipped for a reason the
    recorded figures give (parity.no_loss_shown, at a bundled profile's limits). Deleted, or marked skipped, the
    failed gate of int8 merging a head's classes passed check."""
    scored = next((o for o in _recorded_outputs(manifest) if type(o.get("top1_rows")) is int
                   and type(o.get("top1_agreement")) in (int, float)), None)
    if manifest.get("task") == "classify" or scored is None:
        return []
    name, top1, gate = str(scored.get("output"))[:80], scored["top1_agreement"], gates.get("top1_agreement")
    said = f"{name!r}'s top-1 agreement {_number(top1)} on unlabelled data (task auto holds it)"
    if gate is None:
        return [f"top1_agreement is missing, where the manifest records {said}"]
    if gate.get("value") is not None:
        return [] if gate["value"] == top1 else [f"top1_agreement {_number(gate['value'])} is not {said}"]
    stage = (manifest.get("parity") or {}).get("quantization")
    samples = stage.get("samples") if isinstance(stage, dict) else None
    centred, top = scored.get("centred_sqnr_db"), scored.get("top_class_sqnr_db")
    if profile is None or type(samples) is not int or any(v is not None and type(v) not in (int, float)
                                                          for v in (centred, top)):
        return []  # a user's profile's limits are not known here
    judged = parity.OutputParity(name, None, None, None, None, None, top1_agreement=top1, centred_sqnr_db=centred,
                                 top1_rows=scored["top1_rows"], top_class_sqnr_db=top)
    if parity.no_loss_shown(judged, profile.parity, samples) is None:
        return [f"top1_agreement is skipped, where the manifest records {said}, under the bar beyond chance on "
                f"{samples} samples with a top-class channel that lost its spread"]
    return []


def _detection_gates(manifest: dict) -> set[str]:
    """The gates a detector's recorded figures call for: quant_detection_agreement where an output records a
    detection_agreement, quant_length_mismatches where one records length_mismatches unmatched as detections
    (deleted, a failing package passed check)."""
    outputs = _recorded_outputs(manifest)
    matched = any(o.get("detection_agreement") is not None for o in outputs)
    counted = any(o.get("length_mismatches") and o.get("detection_agreement") is None for o in outputs)
    return {*((parity.DETECTION_GATE,) if matched else ()), *(("quant_length_mismatches",) if counted else ())}


def _most_lengths(manifest: dict) -> int | None:
    """The most length_mismatches of the fp32-vs-int8 parity outputs not matched as detections (the ones the
    quant_length_mismatches gate holds: parity.quantization_gates); None: none recorded."""
    return max((v for o in _recorded_outputs(manifest) if o.get("detection_agreement") is None
                and type(v := o.get("length_mismatches")) is int), default=None)


def _worst_recorded(manifest: dict, key: str) -> float | None:
    """The lowest `key` of the manifest's fp32-vs-int8 parity outputs (None: none recorded)."""
    return min((v for o in _recorded_outputs(manifest) if type(v := o.get(key)) in (int, float)), default=None)


def _silent_sizes(manifest: dict) -> set[str]:
    """The other sizes (seq=16) whose reference outputs were all ~0 on the samples edgekit made: their cosine
    gates are skipped, not measured (verdict._unmeasured_at)."""
    found = set()
    for c in manifest.get("dynamic_sizes") or []:
        stages = [c.get(k) for k in ("export", "quantization") if isinstance(c, dict) and isinstance(c.get(k), dict)]
        outputs = [o for s in stages for o in s.get("outputs") or [] if isinstance(o, dict)]
        if outputs and all(o.get("reference_near_zero") or o.get("exact_agreement") is not None for o in outputs):
            found.add(f"{c.get('dim')}={c.get('validated_size')}")
    return found


BUDGETS = {"size_mb": "size_mb_max", "latency_p50_ms": "latency_p50_ms_max"}  # gate: its Budgets field, both "<="


def _profile_claims(manifest: dict, gates: dict, profile: Target | None) -> list[str]:
    """The budget and coverage gates compared the wrong way (a size 100 MB "passed" `>=` a 50 MB budget); with a
    bundled profile, each of its budgets kept (a search's may be tighter, never looser), its coverage gate at its
    limit and on the coverage the manifest records, and the .ort and C array it asks for shipped."""
    bad = [f"{n} is compared {g.get('op')!r}, not {op!r}" for n, g in gates.items()  # coverage/verdict gates ">="
           if (op := "<=" if n in BUDGETS else ">=" if n.endswith(("_coverage", "_verdict")) else None)
           and g.get("op") != op]
    bad += [said for n, g in gates.items() if n.endswith("_verdict")  # whatever the profile: the recorded verdict
            for said in _verdict_value(n.removesuffix("_verdict"), manifest.get("mobile_coverage"), g)]
    if profile is None:
        return bad
    for name, field in BUDGETS.items():
        most, limit = getattr(profile.budgets, field), (gates.get(name) or {}).get("limit")
        if most and not (isinstance(limit, (int, float)) and limit <= most):
            bad.append(f"{name}'s limit {_number(limit)} is not within the {profile.name} profile's {_number(most)}")
    spec = profile.package
    if spec.min_coverage and spec.coverage:
        coverage = manifest.get("mobile_coverage")
        name, found = f"{spec.coverage[0]}_coverage", coverage.get(spec.coverage[0]) if isinstance(coverage, dict) \
            else None
        g = gates.get(name) or {}
        if g.get("limit") != spec.min_coverage:
            bad.append(f"{name}'s limit {_number(g.get('limit'))} is not the {profile.name} profile's "
                       f"{_number(spec.min_coverage)}")
        elif not isinstance(found, dict) or g.get("value") != found.get("coverage"):
            bad.append(f"{name} {_number(g.get('value'))} is not the coverage the manifest records")
    if spec.min_verdict != "no" and spec.coverage:
        bad += _verdict_claims(spec.coverage[0], gates, profile)
    for wanted, key in ((spec.ort_format, "ort_format"), (spec.c_header, "c_header")):
        if wanted and not isinstance(manifest.get(key), dict):
            bad.append(f"the {profile.name} profile ships {key}, and the manifest has none")
    if spec.ort_format and (coreml := mobile.fp32_providers(spec.coverage, profile.runtime.provider_options)):
        fp32 = (manifest.get("ort_format") or {}).get("fp32")
        if not fp32:
            bad.append(f"the {profile.name} profile ships an fp32 .ort for {coreml[0]}, and the manifest has none")
        elif not isinstance(fp32.get("inputs"), list):  # an app sizes its buffers by them
            bad.append(f"the {profile.name} profile fixes the input shapes of {fp32['onnx']}, and the manifest gives "
                       "none")
    return bad


def _verdict_claims(ep: str, gates: dict, profile: Target) -> list[str]:
    """The verdict gate at the profile's least verdict."""
    name, g = f"{ep}_verdict", gates.get(f"{ep}_verdict") or {}
    least = mobile.VERDICTS.index(profile.package.min_verdict)
    if g.get("limit") != least:
        return [f"{name}'s limit {_number(g.get('limit'))} is not the {profile.name} profile's {least} "
                f"({profile.package.min_verdict})"]
    return []


def _verdict_value(ep: str, coverage, g: dict) -> list[str]:
    """A verdict gate's value is the place of the verdict of onnxruntime's checker the manifest records (a
    4-partition NNAPI model's "no" is 0: edited to 2, it passed)."""
    said = (coverage.get(ep) if isinstance(coverage, dict) else None) or {}
    found = mobile.VERDICTS.index(said["verdict"]) if said.get("verdict") in mobile.VERDICTS else None
    if g.get("value") != found:
        return [f"{ep}_verdict {_number(g.get('value'))} is not the verdict the manifest records "
                f"({said.get('verdict')})"]
    return []


@functools.cache
def _bundled_profile(digest) -> Target | None:
    """The bundled profile with this sha256, if any (a user's profile, or another version's, has none)."""
    if not isinstance(digest, str):
        return None
    return next((load_target(name) for name in list_targets()
                 if package.sha256(bundled(name)) == digest), None)


def _holds(gate: dict) -> bool:
    """A gate passes when it says so and, unless it was skipped (nothing measured), its value meets its limit. A
    skipped gate with a value was measured: marking a failed one skipped passed it."""
    if not gate["passed"] or gate.get("skipped") and gate.get("value") is None:
        return gate["passed"]
    value, op, limit = gate.get("value"), gate.get("op"), gate.get("limit")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (value, limit)):
        return False
    return value >= limit if op == ">=" else value <= limit if op == "<=" else False


def _number(x) -> str:
    return format(x, ".6g") if isinstance(x, (int, float)) and not isinstance(x, bool) else "n/a"


def _existing(folder: Path, shown: str, name: str) -> Path:
    if why := _not_plain(folder, name):
        raise InputError(f"{shown}: {name} {why}")
    return folder / name


def _not_plain(folder: Path, name: str) -> str | None:
    """Why `name` is not a plain file of the package folder (a path out of it is never looked at), or None."""
    if Path(name).name != name or name in (".", ".."):
        return "is not a file name in the package folder"
    path = folder / name
    return "is missing (or not a plain file in the package folder)" if path.is_symlink() or not path.is_file() \
        else None


# the models edgekit gives golden outputs: model.int8.onnx, its .ort, and an iOS package's CoreML .onnx and .ort
MAX_GOLDEN_MODELS = 4


def _golden_files_apart(shown: str, golden: dict[str, dict]) -> None:
    """Each model's golden file its own, for at most MAX_GOLDEN_MODELS models: every entry's file is read whole and
    kept, so 40 copies of model.int8.onnx naming one 4 MB golden.npz of 10,000 samples took check 289 s and 1.7 GB
    (one: 13 s, 127 MB)."""
    if len(golden) > MAX_GOLDEN_MODELS:
        raise InputError(f"{shown}: manifest.json gives golden outputs for {len(golden)} models; edgekit gives them "
                         f"for at most {MAX_GOLDEN_MODELS}")
    owners: dict[str, str] = {}
    for model, entry in golden.items():
        if (other := owners.setdefault(entry["file"], model)) != model:
            raise InputError(f"{shown}: manifest.json names {entry['file']!r} the golden file of both {other} and "
                             f"{model}; each model has its own")


def _within_archive_caps(folder: Path, shown: str, files: dict[str, str], sizes: dict[str, int]) -> None:
    """A package folder's listed files hold no more than an archive of it may (archive.extract's caps: MAX_MEMBERS
    files, MAX_MEMBER_BYTES each, MAX_TOTAL_BYTES in all), told from their sizes on disk before a byte is hashed:
    three sparse files of 3 GiB, listed with their sizes, were hashed for 67 s. A file that is not plain, or not of
    the size its manifest gives, is never read (integrity fails it)."""
    if len(files) > archive.MAX_MEMBERS:
        raise InputError(f"{shown}: manifest.json lists {len(files)} files, more than a package may hold "
                         f"({archive.MAX_MEMBERS}, as in an archive)")
    total = 0
    for name in (n for n in files if not _not_plain(folder, n)):
        if (size := (folder / name).stat().st_size) != sizes.get(name):
            continue
        if size > archive.MAX_MEMBER_BYTES:
            raise InputError(f"{shown}/{name}: holds {size} bytes, more than a package file may "
                             f"({archive.MAX_MEMBER_BYTES}, as in an archive)")
        total += size
        if total > archive.MAX_TOTAL_BYTES:
            raise InputError(f"{shown}: its files hold more than {archive.MAX_TOTAL_BYTES} bytes in all, more than a "
                             "package may (as in an archive)")


def _named(manifest: dict) -> set[str]:
    """The package files a manifest names besides its `files` list: the C header's, the ORT build's, the labels."""
    header = manifest.get("c_header") if isinstance(manifest.get("c_header"), dict) else {}
    ort = manifest.get("ort_format") if isinstance(manifest.get("ort_format"), dict) else {}
    labels = manifest.get("labels") if isinstance(manifest.get("labels"), dict) else {}
    return {v for k, v in header.items() if k != "c_name" and isinstance(v, str)} | {
        ort[k] for k in ("file", "config") if isinstance(ort.get(k), str)} | set(_ort_files(manifest)) | (
        {labels["file"]} if isinstance(labels.get("file"), str) else set())


def _integrity(folder: Path, shown: str, target: str, manifest: dict, mismatched: dict[Path, str],
               pages: bool = True) -> Case:
    """Every listed file matches its hash, and the folder holds nothing the manifest does not list.
    `mismatched`: the actual hashes of archive members that were never written because they did not match.
    `pages`: the package is finished, so it hashes report.md and report.html (the export's own check runs before
    they are written): both dropped from the files and deleted, with page_format edited, passed."""
    files, sizes, bad = manifest["files"], archive.file_sizes(manifest), []
    for name, digest in sorted(files.items()):
        if folder / name in mismatched:  # an archive member that did not match was never written
            bad.append(f"{name} sha256 {mismatched[folder / name][:12]}… != manifest {digest[:12]}…")
            continue
        path = folder / name
        if why := _not_plain(folder, name):  # deleted, renamed or a link: tampered with, as an edited file is (exit 1)
            bad.append(f"{name} {why}")
        elif name not in sizes:  # the size is compared before the bytes are read: a 20 GB file was hashed (83 s)
            bad.append(f"{name} has no size in the manifest")
        elif sizes[name] != (held := path.stat().st_size):
            bad.append(f"{name} holds {held} bytes, its manifest says {sizes[name]}")
        elif (actual := package.sha256(path)) != digest:
            bad.append(f"{name} sha256 {actual[:12]}… != manifest {digest[:12]}…")
    unlisted = sorted(p.name for p in folder.iterdir() if p.name not in files and p.name != "manifest.json")
    if unlisted:
        bad.append(f"files not in the manifest: {_some(unlisted)}")
    if unshipped := sorted(n for n in _named(manifest) if n not in files):  # a C header, an .ort its manifest names
        bad.append(f"files the manifest names but does not ship: {_some(unshipped)}")
    if pages and (unhashed := [n for n in package.PAGES if n not in files]):
        bad.append(f"the manifest does not hash {' or '.join(unhashed)}, which every package ships")
    return Case(target, "integrity", not bad, "; ".join(bad))


def _parity(model: Path, target: str, inputs, expected, atol, state: dict[str, str], steps: dict | None = None,
            reuse: bool = False, entries: dict | None = None) -> Case:
    """A model that will not load or run is a failed check (exit 1), not a crash: CI still gets its report."""
    start = time.perf_counter()
    kernels = ""
    try:
        sess, kernels = int8_session(model, CHECKED_ON, reuse=reuse, entries=entries)
        runs = runner.replay(sess, inputs, state, give_back=True)
    except (UsageError, StepTimeout):
        raise  # e.g. a bad EDGEKIT_HOST_ISA, or past --step-timeout: the user's setting, not the model
    except Exception as e:  # past the memory a run may use: said in plain words
        said = (str(why) if isinstance(why := run_error(first_line(e)), InputError)
                else str(e) if isinstance(e, StageError) else first_line(e, 200))  # a load failure: its whole cause
        return Case(target, f"parity {model.name}", False, f"{model.name} does not run the golden inputs: {said}",
                    time.perf_counter() - start, kernels, host.where(1, CHECKED_ON))
    return compare(target, model.name, runs, expected, atol, steps or {}, time.perf_counter() - start, kernels,
                   host.where(1, sess.get_providers()))


def compare(target: str, model: str, runs: list[dict], expected: list[dict], atol: dict[str, float | np.ndarray],
            steps: dict[str, float], seconds: float, kernels: str, where: str) -> Case:
    """Outputs against the golden ones: the worst element over its tolerance (the output's, or its channel's: an
    array) fails the case. Outputs with a quantization step (`steps`: output → scale) also say how many values
    differ, and by how many steps.
    A one-step difference passes on purpose (package.STEP_FLOOR): the golden outputs are one kernel set's, and another
    (an ARM device's, AVX2's exact u8s8 against AVX-512 VNNI's) may round a requantized value the other way. Exact
    kernels agreed to the step on digits and a uint8 camera CNN (qemu -cpu EPYC-Milan-v1, EDGEKIT_HOST_ISA=avx2);
    AVX2's saturating default ones were up to 4 steps apart and fail. An edited model fails its hash, not this."""
    worst = None  # (excess over tolerance, message)
    differ, total, most, unreal = 0, 0, 0, 0  # unreal: NaN or infinite values, which no step count measures
    for i, (got, want) in enumerate(zip(runs, expected, strict=True)):  # a device's are counted before
        for out, ref in want.items():
            if out not in got or got[out].shape != ref.shape:
                return Case(target, f"parity {model}", False, f"output {out!r} missing or of another shape in "
                            f"sample {i}", seconds, kernels, where)
            if not ref.size:  # nothing to differ: an empty output matches (a detector's with no box)
                worst = worst or (-1.0, "")
                continue
            # NaN counts as the worst error there is (a NaN never compares as "greater")
            err = np.nan_to_num(np.abs(got[out].astype(np.float64) - ref.astype(np.float64)), nan=np.inf)
            if out in steps:
                finite = np.isfinite(err)
                differ, total = differ + int(np.count_nonzero(err)), total + err.size
                unreal += err.size - int(np.count_nonzero(finite))
                with np.errstate(over="ignore"):
                    ratio = float(np.max(err[finite], initial=0) / steps[out])
                most = max(most, int(round(min(ratio, 2.0 ** 31))))
            tol = np.broadcast_to(atol[out], err.shape)
            idx = np.unravel_index(int(np.argmax(err - tol)), err.shape)
            excess = float(err[idx]) - float(tol[idx])
            if worst is None or excess > worst[0]:
                worst = (excess, f"output {out!r} sample {i} element {list(map(int, idx))}: "
                                 f"expected {float(ref[idx]):.9g}, got {float(got[out][idx]):.9g}, "
                                 f"|error| {float(err[idx]):.3g} vs tolerance {float(tol[idx]):.3g}"
                                 + (" (its channel's)" if np.ndim(atol[out]) else ""))
    passed = worst is not None and worst[0] <= 0
    message = "" if passed else (worst or (0, "no outputs compared"))[1]
    if total:
        counted = (f"{differ:,} of {total:,} quantized output values differ"
                   + (f", by up to {most} step(s)" if differ > unreal else "")
                   + (f" ({unreal:,} NaN or infinite)" if unreal else ""))
        message = f"{message}; {counted}" if message else counted
    return Case(target, f"parity {model}", passed, message, seconds, kernels, where)


def ran_where(case: Case) -> str:
    """A case's host (or emulated CPU or device) and kernels, in one line: `where: ...; kernels: ...`."""
    return "; ".join(f"{key}: {getattr(case, key)}" for key in ("where", "kernels") if getattr(case, key))


def _counts(cases: list[Case]) -> dict[str, str]:
    """A JUnit suite's failures, errors (a step past --step-timeout) and skipped cases (never reached after it)."""
    return {"failures": str(sum(not (c.passed or c.error or c.skipped) for c in cases)),
            "errors": str(sum(c.error for c in cases)), "skipped": str(sum(c.skipped for c in cases))}


def junit(cases: list[Case]) -> str:
    """JUnit XML: one <testsuite> per target, one <testcase> per check. Where a case ran is its
    <system-out>: the JUnit schema (Jenkins', Surefire's, pytest's xunit2) takes no <properties> in a <testcase>."""
    root = ElementTree.Element("testsuites", name="edgekit check", tests=str(len(cases)), **_counts(cases))
    for target in dict.fromkeys(c.label for c in cases):
        mine = [c for c in cases if c.label == target]
        suite = ElementTree.SubElement(root, "testsuite", name=target, tests=str(len(mine)), **_counts(mine))
        for c in mine:
            case = ElementTree.SubElement(suite, "testcase", classname=f"edgekit.{target}", name=c.name,
                                          time=f"{c.seconds:.3f}")
            if not c.passed:  # past --step-timeout: the case it stopped in, then those it never reached
                kind = "error" if c.error else "skipped" if c.skipped else "failure"
                ElementTree.SubElement(case, kind, message=c.message).text = c.message
            if c.where or c.kernels:  # where the model ran: this host, an emulated CPU or a device
                ElementTree.SubElement(case, "system-out").text = ran_where(c)
    for element in root.iter():  # a file or output name from the package may hold control characters and newlines:
        # one line, as the console shows it (`evil?[31mred?PASS  fake`), which a CI page shows as it is
        element.attrib.update({k: NOT_XML.sub("?", printable(v)) for k, v in element.attrib.items()})
        element.text = element.text and NOT_XML.sub("?", printable(element.text))
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True)

