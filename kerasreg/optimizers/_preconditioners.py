"""What `ProximalOptimizer` reads from inside the Keras optimizer it wraps.

A rule gives an optimizer's per-coordinate step `s`, such that its update is
`w <- w - s * d` for the direction `d` named in the rule's comment (Adam's
bias-corrected `m`, RMSprop's gradient, ...). Only this module reads Keras'
private optimizer state, and `check_slots` refuses at build time an optimizer
that lacks some of it, rather than letting a prox step go silently wrong.
"""

import keras
import numpy as np
from keras import ops


def _slot(optimizer, name, variable):
    return getattr(optimizer, name)[optimizer._get_variable_index(variable)]


def _power(optimizer, beta, dtype):
    """`beta ** t` after `t` steps, with `beta` cast as Keras' update casts it."""
    return ops.power(ops.cast(beta, dtype), ops.cast(optimizer.iterations, dtype))


# Each rule is `rule(optimizer, scale, dtype)`: it computes once what all the
# variables of `dtype` share (bias corrections), and returns the function
# `steps(variable)` of one variable's per-coordinate step, `scale` (the
# learning rate, and any common factor) included.


def adam_scale(optimizer, scale, dtype):
    """`scale` times the part of Adam's step all coordinates share."""
    # Keras' Adam: w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
    # The 1 / (1 - b1^t) corrects m; the metric is what multiplies it.
    return scale * ops.sqrt(1.0 - _power(optimizer, optimizer.beta_2, dtype))


def adam_second_moment(optimizer, variable):
    """The second-moment estimate Adam divides by (its running maximum for AMSGrad)."""
    return _slot(optimizer, "_velocity_hats" if optimizer.amsgrad else "_velocities", variable)


def adam_rule(optimizer, scale, dtype):
    scale = adam_scale(optimizer, scale, dtype)
    return lambda variable: (
        scale / (ops.sqrt(adam_second_moment(optimizer, variable)) + optimizer.epsilon)
    )


def _nadam_rule(optimizer, scale, dtype):
    # Keras' Nadam: w -= lr * m_hat / (sqrt(v / (1 - b2^t)) + eps).
    correction = 1.0 - _power(optimizer, optimizer.beta_2, dtype)

    def steps(variable):
        v_hat = _slot(optimizer, "_velocities", variable) / correction
        return scale / (ops.sqrt(v_hat) + optimizer.epsilon)

    return steps


def _adamax_rule(optimizer, scale, dtype):
    # Keras' Adamax: w -= lr / (1 - b1^t) * m / (u + eps).
    return lambda variable: scale / (_slot(optimizer, "_u", variable) + optimizer.epsilon)


def _rmsprop_rule(optimizer, scale, dtype):
    # Keras' RMSprop: w -= lr * g / sqrt(v + eps) (centered: v - mean(g)^2);
    # with momentum b, b times the last move is added (see `momentum_factor`).
    def steps(variable):
        denominator = _slot(optimizer, "_velocities", variable) + optimizer.epsilon
        if optimizer.centered:
            average = _slot(optimizer, "_average_gradients", variable)
            denominator = denominator - ops.square(average)
        return scale / ops.sqrt(denominator)

    return steps


def _adagrad_rule(optimizer, scale, dtype):
    # Keras' Adagrad: w -= lr * g / sqrt(accumulator + eps).
    def steps(variable):
        accumulator = _slot(optimizer, "_accumulators", variable)
        return scale / ops.sqrt(accumulator + optimizer.epsilon)

    return steps


# Optimizers with a known diagonal preconditioner, their rule and the private
# attributes it reads. Order matters: AdamW is an Adam subclass and must find
# Adam's rule.
_PRECONDITIONERS = (
    (keras.optimizers.Nadam, _nadam_rule, lambda o: ["_velocities"]),
    (
        keras.optimizers.Adam,
        adam_rule,
        lambda o: ["_velocity_hats" if o.amsgrad else "_velocities"],
    ),
    (keras.optimizers.Adamax, _adamax_rule, lambda o: ["_u"]),
    (
        keras.optimizers.RMSprop,
        _rmsprop_rule,
        lambda o: ["_velocities"] + ["_average_gradients"] * bool(o.centered),
    ),
    (keras.optimizers.Adagrad, _adagrad_rule, lambda o: ["_accumulators"]),
)


def preconditioner_for(optimizer):
    """The rule `rule(optimizer, scale, dtype)` of `optimizer`'s steps.

    The rule returns `steps(variable)`, the per-coordinate step of a variable
    of `dtype` (in that dtype) after the optimizer's latest update, times the
    scalar `scale` (the learning rate, cast to `dtype`).

    Returns:
        The rule, or `None` for an optimizer whose per-coordinate step is not
        known (SGD, Lion, ...).
    """
    for cls, rule, _ in _PRECONDITIONERS:
        if isinstance(optimizer, cls):
            return rule
    return None


def check_slots(optimizer, preconditioned):
    """Refuses a built `optimizer` that lacks a private attribute read here.

    Args:
        optimizer: The built inner optimizer.
        preconditioned: Whether its per-coordinate steps are read.

    Raises:
        RuntimeError: Naming the missing attribute and the Keras version.
    """
    names = ["_get_variable_index"]
    for cls, _, slots in _PRECONDITIONERS:
        if preconditioned and isinstance(optimizer, cls):
            names += slots(optimizer)
            break
    if optimizer.gradient_accumulation_steps:
        names.append("_iterations")
    if optimizer.use_ema:
        names.append("_model_variables_moving_average")
    for name in names:
        if not hasattr(optimizer, name):
            raise RuntimeError(
                f"ProximalOptimizer reads `{type(optimizer).__name__}.{name}`, "
                f"which Keras {keras.version()} does not have: kerasreg does "
                "not support this Keras version."
            )


def momentum_factor(optimizer, dtype):
    """How far heavy-ball momentum carries one step's gradient: (1 - b^t) / (1 - b).

    SGD and RMSprop with `momentum=b` move a weight by the sum of the past
    `t` steps, weighted `1, b, b^2, ...`: under a steady gradient, by
    `(1 - b^t) / (1 - b)` times one step (`1 / (1 - b)` in the long run). A
    prox that used the bare step would balance the penalty against that
    larger move, and training would minimize data loss + `(1 - b)` times the
    penalty. Scaling the prox step by the same factor keeps the fixed point at
    data loss + penalty, as with no momentum. Nesterov's variant has the same
    long-run factor. `None` (no scaling) for every other optimizer and
    without momentum (Adam-type optimizers average their gradients, which
    needs no correction).
    """
    if not isinstance(optimizer, (keras.optimizers.SGD, keras.optimizers.RMSprop)):
        return None
    momentum = float(optimizer.momentum or 0.0)
    if momentum <= 0.0:
        return None  # Keras applies no momentum then
    t = ops.cast(optimizer.iterations, dtype)
    if momentum >= 1.0:
        return t  # the limit of (1 - b^t) / (1 - b) as b -> 1
    b = _momentum_as_applied(optimizer, dtype)
    return (1.0 - ops.power(b, t)) / (1.0 - b)


def _momentum_as_applied(optimizer, dtype):
    """The momentum `optimizer` multiplies by, as a scalar of `dtype`.

    Not always the Python float: Keras' SGD multiplies by
    `ops.cast(momentum, dtype)`, which TensorFlow converts to float32 first
    (0.98 becomes 0.9800000190734863 even for float64 weights), while its
    RMSprop, and both on JAX and PyTorch, use the float exactly in `dtype`.
    A factor computed from another value would make training minimize data
    loss + (1 - 1e-6) x penalty in float64.
    """
    if isinstance(optimizer, keras.optimizers.SGD):
        return ops.cast(optimizer.momentum, dtype)
    return ops.convert_to_tensor(np.asarray(optimizer.momentum, dtype=dtype))


def is_update_step(optimizer):
    """Whether `optimizer`'s next `apply` updates the weights; `None` if all do."""
    steps = optimizer.gradient_accumulation_steps
    if not steps:
        return None
    return (optimizer._iterations + 1) % steps == 0


def moving_average(optimizer, variable):
    """The moving average of `variable` that `optimizer` keeps (`use_ema=True`)."""
    return _slot(optimizer, "_model_variables_moving_average", variable)
