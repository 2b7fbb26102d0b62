"""ProximalOptimizer: against scikit-learn, known answers and Keras' machinery."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet
from sklearn.linear_model import Lasso
from sklearn.preprocessing import StandardScaler

import kerasreg
from tests.conftest import BACKEND
from tests.conftest import breast_cancer
from tests.conftest import l1_logistic_regression
from tests.conftest import to_numpy


def _diabetes():
    x, y = load_diabetes(return_X_y=True)
    x = StandardScaler().fit_transform(x).astype("float32")
    return x, ((y - y.mean()) / y.std()).astype("float32")


def _fit_full_batch(x, y, regularizer, optimizer, steps, loss="mse"):
    """Full-batch training through `model.fit`: `steps` steps in one epoch."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((x.shape[1],)),
            keras.layers.Dense(1, kernel_regularizer=regularizer, kernel_initializer="zeros"),
        ]
    )
    # Several steps per call where the backend allows it: faster, same maths.
    model.compile(
        optimizer=optimizer, loss=loss, steps_per_execution=1 if BACKEND == "torch" else 50
    )
    model.fit(FullBatch(x, y, steps), epochs=1, verbose=0)
    return model, to_numpy(model.layers[0].kernel)[:, 0], float(to_numpy(model.layers[0].bias)[0])


class FullBatch(keras.utils.PyDataset):
    """The whole data set as one batch, `steps` times: full-batch gradient descent."""

    def __init__(self, x, y, steps):
        super().__init__()
        self.x, self.y, self.steps = x, y, steps

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return self.x, self.y


def _float64(x, y):
    """scikit-learn's solvers reach their tolerance only in float64."""
    return x.astype("float64"), y.astype("float64")


def _lipschitz_step(x):
    return 1.0 / np.linalg.eigvalsh(2 * x.T.astype("float64") @ x / len(x)).max()


@pytest.mark.parametrize("alpha", [0.1, 0.03, 0.01])
def test_lasso_path_matches_scikit_learn(alpha):
    x, y = _diabetes()
    sk = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(*_float64(x, y))
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(_lipschitz_step(x)))
    _, w, b = _fit_full_batch(x, y, kerasreg.L1(2 * alpha), optimizer, steps=3000)
    np.testing.assert_array_equal(w == 0, sk.coef_ == 0)
    np.testing.assert_allclose(w, sk.coef_, atol=1e-3)
    assert abs(b - sk.intercept_) < 1e-3
    assert 0 < np.count_nonzero(w == 0) < len(w)


@pytest.mark.parametrize("alpha, r", [(0.05, 0.5), (0.02, 0.8)])
def test_elastic_net_matches_scikit_learn(alpha, r):
    x, y = _diabetes()
    sk = ElasticNet(alpha=alpha, l1_ratio=r, tol=1e-12, max_iter=100_000).fit(*_float64(x, y))
    reg = kerasreg.ElasticNet(strength=alpha * (1 + r), l1_ratio=2 * r / (1 + r))
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(_lipschitz_step(x)))
    _, w, _ = _fit_full_batch(x, y, reg, optimizer, steps=3000)
    np.testing.assert_array_equal(w == 0, sk.coef_ == 0)
    np.testing.assert_allclose(w, sk.coef_, atol=1e-3)


@pytest.mark.parametrize("momentum, nesterov", [(0.9, False), (0.5, True)])
def test_sgd_with_momentum_matches_scikit_learn(momentum, nesterov):
    # Momentum carries each gradient 1 / (1 - momentum) times as far; a prox
    # on the bare step would reach Lasso(alpha * (1 - momentum)) instead.
    x, y = _diabetes()
    alpha = 0.03
    sk = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(*_float64(x, y))
    inner = keras.optimizers.SGD(_lipschitz_step(x), momentum=momentum, nesterov=nesterov)
    optimizer = kerasreg.ProximalOptimizer(inner)
    _, w, _ = _fit_full_batch(x, y, kerasreg.L1(2 * alpha), optimizer, steps=1500)
    np.testing.assert_array_equal(w == 0, sk.coef_ == 0)
    np.testing.assert_allclose(w, sk.coef_, atol=1e-3)
    weaker = Lasso(alpha=alpha * (1 - momentum), tol=1e-12, max_iter=100_000)
    assert np.abs(weaker.fit(*_float64(x, y)).coef_ - sk.coef_).max() > 1e-2


def test_known_answer_toy_lasso():
    # x = [-1, 0, 1], y = x: scikit-learn's lasso coefficient is
    # max(0, 1 - 1.5 * alpha); with a mean-squared-error loss, l1 = 2 * alpha.
    x = np.array([[-1.0], [0.0], [1.0]], "float32")
    for alpha in (0.2, 0.5, 0.7):
        optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.5))
        _, w, _ = _fit_full_batch(x, x[:, 0], kerasreg.L1(2 * alpha), optimizer, steps=300)
        expected = max(0.0, 1.0 - 1.5 * alpha)
        assert abs(w[0] - expected) < 1e-5
        assert (w[0] == 0) == (expected == 0)


@pytest.fixture
def float64():
    # A float64 model: floatx and the global dtype policy (which Keras caches
    # once a layer has been built) both move to float64.
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")


class _SquaredErrorFloat64(keras.losses.Loss):
    """Mean squared error over a batch of 3, summed in float64 on every backend.

    Keras 3.15's `ops.mean` computes float64 in float32 on JAX and PyTorch,
    so its `"mse"` loss, and the mean over the batch, would limit this test
    to float32 precision there.
    """

    def __init__(self):
        super().__init__(reduction="sum")

    def call(self, y_true, y_pred):
        return keras.ops.sum(keras.ops.square(y_true - y_pred), axis=-1) / 3.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.optimizers.SGD(0.005, momentum=0.98),
        lambda: keras.optimizers.RMSprop(0.001, momentum=0.98),
    ],
    ids=["SGD", "RMSprop"],
)
def test_momentum_fixed_point_is_the_lasso_solution_in_float64(float64, make):
    # x = [-1, 0, 1], y = x: scikit-learn's Lasso(alpha=0.1) coefficient is
    # 0.85. The prox step's momentum factor must use the momentum as the
    # inner optimizer applies it (TensorFlow's SGD rounds 0.98 through
    # float32): from the exact 0.98, training minimizes data loss
    # + (1 - 9.5e-7) x penalty and settles 1.4e-7 away.
    x = np.array([[-1.0], [0.0], [1.0]])
    expected = Lasso(alpha=0.1, tol=1e-15).fit(x, x[:, 0]).coef_[0]
    # EinsumDense, not Dense: Keras 3.15's `ops.matmul` returns float32 for
    # float64 inputs on PyTorch.
    layer = keras.layers.EinsumDense(
        "ab,bc->ac", 1, bias_axes="c", kernel_regularizer=kerasreg.L1(0.2)
    )
    model = keras.Sequential([keras.Input((1,)), layer])
    model.compile(
        optimizer=kerasreg.ProximalOptimizer(make()),
        loss=_SquaredErrorFloat64(),
        steps_per_execution=1 if BACKEND == "torch" else 500,
    )
    model.fit(FullBatch(x, x, 4000), epochs=1, verbose=0)
    assert abs(expected - 0.85) < 1e-15
    assert abs(to_numpy(layer.kernel)[0, 0] - expected) < 1e-14


def test_l1_logistic_regression_matches_scikit_learn(float64):
    # float64: the problem is badly conditioned along correlated features,
    # so float32 gradients leave the coefficients 2e-3 from the optimum.
    x, y = breast_cancer()
    C = 0.05
    sk = l1_logistic_regression(C)
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(1.0))
    _, w, b = _fit_full_batch(
        x,
        y.astype("float64"),
        kerasreg.L1(1 / (len(x) * C)),
        optimizer,
        steps=10000,
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    np.testing.assert_array_equal(w == 0, sk.coef_[0] == 0)
    np.testing.assert_allclose(w, sk.coef_[0], atol=1e-3)
    assert abs(b - sk.intercept_[0]) < 1e-3


def test_group_lasso_removes_whole_input_groups():
    # Three outputs depend on the first 3 of 8 inputs: the rows (input
    # groups) of the other 5 must vanish entirely, and the solution must
    # satisfy the group-lasso optimality conditions.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype("float32")
    true = np.zeros((8, 3), "float32")
    true[:3] = rng.normal(size=(3, 3))
    y = x @ true + 0.1 * rng.normal(size=(200, 3)).astype("float32")
    reg = kerasreg.GroupLasso(strength=0.02, group_axis=0)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(3, kernel_regularizer=reg, use_bias=False)]
    )
    model.compile(optimizer=kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.3)), loss="mse")
    model.fit(FullBatch(x, y, 1500), verbose=0)
    w = to_numpy(model.layers[0].kernel).astype("float64")
    zero_rows = np.all(w == 0, axis=1)
    np.testing.assert_array_equal(zero_rows, [False] * 3 + [True] * 5)
    # KKT: grad_g + lambda sqrt(3) w_g/|w_g| = 0 (nonzero), |grad_g| <= lambda sqrt(3).
    grad = 2 * x.T.astype("float64") @ (x @ w - y) / (200 * 3)
    threshold = 0.02 * np.sqrt(3)
    for g in range(8):
        if zero_rows[g]:
            assert np.linalg.norm(grad[g]) <= threshold + 1e-5
        else:
            residual = grad[g] + threshold * w[g] / np.linalg.norm(w[g])
            np.testing.assert_allclose(residual, 0, atol=1e-4)


OPTIMIZERS = {
    "SGD": lambda: keras.optimizers.SGD(0.05),
    "SGD_momentum": lambda: keras.optimizers.SGD(0.02, momentum=0.9),
    "Adam": lambda: keras.optimizers.Adam(0.01),
    "Adam_amsgrad": lambda: keras.optimizers.Adam(0.01, amsgrad=True),
    "AdamW": lambda: keras.optimizers.AdamW(0.01),
    "Nadam": lambda: keras.optimizers.Nadam(0.01),
    "Adamax": lambda: keras.optimizers.Adamax(0.01),
    "RMSprop": lambda: keras.optimizers.RMSprop(0.005),
    "RMSprop_centered": lambda: keras.optimizers.RMSprop(0.005, centered=True),
    "Adagrad": lambda: keras.optimizers.Adagrad(0.1),
    "Lion": lambda: keras.optimizers.Lion(0.001),
}
# Lion moves every weight by +-lr each step whatever its gradient, so the
# plain threshold lr * l1 only catches weights oscillating around zero once
# l1 is comparable to one.
STRENGTH = {"Lion": 1.0}


def _small_problem():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 20)).astype("float32")
    y = (x[:, :3] @ np.array([1.0, -2.0, 0.5], "float32"))[:, None]
    return x, y


def _train_small(optimizer, regularizer, epochs=30):
    """A 20-16-1 network on a problem that uses 3 of its 20 inputs."""
    keras.utils.set_random_seed(0)
    x, y = _small_problem()
    model = keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(16, activation="relu", kernel_regularizer=regularizer),
            keras.layers.Dense(1, kernel_regularizer=regularizer),
        ]
    )
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    kernels = [to_numpy(layer.kernel) for layer in model.layers]
    return model, history, sum(np.count_nonzero(k == 0) for k in kernels)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_exact_zeros_with_every_optimizer_and_none_without(name):
    strength = STRENGTH.get(name, 0.01)
    _, history, zeros = _train_small(
        kerasreg.ProximalOptimizer(OPTIMIZERS[name]()), kerasreg.L1(strength)
    )
    _, _, plain_zeros = _train_small(OPTIMIZERS[name](), kerasreg.L1(strength))
    assert zeros >= 20, zeros  # of 336 weights
    assert plain_zeros == 0
    assert np.isfinite(history.history["loss"][-1])


def test_mode_resolution_is_visible():
    for name in ("Adam", "AdamW", "Nadam", "Adamax", "RMSprop", "Adagrad"):
        wrapped = kerasreg.ProximalOptimizer(OPTIMIZERS[name]())
        assert wrapped.mode == "preconditioned"
        assert wrapped.get_config()["mode"] == "preconditioned"
    for name in ("SGD", "SGD_momentum", "Lion"):
        assert kerasreg.ProximalOptimizer(OPTIMIZERS[name]()).mode == "plain"
    assert kerasreg.ProximalOptimizer(keras.optimizers.Adam(), mode="plain").mode == "plain"


def test_bad_arguments_are_refused():
    with pytest.raises(
        TypeError, match="argument `inner_optimizer`.*Received: inner_optimizer='adam'"
    ):
        kerasreg.ProximalOptimizer("adam")
    inner = kerasreg.ProximalOptimizer(keras.optimizers.SGD())
    with pytest.raises(ValueError, match="not already a ProximalOptimizer"):
        kerasreg.ProximalOptimizer(inner)
    with pytest.raises(ValueError, match="argument `inner_optimizer`"):
        kerasreg.ProximalOptimizer(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()))
    with pytest.raises(ValueError) as info:
        kerasreg.ProximalOptimizer(keras.optimizers.SGD(), mode="fast")
    assert str(info.value) == (
        "Invalid value for argument `mode`: expected one of "
        "['auto', 'plain', 'preconditioned']. Received: mode='fast'"
    )
    with pytest.raises(ValueError, match="argument `mode`"):
        kerasreg.ProximalOptimizer(keras.optimizers.SGD(), mode="preconditioned")
    with pytest.raises(TypeError, match="argument `penalty_in_loss`"):
        kerasreg.ProximalOptimizer(keras.optimizers.SGD(), penalty_in_loss="yes")
    with pytest.raises(TypeError, match="argument `exclude_names`"):
        kerasreg.ProximalOptimizer(keras.optimizers.SGD(), exclude_names="dense")
    with pytest.raises(ValueError, match="argument `weight_decay`"):
        kerasreg.ProximalOptimizer(keras.optimizers.SGD(), weight_decay=0.1)


def test_no_double_counting_fixed_point_through_fit():
    # Starting at scikit-learn's lasso solution, one full-batch step of the
    # wrapper must stay there (a fixed point); with the penalty's gradient
    # counted twice it would move.
    x, y = _diabetes()
    alpha = 0.03
    sk = Lasso(alpha=alpha, tol=1e-14, max_iter=1_000_000).fit(*_float64(x, y))
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(1, kernel_regularizer=kerasreg.L1(2 * alpha))]
    )
    model.compile(optimizer=kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
    model.layers[0].set_weights(
        [sk.coef_[:, None].astype("float32"), np.array([sk.intercept_], "float32")]
    )
    model.fit(x, y, batch_size=len(x), epochs=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(to_numpy(model.layers[0].kernel)[:, 0], sk.coef_, atol=1e-5)


def test_keras_regularizers_are_handled_and_others_untouched():
    x, y = _small_problem()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(16, "relu", kernel_regularizer=keras.regularizers.L1(0.01)),
            keras.layers.Dense(
                1,
                kernel_regularizer=keras.regularizers.OrthogonalRegularizer(0.01),
                bias_regularizer=kerasreg.L1(0.01),
            ),
        ]
    )
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1))
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=32, epochs=30, verbose=0)
    first, second = model.layers
    assert optimizer.proximal_regularizer(first.kernel) == kerasreg.L1(0.01)
    assert optimizer.proximal_regularizer(second.kernel) is None  # no prox known
    assert optimizer.proximal_regularizer(first.bias) is None  # no regularizer
    assert np.count_nonzero(to_numpy(first.kernel) == 0) > 50
    assert np.count_nonzero(to_numpy(first.bias) == 0) == 0


def test_exclusion_by_name_and_by_variable():
    x, y = _small_problem()
    for exclude in ("names", "variables"):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((20,)),
                keras.layers.Dense(16, "relu", kernel_regularizer=kerasreg.L1(0.01), name="keep"),
                keras.layers.Dense(1, kernel_regularizer=kerasreg.L1(0.01), name="skip"),
            ]
        )
        if exclude == "names":
            optimizer = kerasreg.ProximalOptimizer(
                keras.optimizers.SGD(0.1), exclude_names=["skip"]
            )
        else:
            optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1))
            optimizer.exclude_from_prox(var_list=[model.layers[1].kernel])
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=32, epochs=30, verbose=0)
        assert np.count_nonzero(to_numpy(model.layers[0].kernel) == 0) > 50
        assert np.count_nonzero(to_numpy(model.layers[1].kernel) == 0) == 0


def _step_by_step(optimizer, w0, l1, steps):
    """Applies `steps` updates whose data gradient is zero; returns the iterates.

    The gradient passed is exactly the penalty's (the loss is the penalty
    alone), so the inner step must do nothing and each iterate must be the
    prox of the previous one.
    """
    variable = keras.Variable(w0, name="w")
    variable.regularizer = kerasreg.L1(l1)
    iterates = []
    for _ in range(steps):
        w = to_numpy(variable)
        optimizer.apply([keras.ops.convert_to_tensor(l1 * np.sign(w))], [variable])
        iterates.append(to_numpy(variable))
    return iterates


def _soft(w, t):
    return np.sign(w) * np.maximum(np.abs(w) - t, 0)


def test_plain_step_follows_the_learning_rate_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.4, decay_steps=1, decay_rate=0.5)
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(schedule))
    w0 = np.array([1.0, -0.5, 0.2, 0.05], "float32")
    iterates = _step_by_step(optimizer, w0, l1=1.0, steps=4)
    expected = w0
    for t, w in enumerate(iterates):
        expected = _soft(expected, 0.4 * 0.5**t)
        np.testing.assert_allclose(w, expected, atol=1e-7)
    assert np.count_nonzero(iterates[-1]) == 1  # thresholds sum to 0.75


def test_prox_only_on_accumulation_update_steps():
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1, gradient_accumulation_steps=3))
    w0 = np.array([1.0, -0.5, 0.2, 0.05], "float32")
    iterates = _step_by_step(optimizer, w0, l1=1.0, steps=6)
    np.testing.assert_array_equal(iterates[0], w0)
    np.testing.assert_array_equal(iterates[1], w0)
    np.testing.assert_allclose(iterates[2], _soft(w0, 0.1), atol=1e-7)
    np.testing.assert_allclose(iterates[4], iterates[2])
    np.testing.assert_allclose(iterates[5], _soft(w0, 0.2), atol=1e-7)


def test_preconditioned_step_is_adams_own_step():
    # Data gradient zero: Adam's m and v see only the (removed) penalty
    # gradient... which is removed, so m = v = 0 and Adam's step is
    # lr * sqrt(1 - b2^t) / (0 + eps): a huge step that zeroes everything.
    # With a real gradient, compare with the metric computed from Adam's
    # state by hand.
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5,)).astype("float32")
    g = rng.normal(size=(5,)).astype("float32")
    inner = keras.optimizers.Adam(0.1)
    optimizer = kerasreg.ProximalOptimizer(inner)
    variable = keras.Variable(w0, name="w")
    variable.regularizer = kerasreg.L1(0.5)
    optimizer.apply([keras.ops.convert_to_tensor(g + 0.5 * np.sign(w0))], [variable])
    # Adam's first step on the data gradient g, then the prox in its metric.
    m, v = 0.1 * g, 0.001 * g**2
    alpha = 0.1 * np.sqrt(1 - 0.999) / (1 - 0.9)
    stepped = w0 - alpha * m / (np.sqrt(v) + 1e-7)
    metric = 0.1 * np.sqrt(1 - 0.999) / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(to_numpy(variable), _soft(stepped, 0.5 * metric), atol=1e-6)


def test_ema_keeps_the_sparsity_pattern():
    _, _, zeros = _train_small(
        kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.01, use_ema=True)), kerasreg.L1(0.01)
    )
    # `fit` finalizes the model with the moving averages.
    assert zeros > 30


def _custom_loop_lasso(steps, alpha):
    """Full-batch proximal gradient on diabetes with a hand-written loop."""
    x, y = _diabetes()
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(
                1, kernel_regularizer=kerasreg.L1(2 * alpha), kernel_initializer="zeros"
            ),
        ]
    )
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(_lipschitz_step(x)))
    loss_fn = keras.losses.MeanSquaredError()
    x_t, y_t = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y[:, None])
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def train_step():
            with tf.GradientTape() as tape:
                loss = loss_fn(y_t, model(x_t, training=True)) + keras.ops.sum(model.losses)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

        for _ in range(steps):
            train_step()
    elif BACKEND == "jax":
        import jax

        optimizer.build(model.trainable_variables)

        def loss_of(trainable, non_trainable):
            y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x_t)
            with keras.StatelessScope(
                state_mapping=list(zip(model.trainable_variables, trainable, strict=True))
            ):
                penalty = keras.ops.sum(model.losses)
            return loss_fn(y_t, y_pred) + penalty

        @jax.jit
        def train_step(state):
            trainable, non_trainable, opt_vars = state
            grads = jax.grad(loss_of)(trainable, non_trainable)
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return trainable, non_trainable, opt_vars

        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        )
        for _ in range(steps):
            state = train_step(state)
        for variable, value in zip(model.trainable_variables, state[0], strict=True):
            variable.assign(value)
    else:
        import torch

        for _ in range(steps):
            loss = loss_fn(y_t, model(x_t, training=True)) + keras.ops.sum(model.losses)
            model.zero_grad()
            loss.backward()
            grads = [v.value.grad for v in model.trainable_variables]
            with torch.no_grad():
                optimizer.apply(grads, model.trainable_variables)
    return to_numpy(model.layers[0].kernel)[:, 0]


def test_custom_training_loop_matches_scikit_learn():
    # TensorFlow: GradientTape inside tf.function(jit_compile=True) and
    # apply_gradients; JAX: stateless_apply under jax.jit; PyTorch: autograd
    # and apply. All must reach scikit-learn's lasso solution.
    alpha = 0.03
    x, y = _diabetes()
    sk = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(*_float64(x, y))
    w = _custom_loop_lasso(steps=2000, alpha=alpha)
    np.testing.assert_array_equal(w == 0, sk.coef_ == 0)
    np.testing.assert_allclose(w, sk.coef_, atol=1e-3)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="jit_compile is TensorFlow's XLA switch")
def test_fit_with_xla_matches_scikit_learn():
    x, y = _diabetes()
    alpha = 0.03
    sk = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(*_float64(x, y))
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(1, kernel_regularizer=kerasreg.L1(2 * alpha))]
    )
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(_lipschitz_step(x)))
    model.compile(optimizer=optimizer, loss="mse", jit_compile=True, steps_per_execution=50)
    model.fit(FullBatch(x, y, 3000), verbose=0)
    w = to_numpy(model.layers[0].kernel)[:, 0]
    np.testing.assert_array_equal(w == 0, sk.coef_ == 0)
    np.testing.assert_allclose(w, sk.coef_, atol=1e-3)


def test_mixed_precision_with_loss_scaling():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model, history, zeros = _train_small(
            kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.01)), kerasreg.L1(0.01)
        )
    finally:
        keras.config.set_dtype_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, kerasreg.ProximalOptimizer)
    assert zeros > 30
    assert np.isfinite(history.history["loss"][-1])


def test_save_and_resume_equals_uninterrupted_training(tmp_path):
    x, y = _small_problem()

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((20,)),
                keras.layers.Dense(16, "relu", kernel_regularizer=kerasreg.L1(0.01)),
                keras.layers.Dense(1, kernel_regularizer=kerasreg.GroupLasso(0.01)),
            ]
        )
        model.compile(optimizer=kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.01)), loss="mse")
        return model

    straight = build()
    straight.fit(x, y, batch_size=32, epochs=6, shuffle=False, verbose=0)

    first = build()
    first.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    first.save(tmp_path / "half.keras")
    resumed = keras.models.load_model(tmp_path / "half.keras")
    assert isinstance(resumed.optimizer, kerasreg.ProximalOptimizer)
    assert resumed.optimizer.mode == "preconditioned"
    assert isinstance(resumed.optimizer.inner_optimizer, keras.optimizers.Adam)
    assert int(to_numpy(resumed.optimizer.iterations)) == 3 * 8
    resumed.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    for a, b in zip(straight.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-6)
        np.testing.assert_array_equal(to_numpy(a) == 0, to_numpy(b) == 0)


def test_optimizer_config_round_trip():
    optimizer = kerasreg.ProximalOptimizer(
        keras.optimizers.SGD(0.1, momentum=0.5), exclude_names=["bias"], penalty_in_loss=False
    )
    config = keras.saving.serialize_keras_object(optimizer)
    assert config["registered_name"] == "kerasreg>ProximalOptimizer"
    restored = keras.saving.deserialize_keras_object(config)
    assert restored.get_config() == optimizer.get_config()
    assert restored.inner_optimizer.momentum == 0.5
    assert restored.mode == "plain"


def test_reported_loss_still_includes_the_penalty():
    x, y = _small_problem()
    model, history, _ = _train_small(
        kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1)), kerasreg.L1(0.01), epochs=3
    )
    prediction = to_numpy(model.predict(x, verbose=0)).astype("float64")
    data_loss = np.mean((prediction - y) ** 2)
    penalty = sum(
        0.01 * np.abs(to_numpy(layer.kernel).astype("float64")).sum() for layer in model.layers
    )
    reported = model.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(reported, data_loss + penalty, rtol=1e-5)
    assert penalty > 0.01 * reported


def test_strength_scale_multiplies_the_threshold():
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1))
    w0 = np.array([1.0, -0.5, 0.2, 0.05], "float32")
    optimizer.strength_scale.assign(2.5)
    iterates = _step_by_step(optimizer, w0, l1=1.0, steps=2)
    np.testing.assert_allclose(iterates[0], _soft(w0, 0.25), atol=1e-7)
    np.testing.assert_allclose(iterates[1], _soft(w0, 0.5), atol=1e-7)


def test_frozen_zeros_stay_zero_and_survivors_follow_the_gradient():
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1))
    variable = keras.Variable(np.array([0.0, 1.0, 0.0, -2.0], "float32"), name="w")
    variable.regularizer = kerasreg.L1(1.0)
    optimizer.build([variable])
    optimizer.freeze_zeros()
    data_gradient = np.array([1.0, 0.5, -3.0, 0.25], "float32")
    for _ in range(3):
        # The loss holds the penalty: its gradient is removed, no prox.
        penalty_gradient = np.sign(to_numpy(variable))
        before = to_numpy(variable)
        optimizer.apply([keras.ops.convert_to_tensor(data_gradient + penalty_gradient)], [variable])
        np.testing.assert_allclose(
            to_numpy(variable), np.where(before == 0, 0.0, before - 0.1 * data_gradient), atol=1e-6
        )
    optimizer.freeze_zeros(False)
    optimizer.apply([keras.ops.convert_to_tensor(data_gradient)], [variable])
    assert to_numpy(variable)[2] != 0.0  # unfrozen: the gradient reaches it again
    with pytest.raises(TypeError, match="argument `frozen`"):
        optimizer.freeze_zeros(1)


def test_magnitude_pruning_through_the_optimizer_matches_numpy(rng):
    reg = kerasreg.MagnitudePruning(0.6, begin_step=1, end_step=3, frequency=1, power=1.0)
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1))
    w = rng.normal(size=(5, 4)).astype("float32")
    variable = keras.Variable(w, name="kernel")
    variable.regularizer = reg
    for t in range(6):
        gradient = rng.normal(size=w.shape).astype("float32")
        optimizer.apply([keras.ops.convert_to_tensor(gradient)], [variable])
        stepped = w - 0.1 * gradient
        if 1 <= t <= 3:  # recompute the mask: keep the largest after the step
            count = round(reg.sparsity_at(t) * w.size)
            mask = np.ones(w.size, bool)
            mask[np.argsort(np.abs(stepped).ravel())[:count]] = False
            mask = mask.reshape(w.shape)
        elif t == 0:
            mask = np.ones(w.shape, bool)
        w = np.where(mask, stepped, 0.0).astype("float32")
        np.testing.assert_allclose(to_numpy(variable), w, rtol=1e-6, atol=1e-7)
    assert np.count_nonzero(w == 0) == 12


def test_n_m_pruning_in_fit_ends_exactly_n_m():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.normal(size=(64, 4)).astype("float32")
    keras.utils.set_random_seed(0)

    def reg():
        return kerasreg.MagnitudePruning(structure=(2, 4), begin_step=0, end_step=4, frequency=2)

    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(8, "relu", kernel_regularizer=reg(), name="a"),
            keras.layers.Dense(4, kernel_regularizer=reg(), name="b"),
        ]
    )
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-2)), "mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 8 steps: exact 2:4 from step 4
    for layer in model.layers:
        kernel = to_numpy(layer.kernel)
        blocks = np.moveaxis(kernel, -2, -1).reshape(-1, 4)
        np.testing.assert_array_equal(np.count_nonzero(blocks, axis=1), 2)
    report = kerasreg.sparsity_report(model, structure=(2, 4))
    assert [w.structure_holds for w in report] == [True, True]
    assert kerasreg.sparsity_report(model, structure=(1, 4))["a/kernel"].structure_holds is False


def test_magnitude_pruning_leaves_weights_alone_before_begin_step_in_fit():
    # On TensorFlow, `fit` builds the optimizer while tracing its first step;
    # the mask must still start as ones there, or every weight is zeroed
    # from the first step on.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.normal(size=(32, 4)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(
                4, kernel_regularizer=kerasreg.MagnitudePruning(0.5, begin_step=100, end_step=200)
            ),
        ]
    )
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.01)), "mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 4 steps, all before begin_step
    assert np.count_nonzero(to_numpy(model.layers[0].kernel) == 0) == 0
    state = [v for v in model.optimizer.variables if "prox_state" in v.path]
    assert len(state) == 1 and np.all(to_numpy(state[0]) == 1.0)


def test_magnitude_pruning_state_is_saved_and_resumed(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10)).astype("float32")
    y = x @ rng.normal(size=(10, 3)).astype("float32")

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((10,)),
                keras.layers.Dense(
                    3, kernel_regularizer=kerasreg.MagnitudePruning(0.5, 0, 4, frequency=2)
                ),
            ]
        )
        model.compile(kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-2)), "mse")
        return model

    model = build()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)  # 8 steps: mask held from step 4
    path = tmp_path / "pruned.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    mask = to_numpy(model.layers[0].kernel) != 0
    assert np.count_nonzero(~mask) == 15
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for m in (model, loaded):
        np.testing.assert_array_equal(to_numpy(m.layers[0].kernel) != 0, mask)
    np.testing.assert_allclose(
        to_numpy(loaded.layers[0].kernel), to_numpy(model.layers[0].kernel), rtol=1e-5, atol=1e-6
    )


def _global_pruning_mlp(regularizer):
    """A 24-16-8-2 MLP (kernels of different scales) whose kernels get `regularizer`."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((24,)),
            keras.layers.Dense(16, "relu"),
            keras.layers.Dense(8, "relu"),
            keras.layers.Dense(2),
        ]
    )
    kerasreg.regularize(model, regularizer)
    return model


def _kernel_zeros(model):
    """The exact zeros of each kernel (`== 0`)."""
    return [to_numpy(layer.kernel) == 0 for layer in model.layers]


def _assert_global_sparsity(model, sparsity):
    zeros = _kernel_zeros(model)
    total = sum(z.size for z in zeros)
    # Random magnitudes: no ties, so exactly round(s * n) zeros in all.
    assert sum(np.count_nonzero(z) for z in zeros) == round(sparsity * total)
    fractions = [float(np.mean(z)) for z in zeros]
    assert max(fractions) - min(fractions) > 0.05, fractions  # not each layer at `sparsity`


def test_global_magnitude_pruning_prunes_the_kernels_together_in_fit(monkeypatch):
    # Compiled steps (several per execution where the backend allows), with
    # the biases' L1 in TensorFlow's XLA-compiled proxes and PyTorch's fused
    # ones: the pruned kernels take neither path.
    monkeypatch.setattr(kerasreg.optimizers._backends, "_COMPILED_SIZE", 0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 24)).astype("float32")
    y = rng.normal(size=(80, 2)).astype("float32")
    reg = kerasreg.MagnitudePruning(0.8, begin_step=0, end_step=6, frequency=2, scope="global")
    model = _global_pruning_mlp(reg)
    kerasreg.regularize(model, kerasreg.L1(1e-3), weights="bias")
    regs = [layer.kernel_regularizer for layer in model.layers]
    assert len({id(r) for r in regs}) == 3 and all(r == reg for r in regs)  # equal copies
    model.compile(
        kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-2)),
        "mse",
        steps_per_execution=1 if BACKEND == "torch" else 2,
    )
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 10 steps, last turn at step 6
    _assert_global_sparsity(model, 0.8)


def test_global_magnitude_pruning_with_accumulation_in_eager_steps():
    # Gradient accumulation over 2 steps: the prox runs on the inner
    # optimizer's updates, whose count is the schedule's step (turns at 0, 1).
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 24)).astype("float32")
    y = rng.normal(size=(64, 2)).astype("float32")
    reg = kerasreg.MagnitudePruning(
        0.6, begin_step=0, end_step=1, initial_sparsity=0.3, frequency=1, scope="global"
    )
    model = _global_pruning_mlp(reg)
    inner = keras.optimizers.SGD(0.05, gradient_accumulation_steps=2)
    # Eager on TensorFlow (PyTorch's steps are eager anyway; JAX's eager
    # steps cost seconds: its eager path is checked in one shot below).
    model.compile(kerasreg.ProximalOptimizer(inner), "mse", run_eagerly=BACKEND == "tensorflow")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # one update
    _assert_global_sparsity(model, 0.3)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # the last turn
    _assert_global_sparsity(model, 0.6)


def test_global_magnitude_pruning_one_shot_is_numpys_top_k():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 24)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    reg = kerasreg.MagnitudePruning(0.7, begin_step=0, end_step=0, scope="global")
    model = _global_pruning_mlp(reg)
    kernels = [to_numpy(layer.kernel) for layer in model.layers]
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.0)), "mse", run_eagerly=True)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    flat = np.concatenate([np.abs(k).ravel() for k in kernels])
    keep = np.ones(flat.size, bool)
    keep[np.argsort(flat)[: round(0.7 * flat.size)]] = False
    kept = np.concatenate([~z.ravel() for z in _kernel_zeros(model)])
    np.testing.assert_array_equal(kept, keep)


def test_global_magnitude_pruning_keeps_one_threshold_after_loading(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 24)).astype("float32")
    y = rng.normal(size=(64, 2)).astype("float32")
    reg = kerasreg.MagnitudePruning(0.8, begin_step=0, end_step=8, frequency=2, scope="global")
    model = _global_pruning_mlp(reg)
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.05)), "mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # 4 steps: turns at 0 and 2
    path = tmp_path / "global.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    regs = [layer.kernel_regularizer for layer in loaded.layers]
    assert len({id(r) for r in regs}) == 3 and all(r == reg for r in regs)
    for m in (model, loaded):  # turns at 4, 6 and 8, after loading
        m.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    _assert_global_sparsity(loaded, 0.8)
    for a, b in zip(_kernel_zeros(loaded), _kernel_zeros(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_building_twice_under_loss_scaling_adds_no_variables():
    # LossScaleOptimizer builds its inner optimizer again: state must not double.
    variable = keras.Variable(np.ones((4, 3), "float32"), name="kernel")
    variable.regularizer = kerasreg.MagnitudePruning(0.5, 0, 10)
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.Adam())
    optimizer.build([variable])
    count = len(optimizer.variables)
    keras.optimizers.LossScaleOptimizer(optimizer).build([variable])
    assert len(optimizer.variables) == count


def _fused_or_not(monkeypatch, fused, make_inner):
    """Weights after five steps with random gradients, fused (PyTorch) or not."""
    monkeypatch.setattr(kerasreg.optimizers._backends, "fuses", lambda: fused)
    rng = np.random.default_rng(0)
    regularizers = [
        kerasreg.L1(1.0),
        kerasreg.L2(0.1),
        kerasreg.ElasticNet(2.0, 0.5),
        kerasreg.ElasticNet(0.1, 0.0),
        keras.regularizers.L1(1.0),
        kerasreg.GroupLasso(0.05),  # not element-wise: the per-variable path
    ]
    variables = []
    for j, regularizer in enumerate(regularizers):
        value = rng.normal(size=(4, 5)) * (rng.random((4, 5)) > 0.3)  # exact zeros too
        variable = keras.Variable(value.astype("float64" if j == 2 else "float32"))
        variable.regularizer = regularizer
        variables.append(variable)
    optimizer = kerasreg.ProximalOptimizer(make_inner())
    for _ in range(5):
        grads = [
            keras.ops.convert_to_tensor(rng.normal(size=(4, 5)).astype(v.dtype)) for v in variables
        ]
        optimizer.apply(grads, variables)
    return [to_numpy(variable) for variable in variables]


@pytest.mark.skipif(BACKEND != "torch", reason="steps are fused in PyTorch's eager mode only")
@pytest.mark.parametrize(
    "make_inner",
    [
        lambda: keras.optimizers.Adam(0.1),
        lambda: keras.optimizers.Adam(0.1, gradient_accumulation_steps=2),
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.RMSprop(0.05),
    ],
    ids=["Adam", "Adam-accumulating", "SGD", "RMSprop"],
)
def test_fused_steps_equal_per_variable_steps_to_the_bit(monkeypatch, make_inner):
    fused = _fused_or_not(monkeypatch, True, make_inner)
    separate = _fused_or_not(monkeypatch, False, make_inner)
    for j in (0, 2, 4):  # the L1 terms zero weights
        assert np.count_nonzero(fused[j] == 0) > 0
    for a, b in zip(fused, separate, strict=True):
        np.testing.assert_array_equal(
            a.view(f"uint{8 * a.itemsize}"), b.view(f"uint{8 * b.itemsize}")
        )


def _kernels_or_foreach(monkeypatch, compiled, make_inner):
    """Weights after five fused steps (PyTorch), with compiled kernels or not,
    and whether every gradient passed was left as it was."""
    size = 0 if compiled else 2**62
    monkeypatch.setattr(kerasreg.optimizers._backends, "_COMPILED_FUSED_SIZE", size)
    rng = np.random.default_rng(0)
    regularizers = [
        kerasreg.L1(1.0),
        kerasreg.L2(0.1),
        kerasreg.ElasticNet(2.0, 0.5),
        keras.regularizers.L1(1.0),
    ]
    variables = []
    for j, regularizer in enumerate(regularizers):
        value = rng.normal(size=(40, 50)) * (rng.random((40, 50)) > 0.3)  # exact zeros too
        variable = keras.Variable(value.astype("float64" if j == 2 else "float32"))
        variable.regularizer = regularizer
        variables.append(variable)
    optimizer = kerasreg.ProximalOptimizer(make_inner())
    untouched = True
    buffers = []
    for _ in range(5):
        grads = [
            keras.ops.convert_to_tensor(rng.normal(size=(40, 50)).astype(v.dtype))
            for v in variables
        ]
        copies = [to_numpy(grad).copy() for grad in grads]
        optimizer.apply(grads, variables)
        untouched &= all(np.array_equal(to_numpy(g), c) for g, c in zip(grads, copies, strict=True))
        buffers.append([optimizer._plan.entry(v).gradient_buffer for v in variables])
    routes = optimizer._plan._last_routes[1]
    assert [(route.label, route.compiled) for route in routes] == [("fused", compiled)]
    if compiled:  # one buffer per variable, made once and written in every step
        assert all(b is not None for b in buffers[0])
        assert all(list(map(id, step)) == list(map(id, buffers[0])) for step in buffers)
    return [to_numpy(variable) for variable in variables], untouched


@pytest.mark.skipif(BACKEND != "torch", reason="kernels compiled in PyTorch's eager mode only")
@pytest.mark.parametrize(
    "make_inner",
    [
        lambda: keras.optimizers.Adam(0.1),
        lambda: keras.optimizers.Adam(0.1, gradient_accumulation_steps=2),
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.RMSprop(0.05),
    ],
    ids=["Adam", "Adam-accumulating", "SGD", "RMSprop"],
)
def test_compiled_kernels_equal_the_fused_steps_within_ulps(monkeypatch, make_inner):
    compiled, untouched = _kernels_or_foreach(monkeypatch, True, make_inner)
    assert not kerasreg.optimizers._backends._COMPILE_FAILED  # compiled, not fallen back
    assert untouched  # the new gradients went into the optimizer's own buffers
    fused, _ = _kernels_or_foreach(monkeypatch, False, make_inner)
    for j, (a, b) in enumerate(zip(compiled, fused, strict=True)):
        if j != 1:  # the L1 terms zero weights, the same ones
            assert np.count_nonzero(b == 0) > 0
        np.testing.assert_array_equal(a == 0, b == 0)
        # The compiler may contract a product and a sum into one rounding.
        spacing = np.spacing(np.abs(b).max())
        np.testing.assert_array_less(np.abs(a - b), 4 * spacing + np.zeros_like(b))


@pytest.mark.skipif(BACKEND != "torch", reason="kernels compiled in PyTorch's eager mode only")
def test_kernels_that_do_not_compile_run_uncompiled_with_a_warning(monkeypatch):
    import torch
    from torch._inductor.exc import InductorError

    def failing_compile(function, **kwargs):
        def compiled(*args):
            # What Inductor raises where no C++ compiler (CPU) or Triton (GPU) runs.
            raise InductorError(RuntimeError("no C++ compiler"), None)

        return compiled

    backends = kerasreg.optimizers._backends
    monkeypatch.setattr(torch, "compile", failing_compile)
    monkeypatch.setattr(backends, "_KERNELS", {})
    monkeypatch.setattr(backends, "_COMPILE_FAILED", [])
    make_inner = lambda: keras.optimizers.Adam(0.1)  # noqa: E731
    with pytest.warns(RuntimeWarning, match="could not compile .* no C\\+\\+ compiler"):
        uncompiled, _ = _kernels_or_foreach(monkeypatch, True, make_inner)
    assert len(backends._COMPILE_FAILED) == 1
    # The same operations as the fused steps, uncompiled: the same bits.
    fused, _ = _kernels_or_foreach(monkeypatch, False, make_inner)
    for a, b in zip(uncompiled, fused, strict=True):
        np.testing.assert_array_equal(
            a.view(f"uint{8 * a.itemsize}"), b.view(f"uint{8 * b.itemsize}")
        )


def _compiled_or_not(monkeypatch, size, make_inner):
    """Weights after five traced steps, the proxes compiled by XLA (size 0) or not."""
    import tensorflow as tf

    monkeypatch.setattr(kerasreg.optimizers._backends, "_COMPILED_SIZE", size)
    rng = np.random.default_rng(0)
    regularizers = [
        kerasreg.L1(1.0),
        kerasreg.L2(0.1),
        kerasreg.ElasticNet(2.0, 0.5),
        keras.regularizers.L1(1.0),
        kerasreg.GroupLasso(0.5),
        kerasreg.MagnitudePruning(0.5, begin_step=0, end_step=2, frequency=1),  # not compiled
    ]
    variables = []
    for j, regularizer in enumerate(regularizers):
        value = rng.normal(size=(4, 5)) * (rng.random((4, 5)) > 0.3)
        variable = keras.Variable(value.astype("float64" if j == 2 else "float32"))
        variable.regularizer = regularizer
        variables.append(variable)
    optimizer = kerasreg.ProximalOptimizer(make_inner())
    optimizer.build(variables)
    step = tf.function(lambda grads: optimizer.apply(grads, variables))
    for _ in range(5):
        step([tf.constant(rng.normal(size=(4, 5)), v.dtype) for v in variables])
    return [to_numpy(variable) for variable in variables]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="XLA computations in TensorFlow graphs")
@pytest.mark.parametrize(
    "make_inner",
    [lambda: keras.optimizers.Adam(0.1), lambda: keras.optimizers.SGD(0.1, momentum=0.9)],
    ids=["Adam", "SGD"],
)
def test_compiled_proxes_equal_kernel_by_kernel_proxes(monkeypatch, make_inner):
    # The same zeros; the values within a few ulps: XLA reduces group norms in
    # another order and may divide by a broadcast scalar through its
    # reciprocal (GroupLasso; L2 with a scalar step), and the iterations of
    # GroupLasso's prox in Adam's metric carry that to about 1e-6 after five
    # steps. Element-wise L1 is bit for bit.
    compiled = _compiled_or_not(monkeypatch, 0, make_inner)
    separate = _compiled_or_not(monkeypatch, 2**62, make_inner)
    for j in (0, 2, 3, 5):
        assert np.count_nonzero(compiled[j] == 0) > 0
    for j, (a, b) in enumerate(zip(compiled, separate, strict=True)):
        np.testing.assert_array_equal(a == 0, b == 0)
        if j in (0, 3):
            np.testing.assert_array_equal(a.view("uint32"), b.view("uint32"))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# Checkpoints. `tests/data/proximal_adam_before_single_state.keras` was
# written before the wrapper saved each optimizer variable once (its own and
# the inner Adam's were both in `optimizer/vars`, and Adam's again in
# `optimizer/inner_optimizer/vars`), by the code of commit c7e3184:
#
#   git worktree add /tmp/old c7e3184
#   cd /tmp/old && PYTHONPATH=/tmp/old KERAS_BACKEND=jax python make.py \
#       tests/data/proximal_adam_before_single_state.keras
#
# where make.py holds `_checkpoint_model` below (with `import kerasreg`) and:
#
#   model, x, y = _checkpoint_model()
#   _train_before_saving(model, x, y)
#   model.save(sys.argv[1])
#
# `tests/data/proximal_adam_before_one_control.keras` was written the same
# way by the code of commit c7e3afc, before the wrapper's controls became one
# variable (it saved the step count of Keras' base class, then
# `strength_scale`, `zeros_frozen` and `controller_state`, then the mask).
OLD_CHECKPOINTS = [
    "tests/data/proximal_adam_before_single_state.keras",
    "tests/data/proximal_adam_before_one_control.keras",
]


def _checkpoint_model():
    rng = np.random.default_rng(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(4, kernel_regularizer=kerasreg.L1(0.02)),
            keras.layers.Dense(
                2, kernel_regularizer=kerasreg.MagnitudePruning(0.5, begin_step=0, end_step=6)
            ),
        ]
    )
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.01)), "mse")
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    return model, x, y


def _train_before_saving(model, x, y):
    """Four steps, with every control of the wrapper away from its initial value."""
    model.optimizer.build(model.trainable_variables)
    model.optimizer.strength_scale.assign(0.5)
    model.optimizer.controller_state.assign([1.0, 2.0, 3.0])
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    model.optimizer.freeze_zeros()


def _optimizer_tensors(path):
    """The number of optimizer tensors in the `.keras` file at `path`."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as archive:
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        names = []
        weights["optimizer"].visit(names.append)
        return sum(isinstance(weights["optimizer"][name], h5py.Dataset) for name in names)


def test_a_checkpoint_stores_each_optimizer_variable_once(tmp_path):
    model, x, y = _checkpoint_model()
    _train_before_saving(model, x, y)
    model.save(tmp_path / "model.keras")
    adam = keras.optimizers.Adam()
    adam.build(model.trainable_variables)
    optimizer = model.optimizer
    # The wrapper's controls, one variable; the step count and learning rate
    # of Keras' base class are the inner optimizer's.
    own = [optimizer.controls]
    prox_states = [v for v in optimizer.variables if "prox_state" in v.path]
    assert len(prox_states) == 1  # the pruning mask
    assert _optimizer_tensors(tmp_path / "model.keras") == len(adam.variables) + len(
        own + prox_states
    )
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert len(loaded.optimizer.variables) == len(optimizer.variables)
    for a, b in zip(loaded.optimizer.variables, optimizer.variables, strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=a.path)
    for m in (model, loaded):
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_another_optimizer_is_skipped_with_a_warning():
    model, _, _ = _checkpoint_model()
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    before = [to_numpy(v).copy() for v in optimizer._own_state()]
    store = {"0": np.ones((4,), "float32"), "1": np.ones((2, 2), "float32")}
    with pytest.warns(UserWarning, match="Skipping variable loading .* shapes"):
        optimizer.load_own_variables(store)
    for a, b in zip(optimizer._own_state(), before, strict=True):
        np.testing.assert_array_equal(to_numpy(a), b)


def test_controls_read_and_set_as_variables():
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.Adam())
    optimizer.strength_scale.assign(0.5)
    optimizer.strength_scale.assign_add(0.25)
    optimizer.controller_state.assign([1.0, 2.0, 3.0])
    optimizer.freeze_zeros()
    assert float(optimizer.strength_scale) == 0.75
    assert float(keras.ops.convert_to_numpy(optimizer.zeros_frozen)) == 1.0
    assert bool(optimizer.zeros_frozen > 0.5) and float(optimizer.strength_scale * 2) == 1.5
    np.testing.assert_array_equal(np.asarray(optimizer.controller_state), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(to_numpy(optimizer.controls), [0.75, 1.0, 1.0, 2.0, 3.0])
    assert [v.path for v in optimizer.variables[:1]] == ["proximal/controls"]


@pytest.mark.parametrize("path", OLD_CHECKPOINTS, ids=["before_single_state", "before_one_control"])
def test_an_old_checkpoint_loads_with_its_optimizer_state(path):
    loaded = keras.models.load_model(path)
    model, x, y = _checkpoint_model()  # never saved
    _train_before_saving(model, x, y)
    optimizer, never_saved = loaded.optimizer, model.optimizer
    assert int(to_numpy(optimizer.iterations)) == 4
    assert float(to_numpy(optimizer.zeros_frozen)) == 1.0
    assert float(to_numpy(optimizer.strength_scale)) == 0.5
    np.testing.assert_array_equal(to_numpy(optimizer.controller_state), [1.0, 2.0, 3.0])
    # The file comes from JAX: other backends round differently, by ulps.
    for a, b in zip(optimizer.variables, never_saved.variables, strict=True):
        if "prox_state" in a.path:  # the pruning mask, exactly
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-7, err_msg=a.path)
    moments = [v for v in optimizer.inner_optimizer.variables if "velocity" in v.path]
    assert all(np.all(to_numpy(v) > 0) for v in moments)  # the moments were loaded
    for m in (model, loaded):  # one more step, zeros frozen
        m.fit(x[:8], y[:8], batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a == 0, b == 0)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
