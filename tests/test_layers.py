"""Tests of kerasreg.layers: FeatureGate and SelectFeatures."""

import keras
import numpy as np
import pytest
from sklearn.linear_model import Lasso

import kerasreg
from kerasreg.layers import FeatureGate
from kerasreg.layers import SelectFeatures
from tests.conftest import to_numpy

INFORMATIVE = [0, 1, 2]


def _selection_problem(n=400, d=10, seed=0):
    """Three informative features and seven decoys correlated with them."""
    rng = np.random.default_rng(seed)
    k = len(INFORMATIVE)
    z = rng.normal(size=(n, k))
    decoys = 0.6 * z[:, np.arange(d - k) % k] + 0.8 * rng.normal(size=(n, d - k))
    x = np.concatenate([z, decoys], axis=1)
    x -= x.mean(axis=0)
    return x, z, rng


def test_gate_before_a_sum_solves_the_lasso():
    # A gate followed by a fixed sum is the linear model y = x @ g; with the
    # mean squared error, L1(2 * alpha) on g is scikit-learn's Lasso(alpha).
    x, z, rng = _selection_problem()
    y = z @ np.array([1.5, -1.0, 0.8]) + 0.1 * rng.normal(size=len(z))
    y -= y.mean()
    n, d = x.shape
    lipschitz = 2 * np.linalg.eigvalsh(x.T @ x / n).max()
    decoys_seen = False
    for alpha in (0.003, 0.02, 0.1, 0.2):
        lasso = Lasso(alpha=alpha, fit_intercept=False, tol=1e-10, max_iter=100_000)
        lasso.fit(x, y)
        decoys_seen |= bool(set(np.flatnonzero(lasso.coef_)) - set(INFORMATIVE))
        inputs = keras.Input((d,))
        gate = FeatureGate(regularizer=kerasreg.L1(2 * alpha), initializer="zeros")
        model = keras.Model(inputs, keras.ops.sum(gate(inputs), axis=-1, keepdims=True))
        optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(float(1 / lipschitz)))
        model.compile(optimizer=optimizer, loss="mse")
        steps = 400  # full-batch proximal gradient (ISTA) steps
        model.fit(
            np.tile(x, (steps, 1)).astype("float32"),
            np.tile(y, steps).astype("float32"),
            batch_size=n,
            shuffle=False,
            verbose=0,
        )
        np.testing.assert_array_equal(gate.selected_features(), np.flatnonzero(lasso.coef_))
        np.testing.assert_allclose(to_numpy(gate.gates), lasso.coef_, atol=1e-5)
    # The weakest strength keeps decoys (in both solvers), the others do not.
    assert decoys_seen


@pytest.mark.parametrize("l1", [0.03, 0.3])
def test_gate_keeps_exactly_the_informative_features_of_a_network(l1):
    x, z, rng = _selection_problem()
    y = 2 * np.tanh(z[:, 0]) + 1.5 * np.sin(z[:, 1]) - z[:, 2] + 0.1 * rng.normal(size=len(z))
    y -= y.mean()
    gate = FeatureGate(regularizer=kerasreg.L1(l1), feature_names=[f"x{i}" for i in range(10)])
    model = keras.Sequential(
        [
            keras.Input((10,)),
            gate,
            # The next layer is penalized, so it cannot grow to undo the gate.
            keras.layers.Dense(16, activation="tanh", kernel_regularizer=kerasreg.L2(1e-3)),
            keras.layers.Dense(1),
        ]
    )
    # The same start and batches on every backend.
    init = np.random.default_rng(0)
    model.layers[1].set_weights([init.normal(0, 0.3, (10, 16)), np.zeros(16)])
    model.layers[2].set_weights([init.normal(0, 0.3, (16, 1)), np.zeros(1)])
    model.compile(optimizer=kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.01)), loss="mse")
    model.fit(
        x.astype("float32"), y.astype("float32"), batch_size=50, epochs=60, shuffle=False, verbose=0
    )
    assert gate.selected_features().tolist() == INFORMATIVE
    assert gate.selected_feature_names() == ["x0", "x1", "x2"]
    report = kerasreg.sparsity_report(model)
    assert report[f"{gate.name}/gates"].zeros == 7


def test_gate_multiplies_the_feature_axes(rng):
    x = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    pixels = FeatureGate(axis=(1, 2), initializer="random_normal")
    channels = FeatureGate(axis=-1, initializer="random_normal")
    y_pixels = to_numpy(pixels(x))
    y_channels = to_numpy(channels(x))
    assert tuple(pixels.gates.shape) == (4, 5)
    assert tuple(channels.gates.shape) == (3,)
    np.testing.assert_allclose(y_pixels, x * to_numpy(pixels.gates)[None, :, :, None], rtol=1e-6)
    np.testing.assert_allclose(y_channels, x * to_numpy(channels.gates), rtol=1e-6)
    gates = np.zeros((4, 5), "float32")
    gates[1, 2] = gates[3, 0] = 1.0
    pixels.gates.assign(gates)
    # Flat, row-major indices into the gates' shape.
    assert pixels.selected_features().tolist() == [1 * 5 + 2, 3 * 5 + 0]
    assert pixels.selection_mask().tolist() == (gates != 0).tolist()


def test_gate_before_a_conv_net_saves_and_loads(tmp_path, rng):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            FeatureGate(axis=(1, 2), regularizer=kerasreg.ElasticNet(0.01, 0.9), name="pixels"),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    gates = rng.normal(size=(8, 8)).astype("float32")
    gates[gates < 0] = 0.0
    model.get_layer("pixels").gates.assign(gates)
    path = tmp_path / "gated.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    gate = loaded.get_layer("pixels")
    assert gate.regularizer == kerasreg.ElasticNet(0.01, 0.9)
    assert gate.axis == (1, 2)
    np.testing.assert_array_equal(gate.selected_features(), np.flatnonzero(gates))
    x = rng.normal(size=(3, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_gate_config_round_trip():
    gate = FeatureGate(
        axis=-1,
        regularizer="group_lasso",
        initializer="zeros",
        constraint=keras.constraints.NonNeg(),
        feature_names=["a", "b"],
        name="g",
    )
    clone = FeatureGate.from_config(gate.get_config())
    assert clone.get_config() == gate.get_config()
    assert clone.regularizer == kerasreg.GroupLasso()
    assert FeatureGate(regularizer=None).regularizer is None
    assert FeatureGate().regularizer == kerasreg.L1(0.01)
    # Keras' own regularizers are kept as given (the optimizer converts them).
    assert isinstance(
        FeatureGate(regularizer=keras.regularizers.L2(0.1)).regularizer,
        type(keras.regularizers.L2(0.1)),
    )


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"axis": 1.5}, TypeError, "argument `axis`"),
        ({"axis": ()}, ValueError, "argument `axis`"),
        ({"regularizer": 3}, TypeError, "argument `regularizer`"),
        ({"feature_names": "abc"}, TypeError, "argument `feature_names`"),
        ({"feature_names": ["a", 1]}, TypeError, "argument `feature_names`"),
    ],
)
def test_gate_refuses_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        FeatureGate(**kwargs)


def test_gate_refuses_bad_shapes_and_queries():
    with pytest.raises(ValueError, match="argument `axis`"):
        FeatureGate(axis=0).build((None, 3))
    with pytest.raises(ValueError, match="argument `axis`"):
        FeatureGate(axis=2).build((None, 3))
    with pytest.raises(ValueError, match="argument `feature_names`.*Received 2 names"):
        FeatureGate(feature_names=["a", "b"]).build((None, 3))
    gate = FeatureGate()
    with pytest.raises(ValueError, match="before it is built"):
        gate.selected_features()
    gate.build((None, 3))
    with pytest.raises(ValueError, match="without `feature_names`"):
        gate.selected_feature_names()
    with pytest.raises(ValueError, match="argument `tolerance`"):
        gate.selected_features(tolerance=-1.0)
    with pytest.raises(TypeError, match="argument `tolerance`"):
        gate.selected_features(tolerance="0")


def test_gate_tolerance_is_separate_from_exact_zeros():
    gate = FeatureGate()
    gate.build((None, 4))
    gate.gates.assign(np.array([0.0, 1e-4, -0.5, 2.0], "float32"))
    assert gate.selected_features().tolist() == [1, 2, 3]
    assert gate.selected_features(tolerance=1e-3).tolist() == [2, 3]


def test_select_features_takes_the_indices(rng, tmp_path):
    x = rng.normal(size=(4, 3, 6)).astype("float32")
    layer = SelectFeatures([5, 0, 2])
    np.testing.assert_array_equal(to_numpy(layer(x)), x[..., [5, 0, 2]])
    assert SelectFeatures.from_config(layer.get_config()).indices == [5, 0, 2]
    model = keras.Sequential([keras.Input((3, 6)), layer])
    assert model.output_shape == (None, 3, 3)
    model.save(tmp_path / "select.keras")
    loaded = keras.models.load_model(tmp_path / "select.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), x[..., [5, 0, 2]])


@pytest.mark.parametrize(
    "indices, error",
    [
        ([], ValueError),
        ([1, 1], ValueError),
        ([-1], ValueError),
        ([0.5], TypeError),
        ("01", TypeError),
        (3, TypeError),
    ],
)
def test_select_features_refuses_bad_indices(indices, error):
    with pytest.raises(error, match="argument `indices`"):
        SelectFeatures(indices)


def test_select_features_refuses_indices_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        SelectFeatures([0, 3]).build((None, 3))
