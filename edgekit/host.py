"""Where figures are measured: CPU model, ISA features that change int8 behaviour, runtime versions."""
from __future__ import annotations

import functools
import os
import platform

from .runner import cpuinfo, usable_cores


# numpy's CPUID feature → the /proc/cpuinfo flag X86_FLAGS reads (numpy names no AVX-VNNI or AMX: read as AVX2)
CPUID_FLAGS = {"AVX512VNNI": "avx512_vnni", "AVX512BW": "avx512bw", "AVX2": "avx2", "AVX": "avx", "SSE2": "sse2"}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's /proc/cpuinfo flags; where there are none (macOS, a sandbox hiding the file) on x86-64, those the
    CPU's own CPUID gives (numpy's): taken for SSE, an AVX2 CPU got full-range weights its kernels saturate."""
    info = cpuinfo()
    if found := (info.get("flags") or info.get("Features") or "").split():
        return frozenset(found)
    if arch_of(platform.machine()) != "x86_64":
        return frozenset()
    from .runner import cpuid

    return frozenset(CPUID_FLAGS[name] for name in cpuid() if name in CPUID_FLAGS)


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


ISA_ENV = "EDGEKIT_HOST_ISA"
ARCH_ENV = "EDGEKIT_HOST_ARCH"
ARCHS = ("x86_64", "arm64")
ISAS = ("amx-int8", "avx512-vnni", "avx-vnni", "avx512", "avx2", "sse", "arm64-i8mm", "arm64-dotprod", "arm64")
SATURATING_X86 = ("avx512", "avx2")  # measured: an AVX-only CPU's (SSE) u8s8 kernels do not saturate (test_emulate)
EXACT_X86 = ("amx-int8", "avx512-vnni", "avx-vnni")  # int32 dot products: u8×s8 sums never saturate
# cpuinfo flag → int8 path, best first; a host with none of them gets the baseline (arm64, sse). AMX: MLAS runs
# int8 GEMMs on its tiles (measured 9x its fp32 GEMM on a Sapphire Rapids core against VNNI's ~4x), convolutions
# on VNNI; both accumulate in int32 without saturating.
X86_FLAGS = (("amx_int8", "amx-int8"), ("avx512_vnni", "avx512-vnni"), ("avx_vnni", "avx-vnni"),
             ("avx512bw", "avx512"), ("avx2", "avx2"))
ARM_FLAGS = (("i8mm", "arm64-i8mm"), ("asimddp", "arm64-dotprod"))


def int8_isa() -> str:
    """The integer dot-product path onnxruntime's MLAS will use on this host.

    `EDGEKIT_HOST_ISA` overrides what /proc/cpuinfo says, so each branch that depends on it (reduce_range,
    exact-kernel sessions) can be exercised on any machine; the manifest records which one decided.
    """
    forced = os.environ.get(ISA_ENV, "").strip()
    if forced:
        from .errors import UsageError

        if forced not in ISAS:
            raise UsageError(f"{ISA_ENV}={forced!r} is not one of {', '.join(ISAS)}")
        if (kind := "arm64" if forced.startswith("arm64") else "x86_64") != arch():  # arm64-dotprod on x86: no branch
            raise UsageError(f"{ISA_ENV}={forced!r} is an {kind} ISA and this host is taken for {arch()} (set "
                             f"{ARCH_ENV}={kind} too, or an {arch()} ISA)")
        return forced
    return cpu_isa()


def cpu_isa() -> str:
    """The int8 path this CPU's kernels take, whatever EDGEKIT_HOST_ISA says: what ran is named by it."""
    return isa_of(cpu_flags(), platform.machine())


def cpu_saturates() -> bool:
    """This CPU's own int8 kernels saturate (x86 without VNNI), whatever EDGEKIT_HOST_ISA decides."""
    return cpu_isa() in SATURATING_X86


# MLAS's symmetric int8 convolution (convsym.cpp, MlasConvSymPackWSize), which onnxruntime's QLinearConv uses for
# uint8 activations and int8 weights of zero point 0: on x86-64 from AVX2 on (no S8S8 kernel there), a group-1 conv
# of input channels a multiple of 4 and output channels >= 16, a multiple of 8 (AVX2, AVX-VNNI) or 4 (AVX-512; AMX
# runs convolutions on AVX-512 VNNI). ARM64 takes none under 64 input channels or of a 1x1 kernel. Others fall back
# to im2col and a GEMM: a 3-channel stem was 0.36 ms int8 against 0.19 ms fp32 on MobileNetV2-style (AMX host).
SYM_CONV_X86 = ("amx-int8", "avx512-vnni", "avx-vnni", "avx512", "avx2")


def sym_conv_takes(arch: str, cin: int, cout: int, kernel: int) -> bool:
    """onnxruntime's fast int8 conv takes a u8s8 group-1 conv of these channels and kernel size (elements) on a
    device of `arch`; an x86-64 device is taken to have this host's int8 ISA (EDGEKIT_HOST_ISA overrides)."""
    if arch == "x86_64":
        out = 4 if int8_isa().startswith(("amx", "avx512")) else 8
        return int8_isa() in SYM_CONV_X86 and cin % 4 == 0 and cout >= 16 and cout % out == 0
    # ARM64: the plain NEON kernel packs 8 input and output channels, the dot-product one 4 and 16: both asked
    return arch == "arm64" and cin >= 64 and kernel > 1 and cin % 8 == 0 and cout % 16 == 0


def overrides_said() -> list[str]:
    """The EDGEKIT_HOST_* overrides in force, said on the console: one left set in CI changes the model quietly."""
    said = []
    if isa_source() == ISA_ENV:
        said.append(f"{ISA_ENV}={int8_isa()}: int8 decisions (reduce_range, exact-kernel sessions, padded conv inputs) "
                    f"are taken as for {int8_isa()}; the kernels that run are this CPU's ({cpu_isa()})")
    if arch_source() == ARCH_ENV:
        said.append(f"{ARCH_ENV}={arch()}: this {arch_of(platform.machine())} host is taken for {arch()} (which "
                    "targets' figures stand for their devices)")
    return said


def isa_of(flags: frozenset[str] | set[str], machine: str) -> str:
    """The int8 path of a CPU with these /proc/cpuinfo flags (this host's, or a device's)."""
    kind = arch_of(machine)
    if kind not in ("arm64", "x86_64"):
        return kind  # no int8 path edgekit knows
    arm = kind == "arm64"
    return next((isa for flag, isa in (ARM_FLAGS if arm else X86_FLAGS) if flag in flags), "arm64" if arm else "sse")


WORK_THREADS_ENV = "EDGEKIT_WORK_THREADS"


def work_threads() -> int:
    """Threads for a float model's outputs within one run (its validation outputs; the channel ranges that split
    outliers): the cores this process may use, or a search worker's share. They are compared within the run only,
    and came out the same bit for bit at 1-3 threads on the models tests/test_units.py tries. Golden vectors and
    `check` stay at 1 thread, int8 parity at the profile's threads: float kernels can round differently by thread
    count (an .ort file's unfused Conv: 3.6e-3 apart at 1 and 2 threads on ResNet18-style at 32x32), and golden
    vectors must come out the same on every machine. `EDGEKIT_WORK_THREADS` sets the count.
    """
    forced = os.environ.get(WORK_THREADS_ENV, "").strip()
    if forced:
        if not (forced.isascii() and forced.isdigit()) or int(forced) < 1:
            from .errors import UsageError

            raise UsageError(f"{WORK_THREADS_ENV}={forced!r} is not a positive whole number")
        return int(forced)
    return usable_cores()


RUN_MEMORY_ENV = "EDGEKIT_RUN_MEMORY_MB"
RUN_MEMORY_MOST = 4 << 30  # no edge device gives one model more


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def run_memory() -> int:
    """Bytes one run of a model (validation, calibration, golden and parity runs; not timings) may allocate: a
    400-byte model sized a 3 GB tensor by a calibration value, and a larger value would have taken the machine.
    Half the physical memory (the rest is the machine's), at most RUN_MEMORY_MOST; `EDGEKIT_RUN_MEMORY_MB` sets it."""
    forced = os.environ.get(RUN_MEMORY_ENV, "").strip()
    if forced:
        if not (forced.isascii() and forced.isdigit()) or not 1 <= int(forced) <= 1 << 30:  # 2^50 bytes: more
            from .errors import UsageError  # than onnxruntime's size_t took (exit 5)

            raise UsageError(f"{RUN_MEMORY_ENV}={forced!r} is not a whole number of MB from 1 to {1 << 30}")
        return int(forced) << 20
    return min(physical_memory() // 2, RUN_MEMORY_MOST)


def run_memory_source() -> str:
    if os.environ.get(RUN_MEMORY_ENV, "").strip():
        return RUN_MEMORY_ENV
    return "half the physical memory" if physical_memory() // 2 < RUN_MEMORY_MOST else "4 GiB at most"


def check_overrides() -> None:
    """Each EDGEKIT_HOST_* / EDGEKIT_WORK_THREADS / EDGEKIT_RUN_MEMORY_MB / EDGEKIT_STOP_GRACE_S override valid,
    told before any work: read where a figure needs it, a bad one was reported as the package's failed parity check
    (in `check`'s child)."""
    from .signals import grace

    int8_isa(), arch(), work_threads(), run_memory(), grace(strict=True)


def arch_source() -> str:
    return ARCH_ENV if os.environ.get(ARCH_ENV, "").strip() else "platform"


def isa_source() -> str:
    return ISA_ENV if os.environ.get(ISA_ENV, "").strip() else "cpuinfo"


def x86_saturates() -> bool:
    """x86 without VNNI multiplies u8×s8 through VPMADDUBSW, whose int16 sums saturate (onnxruntime#6004).

    Decides both `reduce_range=auto` for x86 targets and whether exact-arithmetic sessions need
    onnxruntime's `session.x64quantprecision` (VNNI's VPDPBUSD does not saturate: its default kernels
    are exact, and measured bit-identical to the exact option on reduce_range models).
    """
    return platform.machine().lower() in ("x86_64", "amd64") and int8_isa() in SATURATING_X86


def arch_of(machine: str) -> str:
    """A machine's kind as target profiles name it (`[runtime] arch`); another (armv7l, riscv64) is its own kind,
    which no profile targets: it was taken for x86_64, and a 32-bit ARM device timed desktop-x86's package."""
    kind = machine.lower()
    return "arm64" if kind in ("aarch64", "arm64") else "x86_64" if kind in ("x86_64", "amd64") else kind


def arch() -> str:
    """This host's kind, as target profiles name it. It decides which targets' figures stand for their devices
    (round_to auto's default target, `--precision latency`, the profile's providers being here);
    `EDGEKIT_HOST_ARCH` overrides it so each kind's branch can be exercised on any machine."""
    if arch_source() == ARCH_ENV:
        forced = os.environ[ARCH_ENV].strip()
        if forced not in ARCHS:
            from .errors import UsageError

            raise UsageError(f"{ARCH_ENV}={forced!r} is not one of {', '.join(ARCHS)}")
        return forced
    return arch_of(platform.machine())


def where(threads: int | None = None, providers=()) -> str:
    """This host, as a figure measured here names it (`describe`): `threads` and `providers` when a session made
    the figure, and the onnxruntime that ran it, which need not be the one a package was made with."""
    return describe(label(threads, providers))


def isa_shown(isa: str, source: str, cpu: str | None = None) -> str:
    return isa + (f" set by {ISA_ENV}" + (f"; the CPU's kernels {cpu}" if cpu and cpu != isa else "")
                  if source != "cpuinfo" else "")


def label(threads: int | None, providers) -> dict:
    import onnxruntime

    return {"cpu": cpu_model(), "isa": int8_isa(), "isa_source": isa_source(), "cpu_isa": cpu_isa(),
            "cores": usable_cores(),
            "threads": threads, "work_threads": work_threads(), "providers": list(providers),
            "onnxruntime": onnxruntime.__version__,
            "machine": platform.machine(), "arch": arch(),
            "arch_source": arch_source(), "run_memory_mb": run_memory() >> 20,
            "run_memory_source": run_memory_source()}


def describe(h: dict, fp32_threads: int | None = None) -> str:
    """Where a figure was measured, from `label`'s record (this host's, or an export's in its manifest): the CPU, its
    int8 path and what may have set them, the threads and providers of the session, and the onnxruntime version.
    `fp32_threads`: the float outputs' threads beside the session's int8 ones, said apart where they differ."""
    forced = f", taken for {h['arch']} by {ARCH_ENV}" if h.get("arch_source") == ARCH_ENV else ""
    cpu = f"host {h['machine']}{forced} ({h['cpu']})" if h.get("machine") else h["cpu"] + forced
    shown = [f"{cpu} [{isa_shown(h['isa'], h.get('isa_source', 'cpuinfo'), h.get('cpu_isa'))}]"]
    if h.get("threads"):
        # parity runs at the profile's threads whatever the cores (a report said 4 beside a latency caption's 2)
        over = f" (this host has {h['cores']} cores)" if h.get("cores") and h["threads"] > h["cores"] else ""
        shown.append(f"{h['threads']} thread(s){over}" if fp32_threads in (None, h["threads"]) else
                     f"int8 outputs at {h['threads']} thread(s){over}, ONNX fp32 outputs (export parity's, and the "
                     f"reference int8 is held to) at {fp32_threads} thread(s)")
    if h.get("providers"):
        shown.append("+".join(h["providers"]))
    if h.get("onnxruntime"):
        shown.append(f"onnxruntime {h['onnxruntime']}")
    return ", ".join(shown)
