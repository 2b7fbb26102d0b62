"""Training on several devices: the weights, zeros and figures of one device.

Each test runs a fresh interpreter, because TensorFlow's logical devices and
JAX's host device count must be set before the framework starts. The MLP
runs train on a few NumPy batches, all from the same NumPy weights.

The comparisons with single-device training are made in float64. The two
runs add the same numbers in a different order (the gradient of a global
batch is the sum of the replicas' gradients), which changes results in the
last bits: about 1e-16 in float64, 1e-7 in float32. A weight's zero or
non-zero outcome could differ only if its value before the prox fell within
that distance of its threshold, a chance of about 1e-11 for these 176
weights over 16 steps in float64 (about 1e-2 in float32). So the
zero patterns and the sparsity figures are required to be identical, and
the weights equal within `ATOL`. A missed or doubled penalty gradient,
or a prox step scaled by the number of replicas, moves weights by about
`learning_rate * strength` per step, 1e-3 here: seven orders of magnitude
above the tolerance.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Lasso
from sklearn.preprocessing import StandardScaler

from tests.conftest import BACKEND

ATOL = 1e-10


def _run(script, env=None, data=None):
    """Runs `script` in a fresh interpreter; returns the JSON on its last line."""
    env = dict(os.environ, **(env or {}))
    if data is not None:
        env["KERASREG_DATA"] = str(data)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _diabetes():
    x, y = load_diabetes(return_X_y=True)
    x = StandardScaler().fit_transform(x).astype("float32")
    return x, ((y - y.mean()) / y.std()).astype("float32")


def _float64(x, y):
    """scikit-learn's solvers reach their tolerance only in float64."""
    return x.astype("float64"), y.astype("float64")


def _lipschitz_step(x):
    return 1.0 / np.linalg.eigvalsh(2 * x.T.astype("float64") @ x / len(x)).max()


MIRRORED_SCRIPT = """
import os
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import json, keras, numpy as np, kerasreg
data = np.load(os.environ["KERASREG_DATA"])
x, y, lr, l1 = data["x"], data["y"], float(data["lr"]), float(data["l1"])
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = keras.Sequential([
        keras.Input((x.shape[1],)),
        keras.layers.Dense(1, kernel_regularizer=kerasreg.L1(l1), kernel_initializer="zeros"),
    ])
    model.compile(optimizer=kerasreg.ProximalOptimizer(keras.optimizers.SGD(lr)), loss="mse")
model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(1500), verbose=0)
w = keras.ops.convert_to_numpy(model.layers[0].kernel)[:, 0]
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "w": w.tolist()}))
"""


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute is TensorFlow's")
def test_mirrored_strategy_on_two_devices_matches_scikit_learn(tmp_path):
    x, y = _diabetes()
    x, y = x[:440], y[:440]  # an even global batch for two replicas
    alpha = 0.03
    sk = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(*_float64(x, y))
    np.savez(tmp_path / "data.npz", x=x, y=y, lr=_lipschitz_step(x), l1=2 * alpha)
    report = _run(MIRRORED_SCRIPT, data=tmp_path / "data.npz")
    assert report["replicas"] == 2
    w = np.array(report["w"])
    np.testing.assert_array_equal(w == 0, sk.coef_ == 0)
    np.testing.assert_allclose(w, sk.coef_, atol=1e-3)


# The model, data and training shared by the engines: an MLP on 10 inputs
# (3 matter) and one output, four epochs of four batches of 32 in a fixed
# order. SGD with momentum (the plain prox step, times the momentum factor)
# trains one GroupLasso group per input of the first kernel and an L1 output
# kernel; Adam (the preconditioned prox step) an L1 first kernel and a
# MagnitudePruning output kernel, whose mask is a prox state kept in the
# optimizer. (GroupLasso in Adam's diagonal metric reads the same optimizer
# state as L1 does, and its Newton steps would triple the compile time.)
TRAINING = """
import json, keras, numpy as np, kerasreg
keras.config.set_floatx("float64")
rng = np.random.default_rng(0)
x = rng.normal(size=(128, 10))
y = np.tanh(x[:, :3] @ np.array([[1.5], [-2.0], [1.0]])) + 0.1 * rng.normal(size=(128, 1))
initial = [rng.normal(scale=0.3, size=(10, 16)), np.zeros(16), rng.normal(scale=0.3, size=(16, 1)),
           np.zeros(1)]
SETUPS = {  # inner optimizer, regularizers of the two kernels
    "SGD": (
        lambda: keras.optimizers.SGD(0.1, momentum=0.5),
        kerasreg.GroupLasso(0.1, group_axis=0),
        kerasreg.L1(0.05),
    ),
    "Adam": (
        lambda: keras.optimizers.Adam(0.02),
        kerasreg.L1(0.02),
        kerasreg.MagnitudePruning(0.5, begin_step=0, end_step=8, frequency=4),
    ),
}

def build(name, cls=keras.Sequential):
    optimizer, hidden, out = SETUPS[name]
    model = cls([
        keras.Input((10,)),
        keras.layers.Dense(16, "tanh", kernel_regularizer=hidden, name="hidden"),
        keras.layers.Dense(1, kernel_regularizer=out, name="out"),
    ])
    model.set_weights(initial)
    model.compile(kerasreg.ProximalOptimizer(optimizer()), "mse")
    return model

def fit(model, data, **kwargs):
    history = model.fit(*data, epochs=4, verbose=0, callbacks=[kerasreg.SparsityMonitor()],
                        **kwargs)
    weights = [np.asarray(keras.ops.convert_to_numpy(w)).tolist() for w in model.weights]
    return {"weights": weights, "history": history.history}
"""

TF_SCRIPT = (
    """
import os
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
"""
    + TRAINING
    + """
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
report = {"replicas": strategy.num_replicas_in_sync}
# One iterator for all epochs: a distributed iterator costs a second to make.
data = (tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat(),)
for name in SETUPS:
    report[name] = {"single": fit(build(name), data, steps_per_epoch=4, shuffle=False)}
    with strategy.scope():
        model = build(name)
    report[name]["mirrored"] = fit(model, data, steps_per_epoch=4, shuffle=False)
report["kernel_copies"] = len(model.layers[0].kernel.value.values)
print(json.dumps(report))
"""
)

JAX_SCRIPT = (
    """
import os
os.environ["KERAS_BACKEND"] = "jax"
import jax
jax.config.update("jax_enable_x64", True)
"""
    + TRAINING
    + """
batch_shardings = []

class Recorded(keras.Sequential):
    # The sharding of the input batch inside the compiled training step.
    def train_step(self, state, data):
        jax.debug.inspect_array_sharding(data[0], callback=batch_shardings.append)
        return super().train_step(state, data)

devices = keras.distribution.list_devices()
data_parallel = keras.distribution.DataParallel(devices=devices)
# The first kernel's columns (units) split between the devices: under SGD,
# each input's GroupLasso group, a row, spans both. (Adam's element-wise L1
# prox would add a compile and nothing new.)
layout_map = keras.distribution.LayoutMap(
    keras.distribution.DeviceMesh((1, 2), ("batch", "model"), devices)
)
layout_map[".*hidden/kernel"] = (None, "model")
layout_map[".*hidden/bias"] = ("model",)
model_parallel = keras.distribution.ModelParallel(layout_map=layout_map)
report = {"devices": len(jax.devices())}
for name in SETUPS:
    report[name] = {"single": fit(build(name), (x, y), batch_size=32, shuffle=False)}
    with data_parallel.scope():
        model = build(name, Recorded)
        report[name]["data_parallel"] = fit(model, (x, y), batch_size=32, shuffle=False)
    kernel = model.layers[0].kernel.value.sharding
    report[name]["data_parallel_kernel"] = [len(kernel.device_set), kernel.is_fully_replicated]
with model_parallel.scope():
    model = build("SGD")
    report["SGD"]["model_parallel"] = fit(model, (x, y), batch_size=32, shuffle=False)
kernel = model.layers[0].kernel.value.sharding
report["SGD"]["model_parallel_kernel"] = [len(kernel.device_set), list(kernel.spec)]
report["batch_shardings"] = [[len(s.device_set), list(s.spec)] for s in batch_shardings]
print(json.dumps(report))
"""
)


def _assert_same_training(single, distributed):
    """The distributed run has the single-device weights, zeros and figures."""
    for w1, w2 in zip(single["weights"], distributed["weights"], strict=True):
        w1, w2 = np.array(w1), np.array(w2)
        np.testing.assert_array_equal(w2 == 0, w1 == 0)
        np.testing.assert_allclose(w2, w1, rtol=0, atol=ATOL)
    h1, h2 = single["history"], distributed["history"]
    keys = sorted(k for k in h1 if "sparsity" in k)
    assert {"sparsity", "sparsity/hidden/kernel", "sparsity/out/kernel"} <= set(keys)
    assert sorted(k for k in h2 if "sparsity" in k) == keys
    for key in keys:
        assert h2[key] == h1[key], key
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-12)
    # Training made zeros, so the comparison above has something to compare.
    assert 0 < h1["sparsity"][-1] < 1


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute is TensorFlow's")
def test_mirrored_strategy_mlp_equals_single_device_training():
    report = _run(TF_SCRIPT)
    assert report["replicas"] == 2
    assert report["kernel_copies"] == 2  # a MirroredVariable, one copy per device
    for name in ("SGD", "Adam"):
        _assert_same_training(report[name]["single"], report[name]["mirrored"])


@pytest.mark.skipif(
    BACKEND != "jax",
    reason="keras.distribution trains on JAX (a prototype on TensorFlow, none on PyTorch)",
)
def test_data_and_model_parallel_mlp_equals_single_device_training():
    # Two host devices, with the flags CI may set (threading, ...). First:
    # XLA ignores what follows a word that is not a flag, as CI's
    # `intra_op_parallelism_threads=1` is.
    flags = f"--xla_force_host_platform_device_count=2 {os.environ.get('XLA_FLAGS', '')}"
    report = _run(JAX_SCRIPT, env={"XLA_FLAGS": flags.strip()})
    assert report["devices"] == 2
    # DataParallel: each batch split in two inside the compiled step ...
    assert report["batch_shardings"]
    assert all(s == [2, ["batch"]] for s in report["batch_shardings"])
    for name in ("SGD", "Adam"):
        # ... and the variables whole on both devices.
        assert report[name]["data_parallel_kernel"] == [2, True]
        _assert_same_training(report[name]["single"], report[name]["data_parallel"])
    # ModelParallel: the first kernel split by columns.
    assert report["SGD"]["model_parallel_kernel"] == [2, [None, "model"]]
    _assert_same_training(report["SGD"]["single"], report["SGD"]["model_parallel"])
