"""Bounded .npy/.npz reading: names and declared sizes are checked before any array is loaded.

Files from others are hostile: an .npz can hold an unused 4 GiB member, or a 200-byte header that
declares 10^12 elements (numpy would allocate first and fail later). Here the zip directory and
each .npy header are read first; only wanted members are loaded, and only when their declared size
fits both the caller's byte budget and what the file really holds.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import tokenize
import zipfile
import weakref
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

from .config import DEFAULT_MAX_DATA_BYTES as DEFAULT_MAX_BYTES  # per data source; --max-data-bytes raises it
from .errors import InputError, few


# what a corrupt or crafted zip/.npy raises inside zipfile, zlib and numpy's header parser
READ_ERRORS = (ValueError, OSError, zipfile.BadZipFile, EOFError, NotImplementedError, zlib.error, RuntimeError,
               tokenize.TokenError, SyntaxError, OverflowError, MemoryError)
MAX_HEADER_BYTES = 1 << 16  # an .npy header is ~128 bytes; numpy itself refuses more than 10,000 after reading it


def regular_file(path: Path, what: str = "") -> Path:
    """Refuse FIFOs, devices and sockets (reading one would hang or never end) before opening."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise InputError(f"{what or path}: cannot read ({e.strerror})") from e
    if not stat.S_ISREG(mode):
        raise InputError(f"{what or path}: not a regular file")
    return path


class TooLarge(InputError):
    """Data that declares more bytes than the budget it was read with (--max-data-bytes)."""


def read_npz(path: Path, wanted: Callable[[str], bool], max_bytes: int = DEFAULT_MAX_BYTES,
             describe: Callable[[list[str], list[str]], str] | None = None, max_rows: int | None = None,
             lazy: bool = False, same_rows: bool = False, limit: str = "--max-data-bytes",
             axis_of: Callable[[str, int], int] | None = None,
             max_entries: int | None = None) -> dict[str, np.ndarray | RowFile]:
    """The members `wanted` accepts, loaded after every header was checked; any other member is an error
    (named by `describe`, given those and the members there) before a byte of array data is read. `max_rows`: only
    the first rows along the first axis are read (the samples a run will use). `lazy`: C-order members come back
    as RowFiles. `same_rows`: every member declares as many rows (samples and their labels: a count read only up to
    `max_rows` hid a mismatch, and every label after a missing one was another sample's). `axis_of(name, ndim)`: the
    axis a member's rows lie along, if not the first (x:TxNx40's N: its RowFile's rows are along it).
    `max_entries`: see open_zip."""
    regular_file(path)
    try:
        with open(path, "rb") as raw, open_zip(raw, path, max_entries) as z:
            members = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i for i in z.infolist()}
            unexpected = sorted(n for n in members if not wanted(n))
            if unexpected:
                why = describe(unexpected, sorted(members)) if describe else f"unexpected arrays {few(unexpected)}"
                raise InputError(f"{path}: {why}")
            budget, rows, axes = max_bytes, {}, {}
            for name, info in members.items():
                with z.open(info) as f:
                    header = _header(f, path, name)
                if header[0] > info.file_size:
                    raise InputError(f"{path}: array {name!r} declares {header[0]} bytes but holds {info.file_size}")
                axes[name] = axis_of(name, len(header[1])) if axis_of and header[1] else 0
                budget -= _row_bytes(header, max_rows, axes[name], lazy)
                if budget < 0:
                    raise TooLarge(f"{path}: arrays declare more than {max_bytes} bytes ({limit})")
                rows[name] = header[1][axes[name]] if header[1] else None
            if same_rows and len(set(rows.values())) > 1:
                raise InputError(f"{path}: its arrays hold different numbers of samples "
                                 f"({', '.join(f'{n} {r}' for n, r in rows.items())})")
            arrays = {}
            for name, info in members.items():
                with z.open(info) as f:
                    header = _header(f, path, name)
                    arrays[name] = (RowFile(path, info.filename, header, max_rows, axes[name],
                                            info.compress_type != zipfile.ZIP_STORED)
                                    if lazy and _by_rows(header) else _read_rows(f, header, max_rows, axes[name]))
            return arrays
    except READ_ERRORS as e:
        raise InputError(f"{path}: cannot read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


def npz_headers(path: Path, small: Callable[[str], bool], most: int,
                max_entries: int | None = None) -> dict[str, np.ndarray | tuple]:
    """Each member's (shape, dtype) from its .npy header alone, not a byte of its data read (a deflate bomb's 1 GB
    of zeros is 1 MB on disk); the members `small` accepts (a count, a list of names) read, each declaring at most
    `most` bytes. `max_entries`: see open_zip."""
    regular_file(path)
    try:
        with open(path, "rb") as raw, open_zip(raw, path, max_entries) as z:
            found = {}
            for info in z.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with z.open(info) as f:
                    header = _header(f, path, name)
                    if small(name) and header[0] > most:
                        raise InputError(f"{path}: array {name!r} declares {header[0]} bytes (at most {most})")
                    found[name] = _read_rows(f, header, None) if small(name) else (tuple(header[1]), header[3])
            return found
    except READ_ERRORS as e:
        raise InputError(f"{path}: cannot read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


def open_zip(raw, path: Path, max_entries: int | None = None) -> zipfile.ZipFile:
    """The zip in the open file `raw`, whose directory lists at most `max_entries` entries (None: any), counted
    before zipfile reads the directory whole (200,000 empty entries in a golden file took check 11 s and 243 MB to
    refuse), and no array twice (np.load keeps the last of two, another reader the first), `x` and `x.npy` being
    one (np.load reads `x`, read_npz kept the last)."""
    if max_entries is not None:
        _entries_at_most(raw, path, max_entries)
    z = zipfile.ZipFile(raw)
    seen = set()
    for name in (i.filename for i in z.infolist()):
        if (array := name.removesuffix(".npy")) in seen:
            z.close()
            raise InputError(f"{path}: holds an entry {name[:80]!r} twice")
        seen.add(array)
    return z


ZIP_DIRECTORY_RECORD = 46  # the fixed part of a zip central directory record, before its name, extra and comment


def _entries_at_most(raw, path: Path, most: int) -> None:
    """Refuse a zip whose end record declares, or whose directory holds, more than `most` entries: the directory
    is walked record by record from where zipfile reads it, at most `most` + 1 records (its declared count can lie:
    zipfile reads every record its directory's size holds). The end record is found by zipfile's own (private)
    _EndRecData, not a reading of ours: the records counted must be the ones zipfile then reads, and a reader of our
    own that looked for the end record (behind a comment, a zip64 locator) otherwise than it does would count a
    decoy directory (the tests of max_entries fail where a Python changes it)."""
    end = zipfile._EndRecData(raw)
    if not end:
        raise zipfile.BadZipFile("File is not a zip file")
    if end[zipfile._ECD_ENTRIES_TOTAL] > most:
        raise InputError(f"{path}: its zip directory lists {end[zipfile._ECD_ENTRIES_TOTAL]} entries (at most {most})")
    size, start = end[zipfile._ECD_SIZE], end[zipfile._ECD_LOCATION] - end[zipfile._ECD_SIZE]
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
        start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    raw.seek(max(start, 0))
    walked = count = 0
    while walked < size:
        record = raw.read(ZIP_DIRECTORY_RECORD)
        if len(record) < ZIP_DIRECTORY_RECORD or record[:4] != zipfile.stringCentralDir:
            break  # not a directory zipfile reads either: it says why
        count += 1
        if count > most:
            raise InputError(f"{path}: its zip directory holds more than {most} entries")
        rest = sum(struct.unpack("<HHH", record[28:34]))
        raw.seek(rest, io.SEEK_CUR)
        walked += ZIP_DIRECTORY_RECORD + rest
    raw.seek(0)


def runs_from(text: str, count: int | None, max_entries: int | None) -> list[dict[str, np.ndarray]]:
    """Outputs a runner sent back (`runner.encode`: base64 .npz of `<i>.<name>`) from a device or an emulator,
    read as a file from others: no pickles, exactly `count` runs (None: runs 0..n-1), and no more array bytes than
    the answer's own size (the runner never compresses: 2 MB of deflated zeros declared 2 GiB and took it).
    `max_entries`: the runs asked times the outputs each gives back (zipfile reads a directory whole: 1M empty
    entries, within the answer's size cap, took ~1 GB); None only for this host's own runner."""
    import base64
    import binascii
    import re
    import tempfile

    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(f"its outputs are not base64 ({e})") from None
    key = re.compile(r"(0|[1-9][0-9]{0,8})\.(.+)", re.S)
    with tempfile.TemporaryDirectory(prefix="edgekit-answer-") as tmp:
        path = Path(tmp) / "outputs.npz"
        path.write_bytes(blob)
        try:
            found = read_npz(path, lambda n: key.fullmatch(n) is not None, len(blob),
                             lambda extra, _: f"an entry {extra[0][:80]!r} is not <run>.<output>",
                             max_entries=max_entries)
        except InputError as e:
            raise InputError(f"its outputs: {str(e).replace(f'{path}: ', '')}") from None
    runs: dict[int, dict] = {}
    for name, value in found.items():
        index, output = key.fullmatch(name).groups()
        runs.setdefault(int(index), {})[output] = value
    if sorted(runs) != list(range(len(runs) if count is None else count)):
        raise InputError(f"its outputs are for runs {few(sorted(runs), 4)}, not the {count or 'contiguous'} asked")
    return [runs[i] for i in sorted(runs)]


def read_npy(path: Path, max_bytes: int = DEFAULT_MAX_BYTES, max_rows: int | None = None,
             lazy: bool = False, axis_of: Callable[[int], int] | None = None) -> np.ndarray | RowFile:
    """The array of an .npy file; as read_npz reads a member (`axis_of(ndim)`: the axis its rows lie along)."""
    regular_file(path)
    try:
        with open(path, "rb") as f:
            header = _header(f, path, path.name)
            declared, held = header[0], os.fstat(f.fileno()).st_size - f.tell()  # after the header
            if declared > held:
                raise InputError(f"{path}: declares {declared} bytes of data but holds {held}")
            axis = axis_of(len(header[1])) if axis_of and header[1] else 0
            if (charged := _row_bytes(header, max_rows, axis, lazy)) > max_bytes:  # all, or the samples to be read
                what = (f"declares {declared} bytes" if charged == declared else
                        f"its first {min(max_rows, header[1][axis])} samples hold {charged} bytes")
                raise TooLarge(f"{path}: {what}, more than {max_bytes} (--max-data-bytes)")
            if lazy and _by_rows(header):
                return RowFile(path, None, header, max_rows, axis)
            return _read_rows(f, header, max_rows, axis)
    except READ_ERRORS as e:
        raise InputError(f"{path}: cannot read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


def _header(f, path: Path, name: str) -> tuple[int, tuple[int, ...], bool, np.dtype]:
    """(declared data bytes, shape, fortran order, dtype) from an .npy header, leaving `f` at the data;
    object arrays are refused (they are pickles)."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:  # numpy reads a 2.0 header's declared length (up to 4 GiB) before it checks it
            length = f.read(4)
            declared = int.from_bytes(length, "little")
            if declared > MAX_HEADER_BYTES:
                raise InputError(f"{path}: array {name!r} declares a {declared}-byte .npy header "
                                 f"(limit {MAX_HEADER_BYTES})")
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(io.BytesIO(length + f.read(declared)))
    except (ValueError, EOFError) as e:
        raise InputError(f"{path}: array {name!r} has no valid .npy header ({e})") from e
    except (MemoryError, RecursionError) as e:  # Python's parser on 9,000 minus signs: "cannot read (MemoryError: )"
        raise InputError(f"{path}: array {name!r} has no valid .npy header (too deeply nested for Python's parser: "
                         f"{type(e).__name__})") from e
    if dtype.hasobject:
        raise InputError(f"{path}: array {name!r} holds Python objects (a pickle), not numbers")
    if any(d < 0 for d in shape):
        raise InputError(f"{path}: array {name!r} declares a negative dimension {list(shape)}")
    return int(np.prod(shape, dtype=object)) * dtype.itemsize, shape, fortran, dtype


def _row_bytes(header, max_rows: int | None, axis: int = 0, lazy: bool = False) -> int:
    """What reading an array will hold: only the first rows (along `axis`) of a C-order array, all of a Fortran one
    or of one read whole to take rows along a later axis."""
    declared, shape, fortran, _ = header
    if not max_rows or not shape or fortran or axis and not lazy:
        return declared
    return declared // max(shape[axis], 1) * min(shape[axis], max_rows)


def _read_rows(f, header, max_rows: int | None, axis: int = 0) -> np.ndarray:
    """The array data after its header: all of it, or only the first `max_rows` rows of a C-order array; the array
    keeps its layout, cut to `max_rows` along `axis`."""
    declared, shape, fortran, dtype = header
    if max_rows and shape and not fortran and not axis:
        shape = (min(shape[0], max_rows), *shape[1:])
    array = np.empty(int(np.prod(shape, dtype=object)), dtype)
    if (f.readinto(memoryview(array).cast("B")) if array.size else 0) < array.nbytes:  # read once, in place
        raise InputError("array data ends before its declared size")
    # a Fortran-order array's rows are spread over the whole file: read whole, keep the rows asked for
    whole = array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
    if (fortran or axis) and max_rows and max_rows < shape[axis]:
        return np.ascontiguousarray(whole[(slice(None),) * axis + (slice(max_rows),)])
    return whole


def _by_rows(header) -> bool:
    """Rows of a C-order array with a first axis lie one after another in the file: they can be read one at a time."""
    return bool(header[1]) and not header[2]


MAX_OPEN = 64  # RowFiles with a file open at once; the least recently read is closed first
# rows along a later axis are read this many bytes of them at a time: one by one, a (2500, 1000, 40) file's rows
# took 2500 reads each (13.7 s for all; read whole: 0.6 s and 797 MB)
READ_AHEAD_BYTES = 4 << 20


class RowFile:
    """The rows (along the first axis, or `axis`) of a C-order array in an .npy file or an .npz member, read when
    asked for: a calibration file of 4096 images costs the memory of the rows in use, not of the file. Rows read in
    order cost one read each (along a later axis, one per index of the axes before it); in a compressed member an
    earlier row re-reads the member from its start, so along a later axis (`packed`) all its rows are read at once.
    Its shape is the rows' axis first, then the others in order."""

    def __init__(self, path: Path, member: str | None, header, max_rows: int | None = None, axis: int = 0,
                 packed: bool = False):
        _, shape, _, self.dtype = header
        self.path, self.member, self._header, self._packed = path, member, header, packed and axis > 0
        along = shape[axis]
        self.shape = (min(along, max_rows) if max_rows else along, *shape[:axis], *shape[axis + 1:])
        self.ndim = len(shape)
        self._outer, self._along = tuple(shape[:axis]), along  # x:TxNx40 by N: (T,), N
        self._row_bytes = int(np.prod(shape[axis + 1:], dtype=object)) * self.dtype.itemsize  # one row per outer
        self._file = self._zip = None
        self._ahead = (0, ())  # (first row, rows read ahead of use: along a later axis)
        self._all = None  # every row, when packed

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        if not self._outer or self._packed:
            return self.rows(i, i + 1)[0]
        first, ahead = self._ahead
        if not first <= i < first + len(ahead):
            row_bytes = self._row_bytes * int(np.prod(self._outer, dtype=object))
            self._ahead = first, ahead = i, self.rows(i, i + max(1, READ_AHEAD_BYTES // max(row_bytes, 1)))
        return ahead[i - first].copy()  # a copy: a row kept does not keep the rows read with it

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 as a new array; a file changed or cut short since it was checked is an InputError.
        Packed: all the rows charged, decompressed in one pass (a (1000, 1000, 40) member's 1000 samples took 41.8 s
        in 4 MiB blocks, each decompressing the member from its start)."""
        if self._packed:
            if self._all is None:
                self._all = self._read(0, len(self))
            return self._all[start:stop].copy()
        return self._read(start, stop)

    def _read(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, len(self))
        where = f"{self.path}" + (f" member {self.member}" if self.member else "")
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        try:
            f = self._open(where)
            _OPEN[id(self)] = weakref.ref(self)  # weak: a RowFile no one holds closes its file when it goes
            _OPEN.move_to_end(id(self))
            while len(_OPEN) > MAX_OPEN:  # a folder of thousands of one-sample files must not exhaust the fds
                if (oldest := _OPEN.popitem(last=False)[1]()) is not None:
                    oldest.close()
            got = self._read_into(f, out, start) if out.size else 0
        except READ_ERRORS as e:
            raise InputError(f"{where}: cannot read ({type(e).__name__}: {e})") from e
        if got < out.nbytes:
            raise InputError(f"{where}: the file ends before row {stop - 1} (changed since it was checked?)")
        return out

    def _read_into(self, f, out: np.ndarray, start: int) -> int:
        """Reads rows from `start` into `out`; the bytes read (fewer than it holds: the file ends early). Along a
        later axis, a block of rows per index of the axes before it: (T, N, 40)'s T reads of the rows wanted."""
        if not self._outer:
            f.seek(self._start + start * self._row_bytes)
            return f.readinto(memoryview(out.reshape(-1)).cast("B"))
        block = np.empty((len(out), *self.shape[1 + len(self._outer):]), self.dtype)
        for i, index in enumerate(np.ndindex(*self._outer)):
            f.seek(self._start + (i * self._along + start) * self._row_bytes)
            if f.readinto(memoryview(block.reshape(-1)).cast("B")) < block.nbytes:
                return 0
            out[(slice(None), *index)] = block
        return out.nbytes

    def _open(self, where: str):
        if self._file is None:
            if self.member is None:
                f = open(self.path, "rb")
            else:
                self._zip = zipfile.ZipFile(self.path)
                f = self._zip.open(self.member)
            if _header(f, self.path, where) != self._header:
                f.close()
                raise InputError(f"{where}: changed since it was checked")
            self._file, self._start = f, f.tell()
        return self._file

    def close(self) -> None:
        """Close the file; the next read opens it again and checks its header again."""
        if _OPEN is not None:  # None only while the interpreter shuts down
            _OPEN.pop(id(self), None)
        for f in (self._file, self._zip):
            if f is not None:
                f.close()
        self._file = self._zip = None
        self._ahead, self._all = (0, ()), None  # rows read before a close are read again, from the file as it is then

    __del__ = close


_OPEN: OrderedDict[int, weakref.ref] = OrderedDict()  # RowFiles with a file open, least recently read first
