"""What `compact` did: one row per rebuilt layer, and the layers it left as is."""

import dataclasses

__all__ = ["CompactionSummary", "LayerCompaction"]


@dataclasses.dataclass(frozen=True)
class LayerCompaction:
    """What `compact` did to one layer.

    Attributes:
        layer: The layer's name.
        units: Output units (filters; channels of a normalization or a
            depthwise convolution; heads of a `MultiHeadAttention`) before
            compaction.
        kept_units: Output units after.
        inputs: Input features (channels) of the kernel before compaction.
        kept_inputs: Input features after.
        params: Parameters of the layer before.
        kept_params: Parameters after.
        input_indices: Indices (into the layer's original inputs) of the
            features a `SelectFeatures` layer now passes to it, or `None`
            when no such layer was inserted.
        unit_indices: Indices (into the layer's original units) of the units
            it keeps.
    """

    layer: str
    units: int
    kept_units: int
    inputs: int
    kept_inputs: int
    params: int
    kept_params: int
    input_indices: tuple | None = None
    unit_indices: tuple | None = None


@dataclasses.dataclass(frozen=True)
class CompactionSummary:
    """The outcome of `compact`.

    Attributes:
        layers: Tuple of `LayerCompaction`, one per layer that `compact`
            rebuilt smaller.
        left_as_is: Tuple of `(layer name, reason)` for layers holding
            all-zero units or inputs that `compact` could not remove.
        params: Parameters of the original model.
        kept_params: Parameters of the compacted model.
        output_change: With `compact(exact=False)`: the largest difference
            between the two models' outputs on a random batch, relative to
            the largest output; `None` when compaction was exact.
    """

    layers: tuple
    left_as_is: tuple
    params: int
    kept_params: int
    output_change: float | None = None

    def __str__(self):
        header = f"{'layer':<24} {'units':>13} {'inputs':>13} {'params':>19}"
        lines = [header, "-" * len(header)]
        for row in self.layers:
            lines.append(
                f"{row.layer:<24} {row.units:>6} -> {row.kept_units:<3} "
                f"{row.inputs:>6} -> {row.kept_inputs:<3} "
                f"{row.params:>8,} -> {row.kept_params:<7,}"
            )
        lines.append("-" * len(header))
        lines.append(f"{'model':<52} {self.params:>8,} -> {self.kept_params:<7,}")
        if self.output_change is not None:
            lines.append(f"outputs changed by up to {self.output_change:.3g} (exact=False)")
        for name, reason in self.left_as_is:
            lines.append(f"left as is: {name}: {reason}")
        return "\n".join(lines)


def merge_notes(notes):
    """One `(layer, reasons)` note per layer, its reasons joined in order."""
    merged = {}
    for name, reason in notes:
        merged.setdefault(name, []).append(reason)
    return tuple((name, "; ".join(dict.fromkeys(reasons))) for name, reasons in merged.items())
