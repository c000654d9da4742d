"""Atomic output that replaces only what edgekit made.

Everything is built in a stage folder inside OUT (so the final renames never cross a filesystem, even
when OUT is its own mount point) and swapped in at the end, all targets or none, with SIGINT/SIGTERM
held back during the swap. A folder at OUT/<target> is replaced only when it holds an edgekit
manifest, a file (an archive, a search's pareto.json) only when edgekit's ledger in OUT records its hash;
anything else needs `--force`. A failed or interrupted run leaves the previous output as it was. OUT's record of
its targets (published.py), which `check OUT` holds it to, is swapped in with them.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from . import archive, published, signals
from .errors import BusyError, DiskFullError, InputError, UsageError, disk_full, first_line

STAGE_PREFIX = ".edgekit-stage-"
STAGE_MARK = ".edgekit-stage"  # inside every stage folder: only folders with it are ever cleaned up
LOCK = ".edgekit.lock"
SEARCH_LOCK = ".edgekit-search.lock"  # held for a whole search: its final export writes OUT, and no other run may
_HELD: set[tuple[int, int]] = set()  # (device, inode) of the locks this process holds: its own are no other run's
LEDGER = archive.LEDGER  # sha256 of each file (archives, a search's reports) edgekit published here
FOREIGN = "exists and edgekit did not make it"
BUSY = "another edgekit run is writing there; try again when it ends"




def check_replaceable(out: Path, names: list[str], force: bool) -> None:
    """Usage errors before any work: colliding output names, OUT not a folder, foreign files in the way."""
    try:
        out = out.resolve()
    except (RuntimeError, OSError):  # Python's "Symlink loop" (an OSError ELOOP in later Pythons): exit 5 before
        raise UsageError(f"--out {out}: a link that leads back to itself") from None
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise UsageError(f"output names collide: {', '.join(dup)} (a target named like another target's archive?)")
    if os.path.lexists(out) and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if package := next((p for p in (out, *out.parents) if _package_manifest(p)), None):
        raise UsageError(f"--out {out}: inside the package folder {package}, which would then fail its check: "
                         "give a folder of its own")
    if out.is_dir():
        _refuse_if_locked(out, LOCK, SEARCH_LOCK)
    if out.is_dir() and not force:
        _refuse_foreign(out, names)


def earlier_packages(out: Path, names: list[str]) -> list[str]:
    """Package folders in OUT that this run did not write (an earlier run's other targets): left alone, and told,
    since `edgekit check OUT` checks them too."""
    try:
        return sorted(p.name for p in out.iterdir() if p.name not in names and p.is_dir() and not p.is_symlink()
                      and _package_manifest(p))
    except OSError:
        return []


def _package_manifest(folder: Path) -> dict | None:
    """An edgekit package folder's manifest (it names edgekit's version and files; a web app's does not), else None."""
    path = folder / "manifest.json"
    try:
        if not path.is_file() or path.stat().st_size > archive.MAX_MANIFEST_BYTES:
            return None
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if isinstance(found, dict) and "edgekit_version" in found and isinstance(found.get("files"), dict):
        return found
    return None


def _refuse_if_locked(out: Path, *names: str) -> None:
    """Another run writing OUT (or searching there) is told before any work (the lock itself is taken when the
    stage is made); a lock this process holds (a search exporting its best point) is its own."""
    import fcntl

    for name in names:
        try:
            fd = os.open(out / name, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # no lock file, or not edgekit's (lock says so)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) not in _HELD:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"--out {out}: {BUSY}") from None
        except OSError:
            continue
        finally:
            os.close(fd)  # and with it this probe's lock


@contextlib.contextmanager
def staging(out: Path, names: list[str], force: bool = False):
    """Yields a stage folder inside OUT, holding OUT's lock; the stage (and an OUT this run created) go
    whatever happens. Setting up and tearing down hold signals back until done: cut short, they left a lock
    file, an unmarked stage no later run removes, or the previous output in the stage after a publish."""
    out = out.resolve()
    check_replaceable(out, names, True)
    created = [p for p in (out, *out.parents) if not p.exists()]  # OUT and the parents this run makes
    teardown = contextlib.ExitStack()
    teardown.callback(_remove_empty, created)
    received: list[int] = []
    try:
        with signals.deferred() as received:
            stage = _set_up(out, names, force, teardown)
        if received:
            raise KeyboardInterrupt
        try:
            yield stage
        except Exception as e:
            if full := full_disk(e, stage, f"--out {out}"):
                raise full from e
            raise
    except BaseException as e:
        with signals.deferred() as late:
            teardown.close()
        if (received or late) and not isinstance(e, KeyboardInterrupt):  # the signal ends the run, not the error
            raise KeyboardInterrupt from e
        raise
    with signals.deferred() as received:
        teardown.close()
    if received:
        raise KeyboardInterrupt


def _set_up(out: Path, names: list[str], force: bool, teardown: contextlib.ExitStack) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {out}: cannot create it ({e.strerror})") from e
    teardown.enter_context(lock(out / LOCK, out))
    _refuse_if_locked(out, SEARCH_LOCK)  # a search started since check_replaceable looked
    clean_dead_stages(out)
    if not force:
        _refuse_foreign(out, names)
    try:
        stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
    except OSError as e:
        raise InputError(f"--out {out}: cannot write there ({e.strerror})") from e
    teardown.callback(shutil.rmtree, stage, ignore_errors=True)
    try:
        (stage / STAGE_MARK).touch()
    except OSError as e:
        raise full_disk(e, out, f"--out {out}") or InputError(f"--out {out}: cannot write there ({e.strerror})") from e
    return stage


def _remove_empty(folders: list[Path]) -> None:
    with contextlib.suppress(OSError):
        for folder in folders:
            folder.rmdir()  # only if empty: a successful run has published into it


@contextlib.contextmanager
def whole_file(dest: Path):
    """Yields a hidden path beside `dest` to write; it becomes `dest` only when the block succeeds and is removed
    otherwise (the rename is atomic there), so no reader ever sees half a file."""
    name = f".{dest.name}.partial"
    # the bytes the file system gets (os.fsencode): under a legacy ASCII locale a UTF-8 name is held as surrogates,
    # which str.encode() refused (`check --junit rapport-ß.xml` exited 5, internal error)
    if len(os.fsencode(name)) > 255:  # a name the file system takes for `dest` may be too long with the affixes
        name = f".{hashlib.sha256(os.fsencode(dest.name)).hexdigest()[:16]}.partial"
    partial = dest.with_name(name)
    try:
        # a place no file can be made (/proc, a read-only folder) is told here, not in a library; a link planted
        # under this name is not followed
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{dest}: {partial.name} beside it is a link, which edgekit does not write through: "
                             "move it away") from e
        raise full_disk(e, dest.parent, str(dest)) or InputError(f"{dest}: cannot write there ({e.strerror})") from e
    try:
        yield partial
        with signals.deferred() as received:
            partial.replace(dest)
            signals.published()
        if received:
            raise signals.InterruptedAfterPublish()
    except Exception as e:
        if full := full_disk(e, dest.parent, str(dest)):
            raise full from e
        raise
    finally:
        partial.unlink(missing_ok=True)


# Some writers ignore or garble a failed write (onnx's C++ shape inference leaves a truncated file the next step
# cannot parse; torch.save asserts on its own file position). A step failing with less than this left was the disk.
NEARLY_FULL = 64 * 1024


def full_disk(e: Exception, folder: Path, what: str) -> DiskFullError | None:
    """The user's error to raise when `e` came from a disk filling up (the one under `folder` unless the error names
    a file elsewhere, e.g. a temporary one), else None."""
    said = disk_full(e)
    if isinstance(e, (InputError, UsageError)) or not (said or _space_left(folder) < NEARLY_FULL):
        return None
    name = getattr(said, "filename", None)
    if name and not Path(name).resolve().is_relative_to(folder.resolve()):
        what = f"{name} (a temporary file)"
    elif not name and _space_left(folder) >= NEARLY_FULL and _other_disk(Path(tempfile.gettempdir()), folder):
        # onnx.save names no file: a full TMPDIR was told as a full --out with 40 GB free
        what = f"{what} or the temporary folder {tempfile.gettempdir()} (TMPDIR; the failed write named no file)"
    seen = "" if said else f" ({first_line(e, 160)}: a file cut short)"
    return DiskFullError(f"{what}: no space left on device{seen}; nothing was written there: free space or choose "
                         "another place")


def _other_disk(one: Path, other: Path) -> bool:
    try:
        return os.stat(one).st_dev != os.stat(other).st_dev
    except OSError:
        return False


def _space_left(folder: Path) -> int:
    try:
        st = os.statvfs(folder)
    except OSError:
        return NEARLY_FULL
    if not st.f_blocks:  # /proc, /sys: no disk at all, not a full one (a write refused there said "no space left")
        return NEARLY_FULL + 1
    return st.f_frsize * (st.f_bfree if os.geteuid() == 0 else st.f_bavail)  # root may write the reserve


@contextlib.contextmanager
def lock(path: Path, out: Path):
    """One writer per OUT: a second run fails at once instead of interleaving its files."""
    import fcntl

    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW, 0o644)
            created = True
        except FileExistsError:
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)  # a dead run's lock; a link is refused
                created = False
            except FileNotFoundError:
                continue  # the run holding it just removed it
            except OSError as e:
                raise InputError(f"--out {out}: {path.name} is not edgekit's lock file ({e.strerror})") from e
        except OSError as e:
            raise InputError(f"--out {out}: cannot write there ({e.strerror})") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BusyError(f"--out {out}: {BUSY}") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break  # still the file at that path (not one a finishing run just unlinked)
        except FileNotFoundError:
            pass
        os.close(fd)
    held = (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
    _HELD.add(held)
    try:
        yield
    finally:
        _HELD.discard(held)
        if created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        os.close(fd)


def clean_dead_stages(out: Path) -> None:
    """With OUT's lock held no other run is writing here: marked stage folders left are from dead runs. One killed
    in the middle of its swap holds previous output (`.old-NAME`) where OUT may have nothing of that name now: that
    is put back first. What the dead run had already swapped in stays (the user may have worked in it since)."""
    for p in out.glob(f"{STAGE_PREFIX}*"):
        if p.is_dir() and not p.is_symlink() and (p / STAGE_MARK).is_file():
            for old in p.glob(".old-*"):
                with contextlib.suppress(OSError):
                    if not os.path.lexists(out / old.name.removeprefix(".old-")):
                        old.rename(out / old.name.removeprefix(".old-"))
            shutil.rmtree(p, ignore_errors=True)


def _refuse_foreign(out: Path, names: list[str]) -> None:
    ledger = _read_ledger(out)
    if ledger is None:  # a publish replaces the ledger: a user's file or folder of that name would be lost
        raise UsageError(f"--out {out}: {LEDGER} exists and is not edgekit's record of its files; "
                         "move it away or pass --force to replace it")
    try:
        published.read(out)
    except InputError as e:  # a publish replaces it: a user's file of that name would be lost
        raise UsageError(f"--out {e}; move it away or pass --force to replace it") from None
    for name in names:
        path = out / name
        if not os.path.lexists(path):
            continue
        if path.is_dir() and not path.is_symlink():
            why = _not_a_package(path / "manifest.json", name)
        else:  # a file (an archive, a search's pareto.json): one whose hash edgekit's ledger here records
            from .package import sha256

            mine = path.is_file() and not path.is_symlink() and ledger.get(name) == sha256(path)
            why = None if mine else FOREIGN
        if why:
            raise UsageError(f"--out {out}: {name} {why}; move it away or pass --force to replace it")


def _not_a_package(manifest: Path, name: str) -> str | None:
    """Why a folder is not an edgekit target folder holding nothing but what its manifest lists (a file the user
    added there would be lost with it); None when it is one."""
    try:
        data = None if manifest.is_symlink() else _package_manifest(manifest.parent)
        if data is None or data.get("target") != name:
            return FOREIGN
        added = sorted({p.name for p in manifest.parent.iterdir()} - {*data["files"], "manifest.json"})
        return f"holds files edgekit did not write there ({', '.join(added[:3])})" if added else None
    except (OSError, ValueError, RecursionError):
        return FOREIGN


def _read_ledger(out: Path) -> dict[str, str] | None:
    """The sha256 of each file edgekit published in OUT; {} when there is no ledger, None when something else
    has its name (not a small regular file of JSON names and hashes)."""
    path = out / LEDGER
    try:
        info = os.lstat(path)  # a FIFO, or a link to /dev/zero, would hang or fill memory
    except FileNotFoundError:
        return {}
    except OSError:
        return None
    try:
        if not stat.S_ISREG(info.st_mode) or info.st_size > 1 << 20:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return None
    return data


def publish(stage: Path, out: Path, names: list[str], stale: list[str] = ()) -> None:
    """Swap every finished `stage/NAME` in for `OUT/NAME`: all or none, with signals held back meanwhile.
    `stale`: files this run makes out of date (a target's archive, re-exported without --archive), taken away
    with the swap when edgekit's ledger shows it made them; anything else of that name is left alone."""
    from .package import sha256

    out = out.resolve()
    files = [n for n in names if (stage / n).is_file()]
    ledger = _read_ledger(out) or {}
    gone = [n for n in stale if n not in names and (out / n).is_file() and not (out / n).is_symlink()
            and ledger.get(n) == sha256(out / n)]
    moves = list(names)
    final_record = _record(stage, out, names)
    if final_record is not None:  # first naming both the previous and the new packages, at the end the new ones
        moves.insert(0, published.INDEX)
    if files or gone:  # swapped in with them, so the ledger never names a file that is not there
        ledger = {n: h for n, h in ledger.items() if n not in gone} | {n: sha256(stage / n) for n in files}
        (stage / LEDGER).write_text(json.dumps(ledger, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        moves.append(LEDGER)
    done: list[tuple[Path, Path | None]] = []  # (final, where its old version went)
    with signals.deferred() as received:
        try:
            for name in gone:
                final, old = out / name, stage / f".old-{name}"
                final.rename(old)
                done.append((final, old))
            for name in moves:
                final, old = out / name, stage / f".old-{name}"
                had = os.path.lexists(final)
                if had:
                    final.rename(old)
                done.append((final, old if had else None))
                (stage / name).rename(final)
            if final_record is not None:
                final_record.replace(out / published.INDEX)
        except OSError as e:
            _roll_back(stage, done)
            raise InputError(f"--out {out}: publishing failed ({e.strerror}); previous output left as it was") from e
        signals.published()
    if received:
        raise signals.InterruptedAfterPublish()


def _record(stage: Path, out: Path, names: list[str]) -> Path | None:
    """Write OUT's record of its targets into the stage, as it stands during the swap (stage/INDEX) and after it
    (returned); None when this publish swaps no folder in (a search's pages: the record stays as it is) or OUT holds
    no package."""
    if not any((stage / n).is_dir() for n in names):
        return None
    try:
        prior = published.read(out)
    except InputError:  # something else of its name, replaced with --force (refused before any work without)
        prior = None
    present = {n: published.manifest_sha256(out / n) for n in earlier_packages(out, [])}
    new = {n: published.manifest_sha256(stage / n) for n in names if (stage / n / "manifest.json").is_file()}
    during, after = published.merged(prior, present, new)
    if prior is None and not after.targets:  # no package here, before or now: nothing to record
        return None
    (stage / published.INDEX).write_text(during.text(), encoding="utf-8")
    (stage / f"{published.INDEX}.final").write_text(after.text(), encoding="utf-8")
    return stage / f"{published.INDEX}.final"


def _roll_back(stage: Path, done: list[tuple[Path, Path | None]]) -> None:
    for final, old in reversed(done):
        with contextlib.suppress(OSError):
            if os.path.lexists(final):
                final.rename(stage / f".failed-{final.name}")
            if old is not None:
                old.rename(final)
