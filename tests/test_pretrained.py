"""Pretrained-model workflows: regularize, train with ProximalOptimizer, save.

Offline: each model comes from its constructor with random weights
(`weights=None`; KerasHub backbones from their hyperparameters, at tiny
sizes). What is tested is the workflow on the models' real layer
structure, not what pretrained weights hold. Penalties are checked against
NumPy's sum of absolute values; sparsity is counted as exact zeros
(`np.count_nonzero`).
"""

from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np
import pytest

import kerasreg
from tests.conftest import to_numpy

L = keras.layers


def _layers_of(model, classes):
    """The layers under `model` that are instances of `classes`, found by Keras' own walk."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, classes)
    ]


def _l1_oracle(variables, strength):
    """`strength * sum(|w|)` over `variables`, in float64."""
    return strength * sum(np.abs(to_numpy(v).astype("float64")).sum() for v in variables)


def _penalty(model):
    return sum(float(to_numpy(loss)) for loss in model.losses)


def _penalized(model):
    return {id(v) for v in model.weights if getattr(v, "regularizer", None) is not None}


def _snapshot(model):
    return {id(v): to_numpy(v).copy() for v in model.weights}


def _assert_zeros_only_where_targeted(model, targets, before):
    """Exact zeros in every targeted weight; no new exact zero anywhere else.

    An untargeted entry that started at zero (a bias, a normalization
    offset) may stay there; one that started elsewhere and is now exactly
    zero can only have been put there by a prox it should not get.
    """
    for variable in model.weights:
        now = to_numpy(variable)
        if id(variable) in targets:
            assert np.count_nonzero(now == 0) > 0, variable.path
        else:
            new_zeros = np.count_nonzero((now == 0) & (before[id(variable)] != 0))
            assert new_zeros == 0, variable.path


def _regularizer_configs(model):
    return [
        keras.saving.serialize_keras_object(getattr(v, "regularizer", None)) for v in model.weights
    ]


def _losses(model):
    return [float(to_numpy(loss)) for loss in model.losses]


# keras.applications: a residual CNN, Conv2D kernels only.


@pytest.mark.slow
def test_resnet50_conv_kernels_sparse_only_and_round_trips(tmp_path, rng):
    keras.utils.set_random_seed(0)
    # As test_compaction builds it: on JAX, its initializers are compiled once.
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    strength = 0.5
    kerasreg.regularize(model, kerasreg.L1(strength), layers=L.Conv2D)
    kernels = [layer.kernel for layer in _layers_of(model, L.Conv2D)]
    targets = {id(v) for v in kernels}
    assert len(kernels) == 53 and _penalized(model) == targets
    np.testing.assert_allclose(_penalty(model), _l1_oracle(kernels, strength), rtol=1e-5)

    x = rng.random((8, 32, 32, 3), dtype="float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, 8)]
    before = _snapshot(model)
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.01)), "mse")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    _assert_zeros_only_where_targeted(model, targets, before)
    np.testing.assert_allclose(_penalty(model), _l1_oracle(kernels, strength), rtol=1e-5)
    assert _penalty(model) > 0  # not every kernel zero: the oracle has something to check

    # Conv2D's config holds `kernel_regularizer`: the file keeps the penalties.
    model.save(tmp_path / "resnet50.keras")
    loaded = keras.models.load_model(tmp_path / "resnet50.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    assert _losses(loaded) == _losses(model)
    assert _regularizer_configs(loaded) == _regularizer_configs(model)


# KerasHub: backbones from their hyperparameters, under their task models.


@pytest.fixture(scope="module")
def keras_hub():
    return pytest.importorskip("keras_hub", reason="keras-hub is not installed")


def _bert_inputs(rng):
    return {
        "token_ids": rng.integers(0, 100, (8, 16)).astype("int32"),
        "segment_ids": np.zeros((8, 16), "int32"),
        "padding_mask": np.ones((8, 16), "int32"),
    }


def _vit_inputs(rng):
    return rng.random((8, 16, 16, 3), dtype="float32")


class HubCase(NamedTuple):
    """A KerasHub backbone under its task model, and how to train it."""

    backbone: str
    hyperparameters: dict
    task: str
    inputs: Callable
    # Dense and EinsumDense layers: per encoder layer the query, key, value
    # and output projections and the two feed-forward layers (+ BERT's pooler).
    kernels: int
    optimizer: Callable
    strength: float


HUB_CASES = {
    # Weights drawn with a standard deviation of 0.02: plain SGD steps,
    # thresholds of 0.001 each.
    "bert": HubCase(
        "BertBackbone",
        {
            "vocabulary_size": 100,
            "num_layers": 2,
            "num_heads": 2,
            "hidden_dim": 16,
            "intermediate_dim": 32,
            "max_sequence_length": 16,
            # No random bits: on JAX they took half the train step's compile time.
            "dropout": 0.0,
        },
        "BertTextClassifier",
        _bert_inputs,
        2 * 6 + 1,
        lambda: keras.optimizers.SGD(0.1),
        0.01,
    ),
    # Glorot-uniform weights, ten times larger: Adam, the preconditioned prox.
    "vit": HubCase(
        "ViTBackbone",
        {
            "image_shape": (16, 16, 3),
            "patch_size": 4,
            "num_layers": 2,
            "num_heads": 2,
            "hidden_dim": 16,
            "mlp_dim": 32,
        },
        "ViTImageClassifier",
        _vit_inputs,
        2 * 6,
        lambda: keras.optimizers.Adam(1e-3),
        0.3,
    ),
}
KERNELS = {"layers": (L.Dense, L.EinsumDense)}


def _hub_backbone(keras_hub, case, config=None):
    """A fresh backbone: from its `get_config()` if given, else the case's hyperparameters."""
    backbone_class = getattr(keras_hub.models, case.backbone)
    if config is not None:
        return backbone_class.from_config(config)
    return backbone_class(**case.hyperparameters)


def _hub_task(keras_hub, case, config=None):
    """The task model of a fresh backbone: a classifier head, no preprocessing."""
    backbone = _hub_backbone(keras_hub, case, config)
    return getattr(keras_hub.models, case.task)(backbone, num_classes=2, preprocessor=None)


@pytest.mark.parametrize("name", sorted(HUB_CASES))
def test_keras_hub_dense_kernels_sparse_only(keras_hub, name, rng):
    case = HUB_CASES[name]
    keras.utils.set_random_seed(0)
    task = _hub_task(keras_hub, case)
    backbone = task.backbone
    kerasreg.regularize(backbone, kerasreg.L1(case.strength), **KERNELS)
    kernels = [layer.kernel for layer in _layers_of(backbone, KERNELS["layers"])]
    targets = {id(v) for v in kernels}
    # Embeddings, normalization, biases, the patch convolution and the
    # task's head carry no penalty.
    assert len(kernels) == case.kernels and _penalized(task) == targets
    np.testing.assert_allclose(_penalty(task), _l1_oracle(kernels, case.strength), rtol=1e-5)

    x, y = case.inputs(rng), rng.integers(0, 2, 8)
    before = _snapshot(task)
    task.compile(
        optimizer=kerasreg.ProximalOptimizer(case.optimizer()),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    task.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    _assert_zeros_only_where_targeted(task, targets, before)
    np.testing.assert_allclose(_penalty(task), _l1_oracle(kernels, case.strength), rtol=1e-5)
    assert _penalty(task) > 0  # not every kernel zero: the oracle has something to check


def test_keras_hub_embeddings_are_chosen_by_weight_name(keras_hub):
    keras.utils.set_random_seed(0)
    backbone = _hub_backbone(keras_hub, HUB_CASES["bert"])
    # The token table (a ReversibleEmbedding), the segment table (an
    # Embedding) and KerasHub's own PositionEmbedding all name it "embeddings".
    kerasreg.regularize(backbone, kerasreg.L1(0.1), weights="embeddings")
    penalized = _penalized(backbone)
    tables = [v for v in backbone.weights if id(v) in penalized]
    assert sorted(v.path for v in tables) == [
        "position_embedding/embeddings",
        "segment_embedding/embeddings",
        "token_embedding/embeddings",
    ]
    np.testing.assert_allclose(_penalty(backbone), _l1_oracle(tables, 0.1), rtol=1e-5)
    # A class picks its instances and subclasses only: not PositionEmbedding.
    kerasreg.regularize(backbone, None, weights="embeddings")
    kerasreg.regularize(backbone, kerasreg.L1(0.1), layers=L.Embedding, weights="embeddings")
    penalized = _penalized(backbone)
    assert sorted(v.path for v in backbone.weights if id(v) in penalized) == [
        "segment_embedding/embeddings",
        "token_embedding/embeddings",
    ]


def _outputs(model, x):
    return keras.tree.map_structure(to_numpy, model(x, training=False))


@pytest.mark.parametrize("name", sorted(HUB_CASES))
def test_keras_hub_refuses_to_save_penalties_its_config_cannot_hold(keras_hub, name, tmp_path):
    case = HUB_CASES[name]
    keras.utils.set_random_seed(0)
    task = _hub_task(keras_hub, case)
    backbone = task.backbone
    kerasreg.regularize(backbone, kerasreg.L1(case.strength), **KERNELS)
    # A backbone's config is its hyperparameters: no layer config in it can
    # hold a penalty, so saving, cloning or exporting a preset refuses.
    kernels = [layer.kernel.path for layer in _layers_of(backbone, KERNELS["layers"])]
    for save in (
        lambda: task.save(tmp_path / "task.keras"),
        lambda: backbone.save_to_preset(tmp_path / "preset"),
        lambda: keras.models.clone_model(task),
    ):
        with pytest.raises(ValueError, match="cannot hold the regularizers") as info:
            save()
        message = str(info.value)
        assert all(f"'{kernel}'" in message for kernel in kernels), message
        assert "save_weights" in message and "kerasreg.regularize(model, None" in message


# KerasHub tasks compile themselves, and Keras says so when it loads one.
@pytest.mark.filterwarnings("ignore:`compile\\(\\)` was not called as part of model loading")
@pytest.mark.parametrize("name", sorted(HUB_CASES))
def test_keras_hub_round_trips_as_weights_or_without_penalties(keras_hub, name, tmp_path, rng):
    case = HUB_CASES[name]
    penalty = kerasreg.L1(case.strength)
    keras.utils.set_random_seed(0)
    task = _hub_task(keras_hub, case)
    config = task.backbone.get_config()  # its hyperparameters
    kerasreg.regularize(task.backbone, penalty, **KERNELS)
    x = case.inputs(rng)
    expected = _outputs(task, x)

    # The weights, then the same model from the backbone's config,
    # regularized again with the same arguments.
    task.save_weights(tmp_path / "task.weights.h5")
    rebuilt = _hub_task(keras_hub, case, config)
    rebuilt.load_weights(tmp_path / "task.weights.h5")
    kerasreg.regularize(rebuilt.backbone, penalty, **KERNELS)
    keras.tree.map_structure(np.testing.assert_array_equal, _outputs(rebuilt, x), expected)
    assert _losses(rebuilt) == _losses(task)

    # Or a `.keras` file of the model without its penalties, given back after
    # saving and after loading.
    kerasreg.regularize(task.backbone, None, **KERNELS)
    assert task.losses == []
    task.save(tmp_path / "task.keras")
    kerasreg.regularize(task.backbone, penalty, **KERNELS)
    loaded = keras.models.load_model(tmp_path / "task.keras")
    assert loaded.losses == []
    kerasreg.regularize(loaded.backbone, penalty, **KERNELS)
    keras.tree.map_structure(np.testing.assert_array_equal, _outputs(loaded, x), expected)
    assert _losses(loaded) == _losses(task)
    assert _regularizer_configs(loaded) == _regularizer_configs(task)
