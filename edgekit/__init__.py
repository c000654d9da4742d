"""edgekit: PyTorch models → validated int8 ONNX deployables per edge target.

    report = edgekit.export(model, inputs=["image:Nx1x8x8"], calibration=batches, targets=["desktop-x86"])
    assert report.passed and edgekit.check(report.out).passed
"""

__version__ = "0.1.1.dev0"
# The oldest edgekit whose `check` can check the packages this one writes (manifest.json's `checkable_by`; one older
# says "upgrade edgekit", not "tampered"). Raise it to __version__ in a release that changes what check reads or
# refuses: a gate, a manifest key or file it requires, golden.npz's layout. Left as it is otherwise, so CI machines
# and devices with older installs keep checking new packages (this version's own would lock them out at every release).
CHECKABLE_BY = "0.1.1"  # check reads quiet_floor and accuracy.output since
# The oldest edgekit whose packages this one's `check` reads (its manifest's `edgekit_version`, release numbers only):
# an older one's lack what check now requires (0.1.0's: report.md/report.html hashed, accuracy.output) and failed as
# tampered; they are refused as made by an older edgekit, to re-export. Raise it with CHECKABLE_BY.
READS_FROM = "0.1.1"
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
