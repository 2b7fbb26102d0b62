r"""Regularizers that carry their proximal operator.

Each regularizer here is a `keras.regularizers.Regularizer`: pass it as
`kernel_regularizer=` (or to `add_weight(regularizer=...)` in your own
layers) and Keras adds its penalty to the loss. Each also knows its proximal
operator,

.. math::

    \operatorname{prox}_{sR}(w) = \operatorname*{argmin}_z \;
        \tfrac{1}{2} \lVert z - w \rVert_2^2 + s \, R(z),

through `prox(w, step)`, which is what lets a proximal optimizer turn an L1
penalty into exact zeros. The maths lives in `kerasreg.prox`; the classes
here hold hyperparameters, compute the penalty and serialize.

One submodule per family: `elementwise` (`L1`, `L2`, `ElasticNet`),
`nonconvex` (`MCP`, `SCAD`), `group` (`GroupLasso`), `coupled`
(`CoupledGroupLasso`), `pruning` (`MagnitudePruning`; `KeepZeros`, which
holds a pattern) and `channels` (`ChannelPruning`, pruning coupled channels
to a cost), on the base
class in `_base`; `get` is in `_lookup`. Import them from here.

All classes are registered with Keras serialization under the `"kerasreg"`
package: once `kerasreg` is imported, models that use them save to `.keras`
and load with plain `keras.models.load_model`.
"""

from kerasreg.regularizers._base import ProximalRegularizer
from kerasreg.regularizers._lookup import get
from kerasreg.regularizers.channels import ChannelPruning
from kerasreg.regularizers.coupled import CoupledGroupLasso
from kerasreg.regularizers.elementwise import L1
from kerasreg.regularizers.elementwise import L2
from kerasreg.regularizers.elementwise import ElasticNet
from kerasreg.regularizers.group import GroupLasso
from kerasreg.regularizers.nonconvex import MCP
from kerasreg.regularizers.nonconvex import SCAD
from kerasreg.regularizers.pruning import KeepZeros
from kerasreg.regularizers.pruning import MagnitudePruning

__all__ = [
    "ProximalRegularizer",
    "ChannelPruning",
    "L1",
    "L2",
    "ElasticNet",
    "MCP",
    "SCAD",
    "GroupLasso",
    "CoupledGroupLasso",
    "MagnitudePruning",
    "KeepZeros",
    "get",
]
