"""The results of a path and of a cross-validation: tables, choices, plots."""

import math

import numpy as np

from kerasreg import _tables
from kerasreg._validation import invalid_argument


def _label(l1_ratio):
    """How a path's regularizer is named in tables and plots."""
    return "regularizer" if l1_ratio is None else f"l1_ratio={l1_ratio:g}"


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
