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

from kerasreg.model_selection._path import cross_validate_path
from kerasreg.model_selection._path import regularization_path
from kerasreg.model_selection._results import CrossValidatedPath
from kerasreg.model_selection._results import RegularizationPath

__all__ = [
    "CrossValidatedPath",
    "RegularizationPath",
    "cross_validate_path",
    "regularization_path",
]
