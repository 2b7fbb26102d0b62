"""`dependency_groups`: checked against the model's own outputs.

The oracle is the model: once the weights that *read* a channel are
zeroed, nothing that *writes* or *carries* that channel may change the
output, to the bit (else a reader is missing, or a member belongs
elsewhere); and before, changing them must change it (else the test could
not fail).
"""

import keras
import numpy as np
import pytest

import kerasreg
from kerasreg.dependency import CARRIES
from kerasreg.dependency import READS
from kerasreg.dependency import WRITES

L = keras.layers


def _edit(member, channel, fn):
    values = keras.ops.convert_to_numpy(member.variable).copy()
    index = [slice(None)] * values.ndim
    index[member.axis] = member.indices[channel]
    values[tuple(index)] = fn(values[tuple(index)])
    member.variable.assign(values)


def _perturb(group, channel, rng):
    for member in group.members:
        if member.role in (WRITES, CARRIES):
            if member.variable.path.endswith("moving_variance"):
                _edit(member, channel, lambda v: rng.uniform(0.5, 2.0, v.shape))
            else:
                _edit(member, channel, lambda v: v + rng.normal(size=v.shape))


def _outputs(model, x):
    outputs = model.predict_on_batch(x)  # compiled once, reads the variables
    return np.concatenate([np.ravel(np.asarray(o)) for o in keras.tree.flatten(outputs)])


def _check_channel(model, group, channel, x, rng):
    """Checks one channel; `False` if it does not reach the output for `x` at all."""
    before = _outputs(model, x)
    _perturb(group, channel, rng)
    if np.array_equal(_outputs(model, x), before):
        return False  # a saturated activation, say: nothing to see on this channel
    for member in group.members:
        if member.role == READS:
            _edit(member, channel, np.zeros_like)
    cut = _outputs(model, x)
    _perturb(group, channel, rng)
    # Zero rows add exact zeros: the output is the same to the bit.
    np.testing.assert_array_equal(_outputs(model, x), cut, err_msg=repr(group))
    return True


def _check_model(model, x, tries=3, seed=0, share=1.0, only=None):
    """Checks a channel of each removable group; returns the groups.

    A group counts as checked when one of its first `tries` channels (those
    not yet cut) reaches the output; `share` of the groups must be.
    """
    rng = np.random.default_rng(seed)
    groups = kerasreg.dependency_groups(model)
    removable = [g for g in groups if g.removable]
    assert removable
    if only is not None:
        removable = [g for g in removable if only(g)]
    checked = 0
    for group in removable:
        assert {m.role for m in group.members} >= {WRITES, READS}, group
        for channel in range(min(tries, group.channels)):
            if _check_channel(model, group, channel, x, rng):
                checked += 1
                break
    assert checked >= share * len(removable), (checked, len(removable))
    return groups


def _by_layers(groups, layers):
    found = [g for g in groups if sorted(g.layers) == sorted(layers)]
    assert len(found) == 1, (layers, groups)
    return found[0]


def test_residual_stream_is_one_group():
    inputs = keras.Input((5,))
    x = L.Dense(6, "relu", name="stem")(inputs)
    y = L.Dense(4, "relu", name="inner")(x)
    y = L.Dense(6, name="back")(y)
    x = L.Add(name="add")([x, y])
    x = L.Activation("tanh")(x)
    z = L.Dense(6, name="branch")(x)
    x = L.Subtract()([x, z])
    outputs = L.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(1).normal(size=(8, 5)).astype("float32")
    groups = _check_model(model, x)
    stream = _by_layers(groups, ["stem", "inner", "back", "branch", "head"])
    assert stream.channels == 6 and stream.removable
    assert [(m.layer, m.variable.name, m.role) for m in stream.members if m.layer == "back"] == [
        ("back", "kernel", WRITES),
        ("back", "bias", WRITES),
    ]
    assert not _by_layers(groups, ["head"]).removable  # the model's output
    assert "model output" in _by_layers(groups, ["head"]).reason
    assert not _by_layers(groups, ["stem"]).removable  # the model's input features


def test_concatenation_keeps_offsets_and_flatten_spreads_channels():
    inputs = keras.Input((6, 6, 2))
    a = L.Conv2D(3, 3, name="a")(inputs)
    b = L.Conv2D(5, 3, name="b")(inputs)
    c = L.Concatenate()([a, b])
    c = L.BatchNormalization(name="bn")(c)
    c = L.MaxPooling2D()(c)
    outputs = L.Dense(2, name="head")(L.Flatten()(c))
    model = keras.Model(inputs, outputs)
    model.get_layer("bn").set_weights(
        [np.random.default_rng(2).uniform(0.5, 2, 8).astype("float32") for _ in range(4)]
    )
    x = np.random.default_rng(3).normal(size=(4, 6, 6, 2)).astype("float32")
    groups = _check_model(model, x)
    from_a = _by_layers(groups, ["a", "bn", "head"])
    from_b = _by_layers(groups, ["b", "bn", "head"])
    assert (from_a.channels, from_b.channels) == (3, 5)
    head = [m for m in from_b.members if m.layer == "head"][0]
    assert head.indices.shape == (5, 4)  # a channel is a feature at each of 2x2 positions
    assert head.indices[0].tolist() == [3, 11, 19, 27]  # offset 3, 8 channels per position
    bn = [m for m in from_b.members if m.layer == "bn"]
    assert {m.variable.name for m in bn} == {"gamma", "beta", "moving_mean", "moving_variance"}
    assert all(m.indices[:, 0].tolist() == [3, 4, 5, 6, 7] for m in bn)


def test_nested_and_shared_layers():
    shared = L.Dense(4, "relu", name="shared")
    inner = keras.Sequential([keras.Input((4,)), L.Dense(4, name="inner_dense")], name="inner")
    inputs = keras.Input((3,))
    a = shared(L.Dense(4, name="left")(inputs))
    b = shared(L.Dense(4, name="right")(inputs))
    outputs = L.Dense(2, name="head")(inner(L.Add()([a, b])))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(4).normal(size=(6, 3)).astype("float32")
    groups = _check_model(model, x)
    # The shared layer reads both branches: their channels are coupled.
    _by_layers(groups, ["left", "right", "shared"])
    _by_layers(groups, ["shared", "inner/inner_dense"])
    _by_layers(groups, ["inner/inner_dense", "head"])


def test_attention_heads_and_feed_forward_units():
    inputs = keras.Input((5, 8))
    attention = L.MultiHeadAttention(num_heads=3, key_dim=2, name="mha")
    x = L.Add()([inputs, attention(inputs, inputs)])
    x = L.LayerNormalization(name="ln")(x)
    h = L.EinsumDense("abc,cd->abd", output_shape=(None, 16), bias_axes="d", name="ffn_in")(x)
    h = L.Activation("gelu")(h)
    h = L.EinsumDense("abc,cd->abd", output_shape=(None, 8), bias_axes="d", name="ffn_out")(h)
    outputs = L.GlobalAveragePooling1D()(L.Add()([x, h]))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(5).normal(size=(2, 5, 8)).astype("float32")
    groups = _check_model(model, x)
    heads = [g for g in groups if g.channels == 3]
    assert len(heads) == 1 and heads[0].removable
    assert sorted(heads[0].layers) == ["mha/attention_output", "mha/key", "mha/query", "mha/value"]
    (ffn,) = [g for g in groups if g.removable and sorted(g.layers) == ["ffn_in", "ffn_out"]]
    assert ffn.channels == 16
    # The stream before the normalization: its statistics couple every channel.
    written = [
        g
        for g in groups
        if any(m.layer == "mha/attention_output" and m.role == WRITES for m in g.members)
    ]
    assert len(written) == 1 and not written[0].removable
    assert "LayerNormalization" in written[0].reason


def _zero_written(group, channel):
    for member in group.members:
        if member.role in (WRITES, CARRIES) and not member.variable.path.endswith(
            ("moving_mean", "moving_variance")
        ):
            _edit(member, channel, np.zeros_like)


def _readers_matter(model, group, channel, x, rng):
    """Whether perturbing the readers of `channel` changes the output."""
    before = _outputs(model, x)
    for member in group.members:
        if member.role == READS:
            _edit(member, channel, lambda v: v + rng.normal(size=v.shape))
    return not np.array_equal(_outputs(model, x), before)


def _zero_propagation_models():
    rng = np.random.default_rng(8)
    inputs = keras.Input((6, 6, 3))
    a = L.Conv2D(4, 1, name="a")(inputs)
    a = L.BatchNormalization(name="a_bn")(a)
    a = L.ReLU()(a)
    b = L.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw")(a)
    c = L.Concatenate()([a, L.Add()([a, b])])
    c = L.MaxPooling2D()(c)
    cnn = keras.Model(inputs, L.Dense(2, name="head")(L.Flatten()(c)), name="cnn")

    inputs = keras.Input((7, 8))
    attention = L.MultiHeadAttention(num_heads=3, key_dim=2, name="mha")
    x = L.GlobalAveragePooling1D()(attention(inputs, inputs))
    mha = keras.Model(inputs, L.Dense(2, name="head")(x), name="attention")

    models = [
        (cnn, rng.normal(size=(3, 6, 6, 3)).astype("float32")),
        (mha, rng.normal(size=(3, 7, 8)).astype("float32")),
    ]
    for model, _ in models:
        for variable in model.weights:  # no zero biases, no unit statistics
            if variable.path.endswith("moving_variance"):
                variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype("float32"))
            else:
                variable.assign(rng.normal(size=variable.shape).astype("float32"))
    return models


def test_zero_writers_silence_a_channel_where_zeros_propagate():
    rng = np.random.default_rng(9)
    for model, x in _zero_propagation_models():
        removable = [g for g in kerasreg.dependency_groups(model) if g.removable]
        assert removable and all(g.zeros_propagate for g in removable)
        for group in removable:
            channel = group.channels - 1
            assert _readers_matter(model, group, channel, x, rng), group  # the test can fail
            _zero_written(group, channel)
            # The channel is zero wherever it is read: its readers do nothing.
            assert not _readers_matter(model, group, channel, x, rng), group


@pytest.mark.parametrize(
    "between",
    [
        lambda x: L.Activation("sigmoid")(x),  # sigmoid(0) = 0.5
        lambda x: L.BatchNormalization(scale=False)(x),  # -mean / std + beta
        lambda x: x + 1.0,
        lambda x: L.Activation("softplus")(x),
    ],
)
def test_zeros_that_do_not_propagate_are_flagged(between):
    rng = np.random.default_rng(10)
    inputs = keras.Input((5,))
    h = between(L.Dense(4, name="a")(inputs))
    model = keras.Model(inputs, L.Dense(2, name="head")(h))
    for variable in model.weights:
        if variable.path.endswith("moving_variance"):
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype("float32"))
        else:
            variable.assign(rng.normal(size=variable.shape).astype("float32"))
    x = rng.normal(size=(4, 5)).astype("float32")
    (group,) = [g for g in kerasreg.dependency_groups(model) if g.removable]
    assert not group.zeros_propagate
    _zero_written(group, 0)
    assert _readers_matter(model, group, 0, x, rng)  # why the flag matters


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNetV2", "ResNet50"])
def test_applications(name):
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(32, 32, 3), classes=4, classifier_activation=None
    )
    rng = np.random.default_rng(6)
    for layer in model.layers:  # statistics of a trained model, not of a fresh one
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights(
                [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()]
            )
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")

    # The stage-2 stream of ResNet50, MobileNetV2 expansions, and a few more.
    checked = {"conv2_block1_3_conv", "conv4_block2_2_conv", "block_1_expand", "block_5_expand"}

    def only(group):
        return bool(checked & set(group.layers))

    groups = _check_model(model, x, only=only)
    if name == "ResNet50":
        stream = [g for g in groups if "conv2_block1_3_conv" in g.layers and g.channels == 256]
        assert len(stream) == 1 and stream[0].removable
        assert {"conv2_block1_0_conv", "conv2_block2_3_conv", "conv3_block1_0_conv"} <= set(
            stream[0].layers
        )
    else:
        expansion = _by_layers(
            groups,
            ["block_1_expand", "block_1_expand_BN", "block_1_depthwise", "block_1_depthwise_BN"]
            + ["block_1_project"],
        )
        assert expansion.channels == 96


def test_bad_input():
    with pytest.raises(kerasreg.InvalidArgumentError, match="model"):
        kerasreg.dependency_groups(L.Dense(2))


def test_keras_hub_bert_heads_and_feed_forward_units():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=12,
        max_sequence_length=6,
    )
    rng = np.random.default_rng(7)
    x = {
        "token_ids": rng.integers(0, 50, (2, 6)).astype("int32"),
        "segment_ids": np.zeros((2, 6), "int32"),
        "padding_mask": np.ones((2, 6), "int32"),
    }
    groups = _check_model(backbone, x)
    removable = [g for g in groups if g.removable]
    units = [g for g in removable if g.channels == 12]
    assert len(units) == 2  # one per encoder layer
    # Its heads: one group per encoder layer (compact rebuilds the encoder
    # with its key_dim, which KerasHub's own config cannot say).
    heads = [g for g in groups if g.channels == 2]
    assert len(heads) == 2 and all(g.removable for g in heads)
    assert sorted(units[0].layers) == [
        "transformer_layer_0/feedforward_intermediate_dense",
        "transformer_layer_0/feedforward_output_dense",
    ]
    # The stream passes layer normalizations: it stays, and says why.
    stream = [g for g in groups if g.channels == 8]
    assert stream and not any(g.removable for g in stream)


class _ScaledDense(keras.layers.Layer):
    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="ones", name="bias")

    def call(self, x):
        return self.activation(keras.ops.matmul(x, self.kernel) + self.bias)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
        }


class _ChannelScale(keras.layers.Layer):
    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


def test_a_registered_rule_makes_a_custom_layer_compactable():
    from kerasreg._graph import _USER_RULES

    def model():
        inputs = keras.Input((6,))
        h = _ScaledDense(5, activation="relu", name="custom")(inputs)
        h = _ChannelScale(name="scale")(h)
        return keras.Model(inputs, L.Dense(2, name="out")(h))

    saved = list(_USER_RULES)
    try:
        opaque = model()
        groups = kerasreg.dependency_groups(opaque)
        assert not any("custom" in g.layers for g in groups if g.removable)
        kerasreg.dependency.register_layer_rule(_ScaledDense, "compute")
        kerasreg.dependency.register_layer_rule(
            _ChannelScale,
            "per_channel",
            carries=("scale",),
            values=lambda layer, v: v * keras.ops.convert_to_numpy(layer.scale),
        )
        known = model()
        rng = np.random.default_rng(3)
        kernel = rng.normal(size=(6, 5)).astype("float32")
        kernel[:, [1, 3]] = 0.0  # units 1 and 3: relu(bias), constant
        known.get_layer("custom").kernel.assign(kernel)
        known.get_layer("scale").scale.assign(rng.uniform(0.5, 2.0, 5).astype("float32"))
        groups = kerasreg.dependency_groups(known)
        (group,) = [g for g in groups if g.removable and "custom" in g.layers]
        assert sorted(group.layers) == ["custom", "out", "scale"]
        small = kerasreg.compact(known)
        assert small.get_layer("custom").units == 3
        assert small.get_layer("scale").scale.shape == (3,)
        x = rng.normal(size=(4, 6)).astype("float32")
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(small(x)), keras.ops.convert_to_numpy(known(x)), atol=1e-5
        )
        # Contradictions: at registration, and where the shapes disagree.
        with pytest.raises(ValueError, match="argument `units`"):
            kerasreg.dependency.register_layer_rule(_ScaledDense, "compute", units="width")
        with pytest.raises(ValueError, match="argument `kind`"):
            kerasreg.dependency.register_layer_rule(_ScaledDense, "dense")
        with pytest.raises(ValueError, match="argument `layer_class`"):
            kerasreg.dependency.register_layer_rule(_ScaledDense(2), "compute")
        kerasreg.dependency.register_layer_rule(_ChannelScale, "per_channel", carries=("nope",))
        with pytest.raises(ValueError, match="argument `carries`"):
            kerasreg.dependency_groups(model())
    finally:
        _USER_RULES[:] = saved
