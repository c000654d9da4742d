"""uint8 camera input: a model's input normalisation folded into the deployable, so a device feeds the raw
pixels its camera gives (no float pre-processing there), and parity is measured from those same pixels.

`[model] image_uint8 = {input = "image", mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225]}`:
the input is declared uint8 (`image:Nx3x224x224:uint8`, what the data holds), channels on axis 1, and
mean/std are in the 0-1 units torchvision uses: the model sees (pixel / 255 - mean) / std.
"""
from __future__ import annotations

import math

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
            raise UsageError(f"{where}: {key} must be one number or one per channel, got {value!r}")
        stats[key] = np.asarray(values, dtype=np.float32).reshape(1, -1, 1, 1)
    if (stats["std"] <= 0).any():
        raise UsageError(f"{where}: std must be > 0")

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
