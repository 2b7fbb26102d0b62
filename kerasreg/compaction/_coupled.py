"""The coupled pass of `compact`: channels that go with every weight of their group.

A channel of a residual stream, a concatenation, an attention head, ... goes
with every weight of its `DependencyGroup`. `coupled_cuts` decides which;
`_rebuild.cut_model` makes the smaller model from them.
"""

import numpy as np
from keras import ops

from kerasreg.dependency import CARRIES
from kerasreg.dependency import MODEL_INPUT
from kerasreg.dependency import MODEL_OUTPUT
from kerasreg.dependency import READS
from kerasreg.dependency import WRITES
from kerasreg.dependency import dependency_groups


def _entries(member, channels):
    """The values of `member`'s entries of `channels`, shape `(len(channels), -1)`."""
    values = np.asarray(ops.convert_to_numpy(member.variable.value))
    taken = np.take(values, member.indices[channels].reshape(-1), axis=member.axis)
    return np.moveaxis(taken, member.axis, 0).reshape(len(channels), -1)


def _zero(members, channels):
    """Per channel of `channels`: whether `members` hold entries, all zero."""
    zero = np.full(len(channels), bool(members))
    for member in members:
        zero &= ~np.any(_entries(member, channels) != 0, axis=1)
    return zero


def _statistic(member):
    """Whether `member` is a moving statistic, which says nothing of the channel's value."""
    return member.variable.path.split("/")[-1] in ("moving_mean", "moving_variance")


def _silent_channels(group):
    """Per channel of `group`: whether removing it leaves the model's function as is.

    It is so when no weight reads it (its readers' rows are zero), or when
    it is zero wherever it is read (its writers and carriers are zero and
    zeros propagate along it).
    """
    channels = np.arange(group.channels)
    silent = _zero([m for m in group.members if m.role == READS], channels)
    if group.zeros_propagate:
        own = [m for m in group.members if m.role in (WRITES, CARRIES) and not _statistic(m)]
        silent |= _zero(own, channels)
    return silent


def coupled_cuts(model):
    """What the coupled pass removes: `(cuts, notes)`.

    `cuts` maps `(id(variable), axis)` to `(variable, axis, indices)`, the
    entries that go; `notes` names the layers whose silent channels stay.
    """
    cuts, notes = {}, []
    for group in dependency_groups(model):
        silent = _silent_channels(group)
        if not silent.any():
            continue
        if group.reason in (MODEL_INPUT, MODEL_OUTPUT):
            # Input features go through `SelectFeatures` in the second pass;
            # the outputs keep their width.
            continue
        if not group.removable:
            writers = [m.layer for m in group.members if m.role == WRITES]
            notes.append(
                (
                    (writers or group.layers)[0],
                    f"{int(silent.sum())} coupled channels with all-zero weights kept "
                    f"({group.reason})",
                )
            )
            continue
        if silent.all():
            silent[0] = False  # one channel keeps the tensors' shapes
        for member in group.members:
            key = (id(member.variable), member.axis)
            variable, axis, indices = cuts.get(key, (member.variable, member.axis, ()))
            cuts[key] = (variable, axis, tuple(indices) + tuple(member.indices[silent].ravel()))
    return cuts, notes
