"""`strip`: a plain-Keras copy of a model, for places without kerasreg.

A model trained with kerasreg holds kerasreg objects in its saved config:
its regularizers, its `ProximalOptimizer` (when compiled), `FeatureGate`
and `SelectFeatures` layers. Loading such a file needs `import kerasreg`.
`strip` writes the model's config without them, builds a new model from it
(as `keras.models.load_model` builds one from a file), and copies the
weights.
"""

import warnings

import keras
import numpy as np
from keras import ops

from kerasreg import _model_walk
from kerasreg import _save_guard
from kerasreg import apply as apply_lib
from kerasreg._validation import Boolean
from kerasreg._validation import InstanceOf
from kerasreg._validation import Options
from kerasreg._validation import invalid_argument
from kerasreg._validation import validate_params
from kerasreg.layers import FeatureGate
from kerasreg.layers import SelectFeatures
from kerasreg.optimizers import ProximalOptimizer
from kerasreg.regularizers import L1
from kerasreg.regularizers import L2
from kerasreg.regularizers import ElasticNet

__all__ = ["strip"]


def _from_kerasreg(cls):
    """Whether loading an instance of `cls` needs kerasreg (it or a base is ours)."""
    return isinstance(cls, type) and any(
        c.__module__.split(".")[0] == "kerasreg" for c in cls.__mro__
    )


def _node_class(node):
    """The class a serialized object names, or `None` (not a serialized object)."""
    if not (isinstance(node, dict) and "class_name" in node and "config" in node):
        return None
    name = node.get("registered_name")
    cls = keras.saving.get_registered_object(name) if isinstance(name, str) else None
    if cls is None and str(node.get("module", "")).split(".")[0] == "kerasreg":
        return type(node["class_name"], (), {"__module__": node["module"]})
    return cls


def _keras_equivalent(regularizer):
    """Keras' own regularizer with the same penalty, or `None` where there is none.

    `L1` and `L2` have Keras' `L1` and `L2`; `ElasticNet(s, r)` has
    `L1L2(l1=s * r, l2=s * (1 - r))`. `GroupLasso` and `MagnitudePruning`
    have none.
    """
    if type(regularizer) is L1:
        return keras.regularizers.L1(regularizer.l1)
    if type(regularizer) is L2:
        return keras.regularizers.L2(regularizer.l2)
    if type(regularizer) is ElasticNet:
        return keras.regularizers.L1L2(l1=regularizer.l1, l2=regularizer.l2)
    return None


class _Stripper:
    """Rewrites one model's serialized config without kerasreg objects."""

    def __init__(self, model, regularizers):
        self.mode = regularizers
        self.gates = [v.layer for v in _model_walk.walk(model) if isinstance(v.layer, FeatureGate)]
        self.dropped = []  # penalties with no Keras equivalent, in "keras" mode

    def regularizer(self, node):
        regularizer = keras.saving.deserialize_keras_object(node)
        if self.mode == "remove":
            return None
        equivalent = _keras_equivalent(regularizer)
        if equivalent is None:
            self.dropped.append(repr(regularizer))
            return None
        return keras.saving.serialize_keras_object(equivalent)

    def gate(self, node):
        """A `Rescaling` layer that multiplies by the gates' values."""
        matches = [
            g
            for g in self.gates
            if g.name == node["config"]["name"]
            and keras.saving.serialize_keras_object(g)["config"] == node["config"]
        ]
        if not matches:  # a gate made by the code of a subclassed layer: see `_check_plain`
            return node
        gate = matches[0]
        scale_shape = gate._broadcast_shape[1:]
        if keras.config.image_data_format() == "channels_first" and len(scale_shape) < 3:
            raise ValueError(
                f"`strip` cannot replace FeatureGate '{gate.name}' under the "
                "'channels_first' image data format: `keras.layers.Rescaling` would "
                "reshape its scale for images. Call `keras.config.set_image_data_format("
                "'channels_last')` first (the gates do not depend on it)."
            )
        scale = np.reshape(ops.convert_to_numpy(gate.gates), scale_shape)
        rescaling = keras.layers.Rescaling(
            scale, name=gate.name, dtype=gate.dtype_policy, trainable=False
        )
        new = dict(node, **keras.saving.serialize_keras_object(rescaling))
        new.pop("build_config", None)
        return new

    def __call__(self, node):
        cls = _node_class(node)
        if cls is not None and _from_kerasreg(cls):
            if issubclass(cls, keras.regularizers.Regularizer):
                return self.regularizer(node)
            if issubclass(cls, ProximalOptimizer):
                return self(node["config"]["inner_optimizer"])
            if issubclass(cls, FeatureGate):
                return self.gate(node)
        if isinstance(node, dict):
            return {key: self(value) for key, value in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(self(value) for value in node)
        return node


def _stateful(model):
    """The layers that own variables, in walk order; gates excluded (folded)."""
    return [
        v.layer
        for v in _model_walk.walk(model)
        if _model_walk.own_variables(v.layer) and not isinstance(v.layer, FeatureGate)
    ]


def _copy_weights(source, target):
    """Assigns `source`'s variables to `target`'s, layer by layer in walk order."""
    sources, targets = _stateful(source), _stateful(target)
    pairs = list(zip(sources, targets, strict=False))  # lengths checked below
    mismatch = len(sources) != len(targets) or any(
        [tuple(v.shape) for v in _model_walk.own_variables(a)]
        != [tuple(v.shape) for v in _model_walk.own_variables(b)]
        for a, b in pairs
    )
    if mismatch:
        raise ValueError(
            f"`strip` rebuilt model '{source.name}' from its config, and the rebuilt "
            "layers' weights do not match the original's (a layer whose `get_config` "
            "does not describe the weights it creates?). Layers with weights: "
            f"{[layer.name for layer in sources]} vs {[layer.name for layer in targets]}."
        )
    for a, b in pairs:
        for va, vb in zip(_model_walk.own_variables(a), _model_walk.own_variables(b), strict=True):
            vb.assign(ops.convert_to_numpy(va))  # a copy: JAX may donate the buffer


def _take(layer, inputs):
    return ops.take(inputs, np.asarray(layer.indices, dtype="int32"), axis=-1)


def _without_select_features(model):
    """`model` with every `SelectFeatures` replaced by a `keras.ops.take` node.

    Builds new Sequential-free functional models around the same layer
    objects (a Sequential model cannot hold an operation), so it is only
    called on a copy of the user's model.
    """
    visits = _model_walk.walk(model)
    if not any(isinstance(v.layer, SelectFeatures) for v in visits):
        return model
    if not isinstance(model, (keras.Sequential, keras.src.models.Functional)):
        raise ValueError(
            f"`strip` cannot replace the `SelectFeatures` layers of model '{model.name}': "
            "it is subclassed, so its code, not its config, creates them."
        )

    def convert(layer):
        return _without_select_features(layer) if isinstance(layer, keras.Model) else layer

    if isinstance(model, keras.Sequential):
        ref = model.inputs[0]
        inputs = keras.Input(batch_shape=ref.shape, dtype=ref.dtype, name=ref.name)
        x = inputs
        for layer in model.layers:
            x = _take(layer, x) if isinstance(layer, SelectFeatures) else convert(layer)(x)
        return keras.Model(inputs, x, name=model.name, trainable=model.trainable)

    def call(layer, *args, **kwargs):
        if isinstance(layer, SelectFeatures):
            return _take(layer, args[0])
        return layer(*args, **kwargs)

    return keras.models.clone_model(model, clone_function=convert, call_function=call)


def _build(config, model):
    """The model `config` describes; `model`'s own layer classes need no registration."""
    classes = {type(v.layer).__name__: type(v.layer) for v in _model_walk.walk(model)}
    return keras.saving.deserialize_keras_object(config, custom_objects=classes, safe_mode=True)


def _replace_in_memory(model, original, mode):
    """Replaces kerasreg penalties that the rebuilt model got from code, not config.

    A subclassed model's or a user's layer's code may create weights with a
    kerasreg regularizer, and `regularize` may have attached one that no
    config holds (the original kept it in memory): in "keras" mode those get
    their Keras equivalent here, through `regularize` (which refuses to save
    what no config can hold).
    """
    replacements = {}
    for a, b in zip(_stateful(original), _stateful(model), strict=True):
        pending = _save_guard.pending_weights(a)
        for va, vb in zip(_model_walk.own_variables(a), _model_walk.own_variables(b), strict=True):
            regularizer = vb.regularizer
            if regularizer is not None and _from_kerasreg(type(regularizer)):
                replacements[id(vb)] = (vb.name, _keras_equivalent(regularizer))
            elif mode == "keras" and va.name in pending:
                replacements[id(vb)] = (vb.name, _keras_equivalent(va.regularizer))
    if mode == "remove":
        replacements = {key: (name, None) for key, (name, _) in replacements.items()}
    if replacements:
        names = tuple(dict.fromkeys(name for name, _ in replacements.values()))

        def choose(layer, weight):
            return replacements.get(id(weight), (None, weight.regularizer))[1]

        apply_lib.regularize(model, choose, weights=names)


def _check_plain(model):
    """Raises if loading `model`'s config would still need kerasreg."""
    left = [v.path for v in _model_walk.walk(model) if _from_kerasreg(type(v.layer))]
    try:
        config = keras.saving.serialize_keras_object(model)
    except ValueError:  # penalties no config can hold: saving says so itself
        config = None
    stack = [config]
    while stack:
        node = stack.pop()
        cls = _node_class(node)
        if cls is not None and _from_kerasreg(cls):
            left.append(f"{node['class_name']} in the config")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    if left:
        raise ValueError(
            f"`strip` cannot remove every kerasreg object from model '{model.name}': "
            f"{', '.join(dict.fromkeys(left))} (made by the code of a subclassed model or "
            "of a user's layer, or held by a config `strip` cannot rewrite). Build the model "
            "without them for deployment, and copy the weights."
        )


@validate_params(
    {
        "model": InstanceOf(keras.Model, "a built keras.Model"),
        "regularizers": Options("remove", "keras"),
        "compile": Boolean(),
    }
)
def strip(model, *, regularizers="remove", compile=False):
    """Returns a copy of `model` that loads without kerasreg, for deployment.

    The copy computes the same function with Keras' own layers only, so its
    `.keras` file loads with `keras.models.load_model` where kerasreg is not
    installed, and `model.export()` and TFLite conversion see nothing but
    Keras:

    - every kerasreg regularizer is removed (`regularizers="remove"`) or
      replaced by Keras' own equivalent (`regularizers="keras"`, for a copy
      that keeps training: `L1`, `L2`, and `ElasticNet` as `L1L2`;
      `GroupLasso` and `MagnitudePruning` have none and are removed, with a
      warning);
    - each `FeatureGate` becomes a `keras.layers.Rescaling` whose scale is
      the gates' values (not trainable);
    - each `SelectFeatures` (which `kerasreg.compact` puts in front of a
      layer it removed input features from) becomes a `keras.ops.take`
      node; a Sequential model that holds one becomes a functional model;
    - with `compile=True`, a model compiled with a `ProximalOptimizer` is
      compiled with its inner optimizer (same loss and metrics, new
      optimizer state). By default the copy is not compiled, so its file
      holds no optimizer state (for Adam, twice the weights' size).

    The copy is built from the model's config, rewritten, as
    `keras.models.load_model` builds a model from a file, and gets the
    original's weights; the original is not modified. Predictions are
    identical: the same operations run on the same weights. Apply it last,
    after `kerasreg.compact`: compaction reads the gates.

    Args:
        model: A built `keras.Model`: Sequential, functional or subclassed.
        regularizers: `"remove"` to drop every kerasreg penalty, or
            `"keras"` to replace those that have one by Keras' own
            equivalent. Defaults to `"remove"`.
        compile: Whether to compile the copy as the original was compiled
            (for a copy that keeps training). Defaults to `False`.

    Returns:
        A new `keras.Model`.

    Raises:
        InvalidArgumentError: If an argument is invalid or `model` is not
            built.
        ValueError: If the model's code (a subclassed model, a user's layer)
            creates kerasreg layers or regularizers that no config rewrite
            can reach.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import kerasreg
    >>> model = keras.Sequential([
    ...     keras.Input((3,)),
    ...     kerasreg.FeatureGate(name="gate"),
    ...     keras.layers.Dense(2, kernel_regularizer=kerasreg.L1(0.01), name="out"),
    ... ])
    >>> plain = kerasreg.strip(model)
    >>> [type(layer).__name__ for layer in plain.layers]
    ['Rescaling', 'Dense']
    >>> plain.get_layer("out").kernel_regularizer is None
    True
    >>> x = np.ones((2, 3), "float32")
    >>> bool(np.allclose(model.predict(x, verbose=0), plain.predict(x, verbose=0)))
    True
    """
    if not model.built:
        raise invalid_argument(
            "model",
            "a built model: build it (`model.build(input_shape)`, or an `Input` first in a "
            "Sequential) or call it once on data before `strip`",
            model,
        )
    stripper = _Stripper(model, regularizers)
    with _save_guard.penalties_unguarded(model):
        config = stripper(keras.saving.serialize_keras_object(model))
    compile_config = config.pop("compile_config", None)
    plain = _build(config, model)
    _copy_weights(model, plain)
    converted = _without_select_features(plain)
    if converted is not plain:
        config = keras.saving.serialize_keras_object(converted)
        config.pop("compile_config", None)  # `clone_model` compiles
        plain = _build(config, converted)
        _copy_weights(converted, plain)
    if compile and compile_config:
        plain.compile_from_config(compile_config)
    _replace_in_memory(plain, model, regularizers)
    if stripper.dropped:
        warnings.warn(
            "Keras has no regularizer equal to "
            + ", ".join(dict.fromkeys(stripper.dropped))
            + "; `strip(regularizers='keras')` removed it.",
            stacklevel=3,  # past the `validate_params` wrapper, to the caller's line
        )
    _check_plain(plain)
    return plain
