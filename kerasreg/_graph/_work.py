"""What one call of a layer costs in multiply-accumulates, as `Work` items.

A call's multiply-accumulates (MACs) are counted the way published counts
are: those of the products with weights (dense and einsum projections,
convolutions of every kind) and of attention's two products of activations;
biases, normalizations, activations and pooling are not counted. Each item
scales with the width of some axes of one variable, so that the cost of a
model with fewer channels follows from the same items (`kerasreg.cost`).
"""

import dataclasses
import math

import keras

from kerasreg._graph._layers import _CONVOLUTIONS
from kerasreg._graph._layers import _SEPARABLE
from kerasreg._graph._layers import _TRANSPOSED

_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


@dataclasses.dataclass(frozen=True)
class Work:
    """MACs of one call that scale with one variable.

    The call makes `scale` multiply-accumulates per entry of `variable`
    (`axes=None`), or per index along `axes` of `variable` (attention:
    `scale` per head, the heads being an axis of the query kernel).
    """

    variable: object
    scale: float
    axes: tuple | None = None


def _positions(tensor, channels_first=False):
    """Positions per example: every axis of `tensor` but the batch and the channels."""
    shape = tuple(tensor.shape)
    spatial = shape[2:] if channels_first else shape[1:-1]
    return math.prod(spatial)


def _channels_first(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_first"


def _first(args, kwargs):
    """The first input of a call, given by position or as `inputs=`."""
    if args:
        return keras.tree.flatten(args)[0]
    return keras.tree.flatten(kwargs.get("inputs", list(kwargs.values())))[0]


def _dense(layer, args, kwargs, outputs):
    return [Work(layer.kernel, _positions(outputs[0]))]


def _convolution(layer, args, kwargs, outputs):
    return [Work(layer.kernel, _positions(outputs[0], _channels_first(layer)))]


def _transposed(layer, args, kwargs, outputs):
    # Each input position meets the whole kernel once.
    return [Work(layer.kernel, _positions(_first(args, kwargs), _channels_first(layer)))]


def _depthwise(layer, args, kwargs, outputs):
    return [Work(layer.kernel, _positions(outputs[0], _channels_first(layer)))]


def _separable(layer, args, kwargs, outputs):
    positions = _positions(outputs[0], _channels_first(layer))
    return [Work(layer.depthwise_kernel, positions), Work(layer.pointwise_kernel, positions)]


def _einsum_dense(layer, args, kwargs, outputs):
    """Each kernel entry is used once per index of the input's letters outside the kernel.

    Counted on an input of batch 1, whose batch axis then multiplies by 1.
    """
    inputs, rest = layer.equation.replace(" ", "").split(",")
    kernel_letters = rest.split("->")[0]
    shape = tuple(_first(args, kwargs).shape)
    named = inputs.replace("...", "")
    broadcast = len(shape) - len(named)
    positions = 1
    if inputs.startswith("..."):
        positions, shape = math.prod(shape[:broadcast]), shape[broadcast:]
    elif "..." in inputs:
        start = inputs.index("...")
        positions = math.prod(shape[start : start + broadcast])
        shape = shape[:start] + shape[start + broadcast :]
    for letter, size in zip(named, shape, strict=True):
        if letter not in kernel_letters:
            positions *= size
    return [Work(layer.kernel, positions)]


def attention_work(layer, query_shape, key_shape):
    """MHA's projections and its two products, for queries and keys of these shapes.

    The shapes are without the batch axis and the features; attention runs
    over `layer._attention_axes` (all of them by default), once per index of
    the other axes.
    """
    queries, keys = math.prod(query_shape), math.prod(key_shape)
    axes = getattr(layer, "_attention_axes", None)
    if axes is None:
        attended = keys
    else:
        attended = math.prod(key_shape[a - 1] for a in axes)
    heads_scale = queries * attended * (layer._key_dim + layer._value_dim)
    return [
        Work(layer._query_dense.kernel, queries),
        Work(layer._key_dense.kernel, keys),
        Work(layer._value_dense.kernel, keys),
        Work(layer._output_dense.kernel, queries),
        Work(layer._query_dense.kernel, heads_scale, axes=(1,)),
    ]


def _multi_head_attention(layer, args, kwargs, outputs):
    names = ("query", "value", "key")
    call = dict(zip(names, args, strict=False))
    call.update({k: v for k, v in kwargs.items() if k in names})
    query, value = call["query"], call["value"]
    return attention_work(layer, tuple(query.shape)[1:-1], tuple(value.shape)[1:-1])


def _recurrent(layer, args, kwargs, outputs):
    """An RNN's input and recurrent kernels, once per time step."""
    cell = layer.cell
    steps = tuple(_first(args, kwargs).shape)[1]
    items = [Work(cell.kernel, steps)]
    if getattr(cell, "recurrent_kernel", None) is not None:
        items.append(Work(cell.recurrent_kernel, steps))
    return items


def _sublayer_work(layer, tokens):
    """A layer made of others that no rule describes: its projections, once per token."""
    items = []
    for sublayer in layer._layers:
        if isinstance(sublayer, keras.layers.MultiHeadAttention):
            items += attention_work(sublayer, (tokens,), (tokens,))
        elif isinstance(sublayer, (keras.layers.Dense, keras.layers.EinsumDense)):
            items.append(Work(sublayer.kernel, tokens))
        elif isinstance(sublayer, _CONVOLUTIONS + _DEPTHWISE):
            items.append(Work(sublayer.kernel, tokens))
        elif isinstance(sublayer, keras.layers.Layer):
            items += _sublayer_work(sublayer, tokens)
    return items


_WORK = [
    ((keras.layers.Dense,), _dense),
    ((keras.layers.EinsumDense,), _einsum_dense),
    (_CONVOLUTIONS, _convolution),
    (_TRANSPOSED, _transposed),
    (_DEPTHWISE, _depthwise),
    (_SEPARABLE, _separable),
    ((keras.layers.MultiHeadAttention,), _multi_head_attention),
    ((keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN), _recurrent),
]


def work(layer, args, kwargs, outputs):
    """The `Work` items of one call of `layer` on `args` and `kwargs`, giving `outputs`.

    Layers without a rule here: a `kernel` counts once per output position;
    a layer made of other layers (KerasHub's transformer blocks) counts its
    projections once per position of its output (per token), its attention
    over as many positions.
    """
    for types, rule in _WORK:
        if isinstance(layer, types):
            return rule(layer, args, kwargs, outputs)
    if not isinstance(layer, keras.layers.Layer) or not outputs:
        return []
    kernel = getattr(layer, "kernel", None)
    if isinstance(kernel, keras.Variable):
        return [Work(kernel, _positions(outputs[0], _channels_first(layer)))]
    if getattr(layer, "_layers", None):
        return _sublayer_work(layer, _positions(outputs[0]))
    return []
