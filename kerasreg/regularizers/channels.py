r"""`ChannelPruning`: remove coupled channels until a model costs what was asked.

`ChannelPruning` is the request (a target cost, its schedule); attached with
`kerasreg.regularize(model, kerasreg.ChannelPruning(...), groups="dependency")`,
it becomes a `_ChannelMasks` over the model's coupled groups: a penalty over
several variables (the joint-penalty protocol of `CoupledGroupLasso`) whose
proximal operator holds one mask per group, with a state that
`ProximalOptimizer` keeps.
"""

import numpy as np
from keras import ops

from kerasreg._validation import Configurable
from kerasreg._validation import InputShape
from kerasreg._validation import Integer
from kerasreg._validation import Interval
from kerasreg._validation import InvalidArgumentError
from kerasreg._validation import Options
from kerasreg.regularizers._base import public

_READS = "reads"

_NOT_SAVED = (
    "ChannelPruning's masks cannot be serialized in a layer's config: they cover "
    "channels of a whole model. Save the weights (pruned channels are zeros), or compact "
    "the model with `kerasreg.compact` once pruning is over."
)


@public
class ChannelPruning(Configurable):
    r"""Structured pruning to a cost: remove the coupled channels worth least per MAC.

    Ask for a fraction of the model's cost, multiply-accumulates (`"macs"`)
    or parameters (`"params"`), and training removes whole coupled channels
    (`kerasreg.dependency_groups`: units, filters, residual streams, heads)
    until the model costs that much. Attach it with
    `kerasreg.regularize(model, kerasreg.ChannelPruning(0.5), groups="dependency")`,
    train under `ProximalOptimizer`, then `kerasreg.compact` makes the
    smaller model.

    **How channels are chosen.** On each turn of the schedule, every
    channel of every removable group is ranked, across the whole model, by
    its importance per unit of cost:

    .. math::

        \text{score}_{g,c} = \frac{I_{g,c} / \sum_{c'} I_{g,c'}}{\partial C / \partial n_g},

    where :math:`I_{g,c}` is the channel's importance (`"l2"`: the
    Euclidean norm of all its entries, in every variable that writes,
    carries or reads it), the denominator sums over the group's
    remaining channels (so that layers of different weight scales compare,
    and a group's last channels weigh more than its first),
    and :math:`\partial C / \partial n_g` what one more channel of the group
    costs with the channels that remain (`kerasreg.cost.ModelCost.slopes`: a
    channel of a full-resolution stem costs more MACs than one at the end of
    the network). The lowest scores go while the cost left comes closer to
    the schedule's. Pruned channels stay pruned: their entries are held at
    exactly zero, as `MagnitudePruning` holds its weights, while the others
    train. Each group keeps at least `round_to` channels, and a multiple of
    `round_to` when it loses some.

    **Schedule.** The cost to remove grows as `MagnitudePruning`'s
    sparsity, cubically in optimizer steps :math:`t` (counted before the
    current step), from nothing at `begin_step` to all of
    :math:`(1 - \text{target})\,C_0` at `end_step`, with a turn every
    `frequency` steps and one at `end_step`. Choose `end_step` below the
    number of training steps, and train on after it: the pruned network
    recovers. The masks hold the pattern by themselves; `FreezeSparsity`
    is not needed, and before `end_step` it would stop the masks from
    being applied.

    **What goes.** The entries of a pruned channel in every variable that
    writes it (kernel columns, biases) or carries it (`BatchNormalization`'s
    scale and shift), and, where a zero channel stays zero on its way (see
    `DependencyGroup.zeros_propagate`), in the kernels that read it.
    `kerasreg.compact` then removes them; the compacted model computes what
    the pruned one computes, at the target cost within one channel's (or
    `round_to` channels') cost per group.

    Args:
        target: Float in (0, 1): the fraction of the model's cost to keep
            (0.5 for half the MACs).
        cost: `"macs"` (multiply-accumulates per example, as
            `kerasreg.model_cost` counts them) or `"params"`.
        begin_step: Int, the step at which pruning starts.
        end_step: Int >= `begin_step`, the step at which the target is
            reached.
        frequency: Int >= 1, steps between turns.
        importance: `"l2"` (the norms above) or `"taylor"`: the first-order
            estimate of the loss a channel's removal costs, the sum over its
            entries of :math:`|w \, \partial L / \partial w|`, added up over
            the steps since the last turn (as HALP and Torch-Pruning's
            `TaylorImportance` rank channels); scores are then importance per
            unit of cost, without normalization per group.
        round_to: Int >= 1, channels per group kept in multiples of this
            (8 suits accelerators), and at least this many.
        input_shape: The input shape the MACs are counted at, without the
            batch axis, for a model whose own input shape is not fully
            known (see `kerasreg.model_cost`).

    Raises:
        InvalidArgumentError: If an argument is invalid.

    Example:

    >>> import keras
    >>> import kerasreg
    >>> inputs = keras.Input((16,))
    >>> x = keras.layers.Dense(64, "relu", name="hidden")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    >>> _ = kerasreg.regularize(
    ...     model,
    ...     kerasreg.ChannelPruning(0.5, cost="params", begin_step=0, end_step=0),
    ...     groups="dependency",
    ... )
    >>> model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.01)), "mse")
    >>> _ = model.fit(keras.random.normal((8, 16)), keras.random.normal((8, 3)), verbose=0)
    >>> small = kerasreg.compact(model)
    >>> small.get_layer("hidden").units  # 20 params per unit: 32 of 64 go
    32
    """

    # `kerasreg.regularize` takes it with `groups="dependency"` only.
    _needs_groups = True

    _parameter_constraints = {
        "target": Interval(0.0, 1.0, closed="neither"),
        "cost": Options("macs", "params"),
        "begin_step": Integer(0, 2**31 - 1),
        "end_step": Integer(0, 2**31 - 1),
        "frequency": Integer(1, 2**31 - 1),
        "importance": Options("l2", "taylor"),
        "round_to": Integer(1, 2**31 - 1),
        "input_shape": InputShape(),
    }

    def __init__(
        self,
        target,
        cost="macs",
        begin_step=0,
        end_step=1000,
        frequency=100,
        importance="l2",
        round_to=1,
        input_shape=None,
    ):
        self._set_arguments(
            target=target,
            cost=cost,
            begin_step=begin_step,
            end_step=end_step,
            frequency=frequency,
            importance=importance,
            round_to=round_to,
            input_shape=input_shape,
        )
        if self.end_step < self.begin_step:
            raise InvalidArgumentError(
                "Invalid value for argument `end_step`: expected an int >= "
                f"begin_step={self.begin_step}. Received: end_step={end_step!r}"
            )

    def share_at(self, iteration):
        """The share of the cost to remove that is removed at step `iteration` (a tensor)."""
        begin, end = float(self.begin_step), float(self.end_step)
        t = ops.cast(iteration, "float32")
        if end == begin:
            return ops.cast(t >= begin, "float32")
        progress = ops.clip((t - begin) / (end - begin), 0.0, 1.0)
        return 1.0 - (1.0 - progress) ** 3

    def _turn(self, iteration):
        """Whether the masks are recomputed after step `iteration` (an int32 tensor)."""
        in_range = ops.logical_and(iteration >= self.begin_step, iteration <= self.end_step)
        on_turn = ops.logical_or(
            ops.mod(iteration - self.begin_step, self.frequency) == 0,
            iteration == self.end_step,
        )
        return ops.logical_and(in_range, on_turn)

    def masks_for(self, cost, groups, positions):
        """The joint penalty that prunes `groups` of a model whose cost is `cost`.

        Args:
            cost: The model's `kerasreg.cost.ModelCost`.
            groups: The removable `DependencyGroup`s to prune.
            positions: The index of each of `groups` in `cost.groups`.

        Returns:
            A `_ChannelMasks`, whose `share(variable)` is each variable's
            regularizer.

        Raises:
            InvalidArgumentError: If the groups cannot bring the cost down
                to the target.
        """
        return _ChannelMasks(self, cost, groups, positions)


# Rounds of selection per turn (see `_ChannelMasks._refine`).
_ROUNDS = 3


class _Share:
    """One variable's part of a `_ChannelMasks`: no penalty, the masks' prox."""

    def __init__(self, joint, variable):
        self.joint = joint
        self.variable = variable

    def __call__(self, x):
        return ops.zeros((), dtype=ops.convert_to_tensor(x).dtype)

    def get_config(self):
        raise NotImplementedError(_NOT_SAVED)

    def __repr__(self):
        return f"<share of {self.joint!r} on {getattr(self.variable, 'path', self.variable)}>"


def _zeroable(group, member):
    """Whether the masks zero `member`'s entries: writers and carriers, and readers
    where a zero channel stays zero on its way."""
    return member.role != _READS or group.zeros_propagate


class _Piece:
    """The entries of one variable in one group, along one axis.

    `index` maps each position along `axis` to its channel (`channels` for
    positions of other groups), so that a group's mask, with a 1 appended,
    taken at `index` is the variable's mask along that axis.
    """

    def __init__(self, variable, axis, indices, length):
        self.variable, self.axis = variable, axis
        self.indices = np.asarray(indices, dtype="int32")
        channels = self.indices.shape[0]
        index = np.full(length, channels, dtype="int32")
        for c, row in enumerate(self.indices):
            index[row] = c
        self.index = index


class _ChannelMasks:
    """The masks of `ChannelPruning` over a model's groups: a joint penalty.

    Its `variables`, `share`, `__call__` (zero: a constraint, not a
    penalty), `gradients` and `prox` follow `CoupledGroupLasso`'s protocol;
    `prox_state()` and `prox_update(values, steps, iteration, states)` hold
    one mask per group (1: kept) in optimizer variables.
    """

    def __init__(self, request, cost, groups, positions):
        self.request = request
        self.cost = cost
        # A group without a trainable entry to zero cannot be pruned here.
        pairs = [
            (group, position)
            for group, position in zip(groups, positions, strict=True)
            if any(m.variable.trainable and _zeroable(group, m) for m in group.members)
        ]
        if not pairs:
            raise InvalidArgumentError(
                "Invalid value for argument `model`: expected a removable group of coupled "
                "channels with trainable weights to prune (see `kerasreg.dependency_groups`). "
                f"Received: {len(groups)} groups, none with a trainable weight the masks can "
                "zero (those that write or carry a channel, and those that read it where a "
                "zero channel stays zero)"
            )
        self.groups = [group for group, _ in pairs]
        self.positions = [position for _, position in pairs]
        self.measure = request.cost
        self.variables = []
        self._pieces = []  # per group, its _Pieces
        seen = {}
        for group in self.groups:
            pieces = []
            for member in group.members:
                if not (member.variable.trainable and _zeroable(group, member)):
                    continue
                key = id(member.variable)
                if key not in seen:
                    seen[key] = len(self.variables)
                    self.variables.append(member.variable)
                length = int(member.variable.shape[member.axis])
                pieces.append(
                    _Piece(
                        seen[key],
                        member.axis % len(member.variable.shape),
                        member.indices,
                        length,
                    )
                )
            self._pieces.append(pieces)
        self._shares = {id(v): _Share(self, v) for v in self.variables}
        self._full = [float(n) for n in cost.channels]
        self._dense = float(cost.at(self._full, self.measure))
        self._goal = request.target * self._dense
        least = list(self._full)
        for group, position in zip(self.groups, self.positions, strict=True):
            least[position] = float(min(request.round_to, group.channels))
        floor = float(cost.at(least, self.measure))
        if floor > self._goal:
            raise InvalidArgumentError(
                f"Invalid value for argument `target`: expected a target the removable "
                f"groups can reach; with {request.round_to} channel(s) left in each, the "
                f"model still costs {floor / self._dense:.4f} of its {self.measure} "
                f"({floor:,.0f} of {self._dense:,.0f}), so the target must be at least "
                f"that. Received: target={request.target!r}"
            )

    def share(self, variable):
        try:
            return self._shares[id(variable)]
        except KeyError:
            raise InvalidArgumentError(
                "Invalid value for argument `variable`: expected one of the penalty's "
                f"variables. Received: variable={getattr(variable, 'path', variable)!r}"
            ) from None

    def __call__(self, values):
        return ops.zeros((), dtype="float32")

    def gradients(self, values):
        return [ops.zeros_like(ops.convert_to_tensor(v)) for v in values]

    # The masks.

    @property
    def uses_gradients(self):
        """Whether `prox_update` takes the step's gradients (Taylor importance)."""
        return self.request.importance == "taylor"

    def prox_state(self):
        """One mask per group (1: kept); with Taylor importance, then one sum per group
        of each channel's importance since the last turn."""
        masks = tuple(np.ones((group.channels,), dtype="float32") for group in self.groups)
        if not self.uses_gradients:
            return masks
        return masks + tuple(np.zeros((group.channels,), dtype="float32") for group in self.groups)

    def _counts(self, masks):
        """Channels per group of the whole model, with `masks` on the pruned groups."""
        counts = list(self._full)
        for position, mask in zip(self.positions, masks, strict=True):
            counts[position] = ops.sum(mask)
        return counts

    def _per_channel(self, entries):
        """Per group, the sum over each channel's entries of `entries` (one tensor per
        variable, entry by entry)."""
        sums = {}
        per_group = []
        for pieces, group in zip(self._pieces, self.groups, strict=True):
            total = ops.zeros((group.channels,), dtype="float32")
            for piece in pieces:
                key = (piece.variable, piece.axis)
                if key not in sums:
                    value = entries[piece.variable]
                    axes = [a for a in range(len(value.shape)) if a != piece.axis]
                    sums[key] = ops.sum(value, axis=axes) if axes else value
                per_channel = ops.take(sums[key], piece.indices.reshape(-1), axis=0)
                per_channel = ops.reshape(per_channel, piece.indices.shape)
                total = total + ops.sum(per_channel, axis=1)
            per_group.append(total)
        return per_group

    def _importance(self, values):
        """Per group, each channel's Euclidean norm over all its entries."""
        squares = self._per_channel([ops.square(ops.cast(v, "float32")) for v in values])
        return [ops.sqrt(total) for total in squares]

    def _taylor(self, values, gradients):
        """Per group, each channel's first-order Taylor importance on this step's batch:
        the sum of |w * dL/dw| over its entries (the loss change its removal predicts)."""
        products = []
        for value, gradient in zip(values, gradients, strict=True):
            value = ops.cast(value, "float32")
            if gradient is None:
                products.append(ops.zeros_like(value))
            else:
                products.append(
                    ops.abs(value * ops.cast(ops.convert_to_tensor(gradient), "float32"))
                )
        return self._per_channel(products)

    def _recompute(self, values, masks, iteration, taylor=None):
        """New masks: the lowest scores go until the cost reaches the schedule's.

        With `taylor` (per group, each channel's accumulated Taylor
        importance, an estimate of the loss its removal costs), scores are
        importance per unit of cost as they stand; with the L2 norms, each
        norm is first divided by its group's total.
        """
        request = self.request
        counts = self._counts(masks)
        now = self.cost.at(counts, self.measure)
        share = request.share_at(iteration)
        goal = self._dense - share * (self._dense - self._goal)
        need = now - goal
        slopes = self.cost.slopes(counts, self.measure)
        importance = self._importance(values) if taylor is None else list(taylor)
        scores, costs = [], []
        big = 3.0e38
        for g, (mask, value) in enumerate(zip(masks, importance, strict=True)):
            alive = mask > 0
            total = ops.sum(value * mask) if taylor is None else 1.0
            slope = ops.maximum(ops.cast(slopes[self.positions[g]], "float32"), 1e-12)
            score = value / ops.maximum(total, 1e-30) / slope
            # The round_to best channels of each group stay.
            keep = min(request.round_to, self.groups[g].channels)
            order = ops.argsort(-ops.where(alive, value, -1.0))
            protected = ops.take(
                ops.cast(ops.arange(value.shape[0]) < keep, "float32"), ops.argsort(order)
            )
            score = ops.where(protected > 0, big, score)
            scores.append(ops.where(alive, score, -1.0))
            costs.append(ops.where(alive, slope * ops.ones_like(value), 0.0))
        scores = ops.concatenate(scores)
        costs = ops.concatenate(costs)
        order = ops.argsort(scores)
        sorted_costs = ops.take(costs, order)
        before = ops.cumsum(sorted_costs) - sorted_costs
        sorted_scores = ops.take(scores, order)
        # A channel goes if the cost comes closer to the goal with it gone.
        prune = ops.logical_and(before + 0.5 * sorted_costs < need, sorted_scores < big)
        prune = ops.take(ops.cast(prune, "float32"), ops.argsort(order))
        new_masks, start = [], 0
        for g, mask in enumerate(masks):
            width = self.groups[g].channels
            new = mask * (1.0 - prune[start : start + width])
            start += width
            if request.round_to > 1:
                new = self._rounded(new, mask, importance[g])
            new_masks.append(new)
        return new_masks

    def _refine(self, values, masks, iteration, taylor=None):
        """`_recompute` a few times over: each round prices channels at the widths the
        previous one left, so that a large turn lands on the cost it aims at (one
        channel's cost is linear in the widths of its neighbours' groups)."""
        for _ in range(_ROUNDS):
            masks = self._recompute(values, masks, iteration, taylor)
        return masks

    def _rounded(self, new, old, importance):
        """`new` with the channels left rounded up to a multiple of `round_to`:
        the most important of those it prunes come back."""
        step = float(self.request.round_to)
        left = ops.sum(new)
        target = ops.minimum(ops.ceil(left / step) * step, ops.sum(old))
        # Kept channels first, then the others by importance; pruned ones last.
        key = ops.where(
            new > 0,
            2.0 + importance / (1.0 + ops.max(importance)),
            importance / (1.0 + ops.max(importance)),
        )
        order = ops.argsort(-ops.where(old > 0, key, -1.0))
        ranks = ops.argsort(order)
        return ops.cast(ops.cast(ranks, "float32") < target, "float32")

    def _masked(self, values, masks):
        """`values` with the pruned channels' entries at zero."""
        factors = [None] * len(values)
        for pieces, mask in zip(self._pieces, masks, strict=True):
            extended = ops.concatenate([mask, ops.ones((1,), dtype=mask.dtype)])
            for piece in pieces:
                along = ops.take(extended, piece.index)
                rank = len(values[piece.variable].shape)
                shape = [1] * rank
                shape[piece.axis] = -1
                along = ops.reshape(along, shape)
                previous = factors[piece.variable]
                factors[piece.variable] = along if previous is None else previous * along
        masked = []
        for value, factor in zip(values, factors, strict=True):
            value = ops.convert_to_tensor(value)
            if factor is None:
                masked.append(value)
            else:
                masked.append(ops.where(factor > 0, value, ops.zeros_like(value)))
        return masked

    def prox_update(self, values, steps, iteration, states, gradients=None):
        """The values with the pruned channels at zero, and the state: the masks,
        recomputed on turns (and the Taylor sums, added to on every step of the
        schedule and cleared on turns)."""
        values = [ops.convert_to_tensor(v) for v in values]
        states = tuple(ops.convert_to_tensor(m) for m in states)
        masks = states[: len(self.groups)]
        iteration = ops.cast(iteration, "int32")
        request = self.request
        if not self.uses_gradients:

            def recompute():
                return tuple(self._refine(values, list(masks), iteration))

            masks = ops.cond(request._turn(iteration), recompute, lambda: masks)
            return self._masked(values, masks), tuple(masks)
        if gradients is None:
            raise ValueError("Taylor importance needs the step's gradients")
        in_range = ops.logical_and(iteration >= request.begin_step, iteration <= request.end_step)
        sums = tuple(states[len(self.groups) :])

        def accumulate():
            taylor = self._taylor(values, gradients)
            return tuple(total + step for total, step in zip(sums, taylor, strict=True))

        # Outside the schedule the step pays no pass over the weights for it.
        sums = ops.cond(in_range, accumulate, lambda: sums)

        def recompute():
            new = self._refine(values, list(masks), iteration, taylor=sums)
            return tuple(new) + tuple(ops.zeros_like(total) for total in sums)

        state = ops.cond(request._turn(iteration), recompute, lambda: tuple(masks) + sums)
        return self._masked(values, state[: len(self.groups)]), tuple(state)

    def prox(self, values, steps):
        """Prunes `values` to the final target in one go, by their L2 norms (no state kept)."""
        values = [ops.convert_to_tensor(v) for v in values]
        masks = [ops.convert_to_tensor(m) for m in self.prox_state()[: len(self.groups)]]
        final = ops.convert_to_tensor(max(self.request.end_step, 0), "int32")
        return self._masked(values, self._refine(values, masks, final))

    def get_config(self):
        raise NotImplementedError(_NOT_SAVED)

    def __repr__(self):
        return (
            f"<ChannelPruning masks: target={self.request.target!r} of the "
            f"{self.measure}, {len(self.groups)} groups over {len(self.variables)} variables>"
        )
