"""What the callbacks and the path functions read from a model in training."""

import keras
import numpy as np

from kerasreg.optimizers import ProximalOptimizer

__all__ = ["data_gradients", "proximal_optimizer_of", "sync_variables"]


def sync_variables(model):
    """Makes the model's variables current (JAX keeps them apart during fit)."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None and keras.backend.backend() == "jax":
        sync()


def proximal_optimizer_of(model):
    """The model's `ProximalOptimizer`, under any `LossScaleOptimizer`, or `None`."""
    optimizer = getattr(model, "optimizer", None)
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer if isinstance(optimizer, ProximalOptimizer) else None


def _loss_of(model):
    """The compiled loss as `(y_true, y_pred, sample_weight) -> scalar`, or `None`.

    A `keras.losses.Loss` is called as `fit` calls it (its own reduction); a
    loss name or function gives per-sample values, reduced as Keras' default
    `"sum_over_batch_size"` does: the weighted sum over the batch size.
    """
    loss = getattr(model, "loss", None)
    if isinstance(loss, keras.losses.Loss):
        return loss
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if not callable(loss):
        return None

    def reduced(y_true, y_pred, sample_weight=None):
        values = loss(y_true, y_pred)
        if sample_weight is not None:
            values = values * keras.ops.cast(sample_weight, values.dtype)
        return keras.ops.sum(values) / keras.ops.cast(keras.ops.size(values), values.dtype)

    return reduced


def _batch_gradients(model, loss, x, y, sample_weight, variables):
    """Gradients of `loss` at the model's current weights, for `variables`."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=False), sample_weight)
        gradients = tape.gradient(value, [v.value for v in variables])
        return [
            keras.ops.zeros(v.shape, v.dtype) if g is None else g
            for v, g in zip(variables, gradients, strict=True)
        ]
    if backend == "jax":
        import jax

        trainable = model.trainable_variables
        positions = [next(i for i, t in enumerate(trainable) if t is v) for v in variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def value(trainable_values):
            y_pred, _ = model.stateless_call(trainable_values, non_trainable, x, training=False)
            return loss(y, y_pred, sample_weight)

        gradients = jax.grad(value)([v.value for v in trainable])
        return [gradients[i] for i in positions]
    if backend == "torch":
        import torch

        with torch.enable_grad():
            value = loss(y, model(x, training=False), sample_weight)
            gradients = torch.autograd.grad(value, [v.value for v in variables], allow_unused=True)
        return [
            torch.zeros_like(v.value) if g is None else g
            for v, g in zip(variables, gradients, strict=True)
        ]
    raise NotImplementedError(
        f"kerasreg computes gradients on the tensorflow, jax and torch backends. "
        f"Received: backend={backend!r}"
    )


def data_gradients(model, x, y, sample_weight, variables, batch_size):
    """Gradients of the compiled data loss (no penalty) over all of `x`, for `variables`.

    The loss is the mean over the samples, weighted as `fit` weighs them:
    batch gradients are summed with weights `batch size / samples`. The model
    runs in inference mode (`training=False`). Returns NumPy arrays, or `None`
    when the compiled loss is not one loss function.
    """
    loss = _loss_of(model)
    if loss is None:
        return None
    n = np.shape(keras.tree.flatten(x)[0])[0]
    totals = [np.zeros(v.shape, "float64") for v in variables]
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))

        def take(data, rows=rows):
            return keras.tree.map_structure(
                lambda leaf: keras.ops.convert_to_tensor(np.asarray(leaf)[rows]), data
            )

        weights = None if sample_weight is None else take(sample_weight)
        gradients = _batch_gradients(model, loss, take(x), take(y), weights, variables)
        share = (rows.stop - rows.start) / n
        for total, gradient in zip(totals, gradients, strict=True):
            total += share * np.asarray(keras.ops.convert_to_numpy(gradient), "float64")
    return totals
