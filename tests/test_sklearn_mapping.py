"""The documented mapping from scikit-learn's estimators to kerasreg.

scikit-learn's solution must satisfy the optimality (KKT) conditions of the
Keras objective, mean loss + kerasreg penalty, with the mapped strengths:
for every weight, `g_i + l1 * sign(w_i) + 2 * l2 * w_i = 0` where `w_i != 0`
and `|g_i| <= l1` where `w_i == 0`, `g` being the gradient of the Keras data
loss; the unpenalized intercept has a zero gradient.
"""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet
from sklearn.linear_model import Lasso
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

import kerasreg
from tests.conftest import breast_cancer
from tests.conftest import l1_logistic_regression
from tests.conftest import to_numpy
from tests.conftest import value_and_grad


def _regression_data():
    x, y = load_diabetes(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    return x, (y - y.mean()) / y.std()


def _keras_mse_gradient(x, y, w, b):
    def loss(params):
        weights, bias = params[:-1], params[-1]
        # In float64, as the data: Keras losses compute in float32 by default,
        # whose rounding (1e-8 here) is the size of the conditions checked.
        # Not `ops.matmul`: Keras 3.15.1 computes it in float32 on PyTorch and
        # JAX whatever its inputs (`result_type` maps float64 to float32).
        x64 = keras.ops.convert_to_tensor(x, dtype="float64")
        predictions = keras.ops.sum(keras.ops.multiply(x64, weights), axis=-1) + bias
        mse = keras.losses.MeanSquaredError(dtype="float64")
        return mse(keras.ops.convert_to_tensor(y, dtype="float64"), predictions)

    _, grad = value_and_grad(loss, np.concatenate([w, [b]]))
    return grad[:-1], grad[-1]


def _assert_kkt(grad, w, l1, l2, atol):
    nonzero = w != 0
    residual = grad[nonzero] + l1 * np.sign(w[nonzero]) + 2 * l2 * w[nonzero]
    np.testing.assert_allclose(residual, 0.0, atol=atol)
    assert np.all(np.abs(grad[~nonzero]) <= l1 + atol)


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_lasso_maps_to_l1(alpha):
    x, y = _regression_data()
    sk = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(x, y)
    reg = kerasreg.L1(l1=2 * alpha)
    grad, grad_b = _keras_mse_gradient(x, y, sk.coef_, sk.intercept_)
    assert 0 < np.count_nonzero(sk.coef_ == 0) < len(sk.coef_)  # a real test
    _assert_kkt(grad, sk.coef_, reg.l1, 0.0, atol=1e-7)
    assert abs(grad_b) < 1e-8


@pytest.mark.parametrize("alpha, r", [(0.02, 0.5), (0.05, 0.2), (0.01, 0.9)])
def test_elastic_net_mapping(alpha, r):
    x, y = _regression_data()
    sk = ElasticNet(alpha=alpha, l1_ratio=r, tol=1e-12, max_iter=100_000).fit(x, y)
    reg = kerasreg.ElasticNet(strength=alpha * (1 + r), l1_ratio=2 * r / (1 + r))
    grad, grad_b = _keras_mse_gradient(x, y, sk.coef_, sk.intercept_)
    _assert_kkt(grad, sk.coef_, reg.l1, reg.l2, atol=1e-7)
    assert abs(grad_b) < 1e-8
    # And the wrong, unmapped reading (strength=alpha, l1_ratio=r) is not optimal.
    naive = kerasreg.ElasticNet(strength=alpha, l1_ratio=r)
    with pytest.raises(AssertionError):
        _assert_kkt(grad, sk.coef_, naive.l1, naive.l2, atol=1e-7)


def test_ridge_maps_to_l2():
    x, y = _regression_data()
    alpha = 30.0
    sk = Ridge(alpha=alpha, solver="cholesky").fit(x, y)
    reg = kerasreg.L2(l2=alpha / len(x))
    grad, grad_b = _keras_mse_gradient(x, y, sk.coef_, sk.intercept_)
    _assert_kkt(grad, sk.coef_, 0.0, reg.l2, atol=1e-7)
    assert abs(grad_b) < 1e-7
    # alpha itself (the sum-of-squares reading) is far from optimal.
    with pytest.raises(AssertionError):
        _assert_kkt(grad, sk.coef_, 0.0, alpha, atol=1e-7)


def test_l1_logistic_regression_maps_to_l1():
    x, y = breast_cancer()
    C = 0.05
    sk = l1_logistic_regression(C)
    w, b = sk.coef_[0], sk.intercept_[0]
    reg = kerasreg.L1(l1=1 / (len(x) * C))

    def loss(params):
        logits = keras.ops.matmul(keras.ops.convert_to_tensor(x), params[:-1]) + params[-1]
        return keras.losses.BinaryCrossentropy(from_logits=True)(
            keras.ops.convert_to_tensor(y.astype("float64")), logits
        )

    _, grad = value_and_grad(loss, np.concatenate([w, [b]]))
    assert 0 < np.count_nonzero(w == 0) < len(w)
    _assert_kkt(grad[:-1], w, reg.l1, 0.0, atol=1e-5)
    assert abs(grad[-1]) < 1e-5
    # The penalty value is the one scikit-learn adds, rescaled by 1 / (n C).
    np.testing.assert_allclose(to_numpy(reg(w)), np.abs(w).sum() / (len(x) * C), rtol=1e-12)
