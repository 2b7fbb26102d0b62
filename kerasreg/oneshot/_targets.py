"""The layers one-shot pruning works on, as matrices `(outputs, inputs)` and rows of inputs.

Each `Target` reads its layer's kernel as the matrix the solvers take, writes
a matrix back in the kernel's layout and dtype, and turns one call's input
into the rows :math:`X` that multiply the matrix: a `Dense` layer's input
vectors, an `EinsumDense` layer's contracted axes, a convolution's patches.
"""

import math

import keras
import numpy as np

__all__ = ["Target", "target_for"]


def _numpy(value):
    """A float tensor (bfloat16 included) or array as a float64 NumPy array."""
    if keras.ops.is_tensor(value) and "bfloat16" in str(value.dtype):
        value = keras.ops.cast(value, "float32")
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)


def _assign(variable, value):
    """Assigns a float64 array to `variable`, rounded once to its dtype (via float32 for halves)."""
    dtype = keras.backend.standardize_dtype(variable.dtype)
    value = value.astype(np.float64 if dtype == "float64" else np.float32)
    variable.assign(keras.ops.cast(value, dtype))


class Target:
    """One layer's kernel seen as a matrix `(outputs, inputs)`.

    Attributes:
        layer: The layer.
        path: Its path in the model (`"block/dense"`).
        kernel: Its kernel variable.
        inputs: The number of input features (the matrix's columns).
    """

    kind = "dense"

    def __init__(self, layer, path):
        self.layer = layer
        self.path = path
        self.kernel = layer.kernel
        self.inputs = self._inputs()

    def _inputs(self):
        return int(self.kernel.shape[0])

    @property
    def fastest(self):
        """The length of the kernel axis that varies fastest along the inputs.

        N:M blocks of `m` consecutive inputs stay within one position of the
        other input axes when `m` divides it.
        """
        return self.inputs

    def matrix(self):
        """The kernel as a float64 array `(outputs, inputs)`."""
        return _numpy(self.kernel).reshape(self.inputs, -1).T

    def assign(self, matrix):
        """Writes `matrix` `(outputs, inputs)` back into the kernel, in its dtype."""
        _assign(self.kernel, np.asarray(matrix).T.reshape(tuple(self.kernel.shape)))

    def rows(self, x):
        """The rows of input features of one call's input `x`, float64 `(rows, inputs)`."""
        return _numpy(x).reshape(-1, self.inputs)


class EinsumTarget(Target):
    """An `EinsumDense` kernel: contracted axes are the inputs, the others the outputs."""

    kind = "einsum"

    def __init__(self, layer, path):
        operands, output = layer.equation.split("->")
        spec, kernel_spec = operands.split(",")
        self._spec = spec
        self._contracted = [c for c in kernel_spec if c in spec and c not in output]
        self._order = [kernel_spec.index(c) for c in self._contracted] + [
            i for i, c in enumerate(kernel_spec) if c not in self._contracted
        ]
        super().__init__(layer, path)

    @staticmethod
    def supports(layer):
        """Whether each kernel axis is contracted or an output axis, and each input axis
        is contracted with the kernel or kept in the output."""
        operands, output = layer.equation.split("->")
        spec, kernel_spec = operands.split(",")
        letters = spec.replace("...", "")
        return all((c in spec) != (c in output) for c in kernel_spec) and all(
            c in kernel_spec or c in output for c in letters
        )

    def _inputs(self):
        shape = tuple(self.kernel.shape)
        return math.prod(int(shape[i]) for i in self._order[: len(self._contracted)])

    @property
    def fastest(self):
        return int(self.kernel.shape[self._order[len(self._contracted) - 1]])

    def matrix(self):
        kernel = np.transpose(_numpy(self.kernel), self._order)
        return kernel.reshape(self.inputs, -1).T

    def assign(self, matrix):
        shape = tuple(int(d) for d in self.kernel.shape)
        value = np.asarray(matrix).T.reshape([shape[i] for i in self._order])
        _assign(self.kernel, np.transpose(value, np.argsort(self._order)))

    def rows(self, x):
        x = _numpy(x)
        before, _, after = self._spec.partition("...")
        # Letters before an ellipsis count from the left, after it from the right.
        position = {c: i for i, c in enumerate(before)}
        position.update({c: x.ndim - len(after) + i for i, c in enumerate(after)})
        axes = [position[c] for c in self._contracted]
        x = np.moveaxis(x, axes, list(range(x.ndim - len(axes), x.ndim)))
        return x.reshape(-1, self.inputs)


class ConvTarget(Target):
    """A convolution kernel `(*kernel_size, in, out)`: patches of the input are the rows."""

    kind = "conv"

    def _inputs(self):
        return math.prod(int(d) for d in self.kernel.shape[:-1])

    @property
    def fastest(self):
        return int(self.kernel.shape[-2])

    def matrix(self):
        return _numpy(self.kernel).reshape(self.inputs, -1).T

    def rows(self, x):
        layer = self.layer
        x = _numpy(x)
        if layer.data_format == "channels_first":
            x = np.moveaxis(x, 1, -1)
        spatial = x.shape[1:-1]
        sizes, strides, dilations = layer.kernel_size, layer.strides, layer.dilation_rate
        pads = [(0, 0)]
        for length, size, stride, dilation in zip(spatial, sizes, strides, dilations, strict=True):
            extent = (size - 1) * dilation + 1
            if layer.padding == "same":
                total = max((math.ceil(length / stride) - 1) * stride + extent - length, 0)
                pads.append((total // 2, total - total // 2))
            elif layer.padding == "causal":
                pads.append((extent - 1, 0))
            else:
                pads.append((0, 0))
        x = np.pad(x, pads + [(0, 0)])
        extents = [(s - 1) * d + 1 for s, d in zip(sizes, dilations, strict=True)]
        rank = len(spatial)
        windows = np.lib.stride_tricks.sliding_window_view(
            x, extents, axis=tuple(range(1, rank + 1))
        )
        # (batch, *positions, in, *window): stride the positions, dilate the windows.
        index = (
            (slice(None),)
            + tuple(slice(None, None, s) for s in strides)
            + (slice(None),)
            + tuple(slice(None, None, d) for d in dilations)
        )
        windows = windows[index]
        order = [0, *range(1, rank + 1), *range(rank + 2, 2 * rank + 2), rank + 1]
        return np.ascontiguousarray(windows.transpose(order)).reshape(-1, self.inputs)


def target_for(layer, path, ancestors=()):
    """The `Target` of a layer one-shot pruning can take, or the reason it cannot.

    Returns:
        A `Target`, or a string saying why the layer is not one.
    """
    if getattr(layer, "quantization_mode", None):
        return f"quantized ({layer.quantization_mode})"
    if getattr(layer, "lora_enabled", False):
        return "LoRA enabled (merge or disable it first)"
    if any(isinstance(a, keras.layers.RNN) for a in ancestors):
        return "inside a recurrent layer's cell (called in a loop over time steps)"
    if isinstance(layer, keras.layers.EinsumDense):
        if not EinsumTarget.supports(layer):
            return f"an EinsumDense equation with a batch axis in its kernel ({layer.equation})"
        return EinsumTarget(layer, path)
    if isinstance(layer, keras.layers.Dense):
        if len(layer.kernel.shape) != 2:
            return "a Dense kernel that is not a matrix"
        return Target(layer, path)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        if getattr(layer, "groups", 1) != 1:
            return f"a grouped convolution (groups={layer.groups})"
        return ConvTarget(layer, path)
    return None


def is_candidate(layer):
    """Whether `layer` is of a kind one-shot pruning handles (`target_for` may still refuse it)."""
    kinds = (
        keras.layers.Dense,
        keras.layers.EinsumDense,
        keras.layers.Conv1D,
        keras.layers.Conv2D,
        keras.layers.Conv3D,
    )
    return isinstance(layer, kinds) and getattr(layer, "kernel", None) is not None
