"""The rules of `keras.ops` functions called on symbolic tensors, by class name."""

import keras
import numpy as np

from kerasreg._graph._layers import _layout
from kerasreg._graph._layers import _merge_layer
from kerasreg._graph._layers import _same_last_axis
from kerasreg._graph._rule import CONCATENATE
from kerasreg._graph._rule import ELEMENTWISE
from kerasreg._graph._rule import POOLING
from kerasreg._graph._rule import ChannelRule
from kerasreg._graph._rule import _opaque
from kerasreg._graph._rule import _passthrough
from kerasreg._graph._rule import evaluate

# `keras.ops` functions called on symbolic tensors.


def _scalar(value):
    return isinstance(value, (int, float, np.number)) or (
        isinstance(value, np.ndarray) and value.ndim == 0
    )


def _other_arguments_are_scalars(node):
    tensors = {id(t) for t in node.input_tensors}
    flat = keras.tree.flatten((node.arguments.args, node.arguments.kwargs))
    return all(id(x) in tensors or x is None or _scalar(x) for x in flat)


def _fill_in(node, value):
    """`node`'s operation called with `value` in place of its one input."""
    args, kwargs = node.arguments.fill_in({id(node.input_tensors[0]): value})
    return node.operation(*args, **kwargs)


def _elementwise_op(op, node, rank):
    if len(node.input_tensors) != 1 or len(node.outputs) != 1:
        return _opaque("is called on several tensors")
    if not _other_arguments_are_scalars(node):
        return _opaque("takes arrays besides its input")
    return ChannelRule(ELEMENTWISE, values=lambda v: evaluate(lambda x: _fill_in(node, x), v))


def _binary_op(op, node, rank):
    if len(node.input_tensors) == 1:
        # A tensor and a number: x + 1.0, 2.0 * x, keras.ops.maximum(x, 0.0).
        return _elementwise_op(op, node, rank)
    return _merge_layer(op, node, rank)


def _concatenate_op(op, node, rank):
    if op.axis % rank != rank - 1:
        return _opaque("concatenates along another axis than the channels")
    return ChannelRule(CONCATENATE, "concatenates the channels of several inputs")


def _reshape_op(op, node, rank):
    if len(node.input_tensors) == 1 and len(node.outputs) == 1 and _same_last_axis(node):
        return ChannelRule(POOLING, values=_passthrough)
    return _layout(op, node, rank)


def _mixing_op(op, node, rank):
    return _opaque("mixes units")


_UNARY_OPS = (
    # keras.ops.nn activations.
    "Relu Relu6 Sigmoid SparseSigmoid Softplus Softsign SoftShrink SparsePlus Silu Squareplus "
    "LogSigmoid LeakyRelu HardSigmoid HardSilu Elu Selu Gelu Celu TanhShrink HardTanh "
    "HardShrink Threshold "
    # keras.ops.numpy and keras.ops.math functions of each entry alone.
    "Abs Absolute Fabs Arctan Arcsinh Cbrt Ceil Clip Cos Cosh Erf Erfc Exp Exp2 Expm1 Floor Log "
    "Log1p Log2 Log10 Negative Reciprocal Round Rsqrt Sign Sin Sinh Sqrt Square Tan Tanh Trunc "
    "StopGradient"
).split()

_OP_RULES = {
    **dict.fromkeys(_UNARY_OPS, _elementwise_op),
    **dict.fromkeys(
        "Add Subtract Multiply Divide TrueDivide Maximum Minimum Power".split(), _binary_op
    ),
    "Concatenate": _concatenate_op,
    **dict.fromkeys("Softmax LogSoftmax Sparsemax Glu".split(), _mixing_op),
    **dict.fromkeys(
        "Transpose GetItem Slice Squeeze ExpandDims Moveaxis Swapaxes Ravel".split(),
        _layout,
    ),
    "Reshape": _reshape_op,
}
