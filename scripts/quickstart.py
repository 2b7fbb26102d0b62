"""Quick start: prune LeNet-300-100 on scikit-learn's digits with an L1 penalty.

Trains the same 64-300-100-10 network three times: with no penalty (the
dense baseline), with an `L1` penalty on every kernel under plain Adam, and
with the same penalty under `ProximalOptimizer(Adam)`, watched by
`SparsityMonitor` (per-layer exact zeros in the progress lines). Prints the
test accuracy and the fraction of kernel weights that are exactly zero for
each, then the pruned model's per-layer sparsity report. It saves the pruned
model (optimizer included) to `quickstart_output/*.keras`, loads it back with
plain `keras.models.load_model`, checks the predictions are identical, and
writes `quickstart_output/quickstart.png`: per-layer sparsity during training
and the three accuracies.

Runs offline on any Keras backend (`KERAS_BACKEND=jax python
scripts/quickstart.py`) in about a minute on two CPU cores.
"""

import argparse
import os
import time

import keras
import numpy as np

import kerasreg

from _digits import lenet_300_100
from _digits import load_data

TOLERANCE = 1e-3


def progress_printer(epochs):
    """Prints a line with the monitor's per-layer exact zeros, eight times per fit."""
    every = max(1, epochs // 8)

    def progress(epoch, logs):
        if (epoch + 1) % every:
            return
        layers = ", ".join(
            f"{key.removeprefix('sparsity/')} {value:.1%}"
            for key, value in logs.items()
            if key.startswith("sparsity/")
        )
        print(
            f"  epoch {epoch + 1:>4}/{epochs}: loss {logs['loss']:.4f}, accuracy "
            f"{logs['accuracy']:.4f}, exact zeros {logs['sparsity']:.2%} ({layers})",
            flush=True,
        )

    return keras.callbacks.LambdaCallback(on_epoch_end=progress)


def train(model, data, epochs, seed, verbose, optimizer=None):
    x_train, x_test, y_train, y_test = data
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        # Several steps per call where the backend allows it: same maths,
        # less Python overhead per step.
        steps_per_execution=1 if keras.backend.backend() == "torch" else 11,
    )
    # Exact zeros per layer into `logs` (hence History) after every epoch.
    callbacks = [kerasreg.SparsityMonitor(granularity="layer")]
    if verbose:
        callbacks.append(progress_printer(epochs))
    history = model.fit(
        x_train, y_train, epochs=epochs, batch_size=64, verbose=0, callbacks=callbacks
    )
    accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    return accuracy, history.history


def zero_fraction(model):
    kernels = [keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers]
    return sum(np.count_nonzero(k == 0) for k in kernels) / sum(k.size for k in kernels)


def plot(path, history, results):
    import matplotlib

    matplotlib.use("Agg")  # a file, no window
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = range(1, len(history["sparsity"]) + 1)
    for key in sorted(k for k in history if k.startswith("sparsity/")):
        left.plot(epochs, history[key], label=key.removeprefix("sparsity/"))
    left.plot(epochs, history["sparsity"], "k--", label="all kernels")
    left.set_xlabel("epoch")
    left.set_ylabel("exact zeros")
    left.set_title("L1 + ProximalOptimizer(Adam), during fit")
    left.legend()
    names = list(results)
    bars = right.bar(range(len(names)), [results[name][0] for name in names])
    for bar, name in zip(bars, names, strict=True):
        accuracy, zeros = results[name]
        right.annotate(
            f"{accuracy:.3f}\n{zeros:.0%} zeros",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    right.set_xticks(range(len(names)), names, fontsize=8)
    right.set_ylim(0.8, 1.04)
    right.set_ylabel("test accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="training epochs (default 200)")
    parser.add_argument("--l1", type=float, default=1.5e-3, help="L1 strength (default 1.5e-3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--save-to",
        default="quickstart_output",
        help="directory for the .keras file and the plot (default: quickstart_output)",
    )
    args = parser.parse_args(argv)

    print(
        f"kerasreg {kerasreg.__version__}, Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}"
    )
    data = load_data(args.seed)
    print(f"digits: {len(data[0])} training and {len(data[1])} test images of 8x8 pixels")

    start = time.perf_counter()
    dense = lenet_300_100()
    dense_accuracy, _ = train(dense, data, args.epochs, args.seed, verbose=0)
    print(f"\ndense baseline: test accuracy {dense_accuracy:.4f}")

    plain = lenet_300_100(kerasreg.L1(args.l1))
    plain_accuracy, _ = train(plain, data, args.epochs, args.seed, verbose=0)
    print(
        f"L1({args.l1:g}) with plain Adam: test accuracy {plain_accuracy:.4f}, "
        f"exact zeros {zero_fraction(plain):.2%}"
    )
    print(
        "   (gradient steps on |w| push weights towards zero and oscillate\n"
        "    around it: few or none land exactly on zero)"
    )

    regularizer = kerasreg.L1(args.l1)
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-3))
    print(
        f"\ntraining with kernel_regularizer={regularizer!r} and "
        f"ProximalOptimizer(Adam), mode={optimizer.mode!r}, watched by SparsityMonitor"
    )
    model = lenet_300_100(regularizer)
    accuracy, history = train(model, data, args.epochs, args.seed, verbose=1, optimizer=optimizer)
    print(
        f"\nL1({args.l1:g}) with ProximalOptimizer(Adam): test accuracy {accuracy:.4f} "
        f"(dense baseline {dense_accuracy:.4f}), exact zeros {zero_fraction(model):.2%}\n"
    )
    print(kerasreg.sparsity_report(model, tolerance=TOLERANCE))

    os.makedirs(args.save_to, exist_ok=True)
    path = os.path.join(args.save_to, "lenet_300_100_pruned.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    same = np.array_equal(
        keras.ops.convert_to_numpy(model.predict(data[1], verbose=0)),
        keras.ops.convert_to_numpy(reloaded.predict(data[1], verbose=0)),
    )
    print(
        f"\nsaved to {path}; reloaded with plain load_model "
        f"(optimizer: {type(reloaded.optimizer).__name__}): identical predictions: {same}"
    )
    figure = os.path.join(args.save_to, "quickstart.png")
    results = {
        "dense": (dense_accuracy, zero_fraction(dense)),
        "L1 + Adam": (plain_accuracy, zero_fraction(plain)),
        "L1 + Proximal-\nOptimizer(Adam)": (accuracy, zero_fraction(model)),
    }
    plot(figure, history, results)
    print(f"plot written to {figure}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    if not same:
        raise SystemExit("reloaded model predicts differently")


if __name__ == "__main__":
    main()
