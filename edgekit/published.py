"""OUT's record of the target folders edgekit published there, which `edgekit check OUT` holds OUT to.

`OUT/edgekit-targets.json` names each target folder and the sha256 of its manifest.json (which hashes every other
file), so a target deleted or swapped for another package fails the check. It is swapped in by the same publish
as the packages: first with both the previous and the new manifest's hash of each target being replaced (a run
killed in the middle of its swap leaves a mix of both runs' packages, each edgekit's), then with the new ones.
A visible file: artifact uploads that skip hidden files (GitHub's upload-artifact) would drop it.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

INDEX = "edgekit-targets.json"
MAX_INDEX_BYTES = 1 << 20  # ~10,000 targets
DIGEST = 64  # hex characters of a sha256


@dataclass(frozen=True)
class Published:
    """Target folder name → the sha256 of each manifest.json it may hold (one, or two during a swap)."""

    targets: dict[str, tuple[str, ...]]

    def text(self) -> str:
        return json.dumps({"targets": {n: list(h) for n, h in sorted(self.targets.items())}}, indent=1) + "\n"


def manifest_sha256(folder: Path) -> str:
    with open(folder / "manifest.json", "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read(out: Path, shown: Path | str | None = None) -> Published | None:
    """OUT's record; None when there is none (OUT made by an edgekit before it, or a copy without
    it). Anything else of its name is bad input, named as `shown/INDEX` (default: its path)."""
    path = out / INDEX
    where = f"{shown if shown is not None else out}/{INDEX}"
    try:
        info = os.lstat(path)  # a FIFO, or a link to /dev/zero, would hang or fill memory
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InputError(f"{where}: cannot be read ({e.strerror})") from e
    try:
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_INDEX_BYTES:
            raise ValueError("not a small regular file")
        targets = json.loads(path.read_text(encoding="utf-8"))["targets"]
        if not (isinstance(targets, dict) and all(
                isinstance(n, str) and n and "/" not in n and n not in (".", "..") and isinstance(h, list) and h
                and all(isinstance(d, str) and len(d) == DIGEST for d in h) for n, h in targets.items())):
            raise ValueError("not target names with manifest hashes")
    except (OSError, ValueError, RecursionError, KeyError, TypeError) as e:
        raise InputError(f"{where}: not edgekit's record of the targets it published there ({e})") from e
    return Published({n: tuple(h) for n, h in targets.items()})


def merged(prior: Published | None, present: dict[str, str], new: dict[str, str]) -> tuple[Published, Published]:
    """(OUT's record while a publish swaps, after it). `prior`: OUT's record before it; `present`: each package folder
    in OUT now → its manifest's sha256; `new`: each target this run publishes → its new manifest's sha256 (one new to
    OUT is in the second only).
    A target kept from before is narrowed to the manifest it holds if that is one the record allows; one missing or
    holding another manifest keeps what was published, so `check` still fails it. A package in OUT the record does
    not name (one copied in) is taken as it is: the record is what OUT holds and was
    published there."""
    before = dict(prior.targets) if prior else {}
    kept = {}
    for name in {*before, *present}:
        allowed, now = before.get(name), present.get(name)
        kept[name] = (now,) if now is not None and (allowed is None or now in allowed) else allowed
    # a target new to OUT joins the record only once swapped in: a run killed before then left OUT as it was, and
    # the mid-swap record had it fail check as missing for good
    during = kept | {n: tuple(dict.fromkeys((*kept[n], h))) for n, h in new.items() if n in kept}
    return Published(during), Published(kept | {n: (h,) for n, h in new.items()})
