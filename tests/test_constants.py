"""Inputs of any rank, control flow, and configuration inputs pinned as constants (constants.py, calib.py)."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import cli
from models import if_on_scalar_onnx


def export(*args):
    return cli(["export", *args, "--no-bench", "--json"])


def manifest(result, code=0):
    assert result.exit_code == code, result.output
    [m] = json.loads(result.stdout)
    return m


@pytest.fixture
def vad(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((40, 1, 16, 16), dtype=np.float32)
    np.savez(tmp_path / "with_sr.npz", x=x, sr=np.full(40, 16000, np.int64))  # one scalar per sample, as (n,)
    np.savez(tmp_path / "x.npz", x=x)
    return if_on_scalar_onnx(tmp_path / "vad.onnx"), tmp_path


def _ops(path):
    graph = onnx.load(str(path)).graph
    subgraph_ops = [n.op_type for node in graph.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH
                    for n in a.g.node]
    return [n.op_type for n in graph.node], subgraph_ops, [i.name for i in graph.input]


def test_rank0_input_per_sample_and_float_subgraphs_are_recorded(vad):
    """A per-sample scalar stored as (n,) feeds a rank-0 input; the Convs inside the If stay float (onnxruntime's
    static quantizer does not enter sub-graphs) and the manifest and a warning say so."""
    model, tmp = vad
    m = manifest(export(model, "--calibration", tmp / "with_sr.npz", "--out", tmp / "o"))
    assert m["inputs"][1] == {"name": "sr", "shape": [], "dtype": "int64"} and m["passed"]
    assert sorted(m["float_subgraph_nodes"]["nodes"]) == ["khz16_conv", "khz16_relu", "khz8_conv", "khz8_relu"]
    assert any("inside sub-graphs stay float" in w for w in m["warnings"])
    top, inside, inputs = _ops(tmp / "o" / "desktop-x86" / "model.int8.onnx")
    assert "If" in top and "Conv" in inside and "QuantizeLinear" not in inside and inputs == ["x", "sr"]
    assert cli(["check", tmp / "o"]).exit_code == 0


def test_pinned_constant_folds_the_branch_so_its_conv_is_quantized(vad):
    model, tmp = vad
    m = manifest(export(model, "--calibration", tmp / "x.npz", "--constant", "sr=16000", "--out", tmp / "o"))
    assert m["constants"] == {"sr": 16000} and [i["name"] for i in m["inputs"]] == ["x"]
    assert m["float_subgraph_nodes"] is None and m["passed"]
    top, inside, inputs = _ops(tmp / "o" / "desktop-x86" / "model.int8.onnx")
    assert inputs == ["x"] and "If" not in top and not inside and "Conv" in top and "QuantizeLinear" in top
    # the deployed model computes what the original does at sr = 16000
    x = np.load(tmp / "x.npz")["x"][:4]
    want = ort.InferenceSession(str(model)).run(None, {"x": x, "sr": np.array(16000, np.int64)})[0]
    got = ort.InferenceSession(str(tmp / "o" / "desktop-x86" / "model.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert cli(["check", tmp / "o"]).exit_code == 0


@pytest.mark.parametrize("flag,message", [("nope=1", "'nope' is not a model input (inputs: x, sr)"),
                                          ("sr=16000.5", "sr = 16000.5 is not a int64 value"),
                                          ("sr=[1,2]", "sr has shape [2]"), ("sr", "expected NAME=VALUE")])
def test_bad_constants_are_usage_errors(vad, flag, message):
    model, tmp = vad
    result = cli(["export", model, "--calibration", tmp / "x.npz", "--constant", flag, "--out", tmp / "o"])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert message in line and not (tmp / "o").exists()


def test_torch_model_with_a_pinned_scalar_input(cnn_data, tmp_path):
    """The torch module takes (image, gain); pinned, the deployed model takes the image alone."""
    cal, val = cnn_data
    m = manifest(export("models:gained", "--input", "image:Nx3x16x16", "--input", "gain::float32",
                        "--constant", "gain=0.5", "--calibration", cal, "--validation", val, "--out", tmp_path / "o"))
    assert m["constants"] == {"gain": 0.5} and [i["name"] for i in m["inputs"]] == ["image"]
    assert m["parity"]["export"]["outputs"][0]["cosine"] > 0.99999 and m["passed"]
    assert _ops(tmp_path / "o" / "desktop-x86" / "model.int8.onnx")[2] == ["image"]


def test_rank0_samples_from_a_function(vad, monkeypatch):
    """`n` 0-d arrays yielded by a data function feed the rank-0 input too."""
    model, tmp = vad
    (tmp / "feeds.py").write_text(
        "import numpy as np\n"
        "def feeds():\n"
        "    x = np.load(__file__.replace('feeds.py', 'x.npz'))['x']\n"
        "    for i in range(len(x)):\n"
        "        yield {'x': x[i:i + 1], 'sr': np.array(16000, dtype=np.int64)}\n")
    m = manifest(export(model, "--calibration", f"{tmp / 'feeds.py'}:feeds", "--out", tmp / "o"))
    assert m["calibration"]["samples"] == 30 and m["passed"]


def test_constants_in_a_recipe_and_from_python(vad):
    import edgekit
    model, tmp = vad
    (tmp / "edgekit.toml").write_text(f'[model]\nsource = "{model.name}"\nconstants = {{sr = 16000}}\n'
                                      f'[data]\ncalibration = "x.npz"\n[export]\nout = "o"\nno_bench = true\n')
    m = manifest(cli(["export", tmp / "edgekit.toml", "--json"]))
    assert m["constants"] == {"sr": 16000} and m["float_subgraph_nodes"] is None
    report = edgekit.export(model, calibration=tmp / "x.npz", constants={"sr": 8000}, out=tmp / "api", no_bench=True)
    assert report.passed and report.targets["desktop-x86"].to_json()["constants"] == {"sr": 8000}


def test_float_constants_take_the_nearest_float_and_ints_must_be_exact():
    from edgekit import constants
    from edgekit.config import InputSpec
    from edgekit.errors import UsageError
    [value] = constants.resolve({"t": 0.1}, (InputSpec.parse("t::float32"),)).values()
    assert value.dtype == np.float32 and value == np.float32(0.1)
    with pytest.raises(UsageError, match="is not a float32 value"):
        constants.resolve({"t": float("inf")}, (InputSpec.parse("t::float32"),))
