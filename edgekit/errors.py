"""Error types and exit codes: user mistakes are told apart from toolchain failures and bugs."""
from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import re
from enum import IntEnum
from typing import NamedTuple


class ExitCode(IntEnum):
    OK = 0
    GATE_FAILED = 1
    USAGE = 2
    BAD_INPUT = 3
    STAGE_FAILED = 4
    INTERNAL = 5
    NOT_DELIVERED = 6
    BUSY = 7


class EdgekitError(Exception):
    """An expected failure with a one-line message for the user (its flags named as the user gave them: as_said)."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, *args):
        super().__init__(*(as_said(plain(a)) if isinstance(a, str) else a for a in args))


class UsageError(EdgekitError):
    """Bad flags, recipe or target profile."""

    exit_code = ExitCode.USAGE


class InputError(EdgekitError):
    """Bad model, weights, data or archive."""

    exit_code = ExitCode.BAD_INPUT


class DiskFullError(InputError):
    """The disk where the output goes filled up (said or inferred): the user's to free, and no verdict on a model."""


class BusyError(EdgekitError):
    """Another edgekit run holds the output folder's lock: a conflict a CI job may retry, not a bad setting (exit 2)."""

    exit_code = ExitCode.BUSY


class NotDelivered(EdgekitError):
    """The command ran, but its result could not be given to the user (stdout closed)."""

    exit_code = ExitCode.NOT_DELIVERED


class InternalError(EdgekitError):
    """One of edgekit's own invariants broke (e.g. two models it made itself disagree in shape): a bug."""


class StageError(EdgekitError):
    """A toolchain step (export, pre-processing, quantization, ...) failed on valid input."""

    exit_code = ExitCode.STAGE_FAILED

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage} failed: {message}")
        self.stage, self.message = stage, as_said(message)


class StepTimeout(StageError):
    """A step ran past its time limit (--step-timeout): the limit the user set, not a verdict on the file, so `check`
    ends with it (exit 4) rather than failing the package (exit 1)."""


class DeviceError(StageError):
    """A step on a device over SSH failed (the link, its folder, its runner): the device's state, not a verdict
    on the model, so a search tries those values again."""


class Named(NamedTuple):
    """A setting as an error names it to a user who gave it other than by its flag: a recipe's `[prune] round_to`,
    an API keyword `round_to=`. `sep` joins the flag's value to the name (None: the name stands alone, as
    `per_channel=False` does); `form` writes the value: "raw", "str" (TOML's "a"), "list" (["a"]) or "num" (8 as is,
    auto as "auto")."""
    name: str
    sep: str | None = None
    form: str = "raw"
    choices: tuple = ()


# {flag: how the user gave that setting}: None outside the CLI (the API names its keywords: in_python_terms)
_SAID_AS: contextvars.ContextVar[dict[str, Named] | None] = contextvars.ContextVar("edgekit_errors_said_as",
                                                                                    default=None)
# a command quoted whole (`edgekit check --emulate`) or a quoted path ('my --x.npz') stays one; a flag takes the word
# after it, which rename() reads as its value when it looks like one
FLAG = re.compile(r"`[^`]*`|(?<!\w)'[^'\n]*'(?!\w)|(?<![\w/.-])(--[a-z][a-z0-9-]*)(?![\w-])"
                  r"(?: ('[^']*'|[\w.:/+|\[\]-]+))?")


@contextlib.contextmanager
def for_the_cli():
    """Errors in the block keep the CLI's flags (--force); the API gives a Python caller its keywords (force=True)."""
    token = _SAID_AS.set({})
    try:
        yield
    finally:
        _SAID_AS.reset(token)


def said_for_the_cli() -> bool:
    return _SAID_AS.get() is not None


def name_as(names: dict[str, Named]) -> None:
    """For the rest of the CLI's command, errors name these flags as the user gave the setting instead, e.g.
    {"--input": Named("[model] inputs", " = ", "list")} for a recipe's setting no flag gave."""
    if said_for_the_cli():
        _SAID_AS.set({**_SAID_AS.get(), **names})


@contextlib.contextmanager
def said_as(names: dict[str, Named]):
    """name_as for the block only (a recipe's [prune] table while it prunes)."""
    token = _SAID_AS.set(_SAID_AS.get())
    name_as(names)
    try:
        yield
    finally:
        _SAID_AS.reset(token)


def as_said(text: str) -> str:
    """`text` with each flag the user did not type named as they gave the setting: `--round-to 8` -> `[prune]
    round_to = 8`."""
    return rename(text, _SAID_AS.get() or {})


def rename(text: str, names: dict[str, Named]) -> str:
    """`text` with the flags in `names` named their way, with the word after a flag as its value only when it
    reads as one (`--weights does not apply` keeps its verb)."""
    def said(m) -> str:
        named, word = names.get(m.group(1)), m.group(2)
        if named is None:
            return m.group(0)
        if word is None:
            return named.name
        after = word[-1] if len(word) > 1 and word[-1] in ":,." and word[0] != "'" else ""  # `--out x:` ends a clause
        word = word[:len(word) - len(after)]
        value = (word in named.choices or word.lstrip("-+")[:1].isdigit() or word.isupper()
                 or any(c in word for c in "./:'|["))
        if named.sep is None or not value:
            return f"{named.name} {word}{after}"
        bare = word[1:-1] if word[0] == word[-1] == "'" and len(word) > 1 else word
        number = re.fullmatch(r"[-+]?\d[\d_]*(\.\d+)?(e[-+]?\d+)?", word) is not None
        written = word if named.form == "raw" or named.form == "num" and number else \
            f'["{bare}"]' if named.form == "list" else f'"{bare}"'
        return f"{named.name}{named.sep}{written}{after}"
    return FLAG.sub(said, text) if names else text


def few(names, most: int = 8) -> str:
    """A list of names for a one-line message: a file from others may hold thousands."""
    names = list(names)
    return str(names) if len(names) <= most else f"{names[:most]} and {len(names) - most} more"


def too_long(seconds: float, raised_by: str = "") -> str:
    """A step's time limit, said as every step says it; `raised_by`: the setting that raises it, if any."""
    return f"took longer than {seconds:g} s (the limit{f'; raise it with {raised_by}' if raised_by else ''})"


def utf8_on_disk(text: str) -> str | None:
    """`text` as the UTF-8 its bytes are, where this Python held it as surrogates (an ASCII locale: LC_ALL=C with
    UTF-8 mode off, as some CI images run); None where its bytes are no UTF-8 (another encoding's)."""
    try:
        return os.fsencode(text).decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return None


def ascii_locale_hint(text: str) -> str:
    """Why a name that is UTF-8 on disk reads as not UTF-8: "not a UTF-8 path" alone told the user to rename a UTF-8
    name. "" for a name whose bytes are not UTF-8."""
    if utf8_on_disk(text) is None:
        return ""
    return " (its bytes are UTF-8, read in an ASCII locale: run with PYTHONUTF8=1 or a UTF-8 locale, e.g. " \
        "LC_ALL=C.UTF-8)"


def not_utf8(text: str) -> str | None:
    """`text` with its bytes that are not UTF-8 shown as '?' (os.listdir's surrogate escapes), when it has any: torch,
    onnx and onnxruntime take paths as UTF-8 strings, and failed deep inside on other names."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode()
    return None


# a terminal's escape sequences (torch's dynamo exporter colours): CSI (colour, cursor), OSC and the other strings
# ended by BEL or ST (an OSC 8 hyperlink), two-character ones (`ESC ( B`); then any control character but \n and \t
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -/]*[0-~]?"
                   r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(text: str) -> str:
    """`text` without terminal escape codes: shown in a log, a manifest or a pipe they were raw `[96m`."""
    return _ANSI.sub("", text)


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type when empty): what a one-line error can show."""
    text = plain(str(e)).strip()
    if "[ONNXRuntimeError]" in text:
        text = ort_cause(text)
    return text.splitlines()[0][:limit] if text else type(e).__name__


_ORT_STATUS = re.compile(r"\[ONNXRuntimeError\] : \d+ : (\w+) :\s*")
_LOAD_FROM = re.compile(r"^Load model from .*? failed:", re.S)  # the path, which the caller names
_SOURCE_LOCATION = re.compile(r"\S+\.(?:cc|cpp|h):\d+\s+")
# a return type (void, bool, ns::Status&) before a qualified name and its parameters
_CPP_SIGNATURE = re.compile(r"(?:\w[\w<>]*(?:::\w[\w<>]*)*[&*]* )?\w+(?:::[\w~]+)+\((?:[^()]|\([^()]*\))*\)\s*")


def ort_cause(text: str) -> str:
    """onnxruntime's message with the cause first: its innermost status text, without the model's path, source
    locations and C++ signatures, which otherwise fill a one-line error before the cause is reached (a load
    failure's 'Opset 5 is under development' was cut off after a path and a signature)."""
    message = _LOAD_FROM.sub("", _ORT_STATUS.split(text)[-1])  # [before, CODE, message, ...]: the innermost
    return _CPP_SIGNATURE.sub("", _SOURCE_LOCATION.sub("", message)).strip() or text


# The file system refusing a path the user gave (too long, read-only, full, not theirs): their input, not a bug.
USER_ERRNOS = {errno.ENAMETOOLONG, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
               errno.ELOOP}


FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def disk_full(e: BaseException) -> OSError | DiskFullError | None:
    """The full disk (or file-size limit) behind `e`, however deep a library wrapped it: no step can succeed
    by retrying or skipping then, and the user must be told which folder filled up, not which step noticed."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, DiskFullError) or isinstance(e, OSError) and e.errno in FULL_ERRNOS:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def from_os_error(e: OSError) -> InputError | None:
    if e.errno not in USER_ERRNOS:
        return None
    name = str(e.filename) if e.filename is not None else "writing a file"
    if len(name) > 120:
        name = f"{name[:60]}...{name[-40:]}"
    return InputError(f"{name}: {e.strerror}")
