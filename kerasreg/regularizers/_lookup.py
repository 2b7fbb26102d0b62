"""`get`: a proximal regularizer from a name, a config or Keras' own regularizer."""

import inspect
import re

import keras
import numpy as np

from kerasreg._validation import InvalidArgumentError
from kerasreg.regularizers._base import public
from kerasreg.regularizers.elementwise import L1
from kerasreg.regularizers.elementwise import L2
from kerasreg.regularizers.elementwise import ElasticNet
from kerasreg.regularizers.group import GroupLasso
from kerasreg.regularizers.nonconvex import MCP
from kerasreg.regularizers.nonconvex import SCAD
from kerasreg.regularizers.pruning import MagnitudePruning


def _snake_case(name):
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", name).lower()


# Every regularizer by its class name and snake-case name ("ElasticNet",
# "elastic_net"), derived from the classes, so a new one is known at once.
_BY_NAME = {
    key: cls
    for cls in (L1, L2, ElasticNet, MCP, SCAD, GroupLasso, MagnitudePruning)
    for key in (cls.__name__, _snake_case(cls.__name__))
}


def _required_arguments(cls):
    """The arguments `cls` cannot be built without, in the order of its signature.

    Those `__init__` gives no default, and those the class declares in
    `_required_despite_default` (a default that holds only with another argument).
    """
    declared = set(cls._required_despite_default)
    return [
        name
        for name, parameter in inspect.signature(cls).parameters.items()
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        and (parameter.default is parameter.empty or name in declared)
    ]


def _float32_value(value):
    """The shortest decimal with the same float32 value (0.1 for 0.1f)."""
    return float(str(np.float32(float(value))))


def _from_keras(regularizer):
    """Maps Keras' own L1, L2 and L1L2 to their kerasreg equivalents."""
    config = regularizer.get_config()
    if type(regularizer) is keras.regularizers.L1:
        # Keras stores `l1` as a float32 tensor (0.1 reads back as
        # 0.10000000149); recover the value the user wrote.
        return L1(l1=_float32_value(config["l1"]))
    if type(regularizer) is keras.regularizers.L2:
        return L2(l2=float(config["l2"]))
    if type(regularizer) is keras.regularizers.L1L2:
        l1, l2 = float(config["l1"]), float(config["l2"])
        if l2 == 0.0:
            return L1(l1=l1)
        if l1 == 0.0:
            return L2(l2=l2)
        return ElasticNet(strength=l1 + l2, l1_ratio=l1 / (l1 + l2))
    return None


@public
def get(identifier):
    """Returns the proximal regularizer for `identifier`.

    This is how to get a prox-capable regularizer from a model built with
    Keras' own: `keras.regularizers.L1`, `L2` and `L1L2` map to `L1`, `L2`
    and `ElasticNet` (or `L1`/`L2` when one coefficient is zero) with the same
    penalty.

    Args:
        identifier: One of
            - `None`, returned as is;
            - a kerasreg regularizer, or any object with a `prox` method,
              returned as is;
            - a `keras.regularizers.L1`, `L2` or `L1L2` instance;
            - a name: `"l1"`, `"l2"`, `"elastic_net"`, `"mcp"`, `"scad"`,
              `"group_lasso"` (or the class name), built with default arguments, or a name Keras
              knows, such as `"L1L2"` (`"magnitude_pruning"` has a required
              argument: pass an instance);
            - a serialized config dict, as `keras.saving.serialize_keras_object`
              writes it.

    Returns:
        A regularizer with a `prox(x, step)` method, or `None`.

    Raises:
        ValueError: If `identifier` has no known proximal operator (for
            example `keras.regularizers.OrthogonalRegularizer` or a plain
            function).

    Example:

    >>> import keras
    >>> import kerasreg
    >>> kerasreg.regularizers.get(keras.regularizers.L1(0.1))
    L1(l1=0.1)
    >>> kerasreg.regularizers.get(keras.regularizers.L1L2(l1=0.25, l2=0.75))
    ElasticNet(strength=1.0, l1_ratio=0.25)
    >>> kerasreg.regularizers.get("group_lasso")
    GroupLasso(strength=0.01, group_axis=-1)
    """
    if identifier is None:
        return None
    obj = identifier
    if isinstance(identifier, str):
        if identifier in _BY_NAME:
            cls = _BY_NAME[identifier]
            required = _required_arguments(cls)
            if required:
                raise InvalidArgumentError(
                    f"Invalid value for argument `identifier`: expected a name of a "
                    f"regularizer with default arguments; {cls.__name__} needs "
                    f"{', '.join(required)}, so pass an instance, e.g. "
                    f"kerasreg.{cls.__name__}({required[0]}=...). "
                    f"Received: identifier={identifier!r}"
                )
            return cls()
        try:
            obj = keras.regularizers.get(identifier)
        except ValueError:
            obj = None
    elif isinstance(identifier, dict):
        obj = keras.saving.deserialize_keras_object(identifier)
    if callable(getattr(obj, "prox", None)):
        return obj
    mapped = _from_keras(obj) if isinstance(obj, keras.regularizers.Regularizer) else None
    if mapped is not None:
        return mapped
    raise InvalidArgumentError(
        "Invalid value for argument `identifier`: expected a regularizer with a "
        "proximal operator (a kerasreg regularizer, keras.regularizers.L1, L2 "
        f"or L1L2, or their name or config). Received: identifier={identifier!r}"
    )
