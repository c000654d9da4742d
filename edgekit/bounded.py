"""Run one toolchain step on a hostile file in a child process with a time and memory limit.

onnxruntime's pre-processing (symbolic shape inference, constant folding) can take exponential time
or allocate what a tiny file declares (nested sub-graphs, `ConstantOfShape` bombs). In a child
process the step can be stopped: past the time limit it is killed, and its address space is capped
so a huge allocation fails there instead of taking the machine. Either way the run ends with exit 4
naming the step, never a hang.

The child is a fresh `python -m edgekit.bounded`, not multiprocessing: spawn and forkserver re-import
the parent's __main__ (pytest, a notebook, stdin), and fork would copy torch's and onnxruntime's threads.
"""
from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import FULL_ERRNOS, InputError, StageError, StepTimeout, disk_full, first_line, too_long


def run(stage: str, fn: str, *args: str, timeout: float, raised_by: str = "") -> str:
    """`fn` ("module:function", taking and returning strings) in a child process; its result, or StageError.
    `raised_by` names the option that raises the time limit, where the command has one."""
    from .host import physical_memory, run_memory

    memory = physical_memory()  # no single step may reserve more
    run_memory()  # a bad EDGEKIT_RUN_MEMORY_MB is the caller's UsageError, not the child's failed step
    # -P: nothing is imported from the working folder, which may hold the very files being checked
    cmd = [sys.executable, "-P", "-m", "edgekit.bounded", str(memory), fn, *args]
    # its temporary files (onnxruntime's pre-processing makes some) go where they are removed even if it is killed
    with tempfile.TemporaryDirectory(prefix="edgekit-step-") as tmp:
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**child_env(), "TMPDIR": tmp})
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StepTimeout(stage, too_long(timeout, raised_by)) from None
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        why = err.strip().splitlines()[-1][:200] if err.strip() else "no output"
        raise StageError(stage, f"its process died (exit code {child.returncode}: {why}); out of memory?") from None
    if result.get("errno") in FULL_ERRNOS:  # the user's disk, not the step, failed
        raise OSError(result["errno"], os.strerror(result["errno"]), result.get("filename"))
    if not result["ok"]:
        raise (InputError(result["value"]) if result.get("input") else
               StepTimeout(stage, result["value"]) if result.get("timeout") else StageError(stage, result["value"]))
    return result["value"]


MAX_OUTPUT_BYTES = 256 << 20  # what another machine (a device, an emulated CPU) may print back to a step
MAX_ERROR_BYTES = 64 << 10  # of its stderr: the tail, where the reason is


def capped_run(cmd: list[str], stdin: bytes, timeout: float, stage: str, limits=None,
               env: dict | None = None) -> tuple[int, bytes, str]:
    """`cmd` with its output going to files it may not grow past MAX_OUTPUT_BYTES (RLIMIT_FSIZE, set with `limits`,
    a further preexec_fn, in the child): (exit code, stdout, the tail of stderr), or StageError past the time or the
    size. What a device or an emulator prints is data from elsewhere, read within bounds."""
    import io
    import resource
    import tempfile

    def capped() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_OUTPUT_BYTES, MAX_OUTPUT_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash left 220 MB core files in the working folder
        if limits:
            limits()

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            done = subprocess.run(cmd, input=stdin, stdout=out, stderr=err, timeout=timeout, preexec_fn=capped,
                                  env=spawn_env(env))
        except subprocess.TimeoutExpired:
            raise StageError(stage, f"no answer within {timeout:g} s") from None
        if out.seek(0, io.SEEK_END) >= MAX_OUTPUT_BYTES:
            raise StageError(stage, f"printed more than {MAX_OUTPUT_BYTES >> 20} MiB")
        out.seek(0)
        err.seek(max(0, err.seek(0, io.SEEK_END) - MAX_ERROR_BYTES))
        return done.returncode, out.read(), err.read().decode(errors="replace")


# What every child edgekit starts (bounded steps, search trials, the .ort converter, emulated and device runs) has in
# its environment. onnxruntime's telemetry keeps an event store that every onnxruntime process on the host opens at
# import and appends to (~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db, trimmed by whichever process
# finds it past its 3 MB cap): a child's work then depends on the host's other processes (a converter's .ort came out
# in another order), and a child writes outside its step. With telemetry off the child never opens the store.
CHILD_SETTINGS = {"ORT_DISABLE_TELEMETRY": "1"}


def spawn_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a child edgekit starts runs with: `base` (this process's by default) with CHILD_SETTINGS,
    the one place they are added."""
    return {**(os.environ if base is None else base), **CHILD_SETTINGS}


def child_env() -> dict[str, str]:
    """This environment for a child `python -P -m edgekit...`. Its PYTHONPATH loses entries naming the working
    folder (`-P` keeps that folder off sys.path; an empty entry would put it back), and gains this edgekit's folder
    first when that is not where the child finds packages anyway: a checkout used from sys.path (a benchmark, a
    notebook) is imported by its children too, while an installed edgekit stays behind the standard library."""
    import site

    here = os.path.realpath(Path(__file__).parent.parent)
    try:
        cwd = os.path.realpath(os.getcwd())
    except OSError:  # a working folder deleted under us: nothing of it to keep out
        cwd = None
    kept = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if p and (cwd is None or os.path.realpath(os.path.join(cwd, p)) != cwd)]
    installed = {os.path.realpath(d) for d in (*site.getsitepackages(), site.getusersitepackages())}
    return spawn_env({**os.environ, "PYTHONPATH": os.pathsep.join(kept if here in installed else [here, *kept])})


def _main(argv: list[str]) -> None:
    import resource

    memory, fn, args = int(argv[0]), argv[1], argv[2:]
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)  # a user's `ulimit -v` (-S too) stays the ceiling
    memory = min([memory] + [limit for limit in (soft, hard) if limit != resource.RLIM_INFINITY])
    resource.setrlimit(resource.RLIMIT_AS, (memory, hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a hostile model's crash: no core file of its memory
    # steps here are onnx/onnxruntime work; onnxruntime.tools imports torch when it can find it (1.2 s a child)
    sys.modules["torch"] = None
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)  # this stderr is the user's: edgekit reports the cause
    try:
        result = {"ok": True, "value": pkgutil.resolve_name(fn)(*args)}
    except MemoryError:
        result = {"ok": False, "value": "out of memory"}
    except InputError as e:  # the file's fault, said as the parent would (exit 3)
        result = {"ok": False, "value": str(e), "input": True}
    except StepTimeout as e:  # past the user's limit (exit 4), not the step's failure (a package failing check)
        result = {"ok": False, "value": e.message, "timeout": True}
    except BaseException as e:  # everything goes back to the parent as one line
        full = disk_full(e)
        result = {"ok": False, "value": first_line(e),
                  **({"errno": full.errno, "filename": full.filename} if isinstance(full, OSError) else {})}
    print(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])
