"""`--precision latency`: float regions kept only where the whole model times faster (issue 14 item 3)."""
import json

import onnx
from conftest import DIGITS, cli
from models import branchy

from edgekit import precision
from edgekit.config import InputSpec
from edgekit.onnx_export import export_torch, preprocess


def test_candidates_are_end_regions_then_depthwise_convs(tmp_path):
    raw = export_torch(branchy().eval(), (InputSpec.parse("image:Nx3x16x16"),), (), 17, tmp_path / "b.onnx")
    fp32, _ = preprocess(raw, tmp_path / "b.fp32.onnx")
    found = precision.candidates(fp32)
    compute = [n.name for n in onnx.load(fp32).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert [c.why for c in found[:2]] == ["first 1 compute node(s) in float", "last 1 compute node(s) in float"]
    assert found[0].nodes == (compute[0],) and found[1].nodes == (compute[-1],)
    [dw] = [c for c in found if "depthwise" in c.why]
    assert dw.why == "all 1 depthwise convs in float" and len(dw.nodes) == 1 and "dw" in dw.nodes[0]


def test_latency_search_keeps_only_what_timed_faster_and_the_model_has_it_in_float(tmp_path):
    result = cli(["export", DIGITS / "edgekit.toml", "-t", "desktop-x86", "--precision", "latency",
                  "--out", tmp_path, "--bench-runs", "10", "--json"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)
    search = m["quantization"]["precision_search"]
    assert search["steps"] and search["all_int8_p50_ms"] > 0 and search["p50_ms"] > 0
    assert "thread(s)" in search["where"]  # where it was timed
    kept = []
    for step in search["steps"]:  # each verdict follows from the figures recorded beside it
        assert step["kept"] == (step["p50_ms"] < step["best_p50_ms"] * (1 - search["margin"])), step
        kept += step["nodes"] if step["kept"] else []
    assert search["float_nodes"] == kept
    assert set(kept) <= set(m["quantization"]["exclude_nodes"])
    graph = onnx.load(tmp_path / "desktop-x86" / "model.int8.onnx").graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    for node in graph.node:
        if node.name in kept:  # weights straight from a float initializer, no DequantizeLinear
            assert made_by.get(node.input[1]) != "DequantizeLinear", node.name
        elif node.op_type == "Conv":
            assert made_by.get(node.input[1]) == "DequantizeLinear", node.name
    report = (tmp_path / "desktop-x86" / "report.md").read_text()
    assert f"{len(kept)} node(s) kept in float for speed" in report and search["where"] in report
