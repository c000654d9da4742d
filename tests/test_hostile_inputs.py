"""Hostile and broken input (issue 6): clear errors, nothing lost, nothing executed that should not be.

Also covered elsewhere: bad data files (test_errors.py: wrong shape/dtype, NaN/Inf, zero samples,
names, corrupt .npz, mixed folders), recipe/profile keys and types (test_errors.py), unsafe archives
(test_package.py: absolute, `..`, symlink, hard link, device, oversized members).
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import ROOT, TESTS
from onnx import TensorProto, helper

from edgekit.cli import main

CNN = ["models:small_cnn", "--input", "image:Nx3x16x16"]


def run(*args):
    return CliRunner().invoke(main, ["export", *map(str, args), "--bench-runs", "2"])


def one_line_error(result, code, *fragments):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error:") and "Traceback" not in result.output, lines
    for f in fragments:
        assert f in lines[0], lines[0]


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path, cnn_data):
    from models import small_cnn
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": small_cnn().state_dict(), "payload": RunsCode(marker)}, evil)
    one_line_error(run(*CNN, "--weights", evil, "--calibration", cnn_data[0], "--out", tmp_path / "o"), 3,
                   "--trust-checkpoint", "system")
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_trust_checkpoint_loads_a_full_pickle(tmp_path, cnn_data):
    from models import small_cnn
    ckpt = tmp_path / "full.pt"
    import argparse
    torch.save({"state_dict": small_cnn().state_dict(), "hparams": argparse.Namespace(lr=0.1)}, ckpt)
    refused = run(*CNN, "--weights", ckpt, "--calibration", cnn_data[0], "--out", tmp_path / "a")
    assert refused.exit_code == 3 and "--trust-checkpoint" in refused.stderr
    trusted = run(*CNN, "--weights", ckpt, "--trust-checkpoint", "--calibration", cnn_data[0], "--out", tmp_path / "b")
    assert trusted.exit_code == 0, trusted.output


def _linear_onnx(path, location=None, op="MatMul", domain="", inputs=True):
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 2], np.ones(8, np.float32).tobytes(), raw=True)
    if location is not None:
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        w.external_data.add(key="location", value=location)
    node = helper.make_node(op, ["x", "w"], ["y"], domain=domain) if inputs else helper.make_node("Identity", ["w"],
                                                                                                  ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])]
                              if inputs else [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [w])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def lin_data(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))
    return tmp_path / "x.npz"


def test_valid_handmade_onnx_works(tmp_path, lin_data):
    result = run(_linear_onnx(tmp_path / "ok.onnx"), "--calibration", lin_data, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("make,msg", [
    (lambda p: p.write_bytes(_linear_onnx(p).read_bytes()[:40]), "not a valid ONNX model"),
    (lambda p: p.write_bytes(os.urandom(2048)), "not a valid ONNX model"),
    (lambda p: _linear_onnx(p, location="/etc/passwd"), "outside the model's folder"),
    (lambda p: _linear_onnx(p, location="../../secret.bin"), "outside the model's folder"),
    (lambda p: _linear_onnx(p, location="missing.bin"), "is missing"),
    (lambda p: _linear_onnx(p, op="FrobnicateTensor"), "FrobnicateTensor"),
    (lambda p: _linear_onnx(p, op="Magic", domain="com.example"), "com.example"),
    (lambda p: _linear_onnx(p, inputs=False), "no inputs"),
])
def test_hostile_onnx_models(tmp_path, lin_data, make, msg):
    model = tmp_path / "model.onnx"
    make(model)
    one_line_error(run(model, "--calibration", lin_data, "--out", tmp_path / "o"), 3, msg)
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if ".edgekit-" in p.name]


def test_external_data_link_out_of_the_folder_is_refused(tmp_path, lin_data):
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(np.ones(8, np.float32).tobytes())
    (folder / "weights.bin").symlink_to(tmp_path / "outside.bin")
    one_line_error(run(_linear_onnx(folder / "model.onnx", location="weights.bin"), "--calibration", lin_data), 3,
                   "outside the model's folder")


def _export_cmd(out, extra=()):
    return [sys.executable, "-m", "edgekit", "export", *CNN, "--calibration", "random", "--out", str(out),
            "--bench-runs", "1000000", *extra]


def _wait_for_stage(parent, proc, timeout=60):
    start = time.time()
    while time.time() - start < timeout:
        if any(".edgekit-" in p.name for p in parent.iterdir()):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_leaves_previous_output_and_no_temp_dirs(tmp_path, sig):
    out = tmp_path / "dist"
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{ROOT}"}
    first = subprocess.run(_export_cmd(out)[:-2] + ["--bench-runs", "2"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in (out / "desktop-x86").iterdir()}
    proc = subprocess.Popen(_export_cmd(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for_stage(tmp_path, proc), "run never started staging"
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err
    assert "interrupted" in err
    assert {p.name: p.read_bytes() for p in (out / "desktop-x86").iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if ".edgekit-" in p.name or p.name.endswith(".lock")]


def test_concurrent_runs_to_the_same_out_do_not_interleave(tmp_path):
    out = tmp_path / "dist"
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{ROOT}"}
    slow = subprocess.Popen(_export_cmd(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for_stage(tmp_path, slow)
    second = subprocess.run(_export_cmd(out)[:-2] + ["--bench-runs", "2"], env=env, capture_output=True, text=True)
    slow.send_signal(signal.SIGTERM)
    slow.communicate(timeout=60)
    assert second.returncode == 3, second.stderr
    assert "another edgekit run is writing" in second.stderr and "Traceback" not in second.stderr
