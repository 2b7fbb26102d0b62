"""`kerasreg.oneshot_prune` on Keras models, on every backend.

The arithmetic is tested against its oracles in `test_oneshot_solvers.py`;
here, what Keras adds: that each layer kind's rows of inputs times its matrix
give the layer's own outputs (the oracle for the convolution patches and the
einsum axes), that each block is pruned from the outputs of the blocks
already pruned, that Wanda's mask on a model is the closed form computed from
the raw inputs, that the report's errors are those measured on the data,
that the pattern survives fine-tuning, saving and quantization, and that bad
input fails before any weight changes.
"""

import keras
import numpy as np
import pytest

import kerasreg
from kerasreg.oneshot import _solvers
from kerasreg.oneshot import _targets
from tests.conftest import to_numpy


def _rng(seed=0):
    return np.random.default_rng(seed)


def _kernel(layer):
    return to_numpy(layer.kernel).astype(np.float64)


def _mlp(seed=0, inputs=12, hidden=16, outputs=3):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(outputs, name="out"),
        ]
    )


def _correlated(rows, features, seed=0):
    rng = _rng(seed)
    mixing = rng.normal(size=(features, features)) * rng.uniform(0.2, 3.0, size=features)
    return (rng.normal(size=(rows, features)) @ mixing).astype("float32")


@pytest.mark.parametrize(
    "layer, shape",
    [
        (keras.layers.Dense(5), (4, 7)),
        (keras.layers.Dense(5), (4, 3, 7)),
        (keras.layers.EinsumDense("abc,cde->abde", (3, 2, 4), bias_axes="de"), (4, 3, 6)),
        (keras.layers.EinsumDense("abcd,cde->abe", (3, 5), bias_axes="e"), (4, 3, 2, 4)),
        (keras.layers.EinsumDense("...b,bc->...c", 6), (4, 3, 5)),
        (keras.layers.EinsumDense("abc,bd->adc", (4, 3)), (2, 5, 3)),
        (keras.layers.EinsumDense("ab...,bc->ac...", (6, None)), (3, 4, 5)),
        (keras.layers.Conv1D(4, 3, padding="causal", dilation_rate=2), (2, 11, 3)),
        (keras.layers.Conv1D(4, 3, strides=2, padding="same"), (2, 10, 3)),
        (keras.layers.Conv2D(4, (3, 2), strides=(2, 1), padding="same"), (2, 7, 6, 3)),
        (keras.layers.Conv2D(4, 3, dilation_rate=2, padding="valid"), (2, 9, 8, 2)),
        (keras.layers.Conv3D(3, 2, padding="same"), (2, 4, 5, 3, 2)),
    ],
    ids=lambda v: getattr(v, "name", None) if isinstance(v, keras.layers.Layer) else str(v),
)
def test_rows_times_matrix_are_the_layers_outputs(layer, shape):
    """`rows(x) @ matrix().T` is the layer's output less its bias: the oracle of the views."""
    x = _rng().normal(size=shape).astype("float32")
    y = to_numpy(layer(x)).astype(np.float64)
    if getattr(layer, "bias", None) is not None:
        y = y - to_numpy(layer.bias).astype(np.float64)
    target = _targets.target_for(layer, layer.name)
    product = target.rows(x) @ target.matrix().T
    if isinstance(layer, keras.layers.EinsumDense):
        # The rows are the non-contracted axes of `x` in order, then the outputs.
        operands, output = layer.equation.split("->")
        spec, kernel_spec = operands.split(",")

        def labels(spec, rank):  # an ellipsis as one label per axis it stands for
            before, dots, after = spec.partition("...")
            middle = [str(i) for i in range(rank - len(before) - len(after))] if dots else []
            return list(before) + middle + list(after)

        kept = [c for c in labels(spec, x.ndim) if c not in target._contracted]
        kernel_out = [c for c in kernel_spec if c in output]
        y_labels = labels(output, y.ndim)
        y = np.transpose(y, [y_labels.index(c) for c in kept + kernel_out])
    np.testing.assert_allclose(product.reshape(-1), y.reshape(-1), rtol=1e-4, atol=1e-4)


def test_channels_first_convolution_patches():
    """A `channels_first` convolution's patches give its outputs too."""
    layer = keras.layers.Conv2D(4, 3, padding="same", data_format="channels_first")
    x = _rng(1).normal(size=(2, 3, 6, 5)).astype("float32")
    y = to_numpy(layer(x)).astype(np.float64) - to_numpy(layer.bias)[None, :, None, None]
    target = _targets.target_for(layer, layer.name)
    product = target.rows(x) @ target.matrix().T
    np.testing.assert_allclose(
        product.reshape(-1), np.moveaxis(y, 1, -1).reshape(-1), rtol=1e-4, atol=1e-4
    )


def test_wanda_mask_is_the_closed_form_on_the_raw_inputs():
    """Each output keeps the inputs of largest |w| * ||x_j||, computed here from `x` itself."""
    model = _mlp()
    x = _correlated(200, 12)
    dense = _kernel(model.get_layer("hidden"))
    kerasreg.oneshot_prune(
        model, x, method="wanda", sparsity=0.25, layers=["hidden"], num_samples=200
    )
    norms = np.linalg.norm(x.astype(np.float64), axis=0)
    scores = np.abs(dense) * norms[:, None]  # Keras layout: (inputs, outputs)
    expected = np.ones_like(dense, dtype=bool)
    for unit in range(dense.shape[1]):
        expected[np.argsort(scores[:, unit], kind="stable")[:3], unit] = False
    pruned = _kernel(model.get_layer("hidden"))
    np.testing.assert_array_equal(pruned != 0, expected)
    np.testing.assert_array_equal(pruned[expected], dense[expected].astype(np.float32))


def test_each_block_is_pruned_from_the_pruned_outputs_before_it():
    """The second layer's Hessian comes from the first layer's outputs after pruning."""
    model = _mlp(seed=1)
    x = _correlated(256, 12, seed=1)
    w1, b1 = _kernel(model.get_layer("hidden")), to_numpy(model.get_layer("hidden").bias)
    w2 = _kernel(model.get_layer("out"))
    report = kerasreg.oneshot_prune(
        model, x, sparsity=0.5, block_size=4, hessian_damping=0.05, num_samples=256
    )
    h1 = x.astype(np.float64).T @ x.astype(np.float64)
    new1, keep1 = _solvers.sparsegpt(w1.T, h1, 0.5, damping=0.05, block_size=4)
    np.testing.assert_allclose(_kernel(model.get_layer("hidden")), new1.T, rtol=2e-5, atol=2e-6)
    pruned1 = _kernel(model.get_layer("hidden"))
    hidden = np.maximum(x.astype(np.float64) @ pruned1 + b1, 0.0)
    h2 = hidden.T @ hidden
    new2, _ = _solvers.sparsegpt(w2.T, h2, 0.5, damping=0.05, block_size=4)
    np.testing.assert_allclose(_kernel(model.get_layer("out")), new2.T, rtol=1e-4, atol=1e-5)
    # The report's error is the one measured on the data the layer saw.
    delta = hidden @ (_kernel(model.get_layer("out")) - w2)
    measured = np.linalg.norm(delta) / np.linalg.norm(hidden @ w2)
    assert report["out"].error == pytest.approx(measured, rel=1e-3)
    assert report["out"].rows == 256
    assert [r.path for r in report] == ["hidden", "out"]


def test_methods_rank_on_correlated_inputs():
    """On correlated inputs, SparseGPT's error < Wanda's < magnitude's, per layer."""
    x = _correlated(512, 12, seed=2)
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        model = _mlp(seed=2)
        report = kerasreg.oneshot_prune(model, x, method=method, layers=["hidden"], num_samples=512)
        errors[method] = report["hidden"].error
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"]


def test_structure_mapping_and_selection():
    """2:4 holds per `sparsity_report`; a mapping from `allocate_sparsity` prunes what it names."""
    model = _mlp(seed=3)
    x = _correlated(128, 12, seed=3)
    report = kerasreg.oneshot_prune(model, x, method="sparsegpt", structure=(2, 4))
    checked = kerasreg.sparsity_report(model, structure=(2, 4))
    assert checked["hidden/kernel"].structure_holds and checked["out/kernel"].structure_holds
    assert report.sparsity == 0.5 and report.structure == (2, 4)

    model = _mlp(seed=3)
    targets = kerasreg.allocate_sparsity(model, 0.6)
    report = kerasreg.oneshot_prune(model, x, method="wanda", sparsity=targets)
    for path, asked in targets.items():
        layer = model.get_layer(path.split("/")[-2])
        zeros = np.mean(_kernel(layer) == 0)
        assert abs(zeros - asked) <= 1.0 / layer.kernel.shape[0] + 1e-9
    model = _mlp(seed=3)
    report = kerasreg.oneshot_prune(model, x, sparsity={"out": 0.5})
    assert [r.path for r in report] == ["out"]
    assert np.all(_kernel(model.get_layer("hidden")) != 0)


def test_fine_tuning_saving_strip_and_compact_keep_the_pattern(tmp_path):
    """After pruning, `fit` under ProximalOptimizer keeps every zero; so do save, load and strip."""
    model = _mlp(seed=4)
    x = _correlated(128, 12, seed=4)
    y = _rng(4).integers(0, 3, size=128)
    kerasreg.oneshot_prune(model, x, method="wanda", sparsity=0.5)
    zeros = {layer.name: _kernel(layer) == 0 for layer in model.layers}
    model.compile(
        optimizer=kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.01)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = {layer.name: _kernel(layer) for layer in model.layers}
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    for layer in model.layers:
        after = _kernel(layer)
        assert np.all(after[zeros[layer.name]] == 0)
        assert not np.array_equal(after, before[layer.name])  # the rest trained
    path = tmp_path / "pruned.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(
        loaded.get_layer("hidden").kernel_regularizer, kerasreg.regularizers.KeepZeros
    )
    np.testing.assert_array_equal(_kernel(loaded.get_layer("hidden")) == 0, zeros["hidden"])
    stripped = kerasreg.strip(loaded)
    assert stripped.get_layer("hidden").kernel_regularizer is None
    np.testing.assert_array_equal(_kernel(stripped.get_layer("hidden")) == 0, zeros["hidden"])
    compacted = kerasreg.compact(loaded)
    np.testing.assert_allclose(
        to_numpy(compacted.predict(x, verbose=0)),
        to_numpy(loaded.predict(x, verbose=0)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_a_pruned_model_keeps_its_zeros_through_int8_quantization():
    """Keras' int8 scheme (abs-max per output) maps a zero weight to the integer 0."""
    model = _mlp(seed=5)
    x = _correlated(128, 12, seed=5)
    kerasreg.oneshot_prune(model, x, sparsity=0.5, keep_pattern=False)
    zeros = _kernel(model.get_layer("hidden")) == 0
    expected = to_numpy(model.predict(x, verbose=0))
    model.quantize("int8")
    quantized = to_numpy(model.get_layer("hidden")._kernel)
    assert str(quantized.dtype) == "int8"
    np.testing.assert_array_equal(quantized == 0, zeros | (quantized == 0))
    assert np.all(quantized[zeros] == 0)
    got = to_numpy(model.predict(x, verbose=0))
    assert np.max(np.abs(got - expected)) < 0.1 * np.max(np.abs(expected))


def test_bfloat16_weights_and_iterable_batches():
    """bfloat16 kernels are pruned via float64 statistics, fed by a generator of (x, y)."""
    keras.utils.set_random_seed(6)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, dtype="bfloat16", name="half")]
    )
    x = _correlated(96, 8, seed=6)

    def batches():
        for start in range(0, 96, 32):
            yield x[start : start + 32], np.zeros(32)

    report = kerasreg.oneshot_prune(model, batches(), sparsity=0.5, num_samples=64)
    kernel = to_numpy(keras.ops.cast(model.get_layer("half").kernel, "float32"))
    assert report.samples == 64 and report["half"].rows == 64
    assert np.mean(kernel == 0) == 0.5 and np.all(np.isfinite(kernel))


def test_a_singular_hessian_gets_more_damping_never_nans():
    """Inputs of rank 2 and no damping: a warning, finite weights, the sparsity asked."""
    model = _mlp(seed=7)
    x = (_rng(7).normal(size=(64, 2)) @ _rng(8).normal(size=(2, 12))).astype("float32")
    with pytest.warns(UserWarning, match="singular"):
        report = kerasreg.oneshot_prune(model, x, hessian_damping=0.0, layers=["hidden"])
    kernel = _kernel(model.get_layer("hidden"))
    assert np.all(np.isfinite(kernel)) and report["hidden"].sparsity == 0.5


def test_a_subclassed_model_is_one_block():
    """A model that hides its wiring is pruned from one pass over it."""

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.first = keras.layers.Dense(8, activation="relu")
            self.second = keras.layers.Dense(2)
            self.spare = keras.layers.Dense(3)  # built, never called

        def call(self, x):
            return self.second(self.first(x))

    model = Net()
    x = _correlated(64, 6, seed=9)
    model(x[:1])
    model.spare.build((None, 6))
    spare = to_numpy(model.spare.kernel)
    report = kerasreg.oneshot_prune(model, x, method="wanda", keep_pattern=False)
    assert len(report) == 2 and all(r.sparsity == 0.5 for r in report)
    assert list(report.skipped) == [model.spare.name]
    assert "not called" in report.skipped[model.spare.name]
    np.testing.assert_array_equal(to_numpy(model.spare.kernel), spare)


def test_skipped_layers_and_conv_targets():
    """A grouped convolution is left out, and listed; plain convolutions are pruned."""
    keras.utils.set_random_seed(10)
    inputs = keras.Input((6, 6, 4))
    h = keras.layers.Conv2D(4, 3, groups=2, padding="same", name="grouped")(inputs)
    h = keras.layers.Conv2D(8, 3, name="plain")(h)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    x = _rng(10).normal(size=(32, 6, 6, 4)).astype("float32")
    report = kerasreg.oneshot_prune(model, x, method="sparsegpt", keep_pattern=False)
    assert [r.path for r in report] == ["plain"] and "grouped" in report.skipped
    assert report["plain"].kind == "conv" and report["plain"].rows == 32 * 16
    assert "skipped grouped" in str(report)


def _invalid(model, x, **kwargs):
    weights = [to_numpy(w) for w in model.weights]
    with pytest.raises(kerasreg.InvalidArgumentError) as error:
        kerasreg.oneshot_prune(model, x, **kwargs)
    for before, after in zip(weights, model.weights, strict=True):
        np.testing.assert_array_equal(before, to_numpy(after))
    return str(error.value)


def test_bad_input_fails_with_the_argument_named_and_nothing_changed():
    model = _mlp(seed=11)
    x = _correlated(64, 12, seed=11)
    assert "`sparsity`" in _invalid(model, x, sparsity=1.0)
    assert "`sparsity`" in _invalid(model, x, sparsity=0.3, structure=(2, 4))
    assert "`structure`" in _invalid(model, x, structure=(2, 5))
    assert "`method`" in _invalid(model, x, method="obs")
    assert "`layers`" in _invalid(model, x, layers=["nothing"])
    assert "`data`" in _invalid(model, None, method="wanda")
    assert "`sparsity`" in _invalid(model, x, sparsity={"elsewhere": 0.5})
    message = _invalid(model, x[:10])
    assert "`num_samples`" in message and "at least 12" in message
    # A NaN reaches the second layer only after the first one is pruned: restored.
    bad = x.copy()
    bad[3, 0] = np.nan
    assert "`data`" in _invalid(model, bad, method="wanda")


def _layer_at(model, path):
    for name in path.split("/"):
        model = next(layer for layer in model._flatten_layers() if layer.name == name)
    return model


def test_a_keras_hub_language_model_block_by_block(tmp_path):
    """GPT-2's attention and feed-forward kernels, each pruned 2:4 from a token stream; saves."""
    import keras_hub

    keras.utils.set_random_seed(12)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=32,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=16,
    )
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    tokens = _rng(12).integers(0, 32, size=2000)
    report = kerasreg.oneshot_prune(lm, tokens, structure=(2, 4), sequence_length=16, num_samples=8)
    assert len(report) == 12 and report.samples == 8
    assert {r.rows for r in report} == {8 * 16}
    layer_0 = [r.path for r in report][:6]
    assert all("transformer_layer_0" in path for path in layer_0)
    for row in report:
        # Along each kernel's contracted axes (its inputs): 2 of every 4 kept.
        layer = _layer_at(lm, row.path)
        matrix = _targets.target_for(layer, row.path).matrix()
        kept = (matrix != 0).reshape(matrix.shape[0], -1, 4).sum(axis=-1)
        assert np.all(kept <= 2) and row.sparsity == 0.5, row.path
    x = {"token_ids": tokens[:32].reshape(2, 16), "padding_mask": np.ones((2, 16), bool)}
    expected = to_numpy(lm.predict(x, verbose=0))
    assert np.all(np.isfinite(expected))
    path = tmp_path / "lm.keras"
    lm.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded.predict(x, verbose=0)), expected, atol=1e-5)


def test_text_through_a_keras_hub_preprocessor_and_a_tf_data_pipeline():
    """Strings go through the task's preprocessor; a `tf.data.Dataset` is read batch by batch."""
    import keras_hub
    import tensorflow as tf

    vocabulary = {"<|endoftext|>": 0}
    for character in "abcdefghijklmnopqrstuvwxyz.Ġ":
        vocabulary[character] = len(vocabulary)
    vocabulary["Ġt"] = len(vocabulary)
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["Ġ t"])
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=16)
    keras.utils.set_random_seed(13)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=len(vocabulary),
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=16,
    )
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
    texts = ["the quick brown fox jumps over the lazy dog."] * 6
    report = kerasreg.oneshot_prune(lm, texts, method="wanda", sequence_length=8)
    assert report.samples == 6 and {r.rows for r in report} == {6 * 8}
    assert preprocessor.sequence_length == 16  # set back

    model = _mlp(seed=13)
    x = _correlated(64, 12, seed=13)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(64))).batch(16)
    report = kerasreg.oneshot_prune(model, dataset, method="wanda", num_samples=40)
    assert report.samples == 40 and report["hidden"].rows == 40


def test_a_nested_model_called_with_a_dict_gets_its_inputs_by_name():
    """Keras matches a dict to a nested model's inputs by name; so does the runner."""
    keras.utils.set_random_seed(14)
    ib, ia = keras.Input((6,), name="b"), keras.Input((6,), name="a")
    summed = keras.layers.Add()([keras.layers.Dense(4, name="db")(ib), keras.layers.Dense(4)(ia)])
    inner = keras.Model([ib, ia], summed, name="inner")
    xa, xb = keras.Input((6,), name="xa"), keras.Input((6,), name="xb")
    model = keras.Model({"xa": xa, "xb": xb}, inner({"a": xa, "b": xb}))
    rng = _rng(14)
    data = {
        "xa": rng.normal(size=(64, 6)).astype("float32"),
        "xb": (rng.normal(size=(64, 6)) * [1, 1, 1, 1, 1, 50]).astype("float32"),
    }
    kernel = _kernel(inner.get_layer("db"))
    kerasreg.oneshot_prune(model, data, method="wanda", sparsity=0.5, keep_pattern=False)
    scores = np.abs(kernel) * np.linalg.norm(data["xb"].astype(np.float64), axis=0)[:, None]
    expected = np.ones_like(kernel, dtype=bool)
    for unit in range(4):
        expected[np.argsort(scores[:, unit], kind="stable")[:3], unit] = False
    np.testing.assert_array_equal(_kernel(inner.get_layer("db")) != 0, expected)


def test_pruning_again_under_a_built_optimizer():
    """Masks already in the optimizer take the new zeros; without KeepZeros, it refuses first."""
    x = _correlated(128, 12, seed=15)
    y = _rng(15).integers(0, 3, size=128)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = _mlp(seed=15)
    kerasreg.oneshot_prune(model, x, method="wanda", sparsity=0.5)
    model.compile(optimizer=kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.01)), loss=loss)
    model.fit(x, y, epochs=1, verbose=0)
    kerasreg.oneshot_prune(model, x, method="wanda", sparsity=0.75)
    zeros = _kernel(model.get_layer("hidden")) == 0
    model.fit(x, y, epochs=1, verbose=0)
    assert np.all(_kernel(model.get_layer("hidden"))[zeros] == 0) and zeros.mean() == 0.75

    frozen = _mlp(seed=15)  # a pretrained model, frozen: pruned, nothing to hold
    frozen.trainable = False
    kerasreg.oneshot_prune(frozen, x, method="wanda")
    assert frozen.get_layer("hidden").kernel_regularizer is None

    model = _mlp(seed=15)
    model.compile(optimizer=kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.01)), loss=loss)
    model.fit(x, y, epochs=1, verbose=0)
    assert "`keep_pattern`" in _invalid(model, x)
    kerasreg.oneshot_prune(model, x, keep_pattern=False)


def test_what_is_read_as_data_and_what_is_left_out():
    """(x, y) gives x; a mapping with a structure checks only what it names; RNN cells stay."""
    model = _mlp(seed=16, outputs=6)
    x = _correlated(40, 12, seed=16)
    report = kerasreg.oneshot_prune(model, (x, 1000 * x[:, :6]), method="wanda")
    assert report.samples == 40 and report["hidden"].rows == 40
    model = _mlp(seed=16, outputs=6)
    kerasreg.oneshot_prune(model, x, method="wanda", structure=(2, 4), sparsity={"hidden": 0.5})

    class Cell(keras.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units, self.state_size = units, units
            self.proj = keras.layers.Dense(units, name="proj")

        def build(self, shape):
            self.proj.build((shape[0], shape[-1] + self.units))

        def call(self, x, states):
            h = keras.ops.tanh(self.proj(keras.ops.concatenate([x, states[0]], -1)))
            return h, [h]

    inputs = keras.Input((6, 4))
    rnn = keras.layers.RNN(Cell(8), name="rnn")
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(rnn(inputs)))
    report = kerasreg.oneshot_prune(model, _rng(16).normal(size=(32, 6, 4)), method="wanda")
    assert [r.path for r in report] == ["head"]
    assert [why for path, why in report.skipped.items() if path.endswith("proj")] == [
        "inside a recurrent layer's cell (called in a loop over time steps)"
    ]
