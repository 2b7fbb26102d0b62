"""`kerasreg/_save_guard.py`: saving refuses penalties no config holds, and damages no file.

Each full-model save that Keras offers (`Model.save`, `keras.saving.save_model`,
`ModelCheckpoint`, to `.keras` and to legacy `.h5`) is tried on a file that
is already at the target path; the refusal must leave it byte for byte.
"""

import keras
import numpy as np
import pytest
from keras import ops

import kerasreg

L = keras.layers
EARLIER = b"a file saved earlier, which a refused save must leave as it is"
X = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
Y = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")


class NoConfig(keras.regularizers.Regularizer):
    """A penalty without `get_config`: no config can hold it."""

    def __call__(self, x):
        return 0.01 * ops.sum(ops.abs(x))


def _residual_mlp():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    a = L.Dense(8, name="a")(inputs)
    b = L.Dense(8, activation="relu", name="b")(a)
    return keras.Model(inputs, L.Dense(3, name="head")(L.Add(name="add")([a, b])))


def _chosen_by_callable():
    model = _residual_mlp()
    return kerasreg.regularize(model, lambda layer, weight: NoConfig(), layers=["b"])


def _coupled():
    model = _residual_mlp()
    return kerasreg.regularize(model, kerasreg.GroupLasso(0.1), groups="dependency")


# What each unsavable model's refusal names.
UNSAVABLE = {
    "callable without config": (_chosen_by_callable, "'b/kernel'"),
    "coupled group lasso": (_coupled, "CoupledGroupLasso"),
}


def _checkpoint(model, path):
    model.compile(optimizer="sgd", loss="mse")
    checkpoint = keras.callbacks.ModelCheckpoint(str(path))
    model.fit(X, Y, epochs=1, batch_size=8, verbose=0, callbacks=[checkpoint])


SAVES = {
    "Model.save": lambda model, path: model.save(path),
    "keras.saving.save_model": lambda model, path: keras.saving.save_model(model, path),
    "ModelCheckpoint": _checkpoint,
}


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("save", sorted(SAVES))
@pytest.mark.parametrize("kind", sorted(UNSAVABLE))
def test_refused_save_leaves_the_file_at_its_path_as_it_was(kind, save, suffix, tmp_path):
    make, named = UNSAVABLE[kind]
    model = make()
    path = tmp_path / f"model{suffix}"
    path.write_bytes(EARLIER)
    with pytest.raises(ValueError, match="cannot hold the regularizers") as info:
        SAVES[save](model, path)
    assert named in str(info.value)
    assert "save_weights" in str(info.value)
    assert path.read_bytes() == EARLIER
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("kind", sorted(UNSAVABLE))
def test_config_refuses_and_weights_still_save(kind, tmp_path):
    make, named = UNSAVABLE[kind]
    model = make()
    for serialize in (
        model.get_config,
        model.to_json,
        lambda: keras.models.clone_model(model),
        lambda: keras.saving.serialize_keras_object(model),
    ):
        with pytest.raises(ValueError, match="cannot hold the regularizers") as info:
            serialize()
        assert named in str(info.value)
    model.save_weights(tmp_path / "model.weights.h5")
    copy = _residual_mlp()
    copy.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(copy(X)), keras.ops.convert_to_numpy(model(X))
    )


@pytest.mark.parametrize("save", sorted(SAVES))
def test_savable_model_saves_and_loads(save, tmp_path):
    model = kerasreg.regularize(_residual_mlp(), kerasreg.L1(0.01))
    path = tmp_path / "model.keras"
    path.write_bytes(EARLIER)
    SAVES[save](model, path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("b").kernel_regularizer == kerasreg.L1(0.01)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(X)), keras.ops.convert_to_numpy(model(X)), rtol=1e-6
    )


@pytest.mark.parametrize("kind", sorted(UNSAVABLE))
def test_saves_once_the_penalty_is_removed(kind, tmp_path):
    make, _ = UNSAVABLE[kind]
    model = make()
    if kind == "coupled group lasso":
        kerasreg.regularize(model, None, groups="dependency")
    else:
        kerasreg.regularize(model, None, layers=["b"])
    path = tmp_path / "model.keras"
    keras.saving.save_model(model, path)
    assert keras.saving.load_model(path).count_params() == model.count_params()
