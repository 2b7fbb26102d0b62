"""Random functional models for property tests of `kerasreg.compact`.

`architectures()` draws a model as plain data (a list of steps), so that
Hypothesis prints and shrinks it readably; `build(spec)` makes the Keras
model, with random weights, biases and normalization statistics and with
the drawn units, filters, input rows, normalization scales and shifts set
to zero. Some models take the "filter route", what structured magnitude
pruning leaves: every other output filter of every Dense and convolution
layer is zero (biases kept). Besides chains of Dense and convolution layers
(grouped ones among them, depthwise written as a grouped convolution as
ConvNeXt does), the models hold squeeze-and-excitation gates on images,
normalization as built or with random statistics, merges, pooling and
nested models. `check(spec)` compacts it and checks the properties that
every model must have:

- `compact` raises nothing;
- the compacted model predicts what the original predicts (float32
  precision);
- it has no more parameters than the original, and the summary counts them;
- every unit it removed was dead or constant: replacing the output of each
  removed unit of the original by its mean over the batch (and positions)
  leaves the original's predictions as they are.

Used by tests/test_compaction.py (a few examples per backend) and by
scripts/compact_fuzz.py (as many as you like).
"""

import warnings

import keras
import numpy as np
from hypothesis import strategies as st

import kerasreg

ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "elu", "gelu", "softmax")
OPS = ("relu", "sigmoid", "tanh", "gelu", "silu", "softmax")
SIDE = 5  # length of sequences, height and width of images
# Few distinct sizes: JAX compiles each operation once per shape.
WIDTHS = (4, 2, 1)
# Kinds of steps, repeated by weight: compute layers and what sits between
# them come most often.
STEP_KINDS = (
    ("compute",) * 10
    + ("batch_norm", "activation", "activation_op", "squeeze_excite") * 2
    + ("scalar_op", "depthwise", "dropout", "gate", "pool", "flatten")
    + ("merge", "concatenate", "layout_op", "nested")
)
BETWEEN_KINDS = (
    "activation_op",
    "activation",
    "batch_norm",
    "scalar_op",
    "dropout",
    "gate",
    "depthwise",
    "pool",
    "squeeze_excite",
)


def _zeros(draw, size):
    """Indices to zero out of `size`: some of them (most often), none or all."""
    how = draw(st.sampled_from(["some", "none", "some", "all"]))
    if how == "none":
        return []
    order = draw(st.permutations(range(size)))
    count = size if how == "all" else draw(st.integers(1, max(size - 1, 1)))
    return sorted(order[:count])


def _side(length, kernel, padding):
    return length - kernel + 1 if padding == "valid" else length


def _groups(draw, channels, units):
    """`(groups, units)` of a convolution: most often one group; else groups
    that divide both `channels` and `units`, or one group per channel (a
    depthwise convolution written as a grouped one, as ConvNeXt does)."""
    how = draw(st.sampled_from(["one", "one", "one", "grouped", "per_channel"]))
    if how == "grouped":
        common = [g for g in range(2, channels + 1) if channels % g == 0 and units % g == 0]
        if common:
            return draw(st.sampled_from(common)), units
    elif how == "per_channel" and 1 < channels <= 2 * max(WIDTHS):
        return channels, channels
    return 1, units


def _layer_step(draw, kind, units, activations, period):
    """A Dense or convolution layer's drawn state: activation, bias, zeros."""
    return {
        "kind": kind,
        "units": units,
        "activation": draw(st.sampled_from(activations)),
        "use_bias": draw(st.booleans()),
        "zero_units": _zeros(draw, units),
        # Input rows r with r % period in the set: whole channels before a Flatten.
        "zero_inputs": _zeros(draw, period),
        "period": period,
    }


def _compute_step(draw, shape, period):
    """A Dense or convolution step on a tensor of `shape`, with what to zero."""
    kind = draw(st.sampled_from(["conv", "conv", "conv", "dense"] if len(shape) > 1 else ["dense"]))
    units = draw(st.sampled_from(WIDTHS))
    groups = 1
    if kind == "conv":
        groups, units = _groups(draw, shape[-1], units)
    step = _layer_step(draw, kind, units, ACTIVATIONS, period)
    if kind == "conv":
        step["groups"] = groups
        # Padding first: Hypothesis draws the first choices most often.
        paddings = ["same"] + (["causal"] if len(shape) == 2 else []) + ["valid"]
        step["kernel"] = draw(st.sampled_from([k for k in (3, 1) if k <= shape[0]]))
        step["padding"] = draw(st.sampled_from(paddings))
        spatial = tuple(_side(n, step["kernel"], step["padding"]) for n in shape[:-1])
        return step, spatial + (units,)
    return step, shape[:-1] + (units,)


def _batch_norm_step(draw, channels):
    """A BatchNormalization's drawn state: as built (scale 1, shift 0, mean 0,
    variance 1), or random statistics with some scales and shifts zero."""
    if draw(st.sampled_from([False, False, False, True])):
        return {"as_built": True, "zero_units": [], "zero_shifts": []}
    return {
        "as_built": False,
        "zero_units": _zeros(draw, channels),  # scales (gamma)
        "zero_shifts": _zeros(draw, channels),  # shifts (beta)
    }


def _squeeze_excite_step(draw, channels):
    """A squeeze-and-excitation gate on an image of `channels` channels.

    The average over the image (kept as 1 x 1 pixels, reshaped to them, or
    reshaped only once the gate is computed) goes through a reducing layer
    (ReLU or swish) and an expanding one (sigmoid, back to `channels`); each
    is a 1 x 1 convolution or a Dense layer on the last axis.
    """
    squeeze = draw(st.sampled_from(["keepdims", "reshape", "reshape_gate"]))
    kinds = ["dense", "dense"]
    if squeeze != "reshape_gate":
        kinds = [draw(st.sampled_from(["conv", "dense"])) for _ in range(2)]
    reduced = draw(st.sampled_from(WIDTHS))
    return {
        "squeeze": squeeze,
        "reduce": _layer_step(draw, kinds[0], reduced, ("relu", "silu"), channels),
        "expand": _layer_step(draw, kinds[1], channels, ("sigmoid",), reduced),
    }


@st.composite
def architectures(draw, max_steps=8):
    """A random functional model as a list of steps (plain data)."""
    spatial = draw(st.sampled_from([(), (SIDE,), (SIDE, SIDE)]))  # vectors, sequences, images
    width = draw(st.sampled_from(WIDTHS))
    shapes = [spatial + (width,)]
    periods = [width]  # per tensor: how many rows of a kernel make one channel
    steps = []
    between = []  # kinds to follow a compute layer with
    for _ in range(draw(st.integers(1, max_steps))):
        # A chain; merges and concatenations join an earlier tensor to it.
        i = len(shapes) - 1
        shape, period = shapes[i], periods[i]
        kind = between.pop(0) if between else draw(st.sampled_from(STEP_KINDS))
        step = {"kind": kind, "inputs": [i]}
        out, out_period = shape, period
        if kind == "compute":
            compute, out = _compute_step(draw, shape, period)
            step.update(compute)
            out_period = out[-1]
            between = draw(st.lists(st.sampled_from(BETWEEN_KINDS), max_size=2))
        elif kind == "depthwise":
            if len(shape) == 1:
                continue
            step["kernel"] = draw(st.sampled_from([k for k in (3, 1) if k <= shape[0]]))
            step["padding"] = draw(st.sampled_from(["same", "valid"]))
            step["activation"] = draw(st.sampled_from(ACTIVATIONS))
            step["use_bias"] = draw(st.booleans())
            step["zero_units"] = _zeros(draw, shape[-1])
            spatial = tuple(_side(n, step["kernel"], step["padding"]) for n in shape[:-1])
            out = spatial + shape[-1:]
        elif kind == "activation":
            step["activation"] = draw(st.sampled_from(ACTIVATIONS + ("relu_layer",)))
        elif kind == "activation_op":
            step["op"] = draw(st.sampled_from(OPS))
        elif kind == "scalar_op":
            step["op"] = draw(st.sampled_from(["add", "multiply", "maximum", "rsubtract"]))
            step["value"] = draw(st.sampled_from([-0.5, 0.0, 2.0]))
        elif kind == "gate":
            step["zero_units"] = _zeros(draw, shape[-1])
        elif kind == "batch_norm":
            step.update(_batch_norm_step(draw, shape[-1]))
        elif kind == "squeeze_excite":
            if len(shape) != 3:
                continue
            step.update(_squeeze_excite_step(draw, shape[-1]))
        elif kind in ("merge", "concatenate"):
            if kind == "merge":
                same = [j for j, s in enumerate(shapes) if s == shape]
            else:
                same = [j for j, s in enumerate(shapes) if s[:-1] == shape[:-1]]
            step["inputs"].append(same[-1 - draw(st.integers(0, len(same) - 1))])
            step["op"] = draw(
                st.sampled_from(
                    ["add", "subtract", "multiply", "maximum"] if kind == "merge" else ["concat"]
                )
            )
            step["as_layer"] = draw(st.booleans())
            if kind == "concatenate":
                out = shape[:-1] + (shape[-1] + shapes[step["inputs"][1]][-1],)
                out_period = out[-1]
        elif kind == "pool":
            if len(shape) == 1:
                continue
            step["pool"] = draw(st.sampled_from(["max", "average", "global_average", "global_max"]))
            step["padding"] = draw(st.sampled_from(["valid", "same"]))
            if step["pool"].startswith("global"):
                out = shape[-1:]
            elif step["padding"] == "valid":
                out = tuple(n // 2 for n in shape[:-1]) + shape[-1:]
                if out[0] == 0:
                    continue
            else:
                out = tuple(-(-n // 2) for n in shape[:-1]) + shape[-1:]
        elif kind == "flatten":
            if len(shape) == 1:
                continue
            step["as_layer"] = draw(st.booleans())
            out = (int(np.prod(shape)),)
        elif kind == "layout_op":
            if len(shape) > 1:
                step["op"] = "transpose"  # channels last stays last only for images
                if len(shape) == 2:
                    out, out_period = shape[::-1], shape[0]
            else:
                step["op"] = "slice"
                step["keep"] = draw(st.integers(1, shape[-1]))
                out = (step["keep"],)
                out_period = step["keep"]
        elif kind == "nested":
            step["sequential"] = draw(st.booleans())
            inner = []
            inner_shape, inner_period = shape, period
            for _ in range(draw(st.integers(1, 3))):
                if draw(st.booleans()) or not inner:
                    compute, inner_shape = _compute_step(draw, inner_shape, inner_period)
                    inner_period = inner_shape[-1]
                    inner.append(compute)
                else:
                    inner.append({"kind": "batch_norm", **_batch_norm_step(draw, inner_shape[-1])})
            step["layers"] = inner
            out, out_period = inner_shape, inner_period
        steps.append(step)
        shapes.append(out)
        periods.append(out_period)
    extra_output = None
    if len(shapes) > 2 and draw(st.booleans()):
        extra_output = draw(st.integers(1, len(shapes) - 2))
    return {
        "input": shapes[0],
        "steps": steps,
        "extra_output": extra_output,
        # Every other output filter of every layer zero (the head's aside).
        "filter_route": draw(st.sampled_from([False, False, False, True])),
        "seed": draw(st.integers(0, 2**16)),
    }


def _compute_layer(step, name, spatial_rank):
    # The weights are set afterwards; "zeros" spares JAX compiling a random
    # initializer for every shape.
    options = dict(
        activation=step["activation"],
        use_bias=step["use_bias"],
        kernel_initializer="zeros",
        name=name,
    )
    if step["kind"] == "conv":
        conv = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D}[spatial_rank]
        return conv(
            step["units"],
            step.get("kernel", 1),
            padding=step.get("padding", "valid"),
            groups=step.get("groups", 1),
            **options,
        )
    return keras.layers.Dense(step["units"], **options)


_MERGE_LAYERS = {
    "add": keras.layers.Add,
    "subtract": keras.layers.Subtract,
    "multiply": keras.layers.Multiply,
    "maximum": keras.layers.Maximum,
    "concat": keras.layers.Concatenate,
}
_MERGE_OPS = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "maximum": keras.ops.maximum,
    "concat": lambda a, b: keras.ops.concatenate([a, b], axis=-1),
}
_SCALAR_OPS = {
    "add": lambda x, v: x + v,
    "multiply": lambda x, v: x * v,
    "maximum": keras.ops.maximum,
    "rsubtract": lambda x, v: v - x,
}
_POOLS = {  # by kind and spatial rank
    ("max", 1): keras.layers.MaxPooling1D,
    ("max", 2): keras.layers.MaxPooling2D,
    ("average", 1): keras.layers.AveragePooling1D,
    ("average", 2): keras.layers.AveragePooling2D,
    ("global_average", 1): keras.layers.GlobalAveragePooling1D,
    ("global_average", 2): keras.layers.GlobalAveragePooling2D,
    ("global_max", 1): keras.layers.GlobalMaxPooling1D,
    ("global_max", 2): keras.layers.GlobalMaxPooling2D,
}
_DEPTHWISE = {1: keras.layers.DepthwiseConv1D, 2: keras.layers.DepthwiseConv2D}


def _nested(step, shape, name, drawn):
    layers = []
    for j, inner in enumerate(step["layers"]):
        if inner["kind"] == "batch_norm":
            layers.append(keras.layers.BatchNormalization(name=f"{name}_bn{j}"))
        else:
            layers.append(_compute_layer(inner, f"{name}_c{j}", len(shape) - 1))
        drawn[layers[-1].name] = inner
    if step["sequential"]:
        return keras.Sequential([keras.Input(shape)] + layers, name=name)
    inputs = keras.Input(shape)
    h = inputs
    for layer in layers:
        h = layer(h)
    return keras.Model(inputs, h, name=name)


def _squeeze_excite(x, step, name, drawn):
    channels = x.shape[-1]
    keepdims = step["squeeze"] == "keepdims"
    gate = keras.layers.GlobalAveragePooling2D(keepdims=keepdims, name=f"{name}_squeeze")(x)
    if step["squeeze"] == "reshape":
        gate = keras.layers.Reshape((1, 1, channels), name=f"{name}_reshape")(gate)
    for part in ("reduce", "expand"):
        drawn[f"{name}_{part}"] = step[part]
        gate = _compute_layer(step[part], f"{name}_{part}", 2)(gate)
    if step["squeeze"] == "reshape_gate":
        gate = keras.layers.Reshape((1, 1, channels), name=f"{name}_reshape")(gate)
    return keras.layers.Multiply(name=name)([x, gate])


def build(spec):
    """The Keras model of `spec`, its random weights set and its zeros made."""
    inputs = keras.Input(spec["input"])
    tensors = [inputs]
    drawn = {}  # layer name -> the step that drew its zeros
    for i, step in enumerate(spec["steps"]):
        x = tensors[step["inputs"][0]]
        kind = step["kind"]
        spatial_rank = len(x.shape) - 2
        if kind in ("dense", "conv", "batch_norm", "depthwise", "gate"):
            drawn[f"s{i}"] = step
        if kind in ("dense", "conv"):
            y = _compute_layer(step, f"s{i}", spatial_rank)(x)
        elif kind == "batch_norm":
            y = keras.layers.BatchNormalization(name=f"s{i}")(x)
        elif kind == "activation":
            if step["activation"] == "relu_layer":
                y = keras.layers.ReLU(name=f"s{i}")(x)
            else:
                y = keras.layers.Activation(step["activation"], name=f"s{i}")(x)
        elif kind == "activation_op":
            y = getattr(keras.ops, step["op"])(x)
        elif kind == "scalar_op":
            y = _SCALAR_OPS[step["op"]](x, step["value"])
        elif kind == "depthwise":
            y = _DEPTHWISE[spatial_rank](
                step["kernel"],
                padding=step["padding"],
                activation=step["activation"],
                use_bias=step["use_bias"],
                depthwise_initializer="zeros",
                name=f"s{i}",
            )(x)
        elif kind == "dropout":
            y = keras.layers.Dropout(0.5, name=f"s{i}")(x)
        elif kind == "gate":
            y = kerasreg.FeatureGate(name=f"s{i}")(x)
        elif kind in ("merge", "concatenate"):
            pair = [tensors[j] for j in step["inputs"]]
            if step["as_layer"]:
                y = _MERGE_LAYERS[step["op"]](name=f"s{i}")(pair)
            else:
                y = _MERGE_OPS[step["op"]](*pair)
        elif kind == "pool":
            pool = _POOLS[step["pool"], spatial_rank]
            if step["pool"].startswith("global"):
                y = pool(name=f"s{i}")(x)
            else:
                y = pool(2, padding=step["padding"], name=f"s{i}")(x)
        elif kind == "flatten":
            if step["as_layer"]:
                y = keras.layers.Flatten(name=f"s{i}")(x)
            else:
                y = keras.ops.reshape(x, (-1, int(np.prod(x.shape[1:]))))
        elif kind == "layout_op":
            if step["op"] == "transpose":
                y = keras.ops.transpose(x, (0, 2, 1) + tuple(range(3, len(x.shape))))
            else:
                y = x[:, : step["keep"]]
        elif kind == "squeeze_excite":
            y = _squeeze_excite(x, step, f"s{i}", drawn)
        elif kind == "nested":
            y = _nested(step, tuple(x.shape[1:]), f"s{i}", drawn)(x)
        tensors.append(y)
    last = tensors[-1]
    if len(last.shape) > 2:
        last = keras.layers.Flatten(name="head_flatten")(last)
    outputs = [keras.layers.Dense(2, kernel_initializer="zeros", name="head")(last)]
    if spec["extra_output"] is not None:
        outputs.append(tensors[spec["extra_output"]])
    model = keras.Model(inputs, outputs)
    _set_weights(model, spec, drawn)
    return model


def _input_channels(kernel_shape, groups):
    """The input channel that each (row, unit) of a kernel's last two axes reads."""
    rows, units = kernel_shape[-2:]
    group = np.arange(units) // (units // groups)
    return np.arange(rows)[:, None] + rows * group[None, :]


def _set_weights(model, spec, drawn):
    rng = np.random.default_rng(spec["seed"])
    for layer in model._flatten_layers(include_self=False, recursive=True):
        step = drawn.get(layer.name)
        if isinstance(layer, keras.layers.BatchNormalization):
            if step["as_built"]:
                continue
            shape = layer.gamma.shape
            gamma = rng.uniform(0.5, 1.5, shape)
            gamma[step["zero_units"]] = 0.0
            beta = rng.normal(0.0, 0.5, shape)
            beta[step["zero_shifts"]] = 0.0
            layer.set_weights(
                [
                    gamma.astype("float32"),
                    beta.astype("float32"),
                    rng.normal(0.0, 0.5, shape).astype("float32"),
                    rng.uniform(0.5, 2.0, shape).astype("float32"),
                ]
            )
        elif isinstance(layer, tuple(_DEPTHWISE.values())):
            kernel = rng.normal(0.0, 0.5, layer.kernel.shape)
            kernel[..., step["zero_units"], :] = 0.0
            if spec["filter_route"]:
                kernel[..., 1::2, :] = 0.0
            layer.kernel.assign(kernel.astype("float32"))
            if layer.use_bias:
                layer.bias.assign(rng.normal(0.0, 0.5, layer.bias.shape).astype("float32"))
        elif isinstance(layer, kerasreg.FeatureGate):
            gates = rng.uniform(0.5, 1.5, layer.gates.shape)
            gates[step["zero_units"]] = 0.0
            layer.gates.assign(gates.astype("float32"))
        elif isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)):
            fan_in = int(np.prod(layer.kernel.shape[:-1]))
            kernel = rng.normal(0.0, 1.0 / np.sqrt(fan_in), layer.kernel.shape)
            if layer.use_bias:
                layer.bias.assign(rng.normal(0.0, 0.5, layer.bias.shape).astype("float32"))
            if step is not None:
                channels = _input_channels(kernel.shape, getattr(layer, "groups", 1))
                kernel[..., np.isin(channels % step["period"], step["zero_inputs"])] = 0.0
                kernel[..., step["zero_units"]] = 0.0
                if spec["filter_route"]:
                    kernel[..., 1::2] = 0.0
            layer.kernel.assign(kernel.astype("float32"))


def inputs_for(spec, batch=8):
    rng = np.random.default_rng(spec["seed"] + 1)
    return rng.normal(size=(batch,) + tuple(spec["input"])).astype("float32")


class _MeanOfRemoved(keras.layers.Layer):
    """Calls `layer`, then replaces the `removed` units by their mean."""

    def __init__(self, layer, removed, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.removed = np.asarray(removed, dtype="float32")

    def call(self, x, training=None, mask=None):
        y = self.layer(x, training=training)
        axes = tuple(range(len(y.shape) - 1))
        mean = keras.ops.mean(y, axis=axes, keepdims=True)
        return y + keras.ops.convert_to_tensor(self.removed, y.dtype) * (mean - y)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


def _predict(model, x):
    outputs = model(x, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [np.asarray(keras.ops.convert_to_numpy(y), dtype="float64") for y in outputs]


def assert_close(actual, expected):
    """Equal to float32 precision, relative to the size of the outputs."""
    for a, e in zip(actual, expected, strict=True):
        scale = max(1.0, float(np.abs(e).max(initial=0.0)))
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5 * scale)


def removed_units(summary):
    """Layer name -> the indices of the units `compact` removed."""
    removed = {}
    for row in summary.layers:
        if row.unit_indices is not None and row.kept_units < row.units:
            removed[row.layer] = sorted(set(range(row.units)) - set(row.unit_indices))
    return removed


def with_removed_units_replaced(model, removed):
    """A copy of `model` (same weights) in which the removed units output their mean."""

    def clone_function(layer):
        if getattr(layer, "name", None) in removed:
            # Units of a Dense or convolution layer, channels of a normalization
            # or of a depthwise convolution (whose kernel ends in its multiplier).
            mask = np.zeros(layer.output.shape[-1], "float32")
            mask[removed[layer.name]] = 1.0
            return _MeanOfRemoved(layer, mask)
        return layer

    return keras.models.clone_model(model, clone_function=clone_function, recursive=True)


def check(spec):
    """Compacts the model of `spec` and asserts the properties; returns the summary."""
    with warnings.catch_warnings():
        # compact's own, and Keras' on a softmax over one unit.
        warnings.simplefilter("ignore")
        model = build(spec)
        x = inputs_for(spec)
        expected = _predict(model, x)
        small, summary = kerasreg.compact(model, return_summary=True)
        assert_close(_predict(small, x), expected)
        assert small.count_params() <= model.count_params()
        assert summary.params == model.count_params()
        assert summary.kept_params == small.count_params()
        removed = removed_units(summary)
        if removed:
            probe = with_removed_units_replaced(model, removed)
            assert_close(_predict(probe, x), expected)
    return summary
