"""The signals that end a run, held back where being cut short would do harm.

SIGINT (Ctrl-C), SIGTERM (CI's cancel) and SIGHUP (a closed terminal) end a run as one. Held back means recorded,
not raised, until the block ends; a signal mask would not do: onnxruntime's and torch's threads can take a
process-directed signal, and Python then runs the handler anyway.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
RECEIVED: list[int] = []  # by the program's handler: what fails after one (an import, a storage call) is the signal
_publishes = 0  # outputs put in place in this process: an interrupt after one must not say the old output is there


class InterruptedAfterPublish(KeyboardInterrupt):
    """A signal arrived once the new output was in place."""


def published() -> None:
    global _publishes
    _publishes += 1


def publishes() -> int:
    return _publishes


def _ignored(signum, frame) -> None:
    """SIG_IGN without its race: a signal that arrives while SIG_IGN is being set is still run, and Python prints
    "Signal 15 ignored due to race condition" (the parent's SIGTERM to a search worker Ctrl-C had stopped)."""


def final() -> None:
    """The program's outcome is decided: from here to its exit, no signal (nor never_swallowed's timer) may end it.
    SIG_IGN, not _ignored: Python resets its own handlers to the default during shutdown."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    for s in (*SIGNALS, signal.SIGALRM):
        signal.signal(s, signal.SIG_IGN)


def ignore() -> None:
    """The run is ending: a second signal must not cut its clean-up short (or print a traceback). SIGHUP under
    nohup stays SIG_IGN."""
    for s in SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, _ignored)


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
        if handler not in (signal.SIG_IGN, _ignored):
            signal.signal(s, lambda signum, frame: (received.append(signum), _HELD.append(signum)))
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, _ignored if received and handler is not signal.SIG_IGN else handler)


def stop(signum, frame) -> None:
    """The handler that ends a run as Ctrl-C does (KeyboardInterrupt), its clean-up run: the CLI's for SIGINT,
    SIGTERM and SIGHUP, the API's for those whose disposition is the default (cleaned_up_before_dying)."""
    RECEIVED.append(signum)
    ignore()
    raise KeyboardInterrupt


@contextlib.contextmanager
def cleaned_up_before_dying():
    """A library call: a signal that would kill the process at once (SIGTERM, SIGHUP at their default) left its stage
    folder and lock in OUT. Meanwhile it is `stop`'s, so the call cleans up as the CLI's runs do; then, the default
    put back, it is sent again and the process dies of it as it would have (exit 143). A handler the caller set
    (Python's own KeyboardInterrupt for SIGINT too) and SIG_IGN are theirs: left alone. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    default = [s for s in SIGNALS if signal.getsignal(s) == signal.SIG_DFL]
    received, held = len(RECEIVED), len(_HELD)
    for s in default:
        signal.signal(s, stop)
    try:
        yield
    finally:
        came = [s for s in (*RECEIVED[received:], *_HELD[held:]) if s in default]  # held: by deferred()
        for s in default:
            signal.signal(s, signal.SIG_DFL)
        if came:
            os.kill(os.getpid(), came[0])


HEAVY = ("onnx", "onnxruntime", "torch")  # with C extensions that cannot load twice: imported by import_for
_TORCH_COMMANDS = {"prune", "distill", "share", "search"}  # export: a torch model's (pipeline.run); the rest none
_NO_IMPORTS = {"targets", "emulator"}


def import_for(command: str, torch: bool = False) -> None:
    """What `command` (the CLI's, or the API's function of that name) runs on, imported whole before any work:
    onnx and onnxruntime, and torch for those that take a torch model (or `torch`). Imported later with signals live,
    a Ctrl-C in torch's start-up left it half-made for the rest of the process (SystemError "bad call flags", a
    segfault at exit)."""
    if command not in _NO_IMPORTS:
        import_whole(*(HEAVY if torch or command in _TORCH_COMMANDS else HEAVY[:2]))


def import_whole(*names: str) -> None:
    """Import packages with signals held back: a Ctrl-C inside a C extension's start-up (onnx's, onnxruntime's)
    crashed Python (SIGSEGV) or left the package half-made for the rest of the process. Raised once they are in.
    One that an earlier import cut short (the caller's own) cannot load again: a StageError, not SystemError."""
    if all(name in sys.modules for name in names):
        return
    with deferred() as received:
        for name in names:
            _import(name)
    if received:
        raise KeyboardInterrupt


def _import(name: str) -> None:
    """Its submodules loaded without it are an import cut short: torch imported again then lacked `torch._utils`,
    or failed ("bad call flags", "partially initialized module 'torch' has no attribute 'library')."""
    from .errors import StageError

    if name not in sys.modules and any(m.startswith(f"{name}.") for m in sys.modules):
        raise StageError("import", f"{name} cannot be imported in this Python process: its first import was cut "
                                   "short (Ctrl-C?) and its C extension cannot load twice; restart Python")
    importlib.import_module(name)  # any other failure is the install's, said as it is (a missing libonnxruntime.so)


GRACE_ENV = "EDGEKIT_STOP_GRACE_S"  # seconds a stopped program has to end before it is ended without clean-up
GRACE_S = 15.0
_HELD: list[int] = []  # signals deferred() held back: the main thread took them, in Python


def grace(strict: bool = False) -> float:
    """GRACE_ENV's seconds, else GRACE_S; a bad value is GRACE_S, or with `strict` (host.check_overrides, before
    any work) a UsageError: "abc" was a traceback, and 0 or -1 ended every Ctrl-C at once or never."""
    given = os.environ.get(GRACE_ENV, "").strip()
    try:
        found = float(given or GRACE_S)
    except ValueError:
        found = -1.0
    if 0 < found < float("inf"):
        return found
    if strict:
        from .errors import UsageError

        raise UsageError(f"{GRACE_ENV}={given!r} is not a positive number of seconds")
    return GRACE_S


def stopped_even_inside_c(said: str, after_publish: str = "") -> None:
    """Python runs a signal's handler between bytecodes only: a signal that came while onnxruntime ran a hostile
    model's endless Loop (after a first run that behaved) was never handled, and SIGTERM and Ctrl-C were ignored for
    good. Python's wakeup fd tells a thread of each signal at once; when the main thread has not taken it (no
    handler ran: RECEIVED and _HELD empty) grace() seconds later, the program is ended as `kill -9` would end it
    (its lock goes with the process; the next run clears its stage), saying `said` (`after_publish` once its new
    output was in place), if anything. A program whose handler ran is cleaning up, in Python: it is left to it (a
    search waiting for its workers). For a process's own program only: this takes the wakeup fd. It cannot help
    while C code holds the GIL (onnxruntime's runs release it)."""
    import time

    seconds = grace()
    read, write = os.pipe()
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)

    def watch() -> None:
        while os.read(read, 1)[0] not in SIGNALS:  # SIGALRM (never_swallowed's timer) is no stop
            pass
        time.sleep(seconds)
        if RECEIVED or _HELD:
            return
        if line := after_publish if _publishes and after_publish else said:
            os.write(2, f"{line} (a run did not stop within {seconds:g} s: ended without its clean-up)\n".encode())
        os._exit(130)

    threading.Thread(target=watch, daemon=True, name="edgekit-stop").start()


def never_swallowed(handler) -> None:
    """Python prints and drops what a __del__ or a weakref callback raises, and the garbage collector runs them
    anywhere: `handler`'s KeyboardInterrupt landing in one was lost (a search exited 0 after SIGTERM). Such an
    interrupt is delivered again, as SIGTERM through `handler`, once the code around it runs. For a process's own
    program only: this replaces sys.unraisablehook and SIGALRM's handler."""
    previous = sys.unraisablehook

    def again(*_) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)
            return
        try:
            signal.signal(signal.SIGTERM, handler)  # the first delivery left every signal ignored
            signal.signal(signal.SIGALRM, again)  # raised at once (os.kill, interrupt_main), it is dropped here too
            signal.setitimer(signal.ITIMER_REAL, 0.01)
        except KeyboardInterrupt:  # the timer came before this hook was left
            hook(unraisable)

    sys.unraisablehook = hook
