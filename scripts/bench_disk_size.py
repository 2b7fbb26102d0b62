"""Benchmark: what unstructured sparsity buys on disk, gzip'ed `.keras` files.

A `.keras` file is a zip archive whose members are stored, not compressed
(Keras writes them with `zipfile`'s default, `ZIP_STORED`), and the weights
member is an HDF5 file whose datasets are contiguous and unfiltered: every
float32 weight takes 4 bytes, zero or not. The script prints what is inside
one file to show it. Sparse weights therefore make no file smaller by
themselves; they make it compressible, as long runs of zero bytes. Each
model here is saved with `model.save`, its bytes gzip'ed with Python's
`gzip` module at level 9 (`mtime=0`), and the sizes printed next to the
exact-zero fraction of the weights, counted with `np.count_nonzero`, over
the pruned kernels and over every weight the file holds (biases and
normalization statistics included).

Two models, each dense and pruned to 90%, 95% and 98% of every kernel, all
trained in this process:

- `lenet_300_100` (64-300-100-10, ReLU, `scripts/_digits.py`) on
  scikit-learn's digits (75% train, 25% test, stratified by class), batch
  64, `Adam(1e-3)`; the sparse models with `MagnitudePruning` on every
  kernel under `ProximalOptimizer(Adam(1e-3))` (cubic schedule from step
  10% to 60% of training, mask recomputed every 100 steps, then held), as
  in `scripts/bench_sparsity.py`. Test accuracy is printed.
- `mobilenetv2`: `keras.applications.MobileNetV2(weights=None, classes=10)`
  at a 32x32x3 input (no download; the parameter count does not depend on
  the input size), trained `--steps` steps of batch 32 on generated data
  (normal pixels, random labels) with `Adam(1e-3)`; the sparse models are
  the same network with `kerasreg.regularize(model,
  MagnitudePruning(target, begin_step=0, end_step=steps // 2,
  frequency=steps // 4))` on every kernel (convolutions, depthwise
  convolutions, the classifier) under
  `ProximalOptimizer(Adam(1e-3))`. Generated data says nothing about
  accuracy, and none is printed; it does not matter to the sizes, which
  depend on where the zeros are and on the survivors being float32 values
  with noisy low bits, which a few training steps leave as they are.

Two files per model. The shipped file is the model without its optimizer
(`type(model).from_config(model.get_config())` with the trained weights,
not compiled): architecture and weights, what inference needs. The
checkpoint is `model.save` of the compiled model after training, which also
holds the optimizer's state (Adam's moments, dense even where the weights
are zero, and `MagnitudePruning`'s masks), so it compresses far less. The
ratios are the dense model's gzip size over each sparse model's, for the
same kind of file, measured in this process.

Run on any backend: `KERAS_BACKEND=jax python scripts/bench_disk_size.py`.
On two CPU cores the run takes five minutes or more of CPU time, most of it
tracing or compiling MobileNetV2's training step once per variant (about a
minute each on TensorFlow and JAX); `--models lenet_300_100` leaves it out,
and `--quick` is a smoke run (3 epochs; 2 steps of a narrow MobileNetV2).
"""

import argparse
import gzip
import io
import tempfile
import time
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np

import kerasreg

from _digits import lenet_300_100
from _digits import load_data

GZIP_LEVEL = 9
BATCH_SIZE = 64
APPLICATION_BATCH_SIZE = 32


def gzip_size(data):
    return len(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))


def saved_bytes(model, directory, name):
    path = Path(directory) / f"{name}.keras"
    model.save(path)
    return path.read_bytes()


def without_optimizer(model):
    """The same architecture and weights, not compiled: no optimizer state in its file.

    (`keras.models.model_from_json(model.to_json())` would compile the copy:
    the JSON holds the compile arguments.)
    """
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def zero_fraction(variables):
    values = [keras.ops.convert_to_numpy(v) for v in variables]
    return sum(np.count_nonzero(v == 0) for v in values) / sum(v.size for v in values)


def kernels(model):
    """The weights the sparse models prune: every kernel (depthwise ones included)."""
    return [w for w in model.trainable_weights if w.name == "kernel"]


def measure(model, directory, name):
    shipped = saved_bytes(without_optimizer(model), directory, name)
    checkpoint = saved_bytes(model, directory, f"{name}_checkpoint")
    return {
        "zeros_kernels": zero_fraction(kernels(model)),
        "zeros_all": zero_fraction(model.weights),
        "raw": len(shipped),
        "gzip": gzip_size(shipped),
        "checkpoint_raw": len(checkpoint),
        "checkpoint_gzip": gzip_size(checkpoint),
        "bytes": shipped,
    }


def describe_archive(data):
    """Lines saying how a `.keras` file stores its members and its weights."""
    lines = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            method = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}.get(
                info.compress_type, f"method {info.compress_type}"
            )
            line = f"  {info.filename:<18} {info.file_size:>12,} bytes, {method}"
            if info.filename.endswith(".h5"):
                line += "; " + describe_hdf5(archive.read(info))
            lines.append(line)
    return lines


def describe_hdf5(data):
    """How an HDF5 file stores its datasets: layout, compression filter, bytes."""
    with h5py.File(io.BytesIO(data), "r") as weights:
        datasets = []

        def collect(_, obj):
            if isinstance(obj, h5py.Dataset):
                datasets.append(obj)

        weights.visititems(collect)
        layouts = sorted({"chunked" if d.chunks else "contiguous" for d in datasets})
        filters = sorted({str(d.compression) for d in datasets})
        payload = sum(d.size * d.dtype.itemsize for d in datasets)
        return (
            f"{len(datasets)} HDF5 datasets, {'/'.join(layouts)}, compression "
            f"{'/'.join(filters)}, {payload:,} bytes of values"
        )


def compile_model(model, optimizer, from_logits):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
        steps_per_execution=1 if keras.backend.backend() == "torch" else 11,
    )


def train_lenet(target, data, epochs, seed):
    x_train, x_test, y_train, y_test = data
    keras.utils.set_random_seed(seed)
    steps = epochs * int(np.ceil(len(x_train) / BATCH_SIZE))
    if target is None:
        model = lenet_300_100()
        optimizer = keras.optimizers.Adam(1e-3)
    else:
        model = lenet_300_100(
            lambda: kerasreg.MagnitudePruning(
                target, begin_step=steps // 10, end_step=steps * 6 // 10, frequency=100
            )
        )
        optimizer = kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-3))
    compile_model(model, optimizer, from_logits=True)
    model.fit(x_train, y_train, epochs=epochs, batch_size=BATCH_SIZE, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    return model, accuracy


def train_mobilenet(target, steps, alpha, seed):
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=alpha, weights=None, classes=10
    )
    if target is None:
        optimizer = keras.optimizers.Adam(1e-3)
    else:
        schedule = kerasreg.MagnitudePruning(
            target, begin_step=0, end_step=steps // 2, frequency=max(1, steps // 4)
        )
        kerasreg.regularize(model, schedule)
        optimizer = kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-3))
    compile_model(model, optimizer, from_logits=False)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps * APPLICATION_BATCH_SIZE, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=len(x)).astype("int32")
    model.fit(x, y, epochs=1, batch_size=APPLICATION_BATCH_SIZE, verbose=0)
    return model, None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=200, help="LeNet-300-100 epochs (default 200)"
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="MobileNetV2 training steps (default 20)"
    )
    parser.add_argument(
        "--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier (default 1.0)"
    )
    parser.add_argument(
        "--targets", type=float, nargs="+", default=[0.90, 0.95, 0.98], help="sparsities"
    )
    parser.add_argument("--models", nargs="+", default=["lenet_300_100", "mobilenetv2"])
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 3 epochs; 2 steps of MobileNetV2 at alpha 0.35",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.steps, args.alpha = 3, 2, 0.35
    print(
        f"kerasreg {kerasreg.__version__}, Keras {keras.__version__}, "
        f"{keras.backend.backend()}; gzip level {GZIP_LEVEL}"
    )

    data = load_data(args.seed)
    trainers = {
        "lenet_300_100": lambda target: train_lenet(target, data, args.epochs, args.seed),
        "mobilenetv2": lambda target: train_mobilenet(target, args.steps, args.alpha, args.seed),
    }
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for name in args.models:
            for target in [None] + args.targets:
                start = time.perf_counter()
                model, accuracy = trainers[name](target)
                label = "dense" if target is None else f"{target:.0%}"
                result = measure(model, directory, f"{name}_{label.rstrip('%')}")
                result.update(model=name, variant=label, accuracy=accuracy)
                rows.append(result)
                print(
                    f"{name} {label}: {model.count_params():,} parameters, exact zeros "
                    f"{result['zeros_kernels']:.2%} of the kernels, {result['zeros_all']:.2%} "
                    f"of all weights; .keras {result['raw']:,} bytes, gzip "
                    f"{result['gzip']:,} ({time.perf_counter() - start:.1f} s)",
                    flush=True,
                )
                if target is None:
                    print(f"inside the dense {name} .keras file:")
                    print("\n".join(describe_archive(result["bytes"])), flush=True)

    print(
        f"\nshipped file: the model without optimizer; checkpoint: model.save after fit "
        f"(optimizer state included); gzip level {GZIP_LEVEL}; ratio = dense gzip / this gzip"
    )
    header = (
        f"{'model':<14}{'variant':>8}{'zeros, kernels':>16}{'zeros, all':>12}"
        f"{'.keras bytes':>14}{'gzip bytes':>12}{'ratio':>8}"
        f"{'checkpoint gzip':>17}{'ratio':>8}{'accuracy':>10}"
    )
    print(header)
    print("-" * len(header))
    dense = {r["model"]: r for r in rows if r["variant"] == "dense"}
    for r in rows:
        base = dense[r["model"]]
        accuracy = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        print(
            f"{r['model']:<14}{r['variant']:>8}{r['zeros_kernels']:>16.2%}{r['zeros_all']:>12.2%}"
            f"{r['raw']:>14,}{r['gzip']:>12,}{base['gzip'] / r['gzip']:>7.2f}x"
            f"{r['checkpoint_gzip']:>17,}{base['checkpoint_gzip'] / r['checkpoint_gzip']:>7.2f}x"
            f"{accuracy:>10}"
        )


if __name__ == "__main__":
    main()
