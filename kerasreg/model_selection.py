"""Choosing the strength: regularization paths with warm starts, cross-validated.

glmnet's recipe, for any Keras model trained with `ProximalOptimizer`: fit a
decreasing sequence of strengths, each fit starting from the previous
solution (a warm start: near the previous strength the solutions are close,
so each fit needs few steps), score every fit on held-out data, and choose
either the strength with the best mean score over the folds (`best`) or the
sparsest model whose mean score is within one standard error of it
(`one_se`, glmnet's `lambda.1se`).

The strength is changed along a path through the optimizer's
`strength_scale`, so one model per fold and `l1_ratio` is built and compiled,
and its compiled training step is reused at every strength.

Cross-validation needs scikit-learn (its splitters define the folds); plots
need matplotlib.
"""

import dataclasses
import functools
import math
import time

import keras
import numpy as np

from kerasreg import _tables
from kerasreg import regularizers as regularizers_lib
from kerasreg._training import data_gradients
from kerasreg._training import proximal_optimizer_of
from kerasreg._training import sync_variables
from kerasreg._validation import AnyOf
from kerasreg._validation import Boolean
from kerasreg._validation import Callable
from kerasreg._validation import Constraint
from kerasreg._validation import DataPair
from kerasreg._validation import FitKwargs
from kerasreg._validation import Integer
from kerasreg._validation import Interval
from kerasreg._validation import InvalidArgumentError
from kerasreg._validation import Options
from kerasreg._validation import Ratios
from kerasreg._validation import Samples
from kerasreg._validation import SampleWeights
from kerasreg._validation import Strengths
from kerasreg._validation import String
from kerasreg._validation import invalid_argument
from kerasreg._validation import validate_params

__all__ = [
    "CrossValidatedPath",
    "RegularizationPath",
    "cross_validate_path",
    "regularization_path",
]

_MODES = ("auto", "min", "max")
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
_RESERVED_FIT_ARGS = (
    "x",
    "y",
    "batch_size",
    "epochs",
    "verbose",
    "sample_weight",
    "initial_epoch",
    "validation_data",
    "validation_split",
    "validation_freq",
)


# The arguments both path functions take, checked by one table.
_PATH_CONSTRAINTS = {
    "build_model": Callable("a callable (regularizer) -> compiled keras.Model"),
    "x": Samples(),
    "y": Samples(),
    "strengths": AnyOf(Strengths(), None),
    "n_strengths": AnyOf(Integer(1), None),
    "eps": AnyOf(Interval(0.0, 1.0, closed="neither"), None),
    "sample_weight": AnyOf(SampleWeights(), None),
    "regularizer": AnyOf(Callable("a callable (strength) -> regularizer"), None),
    "epochs": Integer(1),
    "warm_epochs": AnyOf(Integer(1), None),
    "tol": AnyOf(Interval(0.0, None, closed="neither"), None),
    "warm_start": Boolean(),
    "batch_size": AnyOf(Integer(1), Options("full"), None),
    "repeat": Integer(1),
    "metric": AnyOf(String(), Callable("a callable (y_true, y_pred) -> float"), None),
    "fit_kwargs": FitKwargs(_RESERVED_FIT_ARGS),
    "seed": AnyOf(Integer(0), None),
    "verbose": Integer(0, 1),
}


# The automatic grid, as scikit-learn's `n_alphas` and `eps` (glmnet's
# `nlambda` and `lambda.min.ratio`).
_N_STRENGTHS = 100
_EPS = 1e-3


class _Splits(Constraint):
    """A scikit-learn splitter, or an iterable of `(train, validation)` index arrays."""

    description = "a scikit-learn splitter or an iterable of (train, validation) splits"

    def type_ok(self, value):
        if isinstance(value, (list, tuple)):
            return True
        return not isinstance(value, str) and callable(getattr(value, "split", None))

    def invalid_values(self):
        return ["five", None, 1.5]


@dataclasses.dataclass(frozen=True)
class _PathOptions:
    """How each fit along a path runs: the arguments the two path functions share."""

    epochs: int
    warm_epochs: int | None
    tol: float | None
    warm_start: bool
    batch_size: int | str | None
    repeat: int
    fit_kwargs: dict
    seed: int | None
    verbose: int

    @classmethod
    def pick(cls, arguments):
        """The options among a function's `arguments` (its `locals()`)."""
        return cls(**{field.name: arguments[field.name] for field in dataclasses.fields(cls)})


def _check_same_samples(x, y, sample_weight):
    n, m = (np.shape(keras.tree.flatten(v)[0])[0] for v in (x, y))
    if n != m:
        raise InvalidArgumentError(
            f"Invalid value for argument `y`: expected as many samples as `x` ({n}). "
            f"Received: y with {m} samples"
        )
    if sample_weight is not None and len(sample_weight) != n:
        raise InvalidArgumentError(
            "Invalid value for argument `sample_weight`: expected one weight per sample of "
            f"`x` ({n}). Received: sample_weight with {len(sample_weight)} weights"
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


def _tile(data, repeat):
    return keras.tree.map_structure(
        lambda leaf: np.tile(np.asarray(leaf), (repeat,) + (1,) * (np.ndim(leaf) - 1)), data
    )


def _take(data, indices):
    return keras.tree.map_structure(lambda leaf: np.asarray(leaf)[indices], data)


# Scoring on held-out data. The penalty is never part of the score: the
# validation loss is the data loss of the compiled model's loss function.


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


# The path itself.


def _label(l1_ratio):
    """How a path's regularizer is named in tables and plots."""
    return "regularizer" if l1_ratio is None else f"l1_ratio={l1_ratio:g}"


def _templates(regularizer, l1_ratios, name):
    """`strength -> regularizer` for each path: the `regularizer` template, or per `l1_ratio`."""
    if regularizer is None:
        return [functools.partial(_regularizer_for, l1_ratio=r) for r in l1_ratios]
    if l1_ratios != [1.0]:
        value = l1_ratios[0] if name == "l1_ratio" else l1_ratios
        raise invalid_argument(
            name, "1.0 (the default) when `regularizer` is given (it sets the penalty)", value
        )

    def template(strength):
        value = regularizer(strength)
        if not callable(getattr(value, "prox", None)):
            raise invalid_argument(
                "regularizer",
                "a callable (strength) -> regularizer with a proximal operator, e.g. "
                "`lambda s: kerasreg.GroupLasso(s)`; it returned "
                f"{value!r}",
                regularizer,
            )
        return value

    return [template]


def _regularizer_for(strength, l1_ratio):
    if l1_ratio == 1.0:
        return regularizers_lib.L1(l1=strength)
    if l1_ratio == 0.0:
        return regularizers_lib.L2(l2=strength)
    return regularizers_lib.ElasticNet(strength=strength, l1_ratio=l1_ratio)


def _build(build_model, regularizer, seed):
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = build_model(regularizer)
    if not isinstance(model, keras.Model):
        raise InvalidArgumentError(
            "Invalid value for argument `build_model`: expected a function returning a "
            f"compiled keras.Model. Received: build_model(regularizer) returned {model!r}"
        )
    optimizer = proximal_optimizer_of(model)
    if optimizer is None:
        raise InvalidArgumentError(
            "Invalid value for argument `build_model`: expected a function returning a model "
            "compiled with `kerasreg.ProximalOptimizer` (its `strength_scale` moves the model "
            "along the path). Received: build_model(regularizer) returned a model compiled "
            f"with optimizer={getattr(model, 'optimizer', None)!r}"
        )
    if not model.built:
        raise InvalidArgumentError(
            "Invalid value for argument `build_model`: expected a function returning a built "
            "model (start it with `keras.Input`, or call `model.build`). Received: "
            f"build_model(regularizer) returned the unbuilt model {model.name!r}"
        )
    penalized = [
        v for v in model.trainable_variables if getattr(v, "regularizer", None) is regularizer
    ]
    if not penalized:
        raise InvalidArgumentError(
            "Invalid value for argument `build_model`: expected a function that puts the "
            "regularizer it receives on some trainable weight (e.g. "
            "`kernel_regularizer=regularizer`). Received: build_model(regularizer) returned a "
            "model where no trainable weight "
            f"carries {regularizer!r}"
        )
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    return model, optimizer, penalized


def _snapshot(model, optimizer):
    return (
        [np.array(keras.ops.convert_to_numpy(v)) for v in model.variables],
        [np.array(keras.ops.convert_to_numpy(v)) for v in optimizer.variables],
    )


def _restore(model, optimizer, snapshot):
    for variable, value in zip(model.variables, snapshot[0], strict=True):
        variable.assign(value)
    for variable, value in zip(optimizer.variables, snapshot[1], strict=True):
        variable.assign(value)


class _Converged(keras.callbacks.Callback):
    """Stops `fit` once no trainable weight moved more than `tol` in an epoch.

    The change is relative: `max |w_t - w_{t-1}| <= tol * max(1, max |w_t|)`,
    glmnet's test on the coefficients, over every trainable weight.
    """

    def __init__(self, tol):
        super().__init__()
        self.tol = tol
        self._last = None

    def _values(self):
        sync_variables(self.model)
        return [np.array(keras.ops.convert_to_numpy(v)) for v in self.model.trainable_variables]

    def on_train_begin(self, logs=None):
        self._last = self._values()

    def on_epoch_end(self, epoch, logs=None):
        current = self._values()
        change = max(
            (
                float(np.max(np.abs(c - p), initial=0.0))
                for c, p in zip(current, self._last, strict=True)
            ),
            default=0.0,
        )
        size = max((float(np.max(np.abs(c), initial=0.0)) for c in current), default=0.0)
        self._last = current
        if change <= self.tol * max(1.0, size):
            self.model.stop_training = True


def _count_nonzero(variables):
    values = [keras.ops.convert_to_numpy(v) for v in variables]
    return int(sum(np.count_nonzero(v) for v in values)), int(sum(np.size(v) for v in values))


@dataclasses.dataclass
class _Fit:
    strength: float
    nonzero: int
    size: int
    epochs: int
    seconds: float
    score: float | None
    weights: list | None


class _Trainer:
    """Runs `fit` as every fit of a path runs: batches, repeats, callbacks, `tol`."""

    def __init__(self, x, y, sample_weight, options):
        fit_kwargs = dict(options.fit_kwargs)
        self.callbacks = list(fit_kwargs.pop("callbacks", None) or [])
        batch_size = options.batch_size
        self.predict_batch_size = None if batch_size == "full" else batch_size
        n = np.shape(keras.tree.flatten(x)[0])[0]
        if batch_size == "full":
            batch_size = n
            # Every batch is the training set itself, also when it is tiled.
            fit_kwargs.setdefault("shuffle", False)
        self.batch_size = batch_size
        self.fit_kwargs = fit_kwargs
        self.tol = options.tol
        sample_weight = _mean_one(sample_weight)
        self.data_weight = sample_weight  # one per sample of `x`, untiled
        self.x, self.y, self.sample_weight = x, y, sample_weight
        if options.repeat > 1:
            self.x, self.y = _tile(x, options.repeat), _tile(y, options.repeat)
            if sample_weight is not None:
                self.sample_weight = _tile(sample_weight, options.repeat)

    def fit(self, model, epochs):
        extra = [_Converged(self.tol)] if self.tol is not None else []
        history = model.fit(
            self.x,
            self.y,
            sample_weight=self.sample_weight,
            batch_size=self.batch_size,
            epochs=epochs,
            verbose=0,
            callbacks=self.callbacks + extra,
            **self.fit_kwargs,
        )
        sync_variables(model)
        return history


def _largest_strength(build_model, x, y, sample_weight, templates, options):
    """The smallest strength at which the penalized weights stay zero (glmnet's `lambda_max`).

    The penalized weights are set to zero and held there (`freeze_zeros`)
    while the other weights (biases, unpenalized layers) are fitted as the
    path's first fit runs: glmnet's null model, whose intercept makes the
    grid of a linear model scikit-learn's, computed on centered data. Zero
    is then a fixed point of the proximal gradient step exactly when
    `prox_{s R}(-g) = 0`, `g` being the gradient of the data loss over all
    of `x` and `R` the regularizer at strength 1; the smallest such `s` is
    found by bisection on the prox, so any regularizer whose prox can zero
    the weights has one, with no formula per penalty. With several
    templates (`l1_ratios`), the largest of theirs. It is rounded up by
    `2**-22` (float32's resolution, 2.4e-7 relative), so that rounding in
    the fit at that strength cannot leave a weight at 1e-9.

    Returns:
        The strength, and the null model's weights (`model.get_weights()`),
        where a warm-started path starts.
    """
    regularizer = templates[0](1.0)
    model, optimizer, penalized = _build(build_model, regularizer, options.seed)
    for variable in penalized:
        variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
    optimizer.freeze_zeros()
    trainer = _Trainer(x, y, sample_weight, options)
    trainer.fit(model, options.epochs)
    n = np.shape(keras.tree.flatten(x)[0])[0]
    batch_size = trainer.batch_size if isinstance(trainer.batch_size, int) else min(n, 256)
    gradients = data_gradients(model, x, y, trainer.data_weight, penalized, batch_size)
    if gradients is None:
        raise invalid_argument(
            "strengths",
            f"a sequence of strengths, since the model's loss ({model.loss!r}) is not one loss "
            "function and the automatic grid needs its gradient",
            None,
        )
    top = max(_zeroing_strength(template(1.0), gradients) for template in templates)
    return top * (1.0 + 2.0**-22), model.get_weights()


def _zeroing_strength(regularizer, gradients):
    """The smallest `s` with `regularizer.prox(-g, s) == 0` for every gradient `g`.

    For L1 it is `max |g|`; for an elastic net, `max |g| / l1_ratio`; for a
    group lasso, the largest group norm over the square root of its size.
    """

    def zeroes(strength):
        return all(
            not np.any(keras.ops.convert_to_numpy(regularizer.prox(-g, strength)))
            for g in gradients
        )

    scale = max((float(np.max(np.abs(g), initial=0.0)) for g in gradients), default=0.0)
    if scale == 0.0:
        raise invalid_argument(
            "strengths",
            "a sequence of strengths, since the data loss has a zero gradient at zero weights "
            "(every strength zeroes them: is `y` constant?)",
            None,
        )
    high = scale
    while not zeroes(high):
        high *= 4.0
        if high > 1e30 * scale:
            raise invalid_argument(
                "strengths",
                f"a sequence of strengths, since no strength of {regularizer!r} zeroes the "
                "weights (its prox shrinks without selecting, as L2's)",
                None,
            )
    low = high / 4.0
    while zeroes(low):
        high, low = low, low / 4.0
    for _ in range(64):  # bisection to the float64 resolution
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if zeroes(middle):
            high = middle
        else:
            low = middle
    return high


def _grid(build_model, x, y, sample_weight, strengths, n_strengths, eps, templates, options, names):
    """`strengths` as given, or the automatic geometric grid; and the null model's weights."""
    if strengths is not None:
        for name, value in (("n_strengths", n_strengths), ("eps", eps)):
            if value is not None:
                raise invalid_argument(
                    name, "None when `strengths` is given (the grid is then `strengths`)", value
                )
        return strengths, None
    for name, value in names:
        if value == 0.0:
            raise invalid_argument(
                name,
                "a float in (0, 1] for an automatic grid (L2 zeroes no weight at any strength; "
                "pass `strengths`)",
                value,
            )
    top, null_weights = _largest_strength(build_model, x, y, sample_weight, templates, options)
    n = _N_STRENGTHS if n_strengths is None else n_strengths
    return np.geomspace(top, top * (_EPS if eps is None else eps), n), null_weights


def _run_path(
    build_model,
    x,
    y,
    sample_weight,
    strengths,
    template,
    options,
    validation,
    scorer,
    keep_weights,
    label="",
    name="",
    start=None,
):
    """Fits `strengths` (decreasing) in order; returns one `_Fit` per strength.

    With warm starts, the first fit starts from the weights `start` if given.
    """
    top = float(strengths[0])
    regularizer = template(top)
    model, optimizer, penalized = _build(build_model, regularizer, options.seed)
    if start is not None and options.warm_start:
        model.set_weights(start)
    if validation is not None:
        scorer.bind(model)
    warm_start = options.warm_start
    # The whole optimizer, a LossScaleOptimizer around it included.
    initial = None if warm_start else _snapshot(model, model.optimizer)
    trainer = _Trainer(x, y, sample_weight, options)
    fits = []
    for i, strength in enumerate(strengths):
        if i and not warm_start:
            _restore(model, model.optimizer, initial)
        optimizer.strength_scale.assign(float(strength) / top)
        n_epochs = (options.warm_epochs or options.epochs) if (i and warm_start) else options.epochs
        start = time.perf_counter()
        history = trainer.fit(model, n_epochs)
        seconds = time.perf_counter() - start
        nonzero, size = _count_nonzero(penalized)
        score = None
        if validation is not None:
            x_val, y_val, w_val = validation
            y_pred = model.predict(x_val, batch_size=trainer.predict_batch_size, verbose=0)
            score = scorer(y_val, y_pred, w_val)
        fits.append(
            _Fit(
                strength=float(strength),
                nonzero=nonzero,
                size=size,
                epochs=len(history.epoch),
                seconds=seconds,
                score=score,
                weights=[np.array(w) for w in model.get_weights()] if keep_weights else None,
            )
        )
        if options.verbose:
            scored = "" if score is None else f", {scorer.name} {score:.4g}"
            print(
                f"{label}{name}strength {strength:.4g}: {nonzero}/{size} "
                f"non-zero{scored}, {len(history.epoch)} epochs",
                flush=True,
            )
    return fits


def _rebuild(build_model, strength, template, weights, seed):
    """A fresh model from the factory, with the regularizer at `strength`."""
    model, _, _ = _build(build_model, template(strength), seed)
    model.set_weights(weights)
    return model


# Results.


class RegularizationPath:
    """One model fitted along a decreasing sequence of strengths.

    Returned by `regularization_path`. Attributes:

    - `strengths`: the strengths, decreasing (NumPy array).
    - `l1_ratio`: the elastic-net mixing of the path's regularizer (`None`
      for a `regularizer` template).
    - `nonzeros`, `sizes`: non-zero and total entries of the penalized weights
      after each fit (exact zeros, `np.count_nonzero`).
    - `epochs`, `seconds`: epochs run and wall time of each fit.
    - `scores`: the validation score after each fit, or `None` without
      `validation_data`; `metric` names it.
    - `weights`: `model.get_weights()` after each fit (with
      `keep_weights=True`), e.g. for coefficient paths.
    """

    _COLUMNS = (
        ("strength", "strength", "{:.4g}"),
        ("non-zero", "nonzero", "{:,}"),
        ("sparsity", "sparsity", "{:.2%}"),
        ("score", "score", "{:.4g}"),
        ("epochs", "epochs", "{}"),
    )

    def __init__(self, fits, l1_ratio, metric):
        self.l1_ratio = l1_ratio
        self.metric = metric
        self.strengths = np.array([f.strength for f in fits])
        self.nonzeros = np.array([f.nonzero for f in fits])
        self.sizes = np.array([f.size for f in fits])
        self.epochs = np.array([f.epochs for f in fits])
        self.seconds = np.array([f.seconds for f in fits])
        scores = [f.score for f in fits]
        self.scores = None if scores[0] is None else np.array(scores)
        weights = [f.weights for f in fits]
        self.weights = None if weights[0] is None else weights

    def rows(self):
        """One dict per strength: strength, l1_ratio, non-zeros, sparsity, score, epochs."""
        rows = []
        for i, strength in enumerate(self.strengths):
            rows.append(
                {
                    "strength": float(strength),
                    "l1_ratio": self.l1_ratio,
                    "nonzero": int(self.nonzeros[i]),
                    "sparsity": 1.0 - self.nonzeros[i] / max(int(self.sizes[i]), 1),
                    "score": None if self.scores is None else float(self.scores[i]),
                    "epochs": int(self.epochs[i]),
                    "seconds": float(self.seconds[i]),
                }
            )
        return rows

    def to_dataframe(self):
        """The rows as a `pandas.DataFrame`."""
        return _tables.to_dataframe(self.rows(), "RegularizationPath")

    def __str__(self):
        return _tables.format_table(self.rows(), self._COLUMNS)

    def __repr__(self):
        return (
            f"<RegularizationPath: {_label(self.l1_ratio)}, {len(self.strengths)} strengths "
            f"from {self.strengths[0]:.4g} to {self.strengths[-1]:.4g}>"
        )


class CrossValidatedPath:
    """Cross-validation scores along regularization paths, and the choices.

    Returned by `cross_validate_path`. Attributes:

    - `strengths` (decreasing) and `l1_ratios`: the grid (`l1_ratios` is
      `[None]` for a `regularizer` template).
    - `fold_scores`: validation scores, shape `(len(l1_ratios),
      len(strengths), n_folds)`; `fold_nonzeros`, `fold_epochs` alike.
    - `metric` and `mode` (`"min"` or `"max"`): the score and its direction.
    - `best`: the table row with the best mean score.
    - `one_se`: the row with the fewest non-zero weights (then the largest
      strength) among those whose mean score is within one standard error
      of the best's (glmnet's `lambda.1se` rule).
    - `best_model`, `one_se_model`: with `refit=True`, models built by
      `build_model` with the chosen regularizer and refitted on all the data
      along the same path (`None` otherwise).
    - `seconds`: wall time of the cross-validation fits.
    """

    _COLUMNS = (
        ("l1_ratio", "l1_ratio", "{:g}"),
        ("strength", "strength", "{:.4g}"),
        ("mean", "mean", "{:.4g}"),
        ("std", "std", "{:.3g}"),
        ("sem", "sem", "{:.3g}"),
        ("non-zero", "nonzero", "{:.1f}"),
        ("sparsity", "sparsity", "{:.2%}"),
        ("epochs", "epochs", "{:.1f}"),
    )

    def __init__(self, strengths, l1_ratios, scores, nonzeros, sizes, epochs, metric, mode):
        self.strengths = strengths
        self.l1_ratios = list(l1_ratios)
        self.fold_scores = scores
        self.fold_nonzeros = nonzeros
        self.fold_epochs = epochs
        self.metric = metric
        self.mode = mode
        n_folds = scores.shape[-1]
        self._mean = scores.mean(axis=-1)
        self._std = scores.std(axis=-1, ddof=1) if n_folds > 1 else np.zeros_like(self._mean)
        self._sem = self._std / math.sqrt(n_folds)
        self._sizes = sizes
        self.table = self.rows()

        def loss(row):  # lower is better; a diverged fit (NaN) is the worst
            value = row["mean"] if mode == "min" else -row["mean"]
            return value if math.isfinite(value) else math.inf

        self.best = min(self.table, key=lambda row: (loss(row), -row["strength"]))
        sem = self.best["sem"] if math.isfinite(self.best["sem"]) else 0.0
        within = [row for row in self.table if loss(row) <= loss(self.best) + sem]
        within = within or [self.best]
        self.one_se = min(within, key=lambda row: (row["nonzero"], -row["strength"]))
        self.best_model = None
        self.one_se_model = None
        self.seconds = None

    def rows(self):
        """The tidy table: one dict per (l1_ratio, strength)."""
        rows = []
        for a, l1_ratio in enumerate(self.l1_ratios):
            for i, strength in enumerate(self.strengths):
                nonzero = float(self.fold_nonzeros[a, i].mean())
                rows.append(
                    {
                        "l1_ratio": l1_ratio,
                        "strength": float(strength),
                        "mean": float(self._mean[a, i]),
                        "std": float(self._std[a, i]),
                        "sem": float(self._sem[a, i]),
                        "nonzero": nonzero,
                        "sparsity": 1.0 - nonzero / max(int(self._sizes[a]), 1),
                        "epochs": float(self.fold_epochs[a, i].mean()),
                    }
                )
        return rows

    def to_dataframe(self):
        """The table as a `pandas.DataFrame`."""
        return _tables.to_dataframe(self.table, "CrossValidatedPath")

    def plot(self, ax=None, l1_ratio=None):
        """Mean validation score with one-standard-error bars against the strength.

        Like `cv.glmnet`'s plot: log-scaled strength on the bottom axis, the
        mean number of non-zero weights on the top axis, dashed lines at
        `best` and dotted at `one_se`. One curve per `l1_ratio` (or only the
        one given).

        Args:
            ax: A matplotlib `Axes`. Defaults to a new figure's.
            l1_ratio: Plot only this `l1_ratio`. Defaults to all of them.

        Returns:
            The `Axes`.
        """
        import matplotlib.pyplot as plt

        if l1_ratio is not None and l1_ratio not in self.l1_ratios:
            raise invalid_argument("l1_ratio", f"one of {self.l1_ratios}", l1_ratio)
        ratios = self.l1_ratios if l1_ratio is None else [l1_ratio]
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4.5))
        for ratio in ratios:
            a = self.l1_ratios.index(ratio)
            ax.errorbar(
                self.strengths,
                self._mean[a],
                yerr=self._sem[a],
                fmt="o-",
                markersize=3,
                capsize=2,
                linewidth=1,
                label=_label(ratio),
            )
        shown = self.best if self.best["l1_ratio"] in ratios else None
        if shown is not None:
            ax.axvline(self.best["strength"], color="k", linestyle="--", linewidth=1, label="best")
        if self.one_se["l1_ratio"] in ratios:
            ax.axvline(
                self.one_se["strength"], color="k", linestyle=":", linewidth=1, label="one SE"
            )
        ax.set_xscale("log")
        ax.set_xlabel("strength (log scale)")
        ax.set_ylabel(f"validation {self.metric}")
        ax.legend(fontsize="small")
        # Non-zero counts on the top axis, for the best l1_ratio shown.
        ratio = self.best["l1_ratio"] if self.best["l1_ratio"] in ratios else ratios[0]
        a = self.l1_ratios.index(ratio)
        top = ax.twiny()
        top.set_xscale("log")
        top.set_xlim(ax.get_xlim())
        every = max(1, len(self.strengths) // 8)
        ticks = self.strengths[::every]
        top.set_xticks(ticks)
        top.set_xticklabels(
            [f"{self.fold_nonzeros[a, i].mean():.0f}" for i in range(0, len(self.strengths), every)]
        )
        top.minorticks_off()
        top.set_xlabel(f"non-zero weights ({_label(ratio)})")
        return ax

    def __str__(self):
        text = _tables.format_table(self.table, self._COLUMNS)
        best, one_se = self.best, self.one_se
        return (
            f"{text}\nscore: validation {self.metric} ({self.mode}), mean over "
            f"{self.fold_scores.shape[-1]} folds; sem = std / sqrt(folds)\n"
            f"best:   {_label(best['l1_ratio'])}, strength={best['strength']:.4g} "
            f"({best['mean']:.4g}, {best['nonzero']:.1f} non-zero)\n"
            f"one SE: {_label(one_se['l1_ratio'])}, strength={one_se['strength']:.4g} "
            f"({one_se['mean']:.4g}, {one_se['nonzero']:.1f} non-zero)"
        )

    def __repr__(self):
        return (
            f"<CrossValidatedPath: {len(self.l1_ratios)} l1_ratios x {len(self.strengths)} "
            f"strengths x {self.fold_scores.shape[-1]} folds; best strength "
            f"{self.best['strength']:.4g}, one-SE strength {self.one_se['strength']:.4g}>"
        )


@validate_params(
    {
        **_PATH_CONSTRAINTS,
        "l1_ratio": Interval(0.0, 1.0),
        "validation_data": AnyOf(DataPair(), None),
        "keep_weights": Boolean(),
    }
)
def regularization_path(
    build_model,
    x,
    y,
    strengths=None,
    *,
    n_strengths=None,
    eps=None,
    sample_weight=None,
    l1_ratio=1.0,
    regularizer=None,
    validation_data=None,
    epochs=100,
    warm_epochs=None,
    tol=None,
    warm_start=True,
    batch_size=None,
    repeat=1,
    metric=None,
    fit_kwargs=None,
    keep_weights=True,
    seed=None,
    verbose=0,
):
    """Fits one model along a decreasing sequence of strengths.

    `build_model(regularizer)` must return a built model, compiled with a
    `kerasreg.ProximalOptimizer`, that puts `regularizer` on the weights to
    penalize (as `kernel_regularizer=`, on one layer or many). The path
    passes `L1(strength)` for `l1_ratio=1`, `L2(strength)` for `l1_ratio=0`
    and `ElasticNet(strength, l1_ratio)` otherwise, at the largest strength,
    and moves to each next strength through the optimizer's
    `strength_scale`.

    **The automatic grid** (`strengths=None`), glmnet's and scikit-learn's:
    `n_strengths` strengths spaced geometrically from the largest down to
    `eps` times it. The largest is the smallest strength at which the
    penalized weights stay zero: they are set to zero and held there while
    the other weights (biases, unpenalized layers) are fitted as the first
    fit runs (glmnet's null model), and it is the smallest `s` for which
    zero is a fixed point of the proximal gradient step, `prox_{s R}(-g) =
    0`, with `g` the gradient of the data loss (the model in inference mode)
    over all of `x`. For a linear model with a mean-squared-error loss this
    is the closed form, `2 max |X_c^T y_c| / (n l1_ratio)` on centered data
    with an intercept: twice scikit-learn's `alpha_max`, as `L1(2 alpha)` is
    `Lasso(alpha)`. For a network, "zero" is the point where every penalized
    weight is zero and the rest fitted; the gradient there, not at the
    random initial weights, decides whether zero is a solution (at the
    initial weights it would only give the strength that zeroes the first
    step). A warm-started path then starts from the null model.

    **Sample weights.** Keras' default loss reduction, `"sum_over_batch_size"`,
    divides `sum_i w_i loss_i` by the number of samples `n`, not by `sum_i
    w_i`: with weights `w` as given, the data loss is `mean(w)` times the mean
    loss over the rows repeated `w_i` times, and strength `s` would act there
    as `s / mean(w)`. The path divides the weights by their mean (over the
    training samples of each fit), so strength `s` with weights `w` is
    strength `s` on the repeated rows, and `L1(2 * alpha)` is scikit-learn's
    `Lasso(alpha).fit(x, y, sample_weight=w)`.

    Args:
        build_model: Callable `(regularizer) -> keras.Model`, compiled with
            `ProximalOptimizer`.
        x: Training inputs: an array, or a list/dict of arrays.
        y: Training targets.
        strengths: The strengths; fitted from the largest down. `None`
            for the automatic grid (see below). Defaults to `None`.
        n_strengths: Number of strengths of the automatic grid: glmnet's
            `nlambda`, scikit-learn's `n_alphas`. Only without `strengths`.
            Defaults to `None` (100).
        eps: Smallest over largest strength of the automatic grid: glmnet's
            `lambda.min.ratio`, scikit-learn's `eps`. Only without
            `strengths`. Defaults to `None` (`1e-3`).
        sample_weight: One non-negative weight per sample of `x`, or
            `None`. The path divides them by their mean before `fit` (see
            below), so that integer weights fit what repeating each sample
            that many times fits, at the same strengths; the automatic grid
            uses them too. `validation_data` is scored unweighted. Defaults
            to `None`.
        l1_ratio: The elastic-net mixing in [0, 1]. Defaults to `1.0` (L1).
        regularizer: Any other penalty along the path: a callable
            `(strength) -> regularizer`, e.g. `lambda s:
            kerasreg.GroupLasso(s, group_axis=0)`, called at the largest
            strength (and by refits, at the chosen one). Its penalty must be
            linear in the strength, as every kerasreg penalty is: the path
            moves along it by scaling the prox (`strength_scale`). Only with
            the default `l1_ratio`; the result's `l1_ratio` is then `None`.
            Defaults to `None`.
        validation_data: `(x_val, y_val)` to score each fit on, or `None`.
            Defaults to `None`.
        epochs: Epochs of the first fit, and of every fit without warm
            starts (the most, with `tol`). Defaults to `100`.
        warm_epochs: Epochs of each warm-started fit. Defaults to `epochs`.
        tol: Stop a fit early once no trainable weight moved by more than
            `tol * max(1, max |w|)` in an epoch, or `None` to run every epoch.
            Defaults to `None`.
        warm_start: Whether each fit starts from the previous strength's
            solution (and optimizer state); otherwise every fit starts from
            the model's initial weights. Defaults to `True`.
        batch_size: Passed to `fit` and `predict`; `"full"` for the whole
            training set in one batch (full-batch training, unshuffled).
            Defaults to `None` (Keras' 32).
        repeat: Passes over the training data per epoch (the arrays are
            tiled). For full-batch fits of small models, where Keras'
            per-epoch overhead would dominate: with `batch_size` = the
            number of training samples and `fit_kwargs={"shuffle": False}`,
            an epoch is `repeat` full-batch steps. Defaults to `1`.
        metric: The validation score: `None` for the compiled loss without
            the penalty, a Keras metric or loss name, or a callable
            `(y_true, y_pred) -> float`. Defaults to `None`.
        fit_kwargs: Other `model.fit` arguments (e.g. `callbacks`,
            `shuffle`). Defaults to `None`.
        keep_weights: Whether to keep `model.get_weights()` after each fit.
            Defaults to `True`.
        seed: Seed set with `keras.utils.set_random_seed` before the model
            is built, or `None`. Defaults to `None`.
        verbose: `1` prints a line per fit. Defaults to `0`.

    Returns:
        A `RegularizationPath`.

    Example:

    >>> import keras, numpy as np, kerasreg
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 5)).astype("float32")
    >>> y = x[:, :2] @ np.array([[2.0], [-1.0]], dtype="float32")
    >>> def build_model(regularizer):
    ...     model = keras.Sequential(
    ...         [keras.Input((5,)), keras.layers.Dense(1, kernel_regularizer=regularizer)]
    ...     )
    ...     model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
    ...     return model
    >>> path = kerasreg.model_selection.regularization_path(
    ...     build_model, x, y, [10.0, 1.0, 0.01], epochs=50, batch_size="full", seed=0
    ... )
    >>> path.nonzeros.tolist()  # the largest strength zeroes every weight
    [0, 2, 2]
    """
    _check_same_samples(x, y, sample_weight)
    options = _PathOptions.pick(locals())
    (template,) = _templates(regularizer, [l1_ratio], "l1_ratio")
    label = None if regularizer is not None else l1_ratio
    strengths, start = _grid(
        build_model,
        x,
        y,
        sample_weight,
        strengths,
        n_strengths,
        eps,
        [template],
        options,
        [("l1_ratio", label)],
    )
    scorer = _Scorer(metric, "auto")
    fits = _run_path(
        build_model,
        x,
        y,
        sample_weight,
        strengths,
        template,
        options,
        None if validation_data is None else (*validation_data, None),
        scorer,
        keep_weights,
        name=f"{_label(label)}, ",
        start=start,
    )
    return RegularizationPath(fits, label, scorer.name if validation_data is not None else None)


@validate_params(
    {
        **_PATH_CONSTRAINTS,
        "l1_ratios": Ratios(),
        "cv": AnyOf(Integer(2), _Splits()),
        "groups": AnyOf(Samples(), None),
        "mode": Options(*_MODES),
        "refit": Boolean(),
    }
)
def cross_validate_path(
    build_model,
    x,
    y,
    strengths=None,
    *,
    n_strengths=None,
    eps=None,
    sample_weight=None,
    l1_ratios=1.0,
    regularizer=None,
    cv=5,
    groups=None,
    epochs=100,
    warm_epochs=None,
    tol=None,
    warm_start=True,
    batch_size=None,
    repeat=1,
    metric=None,
    mode="auto",
    fit_kwargs=None,
    refit=True,
    seed=None,
    verbose=0,
):
    """K-fold cross-validation along regularization paths, glmnet's `cv.glmnet`.

    For every fold of `cv` and every `l1_ratio`, fits one model along the
    decreasing `strengths` (see `regularization_path`: warm starts, one
    build per path) on the training part and scores it on the held-out part.
    The table holds, per `(l1_ratio, strength)`, the mean score over the
    folds, its standard deviation and standard error, and the mean number
    of non-zero penalized weights. With `refit=True` the `best` and `one_se`
    choices are refitted on all the data along the same path.

    Args:
        build_model: Callable `(regularizer) -> keras.Model`, compiled with
            `ProximalOptimizer`, that puts `regularizer` on the weights to
            penalize.
        x: Inputs: an array, or a list/dict of arrays.
        y: Targets.
        strengths: The strengths; each path runs from the largest down.
            `None` for the automatic grid (see `regularization_path`),
            computed once on all of `x`, as `LassoCV` does; with several
            `l1_ratios`, from the largest of their largest strengths.
            Defaults to `None`.
        n_strengths: Number of strengths of the automatic grid (glmnet's
            `nlambda`, scikit-learn's `n_alphas`). Defaults to `None` (100).
        eps: Smallest over largest strength of the automatic grid (glmnet's
            `lambda.min.ratio`, scikit-learn's `eps`). Defaults to `None`
            (`1e-3`).
        sample_weight: One non-negative weight per sample, or `None`. Each
            fold's training part is fitted with its weights divided by their
            mean (see `regularization_path`), and its held-out part scored
            with its weights: the weighted mean of the metric (a callable
            `metric` must then return one value per sample), as
            `ElasticNetCV` scores. Defaults to `None`.
        l1_ratios: An `l1_ratio` in [0, 1] or a sequence of them (`1` is L1,
            `0` is L2). Defaults to `1.0`.
        regularizer: Any other penalty, as a callable `(strength) ->
            regularizer` (see `regularization_path`), e.g. to cross-validate
            a `GroupLasso` strength. Only with the default `l1_ratios`; the
            result's `l1_ratios` is then `[None]`. Defaults to `None`.
        cv: The folds, as scikit-learn takes them: an int (`KFold` with that
            many splits, no shuffling, as `LassoCV` does), a splitter such as
            `KFold(5, shuffle=True)` or `StratifiedKFold`, or an iterable of
            `(train, validation)` index arrays. Defaults to `5`.
        groups: Group labels for group splitters. Defaults to `None`.
        epochs: Epochs of each path's first fit (and of every fit without
            warm starts). Defaults to `100`.
        warm_epochs: Epochs of each warm-started fit. Defaults to `epochs`.
        tol: Stop a fit early once no weight moved by more than
            `tol * max(1, max |w|)` in an epoch, or `None`. Defaults to `None`.
        warm_start: Whether each fit starts from the previous strength's
            solution. Defaults to `True`.
        batch_size: Passed to `fit` and `predict`; `"full"` for each
            fold's whole training set in one batch. Defaults to `None`.
        repeat: Passes over the training data per epoch (see
            `regularization_path`). Defaults to `1`.
        metric: The validation score: `None` for the compiled loss without
            the penalty, a Keras metric or loss name (`keras.metrics.get`, then
            `keras.losses.get`; note that `"accuracy"` there is exact
            equality, so name the one you mean, e.g.
            `"sparse_categorical_accuracy"`), or a callable
            `(y_true, y_pred) -> float`. Defaults to `None`.
        mode: `"min"`, `"max"` or `"auto"` (`"max"` for names with "acc",
            "auc", "precision", "recall", "r2", "f1", "fbeta", "iou", "cosine",
            "pearson" or "correlation"; `"min"` otherwise). Defaults to
            `"auto"`.
        fit_kwargs: Other `model.fit` arguments (not the data, `epochs`,
            `batch_size`, `verbose` or `sample_weight`). Defaults to `None`.
        refit: Whether to refit the chosen models on all the data. Defaults
            to `True`.
        seed: Seed set before every model is built, or `None`. Defaults to
            `None`.
        verbose: `1` prints a line per fit. Defaults to `0`.

    Returns:
        A `CrossValidatedPath`.

    Raises:
        ImportError: If scikit-learn is not installed.
    """
    try:
        from sklearn.model_selection import check_cv
    except ImportError as error:
        raise ImportError(
            "`cross_validate_path` takes its folds from scikit-learn, which kerasreg does not "
            "install. Install it with `pip install scikit-learn`."
        ) from error
    _check_same_samples(x, y, sample_weight)
    options = _PathOptions.pick(locals())
    scorer = _Scorer(metric, mode)
    try:
        splitter = check_cv(cv)
    except ValueError as error:
        raise invalid_argument("cv", _Splits.description, cv) from error
    first = np.asarray(keras.tree.flatten(x)[0])
    try:
        folds = list(splitter.split(first, np.asarray(keras.tree.flatten(y)[0]), groups))
    except ValueError as error:
        raise invalid_argument(
            "cv", f"a splitter that can split the data (it said: {error})", cv
        ) from error
    if len(folds) < 2:
        raise invalid_argument("cv", "at least 2 splits", cv)
    templates = _templates(regularizer, l1_ratios, "l1_ratios")
    if regularizer is not None:
        l1_ratios = [None]
    # One grid for every fold, from all the data, as `LassoCV` makes it.
    # The folds' paths start from the model's initial weights, which never
    # saw the held-out samples.
    strengths, _ = _grid(
        build_model,
        x,
        y,
        sample_weight,
        strengths,
        n_strengths,
        eps,
        templates,
        options,
        [("l1_ratios", r) for r in l1_ratios],
    )

    shape = (len(l1_ratios), len(strengths), len(folds))
    scores = np.zeros(shape)
    nonzeros = np.zeros(shape)
    epochs_run = np.zeros(shape)
    sizes = np.zeros(len(l1_ratios), dtype="int64")
    start = time.perf_counter()
    for k, (train, held_out) in enumerate(folds):
        for a, l1_ratio in enumerate(l1_ratios):
            fits = _run_path(
                build_model,
                _take(x, train),
                _take(y, train),
                None if sample_weight is None else sample_weight[train],
                strengths,
                templates[a],
                options,
                (
                    _take(x, held_out),
                    _take(y, held_out),
                    None if sample_weight is None else sample_weight[held_out],
                ),
                scorer,
                keep_weights=False,
                label=f"fold {k + 1}/{len(folds)}: ",
                name=f"{_label(l1_ratio)}, ",
            )
            scores[a, :, k] = [f.score for f in fits]
            nonzeros[a, :, k] = [f.nonzero for f in fits]
            epochs_run[a, :, k] = [f.epochs for f in fits]
            sizes[a] = fits[0].size
    result = CrossValidatedPath(
        strengths, l1_ratios, scores, nonzeros, sizes, epochs_run, scorer.name, scorer.mode
    )
    result.seconds = time.perf_counter() - start
    if refit:
        templates = dict(zip(l1_ratios, templates, strict=True))
        _refit(result, build_model, x, y, sample_weight, strengths, templates, scorer, options)
    return result


def _refit(result, build_model, x, y, sample_weight, strengths, templates, scorer, options):
    """Refits `best` and `one_se` on all the data, along the same path."""
    chosen = {}
    for name in ("best", "one_se"):
        row = getattr(result, name)
        chosen.setdefault(row["l1_ratio"], []).append((name, row["strength"]))
    for l1_ratio, wanted in chosen.items():
        lowest = min(strength for _, strength in wanted)
        if options.warm_start:
            path = strengths[strengths >= lowest]
        else:
            path = np.array(sorted({s for _, s in wanted}, reverse=True))
        template = templates[l1_ratio]
        fits = _run_path(
            build_model,
            x,
            y,
            sample_weight,
            path,
            template,
            options,
            None,
            scorer,
            True,
            label="refit: ",
            name=f"{_label(l1_ratio)}, ",
        )
        by_strength = {f.strength: f.weights for f in fits}
        for name, strength in wanted:
            model = _rebuild(build_model, strength, template, by_strength[strength], options.seed)
            setattr(result, f"{name}_model", model)
