"""What the callbacks and the path functions read from a model in training."""

import keras

from kerasreg.optimizers import ProximalOptimizer

__all__ = ["proximal_optimizer_of", "sync_variables"]


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
