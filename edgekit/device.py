"""A real device over SSH: the package is copied into the folder the user named, and `runner.py` runs
there with the device's own onnxruntime and numpy (nothing else is installed or left behind).

OpenSSH's client does the transport: keys come from the user's agent or `identity`, host keys are checked
against known_hosts and never accepted silently (StrictHostKeyChecking=yes, BatchMode=yes), and a dead
link is noticed by keep-alives. Every step is bounded in time; a failure is exit 4 naming the step.
"""
from __future__ import annotations

import functools
import io
import json
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from . import host, runner
from .config import DeviceSpec
from .errors import StageError, UsageError

DEFAULT_FOLDER = "edgekit-package"  # in the login's home folder when the URL names none
# Unpacks the tar stream on stdin into argv[1]; the 'data' filter where the device's Python has it.
_RECEIVE = ("import sys, tarfile; t = tarfile.open(fileobj=sys.stdin.buffer, mode='r|'); "
            "t.extractall(sys.argv[1], **({'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}))")


class Device:
    """One device reached over SSH, as a `DeviceSpec` names it; remembers what it copied there."""

    real = True  # latency measured here is the device's

    def __init__(self, spec: DeviceSpec):
        parts = urlsplit(spec.url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme != "ssh" or not parts.hostname or port == -1 or parts.query or parts.fragment:
            raise UsageError(f"--device {spec.url!r}: expected ssh://[user@]host[:port][/folder]")
        if spec.identity and not Path(spec.identity).is_file():
            raise UsageError(f"--identity {spec.identity}: no such file")
        if shutil.which("ssh") is None:
            raise UsageError("--device needs OpenSSH's client: install Debian's openssh-client")
        self.spec, self.port = spec, port
        self.destination = f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname
        path = parts.path  # /abs/folder, or /~/folder in the login's home (as git's ssh URLs)
        self.folder = DEFAULT_FOLDER if path in ("", "/") else path[3:] if path.startswith("/~/") else path
        self._copied: dict[Path, str] = {}

    @property
    def label(self) -> str:
        return f"device {self.destination}" + (f":{self.port}" if self.port else "")

    def describe(self, about: dict) -> str:
        return (f"{self.label}: {about['cpu']}, {about['cores']} cores, {about['machine']}, "
                f"onnxruntime {about['onnxruntime']}")

    def serve(self, folder: Path, request: dict) -> dict:
        """`runner.serve(request)` on the device, for `folder`'s files (copied there once)."""
        return self._run({**request, "folder": self._copied.get(folder) or self._copy(folder)})

    def _run(self, request: dict) -> dict:
        script = Path(__file__).with_name("runner.py").read_bytes()
        out = self._ssh([self.spec.python, "-", json.dumps(request)], script, "run")
        try:
            return json.loads(out.decode(errors="replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise StageError("device run", f"{self.label} printed no result") from None

    def about(self) -> dict:
        """The device's CPU, cores, machine and runtime versions (nothing copied)."""
        return self._run({"folder": "."})["about"]

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
            answer = self.serve(folder, {"bench": {"models": models, "inputs": inputs, "threads": threads,
                                                   "warmup": warmup, "runs": runs}})
            done, about = answer.get("bench") or {}, answer["about"]
            if "times" not in done:
                raise StageError("device benchmark", f"{self.label}: {done.get('error', 'no result')}")
            where = {**about, "threads": threads, "providers": ["CPUExecutionProvider"],
                     "device": self.describe(about), "isa_source": "device",
                     "isa": host.isa_of(set(about["features"].split()), about["machine"])}
            found.append({k: summarize(t, done["load_ms"][k], threads, where) for k, t in done["times"].items()})
        return found

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

    def _copy(self, folder: Path) -> str:
        """The package folder as `<named folder>/<its name>` on the device: a tar stream, unpacked there."""
        remote = f"{self.folder.rstrip('/')}/{folder.name}"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.is_symlink():
                    tar.add(path, arcname=path.name)
        self._ssh([self.spec.python, "-c", _RECEIVE, remote], buf.getvalue(), "copy")
        self._copied[folder] = remote
        return remote

    def _ssh(self, command: list[str], stdin: bytes, step: str) -> bytes:
        options = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=15",
                   "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
        if self.port:
            options += ["-p", str(self.port)]
        if self.spec.identity:
            options += ["-i", self.spec.identity, "-o", "IdentitiesOnly=yes"]
        if self.spec.known_hosts:
            options += ["-o", f"UserKnownHostsFile={self.spec.known_hosts}"]
        cmd = ["ssh", *options, "--", self.destination, " ".join(shlex.quote(c) for c in command)]
        try:
            done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=self.spec.timeout)
        except subprocess.TimeoutExpired:
            raise StageError(f"device {step}", f"{self.label}: no answer within {self.spec.timeout:g} s") from None
        if done.returncode != 0:
            err = [line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
            why = err[-1].strip()[:300] if err else f"exit code {done.returncode}"
            if "Host key verification failed" in why or "REMOTE HOST IDENTIFICATION HAS CHANGED" in "\n".join(err):
                why += (" edgekit never accepts an unknown or changed host key: check the device's fingerprint, "
                        "then add it to known_hosts")
            raise StageError(f"device {step}", f"{self.label}: {why}")
        return done.stdout
