"""Stateful (streaming) models: the recipe pairs each state input with the output that feeds it back
(`state = {state = "stateN"}`). Data holds sequences; every model is run over them step by step, each
carrying its own state, so int8 is judged on the drift it really accumulates, not one step at a time."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import parity
from .config import STEPS, InputSpec, nearest
from .errors import InputError, UsageError


def data_specs(specs: tuple[InputSpec, ...], state: dict[str, str]) -> tuple[InputSpec, ...]:
    """What the data holds: each non-state input with a leading step axis (sequences × steps × input)."""
    unknown = set(state) - {s.name for s in specs}
    if unknown:
        names = [s.name for s in specs]
        raise UsageError(f"state: {sorted(unknown)} not model inputs{nearest(min(unknown), names)} (inputs: "
                         f"{', '.join(names)})")
    if twice := sorted({out for out in state.values() if list(state.values()).count(out) > 1}):
        # read as data missing an input ("unexpected ['frame'] (model takes [])")
        raise UsageError(f"state: {twice[0]} is fed back to {', '.join(i for i, o in state.items() if o == twice[0])}"
                         f": each state input takes an output of its own")
    if state and all(s.name in state for s in specs):
        raise UsageError(f"state: every input ({', '.join(state)}) is a state, so no data would reach the model; "
                         "the data feeds the others")
    return tuple(InputSpec(s.name, (STEPS, *s.shape), s.dtype) for s in specs if s.name not in state)


def check_outputs(state: dict[str, str], outputs: list[str]) -> None:
    unknown = set(state.values()) - set(outputs)
    if unknown:
        raise UsageError(f"state: {sorted(unknown)} not model outputs{nearest(min(unknown), outputs)} (outputs: "
                         f"{', '.join(outputs)})")


def initial_values(files: dict[str, str], specs: tuple[InputSpec, ...], state: dict[str, str],
                   max_bytes: int) -> dict[str, np.ndarray]:
    """The recipe's `state_init` files (.npy, read bounded), each of its state input's dtype and rank."""
    from .arrays import read_npy

    by_name = {s.name: s for s in specs}
    values = {}
    for name, path in files.items():
        if name not in state:
            raise UsageError(f"state_init: {name!r} is not a state input (state inputs: {', '.join(state) or 'none'})")
        value, spec = read_npy(Path(path), max_bytes), by_name[name]
        if value.dtype != np.dtype(spec.dtype) or value.ndim != len(spec.shape):
            raise InputError(f"{path}: a {value.dtype} array of shape {list(value.shape)}; state input {spec} "
                             f"takes {spec.dtype} of rank {len(spec.shape)}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise InputError(f"{path}: state {name!r}'s first value has NaN or Inf values")
        values[name] = value
    return values


def initial(spec: InputSpec, step: dict[str, np.ndarray], specs: tuple[InputSpec, ...],
            init: dict[str, np.ndarray]) -> np.ndarray:
    """The state's first value: `init`'s, else zeros; a named dim takes the size a data input gives the same
    name (the batch), others 1 for zeros, or `init`'s own size (a cache's length: a file of 4 past frames was
    refused for not holding 1)."""
    sizes = {d: step[s.name].shape[i] for s in specs if s.name in step for i, d in enumerate(s.shape)
             if isinstance(d, str)}
    if spec.name not in init:
        return np.zeros(tuple(d if isinstance(d, int) else sizes.get(d, 1) for d in spec.shape), dtype=spec.dtype)
    due = [d if isinstance(d, int) else sizes.get(d, d) for d in spec.shape]  # a name left: any size
    if any(isinstance(d, int) and d != n for d, n in zip(due, init[spec.name].shape)):
        raise InputError(f"state_init: {spec.name} has shape {list(init[spec.name].shape)}; with this data the "
                         f"state is {due}")
    return init[spec.name]


@dataclass(frozen=True)
class Rollout:
    feeds: list[dict]  # every step's feed, state inputs included: what the model saw
    outputs: list[list[np.ndarray]]  # every step's outputs, in the model's output order
    lengths: list[int]  # steps per sequence


def rollout(run, sequences: list[dict], specs: tuple[InputSpec, ...], output_names: list[str],
            state: dict[str, str], init: dict[str, np.ndarray] | None = None) -> Rollout:
    """Run `run(feed) -> outputs` over each sequence from the initial state (`init`, else zeros), feeding each
    state output back."""
    feeds, outputs, lengths = [], [], []
    by_name = {s.name: s for s in specs}
    for i, sequence in enumerate(sequences):
        counts = {name: len(value) for name, value in sequence.items()}
        steps = min(counts.values())
        if steps < 1 or len(set(counts.values())) > 1:
            raise InputError(f"sequence {i}: every input needs the same number of steps, at least 1 (found {counts})")
        current = None
        for t in range(steps):
            # np.require keeps a scalar input's step 0-d (ascontiguousarray made it [1], and the package failed its
            # own check: the golden sample's [1] against the model's [])
            feed = {name: np.require(value[t], requirements="C") for name, value in sequence.items()}
            current = current or {name: initial(by_name[name], feed, specs, init or {}) for name in state}
            feed.update(current)
            out = run(feed)
            feeds.append(feed)
            outputs.append(out)
            current = {name: out[output_names.index(back)] for name, back in state.items()}
            for name, value in current.items():  # else onnxruntime's "Got invalid dimensions" at the next step
                spec = by_name[name]  # a named dimension may grow (a cache); a fixed one may not change
                if value.dtype != np.dtype(spec.dtype) or value.ndim != len(spec.shape) or any(
                        isinstance(d, int) and d != n for d, n in zip(spec.shape, value.shape)):
                    raise InputError(f"state {name}={state[name]}: the model returns {state[name]} as "
                                     f"{value.dtype} {list(value.shape)}, but {name} takes {spec}: the output fed "
                                     "back must be the state itself")
        lengths.append(steps)
    return Rollout(feeds, outputs, lengths)


def not_carried(graph, state: dict[str, str]) -> list[str]:
    """Warnings for the state pairs whose output is not computed from their input (`h=z`, with `z` from x alone and
    the real state `hN` unpaired): every step feeds back a value the model never carries, and the drift figures are
    of a loop the device never runs. A node holding sub-graphs reads what its bodies read."""
    from . import onnx_export

    readers: dict[str, list] = {}
    for n in graph.node:
        inner = {t for g in onnx_export.subgraphs(n) for m in onnx_export.all_nodes(g) for t in m.input}
        for t in set(n.input) | inner:
            readers.setdefault(t, []).append(n)
    said = []
    for i, o in state.items():
        reached, todo = {i}, [i]
        while todo and o not in reached:  # breadth first, once per pair, stopping at the output
            for n in readers.get(todo.pop(), []):
                todo += [t for t in n.output if t not in reached]
                reached.update(n.output)
        if o not in reached:
            said.append(f"state {i}={o}: output {o!r} is not computed from input {i!r}, so what is fed back is not "
                        "the state the model carries; pair the input with the output that is")
    return said


def carry_nodes(graph, state: dict[str, str]) -> tuple[str, ...]:
    """The nodes a state passes through on its way back: those reading a state input or writing a state
    output, and every node on a path from one to the other that does not go through a weight multiplication
    (a MatMul or Conv reading the state makes a new signal; a gate's Mul or an Add carries the state itself).
    Their rounding would be fed back and grow step after step."""
    from . import onnx_export
    from .bench import COMPUTE_OPS

    consumers = onnx_export.consumers(graph)
    producer = {o: n for n in graph.node for o in n.output}
    forward, todo = set(), list(state)  # from the state inputs, not past a weight multiplication
    while todo:
        for n in consumers.get(todo.pop(), []):
            if n.name not in forward:
                forward.add(n.name)
                todo += [] if n.op_type in COMPUTE_OPS else list(n.output)
    backward, todo = set(), list(state.values())  # everything the state outputs are computed from
    while todo:
        n = producer.get(todo.pop())
        if n is not None and n.name not in backward:
            backward.add(n.name)
            todo += list(n.input)
    ends = {n.name for i in state for n in consumers.get(i, [])} | {producer[o].name for o in state.values()
                                                                     if o in producer}
    return tuple(n.name for n in graph.node if n.name in (forward & backward) | ends)


def step_labels(data, lengths: list[int]) -> np.ndarray | None:
    """Labels of sequence data, one per step (`labels` of sequences x steps), in rollout order."""
    if data.labels is None:
        return None
    if data.labels.ndim == 1 and data.labels.size == sum(lengths):  # one per step, sequences joined
        return data.labels
    if data.labels.ndim != 2:
        raise InputError(f"{data.origin}: labels of sequences need one per step (sequences x steps), "
                         f"found shape {list(data.labels.shape)}")
    return np.concatenate([row[:n] for row, n in zip(data.labels, lengths)])


def per_step(reference: Rollout, candidate: list[list[np.ndarray]], names: list[str]) -> dict:
    """The worst output cosine at each step index over all sequences: where drift peaks, and where it ends."""
    starts = np.cumsum([0, *reference.lengths[:-1]])
    cosines = []
    for t in range(max(reference.lengths)):
        rows = [s + t for s, n in zip(starts, reference.lengths) if t < n]
        found = [o.cosine for o in parity.compare(names, [reference.outputs[r] for r in rows],
                                                  [candidate[r] for r in rows])
                 if o.cosine is not None]
        cosines.append(min(found) if found else None)
    worst = min(((c, t) for t, c in enumerate(cosines) if c is not None), default=(None, None))
    return {"sequences": len(reference.lengths), "steps": max(reference.lengths), "worst_step": worst[1],
            "worst_step_cosine": worst[0], "last_step_cosine": cosines[-1] if cosines else None}
