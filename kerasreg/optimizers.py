r"""`ProximalOptimizer`: exact zeros from L1-type penalties with any optimizer.

A gradient step on :math:`\lambda \lvert w \rvert` moves a weight by
:math:`\pm \eta \lambda` and overshoots zero as often as it reaches it, so
plain training with an L1 penalty leaves no weight exactly zero. Proximal
gradient methods split the objective :math:`f(w) + R(w)` instead: the inner
optimizer steps on the data loss :math:`f`, then each regularized variable is
replaced by :math:`\operatorname{prox}_{sR}(w)`, which sets small weights to
exactly zero. At a fixed point, :math:`-\nabla f(w) \in \partial R(w)`: the
weights minimize the regularized objective.
"""

import math

import keras
from keras import ops

from kerasreg import _autodiff
from kerasreg import _fused
from kerasreg import _preconditioners
from kerasreg import regularizers as regularizers_lib
from kerasreg._saving import register_serializable
from kerasreg._validation import AnyOf
from kerasreg._validation import Boolean
from kerasreg._validation import Configurable
from kerasreg._validation import InstanceOf
from kerasreg._validation import Options
from kerasreg._validation import String
from kerasreg._validation import Strings
from kerasreg._validation import invalid_argument
from kerasreg._validation import validate_params

__all__ = ["ProximalOptimizer"]

_MODES = ("auto", "plain", "preconditioned")
# Base optimizer arguments that belong on the inner optimizer, which applies
# them; given to the wrapper they would do nothing.
_INNER_ONLY = (
    "weight_decay",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "gradient_accumulation_steps",
    "loss_scale_factor",
)


def _penalty_gradient(regularizer, value):
    """Gradient of `regularizer(value)` with respect to `value`.

    In closed form where the regularizer gives it (`penalty_gradient`: every
    kerasreg regularizer; the default differentiates the penalty), else by
    automatic differentiation.
    """
    closed_form = getattr(regularizer, "penalty_gradient", None)
    if closed_form is not None:
        return closed_form(value)
    return _autodiff.gradients(lambda values: regularizer(values[0]), [value])[0]


def _joint_gradients(joint, values):
    """Gradients of the joint penalty `joint(values)`, one per value."""
    closed_form = getattr(joint, "gradients", None)
    if closed_form is not None:
        return closed_form(values)
    return _autodiff.gradients(joint, values)


def _replicas_in_sync():
    """Replicas whose gradients are summed after this call (TensorFlow).

    Under `tf.distribute`, `apply` runs once per replica on gradients that the
    inner optimizer then sums across replicas; each replica's loss holds the
    penalty divided by this number, and so must its removed gradient.
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or not tf.distribute.has_strategy():
        return 1
    return context.num_replicas_in_sync


def _known(condition):
    """`condition` as a Python bool where its value is known now, else the tensor.

    Eager steps (PyTorch, TensorFlow's `run_eagerly`) know the optimizer's
    flags and skip the work of features that are off; traced steps (graphs,
    XLA, JAX) select at run time.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if not torch.compiler.is_compiling():
            return bool(condition)
    elif backend == "tensorflow":
        import tensorflow as tf

        value = tf.get_static_value(condition)
        if value is not None:
            return bool(value)
    elif backend == "jax":
        import jax

        if not isinstance(condition, jax.core.Tracer):
            return bool(condition)
    return condition


def _compiles_proxes(variables):
    """Whether this step runs the stateless proxes as one XLA computation.

    In a TensorFlow graph without XLA, every operation is a kernel of its
    own, which reads and writes a weight-sized tensor: the prox of a large
    model would cost as many passes over memory as it has operations. XLA
    fuses the element-wise operations of kerasreg's stateless penalties
    (`_COMPILED`: `L1`, `L2`, `ElasticNet`, `GroupLasso`) into a few loops,
    with the same arithmetic; other regularizers stay kernel by kernel, as
    XLA may not have their operations. Not under `tf.distribute` (the
    replicas' variables are assigned through the strategy), not in eager
    steps, and not for small models (`variables`, the trainable ones, under
    `_COMPILED_SIZE` entries), where launching the computation costs more
    than the kernels it saves.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    if sum(math.prod(v.shape) for v in variables) < _COMPILED_SIZE:
        return False
    import tensorflow as tf

    return not tf.executing_eagerly() and not tf.distribute.has_strategy()


_COMPILED_SIZE = 2**18


_COMPILED = (
    regularizers_lib.L1,
    regularizers_lib.L2,
    regularizers_lib.ElasticNet,
    regularizers_lib.GroupLasso,
)


class _Hold:
    """What keeps a variable from taking its prox in one step.

    `gate` keeps the old value on the steps where the inner optimizer only
    accumulates gradients; `freeze` sets the variable's old zeros back (and
    takes no prox) while `zeros_frozen` is set. Each is skipped where it is
    known to be off.
    """

    def __init__(self, is_update_step, frozen, was_zero):
        self.is_update_step, self.frozen, self.was_zero = is_update_step, frozen, was_zero

    def gate(self, new, old):
        """`new` on the inner optimizer's update steps, `old` on accumulation steps."""
        if self.is_update_step is None:
            return new
        return ops.where(self.is_update_step, new, old)

    def freeze(self, value, prox_value):
        """The variable's next value, given its value and prox (`None` if frozen)."""
        if self.frozen is False:
            return prox_value
        held = ops.where(self.was_zero, ops.zeros_like(value), value)
        if self.frozen is True:
            return held
        return ops.where(self.frozen, held, prox_value)


class _Steps:
    """The prox step of each variable after the inner step (see the class docstring).

    What variables of one dtype share (the learning rate, bias corrections,
    the momentum factor, `strength_scale`) is computed once per step.
    """

    def __init__(self, optimizer, learning_rate):
        self._optimizer, self._learning_rate, self._rules = optimizer, learning_rate, {}

    def __call__(self, variable):
        dtype = keras.backend.standardize_dtype(variable.dtype)
        if dtype not in self._rules:
            self._rules[dtype] = self._rule(dtype)
        return self._rules[dtype](variable)

    def fused(self, variables):
        """The steps of `variables`, computed together (`kerasreg._fused`).

        Returns:
            The list of steps, and whether they are fresh tensors that the
            caller may overwrite.
        """
        if self._optimizer._preconditioner is not _preconditioners.adam_rule:
            return [self(variable) for variable in variables], False
        by_dtype = {}
        for i, variable in enumerate(variables):
            by_dtype.setdefault(keras.backend.standardize_dtype(variable.dtype), []).append(i)
        steps = [None] * len(variables)
        for dtype, indices in by_dtype.items():
            scale = self._scale(dtype)
            group = [variables[i] for i in indices]
            inner = self._optimizer.inner_optimizer
            for i, step in zip(indices, _fused.adam_steps(inner, group, scale), strict=True):
                steps[i] = step
        return steps, True

    def _scale(self, dtype):
        """The learning rate, momentum factor and `strength_scale`, in `dtype`."""
        optimizer = self._optimizer
        scale = ops.cast(self._learning_rate, dtype)
        factor = _preconditioners.momentum_factor(optimizer.inner_optimizer, dtype)
        if factor is not None:
            scale = scale * factor
        return scale * ops.cast(optimizer.strength_scale.value, dtype)

    def _rule(self, dtype):
        optimizer = self._optimizer
        scale = self._scale(dtype)
        if optimizer._preconditioner is None:
            return lambda variable: scale
        return optimizer._preconditioner(optimizer.inner_optimizer, scale, dtype)


def _joint(regularizer):
    """The joint penalty `regularizer` is a share of, or `None` (see the class docstring)."""
    return getattr(regularizer, "joint", None)


def _check_joint(joint, keys, var_key):
    """Refuses a joint penalty with a variable whose key is not in `keys`."""
    for variable in joint.variables:
        if var_key(variable) not in keys:
            raise ValueError(
                f"the penalty {joint!r} couples `{variable.path}`, which this optimizer does "
                "not train: every variable of a penalty over several variables must be in "
                "the optimizer's var_list (trainable, and in the same model)"
            )


class _StateInitializer:
    """Part `j` of `prox_state(variable)`, as an initializer `(shape, dtype)`."""

    def __init__(self, prox_state, variable, j):
        self.prox_state, self.variable, self.j = prox_state, variable, j

    def __call__(self, shape, dtype=None):
        return ops.cast(self.prox_state(self.variable)[self.j], dtype)


@register_serializable
class ProximalOptimizer(keras.optimizers.Optimizer, Configurable):
    r"""Wraps any Keras optimizer and applies each variable's proximal operator.

    After every step of `inner_optimizer`, each trainable variable whose
    regularizer has a proximal operator (kerasreg's, or Keras' own `L1`, `L2`
    and `L1L2`, converted by `kerasreg.regularizers.get`) is replaced by
    `regularizer.prox(variable, step)`. L1-type penalties then produce exact
    zeros. Other variables are untouched.

    **The step.** In `"plain"` mode, `step` is the learning rate of the step
    just taken (schedules included). Adaptive optimizers normalize their
    steps, so a `learning_rate * strength` threshold hardly ever zeroes
    anything under Adam; in `"preconditioned"` mode the step is the optimizer's
    own per-coordinate step, e.g. `lr * sqrt(1 - beta_2**t) / (sqrt(v) +
    epsilon)` for Adam (ProxGen; Yun, Lozano and Yang, NeurIPS 2021), and the
    prox is taken in that diagonal metric. `"auto"` picks `"preconditioned"`
    for Adam, AdamW, Nadam, Adamax, RMSprop and Adagrad, and `"plain"` for
    every other optimizer (SGD with or without momentum, Lion, ...). The
    resolved choice is stored in `mode` and in `get_config()`. With
    heavy-ball momentum `b` (SGD, RMSprop), which carries each step's
    gradient `1 / (1 - b)` times as far in the long run, the step is scaled by
    `(1 - b**t) / (1 - b)` after `t` steps, so that training still minimizes
    data loss + penalty, not data loss + `(1 - b)` x penalty.

    The step sizes and factors use the inner optimizer's hyperparameters as
    it applies them (cast to each variable's dtype), so that the fixed point
    is the penalized minimizer to the precision of the weights, float64
    included.

    **No double counting.** Keras adds the penalty to the loss, so the loss
    you see is the true objective. For the variables it handles, this wrapper
    removes the penalty's gradient from the gradient before the inner step
    (the prox accounts for the penalty instead; kerasreg's regularizers give
    it in closed form, equal to the backend's automatic differentiation to
    the bit, and other regularizers are differentiated), so the fixed point of
    training minimizes data loss + penalty. This assumes the loss whose
    gradient is passed includes the penalty exactly once, as `model.fit` and
    a custom loop adding `sum(model.losses)` do; pass `penalty_in_loss=False`
    if your loss does not include it.

    Works with `model.fit`, custom training loops (`apply_gradients` /
    `apply`), JAX's `stateless_apply`, `jit_compile=True`, TensorFlow's
    `MirroredStrategy` and `MultiWorkerMirroredStrategy` (each replica's
    loss holds the penalty divided by the number of replicas, as Keras
    computes it), `keras.distribution` on JAX (`DataParallel`,
    `ModelParallel`, in one process or several), learning-rate schedules, gradient
    accumulation (the prox runs only on steps where the inner optimizer
    updates) and mixed precision (`LossScaleOptimizer`, which `compile` adds
    for `mixed_float16`, wraps this optimizer). With `use_ema=True` on the
    inner optimizer, the moving average keeps the sparsity pattern: where
    the prox holds a weight at zero, its average is zero too, so the weights
    `fit` finalizes are as sparse as the iterates.

    **Cost.** The wrapper's work per step is element-wise: the penalty's
    gradient, the step sizes (shared factors computed once per dtype), the
    prox, and the selects for freezing and gradient accumulation only where
    they can be on (eager steps read the flags). On PyTorch's eager mode,
    the variables with element-wise penalties (`L1`, `L2`, `ElasticNet`) are
    handled together with `torch._foreach_*` kernels, as Keras' own PyTorch
    optimizers update.

    **Controls.** Two optimizer variables steer the prox during training
    (callbacks in `kerasreg.callbacks` set them; they are saved with the
    optimizer): `strength_scale` multiplies every prox step, i.e. every
    regularizer's strength (`TargetSparsity` adapts it to reach a sparsity;
    the loss still shows the penalty at its nominal strength), and
    `zeros_frozen`, set by `freeze_zeros()`, holds the sparsity pattern.
    A third, `controller_state`, holds the memory of `TargetSparsity`'s
    controller (infinite when unset), so that a run restored from a checkpoint
    continues its ramp where it stopped.
    Regularizers whose prox has a state (`MagnitudePruning`'s schedule and
    mask) get it as optimizer variables too.

    **Proxes shared by several variables.** A regularizer with a truthy
    `shares_prox` (`MagnitudePruning(scope="global")`) takes its prox over
    all the variables whose regularizers equal it (`==`) at once: the
    optimizer groups them in each step and calls
    `prox_update_many(values, steps, iteration, states)` once per group
    (lists in, lists out; see `ProximalRegularizer.prox_update_many`). Each
    variable keeps its own prox state, freezing and gradient accumulation.

    **Penalties over several variables.** A penalty may couple entries of
    several variables, as `CoupledGroupLasso` couples the channels of a
    residual stream across the layers that write and carry them. Such a
    penalty is known by the `joint` attribute of its variables'
    regularizers: an object with `variables`, `__call__(values)` (the
    penalty of one value per variable) and `prox(values, steps)` (new
    values, given one step per variable: scalars in `"plain"` mode,
    per-coordinate tensors in `"preconditioned"` mode). The optimizer groups
    the variables by joint penalty when it is built, removes the penalty's
    gradient from each of them (one differentiation over all of them), and
    after the inner step replaces them together by the joint prox; freezing,
    gradient accumulation and moving averages apply to each variable as
    above. All the variables of a joint penalty must be in the optimizer's
    `var_list`; excluding any of them (`exclude_names`, `exclude_from_prox`)
    leaves the whole joint penalty to the gradient.

    Args:
        inner_optimizer: The `keras.optimizers.Optimizer` instance to wrap.
        mode: `"auto"`, `"plain"` or `"preconditioned"`. Defaults to `"auto"`.
        penalty_in_loss: Whether the loss whose gradients are applied contains
            the penalties. Defaults to `True`.
        exclude_names: List of strings: variables whose path contains any of
            them are left to the gradient (no prox, penalty gradient kept).
            Defaults to `None`.
        name: Name of the optimizer. Defaults to `"proximal"`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import kerasreg
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(1, kernel_regularizer=kerasreg.L1(0.1)),
    ... ])
    >>> model.compile(
    ...     optimizer=kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1)),
    ...     loss="mse",
    ... )
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 8)).astype("float32")
    >>> y = x[:, :1] * 2.0
    >>> _ = model.fit(x, y, epochs=100, batch_size=64, verbose=0)
    >>> kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    >>> int(np.count_nonzero(kernel == 0))  # the seven unused inputs
    7
    """

    _parameter_constraints = {
        "inner_optimizer": InstanceOf(
            keras.optimizers.Optimizer, "a `keras.optimizers.Optimizer` instance"
        ),
        "mode": Options(*_MODES),
        "penalty_in_loss": Boolean(),
        "exclude_names": AnyOf(Strings(), None),
        "name": String(),
    }

    def __init__(
        self,
        inner_optimizer,
        mode="auto",
        penalty_in_loss=True,
        exclude_names=None,
        name="proximal",
        **kwargs,
    ):
        if isinstance(inner_optimizer, ProximalOptimizer):
            raise invalid_argument(
                "inner_optimizer",
                "an optimizer that is not already a ProximalOptimizer",
                inner_optimizer,
            )
        if isinstance(inner_optimizer, keras.optimizers.LossScaleOptimizer):
            raise invalid_argument(
                "inner_optimizer",
                "an optimizer without loss scaling; wrap the ProximalOptimizer in "
                "`LossScaleOptimizer` instead (compile does so for the mixed_float16 policy)",
                inner_optimizer,
            )
        for arg in _INNER_ONLY:
            if kwargs.get(arg) not in (None, False):
                raise invalid_argument(
                    arg, "it on the inner optimizer, not on ProximalOptimizer", kwargs[arg]
                )
        kwargs = {k: v for k, v in kwargs.items() if k != "learning_rate"}
        arguments = self._check_arguments(
            inner_optimizer=inner_optimizer,
            mode=mode,
            penalty_in_loss=penalty_in_loss,
            exclude_names=exclude_names,
            name=name,
        )
        # Keras refuses attributes set before its `__init__`.
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self._set_arguments(**arguments)
        preconditioner = _preconditioners.preconditioner_for(inner_optimizer)
        if self.mode == "auto":
            self.mode = "plain" if preconditioner is None else "preconditioned"
        if self.mode == "preconditioned" and preconditioner is None:
            raise invalid_argument(
                "mode",
                f"'plain' or 'auto' for {type(inner_optimizer).__name__}, whose per-coordinate "
                "step kerasreg does not know (it knows Adam, AdamW, Nadam, Adamax, RMSprop and "
                "Adagrad)",
                mode,
            )
        self._preconditioner = preconditioner if self.mode == "preconditioned" else None
        self.exclude_names = self.exclude_names or None
        self._excluded_keys = set()
        self._proximal = {}
        self._prox_states = {}
        self._joints = []  # the joint penalties whose prox is applied
        self._joint_of = {}  # variable key -> its joint penalty
        self.strength_scale = self.add_variable(
            shape=(),
            initializer="ones",
            dtype="float32",
            aggregation="only_first_replica",
            name="strength_scale",
        )
        self.zeros_frozen = self.add_variable(
            shape=(),
            initializer="zeros",
            dtype="float32",
            aggregation="only_first_replica",
            name="zeros_frozen",
        )
        self.controller_state = self.add_variable(
            shape=(3,),
            initializer=keras.initializers.Constant(float("inf")),  # unset; see ControllerState
            dtype="float32",
            aggregation="only_first_replica",
            name="controller_state",
        )

    # Delegation to the inner optimizer, as LossScaleOptimizer does.

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def exclude_from_prox(self, var_list=None, var_names=None):
        """Leaves variables to the gradient: no prox, penalty gradient kept.

        Call it before the optimizer is built, as
        `exclude_from_weight_decay`. Excluding one variable of a penalty over
        several variables (`CoupledGroupLasso`) leaves that whole penalty to
        the gradient.

        Args:
            var_list: List of variables to exclude. Defaults to `None`.
            var_names: List of strings; variables whose path contains any of
                them are excluded. Defaults to `None`.
        """
        if self.built:
            raise ValueError(
                "`exclude_from_prox()` must be called before the optimizer is "
                "built (before the first training step)."
            )
        for variable in var_list or ():
            self._excluded_keys.add(self._var_key(variable))
        if var_names:
            self.exclude_names = (self.exclude_names or []) + list(var_names)

    def _is_excluded(self, variable):
        if self._var_key(variable) in self._excluded_keys:
            return True
        path = getattr(variable, "path", variable.name)
        return any(name in path for name in self.exclude_names or ())

    def build(self, var_list):
        if self.built:
            # `LossScaleOptimizer.build` builds its inner optimizer again.
            return
        super().build(var_list)
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        _preconditioners.check_slots(self.inner_optimizer, self._preconditioner is not None)
        self._proximal = {}
        for variable in var_list:
            proximal = self._proximal_of(variable)
            if proximal is None:
                continue
            key = self._var_key(variable)
            self._proximal[key] = proximal
            prox_state = getattr(proximal, "prox_state", lambda x: None)
            initial_state = prox_state(variable)
            if initial_state is not None:
                states = []
                for j, value in enumerate(initial_state):
                    value = ops.convert_to_tensor(value)
                    # The initial value goes in as the initializer, not by a
                    # later `assign`: TensorFlow's `fit` builds the optimizer
                    # while tracing its first step, where the variable is
                    # created outside the graph (zeros) and an `assign` in
                    # the trace is not what initializes it.
                    state = self.add_variable(
                        shape=tuple(value.shape),
                        initializer=_StateInitializer(prox_state, variable, j),
                        dtype=keras.backend.standardize_dtype(value.dtype),
                        name=f"{variable.name}_prox_state_{j}",
                    )
                    states.append(state)
                self._prox_states[key] = states
        self._register_joints(var_list)
        self.built = True

    def _register_joints(self, var_list):
        """Groups the variables of `var_list` by the joint penalty of their regularizers.

        Raises:
            ValueError: If a joint penalty has a variable outside `var_list`.
        """
        keys = {self._var_key(variable) for variable in var_list}
        joints = {}
        for variable in var_list:
            joint = _joint(getattr(variable, "regularizer", None))
            if joint is not None:
                joints.setdefault(id(joint), joint)
        self._joints, self._joint_of = [], {}
        for joint in joints.values():
            _check_joint(joint, keys, self._var_key)
            if any(self._is_excluded(variable) for variable in joint.variables):
                continue  # left to the gradient, as a whole
            self._joints.append(joint)
            for variable in joint.variables:
                self._joint_of[self._var_key(variable)] = joint

    def _proximal_of(self, variable, regularizer=None):
        """The regularizer whose prox `variable` gets (with `regularizer`, if given)."""
        if regularizer is None:
            regularizer = getattr(variable, "regularizer", None)
        if regularizer is None or self._is_excluded(variable) or _joint(regularizer) is not None:
            return None
        try:
            return regularizers_lib.get(regularizer)
        except ValueError:
            return None  # no prox known: the penalty acts through the gradient

    def _check_new_regularizers(self, changes):
        """Refuses new regularizers that this built optimizer cannot take.

        A prox with a state (`MagnitudePruning`'s schedule and mask) keeps it
        in optimizer variables, made when the optimizer is built: it can be
        neither added nor removed afterwards.

        Args:
            changes: Pairs `(variable, new regularizer or None)`.

        Raises:
            ValueError: If a variable's prox has a state, now or with its
                new regularizer, or a new joint penalty has a variable that
                this optimizer does not train.
        """
        keys = {self._var_key(variable) for variable in self._trainable_variables}
        for _, regularizer in changes:
            joint = _joint(regularizer)
            if joint is not None:
                _check_joint(joint, keys, self._var_key)
        for variable, regularizer in changes:
            key = self._var_key(variable)
            proximal = self._proximal_of(variable, regularizer)
            prox_state = getattr(proximal, "prox_state", lambda x: None)
            if key in self._prox_states or prox_state(variable) is not None:
                raise ValueError(
                    f"the prox of `{variable.path}` keeps a state in the optimizer, made when "
                    "it is built; compile the model again with a new ProximalOptimizer"
                )

    def _reread_regularizers(self, var_list):
        """Takes the current regularizers of `var_list` (checked first by
        `_check_new_regularizers`); a compiled train function that uses this
        optimizer must be traced again."""
        for variable in var_list:
            key = self._var_key(variable)
            proximal = self._proximal_of(variable)
            if proximal is None:
                self._proximal.pop(key, None)
            else:
                self._proximal[key] = proximal
        self._register_joints(self._trainable_variables)

    @validate_params({"frozen": Boolean()})
    def freeze_zeros(self, frozen=True):
        """Holds the sparsity pattern: zeros stay zero, survivors train freely.

        While frozen, no prox is applied: the weights that are exactly zero
        are set back to zero after every step, and the others follow the
        data-loss gradient alone (the penalty's gradient is still removed),
        which undoes the shrinkage the penalty put on them (debiasing).
        `kerasreg.callbacks.FreezeSparsity` calls this at a chosen epoch.

        The flag is the optimizer variable `zeros_frozen`, so it is saved
        with the optimizer and read inside compiled training steps.

        Args:
            frozen: Bool. Defaults to `True`.
        """
        self.zeros_frozen.assign(1.0 if frozen else 0.0)

    def proximal_regularizer(self, variable):
        """The regularizer whose prox is applied to `variable`, or `None`.

        For a variable of a penalty over several variables, the joint penalty.
        """
        key = self._var_key(variable)
        return self._proximal.get(key, self._joint_of.get(key))

    def apply(self, grads, trainable_variables=None):
        trainable_variables = self._variables_to_update(trainable_variables)
        inner = self.inner_optimizer
        is_update_step = _preconditioners.is_update_step(inner)
        if is_update_step is not None:
            is_update_step = _known(is_update_step)
        frozen = _known(self.zeros_frozen.value > 0.5)
        compile_proxes = _compiles_proxes(trainable_variables)
        grads, handled, fused, joints = self._remove_penalty_gradients(
            grads,
            trainable_variables,
            fuse=frozen is False and _fused.enabled(),
            compile_proxes=compile_proxes,
        )
        # What the prox needs from before the inner step. `+ 0` reads the count
        # now (on TensorFlow, converting the variable would give a reference
        # that sees the step's increment); the comparisons make new tensors,
        # which torch's in-place update cannot change.
        learning_rate, iteration = inner.learning_rate, inner.iterations + 0
        members = [variable for joint in joints for variable in joint.variables]
        was_zero = None
        if frozen is not False and is_update_step is not False:
            was_zero = [variable.value == 0 for variable in handled + members]
        inner.apply(grads, trainable_variables)
        if is_update_step is not False:  # the inner optimizer updated the weights
            gate = None if is_update_step is True else is_update_step
            steps = _Steps(self, learning_rate)
            if fused:
                fused_steps, owned = steps.fused([variable for variable, _ in fused])
                _fused.apply_prox(
                    [variable.value for variable, _ in fused],
                    fused_steps,
                    [coefficients for _, coefficients in fused],
                    steps_owned=owned,
                )
            holds = [
                _Hold(gate, frozen, None if was_zero is None else was_zero[i])
                for i in range(len(handled) + len(members))
            ]
            compiled = [
                compile_proxes and type(self._proximal.get(self._var_key(v))) in _COMPILED
                for v in handled
            ]
            if any(compiled):
                self._apply_compiled_proxes(
                    [v for v, c in zip(handled, compiled, strict=True) if c],
                    [h for h, c in zip(holds, compiled, strict=False) if c],
                    learning_rate,
                )
            shared = self._shared_groups(handled)
            grouped = {i for indices in shared.values() for i in indices}
            for i, (variable, hold, done) in enumerate(zip(handled, holds, compiled, strict=False)):
                if not done and i not in grouped:
                    self._apply_prox(variable, steps, iteration, hold)
            for regularizer, indices in shared.items():
                self._apply_shared_prox(
                    regularizer,
                    [handled[i] for i in indices],
                    steps,
                    iteration,
                    [holds[i] for i in indices],
                )
            self._apply_joint_proxes(joints, steps, holds[len(handled) :])
            if inner.use_ema:
                for variable in handled + [v for v, _ in fused] + members:
                    self._keep_average_sparse(variable)
        self._iterations.assign_add(1)

    def _variables_to_update(self, trainable_variables):
        """`trainable_variables` as a list (building on them first), or the built ones."""
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "When passing `grads` without `trainable_variables`, the "
                    "optimizer must already be built."
                )
            return self._trainable_variables
        trainable_variables = list(trainable_variables)
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
        return trainable_variables

    def _remove_penalty_gradients(self, grads, trainable_variables, fuse, compile_proxes):
        """Removes from `grads` the gradients of the penalties whose prox is applied.

        Args:
            grads: The gradients of `trainable_variables`.
            trainable_variables: The variables.
            fuse: Whether variables with element-wise penalties are handled
                together (`kerasreg._fused`).
            compile_proxes: Whether the penalties in `_COMPILED` are
                differentiated in one XLA computation (`_compiles_proxes`).

        Returns:
            The new gradients, the variables whose own prox is applied, the
            pairs `(variable, coefficients)` of those handled together, and
            the joint penalties whose prox is applied.
        """
        grads, handled, fused, joints = list(grads), [], [], []
        replicas = _replicas_in_sync() if self.penalty_in_loss else 1

        def remove(i, penalty_grad):
            if replicas > 1:
                penalty_grad = penalty_grad / replicas
            grads[i] = grads[i] - ops.cast(penalty_grad, grads[i].dtype)

        fused_indices, compiled = [], []
        for i, variable in enumerate(trainable_variables):
            regularizer = self._proximal.get(self._var_key(variable))
            if grads[i] is None or regularizer is None:
                continue
            coefficients = _fused.coefficients(regularizer, variable, grads[i]) if fuse else None
            if coefficients is not None:
                fused.append((variable, coefficients))
                fused_indices.append(i)
                continue
            handled.append(variable)
            if self.penalty_in_loss:
                if compile_proxes and type(regularizer) in _COMPILED:
                    compiled.append((i, regularizer, variable))
                else:
                    remove(i, _penalty_gradient(regularizer, variable.value))
        if compiled:
            # One XLA computation for them (see `_compiles_proxes`).
            import tensorflow as tf

            def penalty_gradients(values):
                return [
                    _penalty_gradient(regularizer, value)
                    for (_, regularizer, _), value in zip(compiled, values, strict=True)
                ]

            values = [variable.value for _, _, variable in compiled]
            penalty_grads = tf.function(penalty_gradients, jit_compile=True, autograph=False)(
                values
            )
            for (i, _, _), penalty_grad in zip(compiled, penalty_grads, strict=True):
                remove(i, penalty_grad)
        if fused and self.penalty_in_loss:
            new = _fused.remove_penalty_gradients(
                [grads[i] for i in fused_indices],
                [variable.value for variable, _ in fused],
                [coefficients for _, coefficients in fused],
            )
            for i, grad in zip(fused_indices, new, strict=True):
                grads[i] = grad
        position = {self._var_key(v): i for i, v in enumerate(trainable_variables)}
        for joint in self._joints:
            indices = [position.get(self._var_key(v)) for v in joint.variables]
            if any(i is None or grads[i] is None for i in indices):
                continue
            joints.append(joint)
            if self.penalty_in_loss:
                values = [variable.value for variable in joint.variables]
                for i, penalty_grad in zip(indices, _joint_gradients(joint, values), strict=True):
                    remove(i, penalty_grad)
        return grads, handled, fused, joints

    def _apply_compiled_proxes(self, variables, holds, learning_rate):
        """Applies the proxes of `variables` in one XLA computation (see `_compiles_proxes`)."""
        import tensorflow as tf

        def proxes():
            steps = _Steps(self, learning_rate)
            for variable, hold in zip(variables, holds, strict=True):
                self._apply_prox(variable, steps, None, hold)

        tf.function(proxes, jit_compile=True, autograph=False)()

    def _apply_prox(self, variable, steps, iteration, hold):
        """Replaces `variable` by its prox (by its old zeros while frozen)."""
        regularizer = self._proximal.get(self._var_key(variable))
        states = self._prox_states.get(self._var_key(variable))
        if states is None:
            value = None
            if hold.frozen is not True:
                value = regularizer.prox(variable.value, steps(variable))
        else:
            value, new_states = regularizer.prox_update(
                variable.value, steps(variable), iteration, tuple(s.value for s in states)
            )
            for state, new_state in zip(states, new_states, strict=True):
                state.assign(hold.gate(new_state, state.value))
        self._assign_prox(variable, value, hold)

    def _shared_groups(self, handled):
        """Positions in `handled` of the variables of each shared prox, by regularizer.

        A regularizer with a truthy `shares_prox` takes its prox over all the
        variables whose regularizers equal it (`==`), together.
        """
        groups = {}
        for i, variable in enumerate(handled):
            regularizer = self._proximal[self._var_key(variable)]
            if getattr(regularizer, "shares_prox", False):
                groups.setdefault(regularizer, []).append(i)
        return groups

    def _apply_shared_prox(self, regularizer, variables, steps, iteration, holds):
        """Replaces `variables` by their shared prox (`prox_update_many`), together.

        Each variable keeps its own state and `_Hold`, as in `_apply_prox`.
        """
        states = [self._prox_states.get(self._var_key(variable)) for variable in variables]
        values = [None] * len(variables)
        if any(state is not None for state in states) or holds[0].frozen is not True:
            values, new_states = regularizer.prox_update_many(
                [variable.value for variable in variables],
                [steps(variable) for variable in variables],
                iteration,
                [None if state is None else tuple(s.value for s in state) for state in states],
            )
            for state, new_state, hold in zip(states, new_states, holds, strict=True):
                for part, new_part in zip(state or (), new_state or (), strict=True):
                    part.assign(hold.gate(new_part, part.value))
        for variable, value, hold in zip(variables, values, holds, strict=True):
            self._assign_prox(variable, value, hold)

    def _apply_joint_proxes(self, joints, steps, holds):
        """Replaces the variables of each joint penalty by its prox, together.

        `holds` holds the `_Hold` of each variable, joint by joint.
        """
        position = 0
        for joint in joints:
            values = None
            if holds[position].frozen is not True:
                values = joint.prox(
                    [variable.value for variable in joint.variables],
                    [steps(variable) for variable in joint.variables],
                )
            for j, variable in enumerate(joint.variables):
                self._assign_prox(variable, None if values is None else values[j], holds[position])
                position += 1

    def _assign_prox(self, variable, value, hold):
        """Assigns `value` (the old zeros while frozen) on update steps."""
        value = hold.freeze(variable.value, value)
        variable.assign(ops.cast(hold.gate(value, variable.value), variable.dtype))

    def _keep_average_sparse(self, variable):
        """Zeroes the moving average, which `fit` copies into the model, where `variable` is 0."""
        average = _preconditioners.moving_average(self.inner_optimizer, variable)
        average.assign(ops.where(variable.value == 0, ops.zeros_like(average.value), average.value))

    def get_config(self):
        config = Configurable.get_config(self)
        config["inner_optimizer"] = keras.saving.serialize_keras_object(self.inner_optimizer)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)
