"""The backend fast paths of `ProximalOptimizer`'s prox routes, and backend queries.

**XLA in TensorFlow graphs.** In a TensorFlow graph without XLA, every
operation is a kernel of its own, which reads and writes a weight-sized
tensor: the prox of a large model would cost as many passes over memory as it
has operations, and a small model as many kernel launches. The variables
whose penalties declare `compiles_with_xla()` (stateless ones whose
operations XLA has) take two XLA computations per step (`compiled`), with the
same arithmetic: before the inner step, their penalty gradients (with, for
models under `SPLIT_SIZE`, the gradients without them and the zeros a frozen
pattern keeps); after it, their proxes and assignments.

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

**Compiled kernels in PyTorch's eager mode, for large models.** Each
`torch._foreach_*` call still reads and writes every weight, and the tensors
it returns are fresh allocations, which the CPU pays for in page faults: for
large models the prox would cost as much as the inner optimizer's own update.
From `_COMPILED_FUSED_SIZE` fused entries on, the penalty gradient and the prox of
each variable (Adam's step size included) are therefore `torch.compile`d
kernels, one loop over the weights each, on flat views, so that one
compilation serves every shape. Their arithmetic is the per-variable path's,
as the compiler orders it (within a few ulps: it may contract a product and
a sum into one rounding). Where compiling fails (no C++ compiler or Triton),
the kernel that failed runs uncompiled, a warning says so, and the
`torch._foreach_*` path takes the later steps.
"""

import math
import warnings

import keras

from kerasreg.optimizers import _preconditioners

_DTYPES = ("float32", "float64")

# Trainable entries under which the XLA computations cost more to launch than
# the kernels they save (see `compiles_proxes`): measured with
# `scripts/bench_proximal.py`, a graph step of LeNet-300-100 (51k entries)
# costs 1.06-1.08x Adam's with them and 1.15-1.18x without, one of a
# 64-100-100-10 network (18k) 1.12x with and 1.05x without.
_COMPILED_SIZE = 2**15
# Entries from which the work before the inner step is split between XLA
# (the penalty gradients) and TensorFlow's kernels (their subtraction, the
# zeros): XLA's loops on the CPU run on one thread, TensorFlow's on all
# cores. Under it, all of it is one XLA computation (launches cost more).
SPLIT_SIZE = 2**18
# Fused entries under which compiling the PyTorch kernels costs more (seconds,
# once per process) than it saves (see `compiles_fused`).
_COMPILED_FUSED_SIZE = 2**18


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
    For L1 alone, `grad + (-l1) * sign(w)` in one call per strength: the
    product is exact, so the result is the subtraction's to the bit.

    Args:
        grads: List of gradient tensors.
        values: List of weight tensors.
        coefficients: List of `(l1, l2)` pairs.

    Returns:
        The list of new gradient tensors.
    """
    import torch

    new = list(grads)
    by_l1, elastic = {}, []
    for i, (l1, l2) in enumerate(coefficients):
        if l2 != 0.0:
            elastic.append(i)
        elif l1 != 0.0:
            by_l1.setdefault(l1, []).append(i)
    with torch.no_grad():
        for l1, indices in by_l1.items():
            signs = torch._foreach_sign([values[i] for i in indices])
            subtracted = torch._foreach_add([grads[i] for i in indices], signs, alpha=-l1)
            for i, grad in zip(indices, subtracted, strict=True):
                new[i] = grad
        if elastic:
            subtracted = _remove_elastic_net_gradients(
                [grads[i] for i in elastic],
                [values[i] for i in elastic],
                [coefficients[i] for i in elastic],
            )
            for i, grad in zip(elastic, subtracted, strict=True):
                new[i] = grad
    return new


def _remove_elastic_net_gradients(grads, values, coefficients):
    """`fused_remove_penalty_gradients` of penalties with an L2 term."""
    import torch

    penalty = list(torch._foreach_mul(values, [2.0 * l2 for _, l2 in coefficients]))
    has_l1 = [l1 != 0.0 for l1, _ in coefficients]
    if any(has_l1):
        signs = torch._foreach_sign(_where(values, has_l1))
        torch._foreach_mul_(signs, [l1 for l1, _ in _where(coefficients, has_l1)])
        for i, sign in zip(_where(range(len(values)), has_l1), signs, strict=True):
            penalty[i] = sign + penalty[i]
    return torch._foreach_sub(grads, penalty)


_BETAS = {}  # (beta, dtype, device) -> the tensor Keras' `ops.cast(beta, dtype)` gives


def fused_adam_scale(optimizer, learning_rate, strength_scale, dtype):
    """`_preconditioners.adam_scale` of `learning_rate * strength_scale`, as
    `StepSizes` computes it for Adam, in PyTorch's own operations (the same
    ones Keras dispatches to, in the same order, without its per-call cost).

    Args:
        optimizer: The inner `keras.optimizers.Adam` (or subclass), after
            its update.
        learning_rate: Its learning rate for the step (variable or tensor).
        strength_scale: The wrapper's `strength_scale` control.
        dtype: The dtype of the variables, `"float32"` or `"float64"`.
    """
    import torch

    torch_dtype = getattr(torch, dtype)
    with torch.no_grad():
        learning_rate = getattr(learning_rate, "value", learning_rate)
        if isinstance(learning_rate, torch.Tensor):
            scale = learning_rate.to(torch_dtype)
        else:  # a float from a callable, exact in `dtype` as `ops.cast` makes it
            scale = torch.as_tensor(learning_rate, dtype=torch_dtype)
        scale = scale * strength_scale.value.to(torch_dtype)
        key = (optimizer.beta_2, torch_dtype, scale.device)
        if key not in _BETAS:
            _BETAS[key] = torch.as_tensor(optimizer.beta_2, dtype=torch_dtype, device=scale.device)
        beta_2 = _BETAS[key]
        # A variable, or a tensor under gradient accumulation (updates so far).
        iterations = optimizer.iterations
        iterations = getattr(iterations, "value", iterations)
        power = torch.pow(beta_2, iterations.to(torch_dtype))
        return scale * torch.sqrt(1.0 - power)


def fused_adam_steps(optimizer, variables, scale):
    """Adam's per-coordinate steps of `variables`, as `_preconditioners.adam_rule`
    computes them.

    Args:
        optimizer: The inner `keras.optimizers.Adam` (or subclass), after
            its update.
        variables: List of variables of one dtype.
        scale: Scalar tensor of that dtype, `fused_adam_scale`.
    """
    import torch

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


# Compiled kernels (PyTorch): the plain functions below, compiled on first use.
_KERNELS = {}
_COMPILE_FAILED = []


def compiles_fused(variables):
    """Whether the fused route over `variables` runs as compiled kernels (PyTorch).

    In eager steps, from `_COMPILED_FUSED_SIZE` entries on, and unless
    compiling failed earlier in this process.
    """
    return (
        not _COMPILE_FAILED
        and fuses()
        and sum(math.prod(v.shape) for v in variables) >= _COMPILED_FUSED_SIZE
    )


def _kernel(function):
    """`function`, compiled with `torch.compile` (once per process), or as is."""
    if _COMPILE_FAILED:
        return function
    if function not in _KERNELS:
        import torch

        _KERNELS[function] = torch.compile(function, dynamic=True, fullgraph=True)
    return _KERNELS[function]


def _is_compile_error(error):
    """Whether `error` comes from TorchDynamo or Inductor (their errors have
    no common base class: `BackendCompilerFailed`, `InductorError`,
    `CppCompileError`, ...)."""
    return any(
        cls.__module__.startswith(("torch._dynamo", "torch._inductor"))
        for cls in type(error).__mro__
    )


def compile_failed():
    """Whether compiling the kernels failed in this process."""
    return bool(_COMPILE_FAILED)


def _run_kernel(function, *args):
    """`function(*args)`, compiled; uncompiled, with a warning, if compiling fails."""
    try:
        return _kernel(function)(*args)
    except Exception as error:
        if _COMPILE_FAILED or not _is_compile_error(error):
            raise
        _COMPILE_FAILED.append(error)
        warnings.warn(
            f"ProximalOptimizer could not compile its prox kernels with torch.compile "
            f"({type(error).__name__}: {str(error)[:200]}); they run uncompiled, slower.",
            RuntimeWarning,
            stacklevel=4,
        )
        return function(*args)


def _penalty_removed_(out, grad, value, l1, l2, has_l1, has_l2):
    """Writes into `out` `grad` minus the penalty's gradient `l1 * sign(w) +
    2 * l2 * w`, as `fused_remove_penalty_gradients` computes it."""
    import torch

    if has_l1 and has_l2:
        out.copy_(grad - (torch.sign(value) * l1 + value * (2.0 * l2)))
    elif has_l1:
        out.copy_(grad - torch.sign(value) * l1)
    else:
        out.copy_(grad - value * (2.0 * l2))


def _elastic_net_prox(value, step, l1, l2, has_l1, has_l2):
    """The prox of `fused_prox`: soft thresholding, then shrinkage."""
    import torch

    if has_l1:
        threshold = step * l1
        value = value - torch.maximum(torch.minimum(value, threshold), -threshold)
    if has_l2:
        value = value / ((step * l2) * 2.0 + 1.0)
    return value


def _step_prox_(value, step, l1, l2, has_l1, has_l2):
    """Replaces `value` (in place) by its prox with `step` (scalar or per coordinate)."""
    value.copy_(_elastic_net_prox(value, step, l1, l2, has_l1, has_l2))


def _adam_prox_(value, moment, scale, epsilon, l1, l2, has_l1, has_l2):
    """Replaces `value` (in place) by its prox with Adam's step,
    `scale / (sqrt(v) + epsilon)` (`_preconditioners.adam_rule`)."""
    import torch

    step = scale / (torch.sqrt(moment) + epsilon)
    value.copy_(_elastic_net_prox(value, step, l1, l2, has_l1, has_l2))


def _scalar(value, like):
    """`value` as a 0-d tensor of `like`'s dtype and device (a kernel input,
    not a constant the compiler would specialize on)."""
    import torch

    return torch.tensor(value, dtype=like.dtype, device=like.device)


def _flags(coefficients):
    l1, l2 = coefficients
    return l1 != 0.0 or l2 == 0.0, l2 != 0.0


def compiled_remove_penalty_gradients(grads, values, coefficients, buffers):
    """`fused_remove_penalty_gradients` as one compiled kernel per variable.

    The new gradients are written into `buffers`, which a caller keeps from
    step to step: on the CPU, a fresh weight-sized tensor per step costs
    more in page faults than the kernel itself.

    Args:
        grads: List of gradient tensors.
        values: List of weight tensors.
        coefficients: List of `(l1, l2)` pairs.
        buffers: List, per variable, of a tensor of its shape and dtype to
            write its new gradient into, or `None` for a fresh one.

    Returns:
        The list of new gradient tensors.
    """
    import torch

    new = []
    with torch.no_grad():
        for grad, value, pair, out in zip(grads, values, coefficients, buffers, strict=True):
            has_l1, has_l2 = pair[0] != 0.0, pair[1] != 0.0
            if not (has_l1 or has_l2):
                new.append(grad)
                continue
            out = torch.empty_like(value) if out is None else out
            l1, l2 = _scalar(pair[0], value), _scalar(pair[1], value)
            _run_kernel(
                _penalty_removed_,
                out.view(-1),
                grad.reshape(-1),
                value.view(-1),
                l1,
                l2,
                has_l1,
                has_l2,
            )
            new.append(out)
    return new


def compiled_prox(values, steps, coefficients):
    """`fused_prox` as one compiled kernel per variable (in place).

    Args:
        values: List of weight tensors (contiguous), updated in place.
        steps: List, per variable: a step tensor (scalar, or one step per
            coordinate), or `("adam", moment, scale, epsilon)` for Adam's
            step computed inside the kernel.
        coefficients: List of `(l1, l2)` pairs.
    """
    import torch

    with torch.no_grad():
        for value, step, pair in zip(values, steps, coefficients, strict=True):
            has_l1, has_l2 = _flags(pair)
            l1, l2 = _scalar(pair[0], value), _scalar(pair[1], value)
            flat = value.view(-1)
            if isinstance(step, tuple):
                _, moment, scale, epsilon = step
                _run_kernel(
                    _adam_prox_,
                    flat,
                    moment.view(-1),
                    scale,
                    _scalar(epsilon, value),
                    l1,
                    l2,
                    has_l1,
                    has_l2,
                )
            else:
                step = step if step.ndim == 0 else step.reshape(-1)
                _run_kernel(_step_prox_, flat, step, l1, l2, has_l1, has_l2)
