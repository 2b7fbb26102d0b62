"""The rebuilders of `compact`: a smaller copy of a model, from one pass's decisions.

`cut_model` removes what the coupled pass decided (`_coupled.coupled_cuts`),
`rebuild_chains` what the chain pass decided (`_chains.plan_chains`); both
rebuild each layer with `rebuild_layer` and set the copy's weights once it
is built.
"""

import keras
import numpy as np

from kerasreg import _graph
from kerasreg._validation import InvalidArgumentError
from kerasreg.compaction._chains import plan_chains
from kerasreg.compaction._summary import CompactionSummary
from kerasreg.compaction._summary import LayerCompaction
from kerasreg.dependency import _is_keras_hub
from kerasreg.layers import FeatureGate
from kerasreg.layers import SelectFeatures


def _initializers(layer, config):
    """The initializers of a Keras layer, by config key, to build it with zeros.

    Its weights come from the original: drawing random ones first would only
    cost time (on JAX, a compilation for every new shape).
    """
    if not type(layer).__module__.startswith(("keras.", "kerasreg.")):
        return {}
    return {
        key: getattr(layer, key)
        for key, value in config.items()
        if key.endswith("initializer") and value is not None and hasattr(layer, key)
    }


def rebuild_layer(model, layer, weights, config=None):
    """`(new layer, finish)`: `layer` rebuilt from `config` (by default its
    own), and what sets its weights once the new model has built it.

    A layer without weights that cannot be rebuilt from its config (a
    `Lambda` around a Python function) is used as it is: it holds nothing
    that the new model could share with the original.
    """
    changed = config is not None
    try:
        config = layer.get_config() if config is None else config
        initializers = _initializers(layer, config)
        new = type(layer).from_config({**config, **dict.fromkeys(initializers, "zeros")})
    except Exception as error:  # whatever the layer's own code raises
        if not layer.weights and not changed:
            return layer, None
        raise InvalidArgumentError(
            "Invalid value for argument `model`: expected layers that can be "
            "rebuilt with `from_config(get_config())`; layer "
            f"'{layer.name}' ({type(layer).__name__}) cannot: {error}. "
            f"Received: model={model.name!r}"
        ) from error

    def finish():
        new.set_weights(weights)
        for key, initializer in initializers.items():
            setattr(new, key, initializer)

    return new, finish


def _resized_config(layer, config, shapes):
    """`layer`'s config for its new weight shapes (`id(variable)` -> shape)."""

    def width(variable, axis=-1):
        return int(shapes[id(variable)][axis])

    if isinstance(layer, keras.layers.MultiHeadAttention):
        config["num_heads"] = width(layer._query_dense.kernel, 1)
        config["output_shape"] = width(layer._output_dense.kernel)
    elif _is_keras_hub(layer, "TransformerEncoder"):
        config["intermediate_dim"] = width(layer._feedforward_intermediate_dense.kernel)
    elif isinstance(layer, keras.layers.Embedding):
        config["output_dim"] = width(layer.embeddings)
    elif isinstance(layer, keras.layers.EinsumDense):
        output_shape = config["output_shape"]
        if isinstance(output_shape, int):
            config["output_shape"] = width(layer.kernel)
        else:
            config["output_shape"] = list(output_shape[:-1]) + [width(layer.kernel)]
    elif isinstance(layer, FeatureGate):
        if config.get("feature_names"):
            keep = _kept_mask(shapes, layer.gates)
            config["feature_names"] = [
                n for n, k in zip(config["feature_names"], keep, strict=True) if k
            ]
    elif "filters" in config or "units" in config:
        config["filters" if "filters" in config else "units"] = width(layer.kernel)
    return config


def _kept_mask(shapes, variable, axis=-1):
    """Which entries of `variable` along `axis` stay."""
    axis %= len(variable.shape)
    return shapes.get(("mask", id(variable), axis), np.ones(variable.shape[axis], bool))


def cut_model(model, cuts, rows, finishers, input_shapes=None):
    """A copy of `model` without the entries in `cuts` (nested models included).

    The copy's weights are set by `finishers`, to call once the outermost
    copy is built. A nested model is copied when it is called, on inputs
    that may have lost channels: `input_shapes` are theirs (`None` for the
    outermost model, whose inputs keep their shapes).
    """
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    clones = {}

    def clone(layer):
        if id(layer) in clones:
            return clones[id(layer)]
        if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
            # A `keras.ops` function (no weights), or a nested model: copied
            # when called, once its inputs' shapes are known.
            return layer
        weights, shapes, changed = [], {}, False
        for variable, value in zip(layer.weights, layer.get_weights(), strict=True):
            for axis in range(value.ndim):
                cut = cuts.get((id(variable), axis))
                if cut is not None:
                    keep = np.ones(value.shape[axis], bool)
                    keep[list(cut[2])] = False
                    value = np.compress(keep, value, axis=axis)
                    shapes[("mask", id(variable), axis)] = keep
                    changed = True
            shapes[id(variable)] = value.shape
            weights.append(value)
        config = None
        if changed:
            config = _resized_config(layer, layer.get_config(), shapes)
            rows.append(_cut_row(layer, shapes))
        new, finish = rebuild_layer(model, layer, weights, config)
        if finish is not None:
            finishers.append(finish)
        clones[id(layer)] = new
        return new

    def nested(layer, shapes):
        if id(layer) not in clones:
            clones[id(layer)] = cut_model(layer, cuts, rows, finishers, shapes)
        return clones[id(layer)]

    def call_function(layer, *args, **kwargs):
        if isinstance(layer, keras.Model):
            tensors = keras.tree.flatten(args[0] if args else kwargs.get("inputs"))
            shapes = [tuple(t.shape) for t in tensors if hasattr(t, "shape")]
            layer = nested(layer, shapes)
        return layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):
        ref = _graph.functional_of(model).inputs[0]
        shape = tuple(ref.shape) if input_shapes is None else input_shapes[0]
        new_model = keras.Sequential(
            [keras.Input(batch_shape=shape, dtype=ref.dtype, name=ref.name)],
            name=model.name,
            trainable=model.trainable,
        )
        for layer in layers:
            if isinstance(layer, keras.Model):
                layer = nested(layer, [shape])
            else:
                layer = clone(layer)
            new_model.add(layer)
            shape = tuple(new_model.outputs[0].shape)
    else:
        input_tensors = None
        if input_shapes is not None:
            originals = _graph.functional_of(model).inputs
            input_tensors = keras.tree.pack_sequence_as(
                _graph.functional_of(model)._inputs_struct,
                [
                    keras.Input(batch_shape=shape, dtype=t.dtype, name=t.name)
                    for shape, t in zip(input_shapes, originals, strict=True)
                ],
            )
        new_model = keras.models.clone_model(
            model,
            input_tensors=input_tensors,
            clone_function=clone,
            call_function=call_function,
        )
    return new_model


def _cut_row(layer, shapes):
    """The `LayerCompaction` of a layer that lost coupled channels."""
    variables = layer.weights
    first = variables[0]
    # The axes of the units (heads, filters) and of the inputs.
    if isinstance(layer, keras.layers.MultiHeadAttention):
        first, axis, in_axis = layer._query_dense.kernel, 1, 0
    elif isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        axis, in_axis = -2, -2  # one filter per channel
    else:
        axis, in_axis = -1, (-2 if len(first.shape) >= 2 else -1)
    before, after = first.shape, shapes[id(first)]
    inputs_before, inputs_after = before[in_axis], after[in_axis]
    units = int(before[axis])
    kept = _kept_mask(shapes, first, axis)
    return LayerCompaction(
        layer=layer.name,
        units=units,
        kept_units=int(after[axis]),
        inputs=int(inputs_before),
        kept_inputs=int(inputs_after),
        params=int(sum(np.prod(v.shape) for v in variables)),
        kept_params=int(sum(np.prod(shapes[id(v)]) for v in variables)),
        unit_indices=tuple(int(i) for i in np.flatnonzero(kept)),
    )


def _param_count(kernel_shape, use_bias):
    return int(np.prod(kernel_shape)) + (int(kernel_shape[-1]) if use_bias else 0)


def compile_like(model, new_model):
    """Compiles `new_model` as `model` was: optimizer, loss and metrics from its config.

    The optimizer's state is new. (`clone_model` compiles functional copies
    itself; Sequential models built here are not.)
    """
    if model.compiled and not new_model.compiled:
        new_model.compile_from_config(model.get_compile_config())


class _ChainRebuild:
    """Makes the new layers of one model from its `ChainPlan`, and the summary's rows."""

    def __init__(self, model, plan):
        self.model = model
        self.plan = plan
        self.rows = []
        self.notes = list(plan.notes)
        self.clones = {}
        self.originals = {}

    def clone(self, layer):
        """`(new layer, finish)` for `layer`, made once; `finish` sets its weights."""
        if id(layer) not in self.clones:
            self.clones[id(layer)] = self._new(layer)
        return self.clones[id(layer)]

    def new_layer(self, layer):
        return self.clone(layer)[0]

    def _new(self, layer):
        if not isinstance(layer, keras.layers.Layer):
            # A `keras.ops` function (`x + y`, `keras.ops.relu(x)`): it holds
            # no weights, and the new model calls the same operation.
            return layer, None
        if isinstance(layer, keras.Model):
            new = self._compacted_nested(layer)
            if new is not None:
                return new, None
        if id(layer) in self.plan.compute:
            config, weights = self._compute_layer(layer)
        else:
            weights = [np.asarray(w) for w in layer.get_weights()]
            config = None
            if id(layer) in self.plan.path_masks:
                mask, rule = self.plan.path_masks[id(layer)]
                config, weights = rule.slice(layer.get_config(), weights, mask)
        return rebuild_layer(self.model, layer, weights, config)

    def _compacted_nested(self, model):
        """A nested model through the chain pass in turn, or None if it cannot go."""
        try:
            new, inner = rebuild_chains(model, plan_chains(model))
        except ValueError:
            return None
        self.rows.extend(inner.layers)
        self.notes.extend(inner.left_as_is)
        return new

    def _compute_layer(self, layer):
        """`(config, weights)` of a compute layer as planned; its row if it changed."""
        state = self.plan.state
        config = layer.get_config()
        keep_in = state.keep_in[id(layer)]
        keep_out = state.keep_out[id(layer)]
        delta = state.delta[id(layer)]
        kernel = state.kernel[id(layer)][..., keep_in, :][..., keep_out]
        bias = (state.bias[id(layer)] + delta)[keep_out]
        use_bias = layer.use_bias or bool(np.any(delta != 0))
        config["filters" if "filters" in config else "units"] = int(keep_out.sum())
        config["use_bias"] = use_bias
        dtype = layer.kernel.dtype
        weights = [kernel.astype(dtype)] + ([bias.astype(dtype)] if use_bias else [])
        if not (keep_in.all() and keep_out.all() and not np.any(delta)):
            self.rows.append(
                LayerCompaction(
                    layer=layer.name,
                    units=int(keep_out.size),
                    kept_units=int(keep_out.sum()),
                    inputs=int(keep_in.size),
                    kept_inputs=int(keep_in.sum()),
                    params=_param_count(state.kernel[id(layer)].shape, layer.use_bias),
                    kept_params=_param_count(kernel.shape, use_bias),
                    input_indices=self.plan.input_selection.get(id(layer)),
                    unit_indices=tuple(int(i) for i in np.flatnonzero(keep_out)),
                )
            )
        return config, weights

    def call_function(self, layer, *args, **kwargs):
        """Calls a new layer, behind a `SelectFeatures` where it reads fewer inputs."""
        original = self.originals.get(id(layer))
        indices = self.plan.input_selection.get(id(original))
        if indices is not None:
            selector = SelectFeatures(indices, name=f"{original.name}_inputs")
            args = (selector(args[0]),) + tuple(args[1:])
        return layer(*args, **kwargs)

    def model_copy(self):
        """The new model, its layers built but their weights not yet set."""
        self.originals = {id(self.new_layer(layer)): layer for layer in self.plan.layers}
        if not isinstance(self.model, keras.Sequential):
            return keras.models.clone_model(
                self.model, clone_function=self.new_layer, call_function=self.call_function
            )
        new_layers = []
        for layer in self.plan.layers:
            indices = self.plan.input_selection.get(id(layer))
            if indices is not None:
                new_layers.append(SelectFeatures(indices, name=f"{layer.name}_inputs"))
            new_layers.append(self.new_layer(layer))
        ref = _graph.functional_of(self.model).inputs[0]
        return keras.Sequential(
            [keras.Input(batch_shape=ref.shape, dtype=ref.dtype, name=ref.name)] + new_layers,
            name=self.model.name,
            trainable=self.model.trainable,
        )

    def finish(self):
        """Sets the new layers' weights, once the new model has built them."""
        for layer in self.plan.layers:
            _, finish = self.clone(layer)
            if finish is not None:
                finish()


def rebuild_chains(model, plan):
    """`(new model, summary)`: `model` rebuilt as its `ChainPlan` decided."""
    rebuild = _ChainRebuild(model, plan)
    new_model = rebuild.model_copy()
    rebuild.finish()
    compile_like(model, new_model)
    summary = CompactionSummary(
        layers=tuple(rebuild.rows),
        left_as_is=tuple(dict.fromkeys(rebuild.notes)),
        params=int(model.count_params()),
        kept_params=int(new_model.count_params()),
    )
    return new_model, summary
