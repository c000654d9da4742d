"""edgekit: PyTorch models → validated int8 ONNX deployables per edge target.

    report = edgekit.export(model, inputs=["image:Nx1x8x8"], calibration=batches, targets=["desktop-x86"])
    assert report.passed and edgekit.check(report.out).passed
"""

__version__ = "0.1.0"
__all__ = ["export", "check", "prune", "share", "distill", "quantize", "ExportReport", "TargetReport", "CheckReport",
           "DeviceSpec", "EdgekitError", "UsageError", "InputError", "StageError",
           "BusyError"]


def __getattr__(name: str):
    """The API loads on first use: `import edgekit` alone stays light (no onnxruntime, no torch)."""
    if name in ("export", "check", "prune", "share", "distill", "quantize"):
        from . import api
        return getattr(api, name)
    if name in ("ExportReport", "TargetReport", "CheckReport"):
        from . import reports
        return getattr(reports, name)
    if name == "DeviceSpec":
        from . import config
        return config.DeviceSpec
    if name in ("EdgekitError", "UsageError", "InputError", "StageError", "BusyError"):
        from . import errors
        return getattr(errors, name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
