"""Error types and exit codes: user mistakes are told apart from toolchain failures and bugs."""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    GATE_FAILED = 1
    USAGE = 2
    BAD_INPUT = 3
    STAGE_FAILED = 4
    INTERNAL = 5


class EdgekitError(Exception):
    """An expected failure with a one-line message for the user."""

    exit_code = ExitCode.INTERNAL


class UsageError(EdgekitError):
    """Bad flags, recipe or target profile."""

    exit_code = ExitCode.USAGE


class InputError(EdgekitError):
    """Bad model, weights, data or archive."""

    exit_code = ExitCode.BAD_INPUT


class StageError(EdgekitError):
    """A toolchain step (export, pre-processing, quantization, ...) failed on valid input."""

    exit_code = ExitCode.STAGE_FAILED

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage} failed: {message}")
        self.stage = stage


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type when empty): what a one-line error can show."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__
