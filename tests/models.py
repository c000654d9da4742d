"""Tiny models built in code for the tests (importable as `models:NAME` with tests/ on sys.path)."""
import warnings

import numpy as np
import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, image):
        return self.body(image)


class TinyEncoder(nn.Module):
    """BERT-style: int64 ids and mask, additive mask at float-min (as Hugging Face does), mean pooling."""

    def __init__(self, vocab=64, dim=32):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.scale = dim ** -0.5

    def forward(self, input_ids, attention_mask):
        h = self.embed(input_ids)
        mask = attention_mask[:, None, :].to(h.dtype)
        bias = (1.0 - mask) * torch.finfo(h.dtype).min
        attn = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) * self.scale + bias, dim=-1)
        h = self.norm(h + self.o(attn @ self.v(h)))
        h = self.norm(h + self.ff(h))
        m = attention_mask[..., None].to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 4)
        self.b = nn.Linear(6, 3)

    def forward(self, x):
        return self.a(x), self.b(x)


class StemCNN(nn.Module):
    """An RGB stem onnxruntime's fast int8 conv takes on x86 once padded to 4 input channels (16 outputs), and an
    interior conv of 6 input channels, which stays (a pad between int8 convs cost more than it saved)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 6, 1), nn.ReLU(),
                                  nn.Conv2d(6, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(16, 5))

    def forward(self, image):
        return self.body(image)


def stem_cnn():
    torch.manual_seed(0)
    return StemCNN()


def small_cnn():
    torch.manual_seed(0)
    return SmallCNN()


def tiny_encoder():
    torch.manual_seed(0)
    return TinyEncoder()


def two_outputs():
    torch.manual_seed(0)
    return TwoOutputs()


def not_a_module():
    return 42


def broken():
    raise RuntimeError("boom in user code")


def exits_zero():
    import sys
    sys.exit(0)


class ExitsInForward(nn.Module):
    def forward(self, x):
        import sys
        sys.exit(0)


def exits_in_forward():
    return ExitsInForward()


def data_that_exits():
    yield {"x": torch.zeros(1, 3).numpy()}
    import sys
    sys.exit(0)


class Residual(nn.Module):
    """Conv outputs consumed twice (a residual add): where S8S8 QDQ groups stay unfused on x86."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, image):
        x = torch.relu(self.stem(image))
        x = torch.relu(x + self.b(torch.relu(self.a(x))))
        return self.head(x.mean((2, 3)))


def residual():
    torch.manual_seed(0)
    return Residual()


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 4)

    def forward(self, x):
        y = self.a(x)
        return {"scores": y, "extra": (y * 2, y.sum(1, keepdim=True))}


def dict_out():
    torch.manual_seed(0)
    return DictOut()


class Branchy(nn.Module):
    """A residual add, a concat and a depthwise conv: the dependencies structured pruning must respect."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.res = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32))
        self.dw = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU())
        self.pw = nn.Conv2d(32, 16, 1)
        self.side = nn.Conv2d(32, 16, 1)
        self.head = nn.Linear(32, 10)

    def forward(self, image):
        x = self.stem(image)
        x = torch.relu(x + self.res(x))
        x = torch.cat([self.pw(self.dw(x)), self.side(x)], dim=1)
        return self.head(x.mean((2, 3)))


def branchy():
    torch.manual_seed(0)
    return Branchy()


class Outlier(nn.Module):
    """A conv stack where one conv's output carries a few huge activations: one per-tensor range for
    that tensor wastes almost every int8 level on the outliers (as transformer FFN activations do)."""

    def __init__(self, outliers: bool = True, depth: int = 8):
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 32, 3, padding=1)
        self.c3 = nn.Conv2d(32, 32, 3, padding=1, bias=False)
        self.rest = nn.ModuleList(nn.Conv2d(32, 32, 3, padding=1, bias=False) for _ in range(depth))
        self.head = nn.Linear(32, 10, bias=False)  # no biases after c2: the output is all signal
        if outliers:
            with torch.no_grad():  # channel 0 of c2 is 3000x louder than the rest
                self.c2.weight[0] *= 3000.0
                self.c2.bias[0] += 3000.0
                self.c3.weight[:, 0] /= 3000.0

    def forward(self, image):
        x = torch.relu(self.c1(image))
        x = torch.relu(self.c3(self.c2(x)))
        for conv in self.rest:
            x = torch.relu(conv(x))
        return self.head(x.mean((2, 3)))


def outlier():
    torch.manual_seed(0)
    return Outlier(True)


def no_outlier():
    torch.manual_seed(0)
    return Outlier(False)


def _outlier_channel(*pairs):
    """Each LayerNorm's channel 0 100x (gamma and bias), the layer reading it /100: the float model is unchanged."""
    with torch.no_grad():
        for ln, fc in pairs:
            ln.weight[0] *= 100.0
            ln.bias[0] += 100.0
            fc.weight[:, 0] /= 100.0


class NormOutlier(nn.Module):
    """Tokens through LayerNorms whose gamma is 100x on one channel (the next layer's weights /100): the float model
    is unchanged, int8 crushes every other channel of the LayerNorm's output. No conv/matmul is the culprit."""

    def __init__(self, d: int = 32):
        super().__init__()
        self.emb = nn.Linear(32, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, d), nn.Linear(d, d)
        self.head = nn.Linear(d, 10)
        _outlier_channel((self.ln1, self.fc1), (self.ln2, self.fc2))

    def forward(self, image):
        x = self.emb(image.mean(1))  # 32 tokens (rows) of 32 features
        x = x + torch.relu(self.fc1(self.ln1(x)))
        return self.head(torch.relu(self.fc2(self.ln2(x))).mean(1))


def norm_outlier():
    torch.manual_seed(0)
    return NormOutlier()


class AttentionNormOutlier(nn.Module):
    """Self-attention over image rows whose LayerNorm gamma is 100x on one channel (q/k/v weights /100): dynamic
    int8 MatMuls quantize that LayerNorm's output per tensor at run time and lose the other channels."""

    def __init__(self, d: int = 32):
        super().__init__()
        self.emb, self.qkv, self.proj = nn.Linear(32, d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.head = nn.Linear(d, 10)
        _outlier_channel((self.ln, self.qkv), (self.ln2, self.head))

    def forward(self, image):
        x = self.emb(image.mean(1))
        q, k, v = self.qkv(self.ln(x)).chunk(3, -1)
        a = torch.softmax(q @ k.transpose(1, 2) * 32 ** -0.5, -1)
        return self.head(self.ln2(self.proj(a @ v)).mean(1))


def attention_norm_outlier():
    torch.manual_seed(0)
    return AttentionNormOutlier()


class IgnoredFeatureAttention(nn.Module):
    """Self-attention over 16 tokens of 16 features whose q/k/v read nothing of feature 0: a sample holding a huge
    value there is the float model's as any other, while dynamic int8 MatMuls quantize that sample's input per tensor
    to the huge value's range and crush every other feature (an outlier feature of a transformer's)."""

    def __init__(self, f: int = 16, d: int = 32):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(f, d), nn.Linear(f, d), nn.Linear(f, d)
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 10, bias=False)
        with torch.no_grad():
            for linear in (self.q, self.k, self.v):
                linear.weight[:, 0] = 0.0

    def forward(self, x):
        a = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) * 32 ** -0.5, -1)
        return self.head(self.norm(a @ self.v(x)).mean(1))


def ignored_feature_attention():
    torch.manual_seed(0)
    return IgnoredFeatureAttention()


def ignored_feature_data(n: int, seed: int, spike: float = 0.0) -> dict:
    """`n` samples of 16x16 normal values; with `spike`, the last sample's feature 0 of its first token."""
    x = np.random.default_rng(seed).standard_normal((n, 16, 16)).astype(np.float32)
    x[-1, 0, 0] = spike or x[-1, 0, 0]
    return {"x": x}


class TwoHeads(nn.Module):
    """Two outputs from two heads; plus a norm type and a bare parameter the size table does not list."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.InstanceNorm2d(16, affine=True)
        self.gain = nn.Parameter(torch.ones(16, 1, 1))
        self.a = nn.Linear(16, 4)
        self.b = nn.Linear(16, 3)

    def forward(self, image):
        x = (torch.relu(self.norm(self.body(image))) * self.gain).mean((2, 3))
        return self.a(x), self.b(x)


def two_heads():
    torch.manual_seed(0)
    return TwoHeads()


class ConvNeXtStyle(nn.Module):
    """ConvNeXt blocks: depthwise 7x7, channels-last LayerNorm, pointwise MLP with GELU, residual."""

    def __init__(self, dim=16, depth=2, classes=5):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "dw": nn.Conv2d(dim, dim, 7, padding=3, groups=dim), "norm": nn.LayerNorm(dim),
            "up": nn.Linear(dim, 4 * dim), "down": nn.Linear(4 * dim, dim)}) for _ in range(depth))
        self.head = nn.Linear(dim, classes)

    def forward(self, image):
        x = self.stem(image)
        for b in self.blocks:
            y = b["dw"](x).permute(0, 2, 3, 1)
            y = b["down"](nn.functional.gelu(b["up"](b["norm"](y))))
            x = x + y.permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


def convnext_style():
    torch.manual_seed(0)
    return ConvNeXtStyle()


def _pooled_conv(outputs: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, outputs))


class Silent(nn.Module):
    """Emits ~1e-30: a model with no signal (as a Hugging Face MobileViT from a bare config did, ~1e-40)."""

    def __init__(self):
        super().__init__()
        self.body = _pooled_conv(5)

    def forward(self, image):
        return self.body(image) * 1e-30


def silent():
    torch.manual_seed(0)
    return Silent()


class Embedder(nn.Module):
    """A 2-D float output that is an embedding, not class scores."""

    def __init__(self):
        super().__init__()
        self.body = _pooled_conv(16)

    def forward(self, image):
        return nn.functional.normalize(self.body(image), dim=1)


def embedder():
    torch.manual_seed(0)
    return Embedder()


class LogitsAndEmbedding(nn.Module):
    """Class scores with wide margins, and an embedding whose first two features are a near-tie (the second 0.1%
    larger): int8 rounds them alike, so the embedding's argmax moves while its cosine stays ~1."""

    def __init__(self):
        super().__init__()
        self.head, self.embed = nn.Linear(4, 3), nn.Linear(4, 6)
        with torch.no_grad():
            self.head.weight.copy_(4 * torch.eye(3, 4))
            self.embed.weight.copy_(torch.cat([torch.ones(1, 4), 1.001 * torch.ones(1, 4), 0.5 * torch.eye(4)]))
            self.head.bias.zero_()
            self.embed.bias.zero_()

    def forward(self, x):
        return self.head(x), self.embed(x)


def logits_and_embedding():
    return LogitsAndEmbedding().eval()


def logits_and_embedding_data(n: int, seed: int) -> dict:
    """Inputs in [0, 1) whose label's feature leads the others by at least 0.4 (4 x 0.4 in the logits)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = (0.3 * rng.random((n, 4))).astype(np.float32)
    x[np.arange(n), labels] += 0.7
    return {"x": x, "labels": labels}


class Gained(nn.Module):
    """A conv classifier with a configuration input: a rank-0 gain applied to the image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = SmallCNN()

    def forward(self, image, gain):
        return self.body(image * gain)


def gained():
    return Gained()


def if_on_scalar_onnx(path, seed=0):
    """A voice-activity-style ONNX graph: `If(sr == 16000)` picks one of two sub-graphs, each holding a Conv
    (with its weights as sub-graph initializers), on a rank-0 int64 `sr` input."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def branch(name):
        weight = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), f"{name}_w")
        nodes = [helper.make_node("Conv", ["x", f"{name}_w"], [f"{name}_c"], pads=[1, 1, 1, 1], name=f"{name}_conv"),
                 helper.make_node("Relu", [f"{name}_c"], [f"{name}_out"], name=f"{name}_relu")]
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(
            f"{name}_out", TensorProto.FLOAT, ["N", 4, 16, 16])], initializer=[weight])

    nodes = [helper.make_node("Equal", ["sr", "rate16k"], ["is16k"]),
             helper.make_node("If", ["is16k"], ["features"], then_branch=branch("khz16"), else_branch=branch("khz8")),
             helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["speech"], transB=1)]
    graph = helper.make_graph(
        nodes, "vad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16, 16]),
                       helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("speech", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(np.array(16000, np.int64), "rate16k"),
                     numpy_helper.from_array(rng.standard_normal((2, 4)).astype(np.float32), "fc_w"),
                     numpy_helper.from_array(np.zeros(2, np.float32), "fc_b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def gather_on_constant_onnx(path):
    """`x * sizes[1]` as torch exports `self.sizes[1]` (Constant 1-D, Gather index 1): onnxruntime's symbolic
    shape inference fails on it with an empty AssertionError (`_infer_Gather` accepts only index 0 or -1)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Constant", [], ["sizes"], value=numpy_helper.from_array(np.array([4, 8], np.int64))),
             helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1, np.int64))),
             helper.make_node("Gather", ["sizes", "one"], ["size"], axis=0),
             helper.make_node("Cast", ["size"], ["scale"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Mul", ["h", "scale"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              initializer=[numpy_helper.from_array(
                                  np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


class BakedBatch(nn.Module):
    """Works at any batch in torch, but `int(x.shape[0])` is a constant to the tracer: the exported Reshape
    holds the traced batch, so the ONNX model runs only at that size."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 5)

    def forward(self, image):
        n = int(image.shape[0])
        return self.fc(self.conv(image).reshape(n, -1))


def baked_batch():
    return BakedBatch()


class Streaming(nn.Module):
    """One step of a streaming model: (x, state) → (8 scores, new state). The state is a slowly decaying sum
    of the inputs' features (a leaky integrator, as in voice-activity smoothing), so a rounding error in
    it is fed back and accumulates over hundreds of steps."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.wx, self.head = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x, state):
        h = state * 0.995 + 0.05 * torch.tanh(self.wx(x))
        return self.head(torch.tanh(h)), h


def streaming():
    return Streaming()


class StreamingTwice(Streaming):
    """Streaming, its new state returned twice (as a GRU's output and its new hidden state are)."""

    def forward(self, x, state):
        score, new = super().forward(x, state)
        return score, new, new.clone()


def streaming_twice():
    return StreamingTwice()


class StreamingGRU(nn.Module):
    """A streaming nn.GRU step: (x [N, 1, 8], h [1, N, 16]) → (score [N, 2], new h)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gru, self.head = nn.GRU(8, 16, batch_first=True), nn.Linear(16, 2)

    def forward(self, x, h):
        out, h_new = self.gru(x, h)
        return self.head(out[:, -1]), h_new


def streaming_gru():
    return StreamingGRU()


class StreamingLSTM(nn.Module):
    """A streaming nn.LSTM step: (x [N, 1, 8], h, c [1, N, 16]) → (score [N, 2], new h, new c)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lstm, self.head = nn.LSTM(8, 16, batch_first=True), nn.Linear(16, 2)

    def forward(self, x, h, c):
        out, (h_new, c_new) = self.lstm(x, (h, c))
        return self.head(out[:, -1]), h_new, c_new


def streaming_lstm():
    return StreamingLSTM()


class ConvLSTM(nn.Module):
    """A Conv1d front end and a 2-layer nn.LSTM: x [N, T, 8] → [N, 4]; the LSTMs are ~95% of the MACs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.lstm = nn.Conv1d(8, 16, 3, padding=1), nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        out, _ = self.lstm(torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2))
        return self.head(out[:, -1])


def conv_lstm():
    return ConvLSTM().eval()


class SplitNnapi(nn.Module):
    """CumSum and Erf, which NNAPI lacks, between the arithmetic and the Linear: onnxruntime's checker predicts 4
    NNAPI partitions of 23/26 nodes, 90% of the MACs (verdict no)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.cumsum(x, 1)
        y = torch.sin(y) + torch.cumsum(y, 1).flip(1)
        return self.fc(torch.erf(y))


def split_nnapi():
    return SplitNnapi().eval()


def optional_gain_onnx(path):
    """`(x @ w) * gain` where `gain` is an optional input: a graph input with a default initializer (2.0)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Mul", ["m", "gain"], ["y"])], "gained",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
         helper.make_tensor_value_info("gain", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[w, numpy_helper.from_array(np.array(2.0, np.float32), "gain")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


class MixedDtypes(nn.Module):
    """A float16 input and a bool mask: (x16, mask) → Linear(where(mask, x, 0))."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 4)

    def forward(self, x, mask):
        return self.fc(torch.where(mask, x.float(), torch.zeros((), dtype=torch.float32)))


def mixed_dtypes():
    return MixedDtypes()


class StreamingGRUCell(nn.Module):
    """A streaming nn.GRUCell step, (x [N, 8], h [N, 16]) → (8 scores, new h), whose update gate is biased
    towards keeping h (a long memory, as a voice-activity smoother has): rounding in its state accumulates."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.cell, self.head = nn.GRUCell(8, 16), nn.Linear(16, 8)
        with torch.no_grad():
            self.cell.bias_ih[16:32] += 5.0  # the update gate is PyTorch's second chunk

    def forward(self, x, h):
        h = self.cell(x, h)
        return self.head(h), h


def streaming_gru_cell():
    return StreamingGRUCell()


class TiedResidual(nn.Module):
    """A residual add whose operands share one quantization scale and whose sum's scale is exactly twice
    it (see `tied_residual_images`): a third of its sums fall on a rounding tie, which onnxruntime's x86 and
    aarch64 QLinearAdd kernels round differently (measured under emulation; the convs stay bit-exact)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, image):
        x = torch.relu(self.a(image))
        return self.head(x + torch.flip(x, dims=[3]))


def tied_residual():
    torch.manual_seed(0)
    return TiedResidual()


def tied_residual_images(n: int, seed: int, bright: bool) -> np.ndarray:
    """Images in [0, 1); with `bright`, the first is a constant 4.0: through 1x1 convs it gives both the add's
    operands their peak at once, so the calibrated sum range is exactly twice each operand's."""
    images = np.random.default_rng(seed).random((n, 3, 16, 16), dtype=np.float32)
    if bright:
        images[0] = 4.0
    return images


class UnsavedShift(nn.Module):
    """Adds a random buffer that its state dict does not hold: rebuilt from the function, it gives other outputs."""

    def __init__(self):
        super().__init__()
        self.body = _pooled_conv(5)
        self.register_buffer("shift", torch.randn(5), persistent=False)

    def forward(self, image):
        return self.body(image) + self.shift


def unsaved_shift():
    return UnsavedShift()  # unseeded on purpose


class Chatty(nn.Module):
    """Prints on every call, as a model being debugged does."""

    def __init__(self):
        super().__init__()
        self.body = _pooled_conv(5)

    def forward(self, image):
        print("Chatty.forward called")
        return self.body(image)


def chatty():
    torch.manual_seed(0)
    return Chatty()


class Warns(nn.Module):
    """Warns on every call (warnings.warn in its forward), as a model with a deprecated argument does."""

    def __init__(self):
        super().__init__()
        self.body = _pooled_conv(5)

    def forward(self, image):
        warnings.warn("Warns.forward: this argument is deprecated", UserWarning)
        return self.body(image)


def warns():
    torch.manual_seed(0)
    return Warns()


class LateNaN(nn.Module):
    """Digits-shaped scores that turn NaN after 10 forward calls in training mode: a blow-up past the first epoch."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.calls = 0

    def forward(self, image):
        self.calls += self.training
        out = self.body(image)
        return out * float("nan") if self.calls > 10 else out


def late_nan():
    torch.manual_seed(0)
    return LateNaN()


class Decoder1d(nn.Module):
    """Conv1d, Conv1d, then a ConvTranspose1d output layer: pruning took the middle conv for the head and halved
    the output channels (exit 0, the export passing)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv1d(4, 32, 3, padding=1)
        self.mid = nn.Conv1d(32, 32, 3, padding=1)
        self.dec = nn.ConvTranspose1d(32, 4, 2, stride=2)

    def forward(self, x):
        return self.dec(torch.relu(self.mid(torch.relu(self.enc(x)))))


def decoder_1d():
    torch.manual_seed(0)
    return Decoder1d()


class HardCodedView(nn.Module):
    """A forward that flattens to a size it states: pruned, it no longer runs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, 10)

    def forward(self, image):
        return self.fc(torch.relu(self.conv(image)).view(image.shape[0], 16 * 8 * 8))


def hard_coded_view():
    torch.manual_seed(0)
    return HardCodedView()


class DetachedFeatures(nn.Module):
    """Scores and a detached feature map as outputs: no gradient leads from the features to the conv that makes
    them, so only the scores' layer is found as an output layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, image):
        features = torch.relu(self.conv(image))
        return self.fc(features.mean((2, 3))), features.detach()


def detached_features():
    torch.manual_seed(0)
    return DetachedFeatures()


def channels_last():
    """small_cnn with its weights in channels-last memory: no flat view of them."""
    return small_cnn().to(memory_format=torch.channels_last)


class Tied(nn.Module):
    """Two linear layers sharing one weight: pruning gave them two (a 32x32 and a 16x32), exit 0."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


def tied():
    torch.manual_seed(0)
    return Tied()


class AttentionBlock(nn.Module):
    """Linear -> LayerNorm -> MultiheadAttention (residual) -> FFN -> head: attention's size is fixed when built."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 32)
        self.norm = nn.LayerNorm(32)
        self.att = nn.MultiheadAttention(32, 4, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        h = self.norm(self.inp(x))
        h = h + self.att(h, h, h, need_weights=False)[0]
        return self.head((h + self.ffn(h)).mean(1))


def attention_block():
    torch.manual_seed(0)
    return AttentionBlock().eval()


def wide_head():
    """Most of the weights in the output layer."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(1024, 10)).eval()


def grouped():
    """A grouped conv (4 groups of 4 channels): Torch-Pruning rounds its kept channels per group."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=4),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


class ScaledByBuffer(nn.Module):
    """Its forward multiplies by a 32-long buffer: pruning the conv before it breaks the product."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 32).view(1, 32, 1, 1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.conv(x) * self.scale)


def scaled_by_buffer():
    torch.manual_seed(0)
    return ScaledByBuffer().eval()


def conv_over_time():
    """Two Conv1d of kernel 5 over a dynamic time axis, then a mean: it runs at T >= 9 only."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(8, 16, 5), nn.ReLU(), nn.Conv1d(16, 16, 5), nn.ReLU(),
                         Mean(), nn.Linear(16, 4)).eval()


class Mean(nn.Module):
    def forward(self, x):
        return x.mean(-1)


class GRUClassifier(nn.Module):
    """Linear, Linear, GRU, Linear over x [N, T, 8]: Torch-Pruning traced it for good at T=2 and failed on it at
    T=40; with the GRU and the layer feeding it kept whole, it prunes the first layer."""

    def __init__(self):
        super().__init__()
        self.first, self.pre = nn.Linear(8, 32), nn.Linear(32, 32)
        self.gru, self.head = nn.GRU(32, 48, batch_first=True), nn.Linear(48, 4)

    def forward(self, x):
        return self.head(self.gru(torch.relu(self.pre(torch.relu(self.first(x)))))[0][:, -1])


def gru_classifier():
    torch.manual_seed(0)
    return GRUClassifier()


class LearnedPositions(nn.Module):
    """Learned positions for up to 12 steps added to x [N, seq, 16]: a parameter outside any layer (Torch-Pruning
    warns of it), and a model that runs only at seq <= 12."""

    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 12, 16))
        self.a, self.b, self.head = nn.Linear(16, 64), nn.Linear(64, 64), nn.Linear(64, 4)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x + self.pos[:, :x.shape[1]])))).mean(1))


def learned_positions():
    torch.manual_seed(0)
    return LearnedPositions()


class SegAndLogits(nn.Module):
    """A segmentation map returned before the class scores (a dict's keys in that order); `gain` scales the map."""

    def __init__(self, gain=1.0, empty=False):
        super().__init__()
        self.conv, self.seg, self.cls = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1), nn.Linear(8, 10)
        self.gain, self.empty = gain, empty

    def forward(self, x):
        f = torch.relu(self.conv(x))
        seg = f[:, :0] if self.empty else self.seg(f) * self.gain
        return {"z_seg": seg, "a_logits": self.cls(f.mean((2, 3)))}


def seg_and_logits():
    torch.manual_seed(0)
    return SegAndLogits()


class IdsBeforeScores(SegAndLogits):
    """A classifier's top-3 class ids (int64 [N, 3]) returned before its logits [N, 10]."""

    def forward(self, x):
        logits = super().forward(x)["a_logits"]
        return {"a_top3": logits.topk(3, dim=1).indices, "z_logits": logits}


def ids_before_scores():
    torch.manual_seed(0)
    return IdsBeforeScores()


def depth_in_mm():
    """The map peaks in the tens of thousands (a depth map in mm): float32-exact, yet 0.001 apart in absolute."""
    torch.manual_seed(0)
    return SegAndLogits(gain=1e5)


def zero_element():
    torch.manual_seed(0)
    return SegAndLogits(empty=True)


def binary_logit():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))


class DetectHead(nn.Module):
    """YOLO-style: one output of [xy in pixels (0..~125), wh, sigmoid(conf), sigmoid(cls)] per anchor."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, stride=2), nn.ReLU(), nn.Conv2d(16, 6, 1))

    def forward(self, image):
        p = self.body(image)
        h, w = p.shape[-2:]
        gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        xy = (p[:, 0:2].sigmoid() + torch.stack([gx, gy])) * 8.0
        wh = p[:, 2:4].exp() * 16.0
        scores = (p[:, 4:6] * 20).sigmoid()
        return torch.cat([xy, wh, scores], 1).flatten(2).transpose(1, 2)


def detect_head():
    torch.manual_seed(0)
    return DetectHead().eval()


class TwoLevelHead(nn.Module):
    """YOLOv5/v8-style: each level's [xy, wh, scores] joined by a Concat of its own, then the levels by another."""

    def __init__(self):
        super().__init__()
        self.fine, self.coarse = DetectHead(), DetectHead()

    def forward(self, image):
        return torch.cat([self.fine(image), self.coarse(image[:, :, ::2, ::2])], 1)


def two_level_head():
    torch.manual_seed(0)
    return TwoLevelHead().eval()


def half_cnn():
    """A model.half(): float16 weights, inputs and outputs."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval().half()


class PcmFrames(nn.Module):
    """int16 PCM [N,T] -> float / 32768 -> framed conv -> 4 scores (an audio front-end's first op is a cast)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.frame, self.head = nn.Conv1d(1, 8, 80, stride=40), nn.Linear(8, 4)

    def forward(self, pcm):
        return self.head(torch.relu(self.frame(pcm.float().unsqueeze(1) / 32768.0)).mean(-1))


def pcm_frames():
    return PcmFrames().eval()


class MixedHead(nn.Module):
    """One 1x1 conv predicting per cell [4 box values in pixels (~x100), objectness logit, class logit], the graph
    output (qexpert): quantized over the boxes' range, the logits kept 5 and 3 int8 values."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, 6, 1)
        with torch.no_grad():
            self.head.weight[:4] *= 100.0
            self.head.bias[:4] *= 100.0
            self.head.weight[4:] *= 4.0
            x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
            self.head.bias[4:] -= self.head(self.body(x))[:, 4:].mean((0, 2, 3))  # logits centred on 0

    def forward(self, image):
        return self.head(self.body(image))


def mixed_head():
    return MixedHead().eval()


class PermutedHead(MixedHead):
    """MixedHead as [N, cells, 6] (YOLO/SSD layout): a Reshape and a Transpose between the head and the output."""

    def forward(self, image):
        return self.head(self.body(image)).flatten(2).transpose(1, 2)


def permuted_head():
    return PermutedHead().eval()


class ReluHead(MixedHead):
    """MixedHead with a Relu on the output (onnxruntime quantizes the Conv over the Relu's range)."""

    def forward(self, image):
        return torch.relu(self.head(self.body(image)))


def relu_head():
    return ReluHead().eval()


def offset_regressor():
    """A regressor of an absolute quantity (a temperature in K): 300 + a small variation (qexpert). Quantized over
    [0, 310], its output kept 13 values."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    with torch.no_grad():
        model[3].weight *= 60.0
        model[3].bias.fill_(300.0)
    return model.eval()


class DepthLike(nn.Module):
    """A depth map of 0.5-80 m (0.5 + 79.5 * sigmoid), values spanning two decades: one int8 step of its whole
    range (0.3 m) is 20-60% of its nearest values."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 1, 1)
        with torch.no_grad():
            self.head.weight *= 20.0
            self.head.bias.fill_(-4.0)

    def forward(self, image):
        return 0.5 + 79.5 * torch.sigmoid(self.head(self.body(image)))


def depth_like():
    return DepthLike().eval()


class TwoReadersHead(MixedHead):
    """MixedHead returning each channel's peak beside its map: the Conv's result has a second reader, so the
    few-levels rule cannot keep it float (a quantized reader would put the Q/DQ back) and the logits keep a few int8
    values of the boxes' range."""

    def forward(self, image):
        y = self.head(self.body(image))
        return y, y.flatten(2).amax(2)


def two_readers_head():
    return TwoReadersHead().eval()


class TinySeg(nn.Module):
    """A segmenter: [N, 3, 16, 16] images to a [N, 4, 16, 16] class-logits map (class axis 1)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, image):
        return self.body(image)


def tiny_seg():
    return TinySeg().eval()


class UpsampledTwice(nn.Module):
    """A U-Net's decoder in small: two bilinear upsamplings, each a Resize whose optional roi torch omits ('')."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.down, self.mid, self.up = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = nn.functional.max_pool2d(torch.relu(self.down(x)), 2)
        y = torch.relu(self.mid(nn.functional.max_pool2d(y, 2)))
        for _ in range(2):
            y = nn.functional.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return self.up(y)


def upsampled_twice():
    return UpsampledTwice().eval()


def old_resize_onnx(path, opset=10, mode="linear", scales=(2.0, 2.0), op="Resize"):
    """Conv → Resize (or Upsample) → MatMul at an old opset, as old exporters wrote them: asymmetric coordinates,
    which onnxruntime's pre-processing lost converting opset 10 to 11 (cosine 0.69), or an Upsample it failed on
    (opset 9)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    h, w = int(8 * scales[0]), int(8 * scales[1])
    nodes = [helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c", "scales"], ["u"], mode=mode),
             helper.make_node("Flatten", ["u"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])]
    weights = {"k": rng.standard_normal((2, 1, 3, 3)) * 0.5, "scales": np.array([1, 1, *scales]),
               "w": rng.standard_normal((2 * h * w, 5)) * 0.1}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 5
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class ScoreCutDetector(nn.Module):
    """torchvision-style post-processing in the graph: boxes [K, 4] (corners, pixels), scores [K], labels [K]
    (int64) of the anchors whose score passes a cut, K following the values (NonZero's count). `cut`: the score
    threshold (a high one keeps few boxes, near the cut int8 moves many across)."""

    def __init__(self, cut: float = 0.5):
        super().__init__()
        self.cut = cut
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 1))
        self.register_buffer("corners", torch.tensor([-1.0, -1.0, 1.0, 1.0]).view(4, 1, 1))

    def forward(self, image):
        p = self.body(image)[0]  # [8, H, W]: 4 box offsets, a score, 3 class logits
        h, w = p.shape[-2:]
        gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        centre = torch.stack([gx, gy, gx, gy]) * 8.0 + 4.0
        boxes = (centre + self.corners * (6.0 + 2.0 * p[0:4].sigmoid()))
        scores = p[4].sigmoid().flatten()
        keep = torch.nonzero(scores > self.cut).squeeze(1)
        return boxes.flatten(1).transpose(0, 1)[keep], scores[keep], p[5:8].flatten(1).argmax(0)[keep]


def score_cut_detector():
    torch.manual_seed(0)
    return ScoreCutDetector().eval()


def nms_detector_onnx(path, cut: float = 0.6):
    """An .onnx detector ending in NonMaxSuppression: a 1x1 conv's 4 offsets (tanh) around a 16 x 16 grid's 12 px
    boxes and a score (sigmoid) per cell; NMS (IoU 0.5, score > `cut`, at most 100) keeps boxes [K, 4] (Gather of its
    box indices) and returns its selected_indices [K, 3] beside them, both in score order, K following the values."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="xy"), -1).reshape(256, 2) * 8 + 4
    consts = {"w": rng.normal(0, 0.5, (5, 3, 1, 1)).astype(np.float32), "b": np.zeros(5, np.float32),
              "grid": np.concatenate([grid - 6, grid + 6], 1)[None].astype(np.float32),
              "box_shape": np.array([1, 4, 256]), "score_shape": np.array([1, 1, 256]),
              "flat_shape": np.array([256, 4]),
              "most": np.array([100]), "iou": np.array([0.5], np.float32), "cut": np.array([cut], np.float32),
              "zero": np.array([0]), "four": np.array([4]), "five": np.array([5]), "one": np.array([1]),
              "two": np.array([2])}
    node = helper.make_node
    nodes = [node("Conv", ["image", "w", "b"], ["p"]), node("Slice", ["p", "zero", "four", "one"], ["offsets"]),
             node("Reshape", ["offsets", "box_shape"], ["by_channel"]),
             node("Transpose", ["by_channel"], ["by_cell"], perm=[0, 2, 1]), node("Tanh", ["by_cell"], ["moved"]),
             node("Add", ["grid", "moved"], ["all_boxes"]), node("Slice", ["p", "four", "five", "one"], ["conf"]),
             node("Sigmoid", ["conf"], ["sig"]), node("Reshape", ["sig", "score_shape"], ["scores"]),
             node("NonMaxSuppression", ["all_boxes", "scores", "most", "iou", "cut"], ["selected"]),
             node("Gather", ["selected", "two"], ["column"], axis=1), node("Squeeze", ["column", "one"], ["which"]),
             node("Reshape", ["all_boxes", "flat_shape"], ["flat"]), node("Gather", ["flat", "which"], ["boxes"])]
    graph = helper.make_graph(nodes, "nms", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["K", 4]),
                               helper.make_tensor_value_info("selected", TensorProto.INT64, ["K", 3])],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def saturating_mlp():
    """Positive weights over inputs in [0, 1]: at full range the int8 pairs' u8×s8 sums pass int16, where x86
    without VNNI (AVX2's VPMADDUBSW) saturates them; 7-bit weights (reduce_range) keep them within it."""
    torch.manual_seed(0)
    layer = nn.Linear(64, 8)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.0)
    return nn.Sequential(layer)


class CausalDecoder(nn.Module):
    """GPT-style: a causal mask registered as a -inf buffer (torch.full(-inf).triu(1)), added to the scores."""

    def __init__(self, vocab=50, dim=16, length=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.qkv, self.head = nn.Linear(dim, 3 * dim), nn.Linear(dim, vocab)
        self.register_buffer("causal", torch.full((length, length), float("-inf")).triu(1))

    def forward(self, input_ids):
        h = self.embed(input_ids)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        length = input_ids.shape[1]
        scores = q @ k.transpose(1, 2) * q.shape[-1] ** -0.5 + self.causal[:length, :length]
        return self.head(h + torch.softmax(scores, dim=-1) @ v)


def causal_decoder():
    torch.manual_seed(0)
    return CausalDecoder().eval()


class Tagger(nn.Module):
    """A per-token tagger on the stock nn.TransformerEncoder: in eval mode torch's fast path runs it on nested
    tensors, which write 0 at padded positions."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(64, 16)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 1)
        self.head = nn.Linear(16, 3)

    def forward(self, input_ids, attention_mask):
        return self.head(self.encoder(self.embed(input_ids), src_key_padding_mask=attention_mask == 0))


def tagger():
    torch.manual_seed(0)
    return Tagger().eval()


class NearTieLogits(nn.Module):
    """10 class scores: class 0's spans +-300 (a 'background' logit), classes 1..9 differ by ~0.05, so int8's one
    scale over the output (~2.4) merges them: top-1 agreement ~0.16 at cosine 1.0000."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 10)
        with torch.no_grad():
            self.head.weight[1:] *= 0.05
            self.head.weight[0] *= 300
            self.head.bias.zero_()
            self.head.bias[0] = -2000

    def forward(self, x):
        return self.head(x)


def near_tie_logits():
    torch.manual_seed(0)
    return NearTieLogits().eval()


class LoudHidden(nn.Module):
    """12 class scores: class 0 a background at -2000 (read from hidden channel 0, a constant 3000), classes 1..10
    the biases 0, -10, ..., -90, class 11 at -100 plus 25 x the other hidden channels (O(1)). int8's one range for
    the hidden layer rounds those to 0: class 11 stays last, 10 clear steps down, where fp32 mostly puts it first.
    Top-1 and top-5 fail by clear margins (not ties) while cosine and SQNR, ruled by the background, pass."""

    def __init__(self):
        super().__init__()
        self.hidden, self.head = nn.Linear(16, 32), nn.Linear(32, 12)
        with torch.no_grad():
            self.hidden.weight[0], self.hidden.bias[0] = 0.0, 3000.0
            self.head.weight.zero_()
            self.head.weight[0, 0], self.head.weight[11, 1:] = -2000.0 / 3000.0, 25.0
            self.head.bias.copy_(torch.cat([torch.zeros(1), -10.0 * torch.arange(11.0)]))

    def forward(self, x):
        return self.head(torch.relu(self.hidden(x)))


def loud_hidden():
    torch.manual_seed(0)
    return LoudHidden().eval()


class TracedBranchNearTie(NearTieLogits):
    """NearTieLogits whose scores flip sign on inputs of mean > 3, a branch the tracer freezes on edgekit's random
    example inputs (mean ~0): on such data its export fails parity, and int8 still merges the near-tied classes."""

    def forward(self, x):
        scores = self.head(x)
        return -scores if x.mean() > 3 else scores


def traced_branch_near_tie():
    torch.manual_seed(0)
    return TracedBranchNearTie().eval()


class ReluEmbedding(nn.Module):
    """A 1024-d ReLU embedding read as class scores under task auto: 1023 near-equal channels (4 +- 0.2) whose
    argmax int8 flips on near-ties (top-1 ~0.91) while each keeps its spread (~29 dB centred), and one nearly dead
    channel (at most ~0.01, under one int8 step: ~0 dB centred whatever int8 does), never the top one."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 1024)
        with torch.no_grad():
            self.head.weight.normal_(0.0, 0.2 / 4)
            self.head.bias.fill_(4.0)
            self.head.weight[0] = 0.01 / 4
            self.head.bias[0] = -0.02

    def forward(self, x):
        return torch.relu(self.head(x))


def relu_embedding():
    torch.manual_seed(0)
    return ReluEmbedding().eval()


def state_mlp():
    """A robot's small state-only policy head (6 -> 48 -> 48 -> 6, 2.9 k weights): its int8 .onnx is smaller than the
    float one, its .ort, onnxruntime's mobile format, larger."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 6))


class Policy(nn.Module):
    """A robot's control policy: camera pixels (uint8), joint state and a mode id to joint torques and a value,
    as a tuple that holds a dict: `(torques, {"value": ...})`. One joint holds a load (its torque 300 +- 2): the
    few-levels rule keeps the torques head float under --task regress."""

    def __init__(self):
        super().__init__()
        self.camera = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.state = nn.Linear(6, 8)
        self.mode = nn.Embedding(4, 8)
        self.torques = nn.Linear(8, 6)
        self.value = nn.Linear(8, 1)

    def forward(self, image, state, mode):
        h = self.camera(image.float() / 255) + self.state(state) + self.mode(mode)
        return self.torques(h), {"value": self.value(h)}


def policy():
    torch.manual_seed(0)
    model = Policy()
    with torch.no_grad():
        model.torques.bias[5] += 300.0
    return model
