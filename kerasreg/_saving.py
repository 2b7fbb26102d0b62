"""Registration of kerasreg's public classes with Keras serialization."""

import keras

PACKAGE = "kerasreg"


def register_serializable(cls):
    """Registers `cls` as `"kerasreg>ClassName"` for `.keras` files.

    Once `kerasreg` is imported, models that use its classes load with plain
    `keras.models.load_model(path)`: no `custom_objects`, and `safe_mode` left
    on.
    """
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
