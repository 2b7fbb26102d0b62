"""Saving and loading: Keras serialization and `.keras` model files."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest

import kerasreg
from tests.conftest import to_numpy

REGULARIZERS = [
    kerasreg.L1(0.1),
    kerasreg.L2(0.2),
    kerasreg.ElasticNet(strength=0.3, l1_ratio=0.7),
    kerasreg.MCP(strength=0.1, gamma=2.5),
    kerasreg.SCAD(strength=0.1, gamma=3.7),
    kerasreg.GroupLasso(strength=0.05, group_axis=0),
    kerasreg.GroupLasso(strength=0.05, group_axis=(0, 1)),
    kerasreg.MagnitudePruning(structure=(2, 4)),
    kerasreg.MagnitudePruning(0.5, group_axis=-1, round_to=8),
    kerasreg.regularizers.KeepZeros(),
]
IDS = [repr(r) for r in REGULARIZERS]


@pytest.mark.parametrize("reg", REGULARIZERS, ids=IDS)
def test_serialize_round_trip(reg):
    config = keras.saving.serialize_keras_object(reg)
    assert config["registered_name"] == f"kerasreg>{type(reg).__name__}"
    # Through JSON, as in a `.keras` file.
    config = json.loads(json.dumps(config))
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(reg)
    assert restored == reg
    assert keras.regularizers.deserialize(config) == reg
    assert keras.regularizers.get(config) == reg


@pytest.mark.backend_neutral
@pytest.mark.parametrize("reg", REGULARIZERS, ids=IDS)
def test_serialized_form_is_the_one_saved_files_hold(reg):
    # The classes live in one submodule per family, but configs name the
    # module users import them from, as configs saved when all of them were
    # in one `kerasreg/regularizers.py` do; configs in that form load.
    name = type(reg).__name__
    saved = {
        "module": "kerasreg.regularizers",
        "class_name": name,
        "config": json.loads(json.dumps(reg.get_config())),
        "registered_name": f"kerasreg>{name}",
    }
    assert json.loads(json.dumps(keras.saving.serialize_keras_object(reg))) == saved
    assert keras.saving.deserialize_keras_object(saved) == reg


def _model(reg):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, kernel_regularizer=reg, bias_regularizer=kerasreg.L2(0.01))(
        inputs
    )
    outputs = keras.layers.Dense(2, kernel_regularizer=reg)(hidden)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("reg", REGULARIZERS, ids=IDS)
def test_keras_file_round_trip(tmp_path, rng, reg):
    model = _model(reg)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects, safe_mode on
    x = rng.normal(size=(5, 6)).astype("float32")
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    assert loaded.layers[1].kernel_regularizer == reg
    assert loaded.layers[1].bias_regularizer == kerasreg.L2(0.01)
    np.testing.assert_allclose(
        to_numpy(keras.ops.sum(loaded.losses)), to_numpy(keras.ops.sum(model.losses)), rtol=1e-6
    )


def test_a_fresh_process_loads_with_plain_load_model(tmp_path, rng):
    # Only `import kerasreg` is needed: no custom_objects, safe_mode on.
    model = keras.Sequential(
        [keras.Input((6,))]
        + [keras.layers.Dense(3, kernel_regularizer=reg) for reg in REGULARIZERS]
    )
    path = tmp_path / "model.keras"
    model.save(path)
    x = rng.normal(size=(4, 6)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", to_numpy(model(x)))
    script = textwrap.dedent(
        f"""
        import keras, numpy as np
        import kerasreg
        model = keras.models.load_model({str(path)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        y = keras.ops.convert_to_numpy(model(x))
        np.testing.assert_array_equal(y, np.load({str(tmp_path / "y.npy")!r}))
        print([repr(l.kernel_regularizer) for l in model.layers])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ElasticNet(strength=0.3, l1_ratio=0.7)" in result.stdout


def _tamper(path, edit):
    """Rewrites the kerasreg configs in the `.keras` file at `path`."""
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])

    def visit(node):
        if isinstance(node, dict):
            if str(node.get("registered_name", "")).startswith("kerasreg>"):
                edit(node["config"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(config)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: c.update(strength=-1.0),
            "Invalid value for argument `strength`: expected a non-negative finite float. "
            "Received: strength=-1.0",
        ),
        (
            lambda c: c.update(l1_ratio="0.5"),
            "Invalid value for argument `l1_ratio`: expected a float in [0, 1]. "
            "Received: l1_ratio='0.5'",
        ),
        (
            lambda c: c.update(l1=0.1),
            "Invalid arguments for `ElasticNet`: unexpected argument(s) ['l1']. "
            "Expected only ['l1_ratio', 'strength'].",
        ),
    ],
    ids=["negative_strength", "wrong_type", "unknown_argument"],
)
def test_tampered_files_are_refused(tmp_path, edit, message):
    model = _model(kerasreg.ElasticNet(0.1, 0.5))
    path = tmp_path / "model.keras"
    model.save(path)
    _tamper(path, edit)
    with pytest.raises(Exception) as info:
        keras.models.load_model(path)
    # Keras may wrap the error; ours must be the cause and keep its words.
    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(type(e) is kerasreg.InvalidArgumentError and str(e) == message for e in chain), [
        (type(e).__name__, str(e)) for e in chain
    ]
