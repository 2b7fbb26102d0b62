"""One walk over a model's layers, for every function that works on whole models.

Reads Keras' private layer lists (`Layer._layers`, `_trainable_variables`,
`_non_trainable_variables`) here and nowhere else; `tests/test_model_walk.py`
fails loudly if Keras changes them.
"""

import collections
import dataclasses

__all__ = ["LayerVisit", "own_variables", "sublayers", "walk"]


@dataclasses.dataclass(frozen=True)
class LayerVisit:
    """One layer reached by `walk`.

    Attributes:
        layer: The layer.
        path: Names from the root down to the layer, joined by `"/"`, the
            root's own name left out (`""` for the root itself), e.g.
            `"encoder/dense"`.
        ancestors: The layers above it, the root first (`()` for the root).
    """

    layer: object
    path: str
    ancestors: tuple


def walk(root):
    """Every layer under `root`, the root included, each once.

    Reaches nested models, wrappers (`TimeDistributed`, `Bidirectional`),
    recurrent cells, sublayers of built-in layers (the projections of
    `MultiHeadAttention`) and layers inside users' own layers. A shared
    layer is visited once, under the first path that reaches it. The order
    is Keras' own `_flatten_layers` order.

    Args:
        root: A `keras.Model` or `keras.layers.Layer`.

    Returns:
        A list of `LayerVisit`, the root first.
    """
    top = LayerVisit(root, "", ())
    visits = [top]
    seen = set()
    queue = collections.deque((child, top) for child in sublayers(root))
    while queue:
        layer, parent = queue.popleft()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        path = f"{parent.path}/{layer.name}" if parent.path else layer.name
        visit = LayerVisit(layer, path, parent.ancestors + (parent.layer,))
        visits.append(visit)
        queue.extendleft((child, visit) for child in sublayers(layer))
    return visits


def sublayers(layer):
    """The layers `layer` holds directly, in the order it tracked them."""
    return list(layer._layers)


def own_variables(layer):
    """The variables `layer` created itself (not its sublayers'), trainable first."""
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)
