r"""Layers that carry regularized weights for structured sparsity.

`FeatureGate` multiplies each input feature by a trainable, L1-penalised
gate: trained with `kerasreg.ProximalOptimizer`, the gates of features the
model does not need become exactly zero, and the layer reports which
features remain. `SelectFeatures` keeps a fixed subset of features; it is
what `kerasreg.compact` inserts in front of a layer whose unused inputs it
removes.
"""

import keras
import numpy as np
from keras import ops

from kerasreg import regularizers as regularizers_lib
from kerasreg._saving import register_serializable
from kerasreg._validation import AnyOf
from kerasreg._validation import Axes
from kerasreg._validation import Configurable
from kerasreg._validation import Identifier
from kerasreg._validation import Indices
from kerasreg._validation import Interval
from kerasreg._validation import InvalidArgumentError
from kerasreg._validation import Strings
from kerasreg._validation import validate_params

__all__ = ["FeatureGate", "SelectFeatures"]


def _get_regularizer(regularizer):
    """A regularizer from an instance, a name or a config; `None` allowed."""
    if regularizer is None or isinstance(regularizer, keras.regularizers.Regularizer):
        return regularizer
    if isinstance(regularizer, (str, dict)):
        try:
            return regularizers_lib.get(regularizer)
        except ValueError:
            return keras.regularizers.get(regularizer)
    if callable(regularizer):
        return regularizer
    raise InvalidArgumentError(
        "Invalid value for argument `regularizer`: expected a regularizer, "
        f"its name or config, or None. Received: regularizer={regularizer!r}"
    )


def _normalize_axes(axis, rank, owner):
    """`axis` as a sorted tuple of non-negative, non-batch axes of `rank`."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not axes or any(not -rank < a < rank or a % rank == 0 for a in axes):
        raise InvalidArgumentError(
            f"Invalid value for argument `axis`: expected non-batch axes of "
            f"the input of `{owner}`, of rank {rank}. Received: axis={axis!r}"
        )
    return tuple(sorted(a % rank for a in axes))


@register_serializable
class FeatureGate(keras.layers.Layer, Configurable):
    r"""Multiplies each input feature by a trainable gate, for feature selection.

    .. math::

        y_{\ldots, j} = g_j \, x_{\ldots, j},
        \qquad
        R(g) = \lambda \sum_j \lvert g_j \rvert \quad \text{(the default)}.

    Place it on a model's inputs and train with `kerasreg.ProximalOptimizer`:
    the proximal step sets the gates of features the model does not need to
    exactly zero, and `selected_features()` says which remain. This is the
    "L1 performs feature selection" of linear models, for any network
    after the gate.

    **Feature axis.** `axis` names the axis (or axes) of the input that hold
    the features; each index along it gets one gate. Before `Dense` layers
    the features are the last axis (`axis=-1`, the default). Before
    `Conv2D` layers (channels last), `axis=-1` gates input channels, and
    `axis=(1, 2)` gates pixels: one gate per position, shared by all
    channels. Feature indices are flat (row-major) indices into the gate's
    shape.

    **Keep the next layer from undoing the gate.** The gate and the layer
    after it meet in a product, `g_j * w_jk`: shrinking a gate while the
    next weights grow leaves the model unchanged and the penalty smaller.
    Give the next layer a regularizer (`kerasreg.L2`, or a group penalty
    over its inputs) or a norm constraint, so that only the gates of
    features that do not help the fit reach zero. A gate followed by a
    fixed sum is exactly scikit-learn's `Lasso`.

    Args:
        axis: Int or tuple of ints, the feature axis (axes) of the input;
            never the batch axis. Defaults to `-1`.
        regularizer: The gates' regularizer: an instance, its name (`"l1"`,
            `"elastic_net"`, ...) or config, or `None`. Defaults to
            `kerasreg.L1(0.01)`.
        initializer: Initializer of the gates. Defaults to `"ones"` (every
            feature passes unchanged at the start).
        constraint: Optional constraint on the gates, e.g.
            `keras.constraints.NonNeg()`. Defaults to `None`.
        feature_names: Optional sequence of strings, one per gate (flat,
            row-major order), used by `selected_feature_names()`.
            Defaults to `None`.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import kerasreg
    >>> gate = kerasreg.layers.FeatureGate(feature_names=["age", "bmi", "bp"])
    >>> y = gate(np.ones((2, 3), dtype="float32"))
    >>> _ = gate.gates.assign(np.array([0.5, 0.0, 2.0], dtype="float32"))
    >>> gate.selected_features().tolist()
    [0, 2]
    >>> gate.selected_feature_names()
    ['age', 'bp']
    """

    _parameter_constraints = {
        "axis": Axes(),
        "regularizer": Identifier(_get_regularizer, "a regularizer, its name or config, or None"),
        "initializer": Identifier(keras.initializers.get, "an initializer, its name or config"),
        "constraint": Identifier(
            keras.constraints.get, "a constraint, its name or config, or None"
        ),
        "feature_names": AnyOf(Strings(), None),
    }

    def __init__(
        self,
        axis=-1,
        regularizer="l1",
        initializer="ones",
        constraint=None,
        feature_names=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._set_arguments(
            axis=axis,
            regularizer=regularizer,
            initializer=initializer,
            constraint=constraint,
            feature_names=feature_names,
        )
        if isinstance(self.axis, tuple) and not self.axis:
            raise InvalidArgumentError(
                "Invalid value for argument `axis`: expected at least one "
                f"feature axis. Received: axis={axis!r}"
            )
        self.supports_masking = True

    def build(self, input_shape):
        rank = len(input_shape)
        self._axes = _normalize_axes(self.axis, rank, type(self).__name__)
        gate_shape = tuple(input_shape[a] for a in self._axes)
        if any(d is None for d in gate_shape):
            raise ValueError(
                "`FeatureGate` needs the size of its feature axes to be known. "
                f"Received: input_shape={tuple(input_shape)} with axis={self.axis!r}"
            )
        size = int(np.prod(gate_shape))
        if self.feature_names is not None and len(self.feature_names) != size:
            raise InvalidArgumentError(
                "Invalid value for argument `feature_names`: expected one name "
                f"per gate ({size} for input shape {tuple(input_shape)} and "
                f"axis={self.axis!r}). Received {len(self.feature_names)} names."
            )
        self._broadcast_shape = tuple(input_shape[a] if a in self._axes else 1 for a in range(rank))
        self.gates = self.add_weight(
            shape=gate_shape,
            initializer=self.initializer,
            regularizer=self.regularizer,
            constraint=self.constraint,
            name="gates",
        )

    def call(self, inputs):
        gates = ops.reshape(ops.cast(self.gates, inputs.dtype), self._broadcast_shape)
        return inputs * gates

    def compute_output_shape(self, input_shape):
        return input_shape

    @validate_params({"tolerance": Interval(0.0, None)})
    def selection_mask(self, tolerance=0.0):
        """Boolean array in the gates' shape: `True` where `|gate| > tolerance`."""
        if not self.built:
            raise ValueError(f"`FeatureGate` layer '{self.name}' has no gates before it is built.")
        return np.abs(np.asarray(ops.convert_to_numpy(self.gates))) > tolerance

    def selected_features(self, tolerance=0.0):
        """Flat indices of the features whose gate is not zero.

        Args:
            tolerance: Non-negative float; a gate counts as zero when its
                magnitude is at most this. Defaults to `0.0` (exact zeros).

        Returns:
            A sorted 1-D NumPy array of ints.
        """
        return np.flatnonzero(self.selection_mask(tolerance))

    def selected_feature_names(self, tolerance=0.0):
        """The names of the selected features, in order (needs `feature_names`)."""
        if self.feature_names is None:
            raise ValueError(
                f"`FeatureGate` layer '{self.name}' was created without "
                "`feature_names`; use `selected_features()` for indices."
            )
        return [self.feature_names[i] for i in self.selected_features(tolerance)]

    def get_config(self):
        config = super().get_config()
        config.update(
            axis=self.axis,
            regularizer=keras.saving.serialize_keras_object(self.regularizer),
            initializer=keras.saving.serialize_keras_object(self.initializer),
            constraint=keras.saving.serialize_keras_object(self.constraint),
            feature_names=self.feature_names,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("regularizer", "initializer", "constraint"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


@register_serializable
class SelectFeatures(keras.layers.Layer, Configurable):
    """Keeps the features at fixed indices of the last axis, in order.

    `kerasreg.compact` puts one in front of a layer whose unused input
    features it removes, so that the compacted model takes the same inputs
    as the original.

    Args:
        indices: Non-empty sequence of distinct, non-negative ints: the
            features to keep, in the order to keep them.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Example:

    >>> import numpy as np
    >>> import kerasreg
    >>> layer = kerasreg.layers.SelectFeatures([0, 2])
    >>> np.asarray(layer(np.array([[1.0, 2.0, 3.0]], dtype="float32"))).tolist()
    [[1.0, 3.0]]
    """

    _parameter_constraints = {"indices": Indices()}

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self._set_arguments(indices=indices)

    def build(self, input_shape):
        width = input_shape[-1]
        if width is not None and max(self.indices) >= width:
            raise InvalidArgumentError(
                f"Invalid value for argument `indices`: index {max(self.indices)} "
                f"is out of range for inputs with {width} features. "
                f"Received: indices={self.indices!r}"
            )

    def call(self, inputs):
        return ops.take(inputs, np.asarray(self.indices, dtype="int32"), axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (len(self.indices),)

    def get_config(self):
        config = super().get_config()
        config["indices"] = list(self.indices)
        return config
