"""The rebuilder of `compact`: a smaller copy of a model, from the engine's `Plan`.

`cut_model` copies the model (nested models included) with each layer
rebuilt by `rebuild_layer` from its config, resized by the layer's rule in
`kerasreg._graph`, and its weights set once the copy is built.
"""

import keras
import numpy as np

from kerasreg import _graph
from kerasreg._validation import InvalidArgumentError
from kerasreg.compaction._summary import LayerCompaction
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


def _kept_mask(shapes, variable, axis=-1):
    """Which entries of `variable` along `axis` stay."""
    axis %= len(variable.shape)
    return shapes.get(("mask", id(variable), axis), np.ones(variable.shape[axis], bool))


def cut_model(model, plan, rows, finishers, input_shapes=None):
    """A copy of `model` as `plan` decided (nested models included).

    The copy's weights are set by `finishers`, to call once the outermost
    copy is built. A nested model is copied when it is called, on inputs
    that may have lost channels: `input_shapes` are theirs (`None` for the
    outermost model, whose inputs keep their shapes and are read through a
    `SelectFeatures` where features go).
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
            if id(variable) in plan.values:
                value = plan.values[id(variable)].astype(value.dtype)
                changed = True
            for axis in range(value.ndim):
                removed = plan.removed.get((id(variable), axis))
                if removed is not None:
                    value = np.compress(~removed, value, axis=axis)
                    shapes[("mask", id(variable), axis)] = ~removed
                    changed = True
            shapes[id(variable)] = value.shape
            weights.append(value)
        config = None
        if id(layer) in plan.bias_added:
            bias, kernel, out_axis = plan.bias_added[id(layer)]
            bias = bias[_kept_mask(shapes, kernel, out_axis)]
            weights.append(bias.astype(kernel.dtype))
            config = {**layer.get_config(), "use_bias": True}
            changed = True
        rule = _graph.layer_rule(layer)
        if changed and rule is not None and rule.shrink is not None:
            new = rule.shrink(layer, lambda variable, axis=-1: _kept_mask(shapes, variable, axis))
            rows.append(_cut_row(layer, shapes, plan))
            clones[id(layer)] = new
            return new
        if config is None and rule is not None and rule.config is not None:
            config = rule.config(layer)
        if changed:

            def width(variable, axis=-1):
                return int(shapes[id(variable)][axis])

            def kept(variable, axis=-1):
                return _kept_mask(shapes, variable, axis)

            config = _graph.resized_config(layer, config or layer.get_config(), width, kept)
            rows.append(_cut_row(layer, shapes, plan))
        new, finish = rebuild_layer(model, layer, weights, config)
        if finish is not None:
            finishers.append(finish)
        if rule is not None and rule.config is not None and new is not layer:
            # The layer's own `get_config` gives arguments its constructor
            # refuses: this copy saves the config that rebuilds it.
            fixed = dict(config)
            new.get_config = lambda: dict(fixed)
        if id(layer) in reshapes:
            reshapes.add(id(new))
        clones[id(layer)] = new
        return new

    def nested(layer, shapes):
        if id(layer) not in clones:
            clones[id(layer)] = cut_model(layer, plan, rows, finishers, shapes)
        return clones[id(layer)]

    selectors = {}
    # Reshapes that keep the last axis: their target follows its new width.
    reshapes = {
        id(node.operation)
        for node in _graph.Graph(model).nodes
        if type(node.operation).__name__ == "Reshape"
        and len(node.input_tensors) == 1
        and _graph._same_last_axis(node)
    }

    def call_function(layer, *args, **kwargs):
        if selectors:
            args, kwargs = keras.tree.map_structure(
                lambda x: selectors[id(x)](x) if id(x) in selectors else x, (args, kwargs)
            )
        if isinstance(layer, keras.Model):
            tensors = keras.tree.flatten(args[0] if args else kwargs.get("inputs"))
            shapes = [tuple(t.shape) for t in tensors if hasattr(t, "shape")]
            layer = nested(layer, shapes)
        elif id(layer) in reshapes and args and hasattr(args[0], "shape"):
            layer = _graph.reshaped(layer, args[0])
        return layer(*args, **kwargs)

    originals = _graph.functional_of(model).inputs
    if isinstance(model, keras.Sequential):
        ref = originals[0]
        shape = tuple(ref.shape) if input_shapes is None else input_shapes[0]
        new_model = keras.Sequential(
            [keras.Input(batch_shape=shape, dtype=ref.dtype, name=ref.name)],
            name=model.name,
            trainable=model.trainable,
        )
        if input_shapes is None and id(ref) in plan.inputs:
            new_model.add(SelectFeatures(plan.inputs[id(ref)], name=f"{ref.name}_features"))
            shape = tuple(new_model.outputs[0].shape)
        for layer in layers:
            if isinstance(layer, keras.Model):
                layer = nested(layer, [shape])
            else:
                layer = clone(layer)
                if id(layer) in reshapes:
                    layer = _graph.reshaped(layer, new_model.outputs[0])
            new_model.add(layer)
            shape = tuple(new_model.outputs[0].shape)
    else:
        shapes = input_shapes or [tuple(t.shape) for t in originals]
        new_inputs = [
            keras.Input(batch_shape=shape, dtype=t.dtype, name=t.name)
            for shape, t in zip(shapes, originals, strict=True)
        ]
        if input_shapes is None:
            for new, original in zip(new_inputs, originals, strict=True):
                if id(original) in plan.inputs:
                    selector = SelectFeatures(
                        plan.inputs[id(original)], name=f"{original.name}_features"
                    )
                    selectors[id(new)] = selector
        new_model = keras.models.clone_model(
            model,
            input_tensors=keras.tree.pack_sequence_as(
                _graph.functional_of(model)._inputs_struct, new_inputs
            ),
            clone_function=clone,
            call_function=call_function,
        )
    return new_model


def _cut_row(layer, shapes, plan):
    """The `LayerCompaction` of a layer that lost channels or changed weights."""
    variables = layer.weights
    first, axis, in_axis = _graph.units_axes(layer)
    before, after = first.shape, shapes[id(first)]
    kept = _kept_mask(shapes, first, axis)
    bias = plan.bias_added.get(id(layer))
    added = 0 if bias is None else int(kept.sum())
    return LayerCompaction(
        layer=layer.name,
        units=int(before[axis]),
        kept_units=int(after[axis]),
        inputs=int(before[in_axis]),
        kept_inputs=int(after[in_axis]),
        params=int(sum(np.prod(v.shape) for v in variables)),
        kept_params=int(sum(np.prod(shapes[id(v)]) for v in variables)) + added,
        unit_indices=tuple(int(i) for i in np.flatnonzero(kept)),
    )


def compile_like(model, new_model):
    """Compiles `new_model` as `model` was: optimizer, loss and metrics from its config.

    The optimizer's state is new. (`clone_model` compiles functional copies
    itself; Sequential models built here are not.)
    """
    if model.compiled and not new_model.compiled:
        new_model.compile_from_config(model.get_compile_config())
