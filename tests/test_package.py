"""Packaging for mobile/embedded builds and the CI parity gate `edgekit check` (issue 3)."""
import functools
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import DIGITS, ROOT, check_cases, cli, rehash, write_manifest

import edgekit
from edgekit import config, mobile, report_html
from edgekit.package import read_golden, sha256

TARGETS = ["android-arm64", "arm64-linux", "ios-arm64"]


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    out = tmp_path_factory.mktemp("pkg") / "dist"
    args = ["export", str(DIGITS / "edgekit.toml"), "--out", str(out), "--archive", "--bench-runs", "2", "--json"]
    for t in TARGETS:
        args += ["-t", t]
    result = cli(args)
    assert result.exit_code == 0, result.output
    return out, {m["target"]: m for m in json.loads(result.stdout)["targets"]}


def fresh_copy(packaged, tmp_path, target="android-arm64"):
    dest = tmp_path / target
    shutil.copytree(packaged[0] / target, dest)
    return dest


def check(*args):
    return cli(["check", *map(str, args)])


def test_ort_format_loads_and_matches_its_onnx(packaged):
    out, manifests = packaged
    folder = out / "android-arm64"
    assert manifests["android-arm64"]["ort_format"]["optimization_style"] == "Runtime"
    config = (folder / "required_operators.config").read_text()
    assert "QLinearConv" in config or "Conv" in config
    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)  # android ships fixed shapes: batch 1
    a = ort.InferenceSession(str(folder / "model.int8.ort")).run(None, {"image": x})[0]
    b = ort.InferenceSession(str(folder / "model.int8.onnx")).run(None, {"image": x})[0]
    np.testing.assert_allclose(a, b, atol=1e-5)
    build = manifests["android-arm64"]["ort_format"]["build"]  # which build it needs: report.md said so, not the page
    assert build in (folder / "report.md").read_text() and build in (folder / "report.html").read_text()


def test_android_ships_fixed_shapes_so_nnapi_takes_the_graph(packaged):
    out, manifests = packaged
    m = manifests["android-arm64"]
    assert m["fixed_input_shapes"] == {"image": [1, 1, 8, 8]}
    for name in ("model.int8.onnx", "model.int8.ort"):
        assert ort.InferenceSession(str(out / "android-arm64" / name)).get_inputs()[0].shape == [1, 1, 8, 8]
    # the manifest and the models' metadata said ["N", 1, 8, 8] and ["N", 10]: a build sizing buffers by them erred
    assert [i["shape"] for i in m["inputs"]] == [[1, 1, 8, 8]] and [o["shape"] for o in m["outputs"]] == [[1, 10]]
    meta = ort.InferenceSession(str(out / "android-arm64" / "model.int8.onnx")).get_modelmeta().custom_metadata_map
    assert meta["edgekit_inputs"] == "image:1x1x8x8:float32", meta
    assert [i["shape"] for i in manifests["ios-arm64"]["inputs"]] == [["N", 1, 8, 8]]
    nnapi = m["mobile_coverage"]["nnapi"]
    assert nnapi["supported_nodes"] == nnapi["nodes"] and nnapi["nodes_blocked_by_dynamic_shapes"] == 0
    assert nnapi["coverage"] == nnapi["node_coverage"] == 1.0 and nnapi["macs"] > 0  # every Conv/Gemm on NNAPI
    assert [g for g in m["gates"] if g["name"] == "nnapi_coverage"][0]["passed"]
    assert manifests["ios-arm64"]["fixed_input_shapes"] is None  # CPU int8 there: the batch stays dynamic


def assert_coverage_is_what_onnxruntimes_checker_says(folder, coverage: dict):
    """Computed on the basic-optimised graph, as check_onnx_model_mobile_usability does: same node counts, each
    provider's of the model the manifest names (CoreML's the fp32 one)."""
    for ep in ("nnapi", "coreml"):
        if ep in coverage:
            c, label = coverage[ep], coverage[ep]["provider"]  # CoreML's with the format the profile gives the EP
            run = subprocess.run([sys.executable, "-m", "onnxruntime.tools.check_onnx_model_mobile_usability",
                                  str(folder / c["model"])], capture_output=True, text=True, check=True)
            first = next(ln for ln in (run.stdout + run.stderr).splitlines()
                         if f"can be handled by the {label} EP" in ln)  # its first figure: the model as it is
            assert f"{c['partitions']} partitions with a total of {c['supported_nodes']}/{c['nodes']} nodes" in first


def test_coverage_is_what_onnxruntimes_checker_says(packaged):
    out, manifests = packaged
    for target in ("android-arm64", "ios-arm64"):
        assert_coverage_is_what_onnxruntimes_checker_says(out / target, manifests[target]["mobile_coverage"])


def test_mobile_coverage_recorded(packaged):
    _, manifests = packaged
    nnapi = manifests["android-arm64"]["mobile_coverage"]["nnapi"]
    assert nnapi["nodes"] > 0 and 0 <= nnapi["supported_nodes"] <= nnapi["nodes"] and "prediction" in nnapi["note"]
    assert nnapi["model"] == "model.int8.onnx"  # NNAPI runs the QDQ model
    # CoreML has no QDQ builders, so a CoreML build ships the fp32 model: the prediction was the int8 graph's, 0/28
    # nodes with Q/DQ falling back, while the profile says it shows what an fp32 CoreML build could take
    coreml = manifests["ios-arm64"]["mobile_coverage"]["coreml"]
    assert coreml["model"] == "model.coreml.onnx" and coreml["coverage_with_fixed_shapes"] > 0.8, coreml
    assert not {"DequantizeLinear", "QuantizeLinear"} & set(coreml["cpu_fallback_ops"]), coreml


def test_each_package_states_how_to_run_it_from_its_profile(packaged):
    """A build engineer could not write the calling code without guessing: the profile's providers, threads and
    XNNPACK's thread split, CoreML's model format (the manifest said MLProgram, the EP builds a NeuralNetwork
    without ModelFormat=MLProgram) and the OS it needs, the onnxruntime release the .ort files need, what the inputs
    take. The manifest's `runtime` section says it, from the profile, and report.md renders it."""
    out, manifests = packaged
    android, ios, board = (manifests[t]["runtime"] for t in ("android-arm64", "ios-arm64", "arm64-linux"))
    [session] = android["sessions"]
    assert session["model"] == "model.int8.ort"
    assert [p["name"] for p in session["providers"]] == list(config.load_target("android-arm64").runtime.providers)
    nnapi, xnnpack, cpu = session["providers"]
    assert nnapi["min_os"].startswith("Android 8.1") and xnnpack["options"] == {"intra_op_num_threads": "4"}
    # edgekit's own entries, as it timed the models: flush-to-zero
    assert session["session"]["intra_op_num_threads"] == 1
    assert session["session"]["config_entries"] == {"session.set_denormal_as_zero": "1",
                                                    "session.intra_op.allow_spinning": "0",
                                                    "session.enable_saved_runtime_optimizations": "1"}
    flush, replay = session["session"]["notes"]
    assert "replays" in replay
    assert "only from the process's first session" in flush
    assert session["build_flags"] == ["--use_nnapi", "--use_xnnpack"]
    assert "--use_nnapi --use_xnnpack" in manifests["android-arm64"]["ort_format"]["build"]
    [image] = session["inputs"]
    assert (image["name"], image["dtype"], image["shape"]) == ("image", "float32", [1, 1, 8, 8])
    low, high = image["calibration_range"]
    assert 0 <= low < high, image
    version = manifests["android-arm64"]["versions"]["onnxruntime"]
    assert android["onnxruntime"]["minimum"] == version and android["onnxruntime"]["same_release"]
    int8, coreml = ios["sessions"]
    assert int8["providers"] == [{"name": "CPUExecutionProvider", "options": {}}]
    assert int8["session"]["intra_op_num_threads"] == 2 and int8["inputs"][0]["shape"] == ["N", 1, 8, 8]
    assert coreml["model"] == "model.coreml.ort" and coreml["build_flags"] == ["--use_coreml"]
    assert coreml["providers"][0] == {"name": "CoreMLExecutionProvider", "options": {"ModelFormat": "MLProgram"},
                                      "min_os": "iOS 15 / macOS 12 (Core ML 5, for ModelFormat=MLProgram)",
                                      "checker_verdict": manifests["ios-arm64"]["mobile_coverage"]["coreml"]["verdict"]}
    assert nnapi["checker_verdict"] == manifests["android-arm64"]["mobile_coverage"]["nnapi"]["verdict"] == "yes"
    assert coreml["inputs"][0]["shape"] == [1, 1, 8, 8]
    assert board["sessions"][0]["model"] == "model.int8.onnx" and not board["onnxruntime"]["same_release"]
    text = (out / "ios-arm64" / "report.md").read_text()
    assert "## How to run it" in text and "CoreMLExecutionProvider (ModelFormat=MLProgram)" in text, text
    assert f"onnxruntime == {version}" in text
    assert "session.set_denormal_as_zero=1, session.intra_op.allow_spinning=0" in text
    assert "make this the process's first session" in text
    meta = ort.InferenceSession(str(out / "ios-arm64" / "model.int8.onnx")).get_modelmeta().custom_metadata_map
    # "edgekit_preprocessing" named onnxruntime's graph clean-up, no pre-processing of the inputs
    assert "edgekit_preprocessing" not in meta and "quant_pre_process" in meta["edgekit_graph_cleanup"]
    assert json.loads(meta["edgekit_input_contract"])[0]["calibration_range"] == [low, high]


def test_coreml_coverage_is_predicted_for_the_model_format_the_profile_gives_the_ep(packaged):
    """The coverage was always predicted from the MLProgram table while the profile set no ModelFormat, under which
    the EP builds a NeuralNetwork (digits: 9/9 nodes in 1 partition there, 8/9 in 2 as MLProgram)."""
    out, manifests = packaged
    model = out / "ios-arm64" / "model.coreml.onnx"
    recorded = manifests["ios-arm64"]["mobile_coverage"]["coreml"]
    given = config.load_target("ios-arm64").runtime.provider_options
    assert given == {"CoreMLExecutionProvider": {"ModelFormat": "MLProgram"}}
    assert recorded["provider"] == "CoreML MLProgram"
    assert {**mobile.coverage(model, ("coreml",), given)["coreml"], "model": model.name} == recorded
    default = mobile.coverage(model, ("coreml",))["coreml"]
    assert default["provider"] == "CoreML NeuralNetwork"
    assert (default["supported_nodes"], default["partitions"]) == (9, 1), default
    assert (recorded["supported_nodes"], recorded["partitions"]) == (8, 2), recorded


def test_the_size_budget_is_of_the_file_the_target_ships(packaged):
    """android/ios ship model.int8.ort, 29% larger than the model.int8.onnx the size_mb gate measured."""
    _, manifests = packaged
    for target, shipped in (("android-arm64", "model.int8.ort"), ("arm64-linux", "model.int8.onnx")):
        m = manifests[target]
        [size] = [g for g in m["gates"] if g["name"] == "size_mb"]
        assert size["value"] == m["sizes"][shipped] / 1e6
    android = manifests["android-arm64"]["sizes"]
    assert android["model.int8.ort"] != android["model.int8.onnx"]


def test_min_coverage_gate(tmp_path):
    profile = tmp_path / "strict-android.toml"
    profile.write_text('name = "strict-android"\n[package]\ncoverage = ["nnapi"]\nmin_coverage = 0.9\n')
    result = cli(["export", str(DIGITS / "edgekit.toml"), "-t", str(profile), "--out",
                                       str(tmp_path / "o"), "--bench-runs", "2", "--json"])
    assert result.exit_code == 1, result.output
    [m] = json.loads(result.stdout)["targets"]
    [gate] = [g for g in m["gates"] if g["name"] == "nnapi_coverage"]
    assert not gate["passed"] and gate["value"] < 0.9


def test_a_fixed_style_ort_with_nnapi_coverage_says_its_ops_are_not_the_onnxs(tmp_path):
    """A profile copy with ort_optimization = "Fixed": the .ort holds the CPU provider's com.microsoft NHWC ops
    (digits: NhwcMaxPool, QGemm, QLinearConv), while NNAPI's coverage (100%) was predicted on model.int8.onnx and
    nothing said so. One warning names them, in the manifest and report.md; the bundled Runtime style has none."""
    profile = tmp_path / "fixed-android.toml"
    profile.write_text((ROOT / "targets" / "android-arm64.toml").read_text().replace(
        'name = "android-arm64"', 'name = "fixed-android"').replace('"Runtime"', '"Fixed"'))
    result = cli(["export", str(DIGITS / "edgekit.toml"), "-t", str(profile), "--no-bench", "--out",
                  str(tmp_path / "o"), "--json"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)["targets"]
    held = mobile_ops(tmp_path / "o" / "fixed-android" / "model.int8.ort")
    added = sorted(held - mobile_ops(tmp_path / "o" / "fixed-android" / "model.int8.onnx"))
    assert any(op.startswith("com.microsoft.") for op in added), held
    [said] = [w for w in m["warnings"] if "Fixed" in w]
    assert "model.int8.ort" in said and ", ".join(added) in said and "NNAPI" in said, said
    saved = json.loads((tmp_path / "o" / "fixed-android" / "manifest.json").read_text())
    assert said in saved["warnings"]
    assert said.split(":")[0] in (tmp_path / "o" / "fixed-android" / "report.md").read_text()


def mobile_ops(path):
    """A model file's operators as `domain.op`, read with onnx (an .onnx) or onnxruntime's ORT-format reader."""
    if path.suffix == ".onnx":
        return {f"{n.domain or 'ai.onnx'}.{n.op_type}" for n in onnx.load(str(path)).graph.node}
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py import fbs
    g = fbs.InferenceSession.InferenceSession.GetRootAsInferenceSession(path.read_bytes(), 0).Model().Graph()
    return {f"{(g.Nodes(i).Domain() or b'').decode() or 'ai.onnx'}.{g.Nodes(i).OpType().decode()}"
            for i in range(g.NodesLength())}


def test_a_classifiers_labels_ship_hashed_named_in_how_to_run_and_held_by_check(tmp_path):
    """A build engineer had no way to ship the class names with a classifier (the app showed indices). `--labels`
    (a recipe's `[model] labels`) copies them into the package as labels.txt, hashed, named in report.md's How to
    run it; check holds the file to the manifest's count; a blank line is refused before any work (exit 2)."""
    names = [f"digit {k}" for k in range(10)]
    (tmp_path / "names.txt").write_bytes("".join(f"{n}\r\n" for n in names).encode())  # CRLF, as Windows writes it
    result = cli(["export", str(DIGITS / "edgekit.toml"), "-t", "arm64-linux", "--labels", tmp_path / "names.txt",
                  "--no-bench", "--out", tmp_path / "o", "--json"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)["targets"]
    folder = tmp_path / "o" / "arm64-linux"
    assert (folder / "labels.txt").read_text().splitlines() == names
    assert m["labels"]["count"] == 10 and m["files"]["labels.txt"] == sha256(folder / "labels.txt")
    how = (folder / "report.md").read_text().split("## How to run it")[1].split("\n## ")[0]
    assert "`labels.txt`: 10 class names" in how, how
    assert "Class names: <code>labels.txt</code> in this folder, 10 of them" in (folder / "report.html").read_text()
    assert not [w for w in m["warnings"] if "labels.txt" in w]
    assert check(folder).exit_code == 0
    (folder / "labels.txt").write_text("".join(f"{n}\n" for n in names[1:]))  # one dropped: every name shifts
    rehash(folder, "labels.txt")
    result = check(folder)
    assert result.exit_code == 1 and "labels.txt: it holds 9 class names, the manifest says 10" in result.output
    (tmp_path / "nine.txt").write_text("\n".join(names[:9]))
    result = cli(["export", str(DIGITS / "edgekit.toml"), "-t", "arm64-linux", "--labels", tmp_path / "nine.txt",
                  "--no-bench", "--out", tmp_path / "n", "--json"])
    assert result.exit_code == 0, result.output
    [said] = [w for w in json.loads(result.stdout)["targets"][0]["warnings"] if "labels.txt" in w]
    assert "9 class names" in said and "output 10" in said, said
    (tmp_path / "blank.txt").write_text("cat\n\ndog\n")
    result = cli(["export", str(DIGITS / "edgekit.toml"), "-t", "arm64-linux", "--labels", tmp_path / "blank.txt",
                  "--no-bench", "--out", tmp_path / "b"])
    assert result.exit_code == 2 and "line 2 is blank" in result.output and not (tmp_path / "b").exists()


def test_a_labels_file_with_a_byte_order_mark_ships_without_it(tmp_path):
    """PowerShell's `Out-File -Encoding utf8` writes a UTF-8 byte-order mark and CRLF endings: the export was
    refused, "line 1 is not printable text". The mark is taken; labels.txt ships without it, and check refuses one
    added to it (an app reading the file plainly shows it in class 0's name)."""
    names = [f"digit {k}" for k in range(10)]
    (tmp_path / "names.txt").write_bytes(b"\xef\xbb\xbf" + "".join(f"{n}\r\n" for n in names).encode())
    result = cli(["export", str(DIGITS / "edgekit.toml"), "-t", "arm64-linux", "--labels", tmp_path / "names.txt",
                  "--no-bench", "--out", tmp_path / "o"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "o" / "arm64-linux"
    assert (folder / "labels.txt").read_bytes() == "".join(f"{n}\n" for n in names).encode()
    (folder / "labels.txt").write_bytes(b"\xef\xbb\xbf" + (folder / "labels.txt").read_bytes())
    rehash(folder, "labels.txt")
    result = check(folder)
    assert result.exit_code == 1 and "labels.txt: line 1 is not printable text" in result.output, result.output


def test_a_segmenters_labels_match_its_class_axis_not_its_width(tmp_path):
    """A segmenter's [N, 4, 16, 16] class map names its 4 classes on axis 1, as parity reads class scores: its
    4 names were warned of as no output's last axis (its width, 16) having that many. 16 names are still warned of."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((16, 3, 16, 16)).astype(np.float32))
    args = ["export", "models:tiny_seg", "--input", "x:Nx3x16x16", "--calibration", tmp_path / "cal.npz",
            "-t", "arm64-linux", "--no-bench", "--json"]
    for count, warned in ((4, False), (16, True)):
        (tmp_path / f"{count}.txt").write_text("".join(f"class {k}\n" for k in range(count)))
        result = cli([*args, "--labels", tmp_path / f"{count}.txt", "--out", tmp_path / f"o{count}"])
        assert result.exit_code == 0, result.output
        said = [w for w in json.loads(result.stdout)["targets"][0]["warnings"] if "labels.txt" in w]
        assert bool(said) == warned, said
    assert "output 4" in said[0], said


def test_the_coverage_gate_weighs_nodes_by_their_macs(tmp_path):
    """A Conv1d + 2-layer LSTM model: NNAPI takes 23/25 nodes, not the LSTMs, 96.5% of its MACs. The gate counted
    nodes (0.92 passed min_coverage 0.8); it is the share of MACs on NNAPI, 0.035."""
    result = cli(["export", "models:conv_lstm", "--input", "x:Nx20x8", "--calibration", "random", "-t",
                  "android-arm64", "--no-bench", "--out", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 1, result.output
    [m] = json.loads(result.stdout)["targets"]
    nnapi = m["mobile_coverage"]["nnapi"]
    # the LSTMs split NNAPI's nodes into 3 partitions, which onnxruntime's checker does not recommend either
    assert [g["name"] for g in m["gates"] if g["passed"] is False] == ["nnapi_coverage"]
    assert nnapi["partitions"] == 3 and nnapi["verdict"] == "no"
    assert [g["value"] for g in m["gates"] if g["name"] == "nnapi_coverage"] == [nnapi["coverage"]]
    assert nnapi["coverage"] < 0.05 and nnapi["node_coverage"] > 0.9 and nnapi["cpu_fallback_ops"] == ["LSTM"]
    assert "multiply-accumulates" in nnapi["coverage_of"]


def test_nnapi_split_into_partitions_is_said_and_a_profile_may_gate_on_the_checkers_verdict(tmp_path):
    """CumSum and Erf (CPU only) split the model into 4 NNAPI partitions, 23/26 nodes and 90% of its MACs: the
    coverage gate passed and the export passed without a word, while onnxruntime's checker said NNAPI "is not
    recommended". android-arm64 now warns, with advice, in report.md and on the runtime contract's provider; a
    profile with min_verdict = "maybe" fails it (exit 1), and `check` re-judges that gate."""
    result = cli(["export", "models:split_nnapi", "--input", "x:Nx8", "--calibration", "random", "-t",
                  "android-arm64", "--no-bench", "--out", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)["targets"]
    nnapi = m["mobile_coverage"]["nnapi"]
    assert nnapi["verdict"] == "no" and nnapi["partitions"] > 2 and nnapi["coverage"] >= 0.8, nnapi
    [said] = [w for w in m["warnings"] if "does not recommend NNAPI" in w]
    assert "CumSum, Erf" in said and "XNNPACK" in said, said
    [provider] = [p for p in m["runtime"]["sessions"][0]["providers"] if p["name"] == "NnapiExecutionProvider"]
    assert provider["checker_verdict"] == "no", provider
    report = (tmp_path / "o" / "android-arm64" / "report.md").read_text()
    assert "verdict: no (not recommended" in report and "checker does not recommend it for this model" in report
    profile = tmp_path / "gated.toml"
    profile.write_text((ROOT / "targets" / "android-arm64.toml").read_text().replace(
        'name = "android-arm64"', 'name = "gated"').replace("min_coverage = 0.8",
                                                            'min_coverage = 0.8\nmin_verdict = "maybe"'))
    result = cli(["export", "models:split_nnapi", "--input", "x:Nx8", "--calibration", "random", "-t", str(profile),
                  "--no-bench", "--out", str(tmp_path / "g"), "--json"])
    assert result.exit_code == 1, result.output
    [m] = json.loads(result.stdout)["targets"]
    assert [(g["name"], g["value"], g["limit"]) for g in m["gates"] if not g["passed"]] == [("nnapi_verdict", 0, 1)]
    folder = tmp_path / "g" / "gated"
    manifest = json.loads((folder / "manifest.json").read_text())
    for g in manifest["gates"]:
        g.update({"value": 2, "passed": True} if g["name"] == "nnapi_verdict" else {})
    write_manifest(folder, {**manifest, "passed": True, "verification": []})
    checked = check(folder)
    assert checked.exit_code == 1 and "nnapi_verdict 2 is not the verdict the manifest records (no)" in \
        checked.output, checked.output


def test_an_omitted_resize_roi_is_no_dynamic_shape_to_nnapi(tmp_path):
    """torch's Resize leaves its optional roi out (''), which onnxruntime's checker took for a value of unknown shape:
    two upsamplings on a fixed 1x3x16x16 were 3 NNAPI partitions, 2 nodes "need fixed shapes", verdict no. The EPs
    skip an input that does not exist (NNAPI since onnxruntime 1.16, CoreML), so NNAPI takes all of it."""
    result = cli(["export", "models:upsampled_twice", "--input", "x:Nx3x16x16", "--calibration", "random", "-t",
                  "android-arm64", "--no-bench", "--out", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)["targets"]
    nnapi = m["mobile_coverage"]["nnapi"]
    assert (nnapi["nodes_blocked_by_dynamic_shapes"], nnapi["partitions"], nnapi["verdict"]) == (0, 1, "yes"), nnapi
    assert nnapi["supported_nodes"] == nnapi["nodes"] and not [w for w in m["warnings"] if "NNAPI" in w], m["warnings"]
    shipped = onnx.load(tmp_path / "o" / "android-arm64" / "model.int8.onnx")
    assert [n.input[1] for n in shipped.graph.node if n.op_type == "Resize"] == ["", ""]

@pytest.mark.parametrize("definition", ["model_data.c", "model_data.S"])
def test_c_header_compiles_and_embeds_the_model(packaged, tmp_path, definition):
    folder = packaged[0] / "arm64-linux"
    header = (folder / "model_data.h").read_text()
    model = (folder / "model.int8.onnx").read_bytes()
    digest = packaged[1]["arm64-linux"]["files"]["model.int8.onnx"]  # sha256 of the embedded bytes
    assert f"EDGEKIT_MODEL_SIZE {len(model)}u" in header and digest in header
    assert packaged[1]["arm64-linux"]["c_header"]["assembly"] == "model_data.S"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    main_c = tmp_path / "main.c"
    main_c.write_text('#include <stdio.h>\n#include "model_data.h"\nint main(void) {\n'
                      '    fprintf(stderr, "%zu %s", edgekit_model_size, edgekit_model_sha256);\n'
                      '    return fwrite(edgekit_model_data, 1, edgekit_model_size, stdout) != edgekit_model_size\n'
                      '        || ((size_t)edgekit_model_data % 64) != 0;\n}\n')
    subprocess.run([cc, "-c", "-Wall", "-Werror", "-I", str(folder), "-o", str(tmp_path / "model_data.o"),
                    str(folder / definition)], check=True)
    subprocess.run([cc, "-Wall", "-Werror", "-I", str(folder), "-o", str(tmp_path / "dump"), str(main_c),
                    str(tmp_path / "model_data.o")], check=True)
    done = subprocess.run([str(tmp_path / "dump")], capture_output=True, check=True)
    assert done.stdout == model and done.stderr.decode() == f"{len(model)} {digest}"
    if definition == "model_data.S":  # as reads the working folder's model.int8.onnx first: another one went in
        (tmp_path / "model.int8.onnx").write_bytes(model + b"x")
        other = subprocess.run([cc, "-c", "-I", str(folder), "-o", str(tmp_path / "other.o"), str(folder / definition)],
                               cwd=tmp_path, capture_output=True, text=True)
        assert other.returncode != 0 and "is not the" in other.stderr, other.stderr


def test_c_header_embeds_the_ort_a_profile_ships(tmp_path):
    """A custom arm64 profile with c_header and ort_format: the header said to embed the .ort and embedded
    model.int8.onnx, which a minimal onnxruntime build (it reads only .ort) cannot load."""
    profile = (Path(__file__).parents[1] / "targets" / "arm64-linux.toml").read_text()
    board = tmp_path / "board.toml"
    board.write_text(profile.replace('name = "arm64-linux"', 'name = "board"').replace(
        "c_header = true", "c_header = true\nort_format = true"))
    out = tmp_path / "o"
    result = cli(["export", str(DIGITS / "edgekit.toml"), "-t", str(board), "--out", str(out), "--no-bench", "--json"])
    assert result.exit_code == 0, result.output
    [manifest] = json.loads(result.stdout)["targets"]
    assert manifest["c_header"]["embeds"] == manifest["ort_format"]["file"] == "model.int8.ort", manifest["c_header"]
    folder = out / "board"
    ort_bytes = (folder / "model.int8.ort").read_bytes()
    header = (folder / "model_data.h").read_text()
    assert f"EDGEKIT_MODEL_SIZE {len(ort_bytes)}u" in header and "model.int8.ort" in header, header[:300]
    assert '.incbin "model.int8.ort"' in (folder / "model_data.S").read_text()
    assert check(folder).exit_code == 0  # model_data.c's array is the .ort's bytes


def test_two_models_c_arrays_link_into_one_firmware(packaged, tmp_path):
    """--c-name names a package's C files and symbols: the default package's and a `kws` one's link together
    (both were model_data.h behind one include guard, defining the same edgekit_model_data)."""
    out = tmp_path / "kws"
    result = cli(["export", str(DIGITS / "edgekit.toml"), "-t", "arm64-linux", "--out", str(out), "--no-bench",
                  "--c-name", "kws", "--json"])
    assert result.exit_code == 0, result.output
    [manifest] = json.loads(result.stdout)["targets"]
    assert manifest["c_header"] == {"header": "kws_data.h", "source": "kws_data.c", "assembly": "kws_data.S",
                                    "embeds": "model.int8.onnx", "c_name": "kws"}
    assert check(out / "arm64-linux").exit_code == 0
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    default, kws = packaged[0] / "arm64-linux", out / "arm64-linux"
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "model_data.h"\n#include "kws_data.h"\nint main(void) {\n'
        '    printf("%zu %s %zu %s", edgekit_model_size, edgekit_model_sha256, edgekit_kws_size, edgekit_kws_sha256);\n'
        '    return EDGEKIT_MODEL_SIZE != edgekit_model_size || EDGEKIT_KWS_SIZE != edgekit_kws_size;\n}\n')
    objects = []
    for folder, definition in ((default, "model_data.S"), (kws, "kws_data.c")):
        objects.append(tmp_path / f"{definition}.o")
        subprocess.run([cc, "-c", "-Wall", "-Werror", "-I", str(folder), "-o", str(objects[-1]),
                        str(folder / definition)], check=True, cwd=tmp_path)
    subprocess.run([cc, "-Wall", "-Werror", "-I", str(default), "-I", str(kws), "-o", str(tmp_path / "both"),
                    str(tmp_path / "main.c"), *map(str, objects)], check=True)
    done = subprocess.run([str(tmp_path / "both")], capture_output=True, text=True, check=True)
    sizes = [(folder / "model.int8.onnx").stat().st_size for folder in (default, kws)]
    digests = [packaged[1]["arm64-linux"]["files"]["model.int8.onnx"], manifest["files"]["model.int8.onnx"]]
    assert done.stdout == f"{sizes[0]} {digests[0]} {sizes[1]} {digests[1]}"


@pytest.mark.parametrize(("flags", "said"), [
    (["-t", "arm64-linux", "--c-name", "KWS-1"], "--c-name 'KWS-1': a lower-case C name"),
    (["-t", "desktop-x86", "--c-name", "kws"], "--c-name kws: no target here ships C files"),
])
def test_a_c_name_no_c_file_could_hold_is_refused_before_any_work(tmp_path, flags, said):
    result = cli(["export", str(DIGITS / "edgekit.toml"), "--out", str(tmp_path / "out"), *flags])
    assert result.exit_code == 2 and said in result.stderr, result.output
    assert not (tmp_path / "out").exists()


def test_shipped_models_import_only_the_opset_domains_their_nodes_use(packaged):
    """onnxruntime's optimiser (quant_pre_process) stamped model.onnx and model.int8.onnx with nine domains no node
    used, ai.onnx.ml 5 among them, which onnxruntime 1.17 and older refuse to load: the profiles' opset 17 was
    chosen for them. (On 1.17.3, with this fix, every .onnx of the digits packages loads and passes `check`.)"""
    import onnx

    shipped = sorted(packaged[0].glob("*/*.onnx"))
    assert len(shipped) == 7, shipped  # model.onnx and model.int8.onnx of each, and iOS's model.coreml.onnx
    for path in shipped:
        model = onnx.load(path)
        imported = [o.domain for o in model.opset_import]
        assert sorted(imported) == sorted({n.domain for n in model.graph.node} | {""}), (path, imported)
        assert not model.functions and not any(a.type in (a.GRAPH, a.GRAPHS) for n in model.graph.node
                                               for a in n.attribute)  # the nodes above are all of them


def test_golden_vectors(packaged):
    folder = packaged[0] / "android-arm64"
    m = packaged[1]["android-arm64"]
    inputs, outputs, atol = read_golden(folder / "golden.npz")
    assert len(inputs) == len(outputs) == m["golden"]["samples"] == 8
    assert atol == m["golden"]["models"]["model.int8.onnx"]["atol"] and set(atol) == {"output"}
    assert set(m["golden"]["models"]) == {"model.int8.onnx", "model.int8.ort"}  # every shipped runtime file
    assert m["golden"]["models"]["model.int8.ort"]["file"] == "golden.ort.npz"
    assert "--minimal_build extended" in m["ort_format"]["build"]
    assert inputs[0]["image"].shape == (1, 1, 8, 8) and outputs[0]["output"].shape == (1, 10)


def test_golden_entries_deflate_only_where_it_pays(tmp_path):
    from edgekit.package import write_golden

    pixels = {"image": np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)}  # noise: stored
    digits = {"image": np.repeat(np.arange(16, dtype=np.float32), 1024).reshape(1, 1, 128, 128)}  # deflates
    write_golden(tmp_path / "g.npz", [pixels, digits], ["y"], [[np.ones((1, 10), np.float32)]] * 2, 0.01)
    kinds = {i.filename: i.compress_type for i in zipfile.ZipFile(tmp_path / "g.npz").infolist()}
    assert kinds["input.0.0.npy"] == zipfile.ZIP_STORED and kinds["input.1.0.npy"] == zipfile.ZIP_DEFLATED
    inputs, outputs, _ = read_golden(tmp_path / "g.npz")
    assert np.array_equal(inputs[0]["image"], pixels["image"]) and np.array_equal(inputs[1]["image"], digits["image"])


def test_check_passes_on_folder_out_dir_and_archive(packaged):
    out, _ = packaged
    for path in (out, out / "android-arm64", out / "android-arm64.tar.gz"):
        result = check(path)
        assert result.exit_code == 0, result.output
    assert "parity model.int8.ort" in check(out / "ios-arm64").output


def test_golden_output_one_ulp_beyond_tolerance_fails(packaged, tmp_path):
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")  # no .ort, whose golden outputs are held to these
    inputs, outputs, atol = read_golden(folder / "golden.npz")
    got = ort.InferenceSession(str(folder / "model.int8.onnx")).run(None, inputs[3])[0]
    expected = outputs[3]["output"].copy()
    # move one element so that it sits exactly one float32 ulp beyond the tolerance from what the model gives
    edge = np.float32(got[0, 4] + atol["output"])
    expected[0, 4] = np.nextafter(edge, np.float32(np.inf))
    while float(expected[0, 4]) - float(got[0, 4]) <= atol["output"]:
        expected[0, 4] = np.nextafter(expected[0, 4], np.float32(np.inf))
    outputs[3]["output"] = expected
    _rewrite_golden(folder, inputs, outputs, atol)
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    failed = [c for c in json.loads(result.stdout)["cases"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["parity model.int8.onnx"]
    assert "output 'output' sample 3 element [0, 4]" in failed[0]["message"]
    # and exactly at the tolerance it passes
    expected[0, 4] = np.float32(got[0, 4])
    _rewrite_golden(folder, inputs, outputs, atol)
    assert check(folder).exit_code == 0


def test_golden_vectors_emptied_to_batch_0_fail(packaged, tmp_path):
    """Every golden input and output cut to batch 0 (the count kept, the file rehashed) passed check, for a model
    returning zeros too: nothing was compared."""
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")  # its batch axis is dynamic: batch 0 runs
    inputs, outputs, atol = read_golden(folder / "golden.npz")
    _rewrite_golden(folder, [{k: v[:0] for k, v in x.items()} for x in inputs],
                    [{k: v[:0] for k, v in y.items()} for y in outputs], atol)
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    failed = [c for c in json.loads(result.stdout)["cases"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["integrity", "parity model.int8.onnx"], failed
    assert "golden.npz's golden sample 0 holds no input values" in failed[0]["message"], failed


def _rewrite_golden(folder, inputs, outputs, atol):
    from edgekit.package import write_arrays
    from edgekit.runner import golden_arrays
    names = list(dict.fromkeys(n for out in outputs for n in out))  # an output some samples lack, too
    arrays = golden_arrays(inputs, names, [], atol)
    arrays.update({f"output.{i}.{names.index(n)}": v for i, out in enumerate(outputs) for n, v in out.items()})
    write_arrays(folder / "golden.npz", arrays)
    rehash(folder, "golden.npz")


def test_golden_entries_are_named_by_index_not_by_the_models_names(tmp_path):
    """Entry names were `output.<i>.<output name>`: an output "../../../tmp/x/PWNED" let a naive extractor (a Java
    ZipInputStream loop) write outside its folder, a 300-character one made `unzip golden.npz` exit 50, and a '/'
    made folders. The names are data now, and every reader of the file (check, the device runner) gets them back."""
    import re

    from edgekit import runner
    from edgekit.package import write_golden

    names = ["../../../tmp/x/PWNED", "z" * 300, "größe/ausgabe"]
    feeds = [{"bild/größe": np.full((1, 2), i, np.float32), "../x": np.ones((1,), np.int64)} for i in range(2)]
    outputs = [[np.full((1, 3), i + k, np.float32) for k in range(3)] for i in range(2)]
    write_golden(tmp_path / "g.npz", feeds, names, outputs, 0.1)
    entries = zipfile.ZipFile(tmp_path / "g.npz").namelist()
    layout = re.compile(r"(count|input_names|output_names|(input|output)\.[0-9]+\.[0-9]+|atol\.[0-9]+)\.npy")
    assert all(layout.fullmatch(e) for e in entries), entries
    inputs, expected, atol = read_golden(tmp_path / "g.npz")
    assert list(atol) == names and [list(x) for x in inputs] == [["bild/größe", "../x"]] * 2
    assert float(expected[1]["größe/ausgabe"][0, 0]) == 3 and float(inputs[1]["bild/größe"][0, 0]) == 1
    assert [list(x) for x in runner.read_inputs(str(tmp_path / "g.npz"))] == [["bild/größe", "../x"]] * 2


def test_changed_file_fails_integrity(packaged, tmp_path):
    folder = fresh_copy(packaged, tmp_path)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-1] ^= 1
    (folder / "model.onnx").write_bytes(bytes(data))
    result = check(folder, "--json")
    assert result.exit_code == 1
    bad, *not_run = [c for c in json.loads(result.stdout)["cases"] if not c["passed"]]
    assert bad["name"] == "integrity" and "model.onnx sha256" in bad["message"]
    assert not_run and all("not run: the package failed its integrity check" in c["message"] for c in not_run)


def test_two_folders_of_one_target_are_told_apart(packaged, tmp_path):
    """A kept previous package beside the new one: its failure was reported under the same name, and JUnit merged
    both folders into one suite of duplicate test names."""
    out = tmp_path / "out"
    shutil.copytree(packaged[0] / "arm64-linux", out / "arm64-linux")
    shutil.copytree(packaged[0] / "arm64-linux", out / "arm64-linux-prev")
    with open(out / "arm64-linux-prev" / "golden.npz", "ab") as f:
        f.write(b"x")
    result = check(out, "--junit", tmp_path / "j.xml", "--json")
    assert result.exit_code == 1, result.output
    failed = {(c["target"], c["folder"]) for c in json.loads(result.stdout)["cases"] if not c["passed"]}
    assert failed == {("arm64-linux", "arm64-linux-prev")}, failed  # the target's name, and its folder apart
    suites = ElementTree.parse(tmp_path / "j.xml").getroot().findall("testsuite")
    assert sorted(s.get("name") for s in suites) == ["arm64-linux", "arm64-linux (arm64-linux-prev)"]


def test_a_package_folder_given_as_dot_is_named_as_by_its_path(packaged, tmp_path, monkeypatch):
    """`cd OUT/desktop-x86 && edgekit check .` labelled the target `desktop-x86 ()` in text and JUnit: `.` has no
    name. It is named as the folder is when given by its path, a renamed copy as `arm64-linux (arm64-linux-prev)`."""
    for name, label in (("arm64-linux", "arm64-linux"), ("arm64-linux-prev", "arm64-linux (arm64-linux-prev)")):
        shutil.copytree(packaged[0] / "arm64-linux", tmp_path / name)
        monkeypatch.chdir(tmp_path / name)
        result = check(".", "--junit", tmp_path / "j.xml", "--json")
        assert result.exit_code == 0, result.output
        folder = "" if name == "arm64-linux" else name  # --json: the target's name, the folder apart (not in target)
        assert {(c["target"], c["folder"]) for c in json.loads(result.stdout)["cases"]} == {("arm64-linux", folder)}
        assert f"PASS  {label}" in check(".").stdout
        suites = ElementTree.parse(tmp_path / "j.xml").getroot().findall("testsuite")
        assert [s.get("name") for s in suites] == [label]


def test_a_manifest_marked_failed_with_no_reason_says_so(packaged, tmp_path):
    folder = fresh_copy(packaged, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    write_manifest(folder, {**manifest, "passed": False})
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    [gates] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "gates"]
    assert "naming no gate or check" in gates["message"]  # was "the export's own check failed: " and nothing


@pytest.mark.parametrize("edit", [
    lambda g: g.update(value=0.1 * g["limit"] if g["op"] == ">=" else 10 * g["limit"] + 1),  # misses its limit
    lambda g: g.update(value=None),
    lambda g: g.update(op="=="),
    lambda g: g.update(value=0.1 * g["limit"], skipped="n/a"),  # "skipped" with the value it measured: passed
])
def test_a_gate_whose_figures_miss_its_limit_fails_check_whatever_it_says(packaged, tmp_path, edit):
    """A failed export's manifest with `passed` edited to true (the gate's and the package's) passed check."""
    folder = fresh_copy(packaged, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    gate = next(g for g in manifest["gates"] if g["name"] == "quant_cosine")
    assert gate["passed"] and gate["op"] == ">=" and gate["limit"] > 0
    edit(gate)
    write_manifest(folder, manifest)
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    [gates] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "gates"]
    assert not gates["passed"] and "quant_cosine = " in gates["message"], gates


@pytest.mark.parametrize("edit, said", [
    (lambda m: [g.update(value=1.0) for g in m["gates"] if g["name"] == "quant_cosine"], "quant_cosine 1 ("),
    (lambda m: m["parity"]["quantization"]["outputs"][0].update(cosine=1.0), "output cosine 1 ("),
])
def test_parity_figures_the_golden_samples_do_not_reproduce_fail_check(packaged, tmp_path, edit, said):
    """A manifest claiming quant cosine 1.0 (the model gives 0.9999) passed check, which judged the numbers written:
    check measures int8 against the shipped fp32 model on the golden samples, the first validation samples."""
    folder = fresh_copy(packaged, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    write_manifest(folder, manifest)
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    [gates] = [c for c in json.loads(result.stdout)["cases"] if not c["passed"]]
    assert gates["name"] == "gates" and "not reproduced on its 8 golden samples" in gates["message"], gates
    assert said in gates["message"], gates


def test_the_cosine_bound_counts_the_golden_samples_the_mean_averaged():
    """Near-zero samples are left out of the mean cosine: 1 golden sample of 8 counted at 0.9 bounds 600 validation
    samples' mean at 1 - 0.1 / 600 (and LOSS_SLACK), not 1 - 0.1 / 75, which failed a true 0.9998."""
    from edgekit.package_check import _figure_claims

    def claims(cosine):
        manifest = {"parity": {"quantization": {"samples": 600, "outputs": [{"output": "y", "cosine": cosine}]}},
                    "gates": [{"name": "quant_cosine", "value": cosine, "limit": 0.99, "passed": True}]}
        return _figure_claims(manifest, {"samples": 8, "outputs": [{"output": "y", "cosine": 0.9,
                                                                    "cosine_samples": 1}]})
    assert claims(0.9998) == []
    assert [c.split(" (")[0] for c in claims(0.99999)] == ["y cosine 0.99999", "quant_cosine 0.99999"]


def test_what_the_manifest_names_ships_as_it_says_and_the_archives_are_the_folders(packaged, tmp_path):
    """A package whose manifest names an .ort build config (or a C header) it does not ship passed `check`; `check
    OUT` passed with OUT/<target>.tar.gz garbage."""
    folder = fresh_copy(packaged, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    config = manifest["ort_format"]["config"]
    (folder / config).unlink()
    del manifest["files"][config]
    write_manifest(folder, manifest)
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    [integrity] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "integrity"]
    assert f"names but does not ship: {config}" in integrity["message"]
    out = tmp_path / "out"
    shutil.copytree(packaged[0], out)
    (out / "arm64-linux.tar.gz").write_bytes(b"garbage")
    shutil.copy(out / "ios-arm64.tar.gz", out / "android-arm64.tar.gz")  # a whole package, another one's
    (out / "desktop-x86.tgz").write_bytes(b"garbage")  # no folder of its name: it was never looked at
    result = check(out, "--json")
    assert result.exit_code == 1, result.output
    failed = {c["name"]: c["message"] for c in json.loads(result.stdout)["cases"] if not c["passed"]}
    assert set(failed) == {"archive arm64-linux.tar.gz", "archive android-arm64.tar.gz", "archive desktop-x86.tgz"}
    assert "no package folder desktop-x86 beside it" in failed["archive desktop-x86.tgz"]
    assert "its manifest.json is not android-arm64/manifest.json" in failed["archive android-arm64.tar.gz"]


def test_a_report_that_is_a_folder_or_a_link_fails_integrity(tmp_path):
    """A folder or a link in a report's or the manifest's place carried unlisted content (or a file from outside)
    through a passing check."""
    folder = example_package(tmp_path)
    (folder / "report.md").unlink()
    (folder / "report.md").mkdir()
    (folder / "report.md" / "evil.sh").write_text("payload")
    (folder / "report.html").unlink()
    (folder / "report.html").symlink_to("/etc/passwd")
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    [integrity] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "integrity"]
    for name in ("report.md", "report.html"):
        assert f"{name} is missing (or not a plain file" in integrity["message"], integrity
    (folder / "manifest.json").rename(tmp_path / "manifest.json")
    (folder / "manifest.json").symlink_to(tmp_path / "manifest.json")
    linked = check(folder)
    assert linked.exit_code == 3 and "manifest.json: a link, not a file of the package" in linked.stderr, linked.output


def test_the_reports_are_hashed_and_an_edited_or_deleted_one_fails_integrity(packaged, tmp_path):
    """report.md and report.html were neither hashed nor required: edited to a fake PASS, a <script> appended, or
    deleted, the package passed check. Written from the same figures just before the manifest, they are hashed in it
    as every other file is, in the folder and in its archive."""
    made = packaged[1]["android-arm64"]
    folder = fresh_copy(packaged, tmp_path)
    assert {n: made["files"][n] for n in ("report.md", "report.html")} == {
        n: sha256(folder / n) for n in ("report.md", "report.html")}
    (folder / "report.html").write_text((folder / "report.html").read_text() + "<script>alert(1)</script>")
    faked = (folder / "report.md").read_text().replace("FAIL", "PASS").replace("fail", "pass")
    (folder / "report.md").write_text(faked + "\nAll checks PASS\n")
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    integrity = next(c["message"] for c in check_cases(result) if c["name"] == "integrity")
    assert "report.md holds" in integrity and "report.html holds" in integrity, integrity
    for name in ("report.md", "report.html"):
        (folder / name).unlink()
    integrity = next(c["message"] for c in check_cases(check(folder, "--json")) if c["name"] == "integrity")
    assert "report.md is missing" in integrity and "report.html is missing" in integrity, integrity
    edited = tmp_path / "edited"
    with tarfile.open(packaged[0] / "android-arm64.tar.gz") as tar:
        tar.extractall(edited, filter="data")
    page = next(edited.glob("*/report.md"))
    page.write_bytes(page.read_bytes().upper())  # the same size: its sha256 tells
    with tarfile.open(tmp_path / "android-arm64.tar.gz", "w:gz") as tar:
        tar.add(page.parent, page.parent.name)
    result = check(tmp_path / "android-arm64.tar.gz", "--json")
    assert result.exit_code == 1, result.output
    assert "report.md sha256" in next(c["message"] for c in check_cases(result) if c["name"] == "integrity")


def test_a_linked_package_folder_is_not_checked_as_part_of_the_folder_given(packaged, tmp_path):
    elsewhere = fresh_copy(packaged, tmp_path)
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / "linked").symlink_to(elsewhere)
    result = check(outer)
    assert result.exit_code == 3 and "linked: a link, not a package folder" in result.stderr, result.output


def test_a_deleted_package_file_fails_integrity_and_the_other_targets_are_still_checked(packaged, tmp_path):
    """A deleted file was exit 3 ("bad input") and stopped the whole check: the next target's edited model was
    never reported, while an edited file was exit 1. Both are a package tampered with."""
    out = tmp_path / "out"
    gone, edited = fresh_copy(packaged, out, "android-arm64"), fresh_copy(packaged, out, "ios-arm64")
    (gone / "golden.npz").unlink()
    with open(edited / "model.int8.onnx", "ab") as f:
        f.write(b"x")
    result = check(out, "--json")
    assert result.exit_code == 1, result.output
    failed = {(c["target"], c["name"]): c["message"] for c in json.loads(result.stdout)["cases"] if not c["passed"]}
    assert "golden.npz is missing" in failed[("android-arm64", "integrity")], failed
    assert "model.int8.onnx holds" in failed[("ios-arm64", "integrity")], failed
    # a name out of the folder is never looked at, and not called missing
    (tmp_path / "secret.bin").write_bytes(b"s")
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["files"]["../../secret.bin"], manifest["sizes"]["../../secret.bin"] = "0" * 64, 1
    write_manifest(edited, manifest)
    result = check(edited, "--json")
    [integrity] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "integrity"]
    assert result.exit_code == 1 and "../../secret.bin is not a file name in the package folder" in \
        integrity["message"], result.output
    assert check(tmp_path / "nothing-here").exit_code == 3


def test_junit_path_that_cannot_be_written_is_a_usage_error(packaged, tmp_path):
    result = cli(["check", packaged[0], "--junit", tmp_path / "no-such-folder" / "report.xml"])
    assert result.exit_code == 2, result.output  # was exit 5, "internal error", after the whole check
    [line] = result.stderr.strip().splitlines()
    assert "--junit" in line and "its folder does not exist" in line


def test_check_json_names_the_edgekit_onnxruntime_and_host_that_judged_it_whatever_the_outcome(packaged, tmp_path):
    """check's JSON named no edgekit version, and the onnxruntime and host only inside a parity case's `where`: an
    archived result of a runner with another install, or of a check that stopped on bad input (no cases), said
    nothing of who judged the package."""
    import platform

    folder = fresh_copy(packaged, tmp_path)
    passed = check(folder, "--json")
    assert passed.exit_code == 0, passed.output
    (folder / "required_operators.config").write_text("tampered\n")
    failed = check(folder, "--json")
    assert failed.exit_code == 1, failed.output
    bad = check(tmp_path / "nothing-here", "--json")
    assert bad.exit_code == 3, bad.output
    mistyped = check(folder, "--json", "--jnuit", "x.xml")
    assert mistyped.exit_code == 2, mistyped.output
    expected = {"edgekit": edgekit.__version__, "onnxruntime": ort.__version__, "python": platform.python_version(),
                "machine": platform.machine()}
    for result in (passed, failed, bad, mistyped):
        ran_by = json.loads(result.stdout)["ran_by"]
        assert {k: ran_by[k] for k in expected} == expected and ran_by["cpu"], ran_by


def test_a_failed_check_says_why_in_json_and_junit_replaces_only_a_report(packaged, tmp_path):
    """--json printed nothing on exit 3 (a CI step parsing stdout failed on an empty document, not on the cause);
    --junit replaced whatever file its path named (a mistyped `--junit notes.txt` lost the notes)."""
    result = check(tmp_path / "nothing-here", "--json")
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    assert document.pop("ran_by")["edgekit"] == edgekit.__version__
    assert document == {"schema_version": 1, "command": "check", "passed": False, "exit_code": 3,
                        "error": f"{tmp_path / 'nothing-here'}: no such file or folder", "cases": []}
    exported = cli(["export", tmp_path / "nothing.py:build", "--input", "x:1x4", "--json"])
    assert exported.exit_code == 3 and json.loads(exported.stdout)["exit_code"] == 3, exported.output
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    result = check(packaged[0], "--junit", notes)
    assert result.exit_code == 2 and "exists and is not a JUnit report" in result.stderr, result.output
    assert notes.read_text() == "mine\n"
    empty = tmp_path / "empty.xml"  # `mktemp`'s, or an earlier run's: replaced
    empty.touch()
    assert check(packaged[0], "--junit", empty).exit_code == 0
    assert ElementTree.parse(empty).getroot().get("failures") == "0"
    empty.write_text('\ufeff<?xml version="1.0"?>\n<testsuites name="pytest"><testsuite name="x"/></testsuites>')
    assert check(packaged[0], "--junit", empty).exit_code == 0  # another tool's, with a byte-order mark


def test_junit_xml_counts_failures(packaged, tmp_path):
    folder = fresh_copy(packaged, tmp_path)
    (folder / "required_operators.config").write_text("tampered\n")
    junit = tmp_path / "report.xml"
    result = check(folder, "--junit", junit)
    assert result.exit_code == 1
    root = ElementTree.parse(junit).getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == 4 and root.get("failures") == "3"  # tampered files are never run: parity fails too
    assert [c.get("name") for c in cases if c.find("failure") is not None] == [
        "integrity", "parity model.int8.onnx", "parity model.int8.ort"]


# what the JUnit schema CI servers validate against (Jenkins' and Surefire's junit-10.xsd, pytest's xunit2) lets each
# element hold
JUNIT_CHILDREN = {"testsuites": {"testsuite"}, "testsuite": {"testsuite", "properties", "testcase", "system-out",
                                                               "system-err"},
                  "testcase": {"skipped", "error", "failure", "system-out", "system-err"}}


def test_junit_is_valid_against_the_junit_schema_and_says_where_each_case_ran(packaged, tmp_path):
    """Each parity case's host and kernels were a <properties> inside its <testcase>, which the JUnit schema has no
    place for: a CI server validating the report (pytest's xunit2 family refuses to write one so) rejected it."""
    folder = fresh_copy(packaged, tmp_path)
    (folder / "required_operators.config").write_text("tampered\n")  # failed cases beside ones that ran
    junit = tmp_path / "report.xml"
    result = check(folder, "--junit", junit)
    assert result.exit_code == 1, result.output
    root = ElementTree.parse(junit).getroot()
    for element in root.iter():
        allowed = JUNIT_CHILDREN.get(element.tag, set())
        assert {child.tag for child in element} <= allowed, (element.tag, [child.tag for child in element])
    for suite in root.iter("testsuite"):
        assert all(suite.get(key) is not None for key in ("name", "tests", "failures", "errors")), suite.attrib
    healthy = check(packaged[0] / "arm64-linux", "--json", "--junit", tmp_path / "ok.xml")
    assert healthy.exit_code == 0, healthy.output
    [where] = [c["where"] for c in json.loads(healthy.stdout)["cases"] if c["name"].startswith("parity ")]
    [said] = [c.findtext("system-out") for c in ElementTree.parse(tmp_path / "ok.xml").getroot().iter("testcase")
              if c.get("name").startswith("parity ")]
    assert said.startswith(f"where: {where}; kernels: "), said


def test_check_names_the_onnxruntime_that_ran_it_and_a_failure_on_another_than_the_packages(packaged, tmp_path):
    """check on this host said `host x86_64 (Xeon) [amx-int8]` alone, where --device and --emulate name their
    onnxruntime; and a model that onnxruntime 1.17.3 refused (ai.onnx.ml opset 5) failed with its boilerplate
    first sentence, cut before the domain it named, and no word that the package was made with 1.32.0."""
    import onnx

    folder = fresh_copy(packaged, tmp_path)
    junit = tmp_path / "report.xml"
    result = check(folder, "--json", "--junit", junit)
    assert result.exit_code == 0, result.output
    here = f"1 thread(s), CPUExecutionProvider, onnxruntime {ort.__version__}"
    where = [c["where"] for c in json.loads(result.stdout)["cases"] if c["name"].startswith("parity ")]
    assert len(where) == 2 and all(w.startswith("host ") and w.endswith(here) for w in where), where
    said = [c.findtext("system-out") for c in ElementTree.parse(junit).getroot().iter("testcase")
            if c.get("name").startswith("parity ")]
    assert [s.split("; kernels: ")[0] for s in said] == [f"where: {w}" for w in where], said
    # an opset this onnxruntime does not know yet, as ai.onnx.ml 5 was to 1.17, in a package made with another one
    model = onnx.load(folder / "model.int8.onnx")
    model.opset_import.append(onnx.helper.make_opsetid("ai.onnx.ml", 99))
    onnx.save(model, folder / "model.int8.onnx")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["versions"]["onnxruntime"] = manifest["runtime"]["onnxruntime"]["minimum"] = "1.0.0"
    write_manifest(folder, manifest)
    rehash(folder, "model.int8.onnx")
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    cases = {c["name"]: c for c in json.loads(result.stdout)["cases"]}
    failed = cases["parity model.int8.onnx"]
    assert not failed["passed"] and failed["where"].endswith(here), failed
    assert "Opset 99 is under development" in failed["message"], failed  # onnxruntime's cause, whole
    assert "Current official support for domain ai.onnx.ml is till opset" in failed["message"], failed
    assert failed["message"].endswith(f"; made with onnxruntime 1.0.0, checked with {ort.__version__}"), failed
    assert "onnxruntime_src" not in failed["message"] and "Load model from" not in failed["message"], failed
    assert cases["parity model.int8.ort"]["passed"], cases  # the .ort runs: only a failure says where it ran


def test_a_check_that_cannot_run_replaces_the_last_junit_with_its_error(packaged, tmp_path):
    """A missing or unreadable package was exit 3 and left the last run's passing JUnit file for CI to report."""
    junit = tmp_path / "report.xml"
    assert check(packaged[0], "--junit", junit).exit_code == 0
    result = check(tmp_path / "nothing-here", "--junit", junit)
    assert result.exit_code == 3, result.output
    root = ElementTree.parse(junit).getroot()
    [case] = root.findall(".//testcase")
    assert root.get("failures") == "1" and case.get("name") == "edgekit check"
    assert "nothing-here" in case.find("failure").get("message")
    assert check(packaged[0], "--emulate", "", "--junit", junit).exit_code == 2
    assert "--emulate" in ElementTree.parse(junit).getroot().find(".//failure").get("message")
    os.mkfifo(tmp_path / "pipe")
    for path, bad, said in (("", junit, "not an empty path"), (packaged[0], "", "give the path of a file"),
                            (packaged[0], tmp_path / "pipe", "give the path of a file")):
        result = check(path, "--junit", bad)  # "" checked the working folder; a pipe was replaced by a file
        assert result.exit_code == 2 and said in result.stderr, result.output
    assert not (tmp_path / "pipe").is_file()
    assert check(packaged[0], "--junit", junit).exit_code == 0
    result = check(tmp_path / ("x" * 300), "--junit", junit)  # an OSError (name too long) left the passing file
    assert result.exit_code == 3 and "File name too long" in ElementTree.parse(junit).getroot().find(
        ".//failure").get("message"), result.output
    inside = packaged[0] / "arm64-linux" / "model.onnx"  # was overwritten with XML after a passing check
    before = inside.read_bytes()
    result = check(packaged[0], "--junit", inside)
    assert result.exit_code == 2 and "inside a package folder" in result.stderr and inside.read_bytes() == before


def test_a_package_under_a_name_that_is_not_utf8(packaged, tmp_path):
    """onnxruntime takes UTF-8 paths: a valid package there failed parity ("incompatible constructor arguments")."""
    latin = tmp_path / os.fsdecode(b"lat\xff")
    latin.mkdir()
    shutil.copytree(packaged[0] / "arm64-linux", latin / "arm64-linux")
    for path in (latin, latin / "arm64-linux"):
        result = check(path)
        assert result.exit_code == 3 and "not a UTF-8 path; onnxruntime cannot open it" in result.stderr, result.output
    with tarfile.open(tmp_path / "member.tar.gz", "w:gz") as tar:  # a folder from an archive: data from others
        tar.add(latin / "arm64-linux", arcname=os.fsdecode(b"d\xff"))
    result = check(tmp_path / "member.tar.gz")
    assert result.exit_code == 3 and "not a UTF-8 path" in result.stderr, result.output
    named = tmp_path / os.fsdecode(b"b\xff.tar.gz")  # the archive's own name is the user's: its copy is edgekit's
    shutil.copy(packaged[0] / "arm64-linux.tar.gz", named)
    assert check(named).exit_code == 0
    assert cli(["inspect", latin / "arm64-linux" / "model.int8.onnx"]).exit_code == 3


def test_check_needs_no_torch(packaged):
    code = ("import sys; sys.modules['torch'] = None; from edgekit.cli import main; "
            f"main(['check', {str(packaged[0] / 'android-arm64.tar.gz')!r}])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "4 passed, 0 failed" in result.stdout


def _archive(tmp_path, add):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        add(tar)
    return path


def _file(name, data=b"x", **attrs):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    return info, io.BytesIO(data)


@pytest.mark.parametrize("make,msg", [
    (lambda tar: tar.addfile(*_file("t/../../escape.txt")), "leaves the archive"),
    (lambda tar: tar.addfile(*_file("/etc/evil")), "absolute path"),
    (lambda tar: tar.addfile(_link("t/link", tarfile.SYMTYPE, "/etc/passwd")), "is a link"),
    (lambda tar: tar.addfile(_link("t/hard", tarfile.LNKTYPE, "t/manifest.json")), "is a link"),
    (lambda tar: tar.addfile(_link("t/dev", tarfile.CHRTYPE, "")), "not a regular file"),
])
def test_unsafe_archives_are_refused(tmp_path, make, msg):
    result = check(_archive(tmp_path, make))
    assert result.exit_code == 3, result.output
    assert msg in result.stderr
    assert not (tmp_path.parent / "escape.txt").exists()


def _link(name, kind, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_huge_declared_size_is_refused_before_reading(tmp_path):
    from edgekit.archive import extract
    from edgekit.errors import InputError
    path = _archive(tmp_path, lambda tar: tar.addfile(*_file("t/big.bin", b"y" * 4096)))
    with pytest.raises(InputError, match="declares 4096 bytes"):
        extract(path, tmp_path / "x", limits=(10, 1024, 1 << 20))
    assert not (tmp_path / "x" / "t" / "big.bin").exists()


@pytest.mark.parametrize("content, msg", [
    (os.urandom(3000), "not a tar archive (member 1's header checksum is wrong)"),  # read as sizes, it said
    (b"", "not a tar archive (shorter than one tar header)"),                          # "members declare more"
    (gzip.compress(b"hello\n"), "not a tar archive (shorter than one tar header)")])  # five lines of tarfile's
def test_what_is_not_an_archive_is_said_in_one_line(tmp_path, content, msg):
    (tmp_path / "p.tar.gz").write_bytes(content)
    result = check(tmp_path / "p.tar.gz")
    assert result.exit_code == 3, result.output
    [line] = result.stderr.strip().splitlines()
    assert msg in line


def test_a_user_functions_error_of_several_lines_is_one_line(tmp_path):
    (tmp_path / "data.py").write_text("def cal():\n    raise ValueError('boom\\nsecond line\\nthird line')\n"
                                      "    yield {}\n")
    result = cli(["export", str(DIGITS / "model.py") + ":build", "--weights", DIGITS / "digits_cnn.pt", "--input",
                  "image:Nx1x8x8", "--calibration", f"{tmp_path / 'data.py'}:cal", "--out", tmp_path / "o",
                  "--no-bench"])
    assert result.exit_code == 3, result.output
    [line] = result.stderr.strip().splitlines()
    assert "boom" in line


def test_archive_layout_is_stable(packaged):
    with tarfile.open(packaged[0] / "arm64-linux.tar.gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "arm64-linux" and members[0].isdir() and names[1:] == sorted(names[1:])
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)


def test_ort_conversion_child_never_imports_torch(packaged, tmp_path):
    """onnxruntime.tools imports torch where it is installed; the converting child hides it (0.85 s of its 2 s)."""
    from edgekit import mobile

    model = packaged[0] / "android-arm64" / "model.int8.onnx"
    child = subprocess.run([sys.executable, "-I", "-X", "importtime", "-c", mobile.CONVERTER, str(model),
                            "--output_dir", str(tmp_path / "out")], input="", capture_output=True, text=True)
    assert child.returncode == 0, child.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in child.stderr.splitlines()
                if line.startswith("import time:")]
    assert "onnxruntime" in imported and not [m for m in imported if m.split(".")[0] == "torch"]
    assert ort.InferenceSession(str(tmp_path / "out" / "model.int8.ort"), providers=["CPUExecutionProvider"])


def test_ort_bytes_do_not_depend_on_the_callers_environment_temp_folder_or_cores(packaged, tmp_path, monkeypatch):
    """The manifest says the .ort is reproducible, but TZ (a zoneinfo file on the heap), a long environment variable,
    a longer TMPDIR or PYTHONPATH, or fewer cores moved the converter's memory, and with it the order of the .ort's
    parts: a CI runner's job variables gave another package hash."""
    from edgekit import mobile

    if shutil.which("setarch") is None:
        pytest.skip("util-linux's setarch is not installed: the conversion runs in-process")
    model = packaged[0] / "android-arm64" / "model.int8.onnx"

    def converted(name):
        (tmp_path / name).mkdir()
        written = mobile.to_ort([model], tmp_path / name, "Runtime", "arm")
        assert written["reproducible"] is True
        return written["ort"][model].read_bytes()

    plain = converted("plain")
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    monkeypatch.setenv("EDGEKIT_TEST_PADDING", "y" * 1500)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / ("p" * 80)), *sys.path]))  # a longer path
    (deep := tmp_path / ("t" * 60)).mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    cores = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cores)})  # the child's thread pool as on a one-core runner
        assert converted("moved") == plain
    finally:
        os.sched_setaffinity(0, cores)


def test_ort_bytes_do_not_depend_on_onnxruntimes_telemetry_store(packaged, tmp_path, monkeypatch):
    """Every onnxruntime process on the host opens and appends to its telemetry's event store (in the home folder);
    the converting child that found it past its size cap trimmed it, and that .ort came out in another order: two
    exports in one test run gave other bytes. A fresh store moved them too, which this gives the child: a home of its
    own, empty on the first conversion. The store must not be made, and the bytes must not change."""
    import types

    from edgekit import mobile

    if shutil.which("setarch") is None:
        pytest.skip("util-linux's setarch is not installed: the conversion runs in-process")
    model = packaged[0] / "android-arm64" / "model.int8.onnx"
    (home := tmp_path / "home").mkdir()
    run = subprocess.run
    monkeypatch.setattr(mobile, "subprocess", types.SimpleNamespace(
        run=lambda *args, env, **kwargs: run(*args, env={**env, "HOME": str(home)}, **kwargs)))

    def converted(name):
        (tmp_path / name).mkdir()
        written = mobile.to_ort([model], tmp_path / name, "Runtime", "arm")
        assert written["reproducible"] is True
        return written["ort"][model].read_bytes()

    first, second = converted("first"), converted("second")
    assert first == second  # old code: the same 61752 bytes in another order from byte 48
    assert not list(home.rglob("*")), sorted(str(p.relative_to(home)) for p in home.rglob("*"))

def test_the_ort_is_converted_by_the_callers_onnxruntime(packaged, tmp_path):
    """The isolated converting child took the interpreter's own onnxruntime even when the caller ran another one
    (from its PYTHONPATH), whose version the manifest records."""
    if shutil.which("setarch") is None:
        pytest.skip("util-linux's setarch is not installed: the conversion runs in-process")
    alt = tmp_path / "alt" / "onnxruntime"
    shutil.copytree(Path(ort.__file__).parent, alt, symlinks=True,
                    copy_function=lambda src, dst: os.symlink(src, dst))  # another onnxruntime: its files linked
    tool = alt / "tools" / "convert_onnx_models_to_ort.py"
    marked = tool.read_text().replace("\nimport ", f"\nopen({str(tmp_path / 'marker')!r}, 'w').close()\nimport ", 1)
    tool.unlink()
    tool.write_text(marked)
    model = packaged[0] / "android-arm64" / "model.int8.onnx"
    code = (f"from pathlib import Path; from edgekit import mobile; "
            f"print(mobile.to_ort([Path({str(model)!r})], Path({str(tmp_path)!r}), 'Runtime', 'arm')['reproducible'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(alt.parent), *sys.path])})
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]
    assert (tmp_path / "marker").exists()


def test_ios_ships_the_fp32_model_coreml_runs_with_its_own_ort_and_golden_outputs(packaged):
    """CoreML has no Q/DQ builders, so an iOS build gives it the fp32 model: the package shipped that model with no
    .ort, no golden outputs of its own and none of its operators in the build config."""
    out, manifests = packaged
    folder, m = out / "ios-arm64", manifests["ios-arm64"]
    fp32 = m["ort_format"]["fp32"]
    assert (fp32["file"], fp32["onnx"], fp32["for"]) == ("model.coreml.ort", "model.coreml.onnx", ["CoreML MLProgram"])
    assert "--use_coreml" in fp32["build"] and fp32["build"] in (folder / "report.md").read_text()
    golden = m["golden"]["models"]
    assert (golden["model.coreml.onnx"]["file"], golden["model.coreml.ort"]["file"]) == (
        "golden.coreml.npz", "golden.coreml.ort.npz")
    for name in ("model.coreml.onnx", "model.coreml.ort", "golden.coreml.npz", "golden.coreml.ort.npz"):
        assert m["files"][name] == sha256(folder / name) and m["sizes"][name] == (folder / name).stat().st_size
    inputs, outputs, atol = read_golden(folder / "golden.coreml.ort.npz")
    want = ort.InferenceSession(str(folder / "model.onnx")).run(None, inputs[0])[0]
    got = ort.InferenceSession(str(folder / "model.coreml.ort")).run(None, inputs[0])[0]
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(outputs[0]["output"], want, atol=1e-4)  # the fp32 model's, not the int8 one's
    assert not np.allclose(read_golden(folder / "golden.npz")[1][0]["output"], want, atol=1e-4)
    assert fp32["max_abs_diff_from_onnx"]["output"] < 1e-4 and atol == golden["model.coreml.ort"]["atol"]
    assert "fp32" not in manifests["android-arm64"]["ort_format"]  # NNAPI runs the int8 model


def test_the_coreml_model_has_the_datas_fixed_shapes_and_the_int8_model_stays_dynamic(packaged):
    """The fp32 model shipped for CoreML kept the dynamic batch: onnxruntime's checker then gave CoreML 0 of the
    digits model's 9 nodes (8 with fixed shapes), so the deliverable was one CoreML could hardly use."""
    out, manifests = packaged
    folder, m = out / "ios-arm64", manifests["ios-arm64"]
    for name in ("model.coreml.onnx", "model.coreml.ort"):
        assert ort.InferenceSession(str(folder / name)).get_inputs()[0].shape == [1, 1, 8, 8], name
    for name in ("model.onnx", "model.int8.onnx", "model.int8.ort"):  # the reference and the CPU's int8 model
        assert ort.InferenceSession(str(folder / name)).get_inputs()[0].shape == ["N", 1, 8, 8], name
    fp32 = m["ort_format"]["fp32"]  # what an app feeds it, where its own manifest entry is
    assert fp32["inputs"] == [{"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32"}], fp32
    assert [o["shape"] for o in fp32["outputs"]] == [[1, 10]] and [i["shape"] for i in m["inputs"]] == [["N", 1, 8, 8]]
    meta = ort.InferenceSession(str(folder / "model.coreml.onnx")).get_modelmeta().custom_metadata_map
    assert meta["edgekit_inputs"] == "image:1x1x8x8:float32", meta
    coreml = m["mobile_coverage"]["coreml"]
    assert (coreml["supported_nodes"], coreml["nodes"], coreml["nodes_blocked_by_dynamic_shapes"]) == (8, 9, 0)
    assert coreml["coverage"] == coreml["coverage_with_fixed_shapes"], coreml
    assert "for CoreML MLProgram (`model.onnx` with its inputs fixed to image 1x1x8x8)" in (
        folder / "report.md").read_text()
    assert all(x["image"].shape == (1, 1, 8, 8) for x in read_golden(folder / "golden.coreml.npz")[0])


def test_one_operator_config_covers_every_shipped_ort_as_onnxruntimes_converter_writes_it(packaged, tmp_path):
    """The iOS config listed model.int8.ort's operators alone: a minimal build from it could not run the fp32
    model.coreml.ort CoreML gets. onnxruntime's converter given both models writes the same operator lines."""
    folder = packaged[0] / "ios-arm64"
    (tmp_path / "in").mkdir()
    for name in ("model.int8.onnx", "model.coreml.onnx"):
        shutil.copy(folder / name, tmp_path / "in" / name)
    done = subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", tmp_path / "in",
                           "--output_dir", tmp_path / "out", "--optimization_style", "Runtime",
                           "--target_platform", "arm"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    [config] = (tmp_path / "out").glob("*.config")

    def ops(path):
        return [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert ops(folder / "required_operators.config") == ops(config)
    assert (folder / "required_operators.config").read_text().startswith("# required operators of model.int8.ort, "
                                                                         "model.coreml.ort\n")


# check's operator child as bounded runs it, with an audit hook counting the processes it starts
OPERATOR_CHILD = """import json, runpy, sys
started = []
sys.addaudithook(lambda event, _: event in ("subprocess.Popen", "os.posix_spawn", "os.exec") and started.append(event))
sys.argv = ["bounded", str(8 << 30), *sys.argv[1:]]
runpy.run_module("edgekit.bounded", run_name="__main__")
print(json.dumps({"started": started, "imported": [m for m in ("onnx", "torch") if sys.modules.get(m)]}))"""


def test_export_without_setarch_ships_the_lines_check_makes_whatever_the_users_level(packaged, tmp_path, monkeypatch):
    """Without setarch (macOS, a container without it) to_ort converts in this process, where the user's
    ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL=basic made other operator lines (no QLinearConv) than check's
    child makes again at the converter's own level: the honest package failed its integrity check."""
    from edgekit import mobile

    model = packaged[0] / "android-arm64" / "model.int8.onnx"
    monkeypatch.setenv("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL", "basic")
    monkeypatch.setenv("PATH", str(tmp_path))  # no setarch on it
    made = mobile.to_ort([model], tmp_path, "Runtime", "arm")
    assert not made["reproducible"]  # converted in this process
    assert os.environ["ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"] == "basic"  # left as the user had it
    lines = {ln for ln in made["config"].read_text().splitlines() if ln and not ln.startswith("#")}
    shipped = (packaged[0] / "android-arm64" / "required_operators.config").read_text().splitlines()
    assert lines == {ln for ln in shipped if ln and not ln.startswith("#")}


def test_an_operator_config_another_onnxruntime_made_is_said_not_made_again(packaged, tmp_path):
    """check makes required_operators.config again only with the onnxruntime that made the package: its
    versions.onnxruntime edited (the pages rendered again, the config re-hashed without its com.microsoft line)
    passed with nothing said."""
    folder = fresh_copy(packaged, tmp_path)
    config = folder / "required_operators.config"
    config.write_text("".join(ln for ln in config.read_text().splitlines(True) if not ln.startswith("com.microsoft")))
    rehash(folder, config.name)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["versions"]["onnxruntime"] = manifest["runtime"]["onnxruntime"]["minimum"] = "1.31.0"
    write_manifest(folder, manifest)
    result = check(folder, "--json")
    [integrity] = [c for c in check_cases(result) if c["name"] == "integrity"]
    assert integrity["message"] == ("required_operators.config not made again: made with onnxruntime 1.31.0, this "
                                    f"is {ort.__version__} (check it with that release to hold it)"), result.output


def test_checks_operator_config_is_one_conversion_in_its_child_without_torch(packaged):
    """check made required_operators.config again through to_ort, a setarch child per model (an interpreter and the
    converter's imports each: +0.9 s a target, +1.4 s for iOS's two): its child converts the models at once, itself,
    without torch; the lines are the shipped ones,
    whatever level the user's environment gives the converter (to_ort's child has an environment of its own)."""
    from edgekit import bounded

    folder = packaged[0] / "ios-arm64"
    env = {**bounded.child_env(), "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL": "basic"}
    done = subprocess.run([sys.executable, "-P", "-c", OPERATOR_CHILD, "edgekit.mobile:operators_in_child",
                           str(folder), json.dumps(["model.int8.onnx", "model.coreml.onnx"]), "Runtime", "arm"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    result, seen = (json.loads(line) for line in done.stdout.splitlines()[-2:])
    assert result["ok"], result
    assert seen["started"] == [] and "torch" not in seen["imported"], seen

    def ops(text):
        return [line for line in text.splitlines() if not line.startswith("#")]
    assert ops(result["value"]) == ops((folder / "required_operators.config").read_text())


def test_check_runs_the_fp32_ort_and_fails_a_tampered_or_missing_one(packaged, tmp_path):
    """`check` verifies the fp32 files an iOS package ships for CoreML: hashes, then their golden outputs."""
    folder = fresh_copy(packaged, tmp_path, "ios-arm64")
    result = check(folder, "--json")
    assert result.exit_code == 0, result.output
    assert {"parity model.coreml.onnx", "parity model.coreml.ort"} <= {c["name"] for c in json.loads(result.stdout)["cases"]}
    model = folder / "model.coreml.ort"
    data = bytearray(model.read_bytes())
    data[-1] ^= 1  # a bit flipped: the hash no longer matches
    model.write_bytes(bytes(data))
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    failed = {c["name"]: c["message"] for c in json.loads(result.stdout)["cases"] if not c["passed"]}
    assert "model.coreml.ort sha256" in failed["integrity"] and "parity model.coreml.ort" in failed, failed
    model.write_bytes(model.read_bytes()[:4000])  # cut short, hashes made to match: it no longer runs
    rehash(folder, "model.coreml.ort")
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    failed = {c["name"]: c["message"] for c in json.loads(result.stdout)["cases"] if not c["passed"]}
    assert list(failed) == ["parity model.coreml.ort"], failed
    assert "does not run the golden inputs" in failed["parity model.coreml.ort"]
    folder = fresh_copy(packaged, tmp_path / "gone", "ios-arm64")  # the fp32 files removed with their entries
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["ort_format"]["fp32"]
    for name in ("model.coreml.onnx", "model.coreml.ort"):
        del manifest["golden"]["models"][name]
    for name in ("model.coreml.onnx", "model.coreml.ort", "golden.coreml.npz", "golden.coreml.ort.npz"):
        del manifest["files"][name], manifest["sizes"][name]
        (folder / name).unlink()
    write_manifest(folder, manifest)
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    [gates] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "gates"]
    assert "ships an fp32 .ort for CoreML MLProgram, and the manifest has none" in gates["message"], gates


def test_check_fails_a_coreml_model_whose_shapes_are_not_the_manifests(packaged, tmp_path):
    """The manifest's fixed shapes are what an app sizes its buffers by: check holds them to the golden samples
    the model runs, and a package of the bundled profile must give them."""
    import onnx

    folder = fresh_copy(packaged, tmp_path, "ios-arm64")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["ort_format"]["fp32"]["inputs"][0]["shape"] = [2, 1, 8, 8]
    write_manifest(folder, manifest)
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    failed = {c["name"]: c["message"] for c in json.loads(result.stdout)["cases"] if not c["passed"]}
    assert "manifest.json says of model.coreml.onnx: input 'image' is 'float32' [2, 1, 8, 8]" in failed["integrity"]
    del manifest["ort_format"]["fp32"]["inputs"]
    write_manifest(folder, manifest)
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    [gates] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "gates"]
    assert "fixes the input shapes of model.coreml.onnx, and the manifest gives none" in gates["message"], gates
    folder = fresh_copy(packaged, tmp_path / "swapped", "ios-arm64")  # the dynamic model.onnx in its place
    shutil.copy(folder / "model.onnx", folder / "model.coreml.onnx")
    assert onnx.load(str(folder / "model.coreml.onnx")).graph.input[0].type.tensor_type.shape.dim[0].dim_param
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    failed = {c["name"]: c["message"] for c in json.loads(result.stdout)["cases"] if not c["passed"]}
    assert failed["integrity"].startswith("model.coreml.onnx holds"), failed  # its size, then its sha256


def test_same_inputs_give_byte_identical_artifacts(tmp_path):
    """Documented: with latency measured, manifest.json and report.md differ run to run (timings);
    with --no-bench every file and the archive are byte-identical."""
    def build(out):
        result = cli(["export", str(DIGITS / "edgekit.toml"), "-t", "android-arm64", "--out",
                                           str(out), "--archive", "--no-bench"])
        assert result.exit_code == 0, result.output
        return out
    a, b = build(tmp_path / "a"), build(tmp_path / "b")
    names = sorted(p.name for p in (a / "android-arm64").iterdir())
    assert {"model.onnx", "model.int8.onnx", "model.int8.ort", "golden.npz", "required_operators.config"} <= set(names)
    for name in names:
        assert (a / "android-arm64" / name).read_bytes() == (b / "android-arm64" / name).read_bytes(), name
    assert (a / "android-arm64.tar.gz").read_bytes() == (b / "android-arm64.tar.gz").read_bytes()


def test_inspect_of_a_folder_says_it_takes_a_model_file(packaged):
    result = cli(["inspect", packaged[0] / "android-arm64"])
    assert result.exit_code == 3, result.output
    [line] = result.stderr.strip().splitlines()
    assert "is a folder; inspect takes a model file" in line  # it said "no such file"
    ort = cli(["inspect", packaged[0] / "android-arm64" / "model.int8.ort"])  # it said "Wire format was corrupt"
    assert ort.exit_code == 3 and "an ORT-format model" in ort.stderr, ort.output
    assert "(model.int8.onnx " in ort.stderr, ort.stderr
    # it named model.int8.onnx for the CoreML build's .ort too, converted from model.coreml.onnx
    coreml = cli(["inspect", packaged[0] / "ios-arm64" / "model.coreml.ort"])
    assert coreml.exit_code == 3 and "converted from (model.coreml.onnx " in coreml.stderr, coreml.stderr


def test_inspect(packaged, tmp_path):
    folder = packaged[0] / "android-arm64"
    result = cli(["inspect", str(folder / "model.int8.onnx"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["opset"]["ai.onnx"] == 17 and info["quantized"] and info["ops"]["QuantizeLinear"] > 0
    assert info["inputs"][0]["name"] == "image" and info["parameters"] > 30_000
    assert info["mobile_coverage"]["nnapi"]["nodes"] == info["nodes"]
    plain = cli(["inspect", folder / "model.onnx", "--json"])
    assert plain.exit_code == 0, plain.output
    fp32 = json.loads(plain.stdout)
    assert not fp32["quantized"]
    # the int8 model counted its scales and zero points too (498 more than its float model)
    assert info["parameters"] == fp32["parameters"] == 38_282  # 38,378 in torch: BatchNorm folded into the convs
    # weights in Constant nodes (another exporter's way) counted 0
    import onnx
    model = onnx.load(folder / "model.onnx")
    nodes = [onnx.helper.make_node("Constant", [], [t.name], value=t) for t in model.graph.initializer]
    nodes += list(model.graph.node)
    del model.graph.initializer[:], model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, tmp_path / "constants.onnx")
    constants = cli(["inspect", tmp_path / "constants.onnx", "--json"])
    assert constants.exit_code == 0 and json.loads(constants.stdout)["parameters"] == fp32["parameters"]
    text = cli(["inspect", str(folder / "model.int8.onnx")])
    assert "NNAPI (predicted)" in text.output and "opset 17" in text.output


def test_inspect_counts_external_data_and_sub_graphs(tmp_path):
    """Weights in an external file were "0.00 MB"; QuantizeLinear inside an If branch only was "float"."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((256, 256), np.float32), "W")
    scale, zero = numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.uint8(0), "z")
    branch = helper.make_graph([helper.make_node("QuantizeLinear", ["y", "s", "z"], ["q"]),
                                helper.make_node("DequantizeLinear", ["q", "s", "z"], ["b"])], "branch", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 256])])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]),
         helper.make_node("If", ["c"], ["out"], then_branch=branch, else_branch=branch)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 256])], [weight, scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=1024)
    result = cli(["inspect", tmp_path / "m.onnx", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["size_bytes"] == sum(p.stat().st_size for p in (tmp_path / "m.onnx", tmp_path / "m.data"))
    assert info["quantized"] and info["quantization_nodes"] == 4
    assert "input  c: scalar bool" in cli(["inspect", tmp_path / "m.onnx"]).output


def test_example_ci_package_checks_with_this_runtime_and_is_what_export_writes_today(tmp_path):
    """The example archive, made by an older edgekit, lacked report.html and 12 of the manifest's fields: it is
    regenerated with each change to what a package holds."""
    import tarfile

    archive = ROOT / "examples" / "ci" / "digits-desktop-x86.tar.gz"
    result = check(archive)
    assert result.exit_code == 0, result.output
    assert "3 passed, 0 failed" in result.output
    with tarfile.open(archive) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
        manifest = json.load(tar.extractfile("desktop-x86/manifest.json"))
    made = cli(["export", DIGITS / "edgekit.toml", "-t", "desktop-x86", "--no-bench", "--out", tmp_path])
    assert made.exit_code == 0, made.output
    today = tmp_path / "desktop-x86"
    assert names == sorted(f"desktop-x86/{p.name}" for p in today.iterdir()), "regenerate examples/ci (its README)"
    assert set(manifest) == set(json.loads((today / "manifest.json").read_text())), "regenerate examples/ci"


def example_package(tmp_path, edit=None):
    """examples/ci's desktop-x86 package unpacked, its manifest (unhashed) edited by `edit`."""
    with tarfile.open(ROOT / "examples" / "ci" / "digits-desktop-x86.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / "desktop-x86"
    manifest = json.loads((folder / "manifest.json").read_text())
    if edit:
        edit(manifest)
    write_manifest(folder, manifest)
    return folder


def newer_format(m):
    """What a later edgekit may write, that this one reads as tampering: a gate and a file it does not know."""
    m["gates"].append({"name": "future_gate", "value": 1.0, "op": ">=", "limit": 0.5, "passed": True})
    m["files"]["extra.bin"] = "0" * 64


@pytest.mark.parametrize("edit,made", [
    (lambda m: (newer_format(m), m.update(edgekit_version="9.1.0", checkable_by="9.0.0")), "9.1.0"),
    # a manifest without checkable_by, made before it: by the edgekit it names (edited here to be a newer one)
    (lambda m: (newer_format(m), m.pop("checkable_by"), m.update(edgekit_version="1.0.0rc1")), "1.0.0rc1"),
])
def test_package_from_a_newer_edgekit_says_upgrade_not_tampered(tmp_path, edit, made):
    """An older install (a CI machine, a device) read a newer edgekit's gates and files as tampering: 'gates
    future_gate are none that edgekit writes', 'files the manifest names but does not ship'."""
    import edgekit

    folder = example_package(tmp_path, edit)
    result = check(folder, "--json")
    assert result.exit_code == 2, result.output  # the user's install to upgrade, never exit 1 as tampered
    needs = json.loads((folder / "manifest.json").read_text()).get("checkable_by")
    by = f" (made by edgekit {made})" if needs else ""
    assert [(c["name"], c["passed"], c["message"]) for c in check_cases(result)] == [
        ("version", False, f"this package needs edgekit {needs or made} or newer to check it{by}, and this is edgekit "
                           f"{edgekit.__version__}: upgrade edgekit to {needs or made} or newer")]


def test_the_version_to_upgrade_to_is_checkable_by_and_a_failed_package_beside_it_is_exit_1(tmp_path):
    """Made by 0.1.1, checkable by 0.1.2: "made by edgekit 0.1.1, newer than this edgekit 0.1.1.dev0: upgrade
    (to 0.1.2)" named the version that does not decide. Beside a tampered package, the check is exit 1."""
    newer = example_package(tmp_path / "newer", lambda m: m.update(edgekit_version="0.1.1", checkable_by="99.1.2"))
    result = check(newer)
    assert result.exit_code == 2, result.output
    assert "needs edgekit 99.1.2 or newer to check it (made by edgekit 0.1.1)" in result.stdout
    assert result.stdout.count("99.1.2") == 2 and "upgrade edgekit to 99.1.2 or newer" in result.stdout
    tampered = example_package(tmp_path / "tampered")
    (tampered / "model.onnx").write_bytes(b"edited")
    both = check(tmp_path, "--json")
    assert both.exit_code == 1, both.output
    assert {(c["label"], c["name"]) for c in check_cases(both) if not c["passed"]} == {
        ("newer/desktop-x86", "version"), ("tampered/desktop-x86", "integrity"),
        ("tampered/desktop-x86", "parity model.int8.onnx")}


def as_made_by_0_1_0(m):
    """What edgekit 0.1.0 wrote (examples/ci's archive before 0.1.1.dev0): no checkable_by, page format, pages hashed
    or scored output (accuracy.output), which this check requires."""
    for key in ("checkable_by", "page_format"):
        m.pop(key)
    for name in ("report.md", "report.html"):
        m["files"].pop(name)
        m["sizes"].pop(name)
    m["accuracy"].pop("output")
    m["edgekit_version"] = "0.1.0"


@pytest.mark.parametrize("edit,made", [
    (as_made_by_0_1_0, "0.1.0"),  # failed integrity and gates as tampered (exit 1)
    # a newer package's version edited down: it passed with its pages not compared, and fails as the older one
    (lambda m: m.update(edgekit_version="0.1.0-dev"), "0.1.0-dev"),
    (lambda m: m.update(edgekit_version="0.0.9", checkable_by="0.0.9"), "0.0.9"),
])
def test_package_from_an_older_edgekit_says_re_export_not_tampered(tmp_path, edit, made):
    import edgekit

    result = check(example_package(tmp_path, edit), "--json")
    assert result.exit_code == 2, result.output  # the package to re-export, never exit 1 as tampered, nor a pass
    assert [(c["name"], c["passed"], c["message"]) for c in check_cases(result)] == [
        ("version", False, f"made by an older edgekit ({made}): this is edgekit {edgekit.__version__}, which checks "
                           f"packages made by edgekit {edgekit.READS_FROM} or newer: re-export it with this one (or "
                           f"check it with edgekit {made})")]


def test_a_manifest_without_edgekit_version_is_exit_3(tmp_path):
    """Deleted, it skipped the version gate and report.md's comparison with this edgekit's rendering: it passed."""
    result = check(example_package(tmp_path, lambda m: m.pop("edgekit_version")))
    assert result.exit_code == 3, result.output
    assert "manifest.json: no edgekit_version, which every edgekit writes" in result.stderr


@pytest.mark.parametrize("edit", [
    None,  # as made today: checkable_by is this edgekit's
    lambda m: m.pop("checkable_by"),  # made before checkable_by: checked as before
    # a newer edgekit that says this one can check it (and names the output its accuracy scored and the rows its top-1
    # counted, as this one does)
    lambda m: (m.update(edgekit_version="9.0.0"), m["accuracy"].update(output="output"),
               m["parity"]["quantization"]["outputs"][0].update(top1_rows=600)),
])
def test_package_this_edgekit_can_check_is_checked_in_full(tmp_path, edit):
    folder = example_package(tmp_path, edit)
    assert edit or "checkable_by" in json.loads((folder / "manifest.json").read_text())
    result = check(folder, "--json")
    assert result.exit_code == 0, result.output
    assert [c["name"] for c in check_cases(result)] == ["integrity", "gates", "parity model.int8.onnx"]


@pytest.mark.parametrize("key,value", [("checkable_by", "soon"), ("edgekit_version", 2), ("checkable_by", "1..0"),
                                       ("checkable_by", None), ("edgekit_version", None)])  # null skipped the gate
def test_malformed_version_in_manifest_is_exit_3(tmp_path, key, value):
    folder = example_package(tmp_path, lambda m: m.update({key: value}))
    result = check(folder)
    assert result.exit_code == 3, result.output
    assert f"manifest.json: {key} {'null' if value is None else repr(value)} is not a version" in result.stderr


@pytest.mark.parametrize("edit,field", [
    (lambda m: m.update(dynamic_sizes=1.5), "dynamic_sizes is a number, not a list or null"),
    (lambda m: m.update(target_profile_sha256=["a"]), "target_profile_sha256 is a list, not a string"),
    (lambda m: m["parity"]["quantization"].update(outputs=3.0), "parity.quantization.outputs is a number, not a list"),
])
def test_a_mistyped_manifest_field_is_exit_3_naming_it(tmp_path, edit, field):
    """Each crashed a claim check (TypeError, exit 5 with a traceback): read as the other fields are, when read."""
    result = check(example_package(tmp_path, edit))
    assert result.exit_code == 3, result.output
    assert result.stderr == f"edgekit: error: {tmp_path / 'desktop-x86'}/manifest.json: {field}\n"


MISTYPED = (1.5, "x", [], {}, None)


def test_no_mistyped_manifest_field_crashes_check(tmp_path):
    """Every top-level and parity field of a real manifest set to each JSON kind: a result or bad input, never
    edgekit's own error (exit 5). In-process (own=True), as export's own check runs, for speed: exit 5 is what
    escapes as other than an EdgekitError."""
    from edgekit.errors import EdgekitError, ExitCode
    from edgekit.package_check import check as check_package

    folder = example_package(tmp_path)
    made = json.loads((folder / "manifest.json").read_text())
    fields = [(k,) for k in made] + [("parity", stage, *k) for stage in made["parity"] for k in
                                     ((), *((k,) for k in made["parity"][stage] or {}))]
    crashed = []
    for path in fields:
        for value in MISTYPED:
            manifest = json.loads(json.dumps(made))
            *parents, key = path
            place = functools.reduce(lambda d, k: d[k], parents, manifest)
            place[key] = value
            write_manifest(folder, manifest)
            try:
                check_package(folder, own=True)
            except EdgekitError as e:
                if e.exit_code == ExitCode.INTERNAL:
                    crashed.append(f"{'.'.join(path)}={value!r}: {e}")
            except Exception as e:
                crashed.append(f"{'.'.join(path)}={value!r}: {type(e).__name__}: {e}")
    assert len(fields) > 40 and not crashed, crashed


def test_junit_gives_a_hostile_name_on_one_line_as_the_console_does(tmp_path):
    """The console printed `evil?[31mred?PASS  fake`, while j.xml's message kept the escape and the newline (`&#10;PASS
    fake`): a CI page showing it read a line of its own."""
    folder = example_package(tmp_path / "p", lambda m: m["files"].update({"evil\x1b[31mred\nPASS  fake": "0" * 64}))
    result = check(folder, "--junit", tmp_path / "j.xml")
    assert result.exit_code == 1, result.output
    shown = "evil?[31mred?PASS  fake"
    assert shown in result.stdout
    xml = (tmp_path / "j.xml").read_text().split("?>", 1)[1]  # after the XML declaration's line
    assert "&#10;" not in xml and "\n" not in xml.strip() and "\x1b" not in xml and "&#27;" not in xml
    [failure] = (c.find("failure") for c in ElementTree.parse(tmp_path / "j.xml").getroot().iter("testcase")
                 if c.get("name") == "integrity")
    console = next(line for line in result.stdout.splitlines() if line.startswith("FAIL") and "integrity" in line)
    assert shown in failure.get("message") and failure.text == failure.get("message")
    assert console.endswith(f": {failure.get('message')}"), (console, failure.get("message"))


def _deflate_bomb(folder, member, megabytes):
    """golden.npz with `member` replaced by `megabytes` of float32 zeros, flat (deflated ~1000:1), re-hashed."""
    golden = folder / "golden.npz"
    with zipfile.ZipFile(golden) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    assert member in members, sorted(members)
    with zipfile.ZipFile(golden, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            if name != member:
                z.writestr(name, data)
                continue
            with z.open(name, "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                         "shape": (megabytes << 18,)})
                for _ in range(megabytes // 4):
                    f.write(bytes(4 << 20))
    rehash(folder, "golden.npz")
    return golden


def test_a_golden_deflate_bomb_is_refused_from_its_headers_before_its_data_is_read(tmp_path):
    """A 1 MB golden.npz whose input was 1 GB of zeros (re-hashed in the manifest) was read whole, 8.6 s and 2 GB,
    before its shape was found untrue: each member's .npy header is now held to the manifest first."""
    folder = example_package(tmp_path)
    assert _deflate_bomb(folder, "input.0.0.npy", 200).stat().st_size < 1 << 20
    peak = ("import resource, subprocess, sys\n"
            "run = subprocess.run([sys.executable, '-m', 'edgekit', 'check', sys.argv[1]], capture_output=True, "
            "text=True)\n"
            "print(run.stdout)\nprint(run.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss >> 10)")
    run = subprocess.run([sys.executable, "-c", peak, str(folder)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    *said, last = run.stdout.strip().splitlines()
    code, megabytes = map(int, last.split())
    assert code == 1, run.stdout + run.stderr
    assert "input 'image' is 'float32' ['N', 1, 8, 8], the golden sample's float32 [52428800]" in "\n".join(said)
    assert megabytes < 160, megabytes  # reading the 200 MB took 480 MB; check alone takes ~80
    with zipfile.ZipFile(folder / "golden.npz") as z:
        tolerance = next(n for n in z.namelist() if n.startswith("atol."))
    shutil.rmtree(folder)
    _deflate_bomb(example_package(tmp_path), tolerance, 200)
    result = check(folder)
    assert result.exit_code == 3, result.output
    assert "golden.npz: not a valid golden file (the tolerance for" in result.stderr, result.stderr


def test_checkable_by_is_no_newer_than_this_edgekit():
    """A CHECKABLE_BY raised past __version__ would have this edgekit refuse its own packages."""
    import edgekit
    from edgekit.package_check import _release

    assert _release(edgekit.CHECKABLE_BY, "") <= _release(edgekit.__version__, "")
    assert _release(edgekit.READS_FROM, "") <= _release(edgekit.__version__, "")  # nor READS_FROM: its own refused


def test_corrupt_deployed_model_fails_check_with_a_report(packaged, tmp_path):
    folder = fresh_copy(packaged, tmp_path)
    model = folder / "model.int8.onnx"
    model.write_bytes(model.read_bytes()[:200])
    junit = tmp_path / "r.xml"
    result = check(folder, "--junit", junit)
    assert result.exit_code == 1, result.output
    failed = [c.get("name") for c in ElementTree.parse(junit).getroot().findall(".//testcase")
              if c.find("failure") is not None]
    assert failed == ["integrity", "parity model.int8.onnx", "parity model.int8.ort"]  # neither is run


def test_unlisted_file_fails_integrity(packaged, tmp_path):
    folder = fresh_copy(packaged, tmp_path)
    (folder / "evil.so").write_bytes(b"\x7fELF")
    result = check(folder, "--json")
    assert result.exit_code == 1
    assert "files not in the manifest: evil.so" in json.loads(result.stdout)["cases"][0]["message"]
    for i in range(2000):  # each one named: 20,000 were one 149 KB line
        (folder / f"extra{i:05}.bin").touch()
    message = json.loads(check(folder, "--json").stdout)["cases"][0]["message"]
    assert "files not in the manifest: evil.so, extra00000.bin, extra00001.bin, extra00002.bin, extra00003.bin and " \
           "1,996 more" in message and len(message) < 300, message


@pytest.mark.parametrize("edit,msg", [
    (lambda m: m.update(files=[]), "mistyped"),
    (lambda m: m.update(golden="x"), "mistyped"),
    (lambda m: m["files"].pop("golden.npz"), "does not hash golden.npz"),
    (lambda m: m["golden"]["models"]["model.int8.onnx"].update(file="../../etc/passwd"), "does not hash"),
    (lambda m: m["golden"]["models"].pop("model.int8.ort"), "no golden outputs for the shipped model.int8.ort"),
    (lambda m: m.pop("gates"), "mistyped"),
    (lambda m: [m[k].pop("model.onnx") for k in ("files", "sizes")], "does not hash model.onnx, which every package"),
    (lambda m: m["golden"]["models"].pop("model.int8.onnx"), "has no golden outputs for model.int8.onnx, which"),
])
def test_malformed_manifest_is_exit_3(packaged, tmp_path, edit, msg):
    folder = fresh_copy(packaged, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    write_manifest(folder, manifest)
    result = check(folder)
    assert result.exit_code == 3, result.output
    assert msg in result.stderr and "Traceback" not in result.output


NAMED = {"input_names": np.array(["image"]), "output_names": np.array(["output"])}


@pytest.mark.parametrize("arrays,msg", [
    ({"count": np.array(10**10)}, "out of range"),
    ({"count": np.array(1), **NAMED, "input.0.0": np.zeros((1, 1, 8, 8), np.float32),
      "output.999.0": np.zeros((1, 10), np.float32), "atol.0": np.array(0.1)}, "below count"),
    ({"count": np.array(1), **NAMED, "input.0.0": np.zeros((1, 1, 8, 8), np.float32),
      "output.0.0": np.zeros((1, 10), np.float32)}, "no tolerance"),
    ({"count": np.array(1), **NAMED, "input.0.0": np.zeros((1, 1, 8, 8), np.float32)}, "needs inputs and expected"),
    ({"count": np.array(1), "input.0.image": np.zeros((1, 1, 8, 8), np.float32)},  # entries named by their names
     "holds no input_names and no output_names"),
    ({"count": np.array(1), "note": np.zeros(1)}, "unexpected entry 'note'"),  # was exit 5, a TypeError
])
def test_malformed_golden_is_exit_3(packaged, tmp_path, arrays, msg):
    folder = fresh_copy(packaged, tmp_path)
    np.savez(folder / "golden.npz", **arrays)
    rehash(folder, "golden.npz")
    result = check(folder)
    assert result.exit_code == 3, result.output
    assert msg in result.stderr and f"{folder}/golden.npz: not a valid golden file" in result.stderr  # which package


def test_plain_tar_of_a_package_folder_checks(packaged, tmp_path):
    path = tmp_path / "plain.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(packaged[0] / "arm64-linux", arcname=".")  # as `tar czf plain.tar.gz -C arm64-linux .`
    result = check(path)
    assert result.exit_code == 0, result.output
    assert str(tmp_path) not in result.output.replace(str(path), "")  # no temp paths in messages


def test_a_copy_of_out_one_folder_down_checks_as_a_folder_or_an_archive(packaged, tmp_path):
    """CI's natural artifact, `tar czf dist.tgz dist` of OUT, and `cp -a dist nest/` were exit 3: check looked for
    manifests only in the path given and one folder down. Each target is named by its folder, the rules kept."""
    nest = tmp_path / "nest"
    shutil.copytree(packaged[0], nest / "dist")  # with OUT's archives, checked beside their folders
    tgz = tmp_path / "dist.tgz"
    subprocess.run(["tar", "czf", tgz, "--exclude=*.tar.gz", "dist"], cwd=nest, check=True)
    targets = {f"dist/{t}" for t in packaged[1]}
    for path in (nest, tgz):
        result = check(path, "--json")
        assert result.exit_code == 0, result.output
        cases = check_cases(result)
        assert {c["label"] for c in cases if c["name"] == "integrity"} == targets, cases
        assert str(tmp_path) not in result.output.replace(str(path), "")  # no temp paths in messages
    assert {c["label"] for c in cases if c["name"].startswith("archive")} == set() and \
        {c["label"] for c in check_cases(check(nest, "--json")) if c["name"].startswith("archive")} == targets
    model = nest / "dist" / "ios-arm64" / "model.int8.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"x")  # the same size: a larger member is refused (exit 3)
    subprocess.run(["tar", "czf", tgz, "--exclude=*.tar.gz", "dist"], cwd=nest, check=True)
    for path in (nest, tgz):
        result = check(path, "--json")
        assert result.exit_code == 1, result.output
        failed = {(c["label"], c["name"]) for c in check_cases(result) if not c["passed"]}
        assert ("dist/ios-arm64", "integrity") in failed and all(t == "dist/ios-arm64" for t, _ in failed), failed
    (nest / "other").symlink_to(nest / "dist")
    result = check(nest)
    assert result.exit_code == 3 and "nest/other: a link, not a package folder" in result.stderr, result.output
    (nest / "other").unlink()
    (nest / "dist" / "arm64-linux" / "manifest.json").unlink()
    result = check(nest)
    assert result.exit_code == 3 and "dist/arm64-linux: holds a package's files but no manifest.json" in \
        result.stderr, result.output


def test_a_tar_of_out_with_its_archives_checks_them_by_the_ledgers_hash(packaged, tmp_path):
    """`export --archive` then `tar czf dist.tgz dist`, CI's artifact of OUT, was exit 3: its OUT/<target>.tar.gz
    were "not listed in its manifest.json". They are checked as in OUT, admitted only by the hash OUT's ledger gives."""
    dist = tmp_path / "dist"
    shutil.copytree(packaged[0], dist)
    tgz, dot = tmp_path / "dist.tgz", tmp_path / "dot.tgz"
    subprocess.run(["tar", "czf", tgz, "dist"], cwd=tmp_path, check=True)
    subprocess.run(["tar", "czf", dot, "."], cwd=dist, check=True)
    for path, prefix in ((tgz, "dist/"), (dot, "")):
        result = check(path, "--json")
        assert result.exit_code == 0, result.output
        archives = {c["label"] for c in check_cases(result) if c["name"].startswith("archive") and c["passed"]}
        assert archives == {prefix + t for t in packaged[1]}, result.output
    inner = dist / "arm64-linux.tar.gz"
    data = bytearray(inner.read_bytes())
    data[len(data) // 2] ^= 1  # tampered with after export, the ledger not rehashed
    inner.write_bytes(bytes(data))
    subprocess.run(["tar", "czf", tgz, "dist"], cwd=tmp_path, check=True)
    result = check(tgz, "--json")
    assert result.exit_code == 1, result.output
    failed = failed_cases(result)
    assert failed.keys() == {("dist/arm64-linux", "archive arm64-linux.tar.gz")}, failed
    assert "is not the one edgekit recorded for it (edgekit-archives.json in" in \
        failed[("dist/arm64-linux", "archive arm64-linux.tar.gz")] and str(tmp_path) not in result.stdout.replace(
            str(tgz), "")
    inner.write_bytes((packaged[0] / "arm64-linux.tar.gz").read_bytes())
    shutil.copy(dist / "ios-arm64.tar.gz", dist / "extra.tar.gz")  # an archive edgekit never recorded there
    subprocess.run(["tar", "czf", tgz, "dist"], cwd=tmp_path, check=True)
    result = check(tgz)
    assert result.exit_code == 3 and "member 'dist/extra.tar.gz' is not listed in its manifest.json" in \
        result.stderr, result.output


def test_a_folder_of_package_archives_checks_each(packaged, tmp_path):
    """Downloaded CI artifacts, `OUT/<target>.tar.gz` without their folders, were exit 3 "no manifest.json in it"
    with no hint. Each archive is checked as `check ARCHIVE` does, named by it; one that cannot be read fails its
    own case and the others are still checked. `gh run download` puts each artifact in its own folder: so too."""
    arts, nested = tmp_path / "artifacts", tmp_path / "downloaded"
    for target in ("arm64-linux", "ios-arm64"):
        (nested / f"ci-{target}").mkdir(parents=True)
        for dest in (arts, nested / f"ci-{target}"):
            dest.mkdir(exist_ok=True)
            shutil.copy(packaged[0] / f"{target}.tar.gz", dest)
    for path, names in ((arts, {"arm64-linux", "ios-arm64"}), (nested, {"ci-arm64-linux/arm64-linux",
                                                                        "ci-ios-arm64/ios-arm64"})):
        result = check(path, "--json")
        assert result.exit_code == 0, result.output
        assert {c["label"] for c in check_cases(result) if c["name"] == "integrity"} == names, result.output
    data = (packaged[0] / "android-arm64.tar.gz").read_bytes()
    (arts / "android-arm64.tar.gz").write_bytes(data[: len(data) // 2])  # a download cut short
    result = check(arts, "--json")
    assert result.exit_code == 1, result.output
    assert failed_cases(result).keys() == {("android-arm64", "archive android-arm64.tar.gz")}, result.output
    assert {c["label"] for c in check_cases(result) if c["name"] == "integrity"} == {"arm64-linux",
                                                                                          "ios-arm64"}
    shutil.copytree(packaged[0] / "ios-arm64", arts / "ios-arm64", ignore=shutil.ignore_patterns("*.json"))
    result = check(arts)  # beside the archives, a package folder whose manifest a CI glob dropped: not passed over
    assert result.exit_code == 3 and "ios-arm64: holds a package's files but no manifest.json" in result.stderr, \
        result.output
    shutil.rmtree(arts)
    arts.mkdir()
    result = check(arts)
    assert result.exit_code == 3 and "nor a package archive (.tar.gz) in it" in result.stderr, result.output
    out = tmp_path / "out"  # an OUT whose folders are all gone is no folder of downloads: it passed on its archives
    shutil.copytree(packaged[0], out, ignore=lambda folder, names: [n for n in names if (Path(folder) / n).is_dir()])
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".tar.gz")) == ["edgekit-archives.json",
                                                                                      "edgekit-targets.json"]
    result = check(out)
    assert result.exit_code == 3 and "an OUT that lost every package folder" in result.stderr, result.output


def failed_cases(result):
    assert result.exit_code in (0, 1), result.output
    return {(c["label"], c["name"]): c["message"] for c in check_cases(result) if not c["passed"]}


def test_check_out_fails_a_published_target_that_is_gone_or_swapped(packaged, tmp_path, caplog):
    """`rm -r OUT/android-arm64 && edgekit check OUT` passed with the other targets: a CI gate on `check OUT` missed
    the lost deliverable. OUT's record of what the export published names it; the others are still checked."""
    out = tmp_path / "dist"
    shutil.copytree(packaged[0], out, ignore=shutil.ignore_patterns("*.tar.gz"))  # archives beside tell a swap
    healthy = check(out, "--json")
    assert healthy.exit_code == 0, healthy.output
    assert failed_cases(healthy) == {}
    shutil.rmtree(out / "android-arm64")
    rehash(out / "ios-arm64")  # another manifest.json (as a package exported elsewhere): consistent, not published
    result = check(out, "--json")
    assert result.exit_code == 1, result.output
    failed = failed_cases(result)
    assert failed.keys() == {("android-arm64", "published"), ("ios-arm64", "published")}, failed
    assert failed[("android-arm64", "published")].startswith("missing: no folder android-arm64 in")
    assert "is not the one edgekit published there" in failed[("ios-arm64", "published")]
    cases = check_cases(result)
    assert {c["label"] for c in cases if c["name"] == "integrity" and c["passed"]} == {"arm64-linux", "ios-arm64"}
    # a tar of OUT holds the record one folder down, and names each target by its folder
    tgz = tmp_path / "dist.tgz"
    subprocess.run(["tar", "czf", tgz, "dist"], cwd=tmp_path, check=True)
    result = check(tgz, "--json")
    assert result.exit_code == 1, result.output
    assert failed_cases(result).keys() == {("dist/android-arm64", "published"), ("dist/ios-arm64", "published")}
    # an OUT made before the record (or copied without hidden files) checks as before, saying what it cannot tell
    (out / "edgekit-targets.json").unlink()
    with caplog.at_level("WARNING", logger="edgekit"):
        result = check(out, "--json")
    assert result.exit_code == 0, result.output
    assert "no edgekit-targets.json, so which targets it should hold is not verified" in caplog.text
    # one target's folder or archive has no record to miss
    caplog.clear()
    for path in (out / "arm64-linux", packaged[0] / "arm64-linux.tar.gz"):
        with caplog.at_level("WARNING", logger="edgekit"):
            result = check(path)
        assert result.exit_code == 0 and "published" not in result.output and caplog.text == "", result.output


def test_a_record_of_targets_that_is_not_edgekits_is_bad_input(packaged, tmp_path):
    out = tmp_path / "dist"
    shutil.copytree(packaged[0], out)
    (out / "edgekit-targets.json").write_text('{"targets": {"android-arm64": "not a hash"}}')
    result = check(out)
    assert result.exit_code == 3, result.output
    assert "dist/edgekit-targets.json: not edgekit's record of the targets it published there" in result.stderr


def test_failed_export_fails_check(tmp_path):
    """A package edgekit marked failed never passes a CI job that only runs `check`."""
    profile = tmp_path / "strict.toml"
    profile.write_text('name = "strict"\n[parity]\nquant_sqnr_min_db = 150.0\n')
    result = cli(["export", str(DIGITS / "edgekit.toml"), "-t", str(profile), "--out",
                                       str(tmp_path / "o"), "--no-bench", "--json"])
    assert result.exit_code == 1, result.output
    [m] = json.loads(result.stdout)["targets"]
    assert not m["passed"] and [c["name"] for c in m["verification"] if not c["passed"]] == ["gates"]
    junit = tmp_path / "r.xml"
    checked = check(tmp_path / "o", "--junit", junit)
    assert checked.exit_code == 1
    assert "FAIL  strict           gates: failed at export: quant_sqnr_db" in checked.output
    failed = [c.get("name") for c in ElementTree.parse(junit).getroot().findall(".//testcase")
              if c.find("failure") is not None]
    assert failed == ["gates"]  # one JUnit case for the recorded gates; the files themselves are intact


def test_ort_package_passes_check_exactly_when_export_passed(tmp_path):
    """The .ort gets golden outputs of its own, computed as the runtime contract runs it (its saved optimisations
    replayed: unfused, it was up to 1.7e-5 off the .onnx here): with a tight tolerance, check agrees with export,
    both ways."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", image=rng.random((16, 3, 32, 32), dtype=np.float32))
    np.savez(tmp_path / "val.npz", image=rng.random((6, 3, 32, 32), dtype=np.float32))
    verdicts = {}
    for name, sqnr_min in (("tight-ios", "15.0"), ("failing-ios", "150.0")):
        profile = tmp_path / f"{name}.toml"
        profile.write_text((ROOT / "targets" / "ios-arm64.toml").read_text().replace('"ios-arm64"', f'"{name}"')
                           .replace("golden_tolerance = 0.02", "golden_tolerance = 0.0001")
                           .replace("quant_sqnr_min_db = 15.0", f"quant_sqnr_min_db = {sqnr_min}"))
        result = cli([
            "export", str(ROOT / "benchmarks" / "arch.py:resnet18_style"), "--input", "image:Nx3x32x32",
            "--calibration", str(tmp_path / "cal.npz"), "--validation", str(tmp_path / "val.npz"),
            "-t", str(profile), "--out", str(tmp_path / name), "--no-bench", "--json"])
        assert result.exit_code in (0, 1), result.output
        [m] = json.loads(result.stdout)["targets"]
        diff = m["ort_format"]["max_abs_diff_from_onnx"]["output"]
        assert diff <= m["golden"]["models"]["model.int8.onnx"]["atol"]["output"]  # replayed: the .onnx's kernels
        checked = check(tmp_path / name)
        verdicts[name] = (m["passed"], checked.exit_code == 0)
        # a graph that basic optimisation changes (140 → 148 nodes): coverage counts the optimised one
        assert_coverage_is_what_onnxruntimes_checker_says(tmp_path / name / name, m["mobile_coverage"])
        assert "parity model.int8.ort" in checked.output
    assert verdicts == {"tight-ios": (True, True), "failing-ios": (False, False)}


def test_android_input_whose_shape_varies_stays_dynamic_and_the_gate_decides(tmp_path):
    """Samples of batch 1 and 2: no single shape to fix, so the input stays dynamic, a warning says why, and
    NNAPI's predicted coverage (nodes blocked by the dynamic batch) is gated, not hidden."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "a.npz", image=rng.random((12, 1, 3, 16, 16), dtype=np.float32))
    np.savez(data / "b.npz", image=rng.random((12, 2, 3, 16, 16), dtype=np.float32))
    result = cli(["export", "models:small_cnn", "--input", "image:Nx3x16x16", "--calibration",
                                       str(data), "-t", "android-arm64", "--out", str(tmp_path / "o"), "--no-bench",
                                       "--json"])
    assert result.exit_code in (0, 1), result.output
    [m] = json.loads(result.stdout)["targets"]
    assert m["fixed_input_shapes"] == {}
    assert any("input 'image' kept dynamic" in w for w in m["warnings"])
    nnapi = m["mobile_coverage"]["nnapi"]
    [gate] = [g for g in m["gates"] if g["name"] == "nnapi_coverage"]
    assert gate["value"] == nnapi["coverage"] and gate["passed"] is (nnapi["coverage"] >= 0.8)
    assert (result.exit_code == 0) is m["passed"]


def test_ios_coreml_input_whose_shape_varies_stays_dynamic_and_a_warning_names_coreml(tmp_path):
    """Samples of batch 1 and 2: the CoreML model cannot be fixed to one shape, and the package says so rather
    than shipping it as if fixed."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "a.npz", image=rng.random((12, 1, 3, 16, 16), dtype=np.float32))
    np.savez(data / "b.npz", image=rng.random((12, 2, 3, 16, 16), dtype=np.float32))
    result = cli(["export", "models:small_cnn", "--input", "image:Nx3x16x16", "--calibration", str(data),
                  "-t", "ios-arm64", "--out", str(tmp_path / "o"), "--no-bench", "--json"])
    assert result.exit_code in (0, 1), result.output
    [m] = json.loads(result.stdout)["targets"]
    assert any("input 'image' kept dynamic" in w and "CoreML MLProgram leaves" in w for w in m["warnings"]), m
    assert m["ort_format"]["fp32"]["inputs"][0]["shape"] == ["N", 3, 16, 16]
    assert m["mobile_coverage"]["coreml"]["nodes_blocked_by_dynamic_shapes"] > 0


def _tar_with_long_name_header(path, declared):
    """A tar whose first header is a GNU long name declaring `declared` bytes (the data is not there)."""
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, declared
    block = header.tobuf(format=tarfile.USTAR_FORMAT)
    with gzip.open(path, "wb") as f:
        f.write(block + b"a" * 512 + bytes(1024))


def test_archive_headers_are_capped_before_tarfile_reads_them(tmp_path):
    bomb = tmp_path / "bomb.tar.gz"
    _tar_with_long_name_header(bomb, 3 << 30)
    start = time.perf_counter()
    result = check(bomb)
    assert result.exit_code == 3 and "an extended header declares 3221225472 bytes" in result.stderr
    assert time.perf_counter() - start < 5


def test_archive_extraction_is_bounded_by_its_manifest(packaged, tmp_path):
    """Members the manifest does not list, or larger than it says, are never written."""
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    (folder / "extra.bin").write_bytes(bytes(4096))
    evil = tmp_path / "evil.tar.xz"
    with tarfile.open(evil, "w:xz") as tar:
        tar.add(folder, arcname="arm64-linux")
    result = check(evil)
    assert result.exit_code == 3 and "extra.bin' is not listed in its manifest.json" in result.stderr
    (folder / "extra.bin").unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sizes"]["model.onnx"] = 10
    write_manifest(folder, manifest)
    with tarfile.open(evil, "w:xz") as tar:
        tar.add(folder, arcname="arm64-linux")
    result = check(evil)
    assert result.exit_code == 3 and "its manifest says 10" in result.stderr
    result = check(folder, "--json")  # the folder passed: only the archive's reader looked at sizes
    assert result.exit_code == 1, result.output
    [integrity] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "integrity"]
    assert "model.onnx holds" in integrity["message"] and "its manifest says 10" in integrity["message"]
    manifest["sizes"] = {"model.onnx": "abc"}  # was exit 0 as a folder, "(AttributeError)" as an archive
    write_manifest(folder, manifest)
    with tarfile.open(evil, "w:xz") as tar:
        tar.add(folder, arcname="arm64-linux")
    for path, msg in ((folder, "mistyped target, files"), (evil, "sizes are not a table of file sizes")):
        result = check(path)
        assert result.exit_code == 3 and msg in result.stderr, result.output


class _Zeros(io.RawIOBase):
    """`size` zero bytes, never held in memory at once."""
    def __init__(self, size):
        self.left = size

    def readinto(self, buf):
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def test_archive_member_with_a_wrong_hash_is_never_written(packaged, tmp_path):
    """The manifest lists a huge model.onnx (zeros, a few KB compressed) with a hash it does not have: the
    member is hashed on the way and never written to disk; the integrity case fails naming it (exit 1)."""
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    size = 512 << 20
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sizes"]["model.onnx"] = size
    write_manifest(folder, manifest)
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz", compresslevel=1) as tar:
        for path in sorted(folder.iterdir()):
            info = tar.gettarinfo(path, arcname=f"arm64-linux/{path.name}")
            if path.name == "model.onnx":
                info.size = size
                tar.addfile(info, _Zeros(size))
            else:
                tar.addfile(info, path.open("rb"))
    assert bomb.stat().st_size < 4 << 20

    def written():
        return int(dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())["wchar"])

    before = written()
    result = check(bomb, "--json")
    assert written() - before < 64 << 20  # the package's other files and the report, not the zeros
    assert result.exit_code == 1, result.output
    bad = [c for c in json.loads(result.stdout)["cases"] if not c["passed"]]
    assert bad[0]["name"] == "integrity" and "model.onnx sha256" in bad[0]["message"]


def test_golden_zip_bomb_is_refused(packaged, tmp_path):
    folder = fresh_copy(packaged, tmp_path)
    with zipfile.ZipFile(folder / "golden.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("count.npy", _npy(np.array(1)))
        with z.open("output.0.output.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (1 << 29,)})
            for _ in range(128):
                f.write(bytes(16 << 20))  # 2 GiB of zeros, deflated to a few MB
    rehash(folder, "golden.npz")
    start = time.perf_counter()
    result = check(folder)
    assert result.exit_code == 3 and "more than 1073741824 bytes" in result.stderr, result.output
    assert time.perf_counter() - start < 10


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_manifest_fifo_is_refused_not_waited_on(packaged, tmp_path):
    folder = fresh_copy(packaged, tmp_path)
    (folder / "manifest.json").unlink()
    os.mkfifo(folder / "manifest.json")
    run = subprocess.run([sys.executable, "-m", "edgekit", "check", str(folder)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 3 and "not a regular file" in run.stderr


def test_check_findings_from_review(packaged, tmp_path):
    """A PAX size override, an infinite manifest size, a corrupt or NaN golden file, a bad ISA setting:
    each a one-line exit 2/3, never an internal error or a pass."""
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    pax = tmp_path / "pax.tar"
    with tarfile.open(pax, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("arm64-linux/manifest.json")
        info.pax_headers = {"size": "512"}
        tar.addfile(info, io.BytesIO(b""))
    assert check(pax).exit_code == 3 and "PAX header overrides" in check(pax).stderr
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sizes"]["model.onnx"] = float("inf")
    inf_folder = tmp_path / "inf" / "arm64-linux"
    shutil.copytree(folder, inf_folder)
    write_manifest(inf_folder, manifest)
    with tarfile.open(tmp_path / "inf.tar.gz", "w:gz") as tar:
        tar.add(inf_folder, arcname="arm64-linux")
    assert check(tmp_path / "inf.tar.gz").exit_code == 3
    inputs, outputs, atol = read_golden(folder / "golden.npz")
    outputs[1]["output"][:] = np.nan
    _rewrite_golden(folder, inputs, outputs, atol)
    nan = check(folder)
    assert nan.exit_code == 3 and "is not finite numbers" in nan.stderr
    data = bytearray((folder / "golden.npz").read_bytes())
    data[60] ^= 0xFF
    (folder / "golden.npz").write_bytes(bytes(data))
    assert check(folder).exit_code in (1, 3)  # integrity fails first; never exit 5
    bad_isa = cli(["check", str(packaged[0] / "ios-arm64")], env={"EDGEKIT_HOST_ISA": "avx9"})
    assert bad_isa.exit_code == 2 and "EDGEKIT_HOST_ISA" in bad_isa.stderr
    for name, value in (("EDGEKIT_HOST_ARCH", "riscv"), ("EDGEKIT_WORK_THREADS", "0")):  # was exit 1: failed parity
        bad = cli(["check", str(packaged[0] / "ios-arm64")], env={name: value})
        assert bad.exit_code == 2 and f"{name}={value!r}" in bad.stderr, bad.output


def test_check_runs_a_hostile_model_bounded(packaged, tmp_path):
    """A consistent package (hashes match) whose model asks for 40 GB: the parity case fails with the reason,
    in a child process, instead of taking the machine."""
    from onnx import TensorProto, helper, numpy_helper

    import onnx
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    shape = numpy_helper.from_array(np.array([100000, 100000], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=numpy_helper.from_array(np.array([1.0], np.float32))),
             helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
             # quantized, as the manifest says model.int8.onnx is (check holds it to that before running it)
             helper.make_node("Flatten", ["image"], ["flat"]),
             helper.make_node("QuantizeLinear", ["flat", "step", "zero_point"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "step", "zero_point"], ["dq"]),
             helper.make_node("DequantizeLinear", ["weight", "step", "weight_zero_point"], ["dq_weight"]),
             helper.make_node("MatMul", ["dq", "dq_weight"], ["ten_values"]),  # a compute node in int8
             helper.make_node("Add", ["ten_values", "s"], ["output"])]
    consts = [numpy_helper.from_array(np.ones((64, 10), np.int8), "weight"),
              numpy_helper.from_array(np.array(0, np.int8), "weight_zero_point"),
              numpy_helper.from_array(np.array(1 / 255, np.float32), "step"),
              numpy_helper.from_array(np.array(0, np.uint8), "zero_point")]
    graph = helper.make_graph(nodes, "bomb", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                            ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])],
                              initializer=[shape, *consts])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "model.int8.onnx")
    from edgekit import mobile
    made = mobile.c_header(folder / "model.int8.onnx", folder)  # its C array too: a package that agrees with itself
    rehash(folder, "model.int8.onnx", *(p.name for p in made.values()))
    start = time.perf_counter()
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    failed = {c["name"]: c["message"] for c in json.loads(result.stdout)["cases"] if not c["passed"]}
    bad = failed.pop("parity model.int8.onnx")
    assert "allocate" in bad or "memory" in bad
    assert list(failed) == ["gates"] and "size_mb" in failed["gates"]  # not the size of the model it shipped
    assert time.perf_counter() - start < 60


def test_rows_timed_on_a_stand_in_host_say_so(packaged, tmp_path):
    """An ARM row timed on this x86 host is marked as the host's latency, never passed off as the device's."""
    import platform

    from edgekit import api, report

    kind = "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"
    for target, m in packaged[1].items():
        assert m["latency"]["on_device"] == (kind == ("x86_64" if target == "desktop-x86" else "arm64")), target
    exported = api.export(str(DIGITS / "model.py") + ":build", weights=str(DIGITS / "digits_cnn.pt"),
                          inputs=["image:Nx1x8x8"], calibration=str(DIGITS / "data" / "calibration.npz"),
                          targets=["desktop-x86", "android-arm64"], out=tmp_path / "o", runs=2)
    assert exported.targets["desktop-x86"].latency_1_thread is None  # its profile runs 1 thread
    table = report.table(list(exported.targets.values())).splitlines()
    [x86_row] = [line for line in table if line.startswith("desktop-x86 ")]
    [arm_row] = [line for line in table if line.startswith("android-arm64 ")]
    stand_in = "android-arm64" if kind == "x86_64" else "desktop-x86"
    assert ("*" in arm_row) == (stand_in == "android-arm64") and ("*" in x86_row) == (stand_in == "desktop-x86")
    assert any(line.startswith(f"* {stand_in}: latency of host {platform.machine()}, not the device") for line in table)
    assert "standing in for the device" in (tmp_path / "o" / stand_in / "report.md").read_text()
    # and its int8 parity: from this host's kernels unless emulated (an ARM device rounds some int8 ops otherwise)
    assert "android-arm64: int8 parity and accuracy from x86 exact kernels (stand-in) (--emulate aarch64 runs real " \
           "aarch64 kernels)" in table and not any(line.startswith("desktop-x86: int8 parity") for line in table)


def test_latency_at_the_profiles_threads_and_at_one(packaged):
    """Edge profiles run 2-4 threads: the gated figure is at that count (capped at this host's cores, and said
    so), and the 1-thread figure sits beside it."""
    cores = os.cpu_count()
    for target, threads in (("arm64-linux", 4), ("android-arm64", 4), ("ios-arm64", 2)):
        m = packaged[1][target]
        assert m["host"]["threads"] == threads
        assert m["latency"]["int8"]["threads"] == m["latency"]["fp32"]["threads"] == min(threads, cores), target
        assert ("this host has" in m["latency"]["where"]) == (cores < threads), m["latency"]["where"]
        one = m["latency_1_thread"]
        assert one["int8"]["threads"] == 1 and one["int8"]["p90_over_p50"] >= 1.0 and "1 thread(s)" in one["where"]
        assert "At 1 thread (" in (packaged[0] / target / "report.md").read_text()


def _rehash(folder, keep=(), **edits):
    """Re-hash a tampered folder's files into its manifest, as anyone sending a package can (its reports rendered
    again from it, but those in `keep`, edited on purpose)."""
    from edgekit.package import sha256

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(edits)
    manifest["files"] = {name: sha256(folder / name) for name in manifest["files"] if (folder / name).exists()}
    manifest["sizes"] = {name: (folder / name).stat().st_size for name in manifest["files"]}
    write_manifest(folder, manifest, keep)
    return manifest


@pytest.mark.parametrize("added", ["<script>alert(1)</script>", '<img src=x onerror="alert(1)">',
                                   '<a href="https://example.com/x">more</a>', "<style>@import url(x.css)</style>"])
def test_a_report_page_edited_to_run_or_fetch_and_rehashed_fails_check(packaged, tmp_path, added):
    """report.html edited to run a script or fetch something, and re-hashed in the manifest, passed check, and a CI
    artifact opened it. Check refuses what edgekit's page never holds; the page itself forbids scripts and fetches
    (Content-Security-Policy), so a browser blocks them where check is not run."""
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    page = (folder / "report.html").read_text()
    assert report_html.active_content(page) is None and f'content="{report_html.POLICY}"' in page
    (folder / "report.html").write_text(page.replace("</body>", added + "</body>"))
    _rehash(folder, keep=["report.html"])
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    integrity = next(c["message"] for c in check_cases(result) if c["name"] == "integrity")
    assert "manifest.json says of report.html: it holds " in integrity, integrity


def test_hostile_archives_are_refused_before_tarfile_walks_them(packaged, tmp_path):
    """A GNU sparse member passed the 4 GiB cap (its header gives only the bytes stored: 193 KB wrote 6 GiB);
    a run of 1,100 PAX or long-name headers ended in RecursionError (exit 5), each uncounted by the caps."""
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    (folder / "holes.bin").write_bytes(b"")
    os.truncate(folder / "holes.bin", 1 << 30)
    _rehash(folder)
    sparse = tmp_path / "sparse.tar.gz"
    subprocess.run(["tar", "--format=gnu", "-S", "-czf", sparse, "-C", tmp_path, "arm64-linux"], check=True)
    result = check(sparse)
    assert result.exit_code == 3 and "is a sparse file" in result.stderr, result.output
    for kind, header in (("pax", {"comment": "x"}), ("long", None)):
        chain = tmp_path / f"{kind}.tar.gz"
        with gzip.open(chain, "wb") as f:
            for i in range(1100):
                f.write(_extended_only(tarfile.TarInfo(f"f{i}" if header else "n" * 120), header))
            f.write(bytes(1024))
        result = check(chain)
        assert result.exit_code == 3 and "extended headers in a row" in result.stderr, result.output


def _extended_only(info, pax):
    """The extended header blocks tarfile writes before a member, without the member itself."""
    if pax:
        info.pax_headers = pax
        blocks = info.tobuf(tarfile.PAX_FORMAT)
    else:
        blocks = info.tobuf(tarfile.GNU_FORMAT)  # a name over 100 bytes: a GNU long-name header first
    return blocks[:-512]


def test_archive_members_are_read_front_to_back(packaged, tmp_path):
    """Each member was read from the start of the compressed stream again (twice): 200 listed members of
    1 MiB took 17 s, time growing with the square of the count. Now two passes in order: well under 10 s."""
    import hashlib

    data = bytes(1 << 20)
    names = {f"f{i:04d}.bin": hashlib.sha256(data).hexdigest() for i in range(300)}
    manifest = json.loads((packaged[0] / "arm64-linux" / "manifest.json").read_text())
    manifest["files"] = {**manifest["files"], **names}
    many = tmp_path / "many.tar.gz"
    with tarfile.open(many, "w:gz", compresslevel=1) as tar:
        for name, content in (("manifest.json", json.dumps(manifest).encode()), *((n, data) for n in names)):
            info = tarfile.TarInfo(f"arm64-linux/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    from edgekit.archive import extract

    start = time.perf_counter()
    extract(many, tmp_path / "x")
    assert time.perf_counter() - start < 10
    assert len(list((tmp_path / "x" / "arm64-linux").iterdir())) == 301


def test_crafted_golden_and_manifest_entries_are_bad_input_not_crashes(packaged, tmp_path):
    """A 1 MB golden.npz declaring a 1 GiB .npy header took 2.1 GB before numpy refused it; a string
    tolerance and a sample index '²' (isdigit, not int) were exit 5; non-string verification names exit 5."""
    from edgekit.package import write_arrays

    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    golden = dict(np.load(folder / "golden.npz"))
    cases = {"atol.0": np.array("0.1"), "input.\u00b2.0": np.zeros(1), "output.0.7": np.zeros(1),
             "output_names": np.array([1, 2])}
    for key, value in cases.items():
        write_arrays(folder / "golden.npz", {**golden, key: value})
        _rehash(folder)
        result = check(folder)
        assert result.exit_code == 3 and "not a valid golden file" in result.stderr, (key, result.output)
    with zipfile.ZipFile(folder / "golden.npz", "w") as z:
        z.writestr("count.npy", _npy(np.array(8)))
        z.writestr("atol.x.npy", b"\x93NUMPY\x02\x00" + (1 << 30).to_bytes(4, "little") + b" " * 4096)
    _rehash(folder)
    result = check(folder)
    assert result.exit_code == 3 and "declares a 1073741824-byte .npy header" in result.stderr, result.output
    write_arrays(folder / "golden.npz", golden)
    _rehash(folder, passed=False, verification=[{"name": 7, "passed": False}])
    result = check(folder)
    assert result.exit_code == 1 and "the export's own check failed: 7" in result.stdout, result.output
    for host in (["x"], {"threads": "4"}, {"threads": 10**9}):  # read by --device's benchmark: a traceback there
        _rehash(folder, passed=True, verification=[], host=host)
        assert check(folder).exit_code == 3, host


def test_a_manifest_cannot_take_the_deployable_out_of_the_check(packaged, tmp_path):
    """A manifest-only edit (golden outputs for model.onnx alone) passed without running model.int8.onnx; a
    linked manifest.json, a target name with control characters, and an OUT sub-folder that lost its manifest
    (a CI glob without *.json) all passed too."""
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    manifest = json.loads((folder / "manifest.json").read_text())
    only_fp32 = dict(manifest, golden=dict(manifest["golden"], models={"model.onnx": manifest["golden"]["models"][
        "model.int8.onnx"]}))
    write_manifest(folder, only_fp32)
    result = check(folder)
    assert result.exit_code == 3 and "no golden outputs for model.int8.onnx" in result.stderr, result.output
    (tmp_path / "elsewhere.json").write_text(json.dumps(manifest))
    (folder / "manifest.json").unlink()
    (folder / "manifest.json").symlink_to(tmp_path / "elsewhere.json")
    assert check(folder).exit_code == 3 and "a link" in check(folder).stderr
    (folder / "manifest.json").unlink()
    # 72: made before 64, checked (its models' metadata names arm64-linux: a failed claim, exit 1), not refused
    for target, code in (("evil\u0001\u001b[31m", 3), ("arm64-linux\n", 3), ("a" * 72, 1)):
        # made with a profile of the user's (of another digest than the bundled arm64-linux's)
        write_manifest(folder, dict(manifest, target=target, target_profile_sha256="0"))
        assert check(folder).exit_code == code, target
    write_manifest(folder, manifest)
    out = tmp_path / "out"
    shutil.copytree(folder, out / "arm64-linux")
    shutil.copytree(folder, out / "android-arm64")
    (out / "android-arm64" / "manifest.json").unlink()
    result = check(out)
    assert result.exit_code == 3 and "android-arm64: holds a package's files but no manifest.json" in result.stderr


def test_junit_holds_only_what_xml_can_and_odd_archive_names_check(packaged, tmp_path):
    """A file name with an escape character wrote JUnit XML no reader parses; `..tar.gz` was exit 5; empty
    outputs that match exactly failed parity."""
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    (folder / "notes\x1b.txt").write_text("x")
    result = check(folder, "--junit", tmp_path / "j.xml")
    assert result.exit_code == 1 and "notes" in result.stdout
    ElementTree.parse(tmp_path / "j.xml")  # parses
    odd = tmp_path / "odd"
    odd.mkdir()
    shutil.copy(packaged[0] / "arm64-linux.tar.gz", odd / "..tar.gz")
    assert check(odd / "..tar.gz").exit_code == 0
    from edgekit.package_check import compare

    empty = {"out": np.zeros((0, 10), np.float32)}
    assert compare("t", "m", [empty], [empty], {"out": 0.1}, {}, 0.0, "", "here").passed


def test_check_takes_a_step_time_limit_and_past_it_is_exit_4_naming_it_alone(tmp_path):
    """A tampered golden batch made a package's int8 model hang: check waited 600 s a target, with no way to say
    less (CI paid it for every target folder). Past the limit the user set, check failed the package (exit 1, as
    tampered) with "parity figures are not reproduced on its golden golden samples: check failed: took longer...":
    it is the step's limit, exit 4 as export's steps, said alone."""
    import edgekit

    folder = example_package(tmp_path)
    said = "check of desktop-x86 failed: took longer than 0.001 s (the limit; raise it with --step-timeout)"
    quick = check(folder, "--step-timeout", "0.001", "--json")  # too short for the child to start
    assert quick.exit_code == 4, quick.output
    assert quick.stderr == f"edgekit: error: {said}\n"
    assert json.loads(quick.stdout)["error"] == said
    with pytest.raises(edgekit.StageError, match=r"check of desktop-x86 failed: took longer than 0\.001 s"):
        edgekit.check(folder, step_timeout=0.001)
    assert check(folder).exit_code == 0  # the default, 600 s


def test_figures_that_cannot_be_made_say_golden_samples_once(tmp_path):
    """"its golden golden samples" where the fp32 model could not run them (no count to give)."""
    folder = example_package(tmp_path)
    (folder / "model.onnx").write_bytes(b"garbage")
    rehash(folder, "model.onnx")
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    gates = next(c for c in check_cases(result) if c["name"] == "gates")
    assert gates["message"].startswith("manifest.json's parity figures are not reproduced on its golden samples: "
                                       "model.onnx does not run the golden inputs"), gates


def test_nan_outputs_are_counted_as_such_not_as_zero_steps():
    """A device returning NaN failed, rightly, "80 of 80 quantized output values differ, by up to 0 step(s)"."""
    from edgekit.package_check import compare

    want = {"out": np.linspace(0, 1, 8, dtype=np.float32)[None]}
    nan = {"out": np.full((1, 8), np.nan, np.float32)}
    case = compare("t", "m", [nan], [want], {"out": 0.01}, {"out": 0.1}, 0.0, "", "here")
    assert not case.passed and case.message.endswith("8 of 8 quantized output values differ (8 NaN or infinite)")
    half = {"out": np.where(np.arange(8) < 4, np.nan, want["out"] + 0.3).astype(np.float32)}
    case = compare("t", "m", [half], [want], {"out": 0.01}, {"out": 0.1}, 0.0, "", "here")
    assert case.message.endswith("8 of 8 quantized output values differ, by up to 3 step(s) (4 NaN or infinite)")


def test_an_archive_is_written_only_as_it_was_checked(packaged, tmp_path, monkeypatch):
    """A member appended twice (a tampered golden.npz, then the original: `tar rf`) read as 'changed while being
    read'; an archive rewritten between the checking and the writing pass wrote an unlisted member, then
    raised KeyError (exit 5)."""
    from edgekit import archive

    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    twice = tmp_path / "twice.tar"
    with tarfile.open(twice, "w") as tar:
        tar.add(folder, arcname="arm64-linux")
        tar.add(folder / "golden.npz", arcname="arm64-linux/golden.npz")
    result = check(twice)
    assert result.exit_code == 3 and "member 'arm64-linux/golden.npz' is in it twice" in result.stderr
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.addfile(*_file("arm64-linux/not-listed.bin", bytes(4096)))
    package = tmp_path / "p.tar"
    shutil.copy(packaged[0] / "arm64-linux.tar.gz", package)
    listed = archive._listed_files

    def rewritten_meanwhile(*args):  # someone writes over the archive once its members were checked
        shutil.copyfile(evil, package)
        return listed(*args)

    monkeypatch.setattr(archive, "_listed_files", rewritten_meanwhile)
    with pytest.raises(archive.InputError, match="changed while being read"):
        archive.extract(package, tmp_path / "x")
    assert not (tmp_path / "x" / "arm64-linux" / "not-listed.bin").exists()


@pytest.mark.parametrize("limit, budget", [(5, 5), (2.5, 2.5), (True, None), ("5", None), (None, None)])
def test_only_a_number_is_a_latency_budget(limit, budget):
    """A hand-edited `true` limit was read as a 1 ms budget on the device."""
    from edgekit.package_check import latency_budget

    assert latency_budget({"gates": [{"name": "latency_p50_ms", "passed": True, "limit": limit}]}) == budget


def test_an_archive_with_data_after_its_end_and_an_out_inside_a_package_are_refused(packaged, tmp_path):
    """A second gzip member appended to an archive passed check (`tar -i` would extract its files); `export --out`
    inside a package folder wrote a target there, and that package then failed its check."""
    import gzip

    appended = tmp_path / "appended.tar.gz"
    appended.write_bytes((packaged[0] / "android-arm64.tar.gz").read_bytes() + gzip.compress(b"model" * 200))
    result = check(appended)
    assert result.exit_code == 3 and "holds data after the end of its archive" in result.stderr, result.output
    inside = cli(["export", str(DIGITS / "edgekit.toml"), "-t", "desktop-x86", "--no-bench", "--out",
                  str(packaged[0] / "android-arm64" / "more")])
    assert inside.exit_code == 2 and "inside the package folder" in inside.stderr, inside.output
    (tmp_path / "manifest.json").write_text('{"name": "a web app", "files": {}}')  # not an edgekit package
    beside = cli(["export", str(DIGITS / "edgekit.toml"), "-t", "desktop-x86", "--no-bench", "--out",
                  str(tmp_path / "dist")])
    assert beside.exit_code == 0, beside.output


def test_check_holds_the_manifests_inputs_and_outputs_to_the_model(tmp_path):
    """manifest.json's outputs reversed (its first output then claimed [N, 3] of the other one) passed `check`."""
    out = tmp_path / "o"
    made = cli(["export", "models:two_outputs", "--input", "x:Nx6", "--calibration", "random", "--no-bench", "--out",
                out])
    assert made.exit_code == 0, made.output
    assert check(out).exit_code == 0
    manifest_path = out / "desktop-x86" / "manifest.json"
    honest = json.loads(manifest_path.read_text())
    for edit, said in ((lambda m: m["outputs"].reverse(), "outputs ['output_1', 'output_0'], the golden sample's"),
                       (lambda m: m["outputs"][0].update(dtype="int64"), "output 'output_0' is 'int64'"),
                       (lambda m: m["inputs"][0]["shape"].__setitem__(1, 7), "input 'x' is 'float32' ['N', 7]")):
        manifest = json.loads(json.dumps(honest))
        edit(manifest)
        manifest_path.write_text(json.dumps(manifest))
        result = check(out)
        assert result.exit_code == 1 and "manifest.json says of model.int8.onnx: " in result.output, result.output
        assert said in result.output, result.output


def _gate(manifest, name):
    return next(g for g in manifest["gates"] if g["name"] == name)


@pytest.mark.parametrize("edit,said", [
    (lambda m: m.update(target="android-arm64"), "target android-arm64 is made with the bundled arm64-linux profile"),
    (lambda m: m.update(gates=[]), "gates accuracy_drop, export_cosine, export_scaled_max_abs, quant_cosine, "
                                     "quant_cosine_worst, quant_sqnr_db"),
    # the worst sample's cosine, held and re-judged as the mean's (an attention model passed at 0.64 on the mean)
    (lambda m: m.update(gates=[g for g in m["gates"] if g["name"] != "quant_cosine_worst"]),
     "gates quant_cosine_worst are missing"),
    (lambda m: _gate(m, "quant_cosine_worst").update(value=0.6, limit=0.5), "quant_cosine_worst's limit 0.5 is not "
                                                                            "the arm64-linux profile's 0.95"),
    (lambda m: _gate(m, "quant_cosine").update(value=None, skipped="bogus"), "quant_cosine is skipped, but"),
    # skipped at another size only where the manifest's reference there is ~0 (every output of the digits' is not)
    (lambda m: _gate(m, "export_cosine_at_N=2").update(value=None, skipped="bogus"),
     "export_cosine_at_N=2 is skipped, but"),
    (lambda m: _gate(m, "quant_cosine").update(value=0.2, limit=0.1), "quant_cosine's limit 0.1 is not the "
                                                                       "arm64-linux profile's 0.99"),
    (lambda m: _gate(m, "quant_cosine").update(value=0.1, op="<="), "quant_cosine is compared '<=', not '>='"),
    (lambda m: _gate(m, "size_mb").update(value=0.001), "size_mb 0.001 is not model.int8.onnx's"),
    (lambda m: m.update(gates=[g for g in m["gates"] if g["name"] != "top1_agreement"]),  # a classifier's
     "gates top1_agreement are missing"),
    (lambda m: _gate(m, "top1_agreement").update(output="embedding"),  # class gates hold the first output
     "top1_agreement on 'embedding': edgekit measures class gates on the output scored, 'output' (float class "
     "scores first"),
    (lambda m: _gate(m, "export_cosine_at_N=2").update(name="export_cosine_atN=2", value=0.1, limit=0.0),
     "gates ['export_cosine_atN=2'] are none that edgekit writes"),
    # a gate held on an emulated CPU's figures (export --emulate x86_64) is a quantization gate, at the profile's limit
    (lambda m: m["gates"].append({**_gate(m, "size_mb"), "name": "emulated_size_mb"}),
     "gates ['emulated_size_mb'] are none that edgekit writes"),
    (lambda m: m["gates"].append({**_gate(m, "quant_cosine"), "name": "emulated_quant_cosine", "value": 0.2,
                                  "limit": 0.1}),
     "emulated_quant_cosine's limit 0.1 is not the arm64-linux profile's 0.99"),
    (lambda m: m["gates"].append({"name": "runs_at_N=4", "value": None, "op": "", "limit": None, "passed": True,
                                  "skipped": True}), "runs_at_N=4 passed: edgekit writes it only when"),
    (lambda m: _gate(m, "size_mb").update(value=m["sizes"]["model.int8.onnx"] / 1e6, limit=0.0, op=">="),
     "size_mb is compared '>=', not '<='"),
    (lambda m: _gate(m, "size_mb").update(limit=1e9), "size_mb's limit 1e+09 is not within the arm64-linux "
                                                      "profile's 200"),
    (lambda m: m.update(gates=[g for g in m["gates"] if g["name"] != "size_mb"]), "size_mb's limit n/a is not within"),
    (lambda m: m.pop("c_header"), "the arm64-linux profile ships c_header, and the manifest has none"),
])
def test_gates_that_contradict_the_package_or_its_profile_fail_check(packaged, tmp_path, edit, said):
    """Manifest edits that passed check (rc 0): a desktop or arm64 package relabelled as another target, its gates
    emptied, a cosine skipped on a float model, its limit loosened below the profile's its digest names, compared
    the other way, a size that is not the shipped file's."""
    failed = {c["name"]: c for c in _failed_after(packaged, tmp_path, "arm64-linux", edit)}
    # relabelled, its models' metadata still names their target: integrity fails too (test_check_claims.py)
    assert set(failed) == {"gates"} or "edgekit_target 'arm64-linux'" in failed["integrity"]["message"], failed
    assert said in failed["gates"]["message"], failed


def _failed_after(packaged, tmp_path, target: str, edit) -> list[dict]:
    """The cases check fails on a copy of the target's package whose manifest.json `edit` changed."""
    folder = fresh_copy(packaged, tmp_path, target)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    write_manifest(folder, manifest)
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    return [c for c in json.loads(result.stdout)["cases"] if not c["passed"]]


@pytest.mark.parametrize("edit,said", [
    (lambda m: _gate(m, "nnapi_coverage").update(limit=0.0), "nnapi_coverage's limit 0 is not the android-arm64 "
                                                              "profile's 0.8"),
    (lambda m: _gate(m, "nnapi_coverage").update(value=0.9) or m["mobile_coverage"]["nnapi"].update(coverage=0.5),
     "nnapi_coverage 0.9 is not the coverage the manifest records"),
    (lambda m: m.update(gates=[g for g in m["gates"] if g["name"] != "nnapi_coverage"]), "nnapi_coverage's limit n/a"),
    (lambda m: m.pop("ort_format"), "the android-arm64 profile ships ort_format, and the manifest has none"),
    (lambda m: m.update(mobile_coverage=[1]), "nnapi_coverage 1 is not the coverage the manifest records"),  # exit 5
])
def test_a_phone_packages_coverage_and_ort_are_held_to_its_profile(packaged, tmp_path, edit, said):
    """An android package whose NNAPI coverage gate was loosened, fed another figure or removed, or whose
    manifest dropped the .ort its profile ships, passed check."""
    failed = _failed_after(packaged, tmp_path, "android-arm64", edit)
    assert said in next(c for c in failed if c["name"] == "gates")["message"], failed


def test_golden_tolerances_and_the_c_array_are_held_to_what_they_claim(packaged, tmp_path):
    """A golden tolerance raised 10x in golden.npz and the manifest alike passed, as did a model_data.c (or
    model_data.h) of another model with hashes made to match: firmware links the array, not the .onnx."""
    from edgekit import mobile
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    inputs, outputs, atol = read_golden(folder / "golden.npz")
    _rewrite_golden(folder, inputs, outputs, {k: 10 * v for k, v in atol.items()})
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["golden"]["models"]["model.int8.onnx"]["atol"] = {k: 10 * v for k, v in atol.items()}
    write_manifest(folder, manifest)
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    assert "golden.npz's tolerance for 'output' is" in result.stdout and "not the arm64-linux profile's 0.02 x its " \
        "peak |value|" in result.stdout, result.output
    manifest["target_profile_sha256"] = "0" * 64  # a profile of the user's own: its tolerance is the manifest's
    write_manifest(folder, manifest)
    assert check(folder).exit_code == 0
    folder = fresh_copy(packaged, tmp_path / "c", "arm64-linux")
    other = mobile.c_header(folder / "model.onnx", tmp_path)  # the fp32 model's array and header
    for kind, said in (("source", "model_data.c's array is not model.int8.onnx's bytes"),
                       ("header", "model_data.h does not give model.int8.onnx's size and sha256")):
        kept = (folder / other[kind].name).read_bytes()
        shutil.copy(other[kind], folder / other[kind].name)
        rehash(folder, other[kind].name)
        result = check(folder, "--json")
        assert result.exit_code == 1 and said in result.stdout, result.output
        (folder / other[kind].name).write_bytes(kept)
        rehash(folder, other[kind].name)
    assert check(folder).exit_code == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, said in (("kws", "model_data.h does not give model.int8.onnx's size"), ("../x", "or a C name")):
        manifest["c_header"]["c_name"] = name  # the C names the header is held to
        write_manifest(folder, manifest)
        result = check(folder, "--json")
        assert result.exit_code == 1 and said in result.stdout, result.output


def test_an_ort_whose_golden_outputs_are_not_its_onnxs_fails(packaged, tmp_path):
    """An .ort swapped for a model that returns zeros, with golden outputs of its own and hashes to match, passed:
    the .ort's golden outputs are held to model.int8.onnx's on the same inputs, within the recorded difference."""
    folder = fresh_copy(packaged, tmp_path, "android-arm64")
    inputs, outputs, atol = read_golden(folder / "golden.ort.npz")
    from edgekit import runner
    from edgekit.package import write_arrays
    zeros = [[np.zeros_like(v) for v in out.values()] for out in outputs]
    write_arrays(folder / "golden.ort.npz", runner.golden_arrays(inputs, list(outputs[0]), zeros, atol))
    rehash(folder, "golden.ort.npz")
    result = check(folder, "--json")
    assert result.exit_code == 1 and "model.int8.ort's golden output 'output' differs from model.int8.onnx's" \
        in result.stdout, result.output


def test_a_golden_file_or_an_interface_that_contradicts_the_manifest_fails_check(packaged, tmp_path):
    """A tolerance loosened in golden.npz alone passed a model that returns its input pixels; one golden sample
    passed as eight; an input the model does not have, or a dimension that is not a size or a name, passed."""
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    inputs, outputs, atol = read_golden(folder / "golden.npz")
    _rewrite_golden(folder, inputs, outputs, {k: 1e6 for k in atol})
    loose = check(folder, "--json")
    assert loose.exit_code == 1 and "holds tolerances output 1e+06, not the manifest's" in loose.stdout, loose.output
    _rewrite_golden(folder, inputs[:1], outputs[:1], atol)
    fewer = check(folder, "--json")
    assert fewer.exit_code == 1 and "holds 1 golden sample(s), the manifest says 8" in fewer.stdout, fewer.output
    _rewrite_golden(folder, inputs, outputs, atol)
    assert check(folder).exit_code == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    for edit in (lambda m: m["inputs"].append({"name": "mask", "shape": ["N", 8], "dtype": "bool"}),
                 lambda m: m["inputs"][0].update(shape=[[1], 1, 8, 8])):
        edited = json.loads(json.dumps(manifest))
        edit(edited)
        write_manifest(folder, edited)
        result = check(folder, "--json")
        assert result.exit_code == 1 and "manifest.json says of model.int8.onnx: input" in result.stdout, result.output


@pytest.mark.parametrize("text,said", [
    ('{"passed": false, "passed": true}', "duplicate key 'passed'"),
    ('{"x": {' + ", ".join(f'"k{i}": 0' for i in range(20000)) + ', "k0": 1}}', "duplicate key 'k0'"),  # 23 s
    ('{"gates": [{"name": "x", "value": NaN}]}', "NaN is not JSON"),
], ids=["duplicate", "duplicate-of-20000", "nan"])
def test_a_manifest_two_readers_would_read_differently_is_refused(packaged, tmp_path, text, said):
    """Duplicate keys (check kept the last, a dashboard the first) and NaN or Infinity, which edgekit never writes."""
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    manifest = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(text[:-1] + ", " + manifest.strip()[1:])
    start = time.perf_counter()
    result = check(folder)
    assert result.exit_code == 3 and said in result.stderr, result.output
    assert time.perf_counter() - start < 10  # found in one pass over the keys


def test_a_file_of_another_size_is_not_read(packaged, tmp_path):
    """A 20 GB sparse model.int8.onnx was hashed before its size was compared: 83 s for a one-line failure."""
    folder = fresh_copy(packaged, tmp_path, "arm64-linux")
    with open(folder / "model.int8.onnx", "r+b") as f:
        f.truncate(20 << 30)
    start = time.perf_counter()
    result = check(folder, "--json")
    assert result.exit_code == 1 and f"model.int8.onnx holds {20 << 30} bytes, its manifest says" in result.stdout
    assert time.perf_counter() - start < 20


def test_a_c_array_is_read_a_block_at_a_time_and_an_output_in_later_samples_only_is_told(packaged, tmp_path):
    """Review: model_data.c was read whole (a 100 MB model's array took 1.7 GB), and a golden file giving an output
    in later samples only was exit 5 (KeyError) where it had been a failed parity case."""
    from edgekit import mobile, package_check
    data = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    (tmp_path / "m.bin").write_bytes(data)
    source = mobile.c_header(tmp_path / "m.bin", tmp_path)["source"]
    for block in (3, 7, 64, 1 << 20):  # each boundary: inside "= {", a byte, "};"; and the whole file at once
        assert package_check._c_array_is(source, data, block)
        assert not package_check._c_array_is(source, data[:-1] + b"x", block)
        assert not package_check._c_array_is(source, data + b"x", block)
    folder = fresh_copy(packaged, tmp_path, "ios-arm64")
    inputs, outputs, atol = read_golden(folder / "golden.npz")
    outputs[1]["zz"] = outputs[1]["output"]
    _rewrite_golden(folder, inputs, outputs, {**atol, "zz": 1.0})
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["golden"]["models"]["model.int8.onnx"]["atol"]["zz"] = 1.0
    write_manifest(folder, manifest)
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output


def test_a_c_header_entry_without_its_assembly_says_so(tmp_path):
    """Every arm64-linux package ships model_data.S: a c_header naming none was told only of what it embeds, its
    header, its source or a C name, none of them wrong."""
    from edgekit import package_check

    names = {"embeds": "model.int8.onnx", "header": "model_data.h", "source": "model_data.c", "c_name": "model"}
    manifest = {"c_header": names, "files": {n: "0" * 64 for n in (*list(names.values())[:3], "model_data.S")}}
    said = package_check._c_array_claims(tmp_path, manifest)
    assert said.startswith("c_header does not name") and "its assembly (model_data.S)" in said, said


def test_class_gates_on_an_output_other_than_the_scored_one_are_untrue():
    """Class gates are on the first 2-D output (a map returned before the logits was scored as 1,024 classes), or
    the output accuracy records."""
    from edgekit import package_check

    def gate(name, op=">=", output=None):
        return {"name": name, "value": 1.0, "op": op, "limit": 0.99, "passed": True,
                **({"output": output} if output else {})}

    def manifest(export_gate: str, scored: str) -> dict:
        return {"gates": [gate("quant_cosine"), gate("quant_sqnr_db"), gate("accuracy_drop", "<=", scored),
                          gate("top1_agreement", output=scored), gate("export_cosine"), gate(export_gate, "<=")],
                "model": {"exporter": "torchscript"}, "task": "classify", "target": "desktop-x86",
                "outputs": [{"name": "map", "shape": ["N", 1, 32, 32], "dtype": "float32"},
                            {"name": "logits", "shape": ["N", 10], "dtype": "float32"}]}

    assert package_check._gate_claims(manifest("export_scaled_max_abs", "logits")) == []
    [said] = package_check._gate_claims(manifest("export_scaled_max_abs", "map"))  # this edgekit's never
    assert said.startswith("accuracy_drop on 'map', top1_agreement on 'map': edgekit measures class gates on"), said
    recorded = {**manifest("export_scaled_max_abs", "map"), "accuracy": {"output": "map"}}  # the labels fit the map
    assert package_check._gate_claims(recorded) == []
    assert package_check._gate_claims({**recorded, "accuracy": {"output": "logits"}})  # not the output it records
    made = {**manifest("export_scaled_max_abs", "map"), "edgekit_version": edgekit.__version__}
    [said] = package_check._gate_claims(made)  # no labels: scored() alone, not an older package's first output
    assert said.startswith("accuracy_drop on 'map', top1_agreement on 'map': edgekit measures"), said
    accuracy = {"samples": 64, "fp32": 90.0, "int8": 89.0, "drop": 1.0}
    made.update(validation={"samples": 64}, outputs=[{"name": "map", "shape": [1, 3, 32, 32], "dtype": "float32"},
                                                     {"name": "logits", "shape": [1, 10], "dtype": "float32"}])
    assert "accuracy names no output it scored" in package_check._gate_claims({**made, "accuracy": accuracy})
    assert package_check._gate_claims({**made, "accuracy": {**accuracy, "output": "map"}}) == []
    assert "accuracy is scored on 'nope', no output of the model" in package_check._gate_claims(
        {**made, "accuracy": {**accuracy, "output": "nope"}})
    said = package_check._gate_claims({**made, "accuracy": {**accuracy, "output": "logits", "samples": 65}})
    assert "accuracy scores 65 labels on 'logits', which holds 1 rows a sample ([1, 10]) over 64" in said[0], said
    worst = manifest("export_scaled_max_abs", "logits")  # a gate over every output names the worst, any of them
    worst["gates"][1]["output"] = "map"
    assert package_check._gate_claims(worst) == []
    worst["gates"][1]["output"] = "nope"
    assert package_check._gate_claims(worst) == ["quant_sqnr_db on 'nope': the model has no such output"]


@pytest.mark.parametrize("style", ["Runtime", "Fixed"])
def test_a_padded_stem_converts_to_ort_and_runs_the_same(tmp_path, monkeypatch, style):
    """An x86 profile asking for ORT format: the stem's uint8 Pad (quantization.pad_convs) is in the operator config
    and the .ort gives the .onnx's outputs."""
    import onnx
    from models import stem_cnn

    from edgekit import mobile, quantization
    from edgekit.config import InputSpec, QuantSettings
    from edgekit.onnx_export import export_torch

    monkeypatch.setenv("EDGEKIT_HOST_ARCH", "x86_64")
    monkeypatch.setenv("EDGEKIT_HOST_ISA", "avx512-vnni")
    fp32 = export_torch(stem_cnn(), (InputSpec.parse("image:1x3x16x16"),), (), 17, tmp_path / "fp32.onnx")
    feeds = [{"image": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)} for i in range(8)]
    plan = quantization.plan(fp32, QuantSettings(), set())
    (tmp_path / "out").mkdir()
    int8 = quantization.quantize(fp32, tmp_path / "out" / "model.int8.onnx", plan, feeds)
    written = mobile.to_ort([int8], tmp_path / "out", style, "amd64")
    assert "Pad" in written["config"].read_text() and quantization.done(onnx.load(str(int8)))
    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds[0])[0]
            for p in (written["ort"][int8], int8))
    np.testing.assert_array_equal(a, b)


def test_a_small_channel_beside_large_ones_is_checked_at_its_own_tolerance(tmp_path):
    """Golden tolerances were 0.02 x the whole output's peak: a detection head's class logit (values within 0.21)
    beside pixel boxes was allowed 0.77, so an int8 model whose logit bias moved by 0.3 (most of its decisions
    flipped) passed check. Each channel is now held to 0.02 x its own peak (golden.npz's channel_atol); a golden
    file without them (made before) is still read, at the output's tolerance."""
    import onnx
    from conftest import TESTS
    from onnx import numpy_helper

    np.savez(cal := tmp_path / "cal.npz", image=np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32))
    made = cli(["export", TESTS / "models.py:mixed_head", "--input", "image:Nx1x8x8", "--calibration", cal, "--task",
                "detect", "-t", "desktop-x86", "--no-bench", "--out", tmp_path / "o"])
    assert made.exit_code == 0, made.output
    folder = tmp_path / "o" / "desktop-x86"
    assert check(folder).exit_code == 0
    model = onnx.load(folder / "model.int8.onnx")  # the head Conv is kept float (the few-levels rule): its bias
    [bias] = [i for i in model.graph.initializer if i.name == "head.bias"]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32([0, 0, 0, 0, 0, 0.3]), bias.name))
    onnx.save(model, folder / "model.int8.onnx")
    rehash(folder, "model.int8.onnx")
    result = check(folder, "--json")
    assert result.exit_code == 1, result.output
    [failed] = [c for c in json.loads(result.stdout)["cases"] if not c["passed"]]
    assert failed["name"] == "parity model.int8.onnx" and "(its channel's)" in failed["message"], failed
    assert "element [0, 5," in failed["message"] and "vs tolerance 0.00417" in failed["message"], failed
    # golden.npz as made before: no per-channel tolerances, read at the output's; with a bundled profile, said
    inputs, outputs, atol = read_golden(folder / "golden.npz")
    _rewrite_golden(folder, inputs, outputs, atol)
    result = check(folder, "--json")
    assert result.exit_code == 1 and "golden.npz's per-channel tolerances for 'output' are not the desktop-x86 " \
        "profile's 0.02 x each channel's peak |value|" in result.stdout, result.output
    manifest = json.loads((folder / "manifest.json").read_text())
    write_manifest(folder, {**manifest, "target_profile_sha256": "0" * 64})
    assert check(folder).exit_code == 0  # 0.3 within the whole output's 0.77


def test_golden_tolerances_leave_out_samples_with_no_values():
    """A detector's selections hold no values on some samples: the peak of an empty one raised (exit 5)."""
    from edgekit.package import golden_tolerances
    empty, some = np.zeros((1, 0), np.float32), np.array([[0.5, 2.0, -1.0]], np.float32)
    assert golden_tolerances({"y": [empty, some, empty]}, 0.01) == {"y": pytest.approx(0.02)}


def test_output_steps_of_an_output_that_is_a_quantized_bias(tmp_path):
    """A graph output that is also a Gemm's bias comes out of a DequantizeLinear whose per-tensor scale has shape
    [1]: float() of it raised TypeError, exit 5 on android-arm64 (per-tensor)."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from edgekit.package import output_steps

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"x": np.random.default_rng(i).standard_normal((2, 8)).astype(np.float32)}
                               for i in range(4)])

        def get_next(self):
            return next(self.feeds, None)

    rng = np.random.default_rng(0)
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])],
                              [numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w"),
                               numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    quantize_static(tmp_path / "m.onnx", tmp_path / "q.onnx", Reader(), quant_format=QuantFormat.QDQ)
    steps = output_steps(onnx.load(tmp_path / "q.onnx"))
    assert set(steps) == {"y", "b"} and all(s > 0 for s in steps.values())


def test_a_report_names_the_users_files_without_their_folders_and_leaves_node_names_alone(tmp_path, monkeypatch):
    """A folder's text taken out anywhere renamed nodes: /model/net.py:build left /model/model.0/Conv as
    model.0/Conv, advice no model could take. Whole paths only, as given and absolute; a NamedTuple in a report is
    left as it is (its constructor takes fields, not one iterable)."""
    from collections import namedtuple

    from edgekit.reports import user_path_patterns, without_folders

    monkeypatch.chdir(tmp_path)
    paths = user_path_patterns(["data/calibration.npz", "/model/net.py", "/home/alice/d"])
    Pair = namedtuple("Pair", "a b")
    said = without_folders({
        "nodes": ["/model/model.0/Conv", "/data/calibration.npz/Conv", "/home/alice/d/x.npy"],
        "data": f"data '{tmp_path}/data/calibration.npz' (held-out last 8), data/calibration.npz",
        "model": ("/model/net.py:build", Pair("/model/net.py", 2)), "folder": "/home/alice/d (3 files)"}, paths)
    assert said == {"nodes": ["/model/model.0/Conv", "/data/calibration.npz/Conv", "/home/alice/d/x.npy"],
                    "data": "data 'calibration.npz' (held-out last 8), calibration.npz",
                    "model": ("net.py:build", Pair("/model/net.py", 2)), "folder": "d (3 files)"}


def test_check_bounds_a_cosine_by_the_golden_samples_whose_length_agrees(tmp_path):
    """An output whose length follows the values (x[x > 0.5]) and differs in int8's golden sample 0: check's figures
    failed ('does not run the golden inputs': shapes differ); measured, the cosine averages the 2 samples that agree."""
    import onnx
    from onnx import TensorProto, helper

    from edgekit import package, package_check

    nodes = [helper.make_node("Greater", ["x", "half"], ["m"]), helper.make_node("NonZero", ["m"], ["nz"]),
             helper.make_node("Transpose", ["nz"], ["idx"], perm=[1, 0]), helper.make_node("GatherND", ["x", "idx"],
                                                                                          ["y"])]
    graph = helper.make_graph(nodes, "cut", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["K"])],
                              [helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    feeds = [{"x": np.linspace(0, 1, 8, dtype=np.float32) + 0.01 * i} for i in range(3)]
    outs = [[f["x"][f["x"] > 0.5] * 1.001] for f in feeds]
    outs[0] = [outs[0][0][1:]]  # int8 dropped one value on sample 0
    package.write_golden(tmp_path / "golden.npz", feeds, ["y"], outs, 1e-3)
    found = package_check._figures_here(str(tmp_path / "m.onnx"), str(tmp_path / "golden.npz"), "detect", {}, {})
    [y] = found["outputs"]
    assert (y["length_mismatches"], y["cosine_samples"]) == (1, 2), found


QUIET_NET = """import torch, torch.nn as nn
def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU(), nn.Conv2d(8, 8, 3, bias=False), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 12 * 12, 10, bias=False)).eval()
"""


def test_check_leaves_out_the_golden_samples_the_run_left_out_as_quiet(tmp_path):
    """Validation samples 2..7 a fiftieth of the others: quiet against the validation set's median, left out of the
    mean cosine (0.99986), but not against the 8 golden samples' own median, 6 of them quiet: check counted them and
    failed the valid package ('these give 0.8777'). Check now leaves out the samples under the run's recorded floor;
    a floor edited to leave out more golden samples than the run's quiet_samples is untrue, and a package recording
    none (made before it was) is checked against the golden samples' own median, as it was."""
    (tmp_path / "net.py").write_text(QUIET_NET)
    rng = np.random.default_rng(0)
    val = rng.standard_normal((64, 3, 16, 16)).astype(np.float32)
    val[2:8] *= 0.02
    np.savez(tmp_path / "val.npz", x=val)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((64, 3, 16, 16)).astype(np.float32))
    result = cli(["export", f"{tmp_path / 'net.py'}:build", "--input", "x:1x3x16x16", "--calibration",
                  tmp_path / "cal.npz", "--validation", tmp_path / "val.npz", "--task", "other", "--no-bench",
                  "--out", tmp_path / "out", "--reduce-range", "true"])  # 7-bit weights: golden = the first 8
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "desktop-x86"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "chosen" not in manifest["golden"]
    [out] = manifest["parity"]["quantization"]["outputs"]
    assert out["quiet_samples"] >= 6 and out["quiet_floor"] > 0, out
    assert check(folder).exit_code == 0, check(folder).output

    def checked(edit):
        edited = json.loads(json.dumps(manifest))
        edit(edited["parity"]["quantization"]["outputs"][0])
        write_manifest(folder, edited)
        return check(folder, "--json")
    result = checked(lambda o: o.update(quiet_floor=1e30, cosine=1.0))
    assert result.exit_code == 1 and "quiet_floor 1e+30 leaves out 8 golden samples, more than its quiet_samples" \
        in result.output, result.output
    result = checked(lambda o: o.update(quiet_floor=1e30, quiet_samples=8, cosine=0.99999999))  # both fields edited
    assert result.exit_code == 1 and "leaves out every golden sample: its cosine cannot be re-checked" \
        in result.output, result.output
    result = checked(lambda o: o.update(quiet_floor=1e30, quiet_samples=40))
    assert result.exit_code == 1 and "quiet_samples 40 of 64: fewer than half" in result.output, result.output
    result = checked(lambda o: o.pop("quiet_floor"))  # an older package's: the golden samples' own median
    assert result.exit_code == 1 and "not reproduced on its 8 golden samples: output cosine" in result.output


def test_quiet_floors_of_a_hostile_manifest_are_read_within_bounds():
    """An output that is not a dict ('junk') stopped check with exit 5 ('str' object has no attribute 'get')."""
    from edgekit.package_check import FLOOR_MARGIN, _quiet_floors

    said = {"parity": {"quantization": {"outputs": ["junk", {"output": "y", "quiet_floor": 0.5},
                                                     {"output": "z", "quiet_floor": float("inf")}, {"output": 3}]}}}
    assert _quiet_floors(said) == {"y": 0.5 * FLOOR_MARGIN}


def _detector(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("val", "cal"):
        np.savez(tmp_path / f"{name}.npz", image=rng.standard_normal((16, 1, 3, 16, 16)).astype(np.float32))
    profile = (ROOT / "targets" / "desktop-x86.toml").read_text().replace('name = "desktop-x86"', 'name = "strict"')
    (tmp_path / "strict.toml").write_text(profile.replace("detection_agreement_min = 0.9",
                                                          "detection_agreement_min = 1.0"))
    return ["models:score_cut_detector", "--input", "image:1x3x16x16", "--calibration", tmp_path / "cal.npz",
            "--validation", tmp_path / "val.npz", "--task", "detect", "--no-bench", "-t", tmp_path / "strict.toml"]


def test_check_fails_a_failing_detector_whose_gate_was_deleted_its_matching_edited_or_its_record_stripped(tmp_path):
    """A strict profile fails quant_detection_agreement (0.97 < 1.0), and passed and verification are set true. The
    gate deleted (its outputs still recording the agreement under the limit): check passed it. So did a
    detection_match edited so that check could match nothing (every output 'carried'): roles are checked against the
    arrays now. So did the whole record stripped (detection_agreement, detection_rows, detection_match,
    length_mismatches): check's own golden samples keep different counts on most samples."""
    made = cli(["export", *_detector(tmp_path), "--out", tmp_path / "o", "--json"])
    assert made.exit_code == 1, made.output
    folder = tmp_path / "o" / "strict"
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["gates"] = [g for g in manifest["gates"] if g["name"] != "quant_detection_agreement"]
    manifest["passed"] = True
    for c in manifest["verification"]:
        c["passed"], c["message"] = True, ""
    write_manifest(folder, manifest)
    deleted = cli(["check", folder])
    assert deleted.exit_code == 1 and "gates quant_detection_agreement are missing" in deleted.output, deleted.output
    for o in manifest["parity"]["quantization"]["outputs"]:
        o["detection_match"]["role"] = "carried"
    write_manifest(folder, manifest)
    edited = cli(["check", folder])
    assert edited.exit_code == 1 and "output_0 detection_match: role 'carried', where its arrays make it 'box'" \
        in edited.output, edited.output
    for o in manifest["parity"]["quantization"]["outputs"]:
        for key in ("detection_agreement", "detection_rows", "detection_match", "unmatched_samples",
                    "length_mismatches", "length_example"):
            o.pop(key, None)
    write_manifest(folder, manifest)
    stripped = cli(["check", folder])
    assert stripped.exit_code == 1 and "gates quant_detection_agreement are missing" not in stripped.output, \
        stripped.output  # no record left asks for the gate: check's own golden samples tell
    assert "length_mismatches" in stripped.output and "golden samples" in stripped.output, stripped.output


def test_a_detection_rows_edited_past_any_possible_count_does_not_loosen_the_bound(tmp_path):
    """detection_rows is capped only at MOST_SHARE (10,000) x the golden samples' rows: edited to 1e9 over the
    manifest's 16 validation samples (at most 2 x MAX_DETECTION_ROWS a sample and output can be matched), a claimed
    agreement of 0.99999 where the golden samples give 0.96 passed check (refused at a bound of 2 x 2000 x 16 rows)."""
    args = _detector(tmp_path)[:-2] + ["-t", "desktop-x86"]
    made = cli(["export", *map(str, args), "--out", tmp_path / "o"])
    assert made.exit_code == 0, made.output
    folder = tmp_path / "o" / "desktop-x86"
    manifest = json.loads((folder / "manifest.json").read_text())
    for o in manifest["parity"]["quantization"]["outputs"]:
        o["detection_agreement"], o["detection_rows"] = 0.99999, 10 ** 9
    next(g for g in manifest["gates"] if g["name"] == "quant_detection_agreement")["value"] = 0.99999
    write_manifest(folder, manifest)
    checked = cli(["check", folder])
    assert checked.exit_code == 1, checked.output


def test_a_validation_count_edited_to_null_does_not_lift_the_cosine_bound(tmp_path):
    """parity.quantization.samples null (or "600") is read as no count (`_number` n/a): _at_best gives no bound, and
    every output's cosine and the quant_cosine gate edited to 1.0 passed check, while samples 600 fails them. Not in
    READ_TYPES (mistyped: exit 3), and absent it could still bound at MOST_SHARE x the golden samples."""
    made = cli(["export", DIGITS / "edgekit.toml", "-t", "desktop-x86", "--no-bench", "--out", tmp_path / "o"])
    assert made.exit_code == 0, made.output
    folder = tmp_path / "o" / "desktop-x86"
    manifest = json.loads((folder / "manifest.json").read_text())
    for o in manifest["parity"]["quantization"]["outputs"]:
        o["cosine"] = 1.0
    next(g for g in manifest["gates"] if g["name"] == "quant_cosine")["value"] = 1.0
    for samples, code, said in ((None, 3, "parity.quantization.samples is null, not a count"),
                                ("600", 3, "parity.quantization.samples is a string, not a count"),
                                (0, 3, "parity.quantization.samples is a number, not a count"),
                                ("absent", 1, "validation samples a golden one")):
        manifest["parity"]["quantization"]["samples"] = samples
        if samples == "absent":  # an older edgekit's package (this one's is rendered again, and needs the count)
            del manifest["parity"]["quantization"]["samples"]
            manifest["edgekit_version"] = edgekit.__version__ + "+older"
        write_manifest(folder, manifest)
        checked = cli(["check", folder])
        assert checked.exit_code == code and said in checked.output, checked.output


def test_a_timeout_in_a_bounded_child_stays_a_timeout(tmp_path, monkeypatch):
    """A StepTimeout raised in a bounded child (a run past --step-timeout) came back as a plain StageError: in check's
    parity child, a failed package (exit 1) instead of the user's limit (exit 4)."""
    from edgekit import bounded
    from edgekit.errors import StepTimeout

    (tmp_path / "slow_step.py").write_text(
        "from edgekit.errors import StepTimeout\n"
        "def run():\n"
        "    raise StepTimeout('onnxruntime run', 'a run of the model took longer than 0.05 s (--step-timeout)')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(tmp_path), os.environ.get("PYTHONPATH")))))
    with pytest.raises(StepTimeout, match=r"check failed: .*--step-timeout"):
        bounded.run("check", "slow_step:run", timeout=120)


def test_a_package_is_written_and_checked_under_an_ascii_locale(tmp_path):
    """Text files were written in the locale's encoding: under LC_ALL=C (no UTF-8 mode) report.md's "fp32→int8"
    ended the export with exit 5 (UnicodeEncodeError). edgekit writes and reads its own text files as UTF-8."""
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    out = tmp_path / "o"
    made = subprocess.run([sys.executable, "-m", "edgekit", "export", str(DIGITS / "edgekit.toml"), "-t", "desktop-x86",
                           "--no-bench", "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    assert "→" in (out / "desktop-x86" / "report.md").read_text(encoding="utf-8")
    checked = subprocess.run([sys.executable, "-m", "edgekit", "check", str(out)], env=env, capture_output=True,
                             text=True, timeout=600)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]


@pytest.mark.parametrize("count", [8.0, "8", True])
def test_a_golden_count_that_is_no_integer_is_refused(tmp_path, count):
    """A golden file's `count` of 8.0 or "8" was read as 8: edgekit writes an integer, and anything else is bad
    input, read from the headers (check) as from the data."""
    from edgekit import package, runner
    from edgekit.errors import InputError

    feeds = [{"x": np.full(3, i, np.float32)} for i in range(8)]
    entries = runner.golden_arrays(feeds, ["y"], [[f["x"] * 2] for f in feeds], {"y": 1e-3})
    np.savez(tmp_path / "golden.npz", **{**entries, "count": np.array(count)})
    for read in (package.read_golden, package.golden_declared):
        with pytest.raises(InputError, match="no integer `count`"):
            read(tmp_path / "golden.npz")


def test_a_length_mismatch_gate_edited_to_zero_over_recorded_mismatches_fails_check(tmp_path):
    """Outputs recording length_mismatches unmatched (held by quant_length_mismatches at most 0): the gate's value
    edited to 0 and passed, the mismatches the outputs record left as they were, passed check."""
    made = cli(["export", *map(str, _detector(tmp_path)), "--out", tmp_path / "o"])
    assert made.exit_code == 1, made.output
    folder = tmp_path / "o" / "strict"
    manifest = json.loads((folder / "manifest.json").read_text())
    outputs = manifest["parity"]["quantization"]["outputs"]
    for o in outputs:
        for key in ("detection_agreement", "detection_rows", "detection_match", "unmatched_samples"):
            o.pop(key, None)
    assert all(o["length_mismatches"] >= 1 for o in outputs), outputs
    manifest["gates"] = [g for g in manifest["gates"] if g["name"] != "quant_detection_agreement"] + [
        {"name": "quant_length_mismatches", "value": 0, "op": "<=", "limit": 0, "passed": True,
         "output": outputs[0]["output"]}]
    manifest["passed"] = True
    for v in manifest["verification"]:
        v["passed"], v["message"] = True, ""
    write_manifest(folder, manifest)
    checked = cli(["check", folder])
    assert checked.exit_code == 1 and "quant_length_mismatches 0 is not the most length_mismatches" \
        in checked.output, checked.output


@pytest.fixture(scope="module")
def runtime_style_ort(tmp_path_factory):
    """A small int8 conv model's Runtime-style .ort: its fused int8 kernels are saved optimisations, to replay."""
    from models import stem_cnn

    from edgekit import quantization
    from edgekit.config import InputSpec, QuantSettings
    from edgekit.onnx_export import export_torch

    tmp = tmp_path_factory.mktemp("replay")
    fp32 = export_torch(stem_cnn(), (InputSpec.parse("image:1x3x16x16"),), (), 17, tmp / "fp32.onnx")
    feeds = [{"image": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)} for i in range(8)]
    (tmp / "out").mkdir()
    int8 = quantization.quantize(fp32, tmp / "out" / "model.int8.onnx",
                                 quantization.plan(fp32, QuantSettings(), set()), feeds)
    return mobile.to_ort([int8], tmp / "out", "Runtime", "arm")["ort"][int8]


def _ops_as_run(path: Path, opts, where: Path) -> set[str]:
    """The op types of the graph a session of `path` with `opts` runs (onnxruntime saves it)."""
    opts.optimized_model_filepath = str(where)
    ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(str(where)).graph.node}


def test_the_runtime_contract_has_an_ort_replay_its_saved_optimisations(runtime_style_ort, tmp_path):
    """An app following the manifest's runtime section ran a Runtime-style .ort unfused (DequantizeLinear into float
    Conv; MobileNetV2-style 6.7x slower than its .onnx): onnxruntime replays saved optimisations only in a session
    with session.enable_saved_runtime_optimizations=1, which the contract did not set."""
    from edgekit import contract

    details = {"inputs": [{"name": "image", "shape": [1, 3, 16, 16], "dtype": "float32"}], "opset": 17,
               "ort_format": {"file": runtime_style_ort.name}}
    [s] = contract.runtime(config.load_target("android-arm64"), details, {}, ort.__version__)["sessions"]
    opts = ort.SessionOptions()
    for key, value in s["session"]["config_entries"].items():
        opts.add_session_config_entry(key, value)
    ops = _ops_as_run(runtime_style_ort, opts, tmp_path / "as_told.onnx")
    assert "QLinearConv" in ops and "Conv" not in ops, ops
    assert any("enable_saved_runtime_optimizations" in note for note in s["session"]["notes"])
    assert "session.enable_saved_runtime_optimizations=1" in mobile.ORT_BUILDS["Runtime"]
    [board] = contract.runtime(config.load_target("arm64-linux"), {**details, "ort_format": None}, {},
                               ort.__version__)["sessions"]  # an .onnx: nothing to replay
    assert "session.enable_saved_runtime_optimizations" not in board["session"]["config_entries"]


def test_golden_and_check_sessions_run_an_ort_as_the_app_is_told_to(runtime_style_ort, tmp_path):
    """golden.ort.npz and check's parity ran the .ort unfused, not as the device runs it."""
    from edgekit import runner
    from edgekit.runtime import session

    session(runtime_style_ort, optimized_path=str(tmp_path / "golden.onnx"))
    ops = {n.op_type for n in onnx.load(str(tmp_path / "golden.onnx")).graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops, ops
    # a device's or an emulator's runner (runner.session) makes its options the same way
    device = _ops_as_run(runtime_style_ort, runner.options(1, runner.model_entries(runtime_style_ort)),
                         tmp_path / "device.onnx")
    assert device == ops


def test_an_ort_onnxruntime_cannot_replay_ships_with_a_contract_that_loads_it(tmp_path):
    """onnxruntime 1.32 cannot replay the saved optimisations of a static-MatMul encoder's Runtime-style .ort (its own
    converter's too): with the replay entry the file does not load. It ships unfused, its session without the entry,
    said in a warning; golden outputs and check run it as that session does."""
    from conftest import TESTS

    out = tmp_path / "dist"
    result = cli([
        "export", f"{TESTS / 'models.py'}:tiny_encoder", "--input", "input_ids:Nx16:int64",
        "--input", "attention_mask:Nx16:int64", "--calibration", "random", "-t", "android-arm64", "--out", str(out),
        "--no-bench", "--json"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)["targets"]
    ort_format, [session] = m["ort_format"], m["runtime"]["sessions"]
    if ort_format["replays"]:
        pytest.skip("this onnxruntime replays the encoder's saved optimisations")
    assert "runtime optimization record" in ort_format["replay_error"]
    assert "session.enable_saved_runtime_optimizations" not in session["session"]["config_entries"]
    opts = ort.SessionOptions()
    for key, value in session["session"]["config_entries"].items():
        opts.add_session_config_entry(key, value)
    ort.InferenceSession(str(out / "android-arm64" / "model.int8.ort"), sess_options=opts,
                         providers=["CPUExecutionProvider"])  # loads as the app is told to
    assert any("cannot replay its saved runtime optimisations" in w for w in m["warnings"]), m["warnings"]
    assert check(out).exit_code == 0


def test_how_to_run_it_names_what_each_model_gives_back(packaged):
    """report.md's "How to run it" gave each runtime model's inputs but not its outputs: app code reading it could not
    name the tensor to fetch, nor see that the CoreML build's fp32 model gives a fixed batch of 1 where the int8
    model's is dynamic."""
    lines = (packaged[0] / "ios-arm64" / "report.md").read_text().split("## Gates")[0].splitlines()
    int8, coreml = (lines.index(next(ln for ln in lines if ln.startswith(f"- `{name}`")))
                    for name in ("model.int8.ort", "model.coreml.ort"))
    assert "  - output output: float32 Nx10" in lines[int8:coreml]
    assert "  - output output: float32 1x10" in lines[coreml:]


def test_out_uploaded_as_a_ci_artifact_without_hidden_files_passes_check(packaged, tmp_path):
    """actions/upload-artifact skips hidden files by default: an OUT made with --archive came back without edgekit's
    hidden ledger of its archives, and a tar of it failed check (exit 3, "not listed in its manifest.json") and an
    export into it was refused (exit 2, its archives "edgekit did not make"). The ledger has a visible name."""
    uploaded = tmp_path / "downloaded"
    shutil.copytree(packaged[0], uploaded, ignore=lambda folder, names: [n for n in names if n.startswith(".")])
    tgz = tmp_path / "downloaded.tgz"
    subprocess.run(["tar", "czf", tgz, "downloaded"], cwd=tmp_path, check=True)
    for path in (uploaded, tgz):
        result = check(path, "--json")
        assert result.exit_code == 0, result.output
        archives = {c["label"] for c in check_cases(result) if c["name"].startswith("archive") and c["passed"]}
        assert archives == {f"downloaded/{t}" if path == tgz else t for t in packaged[1]}, result.output
    export = ["export", str(DIGITS / "edgekit.toml"), "--archive", "--no-bench", "-t", "arm64-linux"]
    result = cli([*export, "--out", str(uploaded)])
    assert result.exit_code == 0, result.output  # its archives are edgekit's: replaced without --force
    assert sorted(p.name for p in uploaded.iterdir() if p.name.endswith(".json")) == ["edgekit-archives.json",
                                                                                      "edgekit-targets.json"]
    ledger = json.loads((uploaded / "edgekit-archives.json").read_text())
    assert set(ledger) == {f"{t}.tar.gz" for t in packaged[1]}, ledger
    assert check(uploaded).exit_code == 0


def test_check_stopped_by_its_step_timeout_still_lists_its_cases(packaged, tmp_path):
    """Past --step-timeout check ended (exit 4) with `cases: []` in --json and one "edgekit check" failure in JUnit:
    a CI page showed nothing of what ran. Now: the cases it ran, the one it stopped in (an error) and the ones it
    never reached (skipped, saying why)."""
    out = tmp_path / "dist"
    shutil.copytree(packaged[0], out, ignore=shutil.ignore_patterns("*.tar.gz"))
    model = out / "android-arm64" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1  # fails integrity: none of its models run, so check reaches arm64-linux's run
    model.write_bytes(bytes(data))
    junit = tmp_path / "check.xml"
    result = check(out, "--step-timeout", "0.001", "--json", "--junit", junit)  # too short for the child to start
    assert result.exit_code == 4, result.output
    said = "check of arm64-linux failed: took longer than 0.001 s (the limit; raise it with --step-timeout)"
    assert result.stderr == f"edgekit: error: {said}\n"
    document = json.loads(result.stdout)
    assert document["error"] == said and document["exit_code"] == 4
    state = {(c["target"], c["name"]): "error" if c["error"] else "skipped" if c["skipped"] else
             "passed" if c["passed"] else "failed" for c in document["cases"]}
    assert state[("android-arm64", "integrity")] == "failed"
    assert state[("arm64-linux", "integrity")] == "passed" and state[("arm64-linux", "gates")] == "skipped"
    assert state[("arm64-linux", "parity model.int8.onnx")] == "error"
    later = {k: v for k, v in state.items() if k[0] == "ios-arm64"}
    assert set(later.values()) == {"skipped"} and ("ios-arm64", "parity model.int8.ort") in later, later
    skipped = [c["message"] for c in document["cases"] if c["skipped"]]
    assert set(skipped) == {"not run: check ended when check of arm64-linux ran past --step-timeout"}, skipped
    suites = {s.get("name"): s for s in ElementTree.parse(junit).getroot()}
    assert [suites["arm64-linux"].get(k) for k in ("tests", "failures", "errors", "skipped")] == ["3", "0", "1", "1"]
    errored = suites["arm64-linux"].find("testcase[@name='parity model.int8.onnx']/error")
    assert errored is not None and errored.get("message") == said
    assert all(case.find("skipped") is not None for case in suites["ios-arm64"])
    root = ElementTree.parse(junit).getroot()
    assert int(root.get("tests")) == len(state) and int(root.get("skipped")) == len(skipped)


def test_a_labels_file_as_real_ones_are_is_read_and_control_characters_are_not(tmp_path):
    """ImageNet's synset files and spreadsheet exports hold tabs, class names a no-break space: isprintable() refused
    both ("line 1 is not printable text"). A control or format character inside a name (NUL, a lone CR, an escape, a
    bidi override) is still refused: an app or a terminal shows or runs it."""
    from edgekit.errors import UsageError
    from edgekit.package import read_labels

    names = ["n01440764\ttench", "crane\t", "Côte\u00a0d'Ivoire", "narrow\u202fspace"]
    (tmp_path / "real.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    assert read_labels(str(tmp_path / "real.txt")) == names
    for bad in ("nul\0", "cr\ralone", "esc\x1b[2J", "bidi\u202eevil", "\t\u00a0"):
        (tmp_path / "bad.txt").write_text(f"cat\n{bad}\ndog\n", encoding="utf-8")
        with pytest.raises(UsageError, match="line 2 is (not printable text|blank)"):
            read_labels(str(tmp_path / "bad.txt"))


PAGES_FIXTURE = Path(__file__).parent / "fixtures" / "pages"  # a digits manifest (with labels) and its pages
PAGES_RECORDED_AT = 4  # the package.PAGE_FORMAT the fixture's pages were rendered at


def test_a_change_to_how_the_pages_render_raises_page_format():
    """check holds a package's pages to this edgekit's rendering where the manifest's page_format is this one's: a
    change to report.md or report.html without a PAGE_FORMAT bump failed the packages of the same dev version as
    edited. A bump re-records the fixture's pages: `python tests/test_package.py` writes them."""
    import difflib

    from edgekit.package import PAGE_FORMAT, rendered_pages

    pages = rendered_pages(json.loads((PAGES_FIXTURE / "manifest.json").read_text(encoding="utf-8")))
    assert PAGE_FORMAT == PAGES_RECORDED_AT, (f"PAGE_FORMAT is {PAGE_FORMAT}, the fixture's pages are of format "
                                              f"{PAGES_RECORDED_AT}: record them (python tests/test_package.py)")
    for name, text in pages.items():
        recorded = (PAGES_FIXTURE / name).read_text(encoding="utf-8")
        changed = list(difflib.unified_diff(recorded.splitlines(), text.splitlines(), lineterm="", n=0))[:12]
        assert text == recorded, (f"{name} renders otherwise than at page format {PAGE_FORMAT}: raise "
                                  "package.PAGE_FORMAT and re-record the fixture (python tests/test_package.py)\n"
                                  + "\n".join(changed))


def _record_pages() -> None:
    """The fixture's pages rendered again, and PAGES_RECORDED_AT set to this PAGE_FORMAT: after a bump."""
    import re

    from edgekit.package import PAGE_FORMAT, rendered_pages

    pages = rendered_pages(json.loads((PAGES_FIXTURE / "manifest.json").read_text(encoding="utf-8")))
    for name, text in pages.items():
        (PAGES_FIXTURE / name).write_text(text, encoding="utf-8")
    me = Path(__file__)
    me.write_text(re.sub(r"(?m)^PAGES_RECORDED_AT = \d+", f"PAGES_RECORDED_AT = {PAGE_FORMAT}", me.read_text()))


def test_an_ort_larger_than_the_float_model_is_warned_of_with_both_sizes(tmp_path):
    """An android package's .ort (the file the runtime loads and the size budget holds) of a small policy was
    17,088 bytes beside a float model.onnx of 13,149, unsaid: only model.int8.onnx (7,908) was compared."""
    result = cli(["export", "models:state_mlp", "--input", "state:Nx6", "--calibration", "random", "--no-bench",
                  "--target", "android-arm64", "--target", "desktop-x86", "--out", tmp_path / "o"])
    assert result.exit_code == 0, result.output
    tdir = tmp_path / "o" / "android-arm64"
    ort, fp32 = ((tdir / name).stat().st_size for name in ("model.int8.ort", "model.onnx"))
    assert ort > fp32 > (tdir / "model.int8.onnx").stat().st_size
    said = ("model.int8.ort, the file the runtime loads (the size budget's), is larger than the float model in the "
            "ORT format (")
    assert f"android-arm64: {said}{ort:,} vs " in result.output
    [warned] = [w for w in json.loads((tdir / "manifest.json").read_text())["warnings"] if w.startswith(said)]
    assert f"bytes; model.onnx {fp32:,}): " in warned and "ship the float model" in warned, warned
    assert "the file the runtime loads" not in (tmp_path / "o" / "desktop-x86" / "manifest.json").read_text()


@pytest.mark.parametrize("hidden", [52, 6])
def test_an_ort_warning_needs_the_float_ort_smaller_and_is_not_said_twice(tmp_path, hidden):
    """A 52-wide policy head's int8 .ort (17,568 bytes) was warned of beside model.onnx (14,973), when the float model
    in the ORT format the runtime loads is larger (18,424): int8 saved size there. A 6-wide one's was warned of twice,
    beside model.int8.onnx's own warning (3,591 vs 1,185 bytes), saying the same."""
    (tmp_path / "head.py").write_text(
        "import torch\n\n\ndef build():\n    torch.manual_seed(0)\n    return torch.nn.Sequential(torch.nn.Linear("
        f"6, {hidden}), torch.nn.ReLU(), torch.nn.Linear({hidden}, {hidden}), torch.nn.ReLU(), "
        f"torch.nn.Linear({hidden}, 6))\n")
    result = cli(["export", f"{tmp_path / 'head.py'}:build", "--input", "state:Nx6", "--calibration", "random",
                  "--no-bench", "--target", "android-arm64", "--out", tmp_path / "o", "--json"])
    assert result.exit_code == 0, result.output
    tdir = tmp_path / "o" / "android-arm64"
    ort, fp32 = ((tdir / name).stat().st_size for name in ("model.int8.ort", "model.onnx"))
    assert ort > fp32, (ort, fp32)  # the old comparison warned
    warnings = json.loads(result.stdout)["targets"][0]["warnings"]
    sizes = [w for w in warnings if "the file the runtime loads" in w or w.startswith("model.int8.onnx is not smaller")]
    assert len(sizes) == (hidden == 6), sizes


if __name__ == "__main__":
    _record_pages()
