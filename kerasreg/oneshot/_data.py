"""Calibration data: whatever the user passes, as a list of input batches for the model."""

import numbers

import keras
import numpy as np

from kerasreg._validation import invalid_argument

__all__ = ["calibration_batches"]


def _is_text(data):
    if isinstance(data, np.ndarray):
        return data.dtype.kind in "US"
    return isinstance(data, (list, tuple)) and bool(data) and all(isinstance(s, str) for s in data)


def _in_memory(value):
    return isinstance(value, (np.ndarray, dict, list)) or keras.ops.is_tensor(value)


def _token_like(value):
    """A 2-D array of integers or booleans (token ids, a padding mask)."""
    value = np.asarray(value)
    return value.ndim == 2 and value.dtype.kind in "iub"


def _rows(x):
    return int(np.shape(keras.tree.flatten(x)[0])[0])


def _take(x, start, stop):
    return keras.tree.map_structure(lambda a: a[start:stop], x)


def _numpy_structure(x):
    def convert(a):
        if hasattr(a, "numpy") and not isinstance(a, np.ndarray) and not keras.ops.is_tensor(a):
            return a.numpy()
        return a

    return keras.tree.map_structure(convert, x)


def _windows(tokens, sequence_length, num_samples):
    """`num_samples` windows of `sequence_length` tokens, spread evenly over a token stream."""
    tokens = np.asarray(tokens).reshape(-1)
    if tokens.size < sequence_length:
        raise invalid_argument(
            "data",
            f"a stream of at least sequence_length={sequence_length} token ids",
            f"{tokens.size} token ids",
        )
    starts = np.linspace(0, tokens.size - sequence_length, num_samples).astype(np.int64)
    starts = np.unique(starts)
    return np.stack([tokens[s : s + sequence_length] for s in starts]).astype("int32")


def _for_model(model, x):
    """Token ids given as an array to a model that takes `token_ids` and `padding_mask`."""
    names = getattr(model, "input", None)
    if isinstance(names, dict) and set(names) == {"token_ids", "padding_mask"}:
        if not isinstance(x, dict):
            x = np.asarray(x)
            return {"token_ids": x, "padding_mask": np.ones(x.shape, dtype=bool)}
    return x


def _from_text(model, data, sequence_length):
    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is None:
        raise invalid_argument(
            "data",
            "strings only for a model with a `preprocessor` (a KerasHub task); tokenize the "
            "text and pass the token ids otherwise",
            f"{len(data)} strings for {type(model).__name__}",
        )
    previous = getattr(preprocessor, "sequence_length", None)
    if sequence_length is not None and previous is not None:
        preprocessor.sequence_length = sequence_length
    try:
        x = preprocessor(list(data))
    finally:
        if sequence_length is not None and previous is not None:
            preprocessor.sequence_length = previous
    if isinstance(x, tuple):
        x = x[0]
    return keras.tree.map_structure(lambda a: np.asarray(keras.ops.convert_to_numpy(a)), x)


def calibration_batches(model, data, num_samples, sequence_length, batch_size):
    """The calibration inputs as a list of batches, `num_samples` rows at most in all.

    Args:
        model: The model.
        data: An array, a dict or list of arrays (rows on the first axis;
            a tuple `(x, y[, sample_weight])` gives `x`),
            a 1-D stream of token ids (cut into windows of
            `sequence_length`), strings (with the model's preprocessor), or an
            iterable of batches (`tf.data.Dataset`, a generator, a
            `keras.utils.PyDataset`): `x` or a tuple `(x, y[, sample_weight])`.
        num_samples: Int, the rows to take.
        sequence_length: Int or `None`: the window for a token stream; longer
            rows of token ids are cut to it.
        batch_size: Int, rows per batch for in-memory data.

    Returns:
        A list of input structures, one per batch.
    """
    if isinstance(data, tuple) and data and all(_in_memory(part) for part in data):
        data = data[0]  # (x, y[, sample_weight]), as `fit` takes them
    if isinstance(data, list) and data and all(isinstance(v, numbers.Integral) for v in data):
        data = np.asarray(data)  # token ids
    if not _is_text(data) and not isinstance(data, (dict, list, np.ndarray)):
        if not keras.ops.is_tensor(data) and hasattr(data, "shape") and hasattr(data, "__array__"):
            data = np.asarray(data)  # a tensor of another framework (tf.Tensor under JAX)
    if _is_text(data):
        data = _from_text(model, data, sequence_length)
    elif isinstance(data, np.ndarray) or keras.ops.is_tensor(data):
        data = np.asarray(keras.ops.convert_to_numpy(data))
        if data.ndim == 1 and data.dtype.kind in "iu":
            if sequence_length is None:
                raise invalid_argument(
                    "sequence_length",
                    "an int for a 1-D stream of token ids (the length of each window)",
                    None,
                )
            data = _windows(data, sequence_length, num_samples)
    if isinstance(data, (np.ndarray, dict, list)):
        if (
            sequence_length is not None
            and isinstance(data, np.ndarray)
            and data.ndim == 2
            and data.dtype.kind in "iu"
        ):
            data = data[:, :sequence_length]
        if isinstance(data, dict) and sequence_length is not None:
            data = {k: v[:, :sequence_length] if _token_like(v) else v for k, v in data.items()}
        data = _for_model(model, data)
        total = min(_rows(data), num_samples)
        if total == 0:
            raise invalid_argument("data", "at least one row of calibration inputs", "0 rows")
        return [_take(data, s, min(s + batch_size, total)) for s in range(0, total, batch_size)]
    if hasattr(data, "as_numpy_iterator"):
        iterator = data.as_numpy_iterator()
    elif isinstance(data, keras.utils.PyDataset):
        iterator = (data[i] for i in range(len(data)))
    elif hasattr(data, "__iter__") and not isinstance(data, (str, bytes)):
        iterator = iter(data)
    else:
        raise invalid_argument(
            "data",
            "an array, a dict or list of arrays, token ids, strings, or an iterable of batches",
            data,
        )
    batches, total = [], 0
    for batch in iterator:
        if isinstance(batch, tuple):
            batch = batch[0]
        batch = _for_model(model, _numpy_structure(batch))
        rows = _rows(batch)
        if total + rows > num_samples:
            batch = _take(batch, 0, num_samples - total)
            rows = num_samples - total
        if rows:
            batches.append(batch)
            total += rows
        if total >= num_samples:
            break
    if not batches:
        raise invalid_argument("data", "an iterable that yields at least one batch", data)
    return batches
