"""kerasreg: sparse training for Keras 3, on TensorFlow, JAX and PyTorch.

Regularizers that carry their proximal operator (`L1`, `L2`, `ElasticNet`,
`GroupLasso`), pure proximal operators (`kerasreg.prox`), and the conversion of
Keras' own regularizers (`kerasreg.regularizers.get`).
"""

from kerasreg import optimizers
from kerasreg import prox
from kerasreg import regularizers
from kerasreg.optimizers import ProximalOptimizer
from kerasreg.regularizers import L1
from kerasreg.regularizers import L2
from kerasreg.regularizers import ElasticNet
from kerasreg.regularizers import GroupLasso
from kerasreg.regularizers import ProximalRegularizer

__version__ = "0.1.0"

__all__ = [
    "ElasticNet",
    "GroupLasso",
    "L1",
    "L2",
    "ProximalOptimizer",
    "ProximalRegularizer",
    "optimizers",
    "prox",
    "regularizers",
]
