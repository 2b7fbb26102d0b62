"""The plan of `ProximalOptimizer`: the prox route of each variable, labelled once.

As optax's `multi_transform` labels each parameter once and gives each label
its own transform, `ProximalOptimizer` labels each variable when it is built
(and again when regularizers are re-read), and each step sends the variables
of one label through one route (`kerasreg.optimizers._routes`):

- `"joint"`: its regularizer is a share of a penalty over several variables
  (`regularizer.joint`), whose prox takes them together;
- `"shared"`: its regularizer has a truthy `shares_prox`; the variables of
  equal regularizers take one prox together;
- `"xla"`: its regularizer declares `compiles_with_xla()`, on TensorFlow, in
  whose graphs such proxes run as one XLA computation;
- `"fused"`: its regularizer declares `elementwise_coefficients()`, on
  PyTorch, whose eager steps fuse such proxes across variables;
- `"single"`: its own regularizer's prox.

A fast path (`"xla"`, `"fused"`) is taken in the steps that allow it (see
`_backends.compiles_proxes`, `_backends.fuses` and `_backends.coefficients`);
in the others its variables take the `"single"` route, with the same numbers.
"""

from kerasreg import regularizers as regularizers_lib
from kerasreg.optimizers import _backends
from kerasreg.optimizers import _routes

LABELS = ("single", "shared", "joint", "xla", "fused")


def joint_of(regularizer):
    """The penalty over several variables `regularizer` is a share of, or `None`."""
    return getattr(regularizer, "joint", None)


def proximal_of(regularizer):
    """The regularizer whose prox a variable with `regularizer` takes on its own, or `None`.

    `None` for no regularizer, a share of a joint penalty, and a regularizer
    with no known prox (its penalty acts through the gradient).
    """
    if regularizer is None or joint_of(regularizer) is not None:
        return None
    try:
        return regularizers_lib.get(regularizer)
    except ValueError:
        return None


def check_joint(joint, keys, var_key):
    """Refuses a joint penalty with a variable whose key is not in `keys`."""
    for variable in joint.variables:
        if var_key(variable) not in keys:
            raise ValueError(
                f"the penalty {joint!r} couples `{variable.path}`, which this optimizer does "
                "not train: every variable of a penalty over several variables must be in "
                "the optimizer's var_list (trainable, and in the same model)"
            )


class Entry:
    """A variable's place in the plan.

    Args:
        variable: The variable.
        regularizer: The regularizer whose prox it takes (for `"joint"`, the
            joint penalty).
        route: `"single"`, `"shared"` or `"joint"`.
        fast: `"xla"`, `"fused"` or `None`: the backend fast path its
            regularizer declares, taken in the steps that allow it.
        states: The optimizer variables holding its prox state, or `None`.

    Attributes:
        gradient_buffer: The tensor a fast path keeps for its new gradient
            from step to step (see `_routes.FusedRoute`), or `None`.
    """

    def __init__(self, variable, regularizer, route, fast=None, states=None):
        self.variable, self.regularizer = variable, regularizer
        self.route, self.fast, self.states = route, fast, states
        self.gradient_buffer = None

    @property
    def label(self):
        return self.fast or self.route


def _fast_path(regularizer):
    """The fast path of this backend that `regularizer` declares, or `None`."""
    path = _backends.fast_path()
    if path == "xla" and getattr(regularizer, "compiles_with_xla", lambda: False)():
        return "xla"
    declared = getattr(regularizer, "elementwise_coefficients", lambda: None)
    if path == "fused" and declared() is not None:
        return "fused"
    return None


class Plan:
    """The route of each variable (see the module docstring).

    Args:
        variables: The optimizer's trainable variables.
        proximal: Dict, variable key -> the regularizer whose prox the
            variable takes on its own (`proximal_of`), for those that do.
        states: Dict, variable key -> the optimizer variables of its prox
            state, for those that have one.
        var_key: The optimizer's `_var_key`.
        is_excluded: Function, whether a variable is left to the gradient.

    Raises:
        ValueError: If a joint penalty has a variable outside `variables`.
    """

    def __init__(self, variables, proximal, states, var_key, is_excluded):
        self._var_key = var_key
        self._states = states
        self.entries = {}
        self._last_routes = (None, None)  # the key of the last step's routes, and them
        for variable in variables:
            key = var_key(variable)
            regularizer = proximal.get(key)
            if regularizer is not None:
                route = "shared" if getattr(regularizer, "shares_prox", False) else "single"
                fast = None if route == "shared" else _fast_path(regularizer)
                self.entries[key] = Entry(variable, regularizer, route, fast, states.get(key))
        self.joints = self._joints(variables, is_excluded)

    def _joints(self, variables, is_excluded):
        """The joint penalties of `variables` whose prox is applied, with their entries."""
        keys = {self._var_key(variable) for variable in variables}
        joints = {}
        for variable in variables:
            joint = joint_of(getattr(variable, "regularizer", None))
            if joint is not None:
                joints.setdefault(id(joint), joint)
        applied = []
        for joint in joints.values():
            check_joint(joint, keys, self._var_key)
            if any(is_excluded(variable) for variable in joint.variables):
                continue  # left to the gradient, as a whole
            applied.append(joint)
            for variable in joint.variables:
                key = self._var_key(variable)
                # A joint penalty's state is kept under its first variable.
                self.entries[key] = Entry(variable, joint, "joint", states=self._states.get(key))
        return applied

    def entry(self, variable):
        """The `Entry` of `variable`, or `None` if it takes no prox."""
        return self.entries.get(self._var_key(variable))

    def label(self, variable):
        """The label of `variable`'s route (one of `LABELS`), or `None`."""
        entry = self.entry(variable)
        return None if entry is None else entry.label

    def routes(self, variables, grads, fuse, compile_proxes):
        """The routes of one step: its variables with a gradient and a prox, by route.

        Args:
            variables: The variables of the step.
            grads: Their gradients (`None` for a variable without one).
            fuse: Whether this step may take the `"fused"` path.
            compile_proxes: Whether this step may take the `"xla"` path.

        Returns:
            A list of `_routes.Route`: fused, XLA-compiled, single, then the
            shared proxes (in order of their first variable) and the joint
            penalties (each only if all its variables have a gradient). The
            routes but the joint ones (which hold the step's gradients) are
            those of the last step where its variables, the dtypes of their
            gradients and the fast paths allowed are the same, as in every
            step of `fit` (a regularizer's strength is read when its route is
            made: regularizers are not changed in place), except under
            `tf.distribute`, whose replicas run `apply` in threads of their
            own and must not share the members' `Hold`s.
        """
        key = (
            fuse,
            compile_proxes,
            tuple(map(id, variables)),
            tuple(None if grad is None else grad.dtype for grad in grads),
        )
        last_key, routes = self._last_routes
        if key != last_key or _backends.replicas_in_sync() > 1:
            routes = self._routes(variables, grads, fuse, compile_proxes)
            self._last_routes = (key, routes)
        return routes + self._joint_routes(variables, grads)

    def _routes(self, variables, grads, fuse, compile_proxes):
        """The routes of `routes` but the joint ones."""
        single, compiled, fused, coefficients, shared = [], [], [], [], {}
        for i, (variable, grad) in enumerate(zip(variables, grads, strict=True)):
            entry = self.entry(variable)
            if grad is None or entry is None or entry.route == "joint":
                continue
            member = _routes.Member(entry, i)
            if entry.route == "shared":
                shared.setdefault(entry.regularizer, []).append(member)
                continue
            if fuse and entry.fast == "fused":
                declared = _backends.coefficients(entry.regularizer, variable, grad)
                if declared is not None:
                    fused.append(member)
                    coefficients.append(declared)
                    continue
            if compile_proxes and entry.fast == "xla":
                compiled.append(member)
            else:
                single.append(member)
        routes = []
        if fused:
            routes.append(_routes.FusedRoute(fused, coefficients))
        if compiled:
            routes.append(_routes.XlaRoute(compiled))
        if single:
            routes.append(_routes.SingleRoute(single))
        routes += [_routes.SharedRoute(reg, members) for reg, members in shared.items()]
        return routes

    def _joint_routes(self, variables, grads):
        """The routes of the joint penalties whose variables all have a gradient."""
        if not self.joints:
            return []
        position = {self._var_key(variable): i for i, variable in enumerate(variables)}
        routes = []
        for joint in self.joints:
            indices = [position.get(self._var_key(variable)) for variable in joint.variables]
            if any(i is None or grads[i] is None for i in indices):
                continue
            entries = [self.entry(variable) for variable in joint.variables]
            members = [_routes.Member(e, i) for e, i in zip(entries, indices, strict=True)]
            routes.append(_routes.JointRoute(joint, members, [grads[i] for i in indices]))
        return routes
