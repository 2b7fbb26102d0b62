r"""Proximal operators, as pure functions of tensors.

Every function here solves one stated minimization problem,

.. math::

    \operatorname{prox}(x) = \operatorname*{argmin}_z \;
        \tfrac{1}{2} \lVert z - x \rVert_2^2 + R(z),

for one penalty :math:`R`, in closed form (or, for the group lasso in a
diagonal metric, by a fixed number of safeguarded Newton steps). They are
written with `keras.ops` only, so they run on every Keras backend, inside
`jit`-compiled code and inside `tf.function`. Thresholds are a scalar or a
tensor broadcastable to the input (one threshold per coordinate, or per group
for the block operators); they must be non-negative.

The result keeps the dtype of `x`. Half-precision inputs (`float16`,
`bfloat16`) are computed in `float32` and cast back, so that sums of squares
do not overflow. A NaN in `x` stays NaN: no operator hides it as a zero.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

from kerasreg._validation import InvalidArgumentError

__all__ = [
    "soft_threshold",
    "prox_squared_l2",
    "prox_elastic_net",
    "block_soft_threshold",
    "block_soft_threshold_diagonal",
    "project_sparsity",
    "project_n_m",
    "project_group_sparsity",
    "prox_mcp",
    "prox_scad",
]

_HALF_DTYPES = ("float16", "bfloat16")


def _compute_dtype(x):
    dtype = keras.backend.standardize_dtype(x.dtype)
    return "float32" if dtype in _HALF_DTYPES else dtype


def _prepare(x, *thresholds):
    """Converts `x` and the thresholds to tensors of the compute dtype."""
    x = ops.convert_to_tensor(x)
    dtype = _compute_dtype(x)
    out_dtype = keras.backend.standardize_dtype(x.dtype)
    x = ops.cast(x, dtype)
    thresholds = [_as_tensor(t, dtype) for t in thresholds]
    return out_dtype, x, thresholds


def _as_tensor(value, dtype):
    """`value` as a tensor of `dtype`; Python and NumPy values convert exactly."""
    if isinstance(value, (numbers.Real, np.ndarray, np.generic)):
        return ops.convert_to_tensor(np.asarray(value, dtype=dtype))
    return ops.cast(value, dtype)


def soft_threshold(x, threshold):
    r"""Soft thresholding: the proximal operator of a (weighted) L1 norm.

    Solves

    .. math::

        \operatorname*{argmin}_z \; \tfrac{1}{2} \lVert z - x \rVert_2^2
            + \sum_i t_i \lvert z_i \rvert ,

    whose solution is :math:`z_i = \operatorname{sign}(x_i)
    \max(\lvert x_i \rvert - t_i, 0)`. Coordinates with
    :math:`\lvert x_i \rvert \le t_i` become exact zeros.

    Args:
        x: Input tensor.
        threshold: Non-negative scalar, or tensor broadcastable to `x`.

    Returns:
        A tensor with the shape and dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from kerasreg import prox
    >>> x = np.array([-2.0, -0.5, 0.0, 0.3, 1.5], dtype="float32")
    >>> np.asarray(prox.soft_threshold(x, 1.0)).tolist()
    [-1.0, 0.0, 0.0, 0.0, 0.5]
    """
    out_dtype, x, (t,) = _prepare(x, threshold)
    return ops.cast(_shrink(x, t), out_dtype)


def _shrink(x, t):
    """`sign(x) * max(|x| - t, 0)` in four element-wise operations.

    `x - clip(x, -t, t)` is `x - t` above `t`, `x + t` below `-t`, and
    `x - x = 0` between (the same floating-point operations as the
    formula's, so the same bits); a NaN in `x` stays NaN.
    """
    return x - ops.clip(x, -t, t)


def prox_squared_l2(x, threshold):
    r"""Proximal operator of a (weighted) squared L2 norm.

    Solves

    .. math::

        \operatorname*{argmin}_z \; \tfrac{1}{2} \lVert z - x \rVert_2^2
            + \sum_i t_i z_i^2 ,

    whose solution is :math:`z_i = x_i / (1 + 2 t_i)`. It shrinks every
    coordinate and zeroes none.

    Args:
        x: Input tensor.
        threshold: Non-negative scalar, or tensor broadcastable to `x`.

    Returns:
        A tensor with the shape and dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from kerasreg import prox
    >>> x = np.array([-2.0, 0.0, 3.0], dtype="float32")
    >>> np.asarray(prox.prox_squared_l2(x, 0.5)).tolist()
    [-1.0, 0.0, 1.5]
    """
    out_dtype, x, (t,) = _prepare(x, threshold)
    return ops.cast(x / (1.0 + 2.0 * t), out_dtype)


def prox_elastic_net(x, l1_threshold, l2_threshold):
    r"""Proximal operator of the elastic-net penalty.

    Solves

    .. math::

        \operatorname*{argmin}_z \; \tfrac{1}{2} \lVert z - x \rVert_2^2
            + \sum_i \left( a_i \lvert z_i \rvert + b_i z_i^2 \right),

    with :math:`a` = `l1_threshold` and :math:`b` = `l2_threshold`. The
    solution is soft thresholding followed by shrinkage,
    :math:`z_i = \operatorname{sign}(x_i) \max(\lvert x_i \rvert - a_i, 0)
    / (1 + 2 b_i)`.

    Args:
        x: Input tensor.
        l1_threshold: Non-negative scalar, or tensor broadcastable to `x`.
        l2_threshold: Non-negative scalar, or tensor broadcastable to `x`.

    Returns:
        A tensor with the shape and dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from kerasreg import prox
    >>> x = np.array([-3.0, 0.5, 2.0], dtype="float32")
    >>> np.asarray(prox.prox_elastic_net(x, 1.0, 0.5)).tolist()
    [-1.0, 0.0, 0.5]
    """
    out_dtype, x, (a, b) = _prepare(x, l1_threshold, l2_threshold)
    return ops.cast(_shrink(x, a) / (1.0 + 2.0 * b), out_dtype)


def _maximum(a, b):
    """Element-wise maximum that keeps the dtype of its tensor inputs.

    `keras.ops.maximum` on the PyTorch backend (Keras 3.15) returns float32
    for two float64 tensors; `where` keeps float64. NaN in `a` is kept.
    """
    return ops.where(a < b, b, a)


def _minimum(a, b):
    """Element-wise minimum; see `_maximum`."""
    return ops.where(a > b, b, a)


def _safe_norm(x, axis):
    """Euclidean norm over `axis` (keepdims) with a zero gradient at zero."""
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    # Tested as `== 0` so that a NaN sum stays NaN.
    zero = squared == 0
    safe = ops.where(zero, ops.ones_like(squared), squared)
    return ops.where(zero, ops.zeros_like(squared), ops.sqrt(safe))


def block_soft_threshold(x, threshold, axis=None):
    r"""Block soft thresholding: the proximal operator of a group lasso.

    The groups are the slices of `x` taken over `axis` (as in `numpy.sum`):
    `axis=None` makes the whole tensor one group, `axis=0` on a matrix makes
    each column a group. Solves

    .. math::

        \operatorname*{argmin}_z \; \tfrac{1}{2} \lVert z - x \rVert_2^2
            + \sum_g t_g \lVert z_g \rVert_2 ,

    whose solution is :math:`z_g = \max(1 - t_g / \lVert x_g \rVert_2, 0)
    \, x_g`. A group with :math:`\lVert x_g \rVert_2 \le t_g` becomes
    exactly zero; a group that is already zero stays zero (never NaN).

    Args:
        x: Input tensor.
        threshold: Non-negative scalar, or tensor broadcastable to the group
            norms, i.e. to `x` reduced over `axis` with `keepdims=True`.
        axis: Int, tuple of ints, or `None`: the axes each group spans.
            Defaults to `None`.

    Returns:
        A tensor with the shape and dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from kerasreg import prox
    >>> x = np.array([[3.0, 0.1], [4.0, 0.1]], dtype="float32")
    >>> np.asarray(prox.block_soft_threshold(x, 1.0, axis=0)).tolist()
    [[2.4000000953674316, 0.0], [3.200000047683716, 0.0]]
    """
    out_dtype, x, (t,) = _prepare(x, threshold)
    norm = _safe_norm(x, axis)
    # A NaN norm fails `norm <= t` and stays NaN. A zero threshold is the
    # identity, even for groups so small that their squares underflow.
    shrunk = ops.logical_and(norm <= t, t > 0)
    denominator = ops.where(norm > 0, norm, ops.ones_like(norm))
    scale = ops.where(shrunk, ops.zeros_like(norm), 1.0 - t / denominator)
    return ops.cast(scale * x, out_dtype)


def block_soft_threshold_diagonal(x, threshold, scale, axis=None, iterations=12):
    r"""Group-lasso proximal operator in a diagonal metric.

    With a per-coordinate step :math:`s_i > 0` (the diagonal of a
    preconditioner, as adaptive optimizers use), the proximal operator of the
    group lasso is taken in the metric :math:`\operatorname{diag}(s)^{-1}`:

    .. math::

        \operatorname*{argmin}_z \; \sum_i \frac{(z_i - x_i)^2}{2 s_i}
            + \sum_g t_g \lVert z_g \rVert_2 .

    A group is exactly zero when :math:`\lVert x_g / s_g \rVert_2 \le t_g`.
    Otherwise :math:`z_i = x_i \, r / (r + s_i t_g)`, where
    :math:`r = \lVert z_g \rVert_2 > 0` is the root of
    :math:`\sum_{i \in g} x_i^2 / (r + s_i t_g)^2 = 1`. The root is found by
    Newton's method on :math:`\phi(r)^{-1/2} - 1`, which is concave and
    increasing in :math:`r`; started from the lower bound
    :math:`\max(\lVert x_g \rVert_2 - t_g \max_{i \in g} s_i,
    \lVert x_{g, s=0} \rVert_2)`, the iterates
    increase monotonically to the root. When the steps are equal within a
    group the function is linear and one step is exact, so this reduces to
    `block_soft_threshold` with threshold :math:`s \, t_g`.

    Args:
        x: Input tensor.
        threshold: Non-negative scalar, or tensor broadcastable to the group
            norms (`x` reduced over `axis` with `keepdims=True`).
        scale: Non-negative tensor broadcastable to `x`: the per-coordinate
            steps :math:`s_i`. A zero step holds its coordinate
            (:math:`z_i = x_i`); a NaN step makes its group NaN.
        axis: Int, tuple of ints, or `None`: the axes each group spans.
            Defaults to `None`.
        iterations: Number of Newton steps. Defaults to `12`.

    Returns:
        A tensor with the shape and dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from kerasreg import prox
    >>> x = np.array([3.0, 4.0], dtype="float32")
    >>> uniform = prox.block_soft_threshold_diagonal(x, 1.0, np.full(2, 0.5))
    >>> np.round(np.asarray(uniform, dtype="float64"), 5).tolist()
    [2.7, 3.6]
    """
    out_dtype, x, (t, s) = _prepare(x, threshold, scale)
    s = ops.broadcast_to(s, ops.shape(x))
    s_max = ops.max(s, axis=axis, keepdims=True)
    identity = (s_max * t) <= 0
    # Zero test, on the exact steps: the subgradient condition at z_g = 0.
    # A zero step holds its coordinate, so a non-zero one keeps the group;
    # a NaN step gives NaN, never a zero.
    positive = ops.logical_or(s > 0, ops.isnan(s))
    safe_s = ops.where(positive, s, ops.ones_like(s))
    held = ops.where(x == 0, ops.zeros_like(x), ops.full_like(x, float("inf")))
    zero = _safe_norm(ops.where(positive, x / safe_s, held), axis) <= t
    s = ops.where(positive, s, ops.zeros_like(s))

    norm = _safe_norm(x, axis)
    zeros = ops.zeros_like(norm)
    # Lower bounds on the root: coordinates with a zero step are held, so
    # |z_g| >= |x_held|; and |z_g| >= |x_g| - t max(s).
    norm_held = _safe_norm(ops.where(s > 0, ops.zeros_like(x), x), axis)
    r = _maximum(_maximum(norm - t * s_max, norm_held), zeros)
    square = ops.square(x)
    tiny = ops.cast(1e-30 if _compute_dtype(x) == "float64" else 1e-20, x.dtype)
    for _ in range(iterations):
        d = _maximum(r + s * t, tiny)
        phi = ops.sum(square / ops.square(d), axis=axis, keepdims=True)
        dphi = -2.0 * ops.sum(square / (ops.square(d) * d), axis=axis, keepdims=True)
        phi = _maximum(phi, tiny)
        g = ops.power(phi, -0.5) - 1.0
        dg = -0.5 * ops.power(phi, -1.5) * dphi
        step = ops.where(dg > 0, g / ops.where(dg > 0, dg, ops.ones_like(dg)), zeros)
        r = _minimum(_maximum(r - step, zeros), norm)
    z = x * r / _maximum(r + s * t, tiny)
    z = ops.where(zero, ops.zeros_like(x), z)
    z = ops.where(identity, x, z)
    return ops.cast(z, out_dtype)


def _sparsity_mask(x, sparsity):
    """Boolean mask of the entries `project_sparsity` keeps."""
    return _sparsity_masks([x], sparsity)[0]


def _sparsity_masks(xs, sparsity):
    """Boolean masks of the entries kept when `xs` are pruned together.

    The magnitudes of all the tensors in `xs` are ranked together (in their
    widest dtype) and the `round(sparsity * total)` smallest go: everything
    at or below the largest of them, so ties at the threshold go together
    and at least that many entries are zero.
    """
    # Not `keras.backend.result_type`, which makes float64 float32 on JAX and
    # PyTorch (Keras 3.15) and would flush tiny float64 magnitudes to zero.
    dtypes = {keras.backend.standardize_dtype(x.dtype) for x in xs}
    dtype = dtypes.pop() if len(dtypes) == 1 else "float64" if "float64" in dtypes else "float32"
    magnitudes = [ops.abs(ops.cast(x, dtype)) for x in xs]
    size = sum(int(np.prod(x.shape)) for x in xs)
    flat = [ops.reshape(m, (-1,)) for m in magnitudes]
    ranked = ops.sort(flat[0] if len(flat) == 1 else ops.concatenate(flat))
    count = ops.cast(ops.round(_as_tensor(sparsity, "float32") * size), "int32")
    count = ops.clip(count, 0, size)
    threshold = ops.take(ranked, ops.clip(count - 1, 0, size - 1))
    return [ops.logical_or(m > threshold, count == 0) for m in magnitudes]


def project_sparsity(x, sparsity):
    r"""Keeps the largest magnitudes: the projection onto a sparsity level.

    With :math:`n` entries and :math:`k = n - \operatorname{round}(s n)`,
    returns the Euclidean projection onto the (non-convex) set of tensors
    with at most :math:`k` non-zeros, which is the proximal operator of its
    indicator function:

    .. math::

        \operatorname*{argmin}_{\lVert z \rVert_0 \le k} \;
            \tfrac{1}{2} \lVert z - x \rVert_2^2 ,

    i.e. :math:`x` with its :math:`n - k` smallest-magnitude entries set to
    zero. Magnitudes tied with the last one removed are removed too, so the
    result has at least :math:`n - k` zeros (exactly that many when the
    magnitudes are distinct). The shape of `x` must be known.

    Args:
        x: Tensor.
        sparsity: Float or scalar tensor in [0, 1], the fraction :math:`s` of
            entries to set to zero.

    Returns:
        A tensor with the shape and dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from kerasreg import prox
    >>> x = np.array([0.5, -3.0, 1.0, -0.25, 2.0], dtype="float32")
    >>> np.asarray(prox.project_sparsity(x, 0.6)).tolist()
    [0.0, -3.0, 0.0, 0.0, 2.0]
    """
    x = ops.convert_to_tensor(x)
    message = (
        "Invalid value for argument `sparsity`: expected a float in [0, 1] or "
        f"a scalar tensor. Received: sparsity={sparsity!r}"
    )
    if isinstance(sparsity, (bool, np.bool_, str, bytes)):
        raise InvalidArgumentError(message)
    if isinstance(sparsity, numbers.Real) and not 0.0 <= sparsity <= 1.0:
        raise InvalidArgumentError(message)
    if int(np.prod(x.shape)) == 0:
        return x
    mask = _sparsity_mask(x, sparsity)
    return ops.where(mask, x, ops.zeros_like(x))


def _n_m_mask(x, zeros, m, axis):
    """Boolean mask keeping all but `zeros` entries of every block of `m`.

    The blocks are `m` consecutive entries along `axis`, whose length `m`
    divides. In each block, an entry's rank is the number of entries with a
    larger magnitude, or an equal one earlier in the block; the entries of
    rank below `m - zeros` are kept. The ranks come from one comparison of
    every pair in a block (a boolean temporary of `m` times the weight's
    entries), not a sort, so ties are broken by position on every backend.
    A NaN ranks as an infinity, so it is kept, never hidden as a zero.
    `zeros` is an int or an integer scalar tensor.
    """
    magnitudes = ops.abs(x)
    magnitudes = ops.where(ops.isnan(magnitudes), float("inf"), magnitudes)
    moved = ops.moveaxis(magnitudes, axis, -1)
    shape = tuple(moved.shape)
    blocks = ops.reshape(moved, shape[:-1] + (shape[-1] // m, m))
    mine = ops.expand_dims(blocks, -1)  # entry i of the block, along axis -2
    other = ops.expand_dims(blocks, -2)  # entry j, along axis -1
    earlier = np.arange(m)[None, :] < np.arange(m)[:, None]  # j < i
    ahead = ops.logical_or(other > mine, ops.logical_and(other == mine, earlier))
    rank = ops.sum(ops.cast(ahead, "int32"), axis=-1)
    keep = rank < (m - ops.cast(zeros, "int32"))
    return ops.moveaxis(ops.reshape(keep, shape), -1, axis)


def project_n_m(x, n, m, axis=-1):
    r"""Keeps the `n` largest magnitudes of every `m` consecutive entries.

    The blocks are the runs of `m` consecutive entries along `axis` (whose
    length `m` must divide). Returns the Euclidean projection onto the
    (non-convex) set of tensors with at most :math:`n` non-zeros per block,

    .. math::

        \operatorname*{argmin}_{z:\ \lVert z_b \rVert_0 \le n
            \ \forall b} \; \tfrac{1}{2} \lVert z - x \rVert_2^2 ,

    which decouples over the blocks :math:`b`: each keeps its :math:`n`
    largest magnitudes. Exactly :math:`n` entries of every block are kept
    (fewer non-zeros where kept entries are zero): among tied magnitudes,
    the earlier entries are kept, which is one of the minimizers. A NaN
    ranks as an infinite magnitude. This is the N:M pattern of sparse tensor cores (2:4 along
    a kernel's input axis).

    Args:
        x: Tensor of known shape.
        n: Int in [0, m], the entries kept per block.
        m: Int >= 1, the block length.
        axis: Int, the axis the blocks run along. Defaults to `-1`.

    Returns:
        A tensor with the shape and dtype of `x`.

    Raises:
        InvalidArgumentError: If `n` or `m` is not a valid int, or `m`
            does not divide the length of `axis`.

    Example:

    >>> import numpy as np
    >>> from kerasreg import prox
    >>> x = np.array([0.5, -3.0, 1.0, -0.25, 2.0, 0.1, -0.2, 4.0], dtype="float32")
    >>> np.asarray(prox.project_n_m(x, 2, 4)).tolist()
    [0.0, -3.0, 1.0, 0.0, 2.0, 0.0, 0.0, 4.0]
    """
    x = ops.convert_to_tensor(x)
    if not (isinstance(m, numbers.Integral) and not isinstance(m, bool) and m >= 1):
        raise InvalidArgumentError(
            f"Invalid value for argument `m`: expected an int >= 1. Received: m={m!r}"
        )
    if not (isinstance(n, numbers.Integral) and not isinstance(n, bool) and 0 <= n <= m):
        raise InvalidArgumentError(
            f"Invalid value for argument `n`: expected an int in [0, m={m}]. Received: n={n!r}"
        )
    shape = tuple(x.shape)
    if not -len(shape) <= axis < len(shape) or shape[axis] % m:
        raise InvalidArgumentError(
            f"Invalid value for argument `m`: expected a divisor of the length of axis "
            f"{axis} of x, of shape {shape}. Received: m={m!r}"
        )
    if int(np.prod(shape)) == 0:
        return x
    return ops.where(_n_m_mask(x, m - n, m, axis), x, ops.zeros_like(x))


def _group_mask(x, sparsity, axis, round_to=1):
    """Boolean mask (the shape of `x`) of the groups `project_group_sparsity` keeps."""
    _, values, _ = _prepare(x)
    norms = _safe_norm(values, axis)
    flat = ops.reshape(norms, (-1,))
    groups = int(flat.shape[0])
    zeros = ops.cast(ops.round(_as_tensor(sparsity, "float32") * groups), "int32")
    kept = groups - ops.clip(zeros, 0, groups)
    kept = ops.minimum((kept + (round_to - 1)) // round_to * round_to, groups)
    # The rank of each group by decreasing norm: the inverse permutation of
    # the order, which has no ties.
    rank = ops.argsort(ops.argsort(-flat))
    keep = ops.reshape(rank < kept, tuple(norms.shape))
    return ops.broadcast_to(keep, tuple(x.shape))


def project_group_sparsity(x, sparsity, axis=None, round_to=1):
    r"""Keeps the groups of largest Euclidean norm: the projection onto group sparsity.

    The groups are the slices of `x` taken over `axis`, as in
    `block_soft_threshold`. With :math:`G` groups, :math:`k = G -
    \operatorname{round}(s G)` rounded up to a multiple of `round_to` (at
    most :math:`G`), returns the Euclidean projection onto the tensors with
    at most :math:`k` non-zero groups,

    .. math::

        \operatorname*{argmin}_{z:\ \#\{g : z_g \ne 0\} \le k} \;
            \tfrac{1}{2} \lVert z - x \rVert_2^2 ,

    i.e. :math:`x` with all but its :math:`k` largest-norm groups set to
    zero. Exactly :math:`k` groups are kept; ties between norms are broken
    by the backend's sort. Rounding up to a multiple of `round_to` keeps
    layer widths that hardware handles well (multiples of 8 or 16) and
    never prunes more than :math:`s` asks.

    Args:
        x: Tensor of known shape.
        sparsity: Float or scalar tensor in [0, 1], the fraction :math:`s`
            of groups to set to zero.
        axis: Int, tuple of ints, or `None`: the axes each group spans.
            Defaults to `None` (one group).
        round_to: Int >= 1: the number of groups kept is a multiple of it
            (or all of them). Defaults to `1`.

    Returns:
        A tensor with the shape and dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from kerasreg import prox
    >>> x = np.array([[3.0, 0.1, -1.0], [4.0, 0.1, 1.0]], dtype="float32")
    >>> np.asarray(prox.project_group_sparsity(x, 0.6, axis=0)).tolist()
    [[3.0, 0.0, 0.0], [4.0, 0.0, 0.0]]
    """
    x = ops.convert_to_tensor(x)
    if not (
        isinstance(round_to, numbers.Integral) and not isinstance(round_to, bool) and round_to >= 1
    ):
        raise InvalidArgumentError(
            "Invalid value for argument `round_to`: expected an int >= 1. "
            f"Received: round_to={round_to!r}"
        )
    if int(np.prod(x.shape)) == 0:
        return x
    return ops.where(_group_mask(x, sparsity, axis, round_to), x, ops.zeros_like(x))


def _check_scalar(name, value, ok, expected):
    """Refuses a Python or NumPy number `value` for which `ok` is false."""
    if isinstance(value, (bool, np.bool_)) or (
        isinstance(value, numbers.Real) and not (math.isfinite(value) and ok(value))
    ):
        raise InvalidArgumentError(
            f"Invalid value for argument `{name}`: expected {expected}. Received: {name}={value!r}"
        )


def _check_nonconvex_arguments(step, strength, gamma, gamma_low):
    _check_scalar("step", step, lambda v: v >= 0, "a non-negative finite float or a tensor")
    _check_scalar("strength", strength, lambda v: v >= 0, "a non-negative finite float")
    _check_scalar("gamma", gamma, lambda v: v > gamma_low, f"a float in ({gamma_low:g}, inf)")


def prox_mcp(x, step, strength, gamma):
    r"""Proximal operator of the minimax concave penalty (MCP).

    With :math:`a` = `strength`, :math:`\gamma` = `gamma` and :math:`s` =
    `step`, solves, coordinate by coordinate,

    .. math::

        \operatorname*{argmin}_z \; \tfrac{1}{2} (z - x)^2 + s \, R(z),
        \qquad
        R(z) = \begin{cases}
            a \lvert z \rvert - \dfrac{z^2}{2 \gamma}
                & \lvert z \rvert \le \gamma a, \\
            \gamma a^2 / 2 & \lvert z \rvert > \gamma a.
        \end{cases}

    For :math:`s < \gamma` the objective is strictly convex and its minimiser
    is firm thresholding (as `skglm.penalties.MCPenalty` computes it):
    :math:`z = 0` for :math:`\lvert x \rvert \le s a`, :math:`z = x` for
    :math:`\lvert x \rvert > \gamma a`, and
    :math:`z = \operatorname{sign}(x) (\lvert x \rvert - s a) / (1 - s / \gamma)`
    between. For :math:`s \ge \gamma` the objective is not convex; the value
    returned is still its global minimiser, hard thresholding at
    :math:`a \sqrt{s \gamma}`: :math:`z = x` for
    :math:`\lvert x \rvert > a \sqrt{s \gamma}`, else :math:`z = 0`. (On
    :math:`[0, \gamma a]` the objective is then concave, so only :math:`0`
    and :math:`\max(\lvert x \rvert, \gamma a)` can be minimisers, with
    objectives :math:`x^2 / 2` and, beyond :math:`\gamma a`,
    :math:`s \gamma a^2 / 2`.) This is the case of the large per-coordinate
    steps (learning rate over epsilon) an adaptive optimizer takes inside
    `ProximalOptimizer`. On an exact tie the smaller magnitude, 0, is
    returned; a zero step returns `x`.

    Args:
        x: Input tensor.
        step: Non-negative finite float, or non-negative tensor broadcastable
            to `x` (one step per coordinate).
        strength: Non-negative float (or tensor broadcastable to `x`), the
            strength :math:`a`.
        gamma: Float greater than 0 (or tensor), the concavity
            :math:`\gamma`.

    Returns:
        A tensor with the shape and dtype of `x`.

    Raises:
        InvalidArgumentError: If a Python number `step` is negative or not
            finite, `strength` is negative or `gamma` is not positive.

    Example:

    >>> import numpy as np
    >>> from kerasreg import prox
    >>> x = np.array([-4.0, -1.5, 0.5, 1.75], dtype="float32")
    >>> np.asarray(prox.prox_mcp(x, 1.0, strength=1.0, gamma=2.0)).tolist()
    [-4.0, -1.0, 0.0, 1.5]
    >>> np.asarray(prox.prox_mcp(x, 4.0, strength=1.0, gamma=2.0)).tolist()
    [-4.0, 0.0, 0.0, 0.0]
    """
    _check_nonconvex_arguments(step, strength, gamma, 0)
    out_dtype, x, (s, a, g) = _prepare(x, step, strength, gamma)
    magnitude = ops.abs(x)
    zeros = ops.zeros_like(x)
    convex = s < g
    s_a = s * a
    # The denominator of the convex branch, 1 where that branch is not taken.
    denominator = ops.where(convex, 1.0 - s / g, ops.ones_like(s))
    firm = ops.where(magnitude > g * a, x, ops.sign(x) * (magnitude - s_a) / denominator)
    firm = ops.where(magnitude <= s_a, zeros, firm)
    hard = ops.where(magnitude <= a * ops.sqrt(s * g), zeros, x)
    return ops.cast(ops.where(convex, firm, hard), out_dtype)


def prox_scad(x, step, strength, gamma):
    r"""Proximal operator of the smoothly clipped absolute deviation (SCAD).

    With :math:`a` = `strength`, :math:`\gamma` = `gamma` and :math:`s` =
    `step`, solves, coordinate by coordinate,

    .. math::

        \operatorname*{argmin}_z \; \tfrac{1}{2} (z - x)^2 + s \, R(z),
        \qquad
        R(z) = \begin{cases}
            a \lvert z \rvert & \lvert z \rvert \le a, \\
            \dfrac{2 \gamma a \lvert z \rvert - z^2 - a^2}{2 (\gamma - 1)}
                & a < \lvert z \rvert \le \gamma a, \\
            a^2 (\gamma + 1) / 2 & \lvert z \rvert > \gamma a.
        \end{cases}

    For :math:`s < \gamma - 1` the objective is strictly convex and its
    minimiser is, in magnitude, :math:`\max(\lvert x \rvert - s a, 0)` for
    :math:`\lvert x \rvert \le (1 + s) a`,
    :math:`((\gamma - 1) \lvert x \rvert - s \gamma a) / (\gamma - 1 - s)`
    up to :math:`\gamma a`, and :math:`\lvert x \rvert` beyond. For
    :math:`s \ge \gamma - 1` the objective is not convex (concave on
    :math:`a \le \lvert z \rvert \le \gamma a`); the value returned is still
    its global minimiser, the better of the minimisers over
    :math:`\lvert z \rvert \le a` (soft thresholding, clipped at :math:`a`)
    and over :math:`\lvert z \rvert \ge \gamma a`
    (:math:`\max(\lvert x \rvert, \gamma a)`), chosen by comparing the two
    objective values: a jump, as in hard thresholding. This is the case of
    the large per-coordinate steps (learning rate over epsilon) an adaptive
    optimizer takes inside `ProximalOptimizer`. On an exact tie the smaller
    magnitude is returned; a zero step returns `x`.

    Args:
        x: Input tensor.
        step: Non-negative finite float, or non-negative tensor broadcastable
            to `x` (one step per coordinate).
        strength: Non-negative float (or tensor broadcastable to `x`), the
            strength :math:`a`.
        gamma: Float greater than 2 (or tensor), the concavity
            :math:`\gamma`.

    Returns:
        A tensor with the shape and dtype of `x`.

    Raises:
        InvalidArgumentError: If a Python number `step` is negative or not
            finite, `strength` is negative or `gamma` is not greater than 2.

    Example:

    >>> import numpy as np
    >>> from kerasreg import prox
    >>> x = np.array([-5.0, -2.5, 1.5, 0.5], dtype="float32")
    >>> np.asarray(prox.prox_scad(x, 1.0, strength=1.0, gamma=4.0)).tolist()
    [-5.0, -1.75, 0.5, 0.0]
    """
    _check_nonconvex_arguments(step, strength, gamma, 2)
    out_dtype, x, (s, a, g) = _prepare(x, step, strength, gamma)
    magnitude = ops.abs(x)
    zeros = ops.zeros_like(x)
    g_a = g * a
    s_a = s * a
    convex = s < g - 1.0
    # Minimisers over |z| <= a and over |z| >= gamma a.
    inner = _minimum(_maximum(magnitude - s_a, zeros), a)
    outer = _maximum(magnitude, g_a)
    denominator = ops.where(convex, g - 1.0 - s, ops.ones_like(s))
    middle = ((g - 1.0) * magnitude - s * g_a) / denominator
    closed = ops.where(
        magnitude <= a + s_a,
        inner,
        ops.where(magnitude <= g_a, middle, magnitude),
    )
    inner_objective = 0.5 * ops.square(inner - magnitude) + s_a * inner
    # `outer - magnitude`, written so that an infinite `x` gives 0, not NaN.
    outer_objective = 0.5 * ops.square(_maximum(g_a - magnitude, zeros)) + s * (
        0.5 * a * a * (g + 1.0)
    )
    jump = ops.where(outer_objective < inner_objective, outer, inner)
    z = ops.sign(x) * ops.where(convex, closed, jump)
    return ops.cast(ops.where(s == 0, x, z), out_dtype)
