"""Regularizers: penalties against NumPy and Keras, prox, validation, `get`."""

import inspect
import itertools
import json
import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kerasreg
from kerasreg import prox
from kerasreg import regularizers
from kerasreg.regularizers import _lookup
from tests.conftest import BACKEND
from tests.conftest import to_numpy
from tests.conftest import value_and_grad
from tests.test_prox import assert_is_the_argmin
from tests.test_prox import group_argmin
from tests.test_prox import separable_argmin

SHAPES = [(5,), (4, 3), (3, 3, 2, 4)]
DTYPES = ["float32", "float64"]
RTOL = {"float32": 2e-6, "float64": 1e-13}

ALL_CLASSES = [
    regularizers.L1,
    regularizers.L2,
    regularizers.ElasticNet,
    regularizers.MCP,
    regularizers.SCAD,
    regularizers.GroupLasso,
]
EXAMPLES = [
    regularizers.L1(0.1),
    regularizers.L2(0.2),
    regularizers.ElasticNet(strength=0.3, l1_ratio=0.25),
    regularizers.GroupLasso(strength=0.05, group_axis=-1),
]


def np_group_lasso(w, strength, group_axis):
    axes = (group_axis,) if isinstance(group_axis, int) else group_axis
    keep = {a % w.ndim for a in axes}
    reduce_axes = tuple(a for a in range(w.ndim) if a not in keep)
    size = math.prod(w.shape[a] for a in reduce_axes)
    norms = np.sqrt(np.sum(w**2, axis=reduce_axes))
    return strength * math.sqrt(size) * np.sum(norms)


# (a) Penalties against NumPy.


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_penalties_match_numpy(rng, shape, dtype):
    w = rng.normal(size=shape).astype(dtype)
    w64 = w.astype("float64")
    expected = {
        "L1": 0.1 * np.sum(np.abs(w64)),
        "L2": 0.2 * np.sum(w64**2),
        "ElasticNet": 0.3 * (0.25 * np.sum(np.abs(w64)) + 0.75 * np.sum(w64**2)),
        "GroupLasso": np_group_lasso(w64, 0.05, -1),
    }
    for reg in EXAMPLES:
        value = reg(w)
        assert keras.backend.standardize_dtype(value.dtype) == dtype
        assert tuple(value.shape) == ()
        np.testing.assert_allclose(to_numpy(value), expected[type(reg).__name__], rtol=RTOL[dtype])


@pytest.mark.parametrize("reg", EXAMPLES, ids=lambda r: type(r).__name__)
def test_zero_weights_and_zero_strength_give_zero(rng, reg):
    assert float(to_numpy(reg(np.zeros((3, 4), "float32")))) == 0.0
    config = reg.get_config()
    config["strength" if "strength" in config else next(iter(config))] = 0.0
    zero = type(reg).from_config(config)
    w = rng.normal(size=(3, 4)).astype("float32")
    assert float(to_numpy(zero(w))) == 0.0
    # A zero strength makes the prox the identity.
    np.testing.assert_array_equal(to_numpy(zero.prox(w, 0.7)), w)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("reg", EXAMPLES, ids=lambda r: type(r).__name__)
def test_half_precision_keeps_dtype(rng, reg, dtype):
    w = rng.normal(size=(8, 4)) * 30.0  # squares overflow float16 sums
    w_half = keras.ops.cast(w, dtype)
    w_back = to_numpy(keras.ops.cast(w_half, "float64"))
    value = reg(w_half)
    assert keras.backend.standardize_dtype(value.dtype) == dtype
    soft = np.sign(w_back) * np.maximum(np.abs(w_back) - 0.5 * 0.1, 0)
    norms = np.linalg.norm(w_back, axis=0, keepdims=True)
    t_group = 0.5 * 0.05 * np.sqrt(8)
    expected, expected_prox = {
        "L1": (0.1 * np.abs(w_back).sum(), soft),
        "L2": (0.2 * np.square(w_back).sum(), w_back / (1 + 2 * 0.5 * 0.2)),
        "ElasticNet": (
            0.3 * (0.25 * np.abs(w_back).sum() + 0.75 * np.square(w_back).sum()),
            np.sign(w_back)
            * np.maximum(np.abs(w_back) - 0.5 * 0.3 * 0.25, 0)
            / (1 + 2 * 0.5 * 0.3 * 0.75),
        ),
        "GroupLasso": (
            np_group_lasso(w_back, 0.05, -1),
            np.maximum(1 - t_group / norms, 0) * w_back,
        ),
    }[type(reg).__name__]
    np.testing.assert_allclose(to_numpy(keras.ops.cast(value, "float32")), expected, rtol=1e-2)
    z = reg.prox(w_half, 0.5)
    assert keras.backend.standardize_dtype(z.dtype) == dtype
    np.testing.assert_allclose(
        to_numpy(keras.ops.cast(z, "float32")), expected_prox, rtol=1e-2, atol=1e-2
    )


# Keras' own regularizers as the oracle.


@pytest.mark.parametrize("dtype", DTYPES)
def test_l1_and_l2_equal_keras(rng, dtype):
    # Keras' L1 keeps its strength as a float32 tensor; ours keeps the Python
    # float, so on float64 weights the two agree to float32 precision only.
    rtol = {"float32": 2e-6, "float64": 2e-7}[dtype]
    w = rng.normal(size=(6, 5)).astype(dtype)
    for ours, theirs in [
        (regularizers.L1(0.1), keras.regularizers.L1(0.1)),
        (regularizers.L2(0.1), keras.regularizers.L2(0.1)),
        (regularizers.L1(), keras.regularizers.L1()),
        (regularizers.L2(), keras.regularizers.L2()),
    ]:
        np.testing.assert_allclose(to_numpy(ours(w)), to_numpy(theirs(w)), rtol=rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l1_ratio", [0.0, 0.2, 0.5, 1.0])
def test_elastic_net_equals_keras_l1l2(rng, dtype, l1_ratio):
    w = rng.normal(size=(6, 5)).astype(dtype)
    strength = 0.3
    ours = regularizers.ElasticNet(strength=strength, l1_ratio=l1_ratio)
    theirs = keras.regularizers.L1L2(l1=strength * l1_ratio, l2=strength * (1 - l1_ratio))
    # Some backends cast Keras' Python-float coefficients through float32.
    rtol = {"float32": 2e-6, "float64": 2e-7}[dtype]
    np.testing.assert_allclose(to_numpy(ours(w)), to_numpy(theirs(w)), rtol=rtol)


def test_elastic_net_ends_are_l1_and_l2(rng):
    w = rng.normal(size=(6, 5))
    l1_end = regularizers.ElasticNet(strength=0.3, l1_ratio=1.0)
    l2_end = regularizers.ElasticNet(strength=0.3, l1_ratio=0.0)
    np.testing.assert_allclose(to_numpy(l1_end(w)), to_numpy(regularizers.L1(0.3)(w)), rtol=1e-15)
    np.testing.assert_allclose(to_numpy(l2_end(w)), to_numpy(regularizers.L2(0.3)(w)), rtol=1e-15)
    np.testing.assert_array_equal(
        to_numpy(l1_end.prox(w, 0.5)), to_numpy(regularizers.L1(0.3).prox(w, 0.5))
    )
    np.testing.assert_allclose(
        to_numpy(l2_end.prox(w, 0.5)), to_numpy(regularizers.L2(0.3).prox(w, 0.5)), rtol=1e-15
    )


# Proximal operators of the classes.


@pytest.mark.parametrize("dtype", DTYPES)
def test_prox_matches_closed_forms(rng, dtype):
    w = rng.normal(size=(4, 6)).astype(dtype)
    step = 0.8
    w64 = w.astype("float64")
    soft = lambda x, t: np.sign(x) * np.maximum(np.abs(x) - t, 0)  # noqa: E731
    norms = np.linalg.norm(w64, axis=0, keepdims=True)
    t_group = step * 0.2 * math.sqrt(4)
    expected = {
        "L1": soft(w64, step * 0.1),
        "L2": w64 / (1 + 2 * step * 0.2),
        "ElasticNet": soft(w64, step * 0.3 * 0.25) / (1 + 2 * step * 0.3 * 0.75),
        "GroupLasso": np.where(norms > t_group, 1 - t_group / norms, 0) * w64,
    }
    regs = EXAMPLES[:3] + [regularizers.GroupLasso(0.2)]
    for reg in regs:
        z = reg.prox(w, step)
        assert keras.backend.standardize_dtype(z.dtype) == dtype
        np.testing.assert_allclose(
            to_numpy(z), expected[type(reg).__name__], rtol=RTOL[dtype], atol=1e-7
        )


def test_prox_accepts_per_coordinate_steps(rng):
    w = rng.normal(size=(4, 6))
    steps = rng.uniform(0.1, 2.0, size=(4, 6))
    l1 = regularizers.L1(0.3)
    np.testing.assert_allclose(
        to_numpy(l1.prox(w, steps)), to_numpy(prox.soft_threshold(w, 0.3 * steps))
    )
    enet = regularizers.ElasticNet(0.4, 0.5)
    np.testing.assert_allclose(
        to_numpy(enet.prox(w, steps)),
        to_numpy(prox.prox_elastic_net(w, 0.2 * steps, 0.2 * steps)),
    )
    # GroupLasso with per-coordinate steps solves the prox in diag(steps)^-1.
    group = regularizers.GroupLasso(0.4, group_axis=-1)
    np.testing.assert_allclose(
        to_numpy(group.prox(w, steps)),
        to_numpy(prox.block_soft_threshold_diagonal(w, 0.4 * 2.0, steps, axis=(0,))),
    )
    # ...which for equal steps is the scalar-step operator.
    np.testing.assert_allclose(
        to_numpy(group.prox(w, np.full((4, 6), 0.7))), to_numpy(group.prox(w, 0.7)), atol=1e-12
    )
    # A tensor step (a learning rate held in a variable) works too.
    # A float32 tensor step (a learning rate held in a float32 variable) works
    # on float64 weights; it enters with its float32 value.
    step = keras.ops.convert_to_tensor(np.float32(0.7), dtype="float32")
    np.testing.assert_allclose(
        to_numpy(l1.prox(w, step)), to_numpy(l1.prox(w, float(np.float32(0.7)))), rtol=1e-15
    )


def test_group_lasso_groups(rng):
    dense = rng.normal(size=(5, 3))
    unit_groups = regularizers.GroupLasso(1.0, group_axis=-1)
    input_groups = regularizers.GroupLasso(1.0, group_axis=0)
    np.testing.assert_allclose(
        to_numpy(unit_groups(dense)), math.sqrt(5) * np.linalg.norm(dense, axis=0).sum()
    )
    np.testing.assert_allclose(
        to_numpy(input_groups(dense)), math.sqrt(3) * np.linalg.norm(dense, axis=1).sum()
    )
    # A large step zeroes whole columns (units) or whole rows (inputs).
    z = to_numpy(unit_groups.prox(dense * [[1.0, 0.01, 1.0]], 0.1))
    assert np.all(z[:, 1] == 0) and np.all(z[:, [0, 2]] != 0)
    z = to_numpy(input_groups.prox(dense * [[1.0], [0.01], [1.0], [1.0], [1.0]], 0.1))
    assert np.all(z[1] == 0) and np.count_nonzero(np.all(z == 0, axis=1)) == 1
    conv = rng.normal(size=(3, 3, 2, 4))
    filters = regularizers.GroupLasso(0.5, group_axis=-1)
    np.testing.assert_allclose(to_numpy(filters(conv)), np_group_lasso(conv, 0.5, -1))
    pairs = regularizers.GroupLasso(0.5, group_axis=(-2, -1))
    np.testing.assert_allclose(to_numpy(pairs(conv)), np_group_lasso(conv, 0.5, (2, 3)))
    whole = regularizers.GroupLasso(0.5, group_axis=())
    np.testing.assert_allclose(
        to_numpy(whole(conv)), 0.5 * math.sqrt(conv.size) * np.linalg.norm(conv)
    )


def test_group_lasso_bad_axis_for_the_weight():
    reg = regularizers.GroupLasso(0.1, group_axis=2)
    expected = (
        "Invalid value for argument `group_axis`: expected distinct axes of a weight of "
        "rank 2 (shape (3, 4)). Received: group_axis=2"
    )
    with pytest.raises(ValueError) as info:
        reg(np.ones((3, 4), "float32"))
    assert str(info.value) == expected
    with pytest.raises(ValueError, match="`group_axis`"):
        reg.prox(np.ones((3, 4), "float32"), 0.1)


def test_group_lasso_gradient_is_finite_at_zero_groups():
    w = np.array([[0.0, 3.0], [0.0, 4.0]])
    reg = regularizers.GroupLasso(strength=0.5, group_axis=-1)
    value, grad = value_and_grad(reg, w)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, 0.5 * math.sqrt(2) * 5.0)
    # d/dw of s*sqrt(2)*|w_g| is s*sqrt(2)*w_g/|w_g|; zero on the zero group.
    np.testing.assert_allclose(grad[:, 0], 0.0)
    np.testing.assert_allclose(grad[:, 1], 0.5 * math.sqrt(2) * np.array([3.0, 4.0]) / 5.0)
    _, grad = value_and_grad(reg, np.zeros((2, 2)))
    np.testing.assert_array_equal(grad, 0.0)


def test_penalties_work_inside_layers_and_custom_layers(rng):
    reg = regularizers.ElasticNet(0.1, 0.5)
    layer = keras.layers.Dense(3, kernel_regularizer=reg)
    layer.build((None, 4))
    np.testing.assert_allclose(
        to_numpy(keras.ops.sum(layer.losses)), to_numpy(reg(layer.kernel)), rtol=1e-6
    )

    class TwoWeights(keras.layers.Layer):
        def build(self, input_shape):
            self.a = self.add_weight(shape=(input_shape[-1], 2), regularizer=kerasreg.L1(0.5))
            self.b = self.add_weight(
                shape=(2,), initializer="ones", regularizer=kerasreg.GroupLasso(0.5, group_axis=())
            )

        def call(self, x):
            return x @ self.a + self.b

    custom = TwoWeights()
    custom(np.ones((1, 3), "float32"))
    expected = 0.5 * np.abs(to_numpy(custom.a)).sum() + 0.5 * math.sqrt(2) * math.sqrt(2)
    np.testing.assert_allclose(to_numpy(keras.ops.sum(custom.losses)), expected, rtol=1e-6)


# Configuration and validation.


@pytest.mark.backend_neutral
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_constraint_table_matches_the_signature(cls):
    signature = inspect.signature(cls.__init__)
    arguments = [name for name in signature.parameters if name != "self"]
    assert sorted(arguments) == sorted(cls._parameter_constraints)
    assert sorted(cls().get_config()) == sorted(arguments)


@pytest.mark.backend_neutral
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_invalid_value_is_refused_with_a_clear_message(cls):
    for name, constraint in cls._parameter_constraints.items():
        for value in constraint.invalid_values():
            with pytest.raises((TypeError, ValueError)) as info:
                cls(**{name: value})
            message = str(info.value)
            assert message.startswith(f"Invalid value for argument `{name}`: expected ")
            assert message.endswith(f"Received: {name}={value!r}")
            # from_config validates exactly like __init__.
            config = cls().get_config()
            config[name] = value
            with pytest.raises(type(info.value)) as info_config:
                cls.from_config(config)
            assert str(info_config.value) == message


@pytest.mark.backend_neutral
def test_validation_messages():
    with pytest.raises(ValueError) as info:
        regularizers.ElasticNet(l1_ratio=1.5)
    assert str(info.value) == (
        "Invalid value for argument `l1_ratio`: expected a float in [0, 1]. Received: l1_ratio=1.5"
    )
    with pytest.raises(ValueError) as info:
        regularizers.L1(-0.1)
    assert str(info.value) == (
        "Invalid value for argument `l1`: expected a non-negative finite float. Received: l1=-0.1"
    )
    with pytest.raises(TypeError, match="Received: strength=True"):
        regularizers.GroupLasso(strength=True)
    with pytest.raises(TypeError, match="Received: l2='0.1'"):
        regularizers.L2("0.1")
    with pytest.raises(ValueError, match="Received: strength=nan"):
        regularizers.ElasticNet(strength=float("nan"))
    with pytest.raises(ValueError, match=r"Received: group_axis=\(1, 1\)"):
        regularizers.GroupLasso(group_axis=(1, 1))
    with pytest.raises(TypeError) as info:
        regularizers.L1.from_config({"l1": 0.1, "l2": 0.2})
    assert str(info.value) == (
        "Invalid arguments for `L1`: unexpected argument(s) ['l2']. Expected only ['l1']."
    )


@pytest.mark.backend_neutral
def test_config_holds_exact_python_floats():
    reg = regularizers.ElasticNet(strength=0.1, l1_ratio=0.3)
    config = reg.get_config()
    assert config == {"strength": 0.1, "l1_ratio": 0.3}
    assert all(type(v) is float for v in config.values())
    assert regularizers.L1(1).get_config() == {"l1": 1.0}
    assert regularizers.GroupLasso(0.1, group_axis=[0, 1]).get_config() == {
        "strength": 0.1,
        "group_axis": (0, 1),
    }
    for reg in EXAMPLES:
        assert type(reg).from_config(reg.get_config()) == reg
    assert regularizers.L1(0.1) != regularizers.L1(0.2)
    assert regularizers.L1(0.1) != regularizers.L2(0.1)
    assert repr(reg) == "GroupLasso(strength=0.05, group_axis=-1)"


# Conversion of Keras' regularizers.


def test_get_maps_keras_regularizers(rng):
    w = rng.normal(size=(4, 3)).astype("float32")
    cases = [
        (keras.regularizers.L1(0.1), regularizers.L1(0.1)),
        (keras.regularizers.L2(0.2), regularizers.L2(0.2)),
        (keras.regularizers.L1L2(l1=0.1), regularizers.L1(0.1)),
        (keras.regularizers.L1L2(l2=0.1), regularizers.L2(0.1)),
        (keras.regularizers.L1L2(l1=0.25, l2=0.75), regularizers.ElasticNet(1.0, 0.25)),
        (keras.regularizers.L1L2(l1=0.01, l2=0.02), None),
    ]
    for theirs, ours in cases:
        mapped = regularizers.get(theirs)
        assert isinstance(mapped, regularizers.ProximalRegularizer)
        if ours is not None:
            assert mapped == ours
        np.testing.assert_allclose(to_numpy(mapped(w)), to_numpy(theirs(w)), rtol=1e-6)


def test_get_other_identifiers():
    assert regularizers.get(None) is None
    reg = regularizers.L1(0.3)
    assert regularizers.get(reg) is reg
    assert regularizers.get("l1") == regularizers.L1()
    assert regularizers.get("elastic_net") == regularizers.ElasticNet()
    assert regularizers.get("GroupLasso") == regularizers.GroupLasso()
    assert regularizers.get("L1L2") == regularizers.L1(0.0)  # Keras' L1L2() is zero
    config = keras.saving.serialize_keras_object(regularizers.ElasticNet(0.2, 0.1))
    assert regularizers.get(config) == regularizers.ElasticNet(0.2, 0.1)
    keras_config = keras.saving.serialize_keras_object(keras.regularizers.L2(0.5))
    assert regularizers.get(keras_config) == regularizers.L2(0.5)

    class DuckTyped:
        def __call__(self, x):
            return keras.ops.sum(x)

        def prox(self, x, step):
            return x

    duck = DuckTyped()
    assert regularizers.get(duck) is duck


@pytest.mark.backend_neutral
def test_get_by_name_asks_for_exactly_the_arguments_defaults_cannot_supply():
    # `get(name)` builds from the defaults, and asks for the arguments
    # without one or declared required despite theirs: the declaration must
    # hold, or `get` would name the wrong argument or build an invalid object.
    assert _lookup._required_arguments(regularizers.MagnitudePruning) == ["final_sparsity"]
    for name, cls in _lookup._BY_NAME.items():
        required = _lookup._required_arguments(cls)
        assert set(required) <= set(cls._parameter_constraints)
        if not required:
            assert regularizers.get(name) == cls()
            continue
        with pytest.raises((TypeError, ValueError), match=required[0]):
            cls()
        with pytest.raises(kerasreg.InvalidArgumentError) as info:
            regularizers.get(name)
        assert str(info.value) == (
            "Invalid value for argument `identifier`: expected a name of a regularizer with "
            f"default arguments; {cls.__name__} needs {', '.join(required)}, so pass an "
            f"instance, e.g. kerasreg.{cls.__name__}({required[0]}=...). "
            f"Received: identifier={name!r}"
        )


@pytest.mark.parametrize(
    "identifier",
    [
        keras.regularizers.OrthogonalRegularizer(0.1),
        lambda w: keras.ops.sum(w),
        "no_such_regularizer",
        3.0,
    ],
    ids=["orthogonal", "function", "unknown_name", "number"],
)
def test_get_refuses_regularizers_without_a_prox(identifier):
    with pytest.raises(ValueError) as info:
        regularizers.get(identifier)
    message = str(info.value)
    assert message.startswith("Invalid value for argument `identifier`: expected ")
    assert message.endswith(f"Received: identifier={identifier!r}")


def test_backend_is_the_one_requested():
    # Guards the backend matrix: a run meant for one backend must not
    # silently run on another.
    import os

    assert BACKEND == os.environ.get("KERAS_BACKEND", "tensorflow")


def test_negative_or_nan_python_step_is_refused():
    for reg in EXAMPLES:
        for step in (-1.0, float("nan")):
            with pytest.raises(ValueError, match="Invalid value for argument `step`"):
                reg.prox(np.ones((2, 3), "float32"), step)


def test_group_lasso_with_unknown_dimensions_in_fit(rng):
    # As an activity regularizer the batch dimension is unknown while tracing.
    x = rng.normal(size=(64, 4)).astype("float32")
    y = rng.normal(size=(64, 3)).astype("float32")
    reg = regularizers.GroupLasso(0.01, group_axis=-1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activity_regularizer=reg)])
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # Eager value against NumPy: each output column of a batch is a group of
    # size batch; Keras divides activity penalties by the batch size.
    out = to_numpy(model.layers[0](x))
    expected = 0.01 * np.sqrt(64) * np.linalg.norm(out.astype("float64"), axis=0).sum()
    np.testing.assert_allclose(to_numpy(reg(out)), expected, rtol=1e-5)


def test_group_lasso_duplicate_axes_for_the_weight_are_refused():
    reg = regularizers.GroupLasso(0.1, group_axis=(0, -2))
    with pytest.raises(ValueError, match="expected distinct axes"):
        reg(np.ones((3, 4), "float32"))


def test_magnitude_pruning_schedule_is_zhu_and_gupta():
    reg = regularizers.MagnitudePruning(
        0.9, begin_step=100, end_step=600, initial_sparsity=0.1, power=3.0
    )
    for t in (0, 100, 101, 250, 599, 600, 10**6):
        progress = min(max((t - 100) / 500, 0.0), 1.0)
        expected = 0.9 + (0.1 - 0.9) * (1 - progress) ** 3
        assert reg.sparsity_at(t) == pytest.approx(expected, abs=1e-15)
        tensor = to_numpy(reg.sparsity_at(keras.ops.convert_to_tensor(t, "int32")))
        assert float(tensor) == pytest.approx(expected, abs=1e-6)


def test_magnitude_pruning_penalty_prox_and_state(rng):
    reg = regularizers.MagnitudePruning(0.75, begin_step=0, end_step=10, frequency=4)
    w = rng.permutation(np.arange(1, 21, dtype="float32")).reshape(4, 5)
    assert float(to_numpy(reg(w))) == 0.0  # a constraint, not a penalty
    z = to_numpy(reg.prox(w, 0.1))
    np.testing.assert_array_equal(z, np.where(w > 15, w, 0))  # final sparsity
    (mask,) = reg.prox_state(w)
    np.testing.assert_array_equal(to_numpy(mask), np.ones_like(w))
    state = (mask,)
    masks = []
    for t in range(13):
        step = keras.ops.convert_to_tensor(t, "int32")
        z, state = reg.prox_update(w, 0.1, step, state)
        z, mask = to_numpy(z), to_numpy(state[0])
        np.testing.assert_array_equal(z, np.where(mask > 0, w, 0))
        masks.append(mask)
    # Recomputed at steps 0, 4, 8 and at end_step 10; held in between and after.
    for t in range(13):
        recompute = t in (0, 4, 8, 10)
        last = max(s for s in (0, 4, 8, 10) if s <= t)
        zeros = round(reg.sparsity_at(last) * w.size)
        assert np.count_nonzero(masks[t] == 0) == zeros, t
        if not recompute and t > 0:
            np.testing.assert_array_equal(masks[t], masks[t - 1])


@pytest.mark.backend_neutral
def test_magnitude_pruning_arguments():
    reg = regularizers.MagnitudePruning(0.8, begin_step=5, end_step=50, frequency=10)
    config = reg.get_config()
    assert config == {
        "final_sparsity": 0.8,
        "begin_step": 5,
        "end_step": 50,
        "initial_sparsity": 0.0,
        "frequency": 10,
        "power": 3.0,
        "structure": None,
        "group_axis": None,
        "round_to": 1,
        "scope": "layer",
    }
    assert regularizers.MagnitudePruning.from_config(config) == reg
    for name, constraint in regularizers.MagnitudePruning._parameter_constraints.items():
        for value in constraint.invalid_values():
            arguments = dict(config, **{name: value})
            if name == "final_sparsity" and isinstance(value, float) and value == 1.0:
                continue
            with pytest.raises((TypeError, ValueError)) as info:
                regularizers.MagnitudePruning(**arguments)
            assert str(info.value).startswith(f"Invalid value for argument `{name}`")
            assert str(info.value).endswith(f"Received: {name}={value!r}")
            with pytest.raises(type(info.value)):
                regularizers.MagnitudePruning.from_config(arguments)
    with pytest.raises(ValueError, match="argument `end_step`: expected an int >= begin_step=5"):
        regularizers.MagnitudePruning(0.5, begin_step=5, end_step=4)
    with pytest.raises(ValueError, match="argument `initial_sparsity`: expected a float <= "):
        regularizers.MagnitudePruning(0.5, initial_sparsity=0.6)


def test_magnitude_pruning_scope_argument():
    reg = regularizers.MagnitudePruning(0.8, begin_step=5, end_step=50, scope="global")
    assert reg.get_config()["scope"] == "global" and reg.shares_prox
    assert regularizers.MagnitudePruning.from_config(reg.get_config()) == reg
    assert reg != regularizers.MagnitudePruning(0.8, begin_step=5, end_step=50)
    assert not regularizers.MagnitudePruning(0.8).shares_prox
    with pytest.raises(ValueError) as info:
        regularizers.MagnitudePruning(0.8, scope="x")
    assert str(info.value) == (
        "Invalid value for argument `scope`: expected one of ['layer', 'global']. "
        "Received: scope='x'"
    )
    for pattern in ({"structure": (2, 4)}, {"group_axis": -1}):
        with pytest.raises(kerasreg.InvalidArgumentError, match="`scope`: expected 'layer'"):
            regularizers.MagnitudePruning(0.5, scope="global", **pattern)


def test_global_magnitude_pruning_ranks_all_the_weights_together(rng):
    # Three weights of different scales: one threshold over their 62 entries
    # (NumPy's top-k), not 80% of each; masks held between turns.
    reg = regularizers.MagnitudePruning(
        0.8, begin_step=0, end_step=4, frequency=2, power=1.0, scope="global"
    )
    ws = [
        rng.normal(size=shape) * scale
        for shape, scale in (((6, 5), 1.0), ((4, 6), 0.3), ((8,), 0.01))
    ]
    ws = [w.astype("float32") for w in ws]
    states = [reg.prox_state(w) for w in ws]
    for t in range(6):
        iteration = keras.ops.convert_to_tensor(t, "int32")
        values, states = reg.prox_update_many(ws, [0.1] * 3, iteration, states)
        masks = [to_numpy(mask) > 0 for (mask,) in states]
        turn = min(t - t % 2, 4)
        flat = np.concatenate([np.abs(w).ravel() for w in ws])
        count = round(reg.sparsity_at(turn) * flat.size)
        keep = np.ones(flat.size, bool)
        keep[np.argsort(flat)[:count]] = False
        np.testing.assert_array_equal(np.concatenate([m.ravel() for m in masks]), keep)
        for w, mask, value in zip(ws, masks, values, strict=True):
            np.testing.assert_array_equal(to_numpy(value), np.where(mask, w, 0))
    fractions = [float(np.mean(~mask)) for mask in masks]
    assert fractions[2] == 1.0 and fractions[0] < 0.8  # the small weight goes first
    # Outside an optimizer, the prox projects one weight alone.
    assert np.count_nonzero(to_numpy(reg.prox(ws[0], 0.1)) == 0) == 24


def test_global_magnitude_pruning_ranks_float64_in_float64():
    # Magnitudes below float32's range still rank: 1e-200 outlives the zeros.
    reg = regularizers.MagnitudePruning(0.5, begin_step=0, end_step=0, scope="global")
    ws = [np.array([1e-200, 0.0]), np.array([0.0, 3e-200, 0.0, 2e-200])]
    states = [reg.prox_state(w) for w in ws]
    zero = keras.ops.convert_to_tensor(0, "int32")
    values, _ = reg.prox_update_many(ws, [0.1, 0.1], zero, states)
    np.testing.assert_array_equal(to_numpy(values[0]), ws[0])
    np.testing.assert_array_equal(to_numpy(values[1]), ws[1])


def test_layer_scope_prox_update_many_is_each_weights_prox_update(rng):
    reg = regularizers.MagnitudePruning(0.5, begin_step=0, end_step=0)
    ws = [rng.normal(size=(4, 5)).astype("float32"), rng.normal(size=(3,)).astype("float32")]
    iteration = keras.ops.convert_to_tensor(0, "int32")
    values, states = reg.prox_update_many(
        ws, [0.1, 0.1], iteration, [reg.prox_state(w) for w in ws]
    )
    for w, value, (mask,) in zip(ws, values, states, strict=True):
        expected, (expected_mask,) = reg.prox_update(w, 0.1, iteration, reg.prox_state(w))
        np.testing.assert_array_equal(to_numpy(value), to_numpy(expected))
        np.testing.assert_array_equal(to_numpy(mask), to_numpy(expected_mask))


def test_magnitude_pruning_one_shot_and_applied_sparsity(rng):
    one_shot = regularizers.MagnitudePruning(0.5, begin_step=3, end_step=3, frequency=1)
    assert [one_shot.sparsity_at(t) for t in (2, 3, 4)] == [0.0, 0.5, 0.5]
    assert float(to_numpy(one_shot.sparsity_at(keras.ops.convert_to_tensor(3)))) == 0.5
    w = rng.normal(size=(4, 5)).astype("float32")
    state = one_shot.prox_state(w)
    for t in range(6):
        z, state = one_shot.prox_update(w, 0.1, keras.ops.convert_to_tensor(t, "int32"), state)
        assert np.count_nonzero(to_numpy(z) == 0) == (10 if t >= 3 else 0)
    # The mask in force after n steps: from the last turn (t = 10, 15, 20, 25).
    reg = regularizers.MagnitudePruning(0.9, begin_step=10, end_step=25, frequency=5)
    assert [reg.applied_sparsity(n) for n in (0, 10)] == [0.0, 0.0]
    for n, turn in ((11, 10), (15, 10), (16, 15), (25, 20), (26, 25), (100, 25)):
        assert reg.applied_sparsity(n) == reg.sparsity_at(turn), n


def _blocks(w, m):
    """The blocks of `m` along the input axis of a Dense kernel, one per row."""
    return np.moveaxis(w, -2, -1).reshape(-1, m)


def test_magnitude_pruning_n_m_schedule_goes_block_by_block(rng):
    reg = regularizers.MagnitudePruning(
        structure=(2, 4), begin_step=0, end_step=4, frequency=1, power=1.0
    )
    w = rng.permutation(np.arange(1, 25, dtype="float32")).reshape(8, 3)
    state = reg.prox_state(w)
    zeros = []
    for t in range(6):
        z, state = reg.prox_update(w, 0.1, keras.ops.convert_to_tensor(t, "int32"), state)
        blocks, z_blocks = _blocks(w, 4), _blocks(to_numpy(z), 4)
        count = np.count_nonzero(z_blocks == 0, axis=1)
        assert len(set(count)) == 1, t  # every block alike
        zeros.append(int(count[0]))
        # The survivors are each block's largest.
        smallest = np.sort(blocks, axis=1)[:, : count[0]]
        assert np.all(np.isin(smallest, blocks * (z_blocks == 0)))
    # round(s_t * 4) with s_t = 0.5 t / 4: 0, 0.5 -> 0, 1, 1.5 -> 2, 2.
    assert zeros == [0, 0, 1, 2, 2, 2]
    np.testing.assert_array_equal(to_numpy(z), to_numpy(reg.prox(w, 0.1)))


def test_magnitude_pruning_groups_schedule_and_round_to(rng):
    reg = regularizers.MagnitudePruning(
        0.6, begin_step=0, end_step=2, frequency=1, power=1.0, group_axis=-1, round_to=4
    )
    w = rng.normal(size=(3, 16)).astype("float32")
    norms = np.linalg.norm(w, axis=0)
    state = reg.prox_state(w)
    kept = []
    for t in range(3):
        z, state = reg.prox_update(w, 0.1, keras.ops.convert_to_tensor(t, "int32"), state)
        z = to_numpy(z)
        alive = np.any(z != 0, axis=0)
        np.testing.assert_array_equal(z, np.where(alive, w, 0))
        assert np.min(norms[alive]) > np.max(norms[~alive], initial=0.0)
        kept.append(int(np.count_nonzero(alive)))
    # 16 - round(s_t * 16) rounded up to a multiple of 4: 16, 16 - 5 = 11 -> 12, 6 -> 8.
    assert kept == [16, 12, 8]
    z = to_numpy(reg.prox(w, 0.1))
    assert np.count_nonzero(np.any(z != 0, axis=0)) == 8


def test_magnitude_pruning_pattern_errors():
    mp = regularizers.MagnitudePruning
    cases = [
        (
            lambda: mp(structure=(4, 4)),
            "Invalid value for argument `structure`: expected a pair (n, m) of ints with "
            "1 <= n < m or None. Received: structure=(4, 4)",
        ),
        (
            lambda: mp(),
            "Invalid value for argument `final_sparsity`: expected a float in [0, 1] (it may "
            "be left out only with a `structure`). Received: final_sparsity=None",
        ),
        (
            lambda: mp(0.6, structure=(2, 4)),
            "Invalid value for argument `final_sparsity`: expected (m - n) / m = 0.5 for "
            "structure=(2, 4), or None. Received: final_sparsity=0.6",
        ),
        (
            lambda: mp(structure=(2, 4), group_axis=-1),
            "Invalid value for argument `group_axis`: expected None with a `structure` "
            "(N:M blocks run along the input axis). Received: group_axis=-1",
        ),
        (
            lambda: mp(0.5, round_to=8),
            "Invalid value for argument `round_to`: expected 1 without a `group_axis`. "
            "Received: round_to=8",
        ),
        (
            lambda: mp(structure=(2, 4)).prox_state(keras.Variable(np.ones((6, 3)))),
            "Invalid value for argument `structure`: expected blocks of m=4 that divide the "
            "input axis (axis -2, length 6) of the weight of shape (6, 3). "
            "Received: structure=(2, 4)",
        ),
        (
            lambda: mp(structure=(1, 4)).prox(np.ones(6, "float32"), 0.1),
            "Invalid value for argument `structure`: expected blocks of m=4 that divide the "
            "input axis (axis 0, length 6) of the weight of shape (6,). "
            "Received: structure=(1, 4)",
        ),
        (
            lambda: mp(0.5, group_axis=-1, round_to=8).prox_state(np.ones((16, 4))),
            "Invalid value for argument `round_to`: expected at most the number of groups, "
            "4 along group_axis=-1 of the weight of shape (16, 4). Received: round_to=8",
        ),
        (
            lambda: mp(0.5, group_axis=2).prox(np.ones((3, 4), "float32"), 0.1),
            "Invalid value for argument `group_axis`: expected distinct axes of a weight of "
            "rank 2 (shape (3, 4)). Received: group_axis=2",
        ),
    ]
    for make, message in cases:
        with pytest.raises(kerasreg.InvalidArgumentError) as info:
            make()
        assert str(info.value) == message
    assert mp(1.0 / 3.0, structure=(2, 3)).final_sparsity == 1.0 / 3.0


def test_magnitude_pruning_pattern_config_round_trip():
    for reg in (
        regularizers.MagnitudePruning(structure=[2, 4], end_step=10),
        regularizers.MagnitudePruning(0.5, structure=(2, 4)),
        regularizers.MagnitudePruning(0.5, group_axis=[0, 1], round_to=8),
    ):
        config = reg.get_config()
        assert sorted(config) == sorted(inspect.signature(type(reg)).parameters)
        restored = regularizers.MagnitudePruning.from_config(json.loads(json.dumps(config)))
        assert restored == reg and hash(restored) == hash(reg)
        assert restored.structure is None or restored.structure == (2, 4)
    assert repr(regularizers.MagnitudePruning(structure=[2, 4])).endswith(
        "structure=(2, 4), group_axis=None, round_to=1)"
    )


# Hypothesis properties of every regularizer, with hyperparameters drawn in
# their valid ranges. The numerical oracles are scipy minimizers in NumPy
# (see `tests/test_prox.py`); objectives are evaluated with each class's own
# penalty, `__call__`, so that each prox is tied to the penalty it claims.

strengths = st.floats(0.0, 5.0)


def convex_regularizers(group_axes=(-1, 0, (), (0, 1))):
    """L1, L2, ElasticNet and GroupLasso, hyperparameters in their valid ranges.

    `group_axes` are GroupLasso's layouts on a matrix; by default columns,
    rows, the whole weight and each entry (plain L1).
    """
    return st.one_of(
        st.builds(regularizers.L1, l1=strengths),
        st.builds(regularizers.L2, l2=strengths),
        st.builds(regularizers.ElasticNet, strength=strengths, l1_ratio=st.floats(0.0, 1.0)),
        st.builds(
            regularizers.GroupLasso, strength=strengths, group_axis=st.sampled_from(group_axes)
        ),
    )


# MagnitudePruning is a constraint (at most k non-zeros, a non-convex set):
# its penalty is zero and its prox is the projection onto that set.
every_regularizer = st.one_of(
    convex_regularizers(),
    st.builds(regularizers.MagnitudePruning, final_sparsity=st.floats(0.0, 1.0)),
)
matrices = hnp.arrays("float64", (2, 3), elements=st.floats(-5.0, 5.0))
# A scalar step, or one step per coordinate (as adaptive optimizers give).
prox_steps = st.one_of(
    st.floats(0.0, 3.0),
    hnp.arrays("float64", (2, 3), elements=st.floats(0.05, 3.0)),
)


def group_reduce_axes(group_axis, ndim):
    """The axes each group spans: all but `group_axis`."""
    axes = (group_axis,) if isinstance(group_axis, int) else group_axis
    keep = {a % ndim for a in axes}
    return tuple(a for a in range(ndim) if a not in keep)


def numerical_prox(reg, x, scale, weights):
    r"""Numerical :math:`\operatorname{argmin}_z \sum_i w_i (z_i - x_i)^2 / 2 + c R(z)`.

    :math:`R` transcribed from the class docstrings, with its
    hyperparameters; `scale` is :math:`c`, `weights` :math:`w`.
    """
    config = reg.get_config()
    if isinstance(reg, regularizers.L1):
        return separable_argmin(x, scale * config["l1"], 0.0, weights)
    if isinstance(reg, regularizers.L2):
        return separable_argmin(x, 0.0, scale * config["l2"], weights)
    if isinstance(reg, regularizers.ElasticNet):
        strength, ratio = config["strength"], config["l1_ratio"]
        return separable_argmin(
            x, scale * strength * ratio, scale * strength * (1.0 - ratio), weights
        )
    axes = group_reduce_axes(config["group_axis"], x.ndim)
    size = math.prod(x.shape[a] for a in axes)
    return group_argmin(x, scale * config["strength"] * math.sqrt(size), axes, weights)


def metric(step):
    """(weights, scale) of the prox objective `sum(w (z - x)^2) / 2 + c R(z)`.

    A scalar step s gives |z - x|^2 / 2 + s R(z); one step per coordinate
    gives the objective in the metric diag(s)^-1, sum((z - x)^2 / (2 s)) + R(z)
    (for the separable penalties, the same argmin as a threshold s_i per
    coordinate).
    """
    if np.ndim(step) == 0:
        return 1.0, step
    return 1.0 / step, 1.0


@settings(max_examples=30)
@given(reg=convex_regularizers(), x=matrices, step=prox_steps)
def test_prox_is_the_argmin_of_its_own_penalty(reg, x, step):
    weights, scale = metric(step)
    z = to_numpy(reg.prox(x, step))

    def objective(v):
        return 0.5 * np.sum(weights * (v - x) ** 2) + scale * float(to_numpy(reg(v)))

    assert_is_the_argmin(objective, z, numerical_prox(reg, x, scale, weights), weights)


@settings(max_examples=20)
@given(
    final_sparsity=st.floats(0.0, 1.0),
    x=hnp.arrays("float64", 6, elements=st.floats(-4.0, 4.0), unique=True),
    step=st.floats(0.0, 3.0),
)
def test_magnitude_pruning_prox_is_the_nearest_sparse_weight(final_sparsity, x, step):
    # Its penalty is zero, so "argmin of |z - x|^2 / 2 + step R(z)" would be
    # x; the prox is instead the projection onto the final sparsity, for any
    # step. Brute force over supports (distinct values; the operator's ties
    # are tested in `tests/test_prox.py`).
    reg = regularizers.MagnitudePruning(final_sparsity)
    keep = 6 - round(final_sparsity * 6)
    z = to_numpy(reg.prox(x, step))
    assert np.count_nonzero(z) <= keep
    best = min(
        np.sum(np.delete(x, list(support)) ** 2)
        for support in itertools.combinations(range(6), keep)
    )
    if len(np.unique(np.abs(x))) == 6:
        np.testing.assert_allclose(np.sum((z - x) ** 2), best, rtol=1e-12, atol=0)


@settings(max_examples=30)
@given(reg=convex_regularizers(), a=matrices, b=matrices, step=prox_steps)
def test_prox_is_non_expansive(reg, a, b, step):
    # In the metric of the step: Euclidean for a scalar step, diag(s)^-1 for
    # one step per coordinate. (MagnitudePruning's projection onto a
    # non-convex set is not: it jumps where two magnitudes swap ranks.)
    weights, _ = metric(step)

    def distance(u, v):
        return np.sqrt(np.sum(weights * (u - v) ** 2))

    za, zb = to_numpy(reg.prox(a, step)), to_numpy(reg.prox(b, step))
    assert distance(za, zb) <= distance(a, b) * (1 + 1e-12) + 1e-12


@settings(max_examples=40)
@given(
    # Group columns only: every operator in float32 without compiling each
    # group layout again (JAX); the layouts are covered in float64 above.
    reg=convex_regularizers(group_axes=(-1,)),
    x=hnp.arrays("float64", (2, 3), elements=st.floats(-5.0, 5.0, width=32)),
    step=st.one_of(
        st.floats(0.0, 3.0, width=32),
        hnp.arrays("float64", (2, 3), elements=st.floats(0.0625, 3.0, width=32)),
    ),
)
def test_prox_in_float32_agrees_with_float64(reg, x, step):
    # The same float32 values in both dtypes. Each prox shrinks its input and
    # is 1-Lipschitz, so float32 rounding moves it by a few float32 ulps of
    # the input's magnitude (plus the smallest normal float32, for results
    # flushed to zero). MagnitudePruning's projection is exact in every
    # dtype: see `test_project_sparsity_matches_numpy` in test_prox.py.
    z32 = to_numpy(reg.prox(x.astype("float32"), step))
    z64 = to_numpy(reg.prox(x, step))
    assert z32.dtype == np.float32 and z64.dtype == np.float64
    f32 = np.finfo("float32")
    atol = 4 * f32.eps * np.max(np.abs(x)) + f32.tiny
    np.testing.assert_allclose(z32, z64, rtol=0, atol=atol)


@given(reg=every_regularizer, a=matrices, b=matrices, theta=st.floats(0.0, 1.0))
def test_penalties_are_non_negative_and_convex(reg, a, b, theta):
    # For MagnitudePruning the penalty is identically zero (the constraint
    # is enforced by its prox, not by the loss), which passes trivially; the
    # constraint set itself is not convex, and no penalty claims it is.
    def penalty(w):
        return float(to_numpy(reg(w)))

    assert penalty(np.zeros((2, 3))) == 0.0
    r_a, r_b = penalty(a), penalty(b)
    assert r_a >= 0.0 and r_b >= 0.0
    bound = theta * r_a + (1.0 - theta) * r_b
    assert penalty(theta * a + (1.0 - theta) * b) <= bound + 1e-12 * (1.0 + bound)
