"""Progress bars on a terminal only; CI logs and --json output stay clean."""
from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def bar(label: str, total: int, enabled: bool = True):
    """Yields `advance(n=1, status=None)`: moves the bar and shows a status (loss, last trial ...);
    a no-op when stderr is not a terminal."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda n=1, status=None: None
        return
    import click

    with click.progressbar(length=total, label=label, file=sys.stderr, item_show_func=lambda s: s) as b:
        yield lambda n=1, status=None: b.update(n, status)
