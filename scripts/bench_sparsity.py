"""Benchmark: reaching a named sparsity with LeNet-300-100's shape, and the monitor's cost.

Part 1 measures what `SparsityMonitor` costs: the same model is trained with
and without it, alternately, and the script prints the time spent in the
monitor per epoch as a fraction of the median epoch time without it, and
the ratio of the median epoch times (which moves by several percent from
run to run on a busy machine, more than the monitor costs).

Part 2 trains the inputs-300-100-classes network to 90%, 95% and 98% exact
zeros over its kernels by several routes, next to the dense baseline, all
in one run with the same data, seeds and epochs, on scikit-learn's digits
(64 features, 10 classes), breast cancer (30 features, 2 classes) and a
generated 10-class problem (100 features; `_digits.load_generated_data`):

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

What is tuned is tuned on validation data only. MCP's and SCAD's `gamma`
(`gamma_unit="glorot"`: the flat point in units of each kernel's initial
RMS) is chosen per target from `--mcp-gammas` and `--scad-gammas`: each
candidate trains on 75% of each training split of the `--tuning-datasets`
and is scored on the other 25%, and the candidate with the best validation
accuracy averaged over those data sets and the seeds is used everywhere,
retrained on the whole training split. The test splits play no part, nor do
the data sets outside `--tuning-datasets` (the generated one by default),
which show whether the choice carries over. The strengths are not tuned:
`TargetSparsity` scales them to the target.

Each route's accuracy is the test accuracy at the end; its sparsity is
counted with `np.count_nonzero` over the kernels. Run on any backend:
`KERAS_BACKEND=jax python scripts/bench_sparsity.py`.
"""

import argparse
import json
import statistics
import time

import keras
import numpy as np
from sklearn.model_selection import train_test_split

import kerasreg

from _digits import lenet_300_100
from _digits import load_breast_cancer_data
from _digits import load_data
from _digits import load_generated_data

DATASETS = {
    "digits": (load_data, 64, 10),
    "breast_cancer": (load_breast_cancer_data, 30, 2),
    "generated": (load_generated_data, 100, 10),
}
MAGNITUDE_ROUTES = ("magnitude", "global", "erk")
PENALTY_ROUTES = ("l1", "mcp", "scad")
ROUTES = MAGNITUDE_ROUTES + ("2:4",) + PENALTY_ROUTES
TUNED = ("mcp", "scad")

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


def penalty(route, args, gamma):
    """The penalty of a penalty route: the command line's strength, `gamma` for MCP and SCAD."""
    if route == "l1":
        return kerasreg.L1(args.l1_strength)
    if route == "mcp":
        return kerasreg.MCP(args.mcp_strength, gamma=gamma, gamma_unit="glorot")
    return kerasreg.SCAD(args.scad_strength, gamma=gamma, gamma_unit="glorot")


def validation_split(data, seed):
    """75% / 25% of the training split, stratified: `(train, validation)` as `data`."""
    x_train, _, y_train, _ = data
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=0.25, random_state=seed, stratify=y_train
    )
    return x_fit, x_val, y_fit, y_val


def run_route(route, target, dataset, data, args, seed, gamma=None):
    """Trains one route on `data`'s training split; returns the accuracy on its
    evaluation split and the kernels' sparsity."""
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
        kerasreg.regularize(model, penalty(route, args, gamma))
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


def tune(args):
    """`{(route, target): gamma}`: the best mean validation accuracy per candidate.

    Prints each candidate's validation accuracy per data set (mean over the
    seeds) and the choice.
    """
    candidates = {"mcp": args.mcp_gammas, "scad": args.scad_gammas}
    scores = {}
    for dataset in args.tuning_datasets:
        for seed in args.seeds:
            split = validation_split(DATASETS[dataset][0](seed), seed)
            for target in args.targets:
                for route in TUNED:
                    if route not in args.routes:
                        continue
                    for gamma in candidates[route]:
                        accuracy, _ = run_route(route, target, dataset, split, args, seed, gamma)
                        key = (route, target, gamma)
                        scores.setdefault(key, {}).setdefault(dataset, []).append(accuracy)
                        print(
                            f"tuning {dataset} seed {seed}: {route} target {target:.0%} "
                            f"gamma {gamma:g}: validation accuracy {accuracy:.4f}",
                            flush=True,
                        )
    chosen = {}
    print("\nvalidation accuracy (mean over seeds), gamma in units of each kernel's initial RMS:")
    for route in TUNED:
        for target in args.targets:
            best = None
            for gamma in candidates[route]:
                per_dataset = scores.get((route, target, gamma))
                if not per_dataset:
                    continue
                means = {d: float(np.mean(v)) for d, v in per_dataset.items()}
                overall = float(np.mean(list(means.values())))
                shown = ", ".join(f"{d} {m:.4f}" for d, m in means.items())
                print(f"  {route} {target:.0%} gamma {gamma:<5g}: {overall:.4f} ({shown})")
                if best is None or overall > best[1]:
                    best = (gamma, overall)
            if best is not None:
                chosen[(route, target)] = best[0]
                print(f"  {route} {target:.0%}: gamma {best[0]:g} chosen")
    return chosen


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
    parser.add_argument(
        "--tuning-datasets",
        nargs="+",
        default=["digits", "breast_cancer"],
        choices=list(DATASETS),
        help="the data sets whose validation splits choose gamma (default digits breast_cancer)",
    )
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    parser.add_argument("--l1-strength", type=float, default=1e-4, help="default 1e-4")
    parser.add_argument("--mcp-strength", type=float, default=1e-4, help="default 1e-4")
    parser.add_argument("--scad-strength", type=float, default=1e-4, help="default 1e-4")
    parser.add_argument(
        "--mcp-gammas", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0], help="candidates"
    )
    parser.add_argument(
        "--scad-gammas", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0], help="candidates"
    )
    parser.add_argument(
        "--gammas",
        nargs="+",
        metavar="ROUTE:TARGET:GAMMA",
        help="skip tuning: the gamma of each (route, target), e.g. mcp:0.98:1 (from a tuning run)",
    )
    parser.add_argument("--tune-only", action="store_true", help="stop after choosing gamma")
    parser.add_argument("--save", metavar="PATH", help="write every run's figures to PATH (JSON)")
    parser.add_argument(
        "--report-from",
        nargs="+",
        metavar="PATH",
        help="train nothing: the tables of the runs saved in these files, together",
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
    if args.report_from:
        results, gammas, epochs, seeds = {}, {}, set(), set()
        for path in args.report_from:
            with open(path) as f:
                for run in json.load(f):
                    epochs.add(run["epochs"])
                    seeds.add(run["seed"])
                    target = run["target"]
                    key = (run["dataset"], run["route"], target)
                    values = results.setdefault(key, {})
                    values[run["seed"]] = (run["accuracy"], run["sparsity"])
                    if run["gamma"] is not None:
                        gammas[(run["route"], target)] = run["gamma"]
        # A run saved twice (the dense baseline of each file) counts once.
        results = {key: [runs[seed] for seed in sorted(runs)] for key, runs in results.items()}
        args.datasets = [d for d in DATASETS if any(key[0] == d for key in results)]
        # The targets of every route (50% is 2:4's alone unless asked of the others).
        args.targets = sorted({t for _, route, t in results if route in ("erk",) + PENALTY_ROUTES})
        args.seeds = sorted(seeds)
        if len(epochs) != 1:
            raise SystemExit(f"the files hold runs of different lengths: {sorted(epochs)} epochs")
        (args.epochs,) = epochs
        report(results, args, gammas)
        return
    if args.gammas:
        gammas = {}
        for item in args.gammas:
            route, target, gamma = item.split(":")
            gammas[(route, float(target))] = float(gamma)
    else:
        gammas = tune(args)
    if args.tune_only:
        print("--gammas " + " ".join(f"{r}:{t:g}:{g:g}" for (r, t), g in sorted(gammas.items())))
        return
    runs = [(route, target) for target in args.targets for route in args.routes if route != "2:4"]
    if "2:4" in args.routes:
        runs += [
            (route, 0.5)
            for route in ("magnitude", "global", "2:4")
            if route in args.routes and (route, 0.5) not in runs
        ]
    results, saved = {}, []
    for dataset in args.datasets:
        for seed in args.seeds:
            data = DATASETS[dataset][0](seed)
            for route, target in [("dense", None)] + runs:
                gamma = gammas.get((route, target))
                if route in TUNED and gamma is None:
                    raise SystemExit(f"no gamma for {route} at {target:.0%}: tune, or --gammas")
                accuracy, sparsity = run_route(route, target, dataset, data, args, seed, gamma)
                results.setdefault((dataset, route, target), []).append((accuracy, sparsity))
                saved.append(
                    {"dataset": dataset, "route": route, "target": target, "seed": seed}
                    | {"accuracy": accuracy, "sparsity": sparsity, "gamma": gamma}
                    | {"epochs": args.epochs}
                )
                if args.save:
                    with open(args.save, "w") as f:
                        json.dump(saved, f, indent=1)
                label = "-" if target is None else f"{target:.0%}"
                print(
                    f"{dataset} seed {seed}: {route:<10} target {label:>4}: accuracy "
                    f"{accuracy:.4f}, exact zeros {sparsity:.2%}",
                    flush=True,
                )
    report(results, args, gammas)


def report(results, args, gammas):
    """The mean table, and each route against the best at each target, paired by seed."""
    print(f"\nmean over seeds {args.seeds}, {args.epochs} epochs (std over seeds)")
    print(
        f"{'data':<14}{'route':<11}{'target':>8}{'zeros':>9}{'accuracy':>10}{'std':>8}"
        f"{'vs dense':>10}"
    )
    for (dataset, route, target), values in sorted(
        results.items(), key=lambda item: (item[0][0], item[0][2] or 0.0)
    ):
        dense = float(np.mean([a for a, _ in results[(dataset, "dense", None)]]))
        accuracies = [a for a, _ in values]
        sparsity = float(np.mean([s for _, s in values]))
        label = "-" if target is None else f"{target:.0%}"
        note = f"  gamma {gammas[(route, target)]:g}" if route in TUNED else ""
        print(
            f"{dataset:<14}{route:<11}{label:>8}{sparsity:>9.2%}{np.mean(accuracies):>10.4f}"
            f"{np.std(accuracies):>8.4f}{np.mean(accuracies) - dense:>+10.4f}{note}"
        )
    print("\neach route against the best route at its target (paired by seed):")
    print("  difference of the means; in brackets the smallest and largest per-seed difference")
    for dataset in args.datasets:
        for target in args.targets:
            rows = {
                route: np.array([a for a, _ in results[(dataset, route, target)]])
                for route in MAGNITUDE_ROUTES + PENALTY_ROUTES
                if (dataset, route, target) in results
            }
            if not rows:
                continue
            best = max(rows, key=lambda route: rows[route].mean())
            shown = []
            for route, accuracies in rows.items():
                difference = accuracies - rows[best]
                shown.append(
                    f"{route} {difference.mean():+.4f} [{difference.min():+.4f}, "
                    f"{difference.max():+.4f}]"
                )
            print(f"  {dataset:<14}{target:>5.0%}: best {best}; " + "; ".join(shown))
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
