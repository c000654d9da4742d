"""Model sources beyond MODULE:FUNCTION: TorchScript and torch.export archives; fusion diagnostics."""
import json
import subprocess
import sys

import attacks
import numpy as np
import pytest
import torch
from models import residual, small_cnn

from conftest import cli
from edgekit import bench, quantization as quantize
from edgekit.config import InputSpec, QuantSettings
from edgekit.onnx_export import export_torch, preprocess


def _export(*args):
    return cli(["export", *map(str, args), "--bench-runs", "3", "--json"])


def test_torchscript_archive(tmp_path, cnn_data):
    path = tmp_path / "model.ts"
    torch.jit.trace(small_cnn().eval(), torch.zeros(1, 3, 16, 16)).save(str(path))
    result = _export(path, "--input", "image:Nx3x16x16", "--calibration", cnn_data[0], "--out", tmp_path / "o",
                     "--trust-checkpoint")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)["targets"][0]
    assert m["parity"]["export"]["outputs"][0]["cosine"] > 0.99999


def test_torch_export_archive(tmp_path, cnn_data):
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(small_cnn().eval(), (torch.zeros(2, 3, 16, 16),)), str(path))
    data = tmp_path / "pairs.npz"
    np.savez(data, image=np.random.default_rng(0).random((20, 2, 3, 16, 16), dtype=np.float32))
    result = _export(path, "--input", "image:2x3x16x16", "--calibration", data, "--out", tmp_path / "o",
                     "--trust-checkpoint")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)["targets"][0]
    assert m["parity"]["export"]["outputs"][0]["cosine"] > 0.99999
    assert m["model"]["exporter"] == "dynamo"  # it said torchscript, the recipe's default, for a .pt2 program
    torch.save({"garbage": torch.zeros(1)}, tmp_path / "w.pt")  # ignored, recorded as used, exit 0
    weights = _export(path, "--input", "image:2x3x16x16", "--calibration", data, "--out", tmp_path / "w",
                      "--trust-checkpoint", "--weights", tmp_path / "w.pt")
    assert weights.exit_code == 2 and "--weights does not apply to a torch.export (.pt2) program" in weights.stderr


@pytest.mark.parametrize("craft,suffix,why", [
    (attacks.torchscript_writing_on_load, "pt", "TorchScript archive is a program"),
    (attacks.pt2_with_pickled_weight, "pt2", "unpickles entries"),
])
def test_model_files_that_carry_code_need_trust(tmp_path, cnn_data, craft, suffix, why):
    """Nothing in the file runs without --trust-checkpoint; with it, the payload is real (it does run)."""
    marker, model = tmp_path / "marker", tmp_path / f"evil.{suffix}"
    craft(model, marker)
    assert not marker.exists()
    args = [model, "--input", "x:1x4", "--calibration", "random", "--out", tmp_path / "o", "--no-bench"]
    refused = _export(*args)
    assert refused.exit_code == 3 and not marker.exists() and not (tmp_path / "o").exists()
    [line] = refused.stderr.strip().splitlines()
    assert "can run code when loaded" in line and why in line and "--trust-checkpoint" in line
    _export(*args, "--trust-checkpoint")
    assert marker.exists()  # the attack is real: only the user's explicit trust lets it run


def test_state_dict_as_model_is_refused_clearly(tmp_path, cnn_data):
    path = tmp_path / "weights.pt"
    torch.save(small_cnn().state_dict(), path)
    result = _export(path, "--input", "image:Nx3x16x16", "--calibration", cnn_data[0], "--trust-checkpoint")
    assert result.exit_code == 3 and "not a TorchScript archive" in result.stderr


def test_unfused_qdq_count_finds_the_slow_path(tmp_path):
    """S8S8 leaves convs whose input feeds a residual add as float behind DequantizeLinear; U8S8 fuses them."""
    spec = (InputSpec.parse("image:1x3x32x32"),)
    fp32, _ = preprocess(export_torch(residual(), spec, (), 17, tmp_path / "r.onnx"), tmp_path / "r.pre.onnx")
    rng = np.random.default_rng(0)
    feeds = [{"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(8)]
    counts = {}
    for name, s in {"s8s8": QuantSettings(activation_type="int8", reduce_range="false"),
                    "u8s8": QuantSettings(reduce_range="false")}.items():
        out = tmp_path / f"{name}.onnx"
        quantize.quantize(fp32, out, quantize.plan(fp32, s, {"reduce_range"}), feeds)
        counts[name] = bench.unfused_qdq(str(out))
    assert counts["u8s8"]["unfused_compute_nodes"] == 0 and counts["u8s8"]["integer_nodes"] >= 3
    assert counts["s8s8"]["unfused_compute_nodes"] >= 1


def test_a_forward_that_writes_its_input_in_place_changes_no_data(tmp_path):
    """x.mul_(2) in forward doubled the validation data the ONNX models then ran on (export parity failed for a
    correct export), and the API caller's own arrays."""
    import edgekit

    class Doubles(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(x.mul_(2))

    torch.manual_seed(0)
    batches = [{"x": np.random.default_rng(i).standard_normal((1, 8)).astype(np.float32)} for i in range(24)]
    kept = [b["x"].copy() for b in batches]
    report = edgekit.export(Doubles(), inputs=["x:Nx8"], calibration=batches, out=tmp_path / "o", no_bench=True)
    target = report.targets["desktop-x86"]
    assert target.export_parity.worst("max_abs", max) < 1e-5, target.export_parity
    assert all(np.array_equal(b["x"], k) for b, k in zip(batches, kept))


def test_output_names_are_distinct_not_empty_and_not_an_inputs(tmp_path, cnn_data):
    """Duplicated or empty names were renamed by the exporter (a.1, "5") with exit 0; an input's name was exit 4."""
    for names, why in ((["a", "a"], "given twice"), ([""], "empty"), (["image"], "is an input's name")):
        result = _export("models:small_cnn", "--input", "image:Nx3x16x16", "--calibration", cnn_data[0], "--out",
                         tmp_path / "o", *[arg for n in names for arg in ("--output-name", n)])
        assert result.exit_code == 2 and why in result.stderr, result.output


def test_a_model_built_without_weights_is_the_same_every_run(tmp_path):
    """The CLI imported torch after seeding (torch was seeded only when already imported): other weights each run."""
    import subprocess
    import sys

    (tmp_path / "m.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(8, 4)\n")
    outs = []
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-m", "edgekit", "export", "m.py:build", "--input", "x:Nx8", "--calibration",
                        "random", "--no-bench", "--out", name], cwd=tmp_path, check=True, capture_output=True)
        outs.append((tmp_path / name / "desktop-x86" / "model.onnx").read_bytes())
    assert outs[0] == outs[1]


def test_prune_and_share_of_a_model_built_without_weights_write_the_same_weights_every_run(tmp_path):
    """export and distill seed a model built without weights; prune and share did not: each run wrote another init
    (pruning an architecture to train it from scratch gave another file every time)."""
    from edgekit.load import load_model

    (tmp_path / "m.py").write_text("import torch\n\ndef build():\n"
                                   "    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), "
                                   "torch.nn.Linear(16, 4))\n")
    source = f"{tmp_path / 'm.py'}:build"
    for command in (["prune", "--ratio", "0.5"], ["share", "--clusters", "4"]):
        written = []
        for run in ("a", "b"):
            state = torch.get_rng_state()
            result = cli([command[0], source, "--input", "x:Nx8", *command[1:], "--out", tmp_path / f"{run}.pt",
                          "--force"])
            assert result.exit_code == 0, result.output
            assert torch.equal(torch.get_rng_state(), state), f"{command[0]} moved the caller's random state"
            written.append(load_model(source, str(tmp_path / f"{run}.pt")).module.state_dict())
        assert all(torch.equal(written[0][k], written[1][k]) for k in written[0]), command[0]
    # a fresh process, as a user runs it: torch is first imported by the user's module, inside the seeding
    for run in ("c", "d"):
        done = subprocess.run([sys.executable, "-m", "edgekit", "prune", source, "--input", "x:Nx8", "--ratio", "0.5",
                               "--out", tmp_path / f"{run}.pt"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    fresh = [load_model(source, str(tmp_path / f"{run}.pt")).module.state_dict() for run in ("c", "d")]
    assert all(torch.equal(fresh[0][k], fresh[1][k]) for k in fresh[0]), "prune in a fresh process"
