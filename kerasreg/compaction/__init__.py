"""Compaction: structured zeros into a physically smaller model.

Zeros inside a dense kernel cost the same time and memory as any other
number. Whole units, filters and input features are different: once a unit
is zero on one side, it can be taken out of the network. `compact` finds
them along the coupled channels of the whole graph (residual streams,
concatenations, squeeze-and-excitation gates, attention heads), with the
value of every channel that does not depend on the inputs, and returns a
new, smaller model that computes the same function.

The engine decides, per coupled channel, to drop, fold, merge or keep it
(`_engine.py`), then `_rebuild.py` makes the smaller model from the plan;
`_compact.py` runs the two; `_keras_hub.py` rebuilds KerasHub's transformer
layers with fewer heads.
"""

# Registers the smaller KerasHub transformer layers that `compact` makes, so
# that files holding them load (KerasHub itself is imported only when used).
from kerasreg.compaction import _keras_hub  # noqa: F401
from kerasreg.compaction._compact import compact
from kerasreg.compaction._summary import CompactionSummary
from kerasreg.compaction._summary import LayerCompaction

__all__ = ["CompactionSummary", "LayerCompaction", "compact"]
