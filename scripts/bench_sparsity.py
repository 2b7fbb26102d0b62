"""Benchmark: reaching a named sparsity on LeNet-300-100 / digits, and the monitor's cost.

Part 1 measures what `SparsityMonitor` costs: the same model is trained with
and without it, alternately, and the script prints the time spent in the
monitor per epoch as a fraction of the median epoch time without it, and
the ratio of the median epoch times (which moves by several percent from
run to run on a busy machine, more than the monitor costs).

Part 2 trains the inputs-300-100-classes network to 90%, 95% and 98% exact
zeros over its kernels by several routes, next to the dense baseline, all
in one run with the same data, seeds and epochs, on scikit-learn's digits
(64 features, 10 classes) and breast cancer (30 features, 2 classes):

- `magnitude`: `MagnitudePruning` on every kernel, each to the target
  (gradual cubic schedule from step 10% to 60% of training, mask recomputed
  every 100 steps, then held), i.e. the legacy toolkit's
  `prune_low_magnitude` with `PolynomialDecay`;
- `global`: the same with `scope="global"`, one threshold over all kernels;
- `erk`: per-kernel targets from `allocate_sparsity(method="erk")`;
- `2:4` (at 50% only, next to `magnitude` and `global` at 50%):
  `MagnitudePruning(structure=(2, 4))` on every kernel whose input axis
  divides by 4 (breast cancer's first kernel, 30 inputs, stays dense);
- `l1`, `mcp`, `scad`: that penalty on every kernel under
  `ProximalOptimizer(Adam)`, `TargetSparsity` scaling its strength to reach
  the target by 60% of training, then `FreezeSparsity(sparsity=target)` for
  the last 30% (the pattern completed to the target by magnitude, zeros
  held, survivors trained without the penalty).

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
from _digits import load_breast_cancer_data
from _digits import load_data

DATASETS = {"digits": (load_data, 64, 10), "breast_cancer": (load_breast_cancer_data, 30, 2)}
MAGNITUDE_ROUTES = ("magnitude", "global", "erk")
PENALTY_ROUTES = ("l1", "mcp", "scad")
ROUTES = MAGNITUDE_ROUTES + ("2:4",) + PENALTY_ROUTES

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


def penalty(route, args):
    """The penalty of a penalty route, with the strengths of the command line."""
    if route == "l1":
        return kerasreg.L1(args.l1_strength)
    if route == "mcp":
        return kerasreg.MCP(args.mcp_strength, gamma=args.mcp_gamma)
    return kerasreg.SCAD(args.scad_strength, gamma=args.scad_gamma)


def run_route(route, target, dataset, data, args, seed):
    """Trains one route; returns its test accuracy and the kernels' sparsity."""
    x_train, x_test, y_train, y_test = data
    _, inputs, classes = DATASETS[dataset]
    epochs = args.epochs
    keras.utils.set_random_seed(seed)
    model = lenet_300_100(inputs=inputs, classes=classes)
    steps = epochs * int(np.ceil(len(x_train) / BATCH_SIZE))
    schedule = {"begin_step": steps // 10, "end_step": steps * 6 // 10, "frequency": 100}
    callbacks = []
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-3))
    if route == "dense":
        optimizer = keras.optimizers.Adam(1e-3)
    elif route == "magnitude":
        kerasreg.regularize(model, kerasreg.MagnitudePruning(target, **schedule))
    elif route == "global":
        # `regularize` gives each kernel an equal copy: one threshold over all.
        kerasreg.regularize(model, kerasreg.MagnitudePruning(target, scope="global", **schedule))
    elif route == "erk":
        targets = kerasreg.allocate_sparsity(model, target, method="erk")
        kerasreg.regularize(
            model, lambda layer, weight: kerasreg.MagnitudePruning(targets[weight.path], **schedule)
        )
    elif route == "2:4":
        kerasreg.regularize(
            model,
            lambda layer, weight: (
                kerasreg.MagnitudePruning(structure=(2, 4), **schedule)
                if weight.shape[-2] % 4 == 0
                else None
            ),
        )
    else:
        kerasreg.regularize(model, penalty(route, args))
        callbacks.append(kerasreg.TargetSparsity(target, end_epoch=epochs * 6 // 10))
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
        "--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS), help="data sets"
    )
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    parser.add_argument("--l1-strength", type=float, default=1e-4, help="default 1e-4")
    parser.add_argument("--mcp-strength", type=float, default=1e-4, help="default 1e-4")
    parser.add_argument("--mcp-gamma", type=float, default=500.0, help="default 500")
    parser.add_argument("--scad-strength", type=float, default=1e-4, help="default 1e-4")
    parser.add_argument("--scad-gamma", type=float, default=500.0, help="default 500")
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
    runs = [(route, target) for target in args.targets for route in args.routes if route != "2:4"]
    if "2:4" in args.routes:
        runs += [
            (route, 0.5)
            for route in ("magnitude", "global", "2:4")
            if route in args.routes and (route, 0.5) not in runs
        ]
    results = {}
    for dataset in args.datasets:
        for seed in args.seeds:
            data = DATASETS[dataset][0](seed)
            for route, target in [("dense", None)] + runs:
                accuracy, sparsity = run_route(route, target, dataset, data, args, seed)
                results.setdefault((dataset, route, target), []).append((accuracy, sparsity))
                label = "-" if target is None else f"{target:.0%}"
                print(
                    f"{dataset} seed {seed}: {route:<10} target {label:>4}: accuracy "
                    f"{accuracy:.4f}, exact zeros {sparsity:.2%}",
                    flush=True,
                )

    print(f"\nmean over seeds {args.seeds}, {args.epochs} epochs")
    print(f"{'data':<14}{'route':<11}{'target':>8}{'zeros':>9}{'accuracy':>10}{'vs dense':>10}")
    for (dataset, route, target), values in sorted(
        results.items(), key=lambda item: (item[0][0], item[0][2] or 0.0)
    ):
        dense = float(np.mean([a for a, _ in results[(dataset, "dense", None)]]))
        accuracy = float(np.mean([a for a, _ in values]))
        sparsity = float(np.mean([s for _, s in values]))
        label = "-" if target is None else f"{target:.0%}"
        print(
            f"{dataset:<14}{route:<11}{label:>8}{sparsity:>9.2%}{accuracy:>10.4f}"
            f"{accuracy - dense:>+10.4f}"
        )
    print("\nbest penalty route against best magnitude route (mean accuracy):")
    for dataset in args.datasets:
        for target in args.targets:
            best = {}
            for kind, routes in (("magnitude", MAGNITUDE_ROUTES), ("penalty", PENALTY_ROUTES)):
                scores = {
                    route: float(np.mean([a for a, _ in results[(dataset, route, target)]]))
                    for route in routes
                    if (dataset, route, target) in results
                }
                if scores:
                    best[kind] = max(scores.items(), key=lambda item: item[1])
            if len(best) == 2:
                (m_route, m_acc), (p_route, p_acc) = best["magnitude"], best["penalty"]
                verdict = "at least as accurate" if p_acc >= m_acc else "less accurate"
                print(
                    f"{dataset:<14}{target:>5.0%}: {p_route} {p_acc:.4f} vs {m_route} "
                    f"{m_acc:.4f}: {verdict} ({p_acc - m_acc:+.4f})"
                )


if __name__ == "__main__":
    main()
