"""`kerasreg.model_cost` against published counts, closed forms and compacted models."""

import keras
import numpy as np
import pytest

import kerasreg


def _macs(model, **kwargs):
    return kerasreg.model_cost(model, **kwargs).macs


@pytest.mark.backend_neutral
@pytest.mark.parametrize(
    "constructor, published, tolerance",
    [
        # He et al. 2016, Table 1: 3.8e9 multiply-adds for ResNet-50 (stride on
        # the first 1x1 convolution of a stage, as in Keras' ResNet50).
        (keras.applications.ResNet50, 3.8e9, 0.03),
        # Sandler et al. 2018, Table 3: 300M multiply-adds for MobileNetV2 1.0 at 224.
        (keras.applications.MobileNetV2, 300e6, 0.01),
    ],
)
def test_published_counts(constructor, published, tolerance):
    model = constructor(weights=None)
    cost = kerasreg.model_cost(model)
    assert cost.params == model.count_params()
    assert abs(cost.macs / published - 1) < tolerance
    assert cost.input_shapes == [(224, 224, 3)]


@pytest.mark.backend_neutral
def test_closed_forms_per_layer():
    inputs = keras.Input((9, 11, 4))
    x = keras.layers.Conv2D(6, 3, strides=2, padding="valid", name="conv")(inputs)  # 4x5x6
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)  # 4x5x6
    x = keras.layers.SeparableConv2D(5, 3, padding="same", name="separable")(x)  # 4x5x5
    x = keras.layers.Conv2DTranspose(3, 2, strides=2, name="transposed")(x)  # 8x10x3
    x = keras.layers.Conv2D(8, 1, groups=1, name="pointwise")(x)
    x = keras.layers.Reshape((80, 8))(x)
    x = keras.layers.Dense(7, name="dense")(x)
    outputs = keras.layers.EinsumDense("abc,cd->abd", (None, 2), name="einsum")(x)
    cost = kerasreg.model_cost(keras.Model(inputs, outputs))
    expected = {
        "conv": 4 * 5 * (3 * 3 * 4 * 6),
        "depthwise": 4 * 5 * (3 * 3 * 6),
        "separable": 4 * 5 * (3 * 3 * 6) + 4 * 5 * (6 * 5),
        "transposed": 4 * 5 * (2 * 2 * 3 * 5),  # each input position meets the kernel
        "pointwise": 8 * 10 * (3 * 8),
        "dense": 80 * 8 * 7,
        "einsum": 80 * 7 * 2,
    }
    assert {k: v for k, v in cost.layers.items() if v} == pytest.approx(expected)
    assert cost.macs == pytest.approx(sum(expected.values()))


@pytest.mark.backend_neutral
def test_attention_counts_heads_with_their_sequence_lengths():
    query = keras.Input((5, 12))
    value = keras.Input((7, 10))
    attention = keras.layers.MultiHeadAttention(3, key_dim=4, value_dim=6, name="mha")
    model = keras.Model([query, value], attention(query, value))
    cost = kerasreg.model_cost(model)
    projections = 5 * 12 * 3 * 4 + 7 * 10 * 3 * 4 + 7 * 10 * 3 * 6 + 5 * 3 * 6 * 12
    products = 3 * 5 * 7 * (4 + 6)  # scores, then scores times values
    assert cost.macs == pytest.approx(projections + products)
    (heads,) = [c for c in cost.groups if c.group.removable]
    assert heads.group.channels == 3
    assert heads.macs == pytest.approx((projections + products) / 3)


@pytest.mark.backend_neutral
def test_input_shape_for_unknown_sizes():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(kerasreg.InvalidArgumentError, match="pass `input_shape`"):
        kerasreg.model_cost(model)
    assert _macs(model, input_shape=(8, 6, 3)) == 8 * 6 * 27 * 4
    assert _macs(model, input_shape=(16, 6, 3)) == 2 * 8 * 6 * 27 * 4
    for bad in [(8, 6), [(8, 6, 3), (8, 6, 3)], (8, 0, 3)]:
        with pytest.raises(kerasreg.InvalidArgumentError, match="`input_shape`"):
            kerasreg.model_cost(model, input_shape=bad)


def _residual_net():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    y = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="inner")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", name="back")(y)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.Conv2D(5, 1, strides=2, name="down")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_cost_after_pruning_is_the_compacted_models():
    # The oracle: the physically smaller model that `compact` builds.
    model = _residual_net()
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))
    cost = kerasreg.model_cost(model)
    counts = list(cost.channels)
    for i, group_cost in enumerate(cost.groups):
        group = group_cost.group
        if not group.removable:
            continue
        drop = list(range(0, group.channels, 2 + i % 2))
        counts[i] = group.channels - len(drop)
        for member in group.members:
            value = keras.ops.convert_to_numpy(member.variable.value).copy()
            index = [slice(None)] * value.ndim
            index[member.axis] = member.indices[drop].reshape(-1)
            value[tuple(index)] = 0
            member.variable.assign(value)
    small = kerasreg.compact(model)
    assert kerasreg.model_cost(small).macs == pytest.approx(cost.at(counts))
    assert small.count_params() == pytest.approx(cost.at(counts, "params"))
    assert cost.at(cost.channels) == pytest.approx(cost.macs)


@pytest.mark.backend_neutral
def test_slopes_are_the_derivatives_of_the_cost():
    cost = kerasreg.model_cost(_residual_net())
    counts = np.array(cost.channels, "float64") - 1.0
    for measure in ("macs", "params"):
        slopes = cost.slopes(list(counts), measure)
        for g in range(len(counts)):
            step = np.zeros_like(counts)
            step[g] = 0.5
            # The cost is a polynomial of degree <= 2 in each count.
            numeric = cost.at(list(counts + step), measure) - cost.at(list(counts - step), measure)
            assert slopes[g] == pytest.approx(numeric, rel=1e-9, abs=1e-9)
    full = cost.slopes(cost.channels, "params")
    assert [c.params for c in cost.groups] == pytest.approx(full)


@pytest.mark.backend_neutral
def test_attention_axes_keyword_calls_and_unknown_einsum_sizes():
    # Attention over axis 2 only: once per index of axis 1.
    inputs = keras.Input((3, 5, 8))
    mha = keras.layers.MultiHeadAttention(2, key_dim=4, attention_axes=(2,), name="mha")
    model = keras.Model(inputs, mha(query=inputs, value=inputs))
    projections = 15 * 8 * 2 * 4 * 4  # query, key, value and output, per position
    assert _macs(model) == pytest.approx(projections + 15 * 5 * 2 * (4 + 4))
    # An EinsumDense whose output_shape leaves a size to the call, then a layer.
    inputs = keras.Input((5, 4))
    x = keras.layers.EinsumDense("abc,cd->abd", (None, 8), name="e1")(inputs=inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(x))
    assert kerasreg.model_cost(model).layers == {"e1": 5 * 4 * 8, "d": 5 * 8 * 2}
    # Recurrent layers: both kernels, once per step.
    inputs = keras.Input((6, 3))
    model = keras.Model(inputs, keras.layers.LSTM(5)(inputs))
    assert _macs(model) == 6 * (3 * 20 + 5 * 20)


def test_channels_left_sees_constant_channels_folded():
    # Zero writers under a sigmoid make constant channels: compact folds them.
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, "sigmoid", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    hidden = model.get_layer("hidden")
    kernel = keras.ops.convert_to_numpy(hidden.kernel).copy()
    kernel[:, :5] = 0
    hidden.kernel.assign(kernel)
    hidden.bias.assign(np.zeros(8, "float32"))
    cost = kerasreg.model_cost(model)
    small = kerasreg.compact(model)
    assert small.get_layer("hidden").units == 3
    assert cost.fraction_left("params") == pytest.approx(
        small.count_params() / model.count_params()
    )
