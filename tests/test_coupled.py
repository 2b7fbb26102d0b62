"""`CoupledGroupLasso`, its joint prox in `ProximalOptimizer`, and `regularize(groups=...)`.

The oracles are NumPy: the penalty and block soft thresholding written out
by hand for each model (which weights hold a residual channel is read off
the architecture, not from `dependency_groups`), the optimality conditions
of the prox in a diagonal metric and scipy's minimizer, and one plain SGD
step of the same model without the penalty, followed by the NumPy prox.
"""

import keras
import numpy as np
import pytest
from scipy.optimize import minimize

import kerasreg
from kerasreg import InvalidArgumentError
from tests.conftest import to_numpy

L = keras.layers


def _residual_mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    a = L.Dense(8, name="a", bias_initializer="random_normal")(inputs)
    b = L.Dense(8, activation="relu", name="b", bias_initializer="random_normal")(a)
    stream = L.Add(name="add")([a, b])
    outputs = L.Dense(3, name="head")(stream)
    return keras.Model(inputs, outputs)


def _mlp_channels(model):
    """Per stream channel, every entry that writes it (NumPy), by hand."""
    a, b = model.get_layer("a"), model.get_layer("b")
    ka, ba, kb, bb = (to_numpy(v) for v in (a.kernel, a.bias, b.kernel, b.bias))
    return [[ka[:, c], ba[c : c + 1], kb[:, c], bb[c : c + 1]] for c in range(8)]


def _residual_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = L.BatchNormalization(
        name="bn", beta_initializer="random_normal", gamma_initializer="random_normal"
    )(x)
    x = L.ReLU(name="relu")(x)
    y = L.Conv2D(4, 3, padding="same", name="c2", bias_initializer="random_normal")(x)
    x = L.Add(name="add")([x, y])
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


def _cnn_channels(model):
    c1, bn, c2 = (model.get_layer(n) for n in ("c1", "bn", "c2"))
    k1, b1, k2, b2 = (to_numpy(v) for v in (c1.kernel, c1.bias, c2.kernel, c2.bias))
    gamma, beta = to_numpy(bn.gamma), to_numpy(bn.beta)
    return [
        [k1[..., c], b1[c : c + 1], gamma[c : c + 1], beta[c : c + 1], k2[..., c], b2[c : c + 1]]
        for c in range(4)
    ]


def _closed_form(channels, strength):
    size = sum(part.size for part in channels[0])
    norms = [np.linalg.norm(np.concatenate([p.ravel() for p in parts])) for parts in channels]
    return strength * np.sqrt(size) * np.sum(norms)


def _losses(model):
    return float(sum(float(to_numpy(loss)) for loss in model.losses))


@pytest.mark.parametrize(
    "build, channels, size",
    [
        (_residual_mlp, _mlp_channels, 6 + 1 + 8 + 1),
        (_residual_cnn, _cnn_channels, 27 + 3 + 36 + 1),
    ],
)
def test_penalty_equals_the_closed_form(build, channels, size):
    model = build()
    kerasreg.regularize(model, kerasreg.GroupLasso(0.05), groups="dependency")
    assert sum(part.size for part in channels(model)[0]) == size
    expected = _closed_form(channels(model), 0.05)
    penalties = {
        id(v.regularizer.joint) for v in model.trainable_variables if v.regularizer is not None
    }
    assert len(penalties) == 1
    penalty = next(v.regularizer.joint for v in model.trainable_variables if v.regularizer)
    assert penalty.group_sizes == [size]
    value = float(to_numpy(penalty([v.value for v in penalty.variables])))
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    # Keras sums every weight's share: the penalty counts once.
    np.testing.assert_allclose(_losses(model), expected, rtol=1e-5)
    # The normalization statistics are not trainable: no share, no prox.
    bn = model.layers[2] if build is _residual_cnn else None
    if bn is not None:
        assert bn.moving_mean.regularizer is None and bn.moving_variance.regularizer is None


def _numpy_block_prox(matrix, threshold):
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.where(norms > threshold, 1 - threshold / np.maximum(norms, 1e-300), 0) * matrix


def _two_groups(rng):
    small = np.where(np.arange(6) == 4, 0.1, 1.0)  # channel 1 of the first group
    kernel = keras.Variable(rng.normal(size=(3, 2, 6)) * small, dtype="float32", name="kernel")
    bias = keras.Variable(rng.normal(size=(6,)) * small, dtype="float32", name="bias")
    gate = keras.Variable(rng.normal(size=(5, 3)), dtype="float32", name="gate")
    groups = [
        [(kernel, 2, np.array([[0], [4]])), (bias, 0, np.array([[0], [4]]))],
        [
            (kernel, -1, np.array([[5, 1], [3, 2]])),
            (gate, 0, np.array([[0, 3], [1, 4]])),
            (bias, 0, np.array([[5, 1], [3, 2]])),
        ],
    ]
    return kernel, bias, gate, groups


def _gather(values, group):
    """A group's `(channels, size)` matrix, by NumPy fancy indexing."""
    rows = []
    for c in range(len(group[0][2])):
        parts = [np.take(values[id(v)], idx[c], axis=axis).ravel() for v, axis, idx in group]
        rows.append(np.concatenate(parts))
    return np.array(rows)


def test_joint_prox_is_block_soft_thresholding_over_the_union(rng):
    kernel, bias, gate, groups = _two_groups(rng)
    penalty = kerasreg.CoupledGroupLasso(0.3, groups)
    values = {id(v): to_numpy(v).astype("float64") for v in (kernel, bias, gate)}
    step = 1.2
    new = penalty.prox([v.value for v in penalty.variables], step)
    new = {id(v): to_numpy(n) for v, n in zip(penalty.variables, new, strict=True)}
    zeroed = 0
    for group in groups:
        size = _gather(values, group).shape[1]
        expected = _numpy_block_prox(_gather(values, group), step * 0.3 * np.sqrt(size))
        zeroed += int(np.sum(np.all(expected == 0, axis=1)))
        np.testing.assert_allclose(_gather(new, group), expected, rtol=1e-5, atol=1e-6)
    assert 0 < zeroed < 4  # the threshold zeroes some channels, not all
    # Entries in no group are untouched, to the bit.
    untouched_gate = np.delete(values[id(gate)], [0, 3, 1, 4], axis=0)
    np.testing.assert_array_equal(np.delete(new[id(gate)], [0, 3, 1, 4], axis=0), untouched_gate)


def test_joint_prox_with_per_coordinate_steps_is_optimal(rng):
    kernel, bias, gate, groups = _two_groups(rng)
    penalty = kerasreg.CoupledGroupLasso(0.2, groups)
    variables = penalty.variables
    values = {id(v): to_numpy(v).astype("float64") for v in variables}
    steps = {id(v): rng.uniform(0.2, 2.0, size=tuple(v.shape)) for v in variables}
    new = penalty.prox([v.value for v in variables], [steps[id(v)] for v in variables])
    new = {id(v): to_numpy(n).astype("float64") for v, n in zip(variables, new, strict=True)}
    for group in groups:
        x, s, z = (_gather(d, group) for d in (values, steps, new))
        t = 0.2 * np.sqrt(x.shape[1])
        for c in range(x.shape[0]):
            if np.all(z[c] == 0):
                # 0 is optimal iff the subgradient condition holds there.
                assert np.linalg.norm(x[c] / s[c]) <= t * (1 + 1e-6)
                continue
            # Stationarity: (z - x) / s + t z / |z| = 0.
            residual = (z[c] - x[c]) / s[c] + t * z[c] / np.linalg.norm(z[c])
            np.testing.assert_allclose(residual, 0, atol=1e-4)

            def objective(w, x=x[c], s=s[c], t=t):
                return np.sum((w - x) ** 2 / (2 * s)) + t * np.linalg.norm(w)

            best = minimize(objective, x[c], method="Powell", options={"xtol": 1e-10})
            assert objective(z[c]) <= best.fun + 1e-6
    zeroed = sum(int(np.sum(np.all(_gather(new, g) == 0, axis=1))) for g in groups)
    assert 0 < zeroed < 4


def _data(seed=0, n=64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = np.stack([x[:, 0] - x[:, 1], x[:, 2], x[:, 0] * 0.5], axis=1).astype("float32")
    return x, y


def test_one_step_is_the_prox_of_the_data_gradient_step():
    x, y = _data()
    lr, strength = 0.1, 0.02
    plain = _residual_mlp()
    model = _residual_mlp()
    kerasreg.regularize(model, kerasreg.GroupLasso(strength), groups="dependency")
    plain.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    model.compile(optimizer=kerasreg.ProximalOptimizer(keras.optimizers.SGD(lr)), loss="mse")
    plain.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    # The penalized weights: the NumPy prox of the unpenalized step.
    channels = _mlp_channels(plain)
    matrix = np.array([np.concatenate([p.ravel() for p in parts]) for parts in channels])
    expected = _numpy_block_prox(matrix, lr * strength * np.sqrt(matrix.shape[1]))
    got = np.array([np.concatenate([p.ravel() for p in parts]) for parts in _mlp_channels(model)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # The unpenalized head takes the same step.
    np.testing.assert_allclose(
        to_numpy(model.get_layer("head").kernel),
        to_numpy(plain.get_layer("head").kernel),
        rtol=1e-4,
        atol=1e-6,
    )


def _compacted(model, x):
    """`kerasreg.compact(model)`, checked to predict as `model` does."""
    small = kerasreg.compact(model)
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    return small


def _whole_channels(channels):
    """The indices of the channels that are exactly zero in every member."""
    return [c for c, parts in enumerate(channels) if all(np.all(p == 0) for p in parts)]


@pytest.mark.parametrize(
    "inner, strength",
    [(lambda: keras.optimizers.SGD(0.1), 0.08), (lambda: keras.optimizers.Adam(0.02), 0.08)],
)
def test_training_zeroes_whole_residual_channels(inner, strength):
    x, y = _data(n=128)
    model = _residual_mlp()
    kerasreg.regularize(model, kerasreg.GroupLasso(strength), groups="dependency")
    model.compile(optimizer=kerasreg.ProximalOptimizer(inner()), loss="mse")
    model.fit(x, y, batch_size=32, epochs=25, verbose=0)
    zero = _whole_channels(_mlp_channels(model))
    assert 0 < len(zero) < 8, zero
    assert np.isfinite(_losses(model))
    # The zero channels leave every layer of the stream: a (6 x k and k),
    # b (k x k and k, its rows read the stream), head (k x 3 and 3).
    k = 8 - len(zero)
    assert _compacted(model, x).count_params() == 7 * k + k * k + k + 3 * k + 3


def test_training_zeroes_whole_channels_of_a_residual_cnn():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 6, 6, 3)).astype("float32")
    y = np.stack([x[..., 0].mean(axis=(1, 2)), x[..., 1].mean(axis=(1, 2))], axis=1)
    model = _residual_cnn()
    kerasreg.regularize(model, kerasreg.GroupLasso(0.003), groups="dependency")
    model.compile(optimizer=kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.02)), loss="mse")
    model.fit(x, y, batch_size=32, epochs=15, verbose=0)
    zero = _whole_channels(_cnn_channels(model))
    assert 0 < len(zero) < 4, zero
    assert np.isfinite(_losses(model))
    # c1 (27 x k and k), bn (4 x k), c2 (9 k x k and k), head (k x 2 and 2).
    k = 4 - len(zero)
    assert _compacted(model, x).count_params() == 28 * k + 4 * k + 9 * k * k + k + 2 * k + 2


def test_training_zeroes_whole_attention_heads():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 5, 8)).astype("float32")
    y = 4 * x[:, :, :2].mean(axis=1)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 8))
    attention = L.MultiHeadAttention(num_heads=4, key_dim=3, name="mha")
    h = attention(inputs, inputs)
    outputs = L.Dense(2, name="head")(L.GlobalAveragePooling1D()(h))
    model = keras.Model(inputs, outputs)
    kerasreg.regularize(model, kerasreg.GroupLasso(0.05), groups="dependency")
    model.compile(optimizer=kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.02)), loss="mse")
    model.fit(x, y, batch_size=32, epochs=20, verbose=0)
    heads = []
    for h in range(4):
        parts = []
        for dense in (attention._query_dense, attention._key_dense, attention._value_dense):
            parts += [to_numpy(dense.kernel)[:, h, :], to_numpy(dense.bias)[h, :]]
        heads.append(parts)
    zero = _whole_channels(heads)
    assert 0 < len(zero) < 4, zero
    assert np.isfinite(_losses(model))
    # The zero heads go: query, key and value (8 x 3 and 3 each per head),
    # and their rows of the output projection. So do the output channels
    # (a removable group too) whose column and bias are zero.
    output = attention._output_dense
    kernel, bias = to_numpy(output.kernel), to_numpy(output.bias)
    m = int(np.sum(np.any(kernel != 0, axis=(0, 1)) | (bias != 0)))
    k = 4 - len(zero)
    small = _compacted(model, x)
    assert small.get_layer("mha").num_heads == k
    assert small.count_params() == 3 * (8 * k * 3 + k * 3) + k * 3 * m + m + m * 2 + 2


def test_regularize_after_training_reaches_the_built_optimizer():
    x, y = _data()
    model = _residual_mlp()
    model.compile(optimizer=kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    kerasreg.regularize(model, kerasreg.GroupLasso(100.0), groups="dependency")
    optimizer = model.optimizer
    kernel = model.get_layer("a").kernel
    assert isinstance(optimizer.proximal_regularizer(kernel), kerasreg.CoupledGroupLasso)
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert _whole_channels(_mlp_channels(model)) == list(range(8))
    kerasreg.regularize(model, None, groups="dependency")
    assert optimizer.proximal_regularizer(kernel) is None


def test_a_joint_penalty_needs_all_its_variables_in_the_optimizer():
    model = _residual_mlp()
    kerasreg.regularize(model, kerasreg.GroupLasso(0.1), groups="dependency")
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="does not train"):
        optimizer.build([model.get_layer("a").kernel])


def test_excluding_a_variable_leaves_its_joint_penalty_to_the_gradient():
    model = _residual_mlp()
    kerasreg.regularize(model, kerasreg.GroupLasso(0.1), groups="dependency")
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1), exclude_names=["b/bias"])
    optimizer.build(model.trainable_variables)
    assert all(optimizer.proximal_regularizer(v) is None for v in model.trainable_variables)


def test_groups_argument_errors(tmp_path):
    model = _residual_mlp()
    with pytest.raises(InvalidArgumentError, match="argument `groups`"):
        kerasreg.regularize(model, kerasreg.GroupLasso(0.1), groups="bogus")
    with pytest.raises(InvalidArgumentError, match="argument `regularizer`"):
        kerasreg.regularize(model, kerasreg.L1(0.1), groups="dependency")
    with pytest.raises(InvalidArgumentError, match="argument `weights`"):
        kerasreg.regularize(model, kerasreg.GroupLasso(0.1), weights="bias", groups="dependency")
    plain = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    with pytest.raises(InvalidArgumentError, match="argument `model`"):
        kerasreg.regularize(plain, kerasreg.GroupLasso(0.1), groups="dependency")
    assert all(v.regularizer is None for v in model.weights)


def test_saving_is_refused_until_the_penalty_is_removed(tmp_path):
    model = _residual_mlp()
    kerasreg.regularize(model, kerasreg.GroupLasso(0.1), groups="dependency")
    path = tmp_path / "model.keras"
    with pytest.raises(ValueError, match="CoupledGroupLasso"):
        model.save(path)
    assert not path.exists()
    kerasreg.regularize(model, None, groups="dependency")
    assert all(v.regularizer is None for v in model.weights)
    assert _losses(model) == 0.0
    model.save(path)
    assert keras.models.load_model(path).count_params() == model.count_params()


def test_layers_and_exclude_choose_groups():
    model = _residual_mlp()
    with pytest.raises(InvalidArgumentError, match="argument `model`"):
        kerasreg.regularize(model, kerasreg.GroupLasso(0.1), groups="dependency", exclude=["head"])
    kerasreg.regularize(model, kerasreg.GroupLasso(0.1), groups="dependency", layers=["b"])
    assert model.get_layer("a").kernel.regularizer is not None
    assert model.get_layer("head").kernel.regularizer is None


def test_coupled_group_lasso_checks_its_groups(rng):
    kernel = keras.Variable(rng.normal(size=(3, 4)), dtype="float32")
    with pytest.raises(InvalidArgumentError, match="argument `strength`"):
        kerasreg.CoupledGroupLasso(-1.0, [[(kernel, 1, np.array([[0]]))]])
    with pytest.raises(InvalidArgumentError, match="argument `groups`"):
        kerasreg.CoupledGroupLasso(0.1, [])
    with pytest.raises(InvalidArgumentError, match="along one axis"):
        kerasreg.CoupledGroupLasso(
            0.1, [[(kernel, 1, np.array([[0]]))], [(kernel, 0, np.array([[1]]))]]
        )
    with pytest.raises(InvalidArgumentError, match="twice"):
        kerasreg.CoupledGroupLasso(
            0.1, [[(kernel, 1, np.array([[0], [1]]))], [(kernel, 1, np.array([[1]]))]]
        )
    with pytest.raises(InvalidArgumentError, match="same number of channels"):
        kerasreg.CoupledGroupLasso(
            0.1, [[(kernel, 1, np.array([[0], [1]])), (kernel, 1, np.array([[2]]))]]
        )
    with pytest.raises(InvalidArgumentError, match=r"in \[0, 4\)"):
        kerasreg.CoupledGroupLasso(0.1, [[(kernel, 1, np.array([[4]]))]])
    penalty = kerasreg.CoupledGroupLasso(0.1, [[(kernel, 1, np.array([[0]]))]])
    with pytest.raises(NotImplementedError, match='groups="dependency"'):
        penalty.get_config()
    with pytest.raises(NotImplementedError, match="cannot be serialized"):
        penalty.share(kernel).get_config()


def test_strip_makes_a_copy_without_the_coupled_penalty(tmp_path):
    model = _residual_mlp()
    kerasreg.regularize(model, kerasreg.GroupLasso(0.1), groups="dependency")
    plain = kerasreg.strip(model)
    assert all(v.regularizer is None for v in plain.weights)
    plain.save(tmp_path / "plain.keras")
    x, _ = _data(n=4)
    np.testing.assert_array_equal(to_numpy(plain(x)), to_numpy(model(x)))


def test_another_regularizer_on_one_weight_removes_the_whole_coupled_penalty():
    model = _residual_mlp()
    kerasreg.regularize(model, kerasreg.GroupLasso(0.1), groups="dependency")
    kerasreg.regularize(model, kerasreg.L1(0.01), layers=["head"])
    assert model.get_layer("a").kernel.regularizer is not None
    kerasreg.regularize(model, kerasreg.L1(0.01), layers=["a"])
    assert model.get_layer("a").kernel.regularizer == kerasreg.L1(0.01)
    for name in ("a", "b"):
        assert model.get_layer(name).bias.regularizer is None
    assert model.get_layer("b").kernel.regularizer is None
    np.testing.assert_allclose(
        _losses(model),
        0.01 * sum(np.abs(to_numpy(model.get_layer(n).kernel)).sum() for n in ("a", "head")),
        rtol=1e-5,
    )


def test_frozen_zeros_and_accumulation_steps_hold_for_joint_penalties():
    x, y = _data()
    model = _residual_mlp()
    kerasreg.regularize(model, kerasreg.GroupLasso(100.0), groups="dependency")
    inner = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
    model.compile(optimizer=kerasreg.ProximalOptimizer(inner), loss="mse")
    before = _mlp_channels(model)
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)  # accumulates only
    for parts, old in zip(_mlp_channels(model), before, strict=True):
        for part, old_part in zip(parts, old, strict=True):
            np.testing.assert_array_equal(part, old_part)
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)  # updates: all zero
    assert _whole_channels(_mlp_channels(model)) == list(range(8))
    model.optimizer.freeze_zeros()
    kerasreg.regularize(model, kerasreg.GroupLasso(1e-6), groups="dependency")
    model.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    assert _whole_channels(_mlp_channels(model)) == list(range(8))


def test_the_moving_average_keeps_the_zeroed_channels():
    x, y = _data()
    model = _residual_mlp()
    kerasreg.regularize(model, kerasreg.GroupLasso(100.0), groups="dependency")
    inner = keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.9)
    model.compile(optimizer=kerasreg.ProximalOptimizer(inner), loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # fit ends with the averages
    assert _whole_channels(_mlp_channels(model)) == list(range(8))
    assert np.count_nonzero(to_numpy(model.get_layer("head").kernel)) > 0


MIRRORED_SCRIPT = """
import os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import json, keras, numpy as np, kerasreg
sys.path.insert(0, os.environ["KERASREG_ROOT"])
from tests.test_coupled import _data, _residual_mlp
x, y = _data()
results = []
for replicas in (2, 1):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"][:replicas])
    with strategy.scope():
        model = _residual_mlp()
        kerasreg.regularize(model, kerasreg.GroupLasso(0.01), groups="dependency")
        model.compile(optimizer=kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(3), verbose=0)
    results.append([keras.ops.convert_to_numpy(v).tolist() for v in model.trainable_variables])
print(json.dumps(results))
"""


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="MirroredStrategy")
def test_mirrored_training_takes_the_steps_of_one_device():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, KERASREG_ROOT=str(Path(__file__).resolve().parent.parent))
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    two, one = json.loads(result.stdout.strip().splitlines()[-1])
    # A missed or doubled penalty gradient moves weights by about lr * strength = 1e-3.
    for a, b in zip(two, one, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=2e-6)
