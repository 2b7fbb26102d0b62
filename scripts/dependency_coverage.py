"""How much of each model `kerasreg.dependency_groups` can remove, and `compact` does.

For each model: its parameters, the share that sits in a removable group
(a parameter counts when one of the channels it belongs to, as a kernel
row or column or a per-channel weight, can leave the model) and the number
of groups. Then half of the channels of every removable group (every other
one) are cut by hand, by zeroing the weights that read them, and the model
is compacted: the table gives the parameters after, and the largest
difference between the predictions of the zeroed model and of its
compacted version, relative to the largest prediction. Models come from
their constructors with random weights (no download). Run from the
repository root:

    KERAS_BACKEND=tensorflow python scripts/dependency_coverage.py
    KERAS_BACKEND=tensorflow python scripts/dependency_coverage.py --models ResNet50 BERT
"""

import argparse
import time
import warnings

import keras
import numpy as np

import kerasreg


def _applications(name):
    def build():
        return getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)

    return build


def _bert():
    import keras_hub

    return keras_hub.models.BertBackbone(
        vocabulary_size=1000,
        num_layers=2,
        num_heads=4,
        hidden_dim=64,
        intermediate_dim=128,
        max_sequence_length=32,
    )


def _vit():
    import keras_hub

    return keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=2,
        num_heads=4,
        hidden_dim=64,
        mlp_dim=128,
    )


MODELS = {
    name: _applications(name)
    for name in (
        "ResNet50",
        "ResNet50V2",
        "MobileNetV2",
        "MobileNetV3Small",
        "EfficientNetB0",
        "DenseNet121",
        "ConvNeXtTiny",
    )
}
MODELS["BERT (KerasHub, 2 layers)"] = _bert
MODELS["ViT (KerasHub, 2 layers)"] = _vit


def coverage(model):
    """`(share of parameters in removable groups, groups, removable groups)`."""
    groups = kerasreg.dependency_groups(model)
    masks = {id(v): np.zeros(tuple(v.shape), bool) for v in model.weights}
    for group in groups:
        if not group.removable:
            continue
        for member in group.members:
            mask = masks[id(member.variable)]
            index = [slice(None)] * mask.ndim
            index[member.axis] = np.unique(member.indices)
            mask[tuple(index)] = True
    total = sum(m.size for m in masks.values())
    covered = sum(int(m.sum()) for m in masks.values())
    return covered / total, groups


def _inputs(model, rng):
    """A batch of two for `model`: images in [0, 255], or token ids."""
    if isinstance(model.input, dict):
        shape = (2, 16)
        return {
            "token_ids": rng.integers(0, 1000, shape).astype("int32"),
            "segment_ids": np.zeros(shape, "int32"),
            "padding_mask": np.ones(shape, "int32"),
        }
    shape = (2,) + tuple(model.input.shape[1:])
    return rng.uniform(0.0, 255.0, shape).astype("float32")


def _predictions(model, x):
    outputs = model.predict(x, verbose=0)
    flat = keras.tree.flatten(outputs)
    return np.concatenate([np.ravel(np.asarray(o, "float64")) for o in flat])


def cut_half(groups):
    """Zeroes the readers of every other channel of every removable group."""
    for group in groups:
        if not group.removable:
            continue
        channels = np.arange(0, group.channels, 2)
        for member in group.members:
            if member.role != "reads":
                continue
            values = np.array(keras.ops.convert_to_numpy(member.variable.value))
            index = [slice(None)] * values.ndim
            index[member.axis] = member.indices[channels].ravel()
            values[tuple(index)] = 0.0
            member.variable.assign(values)


def compaction(model, groups, seed=0):
    """`(parameters after, relative prediction difference)` once half is cut."""
    cut_half(groups)
    x = _inputs(model, np.random.default_rng(seed))
    expected = _predictions(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what stays, and why, is in the warnings
        small = kerasreg.compact(model)
    difference = np.max(np.abs(_predictions(small, x) - expected))
    return small.count_params(), difference / max(1.0, np.max(np.abs(expected)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="names (default: all)")
    args = parser.parse_args()
    names = [n for n in MODELS if args.models is None or any(a in n for a in args.models)]
    print(f"backend: {keras.backend.backend()}")
    print(
        "| model | parameters | in removable groups | groups (removable) | analysis (s) "
        "| half cut: parameters after compact | max prediction difference |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        model = MODELS[name]()
        start = time.perf_counter()
        share, groups = coverage(model)
        elapsed = time.perf_counter() - start
        removable = sum(g.removable for g in groups)
        try:
            after, difference = compaction(model, groups)
            compacted = f"{after:,} ({model.count_params() / after:.2f}x fewer) | {difference:.1e}"
        except kerasreg.InvalidArgumentError as error:
            compacted = f"compact refuses: {str(error).split(';')[-1].split(':')[0].strip()} | -"
        print(
            f"| {name} | {model.count_params():,} | {share:.1%} | "
            f"{len(groups)} ({removable}) | {elapsed:.1f} | {compacted} |"
        )


if __name__ == "__main__":
    main()
