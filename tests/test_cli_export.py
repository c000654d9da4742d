"""`edgekit export` end to end through the CLI, on tiny models built in code and on the digits example."""
import json

import numpy as np
import onnx
import onnxruntime as ort
from click.testing import CliRunner
from conftest import DIGITS, TESTS

from edgekit.cli import main

MANIFEST_KEYS = {"edgekit_version", "target", "inputs", "outputs", "quantization", "files", "parity", "latency",
                 "gates", "passed"}


def export(*args, bench_runs=5):
    result = CliRunner().invoke(main, ["export", *map(str, args), "--bench-runs", str(bench_runs), "--json"])
    return result


def manifests(result):
    return json.loads(result.stdout)


def test_digits_example_desktop_x86(tmp_path):
    out = tmp_path / "dist"
    result = export(DIGITS / "edgekit.toml", "--target", "desktop-x86", "--out", out, bench_runs=20)
    assert result.exit_code == 0, result.output
    [m] = manifests(result)
    assert MANIFEST_KEYS <= set(m)
    tdir = out / "desktop-x86"
    assert sorted(p.name for p in tdir.iterdir()) == ["golden.npz", "manifest.json", "model.int8.onnx", "model.onnx",
                                                       "report.md"]
    # the bar: int8 accuracy within 1 point of fp32 on held-out digits
    assert m["accuracy"]["fp32"] - m["accuracy"]["int8"] <= 1.0
    assert m["accuracy"]["fp32"] > 95
    assert m["parity"]["export"]["outputs"][0]["cosine"] > 0.99999
    assert {"p50_ms", "p90_ms", "p99_ms", "threads", "host"} <= set(m["latency"]["int8"])
    assert m["latency"]["int8"]["host"]["cpu"]
    props = {p.key: p.value for p in onnx.load(tdir / "model.int8.onnx").metadata_props}
    assert props["edgekit_target"] == "desktop-x86" and props["edgekit_version"]
    assert json.loads((tdir / "manifest.json").read_text())["files"].keys() == {"model.onnx", "model.int8.onnx",
                                                                                 "golden.npz"}
    assert "PASSED" in (tdir / "report.md").read_text()


def test_table_output_one_row_per_target(tmp_path):
    result = CliRunner().invoke(main, ["export", str(DIGITS / "edgekit.toml"), "--target", "desktop-x86",
                                       "--target", "android-arm64", "--out", str(tmp_path), "--bench-runs", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "target"
    assert [ln.split()[0] for ln in lines[2:4]] == ["desktop-x86", "android-arm64"]
    assert "latency measured on:" in result.stdout and "thread" in result.stdout


def test_module_function_source_with_dynamic_batch(tmp_path, cnn_data):
    cal, val = cnn_data
    result = export("models:small_cnn", "--input", "image:Nx3x16x16", "--calibration", cal, "--validation", val,
                    "--out", tmp_path)
    assert result.exit_code == 0, result.output
    [m] = manifests(result)
    assert m["inputs"] == [{"name": "image", "shape": ["N", 3, 16, 16], "dtype": "float32"}]
    sess = ort.InferenceSession(str(tmp_path / "desktop-x86" / "model.int8.onnx"))
    for batch in (1, 5):
        out = sess.run(None, {"image": np.zeros((batch, 3, 16, 16), np.float32)})[0]
        assert out.shape == (batch, 5)


def test_file_py_source_and_onnx_source(tmp_path, cnn_data):
    cal, val = cnn_data
    first = export(TESTS / "models.py:small_cnn", "--input", "image:Nx3x16x16", "--calibration", cal,
                   "--out", tmp_path / "a")
    assert first.exit_code == 0, first.output
    onnx_model = tmp_path / "a" / "desktop-x86" / "model.onnx"
    second = export(onnx_model, "--calibration", cal, "--validation", val, "--out", tmp_path / "b")
    assert second.exit_code == 0, second.output
    [m] = manifests(second)
    assert m["parity"]["export"] is None  # no torch model to compare with
    assert m["inputs"][0]["name"] == "image"


def test_multi_input_int64_encoder_gets_transformer_scheme(tmp_path, encoder_data):
    cal, val = encoder_data
    result = export("models:tiny_encoder", "--input", "input_ids:Nx12:int64", "--input", "attention_mask:Nx12:int64",
                    "--calibration", cal, "--validation", val, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    [m] = manifests(result)
    q = m["quantization"]
    assert q["attention_graph"] is True
    assert q["mode"] == "dynamic" and q["op_types"] == ["MatMul", "Gemm"]
    assert m["parity"]["quantization"]["outputs"][0]["cosine"] >= 0.99


def test_full_static_on_encoder_is_what_the_scheme_avoids(tmp_path, encoder_data):
    """Forcing full static QDQ (scheme off) quantizes the mask path: parity is worse than the safe scheme."""
    cal, val = encoder_data
    base = ["models:tiny_encoder", "--input", "input_ids:Nx12:int64", "--input", "attention_mask:Nx12:int64",
            "--calibration", cal, "--validation", val]
    safe = manifests(export(*base, "--out", tmp_path / "safe"))[0]
    full = export(*base, "--transformer-scheme", "off", "--out", tmp_path / "full")
    full_m = manifests(full)[0]
    assert full_m["quantization"]["attention_graph"] is True and full_m["quantization"]["mode"] == "static"
    assert full_m["parity"]["quantization"]["outputs"][0]["sqnr_db"] < safe["parity"]["quantization"]["outputs"][0]["sqnr_db"]


def test_failed_gate_exits_1_and_still_writes(tmp_path, cnn_data):
    cal, val = cnn_data
    profile = tmp_path / "strict.toml"
    profile.write_text('name = "strict"\n[parity]\nquant_sqnr_min_db = 150.0\n')
    result = export("models:small_cnn", "--input", "image:Nx3x16x16", "--calibration", cal, "--validation", val,
                    "--target", profile, "--out", tmp_path / "out")
    assert result.exit_code == 1, result.output
    [m] = manifests(result)
    assert m["passed"] is False
    assert [g["name"] for g in m["gates"] if not g["passed"]] == ["quant_sqnr_db"]
    assert (tmp_path / "out" / "strict" / "model.int8.onnx").exists()
    assert "FAIL" in (tmp_path / "out" / "strict" / "report.md").read_text()


def test_random_calibration_is_flagged(tmp_path):
    result = export("models:small_cnn", "--input", "image:Nx3x16x16", "--calibration", "random", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    [m] = manifests(result)
    assert m["calibration"]["random"] is True
    assert any("RANDOM DATA" in w for w in m["warnings"])
    assert "RANDOM DATA" in (tmp_path / "desktop-x86" / "report.md").read_text()


def test_held_out_split_when_no_validation(tmp_path, cnn_data):
    cal, _ = cnn_data
    result = export("models:small_cnn", "--input", "image:Nx3x16x16", "--calibration", cal, "--out", tmp_path)
    [m] = manifests(result)
    assert m["validation"]["samples"] == 10 and m["calibration"]["samples"] == 30
    assert "held-out" in m["validation"]["data"]


def test_quant_overrides_from_flags(tmp_path, cnn_data):
    cal, val = cnn_data
    result = export("models:small_cnn", "--input", "image:Nx3x16x16", "--calibration", cal, "--validation", val,
                    "--per-tensor", "--activation-type", "int8", "--calibrate-method", "percentile",
                    "--reduce-range", "false", "--exclude-nodes", "/body/body.0/Conv", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    q = manifests(result)[0]["quantization"]
    assert (q["per_channel"], q["activation_type"], q["calibrate_method"], q["reduce_range"]) == \
        (False, "int8", "percentile", False)
    graph = onnx.load(tmp_path / "desktop-x86" / "model.int8.onnx").graph
    conv = [n for n in graph.node if n.op_type == "Conv"]
    assert len(conv) == 2
    producers = {o: n.op_type for n in graph.node for o in n.output}
    first = next(n for n in conv if n.name == "/body/body.0/Conv")
    assert producers.get(first.input[1]) != "DequantizeLinear"  # excluded: weights stay float


def test_two_outputs_named(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((20, 6)).astype(np.float32))
    result = export("models:two_outputs", "--input", "x:Nx6", "--output-name", "first", "--output-name", "second",
                    "--calibration", tmp_path / "d.npz", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    m = manifests(result)[0]
    assert [o["name"] for o in m["outputs"]] == ["first", "second"]
    assert [o["output"] for o in m["parity"]["quantization"]["outputs"]] == ["first", "second"]


def test_arm_target_parity_uses_the_devices_arithmetic(tmp_path, cnn_data):
    """On an x86 host without VNNI, full-range u8s8 saturates; an ARM device's does not, so parity is
    computed with onnxruntime's exact kernels for ARM targets (and the default ones for x86)."""
    from edgekit import host
    cal, val = cnn_data
    result = export("models:small_cnn", "--input", "image:Nx3x16x16", "--calibration", cal, "--validation", val,
                    "-t", "arm64-linux", "-t", "desktop-x86", "--out", tmp_path)
    arm, x86 = manifests(result)
    assert arm["quantization"]["reduce_range"] is False
    assert x86["quantization"]["reduce_range"] is host.x86_needs_reduce_range()
    emulated = "exact" in arm["parity"]["quantization"]["int8_kernels"]
    assert emulated is host.x86_needs_reduce_range()
    assert x86["parity"]["quantization"]["int8_kernels"] == "host default"
