"""`compact`: the engine's plan, rebuilt."""

import dataclasses
import warnings

import keras
import numpy as np
from keras import ops

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
        "exact": Boolean(),
    }
)
def compact(model, return_summary=False, exact=True):
    """Returns a smaller model that computes the same function.

    It follows the channels of the whole graph, as
    `kerasreg.dependency_groups` couples them (residual streams, merges,
    concatenations, squeeze-and-excitation gates, attention heads, nested
    models, shared layers), together with the value of every channel that
    does not depend on the inputs: constants pass through biases,
    `BatchNormalization` with its moving statistics, element-wise
    activations (as layers or `keras.ops` functions), pooling, gates,
    depthwise convolutions, adds, products and concatenations. Each coupled
    channel is then

    - **dropped**, with every weight of its group (the columns and biases
      that write it, the normalization, depthwise and gate slices that carry
      it, the rows that read it; for a head, its query, key, value and
      output slices), when every weight that reads it is zero, or when it is
      zero wherever it is read;
    - **folded**, when it is constant where it is read: its contribution
      goes into each reader's bias (a reader without one gets one), then it
      is dropped. Filters pruned with `MagnitudePruning(..., group_axis=-1)`
      and followed by `BatchNormalization` are such channels, also across
      residual adds;
    - **merged**, when a reader pads (`"same"`, or a `ZeroPadding` before
      it), so that the constant's effect depends on the position: the
      constant channels of a group become one, whose slice of the reader's
      kernel is their weighted sum;
    - **kept** otherwise, with a reason: a layer that holds all-zero units
      or inputs it kept is named in a warning and in `summary.left_as_is`.

    Dropping a channel removes its readers' rows, which can leave other
    channels unread: decisions repeat until nothing changes. One channel of
    each group stays, so that every tensor keeps a width. Input features
    that nothing reads any more are dropped by a `SelectFeatures` layer
    after the input, so the compacted model takes the same inputs
    (`summary.layers[i].input_indices`); `summary.layers[i].unit_indices`
    lists the units each layer keeps.

    What a layer does to channels comes from one rule per layer type
    (`kerasreg.dependency.register_layer_rule` adds yours): `Dense`,
    `EinsumDense`, `Conv1D`/`Conv2D`/`Conv3D` (depthwise ones written as
    grouped convolutions too), their transposed and separable forms,
    `DepthwiseConv1D`/`DepthwiseConv2D`, `MultiHeadAttention`, `Embedding`,
    KerasHub's `TransformerEncoder`, `TransformerDecoder` and ViT encoder
    (rebuilt with their key dimension, as registered kerasreg layers or
    plain Keras ones). A layer or operation without a rule is copied as it
    is and its channels stay.

    `LayerNormalization` over the channels stops exact compaction: removing
    a channel changes the mean and variance of the others. With
    `exact=False`, its channels go when the kernels that write them are
    zero, its scale and offset sliced; the outputs change, and
    `summary.output_change` says by how much on a random batch, for users
    who fine-tune afterwards.

    The result is a new model with its own weights (the original is not
    modified), compiled like the original when it was compiled (same
    optimizer, loss and metrics, new optimizer state), and it saves and
    loads like any Keras model. Regularizers that the layers' configs hold
    come with it; a penalty that no config holds (a coupled group lasso
    from `kerasreg.regularize(..., groups="dependency")`) does not: its
    channels are gone. Call `regularize` on the result to train it on.

    Only inference is identical: training-time behaviour of `Dropout` and of
    `BatchNormalization` statistics can differ, because removed units no
    longer take part.

    Args:
        model: A built Sequential or functional `keras.Model`.
        return_summary: Whether to return a `CompactionSummary` too.
            Defaults to `False`.
        exact: Whether the compacted model must compute exactly what the
            original computes. `False` also cuts channels through
            `LayerNormalization`, as above. Defaults to `True`.

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
        new_model, summary = _compact(model, exact)
    for name, reason in summary.left_as_is:
        # stacklevel 3: past the `validate_params` wrapper, to the caller's line.
        warnings.warn(f"compact() left layer '{name}' as it is: {reason}.", stacklevel=3)
    return (new_model, summary) if return_summary else new_model


def _compact(model, exact):
    """`(new model, summary)`: the engine's plan, rebuilt."""
    decided = plan(model, exact)
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
        output_change=None if exact else _output_change(model, new_model),
    )
    return new_model, summary


def _output_change(model, new_model, batch=4, seed=0):
    """The largest difference of the outputs on a random batch, relative to the largest output.

    Float inputs are standard normal; integer inputs (token ids) are ones.
    """
    rng = np.random.default_rng(seed)
    inputs = []
    for tensor in functional_of(model).inputs:
        shape = [batch] + [8 if d is None else int(d) for d in tensor.shape[1:]]
        if "int" in str(tensor.dtype) or "bool" in str(tensor.dtype):
            inputs.append(np.ones(shape, tensor.dtype))
        else:
            inputs.append(rng.normal(size=shape).astype(tensor.dtype))
    structure = functional_of(model)._inputs_struct
    x = keras.tree.pack_sequence_as(structure, inputs)
    before = [np.asarray(ops.convert_to_numpy(t)) for t in keras.tree.flatten(model(x))]
    after = [np.asarray(ops.convert_to_numpy(t)) for t in keras.tree.flatten(new_model(x))]
    scale = max(float(np.max(np.abs(b))) for b in before) or 1.0
    change = max(float(np.max(np.abs(a - b))) for a, b in zip(after, before, strict=True))
    return change / scale


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
