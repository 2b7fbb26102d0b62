"""The base class of kerasreg's regularizers and the helpers they share.

`ProximalRegularizer` states what a regularizer gives `ProximalOptimizer`:
the penalty, its gradient, the proximal operator (with a state, for a prox
that changes during training), the declarations its fast paths read
(`elementwise_coefficients`, `compiles_with_xla`) and the protocol of a
prox shared by several weights (`shares_prox`, `prox_update_many`). The
helpers compute thresholds in a weight's dtype and reproduce the gradients
that each backend's automatic differentiation computes.
"""

import numbers

import keras
from keras import ops

from kerasreg import _autodiff
from kerasreg import prox as prox_lib
from kerasreg._saving import register_serializable
from kerasreg._validation import Configurable
from kerasreg._validation import Interval
from kerasreg._validation import InvalidArgumentError

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


# Users import the classes from `kerasreg.regularizers`, not from the
# submodule of their family.
_PUBLIC_MODULE = __name__.rpartition(".")[0]


def public(obj):
    """Names `obj` by the module users import it from, `kerasreg.regularizers`.

    Its `repr`, pickles and saved configs then stay as they are when `obj`
    moves between the package's submodules.
    """
    obj.__module__ = _PUBLIC_MODULE
    return obj


def serializable(cls):
    """`public(cls)`, registered for `.keras` files as `"kerasreg>ClassName"`.

    Keras writes `cls.__module__` into every saved config: files name
    `kerasreg.regularizers`, as they did before the package had submodules.
    (Keras loads them by `registered_name`, whatever the module.)
    """
    return register_serializable(public(cls))


@public
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

    # Arguments whose default holds only together with another argument
    # (`MagnitudePruning`'s `final_sparsity=None`, valid with a `structure`
    # only). `kerasreg.regularizers.get` builds a regularizer named by a
    # string from its defaults, so it asks for these, as for the arguments
    # `__init__` gives no default.
    _required_despite_default = ()

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
