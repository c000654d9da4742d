"""Time limits on work the main thread cannot cut short itself (onnxruntime's runs): one thread calls each
limit's function once its time is up, while the work goes on."""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def within(seconds: float, expired: Callable[[], None]):
    """`expired` is called (on the watching thread) `seconds` from now, unless the block has ended first."""
    global _watcher
    with _cond:
        if _watcher is None or not _watcher.is_alive():
            _watcher = threading.Thread(target=_watch, daemon=True, name="edgekit-deadlines")
            _watcher.start()
        key, at = next(_keys), time.monotonic() + seconds
        if at < _wakes_at:
            _cond.notify()
        _due[key] = (at, expired)
    try:
        yield
    finally:
        with _cond:
            _due.pop(key, None)
