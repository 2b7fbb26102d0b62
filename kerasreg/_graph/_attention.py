"""The rules of layers that join channels themselves: `Embedding`, `MultiHeadAttention`
and KerasHub's transformer layers (whose rebuilders are in `compaction._keras_hub`)."""

import keras

from kerasreg._graph._rule import COMPOSITE
from kerasreg._graph._rule import READS
from kerasreg._graph._rule import WRITES
from kerasreg._graph._rule import ChannelRule
from kerasreg._graph._rule import _opaque
from kerasreg._graph._rule import describe
from kerasreg._graph._rule import sub_path
from kerasreg._graph._rule import weight


def _embedding(layer, node, rank):
    if len(node.input_tensors) != 1 or len(node.outputs) != 1:
        return _opaque("is called on several tensors")
    table = weight(layer, "embeddings")

    def connect(channels, path):
        cols = channels.space(("cols", id(layer)), table.shape[1])
        channels.join(channels.tensor(node.outputs[0]), cols, table.shape[1])
        if channels.first_time(layer):
            channels.add(cols, path, table, 1, WRITES)

    return ChannelRule(COMPOSITE, connect=connect)


def attention(channels, path, layer, inputs, output):
    """`MultiHeadAttention`: its inputs read, its output written, one group per head.

    `inputs` maps `"query"`, `"value"` and `"key"` to the tensors the call
    reads; `output` is the tensor it writes.
    """
    first = channels.first_time(layer)
    heads = channels.space(("heads", id(layer)), layer.num_heads)
    for name in ("query", "value", "key"):
        dense = getattr(layer, f"_{name}_dense")
        kernel, bias = weight(dense, "kernel"), weight(dense, "bias")
        rows = channels.space(("rows", id(dense)), kernel.shape[0])
        channels.join(channels.tensor(inputs[name]), rows, kernel.shape[0])
        if first:
            channels.add(rows, sub_path(path, dense), kernel, 0, READS)
            channels.add(heads, sub_path(path, dense), kernel, 1, WRITES)
            if bias is not None:
                channels.add(heads, sub_path(path, dense), bias, 0, WRITES)
    dense = layer._output_dense
    kernel, bias = weight(dense, "kernel"), weight(dense, "bias")
    cols = channels.space(("cols", id(dense)), kernel.shape[-1])
    channels.join(channels.tensor(output), cols, kernel.shape[-1])
    if first:
        channels.add(heads, sub_path(path, dense), kernel, 0, READS)
        channels.add(cols, sub_path(path, dense), kernel, kernel.ndim - 1, WRITES)
        if bias is not None:
            channels.add(cols, sub_path(path, dense), bias, 0, WRITES)


def _attention_projections(layer):
    return [
        getattr(layer, f"_{name}_dense")
        for name in ("query", "key", "value", "output")
        if isinstance(getattr(layer, f"_{name}_dense", None), keras.layers.EinsumDense)
    ]


def _multi_head_attention(layer, node, rank):
    if type(layer) is not keras.layers.MultiHeadAttention:
        return _opaque(f"a subclass of {type(layer).__mro__[1].__name__}")
    names = ("query", "value", "key")
    call = dict(zip(names, node.arguments.args, strict=False))
    call.update({k: v for k, v in node.arguments.kwargs.items() if k in names})
    if call.get("key") is None:
        call["key"] = call["value"]

    def connect(channels, path):
        attention(channels, path, layer, call, node.outputs[0])
        for extra in node.outputs[1:]:  # attention scores
            channels.pin_tensor(extra, f"{describe(layer)} returns its attention scores")

    return ChannelRule(COMPOSITE, connect=connect)


def _resize_attention(layer, config, width):
    config["num_heads"] = width(layer._query_dense.kernel, 1)
    config["output_shape"] = width(layer._output_dense.kernel)
    return config


def _resize_embedding(layer, config, width):
    config["output_dim"] = width(layer.embeddings)
    return config
