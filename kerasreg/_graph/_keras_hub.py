"""The rules of KerasHub's transformer layers in the dependency walk.

`TransformerEncoder`, `TransformerDecoder` (and the `CompactTransformer*`
layers `compact` rebuilds them as) and the ViT encoder: one channel per
attention head and per feed-forward unit; the stream through their layer
normalizations is pinned, their weights carried. The rebuilders (fewer heads
with the same key dimension) are in `kerasreg.compaction._keras_hub`.
"""

import numpy as np

from kerasreg._graph._attention import attention as head_channels
from kerasreg._graph._rule import CARRIES
from kerasreg._graph._rule import COMPOSITE
from kerasreg._graph._rule import READS
from kerasreg._graph._rule import WRITES
from kerasreg._graph._rule import ChannelRule
from kerasreg._graph._rule import LayerRule
from kerasreg._graph._rule import _opaque
from kerasreg._graph._rule import activation_keeps_zero
from kerasreg._graph._rule import describe
from kerasreg._graph._rule import entrywise


def _node_argument(node, position, name):
    args = node.arguments.args
    if len(args) > position:
        return args[position]
    return node.arguments.kwargs.get(name)


def _feedforward_channels(channels, path, owner, inner, outer, stream, first):
    """The hidden units of a two-`Dense` block: one channel each, read and written."""
    units = channels.space(("units", id(owner)), inner.units)
    channels.keeps_zero(units, inner.units, activation_keeps_zero(inner.activation))
    if first:
        channels.add(stream, f"{path}/{inner.name}", inner.kernel, 0, READS)
        channels.add(units, f"{path}/{inner.name}", inner.kernel, 1, WRITES)
        if inner.use_bias:
            channels.add(units, f"{path}/{inner.name}", inner.bias, 0, WRITES)
        channels.add(units, f"{path}/{outer.name}", outer.kernel, 0, READS)
        channels.add(stream, f"{path}/{outer.name}", outer.kernel, 1, WRITES)
        if outer.use_bias:
            channels.add(stream, f"{path}/{outer.name}", outer.bias, 0, WRITES)
    if inner.activation is not None and not entrywise(inner.activation):
        channels.pin(units, inner.units, f"{describe(inner)} mixes its units")


def _carried_norms(channels, path, norms, stream):
    for norm in norms:
        for variable in norm.weights:
            channels.add(stream, f"{path}/{norm.name}", variable, 0, CARRIES)


def _self_attention(channels, path, attention, stream):
    head_channels(
        channels,
        f"{path}/{attention.name}",
        attention,
        dict.fromkeys(("query", "value", "key"), stream),
        stream,
    )


def connect_transformer_encoder(channels, path, layer, node):
    """KerasHub's `TransformerEncoder` (or `CompactTransformerEncoder`) in the walk.

    Each attention head is a channel of its own (its query, key and value
    columns and biases, its rows of the output kernel); each feed-forward
    unit is one (intermediate column and bias, output row). The stream
    (input, residual adds, output) passes two `LayerNormalization`s whose
    statistics couple every channel: it is pinned, their weights carried.
    Attention scores, when returned, are pinned.

    Args:
        channels: The walk's `_Channels`.
        path: The layer's path in the model.
        layer: The built layer.
        node: The node that calls it.
    """
    tensor = node.input_tensors[0]
    stream = channels.tensor(tensor)
    channels.join(stream, channels.tensor(node.outputs[0]), int(tensor.shape[-1]))
    first = channels.first_time(layer)
    _self_attention(channels, path, layer._self_attention_layer, tensor)
    if first:
        norms = (layer._self_attention_layer_norm, layer._feedforward_layer_norm)
        _carried_norms(channels, path, norms, stream)
    _feedforward_channels(
        channels,
        path,
        layer,
        layer._feedforward_intermediate_dense,
        layer._feedforward_output_dense,
        stream,
        first,
    )
    for extra in node.outputs[1:]:
        channels.pin_tensor(extra, f"{describe(layer)} returns its attention scores")
    channels.pin_tensor(tensor, f"{describe(layer)} normalizes its stream over the channels")


def connect_transformer_decoder(channels, path, layer, node):
    """KerasHub's `TransformerDecoder` (or `CompactTransformerDecoder`) in the walk.

    As `connect_transformer_encoder`, with the cross-attention when the
    layer has one: its heads are channels of their own, its query rows and
    output columns lie on the decoder's stream, and its key and value rows
    read the encoder sequence's channels. The caches it returns during
    generation are pinned.

    Args:
        channels: The walk's `_Channels`.
        path: The layer's path in the model.
        layer: The built layer.
        node: The node that calls it.
    """
    tensor = node.input_tensors[0]
    stream = channels.tensor(tensor)
    channels.join(stream, channels.tensor(node.outputs[0]), int(tensor.shape[-1]))
    first = channels.first_time(layer)
    _self_attention(channels, path, layer._self_attention_layer, tensor)
    norms = [layer._self_attention_layer_norm, layer._feedforward_layer_norm]
    cross = layer._cross_attention_layer
    if cross is not None:
        encoder_sequence = _node_argument(node, 1, "encoder_sequence")
        head_channels(
            channels,
            f"{path}/{cross.name}",
            cross,
            {"query": tensor, "key": encoder_sequence, "value": encoder_sequence},
            tensor,
        )
        norms.append(layer._cross_attention_layer_norm)
    if first:
        _carried_norms(channels, path, norms, stream)
    _feedforward_channels(
        channels,
        path,
        layer,
        layer._feedforward_intermediate_dense,
        layer._feedforward_output_dense,
        stream,
        first,
    )
    for extra in node.outputs[1:]:
        channels.pin_tensor(extra, f"{describe(layer)} returns its attention caches")
    channels.pin_tensor(tensor, f"{describe(layer)} normalizes its stream over the channels")


def connect_vit_encoder(channels, path, layer, node):
    """KerasHub's `ViTEncoder` in the walk: per block, one group per head and per MLP unit.

    The stream (input, every residual add, output) passes each block's two
    `LayerNormalization`s and the final one: it is pinned, their weights
    carried. Block `i`'s heads and MLP units are channels of their own, under
    `f"{path}/{block.name}/mha"` and `f"{path}/{block.name}/mlp/dense_1"`.

    Args:
        channels: The walk's `_Channels`.
        path: The layer's path in the model.
        layer: The built `ViTEncoder`.
        node: The node that calls it.
    """
    tensor = node.input_tensors[0]
    stream = channels.tensor(tensor)
    channels.join(stream, channels.tensor(node.outputs[0]), int(tensor.shape[-1]))
    first = channels.first_time(layer)
    for block in layer.encoder_layers:
        block_path = f"{path}/{block.name}"
        _self_attention(channels, block_path, block.mha, tensor)
        mlp = block.mlp
        if first:
            _carried_norms(channels, block_path, (block.layer_norm_1, block.layer_norm_2), stream)
        _feedforward_channels(
            channels, f"{block_path}/{mlp.name}", block, mlp.dense_1, mlp.dense_2, stream, first
        )
    if first:
        _carried_norms(channels, path, (layer.layer_norm,), stream)
    channels.pin_tensor(tensor, f"{describe(layer)} normalizes its stream over the channels")


# The rules and rebuilders the registry names.


def _keras_hub_rule(connect):
    """The rule of a KerasHub transformer layer: its connect function, above."""

    def rule(layer, node, rank):
        if len(node.outputs) != 1:
            return _opaque("returns several tensors")
        return ChannelRule(
            COMPOSITE, connect=lambda channels, path: connect(channels, path, layer, node)
        )

    return rule


def _kept_or_all(kept, variable, axis):
    return np.asarray(kept(variable, axis), bool)


def _shrink_encoder(layer, kept):
    from kerasreg.compaction import _keras_hub

    return _keras_hub.shrink_transformer_encoder(
        layer,
        _kept_or_all(kept, layer._self_attention_layer._query_dense.kernel, 1),
        _kept_or_all(kept, layer._feedforward_intermediate_dense.kernel, 1),
    )


def _shrink_decoder(layer, kept):
    from kerasreg.compaction import _keras_hub

    cross = getattr(layer, "_cross_attention_layer", None)
    return _keras_hub.shrink_transformer_decoder(
        layer,
        _kept_or_all(kept, layer._self_attention_layer._query_dense.kernel, 1),
        None if cross is None else _kept_or_all(kept, cross._query_dense.kernel, 1),
        _kept_or_all(kept, layer._feedforward_intermediate_dense.kernel, 1),
    )


def _shrink_vit_encoder(layer, kept):
    from kerasreg.compaction import _keras_hub

    blocks = list(layer.encoder_layers)
    return _keras_hub.shrink_vit_encoder(
        layer,
        [_kept_or_all(kept, b.mha._query_dense.kernel, 1) for b in blocks],
        [_kept_or_all(kept, b.mlp.dense_1.kernel, 1) for b in blocks],
    )


def _vit_patching_config(layer):
    from kerasreg.compaction import _keras_hub

    return _keras_hub.rebuildable_config(layer)


ENCODER = LayerRule(_keras_hub_rule(connect_transformer_encoder), shrink=_shrink_encoder)
DECODER = LayerRule(_keras_hub_rule(connect_transformer_decoder), shrink=_shrink_decoder)
VIT_ENCODER = LayerRule(_keras_hub_rule(connect_vit_encoder), shrink=_shrink_vit_encoder)
VIT_PATCHING = LayerRule(
    lambda layer, node, rank: _opaque("embeds patches"), config=_vit_patching_config
)
