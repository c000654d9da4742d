"""`edgekit check` holds manifest.json's claims to what the package's own files decide: anyone sending a package can
re-hash its files (and the size gate), so a hash that matches proves nothing about what the files are."""
import json
import shutil

import numpy as np
import pytest
from conftest import DIGITS, cli, rehash, write_manifest

import edgekit
from edgekit import mobile, parity

TARGETS = ["android-arm64", "arm64-linux", "desktop-x86"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("claims") / "dist"
    args = ["export", str(DIGITS / "edgekit.toml"), "--out", str(out), "--no-bench"]
    result = cli([*args, *(a for t in TARGETS for a in ("-t", t))])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    """A package whose model takes raw uint8 pixels (image_uint8: the normalisation folded in)."""
    work = tmp_path_factory.mktemp("camera")
    rng = np.random.default_rng(0)
    for name, n in (("cal", 40), ("val", 12)):
        np.savez(work / f"{name}.npz", image=rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8))
    report = edgekit.export("models:small_cnn", inputs=["image:Nx3x16x16:uint8"], calibration=work / "cal.npz",
                            validation=work / "val.npz", targets=["desktop-x86"], out=work / "out", no_bench=True,
                            image_uint8={"input": "image", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    assert report.passed, report.targets["desktop-x86"].failures()
    return work / "out" / "desktop-x86"


def copy_of(out, tmp_path, target):
    return shutil.copytree(out / target, tmp_path / target)


def resign(folder, **edits):
    """What an adversary does after editing a package: the manifest's edits, every listed file re-hashed, and the
    size gate set to the shipped file's size."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(edits)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    rehash(folder, *manifest["files"])
    manifest = json.loads((folder / "manifest.json").read_text())
    shipped = manifest["runtime"]["sessions"][0]["model"]
    for gate in (g for g in manifest["gates"] if g["name"] == "size_mb"):
        gate["value"] = manifest["sizes"][shipped] / 1e6
    (folder / "manifest.json").write_text(json.dumps(manifest))


def forge(folder, **edits):
    """resign, and the reports rendered again from the edited manifest, as edgekit renders them: the forgery's one
    tell is then the claim under test."""
    resign(folder, **edits)
    write_manifest(folder, json.loads((folder / "manifest.json").read_text()))


def integrity(folder) -> str:
    """check's integrity message, asserting check failed (exit 1) on it."""
    result = cli(["check", folder, "--json"])
    assert result.exit_code == 1, result.output
    [case] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "integrity"]
    assert not case["passed"], case
    return case["message"]


def test_the_packages_edgekit_writes_pass(digits, camera):
    for folder in (digits, camera):
        result = cli(["check", folder])
        assert result.exit_code == 0, result.output


def test_the_fp32_model_over_the_int8_one_fails(digits, tmp_path):
    folder = copy_of(digits, tmp_path, "android-arm64")
    shutil.copyfile(folder / "model.onnx", folder / "model.int8.onnx")
    resign(folder)
    assert ("model.int8.onnx runs no Conv, ConvTranspose, Gemm or MatMul in int8 (an integer op, or one reading its "
            "input and weight through DequantizeLinear), the manifest says it is static QDQ int8") in integrity(folder)


def test_an_fp32_ort_over_the_int8_ort_fails(digits, tmp_path):
    folder = copy_of(digits, tmp_path, "android-arm64")
    made = mobile.to_ort([folder / "model.onnx"], tmp_path, "Runtime", "arm")["ort"][folder / "model.onnx"]
    shutil.copyfile(made, folder / "model.int8.ort")
    resign(folder)
    assert "model.int8.ort runs no Conv, ConvTranspose, Gemm or MatMul in int8" in integrity(folder)


def test_another_targets_int8_model_fails_naming_each_contradiction(digits, tmp_path):
    folder = copy_of(digits, tmp_path, "android-arm64")
    shutil.copyfile(digits / "desktop-x86" / "model.int8.onnx", folder / "model.int8.onnx")
    resign(folder)
    said = integrity(folder)
    for part in ("model.int8.onnx's metadata says edgekit_target 'desktop-x86', the manifest 'android-arm64'",
                 "model.int8.onnx's weights are int8, the manifest's quantization says weight_type uint8",
                 "weight(s) quantized per channel, the manifest's quantization says per_channel false",
                 "inputs give 'image' as float32 1x1x8x8, model.int8.onnx takes float32 ?x1x8x8",
                 "fixed_input_shapes gives 'image' 1x1x8x8, model.int8.onnx takes ?x1x8x8"):
        assert part in said, said


@pytest.mark.parametrize("edit, said", [
    (lambda m: {"opset": 16}, "model.onnx is opset 17, the manifest says opset 16"),
    (lambda m: {"quantization": {**m["quantization"], "per_channel": False, "weight_type": "uint8"}},
     "model.int8.onnx's weights are int8, the manifest's quantization says weight_type uint8"),
    (lambda m: {"quantization": {**m["quantization"], "activation_type": "int8"}},
     "model.int8.onnx's activations are quantized to uint8, the manifest's quantization says activation_type int8"),
    (lambda m: {"quantization": {**m["quantization"], "per_channel": False}},
     "weight(s) quantized per channel, the manifest's quantization says per_channel false"),
    (lambda m: {"quantization": {**m["quantization"], "per_channel": True}},
     "model.int8.onnx has 2 Conv weight(s) quantized per tensor, the manifest's quantization says per_channel true"),
], ids=["opset", "weight_type", "activation_type", "per_channel", "per_tensor"])
def test_manifest_fields_the_models_contradict_fail(digits, tmp_path, edit, said):
    folder = copy_of(digits, tmp_path, "arm64-linux" if "per tensor" not in said else "android-arm64")
    resign(folder, **edit(json.loads((folder / "manifest.json").read_text())))
    assert said in integrity(folder)


@pytest.mark.parametrize("field, value, said", [
    ("shape", ["N", 1, 8, 8], "runtime session model.int8.ort's inputs give 'image' as float32 Nx1x8x8, "
                              "model.int8.ort takes float32 1x1x8x8"),
    ("dtype", "uint8", "runtime session model.int8.ort's inputs give 'image' as uint8 1x1x8x8, model.int8.ort takes "
                       "float32 1x1x8x8"),
    ("layout", "NHWC", "runtime session model.int8.ort's inputs give 'image' layout 'NHWC', model.int8.ort's input "
                       "contract None"),
], ids=["shape", "dtype", "layout"])
def test_runtime_session_inputs_the_model_contradicts_fail(digits, tmp_path, field, value, said):
    """What report.md tells an app to feed: its dtype, shape and layout are the shipped model's."""
    folder = copy_of(digits, tmp_path, "android-arm64")
    runtime = json.loads((folder / "manifest.json").read_text())["runtime"]
    runtime["sessions"][0]["inputs"][0][field] = value
    resign(folder, runtime=runtime)
    assert said in integrity(folder)


@pytest.mark.parametrize("target", ["android-arm64", "desktop-x86"])
def test_an_older_onnxruntime_minimum_than_made_the_package_fails(digits, tmp_path, target):
    """The release a build engineer builds for the package (a minimal build loads an .ort only in the release that
    wrote it): an older `minimum` edited in and re-hashed passed."""
    folder = copy_of(digits, tmp_path, target)
    manifest = json.loads((folder / "manifest.json").read_text())
    runtime = manifest["runtime"]
    runtime["onnxruntime"]["minimum"] = "1.20.0"
    resign(folder, runtime=runtime)
    made = manifest["versions"]["onnxruntime"]
    said = integrity(folder)
    assert f"runtime.onnxruntime.minimum is '1.20.0', not the release that made and checked the package ({made})" \
        in said, said


def test_image_uint8_removed_from_a_raw_pixels_package_fails(camera, tmp_path):
    folder = shutil.copytree(camera, tmp_path / "desktop-x86")
    resign(folder, image_uint8=None)
    assert ("image_uint8 is null, model.int8.onnx's input contract says 'image' takes raw uint8 pixels "
            "(normalisation folded in)") in integrity(folder)


@pytest.mark.parametrize("claim", [False, "yes"])
def test_image_uint8_nodes_in_int8_edited_fails(camera, tmp_path, claim):
    """nodes_in_int8 (the normalisation still runs in the int8 model) was not held: saying the raw pixels feed its
    first quantized op, where its Cast/Sub/Mul stay float, passed check with the reports rendered again."""
    folder = shutil.copytree(camera, tmp_path / "desktop-x86")
    pixels = json.loads((folder / "manifest.json").read_text())["image_uint8"]
    assert pixels["nodes_in_int8"] is True
    forge(folder, image_uint8={**pixels, "nodes_in_int8": claim})  # report.html's "Kept in float" rendered again
    assert (f"image_uint8.nodes_in_int8 is {json.dumps(claim)}, model.int8.onnx still normalises 'image' in float "
            "before quantizing it") in integrity(folder)


def test_image_uint8_nodes_in_int8_deleted_or_both_keys_deleted_fails(camera, tmp_path):
    """edgekit writes image_uint8's nodes and nodes_in_int8 together: the key alone deleted (report.html then takes
    the normalisation to run in float, its default) passed; so did both deleted (an older edgekit's manifest lacked
    them: refused by its version now, test_package's older-edgekit test)."""
    folder = shutil.copytree(camera, tmp_path / "desktop-x86")
    pixels = json.loads((folder / "manifest.json").read_text())["image_uint8"]
    forge(folder, image_uint8={k: v for k, v in pixels.items() if k != "nodes_in_int8"})
    assert ("image_uint8 lists its nodes without nodes_in_int8 (edgekit writes both), model.int8.onnx still "
            "normalises 'image' in float before quantizing it") in integrity(folder)
    forge(folder, image_uint8={k: v for k, v in pixels.items() if k not in ("nodes", "nodes_in_int8")})
    assert ("image_uint8 lists neither its nodes nor nodes_in_int8, which edgekit writes with it (input 'image')"
            in integrity(folder))


def test_a_required_operators_line_deleted_fails(digits, tmp_path):
    """A minimal build made by the config would lack the fused kernels the .ort's saved optimisations use."""
    folder = copy_of(digits, tmp_path, "android-arm64")
    config = folder / "required_operators.config"
    config.write_text("".join(ln for ln in config.read_text().splitlines(True) if not ln.startswith("com.microsoft")))
    resign(folder)
    said = integrity(folder)
    assert "required_operators.config is not what edgekit writes for model.int8.ort: it lacks" in said, said
    assert "com.microsoft;1;QLinearConv" in said, said


def test_an_assembly_file_giving_another_sha256_fails(digits, tmp_path):
    """model_data.S defines edgekit_model_sha256 itself (model_data.h's macro was checked, the .S's symbol not)."""
    folder = copy_of(digits, tmp_path, "arm64-linux")
    assembly = folder / "model_data.S"
    digest = json.loads((folder / "manifest.json").read_text())["files"]["model.int8.onnx"]
    assembly.write_text(assembly.read_text().replace(f'.asciz "{digest}"', f'.asciz "{"0" * 64}"'))
    resign(folder)
    assert f"model_data.S gives edgekit_model_sha256 '{'0' * 64}', model.int8.onnx's sha256 is {digest}" in \
        integrity(folder)


def test_a_hostile_manifests_claims_fail_in_one_short_line(digits, tmp_path):
    """Names and shapes from others: a newline faked a PASS line, and 100,000 dims were one huge message."""
    folder = copy_of(digits, tmp_path, "android-arm64")
    runtime = json.loads((folder / "manifest.json").read_text())["runtime"]
    runtime["sessions"][0]["inputs"] = [{"name": "image\nPASS  all", "shape": [1] * 100_000, "dtype": "float32\n"},
                                        {"name": "image", "shape": [1] * 100_000, "dtype": "float32\n"}]
    resign(folder, runtime=runtime)
    said = integrity(folder)
    assert "\n" not in said and len(said) < 2000, said
    assert "'image\\nPASS  all', which model.int8.ort does not take (it takes ['image'])" in said, said
    assert "give 'image' as float32? 1x1x1x1x1x1x1x1x..., model.int8.ort takes float32 1x1x8x8" in said, said


@pytest.mark.parametrize("edit", [
    '<meta content="0;url=https://evil.example/" http-equiv="refresh">',  # attribute order: CSP does not stop it
    '<table background="https://evil.example/pixel.png"><tr><td>x</td></tr></table>',
    '<svg><a><animate attributeName="href" values="javascript&#58;alert(1)"/><text>x</text></a></svg>',
])
def test_a_page_edited_to_redirect_or_fetch_without_its_policy_fails(digits, tmp_path, edit):
    """report.html with its Content-Security-Policy removed and what a pattern over the text missed (a refresh with its
    attributes the other way round, a background, an animated href), re-hashed, passed check: the page is parsed and
    held to the tags and attributes edgekit writes, its policy exactly as written."""
    from edgekit.report_html import POLICY

    folder = copy_of(digits, tmp_path, "desktop-x86")
    page = folder / "report.html"
    text = page.read_text(encoding="utf-8")
    policy = f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
    assert policy in text
    page.write_text(text.replace(policy, "").replace("</body>", edit + "</body>"), encoding="utf-8")
    resign(folder)
    assert "report.html" in integrity(folder)


@pytest.mark.parametrize("page,said", [
    ("<a " * 20_000, "'<a <a <a "),  # 60 KB: the parser took 36 s (120 KB: 116 s), in check's own process
    ("<![<![<![<![", "'<![<![<![<!["),  # the parser's AssertionError: exit 5
    ("<!--" * 40_000, "'<!--<!--<!--"),  # 160 KB of comments it never closes: 19 s
], ids=["unclosed-tags", "marked-section", "unclosed-comments"])
def test_a_page_the_html_parser_chokes_on_fails_integrity_at_once(digits, tmp_path, page, said):
    """report.html is held to the markup edgekit writes before html.parser reads it: a page of unclosed tags from
    a package's sender took the parser time quadratic in its size, a marked section raised from inside it."""
    import time

    folder = copy_of(digits, tmp_path, "desktop-x86")
    (folder / "report.html").write_text(page, encoding="utf-8")
    resign(folder)
    start = time.perf_counter()
    message = integrity(folder)
    assert f"report.html: it holds \"{said}" in message and time.perf_counter() - start < 10, message


def test_an_ort_naming_one_node_over_and_over_is_read_within_its_size(digits, tmp_path):
    """check reads an .ort's nodes in its own process, unbounded: 3,000 entries naming one node of 3,000 inputs
    (24 KB) were 9 million names (30 s, 0.5 GB; 320 KB would take an hour and 60 GB). Its names are held to its
    size; the file is then left to its parity case, as one that cannot be parsed is."""
    import time

    import attacks

    from edgekit.model_claims import read_ort

    attacks.ort_naming_one_node_over_and_over(tmp_path / "bomb.ort", 3000)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="its entries name the same parts over and over"):
        read_ort(tmp_path / "bomb.ort")
    assert time.perf_counter() - start < 5
    assert len(read_ort(digits / "android-arm64" / "model.int8.ort").nodes) > 5  # a real one's are all read
    folder = copy_of(digits, tmp_path, "android-arm64")
    attacks.ort_naming_one_node_over_and_over(folder / "model.int8.ort", 3000)
    resign(folder)
    start = time.perf_counter()
    assert "parity model.int8.ort" in cli(["check", folder]).output and time.perf_counter() - start < 20


def test_a_conversion_past_the_step_timeout_is_exit_4_not_a_failed_package(digits):
    """required_operators.config is made again in a bounded child under --step-timeout: its StepTimeout was caught
    as "cannot be made again", and an honest package failed integrity (exit 1)."""
    result = cli(["check", digits / "android-arm64", "--step-timeout", "0.05"])
    assert result.exit_code == 4, result.output


def test_escaped_text_naming_url_or_javascript_is_no_active_content(digits):
    """A pattern over the page matched its escaped text too: an honest package whose kept-float node is
    `relu_url(skip)` (an .onnx from another exporter, --exclude-nodes) failed check ("it holds 'url('")."""
    import html

    from edgekit import report_html

    page = (digits / "desktop-x86" / "report.html").read_text(encoding="utf-8")
    for text in ("relu_url(skip)", "javascript:decoder/MatMul", "tokens@import", "<script>x</script>"):
        assert report_html.active_content(page.replace("</body>", f"<p>{html.escape(text)}</p></body>")) is None


def test_a_qoperator_packages_weight_claims_edited_fail(tmp_path):
    """The weights were read through DequantizeLinear alone: a QOperator package (QLinearConv's int8 per-channel
    weights) re-hashed to say weight_type uint8, per_channel false passed check."""
    out = tmp_path / "dist"
    made = cli(["export", DIGITS / "edgekit.toml", "--out", out, "--no-bench", "-t", "desktop-x86",
                "--format", "QOperator"])
    assert made.exit_code == 0, made.output
    folder = out / "desktop-x86"
    assert cli(["check", folder]).exit_code == 0
    quant = json.loads((folder / "manifest.json").read_text())["quantization"]
    assert (quant["format"], quant["weight_type"], quant["per_channel"]) == ("QOperator", "int8", True), quant
    resign(folder, quantization={**quant, "weight_type": "uint8", "per_channel": False})
    said = integrity(folder)
    assert "weights are int8, the manifest's quantization says weight_type uint8" in said, said
    assert "quantized per channel, the manifest's quantization says per_channel false" in said, said


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory):
    """A dynamic-mode package (DynamicQuantizeLinear, ConvInteger and MatMulInteger with int8 weights)."""
    out = tmp_path_factory.mktemp("dynamic") / "dist"
    made = cli(["export", DIGITS / "edgekit.toml", "--out", out, "--no-bench", "-t", "desktop-x86",
                "--quant-mode", "dynamic"])
    assert made.exit_code == 0, made.output
    return out / "desktop-x86"


@pytest.mark.parametrize("edit, said", [
    ({"weight_type": "uint8"},
     "model.int8.onnx's weights are int8, the manifest's quantization says weight_type uint8"),
    ({"per_channel": False}, "model.int8.onnx has 2 weight(s) quantized per channel, the manifest's quantization says "
                             "per_channel false"),
    ({"activation_type": "int8"}, "model.int8.onnx's activations are quantized to uint8, the manifest's quantization "
                                  "says activation_type int8"),
], ids=["weight_type", "per_channel", "activation_type"])
def test_a_dynamic_packages_weight_claims_edited_fail(dynamic, tmp_path, edit, said):
    """The weight claims were held in static mode alone: a dynamic package (ConvInteger's and MatMulInteger's int8
    weights) re-hashed to say weight_type uint8 passed check."""
    assert cli(["check", dynamic]).exit_code == 0
    folder = shutil.copytree(dynamic, tmp_path / "desktop-x86")
    quant = json.loads((folder / "manifest.json").read_text())["quantization"]
    assert (quant["mode"], quant["weight_type"], quant["activation_type"]) == ("dynamic", "int8", "uint8"), quant
    forge(folder, quantization={**quant, **edit})
    assert said in integrity(folder)


def _fp32_with_a_quantize_linear(model, reads_it: bool):
    """The fp32 model with one QuantizeLinear of its input: read by nothing, or dequantized into the first Conv (its
    weight float)."""
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    x = graph.input[0].name
    graph.initializer.extend([helper.make_tensor("forged_scale", TensorProto.FLOAT, [], [1 / 64]),
                              helper.make_tensor("forged_zero_point", TensorProto.UINT8, [], [128])])
    nodes = [helper.make_node("QuantizeLinear", [x, "forged_scale", "forged_zero_point"], ["forged_q"])]
    if reads_it:
        nodes.append(helper.make_node("DequantizeLinear", ["forged_q", "forged_scale", "forged_zero_point"],
                                      ["forged"]))
        conv = next(n for n in graph.node if n.op_type == "Conv")
        conv.input[0] = "forged"
    nodes += graph.node
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("reads_it", [False, True], ids=["dangling", "into_float_weights"])
def test_an_fp32_model_with_a_lone_quantize_linear_fails(digits, tmp_path, reads_it):
    """Any QuantizeLinear made a model "quantized": the fp32 model with one whose output nothing reads (or only a
    Conv with float weights, through a DequantizeLinear) over model.int8.onnx, re-hashed, passed check. An int8 model
    runs a compute node in int8."""
    import onnx

    folder = copy_of(digits, tmp_path, "desktop-x86")
    onnx.save(_fp32_with_a_quantize_linear(onnx.load(folder / "model.onnx"), reads_it), folder / "model.int8.onnx")
    forge(folder)
    assert ("model.int8.onnx runs no Conv, ConvTranspose, Gemm or MatMul in int8 (an integer op, or one reading its "
            "input and weight through DequantizeLinear), the manifest says it is static QDQ int8") in integrity(folder)


def test_a_graph_input_the_manifest_does_not_name_fails(digits, tmp_path):
    """Each input the manifest names was held to the model, not the other way round: model.int8.onnx taking another
    input besides (a tensor an app is never told to feed), re-hashed, passed check."""
    import onnx
    from onnx import TensorProto, helper

    folder = copy_of(digits, tmp_path, "desktop-x86")
    model = onnx.load(folder / "model.int8.onnx")
    model.graph.input.append(helper.make_tensor_value_info("unlisted", TensorProto.FLOAT, [1, 4]))
    model.graph.node.append(helper.make_node("Relu", ["unlisted"], ["unlisted_relu"]))
    model.graph.output.append(helper.make_tensor_value_info("unlisted_relu", TensorProto.FLOAT, [1, 4]))
    onnx.save(model, folder / "model.int8.onnx")
    forge(folder)
    said = integrity(folder)
    assert said.count("'unlisted'") == 1, said
    assert "model.int8.onnx takes input 'unlisted', which inputs do not name (they name ['image'])" in said, said


def _figure_changed(text: str) -> str:
    """report.md with the quant_cosine gate's value another figure (its last digit changed)."""
    row = next(line for line in text.splitlines() if line.startswith("| quant_cosine on "))
    cells = row.split(" | ")
    cells[1] = cells[1][:-1] + str((int(cells[1][-1]) + 1) % 10)
    return text.replace(row, " | ".join(cells))


@pytest.mark.parametrize("page, edit", [
    ("report.md", lambda text: text.replace("**PASSED**", "**FAILED**")),
    ("report.md", lambda text: text.replace("| pass |", "| **FAIL** |", 1)),
    ("report.md", _figure_changed),
    ("report.html", lambda text: text.replace('<span class="pass">PASSED</span>', '<span class="fail">FAILED</span>')),
])
def test_a_report_edited_and_rehashed_fails_as_not_what_the_manifest_renders(digits, tmp_path, page, edit):
    """report.md (and report.html) edited to another verdict or figure and re-hashed in the manifest passed check:
    nothing held them to the manifest they are rendered from. check renders them again from it, byte for byte."""
    folder = copy_of(digits, tmp_path, "desktop-x86")
    text = (folder / page).read_text(encoding="utf-8")
    assert edit(text) != text
    (folder / page).write_text(edit(text), encoding="utf-8")
    resign(folder)
    said = [line for line in integrity(folder).split("; manifest.json says of ") if page in line]
    assert len(said) == 1 and f"where edgekit {edgekit.__version__} renders" in said[0], said


def test_a_report_made_by_another_edgekit_version_is_not_rendered_again(digits, tmp_path):
    """Another version renders its own way: a package it made (its report edited too) is not held to this one's."""
    folder = copy_of(digits, tmp_path, "desktop-x86")
    (folder / "report.md").write_text((folder / "report.md").read_text() + "\nedited\n")
    resign(folder, edgekit_version=edgekit.__version__ + "+other")
    result = cli(["check", folder])
    assert result.exit_code == 0, result.output  # but said: a version edited in is how a forged report escapes
    assert (f"integrity: report.md and report.html not compared with the manifest: made by edgekit "
            f"{edgekit.__version__}+other, this is {edgekit.__version__}") in result.output, result.output


def test_pages_of_another_page_format_are_not_compared_but_still_read_for_scripts(digits, tmp_path):
    """A package made earlier by this same dev version failed check once report.md gained a line: its pages were
    held to this build's rendering. The manifest's page_format says how they were rendered: another one (or none, made
    before it) passes saying "not compared"; an edited page of this format still fails, and report.html holding a
    script fails whatever its format."""
    from edgekit.package import PAGE_FORMAT

    for made in (None, PAGE_FORMAT - 1, PAGE_FORMAT):
        folder = copy_of(digits, tmp_path / str(made), "desktop-x86")
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["page_format"] == PAGE_FORMAT  # export writes it
        manifest.pop("page_format") if made is None else manifest.update(page_format=made)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        text = (folder / "report.md").read_text(encoding="utf-8")
        (folder / "report.md").write_text(text.replace("\n\n", "\n", 1), encoding="utf-8")  # rendered otherwise
        resign(folder)
        result = cli(["check", folder, "--json"])
        [case] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "integrity"]
        if made == PAGE_FORMAT:
            assert result.exit_code == 1 and "report.md: its line" in case["message"], result.output
            continue
        assert result.exit_code == 0 and case["passed"], result.output
        said = "none recorded" if made is None else str(made)
        assert case["message"] == (f"report.md and report.html not compared with the manifest: their page format is "
                                   f"{said}, this edgekit {edgekit.__version__} renders format {PAGE_FORMAT}"), case
        page = (folder / "report.html").read_text(encoding="utf-8")
        (folder / "report.html").write_text(page.replace("</body>", "<script>steal()</script></body>"), "utf-8")
        resign(folder)
        assert "of report.html: it holds '<script>', which edgekit's page never does" in integrity(folder)


@pytest.mark.parametrize("edits", [
    lambda m: m["accuracy"].update(fp32="high"),
    lambda m: m.update(warnings=7),
    lambda m: m.update(latency_1_thread="fast"),
    lambda m: m.update(model="net.py"),
])
def test_a_manifest_the_reports_cannot_be_rendered_from_is_bad_input(digits, tmp_path, edits):
    """Rendered from the manifest, a mistyped field it reads is bad input (exit 3) naming the manifest, not a
    traceback (exit 5)."""
    folder = copy_of(digits, tmp_path, "desktop-x86")
    manifest = json.loads((folder / "manifest.json").read_text())
    edits(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result = cli(["check", folder])
    assert result.exit_code == 3 and "manifest.json" in result.stderr, result.output


def test_a_report_dropped_from_the_manifest_fails_integrity(digits, tmp_path):
    """Every package hashes its reports: one dropped from the files, then edited, is a file the manifest does not
    list."""
    folder = copy_of(digits, tmp_path, "desktop-x86")
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in ("report.md", "report.html"):
        del manifest["files"][name], manifest["sizes"][name]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "report.md").write_text((folder / "report.md").read_text().replace("**PASSED**", "**FAILED**"))
    (folder / "report.html").unlink()
    assert "files not in the manifest: report.md" in integrity(folder)


def test_reports_dropped_from_the_manifest_and_deleted_fail_integrity_whatever_the_page_format(digits, tmp_path):
    """Every package hashes both reports: dropped from the files and deleted, with page_format edited so that check
    does not render them, the package passed (the removed unhashed-reports allowance left them optional)."""
    folder = copy_of(digits, tmp_path, "desktop-x86")
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in ("report.md", "report.html"):
        del manifest["files"][name], manifest["sizes"][name]
        (folder / name).unlink()
    manifest["page_format"] = 2
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert "the manifest does not hash report.md or report.html, which every package ships" in integrity(folder)


@pytest.fixture(scope="module")
def merged_classes(tmp_path_factory):
    """Task auto on unlabelled data: a 10-class head whose classes int8 merges fails top1_agreement."""
    work = tmp_path_factory.mktemp("merged")
    np.savez(work / "x.npz", x=np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32))
    result = cli(["export", "models:near_tie_logits", "--input", "x:Nx16", "--calibration", work / "x.npz", "-t",
                  "desktop-x86", "--no-bench", "--out", work / "out"])
    assert result.exit_code == 1, result.output
    return work / "out" / "desktop-x86"


@pytest.mark.parametrize("forgery, said", [
    (lambda g: [], "top1_agreement is missing"),
    (lambda g: [dict(g, value=None, passed=True, skipped="task auto with no labels: ..., but it is of 6 sample(s)")],
     "top1_agreement is skipped, where the manifest records 'output'"),
    (lambda g: [dict(g, value=0.97, passed=True)], "top1_agreement 0.97 is not 'output'")])
def test_task_autos_failed_top1_deleted_or_skipped_fails(merged_classes, tmp_path, forgery, said):
    """The failed top1_agreement of unlabelled class scores (task auto, recorded as other) deleted, marked skipped or
    raised, the export's own verdict made pass: check passed it, as only task classify required the gate."""
    folder = shutil.copytree(merged_classes, tmp_path / "p")
    manifest = json.loads((folder / "manifest.json").read_text())
    gates = [h for g in manifest["gates"] for h in (forgery(g) if g["name"] == "top1_agreement" else [g])]
    verification = [dict(c, passed=True) for c in manifest["verification"]]
    forge(folder, gates=gates, passed=True, verification=verification)
    result = cli(["check", folder, "--json"])
    assert result.exit_code == 1, result.output
    [case] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "gates"]
    assert said in case["message"], case


def test_task_autos_top1_skipped_on_few_samples_passes(tmp_path):
    """The same merged head validated on 6 samples: top1_agreement is skipped (fewer than FEW_SAMPLES), its figure
    recorded, and check reads that skip as the figures give it."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((200, 16)).astype(np.float32))
    np.savez(tmp_path / "val.npz", x=rng.standard_normal((6, 16)).astype(np.float32))
    result = cli(["export", "models:near_tie_logits", "--input", "x:Nx16", "--calibration", tmp_path / "cal.npz",
                  "--validation", tmp_path / "val.npz", "-t", "desktop-x86", "--no-bench", "--out", tmp_path / "o"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "o" / "desktop-x86" / "manifest.json").read_text())
    [gate] = [g for g in manifest["gates"] if g["name"] == "top1_agreement"]
    assert gate["passed"] and "fewer than 8" in gate["skipped"], gate
    assert manifest["parity"]["quantization"]["outputs"][0]["top1_agreement"] < 0.95
    assert cli(["check", tmp_path / "o" / "desktop-x86"]).exit_code == 0


def _near_tied(work, task: str):
    """The near-tied head whose classes int8 merges, one sample a feed (x:1x16: each validation sample one row),
    validated on 40 samples (top-1 0.1), its 8 golden samples among them with 7 classes int8 flips by a clear fp32
    margin: a failed package."""
    rng = np.random.default_rng(0)
    np.savez(work / "cal.npz", x=rng.standard_normal((200, 16)).astype(np.float32))
    np.savez(work / "val.npz", x=rng.standard_normal((40, 16)).astype(np.float32))
    result = cli(["export", "models:near_tie_logits", "--input", "x:1x16", "--calibration", work / "cal.npz",
                  "--validation", work / "val.npz", "--task", task, "-t", "desktop-x86", "--no-bench",
                  "--out", work / "out"])
    assert result.exit_code == 1 and "top1_agreement" in result.output, result.output
    return work / "out" / "desktop-x86"


@pytest.fixture(scope="module")
def flipped_classes(tmp_path_factory):
    """Task classify, unlabelled (_near_tied)."""
    return _near_tied(tmp_path_factory.mktemp("flipped"), "classify")


@pytest.fixture(scope="module")
def flipped_unlabelled(tmp_path_factory):
    """Task auto on unlabelled data (_near_tied): its top1_agreement failed."""
    return _near_tied(tmp_path_factory.mktemp("unlabelled"), "auto")


def _gates_message(folder) -> str:
    result = cli(["check", folder, "--json"])
    [case] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "gates"]
    return case["message"]


def _passing(manifest: dict, gates: list) -> dict:
    """The edits making a failed package's verdict pass: its gates, verdict and verification."""
    return {"gates": gates, "passed": True, "verification": [dict(c, passed=True) for c in manifest["verification"]]}


@pytest.mark.parametrize("raised", [1.0, 0.9])
def test_a_classifiers_top1_raised_past_its_golden_samples_fails(flipped_classes, tmp_path, raised):
    """top1_agreement (the gate and the scored output's figure) edited from 0.1 to 1.0 (or 0.9), with top-5 and the
    verdict made pass and the package re-hashed, passed check: no agreement averaged over rows was held to the golden
    samples. Their 7 clear flips are flips of the verdict's too (a subset): at most 1 - 7 / 40 rows it counted."""
    folder = shutil.copytree(flipped_classes, tmp_path / "p")
    manifest = json.loads((folder / "manifest.json").read_text())
    stage = manifest["parity"]["quantization"]
    stage["outputs"] = [dict(o, top1_agreement=raised, top5_agreement=1.0) for o in stage["outputs"]]
    gates = [dict(g, value=raised if g["name"] == "top1_agreement" else 1.0, passed=True)
             if g["name"] in ("top1_agreement", "top5_agreement") else g
             for g in manifest["gates"]]
    forge(folder, parity=manifest["parity"], **_passing(manifest, gates))
    result = cli(["check", folder, "--json"])
    assert result.exit_code == 1, result.output
    said = _gates_message(folder)
    given = f"top1_agreement {raised:g} (these give 7 clear flip(s) in 8 rows: at most 0.825)"
    assert f"output {given}" in said and f"; {given}" in said, said


def test_task_autos_top1_raised_past_its_golden_samples_fails(flipped_unlabelled, tmp_path):
    """Task auto's failed top-1 (0.1 of 40 rows) edited to 0.9, its gate skipped as that figure would have it (on 40
    rows not below the bar beyond chance) and the verdict made pass: check judged the edited figure alone."""
    from edgekit.package_check import _bundled_profile

    folder = shutil.copytree(flipped_unlabelled, tmp_path / "p")
    manifest = json.loads((folder / "manifest.json").read_text())
    stage = manifest["parity"]["quantization"]
    stage["outputs"] = [dict(o, top1_agreement=0.9) for o in stage["outputs"]]
    judged = parity.OutputParity("output", None, None, None, None, None, top1_agreement=0.9, top1_rows=40,
                                 top_class_sqnr_db=stage["outputs"][0]["top_class_sqnr_db"])
    spec = _bundled_profile(manifest["target_profile_sha256"]).parity
    skipped = parity.unlabelled_top1_gate(judged, spec, stage["samples"])
    assert skipped.skipped and skipped.passed, skipped
    gates = [dict(g, value=None, passed=True, skipped=skipped.skipped) if g["name"] == "top1_agreement" else g
             for g in manifest["gates"]]
    forge(folder, parity=manifest["parity"], **_passing(manifest, gates))
    said = _gates_message(folder)
    assert "output top1_agreement 0.9 (these give 7 clear flip(s) in 8 rows: at most 0.825)" in said, said


def test_truthful_packages_with_golden_flips_raise_no_top1_claim(flipped_classes, flipped_unlabelled,
                                                                  merged_classes):
    """The export's own failed verdict is all check says of them: their golden samples' flips bound no figure."""
    for folder in (flipped_classes, flipped_unlabelled, merged_classes):
        said = _gates_message(folder)
        assert "failed at export" in said and "golden samples" not in said, said


def test_a_top1_flip_on_an_fp32_near_tie_is_not_counted():
    """fp32 run on another host differs in its last bits: a flip where fp32's top two are that close may not have
    been one at export, so it bounds nothing. A flip by a clear margin counts, and so does one int8's tie makes
    (the golden scores are the export's: its argmax broke the tie the same way)."""
    from edgekit.package_check import top1_flips

    fp32 = [np.array([[1.0, 1.0 + 1e-7, 0.0]]), np.array([[1.0, 0.5, 0.0]]), np.array([[0.2, 0.1, 0.0]]),
            np.array([[0.1, 0.2, 0.0], [0.1, 0.2, 0.0]])]
    int8 = [np.array([[0.9, 0.8, 0.0]]), np.array([[0.5, 1.0, 0.0]]), np.array([[0.3, 0.3, 0.0]]),
            np.array([[0.3, 0.3, 0.0], [0.0, 0.3, 0.3]])]
    assert top1_flips(fp32, int8) == (2, 5)


def test_a_top1_gate_raised_with_its_output_dropped_fails(flipped_classes, tmp_path):
    """The raised top1_agreement gate with its "output" key deleted (and the scored output's own figure with it)
    passed check: the gate was held to the golden samples only where it named its output, and check allows a class
    gate that names none. Held then to the loosest bound of the outputs it may be of, it fails."""
    folder = shutil.copytree(flipped_classes, tmp_path / "p")
    manifest = json.loads((folder / "manifest.json").read_text())
    stage = manifest["parity"]["quantization"]
    stage["outputs"] = [{k: v for k, v in o.items() if k != "top1_agreement"} for o in stage["outputs"]]
    gates = [{**{k: v for k, v in g.items() if k != "output"}, "value": 1.0, "passed": True}
             if g["name"] in ("top1_agreement", "top5_agreement") else g for g in manifest["gates"]]
    forge(folder, parity=manifest["parity"], **_passing(manifest, gates))
    said = _gates_message(folder)
    assert "top1_agreement 1 (these give 7 clear flip(s) in 8 rows: at most 0.825)" in said, said


@pytest.fixture(scope="module")
def batched_flips(tmp_path_factory):
    """A 12-class head whose int8 puts fp32's top class last, 10 clear steps down (models.LoudHidden: task classify,
    unlabelled), with an open batch axis (x:Nx16), each of its 40 validation samples a batch of 4 rows: 160 rows
    counted, 32 of them in its 8 golden samples, 31 a clear top-1 flip and top-5 miss. Its cosine and SQNR pass;
    top-1 and top-5 (0.044) fail."""
    work = tmp_path_factory.mktemp("batched")
    rng = np.random.default_rng(0)
    np.savez(work / "cal.npz", x=rng.standard_normal((200, 16)).astype(np.float32))
    np.savez(work / "val.npz", x=rng.standard_normal((40, 4, 16)).astype(np.float32))
    result = cli(["export", "models:loud_hidden", "--input", "x:Nx16", "--calibration", work / "cal.npz",
                  "--validation", work / "val.npz", "--task", "classify", "-t", "desktop-x86", "--no-bench",
                  "--out", work / "out"])
    assert result.exit_code == 1 and "FAIL: top1_agreement, top5_agreement\n" in result.output, result.output
    return work / "out" / "desktop-x86"


def test_a_batched_classifiers_top1_and_top5_raised_are_bounded_by_the_rows_counted(batched_flips, tmp_path):
    """top1_agreement raised from 0.044 to 0.96 and top5_agreement to 1.0 (each output's figure and gate), the
    verdict made pass and the package re-hashed, passed check: an open batch axis leaves a sample's rows unknown, so
    top-1 was bounded by 1 - flips / (10,000 x the golden rows), and top-5 not at all. The export records the 160
    rows both count (top1_rows): 31 clear flips (and misses) make it at most 1 - 31 / 160."""
    recorded = json.loads((batched_flips / "manifest.json").read_text())["parity"]["quantization"]["outputs"][0]
    assert recorded["top1_rows"] == 160, recorded
    folder = shutil.copytree(batched_flips, tmp_path / "p")
    manifest = json.loads((folder / "manifest.json").read_text())
    raised = {"top1_agreement": 0.96, "top5_agreement": 1.0}
    stage = manifest["parity"]["quantization"]
    stage["outputs"] = [dict(o, **raised) for o in stage["outputs"]]
    gates = [dict(g, value=raised[g["name"]], passed=True) if g["name"] in raised else g for g in manifest["gates"]]
    forge(folder, parity=manifest["parity"], **_passing(manifest, gates))
    result = cli(["check", folder, "--json"])
    assert result.exit_code == 1, result.output
    said = _gates_message(folder)
    for given in ("top1_agreement 0.96 (these give 31 clear flip(s) in 32 rows: at most 0.80625)",
                  "top5_agreement 1 (these give 31 clear miss(es) in 32 rows: at most 0.80625)"):
        assert f"output {given}" in said and f"; {given}" in said, said


def test_a_truthful_batched_classifier_raises_no_row_claim(batched_flips):
    """Its own failed verdict is all check says of it: the tight bounds never fail its true figures."""
    said = _gates_message(batched_flips)
    assert "failed at export" in said and "golden samples" not in said, said


def test_a_batched_classifiers_top1_rows_deleted_with_its_figures_raised_fails(batched_flips, tmp_path):
    """Deleting top1_rows from a package this edgekit made, its top-1 raised to 0.96 and top-5 to 0.99, brought back
    the bound of 10,000 x the golden rows and check passed (exit 0): this version records them wherever it records
    a top-1, so a package of it without them is untrue."""
    folder = shutil.copytree(batched_flips, tmp_path / "p")
    manifest = json.loads((folder / "manifest.json").read_text())
    raised = {"top1_agreement": 0.96, "top5_agreement": 0.99}
    stage = manifest["parity"]["quantization"]
    stage["outputs"] = [{**{k: v for k, v in o.items() if k != "top1_rows"}, **raised} for o in stage["outputs"]]
    gates = [dict(g, value=raised[g["name"]], passed=True) if g["name"] in raised else g for g in manifest["gates"]]
    forge(folder, parity=manifest["parity"], **_passing(manifest, gates))
    assert cli(["check", folder, "--json"]).exit_code == 1
    said = _gates_message(folder)
    assert "output top1_agreement names no top1_rows (the rows it counts)" in said
    assert "output top5_agreement names no top1_rows" in said, said


def test_top5_misses_count_only_where_five_scores_are_strictly_above_every_near_top_class():
    """A class tied with int8's 5th score may be sorted into the top 5 (numpy's sort orders ties as it likes): no
    miss. Nor where fp32's near-tie class is in the top 5. Only a class with 5 scores strictly above it is out."""
    from edgekit.package_check import top5_misses

    fp32 = np.array([[9.0, 1, 2, 3, 4, 5, 6], [9.0, 1, 2, 3, 4, 5, 6], [9.0, 9.0 + 1e-7, 2, 3, 4, 5, 6],
                     [9.0, 1, 2, 3, 4, 5, 6]])
    int8 = np.array([[1.0, 2, 3, 4, 5, 6, 7], [3.0, 3, 3, 4, 5, 6, 7], [0.0, 9, 2, 3, 4, 5, 6],
                     [3.0, 4, 4, 4, 5, 6, 7]])
    assert top5_misses([fp32], [int8]) == (2, 4)


def test_an_ort_recorded_unfused_before_replay_was_asked_still_passes(tmp_path):
    """A package made before 12-07 recorded golden.ort.npz with the .ort unfused, its runtime contract (what the app
    sets) without session.enable_saved_runtime_optimizations: check ran every .ort replaying its saved optimisations,
    and such a MobileNetV2-style package failed parity (3,607 of 8,000 values off, up to 4 steps). Its .ort runs as
    its contract says; one whose contract asks for the replay still runs fused."""
    import onnxruntime as ort
    from conftest import ROOT

    from edgekit import package, runner

    made = cli(["export", f"{ROOT / 'benchmarks' / 'arch.py'}:mobilenetv2_style", "--input", "image:Nx3x32x32",
                "--calibration", "random", "--task", "other", "-t", "android-arm64", "--out", tmp_path / "dist",
                "--no-bench"])
    assert made.exit_code == 0, made.output
    folder = copy_of(tmp_path / "dist", tmp_path, "android-arm64")
    manifest = json.loads((folder / "manifest.json").read_text())
    [session] = [s for s in manifest["runtime"]["sessions"] if s["model"] == "model.int8.ort"]
    assert session["session"]["config_entries"].pop(runner.REPLAY[0]) == "1"
    del manifest["ort_format"]["replays"]
    opts = ort.SessionOptions()
    opts.add_session_config_entry(runner.REPLAY[0], "0")
    unfused = ort.InferenceSession(str(folder / "model.int8.ort"), opts, providers=["CPUExecutionProvider"])
    golden = dict(np.load(folder / "golden.ort.npz"))
    onnx_outputs = package.read_golden_channels(folder / "golden.npz")[1]
    differ = []
    for i in range(int(golden["count"])):
        [golden[f"output.{i}.0"]] = unfused.run(None, {"image": golden[f"input.{i}.0"]})
        differ.append(float(np.abs(golden[f"output.{i}.0"] - onnx_outputs[i]["output"]).max()))
    assert any(differ), "the .ort runs the same unfused: no case for this test"
    manifest["ort_format"]["max_abs_diff_from_onnx"] = {"output": max(differ)}
    np.savez(folder / "golden.ort.npz", **golden)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    resign(folder)
    for name, text in package.rendered_pages(json.loads((folder / "manifest.json").read_text())).items():
        (folder / name).write_text(text, encoding="utf-8")
    rehash(folder, *package.PAGES)
    result = cli(["check", folder])
    assert result.exit_code == 0, result.output


def test_a_page_of_tags_edgekit_never_writes_is_read_to_its_first_only(digits):
    """active_content listed every disallowed tag and attribute of a page and said the first: 16 MB of tags with
    eight attributes each, markup html.parser reads at ease, took 5 s and 0.5 GB in check's own process."""
    import time
    import tracemalloc

    from edgekit import report_html

    page = (digits / "desktop-x86" / "report.html").read_text()
    tag = "<p a=1 b=2 c=3 d=4 e=5 f=6 g=7 h=8>"
    forged = page.replace("</body>", tag * ((16 << 20) // len(tag)) + "</body>")
    tracemalloc.start()
    start = time.perf_counter()
    try:
        said = report_html.active_content(forged)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert said == "a= on <p>" and time.perf_counter() - start < 5 and peak < 64 << 20, (said, peak)


def test_an_ort_past_256_kb_of_weights_has_its_claims_read_here_without_a_child(digits, tmp_path, monkeypatch):
    """Any .ort past IN_PROCESS_BYTES was read in a bounded child, though its bytes are mostly weights: a child's
    start cost check ~0.75 s a target. Its names are read here, up to IN_PROCESS_ORT_NAMES; one naming more is
    read in the child, its claims still told."""
    from edgekit import model_claims

    folder = copy_of(digits, tmp_path, "android-arm64")
    with open(folder / "model.int8.ort", "ab") as f:  # bytes no entry points at, where its weights would lie
        f.write(bytes(2 * model_claims.IN_PROCESS_BYTES))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["opset"] += 1  # a claim its graph contradicts
    children = []
    bounded = model_claims._claims_bounded
    monkeypatch.setattr(model_claims, "_claims_bounded", lambda *args: children.append(args) or bounded(*args))
    said = model_claims.model_claims(folder, manifest, ["model.int8.ort"])
    assert not children and "model.int8.ort is opset" in said["model.int8.ort"], said
    monkeypatch.setattr(model_claims, "IN_PROCESS_ORT_NAMES", 10_000)
    said = model_claims.model_claims(folder, manifest, ["model.int8.ort"])
    assert len(children) == 1 and "model.int8.ort is opset" in said["model.int8.ort"], said
