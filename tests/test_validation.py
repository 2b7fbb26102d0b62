"""The argument layer: one exception, one message shape, tables that match."""

import keras
import pytest

import kerasreg
from kerasreg import _validation
from kerasreg._validation import Boolean
from kerasreg._validation import Interval
from kerasreg._validation import validate_params
from kerasreg.regularizers import _lookup

# The argument layer is pure Python: its results do not depend on the Keras backend.
pytestmark = pytest.mark.backend_neutral


def test_the_error_is_a_value_error_and_a_type_error():
    # Callers that caught either before the two were merged keep working.
    for caught in (ValueError, TypeError):
        with pytest.raises(caught):
            kerasreg.L1(l1=-1.0)
        with pytest.raises(caught):
            kerasreg.L1(l1="0.1")


def test_decorated_function_gets_normalized_values_and_defaults():
    seen = {}

    @validate_params({"strength": Interval(0.0, None), "flag": Boolean()})
    def function(strength, flag=False):
        seen.update(strength=strength, flag=flag)
        return strength

    assert function(3) == 3.0 and type(seen["strength"]) is float and seen["flag"] is False
    with pytest.raises(kerasreg.InvalidArgumentError) as info:
        function(1.0, flag="yes")
    assert str(info.value) == (
        "Invalid value for argument `flag`: expected a bool. Received: flag='yes'"
    )
    with pytest.raises(kerasreg.InvalidArgumentError, match="unexpected keyword argument"):
        function(1.0, colour="red")


def test_a_table_that_differs_from_the_signature_is_refused_at_definition():
    with pytest.raises(AssertionError, match="does not match its signature"):

        @validate_params({"strength": Interval(0.0, None)})
        def function(strength, flag=False):
            return strength


def test_methods_are_validated_without_self():
    class Thing(_validation.Configurable):
        _parameter_constraints = {"strength": Interval(0.0, None)}

        def __init__(self, strength=1.0):
            self._set_arguments(strength=strength)

        @validate_params({"scale": Interval(0.0, None)})
        def scaled(self, scale):
            return self.strength * scale

    thing = Thing(2)
    assert thing.scaled(3) == 6.0
    assert repr(thing) == "Thing(strength=2.0)"
    assert Thing.from_config(thing.get_config()).strength == 2.0
    with pytest.raises(kerasreg.InvalidArgumentError, match="argument `scale`"):
        thing.scaled(-1.0)
    with pytest.raises(kerasreg.InvalidArgumentError, match="argument `strength`"):
        Thing.from_config({"strength": float("nan")})
    with pytest.raises(kerasreg.InvalidArgumentError, match="unexpected argument"):
        Thing.from_config({"strength": 1.0, "colour": "red"})


def test_every_regularizer_is_known_by_both_of_its_names():
    for cls in (
        kerasreg.L1,
        kerasreg.L2,
        kerasreg.ElasticNet,
        kerasreg.MCP,
        kerasreg.SCAD,
        kerasreg.GroupLasso,
        kerasreg.MagnitudePruning,
    ):
        assert _lookup._BY_NAME[cls.__name__] is cls
    assert kerasreg.regularizers.get("elastic_net") == kerasreg.ElasticNet()
    assert kerasreg.regularizers.get("GroupLasso") == kerasreg.GroupLasso()
    assert kerasreg.regularizers.get("mcp") == kerasreg.MCP()
    assert kerasreg.regularizers.get("scad") == kerasreg.SCAD()
    with pytest.raises(kerasreg.InvalidArgumentError, match="needs final_sparsity"):
        kerasreg.regularizers.get("magnitude_pruning")
    config = keras.saving.serialize_keras_object(kerasreg.MagnitudePruning(0.5))
    assert kerasreg.regularizers.get(config) == kerasreg.MagnitudePruning(0.5)
