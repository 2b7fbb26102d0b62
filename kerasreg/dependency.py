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
import re

import keras
import numpy as np

from kerasreg import _graph
from kerasreg._validation import InstanceOf
from kerasreg._validation import validate_params

__all__ = ["DependencyGroup", "GroupMember", "dependency_groups"]

WRITES = "writes"  # a producer's weights: its output channel (kernel column, bias)
READS = "reads"  # a consumer's weights: its input channel (kernel rows)
CARRIES = "carries"  # weights of one channel on its way (normalization, depthwise, gate)

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


def _weight(layer, name):
    for variable in layer.weights:
        if variable.path.split("/")[-1] == name or variable.name == name:
            return variable
    return None


def _path(prefix, layer):
    return f"{prefix}/{layer.name}" if prefix else layer.name


# Layers this module reads itself; the others follow `_graph.channel_rule`.


def _entrywise(activation):
    """Whether `activation` computes each entry from that entry alone.

    Keras' named activations are looked up; another callable (a model
    library's own `gelu_approximate`, say) is probed: changing half of the
    entries of a random input must leave the other half of the output
    unchanged, both ways.
    """
    name = _graph.activation_name(activation)
    if name is not None:
        return name in _graph.ELEMENTWISE_ACTIVATIONS
    rng = np.random.default_rng(0)
    x = rng.normal(scale=3.0, size=(2, 16)).astype("float32")
    half = np.arange(16) % 2 == 0
    try:
        y = np.asarray(keras.ops.convert_to_numpy(activation(x)))
        for changed in (half, ~half):
            moved = x.copy()
            moved[:, changed] += rng.normal(size=(2, int(changed.sum()))).astype("float32")
            z = np.asarray(keras.ops.convert_to_numpy(activation(moved)))
            if z.shape != y.shape or not np.array_equal(z[:, ~changed], y[:, ~changed]):
                return False
    except Exception:  # an activation that cannot be probed counts as mixing
        return False
    return True


def _zero_to_zero(fn, width=1):
    """Per entry, whether `fn` (of per-channel constants) maps 0 to exactly 0."""
    try:
        out = np.asarray(fn(np.zeros(width)), dtype="float64")
    except Exception:  # a function that cannot be evaluated counts as not
        return np.zeros(width, bool)
    return np.broadcast_to(out == 0, (width,))


def _activation_keeps_zero(activation):
    if activation is None:
        return True
    return bool(_zero_to_zero(lambda v: _graph.evaluate(activation, v))[0])


# Merges of zeros that are not zero (0 / 0, 0 ** 0).
_NONZERO_MERGES = frozenset({"Divide", "TrueDivide", "Power"})


_NORMALIZATIONS = (
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
)


def _last_axis_einsum(layer):
    """Whether an `EinsumDense` maps the last axis to the last axis, like `Dense`."""
    match = re.fullmatch(r"([a-z.]*)([a-z]),([a-z])([a-z])->([a-z.]*)([a-z])", layer.equation)
    if not match:
        return False
    batch_in, contracted, k_in, k_out, batch_out, out = match.groups()
    return batch_in == batch_out and contracted == k_in and k_out == out


def _compute(channels, path, layer, node, kernel, in_axis, out_axis, bias):
    """A layer that reads the channels of one tensor and writes those of another."""
    rows = channels.space(("rows", id(layer)), kernel.shape[in_axis])
    cols = channels.space(("cols", id(layer)), kernel.shape[out_axis])
    activation = getattr(layer, "activation", None)
    channels.keeps_zero(cols, kernel.shape[out_axis], _activation_keeps_zero(activation))
    channels.join(channels.tensor(node.input_tensors[0]), rows, kernel.shape[in_axis])
    channels.join(channels.tensor(node.outputs[0]), cols, kernel.shape[out_axis])
    if channels.first_time(layer):
        channels.add(rows, path, kernel, in_axis, READS)
        channels.add(cols, path, kernel, out_axis, WRITES)
        if bias is not None:
            channels.add(cols, path, bias, -1, WRITES)


def _attention(channels, path, layer, inputs, output):
    """`MultiHeadAttention`: its inputs read, its output written, one group per head.

    `inputs` maps `"query"`, `"value"` and `"key"` to the tensors the call
    reads; `output` is the tensor it writes.
    """
    first = channels.first_time(layer)
    heads = channels.space(("heads", id(layer)), layer.num_heads)
    for name in ("query", "value", "key"):
        dense = getattr(layer, f"_{name}_dense")
        kernel, bias = _weight(dense, "kernel"), _weight(dense, "bias")
        rows = channels.space(("rows", id(dense)), kernel.shape[0])
        channels.join(channels.tensor(inputs[name]), rows, kernel.shape[0])
        if first:
            channels.add(rows, _path(path, dense), kernel, 0, READS)
            channels.add(heads, _path(path, dense), kernel, 1, WRITES)
            if bias is not None:
                channels.add(heads, _path(path, dense), bias, 0, WRITES)
    dense = layer._output_dense
    kernel, bias = _weight(dense, "kernel"), _weight(dense, "bias")
    cols = channels.space(("cols", id(dense)), kernel.shape[-1])
    channels.join(channels.tensor(output), cols, kernel.shape[-1])
    if first:
        channels.add(heads, _path(path, dense), kernel, 0, READS)
        channels.add(cols, _path(path, dense), kernel, kernel.ndim - 1, WRITES)
        if bias is not None:
            channels.add(cols, _path(path, dense), bias, 0, WRITES)


def _attention_call(channels, path, layer, node):
    names = ("query", "value", "key")
    call = dict(zip(names, node.arguments.args, strict=False))
    call.update({k: v for k, v in node.arguments.kwargs.items() if k in names})
    if call.get("key") is None:
        call["key"] = call["value"]
    _attention(channels, path, layer, call, node.outputs[0])
    for extra in node.outputs[1:]:  # attention scores
        channels.pin_tensor(extra, f"{_graph.describe(layer)} returns its attention scores")


def _transformer_encoder(channels, path, layer, node):
    """KerasHub's `TransformerEncoder`: its heads and feed-forward units.

    Its stream (input, residual adds, output) passes two
    `LayerNormalization`s, whose statistics couple every channel: the
    stream stays. Inside, each attention head and each hidden unit of the
    feed-forward block is a group.
    """
    stream = node.input_tensors[0]
    channels.join(channels.tensor(stream), channels.tensor(node.outputs[0]), _width(stream))
    attention = layer._self_attention_layer
    _attention(
        channels,
        _path(path, attention),
        attention,
        dict.fromkeys(("query", "value", "key"), stream),
        stream,
    )
    channels.pin(
        channels.space(("heads", id(attention)), attention.num_heads),
        attention.num_heads,
        f"{_graph.describe(layer)} derives its attention's key_dim from hidden_dim // "
        "num_heads, so its heads cannot be removed through its config",
    )
    first = channels.first_time(layer)
    inner, outer = layer._feedforward_intermediate_dense, layer._feedforward_output_dense
    units = channels.space(("units", id(layer)), inner.units)
    channels.keeps_zero(units, inner.units, _activation_keeps_zero(inner.activation))
    if first:
        for norm in (layer._self_attention_layer_norm, layer._feedforward_layer_norm):
            for variable in norm.weights:
                channels.add(channels.tensor(stream), _path(path, norm), variable, 0, CARRIES)
        channels.add(channels.tensor(stream), _path(path, inner), inner.kernel, 0, READS)
        channels.add(units, _path(path, inner), inner.kernel, 1, WRITES)
        if inner.use_bias:
            channels.add(units, _path(path, inner), inner.bias, 0, WRITES)
        channels.add(units, _path(path, outer), outer.kernel, 0, READS)
        channels.add(channels.tensor(stream), _path(path, outer), outer.kernel, 1, WRITES)
        if outer.use_bias:
            channels.add(channels.tensor(stream), _path(path, outer), outer.bias, 0, WRITES)
    if not _entrywise(inner.activation):
        channels.pin(units, inner.units, f"{_graph.describe(inner)} mixes its units")
    channels.pin_tensor(stream, f"{_graph.describe(layer)} normalizes its stream over the channels")


def _is_keras_hub(layer, name):
    cls = type(layer)
    return cls.__name__ == name and cls.__module__.split(".")[0] == "keras_hub"


def _embedding(channels, path, layer, node):
    table = _weight(layer, "embeddings")
    cols = channels.space(("cols", id(layer)), table.shape[1])
    channels.join(channels.tensor(node.outputs[0]), cols, table.shape[1])
    if channels.first_time(layer):
        channels.add(cols, path, table, 1, WRITES)


def _special(channels, path, layer, node):
    """Reads the layers `_graph` does not; `True` when it handled `node`."""
    single = len(node.input_tensors) == 1 and len(node.outputs) == 1
    if type(layer) is keras.layers.MultiHeadAttention:
        _attention_call(channels, path, layer, node)
        return True
    if _is_keras_hub(layer, "TransformerEncoder") and len(node.outputs) == 1:
        _transformer_encoder(channels, path, layer, node)
        return True
    if type(layer) is keras.layers.Embedding and single:
        _embedding(channels, path, layer, node)
        return True
    if isinstance(layer, _NORMALIZATIONS):
        reason = (
            f"{_graph.describe(layer)} normalizes over the channels: its statistics "
            "change when a channel goes"
        )
        for tensor in list(node.input_tensors) + list(node.outputs):
            channels.pin_tensor(tensor, reason)
        return True
    if type(layer) is keras.layers.EinsumDense and single and _last_axis_einsum(layer):
        if layer.activation is not None and not _entrywise(layer.activation):
            return False
        kernel = _weight(layer, "kernel")
        bias = _weight(layer, "bias")
        equation_out = layer.equation.split("->")[1]
        if bias is not None and (bias.ndim != 1 or layer.bias_axes != equation_out[-1]):
            return False
        _compute(channels, path, layer, node, kernel, 0, 1, bias)
        return True
    return False


def _carried(layer):
    """`(variable, axis)` of each weight a per-channel layer keeps per channel."""
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        kernel = _weight(layer, "kernel")
        pairs = [(kernel, kernel.ndim - 2)]
        if layer.use_bias:
            pairs.append((_weight(layer, "bias"), 0))
        return pairs
    return [(v, v.ndim - 1) for v in layer.weights if v.ndim >= 1]


def _carrier_keeps_zero(layer):
    """Whether a per-channel layer outputs 0 once its own weights of a channel are 0.

    A `BatchNormalization` without a scale outputs `-mean / std + beta` for
    a zero input; one with a scale outputs 0 once its scale and offset are.
    A depthwise convolution's activation must map 0 to 0.
    """
    if isinstance(layer, keras.layers.BatchNormalization):
        return bool(layer.scale)
    return _activation_keeps_zero(getattr(layer, "activation", None))


def _walk_graph(channels, model, prefix):
    graph = _graph.Graph(model)
    for node in graph.nodes:
        layer = node.operation
        if layer is None or not node.input_tensors:
            continue
        path = _path(prefix, layer)
        inputs, outputs = node.input_tensors, node.outputs
        if isinstance(layer, keras.Model):
            inner = _graph.functional_of(layer)
            for outer, tensor in zip(inputs, inner.inputs, strict=False):
                if _width(outer) and _width(outer) == _width(tensor):
                    channels.join(channels.tensor(outer), channels.tensor(tensor), _width(outer))
                else:
                    channels.pin_tensor(outer, f"{_graph.describe(layer)} reshapes its input")
            for outer, tensor in zip(outputs, inner.outputs, strict=False):
                channels.join(channels.tensor(outer), channels.tensor(tensor), _width(outer))
            _walk_graph(channels, layer, path)
            continue
        if isinstance(layer, keras.layers.Layer) and _special(channels, path, layer, node):
            continue
        rule = graph.rule(node)
        why = f"{_graph.describe(layer)} {rule.reason}" if rule.reason else None
        if rule.kind == _graph.COMPUTE and rule.reason is None:
            kernel = _weight(layer, "kernel")
            bias = _weight(layer, "bias") if layer.use_bias else None
            _compute(channels, path, layer, node, kernel, kernel.ndim - 2, kernel.ndim - 1, bias)
            if rule.values is None and not _entrywise(layer.activation):
                channels.pin_tensor(outputs[0], f"{_graph.describe(layer)} mixes its units")
        elif rule.kind in (_graph.ELEMENTWISE, _graph.POOLING):
            width = _width(inputs[0])
            channels.join(channels.tensor(inputs[0]), channels.tensor(outputs[0]), width)
            channels.keeps_zero(
                channels.tensor(outputs[0]), width, _zero_to_zero(rule.values, width)
            )
        elif rule.kind == _graph.PER_CHANNEL:
            width = _width(inputs[0])
            own = channels.space(("carried", id(layer)), width)
            channels.join(channels.tensor(inputs[0]), own, width)
            channels.join(channels.tensor(outputs[0]), own, width)
            channels.keeps_zero(own, width, _carrier_keeps_zero(layer))
            if channels.first_time(layer):
                for variable, axis in _carried(layer):
                    channels.add(own, path, variable, axis, CARRIES)
        elif rule.kind == _graph.FLATTEN:
            width = _width(inputs[0])
            source, target = channels.tensor(inputs[0]), channels.tensor(outputs[0])
            for j in range(_width(outputs[0])):
                channels.union(source + j % width, target + j)
        elif rule.kind == _graph.MERGE:
            target = channels.tensor(outputs[0])
            for tensor in inputs:
                channels.join(channels.tensor(tensor), target, _width(tensor))
            keeps = type(layer).__name__ not in _NONZERO_MERGES
            channels.keeps_zero(target, _width(outputs[0]), keeps)
        elif rule.kind == _graph.CONCATENATE:
            target, offset = channels.tensor(outputs[0]), 0
            for tensor in inputs:
                channels.join(channels.tensor(tensor), target + offset, _width(tensor))
                offset += _width(tensor)
        else:
            for tensor in list(inputs) + list(outputs):
                channels.pin_tensor(tensor, why or f"{_graph.describe(layer)} is opaque")


def _groups(channels):
    """Families of coupled channels with the same members, in the model's order."""
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
        families.setdefault(key, []).append(entries)
    groups = []
    for (signature, reason, zeros_propagate), family in families.items():
        members = tuple(
            GroupMember(
                layer=key[0],
                variable=variables[key],
                axis=key[2],
                indices=np.array([sorted(entries[key]) for entries in family], dtype="int64"),
                role=key[3],
            )
            for key, _ in signature
        )
        groups.append(
            DependencyGroup(len(family), members, reason is None, reason, zeros_propagate)
        )
    return groups


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
    channels = _Channels()
    _walk_graph(channels, model, "")
    functional = _graph.functional_of(model)
    for tensor in functional.inputs:
        channels.pin_tensor(tensor, MODEL_INPUT)
    for tensor in functional.outputs:
        channels.pin_tensor(tensor, MODEL_OUTPUT)
    return _groups(channels)
