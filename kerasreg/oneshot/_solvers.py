r"""The arithmetic of one-shot pruning: masks and weight updates in NumPy.

Pure functions of one layer's weight matrix and the statistics of its inputs,
free of Keras. The matrix `w` is laid out as the papers write it,
`(outputs, inputs)`: row :math:`i` holds the weights that produce output
:math:`i`, column :math:`j` those that read input feature :math:`j` (a
`Dense` kernel transposed). `hessian` is :math:`X^\top X` over the
calibration rows :math:`X` (rows, inputs), unnormalized; the layer's
reconstruction objective is

.. math::

    \min_{\hat W} \lVert X \hat W^\top - X W^\top \rVert_F^2
    = \operatorname{tr}\big((\hat W - W) \, X^\top X \, (\hat W - W)^\top\big)

under the sparsity pattern. Counts round half up: a fraction :math:`s` of
:math:`n` entries removes :math:`\lfloor s n + 1/2 \rfloor` of them, exactly
that many (ties go in index order). An N:M `structure` `(n, m)` keeps `n` of
every `m` consecutive inputs of each output, as `kerasreg.MagnitudePruning`
does.

All arithmetic is in float64.
"""

import math
import warnings

import numpy as np

__all__ = [
    "magnitude_mask",
    "wanda_mask",
    "sparsegpt",
    "prepare_hessian",
    "reconstruction_error",
    "removed_count",
]


def removed_count(sparsity, size):
    """How many of `size` entries a fraction `sparsity` removes (half up)."""
    return int(math.floor(sparsity * size + 0.5))


def _lowest(scores, count, axis=-1):
    """Boolean mask of the `count` lowest `scores` along `axis` (stable: index order for ties)."""
    removed = np.zeros(scores.shape, dtype=bool)
    if count <= 0:
        return removed
    order = np.argsort(scores, axis=axis, kind="stable")
    picked = np.take(order, np.arange(count), axis=axis)
    np.put_along_axis(removed, picked, True, axis=axis)
    return removed


def _n_m_removed(scores, structure):
    """Removes the `m - n` lowest scores of every `m` consecutive columns, per row."""
    n, m = structure
    rows, columns = scores.shape
    blocks = scores.reshape(rows, columns // m, m)
    return _lowest(blocks, m - n, axis=-1).reshape(rows, columns)


def magnitude_mask(w, sparsity, structure=None):
    """The entries magnitude pruning keeps: the largest :math:`|w|` of the layer.

    Unstructured, the :math:`\\lfloor s \\cdot w.size + 1/2 \\rfloor` smallest
    magnitudes of the whole matrix go (one threshold per layer); with a
    `structure`, the `m - n` smallest of every block.

    Args:
        w: Array `(outputs, inputs)`.
        sparsity: Float in [0, 1); ignored with a `structure`.
        structure: `(n, m)` or `None`.

    Returns:
        Boolean array of `w`'s shape, `True` where the entry is kept.
    """
    scores = np.abs(np.asarray(w, dtype=np.float64))
    if structure is not None:
        return ~_n_m_removed(scores, structure)
    flat = _lowest(scores.reshape(-1), removed_count(sparsity, scores.size))
    return ~flat.reshape(scores.shape)


def wanda_mask(w, input_norms, sparsity, structure=None):
    r"""The entries Wanda keeps (Sun et al. 2023): the largest :math:`|w_{ij}| \lVert X_j \rVert_2`.

    Scores are compared within each output (row): the
    :math:`\lfloor s \cdot inputs + 1/2 \rfloor` lowest of each row go, or,
    with a `structure`, the `m - n` lowest of every block of the row. The
    weights kept are not changed.

    Args:
        w: Array `(outputs, inputs)`.
        input_norms: Array `(inputs,)`, the Euclidean norm of each input
            feature over the calibration rows.
        sparsity: Float in [0, 1); ignored with a `structure`.
        structure: `(n, m)` or `None`.

    Returns:
        Boolean array of `w`'s shape, `True` where the entry is kept.
    """
    scores = np.abs(np.asarray(w, dtype=np.float64)) * np.asarray(input_norms, np.float64)[None]
    if structure is not None:
        return ~_n_m_removed(scores, structure)
    return ~_lowest(scores, removed_count(sparsity, scores.shape[1]), axis=1)


def prepare_hessian(hessian, damping):
    r"""The damped Hessian SparseGPT inverts, and the inputs no row ever fed.

    An input whose diagonal entry is 0 (always zero on the calibration
    data) gets a diagonal of 1; then :math:`\lambda \cdot
    \operatorname{mean}(\operatorname{diag} H)` is added to the diagonal,
    :math:`\lambda` = `damping`.

    Returns:
        `(damped, dead)`: the float64 matrix and a boolean array `(inputs,)`.
    """
    h = np.array(hessian, dtype=np.float64, copy=True)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h[np.diag_indices_from(h)] += damping * np.mean(np.diag(h))
    return h, dead


def _inverse_cholesky(h, damping, name):
    r"""The upper Cholesky factor :math:`U` of :math:`H^{-1} = U^\top U`.

    A Hessian that is not positive definite gets ten times the damping (at
    least 1e-6 of the mean diagonal), with a warning, until it is.
    """
    mean = float(np.mean(np.diag(h)))
    added = damping * mean
    for _ in range(12):
        try:
            lower = np.linalg.cholesky(h)
            inverse = np.linalg.inv(lower)
            inverse = inverse.T @ inverse
            upper = np.linalg.cholesky(inverse).T
            if np.all(np.isfinite(upper)):
                return upper
        except np.linalg.LinAlgError:
            pass
        extra = max(added * 9.0, 1e-6 * mean) if added > 0 else 1e-6 * mean
        h = h + extra * np.eye(h.shape[0])
        added += extra
        warnings.warn(
            f"The Hessian of {name} is singular with hessian_damping={damping}; damping it "
            f"with {added / mean:.3g} of its mean diagonal instead.",
            stacklevel=4,
        )
    raise np.linalg.LinAlgError(f"The Hessian of {name} stays singular after damping.")


def sparsegpt(w, hessian, sparsity, structure=None, damping=0.01, block_size=128, name="a layer"):
    r"""SparseGPT (Frantar and Alistarh 2023): prune and update the rest of each row.

    Columns are visited in order. Pruning weight :math:`w_{iq}` is the
    optimal brain surgeon step restricted to the columns not yet visited,
    :math:`F`: the row changes by :math:`-\frac{w_{iq}}{[H_F^{-1}]_{qq}}
    [H_F^{-1}]_{q,:}`, and :math:`[H_F^{-1}]_{q,:} / \sqrt{[H_F^{-1}]_{qq}}` is
    row :math:`q` of the upper Cholesky factor of :math:`H^{-1}`, so one
    factorization serves all columns. Updates are applied lazily, one
    `block_size` block of columns at a time. Which entries go is chosen by
    :math:`w^2 / [H_F^{-1}]_{qq}`: unstructured, over each block of columns
    at once (the :math:`\lfloor s \cdot rows \cdot columns + 1/2 \rfloor`
    lowest of the block, weights as updated so far); N:M, on reaching the
    first column of every block of `m`.

    Args:
        w: Array `(outputs, inputs)`.
        hessian: Array `(inputs, inputs)`, :math:`X^\top X`.
        sparsity: Float in [0, 1); ignored with a `structure`.
        structure: `(n, m)` or `None`.
        damping: Float >= 0, :math:`\lambda` of `prepare_hessian`.
        block_size: Int >= 1, columns per lazy update (a multiple of `m`
            is used with a structure).
        name: What the warnings call the layer.

    Returns:
        `(new_w, keep)`: the float64 weights and the boolean mask.
    """
    w = np.array(w, dtype=np.float64, copy=True)
    rows, columns = w.shape
    h, dead = prepare_hessian(hessian, damping)
    w[:, dead] = 0.0
    upper = _inverse_cholesky(h, damping, name)
    keep = np.ones(w.shape, dtype=bool)
    if structure is not None:
        m = structure[1]
        block_size = max(m, block_size - block_size % m)
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        block = w[:, start:stop].copy()
        pruned = w[:, start:stop] * 0.0
        errors = np.zeros_like(block)
        factor = upper[start:stop, start:stop]
        diagonal = np.diag(factor)
        if structure is None:
            scores = block**2 / diagonal[None] ** 2
            count = removed_count(sparsity, scores.size)
            removed = _lowest(scores.reshape(-1), count).reshape(scores.shape)
        else:
            removed = np.zeros(block.shape, dtype=bool)
        for j in range(stop - start):
            if structure is not None and j % structure[1] == 0:
                n, m = structure
                scores = block[:, j : j + m] ** 2 / diagonal[None, j : j + m] ** 2
                removed[:, j : j + m] = _lowest(scores, m - n, axis=1)
            column = block[:, j]
            kept = np.where(removed[:, j], 0.0, column)
            pruned[:, j] = kept
            error = (column - kept) / factor[j, j]
            block[:, j:] -= np.outer(error, factor[j, j:])
            errors[:, j] = error
        w[:, start:stop] = pruned
        keep[:, start:stop] = ~removed
        w[:, stop:] -= errors @ upper[start:stop, stop:]
    keep &= ~dead[None]
    return w, keep


def reconstruction_error(dense, pruned, hessian, row_sum, rows, bias=None):
    r"""The relative error of a layer's outputs on the calibration rows.

    :math:`\lVert X (\hat W - W)^\top \rVert_F / \lVert X W^\top + 1 b^\top
    \rVert_F`, from the sums the calibration kept (:math:`X^\top X`, the sum of
    the rows of :math:`X`, their count), without the rows themselves.

    Returns:
        A float (0.0 for a layer whose outputs were all zero).
    """
    dense = np.asarray(dense, np.float64)
    delta = np.asarray(pruned, np.float64) - dense
    hessian = np.asarray(hessian, np.float64)
    error = float(np.einsum("ij,jk,ik->", delta, hessian, delta))
    total = float(np.einsum("ij,jk,ik->", dense, hessian, dense))
    if bias is not None:
        bias = np.asarray(bias, np.float64).reshape(-1)
        total += 2.0 * float(bias @ (dense @ np.asarray(row_sum, np.float64)))
        total += rows * float(bias @ bias)
    if total <= 0:
        return 0.0
    return math.sqrt(max(error, 0.0) / total)
