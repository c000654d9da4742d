"""Write one target's deliverables: golden vectors, manifest.json with hashes, report.md."""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from . import arrays
from .errors import InputError
from .report import markdown
from .reports import TargetReport

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_golden(path: Path, feeds: list[dict], names: list[str], outputs: list[list[np.ndarray]],
                 tolerance: float) -> dict[str, float]:
    """golden.npz: inputs, the deployed model's outputs, and per-output absolute tolerances.

    Written entry by entry with fixed timestamps so the same run gives the same bytes.
    Returns the tolerances: `tolerance` × the output's peak |value| over the golden samples.
    """
    atol = {n: max(float(tolerance * max(np.max(np.abs(o[k])) for o in outputs)), 1e-6) for k, n in enumerate(names)}
    arrays = {"count": np.array(len(feeds))}
    for i, (feed, out) in enumerate(zip(feeds, outputs)):
        arrays.update({f"input.{i}.{name}": value for name, value in feed.items()})
        arrays.update({f"output.{i}.{name}": value for name, value in zip(names, out)})
    arrays.update({f"atol.{name}": np.array(value) for name, value in atol.items()})
    write_arrays(path, arrays)
    return atol


def write_arrays(path: Path, arrays: dict) -> None:
    """An .npz written entry by entry with fixed timestamps: same arrays, same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(value), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{key}.npy", FIXED_ZIP_TIME), buf.getvalue(), zipfile.ZIP_DEFLATED)


MAX_GOLDEN_SAMPLES = 10_000
MAX_GOLDEN_BYTES = 1 << 30  # inputs and outputs of at most MAX_GOLDEN_SAMPLES samples: a zip bomb stops here


def read_golden(path: Path) -> tuple[list[dict], list[dict], dict[str, float]]:
    """(inputs per sample, expected outputs per sample, tolerances); anything malformed is bad input."""
    def bad(why: str) -> InputError:
        return InputError(f"{path.name}: not a valid golden file ({why})")

    try:
        data = arrays.read_npz(path, lambda n: n == "count" or n.startswith(("input.", "output.", "atol.")),
                               MAX_GOLDEN_BYTES, lambda extra: f"unexpected entry {extra[0]!r}")
    except InputError as e:  # named as the package shows it, not by a temporary path
        raise bad(str(e).replace(f"{path}: ", "")) from e
    try:
        count = int(data["count"])
    except (KeyError, TypeError, ValueError):
        raise bad("no integer `count`") from None
    if not 1 <= count <= MAX_GOLDEN_SAMPLES:
        raise bad(f"count {count} out of range [1, {MAX_GOLDEN_SAMPLES}]")
    inputs: list[dict] = [{} for _ in range(count)]
    outputs: list[dict] = [{} for _ in range(count)]
    atol = {}
    for key, value in data.items():
        kind, _, rest = key.partition(".")
        if kind == "atol":
            if value.size != 1 or not np.isfinite(value).all() or float(value) < 0:
                raise bad(f"tolerance {key!r} is not one finite number >= 0")
            atol[rest] = float(value)
        elif kind in ("input", "output"):
            index, _, name = rest.partition(".")
            if not index.isdigit() or int(index) >= count or not name:
                raise bad(f"entry {key!r} does not name a sample below count {count}")
            if kind == "output" and (value.dtype.kind not in "biuf" or not np.isfinite(value).all()):
                raise bad(f"expected output {key!r} is not finite numbers")
            (inputs if kind == "input" else outputs)[int(index)][name] = value
        elif kind != "count":
            raise bad(f"unexpected entry {key!r}")
    if any(not i for i in inputs) or any(not o for o in outputs):
        raise bad("every sample needs inputs and expected outputs")
    missing = {n for o in outputs for n in o} - set(atol)
    if missing:
        raise bad(f"no tolerance for output(s) {sorted(missing)}")
    return inputs, outputs, atol


def write(target_dir: Path, report: TargetReport) -> None:
    """Hash every deliverable into the report, then write manifest.json and report.md beside them."""
    files = sorted(p for p in target_dir.iterdir() if p.is_file() and p.name not in ("manifest.json", "report.md"))
    report.files = {p.name: sha256(p) for p in files}
    report.sizes = {p.name: p.stat().st_size for p in files}
    (target_dir / "manifest.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    (target_dir / "report.md").write_text(markdown(report))
