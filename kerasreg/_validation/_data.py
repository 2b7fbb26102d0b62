"""Constraints on collections: strength grids, sample weights, data, splits, layer selectors."""

import inspect
import numbers

import numpy as np

from kerasreg._validation._core import Constraint
from kerasreg._validation._core import _is_real_number
from kerasreg._validation._values import Interval


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
