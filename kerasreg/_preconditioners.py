"""What `ProximalOptimizer` reads from inside the Keras optimizer it wraps.

A rule gives an optimizer's per-coordinate step `s`, such that its update is
`w <- w - s * d` for the direction `d` named in the rule's comment (Adam's
bias-corrected `m`, RMSprop's gradient, ...). Only this module reads Keras'
private optimizer state, and `check_slots` refuses at build time an optimizer
that lacks some of it, rather than letting a prox step go silently wrong.
"""

import keras
from keras import ops


def _slot(optimizer, name, variable):
    return getattr(optimizer, name)[optimizer._get_variable_index(variable)]


def _adam_steps(optimizer, variable, learning_rate):
    # Keras' Adam: w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
    # The 1 / (1 - b1^t) corrects m; the metric is what multiplies it.
    dtype = variable.dtype
    t = ops.cast(optimizer.iterations, dtype)
    v = _slot(optimizer, "_velocity_hats" if optimizer.amsgrad else "_velocities", variable)
    correction = ops.sqrt(1.0 - ops.power(ops.cast(optimizer.beta_2, dtype), t))
    return learning_rate * correction / (ops.sqrt(v) + optimizer.epsilon)


def _nadam_steps(optimizer, variable, learning_rate):
    # Keras' Nadam: w -= lr * m_hat / (sqrt(v / (1 - b2^t)) + eps).
    dtype = variable.dtype
    t = ops.cast(optimizer.iterations, dtype)
    v = _slot(optimizer, "_velocities", variable)
    v_hat = v / (1.0 - ops.power(ops.cast(optimizer.beta_2, dtype), t))
    return learning_rate / (ops.sqrt(v_hat) + optimizer.epsilon)


def _adamax_steps(optimizer, variable, learning_rate):
    # Keras' Adamax: w -= lr / (1 - b1^t) * m / (u + eps).
    return learning_rate / (_slot(optimizer, "_u", variable) + optimizer.epsilon)


def _rmsprop_steps(optimizer, variable, learning_rate):
    # Keras' RMSprop: w -= lr * g / sqrt(v + eps) (centered: v - mean(g)^2);
    # with momentum b, b times the last move is added (see `momentum_factor`).
    denominator = _slot(optimizer, "_velocities", variable) + optimizer.epsilon
    if optimizer.centered:
        denominator = denominator - ops.square(_slot(optimizer, "_average_gradients", variable))
    return learning_rate / ops.sqrt(denominator)


def _adagrad_steps(optimizer, variable, learning_rate):
    # Keras' Adagrad: w -= lr * g / sqrt(accumulator + eps).
    accumulator = _slot(optimizer, "_accumulators", variable)
    return learning_rate / ops.sqrt(accumulator + optimizer.epsilon)


# Optimizers with a known diagonal preconditioner, their rule and the private
# attributes it reads. Order matters: AdamW is an Adam subclass and must find
# Adam's rule.
_PRECONDITIONERS = (
    (keras.optimizers.Nadam, _nadam_steps, lambda o: ["_velocities"]),
    (
        keras.optimizers.Adam,
        _adam_steps,
        lambda o: ["_velocity_hats" if o.amsgrad else "_velocities"],
    ),
    (keras.optimizers.Adamax, _adamax_steps, lambda o: ["_u"]),
    (
        keras.optimizers.RMSprop,
        _rmsprop_steps,
        lambda o: ["_velocities"] + ["_average_gradients"] * bool(o.centered),
    ),
    (keras.optimizers.Adagrad, _adagrad_steps, lambda o: ["_accumulators"]),
)


def preconditioner_for(optimizer):
    """The rule `rule(optimizer, variable, learning_rate)` of `optimizer`'s steps.

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
    return (1.0 - ops.power(ops.cast(momentum, dtype), t)) / (1.0 - momentum)


def is_update_step(optimizer):
    """Whether `optimizer`'s next `apply` updates the weights; `None` if all do."""
    steps = optimizer.gradient_accumulation_steps
    if not steps:
        return None
    return (optimizer._iterations + 1) % steps == 0


def moving_average(optimizer, variable):
    """The moving average of `variable` that `optimizer` keeps (`use_ema=True`)."""
    return _slot(optimizer, "_model_variables_moving_average", variable)
