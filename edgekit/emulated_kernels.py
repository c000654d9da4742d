"""An x86-64 target's verdict on an emulated CPU's int8 kernels too (`export --emulate x86_64[:CPU]`).

A package made on a VNNI host keeps 8-bit weights, whose u8s8 pair sums an AVX2 CPU's kernels (VPMADDUBSW) saturate:
the host's exact figures pass where the desktops it ships to may not. With --emulate x86_64 the int8 model's
validation outputs are also computed on the emulated CPU, held to the same gates (named EMULATED + the gate), and the
samples whose outputs differ from this host's kernels are counted. Golden outputs stay this host's: `edgekit check`
compares a package with the kernels of the CPU it runs on.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .parity import EMULATED, Accuracy, Gate, StageParity, quantization_gates


@dataclass(frozen=True)
class KernelDifference:
    """How far the emulated CPU's int8 outputs are from this host's on the same validation samples."""

    samples: int
    differing_samples: int  # samples with any output value that differs
    values: int  # output values compared
    differing_values: int
    max_abs: float  # the largest difference
    max_steps: float | None  # the same in its output's quantization steps (None: no differing output has a step)

    def as_dict(self) -> dict:
        return {"samples": self.samples, "differing_samples": self.differing_samples, "values": self.values,
                "differing_values": self.differing_values, "max_abs": self.max_abs, "max_steps": self.max_steps}


@dataclass(frozen=True)
class EmulatedKernels:
    """An x86-64 target's int8 figures on an emulated CPU's kernels: what its gates (EMULATED + name) hold."""

    kernels: str  # Emulator.describe(): `x86_64 (emulated, epyc-milan), onnxruntime 1.32.0`
    parity: StageParity  # fp32 vs int8 on the emulated kernels, on the samples the verdict is of
    accuracy: Accuracy | None
    difference: KernelDifference  # emulated vs this host's int8 outputs, on every validation sample

    def as_dict(self) -> dict:
        return {"kernels": self.kernels, "parity": self.parity.as_dict(),
                "accuracy": self.accuracy and self.accuracy.as_dict(), "difference": self.difference.as_dict()}

    def gates(self, spec, task: str, quantized: bool) -> list[Gate]:
        """The quantization gates (a ParitySpec's limits) held on these figures, named apart (EMULATED): the export
        writes them, and `edgekit check` makes them again from the record to hold the manifest's to them."""
        drop = self.accuracy.drop if self.accuracy else None
        return prefixed(quantization_gates(self.parity.outputs, drop, spec, task, quantized, self.parity.samples))

    def line(self, gates: list[Gate]) -> str:
        """One line for the terminal and report.md: the kernels, their figures, the samples that differ, the verdict
        of the gates held on them."""
        d = self.difference
        steps = "" if d.max_steps is None else f", up to {d.max_steps:g} step(s)"
        acc = "" if self.accuracy is None else f", accuracy {self.accuracy.int8:.2f}"
        failed = [g.label for g in gates if g.name.startswith(EMULATED) and not g.passed]
        return (f"int8 on {self.kernels}: cosine {_fmt(self.parity.worst('cosine'))}, SQNR "
                f"{_fmt(self.parity.worst('sqnr_db'), '.1f')} dB{acc}; {d.differing_samples} of {d.samples} "
                f"validation samples' outputs differ from this host's kernels ({d.differing_values} values{steps}); "
                + (f"FAIL: {', '.join(failed)}" if failed else "its gates pass"))


def advice(figures: EmulatedKernels | None, gates: list[Gate], reduce_range: bool) -> list[str]:
    """What to do when the emulated CPU's figures fail gates this host's pass, for full-range weights (7-bit ones
    never reach int16's limit: their failure is not saturation's)."""
    failed = [g.name for g in gates if g.name.startswith(EMULATED) and not g.passed]
    if figures is None or not failed or reduce_range:
        return []
    return [f"{', '.join(failed)}: on {figures.kernels} the full-range (8-bit) weights' u8s8 sums saturate int16 "
            "where this host's kernels are exact: export with --reduce-range true (7-bit weights never reach its "
            "limit), or run it on such CPUs with session option session.x64quantprecision=1"]


def _fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def difference(here: list, there: list, names: list[str], steps: dict[str, float]) -> KernelDifference:
    """`there` (each sample's outputs in `names` order, the emulated CPU's) against `here` (this host's). `steps`:
    each quantized output's quantization step (package.output_steps)."""
    samples = values = differing = differing_values = 0
    max_abs, max_steps = 0.0, None
    for a, b in zip(here, there):
        samples += 1
        differs = False
        for name, x, y in zip(names, a, b):
            x, y = np.asarray(x), np.asarray(y)
            values += max(x.size, y.size)  # of the longer output where a length differs: each of its values differs
            if x.shape != y.shape:  # a length that follows the values
                differs, differing_values = True, differing_values + max(x.size, y.size)
                continue
            gap = np.abs(x.astype(np.float64) - y.astype(np.float64))
            if not (count := int(np.count_nonzero(gap))):
                continue
            differs, differing_values = True, differing_values + count
            peak = float(gap.max())
            max_abs = max(max_abs, peak)
            if name in steps:
                max_steps = max(max_steps or 0.0, round(peak / steps[name], 3))
        differing += differs
    return KernelDifference(samples, differing, values, differing_values, max_abs, max_steps)


def prefixed(gates: list[Gate]) -> list[Gate]:
    """The quantization gates measured on the emulated CPU's figures, named apart from this host's."""
    return [replace(g, name=EMULATED + g.name) for g in gates]


def from_json(data: dict | None) -> EmulatedKernels | None:
    """The record as_dict() wrote, back (a manifest from `edgekit check`)."""
    if data is None:
        return None
    from .reports import _accuracy, _stage

    stage, accuracy = _stage(data["parity"]), _accuracy(data["accuracy"])
    return EmulatedKernels(data["kernels"], _scored_marked(stage, accuracy), accuracy,
                           KernelDifference(**data["difference"]))


def _scored_marked(stage: StageParity, accuracy: Accuracy | None) -> StageParity:
    """The stage with its scored output marked again (as_dict leaves `scored` out), so that its gates are made again
    as the export made them: the output accuracy scored, else the one with a top-1 agreement (class figures are
    measured on the scored output alone)."""
    name = accuracy.output if accuracy and accuracy.output else next(
        (o.output for o in stage.outputs if o.top1_agreement is not None), None)
    return replace(stage, outputs=tuple(replace(o, scored=o.output == name) for o in stage.outputs))
