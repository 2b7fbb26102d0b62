"""`CoupledGroupLasso`: a group lasso over channels held by several variables.

Its groups name variables of one model, so it is no Keras regularizer of
one weight: each variable gets a share (`_CoupledShare`) as its regularizer,
and `ProximalOptimizer` applies the joint proximal operator through the
joint-penalty protocol described on the class.
"""

import dataclasses
import math
import numbers

import keras
import numpy as np
from keras import ops

from kerasreg import prox as prox_lib
from kerasreg._validation import InvalidArgumentError
from kerasreg.regularizers._base import _HALF_DTYPES
from kerasreg.regularizers._base import _NON_NEGATIVE
from kerasreg.regularizers._base import _constant
from kerasreg.regularizers._base import _safe_norm_gradient
from kerasreg.regularizers._base import _threshold
from kerasreg.regularizers._base import public

_COUPLED_NOT_SAVED = (
    "CoupledGroupLasso cannot be serialized: its groups are entries of variables that "
    "belong to a model, and no config can name them. Save the weights with "
    "`model.save_weights`, rebuild the model, load them, and attach the penalty again with "
    '`kerasreg.regularize(model, kerasreg.GroupLasso(strength), groups="dependency")`.'
)


class _CoupledShare(keras.regularizers.Regularizer):
    """One variable's part of a `CoupledGroupLasso`, set as its `regularizer`.

    Keras sums `variable.regularizer(variable)` over the trainable variables.
    The share of the penalty's first variable returns the whole penalty, read
    from the value it is given and the current values of the other variables
    (`variable.value`, which is the traced value inside JAX's stateless
    scope); every other share returns 0. The sum counts the penalty once, and
    its gradient reaches every variable.

    Attributes:
        joint: The `CoupledGroupLasso`, as `ProximalOptimizer` reads it.
        variable: The variable this share belongs to.
    """

    def __init__(self, joint, variable):
        self.joint = joint
        self.variable = variable

    def __call__(self, x):
        x = ops.convert_to_tensor(x)
        if self.variable is not self.joint.variables[0]:
            return ops.zeros((), dtype=x.dtype)
        values = [x] + [variable.value for variable in self.joint.variables[1:]]
        return ops.cast(self.joint(values), x.dtype)

    def get_config(self):
        raise NotImplementedError(_COUPLED_NOT_SAVED)

    def __repr__(self):
        return f"<share of {self.joint!r} on {getattr(self.variable, 'path', self.variable)}>"


@dataclasses.dataclass(frozen=True)
class _Piece:
    """The entries of one variable in one group: `flat` along `axis`, `k` per channel."""

    variable: int  # position in `CoupledGroupLasso.variables`
    axis: int
    flat: np.ndarray  # indices along `axis`, channel by channel
    channels: int


def _is_variable(value):
    return isinstance(value, keras.Variable)


@public
class CoupledGroupLasso:
    r"""Group lasso over channels whose entries lie in several variables.

    A channel of a residual stream is written by several layers (kernel
    columns, biases) and carried by others (normalization scales and
    shifts): it only leaves the model when all these entries are zero
    together. This penalty puts one Euclidean norm on each channel's
    entries, over all the variables that hold them:

    .. math::

        R = \lambda \sum_g a_g \sum_{c=1}^{C_g}
            \lVert w_{g,c} \rVert_2 , \qquad a_g = \sqrt{n_g} \text{ by default,}

    where group :math:`g` has :math:`C_g` channels of :math:`n_g` entries
    each, and :math:`w_{g,c}` gathers every entry of channel :math:`c`. As
    for `GroupLasso`, the factor :math:`\sqrt{n_g}` puts a channel of 9
    entries and one of 900 under thresholds in proportion to the square root
    of their sizes, so that the pressure per entry is the same. With
    `scales`, each group gets its own factor: weighted by what a channel
    costs, the penalty leans on the channels that cost most.

    **Proximal operator.** With one scalar step :math:`s` for all the
    variables, block soft thresholding of each channel at
    :math:`s \lambda a_g`; with per-coordinate steps (adaptive
    optimizers), the exact proximal operator in the diagonal metric, as
    `GroupLasso` computes it (`kerasreg.prox.block_soft_threshold_diagonal`).

    **In a model.** Set `share(variable)` as each variable's `regularizer`
    (`kerasreg.regularize(model, kerasreg.GroupLasso(s), groups="dependency")`
    does so for a model's coupled channels): `model.losses` then holds the
    penalty once, and `ProximalOptimizer` finds it through the shares'
    `joint` attribute and applies the joint proximal operator. The penalty
    cannot be saved in a config (its groups name variables of one model).

    **The joint-penalty protocol.** `ProximalOptimizer` knows a penalty over
    several variables by the `joint` attribute of their regularizers: an
    object with `variables` (a sequence of variables), `__call__(values)`
    (the penalty of a list of values, one per variable, in order) and
    `prox(values, steps)` (the proximal operator: new values, one per
    variable, given one step per variable, a scalar or a tensor
    broadcastable to its variable). This class is one.

    Args:
        strength: Non-negative float, :math:`\lambda`.
        groups: A non-empty sequence of groups, each a non-empty sequence of
            `(variable, axis, indices)`: `indices` an int array of shape
            `(channels, k)`, whose row `i` holds the indices along `axis` of
            `variable` that belong to channel `i` (the same number of
            channels for every member of a group). No entry may belong to
            two channels: a variable is used along one axis only, with
            distinct indices.
        scales: `None` for :math:`a_g = \sqrt{n_g}`, or one float >= 0 per
            group: its own factor :math:`a_g` (a channel's cost, for
            `kerasreg.regularize(..., groups="dependency", cost="macs")`).

    Raises:
        InvalidArgumentError: If `strength` or `groups` is invalid.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import kerasreg
    >>> kernel = keras.Variable(np.array([[3.0, 0.1], [4.0, 0.1]]), dtype="float32")
    >>> bias = keras.Variable(np.array([0.0, 0.1]), dtype="float32")
    >>> channels = np.array([[0], [1]])
    >>> penalty = kerasreg.CoupledGroupLasso(
    ...     0.5, [[(kernel, 1, channels), (bias, 0, channels)]]
    ... )
    >>> value = penalty([kernel.value, bias.value])  # 0.5 * sqrt(3) * (5 + 0.1732)
    >>> round(float(keras.ops.convert_to_numpy(value)), 4)
    4.4801
    >>> new_kernel, new_bias = penalty.prox([kernel.value, bias.value], 1.0)
    >>> keras.ops.convert_to_numpy(new_bias).tolist()
    [0.0, 0.0]
    """

    # `groups` is checked by `__init__` itself: its entries are variables.
    _parameter_constraints = {"strength": _NON_NEGATIVE}

    def __init__(self, strength, groups, scales=None):
        if not (_NON_NEGATIVE.type_ok(strength) and _NON_NEGATIVE.value_ok(strength)):
            raise InvalidArgumentError(
                "Invalid value for argument `strength`: expected "
                f"{_NON_NEGATIVE.description}. Received: strength={strength!r}"
            )
        self.strength = float(strength)
        self.variables = []
        self._groups = []  # (entries per channel, [_Piece, ...])
        positions, axes, used = {}, {}, {}
        if not isinstance(groups, (list, tuple)) or not groups:
            raise _invalid_groups("a non-empty list of groups", groups)
        for g, group in enumerate(groups):
            if not isinstance(group, (list, tuple)) or not group:
                raise _invalid_groups(f"group {g} as a non-empty list of members", group)
            pieces, size, channels = [], 0, None
            for member in group:
                variable, axis, flat, count, k = self._check_member(g, member)
                if channels is not None and count != channels:
                    raise _invalid_groups(
                        f"the same number of channels for every member of group {g} "
                        f"({channels}); a member of {variable.path!r} has {count}",
                        member,
                    )
                channels = count
                if id(variable) not in positions:
                    positions[id(variable)] = len(self.variables)
                    self.variables.append(variable)
                    axes[id(variable)], used[id(variable)] = axis, set()
                if axes[id(variable)] != axis:
                    raise _invalid_groups(
                        f"each variable along one axis; {variable.path!r} is used along "
                        f"axes {axes[id(variable)]} and {axis}",
                        member,
                    )
                overlap = used[id(variable)].intersection(flat.tolist())
                if overlap or len(set(flat.tolist())) != flat.size:
                    raise _invalid_groups(
                        f"entries in one channel only; {variable.path!r} has index "
                        f"{min(overlap or flat.tolist())} along axis {axis} twice",
                        member,
                    )
                used[id(variable)].update(flat.tolist())
                shape = tuple(variable.shape)
                size += k * math.prod(shape) // shape[axis]
                pieces.append(_Piece(positions[id(variable)], axis, flat, count))
            self._groups.append((size, pieces))
        self.scales = _check_scales(scales, [size for size, _ in self._groups])
        self._shares = {id(v): _CoupledShare(self, v) for v in self.variables}
        self._layouts = [self._layout(i) for i in range(len(self.variables))]

    @staticmethod
    def _check_member(g, member):
        """`(variable, axis, flat indices, channels, k)` of a checked member of group `g`."""
        if not isinstance(member, (list, tuple)) or len(member) != 3:
            raise _invalid_groups(f"members of group {g} as (variable, axis, indices)", member)
        variable, axis, indices = member
        if not _is_variable(variable):
            raise _invalid_groups(f"a keras.Variable in each member of group {g}", variable)
        rank = len(variable.shape)
        if (
            isinstance(axis, bool)
            or not isinstance(axis, numbers.Integral)
            or not (-rank <= axis < rank)
        ):
            raise _invalid_groups(f"an axis of {variable.path!r} (rank {rank}) in group {g}", axis)
        axis = int(axis) % rank
        indices = np.asarray(indices)
        if indices.ndim != 2 or indices.size == 0 or indices.dtype.kind not in "iu":
            raise _invalid_groups(
                f"indices of {variable.path!r} in group {g} as a non-empty int array of shape "
                "(channels, k)",
                indices,
            )
        if indices.min() < 0 or indices.max() >= variable.shape[axis]:
            raise _invalid_groups(
                f"indices of {variable.path!r} in group {g} in [0, {variable.shape[axis]})",
                indices,
            )
        flat = indices.reshape(-1).astype("int32")
        return variable, axis, flat, indices.shape[0], indices.shape[1]

    def _layout(self, position):
        """How to put a variable back: its pieces, then the untouched rest, reordered."""
        variable = self.variables[position]
        pieces = [
            (g, j, piece)
            for g, (_, group) in enumerate(self._groups)
            for j, piece in enumerate(group)
            if piece.variable == position
        ]
        axis = pieces[0][2].axis
        taken = np.concatenate([piece.flat for _, _, piece in pieces])
        rest = np.setdiff1d(np.arange(variable.shape[axis]), taken).astype("int32")
        order = np.concatenate([taken, rest])
        inverse = np.argsort(order).astype("int32")
        if np.array_equal(inverse, np.arange(order.size)):
            inverse = None
        return pieces, axis, rest, inverse

    def share(self, variable):
        """The regularizer to set on `variable`: its share of this penalty."""
        try:
            return self._shares[id(variable)]
        except KeyError:
            raise InvalidArgumentError(
                "Invalid value for argument `variable`: expected one of the penalty's "
                f"variables. Received: variable={getattr(variable, 'path', variable)!r}"
            ) from None

    @property
    def group_sizes(self):
        """Entries per channel, `n_g`, of each group."""
        return [size for size, _ in self._groups]

    def _compute_dtype(self, values):
        dtype = keras.backend.result_type(*[v.dtype for v in values])
        return "float32" if dtype in _HALF_DTYPES else dtype

    def _matrices(self, values):
        """One `(channels, n_g)` matrix per group, gathered from `values`."""
        matrices = []
        for _, pieces in self._groups:
            parts = []
            for piece in pieces:
                part = ops.take(values[piece.variable], piece.flat, axis=piece.axis)
                part = ops.moveaxis(part, piece.axis, 0)
                parts.append(ops.reshape(part, (piece.channels, -1)))
            matrices.append(parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=1))
        return matrices

    def _scatter(self, values, matrices):
        """`values` with each group's entries replaced by those of `matrices`."""
        columns = []  # per group, the column offset of each piece
        for _, pieces in self._groups:
            offsets, offset = [], 0
            for piece in pieces:
                shape = tuple(self.variables[piece.variable].shape)
                width = len(piece.flat) // piece.channels
                width *= math.prod(shape) // shape[piece.axis]
                offsets.append((offset, offset + width))
                offset += width
            columns.append(offsets)
        new_values = []
        for value, (pieces, axis, rest, inverse) in zip(values, self._layouts, strict=True):
            shape = tuple(value.shape)
            moved = (-1,) + shape[:axis] + shape[axis + 1 :]
            parts = []
            for g, j, _ in pieces:
                start, stop = columns[g][j]
                part = ops.reshape(matrices[g][:, start:stop], moved)
                parts.append(ops.moveaxis(part, 0, axis))
            if rest.size:
                parts.append(ops.take(value, rest, axis=axis))
            new = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=axis)
            if inverse is not None:
                new = ops.take(new, inverse, axis=axis)
            new_values.append(new)
        return new_values

    def __call__(self, values):
        """The penalty of `values` (one per variable, in order), in the compute dtype."""
        dtype = self._compute_dtype(values)
        values = [ops.cast(v, dtype) for v in values]
        total = ops.zeros((), dtype=dtype)
        for scale, matrix in zip(self.scales, self._matrices(values), strict=True):
            norms = prox_lib._safe_norm(matrix, 1)
            total = total + _constant(scale, total) * ops.sum(norms)
        return _constant(self.strength, total) * total

    def gradients(self, values):
        """The gradients of the penalty, as automatic differentiation computes them.

        Args:
            values: One tensor per variable, in the order of `variables`.

        Returns:
            The gradient of `self(values)` with respect to each of `values`,
            with its shape and dtype.
        """
        values = [ops.convert_to_tensor(v) for v in values]
        dtype = self._compute_dtype(values)
        x = [ops.cast(v, dtype) for v in values]
        strength = _constant(self.strength, x[0])
        matrices = [
            _safe_norm_gradient(m, 1, _constant(scale, m) * strength)
            for scale, m in zip(self.scales, self._matrices(x), strict=True)
        ]
        grads = self._scatter([ops.zeros_like(v) for v in x], matrices)
        # Autodiff adds the gradient of a gather into zeros, which turns -0.0
        # into 0.0; adding 0 does the same and changes nothing else. On
        # TensorFlow, the gradient of a gather along axis 0 stays sparse
        # (`IndexedSlices`) through the cast back to the weight's dtype and
        # is added into zeros after it.
        sparse_first = keras.backend.backend() == "tensorflow"
        results = []
        for g, value, (_, axis, _, _) in zip(grads, values, self._layouts, strict=True):
            g = ops.cast(g + ops.zeros_like(g), value.dtype)
            if sparse_first and axis == 0:
                g = g + ops.zeros_like(g)
            results.append(g)
        return results

    def prox(self, values, steps):
        r"""The joint proximal operator.

        .. math::

            \operatorname*{argmin}_z \; \sum_i \frac{(z_i - x_i)^2}{2 s_i} + R(z).

        Args:
            values: One tensor per variable, in the order of `variables`.
            steps: One step per variable: non-negative scalars (equal, as in
                plain proximal gradient), or tensors broadcastable to their
                variables (per-coordinate steps). A single scalar is used for
                every variable.

        Returns:
            The list of new values, with the shapes and dtypes of `values`.
        """
        values = [ops.convert_to_tensor(v) for v in values]
        if not isinstance(steps, (list, tuple)):
            steps = [steps] * len(values)
        dtype = self._compute_dtype(values)
        x = [ops.cast(v, dtype) for v in values]
        matrices = self._matrices(x)
        if all(len(getattr(s, "shape", ())) == 0 for s in steps):
            step = _threshold(steps[0], 1.0, x[0])
            step = prox_lib._as_tensor(step, dtype)
            results = [
                prox_lib.block_soft_threshold(m, step * _constant(self.strength * scale, m), axis=1)
                for scale, m in zip(self.scales, matrices, strict=True)
            ]
        else:
            scales = [
                ops.broadcast_to(prox_lib._as_tensor(s, dtype), tuple(v.shape))
                for s, v in zip(steps, x, strict=True)
            ]
            results = [
                prox_lib.block_soft_threshold_diagonal(m, self.strength * scale, s, axis=1)
                for scale, m, s in zip(self.scales, matrices, self._matrices(scales), strict=True)
            ]
        new = self._scatter(x, results)
        return [ops.cast(n, v.dtype) for n, v in zip(new, values, strict=True)]

    def get_config(self):
        raise NotImplementedError(_COUPLED_NOT_SAVED)

    def __repr__(self):
        return (
            f"CoupledGroupLasso(strength={self.strength!r}, groups=<{len(self._groups)} groups "
            f"over {len(self.variables)} variables>)"
        )


def _check_scales(scales, sizes):
    """The factor of each group: `scales` as floats, or `sqrt(n_g)`."""
    if scales is None:
        return [math.sqrt(size) for size in sizes]
    ok = isinstance(scales, (list, tuple, np.ndarray)) and len(scales) == len(sizes)
    ok = ok and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        for v in scales
    )
    if not ok:
        raise InvalidArgumentError(
            "Invalid value for argument `scales`: expected None or one finite float >= 0 "
            f"per group ({len(sizes)}). Received: scales={scales!r}"
        )
    return [float(v) for v in scales]


def _invalid_groups(expected, value):
    if isinstance(value, np.ndarray) and value.size > 8:
        value = f"<array of shape {value.shape}>"
    return InvalidArgumentError(
        f"Invalid value for argument `groups`: expected {expected}. Received: {value!r}"
    )
