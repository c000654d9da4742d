"""The saturation score's model of MLAS's u8s8 arithmetic, held to onnxruntime's own exact int8 results (which pairs
VPMADDUBSW adds is held to emulated AVX2 kernels in test_emulate)."""
import json

import numpy as np
import onnx
import pytest
from conftest import DIGITS, cli, write_manifest

from edgekit import saturation
from edgekit.package import read_golden


def test_the_score_computes_each_nodes_outputs_as_onnxruntime_does(tmp_path):
    """Unsaturated, the score's sums of a sample's rows (a conv's taps with the padding at the zero point), with the
    bias and requantization, are each u8s8 node's quantized output as the int8 model computes it."""
    out = tmp_path / "dist"
    assert cli(["export", DIGITS / "edgekit.toml", "-t", "desktop-x86", "--reduce-range", "false", "--out", out,
                "--no-bench"]).exit_code == 0
    model = onnx.load(out / "desktop-x86" / "model.int8.onnx")
    nodes = saturation.u8s8_nodes(model)
    assert [n.conv is not None for n in nodes] == [True, True, False, False]  # 2 convs, 2 Gemms
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_nodes = {n.name: n for n in model.graph.node}
    quantized = {n.name: saturation._output_quantizer(graph_nodes[n.name], consumers).output[0] for n in nodes}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.UINT8, None)
                              for t in quantized.values())
    images = np.load(DIGITS / "data" / "validation.npz")["image"][:16]
    for values in saturation._activations(model, nodes, [{"image": images[i:i + 1]} for i in range(len(images))]):
        for node in nodes:
            rows = saturation.rows_of(node, values[node.activations])
            mine = saturation._requantized(node, rows @ node.weights.T.astype(np.int64)
                                           - node.zero_point * node.weights.sum(1))
            theirs = values[quantized[node.name]].reshape(node.weights.shape[0], -1).T if node.conv else \
                values[quantized[node.name]].reshape(-1, node.weights.shape[0])
            # onnxruntime requantizes in float32, the score in float64: a tie may round apart
            assert np.abs(mine - theirs).max() <= 1 and np.mean(mine == theirs) > 0.995, node.name


def _qdq_model(path, op: str, w: np.ndarray, attrs: dict, x_shape: tuple, uint8_input: bool = False,
               sx=np.float32(0.02), sw=np.float32(0.01), w_axis: int = 1):
    """x -> QuantizeLinear -> DequantizeLinear -> op(., DequantizeLinear(int8 w), bias) -> Q -> DQ: the QDQ form
    onnxruntime fuses into its u8s8 kernels. `uint8_input`: x is already the quantized activations."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    out_channels = w.shape[0] if op == "Conv" or attrs.get("transB") else w.shape[1]
    init = [numpy_helper.from_array(a, n) for n, a in [
        ("sx", sx), ("zx", np.full(np.shape(sx), 100, np.uint8)), ("w", w), ("sw", sw),
        ("b", rng.standard_normal(out_channels).astype(np.float32)), ("sy", np.float32(0.3)), ("zy", np.uint8(128))]]
    nodes = [] if uint8_input else [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"], axis=-1)]
    nodes += [helper.make_node("DequantizeLinear", ["x" if uint8_input else "xq", "sx", "zx"], ["xd"], axis=-1),
              helper.make_node("DequantizeLinear", ["w", "sw"], ["wd"], axis=w_axis),
              helper.make_node(op, ["xd", "wd"] + (["b"] if op != "MatMul" else []), ["y0"], **attrs),
              helper.make_node("QuantizeLinear", ["y0", "sy", "zy"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info(
        "x", TensorProto.UINT8 if uint8_input else TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


GEOMETRIES = {  # op, weights' shape, attributes, input shape
    "gemm_transB": ("Gemm", (12, 20), {"transB": 1}, (6, 20)),
    "gemm_B": ("Gemm", (20, 12), {"transB": 0}, (6, 20)),
    "gemm_alpha_beta": ("Gemm", (12, 21), {"transB": 1, "alpha": 0.5, "beta": 2.0}, (6, 21)),
    "matmul": ("MatMul", (20, 12), {}, (2, 3, 20)),
    "conv": ("Conv", (6, 5, 3, 2), {"pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2]}, (2, 5, 9, 8)),
}


@pytest.mark.parametrize("case", [*GEOMETRIES, "uint8_input"])
def test_the_score_reads_each_nodes_geometry_as_onnxruntime_computes_it(tmp_path, case):
    """Gemm (transB 0/1, alpha and beta), MatMul and a Conv of uneven pads, strides and dilations, and activations
    that are the graph's own uint8 input (no node makes them): unsaturated, the score's sums, bias and
    requantization are the node's quantized output as onnxruntime computes it."""
    op, w_shape, attrs, x_shape = GEOMETRIES.get(case, GEOMETRIES["gemm_transB"])
    rng = np.random.default_rng(1)
    w = rng.integers(-127, 128, w_shape).astype(np.int8)
    path = _qdq_model(tmp_path / "m.onnx", op, w, attrs, x_shape, uint8_input=case == "uint8_input")
    model = onnx.load(path)
    [node] = saturation.u8s8_nodes(model)
    feeds = [{"x": rng.integers(0, 256, x_shape).astype(np.uint8) if case == "uint8_input" else
              rng.standard_normal(x_shape).astype(np.float32) * 2} for _ in range(3)]
    model.graph.output.extend([onnx.helper.make_tensor_value_info("yq", onnx.TensorProto.UINT8, None)])
    for values in saturation._activations(model, [node], feeds):
        rows = saturation.rows_of(node, values[node.activations])
        mine = saturation._requantized(node, rows @ node.weights.T.astype(np.int64)
                                       - node.zero_point * node.weights.sum(1))
        theirs = values["yq"]
        theirs = np.moveaxis(theirs, 1, -1).reshape(mine.shape) if node.conv else theirs.reshape(mine.shape)
        assert np.abs(mine - theirs).max() <= 1 and np.mean(mine == theirs) > 0.95, (case, mine, theirs)
    assert len(saturation.risks(path, feeds, 1)) == 3  # and the score runs on it


@pytest.mark.parametrize("case", ["activations_per_channel", "weights_per_input_channel"])
def test_a_node_the_score_cannot_read_is_left_out_not_failed_on(tmp_path, case):
    """Activations quantized per channel, or weights whose scales run along K: the score does not model them (it
    failed on them: 'only 0-dimensional arrays can be converted', 'could not be broadcast'), so it leaves them out."""
    rng = np.random.default_rng(1)
    w = rng.integers(-127, 128, (12, 20)).astype(np.int8)
    per = {"activations_per_channel": {"sx": np.full(20, 0.02, np.float32)},
           "weights_per_input_channel": {"sw": np.full(20, 0.01, np.float32), "w_axis": 1}}[case]
    path = _qdq_model(tmp_path / "m.onnx", "Gemm", w, {"transB": 1}, (6, 20), **per)
    assert saturation.u8s8_nodes(onnx.load(path)) == []
    assert saturation.risks(path, [{"x": rng.standard_normal((6, 20)).astype(np.float32)}] * 4, 1) == []


def test_a_score_that_fails_keeps_the_first_golden_samples_and_warns(tmp_path, caplog):
    """The score reruns the int8 model with its activations exposed: a run of that model failing (here, a feed it
    does not take; a run asking past the memory cap for the exposed outputs) failed the export before, where the
    package's own model had run every sample. The golden samples stay the first ones, and the log says why."""
    from edgekit import config, pipeline, quantization

    target = config.load_target("desktop-x86")
    plan = quantization.Plan(target.quantize, reduce_range=False, attention=False, reasons=(), opset=17)
    w = np.random.default_rng(1).integers(-127, 128, (12, 20)).astype(np.int8)
    path = _qdq_model(tmp_path / "m.onnx", "Gemm", w, {"transB": 1}, ("N", 20))
    feeds = [{"not_x": np.zeros((6, 20), np.float32)}] * 20
    with caplog.at_level("WARNING", logger="edgekit"):
        assert pipeline._riskiest_first(target, plan, path, feeds, list(range(20)), None) == (feeds, None)
    assert "golden samples not chosen by AVX2 saturation risk" in caplog.text, caplog.text


def test_a_longer_sample_spends_more_of_the_budget(tmp_path):
    """Samples of several lengths: the budget was spent by the first one's cost, so a long sample past it was
    scored whatever it cost. Each sample's own rows count; the score stops before the one past MAX_PAIRS."""
    rng = np.random.default_rng(1)
    path = _qdq_model(tmp_path / "m.onnx", "Gemm", rng.integers(-127, 128, (256, 256)).astype(np.int8),
                      {"transB": 1}, ("N", 256))
    rows = saturation.MAX_PAIRS // (256 * 128) + 1  # one sample of these rows passes the budget alone
    feeds = [{"x": rng.standard_normal((n, 256)).astype(np.float32)} for n in [1] * 20 + [rows] + [1] * 3]
    assert len(saturation.risks(path, feeds, 1)) == 20


BIG_NET = """import torch.nn as nn
def build():
    return nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()).eval()
"""


def test_a_model_too_big_to_score_enough_samples_runs_no_score(tmp_path, monkeypatch):
    """A sample of 42M pair sums: MAX_PAIRS scores 2 of 32 samples, no choice for 8 golden ones (a MobileNetV2-style
    224x224 model: 2, for 1.3 s of an export bound to 1.5x onnxruntime's own calls). Decided from shapes: no sample
    is run or scored, and the golden samples are the first ones."""
    ran = []
    for name in ("_activations", "changed_outputs"):
        real = getattr(saturation, name)
        monkeypatch.setattr(saturation, name, lambda *a, real=real, name=name: ran.append(name) or real(*a))
    (tmp_path / "net.py").write_text(BIG_NET)
    rng = np.random.default_rng(0)
    for name, count in (("cal", 4), ("val", 32)):
        np.savez(tmp_path / f"{name}.npz", x=rng.random((count, 1, 64, 48, 48), dtype=np.float32))
    result = cli(["export", f"{tmp_path / 'net.py'}:build", "--input", "x:1x64x48x48", "--calibration",
                  tmp_path / "cal.npz", "--validation", tmp_path / "val.npz", "--task", "other", "--no-bench",
                  "--reduce-range", "false", "--out", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    assert "chosen" not in json.loads((tmp_path / "out" / "desktop-x86" / "manifest.json").read_text())["golden"]
    assert not ran and "saturation risk" not in result.output, ran


QUIET_NET = """import torch, torch.nn as nn
def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU(), nn.Conv2d(8, 8, 3, bias=False), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 12 * 12, 10, bias=False)).eval()
"""


def _reordered(tmp_path, case: str) -> tuple[list, list]:
    """Export arguments and the validation feeds (each sample's inputs) of a case whose golden samples are moved."""
    rng = np.random.default_rng(0)
    if case == "detector":
        images = rng.standard_normal((16, 1, 3, 16, 16)).astype(np.float32)
        np.savez(tmp_path / "cal.npz", image=images)
        np.savez(tmp_path / "val.npz", image=images[::-1])
        return ["models:score_cut_detector", "--input", "image:1x3x16x16", "--task", "detect"], \
            [{"image": x} for x in images[::-1]]
    if case == "quiet_floor":  # samples 2..7 quiet (left out of the mean cosine), 8.. within int16 but 20..22
        (tmp_path / "net.py").write_text(QUIET_NET)
        val = rng.standard_normal((32, 1, 3, 16, 16)).astype(np.float32)
        val[2:8] *= 0.01
        val[8:20] *= 0.15
        val[23:] *= 0.15
        np.savez(tmp_path / "cal.npz", x=rng.standard_normal((64, 1, 3, 16, 16)).astype(np.float32))
        np.savez(tmp_path / "val.npz", x=val)
        return [f"{tmp_path / 'net.py'}:build", "--input", "x:1x3x16x16", "--task", "other"], [{"x": x} for x in val]
    val = rng.random((48, 64), dtype=np.float32)
    val[:16] *= 0.1  # quiet first samples: their sums within int16
    np.savez(tmp_path / "cal.npz", x=rng.random((64, 64), dtype=np.float32))
    np.savez(tmp_path / "val.npz", x=val)
    auto = ["--auto", "--max-trials", "2"] if case == "auto" else []
    return ["models:saturating_mlp", "--input", "x:Nx64", *auto], [{"x": x[None]} for x in val]


@pytest.mark.parametrize("case", ["detector", "quiet_floor", "mlp", "auto"])
def test_reordered_golden_samples_are_validation_samples_and_check_still_bounds_every_figure(tmp_path, case,
                                                                                              caplog):
    """The golden samples moved first are the verdict's own (--auto's: its odd samples), each where its number
    says; check passes the package as made, and the figures bounded by its golden samples stay bounded: a cosine
    (or a detector's agreement) edited to 1.0 fails, and a quiet floor edited to leave out more of them."""
    args, feeds = _reordered(tmp_path, case)
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="edgekit"):
        result = cli(["export", *args, "--calibration", tmp_path / "cal.npz", "--validation", tmp_path / "val.npz",
                      "--no-bench", "--reduce-range", "false", "--out", out])
    assert result.exit_code == 0, result.output
    assert "saturation risk" not in caplog.text, caplog.text  # the score reads these models
    folder = out / "desktop-x86"
    manifest = json.loads((folder / "manifest.json").read_text())
    numbers = [s["sample"] for s in manifest["golden"]["chosen"]["samples"]]
    judged = range(1, len(feeds), 2) if case == "auto" else range(len(feeds))
    assert numbers and set(numbers) <= set(judged) and numbers != list(judged[:len(numbers)]), numbers
    inputs = read_golden(folder / "golden.npz")[0]
    for golden, number in zip(inputs, numbers):
        assert all(np.array_equal(golden[k], feeds[number][k]) for k in golden), number
    rest = [i for i in judged if i not in numbers][:len(inputs) - len(numbers)]  # then the verdict's first ones
    assert all(np.array_equal(g[k], feeds[i][k]) for g, i in zip(inputs[len(numbers):], rest) for k in g)
    assert cli(["check", folder]).exit_code == 0
    [first, *_] = manifest["parity"]["quantization"]["outputs"]
    edits = [lambda o: o.update(cosine=1.0)]
    edits += [lambda o: o.update(detection_agreement=1.0)] if case == "detector" else []
    edits += [lambda o: o.update(quiet_floor=1e30)] if "quiet_floor" in first else []
    for edit in edits:
        edited = json.loads(json.dumps(manifest))
        edit(edited["parity"]["quantization"]["outputs"][0])
        write_manifest(folder, edited)
        result = cli(["check", folder])
        assert result.exit_code == 1 and "not reproduced on its" in result.output, result.output
    if case == "quiet_floor":  # quiet golden samples, after the riskiest
        assert first["quiet_samples"] >= 6 and set(rest) & set(range(2, 8)), (first, numbers, rest)


def test_the_score_follows_only_the_sums_past_int16_and_finds_the_pairs_once_a_node(tmp_path):
    """changed_outputs summed every risky pair's loss per row and channel (40% of the score on a 32x32 CNN) and found
    the risky pairs again for each sample: it now follows only the sums past int16, the pairs found once a node.
    Held to every pair sum clipped by brute force, losses of both signs in one channel and an odd K included."""
    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (12, 21)).astype(np.int8)
    path = _qdq_model(tmp_path / "m.onnx", "Gemm", w, {"transB": 1}, ("N", 21), uint8_input=True)
    [node] = saturation.u8s8_nodes(onnx.load(path))
    for rows in (rng.integers(0, 256, (300, 21)), rng.integers(200, 256, (300, 21)), np.zeros((5, 21), int)):
        wide = np.pad(node.weights, ((0, 0), (0, 1))).astype(np.int64)
        x = np.pad(rows, ((0, 0), (0, 1))).astype(np.int64)
        sums = x[:, None, 0::2] * wide[None, :, 0::2] + x[:, None, 1::2] * wide[None, :, 1::2]  # (rows, O, pairs)
        zero = node.zero_point * node.weights.sum(1)
        exact, clipped = sums.sum(-1) - zero, np.clip(sums, *saturation.INT16).sum(-1) - zero
        w0, w1 = wide[:, 0::2], wide[:, 1::2]
        risky = (w0 * w1 >= 0) & (saturation.U8_MAX * np.abs(w0 + w1) > saturation.INT16[1])
        want = (int((saturation._requantized(node, exact) != saturation._requantized(node, clipped)).sum()),
                int(np.abs(sums[:, risky]).max(initial=0)))
        assert saturation.changed_outputs(node, rows.astype(np.int32)) == want
    assert want == (0, 0) and "risky" in vars(node)  # found once, kept on the node for the next sample
