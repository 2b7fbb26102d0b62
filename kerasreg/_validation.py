"""The one argument layer of kerasreg: constraint tables, checked once.

Each public class declares one table, ``_parameter_constraints``, mapping
each ``__init__`` argument to the constraint it must satisfy, and each public
function is decorated with ``@validate_params(table)`` (the scikit-learn
pattern). The same table validates ``__init__`` (and therefore
``from_config``) or the call, and lets the test suite generate invalid values
for every argument instead of listing them by hand.

Where things live, one rule: **the tables sit beside the code that uses
them; this module holds only the machinery.** A table is written in the
class body or the ``@validate_params`` of the callable it checks (a table
that several functions of one module share, such as the path functions'
``_PATH_CONSTRAINTS``, is a constant beside them). This module keeps what
every table is built from: `InvalidArgumentError`, `invalid_argument`,
every `Constraint` type (also those only one callable uses today, such as
`Splits` or `RegularizerChoice`), `validate_params` and `Configurable`. It
imports nothing else of kerasreg: a constraint that needs another module,
as `RegularizerChoice` needs the regularizer lookup, is given it by the
table (``RegularizerChoice(regularizers.get)``).

Every refusal is an `InvalidArgumentError` (a `ValueError` and a `TypeError`
at once, so callers' existing ``except`` clauses keep working) with one
message shape, naming the argument, what was expected and what was
received::

    Invalid value for argument `l1_ratio`: expected a float in [0, 1].
    Received: l1_ratio=1.5
"""

import functools
import inspect
import math
import numbers
import operator

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


class Interval(Constraint):
    """A finite real number in an interval.

    Args:
        low: Lower bound, or `None` for no lower bound.
        high: Upper bound, or `None` for no upper bound.
        closed: Which bounds belong to the interval: `"both"`, `"left"`,
            `"right"` or `"neither"`. Defaults to `"both"`.
    """

    def __init__(self, low=None, high=None, closed="both"):
        self.low = low
        self.high = high
        self.closed = closed

    @property
    def description(self):
        if self.low == 0 and self.high is None and self.closed in ("both", "left"):
            return "a non-negative finite float"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"a float in {left}{low}, {high}{right}"

    def type_ok(self, value):
        return _is_real_number(value)

    def value_ok(self, value):
        try:
            value = float(value)
        except OverflowError:  # an int too large for a float
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None:
            below = operator.lt if self.closed in ("both", "left") else operator.le
            if below(value, self.low):
                return False
        if self.high is not None:
            above = operator.gt if self.closed in ("both", "right") else operator.ge
            if above(value, self.high):
                return False
        return True

    def normalize(self, value):
        return float(value)

    def invalid_values(self):
        """Values that must be refused: wrong types, non-finite, out of range."""
        values = ["0.1", None, True, [0.1], float("nan"), float("inf"), -float("inf"), 10**400]
        if self.low is not None:
            values.append(self.low - 1.0)
            if self.closed not in ("both", "left"):
                values.append(float(self.low))
        if self.high is not None:
            values.append(self.high + 1.0)
            if self.closed not in ("both", "right"):
                values.append(float(self.high))
        return values


class Axes(Constraint):
    """An integer axis or a tuple of distinct integer axes (possibly empty)."""

    description = "an int or a tuple of distinct ints"

    def type_ok(self, value):
        if isinstance(value, (bool, np.bool_)):
            return False
        if isinstance(value, numbers.Integral):
            return True
        if isinstance(value, (list, tuple)):
            return all(
                isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
                for v in value
            )
        return False

    def value_ok(self, value):
        if isinstance(value, numbers.Integral):
            return True
        return len(set(int(v) for v in value)) == len(value)

    def normalize(self, value):
        if isinstance(value, numbers.Integral):
            return int(value)
        return tuple(int(v) for v in value)

    def invalid_values(self):
        return ["-1", None, True, 1.0, (0, 0), (0, 1.5), (True,)]


class Structure(Constraint):
    """An N:M pattern: a pair `(n, m)` of ints with 1 <= n < m (as a tuple)."""

    description = "a pair (n, m) of ints with 1 <= n < m"

    def type_ok(self, value):
        return (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(
                isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
                for v in value
            )
        )

    def value_ok(self, value):
        n, m = value
        return 1 <= n < m

    def normalize(self, value):
        return tuple(int(v) for v in value)

    def invalid_values(self):
        return ["2:4", 2, (2,), (1, 2, 4), (2.0, 4), (True, 4), (0, 4), (4, 4), (5, 4)]


class Integer(Constraint):
    """An integer in the closed interval [`low`, `high`] (`None`: unbounded)."""

    def __init__(self, low=None, high=None):
        self.low = low
        self.high = high

    @property
    def description(self):
        if self.high is None:
            return "an int" if self.low is None else f"an int >= {self.low}"
        return f"an int in [{self.low}, {self.high}]"

    def type_ok(self, value):
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))

    def value_ok(self, value):
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def normalize(self, value):
        return int(value)

    def invalid_values(self):
        values = ["1", None, True, 1.5, [1]]
        if self.low is not None:
            values.append(self.low - 1)
        if self.high is not None:
            values.append(self.high + 1)
        return values


class Options(Constraint):
    """One of a fixed set of strings."""

    def __init__(self, *values):
        self.values = values

    @property
    def description(self):
        if len(self.values) == 1:
            return repr(self.values[0])
        return f"one of {list(self.values)}"

    def type_ok(self, value):
        return isinstance(value, str)

    def value_ok(self, value):
        return value in self.values

    def invalid_values(self):
        return ["unknown", self.values[0].upper(), None, 1]


class Boolean(Constraint):
    """A Python or NumPy bool."""

    description = "a bool"

    def type_ok(self, value):
        return isinstance(value, (bool, np.bool_))

    def normalize(self, value):
        return bool(value)

    def invalid_values(self):
        return [1, "True", None]


class String(Constraint):
    """A non-empty string."""

    description = "a non-empty string"

    def type_ok(self, value):
        return isinstance(value, str)

    def value_ok(self, value):
        return bool(value)

    def invalid_values(self):
        return ["", None, 1, ["name"]]


class Strings(Constraint):
    """A list or tuple of strings (a bare string is refused)."""

    description = "a list of strings"

    def type_ok(self, value):
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)

    def normalize(self, value):
        return list(value)

    def invalid_values(self):
        return ["bias", [1], ("bias", None), {"bias": 1}]


class InstanceOf(Constraint):
    """An instance of `cls`, described as `description`."""

    def __init__(self, cls, description):
        self.cls = cls
        self.description = description

    def type_ok(self, value):
        return isinstance(value, self.cls)

    def invalid_values(self):
        return ["adam", None, 0.1, self.cls]


class InputShape(Constraint):
    """A shape without the batch axis (positive ints), or a list of them, or `None`."""

    description = (
        "a shape without the batch axis (a tuple of positive ints), a list of them "
        "(one per model input) or None"
    )

    @staticmethod
    def _is_shape(value):
        return isinstance(value, (list, tuple)) and all(
            isinstance(d, numbers.Integral) and not isinstance(d, (bool, np.bool_)) and d > 0
            for d in value
        )

    def type_ok(self, value):
        if value is None or self._is_shape(value):
            return True
        return (
            isinstance(value, (list, tuple))
            and len(value) > 0
            and all(self._is_shape(s) for s in value)
        )

    def invalid_values(self):
        return [(224, 0, 3), (224.0, 224, 3), "224x224", [(8, 8), "8x8"], 224]


class AnyOf(Constraint):
    """A value that satisfies one of several constraints (`None` for `None`)."""

    def __init__(self, *constraints):
        self.constraints = constraints

    def _members(self):
        return [c for c in self.constraints if c is not None]

    @property
    def description(self):
        parts = [c.description for c in self._members()]
        if None in self.constraints:
            parts.append("None")
        return " or ".join(parts)

    def _accepts(self, value):
        if value is None and None in self.constraints:
            return True
        return any(c.type_ok(value) and c.value_ok(value) for c in self._members())

    def type_ok(self, value):
        if value is None and None in self.constraints:
            return True
        return any(c.type_ok(value) for c in self._members())

    def value_ok(self, value):
        return self._accepts(value)

    def normalize(self, value):
        if value is None:
            return None
        for c in self._members():
            if c.type_ok(value) and c.value_ok(value):
                return c.normalize(value)
        raise AssertionError("normalize() called on a refused value")

    def invalid_values(self):
        values = []
        for c in self._members():
            for value in c.invalid_values():
                if not self._accepts(value) and not any(
                    type(value) is type(v) and repr(value) == repr(v) for v in values
                ):
                    values.append(value)
        return values


class Identifier(Constraint):
    """Anything `getter` turns into an object without raising (a Keras identifier)."""

    def __init__(self, getter, description):
        self.getter = getter
        self.description = description

    def type_ok(self, value):
        try:
            self.getter(value)
        except (TypeError, ValueError):
            return False
        return True

    def normalize(self, value):
        return self.getter(value)

    def invalid_values(self):
        return ["no_such_identifier", 3.5, [1]]


class Indices(Constraint):
    """A non-empty sequence of distinct non-negative ints."""

    description = "a non-empty sequence of distinct non-negative ints"

    def type_ok(self, value):
        if not isinstance(value, (list, tuple, range, np.ndarray)):
            return False
        return all(
            isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in value
        )

    def value_ok(self, value):
        return len(value) > 0 and min(value) >= 0 and len(set(int(v) for v in value)) == len(value)

    def normalize(self, value):
        return [int(v) for v in value]

    def invalid_values(self):
        return ["01", 3, None, [1.5], [True], [], [-1], [0, 0]]


class Callable(Constraint):
    """A callable, described as `description`."""

    def __init__(self, description):
        self.description = description

    def type_ok(self, value):
        return callable(value)

    def invalid_values(self):
        return ["model", None, 3]


class _NumberVector(Constraint):
    """A 1-D array-like of ints or floats (not a string); subclasses check the values."""

    def type_ok(self, value):
        if isinstance(value, (str, bytes)):
            return False
        try:
            values = np.asarray(value)
        except (TypeError, ValueError):
            return False
        return values.dtype.kind in "iuf" and values.ndim == 1


class Strengths(_NumberVector):
    """A non-empty 1-D sequence of distinct positive finite floats, sorted decreasing."""

    description = "a non-empty 1-D sequence of distinct positive finite floats"

    def value_ok(self, value):
        values = np.asarray(value, dtype="float64")
        return (
            values.size > 0
            and bool(np.all(np.isfinite(values)) and np.all(values > 0))
            and len(np.unique(values)) == len(values)
        )

    def normalize(self, value):
        # Decreasing: a path starts where the penalty is strongest and the
        # solution sparsest, as glmnet's does.
        return np.sort(np.asarray(value, dtype="float64"))[::-1]

    def invalid_values(self):
        return ["0.1", None, 0.1, [], [0.1, -1.0], [0.1, 0.1], [[0.1]], [0.1, float("nan")]]


class SampleWeights(_NumberVector):
    """A 1-D array of non-negative finite floats, not all zero (one weight per sample)."""

    description = "a 1-D array of non-negative finite floats, not all zero"

    def value_ok(self, value):
        values = np.asarray(value, dtype="float64")
        return bool(np.all(np.isfinite(values)) and np.all(values >= 0) and np.any(values > 0))

    def normalize(self, value):
        return np.asarray(value, dtype="float64")

    def invalid_values(self):
        return ["1", 1.0, [[1.0]], [True], [], [1.0, -1.0], [0.0, 0.0], [1.0, float("nan")]]


class Ratios(Constraint):
    """A float in [0, 1], or a non-empty sequence of distinct ones (as a list)."""

    description = "a float in [0, 1] or a non-empty sequence of distinct ones"

    def _values(self, value):
        return [value] if _is_real_number(value) else list(value)

    def type_ok(self, value):
        if _is_real_number(value):
            return True
        if not isinstance(value, (list, tuple, np.ndarray)):
            return False
        return all(_is_real_number(v) for v in value)

    def value_ok(self, value):
        values = [float(v) for v in self._values(value)]
        return (
            bool(values)
            and all(0.0 <= v <= 1.0 for v in values)
            and len(set(values)) == len(values)
        )

    def normalize(self, value):
        return [float(v) for v in self._values(value)]

    def invalid_values(self):
        return ["1", None, 1.5, [], [0.5, 0.5], [0.5, 2.0], [True]]


class Samples(Constraint):
    """An array, or a nested structure of arrays, with one leading sample axis."""

    description = "an array or a nested structure of arrays with the same number of samples"

    def _sizes(self, value):
        import keras

        leaves = keras.tree.flatten(value)
        return [np.shape(leaf)[0] if np.shape(leaf) else None for leaf in leaves]

    def type_ok(self, value):
        if value is None or isinstance(value, (str, bytes)):
            return False
        try:
            return bool(self._sizes(value))
        except (TypeError, ValueError):
            return False

    def value_ok(self, value):
        sizes = self._sizes(value)
        return None not in sizes and len(set(sizes)) == 1

    def invalid_values(self):
        return [None, "x", 3.0, [np.zeros(2), np.zeros(3)]]


class Sparsities(Constraint):
    """A float in [0, 1), or a non-empty dict from names to floats in [0, 1)."""

    description = "a float in [0, 1) or a non-empty dict from layer or kernel paths to such floats"
    _fraction = Interval(0.0, 1.0, closed="left")

    def type_ok(self, value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and self._fraction.type_ok(v) for k, v in value.items())
        return self._fraction.type_ok(value)

    def value_ok(self, value):
        if isinstance(value, dict):
            return bool(value) and all(self._fraction.value_ok(v) for v in value.values())
        return self._fraction.value_ok(value)

    def normalize(self, value):
        if isinstance(value, dict):
            return {k: float(v) for k, v in value.items()}
        return float(value)

    def invalid_values(self):
        return ["0.5", True, 1.0, -0.1, float("nan"), {}, {"dense": 1.0}, {1: 0.5}, [0.5]]


class CalibrationData(Constraint):
    """Calibration inputs: arrays, token ids, strings or an iterable of batches."""

    description = (
        "an array, a dict or list of arrays, token ids, strings, or an iterable of batches"
    )

    def type_ok(self, value):
        if isinstance(value, (str, bytes, numbers.Number)) or value is None:
            return False
        return (
            hasattr(value, "__iter__") or hasattr(value, "shape") or hasattr(value, "__getitem__")
        )

    def invalid_values(self):
        return ["text", 3.0, 7]


class DataPair(Constraint):
    """A pair `(x, y)` of `Samples` with the same number of samples."""

    description = "a tuple (x, y) of arrays with the same number of samples"

    def type_ok(self, value):
        return isinstance(value, (tuple, list)) and len(value) == 2

    def value_ok(self, value):
        samples = Samples()
        if not all(samples.type_ok(v) and samples.value_ok(v) for v in value):
            return False
        return len({samples._sizes(v)[0] for v in value}) == 1

    def normalize(self, value):
        return tuple(value)

    def invalid_values(self):
        return [np.zeros(3), (np.zeros(3),), (np.zeros(3), np.zeros(4))]


class FitKwargs(Constraint):
    """A dict of `model.fit` arguments other than `reserved` (`None`: `{}`)."""

    def __init__(self, reserved):
        self.reserved = tuple(reserved)
        self.description = (
            f"a dict of `model.fit` arguments other than {', '.join(self.reserved)} "
            "(the caller sets those), with `callbacks` a list, or None"
        )

    def type_ok(self, value):
        return value is None or isinstance(value, dict)

    def value_ok(self, value):
        if value is None:
            return True
        callbacks = value.get("callbacks")
        return not set(value) & set(self.reserved) and (
            callbacks is None or isinstance(callbacks, (list, tuple))
        )

    def normalize(self, value):
        return dict(value or {})

    def invalid_values(self):
        return (
            ["epochs", [("shuffle", True)]]
            + [{name: 1} for name in self.reserved[:3]]
            + [{"callbacks": "history"}]
        )


class Splits(Constraint):
    """A scikit-learn splitter, or an iterable of `(train, validation)` index arrays."""

    description = "a scikit-learn splitter or an iterable of (train, validation) splits"

    def type_ok(self, value):
        if isinstance(value, (list, tuple)):
            return True
        return not isinstance(value, str) and callable(getattr(value, "split", None))

    def invalid_values(self):
        return ["five", None, 1.5]


class WeightNames(Constraint):
    """A non-empty string, or a non-empty list or tuple of them (as a tuple)."""

    description = "a weight name or a non-empty tuple of weight names"

    def type_ok(self, value):
        if isinstance(value, str):
            return True
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)

    def value_ok(self, value):
        names = (value,) if isinstance(value, str) else tuple(value)
        return bool(names) and all(names)

    def normalize(self, value):
        return (value,) if isinstance(value, str) else tuple(dict.fromkeys(value))

    def invalid_values(self):
        return [None, 1, ("kernel", 1), "", (), ("kernel", "")]


def _is_layer_class(value):
    import keras

    return isinstance(value, type) and issubclass(value, keras.layers.Layer)


class LayerSelector(Constraint):
    """`None`, a layer class, or a non-empty list or tuple of layer classes and names."""

    description = (
        "None, a layer class, or a non-empty list of layer classes, names or '/'-separated paths"
    )

    def type_ok(self, value):
        if value is None or _is_layer_class(value):
            return True
        return isinstance(value, (list, tuple)) and all(
            isinstance(v, str) or _is_layer_class(v) for v in value
        )

    def value_ok(self, value):
        if value is None or _is_layer_class(value):
            return True
        return bool(value) and all(v for v in value if isinstance(v, str))

    def normalize(self, value):
        if value is None:
            return None
        return (value,) if _is_layer_class(value) else tuple(value)

    def invalid_values(self):
        return ["dense", 1, int, [1], [None], (int,), [], [""]]


class RegularizerChoice(Constraint):
    """A regularizer, a regularizer name, a `(layer, weight)` chooser, or `None`.

    A name is resolved with `resolve` (`kerasreg.regularizers.get`, which
    gives `kerasreg.L1()` for `"l1"`); a regularizer instance and a chooser
    are kept as given.

    Args:
        resolve: Callable `(name) -> regularizer`, raising `ValueError` or
            `TypeError` for a name it does not know.
    """

    description = (
        "a regularizer instance, a regularizer name such as 'l1', a callable "
        "(layer, weight) -> regularizer or None, a kerasreg.ChannelPruning (with "
        "groups='dependency'), or None"
    )

    def __init__(self, resolve):
        self.resolve = resolve

    @staticmethod
    def _is_regularizer(value):
        import keras

        return isinstance(value, keras.regularizers.Regularizer)

    @staticmethod
    def _is_chooser(value):
        import keras

        if isinstance(value, (type, keras.layers.Layer)) or not callable(value):
            return False
        try:
            inspect.signature(value).bind(None, None)
        except TypeError:
            return False
        except ValueError:  # no signature (some builtins): let the call decide
            return True
        return True

    @staticmethod
    def _is_group_request(value):
        """A request over a model's coupled groups (`kerasreg.ChannelPruning`)."""
        return getattr(type(value), "_needs_groups", False) is True

    def type_ok(self, value):
        return (
            value is None
            or isinstance(value, str)
            or self._is_regularizer(value)
            or self._is_group_request(value)
            or (callable(value) and not isinstance(value, type))
        )

    def value_ok(self, value):
        if isinstance(value, str):
            try:
                self.resolve(value)
            except (TypeError, ValueError):
                return False
            return True
        return (
            value is None
            or self._is_regularizer(value)
            or self._is_group_request(value)
            or self._is_chooser(value)
        )

    def normalize(self, value):
        if isinstance(value, str):
            return self.resolve(value)
        return value

    def invalid_values(self):
        import keras

        return ["no_such_regularizer", "magnitude_pruning", 0.1, ["l1"], keras.regularizers.L1, abs]


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
