"""How functional models are wired: `Graph` indexes the nodes of one model both ways.

This is the one module that reads Keras' private graph attributes
(`_nodes_by_depth`, `Node.arguments`, a Sequential model's `_functional`) and
traces a layer's call symbolically (`keras.src.backend.compute_output_spec`)."""

import keras
from keras.src import backend

from kerasreg._graph._registry import channel_rule
from kerasreg._validation import InvalidArgumentError


def functional_of(model):
    """The functional graph of a Sequential or functional model.

    Raises:
        ValueError: If `model` is subclassed or not built.
    """
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise InvalidArgumentError(
                "Invalid value for argument `model`: expected a built model "
                "(give the Sequential model a `keras.Input` or call it once). "
                f"Received: model={model.name!r}, not built"
            )
        return functional
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    raise InvalidArgumentError(
        "Invalid value for argument `model`: expected a Sequential or "
        "functional keras.Model; subclassed models do not expose how their "
        f"layers are wired. Received: model={model!r}"
    )


def is_functional(model):
    """Whether `model` is a built Sequential or functional model (`functional_of` takes it)."""
    try:
        functional_of(model)
    except InvalidArgumentError:
        return False
    return True


class Graph:
    """The nodes of one Sequential or functional model, indexed both ways.

    Nodes are the calls of layers and of `keras.ops` functions; a layer
    called twice (shared) has two. Nested models are single nodes here;
    `nested` lists them, each once.

    Attributes:
        nodes: Every node, the model's inputs first, each after its inputs.
        producer: `id(tensor)` -> the node that computes it.
        consumers: `id(tensor)` -> the nodes that read it (once per read).
        outputs: The ids of the model's output tensors.
        nested: The Sequential and functional models called inside, once each.
    """

    def __init__(self, model):
        functional = functional_of(model)
        depths = sorted(functional._nodes_by_depth, reverse=True)
        self.nodes = [n for d in depths for n in functional._nodes_by_depth[d]]
        self.producer = {}
        self.consumers = {}
        self._calls = {}
        self._rules = {}
        for node in self.nodes:
            if node.operation is None:
                continue
            self._calls.setdefault(id(node.operation), []).append(node)
            for t in node.outputs:
                self.producer[id(t)] = node
            for t in node.input_tensors:
                self.consumers.setdefault(id(t), []).append(node)
        self.outputs = {id(t) for t in functional.outputs}
        self.nested = [
            nodes[0].operation
            for nodes in self._calls.values()
            if isinstance(nodes[0].operation, keras.Model)
        ]

    def calls(self, operation):
        """The nodes of `operation`: one per call, in order."""
        return self._calls.get(id(operation), [])

    def node(self, operation):
        """The node of `operation` if it is called exactly once, else `None`."""
        nodes = self.calls(operation)
        return nodes[0] if len(nodes) == 1 else None

    def private(self, tensor):
        """Whether `tensor` feeds exactly one node and is not an output."""
        return len(self.consumers.get(id(tensor), [])) == 1 and id(tensor) not in self.outputs

    def rule(self, node):
        """The `ChannelRule` of `node`, computed once."""
        if id(node) not in self._rules:
            self._rules[id(node)] = channel_rule(node)
        return self._rules[id(node)]


def _known(tensors):
    """Whether every `KerasTensor` among `tensors` has a fully known shape."""
    return all(None not in tuple(t.shape) for t in tensors if isinstance(t, keras.KerasTensor))


def calls_with_shapes(model, inputs, prefix=""):
    """Every call of a layer in `model`, nested models within, on the given inputs.

    Runs the graph symbolically on `inputs` (`keras.KerasTensor`s, one per
    model input), so that every call is seen at the shapes these inputs give.

    Args:
        model: A Sequential or functional model.
        inputs: A list of `keras.KerasTensor`, one per model input.
        prefix: The path of `model` (`"/"`-joined names), `""` at the top.

    Returns:
        `(outputs, calls)`: the model's symbolic outputs (a list), and one
        `(path, layer, args, kwargs, outputs)` per call of a layer or
        operation other than a nested model, in order.
    """
    functional = functional_of(model)
    graph = Graph(functional)
    tensors = {id(x): y for x, y in zip(functional.inputs, inputs, strict=True)}
    calls = []
    for node in graph.nodes:
        operation = node.operation
        if operation is None or node.is_input:
            continue
        args, kwargs = node.arguments.fill_in(tensors)
        path = f"{prefix}/{operation.name}" if prefix else operation.name
        if isinstance(operation, keras.Model):
            flat = keras.tree.flatten((args, kwargs))
            inner = [t for t in flat if isinstance(t, keras.KerasTensor)]
            outputs, inner_calls = calls_with_shapes(operation, inner, path)
            calls += inner_calls
        else:
            outputs = keras.tree.flatten(operation.compute_output_spec(*args, **kwargs))
            if not _known(outputs) and _known(keras.tree.flatten((args, kwargs))):
                # Some layers state unknown sizes (EinsumDense with `None` in
                # its `output_shape`); running the call symbolically fixes them.
                traced = backend.compute_output_spec(operation.call, *args, **kwargs)
                outputs = keras.tree.flatten(traced)
            if not _known(outputs):
                raise InvalidArgumentError(
                    "Invalid value for argument `input_shape`: expected input shapes that fix "
                    f"the size of every axis of every layer's output; '{path}' gives "
                    f"{[tuple(t.shape) for t in outputs]}. Received: input_shape="
                    f"{[tuple(t.shape)[1:] for t in inputs]}"
                )
            calls.append((path, operation, args, kwargs, outputs))
        for x, y in zip(node.outputs, outputs, strict=True):
            tensors[id(x)] = y
    return [tensors[id(x)] for x in functional.outputs], calls


def run_nodes(model, inputs, run):
    """Runs the nodes of a Sequential or functional model in order, on values of any kind.

    The graph's wiring with the computing left to `run`: one-shot pruning
    passes lists of calibration batches along the edges and prunes each
    block before it computes that block's outputs. A value is dropped once
    every node that reads it has run.

    Args:
        model: A Sequential or functional model.
        inputs: One value per model input, in the order of `model.inputs`.
        run: `run(operation, args, kwargs)`, called once per node with the
            node's call arguments, each symbolic tensor replaced by its value;
            returns the node's outputs as a flat list, in the order of
            `keras.tree.flatten` of what the operation returns, or `None` to
            stop the run there.

    Returns:
        The values of the model's outputs, a flat list, or `None` if `run`
        stopped it.
    """
    functional = functional_of(model)
    graph = Graph(functional)
    values = {id(x): y for x, y in zip(functional.inputs, inputs, strict=True)}
    reads = {key: len(nodes) for key, nodes in graph.consumers.items()}
    for node in graph.nodes:
        if node.operation is None or node.is_input:
            continue
        args, kwargs = node.arguments.fill_in(values)
        outputs = run(node.operation, args, kwargs)
        if outputs is None:
            return None
        for x, y in zip(node.outputs, outputs, strict=True):
            values[id(x)] = y
        for x in node.input_tensors:
            reads[id(x)] -= 1
            if reads[id(x)] == 0 and id(x) not in graph.outputs:
                values.pop(id(x), None)
    return [values[id(x)] for x in functional.outputs]


def flat_inputs(model, x):
    """The inputs `x` (a tensor, list or dict, as `model(x)` takes them), one per model input."""
    functional = functional_of(model)
    return keras.tree.flatten(functional._standardize_inputs(x))


def named_inputs(model, structure):
    """A nested model's call argument, one value per model input, matched as Keras matches it.

    A dict given to a model whose inputs are a list (or one tensor) is read by
    input name, as `Functional._standardize_inputs` does; any other structure
    in `keras.tree.flatten` order. The values may be of any kind.
    """
    functional = functional_of(model)
    declared = functional._inputs_struct
    if isinstance(structure, dict) and not isinstance(declared, dict):
        names = [t.name for t in keras.tree.flatten(declared)]
        if set(names) <= set(structure):
            structure = [structure[name] for name in names]
    return keras.tree.flatten(structure)
