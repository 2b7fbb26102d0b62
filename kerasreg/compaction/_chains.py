"""The chain pass of `compact`: what goes from chains of Dense and convolution layers.

It follows units from one compute layer (`Dense`, `Conv1D`, `Conv2D`) to the
next through nodes that act on each unit alone, and decides, on working
copies of the kernels and biases, which units and inputs go and which
constants fold into the next bias. `plan_chains` returns the decisions;
`_rebuild.rebuild_chains` makes the smaller model from them.
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from kerasreg import _graph

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


@dataclasses.dataclass(frozen=True)
class ChainPlan:
    """What the chain pass decided for one model, before anything is rebuilt.

    Attributes:
        layers: The model's layers, its `InputLayer`s left out.
        compute: `{id(layer): layer}`, the compute layers at either end of
            a chain.
        state: Their kernels and biases as trimmed, and the units and
            inputs each keeps (`_State`).
        notes: `(layer name, reason)` for the layers that keep all-zero
            units or inputs.
        path_masks: `{id(layer): (mask, rule)}`, the units that each
            per-channel node between two compute layers keeps.
        input_selection: `{id(layer): indices}`, the input features that a
            first layer still reads, where it reads fewer than before.
    """

    layers: list
    compute: dict
    state: _State
    notes: list
    path_masks: dict
    input_selection: dict


def _path_masks(state, edges):
    """Per-unit weights of the layers between a source and its consumer: which stay."""
    path_masks = {}
    for edge in edges:
        if edge.source is not None:
            for step in edge.path:
                if step.sliced:
                    # Per unit, or per feature after a Flatten.
                    mask = state.keep_out[id(edge.source)][np.arange(step.width) % edge.units]
                    path_masks[id(step.layer)] = (mask, step.rule)
    return path_masks


def _input_selection(state, edges):
    """The model's input features that each first layer still reads, where fewer."""
    input_selection = {}
    for edge in edges:
        keep_in = state.keep_in[id(edge.consumer)]
        if edge.source is None and not keep_in.all():
            input_selection[id(edge.consumer)] = tuple(int(i) for i in np.flatnonzero(keep_in))
    return input_selection


def plan_chains(model):
    """The chain pass's decisions for `model` (its nested models aside): a `ChainPlan`.

    Removing one unit can make another removable: edges are pruned until
    nothing changes.
    """
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
    return ChainPlan(
        layers=layers,
        compute=compute,
        state=state,
        notes=_left_as_is(graph, layers, state, reasons),
        path_masks=_path_masks(state, edges),
        input_selection=_input_selection(state, edges),
    )
