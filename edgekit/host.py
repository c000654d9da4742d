"""Where figures are measured: CPU model, ISA features that change int8 behaviour, runtime versions."""
from __future__ import annotations

import functools
import os
import platform


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def int8_isa() -> str:
    """The integer dot-product path onnxruntime's MLAS will use on this host."""
    flags = cpu_flags()
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64-i8mm" if "i8mm" in flags else "arm64-dotprod" if "asimddp" in flags else "arm64"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "sse"


def x86_needs_reduce_range() -> bool:
    """x86 without VNNI multiplies u8×s8 through VPMADDUBSW, whose int16 sums saturate (onnxruntime#6004)."""
    return platform.machine().lower() in ("x86_64", "amd64") and int8_isa() in ("avx2", "avx512", "sse")


def label(threads: int, providers: list[str]) -> dict:
    import onnxruntime

    return {"cpu": cpu_model(), "isa": int8_isa(), "cores": os.cpu_count(), "threads": threads,
            "providers": list(providers), "onnxruntime": onnxruntime.__version__,
            "machine": platform.machine()}


def describe(h: dict) -> str:
    return f"{h['cpu']} [{h['isa']}], {h['threads']} thread(s), {'+'.join(h['providers'])}, ORT {h['onnxruntime']}"
