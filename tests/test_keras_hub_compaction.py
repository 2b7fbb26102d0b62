"""Tests for kerasreg/compaction/_keras_hub.py: KerasHub's transformers, shrunk.

The oracles are KerasHub's own layers: heads and units whose output rows
are zero contribute nothing, so the smaller layer must compute what the
original computes.
"""

import subprocess
import sys

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import kerasreg  # noqa: E402
from kerasreg._graph import _keras_hub as rules  # noqa: E402
from kerasreg.compaction import _keras_hub as hub  # noqa: E402
from kerasreg.dependency import _Channels  # noqa: E402
from kerasreg.dependency import _groups  # noqa: E402

HIDDEN = 8
HEADS = 4
UNITS = 12
KEEP_HEADS = np.array([True, False, True, False])
KEEP_UNITS = np.arange(UNITS) % 3 != 1


def _zero_heads(attention, keep):
    kernel = attention._output_dense.kernel
    value = kernel.numpy()
    value[~keep] = 0.0
    kernel.assign(value)


def _zero_rows(dense, keep):
    value = dense.kernel.numpy()
    value[~keep] = 0.0
    dense.kernel.assign(value)


def _close(a, b):
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-5, atol=1e-5
    )


def _rng_input(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _padding_mask():
    return np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)


def _round_trip(model, tmp_path, *inputs):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    inputs = list(inputs) if len(inputs) > 1 else inputs[0]
    _close(model.predict(inputs, verbose=0), loaded.predict(inputs, verbose=0))
    return loaded


def _node(layer):
    return layer._inbound_nodes[0]


def _walk(connect, layer):
    channels = _Channels()
    connect(channels, layer.name, layer, _node(layer))
    groups = _groups(channels)
    return groups[0] if isinstance(groups, tuple) else groups  # (groups, roots) in the rewrite


def _member_keys(group):
    return sorted((m.layer, m.variable.path.split("/")[-1], m.axis, m.role) for m in group.members)


# --- TransformerEncoder ------------------------------------------------------


def _encoder(normalize_first=False):
    encoder = keras_hub.layers.TransformerEncoder(
        intermediate_dim=UNITS,
        num_heads=HEADS,
        dropout=0.1,
        normalize_first=normalize_first,
        bias_initializer="random_normal",
        name="encoder",
    )
    encoder(_rng_input(2, 5, HIDDEN))
    _zero_heads(encoder._self_attention_layer, KEEP_HEADS)
    _zero_rows(encoder._feedforward_output_dense, KEEP_UNITS)
    return encoder


@pytest.mark.parametrize("normalize_first", [False, True])
def test_encoder_shrinks_exactly_with_and_without_masks(normalize_first):
    encoder = _encoder(normalize_first)
    small = hub.shrink_transformer_encoder(encoder, KEEP_HEADS, KEEP_UNITS)
    assert isinstance(small, hub.CompactTransformerEncoder)
    assert small._self_attention_layer.num_heads == 2
    assert small._self_attention_layer.key_dim == HIDDEN // HEADS
    assert small._feedforward_intermediate_dense.units == int(KEEP_UNITS.sum())
    assert small.name == encoder.name and small.normalize_first == normalize_first
    x = _rng_input(2, 5, HIDDEN, seed=1)
    attention_mask = np.tril(np.ones((2, 5, 5), bool))
    _close(encoder(x), small(x))
    _close(encoder(x, padding_mask=_padding_mask()), small(x, padding_mask=_padding_mask()))
    _close(
        encoder(x, padding_mask=_padding_mask(), attention_mask=attention_mask),
        small(x, padding_mask=_padding_mask(), attention_mask=attention_mask),
    )
    big_out, big_scores = encoder(x, return_attention_scores=True)
    small_out, small_scores = small(x, return_attention_scores=True)
    _close(big_out, small_out)
    _close(keras.ops.convert_to_numpy(big_scores)[:, KEEP_HEADS], small_scores)


def test_encoder_in_a_cloned_model_with_an_embedding_mask_saves_and_loads(tmp_path):
    tokens = keras.Input((5,), dtype="int32")
    embedded = keras.layers.Embedding(20, HIDDEN, mask_zero=True, name="embedding")(tokens)
    encoder = keras_hub.layers.TransformerEncoder(UNITS, HEADS, name="encoder")
    model = keras.Model(tokens, encoder(embedded), name="masked")
    _zero_heads(encoder._self_attention_layer, KEEP_HEADS)
    _zero_rows(encoder._feedforward_output_dense, KEEP_UNITS)
    small = hub.shrink_transformer_encoder(encoder, KEEP_HEADS, KEEP_UNITS)
    copy = keras.models.clone_model(
        model, clone_function=lambda layer: small if layer is encoder else layer
    )
    ids = np.array([[3, 4, 5, 0, 0], [7, 1, 2, 9, 0]], dtype="int32")
    # The mask matters: the same vectors without it give another output.
    plain = keras.ops.convert_to_numpy(model.get_layer("embedding")(ids))  # drops the mask
    assert not np.allclose(
        keras.ops.convert_to_numpy(encoder(plain)), model.predict(ids, verbose=0)
    )
    _close(model.predict(ids, verbose=0), copy.predict(ids, verbose=0))
    loaded = _round_trip(copy, tmp_path, ids)
    _close(model.predict(ids, verbose=0), loaded.predict(ids, verbose=0))
    assert isinstance(loaded.get_layer("encoder"), hub.CompactTransformerEncoder)


def test_encoder_with_a_padding_mask_input_saves_and_loads(tmp_path):
    x_in = keras.Input((5, HIDDEN))
    mask_in = keras.Input((5,), dtype="bool")
    encoder = _encoder()
    small = hub.shrink_transformer_encoder(encoder, KEEP_HEADS, KEEP_UNITS)
    model = keras.Model([x_in, mask_in], small(x_in, padding_mask=mask_in), name="padded")
    x = _rng_input(2, 5, HIDDEN, seed=2)
    _close(encoder(x, padding_mask=_padding_mask()), model.predict([x, _padding_mask()], verbose=0))
    loaded = _round_trip(model, tmp_path, x, _padding_mask())
    assert loaded.get_layer("encoder").get_config() == small.get_config()


def test_shrink_refuses_bad_masks():
    encoder = _encoder()
    with pytest.raises(
        ValueError, match="Invalid value for argument `keep_heads`: expected a bool"
    ):
        hub.shrink_transformer_encoder(encoder, np.ones(3, bool), KEEP_UNITS)
    with pytest.raises(ValueError, match="`keep_units`: expected at least one entry kept"):
        hub.shrink_transformer_encoder(encoder, KEEP_HEADS, np.zeros(UNITS, bool))


def test_compact_encoder_validates_its_config():
    with pytest.raises(
        ValueError, match="Invalid value for argument `key_dim`: expected an int >= 1"
    ):
        hub.CompactTransformerEncoder(intermediate_dim=4, num_heads=2, key_dim=0)
    config = hub.CompactTransformerEncoder(4, 2, 3, dropout=0.5, name="e").get_config()
    assert hub.CompactTransformerEncoder.from_config(config).get_config() == config


def test_connect_encoder_one_group_per_head_and_per_unit():
    encoder = keras_hub.layers.TransformerEncoder(UNITS, HEADS, name="encoder")
    keras.Model(inputs := keras.Input((5, HIDDEN)), encoder(inputs))
    groups = _walk(rules.connect_transformer_encoder, encoder)
    heads = [g for g in groups if g.channels == HEADS]
    assert len(heads) == 1 and heads[0].removable
    attention = "encoder/self_attention_layer"
    assert _member_keys(heads[0]) == sorted(
        [
            (f"{attention}/{n}", w, 0 if w == "bias" else 1, "writes")
            for n in ("query", "key", "value")
            for w in ("kernel", "bias")
        ]
        + [(f"{attention}/attention_output", "kernel", 0, "reads")]
    )
    for member in heads[0].members:
        np.testing.assert_array_equal(member.indices[:, 0], np.arange(HEADS))
    units = [g for g in groups if g.channels == UNITS]
    assert len(units) == 1 and units[0].removable
    assert units[0].layers == [
        "encoder/feedforward_intermediate_dense",
        "encoder/feedforward_output_dense",
    ]
    stream = [g for g in groups if g.channels == HIDDEN]
    assert stream and not any(g.removable for g in stream)
    assert all("normalizes its stream" in g.reason for g in stream)


def test_connect_reads_the_compact_encoder_too():
    encoder = _encoder()
    small = hub.shrink_transformer_encoder(encoder, KEEP_HEADS, KEEP_UNITS)
    keras.Model(inputs := keras.Input((5, HIDDEN)), small(inputs))
    groups = _walk(rules.connect_transformer_encoder, small)
    assert [g.channels for g in groups if g.removable] == [2, int(KEEP_UNITS.sum())]


def test_importing_the_module_does_not_import_keras_hub():
    code = (
        "import sys, kerasreg, kerasreg.compaction._keras_hub; "
        "assert 'keras_hub' not in sys.modules, 'keras_hub imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_a_saved_compact_encoder_loads_after_import_kerasreg_alone(tmp_path):
    encoder = _encoder()
    small = hub.shrink_transformer_encoder(encoder, KEEP_HEADS, KEEP_UNITS)
    inputs = keras.Input((5, HIDDEN))
    path = tmp_path / "fresh.keras"
    keras.Model(inputs, small(inputs)).save(path)
    code = f"import keras, kerasreg; keras.saving.load_model({str(path)!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1500:]


# --- TransformerDecoder ------------------------------------------------------

ENCODER_WIDTH = 6
KEEP_CROSS = np.array([False, True, True, True])


def _decoder(cross=True):
    decoder = keras_hub.layers.TransformerDecoder(
        intermediate_dim=UNITS, num_heads=HEADS, bias_initializer="random_normal", name="decoder"
    )
    x = _rng_input(2, 5, HIDDEN)
    decoder(x, _rng_input(2, 4, ENCODER_WIDTH)) if cross else decoder(x)
    _zero_heads(decoder._self_attention_layer, KEEP_HEADS)
    if cross:
        _zero_heads(decoder._cross_attention_layer, KEEP_CROSS)
    _zero_rows(decoder._feedforward_output_dense, KEEP_UNITS)
    return decoder


def test_decoder_with_cross_attention_shrinks_exactly():
    decoder = _decoder()
    small = hub.shrink_transformer_decoder(decoder, KEEP_HEADS, KEEP_CROSS, KEEP_UNITS)
    assert small._self_attention_layer.num_heads == 2
    assert small._cross_attention_layer.num_heads == 3
    x, enc = _rng_input(2, 5, HIDDEN, seed=3), _rng_input(2, 4, ENCODER_WIDTH, seed=4)
    enc_mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    _close(decoder(x, enc), small(x, enc))
    kwargs = dict(decoder_padding_mask=_padding_mask(), encoder_padding_mask=enc_mask)
    _close(decoder(x, enc, **kwargs), small(x, enc, **kwargs))
    _close(decoder(x, enc, use_causal_mask=False), small(x, enc, use_causal_mask=False))


def test_decoder_caches_give_the_same_step():
    decoder = _decoder()
    small = hub.shrink_transformer_decoder(decoder, KEEP_HEADS, KEEP_CROSS, KEEP_UNITS)
    key_dim = HIDDEN // HEADS
    self_cache = _rng_input(2, 2, 5, HEADS, key_dim, seed=5)
    cross_cache = np.zeros((2, 2, 4, HEADS, key_dim), "float32")
    x, enc = _rng_input(2, 1, HIDDEN, seed=6), _rng_input(2, 4, ENCODER_WIDTH, seed=7)

    def step(layer, keep_self, keep_cross):
        return layer(
            x,
            enc,
            self_attention_cache=self_cache[:, :, :, keep_self],
            self_attention_cache_update_index=2,
            cross_attention_cache=cross_cache[:, :, :, keep_cross],
            cross_attention_cache_update_index=0,
        )

    all_heads = np.ones(HEADS, bool)
    big = step(decoder, all_heads, all_heads)
    small_out = step(small, KEEP_HEADS, KEEP_CROSS)
    _close(big[0], small_out[0])
    _close(keras.ops.convert_to_numpy(big[1])[:, :, :, KEEP_HEADS], small_out[1])
    _close(keras.ops.convert_to_numpy(big[2])[:, :, :, KEEP_CROSS], small_out[2])


def test_decoder_saves_and_loads(tmp_path):
    decoder = _decoder()
    small = hub.shrink_transformer_decoder(decoder, KEEP_HEADS, KEEP_CROSS, KEEP_UNITS)
    x_in, enc_in = keras.Input((5, HIDDEN)), keras.Input((4, ENCODER_WIDTH))
    model = keras.Model([x_in, enc_in], small(x_in, enc_in), name="seq2seq")
    x, enc = _rng_input(2, 5, HIDDEN, seed=8), _rng_input(2, 4, ENCODER_WIDTH, seed=9)
    _close(decoder(x, enc), model.predict([x, enc], verbose=0))
    _round_trip(model, tmp_path, x, enc)


def test_decoder_only_shrinks_saves_and_loads(tmp_path):
    decoder = _decoder(cross=False)
    with pytest.raises(ValueError, match="`keep_cross_heads`: expected None"):
        hub.shrink_transformer_decoder(decoder, KEEP_HEADS, KEEP_CROSS, KEEP_UNITS)
    small = hub.shrink_transformer_decoder(decoder, KEEP_HEADS, None, KEEP_UNITS)
    x_in = keras.Input((5, HIDDEN))
    model = keras.Model(x_in, small(x_in, decoder_padding_mask=None), name="gpt")
    x = _rng_input(2, 5, HIDDEN, seed=10)
    _close(decoder(x), model.predict(x, verbose=0))
    _round_trip(model, tmp_path, x)


def test_connect_decoder_self_and_cross_heads():
    decoder = keras_hub.layers.TransformerDecoder(UNITS, HEADS, name="decoder")
    x_in, enc_in = keras.Input((5, HIDDEN)), keras.Input((4, ENCODER_WIDTH))
    keras.Model([x_in, enc_in], decoder(x_in, enc_in))
    groups = _walk(rules.connect_transformer_decoder, decoder)
    heads = [g for g in groups if g.channels == HEADS]
    assert len(heads) == 2 and all(g.removable for g in heads)
    assert [sorted({m.layer.split("/")[1] for m in g.members}) for g in heads] == [
        ["self_attention"],
        ["cross_attention"],
    ]
    # The encoder sequence's channels are read by the cross key and value rows.
    (encoder_side,) = [g for g in groups if g.channels == ENCODER_WIDTH]
    assert _member_keys(encoder_side) == [
        ("decoder/cross_attention/key", "kernel", 0, "reads"),
        ("decoder/cross_attention/value", "kernel", 0, "reads"),
    ]
    units = [g for g in groups if g.channels == UNITS]
    assert len(units) == 1 and units[0].removable
    stream = [g for g in groups if g.channels == HIDDEN]
    assert stream and not any(g.removable for g in stream)


# --- ViT ---------------------------------------------------------------------


def _vit_encoder():
    from keras_hub.src.models.vit.vit_layers import ViTEncoder

    encoder = ViTEncoder(
        num_layers=2, num_heads=HEADS, hidden_dim=HIDDEN, mlp_dim=UNITS, name="vit_encoder"
    )
    encoder(_rng_input(2, 5, HIDDEN))
    return encoder


KEEP_VIT_HEADS = [KEEP_HEADS, np.array([True, True, True, False])]
KEEP_VIT_UNITS = [KEEP_UNITS, np.arange(UNITS) < 5]


def test_vit_encoder_shrinks_exactly_saves_and_loads(tmp_path):
    encoder = _vit_encoder()
    for block, heads, units in zip(
        encoder.encoder_layers, KEEP_VIT_HEADS, KEEP_VIT_UNITS, strict=True
    ):
        _zero_heads(block.mha, heads)
        _zero_rows(block.mlp.dense_2, units)
    small = hub.shrink_vit_encoder(encoder, KEEP_VIT_HEADS, KEEP_VIT_UNITS)
    assert isinstance(small, keras.Model) and small.name == encoder.name
    attention = [
        layer for layer in small.layers if isinstance(layer, keras.layers.MultiHeadAttention)
    ]
    assert [(a.num_heads, a.key_dim) for a in attention] == [(2, 2), (3, 2)]
    x = _rng_input(2, 5, HIDDEN, seed=11)
    _close(encoder(x), small(x))
    assert small.count_params() < encoder.count_params()
    # In a model, as `clone_function` places it; the file needs no kerasreg.
    inputs = keras.Input((5, HIDDEN))
    model = keras.Model(inputs, small(inputs), name="vit")
    _round_trip(model, tmp_path, x)


def test_vit_shrunk_encoder_is_read_by_dependency_groups():
    import kerasreg

    encoder = _vit_encoder()
    small = hub.shrink_vit_encoder(encoder, KEEP_VIT_HEADS, KEEP_VIT_UNITS)
    inputs = keras.Input((5, HIDDEN))
    groups = kerasreg.dependency_groups(keras.Model(inputs, small(inputs)))
    removable = sorted(g.channels for g in groups if g.removable)
    assert removable == sorted([2, 3, int(KEEP_UNITS.sum()), 5])


def test_connect_vit_encoder_one_head_group_and_one_unit_group_per_block():
    encoder = _vit_encoder()
    keras.Model(inputs := keras.Input((5, HIDDEN)), encoder(inputs))
    groups = _walk(rules.connect_vit_encoder, encoder)
    heads = [g for g in groups if g.channels == HEADS]
    units = [g for g in groups if g.channels == UNITS]
    assert len(heads) == 2 and len(units) == 2
    assert all(g.removable for g in heads + units)
    assert [sorted({m.layer for m in g.members}) for g in heads][1] == [
        f"vit_encoder/transformer_block_2/mha/{n}"
        for n in ("attention_output", "key", "query", "value")
    ]
    assert units[0].layers == [
        "vit_encoder/transformer_block_1/mlp/dense_1",
        "vit_encoder/transformer_block_1/mlp/dense_2",
    ]
    stream = [g for g in groups if g.channels == HIDDEN]
    assert stream and not any(g.removable for g in stream)
    norms = {m.layer for g in stream for m in g.members if m.role == "carries"}
    assert norms == {
        "vit_encoder/transformer_block_1/ln_1",
        "vit_encoder/transformer_block_1/ln_2",
        "vit_encoder/transformer_block_2/ln_1",
        "vit_encoder/transformer_block_2/ln_2",
        "vit_encoder/ln",
    }


def test_vit_patching_rebuildable_config():
    from keras_hub.src.models.vit.vit_layers import ViTPatchingAndEmbedding

    layer = ViTPatchingAndEmbedding(
        image_size=(8, 8), patch_size=(4, 4), hidden_dim=HIDDEN, use_patch_bias=False
    )
    images = _rng_input(2, 8, 8, 3, seed=12)
    layer(images)
    with pytest.raises((TypeError, ValueError), match="num_patches"):
        ViTPatchingAndEmbedding.from_config(layer.get_config())
    config = hub.rebuildable_config(layer)
    copy = ViTPatchingAndEmbedding.from_config(config)
    copy(images)
    copy.set_weights(layer.get_weights())
    assert hub.rebuildable_config(copy) == config
    assert [w.shape for w in copy.weights] == [w.shape for w in layer.weights]
    _close(layer(images), copy(images))


# --- Through `compact` -------------------------------------------------------


def test_compact_removes_an_encoder_head_and_units_whose_output_rows_are_zero(tmp_path):
    inputs = keras.Input((5, 8))
    encoder = keras_hub.layers.TransformerEncoder(intermediate_dim=16, num_heads=4, name="enc")
    pooled = keras.layers.GlobalAveragePooling1D()(encoder(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(pooled))
    attention_output = encoder._self_attention_layer._output_dense
    kernel = keras.ops.convert_to_numpy(attention_output.kernel).copy()
    kernel[1] = 0.0  # head 1 writes nothing into the stream
    attention_output.kernel.assign(kernel)
    feedforward_output = encoder._feedforward_output_dense
    kernel = keras.ops.convert_to_numpy(feedforward_output.kernel).copy()
    kernel[3:6] = 0.0  # units 3, 4 and 5 neither
    feedforward_output.kernel.assign(kernel)
    small, summary = kerasreg.compact(model, return_summary=True)
    assert summary.left_as_is == ()
    compacted = small.get_layer("enc")
    assert compacted._self_attention_layer.num_heads == 3
    assert compacted._feedforward_intermediate_dense.units == 13
    # Per head: query, key and value columns and biases (3 * (8 * 2 + 2)) and
    # two rows of the output kernel; per unit: a column, a bias and a row.
    assert model.count_params() - small.count_params() == 3 * 18 + 2 * 8 + 3 * (8 + 1 + 8)
    x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(small(x)), expected, atol=1e-5)
    small.save(tmp_path / "encoder.keras")
    loaded = keras.saving.load_model(tmp_path / "encoder.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), expected, atol=1e-5)


def test_compact_removes_a_vit_head_and_the_backbone_saves_and_loads(tmp_path):
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=4, hidden_dim=16, mlp_dim=32
    )
    block = backbone.get_layer("vit_encoder").encoder_layers[0]
    kernel = keras.ops.convert_to_numpy(block.mha._output_dense.kernel).copy()
    kernel[2] = 0.0  # block 0's head 2 writes nothing
    block.mha._output_dense.kernel.assign(kernel)
    small, summary = kerasreg.compact(backbone, return_summary=True)
    assert summary.left_as_is == ()
    # The head's query, key and value columns and biases, and its output rows.
    assert backbone.count_params() - small.count_params() == 3 * (16 * 4 + 4) + 4 * 16
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(backbone(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(small(x)), expected, atol=1e-5)
    small.save(tmp_path / "vit.keras")
    loaded = keras.saving.load_model(tmp_path / "vit.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), expected, atol=1e-5)
