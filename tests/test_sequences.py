"""Streaming models (sequences.py): data as sequences, every model run step by step carrying its own state,
the state path kept float unless asked, drift reported per step."""
import json

import numpy as np
import pytest
from conftest import cli, write_manifest

from edgekit import sequences
from edgekit.errors import UsageError

ARGS = ["models:streaming", "--input", "x:Nx8", "--input", "state:Nx16", "--output-name", "score", "--output-name",
        "stateN", "--state", "state=stateN", "--no-bench", "--json"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same leaky-integrator model exported over 200-step sequences with its state path kept float (the
    default) and quantized, from PyTorch and from the .onnx the first run wrote."""
    tmp = tmp_path_factory.mktemp("seq")
    rng = np.random.default_rng(0)
    np.savez(tmp / "cal.npz", x=rng.standard_normal((8, 200, 1, 8)).astype(np.float32))  # sequences x steps x input
    np.savez(tmp / "val.npz", x=rng.standard_normal((4, 200, 1, 8)).astype(np.float32))
    found = {}
    for source in ("torch", "onnx"):
        model = ARGS[:9] if source == "torch" else [tmp / "torch-float" / "desktop-x86" / "model.onnx"]
        for name, extra in (("float", []), ("quantized", ["--quantize-state"])):
            result = cli(["export", *model, *ARGS[9:], "--calibration", tmp / "cal.npz", "--validation",
                          tmp / "val.npz", "--out", tmp / f"{source}-{name}", *extra])
            assert result.exit_code in (0, 1), result.output
            found[source, name] = (result.exit_code, json.loads(result.stdout)["targets"][0])
    return tmp, found


def _sqnr(m, output):
    return next(o["sqnr_db"] for o in m["parity"]["quantization"]["outputs"] if o["output"] == output)


@pytest.mark.parametrize("source", ["torch", "onnx"])
def test_state_kept_float_passes_and_quantized_state_fails_over_the_sequence(runs, source):
    tmp, found = runs
    (kept_code, kept), (rounded_code, rounded) = found[source, "float"], found[source, "quantized"]
    assert kept["state"]["pairs"] == {"state": "stateN"} and kept["state"]["float_nodes"] == ["/Mul", "/Add"]
    assert rounded["state"]["float_nodes"] == []
    seq = kept["state"]["sequence"]
    assert seq["sequences"] == 4 and seq["steps"] == 200 and 0 <= seq["worst_step"] < 200
    assert seq["worst_step_cosine"] <= seq["last_step_cosine"] <= 1.0
    # the state fed back after 200 steps: float keeps it (SQNR > 40 dB); rounded each step, it drifts
    assert _sqnr(kept, "stateN") > 40 > 20 > _sqnr(rounded, "stateN")
    assert rounded["state"]["sequence"]["worst_step_cosine"] < seq["worst_step_cosine"]
    assert (kept_code, kept["passed"]) == (0, True)
    assert rounded_code == 1 and "quant_sqnr_db" in [g["name"] for g in rounded["gates"] if not g["passed"]]
    assert [i["name"] for i in kept["inputs"]] == ["x", "state"]
    assert kept["validation"]["samples"] == 800  # 4 sequences x 200 steps


def test_streaming_package_replays_in_check(runs):
    tmp, _ = runs
    result = cli(["check", tmp / "torch-float", "--json"])
    assert result.exit_code == 0, result.output
    cases = {c["name"]: c for c in json.loads(result.stdout)["cases"]}
    assert cases["integrity"]["passed"] and cases["parity model.int8.onnx"]["passed"]


def test_state_names_are_checked(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 3, 1, 8), np.float32))
    bad_in = cli(["export", *[a if a != "state=stateN" else "nope=stateN" for a in ARGS], "--calibration",
                  tmp_path / "d.npz", "--out", tmp_path / "o"])
    assert bad_in.exit_code == 2 and "not model inputs" in bad_in.stderr
    bad_out = cli(["export", *[a if a != "state=stateN" else "state=nope" for a in ARGS], "--calibration",
                   tmp_path / "d.npz", "--out", tmp_path / "o"])
    assert bad_out.exit_code == 2 and "not model outputs" in bad_out.stderr
    sized = cli(["export", *ARGS, "--size", "N=3", "--calibration", tmp_path / "d.npz", "--out", tmp_path / "o"])
    assert sized.exit_code == 2 and "a streaming model (state) is validated step by step" in sized.stderr  # was 0


def test_torch_gru_streaming_module(tmp_path):
    """An nn.GRU step exported from PyTorch: torch and ONNX agree over whole sequences, state carried."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((6, 40, 1, 1, 8)).astype(np.float32))
    np.savez(tmp_path / "val.npz", x=rng.standard_normal((3, 40, 1, 1, 8)).astype(np.float32))
    result = cli(["export", "models:streaming_gru", "--input", "x:Nx1x8", "--input", "h:1xNx16", "--output-name",
                  "score", "--output-name", "hN", "--state", "h=hN", "--calibration", tmp_path / "cal.npz",
                  "--validation", tmp_path / "val.npz", "--out", tmp_path / "o", "--no-bench", "--json"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)["targets"]
    assert m["parity"]["export"]["samples"] == 120 and m["parity"]["export"]["outputs"][0]["cosine"] > 0.99999
    assert m["state"]["float_nodes"] == ["/gru/GRU"] and m["state"]["sequence"]["steps"] == 40
    assert "1 GRU node(s) stay float: onnxruntime's static quantizer has no int8 op for them" in m["warnings"][0]
    assert cli(["check", tmp_path / "o"]).exit_code == 0


def test_sequences_must_agree_in_steps_and_axes_without_data_are_not_resized():
    from edgekit import sequences, sizes
    from edgekit.config import InputSpec
    from edgekit.errors import InputError
    specs = (InputSpec.parse("a:1x2"), InputSpec.parse("b:1x2"), InputSpec.parse("s:1x2"))
    uneven = [{"a": np.zeros((3, 1, 2), np.float32), "b": np.zeros((2, 1, 2), np.float32)}]
    with pytest.raises(InputError, match="same number of steps"):
        sequences.rollout(lambda feed: [feed["s"]], uneven, specs, ["sN"], {"s": "sN"})
    assert sizes.other_sizes((InputSpec.parse("x:1xT"),), []) == []


def test_samples_of_varying_length_are_joined_only_with_their_own_length():
    """A batch of 2 was made by joining samples of sequence lengths 8 and 9: exit 5, a ValueError."""
    from edgekit import sizes
    from edgekit.config import InputSpec
    rng = np.random.default_rng(0)
    feeds = [{"ids": rng.integers(0, 50, (1, 8 + i % 3))} for i in range(12)]
    batch, seq = sizes.other_sizes((InputSpec.parse("ids:Nxseq:int64"),), feeds)
    assert (batch.dim, batch.size, seq.dim, seq.size) == ("N", 2, "seq", 4) and len(batch.feeds) == 2
    assert all(f["ids"].shape == (2, 8) for f in batch.feeds)
    np.testing.assert_array_equal(batch.feeds[0]["ids"], np.concatenate([feeds[0]["ids"], feeds[3]["ids"]]))


def test_golden_vectors_are_one_sequence_that_check_replays_with_its_own_state(runs):
    """golden.npz holds the first steps of one validation sequence, each step's state input being the int8
    model's own previous state output; `check` feeds the state back itself (only step 0's zeros are read)."""
    from edgekit import package, package_check
    tmp, _ = runs
    folder = tmp / "torch-float" / "desktop-x86"
    inputs, expected, atol = package.read_golden(folder / "golden.npz")
    assert len(inputs) == 8 and not inputs[0]["state"].any()
    for t in range(1, len(inputs)):
        np.testing.assert_array_equal(inputs[t]["state"], expected[t - 1]["stateN"])
    blind = [{**feed, "state": np.zeros_like(feed["state"])} if t else feed for t, feed in enumerate(inputs)]
    replayed = package_check._parity(folder / "model.int8.onnx", "t", blind, expected, atol, {"state": "stateN"})
    assert replayed.passed, replayed.message
    stepwise = package_check._parity(folder / "model.int8.onnx", "t", blind, expected, atol, {})
    assert not stepwise.passed


def _integrity_after(folder, edit) -> str:
    """`check`'s integrity message once `edit` changed the package's manifest (it must fail, exit 1)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    write_manifest(folder, manifest)
    result = cli(["check", folder, "--json"])
    assert result.exit_code == 1, result.output
    [integrity] = [c for c in json.loads(result.stdout)["cases"] if c["name"] == "integrity"]
    return integrity["message"]


@pytest.mark.parametrize("state", [None, {"pairs": {}}])
def test_a_manifest_that_drops_its_state_fails_check(runs, tmp_path, state):
    """manifest.json is not hashed: without its state pairs `check` replayed single steps, and a device whose
    state drifted passed. The golden steps show the pairs (each state input the step before's output)."""
    import shutil
    folder = tmp_path / "desktop-x86"
    shutil.copytree(runs[0] / "torch-float" / "desktop-x86", folder)
    message = _integrity_after(folder, lambda m: m.update(state=state))
    assert "the golden steps carry state ['state'] that its state pairs do not name" in message


def test_a_state_returned_twice_checks_and_a_wrong_pair_fails(tmp_path, runs):
    """A model that returns its new state twice: the golden steps carry the state from both outputs (the first
    version of the state-pairs check named the other one, and failed the export's own check)."""
    tmp, _ = runs
    result = cli(["export", "models:streaming_twice", *ARGS[1:7], "--output-name", "stateN", "--output-name", "copy",
                  *ARGS[9:], "--calibration", tmp / "cal.npz", "--validation", tmp / "val.npz", "--out", tmp_path])
    assert result.exit_code == 0, result.output
    message = _integrity_after(tmp_path / "desktop-x86", lambda m: m["state"].update(pairs={"state": "score"}))
    assert "its state pairs {'state': 'score'} are not what the golden steps carry" in message


def test_state_starts_from_a_file(runs, tmp_path):
    """`--state-init state=h0.npy`: every model starts each sequence from that value (recorded), the golden
    sequence too; a file of the wrong rank or naming no state input is refused."""
    tmp, found = runs
    h0 = np.full((1, 16), 0.5, np.float32)
    np.save(tmp_path / "h0.npy", h0)
    np.save(tmp_path / "flat.npy", h0[0])
    args = [*ARGS, "--calibration", tmp / "cal.npz", "--validation", tmp / "val.npz"]
    result = cli(["export", *args, "--out", tmp_path / "o", "--state-init", f"state={tmp_path / 'h0.npy'}"])
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)["targets"][0]
    assert m["state"]["initial"] == {"state": str(tmp_path / "h0.npy")}
    from edgekit import package
    inputs, _, _ = package.read_golden(tmp_path / "o" / "desktop-x86" / "golden.npz")
    np.testing.assert_array_equal(inputs[0]["state"], h0)
    assert m["parity"]["export"]["outputs"] != found["torch", "float"][1]["parity"]["export"]["outputs"]
    assert found["torch", "float"][1]["state"]["initial"] == {"state": "zeros"}
    wrong = cli(["export", *args, "--out", tmp_path / "w", "--state-init", f"state={tmp_path / 'flat.npy'}"])
    assert wrong.exit_code == 3 and "takes float32 of rank 2" in wrong.output
    other = cli(["export", *args, "--out", tmp_path / "x", "--state-init", f"x={tmp_path / 'h0.npy'}"])
    assert other.exit_code == 2 and "'x' is not a state input" in other.output


def test_gru_cell_state_path_kept_float_passes_and_quantized_fails(runs, tmp_path):
    """A GRU cell from PyTorch and from the .onnx that export wrote: its whole carry path stays float (the node
    reading h, h - n, the update gate's Mul, the Add writing hN), not the gates' own weights; quantized, the
    long-memory state drifts and the export fails."""
    tmp, _ = runs
    data = ["--calibration", tmp / "cal.npz", "--validation", tmp / "val.npz", "--no-bench", "--json"]
    torch_source = ["models:streaming_gru_cell", "--input", "x:Nx8", "--input", "h:Nx16", "--output-name", "score",
                    "--output-name", "hN"]
    onnx_source = [tmp_path / "torch-float" / "desktop-x86" / "model.onnx"]
    for source, model in (("torch", torch_source), ("onnx", onnx_source)):
        for quantize_state in (False, True):
            out = tmp_path / f"{source}-{'quantized' if quantize_state else 'float'}"
            result = cli(["export", *model, "--state", "h=hN", *data, "--out", out,
                          *(["--quantize-state"] if quantize_state else [])])
            assert result.exit_code == (1 if quantize_state else 0), result.output
            [m] = json.loads(result.stdout)["targets"]
            assert m["state"]["float_nodes"] == ([] if quantize_state else
                                                 ["/cell/Gemm_1", "/cell/Sub", "/cell/Mul_1", "/cell/Add_3"])
            assert (_sqnr(m, "hN") < 10) if quantize_state else (_sqnr(m, "hN") > 25)


def test_a_state_output_not_shaped_as_its_input_is_told(tmp_path):
    """h:Nx1 fed back from an output of [N, 16] (torch broadcast it) was exit 4, onnxruntime's "Got invalid
    dimensions for input: h" at the second step."""
    (tmp_path / "m.py").write_text(
        "import torch\n"
        "class Wide(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lin = torch.nn.Linear(8, 16)\n"
        "    def forward(self, x, h):\n"
        "        h2 = torch.tanh(self.lin(x) + h)\n"
        "        return h2.sum(1, keepdim=True), h2\n"
        "def build():\n"
        "    return Wide()\n")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((4, 5, 1, 8)).astype(np.float32))
    result = cli(["export", f"{tmp_path / 'm.py'}:build", "--input", "x:Nx8", "--input", "h:Nx1", "--output-name", "y",
                  "--output-name", "hN", "--state", "h=hN", "--calibration", tmp_path / "d.npz", "--no-bench",
                  "--out", tmp_path / "o"])
    assert result.exit_code == 3, result.output
    assert "state h=hN: the model returns hN as float32 [1, 16], but h takes h:Nx1:float32" in result.stderr


def test_a_state_that_grows_along_a_named_axis_is_carried():
    """The shape check refused a cache growing by a row each step (onnxruntime takes it: the axis is named)."""
    from edgekit.config import InputSpec
    from edgekit.sequences import rollout

    specs = (InputSpec.parse("x:1x4"), InputSpec.parse("cache:Tx4"))
    init = {"cache": np.zeros((1, 4), np.float32)}
    steps = rollout(lambda feed: [feed["x"].sum(keepdims=True), np.concatenate([feed["cache"], feed["x"]])],
                    [{"x": np.ones((3, 1, 4), np.float32)}], specs, ["y", "cacheN"], {"cache": "cacheN"}, init)
    assert [f["cache"].shape for f in steps.feeds] == [(1, 4), (2, 4), (3, 4)]


def test_a_state_table_that_feeds_one_output_twice_or_leaves_no_data_is_a_usage_error():
    """`state = {state="stateN", frame="stateN"}` read as data with an unexpected input (exit 3)."""
    from edgekit.config import InputSpec
    from edgekit.errors import UsageError
    from edgekit.sequences import data_specs

    specs = (InputSpec.parse("frame:Nx160"), InputSpec.parse("state:Nx32"))
    with pytest.raises(UsageError, match="stateN is fed back to state, frame: each state input takes an output"):
        data_specs(specs, {"state": "stateN", "frame": "stateN"})
    with pytest.raises(UsageError, match=r"every input \(frame, state\) is a state"):
        data_specs(specs, {"frame": "a", "state": "b"})
    assert [s.name for s in data_specs(specs, {"state": "stateN"})] == ["frame"]


def test_a_scalar_inputs_steps_stay_scalars():
    """A rank-0 input (`gain::float32`, its steps given as (steps,)) became [1] at each step: onnxruntime took it,
    but golden.npz held [1] against the model's [] and every such package failed its own check."""
    from edgekit.config import InputSpec
    from edgekit.sequences import rollout

    specs = (InputSpec.parse("x:1x4"), InputSpec.parse("gain::float32"), InputSpec.parse("state:1x4"))
    steps = rollout(lambda feed: [feed["x"] * feed["gain"], feed["state"] + feed["x"]],
                    [{"x": np.ones((3, 1, 4), np.float32), "gain": np.arange(3, dtype=np.float32)}], specs,
                    ["y", "stateN"], {"state": "stateN"})
    assert [f["gain"].shape for f in steps.feeds] == [(), (), ()] and steps.feeds[2]["gain"] == 2
    assert all(f["x"].flags.c_contiguous for f in steps.feeds)


def test_a_growing_caches_first_value_may_hold_any_length():
    """A cache (`cache:NxTx8`, its output the cache with the new frame) could start only from one frame of zeros:
    a state_init of 4 past frames (or of none) was "with this data the state is [1, 1, 8]"."""
    from edgekit.config import InputSpec
    from edgekit.errors import InputError
    from edgekit.sequences import initial

    specs = (InputSpec.parse("x:Nx8"), InputSpec.parse("cache:NxTx8"))
    step = {"x": np.zeros((1, 8), np.float32)}
    for frames in (0, 4):
        past = np.ones((1, frames, 8), np.float32)
        assert initial(specs[1], step, specs, {"cache": past}) is past
    assert initial(specs[1], step, specs, {}).shape == (1, 1, 8)  # zeros: one frame, as before
    for wrong in ((2, 4, 8), (1, 4, 7)):  # another batch than the data's, another width than the model's
        with pytest.raises(InputError, match=r"cache has shape .*; with this data the state is \[1, 'T', 8\]"):
            initial(specs[1], step, specs, {"cache": np.ones(wrong, np.float32)})


def test_a_state_paired_with_an_output_not_computed_from_it_is_warned_of():
    """`--state h=z`, z made from x alone (the real state hN left unpaired), passed with no word: every drift
    figure was of a loop the device never runs."""
    from onnx import TensorProto, helper

    from edgekit import sequences

    graph = helper.make_graph(
        [helper.make_node("Add", ["h", "x"], ["hN"]), helper.make_node("Relu", ["x"], ["z"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "h")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("hN", "z")])
    assert sequences.not_carried(graph, {"h": "hN"}) == []
    [said] = sequences.not_carried(graph, {"h": "z"})
    assert said.startswith("state h=z: output 'z' is not computed from input 'h'")


def test_a_state_name_off_by_case_is_suggested():
    """`--state h=hn` said "not model outputs (outputs: logits, hN)" with no suggestion."""
    from edgekit.config import InputSpec

    with pytest.raises(UsageError, match=r"\['hn'\] not model outputs \(did you mean 'hN'\?\) \(outputs: logits, hN\)"):
        sequences.check_outputs({"h": "hn"}, ["logits", "hN"])
    with pytest.raises(UsageError, match=r"not model inputs \(did you mean 'h'\?\)"):
        sequences.data_specs((InputSpec.parse("x:Nx40"), InputSpec.parse("h:2xNx64")), {"H": "hN"})


def test_a_float_state_path_holding_most_weights_is_named_as_the_cause(runs, tmp_path):
    """A GRU cell's state path (W_hh, 59% of its weights here; 86% in a 80->512 cell) kept float made int8 no
    smaller and 0.95x fp32, and the warnings blamed "per-call overhead or float ops around them"."""
    import onnx
    from edgekit import quantization, verdict
    from edgekit.bench import Latency
    from edgekit.calib import Dataset
    from edgekit.reports import LatencyReport
    tmp, _ = runs
    result = cli(["export", "models:streaming_gru_cell", "--input", "x:Nx8", "--input", "h:Nx16", "--output-name",
                  "score", "--output-name", "hN", "--state", "h=hN", "--calibration", tmp / "cal.npz",
                  "--validation", tmp / "val.npz", "--no-bench", "--json", "--out", tmp_path / "o"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)["targets"]
    cause = "1 Gemm node(s) on the state path stay float (59% of the weights; --quantize-state quantizes them)"
    assert any(w.startswith("model.int8.onnx is not smaller") and w.endswith(cause) for w in m["warnings"]), m
    folder = tmp_path / "o" / "desktop-x86"
    kept = quantization.float_weights(onnx.load(folder / "model.onnx"), "static", m["state"]["float_nodes"])
    slow = LatencyReport(*(Latency(ms, ms, ms, ms, 20, 1.0, 1, {"arch": "x86_64"}) for ms in (1.0, 1.05)), "here")
    data = Dataset("d", [{}] * 8)
    said = verdict.warnings(data, data, {}, slow, folder / "model.int8.onnx", ["CPUExecutionProvider"], 1,
                            float_weights=kept)
    assert f"int8 is slower than fp32 on this host (0.95x): {cause}" in said
    assert quantization.float_weights(onnx.load(folder / "model.onnx"), "static", []) == ""  # --quantize-state


def test_a_streaming_lstm_is_told_both_flags_and_stays_warned_while_float(runs, tmp_path):
    """The hint was --quant-mode dynamic alone: the state rule still kept the LSTM float (int8 MB == fp32 MB)
    and the warning went away; only --quantize-state too gives DynamicQuantizeLSTM."""
    tmp, _ = runs
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((4, 20, 1, 1, 8)).astype(np.float32))
    args = ["export", "models:streaming_lstm", "--input", "x:Nx1x8", "--input", "h:1xNx16", "--input", "c:1xNx16",
            "--output-name", "score", "--output-name", "hN", "--output-name", "cN", "--state", "h=hN", "--state",
            "c=cN", "--calibration", tmp_path / "d.npz", "--no-bench", "--json"]
    told = {}
    for mode in ("static", "dynamic"):
        result = cli([*args, "--quant-mode", mode, "--out", tmp_path / mode])
        assert result.exit_code == 0, result.output
        told[mode] = json.loads(result.stdout)["targets"][0]["warnings"]
    assert ("1 LSTM node(s) stay float: onnxruntime's static quantizer has no int8 op for them (its dynamic mode "
            "quantizes LSTM weights: --quant-mode dynamic --quantize-state)") in told["static"]
    assert "1 LSTM node(s) stay float: they carry the state, float unless --quantize-state" in told["dynamic"]


def test_calibration_sequences_shorter_than_validations_are_warned_of(runs, tmp_path):
    """A leaky state calibrated on 50-step sequences and validated on 1000-step ones failed at 4.3 dB (its first
    steps 50 dB) with only "re-run with --auto" as advice; 100 vs 200 steps lost 18 dB without a word."""
    from edgekit import verdict
    from edgekit.config import QuantSettings
    from edgekit.parity import Gate
    tmp, found = runs
    np.savez(tmp_path / "short.npz", x=np.load(tmp / "cal.npz")["x"][:, :20])
    result = cli(["export", *ARGS, "--calibration", tmp_path / "short.npz", "--validation", tmp / "val.npz",
                  "--out", tmp_path / "o"])
    assert result.exit_code in (0, 1), result.output
    said = ("calibration sequences run at most 20 steps, validation's 200: the int8 ranges never saw the state past "
            "step 20 (calibrate on sequences as long as deployment's)")
    assert said in json.loads(result.stdout)["targets"][0]["warnings"]
    assert not any("calibration sequences run" in w for w in found["torch", "float"][1]["warnings"])  # 200 and 200
    failed = [Gate("quant_sqnr_db", 4.3, ">=", 15.0, False)]
    assert verdict.gate_advice(failed, QuantSettings(), None, (50, 1000)) == [
        "quantization gates failed (quant_sqnr_db) with calibration sequences shorter than validation's (50 vs 1000 "
        "steps): calibrate on sequences as long before --auto"]


def test_calibration_only_clearly_shorter_is_warned_of_and_advised_beside_the_rest():
    """149 vs 150 steps (a 75/25 split of ragged data) was warned of; a failed quantization gate with short
    calibration returned that advice alone, dropping why the search stopped short and advising re-calibration for
    a reference with no signal."""
    from edgekit import verdict
    from edgekit.config import QuantSettings
    from edgekit.parity import Gate
    from edgekit.pipeline import _short_calibration
    assert _short_calibration([149, 80], [150], "static") is None
    assert _short_calibration([100], [200], "static") == (100, 200)
    assert _short_calibration([100], [200], "dynamic") is None
    sqnr, no_signal = Gate("quant_sqnr_db", 4.3, ">=", 15.0, False), Gate("quant_reference_signal", 0.0, ">=", 1, False)
    short = ("quantization gates failed (quant_sqnr_db) with calibration sequences shorter than validation's (50 vs "
             "1000 steps): calibrate on sequences as long before --auto")
    assert verdict.gate_advice([sqnr], QuantSettings(), {"stopped_short": "the search stopped at 60 s"},
                               (50, 1000)) == [short, "the search stopped at 60 s"]
    assert verdict.gate_advice([sqnr, no_signal], QuantSettings(), None, (50, 1000)) == [short]
    assert verdict.gate_advice([no_signal], QuantSettings(), None, (50, 1000)) == []
    for gates in ([], [sqnr]):  # no short calibration (any model without a state): no advice of it (was a TypeError)
        assert not any("calibration sequences" in a for a in verdict.gate_advice(gates, QuantSettings(), None))


def test_the_weights_kept_float_are_counted_once_per_model_not_per_node():
    """float_weights summed every initializer again for each node: 1000 nodes (750 kept float) took 0.9 s, 2000 5 s
    (every streaming export's warnings)."""
    import time

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit import quantization
    count = 2000
    nodes = [helper.make_node("MatMul", [f"y{i - 1}" if i else "x", f"w{i}"], [f"y{i}"], name=f"mm{i}")
             for i in range(count)]
    weights = [numpy_helper.from_array(np.zeros((4, 4), np.float32), f"w{i}") for i in range(count)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(f"y{count - 1}", TensorProto.FLOAT, [1, 4])], weights)
    model = helper.make_model(graph)
    onnx.checker.check_model(model)
    start = time.perf_counter()
    said = quantization.float_weights(model, "static", [f"mm{i}" for i in range(count * 3 // 4)])
    assert time.perf_counter() - start < 1.0
    assert said == ("1500 MatMul node(s) on the state path stay float (75% of the weights; --quantize-state quantizes "
                    "them)")


def test_a_float_gru_holding_most_weights_is_said_to_stay_float_once(tmp_path):
    """A GRU model warned "1 GRU node(s) stay float: ..." and then "not smaller ...: 1 GRU node(s) stay float (94% of
    the weights; ...)": the cause now names the GRU by its share only."""
    import onnx
    import torch

    from edgekit import quantization
    from edgekit.config import QuantSettings
    gru = torch.nn.GRU(8, 64, batch_first=True)
    torch.onnx.export(gru.eval(), (torch.zeros(1, 5, 8),), str(tmp_path / "g.onnx"), input_names=["x"],
                      output_names=["y", "h"], dynamo=False)
    model = onnx.load(tmp_path / "g.onnx")
    said = [*quantization.plan(model, QuantSettings(), set()).warnings,
            quantization.float_weights(model, "static", ())]
    assert said[-1] == "100% of the weights are in the float GRU", said
    assert sum("GRU node(s) stay float" in w for w in said) == 1, said


def test_a_streaming_model_nan_on_random_calibration_steps_blames_the_data(tmp_path):
    """sqrt of edgekit's random (standard normal) calibration steps is NaN: a streaming model's check said "the model
    diverges on this data" where a stateless model's says the random data may be none the model takes."""
    (tmp_path / "sq.py").write_text("import torch\n\n\nclass M(torch.nn.Module):\n    def forward(self, x, state):\n"
                                    "        new = 0.5 * state + torch.sqrt(x)\n        return new.sum(1, keepdim=True),"
                                    " new\n\n\ndef build():\n    return M()\n")
    x = np.abs(np.random.default_rng(0).standard_normal((4, 20, 1, 8))).astype(np.float32) + 1
    np.savez(tmp_path / "val.npz", x=x)
    result = cli(["export", f"{tmp_path / 'sq.py'}:build", "--input", "x:Nx8", "--input", "state:Nx8",
                  "--output-name", "score", "--output-name", "stateN", "--state", "state=stateN", "--no-bench",
                  "--calibration", "random", "--validation", tmp_path / "val.npz", "--out", tmp_path / "o"])
    assert result.exit_code == 3, result.output
    assert "is NaN or Inf on calibration step 0 (before any quantization): the calibration data is random" in (
        result.output), result.output
