"""Other CPUs' real onnxruntime kernels on an x86 host, under qemu user mode.

aarch64: Debian's arm64 Python with the aarch64 wheels of the package's onnxruntime and numpy versions. No root,
no binfmt registration, no chroot: mmdebstrap only unpacks the arm64 packages (it runs no arm64 code) into
edgekit's cache, once. qemu passes the x86 host's /proc/cpuinfo through, on which onnxruntime crashes; `-L`
serves the prefix's files first, so each emulated CPU gets a small overlay holding an arm64 cpuinfo (that core's
MIDR and features) and links to the shared root.

x86_64: this host's own Python on an x86-64 CPU without VNNI (qemu's TCG has AVX2, no AVX-512), so onnxruntime's
MLAS picks, from CPUID, the u8s8 kernels of the project's AVX2 hosts, whose int16 sums saturate (onnxruntime#6004)
where a VNNI host's are exact. The overlay holds only that CPU's cpuinfo; every other path is the host's.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import host
from .bounded import spawn_env
from .errors import InputError, StageError, UsageError
from .host import physical_memory
from .runtime import run_limit

ARCH = "aarch64"
DEFAULT_CPU = "neoverse-n1"
SUITE = "bookworm"  # its python3 is 3.11: the Python of the wheels below
PACKAGES = "python3,libstdc++6,libgcc-s1"
# onnxruntime 1.32's only aarch64 wheel is manylinux_2_28; older numpy releases are manylinux2014 (= 2_17): pip does
# not widen one exact tag, so each is asked for (the root is Debian 12, glibc 2.36, which runs all of them)
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
MIRROR_ENV = "EDGEKIT_DEBIAN_MIRROR"
CACHE_ENV = "EDGEKIT_CACHE"
TOOLS = {"qemu-aarch64-static": "qemu-user-static", "mmdebstrap": "mmdebstrap"}
SETUP_TIMEOUT = 900.0
_V8 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V82 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs"
# qemu -cpu name → (MIDR implementer, part, /proc/cpuinfo Features) of the real core
CPUS = {"cortex-a53": ("0x41", "0xd03", _V8), "cortex-a57": ("0x41", "0xd07", _V8),
        "cortex-a72": ("0x41", "0xd08", _V8), "cortex-a76": ("0x41", "0xd0b", _V82),
        "neoverse-n1": ("0x41", "0xd0c", _V82),
        "max": ("0x00", "0x051", _V82 + " jscvt fcma sha3 sm3 sm4 sha512 sve asimdfhm dit uscat ilrcpc flagm sb "
                                        "dcpodp sve2 flagm2 frint svei8mm svebf16 i8mm bf16 bti")}
X86 = "x86_64"
X86_DEFAULT_CPU = "epyc-milan"
X86_TOOLS = {"qemu-x86_64-static": "qemu-user-static"}
X86_WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
_AVX = "fpu tsc cx8 cmov mmx fxsr sse sse2 pni pclmulqdq ssse3 cx16 sse4_1 sse4_2 popcnt aes xsave avx"
_AVX2 = _AVX + " f16c rdrand fma movbe bmi1 bmi2 avx2 adx"
# name → (qemu -cpu model, /proc/cpuinfo model name and flags) of an x86-64 CPU whose ISA TCG runs (none past
# AVX2); Sandy Bridge's AVX-only MLAS kernels are the SSE ones
X86_CPUS = {"epyc-milan": ("EPYC-Milan-v1", "AMD EPYC-Milan Processor (Zen 3)", _AVX2 + " sha_ni vaes"),
            "haswell": ("Haswell-v4", "Intel Core Processor (Haswell, no TSX, IBRS)", _AVX2),
            "sandybridge": ("SandyBridge-v2", "Intel Xeon E312xx (Sandy Bridge, IBRS)", _AVX)}
VERSION = re.compile(r"[0-9][0-9A-Za-z.+!-]{0,40}")  # a manifest is a file from others: no pip options in it


@dataclass(frozen=True)
class Emulator:
    """One emulated CPU with one onnxruntime/numpy pair, ready to run `runner.py`."""

    cpu: str
    prefix: Path  # the CPU's overlay: its cpuinfo (aarch64: and links to the arm64 root)
    site: Path  # the wheels (x86_64 at this host's versions: this host's site-packages)
    onnxruntime: str
    qemu: str  # the qemu found on the user's PATH (the run's own PATH is /usr/bin:/bin)
    arch: str = ARCH
    python: str = ""  # x86_64: this host's interpreter (aarch64: the root's python3)

    @property
    def label(self) -> str:
        return f"{self.arch} (emulated, {self.cpu})"

    @property
    def saturates(self) -> bool:
        """Its int8 kernels' u8s8 sums saturate (x86-64 AVX2 without VNNI: VPMADDUBSW)."""
        return self.arch == X86 and "avx2" in X86_CPUS[self.cpu][2].split()

    def describe(self, about: dict | None = None) -> str:
        return f"{self.label}, onnxruntime {(about or {}).get('onnxruntime', self.onnxruntime)}"

    def serve(self, folder: Path, request: dict) -> dict:
        """`runner.serve(request)` on the emulated CPU, for files in `folder`; its answer, within the run's limit
        (--step-timeout)."""
        request = {**request, "folder": str(Path(folder).resolve())}
        script = Path(__file__).with_name("runner.py")
        model = X86_CPUS[self.cpu][0] if self.arch == X86 else self.cpu
        cmd = [self.qemu, "-cpu", model, "-L", str(self.prefix), self.python or str(self.prefix / "usr/bin/python3"),
               str(script), json.dumps(request)]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(self.site), "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONNOUSERSITE": "1", "LANG": "C.UTF-8", "HOME": str(self.prefix)}
        try:
            answer = run_json(cmd, env, run_limit()[0], f"{self.label} run")
        except StageError as e:  # a truncated library (Bus error), a wheel gone: the cache, not the model
            # "no output": its python did not start (a root with its python3.11 gone, an empty one)
            if "exit code -" in str(e) or "No module named" in str(e) or str(e).endswith("no output"):
                raise StageError(f"{self.label} run", f"{e.message}; if the emulator's cache is damaged, remove "
                                 f"{self.prefix.parent} and the next run rebuilds it") from e
            raise
        self._has_its_isa(answer.get("about"))
        return answer

    def _has_its_isa(self, about) -> None:
        """The emulated x86-64 CPU has the ISA its kernels are chosen by: a qemu before 7.2 runs no AVX2 (its TCG
        drops it from the model with a warning), and onnxruntime's SSE kernels, which do not saturate, passed."""
        if self.arch != X86 or not isinstance(about, dict) or not isinstance(about.get("cpuid"), list):
            return
        wanted = {"AVX2", "FMA3"} if self.saturates else {"AVX"}
        if missing := sorted(wanted - set(about["cpuid"])):
            raise UsageError(f"{self.qemu} runs no {', '.join(missing)} on -cpu {X86_CPUS[self.cpu][0]}: its "
                             f"kernels would not be a {self.cpu} CPU's (qemu 7.2 or newer emulates AVX2)")

    def outputs(self, model: Path, feeds: list[dict], names: list[str]) -> list[list]:
        """`model`'s outputs (in `names` order) for each feed, computed on the emulated CPU."""
        from . import arrays, runner

        with tempfile.TemporaryDirectory(prefix="edgekit-emulate-") as tmp:
            inputs = Path(tmp) / "inputs.npz"
            runner.write_inputs(inputs, feeds)
            replay = {"model": model.name, "inputs": str(inputs), "outputs": names}  # only these come back
            done = self.serve(model.parent, {"replay": [replay]})["replay"][0]
        if "error" in done:
            raise StageError(f"{self.label} run", f"{model.name}: {done['error']}")
        try:
            runs = arrays.runs_from(done["outputs"], len(feeds), len(feeds) * len(names))
        except InputError as e:
            raise StageError(f"{self.label} run", f"{model.name}: not the runner's result: {e}") from None
        return [[run[n] for n in names] for run in runs]


def run_json(cmd: list[str], env: dict, timeout: float, stage: str) -> dict:
    """A command that prints one JSON line last, capped in time, memory and what it prints (as a device's answer
    is); its value, or StageError."""
    from .bounded import capped_run

    def memory() -> None:  # a package is a file from others: its models may not take more than the machine has
        import resource

        physical = physical_memory()
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (physical if hard == resource.RLIM_INFINITY else min(physical, hard),
                                                hard))

    code, output, errors = capped_run(cmd, b"", timeout, stage, memory, env)
    try:
        return json.loads(output.decode(errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError, RecursionError):
        err = errors.strip().splitlines()
        raise StageError(stage, f"exit code {code}: {err[-1][:300] if err else 'no output'}") from None


def parse(spec: str) -> tuple[str, str]:
    """`aarch64[:CPU]` (default neoverse-n1) or `x86_64[:CPU]` (default epyc-milan) → (arch, CPU); anything else is
    a usage error."""
    if not isinstance(spec, str):
        raise UsageError(f"emulate takes a string such as 'x86_64:haswell', not {type(spec).__name__}")
    arch, _, cpu = spec.lower().partition(":")
    cpus = {ARCH: (CPUS, DEFAULT_CPU), X86: (X86_CPUS, X86_DEFAULT_CPU)}
    if arch not in cpus:
        raise UsageError(f"--emulate {spec!r}: only {ARCH}[:CPU] and {X86}[:CPU] are emulated")
    known, default = cpus[arch]
    cpu = cpu or default
    if cpu not in known:
        raise UsageError(f"--emulate {spec!r}: CPU {cpu!r} is not one of {', '.join(known)}")
    return arch, cpu


def cache_dir() -> Path:
    """`EDGEKIT_CACHE`, else the user cache dir ($XDG_CACHE_HOME or ~/.cache) / edgekit."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).absolute()  # a relative one made links that led nowhere
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit"


def setup(spec: str = ARCH, onnxruntime: str | None = None, numpy: str | None = None) -> Emulator:
    """The emulator for `spec`, built in the cache on first use (aarch64: root ~30 s, wheels ~10 s; x86_64: wheels
    only for versions other than this host's); later calls only find it. Versions default to this host's."""
    import numpy as np
    import onnxruntime as ort

    arch, cpu = parse(spec)
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    here = {"onnxruntime": ort.__version__, "numpy": np.__version__}
    versions = {"onnxruntime": str(onnxruntime or here["onnxruntime"]), "numpy": str(numpy or here["numpy"])}
    for name, version in versions.items():
        if not VERSION.fullmatch(version):
            raise UsageError(f"{name} version {version!r} is not a version number")
    tools = X86_TOOLS if arch == X86 else TOOLS
    found = {tool: shutil.which(tool) for tool in tools}
    if missing := [tool for tool, path in found.items() if path is None]:
        packages = " ".join(dict.fromkeys(tools[t] for t in missing))
        raise UsageError(f"emulating {arch} needs {', '.join(missing)}: install Debian's {packages} (apt-get install "
                         f"{packages})")
    if arch == X86 and host.arch_of(platform.machine()) != X86:
        raise UsageError(f"emulating {X86} runs this host's own x86-64 Python; this host is {platform.machine()}")
    qemu = str(Path(next(iter(found.values()))).absolute())
    home = cache_dir() / "emulator" / arch
    site = home / f"python-ort{versions['onnxruntime']}-numpy{versions['numpy']}"
    # the kernels are onnxruntime's: this host's release runs as it is, whatever numpy the package was made with
    own = arch == X86 and versions["onnxruntime"] == here["onnxruntime"] and _own_site()
    try:
        if not (own or site.is_dir()) or (arch == ARCH and not (home / "root").is_dir()):
            home.mkdir(parents=True, exist_ok=True)  # a run that finds them built waits for no one's build
            with open(home / ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # two first uses at once build it once
                for dead in home.glob(".*-*"):  # with the lock held, a build's temporary folder is a killed one's
                    shutil.rmtree(dead, ignore_errors=True)
                if arch == ARCH:
                    _built(home / "root", _root, "the arm64 root", log)
                if not own:
                    # x86_64 runs this host's Python; aarch64 the root's, 3.11
                    platforms, python = ((X86_WHEEL_PLATFORMS, "%d.%d" % sys.version_info[:2]) if arch == X86
                                         else (WHEEL_PLATFORMS, "3.11"))
                    _built(site, lambda tmp: _wheels(tmp, versions, platforms, python), f"the {arch} wheels", log)
        prefix = (_overlay_x86(home / f"cpu-{cpu}", cpu) if arch == X86 else
                  _overlay(home / f"cpu-{cpu}", home / "root", cpu))
    except OSError as e:  # a read-only or full cache: the user's to fix, and named
        raise InputError(f"{home}: the emulator's cache cannot be written ({e.strerror}); set {CACHE_ENV} to a "
                         "writable folder") from e
    if arch == X86:
        return Emulator(cpu, prefix, own or site, versions["onnxruntime"], qemu, X86, sys.executable)
    return Emulator(cpu, prefix, site, versions["onnxruntime"], qemu)


def _own_site() -> Path | None:
    """The folder this host's onnxruntime and numpy are both installed in (run as they are), if one holds both."""
    import numpy as np
    import onnxruntime as ort

    folders = {Path(m.__file__).resolve().parent.parent for m in (np, ort)}
    return folders.pop() if len(folders) == 1 else None


def _built(dest: Path, build, what: str, log) -> Path:
    """`dest`, built into a sibling temporary folder first and renamed: never a half-built cache entry."""
    if dest.is_dir():
        return dest
    log(f"building {what} in {dest} (once)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700: a cache built as root was unreadable to the CI user it was built for
        build(tmp)
        # stdlib and wheels compiled once here: Python 3.11's bytecode is the same on every CPU
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", str(tmp)], capture_output=True,
                       env=spawn_env())
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _step(cmd: list[str], stage: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=SETUP_TIMEOUT, env=spawn_env())
    except subprocess.TimeoutExpired:
        raise StageError(stage, f"took longer than {SETUP_TIMEOUT:g} s") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise StageError(stage, lines[-1][:300] if lines else f"exit code {done.returncode}")


def _root(tmp: Path) -> None:
    mirror = os.environ.get(MIRROR_ENV, "http://deb.debian.org/debian")
    try:
        _step(["mmdebstrap", "--quiet", "--variant=extract", "--architectures=arm64", f"--include={PACKAGES}", SUITE,
               str(tmp), mirror], "emulator setup (mmdebstrap)")
    except StageError as e:  # "E: mmdebstrap failed to run" alone: most often the mirror not reached
        raise StageError(e.stage, f"{e.message} (it downloads Debian's arm64 packages from {mirror}: is it "
                                  f"reachable? {MIRROR_ENV} names another)") from None


def _wheels(tmp: Path, versions: dict[str, str], platforms: tuple[str, ...], python: str) -> None:
    try:
        _wheel_step(tmp, versions, platforms, python)
    except StageError as e:  # an index not reached reads as a release with no wheel: both named
        raise StageError(e.stage, f"{e.message} (onnxruntime {versions['onnxruntime']} and numpy "
                                  f"{versions['numpy']}, as the package's manifest records, come from the package "
                                  "registry: is it reachable, and is there such a release? `edgekit emulator setup "
                                  "ARCH --onnxruntime V --numpy V` fetches them ahead of time)") from None


def _wheel_step(tmp: Path, versions: dict[str, str], platforms: tuple[str, ...], python: str) -> None:
    _step([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(tmp),
           *(arg for tag in platforms for arg in ("--platform", tag)), "--only-binary=:all:", "--python-version",
           python, "--implementation", "cp",
           *(f"{name}=={version}" for name, version in versions.items())], "emulator setup (pip download)")


def _overlay(dest: Path, root: Path, cpu: str) -> Path:
    """Links to the root's top-level entries and an arm64 /proc/cpuinfo of `cpu` (replaced whole when it differs,
    so a run beside never reads half a file)."""
    (dest / "proc").mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        link = dest / entry.name
        if entry.name != "proc" and not link.exists():  # missing, or leading nowhere (a cache moved or restored)
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            with contextlib.suppress(FileExistsError):  # a run beside made it first
                link.symlink_to(os.path.relpath(entry, dest))  # relative: the cache may be moved whole
    implementer, part, features = CPUS[cpu]
    text = "".join(f"processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {features}\nCPU implementer\t: {implementer}\n"
                   f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 0\n\n"
                   for i in range(os.cpu_count() or 1))
    return _cpuinfo(dest, text)


def _cpuinfo(dest: Path, text: str) -> Path:
    """`dest`/proc/cpuinfo holding `text`, replaced whole (a run beside never reads half a file); `dest`."""
    (dest / "proc").mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if (dest / "proc" / "cpuinfo").read_text(encoding="utf-8") == text:
            return dest  # as it should be: nothing written (a read-only cache works once built)
    fresh = dest / "proc" / f".cpuinfo-{os.getpid()}"
    fresh.write_text(text, encoding="utf-8")
    fresh.replace(dest / "proc" / "cpuinfo")
    return dest


def _overlay_x86(dest: Path, cpu: str) -> Path:
    """The emulated x86-64 CPU's /proc/cpuinfo (qemu passes the host's through: a VNNI host's flags), replaced whole
    when it differs; every other path is this host's."""
    _, name, flags = X86_CPUS[cpu]
    text = "".join(f"processor\t: {i}\nmodel name\t: {name}\nflags\t\t: {flags}\n\n"
                   for i in range(os.cpu_count() or 1))
    return _cpuinfo(dest, text)


def for_package(spec: str):
    """What `check` calls with each target's manifest: the emulator with that package's versions, or None for a
    package of the other kind (its golden outputs are that kind of CPU's kernels'), checked here."""
    def place(manifest: dict) -> Emulator | None:
        if bool(manifest.get("arm_kernels")) != (arch == ARCH):
            return None
        versions = manifest.get("versions") if isinstance(manifest.get("versions"), dict) else {}
        for name in ("onnxruntime", "numpy"):  # the package's, not the user's: bad input, never a usage error
            if versions.get(name) is not None and not VERSION.fullmatch(str(versions[name])):
                raise InputError(f"the package's manifest records {name} version {str(versions[name])[:60]!r}, "
                                 "not a version number")
        return setup(spec, versions.get("onnxruntime"), versions.get("numpy"))

    arch = parse(spec)[0]  # a bad spec is told before any package is read
    return place
