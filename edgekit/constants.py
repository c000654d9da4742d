"""Inputs that are configuration (a sample rate, a mode flag), pinned to one value: the deployed model no
longer takes them, the data never holds them, and nothing on their path is quantized. Pinned, a branch
on them (`If` on `sr == 16000`) folds away in pre-processing, so the branch's ops reach the quantizer."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import InputSpec
from .errors import UsageError


def resolve(constants: dict, specs: tuple[InputSpec, ...]) -> dict[str, np.ndarray]:
    """Each pinned value as an array of its input's dtype and rank; a name that is not an input, a value
    the dtype cannot hold exactly or the wrong shape is a usage error."""
    by_name = {s.name: s for s in specs}
    pinned = {}
    for name, value in constants.items():
        spec = by_name.get(name)
        if spec is None:
            raise UsageError(f"constants: {name!r} is not a model input (inputs: {', '.join(by_name)})")
        try:
            raw = np.asarray(value)
            array = raw.astype(spec.dtype)
            # a float input takes the nearest float (0.1); an integer or bool input only an exact value
            exact = raw.dtype.kind in "biuf" and (np.isfinite(array).all() if array.dtype.kind == "f"
                                                   else np.array_equal(array, raw))
        except (TypeError, ValueError, OverflowError):
            exact = False
        if not exact:
            raise UsageError(f"constants: {name} = {value!r} is not a {spec.dtype} value")
        if array.ndim != len(spec.shape) or any(isinstance(d, int) and d != n for d, n in zip(spec.shape, array.shape)):
            raise UsageError(f"constants: {name} has shape {list(array.shape)}; input {spec} takes {list(spec.shape)}")
        pinned[name] = array
    return pinned


def pin_onnx(src: Path, dest: Path, pinned: dict[str, np.ndarray]) -> Path:
    """A copy of `src` in which each pinned graph input is an initializer holding its value."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    for name, value in pinned.items():  # an optional input's default initializer is replaced
        for held in [*(i for i in graph.input if i.name == name), *(t for t in graph.initializer if t.name == name)]:
            (graph.input if isinstance(held, onnx.ValueInfoProto) else graph.initializer).remove(held)
        graph.initializer.append(numpy_helper.from_array(value, name))
    onnx.save(model, str(dest))
    return dest


def pin_module(module, names: list[str], pinned: dict[str, np.ndarray]):
    """`module` taking only the inputs that are not pinned (in their order); the pinned ones are passed
    as constant buffers, so an export bakes them in."""
    import torch

    class Pinned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module
            for i, name in enumerate(names):
                if name in pinned:
                    self.register_buffer(f"pinned_{i}", torch.from_numpy(np.ascontiguousarray(pinned[name])))

        def forward(self, *args):
            given = iter(args)
            return self.inner(*[getattr(self, f"pinned_{i}") if name in pinned else next(given)
                                for i, name in enumerate(names)])

    return Pinned().eval()
