"""Coupled channels: the weights that must be removed together.

A channel of a tensor is written by the layers that produce it and read by
the layers that consume it. When tensors meet in an `Add` (a residual
stream), a `Multiply` or any entry-by-entry merge, their channels are one:
channel `c` can only leave the model if every layer that writes or reads
`c`, in every branch, drops it. `Concatenate` places the channels of its
inputs side by side; `Flatten` spreads each channel over the positions;
`BatchNormalization`, depthwise convolutions and `FeatureGate` carry
weights of their own per channel; the heads of `MultiHeadAttention` are
channels of its projections.

`dependency_groups(model)` follows these couplings through a Sequential or
functional model (nested ones included) and returns the coupled groups,
each a `DependencyGroup`: a set of channels that share the same layers, and
for each channel the `(variable, axis, index)` entries that go with it.
"""

import dataclasses

import keras
import numpy as np

from kerasreg import _graph
from kerasreg._graph import register_layer_rule
from kerasreg._graph import zero_to_zero as _zero_to_zero
from kerasreg._validation import InstanceOf
from kerasreg._validation import validate_params

__all__ = [
    "DependencyGroup",
    "GroupMember",
    "dependency_groups",
    "register_layer_rule",
]

WRITES = _graph.WRITES
READS = _graph.READS
CARRIES = _graph.CARRIES

# Why the channels at the model's edges stay.
MODEL_INPUT = "reaches a model input"
MODEL_OUTPUT = "reaches a model output"


@dataclasses.dataclass(frozen=True)
class GroupMember:
    """The entries of one variable in a `DependencyGroup`.

    Attributes:
        layer: The path of the layer that owns the variable (`"/"`-joined
            names from the model down).
        variable: The variable.
        axis: The axis of `variable` the entries lie on.
        indices: Int array of shape `(channels, k)`: row `i` holds the
            `k` indices along `axis` that belong to channel `i` of the group
            (`k > 1` after a `Flatten`, where one channel becomes a feature
            per position).
        role: `"writes"` (the layer computes the channel: a kernel column and
            its bias), `"reads"` (the layer consumes it: kernel rows) or
            `"carries"` (a weight of the channel alone, such as a
            `BatchNormalization` scale).
    """

    layer: str
    variable: object
    axis: int
    indices: np.ndarray
    role: str

    @property
    def params(self):
        """Entries of `variable` per channel of the group."""
        shape = tuple(self.variable.shape)
        return int(np.prod(shape) // shape[self.axis]) * self.indices.shape[1]

    def __repr__(self):
        return f"{self.layer}/{self.variable.name}[axis {self.axis}, {self.role}]"


@dataclasses.dataclass(frozen=True, repr=False)
class DependencyGroup:
    """Channels that must be removed together with all their entries.

    Each of the `channels` channels has the same members; channel `i` is
    made of `(member.variable, member.axis, member.indices[i, j])` for every
    member and `j`. Removing it removes every one of these entries.

    Attributes:
        channels: The number of channels that share these members.
        members: The `GroupMember`s, in the model's order.
        removable: Whether a channel can leave the model: `False` when the
            channels reach a model input or output or a node whose effect
            on channels is not known.
        reason: Why not, when not removable; else `None`.
        zeros_propagate: Whether a channel whose `"writes"` and `"carries"`
            weights are all zero (`BatchNormalization`'s moving statistics
            aside) is zero wherever it is read: every function on its way
            maps 0 to 0 and every `BatchNormalization` on it has a scale.
            Such a channel can go, readers and all. Otherwise only zero
            readers let it go.
    """

    channels: int
    members: tuple
    removable: bool
    reason: str | None
    zeros_propagate: bool = True

    @property
    def layers(self):
        """The paths of the layers whose weights the group holds, in order."""
        return list(dict.fromkeys(m.layer for m in self.members))

    @property
    def params(self):
        """The parameters of one channel (all members)."""
        return sum(m.params for m in self.members)

    def entries(self, channel):
        """The `(variable, axis, index)` triples of one channel."""
        return [
            (m.variable, m.axis, int(index)) for m in self.members for index in m.indices[channel]
        ]

    def __repr__(self):
        roles = {}
        for m in self.members:
            roles.setdefault(m.role, []).append(m.layer)
        parts = [f"{role} {', '.join(dict.fromkeys(names))}" for role, names in roles.items()]
        state = "removable" if self.removable else f"kept: {self.reason}"
        return (
            f"<DependencyGroup {self.channels} channels, {self.params} params each ({state}); "
            + ("; ".join(parts) + ">")
        )


class _Channels:
    """Union-find over the channels of every tensor and weight axis in a model."""

    def __init__(self):
        self.parent = []
        self.spaces = {}  # key -> (offset, width)
        self.pinned = {}  # channel -> reason
        self.nonzero = set()  # channels where a zero input does not give a zero output
        self.members = []  # (channel, layer path, variable, axis, index, role)
        self.described = set()  # layers whose weights are in `members` (shared: once)
        self.constants = {}  # id(tensor) -> per-channel constants (NaN: not constant)
        self.sites = []  # `_Site`s: where compute layers read channels
        self.padded = {}  # id(tensor) -> constants inside the zeros a padding added
        self.touched = None  # while a composite rule connects: the tensors it read
        self.exact = True  # False: normalizations over the channels are cut through
        self.inexact = set()  # reasons that pin only while compaction is exact
        self.reasons = {}  # channel -> every reason it is pinned

    def constant(self, tensor):
        """The per-channel constants of `tensor` (NaN where not constant)."""
        found = self.constants.get(id(tensor))
        return np.full(_width(tensor), np.nan) if found is None else found

    def first_time(self, layer):
        """Whether `layer`'s weights are met for the first time (a shared layer: once)."""
        if id(layer) in self.described:
            return False
        self.described.add(id(layer))
        return True

    def space(self, key, width):
        if key not in self.spaces:
            offset = len(self.parent)
            self.parent.extend(range(offset, offset + width))
            self.spaces[key] = (offset, width)
        offset, known = self.spaces[key]
        if known != width:
            raise ValueError(f"channel width {width} for a space of width {known}")
        return offset

    def tensor(self, tensor):
        if self.touched is not None:
            self.touched.add(id(tensor))
        return self.space(("tensor", id(tensor)), _width(tensor))

    def find(self, i):
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def join(self, a, b, width):
        for c in range(width):
            self.union(a + c, b + c)

    def pin(self, offset, width, reason):
        for c in range(width):
            self.pinned.setdefault(offset + c, reason)
            self.reasons.setdefault(offset + c, set()).add(reason)

    def keeps_zero(self, offset, width, keeps):
        """Records, per channel, whether an operation on it maps 0 to 0."""
        keeps = np.broadcast_to(np.asarray(keeps, bool), (width,))
        self.nonzero.update(offset + c for c in range(width) if not keeps[c])

    def pin_tensor(self, tensor, reason):
        if _width(tensor):
            self.pin(self.tensor(tensor), _width(tensor), reason)

    def add(self, offset, path, variable, axis, role, index_of=None):
        width = variable.shape[axis]
        for c in range(width):
            channel = offset + (c if index_of is None else index_of(c))
            self.members.append((channel, path, variable, axis % len(variable.shape), c, role))


def _width(tensor):
    shape = getattr(tensor, "shape", None)
    if not shape or shape[-1] is None:
        return 0
    return int(shape[-1])


# Merges of zeros that are not zero (0 / 0, 0 ** 0).
_NONZERO_MERGES = frozenset({"Divide", "TrueDivide", "Power"})


# A layer's input channels that a compute layer reads: where constants fold.
@dataclasses.dataclass(frozen=True)
class _Site:
    layer: object
    compute: object  # _graph.Compute
    rows: int  # offset of the layer's rows space
    width: int
    constants: np.ndarray  # of the input tensor, NaN where not constant
    pads: bool  # whether a constant other than 0 meets padding here


def _compute(channels, path, layer, node, compute):
    """A layer that reads the channels of one tensor and writes those of another."""
    kernel, in_axis, out_axis = compute.kernel, compute.in_axis, compute.out_axis
    width_in, width_out = kernel.shape[in_axis], kernel.shape[out_axis]
    source, target = node.input_tensors[0], node.outputs[0]
    if compute.groups > 1:
        # Kernel row r reads channels r, r + width_in, ...; column j is
        # written in group j // per_group, at place j % per_group.
        per_group = width_out // compute.groups
        rows = channels.space(("rows", id(layer)), width_in)
        cols = channels.space(("cols", id(layer)), per_group)
        for i in range(_width(source)):
            channels.union(channels.tensor(source) + i, rows + i % width_in)
        for j in range(_width(target)):
            channels.union(channels.tensor(target) + j, cols + j % per_group)
        index_of = lambda j: j % per_group  # noqa: E731
    else:
        rows = channels.space(("rows", id(layer)), width_in)
        cols = channels.space(("cols", id(layer)), width_out)
        channels.join(channels.tensor(source), rows, width_in)
        channels.join(channels.tensor(target), cols, width_out)
        index_of = None
    if channels.first_time(layer):
        channels.add(rows, path, kernel, in_axis, READS)
        for variable, axis in compute.reads:
            channels.add(rows, path, variable, axis, READS)
        channels.add(cols, path, kernel, out_axis, WRITES, index_of)
        if compute.bias is not None:
            channels.add(cols, path, compute.bias, -1, WRITES, index_of)
    constants, pads = channels.constant(source), compute.pads
    if id(source) in channels.padded:
        constants, pads = channels.padded[id(source)][0], True
    if compute.groups > 1:
        # Per kernel row: 0 where every channel it reads is 0, else unknown.
        zero = np.all(constants.reshape(compute.groups, width_in) == 0, axis=0)
        site_constants = np.where(zero, 0.0, np.nan)
    else:
        site_constants = constants
    channels.sites.append(_Site(layer, compute, rows, width_in, site_constants, pads))
    return constants, pads


def _grouped_constants(compute, activation_values, constants, pads):
    """The constant output channels of a grouped convolution (NaN: not constant)."""
    kernel = np.moveaxis(
        _graph._numpy(compute.kernel), (compute.in_axis, compute.out_axis), (-2, -1)
    )
    live = np.any(kernel.reshape(-1, *kernel.shape[-2:]) != 0, axis=0)  # (rows, out)
    rows, width_out = live.shape
    per_group = width_out // compute.groups
    by_group = constants.reshape(compute.groups, rows)
    out = np.full(width_out, np.nan)
    bias = _graph._numpy(compute.bias) if compute.bias is not None else np.zeros(width_out)
    summed = kernel.reshape(-1, rows, width_out).sum(axis=0)
    for j in range(width_out):
        c = by_group[j // per_group]
        varying = np.isnan(c) | (pads & (c != 0))
        if not np.any(live[:, j] & varying):
            out[j] = bias[j] + np.where(np.isnan(c), 0.0, c) @ summed[:, j]
    values = activation_values(np.where(np.isnan(out), np.nan, out))
    return np.where(np.isnan(out), np.nan, values)


def _compute_constants(compute, activation_values, constants, pads):
    """The constant output channels of a compute layer (NaN: not constant)."""
    kernel = np.moveaxis(
        _graph._numpy(compute.kernel), (compute.in_axis, compute.out_axis), (-2, -1)
    )
    live = np.any(kernel.reshape(-1, *kernel.shape[-2:]) != 0, axis=0)
    for variable, axis in compute.reads:
        values = np.moveaxis(_graph._numpy(variable), axis, 0)
        live &= np.any(values.reshape(values.shape[0], -1) != 0, axis=1)[:, None]
    varying = np.isnan(constants)
    if pads:
        varying |= constants != 0
    constant = ~np.any(live & varying[:, None], axis=0)
    bias = _graph._numpy(compute.bias) if compute.bias is not None else 0.0
    if compute.fold is None:
        pre = bias + np.zeros(constant.shape)
        constant &= ~np.any(
            live & ~np.isnan(constants)[:, None] & (constants != 0)[:, None], axis=0
        )
    else:
        pre = bias + compute.fold(np.where(np.isnan(constants), 0.0, constants))
    out = activation_values(np.where(constant, pre, np.nan))
    return np.where(constant, out, np.nan)


def _merge_constants(operation, inputs):
    """Per-channel constants after an entry-by-entry merge (NaN: not constant)."""
    name = type(operation).__name__
    if name == "Multiply":
        out = np.prod(np.where(np.isnan(inputs), 1.0, inputs), axis=0)
        zero = np.any(inputs == 0, axis=0)
        return np.where(zero, 0.0, np.where(np.any(np.isnan(inputs), axis=0), np.nan, out))
    with np.errstate(all="ignore"):
        if name == "Add":
            return np.sum(inputs, axis=0)
        if name == "Subtract" and len(inputs) == 2:
            return inputs[0] - inputs[1]
        if name == "Average":
            return np.mean(inputs, axis=0)
        if name == "Maximum":
            return np.max(inputs, axis=0)
        if name == "Minimum":
            return np.min(inputs, axis=0)
    return np.full(inputs.shape[1:], np.nan)


def _walk_nested(channels, path, layer, node):
    """A nested model: its inputs and outputs joined with the outer tensors, walked within."""
    inner = _graph.functional_of(layer)
    for outer, tensor in zip(node.input_tensors, inner.inputs, strict=False):
        if _width(outer) and _width(outer) == _width(tensor):
            channels.join(channels.tensor(outer), channels.tensor(tensor), _width(outer))
            channels.constants[id(tensor)] = channels.constant(outer)
        else:
            channels.pin_tensor(outer, f"{_graph.describe(layer)} reshapes its input")
    _walk_graph(channels, layer, path)
    for outer, tensor in zip(node.outputs, inner.outputs, strict=False):
        channels.join(channels.tensor(outer), channels.tensor(tensor), _width(outer))
        channels.constants[id(outer)] = channels.constant(tensor)


def _walk_composite(channels, path, layer, node, rule):
    """A layer that joins channels itself; the inputs it does not read stay."""
    channels.touched = set()
    rule.connect(channels, path)
    for tensor in node.input_tensors:
        if id(tensor) not in channels.touched:
            channels.pin_tensor(tensor, f"{_graph.describe(layer)} reads it otherwise")
    channels.touched = None


def _walk_compute(channels, path, layer, node, rule):
    output = node.outputs[0]
    constants, pads = _compute(channels, path, layer, node, rule.compute)
    if rule.values is None:
        name = _graph.activation_name(layer.activation)
        channels.pin_tensor(
            output, f"{_graph.describe(layer)} has activation {name!r}, which mixes its units"
        )
    else:
        constants_of = _grouped_constants if rule.compute.groups > 1 else _compute_constants
        channels.constants[id(output)] = constants_of(rule.compute, rule.values, constants, pads)
    cols, width = channels.spaces[("cols", id(layer))]
    keeps = rule.values is not None and bool(_zero_to_zero(rule.values)[0])
    channels.keeps_zero(cols, width, keeps)


def _walk_pass_through(channels, path, layer, node, rule):
    """Element-wise functions and pooling: each channel to the same channel."""
    source, target = node.input_tensors[0], node.outputs[0]
    width = _width(source)
    channels.join(channels.tensor(source), channels.tensor(target), width)
    channels.keeps_zero(channels.tensor(target), width, _zero_to_zero(rule.values, width))
    channels.constants[id(target)] = rule.values(channels.constant(source))
    if rule.pads:
        widest = int(np.max(np.ravel(layer.padding)))
        channels.padded[id(target)] = (channels.constant(source), widest)
    elif id(source) in channels.padded and rule.after_padding is not None:
        channels.constants[id(target)] = rule.after_padding(*channels.padded[id(source)])


def _walk_per_channel(channels, path, layer, node, rule):
    """Each channel alone, with weights of its own per channel (carried with it)."""
    source, target = node.input_tensors[0], node.outputs[0]
    if rule.inexact:
        # Cut through only where the user lets outputs change.
        why = f"{_graph.describe(layer)} {rule.reason}"
        channels.inexact.add(why)
        for tensor in (source, target):
            channels.pin_tensor(tensor, why)
    width = _width(source)
    own = channels.space(("carried", id(layer)), width)
    channels.join(channels.tensor(source), own, width)
    channels.join(channels.tensor(target), own, width)
    channels.keeps_zero(own, width, rule.keeps_zero)
    if channels.first_time(layer):
        for variable, axis in rule.carries:
            channels.add(own, path, variable, axis, CARRIES)
    channels.constants[id(target)] = rule.values(channels.constant(source))


def _walk_flatten(channels, path, layer, node, rule):
    source, target = node.input_tensors[0], node.outputs[0]
    width = _width(source)
    start, end = channels.tensor(source), channels.tensor(target)
    for j in range(_width(target)):
        channels.union(start + j % width, end + j)
    channels.constants[id(target)] = rule.values(channels.constant(source))


def _walk_merge(channels, path, layer, node, rule):
    target = channels.tensor(node.outputs[0])
    for tensor in node.input_tensors:
        channels.join(channels.tensor(tensor), target, _width(tensor))
    keeps = type(layer).__name__ not in _NONZERO_MERGES
    channels.keeps_zero(target, _width(node.outputs[0]), keeps)
    channels.constants[id(node.outputs[0])] = _merge_constants(
        layer, np.stack([channels.constant(t) for t in node.input_tensors])
    )


def _walk_concatenate(channels, path, layer, node, rule):
    target, offset = channels.tensor(node.outputs[0]), 0
    for tensor in node.input_tensors:
        channels.join(channels.tensor(tensor), target + offset, _width(tensor))
        offset += _width(tensor)
    channels.constants[id(node.outputs[0])] = np.concatenate(
        [channels.constant(t) for t in node.input_tensors]
    )


def _walk_opaque(channels, path, layer, node, rule):
    why = f"{_graph.describe(layer)} {rule.reason}" if rule.reason else None
    for tensor in list(node.input_tensors) + list(node.outputs):
        channels.pin_tensor(tensor, why or f"{_graph.describe(layer)} is opaque")


_WALKS = {
    _graph.COMPOSITE: _walk_composite,
    _graph.COMPUTE: _walk_compute,
    _graph.ELEMENTWISE: _walk_pass_through,
    _graph.POOLING: _walk_pass_through,
    _graph.PER_CHANNEL: _walk_per_channel,
    _graph.FLATTEN: _walk_flatten,
    _graph.MERGE: _walk_merge,
    _graph.CONCATENATE: _walk_concatenate,
}


def _walk_graph(channels, model, prefix):
    """Joins the channels of every node of `model` (nested models within), in order."""
    graph = _graph.Graph(model)
    for node in graph.nodes:
        layer = node.operation
        if layer is None or not node.input_tensors:
            continue
        path = _graph.sub_path(prefix, layer)
        if isinstance(layer, keras.Model):
            _walk_nested(channels, path, layer, node)
            continue
        rule = graph.rule(node)
        walk = _WALKS.get(rule.kind, _walk_opaque)
        if rule.kind == _graph.COMPUTE and rule.reason is not None:
            walk = _walk_opaque  # a compute layer that cannot be rewritten
        elif rule.inexact and not channels.exact:
            walk = _walk_per_channel
        walk(channels, path, layer, node, rule)


def _groups(channels):
    """Families of coupled channels with the same members, in the model's order.

    Returns `(groups, roots)`: `roots[i][c]` is the union-find root of
    channel `c` of `groups[i]`.
    """
    components = {}
    variables = {}
    for channel, path, variable, axis, index, role in channels.members:
        key = (path, id(variable), axis, role)
        variables[key] = variable
        entries = components.setdefault(channels.find(channel), {})
        entries.setdefault(key, []).append(index)
    reasons = {}
    for channel, reason in channels.pinned.items():
        reasons.setdefault(channels.find(channel), reason)
    nonzero = {channels.find(channel) for channel in channels.nonzero}
    families = {}
    for root in sorted(components):
        entries = components[root]
        signature = tuple((key, len(indices)) for key, indices in entries.items())
        key = (signature, reasons.get(root), root not in nonzero)
        families.setdefault(key, []).append((root, entries))
    groups, roots = [], []
    for (signature, reason, zeros_propagate), family in families.items():
        members = tuple(
            GroupMember(
                layer=key[0],
                variable=variables[key],
                axis=key[2],
                indices=np.array([sorted(entries[key]) for _, entries in family], dtype="int64"),
                role=key[3],
            )
            for key, _ in signature
        )
        groups.append(
            DependencyGroup(len(family), members, reason is None, reason, zeros_propagate)
        )
        roots.append([root for root, _ in family])
    return groups, roots


def analyse(model, exact=True):
    """`(channels, groups, roots)`: the union-find, its groups and their channels' roots.

    With `exact=False`, normalizations over the channels join their input
    and output channels (their scale and offset carried), pinned with a
    reason in `channels.inexact`.
    """
    channels = _Channels()
    channels.exact = exact
    functional = _graph.functional_of(model)
    _walk_graph(channels, model, "")
    for tensor in functional.inputs:
        channels.pin_tensor(tensor, MODEL_INPUT)
    for tensor in functional.outputs:
        channels.pin_tensor(tensor, MODEL_OUTPUT)
    groups, roots = _groups(channels)
    return channels, groups, roots


@validate_params({"model": InstanceOf(keras.Model, "a built Sequential or functional keras.Model")})
def dependency_groups(model):
    """The groups of weights that must be removed together, channel by channel.

    Follows the channels (the last axis) of every tensor of a Sequential or
    functional model, nested models included, and joins those that must go
    together:

    - the units of `Dense` and convolution layers (`Conv1D`, `Conv2D`),
      `EinsumDense` layers that map the last axis to the last axis (the
      equations of `Dense`-like projections), and `Embedding` output
      dimensions: each channel is written by its producers' kernel columns
      and biases and read by its consumers' kernel rows;
    - residual streams and other entry-by-entry merges (`Add`, `Subtract`,
      `Multiply`, `Average`, `Maximum`, `Minimum`, `x + y`, ...): the
      channels of all inputs and of the output are one;
    - `Concatenate` on the channels: each input's channels at their offset;
    - element-wise activations, dropout, pooling, zero padding: channels
      pass through;
    - `BatchNormalization` (its four vectors), `FeatureGate` and depthwise
      convolutions with `depth_multiplier=1` carry one slice per channel;
    - `Flatten`: a channel becomes one feature per position;
    - `MultiHeadAttention`: its inputs are read by the query, key and value
      kernels' rows and its output written by the output kernel; each head
      is a channel of its own (its query, key and value slices, with their
      biases, and its slice of the output kernel).

    A channel that reaches a model input or output, or a node whose effect
    on channels is not known (a reshape, `LayerNormalization` and other
    normalizations over the channels, whose statistics change when a channel
    goes, grouped convolutions, a layer of another kind), cannot leave the
    model: its group is returned with `removable=False` and the reason.

    Args:
        model: A built Sequential or functional `keras.Model`.

    Returns:
        A list of `DependencyGroup`, in the model's order.

    Raises:
        InvalidArgumentError: If `model` is not a built Sequential or
            functional model.

    Example:

    >>> import keras
    >>> import kerasreg
    >>> inputs = keras.Input((4,))
    >>> x = keras.layers.Dense(6, name="a")(inputs)
    >>> y = keras.layers.Dense(6, name="b")(x)
    >>> z = keras.layers.Add(name="residual")([x, y])
    >>> outputs = keras.layers.Dense(2, name="head")(z)
    >>> model = keras.Model(inputs, outputs)
    >>> for group in kerasreg.dependency.dependency_groups(model):
    ...     print(group.channels, group.layers, group.removable)
    4 ['a'] False
    6 ['a', 'b', 'head'] True
    2 ['head'] False
    """
    return analyse(model)[1]
