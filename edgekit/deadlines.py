"""Time limits on work the main thread cannot cut short itself (onnxruntime's runs, its quantizer's Python pass): one
thread calls each limit's function once its time is up, while the work goes on."""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import threading
import time
from collections.abc import Callable

_cond = threading.Condition()
_due: dict[int, tuple[float, Callable[[], None]]] = {}
_keys = itertools.count()
_watcher: threading.Thread | None = None
_wakes_at = float("inf")  # when the watcher will look next: a later limit needs no wake-up (one a run costs 15 us)


def _watch() -> None:
    global _wakes_at
    while True:
        with _cond:
            now = time.monotonic()
            ended = [_due.pop(key)[1] for key, (at, _) in list(_due.items()) if at <= now]
            if not ended:
                _wakes_at = min((at for at, _ in _due.values()), default=float("inf"))
                _cond.wait(None if _wakes_at == float("inf") else _wakes_at - now)
        for expired in ended:  # outside the lock, and one that fails ends neither the others nor this thread
            try:
                expired()
            except Exception:
                pass


def _arm(seconds: float, expired: Callable[[], None]) -> int:
    """`expired` to be called `seconds` from now; its key, for _disarm."""
    global _watcher
    with shielded(), _cond:
        if _watcher is None or not _watcher.is_alive():
            _watcher = threading.Thread(target=_watch, daemon=True, name="edgekit-deadlines")
            _watcher.start()
        key, at = next(_keys), time.monotonic() + seconds
        if at < _wakes_at:
            _cond.notify()
        _due[key] = (at, expired)
    return key


def _disarm(key: int) -> None:
    with shielded(), _cond:
        _due.pop(key, None)


@contextlib.contextmanager
def within(seconds: float, expired: Callable[[], None]):
    """`expired` is called (on the watching thread) `seconds` from now, unless the block has ended first."""
    key = _arm(seconds, expired)
    try:
        yield
    finally:
        _disarm(key)


class Expired(BaseException):
    """Raised in a thread by `interrupted` once its time is up: a BaseException, so that onnxruntime's
    `except Exception` clauses do not take it for a failure of their own and carry on."""


RESEND = 0.1  # seconds between the Expired sent again to work that swallowed the last (a finally, an except clause)
_SEND = ctypes.pythonapi.PyThreadState_SetAsyncExc
_EXPIRED = ctypes.py_object(Expired)
_NOTHING = ctypes.c_void_p(None)  # NULL: the exception sent to the thread and not raised yet is dropped
_shielded: dict[int, int] = {}  # thread id: depth of its `shielded` blocks, only while more than 0


@contextlib.contextmanager
def shielded():
    """No Expired is raised in this thread in the block: edgekit's own critical sections (a lock held, a limit being
    registered), which an exception in the middle would leave broken (a lock never released). Put it before the
    lock, in the same `with`. One sent just before is dropped; `interrupted` sends it again after the block."""
    me = threading.get_ident()
    thread, depth = ctypes.c_ulong(me), _shielded.get(me, 0) + 1
    _shielded[me] = depth  # one bytecode (STORE_SUBSCR): from here, none is sent
    _SEND(thread, _NOTHING)  # one sent before is dropped by this call, before it could be raised (after a call)
    try:
        yield
    finally:
        if _shielded[me] == 1:
            del _shielded[me]
        else:
            _shielded[me] -= 1


class _Work:
    __slots__ = ("thread", "running", "sent", "key")

    def __init__(self):
        self.thread, self.running, self.sent, self.key = ctypes.c_ulong(threading.get_ident()), True, False, None


def interrupted(seconds: float, fn: Callable, *args, **kwargs):
    """`fn(*args, **kwargs)` in this thread, with Expired raised in it once it has run `seconds`, and again every
    RESEND seconds while it runs (code that catches it, a `finally` that loops, must not make the limit vain). Once an
    Expired was sent, this raises Expired even if fn returned (what swallowed it may have left its result
    incomplete). Pure Python work only: a long C call (a session's run) takes it when it returns.

    Nothing is raised after this returns: the sender checks `running` and sends in one run of bytecodes without a
    call (the GIL is not handed over in between), and the first bytecode of the `finally` clears `running`, the next
    call drops what was sent and not raised. Not a context manager: its __exit__ would start with a check for pending
    exceptions, where one could be raised before the block is closed, leaving it open for good."""
    work = _Work()

    def send() -> None:  # on the watching thread
        if work.running and work.thread.value not in _shielded:  # no call between this check and the send
            _SEND(work.thread, _EXPIRED)
            work.sent = True
        if work.running:
            work.key = _arm(RESEND, send)

    try:
        work.key = _arm(seconds, send)
        return fn(*args, **kwargs)
    finally:
        work.running = False
        _SEND(work.thread, _NOTHING)
        if work.key is not None:
            _disarm(work.key)
        if work.sent:
            raise Expired(f"took longer than {seconds:g} s")
