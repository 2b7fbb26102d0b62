"""`kerasreg.Distiller` against the closed form of its loss."""

import keras
import numpy as np
import pytest

import kerasreg


def _pair(seed=0):
    keras.utils.set_random_seed(seed)
    teacher = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    student = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, kernel_regularizer=kerasreg.L2(0.01))]
    )
    return student, teacher


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def test_loss_is_the_closed_form():
    student, teacher = _pair()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5)).astype("float32")
    y = rng.integers(0, 4, 6).astype("int32")
    distiller = kerasreg.Distiller(student, teacher, alpha=0.3, temperature=2.5)
    distiller.compile(
        keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    s = keras.ops.convert_to_numpy(student(x)).astype("float64")
    t = keras.ops.convert_to_numpy(teacher(x)).astype("float64")
    label = -np.mean(np.log(_softmax(s))[np.arange(6), y])
    p, q = _softmax(t / 2.5), _softmax(s / 2.5)
    kl = np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))
    kernel = keras.ops.convert_to_numpy(student.layers[0].kernel).astype("float64")
    penalty = 0.01 * np.sum(kernel**2)
    expected = 0.3 * label + 0.7 * 2.5**2 * kl + penalty
    loss = distiller.evaluate(x, y, batch_size=6, verbose=0)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_trains_the_student_towards_the_teacher_only():
    student, teacher = _pair(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = np.argmax(keras.ops.convert_to_numpy(teacher(x)), axis=-1)
    before = [keras.ops.convert_to_numpy(w).copy() for w in teacher.weights]
    distiller = kerasreg.Distiller(student, teacher, alpha=0.0, temperature=1.0)
    distiller.compile(
        keras.optimizers.Adam(5e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = distiller.fit(x, y, batch_size=16, epochs=30, verbose=0)
    for w, b in zip(teacher.weights, before, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), b)
    agree = np.mean(np.argmax(keras.ops.convert_to_numpy(student(x)), -1) == y)
    assert agree > 0.9
    assert history.history["loss"][-1] < history.history["loss"][0]


@pytest.mark.backend_neutral
def test_bad_arguments():
    student, teacher = _pair()
    for kwargs in ({"alpha": 1.5}, {"temperature": 0.0}, {"teacher": "dense"}):
        arguments = {"student": student, "teacher": teacher, **kwargs}
        name = next(iter(kwargs))
        with pytest.raises(kerasreg.InvalidArgumentError, match=f"`{name}`"):
            kerasreg.Distiller(**arguments)


def test_sample_weights_weigh_both_terms():
    keras.utils.set_random_seed(2)
    teacher = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    student = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 5)).astype("float32")
    y = rng.integers(0, 4, 6).astype("int32")
    distiller = kerasreg.Distiller(student, teacher, alpha=0.5)
    distiller.compile(
        keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    weights = np.array([1, 0, 1, 0, 1, 0], "float32")
    kept = distiller.evaluate(x[::2], y[::2], batch_size=3, verbose=0)
    weighted = distiller.evaluate(x, y, sample_weight=weights, batch_size=6, verbose=0)
    # Weights 1, 0, ...: half the batch counts, over the whole batch's size.
    assert weighted == pytest.approx(0.5 * kept, rel=1e-5)
