"""Sparsity reports, checked against independent counts over `get_weights()`."""

import sys

import keras
import numpy as np
import pytest

import kerasreg


class TwoWeights(keras.layers.Layer):
    """A user's layer: a regularized matrix and a regularized 1-D scale."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(
            shape=(input_shape[-1], self.units), regularizer=kerasreg.L1(0.01), name="w"
        )
        self.scale = self.add_weight(
            shape=(self.units,), initializer="ones", regularizer=kerasreg.L1(0.01), name="scale"
        )

    def call(self, x):
        return keras.ops.matmul(x, self.w) * self.scale


class Block(keras.layers.Layer):
    """A user's layer nesting another user's layer and a Dense."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = TwoWeights(5, name="two")
        self.dense = keras.layers.Dense(4, name="proj")

    def call(self, x):
        return self.dense(self.inner(x))


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.block = Block(name="block")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x):
        return self.head(self.block(x))


def _sequential():
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, name="a"), keras.layers.Dense(3, name="b")],
        name="seq",
    )


def _functional_shared_nested():
    inputs = keras.Input((6,))
    shared = keras.layers.Dense(6, name="shared")
    hidden = shared(shared(inputs))  # one layer, called twice
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, name="inner_d")], name="inner"
    )
    outputs = TwoWeights(2, name="custom")(inner(hidden))
    return keras.Model(inputs, outputs, name="outer")


def _subclassed():
    model = Subclassed(name="sub")
    model(np.zeros((1, 6), "float32"))
    return model


def _wrappers():
    return keras.Sequential(
        [
            keras.Input((5, 4)),
            keras.layers.TimeDistributed(keras.layers.Dense(3, name="td_dense")),
            keras.layers.Bidirectional(keras.layers.LSTM(2)),
        ],
        name="wrapped",
    )


MODELS = {
    "sequential": _sequential,
    "functional_shared_nested": _functional_shared_nested,
    "subclassed": _subclassed,
    "wrappers": _wrappers,
}


def _set_known_zeros(model, rng):
    """Zeroes a random quarter of every weight, plus one unit and one input."""
    expected = {}
    for variable in model.weights:
        value = rng.normal(size=variable.shape).astype(variable.dtype)
        value[rng.random(size=value.shape) < 0.25] = 0.0
        if value.ndim >= 2:
            value[..., 0] = 0.0  # the first unit gets no input
            value[..., 1, :] = 0.0  # the second input feeds nothing
        variable.assign(value)
        expected[variable.path] = value
    return expected


def _independent_counts(model):
    """Counts straight from `get_weights()`: Keras deduplicates shared layers."""
    counts = {}
    for variable, value in zip(model.weights, model.get_weights(), strict=True):
        counts[variable.path] = (value.size, int(np.count_nonzero(value == 0)), value)
    return counts


@pytest.mark.parametrize("build", MODELS.values(), ids=MODELS.keys())
def test_report_equals_independent_count(build, rng):
    model = build()
    _set_known_zeros(model, rng)
    counts = _independent_counts(model)
    report = kerasreg.sparsity_report(model, include_biases=True)

    float_paths = {p for p, (_, _, v) in counts.items() if v.dtype.kind == "f"}
    trainable = {v.path for v in model.trainable_weights}
    expected_paths = {p for p in float_paths if p in trainable or counts[p][2].ndim >= 2}
    assert sorted(w.key for w in report) == sorted(
        p[len(model.name) + 1 :] if p.startswith(model.name + "/") else p for p in expected_paths
    )
    assert len({w.key for w in report}) == len(report)  # keys are unique
    by_path = {}
    for variable in model.weights:
        by_path.setdefault(variable.path, variable)
    for row in report:
        path = row.key if row.key in counts else f"{model.name}/{row.key}"
        size, zeros, value = counts[path]
        assert (row.size, row.zeros) == (size, zeros)
        assert row.shape == value.shape
        assert row.sparsity == zeros / size
        if value.ndim >= 2:
            zero = value == 0
            assert row.zero_units == np.count_nonzero(zero.reshape(-1, value.shape[-1]).all(0))
            rows = np.moveaxis(zero, -2, 0).reshape(value.shape[-2], -1)
            assert row.zero_inputs == np.count_nonzero(rows.all(1))
            assert row.zero_units >= 1 and row.zero_inputs >= 1
        else:
            assert row.zero_units is None and row.zero_inputs is None
    assert report.size == sum(counts[p][0] for p in expected_paths)
    assert report.zeros == sum(counts[p][1] for p in expected_paths)


def test_kernels_by_default_biases_on_request(rng):
    model = _functional_shared_nested()
    _set_known_zeros(model, rng)
    default = {w.key for w in kerasreg.sparsity_report(model)}
    # Kernels, plus the user's regularized 1-D scale; no biases.
    assert default == {"shared/kernel", "inner/inner_d/kernel", "custom/w", "custom/scale"}
    with_biases = {w.key for w in kerasreg.sparsity_report(model, include_biases=True)}
    assert with_biases == default | {"shared/bias", "inner/inner_d/bias"}


def test_shared_layer_counted_once(rng):
    model = _functional_shared_nested()
    _set_known_zeros(model, rng)
    report = kerasreg.sparsity_report(model)
    assert [w.key for w in report].count("shared/kernel") == 1
    assert report.size == 36 + 24 + 8 + 2


def test_a_single_layer_and_an_unbuilt_model():
    layer = keras.layers.Dense(2)
    assert len(kerasreg.sparsity_report(layer)) == 0
    layer.build((None, 3))
    layer.kernel.assign(np.zeros((3, 2), "float32"))
    report = kerasreg.sparsity_report(layer)
    assert [w.key for w in report] == ["kernel"]  # relative to the layer reported on
    assert report.sparsity == 1.0


def test_tolerance_is_a_separate_figure(rng):
    layer = keras.layers.Dense(50)
    layer.build((None, 40))
    value = rng.normal(scale=1e-2, size=(40, 50)).astype("float32")
    value[:5] = 0.0
    layer.kernel.assign(value)
    row = next(iter(kerasreg.sparsity_report(layer, tolerance=1e-2)))
    assert row.zeros == 250
    assert row.below_tolerance == np.count_nonzero(np.abs(value) <= 1e-2)
    assert row.below_tolerance > row.zeros


def test_table_rows_and_dataframe(rng):
    model = _sequential()
    _set_known_zeros(model, rng)
    report = kerasreg.sparsity_report(model, tolerance=1e-3)
    text = str(report)
    assert "a/kernel" in text and "b/kernel" in text and "total" in text
    assert f"{report.sparsity:.2%}" in text
    assert "|w| <= 0.001" in text
    rows = report.rows()
    assert [r["key"] for r in rows] == ["a/kernel", "b/kernel"]
    assert rows[0]["zeros"] == report["a/kernel"].zeros
    frame = report.to_dataframe()
    assert list(frame["key"]) == ["a/kernel", "b/kernel"]
    assert frame["zeros"].sum() == report.zeros
    assert "2 weights" in repr(report)
    with pytest.raises(KeyError, match="a/kernel"):
        report["missing"]


def test_dataframe_without_pandas(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    report = kerasreg.sparsity_report(_sequential())
    with pytest.raises(ImportError, match="pip install pandas"):
        report.to_dataframe()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"tolerance": -1.0}, ValueError, "argument `tolerance`"),
        ({"tolerance": float("nan")}, ValueError, "argument `tolerance`"),
        ({"tolerance": "0.1"}, TypeError, "argument `tolerance`"),
        ({"include_biases": 1}, TypeError, "argument `include_biases`"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        kerasreg.sparsity_report(_sequential(), **kwargs)


def test_bad_model():
    with pytest.raises(TypeError, match="argument `model_or_layer`"):
        kerasreg.sparsity_report(np.zeros((3, 3)))


def test_keys_are_unique_when_paths_collide():
    # Layers named alike and built on their own share a variable path.
    first, second = keras.layers.Dense(2, name="d"), keras.layers.Dense(2, name="d")
    first.build((None, 3))
    second.build((None, 2))
    assert first.kernel.path == second.kernel.path

    class Twins(keras.Model):
        def __init__(self):
            super().__init__(name="twins")
            self.first, self.second = first, second

        def call(self, x):
            return self.second(self.first(x))

    keys = [w.key for w in kerasreg.sparsity_report(Twins())]
    assert keys == ["d/kernel", "d/kernel_1"]


def _conv_net():
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(4, 3, name="stem"),  # 108 weights
            keras.layers.Conv2D(32, 3, name="conv"),  # 1,152
            keras.layers.Flatten(),
            keras.layers.Dense(64, name="fc"),  # 204,800
            keras.layers.Dense(10, name="out"),  # 640
        ],
        name="net",
    )


@pytest.mark.parametrize("target", [0.0, 0.5, 0.9, 0.98, 1.0])
def test_erk_allocation_matches_rigl_and_adds_up(target):
    model = _conv_net()
    targets = kerasreg.allocate_sparsity(model, target, method="erk")
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    assert list(targets) == [k.path for k in kernels]
    sizes = np.array([np.prod(k.shape) for k in kernels], dtype=float)
    sparsities = np.array(list(targets.values()))
    # The zeros over all the kernels make the target.
    np.testing.assert_allclose(np.sum(sparsities * sizes) / np.sum(sizes), target, atol=1e-12)
    # RigL's rule: the densities of the weights not kept dense are
    # proportional to sum(shape) / prod(shape); dense ones are those whose
    # density would have been the largest.
    scores = np.array([sum(k.shape) / np.prod(k.shape) for k in kernels])
    free = sparsities > 0
    if free.any():
        ratio = (1 - sparsities[free]) / scores[free]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)
        assert np.all(scores[~free] >= scores[free].max())
    assert np.all((sparsities >= 0) & (sparsities <= 1))


def test_erk_keeps_the_small_weights_dense_at_moderate_targets():
    targets = kerasreg.allocate_sparsity(_conv_net(), 0.5, method="erk")
    assert targets["net/stem/kernel"] == 0.0  # 108 weights: density capped at 1
    assert targets["net/fc/kernel"] > 0.5 > targets["net/out/kernel"]


def test_erk_power_zero_limit_is_uniform_and_uniform_is_uniform():
    model = _conv_net()
    uniform = kerasreg.allocate_sparsity(model, 0.8, method="uniform")
    assert set(uniform.values()) == {0.8}
    nearly = kerasreg.allocate_sparsity(model, 0.8, method="erk", power=1e-9)
    np.testing.assert_allclose(list(nearly.values()), 0.8, atol=1e-6)


def test_allocation_feeds_one_magnitude_pruning_per_weight():
    model = _conv_net()
    targets = kerasreg.allocate_sparsity(model, 0.9)
    kerasreg.regularize(
        model,
        lambda layer, weight: kerasreg.MagnitudePruning(targets[weight.path]),
        layers=[keras.layers.Conv2D, keras.layers.Dense],
    )
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            assert layer.kernel.regularizer.final_sparsity == targets[layer.kernel.path]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sparsity": 1.5}, "Invalid value for argument `sparsity`"),
        ({"sparsity": 0.5, "method": "random"}, "Invalid value for argument `method`"),
        ({"sparsity": 0.5, "power": 0.0}, "Invalid value for argument `power`"),
    ],
)
def test_allocation_bad_arguments(kwargs, message):
    with pytest.raises(kerasreg.InvalidArgumentError, match=message):
        kerasreg.allocate_sparsity(_conv_net(), **kwargs)


def test_allocation_needs_a_kernel():
    layer = keras.layers.BatchNormalization()
    layer.build((None, 3))
    with pytest.raises(kerasreg.InvalidArgumentError, match="`model_or_layer`"):
        kerasreg.allocate_sparsity(layer, 0.5)


def test_n_m_check_per_weight_and_column_only_when_asked(rng):
    model = keras.Sequential(
        [
            keras.Input((3, 8)),
            keras.layers.Conv1D(4, 2, name="conv"),  # kernel (2, 8, 4): blocks along the 8
            keras.layers.Dense(6, name="odd"),  # kernel (4, 6): 4 % 8 != 0
        ]
    )
    conv = rng.normal(size=(2, 8, 4)).astype("float32")
    conv[:, 1:3, :] = 0.0  # 2 zeros in block 0 of 4 and 2 zeros in block 0 of 8
    model.get_layer("conv").kernel.assign(conv)
    plain = kerasreg.sparsity_report(model)
    holds = {
        (n, m): [w.structure_holds for w in kerasreg.sparsity_report(model, structure=(n, m))]
        for n, m in ((6, 8), (2, 4), (3, 4))
    }
    # (6, 8): 8 divides 8, not 4. (2, 4): block 1 of each column is dense.
    assert holds == {(6, 8): [True, None], (2, 4): [False, False], (3, 4): [False, False]}
    assert [w.structure_holds for w in plain] == [None, None]
    assert "structure_holds" not in plain.rows()[0]
    report = kerasreg.sparsity_report(model, structure=(6, 8))
    assert report.rows()[1]["structure_holds"] is None
    header, *_ = str(report).splitlines()
    assert header.split()[-1] == "6:8" and "6:8" not in str(plain)
    assert str(plain).splitlines()[0].split()[-2:] == ["zero", "inputs"]
