"""Closed-form penalty gradients against the backend's automatic differentiation.

`ProximalOptimizer` subtracts a regularizer's `penalty_gradient` from the
loss gradient, into which the backend's autodiff put the penalty's gradient:
the two must agree to the last bit, zeros' signs included. Every comparison
with autodiff here is bitwise (`assert_same_bits`), on whichever backend runs
the suite; only the comparison with Keras' own regularizers on float64
weights is looser, for reasons of Keras' coefficients (see that test).
"""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kerasreg
from kerasreg import _autodiff
from tests.conftest import BACKEND
from tests.conftest import to_numpy

FLOATS = ["float32", "float64"]
HALVES = ["float16", "bfloat16"]
# Magnitudes whose squares underflow to 0 (or to subnormals) in each dtype.
TINY = {"float16": 1e-4, "bfloat16": 1e-30, "float32": 1e-30, "float64": 1e-200}
STRENGTHS = [0.0, 0.01, 0.1, 0.3, 1.0, 1.7, 3e-7]
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def bits(x):
    """The raw bits of a tensor, so that 0.0 and -0.0 (and NaNs) differ."""
    x = to_numpy(x)
    return x.view(UINT[x.dtype.itemsize])


def assert_same_bits(actual, expected):
    actual, expected = to_numpy(actual), to_numpy(expected)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(bits(actual), bits(expected))


def autodiff(regularizer, x):
    """The gradient the backend puts into the loss gradient for `regularizer(x)`."""
    return _autodiff.gradients(lambda values: regularizer(values[0]), [x])[0]


def weights(shape, dtype):
    """Hypothesis arrays of `shape` mixing ordinary values, 0, -0.0 and tiny values."""
    tiny = TINY[dtype]
    elements = st.one_of(
        st.floats(-4.0, 4.0, width=32),
        st.sampled_from([0.0, -0.0, tiny, -tiny, 3.5 * tiny]),
    )
    return hnp.arrays("float64", shape, elements=elements)


def tensor(array, dtype):
    return keras.ops.convert_to_tensor(np.asarray(array), dtype=dtype)


def check(regularizer, array, dtype):
    x = tensor(array, dtype)
    gradient = regularizer.penalty_gradient(x)
    assert_same_bits(gradient, autodiff(regularizer, x))


ELEMENTWISE = [
    lambda s, r: kerasreg.L1(s),
    lambda s, r: kerasreg.L2(s),
    lambda s, r: kerasreg.ElasticNet(s, r),
    # The second argument picks gamma: 0.5 to 4.5 for MCP, 2.5 to 6.5 for SCAD.
    lambda s, r: kerasreg.MCP(s, 0.5 + 4.0 * r),
    lambda s, r: kerasreg.SCAD(s, 2.5 + 4.0 * r),
]
ELEMENTWISE_IDS = ["L1", "L2", "ElasticNet", "MCP", "SCAD"]


@pytest.mark.parametrize("dtype", FLOATS + HALVES)
@pytest.mark.parametrize("make", ELEMENTWISE, ids=ELEMENTWISE_IDS)
@settings(max_examples=6)
@given(
    data=st.data(),
    strength=st.sampled_from(STRENGTHS),
    l1_ratio=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
)
def test_elementwise_gradients_match_autodiff(make, dtype, data, strength, l1_ratio):
    array = data.draw(weights((4, 5), dtype))
    check(make(strength, l1_ratio), array, dtype)


@pytest.mark.parametrize("dtype", FLOATS + HALVES)
@pytest.mark.parametrize("make", ELEMENTWISE, ids=ELEMENTWISE_IDS)
def test_elementwise_gradients_at_special_values(make, dtype):
    tiny = TINY[dtype]
    array = np.array([0.0, -0.0, tiny, -tiny, 1.0, -2.5, np.inf, -np.inf, np.nan])
    for strength in (0.0, 0.1):
        check(make(strength, 0.5), array, dtype)


GROUPINGS = [
    ((7,), [0, -1, ()]),
    ((5, 3), [-1, 0, (), (0, 1)]),  # a Dense kernel
    ((3, 3, 2, 4), [-1, 0, (-2, -1), (0, 1), ()]),  # a Conv2D kernel
]
GROUP_CASES = [(shape, axis) for shape, axes in GROUPINGS for axis in axes]


def with_zero_groups(array, group_axis, draw):
    """`array` with some of its groups set to 0, to -0.0 or to tiny values."""
    rank = array.ndim
    axes = (group_axis,) if isinstance(group_axis, int) else group_axis
    axes = tuple(a % rank for a in axes)
    array = np.array(array)
    index = tuple(
        draw(st.integers(0, array.shape[a] - 1)) if a in axes else slice(None) for a in range(rank)
    )
    array[index] = draw(st.sampled_from([0.0, -0.0, 1e-30, -1e-200]))
    return array


@pytest.mark.parametrize("dtype", FLOATS + HALVES)
@pytest.mark.parametrize(("shape", "group_axis"), GROUP_CASES)
@settings(max_examples=3)
@given(data=st.data(), strength=st.sampled_from(STRENGTHS))
def test_group_lasso_gradient_matches_autodiff(shape, group_axis, dtype, data, strength):
    array = data.draw(weights(shape, dtype))
    if data.draw(st.booleans()):
        array = with_zero_groups(array, group_axis, data.draw)
    check(kerasreg.GroupLasso(strength, group_axis=group_axis), array, dtype)


@pytest.mark.parametrize("dtype", FLOATS + HALVES)
def test_group_lasso_gradient_at_special_groups(dtype):
    tiny = TINY[dtype]
    array = np.array(
        [
            [0.0, -0.0, 0.0, 1.0, np.nan, np.inf],
            [-0.0, -0.0, tiny, 0.0, 1.0, 2.0],
            [0.0, 0.0, -tiny, -0.0, 0.5, -3.0],
        ]
    )
    for strength in (0.0, 0.1):
        check(kerasreg.GroupLasso(strength, group_axis=-1), array, dtype)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="only TensorFlow traces unknown sizes")
@pytest.mark.parametrize("dtype", FLOATS)
def test_group_lasso_gradient_with_group_size_unknown_when_traced(rng, dtype):
    import tensorflow as tf

    regularizer = kerasreg.GroupLasso(0.3, group_axis=-1)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], dtype)])
    def both(x):
        return regularizer.penalty_gradient(x), autodiff(regularizer, x)

    array = rng.normal(size=(5, 3)).astype(dtype)
    array[:, 1] = 0.0
    gradient, expected = both(tf.constant(array))
    assert_same_bits(gradient, expected)


@pytest.mark.parametrize("dtype", FLOATS + HALVES)
def test_magnitude_pruning_gradient_is_zero(rng, dtype):
    regularizer = kerasreg.MagnitudePruning(0.5)
    x = tensor(rng.normal(size=(3, 4)), dtype)
    assert_same_bits(regularizer.penalty_gradient(x), autodiff(regularizer, x))
    assert_same_bits(regularizer.penalty_gradient(x), keras.ops.zeros_like(x))


def coupled_penalty(strength, dtypes):
    """A `CoupledGroupLasso` over a Dense kernel, its bias and a Conv2D kernel."""
    kernel = keras.Variable(np.zeros((4, 6)), dtype=dtypes[0])
    bias = keras.Variable(np.zeros((6,)), dtype=dtypes[1])
    conv = keras.Variable(np.zeros((2, 2, 6, 3)), dtype=dtypes[2])
    pairs = np.array([[0, 3], [1, 4]])  # channels of two entries each
    singles = np.array([[2], [5]])
    groups = [
        [(kernel, 1, pairs), (bias, 0, pairs), (conv, 2, pairs)],
        [(kernel, 1, singles), (bias, 0, singles)],
    ]
    return kerasreg.CoupledGroupLasso(strength, groups), [kernel, bias, conv]


@pytest.mark.parametrize(
    "dtypes",
    [
        ("float32",) * 3,
        ("float64",) * 3,
        ("float16",) * 3,
        ("bfloat16",) * 3,
        ("float32", "float16", "float32"),
    ],
)
@settings(max_examples=5)
@given(data=st.data(), strength=st.sampled_from(STRENGTHS))
def test_coupled_gradients_match_autodiff(dtypes, data, strength):
    penalty, variables = coupled_penalty(strength, dtypes)
    values = []
    for variable, dtype in zip(variables, dtypes, strict=True):
        array = data.draw(weights(tuple(variable.shape), dtype))
        if data.draw(st.booleans()):  # zero channel 0 of every group member
            array = np.moveaxis(array, 2 if array.ndim == 4 else -1, 0).copy()
            array[[0, 3, 2]] = data.draw(st.sampled_from([0.0, -0.0, TINY[dtype]]))
            array = np.moveaxis(array, 0, 2 if array.ndim == 4 else -1)
        values.append(tensor(array, dtype))
    gradients = penalty.gradients(values)
    expected = _autodiff.gradients(penalty, values)
    for gradient, reference in zip(gradients, expected, strict=True):
        assert_same_bits(gradient, reference)


KERAS_CASES = [
    (keras.regularizers.L1, {"l1": 0.01}),
    (keras.regularizers.L1, {"l1": 0.3}),
    (keras.regularizers.L2, {"l2": 0.01}),
    (keras.regularizers.L2, {"l2": 0.3}),
    (keras.regularizers.L1L2, {"l1": 0.25, "l2": 0.75}),
    (keras.regularizers.L1L2, {"l1": 0.01, "l2": 0.02}),
    (keras.regularizers.L1L2, {"l1": 0.0, "l2": 0.3}),
    (keras.regularizers.L1L2, {"l1": 0.3, "l2": 0.0}),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("cls", "kwargs"), KERAS_CASES)
def test_keras_regularizers_gradients_match(rng, cls, kwargs, dtype):
    """Keras' own L1, L2 and L1L2 put the same gradient into the loss as their kerasreg maps.

    Bitwise for float32 weights on every backend. For float64 weights only to
    float32 precision: Keras rounds its coefficients to float32 where kerasreg
    keeps the Python floats (Keras' `L1` stores a float32 tensor; on
    TensorFlow `ops.cast(0.01, "float64")` goes through float32 for `L2` and
    `L1L2` too), and `get` maps `L1L2(l1, l2)` to `ElasticNet(l1 + l2,
    l1 / (l1 + l2))`, whose coefficients in double precision can differ from
    `l1` and `l2` in the last bit.
    """
    keras_regularizer = cls(**kwargs)
    tiny = TINY[dtype]
    array = np.concatenate([rng.normal(size=20), [0.0, -0.0, tiny, -tiny]])
    x = tensor(array, dtype)
    ours = kerasreg.regularizers.get(keras_regularizer).penalty_gradient(x)
    if dtype == "float32":
        assert_same_bits(ours, autodiff(keras_regularizer, x))
    else:
        np.testing.assert_allclose(
            to_numpy(ours), to_numpy(autodiff(keras_regularizer, x)), rtol=1e-7
        )


class _CubedL1(kerasreg.ProximalRegularizer):
    """A user's own penalty without `penalty_gradient`: sum of |x|^3."""

    _parameter_constraints = {}

    def __init__(self):
        self._set_arguments()

    def __call__(self, x):
        return keras.ops.sum(keras.ops.abs(x) ** 3)

    def prox(self, x, step):
        return x


def test_own_regularizer_gets_the_autodiff_gradient():
    x = tensor([[-1.5, 0.0], [2.0, 0.5]], "float32")
    gradient = _CubedL1().penalty_gradient(x)
    expected = 3.0 * np.array([[-1.5, 0.0], [2.0, 0.5]]) * np.abs([[-1.5, 0.0], [2.0, 0.5]])
    np.testing.assert_allclose(to_numpy(gradient), expected, rtol=1e-6)
    assert_same_bits(gradient, autodiff(_CubedL1(), x))
