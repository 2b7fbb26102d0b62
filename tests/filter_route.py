"""The "filter route": every other output filter of a model zeroed, for `compact`.

What `kerasreg.MagnitudePruning(0.5, group_axis=-1)` leaves, made by hand and
without training: half of the output filters (units) of every convolution
and Dense layer have an all-zero kernel column, biases untouched. With the
normalization statistics as built, a zeroed filter gives zeros all the way
through its BatchNormalization; with trained-like statistics it gives a
constant (beta - gamma * mean / sqrt(variance + epsilon)) that `compact`
must fold into whatever reads it, residual additions included.

The targets of the study (`TARGETS`, from the specification) and the
Torch-Pruning figures beside them (`PEERS`) live here too: one home for
tests/test_compaction.py, which asserts the targets, and for
scripts/filter_route_coverage.py, which prints the table.
"""

import keras
import numpy as np

BN_STATES = ("as built", "trained-like")

# Parameters before / after `compact` that the study asks for, per model.
TARGETS_SOURCE = "kerasreg's specification for the filter-route coverage study"
TARGETS = {
    "ResNet50": 3.5,
    "ResNet50V2": 3.5,
    "MobileNetV2": 3.0,
    "MobileNetV3Small": 3.0,
    "EfficientNetB0": 3.0,
    "DenseNet121": 3.5,
    "ConvNeXtTiny": 1.8,
}

# The same task ("cut half of every coupled group") with Torch-Pruning on the
# torchvision/timm versions of the models, 32x32 inputs, 10 classes. Quoted
# from the study's brief; not measured here.
PEERS_SOURCE = (
    "Torch-Pruning 1.6.1, torchvision 0.29.1 models, 32x32 inputs, 10 classes, half of every "
    "coupled group (scripts/torch_pruning_reference.py)"
)
PEERS = {
    "ResNet50": 3.99,
    "ResNet50V2": None,  # no torchvision/timm counterpart measured
    "MobileNetV2": 3.81,
    "MobileNetV3Small": 3.79,
    "EfficientNetB0": 3.77,
    "DenseNet121": 3.94,
    "ConvNeXtTiny": 3.94,
}

# Every constructor accepts 32x32 inputs (the smallest that keras.applications
# allows without weights).
INPUT_SHAPE = (32, 32, 3)


def application(name):
    """The keras.applications model `name`, random weights, 10 logits."""
    return getattr(keras.applications, name)(
        weights=None, input_shape=INPUT_SHAPE, classes=10, classifier_activation=None
    )


# The classifier reaches the model's output through these alone (MobileNetV3's
# logits are a 1x1 convolution, then Flatten and the softmax Activation).
_PASS_THROUGH = (
    keras.layers.Activation,
    keras.layers.Dropout,
    keras.layers.Flatten,
    keras.layers.Reshape,
)


def output_layers(model):
    """The layers whose output is a model output, up to pass-through layers."""
    found = set()
    for tensor in keras.tree.flatten(model.outputs):
        operation, node_index, _ = tensor._keras_history
        while isinstance(operation, _PASS_THROUGH):
            (tensor,) = operation._inbound_nodes[node_index].input_tensors
            operation, node_index, _ = tensor._keras_history
        found.add(id(operation))
    return found


def _layers(model):
    return model._flatten_layers(include_self=False, recursive=True)


def _zero_columns(variable, index):
    values = np.array(keras.ops.convert_to_numpy(variable.value))
    values[index] = 0.0
    variable.assign(values)


def zero_every_other_filter(model):
    """Zeroes output filters 1, 3, 5, ... of every convolution and Dense layer.

    Conv1D/2D/3D (grouped ones too) and Dense: `kernel[..., 1::2] = 0`;
    DepthwiseConv2D (depth multiplier 1): its channels, `kernel[..., 1::2, :]`;
    SeparableConv2D: the pointwise kernel's output filters. Layers whose
    output is a model output keep their filters; biases are left as they are.

    Returns:
        The number of layers zeroed.
    """
    outputs = output_layers(model)
    zeroed = 0
    for layer in _layers(model):
        if id(layer) in outputs:
            continue
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            if layer.depth_multiplier != 1:
                raise ValueError(f"{layer.name}: depth_multiplier {layer.depth_multiplier}")
            _zero_columns(layer.kernel, (Ellipsis, slice(1, None, 2), slice(None)))
        elif isinstance(layer, keras.layers.SeparableConv2D):
            _zero_columns(layer.pointwise_kernel, (Ellipsis, slice(1, None, 2)))
        elif type(layer) in (
            keras.layers.Conv1D,
            keras.layers.Conv2D,
            keras.layers.Conv3D,
            keras.layers.Dense,
        ):
            _zero_columns(layer.kernel, (Ellipsis, slice(1, None, 2)))
        else:
            continue
        zeroed += 1
    return zeroed


def _set(variable, values):
    variable.assign(np.asarray(values, dtype=variable.dtype))


def set_normalization_state(model, state, seed=0):
    """Puts the normalization layers of `model` in one of `BN_STATES`.

    "as built": BatchNormalization gamma 1, beta 0, moving mean 0, moving
    variance 1 (and LayerNormalization gamma 1, beta 0), as the constructors
    leave them. "trained-like": seeded random gamma in [0.5, 1.5], beta and
    moving mean ~ N(0, 0.1), moving variance in [0.5, 1.5]; the same for
    LayerNormalization's gamma and beta and for ConvNeXt's layer-scale gamma
    (built at 1e-6, which would hide what its residual branches compute).
    """
    if state not in BN_STATES:
        raise ValueError(f"state {state!r}, expected one of {BN_STATES}")
    rng = np.random.default_rng(seed)
    for layer in _layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = tuple(layer.moving_mean.shape)
            if state == "as built":
                values = (np.ones(shape), np.zeros(shape), np.zeros(shape), np.ones(shape))
            else:
                values = (
                    rng.uniform(0.5, 1.5, shape),
                    rng.normal(0.0, 0.1, shape),
                    rng.normal(0.0, 0.1, shape),
                    rng.uniform(0.5, 1.5, shape),
                )
            variables = (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)
            for variable, value in zip(variables, values, strict=True):
                if variable is not None:
                    _set(variable, value)
        elif isinstance(layer, keras.layers.LayerNormalization):
            if layer.gamma is not None:
                shape = tuple(layer.gamma.shape)
                built = state == "as built"
                _set(layer.gamma, np.ones(shape) if built else rng.uniform(0.5, 1.5, shape))
            if layer.beta is not None:
                shape = tuple(layer.beta.shape)
                built = state == "as built"
                _set(layer.beta, np.zeros(shape) if built else rng.normal(0.0, 0.1, shape))
        elif type(layer).__name__ == "LayerScale" and state == "trained-like":
            _set(layer.gamma, rng.uniform(0.5, 1.5, tuple(layer.gamma.shape)))


def inputs_for(model, seed=0, batch=4):
    """A seeded batch of images in [0, 255] for `model`."""
    shape = (batch,) + tuple(model.input.shape[1:])
    return np.random.default_rng(seed).uniform(0.0, 255.0, shape).astype("float32")


def predictions(model, x):
    """The model's outputs on `x`, flattened to one float64 array."""
    outputs = model(x, training=False)
    flat = keras.tree.flatten(outputs)
    return np.concatenate(
        [np.ravel(np.asarray(keras.ops.convert_to_numpy(o), "float64")) for o in flat]
    )


def same_predictions(expected, actual, rtol=1e-4, atol=1e-5):
    """`(equal, max abs difference / max abs output)`; `atol` is relative to that scale."""
    scale = max(float(np.max(np.abs(expected))), np.finfo("float32").tiny)
    difference = float(np.max(np.abs(actual - expected)))
    equal = bool(np.allclose(actual, expected, rtol=rtol, atol=atol * scale))
    return equal, difference / scale
