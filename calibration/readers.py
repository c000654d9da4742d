"""Ready-made calibration readers for `--calibration calibration/readers.py:NAME`.

Each yields one sample per item as `{input name: array, "label": int}`; see README.md.
"""
from __future__ import annotations

import numpy as np


def digits_train(count: int = 1197, input_name: str = "image"):
    """scikit-learn's handwritten digits, the training split of examples/digits (1197 images), as labelled
    1x1x8x8 floats in [0, 1]: calibration data, or training data for `edgekit distill`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))[:1197][:count]
    for i in order:
        yield {input_name: (digits.images[i] / 16.0).astype(np.float32)[None, None], "label": int(digits.target[i])}
