"""Penalties on each weight entry alone: `L1`, `L2` and `ElasticNet`."""

from keras import ops

from kerasreg import prox as prox_lib
from kerasreg._validation import Interval
from kerasreg.regularizers._base import _NON_NEGATIVE
from kerasreg.regularizers._base import ProximalRegularizer
from kerasreg.regularizers._base import _abs_gradient
from kerasreg.regularizers._base import _as_compute_tensor
from kerasreg.regularizers._base import _constant
from kerasreg.regularizers._base import _square_gradient
from kerasreg.regularizers._base import _threshold
from kerasreg.regularizers._base import serializable


@serializable
class L1(ProximalRegularizer):
    r"""L1 penalty, a drop-in replacement for `keras.regularizers.L1`.

    .. math::

        R(w) = \lambda_1 \sum_i \lvert w_i \rvert,
        \qquad
        \operatorname{prox}_{sR}(w)_i = \operatorname{sign}(w_i)
            \max(\lvert w_i \rvert - s \lambda_1, 0).

    The penalty has the same arguments, default and values as Keras' own
    `L1`; the proximal operator (soft thresholding) sets every weight with
    :math:`\lvert w_i \rvert \le s \lambda_1` to exactly zero.

    With a mean-squared-error loss on a linear model, `L1(l1=2 * alpha)`
    solves scikit-learn's `Lasso(alpha=alpha)`; with mean binary
    cross-entropy, `L1(l1=1 / (n * C))` solves
    `LogisticRegression(penalty="l1", C=C)` on `n` samples.

    Args:
        l1: Non-negative float, the strength :math:`\lambda_1`.
            Defaults to `0.01`.

    Example:

    >>> import numpy as np
    >>> import kerasreg
    >>> reg = kerasreg.L1(l1=0.5)
    >>> w = np.array([[1.0, -2.0], [0.25, 0.0]], dtype="float32")
    >>> float(reg(w))
    1.625
    >>> np.asarray(reg.prox(w, step=1.0)).tolist()
    [[0.5, -1.5], [0.0, 0.0]]
    """

    _parameter_constraints = {"l1": _NON_NEGATIVE}

    def __init__(self, l1=0.01):
        self._set_arguments(l1=l1)

    def __call__(self, x):
        x, dtype = _as_compute_tensor(x)
        penalty = _constant(self.l1, x) * ops.sum(ops.abs(x))
        return ops.cast(penalty, dtype)

    def penalty_gradient(self, x):
        x, dtype = _as_compute_tensor(x)
        return ops.cast(_abs_gradient(_constant(self.l1, x), x), dtype)

    def prox(self, x, step):
        return prox_lib.soft_threshold(x, _threshold(step, self.l1, x))

    def elementwise_coefficients(self):
        return (self.l1, 0.0) if self._keeps_math_of(L1) else None

    def compiles_with_xla(self):
        return self._keeps_math_of(L1)


@serializable
class L2(ProximalRegularizer):
    r"""Squared L2 penalty, a drop-in replacement for `keras.regularizers.L2`.

    .. math::

        R(w) = \lambda_2 \sum_i w_i^2,
        \qquad
        \operatorname{prox}_{sR}(w) = \frac{w}{1 + 2 s \lambda_2}.

    The proximal operator shrinks every weight by the same factor and never
    makes a weight zero: L2 shrinks, it does not select.

    Args:
        l2: Non-negative float, the strength :math:`\lambda_2`.
            Defaults to `0.01`.

    Example:

    >>> import numpy as np
    >>> import kerasreg
    >>> reg = kerasreg.L2(l2=0.5)
    >>> w = np.array([1.0, -2.0, 0.0], dtype="float32")
    >>> float(reg(w))
    2.5
    >>> np.asarray(reg.prox(w, step=1.0)).tolist()
    [0.5, -1.0, 0.0]
    """

    _parameter_constraints = {"l2": _NON_NEGATIVE}

    def __init__(self, l2=0.01):
        self._set_arguments(l2=l2)

    def __call__(self, x):
        x, dtype = _as_compute_tensor(x)
        penalty = _constant(self.l2, x) * ops.sum(ops.square(x))
        return ops.cast(penalty, dtype)

    def penalty_gradient(self, x):
        x, dtype = _as_compute_tensor(x)
        return ops.cast(_square_gradient(_constant(self.l2, x), x), dtype)

    def prox(self, x, step):
        return prox_lib.prox_squared_l2(x, _threshold(step, self.l2, x))

    def elementwise_coefficients(self):
        return (0.0, self.l2) if self._keeps_math_of(L2) else None

    def compiles_with_xla(self):
        return self._keeps_math_of(L2)


@serializable
class ElasticNet(ProximalRegularizer):
    r"""Elastic-net penalty: a mix of L1 and squared L2.

    .. math::

        R(w) = \lambda \Big( \rho \sum_i \lvert w_i \rvert
            + (1 - \rho) \sum_i w_i^2 \Big),

    with :math:`\lambda` = `strength` and :math:`\rho` = `l1_ratio`. It equals
    `keras.regularizers.L1L2(l1=strength * l1_ratio,
    l2=strength * (1 - l1_ratio))`; `l1_ratio=1` is `L1(strength)` and
    `l1_ratio=0` is `L2(strength)`. The proximal operator soft-thresholds at
    :math:`s \lambda \rho`, then divides by :math:`1 + 2 s \lambda (1 - \rho)`.

    **From scikit-learn.** `sklearn.linear_model.ElasticNet(alpha, l1_ratio=r)`
    minimizes :math:`\frac{1}{2n}\lVert y - Xw \rVert^2 + \alpha r
    \lVert w \rVert_1 + \frac{\alpha (1 - r)}{2} \lVert w \rVert_2^2`. Twice
    that objective is a Keras mean-squared-error loss plus this penalty with

    - `strength = alpha * (1 + r)`,
    - `l1_ratio = 2 * r / (1 + r)`.

    Args:
        strength: Non-negative float, the overall strength :math:`\lambda`.
            Defaults to `0.01`.
        l1_ratio: Float in [0, 1], the share :math:`\rho` of the L1 term.
            Defaults to `0.5`.

    Example:

    >>> import numpy as np
    >>> import kerasreg
    >>> reg = kerasreg.ElasticNet(strength=1.0, l1_ratio=0.5)
    >>> w = np.array([-3.0, 0.25, 2.0], dtype="float32")
    >>> float(reg(w))
    9.15625
    >>> np.asarray(reg.prox(w, step=1.0)).tolist()
    [-1.25, 0.0, 0.75]
    """

    _parameter_constraints = {
        "strength": _NON_NEGATIVE,
        "l1_ratio": Interval(0.0, 1.0),
    }

    def __init__(self, strength=0.01, l1_ratio=0.5):
        self._set_arguments(strength=strength, l1_ratio=l1_ratio)

    @property
    def l1(self):
        """The L1 coefficient, `strength * l1_ratio`."""
        return self.strength * self.l1_ratio

    @property
    def l2(self):
        """The squared-L2 coefficient, `strength * (1 - l1_ratio)`."""
        return self.strength * (1.0 - self.l1_ratio)

    def __call__(self, x):
        x, dtype = _as_compute_tensor(x)
        penalty = ops.zeros((), dtype=x.dtype)
        if self.l1 != 0.0:
            penalty += _constant(self.l1, x) * ops.sum(ops.abs(x))
        if self.l2 != 0.0:
            penalty += _constant(self.l2, x) * ops.sum(ops.square(x))
        return ops.cast(penalty, dtype)

    def penalty_gradient(self, x):
        x, dtype = _as_compute_tensor(x)
        terms = []
        if self.l1 != 0.0:
            terms.append(_abs_gradient(_constant(self.l1, x), x))
        if self.l2 != 0.0:
            terms.append(_square_gradient(_constant(self.l2, x), x))
        if not terms:
            return ops.zeros_like(ops.cast(x, dtype))
        return ops.cast(terms[0] if len(terms) == 1 else terms[0] + terms[1], dtype)

    def prox(self, x, step):
        return prox_lib.prox_elastic_net(
            x, _threshold(step, self.l1, x), _threshold(step, self.l2, x)
        )

    def elementwise_coefficients(self):
        return (self.l1, self.l2) if self._keeps_math_of(ElasticNet) else None

    def compiles_with_xla(self):
        return self._keeps_math_of(ElasticNet)
