"""The prox routes of `ProximalOptimizer`: how each kind of variable takes its prox.

A route holds the variables of one step that take their prox the same way
(`Member`: a variable's plan entry, the position of its gradient, and its
`Hold`), and does two things: `before_inner_step(...)` (remove the penalty
gradients, record the zeros a frozen pattern keeps), and `apply_prox(step)`
after the inner step.

- `SingleRoute`: each variable's own `prox` (or `prox_update`, with a state).
- `XlaRoute`: the same, as one XLA computation (TensorFlow graphs).
- `FusedRoute`: element-wise penalties with `torch._foreach_*` kernels.
- `SharedRoute`: one `prox_update_many` over the variables of equal
  regularizers with a truthy `shares_prox`.
- `JointRoute`: one `prox` of a penalty over several variables.
"""

import math

import keras
from keras import ops

from kerasreg import _autodiff
from kerasreg.optimizers import _backends
from kerasreg.optimizers import _preconditioners


def penalty_gradient(regularizer, value):
    """Gradient of `regularizer(value)` with respect to `value`.

    In closed form where the regularizer gives it (`penalty_gradient`: every
    kerasreg regularizer; the default differentiates the penalty), else by
    automatic differentiation.
    """
    closed_form = getattr(regularizer, "penalty_gradient", None)
    if closed_form is not None:
        return closed_form(value)
    return _autodiff.gradients(lambda values: regularizer(values[0]), [value])[0]


def joint_gradients(joint, values):
    """Gradients of the joint penalty `joint(values)`, one per value."""
    closed_form = getattr(joint, "gradients", None)
    if closed_form is not None:
        return closed_form(values)
    return _autodiff.gradients(joint, values)


def _subtract(grads, index, penalty_grad, replicas):
    """`grads[index]` minus this replica's share of `penalty_grad`, in place."""
    if replicas > 1:
        penalty_grad = penalty_grad / replicas
    grads[index] = grads[index] - ops.cast(penalty_grad, grads[index].dtype)


class Hold:
    """What keeps a variable from taking its prox in one step.

    `gate` keeps the old value on the steps where the inner optimizer only
    accumulates gradients; `freeze` sets the variable's old zeros back (and
    takes no prox) while `zeros_frozen` is set. Each is skipped where it is
    known to be off.

    Args:
        gate: Whether the inner optimizer updates the weights in this step:
            `None` where it always does, else a boolean tensor.
        frozen: `zeros_frozen`: `True`, `False` or a boolean tensor.
        was_zero: Where the variable was zero before the inner step, or
            `None` where it is not needed (set by `Route.before_inner_step`).
    """

    def __init__(self, gate, frozen, was_zero):
        self.is_update_step, self.frozen, self.was_zero = gate, frozen, was_zero

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

    def assign(self, variable, value):
        """Assigns `value` (the old zeros while frozen) on update steps."""
        value = self.freeze(variable.value, value)
        variable.assign(ops.cast(self.gate(value, variable.value), variable.dtype))

    def assign_states(self, states, new_states):
        """Assigns the prox's new `states` (optimizer variables) on update steps."""
        for state, new_state in zip(states or (), new_states or (), strict=True):
            state.assign(self.gate(new_state, state.value))


class StepSizes:
    """The prox step of each variable after the inner step.

    What variables of one dtype share (the learning rate, bias corrections,
    the momentum factor, `strength_scale`) is computed once per step.

    Args:
        optimizer: The `ProximalOptimizer`.
        learning_rate: The inner optimizer's learning rate for this step.
    """

    def __init__(self, optimizer, learning_rate):
        self._optimizer, self._learning_rate, self._rules = optimizer, learning_rate, {}
        self._adam_scales = {}  # dtype -> Adam's shared factor (PyTorch's fast paths)

    def __call__(self, variable):
        dtype = keras.backend.standardize_dtype(variable.dtype)
        if dtype not in self._rules:
            self._rules[dtype] = self._rule(dtype)
        return self._rules[dtype](variable)

    def fused(self, variables):
        """The steps of `variables`, computed together (`_backends.fused_adam_steps`).

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
        inner = self._optimizer.inner_optimizer
        for dtype, indices in by_dtype.items():
            group = [variables[i] for i in indices]
            group_steps = _backends.fused_adam_steps(inner, group, self._adam_scale(dtype))
            for i, step in zip(indices, group_steps, strict=True):
                steps[i] = step
        return steps, True

    def compiled(self, variables):
        """The steps of `variables` as `_backends.compiled_prox` takes them:
        Adam's as `("adam", second moment, scale, epsilon)`, computed inside
        its kernel, others as tensors."""
        if self._optimizer._preconditioner is not _preconditioners.adam_rule:
            return [self(variable) for variable in variables]
        inner = self._optimizer.inner_optimizer
        steps = []
        for variable in variables:
            scale = self._adam_scale(keras.backend.standardize_dtype(variable.dtype))
            moment = _preconditioners.adam_second_moment(inner, variable).value
            steps.append(("adam", moment, scale, inner.epsilon))
        return steps

    def _adam_scale(self, dtype):
        """Adam's shared step factor in `dtype`, once per step (`_backends.fused_adam_scale`)."""
        if dtype not in self._adam_scales:
            self._adam_scales[dtype] = _backends.fused_adam_scale(
                self._optimizer.inner_optimizer,
                self._learning_rate,
                self._optimizer.strength_scale,
                dtype,
            )
        return self._adam_scales[dtype]

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


class ProxStep:
    """What the proxes of one step read, captured before the inner step.

    Args:
        optimizer: The `ProximalOptimizer`.
        learning_rate: The inner optimizer's learning rate for this step.
        iteration: The inner optimizer's iteration count before the step
            (`None` if no route reads it).
    """

    def __init__(self, optimizer, learning_rate, iteration):
        self.optimizer, self.learning_rate, self.iteration = optimizer, learning_rate, iteration
        self.steps = StepSizes(optimizer, learning_rate)


class Member:
    """A variable in one step: its plan entry, the position of its gradient, its `Hold`."""

    def __init__(self, entry, index):
        self.entry, self.index, self.hold = entry, index, None

    @property
    def variable(self):
        return self.entry.variable

    @property
    def regularizer(self):
        return self.entry.regularizer

    @property
    def states(self):
        return self.entry.states


class Route:
    """Variables that take their prox the same way in one step."""

    label = None
    # Whether `apply_prox` reads the iteration count (proxes with a state).
    reads_iteration = True

    def __init__(self, members):
        self.members = list(members)

    @property
    def variables(self):
        return [member.variable for member in self.members]

    def before_inner_step(self, grads, replicas, remove_penalty, keep_zeros):
        """What the route does before the inner step.

        Args:
            grads: The step's gradients (a list, changed in place).
            replicas: The replicas whose gradients are summed after the step.
            remove_penalty: Whether to remove the penalty gradients.
            keep_zeros: Whether the members' `Hold` needs their zeros.
        """
        if keep_zeros:
            for member in self.members:
                member.hold.was_zero = member.variable.value == 0
        if remove_penalty:
            self.remove_penalty_gradients(grads, replicas)

    def remove_penalty_gradients(self, grads, replicas):
        """Subtracts from `grads` (a list, in place) the penalty gradients of this route."""
        for member in self.members:
            gradient = penalty_gradient(member.regularizer, member.variable.value)
            _subtract(grads, member.index, gradient, replicas)

    def apply_prox(self, step):
        """Replaces the route's variables by their prox (`step`: a `ProxStep`)."""
        raise NotImplementedError


def _single_prox(member, steps, iteration):
    """Replaces `member`'s variable by its prox (by its old zeros while frozen)."""
    variable, hold = member.variable, member.hold
    if member.states is None:
        value = None
        if hold.frozen is not True:
            value = member.regularizer.prox(variable.value, steps(variable))
    else:
        states = tuple(state.value for state in member.states)
        value, new_states = member.regularizer.prox_update(
            variable.value, steps(variable), iteration, states
        )
        hold.assign_states(member.states, new_states)
    hold.assign(variable, value)


class SingleRoute(Route):
    """Each variable takes its own regularizer's prox."""

    label = "single"

    @property
    def reads_iteration(self):
        return any(member.states is not None for member in self.members)

    def apply_prox(self, step):
        for member in self.members:
            _single_prox(member, step.steps, step.iteration)


class XlaRoute(Route):
    """Stateless proxes, each step's as one XLA computation (TensorFlow graphs)."""

    label = "xla"
    reads_iteration = False

    def before_inner_step(self, grads, replicas, remove_penalty, keep_zeros):
        if sum(math.prod(v.shape) for v in self.variables) >= _backends.SPLIT_SIZE:
            # Large weights: XLA's CPU loops run on one thread, TensorFlow's
            # kernels on all cores; the subtraction and the zeros are theirs.
            super().before_inner_step(grads, replicas, remove_penalty, keep_zeros)
            return
        # Small weights, where launches cost more than passes: the penalty
        # gradients, their subtraction and the zeros in one computation.
        if not (remove_penalty or keep_zeros):
            return

        def before(values, gradients):
            new, zeros = [], []
            for member, value, grad in zip(self.members, values, gradients, strict=True):
                if remove_penalty:
                    penalty = penalty_gradient(member.regularizer, value)
                    if replicas > 1:
                        penalty = penalty / replicas
                    new.append(grad - ops.cast(penalty, grad.dtype))
                if keep_zeros:
                    zeros.append(value == 0)
            return new, zeros

        values = [member.variable.value for member in self.members]
        gradients = [grads[member.index] for member in self.members]
        new, zeros = _backends.compiled(before, values, gradients)
        for member, grad in zip(self.members, new, strict=False):
            grads[member.index] = grad
        for member, was_zero in zip(self.members, zeros, strict=False):
            member.hold.was_zero = was_zero

    def remove_penalty_gradients(self, grads, replicas):
        def penalty_gradients(values):
            return [
                penalty_gradient(member.regularizer, value)
                for member, value in zip(self.members, values, strict=True)
            ]

        values = [member.variable.value for member in self.members]
        gradients = _backends.compiled(penalty_gradients, values)
        for member, gradient in zip(self.members, gradients, strict=True):
            _subtract(grads, member.index, gradient, replicas)

    def apply_prox(self, step):
        def proxes():
            steps = StepSizes(step.optimizer, step.learning_rate)
            for member in self.members:
                _single_prox(member, steps, None)

        _backends.compiled(proxes)


class FusedRoute(Route):
    """Element-wise penalties, fused across variables (PyTorch's eager mode).

    With `torch._foreach_*` kernels, or, for large models, with compiled
    kernels (`_backends.compiles_fused`).

    Args:
        members: The `Member`s.
        coefficients: The `(l1, l2)` of each member's penalty.
    """

    label = "fused"
    reads_iteration = False

    def __init__(self, members, coefficients):
        super().__init__(members)
        self.coefficients = list(coefficients)
        self.compiled = _backends.compiles_fused(self.variables)

    @property
    def runs_compiled(self):
        """Whether this step runs the compiled kernels (not if compiling failed:
        then the `torch._foreach_*` path, faster than the kernels uncompiled)."""
        return self.compiled and not _backends.compile_failed()

    def remove_penalty_gradients(self, grads, replicas):
        args = (
            [grads[member.index] for member in self.members],
            [variable.value for variable in self.variables],
            self.coefficients,
        )
        if self.runs_compiled:
            new = _backends.compiled_remove_penalty_gradients(
                *args, [self._gradient_buffer(member) for member in self.members]
            )
        else:
            new = _backends.fused_remove_penalty_gradients(*args)
        for member, grad in zip(self.members, new, strict=True):
            grads[member.index] = grad

    @staticmethod
    def _gradient_buffer(member):
        """The tensor its entry keeps for `member`'s new gradient (on the CPU;
        elsewhere, as with CUDA's caching allocator, a fresh one costs nothing)."""
        value = member.variable.value
        if value.device.type != "cpu":
            return None
        entry = member.entry
        if entry.gradient_buffer is None:
            import torch

            entry.gradient_buffer = torch.empty_like(value)
        return entry.gradient_buffer

    def apply_prox(self, step):
        if self.runs_compiled:
            _backends.compiled_prox(
                [variable.value for variable in self.variables],
                step.steps.compiled(self.variables),
                self.coefficients,
            )
            return
        steps, owned = step.steps.fused(self.variables)
        _backends.fused_prox(
            [variable.value for variable in self.variables],
            steps,
            self.coefficients,
            steps_owned=owned,
        )


class SharedRoute(Route):
    """One prox over the variables of equal regularizers with a truthy `shares_prox`.

    Each variable keeps its own state and `Hold`, as in `SingleRoute`.
    """

    label = "shared"

    def __init__(self, regularizer, members):
        super().__init__(members)
        self.regularizer = regularizer

    def apply_prox(self, step):
        states = [member.states for member in self.members]
        values = [None] * len(self.members)
        if any(state is not None for state in states) or self.members[0].hold.frozen is not True:
            values, new_states = self.regularizer.prox_update_many(
                [variable.value for variable in self.variables],
                [step.steps(variable) for variable in self.variables],
                step.iteration,
                [None if state is None else tuple(s.value for s in state) for state in states],
            )
            for member, new_state in zip(self.members, new_states, strict=True):
                member.hold.assign_states(member.states, new_state)
        for member, value in zip(self.members, values, strict=True):
            member.hold.assign(member.variable, value)


class JointRoute(Route):
    """One prox of a penalty over several variables (`regularizer.joint`)."""

    label = "joint"

    def __init__(self, joint, members, gradients=None):
        super().__init__(members)
        self.joint = joint
        # The data-loss gradients of its variables, for a prox that reads them.
        self.gradients = gradients

    def remove_penalty_gradients(self, grads, replicas):
        values = [variable.value for variable in self.variables]
        gradients = joint_gradients(self.joint, values)
        for member, gradient in zip(self.members, gradients, strict=True):
            _subtract(grads, member.index, gradient, replicas)

    def apply_prox(self, step):
        values = [None] * len(self.members)
        current = [variable.value for variable in self.variables]
        steps = [step.steps(variable) for variable in self.variables]
        first = self.members[0]
        if first.states is not None:
            # A prox with a state (`ChannelPruning`'s masks), kept under the first variable.
            states = tuple(state.value for state in first.states)
            extra = {}
            if getattr(self.joint, "uses_gradients", False):
                extra["gradients"] = self.gradients
            values, new_states = self.joint.prox_update(
                current, steps, step.iteration, states, **extra
            )
            first.hold.assign_states(first.states, new_states)
        elif first.hold.frozen is not True:
            values = self.joint.prox(current, steps)
        for member, value in zip(self.members, values, strict=True):
            member.hold.assign(member.variable, value)
