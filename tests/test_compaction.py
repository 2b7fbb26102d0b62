"""Tests of kerasreg.compact: a smaller model that computes the same function."""

import warnings

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings

import kerasreg
from kerasreg.layers import FeatureGate
from kerasreg.layers import SelectFeatures
from tests import compaction_fuzz
from tests import filter_route
from tests.conftest import BACKEND
from tests.conftest import to_numpy


def _randomize(model, rng):
    """Random biases and normalization statistics, so constants are not 0."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.normal(size=gamma.shape),
                    rng.normal(size=beta.shape),
                    rng.normal(size=mean.shape),
                    rng.uniform(0.5, 2.0, size=variance.shape),
                ]
            )
        elif isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)):
            if layer.use_bias:
                layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))


def _zero(model, name, units=(), inputs=()):
    """Zeroes kernel columns (incoming weights of units) and rows (inputs)."""
    layer = model.get_layer(name)
    kernel = to_numpy(layer.kernel).copy()
    kernel[..., list(inputs), :] = 0.0
    kernel[..., list(units)] = 0.0
    layer.kernel.assign(kernel)


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _assert_same_function(original, compacted, x):
    np.testing.assert_allclose(
        to_numpy(compacted(x, training=False)),
        to_numpy(original(x, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )


def _mlp():
    return keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(8, activation="relu", name="d1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(6, activation="tanh", name="d2"),
            keras.layers.Dense(3, name="out"),
        ]
    )


def test_units_pruned_by_group_magnitude_are_compacted_away(rng):
    # 16 units, 60% asked: 16 - 10 = 6 kept, rounded up to 8.
    x = rng.normal(size=(64, 10)).astype("float32")
    y = rng.normal(size=(64, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    reg = kerasreg.MagnitudePruning(
        0.6, begin_step=0, end_step=4, frequency=2, group_axis=-1, round_to=4
    )
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(16, "relu", kernel_regularizer=reg, name="hidden"),
            keras.layers.Dense(3, name="out"),
        ]
    )
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-2)), "mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert kerasreg.sparsity_report(model)["hidden/kernel"].zero_units == 8
    small = kerasreg.compact(model)
    assert small.get_layer("hidden").units == 8
    _assert_same_function(model, small, x)


def test_mlp_loses_exactly_the_removable_units(rng, tmp_path):
    model = _mlp()
    _randomize(model, rng)
    _zero(model, "d1", units=[1, 4], inputs=[0, 7])  # 1, 4: constant relu(bias)
    _zero(model, "d2", units=[5], inputs=[2])  # unit 2 of d1 feeds nothing
    _zero(model, "out", inputs=[0])  # unit 0 of d2 feeds nothing
    before = _weights(model)
    small, summary = kerasreg.compact(model, return_summary=True)

    # d1: 10 -> 8 inputs (features 0 and 7), 8 -> 5 units (1, 2, 4);
    # bn: 5 units; d2: 6 -> 4 units (0, 5); out keeps its 3 outputs.
    expected = (8 * 5 + 5) + 4 * 5 + (5 * 4 + 4) + (4 * 3 + 3)
    assert small.count_params() == expected
    assert summary.kept_params == expected and summary.params == model.count_params()
    rows = {row.layer: row for row in summary.layers}
    assert (rows["d1"].kept_inputs, rows["d1"].kept_units) == (8, 5)
    assert rows["d1"].input_indices == (1, 2, 3, 4, 5, 6, 8, 9)
    assert (rows["d2"].kept_inputs, rows["d2"].kept_units) == (5, 4)
    assert (rows["out"].kept_inputs, rows["out"].kept_units) == (4, 3)
    assert summary.left_as_is == ()
    assert isinstance(small.layers[0], SelectFeatures)
    assert small.input_shape == model.input_shape
    # Built with zeros (the weights are copied in), configured as the original.
    for name in ("d1", "bn", "d2", "out"):
        original, new = model.get_layer(name).get_config(), small.get_layer(name).get_config()
        keys = [key for key in original if key.endswith("initializer")]
        assert keys and [new[key] for key in keys] == [original[key] for key in keys]

    x = rng.normal(size=(64, 10)).astype("float32")
    _assert_same_function(model, small, x)
    # The original is untouched and shares no weights with the result.
    for a, b in zip(before, _weights(model), strict=True):
        np.testing.assert_array_equal(a, b)
    small.get_layer("out").bias.assign(np.full(3, 100.0, "float32"))
    np.testing.assert_array_equal(_weights(model)[-1], before[-1])

    path = tmp_path / "small.keras"
    kerasreg.compact(model).save(path)
    loaded = keras.models.load_model(path)
    _assert_same_function(model, loaded, x)
    assert loaded.count_params() == expected


def test_units_removed_in_one_layer_free_units_in_the_previous_one(rng):
    # d2 loses every unit but one through its outgoing weights; the units of
    # d1 that only fed the removed units then feed nothing and go too.
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, activation="relu", name="d1"),
            keras.layers.Dense(3, activation="relu", name="d2"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    _randomize(model, rng)
    kernel = np.zeros((4, 3), "float32")
    kernel[0, 0] = kernel[1, 0] = 1.0  # d1 units 2 and 3 only feed d2 unit 1
    kernel[2, 1] = kernel[3, 1] = 1.0
    kernel[:, 2] = 0.5
    model.get_layer("d2").kernel.assign(kernel)
    _zero(model, "out", inputs=[1, 2])  # d2 units 1 and 2 feed nothing
    small, summary = kerasreg.compact(model, return_summary=True)
    rows = {row.layer: row for row in summary.layers}
    assert rows["d2"].kept_units == 1
    assert rows["d1"].kept_units == 2  # units 2 and 3 followed
    assert small.count_params() == (5 * 2 + 2) + (2 * 1 + 1) + (1 * 2 + 2)
    _assert_same_function(model, small, rng.normal(size=(32, 5)).astype("float32"))


def test_constant_units_fold_into_a_bias_the_next_layer_did_not_have(rng):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, activation="sigmoid", name="d1"),
            keras.layers.Dense(2, use_bias=False, name="d2"),
        ]
    )
    _randomize(model, rng)
    _zero(model, "d1", units=[0])  # outputs sigmoid(bias) != 0 everywhere
    small = kerasreg.compact(model)
    assert small.get_layer("d2").use_bias
    assert small.get_layer("d1").units == 2
    _assert_same_function(model, small, rng.normal(size=(16, 4)).astype("float32"))


def _conv_net(padding="valid"):
    inputs = keras.Input((10, 10, 2))
    h = keras.layers.Conv2D(6, 3, activation="relu", name="c1")(inputs)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.Conv2D(5, 3, padding=padding, activation="elu", name="c2")(h)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dropout(0.5)(h)
    h = keras.layers.Dense(7, activation="relu", name="d1")(h)
    outputs = keras.layers.Dense(4, name="out")(h)
    return keras.Model(inputs, outputs)


def test_functional_conv_net_through_pooling_and_flatten(rng, tmp_path):
    model = _conv_net()
    _randomize(model, rng)
    _zero(model, "c1", units=[0, 3])  # constant, folded into c2 (valid)
    _zero(model, "c2", units=[1], inputs=[2])  # 1: constant through pool
    _zero(model, "d1", units=[2])
    small, summary = kerasreg.compact(model, return_summary=True)
    assert summary.left_as_is == ()
    # c1: 6 -> 3 filters; bn1 3 channels; c2: 5 -> 4 filters; d1 reads
    # 3 * 3 positions * 4 filters and loses its unit 2 too.
    expected = (3 * 3 * 2 * 3 + 3) + 4 * 3 + (3 * 3 * 3 * 4 + 4) + (36 * 6 + 6) + (6 * 4 + 4)
    assert small.count_params() == expected
    x = rng.normal(size=(8, 10, 10, 2)).astype("float32")
    _assert_same_function(model, small, x)
    small.save(tmp_path / "conv.keras")
    _assert_same_function(model, keras.models.load_model(tmp_path / "conv.keras"), x)


def test_same_padding_keeps_constant_filters_and_says_so(rng):
    model = _conv_net(padding="same")
    _randomize(model, rng)
    _zero(model, "c1", units=[0])  # relu(bias) then BN: a non-zero constant
    with pytest.warns(UserWarning, match="'c1'.*pads 'same'"):
        small, summary = kerasreg.compact(model, return_summary=True)
    assert [name for name, _ in summary.left_as_is] == ["c1"]
    assert small.get_layer("c1").filters == 6
    _assert_same_function(model, small, rng.normal(size=(4, 10, 10, 2)).astype("float32"))


def test_constant_filters_before_same_padding_merge_into_one(rng):
    # Their effect depends on the position (the padding), but it is the same
    # for all of them: one filter with the weighted sum of their slices.
    model = _conv_net(padding="same")
    _randomize(model, rng)
    _zero(model, "c1", units=[0, 2, 5])
    with pytest.warns(UserWarning, match="'c1'.*merged into one"):
        small = kerasreg.compact(model)
    assert small.get_layer("c1").filters == 4
    assert small.count_params() == model.count_params() - 2 * (3 * 3 * 2 + 1 + 4 + 3 * 3 * 5)
    _assert_same_function(model, small, rng.normal(size=(4, 10, 10, 2)).astype("float32"))


def test_a_one_by_one_convolution_pads_nothing_so_constants_fold(rng):
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(5, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(3, 1, padding="same", strides=2, name="c2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, name="out"),
        ]
    )
    _randomize(model, rng)
    _zero(model, "c1", units=[1, 3])
    small, summary = kerasreg.compact(model, return_summary=True)
    assert summary.left_as_is == ()
    assert small.get_layer("c1").filters == 3
    _assert_same_function(model, small, rng.normal(size=(4, 6, 6, 2)).astype("float32"))


def test_conv1d_and_global_pooling(rng):
    model = keras.Sequential(
        [
            keras.Input((12, 3)),
            keras.layers.Conv1D(6, 3, activation="relu", name="c1"),
            keras.layers.Conv1D(4, 3, activation="relu", name="c2"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2, name="out"),
        ]
    )
    _randomize(model, rng)
    _zero(model, "c1", units=[1])
    _zero(model, "c2", inputs=[4], units=[0])
    small = kerasreg.compact(model)
    assert small.get_layer("c1").filters == 4
    assert small.get_layer("c2").filters == 3
    _assert_same_function(model, small, rng.normal(size=(8, 12, 3)).astype("float32"))


def test_feature_gate_inputs_are_dropped_inside_the_model(rng):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            FeatureGate(name="gate"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(3, activation="relu", name="d1"),
            keras.layers.Dense(1, name="out"),
        ]
    )
    _randomize(model, rng)
    model.get_layer("gate").gates.assign(np.array([1.0, 0.0, 2.0, 0.0, 0.5, 1.0], "float32"))
    small, summary = kerasreg.compact(model, return_summary=True)
    # The closed features leave with the gate's, the normalization's and d1's
    # slices; a `SelectFeatures` in front keeps the model's inputs.
    (row,) = [row for row in summary.layers if row.layer == "gate"]
    assert row.input_indices == (0, 2, 4, 5)
    assert isinstance(small.layers[0], SelectFeatures)
    assert small.get_layer("d1").kernel.shape == (4, 3)
    _assert_same_function(model, small, rng.normal(size=(16, 6)).astype("float32"))


def test_gate_between_layers_is_sliced_with_its_names(rng):
    inputs = keras.Input((4,))
    h = keras.layers.Dense(5, activation="relu", name="d1")(inputs)
    h = FeatureGate(feature_names=list("abcde"), name="gate")(h)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    _randomize(model, rng)
    model.get_layer("gate").gates.assign(np.array([1.0, 0.0, 1.0, 0.0, 1.0], "float32"))
    small = kerasreg.compact(model)
    assert small.get_layer("gate").feature_names == ["a", "c", "e"]
    assert small.get_layer("d1").units == 3
    _assert_same_function(model, small, rng.normal(size=(16, 4)).astype("float32"))


def test_what_it_cannot_compact_it_leaves_as_it_is(rng):
    inputs = keras.Input((6,))
    a = keras.layers.Dense(4, activation="relu", name="branch_a")(inputs)
    b = keras.layers.Dense(4, activation="relu", name="branch_b")(inputs)
    h = keras.layers.Add()([a, b])
    h = keras.layers.Dense(5, activation="softmax", name="soft")(h)
    outputs = keras.layers.Dense(2, name="out")(h)
    model = keras.Model(inputs, outputs)
    _randomize(model, rng)
    _zero(model, "branch_a", units=[0])
    _zero(model, "soft", units=[1])
    _zero(model, "out", inputs=[2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small, summary = kerasreg.compact(model, return_summary=True)
    left = dict(summary.left_as_is)
    assert set(left) == {"branch_a", "soft", "out"}
    assert "'softmax'" in left["out"]
    messages = [str(w.message) for w in caught if str(w.message).startswith("compact()")]
    assert {message.split("'")[1] for message in messages} == set(left)
    assert small.count_params() == model.count_params()
    _assert_same_function(model, small, rng.normal(size=(16, 6)).astype("float32"))


def test_nested_models_are_compacted_within(rng):
    block = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, activation="relu", name="n1"),
            keras.layers.Dense(4, activation="relu", name="n2"),
        ],
        name="block",
    )
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(block(inputs)))
    _randomize(model, rng)
    _zero(block, "n2", inputs=[3])
    small, summary = kerasreg.compact(model, return_summary=True)
    assert small.get_layer("block").get_layer("n1").units == 4
    assert [row.layer for row in summary.layers] == ["n1", "n2"]
    _assert_same_function(model, small, rng.normal(size=(16, 6)).astype("float32"))


def test_group_lasso_training_then_compaction(rng):
    # The recipe: per-unit groups on the kernels, proximal training, compact.
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(
                64, activation="relu", kernel_regularizer=kerasreg.GroupLasso(2e-3), name="h1"
            ),
            keras.layers.Dense(
                32, activation="relu", kernel_regularizer=kerasreg.GroupLasso(2e-3), name="h2"
            ),
            keras.layers.Dense(10, name="out"),
        ]
    )
    model.compile(
        optimizer=kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-2)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=256, epochs=8, verbose=0)
    report = kerasreg.sparsity_report(model)
    removable = report["h1/kernel"].zero_units + report["h2/kernel"].zero_units
    assert removable > 0
    small = kerasreg.compact(model)
    assert small.count_params() < model.count_params()
    assert small.get_layer("h1").units <= 64 - report["h1/kernel"].zero_units
    _assert_same_function(model, small, x[:200])
    # The compacted model keeps its regularizers and trains on.
    assert small.get_layer("h1").kernel.regularizer == kerasreg.GroupLasso(2e-3)


def test_refuses_models_without_a_known_wiring():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="argument `model`.*subclassed"):
        kerasreg.compact(model)
    with pytest.raises(ValueError, match="argument `model`.*built"):
        kerasreg.compact(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(TypeError, match="argument `return_summary`"):
        kerasreg.compact(_mlp(), return_summary="yes")


def test_summary_prints_a_table(rng):
    model = _mlp()
    _zero(model, "d2", inputs=[3])
    _, summary = kerasreg.compact(model, return_summary=True)
    text = str(summary)
    assert "d1" in text and "8 -> 7" in text
    assert f"{model.count_params():,} ->" in text


def test_a_layer_that_computes_a_constant_keeps_one_unit(rng):
    model = _mlp()
    _randomize(model, rng)
    _zero(model, "d2", units=list(range(6)))  # d2 outputs tanh(bias) only
    with pytest.warns(UserWarning, match="'d2'.*computes a constant"):
        small = kerasreg.compact(model)
    assert small.get_layer("d2").units == 1
    assert small.get_layer("d1").units == 1
    _assert_same_function(model, small, rng.normal(size=(16, 10)).astype("float32"))


def test_the_warning_names_the_callers_line():
    # Python prints, and filters by, the file and line a warning names.
    model = _mlp()
    _zero(model, "d2", units=list(range(6)))
    with pytest.warns(UserWarning, match="'d2'") as record:
        kerasreg.compact(model)
    assert {w.filename for w in record if "compact()" in str(w.message)} == {__file__}


# 40 examples: with 25, none of the bugs planted to try this test was found
# (constants folded into a padded convolution, the merge weights, the
# normalization's constants); with 40, all three.
@settings(max_examples=40)
@given(spec=compaction_fuzz.architectures())
def test_generated_models_compact_to_the_same_function(spec):
    # Random graphs of Dense and convolution layers, normalization, depthwise
    # convolutions, activations as layers and as keras.ops, merges,
    # concatenations, pooling, reshapes and nested models, with random units,
    # filters and input rows zeroed: no error, the same predictions, no more
    # parameters, and every removed unit dead or constant
    # (scripts/compact_fuzz.py runs many more).
    compaction_fuzz.check(spec)


def _issue_model():
    inputs = keras.Input((8,))
    h = keras.layers.Dense(8, name="d1")(inputs)
    outputs = keras.layers.Dense(1, name="out")(keras.ops.relu(h + inputs))
    return keras.Model(inputs, outputs)


def test_keras_ops_between_layers_are_carried_over(rng, tmp_path):
    model = _issue_model()
    _randomize(model, rng)
    x = rng.normal(size=(16, 8)).astype("float32")
    small = kerasreg.compact(model)
    _assert_same_function(model, small, x)
    # Zero inputs behind the sum cannot go: the sum's other reader needs them.
    _zero(model, "out", inputs=[1, 4])
    with pytest.warns(UserWarning, match=r"'out'.*'d1' still reads them"):
        small, summary = kerasreg.compact(model, return_summary=True)
    assert small.count_params() == model.count_params()
    _assert_same_function(model, small, x)
    small.save(tmp_path / "ops.keras")
    _assert_same_function(model, keras.models.load_model(tmp_path / "ops.keras"), x)


def _chain(between):
    """Dense -> `between` -> Dense -> Dense, `between` a function of a tensor."""
    inputs = keras.Input((5,))
    h = keras.layers.Dense(6, name="d1")(inputs)
    h = keras.layers.Dense(4, name="d2")(between(h))
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(h))


@pytest.mark.parametrize(
    "as_op, as_layer",
    [
        (keras.ops.relu, keras.layers.Activation("relu")),
        (keras.ops.tanh, keras.layers.Activation("tanh")),
        (lambda x: keras.ops.leaky_relu(x, 0.3), keras.layers.LeakyReLU(0.3)),
        (lambda x: 2.0 * x + 1.0, None),
        (lambda x: keras.ops.maximum(x, 0.5), None),
    ],
)
def test_elementwise_ops_are_followed_like_their_layers(rng, as_op, as_layer):
    model = _chain(as_op)
    _randomize(model, rng)
    _zero(model, "d1", units=[0, 3])  # constant: folded into d2
    _zero(model, "d2", inputs=[5])  # d1's unit 5 feeds nothing
    small, summary = kerasreg.compact(model, return_summary=True)
    assert summary.left_as_is == ()
    assert small.get_layer("d1").units == 3
    _assert_same_function(model, small, rng.normal(size=(16, 5)).astype("float32"))
    if as_layer is not None:
        twin = _chain(as_layer)
        twin.set_weights(model.get_weights())
        assert kerasreg.compact(twin).count_params() == small.count_params()


@pytest.mark.parametrize(
    "between, named",
    [
        (keras.ops.softmax, r"'softmax[_0-9]*' \(keras.ops Softmax\) mixes units"),
        (lambda x: keras.ops.reshape(x, (-1, 3, 2))[:, 0], r"\(keras.ops Reshape\) changes"),
        (lambda x: keras.ops.flip(x, axis=-1), "not an operation that compaction knows"),
        (lambda x: x[:, :4], r"'get_item[_0-9]*' \(keras.ops GetItem\)"),
    ],
)
def test_ops_that_mix_units_stop_compaction_and_say_so(rng, between, named):
    model = _chain(between)
    _randomize(model, rng)
    _zero(model, "d1", units=[0])
    with pytest.warns(UserWarning, match=f"'d1'.*{named}"):
        small = kerasreg.compact(model)
    assert small.get_layer("d1").units == 6
    _assert_same_function(model, small, rng.normal(size=(16, 5)).astype("float32"))


@pytest.mark.parametrize(
    "between",
    [lambda x: keras.ops.concatenate([x, x], axis=-1), lambda x: x * x, lambda x: x * 2.0 + x],
)
def test_constants_fold_through_concatenations_and_merges(rng, between):
    # d1's unit 0 outputs its bias; after the merge it is still a constant,
    # which d2's bias takes (each copy of it, for the concatenation).
    model = _chain(between)
    _randomize(model, rng)
    _zero(model, "d1", units=[0])
    small, summary, messages = _compact_quietly(model)
    assert messages == []
    assert small.get_layer("d1").units == 5
    _assert_same_function(model, small, rng.normal(size=(16, 5)).astype("float32"))


def _mobile_block():
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 1, name="expand")(inputs)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(6.0)(h)
    h = keras.layers.DepthwiseConv2D(3, name="depthwise")(h)
    h = keras.layers.BatchNormalization(name="bn2")(h)
    h = keras.layers.ReLU(6.0)(h)
    h = keras.layers.Conv2D(4, 1, name="project")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(h))


def test_depthwise_convolutions_and_zero_scales_are_sliced_through(rng):
    model = _mobile_block()
    _randomize(model, rng)
    _zero(model, "expand", units=[0])  # constant, then through the depthwise
    _zero(model, "project", inputs=[1])  # expand's unit 1 feeds nothing
    depthwise = model.get_layer("depthwise")
    kernel = to_numpy(depthwise.kernel).copy()
    kernel[..., 2, :] = 0.0  # outputs its bias, whatever it reads
    depthwise.kernel.assign(kernel)
    bn = model.get_layer("bn1")
    bn.gamma.assign(np.where(np.arange(6) == 3, 0.0, to_numpy(bn.gamma)).astype("float32"))
    small, summary = kerasreg.compact(model, return_summary=True)
    assert summary.left_as_is == ()
    (row,) = [row for row in summary.layers if row.layer == "expand"]
    assert row.unit_indices == (4, 5)
    assert small.get_layer("depthwise").kernel.shape == (3, 3, 2, 1)
    assert small.get_layer("bn2").gamma.shape == (2,)
    _assert_same_function(model, small, rng.normal(size=(4, 8, 8, 3)).astype("float32"))


def test_layers_that_cannot_be_rebuilt(rng):
    # Without weights, it is used as it is (a Lambda around a Python function).
    inputs = keras.Input((4,))
    h = keras.layers.Lambda(lambda x: x * 2.0)(keras.layers.Dense(3, name="d1")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    x = rng.normal(size=(8, 4)).astype("float32")
    _assert_same_function(model, kerasreg.compact(model), x)

    # With weights, it cannot be copied: a clear error.
    class Scale(keras.layers.Layer):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.w * self.factor

        def get_config(self):
            return {}  # forgets `factor`

    inputs = keras.Input((4,))
    model = keras.Model(inputs, Scale(2.0)(keras.layers.Dense(3)(inputs)))
    with pytest.raises(ValueError, match=r"argument `model`.*from_config.*'scale[_0-9]*'"):
        kerasreg.compact(model)


@pytest.mark.parametrize("functional", [False, True])
def test_the_compacted_model_is_compiled_like_the_original(rng, functional):
    model = _mlp()
    if functional:
        model = keras.Model(model.inputs, model.outputs)
    _zero(model, "d2", inputs=[3])
    small = kerasreg.compact(model)
    assert not small.compiled
    model.compile(
        optimizer=kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-3)),
        loss="mse",
        metrics=["mae"],
    )
    small = kerasreg.compact(model)
    assert small.compiled
    assert small.get_compile_config() == model.get_compile_config()
    assert isinstance(small.optimizer, kerasreg.ProximalOptimizer)
    assert small.optimizer is not model.optimizer
    x = rng.normal(size=(8, 10)).astype("float32")
    logs = small.fit(x, np.zeros((8, 3), "float32"), epochs=1, verbose=0).history
    assert set(logs) == {"loss", "mae"}


_APPLICATIONS = (
    "ResNet50",
    "ResNet50V2",
    "MobileNetV2",
    "EfficientNetB0",
    "DenseNet121",
    "ConvNeXtTiny",
)


def _logits(model, x):
    if BACKEND == "jax":
        # One compiled function, not one compilation per operation and shape.
        return [model.predict(x, verbose=0)]
    return [to_numpy(model(x, training=False))]


@pytest.mark.slow
@pytest.mark.parametrize("name", _APPLICATIONS)
def test_keras_applications_compact_to_the_same_function(name, rng):
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    x = rng.uniform(0.0, 255.0, size=(2, 32, 32, 3)).astype("float32")
    # As built, nothing is zero: nothing changes.
    small, summary = kerasreg.compact(model, return_summary=True)
    assert summary.layers == () and summary.left_as_is == ()
    assert small.count_params() == model.count_params()
    compaction_fuzz.assert_close(_logits(small, x), _logits(model, x))

    # Every other filter of every Conv2D, and unit of every Dense layer but
    # the classifier, zeroed: constant units (their bias, then normalized)
    # that compact folds, merges or keeps.
    _randomize(model, rng)
    classifier = model.layers[-1]
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer) in (keras.layers.Conv2D, keras.layers.Dense) and layer is not classifier:
            kernel = to_numpy(layer.kernel).copy()
            kernel[..., ::2] = 0.0
            layer.kernel.assign(kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small, summary = kerasreg.compact(model, return_summary=True)
    assert small.count_params() <= model.count_params()
    assert summary.kept_params == small.count_params()
    compaction_fuzz.assert_close(_logits(small, x), _logits(model, x))


@pytest.mark.slow
@pytest.mark.one_backend
@pytest.mark.parametrize("state", filter_route.BN_STATES)
@pytest.mark.parametrize("name", list(filter_route.TARGETS))
def test_filter_route_reaches_the_coverage_targets(name, state):
    # Every other output filter of every convolution and Dense layer but the
    # classifier zeroed, as MagnitudePruning(0.5, group_axis=-1) leaves it:
    # compact must give the zeroed model's function (the oracle) with the
    # parameters the specification asks for (scripts/filter_route_coverage.py
    # prints the table).
    model = filter_route.application(name)
    filter_route.set_normalization_state(model, state, seed=0)
    assert filter_route.zero_every_other_filter(model) > 0
    x = filter_route.inputs_for(model, seed=0)
    expected = filter_route.predictions(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small, summary = kerasreg.compact(model, return_summary=True)
    equal, difference = filter_route.same_predictions(expected, filter_route.predictions(small, x))
    assert equal, f"max difference {difference:.1e} of the largest output"
    ratio = model.count_params() / small.count_params()
    assert ratio >= filter_route.TARGETS[name], (
        f"{ratio:.2f}x fewer parameters, {len(summary.left_as_is)} layers left as they are"
    )


# Coupled channels: residual streams, concatenations, attention heads.


def _cut_channels(group, channels, roles):
    """Zeroes the entries of `channels` in the members of `group` with `roles`."""
    for member in group.members:
        if member.role not in roles or member.variable.path.endswith("moving_variance"):
            continue
        values = to_numpy(member.variable.value).copy()
        index = [slice(None)] * values.ndim
        index[member.axis] = member.indices[channels].ravel()
        values[tuple(index)] = 0.0
        member.variable.assign(values)


def _group_of(model, layer, role="writes"):
    """The removable group in which `layer` has members with `role`."""
    found = [
        g
        for g in kerasreg.dependency_groups(model)
        if g.removable and any(m.layer == layer and m.role == role for m in g.members)
    ]
    assert len(found) == 1, found
    return found[0]


def _compact_quietly(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small, summary = kerasreg.compact(model, return_summary=True)
    messages = [str(w.message) for w in caught if str(w.message).startswith("compact()")]
    return small, summary, messages


def _residual_mlp():
    inputs = keras.Input((5,))
    x = keras.layers.Dense(6, "relu", name="stem")(inputs)
    y = keras.layers.Dense(4, "relu", name="inner")(x)
    y = keras.layers.Dense(6, name="back")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.Activation("tanh")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("zeroed", ["reads", "writes"])
def test_a_residual_stream_loses_the_channels_of_every_branch(rng, zeroed):
    model = _residual_mlp()
    _randomize(model, rng)
    stream = _group_of(model, "stem")
    assert sorted(stream.layers) == ["back", "head", "inner", "stem"]
    # Readers zero: nothing reads channels 1 and 4. Writers zero (kernel
    # columns and biases of both branches): relu(0) + 0 = 0 and tanh(0) = 0,
    # so they are zero wherever they are read.
    roles = ("reads",) if zeroed == "reads" else ("writes", "carries")
    _cut_channels(stream, [1, 4], roles)
    small, summary, messages = _compact_quietly(model)
    assert messages == []
    rows = {row.layer: row for row in summary.layers}
    assert (rows["stem"].units, rows["stem"].kept_units) == (6, 4)
    assert rows["stem"].unit_indices == (0, 2, 3, 5)
    assert (rows["back"].units, rows["back"].kept_units) == (6, 4)
    assert (rows["inner"].inputs, rows["inner"].kept_inputs) == (6, 4)
    assert (rows["head"].inputs, rows["head"].kept_inputs) == (6, 4)
    # 4 weights (stem column + bias, back column + bias) and 7 reads
    # (4 of inner, 3 of head) per channel.
    assert model.count_params() - small.count_params() == 2 * (5 + 1 + 4 + 1 + 4 + 3)
    assert summary.kept_params == small.count_params()
    _assert_same_function(model, small, rng.normal(size=(16, 5)).astype("float32"))


def test_constant_channels_of_a_stream_fold_into_its_readers(rng):
    # sigmoid(0) = 0.5: zero writers leave a constant channel (0.5 + 0.5 after
    # the sum), which goes into the head's bias.
    inputs = keras.Input((5,))
    x = keras.layers.Dense(6, "sigmoid", name="a")(inputs)
    y = keras.layers.Dense(6, "sigmoid", name="b")(inputs)
    x = keras.layers.Add()([x, y])
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    _randomize(model, rng)
    stream = _group_of(model, "a")
    assert not stream.zeros_propagate
    _cut_channels(stream, [0, 2], ("writes",))
    small, summary, messages = _compact_quietly(model)
    assert messages == []
    # Each channel: a's and b's columns and biases, and the head's row.
    assert model.count_params() - small.count_params() == 2 * (5 + 1 + 5 + 1 + 3)
    _assert_same_function(model, small, rng.normal(size=(16, 5)).astype("float32"))


def test_concatenated_channels_go_at_their_offsets(rng):
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(3, 3, name="a")(inputs)
    b = keras.layers.Conv2D(5, 3, activation="relu", name="b")(inputs)
    c = keras.layers.Concatenate()([a, b])
    c = keras.layers.BatchNormalization(name="bn")(c)
    c = keras.layers.Conv2D(4, 1, name="c")(c)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(c))
    model = keras.Model(inputs, outputs)
    _randomize(model, rng)
    kernel = to_numpy(model.get_layer("c").kernel.value).copy()
    kernel[..., [1, 4, 6], :] = 0.0  # a's channel 1, b's channels 1 and 3
    model.get_layer("c").kernel.assign(kernel)
    small, summary, messages = _compact_quietly(model)
    assert messages == []
    rows = {row.layer: row for row in summary.layers}
    assert rows["a"].unit_indices == (0, 2)
    assert rows["b"].unit_indices == (0, 2, 4)
    assert (rows["bn"].units, rows["bn"].kept_units) == (8, 5)
    assert (rows["c"].inputs, rows["c"].kept_inputs) == (8, 5)
    _assert_same_function(model, small, rng.normal(size=(4, 6, 6, 2)).astype("float32"))


@pytest.mark.parametrize("zeroed", ["reads", "writes"])
def test_attention_heads_go_with_their_slices(rng, zeroed, tmp_path):
    inputs = keras.Input((7, 8))
    attention = keras.layers.MultiHeadAttention(4, 3, name="attention")
    x = attention(inputs, inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(2, name="out")(x)
    model = keras.Model(inputs, outputs)
    x = rng.normal(size=(3, 7, 8)).astype("float32")
    for variable in attention.weights:  # biases too
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    heads = _group_of(model, "attention/query")
    assert heads.channels == 4
    # Readers zero: the output projection ignores heads 1 and 3. Writers
    # zero: their query, key and value slices are, so each attends
    # uniformly to zero values.
    roles = ("reads",) if zeroed == "reads" else ("writes",)
    _cut_channels(heads, [1, 3], roles)
    small, summary, messages = _compact_quietly(model)
    assert messages == []
    new = small.get_layer("attention")
    assert (new.num_heads, new.key_dim) == (2, 3)
    assert tuple(new._query_dense.kernel.shape) == (8, 2, 3)
    (row,) = summary.layers
    assert (row.layer, row.units, row.kept_units, row.unit_indices) == ("attention", 4, 2, (0, 2))
    assert model.count_params() - small.count_params() == 2 * (3 * (8 * 3 + 3) + 3 * 8)
    _assert_same_function(model, small, x)
    path = str(tmp_path / "small.keras")
    small.save(path)
    _assert_same_function(model, keras.saving.load_model(path), x)


def test_a_stream_through_a_layer_normalization_stays_and_says_why(rng):
    inputs = keras.Input((5,))
    x = keras.layers.Dense(6, name="a")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    _randomize(model, rng)
    _zero(model, "head", inputs=[1, 2])
    small, summary, messages = _compact_quietly(model)
    assert small.count_params() == model.count_params()
    assert any("'head'" in m and "normalizes" in m for m in messages), messages


@pytest.mark.slow
def test_mobilenet_v2_expansion_channels_go_with_their_depthwise_filters(rng):
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10, classifier_activation=None
    )
    _randomize(model, rng)
    expansion = _group_of(model, "block_2_expand")
    assert {"block_2_expand_BN", "block_2_depthwise", "block_2_project"} <= set(expansion.layers)
    cut = np.arange(0, expansion.channels, 2)
    _cut_channels(expansion, cut, ("reads",))
    x = rng.uniform(0.0, 255.0, size=(2, 32, 32, 3)).astype("float32")
    small, summary, messages = _compact_quietly(model)
    assert messages == []
    rows = {row.layer: row for row in summary.layers}
    expansion_layers = ("block_2_expand", "block_2_expand_BN", "block_2_depthwise")
    for name in expansion_layers + ("block_2_depthwise_BN",):
        assert rows[name].kept_units == expansion.channels - cut.size, name
    assert (rows["block_2_project"].inputs, rows["block_2_project"].kept_inputs) == (
        expansion.channels,
        expansion.channels - cut.size,
    )
    compaction_fuzz.assert_close(_logits(small, x), _logits(model, x))


@pytest.mark.slow
def test_resnet50_stage_2_stream_narrows_in_every_block(rng):
    model = keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    _randomize(model, rng)
    stream = _group_of(model, "conv2_block1_3_conv")
    assert stream.channels == 256
    writers = {m.layer for m in stream.members if m.role == "writes"}
    assert writers == {
        "conv2_block1_0_conv",
        "conv2_block1_3_conv",
        "conv2_block2_3_conv",
        "conv2_block3_3_conv",
    }
    _cut_channels(stream, np.arange(0, 256, 2), ("reads",))
    x = rng.uniform(0.0, 255.0, size=(2, 32, 32, 3)).astype("float32")
    small, summary, messages = _compact_quietly(model)
    assert messages == []
    for name in sorted(writers):
        assert small.get_layer(name).filters == 128, name
    for name in ("conv2_block2_1_conv", "conv3_block1_0_conv", "conv3_block1_1_conv"):
        assert small.get_layer(name).kernel.shape[-2] == 128, name
    # 128 channels of 4 writers (kernel column and bias), 4 normalizations
    # (4 numbers each) and 4 readers (kernel row).
    readers = [m for m in stream.members if m.role == "reads"]
    per_channel = sum(m.params for m in stream.members)
    assert model.count_params() - small.count_params() == 128 * per_channel
    assert len(readers) == 4
    compaction_fuzz.assert_close(_logits(small, x), _logits(model, x))


@pytest.mark.parametrize("inner_kind", ["sequential", "functional"])
def test_coupled_channels_cross_into_nested_models_and_shared_layers(rng, inner_kind):
    shared = keras.layers.Dense(4, "relu", name="shared")
    if inner_kind == "sequential":
        inner = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(4, name="inner_dense")], name="inner"
        )
    else:
        inner_inputs = keras.Input((4,))
        inner_outputs = keras.layers.Dense(4, name="inner_dense")(inner_inputs)
        inner = keras.Model(inner_inputs, inner_outputs, name="inner")
    inputs = keras.Input((3,))
    a = shared(keras.layers.Dense(4, name="left")(inputs))
    b = shared(keras.layers.Dense(4, name="right")(inputs))
    outputs = keras.layers.Dense(2, name="head")(inner(keras.layers.Add()([a, b])))
    model = keras.Model(inputs, outputs)
    _randomize(model, rng)
    kernel = to_numpy(inner.layers[-1].kernel.value).copy()
    kernel[1] = 0.0  # the nested model no longer reads channel 1 of the shared layer
    inner.layers[-1].kernel.assign(kernel)
    _zero(model, "head", inputs=[2])  # nor the head channel 2 of the nested model
    small, summary, messages = _compact_quietly(model)
    assert messages == []
    rows = {row.layer: row for row in summary.layers}
    assert rows["shared"].unit_indices == (0, 2, 3)
    assert (rows["inner_dense"].kept_inputs, rows["inner_dense"].kept_units) == (3, 3)
    assert (rows["head"].inputs, rows["head"].kept_inputs) == (4, 3)
    assert small.count_params() == model.count_params() - 5 - 4 - 4 - 2
    _assert_same_function(model, small, rng.normal(size=(8, 3)).astype("float32"))


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.layers.SeparableConv2D(6, 3, name="c"),
        lambda: keras.layers.Conv2DTranspose(6, 3, name="c"),
        lambda: keras.layers.Conv2D(6, 1, name="c"),
        lambda: keras.layers.Conv2D(4, 3, padding="same", groups=4, name="c"),
    ],
    ids=["separable", "transposed", "pointwise", "depthwise_as_grouped"],
)
def test_filters_of_other_convolutions_go_with_their_readers(rng, make):
    # Every other filter zeroed, then a normalization with random statistics:
    # constant channels, which the 1x1 convolution after it folds.
    inputs = keras.Input((6, 6, 4))
    layer = make()
    h = keras.layers.BatchNormalization(name="bn")(layer(inputs))
    h = keras.layers.Conv2D(3, 1, name="reader")(keras.layers.ReLU()(h))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h)))
    _randomize(model, rng)
    for variable in layer.weights:
        if (
            variable.path.endswith(("kernel", "pointwise_kernel"))
            and "depthwise" not in variable.path
        ):
            value = to_numpy(variable).copy()
            axis = -2 if isinstance(layer, keras.layers.Conv2DTranspose) else -1
            index = [slice(None)] * value.ndim
            index[axis] = slice(1, None, 2)
            value[tuple(index)] = 0.0
            variable.assign(value)
    small, summary, messages = _compact_quietly(model)
    assert messages == []
    filters = model.get_layer("bn").gamma.shape[0]
    assert small.get_layer("bn").gamma.shape[0] == filters // 2
    assert small.count_params() < model.count_params()
    _assert_same_function(model, small, rng.normal(size=(4, 6, 6, 4)).astype("float32"))


def _normalized_stream():
    inputs = keras.Input((5, 6))
    h = keras.layers.Dense(8, name="writer")(inputs)
    h = keras.layers.LayerNormalization(name="ln")(h)
    h = keras.layers.Dense(4, activation="relu", name="reader")(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(h))


def test_exact_false_cuts_through_a_layer_normalization_and_reports_the_change(rng):
    model = _normalized_stream()
    _randomize(model, rng)
    _zero(model, "writer", units=[1, 3, 5])
    x = rng.normal(size=(4, 5, 6)).astype("float32")
    small, summary, messages = _compact_quietly(model)
    assert small.get_layer("ln").gamma.shape == (8,)  # exact: the stream stays
    assert summary.output_change is None
    assert any("LayerNormalization" in message for message in messages)
    small, summary, messages = _compact_quietly(kerasreg.compact(model, exact=True))
    assert summary.output_change is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cut, summary = kerasreg.compact(model, return_summary=True, exact=False)
    assert cut.get_layer("ln").gamma.shape == (5,)
    assert cut.get_layer("reader").kernel.shape == (5, 4)
    # The statistics are taken over 5 channels instead of 8: outputs change,
    # and the summary says by how much (against the original, on its batch).
    assert summary.output_change > 1e-3
    assert "exact=False" in str(summary)
    difference = np.max(np.abs(to_numpy(cut(x)) - to_numpy(model(x))))
    assert difference > 0
    with pytest.raises(ValueError, match="argument `exact`"):
        kerasreg.compact(model, exact="no")


def test_grouped_convolutions_lose_the_same_place_in_every_group(rng):
    # Kernel row r reads input channels r and r + 2 (2 groups of 2); unit s
    # of each group goes with unit s of the other, so the groups stay even.
    inputs = keras.Input((6, 6, 4))
    h = keras.layers.Conv2D(4, 1, name="before")(inputs)
    h = keras.layers.Conv2D(6, 3, groups=2, name="grouped")(h)
    h = keras.layers.Conv2D(3, 1, name="after")(keras.layers.ReLU()(h))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    _randomize(model, rng)
    _zero(model, "grouped", inputs=[1])  # row 1: input channels 1 and 3
    _zero(model, "after", inputs=[2, 5])  # place 2 of both groups of 3
    small, summary, messages = _compact_quietly(model)
    assert messages == []
    assert small.get_layer("grouped").kernel.shape == (3, 3, 1, 4)
    assert small.get_layer("before").filters == 2
    assert small.get_layer("after").kernel.shape == (1, 1, 4, 3)
    _assert_same_function(model, small, rng.normal(size=(4, 6, 6, 4)).astype("float32"))


@pytest.mark.parametrize(
    "shape, make, reader",
    [
        ((6, 4), lambda: keras.layers.Conv1DTranspose(6, 3, name="c"), keras.layers.Conv1D),
        ((4, 4, 4, 4), lambda: keras.layers.Conv3D(6, 2, name="c"), keras.layers.Conv3D),
        ((6, 4), lambda: keras.layers.SeparableConv1D(6, 3, name="c"), keras.layers.Conv1D),
    ],
    ids=["conv1d_transpose", "conv3d", "separable1d"],
)
def test_one_and_three_dimensional_convolutions_lose_their_zero_filters(rng, shape, make, reader):
    inputs = keras.Input(shape)
    layer = make()
    h = keras.layers.BatchNormalization(name="bn")(layer(inputs))
    h = reader(3, 1, name="reader")(keras.layers.ReLU()(h))
    model = keras.Model(inputs, keras.layers.Flatten()(h))
    _randomize(model, rng)
    kernel = layer.pointwise_kernel if hasattr(layer, "pointwise_kernel") else layer.kernel
    value = to_numpy(kernel).copy()
    if isinstance(layer, keras.layers.Conv1DTranspose):
        value[..., 1::2, :] = 0.0  # its kernel is (..., filters, inputs)
    else:
        value[..., 1::2] = 0.0
    kernel.assign(value)
    small, summary, messages = _compact_quietly(model)
    assert messages == []
    assert small.get_layer("bn").gamma.shape == (3,)
    _assert_same_function(model, small, rng.normal(size=(3, *shape)).astype("float32"))


def _zero_columns_with_biases(layer, columns, biases):
    kernel = to_numpy(layer.kernel).copy()
    kernel[..., columns] = 0.0
    layer.kernel.assign(kernel)
    bias = to_numpy(layer.bias).copy()
    bias[columns] = biases
    layer.bias.assign(bias)


def _all_random(model, rng):
    for variable in model.weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))


def _input_and_writer():
    # Channel 1 of the sum: input feature 1 plus d's zero column.
    inputs = keras.Input((4,))
    d = keras.layers.Dense(4, name="d")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Add()([inputs, d])))


def _padding_then_pooling():
    # Padding 2 with windows of 2: the outer windows hold padding only.
    inputs = keras.Input((4, 3))
    c = keras.layers.Conv1D(3, 1, name="c")(inputs)
    p = keras.layers.MaxPooling1D(2)(keras.layers.ZeroPadding1D(2)(c))
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(p)))


def _separable_after_constants():
    inputs = keras.Input((6, 6, 3))
    c = keras.layers.Conv2D(4, 1, name="c")(inputs)
    return keras.Model(inputs, keras.layers.SeparableConv2D(2, 3, padding="same")(c))


def _sequential_reshape():
    return keras.Sequential(
        [
            keras.Input((4, 4, 3)),
            keras.layers.Conv2D(4, 1, name="c"),
            keras.layers.Reshape((16, 4)),
            keras.layers.Dense(2, name="o"),
        ]
    )


def _attention_mask_from_a_layer():
    query = keras.Input((3, 4))
    h = keras.layers.Dense(4)(query)
    mask = keras.layers.Dense(3, activation="relu")(query)
    attention = keras.layers.MultiHeadAttention(2, 2)
    return keras.Model(query, attention(h, h, attention_mask=mask))


@pytest.mark.parametrize(
    "make, shape, edit",
    [
        (_input_and_writer, (4,), lambda m: _zero_columns_with_biases(m.get_layer("d"), [1], 0)),
        (
            _padding_then_pooling,
            (4, 3),
            lambda m: _zero_columns_with_biases(m.get_layer("c"), [0], 1.0),
        ),
        (
            _separable_after_constants,
            (6, 6, 3),
            lambda m: _zero_columns_with_biases(m.get_layer("c"), [0, 1], [1.0, 2.0]),
        ),
        (_sequential_reshape, (4, 4, 3), lambda m: _zero(m, "o", inputs=[1])),
        (_attention_mask_from_a_layer, (3, 4), lambda m: None),
    ],
    ids=["input_channel", "padding_wider_than_windows", "separable", "sequential_reshape", "mask"],
)
def test_channels_that_only_look_removable_stay(rng, make, shape, edit):
    # Each once lost a channel that still mattered (or crashed): a model
    # input has no writer, a window of padding alone is 0, a separable
    # convolution filters each channel apart, a Sequential Reshape follows
    # the new width, an attention mask is read by the attention.
    model = make()
    _all_random(model, rng)
    edit(model)
    x = rng.normal(size=(3, *shape)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = kerasreg.compact(model)
    _assert_same_function(model, small, x)
