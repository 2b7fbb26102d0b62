"""Callbacks: figures in logs, History, CSVLogger, TensorBoard; reaching and freezing sparsity."""

import csv
import glob
import importlib.util
import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import load_digits

import kerasreg
from kerasreg.callbacks import ControllerState
from kerasreg.callbacks import _load_state
from kerasreg.callbacks import _scheduled_sparsity
from kerasreg.callbacks import _store_state
from kerasreg.callbacks import _update_controller
from tests.conftest import BACKEND
from tests.conftest import to_numpy

STEPS_PER_EXECUTION = 1 if BACKEND == "torch" else 8


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return (data.data / 16.0).astype("float32"), data.target.astype("int32")


def _mlp(regularizer, hidden=32, name="mlp"):
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(hidden, "relu", kernel_regularizer=regularizer(), name="hidden"),
            keras.layers.Dense(10, kernel_regularizer=regularizer(), name="logits"),
        ],
        name=name,
    )


def _compile(model, optimizer=None):
    model.compile(
        optimizer=optimizer or kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-2)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=STEPS_PER_EXECUTION,
    )


def _kernel_counts(model):
    """Independent count: `np.count_nonzero` over each layer's `get_weights()`."""
    counts = {}
    for layer in model.layers:
        kernel = layer.get_weights()[0]
        counts[layer.name] = (kernel.size, kernel.size - np.count_nonzero(kernel))
    return counts


class Recorder(keras.callbacks.Callback):
    """Keeps a copy of the logs every later callback sees."""

    def __init__(self):
        super().__init__()
        self.epochs, self.batches = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(dict(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((dict(logs), _kernel_counts(self.model)))


def test_monitor_writes_logs_history_and_csv(digits, tmp_path):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = _mlp(lambda: kerasreg.L1(1e-3))
    _compile(model)
    recorder = Recorder()
    csv_path = tmp_path / "log.csv"
    history = model.fit(
        x,
        y,
        epochs=4,
        batch_size=128,
        verbose=0,
        callbacks=[kerasreg.SparsityMonitor(), recorder, keras.callbacks.CSVLogger(csv_path)],
    )
    keys = ["sparsity", "sparsity/hidden/kernel", "sparsity/logits/kernel"]
    for key in keys:
        assert len(history.history[key]) == 4
    for logs, counts in recorder.epochs:
        for name in ("hidden", "logits"):
            size, zeros = counts[name]
            assert logs[f"sparsity/{name}/kernel"] == zeros / size
        total = sum(c[0] for c in counts.values())
        assert logs["sparsity"] == sum(c[1] for c in counts.values()) / total
    assert recorder.epochs[-1][0]["sparsity"] > 0.05  # L1 under the prox made zeros
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert set(keys) <= set(rows[0])
    np.testing.assert_allclose([float(r["sparsity"]) for r in rows], history.history["sparsity"])


@pytest.mark.parametrize(
    "granularity, keys",
    [
        ("model", {"sparsity"}),
        ("layer", {"sparsity", "sparsity/hidden", "sparsity/logits"}),
    ],
)
def test_monitor_granularity(digits, granularity, keys):
    x, y = digits
    model = _mlp(lambda: kerasreg.L1(1e-3))
    _compile(model)
    history = model.fit(
        x[:256],
        y[:256],
        epochs=1,
        batch_size=128,
        verbose=0,
        callbacks=[kerasreg.SparsityMonitor(granularity=granularity, include_biases=True)],
    )
    assert {k for k in history.history if k.startswith("sparsity")} == keys
    if granularity == "layer":
        # With biases: the layer's figure counts kernel and bias together.
        hidden = model.get_layer("hidden").get_weights()
        zeros = sum(w.size - np.count_nonzero(w) for w in hidden)
        assert history.history["sparsity/hidden"][0] == zeros / sum(w.size for w in hidden)


def test_monitor_overall_figure_counts_only_the_penalized_weights():
    # L1 on the BatchNormalization scales only: the unpenalized kernels, which
    # the per-weight figures still show, must not dilute the overall figure.
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, name="dense"),
            keras.layers.BatchNormalization(gamma_regularizer=kerasreg.L1(1e-3), name="norm"),
            keras.layers.Dense(1, name="out"),
        ]
    )
    gamma = model.get_layer("norm").gamma
    gamma.assign(np.where(np.arange(8) % 2 == 0, 0.0, 1.0).astype("float32"))
    # A zero learning rate keeps the planted zeros exactly as they are.
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.0)), "mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    history = model.fit(x, x[:, :1], epochs=1, verbose=0, callbacks=[kerasreg.SparsityMonitor()])
    penalized = [
        to_numpy(w) for w in model.trainable_weights if getattr(w, "regularizer", None) is not None
    ]
    size = sum(w.size for w in penalized)
    expected = 1.0 - sum(np.count_nonzero(w) for w in penalized) / size
    assert expected == 0.5  # the model is set up as intended
    assert history.history["sparsity"] == [expected]
    # The per-weight figures still cover every kernel.
    assert "sparsity/dense/kernel" in history.history


def test_monitor_every_n_batches(digits):
    x, y = digits
    model = _mlp(lambda: kerasreg.L1(1e-3))
    _compile(model, kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-2)))
    model.compile(
        optimizer=kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-2)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=1,
    )
    recorder = Recorder()
    model.fit(
        x[:640],
        y[:640],
        epochs=1,
        batch_size=64,
        verbose=0,
        callbacks=[kerasreg.SparsityMonitor(update_freq=2), recorder],
    )
    with_figures = [n for n, logs in enumerate(recorder.batches) if "sparsity" in logs]
    assert with_figures == [1, 3, 5, 7, 9]


def test_monitor_drives_early_stopping(digits):
    # Sparsity only grows under a strong L1 prox: in "min" mode it stops at once.
    x, y = digits
    model = _mlp(lambda: kerasreg.L1(1e-2))
    _compile(model)
    stopper = keras.callbacks.EarlyStopping(monitor="sparsity", mode="min", patience=1)
    history = model.fit(
        x,
        y,
        epochs=20,
        batch_size=128,
        verbose=0,
        callbacks=[kerasreg.SparsityMonitor(granularity="model"), stopper],
    )
    assert len(history.history["sparsity"]) < 20
    assert stopper.stopped_epoch > 0


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None
    or importlib.util.find_spec("tensorflow") is None,
    reason="Keras' TensorBoard callback writes with TensorFlow",
)
def test_monitor_figures_reach_tensorboard(digits, tmp_path):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    x, y = digits
    model = _mlp(lambda: kerasreg.L1(1e-3))
    _compile(model)
    history = model.fit(
        x,
        y,
        epochs=3,
        batch_size=128,
        verbose=0,
        callbacks=[
            kerasreg.SparsityMonitor(),
            keras.callbacks.TensorBoard(log_dir=str(tmp_path)),
        ],
    )
    (events,) = glob.glob(str(tmp_path / "train" / "events.out.tfevents.*"))
    accumulator = event_accumulator.EventAccumulator(events, size_guidance={"tensors": 0})
    accumulator.Reload()
    for key in ("sparsity", "sparsity/hidden/kernel", "sparsity/logits/kernel"):
        events = accumulator.Tensors(f"epoch_{key}")
        values = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in events]
        assert [e.step for e in events] == [0, 1, 2]
        np.testing.assert_allclose(values, history.history[key], rtol=1e-6)


def test_monitor_prints_report(digits, capsys):
    x, y = digits
    model = _mlp(lambda: kerasreg.L1(1e-3))
    _compile(model)
    model.fit(
        x[:256],
        y[:256],
        epochs=1,
        verbose=0,
        callbacks=[kerasreg.SparsityMonitor(print_report=True)],
    )
    out = capsys.readouterr().out
    assert "hidden/kernel" in out and "logits/kernel" in out and "total" in out


def test_monitor_logs_the_magnitude_schedule(digits):
    x, y = digits
    model = _mlp(lambda: kerasreg.MagnitudePruning(0.8, begin_step=0, end_step=20, frequency=5))
    _compile(model)
    recorder = Recorder()
    history = model.fit(
        x[:512],
        y[:512],
        epochs=6,
        batch_size=64,
        verbose=0,
        callbacks=[kerasreg.SparsityMonitor(), recorder],
    )

    # 8 steps per epoch; the mask is recomputed after the steps t = 0, 5, 10,
    # 15 and 20 (t counts earlier steps), on Zhu and Gupta's cubic.
    def cubic(t):
        return 0.8 * (1 - (1 - min(t, 20) / 20) ** 3)

    turns = [0, 5, 10, 15, 20]
    expected = [cubic(max(t for t in turns if t <= 8 * (e + 1) - 1)) for e in range(6)]
    np.testing.assert_allclose(history.history["scheduled_sparsity"], expected, rtol=1e-6)
    for e, (_, counts) in enumerate(recorder.epochs):
        for name, (size, zeros) in counts.items():
            assert zeros == round(expected[e] * size), (e, name)
    assert expected[-1] == pytest.approx(0.8)


def _target_run(x, y, target, epochs, end_epoch, callbacks=()):
    keras.utils.set_random_seed(1)
    model = _mlp(lambda: kerasreg.L1(1e-4), hidden=64)
    _compile(model, kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-3)))
    controller = kerasreg.TargetSparsity(target, end_epoch=end_epoch)
    recorder = Recorder()
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=128,
        verbose=0,
        callbacks=[kerasreg.SparsityMonitor(granularity="model"), controller, *callbacks, recorder],
    )
    return model, history, recorder


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_target_sparsity_reaches_its_target(digits, target):
    x, y = digits
    model, history, recorder = _target_run(x, y, target, epochs=60, end_epoch=30)
    # Independent counts after each epoch; minibatch noise makes zeros
    # flicker by a few points from epoch to epoch, so the controller is
    # judged on the last ten epochs, on average and at worst.
    reached = [
        sum(z for _, z in c.values()) / sum(s for s, _ in c.values()) for _, c in recorder.epochs
    ]
    assert history.history["sparsity"] == reached
    assert abs(np.mean(reached[50:]) - target) <= 0.01, reached[50:]
    assert max(abs(r - target) for r in reached[50:]) <= 0.04, reached[50:]
    assert reached[0] < 0.5  # it moved the sparsity a long way
    assert history.history["target_sparsity"][29:] == [target] * 31
    scales = history.history["strength_scale"]
    assert len(scales) == 60 and scales[-1] > 2.0
    # The scale the logs report is the one the optimizer holds.
    assert scales[-1] == pytest.approx(float(to_numpy(model.optimizer.strength_scale)))


# The control law alone, on a synthetic plant: no model is trained.


def _plant_run(target, epochs=120, start_epoch=0, end_epoch=30, horizon=4.0, flicker=0.0):
    """`TargetSparsity`'s law steering a plant with the lag of real training.

    The plant's sparsity relaxes towards an equilibrium that rises
    monotonically with the log-strength (a logistic curve, half sparse at
    scale e^2), rising at 15% and falling at 3% of the gap per epoch: zeros
    keep appearing long after the strength stops rising and are slow to
    leave, as under an L1 prox. `flicker` adds alternating measurement noise.
    Returns the plant's sparsity and the scale after each epoch.
    """
    sparsity, state, sparsities, scales = 0.05, ControllerState(), [], []
    for epoch in range(epochs):
        if epoch == start_epoch:  # as `TargetSparsity.on_epoch_begin` does
            state = ControllerState(min(sparsity, target), scale=state.scale)
        equilibrium = 1.0 / (1.0 + math.exp(-1.5 * (math.log(state.scale) - 2.0)))
        rate = 0.15 if equilibrium > sparsity else 0.03
        sparsity += rate * (equilibrium - sparsity)
        scheduled = _scheduled_sparsity(epoch, state.initial, target, start_epoch, end_epoch)
        if epoch >= start_epoch:
            measured = sparsity + flicker * (-1) ** epoch
            state = _update_controller(state, measured, scheduled, 3.0, horizon, 2.0)
        sparsities.append(sparsity)
        scales.append(state.scale)
    return np.array(sparsities), np.array(scales)


@pytest.mark.backend_neutral
@pytest.mark.parametrize("flicker", [0.0, 0.01])
@pytest.mark.parametrize("target", [0.3, 0.8, 0.95, 0.98])
def test_control_law_reaches_holds_and_does_not_overrun(target, flicker):
    sparsity, scales = _plant_run(target, flicker=flicker)
    # It ends the ramp (epoch 29) a few points short, approaching from below...
    assert 0.0 <= target - sparsity[29] <= 0.05
    # ... is within a point of the target 15 epochs later and stays there,
    assert np.abs(sparsity[45:] - target).max() <= 0.01
    assert abs(sparsity[-1] - target) <= 0.001
    # and never overruns it by more than 0.1 point, flicker included.
    assert sparsity.max() <= target + 0.001
    # The scale moves by at most `max_change` per epoch, never more.
    steps = np.abs(np.diff(np.log(np.concatenate([[1.0], scales]))))
    assert steps.max() <= math.log(2.0) + 1e-6


@pytest.mark.backend_neutral
@pytest.mark.parametrize("target", [0.9, 0.95])
def test_control_law_without_horizon_overruns(target):
    # Plain integral control (horizon 0) on the same plant shoots past a
    # high target by points, which the extrapolation along the trend prevents.
    sparsity, _ = _plant_run(target, horizon=0.0)
    assert sparsity.max() > target + 0.02


@pytest.mark.backend_neutral
def test_control_law_starts_late():
    sparsity, scales = _plant_run(0.9, start_epoch=10, end_epoch=40)
    assert (scales[:10] == 1.0).all()  # nothing moves before `start_epoch`
    assert np.abs(sparsity[55:] - 0.9).max() <= 0.01
    assert sparsity.max() <= 0.901


@pytest.mark.backend_neutral
def test_schedule_is_a_cubic_ramp():
    # Zhu and Gupta's cubic from 0.2 to 0.8 over epochs 2 to 5; NaN before.
    ramp = [_scheduled_sparsity(e, 0.2, 0.8, 2, 6) for e in range(8)]
    np.testing.assert_equal(ramp[:2], [math.nan] * 2)
    expected = [0.8 - 0.6 * 0.75**3, 0.8 - 0.6 * 0.5**3, 0.8 - 0.6 * 0.25**3, 0.8, 0.8, 0.8]
    np.testing.assert_allclose(ramp[2:], expected, rtol=1e-15)
    # An unset start (NaN) schedules the target at once.
    assert [_scheduled_sparsity(e, math.nan, 0.8, 2, 6) for e in range(2, 4)] == [0.8, 0.8]


@pytest.mark.backend_neutral
def test_control_law_known_steps():
    # From an unset state: no trend yet, the error is on the measurement.
    state = _update_controller(ControllerState(), 0.25, 0.5, 1.0, 4.0, 2.0)
    np.testing.assert_equal(state[:3], (math.nan, 0.25, math.nan))
    assert state.scale == float(np.float32(math.exp(0.25)))
    # The trend starts as the first change, then averages with weight 0.3;
    # the scale moves by the error on the sparsity predicted 4 epochs ahead.
    state = ControllerState(0.1, 0.5, math.nan, 1.0)
    for measured, trend, predicted in [(0.6, 0.1, 1.0), (0.7, 0.1, 1.1), (0.6, 0.04, 0.76)]:
        new = _update_controller(state, measured, 0.9, 1.0, 4.0, 2.0)
        assert new.initial == 0.1
        assert new.trend == pytest.approx(trend, rel=1e-6)
        assert math.log(new.scale / state.scale) == pytest.approx(0.9 - predicted, abs=1e-6)
        state = new
    # Far from the target the change is clipped to `max_change`.
    assert _update_controller(ControllerState(scale=1.5), 0.0, 0.9, 10.0, 0.0, 2.0).scale == 3.0
    assert _update_controller(ControllerState(scale=1.5), 0.9, 0.0, 10.0, 0.0, 2.0).scale == 0.75


_unit = st.floats(0.0, 1.0)


@pytest.mark.backend_neutral
@given(
    previous=st.one_of(st.just(math.nan), _unit),
    trend=st.one_of(st.just(math.nan), st.floats(-0.2, 0.2)),
    scale=st.floats(1e-3, 1e3),
    sparsity=_unit,
    target=st.floats(0.01, 0.99),
    gain=st.floats(0.1, 100.0),
    horizon=st.floats(0.0, 20.0),
    max_change=st.floats(1.01, 10.0),
)
def test_control_law_properties(
    previous, trend, scale, sparsity, target, gain, horizon, max_change
):
    initial = float(np.float32(0.1))  # as loaded from the optimizer
    state = ControllerState(
        initial, previous, trend if not math.isnan(previous) else math.nan, scale
    )
    new = _update_controller(state, sparsity, target, gain, horizon, max_change)
    # What the optimizer's float32 variables hold, NaN for unset.
    assert new.initial == initial and new.previous == float(np.float32(sparsity))
    assert all(math.isnan(v) or v == float(np.float32(v)) for v in new)
    assert math.isnan(new.trend) == math.isnan(previous)
    # The scale moves towards the target, by at most `max_change`.
    predicted = new.previous + horizon * (0.0 if math.isnan(new.trend) else new.trend)
    change = math.log(new.scale / scale)
    assert abs(change) <= math.log(max_change) + 1e-6
    assert change * (target - predicted) >= -1e-6
    expected = min(max(gain * (target - predicted), -math.log(max_change)), math.log(max_change))
    assert change == pytest.approx(expected, abs=1e-6)


def test_controller_memory_holds_no_nan():
    # JAX's multi-process runtime refuses to put into a variable a value it
    # cannot see is equal in every process, and NaN equals nothing: the
    # optimizer holds an unset figure as infinity, read back as NaN.
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD())
    np.testing.assert_array_equal(to_numpy(optimizer.controller_state), [np.inf] * 3)
    np.testing.assert_equal(_load_state(optimizer), ControllerState())
    _store_state(optimizer, ControllerState(0.5, scale=2.0))
    np.testing.assert_array_equal(to_numpy(optimizer.controller_state), [0.5, np.inf, np.inf])
    np.testing.assert_equal(_load_state(optimizer), (0.5, math.nan, math.nan, 2.0))


def test_hooks_apply_the_law_to_what_the_optimizer_holds():
    # The callback driven by hand, without training: sparsity 0.5.
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(2, kernel_regularizer=kerasreg.L1(0.1))]
    )
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD()), "mse")
    model.layers[0].kernel.assign(np.array([[0, 1], [0, 2], [3, 0], [4, 0]], "float32"))
    optimizer = model.optimizer
    controller = kerasreg.TargetSparsity(0.9, end_epoch=10, start_epoch=1)
    controller.set_model(model)
    stale = np.array([0.2, 0.3, 0.05], "float32")  # a ramp of an earlier run
    optimizer.controller_state.assign(stale)
    controller.on_train_begin()
    controller.on_epoch_begin(0)
    logs = {}
    controller.on_epoch_end(0, logs)  # before `start_epoch`: nothing moves
    np.testing.assert_array_equal(to_numpy(optimizer.controller_state), stale)
    assert math.isnan(logs["target_sparsity"]) and logs["strength_scale"] == 1.0
    controller.on_epoch_begin(1)  # a new ramp starts from the measured 0.5
    np.testing.assert_equal(_load_state(optimizer), (0.5, math.nan, math.nan, 1.0))
    controller.on_epoch_end(1, logs)
    scheduled = _scheduled_sparsity(1, 0.5, 0.9, 1, 10)
    expected = _update_controller(ControllerState(0.5), 0.5, scheduled, 3.0, 4.0, 2.0)
    np.testing.assert_equal(_load_state(optimizer), expected)
    assert expected.scale > 1.0
    assert logs == {"target_sparsity": scheduled, "strength_scale": expected.scale}
    held = to_numpy(optimizer.controller_state)
    assert held.dtype == np.float32 and held.shape == (3,)
    # Frozen: the state and the scale stay as they are.
    optimizer.freeze_zeros(True)
    controller.on_epoch_begin(2)
    controller.on_epoch_end(2, logs)
    np.testing.assert_equal(_load_state(optimizer), expected)
    assert logs["strength_scale"] == expected.scale
    # A later `fit` continues a ramp the optimizer holds, or starts one.
    controller.on_train_begin()
    controller.on_epoch_begin(5)
    np.testing.assert_equal(_load_state(optimizer), expected)
    optimizer.controller_state.assign(np.full(3, np.nan, "float32"))
    controller.on_train_begin()
    controller.on_epoch_begin(5)
    np.testing.assert_equal(_load_state(optimizer), (0.5, math.nan, math.nan, expected.scale))


def test_freeze_keeps_every_zero(digits):
    x, y = digits
    keras.utils.set_random_seed(2)
    model = _mlp(lambda: kerasreg.L1(3e-3))
    _compile(model)
    model.fit(x, y, epochs=5, batch_size=128, verbose=0)
    before = [layer.get_weights()[0] for layer in model.layers]
    assert all(np.count_nonzero(k == 0) > 0 for k in before)

    class CheckZeros(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for layer, kernel in zip(self.model.layers, before, strict=True):
                now = layer.get_weights()[0]
                np.testing.assert_array_equal(now[kernel == 0], 0.0)
                self.survivors_moved = not np.array_equal(now[kernel != 0], kernel[kernel != 0])

    checker = CheckZeros()
    history = model.fit(
        x,
        y,
        epochs=4,
        batch_size=128,
        verbose=0,
        callbacks=[kerasreg.FreezeSparsity(start_epoch=0), checker],
    )
    assert history.history["zeros_frozen"] == [1.0] * 4
    assert checker.survivors_moved
    after = [layer.get_weights()[0] for layer in model.layers]
    for kernel, now in zip(before, after, strict=True):
        # Zeros stay zero; without the prox, no new zero appears.
        np.testing.assert_array_equal(now == 0, kernel == 0)
    # Without the penalty, the survivors grow back from the L1 shrinkage.
    assert sum(np.abs(k).sum() for k in after) > sum(np.abs(k).sum() for k in before)


def test_freeze_completes_the_pattern_to_a_sparsity(digits):
    x, y = digits
    keras.utils.set_random_seed(3)
    model = _mlp(lambda: kerasreg.L1(1e-4))
    _compile(model)
    model.fit(x, y, epochs=2, batch_size=128, verbose=0)
    counts = _kernel_counts(model)
    assert sum(z for _, z in counts.values()) / sum(s for s, _ in counts.values()) < 0.5
    before = [layer.get_weights()[0] for layer in model.layers]
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=128,
        verbose=0,
        callbacks=[kerasreg.FreezeSparsity(start_epoch=0, sparsity=0.9)],
    )
    after = [layer.get_weights()[0] for layer in model.layers]
    sizes = sum(k.size for k in after)
    zeros = sum(np.count_nonzero(k == 0) for k in after)
    assert zeros == round(0.9 * sizes)
    # The zeros chosen are the smallest magnitudes of all kernels together.
    magnitudes = np.concatenate([np.abs(k).ravel() for k in before])
    removed = np.concatenate([(k == 0).ravel() for k in after])
    assert magnitudes[removed].max() <= magnitudes[~removed].min()


def test_freeze_after_target_lands_on_it(digits):
    x, y = digits
    freeze = kerasreg.FreezeSparsity(start_epoch=25, sparsity=0.9)
    model, history, recorder = _target_run(x, y, 0.9, epochs=30, end_epoch=20, callbacks=[freeze])
    sparsities = [
        sum(z for _, z in c.values()) / sum(s for s, _ in c.values()) for _, c in recorder.epochs
    ]
    sizes = sum(s for s, _ in recorder.epochs[0][1].values())
    # Below the target at the freeze, the pattern is completed to it exactly;
    # above it, the pattern is frozen as it is. Either way it then holds.
    expected = max(sparsities[24], round(0.9 * sizes) / sizes)
    assert sparsities[25:] == [expected] * 5
    assert history.history["zeros_frozen"] == [0.0] * 25 + [1.0] * 5
    # Once frozen, the controller stops moving the strength.
    assert len(set(history.history["strength_scale"][25:])) == 1


def test_callbacks_need_a_proximal_optimizer(digits):
    x, y = digits
    model = _mlp(lambda: kerasreg.L1(1e-3))
    _compile(model, keras.optimizers.Adam())
    for callback in (kerasreg.TargetSparsity(0.5, end_epoch=2), kerasreg.FreezeSparsity(0)):
        with pytest.raises(ValueError, match="kerasreg.ProximalOptimizer"):
            model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[callback])


def test_target_sparsity_needs_a_regularized_weight(digits):
    x, y = digits
    model = _mlp(lambda: None)
    _compile(model)
    with pytest.raises(ValueError, match="no weight with a proximal regularizer"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[kerasreg.TargetSparsity(0.5, 2)])


@pytest.mark.backend_neutral
@pytest.mark.parametrize(
    "callback",
    [
        kerasreg.SparsityMonitor(granularity="layer", update_freq=5, print_report=True),
        kerasreg.TargetSparsity(
            0.9, end_epoch=40, start_epoch=3, gain=10.0, horizon=2.0, max_change=1.5
        ),
        kerasreg.FreezeSparsity(7, sparsity=0.9),
    ],
    ids=lambda c: type(c).__name__,
)
def test_config_is_printable_and_reproducible(callback):
    config = callback.get_config()
    clone = type(callback).from_config(config)
    assert clone.get_config() == config
    assert repr(clone) == repr(callback)
    assert eval(repr(callback), {**vars(kerasreg)}).get_config() == config


@pytest.mark.backend_neutral
@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: kerasreg.SparsityMonitor(granularity="unit"), ValueError, "`granularity`"),
        (lambda: kerasreg.SparsityMonitor(update_freq=0), ValueError, "`update_freq`"),
        (lambda: kerasreg.SparsityMonitor(update_freq="batch"), ValueError, "`update_freq`"),
        (lambda: kerasreg.SparsityMonitor(print_report="yes"), TypeError, "`print_report`"),
        (lambda: kerasreg.TargetSparsity(1.0, 10), ValueError, "`target`"),
        (lambda: kerasreg.TargetSparsity(0.0, 10), ValueError, "`target`"),
        (lambda: kerasreg.TargetSparsity(0.9, 10.0), TypeError, "`end_epoch`"),
        (lambda: kerasreg.TargetSparsity(0.9, 5, start_epoch=5), ValueError, "`end_epoch`"),
        (lambda: kerasreg.TargetSparsity(0.9, 5, gain=0.0), ValueError, "`gain`"),
        (lambda: kerasreg.TargetSparsity(0.9, 5, max_change=1.0), ValueError, "`max_change`"),
        (lambda: kerasreg.TargetSparsity(0.9, 5, horizon=-1.0), ValueError, "`horizon`"),
        (lambda: kerasreg.FreezeSparsity(-1), ValueError, "`start_epoch`"),
        (lambda: kerasreg.FreezeSparsity(2, sparsity=1.0), ValueError, "`sparsity`"),
    ],
)
def test_bad_arguments(make, error, message):
    with pytest.raises(error, match=f"Invalid value for argument {message}"):
        make()
