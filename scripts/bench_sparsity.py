"""Benchmark: reaching a named sparsity on LeNet-300-100 / digits, and the monitor's cost.

Part 1 measures what `SparsityMonitor` costs: the same model is trained with
and without it, alternately, and the script prints the time spent in the
monitor per epoch as a fraction of the median epoch time without it, and
the ratio of the median epoch times (which moves by several percent from
run to run on a busy machine, more than the monitor costs).

Part 2 trains the 64-300-100-10 network to 90%, 95% and 98% exact zeros
over its kernels by three routes, next to the dense baseline, all in one
run with the same data, seed and epochs:

- `magnitude`: `MagnitudePruning` on every kernel (gradual cubic schedule
  from step 10% to 60% of training, mask recomputed every 100 steps, then
  held), i.e. the legacy toolkit's `prune_low_magnitude` with
  `PolynomialDecay`;
- `controller`: `L1` on every kernel under `ProximalOptimizer(Adam)`, with
  `TargetSparsity` scaling the strength to reach the target by 60% of
  training;
- `debiased` (the penalty route with debiasing): the controller, then
  `FreezeSparsity(sparsity=target)` for the last 30% of training (the
  pattern completed to the target by magnitude, zeros held, survivors
  trained without the penalty).

Each route's accuracy is the test accuracy at the end; its sparsity is
counted with `np.count_nonzero` over the kernels. Run on any backend:
`KERAS_BACKEND=jax python scripts/bench_sparsity.py`.
"""

import argparse
import statistics
import time

import keras
import numpy as np

import kerasreg

from _digits import lenet_300_100
from _digits import load_data

BATCH_SIZE = 64


def compile_model(model, optimizer):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=1 if keras.backend.backend() == "torch" else 11,
    )


def kernel_sparsity(model):
    kernels = [keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers]
    return sum(np.count_nonzero(k == 0) for k in kernels) / sum(k.size for k in kernels)


def run_route(route, target, data, epochs, seed):
    x_train, x_test, y_train, y_test = data
    keras.utils.set_random_seed(seed)
    steps = epochs * int(np.ceil(len(x_train) / BATCH_SIZE))
    callbacks = []
    if route == "dense":
        model = lenet_300_100()
        optimizer = keras.optimizers.Adam(1e-3)
    elif route == "magnitude":
        model = lenet_300_100(
            lambda: kerasreg.MagnitudePruning(
                target, begin_step=steps // 10, end_step=steps * 6 // 10, frequency=100
            )
        )
        optimizer = kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-3))
    else:
        model = lenet_300_100(lambda: kerasreg.L1(1e-4))
        optimizer = kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-3))
        callbacks.append(kerasreg.TargetSparsity(target, end_epoch=epochs * 6 // 10))
        if route == "debiased":
            callbacks.append(kerasreg.FreezeSparsity(start_epoch=epochs * 7 // 10, sparsity=target))
    compile_model(model, optimizer)
    model.fit(
        x_train, y_train, epochs=epochs, batch_size=BATCH_SIZE, verbose=0, callbacks=callbacks
    )
    accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    return accuracy, kernel_sparsity(model)


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


class TimedMonitor(kerasreg.SparsityMonitor):
    """`SparsityMonitor` that records the time its epoch-end hook takes."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        super().on_epoch_end(epoch, logs)
        self.times.append(time.perf_counter() - start)


def monitor_cost(data, epochs, repeats, seed):
    """Epoch times with and without the monitor, and the monitor's own time.

    Returns the median epoch time without the monitor, with it, and the
    median time spent in the monitor per epoch. The monitor's own time is
    the precise figure; the difference of epoch times is within the noise.
    """
    x_train, _, y_train, _ = data
    keras.utils.set_random_seed(seed)
    model = lenet_300_100(lambda: kerasreg.L1(1e-3))
    compile_model(model, kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-3)))
    model.fit(x_train, y_train, epochs=2, batch_size=BATCH_SIZE, verbose=0)  # compile, warm up
    times = {"without": [], "with": [], "monitor": []}
    for _ in range(repeats):
        for variant in ("without", "with"):
            timer = EpochTimer()
            callbacks = [timer]
            if variant == "with":
                monitor = TimedMonitor()
                callbacks = [monitor, timer]
            model.fit(
                x_train,
                y_train,
                epochs=epochs,
                batch_size=BATCH_SIZE,
                verbose=0,
                callbacks=callbacks,
            )
            times[variant].extend(timer.times)
            if variant == "with":
                times["monitor"].extend(monitor.times)
    return tuple(statistics.median(times[k]) for k in ("without", "with", "monitor"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="training epochs (default 200)")
    parser.add_argument(
        "--targets", type=float, nargs="+", default=[0.90, 0.95, 0.98], help="sparsities"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    parser.add_argument(
        "--routes",
        nargs="+",
        default=["magnitude", "controller", "debiased"],
        choices=["magnitude", "controller", "debiased"],
    )
    parser.add_argument("--skip-monitor", action="store_true", help="skip the monitor's cost")
    parser.add_argument("--monitor-only", action="store_true", help="only the monitor's cost")
    args = parser.parse_args(argv)
    print(f"kerasreg {kerasreg.__version__}, Keras {keras.__version__}, {keras.backend.backend()}")

    if not args.skip_monitor:
        data = load_data(0)
        without, with_monitor, own = monitor_cost(data, epochs=20, repeats=5, seed=0)
        print(
            f"SparsityMonitor: {own * 1e3:.2f} ms per epoch in the monitor = "
            f"{own / without:.2%} of the median epoch ({without * 1e3:.1f} ms); "
            f"median epoch with it {with_monitor * 1e3:.1f} ms "
            f"(ratio {with_monitor / without:.3f}, within run-to-run noise)"
        )

    if args.monitor_only:
        return
    results = {}
    for seed in args.seeds:
        data = load_data(seed)
        accuracy, _ = run_route("dense", None, data, args.epochs, seed)
        results.setdefault(("dense", None), []).append((accuracy, 0.0))
        print(f"seed {seed}: dense accuracy {accuracy:.4f}", flush=True)
        for target in args.targets:
            for route in args.routes:
                accuracy, sparsity = run_route(route, target, data, args.epochs, seed)
                results.setdefault((route, target), []).append((accuracy, sparsity))
                print(
                    f"seed {seed}: {route:<10} target {target:.0%}: accuracy {accuracy:.4f}, "
                    f"exact zeros {sparsity:.2%}",
                    flush=True,
                )

    print(f"\nmean over seeds {args.seeds}, {args.epochs} epochs")
    print(f"{'route':<11}{'target':>8}{'zeros':>9}{'accuracy':>10}{'vs dense':>10}")
    dense = float(np.mean([a for a, _ in results[("dense", None)]]))
    for (route, target), values in results.items():
        accuracy = float(np.mean([a for a, _ in values]))
        sparsity = float(np.mean([s for _, s in values]))
        label = "-" if target is None else f"{target:.0%}"
        print(f"{route:<11}{label:>8}{sparsity:>9.2%}{accuracy:>10.4f}{accuracy - dense:>+10.4f}")


if __name__ == "__main__":
    main()
