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
    [m] = json.loads(result.stdout)["targets"]
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
                                          ("sr=[1,2]", "sr has shape [2]"), ("sr", "expected NAME=VALUE"),
                                          pytest.param("sr=" + "[" * 20000 + "]" * 20000, "--constant sr: its value "
                                                       "is nested too deeply", id="deep")])  # was exit 5
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


def test_optional_input_keeps_its_default_or_takes_a_pinned_value(tmp_path):
    """An .onnx input backed by an initializer is optional: the data need not hold it, its default is baked in
    and listed; pinned, the deployed model computes with the pinned value instead."""
    from models import optional_gain_onnx
    model = optional_gain_onnx(tmp_path / "gained.onnx")
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(1).standard_normal((40, 8)).astype(np.float32))
    x = np.ones((1, 8), np.float32)
    reference = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    for extra, gain in (([], 2.0), (["--constant", "gain=3"], 3.0)):
        out = tmp_path / f"o{gain}"
        m = manifest(export(model, "--calibration", tmp_path / "x.npz", "--out", out, *extra))
        assert [i["name"] for i in m["inputs"]] == ["x"] and m["passed"]
        assert (m["optional_inputs"], m["constants"]) == (({"gain": 2.0}, {}) if not extra else (None, {"gain": 3.0}))
        deployed = ort.InferenceSession(str(out / "desktop-x86" / "model.onnx"))
        assert [i.name for i in deployed.get_inputs()] == ["x"]
        np.testing.assert_allclose(deployed.run(None, {"x": x})[0], reference * gain / 2.0, rtol=1e-5)


def test_float16_and_bool_inputs(tmp_path):
    """Inputs keep their dtypes through export and int8 (the app feeds float16 and bool); data of another
    dtype is bad input (exit 3), named."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((40, 8)).astype(np.float16), mask=rng.random((40, 8)) > 0.3)
    np.savez(tmp_path / "f32.npz", x=rng.standard_normal((40, 8)).astype(np.float32), mask=rng.random((40, 8)) > 0.3)
    args = ["models:mixed_dtypes", "--input", "x:Nx8:float16", "--input", "mask:Nx8:bool"]
    m = manifest(export(*args, "--calibration", tmp_path / "d.npz", "--out", tmp_path / "o"))
    assert [i["dtype"] for i in m["inputs"]] == ["float16", "bool"] and m["passed"]
    assert m["parity"]["export"]["outputs"][0]["cosine"] > 0.9999
    int8 = ort.InferenceSession(str(tmp_path / "o" / "desktop-x86" / "model.int8.onnx"))
    assert [i.type for i in int8.get_inputs()] == ["tensor(float16)", "tensor(bool)"]
    assert cli(["check", tmp_path / "o"]).exit_code == 0
    result = export(*args, "--calibration", tmp_path / "f32.npz", "--out", tmp_path / "bad")
    assert result.exit_code == 3
    assert "input 'x' has dtype float32, but its --input declares x:Nx8:float16" in result.output
