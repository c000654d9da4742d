"""Progress on a terminal only (bars; with -v each stage's wall time as it ends); CI logs and --json output stay
clean. Stage times never reach a manifest: the same inputs write the same bytes."""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("edgekit")


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


class Laps:
    """Wall time between marks, each lap to the stage it ended (a stage met twice adds up): one line at each stage
    boundary of a straight-line pipeline, where `with` blocks would re-indent it. -v logs each lap as it ends."""

    def __init__(self, prefix: str = ""):
        self.prefix, self.seconds, self.at = prefix, {}, time.perf_counter()

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        lap, self.at = now - self.at, now
        self.seconds[stage] = self.seconds.get(stage, 0.0) + lap
        log.info("%s%s: %.2f s", self.prefix, stage, lap)


@dataclass(frozen=True)
class Timings:
    """One export's stage wall times in seconds (shared stages, then each target's), and where they were measured:
    on the Python API's ExportReport and printed by `export --timings`, never serialized into a package."""

    where: str  # this host's CPU, usable cores and the threads edgekit's own float work ran at
    shared: dict[str, float] = field(default_factory=dict)
    targets: dict[str, dict[str, float]] = field(default_factory=dict)
    total: float = 0.0
    threads: dict[str, int | None] = field(default_factory=dict)  # each target's int8 runs' (its profile's)

    def line(self) -> str:
        """A few lines: `timings (wall s, on CPU ...): load 1.20, ...` then one per target and the total."""
        def stages(seconds: dict[str, float]) -> str:
            return ", ".join(f"{name} {s:.2f}" for name, s in seconds.items())
        return "\n".join([f"timings (wall s; {self.where}):", f"  {stages(self.shared)}",
                           *(f"  {name} (int8 at {self.threads.get(name) or '?'} thread(s)): {stages(t)}"
                             for name, t in self.targets.items()),
                           f"  total {self.total:.2f}"])


def host_where() -> str:
    """Where stage times are measured: the CPU, the cores this process may use, edgekit's float work threads (each
    target's int8 threads are said on its own line)."""
    from .host import cpu_model, work_threads
    from .runner import usable_cores

    return f"{cpu_model()}, {usable_cores()} usable core(s), float work at {work_threads()} thread(s)"
