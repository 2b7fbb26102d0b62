"""Benchmark: one-shot pruning of trained models, magnitude against Wanda and SparseGPT.

`kerasreg.oneshot_prune` prunes a trained model from a little calibration
data, with no training step. Two models, trained in this process from
random weights (nothing is downloaded; the data ships with Python and
scikit-learn):

- `lm`: a small GPT-2-style causal language model,
  `keras_hub.models.GPT2Backbone(vocabulary_size=256, num_layers=2,
  num_heads=4, hidden_dim=128, intermediate_dim=512,
  max_sequence_length=128, dropout=0)` under `GPT2CausalLM(preprocessor=None)`,
  on byte-level tokens (the UTF-8 bytes, ids 0 to 255) of Python's own
  standard library: the training stream is the source of the modules in
  `TRAIN_MODULES`, the held-out stream that of `TEST_MODULES` (files never
  trained on), each list sorted and its files concatenated in order, read
  where `importlib.util.find_spec` finds them (the text, and so the figures,
  depend on the Python version: they were made with Python 3.11). Trained
  `--lm-steps` steps of 32 random windows of the training stream with Adam
  (learning rate warmed up over the first 5% of the steps to 4e-3, then
  cosine-decayed to 0). Held-out perplexity is the exponential of the mean
  next-token cross-entropy over `--eval-windows` windows of
  `--sequence-length` tokens spread evenly over the held-out stream, every
  position of each window predicted (the first from one token of context),
  the same windows for the dense and the pruned models; uniform guessing
  scores 256, a unigram model of the training bytes is printed next to it.
  Each method prunes every `Dense` and `EinsumDense` kernel of the
  transformer blocks (attention projections and feed-forward; the tied
  token embedding is no such layer) at 50% and 70% unstructured and 2:4,
  from `--num-samples` calibration windows of `--sequence-length` tokens
  taken evenly from the training stream (the stream itself is passed to
  `oneshot_prune`, which cuts the windows).
- `cnn`: the ResNet-8-like network of `scripts/bench_structured.py` (16x16
  upscaled digits, three residual stages, BatchNormalization, 10 logits)
  on scikit-learn's digits (75% train, 25% test, stratified by the seed),
  trained `--cnn-epochs` epochs with Adam (1e-3) as that script trains its
  dense baseline (24 epochs, as there: with 21 steps an epoch,
  BatchNormalization's moving statistics need them; after 16, the dense
  model scored 0.76 in inference mode and 1.00 with batch statistics);
  every convolution (the final classifier `logits` left
  out) pruned at 50%, 60%, 70% and 80% unstructured, from the first
  `--num-samples` images of the training split. Test accuracy is printed
  next to the dense model's.

Every pruning starts from the trained weights (restored with
`set_weights`) and is called with `keep_pattern=False`. For each, the
tables give the figure of merit, its ratio to the dense model's (pruned
perplexity over dense, for the LM), the fraction of exact zeros over the
pruned kernels, the mean over layers of the report's relative
reconstruction error, the wall time of the `oneshot_prune` call, and its
peak memory: the peak of `tracemalloc` over the call, which counts the
allocations Python and NumPy make (the float64 Hessians, the input rows
converted to NumPy) and not the backend's tensors (the activations). The
two are measured in separate calls from the same weights, so that the
timing does not pay for the tracing; before the first, one untimed call
lets the backend compile its eager operations. Where an ordering the
papers report does not hold (Wanda and SparseGPT below magnitude, most at
70% and 2:4; for the CNN, no lower accuracy than magnitude), the script
says so; it does not stop.

Full run, the figures published (seven minutes on two busy CPU cores,
four and a half of them training the LM):
`KERAS_BACKEND=jax python scripts/bench_oneshot.py`. It runs on any
backend; `--quick` is a smoke run of well under a minute (a tiny LM, one
CNN epoch), `--skip-lm` and `--skip-cnn` leave a model out.
"""

import argparse
import importlib.util
import sys
import time
import tracemalloc

import keras
import numpy as np
from bench_structured import shaped
from bench_structured import train as train_cnn

import kerasreg

from _digits import load_data

METHODS = ("magnitude", "wanda", "sparsegpt")
# Label, sparsity, structure.
LM_SETTINGS = (("50%", 0.5, None), ("70%", 0.7, None), ("2:4", None, (2, 4)))
CNN_SPARSITIES = (0.5, 0.6, 0.7, 0.8)
LM_BATCH_SIZE = 32
LM_LEARNING_RATE = 4e-3
UNIFORM_PERPLEXITY = 256.0
MEMORY = "peak MiB: tracemalloc's peak over the call (Python and NumPy, not backend tensors)"

TRAIN_MODULES = tuple(
    sorted(
        [
            "argparse",
            "ast",
            "calendar",
            "configparser",
            "csv",
            "dataclasses",
            "difflib",
            "enum",
            "fractions",
            "functools",
            "gettext",
            "heapq",
            "inspect",
            "ipaddress",
            "pprint",
            "random",
            "shutil",
            "statistics",
            "string",
            "subprocess",
            "tarfile",
            "tempfile",
            "textwrap",
            "threading",
            "tokenize",
            "typing",
            "uuid",
        ]
    )
)
TEST_MODULES = tuple(
    sorted(
        [
            "bisect",
            "fnmatch",
            "ftplib",
            "glob",
            "netrc",
            "plistlib",
            "sched",
            "selectors",
            "shlex",
            "smtplib",
            "socketserver",
        ]
    )
)

# The LM's size: the published run, and --quick.
LM_FULL = {"num_layers": 2, "num_heads": 4, "hidden_dim": 128, "intermediate_dim": 512}
LM_QUICK = {"num_layers": 1, "num_heads": 2, "hidden_dim": 32, "intermediate_dim": 64}


def token_stream(modules):
    """The source files of `modules`, concatenated, as UTF-8 byte ids (int32)."""
    chunks = []
    for name in modules:
        # find_spec locates the file without importing (running) the module.
        with open(importlib.util.find_spec(name).origin, "rb") as file:
            chunks.append(file.read())
    return np.frombuffer(b"".join(chunks), dtype=np.uint8).astype("int32")


def lm_inputs(windows):
    """Windows of `length + 1` tokens as (GPT-2 inputs, next-token targets)."""
    x = windows[:, :-1]
    return {"token_ids": x, "padding_mask": np.ones(x.shape, dtype=bool)}, windows[:, 1:]


def random_windows(tokens, length, count, rng):
    starts = rng.integers(0, tokens.size - length, count)
    return np.stack([tokens[s : s + length] for s in starts])


def even_windows(tokens, length, count):
    """At most `count` windows of `length` tokens, spread evenly, not overlapping."""
    count = min(count, tokens.size // length)
    starts = np.linspace(0, tokens.size - length, count).astype(np.int64)
    return np.stack([tokens[s : s + length] for s in starts])


def build_lm(sizes, sequence_length):
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=256,
        max_sequence_length=sequence_length,
        dropout=0.0,
        **sizes,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def train_lm(sizes, tokens, steps, sequence_length, seed):
    """Adam on random windows of the training stream, warmed up then cosine-decayed."""
    keras.utils.set_random_seed(seed)
    lm = build_lm(sizes, sequence_length)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=steps,
        warmup_target=LM_LEARNING_RATE,
        warmup_steps=max(1, steps // 20),
    )
    lm.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
    )
    rng = np.random.default_rng(seed)
    windows = random_windows(tokens, sequence_length + 1, steps * LM_BATCH_SIZE, rng)
    x, y = lm_inputs(windows)
    lm.fit(x, y, batch_size=LM_BATCH_SIZE, epochs=1, shuffle=False, verbose=0)
    return lm


def perplexity(lm, windows):
    """exp of the mean next-token cross-entropy (nats) over every position of `windows`."""
    x, y = lm_inputs(windows)
    logits = np.asarray(lm.predict(x, batch_size=64, verbose=0), dtype=np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_z = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))
    picked = np.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    return float(np.exp(np.mean(log_z - picked)))


def unigram_perplexity(train, test):
    """The held-out perplexity of byte frequencies of the training stream (add-one)."""
    counts = np.bincount(train, minlength=256) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(np.exp(-np.mean(log_p[test])))


def prune(model, weights, data, method, **options):
    """One `oneshot_prune` traced for its peak memory, one timed, both from `weights`.

    Returns:
        `(report, seconds, peak MiB)`; the model is left pruned.
    """
    model.set_weights(weights)
    tracemalloc.start()
    try:
        kerasreg.oneshot_prune(model, data, method=method, keep_pattern=False, **options)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    model.set_weights(weights)
    start = time.perf_counter()
    report = kerasreg.oneshot_prune(model, data, method=method, keep_pattern=False, **options)
    seconds = time.perf_counter() - start
    return report, seconds, peak / 2**20


def mean_error(report):
    errors = [layer.error for layer in report if layer.error is not None]
    return float(np.mean(errors)) if errors else float("nan")


def header(figure, extra=""):
    line = (
        f"{'model':<5} {'setting':<7} {'method':<9} {figure:>12} {'ratio':>7} {'zeros':>7} "
        f"{'mean err':>8} {'prune s':>8} {'peak MiB':>8}{extra}"
    )
    return f"{line}\n{'-' * len(line)}"


def row(model, setting, method, value, ratio, zeros="-", error="-", seconds="-", peak="-"):
    return (
        f"{model:<5} {setting:<7} {method:<9} {value:>12.4f} {ratio:>7.3f} {zeros:>7} "
        f"{error:>8} {seconds:>8} {peak:>8}"
    )


def measured_row(model, setting, method, value, ratio, report, seconds, peak):
    return row(
        model,
        setting,
        method,
        value,
        ratio,
        f"{report.sparsity:.2%}",
        f"{mean_error(report):.4f}",
        f"{seconds:.2f}",
        f"{peak:.1f}",
    )


def run_lm(args):
    sizes = LM_QUICK if args.quick else LM_FULL
    length = args.sequence_length
    train, test = token_stream(TRAIN_MODULES), token_stream(TEST_MODULES)
    python = ".".join(map(str, sys.version_info[:2]))
    print(
        f"\n== lm: GPT-2 {sizes}, bytes of Python {python}'s "
        f"standard library: {train.size:,} training tokens ({len(TRAIN_MODULES)} modules), "
        f"{test.size:,} held-out ({len(TEST_MODULES)} other modules)",
        flush=True,
    )
    start = time.perf_counter()
    lm = train_lm(sizes, train, args.lm_steps, length, args.seed)
    train_seconds = time.perf_counter() - start
    print(
        f"trained {args.lm_steps} steps of {LM_BATCH_SIZE} x {length} tokens in "
        f"{train_seconds:.0f} s; {lm.count_params():,} parameters",
        flush=True,
    )
    windows = even_windows(test, length + 1, args.eval_windows)
    dense = perplexity(lm, windows)
    print(
        f"held-out perplexity over {len(windows)} windows of {length} tokens: dense "
        f"{dense:.4f}, unigram {unigram_perplexity(train, test):.4f}, uniform "
        f"{UNIFORM_PERPLEXITY:.0f}",
        flush=True,
    )
    weights = lm.get_weights()
    options = {"sequence_length": length, "num_samples": args.num_samples}
    # One untimed call, so that the first row does not pay for compiling the
    # backend's eager operations.
    kerasreg.oneshot_prune(lm, train, method="magnitude", keep_pattern=False, **options)
    results = {}
    start = time.perf_counter()
    for setting, sparsity, structure in LM_SETTINGS:
        for method in METHODS:
            report, seconds, peak = prune(
                lm, weights, train, method, sparsity=sparsity, structure=structure, **options
            )
            results[setting, method] = (perplexity(lm, windows), report, seconds, peak)
            if (setting, method) == ("2:4", "sparsegpt") and not args.quick:
                print(f"\nthe report of sparsegpt 2:4:\n{report}", flush=True)
    prune_seconds = time.perf_counter() - start
    lm.set_weights(weights)
    if args.quantize:
        quantized_rows(sizes, weights, train, windows, dense, options, args)
    print(
        f"\nlm: {args.num_samples} calibration windows of {length} tokens from the training "
        f"stream; {MEMORY}"
    )
    print(header("perplexity"))
    print(row("lm", "dense", "-", dense, 1.0))
    for (setting, method), (value, report, seconds, peak) in results.items():
        print(measured_row("lm", setting, method, value, value / dense, report, seconds, peak))
    check_lm(results)
    return train_seconds, prune_seconds


class ByteTokenizer:
    """The LM's tokenizer, for `GPTQConfig`: text to its UTF-8 bytes."""

    def tokenize(self, text):
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype("int32")


def kept_zeros(lm, zeros):
    """Of the pruned entries of each `Dense` kernel, the fraction still 0 after quantizing.

    A quantized layer's kernel is read back through its own call: its output
    on the identity matrix, less its bias, with its activation set aside.
    """
    kept = total = 0
    for layer in lm._flatten_layers():
        if type(layer) is not keras.layers.Dense or layer.path not in zeros:
            continue
        activation, layer.activation = layer.activation, keras.activations.linear
        try:
            eye = np.eye(zeros[layer.path].shape[0], dtype="float32")
            kernel = keras.ops.convert_to_numpy(layer(eye)) - keras.ops.convert_to_numpy(layer.bias)
        finally:
            layer.activation = activation
        mask = zeros[layer.path]
        kept += int(np.sum(kernel[mask] == 0))
        total += int(mask.sum())
    return kept / total


def quantized_rows(sizes, weights, train, windows, dense, options, args):
    """The SparseGPT 2:4 model through Keras' int8 and GPTQ (4-bit) quantization."""
    print(
        "\nlm, sparsegpt 2:4, then quantized by Keras (`model.quantize`); zeros kept: of the "
        "pruned entries of the feed-forward Dense kernels, those that are still 0 as the "
        "quantized layer computes"
    )
    print(f"{'quantization':<14} {'perplexity':>10} {'ratio':>7} {'zeros kept':>10}")
    for mode in ("none", "int8", "gptq"):
        lm = build_lm(sizes, args.sequence_length)
        lm.set_weights(weights)
        kerasreg.oneshot_prune(lm, train, structure=(2, 4), keep_pattern=False, **options)
        zeros = {
            layer.path: keras.ops.convert_to_numpy(layer.kernel) == 0
            for layer in lm._flatten_layers()
            if type(layer) is keras.layers.Dense
        }
        if mode == "int8":
            lm.quantize("int8")
        elif mode == "gptq":
            text = bytes(train[: 64 * args.sequence_length].astype(np.uint8)).decode(
                "utf-8", "ignore"
            )
            config = keras.quantizers.GPTQConfig(
                dataset=[text],
                tokenizer=ByteTokenizer(),
                weight_bits=4,
                num_samples=32,
                sequence_length=args.sequence_length,
                group_size=128,
            )
            lm.quantize("gptq", config=config)
        value = perplexity(lm, windows)
        label = {"none": "none (float32)", "gptq": "gptq 4-bit"}.get(mode, mode)
        print(f"{label:<14} {value:>10.4f} {value / dense:>7.3f} {kept_zeros(lm, zeros):>10.2%}")


def check_lm(results):
    """Prints where Wanda or SparseGPT is not below magnitude, most at 70% and 2:4."""
    advantage = {
        key: results[key[0], "magnitude"][0] / value[0]
        for key, value in results.items()
        if key[1] != "magnitude"
    }
    misses = []
    for (setting, method), gain in advantage.items():
        if gain <= 1.0:
            misses.append(
                f"{method} at {setting}: perplexity {results[setting, method][0]:.4f}, "
                f"not below magnitude's {results[setting, 'magnitude'][0]:.4f}"
            )
    for method in ("wanda", "sparsegpt"):
        for setting in ("70%", "2:4"):
            if advantage[setting, method] <= advantage["50%", method]:
                misses.append(
                    f"{method}: its gain over magnitude (magnitude's perplexity over its own) "
                    f"is {advantage[setting, method]:.3f}x at {setting}, not more than "
                    f"{advantage['50%', method]:.3f}x at 50%"
                )
    gains = ", ".join(f"{m} {s} {g:.2f}x" for (s, m), g in advantage.items())
    print(f"magnitude's perplexity over each method's: {gains}")
    if misses:
        for miss in misses:
            print(f"ordering does not hold: {miss}")
    else:
        print("ordering holds: wanda and sparsegpt below magnitude, most at 70% and 2:4")


def reestimate_batch_norm(model, images):
    """Sets each BatchNormalization layer's moving statistics to those of `images`.

    One forward pass in training mode with momentum 0: every layer's moving
    mean and variance become the batch's, computed through the layers before
    it (pruned) in the same pass.
    """
    layers = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def run_cnn(args):
    data = load_data(args.seed)
    x_train, x_test, _, y_test = data
    calibration, x_test = shaped("resnet", x_train), shaped("resnet", x_test)
    print(
        f"\n== cnn: resnet on digits, {len(x_train)} training and {len(x_test)} test images",
        flush=True,
    )
    start = time.perf_counter()
    model = train_cnn("resnet", None, data, args.cnn_epochs, args.seed)
    train_seconds = time.perf_counter() - start

    def accuracy():
        logits = model.predict(x_test, batch_size=512, verbose=0)
        return float(np.mean(np.argmax(logits, axis=-1) == y_test))

    dense = accuracy()
    print(
        f"trained {args.cnn_epochs} epochs in {train_seconds:.0f} s; test accuracy {dense:.4f}",
        flush=True,
    )
    weights = model.get_weights()
    options = {"exclude": ["logits"], "num_samples": args.num_samples}
    # Untimed, as for the LM.
    kerasreg.oneshot_prune(model, calibration, method="magnitude", keep_pattern=False, **options)
    results = {}
    start = time.perf_counter()
    rebatched = {}
    for sparsity in CNN_SPARSITIES:
        for method in METHODS:
            report, seconds, peak = prune(
                model, weights, calibration, method, sparsity=sparsity, **options
            )
            results[f"{sparsity:.0%}", method] = (accuracy(), report, seconds, peak)
            reestimate_batch_norm(model, calibration[: args.num_samples])
            rebatched[f"{sparsity:.0%}", method] = accuracy()
    prune_seconds = time.perf_counter() - start
    model.set_weights(weights)
    print(
        f"\ncnn: {args.num_samples} calibration images from the training split, every "
        f"convolution pruned (logits left out); {MEMORY}"
    )
    print(header("accuracy", f" {'BN re-est.':>10}"))
    print(row("cnn", "dense", "-", dense, 1.0))
    for (setting, method), (value, report, seconds, peak) in results.items():
        line = measured_row("cnn", setting, method, value, value / dense, report, seconds, peak)
        print(f"{line} {rebatched[setting, method]:>10.4f}")
    print(
        "BN re-est.: the accuracy once every BatchNormalization layer's moving mean and "
        "variance are those of the pruned network on the calibration images (one pass in "
        "training mode with momentum 0), no weight trained"
    )
    for (setting, method), value in rebatched.items():
        if method != "magnitude" and value < rebatched[setting, "magnitude"]:
            print(
                f"ordering does not hold after BN re-estimation: {method} at {setting}: "
                f"{value:.4f} below magnitude's {rebatched[setting, 'magnitude']:.4f}"
            )
    misses = [
        f"{method} at {setting}: accuracy {value:.4f} below magnitude's "
        f"{results[setting, 'magnitude'][0]:.4f}"
        for (setting, method), (value, *_) in results.items()
        if method != "magnitude" and value < results[setting, "magnitude"][0]
    ]
    for miss in misses:
        print(f"ordering does not hold: {miss}")
    if not misses:
        print("ordering holds: wanda and sparsegpt at or above magnitude's accuracy")
    return train_seconds, prune_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm-steps", type=int, default=None, help="default 1000 (--quick: 30)")
    parser.add_argument("--cnn-epochs", type=int, default=None, help="default 24 (--quick: 1)")
    parser.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="calibration windows (LM) and images (CNN); default 128 (--quick: 64)",
    )
    parser.add_argument(
        "--sequence-length", type=int, default=None, help="default 128 (--quick: 32)"
    )
    parser.add_argument(
        "--eval-windows", type=int, default=None, help="held-out windows; default 256 (--quick: 32)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: a tiny LM, few steps, one CNN epoch"
    )
    parser.add_argument("--skip-lm", action="store_true")
    parser.add_argument(
        "--quantize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="quantize the SparseGPT 2:4 LM with Keras' int8 and GPTQ (default: on)",
    )
    parser.add_argument("--skip-cnn", action="store_true")
    args = parser.parse_args()
    defaults = {
        "lm_steps": (1000, 30),
        "cnn_epochs": (24, 1),
        "num_samples": (128, 64),
        "sequence_length": (128, 32),
        "eval_windows": (256, 32),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)

    print(
        f"backend {keras.backend.backend()}, seed {args.seed}, methods {', '.join(METHODS)}"
        + (", --quick: barely trained models, the figures mean nothing" if args.quick else "")
    )
    phases = {}
    if not args.skip_lm:
        phases["lm train"], phases["lm prune + evaluate"] = run_lm(args)
    if not args.skip_cnn:
        phases["cnn train"], phases["cnn prune + evaluate"] = run_cnn(args)
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()))


if __name__ == "__main__":
    main()
