"""Running models: onnxruntime sessions with a target's providers and threads, and the torch reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError, StageError, first_line


def session(path: Path | str, providers=("CPUExecutionProvider",), threads: int = 1, optimized_path: str = "",
            level: str = "all", exact_int8: bool = False):
    """A session on the providers this host really has; returns (session, providers used).

    `exact_int8` asks x86 MLAS for its non-saturating u8s8 kernels (`session.x64quantprecision`), so
    a model meant for an ARM device is judged by the arithmetic the device does, not by this host's
    VPMADDUBSW shortcut.
    """
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    used = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                     "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    if exact_int8:
        opts.add_session_config_entry("session.x64quantprecision", "1")
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=used), used
    except Exception as e:
        first = first_line(e)
        raise StageError("onnxruntime load", f"{Path(path).name}: {first}") from e


def run_onnx(sess, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    try:
        return [sess.run(None, feed) for feed in feeds]
    except Exception as e:
        raise StageError("onnxruntime run", first_line(e)) from e


def run_torch(module, feeds: list[dict[str, np.ndarray]], input_names: list[str]) -> list[list[np.ndarray]]:
    import torch

    results = []
    with torch.no_grad():
        for i, feed in enumerate(feeds):
            args = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in input_names]
            try:
                out = module(*args)
            except Exception as e:
                shapes = ", ".join(f"{n}:{list(a.shape)}" for n, a in zip(input_names, args))
                raise InputError(f"model does not run on inputs {shapes} (sample {i}): "
                                 f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
            results.append([o.detach().numpy() for o in flatten_outputs(out)])
    return results


def flatten_outputs(out) -> list:
    """Tensors of a model's output in the order torch.onnx exports them: nested tuples/lists/dicts flattened."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in flatten_outputs(item)]
    raise InputError(f"model returned a {type(out).__name__}; edgekit handles tensors and tuples/lists/dicts of them")
