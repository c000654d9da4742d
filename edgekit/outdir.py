"""Atomic output: everything is built in a temporary folder beside OUT and swapped in at the end,
so a failed or interrupted run leaves the previous good output as it was."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import InputError, UsageError


@contextlib.contextmanager
def staging(out: Path):
    """Yields a temporary folder beside OUT, holding OUT's lock; both removed whatever happens."""
    out = out.resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {out}: cannot create its parent folder ({e.strerror})") from e
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    with _lock(out.parent / f".{out.name}.edgekit.lock", out):
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.edgekit-", dir=out.parent))
        try:
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path, out: Path):
    """One writer per OUT: a second run fails at once instead of interleaving its files."""
    import fcntl

    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(f"--out {out}: another edgekit run is writing there; try again when it ends") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break  # still the file at that path (not one a finishing run just unlinked)
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def publish(stage: Path, out: Path, names: list[str]) -> None:
    """Move each finished `stage/NAME` (folder or archive) to `OUT/NAME`, replacing the old one with two renames."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        final = out / name
        old = stage / f".old-{name}"
        if final.exists():
            final.rename(old)
        try:
            (stage / name).rename(final)
        except OSError:
            if old.exists():
                old.rename(final)  # put the previous output back before giving up
            raise
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        elif old.exists():
            old.unlink()
