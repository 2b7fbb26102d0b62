"""One-shot pruning arithmetic (magnitude, Wanda, SparseGPT) against independent NumPy oracles.

The layer is `w` (outputs, inputs) and `hessian = X^T X` over calibration rows
`X` (rows, inputs). The oracles below are written from the papers' definitions:
Wanda's score from the columns of `X` itself, magnitude pruning from one
threshold on the sorted magnitudes, and SparseGPT as the plain sequence of
optimal brain surgeon steps, each inverting the Hessian restricted to the
columns not yet visited with `np.linalg.inv` (no Cholesky factor, no lazy
block updates).
"""

import math
import warnings

import numpy as np
import pytest

from kerasreg.oneshot._solvers import magnitude_mask
from kerasreg.oneshot._solvers import reconstruction_error
from kerasreg.oneshot._solvers import sparsegpt
from kerasreg.oneshot._solvers import wanda_mask

pytestmark = pytest.mark.backend_neutral


def half_up(sparsity, size):
    return math.floor(sparsity * size + 0.5)


def calibration(seed, rows=200, inputs=16, outputs=6, dead=()):
    """Correlated inputs of unequal scales, some columns zero, and a dense layer."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, inputs)) @ rng.normal(size=(inputs, inputs))
    x *= np.exp(rng.uniform(-1.0, 1.0, size=inputs))
    x[:, list(dead)] = 0.0
    w = rng.normal(size=(outputs, inputs))
    return x, w


def lowest_first(scores, count):
    """Flat indices of the `count` lowest scores, ties in index order."""
    return np.argsort(scores, axis=-1, kind="stable")[..., :count]


def sparsegpt_reference(w, hessian, sparsity, structure=None, damping=0.01, block_size=128):
    """SparseGPT as eager optimal brain surgeon steps, one explicit inverse per column.

    Column `q` is pruned with `Hinv_q = inv(H[q:, q:])` (damped Hessian); every
    row then changes on columns `q:` by `-(w_q - kept_q) / Hinv_q[0, 0] *
    Hinv_q[0, :]`. Which entries go: unstructured, at the start of every
    `block_size` block the lowest `w^2 / Hinv_j[0, 0]` of the whole block;
    N:M, at every `m`-th column the `m - n` lowest of those `m` columns, per row.
    """
    w = np.array(w, dtype=np.float64, copy=True)
    rows, columns = w.shape
    h = np.array(hessian, dtype=np.float64, copy=True)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h += damping * np.mean(np.diag(h)) * np.eye(columns)
    w[:, dead] = 0.0
    inverses = [np.linalg.inv(h[q:, q:]) for q in range(columns)]
    corner = np.array([inverse[0, 0] for inverse in inverses])
    removed = np.zeros(w.shape, dtype=bool)
    for q in range(columns):
        if structure is None and q % block_size == 0:
            stop = min(q + block_size, columns)
            scores = w[:, q:stop] ** 2 / corner[None, q:stop]
            picked = lowest_first(scores.reshape(-1), half_up(sparsity, scores.size))
            block = np.zeros(scores.size, dtype=bool)
            block[picked] = True
            removed[:, q:stop] = block.reshape(scores.shape)
        if structure is not None and q % structure[1] == 0:
            n, m = structure
            scores = w[:, q : q + m] ** 2 / corner[None, q : q + m]
            block = np.zeros(scores.shape, dtype=bool)
            np.put_along_axis(block, lowest_first(scores, m - n), True, axis=1)
            removed[:, q : q + m] = block
        kept = np.where(removed[:, q], 0.0, w[:, q])
        w[:, q:] -= np.outer((w[:, q] - kept) / corner[q], inverses[q][0])
        w[:, q] = kept
    return w, ~removed & ~dead[None]


def relative_error(x, dense, pruned, bias=None):
    """||X (W_new - W)^T||_F / ||X W^T + 1 b^T||_F from the rows themselves."""
    out = x @ dense.T
    if bias is not None:
        out = out + bias[None]
    return np.linalg.norm(x @ (pruned - dense).T) / np.linalg.norm(out)


# Magnitude pruning.


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.7, 0.9])
def test_magnitude_mask_is_one_threshold_on_sorted_magnitudes(sparsity):
    """Exactly floor(s * size + 1/2) zeros: every |w| at or below the k-th smallest goes."""
    w = np.random.default_rng(0).normal(size=(7, 9))
    keep = magnitude_mask(w, sparsity)
    k = half_up(sparsity, w.size)
    threshold = np.sort(np.abs(w).reshape(-1))[k - 1]
    np.testing.assert_array_equal(keep, np.abs(w) > threshold)
    assert np.count_nonzero(~keep) == k


def test_magnitude_mask_rounds_half_up_and_breaks_ties_in_index_order():
    """Half of 6 with four equal magnitudes: the first three in row-major order go."""
    w = np.array([[1.0, -1.0, 2.0], [1.0, 3.0, -1.0]])
    np.testing.assert_array_equal(
        magnitude_mask(w, 0.5), [[False, False, True], [False, True, True]]
    )
    # 0.5 * 5 = 2.5 rounds up to 3 removed (not to the even 2).
    assert np.count_nonzero(~magnitude_mask(np.arange(1.0, 6.0)[None], 0.5)) == 3


def test_magnitude_mask_two_four_keeps_the_two_largest_of_every_block():
    """2:4: per row, each block of four consecutive inputs keeps its two largest |w|."""
    w = np.random.default_rng(1).normal(size=(5, 16))
    keep = magnitude_mask(w, 0.0, structure=(2, 4))
    blocks = np.abs(w).reshape(5, 4, 4)
    expected = blocks >= np.sort(blocks, axis=-1)[..., 2:3]
    np.testing.assert_array_equal(keep, expected.reshape(5, 16))
    assert np.all(keep.reshape(5, 4, 4).sum(-1) == 2)


# Wanda.


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.6])
def test_wanda_mask_matches_closed_form_from_the_rows(sparsity):
    """Score |W_ij| * ||X_j||_2 from X's columns; each row loses its k lowest scores."""
    x, w = calibration(2)
    norms = np.sqrt(np.sum(x**2, axis=0))
    keep = wanda_mask(w, norms, sparsity)
    scores = np.abs(w) * norms[None]
    k = half_up(sparsity, w.shape[1])
    expected = np.ones(w.shape, dtype=bool)
    np.put_along_axis(expected, np.argsort(scores, axis=1)[:, :k], False, axis=1)
    np.testing.assert_array_equal(keep, expected)
    assert np.all((~keep).sum(axis=1) == k)
    # The input scales matter: the mask is not magnitude pruning row by row.
    by_magnitude = np.ones(w.shape, dtype=bool)
    np.put_along_axis(by_magnitude, np.argsort(np.abs(w), axis=1)[:, :k], False, axis=1)
    assert not np.array_equal(keep, by_magnitude)


def test_wanda_mask_two_four():
    """2:4: every block of four inputs of every row keeps exactly its two best scores."""
    x, w = calibration(3)
    norms = np.sqrt(np.sum(x**2, axis=0))
    keep = wanda_mask(w, norms, 0.0, structure=(2, 4))
    blocks = (np.abs(w) * norms[None]).reshape(w.shape[0], -1, 4)
    expected = np.zeros(blocks.shape, dtype=bool)
    np.put_along_axis(expected, np.argsort(blocks, axis=-1)[..., 2:], True, axis=-1)
    np.testing.assert_array_equal(keep, expected.reshape(w.shape))
    assert np.all(keep.reshape(w.shape[0], -1, 4).sum(-1) == 2)


# SparseGPT against the slow reference.


@pytest.mark.parametrize("block_size", [1, 4, 5, 128])
@pytest.mark.parametrize("structure", [None, (2, 4)], ids=["unstructured", "2:4"])
def test_sparsegpt_matches_explicit_obs_reference(structure, block_size):
    """Weights (rtol 1e-8) and masks (exactly) equal the column-by-column OBS reference.

    Two inputs are always zero on the calibration rows: their weights end at 0
    and are not kept.
    """
    dead = (3, 10)
    x, w = calibration(4, dead=dead)
    hessian = x.T @ x
    new_w, keep = sparsegpt(w, hessian, 0.5, structure=structure, block_size=block_size)
    ref_w, ref_keep = sparsegpt_reference(
        w, hessian, 0.5, structure=structure, block_size=block_size
    )
    np.testing.assert_array_equal(keep, ref_keep)
    np.testing.assert_allclose(new_w, ref_w, rtol=1e-8, atol=1e-12 * np.abs(w).max())
    assert np.all(new_w[:, list(dead)] == 0.0)
    assert not keep[:, list(dead)].any()
    assert np.all(new_w[~keep] == 0.0)
    if structure is None:
        # Each block loses its quota, or all its dead entries (score 0) if more.
        rows, columns = w.shape
        width = min(block_size, columns)
        expected = sum(
            max(
                half_up(0.5, rows * (min(start + width, columns) - start)),
                rows * sum(start <= j < start + width for j in dead),
            )
            for start in range(0, columns, width)
        )
        assert np.count_nonzero(~keep) == expected
    else:
        assert np.all(keep.reshape(w.shape[0], -1, 4).sum(-1) <= 2)
        alive = np.delete(keep.reshape(w.shape[0], -1, 4), [0, 2], axis=1)
        assert np.all(alive.sum(-1) == 2)


@pytest.mark.parametrize("sparsity", [0.3, 0.75])
def test_sparsegpt_reference_agreement_other_sparsities(sparsity):
    """The same agreement off 50%, with damping 0.1 and more outputs than inputs."""
    x, w = calibration(5, inputs=10, outputs=13)
    hessian = x.T @ x
    new_w, keep = sparsegpt(w, hessian, sparsity, damping=0.1, block_size=3)
    ref_w, ref_keep = sparsegpt_reference(w, hessian, sparsity, damping=0.1, block_size=3)
    np.testing.assert_array_equal(keep, ref_keep)
    np.testing.assert_allclose(new_w, ref_w, rtol=1e-8, atol=1e-12 * np.abs(w).max())


def test_sparsegpt_single_removal_is_the_optimal_brain_surgeon_step():
    """One weight (column 0) removed from one output: the full OBS update, loss w0^2/Hinv00.

    The update is also the least-squares optimum: the remaining weights absorb
    `-w0 * X[:, 0]` by regression on the other columns of X.
    """
    rng = np.random.default_rng(6)
    inputs = 8
    x = rng.normal(size=(50, inputs)) @ rng.normal(size=(inputs, inputs))
    hessian = x.T @ x
    hinv = np.linalg.inv(hessian)
    w = rng.normal(size=(1, inputs)) + 3.0 * np.sign(rng.normal(size=(1, inputs)))
    w[0, 0] = 0.05
    # Column 0 has the lowest score w^2 / [H_F^{-1}]_00 of all columns.
    scores = [w[0, q] ** 2 / np.linalg.inv(hessian[q:, q:])[0, 0] for q in range(inputs)]
    assert np.argmin(scores) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new_w, keep = sparsegpt(w, hessian, 1.0 / inputs, damping=0.0)
    expected = w - w[0, 0] / hinv[0, 0] * hinv[0][None]
    np.testing.assert_allclose(new_w, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(keep, np.arange(inputs)[None] != 0)
    assert new_w[0, 0] == 0.0
    delta = new_w - w
    loss = float(np.trace(delta @ hessian @ delta.T))
    np.testing.assert_allclose(loss, w[0, 0] ** 2 / hinv[0, 0], rtol=1e-9)
    np.testing.assert_allclose(loss, np.sum((x @ delta.T) ** 2), rtol=1e-9)
    absorb, *_ = np.linalg.lstsq(x[:, 1:], w[0, 0] * x[:, 0], rcond=None)
    np.testing.assert_allclose(new_w[0, 1:], w[0, 1:] + absorb, rtol=1e-8, atol=1e-10)


# Reconstruction error.


def test_reconstruction_error_matches_the_rows_with_and_without_bias():
    """The error from (X^T X, sum of rows, count) equals the one computed on X itself."""
    x, w = calibration(7, rows=40, inputs=12, outputs=5)
    x += 0.7  # a nonzero mean, so the bias cross term matters
    rng = np.random.default_rng(7)
    pruned = w * (rng.uniform(size=w.shape) > 0.4)
    bias = rng.normal(size=w.shape[0]) * 3.0
    args = (w, pruned, x.T @ x, x.sum(axis=0), x.shape[0])
    np.testing.assert_allclose(reconstruction_error(*args), relative_error(x, w, pruned), 1e-10)
    with_bias = reconstruction_error(*args, bias=bias)
    np.testing.assert_allclose(with_bias, relative_error(x, w, pruned, bias), rtol=1e-10)
    assert with_bias != pytest.approx(reconstruction_error(*args), rel=1e-3)
    assert reconstruction_error(*args[:1], w, *args[2:], bias=bias) == 0.0


@pytest.mark.parametrize("seed", [11, 12, 13])
@pytest.mark.parametrize("structure", [None, (2, 4)], ids=["unstructured", "2:4"])
def test_error_ordering_on_correlated_inputs(seed, structure):
    """Correlated, unequally scaled inputs: SparseGPT < Wanda < magnitude in output error."""
    rng = np.random.default_rng(seed)
    inputs, outputs, rows = 32, 16, 1000
    mixing = rng.normal(size=(inputs, inputs)) + 2.0 * rng.normal(size=(1, inputs))
    x = rng.normal(size=(rows, inputs)) @ mixing * np.exp(rng.uniform(-1.5, 1.5, size=inputs))
    w = rng.normal(size=(outputs, inputs))
    hessian = x.T @ x
    row_sum = x.sum(axis=0)
    by_magnitude = w * magnitude_mask(w, 0.5, structure)
    by_wanda = w * wanda_mask(w, np.linalg.norm(x, axis=0), 0.5, structure)
    by_sparsegpt, keep = sparsegpt(w, hessian, 0.5, structure)
    errors = []
    for pruned in (by_sparsegpt, by_wanda, by_magnitude):
        error = reconstruction_error(w, pruned, hessian, row_sum, rows)
        np.testing.assert_allclose(error, relative_error(x, w, pruned), rtol=1e-9)
        errors.append(error)
    assert errors[0] < errors[1] < errors[2], errors
    assert np.count_nonzero(~keep) == w.size // 2


# Singular Hessian, sparsity zero.


@pytest.mark.parametrize("structure", [None, (2, 4)], ids=["unstructured", "2:4"])
def test_sparsegpt_singular_hessian_warns_and_stays_finite(structure):
    """Undamped, fewer rows than inputs: a warning, extra damping, finite weights."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(5, 12))
    w = rng.normal(size=(4, 12))
    with pytest.warns(UserWarning, match="singular"):
        new_w, keep = sparsegpt(w, x.T @ x, 0.5, structure=structure, damping=0.0)
    assert np.all(np.isfinite(new_w))
    assert np.all(new_w[~keep] == 0.0)
    assert np.count_nonzero(~keep) == w.size // 2


def test_sparsity_zero_leaves_weights_unchanged():
    """Nothing to remove: all kept, and SparseGPT returns the weights bit for bit."""
    x, w = calibration(9)
    assert magnitude_mask(w, 0.0).all()
    assert wanda_mask(w, np.linalg.norm(x, axis=0), 0.0).all()
    for block_size in (1, 5, 128):
        new_w, keep = sparsegpt(w, x.T @ x, 0.0, block_size=block_size)
        assert keep.all()
        np.testing.assert_array_equal(new_w, w)
