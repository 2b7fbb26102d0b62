"""How functional models are wired, and what each layer and operation does to channels.

Keras records a functional model as a graph of nodes, one per call of an
operation: a layer, or a `keras.ops` function called on symbolic tensors
(`keras.ops.relu(x)`, `x + y`, ...). `Graph` (`_wiring.py`) indexes the nodes
of one model for walking in either direction. `Graph.rule(node)` says how a
node passes the channels (the last axis) of its inputs on to its output, as a
`ChannelRule` (`_rule.py`). The rules come from one registry
(`_registry.py`): Keras' layers (`_layers.py`), the layers that join
channels themselves, attention and KerasHub's transformers (`_attention.py`),
users' own (`register_layer_rule`), and `keras.ops` functions by class name
(`_ops.py`). A new kind of layer is one entry there; whatever no rule knows is
opaque. Every layer type kerasreg knows is named in this package only.
"""

from kerasreg._graph._attention import attention
from kerasreg._graph._layers import _same_last_axis
from kerasreg._graph._layers import reshaped
from kerasreg._graph._layers import units_axes
from kerasreg._graph._ops import _OP_RULES
from kerasreg._graph._registry import _USER_RULES
from kerasreg._graph._registry import channel_rule
from kerasreg._graph._registry import layer_rule
from kerasreg._graph._registry import register_layer_rule
from kerasreg._graph._registry import resized_config
from kerasreg._graph._rule import CARRIES
from kerasreg._graph._rule import COMPOSITE
from kerasreg._graph._rule import COMPUTE
from kerasreg._graph._rule import CONCATENATE
from kerasreg._graph._rule import ELEMENTWISE
from kerasreg._graph._rule import ELEMENTWISE_ACTIVATIONS
from kerasreg._graph._rule import FLATTEN
from kerasreg._graph._rule import MERGE
from kerasreg._graph._rule import OPAQUE
from kerasreg._graph._rule import PER_CHANNEL
from kerasreg._graph._rule import POOLING
from kerasreg._graph._rule import READS
from kerasreg._graph._rule import WRITES
from kerasreg._graph._rule import ChannelRule
from kerasreg._graph._rule import Compute
from kerasreg._graph._rule import LayerRule
from kerasreg._graph._rule import _numpy
from kerasreg._graph._rule import activation_keeps_zero
from kerasreg._graph._rule import activation_name
from kerasreg._graph._rule import describe
from kerasreg._graph._rule import entrywise
from kerasreg._graph._rule import evaluate
from kerasreg._graph._rule import sub_path
from kerasreg._graph._rule import weight
from kerasreg._graph._rule import zero_to_zero
from kerasreg._graph._wiring import Graph
from kerasreg._graph._wiring import functional_of

__all__ = [
    "CARRIES",
    "COMPOSITE",
    "COMPUTE",
    "CONCATENATE",
    "ELEMENTWISE",
    "ELEMENTWISE_ACTIVATIONS",
    "FLATTEN",
    "MERGE",
    "OPAQUE",
    "PER_CHANNEL",
    "POOLING",
    "READS",
    "WRITES",
    "ChannelRule",
    "Compute",
    "Graph",
    "LayerRule",
    "_OP_RULES",
    "_USER_RULES",
    "_numpy",
    "_same_last_axis",
    "activation_keeps_zero",
    "activation_name",
    "attention",
    "channel_rule",
    "describe",
    "entrywise",
    "evaluate",
    "functional_of",
    "layer_rule",
    "register_layer_rule",
    "reshaped",
    "resized_config",
    "sub_path",
    "units_axes",
    "weight",
    "zero_to_zero",
]
