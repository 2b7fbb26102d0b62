"""Every bad input in `tests/reliability.py` is refused or handled as stated,
and `docs/reliability.md` is what those cases produce."""

import inspect
from pathlib import Path

import keras
import pytest

import kerasreg
from tests import reliability

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


def _public_classes():
    classes = set()
    for module in (kerasreg, kerasreg.regularizers, kerasreg.callbacks, kerasreg.layers):
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if (
                inspect.isclass(value)
                and value is not kerasreg.ProximalRegularizer
                and not issubclass(value, Exception)
            ):
                classes.add(value)
    return classes


@pytest.mark.backend_neutral
def test_every_public_class_is_tried():
    assert {cls for cls, _ in reliability.CLASSES} == _public_classes()


@pytest.mark.backend_neutral
def test_every_public_function_is_tried():
    functions = set()
    modules = (
        kerasreg,
        kerasreg.apply,
        kerasreg.model_selection,
        kerasreg.sparsity,
        kerasreg.compaction,
    )
    for module in modules:
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if inspect.isfunction(value):
                functions.add(value)
    for cls in _public_classes():
        for value in vars(cls).values():
            if inspect.isfunction(value) and hasattr(value, "_parameter_constraints"):
                functions.add(value)
    assert functions == {fn for fn, _ in reliability.FUNCTIONS}


@pytest.mark.backend_neutral
def test_every_generated_invalid_value_is_refused_naming_its_argument():
    count = 0
    for fn, name, value, error in reliability.constraint_cases():
        assert error is not None, f"{fn.__qualname__}({name}={value!r}) was accepted"
        assert isinstance(error, kerasreg.InvalidArgumentError), repr(error)
        message = str(error)
        assert message.startswith(f"Invalid value for argument `{name}`: expected "), message
        assert message.endswith(f"Received: {name}={value!r}"), message
        count += 1
    assert count > 300


@pytest.mark.backend_neutral
def test_from_config_refuses_what_init_refuses():
    # A tampered config reaches `from_config`, as `load_model` calls it.
    for cls, name, value, error in reliability.constraint_cases():
        if not inspect.isclass(cls):
            continue
        if cls is kerasreg.ProximalOptimizer and name == "inner_optimizer":
            continue  # a config holds it serialized; Keras resolves it first
        if cls is kerasreg.CoupledGroupLasso:
            continue  # its groups hold a model's variables: it has no config
        required = dict(reliability.CLASSES)[cls]
        config = cls(**required).get_config()
        config[name] = value
        with pytest.raises((TypeError, ValueError)) as info:
            cls.from_config(config)
        # Keras' `Layer.from_config` re-raises as TypeError with its own
        # context around our message; the others raise as `__init__` does.
        if not issubclass(cls, keras.layers.Layer):
            assert type(info.value) is type(error)
        assert str(error) in str(info.value)


@pytest.mark.parametrize("title", list(reliability.SCENARIOS))
def test_scenario(title):
    # Each scenario asserts its own outcome; the page test reuses the result.
    assert reliability.outcome(title)


def test_reliability_page_is_current():
    assert DOC.read_text() == reliability.render(), (
        "docs/reliability.md is out of date: run `python scripts/reliability_table.py`"
    )
