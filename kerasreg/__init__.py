"""kerasreg: sparse training for Keras 3, on TensorFlow, JAX and PyTorch.

Regularizers that carry their proximal operator (`L1`, `L2`, `ElasticNet`,
`MCP`, `SCAD`, `GroupLasso`, `MagnitudePruning`; `CoupledGroupLasso` over several weights;
`ChannelPruning`, which prunes coupled channels to a MACs or parameter target),
pure proximal operators (`kerasreg.prox`),
the conversion of Keras' own regularizers (`kerasreg.regularizers.get`), the
`ProximalOptimizer` that applies them, sparsity reports
(`kerasreg.sparsity_report`), per-layer targets from one global
target (`kerasreg.allocate_sparsity`) and callbacks that watch and steer sparsity
during `fit` (`SparsityMonitor`, `TargetSparsity`, `FreezeSparsity`), a
feature-selection layer (`FeatureGate`), `regularize`, which attaches a
regularizer to chosen weights of an existing model, `compact`, which turns removed
units, filters and input features into a physically smaller model,
`oneshot_prune`, which prunes a trained model in one shot from
calibration data (magnitude, Wanda, SparseGPT),
`model_cost`, which counts a model's multiply-accumulates and parameters per
coupled channel, `dependency_groups`, which finds the channels that must leave a model
together (residual streams, concatenations, attention heads), `Distiller`,
which fine-tunes a compacted model towards the dense one, `strip`,
which makes a copy that loads without kerasreg, for deployment, and
regularization paths with cross-validation to choose the strength
(`kerasreg.model_selection`).
"""

from kerasreg import apply
from kerasreg import callbacks
from kerasreg import compaction
from kerasreg import cost
from kerasreg import dependency
from kerasreg import deployment
from kerasreg import distillation
from kerasreg import layers
from kerasreg import model_selection
from kerasreg import oneshot
from kerasreg import optimizers
from kerasreg import prox
from kerasreg import regularizers
from kerasreg import sparsity
from kerasreg._validation import InvalidArgumentError
from kerasreg.apply import regularize
from kerasreg.callbacks import FreezeSparsity
from kerasreg.callbacks import SparsityMonitor
from kerasreg.callbacks import TargetSparsity
from kerasreg.compaction import compact
from kerasreg.cost import model_cost
from kerasreg.dependency import dependency_groups
from kerasreg.deployment import strip
from kerasreg.distillation import Distiller
from kerasreg.layers import FeatureGate
from kerasreg.oneshot import oneshot_prune
from kerasreg.optimizers import ProximalOptimizer
from kerasreg.regularizers import L1
from kerasreg.regularizers import L2
from kerasreg.regularizers import MCP
from kerasreg.regularizers import SCAD
from kerasreg.regularizers import ChannelPruning
from kerasreg.regularizers import CoupledGroupLasso
from kerasreg.regularizers import ElasticNet
from kerasreg.regularizers import GroupLasso
from kerasreg.regularizers import MagnitudePruning
from kerasreg.regularizers import ProximalRegularizer
from kerasreg.sparsity import allocate_sparsity
from kerasreg.sparsity import sparsity_report

__version__ = "0.1.0"

__all__ = [
    "ChannelPruning",
    "CoupledGroupLasso",
    "Distiller",
    "ElasticNet",
    "FeatureGate",
    "FreezeSparsity",
    "GroupLasso",
    "InvalidArgumentError",
    "L1",
    "L2",
    "MCP",
    "MagnitudePruning",
    "ProximalOptimizer",
    "ProximalRegularizer",
    "SCAD",
    "SparsityMonitor",
    "TargetSparsity",
    "allocate_sparsity",
    "apply",
    "callbacks",
    "compact",
    "compaction",
    "cost",
    "dependency",
    "dependency_groups",
    "deployment",
    "distillation",
    "layers",
    "model_cost",
    "model_selection",
    "oneshot",
    "oneshot_prune",
    "optimizers",
    "prox",
    "regularize",
    "regularizers",
    "sparsity",
    "sparsity_report",
    "strip",
]
