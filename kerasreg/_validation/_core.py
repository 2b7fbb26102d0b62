"""The machinery: the error, its message, `Constraint`, `validate_params`, `Configurable`."""

import functools
import inspect
import numbers

import numpy as np


class InvalidArgumentError(ValueError, TypeError):
    """An argument of a kerasreg class or function has a wrong type or value.

    It is both a `ValueError` and a `TypeError`, so code written against
    either keeps catching it. The message names the argument, what was
    expected and what was received.
    """


def invalid_argument(name, expected, value):
    """The `InvalidArgumentError` for argument `name`, expected `expected`."""
    return InvalidArgumentError(
        f"Invalid value for argument `{name}`: expected {expected}. {_format_received(name, value)}"
    )


class Constraint:
    """What one argument must be: `type_ok`, then `value_ok`, then `normalize`.

    A subclass sets `description` (the words after "expected") and lists in
    `invalid_values()` values that it must refuse, from which the tests are
    generated.
    """

    description = "a valid value"

    def type_ok(self, value):
        raise NotImplementedError

    def value_ok(self, value):
        return True

    def normalize(self, value):
        return value

    def invalid_values(self):
        return []


def _is_real_number(value):
    """True for Python and NumPy real scalars, but not for booleans."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, numbers.Real)


def _format_received(name, value):
    return f"Received: {name}={value!r}"


def validate_arguments(owner, constraints, arguments):
    """Checks `arguments` against `constraints` and returns normalized values.

    Args:
        owner: Name of the class or function being called, used in messages
            about unexpected arguments.
        constraints: Dict mapping each argument name to its constraint.
        arguments: Dict mapping argument names to the received values.

    Returns:
        A dict with the same keys, each value normalized (floats as Python
        floats, axes as an int or a tuple of ints, ...).

    Raises:
        InvalidArgumentError: If an argument is unknown, of the wrong type or
            has an invalid value.
    """
    unknown = sorted(set(arguments) - set(constraints))
    if unknown:
        raise InvalidArgumentError(
            f"Invalid arguments for `{owner}`: unexpected argument(s) "
            f"{unknown}. Expected only {sorted(constraints)}."
        )
    normalized = {}
    for name, value in arguments.items():
        constraint = constraints[name]
        if not (constraint.type_ok(value) and constraint.value_ok(value)):
            raise invalid_argument(name, constraint.description, value)
        normalized[name] = constraint.normalize(value)
    return normalized


def validate_params(constraints):
    """Decorates a function so that its arguments are checked against `constraints`.

    Every parameter of the function (but a method's `self`) must have a
    constraint, checked when the function is decorated. The function
    receives the normalized values, its defaults included; the table is kept
    as `fn._parameter_constraints`, so the tests can generate invalid values
    for each argument.

    Args:
        constraints: Dict mapping each parameter name to its constraint.

    Returns:
        The decorator.
    """

    def decorator(function):
        signature = inspect.signature(function)
        names = [name for name in signature.parameters if name != "self"]
        if set(names) != set(constraints):
            raise AssertionError(
                f"The constraint table of `{function.__name__}` does not match its "
                f"signature: {sorted(constraints)} vs {sorted(names)}"
            )

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as error:
                raise InvalidArgumentError(f"`{function.__name__}`: {error}") from None
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            owner = arguments.pop("self", None)
            arguments = validate_arguments(function.__name__, constraints, arguments)
            if owner is not None:
                return function(owner, **arguments)
            return function(**arguments)

        wrapper._parameter_constraints = constraints
        return wrapper

    return decorator


class Configurable:
    """Arguments from a constraint table: set, validated, configured, printed.

    A subclass declares `_parameter_constraints` (one entry per `__init__`
    argument, in the signature's order) and calls `self._set_arguments(...)`
    in `__init__`. It gets:

    - each normalized argument stored under its own name;
    - `get_config()` from the table's keys, and a `from_config` that refuses
      what `__init__` refuses, with the same message, so a tampered `.keras`
      file never loads silently;
    - a `repr` that lists the configuration.

    Keras layers and optimizers keep their base class's `get_config` and
    `from_config` (which carry the base arguments) and use only
    `_set_arguments`; put `Configurable` after the Keras base class.
    """

    _parameter_constraints = {}

    @classmethod
    def _check_arguments(cls, **arguments):
        """The normalized `arguments`, or an `InvalidArgumentError`."""
        return validate_arguments(cls.__name__, cls._parameter_constraints, arguments)

    def _set_arguments(self, **arguments):
        for name, value in self._check_arguments(**arguments).items():
            setattr(self, name, value)

    def get_config(self):
        return {name: getattr(self, name) for name in self._parameter_constraints}

    @classmethod
    def from_config(cls, config):
        cls._check_arguments(**config)
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(
            f"{name}={_short_repr(getattr(self, name))}" for name in self._parameter_constraints
        )
        return f"{type(self).__name__}({arguments})"


def _short_repr(value):
    """`repr` of plain values; `<ClassName>` for objects (an inner optimizer)."""
    plain = (str, numbers.Number, type(None), list, tuple, dict)
    return repr(value) if isinstance(value, plain) else f"<{type(value).__name__}>"
