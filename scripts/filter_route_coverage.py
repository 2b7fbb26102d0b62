"""How far `kerasreg.compact` shrinks keras.applications models on the filter route.

The filter route: every other output filter of every convolution and Dense
layer (but the classifier) zeroed, biases untouched, as
`kerasreg.MagnitudePruning(0.5, group_axis=-1)` leaves a model
(tests/filter_route.py). Each model is built from its constructor with
random weights (no download), 32x32x3 inputs, 10 classes and logits out,
in two normalization states: "as built" (zeroed filters stay zero) and
"trained-like" (seeded random normalization statistics: zeroed filters
become constant channels, which the residual additions carry). Then
`small, summary = compact(model, return_summary=True)`, and the table
gives the parameters before and after, their ratio against the target,
whether the two models predict the same on a seeded batch of 4, the
largest difference relative to the largest output, compact's warnings and
its time. The targets and the Torch-Pruning figures beside them are data in
tests/filter_route.py, which the suite shares. Run from the repository root:

    KERAS_BACKEND=tensorflow python scripts/filter_route_coverage.py
    KERAS_BACKEND=tensorflow python scripts/filter_route_coverage.py --models ResNet50 --markdown
    KERAS_BACKEND=tensorflow python scripts/filter_route_coverage.py --smoke
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def smoke_model():
    """A tiny ResNet-like model: BN, an Add, a depthwise convolution, a squeeze-excitation gate."""
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.Conv2D(8, 1, name="expand")(x)
    y = keras.layers.BatchNormalization(name="expand_bn")(y)
    y = keras.layers.ReLU(name="expand_relu")(y)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(y)
    y = keras.layers.BatchNormalization(name="depthwise_bn")(y)
    y = keras.layers.ReLU(name="depthwise_relu")(y)
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(y)
    gate = keras.layers.Conv2D(4, 1, activation="relu", name="se_reduce")(gate)
    gate = keras.layers.Conv2D(8, 1, activation="sigmoid", name="se_expand")(gate)
    y = keras.layers.Multiply(name="se_gate")([y, gate])
    y = keras.layers.Conv2D(8, 1, name="project")(y)
    y = keras.layers.BatchNormalization(name="project_bn")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(6, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="smoke")


def run(build, state, seed=0, exact=True):
    """Zeroes, compacts and compares one model in one normalization state.

    Returns:
        A dict: `params`, `kept_params`, `ratio`, `equal`, `difference`
        (relative to the largest output), `warnings` (compact's) and
        `seconds` (compact's time).
    """
    import kerasreg
    from tests import filter_route

    model = build()
    filter_route.set_normalization_state(model, state, seed=seed)
    filter_route.zero_every_other_filter(model)
    x = filter_route.inputs_for(model, seed=seed)
    expected = filter_route.predictions(model, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        small, summary = kerasreg.compact(model, return_summary=True, exact=exact)
        seconds = time.perf_counter() - start
    equal, difference = filter_route.same_predictions(expected, filter_route.predictions(small, x))
    params, kept = model.count_params(), small.count_params()
    return {
        "params": params,
        "kept_params": kept,
        "ratio": params / kept,
        "equal": equal,
        "difference": difference,
        "warnings": sum(str(w.message).startswith("compact()") for w in caught),
        "seconds": seconds,
        "summary": summary,
    }


COLUMNS = (
    "model",
    "BN state",
    "params before",
    "after",
    "ratio",
    "target",
    "target met",
    "Torch-Pruning",
    "equal predictions",
    "max rel. diff",
    "warnings",
    "compact (s)",
)


def _cells(name, state, row):
    from tests import filter_route

    target, peer = filter_route.TARGETS.get(name), filter_route.PEERS.get(name)
    return (
        name,
        state,
        f"{row['params']:,}",
        f"{row['kept_params']:,}",
        f"{row['ratio']:.2f}x",
        "-" if target is None else f"{target:.2f}x",
        "-" if target is None else ("yes" if row["ratio"] >= target else "no"),
        "-" if peer is None else f"{peer:.2f}x",
        str(row["equal"]),
        f"{row['difference']:.1e}",
        str(row["warnings"]),
        f"{row['seconds']:.1f}",
    )


def _print_row(cells, markdown, widths):
    if markdown:
        print("| " + " | ".join(cells) + " |")
    else:
        aligned = [c.ljust(w) for c, w in zip(cells[:2], widths, strict=False)]
        aligned += [c.rjust(w) for c, w in zip(cells[2:], widths[2:], strict=True)]
        print("  ".join(aligned))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="names (default: all)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--smoke", action="store_true", help="a tiny ResNet-like model only")
    parser.add_argument("--seed", type=int, default=0, help="normalization states and batch")
    parser.add_argument(
        "--inexact",
        action="store_true",
        help="compact(exact=False): cut through LayerNormalization too (predictions change)",
    )
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import keras

    from tests import filter_route

    targets = filter_route.TARGETS
    if args.smoke:
        models = {"smoke": smoke_model}
    else:
        unknown = set(args.models or ()) - set(targets)
        if unknown:
            parser.error(f"unknown models {sorted(unknown)}; choose from {list(targets)}")
        names = args.models or list(targets)
        models = {name: (lambda name=name: filter_route.application(name)) for name in names}

    import kerasreg

    print(f"backend: {keras.backend.backend()}, keras {keras.__version__}")
    print(f"kerasreg: {Path(kerasreg.__file__).parent}")
    print(f"targets: {filter_route.TARGETS_SOURCE}")
    print(f"Torch-Pruning: {filter_route.PEERS_SOURCE}")
    widths = [16, 12, 13, 12, 6, 6, 10, 13, 17, 13, 8, 11]
    if args.markdown:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + " --- |" * len(COLUMNS))
    else:
        _print_row(COLUMNS, False, widths)
    failures = 0
    for name, build in models.items():
        for state in filter_route.BN_STATES:
            try:
                row = run(build, state, seed=args.seed, exact=not args.inexact)
            except Exception as error:  # a crash is a finding: the row says which
                failures += 1
                print(f"{name} {state}: {type(error).__name__}: {error}")
                continue
            _print_row(_cells(name, state, row), args.markdown, widths)
            sys.stdout.flush()
    if failures:
        sys.exit(f"compact failed on {failures} model(s) and state(s)")


if __name__ == "__main__":
    main()
