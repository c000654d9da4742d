"""An .onnx source is read once per run (issue 11, item 4): export and quantize take on the bytes load_onnx_input
checked, so a file swapped on disk after the checks is not what gets pre-processed, quantized or compared, and a
symlinked .onnx keeps its external data beside the file it points to."""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import cli
from onnx import TensorProto, helper, numpy_helper

import edgekit

X = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)


def _linear(path, value: float, location: str | None = None):
    """y = x @ W, W all `value` (4x2), its weights in `location` (external data beside the file) when given."""
    w = numpy_helper.from_array(np.full((4, 2), value, np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if location:
        onnx.save(model, str(path), save_as_external_data=True, location=location, size_threshold=0)
    else:
        path.write_bytes(model.SerializeToString())
    return path


def _swapped_after_checks(monkeypatch, path) -> bytes:
    """Once edgekit's graph walk (the first thing its checks do with the bytes read) has counted `path`, the file
    is replaced by a valid model of the same inputs and outputs whose weights are 7s: a later read of the file
    quantizes that one, without a word. Returns the bytes checked."""
    from edgekit import graph_bytes as gb

    walk, checked = gb._structure, path.read_bytes()

    def swapped_after_walked(*args):
        try:
            return walk(*args)
        finally:
            if args[3] == gb._MODEL:
                _linear(path, 7.0)

    monkeypatch.setattr(gb, "_structure", swapped_after_walked)
    return checked


def _outputs(model) -> np.ndarray:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]


def _weights_ones(model) -> bool:
    """Whether the model computes x @ ones (the file checked), not x @ 7s (the one swapped in)."""
    return np.allclose(_outputs(model), X @ np.ones((4, 2), np.float32), atol=0.1)


def test_quantize_quantizes_the_model_it_checked_not_a_file_swapped_in_after(tmp_path, monkeypatch):
    """quantize() checked the file, then read it again three times (initializer inputs, opset, external files) and
    pre-processed the path: a model swapped in after the checks was the one quantized."""
    src = _linear(tmp_path / "m.onnx", 1.0)
    _swapped_after_checks(monkeypatch, src)
    out = edgekit.quantize(src, "random", out=tmp_path / "q.onnx")
    assert _weights_ones(out), _outputs(out)[:2]


def test_export_ships_and_names_the_model_it_checked_not_a_file_swapped_in_after(tmp_path, monkeypatch):
    """export took the checked model's inputs, then pre-processed, ran and digested the file again: the package
    shipped the model swapped in after the checks, under the sha256 of that one."""
    src = _linear(tmp_path / "m.onnx", 1.0)
    checked = _swapped_after_checks(monkeypatch, src)
    result = cli(["export", src, "--calibration", "random", "--out", tmp_path / "o", "--no-bench"])
    assert result.exit_code == 0, result.output
    package = tmp_path / "o" / "desktop-x86"
    assert _weights_ones(package / "model.onnx") and _weights_ones(package / "model.int8.onnx")
    manifest = json.loads((package / "manifest.json").read_text())
    assert hashlib.sha256(checked).hexdigest() in json.dumps(manifest)
    assert hashlib.sha256(src.read_bytes()).hexdigest() not in json.dumps(manifest)


@pytest.fixture
def linked(tmp_path):
    """An .onnx with its weights in external data, given through a symlink from another folder, where a decoy
    file of the same name holds other weights (onnx read the weights beside the link: no file, or the decoy)."""
    (tmp_path / "model").mkdir()
    (tmp_path / "elsewhere").mkdir()
    _linear(tmp_path / "model" / "m.onnx", 1.0, location="m.onnx.data")
    link = tmp_path / "elsewhere" / "m.onnx"
    link.symlink_to(tmp_path / "model" / "m.onnx")
    return link


@pytest.mark.parametrize("decoy", [False, True])
def test_a_symlinked_onnx_reads_its_external_data_beside_its_target(linked, decoy):
    """A symlinked .onnx with external data was refused ("should be stored in elsewhere/m.onnx.data, but it is not
    regular file"): its data was looked for beside the link, while the checks of its location took the target's
    folder. The link is resolved once: the data is the target's, never a file beside the link."""
    if decoy:
        (linked.parent / "m.onnx.data").write_bytes(np.full(8, 7.0, np.float32).tobytes())
    out = edgekit.quantize(linked, "random", out=linked.parent / "q.onnx")
    assert _weights_ones(out), _outputs(out)[:2]


def test_export_of_a_symlinked_onnx_with_external_data(linked):
    result = cli(["export", linked, "--calibration", "random", "--out", linked.parent / "o", "--no-bench"])
    assert result.exit_code == 0, result.output
    assert _weights_ones(linked.parent / "o" / "desktop-x86" / "model.int8.onnx")


def test_quantize_opens_the_users_file_once(tmp_path):
    """Counted by the interpreter's own audit events (every open() of the file in this process, onnx.load's too):
    quantize() opened the user's file 4 times (the checks, initializer inputs, opset, external files)."""
    src = _linear(tmp_path / "m.onnx", 1.0)
    opened = []
    target = str(src)

    def hook(event, args):
        if event == "open" and args and str(args[0]) == target and opened is not None:
            opened.append(event)

    sys.addaudithook(hook)  # audit hooks stay for the process: it counts only while `opened` is a list
    try:
        edgekit.quantize(src, "random", out=tmp_path / "q.onnx")
    finally:
        counted, opened = len(opened), None
    assert counted == 1, counted


@pytest.mark.parametrize("command", ["quantize", "export"])
def test_external_data_replaced_after_the_checks_is_refused_not_quantized(tmp_path, monkeypatch, command):
    """The .onnx is held as checked, its external data is read again where the stage copy is made: replaced after
    the checks (here by weights of 7s, once onnxruntime's kernel check, the last one, has run), the unchecked
    weights were quantized without a word. A file not the one checked is refused (exit 3)."""
    from edgekit import onnx_export

    src = _linear(tmp_path / "m.onnx", 1.0, location="m.onnx.data")
    kernels = onnx_export._check_runtime_kernels

    def replaced_after(*args):
        kernels(*args)
        (tmp_path / "new.data").write_bytes(np.full(8, 7.0, np.float32).tobytes())
        (tmp_path / "new.data").replace(tmp_path / "m.onnx.data")

    monkeypatch.setattr(onnx_export, "_check_runtime_kernels", replaced_after)
    said = "its external data file 'm.onnx.data' changed while edgekit read the model"
    if command == "quantize":
        with pytest.raises(edgekit.errors.InputError, match=said):
            edgekit.quantize(src, "random", out=tmp_path / "q.onnx")
        assert not (tmp_path / "q.onnx").exists()
    else:
        result = cli(["export", src, "--calibration", "random", "--out", tmp_path / "o", "--no-bench"])
        assert result.exit_code == 3 and said in result.stderr and "Traceback" not in result.output, result.output
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _weights_as_inputs(path, d: int = 16):
    """Three MatMul+Add+Relu layers whose weights are graph inputs too, as older exporters wrote them."""
    rng = np.random.default_rng(1)
    nodes, weights, last = [], [], "x"
    for i in range(3):
        weights += [numpy_helper.from_array((rng.standard_normal((d, d)) / 4).astype(np.float32), f"w{i}"),
                    numpy_helper.from_array((rng.standard_normal(d) / 100).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"], name=f"mm{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"add{i}"),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu{i}")]
        last = f"r{i}"
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])] + [
        helper.make_tensor_value_info(w.name, TensorProto.FLOAT, list(w.dims)) for w in weights]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(last, TensorProto.FLOAT, ["N", d])],
                              weights)
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def test_export_parity_of_an_onnx_is_measured_against_the_file_as_given(tmp_path, monkeypatch):
    """The export gates hold model.onnx to the user's .onnx as given: their reference was run on the stage's copy
    without the weights listed as inputs (what edgekit made of it), and a legacy export's manifest changed (export
    max_abs 2.4e-7 -> 0, SQNR 137 -> 200 dB): the reference is a copy of the bytes checked, nothing removed."""
    from edgekit import pipeline

    src = _weights_as_inputs(tmp_path / "m.onnx")
    ran, given_outputs = [], pipeline._given_outputs

    def recorded(given, *args):
        ran.append(Path(given).read_bytes())
        return given_outputs(given, *args)

    monkeypatch.setattr(pipeline, "_given_outputs", recorded)
    result = cli(["export", src, "--calibration", "random", "--out", tmp_path / "o", "--no-bench"])
    assert result.exit_code == 0, result.output
    assert ran == [src.read_bytes()]


def _held_reads(path) -> list[int]:
    """The sizes of the blocks still alive that edgekit allocated reading `path`'s bytes (_model_bytes' read)."""
    import inspect
    import tracemalloc

    from edgekit import onnx_export

    lines, first = inspect.getsourcelines(onnx_export._model_bytes)
    line = first + next(i for i, text in enumerate(lines) if "f.read(" in text)
    traces = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, onnx_export.__file__, line)])
    return [t.size for t in traces.traces if t.size >= path.stat().st_size]


@pytest.mark.parametrize("command", ["quantize", "export"])
def test_the_bytes_checked_are_not_held_while_the_model_is_quantized(tmp_path, monkeypatch, command):
    """Once copied into the stage, the .onnx's bytes are let go: held for the whole run (the record of the checks,
    the digest's bytes), a 128 MB model's export peaked 125-140 MB higher than before the file was read once."""
    import tracemalloc

    from edgekit import pipeline, quantization

    w = numpy_helper.from_array(np.full((1024, 1024), 0.01, np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1024])], [w])
    src = tmp_path / "m.onnx"
    src.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    held, module, name = [], *((quantization, "quantize") if command == "quantize" else (pipeline, "_target"))
    step = getattr(module, name)

    def measured(*args, **kwargs):
        held.extend(_held_reads(src))
        return step(*args, **kwargs)

    monkeypatch.setattr(module, name, measured)
    tracemalloc.start()
    try:
        if command == "quantize":
            edgekit.quantize(src, "random", out=tmp_path / "q.onnx")
        else:
            result = cli(["export", src, "--calibration", "random", "--out", tmp_path / "o", "--no-bench"])
            assert result.exit_code == 0, result.output
    finally:
        tracemalloc.stop()
    assert held == [], held


def test_quantize_of_a_symlink_loop_is_bad_input_not_a_runtime_error(tmp_path):
    """A link to itself was Path.resolve()'s RuntimeError ("Symlink loop from ...") out of edgekit.quantize(), before
    the checks that say so in one line (the CLI's export did: exit 3)."""
    from edgekit.errors import InputError

    (tmp_path / "m.onnx").symlink_to("m.onnx")
    with pytest.raises(InputError, match="cannot read"):
        edgekit.quantize(tmp_path / "m.onnx", "random", out=tmp_path / "q.onnx")
