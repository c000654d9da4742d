"""uint8 camera input: the normalisation is folded into the deployable, which takes the raw pixels."""
import json

import numpy as np
import onnx
import pytest
import torch
from conftest import cli, write_manifest
from models import small_cnn

import edgekit
from edgekit.runtime import run_onnx, session

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def pixels(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 16, 16), dtype=np.uint8)


def test_the_deployable_takes_raw_pixels_and_normalises_them_itself(tmp_path):
    np.savez(tmp_path / "cal.npz", image=pixels(40, 0))
    np.savez(tmp_path / "val.npz", image=pixels(12, 1))
    report = edgekit.export("models:small_cnn", inputs=["image:Nx3x16x16:uint8"], calibration=tmp_path / "cal.npz",
                            validation=tmp_path / "val.npz", targets=["desktop-x86"], out=tmp_path / "out",
                            no_bench=True, image_uint8={"input": "image", "mean": MEAN, "std": STD})
    assert report.passed, report.targets["desktop-x86"].failures()
    target = report.targets["desktop-x86"]
    assert target.export_parity.worst("cosine") > 0.99999  # torch (normalising) vs ONNX, on the same pixels
    assert target.to_json()["image_uint8"] == {"input": "image", "mean": MEAN, "std": STD, "int8": (
        "mean or std differ between channels, so one scale cannot quantize the normalised pixels back to themselves: "
        "the input QuantizeLinear stays"), "nodes": ["/Cast", "/Sub", "/Mul"], "nodes_in_int8": True}
    folder = tmp_path / "out" / "desktop-x86"
    for name in ("model.onnx", "model.int8.onnx"):
        [image] = onnx.load(str(folder / name)).graph.input
        assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8, name
        # nothing a device build reads said raw pixels go in, normalised inside, in which layout and channel order
        [said] = json.loads({p.key: p.value for p in onnx.load(str(folder / name)).metadata_props}[
            "edgekit_input_contract"])
        assert said["layout"] == "NCHW" and "raw 0-255 pixels" in said["values"], said
    [contract] = target.to_json()["runtime"]["sessions"][0]["inputs"]
    assert (contract["dtype"], contract["shape"], contract["layout"]) == ("uint8", ["N", 3, 16, 16], "NCHW")
    assert "normalisation ((pixel / 255 - mean) / std) is folded into the model" in contract["values"]
    assert f"channels in the order of the declared mean {MEAN} and std {STD}" in contract["values"]
    assert contract["calibration_range"] == [0, 255]
    assert "raw 0-255 pixels" in (folder / "report.md").read_text().split("## Gates")[0]
    # the int8 model on raw pixels agrees with the original float model on pixels normalised by hand
    raw = pixels(8, 2)
    normalised = ((raw / 255.0 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))).astype(np.float32)
    with torch.no_grad():
        want = small_cnn()(torch.from_numpy(normalised)).numpy()
    [[got]] = run_onnx(session(folder / "model.int8.onnx")[0], [{"image": raw}])
    cos = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.99, cos


@pytest.mark.parametrize("dtype,setting,why", [
    ("uint8", {"input": "image", "mean": MEAN}, "expected {input = NAME, mean = [...], std = [...]}"),
    ("uint8", {}, "image_uint8 is empty"),  # was taken as no setting: then torch's dtype error
    ("uint8", {"input": "pixels", "mean": MEAN, "std": STD}, "'pixels' is not a model input"),
    ("uint8", {"input": "image", "mean": [0.5, 0.5], "std": STD}, "mean must be one number or one per channel"),
    ("uint8", {"input": "image", "mean": MEAN, "std": [0.2, 0.0, 0.2]}, "std [0.2, 0.0, 0.2] is outside [0.001, 1]"),
    # 0-255 units (mmcv's): every image became nearly one constant, and the export passed
    ("uint8", {"input": "image", "mean": [123.675, 116.28, 103.53], "std": STD}, "divide by 255"),
    ("uint8", {"input": "image", "mean": MEAN, "std": 1e30}, "std 1e+30 is outside [0.001, 1]"),
    ("uint8", {"input": "image", "mean": 1e38, "std": STD}, "mean 1e+38 is outside [0, 1]"),  # was exit 5
    ("float32", {"input": "image", "mean": MEAN, "std": STD}, "declare image as the uint8 NCHW pixels"),
])
def test_bad_image_uint8_settings_are_usage_errors(tmp_path, dtype, setting, why):
    recipe = tmp_path / "r.toml"
    table = ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in setting.items())
    recipe.write_text(f'[model]\nsource = "models:small_cnn"\ninputs = ["image:Nx3x16x16:{dtype}"]\n'
                      f"image_uint8 = {{{table}}}\n[data]\ncalibration = \"random\"\n")
    result = cli(["export", recipe, "--out", tmp_path / "o", "--no-bench"])
    assert result.exit_code == 2 and why in result.output, result.output
    assert not (tmp_path / "o").exists()


def _graph_after(model, tensor: str) -> list[str]:
    return [n.op_type for n in model.graph.node if tensor in n.input]


@pytest.mark.parametrize("mean_std", [(128 / 255, 128 / 255), (0.0, 1.0)])  # (x - 128) / 128; x / 255
def test_the_normalisation_stays_float_and_raw_pixels_feed_the_first_dequantize_where_exact(tmp_path, mean_std):
    """(x - 128) / 128: the normalised pixels quantized with scale 1/128 and zero point 128 are the pixels
    themselves, so the int8 model drops the normalisation and its input QuantizeLinear (x / 255 likewise, with
    zero point 0; its Sub of 0 is gone from the pre-processed graph); per-channel ImageNet statistics keep both
    (float Cast/Sub/Mul, then a QuantizeLinear)."""
    np.savez(tmp_path / "cal.npz", image=pixels(40, 0))
    np.savez(tmp_path / "val.npz", image=pixels(12, 1))
    args = dict(inputs=["image:Nx3x16x16:uint8"], calibration=tmp_path / "cal.npz", validation=tmp_path / "val.npz",
                targets=["desktop-x86"], no_bench=True)
    mean, std = mean_std
    report = edgekit.export("models:small_cnn", out=tmp_path / "raw", image_uint8={"input": "image", "mean": mean,
                                                                                  "std": std}, **args)
    assert report.passed, report.targets["desktop-x86"].failures()
    assert report.targets["desktop-x86"].to_json()["image_uint8"]["int8"].startswith("the raw pixels feed")
    raw = onnx.load(str(tmp_path / "raw" / "desktop-x86" / "model.int8.onnx"))
    assert _graph_after(raw, "image") == ["DequantizeLinear"]
    assert not {"Cast", "Sub", "Mul"} & {n.op_type for n in raw.graph.node}
    # report.html listed the dropped Cast/Sub/Mul as "Kept in float", by "report.md's decisions", which named none
    page = (tmp_path / "raw" / "desktop-x86" / "report.html").read_text()
    assert "<td>/Mul</td>" not in page and "report.md&#x27;s decisions" not in page, page
    folder = tmp_path / "raw" / "desktop-x86"  # check holds nodes_in_int8 (it passed edited)
    assert cli(["check", folder]).exit_code == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["image_uint8"]["nodes_in_int8"] is False
    manifest["image_uint8"]["nodes_in_int8"] = True
    write_manifest(folder, manifest)  # and its reports rendered again from it, as edgekit renders them
    result = cli(["check", folder])
    assert result.exit_code == 1 and "model.int8.onnx feeds the raw 'image' pixels to its first quantized op" in \
        result.output, result.output
    del manifest["image_uint8"]["nodes_in_int8"]  # then report.html lists the gone nodes as kept in float again
    write_manifest(folder, manifest)
    result = cli(["check", folder])
    assert result.exit_code == 1 and "image_uint8 lists its nodes without nodes_in_int8 (edgekit writes both), " \
        "model.int8.onnx feeds the raw 'image' pixels" in result.output, result.output
    kept = edgekit.export("models:small_cnn", out=tmp_path / "kept", image_uint8={"input": "image", "mean": MEAN,
                                                                                 "std": STD}, **args)
    assert kept.passed
    model = onnx.load(str(tmp_path / "kept" / "desktop-x86" / "model.int8.onnx"))
    cast = next(n for n in model.graph.node if n.op_type == "Cast")
    sub = next(n for n in model.graph.node if n.input[0] == cast.output[0])
    mul = next(n for n in model.graph.node if n.input[0] == sub.output[0])
    assert (sub.op_type, mul.op_type, _graph_after(model, mul.output[0])) == ("Sub", "Mul", ["QuantizeLinear"])
    page = (tmp_path / "kept" / "desktop-x86" / "report.html").read_text()
    assert f"<td>{mul.name}</td><td>image_uint8: the pixel normalisation of input &#x27;image&#x27;</td>" in page


@pytest.mark.parametrize("mean,std,nodes_in_int8", [(MEAN, STD, True), (0.0, 1.0, False)])
def test_the_dynamo_exporter_exports_the_pixel_wrapper(tmp_path, mean, std, nodes_in_int8):
    """The wrapper's forward(*args) takes every input in one parameter: torch.export failed with "mismatch between
    the structure of `inputs` and `dynamic_shapes`" (exit 4) on the per-input shapes edgekit gave it."""
    np.savez(tmp_path / "cal.npz", image=pixels(40, 0))
    np.savez(tmp_path / "val.npz", image=pixels(12, 1))
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\nsource = "models:small_cnn"\ninputs = ["image:Nx3x16x16:uint8"]\nexporter = "dynamo"\n'
                      f'image_uint8 = {{input = "image", mean = {mean}, std = {std}}}\n'
                      f'[data]\ncalibration = "{tmp_path / "cal.npz"}"\nvalidation = "{tmp_path / "val.npz"}"\n')
    result = cli(["export", recipe, "-t", "desktop-x86", "--out", tmp_path / "o", "--no-bench"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "o" / "desktop-x86"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model"]["exporter"] == "dynamo"
    assert manifest["image_uint8"]["nodes_in_int8"] is nodes_in_int8
    assert cli(["check", folder]).exit_code == 0
    raw = pixels(8, 2)
    normalised = ((raw / 255.0 - np.reshape(mean, (1, -1, 1, 1))) / np.reshape(std, (1, -1, 1, 1))).astype(np.float32)
    with torch.no_grad():
        want = small_cnn()(torch.from_numpy(normalised)).numpy()
    for name in ("model.onnx", "model.int8.onnx"):
        [image] = onnx.load(str(folder / name)).graph.input
        assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8, name
        assert image.type.tensor_type.shape.dim[0].dim_param, name  # the batch stays dynamic
        [[got]] = run_onnx(session(folder / name)[0], [{"image": raw}])
        cos = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
        assert cos.min() > 0.99, (name, cos)


def test_raw_feed_is_bit_for_bit_the_quantized_normalisation(tmp_path):
    """The rewrite on its own: the same int8 model before and after it, on images holding every pixel value."""
    from edgekit import pixels as px, quantization
    from edgekit.config import InputSpec, QuantSettings
    from edgekit.load import load_model
    from edgekit.onnx_export import export_torch

    spec = (InputSpec.parse("image:Nx3x16x16:uint8"),)
    half = 128 / 255
    for mean, std, expect in ((half, half, True), (0.0, 1.0, True), (0.5, 0.5, False)):  # x/255 too; not 127.5
        setting = {"input": "image", "mean": mean, "std": std}
        module = px.fold(setting, load_model("models:small_cnn"), spec)
        fp32 = export_torch(module, spec, (), 17, tmp_path / "fp32.onnx")
        norm = px.normalisation(onnx.load(str(fp32)), setting, "uint8")
        assert (norm.scale is not None) == expect, (mean, std, norm.why)
        plan = quantization.plan(onnx.load(str(fp32)), QuantSettings(exclude_nodes=norm.nodes), set(), "x86_64")
        plan = type(plan)(**{**plan.__dict__, "tensor_overrides": norm.overrides()})
        int8 = quantization.quantize(fp32, tmp_path / "int8.onnx", plan, [{"image": pixels(1, i)} for i in range(16)])
        after = onnx.load(str(int8))
        assert (px.raw_feed(after, norm) is None) == expect
        onnx.save(after, str(tmp_path / "raw.onnx"))
        every = (np.arange(3 * 16 * 16) % 256).astype(np.uint8).reshape(1, 3, 16, 16)  # every pixel value
        feeds = [{"image": every}, {"image": pixels(1, 99)}]
        outs = [run_onnx(session(path)[0], feeds) for path in (int8, tmp_path / "raw.onnx")]
        assert all(np.array_equal(a, b) for x, y in zip(*outs) for a, b in zip(x, y)), (mean, std)


def test_prune_and_share_take_the_users_layer_names_under_the_pixel_wrapper(tmp_path):
    """The module runs wrapped (uint8 pixels in, normalised inside), but [prune] and [share] name its layers as the
    user's module does."""
    np.savez(tmp_path / "cal.npz", image=pixels(40, 0))
    report = edgekit.export("models:small_cnn", inputs=["image:Nx3x16x16:uint8"], calibration=tmp_path / "cal.npz",
                            targets=["desktop-x86"], out=tmp_path / "out", no_bench=True,
                            image_uint8={"input": "image", "mean": MEAN, "std": STD},
                            prune={"ratio": 0.5, "stage_ratios": {"body.0": 0.25}, "ignore": ["body.2"]},
                            share={"clusters": 4, "ignore": ["body.0"]})
    assert report.passed, report.targets["desktop-x86"].failures()
    pruned = report.targets["desktop-x86"].to_json()["compression"]["prune"]
    assert pruned["stage_ratios"] == {"body.0": 0.25} and "body.2" in pruned["ignored"]
    assert report.targets["desktop-x86"].to_json()["compression"]["share"]["layers"] == ["body.2", "body.6"]
    model = onnx.load(str(tmp_path / "out" / "desktop-x86" / "model.onnx"))
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = [weights[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]
    assert [c.shape[0] for c in convs] == [6, 8]  # body.0 at 0.25 of 8 channels; body.2 ignored
    assert len(np.unique(convs[1])) <= 4 < len(np.unique(convs[0]))  # body.2 shared in 4 values, body.0 ignored


def test_raw_pixels_feed_the_padded_stem(tmp_path, monkeypatch):
    """An RGB stem padded to 4 channels for onnxruntime's fast int8 conv (x86-64): its uint8 Pad reads the input's
    QuantizeLinear, which raw_feed replaces by the raw pixels (or keeps, after the float normalisation); the same
    outputs as the unpadded int8 model, on every pixel value."""
    import dataclasses

    from edgekit import pixels as px, quantization
    from edgekit.config import InputSpec, QuantSettings
    from edgekit.load import load_model
    from edgekit.onnx_export import export_torch

    monkeypatch.setenv("EDGEKIT_HOST_ARCH", "x86_64")
    monkeypatch.setenv("EDGEKIT_HOST_ISA", "avx2")
    spec = (InputSpec.parse("image:Nx3x16x16:uint8"),)
    every = (np.arange(3 * 16 * 16) % 256).astype(np.uint8).reshape(1, 3, 16, 16)
    for mean, std, first in ((0.0, 1.0, "Pad"), (MEAN, STD, "Cast")):  # raw pixels fed; normalisation kept
        setting = {"input": "image", "mean": mean, "std": std}
        fp32 = export_torch(px.fold(setting, load_model("models:stem_cnn"), spec), spec, (), 17, tmp_path / "f.onnx")
        norm = px.normalisation(onnx.load(str(fp32)), setting, "uint8")
        plan = quantization.plan(onnx.load(str(fp32)), QuantSettings(exclude_nodes=norm.nodes), set(), "x86_64")
        plan = dataclasses.replace(plan, tensor_overrides=norm.overrides())
        outs = []
        for name, p in (("padded", plan), ("plain", dataclasses.replace(plan, padded_convs=()))):
            model = onnx.load(str(quantization.quantize(fp32, tmp_path / f"{name}.onnx", p, [
                {"image": pixels(1, i)} for i in range(16)])))
            px.raw_feed(model, norm)
            onnx.save(model, str(tmp_path / f"{name}.onnx"))
            outs.append(run_onnx(session(tmp_path / f"{name}.onnx")[0], [{"image": every}, {"image": pixels(2, 9)}]))
            if name == "padded":
                assert _graph_after(model, "image") == [first] and "Pad" in {n.op_type for n in model.graph.node}
        assert all(np.array_equal(a, b) for x, y in zip(*outs) for a, b in zip(x, y)), setting
