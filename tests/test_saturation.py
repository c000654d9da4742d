"""The saturation score's model of MLAS's u8s8 arithmetic, held to onnxruntime's own exact int8 results (which pairs
VPMADDUBSW adds is held to emulated AVX2 kernels in test_emulate)."""
import numpy as np
import onnx
from conftest import DIGITS, cli

from edgekit import saturation


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
