"""The Python API: `edgekit.export` and `edgekit.check`, the same runs as the CLI's, with typed reports.

Errors are raised, never printed: `edgekit.UsageError` (a bad setting), `edgekit.InputError` (a bad model,
data or package), `edgekit.StageError` (a toolchain step failed); each has the CLI's `exit_code`.
"""
from __future__ import annotations

import dataclasses
import difflib
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np

from .config import (DEFAULT_TARGETS, BenchSpec, InputSpec, QuantSettings, Recipe, apply_quant_overrides, build,
                     load_targets)
from .reports import CheckReport, ExportReport

Feeds = Union[str, Path, Iterable[Mapping[str, np.ndarray]], Callable[[], Iterable[Mapping[str, np.ndarray]]]]
# set by the call's own arguments, not by **settings
_OWN = {"source", "inputs", "calibration", "validation", "targets", "out", "quantize", "bench", "prune", "distill"}


def export(model: Any, *, inputs: Iterable[str | InputSpec] = (), calibration: Feeds,
           validation: Feeds | None = None, targets: Iterable[str] = DEFAULT_TARGETS,
           out: str | Path | None = None, **settings) -> ExportReport:
    """Export, quantize, validate and package `model` for each target; the same run as `edgekit export`.

    model: an `nn.Module` (copied, never changed), a source string (`pkg.mod:fn`, `file.py:fn`, `.pt`,
      `.pt2`, `.onnx`) or a path.
    inputs: `"name:NxCxHxW[:dtype]"` strings or InputSpec (not needed for an .onnx model).
    calibration, validation: a path, `"random"`, `"pkg.mod:fn"`, an iterable of `{input name: array}`
      dicts (one sample each; a `labels` entry makes accuracy measurable) or a callable returning one.
      Without `validation` the last 25% of the calibration samples are held out.
    targets: profile names or .toml paths. out: the output folder (a new temporary folder when None).
    settings: any QuantSettings field (`calibrate_method="entropy"`, `auto=True`, ...), BenchSpec field
      (`runs`, `warmup`) or run option (`seed`, `no_bench`, `archive`, `force`, `weights`, `task`, ...).
    Returns the report; `report.passed` is the verdict, `report.exit_code` the CLI's exit code.
    """
    from .pipeline import run

    recipe = _recipe(model, inputs, calibration, validation, targets, out, settings)
    return run(recipe, load_targets(recipe.targets), progress=False)


def check(path: str | Path) -> CheckReport:
    """Re-run a package's golden vectors and verify its hashes (a target folder, an OUT folder or an
    archive); the same run as `edgekit check`. `report.passed` is the verdict."""
    from . import package_check

    return package_check.check(Path(path))


def _recipe(model, inputs, calibration, validation, targets, out, settings: dict) -> Recipe:
    quant_keys = {f.name for f in dataclasses.fields(QuantSettings)}
    bench_keys = {f.name for f in dataclasses.fields(BenchSpec)}
    run_keys = {f.name for f in dataclasses.fields(Recipe)} - _OWN
    for key in settings:
        if key not in quant_keys | bench_keys | run_keys:
            close = difflib.get_close_matches(key, quant_keys | bench_keys | run_keys, n=1)
            raise TypeError(f"export() got an unexpected setting {key!r}" + (f" (did you mean {close[0]!r}?)"
                                                                                if close else ""))
    where = "edgekit.export() settings"
    as_toml = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
    quantize = {k: v for k, v in as_toml.items() if k in quant_keys}
    apply_quant_overrides(QuantSettings(), quantize, where)  # types, choices and ranges, told now
    recipe = build(Recipe, {"source": "", **{k: v for k, v in as_toml.items() if k in run_keys}}, where)
    if out is None:
        out = tempfile.mkdtemp(prefix="edgekit-")
    specs = tuple(i if isinstance(i, InputSpec) else InputSpec.parse(i) for i in inputs)
    return dataclasses.replace(
        recipe, source=model, inputs=specs, calibration=calibration, validation=validation,
        targets=(targets,) if isinstance(targets, str) else tuple(targets), out=str(out), quantize=quantize,
        bench=build(BenchSpec, {k: v for k, v in as_toml.items() if k in bench_keys}, where))
