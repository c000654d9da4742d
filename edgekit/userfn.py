"""Import user code named as `pkg.module:function` or `path/to/file.py:function`."""
from __future__ import annotations

import collections.abc
import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import threading
import warnings
import weakref
from pathlib import Path

from .errors import InputError, ascii_locale_hint, not_utf8

_READ_WEAKLY: weakref.WeakSet = weakref.WeakSet()  # one-shot iterators edgekit has read from (taking a weakref)
_READ_LOCK = threading.Lock()
MODULE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_function_spec(text: str) -> bool:
    """`pkg.mod:fn` or `file.py:fn` (as opposed to a path to data or a model file)."""
    return bool(MODULE_SPEC.match(text) or re.search(r"\.py:[A-Za-z_]\w*$", text))


class UserFunction:
    """A user's function: anything it raises (SystemExit included; Ctrl-C aside), while called or while its
    generator is iterated, is bad input naming the function, never a crash or a silent exit."""

    def __init__(self, fn, spec: str, what: str):
        self.fn, self.spec, self.what = fn, spec, what

    def __call__(self, *args, **kwargs):
        with self._guard("calling it"):
            result = self.fn(*args, **kwargs)
        if inspect.isgenerator(result):
            if inspect.getgeneratorstate(result) != inspect.GEN_CREATED:  # a notebook cell run again: other samples
                raise self._read_again("a generator")
            return self._iterate(result)
        # iter(loader), map(...): as a generator, without a state to tell it was read
        if one_shot(result) and not _first_read(result):
            raise self._read_again(f"an iterator ({type(result).__name__})")
        return result

    def _read_again(self, what: str) -> InputError:
        return InputError(f"{self.what} {self.spec!r}: {what} that was already read from (by an earlier call?) gives "
                          "other items each time: give the iterable itself (a DataLoader, a list) or a function that "
                          "makes a new one at each call")

    def _iterate(self, generator):
        while True:
            with self._guard("iterating it"):
                try:
                    item = next(generator)
                except StopIteration:
                    return
            yield item

    @contextlib.contextmanager
    def _guard(self, doing: str):
        try:
            yield
        except (KeyboardInterrupt, InputError):
            raise
        except BaseException as e:
            detail = f"sys.exit({e.code!r})" if isinstance(e, SystemExit) else f"{type(e).__name__}: {e}"
            raise InputError(f"{self.what} {self.spec!r}: {doing} failed: {detail}") from e


def one_shot(result) -> bool:
    """An iterator known to be read once: Python's own (iter(list), map, zip, itertools') and a DataLoader's. A
    user's class may restart in __iter__ and return itself: it can be read again."""
    module = type(result).__module__
    return isinstance(result, collections.abc.Iterator) and (module in ("builtins", "itertools")
                                                            or module.startswith("torch.utils.data."))


def _first_read(iterator) -> bool:
    """True the first time edgekit is handed this iterator, marking it read; one taking no weakref (Python's own:
    iter(list), map, zip) is told by its state instead (holding it pinned its data for the life of the process), and
    by the iterators it reads that take one (a map over a user's iterator), marked read in its place."""
    with _READ_LOCK:
        try:
            if iterator in _READ_WEAKLY:
                return False
            _READ_WEAKLY.add(iterator)
            return True
        except TypeError:
            inner: list = []
            if _was_read(iterator, inner) or any(p in _READ_WEAKLY for p in inner):
                return False
            for p in inner:
                _READ_WEAKLY.add(p)
            return True


def _was_read(iterator, inner: list) -> bool:
    """Whether one of Python's iterators was read from, by the state it pickles: a sequence's iterator its place
    past the start, a map, zip, islice, cycle or chain that of an iterator it reads (a generator's own state). One
    whose state says nothing (a dict's, iter(fn, end), any on a Python without itertools' pickling) is unread, as is
    one read to its end (it gives no items, which is said anyway). The iterators it reads that take a weakref are
    added to `inner`."""
    if inspect.isgenerator(iterator):
        return inspect.getgeneratorstate(iterator) != inspect.GEN_CREATED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # itertools' pickling, deprecated in Python 3.12
        try:
            made, args, *state = iterator.__reduce__()
        except Exception:
            return False
    if made is iter and state and isinstance(state[0], int):
        return state[0] > 0
    parts = [p for p in (*args, *(p for s in state for p in (s if isinstance(s, tuple) else (s,))))
             if isinstance(p, collections.abc.Iterator) and p is not iterator]
    for p in parts:
        try:
            weakref.ref(p)
            inner.append(p)
        except TypeError:
            pass
    return any(_was_read(p, inner) for p in parts)


def resolve_callable(spec: str, what: str) -> UserFunction:
    """The function, guarded; user code that fails to import is bad input, named with its error."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise InputError(f"{what} {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    if target.endswith(".py"):
        module = _import_file(Path(target), spec, what)
    else:
        try:
            _on_path(os.getcwd())  # as `python -m` does: modules beside the user's cwd import
            module = importlib.import_module(target)
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            raise InputError(f"{what} {spec!r}: cannot import {target!r}: {type(e).__name__}: {e}") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise InputError(f"{what} {spec!r}: {target!r} has no function {attr!r}")
    return UserFunction(fn, spec, what)


def _import_file(path: Path, spec: str, what: str):
    if not path.exists():
        raise InputError(f"{what} {spec!r}: no such file {path}")
    from .arrays import regular_file

    regular_file(path, f"{what} {spec!r}")  # a FIFO or a folder was "no such file"
    path = path.resolve()
    if shown := not_utf8(str(path)):  # torch's exporter records the code's file names as UTF-8: it was exit 5
        raise InputError(f"{what} {shown!r}: not a UTF-8 path, which torch's exporter needs of the code it traces "
                         f"(rename the file or folder){ascii_locale_hint(str(path))}")
    stat = path.stat()  # an edited file (a notebook's next call) is imported afresh; an unchanged one is reused
    name = "edgekit_user_" + hashlib.sha1(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up (a returned model is pickled later)
    _on_path(str(path.parent))  # let the file import its neighbours
    try:
        module_spec.loader.exec_module(module)
    except KeyboardInterrupt:
        del sys.modules[name]
        raise
    except BaseException as e:
        del sys.modules[name]
        raise InputError(f"{what} {spec!r}: importing {path.name} failed: {type(e).__name__}: {e}") from e
    return module


_ADDED: list[str] = []  # folders edgekit put on sys.path for user code


def _on_path(folder: str) -> None:
    """`folder` first on sys.path for user code: while it imports and while it runs (a function may import
    its neighbours when called); `user_code_scope()` takes it off at the end of a run."""
    if folder not in sys.path:
        sys.path.insert(0, folder)
        _ADDED.append(folder)


@contextlib.contextmanager
def seeded(seed: int, torch_model: bool = False):
    """User code (a model built without weights, a data function) sees the same global random state every
    run; the caller's random state is restored afterwards. torch's too once imported (signals.import_for imports
    it for a torch model: a model built without weights had other weights each run), or imported here for a
    `torch_model` (prune, share, distill: the user's module would import it after the seeding)."""
    import random

    import numpy as np

    py_state, state = random.getstate(), np.random.get_state()
    random.seed(seed)  # a data function shuffling with `random` gives the same calibration set every run
    np.random.seed(seed)
    torch = importlib.import_module("torch") if torch_model else sys.modules.get("torch")
    torch_state = torch.random.get_rng_state() if torch else None
    if torch:
        torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(state)
        if torch_state is not None:
            torch.random.set_rng_state(torch_state)


@contextlib.contextmanager
def user_code_scope():
    """The folders edgekit puts on sys.path for user code inside the block are taken off after it (what came
    before stays)."""
    paths = len(_ADDED)
    try:
        yield
    finally:
        while len(_ADDED) > paths:
            folder = _ADDED.pop()
            if folder in sys.path:
                sys.path.remove(folder)
