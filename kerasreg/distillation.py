"""`Distiller`: fine-tune a pruned model towards the dense model it came from.

After `kerasreg.compact`, the smaller model trains on to recover what
pruning cost it. Knowledge distillation (Hinton, Vinyals and Dean, 2015)
trains it to match the dense model's softened predictions as well as the
labels, which recovers more than the labels alone when the student is much
smaller than its teacher.
"""

import keras
from keras import ops

from kerasreg._saving import register_serializable
from kerasreg._validation import Configurable
from kerasreg._validation import InstanceOf
from kerasreg._validation import Interval

__all__ = ["Distiller"]


@register_serializable
class Distiller(keras.Model, Configurable):
    r"""A student model trained on labels and on a frozen teacher's logits.

    Compile it with the student's own loss (on logits, e.g.
    `SparseCategoricalCrossentropy(from_logits=True)`) and fit it on the
    training data: each step minimizes

    .. math::

        \alpha \, L(y, s) + (1 - \alpha)\, T^2\,
        \mathrm{KL}\big(\mathrm{softmax}(t / T) \,\|\, \mathrm{softmax}(s / T)\big),

    where :math:`s` and :math:`t` are the student's and the teacher's logits
    (the teacher in inference mode, its weights frozen), :math:`L` the
    compiled loss and :math:`T` the `temperature`; the :math:`T^2` keeps the
    two terms' gradients in proportion as :math:`T` changes. The student's
    own penalties (`model.losses`) are added; sample weights weigh both
    terms. Calling the distiller calls the student, so compiled metrics
    measure the student. The teacher is frozen (`teacher.trainable` is set
    to `False`). Keep and save the
    `student` afterwards; the distiller is a training harness.

    Args:
        student: The `keras.Model` to train (the compacted one).
        teacher: The `keras.Model` to learn from (the dense one), with the
            same inputs and logits of the same shape.
        alpha: Float in [0, 1], the weight of the label loss. Defaults to
            `0.5`.
        temperature: Float > 0, :math:`T`. Defaults to `2.0`.

    Raises:
        InvalidArgumentError: If an argument is invalid.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import kerasreg
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = kerasreg.Distiller(student, teacher, alpha=0.5, temperature=2.0)
    >>> distiller.compile(
    ...     keras.optimizers.Adam(1e-2),
    ...     keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ... )
    >>> x, y = np.ones((8, 4), "float32"), np.zeros(8, "int32")
    >>> _ = distiller.fit(x, y, epochs=1, verbose=0)  # trains `student` only
    """

    _parameter_constraints = {
        "student": InstanceOf(keras.Model, "a keras.Model"),
        "teacher": InstanceOf(keras.Model, "a keras.Model"),
        "alpha": Interval(0.0, 1.0),
        "temperature": Interval(0.0, None, closed="neither"),
    }

    def __init__(self, student, teacher, alpha=0.5, temperature=2.0, **kwargs):
        super().__init__(**kwargs)
        self._set_arguments(student=student, teacher=teacher, alpha=alpha, temperature=temperature)
        self.teacher.trainable = False

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def distillation_loss(self, student_logits, teacher_logits, sample_weight=None):
        """The distillation term, :math:`T^2` times the batch mean of the KL divergence."""
        t = self.temperature
        student_logits = ops.cast(student_logits, "float32") / t
        teacher_logits = ops.cast(teacher_logits, "float32") / t
        target = ops.softmax(teacher_logits, axis=-1)
        kl = ops.sum(
            target
            * (ops.log_softmax(teacher_logits, axis=-1) - ops.log_softmax(student_logits, axis=-1)),
            axis=-1,
        )
        if sample_weight is not None:
            # As Keras reduces a weighted loss: the weighted sum over the batch size.
            weight = ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(kl))
            return (t * t) * ops.sum(kl * weight) / ops.cast(ops.size(kl), "float32")
        return (t * t) * ops.mean(kl)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if self.alpha == 1.0 or x is None:
            return total
        penalties = sum(ops.cast(ops.sum(loss), "float32") for loss in self.losses)
        label_loss = ops.cast(total, "float32") - penalties
        teacher_logits = ops.stop_gradient(self.teacher(x, training=False))
        distilled = self.distillation_loss(y_pred, teacher_logits, sample_weight)
        return self.alpha * label_loss + (1.0 - self.alpha) * distilled + penalties

    def get_config(self):
        return {
            **keras.Model.get_config(self),
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "alpha": self.alpha,
            "temperature": self.temperature,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("student", "teacher"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
        cls._check_arguments(**{k: config[k] for k in cls._parameter_constraints if k in config})
        return cls(**config)
