"""Compaction: structured zeros into a physically smaller model.

Zeros inside a dense kernel cost the same time and memory as any other
number. Whole units, filters and input features are different: once a unit
is zero on one side, it can be taken out of the network. `compact` finds
them in chains of `Dense` and `Conv1D`/`Conv2D` layers and returns a new,
smaller model that computes the same function.
"""

import dataclasses
import warnings

import keras
import numpy as np
from keras import ops

from kerasreg._validation import Boolean
from kerasreg._validation import InstanceOf
from kerasreg._validation import InvalidArgumentError
from kerasreg._validation import validate_params
from kerasreg.layers import FeatureGate
from kerasreg.layers import SelectFeatures

__all__ = ["CompactionSummary", "LayerCompaction", "compact"]

_COMPUTE_TYPES = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)
_IDENTITY_TYPES = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)
_ELEMENTWISE_LAYERS = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU)
_LOCAL_POOLING = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
)
_GLOBAL_POOLING = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
)
# Activations that act on each entry alone: removing a unit does not change
# the others (softmax, for one, would renormalize).
_ELEMENTWISE_ACTIVATIONS = frozenset(
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


@dataclasses.dataclass(frozen=True)
class LayerCompaction:
    """What `compact` did to one `Dense` or convolution layer.

    Attributes:
        layer: The layer's name.
        units: Output units (filters) before compaction.
        kept_units: Output units after.
        inputs: Input features (channels) of the kernel before compaction.
        kept_inputs: Input features after.
        params: Parameters (kernel and bias) before.
        kept_params: Parameters after.
        input_indices: Indices (into the layer's original inputs) of the
            features a `SelectFeatures` layer now passes to it, or `None`
            when no such layer was inserted.
    """

    layer: str
    units: int
    kept_units: int
    inputs: int
    kept_inputs: int
    params: int
    kept_params: int
    input_indices: tuple | None = None


@dataclasses.dataclass(frozen=True)
class CompactionSummary:
    """The outcome of `compact`.

    Attributes:
        layers: Tuple of `LayerCompaction`, one per `Dense`/convolution layer
            that `compact` rebuilt.
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


def _activation_name(activation):
    try:
        name = keras.activations.serialize(activation)
    except (ValueError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _compute_reason(layer):
    """Why `layer` is not a Dense/Conv layer compaction can rewrite, or None."""
    if type(layer) not in _COMPUTE_TYPES:
        return "not a Dense, Conv1D or Conv2D layer"
    if getattr(layer, "quantization_mode", None):
        return "quantized"
    if getattr(layer, "lora_enabled", False):
        return "LoRA enabled"
    if isinstance(layer, keras.layers.Dense):
        return None
    if layer.data_format != "channels_last":
        return "channels_first convolution"
    if layer.groups != 1:
        return "grouped convolution"
    return None


class _PathStep:
    """A layer between two compute layers that acts on each unit alone."""

    def __init__(self, layer, rank):
        self.layer = layer
        self.rank = rank
        self.sliced = isinstance(layer, (keras.layers.BatchNormalization, FeatureGate))
        self.flatten = isinstance(layer, keras.layers.Flatten) and rank > 2
        # Whether a unit that is constant over positions stays constant.
        self.keeps_constants = not (isinstance(layer, _LOCAL_POOLING) and layer.padding != "valid")

    def constants(self, values):
        """Maps per-unit constants (NaN: not constant) through the layer."""
        layer = self.layer
        if isinstance(layer, FeatureGate):
            gates = np.asarray(ops.convert_to_numpy(layer.gates), dtype="float64")
            return np.where(gates == 0, 0.0, values * gates)
        if isinstance(layer, keras.layers.BatchNormalization):
            weights = {
                v.name: np.asarray(ops.convert_to_numpy(v), "float64") for v in layer.weights
            }
            scale = weights.get("gamma", 1.0)
            offset = weights.get("beta", 0.0)
            inv = scale / np.sqrt(weights["moving_variance"] + layer.epsilon)
            return (values - weights["moving_mean"]) * inv + offset
        if isinstance(layer, keras.layers.Activation) or isinstance(layer, _ELEMENTWISE_LAYERS):
            return _apply_elementwise(layer, values)
        if not self.keeps_constants:
            return np.where(values == 0, 0.0, np.nan)
        return values


def _apply_elementwise(fn, values):
    known = ~np.isnan(values)
    x = ops.convert_to_tensor(np.where(known, values, 0.0)[None, :], dtype="float32")
    out = np.asarray(ops.convert_to_numpy(fn(x)), dtype="float64")[0]
    return np.where(known, out, np.nan)


def _path_reason(layer, rank):
    """Why `layer` cannot sit between two compacted layers, or None."""
    data_format = getattr(layer, "data_format", "channels_last")
    if isinstance(layer, _IDENTITY_TYPES + _ELEMENTWISE_LAYERS):
        return None
    if isinstance(layer, keras.layers.Activation):
        if _activation_name(layer.activation) in _ELEMENTWISE_ACTIVATIONS:
            return None
        return "activation that mixes units"
    if isinstance(layer, keras.layers.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else None
        return (
            None if axis is not None and axis % rank == rank - 1 else "normalizes over other axes"
        )
    if isinstance(layer, FeatureGate):
        return None if layer._axes == (rank - 1,) else "gates other axes"
    if isinstance(layer, (keras.layers.Flatten,) + _LOCAL_POOLING + _GLOBAL_POOLING):
        return None if data_format == "channels_last" else "channels_first"
    return f"{type(layer).__name__} is not supported between compacted layers"


class _Graph:
    """The nodes of a functional model, indexed for walking backwards."""

    def __init__(self, functional):
        self.nodes = [n for nodes in functional._nodes_by_depth.values() for n in nodes]
        self.producer = {}
        self.consumers = {}
        self.layer_nodes = {}
        for node in self.nodes:
            if node.operation is None:
                continue
            self.layer_nodes.setdefault(id(node.operation), []).append(node)
            for t in node.outputs:
                self.producer[id(t)] = node
            for t in node.input_tensors:
                self.consumers.setdefault(id(t), []).append(node)
        self.outputs = {id(t) for t in functional.outputs}

    def single_node(self, layer):
        nodes = self.layer_nodes.get(id(layer), [])
        return nodes[0] if len(nodes) == 1 else None

    def private(self, tensor):
        """Whether `tensor` feeds exactly one layer and is not an output."""
        return len(self.consumers.get(id(tensor), [])) == 1 and id(tensor) not in self.outputs


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


def _find_edges(graph, layers, reasons):
    edges = []
    for layer in layers:
        if _compute_reason(layer) is not None:
            continue
        node = graph.single_node(layer)
        if node is None:
            reasons[layer.name] = "called more than once (shared)"
            continue
        tensor = node.input_tensors[0]
        path = []
        while True:
            producer = graph.producer.get(id(tensor))
            if producer is None or producer.is_input:
                source, units = None, tensor.shape[-1]
                break
            op = producer.operation
            shared = graph.single_node(op) is None or len(producer.input_tensors) != 1
            private = graph.private(tensor)
            if not shared and private and _compute_reason(op) is None:
                name = _activation_name(op.activation)
                if name in _ELEMENTWISE_ACTIVATIONS:
                    source, units = op, op.kernel.shape[-1]
                else:
                    source, units = "opaque", f"{op.name} has activation {name!r}"
                break
            rank = len(producer.input_tensors[0].shape) if producer.input_tensors else 0
            reason = _path_reason(op, rank) if not shared else "shared"
            if reason is None and not private:
                reason = "its output feeds several layers"
            if reason is not None:
                source, units = "opaque", f"{op.name}: {reason}"
                break
            path.insert(0, _PathStep(op, rank))
            tensor = producer.input_tensors[0]
        if source == "opaque":
            reasons[layer.name] = f"fed by {units}"
            continue
        if sum(step.flatten for step in path) > 1 or layer.kernel.shape[-2] % units:
            reasons[layer.name] = "its inputs do not map onto the units before it"
            continue
        edges.append(_Edge(source, path, layer, int(units)))
    return edges


def _left_as_is(graph, layers, state, reasons):
    """`(name, reason)` for compute layers that keep all-zero units or inputs."""
    notes = []
    for layer in layers:
        if type(layer) not in _COMPUTE_TYPES:
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
        node = graph.single_node(layer)
        if node is not None and any(id(t) in graph.outputs for t in node.outputs):
            zero_units = 0  # the model's outputs keep their width
        if not zero_units and not zero_inputs:
            continue
        reason = (
            reasons.get(layer.name)
            or _compute_reason(layer)
            or (
                "its output does not reach a Dense or convolution layer through "
                "layers that compaction supports"
            )
        )
        notes.append(
            (
                layer.name,
                f"{zero_units} all-zero units and {zero_inputs} all-zero inputs kept ({reason})",
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
        return _apply_elementwise(layer.activation, pre)


def _foldable(layer):
    return isinstance(layer, keras.layers.Dense) or layer.padding == "valid"


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
        constants = step.constants(constants)
    constant_feature = constants[edge.unit_of_feature]
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

    Looks for chains of `Dense`, `Conv1D` and `Conv2D` layers (channels
    last), possibly with element-wise activations, `Dropout` (and the other
    layers that are the identity at inference), `BatchNormalization` over
    the last axis, `FeatureGate`, pooling and `Flatten` between them, and
    removes:

    - a unit (filter) whose outgoing weights are all zero;
    - a unit whose incoming weights are all zero: it outputs a constant,
      which is added to the next layer's bias before the unit goes. A
      convolution that pads (`"same"`, `"causal"`) sees part of the
      constant replaced by padding at the border, so there the constant
      units are merged into one instead (its slice of the next kernel is
      their weighted sum), unless the constant is 0;
    - a unit the next `FeatureGate` closes (its gate is exactly zero);
    - input features that the first layer's kernel no longer reads (all
      zero rows, or a closed gate): a `SelectFeatures` layer in front of
      that layer keeps the others, so the compacted model takes the same
      inputs as the original. `summary.layers[i].input_indices` lists them.

    Removing one unit can make another removable; `compact` repeats until
    nothing changes. Layers it cannot rewrite (shared layers, layers of
    other types, units feeding a branch) are copied unchanged; those that
    hold all-zero units or inputs it had to keep are named in a warning and
    in `summary.left_as_is`. Nested Sequential and functional models are
    compacted in turn. The result is a new model with its own weights (the
    original is not modified), compiled like the original when it was
    compiled, and it saves and loads like any Keras model.

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
            not known) or is not built.

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
    new_model, summary = _compact(model)
    for name, reason in summary.left_as_is:
        warnings.warn(f"compact() left layer '{name}' as it is: {reason}.", stacklevel=2)
    return (new_model, summary) if return_summary else new_model


def _functional_of(model):
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


def _compact(model):
    functional = _functional_of(model)
    graph = _Graph(functional)
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

    notes = _left_as_is(graph, layers, state, {**reasons, **state.reasons})

    # Per-unit weights of the layers between a source and its consumer.
    path_masks = {}
    for edge in edges:
        if edge.source is not None:
            for step in edge.path:
                if step.sliced:
                    path_masks[id(step.layer)] = state.keep_out[id(edge.source)]
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
        config = layer.get_config()
        weights = [np.asarray(w) for w in layer.get_weights()]
        if id(layer) in compute:
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
                    )
                )
        elif id(layer) in path_masks:
            mask = path_masks[id(layer)]
            weights = [w[..., mask] for w in weights]
            if isinstance(layer, FeatureGate) and config.get("feature_names"):
                config["feature_names"] = [
                    n for n, keep in zip(config["feature_names"], mask, strict=True) if keep
                ]
        new = type(layer).from_config(config)
        clones[id(layer)] = (new, weights)
        return clones[id(layer)]

    def new_layer(layer):
        return clone(layer)[0]

    def call_function(layer, *args, **kwargs):
        original = originals[id(layer)]
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
        ref = functional.inputs[0]
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
        new, weights = clone(layer)
        if weights is not None:
            new.set_weights(weights)
    if model.compiled:
        new_model.compile_from_config(model.get_compile_config())

    summary = CompactionSummary(
        layers=tuple(rows),
        left_as_is=tuple(dict.fromkeys(notes)),
        params=int(model.count_params()),
        kept_params=int(new_model.count_params()),
    )
    return new_model, summary
