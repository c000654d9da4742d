"""Every user mistake gets one line on stderr, its own exit code, no traceback, and no output written."""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch


from conftest import CI_MARKS, ROOT, TESTS, cli

CNN = ["models:small_cnn", "--input", "image:Nx3x16x16"]


def run(*args):
    return cli(["export", *map(str, args), "--bench-runs", "2"])


def assert_clean_error(result, code, *fragments, out=None):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error:"), result.stderr
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in lines[0], lines[0]
    if out is not None:
        assert not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith("."))
        assert not out.exists() or not [p for p in out.iterdir() if ".edgekit" in p.name], "stage or lock left behind"


@pytest.fixture
def data(cnn_data):
    return cnn_data[0]


def test_bad_model_path(tmp_path, data):
    assert_clean_error(run("nope/missing.py:build", "--input", "x:1x3", "--calibration", data, "--out", tmp_path / "o"),
                       3, "no such file", out=tmp_path / "o")


def _npz_of_header(path, shape: str):
    """An .npz whose image.npy declares `shape` (as its text) in its header."""
    import zipfile

    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (-(12 + len(header) + 1) % 64) + "\n"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("image.npy", b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header.encode())


@pytest.mark.parametrize("make,msg", [
    (lambda p: p.mkdir(), "w.pt': not a regular file"),  # was "no such file"
    (lambda p: p.write_text("hello weights"),  # was "101", then "pass --trust-checkpoint only if you trust this file"
     "cannot be loaded: not a torch.save file (neither a zip archive nor a pickle)"),
    (lambda p: (torch.save({"w": torch.zeros(1000)}, p), p.write_bytes(p.read_bytes()[:500])),  # cut short
     "cannot be loaded as a torch.save file (RuntimeError: PytorchStreamReader failed"),
])
def test_weights_that_are_no_checkpoint_say_what_they_are(tmp_path, data, make, msg):
    make(tmp_path / "w.pt")
    assert_clean_error(run(*CNN, "--weights", tmp_path / "w.pt", "--calibration", data, "--out", tmp_path / "o"), 3,
                       msg, out=tmp_path / "o")


@pytest.mark.parametrize("make,source,msg", [
    (os.mkfifo, "m.py:build", "m.py:build': not a regular file"),  # was "no such file"
    (os.mkdir, "m.pt", "m.pt': not a regular file"),
    (lambda p: (p.mkdir(), (p / "m.py").write_text((TESTS / "models.py").read_text())),
     "bad\udcff/m.py:small_cnn", "not a UTF-8 path, which torch's exporter needs"),  # was exit 5
])
def test_model_sources_that_cannot_be_read_say_why(tmp_path, data, make, source, msg):
    make(tmp_path / source.split("/")[0].split(":")[0])
    assert_clean_error(run(tmp_path / source, "--input", "image:Nx3x16x16", "--calibration", data,
                           "--trust-checkpoint", "--out", tmp_path / "o"), 3, msg, out=tmp_path / "o")


def test_missing_function(tmp_path, data):
    assert_clean_error(run("models:nothing_here", "--input", "x:1x3", "--calibration", data), 3, "has no function")


def test_unimportable_module(data):
    assert_clean_error(run("no_such_pkg.mod:build", "--input", "x:1x3", "--calibration", data), 3, "cannot import")


def test_function_not_returning_module(data):
    assert_clean_error(run("models:not_a_module", "--input", "x:1x3", "--calibration", data), 3, "not a torch.nn.Module")


def test_user_code_raising(data):
    assert_clean_error(run("models:broken", "--input", "x:1x3", "--calibration", data), 3, "boom in user code")


def test_weights_that_do_not_fit(tmp_path, data):
    w = tmp_path / "w.pt"
    torch.save({"wrong.weight": torch.zeros(2)}, w)
    assert_clean_error(run(*CNN, "--weights", w, "--calibration", data, "--out", tmp_path / "o"), 3,
                       "do not fit", "unexpected wrong.weight", out=tmp_path / "o")


def test_weights_garbage_file(tmp_path, data):
    w = tmp_path / "w.pt"
    w.write_bytes(b"not a checkpoint at all")
    result = run(*CNN, "--weights", w, "--calibration", data)  # it said: pass --trust-checkpoint
    assert_clean_error(result, 3, "not a torch.save file (neither a zip archive nor a pickle)")
    assert "trust" not in result.stderr


def test_weights_checkpoint_dict_with_state_dict(tmp_path, cnn_data):
    from models import small_cnn
    w = tmp_path / "ckpt.pt"
    torch.save({"state_dict": small_cnn().state_dict(), "epoch": 3}, w)
    result = run(*CNN, "--weights", w, "--calibration", cnn_data[0], "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("spec,msg", [("image", "expected NAME:SHAPE"), ("image:3xQ!", "bad dimension"),
                                      ("image:1x3:float99", "unknown dtype"), ("image:0x3", "positive")])
def test_bad_input_spec(spec, msg, data):
    assert_clean_error(run("models:small_cnn", "--input", spec, "--calibration", data), 2, msg)


def test_input_spec_that_does_not_fit_the_model(data):
    assert_clean_error(run("models:small_cnn", "--input", "image:Nx5x16x16", "--calibration", "random"), 3,
                       "does not run on inputs")


def test_missing_inputs_for_torch_model(data):
    assert_clean_error(run("models:small_cnn", "--calibration", data), 2, "--input")


def test_missing_calibration():
    assert_clean_error(run(*CNN), 2, "no calibration data")


def test_unknown_target(data):
    assert_clean_error(run(*CNN, "--calibration", data, "--target", "desktop-x68"), 2, "unknown target",
                       "desktop-x86")


@pytest.mark.parametrize("make,msg", [
    (lambda p: np.savez(p, image=np.zeros((4, 3, 16, 15), np.float32)), "has shape"),
    (lambda p: np.savez(p, image=np.zeros((4, 3, 16, 16), np.float64)), "dtype float64"),
    (lambda p: np.savez(p, image=np.full((4, 3, 16, 16), np.nan, np.float32)), "NaN or Inf"),
    (lambda p: np.savez(p, image=np.zeros((0, 3, 16, 16), np.float32)), "zero samples"),
    (lambda p: np.savez(p, picture=np.zeros((4, 3, 16, 16), np.float32)), "input names do not match"),
    (lambda p: p.write_bytes(b"PK\x03\x04 truncated zip"), "cannot read"),
    (lambda p: _npz_of_header(p, "(" + "-" * 9000 + "4, 3, 16, 16)"),  # was "cannot read (MemoryError: )"
     "'image' has no valid .npy header (too deeply nested for Python's parser"),
])
def test_bad_calibration_data_names_file_and_problem(tmp_path, make, msg):
    bad = tmp_path / "bad.npz"
    make(bad)
    assert_clean_error(run(*CNN, "--calibration", bad, "--out", tmp_path / "o"), 3, "bad.npz", msg,
                       out=tmp_path / "o")


def test_folder_mixing_good_and_bad_files(tmp_path, cnn_data):
    folder = tmp_path / "calib"
    folder.mkdir()
    np.savez(folder / "a_good.npz", image=np.zeros((4, 3, 16, 16), np.float32))
    bad = np.zeros((4, 3, 16, 16), np.float32)
    bad[2, 0, 0, 0] = np.inf
    np.savez(folder / "b_bad.npz", image=bad)
    assert_clean_error(run(*CNN, "--calibration", folder), 3, "b_bad.npz", "NaN or Inf", "sample 2")


def test_bad_validation_data(tmp_path, cnn_data):
    bad = tmp_path / "val.npz"
    np.savez(bad, image=np.zeros((4, 3, 16, 16), np.int64))
    assert_clean_error(run(*CNN, "--calibration", cnn_data[0], "--validation", bad), 3, "val.npz", "dtype int64")


def test_garbage_onnx_model(tmp_path, data):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    assert_clean_error(run(bad, "--calibration", data, "--out", tmp_path / "o"), 3, "not a valid ONNX model",
                       out=tmp_path / "o")


def test_export_failure_names_the_op(tmp_path, data):
    (tmp_path / "unexportable.py").write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, image):\n"
        "        return torch.linalg.svd(image.flatten(1))[1]\n"
        "def build():\n    return M()\n")
    assert_clean_error(run(f"{tmp_path / 'unexportable.py'}:build", "--input", "image:Nx3x16x16",
                           "--calibration", data, "--out", tmp_path / "o"), 4, "export failed", "svd",
                       out=tmp_path / "o")


def test_exception_leaves_previous_output_untouched(tmp_path, cnn_data):
    out = tmp_path / "o"
    good = run(*CNN, "--calibration", cnn_data[0], "--out", out)
    assert good.exit_code == 0, good.output
    before = {p.name: p.read_bytes() for p in (out / "desktop-x86").iterdir()}
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((4, 3, 16, 16), np.float16))
    assert_clean_error(run(*CNN, "--calibration", bad, "--out", out), 3, "dtype float16")
    assert {p.name: p.read_bytes() for p in (out / "desktop-x86").iterdir()} == before
    assert [p.name for p in tmp_path.rglob("*") if ".edgekit" in p.name] == []  # no stage or lock left


@pytest.mark.parametrize("args,named", [
    (["models:exits_zero", "--input", "x:1x3", "--calibration", "random"], "model 'models:exits_zero'"),
    (["models:small_cnn", "--input", "image:Nx3x16x16", "--calibration", "sys:exit"], "data 'sys:exit'"),
    (["models:two_outputs", "--input", "x:Nx3", "--calibration", "models:data_that_exits"],
     "data 'models:data_that_exits': iterating it failed"),
    (["models:exits_in_forward", "--input", "x:1x3", "--calibration", "random"], "model does not run"),
])
def test_user_code_calling_sys_exit_is_bad_input(tmp_path, args, named):
    """A model or data function ending the process with exit 0 must not pass a CI gate."""
    result = run(*args, "--out", tmp_path / "o")
    assert_clean_error(result, 3, named, "sys.exit" if "forward" not in args[0] else "SystemExit",
                       out=tmp_path / "o")


def test_debug_shows_traceback_and_keeps_the_exit_code(data):
    args = ["export", "models:nothing_here", "--input", "x:1x3", "--calibration", str(data)]
    plain = cli(args)
    debug = cli(["--debug", *args])
    assert plain.exit_code == debug.exit_code == 3
    assert "Traceback" in debug.stderr and "Traceback" not in plain.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def _erf_double_model(tmp_path):
    """Valid ONNX that onnxruntime's CPU provider has no kernel for (Erf on float64)."""
    from onnx import TensorProto, helper
    io = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, ["N", 4]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph([helper.make_node("Erf", ["x"], ["y"], name="erf")], "g", io[:1],
                                                io[1:]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "erf.onnx")
    np.savez(tmp_path / "cal.npz", x=np.ones((8, 4)))
    return tmp_path / "erf.onnx", tmp_path / "cal.npz"


def test_onnxruntime_error_is_one_line_with_its_cause(tmp_path):
    """onnxruntime's own coloured log line stays off stderr; edgekit's line keeps the cause (in a real process:
    onnxruntime writes to file descriptor 2, which CliRunner cannot capture)."""
    model, cal = _erf_double_model(tmp_path)
    for debug in ([], ["--debug"]):
        run = subprocess.run([sys.executable, "-m", "edgekit", *debug, "export", str(model), "--calibration", str(cal),
                              "--out", str(tmp_path / "o")], capture_output=True, text=True)
        assert run.returncode == 3, run.stderr
        assert "[E:onnxruntime" not in run.stderr and "\x1b[" not in run.stderr
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("edgekit: error:") and "Could not find an implementation for Erf(13)" in last, last
        assert (len(run.stderr.strip().splitlines()) == 1) is not debug


@pytest.mark.parametrize("body,code,msg", [
    ("[model]\nsorce = 'x.py:f'\n", 2, "did you mean 'source'"),
    ("[model]\nsource = 'models:small_cnn'\n[export]\nseed = 'zero'\n", 2, "'seed' has the wrong type"),
    ("[data]\ncalibration = 'x'\n", 2, "missing required key 'source'"),
    ("[model]\nsource = 'm:f'\n[quantize]\nper_chanel = true\n", 2, "did you mean 'per_channel'"),
    ("[model]\nsource = 'm:f'\n[quantize]\ncalibrate_method = 'kl'\n", 2, "not one of"),
    ("[model\nsource=", 2, "not valid TOML"),
    ("bench = 3\n[model]\nsource = 'm:f'\n", 2, "[bench] must be a table"),
    ("model = 'm:f'\n", 2, "[model] must be a table"),
    ("[model]\nsource = 'm:f'\nsizes = {seq = [0]}\n", 2, "sizes: 0 is out of range"),  # it said 'wrong type'
])
def test_bad_recipe(tmp_path, body, code, msg):
    recipe = tmp_path / "edgekit.toml"
    recipe.write_text(body)
    assert_clean_error(run(recipe), code, "edgekit.toml", msg)


@pytest.mark.parametrize("body,msg", [
    ("name = 'p'\n[quantize]\nweight_typ = 'int8'\n", "did you mean 'weight_type'"),
    ("name = 'p'\nopset = 'seventeen'\n", "'opset' has the wrong type"),
    ("[quantize]\nper_channel = true\n", "missing required key 'name'"),
    ("name = 'p'\nopset = 11\n", "needs opset >= 13"),
])
def test_bad_profile(tmp_path, cnn_data, body, msg):
    profile = tmp_path / "p.toml"
    profile.write_text(body)
    assert_clean_error(run(*CNN, "--calibration", cnn_data[0], "--target", profile), 2, "p.toml", msg)


def test_duplicate_and_unsafe_target_names(tmp_path, cnn_data):
    assert_clean_error(run(*CNN, "--calibration", cnn_data[0], "-t", "desktop-x86", "-t", "desktop-x86"), 2,
                       "given twice")
    profile = tmp_path / "p.toml"
    profile.write_text('name = "../escaped"\n')
    assert_clean_error(run(*CNN, "--calibration", cnn_data[0], "-t", profile, "--out", tmp_path / "o"), 2,
                       "plain folder name")
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("flag,value,msg", [("--calibration-samples", "-3", "'--calibration-samples'"),
                                            ("--calibration-samples", "0", "'--calibration-samples'"),  # was samples
                                            ("--seed", "-1", "--seed")])
def test_out_of_range_flags(cnn_data, flag, value, msg):
    assert_clean_error(run(*CNN, "--calibration", cnn_data[0], flag, value), 2, msg)


@pytest.mark.parametrize("args", [["check", "--json", "--jnuit", "x.xml", "pkg"],
                                  ["export", "m.py:f", "--json", "--seed", "-1"],
                                  ["export", "m.py:f", "--calib-method", "minmax", "--json"]])
def test_an_option_click_refuses_is_an_error_object_with_json(args):
    """A mistyped option under --json printed nothing on stdout: the CI step parsing it failed on an empty document."""
    result = cli(args)
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)
    assert error["exit_code"] == 2 and ("No such option" in error["error"] or "--seed" in error["error"])
    # the shape a result has (was {"error", "exit_code"} alone): the command's list empty, nothing to iterate
    error.pop("ran_by", None)  # check's: which edgekit and onnxruntime judged it (test_package)
    empty = {"export": {"out": None, "targets": []}, "check": {"cases": []}}[args[0]]
    assert error == {"schema_version": 1, "command": args[0], "passed": False, "exit_code": 2,
                     "error": error["error"], **empty}
    assert not cli([a for a in args if a != "--json"]).stdout


def test_validation_equal_to_calibration_is_refused(cnn_data):
    assert_clean_error(run(*CNN, "--calibration", cnn_data[0], "--validation", cnn_data[0]), 2, "held-out")


def test_onnx_source_opset_too_old_for_per_channel(tmp_path, cnn_data):
    """Per-channel asked for is refused; the profile's per-channel default gives an opset-11 file per-tensor weights,
    said (every such file was refused, exit 2, for a setting the user never gave)."""
    from models import small_cnn
    path = tmp_path / "old.onnx"
    torch.onnx.export(small_cnn(), (torch.zeros(1, 3, 16, 16),), str(path), input_names=["image"], opset_version=11,
                      dynamo=False, dynamic_axes={"image": {0: "N"}})
    assert_clean_error(run(path, "--calibration", cnn_data[0], "--per-channel", "--out", tmp_path / "o"), 2,
                       "opset 11", "--per-tensor", out=tmp_path / "o")
    ok = run(path, "--calibration", cnn_data[0], "--out", tmp_path / "o", "--json")
    assert ok.exit_code == 0, ok.output
    [m] = json.loads(ok.stdout)["targets"]
    assert m["quantization"]["per_channel"] is False
    assert ("per-tensor weights: the model is opset 11, and per-channel quantization needs opset >= 13 (re-export at "
            "opset 13 or later for per-channel)") in m["warnings"], m["warnings"]


def test_an_old_onnx_files_opset_is_its_own_in_the_per_channel_error(tmp_path):
    """An opset 9 or 10 file was told "the model is opset 11": the opset pre-processing converted it to."""
    from models import old_resize_onnx
    model = old_resize_onnx(tmp_path / "m.onnx", 10)
    assert_clean_error(run(model, "--calibration", "random", "--target", "desktop-x86", "--per-channel", "--out",
                           tmp_path / "o"), 2,
                       "the model is opset 10 (pre-processing converts it to 11); per-channel quantization needs "
                       "opset >= 13", "--per-tensor", out=tmp_path / "o")


def test_a_node_name_with_a_comma_is_suggested_and_taken_escaped(tmp_path):
    """--exclude-nodes suggested 'a,b', which its comma-separated list split in two: no way to name it on the command
    line. `\\,` is a comma in a name, and the suggestion is written so."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
                               helper.make_node("Relu", ["m"], ["y"], name="a,b")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [weight])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    flags = ["--calibration", "random", "--no-bench", "--out", tmp_path / "o"]
    assert_clean_error(run(model, "--exclude-nodes", "a", *flags), 2,
                       "(did you mean 'a,b'? on the command line `--exclude-nodes 'a\\,b'`: a comma in a name is "
                       "written \\,)", out=tmp_path / "o")
    taken = run(model, "--exclude-nodes", "mm, a\\,b", *flags, "--json")
    assert taken.exit_code in (0, 1), taken.output
    assert json.loads(taken.stdout)["targets"][0]["quantization"]["exclude_nodes"] == ["mm", "a,b"]


def test_onnx_source_input_spec_mismatch(tmp_path, cnn_data):
    first = run(*CNN, "--calibration", cnn_data[0], "--out", tmp_path / "a")
    assert first.exit_code == 0
    assert_clean_error(run(tmp_path / "a" / "desktop-x86" / "model.onnx", "--input", "image:Nx3x16", "--calibration",
                           cnn_data[0]), 2, "does not match the model's inputs")


def test_weights_with_onnx_source_is_usage_error(tmp_path, cnn_data):
    first = run(*CNN, "--calibration", cnn_data[0], "--out", tmp_path / "a")
    assert first.exit_code == 0
    assert_clean_error(run(tmp_path / "a" / "desktop-x86" / "model.onnx", "--weights", tmp_path / "w.pt",
                           "--calibration", cnn_data[0]), 2, "--weights")


def test_module_in_cwd_and_dataclass_user_file(tmp_path, cnn_data, monkeypatch):
    (tmp_path / "usermodels.py").write_text(
        "from __future__ import annotations\n"
        "import dataclasses\nimport torch\n"
        "@dataclasses.dataclass\nclass Cfg:\n    width: int = 4\n"
        "def build():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, Cfg().width))\n")
    monkeypatch.chdir(tmp_path)
    by_module = run("usermodels:build", "--input", "image:Nx3x16x16", "--calibration", cnn_data[0], "--out", "o1")
    assert by_module.exit_code == 0, by_module.output
    by_file = run(f"{tmp_path / 'usermodels.py'}:build", "--input", "image:Nx3x16x16", "--calibration", cnn_data[0],
                  "--out", "o2")
    assert by_file.exit_code == 0, by_file.output


def test_dict_and_nested_outputs_are_flattened(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((12, 6)).astype(np.float32))
    result = cli(["export", "models:dict_out", "--input", "x:Nx6", "--calibration",
                                       str(tmp_path / "d.npz"), "--out", str(tmp_path / "o"), "--bench-runs", "2",
                                       "--json"])
    assert result.exit_code == 0, result.output
    import json
    # named by their paths in the dict: they were output_0, output_1, output_2
    assert [o["name"] for o in json.loads(result.stdout)["targets"][0]["outputs"]] == ["scores", "extra.0", "extra.1"]


def test_a_dict_of_outputs_names_them_and_its_names_are_not_swapped(tmp_path):
    """The keys were dropped (output_0, output_1), and names given in another order than the dict's were taken by
    position: the deployed "logits" was the softmax, with no word."""
    import onnx
    (tmp_path / "m.py").write_text(
        "import torch\n\nclass M(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = torch.nn.Linear(6, 4)\n\n    def forward(self, x):\n        y = self.fc(x)\n"
        "        return {'probs': y.softmax(-1), 'logits': y}\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return M()\n")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((12, 6)).astype(np.float32))
    args = ["export", f"{tmp_path / 'm.py'}:build", "--input", "x:Nx6", "--calibration", str(tmp_path / "d.npz"),
            "--no-bench"]
    result = cli([*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    model = onnx.load(tmp_path / "o" / "desktop-x86" / "model.int8.onnx")
    assert [o.name for o in model.graph.output] == ["probs", "logits"]
    swapped = cli([*args, "--out", str(tmp_path / "s"), "--output-name", "logits", "--output-name", "probs"])
    assert swapped.exit_code == 2 and "'logits' is the model's dict key for output 1, not 0" in swapped.stderr
    renamed = cli([*args, "--out", str(tmp_path / "r"), "--output-name", "p", "--output-name", "l"])
    assert renamed.exit_code == 0, renamed.output


@pytest.mark.parametrize("ir_version,external", [(None, False), (3, False), (None, True)])
def test_onnx_with_weights_listed_as_inputs_ships_without_them(tmp_path, cnn_data, ir_version, external):
    """IR version 3 (old exporters) requires every initializer to be a graph input: stripped of them, edgekit's own
    copy failed onnx's check (exit 4, "W1 in initializer but not in graph input"). Weights in an external data
    file were not stripped: model.onnx took them as inputs, model.int8.onnx did not."""
    import onnx
    from models import small_cnn
    path = tmp_path / "old.onnx"
    torch.onnx.export(small_cnn(), (torch.zeros(1, 3, 16, 16),), str(path), input_names=["image"], opset_version=17,
                      dynamo=False, dynamic_axes={"image": {0: "N"}}, keep_initializers_as_inputs=True)
    if ir_version:
        model = onnx.load(path)
        model.ir_version = ir_version
        onnx.save(model, path)
    if external:
        onnx.save(onnx.load(path), path, save_as_external_data=True, location="old.onnx.data", size_threshold=0)
    assert len(onnx.load(path).graph.input) > 1
    result = run(path, "--calibration", cnn_data[0], "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    for name in ("model.onnx", "model.int8.onnx"):
        assert [i.name for i in onnx.load(tmp_path / "o" / "desktop-x86" / name).graph.input] == ["image"]


def test_endless_generator_is_capped(tmp_path, cnn_data, monkeypatch):
    from edgekit import calib
    monkeypatch.setattr(calib, "MAX_FUNCTION_ITEMS", 50)
    (tmp_path / "endless.py").write_text(
        "import numpy as np\n"
        "def samples():\n"
        "    rng = np.random.default_rng(0)\n"  # varied: one sample over and over fails validation_distinct_samples
        "    while True:\n"
        "        yield {'image': rng.random((1, 3, 16, 16), dtype=np.float32)}\n")
    result = run(*CNN, "--calibration", f"{tmp_path / 'endless.py'}:samples", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    # the cut is said where the figures are: held out were the last of the items read, not of the user's data
    manifest = json.loads((tmp_path / "o" / "desktop-x86" / "manifest.json").read_text())
    assert "(its first 50 items: edgekit reads no more) (held-out last 12)" in manifest["validation"]["data"]


@pytest.mark.parametrize("labels,msg", [
    (np.array(["cat"] * 8), "labels are <U3 values"),
    (np.array([0.0, 1.0, np.nan, 2, 3, 4, 0, 1]), "NaN, Inf or fractions"),
    (np.array([0, 1, -1, 2, 3, 4, 0, 1]), "class ids >= 0"),
    (np.array([0, 1, 2, 3, 4, 0, 1, 99]), "d.npz (held-out last 2): label 99 (row 1) is out of range"),  # no file
])
def test_labels_are_checked(tmp_path, labels, msg):
    data = tmp_path / "d.npz"
    np.savez(data, image=np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32), labels=labels)
    assert_clean_error(run(*CNN, "--calibration", data, "--out", tmp_path / "o"), 3, msg, out=tmp_path / "o")


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_non_finite_weights_are_bad_input(tmp_path, data, poison):
    from models import small_cnn
    state = small_cnn().state_dict()
    state["body.0.weight"][0, 0, 0, 0] = poison
    torch.save(state, tmp_path / "w.pt")
    said = "holds NaN values" if np.isnan(poison) else "holds infinite values"  # a Conv's weight: no mask
    assert_clean_error(run(*CNN, "--weights", tmp_path / "w.pt", "--calibration", data, "--out", tmp_path / "o"), 3,
                       f"weight 'body.0.weight' {said}", out=tmp_path / "o")
    torch.onnx.export(_with(state), (torch.zeros(1, 3, 16, 16),),
                      str(tmp_path / "m.onnx"), input_names=["image"], opset_version=17, dynamo=False)
    assert_clean_error(run(tmp_path / "m.onnx", "--calibration", data, "--out", tmp_path / "o"), 3, said)


def _with(state):
    from models import small_cnn
    model = small_cnn()
    model.load_state_dict(state)
    return model.eval()


def test_onnx_without_outputs_and_non_utf8_out(tmp_path, data):
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["r"])], "g", [x], [])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "none.onnx")
    assert_clean_error(run(tmp_path / "none.onnx", "--calibration", data), 3, "has no outputs")
    assert_clean_error(run(*CNN, "--calibration", data, "--out", str(tmp_path) + "/\udcff"), 2, "not a UTF-8 path")
    assert_clean_error(run(*CNN, "--calibration", data, "--out", tmp_path / ("a" * 300)), 3, "File name too long")


def test_a_reader_that_goes_away_is_not_an_internal_error():
    """`edgekit targets | head -1` said 'internal error: OSError: [Errno 32] Broken pipe' (exit 5)."""
    import subprocess
    import sys

    run = subprocess.Popen([sys.executable, "-m", "edgekit", "targets"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run.stdout.close()  # before edgekit writes: its first write finds no reader
    _, err = run.communicate(timeout=60)
    assert run.returncode == 141 and err == b"", err
    # an error's JSON on a full (or gone) stdout was a traceback and exit 1: the error's own code and line stand
    for args, code, said in ((["inspect", "nope.onnx", "--json"], 3, "nope.onnx: no such file"),
                             (["check", "nope", "--bogus", "--json"], 2, "No such option '--bogus'")):
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-m", "edgekit", *args], stdout=full, stderr=subprocess.PIPE,
                                  text=True, timeout=60)
        assert done.returncode == code and said in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_recipe_missing_a_setting_names_its_key_and_leaves_no_out(tmp_path, cnn_data):
    """A search on a recipe without inputs or [data] named --input and --calibration, and left OUT with a pareto.json
    of failed trials."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\nsource = "{TESTS / "models.py"}:small_cnn"\n')
    result = cli(["search", recipe, "--trials", "1", "--out", tmp_path / "o"])
    assert_clean_error(result, 2, "[data] calibration", out=tmp_path / "o")
    assert "--calibration" not in result.stderr and not (tmp_path / "o").exists()
    recipe.write_text(recipe.read_text() + f'[data]\ncalibration = "{cnn_data[0]}"\n')
    result = cli(["search", recipe, "--trials", "1", "--out", tmp_path / "o"])
    assert_clean_error(result, 2, "[model] inputs", out=tmp_path / "o")
    assert "--input" not in result.stderr and not (tmp_path / "o").exists()
    assert_clean_error(run(recipe, "--out", tmp_path / "o"), 2, "[model] inputs", out=tmp_path / "o")  # export's too
    # without a recipe, what the command line lacks is named by its flag
    assert_clean_error(run("models:small_cnn", "--input", "image:Nx3x16x16"), 2, "--calibration")


@pytest.mark.parametrize("table,msg", [('method = "unstructured"\nround_to = 8', "[prune] round_to = 8 rounds"),
                                       ('ignore = ["nope"]', "[prune] ignore: no layer named nope")])
def test_a_recipes_prune_table_is_named_by_its_keys(tmp_path, cnn_data, table, msg):
    """They said --round-to and --ignore, flags of `edgekit prune` that the user never typed."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\nsource = "{TESTS / "models.py"}:small_cnn"\ninputs = ["image:Nx3x16x16"]\n'
                      f'[data]\ncalibration = "{cnn_data[0]}"\n[prune]\nratio = 0.3\n{table}\n')
    assert_clean_error(run(recipe, "--no-bench", "--out", tmp_path / "o"), 2, msg, out=tmp_path / "o")


def test_help_into_a_gone_reader_and_a_result_into_a_closed_stdout(tmp_path):
    """`edgekit --help | true` exited 1; a result on a closed stdout (`>&-`) went to stderr with exit 0."""
    for args in (["--help"], ["export", "--help"], ["--version"]):
        run = subprocess.Popen([sys.executable, "-m", "edgekit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        run.stdout.close()
        _, err = run.communicate(timeout=60)
        assert run.returncode == 0 and err == b"", (args, err)
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    for args in (["inspect", tmp_path / "m.onnx", "--json"], ["inspect", tmp_path / "m.onnx"], ["targets"],
                 ["targets", "show", "android-arm64"]):  # the last two printed with click.echo: on stderr, exit 0
        done = subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)],
                              stderr=subprocess.PIPE, text=True, timeout=60, preexec_fn=lambda: os.close(1))
        assert done.returncode == 6, done.stderr
        assert done.stderr == "edgekit: error: stdout is closed: the result could not be written (give the command a " \
                              "stdout)\n", done.stderr


@pytest.mark.parametrize("command", [["prune", "--ratio", "0.3"], ["share", "--clusters", "4"]])
def test_the_reload_line_is_shell_quoted_and_names_the_inputs(tmp_path, command):
    """It was `edgekit export SOURCE --weights OUT ...` unquoted (a path with spaces broke) and without --input."""
    import shlex

    out = tmp_path / "my models" / "m.pt"
    out.parent.mkdir()
    result = cli([command[0], "models:small_cnn", "--input", "image:Nx3x16x16", *command[1:], "--out", out])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("reload with: ") and line.endswith(" --calibration ..."), line
    assert shlex.split(line.removeprefix("reload with: ").removesuffix(" --calibration ...")) == [
        "edgekit", "export", "models:small_cnn", "--weights", str(out), "--input", "image:Nx3x16x16"]


def test_verbose_is_an_option_of_every_command(tmp_path):
    """`-v` was the group's alone: `edgekit prune -v` (or check, search, share, ...) was "No such option"."""
    from edgekit.cli import _every_command, main

    assert all("--verbose" in [o for p in c.params for o in p.opts] for c in _every_command(main))
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 3], [1.0, 0, 0, 0, 1, 0, 0, 0, 1])  # int8 has work
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    args = [sys.executable, "-m", "edgekit", "export", str(tmp_path / "m.onnx"), "--calibration", "random",
            "--no-bench", "--out"]
    quiet = subprocess.run([*args, str(tmp_path / "q")], capture_output=True, text=True, timeout=120)
    loud = subprocess.run([*args, str(tmp_path / "o"), "-v"], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and loud.returncode == 0, loud.stderr
    assert "edgekit: target desktop-x86" in loud.stderr and "edgekit: target" not in quiet.stderr
    assert cli(["inspect", tmp_path / "m.onnx", "-v"]).exit_code == 0


def test_every_option_says_what_it_does():
    """export's --seed, --exporter and --task showed a default alone; search's --trials, --sampler, prune's --method,
    --importance, distill's --epochs, --lr, ... nothing at all."""
    import click

    from edgekit.cli import _every_command, main

    bare = [f"{c.name} {p.opts[0]}" for c in (main, *_every_command(main)) for p in c.params
            if isinstance(p, click.Option) and not (p.help or "").split("(default")[0].strip()]
    assert bare == []


def test_emulator_setups_spec_is_shown_optional():
    """Its usage line showed `aarch64[:CPU]` as a required argument; it defaults to aarch64."""
    usage = cli(["emulator", "setup", "-h"]).output.splitlines()[0]
    assert usage.endswith("setup [OPTIONS] [aarch64[:CPU] | x86_64[:CPU]]"), usage


@pytest.mark.parametrize("args", [["-h"], ["export", "-h"], ["check", "-h"]])
def test_help_lists_every_exit_code(args):
    """The exit codes a CI job gates on were in the README only: `-h` of edgekit, export and check named none."""
    from edgekit.errors import ExitCode

    result = cli(args)
    assert result.exit_code == 0, result.output
    listed = " ".join(result.stdout.split("Exit codes:")[-1].split())
    assert "Exit codes:" in result.stdout, result.stdout
    for code in [*(int(c) for c in ExitCode), 130, 141]:
        assert f" {code} " in f" {listed}", (code, listed)


def test_check_verbose_says_what_check_logs():
    """`edgekit check -h` said of -v "export: each target as it starts, and --auto's trials", and `check -v` logged
    nothing: a long check of OUT in a CI log showed no progress. It logs each package folder as it starts on it."""
    helped = cli(["check", "--help"])
    assert helped.exit_code == 0
    said = " ".join(helped.output.split())
    assert "-v, --verbose Log progress on stderr: each package folder as check starts on it" in said, said
    assert "--auto" not in said and "export:" not in said
    package = ROOT / "examples" / "ci" / "digits-desktop-x86.tar.gz"
    args = [sys.executable, "-m", "edgekit", "check", str(package)]
    quiet = subprocess.run(args, capture_output=True, text=True, timeout=120)
    loud = subprocess.run([*args, "-v"], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and loud.returncode == 0, loud.stderr
    assert f"edgekit: checking {package}" in loud.stderr and "checking" not in quiet.stderr, loud.stderr


def test_check_writes_nothing_to_the_home_folder_and_prints_no_telemetry_warning(tmp_path):
    """A package made on a laptop is checked in CI (CI=true: onnxruntime keeps no telemetry store) and on laptops
    (no CI variables): there `edgekit check` itself imported onnxruntime with telemetry on, which wrote its store
    into ~/.cache (outside the package, the JUnit file and TMPDIR), and with a home it cannot write (a container's
    read-only or missing one) printed a colour-coded onnxruntime warning at import, NO_COLOR or not. Only the children
    ran with ORT_DISABLE_TELEMETRY=1; the program now runs with it too."""
    home, cache, work = tmp_path / "home", tmp_path / "cache", tmp_path / "work"
    for folder in (home, work):
        folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"ORT_DISABLE_TELEMETRY", "PYTHONPATH"} | CI_MARKS}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(cache), PYTHONPATH=str(ROOT), NO_COLOR="1")
    args = [sys.executable, "-P", "-m", "edgekit", "check", str(ROOT / "examples" / "ci" / "digits-desktop-x86.tar.gz"),
            "--junit", "parity.xml"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=work)
    assert done.returncode == 0, done.stderr
    assert not list(home.rglob("*")) and not cache.exists(), sorted(tmp_path.rglob("*"))  # old: onnxruntime.db
    assert sorted(p.name for p in work.iterdir()) == ["parity.xml"]
    unwritable = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=work,
                                env={**env, "HOME": os.devnull, "XDG_CACHE_HOME": os.path.join(os.devnull, "cache")})
    assert unwritable.returncode == 0 and unwritable.stderr == "", unwritable.stderr  # old: "\x1b[0;93m... telemetry"
    subprocess.run([sys.executable, "-c", "import onnxruntime"], env=env, timeout=120, check=True)
    assert (cache / "Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db").is_file()  # where it would have gone


def test_check_in_a_legacy_ascii_locale_opens_utf8_names_and_writes_the_junit(tmp_path):
    """With LC_ALL=C and UTF-8 mode off (PYTHONUTF8=0, as some CI images set), Python holds a UTF-8 file name as
    surrogates: `check paquet-é` said "not a UTF-8 path" (exit 3) of a UTF-8 name, and `--junit rapport-ß.xml` was an
    internal error (exit 5: str.encode() of the name). onnxruntime gets the name's own bytes; a name that is not
    UTF-8 (bytes of another encoding) is still refused."""
    import tarfile

    with tarfile.open(ROOT / "examples" / "ci" / "digits-desktop-x86.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    (tmp_path / "desktop-x86").rename(tmp_path / "paquet-é")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-P", "-m", "edgekit", "check", "paquet-é", "--junit", "rapport-ß.xml"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path, errors="replace")
    assert done.returncode == 0, done.stderr  # old: 5, "internal error: UnicodeEncodeError"
    assert "3 passed, 0 failed" in done.stdout, done.stdout
    assert "<testsuites" in (tmp_path / "rapport-ß.xml").read_text(encoding="utf-8")
    os.rename(tmp_path / "paquet-é", os.path.join(os.fsencode(tmp_path), b"p\xe9"))  # Latin-1: not UTF-8
    latin = subprocess.run([sys.executable, "-P", "-m", "edgekit", "check", "."], capture_output=True, text=True,
                           timeout=120, env=env, cwd=tmp_path, errors="replace")
    assert latin.returncode == 3 and "not a UTF-8 path" in latin.stderr, latin.stderr


def test_export_in_a_legacy_ascii_locale_says_why_a_utf8_out_folder_reads_as_not_utf8(tmp_path):
    """Under LC_ALL=C with UTF-8 mode off, `export --out sortie-ß` said "not a UTF-8 path" of a UTF-8 name (exit 2)
    and the user renamed a good folder; it says the locale read it so, and what to run with. A name that is not
    UTF-8 (Latin-1 bytes) gets no such hint."""
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-P", "-m", "edgekit", "export", *CNN, "--calibration", "random", "-t", "desktop-x86"]
    said = {}
    for name, out in (("utf8", "sortie-ß"), ("latin", os.fsdecode(b"sortie-\xdf"))):
        done = subprocess.run([*args, "--out", out], capture_output=True, text=True, timeout=120, env=env,
                              cwd=tmp_path, errors="replace")
        assert done.returncode == 2 and "not a UTF-8 path" in done.stderr, done.stderr
        said[name] = done.stderr
    assert "read in an ASCII locale: run with PYTHONUTF8=1" in said["utf8"], said  # old: "not a UTF-8 path" alone
    assert "PYTHONUTF8" not in said["latin"], said
    assert not any(tmp_path.iterdir())


def test_check_junit_and_inspect_paths_take_a_tilde_as_exports_flags_do(tmp_path, monkeypatch):
    """A quoted `--junit "~/r.xml"` said "its folder does not exist", `inspect "~/m.onnx"` and `--compare "~/a.onnx"
    "~/b.onnx" --data "~/d.npz"` "no such file": export's path flags and recipes read `~` as the home (one rule,
    config.expand_home)."""
    import edgekit
    from onnx import TensorProto, helper

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 3], [1.0, 0, 0, 0, 1, 0, 0, 0, 1])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), home / "m.onnx")
    np.savez(home / "d.npz", x=np.random.default_rng(0).random((8, 1, 3), dtype=np.float32))
    edgekit.quantize(home / "m.onnx", str(home / "d.npz"), out=home / "m.int8.onnx")
    result = cli(["check", tmp_path / "no-package", "--junit", "~/r.xml"])
    assert result.exit_code == 3 and (home / "r.xml").is_file() and not (tmp_path / "~").exists(), result.output
    result = cli(["inspect", "~/m.onnx", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["opset"] == {"ai.onnx": 17}, result.output
    result = cli(["inspect", "--compare", "~/m.onnx", "~/m.int8.onnx", "--data", "~/d.npz", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["nodes"], result.output
