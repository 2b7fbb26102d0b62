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
    copy is built; each layer that changed adds its row to `rows`. A nested
    model is copied when it is called, on inputs that may have lost
    channels: `input_shapes` are theirs (`None` for the outermost model,
    whose inputs keep their shapes and are read through a `SelectFeatures`
    where features go).
    """
    cut = _Cut(model, plan, rows, finishers)
    if isinstance(model, keras.Sequential):
        return cut.sequential(input_shapes)
    return cut.functional(input_shapes)


class _Cut:
    """Copies one model as the plan decided: its layers once each, nested models in turn."""

    def __init__(self, model, plan, rows, finishers):
        self.model = model
        self.plan = plan
        self.rows = rows
        self.finishers = finishers
        self.clones = {}
        self.selectors = {}  # id(new input) -> its `SelectFeatures`
        # Reshapes that keep the last axis: their target follows its new width.
        self.reshapes = {
            id(node.operation)
            for node in _graph.Graph(model).nodes
            if type(node.operation).__name__ == "Reshape"
            and len(node.input_tensors) == 1
            and _graph._same_last_axis(node)
        }

    def _weights(self, layer):
        """`(weights, shapes, changed)`: `layer`'s weights as planned, their shapes and masks."""
        weights, shapes, changed = [], {}, False
        for variable, value in zip(layer.weights, layer.get_weights(), strict=True):
            if id(variable) in self.plan.values:
                value = self.plan.values[id(variable)].astype(value.dtype)
                changed = True
            for axis in range(value.ndim):
                removed = self.plan.removed.get((id(variable), axis))
                if removed is not None:
                    value = np.compress(~removed, value, axis=axis)
                    shapes[("mask", id(variable), axis)] = ~removed
                    changed = True
            shapes[id(variable)] = value.shape
            weights.append(value)
        return weights, shapes, changed

    def clone(self, layer):
        """The copy of `layer` (a `keras.ops` function or nested model: later, when called)."""
        if id(layer) in self.clones:
            return self.clones[id(layer)]
        if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
            return layer
        self.clones[id(layer)] = new = self._rebuilt(layer)
        if id(layer) in self.reshapes:
            self.reshapes.add(id(new))
        return new

    def _rebuilt(self, layer):
        weights, shapes, changed = self._weights(layer)
        config = None
        if id(layer) in self.plan.bias_added:
            bias, kernel, out_axis = self.plan.bias_added[id(layer)]
            weights.append(bias[_kept_mask(shapes, kernel, out_axis)].astype(kernel.dtype))
            config = {**layer.get_config(), "use_bias": True}
            changed = True

        def kept(variable, axis=-1):
            return _kept_mask(shapes, variable, axis)

        rule = _graph.layer_rule(layer)
        if changed:
            self.rows.append(_cut_row(layer, shapes, self.plan))
        if changed and rule is not None and rule.shrink is not None:
            return rule.shrink(layer, kept)
        if config is None and rule is not None and rule.config is not None:
            config = rule.config(layer)
        if changed:

            def width(variable, axis=-1):
                return int(shapes[id(variable)][axis])

            config = _graph.resized_config(layer, config or layer.get_config(), width, kept)
        new, finish = rebuild_layer(self.model, layer, weights, config)
        if finish is not None:
            self.finishers.append(finish)
        if rule is not None and rule.config is not None and new is not layer:
            # The layer's own `get_config` gives arguments its constructor
            # refuses: this copy saves the config that rebuilds it.
            fixed = dict(config)
            new.get_config = lambda: dict(fixed)
        return new

    def nested(self, layer, shapes):
        if id(layer) not in self.clones:
            self.clones[id(layer)] = cut_model(layer, self.plan, self.rows, self.finishers, shapes)
        return self.clones[id(layer)]

    def call_function(self, layer, *args, **kwargs):
        """Calls a copy: behind a `SelectFeatures`, a nested copy, a reshape to the new width."""
        if self.selectors:
            args, kwargs = keras.tree.map_structure(
                lambda x: self.selectors[id(x)](x) if id(x) in self.selectors else x,
                (args, kwargs),
            )
        if isinstance(layer, keras.Model):
            tensors = keras.tree.flatten(args[0] if args else kwargs.get("inputs"))
            layer = self.nested(layer, [tuple(t.shape) for t in tensors if hasattr(t, "shape")])
        elif id(layer) in self.reshapes and args and hasattr(args[0], "shape"):
            layer = _graph.reshaped(layer, args[0])
        return layer(*args, **kwargs)

    def sequential(self, input_shapes):
        ref = _graph.functional_of(self.model).inputs[0]
        shape = tuple(ref.shape) if input_shapes is None else input_shapes[0]
        new_model = keras.Sequential(
            [keras.Input(batch_shape=shape, dtype=ref.dtype, name=ref.name)],
            name=self.model.name,
            trainable=self.model.trainable,
        )
        if input_shapes is None and id(ref) in self.plan.inputs:
            new_model.add(SelectFeatures(self.plan.inputs[id(ref)], name=f"{ref.name}_features"))
        for layer in self.model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, keras.Model):
                layer = self.nested(layer, [tuple(new_model.outputs[0].shape)])
            else:
                layer = self.clone(layer)
                if id(layer) in self.reshapes:
                    layer = _graph.reshaped(layer, new_model.outputs[0])
            new_model.add(layer)
        return new_model

    def functional(self, input_shapes):
        originals = _graph.functional_of(self.model).inputs
        shapes = input_shapes or [tuple(t.shape) for t in originals]
        new_inputs = [
            keras.Input(batch_shape=shape, dtype=t.dtype, name=t.name)
            for shape, t in zip(shapes, originals, strict=True)
        ]
        if input_shapes is None:
            for new, original in zip(new_inputs, originals, strict=True):
                if id(original) in self.plan.inputs:
                    self.selectors[id(new)] = SelectFeatures(
                        self.plan.inputs[id(original)], name=f"{original.name}_features"
                    )
        return keras.models.clone_model(
            self.model,
            input_tensors=keras.tree.pack_sequence_as(
                _graph.functional_of(self.model)._inputs_struct, new_inputs
            ),
            clone_function=self.clone,
            call_function=self.call_function,
        )


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
