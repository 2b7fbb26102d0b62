"""scikit-learn's digits and LeNet-300-100, as the scripts train them."""

import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def load_data(seed):
    """Digits scaled to [0, 1], split 75% / 25% stratified by class.

    Args:
        seed: `random_state` of the split.

    Returns:
        `x_train, x_test, y_train, y_test`: float32 pixels, int32 labels.
    """
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def lenet_300_100(regularizer=None):
    """The 64-300-100-10 ReLU network, logits out, not compiled.

    Args:
        regularizer: On the three kernels: one regularizer shared by them, or
            a function of no arguments called once per kernel (stateful
            regularizers such as `MagnitudePruning` need one each). Defaults
            to `None`.

    Returns:
        A `keras.Sequential` named `lenet_300_100`, layers `fc_300`, `fc_100`
        and `logits`.
    """
    shared = regularizer is None or isinstance(regularizer, keras.regularizers.Regularizer)
    make = (lambda: regularizer) if shared else regularizer
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(300, "relu", kernel_regularizer=make(), name="fc_300"),
            keras.layers.Dense(100, "relu", kernel_regularizer=make(), name="fc_100"),
            keras.layers.Dense(10, kernel_regularizer=make(), name="logits"),
        ],
        name="lenet_300_100",
    )
