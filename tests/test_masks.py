"""Infinite constants are masks (a causal mask buffer, masked_fill's -inf), not corrupt weights: they export, their
path stays float in int8, and NaN or an infinite weight is still bad input, named."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import cli
from models import causal_decoder
from onnx import TensorProto, helper

DECODER = ["models:causal_decoder", "--input", "input_ids:Nx8:int64"]


@pytest.fixture
def ids(tmp_path):
    path = tmp_path / "ids.npz"
    np.savez(path, input_ids=np.random.default_rng(0).integers(0, 50, (24, 8)))
    return path


def _exported(result, out):
    assert result.exit_code == 0, result.output
    target = out / "desktop-x86"
    checked = cli(["check", target])
    assert checked.exit_code == 0, checked.output
    return target, json.loads((target / "manifest.json").read_text())


def _stays_causal(model):
    """The int8 model's outputs at positions 0-3 are those of any later tokens: the mask holds (finite, too)."""
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(1).integers(0, 50, (2, 8))
    later = ids.copy()
    later[:, 4:] = (later[:, 4:] + 7) % 50
    a, b = (sess.run(None, {"input_ids": x})[0] for x in (ids, later))
    assert np.isfinite(a).all() and np.isfinite(b).all()
    np.testing.assert_array_equal(a[:, :4], b[:, :4])
    assert not np.array_equal(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("scheme", ["matmul-static", "off"])  # off: every op static QDQ, the mask's path too
def test_a_causal_mask_buffer_exports_and_stays_masked_in_int8(tmp_path, ids, scheme):
    out = tmp_path / "o"
    target, manifest = _exported(cli(["export", *DECODER, "--calibration", ids, "--no-bench", "--out", out,
                                      "--transformer-scheme", scheme, "--calibrate-method", "percentile"]), out)
    _stays_causal(target / "model.int8.onnx")
    kept = [d for d in manifest["quantization"]["decisions"] if "infinite constant" in d]
    if scheme == "off":
        assert kept and "Add" in kept[0] and "Softmax" in kept[0], manifest["quantization"]["decisions"]
        excluded = set(manifest["quantization"]["exclude_nodes"])
        int8 = onnx.load(str(target / "model.int8.onnx"))
        softmax = next(n for n in int8.graph.node if n.op_type == "Softmax")
        assert softmax.name in excluded
        producers = {o: n for n in int8.graph.node for o in n.output}
        assert producers[softmax.input[0]].op_type == "Add"  # float scores: no Q/DQ between the mask and Softmax


def test_a_causal_mask_in_a_torch_exported_onnx_file(tmp_path, ids):
    """torch.onnx.export writes the buffer as a -inf initializer; edgekit called it a corrupt weight (exit 3)."""
    path = tmp_path / "decoder.onnx"
    torch.onnx.export(causal_decoder(), (torch.zeros(1, 8, dtype=torch.long),), str(path), input_names=["input_ids"],
                      output_names=["logits"], dynamic_axes={"input_ids": {0: "N"}}, opset_version=17, dynamo=False)
    assert any(not np.isfinite(onnx.numpy_helper.to_array(t)).all() for t in onnx.load(str(path)).graph.initializer)
    out = tmp_path / "o"
    target, _ = _exported(cli(["export", path, "--calibration", ids, "--no-bench", "--out", out,
                               "--transformer-scheme", "off"]), out)
    _stays_causal(target / "model.int8.onnx")


def _onnx_with(path, value, op="Add"):
    """x [1, 4] -> op(x, a Constant [4, 4] or [4] holding `value`), the Constant unnamed (torch's are not always)."""
    shape = [4, 4] if op == "MatMul" else [4]
    constant = helper.make_node("Constant", [], ["c_out"], value=helper.make_tensor(
        "", TensorProto.FLOAT, shape, np.full(shape, value, np.float32).ravel().tolist()))
    graph = helper.make_graph([constant, helper.make_node(op, ["x", "c_out"], ["y"], name="uses")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("value,op,said", [
    (float("nan"), "Add", "tensor 'c_out' holds NaN values"),  # was "weight '' holds NaN or Inf values"
    (float("inf"), "MatMul", "weight 'c_out' holds infinite values (node 'uses' reads it as a weight"),
])
def test_a_corrupt_constant_is_bad_input_named(tmp_path, value, op, said):
    np.savez(tmp_path / "x.npz", x=np.ones((4, 1, 4), np.float32))
    result = cli(["export", _onnx_with(tmp_path / "m.onnx", value, op), "--calibration", tmp_path / "x.npz",
                  "--out", tmp_path / "o"])
    assert result.exit_code == 3 and said in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("where,value,said", [
    ("buffer", float("nan"), "buffer 'causal' holds NaN values"),
    ("parameter", float("-inf"), "weight 'qkv.weight' holds infinite values"),
])
def test_nan_anywhere_or_an_infinite_parameter_in_source_is_bad_input(tmp_path, ids, where, value, said):
    state = causal_decoder().state_dict()
    state["causal" if where == "buffer" else "qkv.weight"][0, 0] = value
    torch.save(state, tmp_path / "w.pt")
    result = cli(["export", *DECODER, "--weights", tmp_path / "w.pt", "--calibration", ids, "--out", tmp_path / "o"])
    assert result.exit_code == 3 and said in result.stderr, result.output
