"""What parsing an .onnx file costs, told from its bytes before onnx.load reads it.

onnx.load keeps a tensor's float, raw and double data in as many bytes as the file's, but every other byte may cost
far more: a graph of empty nodes (2 bytes each) took ~85-180 bytes of memory a byte to parse. The bytes of a model
file besides its initializers' data are counted here, each field of the messages walked (model, graphs, nodes,
attributes, tensors, functions) at least MIN_FIELD_BYTES, by a walk over the file (read where it goes, not mmap'd)
that stops once past a limit.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# TensorProto's data fields onnx.load keeps in as many bytes as the file's (float, raw, double data); packed varints
# (int32, int64, uint64 data: 1 byte each, 8 in memory) and strings are counted
TENSOR_DATA_FIELDS = {4, 9, 10}
# packed numbers, one field however many (TensorProto's int32, int64, uint64 data; AttributeProto's floats and ints),
# counted at what they take parsed, `packed_divisor` times less: a varint (1 byte in the file at least) the bytes
# PACKED_FIELDS gives (int32_data 4: counted 8, a 41 MB model of 16.7M fp16 weights, as onnx.helper keeps them, was
# refused), a float (None) its 4. Counted as bytes, 120 MiB of 1-byte int64_data passed the gate and took inspect
# 4.5 GB and 40 s; their count is told by numpy (a varint's last byte is below 0x80)
PACKED_FIELDS = {"tensor": {5: 4, 7: 8, 11: 8}, "attribute": {7: None, 8: 8}}
PACKED_NUMBER = 8
# AttributeProto's floats (7) and ints (8) keys, as onnx writes them: one field a number (proto2, not packed), a tree
# ensemble's millions of them. Past its first RUN_HEAD numbers (walked and counted whole, as a Conv's few pads are),
# a run is skipped by numpy, not walked number by number, and counts as packed numbers do
FLOATS_KEY, INTS_KEY = 0x3D, 0x40
RUN_HEAD, RUN_CHUNK = 16, 1 << 20

_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR = "model", "graph", "node", "attribute", "tensor"
_FUNCTION, _SPARSE, _TRAINING = "function", "sparse tensor", "training info"
# (message, field) -> the message that field holds, walked field by field: the graph, its initializers (dense and
# sparse), a node's attributes' tensors (a Constant node's weights, as some exporters keep them) and sub-graphs (If,
# Loop bodies), local functions' nodes (their Constants' weights) and attributes' defaults, and training info's
# graphs (unwalked, 8 MiB of empty nodes there took inspect 1.7 GB)
INNER = {(_MODEL, 7): _GRAPH, (_GRAPH, 5): _TENSOR, (_GRAPH, 1): _NODE, (_NODE, 5): _ATTRIBUTE,
         (_ATTRIBUTE, 5): _TENSOR, (_ATTRIBUTE, 10): _TENSOR, (_ATTRIBUTE, 6): _GRAPH, (_ATTRIBUTE, 11): _GRAPH,
         (_MODEL, 25): _FUNCTION, (_FUNCTION, 7): _NODE, (_FUNCTION, 11): _ATTRIBUTE, (_GRAPH, 15): _SPARSE,
         (_ATTRIBUTE, 22): _SPARSE, (_ATTRIBUTE, 23): _SPARSE, (_SPARSE, 1): _TENSOR, (_SPARSE, 2): _TENSOR,
         (_MODEL, 20): _TRAINING, (_TRAINING, 1): _GRAPH, (_TRAINING, 2): _GRAPH}
# and every message that holds repeated messages: value infos' types' shapes (their dims), attributes' types, nodes'
# device configurations (sharding specs, sharded dims), graphs' quantization annotations: unwalked, 4M empty dims of
# one graph input (8 MiB, counted as bytes) took inspect +550 MB. Leaves (dims, string pairs) are a field each
_VALUE_INFO, _TYPE, _TYPED, _ELEM, _MAP, _SHAPE = "value info", "type", "tensor type", "element type", "map", "shape"
_DEVICES, _SHARDING, _SHARDED, _ANNOTATION = "device configuration", "sharding", "sharded dim", "annotation"
INNER.update({(_GRAPH, 11): _VALUE_INFO, (_GRAPH, 12): _VALUE_INFO, (_GRAPH, 13): _VALUE_INFO,
              (_FUNCTION, 12): _VALUE_INFO, (_VALUE_INFO, 2): _TYPE, (_ATTRIBUTE, 14): _TYPE, (_ATTRIBUTE, 15): _TYPE,
              (_TYPE, 1): _TYPED, (_TYPE, 8): _TYPED, (_TYPE, 4): _ELEM, (_TYPE, 9): _ELEM, (_TYPE, 5): _MAP,
              (_TYPED, 2): _SHAPE, (_ELEM, 1): _TYPE, (_MAP, 2): _TYPE, (_NODE, 10): _DEVICES,
              (_DEVICES, 2): _SHARDING, (_SHARDING, 4): _SHARDED, (_GRAPH, 14): _ANNOTATION})
# what a field of a walked message counts at least, by wire type: parsed, an empty message (2 bytes) took onnx.load
# 75-100 bytes of memory, and checking the model as much again; real fields (names, attributes) are mostly longer (a
# real graph counts 3-30% more). onnx.load's memory stays ~7-11 bytes a counted byte, and the walk's time bounded by
# `past` / 8 fields: ~4 million empty nodes (8 MiB, 2 bytes each) took inspect 1.7 GB and 13-57 s, 9 s of them this
# walk's, each node one step; every node is walked now, a small one too (127 empty attributes in 256 bytes)
MIN_FIELD_BYTES = {2: 16, 0: 8, 1: 9, 5: 8, 3: 8, 4: 8}
# messages nested deeper are counted unwalked, as if all empty messages (MIN_FIELD_BYTES a 2 bytes): a walk's stack
# stays bounded whatever a file nests (9 If levels deep, 8 MiB of empty nodes counted as bytes took inspect 1.7 GB)
MAX_DEPTH = 24


def graph_bytes(path: Path, past: int, packed_divisor: int = 1) -> int:
    """The bytes of .onnx file `path` besides its tensors' data, counted up to just past `past`, PACKED_FIELDS' a
    `packed_divisor`th. OSError where it cannot be read; ValueError where its bytes are no protobuf message (then
    onnx.load refuses it too)."""
    with open(path, "rb") as f:
        data = _Chunked(f.fileno(), os.fstat(f.fileno()).st_size)
        return _structure(data, 0, len(data), _MODEL, past, packed_divisor) if len(data) else 0


def graph_bytes_of(data: bytes, past: int, packed_divisor: int = 1) -> int:
    """graph_bytes of a file's bytes read once: what is then parsed is the very bytes walked (a file swapped after its
    walk, before onnx.load read it again, was parsed unwalked). ValueError where they are no protobuf message."""
    held = _Held(data)
    return _structure(held, 0, len(held), _MODEL, past, packed_divisor) if len(held) else 0


class _Held:
    """Bytes in memory, read as _Chunked reads a file: one window over them all, never copied."""
    WINDOW, MARGIN = 1 << 16, 32

    def __init__(self, data: bytes):
        self.view = memoryview(data)
        self.size, self.start, self.chunk = len(data), 0, self.view

    def __len__(self) -> int:
        return self.size

    def window(self, at: int) -> tuple[memoryview, int]:
        self.start, self.chunk = at, self.view[at:]
        return self.chunk, at

    def __getitem__(self, span: slice) -> memoryview:
        return self.view[span.start:min(span.stop, self.size)]


class _Chunked:
    """A file's bytes read where the walk goes, a window at a time (pread), not an mmap: an mmap of a file another
    process cut short while it was walked killed edgekit with SIGBUS, no error said. Bytes the file no longer holds
    are a ValueError."""
    WINDOW, MARGIN = 1 << 16, 32  # a field's key and length (two varints, 20 bytes at most) lie inside a window

    def __init__(self, fd: int, size: int):
        self.fd, self.size, self.start, self.chunk = fd, size, 0, b""

    def __len__(self) -> int:
        return self.size

    def window(self, at: int) -> tuple[bytes, int]:
        """The bytes from `at` on (at least MARGIN of them, or up to the file's end), and `at`."""
        self.start, self.chunk = at, os.pread(self.fd, self.WINDOW, at)
        if len(self.chunk) < min(self.MARGIN, self.size - at):
            raise ValueError("the file was cut short while it was read")
        return self.chunk, at

    def __getitem__(self, span: slice) -> bytes:
        wanted = min(span.stop, self.size) - span.start
        got = os.pread(self.fd, wanted, span.start)
        if len(got) < wanted:
            raise ValueError("the file was cut short while it was read")
        return got


def _structure(data: _Chunked | _Held, start: int, end: int, kind: str, past: int, packed_divisor: int,
               depth: int = 0) -> int:
    """The bytes of protobuf message data[start:end] besides tensor data (INNER's messages walked), counted field by
    field until past `past`. Each field's key and length are read from `buf`, the window of the file at `base`."""
    at, counted, last_key, streak = start, 0, None, 0
    buf, base = data.chunk, data.start
    while at < end and counted <= past:
        top = base + len(buf)
        if at < base or at >= top or (at + data.MARGIN > top and top < data.size):
            buf, base = data.window(at)
        field_at = at
        if streak >= RUN_HEAD and buf[at - base] == last_key and kind == _ATTRIBUTE and last_key in (FLOATS_KEY,
                                                                                                       INTS_KEY):
            # no further than the count may reach; at least 32 bytes counted whole before each: the walk's time stays
            # bounded by `past`
            scale = PACKED_NUMBER // 2 if last_key == INTS_KEY else 1  # an int: 2 bytes at least, 8 parsed
            at = _run_end(data, at, min(end, at + (past - counted + 1) * packed_divisor // scale + 16), last_key)
            counted, streak = counted + (at - field_at) * scale // packed_divisor, 0
            continue
        key, at = (buf[at - base], at + 1) if buf[at - base] < 0x80 else _varint(buf, at, base)  # most: 1 byte
        streak, last_key = streak + 1 if key == last_key else 1, key
        field, wire = key >> 3, key & 7
        if wire == 0:
            at = _varint(buf, at, base)[1]
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        elif wire in (3, 4):  # a group's start or end: protobuf keeps an unknown one (its fields walked as ours)
            pass
        elif wire == 2:
            length, at = (buf[at - base], at + 1) if at < end and buf[at - base] < 0x80 else _varint(buf, at, base)
            inner = INNER.get((kind, field))
            if inner is not None and depth >= MAX_DEPTH:  # unwalked: each 2 bytes may be an empty message
                counted, at = counted + at - field_at + length * MIN_FIELD_BYTES[2] // 2, at + length
                continue
            if inner is not None and at + length <= end:
                counted += max(MIN_FIELD_BYTES[2], at - field_at + _structure(
                    data, at, at + length, inner, past - counted, packed_divisor, depth + 1))
                at += length
                continue
            if kind == _TENSOR and field in TENSOR_DATA_FIELDS:
                counted, at = counted + max(MIN_FIELD_BYTES[2], at - field_at), at + length
                continue
            if field in (packed := PACKED_FIELDS.get(kind, {})):
                parsed = length if (size := packed[field]) is None else _varints(
                    data, at, min(end, at + length), (past - counted + 1) * packed_divisor // size + 1) * size
                counted, at = counted + max(MIN_FIELD_BYTES[2], at - field_at + parsed // packed_divisor), at + length
                continue
            at += length
        else:
            raise ValueError("not a protobuf message this reader walks")
        counted += max(MIN_FIELD_BYTES[wire], at - field_at)
    if at > end and counted <= past:
        raise ValueError("a field runs past its message")
    return counted


def _varint(buf: bytes, at: int, base: int) -> tuple[int, int]:
    """The varint at file offset `at` in `buf` (the file's bytes from `base`), and the offset after it."""
    value = shift = 0
    while True:
        if at - base >= len(buf) or shift > 63:
            raise ValueError("a protobuf varint cut short")
        byte = buf[at - base]
        value, shift, at = value | (byte & 0x7F) << shift, shift + 7, at + 1
        if byte < 0x80:
            return value, at


def _varints(data: _Chunked | _Held, at: int, end: int, most: int) -> int:
    """The varints in data[at:end] (packed: their last bytes, below 0x80), counted a chunk at a time up to `most`."""
    count = 0
    while at < end and count < most:
        chunk = np.frombuffer(data[at:min(end, at + RUN_CHUNK)], np.uint8)
        count, at = count + int(np.count_nonzero(chunk < 0x80)), at + RUN_CHUNK
    return count


def _run_end(data: _Chunked | _Held, at: int, stop: int, key: int) -> int:
    """Where the run of unpacked floats or ints (one `key` a number) from `at` ends, looked for no further than
    `stop`, a chunk at a time, from 64 bytes up (short runs, one after another, cost no more than walking them)."""
    size = 64
    while at < stop:
        chunk = np.frombuffer(data[at:min(stop, at + size)], np.uint8)
        size = min(2 * size, RUN_CHUNK)
        done = _floats_in(chunk) if key == FLOATS_KEY else _ints_in(chunk)
        at += done
        if done == 0 or done < len(chunk) - 10:  # a field of another kind, not the chunk's end
            return at
    return at


def _floats_in(chunk) -> int:
    """The bytes of whole `0x3D, 4 bytes` fields at `chunk`'s start."""
    keys = chunk[:len(chunk) - len(chunk) % 5:5]
    other = np.flatnonzero(keys != FLOATS_KEY)
    return 5 * int(other[0] if other.size else keys.size)


def _ints_in(chunk) -> int:
    """The bytes of whole `0x40, varint` fields at `chunk`'s start: bytes below 0x80 alternate key and a varint's
    last byte, each key right after the last varint and at most 10 bytes before its end."""
    low = np.flatnonzero(chunk < 0x80)
    keys, lasts = low[0::2], low[1::2]
    keys = keys[:lasts.size]
    fine = (chunk[keys] == INTS_KEY) & (lasts - keys <= 10)
    fine[1:] &= keys[1:] == lasts[:-1] + 1
    if keys.size:
        fine[0] &= keys[0] == 0
    whole = int(np.argmin(fine)) if not fine.all() else fine.size
    return int(lasts[whole - 1]) + 1 if whole else 0
