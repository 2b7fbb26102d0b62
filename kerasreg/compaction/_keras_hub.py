"""KerasHub's transformer layers with fewer heads and units: the rebuilders.

KerasHub derives the key dimension of its attention from the width of the
stream: `TransformerEncoder.build` and `TransformerDecoder.build` compute
`key_dim = hidden_dim // num_heads`, and `ViTEncoderBlock.__init__` does the
same (its config carries `key_dim`, but its constructor refuses it). Removing
heads keeps the key dimension, so no config of these classes can say "fewer
heads". Their rules (one group per attention head and per feed-forward unit) are in
`kerasreg._graph._keras_hub`; this module gives, for each:

- a *shrink* function: a new, built layer with weights set, without the
  removed heads (their query, key and value columns and biases, their rows of
  the output kernel; the key dimension unchanged) and units (columns of the
  intermediate dense, rows of the output dense), for
  `keras.models.clone_model`'s `clone_function`.

How the smaller layers save and load, and why:

- `TransformerEncoder` and `TransformerDecoder` become `CompactTransformerEncoder`
  and `CompactTransformerDecoder`: plain `keras.layers.Layer` subclasses of our
  own, registered as `"kerasreg>..."`, that compute what KerasHub's layers
  compute (the same sublayers, attribute names, weight order and call,
  masks included) with `key_dim` in their config. A plain-Keras equivalent
  is not possible: a functional model cannot take `padding_mask=` and
  `attention_mask=` keyword arguments nor read the Keras mask of its input,
  and no KerasHub class rebuilds these layers from a config that says the
  key dimension. They do not subclass KerasHub's classes: `keras.saving`
  imports a class's `module` only for the packages `keras`, `keras_hub`,
  `keras_cv` and `keras_nlp` (`serialization_lib._retrieve_class_or_fn`);
  a `kerasreg` class must already be in the registry when a file loads, so
  it must be defined when `kerasreg` is imported, and importing `kerasreg`
  must not import KerasHub. Importing this module imports only Keras and
  NumPy (and kerasreg's own `_saving` and `_validation`); the package must
  import it when `kerasreg` is imported (from `kerasreg.compaction` or the
  layer-rule registry) so the registration exists at load time. The
  attribute names match KerasHub's, so the connect functions read both,
  and a compacted model can be compacted again.
- `ViTEncoder` becomes a plain functional `keras.Model` (a `Dropout`, then
  per block `LayerNormalization`, `MultiHeadAttention` with the block's own
  `num_heads` and the original `key_dim`, `Dropout`, `Add`,
  `LayerNormalization`, two `Dense` layers and `Add`, then the final
  `LayerNormalization`): ViT takes no masks, so plain Keras layers say
  everything, the file loads without kerasreg, and `dependency_groups`
  reads the copy with its own rules.
- `ViTPatchingAndEmbedding.get_config()` returns `num_patches` and
  `num_positions`, which its constructor refuses, and leaves out
  `use_patch_bias` and `data_format`: `rebuildable_config` returns the
  config its `from_config` accepts. The rebuilt layer's own `get_config`
  is as broken as the original's, so a model holding one still does not
  load from a `.keras` file; that is KerasHub's to fix.
"""

import keras
import numpy as np

from kerasreg._validation import invalid_argument
from kerasreg.compaction._keras_hub_layers import CompactTransformerDecoder
from kerasreg.compaction._keras_hub_layers import CompactTransformerEncoder

__all__ = [
    "CompactTransformerDecoder",
    "CompactTransformerEncoder",
    "rebuildable_config",
    "shrink_transformer_decoder",
    "shrink_transformer_encoder",
    "shrink_vit_encoder",
]


# ---------------------------------------------------------------------------
# Shrinking: the smaller layer, built, with the kept weights.


def _keep(mask, width, name):
    """`mask` as a bool array of `width` that keeps at least one entry."""
    array = np.asarray(mask)
    if array.shape != (width,) or array.dtype != bool:
        raise invalid_argument(name, f"a bool array of shape ({width},)", mask)
    if not array.any():
        raise invalid_argument(name, "at least one entry kept (True)", mask)
    return array


def _copy_attention(source, target, keep):
    """Sets `target`'s weights from `source`'s kept heads (`keep`, one per head)."""
    for name in ("query", "key", "value"):
        dense = getattr(source, f"_{name}_dense")
        values = [np.compress(keep, dense.kernel.numpy(), axis=1)]
        if dense.bias is not None:
            values.append(np.compress(keep, dense.bias.numpy(), axis=0))
        getattr(target, f"_{name}_dense").set_weights(values)
    dense = source._output_dense
    values = [np.compress(keep, dense.kernel.numpy(), axis=0)]
    if dense.bias is not None:
        values.append(dense.bias.numpy())
    target._output_dense.set_weights(values)


def _copy_feedforward(source, target, keep):
    inner, outer = source._feedforward_intermediate_dense, source._feedforward_output_dense
    values = [np.compress(keep, inner.kernel.numpy(), axis=1)]
    if inner.use_bias:
        values.append(np.compress(keep, inner.bias.numpy(), axis=0))
    target._feedforward_intermediate_dense.set_weights(values)
    values = [np.compress(keep, outer.kernel.numpy(), axis=0)]
    if outer.use_bias:
        values.append(outer.bias.numpy())
    target._feedforward_output_dense.set_weights(values)


def _copy_norms(source, target, names):
    for name in names:
        getattr(target, name).set_weights(getattr(source, name).get_weights())


def _hidden_dim(layer):
    return int(layer._feedforward_output_dense.kernel.shape[-1])


def shrink_transformer_encoder(layer, keep_heads, keep_units):
    """KerasHub's `TransformerEncoder` without some heads and feed-forward units.

    Args:
        layer: A built `keras_hub.layers.TransformerEncoder` (or a
            `CompactTransformerEncoder`).
        keep_heads: Bool array of shape `(num_heads,)`: the heads that stay
            (their query, key and value columns and biases, their rows of the
            output kernel). At least one.
        keep_units: Bool array of shape `(intermediate_dim,)`: the
            feed-forward units that stay (intermediate columns and biases,
            output rows). At least one.

    Returns:
        A new, built `CompactTransformerEncoder` with `layer`'s name,
        configuration and kept weights, and the original key dimension. It
        computes what `layer` computes once the removed heads and units
        contribute nothing (their output rows zero).

    Raises:
        InvalidArgumentError: If a mask has the wrong shape or keeps nothing.
    """
    attention = layer._self_attention_layer
    keep_heads = _keep(keep_heads, attention.num_heads, "keep_heads")
    keep_units = _keep(keep_units, layer.intermediate_dim, "keep_units")
    config = layer.get_config()
    config.update(
        num_heads=int(keep_heads.sum()),
        key_dim=int(attention.key_dim),
        intermediate_dim=int(keep_units.sum()),
    )
    new = CompactTransformerEncoder.from_config(config)
    new.build((None, None, _hidden_dim(layer)))
    _copy_attention(attention, new._self_attention_layer, keep_heads)
    _copy_norms(layer, new, ("_self_attention_layer_norm", "_feedforward_layer_norm"))
    _copy_feedforward(layer, new, keep_units)
    return new


def shrink_transformer_decoder(layer, keep_self_heads, keep_cross_heads, keep_units):
    """KerasHub's `TransformerDecoder` without some heads and feed-forward units.

    Args:
        layer: A built `keras_hub.layers.TransformerDecoder` (or a
            `CompactTransformerDecoder`).
        keep_self_heads: Bool array of shape `(num_heads,)`: the
            self-attention heads that stay. At least one.
        keep_cross_heads: Bool array of shape `(cross heads,)`: the
            cross-attention heads that stay (at least one), or `None` when
            `layer` has no cross-attention.
        keep_units: Bool array of shape `(intermediate_dim,)`: the
            feed-forward units that stay. At least one.

    Returns:
        A new, built `CompactTransformerDecoder` with `layer`'s name,
        configuration and kept weights.

    Raises:
        InvalidArgumentError: If a mask has the wrong shape, keeps nothing,
            or `keep_cross_heads` does not match the cross-attention.
    """
    attention = layer._self_attention_layer
    cross = layer._cross_attention_layer
    keep_self_heads = _keep(keep_self_heads, attention.num_heads, "keep_self_heads")
    keep_units = _keep(keep_units, layer.intermediate_dim, "keep_units")
    if cross is None:
        if keep_cross_heads is not None:
            raise invalid_argument(
                "keep_cross_heads", "None (no cross-attention)", keep_cross_heads
            )
    else:
        keep_cross_heads = _keep(keep_cross_heads, cross.num_heads, "keep_cross_heads")
    config = layer.get_config()
    decoder_shape = config.pop("decoder_sequence_shape", None)
    encoder_shape = config.pop("encoder_sequence_shape", None)
    config.update(
        num_heads=int(keep_self_heads.sum()),
        key_dim=int(attention.key_dim),
        intermediate_dim=int(keep_units.sum()),
        cross_num_heads=None if cross is None else int(keep_cross_heads.sum()),
    )
    new = CompactTransformerDecoder.from_config(config)
    hidden_dim = _hidden_dim(layer)
    decoder_shape = decoder_shape or (None, None, hidden_dim)
    if cross is None:
        new.build(decoder_shape)
    else:
        new.build(
            decoder_shape, encoder_shape or (None, None, int(cross._key_dense.kernel.shape[0]))
        )
    _copy_attention(attention, new._self_attention_layer, keep_self_heads)
    norms = ["_self_attention_layer_norm", "_feedforward_layer_norm"]
    if cross is not None:
        _copy_attention(cross, new._cross_attention_layer, keep_cross_heads)
        norms.append("_cross_attention_layer_norm")
    _copy_norms(layer, new, norms)
    _copy_feedforward(layer, new, keep_units)
    return new


def shrink_vit_encoder(layer, keep_heads, keep_units):
    """KerasHub's `ViTEncoder` without some heads and MLP units, as a functional model.

    Args:
        layer: A built KerasHub `ViTEncoder`.
        keep_heads: One bool array per block, of shape `(num_heads,)`: the
            heads that stay in that block. At least one per block.
        keep_units: One bool array per block, of shape `(mlp_dim,)`: the MLP
            units that stay in that block. At least one per block.

    Returns:
        A functional `keras.Model` named like `layer`, from a
        `(batch, positions, hidden_dim)` input to the same output as
        `layer`: plain Keras layers (`Dropout`, then per block
        `LayerNormalization`, `MultiHeadAttention` with the block's kept
        heads and the original `key_dim`, `Dropout`, `Add`,
        `LayerNormalization`, `Dense` with GELU, `Dropout`, `Dense`,
        `Dropout`, `Add`; then the final `LayerNormalization`), with the
        kept weights. It saves and loads without kerasreg.

    Raises:
        InvalidArgumentError: If a mask list has the wrong length, or a
            mask the wrong shape or keeps nothing.
    """
    blocks = list(layer.encoder_layers)
    for name, masks in (("keep_heads", keep_heads), ("keep_units", keep_units)):
        if len(masks) != len(blocks):
            raise invalid_argument(name, f"a list of {len(blocks)} bool arrays", masks)
    hidden_dim = int(layer.hidden_dim)
    dtype = layer.dtype_policy
    inputs = keras.Input((None, hidden_dim), name=f"{layer.name}_inputs")
    x = keras.layers.Dropout(layer.dropout.rate, dtype=dtype, name=f"{layer.name}_dropout")(inputs)
    copies = []
    for i, block in enumerate(blocks):
        heads = _keep(keep_heads[i], block.mha.num_heads, f"keep_heads[{i}]")
        units = _keep(keep_units[i], block.mlp.dense_1.units, f"keep_units[{i}]")
        prefix = block.name
        norm_1 = keras.layers.LayerNormalization(
            epsilon=block.layer_norm_epsilon, dtype=dtype, name=f"{prefix}_ln_1"
        )
        mha = keras.layers.MultiHeadAttention(
            num_heads=int(heads.sum()),
            key_dim=int(block.mha.key_dim),
            use_bias=block.use_mha_bias,
            dropout=block.attention_dropout,
            dtype=dtype,
            name=f"{prefix}_mha",
        )
        norm_2 = keras.layers.LayerNormalization(
            epsilon=block.layer_norm_epsilon, dtype=dtype, name=f"{prefix}_ln_2"
        )
        mlp = block.mlp
        dense_1 = keras.layers.Dense(
            int(units.sum()),
            activation=mlp.dense_1.activation,
            use_bias=mlp.use_bias,
            dtype=dtype,
            name=f"{prefix}_mlp_dense_1",
        )
        dense_2 = keras.layers.Dense(
            hidden_dim, use_bias=mlp.use_bias, dtype=dtype, name=f"{prefix}_mlp_dense_2"
        )
        rate = block.dropout_rate
        y = norm_1(x)
        y = mha(y, y)
        y = keras.layers.Dropout(rate, dtype=dtype, name=f"{prefix}_dropout")(y)
        x = keras.layers.Add(dtype=dtype, name=f"{prefix}_attention_residual")([y, x])
        y = norm_2(x)
        y = dense_1(y)
        y = keras.layers.Dropout(rate, dtype=dtype, name=f"{prefix}_mlp_dropout_1")(y)
        y = dense_2(y)
        y = keras.layers.Dropout(rate, dtype=dtype, name=f"{prefix}_mlp_dropout_2")(y)
        x = keras.layers.Add(dtype=dtype, name=f"{prefix}_mlp_residual")([x, y])
        copies.append((block, heads, units, norm_1, mha, norm_2, dense_1, dense_2))
    norm = keras.layers.LayerNormalization(
        epsilon=layer.layer_norm.epsilon, dtype=dtype, name=f"{layer.name}_ln"
    )
    model = keras.Model(inputs, norm(x), name=layer.name)
    for block, heads, units, norm_1, mha, norm_2, dense_1, dense_2 in copies:
        norm_1.set_weights(block.layer_norm_1.get_weights())
        _copy_attention(block.mha, mha, heads)
        norm_2.set_weights(block.layer_norm_2.get_weights())
        values = [np.compress(units, block.mlp.dense_1.kernel.numpy(), axis=1)]
        if block.mlp.use_bias:
            values.append(np.compress(units, block.mlp.dense_1.bias.numpy(), axis=0))
        dense_1.set_weights(values)
        values = [np.compress(units, block.mlp.dense_2.kernel.numpy(), axis=0)]
        if block.mlp.use_bias:
            values.append(block.mlp.dense_2.bias.numpy())
        dense_2.set_weights(values)
    norm.set_weights(layer.layer_norm.get_weights())
    return model


def rebuildable_config(layer):
    """A config of KerasHub's `ViTPatchingAndEmbedding` that its `from_config` accepts.

    Its `get_config()` holds `num_patches` and `num_positions`, which the
    constructor computes and refuses, and leaves out `use_patch_bias` and
    `data_format`. The layer rebuilt from this config has the same weights,
    in the same order, and computes the same function.

    Args:
        layer: A KerasHub `ViTPatchingAndEmbedding`.

    Returns:
        A config dict for `type(layer).from_config`.
    """
    config = layer.get_config()
    config.pop("num_patches", None)
    config.pop("num_positions", None)
    config["use_patch_bias"] = layer.use_patch_bias
    config["data_format"] = layer.data_format
    return config
