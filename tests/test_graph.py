"""Tests of kerasreg._graph: the wiring of models and what nodes do to channels."""

import keras
import numpy as np
import pytest

from kerasreg import _graph
from kerasreg.layers import FeatureGate


def _rule_of_output(make, shape=(4, 4, 3)):
    inputs = keras.Input(shape)
    model = keras.Model(inputs, make(inputs))
    graph = _graph.Graph(model)
    return graph.rule(graph.producer[id(model.outputs[0])])


@pytest.mark.parametrize(
    "make, kind",
    [
        (keras.layers.Dense(2), _graph.COMPUTE),
        (keras.layers.Conv2D(2, 3), _graph.COMPUTE),
        (keras.layers.Dropout(0.5), _graph.ELEMENTWISE),
        (keras.layers.Activation("gelu"), _graph.ELEMENTWISE),
        (keras.layers.ReLU(6.0), _graph.ELEMENTWISE),
        (keras.ops.relu, _graph.ELEMENTWISE),
        (keras.ops.sigmoid, _graph.ELEMENTWISE),
        (lambda x: keras.ops.clip(x, 0.0, 6.0), _graph.ELEMENTWISE),
        (lambda x: 1.0 - x, _graph.ELEMENTWISE),
        (lambda x: keras.ops.maximum(x, 0.0), _graph.ELEMENTWISE),
        (keras.layers.BatchNormalization(), _graph.PER_CHANNEL),
        (FeatureGate(), _graph.PER_CHANNEL),
        (keras.layers.DepthwiseConv2D(3), _graph.PER_CHANNEL),
        (keras.layers.MaxPooling2D(), _graph.POOLING),
        (keras.layers.GlobalAveragePooling2D(), _graph.POOLING),
        (keras.layers.ZeroPadding2D(), _graph.POOLING),
        (keras.layers.Flatten(), _graph.FLATTEN),
        (lambda x: x + x, _graph.MERGE),
        (lambda x: keras.layers.Add()([x, x]), _graph.MERGE),
        (lambda x: keras.ops.concatenate([x, x], axis=-1), _graph.CONCATENATE),
        (lambda x: keras.layers.Concatenate()([x, x]), _graph.CONCATENATE),
        (lambda x: keras.layers.Concatenate(axis=1)([x, x]), _graph.OPAQUE),
        (keras.ops.softmax, _graph.OPAQUE),
        (keras.layers.Activation("softmax"), _graph.OPAQUE),
        (lambda x: x * np.ones(3, "float32"), _graph.OPAQUE),
        (lambda x: keras.ops.transpose(x, (0, 2, 1, 3)), _graph.OPAQUE),
        (keras.layers.Reshape((48,)), _graph.OPAQUE),
        (keras.layers.DepthwiseConv2D(3, depth_multiplier=2), _graph.OPAQUE),
        (keras.layers.LayerNormalization(), _graph.OPAQUE),
    ],
)
def test_each_node_gets_the_rule_of_its_kind(make, kind):
    assert _rule_of_output(make).kind == kind


def test_rules_map_constants_exactly():
    # A channel's constant through a node is what the node computes on it.
    values = np.array([0.5, np.nan, -2.0])
    for make in (keras.ops.relu, lambda x: 1.0 - x, keras.layers.Activation("tanh")):
        rule = _rule_of_output(make, shape=(3,))
        expected = np.asarray(make(np.array([[0.5, 0.0, -2.0]], "float32")))[0]
        out = rule.values(values)
        assert np.isnan(out[1])
        np.testing.assert_allclose(out[[0, 2]], expected[[0, 2]], rtol=1e-6)
    # Padding: only a constant 0 stays constant.
    rule = _rule_of_output(keras.layers.ZeroPadding2D())
    np.testing.assert_array_equal(rule.values(np.array([0.0, 1.0, np.nan])), [0.0, np.nan, np.nan])
    # Flatten: channel c becomes the features c, c + 3, ...
    rule = _rule_of_output(keras.layers.Flatten(), shape=(2, 2, 3))
    np.testing.assert_array_equal(rule.values(np.array([1.0, 2.0, 3.0])), [1.0, 2.0, 3.0] * 4)


def test_every_keras_op_in_the_table_exists():
    # The table names `keras.ops` operations by class: a rename in Keras must
    # fail here, not make compaction quietly stop following the operation.
    from keras.src.ops import core
    from keras.src.ops import math
    from keras.src.ops import nn
    from keras.src.ops import numpy as knp

    for name in _graph._OP_RULES:
        assert any(hasattr(module, name) for module in (nn, knp, math, core)), name


def test_graph_indexes_layers_operations_and_nested_models():
    block = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)], name="block")
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    h = shared(keras.ops.relu(block(inputs)))
    h = shared(h) + inputs
    model = keras.Model(inputs, [keras.layers.Dense(1, name="out")(h), h])
    graph = _graph.Graph(model)
    # Every node after the nodes that compute its inputs.
    position = {id(node): i for i, node in enumerate(graph.nodes)}
    for node in graph.nodes:
        for t in node.input_tensors:
            assert position[id(graph.producer[id(t)])] < position[id(node)]
    assert len(graph.calls(shared)) == 2 and graph.node(shared) is None
    assert graph.node(model.get_layer("out")) is not None
    assert graph.nested == [block]
    out_node = graph.node(model.get_layer("out"))
    assert not graph.private(out_node.input_tensors[0])  # also an output of the model
    assert {type(node.operation).__name__ for node in graph.nodes} >= {"Relu", "Add"}
    with pytest.raises(ValueError, match="argument `model`.*built"):
        _graph.Graph(keras.Sequential([keras.layers.Dense(2)]))
