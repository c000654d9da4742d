"""Run a package's models where they are deployed: on this host, on real aarch64 kernels under qemu, or
on a device over SSH.

Needs only numpy and onnxruntime and imports nothing from edgekit: this same file is sent as-is to an
emulator or a device (`python3 runner.py REQUEST_JSON`), and prints one JSON line. edgekit's own checks
and benchmarks call the same functions, so a figure means the same wherever it was measured.
"""
from __future__ import annotations

import base64
import importlib
import io
import json
import os
import platform
import sys
import time

STARTED_BY = os.getppid()  # before numpy's import (seconds on a device): a stop meanwhile must end this runner too

import numpy as np

ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
             "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd49": "Neoverse-N2"}


def usable_cores() -> int:
    """The cores this process may run on (`taskset`, a container's cpuset), not the machine's: latency timed at
    more threads than these measures contention, not the model."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpuinfo() -> dict[str, str]:
    """The first processor's /proc/cpuinfo fields (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def about() -> dict:
    """Where this runs: CPU model, cores, machine, runtime versions."""
    import onnxruntime

    info = cpuinfo()
    part = ARM_PARTS.get(info.get("CPU part", ""), f"ARM part {info['CPU part']}" if "CPU part" in info else "")
    cpu = info.get("model name") or info.get("Hardware") or part or platform.processor() or platform.machine()
    features = info.get("flags") or info.get("Features", "")  # x86's name for them, ARM's
    return {"cpu": cpu, "cores": usable_cores(), "machine": platform.machine(), "features": features,
            "cpuid": cpuid(), "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def cpuid() -> list[str]:
    """The SIMD features the CPU itself reports (numpy's dispatcher asks it, as onnxruntime's MLAS does), which an
    emulator's /proc/cpuinfo need not match: an older qemu drops AVX2 from its CPU model with only a warning."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as found
    except ImportError:  # numpy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as found
        except ImportError:
            return []
    return sorted(name for name, present in found.items() if present)


SPIN_OFF = ("session.intra_op.allow_spinning", "0")  # a pool's workers sleep after a run (runtime contracts say so)
# Every CPU session's config entries, as edgekit times and checks models and runtime contracts ask apps to set.
# Denormals flushed (x86; onnxruntime ignores it on ARM): MLAS's softmax gives a masked attention score a denormal,
# ~7x slower on Intel (MiniLM-L6 seq128 int8: Softmax 6.0 of 19 ms); outputs are unchanged (golden files too). Left
# on: the SkipLayerNormFusion (1.32's CPU kernel is scalar), as turning it off here moves a dynamic int8
# transformer's outputs 15x past its golden tolerance (packages made before, and apps' default sessions): new
# packages' graphs avoid it themselves (residuals.py).
CPU_ENTRIES = {"session.set_denormal_as_zero": "1"}
# An .ort file's saved runtime optimisations (the Runtime style's fused QLinear* kernels) are replayed only in a session
# that asks, in a full build as in an extended minimal one (convert_onnx_models_to_ort's help): without it a
# MobileNetV2-style .ort ran unfused, DequantizeLinear into float Conv, 6.7x slower than its .onnx.
REPLAY = ("session.enable_saved_runtime_optimizations", "1")


def model_entries(path) -> dict[str, str]:
    """The config entries a session of the model file at `path` needs to run as an app is told to (REPLAY)."""
    return dict([REPLAY]) if str(path).endswith(".ort") else {}


def open_session(path: str, threads: int, config: dict[str, str], providers, log_level: int = 3, optimized: str = ""):
    """A session of `path` with `options(threads, config)`, the file's own entries (model_entries) added. An .ort
    whose saved optimisations onnxruntime cannot replay (1.32 on a static-MatMul encoder: "Not enough produced nodes
    in the runtime optimization record") loads without them, unfused, as its runtime contract then says."""
    import onnxruntime as ort

    def make(entries: dict):
        opts = options(threads, {**entries, **config}, log_level)
        if optimized:
            opts.optimized_model_filepath = optimized
        return ort.InferenceSession(path, sess_options=opts, providers=list(providers))

    entries = model_entries(path)
    try:
        return make(entries)
    except Exception:
        if not entries:
            raise
    return make({})


def options(threads: int = 1, config: dict[str, str] | None = None, log_level: int = 3):
    """Session options as edgekit times and checks models: sequential, all graph optimisations, CPU_ENTRIES.

    With more than one thread, the pool's workers do not spin after a run: timed round-robin, a session's
    spinning workers take the cores from the next one's run (ResNet18-style int8 at 2 threads on 2 cores:
    17.7 ms interleaved vs 5.6 ms alone; without spinning 6.0 vs 6.1)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = log_level
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 1:
        opts.add_session_config_entry(*SPIN_OFF)
    for key, value in {**CPU_ENTRIES, **(config or {})}.items():
        opts.add_session_config_entry(key, value)
    return opts


def session(path: str, threads: int = 1, config: dict[str, str] | None = None):
    """A CPU session with `options`."""
    return open_session(path, threads, config or {}, ["CPUExecutionProvider"])


GIVE_BACK = ("memory.enable_memory_arena_shrinkage", "cpu:0")  # a run's arena memory back to the system after it


def replay(sess, feeds: list[dict], state: dict[str, str], outputs: list[str] | None = None,
           give_back: bool = False) -> list[dict]:
    """Each feed's outputs by name (`outputs`, with the state's, or all). A streaming model (`state`: input →
    output) gets, after the first step, what it fed back itself, so its own drift is what is checked. Outputs are
    copies: onnxruntime's arrays lie in its arena, and kept, they filled a memory-capped one (runtime.memory_capped),
    whose free memory the last run gives back with `give_back` (GIVE_BACK: only there, as a device's onnxruntime may
    be older than the option, or built without an arena, and then fails the run)."""
    import onnxruntime as ort

    names = [o.name for o in sess.get_outputs() if outputs is None or o.name in outputs or o.name in state.values()]
    last = ort.RunOptions() if give_back else None
    if last is not None:
        last.add_run_config_entry(*GIVE_BACK)
    runs: list[dict] = []
    for k, feed in enumerate(feeds):
        carried = {i: runs[-1][o] for i, o in state.items()} if runs else {}
        runs.append({n: np.array(o, copy=True)  # onnxruntime's arrays dropped before the next run: held over it,
                     for n, o in zip(names, sess.run(names, {**feed, **carried},  # a 16-byte output split its
                                                     last if k == len(feeds) - 1 else None))})  # run's 40 MB block
    return runs


# Timed one run each in turn, ResNet18-style int8 took 7.47 ms of CPU per run against 6.58 ms in runs of its own
# (fp32 19.2 ms either way: its weights take the cache from int8's), so int8's speed-up read 2.58x, not 2.92x; the
# first runs after a switch are the slow ones (8.6, 8.0, 7.7, 7.6, 7.4 ms).
BLOCK, REWARM = 10, 3


def time_round_robin(sessions: dict, feed: dict, warmup: int, runs: int, progress=None,
                     limit: float | None = None) -> dict[str, list[float]]:
    """Milliseconds per run of each session on one feed, in blocks of `BLOCK` runs that take turns (the order
    reversed each round) so drift hits them all alike; each block after `REWARM` untimed runs, as the other models'
    runs took its cache. `limit`: the seconds one run may take, past which a thread ends it (TimeoutError): a model
    whose run time changes from run to run (a Loop sized by a seeded RandomUniform) hung the 84th run for good.
    Nothing is added to a timed span but the start time kept for that thread."""
    import threading

    import onnxruntime as ort

    options, started, done = ort.RunOptions(), [0.0], threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            if started[0] and time.perf_counter() - started[0] > limit:
                options.terminate = True

    def timed(s) -> float:
        started[0] = start = time.perf_counter()
        try:
            s.run(None, feed, options)
        except Exception:
            if options.terminate:
                raise TimeoutError(f"a run of the model took longer than {limit:g} s") from None
            raise
        finally:
            started[0] = 0.0  # ended: the watcher must not take this start for the next run's
        return (time.perf_counter() - start) * 1e3

    if limit:
        threading.Thread(target=watch, daemon=True, name="edgekit-bench-limit").start()
    try:
        for _ in range(warmup):
            for s in sessions.values():
                timed(s)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        order = list(sessions.items())
        while order and (left := runs - len(times[order[0][0]])) > 0:
            block = min(BLOCK, left)
            for key, s in order:
                for _ in range(REWARM):
                    timed(s)
                times[key].extend(timed(s) for _ in range(block))
            order.reverse()
            if progress:
                progress(block)
        return times
    finally:
        done.set()


MEMORY_RUNS = 3  # runs whose peak memory is measured: the first allocates the arena, later ones may grow it


def peak_rss_mb(model: str, inputs: str, threads: int, runs: int, providers: list[str]) -> float:
    """The resident memory a process gains by loading `model` and running it `runs` times on the first sample of
    `inputs`: its peak (Linux's VmHWM, reset to the resident size once numpy and onnxruntime are imported, as their
    imports' own peak hid a small model's) over the resident size then."""
    importlib.import_module("onnxruntime")  # imported before the peak is reset: its import is not the model's
    feed = read_inputs(inputs)[0]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak resident size becomes the current one
    before = _status_kb("VmRSS")
    sess = open_session(model, threads, {}, providers)
    for _ in range(runs):
        sess.run(None, feed)
    return round((_status_kb("VmHWM") - before) / 1024, 1)


def _status_kb(field: str) -> int:
    """A /proc/self/status memory figure, in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_rss_in_child(model: str, inputs: str, threads: str, runs: str, providers: str) -> str:
    """`peak_rss_mb` for edgekit's bounded child (string arguments and result)."""
    return str(peak_rss_mb(model, inputs, int(threads), int(runs), json.loads(providers)))


MAX_GOLDEN_SAMPLES = 10_000
NAME_LISTS = ("input_names", "output_names")  # a golden file's names, kept as data
CHANNEL_ATOL = "channel_atol"  # golden.npz's per-channel tolerances (none where the output's is tight enough)


def golden_arrays(feeds: list[dict], names: list[str] = (), outputs: list[list] = (),
                  atol: dict[str, float] | None = None,
                  channels: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """A golden file's entries: `count`, the input and output names as data (`input_names`, `output_names`), and
    arrays by index (`input.<sample>.<k>`, `output.<sample>.<k>`, `atol.<k>`, `channel_atol.<k>`). Names are anyone's
    strings: as entry names, "../../x" let a naive unzip write outside its folder and a 300-character one broke
    `unzip` (rc 50)."""
    inputs = list(dict.fromkeys(n for feed in feeds for n in feed))
    names = list(dict.fromkeys([*names, *(atol or {})]))
    arrays = {"count": np.array(len(feeds)), "input_names": np.array(inputs, dtype=str),
              "output_names": np.array(names, dtype=str)}
    for i, feed in enumerate(feeds):
        arrays.update({f"input.{i}.{k}": feed[n] for k, n in enumerate(inputs) if n in feed})
    for i, out in enumerate(outputs):
        arrays.update({f"output.{i}.{k}": value for k, value in enumerate(out)})
    arrays.update({f"atol.{k}": np.array(atol[n]) for k, n in enumerate(names) if n in (atol or {})})
    arrays.update({f"{CHANNEL_ATOL}.{k}": channels[n] for k, n in enumerate(names) if n in (channels or {})})
    return arrays


def golden_parts(data: dict) -> tuple[list[dict], list[dict], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(inputs per sample, outputs per sample, tolerance arrays, per-channel tolerance arrays) of a golden file's
    entries; raises ValueError on a malformed layout."""
    count = data.get("count")  # an integer, as written (8.0 or "8" was taken as 8)
    if not (isinstance(count, np.ndarray) and count.shape == () and count.dtype.kind in "iu"):
        raise ValueError("no integer `count`")
    count = int(count)
    if not 1 <= count <= MAX_GOLDEN_SAMPLES:
        raise ValueError(f"count {count} out of range [1, {MAX_GOLDEN_SAMPLES}]")
    if missing := [k for k in NAME_LISTS if k not in data]:
        raise ValueError(f"it holds no {' and no '.join(missing)}")
    lists = [_names(data, k) for k in NAME_LISTS]
    inputs: list[dict] = [{} for _ in range(count)]
    outputs: list[dict] = [{} for _ in range(count)]
    atol, channels = {}, {}
    for key, value in data.items():
        kind, _, rest = key.partition(".")
        if kind not in ("input", "output", "atol", CHANNEL_ATOL):
            continue
        index, _, name = rest.partition(".") if kind in ("input", "output") else ("0", "", rest)
        if not (index.isascii() and index.isdigit()) or int(index) >= count or not name:
            raise ValueError(f"entry {key!r} does not name a sample below count {count}")
        known = lists[kind != "input"]  # index-named: the k-th of the list
        if not (name.isascii() and name.isdigit()) or int(name) >= len(known):
            raise ValueError(f"entry {key!r} names none of the {len(known)} in {NAME_LISTS[kind != 'input']}")
        name = str(known[int(name)])
        kept = {"atol": atol, CHANNEL_ATOL: channels}.get(kind)
        (kept if kept is not None else (inputs if kind == "input" else outputs)[int(index)])[name] = value
    return inputs, outputs, atol, channels


def _names(data: dict, key: str) -> list[str]:
    """A golden file's list of names: distinct strings."""
    names = data[key]
    if names.ndim != 1 or names.dtype.kind != "U" or len(set(names.tolist())) < names.size:
        raise ValueError(f"{key} is not a list of distinct names")
    return names.tolist()


def read_inputs(path: str) -> list[dict[str, np.ndarray]]:
    """The inputs of a golden (or feeds) .npz, one dict per sample (its outputs are not read)."""
    with np.load(path, allow_pickle=False) as data:
        return golden_parts({k: data[k] for k in data.files if not k.startswith("output.")})[0]


def write_inputs(path, feeds: list[dict]) -> None:
    """What `read_inputs` reads: feeds as a golden file's inputs."""
    np.savez(path, **golden_arrays(feeds))


def encode(runs: list[dict[str, np.ndarray]]) -> str:
    """Outputs as a base64 .npz (`<i>.<name>`): arrays cross the JSON line bit for bit."""
    buf = io.BytesIO()
    np.savez(buf, **{f"{i}.{name}": value for i, run in enumerate(runs) for name, value in run.items()})
    return base64.b64encode(buf.getvalue()).decode()


def serve(request: dict, config: dict[str, str] | None = None) -> dict:
    """Do what `request` asks: `replay` [{model, inputs, state, config}] and `bench` {models, inputs, threads,
    warmup, runs}; file names are in the `folder` on this machine. A model that fails is reported, never
    a crash. `providers`: those the sessions ran with, so a figure from elsewhere names them as this host's do;
    a replay's `config`: the entries its package's runtime contract gives that model's session (model_entries'
    replay off for an .ort recorded unfused)."""
    def at(name: str) -> str:
        return os.path.join(request["folder"], name)

    def opened(sess):
        done["providers"] = list(dict.fromkeys(done["providers"] + sess.get_providers()))
        return sess

    done: dict = {"about": about(), "replay": [], "providers": []}
    for job in request.get("replay", []):
        start = time.perf_counter()
        try:
            entries = {**(config or {}), **(job.get("config") or {})}
            runs = replay(opened(session(at(job["model"]), 1, entries)), read_inputs(at(job["inputs"])),
                          job.get("state") or {}, job.get("outputs"))
            done["replay"].append({"outputs": encode(runs), "seconds": time.perf_counter() - start})
        except Exception as e:
            done["replay"].append({"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"})
    bench = request.get("bench")
    if bench:
        try:
            sessions, loads = {}, {}
            for key, path in bench["models"].items():
                start = time.perf_counter()
                sessions[key] = opened(session(at(path), bench["threads"]))
                loads[key] = (time.perf_counter() - start) * 1e3
            feed = read_inputs(at(bench["inputs"]))[0]
            done["bench"] = {"times": time_round_robin(sessions, feed, bench["warmup"], bench["runs"]),
                             "load_ms": loads}
        except Exception as e:
            done["bench"] = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"}
    return done


def watch(parent: int, seconds: float) -> None:
    """Ends this process when whoever started it is gone (an SSH session dropped, edgekit interrupted or timed out)
    or its time is up: a runner left behind would take the device's cores from every later timing."""
    deadline = time.monotonic() + seconds
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.2)
    os._exit(3)


if __name__ == "__main__":
    import threading

    asked = json.loads(sys.argv[1])
    threading.Thread(target=watch, args=(STARTED_BY, float(asked.get("timeout", 3600))), daemon=True).start()
    print(json.dumps(serve(asked)))
