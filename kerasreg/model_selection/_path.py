"""The two path functions: `regularization_path` and `cross_validate_path`.

They check their arguments (one table, `_PATH_CONSTRAINTS`, for what both
take), make the grid (`_grid`), and run one job per path (`_run_path`): one
for `regularization_path`, one per fold and `l1_ratio` for
`cross_validate_path`, then the refits.
"""

import dataclasses
import time

import keras
import numpy as np

from kerasreg._validation import AnyOf
from kerasreg._validation import Boolean
from kerasreg._validation import Callable
from kerasreg._validation import DataPair
from kerasreg._validation import FitKwargs
from kerasreg._validation import Integer
from kerasreg._validation import Interval
from kerasreg._validation import Options
from kerasreg._validation import Ratios
from kerasreg._validation import Samples
from kerasreg._validation import SampleWeights
from kerasreg._validation import Splits
from kerasreg._validation import Strengths
from kerasreg._validation import String
from kerasreg._validation import invalid_argument
from kerasreg._validation import validate_params
from kerasreg.model_selection._grid import _grid
from kerasreg.model_selection._results import CrossValidatedPath
from kerasreg.model_selection._results import RegularizationPath
from kerasreg.model_selection._runner import _check_same_samples
from kerasreg.model_selection._runner import _PathJob
from kerasreg.model_selection._runner import _PathOptions
from kerasreg.model_selection._runner import _rebuild
from kerasreg.model_selection._runner import _run_path
from kerasreg.model_selection._runner import _templates
from kerasreg.model_selection._scoring import _Scorer

_MODES = ("auto", "min", "max")
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
    job = _PathJob(
        build_model=build_model,
        template=template,
        l1_ratio=label,
        strengths=strengths,
        options=options,
        data=(x, y, sample_weight),
        scorer=scorer,
        validation=None if validation_data is None else (*validation_data, None),
        keep_weights=keep_weights,
        start=start,
    )
    fits = _run_path(job)
    return RegularizationPath(fits, label, scorer.name if validation_data is not None else None)


@validate_params(
    {
        **_PATH_CONSTRAINTS,
        "l1_ratios": Ratios(),
        "cv": AnyOf(Integer(2), Splits()),
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
    check_cv = _check_cv()
    _check_same_samples(x, y, sample_weight)
    options = _PathOptions.pick(locals())
    scorer = _Scorer(metric, mode)
    folds = _folds(check_cv, cv, x, y, groups)
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
    # What every job shares; each fold and `l1_ratio` replaces the rest.
    base = _PathJob(
        build_model=build_model,
        template=None,
        l1_ratio=None,
        strengths=strengths,
        options=options,
        data=(x, y, sample_weight),
        scorer=scorer,
    )
    shape = (len(l1_ratios), len(strengths), len(folds))
    scores = np.zeros(shape)
    nonzeros = np.zeros(shape)
    epochs_run = np.zeros(shape)
    sizes = np.zeros(len(l1_ratios), dtype="int64")
    start = time.perf_counter()
    for k, fold in enumerate(folds):
        for a, l1_ratio in enumerate(l1_ratios):
            job = dataclasses.replace(
                base,
                template=templates[a],
                l1_ratio=l1_ratio,
                fold=fold,
                prefix=f"fold {k + 1}/{len(folds)}: ",
            )
            fits = _run_path(job)
            scores[a, :, k] = [f.score for f in fits]
            nonzeros[a, :, k] = [f.nonzero for f in fits]
            epochs_run[a, :, k] = [f.epochs for f in fits]
            sizes[a] = fits[0].size
    result = CrossValidatedPath(
        strengths, l1_ratios, scores, nonzeros, sizes, epochs_run, scorer.name, scorer.mode
    )
    result.seconds = time.perf_counter() - start
    if refit:
        _refit(result, base, dict(zip(l1_ratios, templates, strict=True)))
    return result


def _check_cv():
    """scikit-learn's `check_cv`, or an `ImportError` saying how to install it."""
    try:
        from sklearn.model_selection import check_cv
    except ImportError as error:
        raise ImportError(
            "`cross_validate_path` takes its folds from scikit-learn, which kerasreg does not "
            "install. Install it with `pip install scikit-learn`."
        ) from error
    return check_cv


def _folds(check_cv, cv, x, y, groups):
    """The `(train, held_out)` index arrays of `cv` over the samples."""
    try:
        splitter = check_cv(cv)
    except ValueError as error:
        raise invalid_argument("cv", Splits.description, cv) from error
    first = np.asarray(keras.tree.flatten(x)[0])
    try:
        folds = list(splitter.split(first, np.asarray(keras.tree.flatten(y)[0]), groups))
    except ValueError as error:
        raise invalid_argument(
            "cv", f"a splitter that can split the data (it said: {error})", cv
        ) from error
    if len(folds) < 2:
        raise invalid_argument("cv", "at least 2 splits", cv)
    return folds


def _refit(result, base, templates):
    """Refits `best` and `one_se` on all the data, along the same path.

    `base` is the cross-validation's job without a fold; `templates` maps
    each `l1_ratio` to its regularizer template.
    """
    chosen = {}
    for name in ("best", "one_se"):
        row = getattr(result, name)
        chosen.setdefault(row["l1_ratio"], []).append((name, row["strength"]))
    options = base.options
    for l1_ratio, wanted in chosen.items():
        lowest = min(strength for _, strength in wanted)
        if options.warm_start:
            path = base.strengths[base.strengths >= lowest]
        else:
            path = np.array(sorted({s for _, s in wanted}, reverse=True))
        template = templates[l1_ratio]
        job = dataclasses.replace(
            base,
            template=template,
            l1_ratio=l1_ratio,
            strengths=path,
            keep_weights=True,
            prefix="refit: ",
        )
        by_strength = {f.strength: f.weights for f in _run_path(job)}
        for name, strength in wanted:
            weights = by_strength[strength]
            model = _rebuild(base.build_model, strength, template, weights, options.seed)
            setattr(result, f"{name}_model", model)
