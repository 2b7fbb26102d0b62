"""`oneshot_prune`: sparsify a trained model with a little calibration data, no training."""

import contextlib
import dataclasses
import math
import warnings

import keras
import numpy as np

from kerasreg import _model_walk
from kerasreg import _tables
from kerasreg._graph import _wiring
from kerasreg._validation import AnyOf
from kerasreg._validation import Boolean
from kerasreg._validation import CalibrationData
from kerasreg._validation import InstanceOf
from kerasreg._validation import Integer
from kerasreg._validation import Interval
from kerasreg._validation import LayerSelector
from kerasreg._validation import Options
from kerasreg._validation import Sparsities
from kerasreg._validation import Structure
from kerasreg._validation import invalid_argument
from kerasreg._validation import validate_params
from kerasreg.oneshot import _data
from kerasreg.oneshot import _solvers
from kerasreg.oneshot import _targets

__all__ = ["LayerPruning", "OneShotReport", "oneshot_prune"]


@dataclasses.dataclass(frozen=True)
class LayerPruning:
    """What `oneshot_prune` did to one layer.

    Attributes:
        path: The layer's path in the model (`"/"`-joined names).
        kind: `"dense"`, `"einsum"` or `"conv"`.
        shape: The kernel's shape.
        asked: The fraction of the kernel's entries asked to go.
        sparsity: The fraction of its entries that are exactly zero after pruning.
        error: The relative error of the layer's products on the calibration
            inputs, :math:`\\lVert X (\\hat W - W)^\\top \\rVert_F / \\lVert X
            W^\\top \\rVert_F` (the bias cancels out of the error and is left
            out of the norm), with :math:`X` the rows the layer saw, the layers
            before it already pruned; `None` without calibration data.
        rows: The number of rows of inputs the layer saw (samples times
            positions or patches).
    """

    path: str
    kind: str
    shape: tuple
    asked: float
    sparsity: float
    error: float | None
    rows: int


_COLUMNS = (
    ("layer", "path", "{}"),
    ("kind", "kind", "{}"),
    ("rows", "rows", "{:,}"),
    ("asked", "asked", "{:.2%}"),
    ("sparsity", "sparsity", "{:.2%}"),
    ("rel. error", "error", "{:.4f}"),
)


class OneShotReport:
    """What `oneshot_prune` did, layer by layer, in the order the layers were pruned.

    Iterating yields one `LayerPruning` per layer; `report["block/dense"]`
    looks one up by path. `print(report)` shows a table, `rows()` gives plain
    dicts and `to_dataframe()` a pandas DataFrame (pandas must be installed).

    Attributes:
        layers: Tuple of `LayerPruning`.
        method: The method used.
        structure: The N:M pattern, or `None`.
        samples: The number of calibration samples used.
        skipped: Dict from the path of each selected layer left as it was to
            the reason (a grouped convolution, a quantized layer, ...).
    """

    def __init__(self, layers, method, structure, samples, skipped):
        self.layers = tuple(layers)
        self.method = method
        self.structure = structure
        self.samples = samples
        self.skipped = dict(skipped)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, path):
        for layer in self.layers:
            if layer.path == path:
                return layer
        raise KeyError(f"No pruned layer {path!r}. Layers: {[r.path for r in self.layers]}")

    @property
    def sparsity(self):
        """The fraction of exact zeros over all the pruned kernels."""
        sizes = [math.prod(r.shape) for r in self.layers]
        zeros = sum(r.sparsity * size for r, size in zip(self.layers, sizes, strict=True))
        return zeros / sum(sizes) if sizes else 0.0

    def rows(self):
        """The figures as a list of plain dicts, one per layer."""
        return [dataclasses.asdict(r) for r in self.layers]

    def to_dataframe(self):
        """The figures as a `pandas.DataFrame`, one row per layer."""
        return _tables.to_dataframe(self.rows(), "OneShotReport")

    def __str__(self):
        pattern = "" if self.structure is None else f" {self.structure[0]}:{self.structure[1]}"
        lines = [
            f"{self.method}{pattern}, {self.samples} calibration samples",
            _tables.format_table(self.rows(), _COLUMNS, first_left=True),
            f"sparsity over the pruned kernels: {self.sparsity:.2%}",
        ]
        lines += [f"skipped {path}: {why}" for path, why in self.skipped.items()]
        return "\n".join(lines)

    def __repr__(self):
        return (
            f"<OneShotReport: {self.method}, {len(self.layers)} layers, "
            f"sparsity {self.sparsity:.2%}>"
        )


class _Statistics:
    """The sums of one layer's input rows that the solvers and the report need."""

    def __init__(self, inputs):
        self.hessian = np.zeros((inputs, inputs))
        self.row_sum = np.zeros(inputs)
        self.rows = 0
        self.finite = True

    def add(self, rows):
        # Checked after the pass (`check`): raised here, inside the layer's
        # call, Keras would wrap the error in its own message.
        self.finite = self.finite and bool(np.all(np.isfinite(rows)))
        self.hessian += rows.T @ rows
        self.row_sum += rows.sum(axis=0)
        self.rows += rows.shape[0]

    def check(self, path):
        if not self.finite:
            raise invalid_argument(
                "data",
                f"calibration inputs that keep every layer's inputs finite; {path} saw NaN or inf",
                "data",
            )


class _Batches:
    """One tensor of the graph, computed for each calibration batch (a list, kept opaque)."""

    def __init__(self, values):
        self.values = values


def _batch(structure, index):
    return keras.tree.map_structure(
        lambda v: v.values[index] if isinstance(v, _Batches) else v, structure
    )


class _Recorder:
    """Replaces the targets' `call` to feed their inputs to `_Statistics`, while open."""

    def __init__(self, targets):
        self.targets = targets
        self.statistics = {id(t.layer): _Statistics(t.inputs) for t in targets}

    def __enter__(self):
        self._own = {}
        for target in self.targets:
            layer = target.layer
            if "call" in vars(layer):
                self._own[id(layer)] = vars(layer)["call"]

            def hook(*args, _target=target, _call=layer.call, **kwargs):
                x = args[0] if args else kwargs["inputs"]
                self.statistics[id(_target.layer)].add(_target.rows(x))
                return _call(*args, **kwargs)

            layer.call = hook
        return self

    def __exit__(self, *exc):
        for target in self.targets:
            layer = target.layer
            if id(layer) in self._own:
                layer.call = self._own[id(layer)]
            else:
                del layer.call


class _OneShot:
    """One pruning run: the targets left, what to do with each, the report's rows."""

    def __init__(self, targets, sparsities, method, structure, damping, block_size, num_samples):
        self.num_samples = num_samples
        self.pending = {id(t.layer): t for t in targets}
        self.sparsities = sparsities
        self.method = method
        self.structure = structure
        self.damping = damping
        self.block_size = block_size
        self.results = []

    def _inside(self, operation):
        layers = [v.layer for v in _model_walk.walk(operation)]
        return [self.pending[id(layer)] for layer in layers if id(layer) in self.pending]

    def run_model(self, model, batches):
        """Runs `model` on the calibration batches, pruning each block on the way."""
        if not _wiring.is_functional(model):
            self.run_block(model, [((x,), {}) for x in batches])
            return
        flat = [_wiring.flat_inputs(model, x) for x in batches]
        inputs = [_Batches([f[i] for f in flat]) for i in range(len(flat[0]))]
        _wiring.run_nodes(model, inputs, self._run_node)

    def _run_node(self, operation, args, kwargs):
        """One node on every batch; `None` (stop) once nothing is left to prune."""
        if not self.pending:
            return None
        count = next(
            len(v.values) for v in keras.tree.flatten((args, kwargs)) if isinstance(v, _Batches)
        )
        inside = self._inside(operation) if isinstance(operation, keras.layers.Layer) else []
        if inside and id(operation) not in self.pending and _wiring.is_functional(operation):
            inner = _wiring.named_inputs(operation, args[0] if args else kwargs["inputs"])
            return _wiring.run_nodes(operation, inner, self._run_node)
        calls = [(_batch(args, b), _batch(kwargs, b)) for b in range(count)]
        if inside:
            outputs = self.run_block(operation, calls)
            if outputs is None:
                return None
        else:
            outputs = [keras.tree.flatten(operation(*a, **k)) for a, k in calls]
        return [_Batches([out[j] for out in outputs]) for j in range(len(outputs[0]))]

    def run_block(self, operation, calls):
        """Prunes the targets inside `operation` from one pass, then computes its outputs."""
        inside = self._inside(operation)
        with _Recorder(inside) as recorder:
            for args, kwargs in calls:
                operation(*args, **kwargs)
        for target in inside:
            recorder.statistics[id(target.layer)].check(target.path)
        for target in inside:
            statistics = recorder.statistics[id(target.layer)]
            if statistics.rows:  # else not called here: left for a later call
                self._prune(target, statistics)
                del self.pending[id(target.layer)]
        if not self.pending:
            return None  # the last block: its outputs are not needed
        return [keras.tree.flatten(operation(*a, **k)) for a, k in calls]

    def _prune(self, target, statistics):
        sparsity = self.sparsities[id(target.layer)]
        dense = target.matrix()
        if self.method == "sparsegpt" and statistics.rows < target.inputs:
            raise invalid_argument(
                "num_samples",
                f"enough calibration rows for the Hessian of {target.path}: at least "
                f"{target.inputs} (its inputs), where {statistics.rows} came from the "
                "samples given; pass more samples",
                self.num_samples,
            )
        if self.method == "magnitude":
            keep = _solvers.magnitude_mask(dense, sparsity, self.structure)
            pruned = np.where(keep, dense, 0.0)
        elif self.method == "wanda":
            norms = np.sqrt(np.diag(statistics.hessian))
            keep = _solvers.wanda_mask(dense, norms, sparsity, self.structure)
            pruned = np.where(keep, dense, 0.0)
        else:
            pruned, keep = _solvers.sparsegpt(
                dense,
                statistics.hessian,
                sparsity,
                self.structure,
                self.damping,
                self.block_size,
                name=target.path,
            )
            pruned = np.where(keep, pruned, 0.0)
        target.assign(pruned)
        written = target.matrix()
        error = None
        if statistics is not None:
            error = _solvers.reconstruction_error(
                dense, written, statistics.hessian, statistics.row_sum, statistics.rows
            )
        self.results.append(
            LayerPruning(
                path=target.path,
                kind=target.kind,
                shape=tuple(int(d) for d in target.kernel.shape),
                asked=sparsity
                if self.structure is None
                else 1 - self.structure[0] / self.structure[1],
                sparsity=float(np.mean(written == 0)),
                error=error,
                rows=0 if statistics is None else statistics.rows,
            )
        )

    def _prune_without_data(self, target):
        self._prune(target, None)
        del self.pending[id(target.layer)]


def _no_gradients():
    """PyTorch records no autograd graph for the calibration passes; other backends need nothing."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def _selected_targets(model, layers, exclude):
    """The targets `layers` and `exclude` choose, and the chosen layers that cannot be one."""
    from kerasreg.apply import _selected

    visits = _model_walk.walk(model)
    chosen = visits if layers is None else _selected(visits, layers, "layers")
    if exclude is not None:
        dropped = {id(v.layer) for v in _selected(visits, exclude, "exclude")}
        chosen = [v for v in chosen if id(v.layer) not in dropped]
    targets, skipped = [], {}
    for visit in chosen:
        if not _targets.is_candidate(visit.layer):
            continue
        target = _targets.target_for(visit.layer, visit.path or visit.layer.name, visit.ancestors)
        if isinstance(target, str):
            skipped[visit.path] = target
        else:
            targets.append(target)
    if not targets:
        selector = "layers" if layers is not None else "model"
        value = layers if layers is not None else model.name
        raise invalid_argument(
            selector,
            "a selection with at least one Dense, EinsumDense or Conv1D/2D/3D layer to prune"
            + (f" (left out: {skipped})" if skipped else ""),
            value,
        )
    return targets, skipped


def _sparsity_of(targets, sparsity, structure, model):
    """`{id(layer): fraction}` for the targets to prune, from a float or a mapping."""
    implied = None
    if structure is not None:
        n, m = structure
        implied = (m - n) / m
        values = list(sparsity.values()) if isinstance(sparsity, dict) else [sparsity]
        for value in values:
            if value is not None and not math.isclose(value, implied, abs_tol=1e-9):
                raise invalid_argument(
                    "sparsity",
                    f"None or (m - n) / m = {implied!r} with structure={structure!r}",
                    sparsity,
                )
    if isinstance(sparsity, dict):
        chosen = _named_sparsities(targets, sparsity, model)
    else:
        value = implied if structure is not None else 0.5 if sparsity is None else sparsity
        chosen = {id(t.layer): value for t in targets}
    if structure is not None:
        chosen = {key: implied for key in chosen}
        for target in targets:
            if id(target.layer) in chosen and target.fastest % structure[1]:
                raise invalid_argument(
                    "structure",
                    f"blocks of m={structure[1]} that divide the input axis of every pruned "
                    "layer (a convolution's input channels, an EinsumDense kernel's last "
                    f"contracted axis); {target.path} has {target.fastest}",
                    structure,
                )
    return chosen


def _named_sparsities(targets, sparsity, model):
    """The targets a mapping names, by kernel path, layer path or layer name."""
    visits = _model_walk.walk(model)[1:]
    known = {v.path for v in model.weights} | {v.path for v in visits}
    known |= {v.layer.name for v in visits}
    unknown = [key for key in sparsity if key not in known]
    if unknown:
        raise invalid_argument(
            "sparsity",
            "a mapping whose keys are layer paths or names, or kernel paths "
            f"(`variable.path`), of the model; {unknown[0]!r} is none of them",
            sparsity,
        )
    chosen = {}
    for target in targets:
        for key in (target.kernel.path, target.path, target.layer.name):
            if key in sparsity:
                chosen[id(target.layer)] = sparsity[key]
                break
    if not chosen:
        raise invalid_argument(
            "sparsity",
            "a mapping that names at least one of the selected layers "
            f"({', '.join(t.path for t in targets[:8])})",
            sparsity,
        )
    return chosen


def _check_optimizer(model, targets):
    """Refuses, before any work, a built `ProximalOptimizer` that cannot take `KeepZeros`."""
    from kerasreg._training import proximal_optimizer_of
    from kerasreg.regularizers import KeepZeros

    optimizer = proximal_optimizer_of(model)
    if optimizer is None or not optimizer.built:
        return
    new = [t for t in targets if not isinstance(getattr(t.kernel, "regularizer", None), KeepZeros)]
    if new:
        raise invalid_argument(
            "keep_pattern",
            "False for a model whose ProximalOptimizer is already built: it cannot add the "
            f"KeepZeros mask of {new[0].path}'s kernel (a prox state). Pass "
            "keep_pattern=False, or compile again with a new ProximalOptimizer after pruning",
            True,
        )


def _keep_pattern(model, targets):
    """Attaches `KeepZeros` to each pruned kernel, through `kerasreg.regularize`."""
    from kerasreg._training import proximal_optimizer_of
    from kerasreg.apply import regularize
    from kerasreg.optimizers.proximal import restart_prox_states
    from kerasreg.regularizers import KeepZeros

    # A frozen kernel trains no more: nothing to hold, and `regularize` skips it.
    targets = [t for t in targets if t.kernel.trainable]
    if not targets:
        return
    pruned = {id(t.kernel) for t in targets}
    replaced = [
        f"{t.path} ({t.kernel.regularizer!r})"
        for t in targets
        if getattr(t.kernel, "regularizer", None) is not None
        and not isinstance(t.kernel.regularizer, KeepZeros)
    ]
    regularize(
        model,
        lambda layer, weight: KeepZeros() if id(weight) in pruned else weight.regularizer,
        layers=list({type(t.layer) for t in targets}),
    )
    optimizer = proximal_optimizer_of(model)
    if optimizer is not None and optimizer.built:
        # Masks built from the weights before this pruning: take the new zeros.
        restart_prox_states(optimizer, [t.kernel for t in targets])
    if replaced:
        warnings.warn(
            "oneshot_prune replaced the kernel regularizers of "
            + ", ".join(replaced)
            + " with KeepZeros; pass keep_pattern=False to keep them.",
            stacklevel=3,
        )


@validate_params(
    {
        "model": InstanceOf(keras.layers.Layer, "a built keras.Model or keras.layers.Layer"),
        "data": AnyOf(CalibrationData(), None),
        "method": Options("sparsegpt", "wanda", "magnitude"),
        "sparsity": AnyOf(Sparsities(), None),
        "structure": AnyOf(Structure(), None),
        "layers": LayerSelector(),
        "exclude": LayerSelector(),
        "num_samples": Integer(1),
        "sequence_length": AnyOf(Integer(1), None),
        "hessian_damping": Interval(0.0, None),
        "block_size": Integer(1),
        "batch_size": Integer(1),
        "keep_pattern": Boolean(),
    }
)
def oneshot_prune(
    model,
    data,
    *,
    method="sparsegpt",
    sparsity=None,
    structure=None,
    layers=None,
    exclude=None,
    num_samples=128,
    sequence_length=None,
    hessian_damping=0.01,
    block_size=128,
    batch_size=32,
    keep_pattern=True,
):
    r"""Prunes a trained model in one shot, layer by layer, from calibration data.

    For a model that cannot be trained again (a pretrained language model,
    above all): each chosen `Dense`, `EinsumDense` (attention and feed-forward
    projections) and `Conv1D`/`Conv2D`/`Conv3D` kernel is pruned so that its
    outputs on the calibration inputs change as little as the method can
    make them, with no gradient and no training step.

    - `"magnitude"`: the smallest :math:`|w|` of each kernel go (one
      threshold per layer). Needs no data (`data=None`); with data, the
      report still measures each layer's error.
    - `"wanda"` (Sun et al. 2023): the weights with the lowest
      :math:`|w_{ij}| \, \lVert X_j \rVert_2` go, compared within each output,
      :math:`X_j` being input feature :math:`j` over the calibration rows. The
      weights kept do not change.
    - `"sparsegpt"` (Frantar and Alistarh 2023): weights go and the rest of
      each output's weights are updated to make up for them, from the inverse
      of the layer's Hessian :math:`X^\top X`, as GPTQ (and Keras'
      `model.quantize("gptq")`) does for quantization. Columns are visited in
      order, `block_size` at a time; :math:`\lambda` = `hessian_damping`
      times the mean diagonal is added to the Hessian first. A Hessian still
      singular gets ten times more damping, with a warning, until it is not.

    **Block by block.** The calibration batches run through the model's
    graph (nested models within) one layer call at a time. A call that holds
    layers to prune is a block: one pass records its layers' inputs, they are
    pruned, and a second pass computes the block's outputs for the next, so
    each block sees the outputs of the blocks already pruned (as SparseGPT and
    Wanda prune transformer blocks) and memory holds the activations of the
    graph's open edges and one block's statistics (an `inputs x inputs`
    float64 matrix per layer); once the last layer is pruned, the run stops.
    A block is one layer call of the graph: a subclassed model, or a layer
    that runs several transformer blocks inside its own call (KerasHub's
    `ViTEncoder`), is one block, pruned from one pass. A layer called more
    than once is pruned at its first call; a layer the model does not call on
    the data, or calls inside a recurrent layer's loop, is left as it was
    (`report.skipped`). Every position of every sample is a row, padding
    positions included.

    **Counting.** The fraction `sparsity` of each kernel's entries goes,
    rounded half up (per output with Wanda, per block of `block_size` columns
    with SparseGPT, per layer with magnitude), in exact zeros. SparseGPT also
    zeroes the weights of an input that is zero on every calibration row
    (they play no part in the outputs it fits), so a kernel can end sparser. With
    `structure=(n, m)`, every `m` consecutive inputs of each output keep
    `n`, as `kerasreg.MagnitudePruning(structure=...)` and
    `kerasreg.sparsity_report(structure=...)` count them (inputs: a `Dense`
    kernel's rows, an `EinsumDense` kernel's contracted axes, a convolution's
    patch of `kernel_size` by input channels, channels fastest; `m` must
    divide the input channels, or the last contracted axis). For `Dense` and
    convolution kernels that is their axis -2, which `sparsity_report`
    checks; an `EinsumDense` kernel's blocks run along its contracted axes
    (axis 0 of an attention layer's query, key and value kernels), the
    reduction that sparse tensor cores need, where `sparsity_report` and
    `MagnitudePruning` read axis -2 of every kernel.

    **Keeping the pattern.** With `keep_pattern=True`, each pruned kernel gets
    `kerasreg.regularizers.KeepZeros()` (also set as its layer's
    `kernel_regularizer`, as `kerasreg.regularize` sets it): compile with
    `kerasreg.ProximalOptimizer` and `fit` to fine-tune, and every zero stays
    zero. The model saves and loads as before: `Dense`, `EinsumDense` and
    convolution layers keep `KeepZeros` in their config (a
    `MultiHeadAttention` when its four projections are pruned), and
    elsewhere (a KerasHub model) the file keeps the zeros without it (see
    `KeepZeros`). `kerasreg.strip` removes it, and `kerasreg.compact`
    removes what the zeros make removable.

    If anything fails on the way, every kernel is set back as it was.

    Args:
        model: A built `keras.Model` (or layer), trained.
        data: The calibration inputs: an array, a dict or list of arrays
            (the model's inputs, rows on the first axis), a 1-D array of
            token ids (cut into `num_samples` windows of `sequence_length`,
            spread evenly), strings (for a KerasHub task with a
            `preprocessor`), or an iterable of batches (`tf.data.Dataset`, a
            generator, a `keras.utils.PyDataset`) that yields batches `x` or
            `(x, y[, sample_weight])`; a tuple of arrays is read as
            `(x, y[, sample_weight])` too (a list is several inputs).
            Token ids given as an array to a model that takes `token_ids`
            and `padding_mask` get a mask of ones. `None` with `method="magnitude"` only.
        method: `"sparsegpt"`, `"wanda"` or `"magnitude"`. Defaults to
            `"sparsegpt"`.
        sparsity: Float in [0, 1), the fraction of each kernel's entries to
            zero; or a dict from layer paths, layer names or kernel paths
            (`variable.path`, as `kerasreg.allocate_sparsity` returns them) to
            fractions, which prunes the selected layers it names (keys of the
            model's other weights are ignored). With `structure`, `None` or
            :math:`(m - n) / m`. Defaults to `None`: 0.5, or
            :math:`(m - n) / m` with a `structure`.
        structure: `(n, m)` for N:M sparsity along the input axis (2:4 for
            sparse tensor cores), or `None`. Defaults to `None`.
        layers: Which layers, as `kerasreg.regularize` chooses them (classes,
            names, `"/"`-paths); `None` for every `Dense`, `EinsumDense` and
            convolution (a classifier's last layer included: leave it out
            with `exclude`). Grouped convolutions, quantized layers and
            layers with LoRA are left as they are (`report.skipped`).
            Defaults to `None`.
        exclude: Layers to leave out, chosen as `layers`. Defaults to `None`.
        num_samples: Int >= 1, the calibration samples used at most.
            Defaults to `128`.
        sequence_length: Int or `None`: the window cut from a stream of token
            ids; longer rows of token ids are cut to it. Defaults to `None`.
        hessian_damping: Non-negative float, SparseGPT's :math:`\lambda`.
            Defaults to `0.01`.
        block_size: Int >= 1, SparseGPT's columns per lazy update (a
            multiple of `m` with a structure). Defaults to `128`.
        batch_size: Int >= 1, samples per forward pass for in-memory data.
            Defaults to `32`.
        keep_pattern: Bool, whether to attach `KeepZeros` (see above).
            Defaults to `True`.

    Returns:
        A `kerasreg.oneshot.OneShotReport`: per layer, the sparsity reached
        and the relative error of its outputs on the calibration data.

    Raises:
        InvalidArgumentError: If an argument is invalid; a selector picks no
            layer to prune; `sparsity` and `structure` contradict, `m` does
            not divide a layer's inputs, or a mapping names nothing in the
            model; `data` cannot be read, is `None` with a method that needs
            it, gives no row, or makes a layer's inputs NaN; with SparseGPT, a
            layer sees fewer calibration rows than it has inputs (the message
            says how many it needs).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import kerasreg
    >>> x = np.random.default_rng(0).normal(size=(256, 16)).astype("float32")
    >>> model = keras.Sequential([
    ...     keras.Input((16,)),
    ...     keras.layers.Dense(32, activation="relu", name="hidden"),
    ...     keras.layers.Dense(4, name="out"),
    ... ])
    >>> report = kerasreg.oneshot_prune(model, x, sparsity=0.5, exclude=["out"])
    >>> report["hidden"].sparsity
    0.5
    >>> float(np.mean(model.get_layer("hidden").kernel.numpy() == 0))
    0.5
    >>> report = kerasreg.oneshot_prune(model, x, method="wanda", structure=(2, 4))
    >>> kerasreg.sparsity_report(model, structure=(2, 4))["out/kernel"].structure_holds
    True
    """
    if not model.built:
        raise invalid_argument(
            "model", "a built model: build it or call it once on data first", model
        )
    if data is None and method != "magnitude":
        raise invalid_argument("data", f"calibration inputs for method={method!r}", None)
    targets, skipped = _selected_targets(model, layers, exclude)
    sparsities = _sparsity_of(targets, sparsity, structure, model)
    targets = [t for t in targets if id(t.layer) in sparsities]
    if keep_pattern:
        _check_optimizer(model, targets)
    saved = [(t.kernel, keras.ops.convert_to_numpy(t.kernel)) for t in targets]
    run = _OneShot(targets, sparsities, method, structure, hessian_damping, block_size, num_samples)
    try:
        if data is None:
            for target in targets:
                run._prune_without_data(target)
            samples = 0
        else:
            batches = _data.calibration_batches(
                model, data, num_samples, sequence_length, batch_size
            )
            samples = sum(_data._rows(b) for b in batches)
            with _no_gradients():
                run.run_model(model, batches)
            if not run.results:
                raise invalid_argument(
                    "data",
                    "calibration inputs on which the model calls the layers to prune; none "
                    "of them was called",
                    "data",
                )
            for target in run.pending.values():
                skipped[target.path] = "not called when the model ran on the calibration data"
        if keep_pattern:
            _keep_pattern(model, [t for t in targets if id(t.layer) not in run.pending])
    except BaseException:
        for variable, value in saved:
            variable.assign(value)
        raise
    return OneShotReport(run.results, method, structure, samples, skipped)
