"""`kerasreg.regularize`: penalties checked against Keras' own `L1`, on every layer type."""

import keras
import numpy as np
import pytest

import kerasreg
from tests.conftest import to_numpy

L = keras.layers
STRENGTH = 0.1


def _oracle(variables, strength=STRENGTH):
    """The penalty Keras' own L1 puts on `variables`."""
    return sum(float(to_numpy(keras.regularizers.L1(strength)(v))) for v in variables)


def _penalty(model):
    return sum(float(to_numpy(loss)) for loss in model.losses)


def _penalized(model):
    return [v for v in model.trainable_weights if v.regularizer is not None]


def _round_trip(model, path):
    model.save(path)
    return keras.models.load_model(path)


def _assert_same(model, loaded, x):
    np.testing.assert_allclose(
        to_numpy(loaded.predict(x, verbose=0)), to_numpy(model.predict(x, verbose=0)), atol=1e-6
    )
    assert len(loaded.losses) == len(model.losses)
    np.testing.assert_allclose(_penalty(loaded), _penalty(model), rtol=1e-6)


@keras.saving.register_keras_serializable(package="test_apply")
class Projection(L.Layer):
    """A user's layer: a kernel from `add_weight`, no regularizer argument."""

    def __init__(self, units=2, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

    def call(self, x):
        return keras.ops.matmul(x, self.kernel)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="test_apply")
class RegularizableProjection(Projection):
    """A user's layer that follows the rule: a `kernel_regularizer` argument in its config."""

    def __init__(self, units=2, kernel_regularizer=None, **kwargs):
        super().__init__(units, **kwargs)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units),
            regularizer=self.kernel_regularizer,
            name="kernel",
        )

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = L.Dense(4, name="hidden")
        self.head = L.Dense(1, name="head")

    def call(self, x):
        return self.head(self.hidden(x))


def _sequential():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((5,)), L.Dense(4, name="hidden"), L.Dense(1, name="out")], name="seq"
    )


def _functional():
    """A shared Dense called twice and a nested Sequential."""
    keras.utils.set_random_seed(0)
    shared = L.Dense(5, name="shared")
    nested = keras.Sequential([keras.Input((5,)), L.Dense(3, name="inner")], name="nested")
    inputs = keras.Input((5,))
    outputs = L.Dense(1, name="out")(nested(shared(shared(inputs))))
    return keras.Model(inputs, outputs, name="functional")


X5 = np.linspace(-1.0, 1.0, 20, dtype="float32").reshape(4, 5)


def test_sequential_penalties_are_keras_l1_and_predictions_unchanged(tmp_path):
    model = _sequential()
    before = to_numpy(model.predict(X5, verbose=0))
    assert kerasreg.regularize(model, kerasreg.L1(STRENGTH)) is model
    kernels = [model.get_layer("hidden").kernel, model.get_layer("out").kernel]
    assert _penalized(model) == kernels
    np.testing.assert_allclose(_penalty(model), _oracle(kernels), rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(model.predict(X5, verbose=0)), before)
    # Each weight has its own copy, equal to the one given.
    hidden, out = (model.get_layer(n).kernel_regularizer for n in ("hidden", "out"))
    assert hidden == out == kerasreg.L1(STRENGTH) and hidden is not out
    assert model.get_layer("hidden").kernel.regularizer is hidden
    _assert_same(model, _round_trip(model, tmp_path / "m.keras"), X5)


def test_names_keras_regularizers_and_removal():
    model = kerasreg.regularize(_sequential(), "l1", weights=("kernel", "bias"))
    assert len(model.losses) == 4
    assert model.get_layer("out").bias_regularizer == kerasreg.L1()
    kerasreg.regularize(model, keras.regularizers.L1(STRENGTH), layers=["out"])
    out = model.get_layer("out").kernel
    assert type(out.regularizer) is keras.regularizers.L1
    kerasreg.regularize(model, None, weights=("kernel", "bias"))
    assert model.losses == []
    assert model.get_layer("hidden").get_config()["kernel_regularizer"] is None


def test_functional_shared_layer_once_nested_model_and_selection(tmp_path):
    model = _functional()
    kerasreg.regularize(model, kerasreg.L1(STRENGTH))
    shared = model.get_layer("shared").kernel
    inner = model.get_layer("nested").get_layer("inner").kernel
    out = model.get_layer("out").kernel
    assert {id(v) for v in _penalized(model)} == {id(shared), id(inner), id(out)}
    assert len(model.losses) == 3  # the shared kernel once
    np.testing.assert_allclose(_penalty(model), _oracle([shared, inner, out]), rtol=1e-6)
    _assert_same(model, _round_trip(model, tmp_path / "m.keras"), X5)

    # A nested model's name picks the layers inside it; exclude leaves some out.
    model = kerasreg.regularize(_functional(), "l1", layers=["nested"])
    assert [v.path for v in _penalized(model)] == ["nested/inner/kernel"]
    model = kerasreg.regularize(_functional(), "l1", layers=L.Dense, exclude=["nested"])
    assert sorted(v.path for v in _penalized(model)) == ["out/kernel", "shared/kernel"]
    model = kerasreg.regularize(_functional(), "l1", layers=["nested/inner", "out"])
    assert sorted(v.path for v in _penalized(model)) == ["nested/inner/kernel", "out/kernel"]


def test_subclassed_model_is_reached_and_refuses_to_save_without_its_penalties(tmp_path):
    keras.utils.set_random_seed(0)
    model = Subclassed()
    model(X5)
    before = to_numpy(model.predict(X5, verbose=0))
    kerasreg.regularize(model, kerasreg.L1(STRENGTH))
    kernels = [model.hidden.kernel, model.head.kernel]
    np.testing.assert_allclose(_penalty(model), _oracle(kernels), rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(model.predict(X5, verbose=0)), before)
    # The config of a subclassed model does not hold its layers: saving it
    # would drop the penalties, so it refuses, naming them.
    earlier = tmp_path / "m.keras"
    earlier.write_bytes(b"a file saved earlier")
    with pytest.raises(ValueError, match="cannot hold the regularizers") as info:
        model.save(earlier)
    assert "'hidden/kernel'" in str(info.value) and "'head/kernel'" in str(info.value)
    # Refused before Keras opens the file: what was there is still there.
    assert earlier.read_bytes() == b"a file saved earlier"
    model.save_weights(tmp_path / "m.weights.h5")  # weights alone still save
    kerasreg.regularize(model, None)
    model.save(tmp_path / "m.keras")


def test_users_layer_with_add_weight_kernel(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    outputs = RegularizableProjection(3, name="mine")(Projection(4, name="theirs")(inputs))
    model = keras.Model(inputs, outputs)
    kerasreg.regularize(model, kerasreg.L1(STRENGTH))
    kernels = [model.get_layer("theirs").kernel, model.get_layer("mine").kernel]
    np.testing.assert_allclose(_penalty(model), _oracle(kernels), rtol=1e-6)
    with pytest.raises(ValueError, match="'theirs/kernel' \\(Projection's config has no"):
        model.save(tmp_path / "m.keras")
    # The layer that follows the rule saves; the other one is removed again.
    kerasreg.regularize(model, None, layers=["theirs"])
    loaded = _round_trip(model, tmp_path / "m.keras")
    _assert_same(model, loaded, X5)
    assert loaded.get_layer("mine").kernel.regularizer == kerasreg.L1(STRENGTH)


def _conv(rank):
    return {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[rank]


# (name, layer factory, input shape without batch, weights, how many penalized).
LAYER_CASES = [
    ("dense", lambda: L.Dense(3), (4,), "kernel", 1),
    ("conv1d", lambda: L.Conv1D(2, 3), (6, 2), "kernel", 1),
    ("conv2d", lambda: L.Conv2D(2, 3), (5, 5, 2), "kernel", 1),
    ("conv3d", lambda: L.Conv3D(2, 2), (3, 3, 3, 2), "kernel", 1),
    ("depthwise", lambda: L.DepthwiseConv2D(3), (5, 5, 2), "kernel", 1),
    (
        "separable",
        lambda: L.SeparableConv2D(2, 3),
        (5, 5, 2),
        ("depthwise_kernel", "pointwise_kernel"),
        2,
    ),
    ("conv1d_t", lambda: L.Conv1DTranspose(2, 3), (4, 2), "kernel", 1),
    ("conv2d_t", lambda: L.Conv2DTranspose(2, 3), (4, 4, 2), "kernel", 1),
    ("conv3d_t", lambda: L.Conv3DTranspose(2, 2), (3, 3, 3, 2), "kernel", 1),
    (
        "einsum",
        lambda: L.EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c"),
        (4,),
        "kernel",
        1,
    ),
    ("embedding", lambda: L.Embedding(7, 3), (4,), "embeddings", 1),
    ("lstm", lambda: L.LSTM(3), (4, 2), ("kernel", "recurrent_kernel"), 2),
    ("gru", lambda: L.GRU(3), (4, 2), ("kernel", "recurrent_kernel"), 2),
    ("batch_norm", lambda: L.BatchNormalization(), (3,), ("gamma", "beta"), 2),
]


def _single_layer_model(factory, shape):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape)
    layer = factory()
    if isinstance(layer, L.MultiHeadAttention):
        outputs = layer(inputs, inputs)
    else:
        outputs = layer(inputs)
    return keras.Model(inputs, outputs), layer


def _input(shape, embedding=False):
    if embedding:
        return np.arange(2 * shape[0]).reshape(2, *shape) % 7
    return np.linspace(-1.0, 1.0, 2 * int(np.prod(shape)), dtype="float32").reshape(2, *shape)


@pytest.mark.parametrize(("name", "factory", "shape", "weights", "count"), LAYER_CASES)
def test_every_built_in_layer_type(tmp_path, name, factory, shape, weights, count):
    model, layer = _single_layer_model(factory, shape)
    x = _input(shape, embedding=name == "embedding")
    if name == "batch_norm":  # normalization weights are opt-in
        with pytest.raises(kerasreg.InvalidArgumentError, match="none has 'kernel'"):
            kerasreg.regularize(model, "l1")
    before = to_numpy(model.predict(x, verbose=0))
    kerasreg.regularize(model, kerasreg.L1(STRENGTH), weights=weights)
    penalized = _penalized(model)
    assert len(penalized) == count
    np.testing.assert_allclose(_penalty(model), _oracle(penalized), rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(model.predict(x, verbose=0)), before)
    _assert_same(model, _round_trip(model, tmp_path / f"{name}.keras"), x)


def test_multi_head_attention_through_its_projections(tmp_path):
    def attention():
        return L.MultiHeadAttention(2, 3, name="mha")

    model, layer = _single_layer_model(attention, (4, 5))
    x = _input((4, 5))
    kerasreg.regularize(model, kerasreg.L1(STRENGTH))
    penalized = _penalized(model)
    assert sorted(v.path for v in penalized) == [
        f"mha/{p}/kernel" for p in ("attention_output", "key", "query", "value")
    ]
    np.testing.assert_allclose(_penalty(model), _oracle(penalized), rtol=1e-6)
    # One `kernel_regularizer` argument serves the four projections.
    assert layer.get_config()["kernel_regularizer"] == keras.saving.serialize_keras_object(
        kerasreg.L1(STRENGTH)
    )
    _assert_same(model, _round_trip(model, tmp_path / "mha.keras"), x)

    # One projection alone: the config cannot say so, and saving refuses.
    model, layer = _single_layer_model(attention, (4, 5))
    kerasreg.regularize(model, "l1", layers=["mha/query"])
    assert [v.path for v in _penalized(model)] == ["mha/query/kernel"]
    with pytest.raises(ValueError, match="'mha/query/kernel'"):
        model.save(tmp_path / "query.keras")


def test_a_callable_chooses_per_weight_and_may_share():
    model = _sequential()
    strengths = {"hidden": 0.5, "out": None}
    kerasreg.regularize(
        model, lambda layer, weight: strengths[layer.name] and kerasreg.L1(strengths[layer.name])
    )
    assert [v.path for v in _penalized(model)] == ["seq/hidden/kernel"]
    assert model.get_layer("hidden").kernel_regularizer == kerasreg.L1(0.5)
    shared = kerasreg.L2(0.1)
    kerasreg.regularize(model, lambda layer, weight: shared)
    assert all(v.regularizer is shared for v in _penalized(model))


def test_compiled_and_trained_model_takes_new_penalties_and_their_prox():
    model = _sequential()
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
    y = np.ones((4, 1), "float32")
    model.fit(X5, y, epochs=1, batch_size=4, verbose=0)  # compiled, trained, optimizer built
    data_loss = model.evaluate(X5, y, verbose=0)
    kerasreg.regularize(model, kerasreg.L1(1.0), layers=["hidden"])
    penalty = _oracle([model.get_layer("hidden").kernel], 1.0)
    np.testing.assert_allclose(model.evaluate(X5, y, verbose=0), data_loss + penalty, rtol=1e-5)
    model.fit(X5, y, epochs=3, batch_size=4, verbose=0)
    assert np.count_nonzero(to_numpy(model.get_layer("hidden").kernel) == 0) > 0
    assert np.count_nonzero(to_numpy(model.get_layer("out").kernel) == 0) == 0
    # A prox with a state lives in optimizer variables made at build time.
    with pytest.raises(kerasreg.InvalidArgumentError, match="keeps a state in the optimizer"):
        kerasreg.regularize(model, kerasreg.MagnitudePruning(0.5), layers=["out"])
    assert model.get_layer("out").kernel.regularizer is None  # refused before any change


@pytest.mark.parametrize(
    ("kwargs", "argument", "needle"),
    [
        ({"layers": ["dens"]}, "layers", "'dens' matches no layer"),
        ({"layers": L.Conv2D}, "layers", "Conv2D matches no layer"),
        ({"exclude": ["nope"]}, "exclude", "'nope' matches no layer"),
        ({"weights": "kernl"}, "weights", "none has 'kernl' (they have: bias, kernel)"),
        ({"weights": ("kernel", "gamma")}, "weights", "none has 'gamma'"),
        ({"regularizer": keras.layers.Dense(1)}, "regularizer", "a regularizer instance"),
        ({"regularizer": lambda layer, weight: 3}, "regularizer", "it returned 3 for"),
    ],
)
def test_bad_input_names_its_argument(kwargs, argument, needle):
    arguments = {"regularizer": "l1", **kwargs}
    with pytest.raises(kerasreg.InvalidArgumentError) as info:
        kerasreg.regularize(_sequential(), **arguments)
    message = str(info.value)
    assert message.startswith(f"Invalid value for argument `{argument}`: expected "), message
    assert needle in message, message


def test_a_model_that_is_not_built_is_refused():
    model = keras.Sequential([L.Dense(2)])
    with pytest.raises(kerasreg.InvalidArgumentError, match="expected a built model: build it"):
        kerasreg.regularize(model, "l1")


@pytest.mark.slow
def test_mobilenet_v2_sparse_where_asked_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)
    kerasreg.regularize(model, kerasreg.L1(0.5), layers=L.Conv2D)
    targets = {id(v) for v in _penalized(model)}
    convs = [layer for layer in model.layers if type(layer) is L.Conv2D]
    assert targets == {id(layer.kernel) for layer in convs}
    np.testing.assert_allclose(_penalty(model), _oracle(_penalized(model), 0.5), rtol=1e-5)
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 3), dtype="float32")
    y = rng.random((8, 10), dtype="float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for variable in model.trainable_weights:
        zeros = np.count_nonzero(to_numpy(variable) == 0)
        if id(variable) in targets:
            assert zeros > 0, variable.path
        elif len(variable.shape) >= 2 or variable.name == "gamma":
            assert zeros == 0, variable.path
    _assert_same(model, _round_trip(model, tmp_path / "mobilenet.keras"), x)
