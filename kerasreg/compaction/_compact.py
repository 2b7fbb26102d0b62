"""`compact`: the engine's plan, rebuilt."""

import dataclasses
import warnings

import keras

from kerasreg._graph import Graph
from kerasreg._graph import functional_of
from kerasreg._save_guard import penalties_unguarded
from kerasreg._validation import Boolean
from kerasreg._validation import InstanceOf
from kerasreg._validation import validate_params
from kerasreg.compaction._engine import plan
from kerasreg.compaction._rebuild import compile_like
from kerasreg.compaction._rebuild import cut_model
from kerasreg.compaction._summary import CompactionSummary
from kerasreg.compaction._summary import merge_notes

__all__ = ["compact"]


@validate_params(
    {
        "model": InstanceOf(keras.Model, "a built Sequential or functional keras.Model"),
        "return_summary": Boolean(),
    }
)
def compact(model, return_summary=False):
    """Returns a smaller model that computes the same function.

    It works in two passes. The first follows the channels through the
    whole graph, as `kerasreg.dependency_groups` couples them: residual
    streams (`Add`, `Subtract`, `Multiply`, `Average`, `Maximum`, `Minimum`,
    `x + y`), `Concatenate`, branches, depthwise convolutions,
    `MultiHeadAttention` heads, `EinsumDense`, `Embedding` dimensions and
    the feed-forward units of KerasHub's `TransformerEncoder`. A coupled
    channel goes, with every weight of its group (the columns and biases
    that write it, the normalization and depthwise slices that carry it, the
    rows that read it; for a head, its query, key, value and output
    slices), when

    - every weight that reads it is zero: nothing reads it; or
    - every weight that writes or carries it is zero (moving statistics
      aside) and zeros propagate along it (`DependencyGroup.zeros_propagate`:
      activations that map 0 to 0, normalizations with a scale): it is zero
      wherever it is read. `kerasreg.regularize(model,
      kerasreg.GroupLasso(s), groups="dependency")` trains channels to this.

    The second pass looks for chains of `Dense`, `Conv1D` and `Conv2D`
    layers (channels last) with nodes between them that act on each unit
    alone: element-wise activations, as layers or as `keras.ops` functions
    (`keras.ops.relu(x)`, `2.0 * x`), `Dropout` (and the other layers that
    are the identity at inference), `BatchNormalization` over the last axis,
    `FeatureGate`, `DepthwiseConv1D`/`DepthwiseConv2D` (one output per
    channel), pooling, `ZeroPadding` and `Flatten`. It removes:

    - a unit (filter) whose outgoing weights are all zero;
    - a unit whose output is constant (all-zero incoming weights, or a
      channel that a `BatchNormalization` scale or a depthwise kernel of
      zeros makes constant): the constant is added to the next layer's
      bias before the unit goes. A convolution that pads (`"same"`,
      `"causal"`, a kernel wider than 1) sees part of the constant replaced
      by padding at the border, so there the constant units are merged into
      one instead (its slice of the next kernel is their weighted sum),
      unless the constant is 0;
    - a unit the next `FeatureGate` closes (its gate is exactly zero);
    - input features that the first layer's kernel no longer reads (all
      zero rows, or a closed gate): a `SelectFeatures` layer in front of
      that layer keeps the others, so the compacted model takes the same
      inputs as the original. `summary.layers[i].input_indices` lists them,
      and `summary.layers[i].unit_indices` the units each layer keeps.

    Removing one unit can make another removable; the second pass repeats
    until nothing changes.

    One channel of each group stays, so that every tensor keeps a width.
    What it cannot rewrite it copies unchanged: shared layers, channels
    that reach an opaque node (reshapes and slices, normalizations over the
    channels), and any other layer or operation. Layers that hold all-zero
    units or inputs it had to keep are named in a warning, with the node
    that stopped it, and in `summary.left_as_is`. Nested Sequential and
    functional models are compacted in turn. The result is a new model with its own weights (the
    original is not modified), compiled like the original when it was
    compiled (same optimizer, loss and metrics, new optimizer state), and it
    saves and loads like any Keras model. Regularizers that the layers'
    configs hold come with it; a penalty that no config holds (a coupled
    group lasso from `kerasreg.regularize(..., groups="dependency")`) does
    not: its channels are gone. Call `regularize` on the result to train it
    on.

    Only inference is identical: training-time behaviour of `Dropout` and of
    `BatchNormalization` statistics can differ, because removed units no
    longer take part.

    Args:
        model: A built Sequential or functional `keras.Model`.
        return_summary: Whether to return a `CompactionSummary` too.
            Defaults to `False`.

    Returns:
        The compacted model, or `(model, summary)` with `return_summary`.

    Raises:
        ValueError: If `model` is a subclassed model (its layers' wiring is
            not known) or is not built, or holds a layer with weights that
            cannot be rebuilt from its config.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import kerasreg
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(3, activation="relu", name="hidden"),
    ...     keras.layers.Dense(1, name="out"),
    ... ])
    >>> kernel = np.ones((4, 3), "float32")
    >>> kernel[:, 1] = 0.0  # unit 1 of "hidden" reads nothing: relu(bias)
    >>> kernel[2, :] = 0.0  # input feature 2 is read by no unit
    >>> _ = model.layers[0].kernel.assign(kernel)
    >>> small, summary = kerasreg.compact(model, return_summary=True)
    >>> [(row.layer, row.kept_units, row.kept_inputs) for row in summary.layers]
    [('hidden', 2, 3), ('out', 1, 2)]
    >>> x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    >>> bool(np.allclose(model.predict(x, verbose=0), small.predict(x, verbose=0)))
    True
    """
    with penalties_unguarded(model):
        new_model, summary = _compact(model)
    for name, reason in summary.left_as_is:
        # stacklevel 3: past the `validate_params` wrapper, to the caller's line.
        warnings.warn(f"compact() left layer '{name}' as it is: {reason}.", stacklevel=3)
    return (new_model, summary) if return_summary else new_model


def _compact(model):
    """`(new model, summary)`: the engine's plan, rebuilt."""
    decided = plan(model)
    notes = list(decided.notes)
    rows, finishers = [], []
    new_model = cut_model(model, decided, rows, finishers)
    for finish in finishers:
        finish()
    compile_like(model, new_model)
    summary = CompactionSummary(
        layers=tuple(_with_input_indices(model, decided, rows)),
        left_as_is=merge_notes(tuple(notes)),
        params=int(model.count_params()),
        kept_params=int(new_model.count_params()),
    )
    return new_model, summary


def _with_input_indices(model, decided, rows):
    """Rows, those of the layers that read a model input through `SelectFeatures` marked."""
    if not decided.inputs:
        return rows
    readers = {}
    graph = Graph(model)
    for tensor in functional_of(model).inputs:
        if id(tensor) in decided.inputs:
            for node in graph.consumers.get(id(tensor), []):
                readers[getattr(node.operation, "name", None)] = decided.inputs[id(tensor)]
    return [
        dataclasses.replace(row, input_indices=readers[row.layer]) if row.layer in readers else row
        for row in rows
    ]
