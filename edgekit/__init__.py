"""edgekit: PyTorch models → validated int8 ONNX deployables per edge target."""

__version__ = "0.1.0"
