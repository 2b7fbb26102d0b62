"""`regularize`: attach a regularizer to chosen weights of a built model.

Keras reads a weight's penalty from `variable.regularizer` (it sums them
into `model.losses`), `ProximalOptimizer` reads the same attribute when it is
built, and a `.keras` file keeps what the layers' configs hold
(`kernel_regularizer`, `depthwise_regularizer`, ...). `regularize` sets all
of these, and refuses to let a model be saved without a penalty it carries.
"""

import copy
import math

import keras

from kerasreg import _graph
from kerasreg import _model_walk
from kerasreg import _save_guard
from kerasreg import cost as cost_lib
from kerasreg import dependency as dependency_lib
from kerasreg import regularizers as regularizers_lib
from kerasreg._save_guard import serialized
from kerasreg._training import proximal_optimizer_of
from kerasreg._validation import AnyOf
from kerasreg._validation import InstanceOf
from kerasreg._validation import LayerSelector
from kerasreg._validation import Options
from kerasreg._validation import RegularizerChoice
from kerasreg._validation import WeightNames
from kerasreg._validation import invalid_argument
from kerasreg._validation import validate_params

__all__ = ["regularize"]


# The config arguments that may hold a weight's regularizer, by weight name,
# tried in order; any other weight `w` has `w_regularizer`. A layer whose
# config holds none of them keeps the penalty only in memory.
_CONFIG_ARGUMENTS = {
    "kernel": ("kernel_regularizer", "depthwise_regularizer"),  # DepthwiseConv*D: "kernel"
    "depthwise_kernel": ("depthwise_regularizer",),
    "pointwise_kernel": ("pointwise_regularizer",),
    "recurrent_kernel": ("recurrent_regularizer",),
}


def _config_arguments(weight):
    return _CONFIG_ARGUMENTS.get(weight, (f"{weight}_regularizer",))


def _sync_projections(layer, projections):
    """Gives a container its projections' regularizers when they agree.

    `MultiHeadAttention`'s config has one `kernel_regularizer` (and one
    `bias_regularizer`) for its four projections, kept in Keras' private
    `_kernel_regularizer` (`tests/test_apply.py` checks that the config
    follows it); its rule in `kerasreg._graph` names the projections.
    """
    for weight, attribute in (("kernel", "_kernel_regularizer"), ("bias", "_bias_regularizer")):
        chosen = [getattr(p, f"{weight}_regularizer", None) for p in projections]
        configs = [serialized(r) for r in chosen]
        if projections and all(c == configs[0] for c in configs):
            setattr(layer, attribute, _copy(chosen[0]))


def _copy(regularizer):
    """A regularizer of its own for one weight, equal to `regularizer`."""
    if regularizer is None:
        return None
    try:
        return type(regularizer).from_config(regularizer.get_config())
    except NotImplementedError:
        return copy.deepcopy(regularizer)


def _layer_matches(visit, selector):
    """Whether `selector` (a class, a name or a path) picks the layer or one above it."""
    chain = visit.ancestors[1:] + (visit.layer,)
    if isinstance(selector, str):
        return f"/{selector}/" in f"/{visit.path}/"
    return any(isinstance(layer, selector) for layer in chain)


def _selected(visits, selectors, argument):
    """The visits picked by `selectors`; each selector must pick a layer."""
    layers = visits[1:]
    for selector in selectors:
        if not any(_layer_matches(visit, selector) for visit in layers):
            known = ", ".join(repr(visit.path) for visit in layers[:12])
            what = selector.__name__ if isinstance(selector, type) else repr(selector)
            raise invalid_argument(
                argument,
                f"layer classes, names or paths of the model's layers; {what} matches no "
                f"layer (layers: {known}{', ...' if len(layers) > 12 else ''})",
                list(selectors),
            )
    return [v for v in layers if any(_layer_matches(v, s) for s in selectors)]


def _own_weight(layer, name):
    for variable in _model_walk.own_variables(layer):
        if variable.name == name:
            return variable
    return None


def _targets(visits, layers, weights, exclude):
    """`(visit, weight name, variable)` for each chosen trainable weight, once each."""
    chosen = visits if layers is None else _selected(visits, layers, "layers")
    if exclude is not None:
        dropped = {id(v.layer) for v in _selected(visits, exclude, "exclude")}
        chosen = [v for v in chosen if id(v.layer) not in dropped]
    targets, seen, found = [], set(), set()
    for visit in chosen:
        for name in weights:
            variable = _own_weight(visit.layer, name)
            if variable is None or not variable.trainable or id(variable) in seen:
                continue
            seen.add(id(variable))
            found.add(name)
            targets.append((visit, name, variable))
    missing = [name for name in weights if name not in found]
    if missing:
        names = sorted(
            {
                v.name
                for visit in chosen
                for v in _model_walk.own_variables(visit.layer)
                if v.trainable
            }
        )
        raise invalid_argument(
            "weights",
            f"names of trainable weights of the selected layers; none has {missing[0]!r} "
            f"(they have: {', '.join(names) or 'no trainable weights'})",
            weights if len(weights) > 1 else weights[0],
        )
    return targets


def _regularizer_for(regularizer, visit, variable):
    """The regularizer one weight gets: a copy of an instance, a chooser's answer."""
    if regularizer is None or isinstance(regularizer, keras.regularizers.Regularizer):
        return _copy(regularizer)
    chosen = regularizer(visit.layer, variable)
    choice = RegularizerChoice(regularizers_lib.get)
    if isinstance(chosen, str) and choice.value_ok(chosen):
        return choice.normalize(chosen)
    if chosen is None or isinstance(chosen, keras.regularizers.Regularizer):
        return chosen
    raise invalid_argument(
        "regularizer",
        "a callable that returns a regularizer instance, a regularizer name or None; "
        f"it returned {chosen!r} for {visit.path or visit.layer.name}/{variable.name}",
        regularizer,
    )


def _attach(visit, name, variable, regularizer):
    """Sets the weight's regularizer and the layer argument its config saves."""
    variable.regularizer = regularizer
    layer = visit.layer
    for argument in _config_arguments(name):
        if hasattr(layer, argument):
            try:
                setattr(layer, argument, regularizer)
            except AttributeError:  # a read-only property
                continue
            return


def _built_proximal_optimizer(model, changes):
    """The model's built `ProximalOptimizer`, checked to take `changes`, or `None`."""
    optimizer = proximal_optimizer_of(model)
    if optimizer is None or not optimizer.built:
        return None
    try:
        optimizer._check_new_regularizers(changes)
    except ValueError as error:
        raise invalid_argument(
            "model", f"a model whose ProximalOptimizer can take the new penalties: {error}", model
        ) from None
    return optimizer


@validate_params(
    {
        "model": InstanceOf(keras.layers.Layer, "a built keras.Model or keras.layers.Layer"),
        "regularizer": RegularizerChoice(regularizers_lib.get),
        "layers": LayerSelector(),
        "weights": WeightNames(),
        "exclude": LayerSelector(),
        "groups": AnyOf(Options("dependency"), None),
        "cost": AnyOf(Options("macs", "params"), None),
    }
)
def regularize(
    model, regularizer, *, layers=None, weights="kernel", exclude=None, groups=None, cost=None
):
    """Attaches a regularizer to chosen weights of a built model, in place.

    The penalties count in `model.losses` (so in the loss `fit` minimizes),
    a `ProximalOptimizer` compiled afterwards applies their proximal
    operators, and a `.keras` file keeps them: the regularizer is set on the
    weight (`variable.regularizer`, which Keras and `ProximalOptimizer`
    read) and on the layer argument its config saves (`kernel_regularizer`,
    `depthwise_regularizer`, `recurrent_regularizer`, ...; for
    `MultiHeadAttention`, its one `kernel_regularizer` when the four
    projections get equal ones). Predictions do not change.

    The walk reaches every layer once: Sequential, functional and subclassed
    models, nested models, shared layers, wrappers, the cells of `LSTM` and
    `GRU`, the projections of `MultiHeadAttention` and layers inside users'
    own layers. Non-trainable weights (frozen layers, normalization
    statistics) are skipped: Keras counts no penalty on them.

    **Copies.** Each weight gets its own copy of a regularizer instance
    (`from_config(get_config())`), as a model loaded from a file has. A
    callable `regularizer(layer, weight)` decides per weight, and its answer
    is used as returned: return one instance for several weights to share
    it on purpose.

    **Saving.** Where no saved config can hold a penalty (a weight of a
    user's layer without a `<weight>_regularizer` argument, layers built by
    the code of a subclassed model), the model keeps the penalty in memory
    and refuses to be saved or cloned, with a `ValueError` naming those
    weights, rather than writing a file that loads without them: `save`,
    `keras.saving.save_model` and `ModelCheckpoint` refuse before they open
    the file (one already at that path stays as it was), and `get_config`,
    `to_json` and `clone_model` refuse too. `save_weights` saves as always.

    **Coupled channels.** With `groups="dependency"`, `regularizer` is a
    `GroupLasso` (only its `strength` is used) and the groups are the
    removable groups of `kerasreg.dependency_groups(model)`: one penalty,
    `kerasreg.CoupledGroupLasso`, puts one norm on each channel over every
    weight that writes it (kernel columns and biases of each producer, in
    every branch of a residual stream; the query, key and value slices of an
    attention head) or carries it (`BatchNormalization`'s scale and shift,
    depthwise kernels, `FeatureGate` gates), when trainable. The kernel rows
    that read a channel are left out on purpose: a kernel's rows belong to
    its input channel's group and its columns to its output channel's, so
    penalizing both would make overlapping groups, whose prox has no closed
    form. Once a channel's writers and carriers are zero, the channel is zero,
    its readers' rows multiply zeros, and `kerasreg.compact` removes the
    channel with them. Each channel's norm is weighted by the square root
    of its number of entries, as `GroupLasso` does: a channel of 9 entries
    and one of 900 face thresholds in proportion to 3 and 30, the same
    pressure per entry. With `cost="macs"` (or `"params"`), the weight is
    the square root of what a channel costs instead (`kerasreg.model_cost`:
    its MACs count each entry once per position it is applied at), scaled
    so that the weights' mean square stays that of the entry counts: the
    penalty leans on a full-resolution stem's channels more than on a last
    stage's, and removes compute first. A group is taken
    when `layers` selects one of the layers that write it (`None`: all) and
    `exclude` none of its layers; `weights` must be left at its default.
    `regularizer=None` removes the coupled penalties from those groups'
    weights. The new penalty replaces the previous regularizers of its
    weights, and a coupled penalty that shared a weight with it is removed
    from all its weights (as it is when `regularize` without `groups` gives
    one of its weights another regularizer). No config can hold it (the
    layers' arguments, such as `kernel_regularizer`, are set to `None`): such a model refuses to be
    saved to `.keras` or cloned. Save the weights with `save_weights` and
    call `regularize` again on the rebuilt model, remove the penalty first,
    or save `kerasreg.strip(model)`, a copy without it.

    **Pruning to a cost.** With `groups="dependency"`, `regularizer` may be
    a `kerasreg.ChannelPruning`: the same groups (readers included where a
    zero channel stays zero) are pruned, on a schedule, until the model
    costs the fraction of its MACs or parameters asked for (see its
    docstring). Like `MagnitudePruning`'s, its masks are a prox state.

    **Compiled and trained models.** Compiled train and test functions are
    reset, so the next `fit` or `evaluate` counts the new penalties. A
    `ProximalOptimizer` that is already built (it has trained) takes the new
    regularizers' proximal operators, its state kept; only a prox with a
    state of its own (`MagnitudePruning`), made when the optimizer is
    built, cannot be added or removed then: compile again with a new
    `ProximalOptimizer`.

    Args:
        model: A built `keras.Model` (or layer). Build it, or call it once on
            data, first.
        regularizer: A regularizer instance (kerasreg's or Keras' own), a
            name (`"l1"`, `"group_lasso"`, ...: `kerasreg.regularizers.get`
            resolves it), `None` to remove the penalty, or a callable
            `(layer, weight) -> regularizer or None`.
        layers: Which layers: `None` for every layer that has one of
            `weights`; a layer class or a tuple of them; or a list of layer
            classes, layer names and `"/"`-separated paths (`"encoder"` picks
            every layer inside the nested model `encoder`, `"encoder/dense"`
            one layer in it; names match whole, `"dense"` does not pick
            `"dense_1"`). A class picks the layers inside an instance too:
            `keras.layers.MultiHeadAttention` picks its projections.
            Defaults to `None`.
        weights: The weight name, or a tuple of names, as the layer names
            its variables: `"kernel"` (also `DepthwiseConv2D`'s), `"bias"`,
            `"depthwise_kernel"` and `"pointwise_kernel"` (`SeparableConv*D`),
            `"recurrent_kernel"` (`LSTM`, `GRU`), `"embeddings"`, `"gamma"`
            and `"beta"` (normalization layers), or a user's
            `add_weight(name=...)`. Defaults to `"kernel"`.
        exclude: Layers to leave out, chosen as `layers` chooses them.
            Defaults to `None`.
        groups: `None` for one penalty per weight, or `"dependency"` for one
            group lasso over the coupled channels of the model (see above).
            Defaults to `None`.
        cost: With `groups="dependency"` and a `GroupLasso`: `None`, or
            `"macs"` or `"params"` to weight each group by what a channel
            costs (see above). Defaults to `None`.

    Returns:
        `model`, regularized.

    Raises:
        InvalidArgumentError: If an argument is invalid, the model is not
            built, a selector picks no layer, no selected layer has a named
            trainable weight, a callable returns no regularizer, or the
            model's built `ProximalOptimizer` would have to add or remove a
            prox with a state; with `groups="dependency"`, if `regularizer`
            is not a `GroupLasso`, a `ChannelPruning` or `None`, `weights`
            is given, or the model has no removable group of coupled
            channels; if `cost` is given without `groups="dependency"` and
            a `GroupLasso`, or a `ChannelPruning` without `groups`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import kerasreg
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(3, name="hidden"),
    ...     keras.layers.Dense(1, name="out"),
    ... ])
    >>> model = kerasreg.regularize(model, kerasreg.L1(0.01), layers=["hidden"])
    >>> model.get_layer("hidden").kernel_regularizer
    L1(l1=0.01)
    >>> len(model.losses)
    1
    >>> kerasreg.regularize(model, None).get_layer("hidden").kernel_regularizer is None
    True
    """
    if not model.built:
        raise invalid_argument(
            "model",
            "a built model: build it (`model.build(input_shape)`, or an `Input` first in a "
            "Sequential) or call it once on data before `regularize`",
            model,
        )
    if groups is not None:
        return _regularize_coupled(model, regularizer, layers, weights, exclude, cost)
    if cost is not None:
        raise invalid_argument("cost", 'None without groups="dependency"', cost)
    if isinstance(regularizer, regularizers_lib.ChannelPruning):
        raise invalid_argument(
            "groups",
            '"dependency" with kerasreg.ChannelPruning, which prunes coupled channels',
            groups,
        )
    visits = _model_walk.walk(model)
    changed = []
    for visit, name, variable in _targets(visits, layers, weights, exclude):
        new = _regularizer_for(regularizer, visit, variable)
        previous = serialized(variable.regularizer)
        if previous != serialized(new):
            changed.append(((visit, name, variable), previous, new))
    changed += _released(visits, [variable for (_, _, variable), _, _ in changed])
    if not changed:
        return model
    optimizer = _built_proximal_optimizer(
        model, [(variable, reg) for (_, _, variable), _, reg in changed]
    )
    for (visit, name, variable), _, new in changed:
        _attach(visit, name, variable, new)
    touched = {id(a) for (visit, _, _), _, _ in changed for a in visit.ancestors}
    for visit in visits:
        rule = _graph.layer_rule(visit.layer) if id(visit.layer) in touched else None
        if rule is not None and rule.projections is not None:
            _sync_projections(visit.layer, rule.projections(visit.layer))
    _save_guard.record(
        model,
        visits,
        [(target, previous) for target, previous, _ in changed],
        _config_arguments,
    )
    if optimizer is not None:
        optimizer._reread_regularizers([variable for (_, _, variable), _, _ in changed])
    _reset_compiled(model)
    return model


def _reset_compiled(model):
    """Drops compiled train and test functions, so the next call counts the new penalties."""
    for attribute in ("train_function", "test_function"):
        if getattr(model, attribute, None) is not None:
            setattr(model, attribute, None)


def _joint_of(variable):
    return getattr(getattr(variable, "regularizer", None), "joint", None)


def _where(visits):
    """`{id(variable): (visit, weight name, variable)}` over the walk."""
    where = {}
    for visit in visits:
        for variable in _model_walk.own_variables(visit.layer):
            where.setdefault(id(variable), (visit, variable.name, variable))
    return where


def _released(visits, variables):
    """`(target, previous, None)` for the other weights of the coupled penalties of `variables`.

    A coupled penalty whose weight gets another regularizer goes from all
    its weights: what is left of it would still count the weight.
    """
    chosen = {id(variable) for variable in variables}
    where = _where(visits)
    released = {}
    for variable in variables:
        joint = _joint_of(variable)
        for other in joint.variables if joint is not None else ():
            if id(other) not in chosen and id(other) in where:
                released[id(other)] = (where[id(other)], serialized(other.regularizer), None)
    return list(released.values())


def _coupled_groups(model, visits, layers, exclude):
    """The removable dependency groups that `layers` and `exclude` select."""
    selected = None if layers is None else {v.path for v in _selected(visits, layers, "layers")}
    excluded = set() if exclude is None else {v.path for v in _selected(visits, exclude, "exclude")}
    chosen = []
    for group in dependency_lib.dependency_groups(model):
        paths = {member.layer for member in group.members}
        writers = {m.layer for m in group.members if m.role == dependency_lib.WRITES}
        if not group.removable or paths & excluded:
            continue
        if selected is None or writers & selected:
            chosen.append(group)
    return chosen


def _set_shares(model, visits, where, variables, shares):
    """Sets the regularizer of `variables` to their share (`shares`: `id` -> share,
    none for a variable without), releasing any coupled penalty they had, from all
    its variables."""
    released = [
        other
        for variable in variables
        if _joint_of(variable) is not None
        for other in _joint_of(variable).variables
    ]
    targets = list({id(v): v for v in variables + released if id(v) in where}.values())
    changes = [(variable, shares.get(id(variable))) for variable in targets]
    optimizer = _built_proximal_optimizer(model, changes)
    changed = []
    for variable, regularizer_of in changes:
        visit, name, _ = where[id(variable)]
        previous = serialized(variable.regularizer)
        # No config holds a coupled penalty: the layer's argument says none.
        _attach(visit, name, variable, None)
        variable.regularizer = regularizer_of
        changed.append(((visit, name, variable), previous))
    _save_guard.record(model, visits, changed, _config_arguments)
    if optimizer is not None:
        optimizer._reread_regularizers([variable for variable, _ in changes])
    _reset_compiled(model)
    return model


def _positions_in(costs, groups):
    """The index in `costs.groups` of each of `groups` (from an analysis of their own)."""
    by_members = {
        tuple((id(m.variable), m.axis, m.role) for m in cost.group.members): i
        for i, cost in enumerate(costs.groups)
    }
    return [
        by_members.get(tuple((id(m.variable), m.axis, m.role) for m in group.members))
        for group in groups
    ]


def _cost_scales(model, chosen, penalized, cost):
    """Each group's factor: the square root of its cost per channel, scaled so that
    their mean square is that of the default factors, `sqrt(n_g)`."""
    costs = cost_lib.cost_for(model, "cost", cost)
    per_channel = [getattr(costs.groups[i], cost) for i in _positions_in(costs, chosen)]
    sizes = [
        sum(math.prod(v.shape) // int(v.shape[axis]) * indices.shape[1] for v, axis, indices in m)
        for m in penalized
    ]
    ratio = sum(sizes) / sum(per_channel)
    return [math.sqrt(c * ratio) for c in per_channel]


def _prune_channels(model, request, visits, where, chosen):
    """`regularize(model, ChannelPruning(...), groups="dependency")`."""
    costs = cost_lib.model_cost(model, input_shape=request.input_shape)
    positions = _positions_in(costs, chosen)
    pairs = [(g, p) for g, p in zip(chosen, positions, strict=True) if p is not None]
    if not pairs or not any(
        m.variable.trainable and id(m.variable) in where for g, _ in pairs for m in g.members
    ):
        raise invalid_argument(
            "model",
            "a model with a removable group of coupled channels with trainable weights "
            "(see `kerasreg.dependency_groups`)",
            model,
        )
    joint = request.masks_for(costs, [g for g, _ in pairs], [p for _, p in pairs])
    variables = [v for v in joint.variables if id(v) in where]
    return _set_shares(model, visits, where, variables, {id(v): joint.share(v) for v in variables})


def _regularize_coupled(model, regularizer, layers, weights, exclude, cost):
    """`regularize(..., groups="dependency")`: see its docstring."""
    pruning = isinstance(regularizer, regularizers_lib.ChannelPruning)
    if cost is not None and not isinstance(regularizer, regularizers_lib.GroupLasso):
        raise invalid_argument(
            "cost",
            "None unless `regularizer` is a kerasreg.GroupLasso (ChannelPruning takes its own)",
            cost,
        )
    if regularizer is not None and not (
        pruning or isinstance(regularizer, regularizers_lib.GroupLasso)
    ):
        raise invalid_argument(
            "regularizer",
            "a kerasreg.GroupLasso (whose strength is used), a kerasreg.ChannelPruning or None "
            'with groups="dependency"',
            regularizer,
        )
    if weights != ("kernel",):
        raise invalid_argument(
            "weights",
            'the default with groups="dependency", where the groups choose the weights',
            weights if len(weights) > 1 else weights[0],
        )
    visits = _model_walk.walk(model)
    where = _where(visits)
    chosen = _coupled_groups(model, visits, layers, exclude)
    if pruning:
        return _prune_channels(model, regularizer, visits, where, chosen)
    penalized = [
        [
            (member.variable, member.axis, member.indices)
            for member in group.members
            if member.role in (dependency_lib.WRITES, dependency_lib.CARRIES)
            and member.variable.trainable
            and id(member.variable) in where
        ]
        for group in chosen
    ]
    chosen = [group for group, members in zip(chosen, penalized, strict=True) if members]
    penalized = [members for members in penalized if members]
    if not penalized:
        raise invalid_argument(
            "model",
            "a model with a removable group of coupled channels with trainable weights "
            "(see `kerasreg.dependency_groups`)"
            + ("" if layers is None and exclude is None else " among the selected layers"),
            model,
        )
    variables = [variable for members in penalized for variable, _, _ in members]
    shares = {}
    if regularizer is not None:
        scales = None if cost is None else _cost_scales(model, chosen, penalized, cost)
        penalty = regularizers_lib.CoupledGroupLasso(regularizer.strength, penalized, scales)
        shares = {id(variable): penalty.share(variable) for variable in penalty.variables}
    else:
        variables = [v for v in variables if _joint_of(v) is not None]
    return _set_shares(model, visits, where, variables, shares)
