"""MCP and SCAD: their proxes, penalties and fits against skglm.

The proxes are checked against a brute-force minimisation of the 1-D
proximal objective in NumPy (independent of kerasreg), for steps below and
above the bound where the objective stops being convex, and against skglm's
`prox_MCP` and `prox_SCAD` where it is convex. The penalty values are
checked against skglm's; the fits through `ProximalOptimizer` against
skglm's solvers on problems whose objective is convex.
"""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from skglm.utils import prox_funcs

import kerasreg
from kerasreg import prox
from tests.conftest import BACKEND
from tests.conftest import to_numpy
from tests.test_optimizers import FullBatch


def mcp_values(w, a, g):
    """MCP of each entry of `w`, in NumPy float64."""
    w = np.abs(w)
    return np.where(w <= g * a, a * w - w**2 / (2 * g), g * a**2 / 2)


def scad_values(w, a, g):
    """SCAD of each entry of `w`, in NumPy float64."""
    w = np.abs(w)
    middle = (2 * g * a * w - w**2 - a**2) / (2 * (g - 1))
    return np.where(w <= a, a * w, np.where(w <= g * a, middle, a**2 * (g + 1) / 2))


# skglm's functions as plain Python: numba would spend seconds compiling each.
prox_MCP = prox_funcs.prox_MCP.py_func
prox_SCAD = prox_funcs.prox_SCAD.py_func
value_MCP = prox_funcs.value_MCP.py_func
value_SCAD = prox_funcs.value_SCAD.py_func

PENALTIES = {"mcp": (prox.prox_mcp, mcp_values, 0.0), "scad": (prox.prox_scad, scad_values, 1.0)}


def objective(z, x, s, a, g, values):
    return 0.5 * (z - x) ** 2 + s * values(z, a, g)


def brute_force(x, s, a, g, values):
    """The minimum of the prox objective of each coordinate: a grid, then a finer one.

    A minimiser lies between 0 and `x` (the penalties grow with |z|).
    Returns the minimiser found and its objective value.
    """
    best_z, best_f = np.empty_like(x), np.empty_like(x)
    for i, (xi, si) in enumerate(zip(x, np.broadcast_to(s, x.shape), strict=True)):
        grid = np.concatenate([np.linspace(0.0, xi, 4001), [a, g * a, -a, -g * a]])
        grid = grid[np.abs(grid) <= abs(xi)]
        f = objective(grid, xi, si, a, g, values)
        z = grid[np.argmin(f)]
        width = abs(xi) / 4000
        for _ in range(3):
            fine = np.linspace(z - width, z + width, 401)
            fine = fine[np.abs(fine) <= abs(xi)]
            fine = fine[np.sign(fine) * np.sign(xi) >= 0]
            fine = np.concatenate([fine, [z]])
            z = fine[np.argmin(objective(fine, xi, si, a, g, values))]
            width /= 200
        best_z[i], best_f[i] = z, objective(z, xi, si, a, g, values)
    return best_z, best_f


@pytest.mark.parametrize("name", ["mcp", "scad"])
@given(
    x=hnp.arrays("float64", 6, elements=st.floats(-8.0, 8.0, allow_subnormal=False)),
    strength=st.floats(0.0, 2.0),
    gamma_offset=st.floats(0.05, 5.0),
    steps=hnp.arrays("float64", 6, elements=st.floats(0.0, 12.0)),
    per_coordinate=st.booleans(),
)
def test_prox_is_the_global_minimiser(name, x, strength, gamma_offset, steps, per_coordinate):
    prox_fn, values, low = PENALTIES[name]
    gamma = low + gamma_offset + (1.0 if name == "scad" else 0.0)
    step = steps if per_coordinate else float(steps[0])
    z = to_numpy(prox_fn(x, step, strength, gamma))
    assert z.dtype == np.float64
    ref_z, ref_f = brute_force(x, step, strength, gamma, values)
    f = objective(z, x, step, strength, gamma, values)
    np.testing.assert_array_less(f, ref_f + 1e-10 * (1.0 + np.abs(ref_f)))
    # Below the bound the objective is strictly convex: one minimiser.
    convex = np.broadcast_to(step, x.shape) < gamma - low
    np.testing.assert_allclose(z[convex], ref_z[convex], atol=1e-6)
    # Never a larger magnitude than the input, never the other sign.
    assert np.all(np.abs(z) <= np.abs(x)) and np.all(z * x >= 0)


@pytest.mark.parametrize("name", ["mcp", "scad"])
@given(
    x=hnp.arrays("float64", 8, elements=st.floats(-8.0, 8.0, allow_subnormal=False)),
    strength=st.floats(0.0, 2.0),
    gamma_offset=st.floats(0.05, 5.0),
    fraction=st.floats(0.0, 3.0),
)
def test_prox_matches_skglm(name, x, strength, gamma_offset, fraction):
    prox_fn, values, low = PENALTIES[name]
    gamma = low + gamma_offset + (1.0 if name == "scad" else 0.0)
    step = fraction * (gamma - low)
    z = to_numpy(prox_fn(x, step, strength, gamma))
    if name == "mcp":
        if step < gamma:
            expected = np.array([prox_MCP(v, step, strength, gamma) for v in x])
            # The same formula in the same order: the same numbers, within
            # two ulps (XLA's and NumPy's roundings can differ by one).
            np.testing.assert_allclose(z, expected, rtol=5e-16, atol=0)
    elif step > 0 and step != gamma - 1:  # skglm divides by both
        # skglm compares three candidates' objectives, which finds the
        # global minimiser past the bound too (ties may go either way).
        expected = np.array([prox_SCAD(v, step, strength, gamma) for v in x])
        f, f_expected = (objective(v, x, step, strength, gamma, values) for v in (z, expected))
        np.testing.assert_allclose(f, f_expected, rtol=1e-12, atol=1e-12)
        if step < gamma - 1:
            np.testing.assert_allclose(z, expected, rtol=1e-12, atol=1e-12)


def test_skglm_prox_mcp_is_no_minimiser_past_the_bound():
    # skglm's firm thresholding assumes step < gamma (its coordinate descent
    # takes steps 1 / L_j); past that it can zero a weight that the global
    # minimiser keeps: here 0 costs 4.5 where keeping 3 costs 2.
    a, g, s, x = 1.0, 1.0, 4.0, 3.0
    assert prox_MCP(x, s, a, g) == 0.0
    ours = to_numpy(prox.prox_mcp(np.array([x]), s, a, g))
    np.testing.assert_array_equal(ours, [3.0])
    assert objective(0.0, x, s, a, g, mcp_values) == 4.5
    assert objective(3.0, x, s, a, g, mcp_values) == 2.0


def test_zero_step_is_the_identity_and_special_values():
    x = np.array([0.0, -0.0, 0.3, -7.0, np.inf, -np.inf, np.nan])
    for name, (prox_fn, _, low) in PENALTIES.items():
        gamma = low + 2.7
        np.testing.assert_array_equal(to_numpy(prox_fn(x, 0.0, 0.5, gamma)), x)
        for step in (1.0, 50.0):
            z = to_numpy(prox_fn(x, step, 0.5, gamma))
            np.testing.assert_array_equal(z[4:], x[4:], err_msg=name)
            assert np.all(z[:3] == 0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_dtypes_are_kept(dtype):
    x = keras.ops.convert_to_tensor(np.linspace(-4.0, 4.0, 9), dtype=dtype)
    steps = keras.ops.convert_to_tensor(np.linspace(0.0, 9.0, 9), dtype=dtype)
    for reg in (kerasreg.MCP(0.5, 3.0), kerasreg.SCAD(0.5, 3.7)):
        for step in (0.1, 20.0, steps):
            z = reg.prox(x, step)
            assert keras.backend.standardize_dtype(z.dtype) == dtype
            assert np.all(np.isfinite(to_numpy(keras.ops.cast(z, "float32"))))


@pytest.mark.parametrize("cls", [kerasreg.MCP, kerasreg.SCAD])
def test_penalty_matches_skglm(rng, cls):
    a, g = 0.3, 3.7
    w = np.concatenate([rng.normal(size=40) * 1.5, [0.0, a, -a, g * a, -g * a, 5.0]])
    reference = (value_MCP if cls is kerasreg.MCP else value_SCAD)(w, a, g)
    value = to_numpy(cls(a, g)(w))
    np.testing.assert_allclose(value, reference, rtol=1e-14)
    value32 = to_numpy(cls(a, g)(w.astype("float32")))
    np.testing.assert_allclose(value32, reference, rtol=1e-6)


def test_mse_mapping_of_mcp_is_exact():
    # Twice MCP(alpha, gamma) is MCP(2 alpha, gamma / 2): Keras' "mse" loss is
    # twice skglm's quadratic datafit.
    w = np.linspace(-3.0, 3.0, 61)
    np.testing.assert_allclose(
        to_numpy(kerasreg.MCP(0.8, 1.5)(w)), 2 * value_MCP(w, 0.4, 3.0), rtol=1e-15
    )


def test_configuration_names_and_errors():
    for reg in (kerasreg.MCP(0.1, 2.5), kerasreg.SCAD(0.2, 3.0)):
        assert type(reg).from_config(reg.get_config()) == reg
        assert type(reg.strength) is float and type(reg.gamma) is float
    assert kerasreg.MCP(0.1).get_config() == {
        "strength": 0.1,
        "gamma": 3.0,
        "gamma_unit": "strength",
    }
    assert kerasreg.SCAD().get_config() == {
        "strength": 0.01,
        "gamma": 3.7,
        "gamma_unit": "strength",
    }
    # Configurations written before `gamma_unit` existed load in the classic unit.
    assert kerasreg.MCP.from_config({"strength": 0.1, "gamma": 2.5}) == kerasreg.MCP(0.1, 2.5)
    assert kerasreg.regularizers.get("mcp") == kerasreg.MCP()
    assert kerasreg.regularizers.get("MCP") == kerasreg.MCP()
    assert kerasreg.regularizers.get("scad") == kerasreg.SCAD()
    cases = [
        (
            lambda: kerasreg.MCP(gamma=0.0),
            "`gamma`: expected a float in (0, inf). Received: gamma=0.0",
        ),
        (
            lambda: kerasreg.MCP(gamma=-1),
            "`gamma`: expected a float in (0, inf). Received: gamma=-1",
        ),
        (
            lambda: kerasreg.SCAD(gamma=2.0),
            "`gamma`: expected a float in (2, inf) (with gamma_unit='strength'). "
            "Received: gamma=2.0",
        ),
        (
            lambda: kerasreg.SCAD(gamma=1.5),
            "`gamma`: expected a float in (2, inf) (with gamma_unit='strength'). "
            "Received: gamma=1.5",
        ),
        (
            lambda: kerasreg.MCP(strength=-0.1),
            "`strength`: expected a non-negative finite float. Received: strength=-0.1",
        ),
        (
            lambda: kerasreg.SCAD(strength=True),
            "`strength`: expected a non-negative finite float. Received: strength=True",
        ),
        (
            lambda: kerasreg.SCAD.from_config({"strength": 0.1, "gamma": 2}),
            "`gamma`: expected a float in (2, inf) (with gamma_unit='strength'). Received: gamma=2",
        ),
        (
            lambda: kerasreg.MCP(gamma_unit="rms"),
            "`gamma_unit`: expected one of ['strength', 'glorot']. Received: gamma_unit='rms'",
        ),
        (
            lambda: kerasreg.SCAD(0.1, 1.0, "glorot")(np.ones((64, 300))),
            "`gamma`: expected the flat point, gamma times the Glorot scale 0.07412 of a weight "
            "of shape (64, 300), beyond twice the strength 0.1. Received: gamma=1.0",
        ),
        (
            lambda: kerasreg.MCP().prox(np.ones(3), -1.0),
            "`step`: expected a non-negative finite float or a tensor. Received: step=-1.0",
        ),
        (
            lambda: kerasreg.SCAD().prox(np.ones(3), float("inf")),
            "`step`: expected a non-negative finite float or a tensor. Received: step=inf",
        ),
        (
            lambda: prox.prox_scad(np.ones(3), 1.0, 0.1, 2.0),
            "`gamma`: expected a float in (2, inf). Received: gamma=2.0",
        ),
        (
            lambda: prox.prox_mcp(np.ones(3), float("nan"), 0.1, 3.0),
            "`step`: expected a non-negative finite float or a tensor. Received: step=nan",
        ),
    ]
    for make, message in cases:
        with pytest.raises(kerasreg.InvalidArgumentError) as info:
            make()
        assert str(info.value) == f"Invalid value for argument {message}"


# Fits against skglm, in float64, on problems whose objective is convex:
# the smallest eigenvalue of X^T X / n exceeds 1 / gamma (MCP) or
# 1 / (gamma - 1) (SCAD), so both solvers must find the one minimiser.


@pytest.fixture
def float64():
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")


def regression_problem():
    rng = np.random.default_rng(3)
    n, p = 200, 10
    x = rng.normal(size=(n, p))
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    true = np.array([2.0, -1.5, 1.0, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0])
    y = x @ true + 0.5 * rng.normal(size=n)
    return x, y


class _HalfSquaredError(keras.losses.Loss):
    """`sum((y - y_pred) ** 2) / (2 n)` over a batch of `n`, summed in float64."""

    def __init__(self, n):
        super().__init__(reduction="sum")
        self.n = n

    def call(self, y_true, y_pred):
        return keras.ops.sum(keras.ops.square(y_true - y_pred), axis=-1) / (2.0 * self.n)


def keras_fit(x, y, regularizer, learning_rate, steps):
    layer = keras.layers.EinsumDense(
        "ab,bc->ac", 1, kernel_regularizer=regularizer, kernel_initializer="zeros"
    )
    model = keras.Sequential([keras.Input((x.shape[1],)), layer])
    model.compile(
        optimizer=kerasreg.ProximalOptimizer(keras.optimizers.SGD(learning_rate)),
        loss=_HalfSquaredError(len(x)),
        steps_per_execution=1 if BACKEND == "torch" else 100,
    )
    model.fit(FullBatch(x, y[:, None], steps), epochs=1, verbose=0)
    w = to_numpy(layer.kernel)[:, 0]
    assert w.dtype == np.float64
    return w


# skglm's solutions of `regression_problem()` with alpha = 0.1:
# `MCPRegression(0.1, 3.0, fit_intercept=False, tol=1e-12)` and
# `GeneralizedLinearEstimator(Quadratic(), SCAD(0.1, 3.7), AndersonCD(tol=1e-12,
# fit_intercept=False))`. Numba compiles skglm's solvers for about 25 s, so
# they run once each, on one backend (their results do not depend on it), in
# `test_skglm_solutions_are_current`; the fits on every backend compare with them.
SKGLM_SOLUTIONS = {
    "mcp": (
        3.0,
        [2.0155750428184795, -1.4856500019712586, 1.0024888640714755, 0.5344449994857529]
        + [0.2514572384037579, 0.0, 0.0, 0.0, 0.0, 0.0],
    ),
    "scad": (
        3.7,
        [2.0170358966746558, -1.4870670303297027, 1.0023148843063088, 0.5381984691767453]
        + [0.20676233439497285, 0.0, 0.0, 0.0, 0.0, 0.0],
    ),
}
ALPHA = 0.1


# Each reference is refitted on one backend only, a different one for each.
REFIT_ON = {"mcp": "tensorflow", "scad": "torch"}


@pytest.mark.parametrize("name", ["mcp", "scad"])
def test_skglm_solutions_are_current(name):
    if BACKEND != REFIT_ON[name]:
        pytest.skip(
            f"skglm's solution does not depend on the Keras backend and its solver takes ~20 s "
            f"to compile: refitted on {REFIT_ON[name]} only; every backend's fit is compared "
            "with it"
        )
    from skglm import GeneralizedLinearEstimator
    from skglm import MCPRegression
    from skglm.datafits import Quadratic
    from skglm.penalties import SCAD
    from skglm.solvers import AndersonCD

    x, y = regression_problem()
    gamma, expected = SKGLM_SOLUTIONS[name]
    solver = dict(tol=1e-12, max_iter=1000, max_epochs=100_000, fit_intercept=False)
    if name == "mcp":
        model = MCPRegression(ALPHA, gamma, **solver)
    else:
        model = GeneralizedLinearEstimator(Quadratic(), SCAD(ALPHA, gamma), AndersonCD(**solver))
    model.fit(x, y)
    expected = np.array(expected)
    np.testing.assert_array_equal(model.coef_ == 0, expected == 0)
    np.testing.assert_allclose(model.coef_, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["mcp", "scad"])
def test_fit_matches_skglm(float64, name):
    x, y = regression_problem()
    n = len(x)
    gamma, reference = SKGLM_SOLUTIONS[name]
    reference = np.array(reference)
    smallest = np.linalg.eigvalsh(x.T @ x / n).min()
    if name == "mcp":
        assert smallest > 1 / gamma
        regularizer, value, values = kerasreg.MCP(ALPHA, gamma), value_MCP, mcp_values
    else:
        assert smallest > 1 / (gamma - 1)
        regularizer, value, values = kerasreg.SCAD(ALPHA, gamma), value_SCAD, scad_values
    # A step below 1 / L and below gamma (gamma - 1): plain proximal gradient.
    w = keras_fit(x, y, regularizer, learning_rate=0.5, steps=200)

    def total(coefficients):
        return np.sum((y - x @ coefficients) ** 2) / (2 * n) + value(coefficients, ALPHA, gamma)

    # Sparsity as exact zeros.
    np.testing.assert_array_equal(w == 0, reference == 0)
    assert np.count_nonzero(w) == 5
    assert abs(total(w) - total(reference)) <= 1e-6 * total(reference)
    np.testing.assert_allclose(w, reference, atol=1e-6)
    # Stationarity, which on this convex problem certifies the minimum: the
    # data gradient cancels the penalty's slope, which is 0 beyond gamma alpha
    # (no shrinkage there) and at most alpha in magnitude at the zeros.
    gradient = x.T @ (x @ w - y) / n
    support = w != 0
    h = 1e-7
    slope = (values(w + h, ALPHA, gamma) - values(w - h, ALPHA, gamma)) / (2 * h)
    np.testing.assert_allclose(gradient[support] + slope[support], 0.0, atol=1e-6)
    assert np.all(np.abs(gradient[~support]) <= ALPHA)
    assert np.all(slope[np.abs(w) > gamma * ALPHA] == 0)


def test_adam_steps_past_the_bound_give_exact_zeros(rng):
    # Adam's per-coordinate steps (up to lr / epsilon) exceed gamma: the
    # proxes take the non-convex branch and still return finite weights.
    x = rng.normal(size=(64, 6)).astype("float32")
    y = x[:, :2] @ np.array([[1.5], [-2.0]], "float32")
    for reg in (kerasreg.MCP(0.1, 1.5), kerasreg.SCAD(0.1, 2.5)):
        model = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(1, kernel_regularizer=reg, use_bias=False)]
        )
        model.compile(optimizer=kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.05)), loss="mse")
        model.fit(FullBatch(x, y, 150), verbose=0)
        w = to_numpy(model.layers[0].kernel)[:, 0]
        assert np.all(np.isfinite(w))
        assert np.count_nonzero(w[2:]) == 0
        np.testing.assert_allclose(w[:2], [1.5, -2.0], atol=0.1)


# `gamma_unit="glorot"`: the flat point in units of the initial weights' RMS.


@pytest.mark.backend_neutral
@pytest.mark.parametrize("shape", [(7,), (64, 300), (300, 100), (3, 3, 16, 32), (128, 4, 32)])
def test_glorot_scale_is_the_rms_of_keras_default_initializer(shape):
    from keras.src.initializers.random_initializers import compute_fans

    from kerasreg.regularizers.nonconvex import _glorot_scale

    fan_in, fan_out = compute_fans(shape)
    assert _glorot_scale(shape) == pytest.approx(np.sqrt(2.0 / (fan_in + fan_out)), rel=1e-12)
    # And what glorot_uniform draws: U(-l, l), l = sqrt(6 / (fan_in + fan_out)).
    sample = to_numpy(keras.initializers.GlorotUniform(seed=0)(shape))
    if sample.size >= 10_000:
        assert np.sqrt(np.mean(sample**2)) == pytest.approx(_glorot_scale(shape), rel=0.02)


@pytest.mark.parametrize("cls", [kerasreg.MCP, kerasreg.SCAD])
@pytest.mark.parametrize("shape", [(64, 300), (3, 3, 8, 16)])
def test_glorot_unit_is_the_classic_penalty_with_gamma_scaled_per_weight(rng, cls, shape):
    sigma = np.sqrt(2.0 / (np.prod(shape[:-2]) * (shape[-2] + shape[-1])))
    strength, gamma = 1e-3, 0.8
    w = rng.normal(scale=sigma, size=shape).astype("float32")
    steps = rng.uniform(0.0, 2.0, size=shape).astype("float32")
    scaled = cls(strength, gamma, gamma_unit="glorot")
    # The oracle: the classic parameterization, flat at gamma * sigma.
    classic = cls(strength, gamma * sigma / strength)
    values = mcp_values if cls is kerasreg.MCP else scad_values
    expected = values(w.astype("float64"), strength, gamma * sigma / strength).sum()
    np.testing.assert_allclose(float(to_numpy(scaled(w))), expected, rtol=1e-5)
    np.testing.assert_allclose(
        to_numpy(scaled.penalty_gradient(w)), to_numpy(classic.penalty_gradient(w)), rtol=1e-6
    )
    np.testing.assert_array_equal(to_numpy(scaled.prox(w, steps)), to_numpy(classic.prox(w, steps)))
    assert cls.from_config(scaled.get_config()) == scaled


@pytest.mark.parametrize("cls", [kerasreg.MCP, kerasreg.SCAD])
def test_glorot_unit_flat_point_does_not_move_with_the_strength(cls):
    shape = (64, 300)
    sigma = np.sqrt(2.0 / (64 + 300))
    w = np.array([0.5, 1.5, 3.0]) * sigma  # below, past and far past the flat point
    w = np.resize(w, shape).astype("float32")
    for strength in (1e-5, 1e-4, 1e-3):
        reg = cls(strength, gamma=1.2, gamma_unit="glorot")
        gradient = to_numpy(reg.penalty_gradient(w))
        # Beyond 1.2 sigma the penalty is flat: no gradient, and the prox
        # (a step small enough to keep the problem convex) leaves the weight.
        past = np.abs(w) > 1.2 * sigma
        assert np.all(gradient[past] == 0) and np.all(gradient[~past] > 0)
        np.testing.assert_array_equal(to_numpy(reg.prox(w, 1.0))[past], w[past])
    # In the classic unit the same gamma puts the flat point at gamma * strength.
    assert np.all(to_numpy(cls(1e-3, gamma=2.5).penalty_gradient(w)) == 0)


def test_glorot_unit_trains_saves_and_loads(tmp_path, rng):
    x = rng.normal(size=(128, 16)).astype("float32")
    y = x[:, :2].sum(axis=1, keepdims=True)
    # Flat beyond sqrt(2 / 17) = 0.34 for this (16, 1) kernel, below the true 1.0.
    reg = kerasreg.MCP(5e-2, gamma=1.0, gamma_unit="glorot")
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(1, kernel_regularizer=reg)])
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    kernel = to_numpy(model.layers[0].kernel)[:, 0]
    assert np.all(kernel[2:] == 0)  # the support, exactly
    # Past the flat point nothing is shrunk: the least-squares fit on the support.
    support, *_ = np.linalg.lstsq(x[:, :2], y[:, 0], rcond=None)
    np.testing.assert_allclose(kernel[:2], support, atol=1e-3)
    model.save(tmp_path / "mcp.keras")
    loaded = keras.models.load_model(tmp_path / "mcp.keras")
    assert loaded.layers[0].kernel_regularizer == reg
