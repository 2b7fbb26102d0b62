"""Callbacks that watch and steer sparsity during `model.fit`.

They write their figures into `logs`, as Keras' own
`LearningRateScheduler` writes `logs["learning_rate"]`, so the progress bar,
`History`, `CSVLogger`, `TensorBoard`, `EarlyStopping` and `ModelCheckpoint`
see them without special code. Place them *before* callbacks that read
`logs` (`CSVLogger`, `TensorBoard`) in the `callbacks` list: Keras calls
callbacks in order. (`History` and the progress bar always come last.)

Keys written into `logs`:

- `sparsity` (`SparsityMonitor`): fraction of exact zeros over the weights
  that carry a penalty (0.0 if none does).
- `sparsity/<layer path>` (`SparsityMonitor`, `granularity="layer"`) and
  `sparsity/<layer path>/<weight>` (`granularity="weight"`): per layer or
  weight.
- `scheduled_sparsity` (`SparsityMonitor`): the sparsity of the masks in
  force on `MagnitudePruning` weights, weighted by size.
- `target_sparsity` and `strength_scale` (`TargetSparsity`): the scheduled
  target and the strength scale the next epoch uses.
- `zeros_frozen` (`FreezeSparsity`): 1.0 once the pattern is frozen, else 0.0.

The keys of weights are `WeightSparsity.key`: the variable's path without
the model's name (`kerasreg.sparsity_report(model)` lists them).
"""

import math
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from kerasreg import cost as cost_lib
from kerasreg import dependency as dependency_lib
from kerasreg import sparsity as sparsity_lib
from kerasreg._training import proximal_optimizer_of
from kerasreg._training import sync_variables
from kerasreg._validation import AnyOf
from kerasreg._validation import Boolean
from kerasreg._validation import Configurable
from kerasreg._validation import Integer
from kerasreg._validation import Interval
from kerasreg._validation import Options
from kerasreg._validation import invalid_argument

__all__ = ["FreezeSparsity", "SparsityMonitor", "TargetSparsity"]

_GRANULARITIES = ("model", "layer", "weight")


def _proximal_optimizer(model, owner):
    """The model's ProximalOptimizer, or an error naming the callback."""
    optimizer = proximal_optimizer_of(model)
    if optimizer is None:
        found = getattr(model, "optimizer", None)
        raise ValueError(
            f"`{owner}` needs a model compiled with a `kerasreg.ProximalOptimizer`. Received: "
            f"a model whose optimizer is {type(found).__name__ if found is not None else None}"
        )
    return optimizer


def _penalized_variables(model):
    """The trainable weights that carry a penalty, in the model's order.

    A weight carries one if it has a regularizer of its own (kerasreg's or
    any other, `variable.regularizer`), or if the model's `ProximalOptimizer`
    applies a prox to it (`proximal_regularizer`: the members of a penalty
    over several weights too).
    """
    optimizer = proximal_optimizer_of(model)
    proximal = optimizer is not None and optimizer.built
    return [
        variable
        for variable in model.trainable_variables
        if getattr(variable, "regularizer", None) is not None
        or (proximal and optimizer.proximal_regularizer(variable) is not None)
    ]


def _zero_counter(variables):
    """A function returning the exact-zero count of each of `variables`.

    The counting runs where the weights live, compiled into one call where
    the backend allows it, and only the vector of counts reaches the host.
    On JAX, weights split across processes are counted by each process's
    part inside the compiled call, whose counts every process then holds.
    """
    sizes = np.array([int(np.prod(v.shape)) for v in variables], "int64")
    if not variables:
        return lambda: sizes
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(autograph=False)
        def nonzeros():
            return tf.stack([tf.math.count_nonzero(v.value, dtype=tf.int64) for v in variables])

        return lambda: sizes - nonzeros().numpy()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        values = [v.value for v in variables]
        if all(
            (value.is_fully_addressable or value.is_fully_replicated)
            and all(d.platform == "cpu" for d in value.devices())
            for value in values
        ):
            # Host memory already, whole in this process: NumPy reads the
            # buffers without a copy.
            return lambda: (
                sizes
                - np.array([np.count_nonzero(np.asarray(v.value)) for v in variables], "int64")
            )
        count = jax.jit(lambda values: jnp.stack([jnp.count_nonzero(v) for v in values]))
        return lambda: (
            sizes - sparsity_lib._to_numpy(count([v.value for v in variables])).astype("int64")
        )
    if backend == "torch" and all(v.value.device.type == "cpu" for v in variables):
        return lambda: (
            sizes
            - np.array([np.count_nonzero(v.value.detach().numpy()) for v in variables], "int64")
        )

    def count():
        nonzeros = ops.stack([ops.cast(ops.count_nonzero(v.value), "int32") for v in variables])
        return sizes - np.asarray(ops.convert_to_numpy(nonzeros), "int64")

    return count


class SparsityMonitor(Configurable, keras.callbacks.Callback):
    """Writes the sparsity of the model into `logs` during training.

    At the end of every epoch (and every `update_freq` batches if asked), it
    counts the exact zeros of the weights `kerasreg.sparsity_report` covers
    (kernels, and any weight carrying a regularizer; biases on request) and
    writes one figure per weight or layer under `sparsity/<key>`, and the
    overall fraction under `sparsity`. The overall fraction is over the
    weights that carry a penalty only: those with a regularizer of their own
    (kerasreg's or any other) and those the model's `ProximalOptimizer`
    applies a prox to (the members of a penalty over several weights too).
    Unpenalized kernels appear in the per-weight figures but never dilute
    it: with `L1` on the BatchNormalization scales only and half of them
    zero, it is 0.5. It is 0.0 when no weight carries a penalty. The
    counting runs on the device and moves one small vector of counts to the
    host, so the cost is a few element-wise passes over the weights per
    epoch.

    If some monitored weights carry a `MagnitudePruning` regularizer (or any
    regularizer with an `applied_sparsity(iterations)` schedule), the
    sparsity of the masks in force is written too, as `scheduled_sparsity`.

    Args:
        granularity: `"weight"` (one figure per weight, keys
            `sparsity/<layer path>/<weight>`), `"layer"` (one per layer, keys
            `sparsity/<layer path>`) or `"model"` (only `sparsity`).
            Defaults to `"weight"`.
        update_freq: `"epoch"`, or an int `N` to also write the figures into
            the batch logs every `N` batches (on JAX this synchronizes the
            model's variables, a host transfer of all the weights). Defaults
            to `"epoch"`.
        include_biases: Whether to monitor biases and other rank-0/1 weights
            without a regularizer. Defaults to `False`.
        print_report: Whether to print `kerasreg.sparsity_report(model)` at
            the end of training. Defaults to `False`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import kerasreg
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(1, kernel_regularizer=kerasreg.L1(0.1), name="dense"),
    ... ])
    >>> model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
    >>> x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    >>> history = model.fit(x, 2 * x[:, :1], epochs=50, verbose=0,
    ...                     callbacks=[kerasreg.SparsityMonitor()])
    >>> sorted(k for k in history.history if k.startswith("sparsity"))
    ['sparsity', 'sparsity/dense/kernel']
    >>> history.history["sparsity"][-1]  # 7 of the 8 inputs are unused
    0.875
    """

    _parameter_constraints = {
        "granularity": Options(*_GRANULARITIES),
        "update_freq": AnyOf(Options("epoch"), Integer(1)),
        "include_biases": Boolean(),
        "print_report": Boolean(),
    }

    def __init__(
        self,
        granularity="weight",
        update_freq="epoch",
        include_biases=False,
        print_report=False,
    ):
        super().__init__()
        self._set_arguments(
            granularity=granularity,
            update_freq=update_freq,
            include_biases=include_biases,
            print_report=print_report,
        )
        self._weights = None
        if self.update_freq != "epoch":
            # Defined only when asked for: a batch hook stops Keras from
            # dispatching batch callbacks asynchronously.
            self.on_train_batch_end = self._on_train_batch_end

    def _collect(self):
        weights = sparsity_lib._reported_weights(self.model, self.include_biases)
        monitored = [variable for _, _, variable in weights]
        penalized = _penalized_variables(self.model)
        seen = {id(variable) for variable in monitored}
        # Penalized weights the report leaves out (a bias in a joint penalty)
        # count in the overall figure, under no key of their own.
        extra = [variable for variable in penalized if id(variable) not in seen]
        self._variables = monitored + extra
        penalized_ids = {id(variable) for variable in penalized}
        self._penalized = [
            n for n, variable in enumerate(self._variables) if id(variable) in penalized_ids
        ]
        self._count_zeros = _zero_counter(self._variables)
        self._sizes = np.array([int(np.prod(v.shape)) for v in self._variables], "int64")
        groups = {}
        if self.granularity != "model":
            for n, (key, _, _) in enumerate(weights):
                name = key
                if self.granularity == "layer":
                    name = key.rpartition("/")[0] or key
                groups.setdefault(f"sparsity/{name}", []).append(n)
        self._groups = groups
        self._scheduled = [
            (n, variable.regularizer)
            for n, variable in enumerate(self._variables)
            if callable(getattr(getattr(variable, "regularizer", None), "applied_sparsity", None))
        ]
        self._weights = weights

    def on_train_begin(self, logs=None):
        self._weights = None

    def figures(self):
        """The figures `SparsityMonitor` writes, for the model's current weights."""
        if self._weights is None:
            self._collect()
        zeros = self._count_zeros()
        total = int(self._sizes[self._penalized].sum())
        figures = {"sparsity": float(zeros[self._penalized].sum() / total) if total else 0.0}
        for key, members in self._groups.items():
            # An empty weight has no zeros: 0.0, as in `sparsity_report`.
            size = self._sizes[members].sum()
            figures[key] = float(zeros[members].sum() / size) if size else 0.0
        if self._scheduled and getattr(self.model, "optimizer", None) is not None:
            iteration = int(ops.convert_to_numpy(self.model.optimizer.iterations))
            sizes = self._sizes[[n for n, _ in self._scheduled]]
            targets = [float(r.applied_sparsity(iteration)) for _, r in self._scheduled]
            figures["scheduled_sparsity"] = float(np.dot(sizes, targets) / sizes.sum())
        return figures

    def _on_train_batch_end(self, batch, logs=None):
        if logs is not None and (batch + 1) % self.update_freq == 0:
            sync_variables(self.model)
            logs.update(self.figures())

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.figures())

    def on_train_end(self, logs=None):
        if self.print_report:
            sync_variables(self.model)
            print(sparsity_lib.sparsity_report(self.model, include_biases=self.include_biases))


class ControllerState(NamedTuple):
    r"""The memory of `TargetSparsity`'s controller; NaN marks a figure not yet set.

    The optimizer holds it (`_load_state`, `_store_state`): the first three
    figures in its float32 `controller_state` control, the scale in
    `strength_scale`, so it is saved with the optimizer and a run resumed
    from a checkpoint continues its ramp. The control marks an unset
    figure with infinity, not NaN: JAX's multi-process runtime checks that
    every process puts equal values into a variable, and NaN equals nothing.
    (NaN, as checkpoints of earlier versions hold, reads as unset too.)

    Attributes:
        initial: The sparsity the ramp starts from.
        previous: The sparsity measured at the end of the last epoch.
        trend: The smoothed epoch-to-epoch change of the sparsity,
            :math:`\bar\Delta`.
        scale: The strength scale :math:`c`.
    """

    initial: float = math.nan
    previous: float = math.nan
    trend: float = math.nan
    scale: float = 1.0


def _load_state(optimizer):
    memory = np.asarray(ops.convert_to_numpy(optimizer.controller_state), "float64")
    memory = np.where(np.isfinite(memory), memory, np.nan)
    return ControllerState(*memory.tolist(), float(ops.convert_to_numpy(optimizer.strength_scale)))


def _store_state(optimizer, state):
    memory = np.array(state[:3], "float32")
    optimizer.controller_state.assign(np.where(np.isnan(memory), np.inf, memory))
    optimizer.strength_scale.assign(state.scale)


def _float32(value):
    return float(np.float32(value))


def _scheduled_sparsity(epoch, initial, target, start_epoch, end_epoch):
    """The sparsity due at the end of `epoch` on the cubic ramp from `initial` to `target`.

    NaN before `start_epoch`; `target` from the end of epoch `end_epoch - 1`
    on, or at once if `initial` is NaN (unset).
    """
    if epoch < start_epoch:
        return math.nan
    if math.isnan(initial) or epoch + 1 >= end_epoch:
        return target
    progress = (epoch + 1 - start_epoch) / (end_epoch - start_epoch)
    return target + (initial - target) * (1.0 - progress) ** 3


def _update_controller(state, sparsity, target, gain, horizon, max_change):
    r"""One step of `TargetSparsity`'s control law, a pure function of its inputs.

    Args:
        state: The `ControllerState` before the step.
        sparsity: The sparsity measured at the end of the epoch, :math:`s_e`.
        target: The sparsity scheduled for it, :math:`s^\ast_e`.
        gain: :math:`g`.
        horizon: :math:`h`, in epochs.
        max_change: :math:`m`, the largest factor of change of the scale.

    Returns:
        The `ControllerState` after the step, its figures rounded to float32
        as the optimizer holds them (so a resumed run computes the same).
    """
    # The plant integrates: above its equilibrium strength, zeros keep
    # appearing for many epochs after the strength stops rising. The error
    # is taken on the sparsity extrapolated `horizon` epochs ahead along its
    # smoothed trend (the epoch to epoch flicker averages out of the trend).
    trend = state.trend
    if not math.isnan(state.previous):
        rise = sparsity - state.previous
        trend = rise if math.isnan(trend) else 0.7 * trend + 0.3 * rise
    # Rounded first: the law computes with what a checkpoint holds.
    previous, trend = _float32(sparsity), _float32(trend)
    predicted = previous + horizon * (0.0 if math.isnan(trend) else trend)
    bound = math.log(max_change)
    change = min(max(gain * (target - predicted), -bound), bound)
    return ControllerState(state.initial, previous, trend, _float32(state.scale * math.exp(change)))


class TargetSparsity(Configurable, keras.callbacks.Callback):
    r"""Adapts the regularization strength so the model reaches a sparsity.

    Users think in "95% sparse", not in strengths. This controller scales
    every prox step of the model's `kerasreg.ProximalOptimizer` (its
    `strength_scale` control, i.e. the strength of every regularizer) at
    the end of each epoch, so that the fraction of exact zeros among the
    weights the optimizer regularizes follows a cubic ramp, as in Zhu and
    Gupta's (2017) schedule, from its value at `start_epoch` to `target` at
    the end of epoch `end_epoch - 1`, and stays there afterwards.

    The sparsity responds to the strength slowly: above its equilibrium
    strength, zeros keep appearing for many epochs after the strength stops
    rising, and once made they are slow to leave. The controller integrates
    the error on the sparsity extrapolated `horizon` epochs ahead along its
    trend :math:`\bar\Delta_e` (an exponential average, weight 0.3, of the
    epoch-to-epoch changes, so that minibatch flicker averages out):

    .. math::

        \hat s_e = s_e + h\,\bar\Delta_e, \qquad
        \log c \leftarrow \log c + \operatorname{clip}\big(g\,(s^\ast_e -
            \hat s_e), -\log m, \log m\big),

    where :math:`s_e` is the measured and :math:`s^\ast_e` the scheduled
    sparsity, :math:`g` the `gain`, :math:`h` the `horizon` and :math:`m`
    the `max_change` per epoch. The strength stops rising before the target
    is met, so the sparsity tends to approach it from below, a few epochs
    behind the ramp (an overrun takes many epochs to undo). Under adaptive
    optimizers a slow drift remains: as the fit improves, the second moment
    shrinks and the per-coordinate threshold grows at a constant strength,
    so the sparsity can still creep past a high target (on LeNet-300-100,
    by 0.5 to 1.8 points at 90-98%). Minibatch noise makes the sparsity
    flicker from epoch to epoch (by up to three points on a 5,000-weight
    model in the tests).
    The strengths given to the regularizers set the starting point; the
    loss shows the penalty at those nominal strengths.

    It stops adjusting once the pattern is frozen (`FreezeSparsity`, or
    `optimizer.freeze_zeros()`). Follow it with `FreezeSparsity(start_epoch,
    sparsity=target)` a few epochs after `end_epoch`: the freeze completes a
    pattern that is short of the target to exactly the target by magnitude
    (it keeps an overrun as it is) and retrains the survivors without the
    penalty's shrinkage.
    This lets the L1 penalty choose how many zeros each layer gets.

    Writes `target_sparsity` (the scheduled figure for the epoch; NaN before
    `start_epoch`) and `strength_scale` (the scale the next epoch uses)
    into `logs`. A ramp starts from the sparsity found at `start_epoch`, or
    at the first epoch of a `fit` that begins later. The controller's memory
    is kept in the optimizer (its `controller_state` control), so a run
    restored by `BackupAndRestore`, or loaded from a `.keras` checkpoint and
    continued with `fit(initial_epoch=...)`, continues its ramp as if it had
    never stopped.

    **Sparsity of a cost.** With `measure="macs"` (or `"params"`), the
    sparsity is the fraction of the model's multiply-accumulates (or
    parameters) that its removed channels take with them
    (`kerasreg.model_cost(model).fraction_left`): the figure to steer a
    coupled group lasso by, `kerasreg.regularize(model,
    kerasreg.GroupLasso(s), groups="dependency", cost="macs")`, when the
    goal is a smaller, faster model.

    Args:
        target: Float in (0, 1), the fraction of exact zeros to reach (of
            the cost, with `measure`).
        end_epoch: Int, the epoch (0-based, exclusive) by whose start the
            target is scheduled to be reached.
        start_epoch: Int, the first epoch the controller acts on.
            Defaults to `0`.
        gain: Positive float, :math:`g`. Defaults to `3.0`.
        horizon: Non-negative float, :math:`h`, in epochs; `0` gives plain
            integral control (faster, overruns high targets). Defaults to
            `4.0`.
        max_change: Float > 1, the largest factor by which one update may
            change the scale. Defaults to `2.0`.
        measure: `"weights"` (exact zeros among the regularized weights'
            entries), `"macs"` or `"params"` (the share of the model's cost
            its removed channels take). Defaults to `"weights"`.

    Example:

    >>> import keras
    >>> import kerasreg
    >>> kerasreg.TargetSparsity(0.9, end_epoch=30)  # doctest: +NORMALIZE_WHITESPACE
    TargetSparsity(target=0.9, end_epoch=30, start_epoch=0, gain=3.0, horizon=4.0,
                   max_change=2.0, measure='weights')
    """

    _parameter_constraints = {
        "target": Interval(0.0, 1.0, closed="neither"),
        "end_epoch": Integer(1),
        "start_epoch": Integer(0),
        "gain": Interval(0.0, None, closed="neither"),
        "horizon": Interval(0.0, None),
        "max_change": Interval(1.0, None, closed="neither"),
        "measure": Options("weights", "macs", "params"),
    }

    def __init__(
        self,
        target,
        end_epoch,
        start_epoch=0,
        gain=3.0,
        horizon=4.0,
        max_change=2.0,
        measure="weights",
    ):
        super().__init__()
        self._set_arguments(
            target=target,
            end_epoch=end_epoch,
            start_epoch=start_epoch,
            gain=gain,
            horizon=horizon,
            max_change=max_change,
            measure=measure,
        )
        if self.end_epoch <= self.start_epoch:
            raise invalid_argument("end_epoch", f"an int > start_epoch={start_epoch}", end_epoch)

    def on_train_begin(self, logs=None):
        self._optimizer = _proximal_optimizer(self.model, type(self).__name__)
        self._variables = None
        self._cost = None  # with a cost `measure`: the model's `ModelCost`
        self._first_epoch = True

    def _measure(self):
        if self.measure != "weights":
            if self._cost is None:
                _regularized_variables(self.model, self._optimizer, type(self).__name__)
                self._cost = cost_lib.cost_for(self.model, "measure", self.measure)
            return 1.0 - self._cost.fraction_left(self.measure)
        if self._variables is None:
            self._variables = _regularized_variables(
                self.model, self._optimizer, type(self).__name__
            )
            self._size = sum(int(np.prod(v.shape)) for v in self._variables)
            self._count_zeros = _zero_counter(self._variables)
        return float(self._count_zeros().sum() / self._size)

    def scheduled(self, epoch):
        """The sparsity scheduled for the end of `epoch` (NaN before `start_epoch`)."""
        optimizer = getattr(self, "_optimizer", None)
        initial = _load_state(optimizer).initial if optimizer is not None else math.nan
        return _scheduled_sparsity(epoch, initial, self.target, self.start_epoch, self.end_epoch)

    def on_epoch_begin(self, epoch, logs=None):
        first_epoch, self._first_epoch = self._first_epoch, False
        if epoch < self.start_epoch:
            return
        # A ramp starts at `start_epoch`, or at the first epoch of a `fit`
        # that begins later, unless the optimizer holds one in progress
        # (`fit(initial_epoch=...)` after a restore continues it).
        state = _load_state(self._optimizer)
        if epoch == self.start_epoch or (first_epoch and math.isnan(state.initial)):
            initial = min(self._measure(), self.target)
            _store_state(self._optimizer, ControllerState(initial, scale=state.scale))

    def on_epoch_end(self, epoch, logs=None):
        state = _load_state(self._optimizer)
        target = _scheduled_sparsity(
            epoch, state.initial, self.target, self.start_epoch, self.end_epoch
        )
        frozen = float(ops.convert_to_numpy(self._optimizer.zeros_frozen)) > 0.5
        if epoch >= self.start_epoch and not frozen:
            state = _update_controller(
                state, self._measure(), target, self.gain, self.horizon, self.max_change
            )
            _store_state(self._optimizer, state)
        if logs is not None:
            logs["target_sparsity"] = target
            logs["strength_scale"] = state.scale


def _regularized_variables(model, optimizer, owner):
    if not optimizer.built:
        # TensorFlow builds the optimizer in the first step; callbacks that
        # act at the first epoch's start need its table of regularizers now.
        optimizer.build(model.trainable_variables)
    variables = [
        v for v in model.trainable_variables if optimizer.proximal_regularizer(v) is not None
    ]
    if not variables:
        raise ValueError(
            f"`{owner}` found no weight with a proximal regularizer in the "
            "model; give layers a kerasreg regularizer, e.g. "
            "`kernel_regularizer=kerasreg.L1(1e-4)`."
        )
    return variables


def _complete_sparsity(variables, sparsity):
    """Zeroes the smallest magnitudes until `sparsity` of all entries are zero.

    One projection onto the sparsity level, over the weights taken together
    (`kerasreg.prox.project_sparsity` on their concatenation); weights that
    are zero already count. Does nothing if they are sparse enough. Weights
    split across JAX processes are gathered whole in each (a collective).
    """
    values = [sparsity_lib._to_numpy(v) for v in variables]
    magnitudes = np.concatenate([np.abs(v).ravel() for v in values])
    needed = int(round(sparsity * magnitudes.size))
    if needed == 0 or np.count_nonzero(magnitudes == 0) >= needed:
        return
    threshold = np.partition(magnitudes, needed - 1)[needed - 1]
    for variable, value in zip(variables, values, strict=True):
        variable.assign(np.where(np.abs(value) <= threshold, np.zeros_like(value), value))


def _complete_channels(cost, fraction, measure):
    """Zeroes whole channels, least important per unit of cost first, while the
    model's cost (a `ModelCost`) comes closer to `fraction` of its own."""
    counts = [float(n) for n in cost.channels_left()]
    goal = fraction * cost.at(cost.channels, measure)
    importance = {}
    for i, group_cost in enumerate(cost.groups):
        group = group_cost.group
        if not group.removable:
            continue
        squares = np.zeros(group.channels)
        for member in group.members:
            if not member.variable.trainable:
                continue
            value = np.asarray(sparsity_lib._to_numpy(member.variable), "float64")
            axes = tuple(a for a in range(value.ndim) if a != member.axis)
            squares += (value**2).sum(axis=axes)[member.indices].sum(axis=1)
        importance[i] = np.sqrt(squares)
    alive_channels = cost.alive_channels()
    alive = {i: alive_channels[i].copy() for i in importance}
    pruned = {}
    while True:
        now = cost.at(counts, measure)
        slopes = cost.slopes(counts, measure)
        best = None
        for i, norms in importance.items():
            if alive[i].sum() <= 1:
                continue
            total = norms[alive[i]].sum()
            c = int(np.flatnonzero(alive[i])[np.argmin(norms[alive[i]])])
            score = norms[c] / total / max(slopes[i], 1e-12)
            if best is None or score < best[0]:
                best = (score, i, c)
        if best is None or now - 0.5 * slopes[best[1]] <= goal:
            break
        _, i, c = best
        alive[i][c] = False
        counts[i] -= 1
        pruned.setdefault(i, []).append(c)
    for i, channels in pruned.items():
        group = cost.groups[i].group
        for member in group.members:
            if not member.variable.trainable:
                continue
            if member.role == dependency_lib.READS and not group.zeros_propagate:
                continue
            value = sparsity_lib._to_numpy(member.variable).copy()
            index = [slice(None)] * value.ndim
            index[member.axis] = member.indices[channels].reshape(-1)
            value[tuple(index)] = 0
            member.variable.assign(value)


class FreezeSparsity(Configurable, keras.callbacks.Callback):
    """Freezes the sparsity pattern from an epoch on, for debiasing.

    L1-type penalties shrink the weights they keep as well as zeroing the
    rest. From `start_epoch` on, this callback holds every exact zero at zero
    (checked weight by weight after each step) and lets the surviving
    weights train on the data loss alone, undoing that shrinkage. It calls
    `ProximalOptimizer.freeze_zeros()` on the model's optimizer and writes
    `zeros_frozen` (0.0 or 1.0) into `logs`.

    With `sparsity`, the pattern is first completed to that level: if fewer
    than that fraction of the regularized weights' entries are zero, the
    smallest magnitudes among them (all weights together) are set to zero
    until it is reached. After `TargetSparsity`, this lands the model on
    its target even if the controller ended slightly below it.

    With `measure="macs"` (or `"params"`), `sparsity` is the share of the
    model's cost that its removed channels take (as `TargetSparsity`
    measures it), and the pattern is completed channel by channel: the
    remaining channels of the model's removable coupled groups are ranked
    as `kerasreg.ChannelPruning` ranks them (the norm of a channel's
    entries over its group's, per unit of cost) and zeroed, lowest first,
    while the cost comes closer to the target.

    Args:
        start_epoch: Int, the first epoch (0-based) trained with the pattern
            frozen.
        sparsity: Float in [0, 1) or `None`: the least fraction of exact
            zeros to freeze. Defaults to `None` (freeze the pattern as is).
        measure: `"weights"`, `"macs"` or `"params"`: what `sparsity` is a
            fraction of. Defaults to `"weights"`.

    Example:

    >>> import kerasreg
    >>> kerasreg.FreezeSparsity(start_epoch=150)
    FreezeSparsity(start_epoch=150, sparsity=None, measure='weights')
    """

    _parameter_constraints = {
        "start_epoch": Integer(0),
        "sparsity": AnyOf(Interval(0.0, 1.0, closed="left"), None),
        "measure": Options("weights", "macs", "params"),
    }

    def __init__(self, start_epoch, sparsity=None, measure="weights"):
        super().__init__()
        self._set_arguments(start_epoch=start_epoch, sparsity=sparsity, measure=measure)

    def on_train_begin(self, logs=None):
        self._optimizer = _proximal_optimizer(self.model, type(self).__name__)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch < self.start_epoch:
            return
        if float(ops.convert_to_numpy(self._optimizer.zeros_frozen)) < 0.5:
            if self.sparsity is not None:
                variables = _regularized_variables(self.model, self._optimizer, type(self).__name__)
                if self.measure == "weights":
                    _complete_sparsity(variables, self.sparsity)
                else:
                    cost = cost_lib.cost_for(self.model, "measure", self.measure)
                    _complete_channels(cost, 1.0 - self.sparsity, self.measure)
            self._optimizer.freeze_zeros(True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["zeros_frozen"] = float(ops.convert_to_numpy(self._optimizer.zeros_frozen))
