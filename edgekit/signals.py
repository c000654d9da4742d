"""The signals that end a run, held back where being cut short would do harm.

SIGINT (Ctrl-C), SIGTERM (CI's cancel) and SIGHUP (a closed terminal) end a run as one. Held back means recorded,
not raised, until the block ends; a signal mask would not do: onnxruntime's and torch's threads can take a
process-directed signal, and Python then runs the handler anyway.
"""
from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_publishes = 0  # outputs put in place in this process: an interrupt after one must not say the old output is there


class InterruptedAfterPublish(KeyboardInterrupt):
    """A signal arrived once the new output was in place."""


def published() -> None:
    global _publishes
    _publishes += 1


def publishes() -> int:
    return _publishes


@contextlib.contextmanager
def deferred():
    """Yields the list of signals received during the block. A signal that was ignored when the block began (SIGHUP
    under nohup) stays ignored; once one was received, all stay ignored after the block: the run is ending, and a
    second one must not cut its clean-up short."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # only the main thread can set handlers; a library caller in a thread keeps its own
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_IGN if received else handler)


def import_whole(*names: str) -> None:
    """Import packages with signals held back: a Ctrl-C inside a C extension's start-up (onnx's, onnxruntime's)
    crashed Python (SIGSEGV) or left the package half-made for the rest of the process. Raised once they are in."""
    if all(name in sys.modules for name in names):
        return
    with deferred() as received:
        for name in names:
            importlib.import_module(name)
    if received:
        raise KeyboardInterrupt
