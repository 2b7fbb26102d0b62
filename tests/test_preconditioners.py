"""The steps kerasreg reads from Keras' optimizers, against the steps they take.

Each rule claims `w_new = w - step * d` for a direction `d` computed here from
the gradients alone (Adam's bias-corrected first moment, RMSprop's gradient,
...). Keras' optimizer takes the real step on a probe variable; a change inside
Keras breaks the identity and fails here.
"""

import re

import keras
import numpy as np
import pytest
from keras import ops
from keras.optimizers import SGD
from keras.optimizers import Adagrad
from keras.optimizers import Adam
from keras.optimizers import Adamax
from keras.optimizers import AdamW
from keras.optimizers import Nadam
from keras.optimizers import RMSprop

import kerasreg
from kerasreg.optimizers import _preconditioners
from tests.conftest import to_numpy

# Large enough that each term of a rule (epsilon, bias corrections) shows.
LR, B1, B2, EPS, DECAY, MOMENTUM = 0.1, 0.8, 0.9, 0.1, 0.2, 0.5


def _run(optimizer, gradients):
    """Applies `gradients` in turn to a probe variable; returns it and its iterates."""
    rng = np.random.default_rng(1)
    variable = keras.Variable(rng.normal(size=gradients[0].shape).astype("float32"))
    iterates = [to_numpy(variable)]
    for gradient in gradients:
        optimizer.apply([ops.convert_to_tensor(gradient)], [variable])
        iterates.append(to_numpy(variable))
    return variable, iterates


def _first_moment(gradients):
    """Adam's bias-corrected first moment, `m / (1 - b1^t)`."""
    m = 0.0
    for gradient in gradients:
        m = B1 * m + (1 - B1) * gradient
    return m / (1 - B1 ** len(gradients))


def _nadam_first_moment(gradients):
    """Nadam's momentum-scheduled first moment (Dozat, 2016), as Keras computes it."""
    m, t = 0.0, len(gradients)
    for gradient in gradients:
        m = B1 * m + (1 - B1) * gradient
    u = [B1 * (1 - 0.5 * 0.96**i) for i in range(1, t + 2)]  # u_1 .. u_(t+1)
    product = np.prod(u[:t])
    return u[t] * m / (1 - product * u[t]) + (1 - u[t - 1]) * gradients[-1] / (1 - product)


def _steps(optimizer, variable):
    """The per-coordinate step the rule reads from `optimizer` for `variable`."""
    rule = _preconditioners.preconditioner_for(optimizer)
    return to_numpy(rule(optimizer, ops.cast(LR, "float32"), "float32")(variable))


# name: (inner optimizer, displacement of the last step given the rule's step,
# the gradients and the iterates).
RULES = {
    "Adam": (
        lambda: Adam(LR, B1, B2, EPS),
        lambda step, g, w: -step * _first_moment(g),
    ),
    "Adam_amsgrad": (
        lambda: Adam(LR, B1, B2, EPS, amsgrad=True),
        lambda step, g, w: -step * _first_moment(g),
    ),
    "AdamW": (  # decoupled weight decay first, then Adam's step
        lambda: AdamW(LR, DECAY, B1, B2, EPS),
        lambda step, g, w: -LR * DECAY * w[-2] - step * _first_moment(g),
    ),
    "Nadam": (
        lambda: Nadam(LR, B1, B2, EPS),
        lambda step, g, w: -step * _nadam_first_moment(g),
    ),
    "Adamax": (
        lambda: Adamax(LR, B1, B2, EPS),
        lambda step, g, w: -step * _first_moment(g),
    ),
    "RMSprop": (
        lambda: RMSprop(LR, B2, epsilon=EPS),
        lambda step, g, w: -step * g[-1],
    ),
    "RMSprop_centered": (
        lambda: RMSprop(LR, B2, epsilon=EPS, centered=True),
        lambda step, g, w: -step * g[-1],
    ),
    "RMSprop_momentum": (  # heavy ball: the last move, damped, plus this step
        lambda: RMSprop(LR, B2, MOMENTUM, EPS),
        lambda step, g, w: MOMENTUM * (w[-2] - w[-3]) - step * g[-1],
    ),
    "RMSprop_centered_momentum": (
        lambda: RMSprop(LR, B2, MOMENTUM, EPS, centered=True),
        lambda step, g, w: MOMENTUM * (w[-2] - w[-3]) - step * g[-1],
    ),
    "Adagrad": (
        lambda: Adagrad(LR, initial_accumulator_value=0.1, epsilon=EPS),
        lambda step, g, w: -step * g[-1],
    ),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_is_the_step_keras_takes(name):
    make, displacement = RULES[name]
    optimizer = make()
    rng = np.random.default_rng(0)
    gradients = list(rng.normal(size=(4, 3, 5)).astype("float32"))
    # A small last gradient: the second moment falls, so AMSGrad's running
    # maximum and the centered correction differ from the plain estimate.
    gradients[-1] *= 0.1
    variable, iterates = _run(optimizer, gradients)
    step = _steps(optimizer, variable)
    expected = displacement(step, gradients, iterates)
    np.testing.assert_allclose(iterates[-1] - iterates[-2], expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("momentum", [0.5, 1.0])
def test_momentum_factor_is_sgds_carry_from_rest(momentum):
    # Under a steady gradient, step t moves w by lr * (1 + b + ... + b^(t-1)) * g.
    optimizer = SGD(LR, momentum=momentum)
    gradient = np.linspace(-1.0, 1.0, 5).astype("float32")
    variable = keras.Variable(np.zeros(5, "float32"))
    for _ in range(5):
        before = to_numpy(variable)
        optimizer.apply([ops.convert_to_tensor(gradient)], [variable])
        factor = to_numpy(_preconditioners.momentum_factor(optimizer, "float32"))
        np.testing.assert_allclose(to_numpy(variable) - before, -LR * factor * gradient, rtol=1e-5)


@pytest.mark.parametrize(
    "make",
    [lambda: SGD(LR, MOMENTUM, nesterov=True), lambda: RMSprop(LR, MOMENTUM, MOMENTUM)],
    ids=["SGD_nesterov", "RMSprop"],
)
def test_momentum_factor_is_the_long_run_carry(make):
    optimizer = make()
    gradient = np.linspace(-1.0, 1.0, 5).astype("float32")
    variable, iterates = _run(optimizer, [gradient] * 40)
    step = _steps(optimizer, variable) if _preconditioners.preconditioner_for(optimizer) else LR
    factor = to_numpy(_preconditioners.momentum_factor(optimizer, "float32"))
    np.testing.assert_allclose(iterates[-1] - iterates[-2], -factor * step * gradient, rtol=1e-5)


def test_no_momentum_factor_or_rule_where_none_applies():
    for optimizer in (Adam(), SGD(), RMSprop()):
        assert _preconditioners.momentum_factor(optimizer, "float32") is None
    for optimizer in (SGD(momentum=0.9), keras.optimizers.Lion()):
        assert _preconditioners.preconditioner_for(optimizer) is None


def test_moving_average_is_what_finalize_copies_into_the_model():
    optimizer = Adam(LR, use_ema=True, ema_momentum=0.5)
    variable, _ = _run(optimizer, list(np.random.default_rng(0).normal(size=(3, 4))))
    average = to_numpy(_preconditioners.moving_average(optimizer, variable))
    assert not np.array_equal(average, to_numpy(variable))
    optimizer.finalize_variable_values([variable])
    np.testing.assert_array_equal(to_numpy(variable), average)


def test_update_steps_are_those_that_move_the_weights():
    optimizer = SGD(LR, gradient_accumulation_steps=3)
    variable = keras.Variable(np.zeros(2, "float32"))
    moved = []
    for _ in range(7):
        expected = bool(to_numpy(_preconditioners.is_update_step(optimizer)))
        before = to_numpy(variable)
        optimizer.apply([ops.ones((2,))], [variable])
        moved.append(not np.array_equal(to_numpy(variable), before))
        assert moved[-1] == expected
    assert moved == [False, False, True] * 2 + [False]
    assert _preconditioners.is_update_step(SGD()) is None


def _probe():
    variable = keras.Variable(np.ones(3, "float32"))
    variable.regularizer = kerasreg.L1(0.1)
    return variable


# name: (inner optimizer, a private attribute that kerasreg reads from it).
SLOTS = {
    "Adam": (Adam, "_velocities"),
    "Adam_amsgrad": (lambda: Adam(amsgrad=True), "_velocity_hats"),
    "Nadam": (Nadam, "_velocities"),
    "Adamax": (Adamax, "_u"),
    "RMSprop": (RMSprop, "_velocities"),
    "RMSprop_centered": (lambda: RMSprop(centered=True), "_average_gradients"),
    "Adagrad": (Adagrad, "_accumulators"),
    "ema": (lambda: SGD(use_ema=True), "_model_variables_moving_average"),
    "accumulation": (lambda: SGD(gradient_accumulation_steps=2), "_iterations"),
}


@pytest.mark.parametrize("name", sorted(SLOTS))
def test_a_missing_slot_fails_at_build_time(name, monkeypatch):
    make, slot = SLOTS[name]
    inner, variable = make(), _probe()
    inner.build([variable])
    monkeypatch.delattr(inner, slot)
    message = f"`{type(inner).__name__}.{slot}`, which Keras {keras.version()} does not have"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        kerasreg.ProximalOptimizer(inner).build([variable])


def test_plain_mode_reads_no_preconditioner(monkeypatch):
    inner, variable = Adam(), _probe()
    inner.build([variable])
    monkeypatch.delattr(inner, "_velocities")
    kerasreg.ProximalOptimizer(inner, mode="plain").build([variable])
