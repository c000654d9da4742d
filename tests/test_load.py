"""What a model source gives edgekit: torch.compile's wrapper, parametrized weights, train mode, outputs of no
tensor or named ones, and sizes the model itself cannot run at."""
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

import edgekit
from conftest import ROOT, cli

HEADER = "import collections\nimport torch\nfrom torch import nn\n"
NET = "nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2))"


def _export(tmp_path, body, *args):
    (tmp_path / "m.py").write_text(HEADER + body)
    return cli(["export", f"{tmp_path / 'm.py'}:build", "--input", "x:Nx3x16x16", "--calibration", "random",
                "--out", tmp_path / "o", "--no-bench", "--json", *args])


def test_a_torch_compiled_module_from_a_file_exports_as_its_module(tmp_path):
    """The API unwrapped torch.compile's wrapper; a file source's failed in torch's tracer, exit 4 ("Detected that you
    are using FX to torch.jit.trace a dynamo-optimized function")."""
    result = _export(tmp_path, f"def build():\n    return torch.compile({NET}.eval())\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["targets"][0]["parity"]["export"]["outputs"][0]["cosine"] > 0.99999
    # a user's class of that name computes its own forward: exported as it is, never unwrapped by its name
    body = (f"class OptimizedModule(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
            f"        self._orig_mod = {NET}\n    def forward(self, x):\n        return self._orig_mod(x) * 2 + 1\n"
            "def build():\n    return OptimizedModule().eval()\n")
    result = _export(tmp_path, body, "--force")
    assert result.exit_code == 0, result.output
    import onnx

    ops = {n.op_type for n in onnx.load(tmp_path / "o" / "desktop-x86" / "model.onnx").graph.node}
    assert "Add" in ops, ops  # the *2+1 (its *2 folded into the Conv) was dropped with the wrapper


@pytest.mark.parametrize("returned", ["()", "{}"])
def test_a_model_returning_no_outputs_says_so(tmp_path, returned):
    """It said "model 'main_graph' has no inputs" after 13 lines of onnxruntime's traceback."""
    body = f"class M(nn.Module):\n    def forward(self, x):\n        return {returned}\ndef build():\n    return M()\n"
    result = _export(tmp_path, body)
    assert result.exit_code == 3, result.output
    [line] = result.stderr.strip().splitlines()
    assert line == f"edgekit: error: the model returns no outputs (its forward returned {returned}): nothing to export"


SNORM = (f"def build():\n    m = {NET}\n    m[3] = nn.utils.parametrizations.spectral_norm(m[3])\n"
         "    m[0] = nn.utils.parametrizations.weight_norm(m[0])\n    return m.eval()\n")


def test_parametrized_weights_export_as_the_tensors_they_compute(tmp_path):
    """spectral_norm's torch.vdot has no ONNX op: exit 4 ("op aten::vdot cannot be exported"), naming neither
    spectral_norm nor the cure. In eval mode the weight is a fixed function of its tensors: exported as that."""
    result = _export(tmp_path, SNORM)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["targets"][0]["parity"]["export"]["outputs"][0]["max_abs"] < 1e-5
    namespace = {}
    exec(HEADER + SNORM, namespace)
    module = namespace["build"]()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = module(x)
    edgekit.export(module, inputs=["x:Nx3x16x16"], calibration="random", out=tmp_path / "api", no_bench=True)
    with torch.no_grad():  # the caller's module as it was: its class is shared with edgekit's copy
        assert torch.equal(module(x), before)
    assert sum(map(torch.nn.utils.parametrize.is_parametrized, module.modules())) == 2
    # a parametrization of the user's that fails is their code failing (exit 3), not the export (was exit 4)
    broken = ("class Broken(nn.Module):  # works on the module it was made for, not on a copy\n"
              "    def __init__(self):\n        super().__init__()\n        self.made_for = id(self)\n"
              "    def forward(self, w):\n        if id(self) != self.made_for:\n"
              "            raise ValueError('no weight today')\n        return w\n"
              f"def build():\n    m = {NET}\n    torch.nn.utils.parametrize.register_parametrization(m[0], 'weight', "
              "Broken(), unsafe=True)\n    return m.eval()\n")
    result = _export(tmp_path, broken, "--force")
    assert result.exit_code == 3, result.output
    assert "a parametrization of Conv2d's weight failed to compute its weight: ValueError: no weight today" in \
        result.stderr, result.stderr


def test_torchs_ir_dump_stays_off_stdout(tmp_path):
    """A failed TorchScript export printed the model's whole IR graph (C++ stdout, 9 KB) onto the user's stdout, where
    the README promises one line on stderr."""
    (tmp_path / "m.py").write_text(HEADER + "class M(nn.Module):\n    def forward(self, x):\n"
                                   "        return torch.linalg.svd(x.flatten(1))[1]\ndef build():\n    return M()\n")
    run = subprocess.run([sys.executable, "-m", "edgekit", "export", f"{tmp_path / 'm.py'}:build", "--input",
                          "x:Nx3x16x16", "--calibration", "random", "--out", str(tmp_path / "o"), "--no-bench"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 4, run.stderr
    assert run.stdout == "" and "linalg_svd" in run.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("op", ["torch.fft.rfft(x).abs()", "x * 2"])
def test_a_models_own_prints_while_traced_reach_stdout_as_made(tmp_path, op):
    """A script's model printing in forward: its prints while traced were held, written after the export, and when
    the export failed (where they are wanted most) never: as in its other runs, they reach stdout as they are made."""
    code = (HEADER + "import edgekit\nclass M(nn.Module):\n    def forward(self, x):\n"
            "        print('traced' if torch.jit.is_tracing() else 'ran', flush=True)\n"
            f"        return {op}\n"
            "try:\n    edgekit.export(M(), inputs=['x:Nx4'], calibration='random', no_bench=True, out='o')\n"
            "except edgekit.StageError as e:\n    print('failed:', str(e)[:40], flush=True)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert "traced" in run.stdout.splitlines(), run.stdout + run.stderr
    assert ("failed: export failed: op aten::fft_rfft" in run.stdout) == ("fft" in op), run.stdout + run.stderr
    assert "graph(" not in run.stdout  # torch's own IR dump stays off it


def test_namedtuple_outputs_are_named_by_their_fields(tmp_path):
    body = ("Out = collections.namedtuple('Out', ['boxes', 'scores'])\nclass M(nn.Module):\n"
            f"    def __init__(self):\n        super().__init__()\n        self.net = {NET}\n"
            "    def forward(self, x):\n        y = self.net(x)\n        return Out(y, y.mean((2, 3)))\n"
            "def build():\n    return M().eval()\n")
    result = _export(tmp_path, body)
    assert result.exit_code == 0, result.output
    assert [o["output"] for o in json.loads(result.stdout)["targets"][0]["parity"]["export"]["outputs"]] == ["boxes", "scores"]


def test_a_model_in_training_mode_is_said_to_be_exported_in_eval_mode(tmp_path, caplog):
    """It was put in eval mode without a word: BatchNorm then computes otherwise than the module as given."""
    module = eval(NET, {"nn": torch.nn})
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        report = edgekit.export(module, inputs=["x:Nx3x16x16"], calibration="random", out=tmp_path / "o",
                                no_bench=True)
    assert module.training  # the caller's own, as it was
    said = [r.getMessage() for r in caplog.records if "training mode" in r.getMessage()]
    assert len(said) == 1 and "its BatchNorm2d '1' then normalises with its running statistics" in said[0], said
    # in the report and the manifest too, as the tracer's warnings are: the log alone reached no CI job
    assert said[0] in report.targets["desktop-x86"].warnings, report.targets["desktop-x86"].warnings
    assert said[0] in json.loads((report.out / "desktop-x86" / "manifest.json").read_text())["warnings"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgekit"):  # nothing differs in eval mode: nothing said
        edgekit.export(torch.nn.Conv2d(3, 4, 3), inputs=["x:Nx3x16x16"], calibration="random", out=tmp_path / "c",
                       no_bench=True)
    assert not [r for r in caplog.records if "training mode" in r.getMessage()]


def test_a_size_torch_cannot_run_either_is_not_blamed_on_the_export(tmp_path):
    """A stride-8 U-Net checked at H=20 (half the data's 40) failed with the hint "a size the tracer took as a
    constant? --exporter dynamo keeps it symbolic": torch fails there too."""
    body = ("class U(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
            "        self.down = nn.Conv2d(3, 4, 8, stride=8)\n"
            "        self.up = nn.ConvTranspose2d(4, 4, 8, stride=8)\n"
            "    def forward(self, x):\n        return torch.cat([self.up(self.down(x)), x], 1)\n"
            "def build():\n    return U().eval()\n")
    (tmp_path / "m.py").write_text(HEADER + body)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((8, 3, 40, 40), dtype=np.float32))
    args = ["export", f"{tmp_path / 'm.py'}:build", "--input", "x:Nx3xHxW", "--calibration", tmp_path / "d.npz",
            "--no-bench", "--json"]
    result = cli([*args, "--out", tmp_path / "o"])
    assert result.exit_code == 1, result.output
    warnings = json.loads(result.stdout)["targets"][0]["warnings"]
    said = [w for w in warnings if "H=20" in w]
    assert said == ["the model cannot run at H=20 (torch fails there too, so not the export): --size H=K,L names "
                    "sizes it takes (the data's: 40)"], warnings
    fine = cli([*args, "--out", tmp_path / "s", "--size", "H=32,48", "--size", "W=16"])
    assert fine.exit_code == 0, fine.output


def test_a_torchscript_file_given_as_weights_is_named_so(tmp_path, recwarn):
    """It was exit 3 after torch's UserWarning and source line, quoting torch's text cut mid-word ("but it ca")."""
    from edgekit.errors import InputError
    from edgekit.load import load_weights

    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), tmp_path / "lin.ts")
    recwarn.clear()  # torch.jit.script's own
    with pytest.raises(InputError, match="is a TorchScript archive, not a state dict: give it as the model"):
        load_weights(torch.nn.Linear(4, 2), str(tmp_path / "lin.ts"), torch)
    assert not recwarn.list
