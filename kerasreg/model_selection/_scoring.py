"""Scoring fits on held-out data.

The penalty is never part of the score: the validation loss is the data loss
of the compiled model's loss function, or a Keras metric or loss, or a
callable `(y_true, y_pred) -> float`, weighted by the held-out samples'
weights as `ElasticNetCV` scores.
"""

import keras
import numpy as np

from kerasreg._validation import InvalidArgumentError
from kerasreg._validation import invalid_argument

_GREATER_IS_BETTER = (
    "acc",
    "auc",
    "precision",
    "recall",
    "r2",
    "f1",
    "fbeta",
    "iou",
    "cosine",
    "pearson",
    "correlation",
)


def _mean_one(sample_weight):
    """The weights divided by their mean, or `None`.

    Keras' default loss reduction, `"sum_over_batch_size"`, divides the
    weighted sum `sum_i w_i l_i` by the number of samples `n`, not by
    `sum_i w_i`. With integer weights (each sample counted `w_i` times, `N =
    sum_i w_i` rows) that is `N / n` times the mean loss over the repeated
    rows, so strength `s` would act as `s * n / N`. Weights of mean 1 make
    the loss the mean over the repeated rows, and strength `s` means what it
    means there (and in scikit-learn's `sample_weight`).
    """
    if sample_weight is None:
        return None
    return sample_weight / np.mean(sample_weight)


class _Scorer:
    def __init__(self, metric, mode):
        self.metric = metric
        self.mode = mode
        self.name = None
        self._function = None

    def bind(self, model):
        """Resolves the metric against the first model built."""
        if self._function is not None:
            return
        metric = self.metric
        if metric is None:
            loss = getattr(model, "loss", None)
            if isinstance(loss, str):
                function, name = keras.losses.get(loss), loss
            elif isinstance(loss, keras.losses.Loss):
                function, name = loss, loss.name
            elif callable(loss):
                function, name = loss, getattr(loss, "__name__", "loss")
            else:
                raise InvalidArgumentError(
                    "Invalid value for argument `metric`: the model's loss "
                    f"({loss!r}) is not one loss function, so pass `metric` (a Keras metric "
                    "name or a callable (y_true, y_pred) -> float). Received: metric=None"
                )
        elif isinstance(metric, str):
            try:
                function = keras.metrics.get(metric)
            except ValueError:
                try:
                    function = keras.losses.get(metric)
                except ValueError as error:
                    raise invalid_argument(
                        "metric", "the name of a Keras metric or loss", metric
                    ) from error
            name = metric
        else:
            function = metric
            name = getattr(metric, "name", None) or getattr(metric, "__name__", "metric")
        self._function = function
        self.name = name
        if self.mode == "auto":
            lowered = name.lower()
            greater = any(word in lowered for word in _GREATER_IS_BETTER)
            self.mode = "max" if greater else "min"

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The score; with `sample_weight`, the weighted mean over the samples."""
        function = self._function
        weights = _mean_one(sample_weight)
        if isinstance(function, keras.metrics.Metric):
            function.reset_state()
            function.update_state(y_true, y_pred, sample_weight=weights)
            value = function.result()
        elif isinstance(function, keras.losses.Loss) and weights is not None:
            value = function(y_true, y_pred, sample_weight=weights)
        else:
            value = function(y_true, y_pred)
        value = np.asarray(keras.ops.convert_to_numpy(value), dtype="float64")
        if weights is None or isinstance(function, (keras.metrics.Metric, keras.losses.Loss)):
            return float(np.mean(value))
        if np.shape(value)[:1] != np.shape(weights):
            raise invalid_argument(
                "metric",
                "a Keras metric or loss, or a callable returning one value per sample, to "
                "score with `sample_weight`",
                self.metric,
            )
        return float(np.average(value.reshape(len(weights), -1).mean(axis=1), weights=weights))

    def better(self, a, b):
        return a < b if self.mode == "min" else a > b
