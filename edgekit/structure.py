"""A pruned model as plain tensors: its state dict plus the layer sizes that pruning changed.

Structured pruning changes layer shapes, so a pruned state dict no longer fits the model its
`module:function` builds. Instead of pickling the whole module (which would need
`torch.load(weights_only=False)`, i.e. running code from the file), edgekit saves the new sizes of
each resized layer and re-sizes a freshly built model before loading the weights. The file loads
with `weights_only=True` and needs no pruning library.

    {"edgekit_format": "pruned-state-dict/1", "state_dict": {...}, "layers": {name: {attr: int}}}

A Hugging Face attention's head count is saved as its size too (HEAD_ATTRS).
"""
from __future__ import annotations

FORMAT = "pruned-state-dict/1"
# Attributes that describe a layer's size, per layer type (everything pruning may change).
SIZE_ATTRS = {
    **dict.fromkeys(("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d"), ("in_channels", "out_channels", "groups")),
    **dict.fromkeys(("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d",
                     "InstanceNorm3d"), ("num_features",)),
    "Linear": ("in_features", "out_features"),
    "LayerNorm": ("normalized_shape",),
    "GroupNorm": ("num_groups", "num_channels"),
    "Embedding": ("num_embeddings", "embedding_dim"),
    "PReLU": ("num_parameters",),
}
# An attention laid out as Hugging Face's BERT family's (has_heads): pruning removes whole heads, and its forward
# reads these (4.x splits query/key/value by num_attention_heads): a rebuilt one kept the built count.
HEAD_ATTRS = ("num_attention_heads", "all_head_size")


def has_heads(layer) -> bool:
    """Attention with query, key and value Linear layers of one width and an int `num_attention_heads` that splits
    them into heads when it runs (BertSelfAttention, RoBERTa's, ...)."""
    import torch

    parts = [getattr(layer, n, None) for n in ("query", "key", "value")]
    heads = getattr(layer, "num_attention_heads", None)
    return (type(heads) is int and heads > 0 and all(isinstance(p, torch.nn.Linear) for p in parts)
            and len({p.out_features for p in parts}) == 1 and parts[0].out_features % heads == 0)


def _attrs(layer) -> tuple[str, ...]:
    """The size attributes saved for a layer (none: not a sized layer)."""
    if attrs := SIZE_ATTRS.get(type(layer).__name__):
        return attrs
    return tuple(a for a in HEAD_ATTRS if type(getattr(layer, a, None)) is int) if has_heads(layer) else ()


def layer_sizes(module) -> dict[str, dict]:
    """Each sized layer's attributes, tuples (LayerNorm's shape) as lists: plain data for weights_only loading."""
    return {name: {a: list(v) if isinstance(v := getattr(layer, a), tuple) else v for a in attrs}
            for name, layer in module.named_modules() if (attrs := _attrs(layer))}


def save(module, path, extra: dict | None = None) -> None:
    import torch

    torch.save({"edgekit_format": FORMAT, "state_dict": module.state_dict(), "layers": layer_sizes(module),
                **(extra or {})}, path)


def _size(value) -> bool:
    """A positive int, or a list of them (LayerNorm's shape)."""
    values = value if isinstance(value, list) and value else [value]
    return all(type(v) is int and v > 0 for v in values)


def is_pruned_checkpoint(state) -> bool:
    return isinstance(state, dict) and state.get("edgekit_format") == FORMAT


def resize(module, layers: dict[str, dict], state_dict: dict) -> None:
    """Give each named layer its saved sizes, and every parameter or buffer whose saved shape differs a
    tensor of that shape (values are loaded after), whatever module owns it."""
    import torch

    named = dict(module.named_modules())
    for name, attrs in layers.items():
        layer = named.get(name)
        if layer is None:
            continue  # load_state_dict will name what does not fit
        for attr, value in attrs.items():  # a file from others: its sizes only (it set `__dict__`, `forward`, -5)
            if attr not in _attrs(layer) or not _size(value):
                raise ValueError(f"layer {name!r}: {attr!r} = {str(value)[:40]} is not a size of a "
                                 f"{type(layer).__name__}")
            setattr(layer, attr, tuple(value) if isinstance(value, list) else value)
    for owner_name, owner in named.items():
        prefix = f"{owner_name}." if owner_name else ""
        for tname, tensor in [*owner.named_parameters(recurse=False), *owner.named_buffers(recurse=False)]:
            saved = state_dict.get(prefix + tname)
            if saved is not None and saved.shape != tensor.shape:
                empty = torch.empty_like(saved)
                is_param = isinstance(tensor, torch.nn.Parameter)
                setattr(owner, tname, torch.nn.Parameter(empty, tensor.requires_grad) if is_param else empty)
