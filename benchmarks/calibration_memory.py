"""Peak memory of `edgekit export` against the number of calibration samples: MobileNetV2-style at 224x224
(defined in code), desktop-x86, no latency benchmark, one `edgekit export` process per row in one run.

    python benchmarks/calibration_memory.py [--samples 128,1024,4096] [--method minmax]

Each row calibrates on N samples of an N-sample .npy file (with a separate 32-sample validation file); the
last row calibrates on the first row's count of samples from the largest file. Peak RSS is the export
process's own (with the children it waits for), read from wait4. Bar (issue 14): 4096 samples peak at most 1.2x of 128.
Random pixels: this measures memory, not accuracy.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from edgekit import host  # noqa: E402

BAR = 1.2
SHAPE = (3, 224, 224)


def write_samples(path: Path, count: int) -> Path:
    """An .npy of `count` random images, written a block at a time and never mapped: a child's peak RSS starts
    from this process's own high-water mark (Linux carries it across fork and exec), which must stay small."""
    rng = np.random.default_rng(count)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (count, *SHAPE)})
        for start in range(0, count, 16):
            rng.random((min(16, count - start), *SHAPE), dtype=np.float32).tofile(f)
    return path


def export_peak(calibration: Path, validation: Path, samples: int, method: str, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one `edgekit export`."""
    cmd = [sys.executable, "-m", "edgekit", "export", f"{HERE}/arch.py:mobilenetv2_style",
           "--input", "image:1x3x224x224", "--calibration", str(calibration), "--validation", str(validation),
           "--calibration-samples", str(samples), "--calibrate-method", method, "--no-bench", "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0, 1):  # 1: a parity gate on random pixels, not a failure here
        raise SystemExit(f"edgekit export failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", default="128,1024,4096", help="calibration sample counts, comma-separated")
    ap.add_argument("--method", default="minmax", choices=("minmax", "entropy", "percentile"))
    args = ap.parse_args()
    counts = [int(c) for c in args.samples.split(",")]
    print(f"measured on {host.where()}; calibrate_method {args.method}; MobileNetV2-style 1x3x224x224")
    print("calibration file | samples used | file MB | peak RSS MB | vs first row | wall s")
    with tempfile.TemporaryDirectory(prefix="edgekit-calmem-") as tmp:
        tmp = Path(tmp)
        validation = write_samples(tmp / "val.npy", 32)
        rows = [(n, n) for n in counts] + [(max(counts), counts[0])]
        first = None
        for file_count, used in rows:
            data = tmp / f"cal{file_count}.npy"
            if not data.exists():
                write_samples(data, file_count)
            peak, wall = export_peak(data, validation, used, args.method, tmp / f"out{file_count}-{used}")
            first = first or peak
            print(f"{file_count:>16} | {used:>12} | {data.stat().st_size / 2**20:7.0f} | {peak:11.0f} | "
                  f"{peak / first:11.2f}x | {wall:6.1f}")
            if file_count == 4096 and used == 4096:
                verdict = "met" if peak / first <= BAR else "MISSED"
                print(f"  bar: 4096 samples <= {BAR}x the first row's peak: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
