"""uint8 camera input: a model's input normalisation folded into the deployable, so a device feeds the raw
pixels its camera gives (no float pre-processing there), and parity is measured from those same pixels.

`[model] image_uint8 = {input = "image", mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225]}`:
the input is declared uint8 (`image:Nx3x224x224:uint8`, what the data holds), channels on axis 1, and
mean/std are in the 0-1 units torchvision uses: the model sees (pixel / 255 - mean) / std.

The normalisation stays float in the int8 model (quantizing it only adds error). Where one scale and an
integer zero point quantize the normalised pixels back to exactly themselves (one mean and std for all
channels, 255 x mean an integer: x / 255, or (x - 128) / 128), the int8 model also drops the normalisation and
its input QuantizeLinear: the raw pixels feed the first DequantizeLinear (`raw_feed`), bit for bit the same
model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import UsageError


def fold(setting: dict, loaded, specs) -> object:
    """The torch module taking uint8 pixels for `setting["input"]` and normalising them itself."""
    import torch

    where = "[model] image_uint8"
    if loaded.module is None:
        raise UsageError(f"{where} folds the normalisation into a torch model (MODULE:FUNCTION, .pt); this source "
                         "is an .onnx or a torch.export program")
    if set(setting) != {"input", "mean", "std"}:
        raise UsageError(f"{where}: expected {{input = NAME, mean = [...], std = [...]}}, got keys {sorted(setting)}")
    names = [s.name for s in specs]
    if setting["input"] not in names:
        raise UsageError(f"{where}: {setting['input']!r} is not a model input ({', '.join(names)})")
    index = names.index(setting["input"])
    spec = specs[index]
    if spec.dtype != "uint8" or len(spec.shape) != 4:
        raise UsageError(f"{where}: declare {spec.name} as the uint8 NCHW pixels the device feeds, e.g. "
                         f"--input {spec.name}:Nx3x224x224:uint8 (it is {spec})")
    channels = spec.shape[1]
    stats = {}
    for key in ("mean", "std"):
        value = setting[key]
        values = value if isinstance(value, list) else [value]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        if not values or not numbers or len(values) not in (1, channels):
            raise UsageError(f"{where}: {key} must be one number or one per channel (axis 1 of {spec}: "
                             f"{channels}), got {value!r}")
        stats[key] = np.asarray(values, dtype=np.float32).reshape(1, -1, 1, 1)
    # In 0-1 units (pixel / 255), as torchvision writes them: 0-255 units (mmcv's 123.675, 58.395) would fold a
    # model that sees every image as nearly the same constant, and parity between two copies of it cannot tell.
    for key, low, high in (("mean", 0.0, 1.0), ("std", 1e-3, 1.0)):
        if not (low <= stats[key]).all() or not (stats[key] <= high).all():
            raise UsageError(f"{where}: {key} {setting[key]!r} is outside [{low:g}, {high:g}]: mean and std "
                             "are in 0-1 units (pixel / 255; for 0-255 values such as 123.675, divide by 255)")

    class Pixels(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.register_buffer("offset", torch.from_numpy(stats["mean"] * 255))
            self.register_buffer("scale", torch.from_numpy(1 / (stats["std"] * 255)))

        def forward(self, *args):
            args = list(args)
            args[index] = (args[index].float() - self.offset) * self.scale
            return self.inner(*args)

    return Pixels(loaded.module).eval()


@dataclass(frozen=True)
class Normalisation:
    """Where the folded normalisation sits in the float graph, and whether raw pixels can replace it."""
    input: str
    nodes: tuple[str, ...]  # Cast, Sub, Mul: kept float
    tensor: str  # the normalised pixels, as the first quantized op reads them
    scale: float | None  # (scale, zero point) that quantize `tensor` back to the raw pixels, when there is one
    zero_point: int | None
    why: str

    def overrides(self) -> dict:
        """onnxruntime's TensorQuantOverrides pinning the normalised tensor's quantization to the pixels'."""
        if self.scale is None:
            return {}
        return {self.tensor: [{"scale": np.array(self.scale, np.float32),
                               "zero_point": np.array(self.zero_point, np.uint8)}]}


def normalisation(model, setting: dict, activation_type: str) -> Normalisation:
    """Find the Cast -> Sub -> Mul that `fold` exported after `setting["input"]` in the float ModelProto (the
    optimiser drops a Sub of 0 or a Mul of 1), and check whether a QuantizeLinear of its output can be exactly
    the identity on every pixel value 0-255."""
    from onnx import numpy_helper

    from . import onnx_export

    graph = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers = onnx_export.consumers(graph)
    nodes, tensor, found = [], setting["input"], {"Sub": np.float32(0), "Mul": np.float32(1)}
    for op in ("Cast", "Sub", "Mul"):
        after = consumers.get(tensor, [])
        if len(after) == 1 and after[0].op_type == op and (op == "Cast" or after[0].input[1] in constants):
            nodes.append(after[0])
            tensor = after[0].output[0]
            if op != "Cast":
                found[op] = constants[after[0].input[1]].astype(np.float32)
        elif op == "Cast":
            return Normalisation(setting["input"], (), "", None, None, "the normalisation is not a Cast -> Sub -> "
                                 "Mul of constants in the exported graph: the input QuantizeLinear stays")
    names = tuple(n.name for n in nodes)
    offset, scale = found["Sub"], found["Mul"]

    def kept(why: str) -> Normalisation:
        return Normalisation(setting["input"], names, tensor, None, None, f"{why}: the input QuantizeLinear stays")

    if activation_type != "uint8":
        return kept(f"activations are {activation_type}, not uint8, so raw pixels cannot be the first quantized tensor")
    if np.ptp(offset) > 0 or np.ptp(scale) > 0:
        return kept("mean or std differ between channels, so one scale cannot quantize the normalised pixels back "
                    "to themselves")
    q_scale, q_zero = np.float32(scale.flat[0]), int(np.rint(offset.flat[0]))
    pixels = np.arange(256, dtype=np.float32)
    normalised = (pixels - offset.flat[0]) * scale.flat[0]
    exact = 0 <= q_zero <= 255 and all(np.abs(steps - (pixels - q_zero)).max() < 0.25 for steps in (
        normalised / q_scale, normalised * (np.float32(1) / q_scale)))  # as a kernel divides or multiplies
    if not exact:
        return kept(f"255 x mean = {float(offset.flat[0]):g} is not an integer zero point in 0-255, so the raw "
                    "pixels do not quantize the normalised ones")
    return Normalisation(setting["input"], names, tensor, float(q_scale), q_zero,
                         f"the raw pixels feed the first DequantizeLinear (scale {float(q_scale):.6g}, zero point "
                         f"{q_zero}): the normalisation and the input QuantizeLinear are gone")


def raw_feed(model, norm: Normalisation) -> str | None:
    """Let the raw uint8 input replace the QuantizeLinear of the normalised pixels in an int8 ModelProto, and
    drop the normalisation's nodes that nothing reads any more (reads inside If/Loop bodies count). Only when that
    QuantizeLinear has exactly the pinned scale and zero point, so every pixel value maps to itself. Returns None
    when done, else why not."""
    from onnx import numpy_helper

    from . import onnx_export

    if norm.scale is None:
        return norm.why
    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == norm.tensor]
    if len(quantize) != 1 or len(quantize[0].input) < 3:
        return (f"{len(quantize)} QuantizeLinear nodes read the normalised pixels (e.g. dynamic quantization "
                "has none): the normalisation stays")
    q = quantize[0]
    scale, zero = (constants.get(t) for t in q.input[1:3])
    if (scale is None or zero is None or numpy_helper.to_array(scale).shape != ()
            or np.float32(numpy_helper.to_array(scale)) != np.float32(norm.scale)
            or numpy_helper.to_array(zero).dtype != np.uint8 or int(numpy_helper.to_array(zero)) != norm.zero_point):
        return "the input QuantizeLinear's scale or zero point is not the pinned one: it stays"
    for n in onnx_export.all_nodes(graph):
        n.input[:] = [norm.input if t == q.output[0] else t for t in n.input]
    removed = []
    for node in [q, *reversed([n for n in graph.node if n.name in norm.nodes])]:  # Q, Mul, Sub, Cast
        read = {t for n in onnx_export.all_nodes(graph) for t in n.input} | {o.name for o in graph.output}
        if node is q or not any(o in read for o in node.output):
            graph.node.remove(node)
            removed.append(node)
    read = {t for n in onnx_export.all_nodes(graph) for t in n.input}
    for name in {t for n in removed for t in n.input} - read:
        if name in constants:
            graph.initializer.remove(constants[name])
    return None

