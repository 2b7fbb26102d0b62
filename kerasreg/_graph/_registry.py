"""The one registry of layer rules: Keras' layers, KerasHub's, and users' own
(`register_layer_rule`), looked up per layer; `channel_rule` for any node."""

import inspect

import keras
import numpy as np

from kerasreg._graph import _keras_hub
from kerasreg._graph._attention import _attention_projections
from kerasreg._graph._attention import _embedding
from kerasreg._graph._attention import _multi_head_attention
from kerasreg._graph._attention import _resize_attention
from kerasreg._graph._attention import _resize_embedding
from kerasreg._graph._layers import _CONVOLUTIONS
from kerasreg._graph._layers import _SEPARABLE
from kerasreg._graph._layers import _TRANSPOSED
from kerasreg._graph._layers import _activation
from kerasreg._graph._layers import _batch_normalization
from kerasreg._graph._layers import _compute
from kerasreg._graph._layers import _concatenate_layer
from kerasreg._graph._layers import _convolution
from kerasreg._graph._layers import _depthwise_convolution
from kerasreg._graph._layers import _einsum_dense
from kerasreg._graph._layers import _feature_gate
from kerasreg._graph._layers import _flatten
from kerasreg._graph._layers import _global_pooling
from kerasreg._graph._layers import _identity
from kerasreg._graph._layers import _layer_scale
from kerasreg._graph._layers import _layout
from kerasreg._graph._layers import _local_pooling
from kerasreg._graph._layers import _merge_layer
from kerasreg._graph._layers import _nested_model
from kerasreg._graph._layers import _normalization
from kerasreg._graph._layers import _rescaling
from kerasreg._graph._layers import _reshape
from kerasreg._graph._layers import _resize_einsum_dense
from kerasreg._graph._layers import _resize_gate
from kerasreg._graph._layers import _resize_layer_scale
from kerasreg._graph._layers import _resize_units
from kerasreg._graph._layers import _zero_padding
from kerasreg._graph._ops import _OP_RULES
from kerasreg._graph._rule import COMPUTE
from kerasreg._graph._rule import ELEMENTWISE
from kerasreg._graph._rule import OPAQUE
from kerasreg._graph._rule import PER_CHANNEL
from kerasreg._graph._rule import ChannelRule
from kerasreg._graph._rule import Compute
from kerasreg._graph._rule import LayerRule
from kerasreg._graph._rule import _activation_values
from kerasreg._graph._rule import _kernel_fold
from kerasreg._graph._rule import _opaque
from kerasreg._graph._rule import _single_input
from kerasreg._graph._rule import _unknown
from kerasreg._graph._rule import _width
from kerasreg._graph._rule import weight
from kerasreg._validation import InvalidArgumentError
from kerasreg.layers import FeatureGate


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
        _keras_hub.ENCODER,
    ),
    (
        lambda layer: (
            _is_keras_hub(layer, "TransformerDecoder")
            or type(layer).__name__ == "CompactTransformerDecoder"
        ),
        _keras_hub.DECODER,
    ),
    (
        lambda layer: _is_keras_hub(layer, "ViTEncoder"),
        _keras_hub.VIT_ENCODER,
    ),
    (
        lambda layer: _is_keras_hub(layer, "ViTPatchingAndEmbedding"),
        _keras_hub.VIT_PATCHING,
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


def resized_config(layer, config, width, kept=None):
    """`layer`'s config for new weight shapes: `width(variable, axis=-1)` is an axis' new length."""
    rule = layer_rule(layer)
    if rule is None:
        return config
    if rule.resize is _resize_gate:
        return _resize_gate(layer, config, width, kept)
    return rule.resize(layer, config, width)
