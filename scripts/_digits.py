"""The scripts' data (digits, breast cancer, a generated set) and LeNet-300-100."""

import keras
from sklearn.datasets import load_breast_cancer
from sklearn.datasets import load_digits
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler


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


def load_breast_cancer_data(seed):
    """Breast cancer (569 samples, 30 features, 2 classes), split as `load_data`.

    The features are standardized with the training split's mean and
    standard deviation.
    """
    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.25, random_state=seed, stratify=data.target
    )
    scaler = StandardScaler().fit(x_train)
    return (
        scaler.transform(x_train).astype("float32"),
        scaler.transform(x_test).astype("float32"),
        y_train.astype("int32"),
        y_test.astype("int32"),
    )


def load_generated_data(seed):
    """A generated 10-class problem (2,400 samples, 100 features), split as `load_data`.

    `make_classification` with 40 informative features, 20 redundant ones (linear
    combinations of those) and 40 of noise, two clusters per class and 1% of the
    labels flipped; always the same samples (`random_state=0`), split by
    `seed`. The features are standardized as in `load_breast_cancer_data`.
    """
    x, y = make_classification(
        n_samples=2400,
        n_features=100,
        n_informative=40,
        n_redundant=20,
        n_classes=10,
        n_clusters_per_class=2,
        flip_y=0.01,
        random_state=0,
    )
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    return (
        scaler.transform(x_train).astype("float32"),
        scaler.transform(x_test).astype("float32"),
        y_train.astype("int32"),
        y_test.astype("int32"),
    )


def lenet_300_100(regularizer=None, inputs=64, classes=10):
    """The inputs-300-100-classes ReLU network, logits out, not compiled.

    Args:
        regularizer: On the three kernels: one regularizer shared by them, or
            a function of no arguments called once per kernel (stateful
            regularizers such as `MagnitudePruning` need one each). Defaults
            to `None`.
        inputs: Number of input features. Defaults to `64` (digits).
        classes: Number of classes. Defaults to `10`.

    Returns:
        A `keras.Sequential` named `lenet_300_100`, layers `fc_300`, `fc_100`
        and `logits`.
    """
    shared = regularizer is None or isinstance(regularizer, keras.regularizers.Regularizer)
    make = (lambda: regularizer) if shared else regularizer
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(300, "relu", kernel_regularizer=make(), name="fc_300"),
            keras.layers.Dense(100, "relu", kernel_regularizer=make(), name="fc_100"),
            keras.layers.Dense(classes, kernel_regularizer=make(), name="logits"),
        ],
        name="lenet_300_100",
    )
