"""How functional models are wired, and what each operation does to channels.

Keras records a functional model as a graph of nodes, one per call of an
operation: a layer, or a `keras.ops` function called on symbolic tensors
(`keras.ops.relu(x)`, `x + y`, ...). `Graph` indexes the nodes of one model
for walking in either direction. `Graph.rule(node)` says how a node passes
the channels (the last axis) of its inputs on to its output; the rules come
from two tables, `_LAYER_RULES` (layers, by class) and `_OP_RULES`
(`keras.ops` operations, by class name). A new kind of layer is one entry
there; whatever is in neither table is opaque.

This is the one module that reads Keras' private graph attributes
(`_nodes_by_depth`, `Node.arguments`, a Sequential model's `_functional`).
"""

import dataclasses
import inspect
import re
from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from kerasreg._validation import InvalidArgumentError
from kerasreg.layers import FeatureGate

# What a node does to the channels (the last axis) of its inputs.
COMPUTE = "compute"  # a Dense or convolution kernel makes new channels
ELEMENTWISE = "elementwise"  # one function of each entry alone, the same for all channels
PER_CHANNEL = "per_channel"  # each channel alone, with its own weights (sliced with it)
POOLING = "pooling"  # positions pooled or padded; channels keep their index
FLATTEN = "flatten"  # one axis, channels fastest: channel c to features c, c + C, c + 2C, ...
MERGE = "merge"  # several inputs of one shape, entry by entry: their channels are coupled
CONCATENATE = "concatenate"  # the channels of several inputs, one after the other
COMPOSITE = "composite"  # a layer of several projections that joins channels itself
OPAQUE = "opaque"  # anything else


@dataclasses.dataclass(frozen=True)
class Compute:
    """The weights of a layer that makes new channels from the channels it reads.

    Attributes:
        kernel: The kernel variable.
        in_axis: Its axis of input channels (rows).
        out_axis: Its axis of output channels (columns).
        bias: The bias variable (one entry per output channel), or `None`.
        reads: Other `(variable, axis)` pairs with one slice per input
            channel (a separable convolution's depthwise kernel).
        pads: Whether a constant input meets padding, so that only a
            constant 0 folds into the bias exactly.
        fold: `(constants per input channel, NaN where not folded) -> bias
            change per output channel`.
        bias_key: The config key that gives the layer a bias when it has
            none (`"use_bias"`), or `None` when it cannot have one.
        groups: A grouped convolution's groups: kernel row `r` reads input
            channels `r`, `r + rows`, ... (one per group) and the units at
            the same place in every group go together, so the groups keep
            one size.
    """

    kernel: object
    in_axis: int
    out_axis: int
    bias: object = None
    reads: tuple = ()
    pads: bool = False
    fold: Callable | None = None
    bias_key: str | None = "use_bias"
    groups: int = 1


@dataclasses.dataclass(frozen=True)
class ChannelRule:
    """How one node passes the channels of its inputs on to its output.

    Attributes:
        kind: One of the kinds above.
        reason: For `COMPUTE`, why the layer cannot be rewritten (`None` if
            it can); for the other kinds that compaction does not follow,
            what the node does, in words.
        values: Maps per-channel constants (float64, NaN where a channel is
            not constant) to the constants at the output. For `COMPUTE`, the
            layer's activation, or `None` when that mixes units.
        compute: For `COMPUTE`, its weights (`Compute`).
        carries: For `PER_CHANNEL`, the `(variable, axis)` pairs that hold
            one slice per channel.
        keeps_zero: For `PER_CHANNEL`, whether a channel whose carried
            weights are zero (moving statistics aside) outputs 0 for 0.
        connect: For `COMPOSITE`, `(channels, path) -> None`: joins the
            channels of the node's inputs, outputs and weights itself.
        inexact: For `OPAQUE`, whether it acts on each channel with
            `carries` once its statistics are let change (a normalization
            over the channels): `compact(exact=False)` cuts through it.
        pads: For `POOLING`, whether it only adds zeros around its input
            (`ZeroPadding`): a compute layer right after it reads a
            constant channel as a padded one.
    """

    kind: str
    reason: str | None = None
    values: Callable | None = None
    compute: Compute | None = None
    carries: tuple = ()
    keeps_zero: bool = True
    connect: Callable | None = None
    pads: bool = False
    inexact: bool = False


# Activations that act on each entry alone: removing a unit does not change
# the others (softmax, for one, would renormalize).
ELEMENTWISE_ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "celu",
        "gelu",
        "silu",
        "swish",
        "sigmoid",
        "hard_sigmoid",
        "hard_silu",
        "hard_swish",
        "tanh",
        "hard_tanh",
        "softplus",
        "softsign",
        "mish",
        "exponential",
        "squareplus",
        "sparse_plus",
        "tanh_shrink",
        "soft_shrink",
        "hard_shrink",
    }
)


def activation_name(activation):
    """The registered name of an activation function, or `None`."""
    try:
        name = keras.activations.serialize(activation)
    except (ValueError, TypeError):
        return None
    return name if isinstance(name, str) else None


def evaluate(fn, values):
    """`fn` on per-channel constants; NaN (not constant) stays NaN."""
    known = ~np.isnan(values)
    # Padded to a power of two: JAX compiles `fn` once per shape.
    x = np.zeros((1, 1 << max(values.size - 1, 0).bit_length()), "float32")
    x[0, : values.size] = np.where(known, values, 0.0)
    out = np.asarray(ops.convert_to_numpy(fn(ops.convert_to_tensor(x))), dtype="float64")
    return np.where(known, out.reshape(-1)[: values.size], np.nan)


def _passthrough(values):
    return values


def _zero_only(values):
    """Padding: a constant 0 stays 0; any other constant meets the padding."""
    return np.where(values == 0, 0.0, np.nan)


def describe(operation):
    """`'name' (Type)` for a layer, `'name' (keras.ops Type)` for an operation."""
    kind = type(operation).__name__
    if not isinstance(operation, keras.layers.Layer):
        kind = f"keras.ops {kind}"
    return f"'{operation.name}' ({kind})"


def _opaque(reason):
    return ChannelRule(OPAQUE, reason)


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _single_input(factory):
    """Rules for nodes that read one tensor; a call on several is opaque."""

    def rule(operation, node, rank):
        if len(node.input_tensors) != 1 or len(node.outputs) != 1:
            return _opaque("is called on several tensors")
        return factory(operation, node, rank)

    return rule


# What a layer's weights do for a channel (`GroupMember.role`).
WRITES = "writes"  # a producer's weights: its output channel (kernel column, bias)
READS = "reads"  # a consumer's weights: its input channel (kernel rows)
CARRIES = "carries"  # weights of one channel on its way (normalization, depthwise, gate)


def _numpy(variable):
    return np.asarray(ops.convert_to_numpy(variable), dtype="float64")


def weight(layer, name):
    """The variable of `layer` called `name` (the last part of its path), or `None`."""
    for variable in layer.weights:
        if variable.path.split("/")[-1] == name or variable.name == name:
            return variable
    return None


def entrywise(activation):
    """Whether `activation` computes each entry from that entry alone.

    Keras' named activations are looked up; another callable (a model
    library's own `gelu_approximate`, say) is probed: changing half of the
    entries of a random input must leave the other half of the output
    unchanged, both ways.
    """
    name = activation_name(activation)
    if name is not None:
        return name in ELEMENTWISE_ACTIVATIONS
    rng = np.random.default_rng(0)
    x = rng.normal(scale=3.0, size=(2, 16)).astype("float32")
    half = np.arange(16) % 2 == 0
    try:
        y = np.asarray(ops.convert_to_numpy(activation(x)))
        for changed in (half, ~half):
            moved = x.copy()
            moved[:, changed] += rng.normal(size=(2, int(changed.sum()))).astype("float32")
            z = np.asarray(ops.convert_to_numpy(activation(moved)))
            if z.shape != y.shape or not np.array_equal(z[:, ~changed], y[:, ~changed]):
                return False
    except Exception:  # an activation that cannot be probed counts as mixing
        return False
    return True


def zero_to_zero(fn, width=1):
    """Per entry, whether `fn` (of per-channel constants) maps 0 to exactly 0."""
    try:
        out = np.asarray(fn(np.zeros(width)), dtype="float64")
    except Exception:  # a function that cannot be evaluated counts as not
        return np.zeros(width, bool)
    return np.broadcast_to(out == 0, (width,))


def activation_keeps_zero(activation):
    """Whether `activation` (or none) maps 0 to exactly 0."""
    if activation is None:
        return True
    return bool(zero_to_zero(lambda v: evaluate(activation, v))[0])


def _activation_values(activation):
    """The constants map of an activation, or `None` when it mixes units."""
    if activation is None:
        return _passthrough
    if activation_name(activation) in ELEMENTWISE_ACTIVATIONS or entrywise(activation):
        return lambda v: evaluate(activation, v)
    return None


def _pads(layer):
    """Whether a constant input to a convolution meets padding somewhere."""
    if getattr(layer, "padding", "valid") == "valid":
        return False
    return any(k != 1 for k in layer.kernel_size)


def _kernel_fold(kernel, in_axis, out_axis, scale=None):
    """Folds constant input channels into a bias: each times its kernel rows' sum."""

    def fold(constants):
        k = np.moveaxis(_numpy(kernel), (in_axis, out_axis), (-2, -1))
        rows = k.reshape(-1, k.shape[-2], k.shape[-1]).sum(axis=0)
        if scale is not None:
            rows = rows * scale()[:, None]
        return np.where(np.isnan(constants), 0.0, constants) @ rows

    return fold


# Layers.


def _why_not_rewritten(layer, exact_types):
    if type(layer) not in exact_types:
        return f"a subclass of {type(layer).__mro__[1].__name__}"
    if getattr(layer, "quantization_mode", None):
        return "quantized"
    if getattr(layer, "lora_enabled", False):
        return "LoRA enabled"
    if not _channels_last(layer):
        return "channels_first"
    return None


_DENSE = (keras.layers.Dense,)
_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSED = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


@_single_input
def _compute(layer, node, rank):
    reason = _why_not_rewritten(layer, _DENSE + _CONVOLUTIONS + _TRANSPOSED + _SEPARABLE)
    bias = layer.bias if layer.use_bias else None
    if isinstance(layer, _SEPARABLE):
        if layer.depth_multiplier != 1:
            reason = reason or "makes several channels of each (depth_multiplier > 1)"
        depthwise = layer.depthwise_kernel
        kernel = layer.pointwise_kernel
        in_axis, out_axis = kernel.ndim - 2, kernel.ndim - 1
        spatial = tuple(range(depthwise.ndim - 2))
        compute = Compute(
            kernel,
            in_axis,
            out_axis,
            bias,
            reads=((depthwise, depthwise.ndim - 2),),
            pads=_pads(layer),
            fold=_kernel_fold(
                kernel, in_axis, out_axis, lambda: _numpy(depthwise).sum(axis=spatial)[:, 0]
            ),
        )
    elif isinstance(layer, _TRANSPOSED):
        kernel = layer.kernel
        in_axis, out_axis = kernel.ndim - 1, kernel.ndim - 2
        # Each output position sums a different number of kernel taps.
        pads = any(k != 1 for k in layer.kernel_size) or any(s != 1 for s in layer.strides)
        compute = Compute(kernel, in_axis, out_axis, bias, pads=pads)
        compute = dataclasses.replace(compute, fold=_kernel_fold(kernel, in_axis, out_axis))
    else:
        kernel = layer.kernel
        in_axis, out_axis = kernel.ndim - 2, kernel.ndim - 1
        groups = getattr(layer, "groups", 1)
        compute = Compute(
            kernel,
            in_axis,
            out_axis,
            bias,
            pads=not isinstance(layer, _DENSE) and _pads(layer),
            # A grouped convolution folds constant zeros only.
            fold=_kernel_fold(kernel, in_axis, out_axis) if groups == 1 else None,
            groups=groups,
        )
    return ChannelRule(COMPUTE, reason, _activation_values(layer.activation), compute=compute)


def _last_axis_einsum(layer):
    """Whether an `EinsumDense` maps the last axis to the last axis, like `Dense`."""
    match = re.fullmatch(r"([a-z.]*)([a-z]),([a-z])([a-z])->([a-z.]*)([a-z])", layer.equation)
    if not match:
        return False
    batch_in, contracted, k_in, k_out, batch_out, out = match.groups()
    return batch_in == batch_out and contracted == k_in and k_out == out


@_single_input
def _einsum_dense(layer, node, rank):
    if not _last_axis_einsum(layer):
        return _opaque(f"computes {layer.equation!r}, not the last axis from the last axis")
    kernel, bias = weight(layer, "kernel"), weight(layer, "bias")
    equation_out = layer.equation.split("->")[1]
    if bias is not None and (bias.ndim != 1 or layer.bias_axes != equation_out[-1]):
        return _opaque(f"has a bias over axes {layer.bias_axes!r}")
    reason = _why_not_rewritten(layer, (keras.layers.EinsumDense,))
    compute = Compute(kernel, 0, 1, bias, fold=_kernel_fold(kernel, 0, 1), bias_key=None)
    if bias is None:
        compute = dataclasses.replace(compute, fold=None)
    return ChannelRule(COMPUTE, reason, _activation_values(layer.activation), compute=compute)


@_single_input
def _identity(layer, node, rank):
    return ChannelRule(ELEMENTWISE, values=_passthrough)


@_single_input
def _activation(layer, node, rank):
    if isinstance(layer, keras.layers.Activation):
        name = activation_name(layer.activation)
        if name not in ELEMENTWISE_ACTIVATIONS:
            return _opaque(f"has activation {name!r}, which mixes units")
    return ChannelRule(ELEMENTWISE, values=lambda v: evaluate(layer, v))


@_single_input
def _rescaling(layer, node, rank):
    scale, offset = np.asarray(layer.scale), np.asarray(layer.offset)
    if scale.size != 1 or offset.size != 1:
        return _opaque("scales each channel by its own factor")
    return ChannelRule(
        ELEMENTWISE, values=lambda v: v * float(scale.reshape(-1)[0]) + float(offset.reshape(-1)[0])
    )


@_single_input
def _batch_normalization(layer, node, rank):
    if not (isinstance(layer.axis, int) and layer.axis % rank == rank - 1):
        return _opaque("normalizes over other axes")

    def values(v):
        weights = {w.name: _numpy(w) for w in layer.weights}
        scale = weights.get("gamma", 1.0) / np.sqrt(weights["moving_variance"] + layer.epsilon)
        offset = weights.get("beta", 0.0) + np.zeros(v.shape)
        # A channel with a zero scale outputs its offset, whatever it reads.
        return np.where(scale == 0, offset, (v - weights["moving_mean"]) * scale + offset)

    carries = tuple((v, v.ndim - 1) for v in layer.weights if v.ndim >= 1)
    return ChannelRule(PER_CHANNEL, values=values, carries=carries, keeps_zero=bool(layer.scale))


@_single_input
def _feature_gate(layer, node, rank):
    if layer._axes != (rank - 1,):
        return _opaque("gates other axes")

    def values(v):
        gates = _numpy(layer.gates)
        return np.where(gates == 0, 0.0, v * gates)

    return ChannelRule(PER_CHANNEL, values=values, carries=((layer.gates, 0),))


@_single_input
def _layer_scale(layer, node, rank):
    gamma = getattr(layer, "gamma", None)
    if gamma is None or gamma.ndim != 1:
        return _opaque("scales other axes")
    return ChannelRule(
        PER_CHANNEL, values=lambda v: v * _numpy(gamma), carries=((gamma, 0),), keeps_zero=True
    )


def _per_channel_convolution(layer, kernel, channel_axis):
    """A convolution that makes each output channel from its own input channel."""
    if getattr(layer, "quantization_mode", None):
        return _opaque("quantized")
    values_of_activation = _activation_values(layer.activation)
    if values_of_activation is None:
        return _opaque("has an activation that mixes units")

    def values(v):
        k = np.moveaxis(_numpy(kernel), channel_axis, -1)
        k = k.reshape(-1, k.shape[-1])
        bias = _numpy(layer.bias) if layer.use_bias else np.zeros(v.shape)
        if _pads(layer):
            # A constant 0 is indistinguishable from the padding; another is not.
            out = np.where(v == 0, bias, np.nan)
        else:
            out = v * k.sum(axis=0) + bias
        # A channel whose kernel is zero outputs its bias, whatever it reads.
        out = np.where(np.any(k != 0, axis=0), out, bias)
        return values_of_activation(out)

    carries = ((kernel, channel_axis % kernel.ndim),)
    if layer.use_bias:
        carries += ((layer.bias, 0),)
    return ChannelRule(
        PER_CHANNEL,
        values=values,
        carries=carries,
        keeps_zero=activation_keeps_zero(layer.activation),
    )


@_single_input
def _depthwise_convolution(layer, node, rank):
    if not _channels_last(layer):
        return _opaque("channels_first")
    if layer.depth_multiplier != 1:
        return _opaque("makes several channels of each")
    return _per_channel_convolution(layer, layer.kernel, layer.kernel.ndim - 2)


def _convolution(layer, node, rank):
    groups = getattr(layer, "groups", 1)
    channels = node.input_tensors[0].shape[-1] if len(node.input_tensors) == 1 else None
    if groups > 1 and groups == channels == layer.filters and _channels_last(layer):
        # A depthwise convolution written as a grouped one (ConvNeXt).
        return _per_channel_convolution(layer, layer.kernel, layer.kernel.ndim - 1)
    return _compute(layer, node, rank)


@_single_input
def _local_pooling(layer, node, rank):
    if not _channels_last(layer):
        return _opaque("channels_first")
    # With padding, a constant meets the border.
    return ChannelRule(POOLING, values=_passthrough if layer.padding == "valid" else _zero_only)


@_single_input
def _global_pooling(layer, node, rank):
    if not _channels_last(layer):
        return _opaque("channels_first")
    return ChannelRule(POOLING, values=_passthrough)


@_single_input
def _zero_padding(layer, node, rank):
    if not _channels_last(layer):
        return _opaque("channels_first")
    return ChannelRule(POOLING, values=_zero_only, pads=True)


@_single_input
def _flatten(layer, node, rank):
    if not _channels_last(layer):
        return _opaque("channels_first")
    width = node.outputs[0].shape[-1]
    return ChannelRule(FLATTEN, values=lambda v: v[np.arange(width) % v.size])


def _same_last_axis(node):
    """Whether a reshape keeps the last axis as it is (positions move, channels do not)."""
    shape_in, shape_out = node.input_tensors[0].shape, node.outputs[0].shape
    return (
        len(shape_in) >= 2
        and len(shape_out) >= 2
        and shape_in[-1] is not None
        and shape_in[-1] == shape_out[-1]
    )


@_single_input
def _reshape(layer, node, rank):
    if isinstance(layer, keras.layers.Reshape) and _same_last_axis(node):
        return ChannelRule(POOLING, values=_passthrough)
    return _opaque("changes the layout of its input")


def _broadcast_to_channels(node):
    """Whether the inputs of a merge differ only in axes other than the channels."""
    shapes = [tuple(t.shape) for t in node.input_tensors]
    widths = {s[-1] if s else None for s in shapes}
    return len(widths) == 1 and None not in widths and len({len(s) for s in shapes}) == 1


def _merge_layer(layer, node, rank):
    shapes = {tuple(t.shape) for t in node.input_tensors}
    if len(shapes) != 1 and not _broadcast_to_channels(node):
        return _opaque("broadcasts inputs of different shapes")
    return ChannelRule(MERGE, "joins several inputs entry by entry")


def _concatenate_layer(layer, node, rank):
    if layer.axis % rank != rank - 1:
        return _opaque("concatenates along another axis than the channels")
    return ChannelRule(CONCATENATE, "concatenates the channels of several inputs")


def _nested_model(model, node, rank):
    return _opaque("is a nested model (compacted on its own)")


def _layout(layer, node, rank):
    return _opaque("changes the layout of its input")


def _normalization(layer, node, rank):
    reason = "normalizes over the channels: its statistics change when a channel goes"
    axes = getattr(layer, "axis", None)
    axes = (axes,) if isinstance(axes, int) else tuple(axes or ())
    if (
        not isinstance(layer, keras.layers.LayerNormalization)
        or len(node.input_tensors) != 1
        or tuple(a % rank for a in axes) != (rank - 1,)
    ):
        return _opaque(reason)
    # Exact compaction stops here; `compact(exact=False)` cuts through it,
    # slicing its scale and offset, and reports how the outputs change.
    carries = tuple((v, v.ndim - 1) for v in layer.weights if v.ndim == 1)
    return ChannelRule(OPAQUE, reason, values=_unknown, carries=carries, inexact=True)


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


def sub_path(path, layer):
    return f"{path}/{layer.name}" if path else layer.name


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


def _keras_hub_rule(connect_name):
    """The rule of a KerasHub transformer layer: `_keras_hub`'s connect function."""

    def rule(layer, node, rank):
        from kerasreg.compaction import _keras_hub

        if len(node.outputs) != 1:
            return _opaque("returns several tensors")
        connect = getattr(_keras_hub, connect_name)
        return ChannelRule(
            COMPOSITE, connect=lambda channels, path: connect(channels, path, layer, node)
        )

    return rule


def _kept_or_all(kept, variable, axis):
    return np.asarray(kept(variable, axis), bool)


def _shrink_encoder(layer, kept):
    from kerasreg.compaction import _keras_hub

    return _keras_hub.shrink_transformer_encoder(
        layer,
        _kept_or_all(kept, layer._self_attention_layer._query_dense.kernel, 1),
        _kept_or_all(kept, layer._feedforward_intermediate_dense.kernel, 1),
    )


def _shrink_decoder(layer, kept):
    from kerasreg.compaction import _keras_hub

    cross = getattr(layer, "_cross_attention_layer", None)
    return _keras_hub.shrink_transformer_decoder(
        layer,
        _kept_or_all(kept, layer._self_attention_layer._query_dense.kernel, 1),
        None if cross is None else _kept_or_all(kept, cross._query_dense.kernel, 1),
        _kept_or_all(kept, layer._feedforward_intermediate_dense.kernel, 1),
    )


def _shrink_vit_encoder(layer, kept):
    from kerasreg.compaction import _keras_hub

    blocks = list(layer.encoder_layers)
    return _keras_hub.shrink_vit_encoder(
        layer,
        [_kept_or_all(kept, b.mha._query_dense.kernel, 1) for b in blocks],
        [_kept_or_all(kept, b.mlp.dense_1.kernel, 1) for b in blocks],
    )


def _vit_patching_config(layer):
    from kerasreg.compaction import _keras_hub

    return _keras_hub.rebuildable_config(layer)


def _width(tensor):
    shape = getattr(tensor, "shape", None)
    if not shape or shape[-1] is None:
        return 0
    return int(shape[-1])


# Config changes for new weight shapes: `(layer, config, width) -> config`,
# where `width(variable, axis=-1)` is the new length of that axis.


def _resize_units(layer, config, width):
    if isinstance(layer, _SEPARABLE):
        config["filters"] = width(layer.pointwise_kernel)
    elif isinstance(layer, _TRANSPOSED):
        config["filters"] = width(layer.kernel, -2)
    elif "filters" in config:
        config["filters"] = width(layer.kernel)
        if config.get("groups", 1) > 1 and config["groups"] == layer.filters:
            config["groups"] = config["filters"]  # depthwise as a grouped convolution
    elif "units" in config:
        config["units"] = width(layer.kernel)
    return config


def _resize_einsum_dense(layer, config, width):
    output_shape = config["output_shape"]
    if isinstance(output_shape, int):
        config["output_shape"] = width(layer.kernel)
    else:
        config["output_shape"] = list(output_shape[:-1]) + [width(layer.kernel)]
    return config


def _resize_attention(layer, config, width):
    config["num_heads"] = width(layer._query_dense.kernel, 1)
    config["output_shape"] = width(layer._output_dense.kernel)
    return config


def _resize_embedding(layer, config, width):
    config["output_dim"] = width(layer.embeddings)
    return config


def _resize_layer_scale(layer, config, width):
    config["projection_dim"] = width(layer.gamma)
    return config


def _resize_gate(layer, config, width, kept=None):
    if config.get("feature_names") and kept is not None:
        keep = kept(layer.gates, 0)
        config["feature_names"] = [
            n for n, k in zip(config["feature_names"], keep, strict=True) if k
        ]
    return config


def _keep(layer, config, width):
    return config


@dataclasses.dataclass(frozen=True)
class LayerRule:
    """What kerasreg knows of one layer type.

    Attributes:
        rule: `(layer, node, rank) -> ChannelRule` for one call.
        resize: `(layer, config, width) -> config`, its config for new
            weight shapes (`width(variable, axis=-1)`: the new length).
        projections: `layer -> sublayers` whose regularizers its config
            holds as one argument (`MultiHeadAttention`'s projections), or
            `None`.
        shrink: `(layer, kept) -> new layer` for layers whose config cannot
            say their new shapes (`kept(variable, axis)`: the mask of the
            entries that stay); the new layer is built, its weights set.
        config: `layer -> config` where its own `get_config()` cannot
            rebuild it.
    """

    rule: Callable
    resize: Callable = _keep
    projections: Callable | None = None
    shrink: Callable | None = None
    config: Callable | None = None


def _is_keras_hub(layer, name):
    cls = type(layer)
    return cls.__name__ == name and cls.__module__.split(".")[0] == "keras_hub"


def _is_convnext_layer_scale(layer):
    cls = type(layer)
    return cls.__name__ == "LayerScale" and cls.__module__.endswith("applications.convnext")


# Each entry: classes (or a predicate), and what kerasreg knows of them.
# Checked in order: user rules first, then isinstance on these.
_LAYER_RULES = [
    ((keras.layers.Dense,), LayerRule(_compute, _resize_units)),
    ((keras.layers.EinsumDense,), LayerRule(_einsum_dense, _resize_einsum_dense)),
    (_CONVOLUTIONS, LayerRule(_convolution, _resize_units)),
    (_TRANSPOSED + _SEPARABLE, LayerRule(_compute, _resize_units)),
    (
        (keras.layers.MultiHeadAttention,),
        LayerRule(_multi_head_attention, _resize_attention, projections=_attention_projections),
    ),
    ((keras.layers.Embedding,), LayerRule(_embedding, _resize_embedding)),
    (
        (
            keras.layers.Dropout,
            keras.layers.SpatialDropout1D,
            keras.layers.SpatialDropout2D,
            keras.layers.SpatialDropout3D,
            keras.layers.GaussianNoise,
            keras.layers.GaussianDropout,
            keras.layers.AlphaDropout,
            keras.layers.Identity,
        ),
        LayerRule(_identity),
    ),
    (
        (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU),
        LayerRule(_activation),
    ),
    ((keras.layers.Rescaling,), LayerRule(_rescaling)),
    ((keras.layers.BatchNormalization,), LayerRule(_batch_normalization)),
    ((FeatureGate,), LayerRule(_feature_gate, _resize_gate)),
    (
        (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D),
        LayerRule(_depthwise_convolution),
    ),
    (
        (
            keras.layers.MaxPooling1D,
            keras.layers.MaxPooling2D,
            keras.layers.MaxPooling3D,
            keras.layers.AveragePooling1D,
            keras.layers.AveragePooling2D,
            keras.layers.AveragePooling3D,
        ),
        LayerRule(_local_pooling),
    ),
    (
        (
            keras.layers.GlobalAveragePooling1D,
            keras.layers.GlobalAveragePooling2D,
            keras.layers.GlobalAveragePooling3D,
            keras.layers.GlobalMaxPooling1D,
            keras.layers.GlobalMaxPooling2D,
            keras.layers.GlobalMaxPooling3D,
        ),
        LayerRule(_global_pooling),
    ),
    (
        (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D),
        LayerRule(_zero_padding),
    ),
    ((keras.layers.Flatten,), LayerRule(_flatten)),
    (
        (
            keras.layers.Add,
            keras.layers.Subtract,
            keras.layers.Multiply,
            keras.layers.Maximum,
            keras.layers.Minimum,
            keras.layers.Average,
        ),
        LayerRule(_merge_layer),
    ),
    ((keras.layers.Concatenate,), LayerRule(_concatenate_layer)),
    ((keras.layers.Reshape,), LayerRule(_reshape)),
    ((keras.layers.Permute, keras.layers.RepeatVector), LayerRule(_layout)),
    (
        (
            keras.layers.LayerNormalization,
            keras.layers.GroupNormalization,
            keras.layers.UnitNormalization,
        ),
        LayerRule(_normalization),
    ),
    ((keras.Model,), LayerRule(_nested_model)),
    (
        lambda layer: (
            _is_keras_hub(layer, "TransformerEncoder")
            or type(layer).__name__ == "CompactTransformerEncoder"
        ),
        LayerRule(_keras_hub_rule("connect_transformer_encoder"), shrink=_shrink_encoder),
    ),
    (
        lambda layer: (
            _is_keras_hub(layer, "TransformerDecoder")
            or type(layer).__name__ == "CompactTransformerDecoder"
        ),
        LayerRule(_keras_hub_rule("connect_transformer_decoder"), shrink=_shrink_decoder),
    ),
    (
        lambda layer: _is_keras_hub(layer, "ViTEncoder"),
        LayerRule(_keras_hub_rule("connect_vit_encoder"), shrink=_shrink_vit_encoder),
    ),
    (
        lambda layer: _is_keras_hub(layer, "ViTPatchingAndEmbedding"),
        LayerRule(lambda layer, node, rank: _opaque("embeds patches"), config=_vit_patching_config),
    ),
    (_is_convnext_layer_scale, LayerRule(_layer_scale, _resize_layer_scale)),
]
_USER_RULES = []


def layer_rule(layer):
    """The `LayerRule` of `layer`'s type, or `None` when no rule knows it."""
    for types, rule in _USER_RULES + _LAYER_RULES:
        if isinstance(types, tuple):
            if isinstance(layer, types):
                return rule
        elif types(layer):
            return rule
    return None


_KINDS = {
    "compute": COMPUTE,
    "per_channel": PER_CHANNEL,
    "elementwise": ELEMENTWISE,
    "opaque": OPAQUE,
}


def _user_rule(layer_class, kind, kernel, bias, units, activation, carries, values, reason):
    """The `LayerRule` of a rule registered with `register_layer_rule`."""

    def refuse(argument, expected, layer):
        raise InvalidArgumentError(
            f"Invalid value for argument `{argument}` of the rule registered for "
            f"{layer_class.__name__}: expected {expected}. Received: layer '{layer.name}'"
        )

    def variable(layer, name, argument):
        found = weight(layer, name)
        if found is None:
            refuse(argument, f"the name of one of its weights ({name!r} is none of them)", layer)
        return found

    @_single_input
    def rule(layer, node, rank):
        width = _width(node.input_tensors[0])
        if kind == "opaque":
            return _opaque(reason or "is opaque (its registered rule says so)")
        follow = _unknown if values is None else (lambda v: np.asarray(values(layer, v), "float64"))
        if kind == "elementwise":
            return ChannelRule(ELEMENTWISE, values=follow)
        if kind == "per_channel":
            pairs = []
            for name in carries:
                found = variable(layer, name, "carries")
                if found.ndim < 1 or found.shape[-1] != width:
                    refuse("carries", f"weights whose last axis is the {width} channels", layer)
                pairs.append((found, found.ndim - 1))
            return ChannelRule(PER_CHANNEL, values=follow, carries=tuple(pairs))
        k = variable(layer, kernel, "kernel")
        if k.ndim < 2 or k.shape[-2] != width:
            refuse("kernel", f"a kernel of shape (..., {width}, units)", layer)
        b = variable(layer, bias, "bias") if bias and weight(layer, bias) is not None else None
        if b is not None and tuple(b.shape) != (k.shape[-1],):
            refuse("bias", f"a bias of shape ({k.shape[-1]},)", layer)
        fn = getattr(layer, activation, None) if activation else None
        compute = Compute(
            k,
            k.ndim - 2,
            k.ndim - 1,
            b,
            pads=k.ndim > 2,
            fold=_kernel_fold(k, k.ndim - 2, k.ndim - 1) if b is not None else None,
            bias_key=None,
        )
        return ChannelRule(COMPUTE, None, _activation_values(fn), compute=compute)

    def resize(layer, config, width):
        if kind == "compute":
            config[units] = width(weight(layer, kernel))
        return config

    return LayerRule(rule, resize)


def _unknown(values):
    return np.full(values.shape, np.nan)


def register_layer_rule(
    layer_class,
    kind,
    *,
    kernel="kernel",
    bias="bias",
    units="units",
    activation="activation",
    carries=(),
    values=None,
    reason=None,
):
    """Tells kerasreg how a layer of your own passes channels on.

    `dependency_groups`, `compact`, `regularize(..., groups="dependency")`
    and the reports read one rule per layer type. Layers without one are
    opaque: the channels they read and write stay (with a warning from
    `compact` naming the layer). Four kinds of rule cover most layers:

    - `"compute"`: a `Dense`-like layer with a `kernel` of shape
      `(..., inputs, units)` and an optional `bias` of shape `(units,)`,
      followed by an element-wise `activation`; its config argument `units`
      sets the output width. Its units can be removed, its input rows too,
      and constants fold into its bias (a kernel of rank above 2 is taken as
      a convolution that pads: only constant zeros fold).
    - `"per_channel"`: a layer that acts on each channel alone with weights
      of its own per channel (`carries`: the names of weights whose last
      axis is the channels), like a scale or a gate.
    - `"elementwise"`: a function of each entry alone, without weights.
    - `"opaque"`: channels stop here; `reason` says why.

    For the two kinds that pass channels on, `values(layer, constants)` maps
    per-channel constants (a float64 array, NaN where a channel is not
    constant) to the constants after the layer; without it no constant is
    followed through.

    Args:
        layer_class: A subclass of `keras.layers.Layer`. Its subclasses get
            the rule too, unless they have one of their own.
        kind: `"compute"`, `"per_channel"`, `"elementwise"` or `"opaque"`.
        kernel: For `"compute"`: the kernel weight's name. Defaults to
            `"kernel"`.
        bias: For `"compute"`: the bias weight's name (absent weights are
            fine). Defaults to `"bias"`.
        units: For `"compute"`: the `__init__` argument of the output width.
            Defaults to `"units"`.
        activation: For `"compute"`: the attribute holding the activation,
            or `None`. Defaults to `"activation"`.
        carries: For `"per_channel"`: names of per-channel weights.
            Defaults to `()`.
        values: Constants through the layer, as above. Defaults to `None`.
        reason: For `"opaque"`: why channels stop. Defaults to `None`.

    Raises:
        InvalidArgumentError: If an argument is invalid or contradicts the
            layer class (a `units` that its `__init__` does not take). A
            rule whose weights do not have the shapes it states is refused
            the first time it meets such a layer, naming the argument.

    Example:

    >>> import keras
    >>> import kerasreg
    >>> class Scale(keras.layers.Layer):
    ...     def build(self, shape):
    ...         self.scale = self.add_weight(shape=(shape[-1],), name="scale")
    ...     def call(self, x):
    ...         return x * self.scale
    >>> kerasreg.dependency.register_layer_rule(
    ...     Scale,
    ...     "per_channel",
    ...     carries=("scale",),
    ...     values=lambda layer, v: v * keras.ops.convert_to_numpy(layer.scale),
    ... )
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise InvalidArgumentError(
            "Invalid value for argument `layer_class`: expected a subclass of "
            f"keras.layers.Layer. Received: layer_class={layer_class!r}"
        )
    if kind not in _KINDS:
        raise InvalidArgumentError(
            f"Invalid value for argument `kind`: expected one of {sorted(_KINDS)}. "
            f"Received: kind={kind!r}"
        )
    if kind == "compute":
        for argument, value in (("kernel", kernel), ("units", units)):
            if not isinstance(value, str):
                raise InvalidArgumentError(
                    f"Invalid value for argument `{argument}`: expected a string. "
                    f"Received: {argument}={value!r}"
                )
        parameters = inspect.signature(layer_class.__init__).parameters
        if units not in parameters:
            raise InvalidArgumentError(
                f"Invalid value for argument `units`: expected an argument of "
                f"{layer_class.__name__}.__init__ that sets the output width. "
                f"Received: units={units!r}"
            )
    if kind == "per_channel" and (
        isinstance(carries, str) or not carries or not all(isinstance(c, str) for c in carries)
    ):
        raise InvalidArgumentError(
            "Invalid value for argument `carries`: expected a non-empty tuple of weight "
            f"names. Received: carries={carries!r}"
        )
    if values is not None and not callable(values):
        raise InvalidArgumentError(
            f"Invalid value for argument `values`: expected a callable. Received: values={values!r}"
        )
    _USER_RULES[:] = [(types, r) for types, r in _USER_RULES if types != (layer_class,)]
    _USER_RULES.insert(
        0,
        (
            (layer_class,),
            _user_rule(
                layer_class, kind, kernel, bias, units, activation, tuple(carries), values, reason
            ),
        ),
    )


# `keras.ops` functions called on symbolic tensors.


def _scalar(value):
    return isinstance(value, (int, float, np.number)) or (
        isinstance(value, np.ndarray) and value.ndim == 0
    )


def _other_arguments_are_scalars(node):
    tensors = {id(t) for t in node.input_tensors}
    flat = keras.tree.flatten((node.arguments.args, node.arguments.kwargs))
    return all(id(x) in tensors or x is None or _scalar(x) for x in flat)


def _fill_in(node, value):
    """`node`'s operation called with `value` in place of its one input."""
    args, kwargs = node.arguments.fill_in({id(node.input_tensors[0]): value})
    return node.operation(*args, **kwargs)


def _elementwise_op(op, node, rank):
    if len(node.input_tensors) != 1 or len(node.outputs) != 1:
        return _opaque("is called on several tensors")
    if not _other_arguments_are_scalars(node):
        return _opaque("takes arrays besides its input")
    return ChannelRule(ELEMENTWISE, values=lambda v: evaluate(lambda x: _fill_in(node, x), v))


def _binary_op(op, node, rank):
    if len(node.input_tensors) == 1:
        # A tensor and a number: x + 1.0, 2.0 * x, keras.ops.maximum(x, 0.0).
        return _elementwise_op(op, node, rank)
    return _merge_layer(op, node, rank)


def _concatenate_op(op, node, rank):
    if op.axis % rank != rank - 1:
        return _opaque("concatenates along another axis than the channels")
    return ChannelRule(CONCATENATE, "concatenates the channels of several inputs")


def _reshape_op(op, node, rank):
    if len(node.input_tensors) == 1 and len(node.outputs) == 1 and _same_last_axis(node):
        return ChannelRule(POOLING, values=_passthrough)
    return _layout(op, node, rank)


def _mixing_op(op, node, rank):
    return _opaque("mixes units")


_UNARY_OPS = (
    # keras.ops.nn activations.
    "Relu Relu6 Sigmoid SparseSigmoid Softplus Softsign SoftShrink SparsePlus Silu Squareplus "
    "LogSigmoid LeakyRelu HardSigmoid HardSilu Elu Selu Gelu Celu TanhShrink HardTanh "
    "HardShrink Threshold "
    # keras.ops.numpy and keras.ops.math functions of each entry alone.
    "Abs Absolute Fabs Arctan Arcsinh Cbrt Ceil Clip Cos Cosh Erf Erfc Exp Exp2 Expm1 Floor Log "
    "Log1p Log2 Log10 Negative Reciprocal Round Rsqrt Sign Sin Sinh Sqrt Square Tan Tanh Trunc "
    "StopGradient"
).split()

_OP_RULES = {
    **dict.fromkeys(_UNARY_OPS, _elementwise_op),
    **dict.fromkeys(
        "Add Subtract Multiply Divide TrueDivide Maximum Minimum Power".split(), _binary_op
    ),
    "Concatenate": _concatenate_op,
    **dict.fromkeys("Softmax LogSoftmax Sparsemax Glu".split(), _mixing_op),
    **dict.fromkeys(
        "Transpose GetItem Slice Squeeze ExpandDims Moveaxis Swapaxes Ravel".split(),
        _layout,
    ),
    "Reshape": _reshape_op,
}


def channel_rule(node):
    """The `ChannelRule` of one node (one call of a layer or a `keras.ops` function)."""
    operation = node.operation
    rank = len(node.input_tensors[0].shape) if node.input_tensors else 0
    if isinstance(operation, keras.layers.Layer):
        rule = layer_rule(operation)
        if rule is None:
            return _opaque("is not a layer that kerasreg knows (see register_layer_rule)")
        return rule.rule(operation, node, rank)
    rule = _OP_RULES.get(type(operation).__name__)
    if rule is None or not type(operation).__module__.startswith("keras."):
        return _opaque("is not an operation that compaction knows")
    return rule(operation, node, rank)


def reshaped(operation, tensor):
    """A reshape that keeps the last axis, for an input whose last axis changed width."""
    width = tensor.shape[-1]
    if isinstance(operation, keras.layers.Reshape):
        target = tuple(operation.target_shape)
        if target and target[-1] != width:
            config = {**operation.get_config(), "target_shape": target[:-1] + (width,)}
            return type(operation).from_config(config)
    elif type(operation).__name__ == "Reshape" and hasattr(operation, "newshape"):
        shape = tuple(operation.newshape)
        if shape and shape[-1] not in (width, -1):
            return type(operation)(shape[:-1] + (width,))
    return operation


def units_axes(layer):
    """`(variable, unit axis, input axis)` that say what a layer's row counts."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return layer._query_dense.kernel, 1, 0
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return layer.kernel, -2, -2  # one filter per channel
    if isinstance(layer, _SEPARABLE):
        return layer.pointwise_kernel, -1, -2
    if isinstance(layer, _TRANSPOSED):
        return layer.kernel, -2, -1
    first = layer.weights[0]
    return first, -1, (-2 if len(first.shape) >= 2 else -1)


MAX_POOLING = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)


def resized_config(layer, config, width, kept=None):
    """`layer`'s config for new weight shapes: `width(variable, axis=-1)` is an axis' new length."""
    rule = layer_rule(layer)
    if rule is None:
        return config
    if rule.resize is _resize_gate:
        return _resize_gate(layer, config, width, kept)
    return rule.resize(layer, config, width)


def functional_of(model):
    """The functional graph of a Sequential or functional model.

    Raises:
        ValueError: If `model` is subclassed or not built.
    """
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise InvalidArgumentError(
                "Invalid value for argument `model`: expected a built model "
                "(give the Sequential model a `keras.Input` or call it once). "
                f"Received: model={model.name!r}, not built"
            )
        return functional
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    raise InvalidArgumentError(
        "Invalid value for argument `model`: expected a Sequential or "
        "functional keras.Model; subclassed models do not expose how their "
        f"layers are wired. Received: model={model!r}"
    )


class Graph:
    """The nodes of one Sequential or functional model, indexed both ways.

    Nodes are the calls of layers and of `keras.ops` functions; a layer
    called twice (shared) has two. Nested models are single nodes here;
    `nested` lists them, each once.

    Attributes:
        nodes: Every node, the model's inputs first, each after its inputs.
        producer: `id(tensor)` -> the node that computes it.
        consumers: `id(tensor)` -> the nodes that read it (once per read).
        outputs: The ids of the model's output tensors.
        nested: The Sequential and functional models called inside, once each.
    """

    def __init__(self, model):
        functional = functional_of(model)
        depths = sorted(functional._nodes_by_depth, reverse=True)
        self.nodes = [n for d in depths for n in functional._nodes_by_depth[d]]
        self.producer = {}
        self.consumers = {}
        self._calls = {}
        self._rules = {}
        for node in self.nodes:
            if node.operation is None:
                continue
            self._calls.setdefault(id(node.operation), []).append(node)
            for t in node.outputs:
                self.producer[id(t)] = node
            for t in node.input_tensors:
                self.consumers.setdefault(id(t), []).append(node)
        self.outputs = {id(t) for t in functional.outputs}
        self.nested = [
            nodes[0].operation
            for nodes in self._calls.values()
            if isinstance(nodes[0].operation, keras.Model)
        ]

    def calls(self, operation):
        """The nodes of `operation`: one per call, in order."""
        return self._calls.get(id(operation), [])

    def node(self, operation):
        """The node of `operation` if it is called exactly once, else `None`."""
        nodes = self.calls(operation)
        return nodes[0] if len(nodes) == 1 else None

    def private(self, tensor):
        """Whether `tensor` feeds exactly one node and is not an output."""
        return len(self.consumers.get(id(tensor), [])) == 1 and id(tensor) not in self.outputs

    def rule(self, node):
        """The `ChannelRule` of `node`, computed once."""
        if id(node) not in self._rules:
            self._rules[id(node)] = channel_rule(node)
        return self._rules[id(node)]
