"""Proximal operators against closed forms, optimality conditions and scipy."""

import itertools

import keras
import numpy as np
import pytest
import scipy.optimize
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kerasreg import prox
from tests.conftest import to_numpy

SHAPES = [(7,), (3, 4), (2, 3, 5)]
DTYPES = ["float32", "float64"]
TOL = {"float32": 1e-5, "float64": 1e-12}


def np_soft_threshold(x, t):
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def np_block_soft_threshold(x, t, axis):
    norm = np.sqrt(np.sum(x**2, axis=axis, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(norm > t, 1.0 - t / norm, 0.0)
    return scale * x


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_soft_threshold_matches_numpy(rng, shape, dtype):
    x = rng.normal(size=shape).astype(dtype)
    for t in (0.0, 0.3, rng.uniform(0, 1, size=shape).astype(dtype)):
        z = to_numpy(prox.soft_threshold(x, t))
        assert z.dtype == np.dtype(dtype)
        np.testing.assert_allclose(z, np_soft_threshold(x, t), atol=TOL[dtype])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_squared_l2_and_elastic_net_match_closed_forms(rng, shape, dtype):
    x = rng.normal(size=shape).astype(dtype)
    a = rng.uniform(0, 0.5, size=shape).astype(dtype)
    b = 0.7
    np.testing.assert_allclose(
        to_numpy(prox.prox_squared_l2(x, b)), x / (1 + 2 * b), rtol=TOL[dtype]
    )
    np.testing.assert_allclose(
        to_numpy(prox.prox_elastic_net(x, a, b)),
        np_soft_threshold(x, a) / (1 + 2 * b),
        atol=TOL[dtype],
    )
    # The ends of the elastic net are the L1 and squared-L2 operators.
    np.testing.assert_array_equal(
        to_numpy(prox.prox_elastic_net(x, a, 0.0)), to_numpy(prox.soft_threshold(x, a))
    )
    np.testing.assert_allclose(
        to_numpy(prox.prox_elastic_net(x, 0.0, b)),
        to_numpy(prox.prox_squared_l2(x, b)),
        rtol=TOL[dtype],
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2), (1, 2)])
def test_block_soft_threshold_matches_numpy(rng, dtype, axis):
    x = rng.normal(size=(4, 3, 5)).astype(dtype)
    x[1] = 0.0  # an all-zero slice: zero groups for several axes
    t = 1.2
    z = to_numpy(prox.block_soft_threshold(x, t, axis=axis))
    assert z.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(z, np_block_soft_threshold(x, t, axis), atol=TOL[dtype])


def test_soft_threshold_satisfies_subgradient_condition(rng):
    # w - z must lie in t * d|z|: equal to t * sign(z) where z != 0, and in
    # [-t, t] where z == 0.
    w = rng.normal(size=200)
    t = 0.4
    z = to_numpy(prox.soft_threshold(w, t))
    nz = z != 0
    np.testing.assert_allclose((w - z)[nz], t * np.sign(z[nz]), atol=1e-12)
    assert np.all(np.abs((w - z)[~nz]) <= t + 1e-12)
    assert np.count_nonzero(z == 0) == np.count_nonzero(np.abs(w) <= t)


def test_block_soft_threshold_satisfies_subgradient_condition(rng):
    # For each group: w_g - z_g = t z_g / |z_g| if z_g != 0, |w_g| <= t if 0.
    w = rng.normal(size=(6, 10)) * rng.uniform(0.05, 1.0, size=(1, 10))
    t = 1.0
    z = to_numpy(prox.block_soft_threshold(w, t, axis=0))
    for g in range(w.shape[1]):
        norm = np.linalg.norm(z[:, g])
        if norm > 0:
            np.testing.assert_allclose(w[:, g] - z[:, g], t * z[:, g] / norm, atol=1e-12)
        else:
            assert np.linalg.norm(w[:, g]) <= t + 1e-12
    assert 0 < np.count_nonzero(np.all(z == 0, axis=0)) < w.shape[1]


def test_zero_group_gives_zero_never_nan():
    x = np.zeros((3, 4), dtype="float32")
    for t in (0.0, 1.0):
        for fn in (
            lambda v, t: prox.block_soft_threshold(v, t, axis=0),
            lambda v, t: prox.block_soft_threshold(v, t, axis=None),
            lambda v, t: prox.block_soft_threshold_diagonal(v, t, np.full((3, 4), 0.5), axis=0),
        ):
            z = to_numpy(fn(x, t))
            np.testing.assert_array_equal(z, np.zeros_like(x))


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: prox.soft_threshold(x, 0.5),
        lambda x: prox.prox_squared_l2(x, 0.5),
        lambda x: prox.prox_elastic_net(x, 0.5, 0.5),
        lambda x: prox.block_soft_threshold(x, 0.5, axis=0),
        lambda x: prox.block_soft_threshold_diagonal(x, 0.5, np.full((2, 3), 0.3), axis=0),
    ],
    ids=["soft", "squared_l2", "elastic_net", "block", "block_diagonal"],
)
def test_nan_is_never_hidden_as_zero(fn):
    x = np.array([[np.nan, 0.1, 2.0], [0.0, 0.1, -2.0]], dtype="float32")
    z = to_numpy(fn(x))
    assert np.isnan(z[0, 0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_keeps_dtype(dtype):
    x = keras.ops.cast(np.array([[300.0, -0.2], [400.0, 0.1]]), dtype)
    z = prox.block_soft_threshold(x, 1.0, axis=0)
    assert keras.backend.standardize_dtype(z.dtype) == dtype
    # Squares of 300 and 400 overflow float16; the norm must not.
    np.testing.assert_allclose(
        to_numpy(keras.ops.cast(z, "float32")), [[299.4, 0.0], [399.2, 0.0]], rtol=1e-2
    )
    z = prox.soft_threshold(x, 0.15)
    assert keras.backend.standardize_dtype(z.dtype) == dtype
    assert np.count_nonzero(to_numpy(keras.ops.cast(z, "float32"))) == 3


def _diagonal_objective(z, x, s, t):
    return np.sum((z - x) ** 2 / (2 * s)) + t * np.linalg.norm(z)


@pytest.mark.parametrize("seed", range(10))
def test_block_soft_threshold_diagonal_is_the_argmin(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=5)
    # Steps that differ by up to eight orders of magnitude (Adam's can).
    s = 10.0 ** rng.uniform(-6, 2, size=5)
    t = rng.uniform(0.1, 2.0)
    z = to_numpy(prox.block_soft_threshold_diagonal(x, t, s))
    if np.linalg.norm(x / s) <= t:
        np.testing.assert_array_equal(z, 0.0)
        return
    # Stationarity: (z - x) / s + t z / |z| = 0.
    norm = np.linalg.norm(z)
    np.testing.assert_allclose((z - x) / s + t * z / norm, 0.0, atol=1e-8)
    # And no numerical minimizer does better.
    best = scipy.optimize.minimize(
        _diagonal_objective,
        x,
        args=(x, s, t),
        method="Nelder-Mead",
        options={"xatol": 1e-12, "fatol": 1e-14, "maxiter": 40000},
    )
    assert _diagonal_objective(z, x, s, t) <= best.fun + 1e-9


def test_block_soft_threshold_diagonal_zero_test_and_uniform_case(rng):
    x = rng.normal(size=(8, 6))
    s = 10.0 ** rng.uniform(-2, 0, size=(8, 6))
    t = 1.5
    z = to_numpy(prox.block_soft_threshold_diagonal(x, t, s, axis=0))
    zero_groups = np.linalg.norm(x / s, axis=0) <= t
    np.testing.assert_array_equal(np.all(z == 0, axis=0), zero_groups)
    # A uniform step per group is plain block soft thresholding.
    uniform = np.full_like(x, 0.3)
    np.testing.assert_allclose(
        to_numpy(prox.block_soft_threshold_diagonal(x, t, uniform, axis=0)),
        to_numpy(prox.block_soft_threshold(x, 0.3 * t, axis=0)),
        atol=1e-12,
    )


finite = st.floats(-10, 10, allow_nan=False, width=64)
vectors = hnp.arrays("float64", st.integers(1, 12), elements=finite)


@given(
    pair=st.integers(1, 12).flatmap(
        lambda n: st.tuples(
            hnp.arrays("float64", n, elements=finite), hnp.arrays("float64", n, elements=finite)
        )
    ),
    t=st.floats(0, 5),
)
def test_operators_are_non_expansive(pair, t):
    a, b = pair
    for fn in (
        lambda v: prox.soft_threshold(v, t),
        lambda v: prox.prox_squared_l2(v, t),
        lambda v: prox.prox_elastic_net(v, t, t),
        lambda v: prox.block_soft_threshold(v, t),
    ):
        distance = np.linalg.norm(to_numpy(fn(a)) - to_numpy(fn(b)))
        assert distance <= np.linalg.norm(a - b) * (1 + 1e-12) + 1e-12


@given(t=st.floats(0, 5), shape=st.sampled_from([(3,), (2, 4)]))
def test_zero_maps_to_zero(t, shape):
    x = np.zeros(shape)
    for fn in (
        lambda v: prox.soft_threshold(v, t),
        lambda v: prox.prox_squared_l2(v, t),
        lambda v: prox.prox_elastic_net(v, t, t),
        lambda v: prox.block_soft_threshold(v, t, axis=0),
        lambda v: prox.block_soft_threshold_diagonal(v, t, np.ones(shape), axis=0),
    ):
        np.testing.assert_array_equal(to_numpy(fn(x)), x)


@given(x=vectors, steps=st.tuples(st.floats(0, 5), st.floats(0, 5)).map(sorted))
def test_larger_l1_threshold_never_gives_fewer_zeros(x, steps):
    small, large = steps
    zeros_small = np.count_nonzero(to_numpy(prox.soft_threshold(x, small)) == 0)
    zeros_large = np.count_nonzero(to_numpy(prox.soft_threshold(x, large)) == 0)
    assert zeros_large >= zeros_small


def test_nan_step_is_never_hidden_as_zero():
    x = np.array([[0.1, 3.0], [-0.2, 4.0]])
    steps = np.full_like(x, 0.5)
    steps[0, 0] = np.nan
    z = to_numpy(prox.block_soft_threshold_diagonal(x, 0.5, steps, axis=0))
    assert np.all(np.isnan(z[:, 0]))
    np.testing.assert_array_equal(np.isnan(z[:, 1]), False)


def test_zero_step_holds_its_coordinate_and_its_group():
    # With s_0 = 0 the first coordinate cannot move, so the group cannot be
    # zeroed however large the threshold; the other coordinate still shrinks.
    x = np.array([1e-3, 1.0])
    z = to_numpy(prox.block_soft_threshold_diagonal(x, 1e5, np.array([0.0, 1.0])))
    assert z[0] == x[0]
    assert 0 < abs(z[1]) < 1e-6


def test_zero_threshold_is_the_identity_even_for_tiny_groups():
    x = np.array([[1e-25, 2e-25], [1e-25, 1.0]], dtype="float32")
    np.testing.assert_array_equal(to_numpy(prox.block_soft_threshold(x, 0.0, axis=0)), x)


def np_project_sparsity(x, sparsity):
    """Oracle: zero the round(s n) smallest magnitudes (distinct magnitudes)."""
    flat = x.ravel().copy()
    count = int(round(sparsity * flat.size))
    flat[np.argsort(np.abs(flat), kind="stable")[:count]] = 0.0
    return flat.reshape(x.shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES + ["float16"])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_project_sparsity_matches_numpy(rng, shape, dtype, sparsity):
    size = int(np.prod(shape))
    # Distinct magnitudes, exact in every dtype.
    x = rng.permutation(np.arange(1, size + 1) / 8) * rng.choice([-1.0, 1.0], size=size)
    x = x.reshape(shape).astype(dtype)
    z = to_numpy(prox.project_sparsity(x, sparsity))
    assert z.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(z, np_project_sparsity(x, sparsity))
    assert np.count_nonzero(z == 0) == round(sparsity * x.size)


def test_project_sparsity_ties_and_tensor_levels():
    x = np.array([0.0, 0.0, 1.0, -1.0, 2.0], "float32")
    # Removing 3 entries: both magnitudes 1.0 tie with the third; both go.
    np.testing.assert_array_equal(to_numpy(prox.project_sparsity(x, 0.6)), [0, 0, 0, 0, 2])
    level = keras.ops.convert_to_tensor(np.float32(0.8))
    np.testing.assert_array_equal(to_numpy(prox.project_sparsity(x, level)), [0, 0, 0, 0, 2])
    with pytest.raises(ValueError, match="argument `sparsity`"):
        prox.project_sparsity(x, 1.5)
    for bad in (True, "0.5"):
        with pytest.raises(TypeError, match="argument `sparsity`"):
            prox.project_sparsity(x, bad)
    empty = np.zeros((0, 3), "float32")
    assert to_numpy(prox.project_sparsity(empty, 0.5)).shape == (0, 3)


# Hypothesis properties. Each operator is the argmin of the objective its
# docstring states: scipy minimizes that objective numerically (in NumPy,
# independently of kerasreg) and the operator's output must do at least as
# well. The objectives of the convex operators are 1-strongly convex (in the
# norm of their metric), so the numerical point must also be as close to the
# operator's output as its excess objective allows. Shapes are fixed so that
# JAX compiles each operator once.


def separable_argmin(x, a, b, weights=1.0):
    r"""Numerical argmin of a separable objective, by scipy.

    Minimizes :math:`\sum_i w_i (z_i - x_i)^2 / 2 + a_i |z_i| + b_i z_i^2`.
    Smooth reformulation: :math:`z = u - v` with :math:`u, v \ge 0` and
    :math:`|z_i|` replaced by :math:`u_i + v_i` (equal at the optimum), a
    bound-constrained quadratic program, solved by SLSQP from two starts.
    """
    shape = np.shape(x)
    x, a, b, w = (
        np.broadcast_to(np.asarray(v, "float64"), shape).ravel() for v in (x, a, b, weights)
    )
    n = x.size

    def objective(uv):
        u, v = uv[:n], uv[n:]
        z = u - v
        gradient = w * (z - x) + 2.0 * b * z
        value = 0.5 * np.sum(w * (z - x) ** 2) + a @ (u + v) + b @ z**2
        return value, np.concatenate([gradient + a, a - gradient])

    best = None
    for start in (x, np.zeros(n)):
        result = scipy.optimize.minimize(
            objective,
            np.concatenate([np.maximum(start, 0.0), np.maximum(-start, 0.0)]),
            jac=True,
            method="SLSQP",
            bounds=[(0.0, None)] * (2 * n),
            options={"ftol": 1e-15, "maxiter": 500},
        )
        if best is None or result.fun < best.fun:
            best = result
    return (best.x[:n] - best.x[n:]).reshape(shape)


def group_argmin(x, threshold, axis, weights=1.0):
    r"""Numerical argmin of a group-lasso objective, by scipy.

    Minimizes :math:`\sum_i w_i (z_i - x_i)^2 / 2 + \sum_g t_g \|z_g\|_2`,
    whose groups are the slices of `x` over `axis`, as `numpy.sum` reduces.
    The objective splits over groups; within one it is smooth except at
    :math:`z_g = 0`, so its minimizer is either that point or where BFGS,
    started from :math:`x_g`, converges: of these two starts, the better
    end point is kept.
    """
    weights = np.broadcast_to(np.asarray(weights, "float64"), x.shape)
    norm_shape = np.sum(x, axis=axis, keepdims=True).shape
    threshold = np.broadcast_to(np.asarray(threshold, "float64"), norm_shape).ravel()
    labels = np.broadcast_to(np.arange(threshold.size).reshape(norm_shape), x.shape)
    z = np.zeros_like(x)
    for group, t in enumerate(threshold):
        members = labels == group
        x_g, w_g = x[members], weights[members]

        def objective(v, x_g=x_g, w_g=w_g, t=t):
            norm = np.linalg.norm(v)
            gradient = w_g * (v - x_g) + (t * v / norm if norm > 0 else 0.0)
            return 0.5 * np.sum(w_g * (v - x_g) ** 2) + t * norm, gradient

        # Where the minimizer is zero, BFGS circles the kink: `maxiter` ends it.
        result = scipy.optimize.minimize(
            objective, x_g, jac=True, method="BFGS", options={"gtol": 1e-13, "maxiter": 60}
        )
        if result.fun < objective(np.zeros_like(x_g))[0]:
            z[members] = result.x
    return z


def group_objective(z, x, threshold, axis, weights=1.0):
    """`sum(weights (z - x)^2) / 2 + sum_g t_g |z_g|`, groups over `axis`."""
    norms = np.sqrt(np.sum(z**2, axis=axis, keepdims=True))
    return 0.5 * np.sum(weights * (z - x) ** 2) + np.sum(threshold * norms)


def assert_is_the_argmin(objective, z, numerical, weights=1.0):
    r"""`z` minimizes `objective`, 1-strongly convex in the norm :math:`\sum_i w_i v_i^2`.

    For its minimizer :math:`z` and any point :math:`y`, such an objective
    has :math:`F(y) \ge F(z) + \tfrac12 \sum_i w_i (y_i - z_i)^2`. So `z`
    cannot be beaten by the numerical point, which must lie as close to `z`
    as its excess objective allows. `eps` covers float64 rounding of `F`.
    """
    f_z, f_numerical = objective(z), objective(numerical)
    eps = 1e-12 * (1.0 + abs(f_numerical))
    assert f_z <= f_numerical + eps
    assert np.sum(weights * (numerical - z) ** 2) <= 2.0 * (f_numerical - f_z) + eps


def arrays(shape, low=-5.0, high=5.0):
    """Float64 arrays of a fixed shape (so that JAX compiles once)."""
    return hnp.arrays("float64", shape, elements=st.floats(low, high))


# Steps that differ by four orders of magnitude, as an adaptive optimizer's can.
diagonal_steps = hnp.arrays("float64", (2, 3), elements=st.floats(-3.0, 1.0).map(lambda e: 10.0**e))
group_axes = st.sampled_from([None, 0, 1])


def per_group(thresholds, axis):
    """One threshold per group of a (2, 3) array: slices of a (2, 3) draw."""
    norm_shape = np.sum(thresholds, axis=axis, keepdims=True).shape
    return thresholds[tuple(slice(0, n) for n in norm_shape)]


@settings(max_examples=30)
@given(x=arrays((2, 3)), t=arrays((2, 3), 0.0, 3.0))
def test_soft_threshold_is_the_argmin(x, t):
    z = to_numpy(prox.soft_threshold(x, t))
    objective = lambda v: 0.5 * np.sum((v - x) ** 2) + np.sum(t * np.abs(v))
    assert_is_the_argmin(objective, z, separable_argmin(x, t, 0.0))


@settings(max_examples=30)
@given(x=arrays((2, 3)), t=arrays((2, 3), 0.0, 3.0))
def test_prox_squared_l2_is_the_argmin(x, t):
    # The threshold multiplies z^2, not z^2 / 2: z = x / (1 + 2 t).
    z = to_numpy(prox.prox_squared_l2(x, t))
    objective = lambda v: 0.5 * np.sum((v - x) ** 2) + np.sum(t * v**2)
    assert_is_the_argmin(objective, z, separable_argmin(x, 0.0, t))


@settings(max_examples=30)
@given(x=arrays((2, 3)), a=arrays((2, 3), 0.0, 3.0), b=arrays((2, 3), 0.0, 3.0))
def test_prox_elastic_net_is_the_argmin(x, a, b):
    z = to_numpy(prox.prox_elastic_net(x, a, b))
    objective = lambda v: 0.5 * np.sum((v - x) ** 2) + np.sum(a * np.abs(v) + b * v**2)
    assert_is_the_argmin(objective, z, separable_argmin(x, a, b))


@settings(max_examples=25)
@given(x=arrays((2, 3)), thresholds=arrays((2, 3), 0.0, 4.0), axis=group_axes)
def test_block_soft_threshold_is_the_argmin(x, thresholds, axis):
    t = per_group(thresholds, axis)
    z = to_numpy(prox.block_soft_threshold(x, t, axis=axis))
    objective = lambda v: group_objective(v, x, t, axis)
    assert_is_the_argmin(objective, z, group_argmin(x, t, axis))


@settings(max_examples=20)
@given(x=arrays((2, 3)), t=st.floats(0.0, 4.0), s=diagonal_steps, axis=st.sampled_from([0, 1]))
def test_block_soft_threshold_diagonal_is_the_argmin_in_its_metric(x, t, s, axis):
    # The objective is sum((z - x)^2 / (2 s)) + t sum_g |z_g|: 1-strongly
    # convex in the norm weighted by 1 / s.
    z = to_numpy(prox.block_soft_threshold_diagonal(x, t, s, axis=axis))
    objective = lambda v: group_objective(v, x, t, axis, 1.0 / s)
    assert_is_the_argmin(objective, z, group_argmin(x, t, axis, 1.0 / s), 1.0 / s)


@settings(max_examples=25)
@given(x=arrays(6, -4.0, 4.0))
@example(x=np.array([0.3, -1.2, 2.5, -0.7, 1.9, 0.05]))
def test_project_sparsity_is_the_nearest_sparse_tensor(x):
    # Brute force over every support of size k: the projection is optimal.
    # Drawn vectors include ties and zeros; the docstring removes magnitudes
    # tied with the last one removed together, and only then is it not the
    # nearest point.
    magnitudes = np.sort(np.abs(x))
    for k in range(7):
        best = min(
            np.sum(np.delete(x, list(support)) ** 2)
            for support in itertools.combinations(range(6), k)
        )
        z = to_numpy(prox.project_sparsity(x, (6 - k) / 6))
        assert np.count_nonzero(z) <= k
        assert np.all((z == x) | (z == 0))
        kept, removed = np.abs(x[z != 0]), np.abs(x[z == 0])
        assert kept.size == 0 or kept.min() > removed.max(initial=0.0)
        removed_count = 6 - k
        cut = magnitudes[removed_count - 1] if 0 < removed_count < 6 else None
        if cut is None or cut == 0 or cut < magnitudes[removed_count]:
            np.testing.assert_allclose(np.sum((z - x) ** 2), best, rtol=1e-12, atol=0)


# N:M and group sparsity: NumPy oracles that rank by sorting, independent of
# the operators' comparison counts and argsorts.


def np_project_n_m(x, n, m, axis):
    """Keeps the `n` largest magnitudes of each block (earlier first among ties)."""
    moved = np.moveaxis(x, axis, -1)
    blocks = moved.reshape(-1, m)
    keep = np.zeros(blocks.shape, bool)
    order = np.argsort(-np.abs(blocks), axis=1, kind="stable")[:, :n]
    np.put_along_axis(keep, order, True, axis=1)
    kept = np.where(keep, blocks, 0.0).reshape(moved.shape)
    return np.moveaxis(kept, -1, axis)


@st.composite
def n_m_problems(draw):
    """(x, n, m, axis): a 1-D weight, a Dense or a Conv2D kernel, blocks on its input axis."""
    # Few shapes: eager JAX compiles each operation once per shape.
    m = draw(st.sampled_from([2, 4]))
    n = draw(st.integers(1, m - 1))
    shape = draw(st.sampled_from([(8,), (8, 2), (2, 1, 8, 3)]))
    # Few distinct magnitudes: ties within blocks are common.
    elements = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 2.0]), st.floats(-4.0, 4.0, width=32))
    x = draw(hnp.arrays("float32", shape, elements=elements))
    return x, n, m, -2 if len(shape) >= 2 else 0


@settings(max_examples=20)
@given(problem=n_m_problems())
def test_project_n_m_keeps_the_n_largest_of_each_block(problem):
    x, n, m, axis = problem
    z = to_numpy(prox.project_n_m(x, n, m, axis))
    assert z.dtype == x.dtype
    np.testing.assert_array_equal(z, np_project_n_m(x, n, m, axis))
    np.testing.assert_array_equal(to_numpy(prox.project_n_m(z, n, m, axis)), z)  # idempotent
    # The Euclidean projection: each block's distance is the least over all
    # C(m, n) supports (a sum over blocks, as the constraint decouples).
    blocks = np.moveaxis(x.astype("float64"), axis, -1).reshape(-1, m)
    best = sum(
        min(np.sum(np.delete(b, list(s)) ** 2) for s in itertools.combinations(range(m), n))
        for b in blocks
    )
    np.testing.assert_allclose(np.sum((z.astype("float64") - x) ** 2), best, rtol=1e-12)


def test_project_n_m_ties_nan_and_arguments():
    z = to_numpy(prox.project_n_m(np.ones((2, 4), "float32"), 1, 4))
    np.testing.assert_array_equal(z, [[1, 0, 0, 0], [1, 0, 0, 0]])  # the earliest of a tie
    z = to_numpy(prox.project_n_m(np.array([np.nan, 3.0, 2.0, 1.0]), 2, 4))
    assert np.isnan(z[0]) and z[1] == 3.0 and np.count_nonzero(z[2:]) == 0  # never hidden
    with pytest.raises(ValueError, match=r"argument `m`: expected a divisor .* \(3, 6\)"):
        prox.project_n_m(np.ones((3, 6)), 2, 4)
    with pytest.raises(ValueError, match="argument `n`: expected an int in"):
        prox.project_n_m(np.ones(4), 5, 4)


def np_project_group_sparsity(x, sparsity, group_axis, round_to):
    """Keeps the largest-norm groups; `group_axis` lays them out."""
    moved = np.moveaxis(x, group_axis, 0)
    norms = np.sqrt(np.sum(moved.reshape(len(moved), -1).astype("float64") ** 2, axis=1))
    groups = len(norms)
    kept = groups - int(np.round(np.float32(sparsity) * np.float32(groups)))
    kept = min(-(-kept // round_to) * round_to, groups)
    keep = np.zeros(groups, bool)
    keep[np.argsort(-norms, kind="stable")[:kept]] = True
    shape = [1] * x.ndim
    shape[group_axis] = groups
    return np.where(keep.reshape(shape), x, 0.0), kept


@settings(max_examples=30)
@given(
    x=hnp.arrays("float32", (3, 2, 12), elements=st.floats(-4.0, 4.0, width=32), unique=True),
    group_axis=st.sampled_from([0, -1]),
    sparsity=st.floats(0.0, 1.0),
    round_to=st.integers(1, 5),
)
def test_project_group_sparsity_keeps_the_largest_norm_groups(x, group_axis, sparsity, round_to):
    groups = x.shape[group_axis]
    round_to = min(round_to, groups)
    axis = tuple(a for a in range(3) if a != group_axis % 3)
    z = to_numpy(prox.project_group_sparsity(x, sparsity, axis, round_to))
    expected, kept = np_project_group_sparsity(x, sparsity, group_axis, round_to)
    # Unique entries make ties between group norms all but impossible.
    np.testing.assert_array_equal(z, expected)
    zero = np.all(np.moveaxis(z, group_axis, 0).reshape(groups, -1) == 0, axis=1)
    assert groups - np.count_nonzero(zero) == kept
    assert kept % round_to == 0 or kept == groups
    assert kept >= groups - round(sparsity * groups) - 1  # never prunes more than asked (float32)
