"""Regularization paths and cross-validation against scikit-learn's `LassoCV` and `ElasticNetCV`.

On a linear model with a mean-squared-error loss, kerasreg's `L1(2 * alpha)`
is scikit-learn's `Lasso(alpha)` and `ElasticNet(strength=alpha * (1 + r),
l1_ratio=2r / (1 + r))` its `ElasticNet(alpha, l1_ratio=r)` (see
`test_sklearn_mapping.py`). Given the same folds and the mapped grid, the
cross-validated path must see the same validation errors, choose the same
strength (within one grid step) and refit the same support.
"""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNetCV
from sklearn.linear_model import Lasso
from sklearn.linear_model import LassoCV
from sklearn.linear_model import MultiTaskLassoCV
from sklearn.model_selection import GroupKFold
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

import kerasreg
from kerasreg import model_selection
from tests.conftest import BACKEND
from tests.conftest import to_numpy

# Full-batch proximal gradient descent with heavy-ball momentum through
# `model.fit`: 100 steps per epoch, stopped once no weight moves by more than
# TOL in an epoch.
TOL = 1e-6
REPEAT = 100


def _diabetes():
    x, y = load_diabetes(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    return x, (y - y.mean()) / y.std()


def _linear_factory(x, units=1):
    # Keras' mse averages over the outputs too: the curvature is 2 X^T X / (n units).
    step = float(1.0 / np.linalg.eigvalsh(2 * x.T @ x / (len(x) * units)).max())

    def build_model(regularizer):
        model = keras.Sequential(
            [
                keras.Input((x.shape[1],)),
                keras.layers.Dense(
                    units, kernel_regularizer=regularizer, kernel_initializer="zeros"
                ),
            ]
        )
        model.compile(
            kerasreg.ProximalOptimizer(keras.optimizers.SGD(step, momentum=0.8)),
            "mse",
            steps_per_execution=1 if BACKEND == "torch" else REPEAT,
        )
        return model

    return build_model


def _cross_validate(x, y, strengths, folds, **kwargs):
    return model_selection.cross_validate_path(
        _linear_factory(x, 1 if y.ndim == 1 else y.shape[1]),
        x.astype("float32"),
        y.astype("float32").reshape(len(y), -1),
        strengths,
        cv=folds,
        epochs=200,
        tol=TOL,
        batch_size="full",
        repeat=REPEAT,
        fit_kwargs={"shuffle": False},
        **kwargs,
    )


def _kernel(model):
    return to_numpy(model.layers[0].kernel)[:, 0]


@pytest.mark.one_backend
def test_cross_validated_lasso_matches_lasso_cv():
    x, y = _diabetes()
    folds = list(KFold(3).split(x))
    sk = LassoCV(alphas=10, eps=1e-2, cv=folds, tol=1e-10, max_iter=100_000).fit(x, y)
    result = _cross_validate(x, y, 2 * sk.alphas_, folds)

    # The same validation errors, fold by fold, along the whole path.
    np.testing.assert_allclose(result.fold_scores[0], sk.mse_path_, rtol=1e-3)
    # The same choice, within one grid step, and the same refitted support.
    chosen = int(np.argmin(np.abs(result.strengths - result.best["strength"])))
    assert abs(chosen - list(sk.alphas_).index(sk.alpha_)) <= 1
    np.testing.assert_array_equal(_kernel(result.best_model) != 0, sk.coef_ != 0)
    assert 0 < np.count_nonzero(sk.coef_ == 0)  # a support worth comparing
    # The refitted model carries the chosen strength itself.
    assert result.best_model.layers[0].kernel_regularizer == kerasreg.L1(result.best["strength"])

    # One standard error, computed from scikit-learn's errors: the largest
    # alpha whose mean error is within one standard error of the minimum.
    mean = sk.mse_path_.mean(axis=1)
    sem = sk.mse_path_.std(axis=1, ddof=1) / np.sqrt(len(folds))
    best = np.argmin(mean)
    one_se = np.flatnonzero(mean <= mean[best] + sem[best])[0]
    chosen = int(np.argmin(np.abs(result.strengths - result.one_se["strength"])))
    assert abs(chosen - one_se) <= 1
    assert result.one_se["nonzero"] < result.best["nonzero"]
    ref = kerasreg.L1(result.one_se["strength"])
    assert result.one_se_model.layers[0].kernel_regularizer == ref


@pytest.mark.one_backend
@pytest.mark.skipif(
    BACKEND == "torch",
    reason="the path code is backend-neutral and the LassoCV test runs it here; this grid costs "
    "over a minute of eager PyTorch steps (about 6 ms each)",
)
def test_l1_ratio_grid_matches_elastic_net_cv():
    x, y = _diabetes()
    folds = list(KFold(3).split(x))
    strengths = np.geomspace(0.6, 0.01, 6)
    # kerasreg's (strength, l1_ratio) for scikit-learn's (alpha, r).
    ours = {1 / 3: 0.2, 2 / 3: 0.5}
    result = _cross_validate(x, y, strengths, folds, l1_ratios=list(ours), refit=False)
    best = (np.inf, None, None)
    for a, (l1_ratio, r) in enumerate(ours.items()):
        sk = ElasticNetCV(
            l1_ratio=r, alphas=strengths / (1 + r), cv=folds, tol=1e-10, max_iter=100_000
        ).fit(x, y)
        np.testing.assert_allclose(result.fold_scores[a], sk.mse_path_, rtol=1e-3)
        i = int(np.argmin(sk.mse_path_.mean(axis=1)))
        if sk.mse_path_.mean(axis=1)[i] < best[0]:
            best = (sk.mse_path_.mean(axis=1)[i], l1_ratio, i)
    assert result.best["l1_ratio"] == pytest.approx(best[1])
    chosen = int(np.argmin(np.abs(result.strengths - result.best["strength"])))
    assert abs(chosen - best[2]) <= 1
    assert len(result.table) == 12
    assert {row["l1_ratio"] for row in result.table} == set(result.l1_ratios)


def test_warm_and_cold_paths_reach_the_same_solutions():
    x, y = _diabetes()
    strengths = np.geomspace(0.02, 1.0, 5)  # any order: fitted from the largest down
    paths = {
        warm: model_selection.regularization_path(
            _linear_factory(x),
            x.astype("float32"),
            y.astype("float32"),
            strengths,
            epochs=200,
            tol=TOL,
            batch_size="full",
            repeat=REPEAT,
            fit_kwargs={"shuffle": False},
            warm_start=warm,
        )
        for warm in (True, False)
    }
    for warm, cold in zip(paths[True].weights, paths[False].weights, strict=True):
        np.testing.assert_allclose(warm[0], cold[0], atol=1e-4)
        np.testing.assert_array_equal(warm[0] == 0, cold[0] == 0)
    np.testing.assert_array_equal(paths[True].nonzeros, paths[False].nonzeros)
    np.testing.assert_allclose(paths[True].strengths, strengths[::-1])
    # And each point is scikit-learn's lasso at alpha = strength / 2.
    for strength, weights in zip(paths[True].strengths, paths[True].weights, strict=True):
        sk = Lasso(alpha=strength / 2, tol=1e-10, max_iter=100_000).fit(x, y)
        np.testing.assert_array_equal(weights[0][:, 0] == 0, sk.coef_ == 0)
        np.testing.assert_allclose(weights[0][:, 0], sk.coef_, atol=1e-3)
    assert paths[True].nonzeros[0] < paths[True].nonzeros[-1]


def _uncentered_diabetes():
    """Features and target away from zero mean, so that the intercept matters."""
    x, y = _diabetes()
    return x + np.linspace(-1.0, 2.0, x.shape[1]), y + 3.0


def test_automatic_grid_is_lasso_cvs_and_its_top_zeroes_every_weight():
    x, y = _uncentered_diabetes()
    sk = LassoCV(alphas=3, eps=0.98, cv=3).fit(x, y)
    path = model_selection.regularization_path(
        _linear_factory(x),
        x.astype("float32"),
        y.astype("float32")[:, None],
        n_strengths=3,
        eps=0.98,
        epochs=200,
        tol=TOL,
        batch_size="full",
        repeat=REPEAT,
        fit_kwargs={"shuffle": False},
    )
    # scikit-learn's alphas (computed on centered data: the intercept) times 2.
    np.testing.assert_allclose(path.strengths, 2 * sk.alphas_, rtol=1e-6)
    # Without the centering the largest strength would be far off.
    uncentered = 2 * np.abs(x.T @ y).max() / len(x)
    assert abs(uncentered / path.strengths[0] - 1) > 0.1
    # The largest strength zeroes every weight; 1% below it, some survive.
    assert path.nonzeros[0] == 0
    assert path.nonzeros[1] > 0


@pytest.mark.one_backend
@pytest.mark.skipif(
    BACKEND == "torch",
    reason="the grid code is backend-neutral and the LassoCV grid test runs it here; these folds "
    "cost half a minute of eager PyTorch steps",
)
def test_automatic_grid_of_a_cross_validated_elastic_net_is_elastic_net_cvs():
    x, y = _uncentered_diabetes()
    r = 0.5
    sk = ElasticNetCV(l1_ratio=r, alphas=3, eps=0.1, cv=2).fit(x, y)
    result = _cross_validate(
        x,
        y,
        None,
        list(KFold(2).split(x)),
        l1_ratios=2 * r / (1 + r),
        n_strengths=3,
        eps=0.1,
        refit=False,
    )
    # kerasreg's strength for scikit-learn's (alpha, r) is alpha * (1 + r).
    np.testing.assert_allclose(result.strengths, sk.alphas_ * (1 + r), rtol=1e-6)


def _weighted_path(x, y, sample_weight=None, **kwargs):
    return model_selection.regularization_path(
        _linear_factory(x),
        x.astype("float32"),
        y.astype("float32")[:, None],
        sample_weight=sample_weight,
        epochs=200,
        tol=TOL,
        batch_size="full",
        repeat=REPEAT,
        fit_kwargs={"shuffle": False},
        **kwargs,
    )


def test_integer_sample_weights_fit_the_repeated_rows():
    x, y = _uncentered_diabetes()
    w = np.random.default_rng(0).integers(0, 4, len(x))  # zeros drop their rows
    weighted = _weighted_path(x, y, w, n_strengths=3, eps=0.3)
    repeated = _weighted_path(np.repeat(x, w, axis=0), np.repeat(y, w), n_strengths=3, eps=0.3)
    # The same automatic grid, scikit-learn's with the same weights, times 2.
    sk = LassoCV(alphas=3, eps=0.3, cv=3).fit(x, y, sample_weight=w)
    # Within 3e-6: float32 weighted sums round more than unweighted ones (1.1e-6 on JAX).
    np.testing.assert_allclose(weighted.strengths, 2 * sk.alphas_, rtol=3e-6)
    np.testing.assert_allclose(repeated.strengths, weighted.strengths, rtol=3e-6)
    for strength, a, b in zip(weighted.strengths, weighted.weights, repeated.weights, strict=True):
        np.testing.assert_allclose(a[0], b[0], atol=1e-4)
        np.testing.assert_array_equal(a[0] == 0, b[0] == 0)
        lasso = Lasso(alpha=strength / 2, tol=1e-10, max_iter=100_000)
        lasso.fit(x, y, sample_weight=w)
        np.testing.assert_allclose(a[0][:, 0], lasso.coef_, atol=1e-3)
    assert 0 == weighted.nonzeros[0] < weighted.nonzeros[-1]


@pytest.mark.one_backend
@pytest.mark.skipif(
    BACKEND == "torch",
    reason="the fold code is backend-neutral and the sample-weight test runs the weighted fit "
    "here; these folds cost half a minute of eager PyTorch steps",
)
def test_cross_validation_splits_and_scores_the_weights_as_lasso_cv():
    x, y = _diabetes()
    w = np.random.default_rng(1).uniform(0.2, 3.0, len(x))
    folds = list(KFold(3).split(x))
    sk = LassoCV(alphas=4, eps=0.05, cv=folds, tol=1e-10, max_iter=100_000)
    sk.fit(x, y, sample_weight=w)
    result = _cross_validate(
        x, y, 2 * sk.alphas_, folds, sample_weight=w.astype("float32"), refit=False
    )
    # Fold by fold, the weighted validation errors of the weighted fits.
    np.testing.assert_allclose(result.fold_scores[0], sk.mse_path_, rtol=1e-3)


@pytest.mark.one_backend
@pytest.mark.skipif(
    BACKEND == "torch",
    reason="the template code is backend-neutral and the next test runs a GroupLasso path here; "
    "these folds cost minutes of eager PyTorch group-lasso steps",
)
def test_group_lasso_is_cross_validated_as_multi_task_lasso_cv():
    # One group per input feature across 3 outputs: scikit-learn's multi-task
    # lasso, (1 / 2n) ||Y - XW||^2 + alpha sum_j ||W_j||. Keras' mse averages
    # over the 3 outputs and GroupLasso weighs each group by sqrt(3), so
    # GroupLasso(s, group_axis=0) is MultiTaskLasso(alpha = 3 sqrt(3) s / 2).
    x, y = _diabetes()
    rng = np.random.default_rng(0)
    targets = np.c_[y, y + x[:, 2], -y + 0.5 * rng.normal(size=len(y))]
    to_ours = 2 / (3 * np.sqrt(3))
    folds = list(KFold(2).split(x))
    sk = MultiTaskLassoCV(alphas=3, eps=0.1, cv=folds, tol=1e-10, max_iter=100_000)
    sk.fit(x, targets)
    result = _cross_validate(
        x,
        targets,
        None,
        folds,
        regularizer=lambda s: kerasreg.GroupLasso(s, group_axis=0),
        n_strengths=3,
        eps=0.1,
    )
    np.testing.assert_allclose(result.strengths, to_ours * sk.alphas_, rtol=1e-6)
    np.testing.assert_allclose(result.fold_scores[0], sk.mse_path_, rtol=1e-3)
    assert result.l1_ratios == [None] and "best:   regularizer" in str(result)
    # The refitted model carries the template's regularizer at the chosen strength.
    chosen = result.best_model.layers[0].kernel_regularizer
    assert chosen == kerasreg.GroupLasso(result.best["strength"], group_axis=0)
    kernel = _kernel_matrix(result.one_se_model)
    assert np.all((kernel == 0).all(axis=1) | (kernel != 0).all(axis=1))  # whole rows


def _kernel_matrix(model):
    return to_numpy(model.layers[0].kernel)


def test_a_group_lasso_path_runs_from_its_automatic_grid():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4))
    x = (x - x.mean(axis=0)).astype("float32")  # centered: the intercept stays at zero
    y = (x[:, :2] @ rng.normal(size=(2, 3))).astype("float32")
    path = model_selection.regularization_path(
        _linear_factory(x, units=3),
        x,
        y,
        regularizer=lambda s: kerasreg.GroupLasso(s, group_axis=0),
        n_strengths=3,
        eps=0.01,
        epochs=10,
        batch_size="full",
        repeat=5,
    )
    assert path.l1_ratio is None and "regularizer" in repr(path)
    kernels = [weights[0] for weights in path.weights]
    assert np.count_nonzero(kernels[0]) == 0  # the top of the grid zeroes every group
    assert np.count_nonzero(kernels[-1].any(axis=1)) >= 2  # the two used inputs return
    for kernel in kernels:
        assert np.all((kernel == 0).all(axis=1) | (kernel != 0).all(axis=1))  # whole rows


def _table_result(scores, nonzeros, mode="min"):
    scores = np.asarray(scores, dtype="float64")[None]
    nonzeros = np.asarray(nonzeros, dtype="float64")[None]
    strengths = np.geomspace(1.0, 0.001, scores.shape[1])
    return model_selection.CrossValidatedPath(
        strengths, [1.0], scores, nonzeros, np.array([10]), np.ones_like(scores), "mse", mode
    )


@pytest.mark.backend_neutral
def test_best_and_one_standard_error_rules():
    # Folds x strengths (strength decreasing left to right).
    scores = [
        [2.0, 1.2, 1.00, 0.90, 0.95],
        [2.2, 1.0, 0.90, 0.80, 0.85],
        [1.8, 1.1, 0.95, 1.00, 1.05],
    ]
    scores = np.array(scores).T  # strengths x folds
    nonzeros = np.array([[1, 1, 1]] * 1 + [[3, 3, 3]] + [[4, 5, 4]] + [[6, 6, 6]] + [[9, 9, 9]])
    result = _table_result(scores, nonzeros)
    mean = scores.mean(axis=1)
    sem = scores.std(axis=1, ddof=1) / np.sqrt(3)
    assert result.best["strength"] == result.strengths[3]
    assert result.best["mean"] == pytest.approx(mean[3])
    assert result.best["sem"] == pytest.approx(sem[3])
    # Within one SE of 0.9: 0.95 (index 2) and 0.95 (index 4); the sparsest is index 2.
    assert mean[2] <= mean[3] + sem[3] and mean[1] > mean[3] + sem[3]
    assert result.one_se["strength"] == result.strengths[2]
    assert result.one_se["nonzero"] == pytest.approx(13 / 3)
    # For a score to maximize, the rules mirror.
    result = _table_result(-scores, nonzeros, mode="max")
    assert result.best["strength"] == result.strengths[3]
    assert result.one_se["strength"] == result.strengths[2]
    # Tidy rows, printable, and a DataFrame.
    frame = result.to_dataframe()
    assert list(frame.columns) == [
        "l1_ratio",
        "strength",
        "mean",
        "std",
        "sem",
        "nonzero",
        "sparsity",
        "epochs",
    ]
    assert len(frame) == 5
    assert "one SE:" in str(result)


@pytest.mark.backend_neutral
def test_a_diverged_fit_is_never_chosen():
    scores = np.array([[1.0, 0.5, np.nan, 0.6]] * 3).T + np.arange(3) * 0.01
    nonzeros = np.repeat(np.array([[0], [3], [5], [7]]), 3, axis=1)
    result = _table_result(scores, nonzeros)
    assert result.best["strength"] == result.strengths[1]
    assert np.isfinite(result.one_se["mean"])


@pytest.mark.backend_neutral
def test_plot_like_cv_glmnet():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = np.array([[2.0, 1.2, 0.91, 0.9, 0.95]] * 3).T + np.arange(3) * 0.05
    nonzeros = np.repeat(np.array([[0], [2], [4], [6], [9]]), 3, axis=1)
    result = _table_result(scores, nonzeros)
    assert result.one_se["strength"] == result.strengths[2] != result.best["strength"]
    ax = result.plot()
    assert ax.get_xscale() == "log"
    (curve,) = [c for c in ax.containers]  # one errorbar series
    np.testing.assert_allclose(curve.lines[0].get_ydata(), scores.mean(axis=1))
    top = [other for other in ax.figure.axes if other is not ax][0]
    assert [t.get_text() for t in top.get_xticklabels()] == ["0", "2", "4", "6", "9"]
    lines = {
        line.get_linestyle(): line.get_xdata()[0]
        for line in ax.lines
        if line.get_xdata()[0] == line.get_xdata()[-1] and len(line.get_xdata()) == 2
    }
    assert lines == {"--": result.best["strength"], ":": result.one_se["strength"]}
    plt.close(ax.figure)


def test_classification_with_accuracy_and_a_stratified_splitter():
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import StratifiedKFold

    x, y = load_breast_cancer(return_X_y=True)
    x = StandardScaler().fit_transform(x).astype("float32")

    def build_model(regularizer):
        model = keras.Sequential(
            [keras.Input((30,)), keras.layers.Dense(1, kernel_regularizer=regularizer)]
        )
        model.compile(
            kerasreg.ProximalOptimizer(keras.optimizers.Adam(0.05)),
            keras.losses.BinaryCrossentropy(from_logits=True),
        )
        return model

    def accuracy(y_true, logits):
        return np.mean((np.asarray(logits)[:, 0] > 0) == y_true)

    result = model_selection.cross_validate_path(
        build_model,
        x,
        y,
        [0.3, 0.03, 0.003],
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        epochs=10,
        batch_size=64,
        metric=accuracy,
        refit=False,
        seed=0,
    )
    assert result.metric == "accuracy" and result.mode == "max"
    # Accuracy rises as the penalty weakens; the strongest keeps few features.
    means = [row["mean"] for row in result.table]
    assert means[0] < means[-1] and means[-1] > 0.9
    assert result.table[0]["nonzero"] < result.table[-1]["nonzero"]
    assert result.best["strength"] < 0.3
    assert result.best_model is None


# Each argument's own invalid values are generated from the constraint table
# (tests/reliability.py); these are the checks that need the data.
@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"cv": []}, "cv"),
        ({"cv": GroupKFold(2)}, "cv"),  # needs `groups`
        ({"y": np.zeros(3)}, "y"),
        # The grid is `strengths` or the automatic one, never both.
        ({"n_strengths": 10}, "n_strengths"),
        ({"eps": 0.01}, "eps"),
        # No strength of L2 zeroes the weights: there is no automatic grid.
        ({"strengths": None, "l1_ratios": [1.0, 0.0]}, "l1_ratios"),
        ({"sample_weight": np.ones(19)}, "sample_weight"),
        ({"sample_weight": -np.ones(20)}, "sample_weight"),
        # A template sets the penalty: no l1_ratios beside it.
        ({"regularizer": kerasreg.GroupLasso, "l1_ratios": 0.5}, "l1_ratios"),
        ({"regularizer": lambda s: "l1"}, "regularizer"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, argument):
    x = np.zeros((20, 3), "float32")
    arguments = {"build_model": _linear_factory(np.eye(3)), "x": x, "y": np.zeros(20)}
    arguments["strengths"] = [1.0, 0.1]
    arguments.update(kwargs)
    with pytest.raises(
        kerasreg.InvalidArgumentError, match=f"Invalid value for argument `{argument}`"
    ):
        model_selection.cross_validate_path(**arguments)


def test_the_factory_must_use_the_regularizer_and_proximal_optimizer():
    x, y = np.zeros((20, 3), "float32"), np.zeros((20, 1), "float32")

    def ignores_it(regularizer):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD()), "mse")
        return model

    def plain_sgd(regularizer):
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(1, kernel_regularizer=regularizer)]
        )
        model.compile(keras.optimizers.SGD(), "mse")
        return model

    for factory, words in ((ignores_it, "no trainable weight carries"), (plain_sgd, "Proximal")):
        with pytest.raises(ValueError, match=f"`build_model`.*{words}"):
            model_selection.regularization_path(factory, x, y, [0.1], epochs=1)
