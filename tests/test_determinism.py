"""Same seed, same data, same backend: the same weights and zeros, every run."""

import keras
import numpy as np

import kerasreg
from tests.conftest import to_numpy


def _train(seed):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(192, 10)).astype("float32")
    y = (x[:, :2] @ np.array([[1.0], [-1.5]], "float32")).astype("float32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(
                16, "relu", kernel_regularizer=kerasreg.GroupLasso(0.2), name="hidden"
            ),
            # Randomness inside the step and in the order of the batches.
            keras.layers.Dropout(0.2),
            keras.layers.Dense(1, kernel_regularizer=kerasreg.L1(0.05), name="output"),
        ]
    )
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.05)), "mse")
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=4,
        shuffle=True,
        verbose=0,
        callbacks=[kerasreg.SparsityMonitor()],
    )
    return [to_numpy(w) for w in model.weights], history.history


def test_same_seed_gives_the_same_weights_and_zeros():
    weights, history = _train(seed=0)
    assert history["sparsity"][-1] > 0.2
    again, history_again = _train(seed=0)
    for a, b in zip(weights, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert history_again == history
    # The seed is what makes them equal: another seed gives other zeros.
    other, _ = _train(seed=1)
    assert any(not np.array_equal(a == 0, b == 0) for a, b in zip(weights, other, strict=True))
