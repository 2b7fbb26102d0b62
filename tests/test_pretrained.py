"""Pretrained-model workflows: regularize, train with ProximalOptimizer, save.

Offline: each model comes from its constructor with random weights
(`weights=None`). What is tested is the workflow on the models' real layer
structure, not what pretrained weights hold. Penalties are checked against
NumPy's sum of absolute values; sparsity is counted as exact zeros
(`np.count_nonzero`).
"""

import keras
import numpy as np
import pytest

import kerasreg
from tests.conftest import to_numpy

L = keras.layers


def _layers_of(model, classes):
    """The layers under `model` that are instances of `classes`, found by Keras' own walk."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, classes)
    ]


def _l1_oracle(variables, strength):
    """`strength * sum(|w|)` over `variables`, in float64."""
    return strength * sum(np.abs(to_numpy(v).astype("float64")).sum() for v in variables)


def _penalty(model):
    return sum(float(to_numpy(loss)) for loss in model.losses)


def _penalized(model):
    return {id(v) for v in model.weights if getattr(v, "regularizer", None) is not None}


def _snapshot(model):
    return {id(v): to_numpy(v).copy() for v in model.weights}


def _assert_zeros_only_where_targeted(model, targets, before):
    """Exact zeros in every targeted weight; no new exact zero anywhere else.

    An untargeted entry that started at zero (a bias, a normalization
    offset) may stay there; one that started elsewhere and is now exactly
    zero can only have been put there by a prox it should not get.
    """
    for variable in model.weights:
        now = to_numpy(variable)
        if id(variable) in targets:
            assert np.count_nonzero(now == 0) > 0, variable.path
        else:
            new_zeros = np.count_nonzero((now == 0) & (before[id(variable)] != 0))
            assert new_zeros == 0, variable.path


def _regularizer_configs(model):
    return [
        keras.saving.serialize_keras_object(getattr(v, "regularizer", None)) for v in model.weights
    ]


def _losses(model):
    return [float(to_numpy(loss)) for loss in model.losses]


# keras.applications: a residual CNN, Conv2D kernels only.


@pytest.mark.slow
def test_resnet50_conv_kernels_sparse_only_and_round_trips(tmp_path, rng):
    keras.utils.set_random_seed(0)
    # As test_compaction builds it: on JAX, its initializers are compiled once.
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    strength = 0.5
    kerasreg.regularize(model, kerasreg.L1(strength), layers=L.Conv2D)
    kernels = [layer.kernel for layer in _layers_of(model, L.Conv2D)]
    targets = {id(v) for v in kernels}
    assert len(kernels) == 53 and _penalized(model) == targets
    np.testing.assert_allclose(_penalty(model), _l1_oracle(kernels, strength), rtol=1e-5)

    x = rng.random((8, 32, 32, 3), dtype="float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, 8)]
    before = _snapshot(model)
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.01)), "mse")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    _assert_zeros_only_where_targeted(model, targets, before)
    np.testing.assert_allclose(_penalty(model), _l1_oracle(kernels, strength), rtol=1e-5)
    assert _penalty(model) > 0  # not every kernel zero: the oracle has something to check

    # Conv2D's config holds `kernel_regularizer`: the file keeps the penalties.
    model.save(tmp_path / "resnet50.keras")
    loaded = keras.models.load_model(tmp_path / "resnet50.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    assert _losses(loaded) == _losses(model)
    assert _regularizer_configs(loaded) == _regularizer_configs(model)
