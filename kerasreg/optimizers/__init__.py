"""Optimizers: `ProximalOptimizer`, exact zeros from L1-type penalties with any optimizer."""

from kerasreg.optimizers.proximal import ProximalOptimizer

__all__ = ["ProximalOptimizer"]
