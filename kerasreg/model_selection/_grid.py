"""The strengths of a path: given, or the automatic grid (scikit-learn's `_alpha_grid`).

The automatic grid is glmnet's and scikit-learn's: `n_strengths` strengths
spaced geometrically from the largest down to `eps` times it, the largest
being the smallest strength at which the penalized weights stay zero.
"""

import keras
import numpy as np

from kerasreg._training import data_gradients
from kerasreg._validation import invalid_argument
from kerasreg.model_selection._runner import _build
from kerasreg.model_selection._runner import _Trainer

# The automatic grid, as scikit-learn's `n_alphas` and `eps` (glmnet's
# `nlambda` and `lambda.min.ratio`).
_N_STRENGTHS = 100
_EPS = 1e-3


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
