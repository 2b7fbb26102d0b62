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
OPAQUE = "opaque"  # anything else


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
        slice: For `PER_CHANNEL`: `(config, weights, mask) -> (config,
            weights)`, the layer rebuilt for the channels in `mask` only.
    """

    kind: str
    reason: str | None = None
    values: Callable | None = None
    slice: Callable | None = None


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


# Layers.


@_single_input
def _compute(layer, node, rank):
    if type(layer) not in (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D):
        reason = f"a subclass of {type(layer).__mro__[1].__name__}"
    elif getattr(layer, "quantization_mode", None):
        reason = "quantized"
    elif getattr(layer, "lora_enabled", False):
        reason = "LoRA enabled"
    elif isinstance(layer, keras.layers.Dense):
        reason = None
    elif layer.data_format != "channels_last":
        reason = "channels_first convolution"
    elif layer.groups != 1:
        reason = "grouped convolution"
    else:
        reason = None
    values = None
    if activation_name(layer.activation) in ELEMENTWISE_ACTIVATIONS:
        values = lambda v: evaluate(layer.activation, v)
    return ChannelRule(COMPUTE, reason, values)


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


def _slice_weights(config, weights, mask):
    return config, [w[..., mask] for w in weights]


@_single_input
def _batch_normalization(layer, node, rank):
    if not (isinstance(layer.axis, int) and layer.axis % rank == rank - 1):
        return _opaque("normalizes over other axes")

    def values(v):
        weights = {w.name: np.asarray(ops.convert_to_numpy(w), "float64") for w in layer.weights}
        scale = weights.get("gamma", 1.0) / np.sqrt(weights["moving_variance"] + layer.epsilon)
        offset = weights.get("beta", 0.0) + np.zeros(v.shape)
        # A channel with a zero scale outputs its offset, whatever it reads.
        return np.where(scale == 0, offset, (v - weights["moving_mean"]) * scale + offset)

    return ChannelRule(PER_CHANNEL, values=values, slice=_slice_weights)


@_single_input
def _feature_gate(layer, node, rank):
    if layer._axes != (rank - 1,):
        return _opaque("gates other axes")

    def values(v):
        gates = np.asarray(ops.convert_to_numpy(layer.gates), dtype="float64")
        return np.where(gates == 0, 0.0, v * gates)

    def slice_(config, weights, mask):
        if config.get("feature_names"):
            names = zip(config["feature_names"], mask, strict=True)
            config = {**config, "feature_names": [n for n, keep in names if keep]}
        return _slice_weights(config, weights, mask)

    return ChannelRule(PER_CHANNEL, values=values, slice=slice_)


@_single_input
def _depthwise_convolution(layer, node, rank):
    if not _channels_last(layer):
        return _opaque("channels_first")
    if layer.depth_multiplier != 1:
        return _opaque("makes several channels of each")
    if getattr(layer, "quantization_mode", None):
        return _opaque("quantized")
    if activation_name(layer.activation) not in ELEMENTWISE_ACTIVATIONS:
        return _opaque("has an activation that mixes units")

    def values(v):
        kernel = np.asarray(ops.convert_to_numpy(layer.kernel), dtype="float64")[..., 0]
        bias = (
            np.asarray(ops.convert_to_numpy(layer.bias), dtype="float64")
            if layer.use_bias
            else np.zeros(v.shape)
        )
        spatial = tuple(range(kernel.ndim - 1))
        if layer.padding == "valid":
            out = v * kernel.sum(axis=spatial) + bias
        else:
            # A constant 0 is indistinguishable from the padding; another is not.
            out = np.where(v == 0, bias, np.nan)
        # A channel whose kernel is zero outputs its bias, whatever it reads.
        out = np.where(np.any(kernel != 0, axis=spatial), out, bias)
        return evaluate(layer.activation, out)

    def slice_(config, weights, mask):
        return config, [weights[0][..., mask, :]] + [w[mask] for w in weights[1:]]

    return ChannelRule(PER_CHANNEL, values=values, slice=slice_)


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
    return ChannelRule(POOLING, values=_zero_only)


@_single_input
def _flatten(layer, node, rank):
    if not _channels_last(layer):
        return _opaque("channels_first")
    width = node.outputs[0].shape[-1]
    return ChannelRule(FLATTEN, values=lambda v: v[np.arange(width) % v.size])


def _merge_layer(layer, node, rank):
    shapes = {tuple(t.shape) for t in node.input_tensors}
    if len(shapes) != 1:
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


# Each entry: classes, and the rule of a call of a layer of one of them.
# Checked in order, with isinstance.
_LAYER_RULES = (
    ((keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D), _compute),
    (
        (
            keras.layers.Dropout,
            keras.layers.SpatialDropout1D,
            keras.layers.SpatialDropout2D,
            keras.layers.GaussianNoise,
            keras.layers.GaussianDropout,
            keras.layers.AlphaDropout,
            keras.layers.Identity,
        ),
        _identity,
    ),
    (
        (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU),
        _activation,
    ),
    ((keras.layers.BatchNormalization,), _batch_normalization),
    ((FeatureGate,), _feature_gate),
    ((keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D), _depthwise_convolution),
    (
        (
            keras.layers.MaxPooling1D,
            keras.layers.MaxPooling2D,
            keras.layers.AveragePooling1D,
            keras.layers.AveragePooling2D,
        ),
        _local_pooling,
    ),
    (
        (
            keras.layers.GlobalAveragePooling1D,
            keras.layers.GlobalAveragePooling2D,
            keras.layers.GlobalMaxPooling1D,
            keras.layers.GlobalMaxPooling2D,
        ),
        _global_pooling,
    ),
    ((keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D), _zero_padding),
    ((keras.layers.Flatten,), _flatten),
    (
        (
            keras.layers.Add,
            keras.layers.Subtract,
            keras.layers.Multiply,
            keras.layers.Maximum,
            keras.layers.Minimum,
            keras.layers.Average,
        ),
        _merge_layer,
    ),
    ((keras.layers.Concatenate,), _concatenate_layer),
    ((keras.layers.Reshape, keras.layers.Permute, keras.layers.RepeatVector), _layout),
    ((keras.Model,), _nested_model),
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
        "Reshape Transpose GetItem Slice Squeeze ExpandDims Moveaxis Swapaxes Ravel".split(),
        _layout,
    ),
}


def channel_rule(node):
    """The `ChannelRule` of one node (one call of a layer or a `keras.ops` function)."""
    operation = node.operation
    rank = len(node.input_tensors[0].shape) if node.input_tensors else 0
    if isinstance(operation, keras.layers.Layer):
        for types, rule in _LAYER_RULES:
            if isinstance(operation, types):
                return rule(operation, node, rank)
        return _opaque("is not a layer that compaction knows")
    rule = _OP_RULES.get(type(operation).__name__)
    if rule is None or not type(operation).__module__.startswith("keras."):
        return _opaque("is not an operation that compaction knows")
    return rule(operation, node, rank)


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
