"""`--precision latency`: float regions kept only where the whole model times faster (issue 14 item 3)."""
import dataclasses
import json

import numpy as np
import onnx
import pytest
from conftest import DIGITS, cli
from models import branchy

from edgekit import bench, host, precision, quantization
from edgekit.config import InputSpec, QuantSettings
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
    assert result.exit_code in (0, 1), result.output
    [m] = json.loads(result.stdout)["targets"]
    failed = [g["name"] for g in m["gates"] if not g["passed"]]
    # digits' int8 is slower than fp32 here (0.79x): the search timed every node faster in float, kept them all and
    # failed its own int8_quantized gate; it keeps one compute node int8 at least, and says float was faster
    assert result.exit_code == 0 and failed == [], (result.exit_code, failed)
    search = m["quantization"]["precision_search"]
    assert search["steps"] and search["start_p50_ms"] > 0 and search["p50_ms"] > 0
    assert "thread(s)" in search["where"]  # where it was timed
    # its "keep fp32" advice, when given, is printed with the run's warnings (it was in report.md alone)
    assert (search.get("advice") in m["warnings"]) if search.get("advice") else not [
        w for w in m["warnings"] if w.startswith("keep fp32: int8 slower than float here")]
    kept = []
    for step in search["steps"]:  # each verdict follows from the figures recorded beside it
        assert step["timing"]["estimator"] == bench.ESTIMATOR and set(step["timing"]["figures_ms"]) == {"best", "trial"}
        faster = step["timing"]["chosen"] == "trial"  # beyond the noise on the fastest runs, not on p50
        assert step["kept"] == (faster and not step["note"]), step
        kept += step["nodes"] if step["kept"] else []
    assert search["float_nodes"] == ([] if search["reverted"] else kept)  # unless the final loop disagreed
    kept = search["float_nodes"]
    assert set(kept) <= set(m["quantization"]["exclude_nodes"])
    graph = onnx.load(tmp_path / "desktop-x86" / "model.int8.onnx").graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    for node in graph.node:
        if node.name in kept:  # weights straight from a float initializer, no DequantizeLinear
            assert made_by.get(node.input[1]) != "DequantizeLinear", node.name
        elif node.op_type == "Conv":
            assert made_by.get(node.input[1]) == "DequantizeLinear", node.name
    report = (tmp_path / "desktop-x86" / "report.md").read_text()
    shown = search["where"].replace("[", "\\[").replace("]", "\\]")  # Markdown's brackets escaped
    assert f"{len(kept)} node(s) kept in float for speed" in report and shown in report


@pytest.fixture
def branchy_fp32(tmp_path):
    raw = export_torch(branchy().eval(), (InputSpec.parse("image:Nx3x16x16"),), (), 17, tmp_path / "b.onnx")
    return preprocess(raw, tmp_path / "b.fp32.onnx")[0]


def _timer(trial_ms, final_kept_ms, fp32_ms=1.5):
    """Times as a host would report them: every trial 20% faster than the best so far (`trial_ms`), then the
    final loop's figure for the kept model against the starting model's 1.0 ms (and model.onnx's `fp32_ms`)."""
    def timed(paths: dict) -> dict:
        where = {"cpu": "test", "isa": "avx2", "threads": 1, "providers": ["CPUExecutionProvider"],
                 "onnxruntime": "x"}
        ms = ({"best": 1.0, "trial": trial_ms} if "trial" in paths else
              {"start": 1.0, "kept": final_kept_ms, "fp32": fp32_ms})
        return {k: bench.summarize([ms[k]] * 5, 1.0, 1, where) for k in paths}
    return timed


@pytest.mark.parametrize("final_kept_ms,kept,fp32_ms", [(0.8, True, 1.5), (0.99, False, 1.5), (0.8, True, 0.8)])
def test_the_final_loop_must_confirm_the_kept_model_faster(branchy_fp32, tmp_path, final_kept_ms, kept, fp32_ms):
    """One run in eight shipped float nodes that its own final loop timed slower than all-int8; a search that kept
    every compute node in float shipped an "int8" model slower than model.onnx without a word."""
    feeds = [{"image": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)} for i in range(4)]
    plan = quantization.plan(branchy_fp32, QuantSettings(), set())
    first = [c.nodes[0] for c in precision.candidates(branchy_fp32)][0]
    plan = dataclasses.replace(plan, settings=dataclasses.replace(plan.settings, exclude_nodes=(first,)))
    int8 = quantization.quantize(branchy_fp32, tmp_path / "q.onnx", plan, feeds)
    started = int8.read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    chosen, record = precision.search(branchy_fp32, int8, plan, feeds, _timer(0.8, final_kept_ms, fp32_ms), work,
                                      work / "cache.json", max_trials=3, time_budget=600)
    clearly_faster = fp32_ms < record.p50_ms * (1 - precision.MARGIN)  # bench.choose's test, each run alike
    assert record.fp32_p50_ms == fp32_ms and record.advice.startswith("keep fp32") == clearly_faster
    assert record.steps and all(s.kept for s in record.steps)
    assert first not in [n for s in record.steps for n in s.nodes]  # excluded by the plan: not credited to speed
    # and the model the search starts from is not all-int8 (report.md called --auto's choice that, and its p50 so)
    assert record.start == "the plan's model (1 node(s) float already)" and record.start_p50_ms == 1.0
    assert not record.reverted or "so the plan's model (1 node(s) float already) is kept" in record.reverted
    assert len(record.untried) == len(precision.candidates(branchy_fp32)) - 3
    assert bool(record.float_nodes) == kept and (int8.read_bytes() != started) == kept
    assert bool(record.reverted) != kept and record.p50_ms == (final_kept_ms if kept else 1.0)
    assert set(chosen.settings.exclude_nodes) == {first, *record.float_nodes}


def test_the_search_never_takes_the_last_int8_node_away(branchy_fp32, tmp_path):
    """A small CNN's search timed every compute node faster in float and kept them all: model.int8.onnx was the float
    model, and its own int8_quantized gate failed (exit 1) on both runs. The deliverable stays int8, and the record
    and the advice say plainly that float was faster."""
    feeds = [{"image": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)} for i in range(4)]
    plan = quantization.plan(branchy_fp32, QuantSettings(), set())
    int8 = quantization.quantize(branchy_fp32, tmp_path / "q.onnx", plan, feeds)
    work = tmp_path / "work"
    work.mkdir()
    found = precision.candidates(branchy_fp32)
    _, record = precision.search(branchy_fp32, int8, plan, feeds, _timer(0.8, 0.8, fp32_ms=0.7), work,
                                 work / "cache.json", max_trials=len(found), time_budget=600)
    assert quantization.quantizes_anything(onnx.load(int8))
    refused = [s for s in record.steps if s.note]  # every compute node float: timed faster, and not kept
    assert refused and all(not s.kept and s.p50_ms < s.best_p50_ms for s in refused)
    assert {s.note for s in refused} == {precision.NO_INT8_LEFT}
    compute = {n.name for n in onnx.load(branchy_fp32).graph.node if n.op_type in bench.COMPUTE_OPS}
    assert record.float_nodes and compute - set(record.float_nodes)
    assert record.advice.startswith(f"keep fp32: int8 slower than float here: 0.8 ms vs 0.7 ms, {bench.ESTIMATOR}"), \
        record.advice
    assert f"every compute node float ({refused[0].why}) timed faster, and was not taken" in record.advice


OTHER_KIND = ("arm64-linux", "an arm64 target") if host.arch() == "x86_64" else ("desktop-x86", "an x86_64 target")


@pytest.mark.parametrize("flags,why", [
    (["-t", OTHER_KIND[0]], f"{OTHER_KIND[1]}, timed on {host.where()}"),  # this host's timings for another kind
    (["-t", "desktop-x86", "--quant-mode", "dynamic", "--auto"], "dynamic quantization has no calibration"),
])
def test_the_latency_search_says_why_it_did_not_run(tmp_path, flags, why):
    result = cli(["export", DIGITS / "edgekit.toml", *flags, "--precision", "latency", "--out", tmp_path, "--no-bench",
                  "--json"])
    assert result.exit_code in (0, 1), result.output
    [m] = json.loads(result.stdout)["targets"]
    assert why in m["quantization"]["precision_search"]["skipped"], m["quantization"]["precision_search"]
    # said in report.md alone: the terminal (dynamic: its failed gates) and CI took the flag as applied
    said = f"--auto and --precision latency skipped: {why}" if "dynamic" in flags else \
        f"--precision latency skipped: {why}"
    assert said in "\n".join(m["warnings"]), m["warnings"]
