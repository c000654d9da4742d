"""Pruning that makes the deployed model smaller: structured (channels physically removed, with
Torch-Pruning's dependency graph across residual adds, concats, depthwise convs and norms) or
unstructured (magnitude, made permanent: no masks left)."""
from __future__ import annotations

import logging
import re
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .errors import InputError, StageError, UsageError, few, first_line
from .structure import has_heads
from .torch_paths import unfused

log = logging.getLogger("edgekit")

if TYPE_CHECKING:
    from .rounding import RoundingChoice

# why Torch-Pruning leaves a layer whole at a ratio (one it would empty keeps `round_to` channels, or 1: _Floored)
ROUNDED = ("Torch-Pruning leaves a layer whole when it has no more channels than it must keep (1, or round_to), "
           "when a grouped conv's channels round to none per group, or when it is coupled to one kept whole: ignored, "
           "or an output")


def is_compute(layer) -> bool:
    """A layer pruning resizes and sharing clusters: a convolution (transposed too: a decoder's ConvTranspose1d
    output layer was missed, and pruned) or a linear layer, a user's subclass of one included."""
    import torch

    return isinstance(layer, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))


def inside(name: str, blocks) -> bool:
    """`name` is one of `blocks` or a layer inside one ("" is the whole model): Torch-Pruning keeps an ignored
    module's layers whole, and a stage's ratio is its layers'."""
    return any(not b or name == b or name.startswith(f"{b}.") for b in blocks)


def kept_whole(ignored, stage_ratios: dict) -> list[str]:
    """The layers and blocks structured pruning keeps whole: the ignored ones (output layers too) and stages at
    ratio 0."""
    return [*ignored, *(n for n, r in stage_ratios.items() if r == 0)]


def resized(module, kept) -> dict:
    """The conv/linear layers pruning may resize, by name: those not inside a layer or block `kept` whole."""
    return {n: m for n, m in module.named_modules() if is_compute(m) and not inside(n, kept)}


def check_ignored(ignore, named: dict, action: str, keeps=None, kind: str = "layer with weights") -> None:
    """`--ignore` names: each a layer or block (`named`: the model's modules by name) holding a `kind` of layer,
    `keeps` (default: any with weights, a BatchNorm keeping its conv's channels), from being `action`: a typo or a
    name holding none (a ReLU) kept nothing, and the run said it kept it."""
    keeps = keeps or (lambda m: any(True for _ in m.parameters(recurse=False)))
    layers = ", ".join(n for n, m in named.items() if is_compute(m))
    if unknown := [n for n in ignore if n not in named]:
        raise UsageError(f"--ignore: no layer named {', '.join(unknown)} (layers: {layers})")
    if "" in ignore:
        raise UsageError(f"--ignore '' names the whole model: nothing would be {action}")
    if empty := [n for n in ignore if not any(map(keeps, named[n].modules()))]:
        raise UsageError(f"--ignore {', '.join(empty)}: holds no {kind} to keep from being {action} "
                         f"(layers: {layers})")


@dataclass(frozen=True)
class PruneResult:
    method: str
    ratio: float
    importance: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    ignored: tuple[str, ...]
    stage_ratios: dict | None = None  # {module name: its own ratio}, over `ratio` for the layers inside it
    sparsity: float | None = None  # unstructured: share of zero weights in the pruned layers
    model_sparsity: float | None = None  # unstructured: in all conv/linear layers (output layers are kept whole)
    rounding: RoundingChoice | None = None  # round_to = "auto": what was measured and kept
    sizes: dict[str, int] | None = None  # the named axes' sizes (the data's) of the sample MACs are counted for
    warnings: tuple[str, ...] = ()  # what a recipe's export must report too (a prune that removed nothing)
    heads: dict | None = None  # structured, per attention (has_heads): {"heads": [before, after], "pruned": [ids]}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ignored"] = list(self.ignored)
        d["warnings"] = list(self.warnings)
        d["rounding"] = self.rounding.as_dict() if self.rounding else None
        return d


def count(module, example_inputs) -> tuple[int, int]:
    """(parameters, multiply-accumulates of convolutions and matrix products) for one forward pass."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), unfused(), FlopCounterMode(display=False) as flops:
        module(*example_inputs)
    return sum(p.numel() for p in module.parameters()), flops.get_total_flops() // 2  # 2 FLOPs per MAC


def head_layers(module, example_inputs) -> list[str]:
    """Conv/linear layers whose outputs reach a model output without passing another such layer:
    their output sizes are the model's, so they keep them (every head of a multi-head model)."""
    return _layers_before([o.grad_fn for o in _graph(module, example_inputs)], _owners(module))


def feeders(module, example_inputs, names) -> dict[str, list[str]]:
    """{layer name: the conv/linear layers whose outputs reach its input without passing another}: a recurrent
    layer's input size is theirs, which Torch-Pruning fails to resize with it; told only "the layer feeding it",
    a user ignored the recurrent layer alone and got an IndexError."""
    from torch.nn.utils.rnn import PackedSequence

    named, taken = dict(module.named_modules()), {}
    def keep(n, args, kwargs):  # forward(x) or forward(input=x)
        if (x := args[0] if args else kwargs.get("input")) is not None:
            taken.setdefault(n, x)

    hooks = [named[n].register_forward_pre_hook(lambda m, a, k, n=n: keep(n, a, k), with_kwargs=True) for n in names]
    try:
        _graph(module, example_inputs)
    finally:
        for h in hooks:
            h.remove()
    owner = _owners(module)
    fns = {n: getattr(x.data if isinstance(x, PackedSequence) else x, "grad_fn", None) for n, x in taken.items()}
    return {n: _layers_before([fns.get(n)], owner) for n in names}


def _owners(module) -> dict[int, str]:
    """{id of a conv/linear layer's parameter: the layer's name}."""
    return {id(p): name for name, m in module.named_modules() if is_compute(m) for p in m.parameters(recurse=False)}


def _graph(module, example_inputs) -> list:
    """The module's outputs with their autograd graph, through its frozen parameters too."""
    import torch

    from .runtime import flatten_outputs

    frozen = [p for p in module.parameters() if not p.requires_grad]
    try:  # a frozen parameter has no place in the autograd graph the walks follow
        for p in frozen:
            p.requires_grad_(True)
        with torch.enable_grad():
            return flatten_outputs(module(*example_inputs))
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _layers_before(fns, owner: dict[int, str]) -> list[str]:
    """The conv/linear layers (`owner`: their parameters' ids to names) first met walking back from autograd nodes."""
    found, seen = [], set()
    stack = list(fns)
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        layers = {owner.get(id(_parameter(nxt))) for nxt, _ in fn.next_functions} - {None}
        if layers:  # a conv/linear op: do not look further up this branch
            found += sorted(layers - set(found))
            continue
        stack += [nxt for nxt, _ in fn.next_functions]
    return found


# autograd nodes that only re-lay a tensor out: a bias-free Linear's weight reaches its matmul through TBackward0
LAYOUT = ("TBackward0", "TransposeBackward0", "PermuteBackward0", "ViewBackward0", "UnsafeViewBackward0",
          "ReshapeAliasBackward0", "ExpandBackward0")


def _parameter(fn):
    """The parameter (or None) an autograd node reads, through layout-only nodes: stopping at the op that reads
    it directly only, a bias-free output Linear was walked past and the layer before it kept whole as an output."""
    while type(fn).__name__ in LAYOUT and len(fn.next_functions) == 1:
        fn = fn.next_functions[0][0]
    return getattr(fn, "variable", None)


def prune(module, example_inputs, *, ratio: float, method: str = "structured", importance: str = "l1",
          ignore: tuple[str, ...] = (), round_to: int | None = None, batches=None,
          stage_ratios: dict | None = None) -> PruneResult:
    """Prune `module` in place. `batches` (iterable of (inputs tuple, labels)) feeds Taylor importance;
    `stage_ratios` ({module name: ratio}) gives the layers inside a module (a stage) their own ratio."""
    if not 0.0 < ratio < 1.0:
        raise UsageError(f"ratio {ratio} removes {'nothing' if ratio <= 0 else 'everything'}: give a ratio above 0 "
                         "and below 1")
    named = dict(module.named_modules())
    stage_ratios = dict(stage_ratios or {})
    check_ignored(ignore, named, "pruned")
    if unknown := [n for n in stage_ratios if n not in named]:
        raise UsageError(f"--stage: no layer named {', '.join(unknown)} (layers: "
                         f"{', '.join(n for n, m in named.items() if is_compute(m))})")
    if stage_ratios and method != "structured":
        raise UsageError("--stage ratios remove whole channels: --stage needs structured pruning")
    if round_to and method != "structured":  # taken, and nothing rounded
        raise UsageError(f"--round-to {round_to} rounds channel counts: it needs structured pruning")
    module.eval()
    params0, macs0 = count(module, example_inputs)
    shapes0 = output_shapes(module, example_inputs)
    tied = _tied(module)
    heads = head_layers(module, example_inputs)
    if not heads and method == "structured":  # pruning would resize the outputs themselves
        raise StageError("structured pruning", "cannot trace which layers give the model's outputs (does forward "
                                               "run under torch.no_grad()?)")
    ignored = tuple(dict.fromkeys([*ignore, *heads, *_tied_to(module, heads)]))
    resizes = resized(module, ignored)  # a stage holding none of them was taken without a word, and no effect
    if idle := [s for s in stage_ratios if not any(inside(n, [s]) for n in resizes)]:
        log.warning("--stage %s: holds no layer pruning resizes (a conv/linear layer that is not an output layer or "
                    "ignored; output layers: %s): its ratio has no effect", ", ".join(idle), few(heads, 4))
    sparsity = model_sparsity = None
    unwrapped = ""  # structured: what Torch-Pruning said of parameters outside conv/linear layers
    notes = []  # structured: layers pruned other than at the ratio, for PruneResult.warnings
    heads_said = None
    if method == "structured":
        attention = {n: m for n, m in named.items() if has_heads(m)}
        qkv = {f"{n}.{p}" for n in attention for p in ("query", "key", "value")}  # widths set by heads, not ratio
        widths = {n: _width(m) for n, m in resized(module, kept_whole(ignored, stage_ratios)).items() if n not in qkv}
        cuts = _head_cuts(attention, ratio, stage_ratios, kept_whole(ignored, stage_ratios), notes)
        sizes = {n: m.query.out_features // m.num_attention_heads for n, m in attention.items()}
        before = {n: p.shape for n, p in module.named_parameters()}
        with warnings.catch_warnings(record=True) as said:  # Torch-Pruning's, on stderr, broke the one-line errors
            try:
                emptied, cut = _structured(module, example_inputs, ratio, importance, [named[n] for n in ignored],
                                           round_to, batches, {named[n]: r for n, r in stage_ratios.items()},
                                           {attention[n]: k for n, k in cuts.items()})
            except StageError as e:
                raise StageError(e.stage, f"{e.message}; {u}" if (u := _unwrapped(said, module, before))
                                 else e.message) from e
            finally:
                for w in said:
                    log.info("warned while pruning: %s", first_line(w.message))
        unwrapped = _unwrapped(said, module, before)
        heads_said = _count_heads(attention, sizes, cut) or None
        if floored := [f"{n} ({widths[n]})" for n in named if n in emptied and n in widths]:  # in model order
            notes.append(f"ratio {ratio} would remove every channel of {few(floored, 4)}: "
                         f"{'each keeps' if len(floored) > 1 else 'it keeps'} {round_to or 1} "
                         f"({f'a multiple of round_to {round_to}' if round_to else 'a layer keeps at least one'})")
        whole = [n for n, m in named.items() if n in widths and _width(m) == widths[n]]
        if len(whole) < len(widths) and whole:  # ratio 0.95 left a 16-channel layer whole, silently
            notes.append(f"ratio {ratio} left {few(whole, 4)} whole ({ROUNDED}"
                         f"{f'; kept channels a multiple of {round_to}' if round_to else ''})")
        for note in notes:
            log.warning("%s", note)
    elif method == "unstructured":
        sparsity = _unstructured(module, ratio, importance, set(ignored))
        model_sparsity = _zero_share([m for m in module.modules() if is_compute(m)])
    else:
        raise UsageError(f"--method {method!r}: use structured or unstructured")
    _still_the_same_model(module, example_inputs, shapes0, heads, f"{method} pruning", unwrapped)
    named = dict(module.named_modules(remove_duplicate=False))
    if apart := [group for group in tied if len({id(named[n].weight) for n in group}) > 1]:
        raise StageError(f"{method} pruning", f"layers {', '.join(apart[0])} share one weight (tied), and pruning "
                                              "resized it for one of them: --ignore them, and the layers before them")
    params1, macs1 = count(module, example_inputs)
    said = notes
    if params1 == params0 and method == "structured":  # said, not passed off as a pruned model
        why = (ROUNDED + (f"; kept channels a multiple of {round_to}" if round_to else "") if widths else
               "every layer is ignored or gives an output")
        said.append(f"structured pruning at ratio {ratio} removed no channel ({why}; ignored: {', '.join(ignored)})")
        log.warning("%s", said[-1])
    elif round_to and method == "structured" and (off := _off_multiple(module, round_to, {*ignored, *qkv})):
        # Torch-Pruning rounds a layer's kept channels down to the multiple; one no wider than it stays whole
        log.warning("round_to %s: %s kept channel counts that are not multiples of it (a layer is left whole when "
                    "it has no more channels than round_to)", round_to, few(off, 4))
    return PruneResult(method, ratio, importance, params0, params1, macs0, macs1, ignored, stage_ratios or None,
                       sparsity, model_sparsity, warnings=tuple(said), heads=heads_said)


def _width(layer) -> int:
    """A conv/linear layer's output channels (features)."""
    shape = layer.weight.shape  # a transposed conv's is [in, out / groups, ...]
    return shape[1] * layer.groups if getattr(layer, "transposed", False) else shape[0]


def _head_cuts(attention: dict, ratio: float, stage_ratios: dict, kept: list[str], notes: list) -> dict[str, int]:
    """Heads to remove from each attention (has_heads), by name: as many as Torch-Pruning's channels at its ratio
    (its stage's), but never all; none from one with a query, key or value kept whole. Pruned by channel instead,
    each new head mixed channels of all the old ones (exit 0, another attention)."""
    cuts, alone, emptied = {}, [], []
    for name, m in attention.items():
        if any(inside(f"{name}.{p}", kept) for p in ("query", "key", "value")):
            cuts[name] = 0
            continue
        r = next((r for s, r in reversed(stage_ratios.items()) if inside(f"{name}.query", [s])), ratio)
        n = m.num_attention_heads
        want = n - int(n * (1 - r))  # Torch-Pruning keeps int(channels * (1 - ratio))
        cuts[name] = min(want, n - 1)
        (alone if n == 1 else emptied if want >= n else []).append(name)
    if alone:
        notes.append(f"attention {few(alone, 4)} has one head: kept whole (pruning removes whole heads)")
    if emptied:
        notes.append(f"ratio {ratio} would remove every head of attention {few(emptied, 4)}: "
                     f"{'each keeps' if len(emptied) > 1 else 'it keeps'} 1")
    return cuts


def _count_heads(attention: dict, sizes: dict[str, int], cut: dict[str, list[int]]) -> dict:
    """Give each attention its new head count (HEAD_ATTRS), its query, key and value checked to be whole heads of
    its `sizes`; returns {name: {"heads": [before, after], "pruned": [original head ids]}}."""
    said = {}
    for name, m in attention.items():
        size, n = sizes[name], m.num_attention_heads
        widths = {p.out_features for p in (m.query, m.key, m.value)}
        gone = cut.get(name, [])
        if widths != {(n - len(gone)) * size}:
            raise StageError("structured pruning", f"attention {name}: Torch-Pruning left its query, key and value "
                                                   f"at {sorted(widths)} channels, not whole heads of {size}: "
                                                   f"--ignore {name}")
        m.num_attention_heads = n - len(gone)
        if hasattr(m, "all_head_size"):
            m.all_head_size = m.num_attention_heads * size
        said[name] = {"heads": [n, m.num_attention_heads], "pruned": gone}
    return said


def _tied(module) -> list[tuple[str, ...]]:
    """Conv/linear/embedding layers sharing one weight tensor (tied), as groups of their names."""
    import torch

    groups: dict[int, list[str]] = {}
    for name, layer in module.named_modules(remove_duplicate=False):
        if is_compute(layer) or isinstance(layer, torch.nn.Embedding):
            groups.setdefault(id(layer.weight), []).append(name)
    return [tuple(names) for names in groups.values() if len(names) > 1]


def _tied_to(module, heads: list[str]) -> list[str]:
    """Layers sharing a weight with an output layer (an embedding tied to a language model's head): kept whole with
    it, as Torch-Pruning resizes each holder of a shared weight apart (the tie was broken, exit 0)."""
    named = dict(module.named_modules())
    shared = {id(p) for h in heads for p in named[h].parameters(recurse=False)}
    return [n for n, m in named.items() if n not in heads and any(id(p) in shared for p in m.parameters(recurse=False))]


def output_shapes(module, example_inputs) -> list[tuple[int, ...]]:
    import torch

    from .runtime import flatten_outputs

    with torch.no_grad():
        return [tuple(o.shape) for o in flatten_outputs(module(*example_inputs))]


def _still_the_same_model(module, example_inputs, shapes: list, heads: list[str], step: str, why: str = "") -> None:
    """The pruned model runs on the same inputs and gives outputs of the same ranks and sizes past the first axis
    (a detector's box count may follow its scores), or pruning failed: a forward that hard-codes a size
    (`x.view(n, 1024)`) broke as exit 5, and an output layer the walk missed was resized with exit 0. `why`: a
    known cause, said instead of the guesses."""
    try:
        after = output_shapes(module, example_inputs)
    except Exception as e:
        guess = "a size its forward states, or a layer it applies twice, no longer fits; --ignore the layers involved"
        raise StageError(step, f"the pruned model no longer runs ({type(e).__name__}: {first_line(e)[:200]}): "
                               f"{why or guess}{_where_it_fails(module, example_inputs)}") from e
    if [s[1:] or s for s in after] != [s[1:] or s for s in shapes] or len(after) != len(shapes):
        raise StageError(step, f"it changed the model's output shapes from {shapes} to {after} (output layers "
                               f"found: {few(heads, 4)}); {why or '--ignore the layer that gives them'}")


def _unwrapped(said, module, before: dict) -> str:
    """Torch-Pruning's warning of parameters no conv/linear layer holds (an `F.linear(h, self.W)`), said as the
    cause of a failure when it resized them (on a guessed axis: the failure blamed a size the forward states); one
    it left as it was (`before`: the shapes) is no cause."""
    now = {n: p.shape for n, p in module.named_parameters()}
    names = [n for w in said if (m := re.match(r"Unwrapped parameters detected: \[(.*)\]", str(w.message)))
             for n in re.findall(r"'([^']*)'", m[1]) if n in now and now[n] != before.get(n)]
    return (f"Torch-Pruning resized parameters that no conv/linear layer holds ({', '.join(names)}) on a guessed "
            "axis: put each in an nn.Linear or nn.Conv layer, or --ignore the layers producing and consuming it"
            if names else "")


def _where_it_fails(module, example_inputs) -> str:
    """Where a forward fails: inside the innermost layer still running, else after the last layer that finished
    (a size the forward's own code states)."""
    running, finished, hooks = [], [], []
    for name, m in module.named_modules():
        if name:
            hooks.append(m.register_forward_pre_hook(lambda m, a, n=name: running.append(n)))
            hooks.append(m.register_forward_hook(lambda m, a, o: finished.append(running.pop())))
    try:
        output_shapes(module, example_inputs)
    except Exception:
        pass
    finally:
        for h in hooks:
            h.remove()
    return f" (it fails in {running[-1]})" if running else f" (it fails after {finished[-1]})" if finished else ""


def _off_multiple(module, round_to: int, ignored: set[str]) -> list[str]:
    """The prunable conv/linear layers whose output channels are not a multiple of `round_to`, with their count."""
    return [f"{name} ({n})" for name, layer in module.named_modules() if is_compute(layer)
            and name not in ignored and (n := getattr(layer, "out_channels", None) or layer.out_features) % round_to]


def stages(module, most: int = 4, kept=()) -> list[tuple[str, ...]]:
    """The modules a model's conv/linear layers group into, for per-stage ratios: its children holding such
    layers (looking through a container that holds all of them), consecutive ones merged into at most `most`
    stages (a search grows with each). Layers `kept` whole (kept_whole) count for none: a stage of output layers
    alone was a search dimension that changed nothing."""
    layers = {id(m) for m in resized(module, kept).values()}
    prefix = ""
    while True:
        holding = [(prefix + name, child) for name, child in module.named_children()
                   if any(id(m) in layers for m in child.modules())]
        if len(holding) != 1 or is_compute(holding[0][1]):
            break
        prefix, module = f"{holding[0][0]}.", holding[0][1]
    names = [name for name, _ in holding]
    size = -(-len(names) // most) if names else 1
    return [tuple(names[i:i + size]) for i in range(0, len(names), size)]


def _structured(module, example_inputs, ratio, importance, ignored_layers, round_to, batches,
                ratio_dict, cuts: dict) -> tuple[list[str], dict[str, list[int]]]:
    """Prune with Torch-Pruning, attentions (`cuts`: {module: heads to remove}) by whole heads; returns the layers it
    would have emptied, which keep `round_to` (or 1) channels, and the heads removed, by attention name."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise UsageError("structured pruning needs Torch-Pruning: pip install 'edgekit[prune]'") from None
    import torch

    if importance == "taylor":
        imp = tp.importance.TaylorImportance()
    elif importance in ("l1", "l2"):
        imp = tp.importance.MagnitudeImportance(p=1 if importance == "l1" else 2)
    else:
        raise UsageError(f"--importance {importance!r}: use l1, l2 or taylor")
    skipped = {id(m) for m in ignored_layers}
    kept = [n for n, m in module.named_modules() if id(m) in skipped]
    recurrent = {n: type(m).__name__ for n, m in module.named_modules()
                 if isinstance(m, (torch.nn.RNNBase, torch.nn.RNNCellBase))}
    fed = feeders(module, example_inputs, list(recurrent)) if recurrent else {}
    unkept = [n for n in recurrent if not all(inside(x, kept) for x in (n, *fed[n]))]
    said = ", ".join(f"{n} ({recurrent[n]}{', fed by ' if fed[n] else ''}{', '.join(fed[n])})" for n in unkept)
    if any(recurrent[n] != "LSTM" for n in unkept):  # a GRU hung tracing with only itself ignored; a cell failed
        raise StageError("structured pruning", f"Torch-Pruning cannot prune GRU or plain RNN layers or recurrent "
                                               f"cells (GRUCell, LSTMCell, RNNCell), nor the layers feeding them (it "
                                               f"fails on them, or never ends tracing them): {said}; "
                                               f"{_keep_recurrent(unkept, fed)}, or prune unstructured (--method "
                                               "unstructured: it zeroes weights, the parameter count stays)")
    if any(inside(n, kept) for n in unkept):  # an ignored LSTM's input was resized all the same: no reload
        raise StageError("structured pruning", f"an ignored recurrent layer is kept whole only with the layers "
                                               f"feeding it (Torch-Pruning resizes its input): {said}; "
                                               f"{_keep_recurrent(unkept, fed)}")
    hint = f"Torch-Pruning's LSTM support is experimental: {said}: {_keep_recurrent(unkept, fed)}" if unkept else ""
    try:
        pruner = _floored(tp)(module, example_inputs, importance=imp, pruning_ratio=ratio,
                              pruning_ratio_dict=ratio_dict or None, ignored_layers=ignored_layers,
                              round_to=round_to or 1,  # 1: its _round_to, which keeps a layer from emptying, runs
                              **_by_heads(cuts))
    except Exception as e:
        raise StageError("structured pruning", f"Torch-Pruning cannot trace this model: {type(e).__name__}: "
                                               f"{str(e).splitlines()[0][:200] if str(e) else ''}"
                                               f"{f' ({hint})' if hint else ''}") from e
    if importance == "taylor":
        from .distillation import on_batch

        if not batches:
            raise UsageError("--importance taylor needs labelled --data to compute gradients")
        if not any(p.requires_grad for p in module.parameters()):
            raise InputError("--importance taylor needs gradients: the model's parameters are all frozen "
                             "(requires_grad=False)")
        module.zero_grad()
        for inputs, labels in batches:
            if labels is None:
                raise InputError("--importance taylor needs labels in --data")
            torch.nn.functional.cross_entropy(on_batch(module, inputs, "model"), labels).backward()
    names, floored, cut = {id(m): n for n, m in module.named_modules()}, [], {}
    parts = {id(getattr(a, p)): (names[id(a)], a.query.out_features // a.num_attention_heads)
             for a in cuts for p in ("query", "key", "value")}
    try:
        for group in pruner.step(interactive=True):  # what step() does, noting the groups kept from emptying
            floored += [names[id(dep.target.module)] for dep, _ in group if pruner.floored
                        and is_compute(dep.target.module) and pruner.DG.is_out_channel_pruning_fn(dep.handler)]
            pruner.floored = False
            for dep, idxs in group:  # an attention's query, key and value lose the same whole heads, or none
                if id(dep.target.module) in parts and pruner.DG.is_out_channel_pruning_fn(dep.handler):
                    name, size = parts[id(dep.target.module)]
                    ids = sorted({int(i) // size for i in idxs})
                    if sorted(map(int, idxs)) != [h * size + j for h in ids for j in range(size)] or \
                            cut.setdefault(name, ids) != ids:
                        raise StageError("structured pruning", f"Torch-Pruning would prune attention {name} across "
                                                               f"its heads: --ignore {name}")
            group.prune()
    except StageError:
        raise
    except Exception as e:
        raise StageError("structured pruning", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                                               f" ({hint or 'try --ignore on the layer it names'})") from e
    module.zero_grad(set_to_none=True)
    return floored, cut


def _by_heads(cuts: dict) -> dict:
    """Torch-Pruning's settings removing `cuts` ({attention: heads}) whole heads from each attention and no channel
    within a head; none without attentions. Its head ratio removes ceil(ratio * heads): k - 0.5 of them is k."""
    if not cuts:
        return {}
    parts = [(getattr(a, p), a.num_attention_heads, k) for a, k in cuts.items() for p in ("query", "key", "value")]
    return {"num_heads": {layer: n for layer, n, _ in parts}, "prune_num_heads": True, "prune_head_dims": False,
            "head_pruning_ratio_dict": {layer: (k - 0.5) / n if k else 0.0 for layer, n, k in parts},
            "in_channel_groups": {}, "out_channel_groups": {}}  # its defaults are dicts it fills, shared by calls


def _floored(tp):
    """Torch-Pruning's MetaPruner keeping `round_to` channels of a layer (when it has more) that its ratio, or the
    rounding down to a multiple, would empty: it left such a layer whole, so ratio 0.97 pruned less than 0.95 and
    round_to 16 left a 20-channel layer at 20. `floored`: whether the group it is about to yield was. A grouped
    (not depthwise) conv is not floored: Torch-Pruning gives this its total count, not the count per group."""
    class Floored(tp.pruner.MetaPruner):
        floored = False

        def _round_to(self, n_pruned, current_channels, round_to):
            n = super()._round_to(n_pruned, current_channels, round_to)
            self.floored = n >= current_channels > round_to
            return current_channels - round_to if self.floored else n

    return Floored


def _keep_recurrent(layers: list[str], fed: dict[str, list[str]]) -> str:
    """What to keep whole for recurrent `layers` (`fed`: the layers feeding each), by name."""
    names = list(dict.fromkeys(n for layer in layers for n in (layer, *fed[layer])))
    return (f"keep each and the layer feeding it whole (--ignore {' --ignore '.join(names)}; in a recipe, [prune] "
            f"ignore = [{', '.join(map(repr, names))}])")


def _unstructured(module, ratio, importance, ignored) -> float:
    from torch.nn.utils import prune as tprune

    if importance not in ("l1", "l2"):
        raise UsageError("unstructured pruning ranks single weights by magnitude: --importance l1 or l2")
    targets = [(m, "weight") for name, m in module.named_modules()
               if is_compute(m) and name not in ignored]
    if not targets:
        raise UsageError(f"unstructured pruning has nothing to prune: every conv/linear layer is an output layer or "
                         f"ignored ({few(sorted(ignored), 4)})")
    tprune.global_unstructured(targets, pruning_method=tprune.L1Unstructured, amount=ratio)
    for m, name in targets:
        tprune.remove(m, name)  # fold the mask into the weight: a plain module again
    return _zero_share([m for m, _ in targets])


def _zero_share(layers) -> float:
    """The share of zero weights in these layers."""
    total = sum(m.weight.numel() for m in layers)
    return sum(int((m.weight == 0).sum()) for m in layers) / total if total else 0.0
