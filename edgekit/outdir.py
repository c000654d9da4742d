"""Atomic output: everything is built in a temporary folder beside OUT and swapped in at the end,
so a failed or interrupted run leaves the previous good output as it was."""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from .errors import InputError, UsageError


@contextlib.contextmanager
def staging(out: Path):
    """Yields a temporary folder beside OUT; removed whatever happens."""
    out = out.resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {out}: cannot create its parent folder ({e.strerror})") from e
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.edgekit-", dir=out.parent))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


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
