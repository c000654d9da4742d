"""A real device over SSH: the package is copied into a fresh folder of this run's own inside the folder the user
named, and `runner.py` runs there with the device's own onnxruntime and numpy. The run's folder (and any folder it
had to make for the named one) is removed at the end: nothing is installed or left behind, and two runs on one
device never share, or overwrite, each other's or the user's files.

OpenSSH's client does the transport: keys come from the user's agent or `identity`, host keys are checked
against known_hosts and never accepted silently (StrictHostKeyChecking=yes, BatchMode=yes), and a dead
link is noticed by keep-alives. Every step is bounded in time and in what it reads back; the device's answer is
checked before anything uses it. A failure is exit 4 naming the step.
"""
from __future__ import annotations

import functools
import io
import json
import logging
import os
import shlex
import shutil
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from . import bounded, host, runner, runtime
from .config import DeviceSpec
from .errors import DeviceError, StageError, UsageError

HOME = "."  # the login's home folder: where the run's folder goes when the URL names none
# Makes the folder argv[1] (and its missing parents) and a fresh run folder inside it; prints both as JSON. Each
# script is one line: a csh login shell refuses a newline inside quotes.
_MAKE = ("import json, os, pathlib, sys, tempfile; base = pathlib.Path(sys.argv[1]).absolute(); "
         "made = [str(p) for p in (base, *base.parents) if not os.path.lexists(p)]; base.mkdir(parents=True, "
         "exist_ok=True); print(json.dumps({'run': tempfile.mkdtemp(prefix='edgekit-run-', dir=base), 'made': made}))")
# Unpacks the tar stream on stdin into argv[1], inside this run's folder; the 'data' filter where Python has it.
_RECEIVE = ("import sys, tarfile; t = tarfile.open(fileobj=sys.stdin.buffer, mode='r|'); "
            "t.extractall(sys.argv[1], **({'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}))")
# Removes the run folder argv[1], then the folders in argv[2:] (made for the named one) if they are empty.
_REMOVE = ("import os, shutil, sys; shutil.rmtree(sys.argv[1]); "
           "[os.rmdir(p) for p in sys.argv[2:] if os.path.isdir(p) and not os.listdir(p)]")

# Runs argv[1:] (the runner) and says on stderr which signal killed it (ssh says nothing, and exits 255 as for a
# dropped link); kills it when the SSH session goes (the runner watches this, its parent). The runner has what every
# child edgekit starts has (bounded.CHILD_SETTINGS). One line for ssh: a login shell may not take a quoted newline.
KILLED = "edgekit: the runner was killed by "
_SUPERVISOR = f"""\
import os, signal, subprocess, sys, time
session, runner = os.getppid(), subprocess.Popen(sys.argv[1:], env={{**os.environ, **{bounded.CHILD_SETTINGS!r}}})
while runner.poll() is None and os.getppid() == session:
    time.sleep(0.1)
code = runner.poll()
if code is None:
    runner.kill()
elif code < 0:
    print({KILLED!r} + next((s.name for s in signal.Signals if s == -code), f"signal {{-code}}"), file=sys.stderr)
sys.exit(1 if code is None else 128 - code if code < 0 else code)
"""
_SUPERVISE = f"exec({_SUPERVISOR!r})"


class Device:
    """One device reached over SSH, as a `DeviceSpec` names it; remembers what it copied there."""

    real = True  # latency measured here is the device's

    def __init__(self, spec: DeviceSpec):
        parts = urlsplit(spec.url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if (parts.scheme != "ssh" or not parts.hostname or port in (-1, 0) or parts.query or parts.fragment
                or parts.netloc.endswith(":") or not spec.url.isprintable()):
            raise UsageError(f"--device {spec.url!r}: expected ssh://[user@]host[:port][/folder]")
        if parts.password is not None:
            raise UsageError("--device: a password in the URL is never used (BatchMode); give a key with --identity")
        for name, path in (("identity", spec.identity), ("known_hosts", spec.known_hosts)):
            if path and not Path(path).is_file():
                raise UsageError(f"device {name} {path}: no such file")
            if path and "${" in path:  # ssh reads ${NAME} there as an environment variable, and has no escape for it
                raise UsageError(f"device {name} {path}: ssh cannot read a path with '${{' in it; rename the file")
        if shutil.which("ssh") is None:
            raise UsageError("--device needs OpenSSH's client: install Debian's openssh-client")
        # absolute: ssh reads a leading `~` as a home, and edgekit may change folder meanwhile
        self.spec = replace(spec, **{k: os.path.abspath(v) for k in ("identity", "known_hosts")
                                     if (v := getattr(spec, k))})
        self.port = port
        # percent-decoded, as URLs are: /tmp/a%20b is the folder "a b"
        user, path = unquote(parts.username or ""), unquote(parts.path)  # /abs/folder, or /~/folder in the home
        if not (user + path).isprintable():
            raise UsageError(f"--device {spec.url!r}: expected ssh://[user@]host[:port][/folder]")
        if path.startswith("/~") and not path.startswith("/~/") and path != "/~":  # it made a folder named ~user
            raise UsageError(f"--device {spec.url!r}: /~user/ folders are not supported; give the folder's full path "
                             "(or /~/folder in the login's home)")
        self.destination = f"{user}@{parts.hostname}" if user else parts.hostname
        self.folder = (HOME if path in ("", "/", "/~", "/~/") else path[3:] if path.startswith("/~/") else path)
        self._copied: dict[Path, str] = {}
        self._run_folder: dict = {}  # {"run": its path there, "made": folders made for the named one}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Removes what this run made on the device (its run folder; a named folder it had to make, if empty)."""
        made, self._run_folder, self._copied = self._run_folder, {}, {}
        if made:
            try:
                self._ssh([self.spec.python, "-c", _REMOVE, made["run"], *made["made"]], b"", "clean-up")
            except StageError as e:  # said, not raised: it must not hide why the run ended (a timeout, Ctrl-C)
                left = [made["run"], *made["made"]]  # the folders made for it too: it would have removed them
                logging.getLogger("edgekit").warning("%s; %s %s left there", e, ", ".join(left),
                                                     "is" if len(left) == 1 else "are")

    @property
    def label(self) -> str:
        user, at, host = self.destination.rpartition("@")
        host = f"[{host}]" if ":" in host else host  # an IPv6 address: ::1:2222 read as one
        return f"device {user}{at}{host}" + (f":{self.port}" if self.port else "")

    def describe(self, about: dict) -> str:
        """The device as a figure measured there names it: with the providers its sessions ran with, as a host's."""
        providers = "".join(f"{p}, " for p in about.get("providers", []))
        return (f"{self.label}: {about['cpu']}, {about['cores']} cores, {about['machine']}, "
                f"{providers}onnxruntime {about['onnxruntime']}")

    def serve(self, folder: Path, request: dict) -> dict:
        """`runner.serve(request)` on the device, for `folder`'s files (copied there once)."""
        return self._run({**request, "folder": self._copied.get(folder) or self._copy(folder)})

    def _run(self, request: dict, step: str = "run") -> dict:
        script = Path(__file__).with_name("runner.py").read_bytes()
        request = {**request, "timeout": self.timeout[0]}  # the runner ends itself then, or when ssh is gone
        out = self._ssh([self.spec.python, "-c", _SUPERVISE, self.spec.python, "-", json.dumps(request)], script, step)
        try:
            answer = json.loads(out.decode(errors="replace").strip().splitlines()[-1])
        except (ValueError, IndexError, RecursionError):
            raise DeviceError("device run", f"{self.label} printed no result") from None
        if not well_formed(request, answer):
            raise DeviceError("device run", f"{self.label} answered with something that is not the runner's result")
        about = answer["about"]
        about.update({k: printable(about[k], 4096 if k == "features" else 300) for k in ABOUT_TEXT})
        about["providers"] = [printable(p, 100) for p in answer["providers"][:16]]  # what its sessions ran with
        for done in [*answer["replay"], answer.get("bench") or {}]:
            if "error" in done:
                done["error"] = printable(done["error"])
        return answer

    def about(self) -> dict:
        """The device's CPU, cores, machine and runtime versions (nothing copied)."""
        return self._run({"folder": "."}, "connect")["about"]  # the first step: a link that fails, fails here

    @functools.cached_property
    def arch(self) -> str:
        """The device's kind, as target profiles name it (`[runtime] arch`): asked once."""
        return host.arch_of(self.about()["machine"])

    def bench(self, folder: Path, models: dict[str, str], inputs: str, counts: tuple[int, ...], warmup: int,
              runs: int) -> list[dict]:
        """`folder`'s models (key → file name) timed round-robin on the device on the first sample of
        `inputs`, once per thread count: [{key: Latency}], each saying it was measured there."""
        from .bench import summarize

        found = []
        for threads in counts:
            used = min(threads, self.cores)  # more threads than cores measures contention, not the model
            if found and found[-1][next(iter(models))].threads == used:
                continue  # a 1-core device: the profile's count is already its 1
            answer = self.serve(folder, {"bench": {"models": models, "inputs": inputs, "threads": used,
                                                   "warmup": warmup, "runs": runs}})
            done, about = answer["bench"], answer["about"]
            if "times" not in done:
                raise StageError("device benchmark", f"{self.label}: {done['error']}")
            capped = f" (the profile's {threads} threads; it has {about['cores']} cores)" if used < threads else ""
            where = {**about, "threads": used,
                     "device": self.describe(about) + capped, "isa_source": "device",
                     "isa": host.isa_of(set(about["features"].split()), about["machine"])}
            found.append({k: summarize(t, done["load_ms"][k], used, where, warmup) for k, t in done["times"].items()})
        return found

    @functools.cached_property
    def cores(self) -> int:
        return self.about()["cores"]

    def latency(self, name: str, models: dict[str, Path], feed: dict, counts: tuple[int, ...], warmup: int,
                runs: int) -> list[dict]:
        """`bench` of model files from this host on one feed. They go to the package's own folder there
        (`name`), under the names the package's files then replace."""
        with tempfile.TemporaryDirectory(prefix="edgekit-device-") as tmp:
            folder = Path(tmp) / name
            folder.mkdir()
            for model in models.values():
                shutil.copyfile(model, folder / model.name)
            runner.write_inputs(folder / "golden.npz", [feed])
            try:
                return self.bench(folder, {k: m.name for k, m in models.items()}, "golden.npz", counts, warmup, runs)
            finally:
                self._copied.pop(folder, None)  # the package's own files go there next

    def make_run_folder(self) -> None:
        """This run's folder in the URL's folder on the device (made once; `close` takes it away): asked before any
        work, a folder that cannot be made fails the run at once, not each search trial after its export."""
        if self._run_folder:
            return
        made = self._ssh([self.spec.python, "-c", _MAKE, self.folder], b"", "folder")
        try:
            answer = json.loads(made.decode(errors="replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            answer = None
        # kept only once it is what _MAKE prints: close() removes what it names (a KeyError there hid this error, and
        # {"run": "/home/pi"} would have had that removed)
        if not (isinstance(answer, dict) and isinstance(answer.get("run"), str) and isinstance(answer.get("made"), list)
                and all(isinstance(m, str) for m in answer["made"])
                and (run := PurePosixPath(answer["run"])).is_absolute() and run.name.startswith("edgekit-run-")
                and all(PurePosixPath(m) in run.parents for m in answer["made"])):
            raise DeviceError("device folder", f"{self.label} did not say which folder it made")
        self._run_folder = answer

    def _copy(self, folder: Path) -> str:
        """The package folder as `<this run's folder>/<its name>` on the device: a tar stream, unpacked there."""
        self.make_run_folder()
        remote = f"{self._run_folder['run']}/{folder.name}"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.is_symlink():
                    tar.add(path, arcname=path.name)
        self._ssh([self.spec.python, "-c", _RECEIVE, remote], buf.getvalue(), "copy")
        self._copied[folder] = remote
        return remote

    @property
    def timeout(self) -> tuple[float, str]:
        """Seconds a step may take, and the setting that raises them: `[device] timeout`, else the run's own
        --step-timeout (check's and export's), so one setting bounds every step of a run."""
        if self.spec.timeout is not None:
            return self.spec.timeout, "[device] timeout"
        seconds, raised_by = runtime.run_limit()
        return seconds, raised_by or "[device] timeout"

    def _ssh(self, command: list[str], stdin: bytes, step: str) -> bytes:
        options = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=15",
                   "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if self.port:
            options += ["-p", str(self.port)]
        if self.spec.identity:
            options += ["-o", f"IdentityFile={ssh_path(self.spec.identity)}", "-o", "IdentitiesOnly=yes"]
        if self.spec.known_hosts:
            options += ["-o", f"UserKnownHostsFile={ssh_path(self.spec.known_hosts)}"]
        # exec: the command replaces the login shell, so the runner's parent is the SSH session it watches
        cmd = ["ssh", *options, "--", self.destination, "exec " + " ".join(shlex.quote(c) for c in command)]
        try:
            code, output, errors = bounded.capped_run(cmd, stdin, self.timeout[0], f"device {step}")
        except StageError as e:
            raise DeviceError(e.stage, f"{self.label}: {str(e).split(': ', 1)[1]}"
                              + (f"; raise it with {self.timeout[1]}" if "no answer" in str(e) else "")) from None
        if code != 0:
            why = printable(failure(code, errors))
            if "Host key verification failed" in why or "REMOTE HOST IDENTIFICATION HAS CHANGED" in errors:
                why += (" edgekit never accepts an unknown or changed host key: check the device's fingerprint, "
                        "then add it to known_hosts")
            raise DeviceError(f"device {step}", f"{self.label}: {why}")
        return output


ABOUT_TEXT = ("cpu", "machine", "features", "onnxruntime")


def failure(code: int, errors: str) -> str:
    """Why a device step failed, from ssh's exit code and stderr: ssh's own failure (255: its last line says why, a
    link that dropped included), a signal that killed the runner, or a Python exception's type and first line."""
    lines = [line.strip() for line in errors.splitlines() if line.strip()]
    if code == 255:
        return "the SSH connection failed or dropped" + (f": {lines[-1]}" if lines else " (ssh said nothing)")
    if lines and lines[-1].startswith(KILLED):
        return lines[-1][len("edgekit: "):] + (" (out of memory?)" if lines[-1].endswith("SIGKILL") else "")
    raw = errors.splitlines()
    start = max((i for i, line in enumerate(raw) if line.startswith("Traceback (most recent call last)")), default=-1)
    raised = [line.strip() for line in raw[start + 1:] if line.strip() and not line[0].isspace()] if start >= 0 else []
    if raised:  # "Error: message", or "Error:" with the message on the lines after it (numpy's ABI one)
        kind, _, message = raised[0].partition(":")
        message = message.strip() or next(iter(raised[1:]), "")
        return f"{kind}: {message}" if message else kind
    return lines[-1] if lines else f"exit code {code}"


def ssh_path(path: str) -> str:
    """`path` as an ssh_config value naming that very file: ssh splits it at spaces, expands `%` tokens and a
    leading `~` in it (`-i` too), so an absolute path goes quoted, with `%` as `%%`."""
    quoted = path.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{quoted}"'


def printable(text: str, limit: int = 300) -> str:
    """A device's words as one line of plain text: no control characters or terminal escapes."""
    return "".join(c if c.isprintable() else " " for c in text[:limit])


def well_formed(request: dict, answer) -> bool:
    """`answer` is what runner.serve returns for `request`: an entry per replay asked, and timings that are
    positive finite numbers, one per run; a device's answer is data from elsewhere, checked like a manifest."""
    def number(x, low: float) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and low <= x < float("inf")

    def text(x) -> bool:
        return isinstance(x, str)

    if not isinstance(answer, dict) or not isinstance(about := answer.get("about"), dict):
        return False
    if not (all(text(about.get(k)) for k in ABOUT_TEXT) and isinstance(about.get("cores"), int)
            and not isinstance(about["cores"], bool) and about["cores"] >= 1):
        return False
    if not (isinstance(providers := answer.get("providers"), list) and all(map(text, providers))):
        return False

    def replayed(r) -> bool:
        return isinstance(r, dict) and (text(r.get("error")) or text(r.get("outputs")) and number(r.get("seconds"), 0))

    replay = answer.get("replay")
    if not (isinstance(replay, list) and len(replay) == len(request.get("replay", [])) and all(map(replayed, replay))):
        return False
    if "bench" not in request:
        return True
    bench, keys = answer.get("bench"), set(request["bench"]["models"])
    if isinstance(bench, dict) and text(bench.get("error")):
        return True
    return (isinstance(bench, dict) and isinstance(times := bench.get("times"), dict) and set(times) == keys
            and isinstance(loads := bench.get("load_ms"), dict) and set(loads) == keys
            and all(number(loads[k], 0) for k in keys)
            and all(isinstance(t, list) and len(t) == request["bench"]["runs"] and all(number(x, 1e-9) for x in t)
                    for t in times.values()))
