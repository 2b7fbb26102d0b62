"""Constraints on single values: numbers, strings, flags, axes, shapes, types."""

import math
import numbers
import operator

import numpy as np

from kerasreg._validation._core import Constraint
from kerasreg._validation._core import _is_real_number


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
