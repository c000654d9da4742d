"""ONNX pre-processing (onnx_export.py): a failing step is skipped and recorded, never a crash."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import onnx
import pytest
from conftest import DIGITS, cli, encoder_feeds
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
    [m] = json.loads(result.stdout)["targets"]
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


def test_a_branch_on_a_tensors_value_is_said_by_either_exporter(tmp_path):
    """The tracer froze `if image.max() > 1.5` on its noise and export parity failed without a word of why (its
    TracerWarning was silenced); torch.export refused it with "Failed to export ... Next steps:" and 35 lines of
    graph on stderr."""
    (tmp_path / "branch.py").write_text(
        "import torch\n\nclass M(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = torch.nn.Linear(64, 10)\n\n    def forward(self, image):\n        if image.max() > 1.5:\n"
        "            image = image / 16\n        return self.fc(image.flatten(1))\n\ndef build():\n"
        "    torch.manual_seed(0)\n    return M()\n")
    args = ["export", f"{tmp_path / 'branch.py'}:build", "--input", "image:Nx1x8x8", "--calibration",
            str(DIGITS / "data" / "calibration.npz"), "--no-bench"]
    traced = cli([*args, "--out", str(tmp_path / "t"), "--json"])
    assert traced.exit_code == 1, traced.output
    said = [w for w in json.loads(traced.stdout)["targets"][0]["warnings"] if w.startswith("the tracer warned: ")]
    assert said and "Python boolean" in said[0], said
    done = subprocess.run([sys.executable, "-m", "edgekit", *args, "--out", str(tmp_path / "d"), "--exporter",
                           "dynamo"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 4 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "cannot follow a branch or size taken from a tensor's values" in done.stderr


def test_forward_parameters_with_defaults_stay_defaults(tmp_path):
    """torch's TorchScript exporter appended `forward`'s other parameters' defaults as inputs: `scale=2.0` became
    a float64 input `onnx::Cast_1` (exit 3, "element type 11 (DOUBLE)")."""
    import onnxruntime as ort
    import torch

    from edgekit.config import InputSpec
    from edgekit.onnx_export import export_torch

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x, scale=2.0, features=False):
            y = self.linear(x) * scale
            return (y, x) if features else y

    model = Scaled().eval()
    path = export_torch(model, (InputSpec.parse("x:Nx4"),), (), 17, tmp_path / "m.onnx")
    assert [i.name for i in onnx.load(path).graph.input] == ["x"]
    assert [n.op_type for n in onnx.load(path).graph.node if n.op_type == "Gemm"] and "forward" not in vars(model)
    x = np.random.default_rng(0).random((2, 4), np.float32)
    [y] = ort.InferenceSession(str(path)).run(None, {"x": x})
    np.testing.assert_allclose(y, model(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_a_dict_output_with_keys_that_are_not_strings_says_so(tmp_path):
    """`return {0: y, 1: y + 1}` was exit 4 "export failed: RuntimeError: output 1 (0": torch's words cut."""
    import torch

    from edgekit.config import InputSpec
    from edgekit.errors import InputError
    from edgekit.onnx_export import export_torch

    class Numbered(torch.nn.Module):
        def forward(self, x):
            return {0: x * 2, 1: x + 1}

    with pytest.raises(InputError, match="a dict with the key 0: ONNX names its outputs, so the keys must be strings"):
        export_torch(Numbered(), (InputSpec.parse("x:Nx4"),), (), 17, tmp_path / "m.onnx")


@pytest.mark.parametrize("returned, said", [
    ("(x * 2, {'aux': x + 1, 'n': 3})", "the model returned an int at output[1]['n']; edgekit handles tensors and "
     "tuples/lists/dicts of them (return a tensor there, or leave it out)"),
    ("x * 2, None", "the model returned None at output[1]; edgekit handles tensors and tuples/lists/dicts of them "
     "(return a tensor there, or leave it out)"),
    ("3", "the model returned an int; edgekit handles tensors and tuples/lists/dicts of them")])
def test_an_output_that_is_not_a_tensor_is_named_where_it_is(tmp_path, returned, said):
    """`(y, {"aux": y, "n": 3})` was "model returned a int": which output, and no grammar."""
    (tmp_path / "m.py").write_text(f"import torch\n\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                                   f"        return {returned}\n\ndef build():\n    return M()\n")
    result = cli(["export", f"{tmp_path / 'm.py'}:build", "--input", "x:Nx4", "--calibration", "random", "--no-bench",
                  "--out", tmp_path / "o"])
    assert result.exit_code == 3 and result.stderr == f"edgekit: error: {said}\n", result.output


@pytest.mark.parametrize("data", ["random", "npz"])
def test_ids_declared_float_are_said_to_be_declared_int64(tmp_path, data):
    """A policy's mode id into an nn.Embedding declared `mode:N` (float32) said only torch's "Expected tensor for
    argument #1 'indices' to have one of the following scalar types: Long, Int": not which input to declare how."""
    (tmp_path / "m.py").write_text(
        "import torch\n\nclass M(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.e = torch.nn.Embedding(4, 2)\n\n    def forward(self, x, mode):\n"
        "        return x + self.e(mode)\n\ndef build():\n    return M()\n")
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 2), np.float32), mode=np.arange(8, dtype=np.float32) % 4)
    result = cli(["export", f"{tmp_path / 'm.py'}:build", "--input", "x:Nx2", "--input", "mode:N", "--calibration",
                  "random" if data == "random" else tmp_path / "d.npz", "--no-bench", "--out", tmp_path / "o"])
    assert result.exit_code == 3 and result.stderr.endswith(
        "(ids, as an nn.Embedding takes, must be integers: declare the ids input int64, NAME:SHAPE:int64, and give "
        "int64 data; declared float here: x, mode)\n"), result.output


@pytest.mark.parametrize("annotation, names", [("", "x"), (": dict", "xy"), (": 'Mapping[str, torch.Tensor]'", "xy")])
def test_a_forward_taking_a_dict_is_said_in_one_line(tmp_path, annotation, names):
    """`forward(self, batch)` reading batch["x"] was `TypeError: new(): invalid data type 'str'` after torch's
    indexing UserWarning on stderr: that it takes a dict, which edgekit cannot feed, and how to wrap it."""
    (tmp_path / "m.py").write_text(
        "import torch\nfrom typing import Mapping\n\nclass M(torch.nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.fc = torch.nn.Linear(4, 2)\n\n"
        f"    def forward(self, batch{annotation}):\n        return self.fc(sum(batch[k] for k in {names!r}))\n\n"
        "def build():\n    return M()\n")
    given = [a for n in names for a in ("--input", f"{n}:Nx4")]
    done = subprocess.run([sys.executable, "-m", "edgekit", "export", f"{tmp_path / 'm.py'}:build", *given,
                           "--calibration", "random", "--no-bench", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 3 and done.stderr == (
        "edgekit: error: the model's forward(batch) takes its inputs as one dict, which edgekit cannot feed (it "
        f"passes each input as a tensor, in order): export a wrapper whose forward(self, {', '.join(names)}) calls "
        f"the model with {{{', '.join(f'{n!r}: {n}' for n in names)}}}\n"), done.stderr


def test_a_models_own_warning_is_still_shown(tmp_path):
    """The model's warnings are held while it runs (dropped if it fails): one that runs still shows them."""
    (tmp_path / "warns.py").write_text(
        "import warnings\n\nimport torch\n\nclass M(torch.nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.fc = torch.nn.Linear(4, 2)\n\n    def forward(self, x):\n"
        "        warnings.warn('clipping the input')\n        return self.fc(x.clamp(-3, 3))\n\n"
        "def build():\n    return M()\n")
    done = subprocess.run([sys.executable, "-m", "edgekit", "export", f"{tmp_path / 'warns.py'}:build", "--input",
                           "x:Nx4", "--calibration", "random", "--no-bench", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and "UserWarning: clipping the input" in done.stderr, done.stderr


def test_a_shipped_model_keeps_the_domains_its_sub_graphs_and_functions_use(tmp_path):
    """What `save_shipped` drops (an import no node uses) and keeps: ONNX's own, and the domains of nodes inside an
    If's branches and of a local function's body, which a walk of the top graph's nodes would not see."""
    from onnx import TensorProto, helper

    from edgekit.onnx_export import save_shipped

    def branch(domain: str):
        return helper.make_graph([helper.make_node("Relu", ["x"], ["y"], domain=domain)], "b", [],
                                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])

    body = helper.make_function("local.fn", "Twice", ["a"], ["b"], [helper.make_node("Gelu", ["a"], ["b"],
                                domain="com.microsoft")], [helper.make_opsetid("com.microsoft", 1)])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=branch("com.example"), else_branch=branch("")),
             helper.make_node("Twice", ["y"], ["z"], domain="local.fn")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])])
    imports = [("", 17), ("ai.onnx.ml", 5), ("com.example", 1), ("com.microsoft", 1), ("local.fn", 1),
               ("com.microsoft.nchwc", 1)]
    model = helper.make_model(graph, functions=[body], opset_imports=[helper.make_opsetid(d, v) for d, v in imports])
    save_shipped(model, tmp_path / "m.onnx")
    kept = [(o.domain, o.version) for o in onnx.load(tmp_path / "m.onnx").opset_import]
    assert kept == [("", 17), ("com.example", 1), ("com.microsoft", 1), ("local.fn", 1)], kept


def test_inputs_named_as_forwards_parameters_come_in_its_order(tmp_path):
    """Inputs go to forward by position: `forward(left, right)` declared as right, left was exported with `right`
    feeding `left`, and passed parity. Named otherwise (x, y), position is all there is."""
    import torch

    from edgekit.config import InputSpec
    from edgekit.errors import UsageError
    from edgekit.onnx_export import export_torch

    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = torch.nn.Linear(4, 4)

        def forward(self, left, right):
            return self.f(left) - 2 * self.f(right)

    swapped = (InputSpec.parse("right:Nx4"), InputSpec.parse("left:Nx4"))
    with pytest.raises(UsageError, match=r"input 'right' is given first, but it is the second parameter of the "
                                         r"model's forward\(left, right\): inputs are passed by position"):
        export_torch(Pair().eval(), swapped, (), 17, tmp_path / "m.onnx")
    for names in (("left", "right"), ("x", "y")):
        export_torch(Pair().eval(), tuple(InputSpec.parse(f"{n}:Nx4") for n in names), (), 17, tmp_path / "m.onnx")


def gain_model(tmp_path) -> str:
    """A FILE.py:FUNCTION source of a model taking `forward(x, gain)`, x [N, 8] and gain a scalar."""
    (tmp_path / "g.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Gain(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc, self.head = nn.Linear(8, 16), nn.Linear(16, 4)\n"
        "    def forward(self, x, gain):\n"
        "        return self.head(torch.relu(self.fc(x))) * gain\n"
        "def build(): return Gain()\n")
    return f"{tmp_path / 'g.py'}:build"


def test_inputs_out_of_forwards_order_are_refused_before_the_model_runs_on_data(tmp_path):
    """`forward(x, gain)` declared as gain, x failed in the torch run on the data first: exit 3, 'model does not run
    on inputs gain:[], x:[1, 8]', not the order error (exit 2); prune's training data alike (Linear on a [N, 4])."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((16, 8), dtype=np.float32), gain=rng.random(16, dtype=np.float32))
    source = gain_model(tmp_path)
    said = "input 'gain' is given first, but it is the second parameter of the model's forward(x, gain)"
    result = cli(["export", source, "--input", "gain::float32", "--input", "x:Nx8", "--calibration", tmp_path / "d.npz",
                  "--out", tmp_path / "o", "--no-bench", "-t", "desktop-x86"])
    assert result.exit_code == 2 and said in result.stderr, result.output
    np.savez(tmp_path / "t.npz", x=rng.random((16, 8), dtype=np.float32), gain=rng.random((16, 4), dtype=np.float32),
             labels=rng.integers(0, 4, 16))
    result = cli(["prune", source, "--input", "gain:Nx4", "--input", "x:Nx8", "--data", tmp_path / "t.npz",
                  "--ratio", "0.5", "--out", tmp_path / "p.pt"])
    assert result.exit_code == 2 and said in result.stderr, result.output


def test_a_scalar_input_trains_at_one_value_per_batch(tmp_path):
    """prune --data with a scalar input (`gain::float32`) was exit 5, 'zero-dimensional arrays cannot be
    concatenated': a scalar has no batch axis, so a batch takes its one value, and several are a clear error."""
    rng = np.random.default_rng(0)
    source = gain_model(tmp_path)
    for gain, code in ((np.full(16, 2.0, np.float32), 0), (rng.random(16, dtype=np.float32), 3)):
        np.savez(tmp_path / "t.npz", x=rng.random((16, 8), dtype=np.float32), gain=gain, labels=rng.integers(0, 4, 16))
        result = cli(["prune", source, "--input", "x:Nx8", "--input", "gain::float32", "--data", tmp_path / "t.npz",
                      "--ratio", "0.5", "--out", tmp_path / "p.pt", "--force"])
        assert result.exit_code == code, result.output
    assert "input 'gain' is a scalar, one per batch, and the training samples hold several values" in result.stderr


def test_an_op_the_torchscript_exporter_cannot_export_is_named_and_dynamo_suggested(tmp_path):
    """torch.stft was exit 4 "op onnx::Reshape cannot be exported (STFT does not currently support complex types
    [Caused by ... scope: ed)": a node its symbolic made, cut mid-word, no word that --exporter dynamo exports it."""
    import torch

    from edgekit.config import InputSpec
    from edgekit.errors import StageError
    from edgekit.onnx_export import export_torch

    class Spectrum(torch.nn.Module):
        def forward(self, audio):
            return torch.stft(audio, 64, hop_length=16, window=torch.ones(64), return_complex=True).abs()

    class Vdot(torch.nn.Module):
        def forward(self, x):
            return torch.vdot(x[0], x[1]).reshape(1)

    for model, spec, said in ((Spectrum(), "audio:Nx256", "op aten::stft cannot be exported (STFT does not currently "
                               "support complex types): try --exporter dynamo"),
                              (Vdot(), "x:2x8", "op aten::vdot cannot be exported (Exporting the operator 'aten::vdot' "
                               "to ONNX opset version 17 is not supported): try --exporter dynamo")):
        with pytest.raises(StageError) as failed:
            export_torch(model, (InputSpec.parse(spec),), (), 17, tmp_path / "m.onnx")
        assert said in str(failed.value) and len(str(failed.value).splitlines()) == 1, str(failed.value)
    path = export_torch(Spectrum(), (InputSpec.parse("audio:Nx256"),), (), 18, tmp_path / "d.onnx", exporter="dynamo")
    assert "STFT" in {n.op_type for n in onnx.load(path).graph.node}


def test_an_op_the_dynamo_exporter_cannot_export_either_is_named_without_colour_codes(tmp_path):
    """torch.linalg.svd, told to try --exporter dynamo, then failed with "ConversionError: Failed to convert the
    exported program to an ONNX model. \\x1b[96mThis is step 3/3\\x1b[0m of exporting ... Next steps:": raw colour
    codes, no op, cut off."""
    import torch

    from edgekit.config import InputSpec
    from edgekit.errors import StageError, first_line
    from edgekit.onnx_export import export_torch

    class Singular(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.svd(x)[1]

    with pytest.raises(StageError) as failed:
        export_torch(Singular(), (InputSpec.parse("x:1x4x4"),), (), 17, tmp_path / "m.onnx", exporter="dynamo")
    assert str(failed.value) == ("export failed: op aten::_linalg_svd cannot be exported by the dynamo exporter (No "
                                 "decompositions registered for the real-valued input)"), str(failed.value)
    assert first_line(RuntimeError("\x1b[96mstep 3/3\x1b[0m of \x1b[1;31mexport\x1b[K")) == "step 3/3 of export"
    assert str(StageError("export", "a \x1b[96mcoloured\x1b[0m word")) == "export failed: a coloured word"


def test_a_model_with_onnxruntimes_fused_conv_quantizes(tmp_path):
    """ONNX's shape inference has no schema for com.microsoft FusedConv (nor does onnxruntime's symbolic one): its
    output and the Flatten's after it were untyped, onnxruntime's quantizer skipped them and failed on the Gemm's
    bias (exit 4 "Unable to get valid quantization scale for input 'f' when quantizing bias 'Bg' to int32")."""
    import edgekit
    from onnx import TensorProto, helper, numpy_helper

    from edgekit import config, quantization

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("W", (4, 1, 3, 3)), ("B", (4,)), ("Wg", (10, 256)), ("Bg", (10,)))]
    graph = helper.make_graph([helper.make_node("FusedConv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1],
                                                activation="Relu", domain="com.microsoft", name="fc"),
                               helper.make_node("Flatten", ["c"], ["f"]),
                               helper.make_node("Gemm", ["f", "Wg", "Bg"], ["y"], transB=1, name="gemm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.warns(UserWarning, match="RANDOM DATA"):
        quantized = onnx.load(edgekit.quantize(tmp_path / "m.onnx", "random", out=tmp_path / "q.onnx"))
    producer = {o: n.op_type for n in quantized.graph.node for o in n.output}
    gemm = next(n for n in quantized.graph.node if n.op_type == "Gemm")
    assert producer[gemm.input[0]] == producer[gemm.input[1]] == "DequantizeLinear"
    reasons = quantization.plan(model, config.QuantSettings(), set()).reasons
    assert any(r.startswith("float: fc, onnxruntime's own fusions") for r in reasons), reasons


def _given_vs_shipped(model, out) -> float:
    """The largest |given file - shipped model.onnx| on random inputs, both run by onnxruntime as they are."""
    import onnxruntime as ort
    x = {"x": np.random.default_rng(1).standard_normal((16, 1, 8, 8)).astype(np.float32)}
    given, shipped = (ort.InferenceSession(str(m)).run(None, x)[0] for m in (model, out / "desktop-x86" / "model.onnx"))
    return float(np.abs(given - shipped).max())


@pytest.mark.parametrize("opset, op, mode", [(10, "Resize", "linear"), (10, "Resize", "nearest"),
                                             (9, "Upsample", "nearest")])
def test_an_old_opset_resize_ships_computing_what_the_file_does(tmp_path, opset, op, mode):
    """onnxruntime's pre-processing converts opset < 11 to 11: an opset 10 Resize kept mode=linear and lost its
    asymmetric coordinates (11's default is half_pixel), and the package shipped other numbers (cosine 0.69) with
    export and check exit 0; an opset 9 Upsample failed every step (exit 4, "No Adapter" cut mid-word). edgekit
    converts them itself, keeping what they compute, and export parity holds model.onnx to the given file."""
    from models import old_resize_onnx
    model = old_resize_onnx(tmp_path / "m.onnx", opset, mode, op=op)
    out = tmp_path / "o"
    result = cli(["export", model, "--calibration", "random", "--per-tensor", "--target", "desktop-x86", "--out", out,
                  "--no-bench", "--json"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)["targets"]
    [export] = m["parity"]["export"]["outputs"]
    assert export["cosine"] > 0.99999 and export["max_abs"] < 1e-5
    assert _given_vs_shipped(model, out) < 1e-5


def _local_function_onnx(path, op: str = "Relu") -> str:
    """x @ W, then a model-local function computing op(h) * 2."""
    from onnx import TensorProto as T, helper as H, numpy_helper

    opset = [H.make_opsetid("", 17)]
    two = H.make_node("Constant", [], ["two"], value=H.make_tensor("two", T.FLOAT, [], [2.0]))
    body = [two, H.make_node(op, ["a"], ["r"]) if op == "Relu" else H.make_node(op, ["a"], ["r"], dtype=T.FLOAT),
            H.make_node("Mul", ["r", "two"], ["b"])]
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32), "w")
    graph = H.make_graph([H.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                          H.make_node("Twice", ["h"], ["y"], domain="local", name="twice")], "g",
                         [H.make_tensor_value_info("x", T.FLOAT, ["N", 16])],
                         [H.make_tensor_value_info("y", T.FLOAT, ["N", 16])], [w])
    onnx.save(H.make_model(graph, opset_imports=opset + [H.make_opsetid("local", 1)],
                           functions=[H.make_function("local", "Twice", ["a"], ["b"], body, opset)]), path)
    return str(path)


def test_a_model_local_function_is_inlined_and_quantized(tmp_path):
    """onnxruntime runs model-local functions (it inlines them), but edgekit refused any as "op 'Twice' from domain
    'local', which onnxruntime does not implement" (exit 3). Inlined first, their ops are checked (a random op
    inside one is refused) and quantized, and the package checks."""
    model, out = _local_function_onnx(tmp_path / "m.onnx"), tmp_path / "o"
    result = cli(["export", model, "--calibration", "random", "--target", "desktop-x86", "--out", out, "--no-bench"])
    assert result.exit_code == 0, result.output
    shipped = onnx.load(out / "desktop-x86" / "model.int8.onnx")
    producer = {o: n.op_type for n in shipped.graph.node for o in n.output}
    matmul = next(n for n in shipped.graph.node if n.op_type == "MatMul")
    assert producer[matmul.input[1]] == "DequantizeLinear" and not shipped.functions
    assert cli(["check", out / "desktop-x86"]).exit_code == 0
    random = cli(["inspect", _local_function_onnx(tmp_path / "r.onnx", "RandomNormalLike")])
    assert random.exit_code == 0, random.output  # inspect does not run it
    result = cli(["export", tmp_path / "r.onnx", "--calibration", "random", "--target", "desktop-x86", "--no-bench",
                  "--out", tmp_path / "r"])
    assert result.exit_code == 3 and "is RandomNormalLike, whose values change" in result.stderr, result.output


def test_a_matmul_with_a_one_row_constant_bias_quantizes_per_channel(tmp_path):
    """A MatMul + Add of a [1, 16] Constant (a TensorFlow-style dense layer): onnxruntime's pre-processing makes it a
    Gemm with a [1, 16] bias, and its per-channel quantizer failed on it (exit 4, "The truth value of an array with
    more than one element is ambiguous"). The bias is quantized as the vector it broadcasts as, said in the plan."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    row = numpy_helper.from_array(rng.standard_normal((1, 16)).astype(np.float32))
    graph = helper.make_graph([helper.make_node("Constant", [], ["b"], value=row),
                               helper.make_node("MatMul", ["x", "W"], ["y"]),
                               helper.make_node("Add", ["y", "b"], ["z"]),
                               helper.make_node("Relu", ["z"], ["out"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 16])],
                              [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    out = tmp_path / "o"
    result = cli(["export", tmp_path / "m.onnx", "--calibration", "random", "--target", "desktop-x86", "--out", out,
                  "--no-bench", "--json"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)["targets"]
    assert m["quantization"]["per_channel"] is True
    assert any(d.startswith("Gemm bias b: one row [1, N]") for d in m["quantization"]["decisions"])
    x = {"x": rng.standard_normal((1, 8)).astype(np.float32)}
    given, int8 = (ort.InferenceSession(str(p)).run(None, x)[0]
                   for p in (tmp_path / "m.onnx", out / "desktop-x86" / "model.int8.onnx"))
    assert int8.shape == given.shape == (1, 16)
    assert np.corrcoef(given.ravel(), int8.ravel())[0, 1] > 0.99
    # a per-tensor plan too: --auto's per-channel trial keeps its plan's edits, and failed the same way
    from edgekit import config, quantization
    shipped = onnx.load(out / "desktop-x86" / "model.onnx")
    assert quantization.plan(shipped, config.QuantSettings(per_channel=False), set()).row_biases == ("b",)
    shipped.graph.node.append(helper.make_node("Gemm", ["b", "b"], ["again"], transB=1))  # also read as A: kept
    assert quantization.plan(shipped, config.QuantSettings(), set()).row_biases == ()


def test_pre_processing_leaves_nothing_in_the_working_folder_and_stays_in_it(tmp_path, monkeypatch):
    """onnxruntime's symbolic shape inference, giving up on an op it does not know, saves sym_shape_infer_temp.onnx
    (+ weights) into the working folder: pre-processing does not, and changes no process's working folder to keep
    it out (a notebook's other threads write relative paths there)."""
    from onnx import TensorProto, helper

    from edgekit.onnx_export import preprocess_in_child
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Foo", ["x"], ["y"], domain="my.dom")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.dom", 1)])
    (tmp_path / "stage").mkdir()
    (tmp_path / "cwd").mkdir()
    onnx.save(model, str(tmp_path / "stage" / "m.onnx"))
    monkeypatch.chdir(tmp_path / "cwd")
    seen, stop = set(), threading.Event()
    watcher = threading.Thread(target=lambda: [seen.add(os.getcwd()) for _ in iter(lambda: stop.wait(0.0005), True)])
    watcher.start()
    try:
        note = preprocess_in_child(str(tmp_path / "stage" / "m.onnx"), str(tmp_path / "stage" / "p.onnx"))
    finally:
        stop.set()
        watcher.join()
    assert note.startswith("symbolic shape inference failed (Incomplete symbolic shape inference)"), note
    assert seen == {str(tmp_path / "cwd")} and not list((tmp_path / "cwd").iterdir())
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == ["m.onnx", "p.onnx"]


def test_symbolic_shape_inference_runs_on_a_graph_it_can_infer(tmp_path):
    """Pre-processing runs onnxruntime's symbolic shape inference through its private steps (to keep its dump out of
    the working folder): renamed in an onnxruntime upgrade, every model would be said to skip it. Here it runs."""
    from onnx import TensorProto, helper

    from edgekit.onnx_export import preprocess_in_child
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Transpose", ["r"], ["y"], perm=[1, 0])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert preprocess_in_child(str(tmp_path / "m.onnx"), str(tmp_path / "p.onnx")) == ""
    [y] = onnx.load(str(tmp_path / "p.onnx")).graph.output
    assert [d.dim_param or d.dim_value for d in y.type.tensor_type.shape.dim] == [4, "N"]


def test_an_output_of_no_tensor_type_is_said_as_what_it_is(tmp_path):
    """skl2onnx's default ZipMap output (a sequence of maps), a sequence or an optional was refused as "ONNX
    element type 0 (UNDEFINED)", which says neither what the output is nor what to do."""
    from onnx import TensorProto as T, helper as h

    from edgekit import onnx_export
    from edgekit.errors import InputError

    def model(out, *nodes):
        graph = h.make_graph([h.make_node("Relu", ["x"], ["r"]), *nodes], "g",
                             [h.make_tensor_value_info("x", T.FLOAT, ["N", 3])], [out])
        return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])

    zipmap = h.make_value_info("probs", h.make_sequence_type_proto(
        h.make_map_type_proto(T.INT64, h.make_tensor_type_proto(T.FLOAT, []))))
    with pytest.raises(InputError, match=r"output 'probs' is a sequence \(seq\(map\(int64,tensor\(float\)\)\)\), "
                                         r"not a tensor.*\{'zipmap': False\}"):
        onnx_export.io_specs(model(zipmap), "m")
    seq = h.make_value_info("s", h.make_sequence_type_proto(h.make_tensor_type_proto(T.FLOAT, None)))
    with pytest.raises(InputError, match=r"output 's' is a sequence \(seq\(tensor\(float\)\)\), not a tensor.*: "
                                         "make the graph's outputs tensors$"):
        onnx_export.io_specs(model(seq, h.make_node("SequenceConstruct", ["r"], ["s"])), "m")
    optional = h.make_value_info("o", h.make_optional_type_proto(h.make_tensor_type_proto(T.FLOAT, None)))
    with pytest.raises(InputError, match=r"output 'o' is an optional \(optional\(tensor\(float\)\)\)"):
        onnx_export.io_specs(model(optional, h.make_node("Optional", ["r"], ["o"])), "m")


def test_an_input_of_no_shape_is_named_and_takes_inputs_shape(tmp_path):
    """An input with no shape at all (onnxruntime runs it) was refused with the checker's "Field 'shape' of 'type'
    is required but missing", naming no tensor, and --input's shape did not help: it is named, and --input gives
    it its shape."""
    from onnx import TensorProto as T, helper as h, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32), "W")
    graph = h.make_graph([h.make_node("MatMul", ["x", "W"], ["y"])], "g",
                         [h.make_tensor_value_info("x", T.FLOAT, None)],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])], [w])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)]), tmp_path / "m.onnx")
    common = ["export", tmp_path / "m.onnx", "--calibration", "random", "--no-bench", "--out", tmp_path / "out"]
    refused = cli(common)
    assert refused.exit_code == 3 and "input 'x' has no shape in the file" in refused.output, refused.output
    assert "--input x:SHAPE" in refused.output
    made = cli([*common, "--input", "x:Nx16", "--json"])
    assert made.exit_code == 0, made.output
    shipped = onnx.load(tmp_path / "out" / "desktop-x86" / "model.onnx").graph.input[0].type.tensor_type.shape
    assert [d.dim_param or d.dim_value for d in shipped.dim] == ["N", 16]


def test_an_axis_two_inputs_share_takes_one_size_from_input():
    """--input x:1x4 --input y:Nx4 on inputs sharing the axis N fixed y's too, silently; x:1x4 with y:2x4 was told
    "the model fixes it to 1", a size the user gave. Both are refused naming the two inputs; one size for both fixes it
    in both."""
    from onnx import TensorProto, helper

    from edgekit.errors import UsageError
    from edgekit.onnx_export import shaped_inputs

    def model():
        return helper.make_model(helper.make_graph(
            [helper.make_node("Add", ["x", "y"], ["z"])], "g",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("x", "y")],
            [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])]))

    for y in (("N", 4), (2, 4)):
        with pytest.raises(UsageError, match="axis 'N' is input 'x''s and 'y''s, given 1 and"):
            shaped_inputs(model(), {"x": (1, 4), "y": y}, "m.onnx")
    fixed = model()
    assert shaped_inputs(fixed, {"x": (1, 4), "y": (1, 4)}, "m.onnx")
    assert [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*fixed.graph.input, *fixed.graph.output)] \
        == [[1, 4]] * 3
    assert not shaped_inputs(model(), {"x": ("N", 4), "y": ("N", 4)}, "m.onnx")


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("frozen", [False, True])
def test_a_padded_transformer_encoder_is_compared_with_torch_as_exported(tmp_path, exporter, frozen):
    """Torch's eval-mode fast path runs nn.TransformerEncoder on nested tensors, writing 0 at padded positions the
    exported graph computes: export parity compared with it failed a correct export (cosine 0.38), and a frozen
    model (no requires_grad) traced it, which has no ONNX op. Both now run as exported; the caller's flag stays."""
    import onnxruntime as ort
    import torch
    from models import tagger

    from edgekit.config import InputSpec
    from edgekit.onnx_export import export_torch
    from edgekit.runtime import run_torch

    module = tagger().requires_grad_(not frozen)
    ids, mask = encoder_feeds(3, 0, seq=8)
    specs = (InputSpec.parse("input_ids:Nxseq:int64"), InputSpec.parse("attention_mask:Nxseq:int64"))
    path = export_torch(module, specs, (), 17, tmp_path / "m.onnx", exporter=exporter, sizes={"N": 3, "seq": 8})
    exported = ort.InferenceSession(str(path)).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        fast = module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert np.abs(fast - exported)[mask == 0].max() > 0.1  # the fast path is not what was exported
    for flag in (True, False):
        torch.backends.mha.set_fastpath_enabled(flag)
        [[reference]] = run_torch(module, [{"input_ids": ids, "attention_mask": mask}], ["input_ids", "attention_mask"])
        assert torch.backends.mha.get_fastpath_enabled() is flag
        assert np.abs(reference - exported).max() < 1e-4
    torch.backends.mha.set_fastpath_enabled(True)


def test_a_dict_inside_a_tuple_names_its_outputs_by_their_keys(tmp_path):
    """A policy returning `(torques, {"value": v})` exported output_0 and output_1: the dict's
    keys were dropped, where a dict returned at the top keeps them (`extra.0`). Its items are named by their path
    below the tuple's own names now; a tuple with no dict in it keeps output_0, output_1."""
    import onnxruntime as ort
    import torch
    from models import policy

    from edgekit.config import InputSpec
    from edgekit.onnx_export import export_torch

    specs = tuple(InputSpec.parse(s) for s in ("image:Nx3x16x16:uint8", "state:Nx6", "mode:N:int64"))
    model = policy().eval()
    onnx_path = export_torch(model, specs, (), 17, tmp_path / "p.onnx")
    sess = ort.InferenceSession(str(onnx_path))
    names = [o.name for o in sess.get_outputs()]
    assert names == ["output_0", "output_1.value"]
    rng = np.random.default_rng(0)
    feed = {"image": rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8),
            "state": rng.standard_normal((2, 6)).astype(np.float32), "mode": np.array([0, 3], np.int64)}
    torques, rest = model(*(torch.from_numpy(v) for v in feed.values()))
    for want, got in zip((torques, rest["value"]), sess.run(None, feed)):  # each name its tensor
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-4, atol=1e-5)

    class Deeper(torch.nn.Module):
        def forward(self, x):
            return [x * 2, (x + 1, {"gain": (x.mean(1), x.amax(1))})]

    class Plain(torch.nn.Module):
        def forward(self, x):
            return x * 2, (x + 1, x - 1)

    for module, want in ((Deeper(), ["output_0", "output_1.0", "output_1.1.gain.0", "output_1.1.gain.1"]),
                         (Plain(), ["output_0", "output_1", "output_2"])):
        done = export_torch(module, (InputSpec.parse("x:Nx4"),), (), 17, tmp_path / "t.onnx")
        assert [o.name for o in onnx.load(str(done)).graph.output] == want


def test_the_dynamo_exporter_takes_a_forward_with_star_args(tmp_path):
    """torch.export matches dynamic_shapes to forward's parameters: one per input failed a `forward(self, a, *rest)`
    with "mismatch between the structure of `inputs` and `dynamic_shapes`"."""
    import torch

    from edgekit.config import InputSpec
    from edgekit.onnx_export import export_torch

    class Star(torch.nn.Module):
        def forward(self, a, *rest):
            return a.sum(1) + rest[0].sum(1) + rest[1].sum(1)

    path = export_torch(Star(), tuple(InputSpec.parse(f"{n}:Nx4") for n in "xyz"), (), 18, tmp_path / "m.onnx",
                        exporter="dynamo")
    inputs = onnx.load(str(path)).graph.input
    assert [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in inputs] == [
        ("x", ["N", 4]), ("y", ["N", 4]), ("z", ["N", 4])]
