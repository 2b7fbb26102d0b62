"""What a model costs: multiply-accumulates and parameters, per coupled channel.

`model_cost(model)` counts a model's multiply-accumulates (MACs) per example
and its parameters, and says what one channel of each coupled group
(`kerasreg.dependency_groups`) costs: the MACs and parameters that leave the
model with it. Costs after pruning follow from the same count
(`ModelCost.at`), which is how `kerasreg.ChannelPruning` ranks channels by
importance per unit of cost and stops at a target.
"""

import dataclasses

import keras
import numpy as np

from kerasreg import _graph
from kerasreg import dependency as dependency_lib
from kerasreg._graph._wiring import calls_with_shapes
from kerasreg._graph._work import work
from kerasreg._validation import InputShape
from kerasreg._validation import InstanceOf
from kerasreg._validation import InvalidArgumentError
from kerasreg._validation import validate_params

__all__ = ["GroupCost", "ModelCost", "model_cost"]


def cost_for(model, argument, value):
    """`model_cost(model)` for a function whose `argument` asked for it: an input
    shape that is not fully known is refused naming that argument."""
    try:
        return model_cost(model)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(
            f"Invalid value for argument `{argument}`: expected a model whose input shape "
            "is fully known, so that its cost can be counted (build it on a `keras.Input` "
            f"of fixed sizes; kerasreg.ChannelPruning takes `input_shape`). {error}. "
            f"Received: {argument}={value!r}"
        ) from None


@dataclasses.dataclass(frozen=True)
class GroupCost:
    """What one channel of a coupled group costs, at the model's full widths.

    Attributes:
        group: The `kerasreg.dependency.DependencyGroup`.
        macs: Multiply-accumulates per example that leave with one channel.
        params: Parameters that leave with one channel (`group.params`).
    """

    group: object
    macs: float
    params: int


@dataclasses.dataclass(frozen=True)
class _Term:
    """`base * prod(rest + sum(k * channels[g] for g, k in shares) for each axis)`.

    Weighted by `macs` for the MACs and by `params` for the parameters.
    """

    macs: float
    params: float
    base: float
    axes: tuple  # ((rest, ((group, k), ...)), ...)

    def widths(self, channels):
        widths = []
        for rest, shares in self.axes:
            width = rest
            for g, k in shares:
                width = width + k * channels[g]
            widths.append(width)
        return widths

    def value(self, channels):
        value = self.base
        for width in self.widths(channels):
            value = value * width
        return value

    def slopes(self, channels):
        """`(group, d value / d channels[group])` pairs, one per share."""
        widths = self.widths(channels)
        slopes = []
        for a, (_, shares) in enumerate(self.axes):
            others = self.base
            for b, width in enumerate(widths):
                if b != a:
                    others = others * width
            slopes += [(g, k * others) for g, k in shares]
        return slopes


class ModelCost:
    """Multiply-accumulates and parameters of a model, per coupled channel.

    Attributes:
        macs: Multiply-accumulates per example: products with weights
            (dense and einsum projections, convolutions) and attention's
            products of queries with keys and of scores with values; biases,
            normalizations, activations and pooling are not counted.
        params: Parameters, `model.count_params()`.
        layers: Layer path -> its MACs per example (every call of it).
        groups: One `GroupCost` per group of
            `kerasreg.dependency_groups(model)`, in its order.
        input_shapes: The input shapes (without the batch axis) counted at.
    """

    def __init__(self, macs, params, layers, groups, input_shapes, terms):
        self.macs = macs
        self.params = params
        self.layers = layers
        self.groups = groups
        self.input_shapes = input_shapes
        self._terms = terms

    @property
    def channels(self):
        """The channels of each group, at full width."""
        return [cost.group.channels for cost in self.groups]

    def _check(self, channels):
        if len(channels) != len(self.groups):
            raise InvalidArgumentError(
                "Invalid value for argument `channels`: expected one count per group "
                f"({len(self.groups)}). Received: {len(channels)} counts"
            )

    def at(self, channels, measure="macs"):
        """The cost with `channels[i]` channels left in group `i`.

        Works on numbers, NumPy arrays and backend tensors alike, so the
        count can run inside a training step.

        Args:
            channels: One count per group (a sequence, or a vector).
            measure: `"macs"` or `"params"`.

        Returns:
            The model's MACs per example, or its parameters.
        """
        self._check(channels)
        weight = _measure(measure)
        total = 0.0
        for term in self._terms:
            scale = getattr(term, weight)
            if scale:
                total = total + scale * term.value(channels)
        return total

    def slopes(self, channels, measure="macs"):
        """What one more channel of each group costs, with `channels` left.

        Returns:
            A list, per group, of the cost of its next channel (the
            derivative of `at` in that group's count).
        """
        self._check(channels)
        weight = _measure(measure)
        slopes = [0.0] * len(self.groups)
        for term in self._terms:
            scale = getattr(term, weight)
            if scale:
                for g, slope in term.slopes(channels):
                    slopes[g] = slopes[g] + scale * slope
        return slopes

    def channels_left(self):
        """The channels of each group that the model's weights keep, as `compact` sees them.

        A channel of a removable group is gone when all its trainable
        entries in the variables that write or carry it are zero (it is
        then zero, or a constant that `compact` folds into its readers), or
        when all its entries in the variables that read it are zero.

        Returns:
            A list of counts, one per group (full for the groups that stay).
        """
        return [int(alive.sum()) for alive in self.alive_channels()]

    def alive_channels(self):
        """Per group, a boolean array: which channels the weights keep (`channels_left`)."""
        masks = []
        for cost in self.groups:
            group = cost.group
            alive = np.ones(group.channels, bool)
            if not group.removable:
                masks.append(alive)
                continue
            source = np.zeros(group.channels, bool)  # a nonzero writer or carrier entry
            read = np.zeros(group.channels, bool)  # a nonzero reader entry
            readers = sources = False
            for member in group.members:
                if member.role != dependency_lib.READS and not member.variable.trainable:
                    continue
                value = keras.ops.convert_to_numpy(member.variable.value)
                axes = tuple(a for a in range(value.ndim) if a != member.axis)
                nonzero = np.any(value != 0, axis=axes)[member.indices].any(axis=1)
                if member.role == dependency_lib.READS:
                    read |= nonzero
                    readers = True
                else:
                    source |= nonzero
                    sources = True
            if sources:
                alive &= source
            if readers:
                alive &= read
            masks.append(alive)
        return masks

    def fraction_left(self, measure="macs"):
        """The fraction of the model's cost that its weights keep (`channels_left`)."""
        return float(self.at(self.channels_left(), measure) / self.at(self.channels, measure))

    def __repr__(self):
        return (
            f"<ModelCost {self.macs:,.0f} MACs, {self.params:,} params, {len(self.groups)} groups>"
        )


def _measure(measure):
    if measure not in ("macs", "params"):
        raise InvalidArgumentError(
            f"Invalid value for argument `measure`: expected one of 'macs', 'params'. "
            f"Received: measure={measure!r}"
        )
    return measure


def _input_specs(functional, input_shape):
    """One `KerasTensor` per model input, batch 1, at `input_shape` or the model's own."""
    inputs = functional.inputs
    if input_shape is None:
        shapes = [tuple(x.shape)[1:] for x in inputs]
        for x, shape in zip(inputs, shapes, strict=True):
            if any(d is None for d in shape):
                raise InvalidArgumentError(
                    "Invalid value for argument `input_shape`: expected the shape of the "
                    f"model's input '{x.name}', whose shape {tuple(x.shape)} has unknown "
                    "sizes beyond the batch axis (pass `input_shape`, without the batch "
                    "axis, e.g. input_shape=(224, 224, 3)). Received: input_shape=None"
                )
    else:
        shapes = input_shape
        if len(inputs) == 1 and _is_shape(input_shape):
            shapes = [input_shape]
        ok = isinstance(shapes, (list, tuple)) and len(shapes) == len(inputs)
        ok = ok and all(
            _is_shape(s) and len(s) == len(x.shape) - 1
            for s, x in zip(shapes, inputs, strict=False)
        )
        if not ok:
            expected = ", ".join(str(tuple(x.shape)[1:]) for x in inputs)
            raise InvalidArgumentError(
                "Invalid value for argument `input_shape`: expected one shape per model input, "
                f"without the batch axis, of positive ints of the ranks of ({expected}). "
                f"Received: input_shape={input_shape!r}"
            )
        shapes = [tuple(int(d) for d in s) for s in shapes]
    specs = [
        keras.KerasTensor((1,) + shape, dtype=x.dtype)
        for x, shape in zip(inputs, shapes, strict=True)
    ]
    return specs, shapes


_is_shape = InputShape._is_shape


def _axes_of(groups):
    """`id(variable)` -> {axis: [(group, k), ...]} over every group's members."""
    axes = {}
    for g, group in enumerate(groups):
        for member in group.members:
            shares = axes.setdefault(id(member.variable), {}).setdefault(member.axis, [])
            shares.append((g, member.indices.shape[1], group.channels))
    return axes


def _term(variable, axes, macs, params, only=None):
    """The `_Term` of `variable`'s entries (or of its indices along `only`)."""
    shape = tuple(int(d) for d in variable.shape)
    chosen = range(len(shape)) if only is None else only
    base, factors = 1.0, []
    for a in chosen:
        shares = axes.get(a)
        if not shares:
            base *= shape[a]
            continue
        rest = shape[a] - sum(k * c for _, k, c in shares)
        factors.append((float(rest), tuple((g, float(k)) for g, k, _ in shares)))
    return _Term(macs, params, base, tuple(factors))


@validate_params(
    {
        "model": InstanceOf(keras.Model, "a built Sequential or functional keras.Model"),
        "input_shape": InputShape(),
    }
)
def model_cost(model, input_shape=None):
    """Multiply-accumulates and parameters of a model, and of each coupled channel.

    Counts, per example, the multiply-accumulates (MACs) of the products
    with weights, each at the resolution it runs at: a convolution's kernel
    once per output position (a transposed convolution's once per input
    position), a dense or einsum projection's once per token, attention's
    projections and its two products over the query and key positions.
    Biases, normalizations, activations and pooling are not counted, as in
    the published counts (ResNet-50 at 224x224: 3.9 billion; MobileNetV2:
    0.3 billion). Layers made of other layers that no rule describes
    (KerasHub's transformer blocks) count their projections and attention
    once per position of their output.

    Each group of `kerasreg.dependency_groups(model)` gets the MACs and the
    parameters that one of its channels takes with it: its writers' kernel
    columns and biases, its carriers' slices, its readers' kernel rows, at
    the resolution each runs at. A head of `MultiHeadAttention` takes its
    projections and its share of the attention products.

    Args:
        model: A built Sequential or functional `keras.Model`.
        input_shape: The shape of the model's input without the batch axis
            (a list of shapes for several inputs). Defaults to the model's
            own, which must then be fully known.

    Returns:
        A `ModelCost`.

    Raises:
        InvalidArgumentError: If `model` is not a built Sequential or
            functional model, or `input_shape` is invalid or needed.

    Example:

    >>> import keras
    >>> import kerasreg
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(16, 3, padding="same", name="conv")(inputs)
    >>> outputs = keras.layers.Dense(4, name="head")(keras.layers.Flatten()(x))
    >>> cost = kerasreg.model_cost(keras.Model(inputs, outputs))
    >>> cost.macs  # 8*8 positions * 3*3*3*16 + 1024*4
    31744.0
    >>> cost.params  # 3*3*3*16 + 16 + 1024*4 + 4
    4548
    >>> [(c.group.channels, c.macs, c.params) for c in cost.groups if c.group.removable]
    [(16, 1984.0, 284)]
    """
    functional = _graph.functional_of(model)
    specs, shapes = _input_specs(functional, input_shape)
    groups = dependency_lib.dependency_groups(model)
    axes = _axes_of(groups)
    _, calls = calls_with_shapes(functional, specs)
    macs_of = {}  # (id(variable), axes or None) -> MACs per unit
    variables = {}
    layers = {}
    for path, layer, args, kwargs, outputs in calls:
        for item in work(layer, args, kwargs, outputs):
            key = (id(item.variable), item.axes)
            variables[id(item.variable)] = item.variable
            macs_of[key] = macs_of.get(key, 0.0) + float(item.scale)
            term = _term(item.variable, axes.get(id(item.variable), {}), 1.0, 0.0, item.axes)
            layers[path] = layers.get(path, 0.0) + float(item.scale) * term.value(
                [g.channels for g in groups]
            )
    terms = []
    weights = {id(w): w for w in model.weights}
    for key, weight in weights.items():
        terms.append(_term(weight, axes.get(key, {}), macs_of.pop((key, None), 0.0), 1.0))
    for (key, only), scale in macs_of.items():
        terms.append(_term(variables[key], axes.get(key, {}), scale, 0.0, only))
    full = [g.channels for g in groups]
    macs = float(sum(t.macs * t.value(full) for t in terms))
    params = int(round(sum(t.params * t.value(full) for t in terms)))
    slopes = [0.0] * len(groups)
    param_slopes = [0.0] * len(groups)
    for term in terms:
        for g, slope in term.slopes(full):
            slopes[g] += term.macs * slope
            param_slopes[g] += term.params * slope
    group_costs = [
        GroupCost(group, float(s), int(round(p)))
        for group, s, p in zip(groups, slopes, param_slopes, strict=True)
    ]
    return ModelCost(macs, params, layers, group_costs, shapes, terms)
