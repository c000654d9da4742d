"""The runtime contract of a package: what code calling the shipped models on a device must set up (providers in
order with their options, session settings, onnxruntime release, OS minimum, what each input takes), as
the manifest's `runtime` section. Every value comes from the target profile or the run; none is chosen here."""
from __future__ import annotations

import json

import numpy as np

from . import mobile
from .config import COVERAGE_PROVIDERS, Target
from .reports import shipped_model
from .runner import CPU_ENTRIES, SPIN_OFF, model_entries

# A provider with a thread pool of its own, and the option sizing it: the profile's threads go there, onnxruntime's
# intra-op pool gets 1 and does not spin (XNNPACK EP docs, "Recommended configuration"; TARGETS.md).
OWN_POOL = {"XnnpackExecutionProvider": "intra_op_num_threads"}
# onnxruntime's build.py flag that compiles each provider into a (minimal) build (its build docs).
BUILD_FLAGS = {"NnapiExecutionProvider": "--use_nnapi", "XnnpackExecutionProvider": "--use_xnnpack",
               "CoreMLExecutionProvider": "--use_coreml"}


def flags_for(target: Target) -> str:
    """What the int8 .ort's build text adds for the profile's providers (android's named neither NNAPI nor
    XNNPACK, while the CoreML build's names --use_coreml)."""
    flags = [BUILD_FLAGS[p] for p in target.runtime.providers if p in BUILD_FLAGS]
    return f"; with {' '.join(flags)} for the providers the app appends" if flags else ""


def min_os(provider: str, options: dict) -> str | None:
    """The oldest OS a provider's onnxruntime docs give it, None where they give none (CPU, XNNPACK).
    NNAPI EP docs: Android 8.1 or higher. CoreML EP docs: iOS 13 / macOS 10.15; ModelFormat=MLProgram needs
    Core ML 5 (ORTCoreMLExecutionProviderOptions.createMLProgram), which is iOS 15 / macOS 12."""
    if provider == COVERAGE_PROVIDERS["nnapi"]:
        return "Android 8.1 (API level 27)"
    if provider == COVERAGE_PROVIDERS["coreml"]:
        return ("iOS 15 / macOS 12 (Core ML 5, for ModelFormat=MLProgram)"
                if mobile.coreml_format(options) == "MLProgram" else "iOS 13 / macOS 10.15")
    return None


def ranges(feeds) -> dict[str, list[float]]:
    """Each numeric input's [min, max] over the calibration samples: what the model's ranges were fitted to."""
    seen: dict[str, list[float]] = {}
    for feed in feeds:
        for name, value in feed.items():
            value = np.asarray(value)
            if value.size and value.dtype.kind in "biuf":
                low, high = float(value.min()), float(value.max())
                old = seen.setdefault(name, [low, high])
                seen[name] = [min(old[0], low), max(old[1], high)]
    return {k: v for k, v in seen.items() if np.isfinite(v).all()}


def inputs(specs: list[dict], image_uint8: dict | None, observed: dict[str, list[float]]) -> list[dict]:
    """Per input: name, dtype, shape (names: dims any size may take), layout, the range calibration saw; for the
    uint8 camera input, what its pixels are."""
    pixels = (image_uint8 or {}).get("input")
    return [{**spec, "layout": "NCHW" if spec["name"] == pixels else None,
             "calibration_range": observed.get(spec["name"]),
             **({"values": (f"raw 0-255 pixels: the normalisation ((pixel / 255 - mean) / std) is folded into the "
                            f"model; channels in the order of the declared mean {image_uint8['mean']} and std "
                            f"{image_uint8['std']} (edgekit cannot tell RGB from BGR: feed the order they were "
                            "declared in)")} if spec["name"] == pixels else {})}
            for spec in specs]


def metadata(specs, image_uint8: dict | None, observed: dict[str, list[float]]) -> str:
    """`inputs` as JSON for the models' metadata (`edgekit_input_contract`; their shapes are `edgekit_inputs`)."""
    return json.dumps([{k: v for k, v in i.items() if k != "shape"}
                       for i in inputs([s.as_dict() for s in specs], image_uint8, observed)])


def runtime(target: Target, details: dict, observed: dict[str, list[float]], onnxruntime: str) -> dict:
    """The manifest's `runtime` section: one session per shipped runtime model (the int8 model on the profile's
    providers; an fp32 .ort on the coverage providers whose build runs fp32, CoreML), the onnxruntime release."""
    options, threads = target.runtime.provider_options, target.runtime.threads
    pixels = details.get("image_uint8")
    verdicts = {COVERAGE_PROVIDERS[ep]: c for ep, c in (details.get("mobile_coverage") or {}).items()
                if isinstance(c, dict) and c.get("verdict")}
    ort = details.get("ort_format") or {}
    sessions = [_session(shipped_model(details), target.runtime.providers, threads, options,
                         inputs(details["inputs"], pixels, observed), verdicts, ort.get("replays", True))]
    if fp32 := ort.get("fp32"):
        fp32_eps = [COVERAGE_PROVIDERS[ep] for ep in target.package.coverage if ep in mobile.SHIPS_FP32_TO]
        sessions.append(_session(fp32["file"], [*fp32_eps, "CPUExecutionProvider"], threads, options,
                                 inputs(fp32["inputs"], pixels, observed), verdicts, fp32.get("replays", True)))
    return {"sessions": sessions, "onnxruntime": {
        "minimum": onnxruntime, "same_release": bool(ort),
        "why": (f"the .ort files are not forward compatible (no older release loads them), and a minimal build "
                f"replays their saved optimisations only as the converter's release wrote them: build onnxruntime "
                f"{onnxruntime}" if ort else
                f"the release that made and checked these files; older ones are not checked (opset "
                f"{details.get('opset')})")}}


FLUSH_NOTE = ("session.set_denormal_as_zero=1: the latency figures were measured with it (x86: a masked softmax's "
              "denormals ran ~7x slower; onnxruntime ignores it on ARM). onnxruntime sets it on the app's calling "
              "thread, which runs a share of each run (all of it at intra_op_num_threads=1), only from the process's "
              "first session and with that session's value: make this the process's first session (its pool threads "
              "take it per session)")


REPLAY_NOTE = ("session.enable_saved_runtime_optimizations=1: onnxruntime replays an .ort's saved runtime "
               "optimisations (the Runtime style's fused int8 kernels, listed in required_operators.config) only in "
               "a session that sets it, in a minimal build as in a full one (convert_onnx_models_to_ort's help); "
               "without it the file runs unfused, DequantizeLinear into float ops (MobileNetV2-style: 6.7x slower). "
               "onnxruntime advises it for trusted models only: this package's files, whose sha256s `edgekit check` "
               "verifies")


def _session(model: str, providers, threads: int, options: dict, specs: list[dict], verdicts: dict,
             replays: bool = True) -> dict:
    """One model's session: providers in the order to append them, with their options as onnxruntime names
    them (and onnxruntime's usability checker's verdict on the model, `verdicts`, where it has one: a "no" is
    "leave it out", which the app decides); the session's threads and config entries (edgekit's own, as it timed:
    runner.CPU_ENTRIES; an .ort's replay of its saved optimisations, runner.model_entries) and why they matter; the
    build flags; the inputs."""
    own = [p for p in providers if p in OWN_POOL]
    listed = []
    for p in providers:
        given = {**({OWN_POOL[p]: str(threads)} if p in OWN_POOL else {}), **options.get(p, {})}
        listed.append({"name": p, "options": given, **({"min_os": floor} if (floor := min_os(p, options)) else {}),
                       **({"checker_verdict": verdicts[p]["verdict"]} if p in verdicts else {})})
    spin = threads > 1 or bool(own)  # edgekit's sessions do not spin with more than one thread (runner.options)
    replay = model_entries(model) if replays else {}  # one onnxruntime cannot replay loads only without it
    return {"model": model, "providers": listed,
            "session": {"intra_op_num_threads": 1 if own else threads,
                        "config_entries": {**CPU_ENTRIES, **dict([SPIN_OFF] * spin), **replay},
                        "notes": [FLUSH_NOTE, *[REPLAY_NOTE] * bool(replay)]},
            "build_flags": [BUILD_FLAGS[p] for p in providers if p in BUILD_FLAGS], "inputs": specs}
