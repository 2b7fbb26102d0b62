"""`kerasreg.ChannelPruning`: coupled channels pruned to a cost, held at zero, compacted."""

import keras
import numpy as np
import pytest

import kerasreg


def _resnet():
    """A small residual network: a stem at full resolution, a stream, a stride-2 stage."""
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(y)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="down")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def _transformer(heads=8):
    inputs = keras.Input((6, 16))
    attention = keras.layers.MultiHeadAttention(heads, 8, name="mha")
    x = keras.layers.Add()([inputs, attention(inputs, inputs)])
    x = keras.layers.LayerNormalization()(x)
    y = keras.layers.Dense(32, "relu", name="ff1")(x)
    x = keras.layers.Add()([x, keras.layers.Dense(16, name="ff2")(y)])
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def _fit(model, request, steps, x, y, optimizer=None):
    kerasreg.regularize(model, request, groups="dependency")
    optimizer = optimizer or keras.optimizers.Adam(1e-2)
    model.compile(
        kerasreg.ProximalOptimizer(optimizer),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=steps, verbose=0)
    return model


def _data(shape, n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n,) + shape).astype("float32"), rng.integers(0, 4, n).astype("int32")


@pytest.mark.parametrize("cost, importance", [("macs", "l2"), ("params", "l2"), ("macs", "taylor")])
def test_compact_lands_on_the_target(cost, importance):
    keras.utils.set_random_seed(0)
    model = _resnet()
    dense = kerasreg.model_cost(model)
    x, y = _data((12, 12, 3))
    request = kerasreg.ChannelPruning(
        0.5, cost=cost, begin_step=0, end_step=4, frequency=2, importance=importance
    )
    _fit(model, request, 8, x, y)
    small = kerasreg.compact(model)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)
    left = getattr(kerasreg.model_cost(small), cost) / getattr(dense, cost)
    assert abs(left - 0.5) < 0.05


def test_pruned_channels_stay_zero_and_the_schedule_is_gradual():
    keras.utils.set_random_seed(1)
    model = _resnet()
    x, y = _data((12, 12, 3))
    request = kerasreg.ChannelPruning(0.4, begin_step=2, end_step=6, frequency=2)
    _fit(model, request, 2, x, y)
    stem = model.get_layer("stem").kernel
    assert np.all(keras.ops.convert_to_numpy(stem) != 0)  # nothing before begin_step
    model.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=4, verbose=0)  # steps 2..5
    partly = kerasreg.model_cost(kerasreg.compact(model)).macs
    model.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=6, verbose=0)  # to step 11
    zeros = {w.path: keras.ops.convert_to_numpy(w) == 0 for w in model.trainable_weights}
    model.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=5, verbose=0)
    for w in model.trainable_weights:
        assert np.all(keras.ops.convert_to_numpy(w)[zeros[w.path]] == 0), w.path
    final = kerasreg.model_cost(kerasreg.compact(model)).macs
    dense = kerasreg.model_cost(_resnet()).macs
    assert final <= partly < dense
    assert abs(final / dense - 0.4) < 0.06


def test_heads_go_a_few_at_a_time():
    # At half the MACs the block keeps some of its heads: they do not go all at once.
    keras.utils.set_random_seed(2)
    model = _transformer()
    x, y = _data((6, 16))
    _fit(model, kerasreg.ChannelPruning(0.5, begin_step=0, end_step=6, frequency=2), 8, x, y)
    small = kerasreg.compact(model)
    assert 3 <= small.get_layer("mha").num_heads <= 5


def test_round_to_keeps_multiples():
    keras.utils.set_random_seed(3)
    model = _resnet()
    x, y = _data((12, 12, 3))
    _fit(model, kerasreg.ChannelPruning(0.5, begin_step=0, end_step=0, round_to=4), 2, x, y)
    small = kerasreg.compact(model)
    for name in ("stem", "conv1", "down"):
        assert small.get_layer(name).filters % 4 == 0


@pytest.mark.backend_neutral
def test_bad_requests():
    model = _resnet()
    with pytest.raises(kerasreg.InvalidArgumentError, match="`groups`"):
        kerasreg.regularize(model, kerasreg.ChannelPruning(0.5))
    with pytest.raises(kerasreg.InvalidArgumentError, match="the model still costs 0.0"):
        kerasreg.regularize(model, kerasreg.ChannelPruning(0.001), groups="dependency")
    for argument, value in [("cost", "flops"), ("importance", "l1"), ("target", 1.0)]:
        kwargs = {"target": 0.5, argument: value}
        with pytest.raises(kerasreg.InvalidArgumentError, match=f"`{argument}`"):
            kerasreg.ChannelPruning(**kwargs)
    with pytest.raises(kerasreg.InvalidArgumentError, match="`end_step`"):
        kerasreg.ChannelPruning(0.5, begin_step=5, end_step=4)


# The penalty route to a cost.


@pytest.mark.backend_neutral
def test_cost_weighted_group_lasso_scales():
    model = _resnet()
    kerasreg.regularize(model, kerasreg.GroupLasso(1e-3), groups="dependency", cost="macs")
    joint = model.get_layer("stem").kernel.regularizer.joint
    cost = kerasreg.model_cost(model)
    removable = [c for c in cost.groups if c.group.removable]
    sizes = []
    for c in removable:
        trained = [m for m in c.group.members if m.role != "reads" and m.variable.trainable]
        sizes.append(sum(m.params for m in trained))
    macs = np.array([c.macs for c in removable])
    expected = np.sqrt(macs * sum(sizes) / macs.sum())
    assert joint.scales == pytest.approx(expected)
    # The penalty is the weighted sum of the channels' norms.
    values = [keras.ops.convert_to_numpy(v) for v in joint.variables]
    norms = []
    for c in removable:
        squares = np.zeros(c.group.channels)
        for m in c.group.members:
            if m.role == "reads" or not m.variable.trainable:
                continue
            value = values[[id(v) for v in joint.variables].index(id(m.variable))]
            axes = tuple(a for a in range(value.ndim) if a != m.axis)
            squares += (value.astype("float64") ** 2).sum(axis=axes)[m.indices].sum(axis=1)
        norms.append(np.sqrt(squares).sum())
    penalty = float(keras.ops.convert_to_numpy(joint([v.value for v in joint.variables])))
    assert penalty == pytest.approx(1e-3 * np.dot(expected, norms), rel=1e-5)
    with pytest.raises(kerasreg.InvalidArgumentError, match="`cost`"):
        kerasreg.regularize(model, kerasreg.GroupLasso(1e-3), cost="macs")
    with pytest.raises(kerasreg.InvalidArgumentError, match="`scales`"):
        kerasreg.CoupledGroupLasso(1.0, joint_groups_of(model), scales=[1.0, 2.0])


def joint_groups_of(model):
    group = [g for g in kerasreg.dependency_groups(model) if g.removable][0]
    return [[(m.variable, m.axis, m.indices) for m in group.members if m.role == "writes"]]


def test_freeze_completes_a_cost_target_channel_by_channel():
    keras.utils.set_random_seed(4)
    model = _resnet()
    dense = kerasreg.model_cost(model)
    x, y = _data((12, 12, 3))
    # No shrinkage (strength 0): the freeze alone makes the pattern.
    kerasreg.regularize(model, kerasreg.GroupLasso(0.0), groups="dependency", cost="macs")
    model.compile(
        kerasreg.ProximalOptimizer(keras.optimizers.Adam(1e-2)),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    target = kerasreg.TargetSparsity(0.6, end_epoch=2, measure="macs")
    freeze = kerasreg.FreezeSparsity(1, sparsity=0.6, measure="macs")
    history = model.fit(x, y, batch_size=16, epochs=3, callbacks=[target, freeze], verbose=0)
    cost = kerasreg.model_cost(model)
    small = kerasreg.compact(model)
    left = kerasreg.model_cost(small).macs / dense.macs
    assert left == pytest.approx(cost.fraction_left(), abs=1e-9)
    largest = max(c.macs for c in dense.groups if c.group.removable) / dense.macs
    assert abs(left - 0.4) <= largest / 2 + 1e-9
    # TargetSparsity measured what the freeze made, as model_cost counts it.
    assert history.history["zeros_frozen"] == [0.0, 1.0, 1.0]
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)


def test_excluding_a_masked_weight_is_refused():
    model = _resnet()
    kerasreg.regularize(model, kerasreg.ChannelPruning(0.5), groups="dependency")
    optimizer = kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.01))
    optimizer.exclude_from_prox(var_names=["head"])
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data((12, 12, 3), n=8)
    with pytest.raises(ValueError, match="exclude_from_prox"):
        model.fit(x, y, epochs=1, verbose=0)


def test_taylor_importance_is_the_closed_form():
    # One layer, one turn: the channels that go are those of least
    # sum(|w * dL/dw|) per unit of cost, with the gradient of the step's batch.
    keras.utils.set_random_seed(5)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(10, "relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(x))
    x_data, y_data = _data((6,), n=16)
    y_data = y_data.astype("float32")
    request = kerasreg.ChannelPruning(
        0.5, cost="params", begin_step=0, end_step=0, importance="taylor"
    )
    kerasreg.regularize(model, request, groups="dependency")
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.0)), "mse")
    weights = [keras.ops.convert_to_numpy(w).astype("float64") for w in model.weights]
    kernel, bias, head, head_bias = weights
    h = x_data @ kernel + bias
    a = np.maximum(h, 0)
    residual = (a @ head + head_bias)[:, 0] - y_data
    d_out = 2 * residual[:, None] / len(y_data)  # d mse / d prediction
    g_head = a.T @ d_out
    d_h = (d_out @ head.T) * (h > 0)
    g_kernel, g_bias = x_data.T @ d_h, d_h.sum(axis=0)
    taylor = (
        np.abs(kernel * g_kernel).sum(axis=0) + np.abs(bias * g_bias) + np.abs(head * g_head)[:, 0]
    )
    model.fit(x_data, y_data, batch_size=16, epochs=1, verbose=0)
    kept = np.any(keras.ops.convert_to_numpy(model.get_layer("hidden").kernel) != 0, axis=0)
    # Every unit costs the same parameters: the least important go.
    assert set(np.flatnonzero(~kept)) == set(np.argsort(taylor)[: (~kept).sum()])
    assert 4 <= kept.sum() <= 6
