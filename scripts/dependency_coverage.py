"""How much of each model `kerasreg.dependency_groups` can remove.

For each model: its parameters, the share that sits in a removable group
(a parameter counts when one of the channels it belongs to, as a kernel
row or column or a per-channel weight, can leave the model), the number of
groups, and the largest group's channels and layers. Models come from their
constructors with random weights (no download). Run from the repository
root:

    KERAS_BACKEND=tensorflow python scripts/dependency_coverage.py
    KERAS_BACKEND=tensorflow python scripts/dependency_coverage.py --models ResNet50 BERT
"""

import argparse
import time

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="names (default: all)")
    args = parser.parse_args()
    names = [n for n in MODELS if args.models is None or any(a in n for a in args.models)]
    print(f"backend: {keras.backend.backend()}")
    print("| model | parameters | in removable groups | groups (removable) | analysis (s) |")
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        model = MODELS[name]()
        start = time.perf_counter()
        share, groups = coverage(model)
        elapsed = time.perf_counter() - start
        removable = sum(g.removable for g in groups)
        print(
            f"| {name} | {model.count_params():,} | {share:.1%} | "
            f"{len(groups)} ({removable}) | {elapsed:.1f} |"
        )


if __name__ == "__main__":
    main()
