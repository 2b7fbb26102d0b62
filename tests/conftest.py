"""Shared helpers for the test suite.

The Keras backend is chosen by the `KERAS_BACKEND` environment variable before
the run (`KERAS_BACKEND=jax python -m pytest`); nothing here changes it.
"""

import functools
import warnings

import keras
import numpy as np
import pytest
from hypothesis import settings
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

# Eager Keras ops cost tens of microseconds each; keep property tests short
# and free of wall-clock deadlines, which are meaningless on a shared CI box.
settings.register_profile("kerasreg", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("kerasreg")

BACKEND = keras.backend.backend()

if BACKEND == "jax":
    # JAX computes in float32 unless 64-bit mode is on; the suite checks
    # float64 weights on every backend, as users of float64 models need.
    import jax

    jax.config.update("jax_enable_x64", True)


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def value_and_grad(fn, x):
    """Value and gradient of the scalar function `fn` at the array `x`."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return to_numpy(y), to_numpy(tape.gradient(y, x))
    if BACKEND == "jax":
        import jax

        y, g = jax.value_and_grad(fn)(jax.numpy.asarray(x))
        return to_numpy(y), to_numpy(g)
    if BACKEND == "torch":
        import torch

        x = torch.tensor(x, requires_grad=True)
        y = fn(x)
        y.backward()
        return to_numpy(y.detach()), to_numpy(x.grad)
    raise NotImplementedError(f"no gradient helper for backend {BACKEND!r}")


@functools.cache
def breast_cancer():
    """scikit-learn's breast cancer data, features standardized: `x, y` (float64, 0/1)."""
    x, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(x), y


@functools.cache
def l1_logistic_regression(C):
    """scikit-learn's L1 logistic regression on `breast_cancer()`, fitted once per `C`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # An elastic net with l1_ratio=1 is the L1 penalty in every version
        # of scikit-learn (recent ones deprecate `penalty`).
        model = LogisticRegression(
            penalty="elasticnet", l1_ratio=1.0, C=C, solver="saga", tol=1e-12, max_iter=200_000
        )
        return model.fit(*breast_cancer())


@pytest.fixture
def rng():
    return np.random.default_rng(0)
