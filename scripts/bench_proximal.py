"""Benchmark: what ProximalOptimizer costs and what it buys.

Prints, from one run on one machine:

1. Training-step time of `ProximalOptimizer(Adam)` against plain `Adam` on
   the same LeNet-300-100, data and batches, as a ratio (median over
   repeated epochs, after warm-up). On TensorFlow it is measured with and
   without XLA (`jit_compile`); on JAX, `fit` always compiles with XLA.
2. Sparsity (exact zeros in the kernels, `np.count_nonzero(w == 0)`) and test
   accuracy of LeNet-300-100 on scikit-learn's digits: dense baseline, Keras'
   own `L1` with Adam, and kerasreg's `L1` with `ProximalOptimizer(Adam)`.

Usage:
    KERAS_BACKEND=tensorflow python scripts/bench_proximal.py
    KERAS_BACKEND=jax python scripts/bench_proximal.py --epochs 60
"""

import argparse
import statistics
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


def step_times(optimizers, data, jit_compile, epochs, batch_size):
    """Median seconds per training step for each optimizer factory.

    The models train in turn, one epoch each, `epochs` times, so that a
    change in machine load affects all of them alike; each epoch is timed
    from its first to its last batch.
    """
    x_train, _, y_train, _ = data
    models = []
    for make_optimizer in optimizers:
        keras.utils.set_random_seed(0)
        model = compile_model(lenet_300_100(kerasreg.L1(1e-4)), make_optimizer(), jit_compile)
        model.fit(x_train, y_train, batch_size=batch_size, epochs=2, verbose=0)  # warm-up
        models.append(model)
    timers = [EpochTimer() for _ in models]
    for _ in range(epochs):
        for model, timer in zip(models, timers, strict=True):
            model.fit(
                x_train, y_train, batch_size=batch_size, epochs=1, verbose=0, callbacks=[timer]
            )
    steps = int(np.ceil(len(x_train) / batch_size))
    return [statistics.median(timer.times) / steps for timer in timers]


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
    args = parser.parse_args(argv)

    backend = keras.backend.backend()
    print(f"kerasreg {kerasreg.__version__}, Keras {keras.__version__}, backend {backend}")
    data = load_data(0)

    print("\n1. Training-step time, ProximalOptimizer(Adam) / Adam (same model and data)")
    if backend == "tensorflow":
        modes = {"with XLA": True, "without XLA": False}
    elif backend == "jax":
        modes = {"with XLA (jax.jit)": True}
    else:
        modes = {"without XLA (eager PyTorch)": False}
    for label, jit in modes.items():
        plain, proximal = step_times(
            [
                lambda: keras.optimizers.Adam(1e-3),
                lambda: kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-3)),
            ],
            data,
            jit,
            args.timing_epochs,
            args.batch_size,
        )
        print(
            f"   {label}: Adam {plain * 1e3:.3f} ms/step, ProximalOptimizer(Adam) "
            f"{proximal * 1e3:.3f} ms/step, ratio {proximal / plain:.3f}"
        )
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
    for label, make_regularizer, make_optimizer in rows:
        results = []
        for seed in range(args.seeds):
            model = train(make_regularizer(), make_optimizer(), data, args.epochs, seed)
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
