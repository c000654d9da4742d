"""Command line: each command parses, calls one library function, prints, and exits with its code."""
from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from . import __version__
from .errors import EdgekitError, ExitCode


def _handle_errors(fn):
    """Expected failures: one line on stderr and their exit code; bugs: exit 5 (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except EdgekitError as e:
            if debug:
                raise
            click.echo(f"edgekit: error: {e}", err=True)
            sys.exit(int(e.exit_code))
        except KeyboardInterrupt:
            click.echo("edgekit: interrupted; previous output left as it was", err=True)
            sys.exit(130)
        except click.exceptions.Exit:
            raise
        except Exception as e:
            if debug:
                raise
            click.echo(f"edgekit: internal error: {type(e).__name__}: {e} (re-run with --debug for the traceback)",
                       err=True)
            sys.exit(int(ExitCode.INTERNAL))

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Log each step on stderr.")
def main(debug: bool, verbose: bool) -> None:
    """PyTorch models → validated int8 ONNX deployables per edge target."""
    # our own log lines at the asked level; libraries' warnings (onnxruntime's shape inference retries,
    # transformers) only with --debug, since edgekit reports what matters in its own words
    logging.basicConfig(level=logging.DEBUG if debug else logging.ERROR, format="%(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("edgekit").setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)


@main.command()
@click.argument("source")
@click.option("--weights", help="State dict or checkpoint (loaded with weights_only=True).")
@click.option("--input", "inputs", multiple=True, metavar="NAME:SHAPE[:DTYPE]",
              help="Model input, e.g. image:Nx3x224x224 or input_ids:Nxseq:int64. Repeat for several.")
@click.option("--output-name", "output_names", multiple=True, help="Name for each model output, in order.")
@click.option("--calibration", help="Calibration data: .npz, folder of .npz/.npy, MODULE:FUNCTION, or `random`.")
@click.option("--validation", help="Held-out validation data (default: the last 25% of the calibration set).")
@click.option("-t", "--target", "targets", multiple=True, help="Target profile name or .toml path. Repeatable.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default dist).")
@click.option("--seed", type=int)
@click.option("--exporter", type=click.Choice(["torchscript", "dynamo"]))
@click.option("--task", type=click.Choice(["auto", "classification", "other"]))
@click.option("--quant-mode", type=click.Choice(["static", "dynamic"]))
@click.option("--format", "quant_format", type=click.Choice(["QDQ", "QOperator"]))
@click.option("--activation-type", type=click.Choice(["uint8", "int8", "uint16", "int16"]))
@click.option("--weight-type", type=click.Choice(["uint8", "int8", "uint16", "int16"]))
@click.option("--per-channel/--per-tensor", default=None)
@click.option("--reduce-range", type=click.Choice(["auto", "true", "false"]))
@click.option("--calibrate-method", type=click.Choice(["minmax", "entropy", "percentile"]))
@click.option("--calibration-samples", type=int, help="Samples used for calibration.")
@click.option("--op-types", help="Comma-separated op types to quantize (default: all).")
@click.option("--exclude-nodes", help="Comma-separated node names to keep in float.")
@click.option("--transformer-scheme", type=click.Choice(["dynamic", "matmul-static", "off"]))
@click.option("--bench-runs", type=int, help="Timed runs per model.")
@click.option("--no-bench", is_flag=True, default=None, help="Skip latency (the outputs then depend only on inputs).")
@click.option("--archive", is_flag=True, default=None, help="Also write OUT/<target>.tar.gz.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifests as JSON on stdout.")
@_handle_errors
def export(source, as_json, **flags):
    """Export, quantize, validate and benchmark SOURCE for each target.

    SOURCE is a recipe (edgekit.toml), MODULE:FUNCTION, FILE.py:FUNCTION, a TorchScript or
    torch.export archive, or an .onnx model.
    """
    from .config import load_targets, recipe_from
    from .pipeline import run

    recipe = recipe_from(source, flags)
    targets = load_targets(recipe.targets)
    manifests = run(recipe, targets, progress=not as_json)
    _finish(manifests, as_json)


def _finish(manifests: list[dict], as_json: bool) -> None:
    from .report import exit_code, table

    if as_json:
        click.echo(json.dumps(manifests, indent=2))
    else:
        click.echo(table(manifests))
    sys.exit(int(exit_code(manifests)))


@main.command("check")
@click.argument("path", type=click.Path())
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), help="Write JUnit XML here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@_handle_errors
def check_cmd(path, junit_path, as_json):
    """Re-run a package's golden vectors and verify its file hashes (folder, OUT folder or .tar.gz)."""
    from .check import as_dicts, check, junit

    cases = check(Path(path))
    if junit_path:
        Path(junit_path).write_text(junit(cases))
    if as_json:
        click.echo(json.dumps(as_dicts(cases), indent=2))
    else:
        for c in cases:
            click.echo(f"{'PASS' if c.passed else 'FAIL'}  {c.target:16} {c.name}" + (f": {c.message}" if c.message else ""))
        failed = sum(not c.passed for c in cases)
        click.echo(f"{len(cases) - failed} passed, {failed} failed")
    sys.exit(int(ExitCode.OK if all(c.passed for c in cases) else ExitCode.GATE_FAILED))


@main.command("inspect")
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@_handle_errors
def inspect_cmd(model, as_json):
    """Opset, inputs/outputs, op histogram, parameters, size, quantization and NNAPI/CoreML coverage."""
    from .errors import InputError
    from .inspect_model import inspect, text

    if not Path(model).is_file():
        raise InputError(f"{model}: no such file")
    info = inspect(Path(model))
    click.echo(json.dumps(info, indent=2) if as_json else text(info))


@main.group(invoke_without_command=True)
@click.pass_context
@_handle_errors
def targets(ctx) -> None:
    """List the bundled target profiles."""
    if ctx.invoked_subcommand is None:
        from .config import list_targets, load_target

        for name in list_targets():
            click.echo(f"{name:16} {load_target(name).description}")


@targets.command("show")
@click.argument("name")
@_handle_errors
def targets_show(name: str) -> None:
    """Print a profile file (copy it, edit it, pass its path to --target)."""
    from .config import load_target

    click.echo(Path(load_target(name).path).read_text(), nl=False)
