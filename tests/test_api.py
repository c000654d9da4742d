"""The Python API (`edgekit.export`, `edgekit.check`): typed reports, the CLI's packages, no side effects."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from conftest import DIGITS, ROOT, cli

import edgekit
from edgekit.config import BenchSpec, DistillSettings, QuantSettings, apply_quant_overrides, build
from edgekit.package import read_golden, sha256

MODEL = f"{DIGITS / 'model.py'}:build"
WEIGHTS = DIGITS / "digits_cnn.pt"


def digits_module():
    sys.path.insert(0, str(DIGITS))
    try:
        from model import DigitsCNN
    finally:
        sys.path.remove(str(DIGITS))
    module = DigitsCNN()
    module.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return module


def samples(name: str, count: int):
    """One {input: array, labels: id} dict per image, as a user's data loader would yield them."""
    data = np.load(DIGITS / "data" / f"{name}.npz")
    for image, label in zip(data["image"][:count], data["labels"][:count]):
        yield {"image": image[None], "labels": label}


def batches(name: str, count: int, size: int):
    """One {input: batch, labels: ids} dict per `size` images, as a batching data loader would yield them."""
    data = np.load(DIGITS / "data" / f"{name}.npz")
    for start in range(0, count, size):
        yield {"image": data["image"][start:start + size], "labels": data["labels"][start:start + size]}


def test_export_a_module_from_generators_then_check_it(tmp_path):
    module = digits_module()
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    import onnxruntime.quantization  # noqa: F401  its own import appends onnxruntime/transformers to sys.path, once
    path, np_state, torch_state = list(sys.path), np.random.get_state()[1].copy(), torch.get_rng_state()
    report = edgekit.export(module, inputs=["image:Nx1x8x8"], calibration=samples("calibration", 128),
                            validation=batches("validation", 200, 8), targets=["desktop-x86", "android-arm64"],
                            out=tmp_path / "out", no_bench=True, calibrate_method="minmax")
    assert isinstance(report, edgekit.ExportReport) and report.passed and report.exit_code == 0
    # batches of 8 split into samples, as a file's rows are: they fixed the Android model's batch at 8, or beside
    # batch-1 calibration items left it dynamic (NNAPI coverage 0.26, failed), and counted 25 samples beside 200 rows
    android = report.targets["android-arm64"].to_json()
    assert android["fixed_input_shapes"] == {"image": [1, 1, 8, 8]} and android["validation"]["samples"] == 200
    target = report.targets["desktop-x86"]
    assert target.accuracy.samples == 200 and target.accuracy.drop <= 1.0
    assert all(g.passed for g in target.gates) and {g.name for g in target.gates} >= {"export_cosine", "quant_cosine"}
    assert target.quant_parity.worst("cosine") > 0.99 and target.latency is None
    assert target.to_json()["model"]["source"].endswith("DigitsCNN (a Python object)")
    import json  # the manifest is to_json(), as json.load gives it back (auto_search was a tuple there)
    assert target.to_json() == json.loads((tmp_path / "out" / "desktop-x86" / "manifest.json").read_text())
    checked = edgekit.check(report.out)
    assert isinstance(checked, edgekit.CheckReport) and checked.passed and checked.exit_code == 0
    again = edgekit.check(report)  # the report names its package
    assert [(c.name, c.message) for c in again.cases] == [(c.name, c.message) for c in checked.cases]
    # the caller's module, import path and random state are as they were
    assert module.training and all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert sys.path == path and np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)
    # a later export of one target into the same OUT: check(report) is of its package, not an older one beside it
    cell = samples("calibration", 300)
    later = edgekit.export(module, inputs=["image:Nx1x8x8"], calibration=cell, targets=["desktop-x86"],
                           out=tmp_path / "out", no_bench=True)
    # a notebook cell run again with the generator the first run read 128 items from calibrated on the next 128
    with pytest.raises(edgekit.InputError, match="a generator that was already read from .* or a function that "
                                                 "makes a new one"):
        edgekit.export(module, inputs=["image:Nx1x8x8"], calibration=cell, targets=["desktop-x86"],
                       out=tmp_path / "again", no_bench=True)
    assert not (tmp_path / "again").exists()
    with open(tmp_path / "out" / "android-arm64" / "model.int8.onnx", "ab") as f:
        f.write(b"x")
    assert not edgekit.check(later.out).passed  # the whole folder, as the CLI checks it
    mine = edgekit.check(later)
    assert mine.passed and {c.target for c in mine.cases} == {"desktop-x86"}, mine.cases


def refilled(name: str, count: int, buffer):
    """One buffer refilled for every image, as a streaming loader may yield them (numpy, or a torch tensor)."""
    data = np.load(DIGITS / "data" / f"{name}.npz")
    for image, label in zip(data["image"][:count], data["labels"][:count]):
        buffer[...] = torch.from_numpy(image[None]) if isinstance(buffer, torch.Tensor) else image[None]
        yield {"image": buffer, "labels": label}


@pytest.mark.parametrize("buffer", [np.empty((1, 1, 8, 8), np.float32), torch.empty(1, 1, 8, 8)])
def test_a_loader_that_refills_one_buffer_gives_every_sample(tmp_path, buffer):
    """Each item was kept as a view of the caller's buffer: every sample became the last one, calibration, parity
    and golden vectors alike, and the export passed at 11% accuracy."""
    report = edgekit.export(digits_module(), inputs=["image:Nx1x8x8"],
                            calibration=lambda: refilled("calibration", 64, buffer.copy() if isinstance(
                                buffer, np.ndarray) else buffer.clone()),
                            validation=lambda: refilled("validation", 100, buffer), targets=["desktop-x86"],
                            out=tmp_path / "out", no_bench=True)
    assert report.passed and report.targets["desktop-x86"].accuracy.fp32 > 95, report.targets["desktop-x86"].accuracy
    inputs = read_golden(tmp_path / "out" / "desktop-x86" / "golden.npz")[0]
    assert len({x["image"].tobytes() for x in inputs}) > 1


def test_the_timings_total_holds_the_whole_run_and_its_stages_add_up_to_it(tmp_path, monkeypatch):
    """The total began after --emulate's emulator (built in the cache on first use, ~40 s) and --device's probe, and
    the publish lap ended before the stage's teardown: `export --timings` left them out of every line. A slow probe
    (a sleep in edgekit's own device_for) is in a stage and the total now, and the stages add up to the total."""
    from edgekit import pipeline

    real, probed = pipeline.device_for, []
    monkeypatch.setattr(pipeline, "device_for", lambda *a: probed.append(time.perf_counter()) or time.sleep(0.8)
                        or real(*a))
    data = DIGITS / "data"
    timings = edgekit.export(MODEL, inputs=["image:Nx1x8x8"], weights=str(WEIGHTS),
                             calibration=data / "calibration.npz", validation=str(data / "validation.npz"),
                             targets=("desktop-x86",), out=tmp_path / "out", no_bench=True).timings
    since_probe = time.perf_counter() - probed[0]
    stages = sum(timings.shared.values()) + sum(map(sum, map(dict.values, timings.targets.values())))
    assert since_probe - 0.4 < timings.total <= since_probe, (since_probe, timings)  # old: the probe's 0.8 s left out
    assert stages <= timings.total < stages + 0.25, (stages, timings)  # a loaded host's scheduling between marks


def test_api_and_cli_write_byte_identical_packages(tmp_path):
    data = DIGITS / "data"
    api = edgekit.export(MODEL, inputs=["image:Nx1x8x8"], weights=str(WEIGHTS),
                         calibration=data / "calibration.npz", validation=str(data / "validation.npz"),
                         targets=("desktop-x86",), out=tmp_path / "api", no_bench=True, archive=True)
    run = cli(["export", MODEL, "--weights", WEIGHTS, "--input", "image:Nx1x8x8", "--calibration",
               data / "calibration.npz", "--validation", data / "validation.npz", "-t", "desktop-x86", "--out",
               tmp_path / "cli", "--no-bench", "--archive", "--json", "--timings"])
    assert run.exit_code == 0, run.output
    assert api.passed
    # each stage's wall time and where it was measured: on the report and on --timings' stderr, in no file (the
    # packages stay byte-identical, below) and in no --json document
    from edgekit.host import cpu_model

    timings, target = api.timings, api.targets["desktop-x86"]
    assert timings.where.startswith(f"{cpu_model()}, ") and "thread(s)" in timings.where
    assert list(timings.shared)[:2] == ["load", "data"] and timings.targets == {"desktop-x86": target.timings}
    assert {"calibrate+quantize", "golden choice", "write+check"} <= set(target.timings), target.timings
    assert 0 < sum(timings.shared.values()) + sum(target.timings.values()) <= timings.total
    assert run.stderr.startswith(f"timings (wall s; {cpu_model()}, ") and \
        "\n  desktop-x86 (int8 at 1 thread(s)): plan " in run.stderr
    assert "timings" not in run.stdout and "timings" not in repr(api)
    # --json's document is to_json()'s, the output folder in it (a notebook's out=None folder was nowhere in it)
    said, given = json.loads(run.stdout), api.to_json()
    assert (said.pop("out"), given.pop("out")) == (str(tmp_path / "cli"), str(tmp_path / "api"))
    assert said == given
    # a package names the model, weights and data files without the user's folders, the files by their sha256
    shipped = [(tmp_path / "api" / "desktop-x86" / name).read_text() for name in ("manifest.json", "report.md",
                                                                                 "report.html")]
    assert not [text for text in shipped if str(ROOT) in text]
    model = given["targets"][0]["model"]
    assert (model["source"], model["weights"]) == ("model.py:build", "digits_cnn.pt")
    assert (model["source_sha256"], model["weights_sha256"]) == (sha256(DIGITS / "model.py"), sha256(WEIGHTS))
    assert given["targets"][0]["validation"]["data"] == "validation.npz" and api.passed  # check re-read it
    api_files = sorted(p.relative_to(tmp_path / "api") for p in (tmp_path / "api").rglob("*") if p.is_file())
    cli_files = sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*") if p.is_file())
    assert api_files == cli_files and len(api_files) > 5
    for name in api_files:
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name


def test_settings_are_checked_like_the_cli_checks_flags(tmp_path):
    kwargs = dict(inputs=["image:Nx1x8x8"], calibration="random", out=tmp_path / "o")
    with pytest.raises(edgekit.UsageError, match="did you mean 'calibrate_method'"):  # was a bare TypeError
        edgekit.export(MODEL, calibrate_methd="entropy", **kwargs)
    # numpy's numbers are numbers: "key 'runs' has the wrong type (int64); expected an integer"
    assert build(BenchSpec, {"runs": np.int64(3)}, "w").runs == 3
    settings = apply_quant_overrides(QuantSettings(), {"samples": np.int32(64), "percentile": np.float32(99.5)}, "w")
    assert (settings.samples, settings.percentile) == (64, 99.5) and type(settings.samples) is int
    with pytest.raises(edgekit.UsageError, match="wrong type"):
        build(BenchSpec, {"runs": np.bool_(True)}, "w")
    with pytest.raises(edgekit.UsageError, match="calibrate_method = 'best' is not one of minmax"):
        edgekit.export(MODEL, calibrate_method="best", **kwargs)
    with pytest.raises(edgekit.UsageError, match="samples = 0 is out of range"):
        edgekit.export(MODEL, samples=0, **kwargs)
    with pytest.raises(edgekit.UsageError, match=r"\[prune\]: unknown key 'round'"):
        edgekit.export(MODEL, prune={"ratio": 0.5, "round": 8}, **kwargs)
    with pytest.raises(edgekit.UsageError, match=r"\[distill\]: epochs = 0 is out of range"):
        edgekit.export(MODEL, distill=DistillSettings(data="x.npz", epochs=0), **kwargs)
    with pytest.raises(edgekit.UsageError, match="percentile 99.0 applies only to calibrate_method percentile; "
                       "this target calibrates with minmax"):  # was ignored, exit 0
        edgekit.export(MODEL, percentile=99.0, **kwargs)
    with pytest.raises(edgekit.UsageError, match="percentile 99.0 applies only"):
        edgekit.export(MODEL, percentile=99.0, calibrate_method="entropy", **kwargs)
    with pytest.raises(edgekit.InputError) as bad:
        edgekit.export(MODEL, inputs=["image:Nx1x8x8"], calibration=iter([{"pixels": np.zeros((1, 1, 8, 8))}]),
                       out=tmp_path / "o")
    assert bad.value.exit_code == 3 and "unexpected ['pixels']" in str(bad.value)
    assert not (tmp_path / "o").exists()



def _flushes() -> bool:
    """Whether this thread reads the least denormal as zero (DAZ): what onnxruntime's setting does to it."""
    return bool(np.array([1], np.uint32).view(np.float32)[0] * np.float32(1) == 0)


_SEEN: list[bool] = []  # a module-level list: export() runs a copy of the model


class _Recording(torch.nn.Module):
    """A linear model whose forward notes whether its thread flushes denormals (in _SEEN); `fail`: then raises."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.fc, self.fail = torch.nn.Linear(4, 2), fail

    def forward(self, x):
        _SEEN.append(_flushes())
        if self.fail:
            raise ValueError("failed on purpose")
        return self.fc(x)


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "AMD64"), reason="onnxruntime flushes denormals on x86 only")
@pytest.mark.parametrize("found", [False, True])
def test_export_flushes_denormals_and_leaves_the_thread_as_found(tmp_path, found):
    """edgekit's latency figures are timed as onnxruntime runs with session.set_denormal_as_zero (MiniLM int8's
    softmax denormals took 6 of 19 ms), which onnxruntime sets on the calling thread only from a process's first
    session: the run flushes them whatever sessions the caller made before, and the caller's thread ends as found,
    also after a failure (it was left flushing for good)."""
    torch.set_flush_denormal(found)
    try:
        assert _flushes() is found
        feeds = [{"x": np.full((1, 4), i, np.float32)} for i in range(8)]
        _SEEN.clear()
        report = edgekit.export(_Recording(), inputs=["x:Nx4"], calibration=feeds, targets=["desktop-x86"],
                                out=tmp_path / "o", runs=3, warmup=1)
        assert report.targets["desktop-x86"].latency is not None and _SEEN and all(_SEEN), _SEEN
        assert _flushes() is found
        with pytest.raises(edgekit.InputError, match="failed on purpose"):
            edgekit.export(_Recording(fail=True), inputs=["x:Nx4"], calibration=feeds, targets=["desktop-x86"],
                           out=tmp_path / "bad", no_bench=True)
        assert _flushes() is found
    finally:
        torch.set_flush_denormal(False)


def test_import_edgekit_is_light():
    """The API loads on first use: scripts that only need `edgekit.check` never import torch."""
    import subprocess
    code = ("import sys, edgekit; assert callable(edgekit.check) and callable(edgekit.export); "
            "print('torch' in sys.modules, 'onnxruntime' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.split() == ["False", "False"], run.stderr


def test_prune_and_quantize_from_python(tmp_path):
    pytest.importorskip("torch_pruning")
    import onnx
    import onnxruntime as ort
    module = digits_module()
    before = sum(p.numel() for p in module.parameters())
    pruned, result = edgekit.prune(module, inputs=["image:Nx1x8x8"], ratio=0.5, round_to=4)
    assert result.params_before == before and result.params_after < 0.6 * before
    assert sum(p.numel() for p in module.parameters()) == before  # the caller's module is untouched
    with pytest.raises(edgekit.UsageError, match="prune takes a MODULE:FUNCTION"):
        edgekit.prune(tmp_path / "m.onnx", inputs=["image:Nx1x8x8"], ratio=0.5)
    fp32 = tmp_path / "m.onnx"
    torch.onnx.export(module.eval(), (torch.zeros(1, 1, 8, 8),), str(fp32), input_names=["image"],
                      dynamic_axes={"image": {0: "N"}}, dynamo=False)
    int8 = edgekit.quantize(fp32, samples("calibration", 64), out=tmp_path / "q.onnx", calibrate_method="entropy")
    assert int8 == tmp_path / "q.onnx"
    assert {n.op_type for n in onnx.load(int8).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    assert [o.domain for o in onnx.load(int8).opset_import] == [""]  # as a package's: no domain its nodes lack
    x = np.load(DIGITS / "data" / "validation.npz")["image"][:50]
    a, b = (ort.InferenceSession(str(p)).run(None, {"image": x})[0] for p in (fp32, int8))
    assert np.mean(a.argmax(1) == b.argmax(1)) > 0.95
    # it replaced any file at out, the source itself too, and left a broken file when it failed
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for out, why in ((notes, "already exists"), (fp32, "already exists"), (None, "already exists")):
        with pytest.raises(edgekit.UsageError, match=why):
            edgekit.quantize(fp32, samples("calibration", 64), out=out if out else tmp_path / "q.onnx")
    with pytest.raises(edgekit.UsageError, match="is the model being quantized"):
        edgekit.quantize(fp32, samples("calibration", 64), out=fp32, force=True)
    assert notes.read_text() == "mine"
    with pytest.raises(edgekit.InputError, match="already quantized"):
        edgekit.quantize(int8, samples("calibration", 64), out=tmp_path / "twice.onnx")
    assert not (tmp_path / "twice.onnx").exists() and not list(tmp_path.glob(".*partial"))
    with pytest.raises(edgekit.UsageError, match="no folder"):  # FileNotFoundError after all the work, before
        edgekit.quantize(fp32, samples("calibration", 64), out=tmp_path / "nope" / "q.onnx")
    assert edgekit.quantize(fp32, samples("calibration", 64), out=notes, force=True) == notes
    assert onnx.load(notes).graph.node


def test_api_errors_name_the_arguments_not_cli_flags(tmp_path):
    """A Python caller was told "--force replaces it", "give --emulate or --device", "--weights does not apply":
    flags they never typed, for arguments named otherwise."""
    from edgekit.api import in_python_terms

    fp32 = tmp_path / "m.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(fp32), input_names=["x"], dynamo=False)
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32))
    (tmp_path / "q.onnx").write_bytes(b"mine")
    with pytest.raises(edgekit.UsageError) as e:
        edgekit.quantize(fp32, tmp_path / "x.npz", out=tmp_path / "q.onnx")
    assert "force=True" in str(e.value) and "--" not in str(e.value), e.value
    with pytest.raises(edgekit.UsageError) as e:
        edgekit.export(fp32, calibration=tmp_path / "x.npz", weights=tmp_path / "x.npz", out=tmp_path / "o")
    assert str(e.value).startswith("weights= does not apply") and "--" not in str(e.value), e.value
    with pytest.raises(edgekit.UsageError, match=r"give emulate= or device=, not both"):
        edgekit.check(tmp_path, emulate="aarch64", device="ssh://a@b/x")
    assert in_python_terms("--out m.onnx exists; --per-tensor, --quant-mode dynamic, --precision latency, "
                           "`edgekit check --emulate` --json") == \
        "out=m.onnx exists; per_channel=False, mode=dynamic, precision=latency, `edgekit check --emulate` --json"
    for untouched in ("/data/run--out/x.npz", "--target_platform", "a--force"):  # a path, another tool's flag
        assert in_python_terms(untouched) == untouched
    # the CLI's own wording is unchanged
    result = cli(["export", fp32, "--calibration", tmp_path / "x.npz", "--weights",
                  tmp_path / "x.npz", "--out", tmp_path / "o"])
    assert result.exit_code == 2 and "--weights does not apply" in result.output, result.output


def test_calibration_tensors_that_require_grad_are_taken(tmp_path):
    """Items made with autograd on were exit 3: "Can't call numpy() on Tensor that requires grad"."""
    torch.manual_seed(0)
    data = [{"x": torch.randn(1, 4, requires_grad=True)} for _ in range(16)]
    report = edgekit.export(torch.nn.Linear(4, 2), inputs=["x:Nx4"], calibration=data, no_bench=True,
                            out=tmp_path / "o")  # read as data: the gates' verdict on random weights is beside it
    assert report.exit_code in (0, 1) and report.targets["desktop-x86"].quant_parity.worst("cosine") is not None


def test_api_argument_shapes(tmp_path, monkeypatch):
    with pytest.raises(edgekit.UsageError, match="no target"):
        edgekit.export(MODEL, inputs="image:Nx1x8x8", calibration="random", targets=[], out=tmp_path / "o")
    for odd, kind in (([("image", (None, 1, 8, 8))], "tuple"), (5, "int")):  # the tuple was an AttributeError
        with pytest.raises(edgekit.UsageError, match=f"strings or InputSpecs, not a {kind}"):
            edgekit.export(MODEL, inputs=odd, calibration="random", out=tmp_path / "o")
    monkeypatch.chdir(tmp_path)
    report = edgekit.export(MODEL, inputs="image:Nx1x8x8", weights=str(WEIGHTS), calibration="random",
                            out="one", no_bench=True)  # one input spec as a plain string
    assert report.targets["desktop-x86"].to_json()["inputs"][0]["name"] == "image"
    assert report.out == tmp_path / "one"  # absolute: a caller that changes folder still finds it


def test_user_code_may_import_its_neighbours_when_called(tmp_path):
    """The folder of a FILE.py:FUNCTION stays importable while the run uses the function, then leaves sys.path."""
    (tmp_path / "helper.py").write_text("import torch\n\ndef make():\n"
                                        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))\n")
    (tmp_path / "m.py").write_text("def build():\n    import helper\n    return helper.make()\n")
    path = list(sys.path)
    report = edgekit.export(f"{tmp_path / 'm.py'}:build", inputs=["x:Nx12"], calibration="random",
                            out=tmp_path / "o", no_bench=True)
    assert report.targets["desktop-x86"].export_parity.worst("cosine") > 0.9999
    assert str(tmp_path) not in sys.path and sys.path == path


def test_distill_from_python_needs_its_data(tmp_path, monkeypatch):
    """Without `data` it trained on every .npz in the working folder, the validation set among them."""
    from edgekit.config import DistillSettings

    monkeypatch.chdir(tmp_path)
    for distill in ({"epochs": 1}, DistillSettings(epochs=1), {"data": "", "epochs": 1}):
        with pytest.raises(edgekit.UsageError, match=r"\[distill\]: missing required key 'data'"):
            edgekit.export(MODEL, inputs="image:Nx1x8x8", weights=str(WEIGHTS), calibration="random", out="o",
                           no_bench=True, distill=distill)
    assert not (tmp_path / "o").exists()


def test_paths_are_accepted_where_paths_are_documented_and_odd_types_are_usage_errors(tmp_path):
    """Path targets and weights raised AttributeError; prune=True, device=5, inputs=None, check(5) raised
    AttributeError or TypeError: none of them an EdgekitError with an exit code."""
    profile = tmp_path / "mine.toml"
    profile.write_text((ROOT / "targets" / "desktop-x86.toml").read_text().replace('"desktop-x86"', '"mine"'))
    report = edgekit.export(MODEL, inputs="image:Nx1x8x8", weights=WEIGHTS, calibration="random", targets=[profile],
                            out=tmp_path / "o", no_bench=True)
    assert set(report.targets) == {"mine"}
    for odd, why in (({"prune": True}, "prune takes a PruneSpec"), ({"device": 5}, "device takes"),
                     ({"inputs": None}, "inputs: give"), ({"targets": [5]}, "not a profile name"),
                     ({"out": f"{tmp_path}/o_\udcff"}, r"out='.*/o_\?': not a UTF-8 path")):  # os.listdir's escapes:
        # "op torch::jit cannot be exported", exit 4
        args = {"inputs": "image:Nx1x8x8", "calibration": "random", "out": tmp_path / "bad", **odd}
        with pytest.raises(edgekit.UsageError, match=why):
            edgekit.export(MODEL, **args)
        assert not (tmp_path / "bad").exists() and not list(tmp_path.glob("o_*"))
    with pytest.raises(edgekit.UsageError, match="check takes a package"):
        edgekit.check(5)
    onnx_model = tmp_path / "o" / "mine" / "model.onnx"
    for odd in ({"model": None}, {"model": b"m.onnx"}, {"target": None}, {"target": ["desktop-x86"]}, {"out": 3}):
        args = {"model": onnx_model, "out": tmp_path / "q.onnx", **odd}  # each was a bare TypeError
        with pytest.raises(edgekit.UsageError, match=f"quantize\\(\\) {next(iter(odd))}: a path or name, not"):
            edgekit.quantize(args.pop("model"), "random", **args)


def test_api_calls_leave_the_root_logger_import_path_and_random_state_as_they_were(tmp_path):
    """In a fresh process (pytest gives the root logger handlers of its own): onnxruntime's quantizer warned through
    `logging.warning`, which left a root handler for good; prune left the model's folder on sys.path and moved
    torch's global random state; an android export left onnxruntime's usability checker's logger at ERROR."""
    script = tmp_path / "notebook.py"
    script.write_text(f"""import logging, os, sys, torch, edgekit
import onnxruntime.quantization  # its own import appends onnxruntime/transformers to sys.path, once
from torch import nn
class BN(nn.Module):  # a BatchNorm on the input stays a Mul/Add with 1-D weights: the quantizer warns about them
    def __init__(self):
        super().__init__()
        self.bn, self.fc = nn.BatchNorm2d(1), nn.Linear(64, 10)
    def forward(self, x):
        return self.fc(self.bn(x).flatten(1))
path, env = list(sys.path), dict(os.environ)
tools = ("usability_checker", "ort_format_model.utils")  # onnxruntime's tools' loggers: their levels stay the user's
edgekit.export(BN().eval(), inputs=["x:Nx1x8x8"], calibration="random", out={str(tmp_path / 'o')!r}, no_bench=True,
               targets=["desktop-x86", "android-arm64"])
assert [logging.getLogger(name).level for name in tools] == [0, 0]
state = torch.get_rng_state()
edgekit.prune({MODEL!r}, inputs=["image:Nx1x8x8"], ratio=0.5, weights={str(WEIGHTS)!r})
assert logging.getLogger().handlers == [], logging.getLogger().handlers
assert sys.path == path, set(sys.path) ^ set(path)
assert torch.equal(torch.get_rng_state(), state), "torch's random state moved"
assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())
""")
    done = subprocess.run([sys.executable, "-P", str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def test_edgekits_own_warnings_reach_a_script_that_configured_no_logging(tmp_path):
    """The stand-in for the root logger's handler dropped them: a prune that removed no channel said nothing, and
    the model was saved unchanged. No handler is left behind."""
    script = tmp_path / "script.py"
    script.write_text(f"""import logging, edgekit
edgekit.prune({MODEL!r}, inputs=["image:Nx1x8x8"], ratio=0.5, ignore=["features", "classifier"])
assert logging.getLogger().handlers == [], logging.getLogger().handlers
""")
    done = subprocess.run([sys.executable, "-P", str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.strip() == "structured pruning at ratio 0.5 removed no channel (every layer is ignored or " \
        "gives an output; ignored: features, classifier, classifier.3)", done.stderr


BN_MODEL = """class BN(nn.Module):  # a BatchNorm on the input leaves 1-D weights onnxruntime's quantizer warns about
    def __init__(self):
        super().__init__()
        self.bn, self.fc = nn.BatchNorm2d(1), nn.Linear(64, 10)
    def forward(self, x):
        return self.fc(self.bn(x).flatten(1))
"""


@pytest.mark.parametrize("blocked", ["", "import sys\nsys.modules['torch_pruning'] = None  # as if not installed\n"],
                         ids=["torch_pruning", "no_torch_pruning"])
def test_a_scripts_own_log_warnings_still_print_during_a_call_and_onnxruntimes_do_not(tmp_path, blocked):
    """The stand-in dropped every record but edgekit's: warnings the user's data function logged during an export
    vanished, though they print before and after it. onnxruntime's quantizer's (a BatchNorm on the input leaves
    1-D weights it warns about) stay quiet. Without torch_pruning (an optional extra) its folder was "/", which
    every record's path starts with: the user's were dropped again."""
    script = tmp_path / "script.py"
    script.write_text(f"""{blocked}import logging, numpy as np, torch, edgekit
from torch import nn
{BN_MODEL}def data():
    logging.getLogger("mydata").warning("from my data's logger")
    logging.warning("from the root logger")
    return ({{"x": np.random.default_rng(i).random((1, 1, 8, 8), np.float32)}} for i in range(16))
edgekit.export(BN().eval(), inputs=["x:Nx1x8x8"], calibration=data, out={str(tmp_path / 'o')!r}, no_bench=True)
""")
    done = subprocess.run([sys.executable, "-P", str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.splitlines() == ["from my data's logger", "from the root logger"], done.stderr


def test_onnxruntimes_records_stay_out_of_a_log_the_script_configured(tmp_path):
    """A script's `logging.basicConfig(level=logging.DEBUG)` got onnxruntime's quantizer's warnings and infos (logged
    on the root logger) during an export; its own records still print, and its handler keeps no filter after."""
    script = tmp_path / "script.py"
    script.write_text(f"""import logging, numpy as np, onnxruntime, os, edgekit
from torch import nn
logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s %(pathname)s: %(message)s")
{BN_MODEL}def data():
    logging.getLogger("mydata").debug("from my data's logger")
    return ({{"x": np.random.default_rng(i).random((1, 1, 8, 8), np.float32)}} for i in range(16))
edgekit.export(BN().eval(), inputs=["x:Nx1x8x8"], calibration=data, out={str(tmp_path / 'o')!r}, no_bench=True)
logging.getLogger("onnxruntime.after").info("after the call")
assert [h.filters for h in logging.getLogger().handlers] == [[]]
print(os.path.dirname(onnxruntime.__file__))
""")
    done = subprocess.run([sys.executable, "-P", str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = done.stdout.strip()
    assert not [line for line in done.stderr.splitlines() if folder in line], done.stderr
    assert "DEBUG mydata" in done.stderr and "INFO onnxruntime.after" in done.stderr, done.stderr


def test_recipe_compression_edges_python_random_and_array_data(tmp_path):
    """A TorchScript source with prune pruned nothing (exit 0); [distill] features named the user's layers but a
    uint8-input model is wrapped, so they were refused; a calibration function shuffling with `random` gave another
    int8 model each run; a numpy array as calibration was a raw ValueError."""
    import random

    scripted = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(digits_module()), str(scripted))
    common = dict(inputs=["image:Nx1x8x8"], targets=["desktop-x86"], no_bench=True)
    with pytest.raises(edgekit.UsageError, match=r"\[prune\]/\[share\]/\[distill\] need a MODULE:FUNCTION"):
        edgekit.export(str(scripted), calibration="random", trust_checkpoint=True, prune={"ratio": 0.5},
                       out=tmp_path / "ts", **common)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 1, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", image=pixels, labels=np.arange(64) % 10)
    report = edgekit.export(MODEL, weights=str(WEIGHTS), calibration={"image": pixels}, out=tmp_path / "u8",
                            inputs=["image:Nx1x8x8:uint8"], targets=["desktop-x86"], no_bench=True,
                            image_uint8={"input": "image", "mean": [0.0], "std": [1.0]},
                            distill={"data": tmp_path / "train.npz", "epochs": 1, "batch_size": 16,  # a Path too
                                     "features": ["features.3:features.3"]})
    assert report.exit_code in (0, 1) and report.targets["desktop-x86"].details["compression"]["distill"]

    def shuffled():
        data = np.load(DIGITS / "data" / "calibration.npz")["image"]
        order = list(range(len(data)))
        random.shuffle(order)
        for i in order[:32]:
            yield {"image": data[i][None]}

    state = random.getstate()
    made = [edgekit.export(MODEL, weights=str(WEIGHTS), calibration=shuffled, out=tmp_path / f"r{i}", **common)
            for i in range(2)]
    assert all(r.passed for r in made) and random.getstate() == state
    assert (tmp_path / "r0" / "desktop-x86" / "model.int8.onnx").read_bytes() == \
        (tmp_path / "r1" / "desktop-x86" / "model.int8.onnx").read_bytes()


def test_a_ctrl_c_during_a_first_import_leaves_the_package_importable_again(tmp_path, monkeypatch):
    """Interrupted while importing onnx, a notebook's next export failed for good: "module 'onnx' has no attribute
    'external_data_helper'" (Python forgot the package, not the submodules it had loaded)."""
    package = tmp_path / "halfway_pkg"
    package.mkdir()
    (package / "layers.py").write_text("from torch import nn\n\ndef build():\n"
                                       "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n")
    (package / "__init__.py").write_text(
        "import pathlib\nimport halfway_pkg.layers\n\n"
        "marker = pathlib.Path(__file__).with_name('interrupt')\n"
        "if marker.exists():  # the first import: Ctrl-C lands after the submodule loaded\n"
        "    marker.unlink()\n    raise KeyboardInterrupt\n\n"
        "def build():\n    return halfway_pkg.layers.build()\n")
    (package / "interrupt").touch()
    monkeypatch.syspath_prepend(str(tmp_path))
    args = dict(inputs=["image:Nx1x8x8"], calibration="random", targets=["desktop-x86"], no_bench=True)
    with pytest.raises(KeyboardInterrupt):
        edgekit.export("halfway_pkg:build", out=tmp_path / "a", **args)
    assert edgekit.export("halfway_pkg:build", out=tmp_path / "b", **args).passed


class ExitsOnPairs(torch.nn.Module):
    """A guard in user code: sys.exit when the batch has two samples (the API's calls run it with several)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(12, 3)

    def forward(self, x):
        if x.shape[0] == 2:
            sys.exit(0)
        return self.fc(x)


def test_two_threads_export_at_once_and_user_code_exiting_is_bad_input(tmp_path):
    """Two exports in two threads (a web service): one failed with torch's "GLOBALS.in_onnx_export must be False",
    a StageError on valid input. A model's forward calling sys.exit(0) escaped export() as SystemExit: a training
    script ended with status 0 (a service's own SIGTERM handler calling sys.exit is still the service's)."""
    import threading

    rng = np.random.default_rng(0)
    data = [{"x": rng.standard_normal((1, 12), dtype=np.float32)} for _ in range(24)]
    results = {}
    torch.manual_seed(0)  # made here: drawn in a thread, a module's weights came from whatever stream another
    models = [torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU()) for _ in range(2)]  # call had seeded

    def job(i):
        try:
            results[i] = edgekit.export(models[i], inputs="x:Nx12", calibration=data, out=tmp_path / f"o{i}",
                                        no_bench=True).passed
        except Exception as e:  # noqa: BLE001 (the test's verdict)
            results[i] = f"{type(e).__name__}: {e}"

    threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: True, 1: True}

    def data_setting_the_environment():  # the user's own change during the call stays theirs
        os.environ["EDGEKIT_TEST_USERS_OWN"] = "1"
        return data

    edgekit.export(torch.nn.Linear(12, 3), inputs="x:Nx12", calibration=data_setting_the_environment,
                   out=tmp_path / "env", no_bench=True)
    assert os.environ.pop("EDGEKIT_TEST_USERS_OWN") == "1"
    with pytest.raises(edgekit.InputError, match=r"model does not run on inputs x:Nx12:float32: sys.exit\(0\)"):
        edgekit.export(ExitsOnPairs(), inputs="x:Nx12", calibration=data, out=tmp_path / "exits", no_bench=True)
    assert not (tmp_path / "exits").exists()


def test_onnxruntimes_chatter_is_dropped_for_edgekits_thread_only(capsys):
    """contextlib.redirect_stdout swaps sys.stdout for the whole process: a library user's other threads lost what
    they printed while edgekit quantized, converted to .ort or compared layers (16 of 1,747 lines in one run)."""
    import threading

    from edgekit import progress

    with progress.quiet():
        print("chatter")
        assert sys.stdout.encoding == sys.stdout.stream.encoding and sys.stdout.writable()  # as the stream says
        other = threading.Thread(target=print, args=("the user's",))
        other.start()
        other.join()
    print("after")
    assert capsys.readouterr().out == "the user's\nafter\n"


def test_quantize_warns_what_an_export_would(tmp_path):
    """edgekit.quantize() dropped the plan's warnings: an LSTM kept float in static mode said nothing."""
    lstm = torch.nn.LSTM(4, 8, batch_first=True)
    torch.onnx.export(lstm.eval(), (torch.zeros(1, 5, 4),), str(tmp_path / "l.onnx"), input_names=["x"],
                      output_names=["y", "h", "c"], dynamo=False)
    with pytest.warns(UserWarning, match="1 LSTM node.s. stay float") as said:
        edgekit.quantize(tmp_path / "l.onnx", "random", out=tmp_path / "q.onnx")
    assert [w.filename for w in said if "LSTM" in str(w.message)] == [__file__]  # the caller's line
    assert "mode=dynamic" in next(str(w.message) for w in said if "LSTM" in str(w.message))  # which quantizes them
    # random data and a mobile profile's hardware rules overridden, which an export warns of, were silent here
    assert any("CALIBRATED ON RANDOM DATA" in str(w.message) for w in said)
    with pytest.warns(UserWarning, match=r"weight_type int8 \(the profile's: uint8\), per_channel True \(the "
                                         r"profile's: False\) override android-arm64's rules for nnapi"):
        edgekit.quantize(tmp_path / "l.onnx", "random", out=tmp_path / "a.onnx", target="android-arm64",
                         weight_type="int8", per_channel=True)
    # a GRU was sent to dynamic mode too, which keeps it float, without a word there
    gru = torch.nn.GRU(4, 8, batch_first=True)
    torch.onnx.export(gru.eval(), (torch.zeros(1, 5, 4),), str(tmp_path / "g.onnx"), input_names=["x"],
                      output_names=["y", "h"], dynamo=False)
    for mode in ("static", "dynamic"):
        with pytest.warns(UserWarning, match=f"1 GRU node.s. stay float: onnxruntime's {mode} quantizer") as said:
            edgekit.quantize(tmp_path / "g.onnx", "random", out=tmp_path / f"{mode}.onnx", mode=mode)
        assert not [w for w in said if "mode=dynamic" in str(w.message)]


def test_quantize_says_an_old_files_own_opset_and_its_advice_in_python_terms(tmp_path):
    """An opset-9 file was told, by quantize(), "the model is opset 11" and "(per_channel = false: per_channel=False)":
    the opset pre-processing converted it to, and a recipe's key beside the keyword."""
    from models import old_resize_onnx

    model = old_resize_onnx(tmp_path / "m.onnx", 10)
    with pytest.raises(edgekit.UsageError) as e:
        edgekit.quantize(model, "random", out=tmp_path / "q.onnx", per_channel=True)
    assert str(e.value) == ("the model is opset 10 (pre-processing converts it to 11); per-channel quantization needs "
                            "opset >= 13: give per_channel=False"), str(e.value)


def test_quantize_never_writes_over_what_it_reads_and_says_when_it_quantized_nothing(tmp_path):
    """With force, out= a model's external data file was written over (the float model then gave inf), and out= the
    calibration file replaced it; a result with every node kept float was returned as the int8 model, silently."""
    import onnx
    linear = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU()).eval()
    torch.onnx.export(linear, (torch.zeros(1, 16),), str(tmp_path / "tmp.onnx"), input_names=["x"],
                      output_names=["y"], dynamo=False)
    onnx.save(onnx.load(tmp_path / "tmp.onnx"), tmp_path / "m.onnx", save_as_external_data=True, location="m.data",
              size_threshold=0)
    np.save(tmp_path / "cal.npy", np.random.default_rng(0).standard_normal((8, 1, 16)).astype(np.float32))
    before = {f: (tmp_path / f).read_bytes() for f in ("m.data", "cal.npy")}
    for out in ("m.data", "cal.npy"):
        with pytest.raises(edgekit.UsageError, match="is a file this call reads"):
            edgekit.quantize(tmp_path / "m.onnx", str(tmp_path / "cal.npy"), out=tmp_path / out, force=True)
    assert {f: (tmp_path / f).read_bytes() for f in before} == before
    with pytest.warns(UserWarning, match="q.onnx quantizes nothing") as said:
        edgekit.quantize(tmp_path / "m.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "q.onnx", op_types=["Relu"])
    assert [w.filename for w in said if "nothing" in str(w.message)] == [__file__]


class _ReturnsWhatItRectifies(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 16), torch.nn.Linear(16, 4)

    def forward(self, x):
        y = self.a(x)
        return y, self.b(torch.relu(y))


def test_an_output_that_a_relu_reads_keeps_its_negative_values(tmp_path):
    """onnxruntime's quantizer gives a Relu's only input the Relu's range: a Linear's output returned and fed to a
    Relu came out of the int8 model clipped at 0 (cosine 0.70), silently from edgekit.quantize()."""
    import onnxruntime as ort
    torch.manual_seed(0)
    torch.onnx.export(_ReturnsWhatItRectifies().eval(), (torch.zeros(1, 16),), str(tmp_path / "m.onnx"),
                      input_names=["x"], output_names=["y", "z"], dynamic_axes={"x": {0: "N"}}, dynamo=False)
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    np.save(tmp_path / "cal.npy", x[:32, None])
    int8 = edgekit.quantize(tmp_path / "m.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "q.onnx")
    [fp32_y, _], [int8_y, _] = (ort.InferenceSession(str(m)).run(None, {"x": x[32:]}) for m in (tmp_path / "m.onnx",
                                                                                                   int8))
    assert (fp32_y < -0.1).any() and np.abs(int8_y - fp32_y).max() < 0.05 * np.abs(fp32_y).max()
    # the same graph with unnamed nodes (onnx.helper's, another exporter's): they could not be kept float by name
    import onnx
    model = onnx.load(tmp_path / "m.onnx")
    for node in model.graph.node:
        node.name = ""
    onnx.save(model, tmp_path / "unnamed.onnx")
    int8 = edgekit.quantize(tmp_path / "unnamed.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "uq.onnx")
    [int8_y, _] = ort.InferenceSession(str(int8)).run(None, {"x": x[32:]})
    assert np.abs(int8_y - fp32_y).max() < 0.05 * np.abs(fp32_y).max()
    # with --auto, the report called that Relu "exclude_nodes (yours)": the plan's own float node is not the user's
    report = edgekit.export(tmp_path / "m.onnx", calibration=str(tmp_path / "cal.npy"), auto=True, no_bench=True,
                            out=tmp_path / "auto")
    [relu] = report.targets["desktop-x86"].details["quantization"]["exclude_nodes"]
    assert report.targets["desktop-x86"].tuning["given"] == []
    page = (tmp_path / "auto" / "desktop-x86" / "report.html").read_text()
    assert f"<td>{relu}</td><td>the quantization plan" in page, page


def test_an_output_that_is_an_initializer_comes_out_of_the_int8_model_exact(tmp_path):
    """A graph output that is an initializer, also a Gemm's bias: onnxruntime's quantizer quantized it as the bias
    and a DequantizeLinear returned it changed (max_abs 5.8e-5). It is the float value, bit for bit."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto as T, helper as h, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("W", (16, 8)), ("B", (8,)))]
    graph = h.make_graph([h.make_node("Gemm", ["x", "W", "B"], ["y"], name="gemm")], "g",
                         [h.make_tensor_value_info("x", T.FLOAT, ["N", 16])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 8]),
                          h.make_tensor_value_info("B", T.FLOAT, [8])], weights)
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)]), tmp_path / "m.onnx")
    x = rng.standard_normal((64, 16)).astype(np.float32)
    np.save(tmp_path / "cal.npy", x[:32, None])
    int8 = edgekit.quantize(tmp_path / "m.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "q.onnx")
    [_, fp32_b], [_, int8_b] = (ort.InferenceSession(str(m)).run(None, {"x": x[32:]})
                                for m in (tmp_path / "m.onnx", int8))
    assert np.array_equal(int8_b, fp32_b) and int8_b.dtype == np.float32
    gemm = next(n for n in onnx.load(int8).graph.node if n.op_type == "Gemm")
    assert gemm.input[2] == "B/int8"  # the Gemm still reads the quantized bias, as before


@pytest.mark.parametrize("settings", [{"format": "QOperator"}, {"mode": "dynamic"}])
def test_an_output_weight_restored_leaves_no_dead_nodes_in_the_int8_model(tmp_path, settings):
    """Weights that are graph outputs (W and B of a Gemm) restored exact: with QOperator's QGemm and dynamic's
    MatMulInteger reading the int8 weights themselves, the DequantizeLinear giving W/int8 and B/int8 (and its scale)
    stayed in the int8 model with nothing reading it."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto as T, helper as h, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("W", (16, 8)), ("B", (8,)))]
    graph = h.make_graph([h.make_node("Gemm", ["x", "W", "B"], ["g"], name="gemm"), h.make_node("Relu", ["g"], ["y"])],
                         "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 16])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 8]), h.make_tensor_value_info("W", T.FLOAT,
                                                                                                  [16, 8]),
                          h.make_tensor_value_info("B", T.FLOAT, [8])], weights)
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)]), tmp_path / "m.onnx")
    x = rng.standard_normal((64, 16)).astype(np.float32)
    np.save(tmp_path / "cal.npy", x[:32, None])
    int8 = edgekit.quantize(tmp_path / "m.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "q.onnx", **settings)
    [_, *fp32], [_, *got] = (ort.InferenceSession(str(m)).run(None, {"x": x[32:]}) for m in (tmp_path / "m.onnx", int8))
    assert all(np.array_equal(a, b) for a, b in zip(got, fp32))
    model = onnx.load(int8)
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    assert [n.op_type for n in model.graph.node if not read & set(n.output)] == []
    assert [t.name for t in model.graph.initializer if t.name not in read] == []


def test_quantize_warns_of_an_output_far_from_the_float_models(tmp_path):
    """quantize() measures no parity: an output its settings wrecked came back without a word. It now runs both
    models on a few calibration samples and names the outputs under the profile's cosine limit."""
    torch.onnx.export(_ReturnsWhatItRectifies().eval(), (torch.zeros(1, 16),), str(tmp_path / "m.onnx"),
                      input_names=["x"], output_names=["y", "z"], dynamic_axes={"x": {0: "N"}}, dynamo=False)
    np.save(tmp_path / "cal.npy", np.random.default_rng(0).standard_normal((64, 1, 16)).astype(np.float32))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        edgekit.quantize(tmp_path / "m.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "q.onnx")
        assert not [w for w in said if "cosine" in str(w.message)]
        edgekit.quantize(tmp_path / "m.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "p.onnx",
                         calibrate_method="percentile", percentile=50.0)  # half the values clipped
    far = [str(w.message) for w in said if "cosine" in str(w.message)]
    assert far and all("to the float model's on 8 calibration samples (the desktop-x86 profile asks 0.99)" in m
                       for m in far), far
    for searched in ({"auto": True}, {"precision": "latency"}):  # taken, and nothing searched
        with pytest.raises(edgekit.UsageError, match="which edgekit.export.. does"):
            edgekit.quantize(tmp_path / "m.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "a.onnx", **searched)
    # an unnamed node whose name-to-be an exporter's own node already has: two nodes of one name, refused
    import onnx
    model = onnx.load(tmp_path / "m.onnx")
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    gemms[0].name, gemms[1].name = "", f"Gemm_{list(model.graph.node).index(gemms[0])}"
    onnx.save(model, tmp_path / "clash.onnx")
    edgekit.quantize(tmp_path / "clash.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "clash.int8.onnx")


class _IgnoresItsMask(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x, mask):  # kept for a caller's signature
        return self.linear(x)


def test_an_input_the_model_ignores_is_named_with_the_way_round(tmp_path):
    """torch's exporter leaves an unused input out of the graph: the data still held it, and the export was exit 4
    "onnxruntime run failed: Invalid input name: mask"."""
    rng = np.random.default_rng(0)
    data = [{"x": rng.random((1, 4), np.float32), "mask": np.ones((1, 4), np.float32)} for _ in range(8)]
    with pytest.raises(edgekit.UsageError, match="input .mask. is not used by the model.*exporter=dynamo"):
        edgekit.export(_IgnoresItsMask(), inputs=["x:Nx4", "mask:Nx4"], calibration=data, no_bench=True,
                       out=tmp_path / "o")
    report = edgekit.export(_IgnoresItsMask(), inputs=["x:Nx4", "mask:Nx4"], calibration=data, no_bench=True,
                            exporter="dynamo", out=tmp_path / "o")
    assert report.passed and [i["name"] for i in report.targets["desktop-x86"].details["inputs"]] == ["x", "mask"]


def test_an_export_without_out_keeps_its_folder_in_the_temporary_folder(tmp_path, monkeypatch):
    """out=None's folder is kept for the caller, in tempfile's folder (here this test's own: the suite left dozens
    of /tmp/edgekit-* per run, and conftest now fails a test that leaves one in its temporary folder)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    report = edgekit.export(torch.nn.Linear(4, 2), inputs=["x:Nx4"], calibration="random", no_bench=True, out=None)
    assert report.out.parent == tmp_path and report.out.name.startswith("edgekit-")
    assert (report.out / "desktop-x86").is_dir()


def test_odd_arguments_and_unready_models_are_edgekit_errors(tmp_path):
    """targets=None was Python's TypeError and out=5 wrote ./5; meta-device and Lazy layers were torch's own
    errors; NaN in a validation list read as if it were in the calibration list."""
    rng = np.random.default_rng(0)
    good = [{"x": rng.random((1, 4), np.float32)} for _ in range(8)]
    bad = [{"x": np.full((1, 4), np.nan, np.float32)} for _ in range(8)]
    for kwargs, said in ((dict(targets=None), "targets: profile names"), (dict(out=5), "out: a folder path, not int"),
                         (dict(validation=bad), "validation data 'list' item 0: input 'x' has NaN")):
        with pytest.raises(edgekit.UsageError if "NaN" not in said else edgekit.InputError, match=said):
            edgekit.export(torch.nn.Linear(4, 3), inputs=["x:Nx4"], calibration=good, no_bench=True,
                           **{"out": tmp_path / "o", **kwargs})
    with pytest.raises(edgekit.InputError, match="calibration data 'list' item 0"):
        edgekit.export(torch.nn.Linear(4, 3), inputs=["x:Nx4"], calibration=bad, validation=good, no_bench=True,
                       out=tmp_path / "o")
    for model, said in ((torch.nn.Linear(4, 3, device="meta"), "'weight' is on the meta device"),
                        (torch.nn.LazyLinear(3), "'weight' is not initialised yet"),
                        # read as a broken model ("mat1 and mat2 must have the same dtype")
                        (torch.nn.Linear(4, 3).double(), "parameters are float64, its inputs float32: edgekit "
                                                         "exports float32 models, so call .float")):
        with pytest.raises(edgekit.InputError, match=said):
            edgekit.export(model, inputs=["x:Nx4"], calibration=good, no_bench=True, out=tmp_path / "o")


def test_a_torch_compiled_module_exports_as_its_module(tmp_path):
    """torch.compile's wrapper failed in torch's tracer, exit 4 ("Detected that you are using FX to torch.jit.trace
    a dynamo-optimized function"): the toolchain blamed for the caller's wrapper."""
    module = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)).eval()
    report = edgekit.export(torch.compile(module), inputs=["x:Nx6"], calibration="random", out=tmp_path / "o",
                            no_bench=True)
    assert report.passed and report.targets["desktop-x86"].to_json()["model"]["source"].startswith(
        "torch.nn.modules.container.Sequential")
    again = edgekit.export(module, inputs=["x:Nx6"], calibration="random", out=tmp_path / "o", no_bench=True,
                           force=True)  # the same run, reported equal: its check's timings differed
    assert again.targets == report.targets and edgekit.check(again) == edgekit.check(report)


def test_checking_a_report_whose_package_was_written_over_says_so(tmp_path):
    """check(report) checked whatever was in report.out by then: a package another export wrote over it (force)
    passed as the report's."""
    torch.manual_seed(0)
    first, second = (torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)).eval()
                     for _ in range(2))
    report = edgekit.export(first, inputs=["x:Nx6"], calibration="random", out=tmp_path / "o", no_bench=True)
    assert edgekit.check(report).passed
    edgekit.export(second, inputs=["x:Nx6"], calibration="random", out=tmp_path / "o", no_bench=True, force=True)
    with pytest.raises(edgekit.InputError, match="not the package this ExportReport describes") as raised:
        edgekit.check(report)
    assert raised.value.exit_code == 3
    assert edgekit.check(tmp_path / "o").passed  # by its path: what is there now


def test_a_regression_with_whole_number_targets_is_not_scored_as_classes(tmp_path):
    """task="regress" with targets that happen to be whole (counts) failed: "label 9 (row 8) is out of range: the
    model's first output scores 1 classes". Only a classifier's labels are class ids."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 4), dtype=np.float32)
    counts = np.round(x.sum(1) * 3).astype(np.float32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(counts)),
                                         batch_size=8)
    for auto in (False, True):  # --auto's trials judged accuracy too
        # calibrated on all it validates on: on half, a random Linear's values past the int8 range were clipped (16-25
        # dB around its mean for 5 of 12 seeds), which quant_centred_sqnr_db fails
        report = edgekit.export(torch.nn.Linear(4, 1).eval(), inputs=["x:Nx4"], calibration=x, validation=loader,
                                task="regress", out=tmp_path / f"o{auto}", no_bench=True, auto=auto)
        made = report.targets["desktop-x86"].to_json()
        assert report.exit_code == 0 and made["task"] == "regress" and made["accuracy"] is None, made["gates"]
        [drop] = [g for g in made["gates"] if g["name"] == "accuracy_drop"]
        assert drop["skipped"] == "a regression's targets are no class ids", drop


def test_validation_labels_set_aside_are_a_manifest_warning(tmp_path):
    """A DataLoader's float targets, set aside as no class ids, were said in the log and the data label only: a CI
    job reading the manifest's warnings saw nothing of the accuracy gate it expected but never got."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 4), dtype=np.float32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x),
                                                                        torch.from_numpy(x.sum(1))), batch_size=8)
    said = "validation data's labels are no class ids (not whole numbers, or a grid per sample): set aside"
    for task, warned in (("auto", True), ("regress", False)):  # a regression's targets are expected to be values
        report = edgekit.export(torch.nn.Linear(4, 1).eval(), inputs=["x:Nx4"], calibration=x, validation=loader,
                                task=task, out=tmp_path / task, no_bench=True)  # all of it: see the test above
        assert report.exit_code == 0
        made = report.targets["desktop-x86"].to_json()
        assert any(w.startswith(said) for w in made["warnings"]) == warned, made["warnings"]


def test_validation_data_that_repeats_one_sample_fails_its_gate(tmp_path):
    """All-zero calibration data split into validation exited 0, its own warning saying "PARITY AND ACCURACY FIGURES
    MEAN NOTHING": validation_distinct_samples fails it (exit 1), as it does validation data of its own that is two
    samples over and over; varied data has no such gate. `check` knows the gate."""
    rng = np.random.default_rng(0)
    varied = rng.standard_normal((40, 16)).astype(np.float32)
    for name, cal, val, distinct in (("zeros", np.zeros((40, 16), np.float32), None, 1),
                                     ("two", varied, np.concatenate([varied[:2]] * 6), 2), ("varied", varied, None, 0)):
        report = edgekit.export(torch.nn.Linear(16, 4).eval(), inputs=["x:Nx16"], calibration={"x": cal},
                                validation=None if val is None else {"x": val}, no_bench=True, out=tmp_path / name)
        gates = report.targets["desktop-x86"].gates
        assert [(g.name, g.value) for g in gates if not g.passed] == (
            [("validation_distinct_samples", distinct)] if distinct else []), gates
        assert report.exit_code == (1 if distinct else 0)
    result = cli(["check", str(tmp_path / "zeros" / "desktop-x86")])
    assert result.exit_code == 1 and "validation_distinct_samples = 1 (needs >= 3)" in result.output, result.output


def test_calibration_data_that_repeats_one_sample_is_warned_of_loudly(tmp_path):
    """64 all-zero calibration samples (a loader repeating one batch) passed with no warning, while that int8 model
    scored cosine 0.55 and top-1 agreement 30% on real digits; edgekit.quantize() said nothing either."""
    zeros = [{"image": np.zeros((1, 1, 8, 8), np.float32)}] * 64
    real = list(samples("validation", 64))
    report = edgekit.export(digits_module().eval(), inputs=["image:Nx1x8x8"], calibration=zeros, no_bench=True,
                            out=tmp_path / "split")
    made = report.targets["desktop-x86"].warnings
    assert any(w.startswith("CALIBRATED ON 1 DISTINCT SAMPLE(S) OF 48:") for w in made), made
    # the validation split from it repeats the calibration inputs: its figures say nothing
    assert any(w.startswith("VALIDATED ON 1 DISTINCT SAMPLE(S) OF 16, HELD OUT OF CALIBRATION DATA") and
               "MEAN NOTHING" in w for w in made), made
    manifest = (report.out / "desktop-x86" / "manifest.json").read_text()
    assert "CALIBRATED ON 1 DISTINCT SAMPLE(S) OF 48" in manifest
    # validation data of its own that repeats one sample is said apart; varied data is not warned of
    report = edgekit.export(digits_module().eval(), inputs=["image:Nx1x8x8"], calibration=real,
                            validation=[real[0]] * 32, no_bench=True, out=tmp_path / "val")
    made = report.targets["desktop-x86"].warnings
    assert [w for w in made if "DISTINCT" in w] == [next(w for w in made if w.startswith(
        "VALIDATED ON 1 DISTINCT SAMPLE(S) OF 32: parity and accuracy figures are of those alone"))], made
    # one batch of 8 repeated 8 times: 8 distinct of 64
    with pytest.warns(UserWarning, match=r"CALIBRATED ON 8 DISTINCT SAMPLE\(S\) OF 64") as said:
        edgekit.quantize(report.out / "desktop-x86" / "model.onnx", real[:8] * 8, out=tmp_path / "q.onnx")
    assert [w.filename for w in said if "DISTINCT" in str(w.message)] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # varied data: no warning of it
        edgekit.quantize(report.out / "desktop-x86" / "model.onnx", real, out=tmp_path / "r.onnx")


class _Conditional(torch.nn.Module):  # a class-conditional model: its second input is named labels
    def __init__(self):
        super().__init__()
        self.embed, self.head = torch.nn.Embedding(10, 64), torch.nn.Linear(64, 10)

    def forward(self, x, labels):
        return self.head(x + self.embed(labels))


def test_a_model_input_named_labels_is_fed(tmp_path):
    """`inputs=["x:Nx64", "labels:N:int64"]` failed with "missing ['labels'], unexpected none": the key was always read
    as class labels. It is the model's input; `label` then holds the class labels, scored as accuracy."""
    rng = np.random.default_rng(0)
    data = [{"x": rng.random((1, 64), dtype=np.float32), "labels": np.array([i % 10]), "label": np.array([i % 3])}
            for i in range(64)]
    torch.manual_seed(0)
    report = edgekit.export(_Conditional().eval(), inputs=["x:Nx64", "labels:N:int64"], calibration=data,
                            no_bench=True, out=tmp_path / "o")
    assert report.exit_code == 0, report.failed_gates()
    assert report.targets["desktop-x86"].accuracy.samples == 16  # the held-out `label`s scored


def test_a_detection_heads_confidences_keep_their_own_scale(tmp_path):
    """A Concat of [xy in pixels, wh, sigmoid(conf), sigmoid(cls)] returned through Reshape/Transpose: static QDQ
    rounded its output at the union range (one scale, ~0.5), so the scores took a few values and many
    flipped at 0.5, while the whole output's cosine and SQNR passed. The Concat and its tail now stay float."""
    import onnxruntime as ort
    from models import detect_head, two_level_head
    x = np.random.default_rng(0).random((48, 3, 32, 32), dtype=np.float32)
    np.save(tmp_path / "cal.npy", x[:32, None])
    for head in (detect_head(), two_level_head()):  # levels joined by a Concat: each level's was rounded (0.068)
        torch.onnx.export(head, (torch.zeros(1, 3, 32, 32),), str(tmp_path / "m.onnx"), input_names=["image"],
                          output_names=["boxes"], dynamic_axes={"image": {0: "N"}}, dynamo=False)
        int8 = edgekit.quantize(tmp_path / "m.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "q.onnx", force=True)
        [fp32], [got] = (ort.InferenceSession(str(m)).run(None, {"image": x[32:]}) for m in (tmp_path / "m.onnx",
                                                                                              int8))
        scores, got_scores = fp32[..., 4:], got[..., 4:]
        assert (scores > 0.5).mean() > 0.1 and fp32[..., :2].max() > 100  # confidences beside pixel coordinates
        assert ((scores > 0.5) != (got_scores > 0.5)).mean() < 0.02  # was 0.068 (now 0.005)
        assert np.abs(got_scores - scores).mean() < 0.02  # was 0.086 (now 0.003)


def test_a_float16_model_is_quantized_with_int8_weights(tmp_path):
    """onnxruntime's quantizer left a model.half()'s float16 weights float16 (quantized at run time): an int8 model
    bigger than the float one, whose ORT format conversion failed. Now read as float32: int8 weights, float16 I/O."""
    import onnx
    import onnxruntime as ort
    from models import half_cnn
    torch.onnx.export(half_cnn(), (torch.zeros(1, 3, 16, 16, dtype=torch.float16),), str(tmp_path / "m.onnx"),
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}}, dynamo=False)
    x = np.random.default_rng(0).random((40, 3, 16, 16)).astype(np.float16)
    np.save(tmp_path / "cal.npy", x[:32, None])
    int8 = edgekit.quantize(tmp_path / "m.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "q.onnx")
    model = onnx.load(str(int8))
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 not in types.values() and onnx.TensorProto.INT8 in types.values()
    assert int8.stat().st_size < 0.8 * (tmp_path / "m.onnx").stat().st_size  # was larger
    [fp16], [got] = (ort.InferenceSession(str(m)).run(None, {"x": x[32:]}) for m in (tmp_path / "m.onnx", int8))
    assert got.dtype == np.float16 and np.abs(got - fp16).max() < 0.05 * np.abs(fp16).max()


def test_a_float16_model_with_concat_and_split_is_quantized(tmp_path):
    """Exit 4: pre-processing leaves a half model's Concat/Split float16 (onnxruntime runs them so), and the quantizer
    gave them a float16 QuantizeLinear, valid from opset 19 only ("x typestr: T1, has unsupported type"). Now they
    stay float16; the Gemm is still int8."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y0"], transB=1, name="gemm"),
         helper.make_node("Concat", ["y0", "y0"], ["cc"], axis=1, name="cat"),
         helper.make_node("Split", ["cc", "sp"], ["y", "y2"], axis=1, name="spl")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 10])],
        [numpy_helper.from_array((rng.standard_normal((10, 16)) * 0.3).astype(np.float16), "W"),
         numpy_helper.from_array(np.zeros(10, np.float16), "B"), numpy_helper.from_array(np.array([10, 10]), "sp")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    x = rng.standard_normal((40, 16)).astype(np.float16)
    np.save(tmp_path / "cal.npy", x[:32, None])
    int8 = edgekit.quantize(tmp_path / "m.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "q.onnx")
    assert onnx.TensorProto.INT8 in {t.data_type for t in onnx.load(str(int8)).graph.initializer}
    [fp16], [got] = (ort.InferenceSession(str(m)).run(None, {"x": x[32:]}) for m in (tmp_path / "m.onnx", int8))
    assert got.dtype == np.float16 and np.abs(got - fp16).max() < 0.05 * np.abs(fp16).max()


def test_an_if_whose_branch_reads_an_outer_tensor_is_quantized(tmp_path):
    """Exit 4 ("Nodes in a graph must be topologically sorted, however input 'y0'"): onnxruntime's quantizer sorted
    the nodes without counting what an If's branches read from outside, and put the If before the node making y0."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    def branch(op):
        return helper.make_graph([helper.make_node(op, ["y0"], [op])], op, [],
                                 [helper.make_tensor_value_info(op, TensorProto.FLOAT, ["N", 10])])

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Tanh", ["x"], ["r"], name="tanh"),  # y0 three nodes deep, cond two
         helper.make_node("Gemm", ["r", "W", "B"], ["g"], transB=1, name="gemm"),
         helper.make_node("Relu", ["g"], ["gr"], name="relu2"),
         helper.make_node("Flatten", ["gr"], ["y0"], name="flat"),
         helper.make_node("ReduceSum", ["x"], ["sx"], keepdims=0, name="rsx"),
         helper.make_node("Greater", ["sx", "zero"], ["cond"], name="gt"),
         helper.make_node("If", ["cond"], ["y"], then_branch=branch("Relu"), else_branch=branch("Neg"), name="if")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array((rng.standard_normal((10, 16)) * 0.3).astype(np.float32), "W"),
         numpy_helper.from_array(np.zeros(10, np.float32), "B"), numpy_helper.from_array(np.float32(0), "zero")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    x = rng.standard_normal((40, 16)).astype(np.float32)
    np.save(tmp_path / "cal.npy", x[:32, None])
    int8 = edgekit.quantize(tmp_path / "m.onnx", str(tmp_path / "cal.npy"), out=tmp_path / "q.onnx")
    for row in (x[32:33], -np.abs(x[33:34])):  # each branch
        [ref], [got] = (ort.InferenceSession(str(m)).run(None, {"x": row}) for m in (tmp_path / "m.onnx", int8))
        assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def _script(tmp_path, body: str) -> subprocess.CompletedProcess:
    """`body` run by a new Python (torch not yet imported), edgekit from this tree."""
    code = (f"import os, signal, sys, threading, time\nimport edgekit\nMODEL, OUT = {MODEL!r}, {str(tmp_path)!r}\n"
            f"KW = dict(weights={str(WEIGHTS)!r}, inputs=['image:Nx1x8x8'], targets=['desktop-x86'], no_bench=True,\n"
            f"          calibration={str(DIGITS / 'data' / 'calibration.npz')!r})\n"
            "def signal_when(seen, signum):  # sent by this process as soon as `seen()`: no fixed sleep\n"
            "    def watch():\n        while not seen():\n            time.sleep(0.001)\n"
            "        os.kill(os.getpid(), signum)\n"
            "    threading.Thread(target=watch, daemon=True).start()\n" + body)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=env)


def test_a_ctrl_c_in_the_first_exports_torch_import_leaves_torch_whole(tmp_path):
    """torch was first imported inside export() with signals live: a Ctrl-C there left it half-made for the rest of
    the process (the next export: SystemError "bad call flags", "partially initialized module 'torch' has no
    attribute 'library'", or a segfault at exit). It is imported whole, as onnx is, before any work; one the caller's
    own import left half-made is a StageError, not SystemError."""
    run = _script(tmp_path, "signal_when(lambda: 'torch._C' in sys.modules, signal.SIGINT)\n"
                  "try:\n    edgekit.export(MODEL, out=f'{OUT}/a', **KW)\nexcept KeyboardInterrupt:\n"
                  "    print('interrupted', flush=True)\n"
                  "print('again', edgekit.export(MODEL, out=f'{OUT}/b', **KW).passed, flush=True)\n")
    assert (run.returncode, run.stdout.split()) == (0, ["interrupted", "again", "True"]), run.stderr[-2000:]
    run = _script(tmp_path, "signal_when(lambda: 'torch._C' in sys.modules, signal.SIGINT)\n"
                  "try:\n    import torch\nexcept KeyboardInterrupt:\n    pass\n"
                  "try:\n    edgekit.export(MODEL, out=f'{OUT}/c', **KW)\n"
                  "except edgekit.StageError as e:\n    print(e)\n")
    assert run.returncode == 0 and "import failed: torch cannot be imported in this Python process" in run.stdout \
        and run.stdout.rstrip().endswith("restart Python"), run.stdout + run.stderr[-2000:]


def test_a_sigterm_during_an_api_export_cleans_up_then_ends_the_process(tmp_path):
    """SIGTERM at its default killed the process mid-export, leaving .edgekit-stage-XXXX/ (a partial model.onnx) and
    .edgekit.lock in OUT. Meanwhile edgekit's handler ends the run as the CLI's does, and the process then dies of the
    signal as it would have; the previous output stays as it was."""
    run = _script(tmp_path, "edgekit.export(MODEL, out=OUT, **KW)\nprint('exported', flush=True)\n"
                  "stage = __import__('pathlib').Path(OUT)  # signalled once its model.onnx is being written\n"
                  "signal_when(lambda: any(stage.glob('.edgekit-stage-*/**/*.onnx')), signal.SIGTERM)\n"
                  "edgekit.export(MODEL, out=OUT, seed=1, **KW)\nprint('not stopped')\n")
    assert (run.returncode, run.stdout.split()) == (-signal.SIGTERM, ["exported"]), run.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["desktop-x86", "edgekit-targets.json"]
    assert edgekit.check(tmp_path).passed


def test_export_leaves_the_working_folder_to_the_callers_other_threads(tmp_path, monkeypatch):
    """Pre-processing a model edgekit exported chdir'ed the whole process into its stage folder (to keep
    onnxruntime's sym_shape_infer_temp.onnx out of the working folder): a notebook's thread appending to a
    relative log every millisecond lost 40% of its lines into that folder, deleted after."""
    monkeypatch.chdir(tmp_path)
    stop, seen = threading.Event(), []

    def log():
        while not stop.is_set():
            with open("metrics.log", "a") as f:
                f.write("line\n")
            seen.append(os.getcwd())
            time.sleep(0.001)

    writer = threading.Thread(target=log)
    writer.start()
    try:
        report = edgekit.export(digits_module(), inputs=["image:Nx1x8x8"], calibration=samples("calibration", 64),
                                targets=["desktop-x86"], out=tmp_path / "o", no_bench=True)
    finally:
        stop.set()
        writer.join()
    assert report.passed and set(seen) == {str(tmp_path)}
    assert len((tmp_path / "metrics.log").read_text().splitlines()) == len(seen) > 10


def test_an_export_under_a_profiler_ends(tmp_path):
    """Profiled (cProfile, sys.setprofile), an export with a quantizer interrupted through PyThreadState_SetAsyncExc
    spun for good: clearing a sent exception with NULL leaves CPython 3.11's eval breaker set. Run in a new Python
    (a hang ends at the timeout), its figures as without the profiler."""
    run = _script(tmp_path, "import cProfile\nprofiler = cProfile.Profile()\nprofiler.enable()\n"
                  "report = edgekit.export(MODEL, out=f'{OUT}/a', **KW)\nprofiler.disable()\n"
                  "print('passed', report.passed)\n")
    assert run.returncode == 0 and run.stdout.splitlines()[-1] == "passed True", run.stdout + run.stderr[-2000:]


def test_a_deleted_working_folder_is_no_working_folder_needed_or_a_usage_error(tmp_path):
    """From a working folder deleted under the process, export of a module raised FileNotFoundError (the chdir
    back into it), and prune a bare FileNotFoundError from torch's import of its compiler, which reads the
    folder: edgekit needs none (export, quantize), and torch's need is said (exit 2)."""
    pytest.importorskip("torch_pruning")
    # the trained weights: an untrained model's verdict is its init's (1 init in 16 lost 1.6 points of accuracy)
    run = _script(tmp_path, "import torch\nsys.path.insert(0, os.path.dirname(MODEL.split(':')[0]))\n"
                  "from model import DigitsCNN\ntrained = DigitsCNN().eval()\n"
                  "trained.load_state_dict(torch.load(KW['weights'], weights_only=True))\n"
                  "os.mkdir('gone')\nos.chdir('gone')\nos.rmdir(os.getcwd())\n"
                  "kw = {k: v for k, v in KW.items() if k != 'weights'}\n"
                  "print('export', edgekit.export(trained, out=f'{OUT}/a', **kw).passed)\n"
                  "print('quantize', edgekit.quantize(f'{OUT}/a/desktop-x86/model.onnx', KW['calibration'],\n"
                  "                                   out=f'{OUT}/q.onnx').name)\n"
                  "try:\n    edgekit.prune(DigitsCNN(), inputs=KW['inputs'], ratio=0.5)\n"
                  "except edgekit.UsageError as e:\n    print('prune', e.exit_code, e)\n")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[:2] == ["export True", "quantize q.onnx"], run.stdout + run.stderr[-2000:]
    assert run.stdout.splitlines()[2].startswith("prune 2 the working folder was deleted"), run.stdout


def test_an_out_no_folder_can_be_made_at_is_told_before_the_data_or_the_model_is_read(tmp_path):
    """out=/proc/... was told after the caller's generator had been read to its end (and after pruning and
    distilling, minutes on a real model): OUT is made, and locked, before any work."""
    read = []

    def data():
        for i, sample in enumerate(samples("calibration", 8)):
            read.append(i)
            yield sample

    (tmp_path / "file").write_text("")
    for out in ("/proc/edgekit-no-such", tmp_path / "file" / "out"):
        with pytest.raises(edgekit.InputError, match="cannot create it"):
            edgekit.export(digits_module(), inputs="image:Nx1x8x8", calibration=data(), out=out, no_bench=True,
                           prune={"ratio": 0.5})
        assert read == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def _linear(seed: int = 0) -> torch.nn.Linear:
    """A Linear(4, 2) with the same weights whichever tests ran before (a random one failed its gates now and then),
    the global random state left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.nn.Linear(4, 2)


class _KeywordOnly(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, *, x):
        return self.fc(x)


def test_a_forward_taking_its_input_by_keyword_only_is_said_so():
    """`forward(self, *, x)`: edgekit passes inputs by position, and the error was Python's "forward() takes 1
    positional argument but 2 were given", naming neither the parameter nor what to do."""
    for call in (lambda: edgekit.export(_KeywordOnly(), inputs=["x:Nx4"], calibration="random", no_bench=True),
                 lambda: edgekit.prune(_KeywordOnly(), inputs=["x:Nx4"], ratio=0.5)):
        with pytest.raises(edgekit.InputError, match=r"forward takes 'x' by keyword only.*wrapper whose "
                                                     r"forward\(self, x\) calls the model as model\(x=x\)"):
            call()


def test_onnxruntimes_own_warnings_reach_the_callers_sessions_after_a_call(tmp_path, capfd):
    """export and check set onnxruntime's default logger to fatal-only for the whole process: a notebook's own
    session on a model with an unused initializer printed no warning for the rest of its life."""
    unused = _unused_initializer_model(tmp_path)
    report = edgekit.export(torch.nn.Linear(4, 2), inputs=["x:Nx4"], calibration="random", no_bench=True,
                            out=tmp_path / "out")
    for call in (lambda: None, lambda: edgekit.check(report)):
        call()
        capfd.readouterr()
        import onnxruntime
        onnxruntime.InferenceSession(str(unused), providers=["CPUExecutionProvider"])
        assert "Removing initializer 'unused'" in capfd.readouterr().err


def test_a_call_made_from_user_code_leaves_the_outer_calls_onnxruntime_level(tmp_path, capfd):
    """A calibration function that calls edgekit.quantize: the inner call's exit set onnxruntime's logger back to its
    default while the export went on (its warnings printed for the rest of it); after the export it is the default."""
    import onnxruntime

    unused = _unused_initializer_model(tmp_path)
    linear = torch.nn.Linear(4, 2)
    torch.onnx.export(linear, (torch.zeros(1, 4),), str(tmp_path / "linear.onnx"), input_names=["x"], dynamo=False)

    def calibration():
        edgekit.quantize(tmp_path / "linear.onnx", "random", out=tmp_path / "q.onnx")
        capfd.readouterr()
        onnxruntime.InferenceSession(str(unused), providers=["CPUExecutionProvider"])  # as the export's steps do
        assert "Removing initializer" not in capfd.readouterr().err
        return [{"x": np.random.default_rng(i).random((1, 4), dtype=np.float32)} for i in range(16)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert edgekit.export(linear, inputs=["x:Nx4"], calibration=calibration, no_bench=True,
                              out=tmp_path / "out").passed
    capfd.readouterr()
    onnxruntime.InferenceSession(str(unused), providers=["CPUExecutionProvider"])
    assert "Removing initializer 'unused'" in capfd.readouterr().err


def test_a_call_made_from_a_cli_commands_user_code_leaves_the_commands_onnxruntime_level(tmp_path, capfd):
    """`edgekit export --calibration cal.py:fn`, fn calling edgekit.quantize: the inner call's exit set onnxruntime's
    logger back to its default for the rest of the command (only a call nested in another kept the outer level)."""
    unused = _unused_initializer_model(tmp_path)
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(tmp_path / "linear.onnx"), input_names=["x"],
                      dynamo=False)
    (tmp_path / "cal.py").write_text(
        "import numpy as np, onnxruntime, edgekit\n"
        "def calibration():\n"
        f"    edgekit.quantize({str(tmp_path / 'linear.onnx')!r}, 'random', out={str(tmp_path / 'q.onnx')!r})\n"
        f"    onnxruntime.InferenceSession({str(unused)!r}, providers=['CPUExecutionProvider'])\n"
        "    return [{'x': np.random.default_rng(i).random((1, 4), dtype=np.float32)} for i in range(16)]\n")
    capfd.readouterr()
    result = cli(["export", tmp_path / "linear.onnx", "--input", "x:Nx4", "--calibration",
                  f"{tmp_path / 'cal.py'}:calibration", "--no-bench", "--out", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    assert "Removing initializer" not in capfd.readouterr().err


def _unused_initializer_model(tmp_path):
    """A model onnxruntime warns of at its default level (an initializer no node reads)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              initializer=[numpy_helper.from_array(np.zeros(3, np.float32), "unused")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "unused.onnx"))
    return tmp_path / "unused.onnx"


def test_a_half_model_fed_float32_is_told_it_can_declare_float16_inputs(tmp_path):
    """A .half() model exports with float16 inputs declared (README), but the error for float32 ones said only
    "edgekit exports float32 models, so call .float() on it first"."""
    with pytest.raises(edgekit.InputError, match=r"parameters are float16, its inputs float32: declare its float "
                                                 r"inputs :float16 \(NAME:SHAPE:float16\), or call \.float\(\)"):
        edgekit.export(torch.nn.Linear(4, 2).half(), inputs=["x:Nx4"], calibration="random", no_bench=True)
    report = edgekit.export(torch.nn.Linear(4, 2).half(), inputs=["x:Nx4:float16"], calibration="random",
                            no_bench=True, out=tmp_path / "out")
    assert report.targets["desktop-x86"].details["inputs"][0]["dtype"] == "float16"


def test_quantize_without_calibration_data_is_a_usage_error_unless_dynamic(tmp_path):
    """calibration=None was read as data after pre-processing: "data 'NoneType': gave None (does the function return
    its data?)", where no function was given."""
    report = edgekit.export(torch.nn.Linear(4, 2), inputs=["x:Nx4"], calibration="random", no_bench=True,
                            out=tmp_path / "out")
    fp32 = report.out / "desktop-x86" / "model.onnx"
    with pytest.raises(edgekit.UsageError, match=r"static quantization needs calibration data.*mode=\"dynamic\""):
        edgekit.quantize(fp32, None, out=tmp_path / "static.onnx")
    assert not (tmp_path / "static.onnx").exists()
    assert edgekit.quantize(fp32, None, mode="dynamic", out=tmp_path / "dynamic.onnx").is_file()


def test_a_notebooks_numpy_errors_raised_setting_is_not_edgekits(tmp_path):
    """np.seterr(all="raise") (a notebook debugging its own numerics) made an export with latency timing a bare
    FloatingPointError: edgekit multiplies into the denormals to learn whether they flush. The setting is the
    caller's again after the call."""
    found = np.seterr(all="raise")
    try:
        report = edgekit.export(_linear(), inputs=["x:Nx4"], calibration="random", runs=3, warmup=1,
                                out=tmp_path / "out")
        assert report.passed and report.targets["desktop-x86"].latency is not None
        assert np.geterr() == {"divide": "raise", "over": "raise", "under": "raise", "invalid": "raise"}
    finally:
        np.seterr(**found)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_a_cell_under_no_grad_still_distills_and_prunes(mode):
    """A notebook cell under torch.no_grad() (or inference_mode) made distill's training torch's bare RuntimeError
    "element 0 of tensors does not require grad" and Taylor pruning a StageError blaming the model's forward."""
    rng = np.random.default_rng(0)
    batches = [(torch.from_numpy(rng.random((8, 4), np.float32)), torch.from_numpy(rng.integers(0, 3, 8)))
               for _ in range(4)]

    def net():
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

    with getattr(torch, mode)():
        student, result = edgekit.distill(net(), net(), data=batches, epochs=1)
        pruned, _ = edgekit.prune(net(), inputs=["x:Nx4"], ratio=0.5, importance="taylor", data=batches)
        assert not torch.is_grad_enabled()  # the cell's mode, as it was
    assert isinstance(student, torch.nn.Module) and pruned[0].out_features < 8


class _Float64Output(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x).double()


def test_a_float64_output_is_named_as_the_models_output_with_the_fix():
    """The error named torch's graph ("model 'main_graph': 'output' has ONNX element type 11 (DOUBLE)"), not the
    model given, nor that it is an output, nor what to do."""
    with pytest.raises(edgekit.InputError, match=r"model '.*_Float64Output \(a Python object\)': output 'output' has "
                                                 r"ONNX element type 11 \(DOUBLE\).*return it as float32: \.float\(\)"):
        edgekit.export(_Float64Output(), inputs=["x:Nx4"], calibration="random", no_bench=True)


def test_a_map_an_earlier_call_read_to_its_end_is_said_so(tmp_path):
    """A cell run again with the map(...) (or iter(list)) an export read to its end: "contains zero samples", where
    README promises the one-shot iterator is refused with what to pass instead."""
    rng = np.random.default_rng(0)
    items = [{"x": rng.random((1, 4), np.float32)} for _ in range(16)]
    cell = map(dict, items)
    edgekit.export(torch.nn.Linear(4, 2), inputs=["x:Nx4"], calibration=cell, no_bench=True, out=tmp_path / "out")
    with pytest.raises(edgekit.InputError, match=r"calibration data 'map': an iterator with no items left \(read to "
                                                 r"its end by an earlier call\?\): give the iterable itself"):
        edgekit.export(torch.nn.Linear(4, 2), inputs=["x:Nx4"], calibration=cell, no_bench=True)


def test_an_empty_out_is_refused_not_the_working_folder(tmp_path, monkeypatch):
    """out="" (an unset variable) wrote desktop-x86/ and edgekit-targets.json into the working folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(edgekit.UsageError, match=r"out='': an empty path \(an unset variable\?\)"):
        edgekit.export(torch.nn.Linear(4, 2), inputs=["x:Nx4"], calibration="random", no_bench=True, out="")
    assert list(tmp_path.iterdir()) == []


def test_labels_under_a_datasets_own_key_are_told_where_labels_go():
    """{"image": x, "target": y}, as torchvision's datasets name it: "unexpected ['target']", no word of 'labels'."""
    rng = np.random.default_rng(0)
    data = [{"x": rng.random((1, 4), np.float32), "target": 1} for _ in range(8)]
    with pytest.raises(edgekit.InputError, match=r"unexpected \['target'\] \(model takes \['x'\]\); labels go under "
                                                 r"the key 'labels'"):
        edgekit.export(torch.nn.Linear(4, 2), inputs=["x:Nx4"], calibration=data, no_bench=True)


def test_a_setting_whose_default_is_none_takes_none(tmp_path):
    """export(weights=None) or emulate=None, as a caller's own optional argument passes them on, was "key 'weights'
    has the wrong type (NoneType); expected a string": the documented default refused."""
    report = edgekit.export(_linear(), inputs=["x:Nx4"], calibration="random", no_bench=True,
                            out=tmp_path / "out", weights=None, emulate=None, device=None)
    assert report.passed


def test_a_tuple_of_two_batches_of_a_one_dimensional_input_is_two_batches(tmp_path):
    """(a, b) for an input x:4 was refused as "(inputs, labels) given as the data itself": two 1-D arrays of one
    length are two batches there (labels name the rows of a batch of two or more axes), as [a, b] is."""
    rng = np.random.default_rng(0)
    batches = tuple(rng.random(4, np.float32) for _ in range(2))
    report = edgekit.export(_linear(), inputs=["x:4"], calibration=batches, no_bench=True, out=tmp_path / "out")
    assert report.passed  # read as [a, b] is (one for calibration, one kept for validation)


def test_inputs_and_labels_given_as_the_data_itself_are_told_how_to_pass_them(tmp_path):
    """calibration=(X, y), as distill's pairs look: a tuple is an iterable of items, and the labels were read as the
    second batch of inputs ("array 'x' has shape [16], expected samples of ['N', 4]")."""
    rng = np.random.default_rng(0)
    x, y = torch.from_numpy(rng.random((16, 4), np.float32)), torch.from_numpy(rng.integers(0, 2, 16))
    with pytest.raises(edgekit.InputError, match=r"\(inputs, labels\) given as the data itself .*give \[\(inputs, "
                                                 r"labels\)\] \(one batch\) or \{'x': inputs, 'labels': labels\}"):
        edgekit.export(torch.nn.Linear(4, 2), inputs=["x:Nx4"], calibration=(x, y), no_bench=True)
    assert edgekit.export(_linear(), inputs=["x:Nx4"], calibration=[(x, y)], no_bench=True, out=tmp_path / "o").passed


def test_torchs_grad_mode_is_as_found_after_a_call_that_first_imports_torch(tmp_path):
    """A call that imports torch itself (prune: import_for) keeps torch's grad mode from then on: a model file's own
    `torch.set_grad_enabled(False)` outlived the call once the mode was kept before torch was imported."""
    net = "torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 3))"
    (tmp_path / "net.py").write_text(f"import torch\ntorch.set_grad_enabled(False)\n\ndef make():\n    return {net}\n")
    script = ("import sys, edgekit\nassert 'torch' not in sys.modules\ntry:\n"
              "    edgekit.prune('net.py:make', inputs=['x:1x3x8x8'], ratio=0.5)\nexcept edgekit.EdgekitError:\n"
              "    pass\nimport torch\nprint(torch.is_grad_enabled())\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.strip().splitlines()[-1:] == ["True"], done.stderr[-2000:]


def test_arguments_a_call_does_not_take_are_usage_errors_naming_those_it_does():
    """check(path, bogus=1) was Python's bare TypeError, naming no option check takes."""
    with pytest.raises(edgekit.UsageError, match=r"'prob' \(did you mean 'probe'\?\); it takes path \(required\), "
                                                 "emulate, device, probe, step_timeout"):
        edgekit.check("out", prob=True)
    with pytest.raises(edgekit.UsageError, match="edgekit.check\\(\\): missing a required argument: 'path'"):
        edgekit.check()
    with pytest.raises(edgekit.UsageError, match="edgekit.prune\\(\\): missing a required argument: 'inputs'"):
        edgekit.prune("m.py:build")
    with pytest.raises(edgekit.UsageError, match="unexpected setting 'bogus'"):  # **settings judged by export
        edgekit.export(torch.nn.Linear(4, 2), inputs=["x:Nx4"], calibration="random", bogus=1)


def test_a_path_under_the_users_home_is_written_there(tmp_path, monkeypatch):
    """out="~/dist" made a folder literally named `~` in the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    report = edgekit.export(torch.nn.Linear(4, 2), inputs=["x:Nx4"], calibration="random", no_bench=True,
                            out="~/dist")
    assert report.out == tmp_path / "home" / "dist" and not (tmp_path / "~").exists()
    assert edgekit.check("~/dist").passed
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(tmp_path / "home" / "l.onnx"),
                      input_names=["x"], dynamo=False)
    assert edgekit.quantize("~/l.onnx", "random", out="~/l8.onnx") == tmp_path / "home" / "l8.onnx"


def test_a_reports_repr_is_a_short_verdict_not_every_figure(tmp_path):
    """A notebook cell ending in `report` printed the dataclass's repr: every gate, hash, warning and the whole
    manifest of each target (some 20,000 characters for one Linear)."""
    report = edgekit.export(torch.nn.Linear(4, 2), inputs=["x:Nx4"], calibration="random", no_bench=True,
                            out=tmp_path / "out")
    shown = repr(report)
    assert shown.startswith(f"<ExportReport PASSED, out={str(tmp_path / 'out')!r}\n  desktop-x86: passed, cos int8 ")
    assert len(shown) < 300 and repr(report.targets["desktop-x86"]).startswith("<TargetReport desktop-x86: passed")
    assert repr(edgekit.check(report)).startswith("<CheckReport PASSED: ")
    model = tmp_path / "out" / "desktop-x86" / "model.int8.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"x")
    shown = repr(edgekit.check(tmp_path / "out"))
    assert shown.startswith("<CheckReport FAILED: ") and "desktop-x86 integrity: model.int8.onnx sha256 " in shown
    assert len(shown) < 600, shown


def test_a_child_process_makes_its_temporary_files_where_the_leftover_guard_looks(tmp_path):
    """conftest's guard fails a test that leaves an edgekit-* folder in the temporary folder; a child (edgekit's
    bounded steps, a test's script) used the system's, and what it left there was never seen."""
    made = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.mkdtemp(prefix='edgekit-'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert os.path.dirname(made) == tempfile.gettempdir()
    os.rmdir(made)
