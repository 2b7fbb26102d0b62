"""Compaction: structured zeros into a physically smaller model.

Zeros inside a dense kernel cost the same time and memory as any other
number. Whole units, filters and input features are different: once a unit
is zero on one side, it can be taken out of the network. `compact` finds
them along the coupled channels of the whole graph (residual streams,
concatenations, attention heads) and in chains of `Dense` and
`Conv1D`/`Conv2D` layers, and returns a new, smaller model that computes
the same function.

Each pass decides first (`_coupled.py`: coupled channels; `_chains.py`:
chains of compute layers), then `_rebuild.py` makes the smaller model from
the decisions; `_compact.py` runs the two passes.
"""

# Registers the smaller KerasHub transformer layers that `compact` makes, so
# that files holding them load (KerasHub itself is imported only when used).
from kerasreg.compaction import _keras_hub  # noqa: F401
from kerasreg.compaction._compact import compact
from kerasreg.compaction._summary import CompactionSummary
from kerasreg.compaction._summary import LayerCompaction

__all__ = ["CompactionSummary", "LayerCompaction", "compact"]
