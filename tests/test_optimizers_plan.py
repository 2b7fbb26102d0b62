"""The plan of `ProximalOptimizer` (`kerasreg/optimizers/_plan.py`) and its routes
(`_routes.py`), without training: labels per variable, the routes of one step,
and one route applied to tensors against NumPy."""

import keras
import numpy as np
import pytest

import kerasreg
from kerasreg.optimizers import _routes
from tests.conftest import BACKEND
from tests.conftest import to_numpy

# The fast path of each backend (`_backends.fast_path`): a variable whose
# penalty declares it is labelled with it; JAX has none.
FAST = {"tensorflow": "xla", "torch": "fused"}.get(BACKEND)


class _ShiftedL1(kerasreg.L1):
    """An L1 whose prox is its own: it inherits no fast-path declaration."""

    def prox(self, x, step):
        return super().prox(x, step) * 1.0


def _variable(name, regularizer, shape=(4, 3), seed=0):
    value = np.random.default_rng(seed).normal(size=shape).astype("float32")
    variable = keras.Variable(value, name=name)
    variable.regularizer = regularizer
    return variable


def _mixed_variables():
    """Variables with a mixed set of regularizers, by name."""
    pruning = kerasreg.MagnitudePruning(0.5, begin_step=0, end_step=4, scope="global")
    variables = {
        "l1": _variable("l1", kerasreg.L1(0.1), seed=1),
        "keras_l1l2": _variable("keras_l1l2", keras.regularizers.L1L2(0.1, 0.2), seed=2),
        "group": _variable("group", kerasreg.GroupLasso(0.1), seed=3),
        "own_prox": _variable("own_prox", _ShiftedL1(0.1), seed=4),
        "pruned": _variable("pruned", kerasreg.MagnitudePruning(0.5, 0, 4), seed=5),
        "global_a": _variable("global_a", pruning, seed=6),
        "global_b": _variable(
            "global_b", kerasreg.MagnitudePruning.from_config(pruning.get_config()), seed=7
        ),
        "no_prox": _variable("no_prox", keras.regularizers.OrthogonalRegularizer(0.1), seed=8),
        "plain": _variable("plain", None, seed=9),
        "excluded": _variable("excluded", kerasreg.L1(0.1), seed=10),
    }
    joined = [_variable("joint_a", None, (3, 2), 11), _variable("joint_b", None, (2,), 12)]
    joint = kerasreg.CoupledGroupLasso(
        0.1, [[(joined[0], 1, np.array([[0], [1]])), (joined[1], 0, np.array([[0], [1]]))]]
    )
    for variable in joined:
        variable.regularizer = joint.share(variable)
    variables["joint_a"], variables["joint_b"] = joined
    return variables, joint


def _built(variables, inner=None):
    optimizer = kerasreg.ProximalOptimizer(inner or keras.optimizers.SGD(0.1))
    optimizer.exclude_from_prox(var_names=["excluded"])
    optimizer.build(list(variables.values()))
    return optimizer


def test_each_variable_is_labelled_once_by_what_its_regularizer_declares():
    variables, joint = _mixed_variables()
    plan = _built(variables)._plan
    labels = {name: plan.label(variable) for name, variable in variables.items()}
    assert labels == {
        "l1": FAST or "single",
        "keras_l1l2": FAST or "single",  # converted to ElasticNet by `regularizers.get`
        "group": "xla" if FAST == "xla" else "single",  # not element-wise: never fused
        "own_prox": "single",
        "pruned": "single",
        "global_a": "shared",
        "global_b": "shared",
        "no_prox": None,
        "plain": None,
        "excluded": None,
        "joint_a": "joint",
        "joint_b": "joint",
    }
    assert plan.entry(variables["joint_a"]).regularizer is joint
    assert plan.entry(variables["pruned"]).states is not None  # its schedule's state
    assert plan.entry(variables["l1"]).states is None


def _routes_of(plan, variables, missing=(), **flags):
    grads = [
        None if name in missing else keras.ops.zeros_like(variable.value)
        for name, variable in variables.items()
    ]
    routes = plan.routes(list(variables.values()), grads, **flags)
    names = {id(variable): name for name, variable in variables.items()}
    return [(route.label, [names[id(v)] for v in route.variables]) for route in routes]


def test_the_routes_of_a_step_hold_each_variable_once():
    variables, _ = _mixed_variables()
    plan = _built(variables)._plan
    singles = ["l1", "keras_l1l2", "group", "own_prox", "pruned"]
    shared = ("shared", ["global_a", "global_b"])
    joint = ("joint", ["joint_a", "joint_b"])
    slow = _routes_of(plan, variables, fuse=False, compile_proxes=False)
    assert slow == [("single", singles), shared, joint]
    # Without a gradient, a variable takes no prox; a joint penalty, only whole.
    partial = _routes_of(
        plan, variables, missing=("l1", "global_b", "joint_b"), fuse=False, compile_proxes=False
    )
    assert partial == [("single", singles[1:]), ("shared", ["global_a"])]
    fast = _routes_of(plan, variables, fuse=True, compile_proxes=True)
    if FAST == "fused":
        expected = [("fused", ["l1", "keras_l1l2"]), ("single", singles[2:])]
    elif FAST == "xla":
        expected = [("xla", ["l1", "keras_l1l2", "group"]), ("single", singles[3:])]
    else:
        expected = [("single", singles)]
    assert fast == expected + [shared, joint]


def _one_route(route_class, variables, frozen=False, was_zero=None, **kwargs):
    """`route_class` over `variables`, each at its gradient position, with `Hold`s."""
    optimizer = _built({v.name: v for v in variables})
    entries = [optimizer._plan.entry(variable) for variable in variables]
    members = [_routes.Member(entry, i) for i, entry in enumerate(entries)]
    for member, zero in zip(members, was_zero or [None] * len(members), strict=True):
        member.hold = _routes.Hold(None, frozen, zero)
    return optimizer, route_class(members=members, **kwargs)


def _soft_threshold(x, t):
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def test_single_route_applies_each_prox_with_the_learning_rate():
    variables = [_variable("a", kerasreg.L1(0.5), seed=1), _variable("b", kerasreg.L2(0.5), seed=2)]
    before = [to_numpy(v) for v in variables]
    optimizer, route = _one_route(_routes.SingleRoute, variables)
    route.apply_prox(_routes.ProxStep(optimizer, 0.1, 0))
    np.testing.assert_allclose(to_numpy(variables[0]), _soft_threshold(before[0], 0.05), 1e-6)
    np.testing.assert_allclose(to_numpy(variables[1]), before[1] / (1 + 2 * 0.05), 1e-6)


def test_a_frozen_hold_sets_the_old_zeros_back_and_takes_no_prox():
    variable = _variable("a", kerasreg.L1(0.5), seed=1)
    value = to_numpy(variable)
    was_zero = np.zeros(value.shape, bool)
    was_zero[0] = True
    optimizer, route = _one_route(
        _routes.SingleRoute,
        [variable],
        frozen=True,
        was_zero=[keras.ops.convert_to_tensor(was_zero)],
    )
    route.apply_prox(_routes.ProxStep(optimizer, 0.1, 0))
    np.testing.assert_array_equal(to_numpy(variable), np.where(was_zero, 0.0, value))


def test_a_route_removes_its_penalty_gradients_in_place():
    variables = [_variable("a", kerasreg.L1(0.5), seed=1), _variable("b", kerasreg.L2(0.5), seed=2)]
    values = [to_numpy(v) for v in variables]
    _, route = _one_route(_routes.SingleRoute, variables)
    grads = [keras.ops.ones(v.shape) for v in variables]
    route.remove_penalty_gradients(grads, replicas=1)
    np.testing.assert_allclose(to_numpy(grads[0]), 1.0 - 0.5 * np.sign(values[0]), 1e-6)
    np.testing.assert_allclose(to_numpy(grads[1]), 1.0 - 2 * 0.5 * values[1], 1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="fused kernels run in PyTorch's eager mode")
def test_fused_route_equals_single_route_to_the_bit():
    def run(route_class):
        variables = [
            _variable("a", kerasreg.L1(0.5), seed=1),
            _variable("b", kerasreg.ElasticNet(1.0, 0.3), seed=2),
        ]
        kwargs = {}
        if route_class is _routes.FusedRoute:
            kwargs["coefficients"] = [v.regularizer.elementwise_coefficients() for v in variables]
        optimizer, route = _one_route(route_class, variables, **kwargs)
        grads = [keras.ops.ones(v.shape) for v in variables]
        route.remove_penalty_gradients(grads, replicas=1)
        route.apply_prox(_routes.ProxStep(optimizer, 0.1, 0))
        return [to_numpy(g) for g in grads] + [to_numpy(v) for v in variables]

    for a, b in zip(run(_routes.FusedRoute), run(_routes.SingleRoute), strict=True):
        np.testing.assert_array_equal(a.view("uint32"), b.view("uint32"))
