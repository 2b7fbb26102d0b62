"""The one walk over a model's layers, and the private Keras lists it reads."""

import keras

from kerasreg import _model_walk


class Block(keras.layers.Layer):
    """A user's layer holding a Dense and its own weight."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(2, name="inner")

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(2,), name="scale")

    def call(self, x):
        return self.inner(x) * self.scale


def _model():
    shared = keras.layers.Dense(3, name="shared")
    nested = keras.Sequential([keras.Input((3,)), Block(name="block")], name="nested")
    inputs = keras.Input((3,))
    outputs = nested(shared(shared(inputs)))
    return keras.Model(inputs, outputs, name="root")


def test_walk_visits_every_layer_once_in_keras_order():
    model = _model()
    visits = _model_walk.walk(model)
    layers = [visit.layer for visit in visits]
    assert layers == model._flatten_layers(include_self=True, recursive=True)
    paths = {visit.path for visit in visits}
    assert {"", "shared", "nested", "nested/block", "nested/block/inner"} <= paths
    inner = next(v for v in visits if v.path == "nested/block/inner")
    assert [a.name for a in inner.ancestors] == ["root", "nested", "block"]


def test_own_variables_are_the_layers_own():
    model = _model()
    block = model.get_layer("nested").get_layer("block")
    assert [v.name for v in _model_walk.own_variables(block)] == ["scale"]
    assert [v.name for v in _model_walk.own_variables(block.inner)] == ["kernel", "bias"]
    assert _model_walk.own_variables(model) == []
