"""Quick start: prune LeNet-300-100 on scikit-learn's digits with an L1 penalty.

Trains the same 64-300-100-10 network three times: with no penalty, with an
`L1` penalty on every kernel under plain Adam, and with the same penalty under
`ProximalOptimizer(Adam)`. Prints the test accuracy and the fraction of
kernel weights that are exactly zero for each, then per layer for the
proximal model: the penalty, the exact zeros and the weights below a
tolerance. It saves the pruned model (optimizer included) to `.keras`,
loads it back with plain `keras.models.load_model` and checks the
predictions are identical.

Runs offline on any Keras backend (`KERAS_BACKEND=jax python
scripts/quickstart.py`) in about a minute on two CPU cores.
"""

import argparse
import os
import tempfile
import time

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import kerasreg

TOLERANCE = 1e-3


def load_data(seed):
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def lenet_300_100(regularizer=None):
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(300, "relu", kernel_regularizer=regularizer, name="fc_300"),
            keras.layers.Dense(100, "relu", kernel_regularizer=regularizer, name="fc_100"),
            keras.layers.Dense(10, kernel_regularizer=regularizer, name="logits"),
        ],
        name="lenet_300_100",
    )


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
    callbacks = []
    if verbose:
        every = max(1, epochs // 8)
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: (
                    (epoch + 1) % every == 0
                    and print(
                        f"  epoch {epoch + 1:>4}/{epochs}: loss {logs['loss']:.4f}, "
                        f"accuracy {logs['accuracy']:.4f}, kernel zeros {zero_fraction(model):.2%}",
                        flush=True,
                    )
                )
            )
        )
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0, callbacks=callbacks)
    return model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]


def layer_table(model):
    rows = []
    header = f"{'layer':<10}{'weights':>9}{'penalty':>11}{'exact 0':>9}{'|w|<1e-3':>10}"
    rows.append(header)
    for layer in model.layers:
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        penalty = (
            float(keras.ops.convert_to_numpy(layer.kernel_regularizer(layer.kernel)))
            if layer.kernel_regularizer is not None
            else 0.0
        )
        rows.append(
            f"{layer.name:<10}{kernel.size:>9}{penalty:>11.4f}"
            f"{np.count_nonzero(kernel == 0):>9}"
            f"{np.count_nonzero(np.abs(kernel) < TOLERANCE):>10}"
        )
    return "\n".join(rows)


def zero_fraction(model):
    kernels = [keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers]
    return sum(np.count_nonzero(k == 0) for k in kernels) / sum(k.size for k in kernels)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="training epochs (default 200)")
    parser.add_argument("--l1", type=float, default=1.5e-3, help="L1 strength (default 1.5e-3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--save-to", default=None, help="where to write the .keras file (default: a temp dir)"
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
    dense_accuracy = train(dense, data, args.epochs, args.seed, verbose=0)
    print(f"\ndense baseline: test accuracy {dense_accuracy:.4f}")

    plain = lenet_300_100(kerasreg.L1(args.l1))
    plain_accuracy = train(plain, data, args.epochs, args.seed, verbose=0)
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
        f"ProximalOptimizer(Adam), mode={optimizer.mode!r}"
    )
    model = lenet_300_100(regularizer)
    accuracy = train(model, data, args.epochs, args.seed, verbose=1, optimizer=optimizer)
    print(
        f"\nL1({args.l1:g}) with ProximalOptimizer(Adam): test accuracy {accuracy:.4f}, "
        f"exact zeros {zero_fraction(model):.2%}\n"
    )
    print(layer_table(model))

    directory = args.save_to or tempfile.mkdtemp(prefix="kerasreg_quickstart_")
    path = os.path.join(directory, "lenet_300_100_pruned.keras")
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
    print(f"done in {time.perf_counter() - start:.1f} s")
    if not same:
        raise SystemExit("reloaded model predicts differently")


if __name__ == "__main__":
    main()
