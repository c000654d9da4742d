"""Recipes, target profiles and input specs: typed, frozen, and strict about what they accept."""
from __future__ import annotations

import dataclasses
import difflib
import numbers
import os
import re
import stat
import sys
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from .errors import Named, UsageError, ascii_locale_hint, not_utf8
from .archive import LEDGER as ARCHIVES_LEDGER
from .published import INDEX
from .userfn import is_function_spec

# The bundled profiles: `targets/` beside the package in a checkout (editable install), or where a wheel install
# put them (`share/edgekit/targets` under the environment's prefix).
_CHECKOUT_TARGETS = Path(__file__).resolve().parent.parent / "targets"
TARGETS_DIR = _CHECKOUT_TARGETS if _CHECKOUT_TARGETS.is_dir() else Path(sys.prefix) / "share" / "edgekit" / "targets"
DEFAULT_TARGETS = ("desktop-x86",)  # when neither the recipe nor --target names one
DEFAULT_MAX_DATA_BYTES = 4 << 30  # files are hostile: what one data source may declare before it is loaded
DEFAULT_STEP_TIMEOUT = 600.0  # seconds for a step that runs a hostile model in a child process
C_NAME = "model"  # model_data.h, edgekit_model_data: the C names of an embedded model unless c_name says
C_NAME_FORM = re.compile(r"[a-z][a-z0-9_]{0,31}")  # a C identifier's part, the same in its upper-case macros
DTYPES = ("float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
# an axis so named is a batch, wherever it stands (x:TxNx40, a time-major RNN's): data splits along it
BATCH_NAMES = ("n", "b", "batch", "batch_size", "bs")
STEPS = "steps"  # sequences.py's leading axis of a streaming model's data: its samples are whole sequences
_DIM = re.compile(r"^(\d+|[A-Za-z_][A-Za-z0-9_]*)$")


def dim_name(text: str) -> str:
    """A named dimension as specs hold it: `n` and `N` are one axis, `Seq` is `seq`."""
    text = text.lower()
    return text.upper() if len(text) == 1 else text


def model_dim(text: str) -> str:
    """A model's named axis (an ONNX dim_param, kept as the graph names it) as advice writes it in a spec, so --input
    parses it back: each ASCII non-word character is `_` (`N + 1` is `N___1`), `d_` leads one not starting a name."""
    text = re.sub(r"\W", "_", text, flags=re.ASCII)
    return text if _DIM.match(text) else f"d_{text}"


def same_dim(typed: str, axis: str) -> bool:
    """Whether a typed axis name (--size NAME=, a recipe's sizes) means the model's `axis`: case and what model_dim
    writes as `_` aside (`seq_len` is the graph's `seq len`, `batch` its `Batch`), as it is matched, not renamed."""
    return model_dim(typed).lower() == model_dim(axis).lower()


def is_batch_name(dim) -> bool:
    """A dimension named as a batch is (N, B, batch, batch_size, bs)."""
    return isinstance(dim, str) and dim.lower() in BATCH_NAMES


# a forward() parameter's name (Python identifiers take any letter: PEP 3131), '.' and '-' as ONNX graphs use them;
# onnxruntime takes any string, and no input name becomes a C name or a file name (golden.npz keeps them as data)
# and ':' as tf2onnx's `input_1:0` (a spec is parsed from its right: see InputSpec.parse)
INPUT_NAME = re.compile(r"[^\W\d][\w.\-:]*")
# a last field meant as a dtype (`x:Nx3:flaot32`), not a one-axis shape of a name that has ':' in it
_DTYPE_LIKE = re.compile(r"(u?int|b?float|double|half|bool|fp)\d*|[fiu]\d+", re.IGNORECASE)


def _dtype_like(text: str) -> bool:
    """A spec's last field meant as a dtype: one, a type's word (float64, i32), or a typo of one (flaot32)."""
    return text in DTYPES or bool(_DTYPE_LIKE.fullmatch(text) or difflib.get_close_matches(text, DTYPES, 1, 0.8))


def _shape_like(text: str) -> bool:
    """A field that parses as a shape (Nx3x16x16, seq): a name holding ':' that ends in one of several dims before a
    one-word last field makes the spec ambiguous; tf2onnx's `input_1:0` ends in none, as sizes are positive."""
    return all(_DIM.match(d) and d.strip("0") for d in _fields(text))


def _fields(text: str) -> list[str]:
    """A shape field's dims as written (`x`-separated)."""
    return re.split("[xX×]", text)


@dataclass(frozen=True)
class InputSpec:
    """One model input: `name:1x3x224x224[:dtype]`; a named dim (N, seq) is dynamic; `name::dtype` a scalar."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    # the user's (--input, a recipe's or the API's inputs), not read from the model: a data shape that differs
    # then differs from what the user said, which may be what is wrong
    declared: bool = dataclasses.field(default=False, compare=False, repr=False)
    # an .onnx's axes its file leaves variable that --input sized: the model's input, but those sizes the user's
    sized_by_input: tuple[int, ...] = dataclasses.field(default=(), compare=False, repr=False)

    @classmethod
    def parse_all(cls, items) -> tuple[InputSpec, ...]:
        """The user's NAME:SHAPE[:DTYPE] strings (or specs) as declared specs; an input named twice is refused, not
        fed twice."""
        specs = tuple(dataclasses.replace(i if isinstance(i, InputSpec) else cls.parse(i), declared=True)
                      for i in items)
        names = [s.name for s in specs]
        if twice := next((n for n in names if names.count(n) > 1), None):
            raise UsageError(f"input {twice!r} is given twice")
        return specs

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        """From the right, as NAME may hold ':' (tf2onnx's `input_1:0`): the last field is the dtype if it is one
        (or looks like one), the field before it (else the last) the shape, the rest the name."""
        parts = text.split(":")
        typed = len(parts) >= 3 and _dtype_like(parts[-1])
        name, shape_text, dtype = (":".join(parts[:-2]), *parts[-2:]) if typed else (":".join(parts[:-1]),
                                                                                      parts[-1], "float32")
        if len(parts) < 2 or not name or not (shape_text or typed):
            raise UsageError(f"input spec {text!r}: expected NAME:SHAPE[:DTYPE], e.g. image:Nx3x224x224 "
                             "(a scalar: NAME::DTYPE, e.g. sr::int64)")
        last = name.rsplit(":", 1)[-1]
        if ":" in name and (_dtype_like(last) or _shape_like(last) and len(_fields(last)) > 1
                            and len(_fields(shape_text)) == 1):
            # x:Nx3x16x16:long read from the right was input 'x:Nx3x16x16' of shape ['long'] (exit 3 at its run); a
            # name's word (image:data:1x3) or number (input:1:1x3, tf2onnx's) is a name's
            what = f"extra field {shape_text!r} after dtype {last!r}" if _dtype_like(last) else \
                f"unknown dtype {shape_text!r} (one of {', '.join(DTYPES)})"
            raise UsageError(f"input spec {text!r}: {what}")
        if not INPUT_NAME.fullmatch(name):
            raise UsageError(f"input spec {text!r}: bad input name {name!r} (letters, digits, '_', '.', '-' and ':', "
                             "starting with a letter or '_')")
        dims: list[int | str] = []
        for d in _fields(shape_text) if shape_text else []:  # as typed in errors: `N,40,T`, not `n,40,t`
            if not _DIM.match(d):
                apart = f", separated by x: {re.sub('[, ]+', 'x', d)!r}" if re.search("[, ]", d.strip()) else ""
                raise UsageError(f"input spec {text!r}: bad dimension {d!r} (use a number or a name like N{apart})")
            dims.append(int(d) if d.isdigit() else dim_name(d))
        if any(d == 0 for d in dims):
            raise UsageError(f"input spec {text!r}: dimensions must be positive")
        if dtype not in DTYPES:
            raise UsageError(f"input spec {text!r}: unknown dtype {dtype!r} (one of {', '.join(DTYPES)})")
        return cls(name, tuple(dims), dtype)

    def __str__(self) -> str:
        return f"{self.name}:{'x'.join(str(d) for d in self.shape)}:{self.dtype}"

    def typed(self) -> str:
        """The spec as advice writes it for --input: the model's axis names as model_dim writes them, so it parses."""
        dims = (model_dim(d) if isinstance(d, str) else str(d) for d in self.shape)
        return f"{self.name}:{'x'.join(dims)}:{self.dtype}"

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    @property
    def batch_axis(self) -> int | None:
        """The axis a stack of samples lies along: a leading 1 or batch name (N, batch), else a later axis named
        as a batch is (BATCH_NAMES) when the first is another name (T, seq) or a size, else a leading name; None
        when none is. A time-major x:TxNx40 read along T made 100 one-step samples of N=96 (Android shipped
        [1, 96, 40]); a point cloud's pts:1xNx3 split along N made one-point samples."""
        first = self.shape[0] if self.shape else None
        if first == 1 or is_batch_name(first) or first == STEPS:
            return 0
        later = [i for i, d in enumerate(self.shape) if is_batch_name(d)]
        return later[0] if later else 0 if isinstance(first, str) else None

    def example_shape(self, sizes: dict[str, int] | None = None) -> tuple[int, ...]:
        """A concrete shape for tracing: dynamic dims get their `sizes` (the data's), else 2, so they are not
        specialised to 1."""
        return tuple((sizes or {}).get(d, 2) if isinstance(d, str) else d for d in self.shape)

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


AUTO_KNOBS = ("calibrate_method", "per_channel", "exclude_nodes")  # what --auto knows how to search
# Allowed values: each Literal is the one source the recipe/profile checker, the CLI's choices and the
# README's settings table are made from.
Mode = Literal["static", "dynamic"]
QuantFormat = Literal["QDQ", "QOperator"]
IntType = Literal["uint8", "int8", "uint16", "int16"]
ReduceRange = Literal["auto", "true", "false"]
CalibrateMethod = Literal["minmax", "entropy", "percentile"]
Precision = Literal["int8", "latency"]
TransformerScheme = Literal["dynamic", "matmul-static", "off"]
Exporter = Literal["torchscript", "dynamo"]
# what the outputs are, which picks the parity metrics: top-1/top-5 agreement (classify), nearest-neighbour
# agreement (embed), the generic ones for the rest; auto: classify when the data has labels, else other
Task = Literal["auto", "classify", "embed", "detect", "regress", "other"]
Arch = Literal["x86_64", "arm64"]
OrtOptimization = Literal["Runtime", "Fixed"]
Verdict = Literal["no", "maybe", "yes"]  # onnxruntime's usability checker's, worst first (mobile.VERDICTS)
PruneMethod = Literal["structured", "unstructured"]
Importance = Literal["l1", "l2", "taylor"]
Optimizer = Literal["adamw", "sgd"]


def _setting(default, help: str, flag: str | None = None):
    """A quantization setting: its default, what it does, and its `edgekit export` flag (None: profile and
    recipe only). The CLI options and the README table are generated from these."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class QuantSettings:
    """What onnxruntime's quantizer is asked to do; every field can come from a profile, a recipe's
    [quantize] table, a flag or an `edgekit.export()` keyword."""

    mode: Mode = _setting("static", "static (calibrated) or dynamic (ranges at run time)", "--quant-mode")
    format: QuantFormat = _setting("QDQ", "QDQ pairs around float ops, or QOperator integer ops", "--format")
    activation_type: IntType = _setting("uint8", "activation integer type", "--activation-type")
    weight_type: IntType = _setting("int8", "weight integer type", "--weight-type")
    per_channel: bool = _setting(True, "weights per output channel (else per tensor)", "--per-channel/--per-tensor")
    reduce_range: ReduceRange = _setting("auto", "7-bit weights; auto: only on x86 hosts without VNNI",
                                         "--reduce-range")
    calibrate_method: CalibrateMethod = _setting("minmax", "how activation ranges are calibrated",
                                                 "--calibrate-method")
    percentile: float = _setting(99.999, "the percentile for calibrate_method = percentile")
    samples: int = _setting(128, "calibration samples used", "--calibration-samples")
    op_types: tuple[str, ...] = _setting((), "op types to quantize (empty: all onnxruntime can)", "--op-types")
    exclude_nodes: tuple[str, ...] = _setting(
        (), "node names kept in float (on the command line `\\,` is a comma in a name)", "--exclude-nodes")
    transformer_scheme: TransformerScheme = _setting(
        "dynamic", "attention-style graphs, where full static QDQ wrecks the mask path", "--transformer-scheme")
    quantize_state: bool = _setting(False, "quantize the nodes that read or write a streaming model's state "
                                    "(by default they stay float: state error accumulates over steps)",
                                    "--quantize-state/--no-quantize-state")
    auto: bool = _setting(False, "when parity fails, search calibration, per-channel/tensor, then float fallbacks",
                          "--auto/--no-auto")
    auto_search: tuple[str, ...] = _setting(AUTO_KNOBS, "what --auto may change (the target's hardware rules)")
    max_trials: int = _setting(12, "bound on --auto trials", "--max-trials")
    time_budget: float = _setting(600.0, "bound on --auto search time, seconds", "--time-budget")
    max_excluded: int = _setting(8, "bound on nodes --auto keeps in float", "--max-excluded")
    max_latency_price: float = _setting(2.0, "--auto stops excluding past this int8 slowdown over the defaults",
                                        "--max-latency-price")
    precision: Precision = _setting("int8", "int8: every node onnxruntime can quantize; latency: also try float "
                                    "regions, each kept only where the whole model times faster", "--precision")


@dataclass(frozen=True)
class ParitySpec:
    """Thresholds: export (torch vs ONNX fp32) is tight, quantization (fp32 vs int8) per target."""

    export_cosine_min: float = 0.99999
    export_max_abs: float = 1e-3
    quant_cosine_min: float = 0.99  # the mean over validation samples
    # the worst sample's: one sample of 64 at 0.64 hid in a mean of 0.994 (an attention model's outlier feature)
    quant_cosine_worst_min: float = 0.95
    quant_sqnr_min_db: float = 15.0
    # task detect | regress: the worst output channel's centred_sqnr_db. Measured (tests/models.py, desktop-x86): the
    # int8-everything heads 0.6 (logits beside pixel boxes) and 4.8-5.3 dB (a Relu on them), the 300 +- 2.9 regressor
    # 17.5-19.8 dB over 4 data seeds; kept float by the few-levels rule 33.4-38.7 dB, a YOLO-style head's 25.6-30.2,
    # the digits example 32.1-32.2 on every profile. 22 dB: noise RMS 8% of the channel's spread, ~12 uniform levels.
    centred_sqnr_min_db: float = 22.0
    top1_agreement_min: float = 0.95
    top5_agreement_min: float = 0.99  # fp32's top class within int8's top 5 (classify, more than 5 classes)
    retrieval_at1_min: float = 0.95  # each sample's nearest neighbour the same in fp32 and int8 (embed)
    # detect, outputs whose count follows the values: int8's detections matched to fp32's (IoU >= 0.5, labels equal),
    # 2 x matched / (fp32's + int8's), over the validation samples (detections.py)
    detection_agreement_min: float = 0.9
    accuracy_drop_max: float = 1.0  # points


@dataclass(frozen=True)
class BudgetSpec:
    """Latency and size budgets; 0 means no budget."""

    latency_p50_ms_max: float = 0.0
    size_mb_max: float = 0.0


@dataclass(frozen=True)
class PackageSpec:
    """What goes into the target's folder beyond the two ONNX models."""

    ort_format: bool = False  # model.int8.ort + required_operators.config for minimal mobile builds
    ort_optimization: OrtOptimization = "Runtime"  # onnxruntime's optimization styles
    c_header: bool = False  # model_data.h/.c/.S embedding the shipped int8 model (its .ort with ort_format)
    coverage: tuple[str, ...] = ()  # nnapi | coreml: usability-checker predictions in the manifest
    min_coverage: float = 0.0  # gate: share of MACs (mobile.COVERAGE_OF) the first listed provider is predicted to take
    # gate: the least verdict onnxruntime's usability checker may give the first listed provider ("no": any)
    min_verdict: Verdict = "no"
    # Fix every dynamic input dim to the size the data has (batch 1 for per-sample data): NNAPI and other
    # compiling EPs take only nodes with fixed shapes.
    fixed_shapes: bool = False
    golden_samples: int = 8  # validation inputs and expected outputs in golden.npz
    golden_tolerance: float = 0.02  # allowed |error| per element, as a fraction of each output's peak |value|
    golden_tolerance_steps: int = 0  # > 0: a quantized output's allowed |error| in its quantization steps instead


@dataclass(frozen=True)
class DeviceSpec:
    """A real device over SSH (`[device]`, `--device`): where `check` and `export` run models and time them."""

    url: str  # ssh://[user@]host[:port][/folder]: a run folder of its own goes in /folder (/~/folder: in the home)
    identity: str | None = None  # a private key file; default: the user's agent and ssh's own defaults
    known_hosts: str | None = None  # default: ssh's own (~/.ssh/known_hosts)
    python: str = "python3"  # the device's Python, with onnxruntime and numpy
    timeout: float | None = None  # seconds per step (copy, run); None: the run's step_timeout (--step-timeout)


@dataclass(frozen=True)
class RuntimeSpec:
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int = 1
    arch: Arch = "x86_64"  # the device's CPU: decides reduce_range=auto and how int8 parity is emulated
    # onnxruntime's provider options (its names: CoreML's ModelFormat), per provider of `providers` or of
    # [package] coverage; the manifest's runtime contract and edgekit's coverage prediction take them
    provider_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    name: str
    description: str = ""
    opset: int = 17
    runtime: RuntimeSpec = RuntimeSpec()
    quantize: QuantSettings = QuantSettings()
    parity: ParitySpec = ParitySpec()
    budgets: BudgetSpec = BudgetSpec()
    package: PackageSpec = PackageSpec()
    path: str = ""


@dataclass(frozen=True)
class BenchSpec:
    warmup: int = 10
    runs: int = 100


# [prune], [share] and [distill]: each key's default, what it does and its flag on `edgekit prune`, `share` or
# `distill` (None: recipe and API only); the README's compression table is made from these (compression_table).
@dataclass(frozen=True)
class ShareSpec:
    clusters: int = _setting(16, "distinct weight values per conv/linear layer (k-means); fine-tuned by [distill] "
                             "when the recipe has it", "--clusters")
    ignore: tuple[str, ...] = _setting((), "layers, or blocks of them, left unshared", "--ignore")


@dataclass(frozen=True)
class PruneSpec:
    ratio: float = _setting(0.5, "share of channels (structured) or weights (unstructured) to remove", "--ratio")
    method: PruneMethod = _setting("structured", "structured: whole channels go; unstructured: the smallest weights "
                                   "are zeroed", "--method")
    importance: Importance = _setting("l1", "how structured pruning ranks channels (taylor: gradients on labelled "
                                      "data)", "--importance")
    ignore: tuple[str, ...] = _setting((), "layers kept whole (the output layers always are)", "--ignore")
    round_to: int | Literal["auto"] = _setting(0, "kept channel counts are multiples of this (0: any); auto: 8, 16 "
                                               "or 32, timed in int8 on this host (rounding.py)", "--round-to")
    stage_ratios: dict = field(default_factory=dict, metadata={
        "help": "{module = ratio}: the layers inside a module pruned at their own ratio", "flag": "--stage"})
    data: str = _setting("", "labelled data for importance = \"taylor\" (default: [distill]'s)", "--data")

    def taylor_data(self, distill: DistillSettings | None) -> str:
        """Where Taylor importance takes its labelled batches: `data`, else [distill]'s ("" if neither)."""
        return self.data or (distill.data if distill else "")


@dataclass(frozen=True)
class DistillSettings:
    data: str = _setting("", "training data: MODULE:FN yielding (inputs, labels), or samples in any calibration "
                         "format (without labels, the soft targets alone)", "--data")
    epochs: int = _setting(10, "training epochs; the best on a held-out 15% of the training samples is kept",
                           "--epochs")
    temperature: float = _setting(4.0, "softmax temperature of the soft targets", "--temperature")
    alpha: float = _setting(0.7, "weight of the soft-target loss; 1 - alpha goes to the labels", "--alpha")
    lr: float = _setting(3e-3, "learning rate, on a cosine schedule", "--lr")
    weight_decay: float = _setting(1e-4, "the optimizer's weight decay")
    optimizer: Optimizer = _setting("adamw", "AdamW, or SGD with momentum 0.9", "--optimizer")
    batch_size: int = _setting(64, "training batch size", "--batch-size")
    features: tuple[str, ...] = _setting((), "teacher_layer:student_layer pairs matched by MSE, through a learned "
                                         "1x1 projection", "--feature")
    feature_weight: float = _setting(1.0, "weight of the feature-matching loss")
    patience: int = _setting(0, "stop after this many epochs without improvement (0: never)", "--patience")
    seed: int = _setting(0, "seeds torch and the batches' shuffling", "--seed")


@dataclass(frozen=True)
class Recipe:
    """One `edgekit export` run: model, data, targets, overrides."""

    source: str
    inputs: tuple[InputSpec, ...] = ()
    weights: str | None = None
    exporter: Exporter = "torchscript"
    output_names: tuple[str, ...] = ()
    calibration: str | None = None
    validation: str | None = None
    task: Task = "auto"
    targets: tuple[str, ...] = DEFAULT_TARGETS
    out: str = "dist"
    seed: int = 0
    quantize: dict = field(default_factory=dict)  # overrides applied on every target's settings
    bench: BenchSpec = BenchSpec()
    prune: PruneSpec | None = None  # prune (and usually distill) before export
    share: ShareSpec | None = None  # weights shared in k clusters per layer (fine-tuned by [distill]) before export
    distill: DistillSettings | None = None
    trust_checkpoint: bool = False  # torch.load(weights_only=False): only for files the user vouches for
    archive: bool = False  # also write OUT/<target>.tar.gz
    force: bool = False  # replace OUT/<target> (or its archive) even when edgekit did not make it
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES  # what one data source may declare before it is loaded
    step_timeout: float = DEFAULT_STEP_TIMEOUT  # seconds for a step on the model: pre-processing, a run of it
    no_bench: bool = False  # skip latency: the manifest (and archive) then depend only on the inputs
    # the C names of a profile's c_header files (<c_name>_data.h, edgekit_<c_name>_data, EDGEKIT_<C_NAME>_SIZE):
    # two models in one firmware need two names
    c_name: str = C_NAME
    # aarch64[:CPU]: ARM targets' int8 parity and golden outputs from real aarch64 kernels under qemu
    emulate: str | None = None
    device: DeviceSpec | None = None  # targets of the device's kind: latency and `check` on the device
    # inputs that are configuration (a sample rate): pinned to this value in the deployed model, never fed
    # by the data and never quantized; e.g. {"sr": 16000}
    constants: dict = field(default_factory=dict)
    # a streaming model's state inputs, each with the output fed back to it at the next step, e.g.
    # {"state": "stateN"}: data then holds sequences and every model is run over them step by step
    state: dict = field(default_factory=dict)
    # a state input's first value, from an .npy file (zeros when not given), e.g. {"state": "h0.npy"}
    state_init: dict = field(default_factory=dict)
    # the sizes each named dynamic axis is validated at, e.g. {"seq": [16, 64]} (default: one the data lacks)
    sizes: dict = field(default_factory=dict)
    # uint8 camera input: {"input": "image", "mean": [...], "std": [...]} folded into the model (see pixels.py)
    image_uint8: dict = field(default_factory=dict)
    # a classifier's class names, a UTF-8 text file with one per line (line k names class k): shipped as labels.txt,
    # hashed in the manifest and named in report.md, so an app shows names, not indices
    labels: str | None = None
    # the search trial this run makes again ({"study", "storage", "trial"}: `export --from-trial`, a search's best
    # point): the manifest's `search`, so a package can be traced to the figures it was chosen by
    from_trial: dict | None = None


COMPRESSION_SECTIONS = {"prune": PruneSpec, "share": ShareSpec, "distill": DistillSettings}


def choices(cls, name: str) -> tuple[str, ...]:
    """The allowed values of a Literal-typed field."""
    return typing.get_args(typing.get_type_hints(cls)[name])


# Numeric settings outside these ranges are usage errors, not surprises three stages later.
RANGES = {"size": (1, 1_000_000), "opset": (10, 23), "threads": (1, 256), "samples": (1, 1_000_000),
          "percentile": (50.0, 100.0), "seed": (0, 2**32 - 1), "warmup": (0, 100_000), "runs": (1, 1_000_000),
          "export_cosine_min": (-1.0, 1.0), "quant_cosine_min": (-1.0, 1.0),
          "quant_cosine_worst_min": (-1.0, 1.0), "top1_agreement_min": (0.0, 1.0),
          "top5_agreement_min": (0.0, 1.0), "retrieval_at1_min": (0.0, 1.0),
          "detection_agreement_min": (0.0, 1.0),
          "export_max_abs": (0.0, 1e30), "accuracy_drop_max": (0.0, 100.0),  # finite: limits are written as JSON
          "latency_p50_ms_max": (0.0, 1e30), "size_mb_max": (0.0, 1e30),
          "min_coverage": (0.0, 1.0), "golden_samples": (1, 10_000), "golden_tolerance": (0.0, 1.0),
          "golden_tolerance_steps": (0, 255),
          "ratio": (0.0, 0.99), "round_to": (0, 1024), "clusters": (2, 256), "epochs": (1, 100_000),
          "temperature": (0.01, 100.0), "alpha": (0.0, 1.0), "lr": (0.0, 10.0), "batch_size": (1, 1 << 20),
          "patience": (0, 100_000),
          "max_trials": (1, 10_000), "time_budget": (1.0, 1e7), "max_excluded": (0, 100_000),
          "max_latency_price": (1.0, 1000.0), "max_data_bytes": (1, 1 << 50), "step_timeout": (0.001, 1e6),
          "weight_decay": (0.0, 10.0), "feature_weight": (0.0, 1e6), "quant_sqnr_min_db": (-100.0, 300.0),
          "centred_sqnr_min_db": (-100.0, 300.0),
          "timeout": (0.001, 1e7)}  # NaN is outside every range
# the onnxruntime provider each [package] coverage check predicts for
COVERAGE_PROVIDERS = {"nnapi": "NnapiExecutionProvider", "coreml": "CoreMLExecutionProvider"}
TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a folder name (fullmatch: no newline after it)
MAX_TARGET_NAME = 64  # an archive member's first part: tar's USTAR format holds 100 + 155 bytes of path
SEARCH_FILES = ("pareto.json", "report.html")  # a search's own files in OUT, beside the best point's package
SEARCH_DB = "search.db"  # a search's default storage, in OUT
SEARCH_TRIALS = "trials"  # a search's folder of trials, in OUT
# OUT's own files beside the target folders a profile's name becomes (its dot-names fail TARGET_NAME already): a
# profile named trials or search.db replaced a search's trials or its study with the package (--force, exit 0)
RESERVED_TARGET_NAMES = (INDEX, ARCHIVES_LEDGER, *SEARCH_FILES, SEARCH_DB, SEARCH_TRIALS)


def nearest(key: str, valid) -> str:
    """The name `key` may have meant, one differing only in case first: difflib rates 'hn' against 'hN' 0.5, too
    low to name it."""
    valid = list(valid)
    close = [v for v in valid if v.lower() == key.lower()] or difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def coerce(value, hint, key: str, where: str):
    """Check one TOML value against a dataclass field type; say which key is wrong."""
    origin = typing.get_origin(hint)
    if hint is bool and getattr(value, "dtype", None) == "bool" and getattr(value, "ndim", 1) == 0:
        value = bool(value)  # numpy's (`per_channel=np.bool_(False)` from a sweep), as its numbers are taken
    if hint is bool or hint in (str, str | None):
        ok = isinstance(value, bool if hint is bool else str)
    elif key == "round_to":
        if isinstance(value, str) and value == "auto":
            return value
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        value = int(value) if ok else value
    elif hint in (int, float, float | None):  # numpy's numbers too (`runs=np.int64(3)`); a float takes an int
        ok = isinstance(value, numbers.Integral if hint is int else numbers.Real) and not isinstance(value, bool)
        value = (int if hint is int else float)(value) if ok else value
    elif origin is Literal:
        if key == "reduce_range" and isinstance(value, bool):
            value = str(value).lower()
        if isinstance(value, str) and value not in typing.get_args(hint):
            raise UsageError(f"{where}: {key} = {value!r} is not one of {', '.join(typing.get_args(hint))}")
        ok = isinstance(value, str)
    elif origin is tuple:
        # a TOML array, or a tuple from Python (the API, a dataclass's own values); one name alone is one name
        value = (value,) if isinstance(value, str) else value
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
        if ok and key == "auto_search" and not set(value) <= set(AUTO_KNOBS):
            raise UsageError(f"{where}: auto_search takes {', '.join(AUTO_KNOBS)}, not "
                             f"{sorted(set(value) - set(AUTO_KNOBS))}")
    elif hint is dict and key == "sizes":
        low, high = RANGES["size"]
        ok = isinstance(value, dict)
        if ok and (odd := next((k for k, v in value.items() if not (isinstance(v, list) and v and all(
                isinstance(n, int) and not isinstance(n, bool) for n in v))), None)) is not None:
            raise UsageError(f"{where}: sizes: {odd} = {value[odd]!r}: give a list of sizes, e.g. {{{odd} = [16, 64]}}")
        if ok and (bad := [n for v in value.values() for n in v if not low <= n <= high]):
            raise UsageError(f"{where}: sizes: {bad[0]} is out of range [{low}, {high}]")
        value = {dim_name(k): v for k, v in value.items()} if ok else value
    elif hint is dict and key == "stage_ratios":
        ok = isinstance(value, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             for v in value.values())
        value = {str(k): float(v) for k, v in value.items()} if ok else value
        if ok and (bad := {k: v for k, v in value.items() if not 0 <= v < 1}):
            raise UsageError(f"{where}: stage_ratios {bad}: each ratio is in [0, 1)")
    elif hint is dict and key == "image_uint8":
        ok = isinstance(value, dict)
        if value == {}:
            raise UsageError(f"{where}: image_uint8 is empty: give {{input = NAME, mean = [...], std = [...]}}")
    elif hint is dict and key == "provider_options":  # option values as onnxruntime takes them: strings
        ok = isinstance(value, dict) and all(isinstance(v, dict) and all(
            isinstance(o, (str, int, float)) for o in v.values()) for v in value.values())
        value = {p: {k: str(o).lower() if isinstance(o, bool) else str(o) for k, o in v.items()}
                 for p, v in value.items()} if ok else value
    elif hint is dict and key in ("constants", "state", "state_init"):  # state: input names to output names
        ok = isinstance(value, dict) and all(isinstance(k, str) and (key == "constants" or isinstance(v, str))
                                             for k, v in value.items())
    else:
        ok = True
    if not ok:  # a table or list of the wrong things says what it holds: "(dict); expected a table" read as no fault
        held = ({type(v).__name__ for v in value.values()} if isinstance(value, dict) else
                {type(v).__name__ for v in value} if isinstance(value, (list, tuple)) else set())
        got = f"{'a table' if isinstance(value, dict) else 'a list'} of {', '.join(sorted(held))}" if held else \
            type(value).__name__
        raise UsageError(f"{where}: key {key!r} has the wrong type ({got}); expected "
                         f"{TABLES.get(key, _type_name(hint)) if hint is dict else _type_name(hint)}")
    if key in RANGES and not RANGES[key][0] <= value <= RANGES[key][1]:
        raise UsageError(f"{where}: {key} = {value!r} is out of range [{RANGES[key][0]}, {RANGES[key][1]}]")
    return value


# what each table setting holds
TABLES = {"stage_ratios": "a table of numbers", "state": "a table of strings", "state_init": "a table of strings",
          "constants": "a table keyed by input names", "provider_options": "a table of option tables per provider"}


def _type_name(hint) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(typing.get_args(hint))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint) if h is not type(None))  # TOML has no null
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", dict: "a table"}.get(
        hint, "a list of strings" if typing.get_origin(hint) is tuple else str(hint))


def build(cls, table: dict, where: str, required: tuple[str, ...] = ()):
    """Make dataclass `cls` from a TOML table: unknown keys, wrong types, missing keys → UsageError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)} - {"path"}
    unset = {f.name for f in fields(cls) if f.default is None}  # None given for them is their default
    kwargs = {}
    for key, value in table.items():
        if key not in names:
            raise UsageError(f"{where}: unknown key {key!r}{nearest(key, names)}")
        if value is None and key in unset:  # export(weights=None), as a caller's optional argument passes it on
            kwargs[key] = None
        elif dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise UsageError(f"{where}: [{key}] must be a table")
            kwargs[key] = build(hints[key], value, f"{where} [{key}]")
        else:
            kwargs[key] = coerce(value, hints[key], key, where)
    for key in required:
        if kwargs.get(key) in (None, ""):
            raise UsageError(f"{where}: missing required key {key!r}")
    return cls(**kwargs)


MAX_TOML_BYTES = 1 << 20  # a recipe or profile is a page of settings; /dev/zero or a FIFO is not one


def read_toml(path: Path) -> dict:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path}: not a regular file")
        if info.st_size > MAX_TOML_BYTES:
            raise UsageError(f"{path}: larger than {MAX_TOML_BYTES >> 20} MiB, too large for a recipe or profile")
        with open(path, "rb") as f:
            return tomllib.loads(f.read(MAX_TOML_BYTES + 1).decode())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid TOML ({e})") from None
    except ValueError:  # Python's int() past 4,300 digits: an internal error (exit 5), not a recipe's
        raise UsageError(f"{path}: holds a number longer than Python reads (4,300 digits), too long to be a "
                         "setting") from None
    except RecursionError:
        raise UsageError(f"{path}: nested too deeply to be a recipe or profile") from None


def list_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def bundled(name: str) -> Path | None:
    """The bundled profile a bare name (no folder, no .toml) names: a file of that name in the working folder
    does not shadow it."""
    path = TARGETS_DIR / f"{name}.toml"
    return path if TARGET_NAME.fullmatch(name) and not name.endswith(".toml") and path.is_file() else None


def profile_label(target: Target) -> str:
    """How a manifest names a target's profile: `bundled:NAME` for edgekit's own, `file:NAME.toml` for a user's file
    (its sha256 beside it says which file). Never a path: edgekit's install folder (/home/alice/.venv/...) or the
    user's leaked into the deliverable, and two installs' packages differed."""
    own, path = bundled(target.name), Path(target.path)
    return f"bundled:{target.name}" if own and path.resolve() == own.resolve() else f"file:{path.name}"


def load_target(name_or_path: str) -> Target:
    """A bundled profile by name, or the user's own profile file by path."""
    path = bundled(name_or_path) or Path(name_or_path)
    if not (path.suffix == ".toml" or path.exists() and not path.is_dir()):  # a device or a FIFO: read_toml says
        raise UsageError(f"unknown target {name_or_path!r}{nearest(name_or_path, list_targets())}; "
                         f"known: {', '.join(list_targets())} (or a path to a profile .toml)")
    target = build(Target, read_toml(path), str(path), required=("name",))
    if not TARGET_NAME.fullmatch(target.name) or len(target.name) > MAX_TARGET_NAME:
        raise UsageError(f"{path}: name {target.name!r} must be a plain folder name (letters, digits, . _ -; "
                         f"at most {MAX_TARGET_NAME})")
    if target.name.casefold() in {n.casefold() for n in RESERVED_TARGET_NAMES}:  # case-insensitive file systems too
        raise UsageError(f"{path}: name {target.name!r} is a file edgekit writes in OUT beside the target folders; "
                         "choose another")
    if unknown := set(target.package.coverage) - set(COVERAGE_PROVIDERS):
        raise UsageError(f"{path}: [package] coverage takes nnapi and/or coreml, not {sorted(unknown)}")
    import onnxruntime  # the provider names any onnxruntime build knows, available here or not

    known = onnxruntime.get_all_providers()
    if unknown := [p for p in target.runtime.providers if p not in known]:
        raise UsageError(f"{path}: [runtime] providers: {unknown[0]!r} is not an onnxruntime execution provider"
                         f"{nearest(unknown[0], known)}")
    if odd := set(target.runtime.provider_options) - {*target.runtime.providers, *(
            COVERAGE_PROVIDERS[ep] for ep in target.package.coverage)}:
        raise UsageError(f"{path}: [runtime] provider_options: {sorted(odd)[0]!r} is neither in providers nor a "
                         "coverage provider (nnapi: NnapiExecutionProvider, coreml: CoreMLExecutionProvider)")
    coreml = target.runtime.provider_options.get(COVERAGE_PROVIDERS["coreml"], {})
    if coreml.get("ModelFormat", "NeuralNetwork") not in ("NeuralNetwork", "MLProgram"):  # the CoreML EP's two
        raise UsageError(f"{path}: [runtime] provider_options: CoreMLExecutionProvider's ModelFormat is MLProgram or "
                         f"NeuralNetwork, not {coreml['ModelFormat']!r}")
    for key in ("min_coverage", "min_verdict"):
        if getattr(target.package, key) not in (0.0, "no") and not target.package.coverage:
            raise UsageError(f"{path}: [package] {key} gates the coverage of the providers listed in `coverage`; "
                             "list them (nnapi, coreml)")
    if target.quantize.per_channel and target.opset < 13:
        raise UsageError(f"{path}: per_channel quantization needs opset >= 13 (profile has {target.opset})")
    return replace(target, path=str(path))


def bundled_like(name: str) -> str | None:
    """The bundled profile's name that `name` is on a case-insensitive file system (macOS, Windows: `Desktop-x86`,
    and on Windows `desktop-x86.`, is the desktop-x86 folder), or None."""
    return next((n for n in list_targets() if n.casefold() == name.rstrip(".").casefold()), None)


def loosened(target: Target) -> list[str]:
    """The gates a user's profile loosens against the bundled profile whose name it takes (every gate could be
    made to pass under the name desktop-x86, and nothing said so), or judges otherwise (another arch):
    `field value (bundled value)`."""
    name = bundled_like(target.name)
    own = bundled(name) if name else None
    if own is None or Path(target.path).resolve() == own.resolve():
        return []
    base = load_target(name)
    limits = [(f"parity.{f.name}", getattr(target.parity, f.name), getattr(base.parity, f.name),
               "_min" in f.name) for f in fields(ParitySpec)]  # quant_sqnr_min_db is one too
    limits += [(f"package.{k}", getattr(target.package, k), getattr(base.package, k), k == "min_coverage")
               for k in ("golden_tolerance", "golden_tolerance_steps", "min_coverage")]
    weaker = [f"{name} {mine:g} ({theirs:g})" for name, mine, theirs, at_least in limits
              if (mine < theirs if at_least else mine > theirs)]
    # another kind of CPU turns the latency gate off on a host of the bundled one's (and the kernels judged); a
    # coverage check dropped is a gate less
    weaker += [f"runtime.arch {target.runtime.arch} ({base.runtime.arch})"] * (target.runtime.arch != base.runtime.arch)
    weaker += [f"package.coverage {list(target.package.coverage)} ({list(base.package.coverage)})"] * (
        not set(base.package.coverage) <= set(target.package.coverage))
    verdicts = typing.get_args(Verdict)
    weaker += [f"package.min_verdict {target.package.min_verdict} ({base.package.min_verdict})"] * (
        verdicts.index(target.package.min_verdict) < verdicts.index(base.package.min_verdict))
    return weaker


def dynamic_types(settings: QuantSettings) -> bool:
    """The types dynamic quantization makes: uint8 activations (DynamicQuantizeLinear), int8 or uint8 weights."""
    return settings.activation_type == "uint8" and settings.weight_type in ("int8", "uint8")


def apply_quant_overrides(settings: QuantSettings, overrides: dict, where: str) -> QuantSettings:
    found = build(QuantSettings, {**dataclasses.asdict(settings), **overrides}, where)
    if found.format == "QOperator" and {found.activation_type, found.weight_type} & {"uint16", "int16"}:
        raise UsageError(f"{where}: 16-bit activation or weight types need format QDQ (onnxruntime's QOperator "
                         "format has no 16-bit operators)")
    if found.mode == "dynamic" and not dynamic_types(found):
        raise UsageError(f"{where}: dynamic quantization computes uint8 activations at run time (DynamicQuantizeLinear)"
                         " against int8 or uint8 weights: activation_type uint8, weight_type int8 or uint8")
    if (found.activation_type, found.weight_type) == ("int8", "uint8"):  # onnxruntime refused it, as exit 4
        raise UsageError(f"{where}: int8 activations with uint8 weights is not a combination onnxruntime quantizes "
                         "(uint8 or int8 weights with uint8 activations, int8 weights with int8 activations)")
    return found


def target_settings(target: Target, overrides: dict, where: str = "") -> QuantSettings:
    """A target's quantization settings with the recipe's, a flag's or the API's overrides; a percentile given
    for a method that does not use it is refused, not ignored."""
    where = where or f"quantize overrides for {target.name}"
    found = apply_quant_overrides(target.quantize, overrides, where)
    if "percentile" in overrides and found.mode == "static" and found.calibrate_method != "percentile":
        raise UsageError(f"{where}: percentile {overrides['percentile']} applies only to calibrate_method "
                         f"percentile; this target calibrates with {found.calibrate_method} (set both, or drop it)")
    return found


def overrides(target: Target, given: QuantSettings, keys) -> dict:
    """Which of the profile's settings (its hardware rules among them) `keys` (a recipe's, flags', the API's)
    replaced in `given`: {key: {"profile": ..., "given": ...}}, as JSON holds them."""
    def plain(value):
        return list(value) if isinstance(value, tuple) else value
    return {k: {"profile": plain(getattr(target.quantize, k)), "given": plain(getattr(given, k))}
            for k in keys if getattr(given, k) != getattr(target.quantize, k)}


def _recipe_target(name, base: Path, where: str):
    """A recipe's target: a bundled profile's name, else a profile file beside the recipe."""
    if not isinstance(name, str) or bundled(name):
        return name
    if not name.endswith(".toml") and "/" not in name and not (base / name).exists():  # a misspelt bundled name
        raise UsageError(f"{where} [export] targets: unknown target {name!r}{nearest(name, list_targets())}; known: "
                         f"{', '.join(list_targets())} (or a profile .toml beside the recipe)")
    return str(base / name)


# the recipe sections flattened into Recipe's own fields (the README names each: a test keeps them equal)
RECIPE_KEYS = {
    "model": ("source", "weights", "inputs", "output_names", "exporter", "task", "constants", "state", "state_init",
              "sizes", "image_uint8", "labels"),
    "data": ("calibration", "validation", "max_data_bytes"),
    "export": ("targets", "out", "seed", "archive", "no_bench", "step_timeout", "emulate", "c_name"),
}


_FLAGS = {"inputs": "--input", "output_names": "--output-name", "sizes": "--size", "constants": "--constant",
          "targets": "--target", "stage_ratios": "--stage", "features": "--feature", "url": "--device",
          "python": "--device-python", "runs": "--bench-runs"}  # the settings whose flag is not --their-name


def flags(f: dataclasses.Field) -> tuple[str, ...]:
    """The command-line flags of a settings field (a quantization switch's on/off pair)."""
    return tuple((f.metadata.get("flag") or _FLAGS.get(f.name) or f"--{f.name.replace('_', '-')}").split("/"))


def _names(cls, named) -> dict[str, Named]:
    """{flag: named(field, type hint, is the flag the off half of a switch)} for the fields of `cls` flags set."""
    hints, names = typing.get_type_hints(cls), {}
    for f in fields(cls):
        if f.metadata.get("flag", "") is not None:
            for i, flag in enumerate(flags(f)):
                names[flag] = named(f, hints[f.name], bool(i))
    return names


def recipe_names(section: str, cls) -> dict[str, Named]:
    """What a recipe's table calls the settings of `cls` that flags also set (`--per-tensor`: `[quantize]
    per_channel = false`, `--input x`: `[model] inputs = ["x"]`)."""
    def named(f, hint, off):
        key = f"[{section}] {f.name}"
        if hint is bool:
            return Named(f"{key} = {str(not off).lower()}")
        many = typing.get_origin(hint) is tuple or typing.get_origin(hint) in (types.UnionType, typing.Union) and any(
            typing.get_origin(a) is tuple for a in typing.get_args(hint))
        numeric = hint in (int, float) or any(a in (int, float) for a in typing.get_args(hint))  # round_to: 8 or auto
        form = "list" if many else "num" if numeric else "str"
        return Named(key, " = ", form, typing.get_args(hint) if typing.get_origin(hint) is Literal else ())
    return _names(cls, named)


def recipe_file_names() -> dict[str, Named]:
    """recipe_names of a whole recipe file: its [model], [data], [export], [quantize], [bench] and [device]."""
    names = {k: v for section, keys in RECIPE_KEYS.items() for k, v in recipe_names(section, Recipe).items()
             if v.name.split()[1] in keys}
    for section, cls in ("quantize", QuantSettings), ("bench", BenchSpec), ("device", DeviceSpec):
        names.update(recipe_names(section, cls))
    return names


def python_names() -> dict[str, Named]:
    """The API's keywords for the CLI's flags (`--per-tensor`: `per_channel=False`, `--out x.onnx`: `out=x.onnx`)."""
    def named(f, hint, off):
        if hint is bool:
            return Named(f"{f.name}={not off}")
        return Named(f"{f.name}=", "", "raw", typing.get_args(hint) if typing.get_origin(hint) is Literal else ())
    names = {}
    for cls in (DeviceSpec, DistillSettings, ShareSpec, PruneSpec, BenchSpec, QuantSettings, Recipe):  # last wins
        names.update(_names(cls, named))
    return names | {"--probe": Named("probe=True"), "--teacher": Named("teacher"), "--student": Named("student")}


def expand_home(value):
    """The one rule for a path a user gives (a CLI flag, an API argument, a recipe key): `~` and `~user` the home
    folder as a shell reads them; a name no user has (`~old`, a folder beside the recipe) as it is (Path.expanduser
    raised RuntimeError there, an internal error for a recipe that had worked); an os.PathLike as its string;
    anything else as it is, for build() to judge."""
    value = os.fspath(value) if isinstance(value, os.PathLike) else value
    return os.path.expanduser(value) if isinstance(value, str) and value.startswith("~") else value


def load_recipe(path: Path) -> Recipe:
    """Read an `edgekit.toml`; relative paths in it are relative to the recipe's folder."""
    table = read_toml(path)
    where = str(path)
    sections = {"model", "data", "export", "quantize", "bench", "prune", "share", "distill", "device"}
    for key, body in table.items():
        if key not in sections:
            raise UsageError(f"{where}: unknown section or key {key!r}{nearest(key, sections)}")
        if not isinstance(body, dict):
            raise UsageError(f"{where}: [{key}] must be a table")
    flat: dict = {}
    for section, keys in RECIPE_KEYS.items():
        for key, value in table.get(section, {}).items():
            if key not in keys:
                raise UsageError(f"{where} [{section}]: unknown key {key!r}{nearest(key, keys)}")
            flat[key] = value
    if "source" not in flat:
        raise UsageError(f"{where} [model]: missing required key 'source'")
    base = path.resolve().parent
    for key in ("weights", "calibration", "validation", "out", "labels"):
        value = flat.get(key)
        if value == "":  # joined to the recipe's folder, it read every .npz there as data (or wrote OUT there)
            raise UsageError(f"{where}: {key} = \"\" names nothing; leave the key out instead")
        if isinstance(value, str) and value != "random" and not (key in ("calibration", "validation")
                                                                 and is_function_spec(value) and ".py:" not in value):
            flat[key] = str(base / expand_home(value))  # `~` the user's home, as for [device]'s files
    source = flat.get("source")
    if isinstance(source, str) and (".py:" in source or source.endswith((".onnx", ".pt", ".ts", ".pt2"))):
        flat["source"] = str(base / expand_home(source))
    if isinstance(flat.get("targets"), str):  # one name alone, as a list: it was looked up in the working folder
        flat["targets"] = [flat["targets"]]
    if isinstance(flat.get("targets"), list):  # a bundled name, else a profile file beside the recipe
        flat["targets"] = [_recipe_target(t, base, where) for t in flat["targets"]]
    if isinstance(flat.get("state_init"), dict):
        flat["state_init"] = {k: str(base / expand_home(v)) if isinstance(v, str) and v else v
                              for k, v in flat["state_init"].items()}
    inputs = flat.pop("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise UsageError(f"{where} [model]: 'inputs' must be a list of NAME:SHAPE[:DTYPE] strings")
    recipe = build(Recipe, flat, where)
    quantize = table.get("quantize", {})
    apply_quant_overrides(QuantSettings(), quantize, f"{where} [quantize]")  # validate now
    bench = build(BenchSpec, table.get("bench", {}), f"{where} [bench]")
    prune = build(PruneSpec, table["prune"], f"{where} [prune]") if "prune" in table else None
    share = build(ShareSpec, table["share"], f"{where} [share]") if "share" in table else None
    distill = (build(DistillSettings, table["distill"], f"{where} [distill]", required=REQUIRED["distill"])
               if "distill" in table else None)
    device = build(DeviceSpec, table["device"], f"{where} [device]", required=("url",)) if "device" in table else None

    def local(data: str) -> str:  # a file (or FILE.py:FN) relative to the recipe's folder, `~` as for the others
        return str(base / expand_home(data)) if data and (not is_function_spec(data) or ".py:" in data) else data

    distill = replace(distill, data=local(distill.data)) if distill else None
    prune = replace(prune, data=local(prune.data)) if prune else None
    if device:  # its key and known_hosts are files here, beside the recipe (`~` is the user's home)
        device = replace(device, **{k: str(base / expand_home(v)) for k in ("identity", "known_hosts")
                                    if (v := getattr(device, k))})
    return replace(recipe, inputs=InputSpec.parse_all(inputs), quantize=quantize, bench=bench,
                   prune=prune, share=share, distill=distill, device=device)


REQUIRED = {"distill": ("data",)}  # the compression sections' keys a recipe must give


def compression_table() -> str:
    """The README's table of [prune], [share] and [distill] keys, made from their dataclasses (a test keeps them
    equal, and each flag named an option of its command)."""
    rows = ["| key | flag (`edgekit prune`, `share`, `distill`) | values | default | what |", "|---|---|---|---|---|"]
    for section, cls in COMPRESSION_SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            hint, flag = hints[f.name], f.metadata["flag"]
            values = (" \\| ".join(typing.get_args(hint)) if typing.get_origin(hint) is Literal
                      else TABLES.get(f.name, _type_name(hint)))
            default = ("(required)" if f.name in REQUIRED.get(section, ()) else
                       "(none)" if f.default in ("", ()) or f.default is dataclasses.MISSING else f.default)
            rows.append(f"| `[{section}] {f.name}` | {'`' + flag + '`' if flag else '-'} | {values} | {default} | "
                        f"{f.metadata['help']} |")
    return "\n".join(rows)


def settings_table() -> str:
    """The README's quantization settings table, made from QuantSettings (a test keeps them equal)."""
    rows = ["| setting (profile, `[quantize]`, `edgekit.export()`) | flag | values | default | what |",
            "|---|---|---|---|---|"]
    hints = typing.get_type_hints(QuantSettings)
    for f in fields(QuantSettings):
        hint, flag = hints[f.name], f.metadata["flag"]
        values = " \\| ".join(typing.get_args(hint)) if typing.get_origin(hint) is Literal else _type_name(hint)
        default = (", ".join(f.default) or "(none)" if isinstance(f.default, tuple)
                   else str(f.default).lower() if isinstance(f.default, bool) else f.default)
        rows.append(f"| `{f.name}` | {'`' + flag + '`' if flag else '-'} | {values} | {default} | "
                    f"{f.metadata['help']} |")
    return "\n".join(rows)


def writable_name(out: str) -> str:
    """`out`, refused when torch, onnx and onnxruntime cannot take it (errors.not_utf8): failing deep inside the
    export, it was blamed on the model's ops. An empty one (an unset $OUT) wrote the packages into the working
    folder."""
    if not out.strip():
        raise UsageError(f"--out {out!r}: an empty path (an unset variable?): give the output folder")
    if shown := not_utf8(out):
        raise UsageError(f"--out {shown!r}: not a UTF-8 path{ascii_locale_hint(out)}")
    return out


def load_targets(names: tuple[str, ...]) -> list[Target]:
    """Profiles for one run; each becomes OUT/<name>, so names must be unique."""
    if not names:
        raise UsageError("no target: name at least one (e.g. desktop-x86)")
    if odd := [n for n in names if not isinstance(n, str)]:
        raise UsageError(f"targets: {odd[0]!r} is not a profile name or .toml path")
    targets = [load_target(n) for n in names]
    for i, t in enumerate(targets):
        if any(t.name == earlier.name for earlier in targets[:i]):
            raise UsageError(f"target {t.name!r} is given twice (profile names become output folders)")
    return targets
