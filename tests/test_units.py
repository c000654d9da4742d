"""Unit tests for the pieces: input specs, profiles, data readers, attention detection, parity metrics."""
import dataclasses
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from conftest import ROOT, cli

from edgekit import calib, config, parity, quantization as quantize
from edgekit.config import InputSpec
from edgekit.errors import InputError
from edgekit.onnx_export import export_torch


def test_input_spec_parse():
    s = InputSpec.parse("input_ids:Nxseq:int64")
    assert (s.name, s.shape, s.dtype) == ("input_ids", ("N", "seq"), "int64")
    assert s.dynamic_axes == {0: "N", 1: "seq"}
    assert InputSpec.parse("image:1x3x224x224").shape == (1, 3, 224, 224)
    assert str(InputSpec.parse("x:nx4")) == "x:Nx4:float32"


def test_every_bundled_profile_loads_and_cites_its_choices():
    names = config.list_targets()
    assert {"desktop-x86", "arm64-linux", "android-arm64", "ios-arm64"} <= set(names)
    for name in names:
        t = config.load_target(name)
        assert t.opset >= 13 and t.runtime.threads >= 1 and t.runtime.providers
        text = (ROOT / "targets" / f"{name}.toml").read_text()
        quant_section = text.split("[quantize]")[1].split("[parity]")[0]
        assert quant_section.count("#") >= 2, f"{name}: quant settings need their reasons"


def test_android_profile_follows_nnapi_rules():
    q = config.load_target("android-arm64").quantize
    assert q.activation_type == "uint8" and q.weight_type == "uint8" and not q.per_channel


def test_targets_cli_lists_and_shows():
    r = cli(["targets"])
    assert r.exit_code == 0 and "android-arm64" in r.output
    r = cli(["targets", "show", "ios-arm64"])
    assert r.exit_code == 0 and 'name = "ios-arm64"' in r.output
    r = cli(["targets", "show", "ios"])
    assert r.exit_code == 2 and "unknown target" in r.stderr


def test_help_is_fast_and_imports_no_heavy_modules():
    code = ("import sys, time; t=time.perf_counter(); from click.testing import CliRunner; import edgekit.cli as c; "
            "r=CliRunner().invoke(c.main, ['export', '--help']); assert r.exit_code == 0, r.output; "
            "heavy=[m for m in ('torch','onnxruntime','onnx','numpy') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from edgekit.config import Recipe
    assert f"else {Recipe(source='x').targets[0]};" in " ".join(cli(["export", "--help"]).output.split())
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgekit", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 2.0  # generous for a loaded CI box; the benchmark of record is < 0.5 s


def test_npz_reader_splits_samples_and_labels(tmp_path):
    spec = (InputSpec.parse("x:Nx4"),)
    np.savez(tmp_path / "d.npz", x=np.arange(12, dtype=np.float32).reshape(3, 4), labels=np.array([0, 1, 2]))
    ds = calib.load(str(tmp_path / "d.npz"), spec)
    assert len(ds) == 3 and ds.feeds[1]["x"].shape == (1, 4) and list(ds.labels) == [0, 1, 2]
    cal, val = ds.split(0.34)
    assert len(cal) == 2 and len(val) == 1 and list(val.labels) == [2]


def test_fixed_batch_samples_stack_on_a_new_axis(tmp_path):
    spec = (InputSpec.parse("x:2x4"),)
    np.save(tmp_path / "a.npy", np.zeros((5, 2, 4), np.float32))
    ds = calib.load(str(tmp_path), spec)
    assert len(ds) == 5 and ds.feeds[0]["x"].shape == (2, 4)


def test_function_reader(tmp_path):
    (tmp_path / "reader.py").write_text(
        "import numpy as np\n"
        "def samples():\n"
        "    for i in range(3):\n"
        "        yield {'x': np.full((1, 4), i, np.float32), 'label': i}\n")
    ds = calib.load(f"{tmp_path / 'reader.py'}:samples", (InputSpec.parse("x:Nx4"),))
    assert len(ds) == 3 and list(ds.labels) == [0, 1, 2]


def test_function_reader_bad_item(tmp_path):
    (tmp_path / "reader.py").write_text("def samples():\n    yield 'text'\n")
    with pytest.raises(InputError, match=r"item 0 is a str: give a dict of arrays, the inputs, or \(inputs, labels\)"):
        calib.load(f"{tmp_path / 'reader.py'}:samples", (InputSpec.parse("x:Nx4"),))


def test_npy_folder_needs_single_input(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(InputError, match="use .npz"):
        calib.load(str(tmp_path), (InputSpec.parse("x:Nx4"), InputSpec.parse("y:Nx4")))


def _export(tmp_path, module, specs):
    return export_torch(module, specs, (), 17, tmp_path / "m.onnx")


def test_quantized_ops_are_onnxs_and_onnxruntimes_quantized_ones():
    """One list decides "already quantized" (export's refusal, inspect, quantizes_anything): MatMulNBits, QLinearAdd,
    QAttention... were missing from it."""
    standard = {s.name for s in onnx.defs.get_all_schemas_with_history() if quantize.QUANTIZED_OP.search(s.name)}
    assert standard == {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                        "MatMulInteger", "ConvInteger"}
    contrib = ("QLinearAdd QLinearMul QLinearConcat QLinearSoftmax QLinearSigmoid QLinearWhere QGemm QAttention "
               "QEmbedLayerNormalization QOrderedMatMul QOrderedAttention QMoE DynamicQuantizeMatMul "
               "DynamicQuantizeLSTM MatMulIntegerToFloat MatMulInteger16 MulInteger ReduceSumInteger MatMulNBits "
               "MatMulBnb4 MatMulFpQ4 GatherBlockQuantized QuantizeBFP DequantizeWithOrder GemmFloat8").split()
    assert all(quantize.QUANTIZED_OP.search(op) for op in contrib)
    float_ops = "FusedConv FusedGemm FusedMatMul QuickGelu Gelu Attention MultiHeadAttention SkipLayerNormalization"
    assert not any(quantize.QUANTIZED_OP.search(op) for op in float_ops.split())


def test_attention_detection(tmp_path):
    from models import small_cnn, tiny_encoder
    enc = _export(tmp_path, tiny_encoder(), (InputSpec.parse("input_ids:Nx12:int64"),
                                             InputSpec.parse("attention_mask:Nx12:int64")))
    assert quantize.has_attention(onnx.load(enc))
    cnn = export_torch(small_cnn(), (InputSpec.parse("image:Nx3x16x16"),), (), 17, tmp_path / "c.onnx")
    assert not quantize.has_attention(onnx.load(cnn))


def test_a_fused_attention_op_is_an_attention_graph():
    """A com.microsoft Attention (or MultiHeadAttention) model took full static QDQ, not the profile's
    transformer_scheme: only MatMul->Softmax counted as attention."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("E", (50, 16)), ("Wqkv", (16, 48)), ("bqkv", (48,)), ("Wo", (16, 4)))]
    for op in ("Attention", "MultiHeadAttention"):
        inputs = ["e", "Wqkv", "bqkv"] if op == "Attention" else ["e", "e", "e"]
        graph = helper.make_graph([helper.make_node("Gather", ["E", "ids"], ["e"]),
                                   helper.make_node(op, inputs, ["a"], num_heads=2, domain="com.microsoft"),
                                   helper.make_node("MatMul", ["a", "Wo"], ["y"])], "g",
                                  [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])], weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid("com.microsoft", 1)])
        p = quantize.plan(model, config.QuantSettings(transformer_scheme="dynamic"), set())
        assert p.attention and p.settings.mode == "dynamic" and p.settings.op_types == ("MatMul", "Gemm", "Gather")


def test_an_attention_plan_claims_embedding_tables_only_where_there_are_some(tmp_path):
    """A block on float inputs (no embedding) was told "embedding tables (Gather) stored int8": its Gathers read
    Shape outputs."""
    from models import tiny_encoder

    enc = _export(tmp_path, tiny_encoder(), (InputSpec.parse("input_ids:Nx12:int64"),
                                             InputSpec.parse("attention_mask:Nx12:int64")))
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = torch.nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x):
            return self.attention(x, x, x)[0]

    floats = export_torch(Block(), (InputSpec.parse("x:Nx8x32"),), (), 17, tmp_path / "b.onnx")
    for scheme in ("dynamic", "matmul-static"):
        settings = config.QuantSettings(transformer_scheme=scheme)
        assert any("embedding tables (Gather) stored int8" in r for r in quantize.plan(enc, settings, set()).reasons)
        said = quantize.plan(floats, settings, set()).reasons
        assert any(r.startswith("attention graph") for r in said) and not any("embedding" in r for r in said), said


def test_reduce_range_auto_follows_host_isa(tmp_path, monkeypatch):
    from models import small_cnn
    path = export_torch(small_cnn(), (InputSpec.parse("image:Nx3x16x16"),), (), 17, tmp_path / "c.onnx")
    settings = config.QuantSettings()
    monkeypatch.setenv("EDGEKIT_HOST_ARCH", "x86_64")  # an x86 ISA's host (a run under EDGEKIT_HOST_ARCH=arm64)
    monkeypatch.setenv("EDGEKIT_HOST_ISA", "avx2")
    plan = quantize.plan(path, settings, set())
    assert plan.reduce_range and any("reduce_range" in r and "EDGEKIT_HOST_ISA" in r for r in plan.reasons)
    assert not quantize.plan(path, settings, set(), arch="arm64").reduce_range
    for isa in ("avx512-vnni", "amx-int8"):
        monkeypatch.setenv("EDGEKIT_HOST_ISA", isa)
        plan = quantize.plan(path, settings, set())
        assert not plan.reduce_range and any(r.startswith(f"reduce_range off: host ISA {isa}") for r in plan.reasons)
    assert not quantize.plan(path, config.QuantSettings(reduce_range="false"), set()).reduce_range


@pytest.mark.parametrize("name", ["convnext", "encoder"])
def test_float_outputs_are_the_same_bit_for_bit_at_any_work_thread_count(tmp_path, monkeypatch, name):
    """Why a float model's outputs within a run may come from all cores (host.work_threads): onnxruntime splits its
    kernels' work by output element. Sizes big enough that 2-3 threads do split it."""
    from models import ConvNeXtStyle, TinyEncoder

    from edgekit import host, runtime
    from edgekit.onnx_export import preprocess

    rng = np.random.default_rng(0)
    if name == "convnext":
        module = ConvNeXtStyle(dim=64)
        specs = (InputSpec.parse("image:1x3x128x128"),)
        feeds = [{"image": rng.standard_normal((1, 3, 128, 128)).astype(np.float32)} for _ in range(3)]
    else:
        module = TinyEncoder(dim=128)
        specs = (InputSpec.parse("input_ids:1x128:int64"), InputSpec.parse("attention_mask:1x128:int64"))
        feeds = [{"input_ids": rng.integers(1, 64, (1, 128)), "attention_mask": np.ones((1, 128), np.int64)}
                 for _ in range(3)]
    fp32, _ = preprocess(export_torch(module.eval(), specs, (), 17, tmp_path / "raw.onnx"), tmp_path / "fp32.onnx")
    outputs = {}
    for threads in ("1", "2", "3"):
        monkeypatch.setenv(host.WORK_THREADS_ENV, threads)
        outputs[threads] = runtime.run_onnx(runtime.session(fp32, threads=host.work_threads())[0], feeds)
    for threads in ("2", "3"):
        assert all(np.array_equal(a, b) for one, other in zip(outputs["1"], outputs[threads])
                   for a, b in zip(one, other, strict=True)), threads


def test_work_threads_refuses_what_is_not_a_count(monkeypatch):
    from edgekit import host
    from edgekit.errors import UsageError

    for bad in ("all", "0", "²"):
        monkeypatch.setenv(host.WORK_THREADS_ENV, bad)
        with pytest.raises(UsageError, match=f"EDGEKIT_WORK_THREADS='{bad}' is not a positive whole number"):
            host.work_threads()
    monkeypatch.delenv(host.WORK_THREADS_ENV)
    assert host.work_threads() >= 1


def test_runs_share_a_memory_cap_that_timings_do_not(tmp_path, monkeypatch):
    """A run (validation, calibration, golden) may allocate host.run_memory(): half the memory, 4 GiB at most, or
    EDGEKIT_RUN_MEMORY_MB, as the manifest's host records; a timing is not capped, so its figures stay as measured."""
    from onnx import TensorProto, helper

    from edgekit import bench, host, runner, runtime
    from edgekit.errors import UsageError

    monkeypatch.delenv(host.RUN_MEMORY_ENV, raising=False)
    half = host.physical_memory() // 2
    assert host.run_memory() == min(half, 4 << 30) and host.run_memory_source() in ("half the physical memory",
                                                                                    "4 GiB at most")
    for bad in ("0", "-1", "1e3", "²", str(1 << 44)):  # the last was onnxruntime's RuntimeError, exit 5
        monkeypatch.setenv(host.RUN_MEMORY_ENV, bad)
        with pytest.raises(UsageError, match=f"EDGEKIT_RUN_MEMORY_MB='{bad}' is not a whole number of MB from 1 to"):
            host.check_overrides()
    monkeypatch.setenv(host.RUN_MEMORY_ENV, "1")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1024])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "relu.onnx")
    feed = {"x": np.ones((1024, 1024), np.float32)}  # a 4 MB output
    with pytest.raises(InputError, match=r"\(its Relu node\) asked for 4 MB at once, past the 1 MB of memory a run "
                                         r"may use here \(EDGEKIT_RUN_MEMORY_MB raises it\)"):
        runtime.run_onnx(runtime.session(tmp_path / "relu.onnx", reuse=True)[0], [feed])
    timed = bench.measure_pair({"m": str(tmp_path / "relu.onnx")}, feed, ["CPUExecutionProvider"], 1, 1, 3)["m"]
    assert (timed.runs, timed.host["run_memory_mb"], timed.host["run_memory_source"]) == (3, 1, host.RUN_MEMORY_ENV)
    monkeypatch.setenv(host.RUN_MEMORY_ENV, "16")  # a new cap: a new arena, and no session reused from the last
    sess = runtime.session(tmp_path / "relu.onnx", reuse=True)[0]
    # 10 runs' 4 MB outputs kept (validation, golden and parity runs keep every sample's): onnxruntime's own arrays
    # held their arena blocks, and 48 samples of a segmentation model's outputs filled the cap
    assert len(runtime.run_onnx(sess, [feed] * 10)) == len(runner.replay(sess, [feed] * 10, {}, give_back=True)) == 10
    # a device's onnxruntime may have no CPU arena (or predate the give-back option): replay asks for none there
    import onnxruntime as ort

    no_arena = runner.options(1)
    no_arena.enable_cpu_mem_arena = False
    bare = ort.InferenceSession(str(tmp_path / "relu.onnx"), no_arena, providers=["CPUExecutionProvider"])
    assert len(runner.replay(bare, [feed] * 3, {})) == 3


def test_per_layer_error_leaves_the_callers_model_as_it_was(tmp_path):
    """The run hands its parsed float model to the per-layer analysis, which adds outputs to a copy of it."""
    from models import small_cnn

    from edgekit import layers
    from edgekit.onnx_export import preprocess

    fp32, _ = preprocess(export_torch(small_cnn(), (InputSpec.parse("image:Nx3x16x16"),), (), 17,
                                      tmp_path / "raw.onnx"), tmp_path / "fp32.onnx")
    rng = np.random.default_rng(0)
    feeds = [{"image": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(4)]
    int8 = quantize.quantize(fp32, tmp_path / "int8.onnx", quantize.plan(fp32, config.QuantSettings(), set()), feeds)
    model = onnx.load(str(fp32))
    before = model.SerializeToString()
    rows = layers.tensor_errors(model, int8, feeds)
    assert model.SerializeToString() == before
    assert rows == layers.tensor_errors(fp32, int8, feeds) and len(rows) >= 3
    assert all(r["accumulated_sqnr_db"] is not None for r in rows)  # every paired tensor found in the float model


def test_per_layer_error_skips_a_tensor_whose_length_follows_the_values(tmp_path):
    """A NonZero inside the graph kept 193 values in fp32 and 190 in int8: the analysis subtracted the two and the
    export died, exit 4 ("operands could not be broadcast together"), while the outputs were fixed-shape and fine."""
    import torch

    from edgekit import layers
    from edgekit.onnx_export import preprocess

    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 1)

        def forward(self, x):
            y = torch.relu(self.conv(x)).flatten()
            kept = y[torch.nonzero(y > 0.3).squeeze(1)] * 2.0  # its length follows the values
            return kept.sum(0, keepdim=True) + y.mean()

    torch.manual_seed(0)
    fp32, _ = preprocess(export_torch(Inner().eval(), (InputSpec.parse("x:1x1x16x16"),), (), 17, tmp_path / "r.onnx"),
                         tmp_path / "fp32.onnx")
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.random((1, 1, 16, 16), dtype=np.float32)} for _ in range(4)]
    int8 = quantize.quantize(fp32, tmp_path / "int8.onnx", quantize.plan(fp32, config.QuantSettings(), set()), feeds)
    rows = layers.tensor_errors(fp32, int8, feeds)
    moved = [r for r in rows if r.get("length_mismatches")]
    assert moved and all(r["local_sqnr_db"] is not None for r in rows), rows
    assert all(0 < r["length_mismatches"] <= len(feeds) for r in moved)
    assert any(r["accumulated_sqnr_db"] is not None for r in rows if "length_mismatches" not in r)


def test_int8_path_from_cpu_flags():
    """AMX hosts (Sapphire Rapids) run int8 GEMMs on their tiles, so figures measured there name AMX, not VNNI."""
    from edgekit import host

    assert host.isa_of({"avx2", "avx512bw", "avx512_vnni", "amx_int8"}, "x86_64") == "amx-int8"
    assert host.isa_of({"avx2", "avx512bw", "avx512_vnni"}, "x86_64") == "avx512-vnni"
    assert host.isa_of({"avx2"}, "x86_64") == "avx2" and host.isa_of(set(), "x86_64") == "sse"
    assert host.isa_of({"asimddp", "i8mm"}, "aarch64") == "arm64-i8mm"
    assert set(host.EXACT_X86).isdisjoint(host.SATURATING_X86) and set(host.EXACT_X86) < set(host.ISAS)


def test_a_machine_of_another_kind_is_its_own():
    """A 32-bit ARM (or RISC-V) device was taken for x86_64: `export --device` timed desktop-x86's package there
    and said it was measured on its device; and an x86 device's ISA was read from ARM's Features line only."""
    from edgekit import host, runner

    assert host.arch_of("armv7l") == "armv7l" and host.arch_of("AMD64") == "x86_64" and host.arch_of("arm64") == "arm64"
    assert host.isa_of({"neon"}, "armv7l") == "armv7l"
    assert set(runner.about()["features"].split()) == host.cpu_flags()  # x86's flags line, ARM's Features
    assert runner.about()["features"]


def test_a_bounded_child_leaves_no_core_file():
    """An emulated run that crashed dropped 220 MB core files in the working folder."""
    from edgekit import bounded

    code, out, _ = bounded.capped_run([sys.executable, "-c", "import resource; print(resource.getrlimit("
                                       "resource.RLIMIT_CORE))"], b"", 60, "core limit")
    assert code == 0 and out.decode().strip() == "(0, 0)"


def test_parity_metrics():
    ref = [[np.array([[1.0, 2.0, 3.0]], np.float32)], [np.array([[3.0, 1.0, 0.0]], np.float32)]]
    assert parity.compare(["y"], ref, ref)[0].top1_agreement is None  # not a classifier: no top-1
    same = parity.compare(["y"], ref, ref, task="classify")[0]
    assert same.cosine == pytest.approx(1.0) and same.sqnr_db == 200.0 and same.max_abs == 0 and same.top1_agreement == 1
    noisy = [[r[0] + np.array([[0.1, -0.1, 0.0]], np.float32)] for r in ref]
    p = parity.compare(["y"], ref, noisy, task="classify")[0]
    signal = 1 + 4 + 9 + 9 + 1
    assert p.sqnr_db == pytest.approx(10 * np.log10(signal / 0.04), abs=1e-3)
    assert p.max_abs == pytest.approx(0.1, abs=1e-6) and p.top1_agreement == 1.0
    flipped = [[np.array([[3.0, 2.0, 1.0]], np.float32)], [np.array([[3.0, 1.0, 0.0]], np.float32)]]
    assert parity.compare(["y"], ref, flipped, task="classify")[0].top1_agreement == 0.5
    huge = [[np.array([[3e200, -1e200, 2e200]])]]  # a quantized mask path: no overflow, a real cosine
    big = parity.compare(["y"], huge, [[huge[0][0] * 0.5]])[0]
    assert big.cosine == pytest.approx(1.0) and big.sqnr_db == pytest.approx(10 * np.log10(4), abs=1e-3)
    assert parity.accuracy(ref, np.array([2, 0])) == 100.0
    with pytest.raises(InputError, match="one label per row"):
        parity.accuracy(ref, np.array([2, 0, 1]))


def test_unlabelled_class_scores_fail_top1_only_on_evidence_of_a_loss():
    """Task auto without labels: fp32's top class against int8's needs no labels, but an embedding's or a value's
    argmax flips on near-ties harmlessly, and one flip of an untrained net's 16 rows is chance: failed below the bar
    beyond chance with a channel that lost its spread; skipped with the figures otherwise; at the bar, as before."""
    spec = config.ParitySpec()
    rng = np.random.default_rng(0)
    ref = [[rng.standard_normal((4, 6)).astype(np.float32)] for _ in range(8)]

    def judged(cand, reference=ref):
        out = parity.compare(["y"], reference, cand, task="auto")[0]
        return out, next(g for g in parity.quantization_gates([out], None, spec, "auto") if g.name == "top1_agreement")

    out, gate = judged(ref)  # held: skipped as under task other, and not shown
    assert out.top1_agreement == 1 and gate.skipped == parity.NO_CLASS_SCORES
    assert parity.unlabelled_shown(parity.StageParity("d", 8, (out,)), spec, "auto").outputs[0].top1_agreement is None
    tied = [[np.concatenate([r[0][:, :1], np.full((4, 5), 9.0, np.float32)], 1)] for r in ref]  # 5 scores merged
    out, gate = judged(tied)
    assert out.top1_rows == 32 and parity.significantly_below(out.top1_agreement, 32, spec.top1_agreement_min)
    assert out.centred_sqnr_db < spec.centred_sqnr_min_db and not gate.passed and gate.value == out.top1_agreement
    assert parity.unlabelled_shown(parity.StageParity("d", 8, (out,)), spec, "auto").outputs[0] == out  # shown
    [few] = [g for g in parity.quantization_gates([out], None, spec, "auto", samples=parity.FEW_SAMPLES - 1)
             if g.name == "top1_agreement"]  # figures of too few samples to stand for real inputs: not failed
    assert few.passed and few.value is None and f"fewer than {parity.FEW_SAMPLES}" in few.skipped, few
    # features 0 and 1 a near-tie (1 leads by 0.001) that a 0.002 error on 0 flips, each channel's spread kept
    lead = [[np.concatenate([r[0][:, :1] + 9, r[0][:, :1] + 9.001, r[0][:, 2:]], 1)] for r in ref]
    out, gate = judged([[r[0] + np.array([0.002, 0, 0, 0, 0, 0], np.float32)] for r in lead], lead)
    assert out.top1_agreement == 0 and out.centred_sqnr_db > spec.centred_sqnr_min_db, out
    assert gate.passed and gate.value is None and "keeps its spread" in gate.skipped, gate
    row = next(k for k in range(4) if ref[0][0][k].argmax() != 1)  # 1 of 16 rows merged: below the bar by chance
    one = [[r[0].copy()] for r in ref[:4]]
    one[0][0][row] = tied[0][0][row]
    out, gate = judged(one, ref[:4])
    assert out.top1_agreement == 15 / 16 and out.centred_sqnr_db < spec.centred_sqnr_min_db, out
    assert gate.passed and gate.value is None and "95% upper bound" in gate.skipped, gate
    assert parity.compare(["y"], ref, tied, task="other")[0].top1_agreement is None  # the user's other: unmeasured
    # classify records the rows its top-1 counted (check's bound), and keeps its figures whatever they are
    out = parity.compare(["y"], ref, ref, task="classify")[0]
    assert out.top1_rows == 32 and out.top_class_sqnr_db is None, out
    assert parity.unlabelled_shown(parity.StageParity("d", 8, (out,)), spec, "classify").outputs[0] == out


def test_unlabelled_top1_judges_the_spread_of_the_top_class_channels_alone():
    """A ReLU embedding's nearly dead channel (under one int8 step: ~0 dB centred whatever int8 does) is never fp32's
    top class, yet as the output's worst channel it failed task auto's top-1 (near-ties flipped on 0.915 of 400 rows)
    as "a channel that lost its spread", while every channel whose argmax matters kept ~28 dB."""
    spec, rng = config.ParitySpec(), np.random.default_rng(0)
    ref = [[np.maximum(0, np.concatenate([rng.uniform(-0.02, 0.01, (20, 1)), 4 + 0.2 * rng.standard_normal((20, 255))],
                                         1)).astype(np.float32)] for _ in range(20)]
    out = parity.compare(["y"], ref, [[np.round(r[0] / 0.025) * 0.025] for r in ref], task="auto")[0]
    assert parity.significantly_below(out.top1_agreement, out.top1_rows, spec.top1_agreement_min), out
    [gate] = [g for g in parity.quantization_gates([out], None, spec, "auto", samples=20) if g.name == "top1_agreement"]
    assert gate.passed and gate.value is None and "top-class channel keeps its spread" in gate.skipped, gate
    assert out.centred_sqnr_db < 0 and out.top_class_sqnr_db >= spec.centred_sqnr_min_db, out
    shown = parity.unlabelled_shown(parity.StageParity("d", 20, (out,)), spec, "auto")
    assert shown.outputs[0] == out  # recorded, shown


def test_an_all_zero_sample_of_a_relu_head_does_not_sink_the_cosine():
    """One all-zero reference row with one step of int8 noise counted as cosine 0: 15 identical samples and that
    one gave cosine 0.9375 at 57.8 dB, a quant_cosine FAIL of a near-perfect model."""
    rng = np.random.default_rng(0)
    ref = [[rng.random((1, 4)) + 0.5] for _ in range(15)] + [[np.zeros((1, 4))]]
    cand = [[r[0].copy()] for r in ref[:15]] + [[np.array([[0.0, 0.01, 0.0, 0.0]])]]
    p = parity.compare(["y"], ref, cand)[0]
    assert p.cosine == pytest.approx(1.0) and p.cosine_min == pytest.approx(1.0)
    assert p.max_abs == pytest.approx(0.01) and p.sqnr_db < 200  # the noise still counts
    ref[-1][0][0, 0] = 0.5  # a sample with a direction of its own
    assert parity.compare(["y"], ref, cand)[0].cosine_min == pytest.approx(0.0)
    # small samples wrong in int8 beside one that sets the scale: their loss must show
    small = [[np.full((1, 4), 0.001)] for _ in range(15)] + [[np.ones((1, 4))]]
    flipped = [[-r[0]] for r in small[:15]] + [small[-1]]
    assert parity.compare(["y"], small, flipped)[0].cosine_min == pytest.approx(-1.0)


def test_parity_with_varying_lengths_and_scalar_outputs():
    ref = [[np.ones((1, 5, 3))], [np.ones((1, 9, 3))]]
    assert parity.compare(["h"], ref, ref)[0].cosine == pytest.approx(1.0)
    scalar_ref = [[np.array([1.0])], [np.array([2.0])], [np.array([3.0])]]
    scalar_bad = [[np.array([3.0])], [np.array([2.0])], [np.array([1.0])]]
    p = parity.compare(["s"], scalar_ref, scalar_bad)[0]
    assert p.cosine == pytest.approx(10 / 14)  # one cosine over all samples, not ±1 per sample


def test_dynamo_exporter_also_works(tmp_path):
    from models import small_cnn
    path = export_torch(small_cnn(), (InputSpec.parse("image:Nx3x16x16"),), (), 18, tmp_path / "d.onnx", "dynamo")
    import onnxruntime as ort
    out = ort.InferenceSession(str(path)).run(None, {"image": np.zeros((3, 3, 16, 16), np.float32)})[0]
    assert out.shape == (3, 5)


def test_the_dynamo_exporter_splits_at_the_profiles_opset(tmp_path):
    """At opset 17 (every bundled profile's) a chunk() was Split with opset 18's num_outputs, which onnx's checker
    refused: `--exporter dynamo` failed on any model that splits a tensor (examples/vad's GRU cell among them)."""
    import torch

    from edgekit.onnx_export import check

    class Halves(torch.nn.Module):
        def forward(self, x):
            a, b = x.chunk(2, dim=1)
            return a * b

    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    path = export_torch(Halves(), (InputSpec.parse("x:Nx8"),), (), 17, tmp_path / "h.onnx", "dynamo")
    check(path)
    import onnxruntime as ort
    out = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(out, x[:, :4] * x[:, 4:])


def test_bundled_digits_reader(tmp_path):
    ds = calib.load(f"{ROOT / 'calibration' / 'readers.py'}:digits_train", (InputSpec.parse("image:Nx1x8x8"),))
    assert len(ds) == 1197 and ds.labels is not None and ds.feeds[0]["image"].shape == (1, 1, 8, 8)
    assert 0.0 <= min(f["image"].min() for f in ds.feeds) and max(f["image"].max() for f in ds.feeds) <= 1.0


def test_output_name_colliding_with_internal_name_is_explained(tmp_path):
    """The dynamo exporter names aten.embedding's output `embedding`; an output named so breaks SSA."""
    from models import tiny_encoder

    from edgekit.errors import StageError
    specs = (InputSpec.parse("input_ids:Nx12:int64"), InputSpec.parse("attention_mask:Nx12:int64"))
    with pytest.raises(StageError, match="choose another --output-name"):
        export_torch(tiny_encoder(), specs, ("embedding",), 18, tmp_path / "e.onnx", "dynamo")



def test_a_name_onnxruntime_made_twice_is_not_blamed_on_output_names(tmp_path):
    """onnxruntime's pre-processing of a float16 model whose If branch reads a weight made one Cast name twice
    (InsertedPrecisionFreeCast_W16): the check's hint said "choose another --output-name", no option of an .onnx
    source, and no name the user gave."""
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.errors import StageError
    from edgekit.onnx_export import preprocess

    def branch(op, out):
        return helper.make_graph([helper.make_node(op, ["y", "W16"][:2 if op == "MatMul" else 1], [out])], out, [],
                                 [helper.make_tensor_value_info(out, TensorProto.FLOAT16, [1, 8])])

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W16"], ["y"], name="mm"),
         helper.make_node("ReduceSum", ["y"], ["s"], keepdims=0, name="rs"),
         helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
         helper.make_node("If", ["cond"], ["yi"], then_branch=branch("MatMul", "yt"),
                          else_branch=branch("Identity", "ye"), name="if"),
         helper.make_node("Add", ["y", "yi"], ["out"], name="add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT16, [1, 8])],
        [numpy_helper.from_array((np.random.default_rng(0).standard_normal((8, 8)) * 0.3).astype(np.float16), "W16"),
         numpy_helper.from_array(np.array(-1e4, np.float16), "zero")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    try:
        preprocess(tmp_path / "m.onnx", tmp_path / "p.onnx")
    except StageError as e:  # onnxruntime 1.32's pre-processing: a toolchain failure, named as onnx's checker says
        assert "InsertedPrecisionFreeCast_W16" in str(e) and "--output-name" not in str(e), e


def test_plain_strips_every_terminal_escape():
    """Only CSI codes were stripped: an OSC 8 hyperlink, a window title and `ESC ( B` reached the terminal."""
    from edgekit.errors import InputError, plain
    raw = ("a \x1b]8;;https://e.example/x\x1b\\link\x1b]8;;\x1b\\ b\x1b(B \x1b]0;title\x07c \x1b[1;31mred\x1b[0m\x1b[?25l"
           "\r\x07\x00\x9b d\n\te \x1b")
    assert plain(raw) == "a link b c red d\n\te " and str(InputError(raw)) == "a link b c red d\n\te "


def test_onnxruntime_messages_keep_their_cause_first():
    from edgekit.errors import first_line
    raw = ("[ONNXRuntimeError] : 1 : FAIL : Exception during initialization: /onnxruntime_src/onnxruntime/core/graph/"
           "graph_utils.cc:479 onnxruntime::NodeArg& onnxruntime::graph_utils::AddInitializerWithOrtValue("
           "onnxruntime::Graph&, const onnx::TensorProto&, onnxruntime::Tensor&&) [ONNXRuntimeError] : 1 : FAIL : "
           "graph.cc:4164 AddInitializedOrtValue Attempt to replace the existing tensor")
    assert first_line(RuntimeError(raw), 80) == "AddInitializedOrtValue Attempt to replace the existing tensor"
    assert first_line(RuntimeError("plain\nsecond")) == "plain" and first_line(ValueError()) == "ValueError"
    # a load failure (onnxruntime 1.17.3's): its path, source location and `void ...(...)` filled 200 characters
    load = ("[ONNXRuntimeError] : 1 : FAIL : Load model from /tmp/x/desktop-x86/model.int8.onnx failed:/onnxruntime_src"
            "/onnxruntime/core/graph/model_load_utils.h:46 void onnxruntime::model_load_utils::ValidateOpsetForDomain("
            "const std::unordered_map<std::__cxx11::basic_string<char>, int>&, const onnxruntime::logging::Logger&, "
            "bool, const std::string&, int) ONNX Runtime only *guarantees* support for models stamped with official "
            "released onnx opset versions. Opset 5 is under development and support for this is limited.\n")
    assert first_line(RuntimeError(load)) == ("ONNX Runtime only *guarantees* support for models stamped with "
                                              "official released onnx opset versions. Opset 5 is under development "
                                              "and support for this is limited.")


def test_multi_thread_sessions_do_not_spin_between_timed_runs():
    """Timed round-robin, a session's spinning pool takes the cores from the next one's run (benchmarks/
    quantize_speed.py's thread row: ResNet18-style int8 at 2 threads 3x slower interleaved than alone)."""
    from edgekit import runner

    assert runner.options(2).get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # one thread has no pool to spin
        runner.options(1).get_session_config_entry("session.intra_op.allow_spinning")



def test_sessions_flush_denormals_and_fuse_as_default_sessions_do(tmp_path):
    """edgekit's sessions flush denormals (a masked softmax ran ~7x slower), and fuse Add+LayerNormalization as an
    app's default session does: turning the fusion off for speed moved a dynamic int8 MiniLM's outputs 15x past its
    golden tolerance, failing `check` on packages made before."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgekit import runner

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8]) for n in ("x", "skip", "y")]
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "skip"], ["sum"]),
         helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1)], "g", io[:2], io[2:],
        [numpy_helper.from_array(np.ones(8, np.float32), "gamma"), numpy_helper.from_array(np.zeros(8, np.float32),
                                                                                             "beta")])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(model))

    def ops(opts) -> list[str]:
        opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]

    default = ort.SessionOptions()
    default.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert ops(default) == ops(runner.options(1)) == ["SkipLayerNormalization"]
    assert runner.options(1).get_session_config_entry("session.set_denormal_as_zero") == "1"


def test_torch_reference_runs_batched_only_where_samples_stay_apart():
    """run_torch stacks one-sample feeds into batches when the model keeps samples apart, and gives the same
    outputs as one call a sample; a model that mixes samples across the batch, or drops the batch axis, is run
    one sample at a time."""
    import torch

    from edgekit import runtime

    rng = np.random.default_rng(0)
    feeds = [{"x": rng.random((1, 3, 8, 8), dtype=np.float32)} for _ in range(100)]
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 5)).eval()
    calls = []
    conv.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))

    def alone(model) -> list[np.ndarray]:
        with torch.no_grad():
            return [model(torch.from_numpy(f["x"])).numpy() for f in feeds]

    batched = runtime.run_torch(conv, feeds, ["x"])
    # the first two samples alone, then the batches: the first one's outputs checked against them
    assert calls == [1, 1, runtime.TORCH_BATCH, 100 - runtime.TORCH_BATCH]
    assert [len(r) for r in batched] == [1] * 100 and all(r[0].shape == (1, 5) for r in batched)
    assert all(np.allclose(b[0], s, rtol=1e-5, atol=1e-6) for b, s in zip(batched, alone(conv)))

    big = [{"x": np.zeros((1, 3, 224, 224), np.float32)}] * 10  # 602 KB a sample: 3 to a 2 MiB batch
    assert runtime._batch_size(big, ["x"]) == runtime.TORCH_BATCH_BYTES // big[0]["x"].nbytes == 3

    class MixesSamples(torch.nn.Module):  # centred over the batch: a batch of one gives zeros, a batch of 2 does not
        def forward(self, x):
            return x.flatten(1) - x.flatten(1).mean(0)

    class DropsBatchAxis(torch.nn.Module):
        def forward(self, x):
            return x.sum()

    for model in (MixesSamples(), DropsBatchAxis()):
        got, want = runtime.run_torch(model, feeds, ["x"]), alone(model)
        assert all(np.array_equal(g[0], w) for g, w in zip(got, want)), type(model).__name__


def test_a_time_limit_fires_on_time_after_a_longer_one_and_survives_one_that_fails():
    """One watching thread serves every run's limit: a limit set while it waits for a later one must wake it, and
    an expiry that raises must not end it (every later run would then be unbounded)."""
    from edgekit import deadlines

    fired = []
    with deadlines.within(60, lambda: fired.append("late")), deadlines.within(0.05, lambda: 1 / 0):
        start = time.monotonic()
        with deadlines.within(0.2, lambda: fired.append(time.monotonic() - start)):
            time.sleep(1.0)
    assert len(fired) == 1 and 0.15 < fired[0] < 0.9, fired


def test_a_timed_run_past_the_run_limit_is_ended(tmp_path):
    """The benchmark's runs had no limit: a model whose run time changes from run to run hung its 84th for good."""
    from onnx import TensorProto, helper

    from edgekit import bench, runtime
    from edgekit.errors import StageError

    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Identity", ["v"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info(
            "c", TensorProto.BOOL, []), helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), helper.make_tensor_value_info(
            "v_out", TensorProto.FLOAT, [1, 4])])
    graph = helper.make_graph([helper.make_node("Loop", ["trips", "", "x"], ["y"], body=body)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor("trips", TensorProto.INT64, [], [10**13])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    start = time.monotonic()
    with runtime.runs_limited(1.0, "--step-timeout"), pytest.raises(
            StageError, match=r"latency failed: a run of the model took longer than 1 s \(the limit; raise it with "
                              r"--step-timeout\)"):
        bench.measure_pair({"m": str(tmp_path / "m.onnx")}, {"x": np.zeros((1, 4), np.float32)},
                           ["CPUExecutionProvider"], 1, 1, 1)
    assert time.monotonic() - start < 10


def test_the_onnxruntime_floor_is_the_first_release_export_runs_on():
    """pyproject said onnxruntime>=1.20, but quantize_static takes `calibration_cache_path` (quantization passes it)
    from 1.27.0 only: an export on 1.20.1-1.26.0 exited 4, `unexpected keyword argument`. Among pip's releases,
    1.26.0 fails so and 1.27.0 exports the digits example for every target (and checks it)."""
    import inspect
    import tomllib

    from onnxruntime.quantization import quantize_static

    needs = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [d.split("#")[0].strip() for d in needs if d.startswith("onnxruntime")] == ["onnxruntime>=1.27"], needs
    assert "calibration_cache_path" in inspect.signature(quantize_static).parameters


def test_a_target_new_to_out_joins_its_record_once_swapped_in():
    """The record swapped in first, mid-publish, named a target new to OUT: a run killed before that target's folder
    went in left OUT as it was, and check failed it as missing for good (later exports kept the entry)."""
    from edgekit import published

    before = published.Published({"desktop-x86": ("a" * 64,)})
    during, after = published.merged(before, {"desktop-x86": "a" * 64}, {"desktop-x86": "b" * 64,
                                                                          "arm64-linux": "c" * 64})
    assert during.targets == {"desktop-x86": ("a" * 64, "b" * 64)}
    assert after.targets == {"desktop-x86": ("b" * 64,), "arm64-linux": ("c" * 64,)}


def test_models_are_timed_in_blocks_that_take_turns(tmp_path):
    """Timed one run each in turn, a large fp32 model's weights took the cache from the int8 model's next run, and
    int8's speed-up read low (2.58x against 2.92x): each model runs in blocks, rewarmed after the other's."""
    from onnx import TensorProto, helper

    from edgekit import runner

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "relu.onnx")
    ran = []

    class Recorded:  # a real onnxruntime session, its runs logged by name
        def __init__(self, name):
            self.name, self.session = name, runner.session(str(tmp_path / "relu.onnx"))

        def run(self, *args):
            ran.append(self.name)
            return self.session.run(*args)

    times = runner.time_round_robin({"a": Recorded("a"), "b": Recorded("b")}, {"x": np.ones((1, 4), np.float32)},
                                    warmup=1, runs=25)
    assert [len(t) for t in times.values()] == [25, 25]
    block, rewarm = runner.BLOCK, runner.REWARM
    # a warm-up run each, then rounds of 10 (the last of 5), each after 3 untimed runs, the order reversed each round
    expected = ["a" * (rewarm + block), "b" * (rewarm + block) * 2, "a" * (rewarm + block), "a" * (rewarm + 5),
                "b" * (rewarm + 5)]
    assert "".join(ran) == "ab" + "".join(expected)


def test_float16_weights_the_quantizer_would_leave_float16_are_refused():
    """Weights onnxruntime's quantizer cannot read as float32 (no Cast of them to fold) stayed float16 in an "int8"
    model whose manifest said int8 weights: refused, with the .float() that fixes it, as a half model fed float32."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float16), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InputError, match=r"weights are 16-bit floats \(1 .*call \.float\(\) on it first"):
        quantize.plan(model, config.QuantSettings(), set())


def test_peak_memory_follows_the_models_weights(tmp_path):
    """PRODUCT.md promises peak memory beside latency; a small model's was hidden under the peak of onnxruntime's own
    import (ru_maxrss read 0.0 MB for digits): the peak is reset once the runtime is imported."""
    from onnx import TensorProto, helper, numpy_helper

    from edgekit import bench

    paths = {}
    for name, rows in (("small", 256), ("large", 32768)):  # weights of 1 MB and 128 MB
        weight = numpy_helper.from_array(np.ones((rows, 1024), np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])], [weight])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / f"{name}.onnx")
        paths[name] = str(tmp_path / f"{name}.onnx")
    feeds = {"small": {"x": np.ones((1, 256), np.float32)}, "large": {"x": np.ones((1, 32768), np.float32)}}
    peaks = {k: bench.peak_memory({k: paths[k]}, feeds[k], {k: ["CPUExecutionProvider"]}, 1)[k] for k in paths}
    assert 0 < peaks["small"] < 64 < 128 <= peaks["large"] < 512, peaks


def test_concat_tails_are_found_in_one_walk():
    """The Concat-kept-float rule recursed per reader: 22 of Concat(x, x) took 4^11 walks (23 s, 24 deep 2.4 GB)
    and a chain of 1,500 Concats was exit 5 (RecursionError). Each tensor is decided once now."""
    from onnx import TensorProto, helper

    from edgekit.config import QuantSettings

    def graph(nodes, last):
        return helper.make_model(helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
            [helper.make_tensor_value_info(last, TensorProto.FLOAT, None)],
            value_info=[helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in nodes]))

    chain = [helper.make_node("Concat", [f"c{i - 1}" if i else "x", "x"], [f"c{i}"], name=f"k{i}", axis=1)
             for i in range(1500)]
    chain.insert(750, helper.make_node("Relu", ["c749"], ["r"], name="relu"))  # read by compute: none before it
    chain[751].input[0] = "r"
    kept = quantize.concat_outputs(graph(chain, "c1499"), QuantSettings())
    assert kept == [f"k{i}" for i in range(750, 1500)]
    doubling = [helper.make_node("Concat", [f"c{i - 1}" if i else "x"] * 2, [f"c{i}"], name=f"d{i}", axis=1)
                for i in range(40)]  # 4^20 walks the old way: this test would never end (the chain fails first)
    assert quantize.concat_outputs(graph(doubling, "c39"), QuantSettings()) == [f"d{i}" for i in range(40)]
    untyped = graph(doubling, "c39")
    del untyped.graph.value_info[1:]  # types shape inference left unrecorded: a Concat joining a kept one is float
    assert quantize.concat_outputs(untyped, QuantSettings()) == [f"d{i}" for i in range(40)]


def test_a_float16_weight_a_sub_graph_reads_is_kept(tmp_path):
    """Folding a float16 model's weight Casts removed a weight no top-level node read any more, though an If
    branch did: exit 4, 'Nodes in a graph must be topologically sorted, however input 'W16' of node:'."""
    import edgekit
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 8])
    branch = [helper.make_graph([helper.make_node("Concat", ins, [out], name=f"{out}_cat", axis=0)], out, [],
                                [helper.make_tensor_value_info(out, TensorProto.FLOAT16, [9, 8])])
              for ins, out in ((["W16", "x"], "wt"), (["x", "W16"], "we"))]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W16"], ["y"], name="mm"),
         helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="rs"),
         helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
         helper.make_node("If", ["cond"], ["w"], then_branch=branch[0], else_branch=branch[1], name="if")], "g", [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 8]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT16, [9, 8])],
        [numpy_helper.from_array((rng.standard_normal((8, 8)) * 0.3).astype(np.float16), "W16"),
         numpy_helper.from_array(np.array(0, np.float16), "zero")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    np.save(tmp_path / "cal.npy", rng.standard_normal((16, 1, 8)).astype(np.float16))
    int8 = edgekit.quantize(tmp_path / "m.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "q.onnx")
    onnx.checker.check_model(onnx.load(str(int8)), full_check=True)


def _half_chain(weights: int):
    """A float16 model's graph after onnxruntime's pre-processing: each weight read through a Cast to float32 (by a
    Conv), and as many dead Relus (nothing reads them), each with an unread weight of its own."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, x = [], [], "x"
    for i in range(weights):
        inits += [numpy_helper.from_array(np.full((4, 4, 1, 1), 0.5, np.float16), f"w{i}"),
                  numpy_helper.from_array(np.full((4,), i, np.float32), f"unread{i}")]
        nodes += [helper.make_node("Cast", [f"w{i}"], [f"w{i}/f32"], name=f"cast{i}", to=TensorProto.FLOAT),
                  helper.make_node("Conv", [x, f"w{i}/f32"], [f"c{i}"], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"dead{i}"], name=f"dead{i}")]
        x = f"c{i}"
    return helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
                             [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 4, 4, 4])], inits)


def _seconds(change, graph) -> float:
    """The best of seven timings of `change` on fresh copies of `graph` (milliseconds each): of three, a loaded 2-core
    host made a linear pass's 4.4x read 8.5x."""
    times = []
    for _ in range(7):
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        start = time.perf_counter()
        change(model)
        times.append(time.perf_counter() - start)
    return min(times)


REMOVALS = {  # each pass, and what it must leave none of (an op type, a weight name's start)
    "fold_half_casts": (quantize.fold_half_casts, ("Cast", "w")),
    "drop_unread": (lambda model: quantize.drop_unread(model.graph), ("Relu", "unread")),
}


@pytest.mark.parametrize("name", REMOVALS)
def test_removing_nodes_and_weights_grows_linearly_with_the_graph(name):
    """Nodes and weights were removed one by one (protobuf's remove() searches the field comparing whole messages):
    a float16 model's 4,000 weight Casts took 14 s to fold. 4x the nodes must take well under 16x the time."""
    change, (op, weight) = REMOVALS[name]
    small, large = _half_chain(500), _half_chain(2000)
    model = onnx.helper.make_model(large, opset_imports=[onnx.helper.make_opsetid("", 17)])
    change(model)
    assert op not in {n.op_type for n in model.graph.node}
    assert not [t.name for t in model.graph.initializer if t.name.startswith(weight) and "/" not in t.name]
    assert len(model.graph.node) == 2 * 2000  # the other two of each weight's three nodes
    ratio = _seconds(change, large) / _seconds(change, small)
    assert ratio < 8, f"4x the nodes took {ratio:.1f}x the time"


@pytest.fixture(scope="module")
def stem_fp32(tmp_path_factory):
    """models:stem_cnn's float model and calibration feeds: an RGB stem of 16 output channels."""
    from models import stem_cnn
    path = export_torch(stem_cnn(), (InputSpec.parse("image:Nx3x16x16"),), (), 17,
                        tmp_path_factory.mktemp("stem") / "stem.onnx")
    rng = np.random.default_rng(0)
    return path, [{"image": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]


def test_an_rgb_stem_is_padded_to_4_channels_where_the_fast_int8_conv_needs_it(stem_fp32, tmp_path, monkeypatch):
    """onnxruntime's symmetric int8 conv (x86-64 from AVX2) takes only multiples of 4 input channels: the stem gets a
    zero 4th channel (uint8 Pad by the zero point after the input's QuantizeLinear), the same outputs bit for bit,
    and the manifest's decisions say so. Without such a kernel (sse, ARM64 under 64 channels) it stays 3."""
    from edgekit.runtime import run_onnx, session

    fp32, feeds = stem_fp32
    monkeypatch.setenv("EDGEKIT_HOST_ARCH", "x86_64")
    monkeypatch.setenv("EDGEKIT_HOST_ISA", "avx2")
    plan = quantize.plan(fp32, config.QuantSettings(), set())
    assert plan.padded_convs == ("/body/body.0/Conv",)  # the stem; not the 6-channel conv between int8 convs
    padded = quantize.quantize(fp32, tmp_path / "padded.onnx", plan, feeds)
    quantize.quantize(fp32, padded, plan, feeds)  # a trial again (tune's): one record
    plain = quantize.quantize(fp32, tmp_path / "plain.onnx", dataclasses.replace(plan, padded_convs=()), feeds)
    graph = onnx.load(str(padded)).graph
    weights = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    conv = next(n for n in graph.node if n.op_type == "Conv" and n.name == plan.padded_convs[0])
    dq_x, dq_w = producer[conv.input[0]], producer[conv.input[1]]
    assert list(weights[dq_w.input[0]].dims) == [16, 4, 3, 3]
    pad = producer[dq_x.input[0]]
    assert pad.op_type == "Pad" and producer[pad.input[0]].op_type == "QuantizeLinear"
    assert weights[pad.input[2]].data_type == onnx.TensorProto.UINT8  # the zero point: real 0
    every = [{"image": np.random.default_rng(i).standard_normal((2, 3, 16, 16)).astype(np.float32) * 3}
             for i in range(4)]
    outs = [run_onnx(session(path)[0], every) for path in (padded, plain)]
    assert all(np.array_equal(a, b) for x, y in zip(*outs) for a, b in zip(x, y))
    said = [d for d in quantize.done(onnx.load(str(padded))) if d.startswith("int8 Conv input channels padded")]
    assert len(said) == 1 and "(3 -> 4)" in said[0] and "host ISA avx2 from EDGEKIT_HOST_ISA" in said[0], said
    monkeypatch.setenv("EDGEKIT_HOST_ISA", "sse")  # no symmetric int8 conv kernel: left as it is, and said why
    sse = quantize.plan(fp32, config.QuantSettings(), set())
    assert sse.padded_convs == () and any(r.startswith("int8 Conv input channels not padded") and
                                          "host ISA sse (from EDGEKIT_HOST_ISA)" in r for r in sse.reasons)
    monkeypatch.setenv("EDGEKIT_HOST_ISA", "avx512-vnni")
    for other in (quantize.plan(fp32, config.QuantSettings(), set(), arch="arm64"),  # ARM64: none under 64 channels
                  quantize.plan(fp32, config.QuantSettings(activation_type="int8"), set()),  # x86 has no S8S8 kernel
                  quantize.plan(fp32, config.QuantSettings(weight_type="uint8"), set())):  # nor asymmetric weights
        assert other.padded_convs == () and not any("padded" in r for r in other.reasons)


def test_per_layer_error_keeps_the_input_row_of_a_padded_stem(stem_fp32, tmp_path, monkeypatch):
    """The stem padded to 4 channels (pad_convs) has no DequantizeLinear of the 3-channel input: onnxruntime's
    debugger, pairing by name, dropped the input's row. It is compared on its 3 channels, as unpadded (41.8 dB)."""
    from edgekit import layers

    fp32, feeds = stem_fp32
    monkeypatch.setenv("EDGEKIT_HOST_ARCH", "x86_64")
    monkeypatch.setenv("EDGEKIT_HOST_ISA", "avx2")
    plan = quantize.plan(fp32, config.QuantSettings(), set())
    assert plan.padded_convs
    padded = quantize.quantize(fp32, tmp_path / "padded.onnx", plan, feeds)
    plain = quantize.quantize(fp32, tmp_path / "plain.onnx", dataclasses.replace(plan, padded_convs=()), feeds)
    rows = [{r["tensor"]: r for r in layers.tensor_errors(fp32, path, feeds, limit=2)} for path in (padded, plain)]
    assert rows[0] == rows[1] and rows[0]["image"]["local_sqnr_db"] > 30


def test_the_padding_record_is_the_shipped_trials_not_the_last_ones(stem_fp32, tmp_path, monkeypatch):
    """--auto and --precision latency run trials on one plan and ship one of them: a later trial keeping the stem
    float said nothing was padded while the shipped model had the Pad (and the other way round)."""
    fp32, feeds = stem_fp32
    monkeypatch.setenv("EDGEKIT_HOST_ARCH", "x86_64")
    monkeypatch.setenv("EDGEKIT_HOST_ISA", "avx2")
    plan = quantize.plan(fp32, config.QuantSettings(), set())
    stem_float = dataclasses.replace(plan, settings=dataclasses.replace(plan.settings, exclude_nodes=plan.padded_convs))
    trials = [quantize.quantize(fp32, tmp_path / f"trial{i}.onnx", p, feeds) for i, p in enumerate((plan, stem_float))]
    models = [onnx.load(str(t)) for t in trials]
    pads = [sum(n.name.endswith("/channel_pad/Pad") for n in m.graph.node) for m in models]
    said = [[d for d in quantize.done(m) if d.startswith(quantize.PADDED)] for m in models]
    assert pads == [1, 0] and [len(s) for s in said] == [1, 0], said
    assert plan.applied == () and not any(p.key == quantize.DONE for m in models for p in m.metadata_props)


def test_the_outlier_record_is_the_shipped_trials(tmp_path):
    """split_outliers' record was rewritten by each trial on the shared plan, as the padding's was."""
    import torch
    torch.onnx.export(torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval(),
                      (torch.zeros(1, 16),), str(fp32 := tmp_path / "mlp.onnx"), input_names=["x"], output_names=["y"],
                      dynamo=False)
    feeds = [{"x": (np.random.default_rng(i).standard_normal((1, 16)) * ([100] + [1] * 15)).astype(np.float32)}
             for i in range(8)]
    plan = quantize.Plan(config.QuantSettings(op_types=("MatMul", "Gemm")), False, False, (), 17, split_outliers=True)
    trials = [quantize.quantize(fp32, tmp_path / f"trial{i}.onnx", p, feeds)
              for i, p in enumerate((plan, dataclasses.replace(plan, split_outliers=False)))]
    said = [quantize.done(onnx.load(str(t))) for t in trials]
    assert len(said[0]) == 1 and said[0][0].startswith("outlier channels") and said[1] == () and plan.applied == ()


def test_a_trained_classifiers_logits_keep_their_head_int8(tmp_path):
    """The few-levels rule (quantization.keep_narrow_outputs) on the digits example's logits, which spread widely
    around 0: each class spans 150+ of the output's int8 steps, so no node is kept float, under task regress too
    (the default here): values of both signs have no low-levels rule."""
    import torch

    from edgekit.config import QuantSettings
    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    try:
        from model import build
    finally:
        sys.path.pop(0)
    module = build()
    module.load_state_dict(torch.load(ROOT / "examples" / "digits" / "digits_cnn.pt", weights_only=True))
    torch.onnx.export(module.eval(), (torch.zeros(1, 1, 8, 8),), str(path := tmp_path / "m.onnx"),
                      input_names=["image"], output_names=["output"], dynamic_axes={"image": {0: "N"}}, dynamo=False)
    images = np.load(ROOT / "examples" / "digits" / "data" / "calibration.npz")["image"]
    plan = quantize.plan(path, QuantSettings(), set())
    assert quantize.output_chains(onnx.load(str(path)), plan.settings) == {"output": ["/classifier/classifier.3/Gemm"]}
    assert quantize.keep_narrow_outputs(plan, path, [{"image": images[i:i + 16]} for i in range(0, 128, 16)]) == plan
    ranges, counts = quantize._output_ranges(path, ["output"], [{"image": images[:128]}])[0]
    assert quantize.channel_levels(ranges, 255)[0] == 1 and min(quantize.channel_levels(ranges, 255)[1]) > 150
    assert counts is None and quantize.low_levels(ranges, counts, 255) is None  # both signs: no relative error


def test_the_low_levels_rule_takes_a_depth_and_leaves_a_relus_zeros_alone():
    """A Conv -> ReLU head (a heatmap: most values 0, the rest dense just above it) sat 6.2 steps from 0 and was kept
    float under regress (warned of under other) as if it were a depth map; a depth of 0.5-80 m is the rule's case."""
    rng = np.random.default_rng(0)
    depth = np.exp(rng.uniform(np.log(0.5), np.log(80), (4, 1, 16, 16))).astype(np.float32)
    heat = np.maximum(rng.normal(-1, 1, (4, 1, 16, 16)), 0).astype(np.float32)  # 84% zeros
    for value, caught in ((depth, True), (heat, False)):
        ranges = quantize.fold_ranges(None, value)
        low = quantize.low_levels(ranges, quantize.fold_magnitudes(None, value, ranges), 255)
        assert (low is not None and low < quantize.LOW_LEVELS) == caught, low


def test_the_few_levels_rule_leaves_out_samples_with_no_values():
    """A detector's selections hold no values on some samples: their min and max raised (exit 5, internal error).
    They are left out; with no values anywhere there is nothing to measure (parity then says the output holds none)."""
    empty, some = np.zeros((1, 0), np.float32), np.array([[0.5, 2.0, -1.0]], np.float32)
    ranges = None
    for value in (empty, some, empty):
        ranges = quantize.fold_ranges(ranges, value)
    assert quantize.channel_levels(ranges, 255) == (None, [pytest.approx(255.0)])  # the whole [-1, 2], one sample
    assert quantize.channel_levels(quantize.fold_ranges(None, empty), 255) == (None, [])


def test_the_few_levels_rule_keeps_per_channel_ranges_not_the_outputs(tmp_path):
    """keep_narrow_outputs held every calibration output to measure its channels: a 255-channel 160x160 head over
    128 samples grew the process by 3.4 GB. It folds each sample into per-channel min and max as it runs."""
    import tracemalloc

    import torch

    from edgekit.config import QuantSettings
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 64, 1))
    torch.onnx.export(module.eval(), (torch.zeros(1, 3, 64, 64),), str(path := tmp_path / "m.onnx"),
                      input_names=["image"], output_names=["out"], dynamo=False)
    rng = np.random.default_rng(0)
    feeds = [{"image": rng.random((1, 3, 64, 64), dtype=np.float32)} for _ in range(64)]  # outputs: 64 x 262 KB
    plan = quantize.plan(path, QuantSettings(), set())
    quantize.keep_narrow_outputs(plan, path, feeds[:2])  # its imports, not counted
    tracemalloc.start()
    try:
        quantize.keep_narrow_outputs(plan, path, feeds)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4e6, peak  # was 17 MB


@pytest.mark.parametrize("value", ["x", "deep", '{"a": 1}'])
def test_a_users_model_carrying_quantizes_done_record_is_not_read_as_edgekits(value):
    """A user's model with metadata edgekit_quantize_done = "x" (or '[' * 20000) failed the export at its end,
    exit 5 (JSONDecodeError, RecursionError): onnxruntime's quantizer keeps the model's metadata."""
    value = "[" * 20000 + "]" * 20000 if value == "deep" else value
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    model.metadata_props.add(key=quantize.DONE, value=value)
    assert quantize.done(model) == () and not model.metadata_props


UNSEEDED_ON_PURPOSE = {"unsaved_shift", "broken", "exits_zero"}  # a random unsaved buffer; two that raise when called


def test_every_test_model_builds_the_same_weights_whatever_the_random_state_before():
    """tests/models.py's factories seed themselves: `models:x` run in-process or by a child, after any other test,
    gives one init. An untrained model's gates are its init's (the digits CNN failed accuracy_drop for 1 in 16)."""
    import inspect

    import models
    import torch

    def built(factory, seed):
        torch.manual_seed(seed)
        made = factory()
        return {k: v.clone() for k, v in made.state_dict().items()} if isinstance(made, torch.nn.Module) else None

    unseeded = []
    with torch.random.fork_rng():  # the next test's random state is left as it was
        for name, factory in inspect.getmembers(models, inspect.isfunction):
            required = [p for p in inspect.signature(factory).parameters.values() if p.default is p.empty]
            if factory.__module__ != "models" or required or name in UNSEEDED_ON_PURPOSE:
                continue
            first, second = built(factory, 1), built(factory, 2)
            if first is not None and not (first.keys() == second.keys() and all(torch.equal(first[k], second[k])
                                                                                for k in first)):
                unseeded.append(name)
    assert unseeded == [], f"seed these with torch.manual_seed(0), as the others are: {unseeded}"


def test_an_x86_host_whose_cpuinfo_is_unreadable_takes_its_isa_from_cpuid(tmp_path):
    """No /proc/cpuinfo flags (macOS, a sandbox hiding the file) read as the SSE baseline, which no longer saturates
    (SATURATING_X86): an AVX2 host then kept full-range weights its own kernels saturate. CPUID (numpy's) names it."""
    import os
    import platform
    import shutil

    from edgekit import host

    if host.arch_of(platform.machine()) != "x86_64" or not host.cpuinfo().get("flags") or not shutil.which("unshare"):
        pytest.skip("an x86-64 Linux host with /proc/cpuinfo and unshare")
    code = "from edgekit import host; print(host.cpu_isa())"
    hide = f'mount --bind /dev/null /proc/cpuinfo || exit 99; exec "$0" -c "{code}"'
    hidden = subprocess.run(["unshare", "-m", "sh", "-c", hide, sys.executable], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if hidden.returncode == 99 or hidden.stderr.startswith("unshare:"):  # no mount namespace or bind mount here
        pytest.skip(f"cannot hide /proc/cpuinfo here: {hidden.stderr.strip()[-120:]}")
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stdout.strip() == host.cpu_isa(), hidden.stdout
