"""Bad input tried on kerasreg, and what each one gets.

Two catalogues, both run by `tests/test_reliability.py` and written out as
`docs/reliability.md` by `scripts/reliability_table.py`:

- `constraint_cases()`: every invalid value of every argument of every
  public class and function, generated from its `_parameter_constraints`
  table (each constraint lists the values it must refuse), not listed by
  hand.
- `SCENARIOS`: misuse that no single argument describes: wrong objects
  given to the wrapper and the callbacks, integer, frozen and empty
  weights, NaN and Inf in weights and gradients, tampered `.keras` files.
  Each scenario checks its own outcome and returns it as one line of text.
"""

import functools
import json
import re
import tempfile
import zipfile
from pathlib import Path

import keras
import numpy as np

import kerasreg

# Every public class with its required arguments, in the table's order.
CLASSES = [
    (kerasreg.L1, {}),
    (kerasreg.L2, {}),
    (kerasreg.ElasticNet, {}),
    (kerasreg.MCP, {}),
    (kerasreg.SCAD, {}),
    (kerasreg.GroupLasso, {}),
    (
        kerasreg.CoupledGroupLasso,
        {"groups": [[(keras.Variable(np.ones((2, 3)), name="kernel"), 1, np.arange(3)[:, None])]]},
    ),
    (kerasreg.MagnitudePruning, {"final_sparsity": 0.5}),
    (kerasreg.regularizers.KeepZeros, {}),
    (kerasreg.ChannelPruning, {"target": 0.5}),
    (
        kerasreg.Distiller,
        {"student": keras.Sequential([keras.layers.Dense(1)]), "teacher": keras.Sequential()},
    ),
    (kerasreg.ProximalOptimizer, {"inner_optimizer": keras.optimizers.SGD()}),
    (kerasreg.SparsityMonitor, {}),
    (kerasreg.TargetSparsity, {"target": 0.5, "end_epoch": 10}),
    (kerasreg.FreezeSparsity, {"start_epoch": 1}),
    (kerasreg.FeatureGate, {}),
    (kerasreg.layers.SelectFeatures, {"indices": [0, 2]}),
]


def _never_called(regularizer):
    raise AssertionError("a refused argument must stop the path before any model is built")


def _built_gate():
    gate = kerasreg.FeatureGate()
    gate.build((None, 3))
    return gate


_PATH_DATA = {
    "build_model": _never_called,
    "x": np.zeros((4, 2), "float32"),
    "y": np.zeros(4, "float32"),
    "strengths": [1.0],
}


# Every public function (methods included) that takes Python arguments, with
# its required arguments. The proximal operators in `kerasreg.prox` take
# tensors and are left out; `kerasreg.regularizers.get` resolves any
# identifier and refuses the rest itself.
def _built_model():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])


FUNCTIONS = [
    (kerasreg.regularize, {"model": _built_model(), "regularizer": "l1"}),
    (kerasreg.model_selection.regularization_path, _PATH_DATA),
    (kerasreg.model_selection.cross_validate_path, _PATH_DATA),
    (kerasreg.sparsity_report, {"model_or_layer": keras.layers.Dense(1)}),
    (kerasreg.allocate_sparsity, {"model_or_layer": _built_model(), "sparsity": 0.5}),
    (kerasreg.compact, {"model": keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])}),
    (kerasreg.dependency_groups, {"model": _built_model()}),
    (kerasreg.model_cost, {"model": _built_model()}),
    (
        kerasreg.oneshot_prune,
        {"model": _built_model(), "data": np.ones((8, 3), "float32"), "method": "wanda"},
    ),
    (kerasreg.strip, {"model": _built_model()}),
    (kerasreg.FeatureGate.selection_mask, {"self": _built_gate()}),
    (
        kerasreg.ProximalOptimizer.freeze_zeros,
        {"self": kerasreg.ProximalOptimizer(keras.optimizers.SGD())},
    ),
]


def _name(fn):
    return fn.__qualname__


def _outcome(error):
    """One line: the exception's type and the message kerasreg wrote.

    Keras wraps a `TypeError` raised while loading a file in its own message
    ("... could not be deserialized properly ... Exception encountered:
    <ours>"); the line keeps the part that names the argument.
    """
    message = str(error).strip()
    marker = "Exception encountered: "
    if marker in message:
        message = "(wrapped by Keras) " + message.rsplit(marker, 1)[1]
    return f"{type(error).__name__}: {message}"


def constraint_cases():
    """Yields `(fn, argument, value, error)` for each generated invalid value.

    `fn` is a public class or function; `error` is the exception raised by
    `fn(**required, argument=value)`, or `None` if the value was accepted
    (which the tests treat as a failure).
    """
    for fn, required in CLASSES + FUNCTIONS:
        for name, constraint in fn._parameter_constraints.items():
            for value in constraint.invalid_values():
                arguments = dict(required)
                arguments[name] = value
                try:
                    fn(**arguments)
                except (TypeError, ValueError) as error:
                    yield fn, name, value, error
                else:
                    yield fn, name, value, None


# Scenarios. Each returns the outcome line; an assertion inside states what
# must happen.


def _expect(error_type, needle, fn):
    """Runs `fn`, which must raise `error_type` with `needle` in its message."""
    try:
        fn()
    except error_type as error:
        line = _outcome(error)
        assert needle in line, line
        return line
    raise AssertionError(f"expected {error_type} with {needle!r} in its message")


def _model(optimizer=None, regularizer=None, inputs=3):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(2, kernel_regularizer=regularizer or kerasreg.L1(0.1), name="dense"),
        ],
        name="model",
    )
    model.compile(optimizer or kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
    return model


_X = np.linspace(-1.0, 1.0, 24, dtype="float32").reshape(8, 3)
_Y = np.ones((8, 2), "float32")


def nested_proximal_optimizer():
    inner = kerasreg.ProximalOptimizer(keras.optimizers.SGD())
    return _expect(
        ValueError, "argument `inner_optimizer`", lambda: kerasreg.ProximalOptimizer(inner)
    )


def loss_scale_inside_the_wrapper():
    inner = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())
    return _expect(
        ValueError, "argument `inner_optimizer`", lambda: kerasreg.ProximalOptimizer(inner)
    )


def clipping_given_to_the_wrapper():
    return _expect(
        ValueError,
        "argument `clipnorm`",
        lambda: kerasreg.ProximalOptimizer(keras.optimizers.SGD(), clipnorm=1.0),
    )


def preconditioned_mode_for_sgd():
    return _expect(
        ValueError,
        "argument `mode`",
        lambda: kerasreg.ProximalOptimizer(keras.optimizers.SGD(), mode="preconditioned"),
    )


def controller_without_proximal_optimizer():
    model = _model(optimizer=keras.optimizers.Adam())
    callback = kerasreg.TargetSparsity(0.5, end_epoch=2)
    return _expect(
        ValueError,
        "kerasreg.ProximalOptimizer",
        lambda: model.fit(_X, _Y, epochs=1, verbose=0, callbacks=[callback]),
    )


def freeze_without_proximal_optimizer():
    model = _model(optimizer=keras.optimizers.Adam())
    callback = kerasreg.FreezeSparsity(0)
    return _expect(
        ValueError,
        "kerasreg.ProximalOptimizer",
        lambda: model.fit(_X, _Y, epochs=1, verbose=0, callbacks=[callback]),
    )


def controller_without_regularized_weights():
    model = _model(regularizer=keras.regularizers.L1(0.1))  # Keras' L1 maps to ours
    model.layers[0].kernel.regularizer = None
    callback = kerasreg.TargetSparsity(0.5, end_epoch=2)
    return _expect(
        ValueError,
        "TargetSparsity",
        lambda: model.fit(_X, _Y, epochs=1, verbose=0, callbacks=[callback]),
    )


class _WeightLayer(keras.layers.Layer):
    """Multiplies its input by the sum of one regularized weight."""

    def __init__(self, shape, dtype_of_weight="float32", trainable_weight=True, **kwargs):
        super().__init__(**kwargs)
        self.weight_shape = shape
        self.dtype_of_weight = dtype_of_weight
        self.trainable_weight = trainable_weight

    def build(self, input_shape):
        self.w = self.add_weight(
            shape=self.weight_shape,
            dtype=self.dtype_of_weight,
            initializer="ones",
            regularizer=kerasreg.L1(0.1),
            trainable=self.trainable_weight,
            name="w",
        )

    def call(self, x):
        return x * keras.ops.sum(keras.ops.cast(self.w, x.dtype))


def _fit_weight_layer(layer, epochs=2):
    model = keras.Sequential([keras.Input((3,)), layer])
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.SGD(0.1)), "mse")
    history = model.fit(_X, _X, epochs=epochs, verbose=0, callbacks=[kerasreg.SparsityMonitor()])
    return model, history


def regularizer_on_an_integer_weight():
    weight = keras.Variable(np.ones(3, "int32"), trainable=False)
    return _expect(TypeError, "dtype int32", lambda: kerasreg.L1(0.1)(weight))


def regularizer_on_a_frozen_weight():
    layer = _WeightLayer((3,), trainable_weight=False)
    model, history = _fit_weight_layer(layer)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.w), np.ones(3))
    assert not model.losses, "a frozen weight must add no penalty"
    return "trains: no penalty in the loss, no prox; the weight keeps its value"


def regularizer_on_an_empty_weight():
    layer = _WeightLayer((0, 3), name="weighted")
    model, history = _fit_weight_layer(layer)
    assert history.history["sparsity/weighted/w"] == [0.0, 0.0], history.history
    assert float(keras.ops.convert_to_numpy(model.losses[0])) == 0.0
    (row,) = kerasreg.sparsity_report(model).weights
    assert row.size == 0 and row.zeros == 0 and row.sparsity == 0.0
    return "trains: penalty 0.0, sparsity 0.0 in `logs` and in `sparsity_report` (no NaN)"


def nan_weight_through_the_prox():
    for regularizer in (
        kerasreg.L1(1.0),
        kerasreg.ElasticNet(1.0),
        kerasreg.GroupLasso(1.0),
        kerasreg.L2(1.0),
    ):
        w = np.array([[np.nan, 0.01], [0.2, -0.01]], "float32")
        z = keras.ops.convert_to_numpy(regularizer.prox(w, 0.5))
        assert np.isnan(z[0, 0]), regularizer
    return "stays NaN (L1, L2, ElasticNet, GroupLasso): never turned into a zero"


def _nan_or_inf_training(bad_value):
    model = _model()
    x = _X.copy()
    x[3, 1] = bad_value
    stop = keras.callbacks.TerminateOnNaN()
    history = model.fit(
        x,
        _Y,
        batch_size=4,
        epochs=3,
        verbose=0,
        shuffle=False,
        callbacks=[kerasreg.SparsityMonitor(), stop],
    )
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    assert model.stop_training, "TerminateOnNaN must stop the run"
    assert len(history.history["loss"]) == 1, history.history
    assert not np.isfinite(kernel).any(), kernel
    # The prox kept every NaN a NaN and every Inf an Inf: none became a zero.
    assert np.count_nonzero(kernel == 0) == 0
    assert history.history["sparsity"] == [0.0]
    held = "NaN" if np.isnan(kernel).all() else "Inf" if np.isinf(kernel).all() else "NaN/Inf"
    return (
        "`TerminateOnNaN` stops the run in its first epoch; every kernel entry is "
        f"{held}, none turned into a zero (sparsity 0.0)"
    )


def nan_in_the_data():
    return _nan_or_inf_training(np.nan)


def inf_in_the_data():
    return _nan_or_inf_training(np.inf)


def _tampered_model_file(directory, edit):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            kerasreg.FeatureGate(name="gate"),
            keras.layers.Dense(2, kernel_regularizer=kerasreg.L1(0.1), name="dense"),
        ]
    )
    model.compile(kerasreg.ProximalOptimizer(keras.optimizers.Adam()), "mse")
    original = Path(directory) / "model.keras"
    model.save(original)
    tampered = Path(directory) / "tampered.keras"
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config)
            target.writestr(item, data)
    return tampered


def _load_tampered(needle, edit, error_type=(TypeError, ValueError)):
    with tempfile.TemporaryDirectory() as directory:
        path = _tampered_model_file(directory, edit)
        # safe_mode stays on (the default): nothing here needs it off.
        return _expect(error_type, needle, lambda: keras.models.load_model(path))


def _regularizer_config(config):
    return config["config"]["layers"][2]["config"]["kernel_regularizer"]["config"]


def _gate_config(config):
    return config["config"]["layers"][1]["config"]


def _optimizer_config(config):
    return config["compile_config"]["optimizer"]["config"]


def file_with_negative_strength():
    return _load_tampered("argument `l1`", lambda c: _regularizer_config(c).update(l1=-1.0))


def file_with_unknown_argument():
    return _load_tampered(
        "unexpected argument(s) ['bogus']", lambda c: _regularizer_config(c).update(bogus=1.0)
    )


def file_with_wrong_type():
    return _load_tampered("argument `l1`", lambda c: _regularizer_config(c).update(l1="0.1"))


def file_with_bad_optimizer_mode():
    return _load_tampered("argument `mode`", lambda c: _optimizer_config(c).update(mode="fastest"))


def file_with_bad_gate_axis():
    return _load_tampered("argument `axis`", lambda c: _gate_config(c).update(axis="features"))


def path_grid_given_twice():
    return _expect(
        ValueError,
        "argument `n_strengths`",
        lambda: kerasreg.model_selection.regularization_path(
            _never_called, _X, _Y, [1.0, 0.1], n_strengths=10
        ),
    )


SCENARIOS = {
    "`ProximalOptimizer(ProximalOptimizer(SGD()))`": nested_proximal_optimizer,
    "`ProximalOptimizer(LossScaleOptimizer(SGD()))`": loss_scale_inside_the_wrapper,
    "`ProximalOptimizer(SGD(), clipnorm=1.0)`": clipping_given_to_the_wrapper,
    "`ProximalOptimizer(SGD(), mode='preconditioned')`": preconditioned_mode_for_sgd,
    "`TargetSparsity` on a model compiled with `Adam`": controller_without_proximal_optimizer,
    "`FreezeSparsity` on a model compiled with `Adam`": freeze_without_proximal_optimizer,
    "`TargetSparsity` on a model without kerasreg regularizers": (
        controller_without_regularized_weights
    ),
    "`L1` on an `int32` weight": regularizer_on_an_integer_weight,
    "`L1` on a non-trainable weight, in `fit`": regularizer_on_a_frozen_weight,
    "`L1` on a weight of shape `(0, 3)`, in `fit` with `SparsityMonitor`": (
        regularizer_on_an_empty_weight
    ),
    "NaN in a weight, through each regularizer's prox": nan_weight_through_the_prox,
    "NaN in the data (NaN loss and gradients), `fit` with `TerminateOnNaN`": nan_in_the_data,
    "Inf in the data (Inf/NaN loss and gradients), `fit` with `TerminateOnNaN`": (inf_in_the_data),
    "`.keras` file, `L1` strength set to `-1.0`": file_with_negative_strength,
    "`.keras` file, `L1` config given an unknown argument": file_with_unknown_argument,
    "`.keras` file, `L1` strength set to the string `'0.1'`": file_with_wrong_type,
    "`.keras` file, `ProximalOptimizer` mode set to `'fastest'`": file_with_bad_optimizer_mode,
    "`.keras` file, `FeatureGate` axis set to `'features'`": file_with_bad_gate_axis,
    "`regularization_path` given both `strengths` and `n_strengths`": path_grid_given_twice,
}


@functools.cache
def outcome(title):
    """The outcome line of the scenario `title`, run once per process."""
    return SCENARIOS[title]()


def _show(value):
    """`repr(value)`, with huge ints written as powers of ten."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**18:
        digits = len(str(abs(value))) - 1
        if abs(value) == 10**digits:
            return f"10**{digits}"
    return repr(value)


def _cell(text):
    # Object addresses differ from run to run; the page must not.
    text = re.sub(r" (object )?at 0x[0-9a-fA-F]+", "", text)
    return text.replace("|", "\\|").replace("\n", " ")


def render():
    """The Markdown of `docs/reliability.md`."""
    lines = [
        "# Reliability: bad input and what it gets",
        "",
        "Generated by `python scripts/reliability_table.py` from the cases in",
        "`tests/reliability.py`; `tests/test_reliability.py` runs every case on each",
        "backend and fails if this page is out of date. Every refusal names the",
        "argument (or the weight) at fault; nothing is accepted silently, and no",
        "file needs `safe_mode=False`.",
        "",
        "## Invalid arguments of every public class and function",
        "",
        "Generated from each class's and function's `_parameter_constraints`",
        "table: each constraint lists the values it must refuse (wrong types,",
        "non-finite numbers, values out of range), and each is tried, with the",
        "other arguments valid. Every refusal is a `kerasreg.InvalidArgumentError`,",
        "which is both a `TypeError` and a `ValueError`. `from_config` (and so",
        "`load_model`) validates exactly as `__init__`.",
        "",
        "| class or function | argument | expected | refused: wrong type | refused: wrong value |",
        "| --- | --- | --- | --- | --- |",
    ]
    grouped = {}
    accepted = []
    for fn, name, value, error in constraint_cases():
        row = grouped.setdefault((fn, name), {"type": [], "value": []})
        if error is None:
            accepted.append((_name(fn), name, value))
        else:
            kind = "type" if not fn._parameter_constraints[name].type_ok(value) else "value"
            row[kind].append(_show(value))
    for (fn, name), row in grouped.items():
        expected = fn._parameter_constraints[name].description
        lines.append(
            f"| `{_name(fn)}` | `{name}` | {_cell(expected)} | "
            f"{_cell(', '.join(f'`{v}`' for v in row['type']))} | "
            f"{_cell(', '.join(f'`{v}`' for v in row['value']))} |"
        )
    total = sum(len(r["type"]) + len(r["value"]) for r in grouped.values())
    lines += [
        "",
        f"{total} values tried, {len(accepted)} accepted. Every message has one shape, e.g.:",
        "",
        "```text",
    ]
    samples = {(kerasreg.ElasticNet, "l1_ratio"), (kerasreg.ProximalOptimizer, "inner_optimizer")}
    for cls, name, _, error in constraint_cases():
        if (cls, name) in samples:
            samples.discard((cls, name))
            lines.append(_cell(_outcome(error)))
    lines += [
        "```",
        "",
        "## Misuse, special weights, NaN and Inf, tampered files",
        "",
        "| input | what it gets |",
        "| --- | --- |",
    ]
    for title in SCENARIOS:
        lines.append(f"| {_cell(title)} | {_cell(outcome(title))} |")
    lines.append("")
    return "\n".join(lines)
