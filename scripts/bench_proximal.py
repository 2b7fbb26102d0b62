"""Benchmark: what ProximalOptimizer costs and what it buys.

Prints, from one run on one machine:

1. Training-step time of `ProximalOptimizer(Adam)` against plain `Adam` on
   the same LeNet-300-100, data and batches, as a ratio (median over
   repeated epochs, after warm-up). On TensorFlow it is measured with and
   without XLA (`jit_compile`); on JAX, `fit` always compiles with XLA.
2. Sparsity (exact zeros in the kernels, `np.count_nonzero(w == 0)`) and test
   accuracy of LeNet-300-100 on scikit-learn's digits: dense baseline, Keras'
   own `L1` with Adam, and kerasreg's `L1` with `ProximalOptimizer(Adam)`.

With `--sizes`, part 1 is also measured on larger models (1b), one table
row per model and compilation mode: 64-w-w-10 ReLU networks on the digits
pixels (`--sizes 200 480 1000 2400 5000`, the default widths, give about 55k, 267k,
1.1M, 5.9M and 25M parameters) and, with `--resnet`, Keras'
`ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)` on the digits
upscaled 4x to 32x32 and copied to three channels. Every kernel has
`kerasreg.L1(1e-4)`; the MLPs take it as `kernel_regularizer`, ResNet50 from
`kerasreg.regularize`. Each timed epoch is `--steps` batches (the training
images repeated to fill them), and the number of timed epochs is cut where
the warm-up shows that `--timing-epochs` of them would take longer than
`--budget` seconds (never fewer than 3, unless `--timing-epochs` is
smaller). Each row also gives two memory
figures:

- optimizer state: the bytes of `optimizer.variables` (shape times item
  size, not read back), for Adam, and what `ProximalOptimizer` keeps beyond
  its inner Adam (`variables` minus `inner_optimizer.variables`);
- peak RSS: in a fresh Python process per optimizer, the model is built
  and compiled, the kernel's peak RSS (`VmHWM`) is reset to the current RSS
  (`/proc/self/clear_refs`, Linux), and one epoch of `--steps` batches runs;
  the process's figure is the peak minus the RSS at the reset, and the
  table gives ProximalOptimizer's minus Adam's. It counts the wrapper's
  state (built in the first step) and whatever its step's tracing,
  compiling and transient buffers add to the peak, in the process's own
  memory (CPU here); it carries the noise of two separate processes (a few
  MB), so read it for large models, where one float32 copy of the weights
  is tens of MB. `--no-memory` skips these processes.

Usage:
    KERAS_BACKEND=tensorflow python scripts/bench_proximal.py
    KERAS_BACKEND=jax python scripts/bench_proximal.py --epochs 60
    KERAS_BACKEND=torch python scripts/bench_proximal.py --timing-only --sizes --resnet
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import keras
import numpy as np

import kerasreg

from _digits import lenet_300_100
from _digits import load_data


def compile_model(model, optimizer, jit_compile, steps_per_execution=1):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times = getattr(self, "times", []) + [time.perf_counter() - self._start]


def step_times(optimizers, make_model, data, jit_compile, epochs, batch_size, budget=None):
    """Seconds per training step of each optimizer factory, and the models.

    The models train in turn, one epoch each, `epochs` times, so that a
    change in machine load affects all of them alike; each epoch is timed
    from its first to its last batch. With `budget` (seconds), fewer epochs
    where the second warm-up epoch shows that `epochs` of them would take
    longer, but at least 3.

    Returns:
        The median seconds per step of each optimizer, the median over the
        rounds of each optimizer's epoch time over the first's (its ratio to
        the baseline, from epochs run back to back), the number of rounds,
        and the models.
    """
    x, y = data
    models = []
    warm_up = []
    for make_optimizer in optimizers:
        keras.utils.set_random_seed(0)
        model = compile_model(make_model(), make_optimizer(), jit_compile)
        timer = EpochTimer()
        model.fit(x, y, batch_size=batch_size, epochs=2, verbose=0, callbacks=[timer])
        warm_up.append(timer.times[-1])
        models.append(model)
    if budget is not None:
        epochs = min(epochs, max(3, int(budget / sum(warm_up))))
    timers = [EpochTimer() for _ in models]
    for _ in range(epochs):
        for model, timer in zip(models, timers, strict=True):
            model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[timer])
    steps = int(np.ceil(len(x) / batch_size))
    per_step = [statistics.median(timer.times) / steps for timer in timers]
    ratios = [
        statistics.median(t / base for t, base in zip(timer.times, timers[0].times, strict=True))
        for timer in timers
    ]
    return per_step, ratios, epochs, models


def mlp(width):
    """The 64-`width`-`width`-10 ReLU network, `kerasreg.L1(1e-4)` on its kernels."""
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(width, "relu", kernel_regularizer=kerasreg.L1(1e-4)),
            keras.layers.Dense(width, "relu", kernel_regularizer=kerasreg.L1(1e-4)),
            keras.layers.Dense(10, kernel_regularizer=kerasreg.L1(1e-4)),
        ],
        name=f"mlp_{width}",
    )


def resnet50():
    """Keras' ResNet50 for 32x32x3 inputs and 10 classes, `kerasreg.L1(1e-4)` on its kernels."""
    model = keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    kerasreg.regularize(model, kerasreg.L1(1e-4))
    return model


def sized_model(spec):
    """`(name, model factory, input transform)` of `"lenet"`, `"mlp:<width>"` or `"resnet50"`."""
    if spec == "lenet":
        return "lenet-300-100", lambda: lenet_300_100(kerasreg.L1(1e-4)), lambda x: x
    if spec == "resnet50":

        def to_images(x):
            images = np.kron(x.reshape(-1, 8, 8), np.ones((4, 4), "float32"))
            return np.repeat(images[..., None], 3, axis=-1)

        return "resnet50-32x32x3", resnet50, to_images
    width = int(spec.removeprefix("mlp:"))
    return f"mlp-64-{width}-{width}-10", lambda: mlp(width), lambda x: x


def sized_data(spec, steps, batch_size):
    """The digits training set repeated (or cut) to `steps` batches, transformed for `spec`;
    for LeNet, the training set as it is (1,347 images)."""
    x_train, _, y_train, _ = load_data(0)
    if spec == "lenet":
        return x_train, y_train
    _, _, transform = sized_model(spec)
    rows = steps * batch_size
    return transform(np.resize(x_train, (rows, x_train.shape[1]))), np.resize(y_train, rows)


def make_optimizer(name):
    adam = keras.optimizers.Adam(1e-3)
    return kerasreg.ProximalOptimizer(adam) if name == "proximal" else adam


def state_bytes(variables):
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def _memory_kb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def peak_rss_child(spec, optimizer, jit_compile, steps, batch_size):
    """Builds and compiles the model, then prints how far one epoch raises RSS (Linux)."""
    keras.utils.set_random_seed(0)
    _, make_model, _ = sized_model(spec)
    model = compile_model(make_model(), make_optimizer(optimizer), jit_compile)
    x, y = sized_data(spec, steps, batch_size)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # the peak (VmHWM) restarts from the current RSS
    before = _memory_kb("VmRSS")
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    print(f"peak_rss_increase_kb {_memory_kb('VmHWM') - before}")


def peak_rss_mb(spec, optimizer, jit_compile, steps, batch_size):
    """Peak RSS increase, in MB, of one epoch in a fresh process (`peak_rss_child`)."""
    command = [sys.executable, os.path.abspath(__file__), "--peak-rss-child", spec, optimizer]
    command += [str(jit_compile), "--steps", str(steps), "--batch-size", str(batch_size)]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-2000:] + result.stderr[-3000:])
    return int(result.stdout.split("peak_rss_increase_kb ")[1].split()[0]) / 1024


def time_table(specs, modes, args):
    """One row per model and compilation mode: step times, their ratio, memory."""
    print(
        f"   {'model':<24} {'mode':<8} {'params':>11} {'Adam ms':>9} {'Prox ms':>9} "
        f"{'ratio':>6} {'rounds':>6} {'Adam state MB':>13} {'+state MB':>9} {'+peak RSS MB':>12}"
    )
    for spec in specs:
        name, make_model, _ = sized_model(spec)
        data = sized_data(spec, args.steps, args.batch_size)
        lenet = spec == "lenet"
        for mode, jit in modes.items():
            (plain, proximal), (_, ratio), rounds, models = step_times(
                [lambda: make_optimizer("adam"), lambda: make_optimizer("proximal")],
                make_model,
                data,
                jit,
                args.timing_epochs if lenet else args.size_epochs,
                args.batch_size,
                None if lenet else args.budget,
            )
            params = models[0].count_params()
            adam_state = state_bytes(models[0].optimizer.variables)
            wrapper = models[1].optimizer
            extra_state = state_bytes(wrapper.variables) - state_bytes(
                wrapper.inner_optimizer.variables
            )
            del models
            if args.no_memory:
                extra_peak = "-"
            else:
                peaks = [
                    peak_rss_mb(spec, optimizer, jit, args.steps, args.batch_size)
                    for optimizer in ("adam", "proximal")
                ]
                extra_peak = f"{peaks[1] - peaks[0]:.1f}"
            print(
                f"   {name:<24} {mode:<8} {params:>11,} {plain * 1e3:>9.3f} "
                f"{proximal * 1e3:>9.3f} {ratio:>6.3f} {rounds:>6} "
                f"{adam_state / 2**20:>13.2f} {extra_state / 2**20:>9.2f} {extra_peak:>12}",
                flush=True,
            )


def sparsity_and_accuracy(model, data):
    _, x_test, _, y_test = data
    kernels = [keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers]
    zeros = sum(np.count_nonzero(k == 0) for k in kernels)
    total = sum(k.size for k in kernels)
    accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    per_layer = [np.count_nonzero(k == 0) / k.size for k in kernels]
    return zeros / total, accuracy, per_layer


def train(regularizer, optimizer, data, epochs, seed=0):
    x_train, _, y_train, _ = data
    keras.utils.set_random_seed(seed)
    # Several steps per call where the backend allows: same maths, less
    # Python overhead per step.
    steps = 1 if keras.backend.backend() == "torch" else 11
    model = compile_model(lenet_300_100(regularizer), optimizer, "auto", steps_per_execution=steps)
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="training epochs (default 200)")
    parser.add_argument("--l1", type=float, default=1.5e-3, help="L1 strength (default 1.5e-3)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds (default 3)")
    parser.add_argument("--timing-epochs", type=int, default=30, help="timed epochs (default 30)")
    parser.add_argument("--timing-only", action="store_true", help="only the step-time part")
    parser.add_argument("--batch-size", type=int, default=64, help="timing batch (default 64)")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        help="widths of the 64-w-w-10 MLPs timed after LeNet (default: 2400 5000, "
        "5.9M and 25M weights; none given: LeNet only)",
    )
    parser.add_argument("--resnet", action="store_true", help="also time ResNet50 on 32x32 inputs")
    parser.add_argument(
        "--steps", type=int, default=5, help="batches per timed epoch of the MLPs (default 5)"
    )
    parser.add_argument(
        "--size-epochs", type=int, default=30, help="timed rounds of the MLPs (default 30)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=60,
        help="seconds of timed epochs per MLP and mode, at least 3 rounds (default 60)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS processes")
    parser.add_argument("--peak-rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.peak_rss_child:
        spec, optimizer, jit = args.peak_rss_child
        peak_rss_child(spec, optimizer, jit == "True", args.steps, args.batch_size)
        return

    backend = keras.backend.backend()
    print(f"kerasreg {kerasreg.__version__}, Keras {keras.__version__}, backend {backend}")
    if backend == "tensorflow":
        modes = {"xla": True, "graph": False}
    elif backend == "jax":
        modes = {"jax.jit": True}
    else:
        modes = {"eager": False}
    data = load_data(0)

    widths = [2400, 5000] if args.sizes is None else args.sizes
    specs = ["lenet"] + [f"mlp:{width}" for width in widths]
    specs += ["resnet50"] if args.resnet else []
    print(
        f"\n1. Training-step time, ProximalOptimizer(Adam) / Adam: kerasreg.L1(1e-4) on "
        f"every kernel, Adam(1e-3), batch {args.batch_size}. The two models train in turn, "
        f"one epoch each; ratio: the median over these rounds of the wrapper's epoch time "
        f"over Adam's just before. LeNet-300-100: the digits training set (22 steps per "
        f"epoch), {args.timing_epochs} rounds; 64-w-w-10 MLPs: {args.steps} steps per epoch, "
        f"up to {args.size_epochs} rounds in {args.budget:g} s. +state and +peak RSS are "
        f"ProximalOptimizer's beyond Adam's."
    )
    time_table(specs, modes, args)

    if args.timing_only:
        return

    print(
        f"\n2. LeNet-300-100 on digits, {args.epochs} epochs, Adam(1e-3), batch 64, "
        f"seeds 0..{args.seeds - 1}: exact zeros in the kernels and test accuracy"
    )
    rows = [
        ("dense (no penalty)", lambda: None, lambda: keras.optimizers.Adam(1e-3)),
        (
            f"keras.regularizers.L1({args.l1:g}) + Adam",
            lambda: keras.regularizers.L1(args.l1),
            lambda: keras.optimizers.Adam(1e-3),
        ),
        (
            f"kerasreg.L1({args.l1:g}) + ProximalOptimizer(Adam)",
            lambda: kerasreg.L1(args.l1),
            lambda: kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-3)),
        ),
    ]
    for label, make_regularizer, make_row_optimizer in rows:
        results = []
        for seed in range(args.seeds):
            model = train(make_regularizer(), make_row_optimizer(), data, args.epochs, seed)
            results.append(sparsity_and_accuracy(model, data))
        zeros = [r[0] for r in results]
        accuracy = [r[1] for r in results]
        layers = np.mean([r[2] for r in results], axis=0)
        print(f"   {label}")
        print(
            f"      exact zeros {np.mean(zeros):.4f} (min {min(zeros):.4f}), accuracy "
            f"{np.mean(accuracy):.4f} (min {min(accuracy):.4f}, max {max(accuracy):.4f}); "
            f"zeros per layer {' '.join(f'{p:.3f}' for p in layers)}"
        )


if __name__ == "__main__":
    main()
