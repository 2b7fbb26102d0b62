r"""Regularizers that carry their proximal operator.

Each regularizer here is a `keras.regularizers.Regularizer`: pass it as
`kernel_regularizer=` (or to `add_weight(regularizer=...)` in your own
layers) and Keras adds its penalty to the loss. Each also knows its proximal
operator,

.. math::

    \operatorname{prox}_{sR}(w) = \operatorname*{argmin}_z \;
        \tfrac{1}{2} \lVert z - w \rVert_2^2 + s \, R(z),

through `prox(w, step)`, which is what lets a proximal optimizer turn an L1
penalty into exact zeros. The maths lives in `kerasreg.prox`; the classes
here hold hyperparameters, compute the penalty and serialize.

All classes are registered with Keras serialization under the `"kerasreg"`
package: once `kerasreg` is imported, models that use them save to `.keras`
and load with plain `keras.models.load_model`.
"""

import dataclasses
import inspect
import math
import numbers
import re

import keras
import numpy as np
from keras import ops

from kerasreg import _autodiff
from kerasreg import prox as prox_lib
from kerasreg._saving import register_serializable
from kerasreg._validation import AnyOf
from kerasreg._validation import Axes
from kerasreg._validation import Configurable
from kerasreg._validation import Integer
from kerasreg._validation import Interval
from kerasreg._validation import InvalidArgumentError
from kerasreg._validation import Options
from kerasreg._validation import Structure

__all__ = [
    "ProximalRegularizer",
    "L1",
    "L2",
    "ElasticNet",
    "MCP",
    "SCAD",
    "GroupLasso",
    "CoupledGroupLasso",
    "MagnitudePruning",
    "get",
]

_NON_NEGATIVE = Interval(0.0, None)
_HALF_DTYPES = ("float16", "bfloat16")


def _threshold(step, coefficient, x):
    """`step * coefficient`, computed in the compute dtype of `x`.

    Python and NumPy scalars are multiplied in double precision, so that a
    float64 weight gets a float64 threshold.
    """
    if isinstance(step, numbers.Real) and not isinstance(step, bool):
        if not step >= 0:  # also refuses NaN
            raise InvalidArgumentError(
                "Invalid value for argument `step`: expected a non-negative "
                f"float. Received: step={step!r}"
            )
        return float(step) * coefficient
    dtype = keras.backend.standardize_dtype(ops.convert_to_tensor(x).dtype)
    dtype = "float32" if dtype in _HALF_DTYPES else dtype
    return prox_lib._as_tensor(step, dtype) * prox_lib._as_tensor(coefficient, dtype)


def _constant(value, x):
    """The Python float `value` as an exact tensor of the dtype of `x`."""
    return prox_lib._as_tensor(value, keras.backend.standardize_dtype(x.dtype))


def _as_compute_tensor(x):
    """Returns (`x` as a tensor in its compute dtype, the original dtype)."""
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if not dtype.startswith(("float", "bfloat")):
        # An integer weight would get an integer strength (0 for 0.1): a
        # silent zero penalty. Keras only trains floating-point weights.
        raise InvalidArgumentError(
            "Invalid weight for a kerasreg regularizer: expected a "
            f"floating-point weight. Received: a weight of dtype {dtype}"
        )
    if dtype in _HALF_DTYPES:
        return ops.cast(x, "float32"), dtype
    return x, dtype


def _abs_gradient(upstream, x):
    """The gradient `upstream * d|x|/dx`, as the backend's autodiff computes it.

    TensorFlow and PyTorch multiply by `sign(x)`, which is 0 at 0 and at
    -0.0. JAX (the JVP of `lax.abs` in `jax/_src/lax/lax.py`) is
    `select(x >= 0, g, -g)`, whose transpose adds the two branches: `upstream`
    where `x >= 0` (at 0 and -0.0 too), `0 + -upstream` elsewhere (NaN
    included), which is 0.0, not -0.0, where `upstream` is 0.
    """
    if keras.backend.backend() == "jax":
        zeros = ops.zeros_like(x)
        positive = x >= 0
        return ops.where(positive, upstream, zeros) + -ops.where(positive, zeros, upstream)
    return upstream * ops.sign(x)


def _sqrt_gradient(upstream, root):
    """The gradient `upstream * d sqrt(y) / dy` at `root = sqrt(y)`, as autodiff computes it.

    JAX computes `upstream * (0.5 / root)`, PyTorch `upstream / (2 * root)`.
    TensorFlow's `SqrtGrad` kernel gives 0 where `upstream` is 0, and
    otherwise rounds two ways, one ulp apart at times: `dy * (0.5 / y)` on
    whole SIMD packets and `(0.5 * dy) / y` on the entries Eigen leaves over,
    which depend on the tensor's size, alignment and the CPU. No formula
    written with ops reproduces that, so TensorFlow calls the kernel itself,
    on a tensor of the same shape as in the penalty's gradient.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.raw_ops.SqrtGrad(y=root, dy=upstream)
    if backend == "torch":
        return upstream / (root * 2.0)
    return upstream * (_constant(0.5, root) / root)


def _square_gradient(upstream, x):
    """The gradient `upstream * d x**2 / dx`, rounded as every backend rounds it."""
    return upstream * (x * 2.0)


def _safe_norm_gradient(x, axis, scale):
    """The gradient of `scale * sum(prox._safe_norm(x, axis))` with respect to `x`.

    Follows `_safe_norm` step by step: zero through both `where`s at a
    group whose squares sum to 0 (all zeros, or so small they underflow).
    """
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    zero = squared == 0
    root = ops.sqrt(ops.where(zero, ops.ones_like(squared), squared))
    upstream = ops.where(zero, ops.zeros_like(squared), scale * ops.ones_like(squared))
    upstream = _sqrt_gradient(upstream, root)
    upstream = ops.where(zero, ops.zeros_like(squared), upstream)
    return _square_gradient(upstream, x)


class ProximalRegularizer(Configurable, keras.regularizers.Regularizer):
    """Base class of regularizers that know their proximal operator.

    A subclass declares its `__init__` arguments and their constraints in
    `_parameter_constraints`, sets them with `self._set_arguments(...)`, and
    implements `__call__(x)` (the penalty) and `prox(x, step)`. Validation,
    `get_config`, `from_config` and `repr` come from `Configurable`; equality
    (same class, same configuration) from this class. To be saved in
    `.keras` files, a subclass must also be registered with
    `keras.saving.register_keras_serializable`; `kerasreg.regularizers.get`
    knows every registered subclass by its class name and its snake-case
    name.

    `ProximalOptimizer` asks `penalty_gradient(x)` for the gradient of the
    penalty, to remove it from the loss gradient. The default differentiates
    `__call__` with the backend's automatic differentiation; a subclass may
    override it with a closed form, which must give the same numbers.
    """

    def __call__(self, x):
        """Returns the penalty `R(x)`, a scalar in the dtype of `x`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__().")

    def penalty_gradient(self, x):
        """Returns the gradient of `self(x)` with respect to `x`.

        The gradient as the backend's automatic differentiation computes it,
        rounding included, so that subtracting it from a loss gradient removes
        exactly the penalty's share. The default differentiates `__call__`.

        Args:
            x: Tensor, the weight.

        Returns:
            A tensor with the shape and dtype of `x`.
        """
        return _autodiff.gradients(lambda values: self(values[0]), [ops.convert_to_tensor(x)])[0]

    def prox(self, x, step):
        r"""Returns :math:`\operatorname{argmin}_z \frac12 \|z - x\|^2 + step \cdot R(z)`.

        Args:
            x: Tensor, the weight.
            step: Non-negative scalar, or tensor broadcastable to `x` (one
                step per coordinate).

        Returns:
            A tensor with the shape and dtype of `x`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement prox().")

    def prox_state(self, x):
        """Initial state of a prox that changes during training, or `None`.

        A regularizer whose proximal operator depends on the training
        iteration or on earlier steps (a pruning schedule and its mask)
        returns a tuple of tensors here; `ProximalOptimizer` keeps them as
        optimizer variables (saved with the optimizer, carried by JAX's
        stateless training) and calls `prox_update` instead of `prox`.
        Defaults to `None`: the prox is a function of the weight and step.

        Args:
            x: The weight (a variable or tensor).
        """
        return None

    def prox_update(self, x, step, iteration, state):
        """The prox at training iteration `iteration`, with its state.

        Only called when `prox_state` returns a state.

        Args:
            x: Tensor, the weight after the optimizer's step.
            step: The step, as for `prox`.
            iteration: Integer scalar tensor, the number of optimizer steps
                taken before this one.
            state: Tuple of tensors, as `prox_state` built them.

        Returns:
            A tuple `(new_x, new_state)`.
        """
        return self.prox(x, step), state

    def elementwise_coefficients(self):
        """`(l1, l2)` if the penalty is `l1 * sum|w| + l2 * sum w**2`, else `None`.

        A declaration for `ProximalOptimizer`'s fast paths: the variables of
        penalties that give their coefficients are handled together (fused
        kernels on eager PyTorch), with the arithmetic of `prox` and
        `penalty_gradient`. A subclass that changes the penalty or its prox
        inherits `None` from here unless it declares its own coefficients.
        Defaults to `None`.
        """
        return None

    def compiles_with_xla(self):
        """Whether `prox` and `penalty_gradient` are stateless and XLA compiles them.

        A declaration for `ProximalOptimizer`'s fast path in TensorFlow
        graphs, which runs the proxes of such penalties as one XLA
        computation. Defaults to `False`.
        """
        return False

    def _keeps_math_of(self, cls):
        """Whether this object's penalty, gradient and prox are those of `cls`."""
        kind = type(self)
        return all(
            getattr(kind, name) is getattr(cls, name)
            for name in ("__call__", "penalty_gradient", "prox", "prox_state", "prox_update")
        )

    # A prox over several weights at once: `ProximalOptimizer` groups the
    # variables whose regularizers have a truthy `shares_prox` and are equal
    # (`==`, hence hashable) and calls `prox_update_many` once per group.
    shares_prox = False

    def prox_update_many(self, values, steps, iteration, states):
        """The prox of several weights that share it, with their states.

        Called by `ProximalOptimizer`, once per step, on every variable whose
        regularizer has a truthy `shares_prox` and equals this one. The
        default takes each weight's own `prox_update`.

        Args:
            values: List of tensors, the weights after the optimizer's step.
            steps: List of steps, one per weight, as for `prox`.
            iteration: Integer scalar tensor, as for `prox_update`.
            states: List of the weights' states (tuples of tensors, as
                `prox_state` built them), or `None` where it returned none.

        Returns:
            A tuple `(new_values, new_states)` of lists, one entry per weight.
        """
        results = [
            (self.prox(x, step), None)
            if state is None
            else self.prox_update(x, step, iteration, state)
            for x, step, state in zip(values, steps, states, strict=True)
        ]
        return [x for x, _ in results], [state for _, state in results]

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self), tuple(sorted(self.get_config().items()))))


@register_serializable
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


@register_serializable
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


@register_serializable
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


def _where_gradient(condition, x):
    """The upstream gradient `where(condition, ., .)` passes to its first branch."""
    return ops.where(condition, ops.ones_like(x), ops.zeros_like(x))


@register_serializable
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


@register_serializable
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


@register_serializable
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


class CoupledGroupLasso:
    r"""Group lasso over channels whose entries lie in several variables.

    A channel of a residual stream is written by several layers (kernel
    columns, biases) and carried by others (normalization scales and
    shifts): it only leaves the model when all these entries are zero
    together. This penalty puts one Euclidean norm on each channel's
    entries, over all the variables that hold them:

    .. math::

        R = \lambda \sum_g \sqrt{n_g} \sum_{c=1}^{C_g}
            \lVert w_{g,c} \rVert_2 ,

    where group :math:`g` has :math:`C_g` channels of :math:`n_g` entries
    each, and :math:`w_{g,c}` gathers every entry of channel :math:`c`. As
    for `GroupLasso`, the factor :math:`\sqrt{n_g}` puts a channel of 9
    entries and one of 900 under thresholds in proportion to the square root
    of their sizes, so that the pressure per entry is the same.

    **Proximal operator.** With one scalar step :math:`s` for all the
    variables, block soft thresholding of each channel at
    :math:`s \lambda \sqrt{n_g}`; with per-coordinate steps (adaptive
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

    def __init__(self, strength, groups):
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
        for (size, _), matrix in zip(self._groups, self._matrices(values), strict=True):
            norms = prox_lib._safe_norm(matrix, 1)
            total = total + _constant(math.sqrt(size), total) * ops.sum(norms)
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
            _safe_norm_gradient(m, 1, _constant(math.sqrt(size), m) * strength)
            for (size, _), m in zip(self._groups, self._matrices(x), strict=True)
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
                prox_lib.block_soft_threshold(
                    m, step * _constant(self.strength * math.sqrt(size), m), axis=1
                )
                for (size, _), m in zip(self._groups, matrices, strict=True)
            ]
        else:
            scales = [
                ops.broadcast_to(prox_lib._as_tensor(s, dtype), tuple(v.shape))
                for s, v in zip(steps, x, strict=True)
            ]
            results = [
                prox_lib.block_soft_threshold_diagonal(
                    m, self.strength * math.sqrt(size), s, axis=1
                )
                for (size, _), m, s in zip(
                    self._groups, matrices, self._matrices(scales), strict=True
                )
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


def _invalid_groups(expected, value):
    if isinstance(value, np.ndarray) and value.size > 8:
        value = f"<array of shape {value.shape}>"
    return InvalidArgumentError(
        f"Invalid value for argument `groups`: expected {expected}. Received: {value!r}"
    )


@register_serializable
class MagnitudePruning(ProximalRegularizer):
    r"""Gradual magnitude pruning: keep the largest weights, on a schedule.

    The constraint "at most :math:`k` non-zeros" instead of a penalty. Its
    proximal operator is the projection that keeps the :math:`k` largest
    magnitudes (`kerasreg.prox.project_sparsity`), so `ProximalOptimizer`
    applies it after each step like any other prox. The sparsity follows the
    gradual schedule of Zhu and Gupta (2017), in optimizer steps :math:`t`:

    .. math::

        s_t = s_f + (s_i - s_f)
            \left(1 - \frac{t - t_0}{t_1 - t_0}\right)^{p}
        \quad (t_0 \le t \le t_1),

    with :math:`s_t = s_f` from `end_step` on. Here :math:`t` counts the
    optimizer steps taken before the current one (the first step has
    :math:`t = 0`), as the legacy toolkit's step counter does. The pruning
    mask is recomputed after the steps with :math:`t = t_0, t_0 + \Delta t,
    \dots` (:math:`\Delta t` = `frequency`) and :math:`t = t_1`, so the
    final sparsity is in force from the step after `end_step` on: choose
    `end_step` below the number of training steps. Nothing is pruned
    before `begin_step`. In between recomputations, and after `end_step`,
    the mask is held: pruned weights stay exactly zero while the others
    train. `begin_step == end_step` prunes in one shot. This is the Keras 3 counterpart of
    the legacy toolkit's `prune_low_magnitude` with `PolynomialDecay` (same
    argument names); it prunes each weight to the same sparsity (at least
    that many zeros: magnitudes tied at the threshold go together).

    **Global pruning.** With `scope="global"`, one threshold holds across
    every weight whose regularizer is an equal `MagnitudePruning` (same
    arguments, `scope="global"` included): on each turn of the schedule,
    the magnitudes of all those weights are ranked together and
    :math:`\operatorname{round}(s_t n)` of their :math:`n` entries in all go
    (ties together), so the total sparsity follows the schedule while each
    layer ends with its own (weights of small magnitude lose more). Each
    weight keeps its own mask. Share it by passing the same (or an equal)
    instance to several layers' `kernel_regularizer=`, or with
    `kerasreg.regularize(model, kerasreg.MagnitudePruning(0.95,
    scope="global"))`: the weights are grouped by equality, not identity, so
    `regularize`'s copies, and the one instance per layer a `.keras` file
    loads, still share one threshold. `ProximalOptimizer` groups the weights
    (see `shares_prox` and `prox_update_many`); the weights it trains are
    the group, so a regularized weight left out of its `var_list`, or
    without a gradient in a step, is not counted.

    The penalty is zero (the constraint holds after every step). Called
    outside a `ProximalOptimizer` (`prox(x, step)`), it projects onto
    `final_sparsity` (onto the final pattern, with a structure); with `scope="global"`
    too, that one weight alone.

    **Patterns.** By default any entry may go (unstructured). Two structured
    patterns follow the same schedule:

    - `structure=(n, m)`: N:M sparsity, at most :math:`n` non-zeros in every
      :math:`m` consecutive entries along the input axis (axis -2: a `Dense`
      kernel's input features, a convolution's input channels; axis 0 for a
      1-D weight), the pattern of sparse tensor cores (2:4). Each
      recomputation zeroes the :math:`\operatorname{round}(s_t m)` smallest
      magnitudes of every block (`kerasreg.prox.project_n_m`), so 2:4 goes
      from 0 to 1 to 2 zeros per block and ends exactly 2:4;
      `final_sparsity` is then :math:`(m - n) / m` and may be left out.
    - `group_axis=`: whole groups go, as in `GroupLasso` (each index along
      `group_axis` is a group; `-1`: a `Dense` layer's units, a
      convolution's filters), those of smallest Euclidean norm
      (`kerasreg.prox.project_group_sparsity`). Each recomputation zeroes
      :math:`\operatorname{round}(s_t G)` of the :math:`G` groups, fewer when
      `round_to` rounds the number kept up to a multiple of it. Zeroed units
      are what `kerasreg.compact` removes.

    Args:
        final_sparsity: Float in [0, 1], :math:`s_f`, the fraction of the
            weight's entries (of its groups, with `group_axis`) that are
            zero at the end. Required, except with `structure`, where it
            must be :math:`(m - n) / m` if given. Defaults to `None`.
        begin_step: Int, :math:`t_0`, the step at which pruning starts.
            Defaults to `0`.
        end_step: Int, :math:`t_1 \ge t_0`, the step at which the final
            sparsity is reached. Defaults to `1000`.
        initial_sparsity: Float in [0, 1], :math:`s_i`. Defaults to `0.0`.
        frequency: Int >= 1, steps between recomputations of the mask.
            Defaults to `100`.
        power: Positive float, :math:`p`. Defaults to `3.0` (cubic).
        scope: `"layer"` (each weight pruned to the schedule's sparsity) or
            `"global"` (one threshold across the weights of equal
            instances). Defaults to `"layer"`.
        structure: A pair `(n, m)` of ints with :math:`1 \le n < m`, for
            N:M sparsity along the input axis, or `None`. The length of that
            axis must be a multiple of :math:`m`. Defaults to `None`.
        group_axis: Int, tuple of ints, or `None`: prune whole groups laid
            out along this axis (axes), as `GroupLasso`'s `group_axis`.
            Not with `structure`. Defaults to `None` (entries).
        round_to: Int >= 1, with `group_axis` only: the number of groups
            kept is rounded up to a multiple of it (all of them at most);
            it may not exceed the number of groups. Defaults to `1`.

    Raises:
        InvalidArgumentError: If an argument is invalid, or, when the mask
            is built, `m` does not divide the weight's input axis, or
            `round_to` exceeds its number of groups.

    Example:

    >>> import numpy as np
    >>> import kerasreg
    >>> reg = kerasreg.MagnitudePruning(0.9, begin_step=0, end_step=100)
    >>> [round(reg.sparsity_at(t), 4) for t in (0, 50, 100, 500)]
    [0.0, 0.7875, 0.9, 0.9]
    >>> w = np.array([[1.0, -4.0], [3.0, 0.5], [-2.0, 1.0], [0.1, 2.0]], "float32")
    >>> np.asarray(kerasreg.MagnitudePruning(structure=(2, 4)).prox(w, 0.1)).tolist()
    [[0.0, -4.0], [3.0, 0.0], [-2.0, 0.0], [0.0, 2.0]]
    >>> units = kerasreg.MagnitudePruning(0.5, group_axis=-1)
    >>> np.asarray(units.prox(w, 0.1)).tolist()
    [[0.0, -4.0], [0.0, 0.5], [0.0, 1.0], [0.0, 2.0]]
    """

    _parameter_constraints = {
        "final_sparsity": AnyOf(Interval(0.0, 1.0), None),
        "begin_step": Integer(0, 2**31 - 1),
        "end_step": Integer(0, 2**31 - 1),
        "initial_sparsity": Interval(0.0, 1.0),
        "frequency": Integer(1, 2**31 - 1),
        "power": Interval(0.0, None, closed="neither"),
        "scope": Options("layer", "global"),
        "structure": AnyOf(Structure(), None),
        "group_axis": AnyOf(Axes(), None),
        "round_to": Integer(1, 2**31 - 1),
    }

    def __init__(
        self,
        final_sparsity=None,
        begin_step=0,
        end_step=1000,
        initial_sparsity=0.0,
        frequency=100,
        power=3.0,
        scope="layer",
        structure=None,
        group_axis=None,
        round_to=1,
    ):
        self._set_arguments(
            final_sparsity=final_sparsity,
            begin_step=begin_step,
            end_step=end_step,
            initial_sparsity=initial_sparsity,
            frequency=frequency,
            power=power,
            scope=scope,
            structure=structure,
            group_axis=group_axis,
            round_to=round_to,
        )
        self._check_pattern()
        if self.end_step < self.begin_step:
            raise InvalidArgumentError(
                "Invalid value for argument `end_step`: expected an int >= "
                f"begin_step={self.begin_step}. Received: end_step={end_step!r}"
            )
        if self.initial_sparsity > self._final_sparsity:
            raise InvalidArgumentError(
                "Invalid value for argument `initial_sparsity`: expected a float "
                f"<= final_sparsity={self._final_sparsity}. "
                f"Received: initial_sparsity={initial_sparsity!r}"
            )

    def _check_pattern(self):
        """Refuses `final_sparsity`, `structure`, `group_axis`, `round_to` that do not fit."""
        final, structure = self.final_sparsity, self.structure
        if structure is not None and self.group_axis is not None:
            raise InvalidArgumentError(
                "Invalid value for argument `group_axis`: expected None with a `structure` "
                f"(N:M blocks run along the input axis). Received: group_axis={self.group_axis!r}"
            )
        if self.scope == "global" and (structure is not None or self.group_axis is not None):
            raise InvalidArgumentError(
                "Invalid value for argument `scope`: expected 'layer' with a `structure` or a "
                "`group_axis` (one threshold across weights is for entries; N:M blocks and "
                f"groups are ranked within each weight). Received: scope={self.scope!r}"
            )
        if self.round_to != 1 and self.group_axis is None:
            raise InvalidArgumentError(
                "Invalid value for argument `round_to`: expected 1 without a `group_axis`. "
                f"Received: round_to={self.round_to!r}"
            )
        if structure is None and final is None:
            raise InvalidArgumentError(
                "Invalid value for argument `final_sparsity`: expected a float in [0, 1] "
                "(it may be left out only with a `structure`). Received: final_sparsity=None"
            )
        if structure is not None and final is not None:
            n, m = structure
            if not math.isclose(final, (m - n) / m, rel_tol=1e-9, abs_tol=1e-12):
                raise InvalidArgumentError(
                    f"Invalid value for argument `final_sparsity`: expected (m - n) / m = "
                    f"{(m - n) / m!r} for structure={structure!r}, or None. "
                    f"Received: final_sparsity={final!r}"
                )

    @property
    def _final_sparsity(self):
        """:math:`s_f`: `final_sparsity`, or :math:`(m - n) / m` for an N:M structure."""
        if self.final_sparsity is None:
            n, m = self.structure
            return (m - n) / m
        return self.final_sparsity

    def sparsity_at(self, iteration):
        """The scheduled sparsity :math:`s_t` at step `t = iteration` (int or tensor)."""
        begin, end = float(self.begin_step), float(self.end_step)
        final = self._final_sparsity
        if isinstance(iteration, numbers.Integral):
            if iteration >= self.end_step:  # also one-shot pruning, begin == end
                return final
            if iteration <= self.begin_step:
                return self.initial_sparsity
            progress = (iteration - begin) / (end - begin)
            remaining = (1.0 - progress) ** self.power
            return final + (self.initial_sparsity - final) * remaining
        t = ops.cast(iteration, "float32")
        progress = ops.clip((t - begin) / max(end - begin, 1.0), 0.0, 1.0)
        progress = ops.where(t >= end, 1.0, progress)
        remaining = ops.power(1.0 - progress, self.power)
        return final + (self.initial_sparsity - final) * remaining

    def applied_sparsity(self, iterations):
        """Sparsity of the mask in force after `iterations` optimizer steps.

        The mask is only recomputed on the schedule's turns, so this is
        :math:`s_t` at the last turn before `iterations`, or `0.0` if
        pruning has not started.
        """
        last = min(int(iterations) - 1, self.end_step)
        if last < self.begin_step:
            return 0.0
        if last < self.end_step:
            last -= (last - self.begin_step) % self.frequency
        return self.sparsity_at(last)

    def __call__(self, x):
        x = ops.convert_to_tensor(x)
        return ops.zeros((), dtype=x.dtype)

    def penalty_gradient(self, x):
        return ops.zeros_like(ops.convert_to_tensor(x))

    def _input_axis(self, shape):
        """The axis N:M blocks run along, checked against `shape`."""
        n, m = self.structure
        axis = -2 if len(shape) >= 2 else 0
        if not shape or shape[axis] is None or shape[axis] % m:
            length = shape[axis] if shape else None
            raise InvalidArgumentError(
                f"Invalid value for argument `structure`: expected blocks of m={m} that "
                f"divide the input axis (axis {axis}, length {length}) of the weight of "
                f"shape {tuple(shape)}. Received: structure={self.structure!r}"
            )
        return axis

    def _group_axes(self, shape):
        """The axes each group spans, with `round_to` checked against the groups."""
        reduce_axes = _reduce_axes(self.group_axis, shape)
        groups = math.prod(int(shape[a]) for a in range(len(shape)) if a not in reduce_axes)
        if self.round_to > groups:
            raise InvalidArgumentError(
                f"Invalid value for argument `round_to`: expected at most the number of "
                f"groups, {groups} along group_axis={self.group_axis!r} of the weight of "
                f"shape {tuple(shape)}. Received: round_to={self.round_to!r}"
            )
        return reduce_axes

    def _keep(self, x, sparsity):
        """Boolean mask of the entries kept at `sparsity`, in this pattern."""
        if self.structure is not None:
            m = self.structure[1]
            zeros = ops.round(prox_lib._as_tensor(sparsity, "float32") * m)
            return prox_lib._n_m_mask(x, zeros, m, self._input_axis(tuple(x.shape)))
        if self.group_axis is not None:
            axes = self._group_axes(tuple(x.shape))
            return prox_lib._group_mask(x, sparsity, axes, self.round_to)
        return prox_lib._sparsity_mask(x, sparsity)

    def prox(self, x, step):
        if self.structure is not None:
            x = ops.convert_to_tensor(x)
            n, m = self.structure
            return prox_lib.project_n_m(x, n, m, self._input_axis(tuple(x.shape)))
        if self.group_axis is not None:
            x = ops.convert_to_tensor(x)
            axes = self._group_axes(tuple(x.shape))
            return prox_lib.project_group_sparsity(x, self.final_sparsity, axes, self.round_to)
        return prox_lib.project_sparsity(x, self.final_sparsity)

    def prox_state(self, x):
        shape = tuple(x.shape)
        if self.structure is not None:
            self._input_axis(shape)
        elif self.group_axis is not None:
            self._group_axes(shape)
        return (ops.ones(x.shape, dtype=x.dtype),)

    def _recomputes(self, iteration):
        """Whether the mask is recomputed after step `iteration` (an int32 tensor)."""
        in_range = ops.logical_and(iteration >= self.begin_step, iteration <= self.end_step)
        on_turn = ops.logical_or(
            ops.mod(iteration - self.begin_step, self.frequency) == 0,
            iteration == self.end_step,
        )
        return ops.logical_and(in_range, on_turn)

    def prox_update(self, x, step, iteration, state):
        (mask,) = state
        x = ops.convert_to_tensor(x)
        iteration = ops.cast(iteration, "int32")

        def recompute():
            keep = self._keep(x, self.sparsity_at(iteration))
            return ops.cast(keep, mask.dtype)

        mask = ops.cond(self._recomputes(iteration), recompute, lambda: mask)
        return ops.where(mask > 0, x, ops.zeros_like(x)), (mask,)

    @property
    def shares_prox(self):
        """Whether the weights of equal global instances are pruned together."""
        return self.scope == "global"

    def prox_update_many(self, values, steps, iteration, states):
        """The prox of all the weights of one global threshold, with their masks.

        With `scope="global"`, the scheduled sparsity applies to all the
        entries of `values` together: on the schedule's turns, their
        magnitudes are ranked together and the `round(s_t * total)` smallest
        go (ties together); each weight keeps its own mask. With
        `scope="layer"`, each weight's own `prox_update`.
        """
        if self.scope == "layer":
            return super().prox_update_many(values, steps, iteration, states)
        values = [ops.convert_to_tensor(x) for x in values]
        masks = tuple(mask for (mask,) in states)
        iteration = ops.cast(iteration, "int32")

        def recompute():
            keeps = prox_lib._sparsity_masks(values, self.sparsity_at(iteration))
            return tuple(ops.cast(keep, m.dtype) for keep, m in zip(keeps, masks, strict=True))

        masks = ops.cond(self._recomputes(iteration), recompute, lambda: masks)
        new_values = [
            ops.where(mask > 0, x, ops.zeros_like(x)) for x, mask in zip(values, masks, strict=True)
        ]
        return new_values, [(mask,) for mask in masks]


def _snake_case(name):
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", name).lower()


# Every regularizer by its class name and snake-case name ("ElasticNet",
# "elastic_net"), derived from the classes, so a new one is known at once.
_BY_NAME = {
    key: cls
    for cls in (L1, L2, ElasticNet, MCP, SCAD, GroupLasso, MagnitudePruning)
    for key in (cls.__name__, _snake_case(cls.__name__))
}


def _float32_value(value):
    """The shortest decimal with the same float32 value (0.1 for 0.1f)."""
    return float(str(np.float32(float(value))))


def _from_keras(regularizer):
    """Maps Keras' own L1, L2 and L1L2 to their kerasreg equivalents."""
    config = regularizer.get_config()
    if type(regularizer) is keras.regularizers.L1:
        # Keras stores `l1` as a float32 tensor (0.1 reads back as
        # 0.10000000149); recover the value the user wrote.
        return L1(l1=_float32_value(config["l1"]))
    if type(regularizer) is keras.regularizers.L2:
        return L2(l2=float(config["l2"]))
    if type(regularizer) is keras.regularizers.L1L2:
        l1, l2 = float(config["l1"]), float(config["l2"])
        if l2 == 0.0:
            return L1(l1=l1)
        if l1 == 0.0:
            return L2(l2=l2)
        return ElasticNet(strength=l1 + l2, l1_ratio=l1 / (l1 + l2))
    return None


def get(identifier):
    """Returns the proximal regularizer for `identifier`.

    This is how to get a prox-capable regularizer from a model built with
    Keras' own: `keras.regularizers.L1`, `L2` and `L1L2` map to `L1`, `L2`
    and `ElasticNet` (or `L1`/`L2` when one coefficient is zero) with the same
    penalty.

    Args:
        identifier: One of
            - `None`, returned as is;
            - a kerasreg regularizer, or any object with a `prox` method,
              returned as is;
            - a `keras.regularizers.L1`, `L2` or `L1L2` instance;
            - a name: `"l1"`, `"l2"`, `"elastic_net"`, `"mcp"`, `"scad"`,
              `"group_lasso"` (or the class name), built with default arguments, or a name Keras
              knows, such as `"L1L2"` (`"magnitude_pruning"` has a required
              argument: pass an instance);
            - a serialized config dict, as `keras.saving.serialize_keras_object`
              writes it.

    Returns:
        A regularizer with a `prox(x, step)` method, or `None`.

    Raises:
        ValueError: If `identifier` has no known proximal operator (for
            example `keras.regularizers.OrthogonalRegularizer` or a plain
            function).

    Example:

    >>> import keras
    >>> import kerasreg
    >>> kerasreg.regularizers.get(keras.regularizers.L1(0.1))
    L1(l1=0.1)
    >>> kerasreg.regularizers.get(keras.regularizers.L1L2(l1=0.25, l2=0.75))
    ElasticNet(strength=1.0, l1_ratio=0.25)
    >>> kerasreg.regularizers.get("group_lasso")
    GroupLasso(strength=0.01, group_axis=-1)
    """
    if identifier is None:
        return None
    obj = identifier
    if isinstance(identifier, str):
        if identifier in _BY_NAME:
            cls = _BY_NAME[identifier]
            required = [
                name
                for name, parameter in inspect.signature(cls).parameters.items()
                if parameter.default is parameter.empty
            ]
            if not required:
                try:
                    return cls()
                except InvalidArgumentError as error:
                    # A default that needs another argument (MagnitudePruning's
                    # `final_sparsity` without a `structure`): name it.
                    required = re.findall(r"argument `(\w+)`", str(error))[:1]
                    if not required:
                        raise
            if required:
                raise InvalidArgumentError(
                    f"Invalid value for argument `identifier`: expected a name of a "
                    f"regularizer with default arguments; {cls.__name__} needs "
                    f"{', '.join(required)}, so pass an instance, e.g. "
                    f"kerasreg.{cls.__name__}({required[0]}=...). "
                    f"Received: identifier={identifier!r}"
                )
        try:
            obj = keras.regularizers.get(identifier)
        except ValueError:
            obj = None
    elif isinstance(identifier, dict):
        obj = keras.saving.deserialize_keras_object(identifier)
    if callable(getattr(obj, "prox", None)):
        return obj
    mapped = _from_keras(obj) if isinstance(obj, keras.regularizers.Regularizer) else None
    if mapped is not None:
        return mapped
    raise InvalidArgumentError(
        "Invalid value for argument `identifier`: expected a regularizer with a "
        "proximal operator (a kerasreg regularizer, keras.regularizers.L1, L2 "
        f"or L1L2, or their name or config). Received: identifier={identifier!r}"
    )
