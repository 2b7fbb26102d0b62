"""What `compact` removes: one decision per coupled channel, to a fixed point.

Every channel of a `DependencyGroup` is dropped, folded, merged or kept:

- **drop**: every weight that reads it (on the outputs that stay) is zero,
  or it is zero where it is read;
- **fold**: it is constant where it is read (`dependency` follows constants
  through biases, normalizations with their moving statistics,
  activations, pooling, residual adds, concatenations and gates): its
  contribution goes into each reader's bias;
- **merge**: a reader pads (`"same"`), so a constant is not a bias there;
  the constant channels of one group become one, whose kernel slice is
  their weighted sum;
- **keep**: with a reason, for the summary.

Dropping a channel removes its readers' and writers' slices, which can free
the channels those read: decisions repeat until nothing changes. `plan`
returns the `Plan`; `_rebuild` makes the smaller model from it.
"""

import dataclasses

import numpy as np
from keras import ops

from kerasreg import _graph
from kerasreg.dependency import CARRIES
from kerasreg.dependency import MODEL_INPUT
from kerasreg.dependency import MODEL_OUTPUT
from kerasreg.dependency import READS
from kerasreg.dependency import WRITES
from kerasreg.dependency import analyse

__all__ = ["Plan", "plan"]


@dataclasses.dataclass
class Plan:
    """What `compact` decided, before anything is rebuilt.

    Attributes:
        removed: `{(id(variable), axis): bool mask}`, the entries that go.
        values: `{id(variable): float64 array}`, the new values (bias
            changes and merged kernel slices) of the variables that changed,
            before the entries in `removed` are taken out.
        bias_added: `{id(layer): [bias, kernel, out_axis]}` for layers that
            had no bias and need one for folded constants (`kernel` and
            `out_axis` say which of its entries stay).
        inputs: `{id(input tensor): kept feature indices}` of the model's
            inputs that lose features (a `SelectFeatures` reads them).
        notes: `(layer name, reason)` for the zero weights it kept.
    """

    removed: dict
    values: dict
    bias_added: dict
    inputs: dict
    notes: list


def _numpy(variable):
    return np.asarray(ops.convert_to_numpy(variable.value), dtype="float64")


class _Weights:
    """Working copies of the variables, with the entries removed so far."""

    def __init__(self):
        self.values = {}
        self.removed = {}
        self.changed = set()

    def value(self, variable):
        if id(variable) not in self.values:
            self.values[id(variable)] = _numpy(variable)
        return self.values[id(variable)]

    def mask(self, variable, axis):
        key = (id(variable), axis)
        if key not in self.removed:
            self.removed[key] = np.zeros(variable.shape[axis], bool)
        return self.removed[key]

    def remove(self, variable, axis, indices):
        self.mask(variable, axis)[indices] = True

    def live(self, variable, axis, everywhere=False):
        """Per index along `axis`: whether an entry on the entries that stay is non-zero.

        With `everywhere`, on all entries, those removed too.
        """
        value = self.value(variable)
        for other in range(0 if everywhere else value.ndim):
            key = (id(variable), other)
            if other != axis and key in self.removed and self.removed[key].any():
                value = np.compress(~self.removed[key], value, axis=other)
        value = np.moveaxis(value != 0, axis, 0)
        return value.reshape(value.shape[0], -1).any(axis=1)


def _statistic(member):
    """Whether `member` is a moving statistic, which says nothing of the channel's value."""
    return member.variable.path.split("/")[-1] in ("moving_mean", "moving_variance")


class _Group:
    """One `DependencyGroup` with what the engine needs to decide on its channels."""

    def __init__(self, group, roots, reasons, sites, inexact=()):
        self.group = group
        self.roots = roots
        self.kept = np.ones(group.channels, bool)
        self.readers = [m for m in group.members if m.role == READS]
        self.own = [m for m in group.members if m.role in (WRITES, CARRIES) and not _statistic(m)]
        all_reasons = set()
        for root in roots:
            all_reasons |= reasons.get(root, set())
        self.pinned = all_reasons - {MODEL_INPUT}
        # Held only by normalizations that `compact(exact=False)` cuts through.
        self.inexact = bool(self.pinned) and self.pinned <= set(inexact)
        self.at_input = MODEL_INPUT in all_reasons
        self.merged = False
        self.kept_one = False
        # For each reader member: (its site, the constants per kernel row) or None.
        self.sites = [sites.get(id(m.variable)) for m in self.readers]


def _site_constants(sites):
    """`{id(variable): (site, constants per rows index)}` for each reading variable.

    A layer called more than once reads constants only where every call
    reads the same.
    """
    by_variable = {}
    for site in sites:
        constants = np.asarray(site.constants, dtype="float64")
        if constants.shape != (site.width,):
            constants = np.full(site.width, np.nan)
        variables = [site.compute.kernel] + [v for v, _ in site.compute.reads]
        for variable in variables:
            previous = by_variable.get(id(variable))
            if previous is not None:
                same = np.isclose(previous[1], constants, rtol=0, atol=0) | (
                    np.isnan(previous[1]) & np.isnan(constants)
                )
                constants = np.where(same, constants, np.nan)
                # Padding met in one call is met.
                site = dataclasses.replace(site, pads=site.pads or previous[0].pads)
            by_variable[id(variable)] = (site, constants)
    return by_variable


def _reader_state(weights, group, index, member, channels):
    """Per channel in `channels`: `"zero"`, `"fold"`, `"pads"` or `"varies"` at one reader."""
    live = weights.live(member.variable, member.axis)[member.indices[channels]].any(axis=1)
    site = group.sites[index]
    states = np.where(live, "varies", "zero").astype(object)
    if site is None:
        return states, None
    site, constants = site
    values = constants[member.indices[channels]]  # (channels, k)
    known = ~np.isnan(values).any(axis=1)
    fold_ok = site.compute.fold is not None or ~np.any(values != 0, axis=1)
    padded = site.pads & np.any(values != 0, axis=1)
    states = np.where(live & known & fold_ok & ~padded, "fold", states)
    states = np.where(live & known & padded, "pads", states)
    return states, site


def _decide(weights, group):
    """Channels of `group` that can go now, and those that only padding holds back."""
    channels = np.flatnonzero(group.kept)
    if channels.size == 0:
        return channels, channels
    ok = np.ones(channels.size, bool)
    padded = np.zeros(channels.size, bool)
    for index, member in enumerate(group.readers):
        states, _ = _reader_state(weights, group, index, member, channels)
        ok &= (states == "zero") | (states == "fold") | (states == "pads")
        padded |= states == "pads"
    # Zero writers and carriers, on every row (a removed row may have been
    # folded into a bias): the channel is zero where it is read. Only where
    # writers make it: a model input's channel has none.
    silent = np.zeros(channels.size, bool)
    writes = any(m.role == WRITES for m in group.own)
    if group.group.zeros_propagate and writes and not group.at_input:
        silent = _zero_everywhere(weights, group.own, channels)
    if group.inexact:
        # The channel carries nothing of the inputs into the normalization:
        # its writers' kernels are zero (biases and constants aside).
        writers = [m for m in group.own if m.role == WRITES and "kernel" in m.variable.name]
        if writers:
            silent |= _zero_everywhere(weights, writers, channels)
    go = (ok & ~padded) | silent
    return channels[go], channels[ok & padded & ~silent]


def _zero_everywhere(weights, members, channels):
    """Per channel: whether every entry of `members` is zero, removed rows included."""
    zero = np.ones(channels.size, bool)
    for member in members:
        live = weights.live(member.variable, member.axis, everywhere=True)
        zero &= ~live[member.indices[channels]].any(axis=1)
    return zero


def _remove(weights, group, channels):
    group.kept[channels] = False
    for member in group.group.members:
        weights.remove(member.variable, member.axis, member.indices[channels].ravel())


def _merge(weights, group, stuck):
    """Merges the constant channels `stuck` that padded readers read into one.

    Returns the channels that can go, or an empty array when no channel is
    a constant other than zero at every padded reader.
    """
    per_reader = []
    for index, member in enumerate(group.readers):
        states, site = _reader_state(weights, group, index, member, stuck)
        if site is not None and np.any(states == "pads"):
            if id(member.variable) != id(site.compute.kernel) or site.compute.reads:
                # A separable convolution filters each channel by its own
                # depthwise kernel first: no one channel stands for several.
                return stuck[:0]
            per_reader.append((member, group.sites[index][1]))
    if not per_reader:
        return stuck[:0]
    anchors = np.ones(stuck.size, bool)
    for member, constants in per_reader:
        if member.indices.shape[1] != 1:
            return stuck[:0]
        value = constants[member.indices[stuck, 0]]
        anchors &= ~np.isnan(value) & (value != 0)
    if not anchors.any() or stuck.size < 2:
        return stuck[:0]
    # Channels whose rows are zero at a reader may have no constant there.
    values_at = [
        np.nan_to_num(constants[member.indices[stuck, 0]], nan=0.0)
        for member, constants in per_reader
    ]
    anchor = int(np.argmax(anchors * np.abs(values_at[0])))
    for (member, _), values in zip(per_reader, values_at, strict=True):
        kernel = weights.value(member.variable)
        rows = member.indices[stuck, 0]
        moved = np.moveaxis(kernel, member.axis, 0)
        moved[rows[anchor]] = np.tensordot(values / values[anchor], moved[rows], axes=1)
        weights.changed.add(id(member.variable))
    group.merged = True
    return np.delete(stuck, anchor)


def _keep_one(group, going):
    """Leaves one channel of a group that would lose them all (tensors keep a width)."""
    if going.size and going.size >= group.kept.sum():
        group.kept_one = True
        return going[1:]
    return going


def _folds(weights, groups, bias_added):
    """Adds the constants of removed channels into their readers' biases."""
    for group in groups:
        removed = np.flatnonzero(~group.kept)
        if removed.size == 0:
            continue
        for index, member in enumerate(group.readers):
            found = group.sites[index]
            if found is None or id(member.variable) != id(found[0].compute.kernel):
                continue
            site, constants = found
            rows = member.indices[removed].ravel()
            folded = np.zeros(site.width)
            folded[rows] = np.where(np.isnan(constants[rows]), 0.0, constants[rows])
            if group.merged and site.pads:
                continue  # merged into the anchor's slice, not a bias
            if not np.any(folded):
                continue
            delta = site.compute.fold(folded)
            if not np.any(delta):
                continue
            bias = site.compute.bias
            if bias is None:
                entry = bias_added.setdefault(
                    id(site.layer),
                    [np.zeros(delta.shape), site.compute.kernel, site.compute.out_axis],
                )
                entry[0] += delta
            else:
                weights.value(bias)[...] += delta
                weights.changed.add(id(bias))


def _notes(weights, groups):
    """`(layer, reason)` for zero units and inputs that stay."""
    notes = []
    for group in groups:
        kept = np.flatnonzero(group.kept)
        if kept.size == 0:
            continue
        reason = None
        if group.pinned and not group.inexact:
            reason = group.group.reason if group.group.reason in group.pinned else None
            reason = reason or sorted(group.pinned)[0]
        if reason == MODEL_OUTPUT:
            continue
        if group.kept_one:
            reason = (
                "the model computes a constant from here on; one unit kept so that it keeps "
                "its shape"
            )
        for member in group.group.members:
            if member.role not in (WRITES, READS) or "kernel" not in member.variable.name:
                continue
            zero = ~weights.live(member.variable, member.axis)[member.indices[kept]].any(axis=1)
            if not zero.any():
                continue
            what = "units" if member.role == WRITES else "inputs"
            why = reason or _blocker(weights, group, kept[zero])
            notes.append(
                (member.layer.split("/")[0], f"{int(zero.sum())} all-zero {what} kept ({why})")
            )
    return notes


def _blocker(weights, group, channels):
    """Why channels of a removable group stay: the first reader that needs them."""
    for index, member in enumerate(group.readers):
        states, site = _reader_state(weights, group, index, member, channels)
        if np.any(states == "pads"):
            merged = "; they were merged into one" if group.merged else ""
            return (
                f"their constant output meets the padding of '{site.layer.name}', "
                f"which pads {getattr(site.layer, 'padding', 'same')!r}{merged}"
            )
        if np.any(states == "varies"):
            return f"'{member.layer.split('/')[-1]}' still reads them and they are not constant"
    return "their group is read where it is not constant"


def plan(model, exact=True):
    """The `Plan` of `compact` for `model`.

    With `exact=False`, channels of groups that only normalizations over the
    channels hold go when their writers' kernels are zero.
    """
    channels, groups, roots = analyse(model, exact)
    reasons = {}
    for channel, found in channels.reasons.items():
        reasons.setdefault(channels.find(channel), set()).update(found)
    sites = _site_constants(channels.sites)
    weights = _Weights()
    states = [
        _Group(g, r, reasons, sites, channels.inexact) for g, r in zip(groups, roots, strict=True)
    ]
    candidates = [s for s in states if not s.pinned or s.inexact]
    changed = True
    while changed:
        changed = False
        for group in candidates:
            going, stuck = _decide(weights, group)
            if stuck.size and not group.merged:
                merged = _merge(weights, group, stuck)
                going = np.union1d(going, merged).astype("int64")
            going = _keep_one(group, going)
            if going.size:
                _remove(weights, group, going)
                changed = True
    values, bias_added = {}, {}
    _folds(weights, candidates, bias_added)
    for key in weights.changed:
        values[key] = weights.values[key]
    inputs = {}
    functional = _graph.functional_of(model)
    for tensor in functional.inputs:
        width = tensor.shape[-1]
        if not width:
            continue
        offset = channels.tensor(tensor)
        root_kept = {}
        for group in candidates:
            for root, kept in zip(group.roots, group.kept, strict=True):
                root_kept[root] = kept
        keep = np.array([root_kept.get(channels.find(offset + i), True) for i in range(width)])
        if not keep.all():
            inputs[id(tensor)] = tuple(int(i) for i in np.flatnonzero(keep))
    removed = {key: mask for key, mask in weights.removed.items() if mask.any()}
    return Plan(removed, values, bias_added, inputs, _notes(weights, states))
