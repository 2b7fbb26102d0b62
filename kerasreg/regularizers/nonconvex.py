"""Non-convex penalties that select without shrinking large weights: `MCP` and `SCAD`."""

from keras import ops

from kerasreg import prox as prox_lib
from kerasreg._validation import Interval
from kerasreg.regularizers._base import _NON_NEGATIVE
from kerasreg.regularizers._base import ProximalRegularizer
from kerasreg.regularizers._base import _abs_gradient
from kerasreg.regularizers._base import _as_compute_tensor
from kerasreg.regularizers._base import _constant
from kerasreg.regularizers._base import _square_gradient
from kerasreg.regularizers._base import serializable


def _where_gradient(condition, x):
    """The upstream gradient `where(condition, ., .)` passes to its first branch."""
    return ops.where(condition, ops.ones_like(x), ops.zeros_like(x))


@serializable
class MCP(ProximalRegularizer):
    r"""Minimax concave penalty (MCP): sparsity without shrinking large weights.

    .. math::

        R(w) = \sum_i \begin{cases}
            a \lvert w_i \rvert - \dfrac{w_i^2}{2 \gamma}
                & \lvert w_i \rvert \le \gamma a, \\
            \gamma a^2 / 2 & \lvert w_i \rvert > \gamma a,
        \end{cases}

    with :math:`a` = `strength` and :math:`\gamma` = `gamma`. Near zero it
    acts as an L1 penalty of strength :math:`a` and sets small weights to
    exactly zero; its slope falls linearly to 0 at :math:`\gamma a`, so weights
    beyond that are not shrunk at all (the lasso's bias on large
    coefficients is gone). The penalty is not convex. Its proximal operator
    (`kerasreg.prox.prox_mcp`) is firm thresholding for steps
    :math:`s < \gamma`; for :math:`s \ge \gamma`, as adaptive optimizers'
    per-coordinate steps often are, it returns the global minimiser of the
    non-convex proximal problem, hard thresholding at
    :math:`a \sqrt{s \gamma}`.

    **From skglm.** `skglm.MCPRegression(alpha, gamma)` minimizes
    :math:`\frac{1}{2n}\lVert y - Xw \rVert^2 + R(w)` with `strength=alpha`.
    A Keras loss `sum((y - y_pred) ** 2) / (2 * n)` with
    `MCP(strength=alpha, gamma=gamma)` has the same objective. With Keras'
    `"mse"` loss (twice that data term), use
    `MCP(strength=2 * alpha, gamma=gamma / 2)`, which is exactly twice the
    penalty. The objective is convex when the smallest eigenvalue of
    :math:`X^\top X / n` exceeds :math:`1 / \gamma`.

    Args:
        strength: Non-negative float, the strength :math:`a` (the L1 slope at
            zero). Defaults to `0.01`.
        gamma: Float greater than 0, the concavity :math:`\gamma`: the
            penalty is flat beyond :math:`\gamma a`. Defaults to `3.0`.

    Example:

    >>> import numpy as np
    >>> import kerasreg
    >>> reg = kerasreg.MCP(strength=1.0, gamma=2.0)
    >>> w = np.array([0.5, -1.5, 3.0], dtype="float32")
    >>> float(reg(w))
    2.375
    >>> np.asarray(reg.prox(w, step=1.0)).tolist()
    [0.0, -1.0, 3.0]
    """

    _parameter_constraints = {
        "strength": _NON_NEGATIVE,
        "gamma": Interval(0.0, None, closed="neither"),
    }

    def __init__(self, strength=0.01, gamma=3.0):
        self._set_arguments(strength=strength, gamma=gamma)

    def __call__(self, x):
        x, dtype = _as_compute_tensor(x)
        magnitude = ops.abs(x)
        inside = magnitude < _constant(self.gamma * self.strength, x)
        concave = _constant(self.strength, x) * magnitude - ops.square(magnitude) * _constant(
            0.5 / self.gamma, x
        )
        flat = _constant(0.5 * self.gamma * self.strength**2, x)
        return ops.cast(ops.sum(ops.where(inside, concave, flat)), dtype)

    def penalty_gradient(self, x):
        x, dtype = _as_compute_tensor(x)
        magnitude = ops.abs(x)
        upstream = _where_gradient(magnitude < _constant(self.gamma * self.strength, x), x)
        gradient = upstream * _constant(self.strength, x) + _square_gradient(
            -upstream * _constant(0.5 / self.gamma, x), magnitude
        )
        return ops.cast(_abs_gradient(gradient, x), dtype)

    def prox(self, x, step):
        return prox_lib.prox_mcp(x, step, self.strength, self.gamma)


@serializable
class SCAD(ProximalRegularizer):
    r"""Smoothly clipped absolute deviation (SCAD): sparsity without shrinking large weights.

    .. math::

        R(w) = \sum_i \begin{cases}
            a \lvert w_i \rvert & \lvert w_i \rvert \le a, \\
            \dfrac{2 \gamma a \lvert w_i \rvert - w_i^2 - a^2}{2 (\gamma - 1)}
                & a < \lvert w_i \rvert \le \gamma a, \\
            a^2 (\gamma + 1) / 2 & \lvert w_i \rvert > \gamma a,
        \end{cases}

    with :math:`a` = `strength` and :math:`\gamma` = `gamma` (Fan and Li's
    :math:`\lambda` and :math:`a`; they suggest 3.7). Up to :math:`a` it is
    the L1 penalty, so small weights become exact zeros; its slope then falls
    linearly to 0 at :math:`\gamma a`, and weights beyond are not shrunk. The
    penalty is not convex. Its proximal operator
    (`kerasreg.prox.prox_scad`) is the usual three-piece thresholding for
    steps :math:`s < \gamma - 1`; for :math:`s \ge \gamma - 1`, as adaptive
    optimizers' per-coordinate steps often are, it returns the global
    minimiser of the non-convex proximal problem, which jumps from below
    :math:`a` to at least :math:`\gamma a`.

    **From skglm.** `skglm.GeneralizedLinearEstimator(Quadratic(),
    SCAD(alpha, gamma))` minimizes :math:`\frac{1}{2n}\lVert y - Xw \rVert^2 +
    R(w)` with `strength=alpha`: a Keras loss
    `sum((y - y_pred) ** 2) / (2 * n)` with `SCAD(strength=alpha,
    gamma=gamma)`. Unlike MCP, twice a SCAD penalty is no SCAD penalty (the
    L1 slope and the end of the L1 piece are both :math:`a`), so Keras'
    `"mse"` loss has no SCAD counterpart: use the halved sum above. The
    objective is convex when the smallest eigenvalue of :math:`X^\top X / n`
    exceeds :math:`1 / (\gamma - 1)`.

    Args:
        strength: Non-negative float, the strength :math:`a` (the L1 slope at
            zero). Defaults to `0.01`.
        gamma: Float greater than 2, the concavity :math:`\gamma`: the
            penalty is flat beyond :math:`\gamma a`. Defaults to `3.7`.

    Example:

    >>> import numpy as np
    >>> import kerasreg
    >>> reg = kerasreg.SCAD(strength=1.0, gamma=3.0)
    >>> w = np.array([0.5, -2.0, 4.0], dtype="float32")
    >>> float(reg(w))
    4.25
    >>> np.asarray(reg.prox(w, step=1.0)).tolist()
    [0.0, -1.0, 4.0]
    """

    _parameter_constraints = {
        "strength": _NON_NEGATIVE,
        "gamma": Interval(2.0, None, closed="neither"),
    }

    def __init__(self, strength=0.01, gamma=3.7):
        self._set_arguments(strength=strength, gamma=gamma)

    def _coefficients(self, x):
        """The slope of each piece, the curvature and the constants, as tensors."""
        a, g = self.strength, self.gamma
        return [
            _constant(value, x)
            for value in (
                a,
                g * a,
                g * a / (g - 1.0),
                0.5 / (g - 1.0),
                0.5 * a * a / (g - 1.0),
                0.5 * a * a * (g + 1.0),
            )
        ]

    def __call__(self, x):
        x, dtype = _as_compute_tensor(x)
        a, g_a, slope, curvature, offset, flat = self._coefficients(x)
        magnitude = ops.abs(x)
        middle = slope * magnitude - ops.square(magnitude) * curvature - offset
        value = ops.where(
            magnitude <= a,
            a * magnitude,
            ops.where(magnitude <= g_a, middle, flat),
        )
        return ops.cast(ops.sum(value), dtype)

    def penalty_gradient(self, x):
        x, dtype = _as_compute_tensor(x)
        a, g_a, slope, curvature, _, _ = self._coefficients(x)
        magnitude = ops.abs(x)
        linear = _where_gradient(magnitude <= a, x)
        beyond = ops.where(magnitude <= a, ops.zeros_like(x), ops.ones_like(x))
        middle = ops.where(magnitude <= g_a, beyond, ops.zeros_like(x))
        gradient = linear * a + middle * slope + _square_gradient(-middle * curvature, magnitude)
        return ops.cast(_abs_gradient(gradient, x), dtype)

    def prox(self, x, step):
        return prox_lib.prox_scad(x, step, self.strength, self.gamma)
