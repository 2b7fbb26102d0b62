"""Users' own layers: penalty, prox, sparsity report and `.keras` files.

The layers below are written as a user would write them, with
`add_weight(..., regularizer=...)`. Every figure is checked against an
independent oracle: the penalty and the proximal step against closed forms
computed with NumPy from `get_weights()`, the sparsity report against
`np.count_nonzero`, a reloaded model against the original.
"""

from collections import Counter

import keras
import numpy as np
import pytest
from keras import ops

import kerasreg
from tests.conftest import to_numpy

LEARNING_RATE = 0.1
L1_STRENGTH = 0.05
GROUP_STRENGTH = 0.1
# One step with a large learning rate and small gradients: thresholds of 0.05
# (L1) and about 0.2 (groups) leave zeros and survivors side by side.
PROX_LEARNING_RATE = 1.0
PROX_GRADIENT_SCALE = 0.2
# Inputs, units and outputs share one width: JAX compiles each eager
# operation once per shape, so fewer shapes make a faster test file.
WIDTH = 4

register = keras.saving.register_keras_serializable(package="kerasreg_tests")


@register
class TwoKernels(keras.layers.Layer):
    """Two regularized weights: an L1 kernel and a group-lasso kernel (one group per input)."""

    def __init__(self, units, l1=L1_STRENGTH, strength=GROUP_STRENGTH, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.l1 = l1
        self.strength = strength

    def build(self, input_shape):
        shape = (input_shape[-1], self.units)
        self.kernel = self.add_weight(shape=shape, regularizer=kerasreg.L1(self.l1), name="kernel")
        self.group_kernel = self.add_weight(
            shape=shape,
            regularizer=kerasreg.GroupLasso(self.strength, group_axis=0),
            name="group_kernel",
        )
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, x):
        return ops.matmul(x, self.kernel) + ops.matmul(ops.tanh(x), self.group_kernel) + self.bias

    def compute_output_shape(self, input_shape):
        # `TimeDistributed` asks for it; without it a Sequential stops
        # building at the wrapper and later layers get weights only when called.
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "l1": self.l1,
            "strength": self.strength,
        }


@register
class Block(keras.layers.Layer):
    """A layer nesting a user's layer and a regularized `Dense`, both attributes."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = TwoKernels(units, name="inner")
        self.proj = keras.layers.Dense(
            units, kernel_regularizer=kerasreg.L1(L1_STRENGTH), name="proj"
        )

    def call(self, x):
        return self.proj(ops.relu(self.inner(x)))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@register
class Net(keras.Model):
    """A subclassed model made of the layers above."""

    def __init__(self, units=WIDTH, n_outputs=WIDTH, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.n_outputs = n_outputs
        self.block = Block(units, name="block")
        self.head = TwoKernels(n_outputs, name="head")

    def call(self, x):
        return self.head(self.block(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "n_outputs": self.n_outputs}


def _l1():
    return kerasreg.L1(L1_STRENGTH)


def _group():
    return kerasreg.GroupLasso(GROUP_STRENGTH, group_axis=0)


def _subclassed():
    keras.utils.set_random_seed(0)
    model = Net(name="net")
    model(np.zeros((1, WIDTH), "float32"))
    return model


def _shared():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((WIDTH,))
    shared = TwoKernels(WIDTH, name="shared")
    hidden = shared(keras.layers.Activation("tanh")(shared(inputs)))  # one layer, two calls
    outputs = keras.layers.Dense(WIDTH, kernel_regularizer=_l1(), name="out")(hidden)
    return keras.Model(inputs, outputs, name="functional")


def _wrapped():
    keras.utils.set_random_seed(0)
    lstm = keras.layers.LSTM(WIDTH // 2, kernel_regularizer=_l1(), name="lstm")
    return keras.Sequential(
        [
            keras.Input((3, WIDTH)),
            keras.layers.TimeDistributed(TwoKernels(WIDTH, name="step"), name="td"),
            keras.layers.Bidirectional(lstm, name="bi"),
            keras.layers.Dense(WIDTH, name="out"),
        ],
        name="wrapped",
    )


# Each model, its input shape, and the regularizer every regularized weight
# must carry, by key (the weight's path without the model's name).
MODELS = {
    "subclassed": (
        _subclassed,
        (WIDTH,),
        {
            "block/inner/kernel": _l1(),
            "block/inner/group_kernel": _group(),
            "block/proj/kernel": _l1(),
            "head/kernel": _l1(),
            "head/group_kernel": _group(),
        },
    ),
    "shared": (
        _shared,
        (WIDTH,),
        {"shared/kernel": _l1(), "shared/group_kernel": _group(), "out/kernel": _l1()},
    ),
    "wrapped": (
        _wrapped,
        (3, WIDTH),
        {
            "td/step/kernel": _l1(),
            "td/step/group_kernel": _group(),
            "bi/forward_lstm/lstm_cell/kernel": _l1(),
            "bi/backward_lstm/lstm_cell/kernel": _l1(),
        },
    ),
}


def _key(model, variable):
    root = model.name + "/"
    return variable.path[len(root) :] if variable.path.startswith(root) else variable.path


def _weights_by_key(model):
    """`get_weights()` by key; Keras lists a shared layer's weights once."""
    keys = [_key(model, v) for v in model.weights]
    assert len(set(keys)) == len(keys)
    return dict(zip(keys, model.get_weights(), strict=True))


def _np_penalty(regularizer, w):
    w = w.astype("float64")
    if isinstance(regularizer, kerasreg.L1):
        return regularizer.l1 * np.abs(w).sum()
    # GroupLasso(group_axis=0): lambda * sum over rows g of sqrt(|g|) * ||w_g||.
    assert isinstance(regularizer, kerasreg.GroupLasso) and regularizer.group_axis == 0
    return regularizer.strength * np.sqrt(w.shape[1]) * np.linalg.norm(w, axis=1).sum()


def _np_penalty_gradient(regularizer, w):
    w = w.astype("float64")
    if isinstance(regularizer, kerasreg.L1):
        return regularizer.l1 * np.sign(w)
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    return regularizer.strength * np.sqrt(w.shape[1]) * w / norms


def _np_prox(regularizer, z, step):
    """Soft thresholding (L1) and block soft thresholding over rows (GroupLasso)."""
    if regularizer is None:
        return z
    if isinstance(regularizer, kerasreg.L1):
        return np.sign(z) * np.maximum(np.abs(z) - step * regularizer.l1, 0.0)
    threshold = step * regularizer.strength * np.sqrt(z.shape[1])
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z * np.maximum(1.0 - threshold / np.maximum(norms, 1e-300), 0.0)


def _data(input_shape, rng, n=32):
    x = rng.normal(size=(n, *input_shape)).astype("float32")
    y = (0.1 * rng.normal(size=(n, WIDTH))).astype("float32")
    return x, y


@pytest.mark.parametrize("name", MODELS)
def test_regularizers_reach_every_weight(name):
    build, _, expected = MODELS[name]
    model = build()
    carried = {_key(model, v): v.regularizer for v in model.weights if v.regularizer is not None}
    assert carried == expected


@pytest.mark.parametrize("name", MODELS)
def test_penalty_equals_closed_form(name, rng):
    build, _, expected = MODELS[name]
    model = build()
    for variable in model.weights:  # random values, so that no oracle is trivially zero
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    weights = _weights_by_key(model)
    oracle = sum(_np_penalty(regularizer, weights[key]) for key, regularizer in expected.items())
    # One term per regularized weight: a shared layer's penalty counts once.
    assert len(model.losses) == len(expected)
    penalty = sum(float(to_numpy(loss)) for loss in model.losses)
    np.testing.assert_allclose(penalty, oracle, rtol=1e-5)


@pytest.mark.parametrize("penalty_in_loss", [False, True])
@pytest.mark.parametrize("name", MODELS)
def test_one_step_applies_each_prox_once(name, penalty_in_loss, rng):
    build, _, expected = MODELS[name]
    model = build()
    variables = model.trainable_variables
    keys = [_key(model, v) for v in variables]
    assert len(set(keys)) == len(keys)  # a shared layer's weights are passed once
    assert set(expected) <= set(keys)
    before, data_grads, grads = [], [], []
    for key, variable in zip(keys, variables, strict=True):
        w = to_numpy(variable).astype("float64")
        g = PROX_GRADIENT_SCALE * rng.normal(size=w.shape)
        if isinstance(expected.get(key), kerasreg.GroupLasso):
            # A group small enough to be zeroed as a whole.
            w[0] *= 0.01
            g[0] = 0.0
            variable.assign(w.astype("float32"))
        before.append(w)
        data_grads.append(g)
        if penalty_in_loss and key in expected:
            # The gradient of data loss + penalty, as `fit` computes it.
            g = g + _np_penalty_gradient(expected[key], w)
        grads.append(ops.convert_to_tensor(g.astype("float32")))

    optimizer = kerasreg.ProximalOptimizer(
        keras.optimizers.SGD(PROX_LEARNING_RATE), penalty_in_loss=penalty_in_loss
    )
    optimizer.apply(grads, variables)

    zeros = 0
    for key, variable, w, g in zip(keys, variables, before, data_grads, strict=True):
        regularizer = expected.get(key)
        oracle = _np_prox(regularizer, w - PROX_LEARNING_RATE * g, PROX_LEARNING_RATE)
        after = to_numpy(variable)
        np.testing.assert_allclose(after, oracle, rtol=1e-5, atol=1e-6, err_msg=key)
        np.testing.assert_array_equal(after == 0, oracle == 0, err_msg=key)
        if regularizer is None:
            continue
        zeros += np.count_nonzero(after == 0)
        if isinstance(regularizer, kerasreg.GroupLasso):
            assert np.all(after[0] == 0) and np.all(np.any(after[1:] != 0, axis=1)), key
        # Applied once: a second prox would shrink the weight again.
        twice = _np_prox(regularizer, oracle, PROX_LEARNING_RATE)
        assert np.abs(twice - after).max() > 1e-2, key
    assert zeros > 0


@pytest.fixture(scope="module", params=list(MODELS))
def trained(request):
    """Each model after a short `fit` with `ProximalOptimizer(SGD)`."""
    build, input_shape, expected = MODELS[request.param]
    model = build()
    x, y = _data(input_shape, np.random.default_rng(0))
    model.compile(
        optimizer=kerasreg.ProximalOptimizer(keras.optimizers.SGD(LEARNING_RATE)), loss="mse"
    )
    model.fit(x, y, batch_size=4, epochs=8, shuffle=False, verbose=0)
    return model, x, expected


def test_fit_leaves_exact_zeros_that_the_report_counts(trained):
    model, _, expected = trained
    weights = _weights_by_key(model)
    report = kerasreg.sparsity_report(model)
    keys = Counter(row.key for row in report)
    for key in expected:
        assert keys[key] == 1, key
        # Only the prox makes exact zeros.
        assert np.count_nonzero(weights[key] == 0) > 0, key
    unregularized_kernels = [k for k, w in weights.items() if w.ndim >= 2 and k not in expected]
    for key in unregularized_kernels:
        assert keys[key] == 1, key
        assert np.count_nonzero(weights[key] == 0) == 0, key
    assert set(keys) == set(expected) | set(unregularized_kernels)
    for row in report:
        value = weights[row.key]
        assert (row.size, row.shape) == (value.size, value.shape)
        assert row.zeros == np.count_nonzero(value == 0)
        assert row.zero_units == np.count_nonzero(np.all(value == 0, axis=0))
        assert row.zero_inputs == np.count_nonzero(np.all(value == 0, axis=1))
    assert report.zeros == sum(np.count_nonzero(weights[row.key] == 0) for row in report)
    assert report.zeros > 0


def test_keras_file_round_trip(trained, tmp_path):
    model, x, expected = trained
    path = tmp_path / "custom.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: the classes are registered

    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # A loaded model's paths may lack the model's name; compare in order.
    for original, restored in zip(model.weights, loaded.weights, strict=True):
        assert restored.regularizer == original.regularizer, original.path
    assert isinstance(loaded.optimizer, kerasreg.ProximalOptimizer)
    assert sum(v.regularizer is not None for v in loaded.weights) == len(expected)

    if isinstance(loaded, Net):
        assert loaded.block.inner.kernel.regularizer == _l1()
        assert loaded.block.inner.group_kernel.regularizer == _group()
        assert loaded.head.group_kernel.regularizer == _group()
    elif loaded.name == "functional":
        assert loaded.get_layer("shared").group_kernel.regularizer == _group()
        assert loaded.get_layer("shared").kernel.regularizer == _l1()
    else:
        assert loaded.get_layer("td").layer.group_kernel.regularizer == _group()
        bidirectional = loaded.get_layer("bi")
        for lstm in (bidirectional.forward_layer, bidirectional.backward_layer):
            assert lstm.cell.kernel.regularizer == _l1()
            assert lstm.cell.recurrent_kernel.regularizer is None


@register
class L1Dense(keras.layers.Layer):
    """The rule followed: the kernel comes from `add_weight(regularizer=...)`."""

    def __init__(self, units, l1, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.l1 = l1

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units),
            initializer=keras.initializers.GlorotUniform(seed=1),
            regularizer=kerasreg.L1(self.l1),
            name="kernel",
        )

    def call(self, x):
        return ops.matmul(x, self.kernel)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "l1": self.l1}


@register
class RawVariableL1(L1Dense):
    """The rule broken: a raw variable, its L1 penalty added with `add_loss`."""

    def build(self, input_shape):
        initializer = keras.initializers.GlorotUniform(seed=1)
        self.kernel = keras.Variable(initializer((input_shape[-1], self.units)), name="kernel")

    def call(self, x):
        self.add_loss(self.l1 * ops.sum(ops.abs(self.kernel)))
        return ops.matmul(x, self.kernel)


def _train_one_layer(layer, x, y):
    model = keras.Sequential([keras.Input((x.shape[1],)), layer])
    model.compile(
        optimizer=kerasreg.ProximalOptimizer(keras.optimizers.SGD(LEARNING_RATE)), loss="mse"
    )
    model.fit(x, y, batch_size=4, epochs=8, shuffle=False, verbose=0)
    return model


def test_raw_variable_with_add_loss_is_penalized_but_never_pruned(rng):
    x = rng.normal(size=(32, 8)).astype("float32")
    y = x[:, :2].astype("float32")  # six of the eight inputs are useless
    l1 = 0.1

    followed = _train_one_layer(L1Dense(2, l1, name="layer"), x, y)
    broken = _train_one_layer(RawVariableL1(2, l1, name="layer"), x, y)

    # The penalty is in the loss either way...
    broken(x[:1])
    raw = to_numpy(broken.layers[0].kernel)
    (penalty,) = broken.losses
    np.testing.assert_allclose(float(to_numpy(penalty)), l1 * np.abs(raw).sum(), rtol=1e-5)
    assert broken.layers[0].kernel.regularizer is None
    assert broken.optimizer.proximal_regularizer(broken.layers[0].kernel) is None
    assert followed.optimizer.proximal_regularizer(followed.layers[0].kernel) == kerasreg.L1(l1)
    # ...but only the weight that carries its regularizer gets the prox.
    kept = to_numpy(followed.layers[0].kernel)
    assert np.count_nonzero(kept == 0) >= 6
    assert np.count_nonzero(raw == 0) == 0
    (row,) = kerasreg.sparsity_report(broken)
    assert row.zeros == 0


def test_non_trainable_weights_are_neither_penalized_nor_pruned(rng):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((WIDTH,))
    frozen = TwoKernels(WIDTH, l1=10.0, strength=10.0, name="frozen")
    outputs = keras.layers.Dense(WIDTH, kernel_regularizer=_l1(), name="out")(frozen(inputs))
    model = keras.Model(inputs, outputs, name="frozen_model")
    frozen.trainable = False
    before = [to_numpy(v) for v in frozen.weights]
    assert len(model.losses) == 1  # Keras sums the penalties of trainable weights only

    model.compile(
        optimizer=kerasreg.ProximalOptimizer(keras.optimizers.SGD(LEARNING_RATE)), loss="mse"
    )
    x, y = _data((WIDTH,), rng, n=16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)

    # A prox with these strengths would zero both kernels in one step.
    for value, variable in zip(before, frozen.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(variable), value)
    assert model.optimizer.proximal_regularizer(frozen.kernel) is None
    report = kerasreg.sparsity_report(model)
    assert report["frozen/kernel"].zeros == 0  # still reported, as a kernel
