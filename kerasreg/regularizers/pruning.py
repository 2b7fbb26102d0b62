"""`MagnitudePruning`: keep the largest weights, on a gradual schedule."""

import math
import numbers

from keras import ops

from kerasreg import prox as prox_lib
from kerasreg._validation import AnyOf
from kerasreg._validation import Axes
from kerasreg._validation import Integer
from kerasreg._validation import Interval
from kerasreg._validation import InvalidArgumentError
from kerasreg._validation import Options
from kerasreg._validation import Structure
from kerasreg.regularizers._base import ProximalRegularizer
from kerasreg.regularizers._base import serializable
from kerasreg.regularizers.group import _reduce_axes


@serializable
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
    # `None` is `final_sparsity`'s default for N:M patterns only.
    _required_despite_default = ("final_sparsity",)

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


@serializable
class KeepZeros(ProximalRegularizer):
    r"""Holds a weight's exact zeros at zero while the rest trains.

    The constraint :math:`w_i = 0` for every entry that is zero when the
    `ProximalOptimizer` is built: its prox is the projection
    :math:`w \odot M`, :math:`M` the mask of the entries that were non-zero
    then, kept as a prox state (saved with the optimizer). The penalty is
    zero. `kerasreg.oneshot_prune` attaches it to the kernels it prunes, so
    that fine-tuning a pruned model keeps its pattern; any pattern of zeros
    (a `MagnitudePruning` run, a loaded sparse model) can be held the same
    way, with `kerasreg.regularize(model, kerasreg.regularizers.KeepZeros())`
    before compiling. Called outside an optimizer, `prox(x, step)` returns
    `x` (the mask is taken from `x` itself).

    A model saves it with the layers' configs that hold a
    `kernel_regularizer` (Keras' own layers). Where no config holds it (the
    sublayers of a KerasHub transformer block), saving is not refused, as it
    is for a penalty: the file keeps the zeros, the pattern itself, and
    loads without `KeepZeros`; attach it again with `kerasreg.regularize`
    before fine-tuning the loaded model.

    Example:

    >>> import numpy as np
    >>> import kerasreg
    >>> reg = kerasreg.regularizers.KeepZeros()
    >>> w = np.array([[0.0, 2.0], [-1.0, 0.0]], "float32")
    >>> (mask,) = reg.prox_state(w)
    >>> new_w, _ = reg.prox_update(w + 0.5, 0.1, 0, (mask,))
    >>> np.asarray(new_w).tolist()
    [[0.0, 2.5], [-0.5, 0.0]]
    """

    _parameter_constraints = {}
    # Its mask is the weight's zeros: a `.keras` file whose config cannot hold
    # it (a KerasHub block's sublayers) still holds the pattern, so saving it
    # is not refused (`kerasreg._save_guard`).
    _held_by_weights = True

    def __init__(self):
        self._set_arguments()

    def __call__(self, x):
        x = ops.convert_to_tensor(x)
        return ops.zeros((), dtype=x.dtype)

    def penalty_gradient(self, x):
        return ops.zeros_like(ops.convert_to_tensor(x))

    def prox(self, x, step):
        return ops.convert_to_tensor(x)

    def prox_state(self, x):
        x = ops.convert_to_tensor(x)
        return (ops.cast(ops.not_equal(x, 0), x.dtype),)

    def prox_update(self, x, step, iteration, state):
        (mask,) = state
        x = ops.convert_to_tensor(x)
        return ops.where(mask > 0, x, ops.zeros_like(x)), (mask,)
