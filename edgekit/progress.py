"""Progress bars on a terminal only; CI logs and --json output stay clean."""
from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def bar(label: str, total: int, enabled: bool = True):
    """Yields a function advancing the bar by n; a no-op when stderr is not a terminal."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda n=1: None
        return
    import click

    with click.progressbar(length=total, label=label, file=sys.stderr) as b:
        yield b.update
