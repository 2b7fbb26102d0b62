"""`GroupLasso`: one Euclidean norm per group of a weight's entries."""

import math

import keras
from keras import ops

from kerasreg import prox as prox_lib
from kerasreg._validation import Axes
from kerasreg._validation import InvalidArgumentError
from kerasreg.regularizers._base import _NON_NEGATIVE
from kerasreg.regularizers._base import ProximalRegularizer
from kerasreg.regularizers._base import _as_compute_tensor
from kerasreg.regularizers._base import _constant
from kerasreg.regularizers._base import _safe_norm_gradient
from kerasreg.regularizers._base import _threshold
from kerasreg.regularizers._base import serializable


def _reduce_axes(group_axis, shape):
    """The axes each group spans: all but `group_axis`, checked against `shape`."""
    rank = len(shape)
    axes = (group_axis,) if isinstance(group_axis, int) else group_axis
    if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) < len(axes):
        raise InvalidArgumentError(
            "Invalid value for argument `group_axis`: expected distinct axes "
            f"of a weight of rank {rank} (shape {tuple(shape)}). "
            f"Received: group_axis={group_axis!r}"
        )
    group_axes = {a % rank for a in axes}
    return tuple(a for a in range(rank) if a not in group_axes)


@serializable
class GroupLasso(ProximalRegularizer):
    r"""Group lasso: zeroes whole groups of weights (units, filters, inputs).

    .. math::

        R(w) = \lambda \sum_g \sqrt{\lvert g \rvert} \, \lVert w_g \rVert_2,

    where each group :math:`g` is one index along `group_axis`, i.e. the
    slice of the weight over all the other axes, and :math:`\lvert g \rvert`
    is its number of entries. For a `Dense` kernel of shape `(inputs, units)`:

    - `group_axis=-1` (the default): one group per output unit (a column).
      Zeroed groups are units that can be removed.
    - `group_axis=0`: one group per input feature (a row). Zeroed groups are
      inputs the layer no longer reads.

    For a `Conv2D` kernel of shape `(height, width, in, out)`, `group_axis=-1`
    makes one group per output filter, and `group_axis=(-2, -1)` one group per
    (input channel, filter) pair. `group_axis=()` makes the whole weight one
    group; on a 1-D weight, `group_axis=0` makes each entry a group (plain L1).

    **Proximal operator.** With a scalar step :math:`s`, it is block soft
    thresholding at :math:`s \lambda \sqrt{\lvert g \rvert}`: a group whose
    norm is at most that threshold becomes exactly zero. With a
    per-coordinate step (a tensor broadcastable to the weight, as adaptive
    optimizers produce), the coordinates of a group no longer share one
    step, and no closed form exists. This class then computes the exact
    proximal operator in the metric :math:`\operatorname{diag}(s)^{-1}`
    (see `kerasreg.prox.block_soft_threshold_diagonal`): a group is zeroed
    exactly when :math:`\lVert w_g / s_g \rVert_2 \le \lambda
    \sqrt{\lvert g \rvert}`, and the surviving groups are shrunk
    coordinate-wise. The penalty's gradient at an all-zero group is zero,
    never NaN.

    Args:
        strength: Non-negative float, :math:`\lambda`. Defaults to `0.01`.
        group_axis: Int or tuple of ints: the axis (axes) along which the
            groups are laid out; each index along it is one group. Negative
            values count from the last axis. Defaults to `-1`.

    Raises:
        ValueError: When called on a weight whose rank does not have
            `group_axis`.

    Example:

    >>> import numpy as np
    >>> import kerasreg
    >>> reg = kerasreg.GroupLasso(strength=0.5, group_axis=-1)
    >>> w = np.array([[3.0, 0.1], [4.0, 0.1]], dtype="float32")
    >>> round(float(reg(w)), 4)  # 0.5 * sqrt(2) * (5 + 0.1414)
    3.6355
    >>> np.round(np.asarray(reg.prox(w, step=1.0), dtype="float64"), 4).tolist()
    [[2.5757, 0.0], [3.4343, 0.0]]
    """

    _parameter_constraints = {"strength": _NON_NEGATIVE, "group_axis": Axes()}

    def __init__(self, strength=0.01, group_axis=-1):
        self._set_arguments(strength=strength, group_axis=group_axis)

    def _group_geometry(self, shape):
        """Returns (reduction axes, group size or None if unknown)."""
        reduce_axes = _reduce_axes(self.group_axis, shape)
        dims = [shape[a] for a in reduce_axes]
        size = None if any(d is None for d in dims) else math.prod(int(d) for d in dims)
        return reduce_axes, size

    def _threshold(self, x, size, norms):
        """`strength * sqrt(group size)`, a Python float when the shape is known."""
        if size is not None:
            return self.strength * math.sqrt(size)
        # Shape known only at run time (an activity regularizer, a traced
        # batch dimension): the group size is size(x) / number of groups.
        dtype = keras.backend.standardize_dtype(x.dtype)
        size = ops.cast(ops.size(x), dtype) / ops.cast(ops.size(norms), dtype)
        return _constant(self.strength, x) * ops.sqrt(size)

    def __call__(self, x):
        x, dtype = _as_compute_tensor(x)
        reduce_axes, size = self._group_geometry(x.shape)
        norms = prox_lib._safe_norm(x, reduce_axes)
        scale = self._threshold(x, size, norms)
        if isinstance(scale, float):
            scale = _constant(scale, x)
        penalty = scale * ops.sum(norms)
        return ops.cast(penalty, dtype)

    def penalty_gradient(self, x):
        x, dtype = _as_compute_tensor(x)
        reduce_axes, size = self._group_geometry(x.shape)
        if size is None:
            scale = self._threshold(x, None, prox_lib._safe_norm(x, reduce_axes))
        else:
            scale = _constant(self._threshold(x, size, None), x)
        return ops.cast(_safe_norm_gradient(x, reduce_axes, scale), dtype)

    def prox(self, x, step):
        x = ops.convert_to_tensor(x)
        reduce_axes, size = self._group_geometry(x.shape)
        if size is None:
            x_compute, _ = _as_compute_tensor(x)
            threshold = self._threshold(
                x_compute, None, prox_lib._safe_norm(x_compute, reduce_axes)
            )
        else:
            threshold = self._threshold(x, size, None)
        try:
            scalar_step = len(getattr(step, "shape", ())) == 0
        except (TypeError, ValueError):  # a tensor of unknown rank
            scalar_step = False
        if isinstance(threshold, float) and scalar_step:
            return prox_lib.block_soft_threshold(
                x, _threshold(step, threshold, x), axis=reduce_axes
            )
        if scalar_step:
            step = _threshold(step, 1.0, x)
            return prox_lib.block_soft_threshold(x, step * threshold, axis=reduce_axes)
        return prox_lib.block_soft_threshold_diagonal(x, threshold, step, axis=reduce_axes)

    def compiles_with_xla(self):
        return self._keeps_math_of(GroupLasso)
