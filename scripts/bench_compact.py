"""Benchmark: group lasso + compaction makes a smaller, faster model on digits.

Two networks on scikit-learn's digits (75% train, 25% test, stratified):

- `mlp`: 64-512-512-10, ReLU;
- `conv`: 8x8x1 -> Conv2D(32, 3x3, same) -> Conv2D(64, 3x3, same) ->
  MaxPooling 2x2 -> Flatten -> Dense(128) -> Dense(10), ReLU.

Each is trained twice with the same seed, data and epochs:

- `dense`: Adam (learning rate 1e-3), no penalty: the baseline;
- `group lasso`: `kerasreg.GroupLasso(group_axis=-1)` on every hidden
  kernel (one group per unit or filter: its incoming weights; strengths as
  in `group_lasso` below) under `ProximalOptimizer(SGD(momentum=0.9))`
  with a cosine-decayed learning rate from 0.05, for the first half of the
  epochs (the strengths ramped up from 0 over the first sixth), then
  `FreezeSparsity` for the second half (zero groups held, survivors
  trained without the penalty's shrinkage); then `kerasreg.compact`.
  SGD's plain proximal step thresholds every group at the same
  `lr * strength`; under Adam's per-coordinate step, units whose gradients
  are small get a large threshold and whole layers collapse at once, which
  makes the strength hard to set.

The script prints, per network: test accuracy of the dense baseline, of the
group-lasso model and of its compacted version (which must predict the same
labels), parameter counts, and batch inference time (`predict_on_batch` on
4096 test rows, median of repeated calls after warm-up) of the compacted
model against the dense baseline, both measured in this process. Run on any
backend: `KERAS_BACKEND=jax python scripts/bench_compact.py`.
"""

import argparse
import math
import statistics
import time

import keras
import numpy as np

import kerasreg

from _digits import load_data

BATCH_SIZE = 64
INFERENCE_ROWS = 4096


def mlp(regularizer):
    """64-512-512-10; `regularizer(name, group_size)` gives each kernel's."""
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(512, "relu", kernel_regularizer=regularizer("fc1", 64), name="fc1"),
            keras.layers.Dense(512, "relu", kernel_regularizer=regularizer("fc2", 512), name="fc2"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="mlp",
    )


def conv(regularizer):
    def conv2d(filters, name, group_size):
        return keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="relu",
            kernel_regularizer=regularizer(name, group_size),
            name=name,
        )

    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            conv2d(32, "conv1", 3 * 3 * 1),
            conv2d(64, "conv2", 3 * 3 * 32),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(128, "relu", kernel_regularizer=regularizer("fc", 1024), name="fc"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="conv",
    )


NETWORKS = {"mlp": mlp, "conv": conv}


def group_lasso(strength, first_conv_factor):
    """One group per unit or filter, every group facing the same threshold.

    `GroupLasso` weighs a group by the square root of its size; dividing
    the strength by it makes the threshold `lr * strength` for every unit
    of every layer. The first convolution's filters have 9 weights each but
    run at full resolution on the widest activations, so their strength is
    multiplied by `first_conv_factor`.
    """

    def regularizer(name, group_size):
        factor = first_conv_factor if name == "conv1" else 1.0
        return kerasreg.GroupLasso(factor * strength / math.sqrt(group_size), group_axis=-1)

    return regularizer


def shaped(name, x):
    return x.reshape(-1, 8, 8, 1) if name == "conv" else x


def train(name, regularizer, data, epochs, seed):
    x_train, x_test, y_train, y_test = data
    keras.utils.set_random_seed(seed)
    if regularizer is None:
        model = NETWORKS[name](lambda name, group_size: None)
        optimizer = keras.optimizers.Adam(1e-3)
        callbacks = []
    else:
        model = NETWORKS[name](regularizer)
        steps = epochs * math.ceil(len(x_train) / BATCH_SIZE)
        learning_rate = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=steps)
        optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(learning_rate, momentum=0.9))
        ramp = max(1, epochs // 6)

        def ramp_strength(epoch, logs=None):
            # Every strength from 0 to its value over the first epochs, so
            # that units learn something before the penalty weighs on them.
            optimizer.strength_scale.assign(min(1.0, epoch / ramp))

        callbacks = [
            keras.callbacks.LambdaCallback(on_epoch_begin=ramp_strength),
            kerasreg.FreezeSparsity(start_epoch=epochs // 2),
        ]
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        shaped(name, x_train),
        y_train,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        callbacks=callbacks,
        verbose=0,
    )
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))


def inference_times(models, x, repeats):
    """Median seconds per `predict_on_batch(x)`, the models called in turn."""
    for model in models:
        for _ in range(3):
            model.predict_on_batch(x)  # compile, warm caches
    times = [[] for _ in models]
    for _ in range(repeats):
        for model, record in zip(models, times, strict=True):
            start = time.perf_counter()
            model.predict_on_batch(x)
            record.append(time.perf_counter() - start)
    return [statistics.median(record) for record in times]


def run(name, strength, first_conv_factor, epochs, seed, repeats):
    data = load_data(seed)
    _, x_test, _, y_test = data
    x_test = shaped(name, x_test)
    dense = train(name, None, data, epochs, seed)
    sparse = train(name, group_lasso(strength, first_conv_factor), data, epochs, seed)
    small, summary = kerasreg.compact(sparse, return_summary=True)

    same_labels = np.array_equal(
        np.argmax(sparse.predict(x_test, verbose=0), -1),
        np.argmax(small.predict(x_test, verbose=0), -1),
    )
    rows = np.resize(np.arange(len(x_test)), INFERENCE_ROWS)
    dense_time, small_time = inference_times([dense, small], x_test[rows], repeats)
    result = {
        "network": name,
        "strength": strength,
        "dense_accuracy": accuracy(dense, x_test, y_test),
        "sparse_accuracy": accuracy(sparse, x_test, y_test),
        "compact_accuracy": accuracy(small, x_test, y_test),
        "same_labels": same_labels,
        "dense_params": dense.count_params(),
        "compact_params": small.count_params(),
        "dense_ms": 1000 * dense_time,
        "compact_ms": 1000 * small_time,
        "summary": summary,
    }
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", nargs="+", default=["mlp", "conv"], choices=list(NETWORKS))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mlp-strength", type=float, default=0.006)
    parser.add_argument("--conv-strength", type=float, default=0.015)
    parser.add_argument("--first-conv-factor", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    print(f"backend {keras.backend.backend()}, {args.epochs} epochs, seed {args.seed}")
    results = []
    for name in args.networks:
        strength = args.mlp_strength if name == "mlp" else args.conv_strength
        result = run(name, strength, args.first_conv_factor, args.epochs, args.seed, args.repeats)
        results.append(result)
        print(f"\n== {name}: GroupLasso, strength {strength:g} per unit/filter, then compact")
        print(result["summary"])
    print()
    header = (
        f"{'network':<8} {'dense acc':>9} {'sparse acc':>10} {'compact acc':>11} "
        f"{'same labels':>11} {'params':>17} {'ratio':>6} {'inference ms':>15} {'speed-up':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        params = f"{r['dense_params']:,} -> {r['compact_params']:,}"
        times = f"{r['dense_ms']:.2f} -> {r['compact_ms']:.2f}"
        print(
            f"{r['network']:<8} {r['dense_accuracy']:>9.4f} {r['sparse_accuracy']:>10.4f} "
            f"{r['compact_accuracy']:>11.4f} {str(r['same_labels']):>11} {params:>17} "
            f"{r['dense_params'] / r['compact_params']:>5.1f}x {times:>15} "
            f"{r['dense_ms'] / r['compact_ms']:>7.2f}x"
        )


if __name__ == "__main__":
    main()
