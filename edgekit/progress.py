"""Progress bars on a terminal only; CI logs and --json output stay clean."""
from __future__ import annotations

import contextlib
import sys
import threading


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


class _OtherThreads:
    """sys.stdout while a library's chatter is dropped: the calling thread's writes go nowhere, every other thread's
    to the stream as before (contextlib.redirect_stdout dropped a library user's other threads' output too). Not an
    io.TextIOBase: its own encoding, fileno and isatty would hide the stream's."""

    def __init__(self, stream):
        self.stream, self.thread = stream, threading.get_ident()

    def write(self, text: str) -> int:
        return len(text) if threading.get_ident() == self.thread else self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):  # encoding, fileno, isatty ...: the stream's
        return getattr(self.stream, name)


@contextlib.contextmanager
def quiet():
    """onnxruntime's tools print progress on stdout, which belongs to --json and to the caller of the Python API."""
    with contextlib.redirect_stdout(_OtherThreads(sys.stdout)):
        yield
