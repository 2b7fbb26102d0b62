"""Non-convex penalties that select without shrinking large weights: `MCP` and `SCAD`."""

import math

from keras import ops

from kerasreg import prox as prox_lib
from kerasreg._validation import Interval
from kerasreg._validation import InvalidArgumentError
from kerasreg._validation import Options
from kerasreg.regularizers._base import _NON_NEGATIVE
from kerasreg.regularizers._base import ProximalRegularizer
from kerasreg.regularizers._base import _abs_gradient
from kerasreg.regularizers._base import _as_compute_tensor
from kerasreg.regularizers._base import _constant
from kerasreg.regularizers._base import _square_gradient
from kerasreg.regularizers._base import serializable

_GAMMA_UNITS = Options("strength", "glorot")


class _ScadGamma(Interval):
    """SCAD's `gamma`: above 0, and above 2 in the classic unit (checked in `__init__`)."""

    def __init__(self):
        super().__init__(0.0, None, closed="neither")

    @property
    def description(self):
        return "a float in (0, inf), in (2, inf) with gamma_unit='strength'"

    def invalid_values(self):
        return super().invalid_values() + [1.0, 2.0]  # with the default unit


def _glorot_scale(shape):
    """The RMS of Keras' default initializer (`glorot_uniform`) for a weight of `shape`.

    `sqrt(2 / (fan_in + fan_out))`, with the fans Keras' initializers use: a
    vector's length for both, a matrix's rows and columns, and for a kernel
    of rank 3 or more its last two axes times the product of the others (the
    receptive field of a convolution).
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) == 0:
        fan_in = fan_out = 1
    elif len(shape) == 1:
        fan_in = fan_out = shape[0]
    elif len(shape) == 2:
        fan_in, fan_out = shape
    else:
        receptive = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    return math.sqrt(2.0 / max(fan_in + fan_out, 1))


def _concavity(regularizer, x):
    r"""The classic :math:`\gamma` of `regularizer` on `x`: its flat point over the strength."""
    if regularizer.gamma_unit == "strength" or regularizer.strength == 0:
        return regularizer.gamma  # with no strength the penalty is 0 whatever gamma is
    return regularizer.gamma * _glorot_scale(x.shape) / regularizer.strength


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

    **Where the penalty turns flat.** :math:`\gamma a` is a weight magnitude:
    a `gamma` chosen for one network (one width, one input scale) puts it
    elsewhere in the weights of another. With `gamma_unit="glorot"`, the
    penalty turns flat at `gamma` times :math:`\sigma = \sqrt{2 /
    (\mathrm{fan_{in}} + \mathrm{fan_{out}})}`, the RMS of Keras' default
    initializer for the weight's shape (its fans as Keras' initializers count
    them: a convolution's receptive field times its channels), whatever the
    strength: it is the penalty above with concavity :math:`\gamma \sigma /
    a`, weight by weight. `gamma=1.0` then leaves unshrunk the weights larger
    than a typical weight at initialization. The flat point then moves
    neither with the strength nor with its scaling by `TargetSparsity` (in
    the classic unit, only the scaling leaves it where it is).

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
            penalty is flat beyond `gamma` times `gamma_unit`. Defaults to
            `3.0`.
        gamma_unit: `"strength"` (the default: flat beyond
            :math:`\gamma a`, the classic parameterization, skglm's) or
            `"glorot"` (flat beyond `gamma` times the RMS of Keras' default
            initialization for the weight's shape).

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
        "gamma_unit": _GAMMA_UNITS,
    }

    def __init__(self, strength=0.01, gamma=3.0, gamma_unit="strength"):
        self._set_arguments(strength=strength, gamma=gamma, gamma_unit=gamma_unit)

    def __call__(self, x):
        x, dtype = _as_compute_tensor(x)
        gamma = _concavity(self, x)
        magnitude = ops.abs(x)
        inside = magnitude < _constant(gamma * self.strength, x)
        concave = _constant(self.strength, x) * magnitude - ops.square(magnitude) * _constant(
            0.5 / gamma, x
        )
        flat = _constant(0.5 * gamma * self.strength**2, x)
        return ops.cast(ops.sum(ops.where(inside, concave, flat)), dtype)

    def penalty_gradient(self, x):
        x, dtype = _as_compute_tensor(x)
        gamma = _concavity(self, x)
        magnitude = ops.abs(x)
        upstream = _where_gradient(magnitude < _constant(gamma * self.strength, x), x)
        gradient = upstream * _constant(self.strength, x) + _square_gradient(
            -upstream * _constant(0.5 / gamma, x), magnitude
        )
        return ops.cast(_abs_gradient(gradient, x), dtype)

    def prox(self, x, step):
        return prox_lib.prox_mcp(x, step, self.strength, _concavity(self, x))


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

    With `gamma_unit="glorot"`, the penalty turns flat at `gamma` times the
    RMS of Keras' default initializer for the weight's shape instead of at
    :math:`\gamma a` (see `MCP`); that point must then lie beyond
    :math:`2a`, which is checked on each weight.

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
        gamma: Float, the concavity :math:`\gamma`: the penalty is flat
            beyond `gamma` times `gamma_unit`. Greater than 2 with
            `gamma_unit="strength"`, greater than 0 with `"glorot"`.
            Defaults to `3.7`.
        gamma_unit: `"strength"` (the default: flat beyond
            :math:`\gamma a`, Fan and Li's parameterization) or `"glorot"`
            (flat beyond `gamma` times the RMS of Keras' default
            initialization for the weight's shape).

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
        "gamma": _ScadGamma(),
        "gamma_unit": _GAMMA_UNITS,
    }

    def __init__(self, strength=0.01, gamma=3.7, gamma_unit="strength"):
        self._set_arguments(strength=strength, gamma=gamma, gamma_unit=gamma_unit)
        if self.gamma_unit == "strength" and self.gamma <= 2.0:
            raise InvalidArgumentError(
                "Invalid value for argument `gamma`: expected a float in (2, inf) (with "
                f"gamma_unit='strength'). Received: gamma={gamma!r}"
            )

    def _checked_concavity(self, x):
        """`_concavity`, refused where the flat point falls inside twice the strength."""
        gamma = _concavity(self, x)
        if self.gamma_unit == "glorot" and self.strength != 0 and gamma <= 2.0:
            raise InvalidArgumentError(
                "Invalid value for argument `gamma`: expected the flat point, gamma times "
                f"the Glorot scale {_glorot_scale(x.shape):.4g} of a weight of shape "
                f"{tuple(x.shape)}, beyond twice the strength {self.strength!r}. "
                f"Received: gamma={self.gamma!r}"
            )
        return gamma

    def _coefficients(self, x):
        """The slope of each piece, the curvature and the constants, as tensors."""
        a, g = self.strength, self._checked_concavity(x)
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
        return prox_lib.prox_scad(x, step, self.strength, self._checked_concavity(x))
