"""Training in two processes: the weights, zeros and figures of one process.

Two worker processes on this machine talk over loopback: TensorFlow's
`MultiWorkerMirroredStrategy` (one replica per worker, `TF_CONFIG` naming
both), and JAX's multi-controller runtime (`keras.distribution.initialize`,
one CPU device per process, cross-process collectives through gloo) under
`keras.distribution`. Each worker trains the MLP of `tests/test_distributed.py`
with `SparsityMonitor`, `TargetSparsity` (which sets the optimizer's strength
scale between epochs) and `FreezeSparsity` (which completes the pattern by
magnitude, then freezes it), and the first worker then trains the same model
alone in the same process, on the same global batches.

The comparisons follow `tests/test_distributed.py`, in float64: the zero
patterns, the sparsity figures and the controller's figures identical, the
weights equal within `ATOL`, and both workers holding the same weights.

The workers run as subprocesses under a hard deadline: if one fails or the
deadline passes, all are killed (a worker left alone waits in a collective
forever), and the failure shows the workers' stderr.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import BACKEND

ATOL = 1e-10
DEADLINE = 240  # seconds for all the workers together

pytestmark = pytest.mark.multiprocess


def _free_ports(n):
    """`n` loopback ports free now (the OS picks them; they are released at once)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run_workers(script, envs, tmp_path):
    """Runs `script` once per environment in `envs`; returns each worker's last stdout line as JSON.

    Kills every worker as soon as one fails or `DEADLINE` passes.
    """
    base = dict(os.environ, OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1")
    base["TF_NUM_INTEROP_THREADS"] = "1"
    base["TF_CPP_MIN_LOG_LEVEL"] = "2"
    workers = []
    for i, env in enumerate(envs):
        out = open(tmp_path / f"worker{i}.out", "w+")  # files: a full pipe would block a worker
        err = open(tmp_path / f"worker{i}.err", "w+")
        process = subprocess.Popen(
            [sys.executable, "-c", script], env=dict(base, **env), stdout=out, stderr=err
        )
        workers.append((process, out, err))

    def stderr():
        text = []
        for i, (_, _, err) in enumerate(workers):
            err.seek(0)
            text.append(f"--- worker {i} stderr (last 3000 characters) ---\n{err.read()[-3000:]}")
        return "\n".join(text)

    deadline = time.monotonic() + DEADLINE
    try:
        while any(p.poll() is None for p, _, _ in workers):
            if any(p.poll() not in (None, 0) for p, _, _ in workers):
                codes = [p.poll() for p, _, _ in workers]
                pytest.fail(f"a worker failed (exit codes {codes})\n{stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the workers ran past {DEADLINE} s\n{stderr()}")
            time.sleep(0.2)
        codes = [p.returncode for p, _, _ in workers]
        assert codes == [0] * len(workers), f"exit codes {codes}\n{stderr()}"
        reports = []
        for _, out, _ in workers:
            out.seek(0)
            reports.append(json.loads(out.read().strip().splitlines()[-1]))
        return reports
    finally:
        for process, out, err in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            out.close()
            err.close()


# The MLP of tests/test_distributed.py (SGD with momentum, GroupLasso on the
# rows of the first kernel, L1 on the output kernel), trained for six
# epochs of four batches of 32 in a fixed order. TargetSparsity ramps the
# sparsity to 0.5 by the end of epoch 2; FreezeSparsity completes the
# pattern to 0.75 at the start of epoch 4 and freezes it.
TRAINING = """
import json, keras, numpy as np, kerasreg
keras.config.set_floatx("float64")
rng = np.random.default_rng(0)
x = rng.normal(size=(128, 10))
y = np.tanh(x[:, :3] @ np.array([[1.5], [-2.0], [1.0]])) + 0.1 * rng.normal(size=(128, 1))
initial = [rng.normal(scale=0.3, size=(10, 16)), np.zeros(16), rng.normal(scale=0.3, size=(16, 1)),
           np.zeros(1)]
BATCH, STEPS, EPOCHS = 32, 4, 6

def build(cls=keras.Sequential):
    model = cls([
        keras.Input((10,)),
        keras.layers.Dense(16, "tanh", kernel_regularizer=kerasreg.GroupLasso(0.05, group_axis=0),
                           name="hidden"),
        keras.layers.Dense(1, kernel_regularizer=kerasreg.L1(0.02), name="out"),
    ])
    model.set_weights(initial)
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1, momentum=0.5)), "mse")
    return model

def to_numpy(weight):
    value = weight.value
    if keras.backend.backend() == "jax" and not value.is_fully_addressable:
        # Split across the processes: each gathers the whole.
        from jax.experimental import multihost_utils
        value = multihost_utils.process_allgather(value, tiled=True)
    return np.asarray(keras.ops.convert_to_numpy(value))

def fit(model, *data, **kwargs):
    callbacks = [
        kerasreg.SparsityMonitor(),
        kerasreg.TargetSparsity(0.5, end_epoch=3),
        kerasreg.FreezeSparsity(start_epoch=4, sparsity=0.75),
    ]
    history = model.fit(*data, epochs=EPOCHS, verbose=0, shuffle=False, callbacks=callbacks,
                        **kwargs)
    weights = [to_numpy(w).tolist() for w in model.weights]
    return {"weights": weights, "history": history.history}
"""

TF_SCRIPT = (
    """
import os
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
# First thing: the strategy starts the worker's server (TF_CONFIG).
strategy = tf.distribute.MultiWorkerMirroredStrategy()
"""
    + TRAINING
    + """
class Sequential(keras.Sequential):
    # Two places where Keras 3.15's fit fails under MultiWorkerMirroredStrategy
    # (keras-team/keras#20585), neither about training. It builds the model
    # on the first batch averaged over the replicas, a reduction the strategy
    # cannot make on a tuple of tensors; the build needs only the shapes,
    # which this worker's replica has.
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(
                lambda v: strategy.experimental_local_results(v)[0], next(it)
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    # And it averages each step's logs over the workers along their axis 0,
    # which a scalar lacks: as vectors of one entry, they are averaged over
    # the workers as MirroredStrategy's fit averages them over devices.
    def train_step(self, data):
        return {key: tf.reshape(value, [1]) for key, value in super().train_step(data).items()}

def dataset():
    # Each worker reads the whole stream; the strategy splits every global
    # batch of 32 between the two replicas.
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).repeat()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)

with strategy.scope():
    model = build(Sequential)
kernel = model.layers[0].kernel.value
report = {"replicas": strategy.num_replicas_in_sync, "kernel": type(kernel).__name__}
report["distributed"] = fit(model, dataset(), steps_per_epoch=STEPS)
if strategy.cluster_resolver.task_id == 0:
    report["single"] = fit(build(), dataset(), steps_per_epoch=STEPS)
print(json.dumps(report))
"""
)


def _assert_same_training(single, distributed):
    """The distributed run has the single-process weights, zeros and figures."""
    for w1, w2 in zip(single["weights"], distributed["weights"], strict=True):
        w1, w2 = np.array(w1), np.array(w2)
        np.testing.assert_array_equal(w2 == 0, w1 == 0)
        np.testing.assert_allclose(w2, w1, rtol=0, atol=ATOL)
    h1, h2 = single["history"], distributed["history"]
    keys = sorted(k for k in h1 if k != "loss")
    assert {
        "sparsity",
        "sparsity/hidden/kernel",
        "sparsity/out/kernel",
        "target_sparsity",
        "strength_scale",
        "zeros_frozen",
    } <= set(keys)
    assert sorted(k for k in h2 if k != "loss") == keys
    for key in keys:
        assert h2[key] == h1[key], key
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-12)
    # The controller raised the strength, training made zeros, and the
    # freeze completed the pattern by magnitude (132 of the 176 entries).
    assert max(h1["strength_scale"]) > 1
    assert 0 < h1["sparsity"][3] < 0.75
    assert h1["zeros_frozen"] == [0.0] * 4 + [1.0] * 2
    assert h1["sparsity"][4:] == [0.75, 0.75]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute is TensorFlow's")
def test_multi_worker_mirrored_strategy_equals_single_process_training(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    envs = [
        {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        for i in range(2)
    ]
    first, second = _run_workers(TF_SCRIPT, envs, tmp_path)
    assert first["replicas"] == second["replicas"] == 2
    assert first["kernel"] == "MirroredVariable"
    _assert_same_training(first["single"], first["distributed"])
    np.testing.assert_array_equal(
        np.concatenate([np.ravel(w) for w in second["distributed"]["weights"]]),
        np.concatenate([np.ravel(w) for w in first["distributed"]["weights"]]),
    )


JAX_SCRIPT = (
    """
import os
os.environ["KERAS_BACKEND"] = "jax"
import jax
jax.config.update("jax_enable_x64", True)
# Cross-process collectives on CPU through gloo (the default in recent JAX).
jax.config.update("jax_cpu_collectives_implementation", "gloo")
import keras
keras.distribution.initialize(
    os.environ["KERASREG_COORDINATOR"], num_processes=2, process_id=int(os.environ["KERASREG_ID"])
)
from jax.experimental import multihost_utils
"""
    + TRAINING
    + """
process = jax.process_index()
devices = keras.distribution.list_devices()
report = {"devices": len(devices), "local_devices": jax.local_device_count()}

def share(a):
    # This process's half of every global batch of 32: rows 16 * process
    # to 16 * process + 15 of each.
    return a.reshape(STEPS, 2, BATCH // 2, -1)[:, process].reshape(-1, a.shape[-1])

# DataParallel: each process feeds its share, Keras assembles the global
# batch across the processes (`jax.make_array_from_process_local_data`).
data_parallel = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
with data_parallel.scope():
    model = build()
    report["data_parallel"] = fit(model, share(x), share(y), batch_size=BATCH // 2)
kernel = model.layers[0].kernel.value
report["data_parallel_kernel"] = [len(kernel.sharding.device_set), kernel.is_fully_addressable]

# ModelParallel: the first kernel's columns (units) split between the
# processes, so that no process holds a whole kernel, and each input's
# GroupLasso group (a row) spans both. The batch is whole on both.
layout_map = keras.distribution.LayoutMap(
    keras.distribution.DeviceMesh((1, 2), ("batch", "model"), devices)
)
layout_map[".*hidden/kernel"] = (None, "model")
layout_map[".*hidden/bias"] = ("model",)
model_parallel = keras.distribution.ModelParallel(layout_map=layout_map, auto_shard_dataset=False)
with model_parallel.scope():
    model = build()
    report["model_parallel"] = fit(model, x, y, batch_size=BATCH)
kernel = model.layers[0].kernel.value
report["model_parallel_kernel"] = [
    len(kernel.sharding.device_set), kernel.is_fully_addressable, list(kernel.sharding.spec)
]
report["sparsity_report"] = kerasreg.sparsity_report(model).rows()
if process == 0:
    report["single"] = fit(build(), x, y, batch_size=BATCH)
print(json.dumps(report))
"""
)


@pytest.mark.skipif(
    BACKEND != "jax", reason="keras.distribution trains on JAX (a prototype on TensorFlow)"
)
def test_jax_data_and_model_parallel_across_processes_equal_single_process_training(tmp_path):
    (port,) = _free_ports(1)
    # One CPU device per process: the flags CI may set, less a forced count.
    flags = os.environ.get("XLA_FLAGS", "").split()
    flags = " ".join(f for f in flags if "xla_force_host_platform_device_count" not in f)
    envs = [
        {"KERASREG_COORDINATOR": f"127.0.0.1:{port}", "KERASREG_ID": str(i), "XLA_FLAGS": flags}
        for i in range(2)
    ]
    first, second = _run_workers(JAX_SCRIPT, envs, tmp_path)
    assert first["devices"] == 2 and first["local_devices"] == 1
    # DataParallel keeps every variable whole in both processes ...
    assert first["data_parallel_kernel"] == [2, False]
    # ... ModelParallel splits the first kernel's columns between them.
    assert first["model_parallel_kernel"] == [2, False, [None, "model"]]
    for name in ("data_parallel", "model_parallel"):
        _assert_same_training(first["single"], first[name])
        for w1, w2 in zip(first[name]["weights"], second[name]["weights"], strict=True):
            np.testing.assert_array_equal(np.array(w2), np.array(w1))
    # `sparsity_report` reads the split kernel whole, in both processes.
    assert first["sparsity_report"] == second["sparsity_report"]
    kernel = np.array(first["model_parallel"]["weights"][0])
    report = first["sparsity_report"][0]
    assert report["key"] == "hidden/kernel" and report["shape"] == [10, 16]
    assert report["zeros"] == np.count_nonzero(kernel == 0)
    assert report["zero_inputs"] == np.count_nonzero(np.all(kernel == 0, axis=1))
