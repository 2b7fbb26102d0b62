"""The one place that refuses to save a penalty no config can hold.

`kerasreg.regularize` can attach penalties that a model's config cannot
hold: a weight of a user's layer without a `<weight>_regularizer` argument,
layers built by the code of a subclassed model, a regularizer without a
config, a `CoupledGroupLasso` over several layers. A file saved from such a
model would load without them, so saving and cloning refuse, with one
message naming what cannot be saved and what to do.

`record` marks those weights on their layers (and drops the marks once the
weight gets back a penalty a config holds); everything else here reads the
marks. The refusal is reached two ways, and both are needed:

- **Before a file is opened.** Keras opens the target before it asks the
  model for anything: `saving_lib.save_model` runs `open(filepath, "wb")`
  (which empties the file) before it serializes the model, and
  `legacy_h5_format.save_model_to_hdf5` opens `h5py.File(filepath, "w")`
  before `get_config`. Between `keras.saving.save_model(model, path)` and
  those lines Keras reads nothing of the model but `model.built`, so no
  method of the model can refuse in time. Those two module functions are
  what `saving_api.save_model` calls for every full-model save
  (`Model.save`, `keras.saving.save_model`, `keras.models.save_model`,
  `ModelCheckpoint`), looked up when called; `_guard_keras_saving`
  replaces each with a wrapper that checks the model first and then calls
  Keras' function unchanged. It does so once, the first time a penalty is
  marked (never on import), and models without marks save as before.
- **On serialization.** `get_config` of a marked layer and of the layers
  above it raises, so `to_json`, `clone_model`, `serialize_keras_object`
  and a KerasHub preset refuse too. Keras has no per-object hook for this,
  so the guard is an instance attribute that stands in for the bound
  method (set past Keras' and torch's attribute tracking); it removes
  itself on the first call after the marks are gone.

Weights alone (`save_weights`, `ModelCheckpoint(save_weights_only=True)`)
need no config and save as always.
"""

import contextlib
import functools

import keras
from keras.src.legacy.saving import legacy_h5_format
from keras.src.saving import saving_lib

from kerasreg import _model_walk

# The instance attribute that marks, on a layer, the weights whose penalty
# no saved config holds: `{weight name: (original regularizer, reason)}`.
_PENDING = "_kerasreg_unsaved_regularizers"

# The Keras module functions that open a file for a full-model save.
_KERAS_SAVES = ((saving_lib, "save_model"), (legacy_h5_format, "save_model_to_hdf5"))


def serialized(regularizer):
    """`regularizer`'s serialized config, or a token unique to it if it has none."""
    if regularizer is None:
        return None
    try:
        return keras.saving.serialize_keras_object(regularizer)
    except (NotImplementedError, TypeError, ValueError):
        return ("unserializable", id(regularizer))


def pending_weights(layer):
    """`{weight name: (original regularizer, reason)}` for `layer`'s own marked weights."""
    return getattr(layer, _PENDING, {})


def unsaved(layer):
    """What cannot be saved in `layer` and under it, one line each."""
    lines = []
    for visit in _model_walk.walk(layer):
        for _, (_, line) in sorted(pending_weights(visit.layer).items()):
            lines.append(line)
    return lines


def refuse_if_unsaved(layer):
    """Raises the `ValueError` that names what `layer`'s config cannot hold, if anything."""
    lines = unsaved(layer)
    if lines:
        raise ValueError(
            "The config of this model cannot hold the regularizers that "
            "`kerasreg.regularize` attached to: "
            + "; ".join(lines)
            + ". A model saved or cloned from it would lose these penalties. "
            "Give such a layer a `<weight>_regularizer` argument that its `get_config` "
            "returns and its `build` passes to `add_weight(regularizer=...)`; or save "
            "the weights with `save_weights` and call `kerasreg.regularize` again on the "
            "rebuilt model; or remove the penalties with `kerasreg.regularize(model, None, "
            '...)` (with `groups="dependency"` for a coupled group lasso).'
        )


def _checked_save(save):
    """Keras' `save` (one of `_KERAS_SAVES`), refusing a marked model first."""

    @functools.wraps(save)
    def checked_save(model, *args, **kwargs):
        if isinstance(model, keras.layers.Layer):
            refuse_if_unsaved(model)
        return save(model, *args, **kwargs)

    checked_save._kerasreg_checked = True
    return checked_save


def _guard_keras_saving():
    for module, name in _KERAS_SAVES:
        save = getattr(module, name)
        if not getattr(save, "_kerasreg_checked", False):
            setattr(module, name, _checked_save(save))


class _ConfigGuard:
    """Stands in for a layer's `get_config` while a penalty under it cannot be saved."""

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, *args, **kwargs):
        refuse_if_unsaved(self.layer)
        _remove_guard(self.layer)
        return self.layer.get_config(*args, **kwargs)


def _is_guarded(layer):
    return isinstance(layer.__dict__.get("get_config"), _ConfigGuard)


def _remove_guard(layer):
    if _is_guarded(layer):
        object.__delattr__(layer, "get_config")


def _install_guard(layer):
    if not _is_guarded(layer):
        # Past Keras' and torch's attribute tracking: a plain instance attribute.
        object.__setattr__(layer, "get_config", _ConfigGuard(layer))


@contextlib.contextmanager
def penalties_unguarded(model):
    """Lets `model` be serialized with penalties no config holds (they are dropped).

    For copies that are not the model itself: `strip`'s plain copy,
    `compact`'s smaller one.
    """
    guarded = [v.layer for v in _model_walk.walk(model) if _is_guarded(v.layer)]
    for layer in guarded:
        _remove_guard(layer)
    try:
        yield
    finally:
        for layer in guarded:
            _install_guard(layer)


def _saved_configs(model):
    """Every layer config the model's own config holds, by layer name."""
    try:
        tree = keras.saving.serialize_keras_object(model)
    except Exception:  # a model that cannot be serialized holds nothing
        return {}
    index = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            config = node.get("config")
            if "class_name" in node and isinstance(config, dict) and "name" in config:
                index.setdefault(config["name"], []).append(config)
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return index


class _Saving:
    """What the model's config holds, read once for one `record`."""

    def __init__(self, model, config_arguments):
        self.index = _saved_configs(model)
        self.config_arguments = config_arguments
        self.own_configs = {}

    def own_config(self, layer):
        if id(layer) not in self.own_configs:
            try:
                config = keras.saving.serialize_keras_object(layer)["config"]
            except Exception:
                config = None
            self.own_configs[id(layer)] = config
        return self.own_configs[id(layer)]

    def holds(self, visit, name, regularizer):
        """Whether the model's config holds `regularizer` for this weight.

        True when the weight's layer, or a layer above it whose config holds
        its sublayers' regularizers (an RNN for its cell, `MultiHeadAttention`
        for its projections), appears in the model's config with the
        regularizer in one of the weight's config arguments.
        """
        expected = serialized(regularizer)
        for layer in (visit.layer,) + tuple(reversed(visit.ancestors)):
            own = self.own_config(layer)
            if own is None or not any(config == own for config in self.index.get(layer.name, ())):
                continue
            if any(
                argument in own and own[argument] == expected
                for argument in self.config_arguments(name)
            ):
                return True
        return False

    def reason(self, visit, name, variable):
        """The line `refuse_if_unsaved` gives for this weight."""
        where = f"{visit.path or visit.layer.name}/{variable.name}"
        joint = getattr(variable.regularizer, "joint", None)
        if joint is not None:
            return f"'{where}' (its part of {joint!r}, a penalty over several weights)"
        own = self.own_config(visit.layer) or {}
        arguments = self.config_arguments(name)
        if not any(argument in own for argument in arguments):
            return f"'{where}' ({type(visit.layer).__name__}'s config has no `{arguments[0]}`)"
        return (
            f"'{where}' (its layer is created by the code of a layer above it, whose config "
            "does not hold it)"
        )


def record(model, visits, changed, config_arguments):
    """Marks the changed weights whose penalty the model's config cannot hold.

    `changed` holds `((visit, name, variable), previous)`, `previous` the
    serialized regularizer before the change; `config_arguments(name)` the
    config arguments that may hold weight `name`'s regularizer. A weight
    whose penalty no config holds is marked until it gets back the
    regularizer it had when `regularize` first changed it: the one its
    layer's code gives it. The marked layers and those above them refuse
    to be serialized, and Keras' full-model saves check for marks before
    they open a file. A regularizer with `_held_by_weights` (`KeepZeros`,
    whose mask is the weight's own zeros) is never marked: a file without it
    keeps everything it holds.
    """
    for visit in visits:
        _remove_guard(visit.layer)
    saving = _Saving(model, config_arguments)
    for (visit, name, variable), previous in changed:
        pending = dict(pending_weights(visit.layer))
        original = pending.get(name, (previous, None))[0]
        if saving.holds(visit, name, variable.regularizer) or getattr(
            variable.regularizer, "_held_by_weights", False
        ):
            pending.pop(name, None)
        elif serialized(variable.regularizer) == original:
            pending.pop(name, None)
        else:
            pending[name] = (original, saving.reason(visit, name, variable))
        object.__setattr__(visit.layer, _PENDING, pending)
    for visit in visits:
        if pending_weights(visit.layer):
            _guard_keras_saving()
            for layer in visit.ancestors + (visit.layer,):
                _install_guard(layer)
