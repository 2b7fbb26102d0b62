"""Warm starts along a regularization path: time and epochs against cold fits.

Two paths, each fitted twice in the same process, once with warm starts
(every fit starts from the previous strength's solution) and once cold
(every fit starts from the initial weights):

- `lasso`: a linear model on scikit-learn's diabetes data, full-batch
  proximal gradient with momentum, each fit run until no weight moves by more
  than `--tol` in an epoch (glmnet's stopping rule); both paths must reach
  scikit-learn's `Lasso` solutions, so the comparison is at equal accuracy.
- `lenet`: LeNet-300-100 on digits with an L1 penalty and
  `ProximalOptimizer(Adam)`; cold fits run `--epochs` epochs each, warm fits
  `--warm-epochs`; the table compares held-out accuracy and sparsity at each
  strength, i.e. what the shorter warm fits give up, if anything.

Prints one row per strength and the ratios cold / warm of wall time and
epochs. Runs offline on any Keras backend.
"""

import argparse
import time

import keras
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Lasso
from sklearn.preprocessing import StandardScaler

import kerasreg
from kerasreg import model_selection

from _digits import lenet_300_100
from _digits import load_data

REPEAT = 10  # full-batch steps per epoch on the linear path


def lasso_factory(x):
    step = 1.0 / np.linalg.eigvalsh(2 * x.T @ x / len(x)).max()

    def build_model(regularizer):
        model = keras.Sequential(
            [
                keras.Input((x.shape[1],)),
                keras.layers.Dense(1, kernel_regularizer=regularizer, kernel_initializer="zeros"),
            ]
        )
        model.compile(
            kerasreg.ProximalOptimizer(keras.optimizers.SGD(step, momentum=0.8)),
            "mse",
            steps_per_execution=1 if keras.backend.backend() == "torch" else REPEAT,
        )
        return model

    return build_model


def lenet_factory(regularizer):
    model = lenet_300_100(regularizer)
    model.compile(
        kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-3)),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def run_lasso(args):
    x, y = load_diabetes(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    y = (y - y.mean()) / y.std()
    strengths = np.geomspace(1.2, 0.012, args.strengths)
    paths = {}
    for warm in (True, False):
        paths[warm] = model_selection.regularization_path(
            lasso_factory(x),
            x.astype("float32"),
            y.astype("float32"),
            strengths,
            epochs=500,
            tol=args.tol,
            batch_size="full",
            repeat=REPEAT,
            fit_kwargs={"shuffle": False},
            warm_start=warm,
            seed=0,
        )
    print(f"\n== lasso: diabetes, {len(strengths)} strengths, tol {args.tol:g}")
    print(
        f"{'strength':>9} {'non-zero':>8} {'epochs warm':>11} {'epochs cold':>11} "
        f"{'max |w - sklearn|':>18}"
    )
    for i, strength in enumerate(strengths):
        sk = Lasso(alpha=strength / 2, tol=1e-12, max_iter=100_000).fit(x, y)
        gap = max(np.abs(paths[w].weights[i][0][:, 0] - sk.coef_).max() for w in (True, False))
        print(
            f"{strength:>9.4g} {paths[True].nonzeros[i]:>8} {paths[True].epochs[i]:>11} "
            f"{paths[False].epochs[i]:>11} {gap:>18.1e}"
        )
    report(paths)


def run_lenet(args):
    x_train, x_test, y_train, y_test = load_data(0)
    strengths = np.geomspace(3e-3, 1e-4, args.strengths)
    paths = {}
    for warm in (True, False):
        paths[warm] = model_selection.regularization_path(
            lenet_factory,
            x_train,
            y_train,
            strengths,
            validation_data=(x_test, y_test),
            metric="sparse_categorical_accuracy",
            epochs=args.epochs,
            warm_epochs=args.warm_epochs if warm else None,
            batch_size=64,
            keep_weights=False,
            warm_start=warm,
            seed=0,
        )
    print(
        f"\n== lenet: digits, {len(strengths)} strengths, cold {args.epochs} epochs each, "
        f"warm {args.epochs} then {args.warm_epochs}"
    )
    print(f"{'strength':>9} {'acc warm':>9} {'acc cold':>9} {'zeros warm':>11} {'zeros cold':>11}")
    for i, strength in enumerate(strengths):
        zeros = {w: 1 - paths[w].nonzeros[i] / paths[w].sizes[i] for w in (True, False)}
        print(
            f"{strength:>9.4g} {paths[True].scores[i]:>9.4f} {paths[False].scores[i]:>9.4f} "
            f"{zeros[True]:>11.2%} {zeros[False]:>11.2%}"
        )
    report(paths)


def report(paths):
    seconds = {w: paths[w].seconds.sum() for w in paths}
    epochs = {w: paths[w].epochs.sum() for w in paths}
    print(
        f"total: warm {seconds[True]:.1f} s / {epochs[True]} epochs, cold {seconds[False]:.1f} s / "
        f"{epochs[False]} epochs; cold / warm: time {seconds[False] / seconds[True]:.2f}x, "
        f"epochs {epochs[False] / epochs[True]:.2f}x"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--paths", nargs="+", default=["lasso", "lenet"], choices=["lasso", "lenet"]
    )
    parser.add_argument("--strengths", type=int, default=12, help="grid points (default 12)")
    parser.add_argument("--tol", type=float, default=1e-6, help="lasso stopping rule")
    parser.add_argument("--epochs", type=int, default=40, help="lenet: epochs of cold fits")
    parser.add_argument("--warm-epochs", type=int, default=10, help="lenet: epochs of warm fits")
    args = parser.parse_args(argv)
    print(
        f"kerasreg {kerasreg.__version__}, Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}"
    )
    start = time.perf_counter()
    if "lasso" in args.paths:
        run_lasso(args)
    if "lenet" in args.paths:
        run_lenet(args)
    print(f"\ndone in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
