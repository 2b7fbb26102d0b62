"""`kerasreg.strip`: a plain-Keras copy that loads where kerasreg cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kerasreg

L = keras.layers
RNG = np.random.default_rng(0)


def _gated_mlp():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            kerasreg.FeatureGate(name="gate"),
            L.Dense(5, "relu", kernel_regularizer=kerasreg.ElasticNet(0.01, 0.3), name="hidden"),
            L.Dense(2, kernel_regularizer=kerasreg.L1(0.02), name="out"),
        ]
    )
    gates = np.array([1.5, 0.0, -2.0, 0.0, 0.5, 1.0], "float32")
    model.get_layer("gate").gates.assign(gates)
    return model


def _compacted_mlp():
    return kerasreg.compact(_gated_mlp())


def _residual_cnn():
    inputs = keras.Input((8, 8, 3))
    x = kerasreg.FeatureGate(axis=(1, 2), name="pixels")(inputs)
    x = L.Conv2D(4, 3, padding="same", kernel_regularizer=kerasreg.GroupLasso(0.01), name="c1")(x)
    x = L.BatchNormalization(name="bn")(x)
    y = L.Conv2D(4, 1, kernel_regularizer=kerasreg.L2(0.01), name="c2")(L.ReLU()(x))
    x = L.Add()([x, y])
    inner = keras.Sequential(
        [keras.Input((4,)), L.Dense(3, kernel_regularizer=kerasreg.L1(0.01), name="inner_dense")],
        name="head",
    )
    outputs = inner(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    pixels = model.get_layer("pixels")
    pixels.gates.assign(RNG.normal(size=(8, 8)).astype("float32") * (RNG.random((8, 8)) > 0.3))
    return model


def _nested_selection():
    """A model whose nested Sequential holds a `SelectFeatures` (as a compacted one can)."""
    inner = keras.Sequential(
        [
            keras.Input((5,)),
            kerasreg.layers.SelectFeatures([0, 2, 4], name="first_inputs"),
            L.Dense(3, kernel_regularizer=kerasreg.L1(0.01), name="first"),
        ],
        name="inner",
    )
    inputs = keras.Input((5,))
    outputs = L.Dense(2, name="last")(inner(inputs))
    return keras.Model(inputs, outputs)


@keras.saving.register_keras_serializable(package="test_deployment")
class Scaled(L.Layer):
    """A user's layer whose config holds a regularizer."""

    def __init__(self, units=3, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units), regularizer=self.kernel_regularizer, name="kernel"
        )

    def call(self, x):
        return x @ self.kernel

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "kernel_regularizer": keras.saving.serialize_keras_object(self.kernel_regularizer),
        }


@keras.saving.register_keras_serializable(package="test_deployment")
class Subclassed(keras.Model):
    def __init__(self, regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.regularizer = keras.regularizers.get(regularizer)
        self.dense = L.Dense(4, "relu", kernel_regularizer=self.regularizer, name="dense")
        self.scaled = Scaled(2, kernel_regularizer=self.regularizer, name="scaled")

    def call(self, x):
        return self.scaled(self.dense(x))

    def get_config(self):
        return {
            **super().get_config(),
            "regularizer": keras.saving.serialize_keras_object(self.regularizer),
        }


def _subclassed():
    model = Subclassed(kerasreg.L1(0.03))
    model(np.zeros((1, 6), "float32"))
    return model


MODELS = {
    "gated_mlp": (_gated_mlp, (6,)),
    "compacted_mlp": (_compacted_mlp, (6,)),
    "residual_cnn": (_residual_cnn, (8, 8, 3)),
    "nested_selection": (_nested_selection, (5,)),
    "subclassed": (_subclassed, (6,)),
}


def _kerasreg_in(config):
    return "kerasreg" in json.dumps(config, default=str)


def _numpy_penalty(regularizer, w):
    """The penalty from its definition (the README's table), in NumPy."""
    w = np.asarray(w, "float64")
    if isinstance(regularizer, kerasreg.L1):
        return regularizer.l1 * np.abs(w).sum()
    if isinstance(regularizer, kerasreg.L2):
        return regularizer.l2 * np.square(w).sum()
    if isinstance(regularizer, kerasreg.ElasticNet):
        s, r = regularizer.strength, regularizer.l1_ratio
        return s * (r * np.abs(w).sum() + (1 - r) * np.square(w).sum())
    raise AssertionError(regularizer)


def _penalized(model):
    return [w for w in model.weights if getattr(w, "regularizer", None) is not None]


@pytest.mark.parametrize("name", MODELS)
def test_same_predictions_no_kerasreg_object_and_no_penalty(name):
    build, shape = MODELS[name]
    model = build()
    assert _kerasreg_in(keras.saving.serialize_keras_object(model))
    x = RNG.normal(size=(7,) + shape).astype("float32")
    expected = model.predict(x, verbose=0)
    plain = kerasreg.strip(model)
    np.testing.assert_allclose(plain.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)  # original untouched
    assert not _kerasreg_in(keras.saving.serialize_keras_object(plain))
    assert plain.losses == [] and _penalized(plain) == []
    layers = plain._flatten_layers()
    assert not any(type(layer).__module__.startswith("kerasreg") for layer in layers)


def test_gates_become_rescaling_and_selection_a_take_node():
    plain = kerasreg.strip(_compacted_mlp())
    assert isinstance(plain, keras.Model) and not isinstance(plain, keras.Sequential)
    rescaling = plain.get_layer("gate")
    assert isinstance(rescaling, L.Rescaling) and not rescaling.trainable
    # The closed gates left with their features (a selection in front).
    np.testing.assert_array_equal(rescaling.scale, [1.5, -2.0, 0.5, 1.0])
    assert [op.__class__.__name__ for op in plain.operations].count("Take") == 1
    nested = _nested_selection()
    assert any(isinstance(la, kerasreg.layers.SelectFeatures) for la in nested.layers[1].layers)
    stripped = kerasreg.strip(nested).get_layer("inner")
    assert [op.__class__.__name__ for op in stripped.operations].count("Take") == 1
    # Without a selection, a Sequential model stays Sequential.
    assert isinstance(kerasreg.strip(_gated_mlp()), keras.Sequential)


def test_keras_mode_keeps_equal_penalties_where_keras_has_them():
    model = _residual_cnn()
    with pytest.warns(UserWarning, match="GroupLasso") as caught:
        plain = kerasreg.strip(model, regularizers="keras")
    assert not _kerasreg_in(keras.saving.serialize_keras_object(plain))
    assert isinstance(plain.get_layer("c2").kernel_regularizer, keras.regularizers.L2)
    assert plain.get_layer("c1").kernel_regularizer is None  # group lasso: none in Keras
    # The warning names the caller's line, not kerasreg's argument checking.
    assert {w.filename for w in caught if "GroupLasso" in str(w.message)} == {__file__}
    expected = sorted(
        _numpy_penalty(w.regularizer, w)
        for w in _penalized(model)
        if not isinstance(w.regularizer, kerasreg.GroupLasso) and w.path.split("/")[-2] != "pixels"
    )
    got = sorted(float(loss) for loss in plain.losses)
    np.testing.assert_allclose(got, expected, rtol=1e-5)

    subclassed = _subclassed()
    plain = kerasreg.strip(subclassed, regularizers="keras")
    assert type(plain.regularizer) is keras.regularizers.L1
    np.testing.assert_allclose(
        sorted(float(loss) for loss in plain.losses),
        sorted(_numpy_penalty(w.regularizer, w) for w in _penalized(subclassed)),
        rtol=1e-5,
    )


def test_compiled_with_proximal_optimizer_gets_the_inner_optimizer():
    model = _gated_mlp()
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.003)), "mse", metrics=["mae"])
    model.fit(np.ones((4, 6)), np.ones((4, 2)), verbose=0)
    assert not kerasreg.strip(model).compiled  # a file without optimizer state
    plain = kerasreg.strip(model, compile=True)
    assert isinstance(plain.optimizer, keras.optimizers.Adam)
    assert float(plain.optimizer.learning_rate) == pytest.approx(0.003)
    assert int(plain.optimizer.iterations) == 0  # new optimizer state
    history = plain.fit(np.ones((4, 6)), np.ones((4, 2)), verbose=0)
    assert "mae" in history.history
    assert not kerasreg.strip(kerasreg.compact(model)).compiled
    compacted = kerasreg.strip(kerasreg.compact(model), compile=True)
    assert isinstance(compacted.optimizer, keras.optimizers.Adam)


def test_penalties_no_config_holds():
    """`regularize` on a user's layer without a regularizer argument."""

    class Plain(L.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 2), name="kernel")

        def call(self, x):
            return x @ self.kernel

    inputs = keras.Input((3,))
    model = keras.Model(inputs, L.Dense(2, name="dense")(Plain(name="plain")(inputs)))
    kerasreg.regularize(model, kerasreg.L1(0.1))
    with pytest.raises(ValueError, match="cannot hold"):
        model.get_config()
    plain = kerasreg.strip(model)
    assert plain.losses == []
    # Keras' L1 in memory, where no config holds it: saving refuses, as before.
    kept = kerasreg.strip(model, regularizers="keras")
    assert type(kept.get_layer("plain").kernel.regularizer) is keras.regularizers.L1
    np.testing.assert_allclose(
        sorted(float(loss) for loss in kept.losses),
        sorted(_numpy_penalty(w.regularizer, w) for w in _penalized(model)),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="cannot hold"):
        kept.get_config()
    # The original keeps refusing too.
    with pytest.raises(ValueError, match="cannot hold"):
        model.get_config()


def test_kerasreg_layer_made_by_code_is_named():
    class Gated(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.gate = kerasreg.FeatureGate(name="code_gate")
            self.dense = L.Dense(1)

        def call(self, x):
            return self.dense(self.gate(x))

    model = Gated()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="code_gate"):
        kerasreg.strip(model)


def test_unbuilt_model_is_refused():
    with pytest.raises(kerasreg.InvalidArgumentError, match="build"):
        kerasreg.strip(keras.Sequential([L.Dense(2)]))


_LOAD_WITHOUT_KERASREG = """
import sys
sys.modules["kerasreg"] = None  # `import kerasreg` now raises ImportError
import keras, numpy as np
try:
    import kerasreg
except ImportError:
    pass
else:
    raise SystemExit("kerasreg could be imported")
for name in sys.argv[2:]:
    model = keras.models.load_model(f"{sys.argv[1]}/{name}.keras")
    x = np.load(f"{sys.argv[1]}/{name}_x.npy")
    np.save(f"{sys.argv[1]}/{name}_loaded.npy", model.predict(x, verbose=0))
print("loaded", len(sys.argv) - 2)
"""


@pytest.mark.slow
def test_files_load_where_kerasreg_cannot_be_imported(tmp_path):
    names = [n for n in MODELS if n != "subclassed"]  # its class lives in this test module
    expected = {}
    for name in names:
        build, shape = MODELS[name]
        model = build()
        model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
        plain = kerasreg.strip(model)
        x = RNG.normal(size=(5,) + shape).astype("float32")
        expected[name] = model.predict(x, verbose=0)
        np.save(tmp_path / f"{name}_x.npy", x)
        plain.save(tmp_path / f"{name}.keras")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_LOAD_WITHOUT_KERASREG), str(tmp_path)] + names,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"loaded {len(names)}" in result.stdout
    for name in names:
        loaded = np.load(tmp_path / f"{name}_loaded.npy")
        np.testing.assert_allclose(loaded, expected[name], rtol=1e-6, atol=1e-6)


def test_tensorflow_export_and_tflite_of_a_stripped_compacted_model(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("SavedModel export and TFLite conversion need the TensorFlow backend")
    import tensorflow as tf

    small = kerasreg.strip(kerasreg.compact(_compacted_mlp()))
    x = RNG.normal(size=(3, 6)).astype("float32")
    expected = small.predict(x, verbose=0)

    small.export(str(tmp_path / "saved"))
    served = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(served.serve(x).numpy(), expected, rtol=1e-6, atol=1e-6)

    converter = tf.lite.TFLiteConverter.from_keras_model(small)
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
