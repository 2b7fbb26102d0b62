"""KerasHub's transformer layers with fewer heads and units: rules and rebuilders.

KerasHub derives the key dimension of its attention from the width of the
stream: `TransformerEncoder.build` and `TransformerDecoder.build` compute
`key_dim = hidden_dim // num_heads`, and `ViTEncoderBlock.__init__` does the
same (its config carries `key_dim`, but its constructor refuses it). Removing
heads keeps the key dimension, so no config of these classes can say "fewer
heads". This module gives, for each:

- a *connect* function for the dependency walker (`kerasreg.dependency`'s
  `_Channels`): one group per attention head, one per feed-forward unit,
  the stream through the layer normalizations pinned;
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

from kerasreg._saving import register_serializable
from kerasreg._validation import Boolean
from kerasreg._validation import Integer
from kerasreg._validation import Interval
from kerasreg._validation import invalid_argument
from kerasreg._validation import validate_arguments

__all__ = [
    "CompactTransformerDecoder",
    "CompactTransformerEncoder",
    "connect_transformer_decoder",
    "connect_transformer_encoder",
    "connect_vit_encoder",
    "rebuildable_config",
    "shrink_transformer_decoder",
    "shrink_transformer_encoder",
    "shrink_vit_encoder",
]


# ---------------------------------------------------------------------------
# Masks, as KerasHub's `transformer_layer_utils` computes them.


def _keras_mask(tensor):
    from keras.src.backend import get_keras_mask  # what KerasHub reads too

    return get_keras_mask(tensor)


def _merge_masks(inputs, padding_mask, attention_mask):
    """KerasHub's `merge_padding_and_attention_mask`."""
    mask = _keras_mask(inputs)
    if padding_mask is not None:
        mask = padding_mask
    if mask is not None:
        mask = keras.ops.cast(keras.ops.expand_dims(mask, axis=1), "int32")
    if attention_mask is not None:
        attention_mask = keras.ops.cast(attention_mask, "int32")
        return attention_mask if mask is None else keras.ops.minimum(mask, attention_mask)
    return mask


def _causal_mask(batch_size, input_length, output_length, cache_index=0):
    """KerasHub's `compute_causal_mask`."""
    i = keras.ops.arange(output_length, dtype="float32")
    i = i + keras.ops.cast(cache_index, "float32")
    i = keras.ops.expand_dims(i, axis=1)
    j = keras.ops.arange(input_length, dtype="float32")
    mask = keras.ops.expand_dims(i >= j, axis=0)
    return keras.ops.broadcast_to(mask, (batch_size, output_length, input_length))


def _cached_attention(attention, query, value, attention_mask, cache, cache_update_index, training):
    """KerasHub's `CachedMultiHeadAttention.call` on a plain `MultiHeadAttention`."""
    projected = attention._query_dense(query)
    if cache is not None:
        key, value_ = cache[:, 0, ...], cache[:, 1, ...]
        if cache_update_index is not None:
            start = [0, cache_update_index, 0, 0]
            key = keras.ops.slice_update(key, start, attention._key_dense(value))
            value_ = keras.ops.slice_update(value_, start, attention._value_dense(value))
            cache = keras.ops.stack((key, value_), axis=1)
    else:
        if cache_update_index is not None:
            raise ValueError(
                "`cache_update_index` should not be set if `cache` is `None`. "
                f"Received: cache={cache}, cache_update_index={cache_update_index}"
            )
        key, value_ = attention._key_dense(value), attention._value_dense(value)
    output, _ = attention._compute_attention(
        query=projected, key=key, value=value_, attention_mask=attention_mask, training=training
    )
    return attention._output_dense(output), cache


def _clone_initializer(initializer):
    if isinstance(initializer, keras.initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return initializer


# ---------------------------------------------------------------------------
# The smaller layers.


_SHARED_CONSTRAINTS = {
    "intermediate_dim": Integer(low=1),
    "num_heads": Integer(low=1),
    "key_dim": Integer(low=1),
    "dropout": Interval(0, 1),
    "layer_norm_epsilon": Interval(0, None, closed="neither"),
    "normalize_first": Boolean(),
}


class _CompactTransformer(keras.layers.Layer):
    """What the encoder and the decoder share: arguments, config, sublayers."""

    _parameter_constraints = _SHARED_CONSTRAINTS

    def _set_arguments(self, activation, kernel_initializer, bias_initializer, **arguments):
        arguments = validate_arguments(type(self).__name__, self._parameter_constraints, arguments)
        for name, value in arguments.items():
            setattr(self, name, value)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def _attention_layer(self, num_heads, name, value_dim=None):
        return keras.layers.MultiHeadAttention(
            num_heads=num_heads,
            key_dim=self.key_dim,
            value_dim=value_dim,
            dropout=self.dropout,
            kernel_initializer=_clone_initializer(self.kernel_initializer),
            bias_initializer=_clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def _norm(self, name, shape):
        norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )
        norm.build(shape)
        return norm

    def _dropout(self, name):
        return keras.layers.Dropout(rate=self.dropout, dtype=self.dtype_policy, name=name)

    def _feedforward(self, shape):
        hidden_dim = shape[-1]
        self._feedforward_intermediate_dense = keras.layers.Dense(
            self.intermediate_dim,
            activation=self.activation,
            kernel_initializer=_clone_initializer(self.kernel_initializer),
            bias_initializer=_clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="feedforward_intermediate_dense",
        )
        self._feedforward_intermediate_dense.build(shape)
        self._feedforward_output_dense = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=_clone_initializer(self.kernel_initializer),
            bias_initializer=_clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="feedforward_output_dense",
        )
        self._feedforward_output_dense.build(tuple(shape[:-1]) + (self.intermediate_dim,))

    def _feedforward_block(self, x, training):
        residual = x
        if self.normalize_first:
            x = self._feedforward_layer_norm(x)
        x = self._feedforward_intermediate_dense(x)
        x = self._feedforward_output_dense(x)
        x = self._feedforward_dropout(x, training=training)
        x = x + residual
        if not self.normalize_first:
            x = self._feedforward_layer_norm(x)
        return x

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in self._parameter_constraints})
        config.update(
            {
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config

    def compute_output_shape(self, inputs_shape, *args, **kwargs):
        return inputs_shape


@register_serializable
class CompactTransformerEncoder(_CompactTransformer):
    """KerasHub's `TransformerEncoder` with a key dimension of its own.

    Computes what `keras_hub.layers.TransformerEncoder` computes, with the
    same sublayers, weights and call; its attention has `num_heads` heads
    of `key_dim` each, where KerasHub's has `hidden_dim // num_heads`. It is
    what `shrink_transformer_encoder` returns once heads are gone.

    Args:
        intermediate_dim: Int, the units of the feed-forward block.
        num_heads: Int, the attention heads.
        key_dim: Int, the size of each head (query, key and value).
        dropout: Float in [0, 1], the dropout rate of the attention and
            feed-forward blocks. Defaults to `0`.
        activation: The feed-forward activation. Defaults to `"relu"`.
        layer_norm_epsilon: Float > 0. Defaults to `1e-5`.
        kernel_initializer: Defaults to `"glorot_uniform"`.
        bias_initializer: Defaults to `"zeros"`.
        normalize_first: Bool, whether the blocks normalize their inputs
            (GPT-2) rather than their outputs (BERT). Defaults to `False`.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).
    """

    def __init__(
        self,
        intermediate_dim,
        num_heads,
        key_dim,
        dropout=0,
        activation="relu",
        layer_norm_epsilon=1e-05,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        normalize_first=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._set_arguments(
            intermediate_dim=intermediate_dim,
            num_heads=num_heads,
            key_dim=key_dim,
            dropout=dropout,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            normalize_first=normalize_first,
        )

    def build(self, inputs_shape):
        self._self_attention_layer = self._attention_layer(self.num_heads, "self_attention_layer")
        self._self_attention_layer.build(query_shape=inputs_shape, value_shape=inputs_shape)
        self._self_attention_layer_norm = self._norm("self_attention_layer_norm", inputs_shape)
        self._self_attention_dropout = self._dropout("self_attention_dropout")
        self._feedforward_layer_norm = self._norm("feedforward_layer_norm", inputs_shape)
        self._feedforward(inputs_shape)
        self._feedforward_dropout = self._dropout("feedforward_dropout")

    def call(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
    ):
        self_attention_mask = _merge_masks(inputs, padding_mask, attention_mask)
        x = inputs
        residual = x
        if self.normalize_first:
            x = self._self_attention_layer_norm(x)
        outputs = self._self_attention_layer(
            query=x,
            value=x,
            attention_mask=self_attention_mask,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        x, scores = outputs if return_attention_scores else (outputs, None)
        x = self._self_attention_dropout(x, training=training)
        x = x + residual
        if not self.normalize_first:
            x = self._self_attention_layer_norm(x)
        x = self._feedforward_block(x, training)
        return (x, scores) if return_attention_scores else x


@register_serializable
class CompactTransformerDecoder(_CompactTransformer):
    """KerasHub's `TransformerDecoder` with a key dimension of its own.

    Computes what `keras_hub.layers.TransformerDecoder` computes (causal
    self-attention, optional cross-attention, caches for generation), with
    the same sublayers, weights and call; its self-attention has
    `num_heads` heads and its cross-attention `cross_num_heads`, each of
    `key_dim`. It is what `shrink_transformer_decoder` returns.

    Args:
        intermediate_dim: Int, the units of the feed-forward block.
        num_heads: Int, the self-attention heads.
        key_dim: Int, the size of each head (query, key and value).
        cross_num_heads: Int, the cross-attention heads, used when the
            layer is built with an encoder sequence. Defaults to
            `num_heads`.
        dropout: Float in [0, 1]. Defaults to `0`.
        activation: The feed-forward activation. Defaults to `"relu"`.
        layer_norm_epsilon: Float > 0. Defaults to `1e-5`.
        kernel_initializer: Defaults to `"glorot_uniform"`.
        bias_initializer: Defaults to `"zeros"`.
        normalize_first: Bool. Defaults to `False`.
        decoder_sequence_shape: Optional shape to build the layer with at
            construction, as KerasHub's config carries it. Defaults to
            `None`.
        encoder_sequence_shape: Likewise, for the encoder sequence.
            Defaults to `None`.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).
    """

    _parameter_constraints = {**_SHARED_CONSTRAINTS, "cross_num_heads": Integer(low=1)}

    def __init__(
        self,
        intermediate_dim,
        num_heads,
        key_dim,
        cross_num_heads=None,
        dropout=0,
        activation="relu",
        layer_norm_epsilon=1e-05,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        normalize_first=False,
        decoder_sequence_shape=None,
        encoder_sequence_shape=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._set_arguments(
            intermediate_dim=intermediate_dim,
            num_heads=num_heads,
            key_dim=key_dim,
            cross_num_heads=num_heads if cross_num_heads is None else cross_num_heads,
            dropout=dropout,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            normalize_first=normalize_first,
        )
        self._decoder_sequence_shape = None
        self._encoder_sequence_shape = None
        if decoder_sequence_shape:
            self.build(decoder_sequence_shape, encoder_sequence_shape)

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        self._decoder_sequence_shape = decoder_sequence_shape
        self._encoder_sequence_shape = encoder_sequence_shape
        shape = decoder_sequence_shape
        self._self_attention_layer = self._attention_layer(self.num_heads, "self_attention")
        self._self_attention_layer.build(query_shape=shape, value_shape=shape)
        self._self_attention_layer_norm = self._norm("self_attention_layer_norm", shape)
        self._self_attention_dropout = self._dropout("self_attention_dropout")
        self._cross_attention_layer = None
        if encoder_sequence_shape:
            self._cross_attention_layer = self._attention_layer(
                self.cross_num_heads, "cross_attention", value_dim=self.key_dim
            )
            self._cross_attention_layer.build(query_shape=shape, value_shape=encoder_sequence_shape)
            self._cross_attention_layer_norm = self._norm("cross_attention_layer_norm", shape)
            self._cross_attention_dropout = self._dropout("cross_attention_dropout")
        self._feedforward(shape)
        self._feedforward_layer_norm = self._norm("feedforward_layer_norm", shape)
        self._feedforward_dropout = self._dropout("feedforward_dropout")

    def call(
        self,
        decoder_sequence,
        encoder_sequence=None,
        decoder_padding_mask=None,
        decoder_attention_mask=None,
        encoder_padding_mask=None,
        encoder_attention_mask=None,
        self_attention_cache=None,
        self_attention_cache_update_index=None,
        cross_attention_cache=None,
        cross_attention_cache_update_index=None,
        use_causal_mask=True,
        training=None,
    ):
        has_cross_attention = self._cross_attention_layer is not None
        if has_cross_attention != (encoder_sequence is not None):
            raise ValueError(
                "The number of call arguments to `CompactTransformerDecoder` should not "
                "change: call it with `encoder_sequence` exactly when it was built with one."
            )
        if has_cross_attention and (
            (self_attention_cache is None) != (cross_attention_cache is None)
        ):
            raise ValueError(
                "`self_attention_cache` and `cross_attention_cache` should both be set or "
                f"both be `None`. Received: self_attention_cache={self_attention_cache}, "
                f"cross_attention_cache={cross_attention_cache}."
            )
        mask = _merge_masks(decoder_sequence, decoder_padding_mask, decoder_attention_mask)
        if use_causal_mask:
            batch_size = keras.ops.shape(decoder_sequence)[0]
            input_length = output_length = keras.ops.shape(decoder_sequence)[1]
            if self_attention_cache is not None:
                input_length = keras.ops.shape(self_attention_cache)[2]
            index = self_attention_cache_update_index
            causal = _causal_mask(
                batch_size, input_length, output_length, 0 if index is None else index
            )
            mask = causal if mask is None else keras.ops.minimum(mask, causal)

        x = decoder_sequence
        residual = x
        if self.normalize_first:
            x = self._self_attention_layer_norm(x)
        x, self_attention_cache = _cached_attention(
            self._self_attention_layer,
            x,
            x,
            mask,
            self_attention_cache,
            self_attention_cache_update_index,
            training,
        )
        x = self._self_attention_dropout(x, training=training)
        x = x + residual
        if not self.normalize_first:
            x = self._self_attention_layer_norm(x)

        if has_cross_attention:
            cross_mask = _merge_masks(
                encoder_sequence, encoder_padding_mask, encoder_attention_mask
            )
            residual = x
            if self.normalize_first:
                x = self._cross_attention_layer_norm(x)
            x, cross_attention_cache = _cached_attention(
                self._cross_attention_layer,
                x,
                encoder_sequence,
                cross_mask,
                cross_attention_cache,
                cross_attention_cache_update_index,
                training,
            )
            x = self._cross_attention_dropout(x, training=training)
            x = x + residual
            if not self.normalize_first:
                x = self._cross_attention_layer_norm(x)

        x = self._feedforward_block(x, training)
        if self_attention_cache is not None:
            if has_cross_attention:
                return x, self_attention_cache, cross_attention_cache
            return x, self_attention_cache
        return x

    def get_config(self):
        config = super().get_config()
        config["decoder_sequence_shape"] = self._decoder_sequence_shape
        config["encoder_sequence_shape"] = self._encoder_sequence_shape
        return config


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


# ---------------------------------------------------------------------------
# Connect functions: the channels of these layers for the dependency walker.

# The roles of `kerasreg.dependency` (its `WRITES`, `READS`, `CARRIES`).
WRITES, READS, CARRIES = "writes", "reads", "carries"


def _attention(channels, path, layer, inputs, output):
    """The walker's own `MultiHeadAttention` rule: one channel per head.

    Imported when used, not with this module: the walker's registry may
    import this module, and the rule is moving from `kerasreg.dependency`
    (`_attention`) to `kerasreg._graph` (`attention`).
    """
    from kerasreg import dependency

    rule = getattr(dependency, "_attention", None)
    if rule is None:
        from kerasreg._graph import attention as rule
    if (dependency.WRITES, dependency.READS, dependency.CARRIES) != (WRITES, READS, CARRIES):
        raise AssertionError("kerasreg.dependency's roles changed")
    rule(channels, path, layer, inputs, output)


def _probe_activation(activation):
    """`(entrywise, keeps_zero)` of an activation, probed on numbers.

    Entry-wise: changing half of the entries of a random input leaves the
    other half of the output unchanged, both ways. Keeps zero: maps 0 to 0.
    """
    if activation is None:
        return True, True
    rng = np.random.default_rng(0)
    x = rng.normal(scale=3.0, size=(2, 16)).astype("float32")
    half = np.arange(16) % 2 == 0
    try:
        y = np.asarray(keras.ops.convert_to_numpy(activation(x)))
        entrywise = True
        for changed in (half, ~half):
            moved = x.copy()
            moved[:, changed] += rng.normal(size=(2, int(changed.sum()))).astype("float32")
            z = np.asarray(keras.ops.convert_to_numpy(activation(moved)))
            entrywise &= z.shape == y.shape and np.array_equal(z[:, ~changed], y[:, ~changed])
        zero = np.asarray(keras.ops.convert_to_numpy(activation(np.zeros((1, 1), "float32"))))
    except Exception:  # an activation that cannot be probed counts as mixing
        return False, False
    return bool(entrywise), bool(np.all(zero == 0))


def _describe(layer):
    return f"{type(layer).__name__} '{layer.name}'"


def _node_argument(node, position, name):
    args = node.arguments.args
    if len(args) > position:
        return args[position]
    return node.arguments.kwargs.get(name)


def _feedforward_channels(channels, path, owner, inner, outer, stream, first):
    """The hidden units of a two-`Dense` block: one channel each, read and written."""
    units = channels.space(("units", id(owner)), inner.units)
    entrywise, keeps_zero = _probe_activation(inner.activation)
    channels.keeps_zero(units, inner.units, keeps_zero)
    if first:
        channels.add(stream, f"{path}/{inner.name}", inner.kernel, 0, READS)
        channels.add(units, f"{path}/{inner.name}", inner.kernel, 1, WRITES)
        if inner.use_bias:
            channels.add(units, f"{path}/{inner.name}", inner.bias, 0, WRITES)
        channels.add(units, f"{path}/{outer.name}", outer.kernel, 0, READS)
        channels.add(stream, f"{path}/{outer.name}", outer.kernel, 1, WRITES)
        if outer.use_bias:
            channels.add(stream, f"{path}/{outer.name}", outer.bias, 0, WRITES)
    if not entrywise:
        channels.pin(units, inner.units, f"{_describe(inner)} mixes its units")


def _carried_norms(channels, path, norms, stream):
    for norm in norms:
        for variable in norm.weights:
            channels.add(stream, f"{path}/{norm.name}", variable, 0, CARRIES)


def _self_attention(channels, path, attention, stream):
    _attention(
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
        channels.pin_tensor(extra, f"{_describe(layer)} returns its attention scores")
    channels.pin_tensor(tensor, f"{_describe(layer)} normalizes its stream over the channels")


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
        _attention(
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
        channels.pin_tensor(extra, f"{_describe(layer)} returns its attention caches")
    channels.pin_tensor(tensor, f"{_describe(layer)} normalizes its stream over the channels")


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
    channels.pin_tensor(tensor, f"{_describe(layer)} normalizes its stream over the channels")
