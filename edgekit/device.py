"""A real device over SSH: the package is copied into the folder the user named, and `runner.py` runs
there with the device's own onnxruntime and numpy (nothing else is installed or left behind).

OpenSSH's client does the transport: keys come from the user's agent or `identity`, host keys are checked
against known_hosts and never accepted silently (StrictHostKeyChecking=yes, BatchMode=yes), and a dead
link is noticed by keep-alives. Every step is bounded in time; a failure is exit 4 naming the step.
"""
from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import StageError, UsageError

DEFAULT_FOLDER = "edgekit-package"  # in the login's home folder when the URL names none
# Unpacks the tar stream on stdin into argv[1]; the 'data' filter where the device's Python has it.
_RECEIVE = ("import sys, tarfile; t = tarfile.open(fileobj=sys.stdin.buffer, mode='r|'); "
            "t.extractall(sys.argv[1], **({'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}))")


@dataclass
class Ssh:
    """`ssh://[user@]host[:port][/folder]` and how to reach it: the package goes to /folder (or /~/folder in
    the login's home; default ~/edgekit-package)."""

    url: str
    identity: str | None = None  # a private key file; default: the user's agent and ssh's own defaults
    known_hosts: str | None = None  # default: ssh's (~/.ssh/known_hosts)
    python: str = "python3"  # on the device, with onnxruntime and numpy
    timeout: float = 600.0  # seconds per step (copy, run)
    real = True  # latency measured here is the device's
    _copied: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        parts = urlsplit(self.url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme != "ssh" or not parts.hostname or port == -1 or parts.query or parts.fragment:
            raise UsageError(f"--device {self.url!r}: expected ssh://[user@]host[:port][/folder]")
        self.destination = f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname
        self.port = port
        path = parts.path  # /abs/folder, or /~/folder in the login's home (as git's ssh URLs)
        self.folder = DEFAULT_FOLDER if path in ("", "/") else path[3:] if path.startswith("/~/") else path
        if self.identity and not Path(self.identity).is_file():
            raise UsageError(f"--identity {self.identity}: no such file")
        if shutil.which("ssh") is None:
            raise UsageError("--device needs OpenSSH's client: install Debian's openssh-client")

    @property
    def label(self) -> str:
        return f"device {self.destination}" + (f":{self.port}" if self.port else "")

    def describe(self, about: dict) -> str:
        return (f"{self.label}: {about['cpu']}, {about['cores']} cores, {about['machine']}, "
                f"onnxruntime {about['onnxruntime']}")

    def serve(self, folder: Path, request: dict) -> dict:
        """`runner.serve(request)` on the device, for `folder`'s files (copied there once)."""
        remote = self._copied.get(folder) or self._copy(folder)
        script = Path(__file__).with_name("runner.py").read_bytes()
        out = self._ssh([self.python, "-", json.dumps({**request, "folder": remote})], script, "run")
        try:
            return json.loads(out.decode(errors="replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise StageError("device run", f"{self.label} printed no result") from None

    def _copy(self, folder: Path) -> str:
        """The package folder as `<named folder>/<its name>` on the device: a tar stream, unpacked there."""
        remote = f"{self.folder.rstrip('/')}/{folder.name}"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.is_symlink():
                    tar.add(path, arcname=path.name)
        self._ssh([self.python, "-c", _RECEIVE, remote], buf.getvalue(), "copy")
        self._copied[folder] = remote
        return remote

    def _ssh(self, command: list[str], stdin: bytes, step: str) -> bytes:
        options = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=15",
                   "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
        if self.port:
            options += ["-p", str(self.port)]
        if self.identity:
            options += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            options += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        cmd = ["ssh", *options, "--", self.destination, " ".join(shlex.quote(c) for c in command)]
        try:
            done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise StageError(f"device {step}", f"{self.label}: no answer within {self.timeout:g} s") from None
        if done.returncode != 0:
            err = [line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
            why = err[-1].strip()[:300] if err else f"exit code {done.returncode}"
            if "Host key verification failed" in why or "REMOTE HOST IDENTIFICATION HAS CHANGED" in "\n".join(err):
                why += (" edgekit never accepts an unknown or changed host key: check the device's fingerprint, "
                        "then add it to known_hosts")
            raise StageError(f"device {step}", f"{self.label}: {why}")
        return done.stdout
