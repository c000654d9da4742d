"""ONNX pre-processing (onnx_export.py): a failing step is skipped and recorded, never a crash."""
import json

import numpy as np
import onnx
import pytest
from conftest import cli
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
