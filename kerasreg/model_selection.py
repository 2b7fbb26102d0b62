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
import math
import numbers
import time

import keras
import numpy as np

from kerasreg import optimizers as optimizers_lib
from kerasreg import regularizers as regularizers_lib

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


# Argument checks. One message shape: the argument, what was expected, what
# was received.


def _invalid(name, expected, value):
    return ValueError(
        f"Invalid value for argument `{name}`: expected {expected}. Received: {name}={value!r}"
    )


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_strengths(strengths):
    try:
        values = np.asarray(strengths, dtype="float64")
    except (TypeError, ValueError):
        values = None
    if (
        values is None
        or values.ndim != 1
        or values.size == 0
        or not np.all(np.isfinite(values))
        or np.any(values <= 0)
    ):
        raise _invalid("strengths", "a non-empty 1-D sequence of positive finite floats", strengths)
    if len(np.unique(values)) != len(values):
        raise _invalid("strengths", "distinct values", strengths)
    # Decreasing: the path starts where the penalty is strongest and the
    # solution sparsest, as glmnet's does.
    return np.sort(values)[::-1]


def _check_l1_ratios(l1_ratios):
    values = [l1_ratios] if _is_real(l1_ratios) else l1_ratios
    try:
        values = list(values)
    except TypeError:
        values = []
    if not values or not all(_is_real(r) and 0.0 <= r <= 1.0 for r in values):
        raise _invalid("l1_ratios", "a float in [0, 1] or a non-empty sequence of them", l1_ratios)
    values = [float(r) for r in values]
    if len(set(values)) != len(values):
        raise _invalid("l1_ratios", "distinct values", l1_ratios)
    return values


def _check_positive_int(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < 1:
        raise _invalid(name, "an int >= 1" + (" or None" if allow_none else ""), value)
    return int(value)


def _check_batch_size(batch_size):
    if batch_size is None or batch_size == "full":
        return batch_size
    if not _is_int(batch_size) or batch_size < 1:
        raise _invalid("batch_size", "an int >= 1, 'full' or None", batch_size)
    return int(batch_size)


def _check_tol(tol):
    if tol is None:
        return None
    if not _is_real(tol) or not math.isfinite(tol) or tol <= 0:
        raise _invalid("tol", "a positive finite float or None", tol)
    return float(tol)


def _check_fit_kwargs(fit_kwargs):
    if fit_kwargs is None:
        return {}
    if not isinstance(fit_kwargs, dict):
        raise _invalid("fit_kwargs", "a dict of `model.fit` arguments or None", fit_kwargs)
    reserved = sorted(set(fit_kwargs) & set(_RESERVED_FIT_ARGS))
    if reserved:
        raise ValueError(
            "Invalid value for argument `fit_kwargs`: expected `model.fit` arguments other than "
            f"{', '.join(_RESERVED_FIT_ARGS)}, which the path sets itself (pass `epochs`, "
            "`batch_size` and the data to this function; per-sample weights are not supported). "
            f"Received: fit_kwargs={fit_kwargs!r}"
        )
    callbacks = fit_kwargs.get("callbacks")
    if callbacks is not None and not isinstance(callbacks, (list, tuple)):
        raise _invalid("fit_kwargs['callbacks']", "a list of callbacks", callbacks)
    return dict(fit_kwargs)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise _invalid(name, "a bool", value)
    return bool(value)


def _check_seed(seed):
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise _invalid("seed", "a non-negative int or None", seed)
    return seed


def _check_verbose(verbose):
    if not _is_int(verbose) or verbose not in (0, 1):
        raise _invalid("verbose", "0 (silent) or 1 (a line per fit)", verbose)
    return int(verbose)


def _n_samples(name, data):
    leaves = keras.tree.flatten(data)
    if not leaves:
        raise _invalid(name, "an array or a nested structure of arrays", data)
    sizes = set()
    for leaf in leaves:
        shape = np.shape(leaf)
        if not shape:
            raise _invalid(name, "arrays with a leading sample axis", data)
        sizes.add(shape[0])
    if len(sizes) != 1:
        raise _invalid(name, "arrays with the same number of samples", data)
    return sizes.pop()


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
        if metric is not None and not isinstance(metric, str) and not callable(metric):
            raise _invalid(
                "metric",
                "None (the compiled loss, penalty excluded), the name of a Keras metric or "
                "loss, or a callable (y_true, y_pred) -> float",
                metric,
            )
        if mode not in _MODES:
            raise _invalid("mode", f"one of {_MODES}", mode)
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
                raise ValueError(
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
                    raise _invalid(
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

    def __call__(self, y_true, y_pred):
        function = self._function
        if isinstance(function, keras.metrics.Metric):
            function.reset_state()
            function.update_state(y_true, y_pred)
            value = function.result()
        else:
            value = function(y_true, y_pred)
        value = np.asarray(keras.ops.convert_to_numpy(value), dtype="float64")
        return float(np.mean(value))

    def better(self, a, b):
        return a < b if self.mode == "min" else a > b


# The path itself.


def _regularizer_for(strength, l1_ratio):
    if l1_ratio == 1.0:
        return regularizers_lib.L1(l1=strength)
    if l1_ratio == 0.0:
        return regularizers_lib.L2(l2=strength)
    return regularizers_lib.ElasticNet(strength=strength, l1_ratio=l1_ratio)


def _proximal_optimizer(model):
    optimizer = getattr(model, "optimizer", None)
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer if isinstance(optimizer, optimizers_lib.ProximalOptimizer) else None


def _build(build_model, regularizer, seed):
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = build_model(regularizer)
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Invalid value for argument `build_model`: expected a function returning a "
            f"compiled keras.Model. Received: build_model(regularizer) returned {model!r}"
        )
    optimizer = _proximal_optimizer(model)
    if optimizer is None:
        raise ValueError(
            "Invalid value for argument `build_model`: expected a function returning a model "
            "compiled with `kerasreg.ProximalOptimizer` (its `strength_scale` moves the model "
            "along the path). Received: build_model(regularizer) returned a model compiled "
            f"with optimizer={getattr(model, 'optimizer', None)!r}"
        )
    if not model.built:
        raise ValueError(
            "Invalid value for argument `build_model`: expected a function returning a built "
            "model (start it with `keras.Input`, or call `model.build`). Received: "
            f"build_model(regularizer) returned the unbuilt model {model.name!r}"
        )
    penalized = [
        v for v in model.trainable_variables if getattr(v, "regularizer", None) is regularizer
    ]
    if not penalized:
        raise ValueError(
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


def _sync(model):
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None and keras.backend.backend() == "jax":
        sync()


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
        _sync(self.model)
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


def _run_path(
    build_model,
    x,
    y,
    strengths,
    l1_ratio,
    *,
    validation,
    scorer,
    epochs,
    warm_epochs,
    tol,
    warm_start,
    batch_size,
    repeat,
    fit_kwargs,
    keep_weights,
    seed,
    verbose,
    label="",
):
    """Fits `strengths` (decreasing) in order; returns one `_Fit` per strength."""
    top = float(strengths[0])
    regularizer = _regularizer_for(top, l1_ratio)
    model, optimizer, penalized = _build(build_model, regularizer, seed)
    if validation is not None:
        scorer.bind(model)
    # The whole optimizer, a LossScaleOptimizer around it included.
    initial = None if warm_start else _snapshot(model, model.optimizer)
    callbacks = list(fit_kwargs.pop("callbacks", None) or [])
    predict_batch_size = None if batch_size == "full" else batch_size
    if batch_size == "full":
        batch_size = _n_samples("x", x)
        # Every batch is the training set itself, also when it is tiled.
        fit_kwargs.setdefault("shuffle", False)
    if repeat > 1:
        x, y = _tile(x, repeat), _tile(y, repeat)
    fits = []
    for i, strength in enumerate(strengths):
        if i and not warm_start:
            _restore(model, model.optimizer, initial)
        optimizer.strength_scale.assign(float(strength) / top)
        n_epochs = warm_epochs if (i and warm_start) else epochs
        extra = [_Converged(tol)] if tol is not None else []
        start = time.perf_counter()
        history = model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=n_epochs,
            verbose=0,
            callbacks=callbacks + extra,
            **fit_kwargs,
        )
        seconds = time.perf_counter() - start
        _sync(model)
        nonzero, size = _count_nonzero(penalized)
        score = None
        if validation is not None:
            x_val, y_val = validation
            score = scorer(y_val, model.predict(x_val, batch_size=predict_batch_size, verbose=0))
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
        if verbose:
            scored = "" if score is None else f", {scorer.name} {score:.4g}"
            print(
                f"{label}l1_ratio {l1_ratio:g}, strength {strength:.4g}: {nonzero}/{size} "
                f"non-zero{scored}, {len(history.epoch)} epochs",
                flush=True,
            )
    return fits


def _rebuild(build_model, strength, l1_ratio, weights, seed):
    """A fresh model from the factory, with the regularizer at `strength`."""
    model, _, _ = _build(build_model, _regularizer_for(strength, l1_ratio), seed)
    model.set_weights(weights)
    return model


# Results.


def _format_table(rows, columns):
    cells = [[title for title, _, _ in columns]]
    for row in rows:
        cells.append(["-" if row[key] is None else fmt.format(row[key]) for _, key, fmt in columns])
    widths = [max(len(line[j]) for line in cells) for j in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _to_dataframe(rows, owner):
    try:
        import pandas as pd
    except ImportError as error:
        raise ImportError(
            f"`{owner}.to_dataframe()` needs pandas, which kerasreg does not install. Install "
            "it with `pip install pandas`, or use `.rows()`."
        ) from error
    return pd.DataFrame(rows)


class RegularizationPath:
    """One model fitted along a decreasing sequence of strengths.

    Returned by `regularization_path`. Attributes:

    - `strengths`: the strengths, decreasing (NumPy array).
    - `l1_ratio`: the elastic-net mixing of the path's regularizer.
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
        return _to_dataframe(self.rows(), "RegularizationPath")

    def __str__(self):
        return _format_table(self.rows(), self._COLUMNS)

    def __repr__(self):
        return (
            f"<RegularizationPath: l1_ratio={self.l1_ratio:g}, {len(self.strengths)} strengths "
            f"from {self.strengths[0]:.4g} to {self.strengths[-1]:.4g}>"
        )


class CrossValidatedPath:
    """Cross-validation scores along regularization paths, and the choices.

    Returned by `cross_validate_path`. Attributes:

    - `strengths` (decreasing) and `l1_ratios`: the grid.
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
        return _to_dataframe(self.table, "CrossValidatedPath")

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
            raise _invalid("l1_ratio", f"one of {self.l1_ratios}", l1_ratio)
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
                label=f"l1_ratio={ratio:g}",
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
        top.set_xlabel(f"non-zero weights (l1_ratio={ratio:g})")
        return ax

    def __str__(self):
        text = _format_table(self.table, self._COLUMNS)
        best, one_se = self.best, self.one_se
        return (
            f"{text}\nscore: validation {self.metric} ({self.mode}), mean over "
            f"{self.fold_scores.shape[-1]} folds; sem = std / sqrt(folds)\n"
            f"best:   l1_ratio={best['l1_ratio']:g}, strength={best['strength']:.4g} "
            f"({best['mean']:.4g}, {best['nonzero']:.1f} non-zero)\n"
            f"one SE: l1_ratio={one_se['l1_ratio']:g}, strength={one_se['strength']:.4g} "
            f"({one_se['mean']:.4g}, {one_se['nonzero']:.1f} non-zero)"
        )

    def __repr__(self):
        return (
            f"<CrossValidatedPath: {len(self.l1_ratios)} l1_ratios x {len(self.strengths)} "
            f"strengths x {self.fold_scores.shape[-1]} folds; best strength "
            f"{self.best['strength']:.4g}, one-SE strength {self.one_se['strength']:.4g}>"
        )


def _check_build_model(build_model):
    if not callable(build_model):
        raise _invalid(
            "build_model", "a callable (regularizer) -> compiled keras.Model", build_model
        )


def regularization_path(
    build_model,
    x,
    y,
    strengths,
    *,
    l1_ratio=1.0,
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

    Args:
        build_model: Callable `(regularizer) -> keras.Model`, compiled with
            `ProximalOptimizer`.
        x: Training inputs: an array, or a list/dict of arrays.
        y: Training targets.
        strengths: The strengths; fitted from the largest down.
        l1_ratio: The elastic-net mixing in [0, 1]. Defaults to `1.0` (L1).
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
    _check_build_model(build_model)
    strengths = _check_strengths(strengths)
    if not _is_real(l1_ratio) or not 0.0 <= l1_ratio <= 1.0:
        raise _invalid("l1_ratio", "a float in [0, 1]", l1_ratio)
    l1_ratio = float(l1_ratio)
    n = _n_samples("x", x)
    if _n_samples("y", y) != n:
        raise ValueError(
            f"Invalid value for argument `y`: expected as many samples as `x` ({n}). "
            f"Received: y with {_n_samples('y', y)} samples"
        )
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise _invalid("validation_data", "a tuple (x_val, y_val) or None", validation_data)
    epochs = _check_positive_int("epochs", epochs)
    warm_epochs = _check_positive_int("warm_epochs", warm_epochs, allow_none=True) or epochs
    tol = _check_tol(tol)
    warm_start = _check_bool("warm_start", warm_start)
    batch_size = _check_batch_size(batch_size)
    repeat = _check_positive_int("repeat", repeat)
    scorer = _Scorer(metric, "auto")
    fit_kwargs = _check_fit_kwargs(fit_kwargs)
    keep_weights = _check_bool("keep_weights", keep_weights)
    seed = _check_seed(seed)
    verbose = _check_verbose(verbose)
    fits = _run_path(
        build_model,
        x,
        y,
        strengths,
        l1_ratio,
        validation=tuple(validation_data) if validation_data is not None else None,
        scorer=scorer,
        epochs=epochs,
        warm_epochs=warm_epochs,
        tol=tol,
        warm_start=warm_start,
        batch_size=batch_size,
        repeat=repeat,
        fit_kwargs=fit_kwargs,
        keep_weights=keep_weights,
        seed=seed,
        verbose=verbose,
    )
    return RegularizationPath(fits, l1_ratio, scorer.name if validation_data is not None else None)


def cross_validate_path(
    build_model,
    x,
    y,
    strengths,
    *,
    l1_ratios=1.0,
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
        l1_ratios: An `l1_ratio` in [0, 1] or a sequence of them (`1` is L1,
            `0` is L2). Defaults to `1.0`.
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
    _check_build_model(build_model)
    strengths = _check_strengths(strengths)
    l1_ratios = _check_l1_ratios(l1_ratios)
    n = _n_samples("x", x)
    if _n_samples("y", y) != n:
        raise ValueError(
            f"Invalid value for argument `y`: expected as many samples as `x` ({n}). "
            f"Received: y with {_n_samples('y', y)} samples"
        )
    epochs = _check_positive_int("epochs", epochs)
    warm_epochs = _check_positive_int("warm_epochs", warm_epochs, allow_none=True) or epochs
    tol = _check_tol(tol)
    warm_start = _check_bool("warm_start", warm_start)
    batch_size = _check_batch_size(batch_size)
    repeat = _check_positive_int("repeat", repeat)
    scorer = _Scorer(metric, mode)
    fit_kwargs = _check_fit_kwargs(fit_kwargs)
    refit = _check_bool("refit", refit)
    seed = _check_seed(seed)
    verbose = _check_verbose(verbose)
    if _is_int(cv) and cv < 2:
        raise _invalid("cv", "an int >= 2, a scikit-learn splitter or an iterable of splits", cv)
    try:
        splitter = check_cv(cv)
    except ValueError as error:
        raise _invalid(
            "cv", "an int >= 2, a scikit-learn splitter or an iterable of splits", cv
        ) from error
    first = np.asarray(keras.tree.flatten(x)[0])
    try:
        folds = list(splitter.split(first, np.asarray(keras.tree.flatten(y)[0]), groups))
    except ValueError as error:
        raise ValueError(
            f"Invalid value for argument `cv`: the splitter could not split the data ({error}). "
            f"Received: cv={cv!r}"
        ) from error
    if len(folds) < 2:
        raise _invalid("cv", "at least 2 splits", cv)

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
                strengths,
                l1_ratio,
                validation=(_take(x, held_out), _take(y, held_out)),
                scorer=scorer,
                epochs=epochs,
                warm_epochs=warm_epochs,
                tol=tol,
                warm_start=warm_start,
                batch_size=batch_size,
                repeat=repeat,
                fit_kwargs=dict(fit_kwargs),
                keep_weights=False,
                seed=seed,
                verbose=verbose,
                label=f"fold {k + 1}/{len(folds)}: ",
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
        _refit(
            result,
            build_model,
            x,
            y,
            strengths,
            scorer,
            dict(
                epochs=epochs,
                warm_epochs=warm_epochs,
                tol=tol,
                warm_start=warm_start,
                batch_size=batch_size,
                repeat=repeat,
                seed=seed,
                verbose=verbose,
            ),
            fit_kwargs,
        )
    return result


def _refit(result, build_model, x, y, strengths, scorer, options, fit_kwargs):
    """Refits `best` and `one_se` on all the data, along the same path."""
    chosen = {}
    for name in ("best", "one_se"):
        row = getattr(result, name)
        chosen.setdefault(row["l1_ratio"], []).append((name, row["strength"]))
    for l1_ratio, wanted in chosen.items():
        lowest = min(strength for _, strength in wanted)
        if options["warm_start"]:
            path = strengths[strengths >= lowest]
        else:
            path = np.array(sorted({s for _, s in wanted}, reverse=True))
        fits = _run_path(
            build_model,
            x,
            y,
            path,
            l1_ratio,
            validation=None,
            scorer=scorer,
            fit_kwargs=dict(fit_kwargs),
            keep_weights=True,
            label="refit: ",
            **options,
        )
        by_strength = {f.strength: f.weights for f in fits}
        for name, strength in wanted:
            model = _rebuild(
                build_model, strength, l1_ratio, by_strength[strength], options["seed"]
            )
            setattr(result, f"{name}_model", model)
