"""Benchmark: a coupled group lasso removes whole channels and heads through the graph.

Two networks on scikit-learn's digits (75% train, 25% test, stratified by
the seed):

- `resnet`: the 8x8 images upscaled to 16x16 (each pixel repeated 2x2,
  once in NumPy); stem Conv2D(16, 3x3) + BatchNormalization + ReLU, three
  stages of one basic residual block (two 3x3 convolutions with
  BatchNormalization, `Add`, ReLU) of 16, 32 and 64 channels, the last two
  at stride 2 with a 1x1 projection shortcut; GlobalAveragePooling2D,
  Dense(10). The channels of each stage's residual stream are coupled: the
  stem (or the projection) and the block's second convolution write them,
  through `Add`.
- `transformer`: the 8 rows of a digit as 8 tokens of 8 features, each
  with its one-hot position appended; Dense(64) (whose position rows are a
  learned position embedding); two encoder blocks of
  MultiHeadAttention (8 heads, key_dim 32) + residual + LayerNormalization,
  Dense(512, ReLU) -> Dense(64) + residual + LayerNormalization; mean over
  the tokens, Dense(10). LayerNormalization pins the residual stream, so
  heads and feed-forward units are what can go: with the weights that read
  them they hold 99% of the parameters.

Each network is trained twice with the same seed, data and epochs:

- `dense`: Adam (learning rate 1e-3), no penalty: the baseline;
- `sparse`: `kerasreg.regularize(model, kerasreg.GroupLasso(strength),
  groups="dependency")`: one group per removable coupled channel or head
  (every kernel column and bias that writes it, BatchNormalization's scale
  and shift, the query, key and value slices of a head; for the
  transformer, the heads, `layers=keras.layers.MultiHeadAttention`, get a
  strength of their own: at one strength, feed-forward units go long
  before any head does), under
  `ProximalOptimizer(SGD(momentum=0.9))` with a learning rate
  cosine-decayed from 0.05 (ResNet) or 0.01 (transformer), the strength
  ramped up from 0 over the first sixth of the epochs, then
  `FreezeSparsity` from half of them (zero groups held, survivors trained
  without the penalty's shrinkage); then `kerasreg.compact`.

The script checks that the compacted model predicts what the sparse model
predicts (same labels, logits within 1e-4) and prints, per network and
seed: test accuracy of the dense, sparse and compacted models, parameter
counts, and batch inference time (`predict_on_batch` on 4096 test rows,
median of repeated calls after warm-up, the dense and the compacted model
called in turn in this process), then the means over the seeds. With
`--fine-tune-epochs N`, the compacted model then trains on for N epochs
with Adam (learning rate 1e-3) and no penalty, as the dense one trained,
and its accuracy is the "tuned acc" column (without it, that column is the
compacted model's). Run on any backend:
`KERAS_BACKEND=jax python scripts/bench_structured.py`.
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


def resnet():
    """ResNet-8-like on 16x16x1 images, channels last."""

    def conv_bn(x, filters, size, strides, name, relu=True):
        x = keras.layers.Conv2D(filters, size, strides, padding="same", name=name)(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x

    inputs = keras.Input((16, 16, 1))
    x = conv_bn(inputs, 16, 3, 1, "stem")
    for stage, (filters, strides) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
        shortcut = x
        if strides != 1 or x.shape[-1] != filters:
            shortcut = conv_bn(x, filters, 1, strides, f"stage{stage}_proj", relu=False)
        y = conv_bn(x, filters, 3, strides, f"stage{stage}_conv1")
        y = conv_bn(y, filters, 3, 1, f"stage{stage}_conv2", relu=False)
        x = keras.layers.Add(name=f"stage{stage}_add")([shortcut, y])
        x = keras.layers.ReLU(name=f"stage{stage}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="resnet")


def transformer(d_model=64, heads=8, key_dim=32, ff=512, blocks=2):
    """A post-norm encoder over the 8 rows of a digit as 8 tokens."""
    inputs = keras.Input((8, 16))
    # Tokens carry their one-hot position, so the rows of this kernel that
    # read it are a learned position embedding.
    x = keras.layers.Dense(d_model, name="embed")(inputs)
    for block in range(1, blocks + 1):
        attention = keras.layers.MultiHeadAttention(heads, key_dim, name=f"block{block}_mha")
        x = keras.layers.Add(name=f"block{block}_res1")([x, attention(x, x)])
        x = keras.layers.LayerNormalization(name=f"block{block}_ln1")(x)
        y = keras.layers.Dense(ff, "relu", name=f"block{block}_ff1")(x)
        y = keras.layers.Dense(d_model, name=f"block{block}_ff2")(y)
        x = keras.layers.Add(name=f"block{block}_res2")([x, y])
        x = keras.layers.LayerNormalization(name=f"block{block}_ln2")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="transformer")


NETWORKS = {"resnet": resnet, "transformer": transformer}

# The sparse model's inner optimizer and peak learning rate (cosine-decayed).
# The post-norm transformer did not train with SGD at 0.05 (0.41 test
# accuracy after 24 epochs, seed 0) but did at 0.01 (0.96 after 12).
INNER = {"resnet": ("sgd", 0.05), "transformer": ("sgd", 0.01)}


def shaped(name, x):
    """The flat 64-pixel rows as the network's inputs."""
    if name == "resnet":
        return np.kron(x.reshape(-1, 8, 8, 1), np.ones((1, 2, 2, 1), x.dtype))
    tokens = x.reshape(-1, 8, 8)
    positions = np.broadcast_to(np.eye(8, dtype=x.dtype), tokens.shape)
    return np.concatenate([tokens, positions], axis=-1)


def penalize(model, strength, head_strength):
    """The coupled group lasso on every removable channel; heads at their own strength."""
    if head_strength is None:
        return kerasreg.regularize(model, kerasreg.GroupLasso(strength), groups="dependency")
    heads = keras.layers.MultiHeadAttention
    model = kerasreg.regularize(
        model, kerasreg.GroupLasso(head_strength), groups="dependency", layers=heads
    )
    return kerasreg.regularize(
        model, kerasreg.GroupLasso(strength), groups="dependency", exclude=heads
    )


def train(name, strength, data, epochs, seed, head_strength=None):
    """Dense (`strength=None`) or coupled group lasso, then frozen."""
    x_train, _, y_train, _ = data
    keras.utils.set_random_seed(seed)
    model = NETWORKS[name]()
    if strength is None:
        optimizer = keras.optimizers.Adam(1e-3)
        callbacks = []
    else:
        penalize(model, strength, head_strength)
        inner, learning_rate = INNER[name]
        steps = epochs * math.ceil(len(x_train) / BATCH_SIZE)
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
        if inner == "sgd":
            inner_optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
        else:
            inner_optimizer = keras.optimizers.Adam(schedule)
        optimizer = kerasreg.ProximalOptimizer(inner_optimizer)
        ramp = max(1, epochs // 6)

        def ramp_strength(epoch, logs=None):
            # From 0 to the full strength over the first epochs, so that
            # channels learn something before the penalty weighs on them.
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


def prune_global_l2(model, goal):
    """The DepGraph-style baseline, written here: one step of global L2 ranking.

    The same coupled groups as `kerasreg.ChannelPruning` (the removable
    groups of `kerasreg.model_cost(model)`). Each channel is scored by the
    L2 norm of all its entries (writers, carriers, readers) divided by the
    mean over its group (Torch-Pruning's group-norm importance, mean
    normalization), and the lowest scores across the network go, one at a
    time, until the model costs at most `goal` MACs: the ranking ignores
    what a channel costs. Each group keeps one channel. The pruned
    channels' entries are zeroed and `kerasreg.compact` removes them, so
    the model is physically smaller after each step, as in Torch-Pruning.

    Returns:
        The compacted model.
    """
    cost = kerasreg.model_cost(model)
    counts = [float(n) for n in cost.channels]
    scores = []
    for i, group_cost in enumerate(cost.groups):
        group = group_cost.group
        if not group.removable:
            continue
        total = np.zeros(group.channels)
        for member in group.members:
            value = np.asarray(keras.ops.convert_to_numpy(member.variable.value), "float64")
            axes = tuple(a for a in range(value.ndim) if a != member.axis)
            total += (value**2).sum(axis=axes)[member.indices].sum(axis=1)
        importance = np.sqrt(total)
        importance /= max(importance.mean(), 1e-30)
        scores += [(importance[c], i, c) for c in range(group.channels)]
    pruned = {}
    for _, i, c in sorted(scores):
        if cost.at(counts) <= goal:
            break
        if counts[i] > 1:
            counts[i] -= 1
            pruned.setdefault(i, []).append(c)
    for i, channels in pruned.items():
        for member in cost.groups[i].group.members:
            value = keras.ops.convert_to_numpy(member.variable.value).copy()
            index = [slice(None)] * value.ndim
            index[member.axis] = member.indices[channels].reshape(-1)
            if member.role == "carries" and not member.variable.trainable:
                continue  # moving statistics: the channel is gone with its scale
            value[tuple(index)] = 0
            member.variable.assign(value)
    return kerasreg.compact(model)


def compile_for_digits(model, optimizer):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def train_to_target(name, method, target, data, epochs, seed, importance="l2", round_to=1):
    """`ChannelPruning`, the penalty route or the global L2 baseline to `target` of the MACs.

    Both prune from epoch `epochs // 6` to epoch `epochs // 2` and train on,
    pruned, to the end: `ChannelPruning` on its cubic schedule, turns every
    half epoch; the baseline in 6 equal steps of MACs, the model compacted
    and compiled again (a new Adam) after each.
    """
    x_train, _, y_train, _ = data
    x_train = shaped(name, x_train)
    keras.utils.set_random_seed(seed)
    model = NETWORKS[name]()
    steps_per_epoch = math.ceil(len(x_train) / BATCH_SIZE)
    start = max(1, epochs // 6)
    stop = max(start, epochs // 2)
    if method == "channel-pruning":
        request = kerasreg.ChannelPruning(
            target,
            cost="macs",
            begin_step=start * steps_per_epoch,
            end_step=stop * steps_per_epoch,
            frequency=max(1, steps_per_epoch // 2),
            importance=importance,
            round_to=round_to,
        )
        kerasreg.regularize(model, request, groups="dependency")
        compile_for_digits(model, kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-3)))
        model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
        return model
    if method == "group-lasso-macs":
        return train_penalty_to_target(name, model, target, (x_train, y_train), epochs, start, stop)
    dense_macs = kerasreg.model_cost(model).macs
    step_epochs = np.unique(np.linspace(start, stop, 6).round().astype(int)).tolist()
    compile_for_digits(model, keras.optimizers.Adam(1e-3))
    for epoch in range(epochs):
        if epoch in step_epochs:
            done = (step_epochs.index(epoch) + 1) / len(step_epochs)
            model = prune_global_l2(model, dense_macs * (1 - (1 - target) * done))
            compile_for_digits(model, keras.optimizers.Adam(1e-3))
        model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=1, verbose=0)
    return model


def train_penalty_to_target(name, model, target, data, epochs, start, stop):
    """The penalty route: a MACs-weighted coupled group lasso, steered to `target`.

    `regularize(model, GroupLasso(s), groups="dependency", cost="macs")`
    under the sparse recipe's optimizer (SGD with momentum, cosine decay);
    `TargetSparsity(1 - target, measure="macs")` ramps the strength so that
    the share of the MACs that removed channels take follows a cubic curve
    from `start` to `stop`; `FreezeSparsity(stop + 2, sparsity=1 - target,
    measure="macs")` completes the pattern to the target channel by channel
    and trains the survivors without the penalty's shrinkage.
    """
    x_train, y_train = data
    strength = PENALTY_STRENGTH[name]
    kerasreg.regularize(model, kerasreg.GroupLasso(strength), groups="dependency", cost="macs")
    inner, learning_rate = INNER[name]
    steps = epochs * math.ceil(len(x_train) / BATCH_SIZE)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    compile_for_digits(
        model, kerasreg.ProximalOptimizer(keras.optimizers.SGD(schedule, momentum=0.9))
    )
    callbacks = [
        kerasreg.TargetSparsity(
            1 - target,
            end_epoch=max(stop, start + 1),
            start_epoch=start,
            max_change=1.25,
            measure="macs",
        ),
        kerasreg.FreezeSparsity(min(stop + 2, epochs - 1), sparsity=1 - target, measure="macs"),
    ]
    model.fit(
        x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, callbacks=callbacks, verbose=0
    )
    return model


# The penalty route's starting strength, which TargetSparsity then scales: a
# tenth of the hand-tuned strengths of the group-lasso rows.
PENALTY_STRENGTH = {"resnet": 3e-4, "transformer": 4e-4}


def logits(model, x):
    return np.asarray(model.predict(x, batch_size=512, verbose=0))


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


def fine_tune(model, data, name, epochs, teacher=None):
    """Trains the compacted model on, with no penalty: Adam(1e-3) as the dense one,
    or, with a `teacher`, `kerasreg.Distiller(model, teacher)` (alpha 0.5,
    temperature 2) under Adam cosine-decayed from 1e-3."""
    x_train, _, y_train, _ = data
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if teacher is None:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        trained = model
    else:
        steps = epochs * math.ceil(len(x_train) / BATCH_SIZE)
        schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=steps)
        trained = kerasreg.Distiller(model, teacher, alpha=0.5, temperature=2.0)
        trained.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss)
    trained.fit(shaped(name, x_train), y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)


def run(
    name,
    strength,
    head_strength,
    epochs,
    seed,
    repeats,
    fine_tune_epochs=0,
    method="group-lasso",
    target=None,
    dense=None,
    distill=False,
    importance="l2",
    round_to=1,
    train_samples=None,
):
    data = load_data(seed)
    if train_samples is not None:
        x_train, x_test, y_train, y_test = data
        data = x_train[:train_samples], x_test, y_train[:train_samples], y_test
    _, x_test, _, y_test = data
    x_test = shaped(name, x_test)
    if dense is None:
        dense = train(name, None, data, epochs, seed)
    if method == "group-lasso":
        sparse = train(name, strength, data, epochs, seed, head_strength)
    else:
        sparse = train_to_target(name, method, target, data, epochs, seed, importance, round_to)
    small, summary = kerasreg.compact(sparse, return_summary=True)

    sparse_logits, small_logits = logits(sparse, x_test), logits(small, x_test)
    # The compacted model computes what the sparse model computes.
    np.testing.assert_array_equal(np.argmax(small_logits, -1), np.argmax(sparse_logits, -1))
    np.testing.assert_allclose(small_logits, sparse_logits, rtol=1e-4, atol=1e-4)
    compact_accuracy = float(np.mean(np.argmax(small_logits, -1) == y_test))
    if fine_tune_epochs:
        fine_tune(small, data, name, fine_tune_epochs, dense if distill else None)
    tuned_accuracy = float(np.mean(np.argmax(logits(small, x_test), -1) == y_test))
    rows = np.resize(np.arange(len(x_test)), INFERENCE_ROWS)
    dense_time, small_time = inference_times([dense, small], x_test[rows], repeats)
    return {
        "network": name,
        "seed": seed,
        "dense_accuracy": float(np.mean(np.argmax(logits(dense, x_test), -1) == y_test)),
        "sparse_accuracy": float(np.mean(np.argmax(sparse_logits, -1) == y_test)),
        "compact_accuracy": compact_accuracy,
        "tuned_accuracy": tuned_accuracy,
        "dense": dense,
        "macs_left": kerasreg.model_cost(small).macs / kerasreg.model_cost(dense).macs,
        "heads": heads_left(small),
        "dense_params": dense.count_params(),
        "compact_params": small.count_params(),
        "dense_ms": 1000 * dense_time,
        "compact_ms": 1000 * small_time,
        "summary": summary,
    }


def heads_left(model):
    """Heads per attention layer, as a string (empty for a model without)."""
    return " ".join(
        str(layer.num_heads)
        for layer in model.layers
        if isinstance(layer, keras.layers.MultiHeadAttention)
    )


def row(label, seed, r):
    params = f"{r['dense_params']:,.0f} -> {r['compact_params']:,.0f}"
    times = f"{r['dense_ms']:.2f} -> {r['compact_ms']:.2f}"
    return (
        f"{label:<34} {seed:>4} {r['dense_accuracy']:>9.4f} {r['sparse_accuracy']:>10.4f} "
        f"{r['compact_accuracy']:>11.4f} {r['tuned_accuracy']:>10.4f} "
        f"{r['macs_left']:>9.3f} {r['params_ratio']:>5.1f}x {params:>19} "
        f"{r['speedup']:>7.2f}x {times:>16} {r.get('heads', ''):>6}"
    )


METHODS = ("group-lasso", "channel-pruning", "group-lasso-macs", "global-l2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["group-lasso"],
        choices=METHODS,
        help="group-lasso: the strengths below; channel-pruning: kerasreg.ChannelPruning to "
        "each --targets; group-lasso-macs: the MACs-weighted coupled group lasso steered by "
        "TargetSparsity(measure='macs') to each --targets; global-l2: the DepGraph-style "
        "baseline to each --targets",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        type=float,
        default=[0.5, 0.3],
        help="fractions of the dense MACs for channel-pruning and global-l2",
    )
    parser.add_argument("--resnet-strength", type=float, default=3e-3)
    parser.add_argument("--transformer-strength", type=float, default=4e-3)
    parser.add_argument("--head-strength", type=float, default=6e-3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=0,
        help="epochs of Adam(1e-3) on the compacted model, no penalty (default 0: none)",
    )
    parser.add_argument(
        "--importance",
        default="l2",
        choices=["l2", "taylor"],
        help="ChannelPruning's importance (default l2)",
    )
    parser.add_argument(
        "--round-to",
        type=int,
        default=1,
        help="ChannelPruning's round_to: channels kept per group in multiples of this",
    )
    parser.add_argument(
        "--train-samples",
        type=int,
        default=None,
        help="train on the first N rows of the training split only (default: all; for "
        "smoke tests)",
    )
    parser.add_argument(
        "--distill",
        action="store_true",
        help="fine-tune with kerasreg.Distiller from the dense model (Adam cosine-decayed "
        "from 1e-3) instead of the labels alone",
    )
    args = parser.parse_args()

    print(
        f"backend {keras.backend.backend()}, {args.epochs} epochs, seeds {args.seeds}, "
        f"compacted model fine-tuned for {args.fine_tune_epochs} epochs"
        + (", distilled from the dense one" if args.distill else "")
    )
    results = []
    for name in args.networks:
        strength = getattr(args, f"{name}_strength")
        head_strength = args.head_strength if name == "transformer" else None
        runs = []
        for method in args.methods:
            if method == "group-lasso":
                heads = "" if head_strength is None else f", heads {head_strength:g}"
                runs.append((f"GroupLasso({strength:g}{heads})", method, None))
            else:
                suffix = ""
                if method == "channel-pruning":
                    suffix = f" {args.importance}" + (
                        f" round_to={args.round_to}" if args.round_to > 1 else ""
                    )
                runs += [
                    (f"{method}{suffix} {target:g}", method, target) for target in args.targets
                ]
        for seed in args.seeds:
            dense = None
            for label, method, target in runs:
                r = run(
                    name,
                    strength,
                    head_strength,
                    args.epochs,
                    seed,
                    args.repeats,
                    args.fine_tune_epochs,
                    method=method,
                    target=target,
                    dense=dense,
                    distill=args.distill,
                    importance=args.importance,
                    round_to=args.round_to,
                    train_samples=args.train_samples,
                )
                dense = r.pop("dense")
                r["label"] = f"{name} {label}"
                r["params_ratio"] = r["dense_params"] / r["compact_params"]
                r["speedup"] = r["dense_ms"] / r["compact_ms"]
                results.append(r)
                print(f"\n== {name}, seed {seed}: {label}, compact", flush=True)
                print(r["summary"], flush=True)
    print()
    header = (
        f"{'network, method':<34} {'seed':>4} {'dense acc':>9} {'sparse acc':>10} "
        f"{'compact acc':>11} {'tuned acc':>10} {'MACs left':>9} "
        f"{'fewer':>6} {'params':>19} {'faster':>8} {'inference ms':>16} {'heads':>6}"
    )
    print(header)
    print("-" * len(header))
    for label in dict.fromkeys(r["label"] for r in results):
        mine = [r for r in results if r["label"] == label]
        for r in mine:
            print(row(label, str(r["seed"]), r))
        numbers = [
            key for key in mine[0] if key not in ("network", "seed", "summary", "label", "heads")
        ]
        mean = {key: statistics.mean(r[key] for r in mine) for key in numbers}
        print(row(label, "mean", mean))
    print("compacted predictions equal the sparse model's: True")


if __name__ == "__main__":
    main()
