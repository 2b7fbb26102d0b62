"""The rules of Keras' own layers: how each passes channels and constants on, and how
its config follows new weight shapes."""

import dataclasses
import re

import keras
import numpy as np

from kerasreg._graph._rule import COMPUTE
from kerasreg._graph._rule import CONCATENATE
from kerasreg._graph._rule import ELEMENTWISE
from kerasreg._graph._rule import ELEMENTWISE_ACTIVATIONS
from kerasreg._graph._rule import FLATTEN
from kerasreg._graph._rule import MERGE
from kerasreg._graph._rule import OPAQUE
from kerasreg._graph._rule import PER_CHANNEL
from kerasreg._graph._rule import POOLING
from kerasreg._graph._rule import ChannelRule
from kerasreg._graph._rule import Compute
from kerasreg._graph._rule import _activation_values
from kerasreg._graph._rule import _channels_last
from kerasreg._graph._rule import _kernel_fold
from kerasreg._graph._rule import _numpy
from kerasreg._graph._rule import _opaque
from kerasreg._graph._rule import _pads
from kerasreg._graph._rule import _passthrough
from kerasreg._graph._rule import _single_input
from kerasreg._graph._rule import _unknown
from kerasreg._graph._rule import _zero_only
from kerasreg._graph._rule import activation_keeps_zero
from kerasreg._graph._rule import activation_name
from kerasreg._graph._rule import evaluate
from kerasreg._graph._rule import weight

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
_MAX_POOLING = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)


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
    after_padding = None
    if isinstance(layer, _MAX_POOLING):

        def after_padding(constants, widest):
            # Where every window holds a value of the input (the padding is
            # narrower than the window), the maximum of a constant c >= 0
            # and the padding's zeros is c.
            if widest >= min(layer.pool_size):
                return np.full(constants.shape, np.nan)
            return np.where(constants >= 0, constants, np.nan)

    # With padding, a constant meets the border.
    values = _passthrough if layer.padding == "valid" else _zero_only
    return ChannelRule(POOLING, values=values, after_padding=after_padding)


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
