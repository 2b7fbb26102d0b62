"""The backend fast paths of `ProximalOptimizer`'s prox routes, and backend queries.

**XLA in TensorFlow graphs.** In a TensorFlow graph without XLA, every
operation is a kernel of its own, which reads and writes a weight-sized
tensor: the prox of a large model would cost as many passes over memory as it
has operations. The penalties that declare `compiles_with_xla()` (stateless
ones whose operations XLA has) have their penalty gradients and proxes run as
one XLA computation each (`compiled`), with the same arithmetic.

**Fused kernels in PyTorch's eager mode.** Without compilation, PyTorch runs
every Keras operation as its own call from Python, and the Python around a
small operation (conversions, dtype checks, dispatch) costs more than the
arithmetic. Keras' own PyTorch optimizers therefore update all variables at
once with `torch._foreach_*` kernels. The functions below do the same for the
variables whose penalty declares `elementwise_coefficients()` (`L1`, `L2`,
`ElasticNet`, and Keras' own, which `regularizers.get` turns into them): they
remove their penalty gradients and apply their proximal operators with one
call per operation for all of them, with the arithmetic of the per-variable
path, so the results are the same to the bit.
"""

import math

import keras

from kerasreg.optimizers import _preconditioners

_DTYPES = ("float32", "float64")

# Trainable entries under which the XLA computation costs more to launch than
# the kernels it saves (see `compiles_proxes`).
_COMPILED_SIZE = 2**18


def known(condition):
    """`condition` as a Python bool where its value is known now, else the tensor.

    Eager steps (PyTorch, TensorFlow's `run_eagerly`) know the optimizer's
    flags and skip the work of features that are off; traced steps (graphs,
    XLA, JAX) select at run time.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if not torch.compiler.is_compiling():
            return bool(condition)
    elif backend == "tensorflow":
        import tensorflow as tf

        value = tf.get_static_value(condition)
        if value is not None:
            return bool(value)
    elif backend == "jax":
        import jax

        if not isinstance(condition, jax.core.Tracer):
            return bool(condition)
    return condition


def replicas_in_sync():
    """Replicas whose gradients are summed after this call (TensorFlow).

    Under `tf.distribute`, `apply` runs once per replica on gradients that the
    inner optimizer then sums across replicas; each replica's loss holds the
    penalty divided by this number, and so must its removed gradient.
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or not tf.distribute.has_strategy():
        return 1
    return context.num_replicas_in_sync


def fast_path():
    """The fast path this backend has: `"xla"`, `"fused"` or `None`."""
    return {"tensorflow": "xla", "torch": "fused"}.get(keras.backend.backend())


def compiles_proxes(variables):
    """Whether this step runs the proxes that declare it as one XLA computation.

    Not under `tf.distribute` (the replicas' variables are assigned through
    the strategy), not in eager steps, and not for small models (`variables`,
    the trainable ones, under `_COMPILED_SIZE` entries), where launching the
    computation costs more than the kernels it saves.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    if sum(math.prod(v.shape) for v in variables) < _COMPILED_SIZE:
        return False
    import tensorflow as tf

    return not tf.executing_eagerly() and not tf.distribute.has_strategy()


def compiled(function, *args):
    """`function(*args)` as one XLA computation (TensorFlow)."""
    import tensorflow as tf

    return tf.function(function, jit_compile=True, autograph=False)(*args)


def fuses():
    """Whether this step runs in PyTorch's eager mode."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    return not torch.compiler.is_compiling()


def coefficients(regularizer, variable, gradient):
    """`(l1, l2)` of `l1 * sum|w| + l2 * sum w^2`, or `None` if not fused.

    Only penalties that declare their coefficients are fused (a subclass that
    changes the penalty declares none), on float32 and float64 weights whose
    gradient has their dtype (half-precision weights compute in float32).
    """
    dtype = keras.backend.standardize_dtype(variable.dtype)
    if dtype not in _DTYPES or keras.backend.standardize_dtype(gradient.dtype) != dtype:
        return None
    declared = getattr(regularizer, "elementwise_coefficients", None)
    return None if declared is None else declared()


def _where(items, keep):
    return [item for item, kept in zip(items, keep, strict=True) if kept]


def fused_remove_penalty_gradients(grads, values, coefficients):
    """`grads` minus the gradients of the penalties at `values`.

    The penalty gradient is `l1 * sign(w) + 2 * l2 * w`, which is what
    PyTorch's automatic differentiation of the penalty gives (the
    derivative of `|w|` at 0 is 0, the terms are summed, then subtracted).

    Args:
        grads: List of gradient tensors.
        values: List of weight tensors.
        coefficients: List of `(l1, l2)` pairs.

    Returns:
        The list of new gradient tensors.
    """
    import torch

    with torch.no_grad():
        penalty = [None] * len(values)
        has_l1 = [l1 != 0.0 for l1, _ in coefficients]
        if any(has_l1):
            signs = torch._foreach_sign(_where(values, has_l1))
            torch._foreach_mul_(signs, [l1 for l1, _ in _where(coefficients, has_l1)])
            for i, sign in zip(_where(range(len(values)), has_l1), signs, strict=True):
                penalty[i] = sign
        has_l2 = [l2 != 0.0 for _, l2 in coefficients]
        if any(has_l2):
            squares = torch._foreach_mul(
                _where(values, has_l2), [2.0 * l2 for _, l2 in _where(coefficients, has_l2)]
            )
            for i, square in zip(_where(range(len(values)), has_l2), squares, strict=True):
                penalty[i] = square if penalty[i] is None else penalty[i] + square
        has_penalty = [p is not None for p in penalty]
        new = list(grads)
        if any(has_penalty):
            subtracted = torch._foreach_sub(
                _where(grads, has_penalty), _where(penalty, has_penalty)
            )
            for i, grad in zip(_where(range(len(grads)), has_penalty), subtracted, strict=True):
                new[i] = grad
        return new


def fused_adam_steps(optimizer, variables, scale):
    """Adam's per-coordinate steps of `variables`, times `scale`, as
    `_preconditioners.adam_rule` computes them.

    Args:
        optimizer: The inner `keras.optimizers.Adam` (or subclass), after
            its update.
        variables: List of variables of one dtype.
        scale: Scalar tensor of that dtype, the learning rate and common
            factors.
    """
    import torch

    dtype = keras.backend.standardize_dtype(variables[0].dtype)
    scale = _preconditioners.adam_scale(optimizer, scale, dtype)
    with torch.no_grad():
        moments = [_preconditioners.adam_second_moment(optimizer, v).value for v in variables]
        denominators = torch._foreach_sqrt(moments)
        torch._foreach_add_(denominators, optimizer.epsilon)
        return torch._foreach_div([scale] * len(variables), denominators)


def fused_prox(values, steps, coefficients, steps_owned=False):
    """Replaces each of `values` (in place) by its prox with its step.

    Soft thresholding is written `w - clip(w, -t, t)`, equal to the
    per-coordinate `sign(w) * max(|w| - t, 0)` of `kerasreg.prox`; the L2
    part divides by `1 + 2 * t2` as `prox_elastic_net` does.

    Args:
        values: List of weight tensors, updated in place.
        steps: List of step tensors: scalars, or one step per coordinate.
        coefficients: List of `(l1, l2)` pairs.
        steps_owned: Whether `steps` may be overwritten (fresh tensors that
            no one else holds), which saves allocating weight-sized
            temporaries. Defaults to `False`.
    """
    import torch

    with torch.no_grad():
        has_l2 = [l2 != 0.0 for _, l2 in coefficients]
        denominators = None
        if any(has_l2):
            denominators = torch._foreach_mul(
                _where(steps, has_l2), [l2 for _, l2 in _where(coefficients, has_l2)]
            )
            torch._foreach_mul_(denominators, 2.0)
            torch._foreach_add_(denominators, 1.0)
        has_l1 = [l1 != 0.0 or l2 == 0.0 for l1, l2 in coefficients]
        if any(has_l1):
            x = _where(values, has_l1)
            l1 = [l1 for l1, _ in _where(coefficients, has_l1)]
            thresholds = _where(steps, has_l1)
            if steps_owned:
                torch._foreach_mul_(thresholds, l1)
            else:
                thresholds = torch._foreach_mul(thresholds, l1)
            # clip(w, -t, t) as max(min(w, t), -t), equal for t >= 0.
            clipped = torch._foreach_minimum(x, thresholds)
            torch._foreach_neg_(thresholds)
            torch._foreach_maximum_(clipped, thresholds)
            torch._foreach_sub_(x, clipped)
        if denominators is not None:
            torch._foreach_div_(_where(values, has_l2), denominators)
