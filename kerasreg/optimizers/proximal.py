r"""`ProximalOptimizer`: exact zeros from L1-type penalties with any optimizer.

A gradient step on :math:`\lambda \lvert w \rvert` moves a weight by
:math:`\pm \eta \lambda` and overshoots zero as often as it reaches it, so
plain training with an L1 penalty leaves no weight exactly zero. Proximal
gradient methods split the objective :math:`f(w) + R(w)` instead: the inner
optimizer steps on the data loss :math:`f`, then each regularized variable is
replaced by :math:`\operatorname{prox}_{sR}(w)`, which sets small weights to
exactly zero. At a fixed point, :math:`-\nabla f(w) \in \partial R(w)`: the
weights minimize the regularized objective.

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
to any other. All the variables of a joint penalty must be in the optimizer's
`var_list`; excluding any of them (`exclude_names`, `exclude_from_prox`)
leaves the whole joint penalty to the gradient.
"""

import warnings

import keras
import numpy as np

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
from kerasreg.optimizers import _backends
from kerasreg.optimizers import _plan
from kerasreg.optimizers import _preconditioners
from kerasreg.optimizers import _routes

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


class _StateInitializer:
    """Part `j` of `prox_state(variable)`, as an initializer `(shape, dtype)`."""

    def __init__(self, prox_state, variable, j):
        self.prox_state, self.variable, self.j = prox_state, variable, j

    def __call__(self, shape, dtype=None):
        return keras.ops.cast(self.prox_state(self.variable)[self.j], dtype)


def _check_inner_optimizer(inner_optimizer, kwargs):
    """Refuses an inner optimizer, or base arguments, that the wrapper cannot take."""
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


# The wrapper's controls, in its one `controls` variable: name -> (first
# entry, shape, initial value). One variable, not one per control, because
# JAX's compiled steps take every optimizer variable in and out as an array
# of its own, at a cost per array.
_CONTROLS = {
    "strength_scale": (0, (), 1.0),
    "zeros_frozen": (1, (), 0.0),
    # Infinite: unset (see `kerasreg.callbacks.ControllerState`).
    "controller_state": (2, (3,), float("inf")),
}
_CONTROLS_SIZE = sum(int(np.prod(shape)) for _, shape, _ in _CONTROLS.values())


def _initial_controls(shape, dtype=None):
    values = np.empty(_CONTROLS_SIZE, "float32")
    for start, part, initial in _CONTROLS.values():
        values[start : start + int(np.prod(part))] = initial
    return keras.ops.convert_to_tensor(values, dtype)


class Control:
    """One control of `ProximalOptimizer`, a view of its `controls` variable.

    Reads as the variable it stands for: `value` (the traced value inside
    compiled steps), `numpy()`, `np.asarray`, `keras.ops.convert_to_numpy`,
    `float()` of a scalar control, arithmetic and comparisons (on `value`),
    and takes `assign`, `assign_add` and `assign_sub`, so callbacks and user
    code read and set it as before the controls were one variable.

    Args:
        controls: The optimizer's `controls` variable.
        name: The control's name.
    """

    def __init__(self, controls, name):
        self.controls, self.name = controls, name
        self._start, self.shape, _ = _CONTROLS[name]
        self._size = int(np.prod(self.shape))
        self.dtype = "float32"

    @property
    def path(self):
        return f"{self.controls.path}/{self.name}"

    @property
    def value(self):
        value = self.controls.value
        if self.shape == ():
            return value[self._start]
        return value[self._start : self._start + self._size]

    def assign(self, value):
        value = keras.ops.reshape(keras.ops.cast(value, "float32"), (self._size,))
        self.controls.assign(keras.ops.slice_update(self.controls.value, (self._start,), value))
        return self.value

    def assign_add(self, value):
        return self.assign(self.value + keras.ops.cast(value, "float32"))

    def assign_sub(self, value):
        return self.assign(self.value - keras.ops.cast(value, "float32"))

    def numpy(self):
        return keras.ops.convert_to_numpy(self.value)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.numpy(), dtype=dtype)

    def __float__(self):
        return float(self.numpy())

    def __getitem__(self, index):
        return self.value[index]

    def __neg__(self):
        return -self.value

    def __repr__(self):
        return f"<Control {self.name}={self.numpy()!r}>"


def _delegate(name):
    def method(self, other):
        return getattr(self.value, name)(other)

    method.__name__ = name
    return method


for _name in (
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
    "__rtruediv__", "__lt__", "__le__", "__gt__", "__ge__",
):  # fmt: skip
    setattr(Control, _name, _delegate(_name))


def _prox_state_variables(optimizer, variable, proximal):
    """The optimizer variables of `variable`'s prox state, or `None` if it has none."""
    prox_state = getattr(proximal, "prox_state", lambda x: None)
    initial_state = prox_state(variable)
    if initial_state is None:
        return None
    states = []
    for j, value in enumerate(initial_state):
        value = keras.ops.convert_to_tensor(value)
        # The initial value goes in as the initializer, not by a later
        # `assign`: TensorFlow's `fit` builds the optimizer while tracing its
        # first step, where the variable is created outside the graph (zeros)
        # and an `assign` in the trace is not what initializes it.
        state = optimizer.add_variable(
            shape=tuple(value.shape),
            initializer=_StateInitializer(prox_state, variable, j),
            dtype=keras.backend.standardize_dtype(value.dtype),
            name=f"{variable.name}_prox_state_{j}",
        )
        states.append(state)
    return states


def restart_prox_states(optimizer, var_list):
    """Sets the prox states of `var_list` in a built `optimizer` to what `prox_state` gives now.

    For a state taken from the weight itself (`KeepZeros`' mask), after the
    weight was changed outside training (pruned again in one shot).
    """
    for variable in var_list:
        states = optimizer._prox_states.get(optimizer._var_key(variable))
        proximal = optimizer._proximal_of(variable)
        if not states or proximal is None or not hasattr(proximal, "prox_state"):
            continue
        for state, value in zip(states, proximal.prox_state(variable), strict=True):
            state.assign(keras.ops.cast(value, state.dtype))


def _stateful_joints(var_list, is_excluded):
    """The joint penalties of `var_list` with a prox state, each once, in order."""
    joints = {}
    for variable in var_list:
        joint = _plan.joint_of(getattr(variable, "regularizer", None))
        if joint is None or not hasattr(joint, "prox_state"):
            continue
        excluded = [v.path for v in joint.variables if is_excluded(v)]
        if excluded:
            # Left to the gradient, a constraint would do nothing at all.
            raise ValueError(
                f"{joint!r} holds a pruning pattern over `{excluded[0]}`, which "
                "`exclude_from_prox` leaves to the gradient; a pattern has no gradient, so "
                "it would silently stop. Exclude none of its weights, or remove it first "
                "(`kerasreg.regularize(model, None, groups='dependency')`)"
            )
        joints.setdefault(id(joint), joint)
    return list(joints.values())


class _JointStateInitializer:
    """Part `j` of a joint penalty's `prox_state()`, as an initializer."""

    def __init__(self, joint, j):
        self.joint, self.j = joint, j

    def __call__(self, shape, dtype=None):
        return keras.ops.cast(self.joint.prox_state()[self.j], dtype)


def _joint_state_variables(optimizer, joint):
    """The optimizer variables of a joint penalty's prox state (its masks)."""
    name = joint.variables[0].name
    return [
        optimizer.add_variable(
            shape=tuple(value.shape),
            initializer=_JointStateInitializer(joint, j),
            dtype=keras.backend.standardize_dtype(value.dtype),
            name=f"{name}_joint_prox_state_{j}",
        )
        for j, value in enumerate(joint.prox_state())
    ]


def _refuse_new_regularizers(optimizer, changes):
    """Refuses new regularizers that this built optimizer cannot take.

    A prox with a state (`MagnitudePruning`'s schedule and mask) keeps it
    in optimizer variables, made when the optimizer is built: it can be
    neither added nor removed afterwards.

    Args:
        optimizer: The built `ProximalOptimizer`.
        changes: Pairs `(variable, new regularizer or None)`.

    Raises:
        ValueError: If a variable's prox has a state, now or with its
            new regularizer, or a new joint penalty has a variable that
            this optimizer does not train.
    """
    keys = {optimizer._var_key(variable) for variable in optimizer._trainable_variables}
    for variable, regularizer in changes:
        joint = _plan.joint_of(regularizer)
        if joint is not None:
            _plan.check_joint(joint, keys, optimizer._var_key)
        for held in (joint, _plan.joint_of(getattr(variable, "regularizer", None))):
            if held is not None and hasattr(held, "prox_state"):
                raise ValueError(
                    f"the prox of `{variable.path}` keeps a state in the optimizer, made "
                    "when it is built; compile the model again with a new ProximalOptimizer"
                )
    for variable, regularizer in changes:
        key = optimizer._var_key(variable)
        proximal = optimizer._proximal_of(variable, regularizer)
        prox_state = getattr(proximal, "prox_state", lambda x: None)
        if key in optimizer._prox_states or prox_state(variable) is not None:
            raise ValueError(
                f"the prox of `{variable.path}` keeps a state in the optimizer, made when "
                "it is built; compile the model again with a new ProximalOptimizer"
            )


def _variables_to_update(optimizer, trainable_variables):
    """`trainable_variables` as a list (building on them first), or the built ones."""
    if trainable_variables is None:
        if not optimizer.built:
            raise ValueError(
                "When passing `grads` without `trainable_variables`, the "
                "optimizer must already be built."
            )
        return optimizer._trainable_variables
    trainable_variables = list(trainable_variables)
    if not optimizer.built:
        with keras.name_scope(optimizer.name, caller=optimizer):
            optimizer.build(trainable_variables)
    return trainable_variables


def _resolve_mode(mode, inner_optimizer):
    """The mode `"auto"` resolves to, and the preconditioner rule it reads (or `None`)."""
    preconditioner = _preconditioners.preconditioner_for(inner_optimizer)
    if mode == "auto":
        mode = "plain" if preconditioner is None else "preconditioned"
    if mode == "preconditioned" and preconditioner is None:
        raise invalid_argument(
            "mode",
            f"'plain' or 'auto' for {type(inner_optimizer).__name__}, whose per-coordinate "
            "step kerasreg does not know (it knows Adam, AdamW, Nadam, Adamax, RMSprop and "
            "Adagrad)",
            mode,
        )
    return mode, preconditioner if mode == "preconditioned" else None


def _saved_state(optimizer, store):
    """The values of `optimizer._own_state()` in `store` (its saved state), in order.

    Since the controls are one variable, `store` holds them, then the prox
    states. Files written before hold the step count of Keras' base class,
    then `strength_scale`, `zeros_frozen` and `controller_state` as three
    variables, then the prox states; before the wrapper saved each variable
    once, the base class's learning rate after the step count, and the inner
    optimizer's variables (which it loads from its own copy) at the end. Any
    other `store` is skipped with a warning, as Keras skips it (an empty list).
    """
    own = optimizer._own_state()
    saved = [store[str(i)] for i in range(len(store.keys()))]  # read when used

    def shapes(values):
        return [tuple(value.shape) for value in values]

    if shapes(saved) == shapes(own):
        return [np.asarray(value) for value in saved]
    states = own[1:]
    parts = len(_CONTROLS)
    for offset, tail in ((1, 0), (2, len(optimizer.inner_optimizer.variables))):
        if len(saved) != offset + parts + len(states) + tail:
            continue
        controls = saved[offset : offset + parts]
        prox_states = saved[offset + parts : offset + parts + len(states)]
        if shapes(controls) == [shape for _, shape, _ in _CONTROLS.values()] and shapes(
            prox_states
        ) == shapes(states):
            flat = [np.reshape(np.asarray(c), (-1,)) for c in controls]
            return [np.concatenate(flat).astype("float32")] + [np.asarray(v) for v in prox_states]
    warnings.warn(
        f"Skipping variable loading for optimizer '{optimizer.name}', because its own "
        f"variables have the shapes {shapes(own)} whereas the saved optimizer's have "
        f"{shapes(saved)}.",
        stacklevel=3,
    )
    return []


def _capture(optimizer, routes, is_update_step, frozen):
    """What the proxes need from before the inner step: the learning rate,
    the iteration (for the routes that read it), and each variable's
    `_routes.Hold` (its old zeros come with `_before_inner_step`)."""
    inner = optimizer.inner_optimizer
    iteration = None
    if any(route.reads_iteration for route in routes):
        # `+ 0` reads the count now (on TensorFlow, converting the
        # variable would give a reference that sees the step's increment).
        iteration = inner.iterations + 0
    step = _routes.ProxStep(optimizer, inner.learning_rate, iteration)
    gate = None if is_update_step is True else is_update_step  # `None`: every step
    for route in routes:
        for member in route.members:
            member.hold = _routes.Hold(gate, frozen, None)
    return step


def _before_inner_step(optimizer, grads, routes, is_update_step, frozen):
    """Removes from `grads` (in place) the gradients of the penalties whose
    prox is applied, and records where the variables are zero while zeros
    may be frozen."""
    replicas = _backends.replicas_in_sync()
    keep_zeros = frozen is not False and is_update_step is not False
    for route in routes:
        route.before_inner_step(grads, replicas, optimizer.penalty_in_loss, keep_zeros)


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

    **Cost.** The wrapper's work per step is element-wise (the penalty's
    gradient, the step sizes, the prox; freezing and accumulation selects
    only where they can be on), with backend fast paths: `torch._foreach_*`
    calls on PyTorch's eager mode, `torch.compile`d kernels there from 2^18
    weights on (one weight-sized gradient buffer per variable on the CPU),
    XLA computations in TensorFlow graphs from 2^15 weights on (see
    `kerasreg.optimizers._backends`). Figures: `docs/benchmarks.md`.

    **Controls.** Three controls steer the prox during training (callbacks
    in `kerasreg.callbacks` set them; they are saved with the optimizer):
    `strength_scale` multiplies every prox step, i.e. every regularizer's
    strength (`TargetSparsity` adapts it to reach a sparsity; the loss still
    shows the penalty at its nominal strength), `zeros_frozen`, set by
    `freeze_zeros()`, holds the sparsity pattern, and `controller_state`
    holds the memory of `TargetSparsity`'s controller (infinite when unset),
    so that a run restored from a checkpoint continues its ramp where it
    stopped. They are parts of one float32 optimizer variable, `controls`
    (so that JAX's compiled steps carry one array for them, not three), and
    each reads and assigns as a variable of its own: `value`, `assign`,
    `numpy()`, `np.asarray`. Checkpoints written when they were three
    variables load into it. Regularizers whose prox has a state
    (`MagnitudePruning`'s schedule and mask) get it as optimizer variables.

    **Proxes over several variables.** Shared proxes (`shares_prox`, as in
    `MagnitudePruning(scope="global")`) and penalties that couple several
    variables (`regularizer.joint`, as in `CoupledGroupLasso`) take their
    variables' proxes together; see `kerasreg.optimizers.proximal`.

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
        _check_inner_optimizer(inner_optimizer, kwargs)
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
        # The step count and learning rate of Keras' base class are the inner
        # optimizer's (see `iterations` and `learning_rate`): they are left
        # out of the wrapper's variables, so that compiled steps do not carry
        # them and checkpoints do not store them (in place: Keras' tracker
        # appends new variables to this list).
        del self._variables[:]
        self._set_arguments(**arguments)
        self.mode, self._preconditioner = _resolve_mode(self.mode, inner_optimizer)
        self.exclude_names = self.exclude_names or None
        self._excluded_keys = set()
        self._proximal = {}  # variable key -> the regularizer of its own prox
        self._prox_states = {}  # variable key -> the optimizer variables of its prox state
        self._plan = None  # the route of each variable (see `_plan`), made in `build`
        self.controls = self.add_variable(
            shape=(_CONTROLS_SIZE,),
            initializer=_initial_controls,
            dtype="float32",
            aggregation="only_first_replica",
            name="controls",
        )
        self.strength_scale = Control(self.controls, "strength_scale")
        self.zeros_frozen = Control(self.controls, "zeros_frozen")
        self.controller_state = Control(self.controls, "controller_state")

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

    # Checkpoints. `variables` lists the inner optimizer's variables too, for
    # `stateless_apply`, but Keras' saving also visits `inner_optimizer`,
    # which saves its own: the wrapper saves only its own state, once.

    def _own_state(self):
        """The wrapper's own state: its controls, then its prox states."""
        return list(self._variables)

    def save_own_variables(self, store):
        for i, variable in enumerate(self._own_state()):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        values = _saved_state(self, store)
        for variable, value in zip(self._own_state(), values, strict=False):
            variable.assign(value)

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
            if proximal is not None:
                self._proximal[self._var_key(variable)] = proximal
                states = _prox_state_variables(self, variable, proximal)
                if states is not None:
                    self._prox_states[self._var_key(variable)] = states
        for joint in _stateful_joints(var_list, self._is_excluded):
            self._prox_states[self._var_key(joint.variables[0])] = _joint_state_variables(
                self, joint
            )
        self._make_plan()
        self.built = True

    def _make_plan(self):
        """Labels the route of each trainable variable (`_plan.Plan`).

        Raises:
            ValueError: If a joint penalty has a variable this optimizer does
                not train.
        """
        self._plan = _plan.Plan(
            self._trainable_variables,
            self._proximal,
            self._prox_states,
            self._var_key,
            self._is_excluded,
        )

    def _proximal_of(self, variable, regularizer=None):
        """The regularizer whose prox `variable` gets (with `regularizer`, if given)."""
        if regularizer is None:
            regularizer = getattr(variable, "regularizer", None)
        if self._is_excluded(variable):
            return None
        return _plan.proximal_of(regularizer)

    def _check_new_regularizers(self, changes):
        """Refuses new regularizers that this built optimizer cannot take
        (see `_refuse_new_regularizers`)."""
        _refuse_new_regularizers(self, changes)

    def _reread_regularizers(self, var_list):
        """Takes the current regularizers of `var_list` (checked first by
        `_check_new_regularizers`) and labels the routes again; a compiled
        train function that uses this optimizer must be traced again."""
        for variable in var_list:
            key = self._var_key(variable)
            proximal = self._proximal_of(variable)
            if proximal is None:
                self._proximal.pop(key, None)
            else:
                self._proximal[key] = proximal
        self._make_plan()

    @validate_params({"frozen": Boolean()})
    def freeze_zeros(self, frozen=True):
        """Holds the sparsity pattern: zeros stay zero, survivors train freely.

        While frozen, no prox is applied: the weights that are exactly zero
        are set back to zero after every step, and the others follow the
        data-loss gradient alone (the penalty's gradient is still removed),
        which undoes the shrinkage the penalty put on them (debiasing).
        `kerasreg.callbacks.FreezeSparsity` calls this at a chosen epoch.

        The flag is the control `zeros_frozen` (part of the optimizer variable
        `controls`), so it is saved with the optimizer and read inside
        compiled training steps.

        Args:
            frozen: Bool. Defaults to `True`.
        """
        self.zeros_frozen.assign(1.0 if frozen else 0.0)

    def proximal_regularizer(self, variable):
        """The regularizer whose prox is applied to `variable`, or `None`.

        For a variable of a penalty over several variables, the joint penalty.
        """
        entry = None if self._plan is None else self._plan.entry(variable)
        return None if entry is None else entry.regularizer

    # The step, as a template of named steps.

    def apply(self, grads, trainable_variables=None):
        trainable_variables = _variables_to_update(self, trainable_variables)
        grads = list(grads)
        is_update_step, frozen = self._step_flags()
        routes = self._plan.routes(
            trainable_variables,
            grads,
            fuse=frozen is False and _backends.fuses(),
            compile_proxes=_backends.compiles_proxes(trainable_variables),
        )
        step = _capture(self, routes, is_update_step, frozen)
        _before_inner_step(self, grads, routes, is_update_step, frozen)
        self.inner_optimizer.apply(grads, trainable_variables)
        if is_update_step is not False:  # the inner optimizer updated the weights
            for route in routes:
                route.apply_prox(step)
            self._keep_averages_sparse(routes)
        for route in routes:  # the routes outlive the step: so would its tensors
            for member in route.members:
                member.hold = None

    def _step_flags(self):
        """Whether the inner optimizer updates in this step (`None`: every step
        does), and whether zeros are frozen; Python bools where known now."""
        is_update_step = _preconditioners.is_update_step(self.inner_optimizer)
        if is_update_step is not None:
            is_update_step = _backends.known(is_update_step)
        return is_update_step, _backends.known(self.zeros_frozen.value > 0.5)

    def _keep_averages_sparse(self, routes):
        """Zeroes the moving averages, which `fit` copies into the model, where
        the variables are 0 (`use_ema=True` on the inner optimizer)."""
        if not self.inner_optimizer.use_ema:
            return
        for route in routes:
            for variable in route.variables:
                average = _preconditioners.moving_average(self.inner_optimizer, variable)
                zero = keras.ops.zeros_like(average.value)
                average.assign(keras.ops.where(variable.value == 0, zero, average.value))

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
