"""ONNX pre-processing (onnx_export.py): a failing step is skipped and recorded, never a crash."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import DIGITS, cli
from models import gather_on_constant_onnx


def test_symbolic_shape_inference_failure_falls_back_and_is_recorded(tmp_path):
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    model = gather_on_constant_onnx(tmp_path / "m.onnx")
    with pytest.raises(AssertionError) as failed:  # the real failure, with its empty message
        SymbolicShapeInference.infer_shapes(onnx.load(str(model)), auto_merge=False)
    assert str(failed.value) == ""
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((24, 4), dtype=np.float32))
    result = cli(["export", model, "--calibration", tmp_path / "x.npz", "--out", tmp_path / "o", "--no-bench", "--json"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)
    assert m["preprocessing"]["skipped"] == ("symbolic shape inference failed (AssertionError); "
                                             "pre-processed without it")
    assert m["passed"] and m["parity"]["quantization"]["outputs"][0]["cosine"] > 0.99


def test_the_dynamo_exporter_says_nothing_on_a_model_it_exports(tmp_path):
    """Its steps came out as warnings on stderr: the opset it picked (and converted back), and each torchvision op it
    skipped, on every export of a model that uses neither."""
    done = subprocess.run([sys.executable, "-m", "edgekit", "export", str(DIGITS / "edgekit.toml"), "-t", "desktop-x86",
                           "--exporter", "dynamo", "--no-bench", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert json.loads((tmp_path / "o" / "desktop-x86" / "manifest.json").read_text())["model"]["exporter"] == "dynamo"
