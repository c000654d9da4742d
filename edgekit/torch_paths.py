"""Torch's own fast paths, off while edgekit runs a torch model, so that it computes what the exported graph does."""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def as_exported():
    """Torch's MultiheadAttention fast path off, the caller's setting restored after. In eval mode it runs
    nn.TransformerEncoder on nested tensors, which write 0 at padded positions, where the exported graph (traced
    without it: torch.export never takes it, and its nested tensors have no ONNX op) computes them as any other:
    a reference taken with it on failed export parity on a correct export (cosine 0.38 on a per-token tagger)."""
    import torch

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


@contextmanager
def unfused():
    """Torch's fused kernels, which its FLOP counter does not count, off: an LSTM (oneDNN's mkldnn_rnn_layer), a
    MultiheadAttention or TransformerEncoderLayer (their fast path) and attention (sdpa's CPU flash kernel) counted
    0 MACs; unfused, they run as the matrix products it counts."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False  # (its flags() warns about TF32 on stderr)
    try:
        with as_exported(), sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mkldnn.enabled = onednn
