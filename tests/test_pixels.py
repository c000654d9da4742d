"""uint8 camera input: the normalisation is folded into the deployable, which takes the raw pixels."""
import numpy as np
import onnx
import pytest
import torch
from conftest import cli
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
    assert target.to_json()["image_uint8"] == {"input": "image", "mean": MEAN, "std": STD}
    folder = tmp_path / "out" / "desktop-x86"
    for name in ("model.onnx", "model.int8.onnx"):
        [image] = onnx.load(str(folder / name)).graph.input
        assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8, name
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
    ("uint8", {"input": "pixels", "mean": MEAN, "std": STD}, "'pixels' is not a model input"),
    ("uint8", {"input": "image", "mean": [0.5, 0.5], "std": STD}, "mean must be one number or one per channel"),
    ("uint8", {"input": "image", "mean": MEAN, "std": [0.2, 0.0, 0.2]}, "std must be > 0"),
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
