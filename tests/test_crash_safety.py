"""A run killed with SIGKILL mid-epoch resumes to the uninterrupted result.

Each run is a real subprocess. The interrupted one is stopped by the test
process with SIGKILL while it is in the middle of an epoch, then started
again: through Keras' `BackupAndRestore` (same command, same backup
directory), and through the last `.keras` file `ModelCheckpoint` wrote
(`load_model` + `fit(initial_epoch=...)`). Both must end with the weights,
zeros, optimizer state (controller and freeze state included) and History
of a run that was never interrupted.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import BACKEND

pytestmark = pytest.mark.slow

EPOCHS = 7
KILL_EPOCH, KILL_BATCH = 3, 4
SETTINGS = [str(EPOCHS), str(KILL_EPOCH), str(KILL_BATCH)]

TRAIN_SCRIPT = """
import json, os, sys, time
from pathlib import Path

import keras
import numpy as np

import kerasreg

mode, workdir = sys.argv[1], Path(sys.argv[2])
EPOCHS, KILL_EPOCH, KILL_BATCH = (int(v) for v in sys.argv[3:6])

rng = np.random.default_rng(0)
x = rng.normal(size=(256, 12)).astype("float32")
y = (x[:, :3] @ np.array([[1.5], [-2.0], [0.5]], "float32") + 0.1).astype("float32")


def build():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(24, "relu", kernel_regularizer=kerasreg.GroupLasso(0.02, group_axis=1),
                           name="hidden_1"),
        keras.layers.Dense(8, "relu", kernel_regularizer=kerasreg.L1(0.005), name="hidden_2"),
        keras.layers.Dense(1, kernel_regularizer=kerasreg.ElasticNet(0.01, l1_ratio=0.5),
                           name="output"),
    ], name="mlp")
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.01)), "mse")
    return model


class KillMe(keras.callbacks.Callback):
    # Reports that epoch KILL_EPOCH is half done, then waits for SIGKILL.
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == KILL_EPOCH and batch == KILL_BATCH:
            (workdir / "half-way").write_text(str(os.getpid()))
            time.sleep(600)


checkpoints = workdir / "checkpoints"


def train(model, initial_epoch, extra_callbacks=()):
    callbacks = [
        kerasreg.SparsityMonitor(),
        kerasreg.TargetSparsity(0.5, end_epoch=5, horizon=1.0),
        kerasreg.FreezeSparsity(start_epoch=6, sparsity=0.5),
        *extra_callbacks,
    ]
    return model.fit(
        x, y, batch_size=32, epochs=EPOCHS, initial_epoch=initial_epoch, shuffle=False,
        verbose=0, callbacks=callbacks,
    )


def save(name, model, history):
    np.savez(
        workdir / f"{name}.npz",
        **{f"weight/{n}": keras.ops.convert_to_numpy(v) for n, v in enumerate(model.weights)},
        **{f"optimizer/{n}": keras.ops.convert_to_numpy(v)
           for n, v in enumerate(model.optimizer.variables)},
    )
    record = {"backend": keras.backend.backend(), "epoch": history.epoch,
              "history": history.history}
    (workdir / f"{name}.json").write_text(json.dumps(record))


def train_with_backups(kill=False):
    model = build()
    callbacks = [
        keras.callbacks.BackupAndRestore(str(workdir / "backup")),
        keras.callbacks.ModelCheckpoint(str(checkpoints / "epoch-{epoch:02d}.keras")),
        keras.callbacks.CSVLogger(str(workdir / "log.csv"), append=True),
    ]
    return model, train(model, 0, callbacks + ([KillMe()] if kill else []))


if mode == "kill":
    train_with_backups(kill=True)
    raise AssertionError("the run was to be killed half-way")
# A fresh process after the kill: first the uninterrupted reference, then
# each way of resuming the killed run.
model = build()
save("straight", model, train(model, 0))
last = max(checkpoints.glob("epoch-*.keras"))
model = keras.models.load_model(last)
save("checkpoint", model, train(model, int(last.stem.split("-")[1])))
save("backup", *train_with_backups())
"""


def _resume(workdir):
    result = subprocess.run(
        [sys.executable, "-c", TRAIN_SCRIPT, "resume", str(workdir), *SETTINGS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _kill_half_way(workdir):
    process = subprocess.Popen(
        [sys.executable, "-c", TRAIN_SCRIPT, "kill", str(workdir), *SETTINGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    marker = workdir / "half-way"
    deadline = time.monotonic() + 300
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode()[-3000:])
        assert time.monotonic() < deadline, "the run never reached the middle of its epoch"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert int(marker.read_text()) == process.pid


def _results(workdir, mode):
    arrays = dict(np.load(workdir / f"{mode}.npz"))
    record = json.loads((workdir / f"{mode}.json").read_text())
    return arrays, record


def _assert_same_state(expected, actual):
    assert sorted(expected) == sorted(actual)
    for key, value in expected.items():
        # Same process setup, same computations in the same order: the
        # CPU backends give bitwise equal results.
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


def _assert_continues(record, straight):
    # History starts at the epoch where the run stopped, and its figures are
    # those of the uninterrupted run for the same epochs.
    assert record["backend"] == BACKEND
    assert record["epoch"] == list(range(KILL_EPOCH, EPOCHS))
    assert sorted(record["history"]) == sorted(straight["history"])
    for key, values in straight["history"].items():
        np.testing.assert_array_equal(record["history"][key], values[KILL_EPOCH:], err_msg=key)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    _kill_half_way(tmp_path)
    # Killed in epoch KILL_EPOCH: the backup and the checkpoints are those of
    # the end of the epoch before; the half-done epoch left nothing.
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == [f"epoch-{e:02d}.keras" for e in range(1, KILL_EPOCH + 1)]
    metadata = json.loads((tmp_path / "backup" / "training_metadata.json").read_text())
    assert metadata == {"epoch": KILL_EPOCH, "batch": 0}

    _resume(tmp_path)
    expected, straight = _results(tmp_path, "straight")
    assert straight["backend"] == BACKEND
    assert straight["epoch"] == list(range(EPOCHS))
    # The run ramped its strength, froze its pattern and has zeros to keep.
    assert len(set(straight["history"]["strength_scale"])) == EPOCHS - 1
    assert straight["history"]["zeros_frozen"] == [0.0] * (EPOCHS - 1) + [1.0]
    assert straight["history"]["sparsity"][-1] >= 0.5

    # The same command again: BackupAndRestore resumes.
    resumed, record = _results(tmp_path, "backup")
    _assert_same_state(expected, resumed)
    _assert_continues(record, straight)
    # The CSV log (append=True) holds the whole run, once per epoch.
    rows = np.genfromtxt(tmp_path / "log.csv", delimiter=",", names=True)
    np.testing.assert_array_equal(rows["epoch"], np.arange(EPOCHS))
    for key in ("loss", "sparsity", "strength_scale", "zeros_frozen"):
        np.testing.assert_allclose(rows[key], straight["history"][key], rtol=1e-6, err_msg=key)

    # The last .keras file ModelCheckpoint wrote, loaded and trained on.
    reloaded, record = _results(tmp_path, "checkpoint")
    _assert_same_state(expected, reloaded)
    _assert_continues(record, straight)
