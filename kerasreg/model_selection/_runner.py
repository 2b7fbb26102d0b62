"""The path runner: one model fitted along decreasing strengths, warm-started.

A path is one job (`_PathJob`): a fold (or all the data), a grid of
strengths, one regularizer template (one `l1_ratio`), the model factory and
how each fit runs. `_run_path` builds and compiles the model once and moves
it along the strengths through the optimizer's `strength_scale`, so its
compiled training step is reused at every strength.
"""

import dataclasses
import functools
import time

import keras
import numpy as np

from kerasreg import regularizers as regularizers_lib
from kerasreg._training import proximal_optimizer_of
from kerasreg._training import sync_variables
from kerasreg._validation import InvalidArgumentError
from kerasreg._validation import invalid_argument
from kerasreg.model_selection._results import _label
from kerasreg.model_selection._scoring import _mean_one
from kerasreg.model_selection._scoring import _Scorer


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


def _tile(data, repeat):
    return keras.tree.map_structure(
        lambda leaf: np.tile(np.asarray(leaf), (repeat,) + (1,) * (np.ndim(leaf) - 1)), data
    )


def _take(data, indices):
    return keras.tree.map_structure(lambda leaf: np.asarray(leaf)[indices], data)


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


@dataclasses.dataclass(frozen=True)
class _PathJob:
    """One path to fit: one `(fold, l1_ratio)`, as scikit-learn's `_path_residuals`.

    Everything `_run_path` needs, in one object, so that a job reads whole
    and can run on its own; the path functions make one per fold and
    `l1_ratio`, and `dataclasses.replace` makes the refits' from the same.

    Attributes:
        build_model: The factory, `(regularizer) -> keras.Model` compiled
            with `ProximalOptimizer`.
        template: `strength -> regularizer` for this path.
        l1_ratio: How the path's regularizer is named in tables and verbose
            lines: its `l1_ratio`, or `None` for a `regularizer` template.
        strengths: The strengths, decreasing.
        options: How each fit runs (`_PathOptions`).
        data: `(x, y, sample_weight)`, all the samples.
        scorer: The `_Scorer` of the held-out fits, shared by the jobs of
            one call.
        fold: `(train, held_out)` index arrays into `data`, or `None` to fit
            all of `data`.
        validation: `(x, y, sample_weight)` to score each fit on, when
            `fold` is `None`; or `None`.
        keep_weights: Whether to keep `model.get_weights()` after each fit.
        start: The weights a warm-started path starts from, or `None`.
        prefix: What its verbose lines start with, e.g. `"fold 2/5: "`.
    """

    build_model: object
    template: object
    l1_ratio: float | None
    strengths: np.ndarray
    options: _PathOptions
    data: tuple
    scorer: _Scorer
    fold: tuple | None = None
    validation: tuple | None = None
    keep_weights: bool = False
    start: list | None = None
    prefix: str = ""

    def training(self):
        """`(x, y, sample_weight)` to fit."""
        return self.data if self.fold is None else _subset(self.data, self.fold[0])

    def held_out(self):
        """`(x, y, sample_weight)` to score each fit on, or `None`."""
        return self.validation if self.fold is None else _subset(self.data, self.fold[1])


def _subset(data, indices):
    x, y, sample_weight = data
    weights = None if sample_weight is None else sample_weight[indices]
    return _take(x, indices), _take(y, indices), weights


def _run_path(job):
    """Fits `job.strengths` (decreasing) in order; returns one `_Fit` per strength.

    With warm starts, the first fit starts from the weights `job.start` if
    given.
    """
    options, scorer = job.options, job.scorer
    top = float(job.strengths[0])
    model, optimizer, penalized = _build(job.build_model, job.template(top), options.seed)
    if job.start is not None and options.warm_start:
        model.set_weights(job.start)
    validation = job.held_out()
    if validation is not None:
        scorer.bind(model)
    warm_start = options.warm_start
    # The whole optimizer, a LossScaleOptimizer around it included.
    initial = None if warm_start else _snapshot(model, model.optimizer)
    trainer = _Trainer(*job.training(), options)
    fits = []
    for i, strength in enumerate(job.strengths):
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
                weights=[np.array(w) for w in model.get_weights()] if job.keep_weights else None,
            )
        )
        if options.verbose:
            scored = "" if score is None else f", {scorer.name} {score:.4g}"
            print(
                f"{job.prefix}{_label(job.l1_ratio)}, strength {strength:.4g}: {nonzero}/{size} "
                f"non-zero{scored}, {len(history.epoch)} epochs",
                flush=True,
            )
    return fits


def _rebuild(build_model, strength, template, weights, seed):
    """A fresh model from the factory, with the regularizer at `strength`."""
    model, _, _ = _build(build_model, template(strength), seed)
    model.set_weights(weights)
    return model
