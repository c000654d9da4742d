"""One target's verdict: its gates from the measured figures and profile, and the warnings that explain them."""
from __future__ import annotations

from collections.abc import Collection

from . import bench, calib, detections, host, mobile, parity
from .config import Target
from .emulated_kernels import EmulatedKernels
from .parity import Accuracy, Gate, StageParity
from .reports import LatencyReport
from .runtime import EXACT_REFUSED


def gates(target: Target, export: StageParity | None, quant: StageParity, accuracy: Accuracy | None,
          latency: LatencyReport | None, coverage: dict | None, int8_bytes: int, task: str,
          quantized: bool = True) -> list[Gate]:
    p, budgets = target.parity, target.budgets
    found = parity.export_gates(export, p)
    found += parity.quantization_gates(quant.outputs, accuracy.drop if accuracy else None, p, task, quantized,
                                       quant.samples)
    if budgets.latency_p50_ms_max:
        # the budget is a device's: timed on another kind of CPU (an arm64 target's on x86) it is not judged here
        elsewhere = latency is not None and not latency.on_device
        found.append(parity.gate("latency_p50_ms", None if elsewhere else latency and latency.int8.p50_ms, "<=",
                                 budgets.latency_p50_ms_max, f"latency measured on this {host.arch()} host, not an "
                                 f"{target.runtime.arch} device: judged there (--device ssh://...)" if elsewhere
                                 else "latency not measured (--no-bench)"))
    if budgets.size_mb_max:
        found.append(parity.gate("size_mb", int8_bytes / 1e6, "<=", budgets.size_mb_max))
    if target.package.min_coverage and target.package.coverage:
        first = target.package.coverage[0]
        found.append(parity.gate(f"{first}_coverage", coverage[first]["coverage"], ">=", target.package.min_coverage))
    if target.package.min_verdict != "no" and target.package.coverage:
        found.append(verdict_gate(target.package.coverage[0], coverage, target.package.min_verdict))
    return found


def emulated_gates(target: Target, figures: EmulatedKernels | None, task: str, quantized: bool) -> list[Gate]:
    """The target's quantization gates held on an emulated CPU's int8 figures too (export --emulate x86_64), named
    apart (parity.EMULATED): the target passes only where both kernel sets pass."""
    return [] if figures is None else figures.gates(target.parity, task, quantized)


def distinct_gates(counted: tuple[int, int] | None) -> list[Gate]:
    """Fails (written only then) where the validation data is (nearly) one sample over and over (calib.repeats:
    (distinct, samples)): all-zero calibration data split into validation exited 0 while its own warning said
    "PARITY AND ACCURACY FIGURES MEAN NOTHING". Its limit: the fewest distinct samples of that many not so counted."""
    if counted is None:
        return []
    distinct, n = counted
    return [parity.gate(parity.DISTINCT_GATE, distinct, ">=", calib.fewest_distinct(n))]


def verdict_gate(ep: str, coverage: dict, least: str) -> Gate:
    """onnxruntime's usability checker's own verdict on the provider's partitions, at least `least`: a model split
    into 4 NNAPI partitions between CPU ops (CumSum, Erf) had 90% of its MACs on NNAPI and passed the coverage gate,
    while the checker said NNAPI "is not recommended ... worse performance than just using the CPU EP"."""
    said = coverage[ep]["verdict"]
    return parity.gate(f"{ep}_verdict", mobile.VERDICTS.index(said) if said in mobile.VERDICTS else None, ">=",
                       mobile.VERDICTS.index(least), f"no verdict: {said}")


# What an app runs instead of a provider the checker does not recommend.
INSTEAD = {"nnapi": "XNNPACK or the CPU provider (leave NnapiExecutionProvider out of the session's providers)",
           "coreml": "the CPU provider (as the int8 model runs)"}


def coverage_warnings(coverage: dict | None) -> list[str]:
    """Each provider onnxruntime's usability checker does not recommend (verdict no), with the ops that split it and
    the ways out: each switch between it and the CPU copies tensors, and split partitions ran slower than the CPU
    provider alone (onnxruntime#9054). The report had the verdict in the manifest only, and no word."""
    said = []
    for ep, c in (coverage or {}).items():
        if c.get("verdict") != "no":
            continue
        ops, blocked = ", ".join(c["cpu_fallback_ops"]), c["nodes_blocked_by_dynamic_shapes"]
        ways = ([f"replace or remove {ops} (the ops it leaves to the CPU)"] if ops else []) + (
            [f"fix the input shapes ({blocked} node(s) need them)"] if blocked else []) + [
            f"run it on {INSTEAD.get(ep, 'the CPU provider')}"]
        said.append(f"onnxruntime's usability checker does not recommend {c['provider']} for "
                    f"{c.get('model', 'model.int8.onnx')} (verdict no): {c['supported_nodes']}/{c['nodes']} nodes, "
                    f"{c['coverage']:.0%} of the MACs, in {c['partitions']} partition(s), and each switch to the CPU "
                    "and back copies tensors (onnxruntime#9054: split partitions ran slower than the CPU provider "
                    f"alone): {'; or '.join(ways)}")
    return said


def length_warning(stage: str, o, samples: int, also: tuple[str, ...] = ()) -> str:
    """One line on an output whose length (a threshold's, NMS's count) differs from the reference's on some samples:
    which samples and how, for an engineer to weigh the detections int8 (or model.onnx) keeps. `also`: the other
    outputs of its detections (boxes, scores, labels), said once with it, not a line each."""
    who, agree = "int8" if stage == "quantization" else "model.onnx", samples - o.length_mismatches
    matched = "" if o.detection_agreement is None else (
        f"; its detections matched (IoU >= {detections.IOU_MATCH:g}, labels equal): {o.detection_agreement:.4g} of "
        f"them agree (2 x matched / {o.detection_rows} rows)" + (f", held by {parity.DETECTION_GATE}"
                                                                 if stage == "quantization" else ""))
    named = f"output {o.output!r}" if not also else f"outputs {', '.join(map(repr, (o.output, *also)))}"
    return (f"{stage} parity: {who} keeps a different number of rows of {named} on {o.length_mismatches} "
            f"of {samples} samples ({o.length_example}): its length follows the values (a threshold, NMS), and a score "
            "moved across the cut; " + _measured_on(o, samples, agree) + matched)


def _measured_on(o, samples: int, agree: int) -> str:
    """What an output's figures are of, where its length differed: a detector's matched rows, else the samples
    keeping the reference's length."""
    if o.detection_agreement is not None:
        paired = samples - (o.unmatched_samples or 0)
        return (f"its figures are of the matched detections (on the {paired} samples with any)" if paired
                else "no detection matched to measure")
    return f"its figures are of the samples that agree ({agree})" if agree else "no sample agrees to measure"


def length_warnings(stage: str, outputs, samples: int) -> list[str]:
    """length_warning() for each output whose length differed, one line for the outputs of one detector's rows."""
    said, groups = [], {}
    for o in outputs:
        if o.length_mismatches and o.detection_agreement is not None:
            groups.setdefault((o.detection_agreement, o.detection_rows, o.length_mismatches), []).append(o)
        elif o.length_mismatches:
            said.append(length_warning(stage, o, samples))
    return said + [length_warning(stage, group[0], samples, tuple(g.output for g in group[1:]))
                   for group in groups.values()]


def size_gates(target: Target, checks) -> list[Gate]:
    """The model runs at each other size of its dynamic axes, with export and int8 parity held there."""
    found = []
    for c in checks:
        at = c.other.label()
        if c.error:
            found.append(Gate(f"runs_at_{at}", None, "", None, False))
            continue
        if c.export:
            found.append(parity.held_on(f"export_cosine_at_{at}", c.export.outputs, "cosine_min", target.parity,
                                        _unmeasured_at(c.export.outputs, at)))
            if ids := [o for o in c.export.outputs if o.exact_agreement is not None]:  # held exactly, as at the
                found.append(parity.held_on(f"export_integer_max_abs_at_{at}", ids, "max_abs", target.parity,
                                            fn=max))  # data's size by export_scaled_max_abs
        if c.quantization:
            found.append(parity.held_on(f"quant_cosine_at_{at}", c.quantization.outputs, "cosine", target.parity,
                                        _unmeasured_at(c.quantization.outputs, at)))
            if c.quantization.worst("exact_agreement") is not None:
                found.append(parity.held_on(f"integer_output_agreement_at_{at}", c.quantization.outputs,
                                            "exact_agreement", target.parity))
    return found


def _unmeasured_at(outputs, at: str) -> str | None:
    """Why a cosine at another size has no value. Its samples are made by edgekit (cut from the validation data):
    a reference ~0 on them says nothing of the model, so the gate is skipped with the cause, not failed as None."""
    if why := parity.exact_only(outputs):
        return why
    if _silent(outputs):
        return (f"reference output ~0 at {at} on the samples edgekit made from the validation data: cosine "
                "says nothing there")
    return None


def _silent(outputs) -> bool:
    """No float output with a signal to take a cosine of (each ~0, or an integer one compared exactly)."""
    return all(o.near_zero or o.exact_agreement is not None for o in outputs)


def size_warnings(checks) -> list[str]:
    """Each other size whose cosine gates were skipped for a reference ~0 (_unmeasured_at), said with the cure."""
    said = []
    for c in checks:
        stage = c.export or c.quantization
        if stage and stage.outputs and not parity.exact_only(stage.outputs) and _silent(stage.outputs):
            said.append(f"at {c.other.label()} (samples cut or repeated from the validation data) every reference "
                        "output is ~0: the cosine there was not judged; --size "
                        f"{c.other.dim}=K names a size whose samples keep their content")
    return said


FEW_SAMPLES = parity.FEW_SAMPLES  # calibration or validation data smaller than this is warned of


def random_data(calibrated: bool, validated: bool) -> str:
    return (f"{' AND '.join(w for w, r in (('CALIBRATED', calibrated), ('VALIDATED', validated)) if r)} ON RANDOM "
            f"DATA: {'PARITY AND ACCURACY FIGURES' if validated else 'THE INT8 RANGES'} DO NOT REFLECT REAL INPUTS")


def warnings(cal, val, parities: dict, latency, int8, providers, threads, settings=None, task="classify",
             one_thread: LatencyReport | None = None, float_weights: str = "") -> list[str]:
    """`settings`: the int8 model's QuantSettings, which say why int8 is slower where its graph cannot.
    `one_thread`: the 1-thread latency timed beside the profile's threads, judged for noise as well.
    `float_weights`: the nodes left float that hold most of the weights (quantization.float_weights), the cause."""
    said: list[str] = [random_data(cal.random, val.random)] if cal.random or val.random else []
    for stage, block in parities.items():
        said += length_warnings(stage, block.outputs, block.samples) if block else []
        for o in block.outputs if block else ():
            if o.near_zero:
                said.append(f"{stage} parity: reference output {o.output!r} is ~0 (max |value| "
                            f"{o.reference_peak:.3g} < {parity.NEAR_ZERO:g}) on the validation data: cosine and "
                            "SQNR say nothing about a model that emits no signal; check the model and its inputs")
    # a feature map's NCHW output is taken for a class map too: why its top-1 is per pixel, said once
    said += [f"output {name!r} is read as a class map (N x C x H x W, class axis 1): top-1 and accuracy are judged "
             "pixel by pixel (a feature map is no class scores: give --task other)"
             for name in dict.fromkeys(o.output for block in parities.values() if block for o in block.outputs
                                       if o.iou_agreement is not None)]
    dynamic = settings is not None and settings.mode == "dynamic"  # calibrates nothing
    for role, data, what in (("calibration", None if dynamic else cal, "int8 ranges"),
                             ("validation", val, "parity figures and gates")):
        # a 2-sample file passed every gate without a word
        if data is not None and not data.random and len(data) < FEW_SAMPLES:
            said.append(f"{role} data has {len(data)} sample(s): {what} from so few do not stand for real inputs "
                        f"(give at least {FEW_SAMPLES})")
    if val.labels_aside and parity.labels_are_classes(task):  # said when read and in the data label; CI reads these
        said.append("validation data's labels are no class ids (not whole numbers, or a grid per sample): set aside, "
                    "so accuracy is neither measured nor gated")
    place = "the device" if latency and "device" in latency.int8.host else "this host"
    said += noise_warnings([lat for lat in (latency, one_thread) if lat], place)
    if latency and latency.speedup_p50 < 1.0:
        fusion = bench.unfused_qdq(str(int8), providers, threads)
        s8s8_ops = settings is not None and settings.format == "QOperator" and settings.activation_type == "int8"
        timed = latency.int8.host  # this host's label, or a device's runner's: x86 kernels only where it is x86
        on_x86 = (timed.get("arch") or host.arch_of(str(timed.get("machine", "")))) == "x86_64"
        cause = float_weights or (
                 "dynamic quantization: each integer op's input is quantized at run time (DynamicQuantizeLinear) and "
                 "its output converted back (Cast, Mul), which can cost more than the int8 arithmetic saves"
                 if dynamic and fusion["integer_nodes"] else
                 "int8 activations (S8S8) in the QOperator format run onnxruntime's slow x86 kernels: use the QDQ "
                 "format or uint8 activations (TARGETS.md)" if s8s8_ops and on_x86 else
                 "no compute node runs in int8 (each kept in float, or left unquantized): this is model.onnx with "
                 "Q/DQ around other ops; ship model.onnx" if not fusion["integer_nodes"] else
                 f"{fusion['unfused_compute_nodes']} compute node(s) stayed float behind DequantizeLinear "
                 f"(unfused QDQ groups, e.g. {', '.join(fusion['unfused_examples'])})"
                 if fusion["unfused_compute_nodes"] else
                 f"{_types(settings)} have no fast x86 kernel in onnxruntime (uint8 activations with int8 weights "
                 "do: README, quantize_speed.py); a profile for an ARM device picks its types for that device"
                 if settings is not None and not dynamic and _types(settings) != "U8S8" and on_x86
                 else "all quantized groups fused; per-call overhead or float ops around them dominate this model")
        if place != "this host":
            cause += " (as this host's onnxruntime optimises the graph)"
        said.append(f"int8 is slower than fp32 on {place} ({latency.speedup_p50:.2f}x): {cause}")
    return said


FEW_RUNS = 10  # below this p90 is one of the slowest couple of runs: p90/p50 cannot tell noise from the model


def noise_warnings(latencies: list[LatencyReport], place: str) -> list[str]:
    """Each latency measured (the profile's threads, and 1 thread beside) whose spread says the host was busy, named
    by its threads; or, with too few runs to have a spread, that."""
    if latencies and (runs := min(lat.int8.runs for lat in latencies)) < FEW_RUNS:
        return [f"latency from {runs} timed run(s): too few for p90/p50 to show whether {place} was noisy; give "
                f"--bench-runs {FEW_RUNS} or more before trusting the speed figures"]
    return [f"latency spread at {lat.int8.threads} thread(s) p90/p50 fp32 {lat.fp32.p90_over_p50:.2f}, int8 "
            f"{lat.int8.p90_over_p50:.2f} (> {bench.NOISY_SPREAD}): {place} was noisy during the run; re-run or "
            "raise --bench-runs before trusting the speed figures" for lat in latencies
            if max(lat.fp32.p90_over_p50, lat.int8.p90_over_p50) > bench.NOISY_SPREAD]


def _types(settings) -> str:
    """Activation and weight types as onnxruntime's kernels are named: U8S8, U8U8, S8S8, U16S8, ..."""
    return "".join(("S" if t.startswith("int") else "U") + t.lstrip("uint") for t in (settings.activation_type,
                                                                                       settings.weight_type))


HARDWARE_RULES = ("mode", "format", "activation_type", "weight_type", "per_channel")  # what an accelerator takes


def override_warnings(target: Target, overridden: dict) -> list[str]:
    """The profile's hardware rules a recipe, flag or the API replaced, on a target whose accelerator coverage is
    gated: int8 activations on android-arm64 send every node to the CPU, and the coverage gate (a prediction from op
    types) passed them at 100%."""
    # what the profile's auto_search lets --auto (and a search's trials) turn is no rule of its hardware
    allowed = target.quantize.auto_search
    if not (target.package.coverage and (rules := [k for k in HARDWARE_RULES if k in overridden
                                                   and k not in allowed])):
        return []
    given = ", ".join(f"{k} {overridden[k]['given']} (the profile's: {overridden[k]['profile']})" for k in rules)
    return [f"{given} override {target.name}'s rules for {', '.join(target.package.coverage)}: its coverage figure, "
            "predicted from op types, does not judge them; see the profile's comments before shipping"]


def provider_warnings(target: Target, used: list[str]) -> list[str]:
    """A profile's providers this onnxruntime lacks, for a target of this host's kind (its figures stand for the
    target's own): the run fell back to the others. ARM targets on an x86 host are stand-ins anyway, said apart."""
    missing = [p for p in target.runtime.providers if p not in used]
    if not missing or target.runtime.arch != host.arch():
        return []
    return [f"{', '.join(missing)} (the profile's) is not in this host's onnxruntime: parity and latency were "
            f"measured with {', '.join(used)}"]


def held_out(tuning: dict, gates: list[Gate]) -> dict:
    """Whether --auto's chosen trial passes on the validation samples held out of its pick: its `passed` and its
    figures are of the half it was chosen on, where it can pass while the reported gates (of the other half) fail.
    Nothing when the pick and the verdict share their samples (tuning.validation_split.shared)."""
    split = tuning.get("validation_split")
    if not split or split.get("shared"):
        return {}
    failed = [g.name for g in gates if not g.passed and parity.trial_gate(g.name.removeprefix(parity.EMULATED))]
    return {"held_out_passed": not failed, "held_out_failed_gates": failed}


def over_fitted(tuning: dict | None) -> str | None:
    """Advice when the trial --auto chose passed on the samples it was chosen on and fails on the held-out ones."""
    if not (tuning and tuning.get("passed") and tuning.get("held_out_passed") is False):
        return None
    split = tuning["validation_split"]
    return (f"--auto's trial {tuning['chosen']} passes on {split['chosen_on']}, which it was chosen on, but fails "
            f"{', '.join(tuning['held_out_failed_gates'])} on {split['judged_on']}: the pick over-fits the half it "
            "saw, or inputs like the failing ones are in one half only; give more validation data, with "
            "enough of every kind of input to fall in both halves")


def gate_advice(gates: list[Gate], settings, tuning: dict | None, short: tuple[int, int] | None = None,
                ranges: str | None = None, float_outputs: Collection[str] = (), task: str = "") -> list[str]:
    """`short`: (calibration's, validation's) longest sequence of a streaming model calibrated on clearly shorter
    ones: the state then outgrew the int8 ranges, which no --auto setting fixes (it kept the head float). That explains
    the failed quality gates, not a reference with no signal; the other advice still stands beside it. `ranges`:
    calib.range_mismatch's, first: no quantization setting fixes ranges calibrated on other inputs. `float_outputs`
    and `task` (the judged one): centred_advice's."""
    failed = [g.name for g in gates if not g.passed and g.name.startswith(("quant_", "top1", "accuracy",
                                                                            "integer_output_agreement"))]
    no_signal = any(g.name.endswith("reference_signal") and not g.passed for g in gates)  # no setting helps that
    explained = [name for name in failed if not name.endswith("reference_signal")] if short else []
    advice = [ranges] * bool(ranges) + ([
        f"quantization gates failed ({', '.join(explained)}) with calibration sequences shorter than validation's "
        f"({short[0]} vs {short[1]} steps): calibrate on sequences as long before --auto"] if explained else [])
    advice += centred_advice(gates, float_outputs, task) + [said for said in [over_fitted(tuning)] if said]
    if tuning and tuning.get("advice"):
        return [*advice, tuning["advice"]]
    if failed and tuning and (why := tuning.get("stopped_short") or tuning.get("exclusions_skipped")):
        return [*advice, why]  # the search stopped short without saying why
    # torch vs the fp32 ONNX: no quantization setting --auto searches changes that. Not where a reference is ~0: a
    # silent model's export fails its cosine too, and its export is not what is wrong
    exported = [g.name for g in gates if not g.passed and g.name.startswith("export_")]
    if failed and exported and not no_signal:
        advice.append(f"quantization gates failed ({', '.join(failed)}) and so did export parity "
                      f"({', '.join(exported)}): model.onnx (fp32) does not compute what the source model does, "
                      "which --auto's quantization search cannot fix; fix the export first")
    elif failed and not settings.auto and settings.mode == "static" and not no_signal and not explained:
        advice.append(f"quantization gates failed ({', '.join(failed)}): re-run with --auto to search "
                      f"{', '.join(settings.auto_search)} within this target's rules")
    return advice


def preprocessing_advice(gates: list[Gate], given_opset: int) -> list[str]:
    """An .onnx source's failed export gates: no exporter ran, so the opset conversion or onnxruntime's pre-processing
    changed what the given model computes (an opset 10 Resize converted to 11 lost its coordinates: cosine 0.69). A
    gate without a value (a reference ~0: export_reference_signal says so) measured no change."""
    failed = [g for g in gates if not g.passed and not g.skipped and g.value is not None
              and g.name in ("export_cosine", "export_scaled_max_abs")]
    if not failed:
        return []
    converted = f" (after edgekit's conversion of opset {given_opset} to 11)" if 0 < given_opset < 11 else ""
    return ["the pre-processed model (model.onnx) differs from the given one ("
            + "; ".join(f"{g.name} {g.value:.6g}, needs {g.op} {g.limit:g}" for g in failed)
            + f"): onnxruntime's quantization pre-processing{converted} changed what it computes, so the package "
            "would not compute what the given file does; re-export the model at opset 13 or later"]


def unlabelled_top1_warning(gates: list[Gate], quant: StageParity, task: str, limits) -> list[str]:
    """Task auto on unlabelled data (parity.unlabelled_top1_gate): an output reading as class scores whose top class
    int8 moved on more rows than a classifier's gate allows, said with how it was judged and how to say what it is.
    The only word before was the few-levels warning, pointing at detect and regress. `limits`: the ParitySpec."""
    gate = next((g for g in gates if g.name == "top1_agreement"), None)
    o = next((o for o in quant.outputs if o.scored and o.top1_agreement is not None), None)
    if task != "auto" or gate is None or gate.limit is None or o is None or o.top1_agreement >= gate.limit:
        return []
    centred = ("" if o.centred_sqnr_db is None else f", its worst channel's centred SQNR {o.centred_sqnr_db:.1f} dB"
               if o.top_class_sqnr_db is None else f", its top-class channels' worst centred SQNR "
               f"{o.top_class_sqnr_db:.1f} dB")
    how = ("top1_agreement fails: below the bar beyond chance, with a top-class channel that lost its spread"
           if not gate.passed
           else f"top1_agreement is not failed ({parity.no_loss_shown(o, limits, quant.samples)})")
    return [f"output {o.output!r} reads as class scores and int8 keeps fp32's top class on {o.top1_agreement:.3f} of "
            f"its {o.top1_rows} rows (a classifier needs {gate.limit:g}){centred}: the validation data has no labels, "
            f"so task auto judged it as other and {how}; if it is a classifier, --task classify holds it to top-1 "
            "agreement with no labels needed; if not, --task embed, regress or other says what it is"]


def centred_advice(gates: list[Gate], float_outputs: Collection[str] = (), task: str = "") -> list[str]:
    """What to do when an output channel lost its own spread to int8 (the few-levels rule did not keep it float).
    `float_outputs`: those the int8 model computes in float at the end: keeping them float is done already (a regress
    head kept float by the rule was told to keep it float), so what is left is said instead. `task`: a regress
    model's outputs are values the user said are no class scores, so --task classify is not offered there."""
    classify = "" if task == "regress" else "; class scores are judged by top-1 with --task classify"
    return [f"{g.name} failed ({g.value:.1f} dB < {g.limit:g}) on output {g.output!r}, whose last node is already "
            "float in model.int8.onnx (the manifest's quantization decisions): its channels lost their spread in the "
            "int8 layers before it, or to calibration ranges that miss the validation data's values; calibrate on "
            "data spanning the validation data, or keep the layers before it float with --exclude-nodes NAME "
            "(`edgekit inspect --nodes`) or search them with --auto"
            if g.output in float_outputs else
            f"{g.name} failed ({g.value:.1f} dB < {g.limit:g}): an output channel kept few int8 levels of its "
            "output's range (a score beside pixel boxes, 300 +- 3), or calibration ranges that miss the validation "
            "data's values (report.md's worst channel centred SQNR names the output). The few-levels rule keeps the "
            "node producing an output float when only Reshape, Transpose or Relu stand between them and nothing else "
            "reads its result (the manifest's quantization decisions say 'kept float'): return that node's result as "
            "the output, or keep it float with --exclude-nodes NAME (`edgekit inspect --nodes`); calibrate on data "
            f"spanning the validation data{classify}"
            for g in gates if g.name == parity.CENTRED_GATE and not g.passed and g.value is not None]


def kernel_warnings(packaged: dict) -> list[str]:
    said: list[str] = []
    for model, golden in packaged["golden"]["models"].items():
        if EXACT_REFUSED in golden["kernels"]:
            said.append(f"{model}: golden outputs computed with {golden['kernels']}")
        on_x86 = golden.get("x86_default_kernels")
        if on_x86 and not on_x86["within_tolerance"]:
            worst = max(on_x86["max_abs_error"], key=on_x86["max_abs_error"].get)
            said.append(f"on an x86 host without VNNI ({on_x86['isa']}) onnxruntime's default kernels give this "
                        f"ARM package's {model} output {worst!r} an error up to "
                        f"{on_x86['max_abs_error'][worst]:.3g} (tolerance {golden['atol'][worst]:.3g}; u8s8 "
                        "saturation): run it there with session option session.x64quantprecision=1, as "
                        "`edgekit check` does")
    return said
