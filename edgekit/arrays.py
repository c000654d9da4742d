"""Bounded .npy/.npz reading: names and declared sizes are checked before any array is loaded.

Files from others are hostile: an .npz can hold an unused 4 GiB member, or a 200-byte header that
declares 10^12 elements (numpy would allocate first and fail later). Here the zip directory and
each .npy header are read first; only wanted members are loaded, and only when their declared size
fits both the caller's byte budget and what the file really holds.
"""
from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from .config import DEFAULT_MAX_DATA_BYTES as DEFAULT_MAX_BYTES  # per data source; --max-data-bytes raises it
from .errors import InputError


def regular_file(path: Path, what: str = "") -> Path:
    """Refuse FIFOs, devices and sockets (reading one would hang or never end) before opening."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise InputError(f"{what or path}: cannot read ({e.strerror})") from e
    if not stat.S_ISREG(mode):
        raise InputError(f"{what or path}: not a regular file")
    return path


def read_npz(path: Path, wanted: Callable[[str], bool], max_bytes: int = DEFAULT_MAX_BYTES,
             describe: Callable[[list[str]], str] | None = None) -> dict[str, np.ndarray]:
    """The members `wanted` accepts, loaded after every header was checked; any other member is an error
    (named by `describe`) before a byte of array data is read."""
    regular_file(path)
    try:
        with zipfile.ZipFile(path) as z:
            members = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i for i in z.infolist()}
            unexpected = sorted(n for n in members if not wanted(n))
            if unexpected:
                raise InputError(f"{path}: {describe(unexpected) if describe else f'unexpected arrays {unexpected}'}")
            headers = {}
            budget = max_bytes
            for name, info in members.items():
                with z.open(info) as f:
                    headers[name] = _header(f, path, name)
                declared = headers[name][0]
                if declared > info.file_size:
                    raise InputError(f"{path}: array {name!r} declares {declared} bytes but holds {info.file_size}")
                budget -= declared
                if budget < 0:
                    raise InputError(f"{path}: arrays declare more than {max_bytes} bytes (--max-data-bytes)")
            arrays = {}
            for name, info in members.items():
                with z.open(info) as f:
                    arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
            return arrays
    except InputError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, NotImplementedError) as e:
        raise InputError(f"{path}: cannot read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


def read_npy(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    regular_file(path)
    try:
        with open(path, "rb") as f:
            declared = _header(f, path, path.name)[0]
            if declared > os.fstat(f.fileno()).st_size:
                raise InputError(f"{path}: declares {declared} bytes but holds {os.fstat(f.fileno()).st_size}")
            if declared > max_bytes:
                raise InputError(f"{path}: declares {declared} bytes, more than {max_bytes} (--max-data-bytes)")
            f.seek(0)
            return np.lib.format.read_array(f, allow_pickle=False)
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: cannot read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


def _header(f, path: Path, name: str) -> tuple[int, tuple[int, ...], np.dtype]:
    """(declared data bytes, shape, dtype) from an .npy header; object arrays are refused (they are pickles)."""
    try:
        version = np.lib.format.read_magic(f)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(f))
    except (ValueError, EOFError) as e:
        raise InputError(f"{path}: array {name!r} has no valid .npy header ({e})") from e
    if dtype.hasobject:
        raise InputError(f"{path}: array {name!r} holds Python objects (a pickle), not numbers")
    return int(np.prod(shape, dtype=object)) * dtype.itemsize, shape, dtype
