"""The smaller KerasHub transformer layers `compact` rebuilds, with their own `key_dim`.

`CompactTransformerEncoder` and `CompactTransformerDecoder` compute what
KerasHub's `TransformerEncoder` and `TransformerDecoder` compute (the same
sublayers, attribute names, weight order and call, masks and caches
included), with `key_dim` in their config, so that fewer heads keep the key
dimension. They are registered as `"kerasreg>..."` and import only Keras;
`kerasreg.compaction._keras_hub` explains why and builds them.
"""

import keras

from kerasreg._saving import register_serializable
from kerasreg._validation import Boolean
from kerasreg._validation import Integer
from kerasreg._validation import Interval
from kerasreg._validation import validate_arguments

__all__ = ["CompactTransformerDecoder", "CompactTransformerEncoder"]


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
