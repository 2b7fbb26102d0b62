"""Counting zeros: per-weight sparsity reports for any Keras model or layer.

Sparsity here is the fraction of entries that are *exactly* zero, counted
with `np.count_nonzero`. A weight whose entries are merely small is not
sparse: it costs the same memory and time. The count of entries whose
magnitude is at most a tolerance is a separate, named figure.

This module only reads weights; it never trains.
"""

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from kerasreg import _model_walk
from kerasreg import _tables
from kerasreg._validation import AnyOf
from kerasreg._validation import Boolean
from kerasreg._validation import InstanceOf
from kerasreg._validation import Interval
from kerasreg._validation import InvalidArgumentError
from kerasreg._validation import Options
from kerasreg._validation import Structure
from kerasreg._validation import validate_params

__all__ = ["SparsityReport", "WeightSparsity", "allocate_sparsity", "sparsity_report"]


@dataclasses.dataclass(frozen=True)
class WeightSparsity:
    """Sparsity figures of one weight.

    Attributes:
        key: Stable name of the weight, unique within the model: the
            variable's path without the name of the model (or layer) reported
            on, e.g.
            `"dense_1/kernel"`. `SparsityMonitor` logs `sparsity/<key>`.
        layer: Name of the layer that owns the weight.
        weight: Name of the weight within its layer, e.g. `"kernel"`.
        shape: Shape of the weight.
        size: Number of entries.
        zeros: Number of entries exactly equal to zero.
        below_tolerance: Number of entries with magnitude at most the
            report's tolerance (equals `zeros` when the tolerance is 0).
        units: Number of output units (length of the last axis), or `None`
            for weights of rank below 2.
        zero_units: Output units whose incoming weights are all zero (slices
            of the last axis: `Dense` columns, convolution filters).
        inputs: Number of input features (length of the second-to-last axis),
            or `None` for weights of rank below 2.
        zero_inputs: Input features whose outgoing weights are all zero
            (slices of the second-to-last axis: `Dense` rows, input
            channels of a convolution).
        structure_holds: With a report's `structure=(n, m)`: whether every
            block of `m` consecutive entries along the input axis (axis -2;
            axis 0 of a 1-D weight) has at most `n` non-zeros; `None` when
            `m` does not divide that axis, or without a `structure`.
    """

    key: str
    layer: str
    weight: str
    shape: tuple
    size: int
    zeros: int
    below_tolerance: int
    units: int | None = None
    zero_units: int | None = None
    inputs: int | None = None
    zero_inputs: int | None = None
    structure_holds: bool | None = None

    @property
    def sparsity(self):
        """Fraction of entries exactly equal to zero."""
        return self.zeros / self.size if self.size else 0.0

    @property
    def nonzeros(self):
        """Number of entries not equal to zero."""
        return self.size - self.zeros


_COLUMNS = (
    ("weight", "key", "{}"),
    ("shape", "shape", "{}"),
    ("params", "size", "{:,}"),
    ("zeros", "zeros", "{:,}"),
    ("sparsity", "sparsity", "{:.2%}"),
    ("zero units", "zero_units", "{}"),
    ("zero inputs", "zero_inputs", "{}"),
)


class SparsityReport:
    """Per-weight sparsity of a model, as returned by `sparsity_report`.

    Iterating yields one `WeightSparsity` per weight; `report["dense/kernel"]`
    looks one up by key. `print(report)` shows a table, `report.rows()` gives
    plain dicts and `report.to_dataframe()` a pandas DataFrame (pandas is not
    a dependency of kerasreg; it must be installed to use that method).

    Attributes:
        weights: Tuple of `WeightSparsity`, in the model's layer order.
        tolerance: The tolerance used for `below_tolerance`.
        structure: The N:M pattern `(n, m)` checked, or `None`.
    """

    def __init__(self, weights, tolerance, structure=None):
        self.weights = tuple(weights)
        self.tolerance = tolerance
        self.structure = structure

    def __iter__(self):
        return iter(self.weights)

    def __len__(self):
        return len(self.weights)

    def __getitem__(self, key):
        for weight in self.weights:
            if weight.key == key:
                return weight
        raise KeyError(f"No weight with key {key!r}. Keys: {[w.key for w in self.weights]}")

    @property
    def size(self):
        """Total number of entries over the reported weights."""
        return sum(w.size for w in self.weights)

    @property
    def zeros(self):
        """Total number of exact zeros over the reported weights."""
        return sum(w.zeros for w in self.weights)

    @property
    def below_tolerance(self):
        """Total number of entries with magnitude at most `tolerance`."""
        return sum(w.below_tolerance for w in self.weights)

    @property
    def sparsity(self):
        """Fraction of exact zeros over all reported entries."""
        return self.zeros / self.size if self.size else 0.0

    def rows(self):
        """The figures as a list of plain dicts, one per weight.

        `structure_holds` is a key only in a report with a `structure`.
        """
        rows = []
        for weight in self.weights:
            row = dataclasses.asdict(weight)
            row["sparsity"] = weight.sparsity
            if self.structure is None:
                del row["structure_holds"]
            rows.append(row)
        return rows

    def to_dataframe(self):
        """The figures as a `pandas.DataFrame`, one row per weight."""
        return _tables.to_dataframe(self.rows(), "SparsityReport")

    def __str__(self):
        total = ["total", "", f"{self.size:,}", f"{self.zeros:,}", f"{self.sparsity:.2%}", "", ""]
        columns = _COLUMNS
        if self.structure is not None:
            n, m = self.structure
            columns += ((f"{n}:{m}", "structure_holds", "{}"),)
            holds = [w.structure_holds for w in self.weights if w.structure_holds is not None]
            total.append(str(all(holds)) if holds else "")
        table = _tables.format_table(self.rows(), columns, total=total, first_left=True)
        lines = [table]
        if self.tolerance:
            lines.append(
                f"entries with |w| <= {self.tolerance:g}: {self.below_tolerance:,} "
                f"({self.below_tolerance / max(self.size, 1):.2%})"
            )
        return "\n".join(lines)

    def __repr__(self):
        return (
            f"<SparsityReport: {len(self.weights)} weights, {self.size:,} params, "
            f"{self.zeros:,} zeros ({self.sparsity:.2%})>"
        )


def _is_float(variable):
    return "float" in keras.backend.standardize_dtype(variable.dtype)


def _is_reported(variable, include_biases):
    """Kernels: float weights of rank >= 2, or carrying a regularizer."""
    if not _is_float(variable):
        return False
    if len(variable.shape) >= 2 or getattr(variable, "regularizer", None) is not None:
        return True
    return include_biases and variable.trainable


def _reported_weights(model_or_layer, include_biases=False):
    """The weights a sparsity report covers, each with its owner and key.

    Walks every layer once (shared layers and weights are counted once),
    including nested models, wrappers such as `TimeDistributed` and
    `Bidirectional`, and users' own layers and sub-layers.

    Args:
        model_or_layer: A `keras.Model` or `keras.layers.Layer`.
        include_biases: Whether to include rank-0 and rank-1 trainable
            weights without a regularizer (biases, normalization scales and
            offsets). Defaults to `False`.

    Returns:
        A list of `(key, layer, variable)` tuples.
    """
    root = model_or_layer.name + "/"
    seen = set()
    keys = set()
    found = []
    for visit in _model_walk.walk(model_or_layer):
        layer = visit.layer
        for variable in _model_walk.own_variables(layer):
            if id(variable) in seen or not _is_reported(variable, include_biases):
                continue
            seen.add(id(variable))
            path = getattr(variable, "path", None) or f"{layer.name}/{variable.name}"
            key = path[len(root) :] if path.startswith(root) else path
            unique, n = key, 1
            while unique in keys:
                unique = f"{key}_{n}"
                n += 1
            keys.add(unique)
            found.append((unique, layer, variable))
    return found


def _to_numpy(value):
    """The whole of `value` (a tensor or variable) as a NumPy array.

    Under JAX's multi-process runtime, an array split across processes
    (a `ModelParallel` layout over their devices) cannot be read whole
    by any one of them: each process gathers the parts from the others.
    That is a collective, so every process must make the same calls, as
    callbacks do. An array whole in every process is read locally.
    """
    if isinstance(value, keras.Variable):
        value = value.value
    if keras.backend.backend() == "jax":
        import jax

        if (
            isinstance(value, jax.Array)
            and not value.is_fully_addressable
            and not value.is_fully_replicated
        ):
            from jax.experimental import multihost_utils

            value = multihost_utils.process_allgather(value, tiled=True)
    return np.asarray(ops.convert_to_numpy(value))


def _structure_holds(value, structure):
    """Whether every block of `m` along the input axis has at most `n` non-zeros."""
    n, m = structure
    axis = -2 if value.ndim >= 2 else 0
    if value.ndim == 0 or value.shape[axis] % m:
        return None
    moved = np.moveaxis(value != 0, axis, -1)
    blocks = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // m, m))
    return bool(np.all(np.count_nonzero(blocks, axis=-1) <= n))


def _figures(key, layer, variable, tolerance, structure=None):
    value = _to_numpy(variable)
    zero = value == 0
    figures = {
        "key": key,
        "layer": layer.name,
        "weight": variable.name,
        "shape": tuple(int(d) for d in value.shape),
        "size": int(value.size),
        "zeros": int(np.count_nonzero(zero)),
        "below_tolerance": int(np.count_nonzero(np.abs(value) <= tolerance)),
    }
    if value.ndim >= 2:
        units_axes = tuple(range(value.ndim - 1))
        inputs_axes = tuple(a for a in range(value.ndim) if a != value.ndim - 2)
        figures.update(
            units=int(value.shape[-1]),
            zero_units=int(np.count_nonzero(np.all(zero, axis=units_axes))),
            inputs=int(value.shape[-2]),
            zero_inputs=int(np.count_nonzero(np.all(zero, axis=inputs_axes))),
        )
    if structure is not None:
        figures["structure_holds"] = _structure_holds(value, structure)
    return WeightSparsity(**figures)


@validate_params(
    {
        "model_or_layer": InstanceOf(keras.layers.Layer, "a keras.Model or keras.layers.Layer"),
        "tolerance": Interval(0.0, None),
        "include_biases": Boolean(),
        "structure": AnyOf(Structure(), None),
    }
)
def sparsity_report(model_or_layer, tolerance=0.0, include_biases=False, structure=None):
    """Counts the exact zeros of every weight of a model or layer.

    Covers kernels by default: every float weight of rank 2 or more, plus
    any weight that carries a regularizer (e.g. a 1-D feature gate). Works
    on Sequential, functional and subclassed models, nested models, shared
    layers (counted once) and users' own layers. Under JAX's multi-process
    runtime, weights split across processes are gathered whole, so every
    process must call it.

    Args:
        model_or_layer: A `keras.Model` or `keras.layers.Layer`.
        tolerance: Non-negative float; entries with magnitude at most this
            are counted in `below_tolerance`, a figure separate from the
            exact-zero count. Defaults to `0.0`.
        include_biases: Whether to include rank-0 and rank-1 trainable
            weights without a regularizer (biases, normalization scales and
            offsets). Defaults to `False`.
        structure: A pair `(n, m)`: also check each weight for N:M sparsity
            (at most `n` non-zeros in every `m` consecutive entries along the
            input axis, as `MagnitudePruning(structure=(n, m))` leaves it),
            in `structure_holds` and an `n:m` column of the table. Defaults
            to `None` (no check).

    Returns:
        A `SparsityReport`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import kerasreg
    >>> model = keras.Sequential(
    ...     [keras.Input((3,)), keras.layers.Dense(2, name="dense")]
    ... )
    >>> _ = model.layers[0].kernel.assign(np.array([[0, 1], [0, 0], [0, 2]], "float32"))
    >>> report = kerasreg.sparsity_report(model)
    >>> w = report["dense/kernel"]
    >>> w.zeros, w.size, w.zero_units, w.zero_inputs
    (4, 6, 1, 1)
    >>> print(report)
    weight         shape  params  zeros  sparsity  zero units  zero inputs
    ----------------------------------------------------------------------
    dense/kernel  (3, 2)       6      4    66.67%           1            1
    ----------------------------------------------------------------------
    total                      6      4    66.67%
    >>> kerasreg.sparsity_report(model, structure=(2, 3))["dense/kernel"].structure_holds
    True
    """
    weights = [
        _figures(key, layer, variable, tolerance, structure)
        for key, layer, variable in _reported_weights(model_or_layer, include_biases)
    ]
    return SparsityReport(weights, tolerance, structure)


@validate_params(
    {
        "model_or_layer": InstanceOf(keras.layers.Layer, "a keras.Model or keras.layers.Layer"),
        "sparsity": Interval(0.0, 1.0),
        "method": Options("uniform", "erk"),
        "power": Interval(0.0, None, closed="neither"),
    }
)
def allocate_sparsity(model_or_layer, sparsity, method="erk", power=1.0):
    r"""Per-weight sparsities that add up to one target over the model.

    The weights are the trainable float weights of rank 2 or more (kernels
    of `Dense`, convolution and attention layers, embeddings), each counted
    once. The result is a dict from each weight's `variable.path` to the
    fraction of its entries to zero, for one `MagnitudePruning` per weight
    (see the example), such that the zeros over all those weights make
    `sparsity` of their entries.

    - `"uniform"`: every weight gets `sparsity`.
    - `"erk"`: Erdős–Rényi-Kernel, as in RigL (Evci et al., 2020) and
      jaxpruner. A weight of shape :math:`(d_1, \dots, d_r)` gets a
      density (fraction kept) proportional to
      :math:`\left(\sum_i d_i / \prod_i d_i\right)^{p}`, :math:`p` = `power`,
      scaled so that the kept entries add up to :math:`(1 - s)` of the
      total. Small weights (a classifier's last layer, a first convolution)
      stay denser, large ones get sparser. A weight whose density would
      exceed 1 is kept dense and the others are scaled again.

    Args:
        model_or_layer: A built `keras.Model` or `keras.layers.Layer`.
        sparsity: Float in [0, 1], the fraction of zeros over all the weights.
        method: `"erk"` or `"uniform"`. Defaults to `"erk"`.
        power: Positive float, the exponent :math:`p` of ERK's densities
            (`erk_power_scale` in RigL and jaxpruner): below 1 moves the
            allocation toward uniform. Defaults to `1.0`.

    Returns:
        A dict `{variable.path: sparsity}` in the model's layer order.

    Raises:
        InvalidArgumentError: If an argument is invalid, or the model has no
            weight of rank 2 or more.

    Example:

    >>> import keras
    >>> import kerasreg
    >>> model = keras.Sequential([
    ...     keras.Input((64,)),
    ...     keras.layers.Dense(300, name="hidden"),
    ...     keras.layers.Dense(10, name="out"),
    ... ], name="net")
    >>> targets = kerasreg.allocate_sparsity(model, 0.9, method="erk")
    >>> {path: round(s, 4) for path, s in targets.items()}
    {'net/hidden/kernel': 0.9376, 'net/out/kernel': 0.6596}
    >>> model = kerasreg.regularize(
    ...     model,
    ...     lambda layer, weight: kerasreg.MagnitudePruning(targets[weight.path]),
    ... )
    """
    shapes = {}
    for _, _, variable in _reported_weights(model_or_layer):
        if variable.trainable and len(variable.shape) >= 2:
            shapes[variable.path] = tuple(int(d) for d in variable.shape)
    if not shapes:
        raise InvalidArgumentError(
            "Invalid value for argument `model_or_layer`: expected a model or layer with "
            "trainable weights of rank 2 or more (kernels). "
            f"Received: model_or_layer={model_or_layer.name!r}"
        )
    if method == "uniform":
        return dict.fromkeys(shapes, float(sparsity))
    sizes = {path: math.prod(shape) for path, shape in shapes.items()}
    scores = {path: (sum(shape) / sizes[path]) ** power for path, shape in shapes.items()}
    kept = (1.0 - sparsity) * sum(sizes.values())
    dense = set()
    while True:
        # Densities eps * score for the weights not yet dense, so that the
        # kept entries add up to `kept`.
        free = [path for path in shapes if path not in dense]
        remaining = kept - sum(sizes[path] for path in dense)
        eps = remaining / sum(scores[path] * sizes[path] for path in free)
        top = max(scores[path] for path in free)
        if eps * top <= 1.0 + 1e-9 or len(free) == 1:
            break
        dense.update(path for path in free if scores[path] == top)
    return {
        path: 0.0 if path in dense else float(min(max(1.0 - eps * scores[path], 0.0), 1.0))
        for path in shapes
    }
