"""Command line: each command parses, calls one library function, prints, and exits with its code."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import shlex
import signal
import sys
import traceback
import typing
from pathlib import Path

import click
from click.core import ParameterSource

from . import __version__, search, signals
from .config import (DEFAULT_STEP_TIMEOUT, DEFAULT_TARGETS, RANGES, BenchSpec, DeviceSpec, DistillSettings, InputSpec,
                     PruneSpec, QuantSettings, Recipe, ShareSpec, apply_quant_overrides, choices, dim_name,
                     expand_home, list_targets, load_recipe, load_target, load_targets, recipe_file_names,
                     writable_name)
from .errors import (EdgekitError, ExitCode, InputError, NotDelivered, UsageError, first_line, for_the_cli,
                     from_os_error, name_as)


_PROGRAM: list[bool] = []  # set when this process is the `edgekit` program itself, not a caller of main()
_RESULT = "edgekit.result"  # where a command's result goes: stdout as it was when the command started


@contextlib.contextmanager
def _only_the_result_on_stdout(ctx):
    """With --json, stdout holds only the JSON: what user code writes meanwhile (a model's `print`, a C library's or
    a child process's write to fd 1) goes to stderr, and once the program has emitted its result, for good."""
    ctx.meta[_RESULT] = _closed if sys.stdout is None else functools.partial(click.echo, file=sys.stdout)
    try:
        fd, err = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # not files (click's test runner): Python's own prints only
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)

    def result(text: str) -> None:  # to stdout as it was, fd 1 left on stderr: a user's thread still writing to
        sys.stdout.flush()  # it put its lines after the JSON
        with os.fdopen(os.dup(saved), "w") as out:
            out.write(text + "\n")

    ctx.meta[_RESULT] = result  # an error's JSON too (_fail)
    try:
        os.dup2(err, fd)
        yield
    finally:
        if not _PROGRAM:  # a caller of main() gets its stdout back; the program ends with fd 1 on stderr
            sys.stdout.flush()
            os.dup2(saved, fd)
            os.close(saved)
            ctx.meta.pop(_RESULT)


def _closed(text: str) -> None:
    """A result for a closed stdout (`>&-`), where click wrote it to stderr, and the command passed."""
    raise NotDelivered("stdout is closed: the result could not be written (give the command a stdout)")


def _emit(text: str) -> None:
    """A command's result on stdout (with --json, the only thing there). Once it is decided, a signal no longer
    changes the exit code (the program's own process only)."""
    if _PROGRAM:
        signals.ignore()
    (_closed if sys.stdout is None else _result)(text)


def _result(text: str) -> None:
    """`text` on stdout as it was when the command started (see _only_the_result_on_stdout)."""
    ctx = click.get_current_context(silent=True)
    (ctx and ctx.meta.get(_RESULT) or click.echo)(text)


def _handle_errors(fn):
    """Expected failures: one line on stderr and their exit code; bugs: exit 5 (traceback with --debug).

    Commands return their exit code instead of calling sys.exit, so a SystemExit seen here came from
    user code (a model or data function calling sys.exit): bad input, never a silent pass.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = ctx.find_root().params.get("debug", False)
        as_json = bool(kwargs.get("as_json"))
        published = signals.publishes()

        def interrupted(e: BaseException) -> None:  # a search's trials publish in its OUT, its own output comes last
            _interrupted(isinstance(e, signals.InterruptedAfterPublish)
                         or (ctx.info_name != "search" and signals.publishes() > published))

        try:
            signals.import_for(ctx.info_name)
            from . import host  # not at the top: `--help` imports no numpy
            from .api import command_under_way

            host.check_overrides()
            for said in host.overrides_said():
                logging.getLogger("edgekit").warning("%s", said)
            with _only_the_result_on_stdout(ctx) if kwargs.get("as_json") else contextlib.nullcontext(), \
                    for_the_cli(), command_under_way():
                code = fn(*args, **kwargs)
        except SystemExit as e:
            _fail(f"edgekit: error: user code called sys.exit({e.code!r}) during the run", ExitCode.BAD_INPUT, debug,
                  as_json)
        except KeyboardInterrupt as e:
            interrupted(e)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as e:
            if signals.RECEIVED:  # what fails after a signal (an import, a storage call it cut short) is the signal
                interrupted(e)
            _failed(e, debug, as_json)
        if code is not None:  # a group's callback returns None: its sub-command still has to run
            sys.exit(int(code))

    return wrapper


def _failed(e: Exception, debug: bool, as_json: bool = False) -> None:
    """An error's one line and exit code: edgekit's own, the OS's (a full disk is the user's to fix), or a bug."""
    if isinstance(e, EdgekitError):
        kind = "internal error" if e.exit_code == ExitCode.INTERNAL else "error"
        _fail(f"edgekit: {kind}: {e}", e.exit_code, debug, as_json, payload=getattr(e, "json_payload", None))
    if isinstance(e, BrokenPipeError):  # the reader went away (`edgekit targets | head -1`): nothing to tell it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's own flush would fail too
        sys.exit(141)  # 128 + SIGPIPE, as a shell reports a tool the pipe stopped
    user = from_os_error(e) if isinstance(e, OSError) else None
    if user is not None:
        _fail(f"edgekit: error: {user}", user.exit_code, debug, as_json)
    hint = "" if debug else " (re-run as `edgekit --debug ...` for the traceback)"
    _fail(f"edgekit: internal error: {type(e).__name__}: {first_line(e)}{hint}", ExitCode.INTERNAL, debug, as_json)


class Within(click.FloatRange):
    """click's FloatRange, which lets NaN through (every comparison with it is False)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


def json_text(data) -> str:
    from .reports import json_text as strict  # numpy comes with it: not at `--help`

    return strict(data)


def _json(**payload) -> str:
    """A command's result as --json's document (reports.envelope), for the commands without a verdict: exit 0."""
    from .reports import envelope

    return json_text(envelope(_command_name(click.get_current_context()), ExitCode.OK, **payload))


def _command_name(ctx) -> str | None:
    """The command as typed after `edgekit` (`export`, `emulator setup`); None for the program itself."""
    names = []
    while ctx is not None and ctx.parent is not None:  # the root's name is the program's (`python -m edgekit`)
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(reversed(names)) or None


def _interrupted(published: bool) -> None:
    writes = click.get_current_context().info_name in ("export", "search")  # the commands with an OUT folder
    click.echo("edgekit: interrupted after the new output was published" if published
               else "edgekit: interrupted; any earlier output left as it was" if writes else "edgekit: interrupted",
               err=True)
    _exit(130)


def _exit(code: int) -> None:
    """The program's exit with this code. A KeyboardInterrupt raised inside exec'd code (dataclasses' during an
    import) makes CPython kill itself with SIGINT at exit, whatever code sys.exit gave: the program leaves at once
    (its clean-up has run)."""
    if not _PROGRAM:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _fail(line: str, code: ExitCode | int, debug: bool, as_json: bool = False, ctx=None,
          payload: dict | None = None) -> None:
    """The one-line error last (after the traceback with --debug), and the same exit code either way; a message
    of several lines (a user function's exception) is joined into one. With --json, stdout gets it as JSON too:
    a CI step parsing the output reads the error, not an empty document, in the shape a result has (`ctx`: the
    command's, where click's own error left it; `payload`: the command's keys where the error has them, as check's
    cases up to a --step-timeout)."""
    if debug:
        traceback.print_exc()
    line = "; ".join(part.strip() for part in line.splitlines() if part.strip())
    click.echo(line, err=True)
    if as_json:
        try:
            from .reports import empty_payload, envelope

            command = _command_name(ctx or click.get_current_context(silent=True))
            _result(json_text(envelope(command, code, line.split(": ", 2)[-1],  # "edgekit: <kind>: "
                                       **(payload if payload is not None else empty_payload(command)))))
        except (OSError, NotDelivered):  # stdout full, closed or its reader gone: the line and code stand
            with contextlib.suppress(AttributeError, OSError, ValueError):  # the exit's own flush would fail too
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(int(code))


def flag_param(flag: str) -> str:
    """The click parameter name of a flag: `--per-channel/--per-tensor` → per_channel."""
    return flag.split("/")[0].lstrip("-").replace("-", "_")


QUANT_FLAGS = {flag_param(f.metadata["flag"]): f.name for f in dataclasses.fields(QuantSettings)
               if f.metadata["flag"]}


def names_in(value: str) -> list[str]:
    """The names in one comma-separated flag value; `\\,` is a comma inside a name (an ONNX node may be named 'a,b',
    which the list split in two)."""
    return [v.strip().replace("\\,", ",") for v in re.split(r"(?<!\\),", value) if v.strip()]


PATH_FLAGS = ("out", "weights", "calibration", "validation", "labels", "device_identity", "device_known_hosts")


def recipe_from(source: str, flags: dict) -> Recipe:
    """A recipe file or a bare model source, with command-line flags taking precedence. Paths take `~` as the API
    and recipes do (config.expand_home): a quoted `--out "~/dist"` made a folder named `~`."""
    source = expand_home(source)
    given = {k: tuple(map(expand_home, v)) if k == "targets" else expand_home(v) if k in PATH_FLAGS else v
             for k, v in flags.items() if v not in (None, ())}
    recipe = load_recipe(Path(source)) if source.endswith(".toml") else Recipe(source=source)
    if source.endswith(".toml"):  # errors name the recipe's keys for what no flag gave (what to add to it)
        typed = _typed()
        name_as({flag: key for flag, key in recipe_file_names().items() if flag not in typed})
    quant = dict(recipe.quantize)
    for flag, key in QUANT_FLAGS.items():
        if flag in given:
            value = given.pop(flag)
            quant[key] = tuple(v for part in ((value,) if isinstance(value, str) else value)
                               for v in names_in(part)) if key in ("op_types", "exclude_nodes") else value
    bench = dataclasses.replace(recipe.bench, runs=given.pop("bench_runs")) if "bench_runs" in given else recipe.bench
    url, identity, known_hosts, python = (given.pop(k, None) for k in (
        "device", "device_identity", "device_known_hosts", "device_python"))
    if url is not None or recipe.device is None:
        given["device"] = _device_from_flags(url, identity, known_hosts, python)
    else:  # the recipe's [device], with the flags given
        given["device"] = dataclasses.replace(recipe.device, **{k: v for k, v in (
            ("identity", identity), ("known_hosts", known_hosts), ("python", python)) if v})
    if "inputs" in given:
        given["inputs"] = InputSpec.parse_all(given["inputs"])
    if "state" in given:
        given["state"] = {**recipe.state, **_pairs("--state", given["state"], "INPUT=OUTPUT, e.g. state=stateN")}
    if "sizes" in given:
        given["sizes"] = {**recipe.sizes, **{dim_name(k): v for k, v in _pairs(
            "--size", given["sizes"], "DIM=N[,N...], e.g. seq=16,64", _sizes).items()}}
    if "state_init" in given:
        given["state_init"] = {**recipe.state_init, **_pairs("--state-init", given["state_init"],
                                                             "INPUT=FILE.npy, e.g. state=h0.npy", expand_home)}
    if "constants" in given:
        given["constants"] = {**recipe.constants, **_pairs("--constant", given["constants"],
                                                           "NAME=VALUE, e.g. sr=16000", json.loads)}
    recipe = dataclasses.replace(recipe, quantize=quant, bench=bench, **given)
    writable_name(recipe.out)
    apply_quant_overrides(QuantSettings(), recipe.quantize, "command-line quantization flags")  # ranges
    return recipe


def _typed() -> set[str]:
    """The flags on this command's command line (not their defaults)."""
    ctx = click.get_current_context(silent=True)
    return set() if ctx is None else {o for p in ctx.command.params for o in (*p.opts, *p.secondary_opts)
                                      if ctx.get_parameter_source(p.name) is ParameterSource.COMMANDLINE}


def _sizes(text: str) -> list[int]:
    sizes = [int(n) for n in text.split(",")]
    if not all(RANGES["size"][0] <= n <= RANGES["size"][1] for n in sizes):
        raise ValueError(text)
    return sizes


def _ratio(text: str) -> float:
    ratio = float(text)
    if not 0 < ratio < 1:
        raise ValueError(text)
    return ratio


def _pairs(flag: str, texts, example: str, parse=str) -> dict:
    """Repeated `NAME=VALUE` flags as {name: parse(value)}; anything else is a usage error."""
    found = {}
    for text in texts:
        name, sep, value = text.partition("=")
        try:
            if not name or not sep or not value:
                raise ValueError
            if name in found:  # the last one silently won
                raise UsageError(f"{flag} {name} is given twice")
            found[name] = parse(value)
        except ValueError:
            raise UsageError(f"{flag} {text!r}: expected {example}") from None
        except RecursionError:  # json.loads of '[' * 20000: exit 5, "internal error: RecursionError"
            raise UsageError(f"{flag} {name}: its value is nested too deeply") from None
    return found


_max_data_bytes = click.option(
    "--max-data-bytes", type=click.IntRange(*RANGES["max_data_bytes"]),
    help="Most bytes one data source may declare before it is loaded (default 4 GiB; files are hostile).")


def _device_options(fn):
    """`--device` and how to reach it, for `check`, `export` and `search`."""
    for option in reversed([
            click.option("--device", metavar="ssh://[USER@]HOST[:PORT][/FOLDER]",
                         help="A device over SSH: the golden check and latency there, with its own onnxruntime."),
            click.option("--identity", "device_identity", type=click.Path(dir_okay=False),
                         help="SSH private key for --device (default: the agent's keys)."),
            click.option("--known-hosts", "device_known_hosts", type=click.Path(dir_okay=False),
                         help="known_hosts for --device (default: ssh's own)."),
            click.option("--device-python", help="The device's Python with onnxruntime (default python3).")]):
        fn = option(fn)
    return fn


def _device_from_flags(url, identity, known_hosts, python) -> DeviceSpec | None:
    """The --device flags as a DeviceSpec (None without --device; its other flags then have no use)."""
    if url is not None and not url.strip():  # an unset $DEVICE in CI: checking on this host instead would hide it
        raise UsageError("--device is empty: give ssh://[user@]host[:port][/folder], or leave the flag out")
    if python is not None and not python.strip():
        raise UsageError("--device-python is empty: give the device's Python (default python3), or leave it out")
    if not url:
        if identity or known_hosts or python:
            raise UsageError("--identity, --known-hosts and --device-python go with --device")
        return None
    return DeviceSpec(url, identity, known_hosts, python or DeviceSpec.python)


def _quant_options(fn):
    """One `export` option per QuantSettings field that has a flag: type, choices and help from the field."""
    hints = typing.get_type_hints(QuantSettings)
    for f in reversed(dataclasses.fields(QuantSettings)):
        flag, hint = f.metadata["flag"], hints[f.name]
        if not flag:
            continue
        default = ",".join(f.default) or "none" if isinstance(f.default, tuple) else f.default
        kwargs = {"default": None, "help": f"{f.metadata['help'][0].upper()}{f.metadata['help'][1:]} "
                                           f"(default: the target's, else {default})."}
        if hint is bool:
            kwargs["is_flag"] = True  # each a --on/--off pair: a flag overrides a recipe or profile either way
        elif typing.get_origin(hint) is typing.Literal:
            kwargs["type"] = click.Choice(typing.get_args(hint))
        elif hint in (int, float):  # refused by its flag's name, as the recipe's key is by its own
            kwargs["type"] = (click.IntRange if hint is int else Within)(*RANGES[f.name]) if f.name in RANGES else hint
        else:  # repeated, or comma-separated: either way all of them (repeated, the last one alone was kept)
            kwargs.update(type=str, metavar="A,B,...", multiple=True)
        fn = click.option(flag, flag_param(flag), **kwargs)(fn)
    return fn


def _torch_source_options(fn):
    """SOURCE and how to load it, for the commands that change a torch model (prune, share)."""
    for option in reversed((
            click.argument("source"),
            click.option("--weights", help="State dict or checkpoint (weights_only=True)."),
            click.option("--trust-checkpoint", is_flag=True,
                         help="Load files that can run code (full pickles, TorchScript, .pt2): trusted files only."),
            click.option("--input", "inputs", multiple=True, required=True, metavar="NAME:SHAPE[:DTYPE]",
                         help="Model input, e.g. image:Nx3x224x224. Repeat for several."))):
        fn = option(fn)
    return fn


@contextlib.contextmanager
def _help_unread():
    """`edgekit -h | head -1`: help or the version its reader did not take all of is no failure (click's exit 1). A
    command's own output is not theirs: its handler tells that reader's going away (141)."""
    try:
        yield
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's own flush would fail too
        raise click.exceptions.Exit(0) from None


def _asks_json(args) -> bool:
    """Whether the command line has --json (before a `--`): click refused it before the flag was read, and a CI
    step parsing stdout should still get the error object."""
    args = list(sys.argv[1:] if args is None else args)
    return "--json" in args[:args.index("--")] if "--" in args else "--json" in args


def _settle_environment() -> None:
    """The program runs with what its children run with (bounded.CHILD_SETTINGS), set before onnxruntime is
    imported: with telemetry on, `edgekit check` wrote onnxruntime's store into the home folder on a laptop but not
    under CI=true, and with a read-only home printed onnxruntime's colour-coded warning at import (NO_COLOR or not)."""
    from .bounded import CHILD_SETTINGS

    os.environ.update(CHILD_SETTINGS)


class _OneLineErrors(click.Group):
    """click's usage errors in edgekit's one-line form (`edgekit: error: ...`, exit 2), not its four-line block."""

    def make_context(self, *args, **kwargs):
        with _help_unread():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _help_unread():
            return super().invoke(ctx)

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        if not args and kwargs.get("args") is None:  # the arguments are sys.argv's: this is the program
            _PROGRAM.append(True)
            _settle_environment()
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except KeyboardInterrupt:  # before a command's own handling (click parsing the arguments)
            click.echo("edgekit: interrupted", err=True)
            _exit(130)
        except click.ClickException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # a bare `edgekit`: the help it asked for (click >= 8.2)
                e.show()
                sys.exit(e.exit_code)
            hint = f" (`{e.ctx.command_path} -h` for help)" if isinstance(e, click.UsageError) and e.ctx else ""
            _fail(f"edgekit: error: {e.format_message()}{hint}", e.exit_code, debug=False,
                  as_json=_asks_json(args[0] if args else kwargs.get("args")), ctx=getattr(e, "ctx", None))
        except click.exceptions.Abort:
            click.echo("edgekit: interrupted", err=True)
            _exit(130)
        finally:
            if _PROGRAM:  # the outcome is decided: a signal during shutdown (where Python's handlers are gone)
                signals.final()  # would turn its exit code into death by it
        sys.exit(code if isinstance(code, int) else 0)


_VERBOSE_HELP = "Log progress on stderr (export: each target as it starts, and --auto's trials)."
# after a command's name, -v says what that command logs (check's had export's words: it logs no target it makes)
_VERBOSE_HELPS = {"check": "Log progress on stderr: each package folder as check starts on it (each target in "
                           "OUT, the package in an archive)."}
# `-h`'s last lines: a CI job gates on these, and the README alone was the place that listed them
EXIT_CODES_HELP = ("\b\nExit codes: 0 ok; 1 a gate or check failed; 2 usage, recipe or profile error (check: or a"
                   "\npackage only a newer edgekit checks); 3 bad input (model, weights, data, package); 4 a step"
                   "\nfailed or ran past --step-timeout; 5 internal error; 6 stdout closed; 7 busy (another run writes"
                   "\n--out); 130 interrupted; 141 stdout's reader went away.")


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="edgekit")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help=_VERBOSE_HELP)
def main(debug: bool, verbose: bool) -> None:
    """PyTorch models → validated int8 ONNX deployables per edge target."""
    signals.RECEIVED.clear()  # of an earlier command in this process (a test's runner)
    for s in signals.SIGNALS:  # CI cancels with SIGTERM, a closed terminal sends SIGHUP: clean up as for Ctrl-C
        if not (s == signal.SIGHUP and signal.getsignal(s) is signal.SIG_IGN):  # `nohup edgekit ...` runs on
            signal.signal(s, signals.stop)
    if _PROGRAM:
        signals.never_swallowed(signals.stop)
        command = click.get_current_context().invoked_subcommand  # told as _interrupted tells it
        signals.stopped_even_inside_c(
            "edgekit: interrupted; any earlier output left as it was" if command in ("export", "search")
            else "edgekit: interrupted",
            "" if command == "search" else "edgekit: interrupted after the new output was published")
    # our own log lines at the asked level; libraries' warnings (onnxruntime's shape inference retries,
    # transformers) only with --debug, since edgekit reports what matters in its own words
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine("%(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.ERROR, handlers=[handler])
    logging.getLogger("edgekit").setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
    if not debug:  # a search's storage failures are reported by edgekit, not as the pool's tracebacks
        logging.getLogger(search.STORAGE_POOL_LOG).setLevel(logging.CRITICAL)


class _OneLine(logging.Formatter):
    """Each log line as one line a terminal shows as it is: a warning names folders from an archive others send
    (`o\\x1b[2J\\nPASS  all targets verified`), whose escape sequences and newlines reached the CI log raw."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        from .report import printable

        return printable(super().formatMessage(record))


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("source")
@click.option("--weights", help="State dict or checkpoint (loaded with weights_only=True).")
@click.option("--trust-checkpoint", is_flag=True, default=None,
              help="Load files that can run code: --weights with weights_only=False, TorchScript (.pt/.ts) and "
                   "torch.export (.pt2) sources. Only for files you trust.")
@click.option("--input", "inputs", multiple=True, metavar="NAME:SHAPE[:DTYPE]",
              help="Model input, e.g. image:Nx3x224x224 or input_ids:Nxseq:int64. Repeat for several.")
@click.option("--output-name", "output_names", multiple=True, help="Name for each model output, in order.")
@click.option("--labels", metavar="FILE", help="A classifier's class names, one per line (line k names class k): "
                                               "shipped as labels.txt.")
@click.option("--state", "state", multiple=True, metavar="INPUT=OUTPUT",
              help="A streaming model's state input and the output fed back to it (data then holds sequences).")
@click.option("--size", "sizes", multiple=True, metavar="DIM=N[,N...]",
              help="Sizes to validate a named dynamic axis at (default: one the data does not have).")
@click.option("--state-init", "state_init", multiple=True, metavar="INPUT=FILE.npy",
              help="A state input's first value (default zeros).")
@click.option("--constant", "constants", multiple=True, metavar="NAME=VALUE",
              help="Pin an input that is configuration (e.g. sr=16000): the deployed model no longer takes it.")
@click.option("--calibration", help="Calibration data: .npz, .npy (one input's samples), folder of .npz/.npy, "
                                    "MODULE:FUNCTION, or `random`.")
@click.option("--validation", help="Held-out validation data (default: the last 25% of the calibration set).")
@_max_data_bytes
@click.option("-t", "--target", "targets", multiple=True,
              help=f"Target profile name or .toml path. Repeatable. Default: the recipe's [export] targets, else "
                   f"{', '.join(DEFAULT_TARGETS)}; `edgekit targets` lists the bundled ones.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Output folder (default: the recipe's [export] out, else dist in the working folder).")
@click.option("--seed", type=click.IntRange(*RANGES["seed"]),
              help="Seeds random data and the random state (Python's, numpy's, torch's) during the export.")
@click.option("--exporter", type=click.Choice(choices(Recipe, "exporter")),
              help="torch's ONNX exporter: the TorchScript tracer, or dynamo (torch.export).")
@click.option("--task", type=click.Choice(choices(Recipe, "task")),
              help="What the outputs are, which picks the parity metrics and gates; auto: classify when the data "
                   "has labels, else other with class-score outputs' int8 top-1 still held (README).")
@_quant_options
@click.option("--bench-runs", type=click.IntRange(*RANGES["runs"]), help="Timed runs per model.")
@click.option("--step-timeout", type=Within(*RANGES["step_timeout"]),
              help="Seconds a step on the model may take: pre-processing and its first run (in a child), each "
                   "later run of it, and each step on --device unless the recipe's [device] timeout is set.")
@click.option("--no-bench", is_flag=True, default=None, help="Skip latency (the outputs then depend only on inputs).")
@click.option("--archive", is_flag=True, default=None, help="Also write OUT/<target>.tar.gz.")
@click.option("--c-name", metavar="NAME", help="The C names of a profile's c_header files: NAME_data.h, "
              "edgekit_NAME_data, EDGEKIT_NAME_SIZE (two models in one firmware need two names).")
@click.option("--emulate", metavar="ARCH[:CPU]",
              help="Real kernels of another CPU under qemu: aarch64[:CPU] computes ARM targets' int8 parity and golden "
                   "outputs; x86_64[:CPU] (no VNNI, e.g. AVX2) holds x86-64 targets' int8 gates on its kernels too.")
@_device_options
@click.option("--force", is_flag=True, default=None,
              help="Replace OUT/<target> and its archive even when edgekit did not make them (default: refuse).")
@click.option("--from-trial", type=int, metavar="N", help="Export `edgekit search`'s trial N (with its --storage).")
@click.option("--storage", help="The search's Optuna storage (default sqlite:///OUT/search.db).")
@click.option("--study", default="edgekit", show_default=True, help="The search's study name.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object on stdout: the outcome and each target's manifest.")
@click.option("--timings", "show_timings", is_flag=True,
              help="Print each stage's wall time and the host that ran it on stderr (never in the package).")
@_handle_errors
def export(source, as_json, from_trial, storage, study, show_timings, **flags):
    """Export, quantize, validate and benchmark SOURCE for each target.

    SOURCE is a recipe (edgekit.toml), MODULE:FUNCTION, FILE.py:FUNCTION, a TorchScript or
    torch.export archive, or an .onnx model.
    """
    from .pipeline import run
    from .report import table

    recipe, threads = recipe_from(source, flags), None
    if from_trial is not None:
        recipe, threads = search.from_trial(recipe, storage or _search_storage(source, flags, recipe), study,
                                            from_trial, given=storage is not None)
    with search.worker_threads(threads):
        report = run(recipe, load_targets(recipe.targets), progress=not as_json)
    if as_json and not report.passed:  # a CI log shows why without parsing the document
        click.echo(f"edgekit: gates failed: {report.failed_gates()}", err=True)
    _emit(json_text(report.to_json()) if as_json else table(list(report.targets.values())))
    if show_timings and report.timings:  # stderr: --json's stdout is one document
        from .report import printable

        click.echo("\n".join(map(printable, report.timings.line().splitlines())), err=True)
    return report.exit_code


def _search_storage(source: str, flags: dict, recipe: Recipe) -> str:
    """--from-trial's storage when none is given: OUT's search, else the one `edgekit search RECIPE` made in the
    recipe's own OUT (--out then says only where the package goes)."""
    own = [Path(recipe_from(source, {**flags, "out": None}).out)] if source.endswith(".toml") else []
    outs = list(dict.fromkeys((Path(recipe.out), *own)))
    for out in outs:
        if os.path.lexists(out / search.DB):
            return search.default_storage(out)
    raise UsageError(f"--from-trial: no search in {' or '.join(map(str, outs))} ({search.DB} is not there; run "
                     "`edgekit search` first, or give its --storage)")


@main.command("search")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--budget", "budgets", multiple=True, metavar="latency_ms=N|size_mb=N",
              help="A bound the exported model must meet on the target (latency measured on this host, or on --device "
                   "for a target of its kind). Repeatable.")
@click.option("--trials", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="Trials to run; a resumed study adds this many to those it has.")
@click.option("--sampler", type=click.Choice(search.SAMPLERS), default=search.SAMPLERS[0], show_default=True,
              help="Optuna's sampler (TPE takes the budgets and the target's gates as constraints).")
@click.option("--storage", help="Optuna storage: sqlite:///FILE (default OUT/search.db), an RDB URL such as "
                                "postgresql://... (with its driver), or journal:FILE; other machines join with the "
                                "same one and --study.")
@click.option("--study", default="edgekit", show_default=True, help="Study name; an existing one is resumed.")
@click.option("--time-budget", type=Within(*RANGES["time_budget"]), help="Seconds; no trial starts after it.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes on this machine sharing the storage.")
@click.option("-t", "--target", help="Target profile (default: the recipe's first).")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: the recipe's).")
@click.option("--emulate", metavar="aarch64[:CPU]",
              help="An arm64 target's int8 outputs (its accuracy) from real aarch64 kernels under qemu.")
@_device_options
@click.option("--force", is_flag=True, default=None,
              help="Replace OUT's pareto.json, report.html and OUT/<target> even when edgekit did not make them.")
@click.option("--json", "as_json", is_flag=True, help="Print the trials and the Pareto front as JSON on stdout.")
@_handle_errors
def search_command(recipe, budgets, trials, sampler, storage, study, time_budget, workers, target, out, as_json,
                   **where):
    """Search pruning, weight sharing, distillation and quantization for the most accurate model within the
    budgets; writes OUT/pareto.json and OUT/report.html and exports the best point to OUT."""
    r = recipe_from(recipe, {"out": out, "targets": (target,) if target else None, **where})
    report = search.run(r, load_targets(r.targets)[0], search.parse_budgets(budgets), trials, sampler, storage,
                        study, time_budget, workers, Path(r.out))
    if as_json:
        _emit(json_text(report.to_json()))
    elif not report.points:
        _emit(f"no trial completed; {len(report.failed)} failed"
              + (f", e.g. trial {report.failed[0]['trial']}: {first_line(Exception(report.failed[0]['error']))}"
                 if report.failed else ""))
    else:
        _emit("\n".join([
            f"{len(report.points)} trial(s) done, {len(report.failed)} failed, {report.seconds_per_trial:.1f} s "
            f"a trial; {report.metric} from {report.kernels}; latency on {report.where}"
            + (f"; the grid's {report.grid_done} combinations are all tried" if report.grid_done else ""),
            "Pareto front (within the budgets and the target's gates):\ntrial | accuracy | p50 ms | MB | params",
            *(f"{p.trial} | {p.accuracy:.2f} | {p.latency_ms:.4f} | {p.size_mb:.3f} | {p.params}"
              for p in report.pareto),
            (f"best: trial {report.best.trial}, exported to {r.out}" if report.best else
             "no trial met the budgets and gates") + f"; charts: {Path(r.out) / 'report.html'}"]))
    if report.export_failed:  # its package's gates hold the budgets (one another CPU kind would judge is skipped)
        click.echo(f"edgekit: the best trial's package, timed again, misses a budget: {report.export_failed}", err=True)
    return report.exit_code


_ROUND_TO = click.IntRange(*RANGES["round_to"])


@main.command()
@_torch_source_options
@click.option("--ratio", type=Within(*RANGES["ratio"]), required=True,
              help="Share of channels (structured) or weights to remove.")
@click.option("--method", type=click.Choice(choices(PruneSpec, "method")), default=PruneSpec.method, show_default=True,
              help="structured: remove whole channels; unstructured: zero the smallest weights.")
@click.option("--importance", type=click.Choice(choices(PruneSpec, "importance")), default=PruneSpec.importance,
              show_default=True, help="How structured pruning ranks channels (taylor: gradients on labelled --data).")
@click.option("--ignore", multiple=True, help="Layer name to keep whole (the output layer always is). Repeatable.")
@click.option("--stage", "stages", multiple=True, metavar="MODULE=RATIO",
              help="The layers inside MODULE (e.g. features.3) pruned at RATIO instead. Repeatable.")
@click.option("--round-to", default=str(PruneSpec.round_to), metavar="N|auto",
              callback=lambda ctx, param, v: v if v == "auto" else _ROUND_TO.convert(v, param, ctx),
              help="Keep channel counts multiples of N (e.g. 8); auto: time 8, 16 and 32 in int8 on this host with "
                   "--target's settings and keep the fastest. Default 0: any count.")
@click.option("-t", "--target", help="Profile whose int8 settings --round-to auto measures, on this host: one of its "
                                     "kind (default: desktop-x86 on x86, arm64-linux on arm64).")
@click.option("--data", help="Data (MODULE:FN yielding (inputs, labels), or labelled samples in any calibration "
                             "format): its sizes of the named axes are what pruning traces and MACs count at; "
                             "labelled, --importance taylor's gradients.")
@_max_data_bytes
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Pruned model file (.pt).")
@click.option("--force", is_flag=True, help="Replace the --out file if there is one.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@_handle_errors
def prune(source, ratio, out, as_json, stages, **settings):
    """Remove channels (or weights) from SOURCE; saves a state dict that `export --weights` reloads."""
    from .api import prune

    stage_ratios = _pairs("--stage", stages, "MODULE=RATIO with 0 < RATIO < 1, e.g. features=0.3", _ratio)
    _, result = prune(source, ratio=ratio, out=out, stage_ratios=stage_ratios, **settings)
    r = result.as_dict()
    _emit(_json(**r) if as_json else
         f"{settings['method']} pruning at {ratio}: params {r['params_before']:,} → {r['params_after']:,}, "
         f"MACs {r['macs_before']:,} → {r['macs_after']:,}"
         + (f" (a sample at {', '.join(f'{d}={n}' for d, n in r['sizes'].items())})" if r["sizes"] else "")
         + (f", sparsity {r['sparsity']:.1%} of the pruned layers ({r['model_sparsity']:.1%} of all conv/linear "
            f"weights; kept whole: {', '.join(r['ignored'])})" if r["sparsity"] is not None else "")
         + (f", {result.rounding.describe()}" if result.rounding else "") + f"; wrote {out}\n"
         + _heads(r["heads"]) + _reload(source, out, settings["inputs"]))


def _heads(heads: dict | None) -> str:
    """The attention heads pruning removed, per attention: whole heads go, and which ones is the user's to know."""
    if not heads:
        return ""
    return "attention heads kept: " + "; ".join(
        f"{name} {a}/{b}" + (f" (removed {', '.join(map(str, h['pruned']))})" if h["pruned"] else "")
        for name, h in heads.items() for b, a in [h["heads"]]) + "\n"


@main.command()
@_torch_source_options
@click.option("--clusters", type=click.IntRange(*RANGES["clusters"]), default=ShareSpec.clusters, show_default=True,
              help="Distinct weight values per conv/linear layer (k-means).")
@click.option("--ignore", multiple=True, help="Layer name to leave unshared. Repeatable.")
@click.option("--data", help="Training data to fine-tune on by distillation from the unshared model (as distill's).")
@_max_data_bytes
@click.option("--epochs", type=click.IntRange(*RANGES["epochs"]),
              help=f"Fine-tuning epochs, with --data (default {DistillSettings.epochs}).")
@click.option("--lr", type=Within(*RANGES["lr"]),
              help=f"Fine-tuning learning rate, with --data (default {DistillSettings.lr}).")
@click.option("--batch-size", type=click.IntRange(*RANGES["batch_size"]),
              help=f"Fine-tuning batch size, with --data (default {DistillSettings.batch_size}).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Shared model file (.pt).")
@click.option("--force", is_flag=True, help="Replace the --out file if there is one.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@_handle_errors
def share(source, out, as_json, **settings):
    """Share SOURCE's weights in k clusters per layer (fine-tuned with --data); `export --weights` reloads it."""
    from .api import share

    _, result = share(source, out=out, progress=not as_json, **{k: v for k, v in settings.items() if v is not None})
    r, tuned = result.as_dict(), result.fine_tuning
    _emit(_json(**r) if as_json else
         f"{len(r['layers'])} layers shared, at most {r['distinct_max']} values each{_unshared(r)}; wrote {out}\n"
         + (f"fine-tuned: best epoch {tuned['best_epoch']} of {len(tuned['history'])} ({tuned['metric']} "
            f"{tuned['best']:.4f} on {tuned['held_out_samples']} held-out training samples)\n" if tuned else "")
         + _reload(source, out, settings["inputs"]))


def _reload(source: str, out: str, inputs) -> str:
    """The export command line that reloads a compressed model, quoted for a shell (paths with spaces)."""
    words = ["edgekit", "export", source, "--weights", out, *(w for i in inputs for w in ("--input", i))]
    return f"reload with: {shlex.join(words)} --calibration ..."


def _unshared(r: dict) -> str:
    """The weight matrices share left as they were, after its count of shared layers (which hid a GRU's)."""
    left = [u["weight"] for u in r["unshared"]]
    return (f", {len(left)} weight matri{'x' if len(left) == 1 else 'ces'} unshared ({r['unshared_share']:.1%} of "
            f"the parameters: {', '.join(left[:4])}{' ...' if len(left) > 4 else ''})" if left else "")


@main.command()
@click.option("--teacher", required=True, help="Teacher model source.")
@click.option("--teacher-weights", help="Teacher state dict or checkpoint (weights_only=True).")
@click.option("--student", required=True, help="Student model source (e.g. the same MODULE:FUNCTION).")
@click.option("--student-weights", help="Student weights, e.g. the output of `edgekit prune`.")
@click.option("--trust-checkpoint", is_flag=True,
              help="Load files that can run code (full pickles, TorchScript, .pt2): trusted files only.")
@click.option("--data", required=True, help="MODULE:FN yielding (inputs, labels) batches, or samples in any "
                                           "calibration format (.npz, .npy, folder); without labels, the soft "
                                           "targets alone.")
@_max_data_bytes
@click.option("--input", "inputs", multiple=True, metavar="NAME:SHAPE[:DTYPE]",
              help="Model input; needed for sample-wise (file) data. Repeat for several.")
@click.option("--epochs", type=click.IntRange(*RANGES["epochs"]), default=DistillSettings.epochs, show_default=True,
              help="Training epochs (the best one on held-out samples is kept).")
@click.option("--temperature", type=Within(*RANGES["temperature"]), default=DistillSettings.temperature,
              show_default=True, help="Softmax temperature of the soft targets.")
@click.option("--alpha", type=Within(*RANGES["alpha"]), default=DistillSettings.alpha, show_default=True,
              help="Soft-target weight; 1-alpha for labels.")
@click.option("--lr", type=Within(*RANGES["lr"]), default=DistillSettings.lr, show_default=True,
              help="Learning rate, on a cosine schedule.")
@click.option("--optimizer", type=click.Choice(choices(DistillSettings, "optimizer")),
              default=DistillSettings.optimizer, show_default=True, help="The optimizer.")
@click.option("--batch-size", type=click.IntRange(*RANGES["batch_size"]), default=DistillSettings.batch_size,
              show_default=True, help="Training batch size.")
@click.option("--feature", "features", multiple=True, help="TEACHER_LAYER:STUDENT_LAYER to match (MSE). Repeatable.")
@click.option("--patience", type=click.IntRange(*RANGES["patience"]), default=DistillSettings.patience,
              show_default=True,
              help="Stop after this many epochs without improvement (0: never stop early).")
@click.option("--seed", type=click.IntRange(*RANGES["seed"]), default=DistillSettings.seed, show_default=True,
              help="Seeds torch and the batches' shuffling.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Best student (.pt), saved as it improves.")
@click.option("--force", is_flag=True, help="Replace the --out file if there is one.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@_handle_errors
def distill(teacher, student, out, as_json, **settings):
    """Train STUDENT to match TEACHER (soft targets + labels), keeping the best epoch."""
    from .api import distill

    _, result = distill(teacher, student, out=out, progress=not as_json, **settings)
    r = result.as_dict()
    _emit(_json(**r) if as_json else
         "\n".join(f"epoch {h['epoch']:3}  train loss {h['train_loss']:.4f}  {result.metric} "
                   f"{h[result.metric]:.4f}" for h in r["history"])
         + f"\nbest epoch {r['best_epoch']} ({result.metric} {r['best']:.4f} on {r['held_out_samples']} held-out "
           f"training samples); wrote {out}")


@main.command("check", epilog=EXIT_CODES_HELP)
@click.argument("path", type=click.Path())
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), help="Write JUnit XML here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("--emulate", metavar="ARCH[:CPU]",
              help="Run the models on another CPU's real onnxruntime kernels under qemu: aarch64[:CPU] (default "
                   "neoverse-n1) for ARM packages, x86_64[:CPU] (default epyc-milan: AVX2, no VNNI) for x86 ones.")
@_device_options
@click.option("--probe", is_flag=True, help="With --emulate/--device: name the first node whose int8 output differs.")
@click.option("--step-timeout", type=Within(*RANGES["step_timeout"]), default=DEFAULT_STEP_TIMEOUT,
              show_default=True, help="Seconds a target's models may take over its golden inputs here, and each "
                                      "step (connect, copy, run) on --device.")
@_handle_errors
def check_cmd(path, junit_path, as_json, emulate, device, device_identity, device_known_hosts, device_python, probe,
              step_timeout):
    """Re-run a package's golden vectors and verify its file hashes (folder, OUT folder or .tar.gz)."""
    from .api import check
    from .report import printable
    from .reports import Case

    if not path:
        raise UsageError("check takes a package folder or archive, not an empty path")
    junit_path = expand_home(junit_path)  # the one `~` rule (PATH_FLAGS'): a quoted "~/r.xml" was a folder `~`
    if junit_path is not None:  # told now, not after the check ran
        junit_file = Path(junit_path).absolute()
        if not junit_path or junit_file.is_dir() or os.path.lexists(junit_file) and not junit_file.is_file():
            raise UsageError(f"--junit {junit_path!r}: give the path of a file to write")
        if not junit_file.parent.is_dir():
            raise UsageError(f"--junit {junit_path}: its folder does not exist")
        if (junit_file.parent / "manifest.json").exists():  # it would replace a file of the package, or add one
            raise UsageError(f"--junit {junit_path}: is inside a package folder; write it beside the package")
        if junit_file.is_file() and not _is_junit(junit_file):  # a mistyped path: never replaced
            raise UsageError(f"--junit {junit_path}: exists and is not a JUnit report; give a new file or remove it")
    try:
        spec = _device_from_flags(device, device_identity, device_known_hosts, device_python)
        report = check(path, emulate=emulate, device=spec, probe=probe, step_timeout=step_timeout)
    except Exception as e:  # a CI job's reader must find this failure there, not the last run's passes
        if junit_path:
            user = e if isinstance(e, EdgekitError) else from_os_error(e) if isinstance(e, OSError) else None
            why = str(user) if user else f"{type(e).__name__}: {first_line(e)}"
            ran = getattr(getattr(e, "report", None), "cases", None)  # past --step-timeout: each case's state
            with contextlib.suppress(EdgekitError):  # the check's own error is the one to tell
                _write_junit(junit_path, ran or [Case(str(path), "edgekit check", False, why)])
        raise
    if junit_path:
        _write_junit(junit_path, report.cases)
    if as_json:
        if not report.passed:  # a CI log shows why without parsing the document
            click.echo(f"edgekit: checks failed: {report.failed_cases()}", err=True)
        _emit(json_text(report.to_json()))
    else:
        failed = sum(not c.passed for c in report.cases)
        _emit("\n".join([*(printable(f"{'PASS' if c.passed else 'FAIL'}  {c.label:16} {c.name}"
                                      + (f" [{c.where}]" if c.where else "") + (f": {c.message}" if c.message else ""))
                            for c in report.cases), f"{len(report.cases) - failed} passed, {failed} failed"]))
    return report.exit_code


def _is_junit(path: Path) -> bool:
    """An earlier run's report (a CI job's fixed path, this or another tool's) or an empty file (`mktemp`'s),
    which --junit may replace."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()  # a byte-order mark, as some tools write
    return not head or head.startswith(b"<") and b"<testsuite" in head


def _write_junit(path: str, cases) -> None:
    """Whole or not at all (a CI reader of half a file fails on its XML, not on the check)."""
    from .outdir import whole_file
    from .package_check import junit

    try:
        with whole_file(Path(path)) as partial:
            partial.write_text(junit(cases), encoding="utf-8")
    except OSError as e:
        raise from_os_error(e) or InputError(f"--junit {path}: cannot be written ({e.strerror})") from None


@main.group()
def emulator() -> None:
    """Other CPUs' real onnxruntime kernels on this x86 host (qemu user mode; see `check --emulate`): aarch64, and
    x86-64 without VNNI."""


@emulator.command("setup")
@click.argument("spec", default="aarch64", metavar="[aarch64[:CPU] | x86_64[:CPU]]")
@click.option("--onnxruntime", "ort_version", metavar="VERSION", help="Default: this host's onnxruntime version.")
@click.option("--numpy", "np_version", metavar="VERSION", help="Default: this host's numpy version.")
@_handle_errors
def emulator_setup(spec, ort_version, np_version):
    """Build (once) what `--emulate` runs on (aarch64: an arm64 root and aarch64 wheels; x86_64: wheels, for
    versions other than this host's), and try it."""
    from . import emulator as emu

    found = emu.setup(spec, ort_version, np_version)
    about = found.serve(found.site, {})["about"]
    _emit(f"{found.describe(about)} ready: numpy {about['numpy']}, Python {about['python']} "
          f"(cache {emu.cache_dir() / 'emulator'})")


@main.command("inspect")
@click.argument("model", type=click.Path(), required=False)
@click.option("--compare", nargs=2, type=click.Path(), metavar="FP32 INT8",
              help="Per-layer quantization error between a float model and its int8 version.")
@click.option("--data", help="Inputs for --compare (.npz, folder, MODULE:FN).")
@click.option("--nodes", is_flag=True, help="Also list every node's name and op (the names --exclude-nodes takes).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@_handle_errors
def inspect_cmd(model, compare, data, nodes, as_json):
    """Opset, inputs/outputs, op histogram, parameters, size, quantization and NNAPI/CoreML coverage;
    with --compare FP32 INT8 --data D, the error each node adds, worst first."""
    from .inspect_model import compare_text, inspect, layer_errors, text

    # the one `~` rule (PATH_FLAGS'): a quoted "~/m.onnx" was "no such file"
    model, compare, data = expand_home(model), tuple(map(expand_home, compare or ())), expand_home(data)
    if model and compare:
        raise UsageError("give a MODEL to inspect, or --compare FP32 INT8, not both")
    if data and not compare:
        raise UsageError("--data is for --compare FP32 INT8 (inspect MODEL reads no data)")
    if nodes and compare:
        raise UsageError("--nodes is for inspect MODEL (--compare lists its nodes already)")
    if compare:
        if not data:
            raise UsageError("--compare needs --data (validation inputs)")
        rows = layer_errors(Path(compare[0]), Path(compare[1]), data)
        _emit(_json(**rows) if as_json else compare_text(rows))
        return
    if not model:
        raise UsageError("give a MODEL.onnx (or --compare FP32 INT8 --data D)")
    info = inspect(Path(model), nodes=nodes)
    _emit(_json(**info) if as_json else text(info))


@main.group(invoke_without_command=True)
@click.pass_context
@_handle_errors
def targets(ctx) -> None:
    """List the bundled target profiles."""
    if ctx.invoked_subcommand is None:
        _emit("\n".join(f"{name:16} {load_target(name).description}" for name in list_targets()))


@targets.command("show")
@click.argument("name")
@_handle_errors
def targets_show(name: str) -> None:
    """Print a profile file (copy it, edit it, pass its path to --target)."""
    _emit(Path(load_target(name).path).read_text(encoding="utf-8").removesuffix("\n"))


def _verbose(ctx, param, value: bool) -> None:
    if value and not ctx.find_root().params.get("debug"):
        logging.getLogger("edgekit").setLevel(logging.INFO)


def _every_command(group: click.Group):
    for command in group.commands.values():
        yield command
        if isinstance(command, click.Group):
            yield from _every_command(command)


for _command in _every_command(main):  # `edgekit prune -v` as `edgekit -v prune`: after the command's name too
    _command.params.append(click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, is_eager=False,
                                        callback=_verbose, help=_VERBOSE_HELPS.get(_command.name, _VERBOSE_HELP)))


# export's settings default to None (a recipe's value stands unless a flag is given): help names the default of
# its settings dataclass, never a number retyped here
_RECIPE_DEFAULTS = {**{f.name: f.default for f in dataclasses.fields(Recipe)
                       if isinstance(f.default, (int, float, str))}, "bench_runs": BenchSpec.runs}
for _option in main.commands["export"].params:
    unset = _option.default in (None, getattr(click.core, "UNSET", None))  # click 8.3's sentinel
    if _option.name in _RECIPE_DEFAULTS and not _option.is_flag and unset and "default" not in (_option.help or ""):
        _option.help = f"{_option.help or ''} (default: {_RECIPE_DEFAULTS[_option.name]})".lstrip()
