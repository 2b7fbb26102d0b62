"""What a rule says of a node: the kinds, `ChannelRule`, `Compute`, `LayerRule`, and the
helpers every rule uses (activations, constants through them, weights by name)."""

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
from keras import ops

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
        after_padding: For `POOLING`, `(constants, widest) -> constants`
            when it reads the output of a zero padding (`widest`: the
            padding's largest width), or `None` when no constant survives.
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
    after_padding: Callable | None = None


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


def sub_path(path, layer):
    return f"{path}/{layer.name}" if path else layer.name


def _width(tensor):
    shape = getattr(tensor, "shape", None)
    if not shape or shape[-1] is None:
        return 0
    return int(shape[-1])


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


def _unknown(values):
    return np.full(values.shape, np.nan)
