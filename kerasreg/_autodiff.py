"""Gradients by the backend's automatic differentiation.

`ProximalOptimizer` removes a penalty's gradient from the loss gradient; the
gradient it removes must be the one the backend put there. Regularizers
compute theirs in closed form where they can
(`ProximalRegularizer.penalty_gradient`); this is the fallback, and the
reference those closed forms are tested against.
"""

import keras


def gradients(penalty, values):
    """Gradients of `penalty(values)` with respect to each of `values` (a list).

    Differentiates the same function, with the same automatic differentiation,
    that put the penalty's gradient into the loss gradient, so subtracting it
    removes that contribution.

    Args:
        penalty: Callable taking a list of tensors and returning a scalar.
        values: List of tensors.

    Returns:
        A list with one gradient per value, each with its shape and dtype; a
        value the penalty does not depend on gets zeros.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        values = [tf.convert_to_tensor(value) for value in values]
        with tf.GradientTape() as tape:
            for value in values:
                tape.watch(value)
            result = penalty(values)
        grads = tape.gradient(result, values)
        # `convert_to_tensor` makes the `IndexedSlices` of a gather dense.
        return [
            tf.zeros_like(value) if grad is None else tf.convert_to_tensor(grad)
            for value, grad in zip(values, grads, strict=True)
        ]
    if backend == "jax":
        import jax

        return list(jax.grad(lambda vs: penalty(list(vs)))(tuple(values)))
    if backend == "torch":
        import torch

        with torch.enable_grad():
            leaves = [value.detach().requires_grad_(True) for value in values]
            result = penalty(leaves)
            if not result.requires_grad:
                return [torch.zeros_like(leaf) for leaf in leaves]
            grads = torch.autograd.grad(result, leaves, allow_unused=True)
        return [
            torch.zeros_like(leaf) if grad is None else grad
            for leaf, grad in zip(leaves, grads, strict=True)
        ]
    raise NotImplementedError(
        f"ProximalOptimizer supports the tensorflow, jax and torch backends. "
        f"Received: backend={backend!r}"
    )
