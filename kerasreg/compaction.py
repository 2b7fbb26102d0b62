"""Compaction: structured zeros into a physically smaller model.

Zeros inside a dense kernel cost the same time and memory as any other
number. Whole units, filters and input features are different: once a unit
is zero on one side, it can be taken out of the network. `compact` finds
them along the coupled channels of the whole graph (residual streams,
concatenations, attention heads) and in chains of `Dense` and
`Conv1D`/`Conv2D` layers, and returns a new, smaller model that computes
the same function.
"""

import dataclasses
import warnings

import keras
import numpy as np
from keras import ops

from kerasreg import _graph
from kerasreg._save_guard import penalties_unguarded
from kerasreg._validation import Boolean
from kerasreg._validation import InstanceOf
from kerasreg._validation import InvalidArgumentError
from kerasreg._validation import validate_params
from kerasreg.dependency import CARRIES
from kerasreg.dependency import MODEL_INPUT
from kerasreg.dependency import MODEL_OUTPUT
from kerasreg.dependency import READS
from kerasreg.dependency import WRITES
from kerasreg.dependency import _is_keras_hub
from kerasreg.dependency import dependency_groups
from kerasreg.layers import FeatureGate
from kerasreg.layers import SelectFeatures

__all__ = ["CompactionSummary", "LayerCompaction", "compact"]


@dataclasses.dataclass(frozen=True)
class LayerCompaction:
    """What `compact` did to one layer.

    Attributes:
        layer: The layer's name.
        units: Output units (filters; channels of a normalization or a
            depthwise convolution; heads of a `MultiHeadAttention`) before
            compaction.
        kept_units: Output units after.
        inputs: Input features (channels) of the kernel before compaction.
        kept_inputs: Input features after.
        params: Parameters of the layer before.
        kept_params: Parameters after.
        input_indices: Indices (into the layer's original inputs) of the
            features a `SelectFeatures` layer now passes to it, or `None`
            when no such layer was inserted.
        unit_indices: Indices (into the layer's original units) of the units
            it keeps.
    """

    layer: str
    units: int
    kept_units: int
    inputs: int
    kept_inputs: int
    params: int
    kept_params: int
    input_indices: tuple | None = None
    unit_indices: tuple | None = None


@dataclasses.dataclass(frozen=True)
class CompactionSummary:
    """The outcome of `compact`.

    Attributes:
        layers: Tuple of `LayerCompaction`, one per layer that `compact`
            rebuilt smaller.
        left_as_is: Tuple of `(layer name, reason)` for layers holding
            all-zero units or inputs that `compact` could not remove.
        params: Parameters of the original model.
        kept_params: Parameters of the compacted model.
    """

    layers: tuple
    left_as_is: tuple
    params: int
    kept_params: int

    def __str__(self):
        header = f"{'layer':<24} {'units':>13} {'inputs':>13} {'params':>19}"
        lines = [header, "-" * len(header)]
        for row in self.layers:
            lines.append(
                f"{row.layer:<24} {row.units:>6} -> {row.kept_units:<3} "
                f"{row.inputs:>6} -> {row.kept_inputs:<3} "
                f"{row.params:>8,} -> {row.kept_params:<7,}"
            )
        lines.append("-" * len(header))
        lines.append(f"{'model':<52} {self.params:>8,} -> {self.kept_params:<7,}")
        for name, reason in self.left_as_is:
            lines.append(f"left as is: {name}: {reason}")
        return "\n".join(lines)


# Nodes that compaction follows between two compute layers: each acts on a
# unit alone, so a unit can go without changing the others.
_PATH_KINDS = (_graph.ELEMENTWISE, _graph.PER_CHANNEL, _graph.POOLING, _graph.FLATTEN)


class _PathStep:
    """A node between two compute layers that acts on each unit alone."""

    def __init__(self, node, rule):
        self.layer = node.operation
        self.rule = rule
        self.width = node.outputs[0].shape[-1]
        self.sliced = rule.kind == _graph.PER_CHANNEL
        self.flatten = rule.kind == _graph.FLATTEN and len(node.input_tensors[0].shape) > 2

    def constants(self, values):
        """Maps per-unit constants (NaN: not constant) through the node."""
        return self.rule.values(values)


class _Edge:
    """Units flowing from `source` (a compute layer, or None for the model's
    inputs) through `path` into the compute layer `consumer`."""

    def __init__(self, source, path, consumer, units):
        self.source = source
        self.path = path
        self.consumer = consumer
        self.units = units
        features = consumer.kernel.shape[-2]
        self.unit_of_feature = np.arange(features) % units


def _compute_rule(graph, layer):
    """The rule of `layer` if it is a Dense or convolution layer, else None."""
    calls = graph.calls(layer)
    if not calls or getattr(layer, "kernel", None) is None:
        return None
    rule = graph.rule(calls[0])
    return rule if rule.kind == _graph.COMPUTE else None


def _walk_back(graph, tensor):
    """`(source, units, path)` behind `tensor`, or `(None, reason, None)`."""
    path = []
    while True:
        producer = graph.producer.get(id(tensor))
        if producer is None or producer.is_input:
            return None, tensor.shape[-1], path
        op = producer.operation
        rule = graph.rule(producer)
        if rule.kind == _graph.COMPUTE and rule.reason is None:
            if graph.node(op) is None:
                return None, f"fed by {_graph.describe(op)}: shared", None
            if not graph.private(tensor):
                return None, f"fed by {_graph.describe(op)}: its output feeds several layers", None
            if rule.values is None:
                name = _graph.activation_name(op.activation)
                return None, f"fed by {_graph.describe(op)}: activation {name!r} mixes units", None
            return op, op.kernel.shape[-1], path
        if rule.kind not in _PATH_KINDS:
            return None, f"fed by {_graph.describe(op)}: {rule.reason}", None
        if rule.kind == _graph.PER_CHANNEL and graph.node(op) is None:
            return None, f"fed by {_graph.describe(op)}: shared", None
        if not graph.private(tensor):
            return None, f"fed by {_graph.describe(op)}: its output feeds several layers", None
        path.insert(0, _PathStep(producer, rule))
        tensor = producer.input_tensors[0]


def _find_edges(graph, layers, reasons):
    edges = []
    for layer in layers:
        rule = _compute_rule(graph, layer)
        if rule is None or rule.reason is not None:
            continue
        node = graph.node(layer)
        if node is None:
            reasons[layer.name] = "called more than once (shared)"
            continue
        source, units, path = _walk_back(graph, node.input_tensors[0])
        if path is None:
            reasons[layer.name] = units
            continue
        if sum(step.flatten for step in path) > 1 or layer.kernel.shape[-2] % units:
            reasons[layer.name] = "its inputs do not map onto the units before it"
            continue
        edges.append(_Edge(source, path, layer, int(units)))
    return edges


def _output_reason(graph, layer, reasons):
    """Why no edge leaves the compute layer `layer`: where its output goes."""
    node = graph.node(layer)
    if node is None:
        return "called more than once (shared)"
    if graph.rule(node).values is None:
        return f"its activation {_graph.activation_name(layer.activation)!r} mixes units"
    tensor = node.outputs[0]
    while id(tensor) not in graph.outputs:
        consumers = {id(n): n for n in graph.consumers.get(id(tensor), [])}
        if len(consumers) != 1:
            break
        (consumer,) = consumers.values()
        rule = graph.rule(consumer)
        if rule.kind == _graph.COMPUTE:
            return (
                reasons.get(consumer.operation.name)
                or (
                    rule.reason and f"it feeds {_graph.describe(consumer.operation)}: {rule.reason}"
                )
                or f"{_graph.describe(consumer.operation)} still reads them"
            )
        if rule.kind not in _PATH_KINDS:
            return f"its output goes into {_graph.describe(consumer.operation)}: {rule.reason}"
        if rule.kind == _graph.PER_CHANNEL and graph.node(consumer.operation) is None:
            return f"its output goes into {_graph.describe(consumer.operation)}: shared"
        tensor = consumer.outputs[0]
    if id(tensor) in graph.outputs:
        return "its output reaches the model's outputs"
    if not graph.consumers.get(id(tensor)):
        return "its output is not used"
    return "its output feeds several layers"


def _left_as_is(graph, layers, state, reasons):
    """`(name, reason)` for compute layers that keep all-zero units or inputs."""
    notes = []
    for layer in layers:
        rule = _compute_rule(graph, layer)
        if rule is None:
            continue
        if id(layer) in state.kernel:
            kernel = state.kernel[id(layer)][..., state.keep_in[id(layer)], :]
            kernel = kernel[..., state.keep_out[id(layer)]]
        else:
            kernel = np.asarray(ops.convert_to_numpy(layer.kernel))
        zero = kernel == 0
        zero_units = int(np.all(zero, axis=tuple(range(kernel.ndim - 1))).sum())
        in_axes = tuple(a for a in range(kernel.ndim) if a != kernel.ndim - 2)
        zero_inputs = int(np.all(zero, axis=in_axes).sum())
        outputs = [t for node in graph.calls(layer) for t in node.outputs]
        if any(id(t) in graph.outputs for t in outputs):
            zero_units = 0  # the model's outputs keep their width
        if not zero_units and not zero_inputs:
            continue
        why = []
        if zero_units:
            why.append(
                state.reasons.get(layer.name)
                or rule.reason
                or _output_reason(graph, layer, reasons)
            )
        if zero_inputs:
            why.append(
                reasons.get(layer.name)
                or rule.reason
                or state.reasons.get(layer.name)
                or "the units that feed them feed other inputs too"
            )
        notes.append(
            (
                layer.name,
                f"{zero_units} all-zero units and {zero_inputs} all-zero inputs kept "
                f"({'; '.join(dict.fromkeys(why))})",
            )
        )
    return notes


class _State:
    """Working copies of kernels and biases, and the masks of kept units."""

    def __init__(self, layers):
        self.kernel = {}
        self.bias = {}
        self.delta = {}
        self.keep_out = {}
        self.keep_in = {}
        self.reasons = {}
        self.merged = set()
        for layer in layers:
            kernel = np.asarray(ops.convert_to_numpy(layer.kernel), dtype="float64")
            self.kernel[id(layer)] = kernel
            bias = (
                np.asarray(ops.convert_to_numpy(layer.bias), dtype="float64")
                if layer.use_bias
                else np.zeros(kernel.shape[-1])
            )
            self.bias[id(layer)] = bias
            self.delta[id(layer)] = np.zeros(kernel.shape[-1])
            self.keep_out[id(layer)] = np.ones(kernel.shape[-1], bool)
            self.keep_in[id(layer)] = np.ones(kernel.shape[-2], bool)

    def live_rows(self, layer):
        """Per input feature: whether any weight to a kept unit is non-zero."""
        kernel = self.kernel[id(layer)][..., self.keep_out[id(layer)]]
        axes = tuple(a for a in range(kernel.ndim) if a != kernel.ndim - 2)
        return np.any(kernel != 0, axis=axes)

    def constant_units(self, layer):
        """Per unit: its output if it is constant (no live input), else NaN."""
        kernel = self.kernel[id(layer)][..., self.keep_in[id(layer)], :]
        axes = tuple(range(kernel.ndim - 1))
        constant = ~np.any(kernel != 0, axis=axes)
        pre = np.where(constant, self.bias[id(layer)] + self.delta[id(layer)], np.nan)
        return _graph.evaluate(layer.activation, pre)


def _foldable(layer):
    """Whether a constant input reaches every output of `layer` in full.

    A convolution that pads sees zeros instead at the border, unless its
    kernel is 1 wide: then it pads nothing.
    """
    if isinstance(layer, keras.layers.Dense) or layer.padding == "valid":
        return True
    return all(k == 1 for k in layer.kernel_size)


def _prune_edge(state, edge):
    """Removes what `edge` can lose; returns whether anything changed."""
    consumer = edge.consumer
    keep_in = state.keep_in[id(consumer)]
    live = state.live_rows(consumer) & keep_in
    if edge.source is None:
        constants = np.full(edge.units, np.nan)
    else:
        constants = state.constant_units(edge.source)
        constants[~state.keep_out[id(edge.source)]] = np.nan
    for step in edge.path:
        known = ~np.isnan(constants)
        constants = step.constants(constants)
        if edge.source is not None and np.any(known & np.isnan(constants[: known.size])):
            state.reasons.setdefault(
                edge.source.name,
                f"units with a constant output meet the padding of {_graph.describe(step.layer)} "
                f"on the way to '{consumer.name}'",
            )
    # Per unit, or per feature after a Flatten.
    constant_feature = constants[np.arange(edge.unit_of_feature.size) % constants.size]
    foldable = ~np.isnan(constant_feature) & ((constant_feature == 0) | _foldable(consumer))
    removable = keep_in & (~live | foldable)
    stuck = keep_in & live & ~np.isnan(constant_feature) & ~foldable
    if stuck.any() and edge.source is not None:
        # A constant channel's effect on a convolution that pads depends on
        # the position, so it cannot go into a bias. But every constant
        # channel sees the same padding: their effects add up to that of one
        # channel, whose kernel slice is the constants' weighted sum.
        (indices,) = np.nonzero(stuck)
        values = constant_feature[indices]
        anchor = indices[np.argmax(np.abs(values))]
        kernel = state.kernel[id(consumer)]
        kernel[..., anchor, :] = np.tensordot(
            values / constant_feature[anchor], kernel[..., indices, :], axes=([0], [-2])
        )
        removable |= stuck & (np.arange(stuck.size) != anchor)
        if indices.size > 1:
            state.merged.add(edge.source.name)
        merged = "; they were merged into one" if edge.source.name in state.merged else ""
        state.reasons[edge.source.name] = (
            f"units with a constant output cannot be folded into '{consumer.name}', "
            f"which pads {consumer.padding!r}{merged}"
        )
    if edge.source is not None:
        # A unit goes only with all the features it feeds.
        unit_removable = np.ones(edge.units, bool)
        np.logical_and.at(unit_removable, edge.unit_of_feature, removable | ~keep_in)
        unit_removable &= state.keep_out[id(edge.source)]
        removable = unit_removable[edge.unit_of_feature] & keep_in
    if not removable.any():
        return False
    if removable.sum() >= keep_in.sum():
        # Everything could go: the layer computes a constant. Keep one
        # input (one unit) so that the model keeps its shape.
        first = edge.unit_of_feature[np.flatnonzero(keep_in)[0]]
        last = edge.unit_of_feature == first if edge.source is not None else None
        if last is None:
            last = np.zeros_like(removable)
            last[np.flatnonzero(keep_in)[0]] = True
        removable &= ~last
        state.reasons[(edge.source or consumer).name] = (
            "the model computes a constant from here on; one unit kept so that it keeps its shape"
        )
        if not removable.any():
            return False
    fold = removable & foldable
    if fold.any():
        kernel = state.kernel[id(consumer)]
        spatial = tuple(range(kernel.ndim - 2))
        rows = kernel.sum(axis=spatial) if spatial else kernel
        state.delta[id(consumer)] += constant_feature[fold] @ rows[fold]
    keep_in &= ~removable
    if edge.source is not None:
        state.keep_out[id(edge.source)] &= np.isin(
            np.arange(edge.units), edge.unit_of_feature[keep_in]
        )
    return True


def _param_count(kernel_shape, use_bias):
    return int(np.prod(kernel_shape)) + (int(kernel_shape[-1]) if use_bias else 0)


@validate_params(
    {
        "model": InstanceOf(keras.Model, "a built Sequential or functional keras.Model"),
        "return_summary": Boolean(),
    }
)
def compact(model, return_summary=False):
    """Returns a smaller model that computes the same function.

    It works in two passes. The first follows the channels through the
    whole graph, as `kerasreg.dependency_groups` couples them: residual
    streams (`Add`, `Subtract`, `Multiply`, `Average`, `Maximum`, `Minimum`,
    `x + y`), `Concatenate`, branches, depthwise convolutions,
    `MultiHeadAttention` heads, `EinsumDense`, `Embedding` dimensions and
    the feed-forward units of KerasHub's `TransformerEncoder`. A coupled
    channel goes, with every weight of its group (the columns and biases
    that write it, the normalization and depthwise slices that carry it, the
    rows that read it; for a head, its query, key, value and output
    slices), when

    - every weight that reads it is zero: nothing reads it; or
    - every weight that writes or carries it is zero (moving statistics
      aside) and zeros propagate along it (`DependencyGroup.zeros_propagate`:
      activations that map 0 to 0, normalizations with a scale): it is zero
      wherever it is read. `kerasreg.regularize(model,
      kerasreg.GroupLasso(s), groups="dependency")` trains channels to this.

    The second pass looks for chains of `Dense`, `Conv1D` and `Conv2D`
    layers (channels last) with nodes between them that act on each unit
    alone: element-wise activations, as layers or as `keras.ops` functions
    (`keras.ops.relu(x)`, `2.0 * x`), `Dropout` (and the other layers that
    are the identity at inference), `BatchNormalization` over the last axis,
    `FeatureGate`, `DepthwiseConv1D`/`DepthwiseConv2D` (one output per
    channel), pooling, `ZeroPadding` and `Flatten`. It removes:

    - a unit (filter) whose outgoing weights are all zero;
    - a unit whose output is constant (all-zero incoming weights, or a
      channel that a `BatchNormalization` scale or a depthwise kernel of
      zeros makes constant): the constant is added to the next layer's
      bias before the unit goes. A convolution that pads (`"same"`,
      `"causal"`, a kernel wider than 1) sees part of the constant replaced
      by padding at the border, so there the constant units are merged into
      one instead (its slice of the next kernel is their weighted sum),
      unless the constant is 0;
    - a unit the next `FeatureGate` closes (its gate is exactly zero);
    - input features that the first layer's kernel no longer reads (all
      zero rows, or a closed gate): a `SelectFeatures` layer in front of
      that layer keeps the others, so the compacted model takes the same
      inputs as the original. `summary.layers[i].input_indices` lists them,
      and `summary.layers[i].unit_indices` the units each layer keeps.

    Removing one unit can make another removable; the second pass repeats
    until nothing changes.

    One channel of each group stays, so that every tensor keeps a width.
    What it cannot rewrite it copies unchanged: shared layers, channels
    that reach an opaque node (reshapes and slices, normalizations over the
    channels), and any other layer or operation. Layers that hold all-zero
    units or inputs it had to keep are named in a warning, with the node
    that stopped it, and in `summary.left_as_is`. Nested Sequential and
    functional models are compacted in turn. The result is a new model with its own weights (the
    original is not modified), compiled like the original when it was
    compiled (same optimizer, loss and metrics, new optimizer state), and it
    saves and loads like any Keras model. Regularizers that the layers'
    configs hold come with it; a penalty that no config holds (a coupled
    group lasso from `kerasreg.regularize(..., groups="dependency")`) does
    not: its channels are gone. Call `regularize` on the result to train it
    on.

    Only inference is identical: training-time behaviour of `Dropout` and of
    `BatchNormalization` statistics can differ, because removed units no
    longer take part.

    Args:
        model: A built Sequential or functional `keras.Model`.
        return_summary: Whether to return a `CompactionSummary` too.
            Defaults to `False`.

    Returns:
        The compacted model, or `(model, summary)` with `return_summary`.

    Raises:
        ValueError: If `model` is a subclassed model (its layers' wiring is
            not known) or is not built, or holds a layer with weights that
            cannot be rebuilt from its config.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import kerasreg
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(3, activation="relu", name="hidden"),
    ...     keras.layers.Dense(1, name="out"),
    ... ])
    >>> kernel = np.ones((4, 3), "float32")
    >>> kernel[:, 1] = 0.0  # unit 1 of "hidden" reads nothing: relu(bias)
    >>> kernel[2, :] = 0.0  # input feature 2 is read by no unit
    >>> _ = model.layers[0].kernel.assign(kernel)
    >>> small, summary = kerasreg.compact(model, return_summary=True)
    >>> [(row.layer, row.kept_units, row.kept_inputs) for row in summary.layers]
    [('hidden', 2, 3), ('out', 1, 2)]
    >>> x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    >>> bool(np.allclose(model.predict(x, verbose=0), small.predict(x, verbose=0)))
    True
    """
    with penalties_unguarded(model):
        coupled, rows, notes = _compact_coupled(model)
        new_model, summary = _compact(coupled)
    summary = CompactionSummary(
        layers=_merge_rows(rows, summary.layers),
        left_as_is=_merge_notes(tuple(notes) + summary.left_as_is),
        params=int(model.count_params()),
        kept_params=summary.kept_params,
    )
    for name, reason in summary.left_as_is:
        # stacklevel 3: past the `validate_params` wrapper, to the caller's line.
        warnings.warn(f"compact() left layer '{name}' as it is: {reason}.", stacklevel=3)
    return (new_model, summary) if return_summary else new_model


def _initializers(layer, config):
    """The initializers of a Keras layer, by config key, to build it with zeros.

    Its weights come from the original: drawing random ones first would only
    cost time (on JAX, a compilation for every new shape).
    """
    if not type(layer).__module__.startswith(("keras.", "kerasreg.")):
        return {}
    return {
        key: getattr(layer, key)
        for key, value in config.items()
        if key.endswith("initializer") and value is not None and hasattr(layer, key)
    }


def _rebuild(model, layer, weights, config=None):
    """`(new layer, finish)`: `layer` rebuilt from `config` (by default its
    own), and what sets its weights once the new model has built it.

    A layer without weights that cannot be rebuilt from its config (a
    `Lambda` around a Python function) is used as it is: it holds nothing
    that the new model could share with the original.
    """
    changed = config is not None
    try:
        config = layer.get_config() if config is None else config
        initializers = _initializers(layer, config)
        new = type(layer).from_config({**config, **dict.fromkeys(initializers, "zeros")})
    except Exception as error:  # whatever the layer's own code raises
        if not layer.weights and not changed:
            return layer, None
        raise InvalidArgumentError(
            "Invalid value for argument `model`: expected layers that can be "
            "rebuilt with `from_config(get_config())`; layer "
            f"'{layer.name}' ({type(layer).__name__}) cannot: {error}. "
            f"Received: model={model.name!r}"
        ) from error

    def finish():
        new.set_weights(weights)
        for key, initializer in initializers.items():
            setattr(new, key, initializer)

    return new, finish


# Coupled channels: a channel of a residual stream, a concatenation, an
# attention head, ... goes with every weight of its `DependencyGroup`.


def _entries(member, channels):
    """The values of `member`'s entries of `channels`, shape `(len(channels), -1)`."""
    values = np.asarray(ops.convert_to_numpy(member.variable.value))
    taken = np.take(values, member.indices[channels].reshape(-1), axis=member.axis)
    return np.moveaxis(taken, member.axis, 0).reshape(len(channels), -1)


def _zero(members, channels):
    """Per channel of `channels`: whether `members` hold entries, all zero."""
    zero = np.full(len(channels), bool(members))
    for member in members:
        zero &= ~np.any(_entries(member, channels) != 0, axis=1)
    return zero


def _statistic(member):
    """Whether `member` is a moving statistic, which says nothing of the channel's value."""
    return member.variable.path.split("/")[-1] in ("moving_mean", "moving_variance")


def _silent_channels(group):
    """Per channel of `group`: whether removing it leaves the model's function as is.

    It is so when no weight reads it (its readers' rows are zero), or when
    it is zero wherever it is read (its writers and carriers are zero and
    zeros propagate along it).
    """
    channels = np.arange(group.channels)
    silent = _zero([m for m in group.members if m.role == READS], channels)
    if group.zeros_propagate:
        own = [m for m in group.members if m.role in (WRITES, CARRIES) and not _statistic(m)]
        silent |= _zero(own, channels)
    return silent


def _coupled_cuts(model):
    """What the coupled pass removes: `(cuts, notes)`.

    `cuts` maps `(id(variable), axis)` to `(variable, axis, indices)`, the
    entries that go; `notes` names the layers whose silent channels stay.
    """
    cuts, notes = {}, []
    for group in dependency_groups(model):
        silent = _silent_channels(group)
        if not silent.any():
            continue
        if group.reason in (MODEL_INPUT, MODEL_OUTPUT):
            # Input features go through `SelectFeatures` in the second pass;
            # the outputs keep their width.
            continue
        if not group.removable:
            writers = [m.layer for m in group.members if m.role == WRITES]
            notes.append(
                (
                    (writers or group.layers)[0],
                    f"{int(silent.sum())} coupled channels with all-zero weights kept "
                    f"({group.reason})",
                )
            )
            continue
        if silent.all():
            silent[0] = False  # one channel keeps the tensors' shapes
        for member in group.members:
            key = (id(member.variable), member.axis)
            variable, axis, indices = cuts.get(key, (member.variable, member.axis, ()))
            cuts[key] = (variable, axis, tuple(indices) + tuple(member.indices[silent].ravel()))
    return cuts, notes


def _resized_config(layer, config, shapes):
    """`layer`'s config for its new weight shapes (`id(variable)` -> shape)."""

    def width(variable, axis=-1):
        return int(shapes[id(variable)][axis])

    if isinstance(layer, keras.layers.MultiHeadAttention):
        config["num_heads"] = width(layer._query_dense.kernel, 1)
        config["output_shape"] = width(layer._output_dense.kernel)
    elif _is_keras_hub(layer, "TransformerEncoder"):
        config["intermediate_dim"] = width(layer._feedforward_intermediate_dense.kernel)
    elif isinstance(layer, keras.layers.Embedding):
        config["output_dim"] = width(layer.embeddings)
    elif isinstance(layer, keras.layers.EinsumDense):
        output_shape = config["output_shape"]
        if isinstance(output_shape, int):
            config["output_shape"] = width(layer.kernel)
        else:
            config["output_shape"] = list(output_shape[:-1]) + [width(layer.kernel)]
    elif isinstance(layer, FeatureGate):
        if config.get("feature_names"):
            keep = _kept_mask(shapes, layer.gates)
            config["feature_names"] = [
                n for n, k in zip(config["feature_names"], keep, strict=True) if k
            ]
    elif "filters" in config or "units" in config:
        config["filters" if "filters" in config else "units"] = width(layer.kernel)
    return config


def _kept_mask(shapes, variable, axis=-1):
    """Which entries of `variable` along `axis` stay."""
    axis %= len(variable.shape)
    return shapes.get(("mask", id(variable), axis), np.ones(variable.shape[axis], bool))


def _cut_model(model, cuts, rows, finishers, input_shapes=None):
    """A copy of `model` without the entries in `cuts` (nested models included).

    The copy's weights are set by `finishers`, to call once the outermost
    copy is built. A nested model is copied when it is called, on inputs
    that may have lost channels: `input_shapes` are theirs (`None` for the
    outermost model, whose inputs keep their shapes).
    """
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    clones = {}

    def clone(layer):
        if id(layer) in clones:
            return clones[id(layer)]
        if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
            # A `keras.ops` function (no weights), or a nested model: copied
            # when called, once its inputs' shapes are known.
            return layer
        weights, shapes, changed = [], {}, False
        for variable, value in zip(layer.weights, layer.get_weights(), strict=True):
            for axis in range(value.ndim):
                cut = cuts.get((id(variable), axis))
                if cut is not None:
                    keep = np.ones(value.shape[axis], bool)
                    keep[list(cut[2])] = False
                    value = np.compress(keep, value, axis=axis)
                    shapes[("mask", id(variable), axis)] = keep
                    changed = True
            shapes[id(variable)] = value.shape
            weights.append(value)
        config = None
        if changed:
            config = _resized_config(layer, layer.get_config(), shapes)
            rows.append(_cut_row(layer, shapes))
        new, finish = _rebuild(model, layer, weights, config)
        if finish is not None:
            finishers.append(finish)
        clones[id(layer)] = new
        return new

    def nested(layer, shapes):
        if id(layer) not in clones:
            clones[id(layer)] = _cut_model(layer, cuts, rows, finishers, shapes)
        return clones[id(layer)]

    def call_function(layer, *args, **kwargs):
        if isinstance(layer, keras.Model):
            tensors = keras.tree.flatten(args[0] if args else kwargs.get("inputs"))
            shapes = [tuple(t.shape) for t in tensors if hasattr(t, "shape")]
            layer = nested(layer, shapes)
        return layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):
        ref = _graph.functional_of(model).inputs[0]
        shape = tuple(ref.shape) if input_shapes is None else input_shapes[0]
        new_model = keras.Sequential(
            [keras.Input(batch_shape=shape, dtype=ref.dtype, name=ref.name)],
            name=model.name,
            trainable=model.trainable,
        )
        for layer in layers:
            if isinstance(layer, keras.Model):
                layer = nested(layer, [shape])
            else:
                layer = clone(layer)
            new_model.add(layer)
            shape = tuple(new_model.outputs[0].shape)
    else:
        input_tensors = None
        if input_shapes is not None:
            originals = _graph.functional_of(model).inputs
            input_tensors = keras.tree.pack_sequence_as(
                _graph.functional_of(model)._inputs_struct,
                [
                    keras.Input(batch_shape=shape, dtype=t.dtype, name=t.name)
                    for shape, t in zip(input_shapes, originals, strict=True)
                ],
            )
        new_model = keras.models.clone_model(
            model,
            input_tensors=input_tensors,
            clone_function=clone,
            call_function=call_function,
        )
    return new_model


def _cut_row(layer, shapes):
    """The `LayerCompaction` of a layer that lost coupled channels."""
    variables = layer.weights
    first = variables[0]
    # The axes of the units (heads, filters) and of the inputs.
    if isinstance(layer, keras.layers.MultiHeadAttention):
        first, axis, in_axis = layer._query_dense.kernel, 1, 0
    elif isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        axis, in_axis = -2, -2  # one filter per channel
    else:
        axis, in_axis = -1, (-2 if len(first.shape) >= 2 else -1)
    before, after = first.shape, shapes[id(first)]
    inputs_before, inputs_after = before[in_axis], after[in_axis]
    units = int(before[axis])
    kept = _kept_mask(shapes, first, axis)
    return LayerCompaction(
        layer=layer.name,
        units=units,
        kept_units=int(after[axis]),
        inputs=int(inputs_before),
        kept_inputs=int(inputs_after),
        params=int(sum(np.prod(v.shape) for v in variables)),
        kept_params=int(sum(np.prod(shapes[id(v)]) for v in variables)),
        unit_indices=tuple(int(i) for i in np.flatnonzero(kept)),
    )


def _compact_coupled(model):
    """The coupled pass: `(model, rows, notes)`; the model itself when nothing goes."""
    cuts, notes = _coupled_cuts(model)
    if not cuts:
        return model, [], notes
    rows, finishers = [], []
    try:
        new_model = _cut_model(model, cuts, rows, finishers)
        for finish in finishers:
            finish()
    except ValueError as error:  # a nested model that Keras cannot clone
        reason = f"coupled channels kept: the model cannot be rebuilt ({error})"
        return model, [], notes + [(model.name, reason)]
    if model.compiled and not new_model.compiled:
        new_model.compile_from_config(model.get_compile_config())
    return new_model, rows, notes


def _merge_rows(first, second):
    """Rows of two passes, one per layer: sizes from before the first, after the second."""
    merged = {row.layer: row for row in first}
    for row in second:
        earlier = merged.get(row.layer)
        if earlier is None:
            merged[row.layer] = row
            continue
        units = None
        if earlier.unit_indices is not None and row.unit_indices is not None:
            units = tuple(earlier.unit_indices[i] for i in row.unit_indices)
        merged[row.layer] = dataclasses.replace(
            row,
            units=earlier.units,
            inputs=earlier.inputs,
            params=earlier.params,
            unit_indices=units,
        )
    return tuple(merged.values())


def _merge_notes(notes):
    """One `(layer, reasons)` note per layer, its reasons joined in order."""
    merged = {}
    for name, reason in notes:
        merged.setdefault(name, []).append(reason)
    return tuple((name, "; ".join(dict.fromkeys(reasons))) for name, reasons in merged.items())


def _compact(model):
    graph = _graph.Graph(model)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    reasons = {}
    edges = _find_edges(graph, layers, reasons)
    compute = {id(e.consumer): e.consumer for e in edges}
    compute.update({id(e.source): e.source for e in edges if e.source is not None})
    state = _State(compute.values())
    changed = True
    while changed:
        changed = False
        for edge in edges:
            changed |= _prune_edge(state, edge)

    notes = _left_as_is(graph, layers, state, reasons)

    # Per-unit weights of the layers between a source and its consumer.
    path_masks = {}
    for edge in edges:
        if edge.source is not None:
            for step in edge.path:
                if step.sliced:
                    # Per unit, or per feature after a Flatten.
                    mask = state.keep_out[id(edge.source)][np.arange(step.width) % edge.units]
                    path_masks[id(step.layer)] = (mask, step.rule)
    input_selection = {}
    for edge in edges:
        keep_in = state.keep_in[id(edge.consumer)]
        if edge.source is None and not keep_in.all():
            input_selection[id(edge.consumer)] = tuple(int(i) for i in np.flatnonzero(keep_in))

    rows = []
    clones = {}

    def clone(layer):
        if id(layer) in clones:
            return clones[id(layer)]
        if not isinstance(layer, keras.layers.Layer):
            # A `keras.ops` function (`x + y`, `keras.ops.relu(x)`): it holds
            # no weights, and the new model calls the same operation.
            clones[id(layer)] = (layer, None)
            return clones[id(layer)]
        if isinstance(layer, keras.Model):
            try:
                new, inner = _compact(layer)
            except ValueError:
                new, inner = None, None
            if new is not None:
                rows.extend(inner.layers)
                notes.extend(inner.left_as_is)
                clones[id(layer)] = (new, None)
                return clones[id(layer)]
        weights = [np.asarray(w) for w in layer.get_weights()]
        config = None
        if id(layer) in compute:
            config = layer.get_config()
            keep_in = state.keep_in[id(layer)]
            keep_out = state.keep_out[id(layer)]
            kernel = state.kernel[id(layer)][..., keep_in, :][..., keep_out]
            bias = (state.bias[id(layer)] + state.delta[id(layer)])[keep_out]
            use_bias = layer.use_bias or bool(np.any(state.delta[id(layer)] != 0))
            config["filters" if "filters" in config else "units"] = int(keep_out.sum())
            config["use_bias"] = use_bias
            dtype = layer.kernel.dtype
            weights = [kernel.astype(dtype)] + ([bias.astype(dtype)] if use_bias else [])
            if not (keep_in.all() and keep_out.all() and not np.any(state.delta[id(layer)])):
                rows.append(
                    LayerCompaction(
                        layer=layer.name,
                        units=int(keep_out.size),
                        kept_units=int(keep_out.sum()),
                        inputs=int(keep_in.size),
                        kept_inputs=int(keep_in.sum()),
                        params=_param_count(state.kernel[id(layer)].shape, layer.use_bias),
                        kept_params=_param_count(kernel.shape, use_bias),
                        input_indices=input_selection.get(id(layer)),
                        unit_indices=tuple(int(i) for i in np.flatnonzero(keep_out)),
                    )
                )
        elif id(layer) in path_masks:
            mask, rule = path_masks[id(layer)]
            config, weights = rule.slice(layer.get_config(), weights, mask)
        clones[id(layer)] = _rebuild(model, layer, weights, config)
        return clones[id(layer)]

    def new_layer(layer):
        return clone(layer)[0]

    def call_function(layer, *args, **kwargs):
        original = originals.get(id(layer))
        indices = input_selection.get(id(original))
        if indices is not None:
            selector = SelectFeatures(indices, name=f"{original.name}_inputs")
            args = (selector(args[0]),) + tuple(args[1:])
        return layer(*args, **kwargs)

    originals = {id(new_layer(layer)): layer for layer in layers}

    if isinstance(model, keras.Sequential):
        new_layers = []
        for layer in layers:
            indices = input_selection.get(id(layer))
            if indices is not None:
                new_layers.append(SelectFeatures(indices, name=f"{layer.name}_inputs"))
            new_layers.append(new_layer(layer))
        ref = _graph.functional_of(model).inputs[0]
        new_model = keras.Sequential(
            [keras.Input(batch_shape=ref.shape, dtype=ref.dtype, name=ref.name)] + new_layers,
            name=model.name,
            trainable=model.trainable,
        )
    else:
        new_model = keras.models.clone_model(
            model, clone_function=new_layer, call_function=call_function
        )
    for layer in layers:
        _, finish = clone(layer)
        if finish is not None:
            finish()
    if model.compiled:
        # Like the original: optimizer, loss and metrics from its config, new
        # state. (`clone_model` compiles functional copies itself; Sequential
        # models built here are not.)
        if not new_model.compiled:
            new_model.compile_from_config(model.get_compile_config())

    summary = CompactionSummary(
        layers=tuple(rows),
        left_as_is=tuple(dict.fromkeys(notes)),
        params=int(model.count_params()),
        kept_params=int(new_model.count_params()),
    )
    return new_model, summary
