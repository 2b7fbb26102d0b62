"""One-shot pruning of trained models from calibration data: magnitude, Wanda, SparseGPT.

`oneshot_prune` prunes a model's `Dense`, `EinsumDense` and convolution
kernels in place, block by block, with no training; it returns a
`OneShotReport`. The arithmetic, free of Keras, is in `_solvers`; reading
kernels and inputs as matrices in `_targets`; calibration data in `_data`.
"""

from kerasreg.oneshot._prune import LayerPruning
from kerasreg.oneshot._prune import OneShotReport
from kerasreg.oneshot._prune import oneshot_prune

__all__ = ["LayerPruning", "OneShotReport", "oneshot_prune"]
